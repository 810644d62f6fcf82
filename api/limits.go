package api

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/dispatch/ratelimit"
)

// verified is the outcome of reading a request's token once, for the limiter and the handler.
type verified struct {
	actor dispatch.Actor
	err   error
}

type verifiedKey struct{}

// limiter answers 429 rate_limited to a caller over its budget, before any work is done:
// requests with a valid token are counted per user (whatever address they come from), every
// other request per client address. Users behind one carrier NAT (common on Indian mobile
// networks) so do not share a budget, while an address sending bad tokens or none is bounded.
// /livez and /readyz (the load balancer's probes) are never limited.
type limiter struct {
	verifier *Verifier
	users    *ratelimit.Keyed
	addrs    *ratelimit.Keyed
	hops     int
}

func newLimiter(opts Options) *limiter {
	burst := func(r float64) int { return max(10, int(2*r)) }
	return &limiter{verifier: opts.Verifier, hops: opts.ProxyHops,
		users: ratelimit.New(opts.RatePerUser, burst(opts.RatePerUser), 0),
		addrs: ratelimit.New(opts.RatePerAddr, burst(opts.RatePerAddr), 0)}
}

func (l *limiter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/livez" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		a, _, err := l.verifier.FromRequest(r)
		var ok bool
		var k *ratelimit.Keyed
		if err == nil {
			k = l.users
			ok = k.Allow(a.String())
		} else {
			k = l.addrs
			ok = k.Allow(clientAddr(r, l.hops))
		}
		if !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(k.RetryAfter()/time.Second)))
			writeError(w, dispatch.Errorf(dispatch.RateLimited, "too many requests; slow down"))
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), verifiedKey{}, verified{actor: a, err: err})))
	})
}

// clientAddr is the address a request is counted under: the peer, or with hops > 0 the
// address the outermost of that many trusted proxies saw (the hops-th X-Forwarded-For entry
// from the right: proxies append, so entries further left are the client's own claims). IPv6
// addresses count by their /64, which one subscriber gets whole.
func clientAddr(r *http.Request, hops int) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if hops > 0 {
		var chain []string
		for _, h := range r.Header.Values("X-Forwarded-For") {
			for _, p := range strings.Split(h, ",") {
				chain = append(chain, strings.TrimSpace(p))
			}
		}
		if len(chain) >= hops {
			if ip := net.ParseIP(chain[len(chain)-hops]); ip != nil {
				host = ip.String()
			}
		}
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return host
}
