package geo_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/uber/h3-go/v4"
)

// six rounds a coordinate the way the index stores it, so stored and sent compare equal.
func six(x float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', 6, 64), 64)
	return f
}

// cellMembers lists the members of a region's cell set that belong to driver id.
func cellMembers(t *testing.T, x *geo.Index, prefix, region, id string) []string {
	t.Helper()
	rdb := testRedis(t)
	defer rdb.Close()
	all, err := rdb.ZRange(context.Background(), prefix+"geo:{r"+region+"}:cells", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range all {
		if strings.HasSuffix(m, ":"+id) {
			out = append(out, m)
		}
	}
	return out
}

// farRegion walks east from a point until it is in another region.
func farRegion(lat, lng float64) (float64, float64) {
	r := geo.Region(lat, lng)
	for d := 0.01; ; d += 0.01 {
		if geo.Region(lat, lng+d) != r {
			return lat, six(lng + d + 0.01)
		}
	}
}

func TestCellAndRegionMoves(t *testing.T) {
	x, rdb, prefix := newIndex(t)
	ctx := context.Background()
	const id = "d1"
	lat, lng := 12.971599, 77.594566
	c1 := geo.Cell(lat, lng)
	// A neighbouring cell in the same region.
	var c2 h3.Cell
	for _, c := range c1.GridDisk(1) {
		if c != c1 && geo.RegionOf(c) == geo.RegionOf(c1) {
			c2 = c
			break
		}
	}
	ll2 := c2.LatLng()
	lat2, lng2 := six(ll2.Lat), six(ll2.Lng)
	now := time.Now().UnixMilli()

	write(t, x, geo.Update{DriverID: id, Point: pt(lat, lng, now-3000), NewState: dispatch.DriverAvailable})
	if err := x.SetState(ctx, id, dispatch.DriverOnTrip); err != nil {
		t.Fatal(err)
	}
	ws := write(t, x, geo.Update{DriverID: id, Point: pt(lat2, lng2, now-2000), NewState: dispatch.DriverAvailable})
	if !ws[0].Applied || ws[0].State != dispatch.DriverOnTrip {
		t.Fatalf("cell move: got applied %v state %q, want applied true state on_trip", ws[0].Applied, ws[0].State)
	}
	region := geo.RegionOf(c1)
	if got := cellMembers(t, x, prefix, region, id); len(got) != 1 || got[0] != c2.String()+":"+id {
		t.Fatalf("after a cell move: got cell members %v, want exactly [%s:%s]", got, c2, id)
	}

	// Another region, written by another process that has never seen the driver (a reconnect
	// to another gateway): it must still leave the old region.
	lat3, lng3 := farRegion(lat2, lng2)
	region3 := geo.Region(lat3, lng3)
	other := geo.NewIndex(rdb, geo.Options{Prefix: prefix})
	ws = write(t, other, geo.Update{DriverID: id, Point: pt(lat3, lng3, now-1000), NewState: dispatch.DriverAvailable})
	if !ws[0].Applied || ws[0].State != dispatch.DriverOnTrip || ws[0].Region != region3 {
		t.Fatalf("region move: got applied %v state %q region %s, want true on_trip %s", ws[0].Applied, ws[0].State, ws[0].Region, region3)
	}
	if got := cellMembers(t, x, prefix, region, id); len(got) != 0 {
		t.Fatalf("old region still holds the driver: %v", got)
	}
	if n, _ := rdb.HExists(ctx, prefix+"geo:{r"+region+"}:pos", id).Result(); n {
		t.Fatal("old region's positions still hold the driver")
	}
	if got := cellMembers(t, x, prefix, region3, id); len(got) != 1 || got[0] != geo.Cell(lat3, lng3).String()+":"+id {
		t.Fatalf("new region: got cell members %v, want exactly one in %s", got, geo.Cell(lat3, lng3))
	}

	// The first process forgets the driver when its socket closes, then it comes back there.
	x.Forget(id)
	ws = write(t, x, geo.Update{DriverID: id, Point: pt(lat, lng, now), NewState: dispatch.DriverAvailable})
	if !ws[0].Applied || ws[0].State != dispatch.DriverOnTrip {
		t.Fatalf("move back: got applied %v state %q", ws[0].Applied, ws[0].State)
	}
	if got := cellMembers(t, x, prefix, region3, id); len(got) != 0 {
		t.Fatalf("region %s still holds the driver after it moved back: %v", region3, got)
	}
	if got := cellMembers(t, x, prefix, region, id); len(got) != 1 {
		t.Fatalf("back in region %s: got cell members %v, want one", region, got)
	}
	p, err := x.Position(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if p.Lat != lat || p.Lng != lng || p.State != dispatch.DriverOnTrip || p.At.UnixMilli() != now {
		t.Fatalf("position: got %+v, want %v,%v on_trip at %d", p, lat, lng, now)
	}

	// An older point changes nothing.
	ws = write(t, x, geo.Update{DriverID: id, Point: pt(lat2, lng2, now-500)})
	if ws[0].Applied {
		t.Fatal("an older point was applied")
	}
	if p2, _ := x.Position(ctx, id); p2 != p {
		t.Fatalf("an older point changed the position: got %+v, want %+v", p2, p)
	}
}

func TestStalenessAndSweep(t *testing.T) {
	x, rdb, _ := newIndex(t)
	ctx := context.Background()
	now := time.Now()
	lat, lng := 12.9716, 77.5946
	drivers := []struct {
		id    string
		age   time.Duration
		state dispatch.DriverState
	}{
		{"fresh", time.Second, dispatch.DriverAvailable},
		{"quiet", 40 * time.Second, dispatch.DriverAvailable}, // no candidate, not yet offline
		{"silent", 3 * time.Minute, dispatch.DriverAvailable}, // offline
		{"on-trip", 3 * time.Minute, dispatch.DriverOnTrip},   // silent on a trip: left alone
		{"offered", 3 * time.Minute, dispatch.DriverOffered},  // the offer's expiry handles it
		{"off", 3 * time.Minute, dispatch.DriverOffline},      // already
	}
	for i, d := range drivers {
		write(t, x, geo.Update{DriverID: d.id, Point: pt(lat+float64(i)*0.001, lng, now.Add(-d.age).UnixMilli()), NewState: dispatch.DriverAvailable})
		if err := x.SetState(ctx, d.id, d.state); err != nil {
			t.Fatal(err)
		}
	}
	fresh := now.Add(-30 * time.Second)
	candidate := func(p dispatch.Position) bool { return p.State == dispatch.DriverAvailable && p.At.After(fresh) }
	near, err := x.Nearby(ctx, lat, lng, 2000, 10, candidate)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(near); len(got) != 1 || got[0] != "fresh" {
		t.Fatalf("candidates: got %v, want [fresh]", got)
	}

	sub := rdb.Subscribe(ctx, x.FeedChannel(geo.Region(lat, lng)))
	defer sub.Close()
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	n, err := x.Sweep(ctx, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("sweep: got %d marked offline, want 1", n)
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg.Payload, `"id":"silent"`) || !strings.Contains(msg.Payload, `"state":"offline"`) {
		t.Fatalf("feed after the sweep: got %s, want silent offline", msg.Payload)
	}
	want := map[string]dispatch.DriverState{"fresh": dispatch.DriverAvailable, "quiet": dispatch.DriverAvailable,
		"silent": dispatch.DriverOffline, "on-trip": dispatch.DriverOnTrip, "offered": dispatch.DriverOffered, "off": dispatch.DriverOffline}
	for id, st := range want {
		if got, _ := x.State(ctx, id); got != st {
			t.Errorf("state of %s: got %q, want %q", id, got, st)
		}
		if p, _ := x.Position(ctx, id); p.State != st {
			t.Errorf("indexed state of %s: got %q, want %q", id, p.State, st)
		}
	}
	all, err := x.Nearby(ctx, lat, lng, 2000, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range all {
		if n.DriverID == "silent" || n.DriverID == "off" {
			t.Errorf("offline driver %s is still in the cells", n.DriverID)
		}
	}
	if n, err := x.Sweep(ctx, 2*time.Minute); err != nil || n != 0 {
		t.Fatalf("second sweep: got %d, %v; want 0, nil", n, err)
	}

	// The silent driver speaks again while its session still holds it online: it comes back.
	ws := write(t, x, geo.Update{DriverID: "silent", Point: pt(lat, lng+0.001, time.Now().UnixMilli()), NewState: dispatch.DriverAvailable})
	if !ws[0].Applied || ws[0].State != dispatch.DriverAvailable {
		t.Fatalf("revived: got applied %v state %q, want true available", ws[0].Applied, ws[0].State)
	}
	if got, _ := x.State(ctx, "silent"); got != dispatch.DriverAvailable {
		t.Fatalf("revived driver's own state: got %q, want available", got)
	}
	// A driver that chose offline stays offline whatever its points say.
	ws = write(t, x, geo.Update{DriverID: "off", Point: pt(lat, lng+0.002, time.Now().UnixMilli()), NewState: dispatch.DriverOffline})
	if ws[0].State != dispatch.DriverOffline {
		t.Fatalf("offline driver's point: got state %q, want offline", ws[0].State)
	}
	near, err = x.Nearby(ctx, lat, lng, 2000, 10, candidate)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ids(near), ","); got != "silent,fresh" && got != "fresh,silent" {
		t.Fatalf("candidates after the revival: got %s, want fresh and silent", got)
	}
}

// Points of a driver's own session overwrite no state set by others (the matcher, the service).
func TestPointsKeepState(t *testing.T) {
	x, _, _ := newIndex(t)
	ctx := context.Background()
	now := time.Now().UnixMilli()
	write(t, x, geo.Update{DriverID: "d", Point: pt(12.97, 77.59, now-2), NewState: dispatch.DriverAvailable})
	if err := x.SetState(ctx, "d", dispatch.DriverOffered); err != nil {
		t.Fatal(err)
	}
	ws := write(t, x, geo.Update{DriverID: "d", Point: pt(12.971, 77.59, now-1), NewState: dispatch.DriverAvailable})
	if ws[0].State != dispatch.DriverOffered {
		t.Fatalf("got state %q after a point, want offered", ws[0].State)
	}
	if _, err := x.Position(ctx, "nobody"); !errors.Is(err, dispatch.ErrNotFound) {
		t.Fatalf("unknown driver: got %v, want ErrNotFound", err)
	}
}

// testFleet writes n drivers at random in a box around Bengaluru, with mixed states and ages,
// and returns them as stored.
func testFleet(t *testing.T, x *geo.Index, r *rand.Rand, n int, spanDeg float64) []dispatch.Position {
	t.Helper()
	now := time.Now()
	states := []dispatch.DriverState{dispatch.DriverAvailable, dispatch.DriverAvailable, dispatch.DriverAvailable, dispatch.DriverOffered, dispatch.DriverOnTrip}
	var all []dispatch.Position
	var ups []geo.Update
	for i := 0; i < n; i++ {
		p := dispatch.Position{DriverID: fmt.Sprintf("d%05d", i), Lat: six(12.97 + (r.Float64()-0.5)*spanDeg),
			Lng: six(77.59 + (r.Float64()-0.5)*spanDeg), State: states[r.Intn(len(states))],
			At: time.UnixMilli(now.Add(-time.Duration(r.Intn(60)) * time.Second).UnixMilli()).UTC()}
		all = append(all, p)
		ups = append(ups, geo.Update{DriverID: p.DriverID, Point: pt(p.Lat, p.Lng, p.At.UnixMilli()), NewState: p.State})
		if len(ups) == 500 || i == n-1 {
			write(t, x, ups...)
			ups = ups[:0]
		}
	}
	return all
}

func TestNearbyMatchesBruteForce(t *testing.T) {
	x, _, _ := newIndex(t)
	ctx := context.Background()
	r := rand.New(rand.NewSource(7))
	// 3,000 drivers over about 22 x 22 km: dense enough for full answers, sparse enough at the
	// edges for short ones.
	all := testFleet(t, x, r, 3000, 0.2)
	rep := geo.NewReplica(x, geo.ReplicaOptions{}, testLog(t))
	if err := rep.Load(ctx); err != nil {
		t.Fatal(err)
	}
	rep8 := geo.NewReplica(x, geo.ReplicaOptions{Res: 8}, testLog(t))
	if err := rep8.Load(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := time.Now().Add(-30 * time.Second)
	keeps := map[string]func(dispatch.Position) bool{
		"all":       nil,
		"candidate": func(p dispatch.Position) bool { return p.State == dispatch.DriverAvailable && p.At.After(fresh) },
	}
	for q := 0; q < 150; q++ {
		lat, lng := 12.97+(r.Float64()-0.5)*0.26, 77.59+(r.Float64()-0.5)*0.26
		radius := []float64{150, 500, 1000, 2000, 5000}[q%5]
		limit := 1 + r.Intn(20)
		for name, keep := range keeps {
			want := bruteNearby(all, lat, lng, radius, limit, keep)
			what := fmt.Sprintf("query %d (%f,%f r=%v k=%d %s)", q, lat, lng, radius, limit, name)
			got, err := x.Nearby(ctx, lat, lng, radius, limit, keep)
			if err != nil {
				t.Fatal(err)
			}
			sameNearby(t, "index "+what, got, want)
			got, _ = rep.Nearby(ctx, lat, lng, radius, limit, keep)
			sameNearby(t, "replica "+what, got, want)
			got, _ = rep8.Nearby(ctx, lat, lng, radius, limit, keep)
			sameNearby(t, "replica res 8 "+what, got, want)
			if name == "candidate" {
				fresh := func(p dispatch.Position) bool { return p.At.After(fresh) }
				got, err = x.NearbyAvailable(ctx, lat, lng, radius, limit, fresh)
				if err != nil {
					t.Fatal(err)
				}
				sameNearby(t, "index available "+what, got, want)
				got, _ = rep.NearbyAvailable(ctx, lat, lng, radius, limit, fresh)
				sameNearby(t, "replica available "+what, got, want)
			}
		}
		if t.Failed() {
			return
		}
	}
}
