package geo

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
	"github.com/uber/h3-go/v4"
)

// Reading the index: the nearest drivers to a point (exact: grid.go says why), a driver's
// position, the drivers of an area or of a region, the regions.

// scanScript returns the records of the drivers in some cells of a region: lua/scan.lua.
var scanScript = luaScript("scan")

// Nearby implements dispatch.Locator: it scans grid disks growing ring by ring and orders by
// exact haversine distance (ties by driver id). It stops as soon as limit drivers are known to be
// nearer than anything outside the rings scanned (see grid.go), so the answer is exact.
func (x *Index) Nearby(ctx context.Context, lat, lng, radiusM float64, limit int, keep func(dispatch.Position) bool) ([]dispatch.Nearby, error) {
	if limit <= 0 {
		return nil, nil
	}
	s := newSearch(lat, lng, CellRes)
	t := topK{limit: limit}
	// Rings are scanned in groups of 1, 2, 4, then 8 per round trip: ring by ring, a 2 km search
	// cost Redis about 15 round trips, which stalled matching when Redis answered slowly
	// (TestFaultRedisLatency in cmd/dispatchd). The stop test after each group is the same.
	for first, span := 0, 1; ; first, span = first+span, min(2*span, 8) {
		k := first + span - 1 // the last ring of the group
		byRegion := map[string][]string{}
		for ring := first; ring <= k; ring++ {
			for _, c := range s.ring(ring) {
				g := geomOf(c)
				near := dispatch.DistanceM(lat, lng, g.lat, g.lng) - g.r
				if near > radiusM || (t.full() && near > t.worst()) {
					continue // no point of this cell can be in the answer
				}
				r := RegionOf(c)
				byRegion[r] = append(byRegion[r], c.String())
			}
		}
		if len(byRegion) > 0 {
			cmds, err := x.scan(ctx, byRegion)
			if err != nil {
				return nil, fmt.Errorf("nearby scan rings %d-%d: %w", first, k, translate(err))
			}
			for _, cmd := range cmds {
				vals, err := cmd.StringSlice()
				if err != nil {
					continue
				}
				for i := 0; i+1 < len(vals); i += 2 {
					p, ok := parseRecord(vals[i], vals[i+1])
					if !ok {
						continue
					}
					d := dispatch.DistanceM(lat, lng, p.Lat, p.Lng)
					if d > radiusM || (t.full() && d > t.worst()) || (keep != nil && !keep(p)) {
						continue
					}
					t.offer(dispatch.Nearby{Position: p, DistanceM: d})
				}
			}
		}
		if t.done(&s, k, radiusM) {
			break
		}
	}
	return t.found, nil
}

// NearbyAvailable implements dispatch.Locator: Nearby among available drivers.
func (x *Index) NearbyAvailable(ctx context.Context, lat, lng, radiusM float64, limit int, keep func(dispatch.Position) bool) ([]dispatch.Nearby, error) {
	return x.Nearby(ctx, lat, lng, radiusM, limit, func(p dispatch.Position) bool {
		return p.State == dispatch.DriverAvailable && (keep == nil || keep(p))
	})
}

// scan runs scanScript once per region, all in one pipeline.
func (x *Index) scan(ctx context.Context, byRegion map[string][]string) ([]*redis.Cmd, error) {
	var cmds []*redis.Cmd
	err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
		cmds = cmds[:0]
		for r, cells := range byRegion {
			args := make([]any, len(cells))
			for i, c := range cells {
				args[i] = c
			}
			cmds = append(cmds, scanScript.Run(ctx, pipe, []string{x.posKey(r), x.cellsKey(r)}, args...))
		}
	})
	return cmds, err
}

// Position implements dispatch.Locator.
func (x *Index) Position(ctx context.Context, driverID string) (dispatch.Position, error) {
	region, err := x.rdb.HGet(ctx, x.drvKey(driverID), "region").Result()
	if errors.Is(err, redis.Nil) {
		return dispatch.Position{}, fmt.Errorf("driver %s: %w", driverID, dispatch.ErrNotFound)
	}
	if err != nil {
		return dispatch.Position{}, fmt.Errorf("driver %s region: %w", driverID, translate(err))
	}
	rec, err := x.rdb.HGet(ctx, x.posKey(region), driverID).Result()
	if errors.Is(err, redis.Nil) {
		return dispatch.Position{}, fmt.Errorf("driver %s: %w", driverID, dispatch.ErrNotFound)
	}
	if err != nil {
		return dispatch.Position{}, fmt.Errorf("driver %s position: %w", driverID, translate(err))
	}
	p, ok := parseRecord(driverID, rec)
	if !ok {
		return dispatch.Position{}, fmt.Errorf("driver %s: bad record: %w", driverID, dispatch.ErrNotFound)
	}
	return p, nil
}

// InArea returns the positions of the drivers in the given H3 cells of any resolution up to
// CellRes (a dispatcher's watched area).
func (x *Index) InArea(ctx context.Context, cells []h3.Cell) ([]dispatch.Position, error) {
	byRegion := map[string][]string{}
	for _, c := range cells {
		if c.Resolution() > CellRes {
			c = c.Parent(CellRes)
		}
		if c.Resolution() < RegionRes {
			return nil, fmt.Errorf("area cell %s coarser than a region: %w", c, dispatch.ErrInvalid)
		}
		r := c.Parent(RegionRes).String()
		// Index cells are children of c: their string form shares no prefix, so expand.
		for _, ch := range c.Children(CellRes) {
			byRegion[r] = append(byRegion[r], ch.String())
		}
	}
	cmds, err := x.scan(ctx, byRegion)
	if err != nil {
		return nil, fmt.Errorf("area scan: %w", translate(err))
	}
	var out []dispatch.Position
	for _, cmd := range cmds {
		vals, _ := cmd.StringSlice()
		for i := 0; i+1 < len(vals); i += 2 {
			if p, ok := parseRecord(vals[i], vals[i+1]); ok {
				out = append(out, p)
			}
		}
	}
	return out, nil
}

func parseRecord(id, rec string) (dispatch.Position, bool) {
	f := strings.Split(rec, ",")
	if len(f) != 6 {
		return dispatch.Position{}, false
	}
	lat, err1 := strconv.ParseFloat(f[0], 64)
	lng, err2 := strconv.ParseFloat(f[1], 64)
	hd, _ := strconv.ParseFloat(f[2], 64)
	ts, err3 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return dispatch.Position{}, false
	}
	return dispatch.Position{DriverID: id, Lat: lat, Lng: lng, Heading: hd,
		State: dispatch.DriverState(f[4]), At: time.UnixMilli(ts).UTC()}, true
}

// RegionPositions returns every driver a region holds (offline ones included), read a page at a
// time: a record changed meanwhile may come in either version (a zoomed-out map's first count).
func (x *Index) RegionPositions(ctx context.Context, region string) ([]dispatch.Position, error) {
	var out []dispatch.Position
	err := x.scanRegion(ctx, region, func(ps []dispatch.Position) error {
		out = append(out, ps...)
		return nil
	})
	return out, err
}

// scanRegion calls fn with every record of a region, a page at a time (HSCAN: a record
// changed during the scan may be seen in either version, or twice).
func (x *Index) scanRegion(ctx context.Context, region string, fn func(ps []dispatch.Position) error) error {
	var cursor uint64
	for {
		kv, next, err := x.rdb.HScan(ctx, x.posKey(region), cursor, "", 2000).Result()
		if err != nil {
			return fmt.Errorf("scan region %s: %w", region, translate(err))
		}
		ps := make([]dispatch.Position, 0, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			if p, ok := parseRecord(kv[i], kv[i+1]); ok {
				ps = append(ps, p)
			}
		}
		if err := fn(ps); err != nil {
			return err
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// Regions lists the regions that have ever held a driver.
func (x *Index) Regions(ctx context.Context) ([]string, error) {
	rs, err := x.rdb.SMembers(ctx, x.regionsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("list regions: %w", translate(err))
	}
	return rs, nil
}
