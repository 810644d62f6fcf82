package geo_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
)

// What a Redis that restarted without persistence (every key gone) must not break; the keys of
// a test prefix are deleted to stand for the restart. Found by the fault suite's
// TestFaultRedisKilled (cmd/dispatchd).

// TestIndexRebuildsAfterRedisDataLoss: a driver's next point after the loss makes it findable
// again (its position, its state and its region), although this process remembers its region.
func TestIndexRebuildsAfterRedisDataLoss(t *testing.T) {
	x, rdb, prefix := newIndex(t)
	ctx := context.Background()
	now := time.Now().UnixMilli()
	write(t, x, geo.Update{DriverID: "d1", Point: pt(12.9716, 77.5946, now), NewState: dispatch.DriverAvailable})
	if _, err := x.Position(ctx, "d1"); err != nil {
		t.Fatalf("Position before the loss: %v", err)
	}
	deleteKeys(rdb, prefix)
	if _, err := x.Position(ctx, "d1"); !errors.Is(err, dispatch.ErrNotFound) {
		t.Fatalf("Position right after the loss: got %v, want ErrNotFound", err)
	}
	ws := write(t, x, geo.Update{DriverID: "d1", Point: pt(12.9717, 77.5946, now+1000), NewState: dispatch.DriverAvailable})
	if len(ws) != 1 || !ws[0].Applied {
		t.Fatalf("the next point: got %+v, want it applied", ws)
	}
	p, err := x.Position(ctx, "d1")
	if err != nil || p.At.UnixMilli() != now+1000 {
		t.Fatalf("Position after the next point: got %+v, %v; want the new point", p, err)
	}
	if st, err := x.State(ctx, "d1"); err != nil || st != dispatch.DriverAvailable {
		t.Fatalf("State after the next point: got %s, %v; want available", st, err)
	}
	if rs, err := x.Regions(ctx); err != nil || len(rs) != 1 {
		t.Fatalf("Regions after the next point: got %v, %v; want the driver's region", rs, err)
	}
	near, err := x.Nearby(ctx, 12.9716, 77.5946, 1000, 5, nil)
	if err != nil || len(near) != 1 {
		t.Fatalf("Nearby after the next point: got %v, %v; want d1", near, err)
	}
}

// TestFenceSurvivesRedisDataLoss: a Redis that lost its keys (restarted without persistence)
// must not hand out a fence lower than one handed out before, or the store, which remembers
// the highest fence per region, refuses every offer of the region as stale.
func TestFenceSurvivesRedisDataLoss(t *testing.T) {
	rdb := testRedis(t)
	defer rdb.Close()
	prefix := uniquePrefix(t)
	defer deleteKeys(rdb, prefix)
	r := geo.NewRegions(rdb, geo.Options{Prefix: prefix})
	ctx := context.Background()
	acquire := func(owner string) int64 {
		t.Helper()
		f, ok, err := r.Acquire(ctx, "85618927fffffff", owner, time.Minute)
		if err != nil || !ok {
			t.Fatalf("Acquire(%s): got %v, %v; want the lease", owner, ok, err)
		}
		return f
	}
	a := acquire("A")
	if again := acquire("A"); again != a {
		t.Fatalf("renewal changed the fence: got %d, want %d", again, a)
	}
	if err := r.Release(ctx, "85618927fffffff", "A"); err != nil {
		t.Fatal(err)
	}
	b := acquire("B")
	if b <= a {
		t.Fatalf("a new owner's fence: got %d, want above %d", b, a)
	}
	deleteKeys(rdb, prefix) // the data loss
	if c := acquire("C"); c <= b {
		t.Fatalf("fence after Redis lost its keys: got %d, want above %d", c, b)
	}
}
