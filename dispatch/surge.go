package dispatch

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// SurgePolicy is a city's published surge: the steps a market's load climbs, how recent a
// window of demand counts, and how much the load must fall before a step is left.
//
// The load of a pickup's market is demand (booking requests in the pickup's H3 cell and its
// ring over the last WindowMinutes) over supply (available drivers there now, at least 1).
// Below MinDemand requests there is never surge: three customers are not a market.
//
// Smoothing (hysteresis): a step is entered when the load reaches its Ratio, and held while
// the load stays at or above Ratio × (100 − HysteresisPercent)%. So a load wavering around a
// threshold does not flap the price between two steps with every booking.
type SurgePolicy struct {
	WindowMinutes     int         `json:"window_minutes"`
	MinDemand         int         `json:"min_demand"`
	HysteresisPercent int         `json:"hysteresis_percent"`
	Steps             []SurgeStep `json:"steps"`
}

// SurgeStep: from a load of Ratio (demand per available driver) the fare is multiplied by
// Multiplier, capped by the tariff's SurgeCap.
type SurgeStep struct {
	Ratio      float64 `json:"ratio"`
	Multiplier float64 `json:"multiplier"`
}

func (p SurgePolicy) validate() error {
	if len(p.Steps) == 0 {
		return nil
	}
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("surge.%s is %v, want %s: %w", field, v, want, ErrInvalid))
	}
	if p.WindowMinutes < 1 || p.WindowMinutes > 120 {
		bad("window_minutes", p.WindowMinutes, "1 to 120")
	}
	if p.MinDemand < 1 || p.MinDemand > 10000 {
		bad("min_demand", p.MinDemand, "1 to 10000")
	}
	if p.HysteresisPercent < 0 || p.HysteresisPercent > 90 {
		bad("hysteresis_percent", p.HysteresisPercent, "0 to 90")
	}
	if len(p.Steps) > 20 {
		bad("steps", len(p.Steps), "at most 20 steps")
	}
	for i, s := range p.Steps {
		// Written so that NaN fails too.
		if !(s.Ratio > 1 && s.Ratio <= 1000) {
			bad(fmt.Sprintf("steps[%d].ratio", i), s.Ratio, "above 1, at most 1000")
		}
		if !(s.Multiplier > 1 && s.Multiplier <= maxSurgeCap) {
			bad(fmt.Sprintf("steps[%d].multiplier", i), s.Multiplier, fmt.Sprintf("above 1, at most %g", float64(maxSurgeCap)))
		}
		if i > 0 && !(s.Ratio > p.Steps[i-1].Ratio && s.Multiplier > p.Steps[i-1].Multiplier) {
			bad(fmt.Sprintf("steps[%d]", i), fmt.Sprintf("%+v", s), "ratio and multiplier above the step before")
		}
	}
	return errors.Join(errs...)
}

// Window is how far back demand counts (0 when the city never surges).
func (p SurgePolicy) Window() time.Duration { return time.Duration(p.WindowMinutes) * time.Minute }

// Level is the step a market is on after its load was measured, from the step it was on
// (prev, -1 for none): the highest step the load reaches, or, when that is lower than prev,
// the highest step up to prev whose hold threshold the load still reaches. -1 is no surge.
func (p SurgePolicy) Level(prev, supply, demand int) int {
	if demand < p.MinDemand || demand <= 0 {
		return -1
	}
	ratio := float64(demand) / float64(max(supply, 1))
	level := -1
	for i, s := range p.Steps {
		if ratio >= s.Ratio {
			level = i
		}
	}
	prev = min(prev, len(p.Steps)-1)
	for i := prev; i > level; i-- {
		if ratio*100 >= p.Steps[i].Ratio*float64(100-p.HysteresisPercent) {
			return i
		}
	}
	return level
}

// Multiplier is the surge of a step, capped by the tariff: 1 for level -1.
func (t Tariff) Multiplier(level int) float64 {
	if level < 0 || level >= len(t.Surge.Steps) {
		return 1
	}
	return min(t.Surge.Steps[level].Multiplier, t.SurgeCap, maxSurgeCap)
}

// MarketLoad is a pickup's market as the location index and the demand counter see it.
type MarketLoad struct {
	// Cell names the market (an H3 cell: the pickup's, with its ring around it).
	Cell string
	// Supply is the available drivers there now; Demand the booking requests in the window.
	Supply, Demand int
	// Level is the step the market was last set to (-1 for none, or when it has expired).
	Level int
}

// Market measures supply and demand around a pickup and keeps each market's surge step, shared
// by every process, so the price is smoothed the same wherever a quote is asked for and the
// live map can colour it. All methods are safe for concurrent use.
type Market interface {
	// Load measures the market of a pickup, counting demand over the last window.
	Load(ctx context.Context, lat, lng float64, window time.Duration, now time.Time) (MarketLoad, error)
	// SetLevel records the market's step and the surge it means, for ttl.
	SetLevel(ctx context.Context, cell string, level int, surge float64, ttl time.Duration) error
	// AddDemand counts one booking request (id) at a pickup at a time.
	AddDemand(ctx context.Context, id string, lat, lng float64, at time.Time) error
}

// surge measures the pickup's market and moves its step: the multiplier that prices a quote or
// a booking made without one. A city without steps, a Service without a Market, or a market
// that cannot be measured (a backing service away) is priced without surge: a failure never
// makes a customer pay more.
func (s *Service) surge(ctx context.Context, t Tariff, p Place) float64 {
	if s.opts.Market == nil || len(t.Surge.Steps) == 0 {
		return 1
	}
	now := s.opts.Now()
	type loaded struct {
		l   MarketLoad
		err error
	}
	// A booking needs MySQL only: with Redis slow or away it is priced without surge after
	// marketWait rather than waiting out the client's timeouts (TestFaultBlackhole). The
	// look-up's goroutine ends by the client's own timeouts.
	done := make(chan loaded, 1)
	go func() {
		l, err := s.opts.Market.Load(context.WithoutCancel(ctx), p.Lat, p.Lng, t.Surge.Window(), now)
		done <- loaded{l, err}
	}()
	var load MarketLoad
	select {
	case r := <-done:
		if r.err != nil {
			s.opts.Log.Warn().Err(r.err).Str("city", t.City).Msg("measure the pickup's market (priced without surge)")
			return 1
		}
		load = r.l
	case <-time.After(marketWait):
		return 1
	case <-ctx.Done():
		return 1
	}
	level := t.Surge.Level(load.Level, load.Supply, load.Demand)
	m := t.Multiplier(level)
	if level != load.Level || level >= 0 {
		// Kept for two windows: a market nobody asks about forgets its step.
		s.behind("set the market's surge step", func(ctx context.Context) error {
			return s.opts.Market.SetLevel(ctx, load.Cell, level, m, 2*t.Surge.Window())
		})
	}
	return m
}

// marketWait bounds how long pricing waits for the market's figures.
const marketWait = 300 * time.Millisecond

// behind runs a write to the market and waits for it at most marketWait: with Redis slow or
// away the request goes on without it (losing one costs only the accuracy of later quotes), and
// the write's goroutine ends by the client's own timeouts. A failed write is logged as what.
func (s *Service) behind(what string, f func(context.Context) error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f(ctx); err != nil {
			s.opts.Log.Warn().Err(err).Msg(what)
		}
	}()
	select {
	case <-done:
	case <-time.After(marketWait):
	}
}
