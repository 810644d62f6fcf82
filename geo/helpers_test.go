package geo_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/redis/go-redis/v9"
)

// redisAddr is the test Redis; DISPATCH_TEST_REDIS_ADDR overrides it.
func redisAddr() string {
	if a := os.Getenv("DISPATCH_TEST_REDIS_ADDR"); a != "" {
		return a
	}
	return "127.0.0.1:6379"
}

// testRedis connects to the test Redis and fails the test when it does not answer.
func testRedis(t testing.TB) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr(), PoolSize: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		t.Fatalf("the test Redis at %s does not answer (%v): start it or set DISPATCH_TEST_REDIS_ADDR", redisAddr(), err)
	}
	return rdb
}

// uniquePrefix is a key prefix no other test or run uses.
func uniquePrefix(t testing.TB) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := strings.NewReplacer("/", "-", " ", "-", "{", "", "}", "").Replace(t.Name())
	return "test:" + name + ":" + hex.EncodeToString(b[:]) + ":"
}

// deleteKeys removes every key under prefix.
func deleteKeys(rdb *redis.Client, prefix string) {
	ctx := context.Background()
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return
		}
		if len(keys) > 0 {
			rdb.Del(ctx, keys...)
		}
		if cursor = next; cursor == 0 {
			return
		}
	}
}

// newIndex returns an index under a fresh prefix of the test Redis, cleaned up at the end.
func newIndex(t testing.TB) (*geo.Index, *redis.Client, string) {
	t.Helper()
	rdb := testRedis(t)
	prefix := uniquePrefix(t)
	t.Cleanup(func() {
		deleteKeys(rdb, prefix)
		rdb.Close()
	})
	x := geo.NewIndex(rdb, geo.Options{Prefix: prefix})
	if err := x.LoadScripts(context.Background()); err != nil {
		t.Fatal(err)
	}
	return x, rdb, prefix
}

func write(t testing.TB, x *geo.Index, ups ...geo.Update) []geo.Written {
	t.Helper()
	ws, err := x.Write(context.Background(), ups)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	return ws
}

func pt(lat, lng float64, ts int64) dispatch.Point { return dispatch.Point{Lat: lat, Lng: lng, TS: ts} }

// bruteNearby is the reference answer: every driver, exact haversine, nearest first, ties by id.
func bruteNearby(all []dispatch.Position, lat, lng, radiusM float64, limit int, keep func(dispatch.Position) bool) []dispatch.Nearby {
	var out []dispatch.Nearby
	for _, p := range all {
		d := dispatch.DistanceM(lat, lng, p.Lat, p.Lng)
		if d <= radiusM && (keep == nil || keep(p)) {
			out = append(out, dispatch.Nearby{Position: p, DistanceM: d})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].DistanceM != out[j].DistanceM {
			return out[i].DistanceM < out[j].DistanceM
		}
		return out[i].DriverID < out[j].DriverID
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}

// sameNearby compares an answer with the reference: the same drivers in the same order, at
// the same distances.
func sameNearby(t testing.TB, what string, got, want []dispatch.Nearby) bool {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d drivers, want %d (got %v, want %v)", what, len(got), len(want), ids(got), ids(want))
		return false
	}
	for i := range got {
		if got[i].DriverID != want[i].DriverID || got[i].DistanceM != want[i].DistanceM {
			t.Errorf("%s: #%d got %s at %.3f m, want %s at %.3f m", what, i, got[i].DriverID, got[i].DistanceM, want[i].DriverID, want[i].DistanceM)
			return false
		}
	}
	return true
}

func ids(ns []dispatch.Nearby) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.DriverID
	}
	return out
}
