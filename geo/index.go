package geo

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/uber/h3-go/v4"
)

// Options configure an Index.
type Options struct {
	// Prefix is put before every key (tests use it to keep runs apart). It must not contain braces.
	Prefix string
	// Feed makes Write publish the points it applies on their region's FeedChannel, from the
	// update script itself: one message per region and flush, in the same round trip. Without
	// it the caller publishes (realtime.Hub.OnWritten does when the index does not).
	Feed bool
}

// Index is the Redis location index. It is safe for concurrent use.
type Index struct {
	rdb    redis.UniversalClient
	prefix string
	feed   bool

	mu      sync.Mutex        // guards regions
	regions map[string]string // driver id -> region last written by this process
}

var _ dispatch.Locator = (*Index)(nil)

// NewIndex returns an index over rdb. The caller owns rdb and closes it.
func NewIndex(rdb redis.UniversalClient, opts Options) *Index {
	return &Index{rdb: rdb, prefix: opts.Prefix, feed: opts.Feed, regions: map[string]string{}}
}

// Feeds reports whether Write publishes the points it applies (Options.Feed).
func (x *Index) Feeds() bool { return x.feed }

func (x *Index) posKey(region string) string   { return x.prefix + "geo:{r" + region + "}:pos" }
func (x *Index) cellsKey(region string) string { return x.prefix + "geo:{r" + region + "}:cells" }
func (x *Index) drvKey(id string) string       { return x.prefix + "drv:{" + id + "}" }
func (x *Index) leaseKey(id string) string     { return x.prefix + "drv:{" + id + "}:lease" }
func (x *Index) regionsKey() string            { return x.prefix + "geo:regions" }

// FeedChannel is the pub/sub channel of a region's position changes: a JSON array of
// dispatch.DriverView. The gateways publish indexed points on it (realtime.Hub.OnWritten, with
// the same prefix); the index itself publishes state changes (SetState, Sweep). Replicas and
// dispatchers' maps subscribe to it.
func (x *Index) FeedChannel(region string) string { return x.prefix + "loc:" + region }

// Forget drops what this process remembers of a driver's region, so that the next point reads
// it from Redis again: call it when the driver's socket closes (it may reconnect to another
// gateway, which may move it to another region).
func (x *Index) Forget(driverID string) {
	x.mu.Lock()
	delete(x.regions, driverID)
	x.mu.Unlock()
}

//go:embed lua/*.lua
var luaFiles embed.FS

// luaScript is the script in lua/<name>.lua, whose opening comment says its KEYS, ARGV and
// answer. Every key a script touches shares one hash tag (the package doc's key design). It
// panics when the file is missing: scripts are package variables, so that is at init.
func luaScript(name string) *redis.Script {
	src, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(fmt.Sprintf("geo: Lua script %s: %v", name, err))
	}
	return redis.NewScript(string(src))
}

// updateScript writes drivers' points into one region, latest wins: lua/update.lua.
var updateScript = luaScript("update")

// removeScript takes a driver out of a region and returns its record: lua/remove.lua.
var removeScript = luaScript("remove")

// stateScript sets the state in a driver's record in a region: lua/state.lua.
var stateScript = luaScript("state")

// sweepScript marks a region's silent available drivers offline: lua/sweep.lua.
var sweepScript = luaScript("sweep")

// casStateScript sets a driver's own state if it is still the one expected: lua/cas_state.lua.
var casStateScript = luaScript("cas_state")

// scanScript returns the records of the drivers in some cells of a region: lua/scan.lua.
var scanScript = luaScript("scan")

// releaseScript deletes a lease only if it still carries the caller's token: lua/release.lua.
var releaseScript = luaScript("release")

// scripts are the ones LoadScripts loads, among them every script the index runs in a
// pipeline: there Script.Run cannot fall back to EVAL on NOSCRIPT, so execPipe reloads them.
var scripts = []*redis.Script{updateScript, removeScript, stateScript, sweepScript, casStateScript, scanScript, releaseScript}

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
	cells := make([]h3.Cell, len(ups))
	var unknown []int
	x.mu.Lock()
	for i, u := range ups {
		c := Cell(u.Point.Lat, u.Point.Lng)
		cells[i] = c
		out[i].Update = u
		out[i].Region = regionName(c)
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
			if _, ok := x.regions[ups[i].DriverID]; ok {
				continue
			}
			r, err := cmds[j].Result()
			if err != nil {
				r = "" // no record anywhere: written as new below
			}
			x.regions[ups[i].DriverID] = r
		}
		x.mu.Unlock()
	}
	type move struct{ id, from string }
	var moves []move
	var entered []int // drivers whose own record must name a new region
	x.mu.Lock()
	for i, w := range out {
		prev := x.regions[w.DriverID]
		if prev != w.Region {
			entered = append(entered, i)
			if prev != "" {
				moves = append(moves, move{w.DriverID, prev})
			}
		}
		x.regions[w.DriverID] = w.Region
	}
	x.mu.Unlock()
	forget := func() {
		// What this process believes may now be wrong: read it again next time.
		x.mu.Lock()
		for _, u := range ups {
			delete(x.regions, u.DriverID)
		}
		x.mu.Unlock()
	}
	var carried map[string]string
	if len(moves) > 0 {
		// Leave the old regions first, carrying the state over.
		carried = make(map[string]string, len(moves))
		cmds := make([]*redis.Cmd, len(moves))
		if err := x.execPipe(ctx, func(mp redis.Pipeliner) {
			for i, m := range moves {
				cmds[i] = removeScript.Run(ctx, mp, []string{x.posKey(m.from), x.cellsKey(m.from)}, m.id)
			}
		}); err != nil {
			forget()
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
	// One script call per region, its points in batch order.
	byRegion := map[string][]int{}
	for i, w := range out {
		byRegion[w.Region] = append(byRegion[w.Region], i)
	}
	type call struct {
		cmd *redis.Cmd
		idx []int
	}
	calls := make([]call, 0, len(byRegion))
	// Every argument is a slice of one buffer: one allocation per write, not two per point.
	arena := make([]byte, 0, len(out)*(96+160*btoi(x.feed)))
	if err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
		calls = calls[:0]
		arena = arena[:0]
		for region, idx := range byRegion {
			args := make([]any, 1+2*len(idx))
			args[0] = ""
			if x.feed {
				args[0] = x.FeedChannel(region)
			}
			for j, i := range idx {
				w := &out[i]
				state := string(w.NewState)
				if s, ok := carried[w.DriverID]; ok {
					state = s
				}
				start := len(arena)
				arena = strconv.AppendFloat(arena, w.Point.Lat, 'f', 6, 64)
				arena = append(arena, ',')
				arena = strconv.AppendFloat(arena, w.Point.Lng, 'f', 6, 64)
				arena = append(arena, ',')
				arena = strconv.AppendFloat(arena, w.Point.Heading, 'f', 0, 64)
				arena = append(arena, ',')
				arena = strconv.AppendInt(arena, w.Point.TS, 10)
				arena = append(arena, ',')
				arena = strconv.AppendUint(arena, uint64(cells[i]), 16) // h3.Cell.String
				arena = append(arena, ',')
				arena = append(arena, state...)
				arena = append(arena, ',')
				arena = append(arena, w.DriverID...)
				args[1+2*j] = arena[start:len(arena):len(arena)]
				start = len(arena)
				if x.feed {
					arena = appendViewHead(arena, w)
				}
				args[2+2*j] = arena[start:len(arena):len(arena)]
			}
			calls = append(calls, call{updateScript.EvalSha(ctx, pipe, []string{x.posKey(region), x.cellsKey(region)}, args...), idx})
		}
		for _, i := range entered {
			pipe.HSet(ctx, x.drvKey(out[i].DriverID), "region", out[i].Region)
			pipe.SAdd(ctx, x.regionsKey(), out[i].Region)
		}
	}); err != nil {
		forget()
		return nil, fmt.Errorf("index %d points: %w", len(ups), err)
	}
	res := make([]string, len(out))
	for _, c := range calls {
		vals, err := c.cmd.StringSlice()
		if err != nil || len(vals) != len(c.idx) {
			forget()
			return nil, fmt.Errorf("index %d points: unexpected answer %v", len(ups), err)
		}
		for j, i := range c.idx {
			res[i] = vals[j]
		}
	}
	var revived, rebuilt []int
	isEntered := make(map[int]bool, len(entered))
	for _, i := range entered {
		isEntered[i] = true
	}
	for i, s := range res {
		if s != "" {
			out[i].Applied = true
			if s[0] == '*' {
				s = s[1:]
				if !isEntered[i] {
					rebuilt = append(rebuilt, i)
				}
			}
			if s[0] == '+' {
				s = s[1:]
				revived = append(revived, i)
			}
			out[i].State = dispatch.DriverState(s)
		}
	}
	if len(revived) > 0 {
		// A driver the sweeper had marked offline speaks again: its own record follows.
		if err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
			for _, i := range revived {
				casStateScript.Run(ctx, pipe, []string{x.drvKey(out[i].DriverID)}, string(dispatch.DriverOffline), string(out[i].State))
			}
		}); err != nil {
			return out, fmt.Errorf("revive %d drivers: %w", len(revived), err)
		}
	}
	if len(rebuilt) > 0 {
		// A record created in the region this process believed the driver was in already: Redis
		// lost its data (restarted without persistence). The driver's own record follows, as for
		// a driver entering a region, so that Position, SetState and Sweep find it again (found
		// by the fault suite, TestFaultRedisKilled).
		if err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
			for _, i := range rebuilt {
				pipe.HSet(ctx, x.drvKey(out[i].DriverID), "region", out[i].Region)
				pipe.HSetNX(ctx, x.drvKey(out[i].DriverID), "state", string(out[i].State))
				pipe.SAdd(ctx, x.regionsKey(), out[i].Region)
			}
		}); err != nil {
			forget()
			return out, fmt.Errorf("rebuild %d drivers' records: %w", len(rebuilt), err)
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

// SetState implements dispatch.Locator: the driver's own record first (the truth), then the
// copy in the index that searches filter on, which is published on the region's feed
// (SetStates for one driver).
func (x *Index) SetState(ctx context.Context, driverID string, s dispatch.DriverState) error {
	return x.SetStates(ctx, []string{driverID}, s)
}

func (x *Index) publish(ctx context.Context, c redis.Cmdable, region string, views []dispatch.DriverView) error {
	b, err := json.Marshal(views)
	if err != nil {
		return err
	}
	return c.Publish(ctx, x.FeedChannel(region), b).Err()
}

// Regions lists the regions that have ever held a driver.
func (x *Index) Regions(ctx context.Context) ([]string, error) {
	rs, err := x.rdb.SMembers(ctx, x.regionsKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("list regions: %w", translate(err))
	}
	return rs, nil
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

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

var regionNames sync.Map // h3.Cell (an index cell) -> its region's name

// regionName is RegionOf without an allocation per call.
func regionName(c h3.Cell) string {
	if r, ok := regionNames.Load(c); ok {
		return r.(string)
	}
	r := RegionOf(c)
	regionNames.Store(c, r)
	return r
}

// plainJSON: a string encoding/json writes as it is, between quotes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// appendViewHead appends the point's dispatch.DriverView as JSON, all but the state and the
// closing brace (the update script adds them).
func appendViewHead(b []byte, w *Written) []byte {
	b = append(b, `{"id":`...)
	if plainJSON(w.DriverID) {
		b = append(append(append(b, '"'), w.DriverID...), '"')
	} else {
		id, _ := json.Marshal(w.DriverID)
		b = append(b, id...)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{`,"lat":`, w.Point.Lat}, {`,"lng":`, w.Point.Lng}, {`,"heading":`, w.Point.Heading}} {
		b = append(b, f.name...)
		if a := math.Abs(f.v); a != 0 && (a < 1e-6 || a >= 1e21) {
			j, _ := json.Marshal(f.v)
			b = append(b, j...)
		} else {
			b = strconv.AppendFloat(b, f.v, 'f', -1, 64)
		}
	}
	b = append(b, `,"updated_at":"`...)
	b = time.UnixMilli(w.Point.TS).UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// Sweep marks offline every available driver whose latest point is older than offlineAfter,
// in the index and in its own record, and publishes the change on the region's feed. (A driver
// silent for less is still in the index; dispatch.MatcherOptions.Fresh keeps it from being a
// candidate.) It returns how many it marked. Running it in several processes at once is safe:
// the check and the change are one script per region. A swept driver that sends a point again
// while its session still holds it online comes back (see updateScript).
func (x *Index) Sweep(ctx context.Context, offlineAfter time.Duration) (int, error) {
	regions, err := x.Regions(ctx)
	if err != nil {
		return 0, err
	}
	cutoff := time.Now().Add(-offlineAfter)
	n := 0
	for _, region := range regions {
		var stale []any
		err := x.scanRegion(ctx, region, func(ps []dispatch.Position) error {
			for _, p := range ps {
				if p.State == dispatch.DriverAvailable && p.At.Before(cutoff) {
					stale = append(stale, p.DriverID)
				}
			}
			return nil
		})
		if err != nil {
			return n, err
		}
		for len(stale) > 0 {
			page := stale[:min(len(stale), 500)]
			stale = stale[len(page):]
			vals, err := sweepScript.Run(ctx, x.rdb, []string{x.posKey(region), x.cellsKey(region)},
				append([]any{cutoff.UnixMilli()}, page...)...).StringSlice()
			if err != nil {
				return n, fmt.Errorf("sweep region %s: %w", region, translate(err))
			}
			var views []dispatch.DriverView
			for i := 0; i+1 < len(vals); i += 2 {
				if p, ok := parseRecord(vals[i], vals[i+1]); ok {
					views = append(views, p.View())
				}
			}
			if len(views) == 0 {
				continue
			}
			n += len(views)
			payload, err := json.Marshal(views)
			if err != nil {
				return n, err
			}
			if err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
				for _, v := range views {
					casStateScript.Run(ctx, pipe, []string{x.drvKey(v.ID)}, string(dispatch.DriverAvailable), string(dispatch.DriverOffline))
				}
				pipe.Publish(ctx, x.FeedChannel(region), payload)
			}); err != nil {
				return n, fmt.Errorf("sweep region %s: %w", region, translate(err))
			}
		}
	}
	return n, nil
}

// RunSweeper sweeps every interval until ctx is done (see Sweep); errors are logged and the
// next round tries again. It is the dispatcher role's job.
func (x *Index) RunSweeper(ctx context.Context, every, offlineAfter time.Duration, log zerolog.Logger) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n, err := x.Sweep(ctx, offlineAfter)
		if err != nil && ctx.Err() == nil {
			log.Warn().Err(err).Msg("sweep silent drivers")
		}
		if n > 0 {
			log.Debug().Int("drivers", n).Msg("silent drivers marked offline")
		}
	}
}

// State implements dispatch.Locator.
func (x *Index) State(ctx context.Context, driverID string) (dispatch.DriverState, error) {
	s, err := x.rdb.HGet(ctx, x.drvKey(driverID), "state").Result()
	if errors.Is(err, redis.Nil) {
		return dispatch.DriverOffline, nil
	}
	if err != nil {
		return "", fmt.Errorf("driver %s state: %w", driverID, translate(err))
	}
	return dispatch.DriverState(s), nil
}

// Reserve implements dispatch.Locator with SET NX PX: the lease is a compare-and-set on the
// driver's own slot, so two dispatchers can never both hold it.
func (x *Index) Reserve(ctx context.Context, driverID, token string, ttl time.Duration) (bool, error) {
	ok, err := x.rdb.SetNX(ctx, x.leaseKey(driverID), token, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("reserve driver %s: %w", driverID, translate(err))
	}
	return ok, nil
}

// Release implements dispatch.Locator.
func (x *Index) Release(ctx context.Context, driverID, token string) error {
	if err := releaseScript.Run(ctx, x.rdb, []string{x.leaseKey(driverID)}, token).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("release driver %s: %w", driverID, translate(err))
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
