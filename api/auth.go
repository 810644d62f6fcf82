package api

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/golang-jwt/jwt/v5"
)

// Roles a token may carry.
var Roles = []string{"driver", "customer", "dispatcher", "admin"}

// Verifier checks bearer tokens: HS256 only (the algorithm is pinned, so "none" and RS/HS
// confusion are refused), exp required, issuer and audience checked when configured.
type Verifier struct {
	keys     jwt.VerificationKeySet
	issuer   string
	audience string
	// staffNets, when set, are where dispatcher and admin tokens are accepted from (StaffFrom).
	staffNets []netip.Prefix
	hops      int
}

// NewVerifier returns a verifier for tokens signed with secret or, during a rotation, with
// one of the previous secrets (OPERATIONS.md, "Rotating the JWT secret"). It only verifies:
// whoever signs uses the current secret.
func NewVerifier(secret []byte, issuer, audience string, previous ...[]byte) *Verifier {
	v := &Verifier{issuer: issuer, audience: audience}
	for _, k := range append([][]byte{secret}, previous...) {
		v.keys.Keys = append(v.keys.Keys, k)
	}
	return v
}

type claims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// errUnauthenticated is every token failure; the reason stays in the server (never the token).
var errUnauthenticated = errors.New("unauthenticated")

// Verify returns the actor of a token and when the token expires.
func (v *Verifier) Verify(token string) (dispatch.Actor, time.Time, error) {
	opts := []jwt.ParserOption{jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithLeeway(5 * time.Second)}
	if v.issuer != "" {
		opts = append(opts, jwt.WithIssuer(v.issuer))
	}
	if v.audience != "" {
		opts = append(opts, jwt.WithAudience(v.audience))
	}
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return v.keys, nil }, opts...)
	if err != nil {
		return dispatch.Actor{}, time.Time{}, fmt.Errorf("%w: %v", errUnauthenticated, err)
	}
	if !validSubject(c.Subject) {
		return dispatch.Actor{}, time.Time{}, fmt.Errorf("%w: sub missing, too long or with characters outside [A-Za-z0-9._:@|+=-]", errUnauthenticated)
	}
	known := false
	for _, r := range Roles {
		known = known || r == c.Role
	}
	if !known {
		return dispatch.Actor{}, time.Time{}, fmt.Errorf("%w: unknown role", errUnauthenticated)
	}
	return dispatch.Actor{ID: c.Subject, Role: c.Role}, c.ExpiresAt.Time, nil
}

// validSubject keeps user ids to 1..128 characters that are safe wherever an id goes: Redis
// keys (no braces, which would pick a cluster slot), channel names, SQL, logs, URLs.
func validSubject(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("._:@|+=-", c):
		default:
			return false
		}
	}
	return true
}

// StaffFrom makes FromRequest refuse dispatcher and admin tokens unless the client address
// (the peer, or behind proxyHops proxies the X-Forwarded-For entry they appended, as the rate
// limits count it) is in one of nets: staff come in through the admin VPN, and a staff token
// used from anywhere else is worth nothing. Call it before serving; none: no restriction.
func (v *Verifier) StaffFrom(nets []netip.Prefix, proxyHops int) {
	v.staffNets, v.hops = nets, proxyHops
}

// fromStaffNetwork reports whether r comes from one of the staff networks (an IPv6 client,
// counted by its /64, only when a network holds that whole /64). Behind proxies, a request
// that did not pass through them all (too few X-Forwarded-For entries) is not.
func (v *Verifier) fromStaffNetwork(r *http.Request) bool {
	entries := 0
	for _, h := range r.Header.Values("X-Forwarded-For") {
		entries += strings.Count(h, ",") + 1
	}
	if entries < v.hops {
		return false
	}
	addr := clientAddr(r, v.hops)
	ip, err := netip.ParseAddr(addr)
	bits := 128
	if err != nil {
		p, perr := netip.ParsePrefix(addr)
		if perr != nil {
			return false
		}
		ip, bits = p.Addr(), p.Bits()
	}
	for _, n := range v.staffNets {
		if n.Contains(ip.Unmap()) && (ip.Is4() || n.Bits() <= bits) {
			return true
		}
	}
	return false
}

// maxToken bounds what is verified at all: real tokens are a few hundred bytes.
const maxToken = 4 << 10

// FromRequest finds the token in the Authorization header or, for browsers' sockets, in the
// Sec-WebSocket-Protocol offer "bearer.<jwt>", and verifies it.
// With StaffFrom, a staff token from outside the staff networks is refused too.
func (v *Verifier) FromRequest(r *http.Request) (dispatch.Actor, time.Time, error) {
	a, exp, err := v.fromRequest(r)
	if err == nil && len(v.staffNets) > 0 && (a.Role == "dispatcher" || a.Role == "admin") && !v.fromStaffNetwork(r) {
		return dispatch.Actor{}, time.Time{}, fmt.Errorf("%w: a %s token from outside the staff networks", errUnauthenticated, a.Role)
	}
	return a, exp, err
}

func (v *Verifier) fromRequest(r *http.Request) (dispatch.Actor, time.Time, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		if len(h) < 7 || !strings.EqualFold(h[:7], "Bearer ") {
			return dispatch.Actor{}, time.Time{}, fmt.Errorf("%w: not a bearer token", errUnauthenticated)
		}
		return v.verifyBounded(strings.TrimSpace(h[7:]))
	}
	for _, p := range websocketProtocols(r) {
		if tok, ok := strings.CutPrefix(p, "bearer."); ok {
			return v.verifyBounded(tok)
		}
	}
	return dispatch.Actor{}, time.Time{}, fmt.Errorf("%w: no token", errUnauthenticated)
}

func (v *Verifier) verifyBounded(tok string) (dispatch.Actor, time.Time, error) {
	if len(tok) > maxToken {
		return dispatch.Actor{}, time.Time{}, fmt.Errorf("%w: token longer than %d bytes", errUnauthenticated, maxToken)
	}
	return v.Verify(tok)
}

func websocketProtocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// Sign makes a token (for `dispatchd token`, dispatchd's development wiring and tests; the load
// generator signs its own, loadtest/token.go).
func Sign(secret []byte, role, sub string, ttl time.Duration, issuer, audience string) (string, error) {
	c := claims{Role: role, RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub, Issuer: issuer, IssuedAt: jwt.NewNumericDate(time.Now()),
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(ttl)),
	}}
	if audience != "" {
		c.Audience = jwt.ClaimStrings{audience}
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
}
