//go:build !prod

package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// A window's offers of one region go in one transaction: those whose booking left searching
// are refused one by one, a stale fence refuses them all.
func TestCreateOffers(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		region := id("rg")
		b1, b2, b3 := create(t, e, false), create(t, e, false), create(t, e, false)
		if _, err := e.db.Transition(ctx, dispatch.Change{BookingID: b3.ID, From: []dispatch.Status{dispatch.StatusSearching},
			To: dispatch.StatusCancelled, Actor: "test", Reason: "gone", At: t0}); err != nil {
			t.Fatal(err)
		}
		mk := func(b dispatch.Booking) dispatch.Offer {
			return dispatch.Offer{ID: id("of"), BookingID: b.ID, DriverID: id("dr"), DistanceM: 300, CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}
		}
		offers := []dispatch.Offer{mk(b1), mk(b2), mk(b3)}
		refused, err := e.db.CreateOffers(ctx, region, 10, offers)
		if err != nil {
			t.Fatal(err)
		}
		if len(refused) != 1 || !refused[b3.ID] {
			t.Fatalf("refused: got %v, want only the cancelled booking %s", refused, b3.ID)
		}
		for _, o := range offers[:2] {
			got, err := e.db.Offer(ctx, o.ID)
			if err != nil || got.Status != dispatch.OfferOpen || got.Region != region || got.Fence != 10 || got.DriverID != o.DriverID {
				t.Fatalf("offer %s: got %+v, %v; want open in %s under fence 10", o.ID, got, err, region)
			}
		}
		if _, err := e.db.Offer(ctx, offers[2].ID); !errors.Is(err, dispatch.ErrNotFound) {
			t.Fatalf("offer of the cancelled booking: got %v, want ErrNotFound", err)
		}
		// A higher fence was used since: everything under the old one is refused.
		if _, err := e.db.CreateOffers(ctx, region, 11, []dispatch.Offer{mk(create(t, e, false))}); err != nil {
			t.Fatal(err)
		}
		late := mk(create(t, e, false))
		if _, err := e.db.CreateOffers(ctx, region, 10, []dispatch.Offer{late}); !errors.Is(err, dispatch.ErrConflict) {
			t.Fatalf("offers under a stale fence: got %v, want ErrConflict", err)
		}
		if _, err := e.db.Offer(ctx, late.ID); !errors.Is(err, dispatch.ErrNotFound) {
			t.Fatalf("an offer under a stale fence was recorded: %v", err)
		}
	})
}

// The matcher reads profiles by change: everything first, then what changed since.
func TestDriversChangedSince(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		d1, d2 := id("dr"), id("dr")
		for _, d := range []string{d1, d2} {
			if err := e.db.UpsertDriver(ctx, dispatch.DriverProfile{ID: d, Name: d, Rating: 4.5, Transmissions: []dispatch.Transmission{dispatch.Manual}}); err != nil {
				t.Fatal(err)
			}
		}
		all, last, err := e.db.DriversChangedSince(ctx, time.Time{}, 100000)
		if err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, p := range all {
			if p.ID == d1 || p.ID == d2 {
				found++
				if len(p.Transmissions) != 1 || p.Transmissions[0] != dispatch.Manual {
					t.Fatalf("profile %s: got %+v, want manual only", p.ID, p)
				}
			}
		}
		if found != 2 || last.IsZero() {
			t.Fatalf("every profile: found %d of 2, last %v", found, last)
		}
		time.Sleep(10 * time.Millisecond)
		if err := e.db.UpsertDriver(ctx, dispatch.DriverProfile{ID: d2, Name: d2, Rating: 4.5,
			Transmissions: []dispatch.Transmission{dispatch.Manual, dispatch.Automatic}}); err != nil {
			t.Fatal(err)
		}
		changed, _, err := e.db.DriversChangedSince(ctx, last.Add(time.Millisecond), 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(changed) != 1 || changed[0].ID != d2 || len(changed[0].Transmissions) != 2 {
			t.Fatalf("changed since: got %+v, want only %s with both transmissions", changed, d2)
		}
	})
}

// A reconnecting driver's state comes back in one query: the current booking and the open
// offers with their bookings.
func TestResume(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		drv := id("dr")
		r, err := e.db.Resume(ctx, drv)
		if err != nil || r.Active != nil || len(r.Offers) != 0 {
			t.Fatalf("an unknown driver: got %+v, %v; want nothing", r, err)
		}
		if err := e.db.UpsertDriver(ctx, dispatch.DriverProfile{ID: drv, Name: "Ravi"}); err != nil {
			t.Fatal(err)
		}
		b := create(t, e, false)
		o := offer(t, e, b, drv, time.Minute)
		r, err = e.db.Resume(ctx, drv)
		if err != nil || r.Active != nil || len(r.Offers) != 1 || r.Offers[0].Offer.ID != o.ID || r.Offers[0].Booking.ID != b.ID {
			t.Fatalf("with an open offer: got %+v, %v; want offer %s of booking %s", r, err, o.ID, b.ID)
		}
		if _, err := e.db.AcceptOffer(ctx, o.ID, dispatch.DriverRef{ID: drv, Name: "Ravi"}, t0); err != nil {
			t.Fatal(err)
		}
		r, err = e.db.Resume(ctx, drv)
		if err != nil || r.Active == nil || r.Active.ID != b.ID || r.Active.Status != dispatch.StatusAssigned || len(r.Offers) != 0 {
			t.Fatalf("after accepting: got %+v, %v; want the active booking %s and no offer", r, err, b.ID)
		}
		// Its times come back as times on both engines (a union with typed NULLs).
		if _, err := e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, From: []dispatch.Status{dispatch.StatusAssigned},
			To: dispatch.StatusArrived, Driver: &dispatch.DriverRef{ID: drv}, Actor: "driver:" + drv, At: t0.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
		r, err = e.db.Resume(ctx, drv)
		if err != nil || r.Active == nil || r.Active.ArrivedAt == nil || !r.Active.ArrivedAt.Equal(t0.Add(time.Minute)) {
			t.Fatalf("after arriving: got %+v, %v; want arrived_at %v", r.Active, err, t0.Add(time.Minute))
		}
	})
}

// Sockets opening together resume in one query: each driver gets its own offers and current
// booking, and one with nothing gets nothing (ResumeMany, as Resume for each).
func TestResumeMany(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		offered, busy, idle := id("dr"), id("dr"), id("dr")
		for _, d := range []string{offered, busy, idle} {
			if err := e.db.UpsertDriver(ctx, dispatch.DriverProfile{ID: d, Name: "Ravi"}); err != nil {
				t.Fatal(err)
			}
		}
		b1, b2, b3 := create(t, e, false), create(t, e, false), create(t, e, false)
		o1 := offer(t, e, b1, offered, time.Minute)
		o3 := offer(t, e, b3, busy, time.Minute) // declined below: not open
		if _, err := e.db.CloseOffer(ctx, o3.ID, busy, dispatch.OfferDeclined, t0); err != nil {
			t.Fatal(err)
		}
		o2 := offer(t, e, b2, busy, time.Minute)
		if _, err := e.db.AcceptOffer(ctx, o2.ID, dispatch.DriverRef{ID: busy, Name: "Ravi"}, t0); err != nil {
			t.Fatal(err)
		}
		got, err := e.db.ResumeMany(ctx, []string{offered, busy, idle})
		if err != nil {
			t.Fatal(err)
		}
		if r := got[offered]; r.Active != nil || len(r.Offers) != 1 || r.Offers[0].Offer.ID != o1.ID || r.Offers[0].Booking.ID != b1.ID {
			t.Fatalf("the offered driver: got %+v, want offer %s of booking %s only", r, o1.ID, b1.ID)
		}
		if r := got[busy]; r.Active == nil || r.Active.ID != b2.ID || len(r.Offers) != 0 {
			t.Fatalf("the busy driver: got %+v, want booking %s and no offer", r, b2.ID)
		}
		if r, ok := got[idle]; ok {
			t.Fatalf("the idle driver: got %+v, want no entry", r)
		}
		for _, d := range []string{offered, busy, idle} {
			one, err := e.db.Resume(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if (one.Active == nil) != (got[d].Active == nil) || len(one.Offers) != len(got[d].Offers) {
				t.Fatalf("driver %s: Resume %+v, ResumeMany %+v", d, one, got[d])
			}
		}
	})
}
