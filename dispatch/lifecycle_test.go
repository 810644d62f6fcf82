package dispatch_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// TestDriverLifecycle: a driver's day as the domain rules it (realtime only carries the frames):
// who may go online, what a busy driver goes back to, who may not go offline, and what a new
// socket is told.
func TestDriverLifecycle(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	state := func(id string) dispatch.DriverState {
		t.Helper()
		st, err := r.index.State(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	r.driver("d1", north(200), baseLng)
	r.driver("d2", north(400), baseLng)

	steps := []struct {
		name    string
		do      func() (dispatch.DriverState, error)
		want    dispatch.DriverState // the state answered and recorded
		wantErr error
		driver  string
		stays   dispatch.DriverState // the state recorded after a refusal
	}{
		{name: "an unregistered driver may not go online", driver: "ghost", wantErr: dispatch.ErrForbidden, stays: dispatch.DriverOffline,
			do: func() (dispatch.DriverState, error) { return r.svc.GoOnline(ctx, driverActor("ghost")) }},
		{name: "a customer goes neither online", driver: "d1", wantErr: dispatch.ErrForbidden, stays: dispatch.DriverAvailable,
			do: func() (dispatch.DriverState, error) {
				return r.svc.GoOnline(ctx, dispatch.Actor{ID: "d1", Role: "customer"})
			}},
		{name: "nor offline", driver: "d1", wantErr: dispatch.ErrForbidden, stays: dispatch.DriverAvailable,
			do: func() (dispatch.DriverState, error) {
				return r.svc.GoOffline(ctx, dispatch.Actor{ID: "d1", Role: "customer"})
			}},
		{name: "a free driver goes offline", driver: "d1", want: dispatch.DriverOffline,
			do: func() (dispatch.DriverState, error) { return r.svc.GoOffline(ctx, driverActor("d1")) }},
		{name: "and online again: available", driver: "d1", want: dispatch.DriverAvailable,
			do: func() (dispatch.DriverState, error) { return r.svc.GoOnline(ctx, driverActor("d1")) }},
		{name: "a driver with a booking may not go offline", driver: "d2", wantErr: dispatch.ErrConflict, stays: dispatch.DriverAssigned,
			do: func() (dispatch.DriverState, error) {
				b := r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
				if _, err := r.svc.Assign(ctx, dispatch.Actor{ID: "ops", Role: "dispatcher"}, b.ID, "d2"); err != nil {
					t.Fatal(err)
				}
				return r.svc.GoOffline(ctx, driverActor("d2"))
			}},
		{name: "online with a booking: back to it, assigned", driver: "d2", want: dispatch.DriverAssigned,
			do: func() (dispatch.DriverState, error) { return r.svc.GoOnline(ctx, driverActor("d2")) }},
	}
	for _, s := range steps {
		got, err := s.do()
		switch {
		case s.wantErr != nil && !errors.Is(err, s.wantErr):
			t.Fatalf("%s: got %q %v, want %v", s.name, got, err, s.wantErr)
		case s.wantErr != nil && state(s.driver) != s.stays:
			t.Fatalf("%s: got %s recorded, want it unchanged: %s", s.name, state(s.driver), s.stays)
		case s.wantErr == nil && (err != nil || got != s.want || state(s.driver) != s.want):
			t.Fatalf("%s: got %q (%v), recorded %s; want %s", s.name, got, err, state(s.driver), s.want)
		}
	}

	// A new socket of d2 is told its state and its booking (without the OTP); one of d1, which has
	// an offer open, that offer.
	hello, err := r.svc.DriverHello(ctx, driverActor("d2"))
	if err != nil || hello.State != dispatch.DriverAssigned || hello.Active == nil || hello.Active.DriverID() != "d2" ||
		hello.Active.OTP != "" || len(hello.Offers) != 0 {
		t.Fatalf("d2's hello: got %+v (%v), want assigned with its booking, no OTP, no offers", hello, err)
	}
	m := r.matcher(nil)
	r.book("c2", north(150), baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	hello, err = r.svc.DriverHello(ctx, driverActor("d1"))
	if err != nil || hello.State != dispatch.DriverOffered || hello.Active != nil || len(hello.Offers) != 1 ||
		hello.Offers[0].Offer.ID != r.notes.lastOffer("d1") {
		t.Fatalf("d1's hello: got %+v (%v), want offered with the open offer %s", hello, err, r.notes.lastOffer("d1"))
	}
	if _, err := r.svc.DriverHello(ctx, dispatch.Actor{ID: "c1", Role: "customer"}); !errors.Is(err, dispatch.ErrForbidden) {
		t.Fatalf("a customer's driver hello: got %v, want ErrForbidden", err)
	}
}
