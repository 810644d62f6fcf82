package dispatch_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/drivers4me/dispatch/store"
	"github.com/drivers4me/dispatch/store/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// notes is a fake Notifier (dispatch's own interface): it records what drivers were sent.
type notes struct {
	mu   sync.Mutex
	sent map[string][]map[string]any // driver -> frames (with "type")
	ch   chan note
}

type note struct {
	driver, typ string
	data        map[string]any
}

func (n *notes) ToDriver(_ context.Context, driverID, typ string, data any) error {
	m, _ := data.(map[string]any)
	n.mu.Lock()
	n.sent[driverID] = append(n.sent[driverID], map[string]any{"type": typ, "data": m})
	n.mu.Unlock()
	if n.ch != nil {
		select {
		case n.ch <- note{driverID, typ, m}:
		default:
		}
	}
	return nil
}

// offers lists the booking ids offered to a driver.
func (n *notes) offers(driver string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for _, f := range n.sent[driver] {
		if f["type"] == "offer" {
			out = append(out, f["data"].(map[string]any)["booking_id"].(string))
		}
	}
	return out
}

func (n *notes) lastOffer(driver string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i := len(n.sent[driver]) - 1; i >= 0; i-- {
		if f := n.sent[driver][i]; f["type"] == "offer" {
			return f["data"].(map[string]any)["offer_id"].(string)
		}
	}
	return ""
}

// clock is a time the test moves by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// rig is the engine on real Redis and MariaDB.
type rig struct {
	t       testing.TB
	db      *store.DB
	rdb     redis.UniversalClient
	index   *geo.Index
	regions *geo.Regions
	notes   *notes
	clock   *clock
	svc     *dispatch.Service
	prefix  string
}

func newRig(t testing.TB) *rig {
	t.Helper()
	dsn := storetest.MySQL(t)
	db := storetest.Open(t, dsn)
	if err := db.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("these tests need Redis on 127.0.0.1:6379: %v", err)
	}
	prefix := fmt.Sprintf("t%d:", time.Now().UnixNano())
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			rdb.Del(ctx, iter.Val())
		}
		rdb.Close()
	})
	r := &rig{t: t, db: db, rdb: rdb, prefix: prefix,
		index:   geo.NewIndex(rdb, geo.Options{Prefix: prefix}),
		regions: geo.NewRegions(rdb, geo.Options{Prefix: prefix}),
		notes:   &notes{sent: map[string][]map[string]any{}},
		clock:   &clock{now: time.Now()},
	}
	r.svc = dispatch.NewService(db, r.index, r.notes, dispatch.ServiceOptions{Now: r.clock.Now})
	t.Cleanup(func() {
		if n, err := db.InvariantViolations(context.Background()); err != nil || n != 0 {
			t.Errorf("invariant violations at the end: got %d (%v), want 0", n, err)
		}
	})
	return r
}

func (r *rig) matcher(mod func(*dispatch.MatcherOptions)) *dispatch.Matcher {
	// Sweep at every tick: these tests have no relay to bring events (TestEventIntake has).
	o := dispatch.MatcherOptions{Window: time.Second, OfferTimeout: 10 * time.Second, Radii: []float64{2000, 5000},
		MaxSearch: 5 * time.Minute, Fresh: 24 * time.Hour, Now: r.clock.Now, Sweep: -1}
	if mod != nil {
		mod(&o)
	}
	return dispatch.NewMatcher(r.db, r.index, r.regions, r.notes, o, nil, zerolog.New(zerolog.NewTestWriter(r.t)).Level(zerolog.WarnLevel))
}

// driver puts an available driver at a point, with the skills given (both when none).
func (r *rig) driver(id string, lat, lng float64, skills ...dispatch.Transmission) {
	r.t.Helper()
	ctx := context.Background()
	if len(skills) == 0 {
		skills = []dispatch.Transmission{dispatch.Manual, dispatch.Automatic}
	}
	if err := r.db.UpsertDriver(ctx, dispatch.DriverProfile{ID: id, Name: id, Rating: 4.8, Transmissions: skills,
		Verified: true, LicenceExpires: "2099-12-31"}); err != nil {
		r.t.Fatal(err)
	}
	if _, err := r.index.Write(ctx, []geo.Update{{DriverID: id, NewState: dispatch.DriverAvailable,
		Point: dispatch.Point{Lat: lat, Lng: lng, TS: r.clock.Now().UnixMilli()}}}); err != nil {
		r.t.Fatal(err)
	}
	if err := r.index.SetState(ctx, id, dispatch.DriverAvailable); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) book(customer string, lat, lng float64, t dispatch.Transmission, start *time.Time) dispatch.Booking {
	r.t.Helper()
	b, _, err := r.svc.CreateBooking(context.Background(), dispatch.Actor{ID: customer, Role: "customer"},
		dispatch.BookingRequest{Pickup: dispatch.Place{Lat: lat, Lng: lng}, Hours: 2, StartAt: start, Car: dispatch.Car{Transmission: t}},
		dispatch.NewID("key"), "hash")
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// step advances the clock and runs one tick.
func (r *rig) step(m *dispatch.Matcher, d time.Duration) {
	r.t.Helper()
	r.clock.Add(d)
	if err := m.Tick(context.Background()); err != nil {
		r.t.Fatalf("tick: %v", err)
	}
}

func (r *rig) status(id string) dispatch.Status {
	r.t.Helper()
	b, err := r.db.Booking(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return b.Status
}

func driverActor(id string) dispatch.Actor { return dispatch.Actor{ID: id, Role: "driver"} }

const baseLat, baseLng = 12.9716, 77.5946

// metres north of the base point.
func north(m float64) float64 { return baseLat + m/111320 }

func TestTimeoutAndReoffer(t *testing.T) {
	r := newRig(t)
	m := r.matcher(nil)
	r.driver("near", north(300), baseLng)
	r.driver("far", north(900), baseLng)
	b := r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("near"); len(got) != 1 || got[0] != b.ID {
		t.Fatalf("first offer: near got %v, want [%s]", got, b.ID)
	}
	if got := r.notes.offers("far"); len(got) != 0 {
		t.Fatalf("far got %v while near holds the offer, want none", got)
	}
	r.step(m, 11*time.Second) // past the offer timeout: expired and revoked
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("far"); len(got) != 1 || got[0] != b.ID {
		t.Fatalf("after a timeout: far got %v, want the booking re-offered", got)
	}
	if got := r.notes.offers("near"); len(got) != 1 {
		t.Fatalf("near was offered again after letting it expire: %v", got)
	}
	// near's late accept is refused and changes nothing.
	if _, err := r.svc.Accept(context.Background(), driverActor("near"), firstOfferID(r, "near")); err == nil {
		t.Fatal("accepting an expired offer: got nil, want an error")
	}
	if st := r.status(b.ID); st != dispatch.StatusSearching {
		t.Fatalf("status: got %s, want searching", st)
	}
}

func firstOfferID(r *rig, driver string) string {
	r.notes.mu.Lock()
	defer r.notes.mu.Unlock()
	for _, f := range r.notes.sent[driver] {
		if f["type"] == "offer" {
			return f["data"].(map[string]any)["offer_id"].(string)
		}
	}
	return ""
}

func TestDeclineExcludesTheDriver(t *testing.T) {
	r := newRig(t)
	m := r.matcher(nil)
	r.driver("near", north(200), baseLng)
	r.driver("far", north(1200), baseLng)
	b := r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if err := r.svc.Decline(context.Background(), driverActor("near"), r.notes.lastOffer("near"), "too far"); err != nil {
		t.Fatalf("decline: %v", err)
	}
	for i := 0; i < 3; i++ {
		r.step(m, 1100*time.Millisecond)
	}
	if got := r.notes.offers("near"); len(got) != 1 {
		t.Fatalf("near declined yet was offered %d times, want once", len(got))
	}
	if got := r.notes.offers("far"); len(got) != 1 || got[0] != b.ID {
		t.Fatalf("far got %v, want the declined booking", got)
	}
	// A new matcher (another process taking over) still knows near declined.
	m2 := r.matcher(nil)
	if err := r.svc.Decline(context.Background(), driverActor("far"), r.notes.lastOffer("far"), ""); err != nil {
		t.Fatal(err)
	}
	r.step(m2, 0)
	r.step(m2, 1100*time.Millisecond)
	if got := r.notes.offers("near"); len(got) != 1 {
		t.Fatalf("after a takeover, near was offered the booking it declined: %v", got)
	}
}

func TestRadiusGrows(t *testing.T) {
	r := newRig(t)
	m := r.matcher(func(o *dispatch.MatcherOptions) { o.Radii = []float64{1000, 2000, 4000} })
	r.driver("far", north(3000), baseLng)
	r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	for i, want := range []int{0, 0, 1} {
		r.step(m, 1100*time.Millisecond)
		if got := len(r.notes.offers("far")); got != want {
			t.Fatalf("window %d (radius step %d): got %d offers, want %d", i+1, i, got, want)
		}
	}
}

func TestUnfulfilled(t *testing.T) {
	r := newRig(t)
	m := r.matcher(func(o *dispatch.MatcherOptions) { o.MaxSearch = 30 * time.Second })
	b := r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 10*time.Second)
	if st := r.status(b.ID); st != dispatch.StatusSearching {
		t.Fatalf("after 10 s: got %s, want searching", st)
	}
	r.step(m, 25*time.Second)
	if st := r.status(b.ID); st != dispatch.StatusUnfulfilled {
		t.Fatalf("after 35 s: got %s, want unfulfilled", st)
	}
}

func TestTransmissionSkills(t *testing.T) {
	r := newRig(t)
	m := r.matcher(nil)
	r.driver("manual-only", north(100), baseLng, dispatch.Manual)
	r.driver("auto", north(1500), baseLng, dispatch.Automatic)
	b := r.book("c1", baseLat, baseLng, dispatch.Automatic, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if got := r.notes.offers("manual-only"); len(got) != 0 {
		t.Fatalf("an automatic car offered to a manual-only driver: %v", got)
	}
	if got := r.notes.offers("auto"); len(got) != 1 || got[0] != b.ID {
		t.Fatalf("auto got %v, want the booking", got)
	}
}

// TestBatchBeatsGreedy: the window is solved as one assignment, not first come first served.
func TestBatchBeatsGreedy(t *testing.T) {
	for _, greedy := range []bool{false, true} {
		t.Run(fmt.Sprintf("greedy=%v", greedy), func(t *testing.T) {
			r := newRig(t)
			m := r.matcher(func(o *dispatch.MatcherOptions) { o.Greedy = greedy; o.Radii = []float64{6000} })
			// Booking A is older; X is near both; Y is near A only (but farther than X).
			r.driver("X", north(150), baseLng)
			r.driver("Y", north(-300), baseLng)
			a := r.book("cA", baseLat, baseLng, dispatch.Manual, nil)
			r.clock.Add(time.Millisecond)
			r.book("cB", north(400), baseLng, dispatch.Manual, nil)
			r.step(m, 0)
			r.step(m, 1100*time.Millisecond)
			gotX, gotY := r.notes.offers("X"), r.notes.offers("Y")
			if len(gotX) != 1 || len(gotY) != 1 {
				t.Fatalf("offers: X %v, Y %v; want one each", gotX, gotY)
			}
			if greedy && gotX[0] != a.ID {
				t.Fatalf("greedy: X got %s, want the older booking %s (nearest first)", gotX[0], a.ID)
			}
			if !greedy && gotY[0] != a.ID {
				t.Fatalf("batch: Y got %s, want %s (A takes Y so that B gets X: 550 m in all, not 850)", gotY[0], a.ID)
			}
		})
	}
}
