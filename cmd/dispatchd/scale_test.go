package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A driver whose phone drops in the middle of an offer is not waited for: after the grace the
// offer is revoked and the booking goes to the next driver, long before the offer would have
// expired. A driver who comes back within the grace keeps the offer.
func TestGoneDriverRevoked(t *testing.T) {
	s := startServer(t, "real", map[string]string{"DISPATCH_DRIVER_GONE_GRACE": "700ms", "DISPATCH_OFFER_TIMEOUT": "30s"})
	suffix := fmt.Sprint(time.Now().UnixNano())
	lat, lng := 12.93+float64(time.Now().UnixNano()%1000)/20000, 77.66
	online := func(id string, north float64) *client {
		s.registerDriver(t, id)
		c := s.mustDial(t, sign(t, "driver", id))
		c.expect("hello", 5*time.Second, nil)
		if code := c.reply(c.send("status", map[string]string{"state": "online"})); code != "" {
			t.Fatalf("%s online: got %q, want ack", id, code)
		}
		c.send("location", point(lat+north, lng))
		return c
	}
	book := func(n int) booking {
		var b booking
		body := map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": 2, "car": map[string]string{"transmission": "manual"}}
		if st := s.rest(t, "POST", "/v1/bookings", sign(t, "customer", "cust-"+suffix), body,
			map[string]string{"Idempotency-Key": fmt.Sprintf("gone-%s-%d", suffix, n)}, &b); st != http.StatusCreated {
			t.Fatalf("book: got %d, want 201", st)
		}
		return b
	}
	isFor := func(id string) func(json.RawMessage) bool {
		return func(d json.RawMessage) bool { return field(d, "booking_id") == id }
	}

	// Back within the grace: the offer stays, and is sent again on the new socket.
	near := "near-" + suffix
	d1 := online(near, 0.0027) // 300 m
	time.Sleep(300 * time.Millisecond)
	b1 := book(1)
	first := d1.expect("offer", 5*time.Second, isFor(b1.ID))
	d1.ws.Close()
	d1 = s.mustDial(t, sign(t, "driver", near))
	d1.expect("hello", 5*time.Second, nil)
	again := d1.expect("offer", 5*time.Second, isFor(b1.ID))
	if field(again, "offer_id") != field(first, "offer_id") {
		t.Fatalf("after a reconnect within the grace: got offer %s, want %s again", field(again, "offer_id"), field(first, "offer_id"))
	}
	time.Sleep(1500 * time.Millisecond) // past the grace of the first socket
	if code := d1.reply(d1.send("offer.accept", map[string]string{"offer_id": field(first, "offer_id")})); code != "" {
		t.Fatalf("accepting the offer kept over a reconnect: got %q, want ack", code)
	}

	// Gone for good: the booking goes to the next driver within the grace and a window.
	gone := "gone-" + suffix
	d2 := online(gone, -0.0027)
	d3 := online("next-"+suffix, -0.0081) // 900 m
	time.Sleep(300 * time.Millisecond)
	b2 := book(2)
	d2.expect("offer", 5*time.Second, isFor(b2.ID))
	dropped := time.Now()
	d2.ws.Close()
	d3.expect("offer", 5*time.Second, isFor(b2.ID))
	if waited := time.Since(dropped); waited > 4*time.Second {
		t.Fatalf("re-offered %s after the socket closed, want within the grace and a window", waited)
	}
	var st struct {
		State string `json:"state"`
	}
	if code := s.rest(t, "GET", "/v1/drivers/"+gone, sign(t, "dispatcher", "disp"), nil, nil, &st); code != 200 || st.State != "offline" {
		t.Fatalf("the gone driver: got %d %q, want 200 offline", code, st.State)
	}
	if n := invariantViolations(t, s.dsn); n != 0 {
		t.Fatalf("invariant violations: got %d, want 0", n)
	}
}

// The 19,000-driver stall, at a size the suite affords: while a thousand drivers connect at
// once (each hello, status and point a query or more on the sockets' pool), a booking made in
// the middle of the storm is still offered, within 10 s of its creation (the stall this guards
// against lasted 67 s; the figure itself is logged, not asserted, as load on the machine moves
// it): the matcher has a pool of its own and reads no profile per candidate.
func TestMatcherProgressWhileSocketsConnect(t *testing.T) {
	s := startServer(t, "real", map[string]string{"DISPATCH_RATE_PER_ADDR": "0",
		"DISPATCH_RATE_PER_USER": "0"})
	suffix := fmt.Sprint(time.Now().UnixNano())
	lat, lng := 12.95+float64(time.Now().UnixNano()%1000)/20000, 77.70
	s.registerDriver(t, "first-"+suffix)
	d := s.mustDial(t, sign(t, "driver", "first-"+suffix))
	d.expect("hello", 5*time.Second, nil)
	if code := d.reply(d.send("status", map[string]string{"state": "online"})); code != "" {
		t.Fatalf("online: %q", code)
	}
	d.send("location", point(lat+0.002, lng))

	const storm = 1000
	// Registered beforehand, as operations registers drivers (the storm is about connecting).
	var reg sync.WaitGroup
	ids := make(chan int)
	for w := 0; w < 8; w++ {
		reg.Add(1)
		go func() {
			defer reg.Done()
			for i := range ids {
				s.registerDriver(t, fmt.Sprintf("storm-%s-%d", suffix, i))
			}
		}()
	}
	for i := 0; i < storm; i++ {
		ids <- i
	}
	close(ids)
	reg.Wait()
	var wg sync.WaitGroup
	var connected atomic.Int64
	start := make(chan struct{})
	for i := 0; i < storm; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			c, _, err := s.dial(t, sign(t, "driver", fmt.Sprintf("storm-%s-%d", suffix, i)))
			if err != nil {
				return
			}
			for f := range c.frames {
				if f.Type == "hello" {
					break
				}
			}
			c.send("status", map[string]string{"state": "online"})
			c.send("location", point(lat+0.3+float64(i%100)*0.001, lng+float64(i/100)*0.01)) // 30 km off: no rival
			connected.Add(1)
		}(i)
	}
	close(start)
	time.Sleep(200 * time.Millisecond) // the storm is under way
	var b booking
	body := map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": 2, "car": map[string]string{"transmission": "manual"}}
	booked := time.Now()
	if st := s.rest(t, "POST", "/v1/bookings", sign(t, "customer", "c-"+suffix), body,
		map[string]string{"Idempotency-Key": "storm-" + suffix}, &b); st != http.StatusCreated {
		t.Fatalf("book: got %d, want 201", st)
	}
	created := time.Now()
	d.expect("offer", 10*time.Second, func(m json.RawMessage) bool { return field(m, "booking_id") == b.ID })
	waited := time.Since(booked)
	t.Logf("the booking's POST took %s (the API's pool is the sockets'; not the matcher's concern)", created.Sub(booked))
	during := connected.Load()
	wg.Wait()
	t.Logf("offered %s after booking, with %d of %d drivers connected by then", waited, during, storm)
	if during >= storm {
		t.Logf("the storm was over before the offer: the machine was fast; the bound still holds")
	}
}
