package dispatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/rs/zerolog"
)

// awayLocator is the index with Redis gone for the best-effort steps: SetState and Release fail
// as geo says so (Unavailable).
type awayLocator struct{ dispatch.Locator }

var errAway = &dispatch.Error{Kind: dispatch.Unavailable, Msg: "redis unavailable"}

func (awayLocator) SetState(context.Context, string, dispatch.DriverState) error { return errAway }
func (awayLocator) Release(context.Context, string, string) error                { return errAway }

// TestDroppedErrorsLogged: the Locator errors a call goes on without are logged at warn, saying
// what was being done and for whom.
func TestDroppedErrorsLogged(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	var logs bytes.Buffer
	svc := dispatch.NewService(r.db, awayLocator{r.index}, r.notes, dispatch.ServiceOptions{Now: r.clock.Now, Log: zerolog.New(&logs)})
	m := r.matcher(nil)
	r.driver("d1", north(200), baseLng)
	b := r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if _, err := svc.Accept(ctx, driverActor("d1"), r.notes.lastOffer("d1")); err != nil {
		t.Fatalf("accept: got %v, want it done without the lease's release", err)
	}
	if _, err := svc.Arrive(ctx, driverActor("d1"), b.ID); err != nil {
		t.Fatalf("arrive: got %v, want it done without the driver's state", err)
	}
	want := []struct{ msg, key, value string }{
		{"mark the driver assigned", "booking", b.ID},
		{"release the driver's lease after accepting", "driver", "d1"},
		{"set the driver's state after a trip step", "booking", b.ID},
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d log lines, want %d: %s", len(lines), len(want), logs.String())
	}
	for i, w := range want {
		var l map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &l); err != nil {
			t.Fatal(err)
		}
		msg, _ := l["message"].(string)
		if l["level"] != "warn" || !strings.HasPrefix(msg, w.msg) || l[w.key] != w.value || l["error"] != errAway.Error() {
			t.Errorf("log line %d: got %s, want a warning %q with %s=%s and the error", i, lines[i], w.msg, w.key, w.value)
		}
	}
}
