package geo

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
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

	// supply caches each cell's count for supplyTTL: a booking reads seven cells of about 50
	// index cells each, and at peak most bookings land in a few busy markets. A count a second
	// old prices a window of minutes as well as a new one.
	mu     sync.Mutex
	supply map[h3.Cell]cellSupply
}

type cellSupply struct {
	n  int
	at time.Time // when it was counted (this process's clock)
}

// supplyTTL is how long a cell's supply count is reused.
const supplyTTL = time.Second

var _ dispatch.Market = (*Market)(nil)

// NewMarket returns the market over an index's Redis and key prefix. fresh bounds how old a
// driver's last point may be to count as supply (0: one minute, as the live map counts).
func NewMarket(x *Index, fresh time.Duration) *Market {
	if fresh <= 0 {
		fresh = time.Minute
	}
	return &Market{x: x, fresh: fresh, supply: map[h3.Cell]cellSupply{}}
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
	supply, err := m.supplyIn(ctx, disk, now)
	if err != nil {
		return dispatch.MarketLoad{}, fmt.Errorf("market %s supply: %w", centre, err)
	}
	load.Supply = supply
	return load, nil
}

// supplyIn counts the drivers available and fresh in the cells, reading from the index only
// the cells whose count is older than supplyTTL.
func (m *Market) supplyIn(ctx context.Context, cells []h3.Cell, now time.Time) (int, error) {
	total := 0
	var stale []h3.Cell
	m.mu.Lock()
	for _, c := range cells {
		if c == 0 {
			continue
		}
		if s, ok := m.supply[c]; ok && time.Since(s.at) < supplyTTL {
			total += s.n
		} else {
			stale = append(stale, c)
		}
	}
	m.mu.Unlock()
	if len(stale) == 0 {
		return total, nil
	}
	at := time.Now()
	positions, err := m.x.InArea(ctx, stale)
	if err != nil {
		return 0, err
	}
	counts := make(map[h3.Cell]int, len(stale))
	for _, p := range positions {
		if p.State == dispatch.DriverAvailable && now.Sub(p.At) < m.fresh {
			// The index keeps a point in its CellRes cell, and InArea read the CellRes children
			// of each market cell: the parent names the market cell it was read for.
			counts[h3.LatLngToCell(h3.LatLng{Lat: p.Lat, Lng: p.Lng}, CellRes).Parent(MarketRes)]++
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for c, s := range m.supply {
		if at.Sub(s.at) > supplyTTL {
			delete(m.supply, c) // markets nobody asks about
		}
	}
	for _, c := range stale {
		total += counts[c]
		m.supply[c] = cellSupply{n: counts[c], at: at}
	}
	return total, nil
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
