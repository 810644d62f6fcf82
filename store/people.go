package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

var _ dispatch.PeopleStore = (*DB)(nil)

// book puts booking b's block (dispatch.BlockOf, with its travel buffer) in driverID's calendar,
// inside the assignment's transaction, or answers ErrConflict naming the block it overlaps.
//
// The invariant "a driver's blocks never overlap" holds whatever runs concurrently: the
// driver's driver_calendars row is written first, which takes its row lock (or, for a driver's
// first block, the lock of the key being inserted) until commit, so assignments of one driver
// take turns; the overlap check that follows is a fresh READ COMMITTED read that sees every
// block committed by the assignments before. (A plain overlap check with no such lock would
// let two concurrent assignments each miss the other's uncommitted block.)
func book(ctx context.Context, tx *sql.Tx, driverID string, b dispatch.Booking) error {
	start, end := dispatch.BlockOf(b, b.TravelBuffer())
	start, end = dbTime(start), dbTime(end)
	if _, err := tx.ExecContext(ctx, `INSERT INTO driver_calendars (driver_id, version) VALUES (?, 1)
		ON DUPLICATE KEY UPDATE version = version + 1`, driverID); err != nil {
		return translate(err)
	}
	var other string
	var os, oe time.Time
	err := tx.QueryRowContext(ctx, `SELECT booking_id, start_at, end_at FROM driver_blocks
		WHERE driver_id = ? AND start_at < ? AND end_at > ? AND booking_id <> ? ORDER BY start_at LIMIT 1`,
		driverID, end, start, b.ID).Scan(&other, &os, &oe)
	switch {
	case err == nil:
		return withKind(dispatch.ErrConflict, fmt.Errorf("driver %s's calendar holds booking %s from %s to %s, overlapping %s to %s",
			driverID, other, os.UTC().Format(time.RFC3339), oe.UTC().Format(time.RFC3339),
			start.Format(time.RFC3339), end.Format(time.RFC3339)))
	case !errors.Is(err, sql.ErrNoRows):
		return translate(err)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO driver_blocks (booking_id, driver_id, start_at, end_at) VALUES (?, ?, ?, ?)
		ON DUPLICATE KEY UPDATE driver_id = VALUES(driver_id), start_at = VALUES(start_at), end_at = VALUES(end_at)`,
		b.ID, driverID, start, end)
	return translate(err)
}

// Calendar lists the driver's blocks overlapping [from, to), earliest first (at most 1000).
func (d *DB) Calendar(ctx context.Context, driverID string, from, to time.Time) ([]dispatch.Block, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT booking_id, start_at, end_at FROM driver_blocks
		WHERE driver_id = ? AND start_at < ? AND end_at > ? ORDER BY start_at, booking_id LIMIT 1000`,
		driverID, dbTime(to), dbTime(from))
	if err != nil {
		return nil, fmt.Errorf("calendar of driver %s: %w", driverID, translate(err))
	}
	defer rows.Close()
	out := []dispatch.Block{}
	for rows.Next() {
		var b dispatch.Block
		if err := rows.Scan(&b.BookingID, &b.StartAt, &b.EndAt); err != nil {
			return nil, fmt.Errorf("calendar of driver %s: %w", driverID, translate(err))
		}
		b.StartAt, b.EndAt = b.StartAt.UTC(), b.EndAt.UTC()
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("calendar of driver %s: %w", driverID, translate(err))
	}
	return out, nil
}

// BusyDrivers returns which of ids have a block overlapping [from, to).
func (d *DB) BusyDrivers(ctx context.Context, ids []string, from, to time.Time) (map[string]bool, error) {
	out := map[string]bool{}
	for len(ids) > 0 {
		n := min(len(ids), 500)
		chunk := ids[:n]
		ids = ids[n:]
		args := []any{}
		for _, id := range chunk {
			args = append(args, id)
		}
		args = append(args, dbTime(to), dbTime(from))
		rows, err := d.db.QueryContext(ctx, `SELECT DISTINCT driver_id FROM driver_blocks WHERE driver_id IN (?`+
			strings.Repeat(", ?", n-1)+`) AND start_at < ? AND end_at > ?`, args...)
		if err != nil {
			return nil, fmt.Errorf("busy drivers: %w", translate(err))
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("busy drivers: %w", translate(err))
			}
			out[id] = true
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("busy drivers: %w", translate(err))
		}
	}
	return out, nil
}

const driverCols = `id, name, rating, transmissions, phone, licence_no, licence_expires, cities, verified, suspended,
	(SELECT COUNT(*) FROM trips WHERE trips.driver_id = drivers.id)`

func scanDriver(s scanner) (dispatch.DriverProfile, error) {
	var p dispatch.DriverProfile
	var tr, cities []byte
	var exp sql.NullTime
	if err := s.Scan(&p.ID, &p.Name, &p.Rating, &tr, &p.Phone, &p.LicenceNo, &exp, &cities, &p.Verified,
		&p.Suspended, &p.Trips); err != nil {
		return dispatch.DriverProfile{}, err
	}
	if err := json.Unmarshal(tr, &p.Transmissions); err != nil {
		return dispatch.DriverProfile{}, fmt.Errorf("driver %s: transmissions: %w", p.ID, err)
	}
	if err := json.Unmarshal(cities, &p.Cities); err != nil {
		return dispatch.DriverProfile{}, fmt.Errorf("driver %s: cities: %w", p.ID, err)
	}
	if exp.Valid {
		p.LicenceExpires = exp.Time.Format(time.DateOnly)
	}
	return p, nil
}

// Driver returns a driver's profile, or ErrNotFound.
func (d *DB) Driver(ctx context.Context, id string) (dispatch.DriverProfile, error) {
	p, err := scanDriver(d.db.QueryRowContext(ctx, "SELECT "+driverCols+" FROM drivers WHERE id = ?", id))
	if err != nil {
		return dispatch.DriverProfile{}, fmt.Errorf("driver %s: %w", id, translate(err))
	}
	return p, nil
}

// Drivers lists profiles by id: of a city, verified or not, at most f.Limit (default 100, at
// most 1000).
func (d *DB) Drivers(ctx context.Context, f dispatch.DriverFilter) ([]dispatch.DriverProfile, error) {
	var where []string
	var args []any
	if f.City != "" {
		// cities is a JSON array of lower-case ids: the quoted id is a whole element.
		where, args = append(where, "cities LIKE ?"), append(args, `%"`+escapeLike(f.City)+`"%`)
	}
	if f.Verified != nil {
		where, args = append(where, "verified = ?"), append(args, *f.Verified)
	}
	q := "SELECT " + driverCols + " FROM drivers"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := d.db.QueryContext(ctx, q+" ORDER BY id LIMIT ?", append(args, limit(f.Limit, 100, 1000))...)
	if err != nil {
		return nil, fmt.Errorf("list drivers: %w", translate(err))
	}
	defer rows.Close()
	out := []dispatch.DriverProfile{}
	for rows.Next() {
		p, err := scanDriver(rows)
		if err != nil {
			return nil, fmt.Errorf("list drivers: %w", translate(err))
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list drivers: %w", translate(err))
	}
	return out, nil
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// DriverNames returns the name and rating of those of ids that have a profile.
func (d *DB) DriverNames(ctx context.Context, ids []string) (map[string]dispatch.DriverRef, error) {
	out := make(map[string]dispatch.DriverRef, len(ids))
	for len(ids) > 0 {
		n := min(len(ids), 500)
		args := make([]any, n)
		for i, id := range ids[:n] {
			args[i] = id
		}
		ids = ids[n:]
		rows, err := d.db.QueryContext(ctx, "SELECT id, name, rating FROM drivers WHERE id IN (?"+strings.Repeat(", ?", n-1)+")", args...)
		if err != nil {
			return nil, fmt.Errorf("drivers' names: %w", translate(err))
		}
		for rows.Next() {
			var r dispatch.DriverRef
			if err := rows.Scan(&r.ID, &r.Name, &r.Rating); err != nil {
				rows.Close()
				return nil, fmt.Errorf("drivers' names: %w", translate(err))
			}
			out[r.ID] = r
		}
		if err := rows.Close(); err != nil {
			return nil, fmt.Errorf("drivers' names: %w", translate(err))
		}
	}
	return out, nil
}

// driverArgs checks a profile against the schema and returns its columns in the order of
// (id, name, rating, transmissions, phone, licence_no, licence_expires, cities, verified, suspended).
func driverArgs(p dispatch.DriverProfile) ([]any, error) {
	for _, f := range []struct {
		name, v  string
		max      int
		required bool
	}{{"driver id", p.ID, 64, true}, {"driver name", p.Name, 200, false}, {"phone", p.Phone, 20, false},
		{"licence number", p.LicenceNo, 32, false}} {
		if err := checkLen(f.name, f.v, f.max, f.required); err != nil {
			return nil, err
		}
	}
	trs, cities := p.Transmissions, p.Cities
	if trs == nil {
		trs = []dispatch.Transmission{}
	}
	if cities == nil {
		cities = []string{}
	}
	tr, err := json.Marshal(trs)
	if err != nil {
		return nil, err
	}
	cs, err := json.Marshal(cities)
	if err != nil {
		return nil, err
	}
	if err := checkLen("transmissions", string(tr), 200, false); err != nil {
		return nil, err
	}
	if err := checkLen("cities", string(cs), 500, false); err != nil {
		return nil, err
	}
	var exp any
	if p.LicenceExpires != "" {
		t, err := time.Parse(time.DateOnly, p.LicenceExpires)
		if err != nil {
			return nil, fmt.Errorf("licence expiry %q is no date: %w", p.LicenceExpires, dispatch.ErrInvalid)
		}
		exp = t.Format(time.DateOnly)
	}
	return []any{p.ID, p.Name, p.Rating, string(tr), p.Phone, p.LicenceNo, exp, string(cs), p.Verified, p.Suspended}, nil
}

// CreateDriver stores a new profile; ErrConflict when the id is taken, ErrInvalid for a profile
// the schema cannot hold.
func (d *DB) CreateDriver(ctx context.Context, p dispatch.DriverProfile) error {
	args, err := driverArgs(p)
	if err != nil {
		return fmt.Errorf("create driver %s: %w", p.ID, err)
	}
	t := now()
	_, err = d.db.ExecContext(ctx, `INSERT INTO drivers (id, name, rating, transmissions, phone, licence_no,
		licence_expires, cities, verified, suspended, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, append(args, t, t)...)
	if isErrno(err, errDupEntry) {
		return fmt.Errorf("driver %s exists already: %w", p.ID, dispatch.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create driver %s: %w", p.ID, translate(err))
	}
	return nil
}

// UpsertDriver creates or updates a driver's profile (every field; Trips is counted, never
// stored). ErrInvalid for a profile the schema cannot hold.
func (d *DB) UpsertDriver(ctx context.Context, p dispatch.DriverProfile) error {
	args, err := driverArgs(p)
	if err != nil {
		return fmt.Errorf("upsert driver %s: %w", p.ID, err)
	}
	t := now()
	_, err = d.db.ExecContext(ctx, `INSERT INTO drivers (id, name, rating, transmissions, phone, licence_no,
		licence_expires, cities, verified, suspended, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE name = VALUES(name),
		rating = VALUES(rating), transmissions = VALUES(transmissions), phone = VALUES(phone),
		licence_no = VALUES(licence_no), licence_expires = VALUES(licence_expires), cities = VALUES(cities),
		verified = VALUES(verified), suspended = VALUES(suspended), updated_at = VALUES(updated_at)`,
		append(args, t, t)...)
	if err != nil {
		return fmt.Errorf("upsert driver %s: %w", p.ID, translate(err))
	}
	return nil
}

// UpdateProfile replaces an existing profile's fields but its rating, which only Rate changes
// (so a dispatcher's edit never undoes a rating given meanwhile). ErrNotFound for an unknown id.
func (d *DB) UpdateProfile(ctx context.Context, p dispatch.DriverProfile) error {
	args, err := driverArgs(p)
	if err != nil {
		return fmt.Errorf("update driver %s: %w", p.ID, err)
	}
	// args: id, name, rating, transmissions, phone, licence_no, licence_expires, cities, verified, suspended.
	res, err := d.db.ExecContext(ctx, `UPDATE drivers SET name = ?, transmissions = ?, phone = ?, licence_no = ?,
		licence_expires = ?, cities = ?, verified = ?, suspended = ?, updated_at = ? WHERE id = ?`,
		args[1], args[3], args[4], args[5], args[6], args[7], args[8], args[9], now(), p.ID)
	if err != nil {
		return fmt.Errorf("update driver %s: %w", p.ID, translate(err))
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("update driver %s: %w", p.ID, translate(err))
	} else if n == 0 {
		return fmt.Errorf("driver %s: %w", p.ID, dispatch.ErrNotFound)
	}
	return nil
}

// Rate records a rating and sets the driver's rating to the mean of their latest
// dispatch.RatingWindow ratings, in one transaction. The driver's row is written first, so
// concurrent ratings of one driver take turns and none is left out of the mean.
func (d *DB) Rate(ctx context.Context, r dispatch.Rating) error {
	if err := checkLen("comment", r.Comment, 500, false); err != nil {
		return fmt.Errorf("rate booking %s: %w", r.BookingID, err)
	}
	at := dbTime(r.At)
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var status, customer string
		var driver sql.NullString
		if err := tx.QueryRowContext(ctx, "SELECT status, customer_id, driver_id FROM bookings WHERE id = ?", r.BookingID).
			Scan(&status, &customer, &driver); err != nil {
			return translate(err)
		}
		if status != string(dispatch.StatusCompleted) || customer != r.CustomerID || driver.String != r.DriverID {
			return fmt.Errorf("booking is %s and not this customer's completed trip with driver %s: %w", status, r.DriverID, dispatch.ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, "UPDATE drivers SET updated_at = ? WHERE id = ?", at, r.DriverID); err != nil {
			return translate(err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO ratings (booking_id, driver_id, customer_id, stars, comment, created_at)
			VALUES (?, ?, ?, ?, ?, ?)`, r.BookingID, r.DriverID, r.CustomerID, r.Stars, r.Comment, at)
		if isErrno(err, errDupEntry) {
			return fmt.Errorf("booking is rated already: %w", dispatch.ErrConflict)
		}
		if err != nil {
			return translate(err)
		}
		rows, err := tx.QueryContext(ctx, `SELECT stars FROM ratings WHERE driver_id = ?
			ORDER BY created_at DESC, booking_id DESC LIMIT ?`, r.DriverID, dispatch.RatingWindow)
		if err != nil {
			return translate(err)
		}
		sum, n := 0, 0
		for rows.Next() {
			var s int
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return translate(err)
			}
			sum, n = sum+s, n+1
		}
		if err := rows.Close(); err != nil {
			return translate(err)
		}
		mean := float64(sum) / float64(n)
		_, err = tx.ExecContext(ctx, "UPDATE drivers SET rating = ? WHERE id = ?", mean, r.DriverID)
		return translate(err)
	})
	if err != nil {
		return fmt.Errorf("rate booking %s: %w", r.BookingID, err)
	}
	return nil
}

// BookingEvents is a booking's audit trail, oldest first (at most 1000 rows); ErrNotFound for
// a booking with none.
func (d *DB) BookingEvents(ctx context.Context, bookingID string) ([]dispatch.AuditEvent, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT at, actor, from_status, to_status, reason FROM booking_events
		WHERE booking_id = ? ORDER BY id LIMIT 1000`, bookingID)
	if err != nil {
		return nil, fmt.Errorf("events of booking %s: %w", bookingID, translate(err))
	}
	defer rows.Close()
	out := []dispatch.AuditEvent{}
	for rows.Next() {
		var e dispatch.AuditEvent
		var from, to string
		if err := rows.Scan(&e.At, &e.Actor, &from, &to, &e.Reason); err != nil {
			return nil, fmt.Errorf("events of booking %s: %w", bookingID, translate(err))
		}
		e.At, e.From, e.To = e.At.UTC(), dispatch.Status(from), dispatch.Status(to)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("events of booking %s: %w", bookingID, translate(err))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("events of booking %s: %w", bookingID, dispatch.ErrNotFound)
	}
	return out, nil
}

// FailOTP records a refused OTP try (see dispatch.PeopleStore). The count is one conditional
// UPDATE of the booking's row, so concurrent tries, from any process, take turns on its row
// lock and each counts once; the try that reaches max locks the booking in the same
// transaction. ErrConflict when the booking is not arrived with this driver.
func (d *DB) FailOTP(ctx context.Context, bookingID, driverID string, at time.Time, max int, lockFor time.Duration) (dispatch.Booking, error) {
	at = dbTime(at)
	actor := "driver:" + driverID
	var b dispatch.Booking
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE bookings SET otp_wrong = otp_wrong + 1 WHERE id = ? AND driver_id = ?
			AND status = 'arrived' AND (otp_locked_until IS NULL OR otp_locked_until <= ?)`, bookingID, driverID, at)
		if err != nil {
			return translate(err)
		}
		counted, err := res.RowsAffected()
		if err != nil {
			return translate(err)
		}
		read := func() error {
			b, err = scanBooking(tx.QueryRowContext(ctx, "SELECT "+bookingCols+" FROM bookings WHERE id = ?", bookingID))
			return translate(err)
		}
		if err := read(); err != nil {
			return err
		}
		w := newWrites()
		switch {
		case counted == 0 && b.Status == dispatch.StatusArrived && b.DriverID() == driverID:
			// Locked: the try counts nothing, and is in the trail.
			w.audit.add(b.ID, at, actor, string(b.Status), string(b.Status),
				"OTP try refused: start locked until "+b.OTPLockedUntil.Format(time.RFC3339), b.Version)
		case counted == 0:
			return fmt.Errorf("booking is %s: %w", b.Status, dispatch.ErrConflict)
		case b.OTPWrong >= max:
			until := at.Add(lockFor)
			if _, err := tx.ExecContext(ctx, `UPDATE bookings SET otp_wrong = 0, otp_locked_until = ?, prev_status = status,
				version = version + 1, updated_at = ? WHERE id = ?`, until, at, bookingID); err != nil {
				return translate(err)
			}
			if err := read(); err != nil {
				return err
			}
			if err := w.change(b, b.Status, actor, fmt.Sprintf("wrong OTP, try %d of %d: start locked until %s",
				max, max, until.Format(time.RFC3339)), at); err != nil {
				return err
			}
		default:
			w.audit.add(b.ID, at, actor, string(b.Status), string(b.Status),
				fmt.Sprintf("wrong OTP, try %d of %d", b.OTPWrong, max), b.Version)
		}
		return w.flush(ctx, tx)
	})
	if err != nil {
		return dispatch.Booking{}, fmt.Errorf("OTP try on booking %s: %w", bookingID, err)
	}
	return b, nil
}
