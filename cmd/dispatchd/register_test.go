package main

import (
	"net/http"
	"testing"
	"time"
)

// registerDriver gives a test driver a verified profile the way operations does (POST
// /v1/drivers, then PATCH verified): since issue 16 an unknown driver is refused online.
func (s *server) registerDriver(t *testing.T, id string, transmissions ...string) {
	t.Helper()
	if len(transmissions) == 0 {
		transmissions = []string{"manual", "automatic"}
	}
	admin := sign(t, "admin", "registrar-"+id)
	body := map[string]any{"id": id, "name": "Driver " + id, "phone": "+919800000000", "licence_no": "KA0120200000001",
		"licence_expires": time.Now().AddDate(3, 0, 0).Format(time.DateOnly), "transmissions": transmissions,
		"cities": []string{"bengaluru"}}
	if st := s.rest(t, "POST", "/v1/drivers", admin, body, nil, nil); st != http.StatusCreated && st != http.StatusConflict {
		t.Fatalf("POST /v1/drivers %s: got %d, want 201", id, st)
	}
	if st := s.rest(t, "PATCH", "/v1/drivers/"+id, admin, map[string]any{"verified": true}, nil, nil); st != http.StatusOK {
		t.Fatalf("PATCH /v1/drivers/%s verified: got %d, want 200", id, st)
	}
}
