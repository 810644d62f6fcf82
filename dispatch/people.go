package dispatch

import (
	"context"
	"crypto/subtle"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// People: drivers' profiles and who may go online, their calendars, customers' ratings, the
// OTP lockout and the audit trail (API.md v1.1, "Drivers and their calendar", "Safety and
// follow-up").

const (
	// OTPMaxWrong wrong OTPs on a booking lock its start for OTPLockFor.
	OTPMaxWrong = 5
	OTPLockFor  = 15 * time.Minute
	// DueWithin: an assigned booking starting within this much of now is the driver's business
	// now (it holds the driver: state assigned, resumed in hello). One assigned further ahead
	// only holds its block in the driver's calendar, and the driver stays free until then.
	DueWithin = time.Hour
	// RatingWindow is how many of a driver's latest ratings make their rating.
	RatingWindow = 100
)

// Block is an hour block of a driver's calendar: an assigned booking from its start to its end
// plus the city's travel buffer. A driver's blocks never overlap (the store enforces it).
type Block struct {
	BookingID string    `json:"booking_id"`
	StartAt   time.Time `json:"start_at"`
	EndAt     time.Time `json:"end_at"`
}

// AuditEvent is one row of a booking's audit trail.
type AuditEvent struct {
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	From   Status    `json:"from"`
	To     Status    `json:"to"`
	Reason string    `json:"reason,omitempty"`
}

// Rating is a customer's rating of a completed booking's driver.
type Rating struct {
	BookingID  string
	DriverID   string
	CustomerID string
	Stars      int
	Comment    string
	At         time.Time
}

// DriverFilter selects drivers' profiles for a list. Empty fields match everything.
type DriverFilter struct {
	City     string
	Verified *bool
	Limit    int
}

// PeopleStore is what the Service needs for drivers' profiles, calendars, ratings and the OTP
// lockout. store.DB implements it; NewService takes it from its BookingStore when that has it.
type PeopleStore interface {
	// CreateDriver stores a new profile; ErrConflict when the id is taken.
	CreateDriver(ctx context.Context, d DriverProfile) error
	// UpdateProfile replaces an existing profile's fields but its rating (which only ratings
	// change) and trips (counted); ErrNotFound for an unknown id.
	UpdateProfile(ctx context.Context, d DriverProfile) error
	// Drivers lists profiles by id.
	Drivers(ctx context.Context, f DriverFilter) ([]DriverProfile, error)
	// DriverNames returns the names of those of ids that have a profile.
	DriverNames(ctx context.Context, ids []string) (map[string]DriverRef, error)
	// Calendar lists the driver's blocks that overlap [from, to), by start.
	Calendar(ctx context.Context, driverID string, from, to time.Time) ([]Block, error)
	// BusyDrivers returns which of ids have a block overlapping [from, to).
	BusyDrivers(ctx context.Context, ids []string, from, to time.Time) (map[string]bool, error)
	// Rate records the rating of a completed booking by its customer, once (ErrConflict the
	// second time; ErrConflict when the booking is not completed or not the customer's), and
	// sets the driver's rating to the mean of their latest RatingWindow ratings.
	Rate(ctx context.Context, r Rating) error
	// BookingEvents is a booking's audit trail, oldest first.
	BookingEvents(ctx context.Context, bookingID string) ([]AuditEvent, error)
	// FailOTP records a refused OTP try of the driver on an arrived booking, with its audit row,
	// atomically across processes. A wrong try while unlocked counts; the max-th locks the
	// booking until at+lockFor (the count starts again then) and publishes the booking with
	// OTPLockedUntil. A try while locked counts nothing and answers ErrOTPLocked. It returns
	// the booking as it is after the try.
	FailOTP(ctx context.Context, bookingID, driverID string, at time.Time, max int, lockFor time.Duration) (Booking, error)
}

// DriverProfile is what the business knows about a driver (API.md v1.1 "Driver").
type DriverProfile struct {
	ID             string         `json:"id"`
	Name           string         `json:"name"`
	Phone          string         `json:"phone"`
	LicenceNo      string         `json:"licence_no"`
	LicenceExpires string         `json:"licence_expires"` // a date, 2006-01-02
	Transmissions  []Transmission `json:"transmissions"`
	Cities         []string       `json:"cities"`
	Verified       bool           `json:"verified"`
	Suspended      bool           `json:"suspended"`
	Rating         float64        `json:"rating"`
	Trips          int            `json:"trips"`
}

// Ref is the driver as shown on a booking.
func (d DriverProfile) Ref() DriverRef { return DriverRef{ID: d.ID, Name: d.Name, Rating: d.Rating} }

// MayGoOnline says why the driver may not take bookings at now, or nil: a driver must be
// verified, not suspended, and hold a licence valid on now's date in India. The error wraps
// ErrForbidden and its message says which.
func (d DriverProfile) MayGoOnline(now time.Time) error {
	switch {
	case d.Suspended:
		return fmt.Errorf("driver %s is suspended: %w", d.ID, ErrForbidden)
	case !d.Verified:
		return fmt.Errorf("driver %s is not verified yet: %w", d.ID, ErrForbidden)
	}
	exp, err := time.Parse(time.DateOnly, d.LicenceExpires)
	if err != nil {
		return fmt.Errorf("driver %s has no valid licence expiry on file: %w", d.ID, ErrForbidden)
	}
	if today := now.In(ist).Format(time.DateOnly); today > exp.Format(time.DateOnly) {
		return fmt.Errorf("driver %s's licence expired on %s: %w", d.ID, d.LicenceExpires, ErrForbidden)
	}
	return nil
}

var (
	phoneRe   = regexp.MustCompile(`^\+?[0-9]{10,15}$`)
	licenceRe = regexp.MustCompile(`^[A-Z0-9][A-Z0-9 -]{4,31}$`)
	cityRe    = regexp.MustCompile(`^[a-z][a-z-]{1,39}$`)
	idRe      = regexp.MustCompile(`^[A-Za-z0-9_.:-]{1,64}$`)
)

// Validate checks a profile as given by a dispatcher; errors wrap ErrInvalid and name the field.
func (d DriverProfile) Validate() error {
	switch {
	case !idRe.MatchString(d.ID):
		return fmt.Errorf("id must be 1 to 64 letters, digits or _.:-: %w", ErrInvalid)
	case strings.TrimSpace(d.Name) == "" || len([]rune(d.Name)) > 200:
		return fmt.Errorf("name is required, at most 200 characters: %w", ErrInvalid)
	case !phoneRe.MatchString(d.Phone):
		return fmt.Errorf("phone must be 10 to 15 digits, optionally after +: %w", ErrInvalid)
	case !licenceRe.MatchString(d.LicenceNo):
		return fmt.Errorf("licence_no must be 5 to 32 capital letters, digits, spaces or dashes: %w", ErrInvalid)
	}
	if _, err := time.Parse(time.DateOnly, d.LicenceExpires); err != nil {
		return fmt.Errorf("licence_expires must be a date like 2027-03-31: %w", ErrInvalid)
	}
	if len(d.Transmissions) == 0 || len(d.Transmissions) > 2 {
		return fmt.Errorf(`transmissions must list "manual", "automatic" or both: %w`, ErrInvalid)
	}
	for i, t := range d.Transmissions {
		if t != Manual && t != Automatic || slices.Contains(d.Transmissions[:i], t) {
			return fmt.Errorf(`transmissions must list "manual", "automatic" or both, each once: %w`, ErrInvalid)
		}
	}
	if len(d.Cities) == 0 || len(d.Cities) > 10 {
		return fmt.Errorf("cities must list 1 to 10 cities: %w", ErrInvalid)
	}
	for i, c := range d.Cities {
		if !cityRe.MatchString(c) || slices.Contains(d.Cities[:i], c) {
			return fmt.Errorf("cities must be distinct lower-case city ids like \"bengaluru\", not %q: %w", c, ErrInvalid)
		}
	}
	return nil
}

// DriverPatch is a PATCH of a profile: the fields present change.
type DriverPatch struct {
	Name           *string         `json:"name"`
	Phone          *string         `json:"phone"`
	LicenceNo      *string         `json:"licence_no"`
	LicenceExpires *string         `json:"licence_expires"`
	Transmissions  *[]Transmission `json:"transmissions"`
	Cities         *[]string       `json:"cities"`
	Verified       *bool           `json:"verified"`
	Suspended      *bool           `json:"suspended"`
}

func (p DriverPatch) apply(d *DriverProfile) {
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&d.Name, p.Name)
	set(&d.Phone, p.Phone)
	set(&d.LicenceNo, p.LicenceNo)
	set(&d.LicenceExpires, p.LicenceExpires)
	if p.Transmissions != nil {
		d.Transmissions = *p.Transmissions
	}
	if p.Cities != nil {
		d.Cities = *p.Cities
	}
	if p.Verified != nil {
		d.Verified = *p.Verified
	}
	if p.Suspended != nil {
		d.Suspended = *p.Suspended
	}
}

func (s *Service) staffOnly(a Actor, what string) error {
	if !a.Staff() {
		return fmt.Errorf("only dispatchers and admins %s: %w", what, ErrForbidden)
	}
	return nil
}

func (s *Service) peopleStore() (PeopleStore, error) {
	if s.opts.People == nil {
		return nil, fmt.Errorf("no store of drivers' profiles: %w", ErrUnavailable)
	}
	return s.opts.People, nil
}

// CreateDriver registers a driver (dispatchers, admins). New drivers are not verified: a
// dispatcher verifies them with UpdateDriver once their papers are checked. Rating and trips
// start at 0.
func (s *Service) CreateDriver(ctx context.Context, a Actor, d DriverProfile) (DriverProfile, error) {
	if err := s.staffOnly(a, "register drivers"); err != nil {
		return DriverProfile{}, err
	}
	ps, err := s.peopleStore()
	if err != nil {
		return DriverProfile{}, err
	}
	d.Rating, d.Trips = 0, 0
	d.Name = strings.TrimSpace(d.Name)
	if err := d.Validate(); err != nil {
		return DriverProfile{}, err
	}
	if err := ps.CreateDriver(ctx, d); err != nil {
		return DriverProfile{}, err
	}
	return s.store.Driver(ctx, d.ID)
}

// UpdateDriver changes the fields a patch carries (dispatchers, admins).
func (s *Service) UpdateDriver(ctx context.Context, a Actor, id string, p DriverPatch) (DriverProfile, error) {
	if err := s.staffOnly(a, "change drivers' profiles"); err != nil {
		return DriverProfile{}, err
	}
	d, err := s.store.Driver(ctx, id)
	if err != nil {
		return DriverProfile{}, err
	}
	p.apply(&d)
	d.Name = strings.TrimSpace(d.Name)
	if err := d.Validate(); err != nil {
		return DriverProfile{}, err
	}
	ps, err := s.peopleStore()
	if err != nil {
		return DriverProfile{}, err
	}
	if err := ps.UpdateProfile(ctx, d); err != nil {
		return DriverProfile{}, err
	}
	return s.store.Driver(ctx, id)
}

// DriverProfile returns a profile to staff or to the driver itself.
func (s *Service) DriverProfile(ctx context.Context, a Actor, id string) (DriverProfile, error) {
	if !a.Staff() && !(a.Role == "driver" && a.ID == id) {
		return DriverProfile{}, fmt.Errorf("only dispatchers and the driver itself: %w", ErrForbidden)
	}
	return s.store.Driver(ctx, id)
}

// Drivers lists profiles (dispatchers, admins).
func (s *Service) Drivers(ctx context.Context, a Actor, f DriverFilter) ([]DriverProfile, error) {
	if err := s.staffOnly(a, "list drivers"); err != nil {
		return nil, err
	}
	ps, err := s.peopleStore()
	if err != nil {
		return nil, err
	}
	if f.Limit <= 0 || f.Limit > 1000 {
		f.Limit = 1000
	}
	return ps.Drivers(ctx, f)
}

// NameViews gives views their drivers' names and ratings from the profiles (the live map,
// nearby); a view whose driver has no profile keeps its id alone. On error it changes nothing:
// callers naming views as a courtesy may carry on without.
func (s *Service) NameViews(ctx context.Context, views []DriverView) error {
	if len(views) == 0 {
		return nil
	}
	ps, err := s.peopleStore()
	if err != nil {
		return err
	}
	ids := make([]string, len(views))
	for i, v := range views {
		ids[i] = v.ID
	}
	names, err := ps.DriverNames(ctx, ids)
	if err != nil {
		return err
	}
	for i := range views {
		if n, ok := names[views[i].ID]; ok {
			r := n.Rating
			views[i].Name, views[i].Rating = n.Name, &r
		}
	}
	return nil
}

// Calendar lists a driver's blocks overlapping [from, to) (dispatchers, the driver itself).
// Zero times default to now and a week after from.
func (s *Service) Calendar(ctx context.Context, a Actor, driverID string, from, to time.Time) ([]Block, error) {
	if !a.Staff() && !(a.Role == "driver" && a.ID == driverID) {
		return nil, fmt.Errorf("only dispatchers and the driver itself: %w", ErrForbidden)
	}
	ps, err := s.peopleStore()
	if err != nil {
		return nil, err
	}
	if from.IsZero() {
		from = s.opts.Now()
	}
	if to.IsZero() {
		to = from.Add(7 * 24 * time.Hour)
	}
	if !to.After(from) || to.Sub(from) > 62*24*time.Hour {
		return nil, fmt.Errorf("to must be after from, at most 62 days: %w", ErrInvalid)
	}
	return ps.Calendar(ctx, driverID, from, to)
}

// BlockOf is the span a booking holds in its driver's calendar: start to the end of its hours
// plus the travel buffer.
func BlockOf(b Booking, buffer time.Duration) (time.Time, time.Time) {
	return b.StartAt, b.StartAt.Add(time.Duration(b.Hours)*time.Hour + buffer)
}

// travelBuffer is the travel buffer of a booking's city.
func (s *Service) travelBuffer() time.Duration {
	return time.Duration(s.opts.Tariff.TravelBufferMinutes) * time.Minute
}

// AssignCandidates lists the drivers a dispatcher may assign a booking to by hand: online and
// free now (state available), within radiusM of the pickup, able to drive the car, and whose
// calendar has room for the booking's block. Nearest first, with names.
func (s *Service) AssignCandidates(ctx context.Context, a Actor, bookingID string, radiusM float64, limit int) ([]DriverView, error) {
	if err := s.staffOnly(a, "assign bookings"); err != nil {
		return nil, err
	}
	ps, err := s.peopleStore()
	if err != nil {
		return nil, err
	}
	b, err := s.store.Booking(ctx, bookingID)
	if err != nil {
		return nil, err
	}
	near, err := s.loc.Nearby(ctx, b.Pickup.Lat, b.Pickup.Lng, radiusM, limit*3, func(p Position) bool {
		return p.State == DriverAvailable
	})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(near))
	for i, n := range near {
		ids[i] = n.DriverID
	}
	from, to := BlockOf(b, b.TravelBuffer())
	busy, err := ps.BusyDrivers(ctx, ids, from, to)
	if err != nil {
		return nil, err
	}
	names, err := ps.DriverNames(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := []DriverView{}
	for _, n := range near {
		if busy[n.DriverID] || len(out) == limit {
			continue
		}
		d, err := s.store.Driver(ctx, n.DriverID)
		if err != nil || !can(d.Transmissions, b.Car.Transmission) {
			continue
		}
		v := n.View()
		v.Name = names[n.DriverID].Name
		r := names[n.DriverID].Rating
		v.Rating = &r
		dist := n.DistanceM
		v.DistanceM = &dist
		out = append(out, v)
	}
	return out, nil
}

// Rate is a customer rating the driver of their completed booking, once.
func (s *Service) Rate(ctx context.Context, a Actor, bookingID string, stars int, comment string) error {
	if a.Role != "customer" {
		return fmt.Errorf("only the booking's customer rates it: %w", ErrForbidden)
	}
	if stars < 1 || stars > 5 {
		return fmt.Errorf("stars must be 1 to 5: %w", ErrInvalid)
	}
	if len([]rune(comment)) > 500 {
		return fmt.Errorf("comment longer than 500 characters: %w", ErrInvalid)
	}
	ps, err := s.peopleStore()
	if err != nil {
		return err
	}
	b, err := s.store.Booking(ctx, bookingID)
	if err != nil {
		return err
	}
	if b.CustomerID != a.ID {
		return fmt.Errorf("booking %s: %w", bookingID, ErrNotFound)
	}
	if b.Status != StatusCompleted || b.Driver == nil {
		return fmt.Errorf("booking %s is %s; only a completed booking is rated: %w", bookingID, b.Status, ErrConflict)
	}
	return ps.Rate(ctx, Rating{BookingID: b.ID, DriverID: b.Driver.ID, CustomerID: a.ID, Stars: stars,
		Comment: comment, At: s.opts.Now()})
}

// Retry makes an unfulfilled booking search again (its customer, dispatchers). It searches
// for MaxSearch from now, as a new booking would.
func (s *Service) Retry(ctx context.Context, a Actor, id string) (Booking, error) {
	if a.Role != "customer" && !a.Staff() {
		return Booking{}, fmt.Errorf("only the booking's customer or a dispatcher retries it: %w", ErrForbidden)
	}
	b, err := s.visible(ctx, a, id)
	if err != nil {
		return Booking{}, err
	}
	if b.Status != StatusUnfulfilled {
		return Booking{}, fmt.Errorf("booking %s is %s; only an unfulfilled booking is retried: %w", id, b.Status, ErrConflict)
	}
	nb, err := s.store.Transition(ctx, Change{BookingID: id, From: []Status{StatusUnfulfilled}, To: StatusSearching,
		Version: b.Version, Retry: true, Actor: a.String(), Reason: "retried", At: s.opts.Now()})
	if err != nil {
		return Booking{}, err
	}
	return ViewFor(a, nb), nil
}

// Events is a booking's audit trail (its customer, dispatchers).
func (s *Service) Events(ctx context.Context, a Actor, id string) ([]AuditEvent, error) {
	if a.Role != "customer" && !a.Staff() {
		return nil, fmt.Errorf("only the booking's customer or a dispatcher: %w", ErrForbidden)
	}
	ps, err := s.peopleStore()
	if err != nil {
		return nil, err
	}
	if _, err := s.visible(ctx, a, id); err != nil {
		return nil, err
	}
	return ps.BookingEvents(ctx, id)
}

// checkOTP is Start's check: a right OTP while unlocked passes; anything else is recorded as a
// refused try (FailOTP) and answers ErrInvalid (wrong, tries left) or ErrOTPLocked.
func (s *Service) checkOTP(ctx context.Context, a Actor, b Booking, otp string, now time.Time) error {
	locked := b.OTPLockedUntil != nil && now.Before(*b.OTPLockedUntil)
	if !locked && otp != "" && subtle.ConstantTimeCompare([]byte(otp), []byte(b.OTP)) == 1 {
		return nil
	}
	ps, err := s.peopleStore()
	if err != nil {
		return err
	}
	nb, err := ps.FailOTP(ctx, b.ID, a.ID, now, OTPMaxWrong, OTPLockFor)
	if err != nil {
		return err
	}
	if nb.OTPLockedUntil != nil && now.Before(*nb.OTPLockedUntil) {
		return otpLocked(*nb.OTPLockedUntil)
	}
	return fmt.Errorf("wrong OTP, %d of %d tries left: %w", OTPMaxWrong-nb.OTPWrong, OTPMaxWrong, ErrInvalid)
}

func otpLocked(until time.Time) error {
	return fmt.Errorf("too many wrong OTPs: trip start locked until %s: %w", until.UTC().Format(time.RFC3339), ErrOTPLocked)
}
