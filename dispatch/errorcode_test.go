package dispatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

func TestErrorCode(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: &net.AddrError{Err: "connect: connection refused"}}
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"invalid", fmt.Errorf("hours: %w", ErrInvalid), "invalid_argument"},
		{"not found", fmt.Errorf("booking b1: %w", ErrNotFound), "not_found"},
		{"conflict", fmt.Errorf("taken: %w", ErrConflict), "conflict"},
		{"unavailable", fmt.Errorf("ping: %w", ErrUnavailable), "unavailable"},
		// What geo passes on from go-redis with Redis away.
		{"dial refused", fmt.Errorf("set driver d1 state: %w", refused), "unavailable"},
		{"connection reset", fmt.Errorf("index 3 points: %w", reset), "unavailable"},
		{"connection ended", fmt.Errorf("driver d1 region: %w", io.EOF), "unavailable"},
		{"deadline", fmt.Errorf("nearby: %w", context.DeadlineExceeded), "unavailable"},
		{"a bug", errors.New("nil map"), "internal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ErrorCode(tc.err); got != tc.want {
				t.Errorf("ErrorCode(%v): got %s, want %s", tc.err, got, tc.want)
			}
		})
	}
}
