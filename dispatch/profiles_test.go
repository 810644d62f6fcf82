package dispatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/rs/zerolog"
)

// profileReads counts the profiles each read of changes returned.
type profileReads struct {
	dispatch.MatchStore
	mu   sync.Mutex
	rows []int
}

func (p *profileReads) DriversChangedSince(ctx context.Context, since time.Time, limit int) ([]dispatch.DriverProfile, time.Time, error) {
	ps, last, err := p.MatchStore.DriversChangedSince(ctx, since, limit)
	p.mu.Lock()
	p.rows = append(p.rows, len(ps))
	p.mu.Unlock()
	return ps, last, err
}

func (p *profileReads) last() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.rows) == 0 {
		return -1
	}
	return p.rows[len(p.rows)-1]
}

// The matcher reads a profile change once, and again while a late commit could still hide one
// (5 s), but not window after window: five profiles written at once were read again every
// window when the overlap counted back from the newest change.
func TestProfilesReadOnce(t *testing.T) {
	r := newRig(t)
	reads := &profileReads{MatchStore: r.db}
	m := dispatch.NewMatcher(reads, r.index, r.regions, r.notes, dispatch.MatcherOptions{Window: time.Second,
		OfferTimeout: 10 * time.Second, Radii: []float64{2000, 5000}, MaxSearch: 5 * time.Minute, Fresh: 24 * time.Hour,
		Now: r.clock.Now, Sweep: -1}, nil, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	for _, id := range []string{"p1", "p2", "p3", "p4", "p5"} {
		r.driver(id, north(300), baseLng)
	}
	r.book("c1", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 0)
	r.step(m, 1100*time.Millisecond)
	if got := reads.last(); got != 5 {
		t.Fatalf("first read: got %d profiles, want the 5", got)
	}
	// Each window has a booking to match, so each reads changes.
	r.book("c2", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 6*time.Second)
	r.book("c3", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 6*time.Second)
	if got := reads.last(); got != 0 {
		t.Fatalf("a read 12 s after the profiles were written: got %d profiles again, want 0 (reads %v)", got, reads.rows)
	}
	// A change is still read, once.
	if err := r.db.UpsertDriver(context.Background(), dispatch.DriverProfile{ID: "p3", Name: "p3", Rating: 3.1,
		Transmissions: []dispatch.Transmission{dispatch.Manual}, Verified: true, LicenceExpires: "2099-12-31"}); err != nil {
		t.Fatal(err)
	}
	r.book("c4", baseLat, baseLng, dispatch.Manual, nil)
	r.step(m, 6*time.Second)
	if got := reads.last(); got != 1 {
		t.Fatalf("after one profile changed: got %d profiles, want 1 (reads %v)", got, reads.rows)
	}
}
