package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/api"
	"github.com/drivers4me/dispatch/realtime"
	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
)

// Places of the security tests, far enough apart (more than the matcher's 8 km) that the
// matcher never offers one section's bookings to another section's drivers.
var (
	secFixture = [2]float64{13.1007, 77.5963} // Yelahanka: bookings assigned by hand
	secOffers  = [2]float64{12.8452, 77.6602} // Electronic City: where the driver takes offers
)

// secActors are the six points of view of the matrices: the driver of the booking at hand and
// another driver, its customer and another customer, a dispatcher and an admin.
var secActors = []string{"driver", "other driver", "customer", "other customer", "dispatcher", "admin"}

// secWorld is one server and the people using it; every token it signs is kept, so the log
// test can look for each one.
type secWorld struct {
	t      *testing.T
	s      *server
	suffix string
	ids    map[string]string // actor -> user id
	toks   map[string]string // actor -> token
	mu     sync.Mutex
	issued []string
}

func newSecWorld(t *testing.T, s *server) *secWorld {
	suffix := fmt.Sprint(time.Now().UnixNano())
	w := &secWorld{t: t, s: s, suffix: suffix, ids: map[string]string{}, toks: map[string]string{}}
	roles := map[string]string{"driver": "driver", "other driver": "driver", "customer": "customer",
		"other customer": "customer", "dispatcher": "dispatcher", "admin": "admin"}
	for _, a := range secActors {
		w.ids[a] = strings.ReplaceAll(a, " ", "-") + "-" + suffix
		w.toks[a] = w.sign(roles[a], w.ids[a], time.Hour)
		if roles[a] == "driver" {
			s.registerDriver(t, w.ids[a])
		}
	}
	return w
}

func (w *secWorld) keep(tok string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.issued = append(w.issued, tok)
	return tok
}

func (w *secWorld) sign(role, sub string, ttl time.Duration) string {
	w.t.Helper()
	tok, err := api.Sign([]byte(testSecret), role, sub, ttl, "", "")
	if err != nil {
		w.t.Fatal(err)
	}
	return w.keep(tok)
}

// call makes a REST call and returns the status and the error code ("" for a success).
func (w *secWorld) call(t *testing.T, tok, method, path string, body any, hdr map[string]string) (int, string) {
	t.Helper()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	st := w.s.rest(t, method, path, tok, body, hdr, &e)
	return st, e.Error.Code
}

// staffView is a booking as a dispatcher reads it (what "nothing changed" compares).
func (w *secWorld) staffView(t *testing.T, id string) string {
	t.Helper()
	var b booking
	if st := w.s.rest(t, "GET", "/v1/bookings/"+id, w.toks["dispatcher"], nil, nil, &b); st != 200 {
		t.Fatalf("dispatcher GET %s: got %d, want 200", id, st)
	}
	drv := ""
	if b.Driver != nil {
		drv = b.Driver.ID
	}
	return b.Status + "/" + drv
}

func (w *secWorld) bookingBody(at [2]float64) map[string]any {
	return map[string]any{"pickup": map[string]any{"lat": at[0], "lng": at[1]}, "hours": 2, "car": map[string]string{"transmission": "manual"}}
}

// book creates a booking of the actor (a customer) at a place.
func (w *secWorld) book(t *testing.T, actor string, at [2]float64) booking {
	t.Helper()
	var b booking
	key := map[string]string{"Idempotency-Key": fmt.Sprint("sec-", time.Now().UnixNano())}
	if st := w.s.rest(t, "POST", "/v1/bookings", w.toks[actor], w.bookingBody(at), key, &b); st != http.StatusCreated {
		t.Fatalf("%s books: got %d, want 201", actor, st)
	}
	return b
}

// fixture is the customer's booking in a state, assigned by hand to the driver when the state
// needs one; done cancels it (whatever it became), which frees the driver.
func (w *secWorld) fixture(t *testing.T, state string) (b booking, done func()) {
	t.Helper()
	b = w.book(t, "customer", secFixture)
	done = func() {
		w.call(t, w.toks["dispatcher"], "POST", "/v1/bookings/"+b.ID+"/cancel", map[string]string{"reason": "test over"}, nil)
	}
	steps := map[string][]string{"searching": nil, "assigned": {"assign"}, "arrived": {"assign", "arrive"}, "in_progress": {"assign", "arrive", "start"},
		"completed": {"assign", "arrive", "start", "end"}}
	for _, step := range steps[state] {
		tok, body := w.toks["driver"], any(nil)
		switch step {
		case "assign":
			tok, body = w.toks["dispatcher"], map[string]string{"driver_id": w.ids["driver"]}
		case "start":
			body = map[string]string{"otp": b.OTP}
		}
		if st, code := w.call(t, tok, "POST", "/v1/bookings/"+b.ID+"/"+step, body, nil); st != 200 {
			done()
			t.Fatalf("fixture %s: %s got %d %s, want 200", state, step, st, code)
		}
		if step == "assign" { // the customer sees the OTP once a driver is assigned
			var seen booking
			w.s.rest(t, "GET", "/v1/bookings/"+b.ID, w.toks["customer"], nil, nil, &seen)
			b.OTP = seen.OTP
		}
	}
	return b, done
}

type want struct {
	status int
	code   string
}

// TestSecurity runs the authorization matrices (REST and socket), the isolation of customers,
// the refusal of bad tokens, origins, oversized frames, expired tokens, bad input of every kind,
// the security headers, and finally looks for secrets in everything the server logged.
func TestSecurity(t *testing.T) {
	s := startServer(t, "real", map[string]string{
		"DISPATCH_ALLOWED_ORIGINS": "https://ops.drivers4me.example",
		// The matrices make hundreds of calls a second; TestRateLimits covers the limits.
		"DISPATCH_RATE_PER_USER": "100000", "DISPATCH_RATE_PER_ADDR": "100000", "DISPATCH_SOCKET_RATE_PER_USER": "100000",
	})
	w := newSecWorld(t, s)

	// The driver exists (its first socket makes its profile) and has a position near the
	// offers' place; the other driver exists too. Both stay offline until the socket matrix.
	socks := map[string]*client{}
	for _, a := range secActors {
		socks[a] = s.mustDial(t, w.toks[a])
	}
	for _, a := range []string{"driver", "other driver"} {
		socks[a].expect("hello", 5*time.Second, nil)
	}
	socks["driver"].send("location", point(secOffers[0], secOffers[1]))
	waitIndexed(t, s, w.toks["dispatcher"], w.ids["driver"], secOffers[0])

	t.Run("REST matrix", func(t *testing.T) { testRESTMatrix(t, w) })
	t.Run("socket matrix", func(t *testing.T) { testSocketMatrix(t, w, socks) })
	t.Run("customer A cannot see customer B's booking or driver", func(t *testing.T) { testCustomerIsolation(t, w, socks) })
	t.Run("bad tokens are refused", func(t *testing.T) { testBadTokens(t, w) })
	t.Run("browser origins", func(t *testing.T) { testOrigins(t, w) })
	t.Run("a frame over 4 KiB closes the socket with 1009", func(t *testing.T) { testReadLimit(t, w) })
	t.Run("a socket whose token expires is closed with 1008", func(t *testing.T) { testTokenExpiry(t, w) })
	t.Run("bad REST input is invalid_argument and changes nothing", func(t *testing.T) { testBadREST(t, w) })
	t.Run("bad frames get an error and change nothing", func(t *testing.T) { testBadFrames(t, w, socks["driver"]) })
	t.Run("security headers and CSP", func(t *testing.T) { testHeaders(t, w) })
	t.Run("nothing secret in the logs", func(t *testing.T) { testNoSecretsLogged(t, w) })

	if n := invariantViolations(t, s.dsn); n != 0 {
		t.Fatalf("invariant violations: got %d, want 0", n)
	}
}

// testRESTMatrix: every role against every endpoint of API.md. A call someone may not make is
// refused and changes nothing; one they may make works. Someone else's booking is not_found
// (its existence stays unsaid); a call of another role is permission_denied.
func testRESTMatrix(t *testing.T, w *secWorld) {
	ok, created := want{200, ""}, want{201, ""}
	deny, none := want{403, "permission_denied"}, want{404, "not_found"}
	staffOnly := map[string]want{"driver": deny, "other driver": deny, "customer": deny, "other customer": deny, "dispatcher": ok, "admin": ok}
	ownersAndStaff := map[string]want{"driver": ok, "other driver": none, "customer": ok, "other customer": none, "dispatcher": ok, "admin": ok}
	itsDriver := map[string]want{"driver": ok, "other driver": none, "customer": deny, "other customer": deny, "dispatcher": deny, "admin": deny}
	selfAndStaff := map[string]want{"driver": ok, "other driver": deny, "customer": deny, "other customer": deny, "dispatcher": ok, "admin": ok}
	conflict := want{409, "conflict"}
	fx := secFixture
	tests := []struct {
		// Every REST call of API.md (and its extensions) has a row: {id} is the fixture's
		// booking, {driver} the driver's id.
		name, method, path string
		state              string // the fixture needed ("": none)
		body               func(b booking) any
		hdr                bool // a fresh Idempotency-Key
		want               map[string]want
	}{
		{name: "quote", method: "POST", path: "/v1/quotes", body: func(booking) any { return w.bookingBody(fx) },
			want: map[string]want{"driver": deny, "other driver": deny, "customer": ok, "other customer": ok, "dispatcher": ok, "admin": ok}},
		{name: "create booking", method: "POST", path: "/v1/bookings", hdr: true, body: func(booking) any { return w.bookingBody(fx) },
			want: map[string]want{"driver": deny, "other driver": deny, "customer": created, "other customer": created, "dispatcher": deny, "admin": deny}},
		{name: "list all bookings", method: "GET", path: "/v1/bookings?status=assigned&limit=5", want: staffOnly},
		{name: "list own bookings", method: "GET", path: "/v1/bookings?mine=true",
			want: map[string]want{"driver": ok, "other driver": ok, "customer": ok, "other customer": ok, "dispatcher": ok, "admin": ok}},
		{name: "get booking", method: "GET", path: "/v1/bookings/{id}", state: "assigned", want: ownersAndStaff},
		{name: "cancel booking", method: "POST", path: "/v1/bookings/{id}/cancel", state: "assigned",
			body: func(booking) any { return map[string]string{"reason": "matrix"} }, want: ownersAndStaff},
		{name: "assign booking", method: "POST", path: "/v1/bookings/{id}/assign", state: "searching",
			body: func(booking) any { return map[string]string{"driver_id": w.ids["driver"]} }, want: staffOnly},
		{name: "arrive", method: "POST", path: "/v1/bookings/{id}/arrive", state: "assigned", want: itsDriver},
		{name: "start", method: "POST", path: "/v1/bookings/{id}/start", state: "arrived",
			body: func(b booking) any { return map[string]string{"otp": b.OTP} }, want: itsDriver},
		{name: "end", method: "POST", path: "/v1/bookings/{id}/end", state: "in_progress", want: itsDriver},
		{name: "route", method: "GET", path: "/v1/bookings/{id}/route", state: "completed", want: ownersAndStaff},
		{name: "nearby drivers", method: "GET", path: fmt.Sprintf("/v1/drivers/nearby?lat=%g&lng=%g&radius_m=5000", secOffers[0], secOffers[1]), want: staffOnly},
		{name: "driver", method: "GET", path: "/v1/drivers/{driver}", want: selfAndStaff},
		// Issue 16: drivers and customers as people.
		{name: "driver profile", method: "GET", path: "/v1/drivers/{driver}/profile", want: selfAndStaff},
		{name: "calendar", method: "GET", path: "/v1/drivers/{driver}/calendar", want: selfAndStaff},
		{name: "list drivers", method: "GET", path: "/v1/drivers?verified=true", want: staffOnly},
		{name: "register driver", method: "POST", path: "/v1/drivers", body: func(booking) any {
			return map[string]any{"id": fmt.Sprint("m-drv-", time.Now().UnixNano()), "name": "Matrix Driver", "phone": "+919800000000",
				"licence_no": "KA0120200000001", "licence_expires": "2030-01-01", "transmissions": []string{"manual"}, "cities": []string{"bengaluru"}}
		}, want: map[string]want{"driver": deny, "other driver": deny, "customer": deny, "other customer": deny, "dispatcher": created, "admin": created}},
		{name: "patch driver", method: "PATCH", path: "/v1/drivers/{driver}", body: func(booking) any { return map[string]any{"verified": true} }, want: staffOnly},
		{name: "candidates", method: "GET", path: "/v1/bookings/{id}/candidates", state: "searching", want: staffOnly},
		{name: "events", method: "GET", path: "/v1/bookings/{id}/events", state: "assigned",
			want: map[string]want{"driver": deny, "other driver": deny, "customer": ok, "other customer": none, "dispatcher": ok, "admin": ok}},
		{name: "retry (a searching booking: 409 to whoever may)", method: "POST", path: "/v1/bookings/{id}/retry", state: "searching",
			want: map[string]want{"driver": deny, "other driver": deny, "customer": conflict, "other customer": none, "dispatcher": conflict, "admin": conflict}},
		{name: "rating", method: "POST", path: "/v1/bookings/{id}/rating", state: "completed", body: func(booking) any { return map[string]any{"stars": 5} },
			want: map[string]want{"driver": deny, "other driver": deny, "customer": {204, ""}, "other customer": none, "dispatcher": deny, "admin": deny}},
	}
	for _, tc := range tests {
		for _, actor := range secActors {
			want := tc.want[actor]
			t.Run(tc.name+"/"+actor, func(t *testing.T) {
				var b booking
				if tc.state != "" {
					var done func()
					b, done = w.fixture(t, tc.state)
					defer done()
				}
				before := ""
				if b.ID != "" {
					before = w.staffView(t, b.ID)
				}
				path := strings.NewReplacer("{id}", b.ID, "{driver}", w.ids["driver"]).Replace(tc.path)
				var body any
				if tc.body != nil {
					body = tc.body(b)
				}
				var hdr map[string]string
				if tc.hdr {
					hdr = map[string]string{"Idempotency-Key": fmt.Sprint("m-", time.Now().UnixNano())}
				}
				st, code := w.call(t, w.toks[actor], tc.method, path, body, hdr)
				if st != want.status || code != want.code {
					t.Fatalf("%s %s as %s: got %d %q, want %d %q", tc.method, tc.path, actor, st, code, want.status, want.code)
				}
				if want.status >= 400 && b.ID != "" {
					if after := w.staffView(t, b.ID); after != before {
						t.Fatalf("refused %s as %s changed the booking: got %s, want %s", tc.name, actor, after, before)
					}
				}
			})
		}
	}

	// The bookings the matrix created are not left searching.
	for _, c := range []string{"customer", "other customer"} {
		var l struct{ Bookings []booking }
		w.s.rest(t, "GET", "/v1/bookings?mine=true&status=searching&limit=500", w.toks[c], nil, nil, &l)
		for _, b := range l.Bookings {
			w.call(t, w.toks["dispatcher"], "POST", "/v1/bookings/"+b.ID+"/cancel", nil, nil)
		}
	}

	t.Run("the OTP is its customer's only", func(t *testing.T) {
		b, done := w.fixture(t, "assigned")
		defer done()
		for _, actor := range []string{"customer", "driver", "dispatcher", "admin"} {
			var got booking
			w.s.rest(t, "GET", "/v1/bookings/"+b.ID, w.toks[actor], nil, nil, &got)
			if hasOTP := got.OTP != ""; hasOTP != (actor == "customer") {
				t.Errorf("GET as %s: otp present %v, want %v", actor, hasOTP, actor == "customer")
			}
		}
	})
	t.Run("mine=true lists only the caller's own", func(t *testing.T) {
		b, done := w.fixture(t, "assigned")
		defer done()
		for actor, wantIt := range map[string]bool{"customer": true, "driver": true, "other customer": false, "other driver": false} {
			var list struct{ Bookings []booking }
			w.s.rest(t, "GET", "/v1/bookings?mine=true&status=assigned", w.toks[actor], nil, nil, &list)
			if got := slices.ContainsFunc(list.Bookings, func(x booking) bool { return x.ID == b.ID }); got != wantIt {
				t.Errorf("mine=true as %s: lists the booking %v, want %v", actor, got, wantIt)
			}
		}
	})
}

// byActor is frame data that differs by sender (each driver sends its own position).
type byActor map[string]any

// secFrame is a frame the matrix sends: its type and data.
type secFrame struct {
	typ  string
	data any
}

// silent sends a frame that is not answered when it is taken (a location), then a probe: the
// frame was taken if no error about it came before the probe's answer.
func silent(t *testing.T, c *client, f secFrame, probe secFrame) string {
	t.Helper()
	seq := c.send(f.typ, f.data)
	pseq := c.send(probe.typ, probe.data)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case fr, ok := <-c.frames:
			if !ok {
				t.Fatalf("socket closed while waiting for the probe's answer")
			}
			var r struct {
				Ref  *int64 `json:"ref"`
				Code string `json:"code"`
			}
			_ = json.Unmarshal(fr.Data, &r)
			if fr.Type == "error" && r.Ref != nil && *r.Ref == seq {
				return r.Code
			}
			if (fr.Type == "ack" || fr.Type == "error") && r.Ref != nil && *r.Ref == pseq {
				return ""
			}
		case <-deadline:
			t.Fatalf("no answer to the probe within 5 s")
		}
	}
}

// testSocketMatrix: every role against every client message type. Within a row the refusals
// come first and must change nothing; then the one who may, does.
func testSocketMatrix(t *testing.T, w *secWorld, socks map[string]*client) {
	pd, nf, ack := "permission_denied", "not_found", ""
	driversOnly := func(other string) map[string]string {
		return map[string]string{"driver": ack, "other driver": other, "customer": pd, "other customer": pd, "dispatcher": pd, "admin": pd}
	}
	probe := map[string]secFrame{}
	for _, a := range secActors {
		probe[a] = secFrame{"watch.area", map[string]float64{"min_lat": 12.9, "min_lng": 77.5, "max_lat": 12.91, "max_lng": 77.51}}
	}
	probe["driver"] = secFrame{"status", map[string]string{"state": "online"}}
	probe["other driver"] = secFrame{"status", map[string]string{"state": "offline"}}

	// offer waits for the driver's next offer of a fresh booking at the offers' place.
	offer := func(t *testing.T) (booking, string) {
		t.Helper()
		d := socks["driver"]
		if code := d.reply(d.send("status", map[string]string{"state": "online"})); code != "" {
			t.Fatalf("driver online: got %q", code)
		}
		d.send("location", point(secOffers[0], secOffers[1]))
		time.Sleep(100 * time.Millisecond)
		b := w.book(t, "customer", secOffers)
		o := d.expect("offer", 5*time.Second, func(m json.RawMessage) bool { return field(m, "booking_id") == b.ID })
		return b, field(o, "offer_id")
	}
	var tripBooking booking // accepted by the driver in the offer.accept row; the trip rows use it

	type row struct {
		typ   string
		setup func(t *testing.T) (data any, bookingID string, done func())
		want  map[string]string // actor -> "" (taken) or an error code
	}
	rows := []row{
		// The driver stays where it takes offers; the other driver goes where its booking will be.
		{"location", func(*testing.T) (any, string, func()) {
			return byActor{"": point(secOffers[0], secOffers[1]), "other driver": point(secFixture[0]+0.002, secFixture[1])}, "", nil
		}, driversOnly(ack)},
		{"locations", func(*testing.T) (any, string, func()) {
			return byActor{"": map[string]any{"points": []any{point(secOffers[0], secOffers[1])}},
				"other driver": map[string]any{"points": []any{point(secFixture[0]+0.002, secFixture[1])}}}, "", nil
		}, driversOnly(ack)},
		{"status", func(*testing.T) (any, string, func()) { return map[string]string{"state": "offline"}, "", nil }, driversOnly(ack)},
		{"offer.decline", func(t *testing.T) (any, string, func()) {
			b, id := offer(t)
			return map[string]string{"offer_id": id, "reason": "matrix"}, b.ID, func() {
				w.call(t, w.toks["dispatcher"], "POST", "/v1/bookings/"+b.ID+"/cancel", nil, nil)
			}
		}, driversOnly(nf)},
		{"offer.accept", func(t *testing.T) (any, string, func()) {
			b, id := offer(t)
			tripBooking = b
			return map[string]string{"offer_id": id}, b.ID, func() {
				var seen booking // the OTP, as the customer sees it once the driver accepted
				w.s.rest(t, "GET", "/v1/bookings/"+b.ID, w.toks["customer"], nil, nil, &seen)
				tripBooking.OTP = seen.OTP
			}
		}, driversOnly(nf)},
		{"trip.arrive", func(*testing.T) (any, string, func()) {
			return map[string]string{"booking_id": tripBooking.ID}, tripBooking.ID, nil
		}, driversOnly(nf)},
		{"trip.start", func(*testing.T) (any, string, func()) {
			return map[string]string{"booking_id": tripBooking.ID, "otp": tripBooking.OTP}, tripBooking.ID, nil
		}, driversOnly(nf)},
		{"trip.end", func(*testing.T) (any, string, func()) {
			return map[string]string{"booking_id": tripBooking.ID}, tripBooking.ID, nil
		}, driversOnly(nf)},
		{"trip.cancel", func(t *testing.T) (any, string, func()) {
			b, done := w.fixture(t, "assigned")
			return map[string]string{"booking_id": b.ID, "reason": "matrix"}, b.ID, done
		}, driversOnly(nf)},
		{"watch", func(t *testing.T) (any, string, func()) {
			b, done := w.fixture(t, "assigned")
			return map[string]string{"booking_id": b.ID}, b.ID, done
		}, map[string]string{"driver": pd, "other driver": pd, "customer": ack, "other customer": nf, "dispatcher": ack, "admin": ack}},
		{"watch.area", func(*testing.T) (any, string, func()) {
			return map[string]float64{"min_lat": 13.0, "min_lng": 77.5, "max_lat": 13.2, "max_lng": 77.7}, "", nil
		}, map[string]string{"driver": pd, "other driver": pd, "customer": pd, "other customer": pd, "dispatcher": ack, "admin": ack}},
	}
	types := realtime.MessageRoles()
	for _, r := range rows {
		delete(types, r.typ)
	}
	if len(types) > 0 {
		t.Fatalf("client message types without a matrix row: %v", types)
	}
	for _, r := range rows {
		t.Run(r.typ, func(t *testing.T) {
			data, bookingID, done := r.setup(t)
			if done != nil {
				defer done()
			}
			before := ""
			if bookingID != "" {
				before = w.staffView(t, bookingID)
			}
			// Refusals first, then whoever may.
			order := slices.Clone(secActors)
			slices.SortStableFunc(order, func(a, b string) int {
				return strings.Compare(fmt.Sprint(r.want[a] == ""), fmt.Sprint(r.want[b] == ""))
			})
			for _, actor := range order {
				c, want := socks[actor], r.want[actor]
				data := data
				if m, ok := data.(byActor); ok {
					if data, ok = m[actor]; !ok {
						data = m[""]
					}
				}
				var got string
				if r.typ == "location" || r.typ == "locations" {
					got = silent(t, c, secFrame{r.typ, data}, probe[actor])
				} else {
					got = c.reply(c.send(r.typ, data))
				}
				if got != want {
					t.Fatalf("%s from the %s: got %q, want %q", r.typ, actor, got, want)
				}
				if want != "" && bookingID != "" {
					if after := w.staffView(t, bookingID); after != before {
						t.Fatalf("refused %s from the %s changed the booking: got %s, want %s", r.typ, actor, after, before)
					}
				}
			}
		})
	}
	if got := w.staffView(t, tripBooking.ID); !strings.HasPrefix(got, "completed/") {
		t.Fatalf("the driver's own trip after arrive, start and end: got %s, want completed", got)
	}
}

// testCustomerIsolation: customer A can neither read nor watch customer B's booking, nor see
// B's driver, by any path; B sees both.
func testCustomerIsolation(t *testing.T, w *secWorld, socks map[string]*client) {
	a, b, drv := socks["customer"], socks["other customer"], socks["other driver"]
	bk := w.book(t, "other customer", secFixture)
	defer func() {
		// Cancelling frees the other driver; offline, it is no candidate for later bookings here.
		w.call(t, w.toks["dispatcher"], "POST", "/v1/bookings/"+bk.ID+"/cancel", nil, nil)
		if code := drv.reply(drv.send("status", map[string]string{"state": "offline"})); code != "" {
			t.Errorf("other driver offline after the test: got %q", code)
		}
	}()
	if st, code := w.call(t, w.toks["dispatcher"], "POST", "/v1/bookings/"+bk.ID+"/assign", map[string]string{"driver_id": w.ids["other driver"]}, nil); st != 200 {
		t.Fatalf("assign B's booking to the other driver: got %d %s", st, code)
	}
	drv.expect("booking", 5*time.Second, func(m json.RawMessage) bool { return field(m, "id") == bk.ID })

	ta := w.toks["customer"]
	checks := []struct {
		name, method, path string
		body               any
		want               want
	}{
		{"read B's booking", "GET", "/v1/bookings/" + bk.ID, nil, want{404, "not_found"}},
		{"cancel B's booking", "POST", "/v1/bookings/" + bk.ID + "/cancel", map[string]string{"reason": "x"}, want{404, "not_found"}},
		{"read B's driver", "GET", "/v1/drivers/" + w.ids["other driver"], nil, want{403, "permission_denied"}},
		{"list everyone's bookings", "GET", "/v1/bookings?status=assigned", nil, want{403, "permission_denied"}},
	}
	for _, c := range checks {
		if st, code := w.call(t, ta, c.method, c.path, c.body, nil); st != c.want.status || code != c.want.code {
			t.Errorf("A: %s: got %d %q, want %d %q", c.name, st, code, c.want.status, c.want.code)
		}
	}
	var mine struct{ Bookings []booking }
	w.s.rest(t, "GET", "/v1/bookings?mine=true", ta, nil, nil, &mine)
	for _, x := range mine.Bookings {
		if x.ID == bk.ID {
			t.Errorf("A's own list holds B's booking %s", bk.ID)
		}
	}
	if code := a.reply(a.send("watch", map[string]string{"booking_id": bk.ID})); code != "not_found" {
		t.Fatalf("A watches B's booking: got %q, want not_found", code)
	}
	if code := b.reply(b.send("watch", map[string]string{"booking_id": bk.ID})); code != "" {
		t.Fatalf("B watches its own booking: got %q, want ack", code)
	}
	// B's driver approaches; B is told, A never.
	for i := range 4 {
		drv.send("location", point(secFixture[0]+0.002-float64(i)*0.0003, secFixture[1]))
		time.Sleep(250 * time.Millisecond)
	}
	b.expect("driver.location", 5*time.Second, func(m json.RawMessage) bool { return field(m, "booking_id") == bk.ID })
	quiet := time.After(1500 * time.Millisecond)
	for {
		select {
		case f := <-a.frames:
			if f.Type == "driver.location" || bytes.Contains(f.Data, []byte(bk.ID)) {
				t.Fatalf("A was sent %s about B's booking: %s", f.Type, f.Data)
			}
			continue
		case <-quiet:
		}
		break
	}
	if st := w.staffView(t, bk.ID); st != "assigned/"+w.ids["other driver"] {
		t.Fatalf("B's booking after A's attempts: got %s, want assigned to the other driver", st)
	}
}

// testBadTokens: alg none, a wrong key, expired, unknown role, a pinned-out algorithm, no exp, a
// bad subject, garbage: 401 on REST and before the socket upgrade (header and subprotocol).
func testBadTokens(t *testing.T, w *secWorld) {
	mk := func(method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
		tok, err := jwt.NewWithClaims(method, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return w.keep(tok)
	}
	exp := time.Now().Add(time.Hour).Unix()
	good := jwt.MapClaims{"sub": "tok-" + w.suffix, "role": "dispatcher", "exp": exp}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for key, val := range good {
			c[key] = val
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	secret := []byte(testSecret)
	tokens := map[string]string{
		"alg none":             mk(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good),
		"wrong key":            w.keep(forgeToken(t, "dispatcher", "tok-"+w.suffix)),
		"expired":              w.sign("dispatcher", "tok-"+w.suffix, -time.Minute),
		"unknown role":         mk(jwt.SigningMethodHS256, secret, with("role", "superuser")),
		"no role":              mk(jwt.SigningMethodHS256, secret, with("role", nil)),
		"HS512 (not pinned)":   mk(jwt.SigningMethodHS512, secret, good),
		"no exp":               mk(jwt.SigningMethodHS256, secret, with("exp", nil)),
		"braces in sub":        mk(jwt.SigningMethodHS256, secret, with("sub", "a{b}")),
		"no sub":               mk(jwt.SigningMethodHS256, secret, with("sub", nil)),
		"garbage":              "not-a-jwt",
		"longer than 4 KiB":    mk(jwt.SigningMethodHS256, secret, with("pad", strings.Repeat("x", 5000))),
		"signature tampered":   mk(jwt.SigningMethodHS256, secret, good) + "A",
		"claims of another":    tamperRole(t, w.keep(w.sign("customer", "tok-"+w.suffix, time.Hour))),
		"empty bearer":         "",
		"trailing space in id": mk(jwt.SigningMethodHS256, secret, with("sub", "a b")),
	}
	for name, tok := range tokens {
		t.Run(name, func(t *testing.T) {
			hdr := map[string]string{"Authorization": "Bearer " + tok}
			if st, code := w.call(t, "", "GET", "/v1/bookings?status=searching", nil, hdr); st != 401 || code != "unauthenticated" {
				t.Errorf("REST: got %d %q, want 401 unauthenticated", st, code)
			}
			for how, h := range map[string]http.Header{
				"header":      {"Authorization": {"Bearer " + tok}},
				"subprotocol": {"Sec-WebSocket-Protocol": {"dispatch.v1, bearer." + tok}},
			} {
				ws, resp, err := websocket.DefaultDialer.Dial("ws://"+w.s.http+"/v1/ws", h)
				if err == nil {
					ws.Close()
				}
				if resp == nil || resp.StatusCode != 401 {
					t.Errorf("socket (%s): got %v (err %v), want 401 before the upgrade", how, statusOf(resp), err)
				}
			}
		})
	}
	t.Run("Basic scheme", func(t *testing.T) {
		hdr := map[string]string{"Authorization": "Basic " + w.toks["dispatcher"]}
		if st, _ := w.call(t, "", "GET", "/v1/bookings?status=searching", nil, hdr); st != 401 {
			t.Errorf("got %d, want 401", st)
		}
	})
	t.Run("a valid token works through the subprotocol and is not echoed", func(t *testing.T) {
		h := http.Header{"Sec-WebSocket-Protocol": {"dispatch.v1, bearer." + w.sign("dispatcher", "sub-"+w.suffix, time.Hour)}}
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+w.s.http+"/v1/ws", h)
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, statusOf(resp))
		}
		defer ws.Close()
		if got := resp.Header.Get("Sec-WebSocket-Protocol"); got != "dispatch.v1" {
			t.Fatalf("answered subprotocol: got %q, want dispatch.v1", got)
		}
	})
}

// tamperRole rewrites a token's role to admin, keeping its signature.
func tamperRole(t *testing.T, tok string) string {
	parts := strings.Split(tok, ".")
	var c map[string]any
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(raw, &c) != nil {
		t.Fatalf("decode claims: %v", err)
	}
	c["role"] = "admin"
	b, _ := json.Marshal(c)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func statusOf(resp *http.Response) any {
	if resp == nil {
		return "no answer"
	}
	return resp.StatusCode
}

// testOrigins: a browser Origin is allowed only when listed in DISPATCH_ALLOWED_ORIGINS or the
// server's own; apps send none.
func testOrigins(t *testing.T, w *secWorld) {
	cases := map[string]int{
		"":                               101,
		"https://ops.drivers4me.example": 101,
		"http://" + w.s.http:             101,
		"https://evil.example":           403,
		"null":                           403,
		"https://ops.drivers4me.example.evil.example": 403,
		"http://" + w.s.http + ".evil.example":        403,
	}
	tok := w.sign("dispatcher", "origin-"+w.suffix, time.Hour)
	for origin, wantStatus := range cases {
		h := http.Header{"Authorization": {"Bearer " + tok}}
		if origin != "" {
			h.Set("Origin", origin)
		}
		ws, resp, err := websocket.DefaultDialer.Dial("ws://"+w.s.http+"/v1/ws", h)
		if err == nil {
			ws.Close()
		}
		if got := statusOf(resp); got != wantStatus {
			t.Errorf("Origin %q: got %v (err %v), want %d", origin, got, err, wantStatus)
		}
	}
}

// closeCode waits for the socket to be closed and returns the close code.
func closeCode(t *testing.T, c *client, within time.Duration) int {
	t.Helper()
	deadline := time.After(within)
	for {
		select {
		case <-c.frames:
		case err := <-c.closed:
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				return ce.Code
			}
			t.Fatalf("socket ended without a close frame: %v", err)
		case <-deadline:
			t.Fatalf("socket still open after %s", within)
		}
	}
}

func testReadLimit(t *testing.T, w *secWorld) {
	c := w.s.mustDial(t, w.sign("customer", "big-"+w.suffix, time.Hour))
	if code := c.reply(c.send("watch", map[string]string{"booking_id": "bk_none"})); code != "not_found" {
		t.Fatalf("before: got %q, want not_found", code)
	}
	c.sendRaw(`{"type":"watch","data":{"booking_id":"` + strings.Repeat("x", 5000) + `"}}`)
	if got := closeCode(t, c, 5*time.Second); got != websocket.CloseMessageTooBig {
		t.Fatalf("close code after a 5 KB frame: got %d, want 1009", got)
	}
}

func testTokenExpiry(t *testing.T, w *secWorld) {
	c := w.s.mustDial(t, w.sign("customer", "short-"+w.suffix, 3*time.Second))
	opened := time.Now()
	if code := c.reply(c.send("watch", map[string]string{"booking_id": "bk_none"})); code != "not_found" {
		t.Fatalf("while valid: got %q, want not_found", code)
	}
	if got := closeCode(t, c, 6*time.Second); got != websocket.ClosePolicyViolation {
		t.Fatalf("close code at expiry: got %d, want 1008", got)
	}
	if d := time.Since(opened); d < time.Second {
		t.Fatalf("closed after %s, want at the token's expiry (2 to 3 s)", d)
	}
}

// testBadREST: wrong types, missing fields, oversized and mistyped bodies, bad query values:
// each is 400 invalid_argument with a message, and no booking is created or changed.
func testBadREST(t *testing.T, w *secWorld) {
	b, done := w.fixture(t, "arrived")
	defer done()
	ok := func() map[string]any { return w.bookingBody(secFixture) }
	set := func(path string, v any) map[string]any {
		m := ok()
		switch path {
		case "hours", "car", "pickup", "start_at":
			m[path] = v
		case "pickup.lat", "pickup.lng", "pickup.address":
			m["pickup"].(map[string]any)[strings.TrimPrefix(path, "pickup.")] = v
		case "car.transmission":
			m["car"] = map[string]any{"transmission": v}
		default:
			delete(m, strings.TrimPrefix(path, "-"))
		}
		return m
	}
	bookingBodies := map[string]any{
		"malformed JSON":       `{"pickup": `,
		"trailing garbage":     `{"hours": 2} x`,
		"a JSON array":         `[1, 2]`,
		"empty body":           ``,
		"null":                 `null`,
		"hours as string":      set("hours", "two"),
		"hours fractional":     set("hours", 1.5),
		"hours 0":              set("hours", 0),
		"hours 25":             set("hours", 25),
		"hours huge":           set("hours", 1e30),
		"no hours":             set("-hours", nil),
		"pickup as string":     set("pickup", "MG Road"),
		"no pickup":            set("-pickup", nil),
		"lat as string":        set("pickup.lat", "12.9"),
		"lat 91":               set("pickup.lat", 91),
		"lng -181":             set("pickup.lng", -181),
		"address 600 chars":    set("pickup.address", strings.Repeat("a", 600)),
		"address as number":    set("pickup.address", 5),
		"no car":               set("-car", nil),
		"transmission unknown": set("car.transmission", "hover"),
		"transmission number":  set("car.transmission", 1),
		"start_at not a time":  set("start_at", "tomorrow"),
		"start_at in the past": set("start_at", time.Now().Add(-time.Hour).Format(time.RFC3339)),
		"start_at 30 days on":  set("start_at", time.Now().Add(30*24*time.Hour).Format(time.RFC3339)),
		"body over 16 KiB":     set("pickup.address", strings.Repeat("a", 17<<10)),
	}
	count := func() int {
		var l struct{ Bookings []booking }
		w.s.rest(t, "GET", "/v1/bookings?mine=true&limit=500", w.toks["customer"], nil, nil, &l)
		return len(l.Bookings)
	}
	n := count()
	check := func(t *testing.T, method, path, tok string, body any, hdr map[string]string) {
		t.Helper()
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		st := w.s.rest(t, method, path, tok, body, hdr, &e)
		if st != 400 || e.Error.Code != "invalid_argument" || e.Error.Message == "" {
			t.Errorf("got %d %+v, want 400 invalid_argument with a message", st, e.Error)
		}
	}
	for name, body := range bookingBodies {
		t.Run("booking: "+name, func(t *testing.T) {
			check(t, "POST", "/v1/bookings", w.toks["customer"], body, map[string]string{"Idempotency-Key": "bad-" + name + w.suffix})
			if name == "no car" { // a quote's car is optional (API.md): manual when absent
				if st := w.s.rest(t, "POST", "/v1/quotes", w.toks["customer"], body, nil, nil); st != 200 {
					t.Errorf("quote without a car: got %d, want 200", st)
				}
				return
			}
			check(t, "POST", "/v1/quotes", w.toks["customer"], body, nil)
		})
	}
	others := []struct {
		name, method, path, actor string
		body                      any
		hdr                       map[string]string
	}{
		{"no Idempotency-Key", "POST", "/v1/bookings", "customer", ok(), nil},
		{"Idempotency-Key over 200", "POST", "/v1/bookings", "customer", ok(), map[string]string{"Idempotency-Key": strings.Repeat("k", 201)}},
		{"text/plain body", "POST", "/v1/bookings", "customer", ok(), map[string]string{"Idempotency-Key": "ct" + w.suffix, "Content-Type": "text/plain"}},
		{"cancel reason as number", "POST", "/v1/bookings/" + b.ID + "/cancel", "customer", map[string]any{"reason": 5}, nil},
		{"cancel reason over 500", "POST", "/v1/bookings/" + b.ID + "/cancel", "customer", map[string]any{"reason": strings.Repeat("r", 501)}, nil},
		{"assign driver_id as number", "POST", "/v1/bookings/" + b.ID + "/assign", "dispatcher", map[string]any{"driver_id": 5}, nil},
		{"assign without driver_id", "POST", "/v1/bookings/" + b.ID + "/assign", "dispatcher", map[string]any{}, nil},
		{"start otp as number", "POST", "/v1/bookings/" + b.ID + "/start", "driver", map[string]any{"otp": 1234}, nil},
		{"start without otp", "POST", "/v1/bookings/" + b.ID + "/start", "driver", map[string]any{}, nil},
		{"start with a wrong otp", "POST", "/v1/bookings/" + b.ID + "/start", "driver", map[string]any{"otp": wrongOTP(b.OTP)}, nil},
		{"list limit 0", "GET", "/v1/bookings?status=searching&limit=0", "dispatcher", nil, nil},
		{"list limit 501", "GET", "/v1/bookings?status=searching&limit=501", "dispatcher", nil, nil},
		{"list limit not a number", "GET", "/v1/bookings?limit=ten", "dispatcher", nil, nil},
		{"list unknown status", "GET", "/v1/bookings?status=lost", "dispatcher", nil, nil},
		{"nearby without lat", "GET", "/v1/drivers/nearby?lng=77.6", "dispatcher", nil, nil},
		{"nearby lat not a number", "GET", "/v1/drivers/nearby?lat=north&lng=77.6", "dispatcher", nil, nil},
		{"nearby lat NaN", "GET", "/v1/drivers/nearby?lat=NaN&lng=77.6", "dispatcher", nil, nil},
		{"nearby radius too large", "GET", "/v1/drivers/nearby?lat=12.9&lng=77.6&radius_m=1e9", "dispatcher", nil, nil},
		{"nearby limit 1000", "GET", "/v1/drivers/nearby?lat=12.9&lng=77.6&limit=1000", "dispatcher", nil, nil},
	}
	before := w.staffView(t, b.ID)
	for _, c := range others {
		t.Run(c.name, func(t *testing.T) { check(t, c.method, c.path, w.toks[c.actor], c.body, c.hdr) })
	}
	if after := w.staffView(t, b.ID); after != before {
		t.Errorf("the booking after refused calls: got %s, want %s", after, before)
	}
	if got := count(); got != n {
		t.Errorf("the customer's bookings after refused requests: got %d, want %d", got, n)
	}
}

func wrongOTP(otp string) string {
	if otp == "0000" {
		return "1111"
	}
	return "0000"
}

// testBadFrames: frames that cannot be read, wrong types, missing fields, values out of range:
// each gets invalid_argument (with ref when it had a seq), the socket stays open, and the
// driver's position stays what it was.
func testBadFrames(t *testing.T, w *secWorld, d *client) {
	var before struct{ Lat, Lng float64 }
	w.s.rest(t, "GET", "/v1/drivers/"+w.ids["driver"], w.toks["dispatcher"], nil, nil, &before)
	noRef := map[string]string{
		"not JSON":           `hello`,
		"cut short":          `{"type":"status","data":`,
		"no type":            `{"seq":1,"data":{}}`,
		"type as number":     `{"type":5,"seq":1}`,
		"seq as string":      `{"type":"status","seq":"one","data":{"state":"online"}}`,
		"a JSON array":       `[{"type":"status"}]`,
		"data not an object": `{"type":"status","seq":1,"data":"online"}`,
	}
	for name, raw := range noRef {
		t.Run(name, func(t *testing.T) {
			d.sendRaw(raw)
			e := d.expect("error", 3*time.Second, nil)
			if code := field(e, "code"); code != "invalid_argument" {
				t.Fatalf("got %s, want invalid_argument", e)
			}
		})
	}
	t.Run("binary frame", func(t *testing.T) {
		d.mu.Lock()
		err := d.ws.WriteMessage(websocket.BinaryMessage, []byte{0xff, 0x00})
		d.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if e := d.expect("error", 3*time.Second, nil); field(e, "code") != "invalid_argument" || field(e, "ref") != "" {
			t.Fatalf("got %s, want invalid_argument without ref", e)
		}
	})
	now := time.Now().UnixMilli()
	withRef := []struct {
		name, typ string
		data      any
	}{
		{"location lat as string", "location", map[string]any{"lat": "12.9", "lng": 77.6, "ts": now}},
		{"location lat 95", "location", map[string]any{"lat": 95, "lng": 77.6, "ts": now}},
		{"location lng -200", "location", map[string]any{"lat": 12.9, "lng": -200, "ts": now}},
		{"location without ts", "location", map[string]any{"lat": 12.9, "lng": 77.6}},
		{"location ts an hour ahead", "location", map[string]any{"lat": 12.9, "lng": 77.6, "ts": now + 3_600_000}},
		{"location ts huge", "location", map[string]any{"lat": 12.9, "lng": 77.6, "ts": int64(1) << 62}},
		{"location accuracy 5 km", "location", map[string]any{"lat": 12.9, "lng": 77.6, "acc": 5000, "ts": now}},
		{"location a teleport", "location", map[string]any{"lat": 28.6, "lng": 77.2, "ts": now + 1000}},
		{"location without data", "location", nil},
		{"locations points not a list", "locations", map[string]any{"points": "many"}},
		{"locations with a bad point", "locations", map[string]any{"points": []any{map[string]any{"lat": 95, "lng": 0, "ts": now}}}},
		{"status unknown state", "status", map[string]any{"state": "flying"}},
		{"status state as number", "status", map[string]any{"state": 1}},
		{"offer.accept offer_id as number", "offer.accept", map[string]any{"offer_id": 7}},
		{"trip.arrive booking_id as list", "trip.arrive", map[string]any{"booking_id": []int{1}}},
		{"trip.start otp as object", "trip.start", map[string]any{"booking_id": "x", "otp": map[string]int{}}},
		{"unknown type", "teleport", map[string]any{}},
	}
	for _, c := range withRef {
		t.Run(c.name, func(t *testing.T) {
			var seq int64
			if c.data == nil {
				d.mu.Lock()
				d.seq++
				seq = d.seq
				_ = d.ws.WriteJSON(map[string]any{"type": c.typ, "seq": seq})
				d.mu.Unlock()
			} else {
				seq = d.send(c.typ, c.data)
			}
			if c.typ == "location" || c.typ == "locations" {
				e := d.expect("error", 3*time.Second, nil)
				if field(e, "ref") != fmt.Sprint(seq) || field(e, "code") != "invalid_argument" {
					t.Fatalf("got %s, want invalid_argument for ref %d", e, seq)
				}
				return
			}
			if code := d.reply(seq); code != "invalid_argument" {
				t.Fatalf("got %q, want invalid_argument", code)
			}
		})
	}
	if code := d.reply(d.send("status", map[string]string{"state": "online"})); code != "" {
		t.Fatalf("the socket after bad frames: got %q, want an ack", code)
	}
	var after struct{ Lat, Lng float64 }
	w.s.rest(t, "GET", "/v1/drivers/"+w.ids["driver"], w.toks["dispatcher"], nil, nil, &after)
	if after != before {
		t.Fatalf("the driver's position after bad frames: got %+v, want %+v", after, before)
	}
}

// testHeaders: every answer carries the security headers; the page's CSP allows its own
// scripts, styles and sockets only.
func testHeaders(t *testing.T, w *secWorld) {
	for _, path := range []string{"/", "/app.js", "/v1/bookings/x", "/config.json", "/v1/nothing"} {
		req, _ := http.NewRequest("GET", "http://"+w.s.http+path, nil)
		req.Header.Set("X-Forwarded-Proto", "https")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for h, v := range map[string]string{"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
			"Referrer-Policy": "no-referrer", "Cross-Origin-Opener-Policy": "same-origin",
			"Strict-Transport-Security": "max-age=31536000; includeSubDomains"} {
			if got := resp.Header.Get(h); got != v {
				t.Errorf("%s: %s: got %q, want %q", path, h, got, v)
			}
		}
		csp := map[string]string{}
		for _, d := range strings.Split(resp.Header.Get("Content-Security-Policy"), ";") {
			name, val, _ := strings.Cut(strings.TrimSpace(d), " ")
			csp[name] = val
		}
		for d, v := range map[string]string{"default-src": "'self'", "script-src": "'self'", "style-src": "'self'",
			"connect-src": "'self'", "object-src": "'none'", "base-uri": "'none'", "form-action": "'none'", "frame-ancestors": "'none'"} {
			if csp[d] != v {
				t.Errorf("%s: CSP %s: got %q, want %q", path, d, csp[d], v)
			}
		}
		if h := resp.Header.Get("Content-Security-Policy"); strings.Contains(h, "unsafe") || strings.Contains(h, "*") {
			t.Errorf("%s: CSP allows unsafe code or any host: %s", path, h)
		}
	}
}

// testNoSecretsLogged: after all of the above (tokens good and bad, over REST and sockets), no
// token, no part of a signature and not the JWT secret appear anywhere in the server's logs.
func testNoSecretsLogged(t *testing.T, w *secWorld) {
	// One more refused token, as the last thing the server saw.
	bad := w.keep(forgeToken(t, "admin", "logs-"+w.suffix))
	w.call(t, bad, "GET", "/v1/bookings?status=searching", nil, nil)
	_, _, _ = websocket.DefaultDialer.Dial("ws://"+w.s.http+"/v1/ws", http.Header{"Authorization": {"Bearer " + bad}})
	time.Sleep(200 * time.Millisecond)
	logs := w.s.logs.String()
	if !strings.Contains(logs, `"listening"`) {
		t.Fatalf("the captured logs look empty: %q", tail(logs, 5))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	needles := map[string]string{"the JWT secret": testSecret}
	for i, tok := range w.issued {
		needles[fmt.Sprintf("token %d", i)] = tok
		if parts := strings.Split(tok, "."); len(parts) == 3 && len(parts[2]) > 16 {
			needles[fmt.Sprintf("signature of token %d", i)] = parts[2]
		}
	}
	for name, n := range needles {
		if n != "" && strings.Contains(logs, n) {
			t.Errorf("the logs hold %s", name)
		}
	}
	if len(w.issued) < 20 {
		t.Fatalf("only %d tokens were used: the test did not exercise what it checks", len(w.issued))
	}
}

// TestRateLimits: REST per user and per address, sockets per user (a cap, a message budget
// across the user's sockets, and closing a socket that keeps going), on a server with low limits.
func TestRateLimits(t *testing.T) {
	s := startServer(t, "real", map[string]string{
		"DISPATCH_RATE_PER_USER": "2", "DISPATCH_RATE_PER_ADDR": "2", // bursts of 10
		"DISPATCH_SOCKET_RATE_PER_USER": "2", "DISPATCH_MAX_SOCKETS_PER_USER": "2", // bursts of 4
	})
	suffix := fmt.Sprint(time.Now().UnixNano())
	get := func(tok string, hdr map[string]string) (int, string, string) {
		req, _ := http.NewRequest("GET", "http://"+s.http+"/v1/bookings?mine=true", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Error.Code, resp.Header.Get("Retry-After")
	}

	t.Run("REST per user", func(t *testing.T) {
		u1 := sign(t, "customer", "rl1-"+suffix)
		passed, limited := 0, 0
		began := time.Now()
		for range 14 {
			switch st, code, retry := get(u1, nil); {
			case st == 200:
				passed++
			case st == 429 && code == "rate_limited" && retry != "":
				limited++
			default:
				t.Fatalf("got %d %q (Retry-After %q), want 200 or 429 rate_limited with Retry-After", st, code, retry)
			}
		}
		// The burst of 10, and what 2 a second refilled meanwhile.
		if most := 10 + 1 + int(2*time.Since(began).Seconds()); passed < 10 || passed > most || limited == 0 {
			t.Fatalf("14 calls at once: got %d passed and %d limited, want 10 to %d to pass and the rest limited", passed, limited, most)
		}
		if st, _, _ := get(sign(t, "customer", "rl2-"+suffix), nil); st != 200 {
			t.Fatalf("another user from the same address: got %d, want 200 (users are counted apart)", st)
		}
	})

	t.Run("REST per address, for requests without a valid token", func(t *testing.T) {
		limited := 0
		began := time.Now()
		for i := range 14 {
			// A forged X-Forwarded-For changes nothing: no proxy is trusted here.
			st, code, _ := get(forgeToken(t, "customer", "x"), map[string]string{"X-Forwarded-For": fmt.Sprintf("10.0.0.%d", i)})
			switch {
			case st == 401:
			case st == 429 && code == "rate_limited":
				limited++
			default:
				t.Fatalf("got %d %q, want 401 or 429", st, code)
			}
		}
		if least := 14 - 10 - 1 - int(2*time.Since(began).Seconds()); limited == 0 || limited < least {
			t.Fatalf("14 bad-token calls from one address: got %d limited, want at least %d (and 1)", limited, least)
		}
		if st, _, _ := get(sign(t, "customer", "rl3-"+suffix), nil); st != 200 {
			t.Fatalf("a valid token from the same address: got %d, want 200", st)
		}
	})

	t.Run("at most 2 sockets per customer", func(t *testing.T) {
		tok := sign(t, "customer", "rl4-"+suffix)
		first := s.mustDial(t, tok)
		s.mustDial(t, tok)
		_, resp, err := s.dial(t, tok)
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("third socket: got %v (err %v), want 429", statusOf(resp), err)
		}
		first.ws.Close()
		deadline := time.Now().Add(5 * time.Second)
		for {
			time.Sleep(500 * time.Millisecond) // within the user's HTTP rate
			if _, resp, err := s.dial(t, tok); err == nil {
				break
			} else if time.Now().After(deadline) {
				t.Fatalf("a socket after one was closed: got %v (%v), want it back within 5 s", statusOf(resp), err)
			}
		}
	})

	t.Run("a driver's new socket replaces the old one instead", func(t *testing.T) {
		tok := sign(t, "driver", "rl5-"+suffix)
		var old []*client
		for range 3 {
			c := s.mustDial(t, tok)
			c.expect("hello", 5*time.Second, nil)
			old = append(old, c)
		}
		for i, c := range old[:2] {
			if got := closeCode(t, c, 5*time.Second); got != websocket.ClosePolicyViolation {
				t.Fatalf("driver socket %d after a newer one: got close %d, want 1008", i+1, got)
			}
		}
	})

	t.Run("messages per user across sockets", func(t *testing.T) {
		tok := sign(t, "dispatcher", "rl6-"+suffix)
		a, b := s.mustDial(t, tok), s.mustDial(t, tok)
		codes := map[string]int{}
		began := time.Now()
		for i := range 8 {
			c := a
			if i%2 == 1 {
				c = b
			}
			codes[c.reply(c.send("watch", map[string]string{"booking_id": "bk_none"}))]++
		}
		if most := 4 + 1 + int(2*time.Since(began).Seconds()); codes["not_found"] < 4 || codes["not_found"] > most || codes["rate_limited"] == 0 {
			t.Fatalf("8 messages at once over two sockets: got %v, want 4 to %d answered and the rest rate_limited", codes, most)
		}
		for range 20 {
			a.mu.Lock()
			a.seq++
			err := a.ws.WriteJSON(map[string]any{"type": "watch", "seq": a.seq, "data": map[string]string{"booking_id": "bk_none"}})
			a.mu.Unlock()
			if err != nil {
				break
			}
		}
		if got := closeCode(t, a, 5*time.Second); got != websocket.ClosePolicyViolation {
			t.Fatalf("a socket that keeps going past its budget: got close %d, want 1008", got)
		}
		time.Sleep(1500 * time.Millisecond)
		if code := b.reply(b.send("watch", map[string]string{"booking_id": "bk_none"})); code != "not_found" {
			t.Fatalf("the user's other socket after a pause: got %q, want it served (not_found)", code)
		}
	})
}

// TestSecretsStayOutOfErrors: a malformed setting holding a password, or a secret too short, is
// refused at start without the secret in the error or the log (both end up in CloudWatch).
func TestSecretsStayOutOfErrors(t *testing.T) {
	const pw = "s3cret-pw-0123"
	cases := map[string]map[string]string{
		"bad escape in REDIS_URL":   {"REDIS_URL": "redis://user:" + pw + "%zz@127.0.0.1:6379", "MYSQL_DSN": "root@tcp(127.0.0.1:3306)/x"},
		"bad host in REDIS_URL":     {"REDIS_URL": "redis://user:" + pw + "@ho st:6379", "MYSQL_DSN": "root@tcp(127.0.0.1:3306)/x"},
		"bad port in cluster URL":   {"REDIS_URL": "rediss://:" + pw + "@a:x,b:6379", "MYSQL_DSN": "root@tcp(127.0.0.1:3306)/x"},
		"malformed MYSQL_DSN":       {"REDIS_URL": "redis://127.0.0.1:6379", "MYSQL_DSN": "user:" + pw + "@tcp(127.0.0.1:3306)"},
		"short DISPATCH_JWT_SECRET": {"DISPATCH_JWT_SECRET": pw},
	}
	for name, extra := range cases {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{"DISPATCH_HTTP_ADDR": "127.0.0.1:0", "DISPATCH_ADMIN_ADDR": "127.0.0.1:0",
				"DISPATCH_JWT_SECRET": testSecret, "DISPATCH_LOG_FORMAT": "json", "DISPATCH_LOG_LEVEL": "debug"}
			for k, v := range extra {
				env[k] = v
			}
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := run(ctx, []string{"serve"}, func(k string) string { return env[k] }, &out)
			if err == nil {
				t.Fatalf("serve started; want a refusal")
			}
			if strings.Contains(err.Error(), pw) || strings.Contains(out.String(), pw) {
				t.Fatalf("the secret is in the error or the log:\nerror: %v\nlog: %s", err, out.String())
			}
		})
	}
}

// TestAbuseSettings: the limits' settings are read, and bad values are refused by name.
func TestAbuseSettings(t *testing.T) {
	base := map[string]string{"DISPATCH_JWT_SECRET": testSecret}
	bad := map[string]string{
		"DISPATCH_RATE_PER_USER":        "-1",
		"DISPATCH_RATE_PER_ADDR":        "lots",
		"DISPATCH_PROXY_HOPS":           "1.5",
		"DISPATCH_SOCKET_RATE_PER_USER": "0",
		"DISPATCH_MAX_SOCKETS_PER_USER": "0",
	}
	for name, val := range bad {
		env := map[string]string{name: val}
		for k, v := range base {
			env[k] = v
		}
		if _, err := LoadConfig(func(k string) string { return env[k] }); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: got %v, want an error naming it", name, val, err)
		}
	}
	env := map[string]string{"DISPATCH_JWT_SECRET": testSecret, "DISPATCH_RATE_PER_USER": "0", "DISPATCH_RATE_PER_ADDR": "2.5",
		"DISPATCH_PROXY_HOPS": "1", "DISPATCH_SOCKET_RATE_PER_USER": "7", "DISPATCH_MAX_SOCKETS_PER_USER": "3"}
	c, err := LoadConfig(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if c.RatePerUser != 0 || c.RatePerAddr != 2.5 || c.ProxyHops != 1 || c.SocketRatePerUser != 7 || c.MaxSocketsPerUser != 3 {
		t.Fatalf("got %+v", c)
	}
	d, _ := LoadConfig(func(k string) string { return base[k] })
	if d.RatePerUser != 20 || d.RatePerAddr != 10 || d.ProxyHops != 0 || d.SocketRatePerUser != 20 || d.MaxSocketsPerUser != 5 {
		t.Fatalf("defaults: got %+v, want README's", d)
	}
}
