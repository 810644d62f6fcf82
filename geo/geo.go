// Package geo owns the H3 and distance maths and the Redis location index of drivers.
//
// Key design (cluster-safe: every Lua script and pipeline touches one slot):
//
//	geo:{r<region>}:pos     hash   driver id -> "lat,lng,heading,tsms,state,cell"
//	geo:{r<region>}:cells   zset   "cell:driver" members, score 0, queried by lexical range;
//	                               drivers offline are in none
//	geo:regions             set    every region that has held a driver (Sweep, Replica.Load)
//	drv:{<driver>}          hash   state, region (the driver's own record)
//	drv:{<driver>}:lease    string lease token, with a TTL
//	loc:<region>            pub/sub: JSON arrays of dispatch.DriverView, the region's feed
//
// A region is an H3 cell at RegionRes (5: about 250 km², a few per city, so a metro's drivers
// spread over a handful of slots and dispatcher processes can own regions). Membership is kept at
// CellRes (8: about 0.74 km², edge about 460 m): a 2 km search is a disk of at most 5 rings (91
// cells), small enough to scan ring by ring in one round trip each, and fine enough that the first
// ring or two usually hold the nearest drivers in a city; a point moving at city speeds changes
// cell about once a minute, so most writes touch only the position hash. The exact order comes
// from haversine distance, never from the cells, and a search stops only when nothing outside
// the rings scanned can be nearer (grid.go).
//
// Writes come in batches (Writer): one Lua call per region and flush applies every point
// (latest wins by ts), moves cells atomically and publishes the region's
// feed. Replica keeps every region in a dispatcher's memory from that feed and answers Nearby
// without Redis; Sweep marks silent drivers offline.
//
// geo must not decide who gets a booking: it only knows where drivers are and holds leases.
package geo

import (
	"math"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/uber/h3-go/v4"
)

const (
	// RegionRes is the H3 resolution of a region: the unit of sharding in Redis.
	RegionRes = 5
	// CellRes is the H3 resolution at which drivers are indexed.
	CellRes = 8
	// MatchRes is the H3 resolution of a matching region, the unit of dispatcher ownership
	// (6: about 36 km², 20 to 30 in Bengaluru's built-up area, where RegionRes split it 6 to 8
	// ways), so that 4 or more dispatcher processes share a busy city. Storage stays sharded by
	// RegionRes; a search crosses both kinds of border freely.
	MatchRes = 6
)

// Cell is the index cell of a point.
func Cell(lat, lng float64) h3.Cell {
	return h3.LatLngToCell(h3.LatLng{Lat: lat, Lng: lng}, CellRes)
}

// Region is the region of a point, as its H3 string.
func Region(lat, lng float64) string {
	return h3.LatLngToCell(h3.LatLng{Lat: lat, Lng: lng}, RegionRes).String()
}

// RegionOf is the region containing an index cell.
func RegionOf(c h3.Cell) string { return c.Parent(RegionRes).String() }

// Boundary is the outline of an H3 cell as [lat, lng] pairs.
func Boundary(cell string) [][2]float64 {
	c := h3.Cell(h3.IndexFromString(cell))
	if !c.IsValid() {
		return nil
	}
	b := c.Boundary()
	out := make([][2]float64, len(b))
	for i, p := range b {
		out[i] = [2]float64{p.Lat, p.Lng}
	}
	return out
}

// CellsCovering lists the H3 cells at res whose centres lie in the box, plus one ring around
// them so that the edges are covered too. At most max cells; ok is false when the box needs more.
func CellsCovering(minLat, minLng, maxLat, maxLng float64, res, max int) (cells []h3.Cell, ok bool) {
	centre := h3.LatLngToCell(h3.LatLng{Lat: (minLat + maxLat) / 2, Lng: (minLng + maxLng) / 2}, res)
	diag := dispatch.DistanceM(minLat, minLng, maxLat, maxLng) / 2
	k := int(math.Ceil(diag/(h3.HexagonEdgeLengthAvgM(res)*math.Sqrt(3)*0.85))) + 1
	if 3*k*k+3*k+1 > max*4 {
		return nil, false
	}
	for _, c := range centre.GridDisk(k) {
		ll := c.LatLng()
		pad := h3.HexagonEdgeLengthAvgM(res) * 2 / 111000
		if ll.Lat >= minLat-pad && ll.Lat <= maxLat+pad && ll.Lng >= minLng-pad && ll.Lng <= maxLng+pad {
			cells = append(cells, c)
			if len(cells) > max {
				return nil, false
			}
		}
	}
	return cells, true
}
