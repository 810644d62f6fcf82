package api

import (
	"bufio"
	"net"
	"net/http"

	"github.com/drivers4me/dispatch/dispatch"
)

// statuses is the one table from error kinds (the contract's codes: dispatch.Kind, whose String
// is the code of api/contract/openapi.json's ErrorCode) to HTTP statuses. A kind missing here is
// a 500.
var statuses = map[dispatch.Kind]int{
	dispatch.InvalidArgument:     http.StatusBadRequest,
	dispatch.Unauthenticated:     http.StatusUnauthorized,
	dispatch.PermissionDenied:    http.StatusForbidden,
	dispatch.NotFound:            http.StatusNotFound,
	dispatch.Conflict:            http.StatusConflict,
	dispatch.IdempotencyMismatch: http.StatusUnprocessableEntity,
	dispatch.OutOfServiceArea:    http.StatusUnprocessableEntity,
	dispatch.RateLimited:         http.StatusTooManyRequests,
	dispatch.OTPLocked:           http.StatusTooManyRequests,
	dispatch.Internal:            http.StatusInternalServerError,
	dispatch.Unavailable:         http.StatusServiceUnavailable,
}

// Status is the HTTP status of an error, by its kind.
func Status(err error) int { return status(dispatch.KindOf(err)) }

func status(k dispatch.Kind) int {
	if s, ok := statuses[k]; ok {
		return s
	}
	return http.StatusInternalServerError
}

func errBody(code, msg string) map[string]any {
	return map[string]any{"error": map[string]string{"code": code, "message": msg}}
}

// writeError answers an error with its kind's status and code and what a client may be told of
// it (dispatch.Message: nothing of the server, the same text for absent and someone else's). An
// internal or unavailable error's cause, which the client is not told, goes to the log (see
// noted). api's own refusals are dispatch.Errorf errors, written for the client.
func writeError(w http.ResponseWriter, err error) {
	k := dispatch.KindOf(err)
	if k == dispatch.Internal || k == dispatch.Unavailable {
		note(w, err)
	}
	writeJSON(w, status(k), errBody(k.String(), dispatch.Message(err)))
}

// noted carries what a request's handlers could not tell the client (the cause of an internal
// error, an answer that could not be written) to the one place that logs it, Server.logNoted.
// It forwards Hijack and Flush (the WebSocket upgrade needs them) and unwraps for
// http.ResponseController.
type noted struct {
	http.ResponseWriter
	errs     []error
	writeErr error // the first failed write of the answer
}

func (n *noted) Write(b []byte) (int, error) {
	c, err := n.ResponseWriter.Write(b)
	if err != nil && n.writeErr == nil {
		n.writeErr = err
	}
	return c, err
}

func (n *noted) Unwrap() http.ResponseWriter { return n.ResponseWriter }

func (n *noted) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(n.ResponseWriter).Hijack()
}

func (n *noted) Flush() { _ = http.NewResponseController(n.ResponseWriter).Flush() }

// note keeps err for the log of the request w answers (nothing when w is not from logNoted:
// a handler tested on its own).
func note(w http.ResponseWriter, err error) {
	if n, ok := w.(*noted); ok {
		n.errs = append(n.errs, err)
	}
}

// logNoted logs, once the request is answered, every error its handlers noted (at error level
// when the client was told "internal", else at warn) and an answer that could not be written
// (warn: mostly a client that went away). The path is logged, never the query nor any header
// (a token never reaches a log).
func (s *Server) logNoted(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := &noted{ResponseWriter: w}
		next.ServeHTTP(n, r)
		for _, err := range n.errs {
			ev := s.log.Warn()
			if dispatch.KindOf(err) == dispatch.Internal {
				ev = s.log.Error()
			}
			ev.Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("error not told to the client")
		}
		if n.writeErr != nil {
			s.log.Warn().Err(n.writeErr).Str("method", r.Method).Str("path", r.URL.Path).Msg("answer not written")
		}
	})
}
