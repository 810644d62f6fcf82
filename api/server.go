// Package api owns the REST handlers, authentication, the one mapping from domain errors to
// HTTP statuses, and the dispatchers' live map embedded in the binary.
//
// api must not hold state of its own nor talk to Redis or MySQL directly: it calls
// dispatch.Service and the narrow interfaces it is given.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/rs/zerolog"
)

//go:embed web/index.html web/app.js web/app.css web/favicon.svg web/vendor
var webFS embed.FS

// maxBody bounds every request body.
const maxBody = 16 << 10

// Options configure a Server.
type Options struct {
	Verifier *Verifier
	// Ready answers nil while the process can serve (Redis, MySQL, schema) and is not draining.
	Ready func(ctx context.Context) error
	// Sockets serves GET /v1/ws (nil: this process is no gateway).
	Sockets http.Handler
	// Tiles is the map's tile URL template ("" : plain background).
	Tiles string
	// Roles this process serves: API routes only with "api".
	ServeAPI bool
	// RatePerUser is the requests a second a user (a valid token) may make, socket upgrades
	// included; RatePerAddr the same for a client address, counting requests without a valid
	// token. Bursts are twice as many (at least 10). 0: no limit.
	RatePerUser, RatePerAddr float64
	// ProxyHops is how many trusted proxies append to X-Forwarded-For in front of this server
	// (an ALB: 1); 0 trusts no header and counts the peer's address.
	ProxyHops int
}

// Server is the HTTP surface.
type Server struct {
	svc  *dispatch.Service
	loc  dispatch.Locator
	opts Options
	log  zerolog.Logger
}

// NewServer returns a Server.
func NewServer(svc *dispatch.Service, loc dispatch.Locator, opts Options, log zerolog.Logger) *Server {
	return &Server{svc: svc, loc: loc, opts: opts, log: log}
}

// Handler is the whole HTTP surface with its middleware.
func (s *Server) Handler() http.Handler {
	h, _ := s.handler()
	return h
}

func (s *Server) handler() (http.Handler, []string) {
	mux := &routeMux{ServeMux: http.NewServeMux()}
	mux.HandleFunc("GET /v1/openapi.json", contractDoc("openapi.json"))
	mux.HandleFunc("GET /v1/asyncapi.json", contractDoc("asyncapi.json"))
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]string{"status": "ok"}) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.opts.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": err.Error()})
			return
		}
		writeJSON(w, 200, map[string]string{"status": "ready"})
	})
	if s.opts.Sockets != nil {
		mux.Handle("GET /v1/ws", s.opts.Sockets)
	}
	if s.opts.ServeAPI {
		// Who may call what (API.md): the role decides here, before the body is read; whose
		// booking or driver it is, dispatch.Service decides (404 for someone else's).
		staff := []string{"dispatcher", "admin"}
		mux.HandleFunc("POST /v1/quotes", s.auth(s.quote, "customer", "dispatcher", "admin"))
		mux.HandleFunc("POST /v1/bookings", s.auth(s.createBooking, "customer"))
		mux.HandleFunc("GET /v1/bookings", s.auth(s.listBookings))
		mux.HandleFunc("GET /v1/bookings/{id}", s.auth(s.getBooking))
		mux.HandleFunc("POST /v1/bookings/{id}/cancel", s.auth(s.cancel))
		mux.HandleFunc("POST /v1/bookings/{id}/assign", s.auth(s.assign, staff...))
		mux.HandleFunc("POST /v1/bookings/{id}/arrive", s.auth(s.arrive, "driver"))
		mux.HandleFunc("POST /v1/bookings/{id}/start", s.auth(s.start, "driver"))
		mux.HandleFunc("POST /v1/bookings/{id}/end", s.auth(s.end, "driver"))
		mux.HandleFunc("GET /v1/bookings/{id}/route", s.auth(s.route))
		mux.HandleFunc("GET /v1/bookings/{id}/receipt", s.auth(s.receipt, append([]string{"customer"}, staff...)...))
		mux.HandleFunc("GET /v1/cities", s.auth(s.cities))
		mux.HandleFunc("GET /v1/drivers/nearby", s.auth(s.nearby, staff...))
		mux.HandleFunc("GET /v1/drivers/{id}", s.auth(s.driver))
		// Drivers and customers as people (API.md v1.1).
		mux.HandleFunc("POST /v1/drivers", s.auth(s.createDriver, staff...))
		mux.HandleFunc("GET /v1/drivers", s.auth(s.listDrivers, staff...))
		mux.HandleFunc("PATCH /v1/drivers/{id}", s.auth(s.patchDriver, staff...))
		mux.HandleFunc("GET /v1/drivers/{id}/profile", s.auth(s.driverProfile, append([]string{"driver"}, staff...)...))
		mux.HandleFunc("GET /v1/drivers/{id}/calendar", s.auth(s.calendar, append([]string{"driver"}, staff...)...))
		mux.HandleFunc("POST /v1/bookings/{id}/rating", s.auth(s.rate, "customer"))
		mux.HandleFunc("POST /v1/bookings/{id}/retry", s.auth(s.retry, append([]string{"customer"}, staff...)...))
		mux.HandleFunc("GET /v1/bookings/{id}/events", s.auth(s.events, append([]string{"customer"}, staff...)...))
		mux.HandleFunc("GET /v1/bookings/{id}/candidates", s.auth(s.candidates, staff...))
		mux.HandleFunc("GET /config.json", s.mapConfig)
		web, err := fs.Sub(webFS, "web")
		if err != nil {
			panic("api: " + err.Error()) // "web" is a literal directory of the embed
		}
		mux.Handle("GET /", http.FileServerFS(web))
	}
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		mux.HandleFunc(m+" /v1/", func(w http.ResponseWriter, r *http.Request) {
			// Not a domain error (no resource's existence is told): api's own text, as the ALB's.
			writeJSON(w, status(dispatch.NotFound), errBody(dispatch.NotFound.String(), "no such endpoint"))
		})
	}
	return s.logNoted(securityHeaders(ContentSecurityPolicy(s.opts.Tiles), newLimiter(s.opts).wrap(mux))), mux.patterns
}

// ContentSecurityPolicy is the policy of every answer: the page's own scripts and styles only
// (no inline code, no eval), sockets and fetches to this origin only ('self' covers ws: and
// wss: of the same host), images from this origin and the map's tile server, no plugins, no
// framing, and no form submission (the sign-in form is handled by script; were it submitted
// natively, the token would land in a URL).
func ContentSecurityPolicy(tiles string) string {
	img := "'self' data:"
	if o := tileOrigin(tiles); o != "" {
		img += " " + o
	}
	return "default-src 'self'; script-src 'self'; style-src 'self'; img-src " + img +
		"; connect-src 'self'; font-src 'self'; object-src 'none'; worker-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}

// tileOrigin is the scheme and host of a tile URL template ("{s}" subdomains become a
// wildcard), or "" when there is none or it is not plain https.
func tileOrigin(tmpl string) string {
	rest, ok := strings.CutPrefix(tmpl, "https://")
	if !ok {
		return ""
	}
	host, _, _ := strings.Cut(rest, "/")
	host = strings.ReplaceAll(host, "{s}", "*")
	for _, c := range host {
		if !(c == '.' || c == '-' || c == '*' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return ""
		}
	}
	if host == "" || strings.Contains(strings.TrimPrefix(host, "*."), "*") {
		return "" // a wildcard only as the whole first label, as {s} gives
	}
	return "https://" + host
}

func securityHeaders(csp string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", csp)
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()")
		if r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https" {
			h.Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
		}
		next.ServeHTTP(w, r)
	})
}

type handler func(w http.ResponseWriter, r *http.Request, a dispatch.Actor)

// auth verifies the bearer token (once: the limiter's reading is reused); a failure is 401 with
// nothing of the token in logs or answer. With roles given, any other role is 403 before the
// body is read.
func (s *Server) auth(h handler, roles ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, ok := r.Context().Value(verifiedKey{}).(verified)
		if !ok {
			v.actor, _, v.err = s.opts.Verifier.FromRequest(r)
		}
		if v.err != nil {
			writeError(w, dispatch.Errorf(dispatch.Unauthenticated, "a valid bearer token is required"))
			return
		}
		if len(roles) > 0 && !slices.Contains(roles, v.actor.Role) {
			writeError(w, dispatch.Errorf(dispatch.PermissionDenied, "a %s may not make this call", v.actor.Role))
			return
		}
		if err := validUTF8(r); err != nil {
			writeError(w, err)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r, v.actor)
	}
}

func (s *Server) quote(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	var req dispatch.BookingRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	q, err := s.svc.Quote(r.Context(), a, req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, quoteAnswer(q))
}

func (s *Server) createBooking(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	var req dispatch.BookingRequest
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	canon, err := json.Marshal(req)
	if err != nil {
		writeError(w, fmt.Errorf("canonical form of a booking request: %w", err))
		return
	}
	sum := sha256.Sum256(canon)
	b, created, err := s.svc.CreateBooking(r.Context(), a, req, r.Header.Get("Idempotency-Key"), hex.EncodeToString(sum[:]))
	if err != nil {
		writeError(w, err)
		return
	}
	status := http.StatusCreated
	if !created {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	writeJSON(w, status, b)
}

func (s *Server) getBooking(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	b, err := s.svc.Booking(r.Context(), a, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, b)
}

func (s *Server) listBookings(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	q := r.URL.Query()
	f := dispatch.BookingFilter{Status: dispatch.Status(q.Get("status"))}
	if f.Status != "" && !f.Status.Valid() {
		writeError(w, dispatch.Errorf(dispatch.InvalidArgument, "unknown status %q", q.Get("status")))
		return
	}
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 500 {
			writeError(w, dispatch.Errorf(dispatch.InvalidArgument, "limit must be 1 to 500"))
			return
		}
		f.Limit = n
	}
	mine := q.Get("mine") == "true"
	if !a.Staff() && !mine {
		writeError(w, dispatch.Errorf(dispatch.PermissionDenied, "only dispatchers list every booking; use mine=true"))
		return
	}
	bs, err := s.svc.Bookings(r.Context(), a, f, mine)
	if err != nil {
		writeError(w, err)
		return
	}
	if bs == nil {
		bs = []dispatch.Booking{}
	}
	writeJSON(w, 200, map[string]any{"bookings": bs})
}

func (s *Server) cancel(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	var req struct {
		Reason string `json:"reason"`
	}
	if err := readJSONOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	s.answer(w)(s.svc.Cancel(r.Context(), a, r.PathValue("id"), req.Reason))
}

func (s *Server) assign(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	var req struct {
		DriverID string `json:"driver_id"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	s.answer(w)(s.svc.Assign(r.Context(), a, r.PathValue("id"), req.DriverID))
}

func (s *Server) arrive(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	s.answer(w)(s.svc.Arrive(r.Context(), a, r.PathValue("id")))
}

func (s *Server) start(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	var req struct {
		OTP string `json:"otp"`
	}
	if err := readJSON(r, &req); err != nil {
		writeError(w, err)
		return
	}
	s.answer(w)(s.svc.Start(r.Context(), a, r.PathValue("id"), req.OTP))
}

func (s *Server) end(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	s.answer(w)(s.svc.End(r.Context(), a, r.PathValue("id")))
}

// route answers a completed booking's recorded trip, its polyline also decoded as points.
func (s *Server) route(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	t, err := s.svc.Route(r.Context(), a, r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	pts, err := dispatch.DecodePolyline(t.Polyline)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, 200, struct {
		dispatch.Trip
		Path []dispatch.LatLng `json:"route"`
	}{t, pts})
}

func (s *Server) nearby(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	q := r.URL.Query()
	num := func(name string, def, lo, hi float64) (float64, error) {
		v := q.Get(name)
		if v == "" {
			if def != def { // NaN: required
				return 0, dispatch.Errorf(dispatch.InvalidArgument, "%s is required", name)
			}
			return def, nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < lo || f > hi || f != f {
			return 0, dispatch.Errorf(dispatch.InvalidArgument, "%s must be a number within [%g, %g]", name, lo, hi)
		}
		return f, nil
	}
	nan := func() float64 { var z float64; return z / z }()
	lat, err := num("lat", nan, -90, 90)
	if err == nil {
		var lng, radius, limit float64
		if lng, err = num("lng", nan, -180, 180); err == nil {
			if radius, err = num("radius_m", 3000, 1, 50000); err == nil {
				if limit, err = num("limit", 10, 1, 100); err == nil {
					near, err := s.loc.Nearby(r.Context(), lat, lng, radius, int(limit), func(p dispatch.Position) bool {
						return p.State != dispatch.DriverOffline
					})
					if err != nil {
						writeError(w, err)
						return
					}
					out := make([]dispatch.DriverView, len(near))
					for i, n := range near {
						out[i] = n.View()
						d := n.DistanceM
						out[i].DistanceM = &d
					}
					s.named(r, out)
					writeJSON(w, 200, map[string]any{"drivers": out})
					return
				}
			}
		}
	}
	writeError(w, err)
}

func (s *Server) driver(w http.ResponseWriter, r *http.Request, a dispatch.Actor) {
	id := r.PathValue("id")
	if !a.Staff() && !(a.Role == "driver" && a.ID == id) {
		writeError(w, dispatch.Errorf(dispatch.PermissionDenied, "only dispatchers and the driver itself"))
		return
	}
	p, err := s.loc.Position(r.Context(), id)
	if errors.Is(err, dispatch.ErrNotFound) {
		// Never seen online, yet registered: offline, with its name.
		if d, perr := s.svc.DriverProfile(r.Context(), a, id); perr == nil {
			err, p = nil, dispatch.Position{DriverID: d.ID, State: dispatch.DriverOffline}
		}
	}
	if err != nil {
		writeError(w, err)
		return
	}
	v := p.View()
	if st, err := s.loc.State(r.Context(), id); err == nil {
		v.State = st
	} else if !errors.Is(err, dispatch.ErrNotFound) {
		note(w, fmt.Errorf("driver %s: state (answered the position's): %w", id, err))
	}
	views := []dispatch.DriverView{v}
	s.named(r, views)
	writeJSON(w, 200, views[0])
}

func (s *Server) mapConfig(w http.ResponseWriter, r *http.Request) {
	attribution := ""
	if s.opts.Tiles != "" {
		attribution = "© OpenStreetMap contributors"
	}
	writeJSON(w, 200, map[string]any{"tiles": s.opts.Tiles, "attribution": attribution, "center": []float64{12.97, 77.59}, "zoom": 12})
}

func (s *Server) answer(w http.ResponseWriter) func(dispatch.Booking, error) {
	return func(b dispatch.Booking, err error) {
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, 200, b)
	}
}

// writeJSON answers v as JSON. A value that cannot be encoded (a bug) answers 500 internal and
// its error is noted for the log; a failed write is noted by the writer (logNoted).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		note(w, fmt.Errorf("encode a %d answer: %w", status, err))
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n')) // a failure is noted by logNoted's writer
}

// readJSON decodes a required JSON body; any failure is invalid_argument with the reason.
func readJSON(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return dispatch.Errorf(dispatch.InvalidArgument, "a JSON body is required")
	}
	return decodeJSON(body, v)
}

// readJSONOptional is readJSON where an empty body (of any transfer encoding) means no fields.
func readJSONOptional(r *http.Request, v any) error {
	body, err := readBody(r)
	if err != nil || len(bytes.TrimSpace(body)) == 0 {
		return err
	}
	return decodeJSON(body, v)
}

// readBody reads a body of at most maxBody bytes (auth set the bound); one that is not empty
// must be declared as JSON (or not declared).
func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, dispatch.Errorf(dispatch.InvalidArgument, "body larger than %d bytes", maxBody)
		}
		return nil, dispatch.Errorf(dispatch.InvalidArgument, "cannot read body")
	}
	if ct := r.Header.Get("Content-Type"); len(body) > 0 && ct != "" && !isJSON(ct) {
		// 400, not 415: the contract's codes (invalid_argument 400) are what clients map.
		return nil, dispatch.Errorf(dispatch.InvalidArgument, "Content-Type must be application/json")
	}
	if !utf8.Valid(body) {
		return nil, dispatch.Errorf(dispatch.InvalidArgument, "the body is not valid UTF-8")
	}
	return body, nil
}

// isJSON reports whether a Content-Type declares JSON: application/json, with or without
// parameters (charset=utf-8); not application/jsonxyz nor application/json-seq.
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && mt == "application/json"
}

// validUTF8 refuses a request whose path, query or Idempotency-Key is not valid UTF-8 (the
// ids in them go to MySQL and Redis, which refuse or mangle such bytes).
func validUTF8(r *http.Request) error {
	switch {
	case !utf8.ValidString(r.URL.Path):
		return dispatch.Errorf(dispatch.InvalidArgument, "the path is not valid UTF-8")
	case !utf8.ValidString(r.URL.RawQuery) || !queryUTF8(r):
		return dispatch.Errorf(dispatch.InvalidArgument, "the query is not valid UTF-8")
	case !utf8.ValidString(r.Header.Get("Idempotency-Key")):
		return dispatch.Errorf(dispatch.InvalidArgument, "Idempotency-Key is not valid UTF-8")
	}
	return nil
}

func queryUTF8(r *http.Request) bool {
	for k, vs := range r.URL.Query() {
		if !utf8.ValidString(k) {
			return false
		}
		for _, v := range vs {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

func decodeJSON(body []byte, v any) error {
	if err := json.Unmarshal(body, v); err != nil {
		return dispatch.Errorf(dispatch.InvalidArgument, "malformed JSON body: %s", jsonReason(err))
	}
	return nil
}

func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return "field " + te.Field + " must be " + te.Type.String()
	}
	return err.Error()
}
