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

// Imports carry the old system's records over (package legacy reads and checks them). Each
// call writes its rows in one transaction and inserts only the rows whose id is not there yet:
// a row already present is left exactly as it is, so running an import twice changes nothing.
// They return how many rows they inserted. Imported bookings get one audit row ("imported")
// and no outbox event: they are history, or scheduled bookings the dispatcher picks up when
// due, and nobody is waiting on a socket for them.

// importTables are the tables ExistingIDs may be asked about.
var importTables = map[string]bool{"customers": true, "drivers": true, "bookings": true}

// ExistingIDs returns which of ids are already in table (customers, drivers or bookings).
func (d *DB) ExistingIDs(ctx context.Context, table string, ids []string) (map[string]bool, error) {
	return existingIDs(ctx, d.db, table, ids)
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func existingIDs(ctx context.Context, q querier, table string, ids []string) (map[string]bool, error) {
	if !importTables[table] {
		return nil, fmt.Errorf("existing ids: table %q: %w", table, dispatch.ErrInvalid)
	}
	out := map[string]bool{}
	for start := 0; start < len(ids); start += 500 {
		chunk := ids[start:min(start+500, len(ids))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		rows, err := q.QueryContext(ctx, "SELECT id FROM "+table+" WHERE id IN (?"+strings.Repeat(",?", len(chunk)-1)+")", args...)
		if err != nil {
			return nil, translate(err)
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, translate(err)
			}
			out[id] = true
		}
		if err := rows.Close(); err != nil {
			return nil, translate(err)
		}
	}
	return out, nil
}

// insertNew runs fn for each row whose id is not yet in table, inside tx.
func insertNew[T any](ctx context.Context, tx *sql.Tx, table string, rows []T, id func(T) string, fn func(T) error) (int, error) {
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = id(r)
	}
	have, err := existingIDs(ctx, tx, table, ids)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range rows {
		if have[id(r)] {
			continue
		}
		if err := fn(r); err != nil {
			return n, err
		}
		have[id(r)] = true // the same id twice in one call: the first one wins
		n++
	}
	return n, nil
}

// ImportCustomers inserts the customers not yet present.
func (d *DB) ImportCustomers(ctx context.Context, cs []dispatch.ImportedCustomer) (int, error) {
	for _, c := range cs {
		if err := checkLen("customer id", c.ID, 64, true); err != nil {
			return 0, fmt.Errorf("import customers: %w", err)
		}
	}
	var n int
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = insertNew(ctx, tx, "customers", cs, func(c dispatch.ImportedCustomer) string { return c.ID }, func(c dispatch.ImportedCustomer) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO customers (id, created_at) VALUES (?, ?)", c.ID, dbTime(c.CreatedAt))
			return translate(err)
		})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("import customers: %w", err)
	}
	return n, nil
}

// ImportDrivers inserts the drivers not yet present (a driver already here keeps the profile
// it has: the new system's is the newer one).
func (d *DB) ImportDrivers(ctx context.Context, ds []dispatch.ImportedDriver) (int, error) {
	type row struct {
		dispatch.ImportedDriver
		transmissions string
	}
	rows := make([]row, len(ds))
	for i, dr := range ds {
		p := dr.Profile
		if err := checkLen("driver id", p.ID, 64, true); err != nil {
			return 0, fmt.Errorf("import drivers: %w", err)
		}
		if err := checkLen("driver name", p.Name, 200, false); err != nil {
			return 0, fmt.Errorf("import driver %s: %w", p.ID, err)
		}
		trs := p.Transmissions
		if trs == nil {
			trs = []dispatch.Transmission{}
		}
		tr, err := json.Marshal(trs)
		if err != nil {
			return 0, fmt.Errorf("import driver %s: %w", p.ID, err)
		}
		rows[i] = row{dr, string(tr)}
	}
	var n int
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = insertNew(ctx, tx, "drivers", rows, func(r row) string { return r.Profile.ID }, func(r row) error {
			at := dbTime(r.CreatedAt)
			_, err := tx.ExecContext(ctx, `INSERT INTO drivers (id, name, rating, transmissions, created_at, updated_at)
				VALUES (?, ?, ?, ?, ?, ?)`, r.Profile.ID, r.Profile.Name, r.Profile.Rating, r.transmissions, at, at)
			return translate(err)
		})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("import drivers: %w", err)
	}
	return n, nil
}

// importableStatus are the states a booking may be imported in: finished ones, and scheduled
// ones (the dispatcher starts their search when they are due). A booking in flight is not.
var importableStatus = map[dispatch.Status]bool{
	dispatch.StatusScheduled: true, dispatch.StatusCompleted: true,
	dispatch.StatusCancelled: true, dispatch.StatusUnfulfilled: true,
}

// ImportBookings inserts the bookings not yet present, each with one audit row.
func (d *DB) ImportBookings(ctx context.Context, bs []dispatch.Booking) (int, error) {
	type row struct {
		dispatch.Booking
		fare string
	}
	rows := make([]row, len(bs))
	for i, b := range bs {
		if !importableStatus[b.Status] {
			return 0, fmt.Errorf("import booking %s: status %q: %w", b.ID, b.Status, dispatch.ErrInvalid)
		}
		for _, c := range []struct {
			field, v string
			most     int
			required bool
		}{{"booking id", b.ID, 64, true}, {"customer id", b.CustomerID, 64, true}, {"pickup address", b.Pickup.Address, 500, true},
			{"driver id", b.DriverID(), 64, false}, {"cancel reason", b.CancelReason, 500, false}, {"otp", b.OTP, 16, false}} {
			if err := checkLen(c.field, c.v, c.most, c.required); err != nil {
				return 0, fmt.Errorf("import booking %s: %w", b.ID, err)
			}
		}
		fare, err := json.Marshal(b.Fare)
		if err != nil {
			return 0, fmt.Errorf("import booking %s: fare: %w", b.ID, err)
		}
		rows[i] = row{b, string(fare)}
	}
	var n int
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = insertNew(ctx, tx, "bookings", rows, func(r row) string { return r.ID }, func(r row) error {
			var driverID, driverName sql.NullString
			var driverRating sql.NullFloat64
			if r.Driver != nil {
				driverID = sql.NullString{String: r.Driver.ID, Valid: true}
				driverName = sql.NullString{String: r.Driver.Name, Valid: true}
				driverRating = sql.NullFloat64{Float64: r.Driver.Rating, Valid: true}
			}
			updated := dbTime(r.CreatedAt)
			for _, t := range []*time.Time{r.ArrivedAt, r.StartedAt, r.EndedAt} {
				if t != nil && t.After(updated) {
					updated = dbTime(*t)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO bookings (id, status, prev_status, customer_id,
				pickup_lat, pickup_lng, pickup_address, hours, start_at, created_at, transmission, driver_id,
				driver_name, driver_rating, otp, fare, arrived_at, started_at, ended_at, cancel_reason, version,
				updated_at) VALUES (?, ?, '', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)`,
				r.ID, r.Status, r.CustomerID, r.Pickup.Lat, r.Pickup.Lng, r.Pickup.Address, r.Hours,
				dbTime(r.StartAt), dbTime(r.CreatedAt), r.Car.Transmission, driverID, driverName, driverRating,
				r.OTP, r.fare, nullTime(r.ArrivedAt), nullTime(r.StartedAt), nullTime(r.EndedAt), r.CancelReason, updated)
			if err != nil {
				return translate(err)
			}
			_, err = tx.ExecContext(ctx, `INSERT INTO booking_events (booking_id, at, actor, from_status, to_status, reason, version)
				VALUES (?, ?, 'import', '', ?, 'imported from the old system', 1)`, r.ID, now(), r.Status)
			return translate(err)
		})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("import bookings: %w", err)
	}
	return n, nil
}

func nullTime(t *time.Time) sql.NullTime {
	if t == nil {
		return sql.NullTime{}
	}
	return sql.NullTime{Time: dbTime(*t), Valid: true}
}
