package api

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/go-sql-driver/mysql"
)

// TestErrorMapping: one case per mapping rule, through writeError as a handler answers: the
// kind decides the status and the code (statuses), dispatch.Message the text.
func TestErrorMapping(t *testing.T) {
	dup := &mysql.MySQLError{Number: 1062, Message: "Duplicate entry 'bk_1' for key 'PRIMARY'"}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	unavailable := "a backing service is unavailable; retry"
	for _, c := range []struct {
		name       string
		err        error
		status     int
		code, msg  string
		notInReply string
	}{
		{"invalid: its own text", fmt.Errorf("hours must be 1 to 24: %w", dispatch.ErrInvalid), 400, "invalid_argument", "hours must be 1 to 24: invalid argument", ""},
		{"api's own text, as written", dispatch.Errorf(dispatch.InvalidArgument, "limit must be 1 to 500"), 400, "invalid_argument", "limit must be 1 to 500", ""},
		{"unauthenticated", dispatch.Errorf(dispatch.Unauthenticated, "a valid bearer token is required"), 401, "unauthenticated", "a valid bearer token is required", ""},
		{"forbidden", dispatch.Errorf(dispatch.PermissionDenied, "a driver may not make this call"), 403, "permission_denied", "a driver may not make this call", ""},
		// The store's translation of an absent row keeps sql.ErrNoRows in the chain.
		{"absent: nothing of the server", fmt.Errorf("booking bk_9: %w", &dispatch.Error{Kind: dispatch.NotFound, Msg: "not found", Err: sql.ErrNoRows}), 404, "not_found", "not found", "sql"},
		{"someone else's: the same text", fmt.Errorf("booking bk_9: %w", dispatch.ErrNotFound), 404, "not_found", "not found", "bk_9"},
		{"conflict: its own text", fmt.Errorf("assign: %w", errors.Join(dispatch.ErrConflict, errors.New("booking is completed, not [searching]"))), 409, "conflict", "assign: conflict\nbooking is completed, not [searching]", ""},
		{"conflict from a driver's error: generic", &dispatch.Error{Kind: dispatch.Conflict, Msg: "conflict", Err: dup}, 409, "conflict", "the request conflicts with the current state", "Duplicate"},
		{"invalid from a runtime error: generic", errors.Join(dispatch.ErrInvalid, &json.SyntaxError{}), 400, "invalid_argument", "the request is not valid", ""},
		{"idempotency mismatch", fmt.Errorf("key k1: %w", dispatch.ErrIdempotencyMismatch), 422, "idempotency_mismatch", "key k1: " + dispatch.ErrIdempotencyMismatch.Error(), ""},
		{"out of service area", dispatch.ErrOutOfServiceArea, 422, "out_of_service_area", "pickup is outside every service area", ""},
		{"rate limited", dispatch.Errorf(dispatch.RateLimited, "too many requests; slow down"), 429, "rate_limited", "too many requests; slow down", ""},
		{"otp locked", fmt.Errorf("trip start locked until 10:15: %w", dispatch.ErrOTPLocked), 429, "otp_locked", "trip start locked until 10:15: otp locked", ""},
		{"internal: nothing of it", fmt.Errorf("scan bookings: %w", errors.New("Error 1054: Unknown column 'x'")), 500, "internal", "internal error", "column"},
		{"unavailable (domain)", fmt.Errorf("relay: %w", dispatch.ErrUnavailable), 503, "unavailable", unavailable, "relay"},
		{"unavailable: a network error an adapter translated", fmt.Errorf("driver d1 state: %w", &dispatch.Error{Kind: dispatch.Unavailable, Msg: "redis unavailable", Err: refused}), 503, "unavailable", unavailable, "dial"},
		// Translating is the adapters' job (store's and geo's translate): api maps kinds only.
		{"a network error nobody translated: internal", fmt.Errorf("nearby: %w", refused), 500, "internal", "internal error", "dial"},
		{"a flattened text is no network error", errors.New("dial tcp: connection refused"), 500, "internal", "internal error", "dial"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			writeError(rec, c.err)
			var got struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if rec.Code != c.status || got.Error.Code != c.code || got.Error.Message != c.msg {
				t.Errorf("got %d %s %q, want %d %s %q", rec.Code, got.Error.Code, got.Error.Message, c.status, c.code, c.msg)
			}
			if c.notInReply != "" && strings.Contains(rec.Body.String(), c.notInReply) {
				t.Errorf("got %s, want nothing of %q", rec.Body.String(), c.notInReply)
			}
		})
	}
}

// TestStatusTable: every kind has its status in the table and its code in the contract's
// ErrorCode, and the contract has no code without its kind.
func TestStatusTable(t *testing.T) {
	raw, err := contractFS.ReadFile("contract/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas struct {
				ErrorCode struct {
					Enum []string `json:"enum"`
				} `json:"ErrorCode"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	codes := map[string]bool{}
	for _, c := range doc.Components.Schemas.ErrorCode.Enum {
		codes[c] = true
	}
	kinds := dispatch.Kinds()
	if len(codes) != len(kinds) || len(statuses) != len(kinds) {
		t.Errorf("got %d codes in the contract, %d kinds and %d statuses, want as many", len(codes), len(kinds), len(statuses))
	}
	for _, k := range kinds {
		if !codes[k.String()] {
			t.Errorf("kind %s: got no such code in the contract, want it there", k)
		}
		if _, ok := statuses[k]; !ok {
			t.Errorf("kind %s: got no status, want one", k)
		}
	}
}

func TestIsJSON(t *testing.T) {
	for _, c := range []struct {
		ct   string
		want bool
	}{
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"Application/JSON ; charset=UTF-8", true},
		{"application/jsonxyz", false},
		{"application/json-seq", false},
		{"text/json", false},
		{"application/x-www-form-urlencoded", false},
		{"application/json; =", false},
	} {
		if got := isJSON(c.ct); got != c.want {
			t.Errorf("isJSON(%q): got %v, want %v", c.ct, got, c.want)
		}
	}
}
