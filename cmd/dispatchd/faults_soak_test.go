//go:build soak

package main

// The soak: on demand only (RELIABILITY.md), never in `make test`:
//
//	DISPATCH_SOAK=10m go test -race -tags soak -run TestFaultSoak -timeout 30m -v ./cmd/dispatchd/
//
// DISPATCH_SOAK is how long it runs (default 10m); DISPATCH_SOAK_SEED fixes the sequence of
// faults (default: the clock, printed so that a run can be repeated).

import (
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFaultSoak: a load of drivers and customers for DISPATCH_SOAK while random faults hit it
// one after another (Redis or MariaDB killed and restarted, latency, resets, ambiguous commits,
// black holes, the engine restarted), the dispatch invariant checked every second. At the end:
// zero violations, every acknowledged booking in MariaDB, one booking per key, every key
// acknowledged, the engine never died nor panicked, and exits 0 on SIGTERM.
func TestFaultSoak(t *testing.T) {
	total := 10 * time.Minute
	if v := os.Getenv("DISPATCH_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("DISPATCH_SOAK=%q: want a duration such as 10m", v)
		}
		total = d
	}
	seed := time.Now().UnixNano()
	if v := os.Getenv("DISPATCH_SOAK_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("DISPATCH_SOAK_SEED=%q: want an integer", v)
		}
		seed = n
	}
	t.Logf("soak for %s, seed %d", total, seed)
	rng := rand.New(rand.NewSource(seed))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int63n(int64(hi-lo))) }

	be := startFaultBackends(t, true)
	env := be.env()
	env["DISPATCH_HTTP_ADDR"] = faultHTTPPort(t)
	srv := startFaultChild(t, env)
	inv := watchFaultInvariant(t, be.DirectDSN(), time.Second)
	l := startFaultLoad(t, srv.http, faultLoadOptions{drivers: 60, bookingsPerMin: 120, ledgerCustomers: 3,
		ledgerPause: 200 * time.Millisecond, prefix: "sk"})

	faults := []struct {
		name string
		do   func() string
	}{
		{"redis killed and restarted empty", func() string {
			be.redis.Kill()
			d := between(2*time.Second, 8*time.Second)
			time.Sleep(d)
			be.redis.Restart()
			return "down " + d.Round(time.Millisecond).String()
		}},
		{"mariadb killed and restarted", func() string {
			be.maria.Kill()
			d := between(2*time.Second, 8*time.Second)
			time.Sleep(d)
			be.maria.Restart()
			return "down " + d.Round(time.Millisecond).String()
		}},
		{"redis latency", func() string {
			lat, d := between(100*time.Millisecond, 800*time.Millisecond), between(5*time.Second, 15*time.Second)
			be.rproxy.SetLatency(lat)
			time.Sleep(d)
			be.rproxy.SetLatency(0)
			return fmt.Sprintf("%s for %s", lat.Round(time.Millisecond), d.Round(time.Millisecond))
		}},
		{"mariadb latency", func() string {
			lat, d := between(50*time.Millisecond, 400*time.Millisecond), between(5*time.Second, 15*time.Second)
			be.mproxy.SetLatency(lat)
			time.Sleep(d)
			be.mproxy.SetLatency(0)
			return fmt.Sprintf("%s for %s", lat.Round(time.Millisecond), d.Round(time.Millisecond))
		}},
		{"connections reset", func() string {
			n := 0
			for i := 0; i < 3; i++ {
				n += be.rproxy.Reset() + be.mproxy.Reset()
				time.Sleep(500 * time.Millisecond)
			}
			return fmt.Sprintf("%d connections", n)
		}},
		{"ambiguous commits", func() string {
			before := be.mproxy.CommitResets()
			be.mproxy.ResetAtCommit("skled-cust-", 3)
			deadline := time.Now().Add(20 * time.Second)
			for be.mproxy.CommitResets() < before+3 && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			be.mproxy.ResetAtCommit("", 0)
			return fmt.Sprintf("%d commits cut", be.mproxy.CommitResets()-before)
		}},
		{"redis black hole", func() string {
			d := between(2*time.Second, 6*time.Second)
			be.rproxy.SetBlackhole(true)
			time.Sleep(d)
			be.rproxy.SetBlackhole(false)
			return d.Round(time.Millisecond).String()
		}},
		{"mariadb black hole", func() string {
			d := between(2*time.Second, 6*time.Second)
			be.mproxy.SetBlackhole(true)
			time.Sleep(d)
			be.mproxy.SetBlackhole(false)
			return d.Round(time.Millisecond).String()
		}},
		{"engine restarted (SIGTERM, exit 0)", func() string {
			t0 := time.Now()
			srv.stop(t)
			srv = startFaultChild(t, env)
			return "back in " + time.Since(t0).Round(time.Millisecond).String()
		}},
	}

	count := map[string]int{}
	end := time.Now().Add(total)
	for time.Now().Before(end) {
		// Quiet spell, checking all along.
		quiet := time.Now().Add(between(10*time.Second, 30*time.Second))
		for time.Now().Before(quiet) && time.Now().Before(end) {
			time.Sleep(time.Second)
			srv.healthy(t)
			if v := inv.violations.Load(); v != 0 {
				t.Fatalf("dispatch invariant violated (%d) at %s into the soak", v, total-time.Until(end))
			}
		}
		if !time.Now().Before(end) {
			break
		}
		f := faults[rng.Intn(len(faults))]
		at := total - time.Until(end)
		what := f.do()
		count[f.name]++
		back := faultWaitFor(t, 60*time.Second, "/readyz 200 after "+f.name, func() bool { return faultReadyz(srv.http) == 200 })
		t.Logf("%8s  %-36s %-28s ready again %s after", at.Round(time.Second), f.name, what, back.Round(time.Millisecond))
		srv.healthy(t)
	}

	l.stop(60 * time.Second)
	names := make([]string, 0, len(count))
	for n := range count {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "\n  %-36s %d", n, count[n])
	}
	t.Logf("faults injected:%s", b.String())
	l.ledger.verify(t, be.DirectDSN(), true)
	faultFleetBookingsKept(t, be.DirectDSN(), l, "sk")
	inv.verify(t, int64(total/time.Second)*8/10)
	srv.stop(t)
}
