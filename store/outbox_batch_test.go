//go:build !prod

package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// batchFake publishes whole batches; every other batch fails half way through.
type batchFake struct {
	fakePublisher
	batches int
}

func (p *batchFake) PublishBatch(_ context.Context, es []dispatch.Event) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.batches++
	if p.batches%2 == 1 && len(es) > 1 {
		n := len(es) / 2
		p.got = append(p.got, es[:n]...)
		return n, errors.New("broker away half way")
	}
	p.got = append(p.got, es...)
	return len(es), nil
}

// TestOutboxBatchPublisher: a publisher that takes batches gets them (one round trip for many
// events: the relay kept up with a slow Redis only so), and a batch failing part way leaves the
// rest for the next round, in order, nothing lost.
func TestOutboxBatchPublisher(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		changes := someHistory(t, e)
		order := outboxOrder(t, e)
		pub := &batchFake{}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.db.RunRelay(ctx, pub, 5*time.Millisecond) }()
		deadline := time.Now().Add(10 * time.Second)
		for e.count(t, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL") > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("RunRelay after cancel: got %v, want nil", err)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"); n != 0 {
			t.Fatalf("unpublished outbox rows: got %d, want 0", n)
		}
		if got := firstSeen(pub.events()); !reflect.DeepEqual(got, order) {
			t.Errorf("first deliveries: got %v, want all in order %v", got, order)
		}
		if pub.calls != 0 || pub.batches >= changes {
			t.Errorf("%d single publishes and %d batches for %d events: want batches only, fewer than the events", pub.calls, pub.batches, changes)
		}
	})
}
