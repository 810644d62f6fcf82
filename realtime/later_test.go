package realtime

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// TestLater: jobs run one at a time in the order of their times, each not before it; close
// cancels the running job's context, drops the jobs not run and returns once the goroutine
// has ended; a job added after close never runs.
func TestLater(t *testing.T) {
	var l later
	var mu sync.Mutex
	var ran []string
	record := func(name string, at time.Time) func(context.Context) {
		return func(context.Context) {
			if late := time.Until(at); late > 0 {
				t.Errorf("%s ran %v before its time", name, late)
			}
			mu.Lock()
			ran = append(ran, name)
			mu.Unlock()
		}
	}
	start := time.Now()
	for _, j := range []struct {
		name  string
		after time.Duration
	}{{"c", 60 * time.Millisecond}, {"a", 0}, {"b", 30 * time.Millisecond}} {
		l.at(start.Add(j.after), record(j.name, start.Add(j.after)))
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		mu.Lock()
		n := len(ran)
		mu.Unlock()
		if n == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs run after 5 s: %v, want a, b, c", ran)
		}
	}
	mu.Lock()
	if want := []string{"a", "b", "c"}; !slices.Equal(ran, want) {
		t.Errorf("order: got %v, want %v", ran, want)
	}
	mu.Unlock()

	running := make(chan struct{})
	cancelled := make(chan struct{})
	l.at(time.Now(), func(ctx context.Context) {
		close(running)
		<-ctx.Done()
		close(cancelled)
	})
	l.at(time.Now().Add(time.Hour), record("dropped", time.Now()))
	<-running
	l.close()
	select {
	case <-cancelled:
	default:
		t.Fatal("close returned before the running job saw its context cancelled")
	}
	l.at(time.Now(), record("after close", time.Now()))
	time.Sleep(50 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(ran) != 3 {
		t.Errorf("jobs run: got %v, want only a, b, c", ran)
	}
}

// A watched booking is read again a moment after its SUBSCRIBE (a change published in between
// would be missed), on the viewer's own goroutine: a change made meanwhile reaches the socket,
// and once the viewer has stopped nothing reads for it any more.
func TestWatchReadAgainUntilStop(t *testing.T) {
	r := newFzRig(t)
	ctx := context.Background()
	c := newConn(nil, 0, 0, func(string) {})
	v := newViewer(r.h, dispatch.Actor{ID: "c1", Role: "customer"}, c)
	if err := v.watch(ctx, "bk_a"); err != nil {
		t.Fatal(err)
	}
	r.store.mu.Lock()
	b := r.store.bookings["bk_a"]
	b.Version++
	b.Status = dispatch.StatusArrived
	r.store.bookings["bk_a"] = b
	r.store.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for seen := false; !seen; {
		if time.Now().After(deadline) {
			t.Fatal("the change made after the watch did not reach the socket")
		}
		time.Sleep(10 * time.Millisecond)
		c.mu.Lock()
		queued := c.queue
		c.queue = nil
		c.mu.Unlock()
		for _, f := range queued {
			var got struct {
				Type string           `json:"type"`
				Data dispatch.Booking `json:"data"`
			}
			_ = json.Unmarshal(f, &got)
			seen = seen || got.Type == "booking" && got.Data.Status == dispatch.StatusArrived
		}
	}

	// Again on a new viewer, stopped at once: its reads again are dropped with it.
	v2 := newViewer(r.h, dispatch.Actor{ID: "c1", Role: "customer"}, newConn(nil, 0, 0, func(string) {}))
	if err := v2.watch(ctx, "bk_s"); err != nil {
		t.Fatal(err)
	}
	v.stop(ctx)
	v2.stop(ctx)
	r.store.mu.Lock()
	reads := r.store.reads
	r.store.mu.Unlock()
	time.Sleep(2 * time.Second) // past the last read again (1.5 s)
	r.store.mu.Lock()
	after := r.store.reads
	r.store.mu.Unlock()
	if after != reads {
		t.Errorf("bookings read after the viewers stopped: got %d, want 0", after-reads)
	}
}

// The socket's writer (pull) never waits on Redis for the map's surges: while a surge read
// hangs, the next cells frame leaves at once, and the surges the read brings colour the frames
// after it. The first cells frame of a watch.area has its surges read on the socket's work.
func TestSurgesOffTheWriter(t *testing.T) {
	r := newFzRig(t)
	ctx := context.Background()
	hang := make(chan struct{})
	hung := make(chan struct{}, 1)
	var mu sync.Mutex
	calls := 0
	r.h.opts.Surges = func(ctx context.Context, cells []string) (map[string]float64, error) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 2 { // the first pull's: hangs, whatever its context says, until released
			hung <- struct{}{}
			<-hang
		}
		out := map[string]float64{}
		for _, c := range cells {
			out[c] = float64(n)
		}
		return out, nil
	}
	released := false
	release := func() {
		if !released {
			released = true
			close(hang)
		}
	}
	c := newConn(nil, 0, 0, func(string) {})
	v := newViewer(r.h, dispatch.Actor{ID: "ops", Role: "dispatcher"}, c)
	defer v.stop(ctx)
	defer release()
	// A few hundred metres around the seed bookings' pickups: cells at the market resolution.
	if err := v.watchArea(ctx, area{12.96, 77.58, 12.98, 77.60}); err != nil {
		t.Fatal(err)
	}
	surges := func(frames [][]byte) []float64 {
		var out []float64
		for _, f := range frames {
			var got struct {
				Type string `json:"type"`
				Data struct {
					Res   int        `json:"res"`
					Cells []cellView `json:"cells"`
				} `json:"data"`
			}
			if json.Unmarshal(f, &got) != nil || got.Type != "cells" {
				continue
			}
			if got.Data.Res != r.h.grid.MarketRes || len(got.Data.Cells) == 0 {
				t.Fatalf("cells frame: got resolution %d with %d cells, want %d with the searching bookings' cell", got.Data.Res, len(got.Data.Cells), r.h.grid.MarketRes)
			}
			for _, cv := range got.Data.Cells {
				out = append(out, cv.Surge)
			}
		}
		return out
	}
	c.mu.Lock()
	first := c.queue
	c.queue = nil
	c.mu.Unlock()
	if got := surges(first); !slices.Equal(got, []float64{1}) {
		t.Fatalf("watch.area's cells frame: surges %v, want [1] (read on the socket's work)", got)
	}
	pull := func() [][]byte {
		v.mu.Lock()
		v.cellsAt = time.Time{} // cells due now
		v.mu.Unlock()
		out := make(chan [][]byte, 1)
		go func() { out <- v.pull() }()
		select {
		case frames := <-out:
			return frames
		case <-time.After(5 * time.Second):
			release()
			t.Fatal("pull (the socket's writer) waited on the surges' read")
			return nil
		}
	}
	if got := surges(pull()); !slices.Equal(got, []float64{1}) {
		t.Errorf("first pull's cells frame: surges %v, want [1] (the last read)", got)
	}
	select {
	case <-hung:
	case <-time.After(5 * time.Second):
		t.Fatal("pull did not have the surges read again")
	}
	if got := surges(pull()); !slices.Equal(got, []float64{1}) {
		t.Errorf("cells frame while the read hangs: surges %v, want [1]", got)
	}
	release()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		got := surges(pull())
		if len(got) == 1 && got[0] >= 2 {
			break // the read that hung, or one asked for since
		}
		if time.Now().After(deadline) {
			t.Fatalf("cells frames after the read: surges %v, want one of 2 or more", got)
		}
	}
}
