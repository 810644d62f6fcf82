package main

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

// TestFaultSIGTERMThousandSockets: SIGTERM with 1,000 sockets open (drivers sending positions,
// customers and dispatchers watching), in process so that goleak can look. /readyz turns 503
// first; every socket is closed with 1001 (none reset, none left open); run returns nil within
// the shutdown timeout; no goroutine of the server is left behind.
func TestFaultSIGTERMThousandSockets(t *testing.T) {
	be := startFaultBackends(t, false) // private processes; their waiters start before the baseline
	ignore := goleak.IgnoreCurrent()
	const shutdownTimeout = 10 * time.Second
	s := startServer(t, "real", map[string]string{"MYSQL_DSN": be.DSN(), "REDIS_URL": be.RedisURL(),
		"DISPATCH_DRAIN_DELAY": "1s", "DISPATCH_SHUTDOWN_TIMEOUT": shutdownTimeout.String(), "DISPATCH_LOG_LEVEL": "info"})

	const drivers, customers, dispatchers = 400, 500, 100
	type sock struct {
		ws     *websocket.Conn
		closed chan error
	}
	socks := make([]*sock, drivers+customers+dispatchers)
	var dialErrs atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	suffix := fmt.Sprint(time.Now().UnixNano())
	for i := range socks {
		role, sub := "driver", fmt.Sprintf("sd-%d-%s", i, suffix)
		switch {
		case i >= drivers+customers:
			role, sub = "dispatcher", fmt.Sprintf("so-%d-%s", i, suffix)
		case i >= drivers:
			role, sub = "customer", fmt.Sprintf("sc-%d-%s", i, suffix)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			h := http.Header{"Authorization": {"Bearer " + sign(t, role, sub)}}
			ws, _, err := websocket.DefaultDialer.Dial("ws://"+s.http+"/v1/ws", h)
			if err != nil {
				dialErrs.Add(1)
				return
			}
			k := &sock{ws: ws, closed: make(chan error, 1)}
			socks[i] = k
			go func() {
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						k.closed <- err
						return
					}
				}
			}()
		}()
	}
	wg.Wait()
	if n := dialErrs.Load(); n > 0 {
		t.Fatalf("%d of %d sockets could not open", n, len(socks))
	}
	faultWaitFor(t, 30*time.Second, "1,000 sockets held by the server", func() bool {
		return faultMetric(s.admin, "dispatch_sockets") == float64(len(socks))
	})
	// The drivers keep sending positions, as phones do, until the server closes them.
	stopSending := make(chan struct{})
	var senders sync.WaitGroup
	for i := 0; i < drivers; i++ {
		senders.Add(1)
		go func(ws *websocket.Conn, i int) {
			defer senders.Done()
			lat := 12.95 + float64(i%40)*0.001
			for {
				select {
				case <-stopSending:
					return
				case <-time.After(300 * time.Millisecond):
				}
				b := fmt.Sprintf(`{"type":"location","data":{"lat":%f,"lng":77.6,"acc":5,"ts":%d}}`, lat, time.Now().UnixMilli())
				if ws.WriteMessage(websocket.TextMessage, []byte(b)) != nil {
					return
				}
			}
		}(socks[i].ws, i)
	}
	time.Sleep(time.Second)
	if st := faultReadyz(s.http); st != 200 {
		t.Fatalf("/readyz before SIGTERM: got %d, want 200", st)
	}

	sent := time.Now()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	faultWaitFor(t, time.Second, "/readyz 503 after SIGTERM", func() bool { return faultReadyz(s.http) == 503 })
	codes := map[string]int{}
	for i, k := range socks {
		select {
		case err := <-k.closed:
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				codes[fmt.Sprint(ce.Code)]++
			} else {
				codes[err.Error()]++
			}
		case <-time.After(shutdownTimeout + 2*time.Second - time.Since(sent)):
			t.Fatalf("socket %d not closed %s after SIGTERM", i, time.Since(sent).Round(time.Millisecond))
		}
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("run after SIGTERM: got %v, want nil (exit 0)", err)
		}
		s.done <- nil // for the cleanup's stop
	case <-time.After(shutdownTimeout + time.Second - time.Since(sent)):
		t.Fatalf("run still going %s after SIGTERM (shutdown timeout %s)", time.Since(sent).Round(time.Millisecond), shutdownTimeout)
	}
	took := time.Since(sent)
	if codes["1001"] != len(socks) {
		t.Errorf("how the %d sockets ended: %v; want all with close 1001", len(socks), codes)
	}
	t.Logf("SIGTERM with %d sockets: all closed with 1001, run returned nil %s after the signal", len(socks), took.Round(time.Millisecond))

	close(stopSending)
	senders.Wait()
	for _, k := range socks {
		k.ws.Close()
	}
	http.DefaultClient.CloseIdleConnections()
	faultHTTP.CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
}
