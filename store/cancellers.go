package store

import (
	"context"
	"fmt"
	"strings"
)

// DriversWhoCancelled lists the drivers who accepted the booking and then gave it back, read
// from the audit trail (a driver's change from assigned or arrived back to searching).
func (d *DB) DriversWhoCancelled(ctx context.Context, bookingID string) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT DISTINCT actor FROM booking_events
		WHERE booking_id = ? AND to_status = 'searching' AND from_status IN ('assigned', 'arrived')
		AND actor LIKE 'driver:%' ORDER BY actor`, bookingID)
	if err != nil {
		return nil, fmt.Errorf("drivers who cancelled booking %s: %w", bookingID, translate(err))
	}
	defer rows.Close()
	ids := []string{}
	for rows.Next() {
		var actor string
		if err := rows.Scan(&actor); err != nil {
			return nil, fmt.Errorf("drivers who cancelled booking %s: %w", bookingID, translate(err))
		}
		ids = append(ids, strings.TrimPrefix(actor, "driver:"))
	}
	return ids, rows.Err()
}

// Exclusions returns, for many bookings at once, the drivers who declined or let expire an offer
// of each (declined) and the drivers who accepted and then gave each back (cancelled): the
// matcher reads these for every booking it takes over, in two queries rather than two a booking.
func (d *DB) Exclusions(ctx context.Context, bookingIDs []string) (declined, cancelled map[string][]string, err error) {
	declined, cancelled = map[string][]string{}, map[string][]string{}
	for len(bookingIDs) > 0 {
		chunk := bookingIDs[:min(len(bookingIDs), 500)]
		bookingIDs = bookingIDs[len(chunk):]
		marks := strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		if err := d.pairs(ctx, declined, `SELECT DISTINCT booking_id, driver_id FROM offers
			WHERE booking_id IN (`+marks+`) AND status IN ('declined', 'expired')`, args); err != nil {
			return nil, nil, fmt.Errorf("declined offers: %w", err)
		}
		if err := d.pairs(ctx, cancelled, `SELECT DISTINCT booking_id, actor FROM booking_events
			WHERE booking_id IN (`+marks+`) AND to_status = 'searching' AND from_status IN ('assigned', 'arrived')
			AND actor LIKE 'driver:%'`, args); err != nil {
			return nil, nil, fmt.Errorf("drivers who cancelled: %w", err)
		}
	}
	for id, actors := range cancelled {
		for i, a := range actors {
			actors[i] = strings.TrimPrefix(a, "driver:")
		}
		cancelled[id] = actors
	}
	return declined, cancelled, nil
}

func (d *DB) pairs(ctx context.Context, into map[string][]string, q string, args []any) error {
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return translate(err)
	}
	defer rows.Close()
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return translate(err)
		}
		into[k] = append(into[k], v)
	}
	return translate(rows.Err())
}
