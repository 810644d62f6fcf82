package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drivers4me/dispatch/loadtest"
	"github.com/drivers4me/dispatch/store/storetest"
)

const redisAddr = "127.0.0.1:6379"

// childEnv makes the test binary act as `loadtest` itself, so that a multi-process run can
// start it as its children (os.Executable) without building the command first.
const childEnv = "LOADTEST_TEST_AS_COMMAND"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		if err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestPeakAgreesWithServer runs `loadtest peak` at small scale against a real dispatchd (built
// here) on the real Redis and MariaDB, with drivers in two child processes (this test binary,
// acting as the command), reconnects and dispatchers, and checks the report's counts against the server's own: its Prometheus
// counters for location points and offers, and MySQL for completed bookings (dispatchd has no
// counter for completions). The invariant check must report zero.
func TestPeakAgreesWithServer(t *testing.T) {
	if c, err := net.DialTimeout("tcp", redisAddr, 2*time.Second); err != nil {
		t.Fatalf("Redis at %s does not answer (%v): this test needs the real Redis running there", redisAddr, err)
	} else {
		c.Close()
	}
	dsn := storetest.MySQL(t) // fails, saying why, when MariaDB is not there
	dir := t.TempDir()
	began := time.Now()
	dispatchd := build(t, dir, "dispatchd")
	t.Logf("built dispatchd in %s", time.Since(began).Round(time.Millisecond))
	t.Setenv(childEnv, "1") // for the children only: this process has read it already

	secret := randomHex(t, 32)
	prefix := "lt_test_" + randomHex(t, 6) + ":"
	t.Cleanup(func() { dropRedisPrefix(t, prefix) })
	srv := startServer(t, dispatchd, map[string]string{
		"DISPATCH_HTTP_ADDR": "127.0.0.1:0", "DISPATCH_ADMIN_ADDR": "127.0.0.1:0",
		"REDIS_URL": "redis://" + redisAddr, "MYSQL_DSN": dsn, "DISPATCH_MIGRATE": "true",
		"DISPATCH_REDIS_PREFIX": prefix, "DISPATCH_JWT_SECRET": secret,
		"DISPATCH_LOG_FORMAT": "json", "DISPATCH_LOG_LEVEL": "info", "DISPATCH_DRAIN_DELAY": "0s",
		"DISPATCH_MATCH_WINDOW": "500ms", "DISPATCH_OFFER_TIMEOUT": "15s",
	})

	out := filepath.Join(dir, "report")
	env := map[string]string{"DISPATCH_JWT_SECRET": secret}
	var stdout bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	began = time.Now()
	err := run(ctx, []string{"peak", "-target", "http://" + srv.http, "-metrics", "http://" + srv.admin + "/metrics",
		"-mysql-dsn", dsn, "-drivers", "50", "-duration", "15s", "-tick", "1s", "-profile", "flash", "-rate", "2",
		"-scheduled", "0.1", "-accept", "0.8", "-decline", "0.15", "-reconnect", "3", "-approach", "3s", "-trip", "2s",
		"-drain", "15s", "-dispatchers", "3", "-procs", "2", "-warmup", "30s", "-out", out, "-log-level", "warn"},
		func(k string) string { return env[k] }, &stdout)
	if err != nil {
		t.Fatalf("loadtest peak: %v\n%s\nserver log:\n%s", err, stdout.String(), srv.logTail())
	}

	t.Logf("load run took %s", time.Since(began).Round(time.Millisecond))

	var res loadtest.Result
	b, err := os.ReadFile(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("report.json: %v", err)
	}
	for _, f := range []string{"report.md", "throughput.png", "flow.png", "latency.png"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() == 0 {
			t.Errorf("report file %s: %v (size %d)", f, err, sizeOf(st))
		}
	}
	if !res.Settled || res.Interrupted || res.Procs != 2 || res.ChildErrors != 0 {
		t.Fatalf("run: settled %v, interrupted %v, processes %d, child errors %d; want true, false, 2, 0",
			res.Settled, res.Interrupted, res.Procs, res.ChildErrors)
	}
	c := res.Totals
	// The warm-up held the demand back until every driver had a socket: no booking before it.
	if c.Arrived != 50 || res.WarmupSeconds <= 0 {
		t.Errorf("warm-up: %d of 50 drivers arrived, %.1f s of warm-up; want 50 and some", c.Arrived, res.WarmupSeconds)
	}
	for _, row := range res.Seconds {
		if float64(row.T+1) <= res.WarmupSeconds && row.Counts["bookings"] > 0 {
			t.Errorf("second %d of the warm-up (%.1f s) has %d bookings; want none", row.T, res.WarmupSeconds, row.Counts["bookings"])
		}
	}
	// The run must have exercised every path, or agreement means nothing.
	for name, n := range map[string]int64{"location points": c.LocationsSent, "bookings": c.BookingsCreated,
		"offers": c.OffersReceived, "accepts": c.OffersAccepted, "declines": c.OffersDeclined,
		"completions": c.BookingsCompleted, "reconnects": c.Reconnects, "dispatcher frames": res.Dispatchers.Frames} {
		if n == 0 {
			t.Errorf("%s: got 0, want some", name)
		}
	}
	if c.InFlight != 0 {
		t.Errorf("messages still awaiting an answer: got %d, want 0", c.InFlight)
	}

	// The server's own counters, scraped now the run has settled (the server is fresh: its
	// counters are the run's).
	m, err := loadtest.Scrape(context.Background(), "http://"+srv.admin+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		metric string
		report int64
	}{
		{"dispatch_locations_received_total", c.LocationsSent},
		{"dispatch_offers_sent_total", c.OffersReceived},
	} {
		if !m.Has(tc.metric) {
			t.Errorf("the server exposes no %s", tc.metric)
			continue
		}
		if got := m.Sums[tc.metric]; got != float64(tc.report) {
			t.Errorf("%s: server %v, report %d; want equal", tc.metric, got, tc.report)
		}
	}

	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var completed, all int64
	if err := db.QueryRow("SELECT COUNT(CASE WHEN status = 'completed' THEN 1 END), COUNT(*) FROM bookings").Scan(&completed, &all); err != nil {
		t.Fatal(err)
	}
	if completed != c.BookingsCompleted {
		t.Errorf("completed bookings: MySQL %d, report %d; want equal", completed, c.BookingsCompleted)
	}
	if all != c.BookingsCreated {
		t.Errorf("bookings: MySQL %d, report %d; want equal", all, c.BookingsCreated)
	}
	if res.MySQL == nil {
		t.Fatalf("report has no MySQL check (error %q)", res.CheckError)
	}
	if res.MySQL.InvariantViolations != 0 {
		t.Errorf("invariant violations: got %d, want 0", res.MySQL.InvariantViolations)
	}
	st := storetest.Open(t, dsn)
	if n, err := st.InvariantViolations(context.Background()); err != nil || n != 0 {
		t.Errorf("InvariantViolations: got %d, %v; want 0, nil", n, err)
	}
	for _, a := range res.Agreement {
		if !a.Agree {
			t.Errorf("report says %q disagree: generator %d, server %v", a.What, a.Client, a.Server)
		}
	}
	t.Logf("locations %d, bookings %d, offers %d, accepted %d, completed %d, reconnects %d; booking-to-offer p50 %.0f ms p99 %.0f ms",
		c.LocationsSent, c.BookingsCreated, c.OffersReceived, c.OffersAccepted, c.BookingsCompleted, c.Reconnects,
		res.Latency.BookingToOffer.P50, res.Latency.BookingToOffer.P99)
}

func sizeOf(st os.FileInfo) int64 {
	if st == nil {
		return 0
	}
	return st.Size()
}

func build(t *testing.T, dir, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-o", bin, "github.com/drivers4me/dispatch/cmd/"+name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", name, err, out)
	}
	return bin
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func dropRedisPrefix(t *testing.T, prefix string) {
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if len(keys) > 0 {
		if err := rdb.Del(ctx, keys...).Err(); err != nil {
			t.Errorf("clean Redis prefix %s: %v", prefix, err)
		}
	}
}

type server struct {
	http, admin string
	mu          sync.Mutex
	log         []string
}

func (s *server) logTail() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.log[max(0, len(s.log)-30):], "\n")
}

// startServer runs dispatchd serve and waits until /readyz answers; it is stopped with SIGTERM
// when the test ends.
func startServer(t *testing.T, bin string, env map[string]string) *server {
	t.Helper()
	cmd := exec.Command(bin, "serve")
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	s := &server{}
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.log = append(s.log, line)
			var l struct{ Message, HTTP, Admin string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Message == "listening" {
				s.http, s.admin = l.HTTP, l.Admin
				once.Do(func() { close(listening) })
			}
			s.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("dispatchd did not stop within 20 s of SIGTERM")
		}
		pr.Close()
	})
	select {
	case <-listening:
	case <-time.After(30 * time.Second):
		t.Fatalf("dispatchd did not listen within 30 s; log:\n%s", s.logTail())
	}
	s.mu.Lock()
	addr := s.http
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("dispatchd not ready within 30 s (%v); log:\n%s", err, s.logTail())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
