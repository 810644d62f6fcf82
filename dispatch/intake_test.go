package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// Bookings reach the matcher as events, and a tick does not list the store: a booking whose
// event is lost waits for the sweep, which then catches it. An offer closed elsewhere (a
// decline on another process) is matched again at once.
func TestEventIntake(t *testing.T) {
	r := newRig(t)
	m := r.matcher(func(o *dispatch.MatcherOptions) { o.Sweep = time.Minute })
	r.driver("d1", north(300), baseLng, dispatch.Manual)
	r.driver("d2", north(600), baseLng, dispatch.Manual)
	r.driver("d3", north(400), baseLng, dispatch.Automatic)
	seen := r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	m.Observe(seen) // its event, as the relay delivers it
	r.step(m, 0)    // takes the region, which calls for a sweep
	r.step(m, 0)    // the sweep of a region just taken

	lost := r.book("c2", baseLat, baseLng, dispatch.Automatic, nil) // its event is lost
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("d1"); len(got) != 1 || got[0] != seen.ID {
		t.Fatalf("booking with an event: d1 got %v, want [%s]", got, seen.ID)
	}
	if got := r.notes.offers("d3"); len(got) != 0 {
		t.Fatalf("booking whose event was lost: d3 got %v before the sweep, want none", got)
	}

	// d1 declines on another process: the event brings it back into this very tick.
	declined := r.notes.lastOffer("d1")
	if err := r.svc.Decline(context.Background(), driverActor("d1"), declined, "busy"); err != nil {
		t.Fatal(err)
	}
	m.ObserveOfferClosed(dispatch.Offer{ID: declined, BookingID: seen.ID, DriverID: "d1", Status: dispatch.OfferDeclined})
	r.step(m, 100*time.Millisecond)
	if got := r.notes.offers("d2"); len(got) != 1 || got[0] != seen.ID {
		t.Fatalf("after d1 declined: d2 got %v, want [%s] at once", got, seen.ID)
	}
	if got := r.notes.offers("d3"); len(got) != 0 {
		t.Fatalf("d3 got %v before the sweep, want none", got)
	}

	// The sweep, a minute on, finds the booking whose event was lost.
	r.step(m, time.Minute)
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("d3"); len(got) != 1 || got[0] != lost.ID {
		t.Fatalf("after the sweep: d3 got %v, want [%s]", got, lost.ID)
	}
}
