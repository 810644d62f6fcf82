package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/api"
	"github.com/drivers4me/dispatch/dispatch"
	"github.com/rs/zerolog"
)

const fuzzSecret = "fuzz-secret-of-at-least-32-bytes-0123456789"

// fuzzNow is the service's clock in the fuzz target: seeds with a start_at keep their meaning.
var fuzzNow = time.Date(2026, 3, 14, 9, 30, 0, 0, time.UTC)

// bookings is the part of dispatch.BookingStore that creating a booking touches.
type bookings struct {
	dispatch.BookingStore
	mu      sync.Mutex
	created []dispatch.NewBooking
}

func (s *bookings) CreateBooking(_ context.Context, nb dispatch.NewBooking) (dispatch.Booking, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.created = append(s.created, nb)
	st := dispatch.StatusSearching
	if nb.Scheduled {
		st = dispatch.StatusScheduled
	}
	return dispatch.Booking{ID: nb.ID, Status: st, CustomerID: nb.CustomerID, Pickup: nb.Pickup, Hours: nb.Hours,
		StartAt: nb.StartAt, CreatedAt: nb.CreatedAt, Car: nb.Car, OTP: nb.OTP, Fare: nb.Fare, Version: 1}, true, nil
}

func (s *bookings) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.created)
}

func (s *bookings) last() dispatch.NewBooking {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created[len(s.created)-1]
}

type apiError struct {
	Error struct{ Code, Message string } `json:"error"`
}

// FuzzBookingRequest posts any body to POST /v1/quotes and POST /v1/bookings as a customer:
// neither ever answers 5xx; they agree on what is valid; a refusal is 400 invalid_argument with
// a message and creates nothing; a booking created is one of the customer's, within every
// bound of API.md, and its fare's lines add up to its positive total.
func FuzzBookingRequest(f *testing.F) {
	for _, s := range []string{
		`{"pickup":{"lat":12.9716,"lng":77.5946,"address":"MG Road"},"hours":3,"car":{"transmission":"manual"}}`,
		`{"pickup":{"lat":12.9716,"lng":77.5946},"hours":1,"car":{"transmission":"automatic"},"start_at":"2026-03-15T06:00:00+05:30"}`,
		`{"pickup":{"lat":-90,"lng":180},"hours":24,"car":{"transmission":"manual"},"start_at":"2026-03-21T09:29:00Z"}`,
		`{"pickup":{"lat":12.97,"lng":77.59},"hours":25,"car":{"transmission":"manual"}}`,
		`{"pickup":{"lat":0,"lng":0},"hours":2,"car":{"transmission":"manual"}}`,
		`{"pickup":{"lat":91,"lng":77.59},"hours":2,"car":{"transmission":"manual"}}`,
		`{"pickup":{"lat":"12.97","lng":77.59},"hours":2,"car":{"transmission":"manual"}}`,
		`{"pickup":{"lat":12.97,"lng":77.59},"hours":1.5,"car":{"transmission":"manual"}}`,
		`{"pickup":{"lat":12.97,"lng":77.59},"hours":2,"car":{"transmission":"hover"}}`,
		`{"pickup":{"lat":12.97,"lng":77.59},"hours":2,"car":{"transmission":"manual"},"start_at":"2026-03-14T09:00:00Z"}`,
		`{"pickup":{"lat":12.97,"lng":77.59},"hours":2,"car":{"transmission":"manual"},"start_at":"2027-01-01T00:00:00Z"}`,
		`{"pickup":{"lat":12.97,"lng":77.59},"hours":2,"car":{"transmission":"manual"},"start_at":"soon"}`,
		`{"pickup":{"lat":1e308,"lng":-1e308},"hours":-9223372036854775808}`,
		`{"pickup":{"lat":12.97,"lng":77.59},"hours":2}`,
		`{"hours":2}`, `{}`, `null`, `[]`, `"booking"`, ``, `{"pickup":`, `{"hours":2} {"hours":3}`,
	} {
		f.Add(s)
	}
	store := &bookings{}
	svc := dispatch.NewService(store, nil, nil, dispatch.ServiceOptions{Now: func() time.Time { return fuzzNow }})
	srv := api.NewServer(svc, nil, api.Options{Verifier: api.NewVerifier([]byte(fuzzSecret), "", ""), ServeAPI: true,
		Ready: func(context.Context) error { return nil }}, zerolog.Nop()).Handler()
	tok, err := api.Sign([]byte(fuzzSecret), "customer", "c-fuzz", time.Hour, "", "")
	if err != nil {
		f.Fatal(err)
	}
	key := 0
	post := func(path, body string) (*httptest.ResponseRecorder, apiError) {
		req := httptest.NewRequest("POST", path, bytes.NewBufferString(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		key++
		req.Header.Set("Idempotency-Key", fmt.Sprint("fuzz-", key))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		var e apiError
		_ = json.Unmarshal(rec.Body.Bytes(), &e)
		return rec, e
	}
	f.Fuzz(func(t *testing.T, body string) {
		q, qe := post("/v1/quotes", body)
		before := store.count()
		b, be := post("/v1/bookings", body)
		for name, r := range map[string]*httptest.ResponseRecorder{"quote": q, "booking": b} {
			if r.Code >= 500 {
				t.Fatalf("%s of %q: got %d %s", name, body, r.Code, r.Body)
			}
		}
		// A quote's car is optional (manual when absent), a booking's is not: the one body they
		// may disagree on lacks a transmission, and the booking says so.
		noCar := q.Code == 200 && b.Code == 400 && strings.Contains(be.Error.Message, "car.transmission")
		if (q.Code == 200) != (b.Code == http.StatusCreated) && !noCar {
			t.Fatalf("body %q: quote answered %d but booking %d: they must agree on what is valid", body, q.Code, b.Code)
		}
		for name, c := range map[string]struct {
			code int
			e    apiError
		}{"quote": {q.Code, qe}, "booking": {b.Code, be}} {
			if c.code == 400 && (c.e.Error.Code != "invalid_argument" || c.e.Error.Message == "") {
				t.Fatalf("%s of %q: got 400 %+v, want invalid_argument with a message", name, body, c.e.Error)
			}
			if c.code != 400 && c.code/100 != 2 {
				t.Fatalf("%s of %q: got %d, want 2xx or 400", name, body, c.code)
			}
		}
		if b.Code != http.StatusCreated {
			if store.count() != before {
				t.Fatalf("refused body %q created a booking", body)
			}
			return
		}
		if store.count() != before+1 {
			t.Fatalf("body %q: %d bookings created, want 1", body, store.count()-before)
		}
		nb := store.last()
		switch {
		case nb.CustomerID != "c-fuzz":
			t.Fatalf("created for %q, want the caller", nb.CustomerID)
		case nb.Hours < 1 || nb.Hours > 24:
			t.Fatalf("created with hours %d", nb.Hours)
		case !(nb.Pickup.Lat >= -90 && nb.Pickup.Lat <= 90 && nb.Pickup.Lng >= -180 && nb.Pickup.Lng <= 180):
			t.Fatalf("created with pickup %+v", nb.Pickup)
		case nb.Pickup.Lat == 0 && nb.Pickup.Lng == 0:
			t.Fatalf("created without a pickup")
		case len(nb.Pickup.Address) > 500:
			t.Fatalf("created with an address of %d bytes", len(nb.Pickup.Address))
		case nb.Car.Transmission != dispatch.Manual && nb.Car.Transmission != dispatch.Automatic:
			t.Fatalf("created with transmission %q", nb.Car.Transmission)
		case nb.StartAt.Before(fuzzNow.Add(-5*time.Minute)) || nb.StartAt.After(fuzzNow.Add(7*24*time.Hour)):
			t.Fatalf("created starting at %s", nb.StartAt)
		case len(nb.OTP) != 6:
			t.Fatalf("created with OTP %q", nb.OTP)
		}
		var sum int64
		for _, l := range nb.Fare.Lines {
			sum += l.AmountPaise
		}
		if nb.Fare.TotalPaise <= 0 || sum != nb.Fare.TotalPaise {
			t.Fatalf("fare lines add up to %d, total %d", sum, nb.Fare.TotalPaise)
		}
		var got dispatch.Booking
		if err := json.Unmarshal(b.Body.Bytes(), &got); err != nil || got.ID != nb.ID {
			t.Fatalf("answer %s is not the booking created (%v)", b.Body, err)
		}
		if got.OTP != "" {
			t.Fatalf("answer %s shows the OTP before a driver is assigned", b.Body)
		}
	})
}
