package geo

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Interval is the longest a point waits before it is written (default 10 ms).
	Interval time.Duration
	// MaxBatch flushes early once this many drivers are pending (default 512).
	MaxBatch int
	// Flushers is how many batches may be in flight at once (default 4). Each owns a fixed
	// share of the drivers, so one driver's points are still written in order. On a busy
	// gateway thousands of socket goroutines share the CPU with the flushers: each network
	// wait of a flusher costs a trip through the run queue, and several flushers overlap them.
	Flushers int
	// OnWritten, if set, is called with each written batch, from the flusher that wrote it:
	// it may be called from several goroutines at once.
	OnWritten func(ctx context.Context, ws []Written)
	// OnError, if set, is told of each failed batch. Its points are queued again (unless a
	// newer point of the same driver came meanwhile) and retried at the next flush.
	OnError func(err error, n int)
	// Timeout bounds one flush (default 5 s).
	Timeout time.Duration
}

// Writer coalesces the points of many sockets into pipelined batches: latest wins per driver
// within a batch, so a busy gateway makes a few round trips a tick instead of one per point.
// Submit and Flush are safe for concurrent use; Run owns the flushing goroutines.
//
// Lock order: each shard's mu is a leaf, never held across a call.
type Writer struct {
	x    *Index
	opts WriterOptions
	log  zerolog.Logger

	shards [writerShards]writerShard
	n      atomic.Int64 // points pending over all shards
	kick   chan struct{}
}

// writerShards spread the sockets' Submit calls over several locks: one lock taken 30,000
// times a second by thousands of goroutines spends its time handing itself over.
const writerShards = 16

type writerShard struct {
	mu      sync.Mutex // guards pending
	pending map[string]Update
	_       [40]byte // keep shards off each other's cache lines
}

func shardOf(id string) int {
	h := uint32(2166136261) // FNV-1a
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % writerShards)
}

// NewWriter returns a writer into x.
func NewWriter(x *Index, opts WriterOptions, log zerolog.Logger) *Writer {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Millisecond
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 512
	}
	if opts.Flushers <= 0 {
		opts.Flushers = 4
	}
	opts.Flushers = min(opts.Flushers, writerShards)
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Second
	}
	w := &Writer{x: x, opts: opts, log: log, kick: make(chan struct{}, opts.Flushers)}
	for i := range w.shards {
		w.shards[i].pending = map[string]Update{}
	}
	return w
}

// Submit queues a point; a later point of the same driver replaces an unwritten earlier one
// (out-of-order points are still refused by the index).
func (w *Writer) Submit(u Update) {
	sh := &w.shards[shardOf(u.DriverID)]
	sh.mu.Lock()
	old, had := sh.pending[u.DriverID]
	if had && old.Point.TS > u.Point.TS {
		sh.mu.Unlock()
		return
	}
	if had && u.NewState == "" {
		u.NewState = old.NewState
	}
	sh.pending[u.DriverID] = u
	sh.mu.Unlock()
	n := w.n.Load()
	if !had {
		n = w.n.Add(1)
	}
	if n >= int64(w.opts.MaxBatch) {
		for i := 0; i < w.opts.Flushers; i++ {
			select {
			case w.kick <- struct{}{}:
			default:
			}
		}
	}
}

// Run flushes until ctx is done, then flushes what is left once more (with a short deadline).
// A flush in progress when ctx ends is not cut short: its points are the latest of their drivers.
func (w *Writer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for f := 0; f < w.opts.Flushers; f++ {
		wg.Add(1)
		go func(f int) {
			defer wg.Done()
			w.runFlusher(ctx, f)
		}(f)
	}
	wg.Wait()
	return nil
}

func (w *Writer) runFlusher(ctx context.Context, f int) {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	flush := func(d time.Duration) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
		w.flush(fctx, f)
		cancel()
	}
	for {
		select {
		case <-ctx.Done():
			flush(2 * time.Second)
			return
		case <-t.C:
		case <-w.kick:
		}
		flush(w.opts.Timeout)
	}
}

// Flush writes everything pending now.
func (w *Writer) Flush(ctx context.Context) {
	for f := 0; f < w.opts.Flushers; f++ {
		w.flush(ctx, f)
	}
}

// flush writes the points pending in flusher f's shards.
func (w *Writer) flush(ctx context.Context, f int) {
	if w.n.Load() == 0 {
		return
	}
	var batch []Update
	for i := f; i < writerShards; i += w.opts.Flushers {
		sh := &w.shards[i]
		sh.mu.Lock()
		if len(sh.pending) > 0 {
			if batch == nil {
				batch = make([]Update, 0, w.n.Load()+16)
			}
			for _, u := range sh.pending {
				batch = append(batch, u)
			}
			w.n.Add(-int64(len(sh.pending)))
			clear(sh.pending) // keeps its room: the next tick fills it again
		}
		sh.mu.Unlock()
	}
	if len(batch) == 0 {
		return
	}
	start := time.Now()
	ws, err := w.x.Write(ctx, batch)
	if took := time.Since(start); took > 250*time.Millisecond {
		w.log.Warn().Dur("took", took).Int("points", len(batch)).Err(err).Msg("slow index write")
	}
	if err != nil {
		if w.opts.OnError != nil {
			w.opts.OnError(err, len(batch))
		}
		for _, u := range batch {
			sh := &w.shards[shardOf(u.DriverID)]
			sh.mu.Lock()
			p, ok := sh.pending[u.DriverID]
			if !ok || p.Point.TS < u.Point.TS {
				sh.pending[u.DriverID] = u
			}
			sh.mu.Unlock()
			if !ok {
				w.n.Add(1)
			}
		}
		return
	}
	if w.opts.OnWritten != nil {
		w.opts.OnWritten(ctx, ws)
	}
}
