package realtime

import (
	"context"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
)

// trailPoint decides, with d.mu held, whether p joins the trail of the driver's booking in
// progress (sampled by geo.TrailKeep), and returns that booking, or "" when p is not kept.
func (d *driverSession) trailPoint(p dispatch.Point) string {
	if d.bookingStatus != dispatch.StatusInProgress || d.booking == "" || time.Now().Before(d.trailPause) {
		return ""
	}
	last := d.trail
	if d.trailOf != d.booking {
		last = nil
	}
	if !geo.TrailKeep(last, p) {
		return ""
	}
	pp := p
	d.trail, d.trailOf = &pp, d.booking
	return d.booking
}

// trailWait bounds the wait for Redis in a driver's read loop, and after a failure the session
// keeps no trail for trailPause: a slow or absent Redis delays a socket's frames by at most
// trailWait every trailPause (the route of that stretch is lost; the trip is not).
const (
	trailWait  = 250 * time.Millisecond
	trailPause = 5 * time.Second
)

// appendTrail stores a kept point in the booking's trail; a failure loses that point only.
func (d *driverSession) appendTrail(bookingID string, p dispatch.Point) {
	ctx, cancel := context.WithTimeout(context.Background(), trailWait)
	defer cancel()
	if err := d.h.loc.AppendTrail(ctx, bookingID, p); err != nil {
		d.mu.Lock()
		d.trailPause = time.Now().Add(trailPause)
		d.mu.Unlock()
		d.h.log.Warn().Err(err).Str("booking", bookingID).Msg("trail points lost while Redis fails")
	}
}
