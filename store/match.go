package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// The matcher's window-sized calls (dispatch.MatchStore): a window's offers of one region in one
// transaction, and the drivers' profiles by change.

// CreateOffers implements dispatch.MatchStore: in one transaction, the region's fence is raised
// to fence (ErrConflict for every offer if it was higher: the caller lost the region), the
// offers' bookings are read, and the offers of those still searching are inserted in one
// statement. The others come back in refused, by booking id.
func (d *DB) CreateOffers(ctx context.Context, region string, fence int64, offers []dispatch.Offer) (map[string]bool, error) {
	if len(offers) == 0 {
		return nil, nil
	}
	if err := checkLen("region", region, 64, true); err != nil {
		return nil, fmt.Errorf("create offers: %w", err)
	}
	for _, o := range offers {
		for _, f := range []struct{ name, v string }{{"offer id", o.ID}, {"booking id", o.BookingID}, {"driver id", o.DriverID}} {
			if err := checkLen(f.name, f.v, 64, true); err != nil {
				return nil, fmt.Errorf("create offers: %w", err)
			}
		}
	}
	var refused map[string]bool
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		refused = map[string]bool{}
		if _, err := tx.ExecContext(ctx, `INSERT INTO region_fences (region, fence) VALUES (?, ?)
			ON DUPLICATE KEY UPDATE fence = GREATEST(fence, VALUES(fence))`, region, fence); err != nil {
			return translate(err)
		}
		var held int64
		if err := tx.QueryRowContext(ctx, "SELECT fence FROM region_fences WHERE region = ?", region).Scan(&held); err != nil {
			return translate(err)
		}
		if held > fence {
			return fmt.Errorf("region %s is fenced at %d, above %d: %w", region, held, fence, dispatch.ErrConflict)
		}
		args := make([]any, len(offers))
		for i, o := range offers {
			args[i] = o.BookingID
		}
		rows, err := tx.QueryContext(ctx, "SELECT id, status FROM bookings WHERE id IN ("+placeholders(len(offers))+")", args...)
		if err != nil {
			return translate(err)
		}
		searching := map[string]bool{}
		for rows.Next() {
			var id, status string
			if err := rows.Scan(&id, &status); err != nil {
				rows.Close()
				return translate(err)
			}
			searching[id] = status == string(dispatch.StatusSearching)
		}
		if err := rows.Err(); err != nil {
			rows.Close()
			return translate(err)
		}
		rows.Close()
		var vals []string
		var ins []any
		for _, o := range offers {
			if !searching[o.BookingID] {
				refused[o.BookingID] = true
				continue
			}
			vals = append(vals, "(?, ?, ?, 'open', ?, ?, ?, ?, ?)")
			ins = append(ins, o.ID, o.BookingID, o.DriverID, o.DistanceM, region, fence, dbTime(o.CreatedAt), dbTime(o.ExpiresAt))
		}
		if len(vals) == 0 {
			return nil
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO offers (id, booking_id, driver_id, status, distance_m, region, fence,
			created_at, expires_at) VALUES `+strings.Join(vals, ", "), ins...)
		return translate(err)
	})
	if err != nil {
		return nil, fmt.Errorf("create %d offers in region %s: %w", len(offers), region, err)
	}
	return refused, nil
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// DriversChangedSince implements dispatch.MatchStore.
func (d *DB) DriversChangedSince(ctx context.Context, since time.Time, limit int) ([]dispatch.DriverProfile, time.Time, error) {
	from := time.Unix(0, 0).UTC() // every profile (dbTime takes a zero time for now)
	if !since.IsZero() {
		from = dbTime(since)
	}
	rows, err := d.db.QueryContext(ctx, `SELECT id, name, rating, transmissions, updated_at FROM drivers
		WHERE updated_at >= ? ORDER BY updated_at, id LIMIT ?`, from, limit)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("drivers changed since %s: %w", since.Format(time.RFC3339Nano), translate(err))
	}
	defer rows.Close()
	var out []dispatch.DriverProfile
	var last time.Time
	for rows.Next() {
		var p dispatch.DriverProfile
		var tr []byte
		if err := rows.Scan(&p.ID, &p.Name, &p.Rating, &tr, &last); err != nil {
			return nil, time.Time{}, fmt.Errorf("drivers changed: %w", translate(err))
		}
		if err := json.Unmarshal(tr, &p.Transmissions); err != nil {
			return nil, time.Time{}, fmt.Errorf("driver %s: transmissions: %w", p.ID, err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, time.Time{}, fmt.Errorf("drivers changed: %w", translate(err))
	}
	return out, last.UTC(), nil
}

// bookingColsOf is bookingCols with each column qualified by alias (for joins).
func bookingColsOf(alias string) string {
	cols := strings.Split(bookingCols, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// resumeSQL reads what n drivers' sockets resume: the candidates for each one's current
// booking (as ActiveBookingOf chooses) and its open offers with their bookings, in one
// statement. A socket's hello costs one query (it cost four, and thousands of drivers
// connecting at once queued the matcher behind them), and sockets opening together share one
// (dispatch's resume batch). A row's driver is in the offer's driver column, the block's for
// a current booking's row. Every column has a name of its own: go-mysql-server merges the
// branches' columns by name.
func resumeSQL(n int) string {
	in := "?" + strings.Repeat(", ?", n-1)
	offer := []string{"o.id", "o.booking_id", "o.driver_id", "o.status", "o.distance_m", "o.region", "o.fence", "o.created_at", "o.expires_at"}
	noOffer := []string{"''", "''", "db.driver_id", "''", "0", "''", "0", "b.created_at", "b.created_at"}
	book := strings.Split(bookingColsOf("b"), ", ")
	sel := func(kind string, cols ...[]string) string {
		out := []string{"'" + kind + "' AS c0"}
		n := 1
		for _, cs := range cols {
			for _, c := range cs {
				out = append(out, fmt.Sprintf("%s AS c%d", c, n))
				n++
			}
		}
		return "SELECT " + strings.Join(out, ", ")
	}
	return sel("a", noOffer, book) + ` FROM driver_blocks db JOIN bookings b ON b.id = db.booking_id
	WHERE db.driver_id IN (` + in + `)
	AND (b.status IN ('arrived', 'in_progress') OR (b.status = 'assigned' AND b.start_at <= ?))
	UNION ALL ` + sel("o", offer, book) + ` FROM offers o JOIN bookings b ON b.id = o.booking_id WHERE o.driver_id IN (` + in + `) AND o.status = 'open'`
}

// Resume implements dispatch.BookingStore.
func (d *DB) Resume(ctx context.Context, driverID string) (dispatch.Resume, error) {
	rs, err := d.ResumeMany(ctx, []string{driverID})
	if err != nil {
		return dispatch.Resume{}, fmt.Errorf("resume driver %s: %w", driverID, err)
	}
	return rs[driverID], nil
}

// ResumeMany is Resume for several drivers in one query (dispatch.ResumeReader); a driver
// with nothing to resume has no entry.
func (d *DB) ResumeMany(ctx context.Context, driverIDs []string) (map[string]dispatch.Resume, error) {
	out := map[string]dispatch.Resume{}
	if len(driverIDs) == 0 {
		return out, nil
	}
	args := make([]any, 0, 2*len(driverIDs)+1)
	for _, id := range driverIDs {
		args = append(args, id)
	}
	args = append(args, now().Add(dispatch.DueWithin))
	for _, id := range driverIDs {
		args = append(args, id)
	}
	rows, err := d.db.QueryContext(ctx, resumeSQL(len(driverIDs)), args...)
	if err != nil {
		return nil, fmt.Errorf("resume %d drivers: %w", len(driverIDs), translate(err))
	}
	defer rows.Close()
	for rows.Next() {
		var kind, status string
		var o dispatch.Offer
		b, err := scanBooking(rows, &kind, &o.ID, &o.BookingID, &o.DriverID, &status, &o.DistanceM, &o.Region, &o.Fence, &o.CreatedAt, &o.ExpiresAt)
		if err != nil {
			return nil, fmt.Errorf("resume %d drivers: %w", len(driverIDs), translate(err))
		}
		r := out[o.DriverID]
		if kind == "a" {
			// As ActiveBookingOf: one arrived or in progress first, else the assigned one that
			// starts first.
			if r.Active == nil || activeBefore(b, *r.Active) {
				r.Active = &b
			}
		} else {
			o.Status = dispatch.OfferStatus(status)
			o.CreatedAt, o.ExpiresAt = o.CreatedAt.UTC(), o.ExpiresAt.UTC()
			r.Offers = append(r.Offers, dispatch.OfferOf{Offer: o, Booking: b})
		}
		out[o.DriverID] = r
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("resume %d drivers: %w", len(driverIDs), translate(err))
	}
	return out, nil
}

func activeBefore(a, b dispatch.Booking) bool {
	if (a.Status == dispatch.StatusAssigned) != (b.Status == dispatch.StatusAssigned) {
		return b.Status == dispatch.StatusAssigned
	}
	if !a.StartAt.Equal(b.StartAt) {
		return a.StartAt.Before(b.StartAt)
	}
	return a.ID < b.ID
}
