// Package dispatch is the domain of the engine: bookings, drivers, offers, fares, the states a
// booking moves through and the rules for moving (CanMove), a driver's lifecycle (lifecycle.go),
// the pickup time estimate (PickupSeconds), the matching loop that pairs searching bookings with
// nearby free drivers, and the one error vocabulary (Error, Kind) every edge answers in.
//
// It owns no I/O. What it needs from the outside it names as interfaces (BookingStore, Locator,
// Trails, Publisher) which geo, store and realtime implement; it imports none of them. Those
// adapters translate their backends' errors into Errors: dispatch looks at no driver's or
// network error. A Kind's String is the contract's error code; api maps kinds to HTTP statuses.
package dispatch

import (
	"slices"
	"time"
)

// Status is the state of a booking (API.md "Booking status").
type Status string

const (
	StatusScheduled   Status = "scheduled"
	StatusSearching   Status = "searching"
	StatusAssigned    Status = "assigned"
	StatusArrived     Status = "arrived"
	StatusInProgress  Status = "in_progress"
	StatusCompleted   Status = "completed"
	StatusCancelled   Status = "cancelled"
	StatusUnfulfilled Status = "unfulfilled"
)

// Active reports whether a booking in this state holds its driver.
func (s Status) Active() bool {
	return s == StatusAssigned || s == StatusArrived || s == StatusInProgress
}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	switch s {
	case StatusScheduled, StatusSearching, StatusAssigned, StatusArrived, StatusInProgress,
		StatusCompleted, StatusCancelled, StatusUnfulfilled:
		return true
	}
	return false
}

// moves is the state machine: for each state, the states a booking may move to.
//
// Beyond the main line (searching, assigned, arrived, in_progress, completed) it allows:
// scheduled -> assigned (a dispatcher's manual assignment ahead of time), assigned or arrived ->
// searching (the driver gives the booking back; the driver is cleared), cancelled from every
// state before completed, and unfulfilled -> searching (a retry by its customer or a dispatcher)
// or cancelled (given up).
var moves = map[Status][]Status{
	StatusScheduled:   {StatusSearching, StatusAssigned, StatusCancelled},
	StatusSearching:   {StatusAssigned, StatusCancelled, StatusUnfulfilled},
	StatusAssigned:    {StatusArrived, StatusSearching, StatusCancelled},
	StatusArrived:     {StatusInProgress, StatusSearching, StatusCancelled},
	StatusInProgress:  {StatusCompleted, StatusCancelled},
	StatusUnfulfilled: {StatusSearching, StatusCancelled},
}

// CanMove reports whether the state machine lets a booking go from one state to the other. A
// BookingStore refuses any other move with ErrConflict, whatever Change.From says, so that a
// caller's slip cannot corrupt a booking.
func CanMove(from, to Status) bool { return slices.Contains(moves[from], to) }

// Statuses lists every state, in the order of a booking's life.
var Statuses = []Status{StatusScheduled, StatusSearching, StatusAssigned, StatusArrived, StatusInProgress,
	StatusCompleted, StatusCancelled, StatusUnfulfilled}

// Transmission is what a car needs its driver to be able to drive.
type Transmission string

const (
	Manual    Transmission = "manual"
	Automatic Transmission = "automatic"
)

// Place is a pickup point.
type Place struct {
	Lat     float64 `json:"lat"`
	Lng     float64 `json:"lng"`
	Address string  `json:"address,omitempty"`
}

// Car is the customer's car as far as matching cares.
type Car struct {
	Transmission Transmission `json:"transmission"`
}

// DriverRef is the driver as shown on a booking.
type DriverRef struct {
	ID     string  `json:"id"`
	Name   string  `json:"name"`
	Rating float64 `json:"rating"`
}

// Booking is a customer's request for a driver for some hours, and what became of it.
type Booking struct {
	ID           string     `json:"id"`
	Status       Status     `json:"status"`
	CustomerID   string     `json:"customer_id"`
	Pickup       Place      `json:"pickup"`
	Hours        int        `json:"hours"`
	StartAt      time.Time  `json:"start_at"`
	CreatedAt    time.Time  `json:"created_at"`
	Car          Car        `json:"car"`
	Driver       *DriverRef `json:"driver,omitempty"`
	OTP          string     `json:"otp,omitempty"`
	Fare         Fare       `json:"fare"`
	ArrivedAt    *time.Time `json:"arrived_at,omitempty"`
	StartedAt    *time.Time `json:"started_at,omitempty"`
	EndedAt      *time.Time `json:"ended_at,omitempty"`
	CancelReason string     `json:"cancel_reason,omitempty"`
	// DistanceM and RoutePoints: the distance along the recorded route and its number of points,
	// set when the trip completes (GET /v1/bookings/{id}/route has the route itself).
	DistanceM   *int `json:"distance_m,omitempty"`
	RoutePoints *int `json:"route_points,omitempty"`
	// City is the city whose service area holds the pickup; its tariff prices the booking.
	City string `json:"city,omitempty"`
	// Surge is the multiplier the booking is priced with (absent: none).
	Surge float64 `json:"surge,omitempty"`
	// AssignedAt is when the current driver was assigned (the cancellation grace runs from it).
	AssignedAt *time.Time `json:"assigned_at,omitempty"`
	// CancellationFeePaise is the fee (before tax) a cancel charged; 0 when free.
	CancellationFeePaise int64 `json:"cancellation_fee_paise"`
	// OTPLockedUntil: too many wrong OTPs; the trip cannot start before then (API.md v1.1).
	OTPLockedUntil *time.Time `json:"otp_locked_until,omitempty"`
	// OTPWrong counts the wrong OTPs since the booking was last unlocked.
	OTPWrong int `json:"-"`
	// RetriedAt is when an unfulfilled booking was last sent searching again.
	RetriedAt *time.Time `json:"retried_at,omitempty"`
	// TravelBufferMinutes is the city's travel buffer when booked: the driver's calendar block
	// runs this long past the booked hours.
	TravelBufferMinutes int `json:"-"`
	// Version grows by one with every change; conditional updates fence on it.
	Version int64 `json:"-"`
}

// DriverID is the assigned driver's id, or "".
func (b Booking) DriverID() string {
	if b.Driver == nil {
		return ""
	}
	return b.Driver.ID
}

// TravelBuffer is the booking's travel buffer as a duration.
func (b Booking) TravelBuffer() time.Duration {
	return time.Duration(b.TravelBufferMinutes) * time.Minute
}

// Public is the booking as shown to someone other than its customer: without the OTP.
func (b Booking) Public() Booking {
	b.OTP = ""
	return b
}

// Change is one transition of a booking. A store applies it as one conditional update, with its
// audit row and its outbox event in the same transaction, or not at all.
type Change struct {
	BookingID string
	// From lists the states the booking may be in; any other answers ErrConflict. Empty: any
	// state CanMove lets go to To.
	From []Status
	To   Status
	// Version, when non-zero, must equal the booking's current version (else ErrConflict).
	Version int64
	// Driver: for To == StatusAssigned the driver to set (ErrConflict when the booking's block,
	// BlockOf with its travel buffer, overlaps a block in that driver's calendar). For other changes, when set, the booking's current driver
	// must be this one (else ErrConflict).
	Driver *DriverRef
	// ClearDriver removes the driver (a driver cancelling after accepting: back to searching).
	ClearDriver bool
	// Retry stamps the booking's RetriedAt with At (an unfulfilled booking searching again).
	Retry bool
	// NotOTPLocked: the booking must not be OTP-locked at At (else ErrOTPLocked).
	NotOTPLocked bool
	// Fare, when set, replaces the booking's fare (the final fare at completion).
	Fare *Fare
	// Route is the trail of the trip, only for To == StatusCompleted. Every completion records
	// the trip (its times, final fare and route) in the same transaction; a nil Route records an
	// empty one.
	Route  *Route
	Actor  string // "customer:c1", "driver:d7", "dispatcher:x", "system"
	Reason string
	At     time.Time

	// CancellationFeePaise is kept on a cancelled booking (with Fare holding what is owed);
	// Charge, when set, is written as its own audit row in the same transaction.
	CancellationFeePaise int64
	Charge               string
}

// OfferStatus is the state of one offer of a booking to a driver.
type OfferStatus string

const (
	OfferOpen     OfferStatus = "open"
	OfferAccepted OfferStatus = "accepted"
	OfferDeclined OfferStatus = "declined"
	OfferExpired  OfferStatus = "expired"
	OfferRevoked  OfferStatus = "revoked"
)

// Offer is a booking offered to one driver until ExpiresAt.
type Offer struct {
	ID        string      `json:"offer_id"`
	BookingID string      `json:"booking_id"`
	DriverID  string      `json:"-"`
	Status    OfferStatus `json:"-"`
	DistanceM int         `json:"distance_m"`
	CreatedAt time.Time   `json:"-"`
	ExpiresAt time.Time   `json:"expires_at"`
	// Region and Fence: the region lease under which the offer was made. A store refuses an
	// offer whose fence is lower than one already used for the region (a stale owner).
	Region string `json:"-"`
	Fence  int64  `json:"-"`
}

// BookingFilter selects bookings for a list. Empty fields match everything.
type BookingFilter struct {
	Status     Status
	CustomerID string
	DriverID   string
	Limit      int
}

// Event is a change of a booking as published to the realtime layer. Consumers drop
// duplicates by ID: delivery is at least once. Delivery order is not guaranteed either (two
// relays may interleave), so consumers also drop an event whose Version is not above the last
// one they took for its booking.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"` // "booking"
	BookingID string    `json:"booking_id"`
	Booking   Booking   `json:"booking"`
	At        time.Time `json:"at"`
	// Version is the booking's version after the change (1 for its creation); 0 from older producers.
	Version int64 `json:"version"`
}
