package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/uber/h3-go/v4"
)

type zoomCell struct {
	H3        string       `json:"h3"`
	Supply    int          `json:"supply"`
	Demand    int          `json:"demand"`
	Available int          `json:"available"`
	Busy      int          `json:"busy"`
	Boundary  [][2]float64 `json:"boundary"`
}

type zoomCells struct {
	Res   int        `json:"res"`
	Cells []zoomCell `json:"cells"`
}

// zoomDriver is a test driver on its socket, where it last reported and what it is doing.
type zoomDriver struct {
	id       string
	c        *client
	lat, lng float64
	busy     bool
}

func (d *zoomDriver) move(lat, lng float64) {
	d.lat, d.lng = lat, lng
	d.c.send("location", point(lat, lng))
}

// zoomExpected counts the drivers inside the box per cell at res, the way the contract says:
// available and busy by state, each driver in the cell (at res) of its index cell (resolution 8).
func zoomExpected(ds []*zoomDriver, minLat, minLng, maxLat, maxLng float64, res int) map[string][2]int {
	out := map[string][2]int{}
	for _, d := range ds {
		if d.lat < minLat || d.lat > maxLat || d.lng < minLng || d.lng > maxLng {
			continue
		}
		c := h3.LatLngToCell(h3.LatLng{Lat: d.lat, Lng: d.lng}, 8).Parent(res).String()
		n := out[c]
		if d.busy {
			n[1]++
		} else {
			n[0]++
		}
		out[c] = n
	}
	return out
}

func zoomGot(cs zoomCells) map[string][2]int {
	out := map[string][2]int{}
	for _, c := range cs.Cells {
		if c.Available+c.Busy > 0 {
			out[c.H3] = [2]int{c.Available, c.Busy}
		}
	}
	return out
}

func zoomDiff(got, want map[string][2]int) string {
	var lines []string
	for c, w := range want {
		if g := got[c]; g != w {
			lines = append(lines, fmt.Sprintf("cell %s: got %d available %d busy, want %d and %d", c, g[0], g[1], w[0], w[1]))
		}
	}
	for c, g := range got {
		if _, ok := want[c]; !ok {
			lines = append(lines, fmt.Sprintf("cell %s: got %d available %d busy, want no drivers", c, g[0], g[1]))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "; ")
}

// TestMapAtAnyZoom: a dispatcher zoomed out over 300 km is not refused: it is sent no drivers,
// only counts per cell by state at a coarser resolution, and those counts equal a count of the
// drivers in the area (placed and moved through the drivers' sockets, one of them on a booking),
// as drivers cross the area's edge and one comes online in a region new to the area; zoomed back in, the drivers come one by one again, every
// point of a driver reporting once a second arrives at once (on the map and to the customer
// tracking it), and nothing about a driver outside the area.
func TestMapAtAnyZoom(t *testing.T) {
	s := startServer(t, "real", nil)
	suffix := fmt.Sprint(time.Now().UnixNano())
	var all []*zoomDriver
	add := func(name string, lat, lng float64) *zoomDriver {
		d := &zoomDriver{id: name + "-" + suffix, lat: lat, lng: lng}
		s.registerDriver(t, d.id)
		d.c = liveDriver(t, s, d.id, lat, lng)
		all = append(all, d)
		return d
	}
	// The big box, about 220 x 215 km.
	const minLat, minLng, maxLat, maxLng = 12.0, 76.5, 14.0, 78.5

	// One driver on a booking in the middle, the others at least 40 km away from it.
	busy := add("busy", 12.95, 77.60)
	for i := range 24 {
		add(fmt.Sprint("w", i), 12.1+float64(i%6)*0.3, 76.6+float64(i/6)*0.15)
	}
	var edge []*zoomDriver
	for i := range 3 {
		edge = append(edge, add(fmt.Sprint("edge", i), maxLat-0.0002, 76.8+float64(i)*0.1))
	}
	var outside []*zoomDriver
	for i := range 5 {
		outside = append(outside, add(fmt.Sprint("out", i), 13.0, maxLng+0.0004+float64(i)*0.1))
	}
	placed := time.Now()

	ctok := sign(t, "customer", "zoomc-"+suffix)
	var bk booking
	body := map[string]any{"pickup": map[string]any{"lat": busy.lat, "lng": busy.lng}, "hours": 1, "car": map[string]string{"transmission": "manual"}}
	if st := s.rest(t, "POST", "/v1/bookings", ctok, body, map[string]string{"Idempotency-Key": "zoom-" + suffix}, &bk); st != 201 {
		t.Fatalf("book: %d", st)
	}
	offer := busy.c.expect("offer", 10*time.Second, func(d json.RawMessage) bool { return field(d, "booking_id") == bk.ID })
	if code := busy.c.reply(busy.c.send("offer.accept", map[string]string{"offer_id": field(offer, "offer_id")})); code != "" {
		t.Fatalf("accept: %q", code)
	}
	busy.busy = true
	time.Sleep(300 * time.Millisecond) // the assignment reaches the index

	ops := s.mustDial(t, sign(t, "dispatcher", "zoom-"+suffix))
	ops.send("watch.area", map[string]float64{"min_lat": minLat, "min_lng": minLng, "max_lat": maxLat, "max_lng": maxLng})
	snap := ops.expect("snapshot", 10*time.Second, nil)
	var sn struct {
		Drivers []json.RawMessage `json:"drivers"`
		Mode    string            `json:"mode"`
		Res     int               `json:"res"`
	}
	_ = json.Unmarshal(snap, &sn)
	if len(sn.Drivers) != 0 || sn.Mode != "cells" {
		t.Fatalf("zoomed-out snapshot: got %d drivers and mode %q, want none and \"cells\"", len(sn.Drivers), sn.Mode)
	}
	var cs zoomCells
	_ = json.Unmarshal(ops.expect("cells", 5*time.Second, nil), &cs)
	if cs.Res >= 7 || cs.Res != sn.Res {
		t.Fatalf("zoomed-out cells at resolution %d (snapshot says %d), want one coarser than 7", cs.Res, sn.Res)
	}
	for _, c := range cs.Cells {
		if len(c.Boundary) < 5 {
			t.Fatalf("cell %s has %d boundary points, want an outline", c.H3, len(c.Boundary))
		}
	}
	want := zoomExpected(all, minLat, minLng, maxLat, maxLng, cs.Res)
	if d := zoomDiff(zoomGot(cs), want); d != "" {
		t.Fatalf("the first cells: %s", d)
	}
	total := 0
	for _, c := range cs.Cells {
		total += c.Available + c.Busy
	}
	if total != 28 {
		t.Fatalf("drivers counted in the area: got %d, want 28 (24 + 3 at the edge + 1 busy)", total)
	}

	// The edge drivers step out, one outside steps in (slowly enough to be believed).
	if wait := 2*time.Second - time.Since(placed); wait > 0 {
		time.Sleep(wait)
	}
	for _, d := range edge {
		d.move(maxLat+0.0004, d.lng)
	}
	outside[0].move(13.0, maxLng-0.0004)
	want = zoomExpected(all, minLat, minLng, maxLat, maxLng, cs.Res)
	deadline := time.Now().Add(6 * time.Second)
	last := ""
	for {
		f := <-ops.frames
		if f.Type == "drivers" {
			t.Fatalf("a zoomed-out dispatcher was sent drivers one by one: %s", f.Data)
		}
		if f.Type == "cells" {
			_ = json.Unmarshal(f.Data, &cs)
			if last = zoomDiff(zoomGot(cs), want); last == "" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the moves, the cells never matched the drivers: %s", last)
		}
	}

	// A driver comes online in a region that held none when the area was watched: it is counted
	// within the viewer's next look at the regions (every 10 s).
	add("newtown", 12.5, 78.2)
	want = zoomExpected(all, minLat, minLng, maxLat, maxLng, cs.Res)
	deadline = time.Now().Add(15 * time.Second)
	for {
		f := <-ops.frames
		if f.Type == "drivers" {
			t.Fatalf("a zoomed-out dispatcher was sent drivers one by one: %s", f.Data)
		}
		if f.Type == "cells" {
			_ = json.Unmarshal(f.Data, &cs)
			if last = zoomDiff(zoomGot(cs), want); last == "" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("a driver in a new region was never counted: %s", last)
		}
	}

	// Zoom in on the busy driver: drivers one by one again, and only those inside.
	near := add("near", 12.97, 77.62)
	neighbour := add("neighbour", 12.97, 77.6405)
	const sMinLat, sMinLng, sMaxLat, sMaxLng = 12.95, 77.56, 12.99, 77.64
	time.Sleep(300 * time.Millisecond)
	ops.send("watch.area", map[string]float64{"min_lat": sMinLat, "min_lng": sMinLng, "max_lat": sMaxLat, "max_lng": sMaxLng})
	snap = ops.expect("snapshot", 10*time.Second, nil)
	var small struct {
		Drivers []struct{ ID string } `json:"drivers"`
		Mode    string                `json:"mode"`
	}
	_ = json.Unmarshal(snap, &small)
	var ids []string
	for _, d := range small.Drivers {
		ids = append(ids, d.ID)
	}
	sort.Strings(ids)
	wantIDs := []string{busy.id, near.id}
	sort.Strings(wantIDs)
	if small.Mode != "drivers" || strings.Join(ids, ",") != strings.Join(wantIDs, ",") {
		t.Fatalf("zoomed-in snapshot: got mode %q and drivers %v, want \"drivers\" and %v", small.Mode, ids, wantIDs)
	}

	// The busy driver reports once a second by its own clock, though the network brings its
	// points 900 ms apart: each reaches the dispatcher's map and the customer tracking the booking
	// within half a second of being sent, none held for the socket's second (which would add
	// 100 ms more at each point) nor replaced by the next. The neighbour, just outside, moves
	// too: never a word about it.
	cust := s.mustDial(t, ctok)
	if code := cust.reply(cust.send("watch", map[string]string{"booking_id": bk.ID})); code != "" {
		t.Fatalf("the customer's watch: %q", code)
	}
	var lat []time.Duration
	base, baseTS := time.Now(), time.Now().UnixMilli()
	for i := 1; i <= 9; i++ {
		time.Sleep(time.Until(base.Add(time.Duration(i) * 900 * time.Millisecond)))
		ts := baseTS + int64(i)*1000
		busy.c.send("location", map[string]any{"lat": busy.lat + float64(i)*0.0001, "lng": busy.lng, "acc": 10, "heading": 0, "ts": ts})
		neighbour.c.send("location", point(neighbour.lat+float64(i)*0.0001, neighbour.lng))
		sent := time.Now()
		wantAt := time.UnixMilli(ts).UTC().Format(time.RFC3339Nano)
		toMap, toCustomer := false, false
		until := time.After(500 * time.Millisecond)
	wait:
		for !toMap || !toCustomer {
			select {
			case f := <-ops.frames:
				if f.Type != "drivers" {
					continue
				}
				var u struct {
					Updates []struct {
						ID        string `json:"id"`
						UpdatedAt string `json:"updated_at"`
					} `json:"updates"`
				}
				_ = json.Unmarshal(f.Data, &u)
				for _, d := range u.Updates {
					if d.ID == neighbour.id {
						t.Fatalf("the dispatcher was sent the neighbour outside its area")
					}
					if d.ID == busy.id && d.UpdatedAt == wantAt {
						toMap = true
						lat = append(lat, time.Since(sent))
					}
				}
			case f := <-cust.frames:
				var loc struct {
					TS int64 `json:"ts"`
				}
				if f.Type == "driver.location" && json.Unmarshal(f.Data, &loc) == nil && loc.TS == ts {
					toCustomer = true
				}
			case <-until:
				break wait
			}
		}
		if !toMap || !toCustomer {
			t.Fatalf("point %d of a driver reporting once a second within 500 ms: on the map %v, to the customer %v (latencies so far %v)", i, toMap, toCustomer, lat)
		}
	}
	t.Logf("send-to-receive of a driver reporting once a second: %v", lat)
	if n := s.metric(t, "dispatch_view_frames_outside_area_total"); n != 0 {
		t.Fatalf("server counted %v frames outside areas, want 0", n)
	}
}
