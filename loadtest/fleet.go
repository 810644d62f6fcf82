package loadtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	mrand "math/rand"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// FleetOptions configure simulated drivers and customers.
type FleetOptions struct {
	// URL is the socket address, ws://127.0.0.1:PORT/v1/ws; only loopback is accepted.
	URL string
	// REST is the base URL of the REST API (default: URL's host), for a gateway that serves
	// sockets only (DISPATCH_ROLES=gateway) beside an API process.
	REST   string
	Secret []byte
	// Drivers on their own sockets; each sends a point every Tick.
	Drivers int
	// Registered: the drivers' verified profiles exist already (seeded before the run), so no
	// driver registers through the API before its first socket.
	Registered bool
	// FirstDriver numbers the first driver, so that several processes share one id space.
	FirstDriver int
	Tick        time.Duration // default 2 s
	// BookingsPerMinute by simulated customers (0: none), unless Demand is set.
	BookingsPerMinute float64
	// Demand, when its Name is set, paces the customers from the moment Run starts instead.
	Demand Profile
	// ScheduledP is the fraction of bookings made ahead (start_at 1 h to 3 days out); the rest
	// are for now.
	ScheduledP float64
	// MaxPendingBookings bounds the booking requests in flight (default 256); a booking due
	// while all are busy is not made and is counted in BookingsSkipped.
	MaxPendingBookings int
	// AcceptP is the probability a driver accepts an offer (default 0.85 when it and IgnoreP
	// are both zero). IgnoreP is the probability it lets the offer expire; the rest it declines.
	AcceptP float64
	IgnoreP float64
	// AnswerDelay is how long a driver takes to answer an offer (default 300 ms).
	AnswerDelay time.Duration
	// ReconnectP is the chance, per driver and minute, that its socket goes away (the app is
	// backgrounded) and comes back 1 to 3 ticks later, sending the points of the gap as one
	// `locations` batch.
	ReconnectP float64
	// Approach, when set, is a time-lapse: a driver reaches its pickup within this long (at up
	// to 160 km/h, under the server's plausibility bound) and arrives then. Zero: drivers drive
	// at their own speed and arrive within 150 m.
	Approach time.Duration
	// TripTime is how long a simulated trip lasts once started (default 40 s).
	TripTime time.Duration
	City     City
	Seed     int64
	// IDPrefix names the simulated users (default "sim").
	IDPrefix string
	// LocalAddrs, when set, spread the sockets over these 127.0.0.x source addresses.
	LocalAddrs []string
	// OTP tells a driver the OTP of its booking, as the customer would at the car. Default:
	// ask this fleet's own customers (Fleet.OTP).
	OTP func(ctx context.Context, bookingID string) (string, error)
	// Series receives what the fleet does second by second (default: one starting at NewFleet).
	Series *Series
}

// Counts are what a fleet did, for the report and for checking against the server's counters.
type Counts struct {
	LocationsSent     atomic.Int64 // points written to sockets (a `locations` batch counts each point)
	LocationErrors    atomic.Int64 // error frames answering a location
	OffersReceived    atomic.Int64 // distinct offers
	OffersRepeated    atomic.Int64 // an offer seen again (sent again after a reconnect)
	OffersAccepted    atomic.Int64 // offer.accept acknowledged by the server
	AcceptsRefused    atomic.Int64 // offer.accept answered with an error (expired, taken)
	OffersDeclined    atomic.Int64 // offer.decline sent
	OffersIgnored     atomic.Int64 // offers left to expire on purpose
	BookingsCreated   atomic.Int64 // 201 answers
	BookingErrors     atomic.Int64 // booking requests that failed
	BookingsSkipped   atomic.Int64 // bookings not made because MaxPendingBookings were in flight
	BookingsCompleted atomic.Int64 // trip.end acknowledged (or found completed after a reconnect)
	ActionErrors      atomic.Int64 // error frames answering anything but a location or an accept
	Unanswered        atomic.Int64 // messages whose socket closed before their answer
	Reconnects        atomic.Int64 // sockets dropped on purpose and opened again
	Errors            atomic.Int64 // sockets that failed (dial, read or write)
	Connected         atomic.Int64 // driver sockets open now
	Arrived           atomic.Int64 // drivers whose first socket has opened
	InFlight          atomic.Int64 // messages sent and not yet answered
	RateLimited       atomic.Int64 // REST requests answered 429 and sent again later

	refusals sync.Map // "type: code" -> *refusal
}

// refusal counts one kind of error frame and keeps its first message as an example.
type refusal struct {
	n       atomic.Int64
	example string
}

func (c *Counts) refused(typ, code, msg string) {
	key := typ + ": " + code
	v, ok := c.refusals.Load(key)
	if !ok {
		v, _ = c.refusals.LoadOrStore(key, &refusal{example: msg})
	}
	v.(*refusal).n.Add(1)
}

// Fleet runs simulated drivers and customers until its context ends. Drain stops the demand
// and makes drivers decline new offers while they finish their trips.
type Fleet struct {
	opts   FleetOptions
	log    zerolog.Logger
	Counts Counts
	// Series is what the fleet did second by second.
	Series *Series

	rest      *client
	draining  atomic.Bool
	drained   chan struct{}
	drainOnce sync.Once
	lastOffer atomic.Int64 // Unix ms of the last distinct offer received

	otps sync.Map // booking id -> OTP, as the customer would tell its driver
	// registering bounds the registrations in flight (registerAtOnce), as an operator's import
	// would, instead of the whole fleet's at once.
	registering chan struct{}
}

// registerAtOnce is how many drivers of one process register at a time.
const registerAtOnce = 16

// NewFleet returns a fleet.
func NewFleet(opts FleetOptions, log zerolog.Logger) *Fleet {
	if opts.Tick <= 0 {
		opts.Tick = 2 * time.Second
	}
	if opts.AcceptP == 0 && opts.IgnoreP == 0 {
		opts.AcceptP = 0.85
	}
	if opts.AnswerDelay <= 0 {
		opts.AnswerDelay = 300 * time.Millisecond
	}
	if opts.TripTime <= 0 {
		opts.TripTime = 40 * time.Second
	}
	if opts.City.Name == "" {
		opts.City = Bengaluru
	}
	if opts.IDPrefix == "" {
		opts.IDPrefix = "sim"
	}
	if opts.MaxPendingBookings <= 0 {
		opts.MaxPendingBookings = 256
	}
	if opts.Series == nil {
		opts.Series = NewSeries(time.Now())
	}
	f := &Fleet{opts: opts, log: log, Series: opts.Series, drained: make(chan struct{}),
		registering: make(chan struct{}, registerAtOnce)}
	rest := opts.REST
	if rest == "" {
		rest = baseOf(opts.URL)
	}
	f.rest = newClient(rest, opts.Secret, opts.MaxPendingBookings, &f.Counts.RateLimited)
	if f.opts.OTP == nil {
		f.opts.OTP = f.OTP
	}
	return f
}

// CheckLoopback refuses any target that is not on this machine's loopback.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("target %q: %w", raw, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("target %q is not a loopback address: load is only ever sent to 127.0.0.0/8 or ::1", raw)
	}
	return nil
}

// Run starts every driver and the customers, and returns when ctx ends and every socket has
// closed. Customers stop earlier when Drain is called.
func (f *Fleet) Run(ctx context.Context) error {
	if err := CheckLoopback(f.opts.URL); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		f.RunCustomers(ctx)
	}()
	f.RunDrivers(ctx)
	wg.Wait()
	return nil
}

// RunDrivers runs the fleet's drivers until ctx ends (Run without the customers: a run that
// warms up connects its drivers first and starts the demand once they are all there).
func (f *Fleet) RunDrivers(ctx context.Context) {
	var wg sync.WaitGroup
	for i := 0; i < f.opts.Drivers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			f.driver(ctx, f.opts.FirstDriver+i)
		}(i)
	}
	wg.Wait()
}

// RunCustomers books to the demand (if the fleet has one) until ctx ends or Drain.
func (f *Fleet) RunCustomers(ctx context.Context) {
	if f.opts.BookingsPerMinute > 0 || f.opts.Demand.Name != "" {
		f.customers(ctx)
	}
}

// Drain stops the customers and makes drivers decline every new offer and stop dropping their
// sockets on purpose; trips under way go on.
// Safe to call more than once and from any goroutine.
func (f *Fleet) Drain() {
	f.drainOnce.Do(func() {
		f.draining.Store(true)
		close(f.drained)
	})
}

// LastOffer is when a driver last received a new offer (zero: never).
func (f *Fleet) LastOffer() time.Time {
	ms := f.lastOffer.Load()
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// OTP is the booking's OTP as its customer sees it once a driver is assigned: the customer
// reads it from GET /v1/bookings/{id}. Only bookings made by this fleet's customers are known.
func (f *Fleet) OTP(ctx context.Context, bookingID string) (string, error) {
	if otp, ok := f.otps.Load(bookingID); ok {
		return otp.(string), nil
	}
	cust, ok := f.Series.CustomerOf(bookingID)
	if !ok {
		return "", fmt.Errorf("booking %s was not made by this fleet", bookingID)
	}
	var b bookingView
	if err := f.rest.do(ctx, "GET", "/v1/bookings/"+url.PathEscape(bookingID), "customer", cust, nil, nil, &b); err != nil {
		return "", fmt.Errorf("customer reads booking %s: %w", bookingID, err)
	}
	if b.OTP == "" {
		return "", fmt.Errorf("booking %s shows its customer no OTP yet (status %s)", bookingID, b.Status)
	}
	f.otps.Store(bookingID, b.OTP)
	return b.OTP, nil
}

func (f *Fleet) dialer(i int) *websocket.Dialer {
	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	d.NetDialContext = sourceDialer(f.opts.LocalAddrs, i, 10*time.Second).DialContext
	return d
}

// sourceDialer dials from the (i mod n)th of addrs (none: the kernel's choice). The source
// port is chosen at connect, not at bind (IP_BIND_ADDRESS_NO_PORT): a bind to a port of its own
// needs a port free for the address whatever the destination, and past some 20,000 sockets from
// one address each bind scanned the range for tens of milliseconds, then failed.
func sourceDialer(addrs []string, i int, timeout time.Duration) *net.Dialer {
	nd := &net.Dialer{Timeout: timeout}
	if n := len(addrs); n > 0 {
		nd.LocalAddr = &net.TCPAddr{IP: net.ParseIP(addrs[i%n])}
		nd.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			})
			return errors.Join(err, serr)
		}
	}
	return nd
}

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT (linux/in.h), which package syscall
// does not name.
const ipBindAddressNoPort = 24

type frame struct {
	Type string          `json:"type"`
	Seq  int64           `json:"seq,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

type point struct {
	Lat     float64 `json:"lat"`
	Lng     float64 `json:"lng"`
	Heading float64 `json:"heading"`
	Speed   float64 `json:"speed"`
	Acc     float64 `json:"acc"`
	TS      int64   `json:"ts"`
}

// maxGapPoints bounds a `locations` batch (the server reads frames of at most 4 KiB).
const maxGapPoints = 20

// maxSpeedMS is the fastest a simulated driver moves: 160 km/h, under the server's 200 km/h
// plausibility bound with room for timer jitter (speed is always measured on real elapsed time).
const maxSpeedMS = 44.0

type trip struct {
	bookingID  string
	pickupLat  float64
	pickupLng  float64
	status     string
	assignedAt time.Time
	startedAt  time.Time
	arriveSent bool
	startSent  bool
	endSent    bool
}

// driverSim is one simulated driver across its sockets. Position fields belong to the driver's
// own goroutine; the fields under mu are shared with the socket reader.
type driverSim struct {
	f      *Fleet
	i      int
	id     string
	r      *mrand.Rand // movement and reconnects: driver goroutine only
	lat    float64
	lng    float64
	head   float64
	speed  float64
	homeLa float64
	homeLn float64
	lastTS int64
	gap    []point
	// registered: the driver's profile exists and is verified (register); arrived: a socket
	// of the driver's has opened.
	registered, arrived bool

	mu         sync.Mutex
	decide     *mrand.Rand // offer decisions, under mu
	cur        *trip
	seen       map[string]bool
	endPending string // booking whose trip.end was unanswered when a socket closed
}

// driver is one simulated driver: it reconnects until ctx ends.
func (f *Fleet) driver(ctx context.Context, i int) {
	seed := f.opts.Seed*1_000_003 + int64(i)
	d := &driverSim{f: f, i: i, id: fmt.Sprintf("%s-drv-%d", f.opts.IDPrefix, i), r: mrand.New(mrand.NewSource(seed)),
		decide: mrand.New(mrand.NewSource(seed ^ 0x5eed)), seen: map[string]bool{}}
	d.lat, d.lng = f.opts.City.Point(d.r, 0.6)
	d.homeLa, d.homeLn = f.opts.City.nearestHotspot(d.lat, d.lng)
	d.head = d.r.Float64() * 360
	d.speed = 6 + d.r.Float64()*6 // metres a second
	// Start at a random phase so the fleet does not send in lockstep.
	if !sleep(ctx, time.Duration(d.r.Int63n(int64(f.opts.Tick)))) {
		return
	}
	d.registered = f.opts.Registered
	for ctx.Err() == nil {
		// A driver without a verified profile is refused online: it registers first, again
		// after a pause when that fails (the API busy), and only then opens its socket.
		for pause := time.Second; !d.registered; pause = min(2*pause, 30*time.Second) {
			if err := f.register(ctx, d); err == nil {
				d.registered = true
			} else {
				f.Counts.Errors.Add(1)
				f.log.Debug().Err(err).Str("driver", d.id).Msg("driver registration failed")
				if !sleep(ctx, pause) {
					return
				}
			}
		}
		reconnect, err := d.session(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			f.Counts.Errors.Add(1)
			f.log.Debug().Err(err).Str("driver", d.id).Msg("driver session ended")
		}
		if reconnect {
			f.Counts.Reconnects.Add(1)
			f.Series.Add(KindReconnects, time.Now(), 1)
		}
		// Away for 1 to 3 ticks; the points of the gap go as one batch on the next socket.
		for n := 1 + d.r.Intn(3); n > 0; n-- {
			if !sleep(ctx, f.opts.Tick) {
				return
			}
			if len(d.gap) == maxGapPoints {
				d.gap = d.gap[1:]
			}
			d.gap = append(d.gap, d.move(d.snapshot()))
		}
	}
}

// register gives a simulated driver a verified profile the way operations does for a real one:
// POST /v1/drivers, then PATCH verified (an admin's calls; 409 from the POST: it exists). A
// driver without one is refused online.
func (f *Fleet) register(ctx context.Context, d *driverSim) error {
	if f.registering != nil { // nil: a caller bounding its own registrations (ingest)
		select {
		case f.registering <- struct{}{}:
			defer func() { <-f.registering }()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	profile := map[string]any{
		"id": d.id, "name": fmt.Sprintf("Sim Driver %d", d.i), "phone": fmt.Sprintf("+91%010d", 9000000000+int64(d.i)%1000000000),
		"licence_no": fmt.Sprintf("KA01SIM%08d", d.i), "licence_expires": time.Now().AddDate(5, 0, 0).Format(time.DateOnly),
		"transmissions": []string{"manual", "automatic"}, "cities": []string{strings.ToLower(f.opts.City.Name)},
	}
	admin := "registrar-" + d.id // the limiter counts per user: one registrar per driver
	err := f.rest.do(ctx, "POST", "/v1/drivers", "admin", admin, nil, profile, nil)
	var se *statusError
	if err != nil && !(errors.As(err, &se) && se.Status == http.StatusConflict) {
		return fmt.Errorf("create driver %s: %w", d.id, err)
	}
	if err := f.rest.do(ctx, "PATCH", "/v1/drivers/"+url.PathEscape(d.id), "admin", admin, nil,
		map[string]any{"verified": true, "suspended": false}, nil); err != nil {
		return fmt.Errorf("verify driver %s: %w", d.id, err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (d *driverSim) snapshot() trip {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil {
		return trip{}
	}
	return *d.cur
}

// move advances the driver by the real time since its last point and returns the new point.
func (d *driverSim) move(tr trip) point {
	now := time.Now()
	dt := d.f.opts.Tick.Seconds()
	if d.lastTS > 0 {
		dt = float64(now.UnixMilli()-d.lastTS) / 1000
	}
	speed := d.speed
	var moved float64
	switch tr.status {
	case "assigned":
		dist := distanceM(d.lat, d.lng, tr.pickupLat, tr.pickupLng)
		d.head = bearing(d.lat, d.lng, tr.pickupLat, tr.pickupLng)
		if a := d.f.opts.Approach; a > 0 {
			left := (a - now.Sub(tr.assignedAt)).Seconds()
			speed = max(speed, dist/max(left, d.f.opts.Tick.Seconds()))
		}
		speed = min(speed, maxSpeedMS)
		moved = min(speed*dt, dist)
	case "arrived":
		speed = 0
	default: // idle or on a trip: wander, drifting back toward home when far from it
		if distanceM(d.lat, d.lng, d.homeLa, d.homeLn) > 5000 {
			d.head = math.Mod(bearing(d.lat, d.lng, d.homeLa, d.homeLn)+d.r.NormFloat64()*20+360, 360)
		} else {
			d.head = math.Mod(d.head+d.r.NormFloat64()*25+360, 360)
		}
		moved = min(speed*dt, maxSpeedMS*dt)
	}
	if moved > 0 {
		d.lat, d.lng, d.head = d.f.opts.City.step(d.lat, d.lng, d.head, moved)
	}
	ts := now.UnixMilli()
	if ts <= d.lastTS {
		ts = d.lastTS + 1
	}
	d.lastTS = ts
	return point{Lat: round6(d.lat), Lng: round6(d.lng), Heading: math.Round(d.head), Speed: math.Round(speed*10) / 10, Acc: 8, TS: ts}
}

// pendingMsg is a message awaiting its ack.
type pendingMsg struct {
	typ     string
	booking string
	sent    time.Time
}

// socket is one connection of a driver: a single reader goroutine, writes under wmu.
type socket struct {
	d      *driverSim
	ws     *websocket.Conn
	wmu    sync.Mutex // guards writes, seq and closed
	seq    int64
	closed bool
	pmu    sync.Mutex // guards pend; taken under wmu, never the other way
	pend   map[int64]pendingMsg
}

func (s *socket) send(typ, booking string, data any) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.closed {
		return net.ErrClosed
	}
	s.seq++
	if typ != "location" && typ != "locations" {
		s.pmu.Lock()
		s.pend[s.seq] = pendingMsg{typ: typ, booking: booking, sent: time.Now()}
		s.pmu.Unlock()
		s.d.f.Counts.InFlight.Add(1)
	}
	_ = s.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := s.ws.WriteJSON(frame{Type: typ, Seq: s.seq, Data: b}); err != nil {
		s.answered(s.seq)
		return err
	}
	return nil
}

// answered removes a pending message and says what it was.
func (s *socket) answered(ref int64) (pendingMsg, bool) {
	s.pmu.Lock()
	p, ok := s.pend[ref]
	delete(s.pend, ref)
	s.pmu.Unlock()
	if ok {
		s.d.f.Counts.InFlight.Add(-1)
	}
	return p, ok
}

// abandon forgets every unanswered message when the socket has gone; a trip.end among them is
// checked against the server on the next socket.
func (s *socket) abandon() {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	for ref, p := range s.pend {
		delete(s.pend, ref)
		s.d.f.Counts.InFlight.Add(-1)
		s.d.f.Counts.Unanswered.Add(1)
		if p.typ == "trip.end" {
			s.d.mu.Lock()
			s.d.endPending = p.booking
			s.d.mu.Unlock()
		}
	}
}

type helloData struct {
	Booking *bookingView `json:"booking"`
}

// session runs one socket until ctx ends (nil error), the socket fails, or the driver drops it
// on purpose (reconnect true).
func (d *driverSim) session(ctx context.Context) (reconnect bool, err error) {
	f := d.f
	h := make(map[string][]string)
	h["Authorization"] = []string{"Bearer " + f.rest.token("driver", d.id)}
	ws, _, err := f.dialer(d.i).DialContext(ctx, f.opts.URL, h)
	if err != nil {
		return false, err
	}
	f.Counts.Connected.Add(1)
	if !d.arrived {
		d.arrived = true
		f.Counts.Arrived.Add(1)
	}
	s := &socket{d: d, ws: ws, pend: map[int64]pendingMsg{}}
	defer func() {
		s.wmu.Lock()
		s.closed = true
		s.wmu.Unlock()
		s.abandon()
		ws.Close()
		f.Counts.Connected.Add(-1)
	}()

	// hello comes first; it resumes a trip under way.
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	var fr frame
	if err := ws.ReadJSON(&fr); err != nil {
		return false, fmt.Errorf("read hello: %w", err)
	}
	if fr.Type != "hello" {
		return false, fmt.Errorf("first frame is %q, want hello", fr.Type)
	}
	_ = ws.SetReadDeadline(time.Time{})
	var hello helloData
	_ = json.Unmarshal(fr.Data, &hello)
	d.resume(ctx, hello.Booking)

	readErr := make(chan error, 1)
	go func() { readErr <- d.read(s) }()

	if err := s.send("status", "", map[string]string{"state": "online"}); err != nil {
		return false, err
	}
	if len(d.gap) > 0 {
		n := len(d.gap)
		if err := s.send("locations", "", map[string]any{"points": d.gap}); err != nil {
			return false, err
		}
		d.gap = d.gap[:0]
		f.Counts.LocationsSent.Add(int64(n))
		f.Series.Add(KindLocations, time.Now(), int64(n))
	}
	t := time.NewTicker(f.opts.Tick)
	defer t.Stop()
	dropP := f.opts.ReconnectP * f.opts.Tick.Minutes()
	for {
		select {
		case <-ctx.Done():
			s.closeGracefully(readErr)
			return false, nil
		case err := <-readErr:
			return false, err
		case <-t.C:
		}
		if dropP > 0 && !f.draining.Load() && d.r.Float64() < dropP {
			s.closeGracefully(readErr)
			return true, nil
		}
		tr := d.snapshot()
		p := d.move(tr)
		if err := s.send("location", "", p); err != nil {
			return false, err
		}
		f.Counts.LocationsSent.Add(1)
		f.Series.Add(KindLocations, time.Now(), 1)
		if err := d.act(ctx, s, tr); err != nil {
			return false, err
		}
	}
}

// closeGracefully says goodbye and waits for the server's close frame, so that every frame
// already written is read by the server (an abrupt close could lose them to a reset).
func (s *socket) closeGracefully(readErr <-chan error) {
	s.wmu.Lock()
	_ = s.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(2*time.Second))
	s.wmu.Unlock()
	select {
	case <-readErr:
	case <-time.After(3 * time.Second):
	}
}

// resume takes the booking of a hello (nil: none) and settles a trip.end left unanswered.
func (d *driverSim) resume(ctx context.Context, b *bookingView) {
	f := d.f
	d.mu.Lock()
	pending := d.endPending
	d.endPending = ""
	old := d.cur
	d.cur = nil
	if b != nil {
		tr := &trip{bookingID: b.ID, status: b.Status, pickupLat: b.Pickup.Lat, pickupLng: b.Pickup.Lng, assignedAt: time.Now()}
		if old != nil && old.bookingID == b.ID {
			tr.assignedAt, tr.startedAt = old.assignedAt, old.startedAt
		}
		if tr.status == "in_progress" && tr.startedAt.IsZero() {
			tr.startedAt = time.Now()
		}
		d.cur = tr
	}
	d.mu.Unlock()
	if pending == "" || (b != nil && b.ID == pending) {
		return // nothing unanswered, or the trip is still on and trip.end goes again
	}
	var got bookingView
	err := f.rest.do(ctx, "GET", "/v1/bookings/"+url.PathEscape(pending), "driver", d.id, nil, nil, &got)
	if err == nil && got.Status == "completed" {
		f.Counts.BookingsCompleted.Add(1)
		f.Series.Add(KindCompletions, time.Now(), 1)
	}
}

// act sends the next step of the trip under way, if it is due.
func (d *driverSim) act(ctx context.Context, s *socket, tr trip) error {
	f := d.f
	if tr.bookingID == "" {
		return nil
	}
	switch tr.status {
	case "assigned":
		if tr.arriveSent {
			return nil
		}
		near := distanceM(d.lat, d.lng, tr.pickupLat, tr.pickupLng) < 150
		late := f.opts.Approach > 0 && time.Since(tr.assignedAt) >= f.opts.Approach
		if !near && !late {
			return nil
		}
		if !d.mark(tr.bookingID, func(t *trip) *bool { return &t.arriveSent }) {
			return nil
		}
		return s.send("trip.arrive", tr.bookingID, map[string]string{"booking_id": tr.bookingID})
	case "arrived":
		if tr.startSent {
			return nil
		}
		otpCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		otp, err := f.opts.OTP(otpCtx, tr.bookingID)
		cancel()
		if err != nil {
			f.log.Debug().Err(err).Str("booking", tr.bookingID).Msg("no OTP yet")
			return nil // the customer tells it on a later tick
		}
		if !d.mark(tr.bookingID, func(t *trip) *bool { return &t.startSent }) {
			return nil
		}
		return s.send("trip.start", tr.bookingID, map[string]string{"booking_id": tr.bookingID, "otp": otp})
	case "in_progress":
		if tr.endSent || time.Since(tr.startedAt) < f.opts.TripTime {
			return nil
		}
		if !d.mark(tr.bookingID, func(t *trip) *bool { return &t.endSent }) {
			return nil
		}
		return s.send("trip.end", tr.bookingID, map[string]string{"booking_id": tr.bookingID})
	}
	return nil
}

// mark sets a step's sent flag if the trip is still the current one and the flag was clear.
func (d *driverSim) mark(booking string, flag func(*trip) *bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil || d.cur.bookingID != booking || *flag(d.cur) {
		return false
	}
	*flag(d.cur) = true
	return true
}

// read handles the server's frames until the socket fails or closes.
func (d *driverSim) read(s *socket) error {
	f := d.f
	for {
		var fr frame
		if err := s.ws.ReadJSON(&fr); err != nil {
			return err
		}
		now := time.Now()
		switch fr.Type {
		case "offer":
			var o struct {
				OfferID   string  `json:"offer_id"`
				BookingID string  `json:"booking_id"`
				DistanceM float64 `json:"distance_m"`
			}
			_ = json.Unmarshal(fr.Data, &o)
			d.offer(s, o.OfferID, o.BookingID, o.DistanceM, now)
		case "booking":
			var b bookingView
			_ = json.Unmarshal(fr.Data, &b)
			d.booking(b, now)
		case "ack":
			var a struct {
				Ref int64 `json:"ref"`
			}
			_ = json.Unmarshal(fr.Data, &a)
			p, ok := s.answered(a.Ref)
			if !ok {
				continue
			}
			f.Series.AckTook(now.Sub(p.sent))
			switch p.typ {
			case "offer.accept":
				f.Counts.OffersAccepted.Add(1)
				f.Series.Add(KindAccepts, now, 1)
			case "trip.end":
				f.Counts.BookingsCompleted.Add(1)
				f.Series.Add(KindCompletions, now, 1)
			}
		case "error":
			var e struct {
				Ref     *int64 `json:"ref"`
				Code    string `json:"code"`
				Message string `json:"message"`
			}
			_ = json.Unmarshal(fr.Data, &e)
			if e.Ref == nil {
				f.Counts.ActionErrors.Add(1)
				f.Counts.refused("unreadable frame", e.Code, e.Message)
				continue
			}
			p, ok := s.answered(*e.Ref)
			if !ok {
				f.Counts.LocationErrors.Add(1) // only locations go unrecorded
				f.Counts.refused("location", e.Code, e.Message)
				continue
			}
			f.Counts.refused(p.typ, e.Code, e.Message)
			switch {
			case p.typ == "offer.accept":
				f.Counts.AcceptsRefused.Add(1)
			case e.Code != "conflict" && e.Code != "not_found" && p.booking != "":
				f.Counts.ActionErrors.Add(1)
				d.retry(p)
			default:
				f.Counts.ActionErrors.Add(1)
			}
			f.log.Debug().Str("driver", d.id).Str("type", p.typ).Str("code", e.Code).Str("message", e.Message).Msg("refused")
		}
	}
}

// retry clears the sent flag of a trip step the server refused for a passing reason.
func (d *driverSim) retry(p pendingMsg) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur == nil || d.cur.bookingID != p.booking {
		return
	}
	switch p.typ {
	case "trip.arrive":
		d.cur.arriveSent = false
	case "trip.start":
		d.cur.startSent = false
	case "trip.end":
		d.cur.endSent = false
	}
}

func (d *driverSim) offer(s *socket, offerID, bookingID string, distM float64, now time.Time) {
	f := d.f
	d.mu.Lock()
	again := d.seen[offerID]
	d.seen[offerID] = true
	busy := d.cur != nil
	x := d.decide.Float64()
	d.mu.Unlock()
	if again {
		f.Counts.OffersRepeated.Add(1)
	} else {
		f.Counts.OffersReceived.Add(1)
		f.Series.Add(KindOffers, now, 1)
		f.Series.Offered(bookingID, now)
		f.Series.Pickup(distM)
		f.lastOffer.Store(now.UnixMilli())
	}
	typ := "offer.decline"
	switch {
	case f.draining.Load() || busy:
	case x < f.opts.AcceptP:
		typ = "offer.accept"
	case x < f.opts.AcceptP+f.opts.IgnoreP:
		f.Counts.OffersIgnored.Add(1)
		f.Series.Add(KindIgnores, now, 1)
		return
	}
	time.AfterFunc(f.opts.AnswerDelay, func() {
		data := map[string]string{"offer_id": offerID}
		if typ == "offer.decline" {
			data["reason"] = "busy"
		}
		if s.send(typ, bookingID, data) == nil && typ == "offer.decline" {
			f.Counts.OffersDeclined.Add(1)
			f.Series.Add(KindDeclines, time.Now(), 1)
		}
	})
}

func (d *driverSim) booking(b bookingView, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch b.Status {
	case "assigned", "arrived", "in_progress":
		if d.cur == nil || d.cur.bookingID != b.ID {
			d.cur = &trip{bookingID: b.ID, pickupLat: b.Pickup.Lat, pickupLng: b.Pickup.Lng, assignedAt: now}
		}
		d.cur.status = b.Status
		if b.Status == "in_progress" && d.cur.startedAt.IsZero() {
			d.cur.startedAt = now
		}
	default:
		if d.cur != nil && d.cur.bookingID == b.ID {
			d.cur = nil
		}
	}
}

// customers book to the demand, each booking by one of a pool of customers with a fresh
// idempotency key, until Drain or ctx.
func (f *Fleet) customers(ctx context.Context) {
	r := mrand.New(mrand.NewSource(f.opts.Seed*7 + 3))
	start := time.Now()
	rate := func(t time.Duration) float64 { return f.opts.BookingsPerMinute / 60 }
	if f.opts.Demand.Name != "" {
		rate = f.opts.Demand.Rate
	}
	sem := make(chan struct{}, f.opts.MaxPendingBookings)
	var wg sync.WaitGroup
	defer wg.Wait()
	const step = 10 * time.Millisecond
	t := time.NewTicker(step)
	defer t.Stop()
	last := start
	owed := 0.0
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.drained:
			return
		case now := <-t.C:
			owed += rate(now.Sub(start)) * now.Sub(last).Seconds()
			last = now
		}
		for ; owed >= 1; owed-- {
			n++
			req := f.bookingRequest(r, n)
			select {
			case sem <- struct{}{}:
			default:
				f.Counts.BookingsSkipped.Add(1)
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				f.book(ctx, req)
			}()
		}
	}
}

type bookingReq struct {
	customer string
	ahead    bool
	body     map[string]any
}

func (f *Fleet) bookingRequest(r *mrand.Rand, n int) bookingReq {
	lat, lng := f.opts.City.Point(r, 0.8)
	body := map[string]any{
		"pickup": map[string]any{"lat": round6(lat), "lng": round6(lng), "address": "simulated"},
		"hours":  1 + r.Intn(4),
		"car":    map[string]string{"transmission": "manual"},
	}
	if r.Float64() < 0.2 {
		body["car"] = map[string]string{"transmission": "automatic"}
	}
	req := bookingReq{customer: fmt.Sprintf("%s-cust-%d", f.opts.IDPrefix, n%5000), body: body}
	if f.opts.ScheduledP > 0 && r.Float64() < f.opts.ScheduledP {
		ahead := time.Hour + time.Duration(r.Int63n(int64(71*time.Hour)))
		body["start_at"] = time.Now().Add(ahead).UTC().Truncate(time.Minute).Format(time.RFC3339)
		req.ahead = true
	}
	return req
}

func (f *Fleet) book(ctx context.Context, req bookingReq) {
	t0 := time.Now()
	var b bookingView
	err := f.rest.do(ctx, "POST", "/v1/bookings", "customer", req.customer,
		map[string]string{"Idempotency-Key": randomKey()}, req.body, &b)
	if err != nil {
		if ctx.Err() == nil {
			f.Counts.BookingErrors.Add(1)
			f.Series.Add(KindBookingErrors, time.Now(), 1)
			f.log.Debug().Err(err).Msg("booking refused")
		}
		return
	}
	now := time.Now()
	f.Series.PostTook(now.Sub(t0))
	f.Counts.BookingsCreated.Add(1)
	f.Series.Add(KindBookings, now, 1)
	f.Series.Booked(b.ID, req.customer, b.CreatedAt, req.ahead)
	if b.OTP != "" {
		f.otps.Store(b.ID, b.OTP)
	}
}

func randomKey() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }
