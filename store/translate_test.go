//go:build !prod

package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/drivers4me/dispatch/dispatch"
)

// TestTranslateServerAway: whatever a MariaDB that is down, restarting or shutting down makes
// go-sql-driver return is ErrUnavailable (503 `unavailable`, retry with the same key), never an
// internal error (500). The fault suite (cmd/dispatchd, TestFaultMariaDBKilled) sees them live.
func TestTranslateServerAway(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"bad connection", driver.ErrBadConn, dispatch.ErrUnavailable},
		{"invalid connection", mysql.ErrInvalidConn, dispatch.ErrUnavailable},
		{"connection done", sql.ErrConnDone, dispatch.ErrUnavailable},
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, dispatch.ErrUnavailable},
		{"server shutdown", &mysql.MySQLError{Number: 1053, Message: "Server shutdown in progress"}, dispatch.ErrUnavailable},
		{"connection killed", &mysql.MySQLError{Number: 1927, Message: "Connection was killed"}, dispatch.ErrUnavailable},
		{"query interrupted", &mysql.MySQLError{Number: 1317, Message: "Query execution was interrupted"}, dispatch.ErrUnavailable},
		{"too many connections", &mysql.MySQLError{Number: 1040, Message: "Too many connections"}, dispatch.ErrUnavailable},
		{"deadlock", &mysql.MySQLError{Number: 1213}, dispatch.ErrUnavailable},
		{"duplicate", &mysql.MySQLError{Number: 1062}, dispatch.ErrConflict},
		{"no rows", sql.ErrNoRows, dispatch.ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := translate(fmt.Errorf("commit: %w", tc.err))
			if !errors.Is(got, tc.want) || !errors.Is(got, tc.err) {
				t.Errorf("translate(%v): got %v, want %v with the driver's error kept", tc.err, got, tc.want)
			}
		})
	}
	if got := translate(context.Canceled); !errors.Is(got, context.Canceled) || errors.Is(got, dispatch.ErrUnavailable) {
		t.Errorf("translate(context.Canceled): got %v, want it unchanged", got)
	}
}
