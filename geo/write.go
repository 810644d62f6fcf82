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
