package realtime

import (
	"context"
	"encoding/json"
	"math"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/uber/h3-go/v4"
)

// citySpeedMS is the speed the ETA assumes: about 20 km/h, Bengaluru's peak-hour average.
const citySpeedMS = 5.5

// cellsRes is the resolution of the supply and demand hexagons (about 5 km², edge 1.2 km).
const cellsRes = 7

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

	mu       sync.Mutex // guards the fields below
	watching map[string]dispatch.Booking
	area     *area
	regions  map[string]bool
	known    map[string]dispatch.DriverView // drivers in the area
	bks      map[string]dispatch.Booking    // bookings in the area
	pendD    map[string]dispatch.DriverView
	pendB    map[string]dispatch.Booking
	sentD    map[string]time.Time // when each driver last left for this socket
	cellsAt  time.Time
}

func newViewer(h *Hub, a dispatch.Actor, c *conn) *viewer {
	v := &viewer{h: h, actor: a, c: c, watching: map[string]dispatch.Booking{}}
	c.pull = v.pull
	return v
}

func (v *viewer) start(context.Context) {}

func (v *viewer) stop(ctx context.Context) {
	h := v.h
	v.mu.Lock()
	var chans []string
	for id := range v.watching {
		chans = append(chans, "trk:"+id, "ev:bk:"+id)
	}
	for r := range v.regions {
		chans = append(chans, "loc:"+r, "ev:reg:"+r)
	}
	watching := v.watching
	v.mu.Unlock()
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
			return errInvalid("min_lat, min_lng, max_lat and max_lng are required")
		}
		return v.watchArea(ctx, area{*m.MinLat, *m.MinLng, *m.MaxLat, *m.MaxLng})
	case env.Type == "watch.area":
		return forbidden("only dispatchers watch areas")
	}
	return errInvalid("unknown message type " + quote(env.Type) + " for a " + v.actor.Role)
}

type forbiddenErr string

func (e forbiddenErr) Error() string { return string(e) }
func (e forbiddenErr) Unwrap() error { return dispatch.ErrForbidden }

func forbidden(msg string) error { return forbiddenErr(msg) }

// watch follows one booking: the customer's own only (dispatchers any).
func (v *viewer) watch(ctx context.Context, id string) error {
	if id == "" {
		return errInvalid("booking_id is required")
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
		return errInvalid("a socket watches at most 100 bookings")
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
			time.AfterFunc(after, func() {
				cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				if nb, err := v.h.svc.Booking(cctx, v.actor, id); err == nil {
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

// driverLocation forwards the assigned driver's position with an ETA, at most once a second.
func (v *viewer) driverLocation(loc driverLocation) {
	v.mu.Lock()
	b, ok := v.watching[loc.BookingID]
	v.mu.Unlock()
	if !ok || !b.Status.Active() {
		return
	}
	if b.Status == dispatch.StatusAssigned {
		eta := int(math.Round(geo.DistanceM(loc.Lat, loc.Lng, b.Pickup.Lat, b.Pickup.Lng) * 1.3 / citySpeedMS))
		loc.EtaS = &eta
	}
	v.c.sendLatest("trk:"+loc.BookingID, "driver.location", loc)
}

// watchArea answers a snapshot of the area, then deltas about it only.
func (v *viewer) watchArea(ctx context.Context, a area) error {
	if a.minLat < -90 || a.maxLat > 90 || a.minLng < -180 || a.maxLng > 180 || a.minLat >= a.maxLat || a.minLng >= a.maxLng {
		return errInvalid("the area must be a box with min < max within the coordinate ranges")
	}
	if geo.DistanceM(a.minLat, a.minLng, a.maxLat, a.maxLng) > 150000 {
		return errInvalid("the area is larger than 150 km across")
	}
	regionCells, ok := geo.CellsCovering(a.minLat, a.minLng, a.maxLat, a.maxLng, geo.RegionRes, 200)
	if !ok {
		return errInvalid("the area covers too many regions")
	}
	regions := map[string]bool{}
	for _, c := range regionCells {
		regions[c.String()] = true
	}
	h := v.h
	v.mu.Lock()
	old := v.regions
	v.area, v.regions = &a, regions
	v.known, v.bks = map[string]dispatch.DriverView{}, map[string]dispatch.Booking{}
	v.pendD, v.pendB = map[string]dispatch.DriverView{}, map[string]dispatch.Booking{}
	v.sentD, v.cellsAt = map[string]time.Time{}, time.Now()
	v.mu.Unlock()
	var add, drop []string
	for r := range regions {
		if !old[r] {
			add = append(add, "loc:"+r, "ev:reg:"+r)
		}
	}
	for r := range old {
		if !regions[r] {
			drop = append(drop, "loc:"+r, "ev:reg:"+r)
		}
	}
	h.subscribe(ctx, add...)
	h.unsubscribe(ctx, drop...)
	h.mu.Lock()
	h.dispatch[v] = true
	h.mu.Unlock()

	positions, err := h.loc.InArea(ctx, regionCells)
	if err != nil {
		return err
	}
	drivers := []dispatch.DriverView{}
	for _, p := range positions {
		if p.State != dispatch.DriverOffline && a.contains(p.Lat, p.Lng) {
			drivers = append(drivers, p.View())
		}
	}
	nameViews(ctx, h.svc, drivers)
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
	v.c.send("snapshot", map[string]any{"drivers": drivers, "bookings": bookings})
	v.c.send("cells", v.cells())
	return nil
}

// drivers takes a region's batch of positions; only those inside the area are kept.
func (v *viewer) drivers(region string, batch []dispatch.DriverView) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.area == nil || !v.regions[region] {
		return
	}
	for _, d := range batch {
		if !v.area.contains(d.Lat, d.Lng) {
			delete(v.known, d.ID)
			continue
		}
		v.known[d.ID] = d
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

// pull is called by the writer every tick: the coalesced deltas due now. Each driver leaves at
// most once per ViewFlush (a newer position replaces a held one); booking changes leave at once;
// the supply and demand cells every 2 s.
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
			if now.Sub(v.sentD[id]) < v.h.opts.ViewFlush {
				continue
			}
			if !v.area.contains(d.Lat, d.Lng) {
				v.h.m.outside.Inc()
			}
			ups = append(ups, d)
			v.sentD[id] = now
			delete(v.pendD, id)
		}
		if len(ups) > 0 {
			out = append(out, frame("drivers", map[string]any{"updates": ups}))
		}
		if len(v.sentD) > 2*len(v.known)+1024 {
			for id, at := range v.sentD {
				if now.Sub(at) >= v.h.opts.ViewFlush {
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
	sendCells := now.Sub(v.cellsAt) >= 2*time.Second
	if sendCells {
		v.cellsAt = now
	}
	v.mu.Unlock()
	if sendCells {
		out = append(out, frame("cells", v.cells()))
	}
	return out
}

type cellView struct {
	H3       string       `json:"h3"`
	Supply   int          `json:"supply"`
	Demand   int          `json:"demand"`
	Boundary [][2]float64 `json:"boundary"`
}

// cells counts available drivers (supply) and searching bookings (demand) per hexagon.
func (v *viewer) cells() map[string]any {
	v.mu.Lock()
	counts := map[h3.Cell]*cellView{}
	get := func(lat, lng float64) *cellView {
		c := h3.LatLngToCell(h3.LatLng{Lat: lat, Lng: lng}, cellsRes)
		cv := counts[c]
		if cv == nil {
			cv = &cellView{H3: c.String()}
			counts[c] = cv
		}
		return cv
	}
	for _, d := range v.known {
		if d.State == dispatch.DriverAvailable && time.Since(d.UpdatedAt) < time.Minute {
			get(d.Lat, d.Lng).Supply++
		}
	}
	for _, b := range v.bks {
		if b.Status == dispatch.StatusSearching {
			get(b.Pickup.Lat, b.Pickup.Lng).Demand++
		}
	}
	v.mu.Unlock()
	out := make([]cellView, 0, len(counts))
	for _, cv := range counts {
		cv.Boundary = geo.Boundary(cv.H3)
		out = append(out, *cv)
	}
	return map[string]any{"res": cellsRes, "cells": out}
}

func frame(typ string, data any) []byte {
	b, _ := json.Marshal(outFrame{Type: typ, Data: data})
	return b
}

// nameViews gives views their drivers' names and ratings from the profiles (the snapshot only:
// the page keeps them for the updates that follow). Best effort: a failure leaves ids alone.
func nameViews(ctx context.Context, svc *dispatch.Service, views []dispatch.DriverView) {
	if svc == nil || len(views) == 0 {
		return
	}
	ids := make([]string, len(views))
	for i, v := range views {
		ids[i] = v.ID
	}
	names, err := svc.DriverNames(ctx, ids)
	if err != nil {
		return
	}
	for i := range views {
		if n, ok := names[views[i].ID]; ok {
			r := n.Rating
			views[i].Name, views[i].Rating = n.Name, &r
		}
	}
}
