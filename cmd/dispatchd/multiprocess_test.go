package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/store/storetest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds dispatchd once for the tests that need real processes.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dispatchd-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "dispatchd")
		// -tags failpoints: DISPATCH_FAILPOINT can kill it at an exact point (outbox_crash_test.go).
		out, err := exec.Command("go", "build", "-tags", "failpoints", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is a dispatchd process.
type proc struct {
	*server
	name string
	cmd  *exec.Cmd
	exit chan error
}

func startProc(t *testing.T, name string, env map[string]string) *proc {
	t.Helper()
	cmd := exec.Command(binary(t), "serve")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	p := &proc{server: &server{logs: &syncBuffer{}, env: env}, name: name, cmd: cmd, exit: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		scanLogs(out, p.logs, addrs)
		p.exit <- cmd.Wait()
	}()
	select {
	case a := <-addrs:
		p.http, p.admin = a[0], a[1]
	case err := <-p.exit:
		t.Fatalf("%s exited before listening: %v\n%s", name, err, p.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("%s did not listen within 60 s", name)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			t.Logf("%s logs:\n%s", name, tail(p.logs.String(), 40))
		}
	})
	return p
}

// TestMultiProcess: two gateways, two dispatchers and one API process share Redis and MariaDB.
// A driver on gateway A gets an offer made by a dispatcher for a booking created through the
// API; kill -9 the dispatcher owning the region: the region moves within 10 s and nothing is
// lost or assigned twice; SIGTERM gateway A: its driver reconnects to B and resumes.
func TestMultiProcess(t *testing.T) {
	dsn := storetest.MySQL(t)
	prefix := fmt.Sprintf("mp%d:", time.Now().UnixNano())
	t.Cleanup(func() { dropRedisKeys(prefix) })
	base := map[string]string{"MYSQL_DSN": dsn, "REDIS_URL": "redis://127.0.0.1:6379", "DISPATCH_REDIS_PREFIX": prefix,
		"DISPATCH_JWT_SECRET": testSecret, "DISPATCH_LOG_FORMAT": "json", "DISPATCH_HTTP_ADDR": "127.0.0.1:0",
		"DISPATCH_ADMIN_ADDR": "127.0.0.1:0", "DISPATCH_MATCH_WINDOW": "300ms", "DISPATCH_DRAIN_DELAY": "0",
		"DISPATCH_OFFER_TIMEOUT": "20s"}
	with := func(role string) map[string]string {
		m := map[string]string{"DISPATCH_ROLES": role}
		for k, v := range base {
			m[k] = v
		}
		return m
	}
	apiProc := startProc(t, "api", with("api"))
	if err := func() error { // the schema, once, as the pipeline's one-off migrate task would
		cmd := exec.Command(binary(t), "migrate")
		cmd.Env = []string{"MYSQL_DSN=" + dsn, "PATH=" + os.Getenv("PATH")}
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("migrate: %v\n%s", err, out)
		}
		return nil
	}(); err != nil {
		t.Fatal(err)
	}
	gwA := startProc(t, "gateway-a", with("gateway"))
	gwB := startProc(t, "gateway-b", with("gateway"))
	d1 := startProc(t, "dispatcher-1", with("dispatcher"))
	d2 := startProc(t, "dispatcher-2", with("dispatcher"))
	dispatchers := []*proc{d1, d2}

	suffix := fmt.Sprint(time.Now().UnixNano())
	lat, lng := 12.93, 77.62
	drvID := "mp-drv-" + suffix
	apiProc.registerDriver(t, drvID)
	drv := liveDriver(t, gwA.server, drvID, lat+0.002, lng)
	ctok := sign(t, "customer", "mp-cust-"+suffix)
	book := func(key string) booking {
		t.Helper()
		var b booking
		body := map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": 2, "car": map[string]string{"transmission": "manual"}}
		if st := apiProc.rest(t, "POST", "/v1/bookings", ctok, body, map[string]string{"Idempotency-Key": key + suffix}, &b); st != 201 {
			t.Fatalf("book through the API process: got %d", st)
		}
		return b
	}

	// 1. An offer made by whichever dispatcher owns the region reaches the driver on gateway A.
	b1 := book("one")
	offer := drv.expect("offer", 10*time.Second, func(d json.RawMessage) bool { return field(d, "booking_id") == b1.ID })
	owner := ownerOf(t, dispatchers)
	if owner == nil {
		t.Fatal("no dispatcher owns the region after an offer was made")
	}
	t.Logf("region owned by %s", owner.name)

	// 2. kill -9 the owner: the other takes the region and offers the next booking within 10 s.
	_ = owner.cmd.Process.Signal(syscall.SIGKILL)
	<-owner.exit
	killed := time.Now()
	if code := drv.reply(drv.send("offer.decline", map[string]string{"offer_id": field(offer, "offer_id")})); code != "" {
		t.Fatalf("decline: %q", code)
	}
	other := d1
	if owner == d1 {
		other = d2
	}
	b2 := book("two")
	offer2 := drv.expect("offer", 10*time.Second, func(d json.RawMessage) bool { return field(d, "booking_id") == b2.ID })
	if took := time.Since(killed); took > 10*time.Second {
		t.Fatalf("the region moved after %s, want within 10 s", took)
	}
	if ownerOf(t, []*proc{other}) == nil {
		t.Fatalf("%s does not own the region after the takeover", other.name)
	}

	// 3. The driver accepts on A; SIGTERM A; the driver reconnects to B and resumes its booking.
	if code := drv.reply(drv.send("offer.accept", map[string]string{"offer_id": field(offer2, "offer_id")})); code != "" {
		t.Fatalf("accept: %q", code)
	}
	// A second driver on A holds an offer it has not answered yet.
	drv2ID := "mp-drv2-" + suffix
	apiProc.registerDriver(t, drv2ID)
	drv2 := liveDriver(t, gwA.server, drv2ID, lat+0.03, lng)
	var b3 booking
	body := map[string]any{"pickup": map[string]any{"lat": lat + 0.031, "lng": lng}, "hours": 1, "car": map[string]string{"transmission": "manual"}}
	if st := apiProc.rest(t, "POST", "/v1/bookings", ctok, body, map[string]string{"Idempotency-Key": "three" + suffix}, &b3); st != 201 {
		t.Fatalf("third booking: %d", st)
	}
	open := drv2.expect("offer", 10*time.Second, func(d json.RawMessage) bool { return field(d, "booking_id") == b3.ID })
	_ = gwA.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-drv.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("gateway A did not close the driver's socket within 10 s of SIGTERM")
	}
	select {
	case err := <-gwA.exit:
		if err != nil {
			t.Fatalf("gateway A exited with %v, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway A did not exit within 10 s")
	}
	again := gwB.mustDial(t, sign(t, "driver", drvID))
	hello := again.expect("hello", 5*time.Second, nil)
	var h struct {
		Booking *booking `json:"booking"`
	}
	_ = json.Unmarshal(hello, &h)
	if h.Booking == nil || h.Booking.ID != b2.ID || h.Booking.Status != "assigned" {
		t.Fatalf("hello on gateway B: got booking %+v, want %s assigned", h.Booking, b2.ID)
	}
	again2 := gwB.mustDial(t, sign(t, "driver", drv2ID))
	again2.expect("hello", 5*time.Second, nil)
	resent := again2.expect("offer", 5*time.Second, nil)
	if field(resent, "offer_id") != field(open, "offer_id") {
		t.Fatalf("after reconnecting to B: got offer %s, want the open %s sent again", field(resent, "offer_id"), field(open, "offer_id"))
	}
	// b1 was declined; nothing is assigned twice and nothing lost.
	var got1 booking
	apiProc.rest(t, "GET", "/v1/bookings/"+b1.ID, ctok, nil, nil, &got1)
	if got1.Status != "searching" {
		t.Fatalf("declined booking: got %q, want searching", got1.Status)
	}
	if n := invariantViolations(t, dsn); n != 0 {
		t.Fatalf("invariant violations: got %d, want 0", n)
	}
}

// ownerOf returns the process among ps whose matcher owns a region now.
func ownerOf(t *testing.T, ps []*proc) *proc {
	t.Helper()
	for _, p := range ps {
		if p.metric(t, "dispatch_regions_owned") > 0 {
			return p
		}
	}
	return nil
}
