package main

import (
	"errors"
	"fmt"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/store/storetest"
	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

// TestSIGTERM: /readyz turns 503, sockets are closed with 1001, run returns nil within 10 s,
// and no goroutine of the server is left behind.
func TestSIGTERM(t *testing.T) {
	dsn := storetest.MySQL(t) // the test's own admin connection stays open until cleanup
	ignore := goleak.IgnoreCurrent()
	s := startServer(t, "real", map[string]string{"DISPATCH_DRAIN_DELAY": "1500ms", "MYSQL_DSN": dsn})
	suffix := fmt.Sprint(time.Now().UnixNano())
	var clients []*client
	for _, tok := range []string{sign(t, "driver", "d-"+suffix), sign(t, "customer", "c-"+suffix), sign(t, "dispatcher", "o-"+suffix)} {
		c := s.mustDial(t, tok)
		clients = append(clients, c)
	}
	clients[0].expect("hello", 5*time.Second, nil)
	if st := s.rest(t, "GET", "/readyz", "", nil, nil, nil); st != 200 {
		t.Fatalf("readyz before SIGTERM: got %d, want 200", st)
	}

	sent := time.Now()
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	saw503 := false
	for time.Now().Before(deadline) && !saw503 {
		resp, err := http.Get("http://" + s.http + "/readyz")
		if err == nil {
			saw503 = resp.StatusCode == http.StatusServiceUnavailable
			resp.Body.Close()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !saw503 {
		t.Fatalf("readyz did not turn 503 after SIGTERM")
	}
	for i, c := range clients {
		select {
		case err := <-c.closed:
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway {
				t.Errorf("socket %d: got %v, want close 1001", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("socket %d not closed within 10 s", i)
		}
	}
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("run after SIGTERM: got %v, want nil (exit 0)", err)
		}
		s.done <- nil // for the cleanup's stop
	case <-time.After(10*time.Second - time.Since(sent)):
		t.Fatalf("run still going 10 s after SIGTERM")
	}
	http.DefaultClient.CloseIdleConnections()
	for _, c := range clients {
		c.ws.Close()
	}
	goleak.VerifyNone(t, ignore)
}
