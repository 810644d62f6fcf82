package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/api"
	"github.com/drivers4me/dispatch/store/storetest"
	"github.com/gorilla/websocket"
	"github.com/redis/go-redis/v9"
)

const testSecret = "test-secret-of-at-least-32-bytes-0123456789"

// server is a dispatchd started through run on :0 ports.
type server struct {
	http, admin string
	dsn         string
	env         map[string]string
	cancel      context.CancelFunc
	done        chan error
	logs        *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// backend names where the engine keeps its data: "real" (Redis and MariaDB on loopback) or
// "embedded" (the in-process default).
func startServer(t *testing.T, backend string, extra map[string]string) *server {
	t.Helper()
	env := map[string]string{
		"DISPATCH_HTTP_ADDR": "127.0.0.1:0", "DISPATCH_ADMIN_ADDR": "127.0.0.1:0",
		"DISPATCH_JWT_SECRET": testSecret, "DISPATCH_LOG_FORMAT": "json", "DISPATCH_LOG_LEVEL": "debug",
		"DISPATCH_MATCH_WINDOW": "300ms", "DISPATCH_DRAIN_DELAY": "0",
	}
	s := &server{logs: &syncBuffer{}, done: make(chan error, 1)}
	if backend == "real" {
		s.dsn = extra["MYSQL_DSN"]
		if s.dsn == "" {
			s.dsn = storetest.MySQL(t)
		}
		env["MYSQL_DSN"] = s.dsn
		env["REDIS_URL"] = "redis://127.0.0.1:6379"
		env["DISPATCH_MIGRATE"] = "true"
		env["DISPATCH_REDIS_PREFIX"] = fmt.Sprintf("t%d:", time.Now().UnixNano())
		prefix := env["DISPATCH_REDIS_PREFIX"]
		if p := extra["DISPATCH_REDIS_PREFIX"]; p != "" {
			prefix = p
		}
		t.Cleanup(func() { dropRedisKeys(prefix) })
	}
	for k, v := range extra {
		env[k] = v
	}
	s.env = env
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() {
		err := run(ctx, []string{"serve"}, func(k string) string { return env[k] }, pw)
		pw.Close()
		s.done <- err
	}()
	addrs := make(chan [2]string, 1)
	go func() {
		scanLogs(pr, s.logs, addrs)
	}()
	select {
	case a := <-addrs:
		s.http, s.admin = a[0], a[1]
	case err := <-s.done:
		t.Fatalf("server stopped before listening: %v\n%s", err, s.logs.String())
	case <-time.After(60 * time.Second):
		t.Fatalf("server did not listen within 60 s\n%s", s.logs.String())
	}
	t.Cleanup(func() {
		s.stop(t)
		if t.Failed() {
			t.Logf("server logs:\n%s", tail(s.logs.String(), 60))
		}
	})
	return s
}

func (s *server) stop(t *testing.T) {
	s.cancel()
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Errorf("server did not stop within 20 s")
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func sign(t *testing.T, role, sub string) string {
	t.Helper()
	tok, err := api.Sign([]byte(testSecret), role, sub, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// rest calls the API and decodes the answer into out (if not nil); it returns the status.
func (s *server) rest(t *testing.T, method, path, tok string, body any, hdr map[string]string, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		if str, ok := body.(string); ok {
			rd = strings.NewReader(str)
		} else {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
	}
	req, err := http.NewRequest(method, "http://"+s.http+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && (len(b) > 0 || resp.StatusCode != http.StatusNoContent) {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: answer %d is not JSON: %s", method, path, resp.StatusCode, b)
		}
	}
	return resp.StatusCode
}

type frame struct {
	Type string          `json:"type"`
	Seq  int64           `json:"seq,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

// client is a test's WebSocket: frames arrive on a channel; the close error ends it.
type client struct {
	t      *testing.T
	ws     *websocket.Conn
	frames chan frame
	closed chan error
	mu     sync.Mutex
	seq    int64
}

func (s *server) dial(t *testing.T, tok string) (*client, *http.Response, error) {
	t.Helper()
	h := http.Header{}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
	ws, resp, err := websocket.DefaultDialer.Dial("ws://"+s.http+"/v1/ws", h)
	if err != nil {
		return nil, resp, err
	}
	c := &client{t: t, ws: ws, frames: make(chan frame, 1024), closed: make(chan error, 1)}
	go func() {
		for {
			var f frame
			_, b, err := ws.ReadMessage()
			if err != nil {
				c.closed <- err
				close(c.frames)
				return
			}
			if err := json.Unmarshal(b, &f); err != nil {
				c.closed <- fmt.Errorf("frame is not JSON: %s", b)
				close(c.frames)
				return
			}
			c.frames <- f
		}
	}()
	t.Cleanup(func() { ws.Close() })
	return c, resp, nil
}

func (s *server) mustDial(t *testing.T, tok string) *client {
	t.Helper()
	c, resp, err := s.dial(t, tok)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	return c
}

// send writes a frame with the next seq and returns it.
func (c *client) send(typ string, data any) int64 {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	b, _ := json.Marshal(data)
	if err := c.ws.WriteJSON(frame{Type: typ, Seq: c.seq, Data: b}); err != nil {
		c.t.Fatalf("send %s: %v", typ, err)
	}
	return c.seq
}

func (c *client) sendRaw(s string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("send raw: %v", err)
	}
}

// expect waits for a frame of typ for which match (if set) is true, skipping others.
func (c *client) expect(typ string, within time.Duration, match func(json.RawMessage) bool) json.RawMessage {
	c.t.Helper()
	deadline := time.After(within)
	for {
		select {
		case f, ok := <-c.frames:
			if !ok {
				c.t.Fatalf("socket closed while waiting for %s", typ)
			}
			if f.Type == typ && (match == nil || match(f.Data)) {
				return f.Data
			}
		case <-deadline:
			c.t.Fatalf("no %s frame within %s", typ, within)
		}
	}
}

// reply waits for the ack or error answering seq and returns the error code ("" for an ack).
func (c *client) reply(seq int64) string {
	c.t.Helper()
	code, _ := c.replyMsg(seq)
	return code
}

func field(data json.RawMessage, name string) string {
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	switch v := m[name].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

type booking struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	OTP    string `json:"otp"`
	Driver *struct {
		ID     string  `json:"id"`
		Name   string  `json:"name"`
		Rating float64 `json:"rating"`
	} `json:"driver"`
	Fare struct {
		Currency   string `json:"currency"`
		TotalPaise int64  `json:"total_paise"`
		Lines      []struct {
			Code        string `json:"code"`
			AmountPaise int64  `json:"amount_paise"`
		} `json:"lines"`
	} `json:"fare"`
}

func point(lat, lng float64) map[string]any {
	return map[string]any{"lat": lat, "lng": lng, "acc": 10, "heading": 90, "ts": time.Now().UnixMilli()}
}

func invariantViolations(t *testing.T, dsn string) int {
	t.Helper()
	db := storetest.Open(t, dsn)
	n, err := db.InvariantViolations(context.Background())
	if err != nil {
		t.Fatalf("invariant check: %v", err)
	}
	return n
}

func sqlStatus(t *testing.T, dsn, id string) string {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var st string
	if err := db.QueryRow("SELECT status FROM bookings WHERE id = ?", id).Scan(&st); err != nil {
		t.Fatalf("read booking %s in MySQL: %v", id, err)
	}
	return st
}

// scanLogs copies a server's output into logs line by line and sends the addresses of its
// "listening" log line on addrs (once); it returns when r ends.
func scanLogs(r io.Reader, logs *syncBuffer, addrs chan<- [2]string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	sent := false
	for sc.Scan() {
		line := sc.Bytes()
		logs.Write(append(append([]byte{}, line...), '\n'))
		var l struct{ Message, HTTP, Admin string }
		if !sent && json.Unmarshal(line, &l) == nil && l.Message == "listening" {
			addrs <- [2]string{l.HTTP, l.Admin}
			sent = true
		}
	}
}

// dropRedisKeys deletes a test's keys from the shared Redis.
func dropRedisKeys(prefix string) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	ctx := context.Background()
	iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
}

// forgeToken signs with a key that is not the server's.
func forgeToken(t *testing.T, role, sub string) string {
	t.Helper()
	tok, err := api.Sign([]byte("some-other-secret-that-is-long-enough-0000"), role, sub, time.Hour, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
