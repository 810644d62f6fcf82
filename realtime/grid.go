package realtime

import "github.com/uber/h3-go/v4"

// Grid is the location index's division of the map, which realtime's channels and live maps
// follow: cmd/dispatchd gives geo's, and realtime assumes none of its own. A region is a shard
// of the index: the points written in it come on loc:<region> (published by the index), the
// events of the bookings picked up in it go to ev:reg:<region> (Bus.Publish). Every field is
// required.
type Grid struct {
	// Region names the region of a point (geo.Region); RegionRes is its H3 resolution.
	Region    func(lat, lng float64) string
	RegionRes int
	// Cell is the index cell of a point (geo.Cell): a live map counts drivers in the cell's
	// ancestors, as the surge markets count supply.
	Cell func(lat, lng float64) h3.Cell
	// MarketRes is the H3 resolution of a surge market (geo.MarketRes): a live map's finest
	// cells, each coloured with its market's surge.
	MarketRes int
	// Covering lists the cells at res covering a box (geo.CellsCovering), at most max; false
	// when the box needs more.
	Covering func(minLat, minLng, maxLat, maxLng float64, res, max int) ([]h3.Cell, bool)
	// Boundary is the outline of a cell as [lat, lng] pairs (geo.Boundary).
	Boundary func(cell string) [][2]float64
}

// cellsResFor picks the resolution of the cells for an area this far across (corner to corner):
// the finest, up to MarketRes, whose hexagons are at least 1/50 of it across, so that a
// screen holds a few hundred at most (all of India: resolution 2; a city: 6 or 7).
func (g Grid) cellsResFor(diagM float64) int {
	res := g.MarketRes
	for res > 0 && h3.HexagonEdgeLengthAvgM(res)*50 < diagM {
		res--
	}
	return res
}

// regionNear reports whether a region (an H3 cell at RegionRes) may hold points of a: its
// centre lies in a widened by two region edges.
func (g Grid) regionNear(region string, a area) bool {
	c := h3.Cell(h3.IndexFromString(region))
	if !c.IsValid() {
		return false
	}
	ll := c.LatLng()
	pad := 2 * h3.HexagonEdgeLengthAvgM(g.RegionRes) / 111000
	return ll.Lat >= a.minLat-pad && ll.Lat <= a.maxLat+pad && ll.Lng >= a.minLng-pad && ll.Lng <= a.maxLng+pad
}

// cellOf is the cell at res holding a point: the ancestor of its index cell, so that counts
// at every resolution add up the way the index groups drivers.
func (g Grid) cellOf(lat, lng float64, res int) uint64 {
	return parentCell(uint64(g.Cell(lat, lng)), res)
}
