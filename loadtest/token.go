package loadtest

import (
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// tokenTTL outlasts any run.
const tokenTTL = 24 * time.Hour

// tokenClaims are what the contract says a bearer token carries (api/contract/openapi.json,
// securitySchemes): HS256 over the server's DISPATCH_JWT_SECRET with sub, role and exp; iat as
// well. No iss or aud: a server configured with DISPATCH_JWT_ISSUER or _AUDIENCE refuses these
// tokens, so run the load against one without.
type tokenClaims struct {
	Role string `json:"role"`
	jwt.RegisteredClaims
}

// signToken makes the token of user sub in role, as the login service signs it for a real
// user: the load generator is a client of the contract, not of the server's code.
func signToken(secret []byte, role, sub string) (string, error) {
	now := time.Now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, tokenClaims{Role: role, RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(tokenTTL)),
	}}).SignedString(secret)
}
