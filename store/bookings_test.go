//go:build !prod

package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

var allStatuses = []dispatch.Status{
	dispatch.StatusScheduled, dispatch.StatusSearching, dispatch.StatusAssigned, dispatch.StatusArrived,
	dispatch.StatusInProgress, dispatch.StatusCompleted, dispatch.StatusCancelled, dispatch.StatusUnfulfilled,
}

// machine is the state machine of API.md, written out independently of the store's table:
// the main line, cancelled from every state before completed, searching -> unfulfilled, a driver's
// cancel (assigned or arrived -> searching) and a dispatcher's early assignment (scheduled -> assigned).
var machine = map[[2]dispatch.Status]bool{
	{dispatch.StatusScheduled, dispatch.StatusSearching}:   true,
	{dispatch.StatusScheduled, dispatch.StatusAssigned}:    true,
	{dispatch.StatusScheduled, dispatch.StatusCancelled}:   true,
	{dispatch.StatusSearching, dispatch.StatusAssigned}:    true,
	{dispatch.StatusSearching, dispatch.StatusCancelled}:   true,
	{dispatch.StatusSearching, dispatch.StatusUnfulfilled}: true,
	{dispatch.StatusAssigned, dispatch.StatusArrived}:      true,
	{dispatch.StatusAssigned, dispatch.StatusSearching}:    true,
	{dispatch.StatusAssigned, dispatch.StatusCancelled}:    true,
	{dispatch.StatusArrived, dispatch.StatusInProgress}:    true,
	{dispatch.StatusArrived, dispatch.StatusSearching}:     true,
	{dispatch.StatusArrived, dispatch.StatusCancelled}:     true,
	{dispatch.StatusInProgress, dispatch.StatusCompleted}:  true,
	{dispatch.StatusInProgress, dispatch.StatusCancelled}:  true,
	{dispatch.StatusUnfulfilled, dispatch.StatusSearching}: true,
	{dispatch.StatusUnfulfilled, dispatch.StatusCancelled}: true,
}

func TestCreateBookingRoundTrip(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		for _, scheduled := range []bool{false, true} {
			nb := newBooking(id("cu"), scheduled)
			b, created, err := e.db.CreateBooking(ctx, nb)
			if err != nil || !created {
				t.Fatalf("CreateBooking: got created=%v, %v; want true, nil", created, err)
			}
			want := dispatch.StatusSearching
			if scheduled {
				want = dispatch.StatusScheduled
			}
			if b.Status != want || b.Version != 1 {
				t.Errorf("new booking: got status %s version %d, want %s version 1", b.Status, b.Version, want)
			}
			got, err := e.db.Booking(ctx, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, b) {
				t.Errorf("Booking(%s):\ngot  %+v\nwant %+v", b.ID, got, b)
			}
			if got.OTP != nb.OTP || !got.StartAt.Equal(nb.StartAt) || !reflect.DeepEqual(got.Fare, nb.Fare) {
				t.Errorf("stored booking differs from the request: got %+v, want it from %+v", got, nb)
			}
			if n := e.count(t, "SELECT COUNT(*) FROM booking_events WHERE booking_id = ? AND from_status = '' AND to_status = ?", b.ID, want); n != 1 {
				t.Errorf("audit rows of the creation: got %d, want 1", n)
			}
			if n := e.count(t, "SELECT COUNT(*) FROM outbox WHERE booking_id = ?", b.ID); n != 1 {
				t.Errorf("outbox rows of the creation: got %d, want 1", n)
			}
		}
		if _, err := e.db.Booking(ctx, "bk_nope"); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("Booking(unknown): got %v, want ErrNotFound", err)
		}
	})
}

func TestCreateBookingRefuses(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		first := create(t, e, false)
		for _, tc := range []struct {
			name   string
			change func(*dispatch.NewBooking)
			want   error
		}{
			{"taken id", func(nb *dispatch.NewBooking) { nb.ID = first.ID }, dispatch.ErrConflict},
			{"no id", func(nb *dispatch.NewBooking) { nb.ID = "" }, dispatch.ErrInvalid},
			{"no customer", func(nb *dispatch.NewBooking) { nb.CustomerID = "" }, dispatch.ErrInvalid},
			{"long address", func(nb *dispatch.NewBooking) { nb.Pickup.Address = string(make([]byte, 501)) }, dispatch.ErrInvalid},
			{"no transmission", func(nb *dispatch.NewBooking) { nb.Car.Transmission = "" }, dispatch.ErrInvalid},
		} {
			t.Run(tc.name, func(t *testing.T) {
				nb := newBooking(id("cu"), false)
				tc.change(&nb)
				if _, _, err := e.db.CreateBooking(ctx, nb); !errors.Is(err, tc.want) {
					t.Errorf("CreateBooking: got %v, want %v", err, tc.want)
				}
			})
		}
		if n := e.count(t, "SELECT COUNT(*) FROM bookings"); n != 1 {
			t.Errorf("bookings after refusals: got %d, want 1", n)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM idempotency_keys"); n != 1 {
			t.Errorf("idempotency keys after refusals: got %d, want 1 (rolled back with their booking)", n)
		}
	})
}

func TestIdempotency(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		nb := newBooking(id("cu"), false)
		first, created, err := e.db.CreateBooking(ctx, nb)
		if err != nil || !created {
			t.Fatalf("first CreateBooking: got created=%v, %v; want true, nil", created, err)
		}

		again := nb
		again.ID = id("bk") // a retry mints a new id; the key decides
		b, created, err := e.db.CreateBooking(ctx, again)
		if err != nil || created || !reflect.DeepEqual(b, first) {
			t.Errorf("same key, same hash: got %s created=%v, %v; want %s created=false, nil", b.ID, created, err, first.ID)
		}

		other := again
		other.RequestHash = "hash-2"
		if _, _, err := e.db.CreateBooking(ctx, other); !errors.Is(err, dispatch.ErrIdempotencyMismatch) {
			t.Errorf("same key, other hash: got %v, want ErrIdempotencyMismatch", err)
		}

		otherCustomer := again
		otherCustomer.CustomerID = id("cu")
		if _, created, err := e.db.CreateBooking(ctx, otherCustomer); err != nil || !created {
			t.Errorf("same key, other customer: got created=%v, %v; want true, nil", created, err)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM bookings WHERE customer_id = ?", nb.CustomerID); n != 1 {
			t.Errorf("bookings of the customer: got %d, want 1", n)
		}
	})
}

func TestIdempotencyConcurrent(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		nb := newBooking(id("cu"), false)
		const n = 50
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			created int
			ids     = map[string]int{}
			errs    []error
		)
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				req := nb
				req.ID = id("bk")
				b, c, err := e.db.CreateBooking(ctx, req)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				if c {
					created++
				}
				ids[b.ID]++
			}()
		}
		wg.Wait()
		if len(errs) > 0 {
			t.Fatalf("%d of %d calls failed, first: %v", len(errs), n, errs[0])
		}
		if created != 1 || len(ids) != 1 {
			t.Errorf("%d calls with one key: got %d created and %d distinct bookings, want 1 and 1", n, created, len(ids))
		}
		for _, q := range []string{"bookings", "booking_events", "outbox", "idempotency_keys"} {
			if got := e.count(t, "SELECT COUNT(*) FROM "+q); got != 1 {
				t.Errorf("rows in %s: got %d, want 1", q, got)
			}
		}
	})
}

// snapshot is what a refused change must leave untouched.
type snapshot struct {
	b              dispatch.Booking
	events, outbox int
	active         int
	trips          int
}

func (e env) snap(t *testing.T, id string) snapshot {
	t.Helper()
	b, err := e.db.Booking(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return snapshot{
		b:      b,
		events: e.count(t, "SELECT COUNT(*) FROM booking_events WHERE booking_id = ?", id),
		outbox: e.count(t, "SELECT COUNT(*) FROM outbox WHERE booking_id = ?", id),
		active: e.count(t, "SELECT COUNT(*) FROM driver_blocks WHERE booking_id = ?", id),
		trips:  e.count(t, "SELECT COUNT(*) FROM trips WHERE booking_id = ?", id),
	}
}

// TestTransitionMatrix tries every (from, to) pair: the moves of the machine apply with their
// side effects; every other one is ErrConflict and changes nothing.
func TestTransitionMatrix(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		at := t0.Add(time.Hour)
		final := dispatch.Fare{Currency: "INR", TotalPaise: 123456, Lines: []dispatch.FareLine{{Code: "base", Label: "Base fare", AmountPaise: 123456}}}
		// Each pair twice: naming the state it is in (From), and naming none (any the machine allows).
		for _, from := range allStatuses {
			for _, to := range allStatuses {
				for _, anyFrom := range []bool{false, true} {
					name := fmt.Sprintf("%s_to_%s", from, to)
					if anyFrom {
						name += "_from_any"
					}
					t.Run(name, func(t *testing.T) {
						b := bookingIn(t, e, from)
						before := e.snap(t, b.ID)
						c := dispatch.Change{BookingID: b.ID, From: []dispatch.Status{from}, To: to,
							Actor: "dispatcher:x", Reason: "matrix", At: at}
						if anyFrom {
							c.From = nil
						}
						driver := dispatch.DriverRef{ID: id("dr"), Name: "Asha", Rating: 4.9}
						switch to {
						case dispatch.StatusAssigned:
							c.Driver = &driver
						case dispatch.StatusSearching:
							c.ClearDriver = true
						case dispatch.StatusCompleted:
							c.Fare = &final
						}
						got, err := e.db.Transition(ctx, c)
						after := e.snap(t, b.ID)
						if !machine[[2]dispatch.Status{from, to}] {
							if !errors.Is(err, dispatch.ErrConflict) {
								t.Fatalf("refused move: got %v, want ErrConflict", err)
							}
							if !reflect.DeepEqual(after, before) {
								t.Errorf("refused move changed the booking:\ngot  %+v\nwant %+v", after, before)
							}
							return
						}
						if err != nil {
							t.Fatalf("allowed move: got %v, want nil", err)
						}
						if !reflect.DeepEqual(after.b, got) {
							t.Errorf("returned booking differs from the stored one:\ngot  %+v\nwant %+v", got, after.b)
						}
						if got.Status != to || got.Version != before.b.Version+1 {
							t.Errorf("got status %s version %d, want %s version %d", got.Status, got.Version, to, before.b.Version+1)
						}
						if after.events != before.events+1 || after.outbox != before.outbox+1 {
							t.Errorf("audit and outbox rows: got +%d and +%d, want +1 and +1",
								after.events-before.events, after.outbox-before.outbox)
						}
						if n := e.count(t, `SELECT COUNT(*) FROM booking_events WHERE booking_id = ? AND from_status = ?
						AND to_status = ? AND actor = 'dispatcher:x' AND reason = 'matrix' AND version = ?`,
							b.ID, from, to, got.Version); n != 1 {
							t.Errorf("audit row %s -> %s: got %d, want 1", from, to, n)
						}
						wantActive := 0
						if to.Active() {
							wantActive = 1
						}
						if after.active != wantActive {
							t.Errorf("driver_blocks rows: got %d, want %d", after.active, wantActive)
						}
						wantTrips := 0
						if to == dispatch.StatusCompleted {
							wantTrips = 1 // recorded with the completion, even without a route
						}
						if after.trips != wantTrips {
							t.Errorf("trips rows: got %d, want %d", after.trips, wantTrips)
						}
						checkEffects(t, from, to, at, before.b, got, driver, final)
					})
				}
			}
		}
	})
}

func checkEffects(t *testing.T, from, to dispatch.Status, at time.Time, before, got dispatch.Booking, driver dispatch.DriverRef, final dispatch.Fare) {
	t.Helper()
	eqTime := func(name string, p *time.Time) {
		if p == nil || !p.Equal(at) {
			t.Errorf("%s: got %v, want %s", name, p, at)
		}
	}
	switch to {
	case dispatch.StatusAssigned:
		if got.Driver == nil || *got.Driver != driver {
			t.Errorf("driver: got %+v, want %+v", got.Driver, driver)
		}
	case dispatch.StatusArrived:
		eqTime("arrived_at", got.ArrivedAt)
	case dispatch.StatusInProgress:
		eqTime("started_at", got.StartedAt)
	case dispatch.StatusCompleted:
		eqTime("ended_at", got.EndedAt)
		if !reflect.DeepEqual(got.Fare, final) {
			t.Errorf("fare: got %+v, want the final %+v", got.Fare, final)
		}
		if got.DistanceM == nil || *got.DistanceM != 0 || got.RoutePoints == nil || *got.RoutePoints != 0 {
			t.Errorf("distance_m and route_points of a completion without a route: got %v and %v, want 0 and 0", got.DistanceM, got.RoutePoints)
		}
	case dispatch.StatusCancelled:
		if got.CancelReason != "matrix" {
			t.Errorf("cancel_reason: got %q, want %q", got.CancelReason, "matrix")
		}
		if from == dispatch.StatusInProgress {
			eqTime("ended_at", got.EndedAt)
		} else if got.EndedAt != nil {
			t.Errorf("ended_at of a trip that never started: got %v, want nil", got.EndedAt)
		}
	case dispatch.StatusSearching:
		if got.Driver != nil {
			t.Errorf("driver after going back to searching: got %+v, want nil", got.Driver)
		}
	}
	if to != dispatch.StatusAssigned && to != dispatch.StatusSearching && !reflect.DeepEqual(got.Driver, before.Driver) {
		t.Errorf("driver: got %+v, want it unchanged %+v", got.Driver, before.Driver)
	}
	if to != dispatch.StatusCompleted && !reflect.DeepEqual(got.Fare, before.Fare) {
		t.Errorf("fare changed without being given")
	}
}

func TestTransitionGuards(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		for _, tc := range []struct {
			name   string
			status dispatch.Status
			change func(b dispatch.Booking) dispatch.Change
			want   error
		}{
			{"state not in From", dispatch.StatusSearching, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{dispatch.StatusScheduled}, To: dispatch.StatusCancelled}
			}, dispatch.ErrConflict},
			{"stale version", dispatch.StatusSearching, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{b.Status}, To: dispatch.StatusCancelled, Version: b.Version + 1}
			}, dispatch.ErrConflict},
			{"another driver", dispatch.StatusAssigned, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{b.Status}, To: dispatch.StatusArrived, Driver: &dispatch.DriverRef{ID: "dr_other"}}
			}, dispatch.ErrConflict},
			{"driver cancel by another driver", dispatch.StatusArrived, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{dispatch.StatusAssigned, dispatch.StatusArrived},
					To: dispatch.StatusSearching, Driver: &dispatch.DriverRef{ID: "dr_other"}, ClearDriver: true}
			}, dispatch.ErrConflict},
			{"unknown booking", dispatch.StatusSearching, func(dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: "bk_nope", From: []dispatch.Status{dispatch.StatusSearching}, To: dispatch.StatusCancelled}
			}, dispatch.ErrNotFound},
			{"unknown booking, impossible move", dispatch.StatusSearching, func(dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: "bk_nope", From: []dispatch.Status{dispatch.StatusCompleted}, To: dispatch.StatusCancelled}
			}, dispatch.ErrNotFound},
			{"assigned without driver", dispatch.StatusSearching, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{b.Status}, To: dispatch.StatusAssigned}
			}, dispatch.ErrInvalid},
			{"unknown status", dispatch.StatusSearching, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{b.Status}, To: "teleported"}
			}, dispatch.ErrInvalid},
			{"active state cleared of its driver", dispatch.StatusAssigned, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{b.Status}, To: dispatch.StatusArrived, ClearDriver: true}
			}, dispatch.ErrInvalid},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := bookingIn(t, e, tc.status)
				before := e.snap(t, b.ID)
				_, err := e.db.Transition(ctx, tc.change(b))
				if !errors.Is(err, tc.want) {
					t.Fatalf("Transition: got %v, want %v", err, tc.want)
				}
				if after := e.snap(t, b.ID); !reflect.DeepEqual(after, before) {
					t.Errorf("refused change changed the booking:\ngot  %+v\nwant %+v", after, before)
				}
			})
		}

		t.Run("empty From means any state the machine allows", func(t *testing.T) {
			b := bookingIn(t, e, dispatch.StatusArrived)
			got, err := e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, To: dispatch.StatusCancelled, Version: b.Version,
				Driver: b.Driver, Reason: "customer changed plans"})
			if err != nil || got.Status != dispatch.StatusCancelled {
				t.Fatalf("got %s, %v; want cancelled, nil", got.Status, err)
			}
		})
	})
}

func TestOneActiveBookingPerDriver(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		driver := dispatch.DriverRef{ID: id("dr"), Name: "Imran", Rating: 4.7}
		assign := func(b dispatch.Booking) (dispatch.Booking, error) {
			return e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, From: []dispatch.Status{dispatch.StatusSearching},
				To: dispatch.StatusAssigned, Driver: &driver, Actor: "dispatcher:x"})
		}
		first, second := create(t, e, false), create(t, e, false)
		if _, err := assign(first); err != nil {
			t.Fatal(err)
		}
		before := e.snap(t, second.ID)
		if _, err := assign(second); !errors.Is(err, dispatch.ErrConflict) {
			t.Fatalf("assigning a busy driver: got %v, want ErrConflict", err)
		}
		if after := e.snap(t, second.ID); !reflect.DeepEqual(after, before) {
			t.Errorf("refused assignment changed the booking:\ngot  %+v\nwant %+v", after, before)
		}
		got, err := e.db.ActiveBookingOf(ctx, driver.ID)
		if err != nil || got.ID != first.ID {
			t.Errorf("ActiveBookingOf: got %s, %v; want %s, nil", got.ID, err, first.ID)
		}
		// The driver is free again once the first booking is over.
		if _, err := e.db.Transition(ctx, dispatch.Change{BookingID: first.ID, To: dispatch.StatusCancelled, Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.ActiveBookingOf(ctx, driver.ID); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("ActiveBookingOf a free driver: got %v, want ErrNotFound", err)
		}
		if _, err := assign(second); err != nil {
			t.Errorf("assigning the freed driver: got %v, want nil", err)
		}
	})
}

func TestListings(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		customer := id("cu")
		var mine []string
		for i := 0; i < 3; i++ {
			nb := newBooking(customer, false)
			nb.CreatedAt = t0.Add(time.Duration(i) * time.Second)
			b, _, err := e.db.CreateBooking(ctx, nb)
			if err != nil {
				t.Fatal(err)
			}
			mine = append(mine, b.ID)
		}
		due := newBooking(id("cu"), true)
		due.StartAt = t0.Add(time.Hour)
		later := newBooking(id("cu"), true)
		later.StartAt = t0.Add(5 * time.Hour)
		for _, nb := range []dispatch.NewBooking{later, due} {
			if _, _, err := e.db.CreateBooking(ctx, nb); err != nil {
				t.Fatal(err)
			}
		}
		assigned := bookingIn(t, e, dispatch.StatusAssigned)

		ids := func(bs []dispatch.Booking, err error) []string {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
			out := []string{}
			for _, b := range bs {
				out = append(out, b.ID)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			got  []string
			want []string
		}{
			{"customer's, newest first", ids(e.db.Bookings(ctx, dispatch.BookingFilter{CustomerID: customer})), []string{mine[2], mine[1], mine[0]}},
			{"limit", ids(e.db.Bookings(ctx, dispatch.BookingFilter{CustomerID: customer, Limit: 2})), []string{mine[2], mine[1]}},
			{"by status", ids(e.db.Bookings(ctx, dispatch.BookingFilter{Status: dispatch.StatusAssigned})), []string{assigned.ID}},
			{"by driver", ids(e.db.Bookings(ctx, dispatch.BookingFilter{DriverID: assigned.DriverID()})), []string{assigned.ID}},
			{"searching, oldest first", ids(e.db.SearchingBookings(ctx, 10)), []string{mine[0], mine[1], mine[2]}},
			{"due scheduled", ids(e.db.DueScheduled(ctx, t0.Add(2*time.Hour), 10)), []string{due.ID}},
			{"all scheduled by start", ids(e.db.DueScheduled(ctx, t0.Add(24*time.Hour), 10)), []string{due.ID, later.ID}},
		} {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("%s: got %v, want %v", tc.name, tc.got, tc.want)
			}
		}
	})
}

func TestInvariantViolationsSeesForgedRows(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		a, b, c := create(t, e, false), create(t, e, false), create(t, e, false)
		// Behind the store's back: two active bookings for one driver with overlapping blocks,
		// one active without a driver.
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"UPDATE bookings SET status = 'assigned', driver_id = 'dr_forged' WHERE id IN (?, ?)", []any{a.ID, b.ID}},
			{"INSERT INTO driver_blocks (booking_id, driver_id, start_at, end_at) VALUES (?, 'dr_forged', ?, ?), (?, 'dr_forged', ?, ?)",
				[]any{a.ID, t0, t0.Add(2 * time.Hour), b.ID, t0.Add(time.Hour), t0.Add(3 * time.Hour)}},
			{"UPDATE bookings SET status = 'in_progress' WHERE id = ?", []any{c.ID}},
		} {
			if _, err := e.raw.Exec(q.sql, q.args...); err != nil {
				t.Fatal(err)
			}
		}
		n, err := e.db.InvariantViolations(ctx)
		if err != nil || n != 2 {
			t.Errorf("InvariantViolations: got %d, %v; want 2, nil", n, err)
		}
		if _, err := e.raw.Exec("UPDATE bookings SET status = 'cancelled' WHERE id IN (?, ?, ?)", a.ID, b.ID, c.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.raw.Exec("DELETE FROM driver_blocks WHERE driver_id = 'dr_forged'"); err != nil {
			t.Fatal(err)
		}
	})
}

func TestDrivers(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		p := dispatch.DriverProfile{ID: id("dr"), Name: "Suresh", Rating: 4.2, Transmissions: []dispatch.Transmission{dispatch.Manual},
			Phone: "+919800000001", LicenceNo: "KA0120190001234", LicenceExpires: "2031-06-30", Cities: []string{"bengaluru"}}
		if _, err := e.db.Driver(ctx, p.ID); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("Driver(unknown): got %v, want ErrNotFound", err)
		}
		for _, change := range []func(*dispatch.DriverProfile){
			func(*dispatch.DriverProfile) {},
			func(p *dispatch.DriverProfile) {
				p.Rating = 4.6
				p.Transmissions = append(p.Transmissions, dispatch.Automatic)
				p.Verified, p.Suspended = true, true
				p.Cities = append(p.Cities, "mysuru")
			},
		} {
			change(&p)
			if err := e.db.UpsertDriver(ctx, p); err != nil {
				t.Fatal(err)
			}
			got, err := e.db.Driver(ctx, p.ID)
			if err != nil || !reflect.DeepEqual(got, p) {
				t.Errorf("Driver: got %+v, %v; want %+v, nil", got, err, p)
			}
		}
		if err := e.db.UpsertDriver(ctx, dispatch.DriverProfile{}); !errors.Is(err, dispatch.ErrInvalid) {
			t.Errorf("UpsertDriver without id: got %v, want ErrInvalid", err)
		}
	})
}

func TestDriversWhoCancelled(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		b := create(t, e, false)
		var quitters []string
		for i := 0; i < 2; i++ {
			d := dispatch.DriverRef{ID: id("dr"), Name: "Deepak"}
			for _, c := range []dispatch.Change{
				{BookingID: b.ID, From: []dispatch.Status{dispatch.StatusSearching}, To: dispatch.StatusAssigned, Driver: &d, Actor: "driver:" + d.ID},
				{BookingID: b.ID, From: []dispatch.Status{dispatch.StatusAssigned, dispatch.StatusArrived}, To: dispatch.StatusSearching,
					Driver: &dispatch.DriverRef{ID: d.ID}, ClearDriver: true, Actor: "driver:" + d.ID, Reason: "car broke down"},
			} {
				if _, err := e.db.Transition(ctx, c); err != nil {
					t.Fatal(err)
				}
			}
			quitters = append(quitters, d.ID)
		}
		if quitters[0] > quitters[1] {
			quitters[0], quitters[1] = quitters[1], quitters[0]
		}
		got, err := e.db.DriversWhoCancelled(ctx, b.ID)
		if err != nil || !reflect.DeepEqual(got, quitters) {
			t.Errorf("DriversWhoCancelled: got %v, %v; want %v, nil", got, err, quitters)
		}
	})
}
