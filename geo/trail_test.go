package geo_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/redis/go-redis/v9"
)

func TestTrailKeep(t *testing.T) {
	const lat, lng = 12.9716, 77.5946
	north := func(m float64) float64 { return lat + m/111320 }
	last := &dispatch.Point{Lat: lat, Lng: lng, TS: 1_000_000}
	for _, tc := range []struct {
		name string
		last *dispatch.Point
		p    dispatch.Point
		want bool
	}{
		{"first point", nil, pt(lat, lng, 1), true},
		{"50 m on, a second later", last, pt(north(51), lng, last.TS+1000), true},
		{"30 m on, 5 s later", last, pt(north(30), lng, last.TS+5000), false},
		{"30 m on, 10 s later", last, pt(north(30), lng, last.TS+10_000), true},
		{"standing still a minute (GPS wander of 5 m)", last, pt(north(5), lng, last.TS+60_000), false},
		{"older than the last", last, pt(north(500), lng, last.TS-1), false},
		{"same instant", last, pt(north(500), lng, last.TS), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := geo.TrailKeep(tc.last, tc.p); got != tc.want {
				t.Errorf("TrailKeep: got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTrail(t *testing.T) {
	x, rdb, prefix := newIndex(t)
	ctx := context.Background()
	const booking = "bk_trail"
	if got, err := x.Trail(ctx, booking); err != nil || len(got) != 0 {
		t.Fatalf("Trail of a booking without one: got %v, %v; want none, nil", got, err)
	}
	want := []dispatch.Point{pt(12.9716, 77.5946, 1_700_000_000_000), pt(12.972051, 77.594612, 1_700_000_010_000), pt(-33.8688, 151.2093, 1_700_000_020_000)}
	for _, p := range want {
		p.Heading, p.Speed, p.Acc = 90, 8, 5 // not kept
		if err := x.AppendTrail(ctx, booking, p); err != nil {
			t.Fatal(err)
		}
	}
	got, err := x.Trail(ctx, booking)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Trail: got %v, %v; want %v, nil", got, err, want)
	}
	// One key, tagged with the booking (one Cluster slot), with a TTL longer than any booking.
	key := prefix + "trail:{" + booking + "}"
	if ttl := rdb.PTTL(ctx, key).Val(); ttl < geo.TrailTTL-time.Minute || ttl > geo.TrailTTL {
		t.Errorf("TTL of %s: got %s, want about %s", key, ttl, geo.TrailTTL)
	}
	if err := x.DropTrail(ctx, booking); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, key).Val(); n != 0 {
		t.Errorf("after DropTrail: %s exists", key)
	}

	// A Redis that does not answer is ErrUnavailable.
	nobody := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer nobody.Close()
	down := geo.NewIndex(nobody, geo.Options{Prefix: prefix})
	if err := down.AppendTrail(ctx, booking, want[0]); !errors.Is(err, dispatch.ErrUnavailable) {
		t.Errorf("AppendTrail without Redis: got %v, want ErrUnavailable", err)
	}
	if _, err := down.Trail(ctx, booking); !errors.Is(err, dispatch.ErrUnavailable) {
		t.Errorf("Trail without Redis: got %v, want ErrUnavailable", err)
	}
}
