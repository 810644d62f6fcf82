package dispatch

import (
	"context"
	"errors"
	"fmt"
	"math"
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
	if o.Now == nil {
		o.Now = time.Now
	}
}

// pending is what the matcher remembers of a searching booking between ticks.
type pending struct {
	b        Booking
	region   string
	readyAt  time.Time // when it became ready for a window (zero: has an open offer)
	offer    *Offer
	rounds   int // windows it went through without a driver: the radius step
	excluded map[string]bool
	offered  bool // it had an offer already (for the booking-to-offer histogram)
	requeued bool // a driver accepted it and gave it back: first in line
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
// State lives in the store and the locator; the matcher's memory is a cache rebuilt every tick,
// so a restarted matcher, or one that takes over a region, picks up where another left off.
// One driver, one booking is not the matcher's promise alone: the driver's lease makes offers
// exclusive, and the store's conditional updates make assignments exclusive even when leases fail.
type Matcher struct {
	store   MatchStore
	loc     Locator
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

	mu        sync.Mutex // guards the fields below
	pending   map[string]*pending
	owned     map[string]*owned
	skills    map[string]skillEntry
	lastSched time.Time
}

type skillEntry struct {
	t  []Transmission
	at time.Time
}

// NewMatcher returns a matcher; its metrics are registered on reg.
func NewMatcher(store MatchStore, loc Locator, regions Regions, notify Notifier, opts MatcherOptions, reg prometheus.Registerer, log zerolog.Logger) *Matcher {
	opts.defaults()
	m := &Matcher{store: store, loc: loc, regions: regions, notify: notify, opts: opts, log: log,
		pending: map[string]*pending{}, owned: map[string]*owned{}, skills: map[string]skillEntry{},
		offersSent:   prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_offers_sent_total", Help: "Offers sent to drivers."}),
		offersExpire: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_offers_expired_total", Help: "Offers that timed out."}),
		unfulfilledC: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_bookings_unfulfilled_total", Help: "Bookings that found no driver in time."}),
		searchingG:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "dispatch_searching_bookings", Help: "Bookings searching in this matcher's regions (queue depth)."}),
		regionsG:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "dispatch_regions_owned", Help: "Regions this matcher owns."}),
		solveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_solve_seconds", Help: "Time to solve one window's assignment.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		toOffer:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_booking_to_offer_seconds", Help: "From a booking searching to its first offer.", Buckets: prometheus.ExponentialBuckets(0.05, 1.4, 20)}),
		pickupM:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_offer_pickup_metres", Help: "Straight-line pickup distance of offers.", Buckets: prometheus.ExponentialBuckets(50, 1.5, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.offersSent, m.offersExpire, m.unfulfilledC, m.searchingG, m.regionsG, m.solveSeconds, m.toOffer, m.pickupM)
	}
	return m
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
		_ = m.regions.Release(ctx, r, m.opts.Owner)
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

// own reports whether this matcher holds region now, taking or renewing the lease as needed.
func (m *Matcher) own(ctx context.Context, region string, now time.Time) (int64, bool) {
	m.mu.Lock()
	o := m.owned[region]
	m.mu.Unlock()
	if o != nil && now.Sub(o.renewed) < m.opts.LeaseTTL/3 {
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
		return 0, false
	}
	if o == nil {
		m.log.Info().Str("region", region).Int64("fence", fence).Msg("region acquired")
	}
	m.owned[region] = &owned{fence: fence, renewed: now}
	return fence, true
}

// Tick is one pass of the loop (exported for tests that step time themselves).
func (m *Matcher) Tick(ctx context.Context) error {
	now := m.opts.Now()
	if err := m.startScheduled(ctx, now); err != nil {
		return err
	}
	searching, err := m.store.SearchingBookings(ctx, 10000)
	if err != nil {
		return fmt.Errorf("list searching: %w", err)
	}
	open, err := m.store.OpenOffers(ctx, "")
	if err != nil {
		return fmt.Errorf("list open offers: %w", err)
	}
	openByBooking := map[string]Offer{}
	for _, o := range open {
		openByBooking[o.BookingID] = o
	}
	// Which regions are ours this tick (renewing at a third of the TTL). The leases are taken
	// concurrently, as are the expiries and the offers below: each is a few Redis round trips,
	// and one after the other they stalled matching when Redis answered slowly
	// (TestFaultRedisLatency in cmd/dispatchd).
	var busy []string
	mine := map[string]int64{}
	for _, b := range searching {
		r := m.regions.RegionOf(b.Pickup.Lat, b.Pickup.Lng)
		if _, seen := mine[r]; !seen {
			mine[r] = 0
			busy = append(busy, r)
		}
	}
	fences := make([]int64, len(busy))
	var lg errgroup.Group
	lg.SetLimit(16)
	for i, r := range busy {
		lg.Go(func() error {
			if fence, ok := m.own(ctx, r, now); ok {
				fences[i] = fence
			}
			return nil
		})
	}
	_ = lg.Wait()
	for i, r := range busy {
		mine[r] = fences[i]
	}
	m.mu.Lock()
	for r := range m.owned {
		if _, busy := mine[r]; !busy && now.Sub(m.owned[r].renewed) < m.opts.LeaseTTL/3 {
			mine[r] = m.owned[r].fence // keep quiet regions until their renewal is due
		}
	}
	m.regionsG.Set(float64(len(m.owned)))
	m.mu.Unlock()

	// Offers past their time expire whoever made them (a matcher that died leaves them).
	var eg errgroup.Group
	eg.SetLimit(16)
	for _, o := range open {
		if now.After(o.ExpiresAt) && mine[m.regionOfOffer(o, searching)] > 0 {
			eg.Go(func() error { m.expire(ctx, o); return nil })
			delete(openByBooking, o.BookingID)
		}
	}
	_ = eg.Wait()
	m.mu.Lock()
	seen := map[string]bool{}
	var fresh []*pending
	for _, b := range searching {
		region := m.regions.RegionOf(b.Pickup.Lat, b.Pickup.Lng)
		if mine[region] == 0 {
			continue
		}
		seen[b.ID] = true
		p, ok := m.pending[b.ID]
		if !ok {
			p = &pending{b: b, region: region, excluded: map[string]bool{}}
			m.pending[b.ID] = p
			fresh = append(fresh, p)
		} else if b.Version != p.b.Version && p.offer != nil {
			// It went through other states since (accepted, then given back): read its history again.
			fresh = append(fresh, p)
		}
		p.b = b
		if o, ok := openByBooking[b.ID]; ok {
			p.offer = &o
			p.offered = true
			p.readyAt = time.Time{}
			continue
		}
		if p.offer != nil {
			// Its offer was declined, expired or revoked: never offer it to that driver again.
			p.excluded[p.offer.DriverID] = true
			p.offer = nil
		}
		if p.readyAt.IsZero() {
			p.readyAt = now
		}
	}
	for id := range m.pending {
		if !seen[id] {
			delete(m.pending, id)
		}
	}
	m.searchingG.Set(float64(len(m.pending)))
	m.mu.Unlock()
	// Drivers who declined before (perhaps to another matcher) stay excluded after a takeover.
	if len(fresh) > 0 {
		ids := make([]string, len(fresh))
		for i, p := range fresh {
			ids[i] = p.b.ID
		}
		declined, cancelled, err := m.store.Exclusions(ctx, ids)
		if err != nil {
			return fmt.Errorf("exclusions: %w", err)
		}
		m.mu.Lock()
		for _, p := range fresh {
			for _, d := range declined[p.b.ID] {
				p.excluded[d] = true
			}
			for _, d := range cancelled[p.b.ID] {
				p.excluded[d] = true
			}
			p.requeued = len(cancelled[p.b.ID]) > 0
		}
		m.mu.Unlock()
	}
	m.mu.Lock()
	var ready []*pending
	var oldest time.Time
	var expired []Booking
	for _, p := range m.pending {
		if p.offer != nil || p.readyAt.IsZero() {
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
	m.mu.Unlock()
	for _, b := range expired {
		m.unfulfilled(ctx, b)
	}
	if len(ready) == 0 || now.Sub(oldest) < m.opts.Window {
		return nil
	}
	return m.match(ctx, ready, mine, now)
}

func (m *Matcher) regionOfOffer(o Offer, searching []Booking) string {
	if o.Region != "" {
		return o.Region
	}
	for _, b := range searching {
		if b.ID == o.BookingID {
			return m.regions.RegionOf(b.Pickup.Lat, b.Pickup.Lng)
		}
	}
	return ""
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
		_, err := m.store.Transition(ctx, Change{BookingID: b.ID, From: []Status{StatusScheduled}, To: StatusSearching,
			Version: b.Version, Actor: "system", Reason: "lead time reached", At: now})
		if err != nil && !errors.Is(err, ErrConflict) {
			return fmt.Errorf("start scheduled %s: %w", b.ID, err)
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
	_ = m.loc.Release(ctx, o.DriverID, o.ID)
	if st, err := m.loc.State(ctx, o.DriverID); err == nil && st == DriverOffered {
		_ = m.loc.SetState(ctx, o.DriverID, DriverAvailable)
	}
	_ = m.notify.ToDriver(ctx, o.DriverID, "offer.revoked", map[string]any{"offer_id": o.ID, "reason": "expired"})
}

func (m *Matcher) unfulfilled(ctx context.Context, b Booking) {
	_, err := m.store.Transition(ctx, Change{BookingID: b.ID, From: []Status{StatusSearching}, To: StatusUnfulfilled,
		Actor: "system", Reason: "no driver found in time", At: m.opts.Now()})
	if err == nil {
		m.unfulfilledC.Inc()
	} else if !errors.Is(err, ErrConflict) {
		m.log.Warn().Err(err).Str("booking", b.ID).Msg("mark unfulfilled")
	}
}

type cand struct {
	driver string
	dist   float64
}

// skillsOf returns the transmissions a driver can drive (cached for a minute).
func (m *Matcher) skillsOf(ctx context.Context, driverID string, now time.Time) []Transmission {
	m.mu.Lock()
	e, ok := m.skills[driverID]
	m.mu.Unlock()
	if ok && now.Sub(e.at) < time.Minute {
		return e.t
	}
	d, err := m.store.Driver(ctx, driverID)
	if err != nil {
		return nil
	}
	m.mu.Lock()
	m.skills[driverID] = skillEntry{t: d.Transmissions, at: now}
	m.mu.Unlock()
	return d.Transmissions
}

func can(skills []Transmission, t Transmission) bool {
	for _, s := range skills {
		if s == t {
			return true
		}
	}
	return false
}

// candidates finds, for each ready booking, the nearest available, fresh drivers who can drive
// its car and have not turned it down, within its current radius step.
func (m *Matcher) candidates(ctx context.Context, ready []*pending, now time.Time) ([][]cand, error) {
	fresh := now.Add(-m.opts.Fresh)
	out := make([][]cand, len(ready))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, p := range ready {
		m.mu.Lock()
		step := min(p.rounds, len(m.opts.Radii)-1)
		excl := make(map[string]bool, len(p.excluded))
		for d := range p.excluded {
			excl[d] = true
		}
		m.mu.Unlock()
		g.Go(func() error {
			near, err := m.loc.Nearby(gctx, p.b.Pickup.Lat, p.b.Pickup.Lng, m.opts.Radii[step], m.opts.Candidates*2,
				func(pos Position) bool {
					return pos.State == DriverAvailable && pos.At.After(fresh) && !excl[pos.DriverID]
				})
			if err != nil {
				return fmt.Errorf("candidates for %s: %w", p.b.ID, err)
			}
			for _, n := range near {
				if len(out[i]) == m.opts.Candidates {
					break
				}
				if can(m.skillsOf(gctx, n.DriverID, now), p.b.Car.Transmission) {
					out[i] = append(out[i], cand{n.DriverID, n.DistanceM})
				}
			}
			return nil
		})
	}
	return out, g.Wait()
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
	// The chosen drivers are distinct: the offers are independent and go out concurrently.
	var g errgroup.Group
	g.SetLimit(16)
	for i, p := range ready {
		if chosen[i] < 0 {
			m.mu.Lock()
			p.rounds++
			p.readyAt = now
			m.mu.Unlock()
			continue
		}
		driver := drivers[chosen[i]]
		dist := 0.0
		for _, c := range cands[i] {
			if c.driver == driver {
				dist = c.dist
			}
		}
		g.Go(func() error {
			if err := m.offer(ctx, p, driver, dist, fences[p.region], now); err != nil {
				m.log.Warn().Err(err).Str("booking", p.b.ID).Str("driver", driver).Msg("offer")
			}
			return nil
		})
	}
	return g.Wait()
}

// offer leases the driver, records the offer under the region's fence and tells the driver.
func (m *Matcher) offer(ctx context.Context, p *pending, driverID string, distM float64, fence int64, now time.Time) error {
	// The driver's time to answer runs from this offer, not from the tick: the window's search
	// and the offers made before this one may have taken seconds (Redis slow: with 500 ms added,
	// offers timed from the tick had expired before they were sent; TestFaultRedisLatency).
	at := m.opts.Now()
	o := Offer{ID: NewID("of"), BookingID: p.b.ID, DriverID: driverID, Status: OfferOpen,
		DistanceM: int(distM + 0.5), CreatedAt: at, ExpiresAt: at.Add(m.opts.OfferTimeout),
		Region: p.region, Fence: fence}
	if busy, err := m.calendarBusy(ctx, driverID, p.b); err != nil {
		return err
	} else if busy {
		// The driver's calendar has no room for this booking (issue 16): never this one again.
		m.mu.Lock()
		p.excluded[driverID] = true
		p.readyAt = now
		m.mu.Unlock()
		return nil
	}
	ok, err := m.loc.Reserve(ctx, driverID, o.ID, m.opts.OfferTimeout+5*time.Second)
	if err != nil {
		return err
	}
	if !ok {
		// Someone else is offering this driver something: try again next window.
		m.mu.Lock()
		p.readyAt = now
		m.mu.Unlock()
		return nil
	}
	if err := m.store.CreateOffer(ctx, o); err != nil {
		_ = m.loc.Release(ctx, driverID, o.ID)
		return err
	}
	_ = m.loc.SetState(ctx, driverID, DriverOffered)
	m.mu.Lock()
	if !p.offered {
		m.toOffer.Observe(now.Sub(searchingSince(p.b, m.opts.ScheduleLead)).Seconds())
	}
	p.offered = true
	p.offer = &o
	p.readyAt = time.Time{}
	m.mu.Unlock()
	m.offersSent.Inc()
	m.pickupM.Observe(distM)
	return m.notify.ToDriver(ctx, driverID, "offer", OfferMessage(o, p.b))
}

// OfferMessage is the driver's `offer` frame (API.md).
func OfferMessage(o Offer, b Booking) map[string]any {
	return map[string]any{
		"offer_id": o.ID, "booking_id": b.ID, "pickup": b.Pickup, "hours": b.Hours,
		"start_at": b.StartAt, "distance_m": o.DistanceM, "fare": b.Fare, "expires_at": o.ExpiresAt,
	}
}

// calendarBusy reports whether the driver's calendar has a block overlapping the booking's
// (the store would refuse the acceptance anyway; this spares the driver a doomed offer).
func (m *Matcher) calendarBusy(ctx context.Context, driverID string, b Booking) (bool, error) {
	ps, ok := m.store.(PeopleStore)
	if !ok {
		return false, nil
	}
	from, to := BlockOf(b, b.TravelBuffer())
	busy, err := ps.BusyDrivers(ctx, []string{driverID}, from, to)
	return busy[driverID], err
}
