package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// liveDriver connects a registered driver (registerDriver), puts it online at a point and returns its socket.
func liveDriver(t *testing.T, s *server, id string, lat, lng float64) *client {
	t.Helper()
	d := s.mustDial(t, sign(t, "driver", id))
	d.expect("hello", 5*time.Second, nil)
	if code := d.reply(d.send("status", map[string]string{"state": "online"})); code != "" {
		t.Fatalf("%s online: %q", id, code)
	}
	d.send("location", point(lat, lng))
	return d
}

// metric reads one counter or gauge from the admin address.
func (s *server) metric(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + s.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name+" ") {
			var v float64
			fmt.Sscanf(strings.TrimPrefix(line, name+" "), "%g", &v)
			return v
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

// TestDispatcherSeesOnlyItsArea: a snapshot, then deltas about drivers inside the area only,
// each driver at most once a second, plus supply and demand cells with their outlines.
func TestDispatcherSeesOnlyItsArea(t *testing.T) {
	s := startServer(t, "real", nil)
	suffix := fmt.Sprint(time.Now().UnixNano())
	inside, outside := "in-"+suffix, "out-"+suffix
	// The area: a 2 km box; "outside" drives 5 km east of it, in the same region.
	minLat, minLng, maxLat, maxLng := 12.95, 77.58, 12.968, 77.598
	s.registerDriver(t, inside)
	s.registerDriver(t, outside)
	din := liveDriver(t, s, inside, 12.959, 77.589)
	dout := liveDriver(t, s, outside, 12.959, 77.64)
	time.Sleep(200 * time.Millisecond)

	ops := s.mustDial(t, sign(t, "dispatcher", "ops-"+suffix))
	ops.send("watch.area", map[string]float64{"min_lat": minLat, "min_lng": minLng, "max_lat": maxLat, "max_lng": maxLng})
	snap := ops.expect("snapshot", 5*time.Second, nil) // the answer comes before the ack
	var sn struct {
		Drivers []struct{ ID string } `json:"drivers"`
	}
	_ = json.Unmarshal(snap, &sn)
	ids := map[string]bool{}
	for _, d := range sn.Drivers {
		ids[d.ID] = true
	}
	if !ids[inside] || ids[outside] {
		t.Fatalf("snapshot: inside %v, outside %v; want inside only", ids[inside], ids[outside])
	}

	// Both drive for 3 s at 5 points a second; count what the dispatcher hears of each.
	start := time.Now()
	for i := 1; i <= 15; i++ {
		din.send("location", point(12.959+float64(i)*0.00005, 77.589))
		dout.send("location", point(12.959+float64(i)*0.00005, 77.64))
		time.Sleep(200 * time.Millisecond)
	}
	heard := map[string]int{}
	cells := 0
	deadline := time.After(1500 * time.Millisecond)
loop:
	for {
		select {
		case f := <-ops.frames:
			switch f.Type {
			case "drivers":
				var d struct {
					Updates []struct{ ID string } `json:"updates"`
				}
				_ = json.Unmarshal(f.Data, &d)
				for _, u := range d.Updates {
					heard[u.ID]++
				}
			case "cells":
				var c struct {
					Cells []struct {
						H3       string       `json:"h3"`
						Supply   int          `json:"supply"`
						Boundary [][2]float64 `json:"boundary"`
					} `json:"cells"`
				}
				_ = json.Unmarshal(f.Data, &c)
				for _, cell := range c.Cells {
					if cell.Supply > 0 && len(cell.Boundary) >= 5 && cell.H3 != "" {
						cells++
					}
				}
			}
		case <-deadline:
			break loop
		}
	}
	elapsed := time.Since(start).Seconds()
	if heard[outside] != 0 {
		t.Fatalf("the dispatcher heard %d updates about a driver outside its area, want 0", heard[outside])
	}
	if heard[inside] < 2 || float64(heard[inside]) > elapsed+1 {
		t.Fatalf("updates about the inside driver: got %d in %.1f s, want between 2 and one a second", heard[inside], elapsed)
	}
	if cells == 0 {
		t.Fatalf("no cells frame with supply and an outline")
	}
	if n := s.metric(t, "dispatch_view_frames_outside_area_total"); n != 0 {
		t.Fatalf("server counted %v frames outside areas, want 0", n)
	}
}

// TestFanOutAcrossGateways: a customer on gateway B follows a driver connected to gateway A,
// for a booking made through B's API and matched by whichever process owns the region.
func TestFanOutAcrossGateways(t *testing.T) {
	a := startServer(t, "real", nil)
	shared := map[string]string{"MYSQL_DSN": a.dsn, "DISPATCH_REDIS_PREFIX": a.prefix(t)}
	b := startServer(t, "real", shared)
	suffix := fmt.Sprint(time.Now().UnixNano())
	lat, lng := 13.02, 77.50+float64(time.Now().UnixNano()%1000)/40000
	a.registerDriver(t, "fan-"+suffix)
	drv := liveDriver(t, a, "fan-"+suffix, lat+0.002, lng)
	ctok := sign(t, "customer", "fanc-"+suffix)
	var bk booking
	body := map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": 1, "car": map[string]string{"transmission": "manual"}}
	if st := b.rest(t, "POST", "/v1/bookings", ctok, body, map[string]string{"Idempotency-Key": "fan-" + suffix}, &bk); st != 201 {
		t.Fatalf("book on B: %d", st)
	}
	cust := b.mustDial(t, ctok)
	if code := cust.reply(cust.send("watch", map[string]string{"booking_id": bk.ID})); code != "" {
		t.Fatalf("watch on B: %q", code)
	}
	offer := drv.expect("offer", 5*time.Second, func(d json.RawMessage) bool { return field(d, "booking_id") == bk.ID })
	if code := drv.reply(drv.send("offer.accept", map[string]string{"offer_id": field(offer, "offer_id")})); code != "" {
		t.Fatalf("accept on A: %q", code)
	}
	cust.expect("booking", 5*time.Second, func(d json.RawMessage) bool { return field(d, "status") == "assigned" })
	// Five points a second for two seconds: the customer hears at most one a second.
	start := time.Now()
	for i := 1; i <= 10; i++ {
		drv.send("location", point(lat+0.002-float64(i)*0.0001, lng))
		time.Sleep(200 * time.Millisecond)
	}
	got := 0
	deadline := time.After(1200 * time.Millisecond)
count:
	for {
		select {
		case f := <-cust.frames:
			if f.Type == "driver.location" {
				got++
			}
		case <-deadline:
			break count
		}
	}
	if elapsed := time.Since(start).Seconds(); got < 1 || float64(got) > elapsed+1 {
		t.Fatalf("driver.location frames on B: got %d in %.1f s, want at least 1 and at most one a second", got, elapsed)
	}
}

// prefix returns the Redis prefix the server was started with.
func (s *server) prefix(t *testing.T) string {
	t.Helper()
	if s.env["DISPATCH_REDIS_PREFIX"] == "" {
		t.Fatal("server has no Redis prefix")
	}
	return s.env["DISPATCH_REDIS_PREFIX"]
}
