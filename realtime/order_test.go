package realtime

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
)

func TestLastVersions(t *testing.T) {
	l := newLastVersions(2)
	for i, tc := range []struct {
		key     string
		version int64
		want    bool
	}{
		{"bk:a", 1, true},
		{"bk:a", 3, true},
		{"bk:a", 2, false}, // older than 3
		{"bk:a", 3, false}, // not newer
		{"reg:a", 2, true}, // another audience keeps its own
		{"bk:a", 0, true},  // no version: passes, records nothing
		{"bk:a", 4, true},
		{"bk:b", 1, true}, // a third key: "bk:a", the oldest, is forgotten
		{"bk:a", 2, true},
	} {
		if got := l.newer(tc.key, tc.version); got != tc.want {
			t.Errorf("step %d: newer(%q, %d): got %v, want %v", i, tc.key, tc.version, got, tc.want)
		}
	}
}

// TestRouteDropsDuplicateAndStaleEvents: an audience takes each event once, and never one older
// than the last it took for the booking.
func TestRouteDropsDuplicateAndStaleEvents(t *testing.T) {
	h := NewHub(nil, NewBus(nil, "", geoGrid), nil, nil, nil, nil, Options{}, prometheus.NewRegistry(), zerolog.Nop())
	ctx := context.Background()
	routed := func() float64 {
		var m dto.Metric
		if err := h.m.dupEvents.Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	for i, tc := range []struct {
		channel, id string
		version     int64
		dropped     bool
	}{
		{"ev:bk:b1", "e1", 1, false},
		{"ev:bk:b1", "e3", 3, false},
		{"ev:bk:b1", "e2", 2, true},   // arrived after a newer one
		{"ev:bk:b1", "e3", 3, true},   // published again
		{"ev:reg:r1", "e2", 2, false}, // the dispatchers' audience had not seen it
		{"ev:bk:b1", "e4", 4, false},
	} {
		before := routed()
		p, _ := json.Marshal(dispatch.Event{ID: tc.id, Type: "booking", BookingID: "b1", Booking: dispatch.Booking{ID: "b1"}, Version: tc.version})
		h.route(ctx, tc.channel, p)
		if dropped := routed() > before; dropped != tc.dropped {
			t.Errorf("step %d (%s on %s, version %d): dropped %v, want %v", i, tc.id, tc.channel, tc.version, dropped, tc.dropped)
		}
	}
}
