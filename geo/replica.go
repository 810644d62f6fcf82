package geo

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/uber/h3-go/v4"
)

// ReplicaRes is the H3 resolution of a Replica's buckets: 9 (edge about 174 m, 0.1 km²). At
// city densities (50 drivers a km²) a bucket holds about 5 drivers and the 10 nearest lie
// within two rings (19 cells, about 100 drivers), where resolution 8 scans the 7 cells of one
// ring with about 270 (BenchmarkNearby measures both). Memory is one small struct per driver
// and per occupied cell.
const ReplicaRes = 9

// FreeRes is the H3 resolution of the replica's second index, of available drivers only
// (7: edge about 1.2 km, 5 km²). The matcher searches there: a 15 km reach is a disk of 8 rings
// (217 cells, cached), so a search with no free driver within reach costs a few hundred map
// lookups instead of the 86 rings and 22,000 cells of ReplicaRes (BenchmarkNearbyAvailable).
const FreeRes = 7

// ReplicaOptions configure a Replica.
type ReplicaOptions struct {
	// Res is the resolution of the buckets (default ReplicaRes).
	Res int
}

// Replica holds every region's drivers in memory for the dispatcher's nearby queries, fed from
// Redis: an initial HSCAN of each region's positions, then the region feeds (FeedChannel) the
// gateways and the index publish. It re-reads everything whenever its subscription is
// (re)established, so a lost connection loses no update for good.
//
// It implements dispatch.Locator: Nearby answers from memory (from the Index until the first
// load is done); everything else goes to the Index, and SetState is applied to memory at once
// as well. All methods are safe for concurrent use; Run owns the feed goroutine.
//
// Lock order: Replica.mu, then the package's geometry caches (sync.Map, no lock held across calls).
type Replica struct {
	x   *Index
	res int
	log zerolog.Logger

	loaded atomic.Bool

	mu      sync.RWMutex // guards drivers, buckets, free and the entries they point to
	drivers map[string]*entry
	buckets map[h3.Cell]*bucket
	free    map[h3.Cell]*bucket // available drivers only, at FreeRes
}

var _ dispatch.Locator = (*Replica)(nil)

type entry struct {
	pos    dispatch.Position
	ms     int64   // pos.At in Unix ms: latest wins
	cosLat float64 // cos of pos.Lat, for the haversine
	cell   h3.Cell // 0 when in no bucket (offline)
	i      int     // index in its bucket
	fcell  h3.Cell // FreeRes cell while available, else 0
	fi     int     // index in its free bucket
}

type bucket struct {
	entries []*entry
}

// NewReplica returns a replica of x's drivers; it is empty until Run has loaded them.
func NewReplica(x *Index, opts ReplicaOptions, log zerolog.Logger) *Replica {
	if opts.Res <= 0 {
		opts.Res = ReplicaRes
	}
	return &Replica{x: x, res: opts.Res, log: log, drivers: map[string]*entry{}, buckets: map[h3.Cell]*bucket{},
		free: map[h3.Cell]*bucket{}}
}

// Index is the index the replica copies and delegates to.
func (r *Replica) Index() *Index { return r.x }

// Loaded reports whether the first full load has finished.
func (r *Replica) Loaded() bool { return r.loaded.Load() }

// Len is how many drivers the replica holds (offline ones included).
func (r *Replica) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.drivers)
}

func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Run subscribes to every region's feed and loads the regions, then applies the feed until ctx
// is done. It returns nil when ctx ends.
func (r *Replica) Run(ctx context.Context) error {
	ps := r.x.rdb.PSubscribe(ctx, globEscape(r.x.prefix)+"loc:*")
	defer ps.Close()
	var loads sync.WaitGroup
	defer loads.Wait()
	ch := ps.ChannelWithSubscriptions(redis.WithChannelSize(8192))
	for {
		select {
		case <-ctx.Done():
			return nil
		case msg, ok := <-ch:
			if !ok {
				return nil
			}
			switch m := msg.(type) {
			case *redis.Subscription:
				if m.Kind != "psubscribe" {
					continue
				}
				// Subscribed (again): what was published meanwhile is lost, so read it all.
				loads.Add(1)
				go func() {
					defer loads.Done()
					for ctx.Err() == nil {
						err := r.Load(ctx)
						if err == nil {
							return
						}
						r.log.Warn().Err(err).Msg("load replica")
						select {
						case <-ctx.Done():
						case <-time.After(time.Second):
						}
					}
				}()
			case *redis.Message:
				var views []dispatch.DriverView
				if err := json.Unmarshal([]byte(m.Payload), &views); err != nil {
					continue
				}
				r.Apply(views)
			}
		}
	}
}

// Load reads every region's positions from Redis into memory (latest wins against what the
// feed already brought).
func (r *Replica) Load(ctx context.Context) error {
	regions, err := r.x.Regions(ctx)
	if err != nil {
		return err
	}
	for _, region := range regions {
		err := r.x.scanRegion(ctx, region, func(ps []dispatch.Position) error {
			r.applyAll(ps)
			return nil
		})
		if err != nil {
			return fmt.Errorf("load replica: %w", err)
		}
	}
	r.loaded.Store(true)
	return nil
}

// Apply takes a feed batch.
func (r *Replica) Apply(views []dispatch.DriverView) {
	ps := make([]dispatch.Position, len(views))
	for i, v := range views {
		ps[i] = dispatch.Position{DriverID: v.ID, Lat: v.Lat, Lng: v.Lng, Heading: v.Heading, State: v.State, At: v.UpdatedAt}
	}
	r.applyAll(ps)
}

// applyAll applies positions under one write lock, with their cells computed before it: the
// lock is held for map updates only, so the matcher's searches wait as little as possible (9 to
// 15 of 16 searching goroutines queued behind Apply when the cells were computed under it).
func (r *Replica) applyAll(ps []dispatch.Position) {
	cells := make([]h3.Cell, len(ps))
	for i, p := range ps {
		if p.State != dispatch.DriverOffline {
			cells[i] = h3.LatLngToCell(h3.LatLng{Lat: p.Lat, Lng: p.Lng}, r.res)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, p := range ps {
		r.applyCellLocked(p, cells[i])
	}
}

// applyLocked stores p unless an older point than the one held; an equal time is a state change.
func (r *Replica) applyLocked(p dispatch.Position) {
	r.applyCellLocked(p, 0)
}

// applyCellLocked is applyLocked with p's cell at the replica's resolution when known (else 0).
func (r *Replica) applyCellLocked(p dispatch.Position, known h3.Cell) {
	ms := p.At.UnixMilli()
	e := r.drivers[p.DriverID]
	moved := true
	if e == nil {
		e = &entry{}
		r.drivers[p.DriverID] = e
	} else if ms < e.ms {
		return
	} else {
		moved = e.pos.Lat != p.Lat || e.pos.Lng != p.Lng
	}
	e.pos, e.ms = p, ms
	if moved {
		e.cosLat = math.Cos(p.Lat * (math.Pi / 180)) // as DistanceM rounds it
	}
	var cell h3.Cell
	if p.State != dispatch.DriverOffline {
		switch {
		case known != 0:
			cell = known
		case moved || e.cell == 0:
			cell = h3.LatLngToCell(h3.LatLng{Lat: p.Lat, Lng: p.Lng}, r.res)
		default:
			cell = e.cell
		}
	}
	var fcell h3.Cell
	if p.State == dispatch.DriverAvailable {
		if cell == e.cell && e.fcell != 0 {
			fcell = e.fcell
		} else {
			fcell = cell.Parent(FreeRes)
		}
	}
	if fcell != e.fcell {
		if e.fcell != 0 {
			removeFrom(r.free, e.fcell, e, func(x *entry) *int { return &x.fi })
		}
		e.fcell = fcell
		if fcell != 0 {
			e.fi = addTo(r.free, fcell, e)
		}
	}
	if cell == e.cell {
		return
	}
	if e.cell != 0 {
		removeFrom(r.buckets, e.cell, e, func(x *entry) *int { return &x.i })
	}
	e.cell = cell
	if cell != 0 {
		e.i = addTo(r.buckets, cell, e)
	}
}

// addTo appends e to the bucket of cell in m and returns its index there.
func addTo(m map[h3.Cell]*bucket, cell h3.Cell, e *entry) int {
	b := m[cell]
	if b == nil {
		b = &bucket{}
		m[cell] = b
	}
	b.entries = append(b.entries, e)
	return len(b.entries) - 1
}

// removeFrom takes e out of the bucket of cell in m, moving the bucket's last entry into its
// place; idx gives an entry's index field for that map (i or fi).
func removeFrom(m map[h3.Cell]*bucket, cell h3.Cell, e *entry, idx func(*entry) *int) {
	b := m[cell]
	i := *idx(e)
	last := b.entries[len(b.entries)-1]
	b.entries[i] = last
	*idx(last) = i
	b.entries[len(b.entries)-1] = nil
	b.entries = b.entries[:len(b.entries)-1]
	if len(b.entries) == 0 {
		delete(m, cell)
	}
}

// Nearby implements dispatch.Locator from memory, with the same exact ring search as
// Index.Nearby. keep is called with the replica's read lock held: it must not call the replica.
func (r *Replica) Nearby(ctx context.Context, lat, lng, radiusM float64, limit int, keep func(dispatch.Position) bool) ([]dispatch.Nearby, error) {
	if limit <= 0 {
		return nil, nil
	}
	if !r.loaded.Load() {
		return r.x.Nearby(ctx, lat, lng, radiusM, limit, keep)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return searchBuckets(r.buckets, r.res, lat, lng, radiusM, limit, keep), nil
}

// NearbyAvailable implements dispatch.Locator from the index of available drivers alone, so a
// search where nobody is free stops after a few coarse rings. The answer is the same as
// Nearby's with keep also asking for DriverAvailable (TestNearbyAvailableMatchesBruteForce).
func (r *Replica) NearbyAvailable(ctx context.Context, lat, lng, radiusM float64, limit int, keep func(dispatch.Position) bool) ([]dispatch.Nearby, error) {
	if limit <= 0 {
		return nil, nil
	}
	if !r.loaded.Load() {
		return r.x.NearbyAvailable(ctx, lat, lng, radiusM, limit, keep)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return searchBuckets(r.free, FreeRes, lat, lng, radiusM, limit, keep), nil
}

// NearbyAvailableMany implements dispatch.MatchLocator: the queries run under one read lock per
// batch of 64, so a window's searches queue behind the feed once per batch, not once each.
func (r *Replica) NearbyAvailableMany(ctx context.Context, qs []dispatch.Search) ([][]dispatch.Nearby, error) {
	out := make([][]dispatch.Nearby, len(qs))
	if !r.loaded.Load() {
		return r.x.NearbyAvailableMany(ctx, qs)
	}
	const batch = 64
	for lo := 0; lo < len(qs); lo += batch {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r.mu.RLock()
		for i := lo; i < min(lo+batch, len(qs)); i++ {
			q := qs[i]
			if q.Limit > 0 {
				out[i] = searchBuckets(r.free, FreeRes, q.Lat, q.Lng, q.RadiusM, q.Limit, q.Keep)
			}
		}
		r.mu.RUnlock()
	}
	return out, nil
}

// searchBuckets is the exact ring search over buckets of cells at res (caller holds the lock).
func searchBuckets(buckets map[h3.Cell]*bucket, res int, lat, lng, radiusM float64, limit int, keep func(dispatch.Position) bool) []dispatch.Nearby {
	const rad = math.Pi / 180
	cosQ := math.Cos(lat * rad)
	s := newSearch(lat, lng, res)
	t := topK{limit: limit, found: make([]dispatch.Nearby, 0, min(limit, 64))}
	for k := 0; ; k++ {
		for _, c := range s.ring(k) {
			b := buckets[c]
			if b == nil {
				continue
			}
			if len(b.entries) > 2 {
				g := geomOf(c)
				near := dispatch.DistanceM(lat, lng, g.lat, g.lng) - g.r
				if near > radiusM || (t.full() && near > t.worst()) {
					continue
				}
			}
			for _, e := range b.entries {
				d := dispatch.DistanceCosM(lat, lng, cosQ, e.pos.Lat, e.pos.Lng, e.cosLat) // the cosines cached
				if d > radiusM || (t.full() && d > t.worst()) || (keep != nil && !keep(e.pos)) {
					continue
				}
				t.offer(dispatch.Nearby{Position: e.pos, DistanceM: d})
			}
		}
		if t.done(&s, k, radiusM) {
			break
		}
	}
	return t.found
}

// Position implements dispatch.Locator (from Redis: the truth, not the copy).
func (r *Replica) Position(ctx context.Context, driverID string) (dispatch.Position, error) {
	return r.x.Position(ctx, driverID)
}

// SetState implements dispatch.Locator: in Redis, then in memory at once (the feed brings it
// too, but a matcher must not offer the same driver twice in the meantime); SetStates for one.
func (r *Replica) SetState(ctx context.Context, driverID string, s dispatch.DriverState) error {
	return r.SetStates(ctx, []string{driverID}, s)
}

// State implements dispatch.Locator.
func (r *Replica) State(ctx context.Context, driverID string) (dispatch.DriverState, error) {
	return r.x.State(ctx, driverID)
}

// Reserve implements dispatch.Locator.
func (r *Replica) Reserve(ctx context.Context, driverID, token string, ttl time.Duration) (bool, error) {
	return r.x.Reserve(ctx, driverID, token, ttl)
}

// Release implements dispatch.Locator.
func (r *Replica) Release(ctx context.Context, driverID, token string) error {
	return r.x.Release(ctx, driverID, token)
}
