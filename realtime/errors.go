package realtime

import "github.com/drivers4me/dispatch/dispatch"

// A socket's errors are dispatch's: sessions return dispatch errors (dispatch.Errorf for their
// own refusals, written for the client) and errorFrame is the one place they become frames.

// errFrame is the data of an `error` frame (api/contract/asyncapi.json).
type errFrame struct {
	Ref     *int64 `json:"ref,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// errorFrame answers err (to the client message ref, if any): its kind's code, the contract's
// (dispatch.Kind.String; the socket's codes are REST's), and what dispatch.Message lets a client
// be told: nothing of the server, and the same for a booking that does not exist and for one
// that is someone else's.
func errorFrame(ref *int64, err error) errFrame {
	return errFrame{Ref: ref, Code: dispatch.KindOf(err).String(), Message: dispatch.Message(err)}
}
