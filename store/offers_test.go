//go:build !prod

package store_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

func offer(t *testing.T, e env, b dispatch.Booking, driverID string, ttl time.Duration) dispatch.Offer {
	t.Helper()
	o := dispatch.Offer{ID: id("of"), BookingID: b.ID, DriverID: driverID, Status: dispatch.OfferOpen,
		DistanceM: 850, CreatedAt: t0, ExpiresAt: t0.Add(ttl)}
	if err := e.db.CreateOffer(context.Background(), o); err != nil {
		t.Fatalf("CreateOffer: %v", err)
	}
	return o
}

func TestOffers(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		b := create(t, e, false)
		d1, d2 := id("dr"), id("dr")
		o1 := offer(t, e, b, d1, 20*time.Second)
		o2 := offer(t, e, b, d2, 20*time.Second)

		got, err := e.db.Offer(ctx, o1.ID)
		if err != nil || !reflect.DeepEqual(got, o1) {
			t.Errorf("Offer: got %+v, %v; want %+v, nil", got, err, o1)
		}
		if _, err := e.db.Offer(ctx, "of_nope"); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("Offer(unknown): got %v, want ErrNotFound", err)
		}
		open, err := e.db.OpenOffers(ctx, d1)
		if err != nil || !reflect.DeepEqual(open, []dispatch.Offer{o1}) {
			t.Errorf("OpenOffers(d1): got %+v, %v; want [%+v]", open, err, o1)
		}
		if open, err := e.db.OpenOffers(ctx, ""); err != nil || len(open) != 2 {
			t.Errorf("OpenOffers(all): got %d, %v; want 2, nil", len(open), err)
		}

		for _, tc := range []struct {
			name             string
			offerID, driver  string
			to               dispatch.OfferStatus
			want             error
			wantStatusIfDone dispatch.OfferStatus
		}{
			{"another driver's", o1.ID, d2, dispatch.OfferDeclined, dispatch.ErrConflict, ""},
			{"not a closing status", o1.ID, d1, dispatch.OfferAccepted, dispatch.ErrInvalid, ""},
			{"unknown", "of_nope", d1, dispatch.OfferDeclined, dispatch.ErrNotFound, ""},
			{"declined by its driver", o1.ID, d1, dispatch.OfferDeclined, nil, dispatch.OfferDeclined},
			{"declined again", o1.ID, d1, dispatch.OfferDeclined, dispatch.ErrConflict, ""},
			{"expired by the system", o2.ID, "", dispatch.OfferExpired, nil, dispatch.OfferExpired},
			{"revoked once expired", o2.ID, "", dispatch.OfferRevoked, dispatch.ErrConflict, ""},
		} {
			t.Run(tc.name, func(t *testing.T) {
				got, err := e.db.CloseOffer(ctx, tc.offerID, tc.driver, tc.to, t0.Add(time.Second))
				if !errors.Is(err, tc.want) {
					t.Fatalf("CloseOffer: got %v, want %v", err, tc.want)
				}
				if tc.want == nil && got.Status != tc.wantStatusIfDone {
					t.Errorf("CloseOffer: got status %s, want %s", got.Status, tc.wantStatusIfDone)
				}
			})
		}
		declined, err := e.db.DeclinedBy(ctx, b.ID)
		want := []string{d1, d2}
		if want[0] > want[1] {
			want[0], want[1] = want[1], want[0]
		}
		if err != nil || !reflect.DeepEqual(declined, want) {
			t.Errorf("DeclinedBy: got %v, %v; want %v, nil", declined, err, want)
		}
		if open, err := e.db.OpenOffers(ctx, ""); err != nil || len(open) != 0 {
			t.Errorf("OpenOffers after closing: got %d, %v; want 0, nil", len(open), err)
		}

		assigned := bookingIn(t, e, dispatch.StatusAssigned)
		err = e.db.CreateOffer(ctx, dispatch.Offer{ID: id("of"), BookingID: assigned.ID, DriverID: d1, ExpiresAt: t0})
		if !errors.Is(err, dispatch.ErrConflict) {
			t.Errorf("CreateOffer for a booking no longer searching: got %v, want ErrConflict", err)
		}
		err = e.db.CreateOffer(ctx, dispatch.Offer{ID: id("of"), BookingID: "bk_nope", DriverID: d1, ExpiresAt: t0})
		if !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("CreateOffer for an unknown booking: got %v, want ErrNotFound", err)
		}
	})
}

func TestAcceptOffer(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		driver := dispatch.DriverRef{ID: id("dr"), Name: "Manoj", Rating: 4.5}
		for _, tc := range []struct {
			name   string
			driver string
			at     time.Duration // after t0; the offer lives 20 s
			want   error
		}{
			{"in time", driver.ID, 19 * time.Second, nil},
			{"expired", driver.ID, 20 * time.Second, dispatch.ErrConflict},
			{"another driver's", "dr_other", time.Second, dispatch.ErrConflict},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := create(t, e, false)
				o := offer(t, e, b, driver.ID, 20*time.Second)
				before := e.snap(t, b.ID)
				d := driver
				d.ID = tc.driver
				got, err := e.db.AcceptOffer(ctx, o.ID, d, t0.Add(tc.at))
				if !errors.Is(err, tc.want) {
					t.Fatalf("AcceptOffer: got %v, want %v", err, tc.want)
				}
				after := e.snap(t, b.ID)
				stored, _ := e.db.Offer(ctx, o.ID)
				if tc.want != nil {
					if !reflect.DeepEqual(after, before) || stored.Status != dispatch.OfferOpen {
						t.Errorf("refused accept changed something: booking %+v -> %+v, offer %s", before, after, stored.Status)
					}
					return
				}
				if got.Status != dispatch.StatusAssigned || got.Driver == nil || *got.Driver != driver || stored.Status != dispatch.OfferAccepted {
					t.Errorf("accepted: got booking %s driver %+v, offer %s; want assigned to %+v, offer accepted",
						got.Status, got.Driver, stored.Status, driver)
				}
				if after.events != before.events+1 || after.outbox != before.outbox+1 || after.active != 1 {
					t.Errorf("accepted: got +%d audit, +%d outbox, %d driver_blocks rows; want +1, +1, 1",
						after.events-before.events, after.outbox-before.outbox, after.active)
				}
				// Accepting again is a conflict and changes nothing.
				if _, err := e.db.AcceptOffer(ctx, o.ID, driver, t0.Add(tc.at)); !errors.Is(err, dispatch.ErrConflict) {
					t.Errorf("accepting twice: got %v, want ErrConflict", err)
				}
				if again := e.snap(t, b.ID); !reflect.DeepEqual(again, after) {
					t.Errorf("second accept changed the booking:\ngot  %+v\nwant %+v", again, after)
				}
				// Free the driver for the next case.
				if _, err := e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, To: dispatch.StatusCancelled}); err != nil {
					t.Fatal(err)
				}
			})
		}
		if _, err := e.db.AcceptOffer(ctx, "of_nope", driver, t0); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("AcceptOffer(unknown): got %v, want ErrNotFound", err)
		}
		t.Run("booking no longer searching", func(t *testing.T) {
			b := create(t, e, false)
			o := offer(t, e, b, driver.ID, time.Minute)
			if _, err := e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, To: dispatch.StatusCancelled}); err != nil {
				t.Fatal(err)
			}
			_, err := e.db.AcceptOffer(ctx, o.ID, driver, t0)
			if !errors.Is(err, dispatch.ErrConflict) || errors.Is(err, dispatch.ErrNotFound) {
				t.Errorf("AcceptOffer: got %v, want ErrConflict alone", err)
			}
			if stored, _ := e.db.Offer(ctx, o.ID); stored.Status != dispatch.OfferOpen {
				t.Errorf("offer after the refused accept: got %s, want open (rolled back)", stored.Status)
			}
		})
	})
}

// accepts runs the accepts at once and returns how many succeeded, failing the test on any error
// other than ErrConflict.
func accepts(t *testing.T, e env, calls []func() error) int {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]error, len(calls))
	for i, call := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i] = call()
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for _, err := range results {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, dispatch.ErrConflict):
			t.Errorf("accept: got %v, want nil or ErrConflict", err)
		}
	}
	return won
}

func TestAcceptRaces(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		t.Run("one driver, two bookings", func(t *testing.T) {
			for round := 0; round < 10; round++ {
				driver := dispatch.DriverRef{ID: id("dr"), Name: "Kiran", Rating: 4.4}
				b1, b2 := create(t, e, false), create(t, e, false)
				o1, o2 := offer(t, e, b1, driver.ID, time.Minute), offer(t, e, b2, driver.ID, time.Minute)
				won := accepts(t, e, []func() error{
					func() error { _, err := e.db.AcceptOffer(ctx, o1.ID, driver, t0); return err },
					func() error { _, err := e.db.AcceptOffer(ctx, o2.ID, driver, t0); return err },
				})
				if won != 1 {
					t.Fatalf("round %d: got %d winners, want 1", round, won)
				}
				if n := e.count(t, "SELECT COUNT(*) FROM bookings WHERE id IN (?, ?) AND status = 'assigned'", b1.ID, b2.ID); n != 1 {
					t.Fatalf("round %d: got %d assigned bookings, want 1", round, n)
				}
				if n := e.count(t, "SELECT COUNT(*) FROM offers WHERE id IN (?, ?) AND status = 'accepted'", o1.ID, o2.ID); n != 1 {
					t.Fatalf("round %d: got %d accepted offers, want 1 (the loser's rolled back)", round, n)
				}
			}
		})
		t.Run("100 drivers, one offer", func(t *testing.T) {
			b := create(t, e, false)
			driver := dispatch.DriverRef{ID: id("dr"), Name: "Farhan", Rating: 4.9}
			o := offer(t, e, b, driver.ID, time.Minute)
			calls := make([]func() error, 100)
			for i := range calls {
				calls[i] = func() error { _, err := e.db.AcceptOffer(ctx, o.ID, driver, t0); return err }
			}
			if won := accepts(t, e, calls); won != 1 {
				t.Errorf("100 accepts of one offer: got %d winners, want 1", won)
			}
			s := e.snap(t, b.ID)
			if s.b.Version != 2 || s.events != 2 || s.outbox != 2 || s.active != 1 {
				t.Errorf("after the race: got version %d, %d audit rows, %d outbox rows, %d driver_blocks; want 2, 2, 2, 1",
					s.b.Version, s.events, s.outbox, s.active)
			}
		})
	})
}

func TestOfferFencing(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		region := id("rg")
		for _, tc := range []struct {
			name   string
			region string
			fence  int64
			want   error
		}{
			{"first owner", region, 3, nil},
			{"same owner again", region, 3, nil},
			{"stale owner", region, 2, dispatch.ErrConflict},
			{"new owner", region, 4, nil},
			{"old owner after the new one", region, 3, dispatch.ErrConflict},
			{"another region", id("rg"), 1, nil},
			{"no region, not fenced", "", 0, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := create(t, e, false)
				o := dispatch.Offer{ID: id("of"), BookingID: b.ID, DriverID: id("dr"), DistanceM: 100,
					Region: tc.region, Fence: tc.fence, CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}
				err := e.db.CreateOffer(ctx, o)
				if !errors.Is(err, tc.want) {
					t.Fatalf("CreateOffer(fence %d): got %v, want %v", tc.fence, err, tc.want)
				}
				got, err := e.db.Offer(ctx, o.ID)
				if tc.want != nil {
					if !errors.Is(err, dispatch.ErrNotFound) {
						t.Errorf("refused offer: got %v, want it not stored (ErrNotFound)", err)
					}
					return
				}
				o.Status = dispatch.OfferOpen
				if err != nil || !reflect.DeepEqual(got, o) {
					t.Errorf("Offer: got %+v, %v; want %+v", got, err, o)
				}
			})
		}
	})
}
