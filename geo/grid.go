package geo

import (
	"math"
	"sort"
	"sync"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/uber/h3-go/v4"
)

// The ring search shared by Index.Nearby (cells in Redis) and Replica.Nearby (cells in memory).
//
// Growing a grid disk ring by ring is only exact if we know, after scanning the disk of k rings,
// how near an unscanned driver could be. Any point outside the disk lies beyond ring k+1 or in
// it, and a straight line from the query point to it crosses ring k+1; so no unscanned point is
// nearer than min over the cells c of ring k+1 of (distance to c's centre - c's circumradius).
// The search stops once the limit-th best is no farther than that bound, or once the bound
// exceeds the radius. The bound is computed from each cell's own geometry (cached), so it holds
// wherever H3 cells are distorted, unlike a bound from the average edge length.

// cellGeom is the centre and circumradius (metres) of a cell.
type cellGeom struct {
	lat, lng, r float64
}

var geoms sync.Map // h3.Cell -> cellGeom

func geomOf(c h3.Cell) cellGeom {
	if g, ok := geoms.Load(c); ok {
		return g.(cellGeom)
	}
	ll := c.LatLng()
	g := cellGeom{lat: ll.Lat, lng: ll.Lng}
	for _, v := range c.Boundary() {
		if d := dispatch.DistanceM(ll.Lat, ll.Lng, v.Lat, v.Lng); d > g.r {
			g.r = d
		}
	}
	g.r = g.r*1.01 + 1 // margin for the sphere and rounding
	geoms.Store(c, g)
	return g
}

// diskRings caches the rings around an origin cell (immutable once stored).
type diskRings [][]h3.Cell

var disks sync.Map // h3.Cell -> diskRings

// disk returns at least k+1 rings around origin: rings[i] holds the cells at grid distance i.
func disk(origin h3.Cell, k int) diskRings {
	if v, ok := disks.Load(origin); ok {
		if d := v.(diskRings); k < len(d) {
			return d
		}
	}
	n := 4
	for n <= k {
		n *= 2
	}
	rings := origin.GridDiskDistances(n)
	for i, ring := range rings {
		// Pentagons leave zero entries; drop them.
		out := ring[:0]
		for _, c := range ring {
			if c != 0 {
				out = append(out, c)
			}
		}
		rings[i] = out
	}
	if n <= 16 { // only small disks are worth keeping for every origin
		disks.Store(origin, diskRings(rings))
	}
	return rings
}

// search walks the rings around the cell of a query point.
type search struct {
	origin   h3.Cell
	lat, lng float64
	rings    diskRings
}

func newSearch(lat, lng float64, res int) search {
	origin := h3.LatLngToCell(h3.LatLng{Lat: lat, Lng: lng}, res)
	return search{origin: origin, lat: lat, lng: lng, rings: disk(origin, 1)}
}

// ring returns the cells at grid distance exactly k.
func (s *search) ring(k int) []h3.Cell {
	if k >= len(s.rings) {
		s.rings = disk(s.origin, k)
	}
	return s.rings[k]
}

// bound is how near (metres) a point outside the disk of k rings can be to the query point.
func (s *search) bound(k int) float64 {
	b := math.Inf(1)
	for _, c := range s.ring(k + 1) {
		g := geomOf(c)
		if d := dispatch.DistanceM(s.lat, s.lng, g.lat, g.lng) - g.r; d < b {
			b = d
		}
	}
	if b < 0 {
		b = 0
	}
	return b
}

// maxRings stops a search that finds nothing before its bound passes the radius (it cannot
// happen for radii up to a few hundred kilometres, but a loop should not trust geometry).
const maxRings = 400

// topK keeps the limit nearest candidates, nearest first, ties by driver id.
type topK struct {
	limit int
	found []dispatch.Nearby
}

func (t *topK) full() bool { return len(t.found) >= t.limit }

// worst is the distance of the limit-th candidate (only meaningful when full).
func (t *topK) worst() float64 { return t.found[len(t.found)-1].DistanceM }

func less(a, b *dispatch.Nearby) bool {
	if a.DistanceM != b.DistanceM {
		return a.DistanceM < b.DistanceM
	}
	return a.DriverID < b.DriverID
}

// offer inserts n if it is among the limit nearest so far.
func (t *topK) offer(n dispatch.Nearby) {
	if t.full() && !less(&n, &t.found[len(t.found)-1]) {
		return
	}
	i := sort.Search(len(t.found), func(i int) bool { return less(&n, &t.found[i]) })
	if !t.full() {
		t.found = append(t.found, dispatch.Nearby{})
	}
	copy(t.found[i+1:], t.found[i:len(t.found)-1])
	t.found[i] = n
}

// done reports whether the search may stop after the disk of k rings.
func (t *topK) done(s *search, k int, radiusM float64) bool {
	if k >= maxRings {
		return true
	}
	b := s.bound(k)
	return b > radiusM || (t.full() && t.worst() <= b)
}
