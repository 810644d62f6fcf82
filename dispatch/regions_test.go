package dispatch_test

import (
	"fmt"
	"math/rand"
	"sort"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// Four matchers share one busy city: every region with work is held by exactly one of them, and
// each holds about its share (rendezvous hashing over the live matchers).
func TestRegionSplit(t *testing.T) {
	r := newRig(t)
	var ms []*dispatch.Matcher
	for _, name := range []string{"A", "B", "C", "D"} {
		ms = append(ms, r.matcher(func(o *dispatch.MatcherOptions) { o.Owner = name; o.LeaseTTL = 3 * time.Second }))
	}
	// Bookings all over Bengaluru's built-up area (about 25 x 25 km).
	rnd := rand.New(rand.NewSource(3))
	regions := map[string]bool{}
	for i := 0; i < 120; i++ {
		lat, lng := 12.86+rnd.Float64()*0.24, 77.48+rnd.Float64()*0.24
		r.book(fmt.Sprintf("c%d", i), lat, lng, dispatch.Manual, nil)
		regions[r.regions.RegionOf(lat, lng)] = true
	}
	// They tick as their loops would until every region with work is held and the first one,
	// which took all before it knew of the others, has handed over.
	held := func() int {
		n := 0
		for _, m := range ms {
			n += len(m.Owned())
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for settled := 0; settled < 5 && time.Now().Before(deadline); {
		for _, m := range ms {
			r.step(m, 0)
		}
		if held() == len(regions) && len(ms[0].Owned()) < len(regions) {
			settled++
		}
		time.Sleep(100 * time.Millisecond)
	}
	owner := map[string]string{}
	var counts []int
	for i, m := range ms {
		own := m.Owned()
		counts = append(counts, len(own))
		for _, reg := range own {
			if prev, ok := owner[reg]; ok {
				t.Fatalf("region %s held by %s and %s", reg, prev, []string{"A", "B", "C", "D"}[i])
			}
			owner[reg] = []string{"A", "B", "C", "D"}[i]
		}
	}
	for reg := range regions {
		if owner[reg] == "" {
			t.Errorf("region %s with bookings is held by nobody", reg)
		}
	}
	sort.Ints(counts)
	t.Logf("%d regions with bookings; held per matcher: %v", len(regions), counts)
	if len(regions) < 12 {
		t.Fatalf("the city split into %d regions, want at least 12 (res 6)", len(regions))
	}
	fair := float64(len(regions)) / 4
	if counts[0] == 0 || float64(counts[3]) > 1.5*fair+1 {
		t.Fatalf("regions per matcher %v: want each to hold a share, none more than 1.5 times the fair %.1f", counts, fair)
	}
}

// A booking next to a region's border is offered the nearest driver across it, and a driver
// between two such bookings, each in a region held by another matcher, is offered only one of
// them at a time.
func TestBoundaryBookings(t *testing.T) {
	r := newRig(t)
	a := r.matcher(func(o *dispatch.MatcherOptions) { o.Owner = "A" })
	b := r.matcher(func(o *dispatch.MatcherOptions) { o.Owner = "B" })
	// Walk east from the base point to the first border between two regions; keep the pair of
	// points 60 m apart that straddles it.
	west := baseLng
	for r.regions.RegionOf(baseLat, west+0.0006) == r.regions.RegionOf(baseLat, baseLng) {
		west += 0.0002
	}
	east := west + 0.0006
	rw, re := r.regions.RegionOf(baseLat, west), r.regions.RegionOf(baseLat, east)
	if rw == re {
		t.Fatal("no border found")
	}
	mid := (west + east) / 2
	r.driver("border", baseLat, mid)
	bw := r.book("cw", baseLat, west-0.002, dispatch.Manual, nil) // about 250 m west of the driver
	be := r.book("ce", baseLat, east+0.002, dispatch.Manual, nil) // about 250 m east
	for round := 0; round < 3; round++ {
		r.step(a, 0)
		r.step(b, 0)
		time.Sleep(20 * time.Millisecond)
	}
	if len(a.Owned())+len(b.Owned()) != 2 {
		t.Fatalf("owned: A %v, B %v; want the two regions between them", a.Owned(), b.Owned())
	}
	r.step(a, 1100*time.Millisecond)
	r.step(b, 0)
	got := r.notes.offers("border")
	if len(got) != 1 || (got[0] != bw.ID && got[0] != be.ID) {
		t.Fatalf("the driver on the border got %v, want exactly one of the two bookings", got)
	}
	// Whichever matcher did not get the driver keeps trying; it must not offer them too while
	// the offer is open.
	for i := 0; i < 3; i++ {
		r.step(a, 1100*time.Millisecond)
		r.step(b, 0)
	}
	if got := r.notes.offers("border"); len(got) != 1 {
		t.Fatalf("while an offer is open the driver got %v, want one offer", got)
	}
}
