package dispatch

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// Trails keeps the sampled positions of drivers on a trip until the trip is recorded (geo keeps
// them in Redis; the gateway holding the driver's socket appends them). Safe for concurrent use.
type Trails interface {
	// Trail returns a booking's points, oldest first; none (and no error) when nothing was kept.
	Trail(ctx context.Context, bookingID string) ([]Point, error)
	// DropTrail forgets a booking's points once its trip is recorded.
	DropTrail(ctx context.Context, bookingID string) error
}

// Route is the trail of a trip as recorded: its sampled points as an encoded polyline (Google's
// format at 1e-5 degrees, about a metre), how many there are, and the haversine distance along them.
type Route struct {
	Polyline  string `json:"polyline"`
	Points    int    `json:"route_points"`
	DistanceM int    `json:"distance_m"`
}

// NewRoute records points (oldest first) as a Route.
func NewRoute(pts []Point) Route {
	d := 0.0
	for i := 1; i < len(pts); i++ {
		d += DistanceM(pts[i-1].Lat, pts[i-1].Lng, pts[i].Lat, pts[i].Lng)
	}
	return Route{Polyline: EncodePolyline(pts), Points: len(pts), DistanceM: int(math.Round(d))}
}

// Trip is a completed trip as kept for later: who, when, where along, how far, and the final fare.
type Trip struct {
	BookingID  string    `json:"booking_id"`
	DriverID   string    `json:"driver_id"`
	CustomerID string    `json:"customer_id"`
	StartedAt  time.Time `json:"started_at"`
	EndedAt    time.Time `json:"ended_at"`
	Route
	Fare Fare `json:"fare"`
}

// LatLng is one point of a decoded route.
type LatLng struct {
	Lat float64 `json:"lat"`
	Lng float64 `json:"lng"`
}

// EncodePolyline encodes the points' positions in Google's polyline format at precision 5.
func EncodePolyline(pts []Point) string {
	var b strings.Builder
	var pLat, pLng int64
	for _, p := range pts {
		lat, lng := int64(math.Round(p.Lat*1e5)), int64(math.Round(p.Lng*1e5))
		encodeSigned(&b, lat-pLat)
		encodeSigned(&b, lng-pLng)
		pLat, pLng = lat, lng
	}
	return b.String()
}

func encodeSigned(b *strings.Builder, v int64) {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	for u >= 0x20 {
		b.WriteByte(byte(0x20|(u&0x1f)) + 63)
		u >>= 5
	}
	b.WriteByte(byte(u) + 63)
}

// DecodePolyline is the inverse of EncodePolyline. ErrInvalid for a malformed string.
func DecodePolyline(s string) ([]LatLng, error) {
	pts := []LatLng{}
	var lat, lng int64
	for i := 0; i < len(s); {
		var d [2]int64
		for k := range d {
			var u uint64
			for shift := uint(0); ; shift += 5 {
				if i >= len(s) || shift > 60 {
					return nil, fmt.Errorf("polyline cut short at byte %d: %w", i, ErrInvalid)
				}
				ch := s[i]
				if ch < 63 || ch > 63+0x3f {
					return nil, fmt.Errorf("polyline byte %d out of range: %w", i, ErrInvalid)
				}
				i++
				c := ch - 63
				u |= uint64(c&0x1f) << shift
				if c < 0x20 {
					break
				}
			}
			v := int64(u >> 1)
			if u&1 != 0 {
				v = ^v
			}
			d[k] = v
		}
		lat, lng = lat+d[0], lng+d[1]
		pts = append(pts, LatLng{Lat: float64(lat) / 1e5, Lng: float64(lng) / 1e5})
	}
	return pts, nil
}

// Route returns the recorded trip of a completed booking to its customer, its driver and staff.
// ErrNotFound for a booking the actor may not see or one without a recorded trip (not completed).
func (s *Service) Route(ctx context.Context, a Actor, id string) (Trip, error) {
	b, err := s.Booking(ctx, a, id)
	if err != nil {
		return Trip{}, err
	}
	if b.Status != StatusCompleted {
		return Trip{}, fmt.Errorf("booking %s is %s: a route is kept once the trip completes: %w", id, b.Status, ErrNotFound)
	}
	t, err := s.store.Trip(ctx, id)
	if err != nil {
		return Trip{}, err
	}
	return t, nil
}

// route reads the booking's trail for its completion; nil when the service keeps no trails.
func (s *Service) route(ctx context.Context, bookingID string) (*Route, error) {
	if s.opts.Trails == nil {
		return nil, nil
	}
	pts, err := s.opts.Trails.Trail(ctx, bookingID)
	if err != nil {
		return nil, fmt.Errorf("trail of booking %s: %w", bookingID, err)
	}
	r := NewRoute(pts)
	return &r, nil
}

// dropTrail forgets a recorded trail; a failure only leaves it to its TTL.
func (s *Service) dropTrail(ctx context.Context, bookingID string) {
	if s.opts.Trails == nil {
		return
	}
	if err := s.opts.Trails.DropTrail(context.WithoutCancel(ctx), bookingID); err != nil {
		s.opts.Log.Warn().Err(err).Str("booking", bookingID).Msg("drop the trail of a completed trip (it lapses by its TTL)")
	}
}
