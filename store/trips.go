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

// maxRouteBytes bounds one trip's encoded route: a day at one point a second is about 1 MiB.
const maxRouteBytes = 1 << 20

// maxStatementBytes bounds one multi-row INSERT, far below max_allowed_packet (by default 16 MiB
// on MariaDB 10.11, 64 MiB on MySQL 8.0).
const maxStatementBytes = 2 << 20

// Trip returns the recorded trip of a completed booking, or ErrNotFound.
func (d *DB) Trip(ctx context.Context, bookingID string) (dispatch.Trip, error) {
	var t dispatch.Trip
	var fare []byte
	err := d.db.QueryRowContext(ctx, `SELECT booking_id, driver_id, customer_id, started_at, ended_at,
		distance_m, route_points, route, fare FROM trips WHERE booking_id = ?`, bookingID).
		Scan(&t.BookingID, &t.DriverID, &t.CustomerID, &t.StartedAt, &t.EndedAt, &t.DistanceM, &t.Points,
			&t.Polyline, &fare)
	if err != nil {
		return dispatch.Trip{}, fmt.Errorf("trip of booking %s: %w", bookingID, translate(err))
	}
	if err := json.Unmarshal(fare, &t.Fare); err != nil {
		return dispatch.Trip{}, fmt.Errorf("trip of booking %s: fare: %w", bookingID, err)
	}
	t.StartedAt, t.EndedAt = t.StartedAt.UTC(), t.EndedAt.UTC()
	return t, nil
}

// CompleteTrips applies many completions (in_progress -> completed) in one transaction, for
// throughput: one commit, and so one log flush, for the lot, and multi-row inserts for their
// audit rows, outbox events and trips. Each change is applied exactly as Transition would apply
// it, as its own conditional UPDATE, with its own audit row, event and trip.
//
// A change that cannot apply is refused alone: bookings[i] is then the zero Booking and refusals[i]
// says why (ErrInvalid, ErrNotFound, ErrConflict; a change to anything but completed is
// ErrInvalid), and the others still commit. err is set when the transaction as a whole failed;
// then nothing was written. Changes of the same booking in one call: the first applies, the
// others are refused.
func (d *DB) CompleteTrips(ctx context.Context, cs []dispatch.Change) (bookings []dispatch.Booking, refusals []error, err error) {
	bookings, refusals, err = d.completeTrips(ctx, cs)
	if err != nil {
		return nil, nil, fmt.Errorf("complete %d trips: %w", len(cs), err)
	}
	for i, r := range refusals {
		if r != nil {
			refusals[i] = fmt.Errorf("booking %s to %s: %w", cs[i].BookingID, cs[i].To, r)
		}
	}
	return bookings, refusals, nil
}

func (d *DB) completeTrips(ctx context.Context, cs []dispatch.Change) (bookings []dispatch.Booking, refusals []error, err error) {
	err = d.inTx(ctx, func(tx *sql.Tx) error {
		bookings, refusals = make([]dispatch.Booking, len(cs)), make([]error, len(cs))
		var done []int
		var ids []any
		for i, c := range cs {
			if c.To != dispatch.StatusCompleted {
				refusals[i] = fmt.Errorf("only completions: %w", dispatch.ErrInvalid)
				continue
			}
			err := apply(ctx, tx, c)
			switch {
			case err == nil:
				done, ids = append(done, i), append(ids, c.BookingID)
			case errors.Is(err, dispatch.ErrConflict) || errors.Is(err, dispatch.ErrNotFound) || errors.Is(err, dispatch.ErrInvalid):
				// The refused statement changed nothing; the transaction goes on.
				refusals[i] = err
			default:
				return err
			}
		}
		if len(done) == 0 {
			return nil
		}
		in := "(?" + strings.Repeat(", ?", len(ids)-1) + ")"
		if _, err := tx.ExecContext(ctx, "DELETE FROM driver_blocks WHERE booking_id IN "+in, ids...); err != nil {
			return translate(err)
		}
		type read struct {
			b    dispatch.Booking
			prev string
		}
		got := make(map[string]read, len(ids))
		rows, err := tx.QueryContext(ctx, "SELECT prev_status, "+bookingCols+" FROM bookings WHERE id IN "+in, ids...)
		if err != nil {
			return translate(err)
		}
		for rows.Next() {
			var r read
			if r.b, err = scanBooking(rows, &r.prev); err != nil {
				rows.Close()
				return translate(err)
			}
			got[r.b.ID] = r
		}
		if err := rows.Close(); err != nil {
			return translate(err)
		}
		if err := rows.Err(); err != nil {
			return translate(err)
		}
		w := newWrites()
		for _, i := range done {
			c := cs[i]
			r, ok := got[c.BookingID]
			if !ok {
				return fmt.Errorf("booking %s vanished after its update", c.BookingID)
			}
			bookings[i] = r.b
			if err := w.change(r.b, dispatch.Status(r.prev), c.Actor, c.Reason, dbTime(c.At)); err != nil {
				return err
			}
			if err := w.trip(r.b, c.Route); err != nil {
				return err
			}
		}
		return w.flush(ctx, tx)
	})
	if err != nil {
		return nil, nil, err
	}
	return bookings, refusals, nil
}

// pendingCompletion is a completion queued by Transition for the committers.
type pendingCompletion struct {
	ctx  context.Context
	c    dispatch.Change
	done chan completionResult // buffered: a committer never waits for its caller
}

type completionResult struct {
	b   dispatch.Booking
	err error
}

func (d *DB) startCommitters() {
	d.stop = make(chan struct{})
	d.completions = make(chan *pendingCompletion, d.opts.CompletionBatch*d.opts.CompletionCommitters)
	for range d.opts.CompletionCommitters {
		d.committers.Add(1)
		go d.commitLoop()
	}
}

// completeGrouped hands c to the committers and waits for its outcome.
func (d *DB) completeGrouped(ctx context.Context, c dispatch.Change) (dispatch.Booking, error) {
	p := &pendingCompletion{ctx: ctx, c: c, done: make(chan completionResult, 1)}
	select {
	case d.completions <- p:
	case <-ctx.Done():
		return dispatch.Booking{}, ctx.Err()
	case <-d.stop:
		return dispatch.Booking{}, fmt.Errorf("store closed: %w", dispatch.ErrUnavailable)
	}
	select {
	case r := <-p.done:
		return r.b, r.err
	case <-ctx.Done():
		return dispatch.Booking{}, ctx.Err()
	case <-d.stop:
		d.committers.Wait() // a committer holding p answers before it returns
		select {
		case r := <-p.done:
			return r.b, r.err
		default:
			return dispatch.Booking{}, fmt.Errorf("store closed: %w", dispatch.ErrUnavailable)
		}
	}
}

// commitLoop is one committer: it takes the completions queued (the first one waited for, the
// rest as many as are there, up to CompletionBatch) and commits them together, until Close.
func (d *DB) commitLoop() {
	defer d.committers.Done()
	batch := make([]*pendingCompletion, 0, d.opts.CompletionBatch)
	for {
		batch = batch[:0]
		select {
		case <-d.stop:
			d.refuseQueued()
			return
		case p := <-d.completions:
			batch = append(batch, p)
		}
	more:
		for len(batch) < d.opts.CompletionBatch {
			select {
			case p := <-d.completions:
				batch = append(batch, p)
			default:
				break more
			}
		}
		d.commitBatch(batch)
	}
}

func (d *DB) commitBatch(batch []*pendingCompletion) {
	cs := make([]dispatch.Change, 0, len(batch))
	live := batch[:0:0]
	for _, p := range batch {
		if err := p.ctx.Err(); err != nil {
			p.done <- completionResult{err: err} // its caller has gone: not tried
			continue
		}
		live, cs = append(live, p), append(cs, p.c)
	}
	if len(live) == 0 {
		return
	}
	// The transaction is everyone's: no single caller's cancellation ends it.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bs, refusals, err := d.completeTrips(ctx, cs)
	for i, p := range live {
		switch {
		case err != nil:
			p.done <- completionResult{err: err}
		case refusals[i] != nil:
			p.done <- completionResult{err: refusals[i]}
		default:
			p.done <- completionResult{b: bs[i]}
		}
	}
}

// refuseQueued answers what is still queued at Close.
func (d *DB) refuseQueued() {
	for {
		select {
		case p := <-d.completions:
			p.done <- completionResult{err: fmt.Errorf("store closed: %w", dispatch.ErrUnavailable)}
		default:
			return
		}
	}
}

// writes gathers the rows that changes of bookings add (audit, outbox, trips) and inserts them
// with as few statements as fit maxStatementBytes. Build one per transaction attempt.
type writes struct {
	audit, outbox, trips inserter
}

func newWrites() *writes {
	return &writes{
		audit: inserter{head: "INSERT INTO booking_events (booking_id, at, actor, from_status, to_status, reason, version) VALUES ",
			tuple: "(?, ?, ?, ?, ?, ?, ?)"},
		outbox: inserter{head: "INSERT INTO outbox (event_id, booking_id, type, payload, created_at) VALUES ",
			tuple: "(?, ?, ?, ?, ?)"},
		trips: inserter{head: `INSERT INTO trips (booking_id, driver_id, customer_id, started_at, ended_at, distance_m,
			route_points, route, fare_paise, fare) VALUES `, tuple: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"},
	}
}

// change adds the audit row and the outbox event of b's change from `from`.
func (w *writes) change(b dispatch.Booking, from dispatch.Status, actor, reason string, at time.Time) error {
	w.audit.add(b.ID, at, actor, string(from), string(b.Status), reason, b.Version)
	e := dispatch.Event{ID: newID("ev"), Type: "booking", BookingID: b.ID, Booking: b, At: at, Version: b.Version}
	payload, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("event of booking %s: %w", b.ID, err)
	}
	w.outbox.add(e.ID, b.ID, e.Type, string(payload), at)
	return nil
}

// trip adds the trip of b, just completed, along route (nil: none recorded).
func (w *writes) trip(b dispatch.Booking, route *dispatch.Route) error {
	var r dispatch.Route
	if route != nil {
		r = *route
	}
	if b.EndedAt == nil {
		return fmt.Errorf("trip of booking %s: no end time", b.ID)
	}
	started := b.StartAt // a booking in progress always has started_at; this is only a guard
	if b.StartedAt != nil {
		started = *b.StartedAt
	}
	fare, err := json.Marshal(b.Fare)
	if err != nil {
		return fmt.Errorf("trip of booking %s: fare: %w", b.ID, err)
	}
	w.trips.add(b.ID, b.DriverID(), b.CustomerID, started, *b.EndedAt, r.DistanceM, r.Points, r.Polyline,
		b.Fare.TotalPaise, string(fare))
	return nil
}

func (w *writes) flush(ctx context.Context, tx *sql.Tx) error {
	for _, m := range []*inserter{&w.audit, &w.outbox, &w.trips} {
		if err := m.flush(ctx, tx); err != nil {
			return err
		}
	}
	return nil
}

// inserter builds multi-row INSERTs. Rows are sent at flush, in statements of at most
// maxStatementBytes (a single larger row goes alone).
type inserter struct {
	head, tuple string
	stmts       []stmt
}

type stmt struct {
	rows, bytes int
	args        []any
}

func (m *inserter) add(vals ...any) {
	size := len(m.tuple) + 2
	for _, v := range vals {
		if s, ok := v.(string); ok {
			size += 2*len(s) + 2 // quoted, and every byte escaped at worst
		} else {
			size += 26
		}
	}
	if n := len(m.stmts); n == 0 || m.stmts[n-1].bytes+size > maxStatementBytes {
		m.stmts = append(m.stmts, stmt{})
	}
	s := &m.stmts[len(m.stmts)-1]
	s.rows, s.bytes, s.args = s.rows+1, s.bytes+size, append(s.args, vals...)
}

func (m *inserter) flush(ctx context.Context, tx *sql.Tx) error {
	for _, s := range m.stmts {
		q := m.head + m.tuple + strings.Repeat(", "+m.tuple, s.rows-1)
		if _, err := tx.ExecContext(ctx, q, s.args...); err != nil {
			return translate(err)
		}
	}
	m.stmts = nil
	return nil
}
