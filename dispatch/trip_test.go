package dispatch_test

import (
	"context"
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

func TestPolyline(t *testing.T) {
	// The worked example of Google's "Encoded Polyline Algorithm Format".
	pts := []dispatch.Point{{Lat: 38.5, Lng: -120.2}, {Lat: 40.7, Lng: -120.95}, {Lat: 43.252, Lng: -126.453}}
	const want = "_p~iF~ps|U_ulLnnqC_mqNvxq`@"
	if got := dispatch.EncodePolyline(pts); got != want {
		t.Errorf("EncodePolyline: got %q, want %q", got, want)
	}
	back, err := dispatch.DecodePolyline(want)
	wantBack := []dispatch.LatLng{{Lat: 38.5, Lng: -120.2}, {Lat: 40.7, Lng: -120.95}, {Lat: 43.252, Lng: -126.453}}
	if err != nil || !reflect.DeepEqual(back, wantBack) {
		t.Errorf("DecodePolyline: got %v, %v; want %v, nil", back, err, wantBack)
	}
	if got, err := dispatch.DecodePolyline(""); err != nil || len(got) != 0 {
		t.Errorf("DecodePolyline(\"\"): got %v, %v; want no points", got, err)
	}
	for _, bad := range []string{"_p~iF~ps|U_", "_p~iF", " ", "\x7f?"} {
		if _, err := dispatch.DecodePolyline(bad); !errors.Is(err, dispatch.ErrInvalid) {
			t.Errorf("DecodePolyline(%q): got %v, want ErrInvalid", bad, err)
		}
	}
	// Round trip of a city drive to about a metre.
	var drive []dispatch.Point
	for i := 0; i < 500; i++ {
		drive = append(drive, dispatch.Point{Lat: 12.9716 + 0.00031*float64(i%37), Lng: 77.5946 - 0.00017*float64(i)})
	}
	got, err := dispatch.DecodePolyline(dispatch.EncodePolyline(drive))
	if err != nil || len(got) != len(drive) {
		t.Fatalf("round trip: got %d points, %v; want %d", len(got), err, len(drive))
	}
	for i, p := range got {
		if math.Abs(p.Lat-drive[i].Lat) > 0.5e-5 || math.Abs(p.Lng-drive[i].Lng) > 0.5e-5 {
			t.Fatalf("point %d: got %v, want %v within 0.5e-5 degrees", i, p, drive[i])
		}
	}
}

func TestNewRoute(t *testing.T) {
	for _, tc := range []struct {
		name            string
		pts             []dispatch.Point
		points, distMin int
		distMax         int
	}{
		{"none", nil, 0, 0, 0},
		{"one", []dispatch.Point{{Lat: baseLat, Lng: baseLng}}, 1, 0, 0},
		// 1 km north then 1 km back: 2 km along, though it ends where it began.
		{"there and back", []dispatch.Point{{Lat: baseLat, Lng: baseLng}, {Lat: north(1000), Lng: baseLng}, {Lat: baseLat, Lng: baseLng}}, 3, 1995, 2005},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dispatch.NewRoute(tc.pts)
			if r.Points != tc.points || r.DistanceM < tc.distMin || r.DistanceM > tc.distMax {
				t.Errorf("got %d points %d m, want %d points %d to %d m", r.Points, r.DistanceM, tc.points, tc.distMin, tc.distMax)
			}
		})
	}
}

// TestEndRecordsRoute: ending a trip reads the driver's trail, records the route with the
// completion, and forgets the trail; the route is then readable by the booking's people only.
func TestEndRecordsRoute(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	svc := dispatch.NewService(r.db, r.index, r.notes, dispatch.ServiceOptions{Now: r.clock.Now, Trails: r.index})
	staff := dispatch.Actor{ID: "ops", Role: "dispatcher"}
	customer := dispatch.Actor{ID: "c-route", Role: "customer"}
	driver := driverActor("d-route")
	r.driver(driver.ID, north(300), baseLng)
	b := r.book(customer.ID, baseLat, baseLng, dispatch.Manual, nil)
	if _, err := svc.Assign(ctx, staff, b.ID, driver.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Arrive(ctx, driver, b.ID); err != nil {
		t.Fatal(err)
	}
	// The customer sees the OTP once a driver is assigned, and tells it to the driver.
	seen, err := svc.Booking(ctx, customer, b.ID)
	if err != nil || len(seen.OTP) != 6 || b.OTP != "" {
		t.Fatalf("customer's OTP: got %q at booking, %q once assigned (%v); want none, then 6 digits", b.OTP, seen.OTP, err)
	}
	if _, err := svc.Start(ctx, driver, b.ID, seen.OTP); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Route(ctx, customer, b.ID); !errors.Is(err, dispatch.ErrNotFound) {
		t.Errorf("Route of a trip under way: got %v, want ErrNotFound", err)
	}
	// The gateway's sample of the trip: 2 km north in 200 m steps, a minute apart.
	start := r.clock.Now()
	for i := 0; i <= 10; i++ {
		p := dispatch.Point{Lat: north(float64(i) * 200), Lng: baseLng, TS: start.Add(time.Duration(i) * time.Minute).UnixMilli()}
		if err := r.index.AppendTrail(ctx, b.ID, p); err != nil {
			t.Fatal(err)
		}
	}
	r.clock.Add(2*time.Hour + 5*time.Minute)
	done, err := svc.End(ctx, driver, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.Status != dispatch.StatusCompleted || done.DistanceM == nil || *done.DistanceM < 1990 || *done.DistanceM > 2010 ||
		done.RoutePoints == nil || *done.RoutePoints != 11 {
		t.Fatalf("completed booking: got %s, distance %v, points %v; want completed, about 2000 m, 11 points", done.Status, done.DistanceM, done.RoutePoints)
	}
	if left, err := r.index.Trail(ctx, b.ID); err != nil || len(left) != 0 {
		t.Errorf("trail after the trip is recorded: got %d points, %v; want none", len(left), err)
	}

	for _, a := range []dispatch.Actor{customer, driver, staff} {
		trip, err := svc.Route(ctx, a, b.ID)
		if err != nil || trip.Points != 11 || trip.DistanceM != *done.DistanceM || trip.DriverID != driver.ID ||
			trip.CustomerID != customer.ID || !trip.EndedAt.Equal(*done.EndedAt) || !reflect.DeepEqual(trip.Fare, done.Fare) {
			t.Errorf("Route as %s: got %+v, %v; want the recorded trip", a, trip, err)
			continue
		}
		path, err := dispatch.DecodePolyline(trip.Polyline)
		if err != nil || len(path) != 11 || math.Abs(path[10].Lat-north(2000)) > 1e-5 {
			t.Errorf("Route as %s: decoded %v, %v; want 11 points ending 2 km north", a, path, err)
		}
	}
	for _, a := range []dispatch.Actor{{ID: "c-other", Role: "customer"}, driverActor("d-other")} {
		if _, err := svc.Route(ctx, a, b.ID); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("Route as %s: got %v, want ErrNotFound", a, err)
		}
	}
}
