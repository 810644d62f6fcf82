package dispatch

import (
	"math"
	"testing"
)

// TestPickupSeconds: the one speed model of the matcher's costs and the customers' ETA: the
// straight line times 1.3 (the detour of a city grid), driven at 20 km/h (5.56 m/s).
func TestPickupSeconds(t *testing.T) {
	for _, c := range []struct {
		metres, want float64
	}{
		{0, 0},
		{1000, 234},   // 1,300 m at 20 km/h: 1300 * 3.6 / 20
		{5000, 1170},  // 6,500 m: 19.5 minutes
		{20000, 4680}, // 26 km: 78 minutes
	} {
		if got := PickupSeconds(c.metres); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("PickupSeconds(%g): got %g, want %g", c.metres, got, c.want)
		}
	}
}
