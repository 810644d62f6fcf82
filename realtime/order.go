package realtime

import "sync"

// lastVersions remembers the highest booking version routed per key (audience and booking) for
// the last n keys, so that an event older than one already routed (two relays interleaving
// their backlogs) is dropped rather than sent after the newer state. Safe for concurrent use.
type lastVersions struct {
	mu   sync.Mutex
	last map[string]int64
	ring []string // keys in order of first sight; the oldest is forgotten first
	next int
}

func newLastVersions(n int) *lastVersions {
	return &lastVersions{last: make(map[string]int64, n), ring: make([]string, n)}
}

// newer records version for key and reports whether it is above the last one recorded. Version
// 0 (an event from a producer that sets none) always passes and records nothing.
func (l *lastVersions) newer(key string, version int64) bool {
	if version == 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	last, ok := l.last[key]
	if ok {
		if version <= last {
			return false
		}
		l.last[key] = version
		return true
	}
	if old := l.ring[l.next]; old != "" {
		delete(l.last, old)
	}
	l.ring[l.next] = key
	l.next = (l.next + 1) % len(l.ring)
	l.last[key] = version
	return true
}
