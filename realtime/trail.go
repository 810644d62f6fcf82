package realtime

import (
	"context"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// Trails keeps the route of a trip in progress until the trip ends and dispatch.Service
// records it (geo.Index). Which points join it is Options.TrailKeep's to say.
type Trails interface {
	// AppendTrail adds p at the end of the booking's trail. Safe for concurrent use.
	AppendTrail(ctx context.Context, bookingID string, p dispatch.Point) error
}

// trailPoint decides, with d.mu held, whether p joins the trail of the driver's booking in
// progress (sampled by Options.TrailKeep), and returns that booking, or "" when p is not kept.
func (d *driverSession) trailPoint(p dispatch.Point) string {
	keep := d.h.opts.TrailKeep
	if keep == nil || d.bookingStatus != dispatch.StatusInProgress || d.booking == "" || time.Now().Before(d.trailPause) {
		return ""
	}
	last := d.trail
	if d.trailOf != d.booking {
		last = nil
	}
	if !keep(last, p) {
		return ""
	}
	pp := p
	d.trail, d.trailOf = &pp, d.booking
	return d.booking
}

// trailWait bounds the wait for Redis of a trail point on the socket's backlog, and after a
// failure the session keeps no trail for trailPause: a slow or absent Redis delays the frames
// queued behind it by at most trailWait every trailPause (the route of that stretch is lost;
// the trip is not).
const (
	trailWait  = 250 * time.Millisecond
	trailPause = 5 * time.Second
)

// appendTrail stores a kept point in the booking's trail; a failure loses that point only.
func (d *driverSession) appendTrail(bookingID string, p dispatch.Point) {
	ctx, cancel := context.WithTimeout(context.Background(), trailWait)
	defer cancel()
	if err := d.h.index.AppendTrail(ctx, bookingID, p); err != nil {
		d.mu.Lock()
		d.trailPause = time.Now().Add(trailPause)
		d.mu.Unlock()
		d.h.log.Warn().Err(err).Str("booking", bookingID).Msg("trail points lost while Redis fails")
	}
}
