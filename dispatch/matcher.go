package dispatch

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// The city speed model of the cost: a pickup's road distance is taken as 1.3 times the straight
// line (a typical detour factor of Indian city grids) driven at 20 km/h, Bengaluru's average
// speed at peak. Cost is estimated pickup seconds; matching minimises their sum.
const (
	detourFactor = 1.3
	citySpeedMS  = 20 / 3.6
	// requeueBonusS puts a booking that had a driver and lost it (the driver cancelled) first in
	// line: its costs are lowered by this much, so it wins any driver it competes for.
	requeueBonusS = 900
)

// PickupSeconds is the estimated time for a driver metres away to reach the pickup.
func PickupSeconds(metres float64) float64 { return metres * detourFactor / citySpeedMS }

// MatcherOptions configure the matching loop.
type MatcherOptions struct {
	// Window gathers searching bookings before they are matched together (default 2 s).
	Window time.Duration
	// Tick is how often the loop looks at the store (default 100 ms).
	Tick time.Duration
	// OfferTimeout is how long a driver has to answer an offer (default 15 s).
	OfferTimeout time.Duration
	// Radii are the search radii in metres, one step further after each window without a driver.
	// Default 10 km then 15 km: the ring search stops at the nearest Candidates where drivers are
	// dense, so a wide reach costs little, and the batch needs it to shorten the long pickups
	// (with a 5 km reach the simulated p95 gain vanishes: BENCHMARKS.md).
	Radii []float64
	// MaxSearch is how long a booking searches before it becomes unfulfilled (default 10 min).
	MaxSearch time.Duration
	// Fresh: a driver silent longer than this is no candidate (default 30 s).
	Fresh time.Duration
	// Candidates per booking considered (default 20).
	Candidates int
	// ScheduleLead: a scheduled booking starts searching this long before its start (default 45 min).
	ScheduleLead time.Duration
	// MaxOptimalEdges: a window with more candidate edges is matched greedily, to stay within the
	// 60 ms solve budget. Default 12,000: Assign takes about 4 ms for 500x2,000 with 10 to 20 edges
	// a row, but tight windows (ratio 1.2) cost far more per edge: 2,000x2,400 at 40,000 edges
	// took 236 ms of CPU (BENCHMARKS.md).
	MaxOptimalEdges int
	// Greedy forces the cheapest-edge-first fallback (AssignGreedy) for every window.
	Greedy bool
	// LeaseTTL is how long a region stays owned without renewal (default 5 s); a dead process's
	// regions move to the others within it.
	LeaseTTL time.Duration
	// Owner names this process in region leases (default a random id).
	Owner string
	// Sweep is how often the loop lists every searching booking and open offer to reconcile what
	// the events brought (default 5 s). Between sweeps bookings and closed offers arrive by
	// Observe and ObserveOfferClosed, and a tick costs nothing per booking waiting. A negative
	// Sweep sweeps at every tick (tests that run no relay).
	Sweep time.Duration
	Now   func() time.Time
}

func (o *MatcherOptions) defaults() {
	if o.Window <= 0 {
		o.Window = 2 * time.Second
	}
	if o.Tick <= 0 {
		o.Tick = 100 * time.Millisecond
	}
	if o.OfferTimeout <= 0 {
		o.OfferTimeout = 15 * time.Second
	}
	if len(o.Radii) == 0 {
		o.Radii = []float64{10000, 15000}
	}
	if o.MaxSearch <= 0 {
		o.MaxSearch = 10 * time.Minute
	}
	if o.Fresh <= 0 {
		o.Fresh = 30 * time.Second
	}
	if o.Candidates <= 0 {
		o.Candidates = 20
	}
	if o.ScheduleLead <= 0 {
		o.ScheduleLead = 45 * time.Minute
	}
	if o.MaxOptimalEdges <= 0 {
		o.MaxOptimalEdges = 12000
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 5 * time.Second
	}
	if o.Owner == "" {
		o.Owner = NewID("matcher")
	}
	if o.Sweep == 0 {
		o.Sweep = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// pending is what the matcher remembers of a searching booking of a region it owns.
type pending struct {
	b        Booking
	region   string
	readyAt  time.Time // when it became ready for a window (zero: has an open offer)
	offer    *Offer
	rounds   int // windows it went through without a driver: the radius step
	excluded map[string]bool
	offered  bool // it had an offer already (for the booking-to-offer histogram)
	requeued bool // a driver accepted it and gave it back: first in line
	history  bool // its exclusions must be read from the store
}

// owned is a region this matcher holds, with its fencing token.
type owned struct {
	fence   int64
	renewed time.Time
}

// Matcher is the matching loop of the regions this process owns: it gathers searching bookings
// into windows, finds candidates, solves the assignment, leases the chosen drivers and offers
// them the bookings, expires unanswered offers, starts scheduled bookings at their lead time,
// and gives up on bookings that searched too long.
//
// Bookings reach it by change: the outbox relay's booking events (Observe) and offers closed
// elsewhere (ObserveOfferClosed), with a sweep every MatcherOptions.Sweep that lists what is
// searching and open, as the safety net for a lost event and for a region just taken over. State
// lives in the store and the locator; the matcher's memory is a cache of them, so a restarted
// matcher, or one that takes over a region, picks up where another left off. One driver, one
// booking is not the matcher's promise alone: the driver's lease makes offers exclusive, and the
// store's conditional updates make assignments exclusive even when leases fail.
//
// Regions are shared out among the live matchers by rendezvous hashing (Regions.Members): a
// matcher takes only the regions that hash to it, and hands over the others, so that several
// processes split a busy city evenly.
//
// Lock order: inMu and mu are never held together.
type Matcher struct {
	store   MatchStore
	loc     MatchLocator
	regions Regions
	notify  Notifier
	opts    MatcherOptions
	log     zerolog.Logger

	offersSent   prometheus.Counter
	offersExpire prometheus.Counter
	unfulfilledC prometheus.Counter
	searchingG   prometheus.Gauge
	regionsG     prometheus.Gauge
	solveSeconds prometheus.Histogram
	toOffer      prometheus.Histogram
	pickupM      prometheus.Histogram
	windowS      prometheus.Histogram
	intake       *prometheus.CounterVec

	inMu   sync.Mutex // guards the inbox
	inBook map[string]Booking
	inOff  []Offer

	mu         sync.Mutex // guards the fields below
	pending    map[string]*pending
	gone       map[string]goneMark // bookings that left searching, against late events
	owned      map[string]*owned
	wanted     map[string]bool // regions that hash to this matcher but another still holds
	members    []string
	membersAt  time.Time
	lastSched  time.Time
	lastSweep  time.Time
	sweepNow   bool
	profiles   map[string]DriverProfile
	profilesAt time.Time // the latest change time read (zero: none yet)
	profilesRd time.Time // when the last read of changes began
}

type goneMark struct {
	version int64
	at      time.Time
}

// NewMatcher returns a matcher; its metrics are registered on reg. loc is the locator as a
// matcher uses it (geo.Replica in production).
func NewMatcher(store MatchStore, loc MatchLocator, regions Regions, notify Notifier, opts MatcherOptions, reg prometheus.Registerer, log zerolog.Logger) *Matcher {
	opts.defaults()
	m := &Matcher{store: store, loc: loc, regions: regions, notify: notify, opts: opts, log: log,
		pending: map[string]*pending{}, owned: map[string]*owned{}, gone: map[string]goneMark{}, wanted: map[string]bool{},
		inBook: map[string]Booking{}, profiles: map[string]DriverProfile{},
		offersSent:   prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_offers_sent_total", Help: "Offers sent to drivers."}),
		offersExpire: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_offers_expired_total", Help: "Offers that timed out."}),
		unfulfilledC: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_bookings_unfulfilled_total", Help: "Bookings that found no driver in time."}),
		searchingG:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "dispatch_searching_bookings", Help: "Bookings searching in this matcher's regions (queue depth)."}),
		regionsG:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "dispatch_regions_owned", Help: "Regions this matcher owns."}),
		solveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_solve_seconds", Help: "Time to solve one window's assignment.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		toOffer:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_booking_to_offer_seconds", Help: "From a booking searching to its first offer.", Buckets: prometheus.ExponentialBuckets(0.05, 1.4, 20)}),
		pickupM:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_offer_pickup_metres", Help: "Straight-line pickup distance of offers.", Buckets: prometheus.ExponentialBuckets(50, 1.5, 14)}),
		windowS:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_window_seconds", Help: "Time to match one window: candidates, solve and offers.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
		intake:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dispatch_matcher_intake_total", Help: "Bookings and offers the matcher learned of, by source (event, sweep)."}, []string{"source"}),
	}
	if reg != nil {
		reg.MustRegister(m.offersSent, m.offersExpire, m.unfulfilledC, m.searchingG, m.regionsG, m.solveSeconds, m.toOffer, m.pickupM, m.windowS, m.intake)
	}
	return m
}

// Observe takes a booking event (the outbox relay's, any process's): a searching booking of a
// region this matcher may own joins the next window; one that left searching is dropped. Safe
// for concurrent use; the next tick applies it.
func (m *Matcher) Observe(b Booking) {
	m.inMu.Lock()
	if old, ok := m.inBook[b.ID]; !ok || b.Version >= old.Version {
		m.inBook[b.ID] = b
	}
	m.inMu.Unlock()
}

// ObserveOfferClosed takes an offer closed outside this matcher (declined, revoked): its
// booking is matched again at once. Safe for concurrent use.
func (m *Matcher) ObserveOfferClosed(o Offer) {
	m.inMu.Lock()
	m.inOff = append(m.inOff, o)
	m.inMu.Unlock()
}

// Run ticks until ctx is done, then gives its regions up so others take them at once. A
// failing tick is logged and retried on the next one: a store or Redis outage must not end it.
func (m *Matcher) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.Tick)
	defer t.Stop()
	defer m.releaseAll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := m.Tick(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn().Err(err).Msg("matching tick failed")
		}
	}
}

func (m *Matcher) releaseAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m.mu.Lock()
	regions := make([]string, 0, len(m.owned))
	for r := range m.owned {
		regions = append(regions, r)
	}
	m.owned = map[string]*owned{}
	m.mu.Unlock()
	for _, r := range regions {
		if err := m.regions.Release(ctx, r, m.opts.Owner); err != nil {
			m.log.Warn().Err(err).Str("region", r).Msg("release region")
		}
	}
}

// Owned lists the regions this matcher holds now.
func (m *Matcher) Owned() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.owned))
	for r := range m.owned {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// preferred reports whether region hashes to this matcher among the live ones (rendezvous
// hashing: each region goes to the member with the highest hash of region and member, so a
// member joining or leaving moves only its share).
func (m *Matcher) preferred(region string) bool {
	m.mu.Lock()
	members := m.members
	m.mu.Unlock()
	if len(members) == 0 {
		return true // membership unknown: the lease alone decides
	}
	best, bestH := "", uint64(0)
	for _, mem := range members {
		h := fnv.New64a()
		h.Write([]byte(region))
		h.Write([]byte{0})
		h.Write([]byte(mem))
		if v := mix64(h.Sum64()); best == "" || v > bestH {
			best, bestH = mem, v
		}
	}
	return best == m.opts.Owner
}

// mix64 is splitmix64's finalizer: FNV alone orders members whose names differ in the last
// byte alike for most regions, and one matcher got half of a city.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// refreshMembers heartbeats this matcher and reads the live ones (at a third of the lease TTL).
// Liveness is a matter of the wall clock (Redis's), not of the matcher's business clock.
func (m *Matcher) refreshMembers(ctx context.Context) {
	now := time.Now()
	m.mu.Lock()
	due := now.Sub(m.membersAt) >= m.opts.LeaseTTL/3 || m.membersAt.After(now)
	m.mu.Unlock()
	if !due {
		return
	}
	members, err := m.regions.Members(ctx, m.opts.Owner, m.opts.LeaseTTL)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.membersAt = now
	if err != nil {
		m.log.Warn().Err(err).Msg("matcher membership")
		m.members = nil
		return
	}
	sort.Strings(members)
	if !slices.Equal(members, m.members) {
		// A matcher came or went: the regions that now hash here are found by a sweep at once
		// rather than at the next one (a dead matcher's regions moved 9 s after a kill -9).
		m.sweepNow = true
	}
	m.members = members
}

// own reports whether this matcher holds region now, taking or renewing the lease as needed.
// A region that hashes to another live matcher is not taken, and is handed over if held.
func (m *Matcher) own(ctx context.Context, region string, now time.Time) (int64, bool) {
	m.mu.Lock()
	o := m.owned[region]
	m.mu.Unlock()
	if !m.preferred(region) {
		m.mu.Lock()
		delete(m.wanted, region)
		m.mu.Unlock()
		if o != nil {
			m.mu.Lock()
			delete(m.owned, region)
			m.mu.Unlock()
			if err := m.regions.Release(ctx, region, m.opts.Owner); err != nil {
				m.log.Warn().Err(err).Str("region", region).Msg("hand region over")
			}
			m.log.Info().Str("region", region).Msg("region handed over")
		}
		return 0, false
	}
	if o != nil && now.Sub(o.renewed) < m.opts.LeaseTTL/3 && !o.renewed.After(now) {
		return o.fence, true
	}
	fence, ok, err := m.regions.Acquire(ctx, region, m.opts.Owner, m.opts.LeaseTTL)
	m.mu.Lock()
	defer m.mu.Unlock()
	if err != nil || !ok {
		if o != nil {
			m.log.Warn().Err(err).Str("region", region).Msg("region lease lost")
		}
		delete(m.owned, region)
		m.wanted[region] = true // ask again every tick: its holder hands it over or lapses
		return 0, false
	}
	delete(m.wanted, region)
	if o == nil {
		m.log.Info().Str("region", region).Int64("fence", fence).Msg("region acquired")
		m.sweepNow = true // what another owner left there: its bookings and open offers
	}
	m.owned[region] = &owned{fence: fence, renewed: now}
	return fence, true
}

// Tick is one pass of the loop (exported for tests that step time themselves); one at a time.
// Its cost grows with what changed since the last tick and with the window it matches, not with
// the backlog.
func (m *Matcher) Tick(ctx context.Context) error {
	now := m.opts.Now()
	if err := m.startScheduled(ctx, now); err != nil {
		return err
	}
	m.refreshMembers(ctx)
	m.applyInbox(ctx, now)
	m.mu.Lock()
	sweep := m.sweepNow || m.opts.Sweep < 0 || now.Sub(m.lastSweep) >= m.opts.Sweep || m.lastSweep.After(now)
	m.mu.Unlock()
	if sweep {
		if err := m.sweep(ctx, now); err != nil {
			return err
		}
	}
	fences := m.renew(ctx, now)
	m.expireOffers(ctx, now, fences)
	if err := m.readHistory(ctx); err != nil {
		return err
	}
	ready, oldest, expired := m.ready(now, fences)
	for _, b := range expired {
		m.unfulfilled(ctx, b)
	}
	if len(ready) == 0 || now.Sub(oldest) < m.opts.Window {
		return nil
	}
	start := time.Now()
	err := m.match(ctx, ready, fences, now)
	m.windowS.Observe(time.Since(start).Seconds())
	return err
}

// applyInbox applies the events that arrived since the last tick.
func (m *Matcher) applyInbox(ctx context.Context, now time.Time) {
	m.inMu.Lock()
	var books map[string]Booking // taken whole: Observe goes on writing the next one
	if len(m.inBook) > 0 {
		books, m.inBook = m.inBook, map[string]Booking{}
	}
	offs := m.inOff
	m.inOff = nil
	m.inMu.Unlock()
	for _, b := range books {
		m.intake.WithLabelValues("event").Inc()
		m.observe(ctx, b, now)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range offs {
		m.intake.WithLabelValues("event").Inc()
		p := m.pending[o.BookingID]
		if p == nil || p.offer == nil || p.offer.ID != o.ID {
			continue
		}
		p.excluded[o.DriverID] = true
		p.offer = nil
		p.readyAt = now.Add(-m.opts.Window) // offered again in this very tick
	}
}

// observe takes one booking as it is now (from an event or a sweep).
func (m *Matcher) observe(ctx context.Context, b Booking, now time.Time) {
	if b.Status != StatusSearching {
		m.mu.Lock()
		delete(m.pending, b.ID)
		if g := m.gone[b.ID]; b.Version > g.version {
			m.gone[b.ID] = goneMark{version: b.Version, at: now}
		}
		m.mu.Unlock()
		return
	}
	region := m.regions.RegionOf(b.Pickup.Lat, b.Pickup.Lng)
	if _, ok := m.own(ctx, region, now); !ok {
		m.mu.Lock()
		delete(m.pending, b.ID)
		m.mu.Unlock()
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if g, ok := m.gone[b.ID]; ok && b.Version <= g.version {
		return // a late event of a booking that has moved on
	}
	p, ok := m.pending[b.ID]
	if !ok {
		ready := searchingSince(b, m.opts.ScheduleLead)
		if ready.After(now) {
			ready = now
		}
		m.pending[b.ID] = &pending{b: b, region: region, readyAt: ready, excluded: map[string]bool{}, history: true}
		return
	}
	if b.Version > p.b.Version && p.offer != nil {
		// It went through other states since (accepted, then given back): its offer is over,
		// and its history must be read again.
		p.excluded[p.offer.DriverID] = true
		p.offer = nil
		p.readyAt = now
		p.history = true
	}
	if b.Version >= p.b.Version {
		p.b = b
	}
}

// sweep lists every searching booking and open offer and reconciles the pending set with them:
// the safety net for lost events, and the intake of a region just taken over.
func (m *Matcher) sweep(ctx context.Context, now time.Time) error {
	searching, err := m.store.SearchingBookings(ctx, 10000)
	if err != nil {
		return fmt.Errorf("list searching: %w", err)
	}
	open, err := m.store.OpenOffers(ctx, "")
	if err != nil {
		return fmt.Errorf("list open offers: %w", err)
	}
	m.mu.Lock()
	m.lastSweep, m.sweepNow = now, false
	for id, g := range m.gone {
		if now.Sub(g.at) > time.Minute {
			delete(m.gone, id)
		}
	}
	m.mu.Unlock()
	openByBooking := make(map[string]Offer, len(open))
	for _, o := range open {
		openByBooking[o.BookingID] = o
	}
	seen := make(map[string]bool, len(searching))
	for _, b := range searching {
		m.mu.Lock()
		_, known := m.pending[b.ID]
		m.mu.Unlock()
		if !known {
			m.intake.WithLabelValues("sweep").Inc()
		}
		m.observe(ctx, b, now)
		m.mu.Lock()
		p := m.pending[b.ID]
		if p != nil {
			seen[b.ID] = true
			if o, ok := openByBooking[b.ID]; ok {
				p.offer, p.offered, p.readyAt = &o, true, time.Time{}
			} else if p.offer != nil {
				// Its offer was declined, expired or revoked: never offer it to that driver again.
				p.excluded[p.offer.DriverID] = true
				p.offer = nil
				p.readyAt = now
			}
		}
		m.mu.Unlock()
	}
	m.mu.Lock()
	for id := range m.pending {
		if !seen[id] {
			delete(m.pending, id)
		}
	}
	m.mu.Unlock()
	return nil
}

// renew keeps the leases of the regions with work, and of quiet ones until their renewal is
// due, and returns the fence of each region held.
func (m *Matcher) renew(ctx context.Context, now time.Time) map[string]int64 {
	m.mu.Lock()
	busy := map[string]bool{}
	for _, p := range m.pending {
		busy[p.region] = true
	}
	for r, o := range m.owned {
		if !busy[r] && now.Sub(o.renewed) >= m.opts.LeaseTTL/3 {
			busy[r] = true // renew a quiet region rather than let it lapse mid-flight
		}
	}
	for r := range m.wanted {
		busy[r] = true
	}
	m.mu.Unlock()
	regions := make([]string, 0, len(busy))
	for r := range busy {
		regions = append(regions, r)
	}
	fences := make([]int64, len(regions))
	var g errgroup.Group
	g.SetLimit(16)
	for i, r := range regions {
		g.Go(func() error {
			fences[i], _ = m.own(ctx, r, now)
			return nil
		})
	}
	_ = g.Wait()
	out := map[string]int64{}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, r := range regions {
		if fences[i] > 0 {
			out[r] = fences[i]
		}
	}
	for r, o := range m.owned {
		if _, ok := out[r]; !ok {
			out[r] = o.fence
		}
	}
	for id, p := range m.pending {
		if out[p.region] == 0 {
			delete(m.pending, id) // the region went to another matcher
		}
	}
	m.regionsG.Set(float64(len(m.owned)))
	m.searchingG.Set(float64(len(m.pending)))
	return out
}

// expireOffers closes the open offers past their time in the regions held (whoever made them).
func (m *Matcher) expireOffers(ctx context.Context, now time.Time, fences map[string]int64) {
	m.mu.Lock()
	var due []*pending
	for _, p := range m.pending {
		if p.offer != nil && now.After(p.offer.ExpiresAt) && fences[p.region] > 0 {
			due = append(due, p)
		}
	}
	m.mu.Unlock()
	var g errgroup.Group
	g.SetLimit(16)
	for _, p := range due {
		m.mu.Lock()
		o := *p.offer
		m.mu.Unlock()
		g.Go(func() error {
			m.expire(ctx, o)
			m.mu.Lock()
			if p.offer != nil && p.offer.ID == o.ID {
				p.excluded[o.DriverID] = true
				p.offer = nil
				p.readyAt = now
			}
			m.mu.Unlock()
			return nil
		})
	}
	_ = g.Wait()
}

// readHistory reads, for the bookings new to this matcher, who declined or gave them back
// before (perhaps to another matcher): they stay excluded after a takeover. One query a tick.
func (m *Matcher) readHistory(ctx context.Context) error {
	m.mu.Lock()
	var fresh []*pending
	for _, p := range m.pending {
		if p.history {
			fresh = append(fresh, p)
		}
	}
	m.mu.Unlock()
	if len(fresh) == 0 {
		return nil
	}
	ids := make([]string, len(fresh))
	for i, p := range fresh {
		ids[i] = p.b.ID
	}
	declined, cancelled, err := m.store.Exclusions(ctx, ids)
	if err != nil {
		return fmt.Errorf("exclusions: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range fresh {
		for _, d := range declined[p.b.ID] {
			p.excluded[d] = true
		}
		for _, d := range cancelled[p.b.ID] {
			p.excluded[d] = true
		}
		p.requeued = len(cancelled[p.b.ID]) > 0
		p.history = false
	}
	return nil
}

// ready lists the bookings waiting for a window, the time the oldest began to wait, and those
// that searched too long.
func (m *Matcher) ready(now time.Time, fences map[string]int64) (ready []*pending, oldest time.Time, expired []Booking) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pending {
		if p.offer != nil || p.readyAt.IsZero() || fences[p.region] == 0 {
			continue
		}
		if now.Sub(searchingSince(p.b, m.opts.ScheduleLead)) > m.opts.MaxSearch {
			expired = append(expired, p.b)
			continue
		}
		ready = append(ready, p)
		if oldest.IsZero() || p.readyAt.Before(oldest) {
			oldest = p.readyAt
		}
	}
	return ready, oldest, expired
}

// searchingSince is when a booking began to search: its creation, or its lead time if scheduled,
// or when it was last retried after going unfulfilled.
func searchingSince(b Booking, lead time.Duration) time.Time {
	since := b.CreatedAt
	if s := b.StartAt.Add(-lead); s.After(since) {
		since = s
	}
	if b.RetriedAt != nil && b.RetriedAt.After(since) {
		since = *b.RetriedAt
	}
	return since
}

// startScheduled moves scheduled bookings whose lead time has come to searching (once a second).
func (m *Matcher) startScheduled(ctx context.Context, now time.Time) error {
	m.mu.Lock()
	due := now.Sub(m.lastSched) >= time.Second
	if due {
		m.lastSched = now
	}
	m.mu.Unlock()
	if !due {
		return nil
	}
	bs, err := m.store.DueScheduled(ctx, now.Add(m.opts.ScheduleLead), 1000)
	if err != nil {
		return fmt.Errorf("due scheduled: %w", err)
	}
	for _, b := range bs {
		nb, err := m.store.Transition(ctx, Change{BookingID: b.ID, From: []Status{StatusScheduled}, To: StatusSearching,
			Version: b.Version, Actor: "system", Reason: "lead time reached", At: now})
		if err != nil && !errors.Is(err, ErrConflict) {
			return fmt.Errorf("start scheduled %s: %w", b.ID, err)
		}
		if err == nil {
			m.Observe(nb)
		}
	}
	return nil
}

func (m *Matcher) expire(ctx context.Context, o Offer) {
	if _, err := m.store.CloseOffer(ctx, o.ID, "", OfferExpired, m.opts.Now()); err != nil {
		if !errors.Is(err, ErrConflict) {
			m.log.Warn().Err(err).Str("offer", o.ID).Msg("expire offer")
		}
		return
	}
	m.offersExpire.Inc()
	if err := m.loc.Release(ctx, o.DriverID, o.ID); err != nil {
		m.log.Warn().Err(err).Str("offer", o.ID).Msg("release driver of an expired offer")
	}
	if st, err := m.loc.State(ctx, o.DriverID); err != nil {
		m.log.Warn().Err(err).Str("driver", o.DriverID).Msg("read the state of the driver of an expired offer")
	} else if st == DriverOffered {
		if err := m.loc.SetState(ctx, o.DriverID, DriverAvailable); err != nil {
			m.log.Warn().Err(err).Str("driver", o.DriverID).Msg("free driver of an expired offer")
		}
	}
	if err := m.notify.ToDriver(ctx, o.DriverID, "offer.revoked", map[string]any{"offer_id": o.ID, "reason": "expired"}); err != nil {
		m.log.Warn().Err(err).Str("offer", o.ID).Msg("tell driver of an expired offer")
	}
}

func (m *Matcher) unfulfilled(ctx context.Context, b Booking) {
	_, err := m.store.Transition(ctx, Change{BookingID: b.ID, From: []Status{StatusSearching}, To: StatusUnfulfilled,
		Actor: "system", Reason: "no driver found in time", At: m.opts.Now()})
	if err == nil || errors.Is(err, ErrConflict) {
		m.mu.Lock()
		delete(m.pending, b.ID)
		m.mu.Unlock()
	}
	if err == nil {
		m.unfulfilledC.Inc()
	} else if !errors.Is(err, ErrConflict) {
		m.log.Warn().Err(err).Str("booking", b.ID).Msg("mark unfulfilled")
	}
}

// refreshProfiles brings the drivers' profiles changed since the last call into memory: one
// query a window, with no read per candidate (at 19,000 drivers the per-candidate reads of a
// shared pool stalled matching for a minute). It reads what changed after the newest change it
// has, and again what changed in the 5 s before its last read began, as a transaction may
// commit a little after the time it wrote; never the same old changes window after window
// (5,000 profiles written in one statement were read again every window, 860,000 rows a
// minute, when the overlap counted back from the newest change instead).
func (m *Matcher) refreshProfiles(ctx context.Context) {
	m.mu.Lock()
	since := m.profilesAt
	if !since.IsZero() {
		since = since.Add(time.Millisecond) // the store keeps milliseconds
		if late := m.profilesRd.Add(-profileCommitLag); late.Before(since) {
			since = late
		}
	}
	readAt := m.opts.Now()
	m.mu.Unlock()
	for {
		ps, last, err := m.store.DriversChangedSince(ctx, since, 5000)
		if err != nil {
			m.log.Warn().Err(err).Msg("read driver profiles")
			return
		}
		m.mu.Lock()
		for _, p := range ps {
			m.profiles[p.ID] = p
		}
		if last.After(m.profilesAt) {
			m.profilesAt = last
		}
		done := len(ps) < 5000 || !last.After(since)
		if done {
			m.profilesRd = readAt // only a read that got to the end moves the overlap on
		}
		m.mu.Unlock()
		if done {
			return
		}
		since = last
	}
}

// profileCommitLag bounds how long after the time it writes a profile's change commits.
const profileCommitLag = 5 * time.Second

func can(skills []Transmission, t Transmission) bool {
	for _, s := range skills {
		if s == t {
			return true
		}
	}
	return false
}

type cand struct {
	driver string
	dist   float64
}

// candidates finds, for each ready booking, the nearest available, fresh drivers who can drive
// its car and have not turned it down, within its current radius step: one batch search.
func (m *Matcher) candidates(ctx context.Context, ready []*pending, now time.Time) ([][]cand, error) {
	fresh := now.Add(-m.opts.Fresh)
	qs := make([]Search, len(ready))
	m.mu.Lock()
	// Only refreshProfiles writes the map, on the tick's goroutine, as candidates runs: the
	// searches may read it without the lock.
	profiles := m.profiles
	for i, p := range ready {
		step := min(p.rounds, len(m.opts.Radii)-1)
		excl := make(map[string]bool, len(p.excluded))
		for d := range p.excluded {
			excl[d] = true
		}
		car := p.b.Car.Transmission
		qs[i] = Search{Lat: p.b.Pickup.Lat, Lng: p.b.Pickup.Lng, RadiusM: m.opts.Radii[step], Limit: m.opts.Candidates,
			Keep: func(pos Position) bool {
				if !pos.At.After(fresh) || excl[pos.DriverID] {
					return false
				}
				prof, ok := profiles[pos.DriverID]
				return ok && can(prof.Transmissions, car)
			}}
	}
	m.mu.Unlock()
	near, err := m.loc.NearbyAvailableMany(ctx, qs)
	if err != nil {
		return nil, fmt.Errorf("candidates: %w", err)
	}
	out := make([][]cand, len(ready))
	for i, ns := range near {
		for _, n := range ns {
			out[i] = append(out[i], cand{n.DriverID, n.DistanceM})
		}
	}
	return out, nil
}

// match solves one window: candidates per booking, the assignment, then offers.
func (m *Matcher) match(ctx context.Context, ready []*pending, fences map[string]int64, now time.Time) error {
	// Oldest first, and bookings given back by a driver before all: greedy serves them first.
	sort.Slice(ready, func(i, j int) bool {
		if ready[i].requeued != ready[j].requeued {
			return ready[i].requeued
		}
		return ready[i].b.CreatedAt.Before(ready[j].b.CreatedAt)
	})
	m.refreshProfiles(ctx)
	cands, err := m.candidates(ctx, ready, now)
	if err != nil {
		return err
	}
	// Columns are the distinct drivers; edges carry estimated pickup seconds.
	col := map[string]int{}
	var drivers []string
	var edges []Edge
	for i, cs := range cands {
		bonus := 0.0
		if ready[i].requeued {
			bonus = requeueBonusS
		}
		for _, c := range cs {
			j, ok := col[c.driver]
			if !ok {
				j = len(drivers)
				col[c.driver] = j
				drivers = append(drivers, c.driver)
			}
			edges = append(edges, Edge{Row: i, Col: j, Cost: math.Max(0, PickupSeconds(c.dist)-bonus)})
		}
	}
	start := time.Now()
	var chosen []int
	if m.opts.Greedy || len(edges) > m.opts.MaxOptimalEdges {
		chosen = AssignGreedy(len(ready), len(drivers), edges)
	} else {
		chosen = Assign(len(ready), len(drivers), edges)
	}
	m.solveSeconds.Observe(time.Since(start).Seconds())
	var picks []pick
	m.mu.Lock()
	for i, p := range ready {
		if chosen[i] < 0 {
			p.rounds++
			p.readyAt = now
			continue
		}
		driver := drivers[chosen[i]]
		for _, c := range cands[i] {
			if c.driver == driver {
				picks = append(picks, pick{p: p, driver: driver, dist: c.dist})
				break
			}
		}
	}
	m.mu.Unlock()
	return m.offerAll(ctx, picks, fences, now)
}

// pick is a booking of the window and the driver the solver gave it.
type pick struct {
	p      *pending
	driver string
	dist   float64
	offer  Offer
}

// offerAll sends a window's offers in a few exchanges: the drivers' leases in one pipeline,
// one transaction per region for the offers, the drivers' states in one batch and the frames in
// one publish batch (one offer at a time, 457-611 offers took 1.3-1.5 s).
func (m *Matcher) offerAll(ctx context.Context, picks []pick, fences map[string]int64, now time.Time) error {
	picks, err := m.calendarFree(ctx, picks, now)
	if err != nil {
		m.retryLater(picks, now)
		return err
	}
	if len(picks) == 0 {
		return nil
	}
	// The driver's time to answer runs from the offer, not from the tick: the window's search
	// may have taken a while (TestFaultRedisLatency).
	at := m.opts.Now()
	leases := make([]Lease, len(picks))
	for i := range picks {
		pk := &picks[i]
		pk.offer = Offer{ID: NewID("of"), BookingID: pk.p.b.ID, DriverID: pk.driver, Status: OfferOpen,
			DistanceM: int(pk.dist + 0.5), CreatedAt: at, ExpiresAt: at.Add(m.opts.OfferTimeout),
			Region: pk.p.region, Fence: fences[pk.p.region]}
		leases[i] = Lease{DriverID: pk.driver, Token: pk.offer.ID, TTL: m.opts.OfferTimeout + 5*time.Second}
	}
	got, err := m.loc.ReserveMany(ctx, leases)
	if err != nil {
		m.retryLater(picks, now)
		return fmt.Errorf("lease drivers: %w", err)
	}
	byRegion := map[string][]int{}
	for i, ok := range got {
		if !ok {
			// Someone else is offering this driver something: try again next window.
			m.retryLater(picks[i:i+1], now)
			continue
		}
		byRegion[picks[i].p.region] = append(byRegion[picks[i].p.region], i)
	}
	made := make([]bool, len(picks))
	var g errgroup.Group
	g.SetLimit(8)
	for region, idx := range byRegion {
		g.Go(func() error {
			offers := make([]Offer, len(idx))
			for k, i := range idx {
				offers[k] = picks[i].offer
			}
			refused, err := m.store.CreateOffers(ctx, region, fences[region], offers)
			if err != nil {
				m.log.Warn().Err(err).Str("region", region).Int("offers", len(offers)).Msg("record offers")
			}
			for _, i := range idx {
				if err == nil && !refused[picks[i].offer.BookingID] {
					made[i] = true
				}
			}
			return nil
		})
	}
	_ = g.Wait()
	var sent []string
	var msgs []DriverMessage
	m.mu.Lock()
	for i := range picks {
		pk := &picks[i]
		if !got[i] {
			continue
		}
		if !made[i] {
			pk.p.readyAt = now
			continue
		}
		o := pk.offer
		if !pk.p.offered {
			m.toOffer.Observe(at.Sub(searchingSince(pk.p.b, m.opts.ScheduleLead)).Seconds())
		}
		pk.p.offered, pk.p.offer, pk.p.readyAt = true, &o, time.Time{}
		sent = append(sent, pk.driver)
		msgs = append(msgs, DriverMessage{DriverID: pk.driver, Type: "offer", Data: OfferMessage(o, pk.p.b)})
		m.pickupM.Observe(pk.dist)
	}
	m.mu.Unlock()
	for i := range picks {
		if got[i] && !made[i] {
			if err := m.loc.Release(ctx, picks[i].driver, picks[i].offer.ID); err != nil {
				m.log.Warn().Err(err).Str("driver", picks[i].driver).Msg("release driver")
			}
		}
	}
	if len(sent) == 0 {
		return nil
	}
	m.offersSent.Add(float64(len(sent)))
	if err := m.loc.SetStates(ctx, sent, DriverOffered); err != nil {
		m.log.Warn().Err(err).Int("drivers", len(sent)).Msg("mark drivers offered")
	}
	if bn, ok := m.notify.(BatchNotifier); ok {
		return bn.ToDrivers(ctx, msgs)
	}
	for _, msg := range msgs {
		if err := m.notify.ToDriver(ctx, msg.DriverID, msg.Type, msg.Data); err != nil {
			return err
		}
	}
	return nil
}

// retryLater puts picks back into the next window.
func (m *Matcher) retryLater(picks []pick, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, pk := range picks {
		pk.p.readyAt = now
	}
}

// OfferMessage is the driver's `offer` frame (API.md).
func OfferMessage(o Offer, b Booking) map[string]any {
	return map[string]any{
		"offer_id": o.ID, "booking_id": b.ID, "pickup": b.Pickup, "hours": b.Hours,
		"start_at": b.StartAt, "distance_m": o.DistanceM, "fare": b.Fare, "expires_at": o.ExpiresAt,
	}
}

// calendarFree keeps the picks whose driver's calendar has room for the booking's block (the
// store would refuse the acceptance anyway; this spares the driver a doomed offer); a busy
// driver is never offered that booking again. One query for the window: the drivers with any
// block in the window's whole span, then the exact check for those few alone.
func (m *Matcher) calendarFree(ctx context.Context, picks []pick, now time.Time) ([]pick, error) {
	ps, ok := m.store.(PeopleStore)
	if !ok || len(picks) == 0 {
		return picks, nil
	}
	ids := make([]string, len(picks))
	var lo, hi time.Time
	for i, pk := range picks {
		ids[i] = pk.driver
		from, to := BlockOf(pk.p.b, pk.p.b.TravelBuffer())
		if lo.IsZero() || from.Before(lo) {
			lo = from
		}
		if to.After(hi) {
			hi = to
		}
	}
	maybe, err := ps.BusyDrivers(ctx, ids, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("calendars: %w", err)
	}
	out := picks[:0]
	for _, pk := range picks {
		if maybe[pk.driver] {
			from, to := BlockOf(pk.p.b, pk.p.b.TravelBuffer())
			busy, err := ps.BusyDrivers(ctx, []string{pk.driver}, from, to)
			if err != nil {
				return nil, fmt.Errorf("calendar of %s: %w", pk.driver, err)
			}
			if busy[pk.driver] {
				m.mu.Lock()
				pk.p.excluded[pk.driver] = true
				pk.p.readyAt = now
				m.mu.Unlock()
				continue
			}
		}
		out = append(out, pk)
	}
	return out, nil
}
