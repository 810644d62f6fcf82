package realtime

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// The fuzz targets drive the read path of a socket in process: decodeEnvelope, the guards,
// then the session's handle, as Hub.readLoop does, for each kind of user at once, over a store
// fake (dispatch's own interface) and the real test Redis. `go test` runs their seeds and
// testdata/fuzz; `make fuzz FUZZTIME=5m` runs them for longer.

// fzNow is the fuzz targets' clock: seeds keep meaning the same thing for ever.
var fzNow = time.Date(2026, 3, 14, 9, 30, 0, 0, time.UTC)

// The world every input starts from: customer c1's booking bk_a is assigned to driver d1 and
// c1's bk_s is searching with an open offer of_s to d1; customer c2's bk_b is assigned to d2
// with an open offer of_b of c2's bk_t to d2.
func fzSeed() (map[string]dispatch.Booking, map[string]dispatch.Offer) {
	at := fzNow.Add(-10 * time.Minute)
	fare := dispatch.DefaultTariff().Estimate(at, 2, 1)
	mk := func(id, cust, drv string, st dispatch.Status, otp string) dispatch.Booking {
		b := dispatch.Booking{ID: id, Status: st, CustomerID: cust, Pickup: dispatch.Place{Lat: 12.97, Lng: 77.59},
			Hours: 2, StartAt: at, CreatedAt: at, Car: dispatch.Car{Transmission: dispatch.Manual}, OTP: otp, Fare: fare, Version: 1}
		if drv != "" {
			b.Driver = &dispatch.DriverRef{ID: drv, Name: drv, Rating: 5}
		}
		return b
	}
	bs := map[string]dispatch.Booking{
		"bk_a": mk("bk_a", "c1", "d1", dispatch.StatusAssigned, "4821"),
		"bk_s": mk("bk_s", "c1", "", dispatch.StatusSearching, "7730"),
		"bk_b": mk("bk_b", "c2", "d2", dispatch.StatusAssigned, "9164"),
		"bk_t": mk("bk_t", "c2", "", dispatch.StatusSearching, "3357"),
	}
	exp := fzNow.Add(time.Minute)
	ofs := map[string]dispatch.Offer{
		"of_s": {ID: "of_s", BookingID: "bk_s", DriverID: "d1", Status: dispatch.OfferOpen, CreatedAt: at, ExpiresAt: exp},
		"of_b": {ID: "of_b", BookingID: "bk_t", DriverID: "d2", Status: dispatch.OfferOpen, CreatedAt: at, ExpiresAt: exp},
	}
	return bs, ofs
}

// fzStore is an in-memory dispatch.BookingStore with the rules the real one keeps (states,
// versions, one active booking per driver, offers owned by their driver). Methods a socket
// cannot reach are left to the embedded interface (nil: they would panic).
type fzStore struct {
	dispatch.BookingStore
	mu       sync.Mutex
	bookings map[string]dispatch.Booking
	offers   map[string]dispatch.Offer
	reads    int // Booking calls
}

func (s *fzStore) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bookings, s.offers = fzSeed()
}

func (s *fzStore) snapshot() (map[string]dispatch.Booking, map[string]dispatch.Offer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	bs, ofs := map[string]dispatch.Booking{}, map[string]dispatch.Offer{}
	for k, v := range s.bookings {
		bs[k] = v
	}
	for k, v := range s.offers {
		ofs[k] = v
	}
	return bs, ofs
}

// absent is what the real store answers for a row that does not exist (store's translate): the
// kind, with the driver's error as its cause.
func absent(what, id string) error {
	return fmt.Errorf("%s %s: %w", what, id, &dispatch.Error{Kind: dispatch.NotFound, Msg: "not found", Err: sql.ErrNoRows})
}

func (s *fzStore) Booking(_ context.Context, id string) (dispatch.Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reads++
	b, ok := s.bookings[id]
	if !ok {
		return b, absent("booking", id)
	}
	return b, nil
}

func (s *fzStore) Bookings(_ context.Context, f dispatch.BookingFilter) ([]dispatch.Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []dispatch.Booking
	for _, b := range s.bookings {
		if (f.Status == "" || b.Status == f.Status) && (f.CustomerID == "" || b.CustomerID == f.CustomerID) &&
			(f.DriverID == "" || b.DriverID() == f.DriverID) {
			out = append(out, b)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (s *fzStore) activeOf(driver string) (dispatch.Booking, bool) {
	for _, b := range s.bookings {
		if b.Status.Active() && b.DriverID() == driver {
			return b, true
		}
	}
	return dispatch.Booking{}, false
}

func (s *fzStore) Transition(_ context.Context, c dispatch.Change) (dispatch.Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bookings[c.BookingID]
	if !ok {
		return b, dispatch.ErrNotFound
	}
	from := len(c.From) == 0 || slices.Contains(c.From, b.Status)
	if !from || !dispatch.CanMove(b.Status, c.To) || (c.Version != 0 && c.Version != b.Version) {
		return dispatch.Booking{}, dispatch.ErrConflict
	}
	if c.To == dispatch.StatusAssigned {
		if c.Driver == nil {
			return dispatch.Booking{}, dispatch.ErrInvalid
		}
		if _, busy := s.activeOf(c.Driver.ID); busy {
			return dispatch.Booking{}, dispatch.ErrConflict
		}
		d := *c.Driver
		b.Driver = &d
	} else if c.Driver != nil && b.DriverID() != c.Driver.ID {
		return dispatch.Booking{}, dispatch.ErrConflict
	}
	if c.ClearDriver {
		b.Driver = nil
	}
	if c.Fare != nil {
		b.Fare = *c.Fare
	}
	at := c.At
	switch c.To {
	case dispatch.StatusArrived:
		b.ArrivedAt = &at
	case dispatch.StatusInProgress:
		b.StartedAt = &at
	case dispatch.StatusCompleted:
		b.EndedAt = &at
	case dispatch.StatusCancelled:
		b.CancelReason = c.Reason
	}
	b.Status = c.To
	b.Version++
	s.bookings[b.ID] = b
	return b, nil
}

func (s *fzStore) Offer(_ context.Context, id string) (dispatch.Offer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.offers[id]
	if !ok {
		return o, absent("offer", id)
	}
	return o, nil
}

func (s *fzStore) AcceptOffer(_ context.Context, id string, d dispatch.DriverRef, at time.Time) (dispatch.Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.offers[id]
	if !ok {
		return dispatch.Booking{}, dispatch.ErrNotFound
	}
	b := s.bookings[o.BookingID]
	if _, busy := s.activeOf(d.ID); o.Status != dispatch.OfferOpen || o.DriverID != d.ID || at.After(o.ExpiresAt) ||
		b.Status != dispatch.StatusSearching || busy {
		return dispatch.Booking{}, dispatch.ErrConflict
	}
	o.Status = dispatch.OfferAccepted
	s.offers[id] = o
	b.Status, b.Driver = dispatch.StatusAssigned, &d
	b.Version++
	s.bookings[b.ID] = b
	return b, nil
}

func (s *fzStore) CloseOffer(_ context.Context, id, driver string, to dispatch.OfferStatus, _ time.Time) (dispatch.Offer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.offers[id]
	if !ok {
		return o, dispatch.ErrNotFound
	}
	if o.Status != dispatch.OfferOpen || (driver != "" && o.DriverID != driver) {
		return dispatch.Offer{}, dispatch.ErrConflict
	}
	o.Status = to
	s.offers[id] = o
	return o, nil
}

func (s *fzStore) OpenOffers(_ context.Context, driver string) ([]dispatch.Offer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []dispatch.Offer
	for _, o := range s.offers {
		if o.Status == dispatch.OfferOpen && (driver == "" || o.DriverID == driver) {
			out = append(out, o)
		}
	}
	return out, nil
}

func (s *fzStore) ActiveBookingOf(_ context.Context, driver string) (dispatch.Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.activeOf(driver); ok {
		return b, nil
	}
	return dispatch.Booking{}, dispatch.ErrNotFound
}

func (s *fzStore) Driver(_ context.Context, id string) (dispatch.DriverProfile, error) {
	return dispatch.DriverProfile{ID: id, Name: id, Rating: 5, Verified: true, LicenceExpires: "2099-12-31"}, nil
}

func (s *fzStore) UpsertDriver(context.Context, dispatch.DriverProfile) error { return nil }

// fzRig is a hub over the test Redis (a key prefix of its own) and an fzStore.
type fzRig struct {
	h     *Hub
	store *fzStore
}

func newFzRig(tb testing.TB) *fzRig {
	tb.Helper()
	addr := os.Getenv("DISPATCH_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		tb.Fatalf("the test Redis at %s does not answer (%v): start it or set DISPATCH_TEST_REDIS_ADDR", addr, err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "fuzz:" + hex.EncodeToString(b[:]) + ":"
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	x := geo.NewIndex(rdb, geo.Options{Prefix: prefix}) // as cmd/dispatchd's
	st := &fzStore{}
	st.reset()
	now := func() time.Time { return fzNow }
	svc := dispatch.NewService(st, x, NewBus(rdb, prefix, geoGrid), dispatch.ServiceOptions{Now: now})
	// Budgets out of the way: the guards' refusals are tested end to end; here every frame
	// that may be handled is.
	w := geo.NewWriter(x, geo.WriterOptions{}, nil, zerolog.Nop()) // not run: points stay pending
	h := NewHub(rdb, NewBus(rdb, prefix, geoGrid), svc, st, x, w, Options{Rate: 1e9, UserRate: 1e9, Now: now, TrailKeep: geo.TrailKeep}, nil, zerolog.Nop())
	return &fzRig{h: h, store: st}
}

// fzUsers are who sends each input.
var fzUsers = []dispatch.Actor{
	{ID: "d1", Role: "driver"}, {ID: "d2", Role: "driver"},
	{ID: "c1", Role: "customer"}, {ID: "c2", Role: "customer"},
	{ID: "ops", Role: "dispatcher"},
}

// frame runs one frame through the read path as a, as Hub.readLoop does, and returns the
// frames queued for a, whether the session handled it (not refused before) and its error.
func (r *fzRig) frame(a dispatch.Actor, data []byte) (sent [][]byte, handled bool, err error) {
	ctx := context.Background()
	c := newConn(nil, 0, 0, func(string) {})
	work := &backlog{} // a trail point, if any, is appended there; waited for below
	defer work.wait()
	var s session
	if a.Role == "driver" {
		d := newDriverSession(r.h, a, c, work)
		if b, err := r.store.ActiveBookingOf(ctx, a.ID); err == nil {
			d.booking, d.bookingStatus = b.ID, b.Status
		}
		s = d
	} else {
		s = newViewer(r.h, a, c)
	}
	defer s.stop(ctx)
	env, derr := decodeEnvelope(data)
	if derr == nil {
		if env.Type == "" {
			panic("decodeEnvelope returned an envelope without a type")
		}
		slot, aerr := r.h.guards.admit(a)
		if aerr != nil {
			panic(aerr)
		}
		defer slot.release()
		if refusal, _ := slot.refuse(env); refusal != nil {
			c.send("error", errorFrame(env.Seq, refusal))
		} else {
			err = s.handle(ctx, env)
			handled = true
		}
	}
	c.mu.Lock()
	sent = append(sent, c.queue...)
	for _, k := range c.order {
		sent = append(sent, c.latest[k].b)
	}
	c.mu.Unlock()
	return sent, handled, err
}

// canTouch is what a user may change through its socket: a driver its own trips and the
// bookings of its own open offers; customers and dispatchers nothing (they only watch).
func canTouch(a dispatch.Actor, b dispatch.Booking, offers map[string]dispatch.Offer) bool {
	if a.Role != "driver" {
		return false
	}
	if b.DriverID() == a.ID {
		return true
	}
	for _, o := range offers {
		if o.BookingID == b.ID && o.DriverID == a.ID && o.Status == dispatch.OfferOpen {
			return true
		}
	}
	return false
}

// maySee is API.md's rule, written out apart from dispatch.CanSee so a bug there shows here.
func maySee(a dispatch.Actor, b dispatch.Booking) bool {
	switch a.Role {
	case "dispatcher", "admin":
		return true
	case "customer":
		return b.CustomerID == a.ID
	case "driver":
		return b.Driver != nil && b.Driver.ID == a.ID
	}
	return false
}

var apiCodes = map[string]bool{"invalid_argument": true, "not_found": true, "permission_denied": true,
	"conflict": true, "idempotency_mismatch": true, "rate_limited": true, "unavailable": true}

// hasKey reports whether a JSON value holds an object key named k at any depth.
func hasKey(v any, k string) bool {
	switch x := v.(type) {
	case map[string]any:
		for key, val := range x {
			if key == k || hasKey(val, k) {
				return true
			}
		}
	case []any:
		for _, val := range x {
			if hasKey(val, k) {
				return true
			}
		}
	}
	return false
}

// FuzzEnvelope: any frame, from any kind of user, is decoded or refused without a panic; an
// error is always one of the API's codes and never internal; a user changes only what it may
// (nothing for customers and dispatchers, its own trips and offers for a driver); and what it is
// sent is JSON that names no booking it may not see and, but for a customer's own, no OTP.
func FuzzEnvelope(f *testing.F) {
	for _, s := range []string{
		`{"type":"location","data":{"lat":12.97,"lng":77.59,"acc":5,"heading":90,"speed":8,"ts":1773480600000}}`,
		`{"type":"locations","seq":1,"data":{"points":[{"lat":12.97,"lng":77.59,"ts":1773480599000},{"lat":12.9701,"lng":77.59,"ts":1773480600000}]}}`,
		`{"type":"status","seq":2,"data":{"state":"online"}}`,
		`{"type":"status","seq":3,"data":{"state":"offline"}}`,
		`{"type":"offer.accept","seq":4,"data":{"offer_id":"of_s"}}`,
		`{"type":"offer.accept","seq":5,"data":{"offer_id":"of_b"}}`,
		`{"type":"offer.decline","seq":6,"data":{"offer_id":"of_b","reason":"far"}}`,
		`{"type":"trip.arrive","seq":7,"data":{"booking_id":"bk_a"}}`,
		`{"type":"trip.arrive","seq":8,"data":{"booking_id":"bk_b"}}`,
		`{"type":"trip.start","seq":9,"data":{"booking_id":"bk_b","otp":"9164"}}`,
		`{"type":"trip.end","seq":10,"data":{"booking_id":"bk_b"}}`,
		`{"type":"trip.cancel","seq":11,"data":{"booking_id":"bk_b","reason":"x"}}`,
		`{"type":"watch","seq":12,"data":{"booking_id":"bk_a"}}`,
		`{"type":"watch","seq":13,"data":{"booking_id":"bk_b"}}`,
		`{"type":"watch.area","seq":14,"data":{"min_lat":12.9,"min_lng":77.5,"max_lat":13.0,"max_lng":77.7}}`,
		`{"type":"watch.area","seq":15,"data":{"min_lat":-90,"min_lng":-180,"max_lat":90,"max_lng":180}}`,
		`{"type":"teleport","seq":16,"data":{}}`,
		`{"type":"status","seq":"x"}`,
		`{"type":"watch","data":null}`,
		`{"type":"location","data":{"lat":1e400}}`,
		`[]`, `null`, `{}`, `"status"`, ``,
	} {
		f.Add([]byte(s))
	}
	r := newFzRig(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, a := range fzUsers {
			r.store.reset()
			beforeB, beforeO := r.store.snapshot()
			out, _, err := r.frame(a, data)
			if err != nil {
				if code := errorFrame(nil, err).Code; !apiCodes[code] {
					t.Fatalf("%s: frame %q: error code %q (%v), want one of the API's", a, data, code, err)
				}
			}
			afterB, afterO := r.store.snapshot()
			for id, b := range beforeB {
				if !reflect.DeepEqual(afterB[id], b) && !canTouch(a, b, beforeO) {
					t.Fatalf("%s: frame %q changed booking %s it may not touch: %+v -> %+v", a, data, id, b, afterB[id])
				}
			}
			for id, o := range beforeO {
				if !reflect.DeepEqual(afterO[id], o) && !(a.Role == "driver" && o.DriverID == a.ID) {
					t.Fatalf("%s: frame %q changed offer %s of %s", a, data, id, o.DriverID)
				}
			}
			for _, fr := range out {
				var v any
				if json.Unmarshal(fr, &v) != nil || !hasKey(v, "type") {
					t.Fatalf("%s: sent a frame that is not a JSON envelope: %q", a, fr)
				}
				for id, b := range beforeB {
					if strings.Contains(string(fr), `"`+id+`"`) && !maySee(a, b) && !canTouch(a, b, beforeO) {
						t.Fatalf("%s: sent a frame about booking %s it may not see: %s", a, id, fr)
					}
				}
				if a.Role != "customer" && hasKey(v, "otp") {
					t.Fatalf("%s: sent a frame with an OTP: %s", a, fr)
				}
			}
		}
	})
}

// FuzzLocation: a driver's point, whatever its numbers (NaN and infinities included, which
// JSON cannot carry but a bug upstream could), is either refused with invalid_argument and
// changes nothing, or taken as a point within every bound: coordinates in range, accuracy
// within bound, time within the skew and after the last point, heading in [0, 360), speed not
// negative, and no jump faster than the bound from the last point.
func FuzzLocation(f *testing.F) {
	f.Add(12.9716, 77.5946, 10.0, 90.0, 8.3, int64(1000))
	f.Add(12.9716, 77.5946, 0.0, 0.0, 0.0, int64(0))
	f.Add(90.0, 180.0, 100.0, 359.9, 0.0, int64(500))
	f.Add(-90.0, -180.0, 100.1, 360.0, -1.0, int64(-500))
	f.Add(12.98, 77.5946, 5.0, -1.0, -1.0, int64(2000)) // 1 km in 1 s
	f.Add(math.NaN(), 77.0, 5.0, 0.0, 0.0, int64(1000))
	f.Add(12.97, math.Inf(1), 5.0, 0.0, 0.0, int64(1000))
	f.Add(12.97, 77.59, math.NaN(), math.Inf(-1), math.NaN(), int64(1000))
	f.Add(12.9716, 77.5946, math.NaN(), 0.0, 0.0, int64(1000))
	f.Add(12.97, 77.59, 5.0, 720.5, 1e308, int64(121_000))
	f.Add(12.97, 77.59, 5.0, 0.0, 0.0, int64(math.MaxInt64))
	f.Add(12.97, 77.59, 5.0, 0.0, 0.0, int64(math.MinInt64))
	r := newFzRig(f)
	const lastTS = 1773480599000 // fzNow - 1 s
	last := dispatch.Point{Lat: 12.9716, Lng: 77.5946, TS: lastTS}
	f.Fuzz(func(t *testing.T, lat, lng, acc, heading, speed float64, dt int64) {
		p := dispatch.Point{Lat: lat, Lng: lng, Acc: acc, Heading: heading, Speed: speed, TS: lastTS + dt}
		if dt != 0 && (p.TS-lastTS) != dt { // overflowed
			p.TS = dt
		}
		c := newConn(nil, 0, 0, func(string) {})
		d := newDriverSession(r.h, dispatch.Actor{ID: "d9", Role: "driver"}, c, &backlog{})
		prev := last
		d.last = &prev
		err := d.accept(p)
		got := d.last
		if err != nil {
			if !errors.Is(err, dispatch.ErrInvalid) {
				t.Fatalf("point %+v: error %v, want invalid_argument", p, err)
			}
			if *got != last {
				t.Fatalf("refused point %+v changed the last point to %+v", p, *got)
			}
			return
		}
		if *got == last {
			return // older than the last: dropped, latest wins
		}
		skew := time.UnixMilli(got.TS).Sub(fzNow)
		switch {
		case !(got.Lat >= -90 && got.Lat <= 90 && got.Lng >= -180 && got.Lng <= 180):
			t.Fatalf("took %+v: coordinates out of range", *got)
		case !(got.Acc >= 0 && got.Acc <= 100):
			t.Fatalf("took %+v: accuracy out of bound", *got)
		case skew > 2*time.Minute || skew < -2*time.Minute:
			t.Fatalf("took %+v: %s off the server clock", *got, skew)
		case got.TS <= last.TS:
			t.Fatalf("took %+v: not after the last point", *got)
		case !(got.Heading >= 0 && got.Heading < 360):
			t.Fatalf("took %+v: heading out of [0, 360)", *got)
		case !(got.Speed >= 0) || math.IsInf(got.Speed, 0):
			t.Fatalf("took %+v: speed negative or not a number", *got)
		}
		dist := dispatch.DistanceM(last.Lat, last.Lng, got.Lat, got.Lng)
		if kmh := dist / 1000 / (float64(got.TS-last.TS) / 3.6e6); dist > 50 && kmh > 200 {
			t.Fatalf("took %+v: a jump of %.0f m at %.0f km/h", *got, dist, kmh)
		}
	})
}

// TestWatchCap: a socket watches at most maxWatched bookings (each is a subscription); one more
// is refused and not subscribed, and one already watched may be watched again.
func TestWatchCap(t *testing.T) {
	r := newFzRig(t)
	ctx := context.Background()
	v := newViewer(r.h, dispatch.Actor{ID: "ops", Role: "dispatcher"}, newConn(nil, 0, 0, func(string) {}))
	defer v.stop(ctx)
	v.mu.Lock()
	for i := range maxWatched - 1 {
		v.watching[fmt.Sprint("bk_x", i)] = dispatch.Booking{}
	}
	v.mu.Unlock()
	if err := v.watch(ctx, "bk_a"); err != nil {
		t.Fatalf("watch number %d: got %v, want it taken", maxWatched, err)
	}
	if err := v.watch(ctx, "bk_b"); !errors.Is(err, dispatch.ErrInvalid) {
		t.Fatalf("watch number %d: got %v, want invalid_argument", maxWatched+1, err)
	}
	r.h.mu.Lock()
	_, subscribed := r.h.watchers["bk_b"][v]
	r.h.mu.Unlock()
	if subscribed {
		t.Fatal("the refused watch was registered")
	}
	if err := v.watch(ctx, "bk_a"); err != nil {
		t.Fatalf("watching bk_a again: got %v, want it taken", err)
	}
}
