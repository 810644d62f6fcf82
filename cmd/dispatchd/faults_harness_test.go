package main

// The fault suite's equipment: dispatchd as a child process, a running load (simulated drivers
// and customers from package loadtest, plus a ledger of customers who retry with the same
// Idempotency-Key and remember every booking acknowledged to them), and a watcher that checks
// the dispatch invariant in SQL all along.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/api"
	"github.com/drivers4me/dispatch/loadtest"
	"github.com/drivers4me/dispatch/store"
	"github.com/rs/zerolog"
)

// faultChildEnv set to 1 makes this test binary run dispatchd's own main (`dispatchd serve`) instead
// of the tests: the crash tests run the engine as a separate process, built from the same
// code with the same flags (-race included), which they can watch exit with its real status.
const faultChildEnv = "DISPATCHD_FAULTS_CHILD"

func init() {
	if os.Getenv(faultChildEnv) == "1" {
		os.Args = []string{os.Args[0], "serve"}
		main()
		os.Exit(0)
	}
}

// faultChild is a dispatchd process.
type faultChild struct {
	t           *testing.T
	cmd         *exec.Cmd
	http, admin string
	logs        *syncBuffer // stdout: the JSON log
	stderr      *syncBuffer // panics and race reports land here
	exited      chan struct{}
	exitErr     error
}

// faultEnv is the engine's environment in the fault suite, before the backends' and a test's own.
func faultEnv() map[string]string {
	return map[string]string{
		"DISPATCH_HTTP_ADDR": "127.0.0.1:0", "DISPATCH_ADMIN_ADDR": "127.0.0.1:0",
		"DISPATCH_JWT_SECRET": testSecret, "DISPATCH_LOG_FORMAT": "json", "DISPATCH_LOG_LEVEL": "info",
		"DISPATCH_MATCH_WINDOW": "300ms", "DISPATCH_OFFER_TIMEOUT": "4s", "DISPATCH_DRAIN_DELAY": "300ms",
		"DISPATCH_SHUTDOWN_TIMEOUT": "10s",
	}
}

// startFaultChild runs dispatchd serve with env over faultEnv and waits until it listens.
func startFaultChild(t *testing.T, env map[string]string) *faultChild {
	t.Helper()
	all := faultEnv()
	for k, v := range env {
		all[k] = v
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DISPATCH_") && !strings.HasPrefix(kv, "REDIS_URL=") && !strings.HasPrefix(kv, "MYSQL_DSN=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, faultChildEnv+"=1")
	for k, v := range all {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	c := &faultChild{t: t, cmd: cmd, logs: &syncBuffer{}, stderr: &syncBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = c.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start dispatchd: %v", err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		scanLogs(out, c.logs, addrs)
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		if c.running() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			<-c.exited
		}
		if dir := os.Getenv("DISPATCH_FAULT_LOGS"); dir != "" {
			// Keep the whole log of every engine process for a look afterwards.
			name := filepath.Join(dir, fmt.Sprintf("%s-%d.log", strings.ReplaceAll(t.Name(), "/", "_"), cmd.Process.Pid))
			_ = os.WriteFile(name, []byte(c.logs.String()+"\n--- stderr ---\n"+c.stderr.String()), 0o644)
		}
		if t.Failed() {
			t.Logf("dispatchd log (tail):\n%s\nstderr (tail):\n%s", tail(c.logs.String(), 40), tail(c.stderr.String(), 40))
		}
	})
	select {
	case a := <-addrs:
		c.http, c.admin = a[0], a[1]
	case <-c.exited:
		t.Fatalf("dispatchd exited before listening: %v\n%s\n%s", c.exitErr, tail(c.logs.String(), 30), tail(c.stderr.String(), 30))
	case <-time.After(60 * time.Second):
		t.Fatalf("dispatchd did not listen within 60 s\n%s", tail(c.logs.String(), 30))
	}
	return c
}

func (c *faultChild) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// healthy fails the test if the process died or wrote a panic or a race report.
func (c *faultChild) healthy(t *testing.T) {
	t.Helper()
	if !c.running() {
		t.Fatalf("dispatchd exited under the fault: %v\n%s", c.exitErr, tail(c.stderr.String(), 40))
	}
	for _, bad := range []string{"panic:", "DATA RACE", "fatal error:"} {
		if s := c.stderr.String() + c.logs.String(); strings.Contains(s, bad) {
			t.Fatalf("dispatchd wrote %q:\n%s", bad, tail(c.stderr.String(), 60))
		}
	}
}

// stop sends SIGTERM and requires exit status 0 within the shutdown timeout (plus a margin).
func (c *faultChild) stop(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM dispatchd: %v", err)
	}
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("dispatchd still running 15 s after SIGTERM")
	}
	if c.exitErr != nil {
		t.Fatalf("dispatchd after SIGTERM: got %v, want exit status 0\n%s", c.exitErr, tail(c.stderr.String(), 40))
	}
	for _, bad := range []string{"panic:", "DATA RACE", "fatal error:"} {
		if strings.Contains(c.stderr.String(), bad) {
			t.Fatalf("dispatchd wrote %q:\n%s", bad, tail(c.stderr.String(), 60))
		}
	}
}

// ---- HTTP helpers that never call t.Fatal on a transport error (faults cause them) ----

var faultHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// faultCall sends a request as role/sub and returns the status, body and headers (status 0: transport error).
func faultCall(ctx context.Context, addr, method, path, role, sub string, body any, hdr map[string]string) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if role != "" {
		tok, err := faultSignFor(role, sub)
		if err != nil {
			return 0, nil, nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := faultHTTP.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header, err
}

var faultTokens sync.Map

func faultSignFor(role, sub string) (string, error) {
	if t, ok := faultTokens.Load(role + ":" + sub); ok {
		return t.(string), nil
	}
	t, err := faultSignToken(role, sub)
	if err == nil {
		faultTokens.Store(role+":"+sub, t)
	}
	return t, err
}

// faultReadyz returns /readyz's status (0 when the server does not answer).
func faultReadyz(addr string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	st, _, _, _ := faultCall(ctx, addr, "GET", "/readyz", "", "", nil, nil)
	return st
}

// faultWaitFor polls cond every 50 ms until it is true or within has passed; it returns how long it took.
func faultWaitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// faultMetric reads one sample of the admin /metrics (sum of the series whose name and labels start
// with prefix).
func faultMetric(admin, prefix string) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	st, b, _, err := faultCall(ctx, admin, "GET", "/metrics", "", "", nil, nil)
	if err != nil || st != 200 {
		return -1
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			var v float64
			if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
				sum += v
			}
		}
	}
	return sum
}

// faultDrops lists the child's frames and sockets dropped, by kind (for a failure's diagnosis).
func faultDrops(admin string) string {
	var out []string
	for _, kind := range []string{"slow_reader", "write_timeout", "backlog", "stale_location"} {
		out = append(out, fmt.Sprintf("%s %v", kind, faultMetric(admin, `dispatch_frames_dropped_total{kind="`+kind+`"}`)))
	}
	return "dropped: " + strings.Join(out, ", ")
}

// faultStacks returns the child's goroutines whose stacks mention any of the words, for a
// failure's diagnosis.
func faultStacks(admin string, words ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, b, _, err := faultCall(ctx, admin, "GET", "/debug/pprof/goroutine?debug=2", "", "", nil, nil)
	if err != nil || st != 200 {
		return fmt.Sprintf("(no goroutine dump: %d %v)", st, err)
	}
	var out []string
	for _, g := range strings.Split(string(b), "\n\n") {
		for _, w := range words {
			if strings.Contains(g, w) {
				out = append(out, g)
				break
			}
		}
	}
	return strings.Join(out, "\n\n")
}

// ---- the invariant, checked all along ----

// faultInvariant runs store.DB.InvariantViolations every interval against MariaDB directly.
type faultInvariant struct {
	checks     atomic.Int64 // checks that ran
	failed     atomic.Int64 // checks that could not run (MariaDB away)
	violations atomic.Int64 // sum of violations seen: must stay 0
	stopOnce   sync.Once
	cancel     context.CancelFunc
	done       chan struct{}
}

func watchFaultInvariant(t *testing.T, dsn string, every time.Duration) *faultInvariant {
	t.Helper()
	db, err := store.Open(context.Background(), dsn, store.Options{MaxOpenConns: 2}, zerolog.Nop())
	if err != nil {
		t.Fatalf("invariant watcher: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &faultInvariant{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer db.Close()
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
			n, err := db.InvariantViolations(cctx)
			ccancel()
			switch {
			case err != nil && ctx.Err() == nil:
				w.failed.Add(1)
			case err == nil:
				w.checks.Add(1)
				w.violations.Add(int64(n))
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(w.stop)
	return w
}

func (w *faultInvariant) stop() {
	w.stopOnce.Do(func() { w.cancel(); <-w.done })
}

// verify stops the watcher and requires zero violations over at least min checks.
func (w *faultInvariant) verify(t *testing.T, min int64) {
	t.Helper()
	w.stop()
	if v := w.violations.Load(); v != 0 {
		t.Fatalf("dispatch invariant: %d violations seen over %d checks, want 0", v, w.checks.Load())
	}
	if c := w.checks.Load(); c < min {
		t.Fatalf("dispatch invariant checked %d times (%d could not run), want at least %d", c, w.failed.Load(), min)
	}
	t.Logf("invariant: 0 violations over %d checks (%d could not run while MariaDB was away)", w.checks.Load(), w.failed.Load())
}

// ---- the ledger: customers who remember what was acknowledged to them ----

// faultLedgerEntry is one booking request, retried with the same key and body until acknowledged.
type faultLedgerEntry struct {
	key, customer string
	body          map[string]any
	attempts      int
	answers       []int  // status of each attempt (0: transport error)
	id            string // the acknowledged booking
	replayed      bool   // the acknowledgement was a replay of an earlier commit
}

// faultLedger books with fresh Idempotency-Keys and, on 503 or a lost answer, retries the same key
// and body until it gets 201. Any other answer is a failure of the test.
type faultLedger struct {
	addr   string
	prefix string
	mu     sync.Mutex
	all    []*faultLedgerEntry
	bad    []string
	// busy counts requests in flight now; inFlightAt records, at a fault, which keys were in flight.
	busy sync.Map // key -> struct{}
}

func newFaultLedger(addr, prefix string) *faultLedger {
	return &faultLedger{addr: addr, prefix: prefix}
}

// run books as n customers, one request at a time each, pause between bookings, until ctx
// ends; a request begun is retried until acknowledged or until finish ends.
func (l *faultLedger) run(ctx, finish context.Context, n int, pause time.Duration) *sync.WaitGroup {
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for seq := 0; ctx.Err() == nil; seq++ {
				e := &faultLedgerEntry{key: fmt.Sprintf("%s-%d-%d-%d", l.prefix, i, seq, time.Now().UnixNano()),
					customer: fmt.Sprintf("%s-cust-%d", l.prefix, i),
					body: map[string]any{
						"pickup": map[string]any{"lat": 12.9716 + float64(i)*0.001, "lng": 77.5946, "address": "ledger"},
						"hours":  2, "car": map[string]string{"transmission": "manual"},
						// Two days ahead: a scheduled booking, so the ledger leaves the drivers to the fleet.
						"start_at": time.Now().Add(48 * time.Hour).UTC().Truncate(time.Minute).Format(time.RFC3339),
					}}
				l.mu.Lock()
				l.all = append(l.all, e)
				l.mu.Unlock()
				l.book(finish, e)
				if !faultSleep(ctx, pause) {
					return
				}
			}
		}(i)
	}
	return &wg
}

func faultSleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (l *faultLedger) book(ctx context.Context, e *faultLedgerEntry) {
	l.busy.Store(e.key, struct{}{})
	defer l.busy.Delete(e.key)
	for ctx.Err() == nil {
		rctx, cancel := context.WithTimeout(ctx, 8*time.Second)
		st, b, hdr, err := faultCall(rctx, l.addr, "POST", "/v1/bookings", "customer", e.customer, e.body,
			map[string]string{"Idempotency-Key": e.key})
		cancel()
		l.mu.Lock()
		e.attempts++
		e.answers = append(e.answers, st)
		l.mu.Unlock()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			// The answer was lost (connection reset, timeout): the same key again.
		case st == http.StatusCreated:
			var bk booking
			if err := json.Unmarshal(b, &bk); err != nil || bk.ID == "" {
				l.fail("key %s: 201 without a booking: %s", e.key, b)
				return
			}
			l.mu.Lock()
			e.id, e.replayed = bk.ID, hdr.Get("Idempotent-Replayed") == "true"
			l.mu.Unlock()
			return
		case st == http.StatusServiceUnavailable:
			var eb struct {
				Error struct{ Code string } `json:"error"`
			}
			if json.Unmarshal(b, &eb) != nil || eb.Error.Code != "unavailable" {
				l.fail("key %s: 503 with body %s, want code unavailable", e.key, b)
				return
			}
		default:
			l.fail("key %s: attempt %d answered %d %s; want 201, or 503 unavailable", e.key, e.attempts, st, b)
			return
		}
		if !faultSleep(ctx, 150*time.Millisecond) {
			return
		}
	}
}

func (l *faultLedger) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bad = append(l.bad, fmt.Sprintf(format, args...))
}

// inFlight lists the keys with a request in flight now.
func (l *faultLedger) inFlight() []string {
	var keys []string
	l.busy.Range(func(k, _ any) bool { keys = append(keys, k.(string)); return true })
	return keys
}

// entry returns a copy of the entry of key (zero when unknown).
func (l *faultLedger) entry(key string) faultLedgerEntry {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.all {
		if e.key == key {
			c := *e
			c.answers = append([]int(nil), e.answers...)
			return c
		}
	}
	return faultLedgerEntry{}
}

// firstAcked is the key of the first acknowledged booking ("" if none).
func (l *faultLedger) firstAcked() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.all {
		if e.id != "" {
			return e.key
		}
	}
	return ""
}

type faultLedgerStats struct {
	keys, acked, unresolved, retried, replayed, unavailable, lost int
}

func (l *faultLedger) stats() faultLedgerStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s faultLedgerStats
	for _, e := range l.all {
		s.keys++
		if e.id != "" {
			s.acked++
		} else {
			s.unresolved++
		}
		if e.attempts > 1 {
			s.retried++
		}
		if e.replayed {
			s.replayed++
		}
		for _, a := range e.answers {
			switch a {
			case 503:
				s.unavailable++
			case 0:
				s.lost++
			}
		}
	}
	return s
}

// verify checks the ledger against MariaDB: no unexpected answer, every acknowledged booking
// present, one booking per key and never a second one, and (when allResolved) every key
// acknowledged in the end.
func (l *faultLedger) verify(t *testing.T, dsn string, allResolved bool) faultLedgerStats {
	t.Helper()
	l.mu.Lock()
	bad := append([]string(nil), l.bad...)
	entries := append([]*faultLedgerEntry(nil), l.all...)
	l.mu.Unlock()
	for _, b := range bad {
		t.Errorf("ledger: %s", b)
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	keys := map[string]string{} // "customer/key" -> booking id, from idempotency_keys
	rows, err := db.Query("SELECT customer_id, idem_key, booking_id FROM idempotency_keys WHERE customer_id LIKE ?", l.prefix+"-cust-%")
	if err != nil {
		t.Fatalf("read idempotency keys: %v", err)
	}
	for rows.Next() {
		var c, k, id string
		if err := rows.Scan(&c, &k, &id); err != nil {
			t.Fatal(err)
		}
		keys[c+"/"+k] = id
	}
	rows.Close()
	var nBookings int
	if err := db.QueryRow("SELECT COUNT(*) FROM bookings WHERE customer_id LIKE ?", l.prefix+"-cust-%").Scan(&nBookings); err != nil {
		t.Fatalf("count bookings: %v", err)
	}
	if nBookings != len(keys) {
		t.Errorf("ledger customers hold %d bookings for %d idempotency keys: want one booking per key", nBookings, len(keys))
	}
	for _, e := range entries {
		id, ok := keys[e.customer+"/"+e.key]
		switch {
		case e.id != "" && !ok:
			t.Errorf("booking %s acknowledged for key %s is not in MariaDB: an acknowledged booking was lost", e.id, e.key)
		case e.id != "" && id != e.id:
			t.Errorf("key %s: acknowledged booking %s, but the key holds %s", e.key, e.id, id)
		case e.id == "" && allResolved:
			t.Errorf("key %s never acknowledged after %d attempts (answers %v)", e.key, e.attempts, e.answers)
		}
	}
	for _, e := range entries {
		if e.id == "" {
			continue
		}
		var st string
		if err := db.QueryRow("SELECT status FROM bookings WHERE id = ?", e.id).Scan(&st); err != nil {
			t.Errorf("acknowledged booking %s: %v", e.id, err)
		} else if st != "scheduled" {
			t.Errorf("ledger booking %s is %s, want scheduled (nothing else touches it)", e.id, st)
		}
	}
	s := l.stats()
	t.Logf("ledger: %d keys, %d acknowledged, %d retried (%d answers 503, %d lost), %d replays of an earlier commit",
		s.keys, s.acked, s.retried, s.unavailable, s.lost, s.replayed)
	return s
}

// ---- the running load ----

// faultCity is a small box around central Bengaluru, so that a few dozen drivers meet demand.
var faultCity = loadtest.City{Name: "faults", MinLat: 12.94, MinLng: 77.57, MaxLat: 13.00, MaxLng: 77.63,
	Hotspots: [][2]float64{{12.9716, 77.5946}, {12.9600, 77.6100}}}

// faultLoad is the fleet (drivers and immediate bookings) plus the ledger (scheduled bookings,
// retried until acknowledged).
type faultLoad struct {
	fleet      *loadtest.Fleet
	ledger     *faultLedger
	stopFleet  context.CancelFunc
	stopLedger context.CancelFunc
	finish     context.CancelFunc
	fleetDone  chan struct{}
	ledgerWG   *sync.WaitGroup
	stopOnce   sync.Once
}

type faultLoadOptions struct {
	drivers         int
	bookingsPerMin  float64
	ledgerCustomers int
	ledgerPause     time.Duration
	prefix          string
	acceptAll       bool // drivers accept every offer (default: 85% accept, 5% let it expire, the rest decline)
}

func startFaultLoad(t *testing.T, httpAddr string, o faultLoadOptions) *faultLoad {
	t.Helper()
	if o.prefix == "" {
		o.prefix = "f"
	}
	acceptP, ignoreP := 0.85, 0.05
	if o.acceptAll {
		acceptP, ignoreP = 1, 0
	}
	f := loadtest.NewFleet(loadtest.FleetOptions{URL: "ws://" + httpAddr + "/v1/ws", Secret: []byte(testSecret),
		Drivers: o.drivers, Tick: 500 * time.Millisecond, BookingsPerMinute: o.bookingsPerMin,
		AcceptP: acceptP, IgnoreP: ignoreP, AnswerDelay: 100 * time.Millisecond, Approach: 2 * time.Second,
		TripTime: 3 * time.Second, ReconnectP: 2, City: faultCity, Seed: 7, IDPrefix: o.prefix + "sim"}, zerolog.Nop())
	fctx, stopFleet := context.WithCancel(context.Background())
	l := &faultLoad{fleet: f, ledger: newFaultLedger(httpAddr, o.prefix+"led"), stopFleet: stopFleet, fleetDone: make(chan struct{})}
	go func() {
		defer close(l.fleetDone)
		_ = f.Run(fctx)
	}()
	lctx, stopLedger := context.WithCancel(context.Background())
	finish, cancelFinish := context.WithCancel(context.Background())
	l.stopLedger, l.finish = stopLedger, cancelFinish
	l.ledgerWG = l.ledger.run(lctx, finish, o.ledgerCustomers, o.ledgerPause)
	t.Cleanup(func() { l.stop(30 * time.Second) })
	return l
}

// stop ends the load: no new bookings; requests begun are retried for up to settle; then the
// drivers leave.
func (l *faultLoad) stop(settle time.Duration) {
	l.stopOnce.Do(func() {
		l.stopLedger()
		done := make(chan struct{})
		go func() { l.ledgerWG.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(settle):
			l.finish()
			<-done
		}
		l.finish()
		l.stopFleet()
		<-l.fleetDone
	})
}

// faultFleetBookingsKept checks that MariaDB holds at least every booking acknowledged to the fleet's
// customers (the fleet does not retry, so an answer lost to a fault may leave one more).
func faultFleetBookingsKept(t *testing.T, dsn string, l *faultLoad, prefix string) {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	if err := db.QueryRow("SELECT COUNT(*) FROM bookings WHERE customer_id LIKE ?", prefix+"sim-cust-%").Scan(&n); err != nil {
		t.Fatalf("count fleet bookings: %v", err)
	}
	statuses := map[string]int{}
	if rows, err := db.Query("SELECT status, COUNT(*) FROM bookings WHERE customer_id LIKE ? GROUP BY status", prefix+"sim-cust-%"); err == nil {
		for rows.Next() {
			var st string
			var k int
			if rows.Scan(&st, &k) == nil {
				statuses[st] = k
			}
		}
		rows.Close()
	}
	t.Logf("fleet bookings by status: %v", statuses)
	if created := l.fleet.Counts.BookingsCreated.Load(); n < created {
		t.Fatalf("fleet: %d bookings acknowledged, %d in MariaDB: acknowledged bookings lost", created, n)
	}
	c := &l.fleet.Counts
	t.Logf("fleet: %d bookings acknowledged (%d refused, %d skipped), %d offers (%d accepted, %d refused on accept, %d declined, %d ignored), %d completed, %d action errors, %d reconnects; %d rows in MariaDB",
		c.BookingsCreated.Load(), c.BookingErrors.Load(), c.BookingsSkipped.Load(), c.OffersReceived.Load(), c.OffersAccepted.Load(),
		c.AcceptsRefused.Load(), c.OffersDeclined.Load(), c.OffersIgnored.Load(),
		c.BookingsCompleted.Load(), c.ActionErrors.Load(), c.Reconnects.Load(), n)
}

// faultActiveBookings lists id -> driver of the active bookings.
func faultActiveBookings(t *testing.T, dsn string) map[string]string {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT id, driver_id FROM bookings WHERE status IN ('assigned', 'arrived', 'in_progress')")
	if err != nil {
		t.Fatalf("active bookings: %v", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id string
		var d sql.NullString
		if err := rows.Scan(&id, &d); err != nil {
			t.Fatal(err)
		}
		out[id] = d.String
	}
	return out
}

// faultBookingsAfter checks that every booking active before a fault kept its driver: it is still
// active with the same driver, or went on to completed or cancelled (a Redis fault must not
// undo an assignment recorded in MySQL).
func faultBookingsAfter(t *testing.T, dsn string, before map[string]string) {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ids := make([]string, 0, len(before))
	for id := range before {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		var st string
		var d sql.NullString
		if err := db.QueryRow("SELECT status, driver_id FROM bookings WHERE id = ?", id).Scan(&st, &d); err != nil {
			t.Errorf("booking %s, active before the fault: %v", id, err)
			continue
		}
		switch st {
		case "assigned", "arrived", "in_progress", "completed":
			if d.String != before[id] {
				t.Errorf("booking %s: driver %s before the fault, %q after", id, before[id], d.String)
			}
		case "cancelled":
		default:
			t.Errorf("booking %s, active with driver %s before the fault, is %s after", id, before[id], st)
		}
	}
}

func faultSignToken(role, sub string) (string, error) {
	return api.Sign([]byte(testSecret), role, sub, 2*time.Hour, "", "")
}
