package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Compared is one run of a comparison: its label and its report.
type Compared struct {
	Label  string
	Dir    string
	Result *Result
}

// ReadResult reads dir/report.json.
func ReadResult(dir string) (*Result, error) {
	b, err := os.ReadFile(filepath.Join(dir, "report.json"))
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return &r, nil
}

// WriteComparison writes the runs side by side in Markdown: pickup distances (what batch
// matching is for), booking-to-first-offer, throughput and the invariant, each run a column, and
// the change of the others against the first.
func WriteComparison(w io.Writer, runs []Compared) error {
	if len(runs) < 2 {
		return fmt.Errorf("compare: want at least two runs, got %d", len(runs))
	}
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# The same seeded load, side by side\n\n| |")
	for _, r := range runs {
		p(" %s |", r.Label)
	}
	p("\n|---|")
	for range runs {
		p("---:|")
	}
	p("\n")
	row := func(name string, f func(*Result) float64, unit string) {
		p("| %s |", name)
		base := f(runs[0].Result)
		for i, r := range runs {
			v := f(r.Result)
			if i == 0 || base == 0 {
				p(" %.1f%s |", v, unit)
				continue
			}
			p(" %.1f%s (%+.1f%%) |", v, unit, 100*(v-base)/base)
		}
		p("\n")
	}
	row("pickup distance, mean", func(r *Result) float64 { return r.Latency.Pickup.Mean }, " m")
	row("pickup distance, p95", func(r *Result) float64 { return r.Latency.Pickup.P95 }, " m")
	row("booking -> first offer, p50", func(r *Result) float64 { return r.Latency.BookingToOffer.P50 }, " ms")
	row("booking -> first offer, p99", func(r *Result) float64 { return r.Latency.BookingToOffer.P99 }, " ms")
	row("offers received", func(r *Result) float64 { return float64(r.Totals.OffersReceived) }, "")
	row("offers accepted", func(r *Result) float64 { return float64(r.Totals.OffersAccepted) }, "")
	row("trips completed", func(r *Result) float64 { return float64(r.Totals.BookingsCompleted) }, "")
	p("| invariant violations (MySQL) |")
	for _, r := range runs {
		if r.Result.MySQL != nil {
			p(" %d |", r.Result.MySQL.InvariantViolations)
		} else {
			p(" not checked |")
		}
	}
	p("\n\nReports:")
	for _, r := range runs {
		p(" %s `%s`;", r.Label, r.Dir)
	}
	p(" each was a run of `bin/loadtest peak` with the same flags and seed; only the server's matching mode differed.\n")
	return nil
}
