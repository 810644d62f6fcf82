package geo

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// The sweeper: drivers who stopped sending points are marked offline.

// sweepScript marks a region's silent available drivers offline: lua/sweep.lua.
var sweepScript = luaScript("sweep")

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
