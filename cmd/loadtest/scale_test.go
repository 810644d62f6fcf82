package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/loadtest"
	"github.com/drivers4me/dispatch/store/storetest"
)

// TestSocketsAndFanoutOverTwoGateways runs `loadtest sockets` and `loadtest fanout` at small
// scale against two real dispatchd processes (one with every role, one a gateway only) on the
// real Redis and MariaDB, their sockets held by child processes (this test binary acting as the
// command), and checks what they report against what the servers counted.
func TestSocketsAndFanoutOverTwoGateways(t *testing.T) {
	dsn := storetest.MySQL(t)
	dir := t.TempDir()
	dispatchd := build(t, dir, "dispatchd")
	t.Setenv(childEnv, "1")
	secret := randomHex(t, 32)
	prefix := "lt_scale_" + randomHex(t, 6) + ":"
	t.Cleanup(func() { dropRedisPrefix(t, prefix) })
	env := map[string]string{
		"DISPATCH_HTTP_ADDR": "127.0.0.1:0", "DISPATCH_ADMIN_ADDR": "127.0.0.1:0",
		"REDIS_URL": "redis://" + redisAddr, "MYSQL_DSN": dsn, "DISPATCH_MIGRATE": "true",
		"DISPATCH_REDIS_PREFIX": prefix, "DISPATCH_JWT_SECRET": secret, "DISPATCH_RATE_PER_USER": "0",
		"DISPATCH_LOG_FORMAT": "json", "DISPATCH_LOG_LEVEL": "info", "DISPATCH_DRAIN_DELAY": "0s",
		"DISPATCH_MATCH_WINDOW": "300ms",
	}
	all := startServer(t, dispatchd, env)
	env["DISPATCH_ROLES"], env["DISPATCH_MIGRATE"] = "gateway", "false"
	gw := startServer(t, dispatchd, env)
	urls := []string{"ws://" + all.http + "/v1/ws", "ws://" + gw.http + "/v1/ws"}
	metrics := []string{"http://" + all.admin + "/metrics", "http://" + gw.admin + "/metrics"}
	log := zerolog.New(io.Discard)

	t.Run("sockets", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		rep, err := loadtest.Sockets(ctx, loadtest.SocketsOptions{URLs: urls, Metrics: metrics, REST: "http://" + all.http,
			Secret: []byte(secret), Sockets: 300, Procs: 2, Every: time.Second, Duration: 4 * time.Second, Storm: 100,
			ProbeDrvs: 2, IDPrefix: "sk" + randomHex(t, 3), Seed: 1, City: loadtest.Bengaluru}, log)
		if err != nil {
			t.Fatalf("sockets: %v\nserver log:\n%s", err, all.logTail())
		}
		t.Logf("\n%s", rep.Markdown())
		var onServers float64
		for _, n := range rep.SocketsPer {
			onServers += n
		}
		switch {
		case rep.Connected != 300 || rep.Dropped != 0:
			t.Fatalf("connected %d, dropped %d: want 300 and 0", rep.Connected, rep.Dropped)
		case onServers != 302 || rep.SocketsPer[0] < 100 || rep.SocketsPer[1] < 100:
			t.Fatalf("the gateways count %v driver sockets, want 302 in all (300 and the 2 probe drivers), spread over both", rep.SocketsPer)
		case rep.PointsSent < 600 || rep.PointsReceived < 0.9*float64(rep.PointsSent):
			t.Fatalf("points sent %d, read by the gateways %.0f: want over 600, nearly all read", rep.PointsSent, rep.PointsReceived)
		case rep.StormSockets != 100 || rep.StormLeft != 0 || rep.StormSeconds <= 0:
			t.Fatalf("storm of %d: %d not back, %.1f s; want 100, 0 and a time", rep.StormSockets, rep.StormLeft, rep.StormSeconds)
		case rep.ReadyzN == 0 || rep.ReadyzFailed != 0:
			t.Fatalf("/readyz during the storm: %d polls, %d failed; want some, none failed", rep.ReadyzN, rep.ReadyzFailed)
		case len(rep.OfferHold) == 0 || rep.OfferHold[len(rep.OfferHold)-1] > 10000:
			t.Fatalf("booking to offer during the hold: %v ms, want offers within seconds", rep.OfferHold)
		case rep.RSSPerSocket <= 0:
			t.Fatalf("RSS per socket %v, want a figure", rep.RSSPerSocket)
		}
	})

	t.Run("fanout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		rep, err := loadtest.Fanout(ctx, loadtest.FanoutOptions{URL: urls[0] + "," + urls[1], REST: "http://" + all.http,
			MetricsURL: metrics[0] + "," + metrics[1], Secret: []byte(secret), City: loadtest.Bengaluru, Drivers: 60,
			Dispatchers: 4, Customers: 4, Warmup: 10 * time.Second, Duration: 5 * time.Second, Procs: 2,
			IDPrefix: "fo" + randomHex(t, 3), Seed: 1}, log)
		if err != nil {
			t.Fatalf("fanout: %v\nserver log:\n%s", err, all.logTail())
		}
		t.Logf("\n%s", rep.Markdown())
		switch {
		case rep.DriversOnline != 60 || rep.PointsSent < 200:
			t.Fatalf("drivers online %d, points sent %d: want 60 and about 300", rep.DriversOnline, rep.PointsSent)
		case rep.DispatcherUpdates == 0 || rep.Outside != 0:
			t.Fatalf("dispatcher updates %d, outside their area %d: want some and none", rep.DispatcherUpdates, rep.Outside)
		case rep.CustomersTracking == 0 || rep.CustomerUpdates == 0:
			t.Fatalf("customers tracking %d, their updates %d: want some (drivers on both gateways)", rep.CustomersTracking, rep.CustomerUpdates)
		case rep.ViewSent < float64(rep.DispatcherUpdates)/2:
			t.Fatalf("the servers sent %.0f dispatcher updates, the dispatchers counted %d", rep.ViewSent, rep.DispatcherUpdates)
		}
	})
}
