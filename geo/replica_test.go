package geo_test

import (
	"context"
	"fmt"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/rs/zerolog"
)

func testLog(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The replica loads what is there, then follows the feeds: points, state changes, sweeps.
func TestReplicaFollowsFeed(t *testing.T) {
	x, rdb, prefix := newIndex(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	now := time.Now()
	lat, lng := 12.9716, 77.5946
	write(t, x, geo.Update{DriverID: "before", Point: pt(lat, lng, now.UnixMilli()), NewState: dispatch.DriverAvailable})

	rep := geo.NewReplica(x, geo.ReplicaOptions{}, testLog(t))
	done := make(chan error, 1)
	go func() { done <- rep.Run(ctx) }()
	waitFor(t, "the first load", 5*time.Second, rep.Loaded)
	near := func() []string {
		ns, err := rep.Nearby(ctx, lat, lng, 1000, 10, func(p dispatch.Position) bool { return p.State == dispatch.DriverAvailable })
		if err != nil {
			t.Fatal(err)
		}
		return ids(ns)
	}
	if got := near(); len(got) != 1 || got[0] != "before" {
		t.Fatalf("after the load: got %v, want [before]", got)
	}

	// The gateways' writer: its index publishes what it writes on the region feeds.
	fx := geo.NewIndex(rdb, geo.Options{Prefix: prefix})
	w := geo.NewWriter(fx, geo.WriterOptions{Interval: time.Millisecond}, nil, testLog(t))
	wctx, stopWriter := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() { _ = w.Run(wctx); close(wdone) }()
	defer func() { stopWriter(); <-wdone }()
	w.Submit("after", pt(lat+0.001, lng, now.UnixMilli()), dispatch.DriverAvailable, time.Now())
	waitFor(t, "the fed point", 5*time.Second, func() bool { return len(near()) == 2 })

	// A far region, through the feed.
	flat, flng := farRegion(lat, lng)
	w.Submit("after", pt(flat, flng, now.UnixMilli()+1), "", time.Now())
	waitFor(t, "the region move", 5*time.Second, func() bool { return len(near()) == 1 })
	ns, _ := rep.Nearby(ctx, flat, flng, 1000, 10, nil)
	if got := ids(ns); len(got) != 1 || got[0] != "after" {
		t.Fatalf("in the new region: got %v, want [after]", got)
	}

	// A state set through another process reaches the replica through the feed.
	if err := x.SetState(ctx, "before", dispatch.DriverOnTrip); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the state change", 5*time.Second, func() bool { return len(near()) == 0 })
	// Through the replica itself, at once.
	if err := rep.SetState(ctx, "before", dispatch.DriverAvailable); err != nil {
		t.Fatal(err)
	}
	if got := near(); len(got) != 1 {
		t.Fatalf("after the replica's own SetState: got %v, want [before]", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
}

// Many drivers update while nearby queries run on the index and the replica (run with -race).
// Afterwards every driver's stored position is the last point it sent, and the replica agrees
// with a brute-force search over those points.
func TestConcurrentUpdatesAndNearby(t *testing.T) {
	x, _, _ := newIndex(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rep := geo.NewReplica(x, geo.ReplicaOptions{}, testLog(t))
	rdone := make(chan error, 1)
	go func() { rdone <- rep.Run(ctx) }()
	waitFor(t, "the first load", 5*time.Second, rep.Loaded)

	var written atomic.Int64
	w := geo.NewWriter(x, geo.WriterOptions{Interval: 2 * time.Millisecond, OnWritten: func(ctx context.Context, ws []geo.Written) {
		written.Add(int64(len(ws)))
	}, OnError: func(err error, n int) { t.Errorf("write of %d points failed: %v", n, err) }}, nil, testLog(t))
	wctx, stopWriter := context.WithCancel(context.Background())
	wdone := make(chan struct{})
	go func() { _ = w.Run(wctx); close(wdone) }()

	const drivers, senders, rounds = 400, 8, 25
	last := make([]dispatch.Point, drivers)
	var wg sync.WaitGroup
	base := time.Now().UnixMilli() - rounds*10
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			r := rand.New(rand.NewSource(int64(s)))
			for round := 0; round < rounds; round++ {
				for i := s; i < drivers; i += senders {
					p := pt(six(12.97+(r.Float64()-0.5)*0.3), six(77.59+(r.Float64()-0.5)*0.3), base+int64(round)*10)
					last[i] = p
					w.Submit(fmt.Sprintf("c%04d", i), p, dispatch.DriverAvailable, time.Now())
				}
				time.Sleep(time.Millisecond)
			}
		}(s)
	}
	var queries atomic.Int64
	stopQ := make(chan struct{})
	var qwg sync.WaitGroup
	for q := 0; q < 4; q++ {
		qwg.Add(1)
		go func(q int) {
			defer qwg.Done()
			r := rand.New(rand.NewSource(int64(100 + q)))
			for {
				select {
				case <-stopQ:
					return
				default:
				}
				lat, lng := 12.97+(r.Float64()-0.5)*0.3, 77.59+(r.Float64()-0.5)*0.3
				var loc dispatch.Locator = rep
				if q%2 == 1 {
					loc = x
				}
				ns, err := loc.Nearby(ctx, lat, lng, 3000, 10, nil)
				if err != nil {
					t.Errorf("nearby: %v", err)
					return
				}
				for i := 1; i < len(ns); i++ {
					if ns[i].DistanceM < ns[i-1].DistanceM {
						t.Errorf("nearby out of order: %v", ns)
						return
					}
				}
				queries.Add(1)
			}
		}(q)
	}
	wg.Wait()
	stopWriter()
	<-wdone // Run flushes what is left
	close(stopQ)
	qwg.Wait()
	if queries.Load() == 0 {
		t.Fatal("no query ran while the drivers moved")
	}

	var all []dispatch.Position
	for i, p := range last {
		id := fmt.Sprintf("c%04d", i)
		got, err := x.Position(ctx, id)
		if err != nil {
			t.Fatalf("position of %s: %v", id, err)
		}
		if got.Lat != p.Lat || got.Lng != p.Lng || got.At.UnixMilli() != p.TS {
			t.Fatalf("lost latest position of %s: got %v,%v at %d, want %v,%v at %d", id, got.Lat, got.Lng, got.At.UnixMilli(), p.Lat, p.Lng, p.TS)
		}
		all = append(all, got)
	}
	// The replica converges on the same points.
	r := rand.New(rand.NewSource(9))
	waitFor(t, "the replica to converge", 10*time.Second, func() bool {
		for q := 0; q < 50; q++ {
			lat, lng := 12.97+(r.Float64()-0.5)*0.3, 77.59+(r.Float64()-0.5)*0.3
			got, _ := rep.Nearby(ctx, lat, lng, 3000, 10, nil)
			want := bruteNearby(all, lat, lng, 3000, 10, nil)
			if len(got) != len(want) {
				return false
			}
			for i := range got {
				if got[i].DriverID != want[i].DriverID || got[i].DistanceM != want[i].DistanceM {
					return false
				}
			}
		}
		return true
	})
	t.Logf("%d points written, %d queries meanwhile", written.Load(), queries.Load())
	cancel()
	<-rdone
}
