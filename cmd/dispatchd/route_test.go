package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestTripRoute: while a trip is under way the gateway keeps the driver's sampled trail; ending
// the trip records its route and distance with the completion, shown on the booking and at
// GET /v1/bookings/{id}/route to its customer, its driver and dispatchers only.
func TestTripRoute(t *testing.T) {
	s := startServer(t, "real", nil)
	suffix := fmt.Sprint(time.Now().UnixNano())
	driverID, customerID := "drv-route-"+suffix, "cust-route-"+suffix
	dtok, ctok := sign(t, "driver", driverID), sign(t, "customer", customerID)
	staff, stranger := sign(t, "dispatcher", "ops-"+suffix), sign(t, "customer", "other-"+suffix)
	lat, lng := 12.80+float64(time.Now().UnixNano()%1000)/20000, 77.45

	// The driver stays offline for the matcher; a dispatcher assigns it by hand.
	s.registerDriver(t, driverID)
	drv := s.mustDial(t, dtok)
	drv.expect("hello", 5*time.Second, nil)
	var b booking
	if st := s.rest(t, "POST", "/v1/bookings", ctok, map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng},
		"hours": 2, "car": map[string]string{"transmission": "manual"}}, map[string]string{"Idempotency-Key": "route-" + suffix}, &b); st != http.StatusCreated {
		t.Fatalf("POST /v1/bookings: got %d, want 201", st)
	}
	if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/assign", staff, map[string]string{"driver_id": driverID}, nil, nil); st != 200 {
		t.Fatalf("assign: got %d, want 200", st)
	}
	if code := drv.reply(drv.send("trip.arrive", map[string]string{"booking_id": b.ID})); code != "" {
		t.Fatalf("trip.arrive: got %q, want ack", code)
	}
	var mine booking
	s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &mine)
	if code := drv.reply(drv.send("trip.start", map[string]string{"booking_id": b.ID, "otp": mine.OTP})); code != "" {
		t.Fatalf("trip.start: got %q, want ack", code)
	}
	drv.expect("booking", 5*time.Second, func(d json.RawMessage) bool { return field(d, "status") == "in_progress" })
	if st := s.rest(t, "GET", "/v1/bookings/"+b.ID+"/route", ctok, nil, nil, nil); st != http.StatusNotFound {
		t.Errorf("route of a trip under way: got %d, want 404", st)
	}

	// Eight points 120 m apart, 10 s apart (43 km/h): each is kept.
	start := time.Now().UnixMilli()
	for i := 1; i <= 8; i++ {
		drv.send("location", map[string]any{"lat": lat + float64(i)*120/111320, "lng": lng, "acc": 8, "ts": start + int64(i)*10_000})
		time.Sleep(30 * time.Millisecond)
	}
	// Frames are handled in order: once trip.end is answered, every point has been taken.
	if code := drv.reply(drv.send("trip.end", map[string]string{"booking_id": b.ID})); code != "" {
		t.Fatalf("trip.end: got %q, want ack", code)
	}

	var done struct {
		Status      string `json:"status"`
		DistanceM   *int   `json:"distance_m"`
		RoutePoints *int   `json:"route_points"`
	}
	s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &done)
	if done.Status != "completed" || done.RoutePoints == nil || *done.RoutePoints != 8 || done.DistanceM == nil ||
		*done.DistanceM < 830 || *done.DistanceM > 850 {
		t.Fatalf("completed booking: got %s, route_points %v, distance_m %v; want completed, 8, about 840", done.Status, done.RoutePoints, done.DistanceM)
	}
	for who, tok := range map[string]string{"customer": ctok, "driver": dtok, "dispatcher": staff} {
		var r struct {
			BookingID   string    `json:"booking_id"`
			DriverID    string    `json:"driver_id"`
			DistanceM   int       `json:"distance_m"`
			RoutePoints int       `json:"route_points"`
			Polyline    string    `json:"polyline"`
			StartedAt   time.Time `json:"started_at"`
			EndedAt     time.Time `json:"ended_at"`
			Fare        struct {
				TotalPaise int64 `json:"total_paise"`
			} `json:"fare"`
			Route []struct{ Lat, Lng float64 } `json:"route"`
		}
		if st := s.rest(t, "GET", "/v1/bookings/"+b.ID+"/route", tok, nil, nil, &r); st != 200 {
			t.Errorf("route as its %s: got %d, want 200", who, st)
			continue
		}
		if r.BookingID != b.ID || r.DriverID != driverID || r.DistanceM != *done.DistanceM || r.RoutePoints != 8 ||
			len(r.Route) != 8 || r.Polyline == "" || !r.EndedAt.After(r.StartedAt) || r.Fare.TotalPaise <= 0 {
			t.Errorf("route as its %s: got %+v, want the trip's 8 points, its distance, times and fare", who, r)
		} else if got := r.Route[7].Lat; got < lat+960/111320.0-1e-5 || got > lat+960/111320.0+1e-5 {
			t.Errorf("route as its %s: last point at lat %f, want %f", who, got, lat+960/111320.0)
		}
	}
	if st := s.rest(t, "GET", "/v1/bookings/"+b.ID+"/route", stranger, nil, nil, nil); st != http.StatusNotFound {
		t.Errorf("route as another customer: got %d, want 404", st)
	}
}
