package dispatch

import (
	"context"
	"sync"
	"time"
)

// ResumeReader is a BookingStore that reads many drivers' Resume in one query (store.DB does).
// The service then batches the hellos of sockets opening together: after a gateway restarts or
// a network blip, thousands of drivers reconnect within seconds, and one query each queued the
// matcher's own behind them on MySQL.
type ResumeReader interface {
	// ResumeMany is Resume for each of driverIDs; a driver with nothing to resume may have no
	// entry.
	ResumeMany(ctx context.Context, driverIDs []string) (map[string]Resume, error)
}

// maxResumeBatch bounds the drivers one query reads.
const maxResumeBatch = 200

// resumeBatch reads drivers' Resume with at most one query in flight: a driver asking while
// none is runs a query of its own at once, and those asking while one runs share the next.
// Nothing waits on a timer, so a lone reconnect is not slowed.
type resumeBatch struct {
	read func(ctx context.Context, driverIDs []string) (map[string]Resume, error)

	mu      sync.Mutex
	waiting []resumeCall
	running bool
}

type resumeCall struct {
	driverID string
	out      chan resumeAnswer
}

type resumeAnswer struct {
	r   Resume
	err error
}

// get returns driverID's Resume, read alone or with others.
func (b *resumeBatch) get(ctx context.Context, driverID string) (Resume, error) {
	c := resumeCall{driverID: driverID, out: make(chan resumeAnswer, 1)}
	b.mu.Lock()
	b.waiting = append(b.waiting, c)
	if !b.running {
		b.running = true
		go b.run()
	}
	b.mu.Unlock()
	select {
	case a := <-c.out:
		return a.r, a.err
	case <-ctx.Done():
		return Resume{}, ctx.Err()
	}
}

// run reads for the waiting drivers, a batch at a time, until none waits. A batch's query is
// bounded by its own deadline, not by any one caller's context (a caller that gives up does
// not fail the others).
func (b *resumeBatch) run() {
	for {
		b.mu.Lock()
		n := min(len(b.waiting), maxResumeBatch)
		if n == 0 {
			b.running = false
			b.waiting = nil
			b.mu.Unlock()
			return
		}
		batch := make([]resumeCall, n)
		copy(batch, b.waiting)
		b.waiting = b.waiting[n:]
		b.mu.Unlock()
		ids := make([]string, 0, n)
		seen := make(map[string]bool, n)
		for _, c := range batch {
			if !seen[c.driverID] {
				seen[c.driverID] = true
				ids = append(ids, c.driverID)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		rs, err := b.read(ctx, ids)
		cancel()
		for _, c := range batch {
			c.out <- resumeAnswer{r: rs[c.driverID], err: err}
		}
	}
}
