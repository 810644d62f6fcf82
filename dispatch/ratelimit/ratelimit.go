// Package ratelimit keeps one token bucket per key (a user, an address) in bounded memory, for
// the REST API and the WebSocket gateway alike.
//
// It must not know what a key means nor answer anyone: callers decide what a refusal costs.
package ratelimit

import (
	"sync"
	"time"
)

// Bucket is a token bucket for one goroutine at a time (no lock): rate tokens a second up to
// burst, starting full. A clock that goes back refills nothing. It is the project's one token
// bucket: Keyed keeps one per key, and the gateway one per socket for its location budgets,
// which run for every GPS point (two checks cost about 35 ns as Buckets, 115 ns as
// golang.org/x/time/rate Limiters with their mutexes, when this was chosen), and which run on
// the points' own clock, which a client may send back in time: a Limiter given an earlier time
// moves its clock back and refills the same interval again when time moves forward.
type Bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

// NewBucket returns a full bucket of rate tokens a second up to burst (at least 1).
func NewBucket(rate, burst float64) Bucket {
	return Bucket{rate: rate, burst: max(burst, 1), tokens: max(burst, 1)}
}

// Allow takes a token at now, if there is one.
func (b *Bucket) Allow(now time.Time) bool {
	if !b.last.IsZero() {
		if d := now.Sub(b.last); d > 0 {
			b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		}
	}
	if b.last.IsZero() || now.After(b.last) {
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Keyed is a set of token buckets, one per key, made on first use. A bucket left alone long
// enough to be full again is forgotten (forgetting it loses nothing), and at most max buckets
// are kept: past that an arbitrary bucket is dropped, so a flood of new keys costs memory
// bounded by max and, at worst, gives some other key a full bucket early.
//
// A nil *Keyed allows everything. All methods are safe for concurrent use.
type Keyed struct {
	limit float64
	burst int
	idle  time.Duration // a bucket untouched this long is full again
	max   int
	now   func() time.Time

	mu        sync.Mutex // guards the fields below
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	b    Bucket
	seen time.Time
}

// New returns buckets refilling at perSecond up to burst tokens, at most maxKeys of them
// (default 100 000). perSecond <= 0 returns nil: no limit.
func New(perSecond float64, burst, maxKeys int) *Keyed {
	if perSecond <= 0 {
		return nil
	}
	if burst < 1 {
		burst = 1
	}
	if maxKeys <= 0 {
		maxKeys = 100_000
	}
	idle := time.Duration(float64(burst) / perSecond * float64(time.Second))
	if idle < time.Second {
		idle = time.Second
	}
	return &Keyed{limit: perSecond, burst: burst, idle: idle, max: maxKeys, now: time.Now,
		buckets: map[string]*bucket{}}
}

// WithClock makes k read time from now (tests). It returns k.
func (k *Keyed) WithClock(now func() time.Time) *Keyed {
	if k != nil {
		k.now = now
	}
	return k
}

// Allow takes a token from key's bucket and reports whether there was one.
func (k *Keyed) Allow(key string) bool {
	if k == nil {
		return true
	}
	return k.AllowAt(key, k.now())
}

// AllowAt is Allow at now, for a caller that has read the clock already.
func (k *Keyed) AllowAt(key string, now time.Time) bool {
	if k == nil {
		return true
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.lastSweep) >= k.idle {
		k.sweep(now)
	}
	b := k.buckets[key]
	if b == nil {
		if len(k.buckets) >= k.max {
			for victim := range k.buckets { // map order is random: an arbitrary one
				delete(k.buckets, victim)
				break
			}
		}
		b = &bucket{b: NewBucket(k.limit, float64(k.burst))}
		k.buckets[key] = b
	}
	b.seen = now
	return b.b.Allow(now)
}

// RetryAfter is how long a refused caller should wait for its next token, rounded up to a second.
func (k *Keyed) RetryAfter() time.Duration {
	if k == nil {
		return 0
	}
	d := time.Duration(float64(time.Second) / k.limit)
	return max(time.Second, d.Round(time.Second))
}

// Len is how many buckets are kept now.
func (k *Keyed) Len() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.buckets)
}

// sweep forgets the buckets that are full again. Called with k.mu held.
func (k *Keyed) sweep(now time.Time) {
	for key, b := range k.buckets {
		if now.Sub(b.seen) >= k.idle {
			delete(k.buckets, key)
		}
	}
	k.lastSweep = now
}
