//go:build !prod

package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/store"
)

// aRoute is a short drive north along MG Road, as the gateway would have sampled it.
func aRoute() dispatch.Route {
	var pts []dispatch.Point
	for i := 0; i < 12; i++ {
		pts = append(pts, dispatch.Point{Lat: 12.9716 + float64(i)*0.0006, Lng: 77.5946, TS: t0.UnixMilli() + int64(i)*10_000})
	}
	return dispatch.NewRoute(pts)
}

func completion(b dispatch.Booking, at time.Time, route *dispatch.Route) dispatch.Change {
	final := dispatch.DefaultTariff().Final(*b.StartedAt, at, b.Hours, 1)
	return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{dispatch.StatusInProgress}, To: dispatch.StatusCompleted,
		Version: b.Version, Driver: &dispatch.DriverRef{ID: b.DriverID()}, Fare: &final, Route: route,
		Actor: "driver:" + b.DriverID(), At: at}
}

// TestCompletionRecordsTrip: the trip (route, distance, times, final fare) is written with the
// completion, and the booking carries the distance and point count, as stored and as published.
func TestCompletionRecordsTrip(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		b := bookingIn(t, e, dispatch.StatusInProgress)
		if _, err := e.db.Trip(ctx, b.ID); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("Trip of a trip under way: got %v, want ErrNotFound", err)
		}
		route := aRoute()
		end := b.StartedAt.Add(3*time.Hour + 25*time.Minute)
		c := completion(b, end, &route)
		got, err := e.db.Transition(ctx, c)
		if err != nil {
			t.Fatal(err)
		}
		if got.DistanceM == nil || *got.DistanceM != route.DistanceM || got.RoutePoints == nil || *got.RoutePoints != route.Points {
			t.Errorf("completed booking: got distance_m %v route_points %v, want %d and %d", got.DistanceM, got.RoutePoints, route.DistanceM, route.Points)
		}
		want := dispatch.Trip{BookingID: b.ID, DriverID: b.DriverID(), CustomerID: b.CustomerID, StartedAt: *b.StartedAt,
			EndedAt: end, Route: route, Fare: *c.Fare}
		trip, err := e.db.Trip(ctx, b.ID)
		if err != nil || !reflect.DeepEqual(trip, want) {
			t.Errorf("Trip:\ngot  %+v, %v\nwant %+v, nil", trip, err, want)
		}
		if route.DistanceM < 700 || route.DistanceM > 750 {
			t.Errorf("route distance: got %d m, want about 734 (11 steps of 0.0006 degrees of latitude)", route.DistanceM)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM trips WHERE booking_id = ? AND fare_paise = ?", b.ID, c.Fare.TotalPaise); n != 1 {
			t.Errorf("trips rows with the final fare: got %d, want 1", n)
		}

		// The event of the completion carries the booking's version and its new fields.
		var payload string
		if err := e.raw.QueryRow("SELECT payload FROM outbox WHERE booking_id = ? ORDER BY id DESC LIMIT 1", b.ID).Scan(&payload); err != nil {
			t.Fatal(err)
		}
		var ev dispatch.Event
		if err := json.Unmarshal([]byte(payload), &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Version != got.Version || ev.Booking.DistanceM == nil || *ev.Booking.DistanceM != route.DistanceM {
			t.Errorf("completion event: got version %d distance %v, want %d and %d", ev.Version, ev.Booking.DistanceM, got.Version, route.DistanceM)
		}

		// Completion without a route still records the trip, with an empty route.
		b2 := bookingIn(t, e, dispatch.StatusInProgress)
		got2, err := e.db.Transition(ctx, completion(b2, b2.StartedAt.Add(time.Hour), nil))
		if err != nil {
			t.Fatal(err)
		}
		trip2, err := e.db.Trip(ctx, b2.ID)
		if err != nil || trip2.Points != 0 || trip2.Polyline != "" || *got2.DistanceM != 0 {
			t.Errorf("trip without a route: got %+v, %v; want an empty route", trip2, err)
		}
	})
}

// TestEventVersions: every event carries the version the booking reached with its change.
func TestEventVersions(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		b := bookingIn(t, e, dispatch.StatusCompleted)
		rows, err := e.raw.Query("SELECT payload FROM outbox WHERE booking_id = ? ORDER BY id", b.ID)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var got []int64
		for rows.Next() {
			var p string
			var ev dispatch.Event
			if err := rows.Scan(&p); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte(p), &ev); err != nil {
				t.Fatal(err)
			}
			got = append(got, ev.Version)
		}
		if want := []int64{1, 2, 3, 4, 5}; !reflect.DeepEqual(got, want) {
			t.Errorf("event versions of created, assigned, arrived, in_progress, completed: got %v, want %v", got, want)
		}
	})
}

func TestRouteRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		route := aRoute()
		for _, tc := range []struct {
			name   string
			status dispatch.Status
			change func(b dispatch.Booking) dispatch.Change
		}{
			{"route on arrival", dispatch.StatusAssigned, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{b.Status}, To: dispatch.StatusArrived, Route: &route}
			}},
			{"route on cancellation", dispatch.StatusInProgress, func(b dispatch.Booking) dispatch.Change {
				return dispatch.Change{BookingID: b.ID, From: []dispatch.Status{b.Status}, To: dispatch.StatusCancelled, Route: &route}
			}},
			{"negative distance", dispatch.StatusInProgress, func(b dispatch.Booking) dispatch.Change {
				r := route
				r.DistanceM = -1
				return completion(b, b.StartedAt.Add(time.Hour), &r)
			}},
			{"route over 1 MiB", dispatch.StatusInProgress, func(b dispatch.Booking) dispatch.Change {
				r := route
				r.Polyline = string(make([]byte, 1<<20+1))
				return completion(b, b.StartedAt.Add(time.Hour), &r)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				b := bookingIn(t, e, tc.status)
				before := e.snap(t, b.ID)
				if _, err := e.db.Transition(ctx, tc.change(b)); !errors.Is(err, dispatch.ErrInvalid) {
					t.Fatalf("Transition: got %v, want ErrInvalid", err)
				}
				if after := e.snap(t, b.ID); !reflect.DeepEqual(after, before) {
					t.Errorf("refused change changed the booking:\ngot  %+v\nwant %+v", after, before)
				}
			})
		}
	})
}

// TestCompleteTrips: a batch applies each completion under the conditions of Transition, with its
// own audit row, event and trip; refused ones are refused alone and change nothing.
func TestCompleteTrips(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		route := aRoute()
		var cs []dispatch.Change
		var good []dispatch.Booking
		for i := 0; i < 5; i++ {
			b := bookingIn(t, e, dispatch.StatusInProgress)
			good = append(good, b)
			cs = append(cs, completion(b, b.StartedAt.Add(time.Duration(i+1)*time.Hour), &route))
		}
		arrived := bookingIn(t, e, dispatch.StatusArrived)
		stale := bookingIn(t, e, dispatch.StatusInProgress)
		other := bookingIn(t, e, dispatch.StatusInProgress)
		bad := []struct {
			name string
			c    dispatch.Change
			want error
		}{
			{"not in progress", dispatch.Change{BookingID: arrived.ID, From: []dispatch.Status{dispatch.StatusInProgress},
				To: dispatch.StatusCompleted, At: t0.Add(time.Hour)}, dispatch.ErrConflict},
			{"stale version", func() dispatch.Change {
				c := completion(stale, stale.StartedAt.Add(time.Hour), nil)
				c.Version--
				return c
			}(), dispatch.ErrConflict},
			{"another driver", func() dispatch.Change {
				c := completion(other, other.StartedAt.Add(time.Hour), nil)
				c.Driver = &dispatch.DriverRef{ID: "dr_other"}
				return c
			}(), dispatch.ErrConflict},
			{"unknown booking", dispatch.Change{BookingID: "bk_nope", To: dispatch.StatusCompleted}, dispatch.ErrNotFound},
			{"twice in one batch", cs[0], dispatch.ErrConflict},
			{"not a completion", dispatch.Change{BookingID: stale.ID, To: dispatch.StatusCancelled}, dispatch.ErrInvalid},
		}
		before := map[string]snapshot{}
		for _, b := range []dispatch.Booking{arrived, stale, other} {
			before[b.ID] = e.snap(t, b.ID)
		}
		all := append([]dispatch.Change{}, cs...)
		for _, tc := range bad {
			all = append(all, tc.c)
		}
		trips, audit, outbox := e.count(t, "SELECT COUNT(*) FROM trips"), e.count(t, "SELECT COUNT(*) FROM booking_events"), e.count(t, "SELECT COUNT(*) FROM outbox")

		bs, refusals, err := e.db.CompleteTrips(ctx, all)
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) != len(all) || len(refusals) != len(all) {
			t.Fatalf("results: got %d bookings and %d refusals, want %d each", len(bs), len(refusals), len(all))
		}
		for i, b := range good {
			if refusals[i] != nil {
				t.Errorf("completion %d: got %v, want nil", i, refusals[i])
				continue
			}
			stored, err := e.db.Booking(ctx, b.ID)
			if err != nil || !reflect.DeepEqual(stored, bs[i]) || stored.Status != dispatch.StatusCompleted ||
				stored.Version != b.Version+1 || !stored.EndedAt.Equal(cs[i].At) || !reflect.DeepEqual(stored.Fare, *cs[i].Fare) {
				t.Errorf("completed booking %d:\ngot  %+v\nwant it stored as returned %+v, completed at %s", i, stored, bs[i], cs[i].At)
			}
			if n := e.count(t, `SELECT COUNT(*) FROM booking_events WHERE booking_id = ? AND from_status = 'in_progress'
				AND to_status = 'completed' AND version = ?`, b.ID, b.Version+1); n != 1 {
				t.Errorf("audit row of completion %d: got %d, want 1", i, n)
			}
			if n := e.count(t, "SELECT COUNT(*) FROM driver_blocks WHERE booking_id = ?", b.ID); n != 0 {
				t.Errorf("driver_blocks rows of completed booking %d: got %d, want 0", i, n)
			}
			if tr, err := e.db.Trip(ctx, b.ID); err != nil || tr.Route != route || !tr.EndedAt.Equal(cs[i].At) {
				t.Errorf("trip %d: got %+v, %v; want the route, ended at %s", i, tr, err, cs[i].At)
			}
		}
		for j, tc := range bad {
			i := len(cs) + j
			if !errors.Is(refusals[i], tc.want) || !reflect.DeepEqual(bs[i], dispatch.Booking{}) {
				t.Errorf("%s: got %v (booking %q), want %v and no booking", tc.name, refusals[i], bs[i].ID, tc.want)
			}
		}
		for id, s := range before {
			if after := e.snap(t, id); !reflect.DeepEqual(after, s) {
				t.Errorf("refused completion changed booking %s:\ngot  %+v\nwant %+v", id, after, s)
			}
		}
		for name, c := range map[string][2]int{
			"trips":          {trips, e.count(t, "SELECT COUNT(*) FROM trips")},
			"booking_events": {audit, e.count(t, "SELECT COUNT(*) FROM booking_events")},
			"outbox":         {outbox, e.count(t, "SELECT COUNT(*) FROM outbox")},
		} {
			if c[1]-c[0] != len(good) {
				t.Errorf("%s rows added: got %d, want %d (one per completion)", name, c[1]-c[0], len(good))
			}
		}

		if bs, refusals, err := e.db.CompleteTrips(ctx, nil); err != nil || len(bs) != 0 || len(refusals) != 0 {
			t.Errorf("CompleteTrips(nil): got %d, %d, %v; want nothing", len(bs), len(refusals), err)
		}
	})
}

// TestGroupedCompletions: completions asked for at once through Transition are committed in
// groups, each still conditional: of two drivers' apps racing to end the same trip, one wins.
func TestGroupedCompletions(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		const n = 30
		var bs []dispatch.Booking
		for i := 0; i < n; i++ {
			bs = append(bs, bookingIn(t, e, dispatch.StatusInProgress))
		}
		route := aRoute()
		type outcome struct {
			id  string
			err error
		}
		out := make(chan outcome, 2*n)
		for _, b := range bs {
			for range 2 {
				go func() {
					_, err := e.db.Transition(ctx, completion(b, b.StartedAt.Add(time.Hour), &route))
					out <- outcome{b.ID, err}
				}()
			}
		}
		wins := map[string]int{}
		for range 2 * n {
			o := <-out
			switch {
			case o.err == nil:
				wins[o.id]++
			case !errors.Is(o.err, dispatch.ErrConflict):
				t.Errorf("completion of %s: got %v, want nil or ErrConflict", o.id, o.err)
			}
		}
		for _, b := range bs {
			if wins[b.ID] != 1 {
				t.Errorf("booking %s: completed %d times, want once", b.ID, wins[b.ID])
			}
		}
		for _, q := range []string{"SELECT COUNT(*) FROM trips", "SELECT COUNT(*) FROM booking_events WHERE to_status = 'completed'",
			"SELECT COUNT(*) FROM outbox WHERE payload LIKE '%\"status\":\"completed\"%'"} {
			if got := e.count(t, q); got != n {
				t.Errorf("%s: got %d, want %d", q, got, n)
			}
		}

		// A caller that has given up is told so.
		b := bookingIn(t, e, dispatch.StatusInProgress)
		gone, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := e.db.Transition(gone, completion(b, b.StartedAt.Add(time.Hour), nil)); !errors.Is(err, context.Canceled) {
			t.Errorf("completion with a cancelled context: got %v, want context.Canceled", err)
		}

		// Grouping off: each completion alone, the same outcome.
		alone, err := store.Open(ctx, e.dsn, store.Options{CompletionBatch: 1}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		defer alone.Close()
		got, err := alone.Transition(ctx, completion(b, b.StartedAt.Add(time.Hour), &route))
		if err != nil || got.Status != dispatch.StatusCompleted || *got.RoutePoints != route.Points {
			t.Fatalf("ungrouped completion: got %s, %v; want completed with the route", got.Status, err)
		}
		if _, err := alone.Trip(ctx, b.ID); err != nil {
			t.Errorf("trip of the ungrouped completion: %v", err)
		}
		if _, err := alone.Transition(ctx, completion(b, b.StartedAt.Add(time.Hour), &route)); !errors.Is(err, dispatch.ErrConflict) {
			t.Errorf("completing again: got %v, want ErrConflict", err)
		}
	})
}
