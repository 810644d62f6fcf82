package geo

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// Interval is the longest a point waits before it is written (default 10 ms).
	Interval time.Duration
	// MaxBatch flushes early once this many drivers are pending (default 512).
	MaxBatch int
	// Flushers is how many batches may be in flight at once (default 4) when the writer is
	// busy (MaxBatch pending); below that, one batch a tick carries every shard. Each flusher
	// owns a fixed share of the drivers, so one driver's points are still written in order. On a busy
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
// Lock order: all, then a shard's mu; each shard's mu is a leaf, never held across a call.
type Writer struct {
	x    *Index
	opts WriterOptions
	log  zerolog.Logger
	m    writerMetrics

	shards [writerShards]writerShard
	n      atomic.Int64 // points pending over all shards
	kick   chan struct{}
	all    sync.RWMutex // held to write every shard; read-held to write one flusher's share
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

// writerMetrics are what the writer indexed: the gateway's points from socket read to index.
type writerMetrics struct {
	indexed prometheus.Counter
	stale   prometheus.Counter
	lag     prometheus.Histogram
}

func newWriterMetrics(reg prometheus.Registerer) writerMetrics {
	m := writerMetrics{
		indexed: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_locations_indexed_total", Help: "Location points written to the index."}),
		stale: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_locations_stale_total",
			Help: "Location points the index did not apply: it held a newer point of the driver (sent through another socket)."}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_location_index_seconds", Help: "From socket read to indexed.",
			Buckets: []float64{0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5}}),
	}
	if reg != nil {
		reg.MustRegister(m.indexed, m.stale, m.lag)
	}
	return m
}

// NewWriter returns a writer into x; reg (may be nil) gets its metrics.
func NewWriter(x *Index, opts WriterOptions, reg prometheus.Registerer, log zerolog.Logger) *Writer {
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
	w := &Writer{x: x, opts: opts, log: log, m: newWriterMetrics(reg), kick: make(chan struct{}, opts.Flushers)}
	for i := range w.shards {
		w.shards[i].pending = map[string]Update{}
	}
	return w
}

// Submit queues a driver's point, read from its socket at received; newState is the state
// recorded if the driver has no record in the point's region yet (Update). A later point of the
// same driver replaces an unwritten earlier one (out-of-order points are still refused by the
// index). It never waits on Redis.
func (w *Writer) Submit(driverID string, p dispatch.Point, newState dispatch.DriverState, received time.Time) {
	u := Update{DriverID: driverID, Point: p, NewState: newState, Received: received}
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
		w.kickAll()
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

// runFlusher is flusher f. Flusher 0 keeps the clock: each Interval it writes every shard in
// one batch while fewer than MaxBatch drivers are pending (at a few points a tick, one Redis
// exchange a tick instead of one a flusher: on a gateway of 10,000 sockets sending every 30 s
// the flushes were a third of its CPU), and else has each flusher write its own shards at
// once. A full MaxBatch kicks every flusher. The whole-writer flush excludes the per-flusher
// ones (w.all), so one driver's points are still written by one flush at a time, in order.
func (w *Writer) runFlusher(ctx context.Context, f int) {
	var tick <-chan time.Time
	if f == 0 {
		t := time.NewTicker(w.opts.Interval)
		defer t.Stop()
		tick = t.C
	}
	flush := func(d time.Duration, all bool) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d)
		defer cancel()
		if all {
			w.all.Lock()
			defer w.all.Unlock()
			w.flush(fctx, -1)
			return
		}
		w.all.RLock()
		defer w.all.RUnlock()
		w.flush(fctx, f)
	}
	for {
		select {
		case <-ctx.Done():
			flush(2*time.Second, false)
			return
		case <-tick:
			if w.n.Load() < int64(w.opts.MaxBatch) {
				flush(w.opts.Timeout, true)
				continue
			}
			w.kickAll()
		case <-w.kick:
		}
		flush(w.opts.Timeout, false)
	}
}

func (w *Writer) kickAll() {
	for i := 0; i < w.opts.Flushers; i++ {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// Flush writes everything pending now.
func (w *Writer) Flush(ctx context.Context) {
	w.all.Lock()
	defer w.all.Unlock()
	w.flush(ctx, -1)
}

// flush writes the points pending in flusher f's shards (f < 0: in every shard).
func (w *Writer) flush(ctx context.Context, f int) {
	if w.n.Load() == 0 {
		return
	}
	first, step := f, w.opts.Flushers
	if f < 0 {
		first, step = 0, 1
	}
	var batch []Update
	for i := first; i < writerShards; i += step {
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
		w.log.Warn().Float64("took_ms", float64(took.Microseconds())/1000).Int("points", len(batch)).Err(err).Msg("slow index write")
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
	now, stale := time.Now(), 0
	for i := range ws {
		if !ws[i].Applied {
			stale++
			continue
		}
		w.m.lag.Observe(now.Sub(ws[i].Received).Seconds())
	}
	w.m.indexed.Add(float64(len(ws) - stale))
	w.m.stale.Add(float64(stale))
	if w.opts.OnWritten != nil {
		w.opts.OnWritten(ctx, ws)
	}
}
