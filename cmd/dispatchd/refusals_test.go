package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// TestRefusals: each bad request is refused with the right answer and changes nothing.
func TestRefusals(t *testing.T) {
	s := startServer(t, "real", map[string]string{"DISPATCH_OFFER_TIMEOUT": "1500ms"})
	suffix := fmt.Sprint(time.Now().UnixNano())
	lat, lng := 13.05, 77.70+float64(time.Now().UnixNano()%1000)/50000
	d1, d2, cust := "drv1-"+suffix, "drv2-"+suffix, "cust-"+suffix
	dtok1, dtok2, ctok := sign(t, "driver", d1), sign(t, "driver", d2), sign(t, "customer", cust)
	staff := sign(t, "dispatcher", "ops-"+suffix)

	t.Run("missing or invalid token is 401 before the upgrade", func(t *testing.T) {
		for name, tok := range map[string]string{"missing": "", "garbage": "not-a-jwt", "wrong key": forgeToken(t, "driver", d1)} {
			_, resp, err := s.dial(t, tok)
			if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
				status := 0
				if resp != nil {
					status = resp.StatusCode
				}
				t.Errorf("%s token: got status %d (err %v), want 401", name, status, err)
			}
		}
		if st := s.rest(t, "GET", "/v1/bookings?status=searching", "", nil, nil, nil); st != http.StatusUnauthorized {
			t.Errorf("REST without a token: got %d, want 401", st)
		}
	})

	s.registerDriver(t, d1)
	s.registerDriver(t, d2)
	drv := s.mustDial(t, dtok1)
	drv.expect("hello", 5*time.Second, nil)
	if code := drv.reply(drv.send("status", map[string]string{"state": "online"})); code != "" {
		t.Fatalf("status online: got %q", code)
	}
	drv.send("location", point(lat, lng))
	waitIndexed(t, s, staff, d1, lat)

	t.Run("bad frames get an error and the socket stays usable", func(t *testing.T) {
		drv.sendRaw(`{"type": "status", "data": `) // cut short
		e := drv.expect("error", 3*time.Second, nil)
		if field(e, "ref") != "" || field(e, "code") != "invalid_argument" {
			t.Fatalf("bad JSON: got %s, want invalid_argument without ref", e)
		}
		if code := drv.reply(drv.send("teleport", map[string]any{})); code != "invalid_argument" {
			t.Fatalf("unknown type: got %q, want invalid_argument", code)
		}
		seq := drv.send("location", map[string]any{"lat": 95.0, "lng": lng, "ts": time.Now().UnixMilli()})
		e = drv.expect("error", 3*time.Second, nil)
		if field(e, "ref") != fmt.Sprint(seq) || field(e, "code") != "invalid_argument" {
			t.Fatalf("lat 95: got %s, want invalid_argument for ref %d", e, seq)
		}
		var v struct{ Lat float64 }
		s.rest(t, "GET", "/v1/drivers/"+d1, staff, nil, nil, &v)
		if v.Lat != lat {
			t.Fatalf("position after a point out of range: got lat %v, want %v unchanged", v.Lat, lat)
		}
		if code := drv.reply(drv.send("status", map[string]string{"state": "online"})); code != "" {
			t.Fatalf("socket after bad frames: got %q, want ack", code)
		}
	})

	// A booking next to driver 1; driver 1 lets the first offer expire.
	body := map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": 2, "car": map[string]string{"transmission": "automatic"}}
	var b booking
	if st := s.rest(t, "POST", "/v1/bookings", ctok, body, map[string]string{"Idempotency-Key": "r-" + suffix}, &b); st != http.StatusCreated {
		t.Fatalf("POST booking: got %d", st)
	}
	offer := drv.expect("offer", 3*time.Second, func(d json.RawMessage) bool { return field(d, "booking_id") == b.ID })
	offerID := field(offer, "offer_id")

	t.Run("accepting someone else's offer", func(t *testing.T) {
		other := s.mustDial(t, dtok2)
		other.expect("hello", 5*time.Second, nil)
		if code := other.reply(other.send("offer.accept", map[string]string{"offer_id": offerID})); code != "not_found" {
			t.Fatalf("driver 2 accepting driver 1's offer: got %q, want not_found", code)
		}
		var now booking
		s.rest(t, "GET", "/v1/bookings/"+b.ID, staff, nil, nil, &now)
		if now.Status != "searching" || now.Driver != nil {
			t.Fatalf("after a refused accept: got %q with driver %+v, want searching without one", now.Status, now.Driver)
		}
	})

	t.Run("accepting an expired offer", func(t *testing.T) {
		revoked := drv.expect("offer.revoked", 5*time.Second, func(d json.RawMessage) bool { return field(d, "offer_id") == offerID })
		if field(revoked, "reason") != "expired" {
			t.Errorf("revoked reason: got %q, want expired", field(revoked, "reason"))
		}
		if code := drv.reply(drv.send("offer.accept", map[string]string{"offer_id": offerID})); code != "conflict" {
			t.Fatalf("accepting an expired offer: got %q, want conflict", code)
		}
		var now booking
		s.rest(t, "GET", "/v1/bookings/"+b.ID, staff, nil, nil, &now)
		if now.Status != "searching" {
			t.Fatalf("after accepting an expired offer: got %q, want searching", now.Status)
		}
	})

	t.Run("an action in the wrong state is 409", func(t *testing.T) {
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/assign", staff, map[string]string{"driver_id": d2}, nil, nil); st != 200 {
			t.Fatalf("manual assign: got %d, want 200", st)
		}
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/start", dtok2, map[string]string{"otp": b.OTP}, nil, &e); st != http.StatusConflict || e.Error.Code != "conflict" {
			t.Fatalf("start before arriving: got %d %q, want 409 conflict", st, e.Error.Code)
		}
		var now booking
		s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &now)
		if now.Status != "assigned" {
			t.Fatalf("after a refused start: got %q, want assigned", now.Status)
		}
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/cancel", ctok, map[string]string{"reason": "plans changed"}, nil, &now); st != 200 || now.Status != "cancelled" {
			t.Fatalf("cancel: got %d %q, want 200 cancelled", st, now.Status)
		}
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/cancel", ctok, map[string]string{"reason": "again"}, nil, &e); st != http.StatusConflict {
			t.Fatalf("cancelling a cancelled booking: got %d, want 409", st)
		}
	})

	t.Run("bad REST input is invalid_argument and creates nothing", func(t *testing.T) {
		cases := map[string]any{
			"malformed JSON":   `{"pickup": `,
			"hours as string":  map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": "two", "car": map[string]string{"transmission": "manual"}},
			"hours 0":          map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": 0, "car": map[string]string{"transmission": "manual"}},
			"lat out of range": map[string]any{"pickup": map[string]any{"lat": 91, "lng": lng}, "hours": 2, "car": map[string]string{"transmission": "manual"}},
			"no transmission":  map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": 2},
		}
		for name, body := range cases {
			var e struct {
				Error struct{ Code, Message string } `json:"error"`
			}
			st := s.rest(t, "POST", "/v1/bookings", ctok, body, map[string]string{"Idempotency-Key": "bad-" + name + suffix}, &e)
			if st != http.StatusBadRequest || e.Error.Code != "invalid_argument" || e.Error.Message == "" {
				t.Errorf("%s: got %d %+v, want 400 invalid_argument with a message", name, st, e.Error)
			}
		}
		var list struct{ Bookings []booking }
		s.rest(t, "GET", "/v1/bookings?mine=true", ctok, nil, nil, &list)
		if len(list.Bookings) != 1 {
			t.Fatalf("customer's bookings after refused requests: got %d, want 1", len(list.Bookings))
		}
	})

	if n := invariantViolations(t, s.dsn); n != 0 {
		t.Fatalf("invariant violations: got %d, want 0", n)
	}
}

// waitIndexed waits until the driver's position is visible to a dispatcher.
func waitIndexed(t *testing.T, s *server, staff, id string, lat float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		var v struct{ Lat float64 }
		if s.rest(t, "GET", "/v1/drivers/"+id, staff, nil, nil, &v) == 200 && v.Lat == lat {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("driver %s not indexed within 5 s", id)
}
