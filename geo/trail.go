package geo

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
)

// Trails: while a driver is on a trip, the gateway holding its socket keeps a sample of its
// points until the trip ends and dispatch.Service records the route in MySQL:
//
//	trail:{<booking>}   list of "lat,lng,tsms", oldest first, TTL TrailTTL renewed by each append
//
// The key carries the booking's hash tag, so every call touches one slot of a Redis Cluster.
const (
	// TrailEvery and TrailStepM: a point joins the trail when it is TrailStepM from the last one
	// kept, or TrailEvery after it and more than TrailJitterM away (a car standing still with a
	// wandering GPS adds no distance).
	TrailEvery   = 10 * time.Second
	TrailStepM   = 50.0
	TrailJitterM = 10.0
	// TrailMaxPoints bounds a trail (a day at more than one point every 3 s); later points are dropped.
	TrailMaxPoints = 30000
	// TrailTTL is how long a trail outlives its last point: longer than any booking.
	TrailTTL = 48 * time.Hour
)

var _ dispatch.Trails = (*Index)(nil)

func (x *Index) trailKey(bookingID string) string { return x.prefix + "trail:{" + bookingID + "}" }

// TrailKeep reports whether p should follow last (nil: none yet) in a trail. Points must come
// in time order; an older one is never kept.
func TrailKeep(last *dispatch.Point, p dispatch.Point) bool {
	if last == nil {
		return true
	}
	if p.TS <= last.TS {
		return false
	}
	d := dispatch.DistanceM(last.Lat, last.Lng, p.Lat, p.Lng)
	return d >= TrailStepM || (time.Duration(p.TS-last.TS)*time.Millisecond >= TrailEvery && d > TrailJitterM)
}

// AppendTrail adds p at the end of the booking's trail and renews its TTL, in one MULTI on one
// key. Past TrailMaxPoints the point is dropped. Errors wrap dispatch.ErrUnavailable.
func (x *Index) AppendTrail(ctx context.Context, bookingID string, p dispatch.Point) error {
	k := x.trailKey(bookingID)
	_, err := x.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.RPush(ctx, k, strconv.FormatFloat(p.Lat, 'f', 6, 64)+","+strconv.FormatFloat(p.Lng, 'f', 6, 64)+
			","+strconv.FormatInt(p.TS, 10))
		pipe.LTrim(ctx, k, 0, TrailMaxPoints-1)
		pipe.PExpire(ctx, k, TrailTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("append to trail of booking %s: %w: %w", bookingID, dispatch.ErrUnavailable, err)
	}
	return nil
}

// Trail implements dispatch.Trails: the booking's points, oldest first (heading, speed and
// accuracy are not kept). Unreadable entries are skipped. Errors wrap dispatch.ErrUnavailable.
func (x *Index) Trail(ctx context.Context, bookingID string) ([]dispatch.Point, error) {
	raw, err := x.rdb.LRange(ctx, x.trailKey(bookingID), 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("trail of booking %s: %w: %w", bookingID, dispatch.ErrUnavailable, err)
	}
	pts := make([]dispatch.Point, 0, len(raw))
	for _, r := range raw {
		f := strings.Split(r, ",")
		if len(f) != 3 {
			continue
		}
		lat, err1 := strconv.ParseFloat(f[0], 64)
		lng, err2 := strconv.ParseFloat(f[1], 64)
		ts, err3 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil || math.IsNaN(lat) || math.IsNaN(lng) {
			continue
		}
		pts = append(pts, dispatch.Point{Lat: lat, Lng: lng, TS: ts})
	}
	return pts, nil
}

// DropTrail implements dispatch.Trails.
func (x *Index) DropTrail(ctx context.Context, bookingID string) error {
	if err := x.rdb.Del(ctx, x.trailKey(bookingID)).Err(); err != nil {
		return fmt.Errorf("drop trail of booking %s: %w: %w", bookingID, dispatch.ErrUnavailable, err)
	}
	return nil
}
