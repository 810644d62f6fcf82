// Command loadtest is the load generator: `peak` runs the peak-hour scenario against a server
// on this machine's loopback and writes its report (`peak -child` is the same binary holding a
// slice of the drivers for a parent run); `ingest` loads a gateway with location points;
// `fanout` measures live views (dispatchers' maps, customers' tracking) under moving drivers;
// `matchsim` prints the matching simulation's table.
//
// This package only wires flags to the loadtest package; the simulation lives there.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	_ "github.com/go-sql-driver/mysql" // the driver of the status count; store registers it too
	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/loadtest"
	"github.com/drivers4me/dispatch/loadtest/matchsim"
	"github.com/drivers4me/dispatch/store"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

const usage = `usage: loadtest <command> [flags]

commands:
  peak      the peak-hour scenario against a server on loopback; writes report.{json,md} and
            charts (loadtest peak -h for its flags; make loadtest runs it against a server it starts)
  ingest    location ingestion at a steady rate against a gateway on loopback (loadtest ingest -h)
  compare   LABEL=DIR LABEL=DIR...: peak reports side by side (pickup distance, booking-to-offer),
            as loadtest/compare.sh writes for batch against greedy matching
  fanout    drivers at a point a second, dispatchers on a tenth of the city each, customers
            tracking: send-to-receive per viewer, deliveries/s, CPU per delivery (loadtest fanout -h)
  sockets   many driver sockets held across gateway processes: connect rate, RSS per socket,
            drops, a reconnect storm with /readyz and the matcher probed (loadtest sockets -h)
  matchsim  the seeded matching simulation: greedy-nearest against batch-optimal pickup
            distances, a Markdown table by drivers per booking (loadtest matchsim -h)
  drive     one driver online at a spot, driven by hand: arrive, start OTP, end typed on stdin
            (loadtest drive -h)
`

// run is the whole program; tests call it with their own args, environment and output.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "peak":
		return peak(ctx, args[1:], getenv, stdout)
	case "ingest":
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return loadtest.IngestMain(ctx, args[1:], getenv, stdout)
	case "sockets":
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return loadtest.SocketsMain(ctx, args[1:], getenv, stdout)
	case "fanout":
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return loadtest.FanoutMain(ctx, args[1:], getenv, stdout)
	case "matchsim":
		return matchTable(args[1:], stdout)
	case "compare":
		return compare(args[1:], stdout)
	case "drive":
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return drive(ctx, args[1:], getenv, os.Stdin, stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", args[0], usage)
}

func peak(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("peak", flag.ContinueOnError)
	fs.SetOutput(stdout)
	target := fs.String("target", "http://127.0.0.1:8080", "the server's base URL (loopback only)")
	gateways := fs.String("gateways", "", "comma-separated base URLs of gateway processes holding the sockets (then -target serves REST only; children take them in turn)")
	metrics := fs.String("metrics", "", "the server's Prometheus URL, e.g. http://127.0.0.1:9090/metrics (loopback only; optional)")
	dsn := fs.String("mysql-dsn", getenv("MYSQL_DSN"), "the server's MySQL, for the invariant check after the run (default $MYSQL_DSN; empty: no check)")
	city := fs.String("city", "bengaluru", "city preset: bengaluru, delhi or mumbai")
	drivers := fs.Int("drivers", 1000, fmt.Sprintf("simulated drivers, each on its own socket (at most %d)", loadtest.MaxDrivers))
	duration := fs.Duration("duration", 60*time.Second, "how long customers book (the drain comes after)")
	tick := fs.Duration("tick", 2*time.Second, "how often each driver sends its position")
	profile := fs.String("profile", "steady", "demand: steady, morning (3x) or flash (10x for one minute, or a third of a shorter run)")
	rate := fs.Float64("rate", 10, "base demand in bookings a second")
	flashAt := fs.Duration("flash-at", 0, "when the flash peak begins (default: a third into the run)")
	flashFor := fs.Duration("flash-for", 0, "how long the flash peak lasts (default: one minute, or a third of a shorter run)")
	scheduled := fs.Float64("scheduled", 0.1, "fraction of bookings made ahead (1 h to 3 days)")
	accept := fs.Float64("accept", 0.85, "probability a driver accepts an offer")
	decline := fs.Float64("decline", 0.1, "probability a driver declines an offer; the rest are left to expire")
	reconnect := fs.Float64("reconnect", 0.2, "socket drops per driver and minute (each comes back 1 to 3 ticks later)")
	approach := fs.Duration("approach", 20*time.Second, "time-lapse: a driver reaches its pickup within this long (0: at its own speed)")
	trip := fs.Duration("trip", 20*time.Second, "how long a simulated trip lasts")
	dispatchers := fs.Int("dispatchers", 8, "simulated dispatchers watching districts")
	drain := fs.Duration("drain", 30*time.Second, "after the demand stops, how long trips under way may take to finish")
	registered := fs.Bool("registered", false, "the drivers' verified profiles exist already (seeded); else each registers through the API before its first socket")
	warmup := fs.Duration("warmup", 0, "hold the demand back until every driver is connected, for at most this long (0: book from the start)")
	procs := fs.Int("procs", 0, fmt.Sprintf("child processes for the driver sockets (0: one per %d sockets when more)", loadtest.SocketsPerProc))
	sources := fs.Int("sources", 0, fmt.Sprintf("127.0.0.x source addresses (0: one per %d sockets when more)", loadtest.SocketsPerSource))
	exe := fs.String("exe", "", "binary started for children (default: this one)")
	seed := fs.Int64("seed", 1, "seed of every random choice")
	prefix := fs.String("prefix", "load", "prefix of the simulated users' ids")
	out := fs.String("out", "", "report directory (default loadtest/out/peak-<time>)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error (logs go to stderr)")
	child := fs.Bool("child", false, "internal: run as a child of a multi-process run")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("peak: unexpected arguments %q", fs.Args())
	}
	lvl, err := zerolog.ParseLevel(*logLevel)
	if err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"}).Level(lvl).With().Timestamp().Logger()

	if *child {
		// A child stops when its parent says so or its stdin closes, never on the terminal's signals.
		signal.Ignore(syscall.SIGINT)
		return loadtest.RunChild(ctx, os.Stdin, stdout, log.With().Int("pid", os.Getpid()).Logger())
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	c, ok := loadtest.CityByName(*city)
	if !ok {
		return fmt.Errorf("-city %q: want bengaluru, delhi or mumbai", *city)
	}
	demand, err := loadtest.NewProfile(*profile, *rate, *duration)
	if err != nil {
		return err
	}
	if *flashAt > 0 {
		demand.FlashAt = *flashAt
	}
	if *flashFor > 0 {
		demand.FlashFor = *flashFor
	}
	if *out == "" {
		*out = filepath.Join("loadtest", "out", "peak-"+time.Now().Format("20060102-150405"))
	}
	o := loadtest.PeakOptions{
		Target: *target, Secret: []byte(getenv("DISPATCH_JWT_SECRET")), City: c, Drivers: *drivers, Tick: *tick,
		Duration: *duration, Demand: demand, ScheduledP: *scheduled, AcceptP: *accept, DeclineP: *decline,
		ReconnectP: *reconnect, Approach: *approach, TripTime: *trip, Dispatchers: *dispatchers, Drain: *drain, Warmup: *warmup, Registered: *registered,
		Procs: *procs, Sources: *sources, Exe: *exe, MetricsURL: *metrics, Seed: *seed, IDPrefix: *prefix,
		Progress: stdout, TTY: isTerminal(stdout), Log: log,
	}
	if *gateways != "" {
		o.Gateways = strings.Split(*gateways, ",")
	}
	if *dsn != "" {
		o.Check = mysqlCheck(*dsn)
	}
	res, err := loadtest.Peak(ctx, o)
	if err != nil {
		return err
	}
	if err := res.Write(*out); err != nil {
		return fmt.Errorf("write the report: %w", err)
	}
	fmt.Fprintf(stdout, "report: %s\n", filepath.Join(*out, "report.md"))
	var problems []string
	if res.MySQL != nil && res.MySQL.InvariantViolations != 0 {
		problems = append(problems, fmt.Sprintf("%d invariant violations in MySQL", res.MySQL.InvariantViolations))
	}
	if res.CheckError != "" {
		problems = append(problems, "the MySQL check failed: "+res.CheckError)
	}
	if res.Interrupted {
		problems = append(problems, "interrupted")
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "; "))
	}
	return nil
}

// mysqlCheck is the invariant check of the dispatch issue (store.DB.InvariantViolations) and a
// count of bookings by status, against the server's database.
func mysqlCheck(dsn string) func(ctx context.Context) (*loadtest.MySQLCheck, error) {
	return func(ctx context.Context) (*loadtest.MySQLCheck, error) {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		db, err := store.Open(ctx, dsn, store.Options{MaxOpenConns: 2}, zerolog.Nop())
		if err != nil {
			return nil, err
		}
		defer db.Close()
		n, err := db.InvariantViolations(ctx)
		if err != nil {
			return nil, err
		}
		chk := &loadtest.MySQLCheck{InvariantViolations: n, BookingsByStatus: map[string]int{}}
		sdb, err := sql.Open("mysql", dsn)
		if err != nil {
			return nil, err
		}
		defer sdb.Close()
		rows, err := sdb.QueryContext(ctx, "SELECT status, COUNT(*) FROM bookings GROUP BY status")
		if err != nil {
			return nil, fmt.Errorf("count bookings by status: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var st string
			var k int
			if err := rows.Scan(&st, &k); err != nil {
				return nil, err
			}
			chk.BookingsByStatus[st] = k
		}
		return chk, rows.Err()
	}
}

// matchTable is `loadtest matchsim`: matchsim.Table at the given ratios.
func matchTable(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("matchsim", flag.ContinueOnError)
	fs.SetOutput(stdout)
	ratios := fs.String("ratios", "1.0,1.2,1.5,2.0,3.0", "free drivers per open booking, comma-separated")
	seed := fs.Uint64("seed", 1, "seed of both streams (same seed, same table)")
	bookings := fs.Int("bookings", 0, "bookings measured at each ratio (0: the simulation's default)")
	perSecond := fs.Float64("per-second", 0, "bookings a second (0: the simulation's default)")
	window := fs.Duration("window", 0, "matching window (0: the simulation's default)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	o := matchsim.Options{Seed: *seed, Bookings: *bookings, PerSecond: *perSecond, Window: *window}
	var rs []float64
	for _, f := range strings.Split(*ratios, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil {
			return fmt.Errorf("-ratios: %q is not a number", f)
		}
		o.Ratio = r
		if err := o.Validate(); err != nil {
			return fmt.Errorf("ratio %v: %w", r, err)
		}
		rs = append(rs, r)
	}
	fmt.Fprint(stdout, matchsim.Table(rs, o))
	return nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// compare writes the reports named LABEL=DIR side by side.
func compare(args []string, stdout io.Writer) error {
	var runs []loadtest.Compared
	for _, a := range args {
		label, dir, ok := strings.Cut(a, "=")
		if !ok || label == "" || dir == "" {
			return fmt.Errorf("compare: want LABEL=DIR, got %q", a)
		}
		r, err := loadtest.ReadResult(dir)
		if err != nil {
			return fmt.Errorf("compare: %w", err)
		}
		runs = append(runs, loadtest.Compared{Label: label, Dir: dir, Result: r})
	}
	return loadtest.WriteComparison(stdout, runs)
}

func drive(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("drive", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o loadtest.DriveOptions
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/v1/ws", "the server's socket")
	fs.StringVar(&o.Token, "token", getenv("DRIVER_TOKEN"), "the driver's token, as make run prints it (default $DRIVER_TOKEN)")
	fs.Float64Var(&o.Lat, "lat", 12.9716, "where the driver waits: latitude")
	fs.Float64Var(&o.Lng, "lng", 77.5946, "where the driver waits: longitude")
	fs.DurationVar(&o.Every, "every", time.Second, "how often the driver sends its position")
	fs.BoolVar(&o.Accept, "accept", false, "accept offers (default: decline them; take only bookings a dispatcher assigns)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("drive: unexpected arguments %q", fs.Args())
	}
	return loadtest.Drive(ctx, o, stdin, stdout)
}
