package api

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "unit-secret-of-at-least-32-bytes-0123456789"

func signClaims(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifierRefuses: every kind of bad token is refused with errUnauthenticated; the good
// ones pass with their subject and role.
func TestVerifierRefuses(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"sub": "u1", "role": "customer", "exp": now.Add(time.Hour).Unix(), "iss": "auth.d4m", "aud": "dispatch"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	hs := func(mod func(jwt.MapClaims)) string {
		return signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), claims(mod))
	}
	v := NewVerifier([]byte(testSecret), "auth.d4m", "dispatch")
	tests := []struct {
		name string
		tok  string
		ok   bool
	}{
		{"good", hs(nil), true},
		{"expired 2 s ago (within the 5 s leeway)", hs(func(c jwt.MapClaims) { c["exp"] = now.Add(-2 * time.Second).Unix() }), true},
		{"expired a minute ago", hs(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Minute).Unix() }), false},
		{"no exp", hs(func(c jwt.MapClaims) { delete(c, "exp") }), false},
		{"not yet valid", hs(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() }), false},
		{"alg none", signClaims(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims(nil)), false},
		{"HS512", signClaims(t, jwt.SigningMethodHS512, []byte(testSecret), claims(nil)), false},
		{"RS256", signClaims(t, jwt.SigningMethodRS256, rsaKey, claims(nil)), false},
		{"wrong key", signClaims(t, jwt.SigningMethodHS256, []byte("another-secret-of-at-least-32-bytes-xxxx"), claims(nil)), false},
		{"unknown role", hs(func(c jwt.MapClaims) { c["role"] = "root" }), false},
		{"role of another case", hs(func(c jwt.MapClaims) { c["role"] = "Admin" }), false},
		{"no role", hs(func(c jwt.MapClaims) { delete(c, "role") }), false},
		{"other issuer", hs(func(c jwt.MapClaims) { c["iss"] = "evil" }), false},
		{"no issuer", hs(func(c jwt.MapClaims) { delete(c, "iss") }), false},
		{"other audience", hs(func(c jwt.MapClaims) { c["aud"] = "billing" }), false},
		{"no sub", hs(func(c jwt.MapClaims) { delete(c, "sub") }), false},
		{"sub with braces", hs(func(c jwt.MapClaims) { c["sub"] = "{slot}" }), false},
		{"sub with a newline", hs(func(c jwt.MapClaims) { c["sub"] = "u1\nlevel=admin" }), false},
		{"sub of 129 bytes", hs(func(c jwt.MapClaims) { c["sub"] = strings.Repeat("u", 129) }), false},
		{"sub of an email", hs(func(c jwt.MapClaims) { c["sub"] = "ravi+1@example.in" }), true},
		{"garbage", "a.b.c", false},
		{"empty", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, exp, err := v.Verify(tc.tok)
			if tc.ok {
				if err != nil || a.Role != "customer" || exp.IsZero() {
					t.Fatalf("got %+v %v %v, want the customer", a, exp, err)
				}
				return
			}
			if !errors.Is(err, errUnauthenticated) {
				t.Fatalf("got %+v, %v; want errUnauthenticated", a, err)
			}
		})
	}
}

// TestFromRequest: where a token may be (Authorization: Bearer, any case; the browser's
// subprotocol) and where not (another scheme, the URL, an oversized header).
func TestFromRequest(t *testing.T) {
	v := NewVerifier([]byte(testSecret), "", "")
	tok, err := Sign([]byte(testSecret), "dispatcher", "ops", time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	long := signClaims(t, jwt.SigningMethodHS256, []byte(testSecret), jwt.MapClaims{"sub": "ops", "role": "dispatcher",
		"exp": time.Now().Add(time.Hour).Unix(), "pad": strings.Repeat("x", 5000)})
	tests := []struct {
		name, url string
		hdr       map[string]string
		ok        bool
	}{
		{"bearer header", "/", map[string]string{"Authorization": "Bearer " + tok}, true},
		{"lower-case scheme", "/", map[string]string{"Authorization": "bearer " + tok}, true},
		{"subprotocol", "/", map[string]string{"Sec-WebSocket-Protocol": "dispatch.v1, bearer." + tok}, true},
		{"basic scheme", "/", map[string]string{"Authorization": "Basic " + tok}, false},
		{"bare token", "/", map[string]string{"Authorization": tok}, false},
		{"in the URL only", "/?access_token=" + tok + "&token=" + tok, nil, false},
		{"header wins over a good subprotocol", "/", map[string]string{"Authorization": "Bearer x", "Sec-WebSocket-Protocol": "bearer." + tok}, false},
		{"over 4 KiB", "/", map[string]string{"Authorization": "Bearer " + long}, false},
		{"nothing", "/", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tc.url, nil)
			for k, val := range tc.hdr {
				r.Header.Set(k, val)
			}
			a, _, err := v.FromRequest(r)
			if (err == nil) != tc.ok {
				t.Fatalf("got %+v, %v; want ok %v", a, err, tc.ok)
			}
		})
	}
}

// TestClientAddr: the peer unless proxies are trusted; then the entry the outermost trusted
// proxy appended, never what the client claimed before it; IPv6 by /64.
func TestClientAddr(t *testing.T) {
	tests := []struct {
		name, remote, xff string
		hops              int
		want              string
	}{
		{"peer", "203.0.113.7:5555", "", 0, "203.0.113.7"},
		{"forwarded but not trusted", "10.0.0.2:5555", "198.51.100.1", 0, "10.0.0.2"},
		{"one trusted proxy", "10.0.0.2:5555", "1.2.3.4, 198.51.100.1", 1, "198.51.100.1"},
		{"two trusted proxies", "10.0.0.2:5555", "1.2.3.4, 198.51.100.1, 10.0.0.9", 2, "198.51.100.1"},
		{"fewer entries than hops", "10.0.0.2:5555", "198.51.100.1", 2, "10.0.0.2"},
		{"garbage entry", "10.0.0.2:5555", "not-an-ip", 1, "10.0.0.2"},
		{"IPv6 by /64", "[2001:db8:1:2:3:4:5:6]:443", "", 0, "2001:db8:1:2::/64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			if tc.xff != "" {
				r.Header.Set("X-Forwarded-For", tc.xff)
			}
			if got := clientAddr(r, tc.hops); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestContentSecurityPolicy: the map's tiles are the only other origin, and only over https.
func TestContentSecurityPolicy(t *testing.T) {
	tests := map[string]string{
		"": "img-src 'self' data:;",
		"https://{s}.tile.openstreetmap.org/{z}/{x}/{y}.png": "img-src 'self' data: https://*.tile.openstreetmap.org;",
		"http://tiles.example/{z}/{x}/{y}.png":               "img-src 'self' data:;",
		"https://tiles.example;script-src * /{z}.png":        "img-src 'self' data:;",
	}
	for tiles, want := range tests {
		if got := ContentSecurityPolicy(tiles); !strings.Contains(got, want) {
			t.Errorf("tiles %q: got %q, want it to hold %q", tiles, got, want)
		}
	}
}

// TestVerifierDuringRotation: with a previous secret configured, tokens signed with either the
// current or the previous secret are accepted (from a request, as a client sends them); any
// other secret is refused, and once the previous secret is dropped its tokens are refused.
func TestVerifierDuringRotation(t *testing.T) {
	current := []byte("current-secret-of-at-least-32-bytes-0123")
	previous := []byte("previous-secret-of-at-least-32-bytes-012")
	other := []byte("another-secret-of-at-least-32-bytes-xxxx")
	sign := func(secret []byte) string {
		tok, err := Sign(secret, "driver", "d-7", time.Hour, "", "")
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	rotating := NewVerifier(current, "", "", previous)
	after := NewVerifier(current, "", "")
	tests := []struct {
		name string
		v    *Verifier
		tok  string
		ok   bool
	}{
		{"current secret, during rotation", rotating, sign(current), true},
		{"previous secret, during rotation", rotating, sign(previous), true},
		{"unknown secret, during rotation", rotating, sign(other), false},
		{"current secret, after rotation", after, sign(current), true},
		{"previous secret, after rotation", after, sign(previous), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/bookings", nil)
			r.Header.Set("Authorization", "Bearer "+tt.tok)
			actor, _, err := tt.v.FromRequest(r)
			if got := err == nil; got != tt.ok {
				t.Fatalf("got accepted %v (%v), want %v", got, err, tt.ok)
			}
			if err != nil && !errors.Is(err, errUnauthenticated) {
				t.Errorf("got %v, want errUnauthenticated", err)
			}
			if tt.ok && (actor.ID != "d-7" || actor.Role != "driver") {
				t.Errorf("got actor %+v, want d-7 driver", actor)
			}
		})
	}
}

// TestStaffTokensOnlyFromStaffNetworks: with StaffFrom, dispatcher and admin tokens are
// accepted only from the staff networks (behind one proxy: the address it appended to
// X-Forwarded-For, not what the client claims further left); other roles from anywhere.
func TestStaffTokensOnlyFromStaffNetworks(t *testing.T) {
	secret := []byte(testSecret)
	v := NewVerifier(secret, "", "")
	v.StaffFrom([]netip.Prefix{netip.MustParsePrefix("10.40.0.0/16"), netip.MustParsePrefix("2001:db8:40::/48")}, 1)
	open := NewVerifier(secret, "", "")
	tests := []struct {
		name, role, xff string
		v               *Verifier
		ok              bool
	}{
		{"dispatcher through the VPN", "dispatcher", "10.40.17.9", v, true},
		{"admin through the VPN", "admin", "10.40.3.3", v, true},
		{"dispatcher from the internet", "dispatcher", "49.36.12.7", v, false},
		{"admin from the internet", "admin", "49.36.12.7", v, false},
		{"dispatcher claiming a VPN address", "dispatcher", "10.40.17.9, 49.36.12.7", v, false},
		{"dispatcher without a forwarded address", "dispatcher", "", v, false},
		{"dispatcher from a staff IPv6 /64", "dispatcher", "2001:db8:40:7::12", v, true},
		{"dispatcher from another IPv6 network", "dispatcher", "2001:db8:41::12", v, false},
		{"driver from the internet", "driver", "49.36.12.7", v, true},
		{"customer from the internet", "customer", "49.36.12.7", v, true},
		{"dispatcher from the internet, no restriction", "dispatcher", "49.36.12.7", open, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := Sign(secret, tt.role, "u-1", time.Hour, "", "")
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", "/v1/ws", nil)
			r.RemoteAddr = "10.40.0.55:41000" // the load balancer
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			r.Header.Set("Sec-WebSocket-Protocol", "bearer."+tok)
			_, _, err = tt.v.FromRequest(r)
			if got := err == nil; got != tt.ok {
				t.Errorf("got accepted %v (%v), want %v", got, err, tt.ok)
			}
			if err != nil && !errors.Is(err, errUnauthenticated) {
				t.Errorf("got %v, want errUnauthenticated", err)
			}
		})
	}
}
