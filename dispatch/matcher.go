package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// MatcherOptions configure the matching loop.
type MatcherOptions struct {
	// Window gathers searching bookings before they are matched together (default 2 s).
	Window time.Duration
	// Tick is how often the loop looks at the store (default 100 ms).
	Tick time.Duration
	// OfferTimeout is how long a driver has to answer an offer (default 15 s).
	OfferTimeout time.Duration
	// Radii are the search radii in metres, one step further after each round without a driver.
	Radii []float64
	// MaxSearch is how long a booking searches before it becomes unfulfilled (default 10 min).
	MaxSearch time.Duration
	// Fresh: a driver silent longer than this is no candidate (default 30 s).
	Fresh time.Duration
	// Candidates per booking considered (default 8).
	Candidates int
	Now        func() time.Time
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
		o.Radii = []float64{2000, 3500, 5000, 8000}
	}
	if o.MaxSearch <= 0 {
		o.MaxSearch = 10 * time.Minute
	}
	if o.Fresh <= 0 {
		o.Fresh = 30 * time.Second
	}
	if o.Candidates <= 0 {
		o.Candidates = 8
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// pending is what the matcher remembers of a searching booking between ticks.
type pending struct {
	b         Booking
	readyAt   time.Time // when it became ready for a window (zero: has an open offer)
	offer     *Offer
	rounds    int // windows it went through without a driver
	excluded  map[string]bool
	searching time.Time
}

// Matcher is the matching loop: it gathers searching bookings into windows, finds candidates,
// solves the assignment, leases the chosen drivers and offers them the bookings, and expires
// unanswered offers. State lives in the store and the locator; the matcher's memory is a cache
// it rebuilds every tick, so a restarted or second matcher picks up where another left off.
type Matcher struct {
	store  MatchStore
	loc    Locator
	notify Notifier
	opts   MatcherOptions
	log    zerolog.Logger

	offersSent   prometheus.Counter
	offersExpire prometheus.Counter
	searchingG   prometheus.Gauge
	solveSeconds prometheus.Histogram
	toOffer      prometheus.Histogram

	mu      sync.Mutex // guards pending
	pending map[string]*pending
}

// NewMatcher returns a matcher; its metrics are registered on reg.
func NewMatcher(store MatchStore, loc Locator, notify Notifier, opts MatcherOptions, reg prometheus.Registerer, log zerolog.Logger) *Matcher {
	opts.defaults()
	m := &Matcher{store: store, loc: loc, notify: notify, opts: opts, log: log, pending: map[string]*pending{},
		offersSent:   prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_offers_sent_total", Help: "Offers sent to drivers."}),
		offersExpire: prometheus.NewCounter(prometheus.CounterOpts{Name: "dispatch_offers_expired_total", Help: "Offers that timed out."}),
		searchingG:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "dispatch_searching_bookings", Help: "Bookings searching for a driver (queue depth)."}),
		solveSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_solve_seconds", Help: "Time to match one window.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		toOffer:      prometheus.NewHistogram(prometheus.HistogramOpts{Name: "dispatch_booking_to_offer_seconds", Help: "From a booking searching to its first offer.", Buckets: prometheus.ExponentialBuckets(0.05, 1.6, 14)}),
	}
	if reg != nil {
		reg.MustRegister(m.offersSent, m.offersExpire, m.searchingG, m.solveSeconds, m.toOffer)
	}
	return m
}

// Run ticks until ctx is done. It returns nil on cancellation; a failing tick is logged and
// retried on the next one (a store or Redis outage must not end the loop).
func (m *Matcher) Run(ctx context.Context) error {
	t := time.NewTicker(m.opts.Tick)
	defer t.Stop()
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

// Tick is one pass of the loop (exported for tests that step time themselves).
func (m *Matcher) Tick(ctx context.Context) error {
	now := m.opts.Now()
	searching, err := m.store.SearchingBookings(ctx, 5000)
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
	// Offers past their time expire whoever made them (a matcher that died leaves them).
	for _, o := range open {
		if now.After(o.ExpiresAt) {
			m.expire(ctx, o)
			delete(openByBooking, o.BookingID)
		}
	}
	m.mu.Lock()
	seen := map[string]bool{}
	for _, b := range searching {
		seen[b.ID] = true
		p, ok := m.pending[b.ID]
		if !ok {
			p = &pending{b: b, searching: now, excluded: map[string]bool{}}
			if declined, err := m.store.DeclinedBy(ctx, b.ID); err == nil {
				for _, d := range declined {
					p.excluded[d] = true
				}
			}
			m.pending[b.ID] = p
		}
		p.b = b
		if o, ok := openByBooking[b.ID]; ok {
			p.offer = &o
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
	var ready []*pending
	var oldest time.Time
	for _, p := range m.pending {
		if p.offer != nil || p.readyAt.IsZero() {
			continue
		}
		if now.Sub(p.searching) > m.opts.MaxSearch {
			m.unfulfilled(ctx, p.b)
			continue
		}
		ready = append(ready, p)
		if oldest.IsZero() || p.readyAt.Before(oldest) {
			oldest = p.readyAt
		}
	}
	m.mu.Unlock()
	if len(ready) == 0 || now.Sub(oldest) < m.opts.Window {
		return nil
	}
	return m.match(ctx, ready, now)
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
	if err != nil && !errors.Is(err, ErrConflict) {
		m.log.Warn().Err(err).Str("booking", b.ID).Msg("mark unfulfilled")
	}
}

// match solves one window: candidates per booking, the assignment, then offers.
func (m *Matcher) match(ctx context.Context, ready []*pending, now time.Time) error {
	sort.Slice(ready, func(i, j int) bool { return ready[i].b.CreatedAt.Before(ready[j].b.CreatedAt) })
	start := time.Now()
	fresh := now.Add(-m.opts.Fresh)
	type cand struct {
		driver string
		dist   float64
	}
	cands := make([][]cand, len(ready))
	for i, p := range ready {
		step := p.rounds
		if step >= len(m.opts.Radii) {
			step = len(m.opts.Radii) - 1
		}
		excl := p.excluded
		near, err := m.loc.Nearby(ctx, p.b.Pickup.Lat, p.b.Pickup.Lng, m.opts.Radii[step], m.opts.Candidates,
			func(pos Position) bool {
				return pos.State == DriverAvailable && pos.At.After(fresh) && !excl[pos.DriverID]
			})
		if err != nil {
			return fmt.Errorf("candidates for %s: %w", p.b.ID, err)
		}
		for _, n := range near {
			cands[i] = append(cands[i], cand{n.DriverID, n.DistanceM})
		}
	}
	// Nearest first, each driver once, oldest booking first.
	taken := map[string]bool{}
	chosen := make([]int, len(ready))
	for i := range ready {
		chosen[i] = -1
		for j, c := range cands[i] {
			if !taken[c.driver] {
				taken[c.driver] = true
				chosen[i] = j
				break
			}
		}
	}
	m.solveSeconds.Observe(time.Since(start).Seconds())
	for i, p := range ready {
		if chosen[i] < 0 {
			m.mu.Lock()
			p.rounds++
			p.readyAt = now
			m.mu.Unlock()
			continue
		}
		c := cands[i][chosen[i]]
		if err := m.offer(ctx, p, c.driver, c.dist, now); err != nil {
			m.log.Warn().Err(err).Str("booking", p.b.ID).Str("driver", c.driver).Msg("offer")
		}
	}
	return nil
}

// offer leases the driver, records the offer and tells the driver.
func (m *Matcher) offer(ctx context.Context, p *pending, driverID string, distM float64, now time.Time) error {
	o := Offer{ID: NewID("of"), BookingID: p.b.ID, DriverID: driverID, Status: OfferOpen,
		DistanceM: int(distM + 0.5), CreatedAt: now, ExpiresAt: now.Add(m.opts.OfferTimeout)}
	ok, err := m.loc.Reserve(ctx, driverID, o.ID, m.opts.OfferTimeout+5*time.Second)
	if err != nil || !ok {
		return err
	}
	if err := m.store.CreateOffer(ctx, o); err != nil {
		_ = m.loc.Release(ctx, driverID, o.ID)
		return err
	}
	_ = m.loc.SetState(ctx, driverID, DriverOffered)
	m.mu.Lock()
	if p.offer == nil && p.rounds == 0 && len(p.excluded) == 0 {
		m.toOffer.Observe(now.Sub(p.b.CreatedAt).Seconds())
	}
	p.offer = &o
	p.readyAt = time.Time{}
	m.mu.Unlock()
	m.offersSent.Inc()
	return m.notify.ToDriver(ctx, driverID, "offer", OfferMessage(o, p.b))
}

// OfferMessage is the driver's `offer` frame (API.md).
func OfferMessage(o Offer, b Booking) map[string]any {
	return map[string]any{
		"offer_id": o.ID, "booking_id": b.ID, "pickup": b.Pickup, "hours": b.Hours,
		"start_at": b.StartAt, "distance_m": o.DistanceM, "fare": b.Fare, "expires_at": o.ExpiresAt,
	}
}
