package loadtest

import (
	"bytes"
	"strings"
	"testing"
)

// The comparison sets the runs side by side with the change against the first.
func TestWriteComparison(t *testing.T) {
	batch := &Result{Latency: Latencies{Pickup: Distances{N: 10, Mean: 800, P95: 2000}, BookingToOffer: Quantiles{P50: 1500, P99: 2400}},
		MySQL: &MySQLCheck{}}
	greedy := &Result{Latency: Latencies{Pickup: Distances{N: 10, Mean: 1000, P95: 2500}, BookingToOffer: Quantiles{P50: 1400, P99: 2300}},
		MySQL: &MySQLCheck{}}
	var out bytes.Buffer
	if err := WriteComparison(&out, []Compared{{Label: "batch", Dir: "a", Result: batch}, {Label: "greedy", Dir: "b", Result: greedy}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| | batch | greedy |\n|---|---:|---:|", "| pickup distance, mean | 800.0 m | 1000.0 m (+25.0%) |", "| pickup distance, p95 | 2000.0 m | 2500.0 m (+25.0%) |",
		"| invariant violations (MySQL) | 0 | 0 |"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("comparison lacks %q:\n%s", want, out.String())
		}
	}
	if err := WriteComparison(&out, []Compared{{Label: "one", Result: batch}}); err == nil {
		t.Error("one run: got nil, want an error")
	}
}
