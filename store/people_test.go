//go:build !prod

package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// bookingAt creates a searching booking of hours starting at start with a travel buffer.
func bookingAt(t *testing.T, e env, start time.Time, hours, bufferMin int) dispatch.Booking {
	t.Helper()
	nb := newBooking(id("cu"), false)
	nb.StartAt, nb.Hours, nb.TravelBufferMinutes = start, hours, bufferMin
	b, _, err := e.db.CreateBooking(context.Background(), nb)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func assignTo(e env, b dispatch.Booking, driver string) error {
	_, err := e.db.Transition(context.Background(), dispatch.Change{BookingID: b.ID,
		From: []dispatch.Status{dispatch.StatusSearching, dispatch.StatusScheduled}, To: dispatch.StatusAssigned,
		Driver: &dispatch.DriverRef{ID: driver, Name: "Meena"}, Actor: "dispatcher:x", At: t0})
	return err
}

// TestCalendarRules: blocks run from the start to the end of the hours plus the travel buffer;
// a booking whose block ends before another's starts fits, an overlapping one does not, and
// the block goes when its booking is over.
func TestCalendarRules(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		driver := id("dr")
		later := bookingAt(t, e, t0.Add(5*time.Hour), 2, 30) // 5:00 to 7:30
		if err := assignTo(e, later, driver); err != nil {
			t.Fatalf("assign the later booking: %v", err)
		}
		for _, tc := range []struct {
			name          string
			start         time.Duration
			hours, buffer int
			want          error
		}{
			{"ends with its buffer before the block", 0, 2, 30, nil},                        // 0:00 to 2:30
			{"ends exactly at the block's start", 2*time.Hour + 30*time.Minute, 2, 30, nil}, // 2:30 to 5:00
			{"its buffer reaches into the block", 2*time.Hour + 30*time.Minute, 2, 31, dispatch.ErrConflict},
			{"inside the block", 6 * time.Hour, 1, 0, dispatch.ErrConflict},
			{"starts in the block's buffer", 7 * time.Hour, 1, 0, dispatch.ErrConflict},
			{"after the block's buffer", 7*time.Hour + 30*time.Minute, 1, 30, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := bookingAt(t, e, t0.Add(tc.start), tc.hours, tc.buffer)
				before := e.snap(t, b.ID)
				err := assignTo(e, b, driver)
				if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
					t.Fatalf("assign: got %v, want %v", err, tc.want)
				}
				if err != nil {
					if after := e.snap(t, b.ID); after.b.Version != before.b.Version || after.active != 0 {
						t.Errorf("refused assignment changed the booking: version %d -> %d, %d blocks",
							before.b.Version, after.b.Version, after.active)
					}
					return
				}
				// Free it again for the next case.
				if _, err := e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, To: dispatch.StatusCancelled, Reason: "test"}); err != nil {
					t.Fatal(err)
				}
			})
		}
		blocks, err := e.db.Calendar(ctx, driver, t0, t0.Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		want := []dispatch.Block{{BookingID: later.ID, StartAt: t0.Add(5 * time.Hour), EndAt: t0.Add(7*time.Hour + 30*time.Minute)}}
		if fmt.Sprint(blocks) != fmt.Sprint(want) {
			t.Errorf("Calendar: got %v, want %v", blocks, want)
		}
		busy, err := e.db.BusyDrivers(ctx, []string{driver, "dr_nobody"}, t0.Add(7*time.Hour), t0.Add(8*time.Hour))
		if err != nil || !busy[driver] || busy["dr_nobody"] {
			t.Errorf("BusyDrivers: got %v, %v; want only %s", busy, err, driver)
		}
		if _, err := e.db.Transition(ctx, dispatch.Change{BookingID: later.ID, To: dispatch.StatusCancelled, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		if blocks, _ := e.db.Calendar(ctx, driver, t0, t0.Add(24*time.Hour)); len(blocks) != 0 {
			t.Errorf("Calendar after cancelling: got %v, want none", blocks)
		}
	})
}

// TestCalendarAheadIsNotCurrent: a booking assigned days ahead holds its block but is not the
// driver's current booking, so it does not hold the driver today.
func TestCalendarAheadIsNotCurrent(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		driver := id("dr")
		ahead := bookingAt(t, e, time.Now().UTC().Add(48*time.Hour).Truncate(time.Millisecond), 4, 30)
		if err := assignTo(e, ahead, driver); err != nil {
			t.Fatal(err)
		}
		if b, err := e.db.ActiveBookingOf(ctx, driver); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("ActiveBookingOf with a booking 2 days ahead: got %s, %v; want ErrNotFound", b.ID, err)
		}
		now := bookingAt(t, e, time.Now().UTC().Truncate(time.Millisecond), 2, 30)
		if err := assignTo(e, now, driver); err != nil {
			t.Fatalf("a trip today with a booking 2 days ahead: %v", err)
		}
		if b, err := e.db.ActiveBookingOf(ctx, driver); err != nil || b.ID != now.ID {
			t.Errorf("ActiveBookingOf: got %s, %v; want %s", b.ID, err, now.ID)
		}
	})
}

// TestCalendarRace: many goroutines assign overlapping bookings to one driver at once. The
// bookings fall in slots three hours apart; within a slot each overlaps every other. Exactly
// one booking per slot commits, and the committed blocks never overlap.
func TestCalendarRace(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		const slots, perSlot = 5, 4
		for round := 0; round < 3; round++ {
			driver := id("dr")
			var bs []dispatch.Booking
			for s := 0; s < slots; s++ {
				for k := 0; k < perSlot; k++ {
					start := t0.Add(time.Duration(s)*3*time.Hour + time.Duration(k)*15*time.Minute)
					bs = append(bs, bookingAt(t, e, start, 1, 30))
				}
			}
			errs := make([]error, len(bs))
			var wg sync.WaitGroup
			gate := make(chan struct{})
			for i, b := range bs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-gate
					errs[i] = assignTo(e, b, driver)
				}()
			}
			close(gate)
			wg.Wait()
			won := map[int]int{}
			for i, err := range errs {
				switch {
				case err == nil:
					won[i/perSlot]++
				case !errors.Is(err, dispatch.ErrConflict):
					t.Fatalf("round %d: assign %d: got %v, want nil or ErrConflict", round, i, err)
				}
			}
			for s := 0; s < slots; s++ {
				if won[s] != 1 {
					t.Errorf("round %d slot %d: got %d assignments, want 1", round, s, won[s])
				}
			}
			blocks, err := e.db.Calendar(ctx, driver, t0.Add(-time.Hour), t0.Add(24*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if len(blocks) != slots {
				t.Errorf("round %d: got %d blocks, want %d", round, len(blocks), slots)
			}
			for i := 1; i < len(blocks); i++ {
				if blocks[i].StartAt.Before(blocks[i-1].EndAt) {
					t.Errorf("round %d: blocks overlap: %v and %v", round, blocks[i-1], blocks[i])
				}
			}
			if n := e.count(t, "SELECT COUNT(*) FROM bookings WHERE driver_id = ? AND status = 'assigned'", driver); n != slots {
				t.Errorf("round %d: got %d assigned bookings, want %d", round, n, slots)
			}
		}
	})
}

func TestRatings(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		b := bookingIn(t, e, dispatch.StatusCompleted)
		driver := b.DriverID()
		if err := e.db.UpsertDriver(ctx, dispatch.DriverProfile{ID: driver, Name: "Ravi"}); err != nil {
			t.Fatal(err)
		}
		// 100 older one-star ratings: the new one pushes the oldest out of the window.
		for i := 0; i < dispatch.RatingWindow; i++ {
			if _, err := e.raw.Exec(`INSERT INTO ratings (booking_id, driver_id, customer_id, stars, comment, created_at)
				VALUES (?, ?, 'cu_old', 1, '', ?)`, id("bk"), driver, t0.Add(-time.Duration(i+1)*time.Hour)); err != nil {
				t.Fatal(err)
			}
		}
		r := dispatch.Rating{BookingID: b.ID, DriverID: driver, CustomerID: b.CustomerID, Stars: 5, Comment: "smooth", At: t0}
		for _, tc := range []struct {
			name string
			r    dispatch.Rating
			want error
		}{
			{"another customer", dispatch.Rating{BookingID: b.ID, DriverID: driver, CustomerID: "cu_else", Stars: 5}, dispatch.ErrConflict},
			{"its customer", r, nil},
			{"twice", r, dispatch.ErrConflict},
			{"not completed", dispatch.Rating{BookingID: bookingIn(t, e, dispatch.StatusInProgress).ID, DriverID: driver, CustomerID: b.CustomerID, Stars: 4}, dispatch.ErrConflict},
		} {
			if err := e.db.Rate(ctx, tc.r); !errors.Is(err, tc.want) && !(err == nil && tc.want == nil) {
				t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
			}
		}
		d, err := e.db.Driver(ctx, driver)
		if err != nil {
			t.Fatal(err)
		}
		// The last 100: 99 ones and the five.
		if want := (99*1 + 5) / 100.0; d.Rating != want {
			t.Errorf("rating: got %v, want %v", d.Rating, want)
		}
		if d.Trips != 1 {
			t.Errorf("trips: got %d, want 1", d.Trips)
		}
		// A dispatcher's edit of the profile leaves the rating alone.
		d.Name, d.Rating, d.Verified = "Ravi Kumar", 0, true
		if err := e.db.UpdateProfile(ctx, d); err != nil {
			t.Fatal(err)
		}
		if got, _ := e.db.Driver(ctx, driver); got.Name != "Ravi Kumar" || !got.Verified || got.Rating != (99*1+5)/100.0 {
			t.Errorf("after UpdateProfile: got %+v, want the new name, verified, the rating kept", got)
		}
		if err := e.db.UpdateProfile(ctx, dispatch.DriverProfile{ID: "dr_nobody"}); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("UpdateProfile of an unknown driver: got %v, want ErrNotFound", err)
		}
	})
}

// TestFailOTP: four wrong tries count, the fifth locks and publishes the booking, tries while
// locked count nothing; each is an audit row; a start is refused until the lock ends. Many
// concurrent wrong tries lock exactly once.
func TestFailOTP(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		b := bookingIn(t, e, dispatch.StatusArrived)
		driver := b.DriverID()
		before := e.snap(t, b.ID)
		at := t0.Add(time.Hour)
		for i := 1; i <= 7; i++ {
			got, err := e.db.FailOTP(ctx, b.ID, driver, at, 5, 15*time.Minute)
			if err != nil {
				t.Fatalf("try %d: %v", i, err)
			}
			locked := got.OTPLockedUntil != nil && got.OTPLockedUntil.Equal(at.Add(15*time.Minute))
			if locked != (i >= 5) {
				t.Errorf("try %d: locked until %v, want locked %v", i, got.OTPLockedUntil, i >= 5)
			}
		}
		after := e.snap(t, b.ID)
		if after.events != before.events+7 || after.outbox != before.outbox+1 || after.b.Version != before.b.Version+1 {
			t.Errorf("got +%d audit rows, +%d events, version +%d; want +7, +1, +1",
				after.events-before.events, after.outbox-before.outbox, after.b.Version-before.b.Version)
		}
		if _, err := e.db.FailOTP(ctx, b.ID, "dr_other", at, 5, 15*time.Minute); !errors.Is(err, dispatch.ErrConflict) {
			t.Errorf("another driver's try: got %v, want ErrConflict", err)
		}
		start := func(at time.Time) error {
			_, err := e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, From: []dispatch.Status{dispatch.StatusArrived},
				To: dispatch.StatusInProgress, Driver: &dispatch.DriverRef{ID: driver}, NotOTPLocked: true, At: at})
			return err
		}
		if err := start(at.Add(14 * time.Minute)); !errors.Is(err, dispatch.ErrOTPLocked) {
			t.Errorf("start while locked: got %v, want ErrOTPLocked", err)
		}
		if err := start(at.Add(15 * time.Minute)); err != nil {
			t.Errorf("start once the lock ended: got %v, want nil", err)
		}

		c := bookingIn(t, e, dispatch.StatusArrived)
		cbefore := e.snap(t, c.ID)
		var wg sync.WaitGroup
		for i := 0; i < 12; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := e.db.FailOTP(ctx, c.ID, c.DriverID(), at, 5, 15*time.Minute); err != nil {
					t.Errorf("concurrent try: %v", err)
				}
			}()
		}
		wg.Wait()
		cafter := e.snap(t, c.ID)
		if cafter.outbox != cbefore.outbox+1 || cafter.events != cbefore.events+12 || cafter.b.OTPLockedUntil == nil {
			t.Errorf("12 concurrent tries: got +%d events, +%d audit rows, locked until %v; want +1, +12, locked",
				cafter.outbox-cbefore.outbox, cafter.events-cbefore.events, cafter.b.OTPLockedUntil)
		}
		evs, err := e.db.BookingEvents(ctx, c.ID)
		if err != nil || len(evs) != cafter.events {
			t.Errorf("BookingEvents: got %d, %v; want %d", len(evs), err, cafter.events)
		}
	})
}
