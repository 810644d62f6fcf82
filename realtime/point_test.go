package realtime

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

var pointSeeds = []string{
	`{"lat":12.9716,"lng":77.5946,"acc":8,"heading":90,"speed":8.3,"ts":1795671108220}`,
	` { "ts" : 1 , "lat" : -0.5e1 , "lng":1E+2 } `,
	`{"lat":1,"lat":2,"ts":3}`,
	`{"extra":123.5,"lat":1,"ts":2}`,
	`{}`,
	`{"lat":"north","ts":1}`,
	`{"lat":null,"ts":1}`,
	`{"ts":1.5}`,
	`{"ts":1e3}`,
	`{"ts":99999999999999999999}`,
	`{"LAT":5,"ts":1}`,
	`{"l\u0061t":5,"ts":1}`,
	`{"lat":01,"ts":1}`,
	`{"lat":+1,"ts":1}`,
	`{"lat":1.,"ts":1}`,
	`{"lat":.5,"ts":1}`,
	`{"lat":1e,"ts":1}`,
	`{"lat":1e400,"ts":1}`,
	`{"lat":1,"ts":1}x`,
	`{"lat":1,"ts":1,}`,
	`{"lat":1 "ts":1}`,
	`{"nested":{"a":1},"lat":1}`,
	`[1,2]`,
	``,
	`{"lat":1,"ts":1`,
}

// parsePoint agrees with encoding/json whenever it answers.
func FuzzParsePoint(f *testing.F) {
	for _, s := range pointSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := parsePoint([]byte(s))
		if !ok {
			return
		}
		var want dispatch.Point
		if err := json.Unmarshal([]byte(s), &want); err != nil {
			t.Fatalf("%q: parsed as %+v, but encoding/json says %v", s, got, err)
		}
		if got != want {
			t.Fatalf("%q: got %+v, encoding/json %+v", s, got, want)
		}
	})
}

func TestParsePointFastPath(t *testing.T) {
	for _, tc := range []struct {
		in   string
		fast bool
	}{
		{pointSeeds[0], true},
		{pointSeeds[1], true},
		{pointSeeds[3], true},
		{`{"lat":null,"ts":1}`, false},
		{`{"ts":1.5}`, false},
		{`{"LAT":5,"ts":1}`, false},
		{`{"lat":01,"ts":1}`, false},
	} {
		if _, ok := parsePoint([]byte(tc.in)); ok != tc.fast {
			t.Errorf("%s: got fast path %v, want %v", tc.in, ok, tc.fast)
		}
	}
}

func TestAppendViewsMatchesJSON(t *testing.T) {
	d := 12.5
	at := time.Date(2026, 11, 26, 5, 53, 29, 123000000, time.UTC)
	views := []dispatch.DriverView{
		{ID: "ing-1", Lat: 12.971599, Lng: 77.594566, Heading: 90, State: dispatch.DriverAvailable, UpdatedAt: at},
		{ID: "d", Lat: -0.000001, Lng: 0, Heading: 0, State: dispatch.DriverOnTrip, UpdatedAt: at.Add(time.Millisecond * 877)},
		{ID: `we"ird<id>`, Lat: 1e-9, Lng: 180, State: dispatch.DriverOffline, UpdatedAt: time.Unix(0, 0).UTC()},
		{ID: "named", Name: "Ravi", DistanceM: &d, UpdatedAt: at.In(time.FixedZone("IST", 19800))},
		{ID: "ünï", Lat: 12, Lng: 77, UpdatedAt: at},
	}
	for i := range views {
		want, _ := json.Marshal(views[i : i+1])
		if got := appendViews(nil, views[i:i+1]); string(got) != string(want) {
			t.Errorf("view %d: got %s, want %s", i, got, want)
		}
	}
	want, _ := json.Marshal(views)
	if got := appendViews(nil, views); string(got) != string(want) {
		t.Errorf("all: got %s, want %s", got, want)
	}
}

var envelopeSeeds = []string{
	`{"type":"location","seq":3,"data":{"lat":12.9716,"lng":77.5946,"acc":8,"heading":90,"speed":8.3,"ts":1795671108220}}`,
	`{"type":"location","data":{"lat":1,"ts":2}}`,
	` {"data":{"lat":1,"ts":2},"seq":-4,"type":"location"} `,
	`{"type":"location","seq":1.5,"data":{"lat":1,"ts":2}}`,
	`{"type":"locations","data":{"points":[]}}`,
	`{"type":"location","type":"status","data":{"lat":1,"ts":2}}`,
	`{"Type":"location","data":{"lat":1,"ts":2}}`,
	`{"type":"location","data":{"lat":1,"x":{"a":2},"ts":2}}`,
	`{"type":"location","data":{"lat":"}","ts":2}}`,
	`{"type":"loc\u0061tion","data":{"lat":1,"ts":2}}`,
	`{"type":"location","data":{"lat":1,"ts":2}`,
	`{"type":"location","data":{"lat":1,"ts":2}},`,
	`{"type":"location","seq":null,"data":{"lat":1,"ts":2}}`,
	`{"type":"location","extra":1,"data":{"lat":1,"ts":2}}`,
}

// fastLocation agrees with the envelope and point decoding it stands in for whenever it answers.
func FuzzFastLocation(f *testing.F) {
	for _, s := range envelopeSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		env, ok := fastLocation([]byte(s))
		if !ok {
			return
		}
		want, err := decodeEnvelope([]byte(s))
		if err != nil {
			t.Fatalf("%q: read as %+v, but decodeEnvelope says %v", s, env, err)
		}
		var p dispatch.Point
		if err := decode(want, &p); err != nil {
			t.Fatalf("%q: read as %+v, but its data does not decode: %v", s, env, err)
		}
		if want.Type != env.Type || (want.Seq == nil) != (env.Seq == nil) || (want.Seq != nil && *want.Seq != *env.Seq) || env.point != p {
			t.Fatalf("%q: got %s %v %+v, want %s %v %+v", s, env.Type, env.Seq, env.point, want.Type, want.Seq, p)
		}
	})
}
