package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Cities knows the service areas: which city, if any, a point lies in. Adding a city is data
// (its area and its tariff), not code. Implementations are read-only once built and safe for
// concurrent use.
type Cities interface {
	// CityAt names the city whose service area holds the point; ok is false outside every one.
	CityAt(lat, lng float64) (id string, ok bool)
	// Area is a city's service area as a GeoJSON MultiPolygon; ok is false for an unknown city.
	Area(id string) (area json.RawMessage, ok bool)
}

// City is a city as GET /v1/cities shows it.
type City struct {
	ID            string          `json:"id"`
	Name          string          `json:"name"`
	TariffVersion string          `json:"tariff_version"`
	Area          json.RawMessage `json:"area"`
}

// Cities lists the cities served: those with a tariff and a service area, by id.
func (s *Service) Cities() []City {
	out := []City{}
	if s.opts.Cities == nil || s.opts.Tariffs == nil {
		return out
	}
	for id, t := range s.opts.Tariffs.Cities {
		if area, ok := s.opts.Cities.Area(id); ok {
			out = append(out, City{ID: id, Name: t.Name, TariffVersion: s.opts.Tariffs.Version, Area: area})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// tariffAt is the tariff of the city whose service area holds p: ErrOutOfServiceArea outside
// every one. A Service without Cities prices everything with its one Tariff (tests, tools).
func (s *Service) tariffAt(p Place) (Tariff, error) {
	if s.opts.Cities == nil {
		return s.opts.Tariff, nil
	}
	id, ok := s.opts.Cities.CityAt(p.Lat, p.Lng)
	if !ok {
		return Tariff{}, fmt.Errorf("pickup %.5f,%.5f: %w", p.Lat, p.Lng, ErrOutOfServiceArea)
	}
	t, err := s.opts.Tariffs.For(id)
	if err != nil {
		// The wiring checks every area has a tariff; this is a configuration bug, not the client's.
		return Tariff{}, fmt.Errorf("city %s has an area but no tariff: %v", id, err)
	}
	return t, nil
}

// tariffOf is the tariff a booking was priced with: its city's, or the Service's one Tariff
// for a booking made before cities (or by a Service without them).
func (s *Service) tariffOf(b Booking) Tariff {
	if b.City != "" && s.opts.Tariffs != nil {
		if t, err := s.opts.Tariffs.For(b.City); err == nil {
			return t
		}
	}
	return s.opts.Tariff
}

// QuoteTTL is how long a quote's surge holds for a booking that names its quote_id.
const QuoteTTL = 5 * time.Minute

// Quote is a price given to a customer: its surge holds for a booking made with its ID until
// ExpiresAt.
type Quote struct {
	ID         string    `json:"quote_id"`
	CustomerID string    `json:"-"`
	City       string    `json:"city"`
	Surge      float64   `json:"surge"`
	Pickup     Place     `json:"-"`
	Fare       Fare      `json:"fare"`
	CreatedAt  time.Time `json:"-"`
	ExpiresAt  time.Time `json:"expires_at"`
}

// QuoteStore keeps quotes for QuoteTTL (a booking may be made through another process).
type QuoteStore interface {
	SaveQuote(ctx context.Context, q Quote) error
	// Quote returns a quote, or ErrNotFound.
	Quote(ctx context.Context, id string) (Quote, error)
}

// quoteMaxMoveM is how far a booking's pickup may be from its quote's and keep its surge: a
// quote prices a market, not a whole city.
const quoteMaxMoveM = 1000

// quotedSurge is the surge a booking made with quote_id id keeps. An unknown quote (or another
// customer's) is ErrInvalid; an expired one, or one for a pickup elsewhere, ErrConflict: the
// customer asks for a new quote and sees the price before booking (we never re-price silently).
func (s *Service) quotedSurge(ctx context.Context, a Actor, id string, city string, p Place, now time.Time) (float64, error) {
	if s.opts.Quotes == nil {
		return 0, fmt.Errorf("quote_id %q: quotes are not kept here: %w", id, ErrInvalid)
	}
	if len(id) > 64 {
		return 0, fmt.Errorf("quote_id longer than 64 characters: %w", ErrInvalid)
	}
	q, err := s.opts.Quotes.Quote(ctx, id)
	if err != nil {
		if KindOf(err) == NotFound {
			return 0, fmt.Errorf("unknown quote_id %q: %w", id, ErrInvalid)
		}
		return 0, err
	}
	if q.CustomerID != a.ID {
		return 0, fmt.Errorf("unknown quote_id %q: %w", id, ErrInvalid)
	}
	if !now.Before(q.ExpiresAt) {
		return 0, fmt.Errorf("quote %s expired at %s; ask for a new quote: %w", id, q.ExpiresAt.UTC().Format(time.RFC3339), ErrConflict)
	}
	if q.City != city || DistanceM(q.Pickup.Lat, q.Pickup.Lng, p.Lat, p.Lng) > quoteMaxMoveM {
		return 0, fmt.Errorf("quote %s was for a pickup more than %d m away; ask for a new quote: %w", id, quoteMaxMoveM, ErrConflict)
	}
	return q.Surge, nil
}

// IdempotentBookings is what a BookingStore may also offer: the booking first made under a
// customer's idempotency key (found == false when none; ErrIdempotencyMismatch when it was made
// with another request).
type IdempotentBookings interface {
	BookingByIdempotencyKey(ctx context.Context, customerID, key, requestHash string) (b Booking, found bool, err error)
}

// replay is the booking a retry of a request stands for, when the store can say.
func (s *Service) replay(ctx context.Context, a Actor, key, hash string) (Booking, bool, error) {
	st, ok := s.store.(IdempotentBookings)
	if !ok {
		return Booking{}, false, nil
	}
	return st.BookingByIdempotencyKey(ctx, a.ID, key, hash)
}

// Invoice is an issued invoice: its number is the next of its series, without gaps.
type Invoice struct {
	No        string
	BookingID string
	City      string
	IssuedAt  time.Time
	Fare      Fare
}

// InvoiceStore issues invoice numbers. Safe for concurrent use by many processes.
type InvoiceStore interface {
	// IssueInvoice returns the booking's invoice, first issuing it, when it has none, as the
	// next number of series (series + "/" + six digits) in the same transaction that moves the
	// series' counter: numbers of a series are 1, 2, 3... with no gap and no repeat whatever
	// runs concurrently or fails.
	IssueInvoice(ctx context.Context, bookingID, city, series string, fare Fare, at time.Time) (Invoice, error)
}

// Receipt is GET /v1/bookings/{id}/receipt (API.md v1.1).
type Receipt struct {
	BookingID  string    `json:"booking_id"`
	City       string    `json:"city"`
	CityName   string    `json:"city_name"`
	CustomerID string    `json:"customer_id"`
	IssuedAt   time.Time `json:"issued_at"`
	Fare       Fare      `json:"fare"`
	GSTIN      string    `json:"gstin,omitempty"`
	InvoiceNo  string    `json:"invoice_no"`
}

// Receipt is the receipt of a completed or charged booking, for its customer and staff, its
// invoice issued on first asking. A booking with nothing charged is ErrConflict.
func (s *Service) Receipt(ctx context.Context, a Actor, id string) (Receipt, error) {
	b, err := s.store.Booking(ctx, id)
	if err != nil {
		return Receipt{}, err
	}
	if !a.Staff() && !(a.Role == "customer" && b.CustomerID == a.ID) {
		return Receipt{}, fmt.Errorf("booking %s: %w", id, ErrNotFound)
	}
	if !b.Charged() {
		return Receipt{}, fmt.Errorf("booking %s is %s with nothing charged: no receipt: %w", id, b.Status, ErrConflict)
	}
	if s.opts.Invoices == nil {
		return Receipt{}, fmt.Errorf("receipts: no invoice store: %w", ErrUnavailable)
	}
	t := s.tariffOf(b)
	city := b.City
	if city == "" {
		city = t.City
	}
	inv, err := s.opts.Invoices.IssueInvoice(ctx, b.ID, city, InvoiceSeries(t, s.opts.Now()), b.Fare, s.opts.Now())
	if err != nil {
		return Receipt{}, err
	}
	return Receipt{BookingID: b.ID, City: city, CityName: t.Name, CustomerID: b.CustomerID, IssuedAt: inv.IssuedAt,
		Fare: inv.Fare, GSTIN: t.GSTIN, InvoiceNo: inv.No}, nil
}

// InvoiceSeries is the series of a city's invoices issued at `at`: its prefix and the Indian
// financial year (April to March, IST) as "2627" for 2026-27. GST wants invoice numbers
// consecutive and unique within a financial year, at most 16 characters of letters, digits, -
// and /: PREFIX/2627/000001 is at most 16 with a 4-letter prefix.
func InvoiceSeries(t Tariff, at time.Time) string {
	prefix := t.InvoicePrefix
	if prefix == "" {
		prefix = defaultInvoicePrefix(t.City)
	}
	d := at.In(ist)
	y := d.Year()
	if d.Month() < time.April {
		y--
	}
	return fmt.Sprintf("%s/%02d%02d", prefix, y%100, (y+1)%100)
}

func defaultInvoicePrefix(city string) string {
	p := strings.ToUpper(city)
	var out []byte
	for i := 0; i < len(p) && len(out) < 3; i++ {
		if c := p[i]; c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return "INV"
	}
	return string(out)
}

func validInvoicePrefix(p string) bool {
	if len(p) > 4 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
