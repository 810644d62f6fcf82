package loadtest

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is one thing counted per second of a run.
type Kind int

// The kinds a Series counts. Their names are the keys of SeriesData.Counts and of the report.
const (
	KindLocations     Kind = iota // location points written to driver sockets
	KindBookings                  // bookings created (201)
	KindBookingErrors             // booking requests that failed
	KindOffers                    // distinct offers received by drivers
	KindAccepts                   // offer.accept acknowledged
	KindDeclines                  // offer.decline sent
	KindIgnores                   // offers left to expire on purpose
	KindCompletions               // trip.end acknowledged: bookings completed
	KindViewFrames                // frames received by simulated dispatchers
	KindViewDrivers               // driver updates inside those frames
	KindReconnects                // driver sockets dropped on purpose and opened again
	numKinds
)

var kindNames = [numKinds]string{"locations", "bookings", "booking_errors", "offers", "accepts", "declines",
	"ignores", "completions", "view_frames", "view_drivers", "reconnects"}

func (k Kind) String() string { return kindNames[k] }

// maxSeconds bounds a series: a run is bounded in time, and anything later lands in the last slot.
const maxSeconds = 2 * 3600

type slot [numKinds]atomic.Int64

// Series is what happened in each second of a run, and the samples behind its latency figures.
// Every method is safe for concurrent use. Counting is lock-free; samples take a mutex.
type Series struct {
	start time.Time
	slots []slot

	mu         sync.Mutex // guards the fields below
	created    map[string]time.Time
	customer   map[string]string
	ahead      map[string]bool // bookings made for later (start_at ahead)
	firstOffer map[string]time.Time
	postMS     []float64
	ackMS      []float64
	pickupM    []float64 // distance_m of every offer received (once each)
}

// NewSeries returns a series whose second 0 begins at start.
func NewSeries(start time.Time) *Series {
	return &Series{start: start, slots: make([]slot, maxSeconds), created: map[string]time.Time{},
		customer: map[string]string{}, ahead: map[string]bool{}, firstOffer: map[string]time.Time{}}
}

// Start is the series' time origin.
func (s *Series) Start() time.Time { return s.start }

func (s *Series) second(t time.Time) int {
	i := int(t.Sub(s.start) / time.Second)
	if i < 0 {
		return 0
	}
	if i >= len(s.slots) {
		return len(s.slots) - 1
	}
	return i
}

// Add counts n of kind at time t.
func (s *Series) Add(k Kind, t time.Time, n int64) { s.slots[s.second(t)][k].Add(n) }

// Total is the count of kind over the whole run.
func (s *Series) Total(k Kind) int64 {
	var n int64
	for i := range s.slots {
		n += s.slots[i][k].Load()
	}
	return n
}

// Booked records a booking as the server created it, which customer holds it, and whether it
// was made for later.
func (s *Series) Booked(id, customer string, createdAt time.Time, ahead bool) {
	s.mu.Lock()
	s.created[id] = createdAt
	s.customer[id] = customer
	if ahead {
		s.ahead[id] = true
	}
	s.mu.Unlock()
}

// CustomerOf returns the customer who booked id, if this series saw it.
func (s *Series) CustomerOf(id string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.customer[id]
	return c, ok
}

// Offered records that a driver received an offer for booking at t; only the first counts for
// the booking-to-offer latency.
func (s *Series) Offered(booking string, t time.Time) {
	s.mu.Lock()
	if old, ok := s.firstOffer[booking]; !ok || t.Before(old) {
		s.firstOffer[booking] = t
	}
	s.mu.Unlock()
}

// PostTook records the round trip of one POST /v1/bookings.
func (s *Series) PostTook(d time.Duration) {
	s.mu.Lock()
	s.postMS = append(s.postMS, float64(d)/float64(time.Millisecond))
	s.mu.Unlock()
}

// Pickup records the pickup distance an offer states (distance_m).
func (s *Series) Pickup(m float64) {
	s.mu.Lock()
	s.pickupM = append(s.pickupM, m)
	s.mu.Unlock()
}

// AckTook records the round trip of one acknowledged driver message.
func (s *Series) AckTook(d time.Duration) {
	s.mu.Lock()
	s.ackMS = append(s.ackMS, float64(d)/float64(time.Millisecond))
	s.mu.Unlock()
}

// SeriesData is a Series in JSON, as a child process hands it to its parent.
type SeriesData struct {
	Start      time.Time            `json:"start"`
	Counts     map[string][]int64   `json:"counts"` // kind -> per second, trimmed
	Created    map[string]time.Time `json:"created,omitempty"`
	FirstOffer map[string]time.Time `json:"first_offer,omitempty"`
	PostMS     []float64            `json:"post_ms,omitempty"`
	AckMS      []float64            `json:"ack_ms,omitempty"`
	PickupM    []float64            `json:"pickup_m,omitempty"`
}

// Data snapshots the series.
func (s *Series) Data() SeriesData {
	last := -1
	for i := range s.slots {
		for k := range numKinds {
			if s.slots[i][k].Load() != 0 {
				last = i
			}
		}
	}
	d := SeriesData{Start: s.start, Counts: map[string][]int64{}}
	for k := range numKinds {
		v := make([]int64, last+1)
		for i := range v {
			v[i] = s.slots[i][k].Load()
		}
		d.Counts[k.String()] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d.Created = make(map[string]time.Time, len(s.created))
	for k, v := range s.created {
		d.Created[k] = v
	}
	d.FirstOffer = make(map[string]time.Time, len(s.firstOffer))
	for k, v := range s.firstOffer {
		d.FirstOffer[k] = v
	}
	d.PostMS = append([]float64(nil), s.postMS...)
	d.AckMS = append([]float64(nil), s.ackMS...)
	d.PickupM = append([]float64(nil), s.pickupM...)
	return d
}

// Merge adds another process's data (with the same start) into s.
func (s *Series) Merge(d SeriesData) {
	shift := int(math.Round(d.Start.Sub(s.start).Seconds()))
	for k := range numKinds {
		for i, n := range d.Counts[k.String()] {
			j := min(max(i+shift, 0), len(s.slots)-1)
			s.slots[j][k].Add(n)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range d.Created {
		s.created[k] = v
	}
	for k, v := range d.FirstOffer {
		if old, ok := s.firstOffer[k]; !ok || v.Before(old) {
			s.firstOffer[k] = v
		}
	}
	s.postMS = append(s.postMS, d.PostMS...)
	s.ackMS = append(s.ackMS, d.AckMS...)
	s.pickupM = append(s.pickupM, d.PickupM...)
}

// Quantiles summarises samples in milliseconds.
type Quantiles struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_ms"`
	P90 float64 `json:"p90_ms"`
	P99 float64 `json:"p99_ms"`
	Max float64 `json:"max_ms"`
}

// Summarise returns the nearest-rank quantiles of xs (which it sorts).
func Summarise(xs []float64) Quantiles {
	if len(xs) == 0 {
		return Quantiles{}
	}
	sort.Float64s(xs)
	return Quantiles{N: len(xs), P50: round1(Percentile(xs, 50)), P90: round1(Percentile(xs, 90)),
		P99: round1(Percentile(xs, 99)), Max: round1(xs[len(xs)-1])}
}

// Percentile is the nearest-rank p-th percentile of sorted xs (0 for none).
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	r := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(r, 1), len(sorted))-1]
}

func round1(x float64) float64 { return math.Round(x*10) / 10 }

// offerLatency is one booking's wait for its first offer.
type offerLatency struct {
	ms      float64
	offerAt int       // second of the run the offer arrived in
	created time.Time // the booking's created_at
}

// offerLatencies pairs each booking's first offer with its created_at, and counts the bookings
// for now that never had an offer.
func (s *Series) offerLatencies() (ls []offerLatency, never int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, c := range s.created {
		t, ok := s.firstOffer[id]
		if !ok {
			if !s.ahead[id] {
				never++
			}
			continue
		}
		ls = append(ls, offerLatency{ms: float64(t.Sub(c)) / float64(time.Millisecond), offerAt: s.second(t), created: c})
	}
	return ls, never
}

func (s *Series) samples() (post, ack []float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]float64(nil), s.postMS...), append([]float64(nil), s.ackMS...)
}

// Distances summarises pickup distances in metres: the mean and nearest-rank p50 and p95.
type Distances struct {
	N    int     `json:"n"`
	Mean float64 `json:"mean_m"`
	P50  float64 `json:"p50_m"`
	P95  float64 `json:"p95_m"`
}

// pickups summarises the pickup distance of every offer received.
func (s *Series) pickups() Distances {
	s.mu.Lock()
	xs := append([]float64(nil), s.pickupM...)
	s.mu.Unlock()
	if len(xs) == 0 {
		return Distances{}
	}
	sort.Float64s(xs)
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	return Distances{N: len(xs), Mean: math.Round(sum / float64(len(xs))), P50: Percentile(xs, 50), P95: Percentile(xs, 95)}
}
