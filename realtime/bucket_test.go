package realtime

import (
	"testing"
	"time"
)

// TestBucket: a burst, then one token per 1/rate; a clock that goes back and forth refills
// nothing it has not refilled already.
func TestBucket(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	b := newBucket(5, 2) // a token every 200 ms, two at most
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {0, true}, {0, false}, // the burst
		{100 * time.Millisecond, false}, // half a token
		{200 * time.Millisecond, true},  // one token back
		{-time.Minute, false},           // back in time: nothing refilled
		{200 * time.Millisecond, false}, // forward again to where it was: still nothing
		{400 * time.Millisecond, true},  // 200 ms past it: one token
	}
	for i, s := range steps {
		if got := b.allow(t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d at %v: got %v, want %v", i, s.at, got, s.want)
		}
	}
}

// TestBudgets: each key has its own bucket; one forgotten when full again starts full.
func TestBudgets(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	k := newBudgets(1, 2) // idle: 2 s
	for i, s := range []struct {
		key  string
		at   time.Duration
		want bool
	}{
		{"a", 0, true}, {"a", 0, true}, {"a", 0, false},
		{"b", 0, true}, // another key's bucket is its own
		{"a", 500 * time.Millisecond, false},
		{"a", 3 * time.Second, true}, {"a", 3 * time.Second, true}, {"a", 3 * time.Second, false},
	} {
		if got := k.allow(s.key, t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d (%s at %v): got %v, want %v", i, s.key, s.at, got, s.want)
		}
	}
	k.mu.Lock()
	_, kept := k.buckets["b"]
	k.mu.Unlock()
	if kept {
		t.Error(`"b", untouched for 3 s with an idle of 2 s, is still kept`)
	}
}
