package main

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/loadtest"
)

// TestIngestReadsThroughTheAPI: `loadtest ingest`, a client of the contract only, times its
// probes and checks every driver's last point through the REST API (GET /v1/drivers/{id} and
// /v1/drivers/nearby), as loadtest/ingest.sh runs it (unthrottled): its drivers, registered
// through the API, go online without an error frame, the points they send are seen, and every
// driver's stored position is its last point.
func TestIngestReadsThroughTheAPI(t *testing.T) {
	s := startServer(t, "real", map[string]string{"DISPATCH_RATE_PER_USER": "0", "DISPATCH_LOG_LEVEL": "info"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := loadtest.Ingest(ctx, loadtest.IngestOptions{URL: "ws://" + s.http + "/v1/ws", Secret: []byte(testSecret),
		Drivers: 20, Rate: 4, Duration: 2 * time.Second, Warmup: time.Second, Probes: 20,
		IDPrefix: fmt.Sprintf("ing%d", time.Now().UnixNano()), Seed: 1}, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep.Markdown())
	if rep.Connected != 20 || rep.Sent == 0 {
		t.Fatalf("connected %d, sent %d: want 20 and some points", rep.Connected, rep.Sent)
	}
	if rep.ErrorFrames != 0 {
		t.Errorf("error frames: got %d, want 0 (every driver registered and online)", rep.ErrorFrames)
	}
	if rep.Probes == 0 {
		t.Errorf("probes seen in a nearby query: got 0 (%d late), want some", rep.ProbesLate)
	}
	if rep.Checked != 20 || rep.Lost != 0 {
		t.Errorf("check: got %d lost of %d (%s), want 0 of 20", rep.Lost, rep.Checked, rep.LostExample)
	}
}
