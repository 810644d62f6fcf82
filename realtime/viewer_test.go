package realtime

import (
	"encoding/json"
	"math"
	"math/rand"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/uber/h3-go/v4"
)

// TestDue: a driver is held to a point a second of its own clock, so one reporting once a second
// is sent every point at once whatever the socket's phase; faster ones are thinned to one a
// second; a state change always goes.
func TestDue(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	sent := sentMark{ts: t0, state: dispatch.DriverAvailable, at: t0.Add(30 * time.Millisecond)}
	cases := []struct {
		name  string
		mark  *sentMark
		ts    time.Duration // the point's time after t0
		state dispatch.DriverState
		now   time.Duration // the socket's clock after t0
		want  bool
	}{
		{"never sent", nil, 0, dispatch.DriverAvailable, 0, true},
		{"a second later, the socket a little behind", &sent, time.Second, dispatch.DriverAvailable, 1010 * time.Millisecond, true},
		{"a second later, arriving early by the socket's clock", &sent, time.Second, dispatch.DriverAvailable, 700 * time.Millisecond, true},
		{"a phone's jitter: 950 ms", &sent, 950 * time.Millisecond, dispatch.DriverAvailable, 990 * time.Millisecond, true},
		{"five a second: the second point", &sent, 200 * time.Millisecond, dispatch.DriverAvailable, 230 * time.Millisecond, false},
		{"five a second: the fifth", &sent, 800 * time.Millisecond, dispatch.DriverAvailable, 830 * time.Millisecond, false},
		{"a burst with far-apart times", &sent, 3 * time.Second, dispatch.DriverAvailable, 200 * time.Millisecond, false},
		{"a state change at once", &sent, 200 * time.Millisecond, dispatch.DriverOffered, 230 * time.Millisecond, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := &viewer{h: &Hub{opts: Options{ViewFlush: time.Second}}, sentD: map[string]sentMark{}}
			if c.mark != nil {
				v.sentD["d1"] = *c.mark
			}
			d := dispatch.DriverView{ID: "d1", State: c.state, UpdatedAt: t0.Add(c.ts)}
			if got := v.due("d1", d, t0.Add(c.now)); got != c.want {
				t.Fatalf("got due %v, want %v", got, c.want)
			}
		})
	}
}

// TestParentCell: the bit arithmetic gives H3's own parent at every coarser resolution.
func TestParentCell(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for range 500 {
		ll := h3.LatLng{Lat: -80 + r.Float64()*160, Lng: -180 + r.Float64()*360}
		c := h3.LatLngToCell(ll, 8)
		for res := 0; res <= 8; res++ {
			if got, want := h3.Cell(parentCell(uint64(c), res)), c.Parent(res); got != want {
				t.Fatalf("parent of %s at %d: got %s, want %s", c, res, got, want)
			}
		}
	}
}

// TestCellsResFor: a street and a city get fine cells, all of India coarse ones.
func TestCellsResFor(t *testing.T) {
	for _, c := range []struct {
		diagM float64
		want  int
	}{{3000, 7}, {60000, 7}, {150000, 6}, {300000, 5}, {3500000, 2}, {20000000, 1}} {
		if got := geoGrid.cellsResFor(c.diagM); got != c.want {
			t.Errorf("resolution for %.0f km across: got %d, want %d", c.diagM/1000, got, c.want)
		}
	}
}

// TestDriverLocationETA: a customer watching its assigned booking is sent the driver's position
// with the ETA the matcher ranks drivers by (dispatch.PickupSeconds, one speed model); once the
// driver has arrived, without one.
func TestDriverLocationETA(t *testing.T) {
	pickup := dispatch.Place{Lat: 12.9716, Lng: 77.5946}
	for _, c := range []struct {
		name   string
		status dispatch.Status
		eta    bool
	}{{"on the way", dispatch.StatusAssigned, true}, {"arrived", dispatch.StatusArrived, false}} {
		t.Run(c.name, func(t *testing.T) {
			conn := newConn(nil, 0, 0, func(string) {})
			v := newViewer(&Hub{}, dispatch.Actor{ID: "c1", Role: "customer"}, conn)
			v.watching["bk_1"] = dispatch.Booking{ID: "bk_1", Status: c.status, Pickup: pickup}
			v.driverLocation(driverLocation{BookingID: "bk_1", Lat: 12.9816, Lng: 77.5946, TS: 1})
			var got struct {
				Data struct {
					EtaS *int `json:"eta_s"`
				} `json:"data"`
			}
			if err := json.Unmarshal(conn.latest["trk:bk_1"].b, &got); err != nil {
				t.Fatal(err)
			}
			want := int(math.Round(dispatch.PickupSeconds(dispatch.DistanceM(12.9816, 77.5946, pickup.Lat, pickup.Lng))))
			switch {
			case c.eta && (got.Data.EtaS == nil || *got.Data.EtaS != want):
				t.Errorf("eta_s: got %v, want %d", got.Data.EtaS, want)
			case !c.eta && got.Data.EtaS != nil:
				t.Errorf("eta_s: got %d, want none", *got.Data.EtaS)
			}
		})
	}
}
