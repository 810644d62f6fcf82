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
