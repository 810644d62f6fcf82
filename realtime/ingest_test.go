package realtime

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// fakeStore is the part of dispatch.BookingStore a driver's socket touches when it only sends
// locations and status: no bookings, no offers.
type fakeStore struct {
	dispatch.BookingStore
	mu      sync.Mutex
	drivers map[string]dispatch.DriverProfile
	active  map[string]dispatch.Booking // driver -> the booking a socket resumes
	// stall, when set, holds every Driver call until it is closed (or the call's context
	// ends), each telling stalled first: a MySQL that does not answer.
	stall, stalled chan struct{}
}

// Driver: every driver of these tests is registered and verified.
func (s *fakeStore) Driver(ctx context.Context, id string) (dispatch.DriverProfile, error) {
	s.mu.Lock()
	stall, stalled := s.stall, s.stalled
	s.mu.Unlock()
	if stall != nil {
		stalled <- struct{}{}
		select {
		case <-stall:
		case <-ctx.Done():
			return dispatch.DriverProfile{}, ctx.Err()
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.drivers[id]
	if !ok {
		d = dispatch.DriverProfile{ID: id, Name: id, Verified: true, LicenceExpires: "2099-12-31",
			Transmissions: []dispatch.Transmission{dispatch.Manual}}
	}
	return d, nil
}

func (s *fakeStore) UpsertDriver(ctx context.Context, d dispatch.DriverProfile) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.drivers[d.ID] = d
	return nil
}

func (s *fakeStore) ActiveBookingOf(ctx context.Context, id string) (dispatch.Booking, error) {
	return dispatch.Booking{}, dispatch.ErrNotFound
}

func (s *fakeStore) OpenOffers(ctx context.Context, id string) ([]dispatch.Offer, error) {
	return nil, nil
}

func (s *fakeStore) Resume(ctx context.Context, id string) (dispatch.Resume, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.active[id]; ok {
		return dispatch.Resume{Active: &b}, nil
	}
	return dispatch.Resume{}, nil
}

// gateway is a hub on a test server, writing into the test Redis under a key prefix of its own.
type gateway struct {
	hub    *Hub
	x      *geo.Index
	rdb    *redis.Client
	store  *fakeStore
	url    string
	reg    *prometheus.Registry
	prefix string
}

func newGateway(t *testing.T, opts Options) *gateway {
	t.Helper()
	return newGatewayOver(t, opts, nil)
}

// newGatewayOver is newGateway with the index the hub is given wrapped by wrap (nil: as it is).
func newGatewayOver(t *testing.T, opts Options, wrap func(*geo.Index) Index) *gateway {
	t.Helper()
	return newGatewayVia(t, opts, wrap, nil)
}

// testRedisAddr is the test Redis: DISPATCH_TEST_REDIS_ADDR, by default 127.0.0.1:6379.
func testRedisAddr() string {
	if addr := os.Getenv("DISPATCH_TEST_REDIS_ADDR"); addr != "" {
		return addr
	}
	return "127.0.0.1:6379"
}

// newGatewayVia is newGatewayOver whose hub subscribes through pubsub (nil: the test Redis
// client everything else uses), which the caller closes.
func newGatewayVia(t *testing.T, opts Options, wrap func(*geo.Index) Index, pubsub *redis.Client) *gateway {
	t.Helper()
	addr := testRedisAddr()
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	ctx, cancel := context.WithCancel(context.Background())
	if err := rdb.Ping(ctx).Err(); err != nil {
		cancel()
		t.Fatalf("the test Redis at %s does not answer (%v): start it or set DISPATCH_TEST_REDIS_ADDR", addr, err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "test:" + t.Name() + ":" + hex.EncodeToString(b[:]) + ":"
	x := geo.NewIndex(rdb, geo.Options{Prefix: prefix}) // as cmd/dispatchd's
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	reg := prometheus.NewRegistry()
	opts.Auth = func(r *http.Request) (dispatch.Actor, time.Time, error) {
		id := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if id == "" {
			return dispatch.Actor{}, time.Time{}, errors.New("no token")
		}
		return dispatch.Actor{ID: id, Role: "driver"}, time.Now().Add(time.Hour), nil
	}
	if opts.TrailKeep == nil {
		opts.TrailKeep = geo.TrailKeep
	}
	fs := &fakeStore{drivers: map[string]dispatch.DriverProfile{}, active: map[string]dispatch.Booking{}}
	w := geo.NewWriter(x, geo.WriterOptions{Interval: time.Millisecond}, reg, log)
	var index Index = x
	if wrap != nil {
		index = wrap(x)
	}
	var subscriber redis.UniversalClient = rdb
	if pubsub != nil {
		subscriber = pubsub
	}
	hub := NewHub(subscriber, NewBus(rdb, prefix, geoGrid), dispatch.NewService(fs, x, nil, dispatch.ServiceOptions{}), fs, index, w, opts, reg, log)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	srv := httptest.NewServer(hub)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = hub.Shutdown(sctx)
		srv.Close()
		cancel()
		wg.Wait()
		var cursor uint64
		for {
			keys, next, err := rdb.Scan(context.Background(), cursor, prefix+"*", 1000).Result()
			if err != nil {
				break
			}
			if len(keys) > 0 {
				rdb.Del(context.Background(), keys...)
			}
			if cursor = next; cursor == 0 {
				break
			}
		}
		rdb.Close()
	})
	return &gateway{hub: hub, x: x, rdb: rdb, store: fs, url: "ws" + strings.TrimPrefix(srv.URL, "http") + "/v1/ws", reg: reg, prefix: prefix}
}

type client struct {
	t   *testing.T
	ws  *websocket.Conn
	seq int64
}

// dial opens a driver's socket and reads its hello.
func (g *gateway) dial(t *testing.T, driverID string) *client {
	t.Helper()
	h := http.Header{}
	h.Set("Authorization", "Bearer "+driverID)
	ws, _, err := websocket.DefaultDialer.Dial(g.url, h)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	c := &client{t: t, ws: ws}
	if f := c.read(); f.Type != "hello" {
		t.Fatalf("first frame: got %q, want hello", f.Type)
	}
	return c
}

type inFrame struct {
	Type string `json:"type"`
	Data struct {
		Ref     *int64 `json:"ref"`
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"data"`
}

func (c *client) read() inFrame {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	var f inFrame
	if err := c.ws.ReadJSON(&f); err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// send writes a frame with the next seq and returns that seq.
func (c *client) send(typ string, data any) int64 {
	c.t.Helper()
	c.seq++
	b, _ := json.Marshal(data)
	if err := c.ws.WriteJSON(map[string]any{"type": typ, "seq": c.seq, "data": json.RawMessage(b)}); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	return c.seq
}

// sync sends a status frame and reads up to its ack, returning the frames before it: every
// frame the server had to say about what was sent before (the socket is ordered).
func (c *client) sync() []inFrame {
	c.t.Helper()
	seq := c.send("status", map[string]string{"state": "online"})
	var before []inFrame
	for {
		f := c.read()
		if f.Type == "ack" && f.Data.Ref != nil && *f.Data.Ref == seq {
			return before
		}
		before = append(before, f)
	}
}

// round6 is a coordinate as the index stores it.
func round6(x float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 6, 64), 64)
	return f
}

func loc(lat, lng, acc float64, ts int64) map[string]any {
	return map[string]any{"lat": lat, "lng": lng, "acc": acc, "heading": 90, "ts": ts}
}

// waitPosition waits until the driver's indexed point has time ts.
func (g *gateway) waitPosition(t *testing.T, id string, ts int64) dispatch.Position {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := g.x.Position(context.Background(), id)
		if err == nil && p.At.UnixMilli() == ts {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver %s: indexed point is %+v (%v), want ts %d", id, p, err, ts)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (g *gateway) rejected(reason string) float64 {
	var m dto.Metric
	if err := g.hub.m.rejected.WithLabelValues(reason).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// Every validation rule of a location point: each bad point is answered with an error naming
// its seq and counted by reason, nothing of it is indexed, and the socket stays open.
func TestLocationValidation(t *testing.T) {
	g := newGateway(t, Options{Rate: 1000})
	c := g.dial(t, "v1")
	c.sync() // online
	now := time.Now()
	ms := now.UnixMilli()
	lat, lng := 12.9716, 77.5946
	c.send("location", loc(lat, lng, 5, ms-10_000))
	c.sync()
	g.waitPosition(t, "v1", ms-10_000)

	cases := []struct {
		name   string
		point  map[string]any
		reason string // "" when silently ignored
	}{
		{"lat above 90", loc(90.5, lng, 5, ms-9000), "out_of_range"},
		{"lat below -90", loc(-91, lng, 5, ms-9000), "out_of_range"},
		{"lng above 180", loc(lat, 180.01, 5, ms-9000), "out_of_range"},
		{"lng below -180", loc(lat, -181, 5, ms-9000), "out_of_range"},
		{"accuracy worse than the bound", loc(lat, lng, 150, ms-9000), "inaccurate"},
		{"negative accuracy", loc(lat, lng, -1, ms-9000), "inaccurate"},
		{"no timestamp", map[string]any{"lat": lat, "lng": lng}, "no_timestamp"},
		{"ts 3 minutes ahead", loc(lat, lng, 5, ms+3*60_000), "clock_skew"},
		{"ts 3 minutes behind", loc(lat, lng, 5, ms-3*60_000), "clock_skew"},
		{"jump of 1 km in 1 s", loc(lat+0.009, lng, 5, ms-9000), "too_fast"},
		{"older than the last point", loc(lat, lng+0.0001, 5, ms-20_000), ""},
		{"same time as the last point", loc(lat, lng+0.0001, 5, ms-10_000), ""},
		{"malformed", map[string]any{"lat": "north", "lng": lng, "ts": ms}, "malformed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			reason := tc.reason
			if reason == "" {
				reason = "out_of_order"
			}
			before := g.rejected(reason)
			seq := c.send("location", tc.point)
			frames := c.sync()
			if tc.reason == "" {
				if len(frames) != 0 {
					t.Fatalf("got %+v, want no answer to an out-of-order point", frames)
				}
			} else if len(frames) != 1 || frames[0].Type != "error" || frames[0].Data.Ref == nil || *frames[0].Data.Ref != seq ||
				frames[0].Data.Code != "invalid_argument" {
				t.Fatalf("got %+v, want one invalid_argument error with ref %d", frames, seq)
			}
			if got := g.rejected(reason) - before; got != 1 {
				t.Fatalf("rejected{reason=%q} went up by %v, want 1", reason, got)
			}
		})
	}
	c.t = t
	// Still open, and a good point after all that is taken.
	c.send("location", loc(12.9721, lng, 5, ms-5000)) // 55 m in 5 s: 40 km/h
	if frames := c.sync(); len(frames) != 0 {
		t.Fatalf("good point: got %+v, want no answer", frames)
	}
	p := g.waitPosition(t, "v1", ms-5000)
	if p.Lat != 12.9721 || p.Lng != lng || p.State != dispatch.DriverAvailable {
		t.Fatalf("indexed: got %+v, want %v,%v available", p, 12.9721, lng)
	}
	// A frame that is not an envelope: an error without ref, and the socket stays open.
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if frames := c.sync(); len(frames) != 1 || frames[0].Type != "error" || frames[0].Data.Ref != nil {
		t.Fatalf("bad frame: got %+v, want one error without ref", frames)
	}
}

// A batch after a gap is taken oldest first and the latest point wins; a batch out of order
// loses nothing newer than what it holds; one bad point does not spoil the others.
func TestLocationBatches(t *testing.T) {
	g := newGateway(t, Options{Rate: 1000})
	ms := time.Now().UnixMilli()
	lat, lng := 12.9716, 77.5946
	pts := func(offsets ...int) []map[string]any {
		var out []map[string]any
		for _, o := range offsets {
			out = append(out, loc(round6(lat+float64(o)*0.0001), lng, 5, ms-60_000+int64(o)*1000))
		}
		return out
	}

	c := g.dial(t, "b1")
	c.send("locations", map[string]any{"points": pts(1, 2, 3, 4)})
	if frames := c.sync(); len(frames) != 0 {
		t.Fatalf("oldest-first batch: got %+v, want no answer", frames)
	}
	g.waitPosition(t, "b1", ms-60_000+4000)

	c2 := g.dial(t, "b2")
	before := g.rejected("out_of_order")
	c2.send("locations", map[string]any{"points": pts(4, 1, 3, 2)})
	if frames := c2.sync(); len(frames) != 0 {
		t.Fatalf("out-of-order batch: got %+v, want no answer", frames)
	}
	p := g.waitPosition(t, "b2", ms-60_000+4000)
	if p.Lat != round6(lat+0.0004) {
		t.Fatalf("out-of-order batch: got lat %v, want the latest %v", p.Lat, round6(lat+0.0004))
	}
	if got := g.rejected("out_of_order") - before; got != 3 {
		t.Fatalf("out-of-order batch: got %v points refused as out of order, want 3", got)
	}

	c3 := g.dial(t, "b3")
	batch := pts(1, 2, 3)
	batch[1]["lat"] = 95.0
	seq := c3.send("locations", map[string]any{"points": batch})
	frames := c3.sync()
	if len(frames) != 1 || frames[0].Type != "error" || *frames[0].Data.Ref != seq {
		t.Fatalf("batch with a bad point: got %+v, want one error with ref %d", frames, seq)
	}
	g.waitPosition(t, "b3", ms-60_000+3000)
}

// Past its rate a socket's location frames are dropped and counted; the socket stays open.
func TestLocationRateLimit(t *testing.T) {
	g := newGateway(t, Options{Rate: 5})
	c := g.dial(t, "r1")
	ms := time.Now().UnixMilli()
	before := g.rejected("rate_limited")
	// 40 frames 10 ms apart by their own clock, sent at once: a burst of 10 passes, plus one
	// for each 200 ms of their clock (about 2).
	const n = 40
	for i := 1; i <= n; i++ {
		c.send("location", loc(12.9716+float64(i)*0.00001, 77.5946, 5, ms-60_000+int64(i)*10))
	}
	if frames := c.sync(); len(frames) != 0 {
		t.Fatalf("got %+v, want no answer to dropped frames", frames)
	}
	if dropped := g.rejected("rate_limited") - before; dropped < n-14 || dropped > n-10 {
		t.Fatalf("10 ms apart: rate_limited went up by %v, want between %d and %d", dropped, n-14, n-10)
	}
	// Frames 200 ms apart by their clock (5 a second), read all at once as after a pause of
	// the gateway: all pass, up to the flood guard of five seconds' worth by the server's clock.
	c2 := g.dial(t, "r2")
	before = g.rejected("rate_limited")
	for i := 1; i <= 30; i++ {
		c2.send("location", loc(12.9716+float64(i)*0.0001, 77.5946, 5, ms-60_000+int64(i)*200))
	}
	if frames := c2.sync(); len(frames) != 0 {
		t.Fatalf("got %+v, want no answer to dropped frames", frames)
	}
	if dropped := g.rejected("rate_limited") - before; dropped < 4 || dropped > 5 {
		t.Fatalf("200 ms apart, read late: rate_limited went up by %v, want 4 or 5 (past the flood guard of 25)", dropped)
	}
	// The last point that passed is indexed: the 25th, or the 26th if a token came back meanwhile.
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := g.x.Position(context.Background(), "r2")
		if err == nil && p.At.UnixMilli() >= ms-60_000+25*200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("r2: indexed %+v (%v), want the 25th point or later", p, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Still open, and what passed is indexed.
	c.send("location", loc(12.9716, 77.5947, 5, ms))
	time.Sleep(250 * time.Millisecond) // a token comes back
	c.send("location", loc(12.9716, 77.5947, 5, ms+1))
	if frames := c.sync(); len(frames) != 0 {
		t.Fatalf("got %+v, want no answer", frames)
	}
	g.waitPosition(t, "r1", ms+1)
}

// The points of a driver on a booking reach its customers' gateways (trk:<booking>) from the
// driver's gateway, without the socket waiting on Redis for it; a driver on no booking's are
// not published there.
func TestTrackedPositions(t *testing.T) {
	g := newGateway(t, Options{Rate: 1000})
	g.store.mu.Lock()
	g.store.active["t1"] = dispatch.Booking{ID: "bk_t1", Status: dispatch.StatusAssigned, CustomerID: "c1",
		Driver: &dispatch.DriverRef{ID: "t1"}}
	g.store.mu.Unlock()
	ctx := context.Background()
	ps := g.rdb.PSubscribe(ctx, g.prefix+"trk:*")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	ms := time.Now().UnixMilli()
	idle := g.dial(t, "t0") // on no booking
	idle.send("location", loc(12.9716, 77.5946, 5, ms))
	idle.sync()
	c := g.dial(t, "t1")
	c.send("location", loc(12.9721, 77.5946, 5, ms))
	c.sync()
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got driverLocation
	if err := json.Unmarshal([]byte(msg.Payload), &got); err != nil {
		t.Fatal(err)
	}
	want := driverLocation{BookingID: "bk_t1", Lat: 12.9721, Lng: 77.5946, Heading: 90, TS: ms}
	if msg.Channel != g.prefix+"trk:bk_t1" || got.BookingID != want.BookingID || got.Lat != want.Lat || got.Lng != want.Lng ||
		got.Heading != want.Heading || got.TS != want.TS || got.EtaS != nil {
		t.Fatalf("got %s on %s, want %+v on %strk:bk_t1", msg.Payload, msg.Channel, want, g.prefix)
	}
}
