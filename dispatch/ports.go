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
	CreatedAt  time.Time
	// IdempotencyKey and RequestHash come from the customer's request; the same key with the
	// same hash returns the first booking, with another hash ErrIdempotencyMismatch.
	IdempotencyKey string
	RequestHash    string
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
	// Transition applies a Change atomically; ErrNotFound, ErrConflict.
	Transition(ctx context.Context, c Change) (Booking, error)

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
	// ActiveBookingOf returns the driver's active booking (assigned, arrived, in_progress), or ErrNotFound.
	ActiveBookingOf(ctx context.Context, driverID string) (Booking, error)
}

// DriverProfile is what the business knows about a driver.
type DriverProfile struct {
	ID            string         `json:"id"`
	Name          string         `json:"name"`
	Rating        float64        `json:"rating"`
	Transmissions []Transmission `json:"transmissions"`
}

// Ref is the driver as shown on a booking.
func (d DriverProfile) Ref() DriverRef { return DriverRef{ID: d.ID, Name: d.Name, Rating: d.Rating} }

// Publisher hands booking events to the realtime layer (at least once).
type Publisher interface {
	Publish(ctx context.Context, e Event) error
}
