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

// acquireScript renews or takes a region's lease, with a new fence: lua/acquire.lua.
var acquireScript = luaScript("acquire")

// RegionOf implements dispatch.Regions: the MatchRes cell of the point.
func (r *Regions) RegionOf(lat, lng float64) string {
	return h3.LatLngToCell(h3.LatLng{Lat: lat, Lng: lng}, MatchRes).String()
}

// membersScript records a matcher as live and lists the live ones: lua/members.lua.
var membersScript = luaScript("members")

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
