package geo

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/uber/h3-go/v4"
)

// AreaRes is the resolution of the H3 cover of the service areas (8: edge about 460 m).
const AreaRes = 8

//go:embed areas/cities.geojson
var citiesGeoJSON []byte

// Areas are the cities' service areas (GeoJSON MultiPolygons) with an H3 cover for a fast
// lookup: a point's cell either lies wholly inside one city (a map lookup answers), or is
// crossed by an edge (the point is tested against the polygons themselves), or is in no area.
// Read-only once loaded; safe for concurrent use.
type Areas struct {
	interior map[h3.Cell]string
	edge     map[h3.Cell][]string
	polys    map[string][]polygon
	raw      map[string]json.RawMessage
	names    map[string]string
}

var _ dispatch.Cities = (*Areas)(nil)

// polygon is an outer ring and its holes, as [lng, lat] pairs, closed.
type polygon [][][2]float64

// DefaultAreas are the service areas shipped in geo/areas/cities.geojson.
func DefaultAreas() (*Areas, error) { return LoadAreas(bytes.NewReader(citiesGeoJSON)) }

type featureCollection struct {
	Type     string `json:"type"`
	Features []struct {
		Type       string `json:"type"`
		Properties struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"properties"`
		Geometry struct {
			Type        string           `json:"type"`
			Coordinates [][][][2]float64 `json:"coordinates"`
		} `json:"geometry"`
	} `json:"features"`
}

// maxAreaBytes bounds an areas file; maxAreaCells bounds a cover (about 7,400 km² a city at
// res 8, far beyond any metro).
const (
	maxAreaBytes = 4 << 20
	maxAreaCells = 10_000
	// maxAreaDegrees bounds a ring's extent before its cover is computed (about 165 km).
	maxAreaDegrees = 1.5
)

// LoadAreas reads a GeoJSON FeatureCollection of MultiPolygon features, each with
// properties.id (a lower-case city id) and properties.name, and builds its cover. Every
// problem is an error wrapping dispatch.ErrInvalid.
func LoadAreas(r io.Reader) (*Areas, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxAreaBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read areas: %w", err)
	}
	if len(data) > maxAreaBytes {
		return nil, fmt.Errorf("areas: larger than %d bytes: %w", maxAreaBytes, dispatch.ErrInvalid)
	}
	var fc featureCollection
	if err := json.Unmarshal(data, &fc); err != nil {
		return nil, fmt.Errorf("areas: %w: %w", err, dispatch.ErrInvalid)
	}
	if fc.Type != "FeatureCollection" || len(fc.Features) == 0 {
		return nil, fmt.Errorf("areas: want a FeatureCollection with at least one feature: %w", dispatch.ErrInvalid)
	}
	a := &Areas{interior: map[h3.Cell]string{}, edge: map[h3.Cell][]string{}, polys: map[string][]polygon{},
		raw: map[string]json.RawMessage{}, names: map[string]string{}}
	var errs []error
	for i, f := range fc.Features {
		id := f.Properties.ID
		bad := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("areas: feature %d (%q): %s: %w", i, id, fmt.Sprintf(format, args...), dispatch.ErrInvalid))
		}
		switch {
		case id == "" || len(id) > 64:
			bad("properties.id must be 1 to 64 characters")
			continue
		case a.polys[id] != nil:
			bad("a second feature for the city")
			continue
		case f.Geometry.Type != "MultiPolygon" || len(f.Geometry.Coordinates) == 0:
			bad("geometry must be a non-empty MultiPolygon")
			continue
		}
		ok := true
		for _, p := range f.Geometry.Coordinates {
			for _, ring := range p {
				if msg := checkRing(ring); msg != "" {
					bad("%s", msg)
					ok = false
				}
			}
			if len(p) == 0 {
				bad("a polygon without rings")
				ok = false
			}
		}
		if !ok {
			continue
		}
		for _, p := range f.Geometry.Coordinates {
			a.polys[id] = append(a.polys[id], polygon(p))
		}
		a.raw[id], _ = json.Marshal(map[string]any{"type": "MultiPolygon", "coordinates": f.Geometry.Coordinates})
		a.names[id] = f.Properties.Name
		if n := a.cover(id); n > maxAreaCells {
			bad("area covers %d cells at resolution %d, more than %d", n, AreaRes, maxAreaCells)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return a, nil
}

func checkRing(ring [][2]float64) string {
	if len(ring) < 4 {
		return "a ring needs at least 4 positions"
	}
	if ring[0] != ring[len(ring)-1] {
		return "a ring must be closed (last position equal to the first)"
	}
	minLat, maxLat, minLng, maxLng := 90.0, -90.0, 180.0, -180.0
	for _, p := range ring {
		if !(p[0] >= -180 && p[0] <= 180 && p[1] >= -90 && p[1] <= 90) {
			return fmt.Sprintf("position %v outside [-180, 180] x [-90, 90]", p)
		}
		minLat, maxLat = min(minLat, p[1]), max(maxLat, p[1])
		minLng, maxLng = min(minLng, p[0]), max(maxLng, p[0])
	}
	if maxLat-minLat > maxAreaDegrees || maxLng-minLng > maxAreaDegrees {
		return fmt.Sprintf("a ring spans more than %g degrees: a city's area, not a region's", float64(maxAreaDegrees))
	}
	return ""
}

// cover adds a city's cells: those an edge of its rings crosses (found by walking each edge in
// steps shorter than a cell, with their neighbours for margin) are edge cells, tested exactly;
// those whose centre is inside and that no edge crosses are interior. It returns how many
// cells the city has.
func (a *Areas) cover(id string) int {
	edges := map[h3.Cell]bool{}
	step := h3.HexagonEdgeLengthAvgM(AreaRes) / 3
	for _, p := range a.polys[id] {
		for _, ring := range p {
			for i := 1; i < len(ring); i++ {
				p0, p1 := ring[i-1], ring[i]
				n := int(math.Ceil(dispatch.DistanceM(p0[1], p0[0], p1[1], p1[0])/step)) + 1
				for k := 0; k <= n; k++ {
					f := float64(k) / float64(n)
					c := h3.LatLngToCell(h3.LatLng{Lat: p0[1] + f*(p1[1]-p0[1]), Lng: p0[0] + f*(p1[0]-p0[0])}, AreaRes)
					for _, nb := range c.GridDisk(1) {
						edges[nb] = true
					}
				}
			}
		}
	}
	cells := len(edges)
	for c := range edges {
		if !containsString(a.edge[c], id) {
			a.edge[c] = append(a.edge[c], id)
		}
	}
	for _, p := range a.polys[id] {
		gp := h3.GeoPolygon{GeoLoop: loop(p[0])}
		for _, hole := range p[1:] {
			gp.Holes = append(gp.Holes, loop(hole))
		}
		for _, c := range h3.PolygonToCells(gp, AreaRes) {
			if edges[c] {
				continue
			}
			cells++
			if other, taken := a.interior[c]; taken && other != id {
				// Two areas overlap here: test both exactly.
				delete(a.interior, c)
				a.edge[c] = append(a.edge[c], other, id)
				continue
			}
			if len(a.edge[c]) > 0 {
				a.edge[c] = append(a.edge[c], id)
				continue
			}
			a.interior[c] = id
		}
	}
	return cells
}

func loop(ring [][2]float64) h3.GeoLoop {
	out := make(h3.GeoLoop, 0, len(ring)-1)
	for _, p := range ring[:len(ring)-1] {
		out = append(out, h3.LatLng{Lat: p[1], Lng: p[0]})
	}
	return out
}

func containsString(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

// CityAt implements dispatch.Cities. Where areas overlap, the first city in id order wins.
func (a *Areas) CityAt(lat, lng float64) (string, bool) {
	if !(lat >= -90 && lat <= 90 && lng >= -180 && lng <= 180) {
		return "", false
	}
	c := h3.LatLngToCell(h3.LatLng{Lat: lat, Lng: lng}, AreaRes)
	id, inside := a.interior[c]
	if len(a.edge[c]) == 0 {
		return id, inside
	}
	// An edge crosses the cell (another area's, where areas meet): test exactly.
	ids := append([]string(nil), a.edge[c]...)
	if inside {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		if a.contains(id, lat, lng) {
			return id, true
		}
	}
	return "", false
}

// contains tests a point against a city's polygons exactly (even-odd rule in the plane of
// degrees: at city scale the difference from the sphere is centimetres).
func (a *Areas) contains(id string, lat, lng float64) bool {
	for _, p := range a.polys[id] {
		if inRing(p[0], lat, lng) {
			inHole := false
			for _, h := range p[1:] {
				if inRing(h, lat, lng) {
					inHole = true
					break
				}
			}
			if !inHole {
				return true
			}
		}
	}
	return false
}

func inRing(ring [][2]float64, lat, lng float64) bool {
	in := false
	for i, j := 0, len(ring)-1; i < len(ring); j, i = i, i+1 {
		xi, yi, xj, yj := ring[i][0], ring[i][1], ring[j][0], ring[j][1]
		if (yi > lat) != (yj > lat) && lng < (xj-xi)*(lat-yi)/(yj-yi)+xi {
			in = !in
		}
	}
	return in
}

// Area implements dispatch.Cities.
func (a *Areas) Area(id string) (json.RawMessage, bool) {
	r, ok := a.raw[id]
	return r, ok
}

// IDs lists the cities with an area, in order.
func (a *Areas) IDs() []string {
	out := make([]string, 0, len(a.raw))
	for id := range a.raw {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// Name is a city's name as its area file gives it.
func (a *Areas) Name(id string) string { return a.names[id] }
