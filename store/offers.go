package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

const offerCols = "id, booking_id, driver_id, status, distance_m, region, fence, created_at, expires_at"

func scanOffer(s scanner) (dispatch.Offer, error) {
	var o dispatch.Offer
	var status string
	if err := s.Scan(&o.ID, &o.BookingID, &o.DriverID, &status, &o.DistanceM, &o.Region, &o.Fence, &o.CreatedAt, &o.ExpiresAt); err != nil {
		return dispatch.Offer{}, err
	}
	o.Status = dispatch.OfferStatus(status)
	o.CreatedAt, o.ExpiresAt = o.CreatedAt.UTC(), o.ExpiresAt.UTC()
	return o, nil
}

// CreateOffer records an open offer of a searching booking (o.Status is ignored). ErrNotFound for
// an unknown booking; ErrConflict when the booking is no longer searching, the offer id is taken,
// or o.Region is set and an offer was already made in that region under a higher o.Fence (the
// caller lost the region's lease). Offers without a region are not fenced.
func (d *DB) CreateOffer(ctx context.Context, o dispatch.Offer) error {
	for _, f := range []struct {
		name, v  string
		required bool
	}{{"offer id", o.ID, true}, {"booking id", o.BookingID, true}, {"driver id", o.DriverID, true}, {"region", o.Region, false}} {
		if err := checkLen(f.name, f.v, 64, f.required); err != nil {
			return fmt.Errorf("create offer %s: %w", o.ID, err)
		}
	}
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var status string
		err := tx.QueryRowContext(ctx, "SELECT status FROM bookings WHERE id = ?", o.BookingID).Scan(&status)
		if err != nil {
			return fmt.Errorf("booking %s: %w", o.BookingID, translate(err))
		}
		if status != string(dispatch.StatusSearching) {
			return fmt.Errorf("booking %s is %s: %w", o.BookingID, status, dispatch.ErrConflict)
		}
		if o.Region != "" {
			// Raise the region's fence to ours (the row stays locked until commit), then see
			// whether someone had raised it higher.
			if _, err := tx.ExecContext(ctx, `INSERT INTO region_fences (region, fence) VALUES (?, ?)
				ON DUPLICATE KEY UPDATE fence = GREATEST(fence, VALUES(fence))`, o.Region, o.Fence); err != nil {
				return translate(err)
			}
			var fence int64
			if err := tx.QueryRowContext(ctx, "SELECT fence FROM region_fences WHERE region = ?", o.Region).Scan(&fence); err != nil {
				return translate(err)
			}
			if fence > o.Fence {
				return fmt.Errorf("region %s is fenced at %d, above %d: %w", o.Region, fence, o.Fence, dispatch.ErrConflict)
			}
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO offers (id, booking_id, driver_id, status, distance_m, region, fence,
			created_at, expires_at) VALUES (?, ?, ?, 'open', ?, ?, ?, ?, ?)`,
			o.ID, o.BookingID, o.DriverID, o.DistanceM, o.Region, o.Fence, dbTime(o.CreatedAt), dbTime(o.ExpiresAt))
		return translate(err)
	})
	if err != nil {
		return fmt.Errorf("create offer %s: %w", o.ID, err)
	}
	return nil
}

// AcceptOffer, in one transaction: the offer must be open, belong to driver and not have expired
// at `at`; it becomes accepted and its booking goes searching -> assigned to driver, with the
// calendar block, the audit row and the outbox event. ErrNotFound for an unknown offer,
// ErrConflict for any other refusal (offer not open, not this driver's, expired, booking no longer
// searching, its block overlapping one of the driver's); nothing changes then. Failures of the
// database itself keep their own kind (ErrUnavailable...).
func (d *DB) AcceptOffer(ctx context.Context, offerID string, driver dispatch.DriverRef, at time.Time) (dispatch.Booking, error) {
	at = dbTime(at)
	var b dispatch.Booking
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE offers SET status = 'accepted', closed_at = ?
			WHERE id = ? AND status = 'open' AND driver_id = ? AND expires_at > ?`, at, offerID, driver.ID, at)
		if err != nil {
			return translate(err)
		}
		var bookingID string
		if n, err := res.RowsAffected(); err != nil {
			return translate(err)
		} else if n != 1 {
			o, err := scanOffer(tx.QueryRowContext(ctx, "SELECT "+offerCols+" FROM offers WHERE id = ?", offerID))
			if err != nil {
				return translate(err)
			}
			return withKind(dispatch.ErrConflict, offerRefusal(o, driver.ID, at))
		}
		if err := tx.QueryRowContext(ctx, "SELECT booking_id FROM offers WHERE id = ?", offerID).Scan(&bookingID); err != nil {
			return translate(err)
		}
		b, err = transition(ctx, tx, dispatch.Change{
			BookingID: bookingID,
			From:      []dispatch.Status{dispatch.StatusSearching},
			To:        dispatch.StatusAssigned,
			Driver:    &driver,
			Actor:     "driver:" + driver.ID,
			Reason:    "accepted offer " + offerID,
			At:        at,
		})
		if errors.Is(err, dispatch.ErrNotFound) || errors.Is(err, dispatch.ErrInvalid) {
			// Only an unknown offer is ErrNotFound: its booking's refusal is a conflict, told as
			// a client may be told it (no driver's text flattened into it).
			return dispatch.Errorf(dispatch.Conflict, "conflict: %s", dispatch.Message(err))
		}
		return err
	})
	if err != nil {
		return dispatch.Booking{}, fmt.Errorf("accept offer %s by driver %s: %w", offerID, driver.ID, err)
	}
	return b, nil
}

func offerRefusal(o dispatch.Offer, driverID string, at time.Time) error {
	switch {
	case o.Status != dispatch.OfferOpen:
		return fmt.Errorf("offer is %s", o.Status)
	case o.DriverID != driverID:
		return errors.New("offer is another driver's")
	case !o.ExpiresAt.After(at):
		return fmt.Errorf("offer expired at %s", o.ExpiresAt.Format(time.RFC3339Nano))
	}
	return errors.New("offer changed meanwhile")
}

// CloseOffer moves an open offer to declined, expired or revoked and returns it. ErrConflict if
// it is not open (or not driverID's, when driverID is set), ErrNotFound for an unknown offer,
// ErrInvalid for another target status.
func (d *DB) CloseOffer(ctx context.Context, offerID, driverID string, to dispatch.OfferStatus, at time.Time) (dispatch.Offer, error) {
	switch to {
	case dispatch.OfferDeclined, dispatch.OfferExpired, dispatch.OfferRevoked:
	default:
		return dispatch.Offer{}, fmt.Errorf("close offer %s as %q: %w", offerID, to, dispatch.ErrInvalid)
	}
	at = dbTime(at)
	q := "UPDATE offers SET status = ?, closed_at = ? WHERE id = ? AND status = 'open'"
	args := []any{to, at, offerID}
	if driverID != "" {
		q, args = q+" AND driver_id = ?", append(args, driverID)
	}
	res, err := d.db.ExecContext(ctx, q, args...)
	if err != nil {
		return dispatch.Offer{}, fmt.Errorf("close offer %s: %w", offerID, translate(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return dispatch.Offer{}, fmt.Errorf("close offer %s: %w", offerID, translate(err))
	}
	o, err := d.Offer(ctx, offerID)
	if err != nil {
		return dispatch.Offer{}, fmt.Errorf("close offer: %w", err)
	}
	if n != 1 {
		why := fmt.Errorf("offer is %s", o.Status)
		if o.Status == dispatch.OfferOpen {
			why = errors.New("offer is another driver's")
		}
		return dispatch.Offer{}, fmt.Errorf("close offer %s: %w", offerID, withKind(dispatch.ErrConflict, why))
	}
	return o, nil
}

// Offer returns one offer, or ErrNotFound.
func (d *DB) Offer(ctx context.Context, id string) (dispatch.Offer, error) {
	o, err := scanOffer(d.db.QueryRowContext(ctx, "SELECT "+offerCols+" FROM offers WHERE id = ?", id))
	if err != nil {
		return dispatch.Offer{}, fmt.Errorf("offer %s: %w", id, translate(err))
	}
	return o, nil
}

// OpenOffers lists the open offers of a driver, or of all drivers when driverID is "", oldest
// first. Offers past their expiry stay open (and listed) until someone closes them as expired.
func (d *DB) OpenOffers(ctx context.Context, driverID string) ([]dispatch.Offer, error) {
	q := "SELECT " + offerCols + " FROM offers WHERE status = 'open'"
	var args []any
	if driverID != "" {
		q, args = q+" AND driver_id = ?", append(args, driverID)
	}
	rows, err := d.db.QueryContext(ctx, q+" ORDER BY created_at, id", args...)
	if err != nil {
		return nil, fmt.Errorf("open offers: %w", translate(err))
	}
	defer rows.Close()
	os := []dispatch.Offer{}
	for rows.Next() {
		o, err := scanOffer(rows)
		if err != nil {
			return nil, fmt.Errorf("open offers: %w", translate(err))
		}
		os = append(os, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("open offers: %w", translate(err))
	}
	return os, nil
}

// DeclinedBy lists, sorted, the drivers who declined or let expire an offer of the booking.
func (d *DB) DeclinedBy(ctx context.Context, bookingID string) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT DISTINCT driver_id FROM offers
		WHERE booking_id = ? AND status IN ('declined', 'expired') ORDER BY driver_id`, bookingID)
	if err != nil {
		return nil, fmt.Errorf("declined offers of booking %s: %w", bookingID, translate(err))
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("declined offers of booking %s: %w", bookingID, translate(err))
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("declined offers of booking %s: %w", bookingID, translate(err))
	}
	return ids, nil
}
