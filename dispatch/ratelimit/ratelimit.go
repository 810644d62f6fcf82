// Package ratelimit keeps one token bucket per key (a user, an address) in bounded memory, for
// the REST API and the WebSocket gateway alike.
//
// It must not know what a key means nor answer anyone: callers decide what a refusal costs.
package ratelimit

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Keyed is a set of token buckets, one per key, made on first use. A bucket left alone long
// enough to be full again is forgotten (forgetting it loses nothing), and at most max buckets
// are kept: past that an arbitrary bucket is dropped, so a flood of new keys costs memory
// bounded by max and, at worst, gives some other key a full bucket early.
//
// A nil *Keyed allows everything. All methods are safe for concurrent use.
type Keyed struct {
	limit rate.Limit
	burst int
	idle  time.Duration // a bucket untouched this long is full again
	max   int
	now   func() time.Time

	mu        sync.Mutex // guards the fields below
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
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
	return &Keyed{limit: rate.Limit(perSecond), burst: burst, idle: idle, max: maxKeys, now: time.Now,
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
	now := k.now()
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
		b = &bucket{lim: rate.NewLimiter(k.limit, k.burst)}
		k.buckets[key] = b
	}
	b.seen = now
	return b.lim.AllowN(now, 1)
}

// RetryAfter is how long a refused caller should wait for its next token, rounded up to a second.
func (k *Keyed) RetryAfter() time.Duration {
	if k == nil {
		return 0
	}
	d := time.Duration(float64(time.Second) / float64(k.limit))
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
