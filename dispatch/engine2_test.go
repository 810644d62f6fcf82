package dispatch_test

import (
	"context"

	"errors"
	"fmt"
	"github.com/rs/zerolog"
	"math/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

var nopLog = zerolog.Nop()

func TestScheduledCalendar(t *testing.T) {
	r := newRig(t)
	m := r.matcher(nil)
	r.driver("d1", north(200), baseLng)
	r.driver("d2", north(1500), baseLng)
	start := r.clock.Now().Add(2 * time.Hour)
	sched := r.book("c1", baseLat, baseLng, dispatch.Manual, &start)
	if sched.Status != dispatch.StatusScheduled {
		t.Fatalf("a booking 2 h ahead: got %s, want scheduled", sched.Status)
	}
	r.step(m, 0)
	r.step(m, 2*time.Second)
	if got := r.notes.offers("d1"); len(got) != 0 {
		t.Fatalf("a scheduled booking was offered before its lead time: %v", got)
	}
	// 45 minutes before the start it searches, and d1 accepts it: d1's calendar holds 2 hours.
	r.step(m, 75*time.Minute+time.Second)
	if st := r.status(sched.ID); st != dispatch.StatusSearching {
		t.Fatalf("at the lead time: got %s, want searching", st)
	}
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("d1"); len(got) != 1 {
		t.Fatalf("after the lead time: d1 got %v, want the scheduled booking", got)
	}
	if _, err := r.svc.Accept(context.Background(), driverActor("d1"), r.notes.lastOffer("d1")); err != nil {
		t.Fatalf("accept: %v", err)
	}
	// A booking for now, overlapping d1's accepted one, goes to d2 even though d1 is nearer.
	now := r.book("c2", north(100), baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("d1"); len(got) != 1 {
		t.Fatalf("d1 was offered a booking overlapping its calendar: %v", got)
	}
	if got := r.notes.offers("d2"); len(got) != 1 || got[0] != now.ID {
		t.Fatalf("d2 got %v, want %s", got, now.ID)
	}
}

func TestManualAssignment(t *testing.T) {
	r := newRig(t)
	m := r.matcher(nil)
	ctx := context.Background()
	staff := dispatch.Actor{ID: "ops", Role: "dispatcher"}
	r.driver("d1", north(200), baseLng)
	r.driver("d2", north(5000), baseLng)
	b1 := r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	b2 := r.book("c2", north(50), baseLng, dispatch.Manual, nil)

	if _, err := r.svc.Assign(ctx, dispatch.Actor{ID: "c1", Role: "customer"}, b1.ID, "d1"); !errors.Is(err, dispatch.ErrForbidden) {
		t.Fatalf("a customer assigning: got %v, want ErrForbidden", err)
	}
	got, err := r.svc.Assign(ctx, staff, b1.ID, "d2")
	if err != nil || got.Status != dispatch.StatusAssigned || got.DriverID() != "d2" {
		t.Fatalf("assign d2: got %v %v, want assigned to d2", got.Status, err)
	}
	if _, err := r.svc.Assign(ctx, staff, b2.ID, "d2"); !errors.Is(err, dispatch.ErrConflict) {
		t.Fatalf("assigning a driver who holds a booking: got %v, want ErrConflict", err)
	}
	if _, err := r.svc.Assign(ctx, staff, b1.ID, "d1"); !errors.Is(err, dispatch.ErrConflict) {
		t.Fatalf("assigning a booking that has a driver: got %v, want ErrConflict", err)
	}
	// d1 is offered b2 by the matcher; while the offer stands, a dispatcher cannot take d1.
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if len(r.notes.offers("d1")) != 1 {
		t.Fatalf("d1 offers: got %v, want b2", r.notes.offers("d1"))
	}
	b3 := r.book("c3", north(80), baseLng, dispatch.Manual, nil)
	if _, err := r.svc.Assign(ctx, staff, b3.ID, "d1"); !errors.Is(err, dispatch.ErrConflict) {
		t.Fatalf("assigning a driver with an open offer: got %v, want ErrConflict", err)
	}
	if st := r.status(b3.ID); st != dispatch.StatusSearching {
		t.Fatalf("refused assignment changed the booking to %s", st)
	}
}

func TestLostRegionLease(t *testing.T) {
	r := newRig(t)
	ttl := 600 * time.Millisecond
	a := r.matcher(func(o *dispatch.MatcherOptions) { o.LeaseTTL = ttl; o.Owner = "A" })
	bm := r.matcher(func(o *dispatch.MatcherOptions) { o.LeaseTTL = ttl; o.Owner = "B" })
	r.driver("d1", north(200), baseLng)
	r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	r.step(a, 0)
	r.step(bm, 0)
	if len(a.Owned()) != 1 || len(bm.Owned()) != 0 {
		t.Fatalf("owners: A %v, B %v; want the region with A only", a.Owned(), bm.Owned())
	}
	// A dies (stops ticking, never releases). Within the TTL B takes over with a higher fence.
	deadline := time.Now().Add(3 * time.Second)
	for len(bm.Owned()) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		r.step(bm, 0)
	}
	if len(bm.Owned()) != 1 {
		t.Fatalf("B did not take the region within 3 s of A's death")
	}
	r.step(bm, 1100*time.Millisecond)
	if got := r.notes.offers("d1"); len(got) != 1 {
		t.Fatalf("after the takeover d1 got %v, want one offer from B", got)
	}
	// A wakes up believing it still owns the region: the store refuses its stale fence.
	region := a.Owned()[0]
	other := r.book("c2", north(30), baseLng, dispatch.Manual, nil)
	err := r.db.CreateOffer(context.Background(), dispatch.Offer{ID: "stale", BookingID: other.ID, DriverID: "d2",
		Status: dispatch.OfferOpen, CreatedAt: r.clock.Now(), ExpiresAt: r.clock.Now().Add(time.Minute), Region: region, Fence: 1})
	if !errors.Is(err, dispatch.ErrConflict) {
		t.Fatalf("an offer under a stale fence: got %v, want ErrConflict", err)
	}
}

// TestTwoEnginesRace: two engines on the same Redis and MySQL, region leases flipping between
// them, hundreds of goroutines booking, accepting, declining, cancelling and assigning by hand.
// No driver ever holds two active bookings, no booking two drivers.
func TestTwoEnginesRace(t *testing.T) {
	r := newRig(t)
	r.notes.ch = make(chan note, 4096)
	const drivers, bookings = 60, 150
	for i := 0; i < drivers; i++ {
		r.driver(fmt.Sprintf("rd%d", i), north(float64(i%10)*150), baseLng+float64(i/10)*0.002)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	// Real time here: leases expire for real, so ownership moves between the engines.
	r.clock = nil
	mk := func(owner string) *dispatch.Matcher {
		return dispatch.NewMatcher(r.db, r.index, r.regions, r.notes, dispatch.MatcherOptions{Window: 50 * time.Millisecond,
			Tick: 20 * time.Millisecond, OfferTimeout: 700 * time.Millisecond, LeaseTTL: 150 * time.Millisecond, Owner: owner,
			Radii: []float64{3000, 6000}, Fresh: time.Hour}, nil, nopLog)
	}
	svc := dispatch.NewService(r.db, r.index, r.notes, dispatch.ServiceOptions{})
	var wg sync.WaitGroup
	for _, owner := range []string{"E1", "E2"} {
		m := mk(owner)
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Run(ctx) }()
	}
	var accepted, conflicts atomic.Int64
	// Drivers answer every offer from several goroutines at once: accept twice, or decline.
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(int64(w)))
			for {
				select {
				case <-ctx.Done():
					return
				case n := <-r.notes.ch:
					if n.typ != "offer" {
						continue
					}
					id := n.data["offer_id"].(string)
					a := driverActor(n.driver)
					if rnd.Intn(5) == 0 {
						_ = svc.Decline(ctx, a, id, "no")
						continue
					}
					var inner sync.WaitGroup
					for k := 0; k < 3; k++ {
						inner.Add(1)
						go func() {
							defer inner.Done()
							if _, err := svc.Accept(ctx, a, id); err == nil {
								accepted.Add(1)
							} else if errors.Is(err, dispatch.ErrConflict) {
								conflicts.Add(1)
							}
						}()
					}
					inner.Wait()
				}
			}
		}(w)
	}
	// Customers book; some cancel; dispatchers assign by hand; drivers cancel after accepting.
	ids := make(chan string, bookings)
	for c := 0; c < bookings; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			b, _, err := svc.CreateBooking(ctx, dispatch.Actor{ID: fmt.Sprintf("rc%d", c), Role: "customer"},
				dispatch.BookingRequest{Pickup: dispatch.Place{Lat: north(float64(c%12) * 120), Lng: baseLng + float64(c%7)*0.002},
					Hours: 1 + c%3, Car: dispatch.Car{Transmission: dispatch.Manual}}, fmt.Sprint("k", c), "h")
			if err == nil {
				ids <- b.ID
			}
		}(c)
	}
	staff := dispatch.Actor{ID: "ops", Role: "dispatcher"}
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rnd := rand.New(rand.NewSource(100 + int64(w)))
			for {
				select {
				case <-ctx.Done():
					return
				case id := <-ids:
					time.Sleep(time.Duration(rnd.Intn(400)) * time.Millisecond)
					switch rnd.Intn(4) {
					case 0:
						_, _ = svc.Cancel(ctx, dispatch.Actor{ID: "", Role: "dispatcher"}, id, "test")
					case 1:
						_, _ = svc.Assign(ctx, staff, id, fmt.Sprintf("rd%d", rnd.Intn(drivers)))
					case 2:
						if b, err := r.db.Booking(ctx, id); err == nil && b.Driver != nil {
							_, _ = svc.Cancel(ctx, driverActor(b.Driver.ID), id, "flat tyre")
						}
					}
					if n, err := r.db.InvariantViolations(context.Background()); err == nil && n != 0 {
						t.Errorf("invariant violated mid-run: %d", n)
					}
				}
			}
		}(w)
	}
	<-ctx.Done()
	wg.Wait()
	if accepted.Load() == 0 {
		t.Fatalf("no offer was ever accepted: the race did not happen")
	}
	t.Logf("accepted %d, refused as conflicts %d", accepted.Load(), conflicts.Load())
	if n, err := r.db.InvariantViolations(context.Background()); err != nil || n != 0 {
		t.Fatalf("invariant violations: got %d (%v), want 0", n, err)
	}
}

// TestDriverCancelRequeues: a driver who accepts and then cancels puts the booking back to
// searching; it is never offered to that driver again, and it goes first in line: it wins the
// one free driver over a booking that is older.
func TestDriverCancelRequeues(t *testing.T) {
	r := newRig(t)
	m := r.matcher(func(o *dispatch.MatcherOptions) { o.Radii = []float64{5000} })
	ctx := context.Background()
	r.driver("quitter", north(100), baseLng)
	given := r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if _, err := r.svc.Accept(ctx, driverActor("quitter"), r.notes.lastOffer("quitter")); err != nil {
		t.Fatalf("accept: %v", err)
	}
	older := r.book("c0", north(600), baseLng, dispatch.Manual, nil)
	r.clock.Add(time.Second)
	if b, err := r.svc.Cancel(ctx, driverActor("quitter"), given.ID, "car trouble"); err != nil || b.Status != dispatch.StatusSearching {
		t.Fatalf("driver cancel: got %v %v, want searching", b.Status, err)
	}
	if _, c, err := r.db.Exclusions(ctx, []string{given.ID}); err != nil || len(c[given.ID]) != 1 {
		t.Fatalf("exclusions after a driver's cancel: got %v (%v), want the quitter", c, err)
	}
	// The quitter goes home; one new free driver, nearer the older booking than the given-back one.
	if err := r.index.SetState(ctx, "quitter", dispatch.DriverOffline); err != nil {
		t.Fatal(err)
	}
	r.driver("fresh", north(500), baseLng)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	again := 0
	for _, id := range r.notes.offers("quitter") {
		if id == given.ID {
			again++
		}
	}
	if again != 1 {
		t.Fatalf("the driver who cancelled was offered the booking %d times, want once", again)
	}
	if got := r.notes.offers("fresh"); len(got) != 1 || got[0] != given.ID {
		t.Fatalf("fresh got %v, want the given-back booking %s first in line (not %s)", got, given.ID, older.ID)
	}
}

// TestCalendarAheadAndOverlap: a booking assigned ahead holds its block but not the driver, who
// still takes a trip that ends (with the city's travel buffer) before it; a driver whose block
// starts before a trip for now would end is not offered that trip.
func TestCalendarAheadAndOverlap(t *testing.T) {
	r := newRig(t)
	m := r.matcher(nil)
	ctx := context.Background()
	staff := dispatch.Actor{ID: "ops", Role: "dispatcher"}
	r.driver("d1", north(200), baseLng)
	r.driver("d3", north(5000)+0.0005, baseLng)
	r.driver("d2", north(5000)+0.0020, baseLng)

	// d1: a booking in 5 hours. d3: one in 2 hours.
	in5h, in2h := r.clock.Now().Add(5*time.Hour), r.clock.Now().Add(2*time.Hour)
	later := r.book("c1", north(150), baseLng, dispatch.Manual, &in5h)
	soon := r.book("c3", north(5000), baseLng, dispatch.Manual, &in2h)
	for _, a := range []struct{ b, d string }{{later.ID, "d1"}, {soon.ID, "d3"}} {
		if _, err := r.svc.Assign(ctx, staff, a.b, a.d); err != nil {
			t.Fatalf("assign %s to %s: %v", a.b, a.d, err)
		}
	}
	if st, err := r.index.State(ctx, "d1"); err != nil || st != dispatch.DriverAvailable {
		t.Fatalf("d1 with a booking 5 h ahead: got %s (%v), want available", st, err)
	}

	// A 2-hour trip for now ends, with Bengaluru's 45 minutes, 2 h 45 min from now: before
	// d1's block, after the start of d3's.
	b1 := r.book("c4", baseLat, baseLng, dispatch.Manual, nil)
	b2 := r.book("c5", north(5000), baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("d1"); len(got) != 1 || got[0] != b1.ID {
		t.Fatalf("d1 got %v, want %s (it ends before d1's booking later today)", got, b1.ID)
	}
	if got := r.notes.offers("d3"); len(got) != 0 {
		t.Fatalf("d3 was offered %v, overlapping its booking in 2 hours", got)
	}
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("d2"); len(got) != 1 || got[0] != b2.ID {
		t.Fatalf("d2 got %v, want %s", got, b2.ID)
	}
	if _, err := r.svc.Accept(ctx, driverActor("d1"), r.notes.lastOffer("d1")); err != nil {
		t.Fatalf("d1 accepts the trip before its booking: %v", err)
	}
	if st, _ := r.index.State(ctx, "d1"); st != dispatch.DriverAssigned {
		t.Fatalf("d1 after accepting a trip for now: got %s, want assigned", st)
	}
	blocks, err := r.svc.Calendar(ctx, staff, "d1", time.Time{}, time.Time{})
	if err != nil || len(blocks) != 2 || blocks[0].BookingID != b1.ID || blocks[1].BookingID != later.ID {
		t.Fatalf("d1's calendar: got %v (%v), want %s then %s", blocks, err, b1.ID, later.ID)
	}
}
