package realtime

import (
	"encoding/json"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/dispatch/ratelimit"
	"github.com/prometheus/client_golang/prometheus"
)

// messageRoles says which roles may send each client message (API.md "WebSocket"). A known
// type from any other role is answered permission_denied before its session sees it; a type
// not listed here is the session's to refuse (invalid_argument). Whose offer, trip or booking
// it is, dispatch.Service decides (not_found for someone else's).
var messageRoles = map[string][]string{
	"location":      {"driver"},
	"locations":     {"driver"},
	"status":        {"driver"},
	"offer.accept":  {"driver"},
	"offer.decline": {"driver"},
	"trip.arrive":   {"driver"},
	"trip.start":    {"driver"},
	"trip.end":      {"driver"},
	"trip.cancel":   {"driver"},
	"watch":         {"customer", "dispatcher", "admin"},
	"watch.area":    {"dispatcher", "admin"},
}

// MessageRoles returns, for each client message type, the roles that may send it.
func MessageRoles() map[string][]string {
	out := make(map[string][]string, len(messageRoles))
	for t, rs := range messageRoles {
		out[t] = slices.Clone(rs)
	}
	return out
}

// maxWatched bounds the bookings one socket watches (each is a subscription).
const maxWatched = 100

// normalizePoint keeps the optional fields of a point within their meaning: a heading or speed
// below 0 is "unknown" on phones (iOS sends -1) and becomes 0 (absent); a heading past 360 is
// taken modulo 360; an accuracy that is not a number is no accuracy (+Inf, refused by the
// bound: a NaN would pass every comparison). Required fields are validated, not normalized
// (driverSession.accept). JSON carries no NaN nor infinity; this is for whatever else may call.
func normalizePoint(p dispatch.Point) dispatch.Point {
	if math.IsNaN(p.Acc) {
		p.Acc = math.Inf(1)
	}
	if p.Heading < 0 || math.IsNaN(p.Heading) || math.IsInf(p.Heading, 0) {
		p.Heading = 0
	} else if p.Heading >= 360 {
		p.Heading = math.Mod(p.Heading, 360)
	}
	if p.Speed < 0 || math.IsNaN(p.Speed) || math.IsInf(p.Speed, 0) {
		p.Speed = 0
	}
	return p
}

// errTooManySockets refuses an upgrade past Options.MaxSocketsPerUser.
var errTooManySockets = dispatch.Errorf(dispatch.RateLimited, "too many open sockets for this user")

// decodeEnvelope reads one frame; an error means it is no envelope {type, seq?, data}.
func decodeEnvelope(data []byte) (Envelope, error) {
	var env Envelope
	if err := json.Unmarshal(data, &env); err != nil || env.Type == "" {
		return Envelope{}, dispatch.Errorf(dispatch.InvalidArgument, "frame is not a JSON envelope {type, seq?, data}")
	}
	return env, nil
}

// guards hold what one user may do across all its sockets on this gateway: how many sockets
// it keeps open and how many messages a second it sends. Safe for concurrent use.
//
// Lock order: guards.mu is a leaf; it is never held while taking another lock.
type guards struct {
	msgs       *ratelimit.Keyed // a user's client messages but positions, across its sockets
	perSecond  float64
	maxSockets int
	refused    *prometheus.CounterVec

	mu      sync.Mutex
	sockets map[string]int // user -> open sockets that count against the cap
}

func newGuards(opts Options, reg prometheus.Registerer) *guards {
	g := &guards{perSecond: opts.UserRate, maxSockets: opts.MaxSocketsPerUser, sockets: map[string]int{},
		msgs: ratelimit.New(opts.UserRate, int(2*opts.UserRate), 0),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dispatch_socket_refusals_total",
			Help: "Socket upgrades and client messages refused by the gateway's guards, by reason."}, []string{"reason"})}
	if reg != nil {
		reg.MustRegister(g.refused)
	}
	return g
}

// slot is one socket's place in its user's budget; release gives it back (once).
type slot struct {
	g       *guards
	actor   dispatch.Actor
	key     string
	counted bool
	// strikes are the refusals a socket may earn before it is closed with 1008: a client that
	// keeps sending past its budget is not served error frames for ever. Used by the socket's
	// read loop only.
	strikes ratelimit.Bucket
	once    sync.Once
}

// admit reserves a socket for the actor, or refuses with errTooManySockets. A driver's new
// socket replaces its old one (driverSession.start), so drivers are not counted.
func (g *guards) admit(a dispatch.Actor) (*slot, error) {
	s := &slot{g: g, actor: a, key: a.String(), strikes: ratelimit.NewBucket(g.perSecond, float64(int(2*g.perSecond)+1))}
	if a.Role == "driver" {
		return s, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sockets[s.key] >= g.maxSockets {
		g.refused.WithLabelValues("too_many_sockets").Inc()
		return nil, errTooManySockets
	}
	g.sockets[s.key]++
	s.counted = true
	return s, nil
}

func (s *slot) release() {
	if s == nil || !s.counted {
		return
	}
	s.once.Do(func() {
		s.g.mu.Lock()
		defer s.g.mu.Unlock()
		if s.g.sockets[s.key]--; s.g.sockets[s.key] <= 0 {
			delete(s.g.sockets, s.key)
		}
	})
}

// refuse says why a frame must not reach the session (nil: it may), for the read loop to
// answer: a message the actor's role may not send is permission_denied; past the user's budget
// a message is rate_limited, and strikeOut says that the socket keeps going past its budget
// and is to be closed with 1008 once answered. Called by the socket's read loop only.
//
// Location frames have their own budget (Options.Rate, dropped and counted past it: API.md)
// per socket, and a driver holds one socket (a newer one replaces it), so that budget is the
// user's too; they do not draw on the shared one, which would let a driver's own positions
// starve its offer.accept.
func (s *slot) refuse(env Envelope) (refusal error, strikeOut bool) {
	if roles, known := messageRoles[env.Type]; known && !slices.Contains(roles, s.actor.Role) {
		s.g.refused.WithLabelValues("forbidden").Inc()
		return dispatch.Errorf(dispatch.PermissionDenied, "a %s may not send %s", s.actor.Role, env.Type), false
	}
	now := time.Now()
	if env.Type == "location" || env.Type == "locations" || s.g.msgs.AllowAt(s.key, now) {
		return nil, false
	}
	s.g.refused.WithLabelValues("rate_limited").Inc()
	return dispatch.Errorf(dispatch.RateLimited, "too many messages; slow down"), !s.strikes.Allow(now)
}
