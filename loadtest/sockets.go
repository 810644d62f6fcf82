package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand"
	"net"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// `loadtest sockets` holds many driver sockets open across several gateway processes, as
// production does, with the sockets spread over child processes of its own (each under the
// per-process open-file cap) and over 127.0.0.x source addresses. Every socket sends a point
// every Every (30 s by default) for Duration. It measures the connect rate (sockets/s whose
// hello arrived: the token check, the upgrade and the session's start included), the gateways'
// RSS growth per socket, sockets that dropped, and a reconnect storm: Storm sockets reset at
// once (no close frame, as a network blip does) and dialled again at once, the time until all
// are back, while /readyz is polled and a booking a second is matched against a few probe
// drivers (the matcher is not starved when its booking-to-offer time holds).

// SocketsOptions configures a run.
type SocketsOptions struct {
	URLs       []string // gateways' socket URLs (loopback only); socket i goes to URLs[i % len]
	Metrics    []string // each gateway's /metrics (RSS, CPU, open sockets)
	REST       string   // the API (bookings, /readyz); default: the first URL's host
	Secret     []byte
	Sockets    int
	Procs      int // generator processes (default: one per 15,000 sockets)
	Every      time.Duration
	Duration   time.Duration
	Storm      int // sockets reset and dialled again at once after the hold (0: no storm)
	ProbeDrvs  int // registered drivers online for the matcher probe (0: no matcher probe)
	LocalAddrs []string
	IDPrefix   string
	Seed       int64
	City       City
}

// SocketsReport is what a run measured.
type SocketsReport struct {
	Options                SocketsOptions `json:"-"`
	Gateways               int
	Connected              int
	ConnectSeconds         float64
	ConnectRate            float64
	RSSBefore, RSSAfter    []float64 // per gateway, bytes
	SocketsPer             []float64 // per gateway, from its dispatch_sockets gauge
	RSSPerSocket           float64   // bytes: total RSS growth / total sockets, 10 s after the last connected
	RSSPerSocketHeld       float64   // the same at the end of the hold
	GatewayCPUPerSocketSec float64   // the gateways' CPU seconds over the hold / sockets / seconds (µs per socket-second below)
	PointsSent             int64
	PointsReceived         float64 // the gateways' dispatch_locations_received_total over the hold
	Dropped                int64   // sockets that ended without being asked to
	StormSockets           int
	StormSeconds           float64 // until every reset socket had its hello again
	StormLeft              int64   // reset sockets not back when the report was made (0: all back)
	StormDialFailures      int64
	ReadyzN, ReadyzFailed  int
	ReadyzMaxMs            float64
	ReadyzP99Ms            float64
	OfferHold, OfferStorm  []float64 // booking-to-offer ms, during the hold and during the storm
	LoadAverage            string
}

// The child's protocol, one JSON document a line: the parent writes socketsChild, then the words
// "storm N" (reset the first N sockets and dial them again) and "stop"; the child writes
// socketsProgress four times a second.
type socketsChild struct {
	URLs       []string      `json:"urls"`
	Secret     []byte        `json:"secret"`
	First      int           `json:"first"`
	Count      int           `json:"count"`
	Every      time.Duration `json:"every"`
	LocalAddrs []string      `json:"local_addrs"`
	IDPrefix   string        `json:"id_prefix"`
	Seed       int64         `json:"seed"`
	City       City          `json:"city"`
}

type socketsProgress struct {
	Connected   int64   `json:"connected"`
	Sent        int64   `json:"sent"`
	Dropped     int64   `json:"dropped"`
	DialFailed  int64   `json:"dial_failed"`
	StormLeft   int64   `json:"storm_left"`
	StormMillis float64 `json:"storm_ms"`
}

type heldSocket struct {
	i, url   int
	id       string
	header   http.Header
	lat, lng float64
	mu       sync.Mutex // the socket's writes, and ws itself
	ws       *websocket.Conn
	stopped  bool // the run is over: a socket's end is no drop (under mu)
}

type socketsHolder struct {
	cfg                                socketsChild
	socks                              []*heldSocket
	connected, sent, dropped, dialFail atomic.Int64
	stormLeft                          atomic.Int64
	stormMillis                        atomic.Int64 // µs
}

// RunSocketsChild is the child side of `loadtest sockets` (cmd/loadtest runs it for
// `sockets -child`).
func RunSocketsChild(ctx context.Context, stdin io.Reader, stdout io.Writer, log zerolog.Logger) error {
	in := bufio.NewReader(stdin)
	var cfg socketsChild
	if err := readChildConfig(in, &cfg); err != nil {
		return err
	}
	for _, u := range cfg.URLs {
		if err := CheckLoopback(u); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	h := &socketsHolder{cfg: cfg}
	r := mrand.New(mrand.NewSource(cfg.Seed))
	for k := range cfg.Count {
		i := cfg.First + k
		id := fmt.Sprintf("%s-%d", cfg.IDPrefix, i)
		tok, err := signToken(cfg.Secret, "driver", id)
		if err != nil {
			return err
		}
		hd := http.Header{}
		hd.Set("Authorization", "Bearer "+tok)
		h.socks = append(h.socks, &heldSocket{i: i, url: i % len(cfg.URLs), id: id, header: hd,
			lat: cfg.City.MinLat + r.Float64()*(cfg.City.MaxLat-cfg.City.MinLat), lng: cfg.City.MinLng + r.Float64()*(cfg.City.MaxLng-cfg.City.MinLng)})
	}
	var out sync.Mutex
	say := func(v any) {
		b, _ := json.Marshal(v)
		out.Lock()
		_, _ = stdout.Write(append(b, '\n'))
		out.Unlock()
	}
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			say(h.progress())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	// Connect: 64 dials at a time, the rate the server's accept loop and hello set.
	sem := make(chan struct{}, 64)
	go func() {
		for _, s := range h.socks {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func() {
				defer func() { <-sem }()
				h.dial(ctx, s)
			}()
		}
	}()
	go h.send(ctx)
	for {
		line, err := in.ReadString('\n')
		word := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(word, "storm "):
			n, _ := strconv.Atoi(strings.TrimPrefix(word, "storm "))
			go h.storm(ctx, min(n, len(h.socks)))
			continue
		case word == "" && err == nil:
			continue
		}
		say(h.progress())
		cancel()
		for _, s := range h.socks {
			s.mu.Lock()
			s.stopped = true
			if s.ws != nil {
				_ = s.ws.Close()
			}
			s.mu.Unlock()
		}
		return nil
	}
}

func (h *socketsHolder) progress() socketsProgress {
	return socketsProgress{Connected: h.connected.Load(), Sent: h.sent.Load(), Dropped: h.dropped.Load(), DialFailed: h.dialFail.Load(),
		StormLeft: h.stormLeft.Load(), StormMillis: float64(h.stormMillis.Load()) / 1000}
}

// dial opens s's socket (again after a failure, with a jittered backoff as the apps do) and
// waits for its hello; it then reads until the socket ends.
func (h *socketsHolder) dial(ctx context.Context, s *heldSocket) bool {
	d := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 256, WriteBufferSize: 512}
	d.NetDialContext = sourceDialer(h.cfg.LocalAddrs, s.i, 30*time.Second).DialContext
	backoff := 250 * time.Millisecond
	for ctx.Err() == nil {
		ws, _, err := d.DialContext(ctx, h.cfg.URLs[s.url], s.header)
		if err == nil {
			_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			var f frame
			if err = ws.ReadJSON(&f); err == nil && f.Type != "hello" {
				err = fmt.Errorf("first frame %q, not hello", f.Type)
			}
			if err == nil {
				_ = ws.SetReadDeadline(time.Time{})
				s.mu.Lock()
				s.ws = ws
				s.mu.Unlock()
				h.connected.Add(1)
				go h.read(s, ws)
				return true
			}
			_ = ws.Close()
		}
		h.dialFail.Add(1)
		if !sleep(ctx, backoff/2+time.Duration(mrand.Int63n(int64(backoff)))) {
			return false
		}
		backoff = min(2*backoff, 4*time.Second)
	}
	return false
}

// read discards what the server sends (gorilla answers its pings) until the socket ends.
func (h *socketsHolder) read(s *heldSocket, ws *websocket.Conn) {
	for {
		if _, _, err := ws.NextReader(); err != nil {
			break
		}
	}
	h.connected.Add(-1)
	// A socket the storm reset (and maybe dialled again already) is no longer s's: its end
	// was asked for, whichever of its reader and the new dial gets here first.
	s.mu.Lock()
	asked := s.ws != ws || s.stopped
	if s.ws == ws {
		s.ws = nil
	}
	s.mu.Unlock()
	if !asked {
		h.dropped.Add(1)
	}
	_ = ws.Close()
}

// send writes a point for every socket every Every, each at its own phase.
func (h *socketsHolder) send(ctx context.Context) {
	n := len(h.socks)
	if n == 0 {
		return
	}
	start := time.Now()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	next := 0
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := int(time.Since(start) * time.Duration(n) / h.cfg.Every)
		for ; next < due; next++ {
			s := h.socks[next%n]
			s.mu.Lock()
			if s.ws != nil {
				s.lat += 0.0001
				if s.lat > h.cfg.City.MaxLat {
					s.lat = h.cfg.City.MinLat
				}
				b := strconv.AppendFloat(append(buf[:0], `{"type":"location","data":{"lat":`...), round6(s.lat), 'f', 6, 64)
				b = strconv.AppendFloat(append(b, `,"lng":`...), round6(s.lng), 'f', 6, 64)
				b = strconv.AppendInt(append(b, `,"acc":8,"heading":0,"speed":8,"ts":`...), time.Now().UnixMilli(), 10)
				buf = append(b, "}}"...)
				_ = s.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
				if s.ws.WriteMessage(websocket.TextMessage, buf) == nil {
					h.sent.Add(1)
				}
			}
			s.mu.Unlock()
		}
	}
}

// storm resets the first n sockets at once (RST, no close frame) and dials them again at once.
func (h *socketsHolder) storm(ctx context.Context, n int) {
	h.stormLeft.Store(int64(n))
	start := time.Now()
	for _, s := range h.socks[:n] {
		s.mu.Lock()
		if s.ws != nil {
			if tc, ok := s.ws.NetConn().(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = s.ws.NetConn().Close()
			s.ws = nil
		}
		s.mu.Unlock()
	}
	var wg sync.WaitGroup
	for _, s := range h.socks[:n] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if h.dial(ctx, s) {
				h.stormLeft.Add(-1)
			}
		}()
	}
	wg.Wait()
	h.stormMillis.Store(time.Since(start).Microseconds())
}

// Sockets runs the parent side: children holding the sockets, the gateways' figures, the storm.
func Sockets(ctx context.Context, o SocketsOptions, log zerolog.Logger) (SocketsReport, error) {
	rep := SocketsReport{Options: o, Gateways: len(o.URLs)}
	if len(o.URLs) == 0 || o.Sockets <= 0 {
		return rep, errors.New("sockets: at least one URL and one socket")
	}
	for _, u := range append(append([]string{o.REST}, o.URLs...), o.Metrics...) {
		if err := CheckLoopback(u); err != nil {
			return rep, err
		}
	}
	if o.Procs <= 0 {
		o.Procs = (o.Sockets + 14999) / 15000
	}
	exe, err := os.Executable()
	if err != nil {
		return rep, err
	}
	before, err := ScrapeEach(ctx, o.Metrics)
	if err != nil {
		return rep, fmt.Errorf("gateways' metrics: %w", err)
	}
	for _, u := range o.Metrics {
		rep.RSSBefore = append(rep.RSSBefore, before[u].Samples["process_resident_memory_bytes"])
	}

	// The matcher probe's drivers go online before the load; a booking a second is timed to its
	// first offer, which the probe drivers decline.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rest := newClient(o.REST, o.Secret, 8, new(atomic.Int64))
	var probe *matcherProbe
	if o.ProbeDrvs > 0 {
		if probe, err = startMatcherProbe(ctx, o, rest); err != nil {
			return rep, fmt.Errorf("matcher probe: %w", err)
		}
	}

	type kid struct {
		*spawned
		mu    sync.Mutex
		last  socketsProgress
		count int
	}
	var kids []*kid
	defer func() {
		for _, k := range kids {
			k.say("stop")
			_ = k.end(20 * time.Second)
		}
	}()
	start := time.Now()
	per := (o.Sockets + o.Procs - 1) / o.Procs
	for p := 0; p*per < o.Sockets; p++ {
		cfg := socketsChild{URLs: o.URLs, Secret: o.Secret, First: p * per, Count: min(per, o.Sockets-p*per), Every: o.Every,
			LocalAddrs: o.LocalAddrs, IDPrefix: o.IDPrefix, Seed: o.Seed + int64(p), City: o.City}
		k := &kid{count: cfg.Count}
		sp, err := spawn(exe, []string{"sockets", "-child"}, cfg, os.Stderr, func(line []byte) {
			var pr socketsProgress
			if json.Unmarshal(line, &pr) == nil {
				k.mu.Lock()
				k.last = pr
				k.mu.Unlock()
			}
		})
		if err != nil {
			return rep, err
		}
		k.spawned = sp
		kids = append(kids, k)
	}
	total := func() (s socketsProgress) {
		for _, k := range kids {
			k.mu.Lock()
			s.Connected += k.last.Connected
			s.Sent += k.last.Sent
			s.Dropped += k.last.Dropped
			s.DialFailed += k.last.DialFailed
			s.StormLeft += k.last.StormLeft
			s.StormMillis = max(s.StormMillis, k.last.StormMillis)
			k.mu.Unlock()
		}
		return s
	}
	wait := func(limit time.Duration, done func(socketsProgress) bool) bool {
		deadline := time.Now().Add(limit)
		for time.Now().Before(deadline) {
			if done(total()) {
				return true
			}
			if !sleep(ctx, 100*time.Millisecond) {
				return false
			}
		}
		return done(total())
	}
	lastLog := time.Now()
	if !wait(10*time.Minute, func(s socketsProgress) bool {
		if time.Since(lastLog) > 5*time.Second {
			lastLog = time.Now()
			log.Info().Int64("connected", s.Connected).Int64("dial_failures", s.DialFailed).Msg("connecting")
		}
		return s.Connected >= int64(o.Sockets)
	}) {
		return rep, fmt.Errorf("sockets: %d of %d connected in 10 minutes", total().Connected, o.Sockets)
	}
	rep.ConnectSeconds = time.Since(start).Seconds()
	rep.Connected = int(total().Connected)
	rep.ConnectRate = float64(rep.Connected) / rep.ConnectSeconds
	log.Info().Int("sockets", rep.Connected).Float64("seconds", rep.ConnectSeconds).Msg("all connected; holding")

	// The hold: every socket sends a point every Every.
	sleep(ctx, 10*time.Second) // a GC cycle or two on the gateways before their RSS is read
	mid, err := ScrapeEach(ctx, o.Metrics)
	if err != nil {
		return rep, err
	}
	var grew, socks float64
	for _, u := range o.Metrics {
		rss, n := mid[u].Samples["process_resident_memory_bytes"], mid[u].Samples[`dispatch_sockets{role="driver"}`]
		rep.RSSAfter, rep.SocketsPer = append(rep.RSSAfter, rss), append(rep.SocketsPer, n)
		grew += rss - before[u].Samples["process_resident_memory_bytes"]
		socks += n
	}
	if socks > 0 {
		rep.RSSPerSocket = grew / socks
	}
	sent0 := total().Sent
	holdStart := time.Now()
	if probe != nil {
		probe.phase.Store(1)
	}
	if !sleep(ctx, o.Duration) {
		return rep, ctx.Err()
	}
	held := time.Since(holdStart).Seconds()
	after, err := ScrapeEach(ctx, o.Metrics)
	if err != nil {
		return rep, err
	}
	var grewHeld float64
	for _, u := range o.Metrics {
		grewHeld += after[u].Samples["process_resident_memory_bytes"] - before[u].Samples["process_resident_memory_bytes"]
	}
	if socks > 0 {
		rep.RSSPerSocketHeld = grewHeld / socks
	}
	gained := Gained(mid, after)
	rep.PointsReceived = gained.Sums["dispatch_locations_received_total"]
	rep.PointsSent = total().Sent - sent0
	if socks > 0 {
		rep.GatewayCPUPerSocketSec = gained.Sums["process_cpu_seconds_total"] / socks / held
	}
	rep.Dropped = total().Dropped

	// The storm.
	if o.Storm > 0 {
		rep.StormSockets = min(o.Storm, o.Sockets)
		rd := startReadyz(ctx, o.REST)
		if probe != nil {
			probe.phase.Store(2)
		}
		fail0 := total().DialFailed
		left := rep.StormSockets
		for i, k := range kids {
			n := min(left, (rep.StormSockets+len(kids)-1)/len(kids), k.count)
			if i == len(kids)-1 {
				n = min(left, k.count)
			}
			left -= n
			k.say(fmt.Sprintf("storm %d", n))
		}
		sleep(ctx, time.Second)
		if !wait(5*time.Minute, func(s socketsProgress) bool { return s.StormLeft == 0 }) {
			log.Warn().Int64("left", total().StormLeft).Msg("storm: not every socket came back in 5 minutes")
		}
		sleep(ctx, 500*time.Millisecond)
		s := total()
		rep.StormSeconds = s.StormMillis / 1000
		rep.StormLeft = s.StormLeft
		rep.StormDialFailures = s.DialFailed - fail0
		if probe != nil {
			probe.phase.Store(3)
		}
		rep.ReadyzN, rep.ReadyzFailed, rep.ReadyzP99Ms, rep.ReadyzMaxMs = rd.stop()
		rep.Dropped = s.Dropped
	}
	if probe != nil {
		rep.OfferHold, rep.OfferStorm = probe.results()
	}
	rep.LoadAverage = loadAvg()
	return rep, nil
}

// readyzPoll polls /readyz every 100 ms.
type readyzPoll struct {
	stopC chan struct{}
	done  chan struct{}
	lat   []float64
	fail  int
}

func startReadyz(ctx context.Context, base string) *readyzPoll {
	p := &readyzPoll{stopC: make(chan struct{}), done: make(chan struct{})}
	hc := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(p.done)
		for {
			t0 := time.Now()
			resp, err := hc.Get(strings.TrimSuffix(base, "/") + "/readyz")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
			if err != nil || resp.StatusCode != http.StatusOK {
				p.fail++
			}
			p.lat = append(p.lat, float64(time.Since(t0).Microseconds())/1000)
			select {
			case <-ctx.Done():
				return
			case <-p.stopC:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return p
}

func (p *readyzPoll) stop() (n, failed int, p99, maxMs float64) {
	close(p.stopC)
	<-p.done
	if len(p.lat) == 0 {
		return 0, p.fail, 0, 0
	}
	sort.Float64s(p.lat)
	return len(p.lat), p.fail, p.lat[min(len(p.lat)-1, len(p.lat)*99/100)], p.lat[len(p.lat)-1]
}

// matcherProbe: a few registered drivers online together, declining every offer; a customer
// books next to them every second and cancels once the offer is out. Booking-to-offer is timed
// by phase (1 hold, 2 storm).
type matcherProbe struct {
	phase   atomic.Int32
	mu      sync.Mutex
	created map[string]probeBooking
	times   map[int32][]float64
}

type probeBooking struct {
	at    time.Time
	phase int32
}

func startMatcherProbe(ctx context.Context, o SocketsOptions, rest *client) (*matcherProbe, error) {
	p := &matcherProbe{created: map[string]probeBooking{}, times: map[int32][]float64{}}
	lat, lng := (o.City.MinLat+o.City.MaxLat)/2, (o.City.MinLng+o.City.MaxLng)/2
	f := &Fleet{opts: FleetOptions{LocalAddrs: o.LocalAddrs, City: o.City}, rest: rest}
	dialer := &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	for i := range o.ProbeDrvs {
		id := fmt.Sprintf("%s-probe-%d", o.IDPrefix, i)
		if err := f.register(ctx, &driverSim{i: 900000 + i, id: id}); err != nil {
			return nil, err
		}
		tok, err := signToken(o.Secret, "driver", id)
		if err != nil {
			return nil, err
		}
		hd := http.Header{}
		hd.Set("Authorization", "Bearer "+tok)
		ws, _, err := dialer.DialContext(ctx, o.URLs[i%len(o.URLs)], hd)
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, func() { _ = ws.Close() })
		var wmu sync.Mutex
		write := func(s string) {
			wmu.Lock()
			defer wmu.Unlock()
			_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_ = ws.WriteMessage(websocket.TextMessage, []byte(s))
		}
		write(`{"type":"status","seq":1,"data":{"state":"online"}}`)
		go func() {
			seq := 10
			for {
				var fr frame
				if ws.ReadJSON(&fr) != nil {
					return
				}
				if fr.Type != "offer" {
					continue
				}
				var of struct {
					OfferID   string `json:"offer_id"`
					BookingID string `json:"booking_id"`
				}
				_ = json.Unmarshal(fr.Data, &of)
				p.offered(ctx, rest, of.BookingID)
				seq++
				write(fmt.Sprintf(`{"type":"offer.decline","seq":%d,"data":{"offer_id":%q,"reason":"probe"}}`, seq, of.OfferID))
			}
		}()
		// Points a second, so the index keeps the driver fresh.
		go func() {
			for k := 0; ctx.Err() == nil; k++ {
				write(fmt.Sprintf(`{"type":"location","data":{"lat":%.6f,"lng":%.6f,"acc":8,"heading":0,"speed":0,"ts":%d}}`,
					lat+float64(i)*0.0002, lng, time.Now().UnixMilli()))
				sleep(ctx, 2*time.Second)
			}
		}()
	}
	go func() {
		for k := 0; ctx.Err() == nil; k++ {
			if ph := p.phase.Load(); ph == 1 || ph == 2 {
				cust := fmt.Sprintf("%s-probecust-%d", o.IDPrefix, k)
				var b bookingView
				body := map[string]any{"pickup": map[string]float64{"lat": lat + 0.001, "lng": lng}, "hours": 2, "car": map[string]string{"transmission": "manual"}}
				t0 := time.Now()
				if rest.do(ctx, http.MethodPost, "/v1/bookings", "customer", cust, map[string]string{"Idempotency-Key": cust + "-" + randomKey()}, body, &b) == nil {
					p.mu.Lock()
					if _, seen := p.created[b.ID]; !seen {
						p.created[b.ID] = probeBooking{at: t0, phase: ph}
					}
					p.mu.Unlock()
				}
			}
			sleep(ctx, time.Second)
		}
	}()
	return p, nil
}

// offered records a booking's first offer and cancels the booking (as its customer would).
func (p *matcherProbe) offered(ctx context.Context, rest *client, bookingID string) {
	p.mu.Lock()
	b, ok := p.created[bookingID]
	if ok {
		p.times[b.phase] = append(p.times[b.phase], float64(time.Since(b.at).Microseconds())/1000)
		delete(p.created, bookingID)
	}
	p.mu.Unlock()
	if ok {
		go func() {
			var v bookingView
			_ = rest.do(ctx, http.MethodGet, "/v1/bookings/"+bookingID, "dispatcher", "probe-dispatcher", nil, nil, &v)
			_ = rest.do(ctx, http.MethodPost, "/v1/bookings/"+bookingID+"/cancel", "customer", v.CustomerID, nil, map[string]string{"reason": "probe"}, nil)
		}()
	}
}

func (p *matcherProbe) results() (hold, storm []float64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	hold, storm = slices.Clone(p.times[1]), slices.Clone(p.times[2])
	// A booking still without an offer counts as the time it has waited.
	for _, b := range p.created {
		w := float64(time.Since(b.at).Microseconds()) / 1000
		switch b.phase {
		case 1:
			hold = append(hold, w)
		case 2:
			storm = append(storm, w)
		}
	}
	sort.Float64s(hold)
	sort.Float64s(storm)
	return hold, storm
}

func quantileOf(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// Markdown is the report as BENCHMARKS.md shows it.
func (r SocketsReport) Markdown() string {
	var b strings.Builder
	o := r.Options
	fmt.Fprintf(&b, "| %d sockets over %d gateways, a point each every %s for %s | |\n|---|---:|\n", r.Connected, r.Gateways, o.Every, o.Duration)
	fmt.Fprintf(&b, "| connect: all hellos in | %.1f s (%.0f sockets/s) |\n", r.ConnectSeconds, r.ConnectRate)
	for i := range r.RSSAfter {
		fmt.Fprintf(&b, "| gateway %d: sockets, RSS before -> after | %.0f, %.0f -> %.0f MiB |\n", i+1, r.SocketsPer[i], r.RSSBefore[i]/(1<<20), r.RSSAfter[i]/(1<<20))
	}
	fmt.Fprintf(&b, "| RSS growth per socket: 10 s after the last connected; at the end of the hold | **%.1f KiB**; **%.1f KiB** |\n", r.RSSPerSocket/1024, r.RSSPerSocketHeld/1024)
	fmt.Fprintf(&b, "| gateways' CPU per socket (a point every %s) | %.1f µs/s |\n", o.Every, r.GatewayCPUPerSocketSec*1e6)
	fmt.Fprintf(&b, "| points sent / read by the gateways during the hold | %d / %.0f |\n", r.PointsSent, r.PointsReceived)
	fmt.Fprintf(&b, "| sockets dropped unasked | **%d** |\n", r.Dropped)
	if r.StormSockets > 0 {
		fmt.Fprintf(&b, "| storm: %d sockets reset at once, all back in | **%.1f s** (%d dials failed and retried; %d not back) |\n", r.StormSockets, r.StormSeconds, r.StormDialFailures, r.StormLeft)
		fmt.Fprintf(&b, "| /readyz during the storm: polls, failed, p99, max | %d, %d, %.1f ms, %.1f ms |\n", r.ReadyzN, r.ReadyzFailed, r.ReadyzP99Ms, r.ReadyzMaxMs)
	}
	if len(r.OfferHold)+len(r.OfferStorm) > 0 {
		fmt.Fprintf(&b, "| booking to offer, hold: n, p50, max | %d, %.0f ms, %.0f ms |\n", len(r.OfferHold), quantileOf(r.OfferHold, 0.5), quantileOf(r.OfferHold, 1))
		fmt.Fprintf(&b, "| booking to offer, storm: n, p50, max | %d, %.0f ms, %.0f ms |\n", len(r.OfferStorm), quantileOf(r.OfferStorm, 0.5), quantileOf(r.OfferStorm, 1))
	}
	fmt.Fprintf(&b, "| load average after | %s |\n", r.LoadAverage)
	return b.String()
}

// SocketsMain is `loadtest sockets`.
func SocketsMain(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sockets", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o SocketsOptions
	urls := fs.String("urls", "ws://127.0.0.1:8080/v1/ws", "the gateways' socket URLs, comma-separated (loopback only)")
	metrics := fs.String("metrics", "", "the gateways' /metrics URLs, comma-separated, in the order of -urls")
	fs.StringVar(&o.REST, "rest", "", "the API's base URL for bookings and /readyz (default: the first gateway's host)")
	secret := fs.String("secret", getenv("DISPATCH_JWT_SECRET"), "the server's JWT secret (default $DISPATCH_JWT_SECRET)")
	city := fs.String("city", "bengaluru", "city preset: bengaluru, delhi or mumbai")
	fs.IntVar(&o.Sockets, "sockets", 10000, "driver sockets to hold")
	fs.IntVar(&o.Procs, "procs", 0, "generator processes (default one per 15,000 sockets)")
	fs.DurationVar(&o.Every, "every", 30*time.Second, "each socket sends a point this often")
	fs.DurationVar(&o.Duration, "duration", 120*time.Second, "the hold, after every socket is connected")
	fs.IntVar(&o.Storm, "storm", 0, "sockets reset at once after the hold, and dialled again at once")
	fs.IntVar(&o.ProbeDrvs, "probe-drivers", 5, "registered drivers online for the matcher probe (a booking a second; 0: none)")
	sources := fs.Int("sources", 0, "127.0.0.x source addresses to spread the sockets over (default one per SocketsPerSource)")
	fs.StringVar(&o.IDPrefix, "id-prefix", "sock", "driver ids are PREFIX-N")
	fs.Int64Var(&o.Seed, "seed", 1, "random seed")
	child := fs.Bool("child", false, "internal: hold a slice of the sockets for a parent run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"}).With().Timestamp().Logger().Level(zerolog.InfoLevel)
	if *child {
		return RunSocketsChild(ctx, os.Stdin, stdout, log)
	}
	c, ok := CityByName(*city)
	if !ok {
		return fmt.Errorf("unknown city %q", *city)
	}
	o.City = c
	o.Secret = []byte(*secret)
	o.URLs = strings.Split(*urls, ",")
	if *metrics != "" {
		o.Metrics = strings.Split(*metrics, ",")
	}
	if o.REST == "" {
		o.REST = baseOf(o.URLs[0])
	}
	n := *sources
	if n == 0 {
		n = (o.Sockets + SocketsPerSource - 1) / SocketsPerSource
	}
	for i := range n {
		o.LocalAddrs = append(o.LocalAddrs, fmt.Sprintf("127.0.0.%d", i+2))
	}
	rep, err := Sockets(ctx, o, log)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, rep.Markdown())
	if rep.Dropped > 0 {
		return fmt.Errorf("%d sockets dropped unasked", rep.Dropped)
	}
	return nil
}
