//go:build !prod

package store_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/store"
	"github.com/drivers4me/dispatch/store/storetest"
)

// BenchmarkCompleteTrips measures completed trips written per second on the test MariaDB
// (DISPATCH_TEST_MYSQL_DSN, default root@127.0.0.1:3306), each with its conditional UPDATE, its
// audit row, its outbox event and its trip row carrying a two-hour route (720 points), under the
// server's own durability settings, which it logs. Run it with a fixed count, for instance
//
//	go test ./store -run '^$' -bench CompleteTrips -benchtime 20000x
//
// Sub-benchmarks: "Transition" completes each trip with its own call from many goroutines, as
// the API does: "alone" with grouping off (Options.CompletionBatch 1: a transaction, a commit
// each), "grouped" as configured by default; "CompleteTrips" gives it slices of 100. Every
// trip is set up in_progress beforehand, outside the timer; afterwards the benchmark counts the
// bookings completed and the trips, audit rows and outbox events written, and fails if any is
// missing: none lost.
func BenchmarkCompleteTrips(b *testing.B) {
	dsn := storetest.MySQL(b)
	ctx := context.Background()
	storetest.Open(b, dsn) // migrated
	raw := rawDB(b, dsn)
	raw.SetMaxOpenConns(8)
	var flush, syncBinlog, logBin string
	if err := raw.QueryRow("SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin").Scan(&flush, &syncBinlog, &logBin); err != nil {
		b.Fatal(err)
	}
	b.Logf("durability: innodb_flush_log_at_trx_commit=%s sync_binlog=%s log_bin=%s", flush, syncBinlog, logBin)
	if flush != "1" || (logBin == "1" && syncBinlog != "1") {
		b.Logf("WARNING: the server is not durable at each commit; this figure does not count")
	}

	var pts []dispatch.Point
	lat, lng := 12.9716, 77.5946
	for i := 0; i < 720; i++ { // two hours at one point every 10 s, about 33 m apart, turning slowly
		lat, lng = lat+0.0003*math.Cos(float64(i)/40), lng+0.0003*math.Sin(float64(i)/40)
		pts = append(pts, dispatch.Point{Lat: lat, Lng: lng, TS: t0.UnixMilli() + int64(i)*10_000})
	}
	route := dispatch.NewRoute(pts)
	serverPID := localServerPID(raw)
	b.Logf("route: %d points, %d m, %d bytes encoded", route.Points, route.DistanceM, len(route.Polyline))

	for _, mode := range []struct {
		name           string
		opts           store.Options
		batch, workers int
	}{
		{"Transition/alone/workers=64", store.Options{MaxOpenConns: 64, CompletionBatch: 1}, 1, 64},
		{"Transition/grouped/workers=64", store.Options{MaxOpenConns: 8}, 1, 64},
		{"Transition/grouped/workers=256", store.Options{MaxOpenConns: 8}, 1, 256},
		{"CompleteTrips/batch=100/workers=8", store.Options{MaxOpenConns: 8}, 100, 8},
	} {
		b.Run(mode.name, func(b *testing.B) {
			db, err := store.Open(ctx, dsn, mode.opts, zerolog.Nop())
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			run := fmt.Sprintf("%s_%d_", strings.NewReplacer("/", "_", "=", "").Replace(mode.name), time.Now().UnixNano())
			cs := inProgress(b, raw, run, b.N, &route)
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, mode.workers)
			serverCPU, clientCPU := cpuOf(serverPID), cpuOf(os.Getpid())
			b.ResetTimer()
			for w := 0; w < mode.workers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						hi := int(next.Add(int64(mode.batch)))
						lo := hi - mode.batch
						if lo >= len(cs) {
							return
						}
						hi = min(hi, len(cs))
						if mode.batch == 1 {
							if _, err := db.Transition(ctx, cs[lo]); err != nil {
								errs <- err
								return
							}
							continue
						}
						_, refusals, err := db.CompleteTrips(ctx, cs[lo:hi])
						if err != nil {
							errs <- err
							return
						}
						for _, r := range refusals {
							if r != nil {
								errs <- r
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			close(errs)
			for err := range errs {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "trips/s")
			// CPU time per trip does not depend on what else the machine runs, unlike trips/s.
			if serverCPU >= 0 {
				b.ReportMetric(float64((cpuOf(serverPID)-serverCPU).Microseconds())/float64(b.N), "server-cpu-µs/trip")
			}
			b.ReportMetric(float64((cpuOf(os.Getpid())-clientCPU).Microseconds())/float64(b.N), "client-cpu-µs/trip")
			for _, c := range []struct {
				what, q string
				arg     any
			}{
				{"completed bookings", "SELECT COUNT(*) FROM bookings WHERE id LIKE ? AND status = 'completed' AND distance_m = ?", route.DistanceM},
				{"trips", "SELECT COUNT(*) FROM trips WHERE booking_id LIKE ? AND route_points = ?", route.Points},
				{"audit rows", "SELECT COUNT(*) FROM booking_events WHERE booking_id LIKE ? AND to_status = ?", dispatch.StatusCompleted},
				{"outbox events", "SELECT COUNT(*) FROM outbox WHERE booking_id LIKE ? AND type = ?", "booking"},
			} {
				var n int
				if err := raw.QueryRow(c.q, run+"%", c.arg).Scan(&n); err != nil {
					b.Fatal(err)
				}
				if n != b.N {
					b.Fatalf("%s: got %d, want %d: some were lost", c.what, n, b.N)
				}
			}
		})
	}
}

// inProgress writes n bookings straight into the tables as they stand once their trips have
// started (version 4, a driver each, its calendar block), and returns their completions.
func inProgress(b *testing.B, raw *sql.DB, run string, n int, route *dispatch.Route) []dispatch.Change {
	b.Helper()
	started := t0.Add(time.Hour)
	ended := started.Add(2*time.Hour + 17*time.Minute)
	tariff := dispatch.DefaultTariff()
	estimate, err := json.Marshal(tariff.Estimate(started, 2, 1))
	if err != nil {
		b.Fatal(err)
	}
	final := tariff.Final(started, ended, 2, 1)
	cs := make([]dispatch.Change, n)
	const chunk = 500
	for lo := 0; lo < n; lo += chunk {
		hi := min(lo+chunk, n)
		var bk, da []string
		var bkArgs, daArgs []any
		for i := lo; i < hi; i++ {
			id, driver := fmt.Sprintf("%s%07d", run, i), fmt.Sprintf("dr_%s%07d", run, i)
			bk = append(bk, "(?, 'in_progress', 'arrived', ?, 12.9716, 77.5946, 'MG Road', 2, ?, ?, 'manual', ?, 'Ravi', 4.8, '4821', ?, ?, ?, '', 4, ?)")
			bkArgs = append(bkArgs, id, "cu_"+id, started, t0, driver, string(estimate), started.Add(-5*time.Minute), started, started)
			da = append(da, "(?, ?, ?, ?)")
			daArgs = append(daArgs, id, driver, started, started.Add(2*time.Hour))
			cs[i] = dispatch.Change{BookingID: id, From: []dispatch.Status{dispatch.StatusInProgress}, To: dispatch.StatusCompleted,
				Version: 4, Driver: &dispatch.DriverRef{ID: driver}, Fare: &final, Route: route, Actor: "driver:" + driver, At: ended}
		}
		if _, err := raw.Exec(`INSERT INTO bookings (id, status, prev_status, customer_id, pickup_lat, pickup_lng,
			pickup_address, hours, start_at, created_at, transmission, driver_id, driver_name, driver_rating, otp, fare,
			arrived_at, started_at, cancel_reason, version, updated_at) VALUES `+strings.Join(bk, ", "), bkArgs...); err != nil {
			b.Fatal(err)
		}
		if _, err := raw.Exec("INSERT INTO driver_blocks (booking_id, driver_id, start_at, end_at) VALUES "+strings.Join(da, ", "), daArgs...); err != nil {
			b.Fatal(err)
		}
	}
	return cs
}

// localServerPID is the process id of the MariaDB server when it runs on this machine, else 0.
func localServerPID(raw *sql.DB) int {
	var file string
	if err := raw.QueryRow("SELECT @@pid_file").Scan(&file); err != nil {
		return 0
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return pid
}

// cpuOf is the CPU time (user and system) a process has used, or -1 when it cannot be read.
func cpuOf(pid int) time.Duration {
	if pid <= 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The fields after the command name (which is in parentheses): utime and stime are 14 and 15.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return -1
	}
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}
