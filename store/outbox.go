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

// RunRelay is the outbox relay: until ctx is done it claims unpublished outbox rows, publishes
// their events in order of id and marks them published, a round every interval (at once again
// while there is a backlog). It returns nil when ctx is done.
//
// Delivery is at least once: a publish error ends the round and leaves that row and the ones after
// it for the next round; a relay that dies leaves its claimed rows to others once its lease
// (Options.RelayLease) runs out. Several processes may run it at once: each claims its own rows
// with a conditional UPDATE. Events are in id order within a relay; two relays working through a
// backlog at the same time may interleave theirs, so consumers must tolerate an older event after
// a newer one (and drop duplicates by Event.ID). Errors are logged, not returned: the relay keeps
// going while the database or the publisher is away.
func (d *DB) RunRelay(ctx context.Context, pub dispatch.Publisher, interval time.Duration) error {
	if interval <= 0 {
		interval = 100 * time.Millisecond
	}
	claimer := newID("relay")
	log := d.log.With().Str("relay", claimer).Logger()
	t := time.NewTicker(interval)
	defer t.Stop()
	failures := 0
	// The first round waits one interval too, like every other: a process started with a long
	// interval publishes nothing until it has passed (TestOutboxCrash's api-1 committed its
	// first changes while its first round, at start, was still running, and published two).
	select {
	case <-ctx.Done():
		return nil
	case <-t.C:
	}
	for {
		n, err := d.relayOnce(ctx, pub, claimer)
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			// Log the first failure of a run and then one in a hundred, not one per tick.
			if failures%100 == 0 {
				log.Warn().Err(err).Int("failures", failures+1).Msg("outbox relay round failed")
			}
			failures++
		case failures > 0:
			log.Info().Int("failures", failures).Msg("outbox relay recovered")
			failures = 0
		}
		if err == nil && n >= d.opts.RelayBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type outboxRow struct {
	id      int64
	payload []byte
}

// event decodes r's event. An unreadable row is logged and ok is false: it was written by this
// package, so that is never expected, and the relay skips it rather than block every later
// event behind it.
func (d *DB) event(r outboxRow) (e dispatch.Event, ok bool) {
	if err := json.Unmarshal(r.payload, &e); err != nil {
		d.log.Error().Err(err).Int64("outbox_id", r.id).Msg("outbox row unreadable, skipped")
		return e, false
	}
	return e, true
}

// relayOnce is one round of the relay; it returns how many events it published.
func (d *DB) relayOnce(ctx context.Context, pub dispatch.Publisher, claimer string) (int, error) {
	t := now()
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE outbox SET claimed_by = ?, claimed_until = ?
			WHERE published_at IS NULL AND (claimed_until IS NULL OR claimed_until < ?) ORDER BY id LIMIT ?`,
			claimer, t.Add(d.opts.RelayLease), t, d.opts.RelayBatch)
		return translate(err)
	})
	if err != nil {
		return 0, fmt.Errorf("claim outbox rows: %w", err)
	}
	// Rows claimed in an earlier round whose marking failed come back here too, in order.
	batch, err := d.claimed(ctx, claimer)
	if err != nil || len(batch) == 0 {
		return 0, err
	}

	var done []any
	var pubErr error
	if bp, ok := pub.(batchPublisher); ok {
		done, pubErr = d.publishBatch(ctx, bp, batch)
	} else {
		for _, r := range batch {
			e, ok := d.event(r)
			if !ok {
				done = append(done, r.id)
				continue
			}
			if err := pub.Publish(ctx, e); err != nil {
				pubErr = fmt.Errorf("publish event %s: %w", e.ID, err)
				break
			}
			done = append(done, r.id)
		}
	}

	failpoint("relay-after-publish")

	// Record what happened even when ctx ended meanwhile, or the next relay repeats it all.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var markErr error
	if len(done) > 0 {
		_, err := d.db.ExecContext(wctx, `UPDATE outbox SET published_at = ?, claimed_until = NULL
			WHERE claimed_by = ? AND id IN (?`+strings.Repeat(", ?", len(done)-1)+")",
			append([]any{now(), claimer}, done...)...)
		if err != nil {
			markErr = fmt.Errorf("mark %d outbox rows published: %w", len(done), translate(err))
		}
	}
	if pubErr != nil {
		// Give the rest back at once, so the next round (of any relay) starts from the failed one.
		_, err := d.db.ExecContext(wctx, `UPDATE outbox SET claimed_by = NULL, claimed_until = NULL
			WHERE claimed_by = ? AND published_at IS NULL`, claimer)
		if err != nil {
			markErr = errors.Join(markErr, fmt.Errorf("release outbox rows: %w", translate(err)))
		}
	}
	return len(done), errors.Join(pubErr, markErr)
}

// batchPublisher is a dispatch.Publisher that sends many events in one round trip
// (realtime.Bus pipelines them). A relay publishing one event per round trip fell minutes
// behind its outbox when Redis answered slowly (TestFaultRedisLatency in cmd/dispatchd).
type batchPublisher interface {
	// PublishBatch publishes es in order and returns how many were published before the first
	// that failed (with that failure).
	PublishBatch(ctx context.Context, es []dispatch.Event) (int, error)
}

// publishBatch publishes a claimed batch in one call and returns the ids of the rows done: the
// published prefix, and unreadable rows (skipped, as in the one-by-one loop).
func (d *DB) publishBatch(ctx context.Context, pub batchPublisher, batch []outboxRow) ([]any, error) {
	var done []any
	es := make([]dispatch.Event, 0, len(batch))
	ids := make([]int64, 0, len(batch))
	for _, r := range batch {
		e, ok := d.event(r)
		if !ok {
			done = append(done, r.id)
			continue
		}
		es = append(es, e)
		ids = append(ids, r.id)
	}
	if len(es) == 0 {
		return done, nil
	}
	n, err := pub.PublishBatch(ctx, es)
	for _, id := range ids[:n] {
		done = append(done, id)
	}
	if err != nil {
		return done, fmt.Errorf("publish event %s: %w", es[n].ID, err)
	}
	return done, nil
}

func (d *DB) claimed(ctx context.Context, claimer string) ([]outboxRow, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT id, payload FROM outbox
		WHERE claimed_by = ? AND published_at IS NULL ORDER BY id LIMIT ?`, claimer, d.opts.RelayBatch)
	if err != nil {
		return nil, fmt.Errorf("read claimed outbox rows: %w", translate(err))
	}
	defer rows.Close()
	var batch []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.id, &r.payload); err != nil {
			return nil, fmt.Errorf("read claimed outbox rows: %w", translate(err))
		}
		batch = append(batch, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read claimed outbox rows: %w", translate(err))
	}
	return batch, nil
}

// PruneOutbox deletes events published before `before`, in slices of 5000 rows so that no
// statement holds locks for long, and returns how many it deleted.
func (d *DB) PruneOutbox(ctx context.Context, before time.Time) (int64, error) {
	const slice = 5000
	var total int64
	for {
		res, err := d.db.ExecContext(ctx, `DELETE FROM outbox WHERE published_at IS NOT NULL AND published_at < ?
			ORDER BY published_at LIMIT ?`, dbTime(before), slice)
		if err != nil {
			return total, fmt.Errorf("prune outbox: %w", translate(err))
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("prune outbox: %w", translate(err))
		}
		total += n
		if n < slice {
			return total, nil
		}
	}
}

// RunOutboxPruner deletes, every interval and once at start, the events published more than
// keep ago (PruneOutbox), until ctx ends; it then returns nil. Relays on several processes may
// each run one: the deletes are idempotent. A failed round is logged and retried at the next
// tick; a round that deleted rows is logged with how many.
func (d *DB) RunOutboxPruner(ctx context.Context, keep, interval time.Duration) error {
	if keep <= 0 || interval <= 0 {
		return fmt.Errorf("outbox pruner: keep %s and interval %s must be positive", keep, interval)
	}
	log := d.log.With().Str("component", "outbox-pruner").Logger()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		began := time.Now()
		n, err := d.PruneOutbox(ctx, began.Add(-keep))
		if ctx.Err() != nil {
			return nil
		}
		switch {
		case err != nil:
			log.Warn().Err(err).Int64("deleted", n).Msg("outbox prune round failed")
		case n > 0:
			log.Info().Int64("deleted", n).Str("keep", keep.String()).Float64("took_ms", float64(time.Since(began).Microseconds())/1000).Msg("outbox pruned")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// InvariantViolations counts, in one query, the drivers whose calendar blocks overlap, plus
// the active bookings (assigned, arrived, in_progress) without a driver or without their
// driver's block. It must always be 0; ops alert on anything else.
func (d *DB) InvariantViolations(ctx context.Context) (int, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT
		(SELECT COUNT(DISTINCT a.driver_id) FROM driver_blocks a JOIN driver_blocks b
			ON a.driver_id = b.driver_id AND a.booking_id < b.booking_id
			AND a.start_at < b.end_at AND b.start_at < a.end_at)
		+ (SELECT COUNT(*) FROM bookings WHERE status IN (`+activeStatuses+`) AND (driver_id IS NULL
			OR NOT EXISTS (SELECT 1 FROM driver_blocks k WHERE k.booking_id = bookings.id
				AND k.driver_id = bookings.driver_id)))`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count invariant violations: %w", translate(err))
	}
	return n, nil
}
