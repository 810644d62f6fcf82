package geo

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
	"github.com/uber/h3-go/v4"
)

// MarketRes is the resolution of a surge market: the pickup's cell and its ring of six, about
// 36 km² at 7 (edge 1.2 km), the hexagons of the live map's supply and demand.
const MarketRes = 7

// Market keeps supply and demand for surge in Redis (implements dispatch.Market):
//
//	mkt:dem:<cell>   zset  booking id -> request time (ms); trimmed to the window on read
//	mkt:lvl:<cell>   string "level surge" of the market centred on the cell, with a TTL
//
// Supply is counted from the location index: drivers available and heard from within Fresh.
// Safe for concurrent use.
type Market struct {
	x     *Index
	fresh time.Duration
}

var _ dispatch.Market = (*Market)(nil)

// NewMarket returns the market over an index's Redis and key prefix. fresh bounds how old a
// driver's last point may be to count as supply (0: one minute, as the live map counts).
func NewMarket(x *Index, fresh time.Duration) *Market {
	if fresh <= 0 {
		fresh = time.Minute
	}
	return &Market{x: x, fresh: fresh}
}

func (m *Market) demandKey(c h3.Cell) string { return m.x.prefix + "mkt:dem:" + c.String() }
func (m *Market) levelKey(c string) string   { return m.x.prefix + "mkt:lvl:" + c }

// MarketCell is the cell naming the market of a point.
func MarketCell(lat, lng float64) h3.Cell {
	return h3.LatLngToCell(h3.LatLng{Lat: lat, Lng: lng}, MarketRes)
}

// Load implements dispatch.Market: demand in the pickup's cell and its ring over the window,
// supply there now, and the market's last level.
func (m *Market) Load(ctx context.Context, lat, lng float64, window time.Duration, now time.Time) (dispatch.MarketLoad, error) {
	centre := MarketCell(lat, lng)
	disk := centre.GridDisk(1)
	from := strconv.FormatInt(now.Add(-window).UnixMilli(), 10)
	pipe := m.x.rdb.Pipeline()
	counts := make([]*redis.IntCmd, 0, len(disk))
	for _, c := range disk {
		if c == 0 {
			continue
		}
		pipe.ZRemRangeByScore(ctx, m.demandKey(c), "-inf", "("+from)
		counts = append(counts, pipe.ZCount(ctx, m.demandKey(c), from, "+inf"))
	}
	lvl := pipe.Get(ctx, m.levelKey(centre.String()))
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return dispatch.MarketLoad{}, fmt.Errorf("market %s: %w", centre, translate(err))
	}
	load := dispatch.MarketLoad{Cell: centre.String(), Level: -1}
	for _, c := range counts {
		load.Demand += int(c.Val())
	}
	if v, err := lvl.Result(); err == nil {
		if f := strings.Fields(v); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				load.Level = n
			}
		}
	}
	positions, err := m.x.InArea(ctx, disk)
	if err != nil {
		return dispatch.MarketLoad{}, fmt.Errorf("market %s supply: %w", centre, err)
	}
	for _, p := range positions {
		if p.State == dispatch.DriverAvailable && now.Sub(p.At) < m.fresh {
			load.Supply++
		}
	}
	return load, nil
}

// SetLevel implements dispatch.Market.
func (m *Market) SetLevel(ctx context.Context, cell string, level int, surge float64, ttl time.Duration) error {
	v := strconv.Itoa(level) + " " + strconv.FormatFloat(surge, 'f', -1, 64)
	if err := m.x.rdb.Set(ctx, m.levelKey(cell), v, ttl).Err(); err != nil {
		return fmt.Errorf("market %s: set level: %w", cell, translate(err))
	}
	return nil
}

// AddDemand implements dispatch.Market. The key lives three hours past its last request (longer
// than any city's window).
func (m *Market) AddDemand(ctx context.Context, id string, lat, lng float64, at time.Time) error {
	k := m.demandKey(MarketCell(lat, lng))
	pipe := m.x.rdb.Pipeline()
	pipe.ZAdd(ctx, k, redis.Z{Score: float64(at.UnixMilli()), Member: id})
	pipe.Expire(ctx, k, 3*time.Hour)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("market demand: %w", translate(err))
	}
	return nil
}

// Surges answers the surge last set for each market cell given (cells with none are left out),
// for the live map.
func (m *Market) Surges(ctx context.Context, cells []string) (map[string]float64, error) {
	out := map[string]float64{}
	if len(cells) == 0 {
		return out, nil
	}
	pipe := m.x.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(cells))
	for i, c := range cells {
		cmds[i] = pipe.Get(ctx, m.levelKey(c))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, fmt.Errorf("market surges: %w", translate(err))
	}
	for i, cmd := range cmds {
		if f := strings.Fields(cmd.Val()); len(f) == 2 {
			if s, err := strconv.ParseFloat(f[1], 64); err == nil && s > 1 {
				out[cells[i]] = s
			}
		}
	}
	return out, nil
}
