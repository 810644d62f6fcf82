package loadtest

import (
	"math"
	"os"
	"testing"
)

// TestTenths: ten tiles of equal size that cover the city's box exactly, none overlapping.
func TestTenths(t *testing.T) {
	c := Bengaluru
	ts := c.Tenths()
	if len(ts) != 10 {
		t.Fatalf("got %d tiles, want 10", len(ts))
	}
	area := 0.0
	for _, a := range ts {
		if a.MinLat < c.MinLat-1e-9 || a.MaxLat > c.MaxLat+1e-9 || a.MinLng < c.MinLng-1e-9 || a.MaxLng > c.MaxLng+1e-9 {
			t.Fatalf("tile %s %+v leaves the city's box", a.Name, a)
		}
		area += (a.MaxLat - a.MinLat) * (a.MaxLng - a.MinLng)
	}
	if want := (c.MaxLat - c.MinLat) * (c.MaxLng - c.MinLng); math.Abs(area-want) > 1e-9 {
		t.Fatalf("tiles cover %g square degrees, want %g (the box)", area, want)
	}
}

// TestProcCPU reads this process's CPU time, and refuses a process that is not there.
func TestProcCPU(t *testing.T) {
	s, err := procCPU(os.Getpid())
	if err != nil || s < 0 {
		t.Fatalf("got %v, %v; want a CPU time", s, err)
	}
	if _, err := procCPU(0); err == nil {
		t.Fatal("pid 0: got no error, want one")
	}
}
