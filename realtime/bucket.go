package realtime

import (
	"sync"
	"time"
)

// realtime has one token bucket, bucket: a socket's location budgets (driverSession.frames,
// points), its strikes (slot.strikes) and, under a lock, each user's message budget (budgets).
// It is not golang.org/x/time/rate's Limiter: the location budgets run for every GPS point
// (the two a point takes cost about 35 ns as bucket, 115 ns as Limiters with their mutexes,
// when this was chosen), and the points budget runs on the points' own clock, which a client
// may send back in time: a Limiter given an earlier time moves its clock back and refills the
// same interval again when time moves forward, where bucket refills nothing.

// bucket is a token bucket for one goroutine at a time (no lock): rate tokens a second up to
// burst, starting full. A clock that goes back refills nothing.
type bucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newBucket(rate, burst float64) bucket {
	return bucket{rate: rate, burst: max(burst, 1), tokens: max(burst, 1)}
}

// allow takes a token at now, if there is one.
func (b *bucket) allow(now time.Time) bool {
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

// budgets keep one bucket per key (a user), made on first use. A bucket left alone long
// enough to be full again is forgotten (forgetting it loses nothing), and at most max are
// kept: past that an arbitrary one is dropped, so a flood of new keys costs bounded memory
// and, at worst, gives some other key a full bucket early. Safe for concurrent use.
//
// Lock order: budgets.mu is a leaf.
type budgets struct {
	rate, burst float64
	idle        time.Duration // a bucket untouched this long is full again
	max         int

	mu        sync.Mutex // guards the fields below
	buckets   map[string]*keptBucket
	lastSweep time.Time
}

type keptBucket struct {
	b    bucket
	seen time.Time
}

// newBudgets returns buckets of rate tokens a second up to burst, at most 100,000 of them.
func newBudgets(rate, burst float64) *budgets {
	burst = max(burst, 1)
	idle := max(time.Second, time.Duration(burst/rate*float64(time.Second)))
	return &budgets{rate: rate, burst: burst, idle: idle, max: 100_000, buckets: map[string]*keptBucket{}}
}

// allow takes a token from key's bucket at now and reports whether there was one.
func (k *budgets) allow(key string, now time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.lastSweep) >= k.idle {
		for key, kb := range k.buckets {
			if now.Sub(kb.seen) >= k.idle {
				delete(k.buckets, key)
			}
		}
		k.lastSweep = now
	}
	kb := k.buckets[key]
	if kb == nil {
		if len(k.buckets) >= k.max {
			for victim := range k.buckets { // map order is random: an arbitrary one
				delete(k.buckets, victim)
				break
			}
		}
		kb = &keptBucket{b: newBucket(k.rate, k.burst)}
		k.buckets[key] = kb
	}
	kb.seen = now
	return kb.b.allow(now)
}
