package geo_test

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
)

// The index of available drivers answers exactly what a brute-force search over every driver
// answers when asked for available ones, while drivers move and change state through the feed.
func TestNearbyAvailableMatchesBruteForce(t *testing.T) {
	x, _, _ := newIndex(t)
	ctx := context.Background()
	r := rand.New(rand.NewSource(11))
	all := testFleet(t, x, r, 3000, 0.2)
	rep := geo.NewReplica(x, geo.ReplicaOptions{}, testLog(t))
	if err := rep.Load(ctx); err != nil {
		t.Fatal(err)
	}
	states := []dispatch.DriverState{dispatch.DriverAvailable, dispatch.DriverOffered, dispatch.DriverOnTrip, dispatch.DriverOffline}
	fresh := time.Now().Add(-30 * time.Second)
	for round := 0; round < 4; round++ {
		// A third of the fleet moves a little or changes state, through the feed.
		var views []dispatch.DriverView
		for i := range all {
			if r.Intn(3) != 0 {
				continue
			}
			p := &all[i]
			if r.Intn(2) == 0 {
				p.Lat, p.Lng = six(p.Lat+(r.Float64()-0.5)*0.01), six(p.Lng+(r.Float64()-0.5)*0.01)
			} else {
				p.State = states[r.Intn(len(states))]
			}
			p.At = p.At.Add(time.Second)
			views = append(views, dispatch.DriverView{ID: p.DriverID, Lat: p.Lat, Lng: p.Lng, State: p.State, UpdatedAt: p.At})
		}
		rep.Apply(views)
		excluded := map[string]bool{all[r.Intn(len(all))].DriverID: true}
		keep := func(p dispatch.Position) bool { return p.At.After(fresh) && !excluded[p.DriverID] }
		avail := func(p dispatch.Position) bool { return p.State == dispatch.DriverAvailable && keep(p) }
		var qs []dispatch.Search
		var wants [][]dispatch.Nearby
		for q := 0; q < 100; q++ {
			lat, lng := 12.97+(r.Float64()-0.5)*0.3, 77.59+(r.Float64()-0.5)*0.3
			radius := []float64{300, 1000, 5000, 15000}[q%4]
			limit := 1 + r.Intn(40)
			want := bruteNearby(all, lat, lng, radius, limit, avail)
			got, err := rep.NearbyAvailable(ctx, lat, lng, radius, limit, keep)
			if err != nil {
				t.Fatal(err)
			}
			sameNearby(t, fmt.Sprintf("round %d query %d (%f,%f r=%v k=%d)", round, q, lat, lng, radius, limit), got, want)
			qs = append(qs, dispatch.Search{Lat: lat, Lng: lng, RadiusM: radius, Limit: limit, Keep: keep})
			wants = append(wants, want)
		}
		many, err := rep.NearbyAvailableMany(ctx, qs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range qs {
			sameNearby(t, fmt.Sprintf("round %d batch query %d", round, i), many[i], wants[i])
		}
		if t.Failed() {
			return
		}
	}
}
