package dispatch_test

import (
	"math"
	"testing"

	"github.com/drivers4me/dispatch/dispatch"
)

func TestDistanceM(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		lat1, lng1, lat2, lng2 float64
		want                   float64
	}{
		{"same point", 12.97, 77.59, 12.97, 77.59, 0},
		{"one degree of latitude", 12, 77, 13, 77, math.Pi * dispatch.EarthRadiusM / 180}, // 111,195 m
		{"one degree of longitude on the equator", 0, 77, 0, 78, math.Pi * dispatch.EarthRadiusM / 180},
		{"antipodes", 0, 0, 0, 180, math.Pi * dispatch.EarthRadiusM},
		// MG Road to Whitefield, Bengaluru: 15.55 km as the crow flies.
		{"across Bengaluru", 12.9756, 77.6066, 12.9698, 77.7500, 15_551},
	} {
		got := dispatch.DistanceM(tc.lat1, tc.lng1, tc.lat2, tc.lng2)
		if math.Abs(got-tc.want) > 1 {
			t.Errorf("%s: got %.1f m, want %.1f", tc.name, got, tc.want)
		}
		cos := func(lat float64) float64 { return math.Cos(lat * math.Pi / 180) }
		if c := dispatch.DistanceCosM(tc.lat1, tc.lng1, cos(tc.lat1), tc.lat2, tc.lng2, cos(tc.lat2)); c != got {
			t.Errorf("%s: with the cosines given got %.3f, want DistanceM's %.3f", tc.name, c, got)
		}
	}
}
