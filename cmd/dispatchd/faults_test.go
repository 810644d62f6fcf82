package main

// The fault suite (issue 10): each scenario runs dispatchd against private Redis and MariaDB
// processes under a running load (simulated drivers and customers on loopback), injects one
// fault, and checks what the engine promises: the dispatch invariant in SQL all along, no
// acknowledged booking lost, answers that say `unavailable` rather than fail, and recovery.
// RELIABILITY.md tabulates the results; the 10-minute soak is in faults_soak_test.go (-tags soak).

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// faultHTTPPort fixes the engine's HTTP port, so that a restarted engine is found at the same address.
func faultHTTPPort(t *testing.T) string { return "127.0.0.1:" + strconv.Itoa(faultFreePort(t)) }

// faultDriverIDs are the fleet's driver ids.
func faultDriverIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%ssim-drv-%d", prefix, i)
	}
	return ids
}

// faultIndexedSince counts the drivers whose indexed position (GET /v1/drivers/{id}) is newer than since.
func faultIndexedSince(addr string, ids []string, since time.Time) int {
	n := 0
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		st, b, _, err := faultCall(ctx, addr, "GET", "/v1/drivers/"+id, "dispatcher", "ops-"+id, nil, nil)
		cancel()
		if err != nil || st != 200 {
			continue
		}
		var v struct {
			UpdatedAt time.Time `json:"updated_at"`
		}
		if json.Unmarshal(b, &v) == nil && v.UpdatedAt.After(since) {
			n++
		}
	}
	return n
}

// faultProbeAssignment books now as a fresh customer, watches the booking on a WebSocket and waits
// for the `booking` frame saying a driver was assigned: it proves the whole path (REST, MySQL,
// outbox relay, Redis pub/sub, the hub's routing, the fleet's accept) works.
func faultProbeAssignment(t *testing.T, addr string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	cust := fmt.Sprintf("probe-%d", start.UnixNano())
	s := &server{http: addr}
	var b booking
	body := map[string]any{"pickup": map[string]any{"lat": 12.9716, "lng": 77.5946}, "hours": 1,
		"car": map[string]string{"transmission": "manual"}}
	if st := s.rest(t, "POST", "/v1/bookings", sign(t, "customer", cust), body,
		map[string]string{"Idempotency-Key": cust}, &b); st != 201 {
		t.Fatalf("probe booking: got %d, want 201", st)
	}
	c := s.mustDial(t, sign(t, "customer", cust))
	if code := c.reply(c.send("watch", map[string]string{"booking_id": b.ID})); code != "" {
		t.Fatalf("probe watch: got error %s", code)
	}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		// The booking may have been assigned before the watch began: look it up too.
		var now booking
		s.rest(t, "GET", "/v1/bookings/"+b.ID, sign(t, "customer", cust), nil, nil, &now)
		if now.Status != "searching" {
			if now.Status != "assigned" && now.Status != "arrived" && now.Status != "in_progress" && now.Status != "completed" {
				t.Fatalf("probe booking %s is %s, want a driver", b.ID, now.Status)
			}
			// And the socket was told.
			c.expect("booking", 10*time.Second, func(d json.RawMessage) bool { return field(d, "status") != "searching" })
			return time.Since(start)
		}
		select {
		case f, ok := <-c.frames:
			if ok && f.Type == "booking" && field(f.Data, "status") == "assigned" {
				return time.Since(start)
			}
		case <-time.After(250 * time.Millisecond):
		}
	}
	t.Fatalf("probe booking %s found no driver within %s", b.ID, within)
	return 0
}

// faultDriverAction opens a socket as driver sub, sends one message and returns the code of the
// answer ("" for an ack).
func faultDriverAction(t *testing.T, addr, sub, typ string, data any) string {
	t.Helper()
	s := &server{http: addr}
	c := s.mustDial(t, sign(t, "driver", sub))
	defer c.ws.Close()
	c.expect("hello", 10*time.Second, nil)
	return c.reply(c.send(typ, data))
}

// faultRESTCode calls the API and returns the status and error code of the answer.
func faultRESTCode(addr, method, path, role, sub string, body any) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, b, _, err := faultCall(ctx, addr, method, path, role, sub, body, nil)
	if err != nil {
		return 0, err.Error()
	}
	var eb struct {
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &eb)
	return st, eb.Error.Code
}

// TestFaultRedisKilled: Redis is killed with SIGKILL and restarted empty (no persistence) under
// load, after an engine restart (a deploy) moved the region leases to a new owner. /readyz turns
// 503 and back; bookings go on being accepted (MySQL alone); nothing panics; drivers' positions
// rebuild from their next points; matching and the hub's routing resume; every booking keeps
// its state and driver in MySQL; the invariant holds all along.
func TestFaultRedisKilled(t *testing.T) {
	t.Parallel() // private backends and engine: independent of every other test
	be := startFaultBackends(t, false)
	env := be.env()
	env["DISPATCH_HTTP_ADDR"] = faultHTTPPort(t)
	srv := startFaultChild(t, env)
	inv := watchFaultInvariant(t, be.DirectDSN(), 250*time.Millisecond)
	const drivers = 30
	l := startFaultLoad(t, srv.http, faultLoadOptions{drivers: drivers, bookingsPerMin: 60, ledgerCustomers: 2,
		ledgerPause: 300 * time.Millisecond, prefix: "rk"})
	faultWaitFor(t, 40*time.Second, "first offers accepted", func() bool { return l.fleet.Counts.OffersAccepted.Load() >= 3 })

	// A deploy: the engine restarts on the same address; its successor takes the regions over
	// with higher fences, which MySQL records with its offers.
	srv.stop(t)
	srv = startFaultChild(t, env)
	deployed := time.Now()
	faultWaitFor(t, 30*time.Second, "offers from the new engine", func() bool { return l.fleet.LastOffer().After(deployed.Add(time.Second)) })

	// A customer watching a scheduled booking on a socket opened before the kill: the gateway's
	// subscription for it must resume after the restart.
	s := &server{http: srv.http}
	var watched booking
	body := map[string]any{"pickup": map[string]any{"lat": 12.9716, "lng": 77.5946}, "hours": 2,
		"car": map[string]string{"transmission": "manual"}, "start_at": time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)}
	if st := s.rest(t, "POST", "/v1/bookings", sign(t, "customer", "rk-watcher"), body,
		map[string]string{"Idempotency-Key": "rk-watcher-1"}, &watched); st != 201 {
		t.Fatalf("the watcher's booking: got %d, want 201", st)
	}
	watcher := s.mustDial(t, sign(t, "customer", "rk-watcher"))
	if code := watcher.reply(watcher.send("watch", map[string]string{"booking_id": watched.ID})); code != "" {
		t.Fatalf("watch: got error %s", code)
	}

	s.registerDriver(t, "rk-probe-driver")
	before := faultActiveBookings(t, be.DirectDSN())
	acked := l.ledger.stats().acked
	be.redis.Kill()
	killed := time.Now()
	took := faultWaitFor(t, 5*time.Second, "/readyz 503 with Redis down", func() bool { return faultReadyz(srv.http) == 503 })
	t.Logf("Redis killed: /readyz 503 after %s", took.Round(time.Millisecond))
	if code := faultDriverAction(t, srv.http, "rk-probe-driver", "status", map[string]string{"state": "online"}); code != "unavailable" {
		t.Errorf("a driver going online with Redis down: got %q, want error unavailable", code)
	}
	if st, code := faultRESTCode(srv.http, "GET", "/v1/drivers/nearby?lat=12.97&lng=77.59", "dispatcher", "rk-ops", nil); st != 503 || code != "unavailable" {
		t.Errorf("GET /v1/drivers/nearby with Redis down: got %d %q, want 503 unavailable", st, code)
	}
	time.Sleep(2 * time.Second)
	srv.healthy(t)
	if got := l.ledger.stats().acked; got <= acked {
		t.Errorf("bookings acknowledged while Redis was down: got %d more, want some (a booking needs MySQL only)", got-acked)
	} else {
		t.Logf("%d ledger bookings acknowledged while Redis was down", got-acked)
	}

	be.redis.Restart()
	restarted := time.Now()
	took = faultWaitFor(t, 10*time.Second, "/readyz 200 after Redis restarted", func() bool { return faultReadyz(srv.http) == 200 })
	t.Logf("Redis down %s; /readyz 200 again %s after the restart", restarted.Sub(killed).Round(time.Millisecond), took.Round(time.Millisecond))
	ids := faultDriverIDs("rk", drivers)
	took = faultWaitFor(t, 15*time.Second, "every driver's position rebuilt", func() bool { return faultIndexedSince(srv.http, ids, restarted) == drivers })
	t.Logf("all %d drivers indexed again %s after the restart", drivers, took.Round(time.Millisecond))
	faultWaitFor(t, 30*time.Second, "offers after the restart", func() bool { return l.fleet.LastOffer().After(restarted) })
	t.Logf("a probe booking was assigned and its watcher told %s after it was made", faultProbeAssignment(t, srv.http, 30*time.Second).Round(time.Millisecond))
	if st := s.rest(t, "POST", "/v1/bookings/"+watched.ID+"/cancel", sign(t, "customer", "rk-watcher"), map[string]string{"reason": "plans changed"}, nil, nil); st != 200 {
		t.Fatalf("cancel the watched booking: got %d, want 200", st)
	}
	watcher.expect("booking", 10*time.Second, func(d json.RawMessage) bool { return field(d, "status") == "cancelled" })
	t.Logf("the socket watching since before the kill was told of the cancellation")
	srv.healthy(t)

	l.stop(30 * time.Second)
	faultBookingsAfter(t, be.DirectDSN(), before)
	l.ledger.verify(t, be.DirectDSN(), true)
	faultFleetBookingsKept(t, be.DirectDSN(), l, "rk")
	inv.verify(t, 20)
	srv.stop(t)
}

// TestFaultMariaDBKilled: MariaDB is killed with SIGKILL under load and restarted on the same
// data directory (InnoDB crash recovery), then stopped cleanly (SIGTERM) and restarted. /readyz
// turns 503 and back; every request meanwhile answers 503 `unavailable` (never 500), and
// succeeds when retried with the same Idempotency-Key; no acknowledged booking is lost; one
// booking per key; matching resumes; the invariant holds all along.
func TestFaultMariaDBKilled(t *testing.T) {
	t.Parallel() // private backends and engine: independent of every other test
	be := startFaultBackends(t, false)
	srv := startFaultChild(t, be.env())
	inv := watchFaultInvariant(t, be.DirectDSN(), 250*time.Millisecond)
	// Six ledger customers booking back to back: some request is in flight when MariaDB dies.
	l := startFaultLoad(t, srv.http, faultLoadOptions{drivers: 30, bookingsPerMin: 60, ledgerCustomers: 6,
		ledgerPause: 50 * time.Millisecond, prefix: "mk"})
	faultWaitFor(t, 40*time.Second, "first offers accepted", func() bool { return l.fleet.Counts.OffersAccepted.Load() >= 3 })

	before := l.ledger.stats()
	inFlight := l.ledger.inFlight()
	be.maria.Kill()
	killed := time.Now()
	took := faultWaitFor(t, 5*time.Second, "/readyz 503 with MariaDB down", func() bool { return faultReadyz(srv.http) == 503 })
	t.Logf("MariaDB killed with %d ledger requests in flight: /readyz 503 after %s", len(inFlight), took.Round(time.Millisecond))
	known := l.ledger.entry(l.ledger.firstAcked())
	if st, code := faultRESTCode(srv.http, "GET", "/v1/bookings/"+known.id, "customer", known.customer, nil); st != 503 || code != "unavailable" {
		t.Errorf("GET /v1/bookings/{id} with MariaDB down: got %d %q, want 503 unavailable", st, code)
	}
	if st, code := faultRESTCode(srv.http, "POST", "/v1/bookings/"+known.id+"/cancel", "customer", known.customer, map[string]string{"reason": "x"}); st != 503 || code != "unavailable" {
		t.Errorf("POST /v1/bookings/{id}/cancel with MariaDB down: got %d %q, want 503 unavailable", st, code)
	}
	if code := faultDriverAction(t, srv.http, "mk-probe-driver", "trip.arrive", map[string]string{"booking_id": known.id}); code != "unavailable" {
		t.Errorf("a driver's trip.arrive with MariaDB down: got %q, want error unavailable", code)
	}
	time.Sleep(2 * time.Second)
	srv.healthy(t)
	during := l.ledger.stats()
	if during.unavailable <= before.unavailable {
		t.Fatalf("no request answered 503 while MariaDB was down (%d before, %d after)", before.unavailable, during.unavailable)
	}

	be.maria.Restart()
	restarted := time.Now()
	took = faultWaitFor(t, 20*time.Second, "/readyz 200 after MariaDB restarted", func() bool { return faultReadyz(srv.http) == 200 })
	t.Logf("MariaDB down %s; /readyz 200 again %s after the restart", restarted.Sub(killed).Round(time.Millisecond), took.Round(time.Millisecond))
	faultWaitFor(t, 15*time.Second, "retried bookings acknowledged", func() bool { return l.ledger.stats().acked > during.acked+3 })
	faultWaitFor(t, 30*time.Second, "offers after the restart", func() bool { return l.fleet.LastOffer().After(restarted) })

	// Then a clean restart (SIGTERM), as for maintenance: the server tells its clients it is
	// going away; those answers too must be 503 unavailable, never 500.
	before = l.ledger.stats()
	stopped := time.Now()
	be.maria.Stop()
	faultWaitFor(t, 5*time.Second, "/readyz 503 with MariaDB stopped", func() bool { return faultReadyz(srv.http) == 503 })
	time.Sleep(time.Second)
	be.maria.Restart()
	faultWaitFor(t, 20*time.Second, "/readyz 200 after the clean restart", func() bool { return faultReadyz(srv.http) == 200 })
	t.Logf("MariaDB restarted cleanly in %s; %d more answers 503", time.Since(stopped).Round(time.Millisecond), l.ledger.stats().unavailable-before.unavailable)
	restarted = time.Now()
	faultWaitFor(t, 30*time.Second, "offers after the clean restart", func() bool { return l.fleet.LastOffer().After(restarted) })
	t.Logf("a probe booking was assigned and its watcher told %s after it was made", faultProbeAssignment(t, srv.http, 30*time.Second).Round(time.Millisecond))
	srv.healthy(t)

	l.stop(30 * time.Second)
	s := l.ledger.verify(t, be.DirectDSN(), true)
	if s.unavailable == 0 {
		t.Errorf("ledger: no 503 answer seen; the fault did not reach the requests")
	}
	for _, k := range inFlight {
		e := l.ledger.entry(k)
		t.Logf("in flight at the kill: key %s answered %v, booking %s (replayed %v)", k, e.answers, e.id, e.replayed)
	}
	faultFleetBookingsKept(t, be.DirectDSN(), l, "mk")
	inv.verify(t, 20)
	srv.stop(t)
}

// faultTimeGET is how long GET path takes as a dispatcher (for checking that a fault bites).
func faultTimeGET(addr, path, sub string) (time.Duration, int) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t0 := time.Now()
	st, _, _, _ := faultCall(ctx, addr, "GET", path, "dispatcher", sub, nil, nil)
	return time.Since(t0), st
}

// faultOfferOutcomes counts the offers created in [from, to) by status.
func faultOfferOutcomes(t *testing.T, dsn string, from, to time.Time) map[string]int {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT status, COUNT(*) FROM offers WHERE created_at >= ? AND created_at < ? GROUP BY status",
		from.UTC(), to.UTC())
	if err != nil {
		t.Fatalf("offers by status: %v", err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var st string
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			t.Fatal(err)
		}
		out[st] = n
	}
	return out
}

// TestFaultRedisLatency: every Redis answer arrives 500 ms late for 12 s under load. The engine
// slows down but stays ready and correct: /readyz stays 200, bookings are taken, offers still
// reach drivers and are accepted, the invariant holds, nothing is lost; it speeds up again after.
func TestFaultRedisLatency(t *testing.T) {
	t.Parallel() // private backends and engine: independent of every other test
	be := startFaultBackends(t, true)
	// The production offer timeout (15 s; the suite's 4 s elsewhere): an offer costs about six
	// Redis round trips before its driver sees it (lease, state, publish, pub/sub), 3 s here.
	env := be.env()
	env["DISPATCH_OFFER_TIMEOUT"] = "15s"
	srv := startFaultChild(t, env)
	inv := watchFaultInvariant(t, be.DirectDSN(), 250*time.Millisecond)
	// Drivers accept every offer they receive in time: an offer lost to the latency shows as expired.
	l := startFaultLoad(t, srv.http, faultLoadOptions{drivers: 30, bookingsPerMin: 120, ledgerCustomers: 2,
		ledgerPause: 200 * time.Millisecond, prefix: "rl", acceptAll: true})
	faultWaitFor(t, 40*time.Second, "first offers accepted", func() bool { return l.fleet.Counts.OffersAccepted.Load() >= 3 })
	probe := "/v1/drivers/rlsim-drv-0"
	base, _ := faultTimeGET(srv.http, probe, "ops")

	be.rproxy.SetLatency(500 * time.Millisecond)
	start := time.Now()
	offers, accepted, acked := l.fleet.Counts.OffersReceived.Load(), l.fleet.Counts.OffersAccepted.Load(), l.ledger.stats().acked
	slow, st := faultTimeGET(srv.http, probe, "ops")
	if slow < 500*time.Millisecond || (st != 200 && st != 404) {
		t.Fatalf("GET %s with 500 ms on Redis: took %s (status %d), want at least 500 ms: the fault did not bite", probe, slow, st)
	}
	notReady := 0
	for time.Since(start) < 12*time.Second {
		if st := faultReadyz(srv.http); st != 200 {
			notReady++
		}
		time.Sleep(500 * time.Millisecond)
	}
	if notReady > 0 {
		t.Errorf("/readyz answered other than 200 %d times with Redis 500 ms slow, want never (its timeout is 2 s)", notReady)
	}
	gotOffers := l.fleet.Counts.OffersReceived.Load() - offers
	gotAccepted := l.fleet.Counts.OffersAccepted.Load() - accepted
	gotAcked := l.ledger.stats().acked - acked
	t.Logf("with Redis 500 ms slow for %s: GET %s took %s (%s before); drivers received %d offers and had %d accepts acknowledged; %d ledger bookings",
		time.Since(start).Round(time.Millisecond), probe, slow.Round(time.Millisecond), base.Round(time.Millisecond), gotOffers, gotAccepted, gotAcked)
	if gotAcked == 0 {
		t.Errorf("with Redis 500 ms slow: no booking acknowledged; want booking to go on (it needs MySQL only)")
	}
	srv.healthy(t)

	be.rproxy.SetLatency(0)
	healed := time.Now()
	// The offers made while Redis was slow: every driver accepts what reaches it in time, so an
	// offer that expired was lost to the latency. (Offers timed from the start of the matching
	// tick used to expire before they were sent.)
	time.Sleep(3 * time.Second) // answers in flight land
	made := faultOfferOutcomes(t, be.DirectDSN(), start, healed)
	t.Logf("offers made while Redis was slow, by outcome: %v", made)
	if made["accepted"] == 0 {
		t.Errorf("offers made while Redis was 500 ms slow: %v; want some accepted", made)
	}
	faultWaitFor(t, 10*time.Second, "fast answers again", func() bool {
		d, _ := faultTimeGET(srv.http, probe, "ops")
		return d < 250*time.Millisecond
	})
	faultWaitFor(t, 30*time.Second, "offers after the latency ended", func() bool { return l.fleet.LastOffer().After(healed) })

	l.stop(30 * time.Second)
	l.ledger.verify(t, be.DirectDSN(), true)
	faultFleetBookingsKept(t, be.DirectDSN(), l, "rl")
	inv.verify(t, 20)
	srv.stop(t)
}

// TestFaultResets: connections cut under load. First five ambiguous commits: a customer's
// booking reaches MariaDB and commits, the answer is lost (the proxy resets the connection
// between COMMIT and its OK); the engine answers 503 and the customer's retry with the same
// Idempotency-Key gets the same booking, and there is exactly one row. Then every connection
// to Redis and to MariaDB is reset five times, a second apart. Nothing is lost, nothing is
// doubled, the invariant holds, matching goes on.
func TestFaultResets(t *testing.T) {
	t.Parallel() // private backends and engine: independent of every other test
	be := startFaultBackends(t, true)
	srv := startFaultChild(t, be.env())
	inv := watchFaultInvariant(t, be.DirectDSN(), 250*time.Millisecond)
	l := startFaultLoad(t, srv.http, faultLoadOptions{drivers: 30, bookingsPerMin: 60, ledgerCustomers: 4,
		ledgerPause: 50 * time.Millisecond, prefix: "rs"})
	faultWaitFor(t, 40*time.Second, "first offers accepted", func() bool { return l.fleet.Counts.OffersAccepted.Load() >= 3 })

	const ambiguous = 5
	be.mproxy.ResetAtCommit("rsled-cust-", ambiguous)
	took := faultWaitFor(t, 20*time.Second, "five ambiguous commits", func() bool { return be.mproxy.CommitResets() == ambiguous })
	t.Logf("%d booking commits cut between COMMIT and its answer within %s", ambiguous, took.Round(time.Millisecond))
	faultWaitFor(t, 10*time.Second, "the ambiguous bookings replayed", func() bool { return l.ledger.stats().replayed >= ambiguous })

	resets := 0
	for i := 0; i < 5; i++ {
		resets += be.rproxy.Reset() + be.mproxy.Reset()
		time.Sleep(time.Second)
	}
	t.Logf("%d connections to Redis and MariaDB reset in 5 rounds", resets)
	srv.healthy(t)
	after := time.Now()
	faultWaitFor(t, 30*time.Second, "offers after the resets", func() bool { return l.fleet.LastOffer().After(after) })
	t.Logf("a probe booking was assigned and its watcher told %s after it was made", faultProbeAssignment(t, srv.http, 30*time.Second).Round(time.Millisecond))

	l.stop(30 * time.Second)
	s := l.ledger.verify(t, be.DirectDSN(), true)
	if s.replayed < ambiguous {
		t.Errorf("bookings answered by a replay of their first commit: got %d, want at least %d (one per ambiguous commit)", s.replayed, ambiguous)
	}
	faultFleetBookingsKept(t, be.DirectDSN(), l, "rs")
	inv.verify(t, 20)
	srv.stop(t)
}

// TestFaultBlackhole: Redis, then MariaDB, stop answering for 4 s (bytes held, as when a
// network path drops packets and TCP retransmits) under load. /readyz turns 503 within its 2 s
// probe timeout and back; bookings go on while only Redis is away; requests held during the
// MariaDB hole complete or answer 503 and succeed when retried; nothing is lost or doubled.
func TestFaultBlackhole(t *testing.T) {
	t.Parallel() // private backends and engine: independent of every other test
	be := startFaultBackends(t, true)
	srv := startFaultChild(t, be.env())
	inv := watchFaultInvariant(t, be.DirectDSN(), 250*time.Millisecond)
	l := startFaultLoad(t, srv.http, faultLoadOptions{drivers: 30, bookingsPerMin: 60, ledgerCustomers: 3,
		ledgerPause: 100 * time.Millisecond, prefix: "bh"})
	faultWaitFor(t, 40*time.Second, "first offers accepted", func() bool { return l.fleet.Counts.OffersAccepted.Load() >= 3 })

	for _, tc := range []struct {
		name  string
		proxy interface{ SetBlackhole(bool) }
	}{{"Redis", be.rproxy}, {"MariaDB", be.mproxy}} {
		acked := l.ledger.stats().acked
		tc.proxy.SetBlackhole(true)
		start := time.Now()
		took := faultWaitFor(t, 5*time.Second, "/readyz 503 with "+tc.name+" black-holed", func() bool { return faultReadyz(srv.http) == 503 })
		// And it answers within its probe timeout (2 s), not after the client library's own.
		t0 := time.Now()
		if st, d := faultReadyz(srv.http), time.Since(t0); st != 503 || d > 3*time.Second {
			t.Errorf("/readyz with %s black-holed: %d after %s, want 503 within about 2 s", tc.name, st, d.Round(time.Millisecond))
		}
		if d := 4*time.Second - time.Since(start); d > 0 {
			time.Sleep(d)
		}
		during := l.ledger.stats().acked - acked
		srv.healthy(t)
		tc.proxy.SetBlackhole(false)
		healed := time.Now()
		back := faultWaitFor(t, 15*time.Second, "/readyz 200 after the "+tc.name+" hole", func() bool { return faultReadyz(srv.http) == 200 })
		t.Logf("%s black-holed 4 s: /readyz 503 after %s, 200 again %s after; %d ledger bookings acknowledged meanwhile",
			tc.name, took.Round(time.Millisecond), back.Round(time.Millisecond), during)
		if tc.name == "Redis" && during == 0 {
			t.Errorf("no booking acknowledged while only Redis was away (a booking needs MySQL only)")
		}
		faultWaitFor(t, 30*time.Second, "offers after the "+tc.name+" hole", func() bool { return l.fleet.LastOffer().After(healed) })
	}
	t.Logf("a probe booking was assigned and its watcher told %s after it was made", faultProbeAssignment(t, srv.http, 30*time.Second).Round(time.Millisecond))

	l.stop(30 * time.Second)
	l.ledger.verify(t, be.DirectDSN(), true)
	faultFleetBookingsKept(t, be.DirectDSN(), l, "bh")
	inv.verify(t, 20)
	srv.stop(t)
}

// TestFaultSlowReader: a dispatcher's socket stops reading while it keeps the server answering
// (it floods frames the server must refuse, and reads nothing, with a 4 KiB receive buffer).
// The server's bounded queue for that socket fills and the server closes it with 1013: once the
// client stops flooding and reads again, it gets what was queued and then the close frame (the
// server waits up to closeLinger, 10 s, for the peer's close rather than resetting the connection). Nobody
// else notices: a second socket's round trips stay fast all along and the fleet's offers go on.
func TestFaultSlowReader(t *testing.T) {
	t.Parallel() // private backends and engine: independent of every other test
	be := startFaultBackends(t, false)
	srv := startFaultChild(t, be.env())
	inv := watchFaultInvariant(t, be.DirectDSN(), 250*time.Millisecond)
	l := startFaultLoad(t, srv.http, faultLoadOptions{drivers: 20, bookingsPerMin: 60, ledgerCustomers: 1,
		ledgerPause: 200 * time.Millisecond, prefix: "sr"})
	faultWaitFor(t, 40*time.Second, "first offers accepted", func() bool { return l.fleet.Counts.OffersAccepted.Load() >= 3 })

	// The bystander: another dispatcher timing one refused frame at a time.
	s := &server{http: srv.http}
	other := s.mustDial(t, sign(t, "dispatcher", "bystander"))
	var worst atomic.Int64
	stopProbe := make(chan struct{})
	probeDone := make(chan struct{})
	go func() {
		defer close(probeDone)
		for {
			select {
			case <-stopProbe:
				return
			case <-time.After(100 * time.Millisecond):
			}
			t0 := time.Now()
			if err := other.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"watch.nothing","seq":1}`)); err != nil {
				worst.Store(int64(time.Hour))
				return
			}
			select {
			case _, ok := <-other.frames:
				if !ok {
					worst.Store(int64(time.Hour))
					return
				}
			case <-time.After(5 * time.Second):
				worst.Store(int64(time.Hour))
				return
			}
			if d := int64(time.Since(t0)); d > worst.Load() {
				worst.Store(d)
			}
		}
	}()

	// The slow reader.
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	hdr := http.Header{"Authorization": {"Bearer " + sign(t, "dispatcher", "slow")}}
	ws, _, err := d.Dial("ws://"+srv.http+"/v1/ws", hdr)
	if err != nil {
		t.Fatalf("dial the slow reader: %v", err)
	}
	defer ws.Close()
	// One round trip first: the session has started (its start waits on Redis, and frames
	// flooding in before it are answered behind it, up to a bound that closes the socket as
	// overloaded, which is not what this test is about).
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"watch.nothing","seq":1}`)); err != nil {
		t.Fatalf("the slow reader's first frame: %v", err)
	}
	if _, _, err := ws.ReadMessage(); err != nil {
		t.Fatalf("the slow reader's first answer: %v", err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	dropped := faultMetric(srv.admin, `dispatch_frames_dropped_total{kind="slow_reader"}`)
	flooding := make(chan struct{})
	var sent atomic.Int64
	var stopFlood atomic.Bool
	var floodErr error
	go func() {
		defer close(flooding)
		for !stopFlood.Load() {
			// A generous deadline: on a loaded machine (the whole suite under -race) the server's
			// reader may get so little CPU that these writes block for tens of seconds (the
			// kernel holds some 480,000 of these frames unread, and the window opens again only
			// after 64 KiB of them are read), which is not the server's giving up this test
			// waits for.
			_ = ws.SetWriteDeadline(time.Now().Add(2 * time.Minute))
			if floodErr = ws.WriteMessage(websocket.TextMessage, []byte(`{}`)); floodErr != nil {
				return
			}
			sent.Add(1)
		}
	}()
	// How soon depends on how much the kernel buffers for the socket (the server sets 256 KiB,
	// some 2,500 answers) and how fast a loaded machine fills that: usually well under a second.
	flooded := time.Now()
	for faultMetric(srv.admin, `dispatch_frames_dropped_total{kind="slow_reader"}`) <= dropped {
		select {
		case <-flooding:
			t.Fatalf("the flood stopped after %d frames (%v) before the server gave up (%s)", sent.Load(), floodErr, faultDrops(srv.admin))
		default:
		}
		if time.Since(flooded) > 2*time.Minute {
			t.Fatalf("the server did not give up on the slow reader within 2 minutes (%d frames sent; %s); its sockets' goroutines:\n%s",
				sent.Load(), faultDrops(srv.admin), faultStacks(srv.admin, "realtime."))
		}
		time.Sleep(50 * time.Millisecond)
	}
	took := time.Since(flooded)
	stopFlood.Store(true)
	gaveUp := time.Now()
	t.Logf("the server gave up on the slow reader %s after it stopped reading (%d frames sent)", took.Round(time.Millisecond), sent.Load())
	// Read again: what was queued, then the close frame.
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	frames := 0
	var closeErr error
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			closeErr = err
			break
		}
		frames++
	}
	var ce *websocket.CloseError
	if !errors.As(closeErr, &ce) || ce.Code != websocket.CloseTryAgainLater {
		t.Errorf("the slow reader's socket ended with %v after %d frames (%s after the server gave up), want close 1013", closeErr, frames, time.Since(gaveUp))
	} else {
		t.Logf("the slow reader read %d frames, then close %d %q", frames, ce.Code, ce.Text)
	}
	<-flooding

	offers := l.fleet.Counts.OffersReceived.Load()
	time.Sleep(time.Second)
	close(stopProbe)
	<-probeDone
	if w := time.Duration(worst.Load()); w > time.Second {
		t.Errorf("the bystander's slowest round trip while the slow reader stalled: %s, want under 1 s", w)
	} else {
		t.Logf("the bystander's slowest round trip meanwhile: %s", w.Round(time.Millisecond))
	}
	faultWaitFor(t, 30*time.Second, "offers go on", func() bool { return l.fleet.Counts.OffersReceived.Load() > offers })
	srv.healthy(t)

	l.stop(30 * time.Second)
	l.ledger.verify(t, be.DirectDSN(), true)
	faultFleetBookingsKept(t, be.DirectDSN(), l, "sr")
	inv.verify(t, 20)
	srv.stop(t)
}
