package matchsim

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// TestClaim checks the product claim on the default scenario: at 1.2 and 1.5 drivers per open
// booking, batch-optimal cuts the mean pickup distance by at least 10% and the p95 by at least
// 20% against greedy-nearest, with every booking matched under both.
func TestClaim(t *testing.T) {
	for _, ratio := range []float64{1.2, 1.5} {
		o := Options{Seed: 1, Ratio: ratio}
		r := Run(o)
		g, b := r.Greedy, r.Batch
		t.Logf("ratio %.2f: greedy mean %.0f m p95 %.0f m, batch mean %.0f m p95 %.0f m, cut %.1f%% / %.1f%%",
			r.DriversPerBooking, g.MeanM, g.P95M, b.MeanM, b.P95M, Cut(g.MeanM, b.MeanM), Cut(g.P95M, b.P95M))
		if g.Matched != r.Options.Bookings || b.Matched != r.Options.Bookings {
			t.Errorf("ratio %v: got %d matched by greedy and %d by batch, want %d each", ratio, g.Matched, b.Matched, r.Options.Bookings)
		}
		if got := Cut(g.MeanM, b.MeanM); got < 10 {
			t.Errorf("ratio %v: got a mean cut of %.1f%%, want >= 10%%", ratio, got)
		}
		if got := Cut(g.P95M, b.P95M); got < 20 {
			t.Errorf("ratio %v: got a p95 cut of %.1f%%, want >= 20%%", ratio, got)
		}
	}
}

func TestRunIsDeterministic(t *testing.T) {
	o := Options{Seed: 7, Ratio: 1.3, Bookings: 2000, Warmup: 500}
	a, b := Run(o), Run(o)
	if a != b {
		t.Fatalf("same options, got %+v then %+v", a, b)
	}
	o.Seed = 8
	if c := Run(o); c.Greedy == a.Greedy {
		t.Fatalf("seeds 7 and 8 got the same greedy stats %+v", c.Greedy)
	}
}

// window draws a matching window from the city model.
func window(rng *rand.Rand, bookings, drivers int) ([]point, []point) {
	s := newSampler(rng)
	bs, ds := make([]point, bookings), make([]point, drivers)
	for i := range bs {
		bs[i] = s.booking()
	}
	for i := range ds {
		ds[i] = s.driver(0.5)
	}
	return bs, ds
}

func total(t *testing.T, name string, bs, ds []point, got []int) float64 {
	t.Helper()
	used := make(map[int]bool)
	sum := 0.0
	for i, j := range got {
		if j < 0 {
			t.Fatalf("%s: booking %d got no driver, want every booking matched (%d drivers)", name, i, len(ds))
		}
		if used[j] {
			t.Fatalf("%s: driver %d given twice", name, j)
		}
		used[j] = true
		sum += distanceM(bs[i], ds[j])
	}
	return sum
}

// TestPoliciesOnOneWindow: on one window every policy matches every booking; on the complete
// candidate graph batch-optimal is never longer in total than greedy-nearest or batch-greedy;
// with one booking in the window batching changes nothing.
func TestPoliciesOnOneWindow(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	o := Options{}.withDefaults()
	complete := o
	complete.RadiusM, complete.Candidates = cityM, 1<<20
	for n := 0; n < 200; n++ {
		nb := 1 + rng.IntN(40)
		bs, ds := window(rng, nb, nb+rng.IntN(2*nb+1))
		greedy := total(t, "greedy", bs, ds, greedyNearest(bs, ds, o))
		total(t, "batch", bs, ds, batch(dispatch.Assign)(bs, ds, o))
		total(t, "fallback", bs, ds, batch(dispatch.AssignGreedy)(bs, ds, o))
		opt := total(t, "batch complete", bs, ds, batch(dispatch.Assign)(bs, ds, complete))
		fb := total(t, "fallback complete", bs, ds, batch(dispatch.AssignGreedy)(bs, ds, complete))
		if opt > greedy+1e-6 || opt > fb+1e-6 {
			t.Fatalf("window %d (%d bookings, %d drivers): got batch %.0f m, greedy %.0f m, fallback %.0f m; want batch <= both",
				n, len(bs), len(ds), opt, greedy, fb)
		}
		if nb == 1 {
			if g, b := greedyNearest(bs, ds, o)[0], batch(dispatch.Assign)(bs, ds, o)[0]; g != b {
				t.Fatalf("window %d, one booking: got driver %d from batch, %d from greedy, want the same", n, b, g)
			}
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		o    Options
		ok   bool
	}{
		{"defaults", Options{}, true},
		{"ratio below 1", Options{Ratio: 0.9}, false},
		{"ratio NaN", Options{Ratio: math.NaN()}, false},
		{"negative window", Options{Window: -time.Second}, false},
		{"negative bookings", Options{Bookings: -1}, false},
		{"negative rate", Options{PerSecond: -1}, false},
		{"infinite radius", Options{RadiusM: math.Inf(1)}, false},
		{"no returning drivers", Options{Returning: -1}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.o.Validate(); (err == nil) != tt.ok {
				t.Fatalf("got %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestTable(t *testing.T) {
	got := Table([]float64{1, 2}, Options{Seed: 1, Bookings: 500, Warmup: 100})
	lines := strings.Split(strings.TrimSpace(got), "\n")
	if len(lines) != 6 || !strings.HasPrefix(lines[2], "| drivers per booking") || !strings.HasPrefix(lines[4], "| 1.00 |") {
		t.Fatalf("got\n%s\nwant a caption, a header and 2 rows", got)
	}
}
