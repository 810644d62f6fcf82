package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
	"unicode/utf8"

	"github.com/drivers4me/dispatch/dispatch"
)

var (
	_ dispatch.QuoteStore         = (*DB)(nil)
	_ dispatch.InvoiceStore       = (*DB)(nil)
	_ dispatch.IdempotentBookings = (*DB)(nil)
)

// BookingByIdempotencyKey implements dispatch.IdempotentBookings.
func (d *DB) BookingByIdempotencyKey(ctx context.Context, customerID, key, requestHash string) (dispatch.Booking, bool, error) {
	b, _, err := d.idempotent(ctx, dispatch.NewBooking{CustomerID: customerID, IdempotencyKey: key, RequestHash: requestHash})
	if errors.Is(err, dispatch.ErrNotFound) {
		return dispatch.Booking{}, false, nil
	}
	if err != nil {
		return dispatch.Booking{}, false, err
	}
	return b, true, nil
}

// moneyDest receives moneyCols.
type moneyDest struct {
	surgeBP    int64
	assignedAt sql.NullTime
}

func (m *moneyDest) dest(b *dispatch.Booking) []any {
	return []any{&b.City, &m.surgeBP, &m.assignedAt, &b.CancellationFeePaise}
}

func (m *moneyDest) set(b *dispatch.Booking) {
	b.Surge = surgeOf(m.surgeBP)
	b.AssignedAt = timePtr(m.assignedAt)
}

// surgeBP is a surge multiplier in basis points as kept (0: none); surgeOf reads it back.
func surgeBP(s float64) int64 {
	if !(s > 1) {
		return 0
	}
	return int64(math.Round(s * 10000))
}

func surgeOf(bp int64) float64 {
	if bp <= 10000 {
		return 0
	}
	return float64(bp) / 10000
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// validCharge checks the money of a Change: a charge only comes with a cancel.
func validCharge(c dispatch.Change) error {
	if c.CancellationFeePaise < 0 {
		return fmt.Errorf("cancellation fee %d: %w", c.CancellationFeePaise, dispatch.ErrInvalid)
	}
	if (c.CancellationFeePaise != 0 || c.Charge != "") && c.To != dispatch.StatusCancelled {
		return fmt.Errorf("a charge only comes with a cancel, not %s: %w", c.To, dispatch.ErrInvalid)
	}
	return nil
}

// quoteKeep is how long a quote is kept past its expiry (for support), and quotePurgeEvery how
// many saves, on average, purge old ones (at most 1000 rows at a time, so a purge is short).
const (
	quoteKeep       = 24 * time.Hour
	quotePurgeEvery = 64
)

// SaveQuote keeps a quote; now and then it also drops quotes a day past their expiry.
func (d *DB) SaveQuote(ctx context.Context, q dispatch.Quote) error {
	if err := checkLen("quote id", q.ID, 64, true); err != nil {
		return err
	}
	if err := checkLen("customer id", q.CustomerID, 64, true); err != nil {
		return err
	}
	if err := checkLen("city", q.City, 64, true); err != nil {
		return err
	}
	fare, err := json.Marshal(q.Fare)
	if err != nil {
		return fmt.Errorf("quote %s: fare: %w", q.ID, err)
	}
	_, err = d.db.ExecContext(ctx, `INSERT INTO quotes (id, customer_id, city, surge_bp, pickup_lat, pickup_lng,
		fare, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, q.ID, q.CustomerID, q.City, surgeBP(q.Surge),
		q.Pickup.Lat, q.Pickup.Lng, string(fare), dbTime(q.CreatedAt), dbTime(q.ExpiresAt))
	if err != nil {
		return fmt.Errorf("save quote %s: %w", q.ID, translate(err))
	}
	if rand.IntN(quotePurgeEvery) == 0 {
		// Best effort: a failed purge is tried again by a later save.
		_, _ = d.PurgeQuotes(ctx, q.CreatedAt.Add(-quoteKeep))
	}
	return nil
}

// PurgeQuotes drops up to 1000 quotes that expired before `before`; it returns how many.
func (d *DB) PurgeQuotes(ctx context.Context, before time.Time) (int64, error) {
	res, err := d.db.ExecContext(ctx, "DELETE FROM quotes WHERE expires_at < ? LIMIT 1000", dbTime(before))
	if err != nil {
		return 0, fmt.Errorf("purge quotes: %w", translate(err))
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// Quote returns a quote, or ErrNotFound.
func (d *DB) Quote(ctx context.Context, id string) (dispatch.Quote, error) {
	var q dispatch.Quote
	var bp int64
	var fare string
	err := d.db.QueryRowContext(ctx, `SELECT id, customer_id, city, surge_bp, pickup_lat, pickup_lng, fare,
		created_at, expires_at FROM quotes WHERE id = ?`, id).Scan(&q.ID, &q.CustomerID, &q.City, &bp,
		&q.Pickup.Lat, &q.Pickup.Lng, &fare, &q.CreatedAt, &q.ExpiresAt)
	if err != nil {
		return dispatch.Quote{}, fmt.Errorf("quote %s: %w", id, translate(err))
	}
	if err := json.Unmarshal([]byte(fare), &q.Fare); err != nil {
		return dispatch.Quote{}, fmt.Errorf("fare of quote %s: %w", id, err)
	}
	q.Surge = max(surgeOf(bp), 1)
	q.CreatedAt, q.ExpiresAt = q.CreatedAt.UTC(), q.ExpiresAt.UTC()
	return q, nil
}

// IssueInvoice returns the booking's invoice, issuing it first when it has none (see
// dispatch.InvoiceStore). In one transaction: the booking's row is locked (so two first asks for
// one booking queue, and the second finds the first's invoice), the series' counter row is
// moved by one (created at 1 for a new series) and read back under its lock, and the invoice is
// inserted. Anything failing rolls the counter back with the rest, which is what keeps the
// numbers free of gaps: a number exists only once its invoice is committed. Concurrent issues
// in one series queue on its counter row; a deadlock between them is retried by inTx.
func (d *DB) IssueInvoice(ctx context.Context, bookingID, city, series string, fare dispatch.Fare, at time.Time) (dispatch.Invoice, error) {
	if err := checkLen("series", series, 32, true); err != nil {
		return dispatch.Invoice{}, err
	}
	if err := checkLen("city", city, 64, true); err != nil {
		return dispatch.Invoice{}, err
	}
	body, err := json.Marshal(fare)
	if err != nil {
		return dispatch.Invoice{}, fmt.Errorf("invoice of booking %s: fare: %w", bookingID, err)
	}
	var inv dispatch.Invoice
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		var status string
		if err := tx.QueryRowContext(ctx, "SELECT status FROM bookings WHERE id = ? FOR UPDATE", bookingID).Scan(&status); err != nil {
			return translate(err)
		}
		found, err := invoiceOf(ctx, tx, bookingID)
		if err == nil {
			inv = found
			return nil
		}
		if !errors.Is(err, dispatch.ErrNotFound) {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO invoice_counters (series, last) VALUES (?, 1)
			ON DUPLICATE KEY UPDATE last = last + 1`, series); err != nil {
			return translate(err)
		}
		var seq int64
		if err := tx.QueryRowContext(ctx, "SELECT last FROM invoice_counters WHERE series = ? FOR UPDATE", series).Scan(&seq); err != nil {
			return translate(err)
		}
		inv = dispatch.Invoice{No: fmt.Sprintf("%s/%06d", series, seq), BookingID: bookingID, City: city,
			IssuedAt: dbTime(at), Fare: fare}
		_, err = tx.ExecContext(ctx, `INSERT INTO invoices (booking_id, invoice_no, series, seq, city, issued_at,
			total_paise, fare) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, bookingID, inv.No, series, seq, city, inv.IssuedAt,
			fare.TotalPaise, string(body))
		return translate(err)
	})
	if err != nil {
		return dispatch.Invoice{}, fmt.Errorf("invoice of booking %s: %w", bookingID, err)
	}
	return inv, nil
}

func invoiceOf(ctx context.Context, tx *sql.Tx, bookingID string) (dispatch.Invoice, error) {
	var inv dispatch.Invoice
	var fare string
	err := tx.QueryRowContext(ctx, "SELECT invoice_no, booking_id, city, issued_at, fare FROM invoices WHERE booking_id = ?",
		bookingID).Scan(&inv.No, &inv.BookingID, &inv.City, &inv.IssuedAt, &fare)
	if err != nil {
		return dispatch.Invoice{}, translate(err)
	}
	if err := json.Unmarshal([]byte(fare), &inv.Fare); err != nil {
		return dispatch.Invoice{}, fmt.Errorf("fare of invoice %s: %w", inv.No, err)
	}
	inv.IssuedAt = inv.IssuedAt.UTC()
	return inv, nil
}

// InvoiceNumbers lists the numbers issued in a series, in order (for audits and tests).
func (d *DB) InvoiceNumbers(ctx context.Context, series string) ([]string, error) {
	rows, err := d.db.QueryContext(ctx, "SELECT invoice_no FROM invoices WHERE series = ? ORDER BY seq", series)
	if err != nil {
		return nil, translate(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var no string
		if err := rows.Scan(&no); err != nil {
			return nil, translate(err)
		}
		out = append(out, no)
	}
	return out, translate(rows.Err())
}
