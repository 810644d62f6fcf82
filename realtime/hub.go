// Package realtime owns the WebSocket sessions of drivers, customers and dispatchers, and the
// fan-out of booking changes and driver positions across gateway nodes through Redis pub/sub.
//
// Channels (keyed so that a gateway subscribes only to what its own viewers need):
//
//	ev:bk:<booking>     booking events (from the store's outbox relay) for its watching customers
//	ev:reg:<region>     booking events for dispatchers whose area covers the pickup's region
//	ev:drv:<driver>     booking events for the booking's driver, subscribed by its gateway
//	to:drv:<driver>     messages for one driver (offers, revocations), subscribed by its gateway
//	trk:<booking>       the assigned driver's positions, published by its gateway (tracks),
//	                    subscribed by gateways with its customer
//	loc:<region>        batches of driver positions in a region, published by the location index
//	                    as it writes them, subscribed for dispatchers' areas
//
// realtime must not change bookings itself: every action goes through dispatch.Service. It
// imports no other adapter: what it needs of the location index it declares (Index, PointSink,
// Grid) and cmd/dispatchd gives geo's.
package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
)

// Authenticate verifies a request's token before the upgrade and returns who it is and when
// the token expires.
type Authenticate func(r *http.Request) (dispatch.Actor, time.Time, error)

// Options configure a Hub.
type Options struct {
	Auth           Authenticate
	AllowedOrigins []string // empty: same host only (and any app without an Origin header)
	// Validation bounds of location points.
	MaxAccuracyM float64       // default 100
	MaxSkew      time.Duration // default 2 min
	MaxSpeedKmh  float64       // default 200
	// Rate is the location frames a driver may send per second (default 5).
	Rate float64
	// ViewFlush: a viewer receives each driver's position at most this often (default 1 s), as
	// the driver's own clock goes: points a second apart each leave at once (viewer.due).
	ViewFlush time.Duration
	// ViewTick is how often a viewer's pending frames are looked at (default 50 ms): a point
	// that may be shown leaves within a tick.
	ViewTick time.Duration
	Now      func() time.Time
	// UserRate is the messages a second one user may send across all its sockets (default 20,
	// bursts twice that); MaxSocketsPerUser caps a customer's or dispatcher's open sockets
	// (default 5; a driver's new socket replaces its old one instead). See guard.go.
	UserRate          float64
	MaxSocketsPerUser int
	// GoneGrace is how long a driver whose socket closed has to come back before they are no
	// candidate and their open offer is revoked (default 5 s; gone.go).
	GoneGrace time.Duration
	// Surges, when set, gives the surge of the markets of the map's cells (H3 at the cells'
	// resolution; cells with none left out): the live map colours them.
	Surges func(ctx context.Context, cells []string) (map[string]float64, error)
	// TrailKeep says whether p follows last (nil: none yet) in the trail of a trip in progress
	// (geo.TrailKeep); nil keeps no trail.
	TrailKeep func(last *dispatch.Point, p dispatch.Point) bool
}

// Index is what a gateway needs of the location index (geo.Index); each part is declared
// beside its user: Presence (gone.go), Positions (viewer.go), Trails (trail.go).
type Index interface {
	Presence
	Positions
	Trails
}

// Hub serves /v1/ws. Run owns the pub/sub goroutine; Shutdown closes every socket with 1001
// and waits for their goroutines. All methods are safe for concurrent use.
//
// Lock order: Hub.subMu, then Hub.mu, then a session's own lock; never the other way. Nothing
// holding Hub.mu waits on Redis: only subMu is held across a SUBSCRIBE (syncSubs).
type Hub struct {
	*Bus
	rdb    redis.UniversalClient
	svc    *dispatch.Service
	store  dispatch.BookingStore
	index  Index // the location index
	points PointSink
	tracks *tracks
	opts   Options
	log    zerolog.Logger
	m      metrics

	up websocket.Upgrader

	// subMu orders the hub's SUBSCRIBE and UNSUBSCRIBE commands (syncSubs); held across them.
	subMu sync.Mutex

	mu         sync.Mutex
	ps         *redis.PubSub
	subs       map[string]int      // channel -> sessions needing it
	live       map[string]bool     // channels ps was told to subscribe (its own set); changed under subMu too
	dirty      map[string]struct{} // channels whose need began or ended since syncSubs last took them
	sending    map[string]struct{} // the dirty channels the running syncSubs took
	drivers    map[string]*driverSession
	watchers   map[string]map[*viewer]bool // booking id -> customers watching it
	dispatch   map[*viewer]bool            // dispatchers
	all        map[*conn]bool
	draining   bool
	wg         sync.WaitGroup
	seenEvents *dedupe
	versions   *lastVersions          // per audience and booking, the last version routed
	guards     *guards                // per-user socket cap and message budget
	gone       map[string]*time.Timer // driver -> the grace of its closed socket (gone.go)
	fleet      *fleet                 // drivers of the regions counted for zoomed-out maps
}

// NewHub returns a hub over the location index whose drivers' points go to points (the
// location writer, whose Run the caller owns). Its channels and maps follow bus's Grid.
func NewHub(rdb redis.UniversalClient, bus *Bus, svc *dispatch.Service, store dispatch.BookingStore, index Index, points PointSink, opts Options, reg prometheus.Registerer, log zerolog.Logger) *Hub {
	if opts.MaxAccuracyM <= 0 {
		opts.MaxAccuracyM = 100
	}
	if opts.MaxSkew <= 0 {
		opts.MaxSkew = 2 * time.Minute
	}
	if opts.MaxSpeedKmh <= 0 {
		opts.MaxSpeedKmh = 200
	}
	if opts.Rate <= 0 {
		opts.Rate = 5
	}
	if opts.ViewFlush <= 0 {
		opts.ViewFlush = time.Second
	}
	if opts.UserRate <= 0 {
		opts.UserRate = 20
	}
	if opts.MaxSocketsPerUser <= 0 {
		opts.MaxSocketsPerUser = 5
	}
	if opts.ViewTick <= 0 {
		opts.ViewTick = 50 * time.Millisecond
	}
	if opts.GoneGrace <= 0 {
		opts.GoneGrace = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Hub{gone: map[string]*time.Timer{}, Bus: bus, rdb: rdb, svc: svc, store: store, index: index, points: points, opts: opts, log: log, m: newMetrics(reg),
		subs: map[string]int{}, live: map[string]bool{}, dirty: map[string]struct{}{}, drivers: map[string]*driverSession{}, watchers: map[string]map[*viewer]bool{},
		dispatch: map[*viewer]bool{}, all: map[*conn]bool{}, seenEvents: newDedupe(4096), versions: newLastVersions(65536), guards: newGuards(opts, reg)}
	h.fleet = newFleet(h)
	h.tracks = newTracks(bus, log)
	h.up = websocket.Upgrader{
		// A socket holds its read buffer for life (frames are small: readLimit is 4 KiB, larger
		// ones are read past the buffer); the write buffer only while writing (the pool).
		ReadBufferSize:  512,
		WriteBufferSize: 1024,
		WriteBufferPool: &sync.Pool{},
		Subprotocols:    []string{"dispatch.v1"},
		CheckOrigin:     h.checkOrigin,
	}
	return h
}

func (h *Hub) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // native apps send none
	}
	for _, o := range h.opts.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	// Same host as the page that opened the socket.
	host := origin
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	return strings.EqualFold(host, r.Host)
}

// Run subscribes to the booking events and routes pub/sub messages until ctx is done, and
// publishes the positions of drivers on a booking (tracks) meanwhile.
func (h *Hub) Run(ctx context.Context) error {
	tctx, stopTracks := context.WithCancel(ctx)
	tracking := make(chan struct{})
	go func() {
		defer close(tracking)
		h.tracks.run(tctx)
	}()
	defer func() { stopTracks(); <-tracking }()
	h.mu.Lock()
	h.ps = h.rdb.Subscribe(ctx)
	ps := h.ps
	h.mu.Unlock()
	defer ps.Close()
	// What was asked for before Run started.
	if err := h.syncSubs(ctx); err != nil {
		return err
	}
	receive(ctx, ps.Channel(redis.WithChannelSize(4096)), func(msg *redis.Message) {
		h.route(ctx, msg.Channel, []byte(msg.Payload))
	})
	return nil
}

// subscribe counts a session's need of channels. It returns once Redis has been asked for
// each of them (by this call or an earlier one), or at once before Run: the caller may then
// read the state the channels will bring changes of. An error is logged.
func (h *Hub) subscribe(ctx context.Context, channels ...string) {
	h.mu.Lock()
	wait := false
	for _, c := range channels {
		h.subs[c]++
		if h.subs[c] == 1 {
			h.dirty[c] = struct{}{}
		}
		// Its command is yet to be sent, or being sent by another caller.
		_, dirty := h.dirty[c]
		_, sending := h.sending[c]
		wait = wait || dirty || sending || !h.live[c]
	}
	h.mu.Unlock()
	if wait {
		if err := h.syncSubs(ctx); err != nil {
			h.log.Warn().Err(err).Msg("subscribe")
		}
	}
}

// unsubscribe undoes subscribe. It returns once Redis has been told of the channels no
// session needs any more.
func (h *Hub) unsubscribe(ctx context.Context, channels ...string) {
	h.mu.Lock()
	gone := false
	for _, c := range channels {
		if h.subs[c] <= 0 {
			continue
		}
		h.subs[c]--
		if h.subs[c] == 0 {
			delete(h.subs, c)
			h.dirty[c] = struct{}{}
			gone = true
		}
	}
	h.mu.Unlock()
	if gone {
		if err := h.syncSubs(ctx); err != nil {
			h.log.Warn().Err(err).Msg("subscribe") // others' channels, sent with these
		}
	}
}

// syncSubs brings the pub/sub connection's channels to what the sessions need: it subscribes
// the dirty channels needed and not live, and unsubscribes the live ones needed no more. It
// returns SUBSCRIBE's error.
// Hub.mu is held only to read and mark the maps, never across the commands, so routing and
// sessions opening and closing go on while Redis is slow. subMu is held across them: each
// call works out what to send from the counts as they are when it starts, and sends it before
// the next call starts, so however subscribe and unsubscribe calls interleave, the last
// command sent for a channel is what its count says; when a call returns, what was dirty
// when it was made has been sent. (The PubSub sends its commands one at a time on its one
// connection anyway.) Before Run there is no connection: the channels stay dirty for Run.
func (h *Hub) syncSubs(ctx context.Context) error {
	h.subMu.Lock()
	defer h.subMu.Unlock()
	h.mu.Lock()
	ps := h.ps
	if ps == nil {
		h.mu.Unlock()
		return nil
	}
	var add, drop []string
	for c := range h.dirty {
		switch need := h.subs[c] > 0; {
		case need && !h.live[c]:
			add = append(add, c)
		case !need && h.live[c]:
			drop = append(drop, c)
		}
	}
	h.sending, h.dirty = h.dirty, map[string]struct{}{}
	h.mu.Unlock()
	var err error
	if len(add) > 0 {
		err = ps.Subscribe(ctx, h.chs(add)...)
	}
	if len(drop) > 0 {
		// A failure leaves nothing to do: the PubSub drops the channels from its set before
		// sending, and a connection that failed is replaced without them (or Run has ended
		// and closed the PubSub, when a component failed, before the sockets close).
		_ = ps.Unsubscribe(ctx, h.chs(drop)...)
	}
	// Live even when SUBSCRIBE failed: the PubSub keeps the channels in its set and
	// subscribes them again as it reconnects.
	h.mu.Lock()
	for _, c := range add {
		h.live[c] = true
	}
	for _, c := range drop {
		delete(h.live, c)
	}
	h.sending = nil
	h.mu.Unlock()
	return err
}

// chs is the Redis names of channels.
func (h *Hub) chs(channels []string) []string {
	out := make([]string, len(channels))
	for i, c := range channels {
		out[i] = h.ch(c)
	}
	return out
}

func (h *Hub) route(ctx context.Context, channel string, payload []byte) {
	channel = strings.TrimPrefix(channel, h.prefix)
	switch {
	case strings.HasPrefix(channel, "ev:"):
		var e dispatch.Event
		if err := json.Unmarshal(payload, &e); err != nil {
			return
		}
		// At least once: the relay may publish an event again; each audience takes it once.
		kind, key, _ := strings.Cut(strings.TrimPrefix(channel, "ev:"), ":")
		if !h.seenEvents.first(kind + ":" + e.ID) {
			h.m.dupEvents.Inc()
			return
		}
		// Older than what this audience already has (relays interleaving): superseded.
		if !h.versions.newer(kind+":"+e.BookingID, e.Version) {
			h.m.dupEvents.Inc()
			return
		}
		e.Booking.Version = e.Version // the booking's JSON leaves its version out
		h.onBooking(kind, key, e.Booking)
	case strings.HasPrefix(channel, "to:drv:"):
		h.mu.Lock()
		d := h.drivers[strings.TrimPrefix(channel, "to:drv:")]
		h.mu.Unlock()
		if d != nil {
			d.c.sendRaw(payload)
		}
	case strings.HasPrefix(channel, "trk:"):
		var loc driverLocation
		if err := json.Unmarshal(payload, &loc); err != nil {
			return
		}
		h.mu.Lock()
		var vs []*viewer
		for v := range h.watchers[loc.BookingID] {
			vs = append(vs, v)
		}
		h.mu.Unlock()
		for _, v := range vs {
			v.driverLocation(loc)
		}
	case strings.HasPrefix(channel, "loc:"):
		var batch []dispatch.DriverView
		if err := json.Unmarshal(payload, &batch); err != nil {
			return
		}
		region := strings.TrimPrefix(channel, "loc:")
		h.fleet.update(region, batch)
		h.mu.Lock()
		var vs []*viewer
		for v := range h.dispatch {
			vs = append(vs, v)
		}
		h.mu.Unlock()
		for _, v := range vs {
			v.drivers(region, batch)
		}
	}
}

// onBooking routes a changed booking to one audience: "bk" its watchers, "reg" the dispatchers
// (each filters by its area), "drv" its driver.
func (h *Hub) onBooking(kind, key string, b dispatch.Booking) {
	h.mu.Lock()
	var d *driverSession
	var vs []*viewer
	switch kind {
	case "drv":
		d = h.drivers[key]
	case "bk":
		for v := range h.watchers[b.ID] {
			vs = append(vs, v)
		}
	case "reg":
		for v := range h.dispatch {
			vs = append(vs, v)
		}
	}
	h.mu.Unlock()
	if d != nil {
		d.onBooking(b)
	}
	for _, v := range vs {
		if kind == "bk" {
			v.booking(b)
		} else {
			v.bookingUpdate(b)
		}
	}
}

// Draining reports whether Shutdown has begun.
func (h *Hub) Draining() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.draining
}

// Shutdown refuses new sockets, closes every socket with 1001 and waits for all session
// goroutines, or for ctx.
func (h *Hub) Shutdown(ctx context.Context) error {
	h.stopGone()
	h.mu.Lock()
	h.draining = true
	var cs []*conn
	for c := range h.all {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.close(websocket.CloseGoingAway, "server shutting down")
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("sockets still open after the shutdown deadline")
	}
}

// dedupe remembers the last n event ids.
type dedupe struct {
	mu   sync.Mutex
	seen map[string]bool
	ring []string
	next int
}

func newDedupe(n int) *dedupe { return &dedupe{seen: map[string]bool{}, ring: make([]string, n)} }

func (d *dedupe) first(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen[id] {
		return false
	}
	if old := d.ring[d.next]; old != "" {
		delete(d.seen, old)
	}
	d.ring[d.next] = id
	d.seen[id] = true
	d.next = (d.next + 1) % len(d.ring)
	return true
}
