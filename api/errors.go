package api

import (
	"bufio"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"syscall"

	"github.com/drivers4me/dispatch/dispatch"
)

type apiErr struct {
	msg  string
	kind error
}

func (e apiErr) Error() string { return e.msg }
func (e apiErr) Unwrap() error { return e.kind }

// errorf is a client-facing error of a domain kind whose message is exactly the text given.
func errorf(kind error, format string, args ...any) error {
	return apiErr{msg: fmt.Sprintf(format, args...), kind: kind}
}

// statuses is the one table from the contract's error codes (api/contract/openapi.json,
// ErrorCode) to HTTP statuses. A code missing here is a 500.
var statuses = map[string]int{
	"invalid_argument":     http.StatusBadRequest,
	"unauthenticated":      http.StatusUnauthorized,
	"permission_denied":    http.StatusForbidden,
	"not_found":            http.StatusNotFound,
	"conflict":             http.StatusConflict,
	"idempotency_mismatch": http.StatusUnprocessableEntity,
	"out_of_service_area":  http.StatusUnprocessableEntity,
	"rate_limited":         http.StatusTooManyRequests,
	"otp_locked":           http.StatusTooManyRequests,
	"internal":             http.StatusInternalServerError,
	"unavailable":          http.StatusServiceUnavailable,
}

// genericMessages are told instead of an error's own text where that text may hold the
// server's internals (see clientMessage).
var genericMessages = map[string]string{
	"invalid_argument":     "the request is not valid",
	"permission_denied":    "not permitted",
	"not_found":            "not found",
	"conflict":             "the request conflicts with the current state",
	"idempotency_mismatch": "this Idempotency-Key was used with another request",
	"internal":             "internal error",
	"unavailable":          "a backing service is unavailable; retry with the same Idempotency-Key",
}

// Status is the HTTP status of an error.
func Status(err error) int {
	if s, ok := statuses[errorCode(err)]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// errorCode is dispatch's code of an error, but for a backing service that did not answer and
// whose error reached here untranslated (an adapter that passes its driver's errors through):
// that is unavailable, not internal.
func errorCode(err error) string {
	code := dispatch.ErrorCode(err)
	if code == "internal" && backendDown(err) {
		return "unavailable"
	}
	return code
}

// backendDown recognises, by type, a connection that was refused, reset or closed under us,
// or a deadline that ran out. (Network errors proper, net.Error, dispatch already knows.)
func backendDown(err error) bool {
	for _, target := range []error{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EPIPE,
		driver.ErrBadConn, context.DeadlineExceeded, net.ErrClosed} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// clientMessage is what a client is told of an error, rule by rule:
//   - internal and unavailable: a fixed text (nothing of the server);
//   - not_found: the same fixed text whether the thing does not exist or is someone else's
//     (SECURITY.md), unless api itself wrote the message (an unknown endpoint);
//   - any other code: the error's own text when every error in its chain is this module's or
//     a plain text (errors.New, fmt wrapping), else the code's generic text: a driver's,
//     network or runtime error would tell of the server.
func clientMessage(code string, err error) string {
	var own apiErr
	switch {
	case code == "internal" || code == "unavailable":
	case errors.As(err, &own):
		return own.msg
	case code == "not_found":
	case ownChain(err):
		return err.Error()
	}
	if m, ok := genericMessages[code]; ok {
		return m
	}
	return strings.ReplaceAll(code, "_", " ")
}

// ownChain reports whether every error in err's tree is of a type declared in this module or
// one of the standard library's plain ones (errors.New, fmt.Errorf, errors.Join).
func ownChain(err error) bool {
	if err == nil {
		return true
	}
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch p := t.PkgPath(); {
	case p == "errors" || p == "fmt" || strings.HasPrefix(p, "github.com/drivers4me/dispatch/"):
	default:
		return false
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return ownChain(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if !ownChain(e) {
				return false
			}
		}
	}
	return true
}

func errBody(code, msg string) map[string]any {
	return map[string]any{"error": map[string]string{"code": code, "message": msg}}
}

// writeError answers an error with its status, code and client message. An internal or
// unavailable error's cause, which the client is not told, goes to the log (see noted).
func writeError(w http.ResponseWriter, err error) {
	code := errorCode(err)
	if code == "internal" || code == "unavailable" {
		note(w, err)
	}
	writeJSON(w, Status(err), errBody(code, clientMessage(code, err)))
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
			if errorCode(err) == "internal" {
				ev = s.log.Error()
			}
			ev.Err(err).Str("method", r.Method).Str("path", r.URL.Path).Msg("error not told to the client")
		}
		if n.writeErr != nil {
			s.log.Warn().Err(n.writeErr).Str("method", r.Method).Str("path", r.URL.Path).Msg("answer not written")
		}
	})
}
