package geo

import (
	"context"
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
	"github.com/uber/h3-go/v4"
)

// The write path: batches of points from the gateways (Writer) into the regions' position
// hashes and cell sets, each driver's own record following it from region to region.

// updateScript writes drivers' points into one region, latest wins: lua/update.lua.
var updateScript = luaScript("update")

// removeScript takes a driver out of a region and returns its record: lua/remove.lua.
var removeScript = luaScript("remove")

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
//
// On an error the outcomes are nil, unless the points were indexed and only the drivers' own
// records failed to follow (revived or rebuilt): then they come with the error.
func (x *Index) Write(ctx context.Context, ups []Update) ([]Written, error) {
	if len(ups) == 0 {
		return nil, nil
	}
	// What the steps fill is made here, in Write's own frame, where a small batch's stays off
	// the heap (the Writer flushes every 10 ms: a quiet gateway's batches hold a point or two).
	cells := make([]h3.Cell, len(ups))
	answers := make([]string, len(ups))
	out, unknown := x.locate(ups, cells)
	if err := x.learnRegions(ctx, ups, unknown); err != nil {
		return nil, err
	}
	moves, entered := x.noteRegions(out)
	var carried map[string]string // driver id -> the state it carries over (made here, as above)
	if len(moves) > 0 {
		carried = make(map[string]string, len(moves))
		if err := x.leaveRegions(ctx, moves, carried); err != nil {
			x.forgetRegions(ups)
			return nil, err
		}
	}
	if err := x.applyPoints(ctx, out, cells, carried, entered, answers); err != nil {
		x.forgetRegions(ups)
		return nil, err
	}
	revived, rebuilt := readAnswers(out, answers, entered)
	if err := x.revive(ctx, out, revived); err != nil {
		return out, err
	}
	if err := x.rebuild(ctx, out, rebuilt); err != nil {
		x.forgetRegions(ups)
		return out, err
	}
	return out, nil
}

// locate sets each point's index cell in cells and starts its outcome with its region. It
// also returns the points whose driver this process remembers no region for (new to it, or
// forgotten).
func (x *Index) locate(ups []Update, cells []h3.Cell) (out []Written, unknown []int) {
	out = make([]Written, len(ups))
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
	return out, unknown
}

// learnRegions reads, in one pipeline, the region named by the own record of each driver of
// the unknown points, and remembers it: a driver new to this process may have a record in
// another region (it reconnected here), which it must leave. A driver with no record anywhere
// is remembered in no region, and written as new.
func (x *Index) learnRegions(ctx context.Context, ups []Update, unknown []int) error {
	if len(unknown) == 0 {
		return nil
	}
	pipe := x.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(unknown))
	for j, i := range unknown {
		cmds[j] = pipe.HGet(ctx, x.drvKey(ups[i].DriverID), "region")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("read regions: %w", err)
	}
	x.mu.Lock()
	for j, i := range unknown {
		if _, ok := x.regions[ups[i].DriverID]; ok {
			continue
		}
		r, err := cmds[j].Result()
		if err != nil {
			r = "" // no record anywhere: written as new
		}
		x.regions[ups[i].DriverID] = r
	}
	x.mu.Unlock()
	return nil
}

// regionMove is a driver leaving the region from for another.
type regionMove struct{ id, from string }

// noteRegions remembers each point's region as its driver's. It returns the drivers leaving
// another region, whose record there must go, and the points whose driver's own record must
// name a new region (those moving, and those in no region before).
func (x *Index) noteRegions(out []Written) (moves []regionMove, entered []int) {
	x.mu.Lock()
	for i, w := range out {
		prev := x.regions[w.DriverID]
		if prev != w.Region {
			entered = append(entered, i)
			if prev != "" {
				moves = append(moves, regionMove{w.DriverID, prev})
			}
		}
		x.regions[w.DriverID] = w.Region
	}
	x.mu.Unlock()
	return moves, entered
}

// forgetRegions drops what this process remembers of the batch's drivers' regions after a step
// failed: it may now be wrong, so the next point of each reads it from Redis again.
func (x *Index) forgetRegions(ups []Update) {
	x.mu.Lock()
	for _, u := range ups {
		delete(x.regions, u.DriverID)
	}
	x.mu.Unlock()
}

// leaveRegions takes the moving drivers out of the regions they leave, in one pipeline, before
// their points enter the new ones. It sets in carried, by driver id, the state each had there,
// which the driver keeps in the new region (a driver with no record left behind carries none).
func (x *Index) leaveRegions(ctx context.Context, moves []regionMove, carried map[string]string) error {
	cmds := make([]*redis.Cmd, len(moves))
	if err := x.execPipe(ctx, func(mp redis.Pipeliner) {
		for i, m := range moves {
			cmds[i] = removeScript.Run(ctx, mp, []string{x.posKey(m.from), x.cellsKey(m.from)}, m.id)
		}
	}); err != nil {
		return fmt.Errorf("move drivers between regions: %w", err)
	}
	for i, m := range moves {
		if s, err := cmds[i].Text(); err == nil {
			if f := strings.Split(s, ","); len(f) == 6 {
				carried[m.id] = f[4]
			}
		}
	}
	return nil
}

// regionCall is one update script call: its answer and the points it carried, in order.
type regionCall struct {
	cmd *redis.Cmd
	idx []int
}

// applyPoints indexes the points, in one pipeline: one update script call per region, its
// points in batch order, and the own records of the drivers entering a region made to name it.
// It sets answers[i] to the script's answer for point i (see lua/update.lua).
func (x *Index) applyPoints(ctx context.Context, out []Written, cells []h3.Cell, carried map[string]string, entered []int, answers []string) error {
	byRegion := map[string][]int{}
	for i, w := range out {
		byRegion[w.Region] = append(byRegion[w.Region], i)
	}
	calls := make([]regionCall, 0, len(byRegion))
	// Every argument is a slice of one buffer: one allocation per write, not two per point.
	arena := make([]byte, 0, len(out)*(96+160))
	if err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
		calls = calls[:0]
		arena = arena[:0]
		for region, idx := range byRegion {
			args := make([]any, 1+2*len(idx))
			args[0] = x.FeedChannel(region)
			for j, i := range idx {
				w := &out[i]
				state := string(w.NewState)
				if s, ok := carried[w.DriverID]; ok {
					state = s
				}
				start := len(arena)
				arena = appendPoint(arena, w, cells[i], state)
				args[1+2*j] = arena[start:len(arena):len(arena)]
				start = len(arena)
				arena = appendViewHead(arena, w)
				args[2+2*j] = arena[start:len(arena):len(arena)]
			}
			calls = append(calls, regionCall{updateScript.EvalSha(ctx, pipe, []string{x.posKey(region), x.cellsKey(region)}, args...), idx})
		}
		for _, i := range entered {
			pipe.HSet(ctx, x.drvKey(out[i].DriverID), "region", out[i].Region)
			pipe.SAdd(ctx, x.regionsKey(), out[i].Region)
		}
	}); err != nil {
		return fmt.Errorf("index %d points: %w", len(out), err)
	}
	for _, c := range calls {
		vals, err := c.cmd.StringSlice()
		if err != nil || len(vals) != len(c.idx) {
			return fmt.Errorf("index %d points: unexpected answer %v", len(out), err)
		}
		for j, i := range c.idx {
			answers[i] = vals[j]
		}
	}
	return nil
}

// appendPoint appends the point's argument to the update script, "lat,lng,heading,ts,cell,
// state,id", where state is the one the driver carried from the region it left, or else the
// state of a new record (see lua/update.lua).
func appendPoint(b []byte, w *Written, cell h3.Cell, state string) []byte {
	b = strconv.AppendFloat(b, w.Point.Lat, 'f', 6, 64)
	b = append(b, ',')
	b = strconv.AppendFloat(b, w.Point.Lng, 'f', 6, 64)
	b = append(b, ',')
	b = strconv.AppendFloat(b, w.Point.Heading, 'f', 0, 64)
	b = append(b, ',')
	b = strconv.AppendInt(b, w.Point.TS, 10)
	b = append(b, ',')
	b = strconv.AppendUint(b, uint64(cell), 16) // h3.Cell.String
	b = append(b, ',')
	b = append(b, state...)
	b = append(b, ',')
	return append(b, w.DriverID...)
}

// readAnswers records each point's outcome from the update script's answer, and returns the
// points whose driver's own record must follow: revived, a driver the sweeper had marked
// offline who speaks again; rebuilt, a record created in the region this process believed the
// driver was in already (not one it entered), which means Redis lost its data.
func readAnswers(out []Written, answers []string, entered []int) (revived, rebuilt []int) {
	isEntered := make(map[int]bool, len(entered))
	for _, i := range entered {
		isEntered[i] = true
	}
	for i, s := range answers {
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
	return revived, rebuilt
}

// revive brings the own records of the revived drivers back from offline to their state in the
// index, in one pipeline (only those still offline: casStateScript).
func (x *Index) revive(ctx context.Context, out []Written, revived []int) error {
	if len(revived) == 0 {
		return nil
	}
	if err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
		for _, i := range revived {
			casStateScript.Run(ctx, pipe, []string{x.drvKey(out[i].DriverID)}, string(dispatch.DriverOffline), string(out[i].State))
		}
	}); err != nil {
		return fmt.Errorf("revive %d drivers: %w", len(revived), err)
	}
	return nil
}

// rebuild writes again, in one pipeline, the own records of the rebuilt drivers, whose record
// was created in the region this process believed they were in already: Redis lost its data
// (restarted without persistence). The record follows as for a driver entering a region, so
// that Position, SetState and Sweep find the driver again (found by the fault suite,
// TestFaultRedisKilled).
func (x *Index) rebuild(ctx context.Context, out []Written, rebuilt []int) error {
	if len(rebuilt) == 0 {
		return nil
	}
	if err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
		for _, i := range rebuilt {
			pipe.HSet(ctx, x.drvKey(out[i].DriverID), "region", out[i].Region)
			pipe.HSetNX(ctx, x.drvKey(out[i].DriverID), "state", string(out[i].State))
			pipe.SAdd(ctx, x.regionsKey(), out[i].Region)
		}
	}); err != nil {
		return fmt.Errorf("rebuild %d drivers' records: %w", len(rebuilt), err)
	}
	return nil
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
