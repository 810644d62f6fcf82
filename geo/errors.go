package geo

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/redis/go-redis/v9"
)

// translate gives go-redis's errors a domain kind, as the cause of a dispatch.Error (errors.As
// still finds go-redis's error, for the log):
//   - Redis did not answer: a connection refused, reset or closed (a network error, an end of
//     stream mid-answer), a timeout or a deadline that ran out, no connection free in the pool,
//     the client closed, or Redis loading its data, read-only after a fail-over, its master or
//     cluster down, too many clients, or asking to try again: Unavailable;
//   - redis.Nil (nothing under a key), where a caller lets it through: NotFound;
//   - anything else (a script's error, a bug) passes unchanged: internal.
//
// An error that has a kind already, and a cancelled context (the caller gave up), pass unchanged.
func translate(err error) error {
	var de *dispatch.Error
	var ne net.Error
	switch {
	case err == nil || errors.As(err, &de) || errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, redis.Nil):
		return &dispatch.Error{Kind: dispatch.NotFound, Msg: "not found", Err: err}
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, redis.ErrClosed) || errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrPoolExhausted) ||
		redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsMasterDownError(err) ||
		redis.IsClusterDownError(err) || redis.IsMaxClientsError(err) || redis.IsTryAgainError(err):
		return &dispatch.Error{Kind: dispatch.Unavailable, Msg: "redis unavailable", Err: err}
	}
	return err
}
