package geo_test

import (
	"context"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// TestWriterCounts: the writer counts the points it indexed, with their time from socket read
// to indexed, and apart from them the points the index did not apply (older than the stored
// point, as from a driver's earlier socket).
func TestWriterCounts(t *testing.T) {
	x, _, _ := newIndex(t)
	reg := prometheus.NewRegistry()
	w := geo.NewWriter(x, geo.WriterOptions{}, reg, testLog(t))
	ctx := context.Background()
	now := time.Now()
	ms := now.UnixMilli()
	w.Submit("w1", pt(12.97, 77.59, ms), dispatch.DriverAvailable, now.Add(-time.Second))
	w.Submit("w2", pt(12.98, 77.59, ms), dispatch.DriverAvailable, now.Add(-time.Second))
	w.Flush(ctx)
	write(t, x, geo.Update{DriverID: "w1", Point: pt(12.97, 77.591, ms+2000)}) // another socket's newer point
	w.Submit("w1", pt(12.97, 77.5905, ms+1000), "", now)
	w.Flush(ctx)

	got := map[string]*dto.Metric{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		got[mf.GetName()] = mf.GetMetric()[0]
	}
	if n := got["dispatch_locations_indexed_total"].GetCounter().GetValue(); n != 2 {
		t.Errorf("indexed: got %v, want 2", n)
	}
	if n := got["dispatch_locations_stale_total"].GetCounter().GetValue(); n != 1 {
		t.Errorf("stale: got %v, want 1", n)
	}
	h := got["dispatch_location_index_seconds"].GetHistogram()
	if h.GetSampleCount() != 2 || h.GetSampleSum() < 2 {
		t.Errorf("socket read to indexed: got %d samples summing %.3f s, want 2 of a second or more", h.GetSampleCount(), h.GetSampleSum())
	}
}
