package main

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

// replyMsg waits for the answer to seq: its error code and message ("" and "" for an ack).
func (c *client) replyMsg(seq int64) (code, msg string) {
	c.t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("socket closed while waiting for the answer to %d", seq)
			}
			var r struct {
				Ref     *int64 `json:"ref"`
				Code    string `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(f.Data, &r)
			if (f.Type == "ack" || f.Type == "error") && r.Ref != nil && *r.Ref == seq {
				return r.Code, r.Message
			}
		case <-deadline:
			c.t.Fatalf("no answer to seq %d within 5 s", seq)
		}
	}
}

type apiError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

type driverProfile struct {
	ID             string   `json:"id"`
	Name           string   `json:"name"`
	LicenceExpires string   `json:"licence_expires"`
	Cities         []string `json:"cities"`
	Verified       bool     `json:"verified"`
	Suspended      bool     `json:"suspended"`
	Rating         float64  `json:"rating"`
	Trips          int      `json:"trips"`
}

// TestDriversAsPeople tells issue 16 end to end through REST and the sockets: a driver is
// registered and verified before going online; names and ratings show; the calendar keeps a
// booking later today and refuses an overlapping one while the driver takes a trip that ends
// before it; a completed trip is rated once; five wrong OTPs lock the start; an unfulfilled
// booking is retried; every step is in the audit trail.
func TestDriversAsPeople(t *testing.T) {
	s := startServer(t, "real", map[string]string{"DISPATCH_MAX_SEARCH": "4s"})
	suffix := fmt.Sprint(time.Now().UnixNano())
	lat, lng := 12.88+float64(time.Now().UnixNano()%1000)/20000, 77.52 // in Bengaluru's service area
	drvID, custID := "ppl-drv-"+suffix, "ppl-cust-"+suffix
	dtok, ctok := sign(t, "driver", drvID), sign(t, "customer", custID)
	staff, admin := sign(t, "dispatcher", "ppl-ops-"+suffix), sign(t, "admin", "ppl-admin-"+suffix)
	other := sign(t, "customer", "ppl-other-"+suffix)

	drv := s.mustDial(t, dtok)
	drv.expect("hello", 5*time.Second, nil)
	online := func() (string, string) {
		t.Helper()
		return drv.replyMsg(drv.send("status", map[string]string{"state": "online"}))
	}
	patch := func(body map[string]any) driverProfile {
		t.Helper()
		var p driverProfile
		if st := s.rest(t, "PATCH", "/v1/drivers/"+drvID, admin, body, nil, &p); st != 200 {
			t.Fatalf("PATCH %v: got %d, want 200", body, st)
		}
		return p
	}

	t.Run("profiles: only a verified, unsuspended driver with a valid licence goes online", func(t *testing.T) {
		if code, msg := online(); code != "permission_denied" || !strings.Contains(msg, "not registered") {
			t.Fatalf("unknown driver online: got %q %q, want permission_denied saying not registered", code, msg)
		}
		profile := map[string]any{"id": drvID, "name": "Meera Iyer", "phone": "+919845012345", "licence_no": "KA01 20190012345",
			"licence_expires": time.Now().AddDate(2, 0, 0).Format(time.DateOnly), "transmissions": []string{"manual"},
			"cities": []string{"bengaluru"}}
		if st := s.rest(t, "POST", "/v1/drivers", ctok, profile, nil, nil); st != http.StatusForbidden {
			t.Errorf("a customer registers a driver: got %d, want 403", st)
		}
		bad := map[string]any{}
		for k, v := range profile {
			bad[k] = v
		}
		bad["phone"] = "call me"
		var e apiError
		if st := s.rest(t, "POST", "/v1/drivers", staff, bad, nil, &e); st != 400 || e.Error.Code != "invalid_argument" || !strings.HasPrefix(e.Error.Message, "phone") {
			t.Errorf("bad phone: got %d %+v, want 400 invalid_argument naming phone", st, e.Error)
		}
		if st := s.rest(t, "GET", "/v1/drivers/"+drvID+"/profile", staff, nil, nil, nil); st != 404 {
			t.Errorf("after a refused POST: got %d, want 404 (nothing created)", st)
		}
		var p driverProfile
		if st := s.rest(t, "POST", "/v1/drivers", staff, profile, nil, &p); st != 201 || p.Verified || p.Name != "Meera Iyer" || p.Rating != 0 {
			t.Fatalf("POST /v1/drivers: got %d %+v, want 201, unverified", st, p)
		}
		if st := s.rest(t, "POST", "/v1/drivers", staff, profile, nil, nil); st != http.StatusConflict {
			t.Errorf("POST the same id again: got %d, want 409", st)
		}
		var list struct{ Drivers []driverProfile }
		s.rest(t, "GET", "/v1/drivers?city=bengaluru&verified=false&limit=1000", staff, nil, nil, &list)
		found := false
		for _, d := range list.Drivers {
			found = found || d.ID == drvID
		}
		if !found {
			t.Errorf("GET /v1/drivers?verified=false: %s not listed", drvID)
		}
		if code, msg := online(); code != "permission_denied" || !strings.Contains(msg, "not verified") {
			t.Fatalf("unverified online: got %q %q, want permission_denied saying not verified", code, msg)
		}
		patch(map[string]any{"verified": true, "licence_expires": time.Now().AddDate(0, 0, -2).Format(time.DateOnly)})
		if code, msg := online(); code != "permission_denied" || !strings.Contains(msg, "licence expired") {
			t.Fatalf("expired licence online: got %q %q, want permission_denied saying the licence expired", code, msg)
		}
		patch(map[string]any{"licence_expires": time.Now().AddDate(2, 0, 0).Format(time.DateOnly), "suspended": true})
		if code, msg := online(); code != "permission_denied" || !strings.Contains(msg, "suspended") {
			t.Fatalf("suspended online: got %q %q, want permission_denied saying suspended", code, msg)
		}
		if p := patch(map[string]any{"suspended": false}); !p.Verified || p.Suspended {
			t.Fatalf("after PATCH: got %+v, want verified, not suspended", p)
		}
		if st := s.rest(t, "PATCH", "/v1/drivers/"+drvID, staff, map[string]any{"transmissions": []string{"cvt"}}, nil, &e); st != 400 {
			t.Errorf("PATCH an unknown transmission: got %d, want 400", st)
		}
		if code, msg := online(); code != "" {
			t.Fatalf("verified driver online: got %q %q, want ack", code, msg)
		}
	})
	// As a phone does: a point a second until the dispatcher sees it.
	for deadline := time.Now().Add(15 * time.Second); ; {
		drv.send("location", point(lat+0.0027, lng))
		var v struct{ Lat float64 }
		// The index keeps microdegrees: compare within that.
		if s.rest(t, "GET", "/v1/drivers/"+drvID, staff, nil, nil, &v) == 200 && math.Abs(v.Lat-(lat+0.0027)) < 2e-6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver %s not indexed within 15 s", drvID)
		}
		time.Sleep(time.Second)
	}

	var near struct {
		Drivers []struct {
			ID, Name, State string
			Rating          *float64
		}
	}
	s.rest(t, "GET", fmt.Sprintf("/v1/drivers/nearby?lat=%f&lng=%f&radius_m=1000", lat, lng), staff, nil, nil, &near)
	if len(near.Drivers) == 0 || near.Drivers[0].ID != drvID || near.Drivers[0].Name != "Meera Iyer" || near.Drivers[0].Rating == nil {
		t.Fatalf("nearby: got %+v, want %s named Meera Iyer with a rating", near.Drivers, drvID)
	}

	cust := s.mustDial(t, ctok)
	book := func(key string, at [2]float64, start *time.Time, out *booking) {
		t.Helper()
		body := map[string]any{"pickup": map[string]any{"lat": at[0], "lng": at[1]}, "hours": 2, "car": map[string]string{"transmission": "manual"}}
		if start != nil {
			body["start_at"] = start.UTC().Format(time.RFC3339)
		}
		if st := s.rest(t, "POST", "/v1/bookings", ctok, body, map[string]string{"Idempotency-Key": key + suffix}, out); st != 201 {
			t.Fatalf("POST /v1/bookings %s: got %d, want 201", key, st)
		}
		if out.OTP != "" {
			t.Fatalf("new booking %s: got otp %q, want none before a driver is assigned", key, out.OTP)
		}
		if code := cust.reply(cust.send("watch", map[string]string{"booking_id": out.ID})); code != "" {
			t.Fatalf("watch: %q", code)
		}
	}
	here := [2]float64{lat, lng}

	// A booking later today, assigned by hand, holds a block but not the driver.
	later := time.Now().Add(5 * time.Hour).Truncate(time.Second)
	var ahead booking
	book("ahead", here, &later, &ahead)
	if ahead.Status != "scheduled" {
		t.Fatalf("booking 5 h ahead: got %s, want scheduled", ahead.Status)
	}
	if st := s.rest(t, "POST", "/v1/bookings/"+ahead.ID+"/assign", staff, map[string]string{"driver_id": drvID}, nil, nil); st != 200 {
		t.Fatalf("assign the booking 5 h ahead: got %d, want 200", st)
	}
	var view struct {
		State  string
		Name   string
		Rating *float64
	}
	s.rest(t, "GET", "/v1/drivers/"+drvID, staff, nil, nil, &view)
	if view.State != "available" || view.Name != "Meera Iyer" {
		t.Fatalf("driver with a booking 5 h ahead: got %+v, want available, named", view)
	}
	var cal struct {
		Blocks []struct {
			BookingID string    `json:"booking_id"`
			StartAt   time.Time `json:"start_at"`
			EndAt     time.Time `json:"end_at"`
		}
	}
	if st := s.rest(t, "GET", "/v1/drivers/"+drvID+"/calendar", dtok, nil, nil, &cal); st != 200 || len(cal.Blocks) != 1 ||
		cal.Blocks[0].BookingID != ahead.ID || !cal.Blocks[0].StartAt.Equal(later) ||
		!cal.Blocks[0].EndAt.Equal(later.Add(2*time.Hour+45*time.Minute)) {
		t.Fatalf("calendar: got %d %+v, want the block %s from %s for 2 h plus Bengaluru's 45 min buffer", st, cal, ahead.ID, later)
	}
	if st := s.rest(t, "GET", "/v1/drivers/"+drvID+"/calendar", sign(t, "driver", "someone-else"), nil, nil, nil); st != 403 {
		t.Errorf("another driver's calendar: got %d, want 403", st)
	}
	overlapStart := later.Add(-time.Hour)
	var overlapping booking
	book("overlap", here, &overlapStart, &overlapping)
	var e apiError
	if st := s.rest(t, "POST", "/v1/bookings/"+overlapping.ID+"/assign", staff, map[string]string{"driver_id": drvID}, nil, &e); st != 409 || !strings.Contains(e.Error.Message, "calendar") {
		t.Fatalf("assign an overlapping booking: got %d %+v, want 409 naming the calendar", st, e.Error)
	}

	// Manual assignment offers only drivers online, free and with room in their calendar.
	candidates := func(bookingID string) []string {
		t.Helper()
		var c struct{ Drivers []struct{ ID, Name string } }
		if st := s.rest(t, "GET", "/v1/bookings/"+bookingID+"/candidates", staff, nil, nil, &c); st != 200 {
			t.Fatalf("candidates: got %d, want 200", st)
		}
		var ids []string
		for _, d := range c.Drivers {
			ids = append(ids, d.ID+"/"+d.Name)
		}
		return ids
	}
	tomorrow := later.Add(24 * time.Hour)
	var free booking
	book("free", here, &tomorrow, &free)
	if got := candidates(free.ID); len(got) != 1 || got[0] != drvID+"/Meera Iyer" {
		t.Errorf("candidates for a booking tomorrow: got %v, want [%s/Meera Iyer]", got, drvID)
	}
	if got := candidates(overlapping.ID); len(got) != 0 {
		t.Errorf("candidates for a booking overlapping the driver's block: got %v, want none", got)
	}

	// A trip now, ending before the booking later today, is offered and taken.
	trip := func(key string) booking {
		t.Helper()
		var b booking
		book(key, here, nil, &b)
		offer := drv.expect("offer", 5*time.Second, func(d json.RawMessage) bool { return field(d, "booking_id") == b.ID })
		if code := drv.reply(drv.send("offer.accept", map[string]string{"offer_id": field(offer, "offer_id")})); code != "" {
			t.Fatalf("offer.accept: %q", code)
		}
		assigned := cust.expect("booking", 5*time.Second, func(d json.RawMessage) bool {
			return field(d, "id") == b.ID && field(d, "status") == "assigned"
		})
		var ab booking
		_ = json.Unmarshal(assigned, &ab)
		if ab.Driver == nil || ab.Driver.Name != "Meera Iyer" || len(ab.OTP) != 6 {
			t.Fatalf("assigned booking to its customer: got driver %+v otp %q, want Meera Iyer and a 6-digit OTP", ab.Driver, ab.OTP)
		}
		if code := drv.reply(drv.send("trip.arrive", map[string]string{"booking_id": b.ID})); code != "" {
			t.Fatalf("trip.arrive: %q", code)
		}
		return ab
	}
	first := trip("first")
	if st := s.rest(t, "POST", "/v1/bookings/"+first.ID+"/start", dtok, map[string]string{"otp": first.OTP}, nil, nil); st != 200 {
		t.Fatalf("start: got %d, want 200", st)
	}
	if st := s.rest(t, "POST", "/v1/bookings/"+first.ID+"/end", dtok, nil, nil, nil); st != 200 {
		t.Fatalf("end: got %d, want 200", st)
	}

	t.Run("ratings: its customer rates a completed booking once", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			tok  string
			body any
			want int
		}{
			{"another customer", other, map[string]any{"stars": 5}, 404},
			{"the driver", dtok, map[string]any{"stars": 5}, 403},
			{"six stars", ctok, map[string]any{"stars": 6}, 400},
			{"its customer", ctok, map[string]any{"stars": 4, "comment": "careful driver"}, 204},
			{"twice", ctok, map[string]any{"stars": 1}, 409},
		} {
			if st := s.rest(t, "POST", "/v1/bookings/"+first.ID+"/rating", tc.tok, tc.body, nil, nil); st != tc.want {
				t.Errorf("%s: got %d, want %d", tc.name, st, tc.want)
			}
		}
		if st := s.rest(t, "POST", "/v1/bookings/"+ahead.ID+"/rating", ctok, map[string]any{"stars": 5}, nil, nil); st != 409 {
			t.Errorf("rating a booking not completed: got %d, want 409", st)
		}
		var p driverProfile
		s.rest(t, "GET", "/v1/drivers/"+drvID+"/profile", staff, nil, nil, &p)
		if p.Rating != 4 || p.Trips != 1 {
			t.Errorf("profile after one rating: got rating %v trips %d, want 4 and 1", p.Rating, p.Trips)
		}
		s.rest(t, "GET", "/v1/drivers/"+drvID, staff, nil, nil, &view)
		if view.Rating == nil || *view.Rating != 4 {
			t.Errorf("DriverView rating: got %v, want 4", view.Rating)
		}
	})

	t.Run("OTP lockout: five wrong tries lock the start for 15 minutes", func(t *testing.T) {
		b := trip("locked")
		wrong := "000000"
		if b.OTP == wrong {
			wrong = "111111"
		}
		for i := 1; i <= 5; i++ {
			var e apiError
			st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/start", dtok, map[string]string{"otp": wrong}, nil, &e)
			want, code := 400, "invalid_argument"
			if i == 5 {
				want, code = 429, "otp_locked"
			}
			if st != want || e.Error.Code != code {
				t.Fatalf("wrong OTP %d: got %d %+v, want %d %s", i, st, e.Error, want, code)
			}
		}
		lock := cust.expect("booking", 5*time.Second, func(d json.RawMessage) bool {
			return field(d, "id") == b.ID && field(d, "otp_locked_until") != ""
		})
		until, err := time.Parse(time.RFC3339, field(lock, "otp_locked_until"))
		if err != nil || until.Sub(time.Now()) < 14*time.Minute || until.Sub(time.Now()) > 16*time.Minute {
			t.Errorf("otp_locked_until: got %s (%v), want 15 minutes from now", field(lock, "otp_locked_until"), err)
		}
		// Even the right OTP, over the socket, is refused while locked.
		if code, _ := drv.replyMsg(drv.send("trip.start", map[string]string{"booking_id": b.ID, "otp": b.OTP})); code != "otp_locked" {
			t.Errorf("trip.start with the right OTP while locked: got %q, want otp_locked", code)
		}
		var got booking
		s.rest(t, "GET", "/v1/bookings/"+b.ID, staff, nil, nil, &got)
		if got.Status != "arrived" {
			t.Errorf("after the lockout: got %s, want arrived", got.Status)
		}
		var evs struct {
			Events []struct{ Actor, From, To, Reason string }
		}
		if st := s.rest(t, "GET", "/v1/bookings/"+b.ID+"/events", staff, nil, nil, &evs); st != 200 {
			t.Fatalf("events: got %d", st)
		}
		tries := 0
		for _, e := range evs.Events {
			if strings.Contains(e.Reason, "OTP") && e.Actor == "driver:"+drvID {
				tries++
			}
		}
		if tries != 6 {
			t.Errorf("OTP tries in the audit trail: got %d, want 6 (%+v)", tries, evs.Events)
		}
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/cancel", staff, map[string]string{"reason": "test over"}, nil, nil); st != 200 {
			t.Errorf("cancel: got %d", st)
		}
	})

	t.Run("retry: an unfulfilled booking searches again", func(t *testing.T) {
		var b booking
		book("nobody", [2]float64{lat + 0.22, lng + 0.2}, nil, &b) // about 33 km from every driver, still in Bengaluru
		waitStatus := func(want string) {
			t.Helper()
			deadline := time.Now().Add(15 * time.Second)
			for {
				var got booking
				s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &got)
				if got.Status == want {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("booking status: got %s, want %s", got.Status, want)
				}
				time.Sleep(200 * time.Millisecond)
			}
		}
		waitStatus("unfulfilled")
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/retry", other, nil, nil, nil); st != 404 {
			t.Errorf("another customer retries: got %d, want 404", st)
		}
		var again booking
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/retry", staff, nil, nil, &again); st != 200 || again.Status != "searching" {
			t.Fatalf("dispatcher retries: got %d %s, want 200 searching", st, again.Status)
		}
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/retry", ctok, nil, nil, nil); st != 409 {
			t.Errorf("retry while searching: got %d, want 409", st)
		}
		waitStatus("unfulfilled")
		if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/retry", ctok, nil, nil, &again); st != 200 || again.Status != "searching" {
			t.Fatalf("its customer retries: got %d %s, want 200 searching", st, again.Status)
		}
		var evs struct {
			Events []struct{ Actor, From, To string }
		}
		if st := s.rest(t, "GET", "/v1/bookings/"+b.ID+"/events", ctok, nil, nil, &evs); st != 200 {
			t.Fatalf("events: got %d", st)
		}
		var trail []string
		for _, e := range evs.Events {
			trail = append(trail, e.From+">"+e.To+"@"+strings.SplitN(e.Actor, ":", 2)[0])
		}
		want := ">searching@customer searching>unfulfilled@system unfulfilled>searching@dispatcher searching>unfulfilled@system unfulfilled>searching@customer"
		if strings.Join(trail, " ") != want {
			t.Errorf("audit trail: got %s, want %s", strings.Join(trail, " "), want)
		}
		if st := s.rest(t, "GET", "/v1/bookings/"+b.ID+"/events", other, nil, nil, nil); st != 404 {
			t.Errorf("another customer reads the trail: got %d, want 404", st)
		}
		s.rest(t, "POST", "/v1/bookings/"+b.ID+"/cancel", ctok, map[string]string{"reason": "test over"}, nil, nil)
	})
	if n := invariantViolations(t, s.dsn); n != 0 {
		t.Fatalf("invariant violations: got %d, want 0", n)
	}
}
