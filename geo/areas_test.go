package geo_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
)

func TestDefaultAreasCoverEveryTariffCity(t *testing.T) {
	a, err := geo.DefaultAreas()
	if err != nil {
		t.Fatal(err)
	}
	tariffs := dispatch.DefaultTariffs()
	for id := range tariffs.Cities {
		raw, ok := a.Area(id)
		if !ok {
			t.Errorf("city %s has a tariff but no area", id)
			continue
		}
		var g struct {
			Type        string          `json:"type"`
			Coordinates [][][][]float64 `json:"coordinates"`
		}
		if err := json.Unmarshal(raw, &g); err != nil || g.Type != "MultiPolygon" || len(g.Coordinates) == 0 {
			t.Errorf("area of %s: got %s, %v; want a MultiPolygon", id, raw, err)
		}
	}
	for _, id := range a.IDs() {
		if _, err := tariffs.For(id); err != nil {
			t.Errorf("area %s has no tariff: %v", id, err)
		}
	}
}

func TestCityAt(t *testing.T) {
	a, err := geo.DefaultAreas()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		lat, lng float64
		want     string
	}{
		{"MG Road", 12.9756, 77.6050, "bengaluru"},
		{"Electronic City", 12.8452, 77.6602, "bengaluru"},
		{"Kempegowda airport", 13.1989, 77.7068, "bengaluru"},
		{"Yelahanka", 13.1007, 77.5963, "bengaluru"},
		{"Connaught Place", 28.6315, 77.2167, "delhi"},
		{"Gurugram Cyber City", 28.4950, 77.0890, "delhi"},
		{"Noida sector 18", 28.5700, 77.3260, "delhi"},
		{"Bandra", 19.0596, 72.8295, "mumbai"},
		{"Thane", 19.2183, 72.9781, "mumbai"},
		{"Charminar", 17.3616, 78.4747, "hyderabad"},
		{"Hyderabad airport", 17.2403, 78.4294, "hyderabad"},
		{"Marina beach", 13.0500, 80.2824, "chennai"},
		{"Shivajinagar Pune", 18.5308, 73.8475, "pune"},
		{"Hinjewadi", 18.5913, 73.7389, "pune"},
		{"Nagpur", 21.1458, 79.0882, ""},
		{"Mysuru", 12.2958, 76.6394, ""},
		{"Lonavala", 18.7546, 73.4062, ""},
		{"the sea off Chennai", 13.05, 80.50, ""},
		{"null island", 0, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := a.CityAt(tc.lat, tc.lng)
			if got != tc.want || ok != (tc.want != "") {
				t.Errorf("CityAt(%g, %g): got %q, %v; want %q", tc.lat, tc.lng, got, ok, tc.want)
			}
		})
	}
}

// The cover answers as the polygon itself does, at the edges too: random points around each
// city's box against an even-odd test of the ring written here afresh.
func TestCityAtAgreesWithThePolygons(t *testing.T) {
	a, err := geo.DefaultAreas()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewSource(7))
	for _, id := range a.IDs() {
		raw, _ := a.Area(id)
		var g struct {
			Coordinates [][][][2]float64 `json:"coordinates"`
		}
		if err := json.Unmarshal(raw, &g); err != nil {
			t.Fatal(err)
		}
		ring := g.Coordinates[0][0]
		minLat, maxLat, minLng, maxLng := 90.0, -90.0, 180.0, -180.0
		for _, p := range ring {
			minLat, maxLat = min(minLat, p[1]), max(maxLat, p[1])
			minLng, maxLng = min(minLng, p[0]), max(maxLng, p[0])
		}
		inside, outside := 0, 0
		for range 4000 {
			lat := minLat - 0.05 + r.Float64()*(maxLat-minLat+0.1)
			lng := minLng - 0.05 + r.Float64()*(maxLng-minLng+0.1)
			want := evenOdd(ring, lat, lng)
			got, ok := a.CityAt(lat, lng)
			if want != (ok && got == id) {
				t.Fatalf("%s at %.5f,%.5f: got %q, %v; want inside=%v", id, lat, lng, got, ok, want)
			}
			if want {
				inside++
			} else {
				outside++
			}
		}
		if inside < 1000 || outside < 200 {
			t.Errorf("%s: %d points inside, %d outside: the test did not probe both sides", id, inside, outside)
		}
	}
}

func evenOdd(ring [][2]float64, lat, lng float64) bool {
	in := false
	for i := 1; i < len(ring); i++ {
		a, b := ring[i-1], ring[i]
		if (a[1] > lat) != (b[1] > lat) && lng < a[0]+(lat-a[1])/(b[1]-a[1])*(b[0]-a[0]) {
			in = !in
		}
	}
	return in
}

func TestLoadAreasRefuses(t *testing.T) {
	for name, body := range map[string]string{
		"not json":       `{`,
		"no features":    `{"type":"FeatureCollection","features":[]}`,
		"not a multi":    `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"x"},"geometry":{"type":"Polygon","coordinates":[]}}]}`,
		"open ring":      `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"x"},"geometry":{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,1]]]]}}]}`,
		"no id":          `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{},"geometry":{"type":"MultiPolygon","coordinates":[[[[0,0],[1,0],[1,1],[0,0]]]]}}]}`,
		"lat beyond 90":  `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"x"},"geometry":{"type":"MultiPolygon","coordinates":[[[[0,0],[1,95],[1,1],[0,0]]]]}}]}`,
		"a whole region": `{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"id":"x"},"geometry":{"type":"MultiPolygon","coordinates":[[[[70,10],[80,10],[80,20],[70,10]]]]}}]}`,
	} {
		if _, err := geo.LoadAreas(strings.NewReader(body)); !errors.Is(err, dispatch.ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

// The market counts demand in the pickup's cell and its ring over the window, supply from the
// index (available and fresh only), and keeps the level it is given.
func TestMarket(t *testing.T) {
	x, _, _ := newIndex(t)
	m := geo.NewMarket(x, time.Minute)
	ctx := context.Background()
	now := time.Now()
	lat, lng := 18.5308, 73.8475
	for i, age := range []time.Duration{time.Minute, 5 * time.Minute, 14 * time.Minute, 16 * time.Minute} {
		if err := m.AddDemand(ctx, "bk"+string(rune('a'+i)), lat+0.004, lng, now.Add(-age)); err != nil {
			t.Fatal(err)
		}
	}
	_ = m.AddDemand(ctx, "far", 18.70, 73.85, now) // another market
	write(t, x,
		geo.Update{DriverID: "d-avail", Point: pt(lat, lng+0.003, now.UnixMilli()), NewState: dispatch.DriverAvailable},
		geo.Update{DriverID: "d-stale", Point: pt(lat, lng, now.Add(-2*time.Minute).UnixMilli()), NewState: dispatch.DriverAvailable},
		geo.Update{DriverID: "d-busy", Point: pt(lat, lng, now.UnixMilli()), NewState: dispatch.DriverAvailable},
	)
	if err := x.SetState(ctx, "d-busy", dispatch.DriverOnTrip); err != nil {
		t.Fatal(err)
	}
	load, err := m.Load(ctx, lat, lng, 15*time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	// Three requests in the last 15 minutes (the one of 16 minutes ago is out); one driver
	// available and fresh.
	if load.Demand != 3 || load.Supply != 1 || load.Level != -1 || load.Cell != geo.MarketCell(lat, lng).String() {
		t.Errorf("Load: got %+v, want demand 3, supply 1, level -1 in cell %s", load, geo.MarketCell(lat, lng))
	}
	// Supply is counted once a second per cell: a driver taken within the second still counts,
	// and no longer once the count is a second old.
	if err := x.SetState(ctx, "d-avail", dispatch.DriverOnTrip); err != nil {
		t.Fatal(err)
	}
	if load, _ = m.Load(ctx, lat, lng, 15*time.Minute, now); load.Supply != 1 {
		t.Errorf("Load within the second: got supply %d, want the counted 1", load.Supply)
	}
	time.Sleep(1100 * time.Millisecond)
	if load, _ = m.Load(ctx, lat, lng, 15*time.Minute, now); load.Supply != 0 {
		t.Errorf("Load a second later: got supply %d, want 0", load.Supply)
	}
	if err := m.SetLevel(ctx, load.Cell, 2, 1.75, time.Minute); err != nil {
		t.Fatal(err)
	}
	if load, _ = m.Load(ctx, lat, lng, 15*time.Minute, now); load.Level != 2 {
		t.Errorf("Load after SetLevel: got level %d, want 2", load.Level)
	}
	s, err := m.Surges(ctx, []string{load.Cell, "87283082bffffff"})
	if err != nil || len(s) != 1 || s[load.Cell] != 1.75 {
		t.Errorf("Surges: got %v, %v; want {%s: 1.75}", s, err, load.Cell)
	}
}

// BenchmarkCityAt looks up random points over the six cities' boxes (inside, outside and on
// the edges alike).
func BenchmarkCityAt(b *testing.B) {
	a, err := geo.DefaultAreas()
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewSource(1))
	pts := make([][2]float64, 4096)
	boxes := [][4]float64{{12.7, 77.35, 13.3, 77.85}, {28.3, 76.8, 28.95, 77.55}, {18.85, 72.75, 19.35, 73.15}}
	for i := range pts {
		bx := boxes[i%len(boxes)]
		pts[i] = [2]float64{bx[0] + r.Float64()*(bx[2]-bx[0]), bx[1] + r.Float64()*(bx[3]-bx[1])}
	}
	for i := 0; b.Loop(); i++ {
		p := pts[i%len(pts)]
		a.CityAt(p[0], p[1])
	}
}

func BenchmarkLoadAreas(b *testing.B) {
	for b.Loop() {
		if _, err := geo.DefaultAreas(); err != nil {
			b.Fatal(err)
		}
	}
}
