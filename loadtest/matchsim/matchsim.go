// Package matchsim is a seeded, discrete-time simulation of the matching windows of one city
// (Bengaluru). It replays one stream of bookings and one stream of drivers coming online under
// three policies and reports their pickup distances:
//
//   - greedy-nearest: each booking, at its arrival, takes the nearest free driver;
//   - batch-optimal: the bookings of each window go to dispatch.Assign together;
//   - batch-greedy: the same windows through dispatch.AssignGreedy, the engine's fallback.
//
// It exists to check the product claim that batching cuts pickup distance, and must not be
// used by the engine: it owns no I/O, no clock and no goroutines, and a Run is a pure function
// of its Options.
//
// # The model
//
// Bookings arrive as a Poisson process (Options.PerSecond) at points drawn around ten demand
// hotspots, a quarter of them anywhere in the box (city.go). Time runs in windows of
// Options.Window; greedy matches each booking of a window in arrival order against the pool as
// it stood at the window's start, batch matches them all at its end.
//
// Supply is held at Options.Ratio free drivers per open booking at the moment of matching: at
// the start of each window that has bookings, the free pool is topped up from the driver
// stream, or trimmed by logging off the drivers idle longest, to round(Ratio x bookings in the
// window). A matched driver leaves the pool for the rest of the run: trips last hours, longer
// than a run. The drivers who become free during the run are a mix (Options.Returning) of
// drivers ending trips booked before it began, at drop points drawn like pickups (hourly hires
// are mostly round trips), and drivers coming online from home, spread much wider than demand.
// Drivers left unmatched stay where they are for the next window, which is what drains supply
// around hotspots and makes a window's choices matter to the next. Every policy matches every
// booking in its window (Ratio >= 1), so all policies take the same number of new drivers each
// window and get the same ones, in the same order: the same arrival stream, the same drivers.
//
// The cost is the pickup distance in haversine metres. Road distance in Bengaluru is longer
// (a detour factor of about 1.3 to 1.4), but one factor for the whole city changes no ranking
// and no percentage. The batch wait for the end of the window (1 s on average with 2 s
// windows) is not counted.
//
// Batch candidates are a booking's Options.Candidates nearest free drivers within
// Options.RadiusM (widened at once for a booking with none). While some bookings have no
// driver, their radius and candidate count double and the whole window is solved again, until
// all are matched.
//
// # What decides the result
//
// Batching can only help where bookings of one window compete for the same drivers, so the cut
// grows with bookings per window: with one booking a window the policies are identical, with
// a few the mean cut is a few percent. The first radius decides the p95: when it is shorter
// than many actual pickups (here about 40% of greedy's pickups are over 5 km) the optimiser
// cannot see the trades that shorten the longest ones, and the p95 cut mostly disappears. The
// geography of supply matters too: the further free drivers are from demand, the more of the
// p95 is distance that no matching policy can remove.
package matchsim

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// Options describe one scenario. Zero fields take the defaults given.
type Options struct {
	// Seed fixes both streams, bookings and drivers. Same seed, same Result.
	Seed uint64
	// Ratio is free drivers per open booking at the moment of matching, at least 1. Default 1.5.
	Ratio float64
	// Bookings is how many bookings are measured. Default 20,000.
	Bookings int
	// Warmup is how many bookings are played first and not measured, so that the pool has
	// drained to its steady state. Default 5,000.
	Warmup int
	// Window is the batch window. Default 2 s.
	Window time.Duration
	// PerSecond is the mean rate of bookings city-wide. Default 10: 20 bookings a window.
	PerSecond float64
	// RadiusM is the first batch round's candidate radius in metres. Default 10,000: it has to
	// reach the drivers bookings end up with, and greedy's p75 pickup is about 7 km here (see
	// "What decides the result").
	RadiusM float64
	// Candidates is the first batch round's number of candidates per booking. Default 20.
	Candidates int
	// Returning is the share of drivers becoming free who are ending a trip (at its drop
	// point) rather than coming online from home. Default 0.5; set it below 0 for none.
	Returning float64
}

func (o Options) withDefaults() Options {
	if o.Ratio == 0 {
		o.Ratio = 1.5
	}
	if o.Bookings == 0 {
		o.Bookings = 20000
	}
	if o.Warmup == 0 {
		o.Warmup = 5000
	}
	if o.Window == 0 {
		o.Window = 2 * time.Second
	}
	if o.PerSecond == 0 {
		o.PerSecond = 10
	}
	if o.RadiusM == 0 {
		o.RadiusM = 10000
	}
	if o.Candidates == 0 {
		o.Candidates = 20
	}
	if o.Returning == 0 {
		o.Returning = 0.5
	}
	return o
}

// Validate reports what is wrong with o once defaults are applied.
func (o Options) Validate() error {
	o = o.withDefaults()
	var errs []error
	if math.IsNaN(o.Ratio) || o.Ratio < 1 || o.Ratio > 100 {
		errs = append(errs, fmt.Errorf("ratio %v: want 1 to 100 drivers per booking", o.Ratio))
	}
	if o.Bookings < 1 || o.Warmup < 0 {
		errs = append(errs, fmt.Errorf("bookings %d, warmup %d: want at least 1 and 0", o.Bookings, o.Warmup))
	}
	if o.Window <= 0 {
		errs = append(errs, fmt.Errorf("window %v: want > 0", o.Window))
	}
	if !(o.PerSecond > 0) || math.IsInf(o.PerSecond, 1) {
		errs = append(errs, fmt.Errorf("per second %v: want > 0", o.PerSecond))
	}
	if !(o.RadiusM > 0) || math.IsInf(o.RadiusM, 1) || o.Candidates < 1 {
		errs = append(errs, fmt.Errorf("radius %v m, candidates %d: want > 0", o.RadiusM, o.Candidates))
	}
	return errors.Join(errs...)
}

// Stats are pickup distances of the measured bookings under one policy.
type Stats struct {
	Matched                 int
	MeanM, P50M, P95M, MaxM float64
}

// Result is one scenario played under each policy.
type Result struct {
	Options Options // as played, defaults filled in
	// Windows is the number of measured windows that had bookings; DriversPerBooking the
	// supply ratio the matching saw, over those windows (Ratio up to rounding).
	Windows           int
	DriversPerBooking float64
	Greedy            Stats // greedy-nearest in arrival order
	Batch             Stats // dispatch.Assign per window
	Fallback          Stats // dispatch.AssignGreedy per window
}

// Cut is the percentage by which b is below g: positive when b is better.
func Cut(g, b float64) float64 { return 100 * (g - b) / g }

// Run plays the scenario o under each policy. It panics if o is not valid (see Validate).
// It takes about a second for the defaults.
func Run(o Options) Result {
	if err := o.Validate(); err != nil {
		panic("matchsim: " + err.Error())
	}
	o = o.withDefaults()
	sc := newScenario(o)
	r := Result{Options: o}
	r.Greedy, r.Windows, r.DriversPerBooking = sc.play(greedyNearest)
	r.Batch, _, _ = sc.play(batch(dispatch.Assign))
	r.Fallback, _, _ = sc.play(batch(dispatch.AssignGreedy))
	return r
}

// Table runs o at each ratio and returns a Markdown table of mean and p95 pickup distances,
// in metres, per policy and the cuts of batch-optimal against greedy-nearest (negative when
// batch is worse), under a caption giving the scenario. It takes about a second a ratio.
func Table(ratios []float64, o Options) string {
	o = o.withDefaults()
	var b strings.Builder
	fmt.Fprintf(&b, "Seed %d, %d bookings measured after %d, %.3g bookings/s (%.3g per %v window), "+
		"%.0f%% of new free drivers ending a trip, batch radius %.0f m x %d candidates; "+
		"pickup distance in haversine metres.\n\n",
		o.Seed, o.Bookings, o.Warmup, o.PerSecond, o.PerSecond*o.Window.Seconds(), o.Window,
		100*max(o.Returning, 0), o.RadiusM, o.Candidates)
	b.WriteString("| drivers per booking | greedy mean | greedy p95 | batch mean | batch p95 | mean cut | p95 cut | fallback mean | fallback p95 | matched (greedy / batch) |\n")
	b.WriteString("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, ratio := range ratios {
		o.Ratio = ratio
		r := Run(o)
		fmt.Fprintf(&b, "| %.2f | %.0f | %.0f | %.0f | %.0f | %.1f%% | %.1f%% | %.0f | %.0f | %d / %d |\n",
			r.DriversPerBooking, r.Greedy.MeanM, r.Greedy.P95M, r.Batch.MeanM, r.Batch.P95M,
			Cut(r.Greedy.MeanM, r.Batch.MeanM), Cut(r.Greedy.P95M, r.Batch.P95M),
			r.Fallback.MeanM, r.Fallback.P95M, r.Greedy.Matched, r.Batch.Matched)
	}
	return b.String()
}

// Stream identifiers: the bookings and the drivers are independent streams of one seed.
const (
	bookingStream = 0x626f6f6b // "book"
	driverStream  = 0x64727672 // "drvr"
)

// scenario is the arrival stream, cut into windows, shared by every policy.
type scenario struct {
	o       Options
	windows [][]point // bookings of each window, in arrival order
}

func newScenario(o Options) *scenario {
	rng := rand.New(rand.NewPCG(o.Seed, bookingStream))
	s := newSampler(rng)
	sc := &scenario{o: o}
	t := 0.0
	for i := 0; i < o.Warmup+o.Bookings; i++ {
		t += rng.ExpFloat64() / o.PerSecond
		w := int(t / o.Window.Seconds())
		for len(sc.windows) <= w {
			sc.windows = append(sc.windows, nil)
		}
		sc.windows[w] = append(sc.windows[w], s.booking())
	}
	return sc
}

// policy matches one window: bookings in arrival order, the free drivers, oldest online first.
// It returns the driver of each booking, or -1.
type policy func(bookings, drivers []point, o Options) []int

// play runs the scenario under one policy and returns the stats of the measured bookings,
// the number of measured windows and the drivers per booking they saw.
func (sc *scenario) play(match policy) (Stats, int, float64) {
	o := sc.o
	stream := newSampler(rand.New(rand.NewPCG(o.Seed, driverStream)))
	var pool []point // free drivers, in the order they came online
	var dist []float64
	windows, offered, open := 0, 0, 0
	seen := 0 // bookings played so far
	for _, bs := range sc.windows {
		if len(bs) == 0 {
			continue
		}
		target := int(math.Round(o.Ratio * float64(len(bs))))
		if len(pool) > target {
			pool = pool[len(pool)-target:] // the longest idle log off
		}
		for len(pool) < target {
			pool = append(pool, stream.driver(max(o.Returning, 0)))
		}
		if seen+len(bs) > o.Warmup {
			windows++
			offered += len(pool)
			open += len(bs)
		}
		got := match(bs, pool, o)
		used := make([]bool, len(pool))
		for i, j := range got {
			if j < 0 {
				continue
			}
			used[j] = true
			if seen+i >= o.Warmup {
				dist = append(dist, distanceM(bs[i], pool[j]))
			}
		}
		seen += len(bs)
		kept := pool[:0]
		for j, d := range pool {
			if !used[j] {
				kept = append(kept, d)
			}
		}
		pool = kept
	}
	return newStats(dist), windows, float64(offered) / float64(max(open, 1))
}

func newStats(d []float64) Stats {
	if len(d) == 0 {
		return Stats{}
	}
	slices.Sort(d)
	sum := 0.0
	for _, x := range d {
		sum += x
	}
	// Nearest-rank percentiles.
	rank := func(p float64) float64 { return d[max(0, int(math.Ceil(p*float64(len(d))))-1)] }
	return Stats{Matched: len(d), MeanM: sum / float64(len(d)), P50M: rank(0.5), P95M: rank(0.95), MaxM: d[len(d)-1]}
}

// greedyNearest gives each booking, in arrival order, the nearest driver still free.
func greedyNearest(bookings, drivers []point, _ Options) []int {
	out := make([]int, len(bookings))
	used := make([]bool, len(drivers))
	for i, b := range bookings {
		best, bestD := -1, math.Inf(1)
		for j, d := range drivers {
			if used[j] {
				continue
			}
			if x := distanceM(b, d); x < bestD {
				best, bestD = j, x
			}
		}
		out[i] = best
		if best >= 0 {
			used[best] = true
		}
	}
	return out
}

// cityM is more than the diagonal of the box: a radius this big reaches every driver.
const cityM = 50000

// batch matches a window with solve. Each booking's candidates are its nearest drivers within a
// radius, at most a number of them; while some bookings are left without a driver and drivers
// are free, those bookings' radius and candidate count double and the whole window is solved
// again, so a driver matched in an earlier round can still go to a leftover booking if that is
// cheaper overall. A leftover booking's candidates end as every driver, so with at least as many
// drivers as bookings every booking is matched.
func batch(solve func(rows, cols int, edges []dispatch.Edge) []int) policy {
	return func(bookings, drivers []point, o Options) []int {
		type row struct {
			dist   []float64 // to each driver
			order  []int     // drivers, nearest first
			radius float64
			k, n   int // candidate cap and count: the first n of order
		}
		rows := make([]row, len(bookings))
		for i, b := range bookings {
			r := &rows[i]
			r.dist = make([]float64, len(drivers))
			r.order = make([]int, len(drivers))
			for j, d := range drivers {
				r.dist[j], r.order[j] = distanceM(b, d), j
			}
			slices.SortFunc(r.order, func(a, b int) int {
				if c := cmp.Compare(r.dist[a], r.dist[b]); c != 0 {
					return c
				}
				return a - b
			})
			r.radius, r.k = o.RadiusM, o.Candidates
		}
		// more widens r's candidates to the next driver beyond them, doubling its radius and
		// cap as often as that takes; false when r already has every driver.
		more := func(r *row) bool {
			for r.n < len(r.order) {
				if r.n < r.k && r.dist[r.order[r.n]] <= r.radius {
					for r.n < len(r.order) && r.n < r.k && r.dist[r.order[r.n]] <= r.radius {
						r.n++
					}
					return true
				}
				r.radius, r.k = 2*r.radius, 2*r.k
			}
			return false
		}
		for i := range rows {
			more(&rows[i])
		}
		var edges []dispatch.Edge
		for {
			edges = edges[:0]
			for i, r := range rows {
				for _, j := range r.order[:r.n] {
					edges = append(edges, dispatch.Edge{Row: i, Col: j, Cost: r.dist[j]})
				}
			}
			got := solve(len(bookings), len(drivers), edges)
			grew := false
			for i, j := range got {
				if j < 0 && more(&rows[i]) {
					grew = true
				}
			}
			if !grew {
				return got // all matched, or fewer drivers than bookings
			}
		}
	}
}
