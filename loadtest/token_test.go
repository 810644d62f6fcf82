package loadtest

import (
	"encoding/base64"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/api"
)

// TestTokensAreTheServers: the load generator signs its own tokens (no server code in it);
// the server's verifier accepts them for every role, with the claims api.Sign would have
// written, and refuses them under another secret.
func TestTokensAreTheServers(t *testing.T) {
	secret := []byte(strings.Repeat("k", 32))
	v := api.NewVerifier(secret, "", "")
	for _, role := range api.Roles {
		t.Run(role, func(t *testing.T) {
			tok, err := signToken(secret, role, "load-"+role+"-1")
			if err != nil {
				t.Fatal(err)
			}
			a, exp, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: got %v, want the token accepted", err)
			}
			if a.ID != "load-"+role+"-1" || a.Role != role {
				t.Errorf("actor: got %s %q, want %s %q", a.Role, a.ID, role, "load-"+role+"-1")
			}
			if d := time.Until(exp); d < tokenTTL-time.Minute || d > tokenTTL {
				t.Errorf("expires in %v, want about %v", d, tokenTTL)
			}
			if _, _, err := api.NewVerifier([]byte(strings.Repeat("x", 32)), "", "").Verify(tok); err == nil {
				t.Error("Verify under another secret: got nil, want an error")
			}
			server, err := api.Sign(secret, role, "load-"+role+"-1", tokenTTL, "", "")
			if err != nil {
				t.Fatal(err)
			}
			if got, want := claimNames(t, tok), claimNames(t, server); !slices.Equal(got, want) {
				t.Errorf("claims: got %v, want api.Sign's %v", got, want)
			}
		})
	}
}

func claimNames(t *testing.T, tok string) []string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%q is not a JWS compact token", tok)
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := json.Unmarshal(b, &claims); err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(claims))
}
