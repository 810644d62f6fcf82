package geo

import (
	"context"
	"fmt"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
	"github.com/uber/h3-go/v4"
)

// Regions hands out region ownership to dispatcher processes: a lease per region with a
// fencing token that grows with every new owner. Keys share the region's hash tag:
//
//	lease:{r<region>}   owner, with a TTL
//	fence:{r<region>}   the last fencing token handed out
//	matchers:{m}        zset of live matcher processes, scored by when each stops being live
//
// A matching region is an H3 cell at MatchRes, finer than the storage regions (RegionRes), so
// that several dispatcher processes share one city.
type Regions struct {
	rdb    redis.UniversalClient
	prefix string
}

var _ dispatch.Regions = (*Regions)(nil)

// NewRegions returns region leases over rdb, with the same prefix as the Index.
func NewRegions(rdb redis.UniversalClient, opts Options) *Regions {
	return &Regions{rdb: rdb, prefix: opts.Prefix}
}

// acquireScript: renew when owner holds the lease, take it when free (with a new fence), else -1.
//
// A new fence is one more than the last, and never less than Redis's clock in microseconds: the
// store keeps the highest fence it has seen per region (in MySQL), so a Redis that restarted
// empty must not hand out 1 again, or every offer of the region would be refused as stale until
// the counter climbed back (found by the fault suite, TestFaultRedisKilled). Fences so stay
// monotonic across a Redis data loss as long as Redis's clock does not step back and leases
// change hands less than once a microsecond on average (they do not: Redis runs one script at a
// time). Microseconds since 1970 stay below 2^53, exact in Lua's numbers.
var acquireScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if cur then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
local fence = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
if fence < floor then fence = floor end
redis.call('SET', KEYS[2], string.format('%d', fence))
return fence
`)

// RegionOf implements dispatch.Regions: the MatchRes cell of the point.
func (r *Regions) RegionOf(lat, lng float64) string {
	return h3.LatLngToCell(h3.LatLng{Lat: lat, Lng: lng}, MatchRes).String()
}

// membersScript records ARGV[1] as live until Redis's clock passes ARGV[2] ms from now, drops
// the members past their time and lists the others.
var membersScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2] * 4)
return redis.call('ZRANGE', KEYS[1], 0, -1)
`)

// Members implements dispatch.Regions with one sorted set of live matchers, scored by when each
// stops counting as live: matchers:{m}.
func (r *Regions) Members(ctx context.Context, owner string, ttl time.Duration) ([]string, error) {
	ms, err := membersScript.Run(ctx, r.rdb, []string{r.prefix + "matchers:{m}"}, owner, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("matcher members: %w", translate(err))
	}
	return ms, nil
}

// Acquire implements dispatch.Regions.
func (r *Regions) Acquire(ctx context.Context, region, owner string, ttl time.Duration) (int64, bool, error) {
	keys := []string{r.prefix + "lease:{r" + region + "}", r.prefix + "fence:{r" + region + "}"}
	n, err := acquireScript.Run(ctx, r.rdb, keys, owner, ttl.Milliseconds()).Int64()
	if err != nil {
		return 0, false, fmt.Errorf("lease region %s: %w", region, translate(err))
	}
	if n < 0 {
		return 0, false, nil
	}
	return n, true, nil
}

// Release implements dispatch.Regions: it drops the lease only if owner still holds it.
func (r *Regions) Release(ctx context.Context, region, owner string) error {
	key := r.prefix + "lease:{r" + region + "}"
	if err := releaseScript.Run(ctx, r.rdb, []string{key}, owner).Err(); err != nil && err != redis.Nil {
		return fmt.Errorf("release region %s: %w", region, translate(err))
	}
	return nil
}
