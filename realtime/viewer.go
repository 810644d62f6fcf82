package realtime

import (
	"context"
	"encoding/json"
	"math"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/uber/h3-go/v4"
)

// Positions reads drivers' positions from the location index (geo.Index) for the live maps:
// a small area's drivers one by one (InArea, of cells at any resolution from a region's to an
// index cell's), and the drivers of whole regions for the counts of a larger one (fleet).
type Positions interface {
	// Regions lists the regions that have ever held a driver.
	Regions(ctx context.Context) ([]string, error)
	// RegionPositions returns every driver a region holds, offline ones included.
	RegionPositions(ctx context.Context, region string) ([]dispatch.Position, error)
	InArea(ctx context.Context, cells []h3.Cell) ([]dispatch.Position, error)
}

// driversMaxM: an area at most this across (corner to corner) is sent its drivers one by one;
// a larger one only the counts per cell (fleet.go). 150 km holds a metro at zoom 11.
const driversMaxM = 150000

// maxPendingBookings bounds a dispatcher's coalesced booking changes; past it the reader is too slow.
const maxPendingBookings = 20000

type driverLocation struct {
	BookingID string  `json:"booking_id"`
	Lat       float64 `json:"lat"`
	Lng       float64 `json:"lng"`
	Heading   float64 `json:"heading"`
	TS        int64   `json:"ts"`
	EtaS      *int    `json:"eta_s,omitempty"`
}

type area struct{ minLat, minLng, maxLat, maxLng float64 }

func (a area) contains(lat, lng float64) bool {
	return lat >= a.minLat && lat <= a.maxLat && lng >= a.minLng && lng <= a.maxLng
}

// viewer is a customer's or a dispatcher's socket.
type viewer struct {
	h     *Hub
	actor dispatch.Actor
	c     *conn
	later later // reads off the socket's goroutines: bookings again, surges, new regions

	// watchMu orders the changes of the watched area: watch.area (the socket's backlog), the
	// adding of regions new since (refreshCounted) and stop. Lock order: watchMu, then mu or
	// the Hub's locks, Hub.subMu and Hub.mu (never taken under any of them).
	watchMu sync.Mutex
	stopped bool // guarded by watchMu

	mu        sync.Mutex // guards the fields below
	refreshAt time.Time  // when the regions of an area counted per cell were last looked at
	watching  map[string]dispatch.Booking
	area      *area
	one       bool // drivers one by one (a small area); else counts per cell only
	res       int  // resolution of the cells sent
	regions   map[string]bool
	counted   []string                       // regions acquired in the hub's fleet (not one by one)
	known     map[string]dispatch.DriverView // drivers in the area (one by one)
	bks       map[string]dispatch.Booking    // bookings in the area
	pendD     map[string]dispatch.DriverView
	pendB     map[string]dispatch.Booking
	sentD     map[string]sentMark // what of each driver last left for this socket
	cellsAt   time.Time
	surges    map[string]float64 // market cell -> surge, as last read (storeSurges)
	surgeAsk  []string           // the market cells a read on later is to get; nil: none asked
}

// sentMark is a driver's last update sent to a socket: its point's time, its state, and when.
type sentMark struct {
	ts    time.Time
	state dispatch.DriverState
	at    time.Time
}

func newViewer(h *Hub, a dispatch.Actor, c *conn) *viewer {
	v := &viewer{h: h, actor: a, c: c, watching: map[string]dispatch.Booking{}}
	c.pull = v.pull
	return v
}

func (v *viewer) start(context.Context) {}

func (v *viewer) stop(ctx context.Context) {
	h := v.h
	v.later.close() // first: a job may wait for watchMu (refreshCounted)
	v.watchMu.Lock()
	defer v.watchMu.Unlock()
	v.stopped = true
	v.mu.Lock()
	var chans []string
	for id := range v.watching {
		chans = append(chans, "trk:"+id, "ev:bk:"+id)
	}
	chans = append(chans, v.areaChannels()...)
	counted := v.counted
	v.counted = nil
	watching := v.watching
	v.mu.Unlock()
	h.fleet.release(ctx, counted)
	h.mu.Lock()
	for id := range watching {
		delete(h.watchers[id], v)
		if len(h.watchers[id]) == 0 {
			delete(h.watchers, id)
		}
	}
	delete(h.dispatch, v)
	h.mu.Unlock()
	h.unsubscribe(ctx, chans...)
}

func (v *viewer) handle(ctx context.Context, env Envelope) error {
	switch {
	case env.Type == "watch":
		var m struct {
			BookingID string `json:"booking_id"`
		}
		if err := decode(env, &m); err != nil {
			return err
		}
		return v.watch(ctx, m.BookingID)
	case env.Type == "watch.area" && v.actor.Staff():
		var m struct {
			MinLat *float64 `json:"min_lat"`
			MinLng *float64 `json:"min_lng"`
			MaxLat *float64 `json:"max_lat"`
			MaxLng *float64 `json:"max_lng"`
		}
		if err := decode(env, &m); err != nil {
			return err
		}
		if m.MinLat == nil || m.MinLng == nil || m.MaxLat == nil || m.MaxLng == nil {
			return dispatch.Errorf(dispatch.InvalidArgument, "min_lat, min_lng, max_lat and max_lng are required")
		}
		return v.watchArea(ctx, area{*m.MinLat, *m.MinLng, *m.MaxLat, *m.MaxLng})
	case env.Type == "watch.area":
		return dispatch.Errorf(dispatch.PermissionDenied, "only dispatchers watch areas")
	}
	return dispatch.Errorf(dispatch.InvalidArgument, "unknown message type %s for a %s", quote(env.Type), v.actor.Role)
}

// watch follows one booking: the customer's own only (dispatchers any).
func (v *viewer) watch(ctx context.Context, id string) error {
	if id == "" {
		return dispatch.Errorf(dispatch.InvalidArgument, "booking_id is required")
	}
	// Authorise first; then subscribe and read again, so no change slips between the two.
	b, err := v.h.svc.Booking(ctx, v.actor, id)
	if err != nil {
		return err
	}
	v.mu.Lock()
	_, already := v.watching[id]
	if !already && len(v.watching) >= maxWatched {
		v.mu.Unlock()
		return dispatch.Errorf(dispatch.InvalidArgument, "a socket watches at most %d bookings", maxWatched)
	}
	v.watching[id] = b
	v.mu.Unlock()
	if !already {
		v.h.mu.Lock()
		if v.h.watchers[id] == nil {
			v.h.watchers[id] = map[*viewer]bool{}
		}
		v.h.watchers[id][v] = true
		v.h.mu.Unlock()
		v.h.subscribe(ctx, "trk:"+id, "ev:bk:"+id)
		if b, err = v.h.svc.Booking(ctx, v.actor, id); err != nil {
			return err
		}
		v.mu.Lock()
		v.watching[id] = b
		v.mu.Unlock()
		// SUBSCRIBE takes effect a moment after it is sent: a change published in between would
		// be missed, so read once more after that moment (sent only if newer).
		for _, after := range []time.Duration{300 * time.Millisecond, 1500 * time.Millisecond} {
			v.later.at(time.Now().Add(after), func(ctx context.Context) {
				ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				if nb, err := v.h.svc.Booking(ctx, v.actor, id); err == nil {
					v.booking(nb)
				}
			})
		}
	}
	v.c.send("booking", b)
	return nil
}

// booking is a change of a watched booking.
// It is sent only if newer than what the socket has (events and catch-up reads may overlap).
func (v *viewer) booking(b dispatch.Booking) {
	v.mu.Lock()
	had, ok := v.watching[b.ID]
	ok = ok && b.Version > had.Version
	if ok {
		v.watching[b.ID] = b
	}
	v.mu.Unlock()
	if ok {
		v.c.send("booking", dispatch.ViewFor(v.actor, b))
	}
}

// driverLocation forwards the assigned driver's position, at most once a second; while the
// driver is on the way, with the ETA the matcher ranks drivers by (dispatch.PickupSeconds).
func (v *viewer) driverLocation(loc driverLocation) {
	v.mu.Lock()
	b, ok := v.watching[loc.BookingID]
	v.mu.Unlock()
	if !ok || !b.Status.Active() {
		return
	}
	if b.Status == dispatch.StatusAssigned {
		eta := int(math.Round(dispatch.PickupSeconds(dispatch.DistanceM(loc.Lat, loc.Lng, b.Pickup.Lat, b.Pickup.Lng))))
		loc.EtaS = &eta
	}
	v.c.sendLatest("trk:"+loc.BookingID, loc.TS, "driver.location", loc)
}

// watchArea answers a snapshot of the area, then deltas about it only. Any area is taken: one
// at most driversMaxM across gets its drivers one by one; a larger one gets no drivers, only
// the counts per cell (at a resolution that suits its size) every second.
func (v *viewer) watchArea(ctx context.Context, a area) error {
	if a.minLat < -90 || a.maxLat > 90 || a.minLng < -180 || a.maxLng > 180 || a.minLat >= a.maxLat || a.minLng >= a.maxLng {
		return dispatch.Errorf(dispatch.InvalidArgument, "the area must be a box with min < max within the coordinate ranges")
	}
	h := v.h
	v.watchMu.Lock()
	defer v.watchMu.Unlock()
	diag := dispatch.DistanceM(a.minLat, a.minLng, a.maxLat, a.maxLng)
	res := h.grid.cellsResFor(diag)
	var regionCells []h3.Cell
	one := false
	if diag <= driversMaxM {
		regionCells, one = h.grid.Covering(a.minLat, a.minLng, a.maxLat, a.maxLng, h.grid.RegionRes, 200)
	}
	regions := map[string]bool{}
	if one {
		for _, c := range regionCells {
			regions[c.String()] = true
		}
	} else {
		// Only regions that hold drivers: all of India is some 13,000 regions, a fleet a few dozen.
		active, err := h.fleet.activeRegions(ctx)
		if err != nil {
			return err
		}
		for _, r := range active {
			if h.grid.regionNear(r, a) {
				regions[r] = true
			}
		}
	}
	var counted []string
	if !one {
		for r := range regions {
			counted = append(counted, r)
		}
	}
	v.mu.Lock()
	oldChans := v.areaChannels()
	oldCounted := v.counted
	v.area, v.one, v.res, v.regions, v.counted = &a, one, res, regions, counted
	v.known, v.bks = map[string]dispatch.DriverView{}, map[string]dispatch.Booking{}
	v.pendD, v.pendB = map[string]dispatch.DriverView{}, map[string]dispatch.Booking{}
	v.sentD, v.cellsAt, v.refreshAt = map[string]sentMark{}, time.Now(), time.Now()
	newChans := v.areaChannels()
	v.mu.Unlock()
	had := map[string]bool{}
	for _, c := range oldChans {
		had[c] = true
	}
	var add, drop []string
	for _, c := range newChans {
		if !had[c] {
			add = append(add, c)
		}
		delete(had, c)
	}
	for c := range had {
		drop = append(drop, c)
	}
	h.subscribe(ctx, add...)
	h.unsubscribe(ctx, drop...)
	h.mu.Lock()
	h.dispatch[v] = true
	h.mu.Unlock()
	// The new regions are counted before the old are let go: a zoom keeps what both share loaded.
	err := h.fleet.acquire(ctx, counted)
	h.fleet.release(ctx, oldCounted)
	if err != nil {
		return err
	}

	drivers := []dispatch.DriverView{}
	if one {
		positions, err := h.index.InArea(ctx, regionCells)
		if err != nil {
			return err
		}
		for _, p := range positions {
			if p.State != dispatch.DriverOffline && a.contains(p.Lat, p.Lng) {
				drivers = append(drivers, p.View())
			}
		}
	}
	if h.svc != nil {
		// The snapshot's drivers only: the page keeps the names for the updates that follow.
		// Best effort: a failure leaves ids alone.
		_ = h.svc.NameViews(ctx, drivers)
	}
	bookings := []dispatch.Booking{}
	for _, st := range []dispatch.Status{dispatch.StatusSearching, dispatch.StatusScheduled, dispatch.StatusAssigned,
		dispatch.StatusArrived, dispatch.StatusInProgress, dispatch.StatusUnfulfilled} {
		bs, err := h.store.Bookings(ctx, dispatch.BookingFilter{Status: st, Limit: 500})
		if err != nil {
			return err
		}
		for _, b := range bs {
			if a.contains(b.Pickup.Lat, b.Pickup.Lng) {
				bookings = append(bookings, b.Public())
			}
		}
	}
	v.mu.Lock()
	for _, d := range drivers {
		v.known[d.ID] = d
	}
	for _, b := range bookings {
		v.bks[b.ID] = b
	}
	v.mu.Unlock()
	mode := "drivers"
	if !one {
		mode = "cells"
	}
	v.c.send("snapshot", map[string]any{"drivers": drivers, "bookings": bookings, "mode": mode, "res": res})
	// The first cells frame's surges are read here, on the socket's work, which may wait on
	// Redis; the next frames' by later (pull).
	cres, cvs := v.countCells()
	v.storeSurges(ctx, v.marketCells(cres, cvs))
	v.c.send("cells", v.cellsFrame(cres, cvs))
	return nil
}

// refreshCounted adds to an area counted per cell the regions that have held a driver since it
// was watched (a fleet moving into a new town): their bookings' events and their drivers. It
// runs on later (pull asks for it).
func (v *viewer) refreshCounted(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v.watchMu.Lock()
	defer v.watchMu.Unlock()
	v.mu.Lock()
	a, one := v.area, v.one
	v.mu.Unlock()
	if v.stopped || a == nil || one {
		return
	}
	active, err := v.h.fleet.activeRegions(ctx)
	if err != nil {
		return // again at the next look
	}
	var fresh, chans []string
	v.mu.Lock()
	for _, r := range active {
		if !v.regions[r] && v.h.grid.regionNear(r, *a) {
			v.regions[r] = true
			v.counted = append(v.counted, r)
			fresh = append(fresh, r)
			chans = append(chans, "ev:reg:"+r)
		}
	}
	v.mu.Unlock()
	if len(fresh) == 0 {
		return
	}
	v.h.subscribe(ctx, chans...)
	_ = v.h.fleet.acquire(ctx, fresh) // a region that failed to load fills from its feed
}

// areaChannels are the channels the watched area needs; the caller holds v.mu. The drivers of
// an area counted per cell come through the hub's fleet, which subscribes for itself.
func (v *viewer) areaChannels() []string {
	var out []string
	for r := range v.regions {
		out = append(out, "ev:reg:"+r)
		if v.one {
			out = append(out, "loc:"+r)
		}
	}
	return out
}

// drivers takes a region's batch of positions; only those inside the area are kept.
func (v *viewer) drivers(region string, batch []dispatch.DriverView) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.area == nil || !v.one || !v.regions[region] {
		return
	}
	for _, d := range batch {
		if !v.area.contains(d.Lat, d.Lng) {
			delete(v.known, d.ID)
			continue
		}
		v.known[d.ID] = d
		if _, held := v.pendD[d.ID]; held {
			v.h.m.viewCoalesced.Inc()
		}
		v.pendD[d.ID] = d
	}
}

// bookingUpdate takes a changed booking; only those with a pickup inside the area are kept.
func (v *viewer) bookingUpdate(b dispatch.Booking) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.area == nil || !v.area.contains(b.Pickup.Lat, b.Pickup.Lng) {
		return
	}
	b = b.Public()
	v.bks[b.ID] = b
	v.pendB[b.ID] = b
	if len(v.pendB) > maxPendingBookings {
		go v.c.close(1013, "too slow a reader")
	}
}

// due reports whether a driver's pending update may leave now. The limit is one point a second
// of the driver's own clock (its points' times), not of this socket's: a driver reporting once
// a second is sent each point at the next tick, whatever the phase between its clock and the
// socket's, and one reporting five times a second is sent every fifth point, also at once. A
// tenth of the gap is forgiven for a phone's jitter, and at least half of it must have passed
// here too (a burst of points with times far apart still leaves at most twice a second). A
// change of state always leaves at once.
func (v *viewer) due(id string, d dispatch.DriverView, now time.Time) bool {
	m, ok := v.sentD[id]
	if !ok || m.state != d.State {
		return true
	}
	gap := v.h.opts.ViewFlush
	return d.UpdatedAt.Sub(m.ts) >= gap-gap/10 && now.Sub(m.at) >= gap/2
}

// pull is called by the writer every tick (ViewTick): the coalesced deltas due now. A newer
// position replaces a held one; booking changes leave at once; the cells every 2 s (every
// second for an area counted per cell, where they are all that moves).
func (v *viewer) pull() [][]byte {
	now := time.Now()
	v.mu.Lock()
	if v.area == nil {
		v.mu.Unlock()
		return nil
	}
	var out [][]byte
	if len(v.pendD) > 0 {
		var ups []dispatch.DriverView
		for id, d := range v.pendD {
			if !v.due(id, d, now) {
				continue
			}
			if !v.area.contains(d.Lat, d.Lng) {
				v.h.m.outside.Inc()
			}
			ups = append(ups, d)
			v.sentD[id] = sentMark{ts: d.UpdatedAt, state: d.State, at: now}
			delete(v.pendD, id)
		}
		if len(ups) > 0 {
			v.h.m.viewUpdates.Add(float64(len(ups)))
			b := make([]byte, 0, 64+110*len(ups))
			b = frameHead(b, "drivers")
			b = append(b, `{"updates":`...)
			b = appendViews(b, ups)
			out = append(out, append(b, "}}"...))
		}
		if len(v.sentD) > 2*len(v.known)+1024 {
			for id, m := range v.sentD {
				if now.Sub(m.at) >= v.h.opts.ViewFlush {
					delete(v.sentD, id)
				}
			}
		}
	}
	if len(v.pendB) > 0 {
		ups := make([]dispatch.Booking, 0, len(v.pendB))
		for _, b := range v.pendB {
			ups = append(ups, b)
		}
		v.pendB = map[string]dispatch.Booking{}
		out = append(out, frame("bookings", map[string]any{"updates": ups}))
	}
	every := 2 * time.Second
	if !v.one {
		every = time.Second
		if now.Sub(v.refreshAt) >= 10*time.Second {
			v.refreshAt = now
			v.later.at(now, v.refreshCounted)
		}
	}
	sendCells := now.Sub(v.cellsAt) >= every
	if sendCells {
		v.cellsAt = now
	}
	v.mu.Unlock()
	if sendCells {
		res, cvs := v.countCells()
		v.askSurges(v.marketCells(res, cvs))
		out = append(out, frame("cells", v.cellsFrame(res, cvs)))
	}
	return out
}

// cellView is one cell of a `cells` frame. supply: available drivers seen within the last
// minute; available and busy (offered, assigned, on a trip): every driver counted, by state;
// demand: searching bookings with their pickup in the cell.
type cellView struct {
	H3        string       `json:"h3"`
	Supply    int          `json:"supply"`
	Demand    int          `json:"demand"`
	Available int          `json:"available"`
	Busy      int          `json:"busy"`
	Boundary  [][2]float64 `json:"boundary"`
	// Surge is the multiplier quotes in the cell's market are priced with (absent: none).
	Surge float64 `json:"surge,omitempty"`
}

// cellCounts gathers the counts of one `cells` frame.
type cellCounts struct {
	now time.Time
	m   map[uint64]*cellView
}

func (cc *cellCounts) get(c uint64) *cellView {
	cv := cc.m[c]
	if cv == nil {
		cv = &cellView{}
		cc.m[c] = cv
	}
	return cv
}

func (cc *cellCounts) driver(c uint64, st dispatch.DriverState, at time.Time) {
	switch st {
	case dispatch.DriverOffline, "":
		return
	case dispatch.DriverAvailable:
		cv := cc.get(c)
		cv.Available++
		if cc.now.Sub(at) < time.Minute {
			cv.Supply++
		}
	default:
		cc.get(c).Busy++
	}
}

// countCells counts the area's drivers by state and its searching bookings per hexagon: from
// the drivers it was sent one by one, or from the hub's fleet for an area counted per cell.
// It returns the cells' resolution and the cells with their H3 and their counts; the surges and
// the boundaries are cellsFrame's.
func (v *viewer) countCells() (int, []*cellView) {
	cc := &cellCounts{now: time.Now(), m: map[uint64]*cellView{}}
	v.mu.Lock()
	res, one := v.res, v.one
	var a area
	watching := v.area != nil
	if watching {
		a = *v.area
	}
	if one {
		for _, d := range v.known {
			cc.driver(v.h.grid.cellOf(d.Lat, d.Lng, res), d.State, d.UpdatedAt)
		}
	}
	for _, b := range v.bks {
		if b.Status == dispatch.StatusSearching {
			cc.get(v.h.grid.cellOf(b.Pickup.Lat, b.Pickup.Lng, res)).Demand++
		}
	}
	v.mu.Unlock()
	if !one && watching {
		v.h.fleet.count(a, res, cc)
	}
	cvs := make([]*cellView, 0, len(cc.m))
	for c, cv := range cc.m {
		cv.H3 = h3.Cell(c).String()
		cvs = append(cvs, cv)
	}
	return res, cvs
}

// cellsFrame is the data of a `cells` frame: the cells counted with their boundaries and, at
// the market resolution, the surges last read.
func (v *viewer) cellsFrame(res int, cvs []*cellView) map[string]any {
	if res == v.h.grid.MarketRes {
		v.mu.Lock()
		for _, cv := range cvs {
			cv.Surge = v.surges[cv.H3]
		}
		v.mu.Unlock()
	}
	out := make([]cellView, 0, len(cvs))
	for _, cv := range cvs {
		cv.Boundary = v.h.grid.Boundary(cv.H3)
		out = append(out, *cv)
	}
	return map[string]any{"res": res, "cells": out}
}

// marketCells is the H3 of the cells counted when they are at the market resolution and
// surges are known (Options.Surges), else nil.
func (v *viewer) marketCells(res int, cvs []*cellView) []string {
	if v.h.opts.Surges == nil || res != v.h.grid.MarketRes || len(cvs) == 0 {
		return nil
	}
	ids := make([]string, 0, len(cvs))
	for _, cv := range cvs {
		ids = append(ids, cv.H3)
	}
	return ids
}

// askSurges has later read the surges of market cells ids (pull: the socket's writer never
// waits on Redis), for the next frame; the frame being made has those last read. Asks made
// while a read is pending are one: the read takes the last cells asked for.
func (v *viewer) askSurges(ids []string) {
	if ids == nil {
		return
	}
	v.mu.Lock()
	pending := v.surgeAsk != nil
	v.surgeAsk = ids
	v.mu.Unlock()
	if !pending {
		v.later.at(time.Now(), v.readAskedSurges)
	}
}

// readAskedSurges reads the surges askSurges asked for (on later).
func (v *viewer) readAskedSurges(ctx context.Context) {
	v.mu.Lock()
	ids := v.surgeAsk
	v.surgeAsk = nil
	v.mu.Unlock()
	v.storeSurges(ctx, ids)
}

// storeSurges reads the surges of market cells ids for the frames to come (watchArea on the
// socket's work, later for pull). The read is bounded: a slow answer or an error leaves the
// map uncoloured for a round rather than hold up what waits behind it.
func (v *viewer) storeSurges(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	s, err := v.h.opts.Surges(ctx, ids)
	if err != nil {
		s = nil
	}
	v.mu.Lock()
	v.surges = s
	v.mu.Unlock()
}

// frameHead starts a frame of typ encoded by hand: `{"type":"<typ>","data":` (typ is one of
// ours, no escaping needed); the data and the closing brace follow.
func frameHead(b []byte, typ string) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	return append(b, `","data":`...)
}

func frame(typ string, data any) []byte {
	b, _ := json.Marshal(outFrame{Type: typ, Data: data})
	return b
}
