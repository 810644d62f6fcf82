package loadtest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Result is the report of a peak run; it is written as report.json.
type Result struct {
	Scenario  Scenario  `json:"scenario"`
	Machine   Machine   `json:"machine"`
	StartedAt time.Time `json:"started_at"`
	// WarmupSeconds: from the start until every driver was connected and the demand began
	// (0 without a warm-up); DemandStartedAt is that moment. RunSeconds is the demand's.
	WarmupSeconds   float64   `json:"warmup_s,omitempty"`
	DemandStartedAt time.Time `json:"demand_started_at"`
	RunSeconds      float64   `json:"run_s"`
	DrainSeconds    float64   `json:"drain_s"`
	// Settled: after the drain every message was answered and no offer was in flight, so the
	// counts can be set exactly beside the server's.
	Settled     bool     `json:"settled"`
	Interrupted bool     `json:"interrupted"`
	Procs       int      `json:"processes"`
	Sources     []string `json:"source_addresses,omitempty"`
	ChildErrors int      `json:"child_errors,omitempty"`

	Totals      Totals           `json:"counts"`
	Dispatchers DispatcherTotals `json:"dispatchers"`
	// Throughput per kind over the run phase (the demand's Duration): mean and busiest second.
	Throughput map[string]Rate `json:"throughput"`
	Latency    Latencies       `json:"latency"`
	Seconds    []SecondRow     `json:"seconds"`
	// LatencyBins are booking-to-offer percentiles over time, by when the offer arrived.
	LatencyBins []LatencyBin `json:"latency_bins"`

	Server *ServerFigures `json:"server,omitempty"`
	// MetricsMissing: server processes that could not be scraped after the run (killed on
	// purpose, say); the server's figures leave them out.
	MetricsMissing int         `json:"metrics_missing,omitempty"`
	MySQL          *MySQLCheck `json:"mysql,omitempty"`
	CheckError     string      `json:"mysql_error,omitempty"`
	Agreement      []Agreement `json:"agreement,omitempty"`

	childTotals Totals
	loadBefore  string
}

// Scenario is what was asked for.
type Scenario struct {
	Target      string  `json:"target"`
	City        string  `json:"city"`
	Drivers     int     `json:"drivers"`
	Dispatchers int     `json:"dispatchers"`
	DurationS   float64 `json:"duration_s"`
	TickS       float64 `json:"tick_s"`
	Profile     string  `json:"profile"`
	BaseRate    float64 `json:"base_bookings_per_s"`
	PeakRate    float64 `json:"peak_bookings_per_s"`
	FlashAtS    float64 `json:"flash_at_s,omitempty"`
	FlashForS   float64 `json:"flash_for_s,omitempty"`
	ScheduledP  float64 `json:"scheduled_fraction"`
	AcceptP     float64 `json:"accept_p"`
	DeclineP    float64 `json:"decline_p"`
	IgnoreP     float64 `json:"ignore_p"`
	ReconnectP  float64 `json:"reconnects_per_driver_minute"`
	ApproachS   float64 `json:"approach_s"`
	TripS       float64 `json:"trip_s"`
	DrainS      float64 `json:"drain_limit_s"`
	Seed        int64   `json:"seed"`
}

// Machine is where the run happened (the generator and, on loopback, the server too).
type Machine struct {
	NProc     int    `json:"nproc"`
	CPU       string `json:"cpu"`
	OS        string `json:"os"`
	Go        string `json:"go"`
	OpenFiles uint64 `json:"open_files_limit"`
	// LoadBefore and LoadAfter are /proc/loadavg's 1, 5 and 15 minute figures before and after
	// the run: other work on the machine shows here.
	LoadBefore string `json:"load_before,omitempty"`
	LoadAfter  string `json:"load_after,omitempty"`
}

// loadAvg is the first three fields of /proc/loadavg ("" elsewhere).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// DispatcherTotals are what the simulated dispatchers received.
type DispatcherTotals struct {
	Sockets        int   `json:"sockets"`
	Snapshots      int64 `json:"snapshots"`
	Frames         int64 `json:"frames"`
	DriverUpdates  int64 `json:"driver_updates"`
	BookingUpdates int64 `json:"booking_updates"`
	CellFrames     int64 `json:"cells_frames"`
	Errors         int64 `json:"errors"`
	// Outside: driver updates about drivers outside the watched area (must be 0).
	Outside int64 `json:"outside_area"`
	// Driver update latency, from the point's timestamp to its arrival at a dispatcher (ms).
	LatencyP50MS float64 `json:"latency_p50_ms"`
	LatencyP99MS float64 `json:"latency_p99_ms"`
	LatencyN     int     `json:"latency_samples"`
}

// Rate is a throughput: the mean over the run phase and the busiest second.
type Rate struct {
	Mean float64 `json:"mean_per_s"`
	Peak int64   `json:"peak_per_s"`
}

// Latencies seen by the generator.
type Latencies struct {
	// BookingToOffer: a booking's first offer as the receiving driver reads it, minus the
	// booking's created_at.
	BookingToOffer Quantiles `json:"booking_to_offer"`
	// NeverOffered: bookings for now that had no offer before the drain cancelled them.
	NeverOffered int `json:"never_offered"`
	// ByPhase: BookingToOffer by the part of the demand profile the booking was made in.
	ByPhase []PhaseLatency `json:"by_phase"`
	// BookingPost: the round trip of POST /v1/bookings.
	BookingPost Quantiles `json:"booking_post"`
	// Ack: a driver's message (status, accept, decline, trip steps) to its ack.
	Ack Quantiles `json:"driver_ack"`
	// Pickup: the straight-line pickup distance of every offer received (distance_m), what
	// batch matching shortens.
	Pickup Distances `json:"pickup"`
}

// PhaseLatency is booking-to-offer latency of the bookings made in one part of the profile.
type PhaseLatency struct {
	Phase          string    `json:"phase"`
	FromS          float64   `json:"from_s"`
	ToS            float64   `json:"to_s"`
	Rate           float64   `json:"bookings_per_s"`
	BookingToOffer Quantiles `json:"booking_to_offer"`
}

type phase struct {
	name     string
	from, to time.Duration
}

// phases cuts a profile into the parts whose latencies are worth telling apart.
func phases(p Profile) []phase {
	switch p.Name {
	case Flash:
		return []phase{{"before the flash", 0, p.FlashAt}, {"flash", p.FlashAt, p.FlashAt + p.FlashFor},
			{"after the flash", p.FlashAt + p.FlashFor, p.Length}}
	case Morning:
		return []phase{{"ramp up", 0, p.Length / 5}, {"plateau", p.Length / 5, p.Length - p.Length/5},
			{"ramp down", p.Length - p.Length/5, p.Length}}
	}
	return []phase{{"steady", 0, p.Length}}
}

// SecondRow is one second of the run.
type SecondRow struct {
	T      int              `json:"t"`
	Counts map[string]int64 `json:"counts"`
}

// LatencyBin is booking-to-offer latency of the offers that arrived in [FromS, ToS).
type LatencyBin struct {
	FromS int     `json:"from_s"`
	ToS   int     `json:"to_s"`
	N     int     `json:"n"`
	P50   float64 `json:"p50_ms"`
	P99   float64 `json:"p99_ms"`
}

// ServerFigures are the changes of the server's own counters over the run (its /metrics).
type ServerFigures struct {
	LocationsReceived float64 `json:"locations_received"`
	LocationsIndexed  float64 `json:"locations_indexed"`
	LocationsRejected float64 `json:"locations_rejected"`
	OffersSent        float64 `json:"offers_sent"`
	OffersExpired     float64 `json:"offers_expired"`
	FramesDropped     float64 `json:"frames_dropped"`
	// Histogram estimates (bucket interpolation), in milliseconds; absent when empty.
	BookingToOfferP50 *float64 `json:"booking_to_offer_p50_ms,omitempty"`
	BookingToOfferP99 *float64 `json:"booking_to_offer_p99_ms,omitempty"`
	SolveP50          *float64 `json:"solve_p50_ms,omitempty"`
	SolveP99          *float64 `json:"solve_p99_ms,omitempty"`
	IndexLagP99       *float64 `json:"location_index_p99_ms,omitempty"`
}

// Agreement sets one of the generator's counts beside the server's.
type Agreement struct {
	What   string  `json:"what"`
	Client int64   `json:"client"`
	Server float64 `json:"server"`
	Source string  `json:"server_source"`
	Agree  bool    `json:"agree"`
}

func serverFigures(d Metrics, t Totals) *ServerFigures {
	s := &ServerFigures{
		LocationsReceived: d.Sums["dispatch_locations_received_total"],
		LocationsIndexed:  d.Sums["dispatch_locations_indexed_total"],
		LocationsRejected: d.Sums["dispatch_locations_rejected_total"],
		OffersSent:        d.Sums["dispatch_offers_sent_total"],
		OffersExpired:     d.Sums["dispatch_offers_expired_total"],
		FramesDropped:     d.Sums["dispatch_frames_dropped_total"],
	}
	q := func(name string, p float64) *float64 {
		v, ok := d.Quantile(name, p)
		if !ok {
			return nil
		}
		ms := round1(v * 1000)
		return &ms
	}
	s.BookingToOfferP50 = q("dispatch_booking_to_offer_seconds", 0.5)
	s.BookingToOfferP99 = q("dispatch_booking_to_offer_seconds", 0.99)
	s.SolveP50 = q("dispatch_solve_seconds", 0.5)
	s.SolveP99 = q("dispatch_solve_seconds", 0.99)
	s.IndexLagP99 = q("dispatch_location_index_seconds", 0.99)
	return s
}

// fill computes the figures from the series.
func (r *Result) fill(o PeakOptions, s *Series) {
	r.Scenario = Scenario{Target: o.Target, City: o.City.Name, Drivers: o.Drivers, Dispatchers: o.Dispatchers,
		DurationS: o.Duration.Seconds(), TickS: o.Tick.Seconds(), Profile: o.Demand.Name, BaseRate: o.Demand.Base,
		PeakRate: o.Demand.Peak(), FlashAtS: o.Demand.FlashAt.Seconds(), FlashForS: o.Demand.FlashFor.Seconds(),
		ScheduledP: o.ScheduledP, AcceptP: o.AcceptP, DeclineP: o.DeclineP, IgnoreP: round3(1 - o.AcceptP - o.DeclineP),
		ReconnectP: o.ReconnectP, ApproachS: o.Approach.Seconds(), TripS: o.TripTime.Seconds(), DrainS: o.Drain.Seconds(), Seed: o.Seed}
	r.Machine = ThisMachine()
	r.Machine.LoadBefore, r.Machine.LoadAfter = r.loadBefore, loadAvg()

	data := s.Data()
	n := 0
	for _, v := range data.Counts {
		n = max(n, len(v))
	}
	r.Seconds = make([]SecondRow, n)
	for i := range r.Seconds {
		r.Seconds[i] = SecondRow{T: i, Counts: map[string]int64{}}
		for k, v := range data.Counts {
			if i < len(v) {
				r.Seconds[i].Counts[k] = v[i]
			}
		}
	}
	runS := max(1, int(math.Round(r.RunSeconds)))
	warmS := int(math.Round(r.WarmupSeconds))
	r.Throughput = map[string]Rate{}
	for _, k := range []Kind{KindLocations, KindBookings, KindOffers, KindAccepts, KindCompletions, KindViewFrames, KindViewDrivers} {
		var sum, peak int64
		for i, row := range r.Seconds {
			if i >= warmS && i < warmS+runS {
				sum += row.Counts[k.String()]
			}
			peak = max(peak, row.Counts[k.String()])
		}
		r.Throughput[k.String()] = Rate{Mean: round1(float64(sum) / float64(runS)), Peak: peak}
	}

	ls, never := s.offerLatencies()
	post, ack := s.samples()
	ms := make([]float64, len(ls))
	for i, l := range ls {
		ms[i] = l.ms
	}
	r.Latency = Latencies{BookingToOffer: Summarise(ms), NeverOffered: never, BookingPost: Summarise(post), Ack: Summarise(ack),
		Pickup: s.pickups()}
	for _, ph := range phases(o.Demand) {
		var xs []float64
		for _, l := range ls {
			if at := l.created.Sub(r.DemandStartedAt); at >= ph.from && at < ph.to {
				xs = append(xs, l.ms)
			}
		}
		r.Latency.ByPhase = append(r.Latency.ByPhase, PhaseLatency{Phase: ph.name, FromS: ph.from.Seconds(), ToS: ph.to.Seconds(),
			Rate: o.Demand.Rate(ph.from + (ph.to-ph.from)/2), BookingToOffer: Summarise(xs)})
	}
	bin := max(1, int(math.Round(float64(n)/30)))
	byBin := map[int][]float64{}
	for _, l := range ls {
		byBin[l.offerAt/bin] = append(byBin[l.offerAt/bin], l.ms)
	}
	var keys []int
	for k := range byBin {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		xs := byBin[k]
		sort.Float64s(xs)
		r.LatencyBins = append(r.LatencyBins, LatencyBin{FromS: k * bin, ToS: (k + 1) * bin, N: len(xs),
			P50: round1(Percentile(xs, 50)), P99: round1(Percentile(xs, 99))})
	}

	if r.Server != nil {
		r.Agreement = append(r.Agreement,
			Agreement{What: "location points sent / received", Client: r.Totals.LocationsSent, Server: r.Server.LocationsReceived,
				Source: "dispatch_locations_received_total"},
			Agreement{What: "offers received (distinct) / sent", Client: r.Totals.OffersReceived, Server: r.Server.OffersSent,
				Source: "dispatch_offers_sent_total"})
	}
	if r.MySQL != nil {
		var all int
		for _, v := range r.MySQL.BookingsByStatus {
			all += v
		}
		r.Agreement = append(r.Agreement,
			Agreement{What: "bookings completed (trip.end acknowledged)", Client: r.Totals.BookingsCompleted,
				Server: float64(r.MySQL.BookingsByStatus["completed"]), Source: "MySQL: bookings with status completed (the server has no counter for it)"},
			Agreement{What: "bookings created (201)", Client: r.Totals.BookingsCreated, Server: float64(all), Source: "MySQL: rows in bookings"})
	}
	for i := range r.Agreement {
		r.Agreement[i].Agree = float64(r.Agreement[i].Client) == r.Agreement[i].Server
	}
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// ThisMachine describes the machine the generator runs on.
func ThisMachine() Machine {
	m := Machine{NProc: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH, Go: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		m.OpenFiles = lim.Cur
	}
	return m
}

// Write puts report.json, report.md and the charts (PNG) in dir, creating it.
func (r *Result) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	if err := r.charts(dir); err != nil {
		return fmt.Errorf("charts: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, "report.md"), []byte(r.Markdown()), 0o644)
}

// Markdown is the report for people.
func (r *Result) Markdown() string {
	var b strings.Builder
	sc := r.Scenario
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Peak load report\n\n")
	p("%s, %d drivers (a point every %.3gs), %d dispatchers; demand %s at %.3g bookings/s", sc.City, sc.Drivers, sc.TickS, sc.Dispatchers, sc.Profile, sc.BaseRate)
	if sc.Profile != Steady {
		p(" peaking at %.3g/s", sc.PeakRate)
	}
	if sc.Profile == Flash {
		p(" (from %.0fs for %.0fs)", sc.FlashAtS, sc.FlashForS)
	}
	p(", %.0f%% scheduled; drivers accept %.0f%%, decline %.0f%%, let %.0f%% expire; %.3g reconnects a driver-minute; approach %.3gs, trips %.3gs (time-lapse).\n\n",
		sc.ScheduledP*100, sc.AcceptP*100, sc.DeclineP*100, sc.IgnoreP*100, sc.ReconnectP, sc.ApproachS, sc.TripS)
	p("Machine: %d CPUs (%s), %s, %s, %d open files a process; load average %s before, %s after. Generator and server share the machine. %d generator process(es)",
		r.Machine.NProc, r.Machine.CPU, r.Machine.OS, r.Machine.Go, r.Machine.OpenFiles, r.Machine.LoadBefore, r.Machine.LoadAfter, r.Procs)
	if len(r.Sources) > 0 {
		p(", sources %s", strings.Join(r.Sources, ", "))
	}
	p(".\n\nStarted %s", r.StartedAt.UTC().Format(time.RFC3339))
	if r.WarmupSeconds > 0 {
		p("; every driver connected after %.1fs of warm-up", r.WarmupSeconds)
	}
	p("; demand for %.1fs, then %.1fs of drain. Settled: %v.", r.RunSeconds, r.DrainSeconds, r.Settled)
	if r.Interrupted {
		p(" **Interrupted before the end.**")
	}
	p("\n\n## Throughput (mean over the %.0fs of demand; busiest second)\n\n| | mean/s | peak/s |\n|---|---:|---:|\n", r.RunSeconds)
	for _, k := range []Kind{KindLocations, KindBookings, KindOffers, KindAccepts, KindCompletions, KindViewFrames, KindViewDrivers} {
		t := r.Throughput[k.String()]
		p("| %s | %.1f | %d |\n", kindLabel[k], t.Mean, t.Peak)
	}
	p("\n## Latency (ms)\n\n| | n | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|\n")
	for _, l := range []struct {
		name string
		q    Quantiles
	}{{"booking created_at -> first offer read by the driver", r.Latency.BookingToOffer},
		{"POST /v1/bookings round trip", r.Latency.BookingPost}, {"driver message -> ack", r.Latency.Ack}} {
		p("| %s | %d | %.1f | %.1f | %.1f | %.1f |\n", l.name, l.q.N, l.q.P50, l.q.P90, l.q.P99, l.q.Max)
	}
	if len(r.Latency.ByPhase) > 1 {
		p("\nBooking to first offer by when the booking was made:\n\n| part of the demand | bookings/s | n | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|\n")
		for _, ph := range r.Latency.ByPhase {
			q := ph.BookingToOffer
			p("| %s (%.0f-%.0fs) | %.3g | %d | %.1f | %.1f | %.1f | %.1f |\n", ph.Phase, ph.FromS, ph.ToS, ph.Rate, q.N, q.P50, q.P90, q.P99, q.Max)
		}
	}
	p("\nBookings for now that never had an offer before the drain cancelled them: %d.\n", r.Latency.NeverOffered)
	if pk := r.Latency.Pickup; pk.N > 0 {
		p("\nPickup distance of the %d offers received (straight line): mean %.0f m, p50 %.0f m, p95 %.0f m.\n", pk.N, pk.Mean, pk.P50, pk.P95)
	}
	if s := r.Server; s != nil {
		p("\nThe server's own view (its histograms, bucket-interpolated):")
		opt := func(name string, v *float64) {
			if v != nil {
				p(" %s %.1f ms;", name, *v)
			}
		}
		opt("booking-to-offer p50", s.BookingToOfferP50)
		opt("p99", s.BookingToOfferP99)
		opt("solve p50", s.SolveP50)
		opt("solve p99", s.SolveP99)
		opt("location read-to-indexed p99", s.IndexLagP99)
		p(" offers expired %.0f; location points rejected %.0f; outgoing frames dropped %.0f.\n", s.OffersExpired, s.LocationsRejected, s.FramesDropped)
	}
	t := r.Totals
	p("\n## Counts\n\n| | |\n|---|---:|\n")
	for _, row := range []struct {
		k string
		v int64
	}{{"location points sent", t.LocationsSent}, {"location points refused (error frames)", t.LocationErrors},
		{"bookings created", t.BookingsCreated}, {"booking requests failed", t.BookingErrors}, {"bookings not made (client saturated)", t.BookingsSkipped},
		{"offers received (distinct)", t.OffersReceived}, {"offers received again after a reconnect", t.OffersRepeated},
		{"accepts acknowledged", t.OffersAccepted}, {"accepts refused (expired or taken)", t.AcceptsRefused},
		{"declines sent", t.OffersDeclined}, {"offers left to expire", t.OffersIgnored}, {"bookings completed", t.BookingsCompleted},
		{"other driver messages refused", t.ActionErrors}, {"messages unanswered when a socket closed", t.Unanswered},
		{"reconnects", t.Reconnects}, {"socket failures", t.Errors}, {"REST requests answered 429 (waited out, sent again)", t.RateLimited},
		{"dispatcher frames", r.Dispatchers.Frames}, {"dispatcher driver updates", r.Dispatchers.DriverUpdates},
		{"dispatcher booking updates", r.Dispatchers.BookingUpdates},
		{"dispatcher driver updates outside the watched area", r.Dispatchers.Outside}} {
		p("| %s | %d |\n", row.k, row.v)
	}
	if r.Dispatchers.LatencyN > 0 {
		p("\nDriver update to dispatcher socket: p50 %.1f ms, p99 %.1f ms over %d updates.\n",
			r.Dispatchers.LatencyP50MS, r.Dispatchers.LatencyP99MS, r.Dispatchers.LatencyN)
	}
	if len(t.Refused) > 0 {
		p("\nWhat the server refused (error frames):\n\n| message: code | n | example |\n|---|---:|---|\n")
		var ks []string
		for k := range t.Refused {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			p("| %s | %d | %s |\n", k, t.Refused[k].N, strings.ReplaceAll(t.Refused[k].Example, "|", "/"))
		}
	}
	if len(r.Agreement) > 0 {
		p("\n## Generator and server agree?\n\n| | generator | server | server's source | agree |\n|---|---:|---:|---|---|\n")
		for _, a := range r.Agreement {
			p("| %s | %d | %.0f | %s | %v |\n", a.What, a.Client, a.Server, a.Source, a.Agree)
		}
	}
	p("\n## Invariant (MySQL)\n\n")
	switch {
	case r.MySQL != nil:
		p("Drivers with overlapping calendar blocks plus active bookings without a driver or a block: **%d**.\n\nBookings by status:", r.MySQL.InvariantViolations)
		var ks []string
		for k := range r.MySQL.BookingsByStatus {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			p(" %s %d;", k, r.MySQL.BookingsByStatus[k])
		}
		p("\n")
	case r.CheckError != "":
		p("The check failed: %s\n", r.CheckError)
	default:
		p("Not run (no MySQL DSN given).\n")
	}
	p("\n## Charts\n\n![throughput](throughput.png)\n\n![flow](flow.png)\n\n![latency](latency.png)\n")
	return b.String()
}

var kindLabel = map[Kind]string{KindLocations: "location points", KindBookings: "bookings created", KindOffers: "offers received",
	KindAccepts: "accepts acknowledged", KindCompletions: "bookings completed", KindViewFrames: "dispatcher frames",
	KindViewDrivers: "dispatcher driver updates"}

var palette = []color.Color{color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xd6, 0x27, 0x28, 0xff},
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}, color.RGBA{0x94, 0x67, 0xbd, 0xff}}

type namedLine struct {
	name string
	xys  plotter.XYs
}

func (r *Result) column(k Kind) plotter.XYs {
	xys := make(plotter.XYs, len(r.Seconds))
	for i, row := range r.Seconds {
		xys[i] = plotter.XY{X: float64(row.T), Y: float64(row.Counts[k.String()])}
	}
	return xys
}

func (r *Result) charts(dir string) error {
	if err := lineChart(filepath.Join(dir, "throughput.png"), "Location updates per second", "per second", r.RunSeconds, float64(len(r.Seconds)),
		[]namedLine{{"points sent by drivers", r.column(KindLocations)}, {"driver updates read by dispatchers", r.column(KindViewDrivers)}}); err != nil {
		return err
	}
	if err := lineChart(filepath.Join(dir, "flow.png"), "Bookings, offers and completions per second", "per second", r.RunSeconds, float64(len(r.Seconds)),
		[]namedLine{{"bookings created", r.column(KindBookings)}, {"offers received", r.column(KindOffers)},
			{"accepts acknowledged", r.column(KindAccepts)}, {"bookings completed", r.column(KindCompletions)}}); err != nil {
		return err
	}
	var p50, p99 plotter.XYs
	for _, b := range r.LatencyBins {
		mid := float64(b.FromS+b.ToS) / 2
		p50 = append(p50, plotter.XY{X: mid, Y: b.P50 / 1000})
		p99 = append(p99, plotter.XY{X: mid, Y: b.P99 / 1000})
	}
	return lineChart(filepath.Join(dir, "latency.png"), "Booking to first offer (created_at to the driver reading it), by when the offer came", "seconds", r.RunSeconds, float64(len(r.Seconds)),
		[]namedLine{{"p50", p50}, {"p99", p99}})
}

// lineChart draws lines over time with a dashed mark where the demand stopped.
func lineChart(path, title, ylabel string, demandEnd, xmax float64, lines []namedLine) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "seconds since start (dashed: demand stops)"
	p.Y.Label.Text = ylabel
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	ymax := 1.0
	for i, l := range lines {
		if len(l.xys) == 0 {
			continue
		}
		for _, xy := range l.xys {
			ymax = max(ymax, xy.Y)
		}
		ln, err := plotter.NewLine(l.xys)
		if err != nil {
			return err
		}
		ln.Color = palette[i%len(palette)]
		ln.Width = vg.Points(1.5)
		p.Add(ln)
		p.Legend.Add(l.name, ln)
	}
	mark, err := plotter.NewLine(plotter.XYs{{X: demandEnd, Y: 0}, {X: demandEnd, Y: ymax}})
	if err != nil {
		return err
	}
	mark.Color = color.Gray{Y: 0x80}
	p.X.Min, p.X.Max = 0, max(xmax, demandEnd)
	p.Y.Max = ymax * 1.35 // room for the legend
	mark.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(mark)
	p.Legend.Top = true
	return p.Save(10*vg.Inch, 4*vg.Inch, path)
}
