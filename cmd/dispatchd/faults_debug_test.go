package main

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestFaultDebugSlow(t *testing.T) {
	be := startFaultBackends(t, false)
	srv := startFaultChild(t, be.env())
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(4096)
		}
		return c, err
	}}
	hdr := http.Header{"Authorization": {"Bearer " + sign(t, "dispatcher", "slow")}}
	ws, _, err := d.Dial("ws://"+srv.http+"/v1/ws", hdr)
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	start := time.Now()
	go func() {
		for {
			if ws.WriteMessage(websocket.TextMessage, []byte(`{}`)) != nil {
				t.Logf("flood ended at %s after %d", time.Since(start), sent.Load())
				return
			}
			sent.Add(1)
		}
	}()
	for faultMetric(srv.admin, `dispatch_frames_dropped_total{kind="slow_reader"}`) < 1 {
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("dropped at %s sent %d", time.Since(start), sent.Load())
	n := 0
	for {
		_, _, err := ws.ReadMessage()
		if err != nil {
			t.Logf("read err at %s after %d frames: %v", time.Since(start), n, err)
			break
		}
		if n == 0 {
			t.Logf("first frame at %s", time.Since(start))
		}
		n++
	}
	time.Sleep(time.Second)
}
