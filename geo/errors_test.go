package geo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
)

// TestTranslate: go-redis's errors get their domain kind, with go-redis's error kept as the
// cause; what says nothing of Redis's health passes as it is.
func TestTranslate(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want dispatch.Kind
	}{
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, dispatch.Unavailable},
		{"reset", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, dispatch.Unavailable},
		{"i/o timeout", &net.OpError{Op: "read", Net: "tcp", Err: &timeoutErr{}}, dispatch.Unavailable},
		{"connection ended mid-answer", io.EOF, dispatch.Unavailable},
		{"deadline", context.DeadlineExceeded, dispatch.Unavailable},
		{"pool timeout", redis.ErrPoolTimeout, dispatch.Unavailable},
		{"client closed", redis.ErrClosed, dispatch.Unavailable},
		{"loading", redisError("LOADING Redis is loading the dataset in memory"), dispatch.Unavailable},
		{"read-only replica", redisError("READONLY You can't write against a read only replica."), dispatch.Unavailable},
		{"cluster down", redisError("CLUSTERDOWN The cluster is down"), dispatch.Unavailable},
		{"nothing under the key", redis.Nil, dispatch.NotFound},
		{"a script's error", redisError("ERR user_script:1: Script attempted to access nonexistent global variable"), dispatch.Internal},
		{"cancelled by the caller", context.Canceled, dispatch.Internal},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := translate(c.err) // as geo calls it: on go-redis's own error

			if k := dispatch.KindOf(got); k != c.want || !errors.Is(got, c.err) {
				t.Errorf("translate(%v): got %s (%v), want %s with the cause kept", c.err, k, got, c.want)
			}
		})
	}
	if translate(nil) != nil {
		t.Error("translate(nil): got an error, want nil")
	}
	if kept := fmt.Errorf("x: %w", dispatch.ErrConflict); translate(kept) != kept {
		t.Error("translate of an error with a kind: got another error, want it unchanged")
	}
}

// TestRedisAwayIsUnavailable: with no Redis to answer, what dispatch asks of the index is
// Unavailable (geo translated it: dispatch does not look at network errors).
func TestRedisAwayIsUnavailable(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	defer rdb.Close()
	x := NewIndex(rdb, Options{Prefix: "away:"})
	ctx := context.Background()
	_, posErr := x.Position(ctx, "d1")
	_, stateErr := x.State(ctx, "d1")
	_, reserveErr := x.Reserve(ctx, "d1", "t1", time.Second)
	_, nearErr := x.Nearby(ctx, 12.97, 77.59, 1000, 5, nil)
	for name, err := range map[string]error{"Position": posErr, "State": stateErr, "Reserve": reserveErr,
		"Nearby": nearErr, "Release": x.Release(ctx, "d1", "t1"), "SetState": x.SetState(ctx, "d1", dispatch.DriverOffline)} {
		var ne net.Error
		if dispatch.KindOf(err) != dispatch.Unavailable || !errors.As(err, &ne) {
			t.Errorf("%s with Redis away: got %v (%s), want unavailable with the network error kept", name, err, dispatch.KindOf(err))
		}
	}
}

type timeoutErr struct{}

func (*timeoutErr) Error() string   { return "i/o timeout" }
func (*timeoutErr) Timeout() bool   { return true }
func (*timeoutErr) Temporary() bool { return true }

// redisError is an error reply as Redis sends it. go-redis parses replies into types of its
// internal proto package, and its Is*Error functions fall back on the reply's prefix, as here.
type redisError string

func (e redisError) Error() string { return string(e) }
func (redisError) RedisError()     {}
