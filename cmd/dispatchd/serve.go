package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/drivers4me/dispatch/api"
	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/geo"
	"github.com/drivers4me/dispatch/realtime"
	"github.com/drivers4me/dispatch/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"golang.org/x/sync/errgroup"
)

// geo satisfies the interfaces realtime declares for what it needs of the location index.
var (
	_ realtime.PointSink = (*geo.Writer)(nil)
	_ realtime.Index     = (*geo.Index)(nil)
)

// grid is geo's division of the map, which realtime's channels and live maps follow.
var grid = realtime.Grid{Region: geo.Region, RegionRes: geo.RegionRes, Cell: geo.Cell, MarketRes: geo.MarketRes,
	Covering: geo.CellsCovering, Boundary: geo.Boundary}

func newLogger(c Config, w io.Writer) zerolog.Logger {
	lvl, _ := zerolog.ParseLevel(c.LogLevel)
	out := w
	console := c.LogFormat == "console"
	if c.LogFormat == "auto" {
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				console = true
			}
		}
	}
	if console {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
	}
	return zerolog.New(out).Level(lvl).With().Timestamp().Str("service", "dispatchd").Logger()
}

// connections are the backing services of a process and how to close them.
type connections struct {
	rdb      redis.UniversalClient
	db       *store.DB
	dsn      string // for another pool (the matcher's)
	embedded bool
	closers  []func()
}

func (c *connections) Close() {
	for i := len(c.closers) - 1; i >= 0; i-- {
		c.closers[i]()
	}
}

func connect(ctx context.Context, cfg Config, log zerolog.Logger) (*connections, error) {
	conns := &connections{}
	redisURL, dsn := cfg.RedisURL, cfg.MySQLDSN
	if cfg.Embedded() {
		r, d, stop, err := startEmbedded(ctx, log)
		if err != nil {
			return nil, err
		}
		conns.closers = append(conns.closers, stop)
		conns.embedded = true
		redisURL, dsn = r, d
		log.Warn().Msg("REDIS_URL and MYSQL_DSN are unset: using the EMBEDDED in-process Redis and MySQL-compatible engine; data is lost at exit (development only)")
	}
	rdb, err := openRedis(redisURL)
	if err != nil {
		conns.Close()
		return nil, err
	}
	conns.rdb = rdb
	conns.closers = append(conns.closers, func() { _ = rdb.Close() })
	db, err := store.Open(ctx, dsn, store.Options{RelayLease: cfg.RelayLease, CAFile: cfg.MySQLCAFile}, log)
	if err != nil {
		conns.Close()
		return nil, fmt.Errorf("open MySQL: %w", err)
	}
	conns.db, conns.dsn = db, dsn
	conns.closers = append(conns.closers, func() { _ = db.Close() })
	return conns, nil
}

// openRedis takes a redis:// or rediss:// URL; several comma-separated host:port after the
// scheme (redis://a:6379,b:6379) mean a Redis Cluster.
func openRedis(u string) (redis.UniversalClient, error) {
	if strings.Contains(u, ",") {
		scheme, rest, ok := strings.Cut(u, "://")
		if !ok {
			return nil, errors.New("REDIS_URL: want redis://host:port[,host:port...]")
		}
		addrs := strings.Split(rest, ",")
		first, err := redis.ParseURL(scheme + "://" + addrs[0])
		if err != nil {
			return nil, redisURLError(err)
		}
		for i := range addrs {
			if j := strings.Index(addrs[i], "@"); j >= 0 {
				addrs[i] = addrs[i][j+1:]
			}
			addrs[i] = strings.TrimSuffix(strings.SplitN(addrs[i], "/", 2)[0], "/")
		}
		return redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Username: first.Username,
			Password: first.Password, TLSConfig: first.TLSConfig}), nil
	}
	opts, err := redis.ParseURL(u)
	if err != nil {
		return nil, redisURLError(err)
	}
	return redis.NewClient(opts), nil
}

// redisURLError describes a REDIS_URL that does not parse without quoting it: net/url's errors
// hold the whole URL, password included, and this one ends up in the task's log.
func redisURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return errors.New("REDIS_URL: not a valid redis:// or rediss:// URL (not shown: it may hold a password)")
	}
	return fmt.Errorf("REDIS_URL: %w", err)
}

func migrate(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	dsn := getenv("MYSQL_DSN")
	if dsn == "" {
		return errors.New("MYSQL_DSN must be set for migrate")
	}
	log := newLogger(Config{LogLevel: "info", LogFormat: "auto"}, stdout)
	db, err := store.Open(ctx, dsn, store.Options{CAFile: getenv("DISPATCH_MYSQL_CA_FILE")}, log)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Migrate(ctx); err != nil {
		return err
	}
	log.Info().Msg("schema is current")
	return nil
}

func serve(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	cfg, err := LoadConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	log := newLogger(cfg, stdout)
	sim, err := simulation(cfg, log.With().Str("component", "simulator").Logger())
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	conns, err := connect(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer conns.Close()
	if cfg.MigrateOnStart || conns.embedded {
		if err := conns.db.Migrate(ctx); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	tariff := dispatch.DefaultTariff()
	tariffs := dispatch.DefaultTariffs()
	if cfg.TariffsFile != "" {
		f, err := os.Open(cfg.TariffsFile)
		if err != nil {
			return fmt.Errorf("DISPATCH_TARIFFS: %w", err)
		}
		tariffs, err = dispatch.LoadTariffs(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("DISPATCH_TARIFFS %s: %w", cfg.TariffsFile, err)
		}
	}
	if tariff, err = tariffs.For(cfg.City); err != nil {
		return fmt.Errorf("DISPATCH_CITY: %w", err)
	}
	areas, err := loadAreas(cfg.AreasFile, tariffs)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Feed: the index publishes written points on the region feeds in the write's own round trip.
	index := geo.NewIndex(conns.rdb, geo.Options{Prefix: cfg.RedisPrefix})
	bus := realtime.NewBus(conns.rdb, cfg.RedisPrefix, grid)
	market := geo.NewMarket(index, 0)
	svc := dispatch.NewService(conns.db, index, bus, dispatch.ServiceOptions{Tariff: tariff, Trails: index, Offers: bus,
		Cities: areas, Tariffs: tariffs, Market: market, Quotes: conns.db, Invoices: conns.db,
		Log: log.With().Str("component", "service").Logger()})
	var previous [][]byte
	if cfg.JWTPrevious != "" {
		previous = append(previous, []byte(cfg.JWTPrevious))
	}
	verifier := api.NewVerifier([]byte(cfg.JWTSecret), cfg.JWTIssuer, cfg.JWTAudience, previous...)
	if len(cfg.StaffNetworks) > 0 {
		verifier.StaffFrom(cfg.StaffNetworks, cfg.ProxyHops)
	}

	var draining atomic.Bool
	// The schema's version is read at most every schemaRecheck once found current: a load
	// balancer polls /readyz every few seconds on every process, and two queries of
	// information_schema each time weighed on a MariaDB already busy with a reconnect storm
	// (30 of 2,439 polls failed in loadtest/sockets.sh's storm of 20,000). The pings stay.
	var schemaCheckedAt atomic.Int64
	const schemaRecheck = 30 * time.Second
	ready := func(ctx context.Context) error {
		if draining.Load() {
			return errors.New("draining")
		}
		if err := within(ctx, func(ctx context.Context) error { return conns.rdb.Ping(ctx).Err() }); err != nil {
			return errors.New("redis does not answer")
		}
		if err := within(ctx, conns.db.Ping); err != nil {
			return errors.New("mysql does not answer")
		}
		if time.Since(time.Unix(0, schemaCheckedAt.Load())) < schemaRecheck {
			return nil
		}
		if err := within(ctx, func(ctx context.Context) error {
			if ok, err := conns.db.SchemaCurrent(ctx); err != nil || !ok {
				return errors.New("not current")
			}
			return nil
		}); err != nil {
			return errors.New("schema is not current")
		}
		schemaCheckedAt.Store(time.Now().UnixNano())
		return nil
	}

	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	g, gctx := errgroup.WithContext(work)

	var hub *realtime.Hub
	if cfg.Has("gateway") {
		// The sockets' points go to the writer; the index publishes what it writes on the region
		// feeds (Feed above), which the hub subscribes to for dispatchers' maps.
		writer := geo.NewWriter(index, geo.WriterOptions{OnError: func(err error, n int) {
			log.Warn().Err(err).Int("points", n).Msg("index write failed")
		}}, reg, log)
		hub = realtime.NewHub(conns.rdb, bus, svc, conns.db, index, writer, realtime.Options{
			Auth: verifier.FromRequest, AllowedOrigins: cfg.AllowedOrigins,
			UserRate: cfg.SocketRatePerUser, MaxSocketsPerUser: cfg.MaxSocketsPerUser, GoneGrace: cfg.GoneGrace, Surges: market.Surges,
			TrailKeep: geo.TrailKeep,
		}, reg, log.With().Str("component", "gateway").Logger())
		g.Go(func() error { return hub.Run(gctx) })
		g.Go(func() error { return writer.Run(gctx) })
	}
	// The dispatch path's own MySQL pool (a bulkhead) for the matcher and the outbox relay that
	// brings it events: thousands of sockets connecting at once queue on theirs, never in front
	// of matching (at 19,000 drivers one shared pool kept the matcher from offering anything
	// for a minute).
	workDB := conns.db
	if cfg.Has("dispatcher") {
		matchDB, err := store.Open(ctx, conns.dsn, store.Options{MaxOpenConns: cfg.MatcherConns, RelayLease: cfg.RelayLease, CAFile: cfg.MySQLCAFile},
			log.With().Str("pool", "matcher").Logger())
		if err != nil {
			return fmt.Errorf("open the matcher's MySQL pool: %w", err)
		}
		defer matchDB.Close()
		workDB = matchDB
	}
	if cfg.Has("dispatcher") {
		// The matcher reads candidates from an in-memory replica of the regions' drivers, fed by
		// the gateways' region feeds (16 times GEOSEARCH's rate in BENCHMARKS.md); until its first
		// load it answers from Redis.
		replica := geo.NewReplica(index, geo.ReplicaOptions{}, log.With().Str("component", "replica").Logger())
		g.Go(func() error { return replica.Run(gctx) })
		m := dispatch.NewMatcher(workDB, replica, geo.NewRegions(conns.rdb, geo.Options{Prefix: cfg.RedisPrefix}), bus, dispatch.MatcherOptions{
			Window: cfg.MatchWindow, OfferTimeout: cfg.OfferTimeout, MaxSearch: cfg.MaxSearch, Fresh: cfg.DriverFresh,
			Sweep: cfg.MatchSweep, Greedy: cfg.MatchGreedy,
		}, reg, log.With().Str("component", "matcher").Logger())
		g.Go(func() error { return m.Run(gctx) })
		// Bookings and closed offers reach the matcher as events; its sweep catches the lost.
		g.Go(func() error { return bus.Follow(gctx, m) })
		// Drivers silent for four times the freshness bound are marked offline (issue 3).
		sweepLog := log.With().Str("component", "sweeper").Logger()
		g.Go(func() error { return index.RunSweeper(gctx, cfg.DriverFresh, 4*cfg.DriverFresh, sweepLog) })
	}
	if cfg.Has("dispatcher") || cfg.Has("api") {
		g.Go(func() error { return workDB.RunRelay(gctx, bus, cfg.RelayInterval) })
		g.Go(func() error { return conns.db.RunOutboxPruner(gctx, cfg.OutboxKeep, cfg.OutboxPruneEvery()) })
	}

	srv := api.NewServer(svc, index, api.Options{Verifier: verifier, Ready: ready, Tiles: cfg.MapTiles,
		ServeAPI: cfg.Has("api"), Sockets: socketHandler(hub),
		RatePerUser: cfg.RatePerUser, RatePerAddr: cfg.RatePerAddr, ProxyHops: cfg.ProxyHops}, log.With().Str("component", "api").Logger())
	httpLn, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("DISPATCH_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		httpLn.Close()
		return fmt.Errorf("DISPATCH_ADMIN_ADDR %s: %w", cfg.AdminAddr, err)
	}
	// Bounds against slow or bloated clients; a socket's upgrade clears the deadlines.
	httpSrv := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	adminSrv := &http.Server{Handler: adminMux(reg), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 2)
	go func() { serveErr <- ignoreClosed(httpSrv.Serve(httpLn)) }()
	go func() { serveErr <- ignoreClosed(adminSrv.Serve(adminLn)) }()
	log.Info().Str("http", httpLn.Addr().String()).Str("admin", adminLn.Addr().String()).
		Strs("roles", cfg.Roles).Bool("embedded", conns.embedded).Msg("listening")

	if sim != nil {
		addr := loopback(httpLn.Addr())
		g.Go(func() error { return sim(gctx, addr) })
	}

	var runErr error
	select {
	case <-ctx.Done():
		log.Info().Msg("shutting down")
	case <-gctx.Done():
		runErr = g.Wait()
		log.Error().Err(runErr).Msg("a component stopped; shutting down")
	case runErr = <-serveErr:
		log.Error().Err(runErr).Msg("listener failed; shutting down")
	}

	// The order of STYLE.md: /readyz 503, stop accepting, close sockets with 1001, drain the
	// dispatch loop, flush writers, close Redis and MySQL (deferred above).
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	draining.Store(true)
	if runErr == nil && cfg.DrainDelay > 0 {
		select {
		case <-time.After(cfg.DrainDelay):
		case <-shutdownCtx.Done():
		}
	}
	if err := httpSrv.Shutdown(shutdownCtx); err != nil {
		log.Warn().Err(err).Msg("http shutdown")
	}
	if hub != nil {
		if err := hub.Shutdown(shutdownCtx); err != nil {
			log.Warn().Err(err).Msg("closing sockets")
		}
	}
	stopWork()
	if err := g.Wait(); err != nil && runErr == nil && !errors.Is(err, context.Canceled) {
		runErr = err
	}
	_ = adminSrv.Shutdown(shutdownCtx)
	log.Info().Msg("stopped")
	return runErr
}

// loadAreas reads the service areas (DISPATCH_AREAS, else the built-in ones) and checks them
// against the tariffs: every area must have a tariff, or its pickups could not be priced. A
// tariff without an area is a city not served yet.
func loadAreas(path string, tariffs *dispatch.Tariffs) (*geo.Areas, error) {
	var areas *geo.Areas
	var err error
	if path == "" {
		areas, err = geo.DefaultAreas()
	} else {
		f, ferr := os.Open(path)
		if ferr != nil {
			return nil, fmt.Errorf("DISPATCH_AREAS: %w", ferr)
		}
		areas, err = geo.LoadAreas(f)
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("DISPATCH_AREAS %s: %w", path, err)
	}
	for _, id := range areas.IDs() {
		if _, err := tariffs.For(id); err != nil {
			return nil, fmt.Errorf("DISPATCH_AREAS: city %q has an area but no tariff in %q", id, tariffs.Version)
		}
	}
	return areas, nil
}

// within runs check and returns its error, or ctx's once ctx is done, whichever comes first:
// /readyz must answer within its probe timeout even when a client library does not honour the
// deadline (go-redis dialling a connection to a Redis that accepts and never answers waits out
// its own 5 s DialTimeout; found by TestFaultBlackhole). The check's goroutine ends by the
// library's own timeouts.
func within(ctx context.Context, check func(context.Context) error) error {
	done := make(chan error, 1)
	go func() { done <- check(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func socketHandler(h *realtime.Hub) http.Handler {
	if h == nil {
		return nil
	}
	return h
}

func adminMux(reg *prometheus.Registry) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

func ignoreClosed(err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// loopback turns a listener address such as [::]:8080 into one a local client can dial.
func loopback(a net.Addr) string {
	_, port, _ := net.SplitHostPort(a.String())
	return "127.0.0.1:" + port
}
