package loadtest

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand"
	"net/http"
	"net/url"
	"os"
	"runtime/pprof"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// IngestOptions configure the location ingestion load (issue 3): many driver sockets sending
// `location` frames at a steady rate to a gateway on loopback, while probes time points from the
// socket write to visible in a nearby query, and a check after the load that every driver's
// stored position is the last point it sent. Probes and check read through the REST API as any
// client would (GET /v1/drivers/{id} as the driver, GET /v1/drivers/nearby as a dispatcher), so
// the server must serve it (DISPATCH_ROLES=gateway,api, or REST naming an API process of the
// same Redis) and should not rate-limit the probes' polling (DISPATCH_RATE_PER_USER=0, as
// loadtest/ingest.sh runs it).
type IngestOptions struct {
	// URL is the socket address, ws://127.0.0.1:PORT/v1/ws; only loopback is accepted.
	URL string
	// REST is the base URL of the REST API (default: URL's host); only loopback is accepted.
	REST   string
	Secret []byte
	// Drivers on their own sockets (default 8,000), each sending Rate points a second
	// (default 4; the server allows 5).
	Drivers int
	Rate    float64
	// Duration of the measured load (default 60 s), after a warm-up of Warmup (default 5 s).
	Duration time.Duration
	Warmup   time.Duration
	// MetricsURL, when set, is the server's /metrics (loopback): its counters and its
	// socket-to-indexed histogram are read before and after the load.
	MetricsURL string
	// Probes a second timed from socket write to visible in a nearby query (default 20). A probe
	// polls the API until then (at most every millisecond, for at most 5 s).
	Probes float64
	// LocalAddrs spread the sockets over these 127.0.0.x source addresses.
	LocalAddrs []string
	IDPrefix   string
	Seed       int64
}

// IngestReport is what an ingestion run measured.
type IngestReport struct {
	Drivers, Connected int
	Duration           time.Duration
	Sent               int64   // points written to sockets during the measured window
	SentPerSec         float64 // Sent / Duration
	MinSentPer5s       float64 // the slowest 5-second window, per second
	ErrorFrames        int64   // error frames the server answered (any rejected point)
	// Server counters over the measured window (from MetricsURL).
	Received, Indexed, Rejected float64
	// ServerCPU is the server process's CPU over the window; ServerRSS its resident memory at
	// the end, with every socket open.
	ServerCPU          time.Duration
	ServerRSS          int64
	IndexedPerSec      float64
	IndexP50, IndexP99 time.Duration // socket read to indexed, from the server's histogram (bucket upper bounds)
	// Probes: socket write to visible in a nearby query of the index.
	Probes, ProbesLate           int
	VisibleP50, VisibleP99, VMax time.Duration
	// The check after the load.
	Checked, Lost int
	LostExample   string
}

func (o *IngestOptions) defaults() {
	if o.Drivers <= 0 {
		o.Drivers = 8000
	}
	if o.Rate <= 0 {
		o.Rate = 4
	}
	if o.Duration <= 0 {
		o.Duration = 60 * time.Second
	}
	if o.Warmup <= 0 {
		o.Warmup = 5 * time.Second
	}
	if o.Probes <= 0 {
		o.Probes = 20
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "ing"
	}
	if o.REST == "" {
		o.REST = baseOf(strings.Split(o.URL, ",")[0])
	}
}

// ingestDriver is one simulated driver: its socket and the last point it sent.
type ingestDriver struct {
	id       string
	ws       *websocket.Conn
	lat, lng float64
	heading  float64
	lastTS   int64
	buf      []byte
	// deadlineSet is when the write deadline was last moved (sender goroutine only).
	deadlineSet time.Time
	probe       atomic.Bool // time the next point
	dead        atomic.Bool
}

type probePoint struct {
	d        *ingestDriver
	lat, lng float64
	ts       int64
	sent     time.Time
}

// Ingest runs the load and reports. It returns an error only when it could not run at all.
func Ingest(ctx context.Context, opts IngestOptions, log zerolog.Logger) (IngestReport, error) {
	opts.defaults()
	rep := IngestReport{Drivers: opts.Drivers, Duration: opts.Duration}
	for _, u := range append(append([]string{opts.REST}, strings.Split(opts.URL, ",")...), strings.Split(opts.MetricsURL, ",")...) {
		if u == "" {
			continue
		}
		if err := CheckLoopback(u); err != nil {
			return rep, err
		}
	}
	x := &ingestReader{c: newClient(opts.REST, opts.Secret, 64, new(atomic.Int64)), staff: opts.IDPrefix + "-probe"}
	if _, err := x.nearby(ctx, Bengaluru.Hotspots[0][0], Bengaluru.Hotspots[0][1]); err != nil {
		return rep, fmt.Errorf("the REST API at %s, which the probes read, does not answer GET /v1/drivers/nearby: %w "+
			"(a gateway serves it with DISPATCH_ROLES=gateway,api)", opts.REST, err)
	}

	r := mrand.New(mrand.NewSource(opts.Seed))
	ds := make([]*ingestDriver, opts.Drivers)
	for i := range ds {
		lat, lng := Bengaluru.Point(r, 0.6)
		ds[i] = &ingestDriver{id: fmt.Sprintf("%s-%d", opts.IDPrefix, i), lat: round6(lat), lng: round6(lng), heading: r.Float64() * 360}
	}

	// Connect everyone (a few at a time: each connect costs the server a few queries).
	var errorFrames atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	var connected atomic.Int64
	start := time.Now()
	for i, d := range ds {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int, d *ingestDriver) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := ingestConnect(ctx, opts, x.c, i, d, &errorFrames); err != nil {
				log.Debug().Err(err).Str("driver", d.id).Msg("connect")
				d.dead.Store(true)
				return
			}
			connected.Add(1)
		}(i, d)
	}
	wg.Wait()
	rep.Connected = int(connected.Load())
	log.Info().Int("connected", rep.Connected).Float64("took_ms", float64(time.Since(start).Microseconds())/1000).Msg("drivers connected")
	if rep.Connected == 0 {
		return rep, errors.New("no driver could connect")
	}
	defer func() {
		for _, d := range ds {
			if d.ws != nil {
				_ = d.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				d.ws.Close()
			}
		}
	}()

	// Senders: a few goroutines pace every driver's points; each driver sends one point every
	// 1/Rate seconds, its turn spread over the period.
	var sent atomic.Int64
	probes := make(chan probePoint, 1024)
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	const senders = 8
	var swg sync.WaitGroup
	for s := 0; s < senders; s++ {
		var mine []*ingestDriver
		for i := s; i < len(ds); i += senders {
			if !ds[i].dead.Load() {
				mine = append(mine, ds[i])
			}
		}
		swg.Add(1)
		go func(s int, mine []*ingestDriver) {
			defer swg.Done()
			ingestSend(loadCtx, mine, opts.Rate, int64(s), &sent, probes)
		}(s, mine)
	}

	// Probes.
	var pmu sync.Mutex
	var visible []time.Duration
	var late int
	var pwg sync.WaitGroup
	inflight := make(chan struct{}, 10)
	pwg.Add(2)
	go func() {
		defer pwg.Done()
		t := time.NewTicker(time.Duration(float64(time.Second) / opts.Probes))
		defer t.Stop()
		pr := mrand.New(mrand.NewSource(opts.Seed + 1))
		for {
			select {
			case <-loadCtx.Done():
				return
			case <-t.C:
				ds[pr.Intn(len(ds))].probe.Store(true)
			}
		}
	}()
	go func() {
		defer pwg.Done()
		var inner sync.WaitGroup
		defer inner.Wait()
		for {
			select {
			case <-loadCtx.Done():
				return
			case p := <-probes:
				select {
				case inflight <- struct{}{}:
				default:
					continue // enough probes polling already: polling must not become the load
				}
				inner.Add(1)
				go func() {
					defer inner.Done()
					defer func() { <-inflight }()
					d, ok := ingestProbe(ctx, x, p)
					pmu.Lock()
					if ok {
						visible = append(visible, d)
					} else {
						late++
					}
					pmu.Unlock()
				}()
			}
		}
	}()

	// Warm up, then measure.
	select {
	case <-ctx.Done():
		return rep, ctx.Err()
	case <-time.After(opts.Warmup):
	}
	pmu.Lock()
	visible, late = visible[:0], 0
	pmu.Unlock()
	before, _ := scrapeIngestAll(opts.MetricsURL)
	sent0 := sent.Load()
	t0 := time.Now()
	rep.MinSentPer5s = -1
	last, lastAt := sent0, t0
	tick := time.NewTicker(5 * time.Second)
	end := time.After(opts.Duration)
measure:
	for {
		select {
		case <-ctx.Done():
			tick.Stop()
			return rep, ctx.Err()
		case now := <-tick.C:
			n := sent.Load()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			if rep.MinSentPer5s < 0 || rate < rep.MinSentPer5s {
				rep.MinSentPer5s = rate
			}
			log.Info().Float64("points_per_s", rate).Msg("sending")
			last, lastAt = n, now
		case <-end:
			tick.Stop()
			break measure
		}
	}
	elapsed := time.Since(t0)
	rep.Sent = sent.Load() - sent0
	rep.SentPerSec = float64(rep.Sent) / elapsed.Seconds()
	after, _ := scrapeIngestAll(opts.MetricsURL)
	stopLoad()
	swg.Wait()
	pwg.Wait()
	if before != nil && after != nil {
		rep.Received = after.received - before.received
		rep.Indexed = after.indexed - before.indexed
		rep.Rejected = after.rejected - before.rejected
		rep.IndexedPerSec = rep.Indexed / elapsed.Seconds()
		rep.ServerCPU = time.Duration((after.cpu - before.cpu) * float64(time.Second))
		rep.ServerRSS = int64(after.rss)
		rep.IndexP50 = after.quantile(before, 0.5)
		rep.IndexP99 = after.quantile(before, 0.99)
	}
	rep.ErrorFrames = errorFrames.Load()
	pmu.Lock()
	sort.Slice(visible, func(i, j int) bool { return visible[i] < visible[j] })
	rep.Probes, rep.ProbesLate = len(visible), late
	if n := len(visible); n > 0 {
		rep.VisibleP50, rep.VisibleP99, rep.VMax = visible[n/2], visible[n*99/100], visible[n-1]
	}
	pmu.Unlock()

	// Let the last points reach the index, then check every driver.
	time.Sleep(2 * time.Second)
	rep.Checked, rep.Lost, rep.LostExample = ingestCheck(ctx, x, ds)
	return rep, nil
}

// ingestConnect registers driver d (a verified profile, as the fleet's drivers get: only such a
// driver may go online, and a nearby query shows only drivers online), opens its socket and
// sends it online.
func ingestConnect(ctx context.Context, opts IngestOptions, rest *client, i int, d *ingestDriver, errorFrames *atomic.Int64) error {
	tok, err := signToken(opts.Secret, "driver", d.id)
	if err != nil {
		return err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	f := &Fleet{opts: FleetOptions{LocalAddrs: opts.LocalAddrs, City: Bengaluru}, rest: rest}
	if err := f.register(ctx, &driverSim{i: i, id: d.id}); err != nil {
		return err
	}
	dialer := f.dialer(i)
	dialer.ReadBufferSize, dialer.WriteBufferSize = 512, 512
	urls := strings.Split(opts.URL, ",")
	ws, _, err := dialer.DialContext(ctx, urls[i%len(urls)], h)
	if err != nil {
		return err
	}
	d.ws = ws
	// The reader: answers pings (gorilla does), counts error frames, ends with the socket.
	hello := make(chan struct{})
	go func() {
		first := true
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				d.dead.Store(true)
				if first {
					close(hello)
				}
				return
			}
			if first {
				first = false
				close(hello)
			}
			if strings.HasPrefix(string(b), `{"type":"error"`) {
				errorFrames.Add(1)
			}
		}
	}()
	select {
	case <-hello:
	case <-time.After(30 * time.Second):
		return errors.New("no hello")
	}
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"status","seq":1,"data":{"state":"online"}}`))
}

// ingestSend sends one point per driver every 1/rate seconds, spread evenly, until ctx ends.
func ingestSend(ctx context.Context, ds []*ingestDriver, rate float64, seed int64, sent *atomic.Int64, probes chan<- probePoint) {
	if len(ds) == 0 {
		return
	}
	r := mrand.New(mrand.NewSource(seed))
	perSec := rate * float64(len(ds))
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	var done int64
	next := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		due := int64(time.Since(start).Seconds() * perSec)
		for ; done < due; done++ {
			d := ds[next]
			next = (next + 1) % len(ds)
			if d.dead.Load() {
				continue
			}
			// About 30 km/h, turning a little.
			d.heading += r.NormFloat64() * 10
			d.lat, d.lng, d.heading = Bengaluru.step(d.lat, d.lng, d.heading, 8.3/rate)
			d.lat, d.lng = round6(d.lat), round6(d.lng)
			now := time.Now()
			ts := now.UnixMilli()
			if ts <= d.lastTS {
				ts = d.lastTS + 1
			}
			b := append(d.buf[:0], `{"type":"location","data":{"lat":`...)
			b = strconv.AppendFloat(b, d.lat, 'f', 6, 64)
			b = append(b, `,"lng":`...)
			b = strconv.AppendFloat(b, d.lng, 'f', 6, 64)
			b = append(b, `,"acc":8,"heading":`...)
			b = strconv.AppendInt(b, int64(d.heading+360)%360, 10)
			b = append(b, `,"speed":8.3,"ts":`...)
			b = strconv.AppendInt(b, ts, 10)
			b = append(b, "}}"...)
			d.buf = b
			if now.Sub(d.deadlineSet) > time.Second { // a timer update per frame is not free
				_ = d.ws.SetWriteDeadline(now.Add(5 * time.Second))
				d.deadlineSet = now
			}
			if err := d.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				d.dead.Store(true)
				continue
			}
			d.lastTS = ts
			sent.Add(1)
			if d.probe.Load() && d.probe.CompareAndSwap(true, false) {
				select {
				case probes <- probePoint{d: d, lat: d.lat, lng: d.lng, ts: ts, sent: now}:
				default:
				}
			}
		}
	}
}

// ingestReader reads what the server shows of the drivers, through the REST API.
type ingestReader struct {
	c     *client
	staff string // the dispatcher the nearby queries are made as
}

// driverView is the part of the API's DriverView the ingestion load reads.
type driverView struct {
	ID        string    `json:"id"`
	Lat       float64   `json:"lat"`
	Lng       float64   `json:"lng"`
	UpdatedAt time.Time `json:"updated_at"`
}

// position is driver id's position as the driver itself reads it. A 429 is not waited out:
// a probe counts it as not visible yet.
func (x *ingestReader) position(ctx context.Context, id string) (driverView, error) {
	var v driverView
	err := x.c.once(ctx, "GET", "/v1/drivers/"+url.PathEscape(id), "driver", id, nil, nil, &v)
	return v, err
}

// nearby is the drivers within 100 m of a point, as a dispatcher reads them.
func (x *ingestReader) nearby(ctx context.Context, lat, lng float64) ([]driverView, error) {
	var near struct {
		Drivers []driverView `json:"drivers"`
	}
	q := "/v1/drivers/nearby?radius_m=100&limit=100&lat=" + strconv.FormatFloat(lat, 'f', -1, 64) + "&lng=" + strconv.FormatFloat(lng, 'f', -1, 64)
	err := x.c.once(ctx, "GET", q, "dispatcher", x.staff, nil, nil, &near)
	return near.Drivers, err
}

// ingestProbe waits until the point is the driver's position in the API and a nearby query
// around it finds the driver at that time; it gives up after 5 s.
func ingestProbe(ctx context.Context, x *ingestReader, p probePoint) (time.Duration, bool) {
	deadline := p.sent.Add(5 * time.Second)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	for time.Now().Before(deadline) {
		pos, err := x.position(ctx, p.d.id)
		if err == nil && pos.UpdatedAt.UnixMilli() >= p.ts {
			took := time.Since(p.sent)
			ns, err := x.nearby(ctx, p.lat, p.lng)
			i := slices.IndexFunc(ns, func(v driverView) bool { return v.ID == p.d.id })
			if err != nil || i < 0 || ns[i].UpdatedAt.UnixMilli() < p.ts {
				continue
			}
			return took, true
		}
		time.Sleep(time.Millisecond)
	}
	return 0, false
}

// ingestCheck compares every driver's stored position, as the API shows it, with the last
// point it sent.
func ingestCheck(ctx context.Context, x *ingestReader, ds []*ingestDriver) (checked, lost int, example string) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	work := make(chan *ingestDriver)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				var p driverView
				err := x.c.do(ctx, "GET", "/v1/drivers/"+url.PathEscape(d.id), "driver", d.id, nil, nil, &p)
				ok := err == nil && p.Lat == d.lat && p.Lng == d.lng && p.UpdatedAt.UnixMilli() == d.lastTS
				mu.Lock()
				checked++
				if !ok {
					lost++
					if example == "" {
						example = fmt.Sprintf("%s: stored %v,%v at %d (%v), last sent %v,%v at %d", d.id, p.Lat, p.Lng, p.UpdatedAt.UnixMilli(), err, d.lat, d.lng, d.lastTS)
					}
				}
				mu.Unlock()
			}
		}()
	}
	for _, d := range ds {
		if d.lastTS != 0 {
			work <- d
		}
	}
	close(work)
	wg.Wait()
	return checked, lost, example
}

// ingestMetrics are the server's ingestion counters and its socket-to-indexed histogram.
type ingestMetrics struct {
	received, indexed, rejected float64
	cpu, rss                    float64             // the server process's CPU seconds and resident bytes
	buckets                     map[float64]float64 // le -> cumulative count
}

// scrapeIngestAll sums scrapeIngest over the comma-separated urls (several gateways).
func scrapeIngestAll(urls string) (*ingestMetrics, error) {
	if urls == "" {
		return nil, nil
	}
	sum := &ingestMetrics{buckets: map[float64]float64{}}
	for _, u := range strings.Split(urls, ",") {
		m, err := scrapeIngest(u)
		if err != nil {
			return nil, err
		}
		sum.received += m.received
		sum.indexed += m.indexed
		sum.rejected += m.rejected
		sum.cpu += m.cpu
		sum.rss += m.rss
		for le, v := range m.buckets {
			sum.buckets[le] += v
		}
	}
	return sum, nil
}

func scrapeIngest(url string) (*ingestMetrics, error) {
	if url == "" {
		return nil, nil
	}
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	m := &ingestMetrics{buckets: map[float64]float64{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		name := line[:sp]
		switch {
		case name == "dispatch_locations_received_total":
			m.received = v
		case name == "dispatch_locations_indexed_total":
			m.indexed = v
		case name == "process_cpu_seconds_total":
			m.cpu = v
		case name == "process_resident_memory_bytes":
			m.rss = v
		case strings.HasPrefix(name, "dispatch_locations_rejected_total{"), name == "dispatch_locations_stale_total":
			m.rejected += v // refused by the gateway, or not applied by the index (older than the stored point)
		case strings.HasPrefix(name, `dispatch_location_index_seconds_bucket{le="`):
			le := strings.TrimSuffix(strings.TrimPrefix(name, `dispatch_location_index_seconds_bucket{le="`), `"}`)
			if f, err := strconv.ParseFloat(le, 64); err == nil {
				m.buckets[f] = v
			}
		}
	}
	return m, sc.Err()
}

// quantile is the upper bound of the bucket holding quantile q of what was observed since before.
func (m *ingestMetrics) quantile(before *ingestMetrics, q float64) time.Duration {
	var les []float64
	for le := range m.buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return 0
	}
	total := m.buckets[les[len(les)-1]] - before.buckets[les[len(les)-1]]
	for _, le := range les {
		if m.buckets[le]-before.buckets[le] >= q*total {
			if math.IsInf(le, 1) {
				return -1 // beyond the largest bucket
			}
			return time.Duration(le * float64(time.Second))
		}
	}
	return -1
}

// bound prints a quantile from quantile().
func bound(d time.Duration, largest string) string {
	if d < 0 {
		return "> " + largest
	}
	return "<= " + d.String()
}

// Markdown is the report as a table for BENCHMARKS.md.
func (r IngestReport) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| ingestion, %d drivers for %v | value |\n|---|---|\n", r.Drivers, r.Duration)
	fmt.Fprintf(&b, "| sockets connected | %d |\n", r.Connected)
	fmt.Fprintf(&b, "| points sent / s (whole window; slowest 5 s) | %.0f; %.0f |\n", r.SentPerSec, r.MinSentPer5s)
	if r.Indexed > 0 {
		fmt.Fprintf(&b, "| points read / indexed / rejected by the server | %.0f / %.0f / %.0f |\n", r.Received, r.Indexed, r.Rejected)
		fmt.Fprintf(&b, "| indexed / s | %.0f |\n", r.IndexedPerSec)
		fmt.Fprintf(&b, "| socket read to indexed, p50 / p99 (server histogram) | %s / %s |\n", bound(r.IndexP50, "2.5s"), bound(r.IndexP99, "2.5s"))
	}
	fmt.Fprintf(&b, "| socket write to visible in a nearby query, p50 / p99 / max (%d probes, %d not seen in 5 s) | %v / %v / %v |\n",
		r.Probes, r.ProbesLate, r.VisibleP50.Round(100*time.Microsecond), r.VisibleP99.Round(100*time.Microsecond), r.VMax.Round(100*time.Microsecond))
	if r.ServerCPU > 0 && r.Received > 0 {
		fmt.Fprintf(&b, "| server CPU over the window: share of one core; CPU-µs per point received | %.0f%%; %.0f |\n",
			100*r.ServerCPU.Seconds()/r.Duration.Seconds(), float64(r.ServerCPU.Microseconds())/r.Received)
	}
	if r.ServerRSS > 0 && r.Connected > 0 {
		fmt.Fprintf(&b, "| server RSS with every socket open; per socket (whole RSS over sockets) | %.0f MiB; %.1f KiB |\n",
			float64(r.ServerRSS)/(1<<20), float64(r.ServerRSS)/1024/float64(r.Connected))
	}
	fmt.Fprintf(&b, "| error frames from the server | %d |\n", r.ErrorFrames)
	fmt.Fprintf(&b, "| drivers whose stored position is not the last point sent | %d of %d |\n", r.Lost, r.Checked)
	return b.String()
}

// IngestMain is `loadtest ingest`: flags to IngestOptions, the report to stdout. getenv gives
// the default of the secret (DISPATCH_JWT_SECRET). It fails when a latest position was lost.
func IngestMain(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ingest", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var o IngestOptions
	fs.StringVar(&o.URL, "url", "ws://127.0.0.1:8080/v1/ws", "the gateways' socket URLs, comma-separated: driver i connects to the (i mod n)th (loopback only)")
	fs.StringVar(&o.REST, "rest", "", "the REST API's base URL the probes and the check read positions from (default: -url's host; loopback only)")
	fs.StringVar(&o.MetricsURL, "metrics", "", "the gateways' /metrics URLs, comma-separated, e.g. http://127.0.0.1:9090/metrics (optional): their counters, CPU and RSS are summed")
	secret := fs.String("secret", getenv("DISPATCH_JWT_SECRET"), "the server's JWT secret (default $DISPATCH_JWT_SECRET)")
	fs.IntVar(&o.Drivers, "drivers", 8000, "driver sockets")
	fs.Float64Var(&o.Rate, "rate", 4, "points a second per driver (the server allows 5)")
	fs.DurationVar(&o.Duration, "duration", 60*time.Second, "measured load")
	fs.DurationVar(&o.Warmup, "warmup", 5*time.Second, "load before the measurement starts")
	fs.Float64Var(&o.Probes, "probes", 20, "points a second timed to visible in a nearby query")
	local := fs.String("local-addrs", "", "comma-separated 127.0.0.x source addresses for the sockets")
	fs.StringVar(&o.IDPrefix, "id-prefix", "ing", "driver ids are PREFIX-N")
	fs.Int64Var(&o.Seed, "seed", 1, "random seed")
	cpuProfile := fs.String("cpuprofile", "", "write the load generator's own CPU profile to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if *local != "" {
		o.LocalAddrs = strings.Split(*local, ",")
	}
	o.Secret = []byte(*secret)
	log := zerolog.New(zerolog.ConsoleWriter{Out: stdout, TimeFormat: "15:04:05"}).With().Timestamp().Logger()
	rep, err := Ingest(ctx, o, log)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, rep.Markdown())
	if rep.Lost > 0 {
		return fmt.Errorf("%d drivers lost their latest position, e.g. %s", rep.Lost, rep.LostExample)
	}
	return nil
}
