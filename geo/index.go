package geo

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
	"github.com/uber/h3-go/v4"
)

// Options configure an Index.
type Options struct {
	// Prefix is put before every key (tests use it to keep runs apart). It must not contain braces.
	Prefix string
}

// Index is the Redis location index. It is safe for concurrent use.
type Index struct {
	rdb    redis.UniversalClient
	prefix string

	mu      sync.Mutex        // guards regions
	regions map[string]string // driver id -> region last written by this process
}

var _ dispatch.Locator = (*Index)(nil)

// NewIndex returns an index over rdb. The caller owns rdb and closes it.
func NewIndex(rdb redis.UniversalClient, opts Options) *Index {
	return &Index{rdb: rdb, prefix: opts.Prefix, regions: map[string]string{}}
}

func (x *Index) posKey(region string) string   { return x.prefix + "geo:{r" + region + "}:pos" }
func (x *Index) cellsKey(region string) string { return x.prefix + "geo:{r" + region + "}:cells" }
func (x *Index) drvKey(id string) string       { return x.prefix + "drv:{" + id + "}" }
func (x *Index) leaseKey(id string) string     { return x.prefix + "drv:{" + id + "}:lease" }

// updateScript writes a driver's point into a region: latest wins by ts; a move between cells
// is one atomic step. ARGV: id, lat, lng, heading, ts, cell, state for a new record ("" keeps).
// Returns the driver's state when written, "" when the point is older than what is stored.
var updateScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
local state = ARGV[7]
if old then
  local f = {}
  for s in string.gmatch(old, '([^,]+)') do f[#f+1] = s end
  if tonumber(f[4]) > tonumber(ARGV[5]) then return '' end
  if state == '' then state = f[5] end
  if f[6] ~= ARGV[6] then redis.call('ZREM', KEYS[2], f[6] .. ':' .. ARGV[1]) end
end
if state == '' then state = 'available' end
redis.call('ZADD', KEYS[2], 0, ARGV[6] .. ':' .. ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. ',' .. ARGV[3] .. ',' .. ARGV[4] .. ',' .. ARGV[5] .. ',' .. state .. ',' .. ARGV[6])
return state
`)

// removeScript takes a driver out of a region and returns its record (or false).
var removeScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
local f = {}
for s in string.gmatch(old, '([^,]+)') do f[#f+1] = s end
redis.call('ZREM', KEYS[2], f[6] .. ':' .. ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
return old
`)

// stateScript replaces the state field of a driver's record in a region, if present.
var stateScript = redis.NewScript(`
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
local f = {}
for s in string.gmatch(old, '([^,]+)') do f[#f+1] = s end
f[5] = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], table.concat(f, ','))
return 1
`)

// scanScript returns the records of the drivers in the given cells: id1, rec1, id2, rec2...
var scanScript = redis.NewScript(`
local out = {}
for i = 1, #ARGV do
  local ms = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. ARGV[i] .. ':', '[' .. ARGV[i] .. ';')
  for _, m in ipairs(ms) do
    local id = string.sub(m, string.len(ARGV[i]) + 2)
    local rec = redis.call('HGET', KEYS[1], id)
    if rec then out[#out+1] = id; out[#out+1] = rec end
  end
end
return out
`)

// releaseScript deletes the lease only if it still carries the caller's token.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

var scripts = []*redis.Script{updateScript, removeScript, stateScript, scanScript, releaseScript}

// LoadScripts loads the Lua scripts (on every shard of a cluster). Pipelines send EVALSHA,
// which a Redis that restarted or never saw the script answers NOSCRIPT: execPipe then loads
// them and retries once.
func (x *Index) LoadScripts(ctx context.Context) error {
	for _, sc := range scripts {
		if err := sc.Load(ctx, x.rdb).Err(); err != nil {
			return fmt.Errorf("load script: %w", err)
		}
	}
	return nil
}

// execPipe builds and runs a pipeline, reloading the scripts and running it again on NOSCRIPT.
func (x *Index) execPipe(ctx context.Context, build func(redis.Pipeliner)) error {
	for attempt := 0; ; attempt++ {
		pipe := x.rdb.Pipeline()
		build(pipe)
		_, err := pipe.Exec(ctx)
		if err == nil || errors.Is(err, redis.Nil) {
			return nil
		}
		if attempt == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if lerr := x.LoadScripts(ctx); lerr != nil {
				return lerr
			}
			continue
		}
		return err
	}
}

// Update is one driver's point to index.
type Update struct {
	DriverID string
	Point    dispatch.Point
	// NewState is the state recorded if the driver has no record in the point's region yet.
	NewState dispatch.DriverState
	// Received is when the gateway read the point (for the socket-to-indexed latency).
	Received time.Time
}

// Written is the outcome of one Update: Applied is false when a newer point was already stored.
type Written struct {
	Update
	Region  string
	State   dispatch.DriverState
	Applied bool
}

// Write indexes a batch of points in as few round trips as it can: one pipeline for the batch
// (go-redis splits it by slot on a cluster), plus one for drivers changing region. Points older
// than the stored one are ignored. A batch holds at most one point per driver.
func (x *Index) Write(ctx context.Context, ups []Update) ([]Written, error) {
	if len(ups) == 0 {
		return nil, nil
	}
	out := make([]Written, len(ups))
	var unknown []int
	x.mu.Lock()
	for i, u := range ups {
		out[i].Update = u
		out[i].Region = RegionOf(Cell(u.Point.Lat, u.Point.Lng))
		if _, ok := x.regions[u.DriverID]; !ok {
			unknown = append(unknown, i)
		}
	}
	x.mu.Unlock()
	if len(unknown) > 0 {
		// A driver new to this process may have a record in another region (it reconnected here).
		pipe := x.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(unknown))
		for j, i := range unknown {
			cmds[j] = pipe.HGet(ctx, x.drvKey(ups[i].DriverID), "region")
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read regions: %w", err)
		}
		x.mu.Lock()
		for j, i := range unknown {
			if r, err := cmds[j].Result(); err == nil {
				if _, ok := x.regions[ups[i].DriverID]; !ok {
					x.regions[ups[i].DriverID] = r
				}
			}
		}
		x.mu.Unlock()
	}
	type move struct{ id, from string }
	var moves []move
	x.mu.Lock()
	for _, w := range out {
		if prev, ok := x.regions[w.DriverID]; ok && prev != w.Region {
			moves = append(moves, move{w.DriverID, prev})
		}
		x.regions[w.DriverID] = w.Region
	}
	x.mu.Unlock()
	carried := map[string]string{}
	if len(moves) > 0 {
		// Leave the old regions first, carrying the state over.
		cmds := make([]*redis.Cmd, len(moves))
		if err := x.execPipe(ctx, func(mp redis.Pipeliner) {
			for i, m := range moves {
				cmds[i] = removeScript.Run(ctx, mp, []string{x.posKey(m.from), x.cellsKey(m.from)}, m.id)
			}
		}); err != nil {
			return nil, fmt.Errorf("move drivers between regions: %w", err)
		}
		for i, m := range moves {
			if s, err := cmds[i].Text(); err == nil {
				if f := strings.Split(s, ","); len(f) == 6 {
					carried[m.id] = f[4]
				}
			}
		}
	}
	cmds := make([]*redis.Cmd, len(out))
	if err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
		for i, w := range out {
			state := string(w.NewState)
			if s, ok := carried[w.DriverID]; ok {
				state = s
			}
			cmds[i] = updateScript.Run(ctx, pipe, []string{x.posKey(w.Region), x.cellsKey(w.Region)},
				w.DriverID,
				strconv.FormatFloat(w.Point.Lat, 'f', 6, 64),
				strconv.FormatFloat(w.Point.Lng, 'f', 6, 64),
				strconv.FormatFloat(w.Point.Heading, 'f', 0, 64),
				strconv.FormatInt(w.Point.TS, 10),
				Cell(w.Point.Lat, w.Point.Lng).String(), state)
			pipe.HSet(ctx, x.drvKey(w.DriverID), "region", w.Region)
		}
	}); err != nil {
		return nil, fmt.Errorf("index %d points: %w", len(ups), err)
	}
	for i := range out {
		if s, err := cmds[i].Text(); err == nil && s != "" {
			out[i].Applied = true
			out[i].State = dispatch.DriverState(s)
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

// Nearby implements dispatch.Locator: it scans grid disks growing ring by ring and orders by
// exact haversine distance. It stops as soon as limit drivers are known to be nearer than
// anything the next ring could hold.
func (x *Index) Nearby(ctx context.Context, lat, lng, radiusM float64, limit int, keep func(dispatch.Position) bool) ([]dispatch.Nearby, error) {
	if limit <= 0 {
		return nil, nil
	}
	origin := Cell(lat, lng)
	maxK := RingsFor(radiusM)
	rings := origin.GridDiskDistances(maxK)
	var found []dispatch.Nearby
	for k, ring := range rings {
		byRegion := map[string][]string{}
		for _, c := range ring {
			r := RegionOf(c)
			byRegion[r] = append(byRegion[r], c.String())
		}
		cmds, err := x.scan(ctx, byRegion)
		if err != nil {
			return nil, fmt.Errorf("nearby scan ring %d: %w", k, err)
		}
		for _, cmd := range cmds {
			vals, err := cmd.StringSlice()
			if err != nil {
				continue
			}
			for i := 0; i+1 < len(vals); i += 2 {
				p, ok := parseRecord(vals[i], vals[i+1])
				if !ok || (keep != nil && !keep(p)) {
					continue
				}
				d := DistanceM(lat, lng, p.Lat, p.Lng)
				if d <= radiusM {
					found = append(found, dispatch.Nearby{Position: p, DistanceM: d})
				}
			}
		}
		sort.Slice(found, func(i, j int) bool { return found[i].DistanceM < found[j].DistanceM })
		if len(found) >= limit && found[limit-1].DistanceM <= float64(k)*ringSpacingM {
			break
		}
	}
	if len(found) > limit {
		found = found[:limit]
	}
	return found, nil
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
		return dispatch.Position{}, fmt.Errorf("driver %s region: %w", driverID, err)
	}
	rec, err := x.rdb.HGet(ctx, x.posKey(region), driverID).Result()
	if errors.Is(err, redis.Nil) {
		return dispatch.Position{}, fmt.Errorf("driver %s: %w", driverID, dispatch.ErrNotFound)
	}
	if err != nil {
		return dispatch.Position{}, fmt.Errorf("driver %s position: %w", driverID, err)
	}
	p, ok := parseRecord(driverID, rec)
	if !ok {
		return dispatch.Position{}, fmt.Errorf("driver %s: bad record: %w", driverID, dispatch.ErrNotFound)
	}
	return p, nil
}

// SetState implements dispatch.Locator: the driver's own record first (the truth), then the
// copy in the index that searches filter on.
func (x *Index) SetState(ctx context.Context, driverID string, s dispatch.DriverState) error {
	if err := x.rdb.HSet(ctx, x.drvKey(driverID), "state", string(s)).Err(); err != nil {
		return fmt.Errorf("set driver %s state: %w", driverID, err)
	}
	region, err := x.rdb.HGet(ctx, x.drvKey(driverID), "region").Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("driver %s region: %w", driverID, err)
	}
	if err := stateScript.Run(ctx, x.rdb, []string{x.posKey(region), x.cellsKey(region)}, driverID, string(s)).Err(); err != nil {
		return fmt.Errorf("index driver %s state: %w", driverID, err)
	}
	return nil
}

// State implements dispatch.Locator.
func (x *Index) State(ctx context.Context, driverID string) (dispatch.DriverState, error) {
	s, err := x.rdb.HGet(ctx, x.drvKey(driverID), "state").Result()
	if errors.Is(err, redis.Nil) {
		return dispatch.DriverOffline, nil
	}
	if err != nil {
		return "", fmt.Errorf("driver %s state: %w", driverID, err)
	}
	return dispatch.DriverState(s), nil
}

// Reserve implements dispatch.Locator with SET NX PX: the lease is a compare-and-set on the
// driver's own slot, so two dispatchers can never both hold it.
func (x *Index) Reserve(ctx context.Context, driverID, token string, ttl time.Duration) (bool, error) {
	ok, err := x.rdb.SetNX(ctx, x.leaseKey(driverID), token, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("reserve driver %s: %w", driverID, err)
	}
	return ok, nil
}

// Release implements dispatch.Locator.
func (x *Index) Release(ctx context.Context, driverID, token string) error {
	if err := releaseScript.Run(ctx, x.rdb, []string{x.leaseKey(driverID)}, token).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release driver %s: %w", driverID, err)
	}
	return nil
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
		return nil, fmt.Errorf("area scan: %w", err)
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
