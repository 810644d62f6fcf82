package api_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/api"
	"github.com/drivers4me/dispatch/dispatch"
	"github.com/rs/zerolog"
)

// owned is a BookingStore holding one booking, bk_1 of customer c1, that records every id it
// is asked for; "bk_broken" fails as a broken query would.
type owned struct {
	dispatch.BookingStore
	mu      sync.Mutex
	asked   []string
	changed int
	created int
}

func (s *owned) Booking(_ context.Context, id string) (dispatch.Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, id)
	switch id {
	case "bk_1":
		return dispatch.Booking{ID: "bk_1", Status: dispatch.StatusSearching, CustomerID: "c1", Hours: 2,
			Pickup: dispatch.Place{Lat: 12.97, Lng: 77.59}, Car: dispatch.Car{Transmission: dispatch.Manual}}, nil
	case "bk_broken":
		return dispatch.Booking{}, errors.New("Error 1054 (42S22): Unknown column 'bookings.x' in 'field list'")
	}
	// As store.translate answers an absent row: the kind and the driver's error in one chain.
	return dispatch.Booking{}, fmt.Errorf("%w: %w", dispatch.ErrNotFound, sql.ErrNoRows)
}

func (s *owned) Transition(_ context.Context, c dispatch.Change) (dispatch.Booking, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.changed++
	return dispatch.Booking{ID: c.BookingID, Status: c.To, CustomerID: "c1"}, nil
}

func (s *owned) CreateBooking(_ context.Context, nb dispatch.NewBooking) (dispatch.Booking, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.created++
	return dispatch.Booking{ID: nb.ID, Status: dispatch.StatusSearching, CustomerID: nb.CustomerID}, true, nil
}

type requester struct {
	t     *testing.T
	h     func(*httptest.ResponseRecorder, *httptestRequest)
	store *owned
	log   *bytes.Buffer
}

type httptestRequest struct {
	method, path, role, sub, body string
	header                        map[string]string
}

func newRequester(t *testing.T) *requester {
	store := &owned{}
	svc := dispatch.NewService(store, nil, nil, dispatch.ServiceOptions{Now: func() time.Time { return fuzzNow }})
	var log bytes.Buffer
	srv := api.NewServer(svc, nil, api.Options{Verifier: api.NewVerifier([]byte(fuzzSecret), "", ""), ServeAPI: true,
		Ready: func(context.Context) error { return nil }}, zerolog.New(&log)).Handler()
	r := &requester{t: t, store: store, log: &log}
	r.h = func(rec *httptest.ResponseRecorder, q *httptestRequest) {
		req := httptest.NewRequest(q.method, q.path, strings.NewReader(q.body))
		tok, err := api.Sign([]byte(fuzzSecret), q.role, q.sub, time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		for k, v := range q.header {
			req.Header.Set(k, v)
		}
		srv.ServeHTTP(rec, req)
	}
	return r
}

func (r *requester) do(q httptestRequest) (int, apiError, string) {
	rec := httptest.NewRecorder()
	r.h(rec, &q)
	var e apiError
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	return rec.Code, e, rec.Body.String()
}

const quoteBody = `{"pickup":{"lat":12.97,"lng":77.59},"hours":2,"car":{"transmission":"manual"}}`

// TestRequestRefusals drives the handler as a client would: invalid UTF-8 anywhere in a request
// is 400 invalid_argument and reaches no store; only application/json (with parameters) is
// JSON; a 404 tells nothing of the server and the same for absent and someone else's.
func TestRequestRefusals(t *testing.T) {
	r := newRequester(t)
	for _, c := range []struct {
		name    string
		q       httptestRequest
		status  int
		code    string
		message string
	}{
		{"invalid UTF-8 in the path id", httptestRequest{method: "GET", path: "/v1/bookings/bk%FF", role: "customer", sub: "c1"}, 400, "invalid_argument", "the path is not valid UTF-8"},
		{"invalid UTF-8 in an action's path", httptestRequest{method: "POST", path: "/v1/bookings/%C3%28/cancel", role: "customer", sub: "c1"}, 400, "invalid_argument", "the path is not valid UTF-8"},
		{"invalid UTF-8 in the query", httptestRequest{method: "GET", path: "/v1/bookings?status=%FF", role: "dispatcher", sub: "d1"}, 400, "invalid_argument", "the query is not valid UTF-8"},
		{"invalid UTF-8 in Idempotency-Key", httptestRequest{method: "POST", path: "/v1/bookings", role: "customer", sub: "c1", body: quoteBody,
			header: map[string]string{"Idempotency-Key": "k\xff", "Content-Type": "application/json"}}, 400, "invalid_argument", "Idempotency-Key is not valid UTF-8"},
		{"invalid UTF-8 in the body", httptestRequest{method: "POST", path: "/v1/bookings/bk_1/cancel", role: "customer", sub: "c1", body: "{\"reason\":\"late \xff\"}",
			header: map[string]string{"Content-Type": "application/json"}}, 400, "invalid_argument", "the body is not valid UTF-8"},
		{"application/jsonxyz is no JSON", httptestRequest{method: "POST", path: "/v1/quotes", role: "customer", sub: "c1", body: quoteBody,
			header: map[string]string{"Content-Type": "application/jsonxyz"}}, 400, "invalid_argument", "Content-Type must be application/json"},
		{"text/plain is no JSON", httptestRequest{method: "POST", path: "/v1/quotes", role: "customer", sub: "c1", body: quoteBody,
			header: map[string]string{"Content-Type": "text/plain"}}, 400, "invalid_argument", "Content-Type must be application/json"},
		{"application/json with a charset is JSON", httptestRequest{method: "POST", path: "/v1/quotes", role: "customer", sub: "c1", body: quoteBody,
			header: map[string]string{"Content-Type": "application/json; charset=utf-8"}}, 200, "", ""},
		{"absent booking", httptestRequest{method: "GET", path: "/v1/bookings/bk_none", role: "customer", sub: "c2"}, 404, "not_found", "not found"},
		{"someone else's booking", httptestRequest{method: "GET", path: "/v1/bookings/bk_1", role: "customer", sub: "c2"}, 404, "not_found", "not found"},
		{"cancel an absent booking", httptestRequest{method: "POST", path: "/v1/bookings/bk_none/cancel", role: "customer", sub: "c2"}, 404, "not_found", "not found"},
		{"cancel someone else's", httptestRequest{method: "POST", path: "/v1/bookings/bk_1/cancel", role: "customer", sub: "c2"}, 404, "not_found", "not found"},
		{"a broken query", httptestRequest{method: "GET", path: "/v1/bookings/bk_broken", role: "dispatcher", sub: "d1"}, 500, "internal", "internal error"},
		{"an unknown endpoint: api's own text", httptestRequest{method: "GET", path: "/v1/nowhere", role: "customer", sub: "c2"}, 404, "not_found", "no such endpoint"},
	} {
		t.Run(c.name, func(t *testing.T) {
			asked, changed, created := len(r.store.asked), r.store.changed, r.store.created
			status, e, body := r.do(c.q)
			if status != c.status || e.Error.Code != c.code || e.Error.Message != c.message {
				t.Fatalf("got %d %q %q, want %d %q %q", status, e.Error.Code, e.Error.Message, c.status, c.code, c.message)
			}
			for _, leak := range []string{"sql", "rows", "Unknown column", "bk_"} {
				if status >= 400 && strings.Contains(body, leak) {
					t.Errorf("got %s, want nothing of %q", body, leak)
				}
			}
			if status == 400 && (len(r.store.asked) != asked || r.store.changed != changed || r.store.created != created) {
				t.Errorf("got the store asked %v, %d changes, %d created, want a refusal to reach no store", r.store.asked[asked:], r.store.changed-changed, r.store.created-created)
			}
		})
	}
}

// TestDroppedErrorsLogged: what a client is not told (an internal error's cause) is in the
// log, with the path, and without the token.
func TestDroppedErrorsLogged(t *testing.T) {
	r := newRequester(t)
	if status, _, _ := r.do(httptestRequest{method: "GET", path: "/v1/bookings/bk_broken", role: "dispatcher", sub: "d1"}); status != 500 {
		t.Fatalf("got %d, want 500", status)
	}
	var line struct {
		Level, Error, Path, Message string
	}
	if err := json.Unmarshal(r.log.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", r.log.String(), err)
	}
	if line.Level != "error" || !strings.Contains(line.Error, "Unknown column") || line.Path != "/v1/bookings/bk_broken" {
		t.Errorf("got log %q, want an error line with the cause and the path", r.log.String())
	}
	if strings.Contains(r.log.String(), "Bearer") || strings.Contains(r.log.String(), "eyJ") {
		t.Errorf("got log %q, want no token in it", r.log.String())
	}
}
