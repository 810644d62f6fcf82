package realtime

import "github.com/drivers4me/dispatch/geo"

// geoGrid is the grid cmd/dispatchd gives the bus: geo's.
var geoGrid = Grid{Region: geo.Region, RegionRes: geo.RegionRes, Cell: geo.Cell, MarketRes: geo.MarketRes,
	Covering: geo.CellsCovering, Boundary: geo.Boundary}
