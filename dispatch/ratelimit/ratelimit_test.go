package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time                  { return c.t }
func (c *clock) advance(d time.Duration)         { c.t = c.t.Add(d) }
func newAt(c *clock, r float64, b, m int) *Keyed { return New(r, b, m).WithClock(c.now) }

func TestKeyedLimitsEachKeyApart(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	k := newAt(c, 2, 4, 0)
	for i := range 4 {
		if !k.Allow("a") {
			t.Fatalf("a's request %d within the burst: got refused, want allowed", i+1)
		}
	}
	if k.Allow("a") {
		t.Fatalf("a's 5th request at once: got allowed, want refused")
	}
	if !k.Allow("b") {
		t.Fatalf("b's first request after a's burst: got refused, want allowed (keys are apart)")
	}
	c.advance(500 * time.Millisecond)
	if !k.Allow("a") {
		t.Fatalf("a after 0.5 s at 2/s: got refused, want one token back")
	}
	if k.Allow("a") {
		t.Fatalf("a's second request after 0.5 s: got allowed, want refused")
	}
}

func TestKeyedForgetsIdleBuckets(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	k := newAt(c, 10, 20, 0) // full again after 2 s
	for i := range 1000 {
		k.Allow(fmt.Sprint("addr-", i))
	}
	if got := k.Len(); got != 1000 {
		t.Fatalf("buckets after 1000 keys: got %d, want 1000", got)
	}
	c.advance(3 * time.Second)
	k.Allow("late")
	if got := k.Len(); got != 1 {
		t.Fatalf("buckets after the others idled past refill: got %d, want 1", got)
	}
}

func TestKeyedIsBounded(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	k := newAt(c, 1, 1, 100)
	for i := range 10_000 {
		k.Allow(fmt.Sprint("k", i))
		if k.Len() > 100 {
			t.Fatalf("after %d keys: got %d buckets, want at most 100", i+1, k.Len())
		}
	}
}

func TestNilKeyedAllowsAll(t *testing.T) {
	k := New(0, 10, 10)
	for range 100 {
		if !k.Allow("x") {
			t.Fatal("a disabled limiter refused a request")
		}
	}
	if k.Len() != 0 || k.RetryAfter() != 0 {
		t.Fatal("a disabled limiter keeps state")
	}
}

func BenchmarkKeyedAllow(b *testing.B) {
	k := New(1000, 2000, 0)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprint("user-", i)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		k.Allow(keys[i%len(keys)])
	}
}

// TestBucket: a burst, then one token per 1/rate; a clock that goes back and forth refills
// nothing it has not refilled already.
func TestBucket(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	b := NewBucket(5, 2) // a token every 200 ms, two at most
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
		if got := b.Allow(t0.Add(s.at)); got != s.want {
			t.Fatalf("step %d at %v: got %v, want %v", i, s.at, got, s.want)
		}
	}
}

// TestKeyedAllowAt: each key has its own bucket; one forgotten when full again starts full.
func TestKeyedAllowAt(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	k := New(1, 2, 0) // idle: 2 s
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
		if got := k.AllowAt(s.key, t0.Add(s.at)); got != s.want {
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
