package dispatch

import (
	"errors"
	"fmt"
	"reflect"
)

// Kind is what went wrong, in the one vocabulary every client is answered in: the contract's
// error codes (api/contract/openapi.json, ErrorCode; the socket's error frames use the same).
// Kind.String is the code, for both wires. api maps kinds to HTTP statuses in one table
// (api/errors.go, statuses); realtime makes every error frame in one place (errorFrame).
type Kind uint8

// The kinds, one per code of the contract. The zero Kind is Internal: an error nobody gave a
// kind is a bug or a failure no adapter translated.
const (
	Internal Kind = iota
	InvalidArgument
	Unauthenticated
	PermissionDenied
	NotFound
	Conflict
	IdempotencyMismatch
	OutOfServiceArea
	RateLimited
	OTPLocked
	Unavailable
	numKinds
)

// kinds holds, per Kind, its code and the text a client is told when the error's own may not be
// (see Message).
var kinds = [numKinds]struct{ code, text string }{
	Internal:            {"internal", "internal error"},
	InvalidArgument:     {"invalid_argument", "the request is not valid"},
	Unauthenticated:     {"unauthenticated", "a valid bearer token is required"},
	PermissionDenied:    {"permission_denied", "not permitted"},
	NotFound:            {"not_found", "not found"},
	Conflict:            {"conflict", "the request conflicts with the current state"},
	IdempotencyMismatch: {"idempotency_mismatch", "this Idempotency-Key was used with another request"},
	OutOfServiceArea:    {"out_of_service_area", "the pickup is outside every service area"},
	RateLimited:         {"rate_limited", "too many requests; slow down"},
	OTPLocked:           {"otp_locked", "too many wrong OTPs; the trip start is locked for a while"},
	Unavailable:         {"unavailable", "a backing service is unavailable; retry"},
}

// String is the kind's code in the contract ("not_found").
func (k Kind) String() string {
	if k >= numKinds {
		return kinds[Internal].code
	}
	return kinds[k].code
}

// Kinds lists every kind, Internal first.
func Kinds() []Kind {
	out := make([]Kind, numKinds)
	for i := range out {
		out[i] = Kind(i)
	}
	return out
}

// Error is the domain's one error with a kind and a message. Every other error that reaches a
// client is told as its kind (KindOf) and the message the rules allow (Message).
//
// The sentinels below are Errors: errors.Is(err, ErrNotFound) holds for every Error of kind
// NotFound in err's chain, and wrapping one with fmt.Errorf("booking %s: %w", id, ErrNotFound)
// is how the domain adds context. Adapters translate their backends' errors into an Error with
// the backend's error as Err (store's and geo's translate).
type Error struct {
	Kind Kind
	// Msg is what the error says; a client is told it by the rules of Message. "" says the
	// kind's text.
	Msg string
	// Err is the cause, for the log (a driver's or network error); a client is never told it.
	Err error
}

// Errorf is an Error of kind k whose message is the text formatted (no %w: a cause is Err).
func Errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = kinds[e.Kind%numKinds].text
	}
	if e.Err != nil {
		return msg + ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is an Error of the same kind.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Kind == e.Kind
}

// The domain's errors by kind. Adapters translate their backends' errors into these kinds;
// api and realtime map the kinds to their wire.
var (
	ErrNotFound            = &Error{Kind: NotFound, Msg: "not found"}
	ErrConflict            = &Error{Kind: Conflict, Msg: "conflict"}
	ErrInvalid             = &Error{Kind: InvalidArgument, Msg: "invalid argument"}
	ErrForbidden           = &Error{Kind: PermissionDenied, Msg: "permission denied"}
	ErrIdempotencyMismatch = &Error{Kind: IdempotencyMismatch, Msg: "idempotency key reused with a different request"}
	ErrUnavailable         = &Error{Kind: Unavailable, Msg: "unavailable"}
	// ErrOutOfServiceArea: a pickup outside every city's service area (API.md v1.1).
	ErrOutOfServiceArea = &Error{Kind: OutOfServiceArea, Msg: "pickup is outside every service area"}
	// ErrOTPLocked answers a trip start while a booking's OTP is locked after too many wrong tries.
	ErrOTPLocked = &Error{Kind: OTPLocked, Msg: "otp locked"}
)

// KindOf is the kind of an error: that of the first Error in its chain, else Internal. The
// domain looks at nothing else: adapters translate their backends' errors (a network error, a
// deadline that ran out) into Errors.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}

// Message is what a client may be told of an error (SECURITY.md), rule by rule:
//   - Internal and Unavailable: the kind's fixed text; the cause goes to the log;
//   - NotFound: "not found", whether the thing does not exist or is someone else's;
//   - any other kind: the error's own text when every error in its chain is an Error without a
//     foreign cause, or a plain text (errors.New, fmt wrapping, errors.Join); else the kind's
//     fixed text: a driver's, network or runtime error would tell of the server.
func Message(err error) string {
	k := KindOf(err)
	switch {
	case k == Internal || k == Unavailable || k == NotFound:
	case plain(err):
		return err.Error()
	}
	return kinds[k].text
}

// plain reports whether every error in err's tree is an Error or one of the standard library's
// plain texts and wrappers (errors.New, fmt.Errorf, errors.Join).
func plain(err error) bool {
	if err == nil {
		return true
	}
	if _, ok := err.(*Error); !ok {
		t := reflect.TypeOf(err)
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if p := t.PkgPath(); p != "errors" && p != "fmt" {
			return false
		}
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return plain(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if !plain(e) {
				return false
			}
		}
	}
	return true
}
