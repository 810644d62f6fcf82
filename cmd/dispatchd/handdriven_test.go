//go:build !prod

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/loadtest"
)

// TestHandDrivenBooking is README's "Drive a booking by hand" on the embedded engines of make
// run: the printed driver, kept online by `loadtest drive`, exists (GET /v1/drivers/dev-driver);
// the printed customer books ahead, a dispatcher assigns the driver, and the driver, typing
// arrive, start with the OTP the customer sees, and end, takes the booking to completed.
func TestHandDrivenBooking(t *testing.T) {
	s := startServer(t, "embedded", nil)
	s.registerDriver(t, "dev-driver") // as run-dev.sh does
	dtok, ctok, stok := sign(t, "driver", "dev-driver"), sign(t, "customer", "dev-customer"), sign(t, "dispatcher", "dev-dispatcher")

	typed, keys := io.Pipe()
	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- loadtest.Drive(ctx, loadtest.DriveOptions{URL: "ws://" + s.http + "/v1/ws", Token: dtok,
			Lat: 12.9716, Lng: 77.5946, Every: 200 * time.Millisecond}, typed, out)
	}()
	defer func() {
		cancel()
		keys.Close()
		if err := <-done; err != nil {
			t.Errorf("Drive after cancel: got %v, want nil", err)
		}
		if t.Failed() {
			t.Logf("drive printed:\n%s", out.String())
		}
	}()
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("waited 10 s for %s", what)
			}
		}
	}
	printed := func(line string) func() bool { return func() bool { return strings.Contains(out.String(), line) } }
	var view struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	waitFor("GET /v1/drivers/dev-driver", func() bool {
		return s.rest(t, "GET", "/v1/drivers/dev-driver", stok, nil, nil, &view) == http.StatusOK && view.State == "available"
	})

	start := time.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	var b booking
	if st := s.rest(t, "POST", "/v1/bookings", ctok, fmt.Sprintf(`{"pickup":{"lat":12.9716,"lng":77.5946},"hours":2,"start_at":%q,"car":{"transmission":"manual"}}`, start),
		map[string]string{"Idempotency-Key": "hand-1"}, &b); st != http.StatusCreated || b.Status != "scheduled" {
		t.Fatalf("book ahead: got %d %q, want 201 scheduled", st, b.Status)
	}
	if st := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/assign", stok, `{"driver_id":"dev-driver"}`, nil, &b); st != http.StatusOK || b.Status != "assigned" {
		t.Fatalf("assign: got %d %q, want 200 assigned", st, b.Status)
	}
	waitFor("the driver told of its booking", printed("booking "+b.ID+": assigned"))

	fmt.Fprintln(keys, "arrive")
	waitFor("arrive acknowledged", printed("arrive "+b.ID+": ok"))
	var seen booking
	if st := s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &seen); st != http.StatusOK || seen.Status != "arrived" || seen.OTP == "" {
		t.Fatalf("the customer's view: got %d %q otp %q, want 200 arrived with an OTP", st, seen.Status, seen.OTP)
	}
	// What the simulated fleet is told at the car (devCustomerOTP): this customer's OTP, and
	// nothing of another customer's booking.
	told := devCustomerOTP("http://"+s.http, []byte(testSecret))
	if otp, err := told(context.Background(), b.ID); err != nil || otp != seen.OTP {
		t.Errorf("devCustomerOTP: got %q, %v; want %q, nil", otp, err, seen.OTP)
	}
	var other booking
	if st := s.rest(t, "POST", "/v1/bookings", sign(t, "customer", "someone-else"), fmt.Sprintf(`{"pickup":{"lat":12.9716,"lng":77.5946},"hours":2,"start_at":%q,"car":{"transmission":"manual"}}`, start),
		map[string]string{"Idempotency-Key": "hand-2"}, &other); st != http.StatusCreated {
		t.Fatalf("another customer books: got %d, want 201", st)
	}
	if otp, err := told(context.Background(), other.ID); err == nil {
		t.Errorf("devCustomerOTP of another customer's booking: got %q, want an error", otp)
	}
	fmt.Fprintln(keys, "start 0000x")
	waitFor("a wrong OTP answered", printed("start "+b.ID+": "))
	if strings.Contains(out.String(), "start "+b.ID+": ok") {
		t.Fatalf("a wrong OTP: got it taken, want it refused\n%s", out.String())
	}
	fmt.Fprintln(keys, "start "+seen.OTP)
	waitFor("start acknowledged", printed("booking "+b.ID+": in_progress"))
	fmt.Fprintln(keys, "end")
	waitFor("end acknowledged", printed("end "+b.ID+": ok"))
	if st := s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &seen); st != http.StatusOK || seen.Status != "completed" {
		t.Fatalf("after end: got %d %q, want 200 completed", st, seen.Status)
	}
}
