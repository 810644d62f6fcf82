package realtime

import (
	"context"
	"math"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/dispatch/ratelimit"
)

// PointSink takes the points drivers' sockets accepted, to be indexed in the background
// (geo.Writer): Submit must not wait on a backend, it runs for every GPS point. newState is the
// state recorded for a driver the index holds no record of; received is when the point was read.
// Safe for concurrent use.
type PointSink interface {
	Submit(driverID string, p dispatch.Point, newState dispatch.DriverState, received time.Time)
}

// driverSession is one driver's socket.
type driverSession struct {
	h       *Hub
	actor   dispatch.Actor
	c       *conn
	work    *backlog // the socket's work waiting on the backends (Hub.readLoop)
	session string   // this socket's mark in the index (Presence.Attach)
	// frames is the socket's budget of location frames by the server's clock, with a burst of
	// five seconds' worth (a flood guard); points is the same rate by the points' own ts, with a
	// burst of two seconds' worth. A phone sending at its pace is never refused because the
	// gateway read its frames late, after a pause, yet a socket cannot send faster for long.
	// Both are used by whoever handles the socket's frames, one at a time: its read loop, or
	// its backlog while work is pending there.
	frames, points ratelimit.Bucket

	mu      sync.Mutex // guards the fields below
	last    *dispatch.Point
	state   dispatch.DriverState
	booking string // the active booking whose positions its customer watches
	// bookingStatus is booking's status; while in_progress, sampled points join its trail (trail.go).
	bookingStatus dispatch.Status
	trail         *dispatch.Point // the last point kept in the trail of trailOf
	trailOf       string
	trailPause    time.Time // no trail until then: Redis failed
}

func newDriverSession(h *Hub, a dispatch.Actor, c *conn, work *backlog) *driverSession {
	return &driverSession{h: h, actor: a, c: c, work: work, session: dispatch.NewID("ses"), frames: ratelimit.NewBucket(h.opts.Rate, h.opts.Rate*5),
		points: ratelimit.NewBucket(h.opts.Rate, float64(int(h.opts.Rate)*2))}
}

func (d *driverSession) start(ctx context.Context) {
	h := d.h
	h.mu.Lock()
	old := h.drivers[d.actor.ID]
	h.drivers[d.actor.ID] = d
	h.mu.Unlock()
	if old != nil {
		old.c.close(1008, "replaced by a newer connection")
	} else {
		h.subscribe(ctx, "to:drv:"+d.actor.ID, "ev:drv:"+d.actor.ID)
	}
	h.cancelGone(d.actor.ID)
	if err := h.index.Attach(ctx, d.actor.ID, d.session); err != nil {
		h.log.Warn().Err(err).Str("driver", d.actor.ID).Msg("mark driver's socket")
	}
	// What the socket is told as it opens is the domain's: the driver's state and what it resumes.
	hello, err := h.svc.DriverHello(ctx, d.actor)
	if err != nil {
		h.log.Warn().Err(err).Str("driver", d.actor.ID).Msg("driver's hello: what could not be read is left out")
	}
	frame := map[string]any{"driver_id": d.actor.ID, "state": hello.State, "server_time": h.opts.Now().UTC()}
	d.mu.Lock()
	if hello.Active != nil {
		frame["booking"] = *hello.Active
		d.booking, d.bookingStatus = hello.Active.ID, hello.Active.Status
	}
	d.state = hello.State
	d.mu.Unlock()
	d.c.send("hello", frame)
	for _, o := range hello.Offers {
		d.c.send("offer", dispatch.OfferMessage(o.Offer, o.Booking))
	}
}

func (d *driverSession) stop(ctx context.Context) {
	h := d.h
	h.mu.Lock()
	mine := h.drivers[d.actor.ID] == d
	if mine {
		delete(h.drivers, d.actor.ID)
	}
	h.mu.Unlock()
	if mine {
		h.unsubscribe(ctx, "to:drv:"+d.actor.ID, "ev:drv:"+d.actor.ID)
		// It may reconnect to another gateway, which may move it to another region.
		h.index.Forget(d.actor.ID)
		h.watchGone(d.actor.ID, d.session)
	}
}

func (d *driverSession) onBooking(b dispatch.Booking) {
	d.mu.Lock()
	// A booking assigned ahead (the calendar) does not take over from the one under way.
	if b.Status.Active() && (d.booking == "" || d.booking == b.ID || b.Status != dispatch.StatusAssigned) {
		d.booking, d.bookingStatus = b.ID, b.Status
	} else if d.booking == b.ID {
		d.booking, d.bookingStatus = "", b.Status
	}
	d.mu.Unlock()
	d.c.send("booking", b.Public())
}

func (d *driverSession) handle(ctx context.Context, env Envelope) error {
	svc := d.h.svc
	switch env.Type {
	case "location":
		p, ok := env.point, env.parsed
		if !ok {
			p, ok = parsePoint(env.Data)
		}
		if !ok {
			p = dispatch.Point{}
			if err := decode(env, &p); err != nil {
				d.h.m.rejected.WithLabelValues("malformed").Inc()
				return err
			}
		}
		if !d.allowPoint(p) {
			d.h.m.rejected.WithLabelValues("rate_limited").Inc()
			return nil
		}
		return d.accept(p)
	case "locations":
		var batch struct {
			Points []dispatch.Point `json:"points"`
		}
		if err := decode(env, &batch); err != nil {
			d.h.m.rejected.WithLabelValues("malformed").Inc()
			return err
		}
		if !d.frames.Allow(d.h.opts.Now()) {
			d.h.m.rejected.WithLabelValues("rate_limited").Add(float64(len(batch.Points)))
			return nil
		}
		var firstErr error
		for _, p := range batch.Points {
			if err := d.accept(p); err != nil && firstErr == nil {
				firstErr = err
			}
		}
		return firstErr
	case "status":
		var s struct {
			State string `json:"state"`
		}
		if err := decode(env, &s); err != nil {
			return err
		}
		return d.setStatus(ctx, s.State)
	case "offer.accept":
		var m struct {
			OfferID string `json:"offer_id"`
		}
		if err := decode(env, &m); err != nil {
			return err
		}
		b, err := svc.Accept(ctx, d.actor, m.OfferID)
		if err == nil {
			d.mu.Lock()
			d.booking, d.bookingStatus, d.state = b.ID, b.Status, dispatch.DriverAssigned
			d.mu.Unlock()
		}
		return err
	case "offer.decline":
		var m struct {
			OfferID string `json:"offer_id"`
			Reason  string `json:"reason"`
		}
		if err := decode(env, &m); err != nil {
			return err
		}
		return svc.Decline(ctx, d.actor, m.OfferID, m.Reason)
	case "trip.arrive", "trip.start", "trip.end", "trip.cancel":
		var m struct {
			BookingID string `json:"booking_id"`
			OTP       string `json:"otp"`
			Reason    string `json:"reason"`
		}
		if err := decode(env, &m); err != nil {
			return err
		}
		var err error
		switch env.Type {
		case "trip.arrive":
			_, err = svc.Arrive(ctx, d.actor, m.BookingID)
		case "trip.start":
			_, err = svc.Start(ctx, d.actor, m.BookingID, m.OTP)
		case "trip.end":
			_, err = svc.End(ctx, d.actor, m.BookingID)
		case "trip.cancel":
			_, err = svc.Cancel(ctx, d.actor, m.BookingID, m.Reason)
		}
		return err
	}
	return dispatch.Errorf(dispatch.InvalidArgument, "unknown message type %s for a driver", quote(env.Type))
}

// setStatus carries a `status` frame to the domain (dispatch.Service.GoOnline, GoOffline) and
// keeps the state it recorded for the socket's points.
func (d *driverSession) setStatus(ctx context.Context, s string) error {
	var st dispatch.DriverState
	var err error
	switch s {
	case "online":
		st, err = d.h.svc.GoOnline(ctx, d.actor)
	case "offline":
		st, err = d.h.svc.GoOffline(ctx, d.actor)
	default:
		return dispatch.Errorf(dispatch.InvalidArgument, `state must be "online" or "offline"`)
	}
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.state = st
	d.mu.Unlock()
	return nil
}

// allowPoint takes a location frame from the socket's budget (see driverSession.frames).
func (d *driverSession) allowPoint(p dispatch.Point) bool {
	now := d.h.opts.Now()
	at := time.UnixMilli(p.TS)
	if p.TS == 0 || at.Sub(now) > d.h.opts.MaxSkew || now.Sub(at) > d.h.opts.MaxSkew {
		at = now // refused by accept anyway; it must not move the point clock
	}
	return d.points.Allow(at) && d.frames.Allow(now)
}

// accept validates one point against the last accepted one and queues it for the index, for
// its booking's customers (tracks) and, sampled, for its trip's trail (on the socket's
// backlog); it waits on no backend. A refused point is counted by reason and answered with an
// error frame; the socket stays open.
func (d *driverSession) accept(p dispatch.Point) error {
	h := d.h
	h.m.received.Inc()
	now := h.opts.Now()
	reject := func(reason, msg string) error {
		h.m.rejected.WithLabelValues(reason).Inc()
		return dispatch.Errorf(dispatch.InvalidArgument, "%s", msg)
	}
	p = normalizePoint(p)
	switch {
	case math.IsNaN(p.Lat) || math.IsNaN(p.Lng) || p.Lat < -90 || p.Lat > 90 || p.Lng < -180 || p.Lng > 180:
		return reject("out_of_range", "lat must be within [-90, 90] and lng within [-180, 180]")
	case p.Acc < 0 || p.Acc > h.opts.MaxAccuracyM:
		return reject("inaccurate", "accuracy worse than the accepted bound")
	case p.TS == 0:
		return reject("no_timestamp", "ts (Unix milliseconds) is required")
	}
	at := time.UnixMilli(p.TS)
	if skew := at.Sub(now); skew > h.opts.MaxSkew || skew < -h.opts.MaxSkew {
		return reject("clock_skew", "ts is more than 2 minutes off the server clock")
	}
	d.mu.Lock()
	last, state := d.last, d.state
	if last != nil {
		if p.TS <= last.TS {
			d.mu.Unlock()
			h.m.rejected.WithLabelValues("out_of_order").Inc()
			return nil // older than what we have: latest wins, nothing to say
		}
		dist := dispatch.DistanceM(last.Lat, last.Lng, p.Lat, p.Lng)
		hours := float64(p.TS-last.TS) / 3.6e6
		if dist > 50 && dist/1000/hours > h.opts.MaxSpeedKmh {
			d.mu.Unlock()
			return reject("too_fast", "a jump implying more than 200 km/h")
		}
	}
	pp := p
	d.last = &pp
	tracked := d.booking
	trailOf := d.trailPoint(p)
	d.mu.Unlock()
	newState := state
	if newState == "" || newState == dispatch.DriverOffline {
		newState = dispatch.DriverOffline
	}
	h.points.Submit(d.actor.ID, p, newState, now)
	if tracked != "" {
		h.tracks.put(driverLocation{BookingID: tracked, Lat: p.Lat, Lng: p.Lng, Heading: p.Heading, TS: p.TS})
	}
	if trailOf != "" && !d.work.push(func() { d.appendTrail(trailOf, p) }) {
		d.h.log.Warn().Str("booking", trailOf).Msg("trail point lost: the socket's backlog is full")
	}
	return nil
}

func quote(s string) string {
	if len(s) > 40 {
		s = s[:40]
	}
	return `"` + s + `"`
}
