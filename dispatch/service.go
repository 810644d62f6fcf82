package dispatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"time"

	"github.com/rs/zerolog"
)

// Actor is who asks for an action: the subject and role of a verified token.
type Actor struct {
	ID   string
	Role string // driver, customer, dispatcher, admin
}

func (a Actor) String() string { return a.Role + ":" + a.ID }

// Staff reports whether the actor may see and act on every booking.
func (a Actor) Staff() bool { return a.Role == "dispatcher" || a.Role == "admin" }

// Notifier delivers messages to a driver's socket wherever it is connected (at most once;
// what matters is also in the store and sent again on reconnect).
type Notifier interface {
	ToDriver(ctx context.Context, driverID, typ string, data any) error
}

// ServiceOptions configure a Service.
type ServiceOptions struct {
	// Tariff prices every booking when Cities is nil; with Cities it prices bookings made
	// before cities existed (they have no city).
	Tariff Tariff
	// Cities and Tariffs: a pickup's service area picks its city and the city's tariff (both
	// or neither; nil: one Tariff everywhere).
	Cities  Cities
	Tariffs *Tariffs
	// Market measures supply and demand for surge (nil: never any surge).
	Market Market
	// Quotes keeps quotes so a booking can hold its quote's surge (nil: quotes have no id).
	Quotes QuoteStore
	// Invoices numbers receipts (nil: no receipts).
	Invoices InvoiceStore
	// ScheduleLead: a booking starting further ahead than this is scheduled, not searched now.
	ScheduleLead time.Duration
	// MaxAhead is how far ahead a booking may start.
	MaxAhead time.Duration
	// Trails, when set, gives each completed trip its route (nil: trips are recorded without one).
	Trails Trails
	// Offers, when set, tells the matchers of offers closed here (declined, revoked), so that
	// their bookings are offered again at once rather than at the matchers' next sweep.
	Offers OfferEvents
	// People keeps drivers' profiles, calendars, ratings and OTP tries (default: the
	// BookingStore, when it implements PeopleStore).
	People PeopleStore
	Now    func() time.Time
	// Log receives the errors a call goes on without (a best-effort step: freeing a lease, a
	// driver's state, a trail, the market's figures), at warn. The zero Logger logs nothing.
	Log zerolog.Logger
}

// Service carries out the actions of customers, drivers and dispatchers under the rules of the
// state machine. It is stateless beyond its dependencies and safe for concurrent use; every
// change goes through BookingStore.Transition, so two processes may serve the same booking.
type Service struct {
	store  BookingStore
	loc    Locator
	notify Notifier
	opts   ServiceOptions
	// resumes batches drivers' hellos when the store can (ResumeReader); nil: one read each.
	resumes *resumeBatch
}

// NewService returns a Service.
func NewService(store BookingStore, loc Locator, notify Notifier, opts ServiceOptions) *Service {
	if opts.Tariff.BasePaise == 0 {
		opts.Tariff = DefaultTariff()
	}
	if opts.ScheduleLead <= 0 {
		opts.ScheduleLead = 45 * time.Minute
	}
	if opts.MaxAhead <= 0 {
		opts.MaxAhead = 7 * 24 * time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if ps, ok := store.(PeopleStore); ok && opts.People == nil {
		opts.People = ps
	}
	s := &Service{store: store, loc: loc, notify: notify, opts: opts}
	if rr, ok := store.(ResumeReader); ok {
		s.resumes = &resumeBatch{read: rr.ResumeMany}
	}
	return s
}

// BookingRequest is a customer's request for a booking (API.md POST /v1/bookings).
type BookingRequest struct {
	Pickup  Place      `json:"pickup"`
	Hours   int        `json:"hours"`
	StartAt *time.Time `json:"start_at,omitempty"`
	Car     Car        `json:"car"`
	// QuoteID, when set, holds the surge of that quote (of this customer, at most QuoteTTL old).
	QuoteID string `json:"quote_id,omitempty"`
}

// Validate checks a request; errors wrap ErrInvalid and say what is wrong.
func (r BookingRequest) Validate(now time.Time, maxAhead time.Duration) error {
	switch {
	case r.Pickup.Lat < -90 || r.Pickup.Lat > 90 || r.Pickup.Lat != r.Pickup.Lat:
		return fmt.Errorf("pickup.lat must be within [-90, 90]: %w", ErrInvalid)
	case r.Pickup.Lng < -180 || r.Pickup.Lng > 180 || r.Pickup.Lng != r.Pickup.Lng:
		return fmt.Errorf("pickup.lng must be within [-180, 180]: %w", ErrInvalid)
	case r.Pickup.Lat == 0 && r.Pickup.Lng == 0:
		return fmt.Errorf("pickup is required: %w", ErrInvalid)
	case len(r.Pickup.Address) > 500:
		return fmt.Errorf("pickup.address longer than 500 characters: %w", ErrInvalid)
	case r.Hours < 1 || r.Hours > 24:
		return fmt.Errorf("hours must be 1 to 24: %w", ErrInvalid)
	case r.Car.Transmission != Manual && r.Car.Transmission != Automatic:
		return fmt.Errorf(`car.transmission must be "manual" or "automatic": %w`, ErrInvalid)
	}
	if r.StartAt != nil {
		if r.StartAt.Before(now.Add(-5 * time.Minute)) {
			return fmt.Errorf("start_at is in the past: %w", ErrInvalid)
		}
		if r.StartAt.After(now.Add(maxAhead)) {
			return fmt.Errorf("start_at more than %s ahead: %w", maxAhead, ErrInvalid)
		}
	}
	return nil
}

// Quote prices a request without booking it, with the surge of the pickup's market now. The
// car is optional in a quote (manual when absent: the price does not depend on it). With a
// QuoteStore the quote gets an id a booking can name within QuoteTTL to keep its surge.
func (s *Service) Quote(ctx context.Context, a Actor, r BookingRequest) (Quote, error) {
	now := s.opts.Now().UTC().Truncate(time.Millisecond)
	if r.Car.Transmission == "" {
		r.Car.Transmission = Manual
	}
	if err := r.Validate(now, s.opts.MaxAhead); err != nil {
		return Quote{}, err
	}
	t, err := s.tariffAt(r.Pickup)
	if err != nil {
		return Quote{}, err
	}
	start := now
	if r.StartAt != nil {
		start = *r.StartAt
	}
	surge := s.surge(ctx, t, r.Pickup)
	q := Quote{City: t.City, Surge: surge, Pickup: r.Pickup, Fare: t.Estimate(start, r.Hours, surge),
		CustomerID: a.ID, CreatedAt: now}
	if s.opts.Quotes != nil {
		q.ID, q.ExpiresAt = NewID("qt"), now.Add(QuoteTTL)
		if err := s.opts.Quotes.SaveQuote(ctx, q); err != nil {
			return Quote{}, err
		}
	}
	return q, nil
}

// CreateBooking books a driver for a customer. idemKey and requestHash make a retry safe.
func (s *Service) CreateBooking(ctx context.Context, a Actor, r BookingRequest, idemKey, requestHash string) (Booking, bool, error) {
	if a.Role != "customer" {
		return Booking{}, false, fmt.Errorf("only customers book: %w", ErrForbidden)
	}
	now := s.opts.Now().UTC().Truncate(time.Millisecond)
	if err := r.Validate(now, s.opts.MaxAhead); err != nil {
		return Booking{}, false, err
	}
	if idemKey == "" || len(idemKey) > 200 {
		return Booking{}, false, fmt.Errorf("Idempotency-Key header of 1 to 200 characters is required: %w", ErrInvalid)
	}
	start := now
	if r.StartAt != nil {
		start = r.StartAt.UTC().Truncate(time.Millisecond)
	}
	t, err := s.tariffAt(r.Pickup)
	if err != nil {
		return Booking{}, false, err
	}
	var surge float64
	if r.QuoteID != "" {
		if surge, err = s.quotedSurge(ctx, a, r.QuoteID, t.City, r.Pickup, now); err != nil {
			// A retry of a booking made while its quote held answers that booking, as any
			// retry does, even once the quote has expired.
			if b, found, rerr := s.replay(ctx, a, idemKey, requestHash); found || rerr != nil {
				return b, false, rerr
			}
			return Booking{}, false, err
		}
	} else {
		surge = s.surge(ctx, t, r.Pickup)
	}
	nb := NewBooking{
		ID:                  NewID("bk"),
		CustomerID:          a.ID,
		Pickup:              r.Pickup,
		Hours:               r.Hours,
		StartAt:             start,
		Scheduled:           start.Sub(now) > s.opts.ScheduleLead,
		Car:                 r.Car,
		OTP:                 newOTP(),
		Fare:                t.Estimate(start, r.Hours, surge),
		CreatedAt:           now,
		TravelBufferMinutes: t.TravelBufferMinutes,
		IdempotencyKey:      idemKey,
		RequestHash:         requestHash,
		City:                t.City,
		Surge:               surge,
	}
	b, created, err := s.store.CreateBooking(ctx, nb)
	if err != nil {
		return Booking{}, false, err
	}
	if created && s.opts.Market != nil {
		// Demand for the next quotes, off the request's path; a failure costs only accuracy.
		s.behind("count a booking's demand in its market", func(ctx context.Context) error {
			return s.opts.Market.AddDemand(ctx, b.ID, r.Pickup.Lat, r.Pickup.Lng, now)
		})
	}
	// The OTP reaches the customer once a driver is assigned (API.md), not while searching.
	return ViewFor(a, b), created, nil
}

// Booking returns a booking if the actor may see it; the OTP only to its customer.
func (s *Service) Booking(ctx context.Context, a Actor, id string) (Booking, error) {
	b, err := s.visible(ctx, a, id)
	if err != nil {
		return Booking{}, err
	}
	return ViewFor(a, b), nil
}

// visible returns the booking, whole (not ViewFor's), if the actor may see it. Not found rather
// than forbidden when it may not: do not reveal that someone else's booking exists.
func (s *Service) visible(ctx context.Context, a Actor, id string) (Booking, error) {
	b, err := s.store.Booking(ctx, id)
	if err != nil {
		return Booking{}, err
	}
	if !CanSee(a, b) {
		return Booking{}, fmt.Errorf("booking %s: %w", id, ErrNotFound)
	}
	return b, nil
}

// CanSee reports whether the actor may read the booking.
func CanSee(a Actor, b Booking) bool {
	switch a.Role {
	case "dispatcher", "admin":
		return true
	case "customer":
		return b.CustomerID == a.ID
	case "driver":
		return b.DriverID() == a.ID
	}
	return false
}

// ViewFor is the booking as the actor may see it.
func ViewFor(a Actor, b Booking) Booking {
	if a.Role == "customer" && b.CustomerID == a.ID && b.Driver != nil {
		return b
	}
	return b.Public()
}

// Bookings lists bookings: staff see all, customers and drivers their own.
func (s *Service) Bookings(ctx context.Context, a Actor, f BookingFilter, mine bool) ([]Booking, error) {
	switch a.Role {
	case "customer":
		f.CustomerID = a.ID
	case "driver":
		f.DriverID = a.ID
	case "dispatcher", "admin":
		// Staff have no bookings of their own; mine lists nothing for them.
		if mine {
			return []Booking{}, nil
		}
	default:
		return nil, ErrForbidden
	}
	if f.Limit <= 0 || f.Limit > 500 {
		f.Limit = 100
	}
	bs, err := s.store.Bookings(ctx, f)
	if err != nil {
		return nil, err
	}
	for i := range bs {
		bs[i] = ViewFor(a, bs[i])
	}
	return bs, nil
}

// Cancel cancels a booking before completion. A driver cancelling after accepting puts the
// booking back to searching (it goes first in line: it keeps its creation time).
func (s *Service) Cancel(ctx context.Context, a Actor, id, reason string) (Booking, error) {
	if len(reason) > 500 {
		return Booking{}, fmt.Errorf("reason longer than 500 characters: %w", ErrInvalid)
	}
	b, err := s.visible(ctx, a, id)
	if err != nil {
		return Booking{}, err
	}
	c := Change{BookingID: id, Version: b.Version, Actor: a.String(), Reason: reason, At: s.opts.Now()}
	if a.Role == "driver" {
		c.From = []Status{StatusAssigned, StatusArrived}
		c.To = StatusSearching
		c.Driver = &DriverRef{ID: a.ID}
		c.ClearDriver = true
	} else {
		c.To = StatusCancelled // from any state CanMove lets be cancelled (c.From empty)
		// Priced from the state read above; the version fence makes it the state cancelled.
		if ch := s.tariffOf(b).CancelCharge(b, a, c.At); ch.Fare != nil {
			c.Fare, c.CancellationFeePaise, c.Charge = ch.Fare, ch.FeePaise, ch.Why
		}
	}
	nb, err := s.store.Transition(ctx, c)
	if err != nil {
		return Booking{}, err
	}
	if d := b.DriverID(); d != "" {
		s.releaseDriver(ctx, d)
	}
	return ViewFor(a, nb), nil
}

// Assign is a dispatcher's manual assignment, under the same calendar rule as the matcher's: the
// driver must be allowed online (MayGoOnline) and the booking's block must fit their calendar.
func (s *Service) Assign(ctx context.Context, a Actor, id, driverID string) (Booking, error) {
	if !a.Staff() {
		return Booking{}, fmt.Errorf("only dispatchers assign: %w", ErrForbidden)
	}
	if driverID == "" {
		return Booking{}, fmt.Errorf("driver_id is required: %w", ErrInvalid)
	}
	d, err := s.store.Driver(ctx, driverID)
	if err != nil {
		return Booking{}, fmt.Errorf("driver %s: %w", driverID, err)
	}
	if err := d.MayGoOnline(s.opts.Now()); err != nil {
		return Booking{}, err
	}
	lease := NewID("as")
	ok, err := s.loc.Reserve(ctx, driverID, lease, 30*time.Second)
	if err != nil {
		return Booking{}, err
	}
	if !ok {
		return Booking{}, fmt.Errorf("driver %s is being offered another booking: %w", driverID, ErrConflict)
	}
	defer func() {
		if err := s.loc.Release(context.WithoutCancel(ctx), driverID, lease); err != nil {
			// The lease lapses by itself (30 s); until then no matcher offers this driver.
			s.opts.Log.Warn().Err(err).Str("driver", driverID).Str("booking", id).Msg("release the driver's lease after a manual assignment")
		}
	}()
	ref := d.Ref()
	b, err := s.store.Transition(ctx, Change{BookingID: id, From: []Status{StatusScheduled, StatusSearching},
		To: StatusAssigned, Driver: &ref, Actor: a.String(), Reason: "manual assignment", At: s.opts.Now()})
	if err != nil {
		return Booking{}, err
	}
	s.holdDriver(ctx, driverID, b)
	return b.Public(), nil
}

// Accept is a driver accepting its offer. Accepting an offer already accepted by the same
// driver answers the booking again (harmless); anything else that cannot be accepted is ErrConflict.
func (s *Service) Accept(ctx context.Context, a Actor, offerID string) (Booking, error) {
	if a.Role != "driver" {
		return Booking{}, fmt.Errorf("only drivers accept offers: %w", ErrForbidden)
	}
	o, err := s.store.Offer(ctx, offerID)
	if err != nil {
		return Booking{}, err
	}
	if o.DriverID != a.ID {
		return Booking{}, fmt.Errorf("offer %s is not yours: %w", offerID, ErrNotFound)
	}
	if o.Status == OfferAccepted {
		b, err := s.store.Booking(ctx, o.BookingID)
		if err == nil && b.DriverID() == a.ID {
			return b.Public(), nil
		}
	}
	d, err := s.store.Driver(ctx, a.ID)
	if err != nil {
		// The booking shows the driver by id; its name follows with the next change.
		s.opts.Log.Warn().Err(err).Str("driver", a.ID).Str("offer", offerID).Msg("read the accepting driver's profile")
		d = DriverProfile{ID: a.ID, Name: a.ID}
	}
	b, err := s.store.AcceptOffer(ctx, offerID, d.Ref(), s.opts.Now())
	if err != nil {
		return Booking{}, err
	}
	s.holdDriver(ctx, a.ID, b)
	if err := s.loc.Release(ctx, a.ID, offerID); err != nil {
		s.opts.Log.Warn().Err(err).Str("driver", a.ID).Str("offer", offerID).Msg("release the driver's lease after accepting (it lapses by itself)")
	}
	return b.Public(), nil
}

// Decline is a driver declining its offer; the matcher offers the booking to someone else.
func (s *Service) Decline(ctx context.Context, a Actor, offerID, reason string) error {
	if a.Role != "driver" {
		return fmt.Errorf("only drivers decline offers: %w", ErrForbidden)
	}
	// Someone else's offer is not found, as in Accept: its existence and state stay unsaid.
	if o, err := s.store.Offer(ctx, offerID); err != nil {
		return err
	} else if o.DriverID != a.ID {
		return fmt.Errorf("offer %s is not yours: %w", offerID, ErrNotFound)
	}
	o, err := s.store.CloseOffer(ctx, offerID, a.ID, OfferDeclined, s.opts.Now())
	if err != nil {
		return err
	}
	s.offerClosed(ctx, o)
	if err := s.loc.SetState(ctx, a.ID, DriverAvailable); err != nil {
		// The decline stands; the driver shows offered until its next status or the sweep.
		s.opts.Log.Warn().Err(err).Str("driver", a.ID).Str("offer", offerID).Msg("make the driver available after declining")
	}
	return s.loc.Release(ctx, a.ID, offerID)
}

// offerClosed tells the matchers (at most once: their sweep finds what this misses).
func (s *Service) offerClosed(ctx context.Context, o Offer) {
	if s.opts.Offers != nil {
		if err := s.opts.Offers.OfferClosed(ctx, o); err != nil {
			s.opts.Log.Warn().Err(err).Str("offer", o.ID).Str("booking", o.BookingID).Msg("tell the matchers of a closed offer (their sweep finds it)")
		}
	}
}

// Arrive, Start and End move the driver's own booking along its trip.
func (s *Service) Arrive(ctx context.Context, a Actor, id string) (Booking, error) {
	return s.driverStep(ctx, a, id, StatusAssigned, StatusArrived, func(Booking, *Change) error { return nil })
}

// Start begins the trip once the driver gives the customer's OTP. A wrong OTP changes only the
// count of wrong tries: after OTPMaxWrong of them every try answers ErrOTPLocked for OTPLockFor
// (the count lives in the store, so it holds across processes), each try with its audit row.
func (s *Service) Start(ctx context.Context, a Actor, id, otp string) (Booking, error) {
	b, err := s.driverStep(ctx, a, id, StatusArrived, StatusInProgress, func(b Booking, c *Change) error {
		c.NotOTPLocked = true
		return s.checkOTP(ctx, a, b, otp, c.At)
	})
	return b, err
}

// End completes the trip with its final fare from the actual times and its route from the
// trail (Trails). A trail that cannot be read fails the call and changes nothing: the driver's
// retry completes it with its route.
func (s *Service) End(ctx context.Context, a Actor, id string) (Booking, error) {
	b, err := s.driverStep(ctx, a, id, StatusInProgress, StatusCompleted, func(b Booking, c *Change) error {
		start := b.StartAt
		if b.StartedAt != nil {
			start = *b.StartedAt
		}
		f := s.tariffOf(b).Final(start, c.At, b.Hours, b.Surge)
		route, err := s.route(ctx, id)
		if err != nil {
			return err
		}
		c.Fare, c.Route = &f, route
		return nil
	})
	if err == nil {
		s.releaseDriver(ctx, a.ID)
		s.dropTrail(ctx, id)
	}
	return b, err
}

// driverStep moves the driver's own booking from one state to the next; check may refuse, or
// complete the Change.
func (s *Service) driverStep(ctx context.Context, a Actor, id string, from, to Status, check func(Booking, *Change) error) (Booking, error) {
	if a.Role != "driver" {
		return Booking{}, fmt.Errorf("only the booking's driver may do this: %w", ErrForbidden)
	}
	b, err := s.store.Booking(ctx, id)
	if err != nil {
		return Booking{}, err
	}
	if b.DriverID() != a.ID {
		return Booking{}, fmt.Errorf("booking %s: %w", id, ErrNotFound)
	}
	if b.Status != from {
		return Booking{}, fmt.Errorf("booking %s is %s, not %s: %w", id, b.Status, from, ErrConflict)
	}
	c := Change{BookingID: id, From: []Status{from}, To: to, Version: b.Version,
		Driver: &DriverRef{ID: a.ID}, Actor: a.String(), At: s.opts.Now()}
	if err := check(b, &c); err != nil {
		return Booking{}, err
	}
	nb, err := s.store.Transition(ctx, c)
	if err != nil {
		return Booking{}, err
	}
	var st DriverState
	switch to {
	case StatusInProgress:
		st = DriverOnTrip
	case StatusArrived:
		st = DriverAssigned
	}
	if st != "" {
		if err := s.loc.SetState(ctx, a.ID, st); err != nil {
			// The booking moved; the driver's state in the index follows at its next status.
			s.opts.Log.Warn().Err(err).Str("driver", a.ID).Str("booking", id).Str("state", string(st)).Msg("set the driver's state after a trip step")
		}
	}
	return nb.Public(), nil
}

// NewID returns a random opaque id with a prefix.
func NewID(prefix string) string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + "_" + hex.EncodeToString(b[:])
}

func newOTP() string {
	n, err := rand.Int(rand.Reader, big.NewInt(1000000))
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("%06d", n.Int64())
}
