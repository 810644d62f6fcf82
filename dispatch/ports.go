package dispatch

import (
	"context"
	"time"
)

// NewBooking is a validated request to create a booking.
type NewBooking struct {
	ID         string
	CustomerID string
	Pickup     Place
	Hours      int
	StartAt    time.Time
	Scheduled  bool // start_at far enough ahead: created as StatusScheduled, else StatusSearching
	Car        Car
	OTP        string
	Fare       Fare
	// TravelBufferMinutes: the city's travel buffer, kept with the booking (Booking.TravelBuffer).
	TravelBufferMinutes int
	CreatedAt           time.Time
	// IdempotencyKey and RequestHash come from the customer's request; the same key with the
	// same hash returns the first booking, with another hash ErrIdempotencyMismatch.
	IdempotencyKey string
	RequestHash    string
	// City and Surge: the city whose tariff priced Fare, and the surge it was priced with.
	City  string
	Surge float64
}

// BookingStore keeps bookings, offers and their history durably. Every method is safe for
// concurrent use by many goroutines and many processes.
type BookingStore interface {
	// CreateBooking stores a new booking, or returns the booking first created under the same
	// customer and idempotency key (created == false). ErrIdempotencyMismatch when that key was
	// used with another request hash.
	CreateBooking(ctx context.Context, nb NewBooking) (b Booking, created bool, err error)
	// Booking returns one booking, or ErrNotFound.
	Booking(ctx context.Context, id string) (Booking, error)
	// Bookings lists bookings newest first.
	Bookings(ctx context.Context, f BookingFilter) ([]Booking, error)
	// Transition applies a Change atomically; ErrNotFound, ErrConflict. A move CanMove does not
	// allow is ErrConflict whatever the Change says.
	Transition(ctx context.Context, c Change) (Booking, error)
	// Trip returns the recorded trip of a completed booking, or ErrNotFound.
	Trip(ctx context.Context, bookingID string) (Trip, error)

	// CreateOffer records an open offer.
	CreateOffer(ctx context.Context, o Offer) error
	// AcceptOffer, in one transaction: the offer must be open, belong to driverID and not have
	// expired at `at`; it becomes accepted and its booking goes searching -> assigned to driver.
	// ErrNotFound for an unknown offer, ErrConflict for anything else that fails.
	AcceptOffer(ctx context.Context, offerID string, driver DriverRef, at time.Time) (Booking, error)
	// CloseOffer moves an open offer to declined, expired or revoked. ErrConflict if not open
	// (or not the driver's, when driverID is set).
	CloseOffer(ctx context.Context, offerID, driverID string, to OfferStatus, at time.Time) (Offer, error)
	// Offer returns one offer, or ErrNotFound.
	Offer(ctx context.Context, id string) (Offer, error)
	// OpenOffers lists the open offers of a driver (to send again on reconnect), or of all
	// drivers when driverID is "".
	OpenOffers(ctx context.Context, driverID string) ([]Offer, error)
	// DeclinedBy lists the drivers who declined or let expire an offer of the booking.
	DeclinedBy(ctx context.Context, bookingID string) ([]string, error)

	// Driver returns a driver's profile, or ErrNotFound.
	Driver(ctx context.Context, id string) (DriverProfile, error)
	// UpsertDriver creates or updates a driver's profile.
	UpsertDriver(ctx context.Context, d DriverProfile) error
	// ActiveBookingOf returns the driver's current booking, or ErrNotFound: the one arrived or
	// in progress, else the assigned one starting first within DueWithin of now.
	ActiveBookingOf(ctx context.Context, driverID string) (Booking, error)
	// Resume returns what a driver's reconnecting socket needs: its current booking (as
	// ActiveBookingOf), if any,
	// and its open offers with their bookings, in one read.
	Resume(ctx context.Context, driverID string) (Resume, error)
}

// Resume is a driver's state to send again on reconnect.
type Resume struct {
	Active *Booking
	Offers []OfferOf
}

// OfferOf is an offer with its booking.
type OfferOf struct {
	Offer   Offer
	Booking Booking
}

// Publisher hands booking events to the realtime layer (at least once).
type Publisher interface {
	Publish(ctx context.Context, e Event) error
}

// DriverState is a driver's availability as the dispatcher sees it (API.md "DriverView").
type DriverState string

const (
	DriverOffline   DriverState = "offline"
	DriverAvailable DriverState = "available"
	DriverOffered   DriverState = "offered"
	DriverAssigned  DriverState = "assigned"
	DriverOnTrip    DriverState = "on_trip"
)

// Point is a driver's location as sent by the phone (API.md "location").
type Point struct {
	Lat     float64 `json:"lat"`
	Lng     float64 `json:"lng"`
	Acc     float64 `json:"acc,omitempty"`
	Heading float64 `json:"heading,omitempty"`
	Speed   float64 `json:"speed,omitempty"`
	TS      int64   `json:"ts"` // Unix milliseconds
}

// Position is a driver's latest indexed location and state.
type Position struct {
	DriverID string
	Lat      float64
	Lng      float64
	Heading  float64
	State    DriverState
	At       time.Time
}

// Nearby is a driver found near a point, with its exact distance.
type Nearby struct {
	Position
	DistanceM float64
}

// Locator is the location index. All methods are safe for concurrent use.
type Locator interface {
	// Nearby returns up to limit drivers within radiusM of (lat, lng), nearest first, among
	// those for which keep returns true (keep may be nil).
	Nearby(ctx context.Context, lat, lng, radiusM float64, limit int, keep func(Position) bool) ([]Nearby, error)
	// NearbyAvailable is Nearby among available drivers only. An index may keep those apart, so
	// that a search where nobody is free within reach costs little.
	NearbyAvailable(ctx context.Context, lat, lng, radiusM float64, limit int, keep func(Position) bool) ([]Nearby, error)
	// Position returns a driver's latest position, or ErrNotFound.
	Position(ctx context.Context, driverID string) (Position, error)
	// SetState records a driver's state, in the index and as the driver's own record.
	SetState(ctx context.Context, driverID string, s DriverState) error
	// State returns a driver's recorded state (DriverOffline when unknown).
	State(ctx context.Context, driverID string) (DriverState, error)
	// Reserve takes the driver's lease for ttl if nobody holds it; it reports whether it did.
	Reserve(ctx context.Context, driverID, token string, ttl time.Duration) (bool, error)
	// Release drops the lease if token still holds it.
	Release(ctx context.Context, driverID, token string) error
}

// Search is one query of a batch of NearbyAvailable searches.
type Search struct {
	Lat, Lng, RadiusM float64
	Limit             int
	Keep              func(Position) bool
}

// Lease is one driver lease of a batch.
type Lease struct {
	DriverID, Token string
	TTL             time.Duration
}

// MatchLocator is the locator as the matching loop uses it: whole windows at a time, so that a
// window of a thousand bookings costs a few round trips, not thousands.
type MatchLocator interface {
	Locator
	// NearbyAvailableMany answers NearbyAvailable for each query, in order.
	NearbyAvailableMany(ctx context.Context, qs []Search) ([][]Nearby, error)
	// ReserveMany takes each lease whose driver nobody holds (in one exchange) and reports which.
	ReserveMany(ctx context.Context, ls []Lease) ([]bool, error)
	// SetStates records the same state for several drivers, as SetState does for one.
	SetStates(ctx context.Context, driverIDs []string, s DriverState) error
}

// BatchNotifier is a Notifier that can deliver a window's messages in one exchange.
type BatchNotifier interface {
	Notifier
	ToDrivers(ctx context.Context, msgs []DriverMessage) error
}

// DriverMessage is one frame for one driver.
type DriverMessage struct {
	DriverID, Type string
	Data           any
}

// OfferEvents tells every matcher that an offer was closed outside it (a driver declined, or
// was gone), so that the booking is offered again at once rather than at the next sweep.
type OfferEvents interface {
	OfferClosed(ctx context.Context, o Offer) error
}

// MatchStore is what the matching loop needs: the store and its work queue.
type MatchStore interface {
	BookingStore
	// SearchingBookings lists searching bookings, oldest first.
	SearchingBookings(ctx context.Context, limit int) ([]Booking, error)
	// DueScheduled lists scheduled bookings starting before `before`, soonest first.
	DueScheduled(ctx context.Context, before time.Time, limit int) ([]Booking, error)
	// Exclusions returns, per booking, the drivers who declined or let expire its offers and the
	// drivers who accepted it and then gave it back.
	Exclusions(ctx context.Context, bookingIDs []string) (declined, cancelled map[string][]string, err error)
	// CreateOffers records a window's open offers of one region in one transaction, under the
	// region's fence: ErrConflict for all when the fence is stale. Offers whose booking is not
	// searching any more are left out and returned in refused; the others are recorded.
	CreateOffers(ctx context.Context, region string, fence int64, offers []Offer) (refused map[string]bool, err error)
	// DriversChangedSince returns the profiles changed at or after since (every profile when
	// since is zero), oldest change first, at most limit, with the change time of the last.
	DriversChangedSince(ctx context.Context, since time.Time, limit int) ([]DriverProfile, time.Time, error)
}

// DriverView is a driver as the apps and the live map see it (API.md "DriverView").
type DriverView struct {
	ID        string      `json:"id"`
	Name      string      `json:"name,omitempty"`
	Lat       float64     `json:"lat"`
	Lng       float64     `json:"lng"`
	Heading   float64     `json:"heading"`
	State     DriverState `json:"state"`
	UpdatedAt time.Time   `json:"updated_at"`
	DistanceM *float64    `json:"distance_m,omitempty"`
	Rating    *float64    `json:"rating,omitempty"`
}

// View is the position as a DriverView.
func (p Position) View() DriverView {
	return DriverView{ID: p.DriverID, Lat: p.Lat, Lng: p.Lng, Heading: p.Heading, State: p.State, UpdatedAt: p.At}
}

// Regions splits the matching work among dispatcher processes: each region is owned by one
// process at a time through a lease; the fencing token grows with every new owner, so a
// process that lost its lease without knowing it is refused by the store.
type Regions interface {
	// RegionOf names the region of a point.
	RegionOf(lat, lng float64) string
	// Acquire takes the region's lease for owner, or renews it when owner holds it. It returns
	// the owner's fencing token, and ok == false when another owner holds the lease.
	Acquire(ctx context.Context, region, owner string, ttl time.Duration) (fence int64, ok bool, err error)
	// Release gives the lease up if owner holds it.
	Release(ctx context.Context, region, owner string) error
	// Members records owner as a live matcher for ttl and lists the live matchers (owner
	// among them), so that each region goes to one of them by rendezvous hashing.
	Members(ctx context.Context, owner string, ttl time.Duration) ([]string, error)
}
