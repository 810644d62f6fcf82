package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// FanoutOptions configure the fan-out measurement: drivers moving at one point a second,
// dispatchers each watching a tenth of the city, customers tracking their assigned drivers.
type FanoutOptions struct {
	// URL is the gateways' socket URLs, comma-separated (ws://127.0.0.1:PORT/v1/ws): driver and
	// customer i use the (i mod n)th, the dispatchers the first.
	URL string
	// REST is the API's base URL, where customers book (default: the first URL's host).
	REST       string
	MetricsURL string // the servers' /metrics, comma-separated (optional: coalescing figures, summed)
	Secret     []byte
	City       City
	Drivers    int
	// Dispatchers each watch one of ten tiles of the city (a 2 x 5 grid), in turn.
	Dispatchers int
	// Customers book near a driver each, then watch their booking and its driver.
	Customers int
	Warmup    time.Duration // sockets open, bookings assigned, before the measurement
	Duration  time.Duration // measured
	// PIDs are the server's processes: their CPU time over the measurement comes from /proc.
	PIDs []int
	// Procs is how many child processes hold the drivers' sockets (0: this process holds them
	// all; one process may hold 20,000 open files here).
	Procs    int
	IDPrefix string
	Seed     int64
}

func (o FanoutOptions) urls() []string { return strings.Split(o.URL, ",") }

// fanDrv is one simulated driver: where it starts, and its phase in the second.
type fanDrv struct {
	id       string
	lat, lng float64
	phase    time.Duration
}

// fanDrivers places the run's drivers, the same for the parent and its children (the seed).
func fanDrivers(o FanoutOptions) []*fanDrv {
	r := mrand.New(mrand.NewSource(o.Seed))
	ds := make([]*fanDrv, o.Drivers)
	for i := range ds {
		ds[i] = &fanDrv{id: fmt.Sprintf("%s-drv-%d", o.IDPrefix, i), lat: o.City.MinLat + r.Float64()*(o.City.MaxLat-o.City.MinLat),
			lng: o.City.MinLng + r.Float64()*(o.City.MaxLng-o.City.MinLng), phase: time.Duration(r.Int63n(int64(time.Second)))}
	}
	return ds
}

// runFanDrivers holds drivers [first, first+n) until ctx ends, connecting gently.
func runFanDrivers(ctx context.Context, o FanoutOptions, ds []*fanDrv, first, n int, online, sent *atomic.Int64, log zerolog.Logger) {
	var wg sync.WaitGroup
	dialer := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	urls := o.urls()
	// Only a registered, verified driver may go online: each is registered first, as the
	// fleet's are (an admin's POST and PATCH /v1/drivers).
	f := &Fleet{opts: FleetOptions{City: o.City}, rest: newClient(o.REST, o.Secret, 32, new(atomic.Int64))}
	for i := first; i < first+n; i++ {
		d := ds[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Thousands register at once: an answer that does not come in time is asked again.
			var err error
			for try := 0; try < 5 && ctx.Err() == nil; try++ {
				if err = f.register(ctx, &driverSim{i: i, id: d.id}); err == nil {
					break
				}
			}
			if err != nil {
				log.Warn().Err(err).Str("driver", d.id).Msg("register driver")
				return
			}
			if err := fanDriver(ctx, o, dialer, urls[i%len(urls)], d.id, d.lat, d.lng, d.phase, int64(i), online, sent); err != nil && ctx.Err() == nil {
				log.Debug().Err(err).Str("driver", d.id).Msg("driver socket ended")
			}
		}()
		if (i-first)%200 == 199 {
			sleep(ctx, 100*time.Millisecond) // a gentle connect rate
		}
	}
	wg.Wait()
}

// fanChildLine is what a child holding drivers reports, four times a second.
type fanChildLine struct {
	Online int64 `json:"online"`
	Sent   int64 `json:"sent"`
}

type fanChildConfig struct {
	Options      FanoutOptions `json:"options"`
	First, Count int
}

// RunFanoutChild is the child side of a fan-out run with -procs: it holds a slice of the
// drivers (configuration on stdin, a line of JSON) until stdin ends.
func RunFanoutChild(ctx context.Context, stdin io.Reader, stdout io.Writer, log zerolog.Logger) error {
	in := bufio.NewReader(stdin)
	var cfg fanChildConfig
	if err := readChildConfig(in, &cfg); err != nil {
		return err
	}
	for _, u := range cfg.Options.urls() {
		if err := CheckLoopback(u); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var online, sent atomic.Int64
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			b, _ := json.Marshal(fanChildLine{Online: online.Load(), Sent: sent.Load()})
			_, _ = stdout.Write(append(b, '\n'))
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	go func() {
		_, _ = io.Copy(io.Discard, in) // until the parent closes stdin
		cancel()
	}()
	runFanDrivers(ctx, cfg.Options, fanDrivers(cfg.Options), cfg.First, cfg.Count, &online, &sent, log)
	return nil
}

// fanChildren starts procs children holding the drivers; online and sent sum their reports.
func fanChildren(ctx context.Context, o FanoutOptions) (online, sent func() int64, stop func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	type kid struct {
		*spawned
		mu   sync.Mutex
		last fanChildLine
	}
	var kids []*kid
	stop = func() {
		for _, k := range kids {
			_ = k.end(20 * time.Second)
		}
	}
	per := (o.Drivers + o.Procs - 1) / o.Procs
	for first := 0; first < o.Drivers; first += per {
		k := &kid{}
		sp, err := spawn(exe, []string{"fanout", "-child"}, fanChildConfig{Options: o, First: first, Count: min(per, o.Drivers-first)}, os.Stderr,
			func(line []byte) {
				var l fanChildLine
				if json.Unmarshal(line, &l) == nil {
					k.mu.Lock()
					k.last = l
					k.mu.Unlock()
				}
			})
		if err != nil {
			stop()
			return nil, nil, nil, err
		}
		k.spawned = sp
		kids = append(kids, k)
	}
	sum := func(f func(fanChildLine) int64) func() int64 {
		return func() int64 {
			var n int64
			for _, k := range kids {
				k.mu.Lock()
				n += f(k.last)
				k.mu.Unlock()
			}
			return n
		}
	}
	return sum(func(l fanChildLine) int64 { return l.Online }), sum(func(l fanChildLine) int64 { return l.Sent }), stop, nil
}

// FanoutReport is what a fan-out run measured.
type FanoutReport struct {
	Options             FanoutOptions
	Seconds             float64
	DriversOnline       int64
	PointsSent          int64
	DispatcherUpdates   int64
	DispatcherP50       float64 // ms, from a point's ts to its arrival on a dispatcher's socket
	DispatcherP99       float64
	Outside             int64 // dispatcher updates about a driver outside the area (must be 0)
	CustomersTracking   int64
	CustomerUpdates     int64
	CustomerP50         float64
	CustomerP99         float64
	CPUSeconds          float64 // the server's, over the measurement (-1: not measured)
	ClientCPUSeconds    float64 // this process's (dispatchers, customers, drivers without -procs)
	ViewSent            float64 // dispatch_view_updates_total over the measurement
	ViewCoalesced       float64 // dispatch_view_updates_coalesced_total
	CustomerCoalesced   float64 // dispatch_frames_dropped_total{kind="stale_location"}
	LoadAverage         string
	DispatcherFramesAll int64
}

// Tenths splits the city's box into a 2 x 5 grid: a dispatcher's share of the map.
func (c City) Tenths() []Area {
	var out []Area
	dLat, dLng := (c.MaxLat-c.MinLat)/2, (c.MaxLng-c.MinLng)/5
	for i := range 2 {
		for j := range 5 {
			lat, lng := c.MinLat+float64(i)*dLat, c.MinLng+float64(j)*dLng
			out = append(out, Area{Name: fmt.Sprintf("%s-%d", c.Name, i*5+j), MinLat: lat, MinLng: lng, MaxLat: lat + dLat, MaxLng: lng + dLng})
		}
	}
	return out
}

// Fanout runs the measurement and reports it. Every socket is its own; the drivers send their
// points with their own clock's ts, so send-to-receive is measured on this machine's clock.
func Fanout(ctx context.Context, o FanoutOptions, log zerolog.Logger) (FanoutReport, error) {
	rep := FanoutReport{Options: o, CPUSeconds: -1}
	for _, u := range append(o.urls(), o.REST) {
		if err := CheckLoopback(u); err != nil {
			return rep, err
		}
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "fan"
	}
	if o.Customers > o.Drivers {
		return rep, errors.New("fanout: more customers than drivers")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var measuring atomic.Bool
	var custTracking, custUpdates atomic.Int64
	var custLat latencySample

	// Drivers: online, a point a second each (phases spread), any offer accepted; in children
	// past one process's open files.
	ds := fanDrivers(o)
	var wg sync.WaitGroup
	var onlineN, sentN func() int64
	if o.Procs > 0 {
		on, se, stop, err := fanChildren(ctx, o)
		if err != nil {
			return rep, err
		}
		defer stop()
		onlineN, sentN = on, se
	} else {
		var online, sent atomic.Int64
		onlineN, sentN = online.Load, sent.Load
		wg.Add(1)
		go func() { defer wg.Done(); runFanDrivers(ctx, o, ds, 0, len(ds), &online, &sent, log) }()
	}
	dialer := &websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}

	// Dispatchers, through the peak scenario's simulated dispatchers.
	areas := o.City.Tenths()
	dsp := make([]Area, o.Dispatchers)
	for i := range dsp {
		dsp[i] = areas[i%len(areas)]
	}
	disp := NewDispatchers(DispatcherOptions{URL: o.urls()[0], Secret: o.Secret, Areas: dsp, IDPrefix: o.IDPrefix}, log)
	wg.Add(1)
	go func() { defer wg.Done(); _ = disp.Run(ctx) }()

	// Customers: each books next to a driver once the drivers are up, then tracks the booking.
	rest := newClient(o.REST, o.Secret, 16, new(atomic.Int64))
	sleep(ctx, min(o.Warmup/2, 5*time.Second))
	for i := range o.Customers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := ds[i*len(ds)/max(1, o.Customers)]
			if err := fanCustomer(ctx, o, rest, dialer, o.urls()[i%len(o.urls())], fmt.Sprintf("%s-cust-%d", o.IDPrefix, i), d.lat+0.0005, d.lng, &measuring, &custTracking, &custUpdates, &custLat); err != nil && ctx.Err() == nil {
				log.Debug().Err(err).Int("customer", i).Msg("customer ended")
			}
		}()
		sleep(ctx, 20*time.Millisecond)
	}
	if !sleep(ctx, o.Warmup-min(o.Warmup/2, 5*time.Second)) {
		return rep, ctx.Err()
	}

	// The measurement.
	var before Metrics
	if o.MetricsURL != "" {
		before, _ = scrapeSum(ctx, o.MetricsURL)
	}
	cpu0, cpuErr := procsCPU(o.PIDs)
	own0, _ := procCPU(os.Getpid())
	updates0, frames0, sent0, cust0 := disp.Counts.Drivers.Load(), disp.Counts.Frames.Load(), sentN(), custUpdates.Load()
	start := time.Now()
	measuring.Store(true)
	disp.Counts.latency.reset()
	if !sleep(ctx, o.Duration) {
		return rep, ctx.Err()
	}
	measuring.Store(false)
	rep.Seconds = time.Since(start).Seconds()
	cpu1, cpuErr1 := procsCPU(o.PIDs)
	own1, _ := procCPU(os.Getpid())
	rep.ClientCPUSeconds = own1 - own0
	if cpuErr == nil && cpuErr1 == nil && len(o.PIDs) > 0 {
		rep.CPUSeconds = cpu1 - cpu0
	}
	rep.DispatcherUpdates = disp.Counts.Drivers.Load() - updates0
	rep.DispatcherFramesAll = disp.Counts.Frames.Load() - frames0
	rep.PointsSent = sentN() - sent0
	rep.CustomerUpdates = custUpdates.Load() - cust0
	rep.DriversOnline = onlineN()
	rep.CustomersTracking = custTracking.Load()
	rep.Outside = disp.Counts.Outside.Load()
	rep.DispatcherP50, rep.DispatcherP99, _ = disp.Counts.ViewLatency()
	rep.CustomerP50, rep.CustomerP99, _ = custLat.quantiles()
	if o.MetricsURL != "" {
		if after, err := scrapeSum(ctx, o.MetricsURL); err == nil {
			d := after.Minus(before)
			rep.ViewSent = d.Sums["dispatch_view_updates_total"]
			rep.ViewCoalesced = d.Sums["dispatch_view_updates_coalesced_total"]
			rep.CustomerCoalesced = d.Samples[`dispatch_frames_dropped_total{kind="stale_location"}`]
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		rep.LoadAverage = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	cancel()
	wg.Wait()
	return rep, nil
}

// fanDial opens a socket as the holder of token; the socket closes when ctx ends (unblocking
// its reader). The caller calls hangUp when done with it.
func fanDial(ctx context.Context, dialer *websocket.Dialer, url, token string) (ws *websocket.Conn, hangUp func(), err error) {
	ws, _, err = dialer.DialContext(ctx, url, http.Header{"Authorization": {"Bearer " + token}})
	if err != nil {
		return nil, nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = ws.Close() })
	return ws, func() { stop(); _ = ws.Close() }, nil
}

// fanDriver holds one driver's socket: online, then a point a second at its phase, accepting
// any offer, until ctx ends.
func fanDriver(ctx context.Context, o FanoutOptions, dialer *websocket.Dialer, url, id string, lat, lng float64, phase time.Duration, seed int64, online, sent *atomic.Int64) error {
	tok, err := signToken(o.Secret, "driver", id)
	if err != nil {
		return err
	}
	ws, hangUp, err := fanDial(ctx, dialer, url, tok)
	if err != nil {
		return err
	}
	defer hangUp()
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return ws.WriteMessage(websocket.TextMessage, b)
	}
	readErr := make(chan error, 1)
	go func() {
		seq := int64(10)
		for {
			var f frame
			if err := ws.ReadJSON(&f); err != nil {
				readErr <- err
				return
			}
			if f.Type == "offer" {
				var of struct {
					OfferID string `json:"offer_id"`
				}
				_ = json.Unmarshal(f.Data, &of)
				seq++
				b, _ := json.Marshal(map[string]any{"type": "offer.accept", "seq": seq, "data": map[string]string{"offer_id": of.OfferID}})
				_ = write(b)
			}
		}
	}()
	if err := write([]byte(`{"type":"status","seq":1,"data":{"state":"online"}}`)); err != nil {
		return err
	}
	online.Add(1)
	defer online.Add(-1)
	r := mrand.New(mrand.NewSource(seed))
	heading := r.Float64() * 360
	if !sleep(ctx, phase) {
		return nil
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		// About 8 m/s, turning a little each second.
		heading = math.Mod(heading+r.NormFloat64()*20+360, 360)
		rad := heading * math.Pi / 180
		lat += 8 * math.Cos(rad) / 111000
		lng += 8 * math.Sin(rad) / (111000 * math.Cos(lat*math.Pi/180))
		lat = min(max(lat, o.City.MinLat), o.City.MaxLat)
		lng = min(max(lng, o.City.MinLng), o.City.MaxLng)
		b := strconv.AppendFloat([]byte(`{"type":"location","data":{"lat":`), lat, 'f', 6, 64)
		b = strconv.AppendFloat(append(b, `,"lng":`...), lng, 'f', 6, 64)
		b = strconv.AppendFloat(append(b, `,"acc":8,"heading":`...), heading, 'f', 0, 64)
		b = strconv.AppendInt(append(b, `,"speed":8,"ts":`...), time.Now().UnixMilli(), 10)
		if err := write(append(b, "}}"...)); err != nil {
			return err
		}
		sent.Add(1)
		select {
		case <-ctx.Done():
			return nil
		case err := <-readErr:
			return err
		case <-t.C:
		}
	}
}

// fanCustomer books at a point, watches the booking and times every driver.location it gets
// while measuring.
func fanCustomer(ctx context.Context, o FanoutOptions, rest *client, dialer *websocket.Dialer, url, id string, lat, lng float64,
	measuring *atomic.Bool, tracking, updates *atomic.Int64, lat99 *latencySample) error {
	var b bookingView
	body := map[string]any{"pickup": map[string]float64{"lat": lat, "lng": lng}, "hours": 2, "car": map[string]string{"transmission": "manual"}}
	if err := rest.do(ctx, http.MethodPost, "/v1/bookings", "customer", id, map[string]string{"Idempotency-Key": id + "-" + randomKey()}, body, &b); err != nil {
		return err
	}
	ws, hangUp, err := fanDial(ctx, dialer, url, rest.token("customer", id))
	if err != nil {
		return err
	}
	defer hangUp()
	data, _ := json.Marshal(map[string]string{"booking_id": b.ID})
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteJSON(frame{Type: "watch", Seq: 1, Data: data}); err != nil {
		return err
	}
	counted := false
	for {
		var f frame
		if err := ws.ReadJSON(&f); err != nil {
			return err
		}
		if f.Type != "driver.location" {
			continue
		}
		now := time.Now()
		if !counted {
			counted = true
			tracking.Add(1)
			defer tracking.Add(-1)
		}
		if !measuring.Load() {
			continue
		}
		var loc struct {
			TS int64 `json:"ts"`
		}
		if json.Unmarshal(f.Data, &loc) == nil && loc.TS > 0 {
			updates.Add(1)
			lat99.add(float64(now.Sub(time.UnixMilli(loc.TS)).Microseconds()) / 1000)
		}
	}
}

// procCPU is a process's user and system CPU seconds so far (Linux /proc).
func procCPU(pid int) (float64, error) {
	if pid <= 0 {
		return 0, errors.New("no pid")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("unreadable /proc stat times")
	}
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

// procsCPU sums procCPU over pids.
func procsCPU(pids []int) (float64, error) {
	var sum float64
	for _, p := range pids {
		v, err := procCPU(p)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// scrapeSum scrapes the comma-separated urls and adds their samples.
func scrapeSum(ctx context.Context, urls string) (Metrics, error) {
	var sum Metrics
	for i, u := range strings.Split(urls, ",") {
		m, err := Scrape(ctx, u)
		if err != nil {
			return Metrics{}, err
		}
		if i == 0 {
			sum = m
		} else {
			sum = sum.Plus(m)
		}
	}
	return sum, nil
}

// Markdown is the report as BENCHMARKS.md takes it.
func (r FanoutReport) Markdown() string {
	var b strings.Builder
	o := r.Options
	fmt.Fprintf(&b, "fan-out: %d drivers at 1 point/s (%d online), %d dispatchers each on a tenth of %s, %d customers tracking (%d receiving); %.0f s measured after %s warm-up; load average %s\n\n",
		o.Drivers, r.DriversOnline, o.Dispatchers, o.City.Name, o.Customers, r.CustomersTracking, r.Seconds, o.Warmup, r.LoadAverage)
	b.WriteString("| viewer | updates received | per second | send-to-receive p50 | p99 |\n|---|---:|---:|---:|---:|\n")
	fmt.Fprintf(&b, "| dispatchers | %d | %.0f | %.0f ms | %.0f ms |\n", r.DispatcherUpdates, float64(r.DispatcherUpdates)/r.Seconds, r.DispatcherP50, r.DispatcherP99)
	fmt.Fprintf(&b, "| customers | %d | %.0f | %.0f ms | %.0f ms |\n\n", r.CustomerUpdates, float64(r.CustomerUpdates)/r.Seconds, r.CustomerP50, r.CustomerP99)
	deliveries := r.DispatcherUpdates + r.CustomerUpdates
	fmt.Fprintf(&b, "- points sent: %d (%.0f/s); deliveries: %d (%.0f/s); dispatcher frames: %d (%.0f/s)\n", r.PointsSent, float64(r.PointsSent)/r.Seconds,
		deliveries, float64(deliveries)/r.Seconds, r.DispatcherFramesAll, float64(r.DispatcherFramesAll)/r.Seconds)
	fmt.Fprintf(&b, "- updates about a driver outside a dispatcher's area: %d\n", r.Outside)
	if r.CPUSeconds >= 0 && deliveries > 0 {
		fmt.Fprintf(&b, "- CPU of the processes given (-pid: the servers, and Redis where given) over the measurement: %.1f s (%.0f%% of a core); %.0f µs per delivered update, everything they did counted (ingestion, indexing, matching included)\n",
			r.CPUSeconds, 100*r.CPUSeconds/r.Seconds, 1e6*r.CPUSeconds/float64(deliveries))
	}
	fmt.Fprintf(&b, "- the load generator's own CPU over the measurement (its children's not counted): %.1f s (%.0f%% of a core)\n", r.ClientCPUSeconds, 100*r.ClientCPUSeconds/r.Seconds)
	if r.ViewSent > 0 || r.ViewCoalesced > 0 {
		fmt.Fprintf(&b, "- coalescing: %.0f dispatcher updates replaced by a newer point before leaving (%.1f%% of %.0f), %.0f customer locations likewise\n",
			r.ViewCoalesced, 100*r.ViewCoalesced/math.Max(1, r.ViewSent+r.ViewCoalesced), r.ViewSent+r.ViewCoalesced, r.CustomerCoalesced)
	}
	return b.String()
}

// FanoutMain is `loadtest fanout`.
func FanoutMain(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("fanout", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o FanoutOptions
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/v1/ws", "the gateways' socket URLs, comma-separated (loopback only)")
	fs.StringVar(&o.REST, "rest", "", "the API's base URL (default: the first gateway's host)")
	fs.StringVar(&o.MetricsURL, "metrics", "", "the servers' /metrics URLs, comma-separated, e.g. http://127.0.0.1:9090/metrics (optional)")
	secret := fs.String("secret", getenv("DISPATCH_JWT_SECRET"), "the server's JWT secret (default $DISPATCH_JWT_SECRET)")
	city := fs.String("city", "bengaluru", "city preset: bengaluru, delhi or mumbai")
	fs.IntVar(&o.Drivers, "drivers", 2000, "drivers, each sending a point a second")
	fs.IntVar(&o.Dispatchers, "dispatchers", 20, "dispatchers, each watching a tenth of the city")
	fs.IntVar(&o.Customers, "customers", 30, "customers tracking their assigned driver")
	fs.DurationVar(&o.Warmup, "warmup", 20*time.Second, "sockets, bookings and assignments before the measurement")
	fs.DurationVar(&o.Duration, "duration", 30*time.Second, "measured")
	pids := fs.String("pid", "", "the server's process ids, comma-separated, for their CPU time from /proc (optional)")
	fs.IntVar(&o.Procs, "procs", 0, "child processes holding the drivers' sockets (0: this one)")
	child := fs.Bool("child", false, "internal: hold a slice of the drivers for a parent run")
	fs.StringVar(&o.IDPrefix, "id-prefix", "fan", "user ids are PREFIX-drv-N, PREFIX-dsp-N, PREFIX-cust-N")
	fs.Int64Var(&o.Seed, "seed", 1, "random seed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *child {
		log := zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: "15:04:05"}).With().Timestamp().Logger().Level(zerolog.InfoLevel)
		return RunFanoutChild(ctx, os.Stdin, stdout, log)
	}
	c, ok := CityByName(*city)
	if !ok {
		return fmt.Errorf("unknown city %q", *city)
	}
	o.City = c
	o.Secret = []byte(*secret)
	if o.REST == "" {
		o.REST = baseOf(o.urls()[0])
	}
	for _, p := range strings.Split(*pids, ",") {
		if p = strings.TrimSpace(p); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil {
				return fmt.Errorf("-pid %q: %w", p, err)
			}
			o.PIDs = append(o.PIDs, n)
		}
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stdout, TimeFormat: "15:04:05"}).With().Timestamp().Logger().Level(zerolog.InfoLevel)
	rep, err := Fanout(ctx, o, log)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, rep.Markdown())
	if rep.Outside > 0 {
		return fmt.Errorf("%d updates about drivers outside a dispatcher's area", rep.Outside)
	}
	return nil
}
