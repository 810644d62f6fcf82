package geo

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Interval is the longest a point waits before it is written (default 10 ms).
	Interval time.Duration
	// MaxBatch flushes early once this many drivers are pending (default 512).
	MaxBatch int
	// OnWritten, if set, is called from the writer's goroutine with each written batch.
	OnWritten func(ctx context.Context, ws []Written)
	// OnError, if set, is told of each failed batch. Its points are queued again (unless a
	// newer point of the same driver came meanwhile) and retried at the next flush.
	OnError func(err error, n int)
	// Timeout bounds one flush (default 5 s).
	Timeout time.Duration
}

// Writer coalesces the points of many sockets into pipelined batches: latest wins per driver
// within a batch, so a busy gateway makes a few round trips a tick instead of one per point.
// Submit is safe for concurrent use; Run owns the flushing goroutine.
type Writer struct {
	x    *Index
	opts WriterOptions
	log  zerolog.Logger

	mu      sync.Mutex // guards pending
	pending map[string]Update
	kick    chan struct{}
}

// NewWriter returns a writer into x.
func NewWriter(x *Index, opts WriterOptions, log zerolog.Logger) *Writer {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Millisecond
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	return &Writer{x: x, opts: opts, log: log, pending: map[string]Update{}, kick: make(chan struct{}, 1)}
}

// Submit queues a point; a later point of the same driver replaces an unwritten earlier one
// (out-of-order points are still refused by the index).
func (w *Writer) Submit(u Update) {
	w.mu.Lock()
	if old, ok := w.pending[u.DriverID]; ok && old.Point.TS > u.Point.TS {
		w.mu.Unlock()
		return
	}
	if u.NewState == "" {
		if old, ok := w.pending[u.DriverID]; ok {
			u.NewState = old.NewState
		}
	}
	w.pending[u.DriverID] = u
	n := len(w.pending)
	w.mu.Unlock()
	if n >= w.opts.MaxBatch {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// Run flushes until ctx is done, then flushes what is left once more (with a short deadline).
// A flush in progress when ctx ends is not cut short: its points are the latest of their drivers.
func (w *Writer) Run(ctx context.Context) error {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	flush := func(d time.Duration) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
		w.Flush(fctx)
		cancel()
	}
	for {
		select {
		case <-ctx.Done():
			flush(2 * time.Second)
			return nil
		case <-t.C:
		case <-w.kick:
		}
		flush(w.opts.Timeout)
	}
}

// Flush writes everything pending now.
func (w *Writer) Flush(ctx context.Context) {
	w.mu.Lock()
	if len(w.pending) == 0 {
		w.mu.Unlock()
		return
	}
	batch := make([]Update, 0, len(w.pending))
	for _, u := range w.pending {
		batch = append(batch, u)
	}
	w.pending = make(map[string]Update, len(batch))
	w.mu.Unlock()
	ws, err := w.x.Write(ctx, batch)
	if err != nil {
		if w.opts.OnError != nil {
			w.opts.OnError(err, len(batch))
		}
		w.mu.Lock()
		for _, u := range batch {
			if p, ok := w.pending[u.DriverID]; !ok || p.Point.TS < u.Point.TS {
				w.pending[u.DriverID] = u
			}
		}
		w.mu.Unlock()
		return
	}
	if w.opts.OnWritten != nil {
		w.opts.OnWritten(ctx, ws)
	}
}
