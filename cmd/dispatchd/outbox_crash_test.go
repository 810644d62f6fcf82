package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/store/storetest"
	"github.com/redis/go-redis/v9"
)

// TestOutboxCrash: booking changes are committed with their outbox events, so a crash loses none.
//
//  1. An API process whose relay is as good as stopped (DISPATCH_RELAY_INTERVAL=1h) takes N
//     state changes over REST, and is killed with SIGKILL: between commit and publish. The
//     outbox holds N unpublished events.
//  2. A second one starts with its relay, publishes all N and kills itself (failpoint
//     relay-after-publish) before marking them published. Every event arrived, by id.
//  3. A third one publishes all N again and marks them. Every event arrived twice.
//
// Meanwhile a gateway stays up with a customer watching one booking: the socket receives each
// change of that booking once, in order, and the gateway counts the redelivered events as
// duplicates.
func TestOutboxCrash(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.MySQL(t)
	prefix := fmt.Sprintf("t%d:", time.Now().UnixNano())
	suffix := fmt.Sprint(time.Now().UnixNano())
	gw := startServer(t, "real", map[string]string{"MYSQL_DSN": dsn, "DISPATCH_REDIS_PREFIX": prefix, "DISPATCH_ROLES": "gateway"})
	env := func(kv ...string) map[string]string {
		m := map[string]string{
			"MYSQL_DSN": dsn, "REDIS_URL": "redis://127.0.0.1:6379", "DISPATCH_REDIS_PREFIX": prefix, "DISPATCH_ROLES": "api",
			"DISPATCH_HTTP_ADDR": "127.0.0.1:0", "DISPATCH_ADMIN_ADDR": "127.0.0.1:0", "DISPATCH_JWT_SECRET": testSecret,
			"DISPATCH_LOG_FORMAT": "json", "DISPATCH_DRAIN_DELAY": "0", "DISPATCH_RELAY_LEASE": "1s",
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	raw, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	count := func(q string) int {
		t.Helper()
		var n int
		if err := raw.QueryRow(q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}

	// 1. Commit, then die before publishing.
	api := startProc(t, "api-1", env("DISPATCH_RELAY_INTERVAL", "1h"))
	driverID, customerID := "drv-crash-"+suffix, "cust-crash-"+suffix
	dtok, ctok, staff := sign(t, "driver", driverID), sign(t, "customer", customerID), sign(t, "dispatcher", "ops-"+suffix)
	if err := storetest.Open(t, dsn).UpsertDriver(ctx, dispatch.DriverProfile{ID: driverID, Name: "Ravi", Rating: 4.8,
		Transmissions: []dispatch.Transmission{dispatch.Manual}, Verified: true, LicenceExpires: "2099-12-31"}); err != nil {
		t.Fatal(err)
	}
	changes := 0
	must := func(method, path, tok string, body any, out any) {
		t.Helper()
		var hdr map[string]string
		if method == "POST" && path == "/v1/bookings" {
			hdr = map[string]string{"Idempotency-Key": fmt.Sprint("crash-", changes)}
		}
		if st := api.rest(t, method, path, tok, body, hdr, out); st/100 != 2 {
			t.Fatalf("%s %s: got %d, want 2xx", method, path, st)
		}
		if method == "POST" {
			changes++
		}
	}
	var bs []booking
	for i := 0; i < 4; i++ {
		var b booking
		must("POST", "/v1/bookings", ctok, map[string]any{"pickup": map[string]any{"lat": 12.91 + float64(i)/1000, "lng": 77.61},
			"hours": 2, "car": map[string]string{"transmission": "manual"}}, &b)
		bs = append(bs, b)
	}
	watched := bs[0].ID
	cust := gw.mustDial(t, ctok)
	if code := cust.reply(cust.send("watch", map[string]string{"booking_id": watched})); code != "" {
		t.Fatalf("watch: got %q, want ack", code)
	}
	// The answer to watch carried the booking as created; the gateway reads it again twice in the
	// next 1.5 s (in case a change slipped in while subscribing) and sends only what is newer.
	// Let those reads pass, so that what follows can only come from events.
	if got := bookingFrames(cust, 2*time.Second); len(got) != 0 {
		t.Fatalf("the customer got %v after watching an unchanged booking, want nothing", got)
	}
	must("POST", "/v1/bookings/"+watched+"/assign", staff, map[string]string{"driver_id": driverID}, nil)
	var withOTP booking
	must("GET", "/v1/bookings/"+watched, ctok, nil, &withOTP)
	must("POST", "/v1/bookings/"+watched+"/arrive", dtok, nil, nil)
	must("POST", "/v1/bookings/"+watched+"/start", dtok, map[string]string{"otp": withOTP.OTP}, nil)
	must("POST", "/v1/bookings/"+watched+"/end", dtok, nil, nil)
	for _, b := range bs[1:] {
		must("POST", "/v1/bookings/"+b.ID+"/cancel", ctok, map[string]string{"reason": "plans changed"}, nil)
	}
	if got := bookingFrames(cust, 300*time.Millisecond); len(got) != 0 {
		t.Fatalf("the customer got %v before any event was published, want nothing", got)
	}
	_ = api.cmd.Process.Kill()
	<-api.exit
	if n, unpublished := count("SELECT COUNT(*) FROM outbox"), count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"); n != changes || unpublished != changes {
		t.Fatalf("outbox after kill -9: got %d rows, %d unpublished; want %d and %d, one per change", n, unpublished, changes, changes)
	}
	ids := map[string]bool{}
	rows, err := raw.Query("SELECT event_id FROM outbox")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	rows.Close()

	// Everything published on the booking channels, by event id.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	ps := rdb.PSubscribe(ctx, prefix+"ev:bk:*")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	go func() {
		for msg := range ps.Channel() {
			var e dispatch.Event
			if json.Unmarshal([]byte(msg.Payload), &e) == nil {
				mu.Lock()
				seen[e.ID]++
				mu.Unlock()
			}
		}
	}()
	deliveredTimes := func(want int) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			for id := range ids {
				if seen[id] < want {
					return false
				}
			}
			return true
		}
	}

	// 2. Publish, then die before marking published.
	crashAt(t, env("DISPATCH_RELAY_INTERVAL", "50ms", "DISPATCH_FAILPOINT", "relay-after-publish"))
	waitUntil(t, 10*time.Second, "every event delivered after the crash between commit and publish", deliveredTimes(1))
	if unpublished := count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL"); unpublished != changes {
		t.Fatalf("outbox after dying between publish and mark: got %d unpublished, want %d", unpublished, changes)
	}
	// The creation's event is no news to the socket (the watch's answer had it): the four changes.
	want := []string{"assigned", "arrived", "in_progress", "completed"}
	got := bookingFrames(cust, 0, len(want))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("the watching customer's booking frames: got %v, want %v", got, want)
	}

	// 3. Publish again and mark: delivered twice, taken once.
	startProc(t, "api-3", env("DISPATCH_RELAY_INTERVAL", "50ms"))
	waitUntil(t, 15*time.Second, "the outbox fully published", func() bool {
		return count("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL") == 0
	})
	waitUntil(t, 10*time.Second, "every event delivered a second time", deliveredTimes(2))
	mu.Lock()
	for id, n := range seen {
		if !ids[id] || n != 2 {
			t.Errorf("event %s: delivered %d times, want 2 (one of the outbox's %d)", id, n, len(ids))
		}
	}
	mu.Unlock()
	// The watched booking had five events (its creation and four changes), each delivered twice.
	const watchedEvents = 5
	waitUntil(t, 5*time.Second, "the gateway to drop the watched booking's redelivered events", func() bool {
		return gw.metric(t, "dispatch_duplicate_events_total") >= watchedEvents
	})
	if again := bookingFrames(cust, 500*time.Millisecond); len(again) != 0 {
		t.Errorf("the customer got redelivered changes %v, want none", again)
	}
	if n := gw.metric(t, "dispatch_duplicate_events_total"); n != watchedEvents {
		t.Errorf("duplicates dropped by the gateway: got %g, want %d", n, watchedEvents)
	}
	if n := count("SELECT COUNT(*) FROM trips"); n != 1 {
		t.Errorf("trips recorded: got %d, want 1", n)
	}
}

// bookingFrames collects the statuses of the booking frames a socket receives: until `want` of
// them when want > 0 (or 10 s), else for the whole of `within`.
func bookingFrames(c *client, within time.Duration, want ...int) []string {
	c.t.Helper()
	n := 0
	if len(want) > 0 {
		n, within = want[0], 10*time.Second
	}
	var got []string
	deadline := time.After(within)
	for n == 0 || len(got) < n {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("socket closed while collecting booking frames")
			}
			if f.Type == "booking" {
				got = append(got, field(f.Data, "status"))
			}
		case <-deadline:
			return got
		}
	}
	return got
}

// crashAt runs dispatchd serve with env until it kills itself at the failpoint named in
// DISPATCH_FAILPOINT, and fails unless it died of SIGKILL.
func crashAt(t *testing.T, env map[string]string) {
	t.Helper()
	cmd := exec.Command(binary(t), "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("dispatchd with %s: got exit %v, want death by SIGKILL at the failpoint\n%s", env["DISPATCH_FAILPOINT"], err, tail(logs.String(), 30))
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("dispatchd did not reach failpoint %s within 60 s\n%s", env["DISPATCH_FAILPOINT"], tail(logs.String(), 30))
	}
}

func waitUntil(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
