package realtime

import (
	"context"
	"sync"
	"time"
)

// later runs a viewer's work that reads the backends outside the socket's own goroutines: the
// writer must never wait on Redis or MySQL, and the read loop neither (viewer.pull asks for
// the map's surges and for the regions new to its area here; viewer.watch for its bookings to
// be read again). Jobs run one at a time, each at its time or after, on one goroutine started
// when a job is added and ending when none is left, so an idle viewer holds none (as backlog).
//
// The viewer owns it: close cancels the running job's context, drops the jobs not run and
// waits for the goroutine, so no job outlives the socket. Safe for concurrent use.
//
// Lock order: later.mu is a leaf; a job runs without it.
type later struct {
	mu      sync.Mutex
	jobs    []laterJob
	running bool
	closed  bool
	cancel  context.CancelFunc // the running goroutine's context
	wake    chan struct{}      // a job was added while the goroutine waits
	wg      sync.WaitGroup
}

type laterJob struct {
	at time.Time
	fn func(ctx context.Context)
}

// at runs fn at t (at once if t has passed) with a context ended by close; after close it
// does nothing.
func (l *later) at(t time.Time, fn func(ctx context.Context)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.jobs = append(l.jobs, laterJob{at: t, fn: fn})
	if l.running {
		select {
		case l.wake <- struct{}{}:
		default:
		}
		return
	}
	if l.wake == nil {
		l.wake = make(chan struct{}, 1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l.running, l.cancel = true, cancel
	l.wg.Add(1)
	go l.run(ctx)
}

// close ends the jobs: the running one's context is cancelled, the others dropped. It returns
// once the goroutine has ended.
func (l *later) close() {
	l.mu.Lock()
	l.closed = true
	l.jobs = nil
	if l.running {
		l.cancel()
	}
	l.mu.Unlock()
	l.wg.Wait()
}

// run runs the jobs as they fall due until none is left or close.
func (l *later) run(ctx context.Context) {
	defer l.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		l.mu.Lock()
		if len(l.jobs) == 0 || ctx.Err() != nil {
			l.running = false
			l.cancel()
			l.mu.Unlock()
			return
		}
		next := 0
		for i, j := range l.jobs {
			if j.at.Before(l.jobs[next].at) {
				next = i
			}
		}
		j := l.jobs[next]
		wait := time.Until(j.at)
		if wait <= 0 {
			l.jobs = append(l.jobs[:next], l.jobs[next+1:]...)
		}
		l.mu.Unlock()
		if wait <= 0 {
			j.fn(ctx)
			continue
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
		case <-t.C:
		case <-l.wake: // an earlier job, maybe
		}
	}
}
