package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Config is every setting of dispatchd: defaults, then the environment, then Validate.
type Config struct {
	HTTPAddr        string        // DISPATCH_HTTP_ADDR
	AdminAddr       string        // DISPATCH_ADMIN_ADDR
	RedisURL        string        // REDIS_URL
	MySQLDSN        string        // MYSQL_DSN
	MySQLCAFile     string        // DISPATCH_MYSQL_CA_FILE
	RedisPrefix     string        // DISPATCH_REDIS_PREFIX
	JWTSecret       string        // DISPATCH_JWT_SECRET
	JWTPrevious     string        // DISPATCH_JWT_SECRET_PREVIOUS
	JWTIssuer       string        // DISPATCH_JWT_ISSUER
	JWTAudience     string        // DISPATCH_JWT_AUDIENCE
	Roles           []string      // DISPATCH_ROLES
	AllowedOrigins  []string      // DISPATCH_ALLOWED_ORIGINS
	LogLevel        string        // DISPATCH_LOG_LEVEL
	LogFormat       string        // DISPATCH_LOG_FORMAT
	ShutdownTimeout time.Duration // DISPATCH_SHUTDOWN_TIMEOUT
	DrainDelay      time.Duration // DISPATCH_DRAIN_DELAY
	MigrateOnStart  bool          // DISPATCH_MIGRATE
	MatchWindow     time.Duration // DISPATCH_MATCH_WINDOW
	OfferTimeout    time.Duration // DISPATCH_OFFER_TIMEOUT
	MaxSearch       time.Duration // DISPATCH_MAX_SEARCH
	DriverFresh     time.Duration // DISPATCH_DRIVER_FRESH
	GoneGrace       time.Duration // DISPATCH_DRIVER_GONE_GRACE
	MatchSweep      time.Duration // DISPATCH_MATCH_SWEEP
	MatcherConns    int           // DISPATCH_MATCHER_CONNS
	MatchGreedy     bool          // DISPATCH_MATCH_GREEDY
	RelayInterval   time.Duration // DISPATCH_RELAY_INTERVAL
	RelayLease      time.Duration // DISPATCH_RELAY_LEASE
	OutboxKeep      time.Duration // DISPATCH_OUTBOX_KEEP
	MapTiles        string        // DISPATCH_MAP_TILES
	SimDrivers      int           // DISPATCH_SIMULATE_DRIVERS
	SimBookings     float64       // DISPATCH_SIMULATE_BOOKINGS_PER_MIN
	TariffsFile     string        // DISPATCH_TARIFFS
	City            string        // DISPATCH_CITY
	AreasFile       string        // DISPATCH_AREAS
	// Abuse limits (SECURITY.md).
	RatePerUser       float64        // DISPATCH_RATE_PER_USER
	RatePerAddr       float64        // DISPATCH_RATE_PER_ADDR
	ProxyHops         int            // DISPATCH_PROXY_HOPS
	StaffNetworks     []netip.Prefix // DISPATCH_STAFF_NETWORKS
	SocketRatePerUser float64        // DISPATCH_SOCKET_RATE_PER_USER
	MaxSocketsPerUser int            // DISPATCH_MAX_SOCKETS_PER_USER
}

// Setting documents one environment variable (README's table is checked against this list).
type Setting struct{ Name, Default, Meaning string }

// Settings lists every environment variable dispatchd reads.
var Settings = []Setting{
	{"DISPATCH_HTTP_ADDR", ":8080", "REST, WebSocket /v1/ws, /livez, /readyz and the live map at /"},
	{"DISPATCH_ADMIN_ADDR", ":9090", "/metrics and /debug/pprof; keep it off the public network"},
	{"REDIS_URL", "(unset: embedded)", "redis:// or rediss:// URL; several comma-separated addresses mean a Redis Cluster"},
	{"MYSQL_DSN", "(unset: embedded)", "go-sql-driver DSN, e.g. user:pass@tcp(host:3306)/dispatch"},
	{"DISPATCH_MYSQL_CA_FILE", "", "PEM bundle the MySQL server's certificate must chain to (RDS: global-bundle.pem); the DSN must then say tls=true"},
	{"DISPATCH_REDIS_PREFIX", "", "put before every Redis key and channel, so environments can share one Redis"},
	{"DISPATCH_JWT_SECRET", "(required)", "HS256 secret of at least 32 bytes"},
	{"DISPATCH_JWT_SECRET_PREVIOUS", "", "during a rotation, the secret being replaced: tokens signed with it are still accepted (never used to sign); at least 32 bytes, not the current one"},
	{"DISPATCH_JWT_ISSUER", "", "when set, tokens must carry this iss"},
	{"DISPATCH_JWT_AUDIENCE", "", "when set, tokens must carry this aud"},
	{"DISPATCH_ROLES", "all", "any of gateway, dispatcher, api (comma-separated), or all"},
	{"DISPATCH_ALLOWED_ORIGINS", "", "browser origins allowed to open sockets besides the server's own host"},
	{"DISPATCH_LOG_LEVEL", "info", "debug, info, warn or error"},
	{"DISPATCH_LOG_FORMAT", "auto", "json, console, or auto (console on a terminal)"},
	{"DISPATCH_SHUTDOWN_TIMEOUT", "10s", "how long a SIGTERM drain may take"},
	{"DISPATCH_DRAIN_DELAY", "2s", "how long /readyz answers 503 before listeners close, so load balancers stop sending"},
	{"DISPATCH_MIGRATE", "false (true when embedded)", "apply the schema at start"},
	{"DISPATCH_MATCH_WINDOW", "2s", "how long searching bookings gather before they are matched together"},
	{"DISPATCH_OFFER_TIMEOUT", "15s", "how long a driver has to answer an offer"},
	{"DISPATCH_MAX_SEARCH", "10m", "how long a booking searches before it is unfulfilled"},
	{"DISPATCH_DRIVER_FRESH", "30s", "a driver silent longer than this is no candidate"},
	{"DISPATCH_DRIVER_GONE_GRACE", "5s", "a driver whose socket closed and did not come back within this is no candidate, and their open offer is revoked"},
	{"DISPATCH_MATCH_SWEEP", "5s", "how often the matcher lists every searching booking and open offer, the safety net of the events it learns from"},
	{"DISPATCH_MATCHER_CONNS", "8", "MySQL connections of the matcher's own pool, apart from the sockets' and the API's"},
	{"DISPATCH_MATCH_GREEDY", "false", "match every window greedily (nearest pair first) instead of batch-optimally: for comparisons"},
	{"DISPATCH_RELAY_INTERVAL", "50ms", "how often the outbox relay looks for new booking events (at once again while there is a backlog)"},
	{"DISPATCH_RELAY_LEASE", "30s", "how long a relay's claim keeps other relays off outbox rows; a crashed relay's rows are published by another after it (at least 1s)"},
	{"DISPATCH_OUTBOX_KEEP", "24h", "published booking events older than this are deleted from the outbox (checked every 10 minutes, or a tenth of this if shorter)"},
	{"DISPATCH_MAP_TILES", "", "tile URL template for the live map; empty: plain background"},
	{"DISPATCH_SIMULATE_DRIVERS", "0", "start this many simulated drivers (development build only: the production build, `-tags prod`, refuses it)"},
	{"DISPATCH_SIMULATE_BOOKINGS_PER_MIN", "0", "simulated customers book this many times a minute (development build only, as above)"},
	{"DISPATCH_TARIFFS", "(built in)", "path of a tariffs JSON file"},
	{"DISPATCH_CITY", "bengaluru", "the tariff of bookings made before cities existed (they have none); every other booking is priced by its pickup's city"},
	{"DISPATCH_AREAS", "(built in)", "path of a GeoJSON file of the cities' service areas (as geo/areas/cities.geojson); every area needs a tariff"},
	{"DISPATCH_RATE_PER_USER", "20", "HTTP requests (socket upgrades included) a second per user, bursts twice that; 0: no limit"},
	{"DISPATCH_RATE_PER_ADDR", "10", "HTTP requests a second per client address among those without a valid token, bursts twice that; 0: no limit"},
	{"DISPATCH_STAFF_NETWORKS", "", "CIDRs (comma-separated) dispatcher and admin tokens are accepted from, e.g. the admin VPN's; the client address as DISPATCH_PROXY_HOPS finds it; empty: anywhere"},
	{"DISPATCH_PROXY_HOPS", "0", "trusted proxies appending to X-Forwarded-For in front (behind an ALB: 1); 0 counts the peer address"},
	{"DISPATCH_SOCKET_RATE_PER_USER", "20", "socket messages a second per user across its sockets, bursts twice that"},
	{"DISPATCH_MAX_SOCKETS_PER_USER", "5", "open sockets per customer or dispatcher (a driver's new socket replaces its old one)"},
}

// LoadConfig reads the environment over the defaults and validates the result.
func LoadConfig(getenv func(string) string) (Config, error) {
	c := Config{
		HTTPAddr: ":8080", AdminAddr: ":9090", Roles: []string{"all"}, LogLevel: "info", LogFormat: "auto",
		ShutdownTimeout: 10 * time.Second, DrainDelay: 2 * time.Second, MatchWindow: 2 * time.Second,
		OfferTimeout: 15 * time.Second, MaxSearch: 10 * time.Minute, DriverFresh: 30 * time.Second, City: "bengaluru",
		GoneGrace: 5 * time.Second, MatchSweep: 5 * time.Second, MatcherConns: 8,
		RelayInterval: 50 * time.Millisecond, RelayLease: 30 * time.Second, OutboxKeep: 24 * time.Hour,
		RatePerUser: 20, RatePerAddr: 10, SocketRatePerUser: 20, MaxSocketsPerUser: 5,
	}
	var errs []error
	str := func(name string, dst *string) {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	dur := func(name string, dst *time.Duration) {
		if v := getenv(name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				errs = append(errs, fmt.Errorf("%s=%q: want a positive duration such as 10s or 2m", name, v))
				return
			}
			*dst = d
		}
	}
	list := func(name string, dst *[]string) {
		if v := getenv(name); v != "" {
			var out []string
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
			*dst = out
		}
	}
	str("DISPATCH_HTTP_ADDR", &c.HTTPAddr)
	str("DISPATCH_ADMIN_ADDR", &c.AdminAddr)
	str("REDIS_URL", &c.RedisURL)
	str("MYSQL_DSN", &c.MySQLDSN)
	str("DISPATCH_MYSQL_CA_FILE", &c.MySQLCAFile)
	str("DISPATCH_REDIS_PREFIX", &c.RedisPrefix)
	str("DISPATCH_JWT_SECRET", &c.JWTSecret)
	str("DISPATCH_JWT_SECRET_PREVIOUS", &c.JWTPrevious)
	str("DISPATCH_JWT_ISSUER", &c.JWTIssuer)
	str("DISPATCH_JWT_AUDIENCE", &c.JWTAudience)
	list("DISPATCH_ROLES", &c.Roles)
	list("DISPATCH_ALLOWED_ORIGINS", &c.AllowedOrigins)
	str("DISPATCH_LOG_LEVEL", &c.LogLevel)
	str("DISPATCH_LOG_FORMAT", &c.LogFormat)
	dur("DISPATCH_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout)
	if v := getenv("DISPATCH_DRAIN_DELAY"); v == "0" || v == "0s" {
		c.DrainDelay = 0
	} else {
		dur("DISPATCH_DRAIN_DELAY", &c.DrainDelay)
	}
	dur("DISPATCH_MATCH_WINDOW", &c.MatchWindow)
	dur("DISPATCH_OFFER_TIMEOUT", &c.OfferTimeout)
	dur("DISPATCH_MAX_SEARCH", &c.MaxSearch)
	dur("DISPATCH_DRIVER_FRESH", &c.DriverFresh)
	dur("DISPATCH_DRIVER_GONE_GRACE", &c.GoneGrace)
	dur("DISPATCH_MATCH_SWEEP", &c.MatchSweep)
	dur("DISPATCH_RELAY_INTERVAL", &c.RelayInterval)
	dur("DISPATCH_RELAY_LEASE", &c.RelayLease)
	if c.RelayLease < time.Second {
		errs = append(errs, fmt.Errorf("DISPATCH_RELAY_LEASE=%s: want at least 1s", c.RelayLease))
	}
	dur("DISPATCH_OUTBOX_KEEP", &c.OutboxKeep)
	str("DISPATCH_MAP_TILES", &c.MapTiles)
	str("DISPATCH_TARIFFS", &c.TariffsFile)
	str("DISPATCH_CITY", &c.City)
	if v := getenv("DISPATCH_MATCH_GREEDY"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DISPATCH_MATCH_GREEDY=%q: want true or false", v))
		}
		c.MatchGreedy = b
	}
	str("DISPATCH_AREAS", &c.AreasFile)
	if v := getenv("DISPATCH_MIGRATE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DISPATCH_MIGRATE=%q: want true or false", v))
		}
		c.MigrateOnStart = b
	}
	if v := getenv("DISPATCH_SIMULATE_DRIVERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 20000 {
			errs = append(errs, fmt.Errorf("DISPATCH_SIMULATE_DRIVERS=%q: want a number from 0 to 20000", v))
		}
		c.SimDrivers = n
	}
	if v := getenv("DISPATCH_SIMULATE_BOOKINGS_PER_MIN"); v != "" {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil || n < 0 || n > 60000 {
			errs = append(errs, fmt.Errorf("DISPATCH_SIMULATE_BOOKINGS_PER_MIN=%q: want a number from 0 to 60000", v))
		}
		c.SimBookings = n
	}
	num := func(name string, dst *float64, lo, hi float64) {
		if v := getenv(name); v != "" {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil || !(n >= lo && n <= hi) {
				errs = append(errs, fmt.Errorf("%s=%q: want a number from %g to %g", name, v, lo, hi))
				return
			}
			*dst = n
		}
	}
	integer := func(name string, dst *int, lo, hi int) {
		if v := getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < lo || n > hi {
				errs = append(errs, fmt.Errorf("%s=%q: want a whole number from %d to %d", name, v, lo, hi))
				return
			}
			*dst = n
		}
	}
	num("DISPATCH_RATE_PER_USER", &c.RatePerUser, 0, 1e6)
	num("DISPATCH_RATE_PER_ADDR", &c.RatePerAddr, 0, 1e6)
	integer("DISPATCH_PROXY_HOPS", &c.ProxyHops, 0, 10)
	integer("DISPATCH_MATCHER_CONNS", &c.MatcherConns, 2, 256)
	var staff []string
	list("DISPATCH_STAFF_NETWORKS", &staff)
	for _, s := range staff {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("DISPATCH_STAFF_NETWORKS: %q is not a CIDR such as 10.40.0.0/16", s))
			continue
		}
		c.StaffNetworks = append(c.StaffNetworks, p.Masked())
	}
	num("DISPATCH_SOCKET_RATE_PER_USER", &c.SocketRatePerUser, 0.1, 1e6)
	integer("DISPATCH_MAX_SOCKETS_PER_USER", &c.MaxSocketsPerUser, 1, 1000)
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// Validate checks the settings together, with errors a person can act on.
func (c Config) Validate() error {
	var errs []error
	for name, addr := range map[string]string{"DISPATCH_HTTP_ADDR": c.HTTPAddr, "DISPATCH_ADMIN_ADDR": c.AdminAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: want host:port or :port", name, addr))
		}
	}
	if len(c.JWTSecret) < 32 {
		errs = append(errs, errors.New("DISPATCH_JWT_SECRET must be set to at least 32 bytes (make run sets a development one)"))
	}
	if c.JWTPrevious != "" && (len(c.JWTPrevious) < 32 || c.JWTPrevious == c.JWTSecret) {
		errs = append(errs, errors.New("DISPATCH_JWT_SECRET_PREVIOUS must be at least 32 bytes and differ from DISPATCH_JWT_SECRET (or be unset)"))
	}
	if strings.ContainsAny(c.RedisPrefix, "{}") {
		errs = append(errs, errors.New("DISPATCH_REDIS_PREFIX must not contain braces (they are the cluster hash tags)"))
	}
	if c.MySQLCAFile != "" && c.MySQLDSN == "" {
		errs = append(errs, errors.New("DISPATCH_MYSQL_CA_FILE is set but MYSQL_DSN is not: the CA file verifies a MySQL server"))
	}
	if (c.RedisURL == "") != (c.MySQLDSN == "") {
		errs = append(errs, errors.New("set both REDIS_URL and MYSQL_DSN, or neither for the embedded development engines"))
	}
	for _, r := range c.Roles {
		switch r {
		case "all", "gateway", "dispatcher", "api":
		default:
			errs = append(errs, fmt.Errorf("DISPATCH_ROLES: unknown role %q (want gateway, dispatcher, api or all)", r))
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("DISPATCH_LOG_LEVEL=%q: want debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "json", "console", "auto":
	default:
		errs = append(errs, fmt.Errorf("DISPATCH_LOG_FORMAT=%q: want json, console or auto", c.LogFormat))
	}
	if c.DrainDelay >= c.ShutdownTimeout {
		errs = append(errs, errors.New("DISPATCH_DRAIN_DELAY must be shorter than DISPATCH_SHUTDOWN_TIMEOUT"))
	}
	return errors.Join(errs...)
}

// OutboxPruneEvery is how often the outbox is pruned: every 10 minutes, or a tenth of
// OutboxKeep if that is shorter.
func (c Config) OutboxPruneEvery() time.Duration {
	return min(10*time.Minute, c.OutboxKeep/10)
}

// Has reports whether this process serves role.
func (c Config) Has(role string) bool {
	for _, r := range c.Roles {
		if r == "all" || r == role {
			return true
		}
	}
	return false
}

// Embedded reports whether the in-process development engines are used.
func (c Config) Embedded() bool { return c.RedisURL == "" && c.MySQLDSN == "" }
