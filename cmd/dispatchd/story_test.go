package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestBookingStory plays the whole story of one booking, as the apps would, on real Redis and
// MariaDB and on the embedded default.
func TestBookingStory(t *testing.T) {
	for _, backend := range []string{"real", "embedded"} {
		t.Run(backend, func(t *testing.T) {
			s := startServer(t, backend, nil)
			suffix := fmt.Sprint(time.Now().UnixNano())
			driverID, customerID := "drv-"+suffix, "cust-"+suffix
			dtok, ctok := sign(t, "driver", driverID), sign(t, "customer", customerID)

			// Far from everyone else's test drivers: a spot of its own.
			lat, lng := 12.90+float64(time.Now().UnixNano()%1000)/20000, 77.55

			s.registerDriver(t, driverID)
			drv := s.mustDial(t, dtok)
			hello := drv.expect("hello", 5*time.Second, nil)
			if got := field(hello, "driver_id"); got != driverID {
				t.Fatalf("hello driver_id: got %q, want %q", got, driverID)
			}
			if code := drv.reply(drv.send("status", map[string]string{"state": "online"})); code != "" {
				t.Fatalf("status online: got error %q, want ack", code)
			}
			drv.send("location", point(lat+0.0027, lng)) // about 300 m north of the pickup

			// The customer books 300 m away.
			body := map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng, "address": "MG Road"},
				"hours": 3, "car": map[string]string{"transmission": "manual"}}
			key := map[string]string{"Idempotency-Key": "story-" + suffix}
			var b booking
			booked := time.Now()
			if st := s.rest(t, "POST", "/v1/bookings", ctok, body, key, &b); st != http.StatusCreated {
				t.Fatalf("POST /v1/bookings: got %d, want 201", st)
			}
			if b.Status != "searching" || b.OTP != "" {
				t.Fatalf("new booking: got status %q otp %q, want searching without an OTP (it comes once assigned)", b.Status, b.OTP)
			}
			var again booking
			if st := s.rest(t, "POST", "/v1/bookings", ctok, body, key, &again); st/100 != 2 || again.ID != b.ID {
				t.Fatalf("same Idempotency-Key: got %d %q, want the same booking %q", st, again.ID, b.ID)
			}

			cust := s.mustDial(t, ctok)
			if code := cust.reply(cust.send("watch", map[string]string{"booking_id": b.ID})); code != "" {
				t.Fatalf("watch own booking: got %q, want ack", code)
			}

			// The driver is offered the booking within 2 s and accepts.
			offer := drv.expect("offer", 2*time.Second+500*time.Millisecond, func(d json.RawMessage) bool { return field(d, "booking_id") == b.ID })
			if waited := time.Since(booked); waited > 2*time.Second {
				t.Fatalf("offer after %s, want within 2 s", waited)
			}
			var o struct {
				OfferID   string    `json:"offer_id"`
				DistanceM int       `json:"distance_m"`
				ExpiresAt time.Time `json:"expires_at"`
			}
			_ = json.Unmarshal(offer, &o)
			if o.DistanceM < 250 || o.DistanceM > 350 {
				t.Errorf("offer distance_m: got %d, want about 300", o.DistanceM)
			}
			if code := drv.reply(drv.send("offer.accept", map[string]string{"offer_id": o.OfferID})); code != "" {
				t.Fatalf("offer.accept: got %q, want ack", code)
			}
			assigned := cust.expect("booking", 5*time.Second, func(d json.RawMessage) bool { return field(d, "status") == "assigned" })
			var ab booking
			_ = json.Unmarshal(assigned, &ab)
			if ab.Driver == nil || ab.Driver.ID != driverID || ab.Driver.Name != "Driver "+driverID {
				t.Fatalf("assigned booking driver: got %+v, want %s with its name", ab.Driver, driverID)
			}
			if len(ab.OTP) != 6 {
				t.Fatalf("assigned booking to its customer: got otp %q, want 6 digits", ab.OTP)
			}
			b.OTP = ab.OTP
			// Accepting twice is harmless.
			if code := drv.reply(drv.send("offer.accept", map[string]string{"offer_id": o.OfferID})); code != "" {
				t.Fatalf("second offer.accept: got %q, want a harmless ack", code)
			}

			// The customer watches the driver approach.
			for i := 1; i <= 3; i++ {
				time.Sleep(250 * time.Millisecond)
				drv.send("location", point(lat+0.0027-float64(i)*0.0003, lng)) // 33 m a step: under the 200 km/h bound
			}
			loc := cust.expect("driver.location", 5*time.Second, nil)
			if field(loc, "booking_id") != b.ID || field(loc, "eta_s") == "" {
				t.Fatalf("driver.location: got %s, want this booking with an eta_s", loc)
			}

			// Arrive, a wrong OTP changes nothing, the right one starts, then end.
			if code := drv.reply(drv.send("trip.arrive", map[string]string{"booking_id": b.ID})); code != "" {
				t.Fatalf("trip.arrive: got %q, want ack", code)
			}
			cust.expect("booking", 5*time.Second, func(d json.RawMessage) bool { return field(d, "status") == "arrived" })
			wrong := "000000"
			if b.OTP == wrong {
				wrong = "111111"
			}
			if code := drv.reply(drv.send("trip.start", map[string]string{"booking_id": b.ID, "otp": wrong})); code != "invalid_argument" {
				t.Fatalf("trip.start with a wrong OTP: got %q, want invalid_argument", code)
			}
			var mid booking
			s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &mid)
			if mid.Status != "arrived" {
				t.Fatalf("after a wrong OTP: got status %q, want arrived", mid.Status)
			}
			if code := drv.reply(drv.send("trip.start", map[string]string{"booking_id": b.ID, "otp": b.OTP})); code != "" {
				t.Fatalf("trip.start: got %q, want ack", code)
			}
			cust.expect("booking", 5*time.Second, func(d json.RawMessage) bool { return field(d, "status") == "in_progress" })
			if code := drv.reply(drv.send("trip.end", map[string]string{"booking_id": b.ID})); code != "" {
				t.Fatalf("trip.end: got %q, want ack", code)
			}
			cust.expect("booking", 5*time.Second, func(d json.RawMessage) bool { return field(d, "status") == "completed" })

			var done booking
			if st := s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &done); st != 200 || done.Status != "completed" {
				t.Fatalf("GET booking: got %d %q, want 200 completed", st, done.Status)
			}
			var sum int64
			for _, l := range done.Fare.Lines {
				sum += l.AmountPaise
			}
			if done.Fare.TotalPaise <= 0 || sum != done.Fare.TotalPaise || done.Fare.Currency != "INR" {
				t.Fatalf("final fare: lines add up to %d, total %d %s; want equal, positive, INR", sum, done.Fare.TotalPaise, done.Fare.Currency)
			}
			if backend == "real" {
				if st := sqlStatus(t, s.dsn, b.ID); st != "completed" {
					t.Fatalf("booking in MySQL: got %q, want completed", st)
				}
				if n := invariantViolations(t, s.dsn); n != 0 {
					t.Fatalf("invariant violations: got %d, want 0", n)
				}
			}
		})
	}
}
