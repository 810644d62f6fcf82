package realtime

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// tracksWait is how long a driver's point waits for the points of other drivers on a booking
// to share its round trip to Redis (the location writer's Interval).
const tracksWait = 10 * time.Millisecond

// tracks publishes the positions of this gateway's drivers on a booking for the gateways of its
// customers (trk:<booking>, viewer.driverLocation): the newest point per booking, in one
// pipeline every tracksWait, so that a socket hands its point over and never waits on Redis.
// put is safe for concurrent use; run (Hub.Run's) owns the publishing goroutine.
//
// Lock order: tracks.mu is a leaf.
type tracks struct {
	bus  *Bus
	log  zerolog.Logger
	kick chan struct{} // a point is pending

	mu      sync.Mutex
	pending map[string]driverLocation // booking -> its driver's newest point
}

func newTracks(bus *Bus, log zerolog.Logger) *tracks {
	return &tracks{bus: bus, log: log, kick: make(chan struct{}, 1), pending: map[string]driverLocation{}}
}

// put queues the position of a booking's driver; a newer one replaces it until it is published.
func (t *tracks) put(loc driverLocation) {
	t.mu.Lock()
	old, had := t.pending[loc.BookingID]
	if had && old.TS > loc.TS {
		t.mu.Unlock()
		return
	}
	t.pending[loc.BookingID] = loc
	t.mu.Unlock()
	if !had {
		select {
		case t.kick <- struct{}{}:
		default:
		}
	}
}

// run publishes what is put until ctx ends; what is pending then is dropped (a position is
// stale a second later).
func (t *tracks) run(ctx context.Context) {
	wait := time.NewTimer(tracksWait)
	wait.Stop()
	defer wait.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		}
		wait.Reset(tracksWait)
		select {
		case <-ctx.Done():
			return
		case <-wait.C:
		}
		t.flush(ctx)
	}
}

// flush publishes every pending position in one pipeline, bounded as a location write is.
func (t *tracks) flush(ctx context.Context) {
	t.mu.Lock()
	batch := t.pending
	t.pending = make(map[string]driverLocation, len(batch))
	t.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	fctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	pipe := t.bus.rdb.Pipeline()
	for id, loc := range batch {
		b, err := json.Marshal(loc)
		if err != nil {
			continue
		}
		pipe.Publish(fctx, t.bus.ch("trk:"+id), b)
	}
	if _, err := pipe.Exec(fctx); err != nil && ctx.Err() == nil {
		t.log.Warn().Err(err).Int("bookings", len(batch)).Msg("publish positions of drivers on a booking")
	}
}
