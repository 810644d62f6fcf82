package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestLiveMapInBrowser opens the live map in headless Chromium (Debian's package) driven by
// playwright-core, against a server with simulated drivers (real Redis and MariaDB): drivers are
// drawn and move, and a new booking shows up; drivers carry their names; an unfulfilled booking
// is retried and then cancelled from the booking panel, whose audit trail shows each step; an
// assigned booking's panel shows its driver's name, rating and calendar; the map zooms from a
// street to all of India and back and keeps moving, and it draws at least 30 frames a second
// (rAF over 10 s) with the fleet in view. Bookings give up searching at once here
// (DISPATCH_MAX_SEARCH 200ms, under the 300 ms matching window), so the test's bookings become
// unfulfilled without waiting. The screenshot is kept in testdata/ (and in the test's log on failure).
// It needs /usr/bin/chromium and `npm ci` in api/web/e2e; .ci/run installs both.
//
// MAP_TEST_DRIVERS sets the simulated fleet (default 1000, at most 20000);
// MAP_SYNTHETIC_DRIVERS=20000 also measures the frame rate with that many drivers fed to the
// page by a socket served inside the browser (BENCHMARKS.md has the figure and its command).
func TestLiveMapInBrowser(t *testing.T) {
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatal("the browser test needs Debian's chromium: apt-get install chromium (.ci/run does)")
	}
	e2e, _ := filepath.Abs("../../api/web/e2e")
	if _, err := os.Stat(filepath.Join(e2e, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("the browser test needs playwright-core: cd api/web/e2e && npm ci (.ci/run does)")
	}
	fleet := os.Getenv("MAP_TEST_DRIVERS")
	if fleet == "" {
		fleet = "1000"
	}
	s := startServer(t, "real", map[string]string{"DISPATCH_SIMULATE_DRIVERS": fleet, "DISPATCH_LOG_LEVEL": "info",
		"DISPATCH_MAX_SEARCH": "200ms"})
	shot, _ := filepath.Abs("testdata/live-map.png")
	_ = os.MkdirAll(filepath.Dir(shot), 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", "map.test.mjs")
	cmd.Dir = e2e
	cmd.Env = append(os.Environ(),
		"BASE_URL=http://"+s.http,
		"DISPATCHER_TOKEN="+sign(t, "dispatcher", "browser-test"),
		"CUSTOMER_TOKEN="+sign(t, "customer", fmt.Sprint("browser-cust-", time.Now().UnixNano())),
		"SCREENSHOT="+shot,
		"SYNTHETIC_DRIVERS="+os.Getenv("MAP_SYNTHETIC_DRIVERS"),
	)
	out, err := cmd.CombinedOutput()
	t.Logf("browser test output:\n%s", out)
	if err != nil {
		t.Fatalf("browser test failed: %v (screenshot: %s)", err, shot)
	}
}
