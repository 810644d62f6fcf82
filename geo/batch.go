package geo

import (
	"context"
	"errors"
	"fmt"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
)

// The matcher's window-sized calls (dispatch.MatchLocator): a window's leases, states and
// searches in a few exchanges. Each command still touches one slot (the driver's, or the
// region's), so the pipelines are cluster-safe: go-redis splits them by node.

var _ dispatch.MatchLocator = (*Index)(nil)

// NearbyAvailableMany implements dispatch.MatchLocator, one search after the other.
func (x *Index) NearbyAvailableMany(ctx context.Context, qs []dispatch.Search) ([][]dispatch.Nearby, error) {
	out := make([][]dispatch.Nearby, len(qs))
	for i, q := range qs {
		ns, err := x.NearbyAvailable(ctx, q.Lat, q.Lng, q.RadiusM, q.Limit, q.Keep)
		if err != nil {
			return nil, err
		}
		out[i] = ns
	}
	return out, nil
}

// ReserveMany implements dispatch.MatchLocator: SET NX PX for every lease, in one pipeline.
func (x *Index) ReserveMany(ctx context.Context, ls []dispatch.Lease) ([]bool, error) {
	if len(ls) == 0 {
		return nil, nil
	}
	pipe := x.rdb.Pipeline()
	cmds := make([]*redis.BoolCmd, len(ls))
	for i, l := range ls {
		cmds[i] = pipe.SetNX(ctx, x.leaseKey(l.DriverID), l.Token, l.TTL)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("reserve %d drivers: %w", len(ls), translate(err))
	}
	out := make([]bool, len(ls))
	for i, c := range cmds {
		out[i] = c.Val()
	}
	return out, nil
}

// SetStates implements dispatch.MatchLocator: SetState for many drivers in three exchanges (the
// drivers' records, the index copies, one feed message per region).
func (x *Index) SetStates(ctx context.Context, ids []string, s dispatch.DriverState) error {
	if len(ids) == 0 {
		return nil
	}
	pipe := x.rdb.Pipeline()
	regions := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		pipe.HSet(ctx, x.drvKey(id), "state", string(s))
		regions[i] = pipe.HGet(ctx, x.drvKey(id), "region")
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("set %d drivers %s: %w", len(ids), s, translate(err))
	}
	recs := make([]*redis.Cmd, len(ids))
	err := x.execPipe(ctx, func(pipe redis.Pipeliner) {
		for i, id := range ids {
			recs[i] = nil
			if r := regions[i].Val(); r != "" {
				recs[i] = stateScript.EvalSha(ctx, pipe, []string{x.posKey(r), x.cellsKey(r)}, id, string(s))
			}
		}
	})
	if err != nil {
		return fmt.Errorf("index %d drivers %s: %w", len(ids), s, translate(err))
	}
	byRegion := map[string][]dispatch.DriverView{}
	for i, id := range ids {
		if recs[i] == nil {
			continue
		}
		if rec, err := recs[i].Text(); err == nil {
			if p, ok := parseRecord(id, rec); ok {
				byRegion[regions[i].Val()] = append(byRegion[regions[i].Val()], p.View())
			}
		}
	}
	pipe = x.rdb.Pipeline()
	for r, views := range byRegion {
		if err := x.publish(ctx, pipe, r, views); err != nil {
			return err
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("publish %d drivers %s: %w", len(ids), s, translate(err))
	}
	return nil
}

var _ dispatch.MatchLocator = (*Replica)(nil)

// ReserveMany implements dispatch.MatchLocator.
func (r *Replica) ReserveMany(ctx context.Context, ls []dispatch.Lease) ([]bool, error) {
	return r.x.ReserveMany(ctx, ls)
}

// SetStates implements dispatch.MatchLocator: in Redis, then in memory at once, as SetState.
func (r *Replica) SetStates(ctx context.Context, ids []string, s dispatch.DriverState) error {
	if err := r.x.SetStates(ctx, ids, s); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if e := r.drivers[id]; e != nil {
			p := e.pos
			p.State = s
			r.applyLocked(p)
		}
	}
	return nil
}
