package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Bounds of a peak run: the generator stops by itself and never grows past these.
const (
	MaxDrivers     = 200_000
	MaxDispatchers = 1_000
	MaxDuration    = time.Hour
	MaxDrain       = 5 * time.Minute
	MaxRate        = 5_000 // bookings a second at the peak of the profile
	// SocketsPerProc is how many sockets one process holds before the run spreads over
	// children (this machine allows 20,000 open files a process).
	SocketsPerProc = 15_000
	// SocketsPerSource is how many sockets one 127.0.0.x source address carries towards one
	// server port before another is used (the ephemeral port range holds about 28,000).
	SocketsPerSource = 25_000
)

// PeakOptions configure the peak scenario.
type PeakOptions struct {
	// Target is the server's base URL, http://127.0.0.1:8080; only loopback is accepted.
	Target string
	// Gateways, when set, are the base URLs of gateway processes (DISPATCH_ROLES=gateway) that
	// hold the sockets, Target then serving REST only: drivers' child processes take them in
	// turn, the parent's dispatchers the first.
	Gateways []string
	Secret   []byte
	City     City
	// Drivers on their own sockets, each sending a point every Tick.
	Drivers  int
	Tick     time.Duration
	Duration time.Duration
	// Demand paces the customers over Duration.
	Demand     Profile
	ScheduledP float64
	// AcceptP and DeclineP: what a driver does with an offer; the rest are left to expire.
	AcceptP, DeclineP float64
	ReconnectP        float64
	Approach          time.Duration
	TripTime          time.Duration
	// Dispatchers watching districts with watch.area.
	Dispatchers int
	// Registered: the drivers' verified profiles were seeded before the run (city.sh writes
	// them to MySQL in one statement); else each driver registers through the API first.
	Registered bool
	// Warmup, when set, holds the demand back until every driver is connected, for at most
	// this long: the run's figures (throughput, per-unit costs) then cover the whole fleet.
	Warmup time.Duration
	// Drain is how long, after the demand stops, trips under way may take to finish before
	// what is still open is cancelled (default 30 s).
	Drain time.Duration
	// Procs is how many child processes hold the driver sockets (0: none below
	// SocketsPerProc sockets, else one per SocketsPerProc). Sources is how many 127.0.0.x
	// source addresses the sockets use (0: the kernel's choice below SocketsPerSource, else
	// one per SocketsPerSource, from 127.0.0.2).
	Procs   int
	Sources int
	// Exe and ChildArgs start a child: by default this binary with `peak -child`.
	Exe       string
	ChildArgs []string
	// MetricsURL is the server's Prometheus endpoint (loopback; several, comma-separated, for a
	// run over several processes: their counts add up), scraped before and after to
	// set the server's own counts beside the generator's. Optional.
	MetricsURL string
	// Check runs after the run against the server's MySQL (the invariant check). Optional.
	Check    func(ctx context.Context) (*MySQLCheck, error)
	Seed     int64
	IDPrefix string
	// Progress receives a progress bar (TTY true: one line redrawn; else a line every 5 s).
	Progress io.Writer
	TTY      bool
	Log      zerolog.Logger
}

// MySQLCheck is what MySQL says after a run.
type MySQLCheck struct {
	// InvariantViolations: drivers with overlapping calendar blocks plus active bookings without
	// a driver or a block (store.DB.InvariantViolations). Must be 0.
	InvariantViolations int            `json:"invariant_violations"`
	BookingsByStatus    map[string]int `json:"bookings_by_status"`
}

func (o *PeakOptions) defaults() error {
	if o.Target == "" {
		o.Target = "http://127.0.0.1:8080"
	}
	if err := CheckLoopback(o.Target); err != nil {
		return err
	}
	for _, m := range o.metricsURLs() {
		if err := CheckLoopback(m); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	for _, g := range o.Gateways {
		if err := CheckLoopback(g); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	if o.City.Name == "" {
		o.City = Bengaluru
	}
	if o.Tick <= 0 {
		o.Tick = 2 * time.Second
	}
	if o.TripTime <= 0 {
		o.TripTime = 20 * time.Second
	}
	if o.Drain <= 0 {
		o.Drain = 30 * time.Second
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "load"
	}
	if o.ChildArgs == nil {
		o.ChildArgs = []string{"peak", "-child"}
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	var errs []error
	switch {
	case len(o.Secret) < 32:
		errs = append(errs, errors.New("the JWT secret must be at least 32 bytes (DISPATCH_JWT_SECRET)"))
	case o.Drivers < 0 || o.Drivers > MaxDrivers:
		errs = append(errs, fmt.Errorf("drivers: want 0 to %d", MaxDrivers))
	case o.Dispatchers < 0 || o.Dispatchers > MaxDispatchers:
		errs = append(errs, fmt.Errorf("dispatchers: want 0 to %d", MaxDispatchers))
	case o.Duration <= 0 || o.Duration > MaxDuration:
		errs = append(errs, fmt.Errorf("duration: want more than 0 and at most %s", MaxDuration))
	case o.Drain > MaxDrain:
		errs = append(errs, fmt.Errorf("drain: at most %s", MaxDrain))
	case o.Warmup < 0 || o.Warmup > MaxDuration:
		errs = append(errs, fmt.Errorf("warm-up: 0 to %s", MaxDuration))
	case o.Demand.Peak() > MaxRate:
		errs = append(errs, fmt.Errorf("demand peaks at %.0f bookings/s: at most %d", o.Demand.Peak(), MaxRate))
	case o.AcceptP <= 0 || o.DeclineP < 0 || o.AcceptP+o.DeclineP > 1:
		errs = append(errs, errors.New("accept and decline: probabilities with accept > 0 and accept + decline <= 1"))
	case o.ScheduledP < 0 || o.ScheduledP > 1 || o.ReconnectP < 0 || o.ReconnectP > 60:
		errs = append(errs, errors.New("scheduled: a fraction 0..1; reconnect: 0 to 60 a minute"))
	case o.Tick < 200*time.Millisecond:
		errs = append(errs, errors.New("tick: at least 200ms (the server takes 5 points a second)"))
	case o.Procs < 0 || o.Procs > 64 || o.Sources < 0 || o.Sources > 250:
		errs = append(errs, errors.New("procs: 0 to 64; sources: 0 to 250"))
	}
	return errors.Join(errs...)
}

func (o *PeakOptions) metricsURLs() []string {
	if o.MetricsURL == "" {
		return nil
	}
	return strings.Split(o.MetricsURL, ",")
}

// plan decides the processes and source addresses for the sockets.
func (o *PeakOptions) plan() (procs int, sources []string) {
	sockets := o.Drivers + o.Dispatchers
	procs = o.Procs
	if procs == 0 && sockets > SocketsPerProc {
		procs = (o.Drivers + SocketsPerProc - 1) / SocketsPerProc
	}
	n := o.Sources
	if n == 0 && sockets > SocketsPerSource {
		n = (sockets + SocketsPerSource - 1) / SocketsPerSource
	}
	for i := 0; i < n; i++ {
		sources = append(sources, fmt.Sprintf("127.0.0.%d", i+2))
	}
	return procs, sources
}

// Peak runs the peak scenario: drivers, customers to the demand profile and dispatchers for
// Duration; then the drain (demand stops, trips under way finish, whatever is still open is
// cancelled by a dispatcher, answers settle); then the report's figures. It returns early, with
// what it has, when ctx ends.
func Peak(ctx context.Context, o PeakOptions) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	u, _ := url.Parse(o.Target)
	wsURL := "ws://" + u.Host + "/v1/ws"
	rest := ""
	sockets := []string{wsURL}
	if len(o.Gateways) > 0 {
		rest, sockets = o.Target, nil
		for _, g := range o.Gateways {
			gu, _ := url.Parse(g)
			sockets = append(sockets, "ws://"+gu.Host+"/v1/ws")
		}
		wsURL = sockets[0]
	}
	procs, sources := o.plan()
	log := o.Log

	var before map[string]Metrics
	if o.MetricsURL != "" {
		var err error
		if before, err = ScrapeEach(ctx, o.metricsURLs()); err != nil {
			return nil, err
		}
	}
	loadBefore := loadAvg()
	start := time.Now()
	series := NewSeries(start)
	fopts := FleetOptions{URL: wsURL, REST: rest, Secret: o.Secret, Tick: o.Tick, Demand: o.Demand, ScheduledP: o.ScheduledP,
		AcceptP: o.AcceptP, IgnoreP: 1 - o.AcceptP - o.DeclineP, ReconnectP: o.ReconnectP, Approach: o.Approach,
		TripTime: o.TripTime, City: o.City, Seed: o.Seed, IDPrefix: o.IDPrefix, LocalAddrs: sources, Series: series,
		Registered: o.Registered}
	if fopts.IgnoreP < 1e-9 {
		fopts.IgnoreP = 0
	}
	if procs == 0 {
		fopts.Drivers = o.Drivers
	}
	fleet := NewFleet(fopts, log.With().Str("component", "fleet").Logger())
	disp := NewDispatchers(DispatcherOptions{URL: wsURL, Secret: o.Secret, Areas: o.City.Districts(o.Dispatchers),
		Series: series, IDPrefix: o.IDPrefix}, log.With().Str("component", "dispatchers").Logger())

	// Children, with an OTP service for their drivers.
	var children []*child
	if procs > 0 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("otp service: %w", err)
		}
		otpSrv := &http.Server{Handler: otpHandler(fleet.OTP), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = otpSrv.Serve(ln) }()
		defer otpSrv.Close()
		exe := o.Exe
		if exe == "" {
			if exe, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("find this binary to start children: %w", err)
			}
		}
		per := (o.Drivers + procs - 1) / procs
		for first := 0; first < o.Drivers; first += per {
			cfg := childConfig{URL: sockets[len(children)%len(sockets)], REST: rest, Secret: o.Secret, FirstDriver: first, Drivers: min(per, o.Drivers-first), Registered: o.Registered,
				Tick: o.Tick, AcceptP: fopts.AcceptP, IgnoreP: fopts.IgnoreP, ReconnectP: o.ReconnectP, Approach: o.Approach,
				TripTime: o.TripTime, City: o.City, Seed: o.Seed, IDPrefix: o.IDPrefix, LocalAddrs: sources,
				OTPURL: "http://" + ln.Addr().String() + "/otp", Start: start}
			c, err := startChild(exe, o.ChildArgs, cfg, os.Stderr)
			if err != nil {
				for _, c := range children {
					c.kill()
				}
				return nil, err
			}
			children = append(children, c)
		}
		log.Info().Int("children", len(children)).Int("drivers_each", per).Msg("driver sockets spread over child processes")
	}

	live := func() (t Totals, lastOffer time.Time) {
		t = fleet.Counts.Totals()
		lastOffer = fleet.LastOffer()
		for _, c := range children {
			p := c.last()
			t.Add(p.Totals)
			if p.LastOffer > 0 && time.UnixMilli(p.LastOffer).After(lastOffer) {
				lastOffer = time.UnixMilli(p.LastOffer)
			}
		}
		return t, lastOffer
	}

	driveCtx, stopDriving := context.WithCancel(context.WithoutCancel(ctx))
	defer stopDriving()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); fleet.RunDrivers(driveCtx) }() // URL is Target's or a gateway's: checked by defaults
	go func() { defer wg.Done(); _ = disp.Run(driveCtx) }()

	bar := newProgress(o.Progress, o.TTY, o.Duration, series)
	phase := func(p string) { bar.phase(p) }
	barCtx, stopBar := context.WithCancel(context.Background())
	barDone := make(chan struct{})
	go func() {
		defer close(barDone)
		bar.run(barCtx, func() (Totals, int64) {
			t, _ := live()
			return t, disp.Counts.Connected.Load()
		})
	}()

	res := &Result{Procs: max(procs, 1), Sources: sources, loadBefore: loadBefore}
	if o.Warmup > 0 {
		phase("warm-up")
		if n, ok := warmUp(ctx, o, live); !ok {
			log.Warn().Int64("arrived", n).Int("drivers", o.Drivers).Float64("warmup_s", o.Warmup.Seconds()).
				Msg("the warm-up ended before every driver was connected; the demand starts anyway")
		}
	}
	demandStart := time.Now()
	wg.Add(1)
	go func() { defer wg.Done(); fleet.RunCustomers(driveCtx) }()
	phase("run")
	interrupted := !sleep(ctx, o.Duration)
	runEnd := time.Now()

	settled := false
	if !interrupted {
		phase("drain")
		fleet.Drain()
		for _, c := range children {
			c.say("drain")
		}
		var err error
		settled, err = settle(ctx, o, fleet.rest, live, phase)
		if err != nil {
			log.Warn().Err(err).Msg("drain")
		}
		interrupted = ctx.Err() != nil
	}
	phase("stop")
	stopDriving()
	wg.Wait()
	for _, c := range children {
		r, err := c.finish(30 * time.Second)
		if err != nil {
			log.Error().Err(err).Msg("child")
			res.ChildErrors++
			continue
		}
		series.Merge(r.Series)
		res.childTotals.Add(r.Totals)
	}
	stopBar()
	<-barDone
	end := time.Now()

	res.Totals = fleet.Counts.Totals()
	res.Totals.Add(res.childTotals)
	res.Dispatchers = DispatcherTotals{Sockets: o.Dispatchers, Snapshots: disp.Counts.Snapshots.Load(),
		Frames: disp.Counts.Frames.Load(), DriverUpdates: disp.Counts.Drivers.Load(),
		BookingUpdates: disp.Counts.Bookings.Load(), CellFrames: disp.Counts.Cells.Load(), Errors: disp.Counts.Errors.Load(),
		Outside: disp.Counts.Outside.Load()}
	res.Dispatchers.LatencyP50MS, res.Dispatchers.LatencyP99MS, res.Dispatchers.LatencyN = disp.Counts.ViewLatency()
	res.Settled, res.Interrupted = settled, interrupted
	res.StartedAt, res.DemandStartedAt = start, demandStart
	if o.Warmup > 0 {
		res.WarmupSeconds = demandStart.Sub(start).Seconds()
	}
	res.RunSeconds, res.DrainSeconds = runEnd.Sub(demandStart).Seconds(), end.Sub(runEnd).Seconds()

	report := context.WithoutCancel(ctx)
	if o.MetricsURL != "" {
		after, err := ScrapeEach(report, o.metricsURLs())
		if err != nil {
			// A process killed during the run (a dispatcher, on purpose) is left out.
			log.Warn().Err(err).Msg("scrape after the run")
			res.MetricsMissing = len(o.metricsURLs()) - len(after)
		}
		if len(after) > 0 {
			res.Server = serverFigures(Gained(before, after), res.Totals)
		}
	}
	if o.Check != nil {
		chk, err := o.Check(report)
		if err != nil {
			res.CheckError = err.Error()
			log.Error().Err(err).Msg("MySQL check")
		} else {
			res.MySQL = chk
		}
	}
	res.fill(o, series)
	return res, nil
}

// warmUp waits, at most o.Warmup, until every driver has registered and opened its first
// socket, then two ticks more, so that the demand and the figures over it start with the whole fleet there (drivers
// then come and go at the reconnect rate, as during the run). It returns how many had arrived
// and whether that was all of them.
func warmUp(ctx context.Context, o PeakOptions, live func() (Totals, time.Time)) (int64, bool) {
	deadline := time.Now().Add(o.Warmup)
	for {
		t, _ := live()
		if t.Arrived >= int64(o.Drivers) {
			// Two more ticks: the server answers the last arrivals' hello and status, and every
			// driver has sent a point, before the demand and its figures start.
			sleep(ctx, 2*o.Tick)
			return t.Arrived, true
		}
		if time.Now().After(deadline) || !sleep(ctx, 200*time.Millisecond) {
			return t.Arrived, false
		}
	}
}

// openStatuses are every status a booking can leave; terminalOrder cancels the waiting first.
var openStatuses = []string{"searching", "scheduled", "assigned", "arrived", "in_progress"}

// settle is the end of a run: the demand has stopped; bookings not yet matched are cancelled,
// trips under way get up to o.Drain to finish, then whatever is still open is cancelled; last,
// it waits until every driver message is answered and no offer has come for 2 s (at most 20 s).
// settled reports that all of that happened.
func settle(ctx context.Context, o PeakOptions, rest *client, live func() (Totals, time.Time), phase func(string)) (bool, error) {
	// Several dispatchers share the cancelling, as a control room would (each within the
	// server's per-user request budget).
	const workers = 16
	dispatcher := func(w int) string { return fmt.Sprintf("%s-dsp-drain-%d", o.IDPrefix, w) }
	lastCancel := time.Now()
	cancelAll := func(statuses ...string) (int, error) {
		total := 0
		for round := 0; round < 50 && ctx.Err() == nil; round++ {
			var ids []string
			for _, st := range statuses {
				var page struct {
					Bookings []bookingView `json:"bookings"`
				}
				if err := rest.do(ctx, "GET", "/v1/bookings?limit=500&status="+st, "dispatcher", dispatcher(0), nil, nil, &page); err != nil {
					return total, fmt.Errorf("list %s bookings: %w", st, err)
				}
				for _, b := range page.Bookings {
					ids = append(ids, b.ID)
				}
			}
			if len(ids) == 0 {
				return total, nil
			}
			var wg sync.WaitGroup
			work := make(chan string)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for id := range work {
						_ = rest.do(ctx, "POST", "/v1/bookings/"+url.PathEscape(id)+"/cancel", "dispatcher", dispatcher(w),
							nil, map[string]string{"reason": "load test over"}, nil)
					}
				}()
			}
			for _, id := range ids {
				work <- id
			}
			close(work)
			wg.Wait()
			total += len(ids)
			lastCancel = time.Now()
		}
		return total, ctx.Err()
	}
	// Reconnects have stopped; an offer closed while its driver is between sockets would never
	// reach it, so the cancelling waits (a little) for every driver to be back.
	back := time.Now().Add(3*o.Tick + 5*time.Second)
	for time.Now().Before(back) {
		if t, _ := live(); t.Connected >= int64(o.Drivers) {
			break
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return false, ctx.Err()
		}
	}
	if _, err := cancelAll("searching", "scheduled"); err != nil {
		return false, err
	}
	phase("finish trips")
	deadline := time.Now().Add(o.Drain)
	for time.Now().Before(deadline) {
		open := 0
		for _, st := range []string{"assigned", "arrived", "in_progress"} {
			var page struct {
				Bookings []bookingView `json:"bookings"`
			}
			if err := rest.do(ctx, "GET", "/v1/bookings?limit=1&status="+st, "dispatcher", dispatcher(0), nil, nil, &page); err != nil {
				return false, err
			}
			open += len(page.Bookings)
		}
		if open == 0 {
			break
		}
		if !sleep(ctx, 500*time.Millisecond) {
			return false, ctx.Err()
		}
	}
	phase("cancel rest")
	if _, err := cancelAll(openStatuses...); err != nil {
		return false, err
	}
	phase("settle")
	const quiet = 2 * time.Second
	limit := time.Now().Add(20 * time.Second)
	for time.Now().Before(limit) {
		t, lastOffer := live()
		if t.InFlight == 0 && time.Since(lastOffer) >= quiet && time.Since(lastCancel) >= quiet {
			return true, nil
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return false, ctx.Err()
		}
	}
	return false, errors.New("answers still outstanding 20 s after the drain")
}
