package realtime

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/drivers4me/dispatch/dispatch"
)

// TestErrorFrameCodes: an error frame's code is its kind's, one of the contract's: the socket's
// error frame takes REST's ErrorCode (api/contract/asyncapi.json refers to openapi.json's).
func TestErrorFrameCodes(t *testing.T) {
	var async struct {
		Components struct {
			Messages struct {
				Error struct {
					Payload struct {
						Properties struct {
							Data struct {
								Properties struct {
									Code struct {
										Ref string `json:"$ref"`
									} `json:"code"`
								} `json:"properties"`
							} `json:"data"`
						} `json:"properties"`
					} `json:"payload"`
				} `json:"error"`
			} `json:"messages"`
		} `json:"components"`
	}
	var rest struct {
		Components struct {
			Schemas struct {
				ErrorCode struct {
					Enum []string `json:"enum"`
				} `json:"ErrorCode"`
			} `json:"schemas"`
		} `json:"components"`
	}
	for f, v := range map[string]any{"../api/contract/asyncapi.json": &async, "../api/contract/openapi.json": &rest} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(raw, v); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	if got, want := async.Components.Messages.Error.Payload.Properties.Data.Properties.Code.Ref, "openapi.json#/components/schemas/ErrorCode"; got != want {
		t.Fatalf("the error frame's code: got %q, want %q", got, want)
	}
	contract := map[string]bool{}
	for _, c := range rest.Components.Schemas.ErrorCode.Enum {
		contract[c] = true
	}
	want := map[dispatch.Kind]string{
		dispatch.Internal: "internal", dispatch.InvalidArgument: "invalid_argument", dispatch.Unauthenticated: "unauthenticated",
		dispatch.PermissionDenied: "permission_denied", dispatch.NotFound: "not_found", dispatch.Conflict: "conflict",
		dispatch.IdempotencyMismatch: "idempotency_mismatch", dispatch.OutOfServiceArea: "out_of_service_area",
		dispatch.RateLimited: "rate_limited", dispatch.OTPLocked: "otp_locked", dispatch.Unavailable: "unavailable",
	}
	if len(want) != len(dispatch.Kinds()) || len(contract) != len(want) {
		t.Errorf("got %d kinds and %d codes in the contract, want %d of each", len(dispatch.Kinds()), len(contract), len(want))
	}
	ref := int64(7)
	for _, k := range dispatch.Kinds() {
		f := errorFrame(&ref, dispatch.Errorf(k, "x"))
		if f.Code != want[k] || !contract[f.Code] || f.Ref == nil || *f.Ref != 7 {
			t.Errorf("kind %d: got code %q ref %v, want %q (in the contract) with ref 7", k, f.Code, f.Ref, want[k])
		}
	}
}

// TestAbsentIsNotYoursOnTheSocket: a booking or offer that does not exist and someone else's
// are answered alike, not_found "not found", with nothing of the server (SECURITY.md), through a
// session's handling and errorFrame, as Hub.readLoop answers.
func TestAbsentIsNotYoursOnTheSocket(t *testing.T) {
	r := newFzRig(t)
	c1 := dispatch.Actor{ID: "c1", Role: "customer"}
	d1 := dispatch.Actor{ID: "d1", Role: "driver"}
	for _, c := range []struct {
		name         string
		actor        dispatch.Actor
		theirs, none string
	}{
		{"watch a booking", c1, `{"type":"watch","seq":1,"data":{"booking_id":"bk_b"}}`, `{"type":"watch","seq":1,"data":{"booking_id":"bk_none"}}`},
		{"arrive for a booking", d1, `{"type":"trip.arrive","seq":1,"data":{"booking_id":"bk_b"}}`, `{"type":"trip.arrive","seq":1,"data":{"booking_id":"bk_none"}}`},
		{"cancel a booking", d1, `{"type":"trip.cancel","seq":1,"data":{"booking_id":"bk_b"}}`, `{"type":"trip.cancel","seq":1,"data":{"booking_id":"bk_none"}}`},
		{"accept an offer", d1, `{"type":"offer.accept","seq":1,"data":{"offer_id":"of_b"}}`, `{"type":"offer.accept","seq":1,"data":{"offer_id":"of_none"}}`},
		{"decline an offer", d1, `{"type":"offer.decline","seq":1,"data":{"offer_id":"of_b"}}`, `{"type":"offer.decline","seq":1,"data":{"offer_id":"of_none"}}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got [2]errFrame
			for i, data := range []string{c.theirs, c.none} {
				r.store.reset()
				_, handled, err := r.frame(c.actor, []byte(data))
				if !handled || err == nil {
					t.Fatalf("%s: got handled %v, error %v; want an error", data, handled, err)
				}
				got[i] = errorFrame(nil, err)
			}
			if got[0] != got[1] || got[0].Code != "not_found" || got[0].Message != "not found" {
				t.Errorf("someone else's: got %+v; absent: got %+v; want both not_found \"not found\"", got[0], got[1])
			}
			for _, leak := range []string{"sql", "rows", "bk_", "of_"} {
				if strings.Contains(got[1].Message, leak) {
					t.Errorf("got %q, want nothing of %q", got[1].Message, leak)
				}
			}
		})
	}
}
