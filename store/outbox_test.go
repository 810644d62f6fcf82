//go:build !prod

package store_test

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// fakePublisher records events; failEvery > 0 makes every failEvery-th call fail.
type fakePublisher struct {
	mu        sync.Mutex
	calls     int
	failEvery int
	got       []dispatch.Event
}

func (p *fakePublisher) Publish(_ context.Context, e dispatch.Event) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.failEvery > 0 && p.calls%p.failEvery == 0 {
		return errors.New("broker away")
	}
	p.got = append(p.got, e)
	return nil
}

func (p *fakePublisher) events() []dispatch.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]dispatch.Event(nil), p.got...)
}

// someHistory makes bookings go through a few changes and returns how many changes were made.
func someHistory(t *testing.T, e env) int {
	t.Helper()
	changes := 0
	for _, s := range []dispatch.Status{dispatch.StatusCompleted, dispatch.StatusCancelled, dispatch.StatusArrived, dispatch.StatusScheduled} {
		bookingIn(t, e, s)
		changes += 1 + len(path[s])
	}
	return changes
}

// outboxOrder is the event ids in the order the outbox holds them.
func outboxOrder(t *testing.T, e env) []string {
	t.Helper()
	rows, err := e.raw.Query("SELECT event_id FROM outbox ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// relay runs the relays until every outbox row is published or the deadline, then stops them and
// checks they returned nil.
func relay(t *testing.T, e env, pubs []*fakePublisher, want int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, len(pubs))
	for _, p := range pubs {
		go func() { errs <- e.db.RunRelay(ctx, p, 5*time.Millisecond) }()
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.count(t, "SELECT COUNT(*) FROM outbox WHERE published_at IS NOT NULL") < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	for range pubs {
		if err := <-errs; err != nil {
			t.Errorf("RunRelay after cancel: got %v, want nil", err)
		}
	}
	if n := e.count(t, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"); n != 0 {
		t.Fatalf("unpublished outbox rows after relaying: got %d, want 0", n)
	}
}

// firstSeen is the event ids in order of first delivery.
func firstSeen(evs []dispatch.Event) []string {
	seen := map[string]bool{}
	var ids []string
	for _, ev := range evs {
		if !seen[ev.ID] {
			seen[ev.ID] = true
			ids = append(ids, ev.ID)
		}
	}
	return ids
}

func TestOutbox(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		changes := someHistory(t, e)
		if n := e.count(t, "SELECT COUNT(*) FROM outbox"); n != changes {
			t.Fatalf("outbox rows: got %d, want one per change (%d)", n, changes)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM booking_events"); n != changes {
			t.Fatalf("audit rows: got %d, want one per change (%d)", n, changes)
		}
		order := outboxOrder(t, e)

		t.Run("in order, each once", func(t *testing.T) {
			pub := &fakePublisher{}
			relay(t, e, []*fakePublisher{pub}, changes)
			evs := pub.events()
			if got := firstSeen(evs); !reflect.DeepEqual(got, order) || len(evs) != len(order) {
				t.Fatalf("published %d events in order %v, want %d in %v", len(evs), got, len(order), order)
			}
			for _, ev := range evs {
				b, err := e.db.Booking(context.Background(), ev.BookingID)
				if err != nil || ev.Type != "booking" || ev.Booking.ID != ev.BookingID || ev.At.IsZero() || b.ID == "" {
					t.Errorf("event %+v: want type booking with its booking and time", ev)
				}
			}
			last := map[string]dispatch.Event{}
			for _, ev := range evs {
				last[ev.BookingID] = ev
			}
			for id, ev := range last {
				b, _ := e.db.Booking(context.Background(), id)
				b.Version = 0 // not part of the wire form
				if !reflect.DeepEqual(ev.Booking, b) {
					t.Errorf("last event of %s carries %+v, want the booking as stored %+v", id, ev.Booking, b)
				}
			}
		})
	})
}

func TestOutboxAtLeastOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		changes := someHistory(t, e)
		order := outboxOrder(t, e)
		pub := &fakePublisher{failEvery: 3}
		relay(t, e, []*fakePublisher{pub}, changes)
		evs := pub.events()
		if got := firstSeen(evs); !reflect.DeepEqual(got, order) {
			t.Errorf("a publisher failing every 3rd call: got first deliveries %v, want all in order %v", got, order)
		}
		if pub.calls <= len(order) {
			t.Errorf("publisher calls: got %d, want more than %d (some failed)", pub.calls, len(order))
		}
	})
}

func TestOutboxSeveralRelays(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		changes := someHistory(t, e) + someHistory(t, e)
		pubs := []*fakePublisher{{}, {}, {failEvery: 4}}
		relay(t, e, pubs, changes)
		var all []dispatch.Event
		for _, p := range pubs {
			all = append(all, p.events()...)
		}
		if got := len(firstSeen(all)); got != changes {
			t.Errorf("distinct events published by 3 relays: got %d, want %d", got, changes)
		}
	})
}

func TestPruneOutbox(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		changes := someHistory(t, e)
		relay(t, e, []*fakePublisher{{}}, changes)
		bookingIn(t, e, dispatch.StatusSearching) // one more, not yet published
		n, err := e.db.PruneOutbox(context.Background(), time.Now().Add(time.Minute))
		if err != nil || n != int64(changes) {
			t.Errorf("PruneOutbox: got %d, %v; want %d, nil", n, err, changes)
		}
		if left := e.count(t, "SELECT COUNT(*) FROM outbox"); left != 1 {
			t.Errorf("outbox rows left: got %d, want 1 (the unpublished one)", left)
		}
	})
}

// TestOutboxPruner: the pruner deletes published events older than keep at start and again at
// each tick, never a newer or unpublished one, and returns nil when stopped.
func TestOutboxPruner(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		changes := someHistory(t, e)
		relay(t, e, []*fakePublisher{{}}, changes)
		bookingIn(t, e, dispatch.StatusSearching) // one more, not yet published
		var newest int64
		if err := e.raw.QueryRow("SELECT MAX(id) FROM outbox WHERE published_at IS NOT NULL").Scan(&newest); err != nil {
			t.Fatal(err)
		}
		age := func(q string, args ...any) {
			t.Helper()
			args = append([]any{time.Now().Add(-2 * time.Hour).UTC()}, args...)
			if _, err := e.raw.Exec("UPDATE outbox SET published_at = ? WHERE "+q, args...); err != nil {
				t.Fatal(err)
			}
		}
		age("published_at IS NOT NULL AND id < ?", newest) // all published but the newest: 2 h old
		if err := e.db.RunOutboxPruner(context.Background(), 0, time.Second); err == nil {
			t.Errorf("RunOutboxPruner with keep 0: got nil, want an error")
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- e.db.RunOutboxPruner(ctx, time.Hour, 20*time.Millisecond) }()
		waitCount := func(want int) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			got := e.count(t, "SELECT COUNT(*) FROM outbox")
			for got != want && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
				got = e.count(t, "SELECT COUNT(*) FROM outbox")
			}
			if got != want {
				t.Fatalf("outbox rows: got %d, want %d", got, want)
			}
		}
		waitCount(2) // the newest published and the unpublished one
		age("id = ?", newest)
		waitCount(1) // a later tick took it; the unpublished one stays
		time.Sleep(60 * time.Millisecond)
		if n := e.count(t, "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"); n != 1 {
			t.Errorf("unpublished rows: got %d, want 1", n)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunOutboxPruner after cancel: got %v, want nil", err)
		}
	})
}
