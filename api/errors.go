package api

import "fmt"

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
