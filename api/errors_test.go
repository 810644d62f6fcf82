package api

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/go-sql-driver/mysql"
)

// TestErrorMapping: one case per mapping rule of errors.go, through writeError as a handler
// answers.
func TestErrorMapping(t *testing.T) {
	dup := &mysql.MySQLError{Number: 1062, Message: "Duplicate entry 'bk_1' for key 'PRIMARY'"}
	for _, c := range []struct {
		name       string
		err        error
		status     int
		code, msg  string
		notInReply string
	}{
		{"invalid: its own text", fmt.Errorf("hours must be 1 to 24: %w", dispatch.ErrInvalid), 400, "invalid_argument", "hours must be 1 to 24: invalid argument", ""},
		{"api's own text, as written", errorf(dispatch.ErrInvalid, "limit must be 1 to 500"), 400, "invalid_argument", "limit must be 1 to 500", ""},
		{"forbidden", errorf(dispatch.ErrForbidden, "a driver may not make this call"), 403, "permission_denied", "a driver may not make this call", ""},
		// The store's translation of an absent row keeps sql.ErrNoRows in the chain.
		{"absent: nothing of the server", fmt.Errorf("booking bk_9: %w", errors.Join(dispatch.ErrNotFound, sql.ErrNoRows)), 404, "not_found", "not found", "sql"},
		{"someone else's: the same text", fmt.Errorf("booking bk_9: %w", dispatch.ErrNotFound), 404, "not_found", "not found", "bk_9"},
		{"unknown endpoint: api's text", errorf(dispatch.ErrNotFound, "no such endpoint"), 404, "not_found", "no such endpoint", ""},
		{"conflict: its own text", fmt.Errorf("assign: %w", errors.Join(dispatch.ErrConflict, errors.New("booking is completed, not [searching]"))), 409, "conflict", "assign: conflict\nbooking is completed, not [searching]", ""},
		{"conflict from a driver's error: generic", errors.Join(dispatch.ErrConflict, dup), 409, "conflict", "the request conflicts with the current state", "Duplicate"},
		{"invalid from a runtime error: generic", errors.Join(dispatch.ErrInvalid, &json.SyntaxError{}), 400, "invalid_argument", "the request is not valid", ""},
		{"idempotency mismatch", fmt.Errorf("key k1: %w", dispatch.ErrIdempotencyMismatch), 422, "idempotency_mismatch", "key k1: " + dispatch.ErrIdempotencyMismatch.Error(), ""},
		{"internal: nothing of it", fmt.Errorf("scan bookings: %w", errors.New("Error 1054: Unknown column 'x'")), 500, "internal", "internal error", "column"},
		{"unavailable (domain)", fmt.Errorf("relay: %w", dispatch.ErrUnavailable), 503, "unavailable", "a backing service is unavailable; retry with the same Idempotency-Key", "relay"},
		{"unavailable: a network error", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, 503, "unavailable", "a backing service is unavailable; retry with the same Idempotency-Key", "dial"},
		{"unavailable: connection reset, untranslated", fmt.Errorf("nearby: %w", os.NewSyscallError("read", syscall.ECONNRESET)), 503, "unavailable", "a backing service is unavailable; retry with the same Idempotency-Key", "read"},
		{"unavailable: bad connection", fmt.Errorf("query: %w", driver.ErrBadConn), 503, "unavailable", "a backing service is unavailable; retry with the same Idempotency-Key", "driver"},
		{"unavailable: deadline", fmt.Errorf("nearby: %w", context.DeadlineExceeded), 503, "unavailable", "a backing service is unavailable; retry with the same Idempotency-Key", "deadline"},
		{"unavailable: closed", fmt.Errorf("nearby: %w", net.ErrClosed), 503, "unavailable", "a backing service is unavailable; retry with the same Idempotency-Key", "closed"},
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

// TestStatusTable: every code of the contract's ErrorCode has its status in the table, and
// the table has no code the contract lacks.
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
	codes := doc.Components.Schemas.ErrorCode.Enum
	if len(codes) != len(statuses) {
		t.Errorf("got %d codes in the contract and %d in statuses, want the same", len(codes), len(statuses))
	}
	for _, c := range codes {
		if _, ok := statuses[c]; !ok {
			t.Errorf("code %q: got no status, want one", c)
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
