package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// The published steps of the shipped cities (tariffs.json): from a load (requests per available
// driver) of 1.5 ×1.2, 2 ×1.5, 3 ×1.75, 4 ×2; at least 3 requests; a step is held down to 80% of
// its threshold (hysteresis 20%).
func TestSurgeLevel(t *testing.T) {
	p := mustTariff(t, "bengaluru").Surge
	for _, tc := range []struct {
		name                 string
		prev, supply, demand int
		want                 int
	}{
		{"twice the demand of its supply surges", -1, 2, 4, 1}, // 4/2 = 2 >= 2: ×1.5
		{"demand equal to supply does not", -1, 4, 4, -1},      // 4/4 = 1 < 1.5
		{"just under the first step", -1, 10, 14, -1},          // 1.4 < 1.5
		{"the first step", -1, 10, 15, 0},                      // 1.5 >= 1.5: ×1.2
		{"too few requests never surge", -1, 0, 2, -1},         // 2 < min_demand 3
		{"no driver counts as one", -1, 0, 3, 2},               // 3/max(0,1) = 3: ×1.75
		{"the top step", -1, 1, 10, 3},                         // 10 >= 4: ×2
		{"no demand", 2, 5, 0, -1},                             // nothing asked, nothing to hold
		{"held above 80% of the step", 1, 10, 17, 1},           // 1.7 >= 2 × 0.8 = 1.6: keeps ×1.5
		{"dropped below 80% of the step", 1, 10, 15, 0},        // 1.5 < 1.6; 1.5 reaches the first step
		{"held at the top", 3, 10, 33, 3},                      // 3.3 >= 4 × 0.8 = 3.2
		{"falls through the holds", 3, 4, 5, 0},                // 1.25: < 3.2, < 2.4, < 1.6, >= 1.2 (1.5 × 0.8)
		{"falls to none", 0, 10, 11, -1},                       // 1.1 < 1.2
		{"climbs at once", 0, 1, 9, 3},                         // 9 >= 4: up immediately
		{"under min demand drops whatever was held", 3, 0, 2, -1},
		{"a level beyond the steps is the top", 9, 1, 10, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Level(tc.prev, tc.supply, tc.demand); got != tc.want {
				t.Errorf("Level(prev %d, supply %d, demand %d): got %d, want %d", tc.prev, tc.supply, tc.demand, got, tc.want)
			}
		})
	}
}

// A load wavering around a threshold does not flap the price: 2.0, 1.8, 2.1, 1.7, 1.9 all
// stay at ×1.5 once it was reached; only 1.5 leaves it.
func TestSurgeDoesNotFlap(t *testing.T) {
	p := mustTariff(t, "bengaluru").Surge
	level := -1
	for i, demand := range []int{20, 18, 21, 17, 19, 15} {
		level = p.Level(level, 10, demand)
		want := 1
		if i == 5 {
			want = 0
		}
		if level != want {
			t.Fatalf("step %d (load %.1f): got level %d, want %d", i, float64(demand)/10, level, want)
		}
	}
}

// The cap holds: a city's tariff caps its steps.
func TestSurgeCap(t *testing.T) {
	for _, tc := range []struct {
		city  string
		level int
		want  float64
	}{
		{"bengaluru", 3, 2},   // step ×2, cap 2.0
		{"pune", 3, 1.75},     // step ×2, cap 1.75
		{"pune", 2, 1.75},     // step ×1.75, cap 1.75
		{"chennai", 3, 1.8},   // step ×2, cap 1.8
		{"delhi", 1, 1.5},     // under the cap
		{"mumbai", -1, 1},     // no step
		{"hyderabad", 7, 1},   // no such step
		{"bengaluru", 0, 1.2}, // the first step
		{"bengaluru", -5, 1},  // nonsense: none
		{"hyderabad", 3, 2},   // step ×2, cap 2.0
	} {
		if got := mustTariff(t, tc.city).Multiplier(tc.level); got != tc.want {
			t.Errorf("%s level %d: got ×%g, want ×%g", tc.city, tc.level, got, tc.want)
		}
	}
}

// Surged fares still add up: the surge line is on the time charges only, GST on everything.
func TestSurgedFareAddsUp(t *testing.T) {
	for _, tc := range []struct {
		name  string
		city  string
		surge float64
		want  []wantLine
		total int64
	}{
		// Bengaluru 2 h by day at ×1.5: base 39900; surge 39900 × 0.5 = 19950; fee 4900;
		// subtotal 64750; GST 18% = 11655; total 76405.
		{"bengaluru ×1.5", "bengaluru", 1.5, []wantLine{{"base", 39900}, {"surge", 19950}, {"convenience_fee", 4900}, {"gst", 11655}}, 76405},
		// Pune 2 h by day at its cap ×1.75 (a ×2 step capped): base 34900; surge 34900 × 0.75 =
		// 26175; fee 3900; subtotal 64975; GST 64975 × 0.18 = 11695.5, half up 11696; total 76671.
		{"pune at its cap", "pune", 2, []wantLine{{"base", 34900}, {"surge", 26175}, {"convenience_fee", 3900}, {"gst", 11696}}, 76671},
		// Surge off: base 39900, fee 4900, subtotal 44800, GST 8064, total 52864.
		{"surge off", "bengaluru", 1, []wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}}, 52864},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := mustTariff(t, tc.city)
			f := tr.Estimate(at(0, 10, 0, 0), 2, min(tc.surge, tr.SurgeCap))
			if got, want := lineString(f.Lines), wantString(tc.want); got != want || f.TotalPaise != tc.total {
				t.Errorf("got %s = %d, want %s = %d", got, f.TotalPaise, want, tc.total)
			}
			var sum int64
			for _, l := range f.Lines {
				sum += l.AmountPaise
			}
			if sum != f.TotalPaise {
				t.Errorf("lines add up to %d, total %d", sum, f.TotalPaise)
			}
		})
	}
}

// Cancellation under Bengaluru's policy: free for 5 minutes after the assignment, and while
// the start is more than 120 minutes away; then ₹75 (7500); after the driver arrived ₹150
// (15000); GST 18% on the fee. In progress: the started hours used, at least the base 2 h.
func TestCancelCharge(t *testing.T) {
	blr := mustTariff(t, "bengaluru")
	start := at(0, 10, 0, 0)
	ptr := func(t time.Time) *time.Time { return &t }
	customer := Actor{ID: "c1", Role: "customer"}
	driver := Actor{ID: "d1", Role: "driver"}
	staff := Actor{ID: "x", Role: "dispatcher"}
	for _, tc := range []struct {
		name  string
		b     Booking
		by    Actor
		at    time.Time
		fee   int64
		want  []wantLine // nil: free
		total int64
	}{
		{"searching: free", Booking{Status: StatusSearching, StartAt: start}, customer, start, 0, nil, 0},
		{"scheduled: free", Booking{Status: StatusScheduled, StartAt: start.Add(24 * time.Hour)}, customer, start, 0, nil, 0},
		// Assigned at 10:00, cancelled 10:03: inside the 5-minute grace.
		{"assigned, within the grace", Booking{Status: StatusAssigned, StartAt: start, AssignedAt: ptr(start)}, customer, start.Add(3 * time.Minute), 0, nil, 0},
		// Exactly 5 minutes is still the grace.
		{"assigned, at the end of the grace", Booking{Status: StatusAssigned, StartAt: start, AssignedAt: ptr(start)}, customer, start.Add(5 * time.Minute), 0, nil, 0},
		// 6 minutes: fee 7500, GST 7500 × 0.18 = 1350, total 8850.
		{"assigned, past the grace", Booking{Status: StatusAssigned, StartAt: start, AssignedAt: ptr(start)}, customer, start.Add(6 * time.Minute), 7500,
			[]wantLine{{"cancellation_fee", 7500}, {"gst", 1350}}, 8850},
		// Booked for 13:00, assigned at 10:00, cancelled at 10:30: still 150 min ahead (> 120): free.
		{"assigned ahead of a far start", Booking{Status: StatusAssigned, StartAt: start.Add(3 * time.Hour), AssignedAt: ptr(start)}, customer, start.Add(30 * time.Minute), 0, nil, 0},
		// Arrived: 15000, GST 2700, total 17700, grace or not.
		{"arrived", Booking{Status: StatusArrived, StartAt: start, AssignedAt: ptr(start.Add(-time.Minute))}, customer, start, 15000,
			[]wantLine{{"cancellation_fee", 15000}, {"gst", 2700}}, 17700},
		{"arrived, the driver cancels: never the customer's", Booking{Status: StatusArrived, StartAt: start, AssignedAt: ptr(start)}, driver, start.Add(time.Hour), 0, nil, 0},
		{"assigned, the driver cancels", Booking{Status: StatusAssigned, StartAt: start, AssignedAt: ptr(start)}, driver, start.Add(time.Hour), 0, nil, 0},
		{"arrived, a dispatcher cancels: the business's", Booking{Status: StatusArrived, StartAt: start}, staff, start, 0, nil, 0},
		// Started 10:00, cancelled 11:10 of a 4 h booking: 70 min is 2 started hours, the base
		// covers them: base 39900, fee 4900, subtotal 44800, GST 8064, total 52864.
		{"in progress, 70 min of 4 h", Booking{Status: StatusInProgress, StartAt: start, StartedAt: ptr(start), Hours: 4}, customer, start.Add(70 * time.Minute), 0,
			[]wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}}, 52864},
		// 3 h 05 min of a 4 h booking at ×1.5: 4 started hours: base 39900 + 2 × 14900 = 69700;
		// surge 69700 × 0.5 = 34850; fee 4900; subtotal 109450; GST 19701; total 129151.
		{"in progress, 3 h 05 at ×1.5", Booking{Status: StatusInProgress, StartAt: start, StartedAt: ptr(start), Hours: 4, Surge: 1.5}, customer, start.Add(185 * time.Minute), 0,
			[]wantLine{{"base", 39900}, {"extra_hours", 29800}, {"surge", 34850}, {"convenience_fee", 4900}, {"gst", 19701}}, 129151},
		// The same trip ended by a dispatcher is billed the same: the time was used.
		{"in progress, a dispatcher ends it", Booking{Status: StatusInProgress, StartAt: start, StartedAt: ptr(start), Hours: 4}, staff, start.Add(70 * time.Minute), 0,
			[]wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}}, 52864},
		// 21:30 to 22:40: 2 started hours in the base; night 22:00-22:40 is 40 min × 150 = 6000;
		// fee 4900; subtotal 50800; GST 9144; total 59944.
		{"in progress into the night", Booking{Status: StatusInProgress, StartAt: at(0, 21, 30, 0), StartedAt: ptr(at(0, 21, 30, 0)), Hours: 3}, customer, at(0, 22, 40, 0), 0,
			[]wantLine{{"base", 39900}, {"night", 6000}, {"convenience_fee", 4900}, {"gst", 9144}}, 59944},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ch := blr.CancelCharge(tc.b, tc.by, tc.at)
			if tc.want == nil {
				if ch.Fare != nil || ch.FeePaise != 0 || ch.Why != "" {
					t.Errorf("got %+v, want free", ch)
				}
				return
			}
			if ch.Fare == nil {
				t.Fatalf("got free, want %s", wantString(tc.want))
			}
			if got, want := lineString(ch.Fare.Lines), wantString(tc.want); got != want || ch.Fare.TotalPaise != tc.total || ch.FeePaise != tc.fee {
				t.Errorf("got %s = %d (fee %d), want %s = %d (fee %d)", got, ch.Fare.TotalPaise, ch.FeePaise, want, tc.total, tc.fee)
			}
			if ch.Why == "" {
				t.Errorf("got no reason for the audit trail")
			}
		})
	}
	// A city without a policy charges no fee, but still bills a trip under way.
	none := blr
	none.Cancellation = CancellationPolicy{}
	if ch := none.CancelCharge(Booking{Status: StatusArrived, StartAt: start}, customer, start); ch.Fare != nil {
		t.Errorf("no policy, arrived: got %+v, want free", ch)
	}
}

func TestInvoiceSeries(t *testing.T) {
	blr := mustTariff(t, "bengaluru")
	for _, tc := range []struct {
		at   time.Time
		want string
	}{
		{time.Date(2026, 3, 31, 23, 0, 0, 0, testIST), "BLR/2526"},  // FY 2025-26 ends 31 March
		{time.Date(2026, 4, 1, 0, 30, 0, 0, testIST), "BLR/2627"},   // and 2026-27 begins
		{time.Date(2026, 3, 31, 19, 0, 0, 0, time.UTC), "BLR/2627"}, // 00:30 IST on 1 April, though March in UTC
		{time.Date(2099, 12, 31, 0, 0, 0, 0, testIST), "BLR/9900"},
	} {
		if got := InvoiceSeries(blr, tc.at); got != tc.want {
			t.Errorf("InvoiceSeries(%s): got %s, want %s", tc.at, got, tc.want)
		}
	}
	if got := InvoiceSeries(Tariff{City: "new-town"}, time.Date(2026, 5, 1, 0, 0, 0, 0, testIST)); got != "NEW/2627" {
		t.Errorf("default prefix: got %s, want NEW/2627", got)
	}
}

func TestTariffMoneyFieldsValidate(t *testing.T) {
	base := mustTariff(t, "bengaluru")
	for name, mod := range map[string]func(*Tariff){
		"steps not rising":     func(t *Tariff) { t.Surge.Steps[1].Ratio = 1.4 },
		"step multiplier 1":    func(t *Tariff) { t.Surge.Steps[0].Multiplier = 1 },
		"window 0":             func(t *Tariff) { t.Surge.WindowMinutes = 0 },
		"hysteresis 95":        func(t *Tariff) { t.Surge.HysteresisPercent = 95 },
		"negative fee":         func(t *Tariff) { t.Cancellation.ArrivedFeePaise = -1 },
		"grace a day":          func(t *Tariff) { t.Cancellation.GraceMinutes = 1440 },
		"prefix too long":      func(t *Tariff) { t.InvoicePrefix = "BENGALURU" },
		"prefix lower case":    func(t *Tariff) { t.InvoicePrefix = "blr" },
		"gstin too long":       func(t *Tariff) { t.GSTIN = "29AAAAA0000A1Z5XX" },
		"min demand 0 w/steps": func(t *Tariff) { t.Surge.MinDemand = 0 },
	} {
		tr := base
		tr.Surge.Steps = append([]SurgeStep(nil), base.Surge.Steps...)
		mod(&tr)
		if err := tr.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
}

// fakeBookings is the part of a BookingStore the quote and booking paths use.
type fakeBookings struct {
	BookingStore
	made []NewBooking
}

func (f *fakeBookings) CreateBooking(_ context.Context, nb NewBooking) (Booking, bool, error) {
	f.made = append(f.made, nb)
	return Booking{ID: nb.ID, City: nb.City, Surge: nb.Surge, Fare: nb.Fare}, true, nil
}

type fakeQuotes map[string]Quote

func (f fakeQuotes) SaveQuote(_ context.Context, q Quote) error { f[q.ID] = q; return nil }
func (f fakeQuotes) Quote(_ context.Context, id string) (Quote, error) {
	q, ok := f[id]
	if !ok {
		return Quote{}, ErrNotFound
	}
	return q, nil
}

type oneCity struct{ id string }

func (c oneCity) CityAt(lat, lng float64) (string, bool) { return c.id, lat > 0 }
func (c oneCity) Area(string) (json.RawMessage, bool)    { return nil, false }

// fakeMarket has a fixed load and remembers the level set.
type fakeMarket struct {
	supply, demand, level int
	sets                  int
}

func (m *fakeMarket) Load(context.Context, float64, float64, time.Duration, time.Time) (MarketLoad, error) {
	return MarketLoad{Cell: "c", Supply: m.supply, Demand: m.demand, Level: m.level}, nil
}
func (m *fakeMarket) SetLevel(_ context.Context, _ string, level int, _ float64, _ time.Duration) error {
	m.level, m.sets = level, m.sets+1
	return nil
}
func (m *fakeMarket) AddDemand(context.Context, string, float64, float64, time.Time) error {
	m.demand++
	return nil
}

// A quote's surge holds for a booking within 5 minutes; after, the booking is refused (the
// customer asks again and sees the new price); someone else's quote is unknown.
func TestQuoteHonouredThenRefused(t *testing.T) {
	now := at(0, 10, 0, 0)
	clock := func() time.Time { return now }
	store, quotes, market := &fakeBookings{}, fakeQuotes{}, &fakeMarket{supply: 2, demand: 4, level: -1}
	svc := NewService(store, nil, nil, ServiceOptions{Cities: oneCity{"pune"}, Tariffs: DefaultTariffs(),
		Market: market, Quotes: quotes, Now: clock})
	c := Actor{ID: "c1", Role: "customer"}
	req := BookingRequest{Pickup: Place{Lat: 18.52, Lng: 73.85}, Hours: 2}
	q, err := svc.Quote(context.Background(), c, req)
	// Pune 2 h by day at ×1.5 (4 requests for 2 drivers): base 34900, surge 17450, fee 3900,
	// subtotal 56250, GST 10125, total 66375.
	if err != nil || q.Surge != 1.5 || q.City != "pune" || q.Fare.TotalPaise != 66375 || q.ID == "" || !q.ExpiresAt.Equal(now.Add(5*time.Minute)) {
		t.Fatalf("Quote: got %+v, %v; want pune ×1.5 for 66375 with an id for 5 minutes", q, err)
	}
	if _, err := svc.Quote(context.Background(), c, BookingRequest{Pickup: Place{Lat: -1, Lng: 73}, Hours: 2}); !errors.Is(err, ErrOutOfServiceArea) {
		t.Errorf("quote outside: got %v, want ErrOutOfServiceArea", err)
	}

	// The market calms down; a booking within 5 minutes with the quote keeps ×1.5.
	market.supply, market.demand, market.level = 10, 0, -1
	now = now.Add(4 * time.Minute)
	req.Car.Transmission = Manual
	req.QuoteID = q.ID
	b, _, err := svc.CreateBooking(context.Background(), c, req, "k1", "h1")
	if err != nil || b.Surge != 1.5 || b.Fare.TotalPaise != 66375 || b.City != "pune" {
		t.Errorf("booking with the quote: got %+v, %v; want ×1.5 for 66375 in pune", b, err)
	}
	// Without the quote it is priced now: no surge. Base 34900, fee 3900, GST 6984: 45784.
	req.QuoteID = ""
	if b, _, err = svc.CreateBooking(context.Background(), c, req, "k2", "h2"); err != nil || b.Surge != 1 || b.Fare.TotalPaise != 45784 {
		t.Errorf("booking without a quote: got surge %g total %d, %v; want 1 and 45784", b.Surge, b.Fare.TotalPaise, err)
	}
	// 5 minutes after the quote: refused, and nothing booked.
	now = now.Add(time.Minute)
	req.QuoteID = q.ID
	made := len(store.made)
	if _, _, err := svc.CreateBooking(context.Background(), c, req, "k3", "h3"); !errors.Is(err, ErrConflict) {
		t.Errorf("booking with an expired quote: got %v, want ErrConflict", err)
	}
	if _, _, err := svc.CreateBooking(context.Background(), Actor{ID: "c2", Role: "customer"}, req, "k4", "h4"); !errors.Is(err, ErrInvalid) {
		t.Errorf("booking with another customer's quote: got %v, want ErrInvalid", err)
	}
	req.QuoteID = "qt_nope"
	if _, _, err := svc.CreateBooking(context.Background(), c, req, "k5", "h5"); !errors.Is(err, ErrInvalid) {
		t.Errorf("booking with an unknown quote: got %v, want ErrInvalid", err)
	}
	if len(store.made) != made {
		t.Errorf("refused bookings were stored: got %d, want %d", len(store.made), made)
	}
}
