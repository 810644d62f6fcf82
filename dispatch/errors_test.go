package dispatch

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
)

// TestKindOf: an error's kind is its first Error's; dispatch looks at nothing else, so what an
// adapter did not translate is internal, whatever it is.
func TestKindOf(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, c := range []struct {
		name string
		err  error
		want Kind
	}{
		{"a sentinel with context", fmt.Errorf("hours: %w", ErrInvalid), InvalidArgument},
		{"Errorf", Errorf(PermissionDenied, "only drivers accept offers"), PermissionDenied},
		{"a driver's error translated", fmt.Errorf("booking bk_1: %w", &Error{Kind: NotFound, Err: sql.ErrNoRows}), NotFound},
		{"joined: the first", errors.Join(ErrConflict, errors.New("booking is completed")), Conflict},
		{"wrapped twice", fmt.Errorf("assign: %w", fmt.Errorf("driver d1: %w", ErrUnavailable)), Unavailable},
		{"otp locked", fmt.Errorf("locked until 10:00: %w", ErrOTPLocked), OTPLocked},
		{"out of service area", ErrOutOfServiceArea, OutOfServiceArea},
		{"idempotency", ErrIdempotencyMismatch, IdempotencyMismatch},
		{"a bug", errors.New("nil map"), Internal},
		{"a network error nobody translated", fmt.Errorf("state: %w", refused), Internal},
		{"a deadline nobody translated", fmt.Errorf("nearby: %w", context.DeadlineExceeded), Internal},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := KindOf(c.err); got != c.want {
				t.Errorf("KindOf(%v): got %s, want %s", c.err, got, c.want)
			}
		})
	}
}

// TestErrorIs: errors.Is finds a kind whatever the message, and errors.As the cause.
func TestErrorIs(t *testing.T) {
	cause := sql.ErrNoRows
	err := fmt.Errorf("booking bk_1: %w", &Error{Kind: NotFound, Msg: "not found", Err: cause})
	if !errors.Is(err, ErrNotFound) || !errors.Is(Errorf(NotFound, "offer of_1"), ErrNotFound) {
		t.Errorf("errors.Is(..., ErrNotFound): got false, want true for every Error of kind NotFound")
	}
	if errors.Is(err, ErrConflict) || errors.Is(ErrOutOfServiceArea, ErrInvalid) {
		t.Errorf("errors.Is across kinds: got true, want false")
	}
	if !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("errors.Is(..., sql.ErrNoRows): got false, want the cause kept")
	}
	if got, want := err.Error(), "booking bk_1: not found: sql: no rows in result set"; got != want {
		t.Errorf("Error(): got %q, want %q (the log's text)", got, want)
	}
}

// foreign is an error type of neither dispatch nor the standard library's plain texts, as a
// driver's would be.
type foreign struct{}

func (foreign) Error() string { return "Error 1062: Duplicate entry 'bk_1' for key 'PRIMARY'" }

// TestMessage: a case per rule of what a client may be told (Message).
func TestMessage(t *testing.T) {
	absent := fmt.Errorf("booking bk_9: %w", &Error{Kind: NotFound, Msg: "not found", Err: sql.ErrNoRows})
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"internal: a fixed text", fmt.Errorf("scan bookings: %w", errors.New("Error 1054: Unknown column 'x'")), "internal error"},
		{"unavailable: a fixed text", &Error{Kind: Unavailable, Msg: "redis unavailable", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}}, "a backing service is unavailable; retry"},
		{"absent: nothing of the server", absent, "not found"},
		{"someone else's: the same", fmt.Errorf("booking bk_9: %w", ErrNotFound), "not found"},
		{"not yours, said otherwise: still the same", Errorf(NotFound, "offer of_1 is not yours"), "not found"},
		{"plain: its own text", fmt.Errorf("hours must be 1 to 24: %w", ErrInvalid), "hours must be 1 to 24: invalid argument"},
		{"Errorf: as written", Errorf(PermissionDenied, "a driver may not make this call"), "a driver may not make this call"},
		{"joined plain texts", fmt.Errorf("assign: %w", errors.Join(ErrConflict, errors.New("booking is completed"))), "assign: conflict\nbooking is completed"},
		{"a foreign cause: the kind's text", &Error{Kind: Conflict, Msg: "conflict", Err: foreign{}}, "the request conflicts with the current state"},
		{"a runtime error in the chain: the kind's text", errors.Join(ErrInvalid, &json.SyntaxError{}), "the request is not valid"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := Message(c.err); got != c.want {
				t.Errorf("Message(%v): got %q, want %q", c.err, got, c.want)
			}
		})
	}
}

// TestKinds: every kind has its own code and a text; the zero Kind is Internal. (api's and
// realtime's tests hold the codes to the contract.)
func TestKinds(t *testing.T) {
	if Kind(0) != Internal || Kinds()[0] != Internal {
		t.Errorf("the zero Kind: got %s, want internal", Kind(0))
	}
	seen := map[string]bool{}
	for _, k := range Kinds() {
		if c := k.String(); c == "" || seen[c] || kinds[k].text == "" {
			t.Errorf("kind %d: got code %q (seen: %v) and text %q, want its own code and a text", k, c, seen[c], kinds[k].text)
		}
		seen[k.String()] = true
	}
}
