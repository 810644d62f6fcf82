package loadtest

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestCheckLoopback(t *testing.T) {
	for _, tc := range []struct {
		target string
		ok     bool
	}{
		{"http://127.0.0.1:8080", true},
		{"ws://127.0.0.1:8080/v1/ws", true},
		{"http://127.0.0.9:8080", true},
		{"http://localhost:8080", true},
		{"http://[::1]:8080", true},
		{"http://10.0.0.5:8080", false},
		{"http://example.com", false},
		{"http://0.0.0.0:8080", false},
		{"http://127.0.0.1.example.com", false},
	} {
		t.Run(tc.target, func(t *testing.T) {
			err := CheckLoopback(tc.target)
			if (err == nil) != tc.ok {
				t.Errorf("CheckLoopback(%q) = %v; want ok %v", tc.target, err, tc.ok)
			}
		})
	}
}

func TestPeakRefusesWhatItMustNotDo(t *testing.T) {
	secret := []byte(strings.Repeat("s", 32))
	steady, _ := NewProfile(Steady, 1, time.Second)
	for _, tc := range []struct {
		name string
		o    PeakOptions
		want string
	}{
		{"remote target", PeakOptions{Target: "http://192.0.2.1:8080", Secret: secret, Duration: time.Second, Demand: steady, AcceptP: 1}, "loopback"},
		{"remote metrics", PeakOptions{MetricsURL: "http://192.0.2.1:9090/metrics", Secret: secret, Duration: time.Second, Demand: steady, AcceptP: 1}, "loopback"},
		{"no secret", PeakOptions{Duration: time.Second, Demand: steady, AcceptP: 1}, "secret"},
		{"too many drivers", PeakOptions{Secret: secret, Drivers: MaxDrivers + 1, Duration: time.Second, Demand: steady, AcceptP: 1}, "drivers"},
		{"too long", PeakOptions{Secret: secret, Duration: 2 * time.Hour, Demand: steady, AcceptP: 1}, "duration"},
		{"probabilities", PeakOptions{Secret: secret, Duration: time.Second, Demand: steady, AcceptP: 0.8, DeclineP: 0.3}, "accept"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.defaults()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v; want an error about %q", err, tc.want)
			}
		})
	}
}

func TestProfileRates(t *testing.T) {
	minute := time.Minute
	flash, err := NewProfile(Flash, 20, minute)
	if err != nil {
		t.Fatal(err)
	}
	morning, _ := NewProfile(Morning, 10, 5*minute)
	steady, _ := NewProfile(Steady, 5, minute)
	long, _ := NewProfile(Flash, 2, 10*minute)
	for _, tc := range []struct {
		name string
		p    Profile
		at   time.Duration
		want float64
	}{
		{"steady", steady, 30 * time.Second, 5},
		{"flash before", flash, 19 * time.Second, 20},
		{"flash peak", flash, 25 * time.Second, 200},
		{"flash after", flash, 41 * time.Second, 20},
		{"long flash lasts one minute", long, 3*minute + 59*time.Second, 20},
		{"long flash over", long, 4*minute + 21*time.Second, 2},
		{"morning start", morning, 0, 10},
		{"morning ramp", morning, 30 * time.Second, 20},
		{"morning plateau", morning, 150 * time.Second, 30},
		{"morning end", morning, 5 * minute, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Rate(tc.at); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("Rate(%s) = %v; want %v", tc.at, got, tc.want)
			}
		})
	}
	if got, want := flash.Expected(), 20*60+180*20.0; math.Abs(got-want) > 1 {
		t.Errorf("flash Expected() = %v; want %v", got, want)
	}
	if _, err := NewProfile("lunch", 1, minute); err == nil {
		t.Error("NewProfile(lunch): got nil error; want one")
	}
}

func TestSummarise(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(100 - i) // 100..1, unsorted
	}
	q := Summarise(xs)
	if q.N != 100 || q.P50 != 50 || q.P90 != 90 || q.P99 != 99 || q.Max != 100 {
		t.Errorf("Summarise(1..100) = %+v; want n 100, p50 50, p90 90, p99 99, max 100", q)
	}
	if q := Summarise(nil); q.N != 0 || q.P99 != 0 {
		t.Errorf("Summarise(nil) = %+v; want zero", q)
	}
}

func TestSeriesMergeAndLatencies(t *testing.T) {
	start := time.Unix(1_700_000_000, 0)
	parent := NewSeries(start)
	child := NewSeries(start)
	parent.Add(KindLocations, start.Add(500*time.Millisecond), 3)
	child.Add(KindLocations, start.Add(1500*time.Millisecond), 4)
	child.Add(KindOffers, start.Add(2*time.Second), 1)
	parent.Booked("bk1", "c1", start.Add(time.Second), false)
	parent.Booked("bk2", "c2", start.Add(time.Second), false) // never offered
	parent.Booked("bk3", "c3", start.Add(time.Second), true)  // for later: not expected to be
	child.Offered("bk1", start.Add(2500*time.Millisecond))
	other := NewSeries(start)
	other.Offered("bk1", start.Add(3*time.Second)) // later: not the first offer
	parent.Merge(child.Data())
	parent.Merge(other.Data())
	if got := parent.Total(KindLocations); got != 7 {
		t.Errorf("locations: got %d, want 7", got)
	}
	d := parent.Data()
	if got := d.Counts["locations"]; len(got) != 3 || got[0] != 3 || got[1] != 4 {
		t.Errorf("locations per second: got %v, want [3 4 0]", got)
	}
	ls, never := parent.offerLatencies()
	if len(ls) != 1 || ls[0].ms != 1500 || ls[0].offerAt != 2 || never != 1 {
		t.Errorf("latencies: got %+v, %d never offered; want 1500 ms at second 2, 1 never offered", ls, never)
	}
	if c, ok := parent.CustomerOf("bk1"); !ok || c != "c1" {
		t.Errorf("CustomerOf(bk1) = %q, %v; want c1, true", c, ok)
	}
}

func TestParseMetricsAndQuantile(t *testing.T) {
	text := `# HELP dispatch_offers_sent_total Offers sent to drivers.
# TYPE dispatch_offers_sent_total counter
dispatch_offers_sent_total 42
dispatch_locations_rejected_total{reason="too_fast"} 2
dispatch_locations_rejected_total{reason="out_of_order"} 3
dispatch_solve_seconds_bucket{le="0.001"} 50
dispatch_solve_seconds_bucket{le="0.002"} 90
dispatch_solve_seconds_bucket{le="0.004"} 100
dispatch_solve_seconds_bucket{le="+Inf"} 100
dispatch_solve_seconds_sum 0.1
dispatch_solve_seconds_count 100
`
	m, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sums["dispatch_offers_sent_total"]; got != 42 {
		t.Errorf("offers: got %v, want 42", got)
	}
	if got := m.Sums["dispatch_locations_rejected_total"]; got != 5 {
		t.Errorf("rejected summed over reasons: got %v, want 5", got)
	}
	for _, tc := range []struct{ q, want float64 }{{0.5, 0.001}, {0.7, 0.0015}, {0.95, 0.003}} {
		if got, ok := m.Quantile("dispatch_solve_seconds", tc.q); !ok || math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("Quantile(%v) = %v, %v; want %v", tc.q, got, ok, tc.want)
		}
	}
	if _, ok := m.Quantile("dispatch_absent_seconds", 0.5); ok {
		t.Error("Quantile of an absent histogram: got ok; want not ok")
	}
	before, _ := ParseMetrics(strings.NewReader("dispatch_offers_sent_total 40\n"))
	if got := m.Minus(before).Sums["dispatch_offers_sent_total"]; got != 2 {
		t.Errorf("Minus: got %v, want 2", got)
	}
}

func TestDistrictsInsideTheCity(t *testing.T) {
	for _, c := range []City{Bengaluru, Delhi, Mumbai} {
		ds := c.Districts(20)
		if len(ds) != 20 {
			t.Fatalf("%s: got %d districts, want 20", c.Name, len(ds))
		}
		for _, d := range ds {
			if d.MinLat >= d.MaxLat || d.MinLng >= d.MaxLng {
				t.Errorf("%s %s: empty box %+v", c.Name, d.Name, d)
			}
			midLat, midLng := (d.MinLat+d.MaxLat)/2, (d.MinLng+d.MaxLng)/2
			if midLat < c.MinLat || midLat > c.MaxLat || midLng < c.MinLng || midLng > c.MaxLng {
				t.Errorf("%s %s: centre %.4f,%.4f outside the city", c.Name, d.Name, midLat, midLng)
			}
		}
	}
}

func TestPlanSpreadsSockets(t *testing.T) {
	for _, tc := range []struct {
		drivers, procs, sources int
		wantProcs, wantSources  int
	}{
		{2000, 0, 0, 0, 0},
		{14_000, 0, 0, 0, 0},
		{50_000, 0, 0, 4, 2},
		{100, 2, 3, 2, 3},
	} {
		o := PeakOptions{Drivers: tc.drivers, Procs: tc.procs, Sources: tc.sources}
		procs, sources := o.plan()
		if procs != tc.wantProcs || len(sources) != tc.wantSources {
			t.Errorf("plan(%d drivers, %d, %d) = %d procs, %v; want %d procs, %d sources",
				tc.drivers, tc.procs, tc.sources, procs, sources, tc.wantProcs, tc.wantSources)
		}
		if len(sources) > 0 && sources[0] != "127.0.0.2" {
			t.Errorf("first source %s; want 127.0.0.2", sources[0])
		}
	}
}
