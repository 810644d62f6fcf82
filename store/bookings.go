package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// activeStatuses is the SQL list of dispatch.Status.Active states.
const activeStatuses = "'assigned', 'arrived', 'in_progress'"

const bookingCols = `id, status, customer_id, pickup_lat, pickup_lng, pickup_address, hours, start_at,
	created_at, transmission, driver_id, driver_name, driver_rating, otp, fare, arrived_at, started_at,
	ended_at, cancel_reason, version, distance_m, route_points, otp_wrong, otp_locked_until, retried_at,
	travel_buffer_minutes` + moneyCols

// moneyCols are the columns of cities and prices (00010_money.sql), scanned by moneyDest (money.go).
const moneyCols = `, city, surge_bp, assigned_at, cancellation_fee_paise`

type scanner interface{ Scan(dest ...any) error }

func scanBooking(s scanner, extra ...any) (dispatch.Booking, error) {
	var (
		b                             dispatch.Booking
		status, transmission          string
		driverID, driverName          sql.NullString
		driverRating                  sql.NullFloat64
		fare                          []byte
		arrivedAt, startedAt, endedAt sql.NullTime
		distance, points              sql.NullInt64
		otpLocked, retried            sql.NullTime
		money                         moneyDest
	)
	dest := append(extra, &b.ID, &status, &b.CustomerID, &b.Pickup.Lat, &b.Pickup.Lng, &b.Pickup.Address,
		&b.Hours, &b.StartAt, &b.CreatedAt, &transmission, &driverID, &driverName, &driverRating, &b.OTP,
		&fare, &arrivedAt, &startedAt, &endedAt, &b.CancelReason, &b.Version, &distance, &points,
		&b.OTPWrong, &otpLocked, &retried, &b.TravelBufferMinutes)
	dest = append(dest, money.dest(&b)...)
	if err := s.Scan(dest...); err != nil {
		return dispatch.Booking{}, err
	}
	b.Status = dispatch.Status(status)
	b.Car.Transmission = dispatch.Transmission(transmission)
	if driverID.Valid {
		b.Driver = &dispatch.DriverRef{ID: driverID.String, Name: driverName.String, Rating: driverRating.Float64}
	}
	if err := json.Unmarshal(fare, &b.Fare); err != nil {
		return dispatch.Booking{}, fmt.Errorf("fare of booking %s: %w", b.ID, err)
	}
	b.StartAt, b.CreatedAt = b.StartAt.UTC(), b.CreatedAt.UTC()
	b.ArrivedAt, b.StartedAt, b.EndedAt = timePtr(arrivedAt), timePtr(startedAt), timePtr(endedAt)
	b.DistanceM, b.RoutePoints = intPtr(distance), intPtr(points)
	money.set(&b)
	b.OTPLockedUntil, b.RetriedAt = timePtr(otpLocked), timePtr(retried)
	return b, nil
}

func intPtr(n sql.NullInt64) *int {
	if !n.Valid {
		return nil
	}
	v := int(n.Int64)
	return &v
}

func timePtr(t sql.NullTime) *time.Time {
	if !t.Valid {
		return nil
	}
	u := t.Time.UTC()
	return &u
}

// errIdemTaken says the idempotency key was inserted by someone else first.
var errIdemTaken = errors.New("idempotency key taken")

// CreateBooking stores a new booking with its idempotency row, its first audit row and its
// outbox event in one transaction, or returns the booking first created under the same customer
// and key (created == false; ErrIdempotencyMismatch if that was another request). Concurrent
// calls with one key make one booking: the idempotency row is inserted first, so the others wait
// on its key and then read the winner's booking. ErrConflict when nb.ID is taken, ErrInvalid for
// a request the schema cannot hold. An empty IdempotencyKey skips the idempotency check.
func (d *DB) CreateBooking(ctx context.Context, nb dispatch.NewBooking) (dispatch.Booking, bool, error) {
	if err := validNewBooking(nb); err != nil {
		return dispatch.Booking{}, false, fmt.Errorf("create booking %s: %w", nb.ID, err)
	}
	created := dbTime(nb.CreatedAt)
	b := dispatch.Booking{
		ID:         nb.ID,
		Status:     dispatch.StatusSearching,
		CustomerID: nb.CustomerID,
		Pickup:     nb.Pickup,
		Hours:      nb.Hours,
		StartAt:    dbTime(nb.StartAt),
		CreatedAt:  created,
		Car:        nb.Car,
		OTP:        nb.OTP,
		Fare:       nb.Fare,
		Version:    1,
		City:       nb.City,
		Surge:      surgeOf(surgeBP(nb.Surge)),

		TravelBufferMinutes: nb.TravelBufferMinutes,
	}
	if nb.StartAt.IsZero() {
		b.StartAt = created
	}
	if nb.Scheduled {
		b.Status = dispatch.StatusScheduled
	}
	fare, err := json.Marshal(b.Fare)
	if err != nil {
		return dispatch.Booking{}, false, fmt.Errorf("create booking %s: fare: %w", nb.ID, err)
	}
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		if nb.IdempotencyKey != "" {
			_, err := tx.ExecContext(ctx, `INSERT INTO idempotency_keys
				(customer_id, idem_key, request_hash, booking_id, created_at) VALUES (?, ?, ?, ?, ?)`,
				nb.CustomerID, nb.IdempotencyKey, nb.RequestHash, nb.ID, created)
			if isErrno(err, errDupEntry) {
				return errIdemTaken
			}
			if err != nil {
				return translate(err)
			}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO customers (id, created_at) VALUES (?, ?)
			ON DUPLICATE KEY UPDATE id = id`, nb.CustomerID, created); err != nil {
			return translate(err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO bookings (id, status, prev_status, customer_id,
			pickup_lat, pickup_lng, pickup_address, hours, start_at, created_at, transmission, otp, fare,
			cancel_reason, version, updated_at, city, surge_bp, travel_buffer_minutes)
			VALUES (?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', 1, ?, ?, ?, ?)`,
			b.ID, b.Status, b.CustomerID, b.Pickup.Lat, b.Pickup.Lng, b.Pickup.Address, b.Hours, b.StartAt,
			b.CreatedAt, b.Car.Transmission, b.OTP, string(fare), created, b.City, surgeBP(b.Surge), b.TravelBufferMinutes)
		if err != nil {
			return translate(err)
		}
		return record(ctx, tx, b, "", "customer:"+b.CustomerID, "created", created)
	})
	if errors.Is(err, errIdemTaken) {
		return d.idempotent(ctx, nb)
	}
	if err != nil {
		return dispatch.Booking{}, false, fmt.Errorf("create booking %s: %w", nb.ID, err)
	}
	return b, true, nil
}

// idempotent answers a request whose key was used before.
func (d *DB) idempotent(ctx context.Context, nb dispatch.NewBooking) (dispatch.Booking, bool, error) {
	var hash, id string
	err := d.db.QueryRowContext(ctx, `SELECT request_hash, booking_id FROM idempotency_keys
		WHERE customer_id = ? AND idem_key = ?`, nb.CustomerID, nb.IdempotencyKey).Scan(&hash, &id)
	if err != nil {
		return dispatch.Booking{}, false, fmt.Errorf("idempotency key of customer %s: %w", nb.CustomerID, translate(err))
	}
	if hash != nb.RequestHash {
		return dispatch.Booking{}, false, fmt.Errorf("booking %s: %w", id, dispatch.ErrIdempotencyMismatch)
	}
	b, err := d.Booking(ctx, id)
	if err != nil {
		return dispatch.Booking{}, false, err
	}
	return b, false, nil
}

func validNewBooking(nb dispatch.NewBooking) error {
	for _, f := range []struct {
		name, v  string
		max      int
		required bool
	}{
		{"id", nb.ID, 64, true},
		{"customer id", nb.CustomerID, 64, true},
		{"pickup address", nb.Pickup.Address, 500, false},
		{"otp", nb.OTP, 16, false},
		{"idempotency key", nb.IdempotencyKey, 200, false},
		{"request hash", nb.RequestHash, 128, false},
		{"city", nb.City, 64, false},
	} {
		if err := checkLen(f.name, f.v, f.max, f.required); err != nil {
			return err
		}
	}
	if nb.Car.Transmission != dispatch.Manual && nb.Car.Transmission != dispatch.Automatic {
		return fmt.Errorf("transmission %q: %w", nb.Car.Transmission, dispatch.ErrInvalid)
	}
	if nb.Hours < 1 {
		return fmt.Errorf("hours %d: %w", nb.Hours, dispatch.ErrInvalid)
	}
	if nb.TravelBufferMinutes < 0 {
		return fmt.Errorf("travel buffer %d minutes: %w", nb.TravelBufferMinutes, dispatch.ErrInvalid)
	}
	return nil
}

// Booking returns one booking, or ErrNotFound.
func (d *DB) Booking(ctx context.Context, id string) (dispatch.Booking, error) {
	b, err := scanBooking(d.db.QueryRowContext(ctx, "SELECT "+bookingCols+" FROM bookings WHERE id = ?", id))
	if err != nil {
		return dispatch.Booking{}, fmt.Errorf("booking %s: %w", id, translate(err))
	}
	return b, nil
}

// Bookings lists bookings newest first, at most f.Limit (default 100, at most 1000).
func (d *DB) Bookings(ctx context.Context, f dispatch.BookingFilter) ([]dispatch.Booking, error) {
	var where []string
	var args []any
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, f.Status)
	}
	if f.CustomerID != "" {
		where, args = append(where, "customer_id = ?"), append(args, f.CustomerID)
	}
	if f.DriverID != "" {
		where, args = append(where, "driver_id = ?"), append(args, f.DriverID)
	}
	q := "SELECT " + bookingCols + " FROM bookings"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT ?"
	bs, err := d.queryBookings(ctx, q, append(args, limit(f.Limit, 100, 1000))...)
	if err != nil {
		return nil, fmt.Errorf("list bookings: %w", err)
	}
	return bs, nil
}

// SearchingBookings lists searching bookings, oldest first (the matching loop's work queue).
func (d *DB) SearchingBookings(ctx context.Context, n int) ([]dispatch.Booking, error) {
	bs, err := d.queryBookings(ctx, "SELECT "+bookingCols+` FROM bookings WHERE status = 'searching'
		ORDER BY created_at, id LIMIT ?`, limit(n, 1000, 10000))
	if err != nil {
		return nil, fmt.Errorf("list searching bookings: %w", err)
	}
	return bs, nil
}

// DueScheduled lists scheduled bookings starting at or before `before`, earliest start first.
func (d *DB) DueScheduled(ctx context.Context, before time.Time, n int) ([]dispatch.Booking, error) {
	bs, err := d.queryBookings(ctx, "SELECT "+bookingCols+` FROM bookings WHERE status = 'scheduled'
		AND start_at <= ? ORDER BY start_at, id LIMIT ?`, dbTime(before), limit(n, 100, 10000))
	if err != nil {
		return nil, fmt.Errorf("list due scheduled bookings: %w", err)
	}
	return bs, nil
}

// ActiveBookingOf returns the driver's current booking, or ErrNotFound: the one arrived or in
// progress, else the assigned one that starts first, if it starts within dispatch.DueWithin of
// now. Found through the driver's calendar blocks, so a driver's long history costs nothing.
func (d *DB) ActiveBookingOf(ctx context.Context, driverID string) (dispatch.Booking, error) {
	b, err := scanBooking(d.db.QueryRowContext(ctx, "SELECT "+bookingCols+` FROM bookings
		WHERE id IN (SELECT booking_id FROM driver_blocks WHERE driver_id = ?)
		AND (status IN ('arrived', 'in_progress') OR (status = 'assigned' AND start_at <= ?))
		ORDER BY CASE status WHEN 'assigned' THEN 1 ELSE 0 END, start_at, id LIMIT 1`,
		driverID, now().Add(dispatch.DueWithin)))
	if err != nil {
		return dispatch.Booking{}, fmt.Errorf("active booking of driver %s: %w", driverID, translate(err))
	}
	return b, nil
}

func (d *DB) queryBookings(ctx context.Context, q string, args ...any) ([]dispatch.Booking, error) {
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	bs := []dispatch.Booking{}
	for rows.Next() {
		b, err := scanBooking(rows)
		if err != nil {
			return nil, translate(err)
		}
		bs = append(bs, b)
	}
	if err := rows.Err(); err != nil {
		return nil, translate(err)
	}
	return bs, nil
}

// limit is n, or def when n is not positive, at most most.
func limit(n, def, most int) int {
	switch {
	case n <= 0:
		return def
	case n > most:
		return most
	}
	return n
}

// Transition applies a Change as one conditional UPDATE of the booking, in one transaction with
// the calendar block it implies (see book), its audit row and its outbox event.
//
// Only the moves of the state machine (dispatch.CanMove) out of the states in c.From are tried (an empty
// From means every state the machine allows out of); a booking in any other state, at another
// version, or with another driver than c.Driver answers ErrConflict and is left as it was. Moving
// to assigned needs c.Driver and answers ErrConflict when the booking's block overlaps one of
// that driver's. c.NotOTPLocked refuses a booking OTP-locked at c.At with ErrOTPLocked. Moving to searching always clears the driver. The change stamps arrived_at, started_at
// or ended_at (completed, or cancelled once started) with c.At (now when zero), keeps c.Reason as
// the cancel reason when cancelling, and replaces the fare when c.Fare is set. Completing records
// the trip in the same transaction (see Trip): c.Route, the times and the final fare; the booking
// keeps the route's distance and point count. ErrNotFound for an
// unknown booking, ErrInvalid for a Change that makes no sense (unknown states, an active state
// without a driver).
//
// Completions (c.To == StatusCompleted) are committed in groups: those asked for while others
// are being committed go together in the next transaction of CompleteTrips (up to
// Options.CompletionBatch), each still its own conditional UPDATE with its own audit row, event
// and trip, and refused alone. Under load this shares one commit, one log flush, among many
// trips; alone, a completion waits for nothing. A caller whose ctx ends while its completion is
// queued or being committed gets ctx's error, and the completion may still have been committed.
func (d *DB) Transition(ctx context.Context, c dispatch.Change) (dispatch.Booking, error) {
	if c.To == dispatch.StatusCompleted && d.opts.CompletionBatch > 1 {
		b, err := d.completeGrouped(ctx, c)
		if err != nil {
			return dispatch.Booking{}, fmt.Errorf("booking %s to %s: %w", c.BookingID, c.To, err)
		}
		return b, nil
	}
	var b dispatch.Booking
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		b, err = transition(ctx, tx, c)
		return err
	})
	if err != nil {
		return dispatch.Booking{}, fmt.Errorf("booking %s to %s: %w", c.BookingID, c.To, err)
	}
	return b, nil
}

// transition is Transition inside the caller's transaction.
func transition(ctx context.Context, tx *sql.Tx, c dispatch.Change) (dispatch.Booking, error) {
	if err := apply(ctx, tx, c); err != nil {
		return dispatch.Booking{}, err
	}
	at := dbTime(c.At)
	var prev string
	b, err := scanBooking(tx.QueryRowContext(ctx, "SELECT prev_status, "+bookingCols+" FROM bookings WHERE id = ?",
		c.BookingID), &prev)
	if err != nil {
		return dispatch.Booking{}, translate(err)
	}
	if c.To == dispatch.StatusAssigned {
		if err := book(ctx, tx, c.Driver.ID, b); err != nil {
			return dispatch.Booking{}, err
		}
	} else if !c.To.Active() {
		if _, err := tx.ExecContext(ctx, "DELETE FROM driver_blocks WHERE booking_id = ?", c.BookingID); err != nil {
			return dispatch.Booking{}, translate(err)
		}
	}
	w := newWrites()
	if err := w.change(b, dispatch.Status(prev), c.Actor, c.Reason, at); err != nil {
		return dispatch.Booking{}, err
	}
	if c.Charge != "" {
		// The charge's own audit row: what was charged and why; the fare holds its lines.
		w.audit.add(b.ID, at, c.Actor, string(b.Status), string(b.Status), truncate("charged: "+c.Charge, 500), b.Version)
	}
	if c.To == dispatch.StatusCompleted {
		if err := w.trip(b, c.Route); err != nil {
			return dispatch.Booking{}, err
		}
	}
	if err := w.flush(ctx, tx); err != nil {
		return dispatch.Booking{}, err
	}
	return b, nil
}

// apply runs the conditional UPDATE of c in tx. It answers nil when the booking changed, else
// why not: a refusal (ErrInvalid for a Change that makes no sense, ErrNotFound, ErrConflict),
// after which tx is still usable and nothing was changed, or the database's error.
func apply(ctx context.Context, tx *sql.Tx, c dispatch.Change) error {
	if err := validChange(c); err != nil {
		return err
	}
	from := c.From
	if len(from) == 0 {
		from = dispatch.Statuses
	}
	// The UPDATE's WHERE status IN (...): the states named that the machine lets go to c.To.
	var allowed []any
	for _, s := range from {
		if dispatch.CanMove(s, c.To) && !slices.Contains(allowed, any(s)) {
			allowed = append(allowed, s)
		}
	}
	if len(allowed) == 0 {
		return refused(ctx, tx, c)
	}
	at := dbTime(c.At)

	set := []string{"prev_status = status", "status = ?", "version = version + 1", "updated_at = ?"}
	args := []any{c.To, at}
	switch c.To {
	case dispatch.StatusAssigned:
		set = append(set, "driver_id = ?", "driver_name = ?", "driver_rating = ?", "assigned_at = ?")
		args = append(args, c.Driver.ID, c.Driver.Name, c.Driver.Rating, at)
	case dispatch.StatusArrived:
		set, args = append(set, "arrived_at = ?"), append(args, at)
	case dispatch.StatusInProgress:
		set, args = append(set, "started_at = ?"), append(args, at)
	case dispatch.StatusCompleted:
		var r dispatch.Route
		if c.Route != nil {
			r = *c.Route
		}
		set = append(set, "ended_at = ?", "distance_m = ?", "route_points = ?")
		args = append(args, at, r.DistanceM, r.Points)
	case dispatch.StatusCancelled:
		// A trip cancelled under way has ended; one that never started has no end.
		set = append(set, "cancel_reason = ?", "ended_at = CASE WHEN started_at IS NULL THEN NULL ELSE ? END",
			"cancellation_fee_paise = ?")
		args = append(args, c.Reason, at, c.CancellationFeePaise)
	}
	if c.ClearDriver || c.To == dispatch.StatusSearching {
		set = append(set, "driver_id = NULL", "driver_name = NULL", "driver_rating = NULL", "assigned_at = NULL")
	}
	if c.Retry {
		set, args = append(set, "retried_at = ?", "otp_wrong = 0"), append(args, at)
	}
	if c.Fare != nil {
		fare, err := json.Marshal(c.Fare)
		if err != nil {
			return fmt.Errorf("fare: %w", err)
		}
		set, args = append(set, "fare = ?"), append(args, string(fare))
	}
	q := "UPDATE bookings SET " + strings.Join(set, ", ") + " WHERE id = ? AND status IN (?" +
		strings.Repeat(", ?", len(allowed)-1) + ")"
	args = append(append(args, c.BookingID), allowed...)
	if c.Version != 0 {
		q, args = q+" AND version = ?", append(args, c.Version)
	}
	if c.Driver != nil && c.To != dispatch.StatusAssigned {
		q, args = q+" AND driver_id = ?", append(args, c.Driver.ID)
	}
	if c.NotOTPLocked {
		q, args = q+" AND (otp_locked_until IS NULL OR otp_locked_until <= ?)", append(args, at)
	}
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return translate(err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return translate(err)
	} else if n != 1 {
		return refused(ctx, tx, c)
	}
	return nil
}

func validChange(c dispatch.Change) error {
	if err := validCharge(c); err != nil {
		return err
	}
	if c.BookingID == "" {
		return fmt.Errorf("booking id is required: %w", dispatch.ErrInvalid)
	}
	if !c.To.Valid() {
		return fmt.Errorf("unknown status %q: %w", c.To, dispatch.ErrInvalid)
	}
	for _, s := range c.From {
		if !s.Valid() {
			return fmt.Errorf("unknown status %q: %w", s, dispatch.ErrInvalid)
		}
	}
	if c.To == dispatch.StatusAssigned && (c.Driver == nil || c.Driver.ID == "") {
		return fmt.Errorf("assigning needs a driver: %w", dispatch.ErrInvalid)
	}
	if c.To.Active() && c.ClearDriver {
		return fmt.Errorf("%s without a driver: %w", c.To, dispatch.ErrInvalid)
	}
	if c.Route != nil {
		switch {
		case c.To != dispatch.StatusCompleted:
			return fmt.Errorf("a route only comes with completion, not %s: %w", c.To, dispatch.ErrInvalid)
		case c.Route.DistanceM < 0 || c.Route.Points < 0:
			return fmt.Errorf("route distance and points must not be negative: %w", dispatch.ErrInvalid)
		case len(c.Route.Polyline) > maxRouteBytes:
			return fmt.Errorf("route longer than %d bytes: %w", maxRouteBytes, dispatch.ErrInvalid)
		}
	}
	if c.Driver != nil {
		if err := checkLen("driver id", c.Driver.ID, 64, false); err != nil {
			return err
		}
		if err := checkLen("driver name", c.Driver.Name, 200, false); err != nil {
			return err
		}
	}
	if err := checkLen("actor", c.Actor, 200, false); err != nil {
		return err
	}
	return checkLen("reason", c.Reason, 500, false)
}

// refused explains why a change did not apply: ErrNotFound or ErrConflict.
func refused(ctx context.Context, tx *sql.Tx, c dispatch.Change) error {
	var status string
	var version int64
	var driverID sql.NullString
	var locked sql.NullTime
	err := tx.QueryRowContext(ctx, "SELECT status, version, driver_id, otp_locked_until FROM bookings WHERE id = ?", c.BookingID).
		Scan(&status, &version, &driverID, &locked)
	if err != nil {
		return translate(err)
	}
	st := dispatch.Status(status)
	why := fmt.Sprintf("booking is %s", status)
	switch {
	case len(c.From) > 0 && !slices.Contains(c.From, st):
		why += fmt.Sprintf(", not %v", c.From)
	case !dispatch.CanMove(st, c.To):
		why += fmt.Sprintf(", which cannot become %s", c.To)
	case c.Version != 0 && version != c.Version:
		why = fmt.Sprintf("booking is at version %d, not %d", version, c.Version)
	case c.Driver != nil && c.To != dispatch.StatusAssigned && driverID.String != c.Driver.ID:
		why = fmt.Sprintf("booking's driver is not %s", c.Driver.ID)
	case c.NotOTPLocked && locked.Valid && locked.Time.After(dbTime(c.At)):
		return fmt.Errorf("trip start locked until %s after too many wrong OTPs: %w",
			locked.Time.UTC().Format(time.RFC3339), dispatch.ErrOTPLocked)
	}
	return withKind(dispatch.ErrConflict, errors.New(why))
}

// record writes the audit row and the outbox event of a booking's change, in tx.
func record(ctx context.Context, tx *sql.Tx, b dispatch.Booking, from dispatch.Status, actor, reason string, at time.Time) error {
	w := newWrites()
	if err := w.change(b, from, actor, reason, at); err != nil {
		return err
	}
	return w.flush(ctx, tx)
}
