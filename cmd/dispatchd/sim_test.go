package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSimulatedFleet: make run's fleet (DISPATCH_SIMULATE_DRIVERS, wired by sim.go in the
// development build) registers its drivers and brings them online, visible to a dispatcher.
func TestSimulatedFleet(t *testing.T) {
	const drivers = 5
	s := startServer(t, "real", map[string]string{"DISPATCH_SIMULATE_DRIVERS": "5", "DISPATCH_LOG_LEVEL": "info"})
	staff := sign(t, "dispatcher", "sim-test")
	var seen []string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		// Bengaluru's box (loadtest.Bengaluru) lies within 25 km of this point.
		var near struct {
			Drivers []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"drivers"`
		}
		if st := s.rest(t, "GET", "/v1/drivers/nearby?lat=12.975&lng=77.615&radius_m=50000&limit=100", staff, nil, nil, &near); st != 200 {
			t.Fatalf("GET /v1/drivers/nearby: got %d, want 200", st)
		}
		seen = seen[:0]
		for _, d := range near.Drivers {
			if strings.HasPrefix(d.ID, "sim-drv-") {
				seen = append(seen, d.ID)
			}
		}
		if len(seen) == drivers {
			return
		}
	}
	t.Fatalf("simulated drivers online after 60 s: got %d %v, want %d", len(seen), seen, drivers)
}

// TestProductionBuildCarriesNoSimulator: the production binary (-tags prod, as deploy/image.sh
// builds it) leaves out what only development uses: the simulated fleet (loadtest, with
// gonum/plot's charts and fonts) and the embedded engines. fpdf stays for api's PDF receipts
// and for nothing else. Asked for a fleet, that binary refuses to start and names the settings.
func TestProductionBuildCarriesNoSimulator(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "prod", "-deps", "-f", `{{.ImportPath}}:{{join .Imports " "}}`, ".").Output()
	if err != nil {
		t.Fatalf("go list -tags prod -deps: %v\n%s", err, stderrOf(err))
	}
	forbidden := []string{"github.com/drivers4me/dispatch/loadtest", "gonum.org/", "github.com/alicebob/miniredis",
		"github.com/dolthub/go-mysql-server", "github.com/drivers4me/dispatch/store/embedded"}
	var pdfUsers []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, imports, _ := strings.Cut(line, ":")
		for _, f := range forbidden {
			if strings.HasPrefix(pkg, f) {
				t.Errorf("the production build depends on %s", pkg)
			}
		}
		if slices.Contains(strings.Fields(imports), "codeberg.org/go-pdf/fpdf") {
			pdfUsers = append(pdfUsers, pkg)
		}
	}
	for _, p := range pdfUsers {
		if p != "github.com/drivers4me/dispatch/api" {
			t.Errorf("in the production build %s imports fpdf; want only api (receipts)", p)
		}
	}

	bin := filepath.Join(t.TempDir(), "dispatchd")
	if b, err := exec.Command("go", "build", "-tags", "prod", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags prod: %v\n%s", err, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, setting := range []string{"DISPATCH_SIMULATE_DRIVERS=5", "DISPATCH_SIMULATE_BOOKINGS_PER_MIN=6"} {
		cmd := exec.CommandContext(ctx, bin, "serve")
		// Nothing listens on port 1: the refusal must come before any connection is tried.
		cmd.Env = []string{"DISPATCH_JWT_SECRET=" + testSecret, "REDIS_URL=redis://127.0.0.1:1",
			"MYSQL_DSN=root@tcp(127.0.0.1:1)/none", "DISPATCH_HTTP_ADDR=127.0.0.1:0", "DISPATCH_ADMIN_ADDR=127.0.0.1:0", setting}
		b, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(b), "DISPATCH_SIMULATE_DRIVERS") || !strings.Contains(string(b), "no simulated fleet") {
			t.Errorf("production dispatchd serve with %s: got %v\n%s\nwant it refused, naming the setting", setting, err, b)
		}
	}
}

func stderrOf(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}
