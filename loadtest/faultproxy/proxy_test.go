package faultproxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// echo is a server that answers every line with the same line, and every MySQL-framed packet
// with a one-byte packet, recording what it received.
type echo struct {
	ln   net.Listener
	mu   sync.Mutex
	got  [][]byte
	wg   sync.WaitGroup
	mode string // "line" or "mysql"
}

func newEcho(t *testing.T, mode string) *echo {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &echo{ln: ln, mode: mode}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				defer c.Close()
				e.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); e.wg.Wait() })
	return e
}

func (e *echo) serve(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		if e.mode == "line" {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			if _, err := c.Write(line); err != nil {
				return
			}
			continue
		}
		hdr := make([]byte, 4)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		n := int(hdr[0]) | int(hdr[1])<<8 | int(hdr[2])<<16
		body := make([]byte, n)
		if _, err := io.ReadFull(r, body); err != nil {
			return
		}
		e.mu.Lock()
		e.got = append(e.got, body)
		e.mu.Unlock()
		if _, err := c.Write([]byte{1, 0, 0, 1, 0}); err != nil { // an OK-ish answer
			return
		}
	}
}

func (e *echo) received() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, b := range e.got {
		out = append(out, string(b))
	}
	return out
}

func start(t *testing.T, target string, opts Options) *Proxy {
	t.Helper()
	p, err := Listen(target, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func roundTrip(c net.Conn, r *bufio.Reader, deadline time.Duration) (time.Duration, error) {
	t0 := time.Now()
	_ = c.SetDeadline(time.Now().Add(deadline))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "ping\n" {
		return 0, errors.New("echo answered " + line)
	}
	return time.Since(t0), nil
}

func TestLatencyResetBlackhole(t *testing.T) {
	e := newEcho(t, "line")
	p := start(t, e.ln.Addr().String(), Options{})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := roundTrip(c, r, time.Second); err != nil {
		t.Fatalf("plain round trip: %v", err)
	}

	p.SetLatency(200 * time.Millisecond)
	took, err := roundTrip(c, r, 2*time.Second)
	if err != nil || took < 200*time.Millisecond {
		t.Fatalf("round trip with 200 ms latency: got %v (%v), want at least 200 ms", took, err)
	}
	p.SetLatency(0)

	p.SetBlackhole(true)
	if _, err := roundTrip(c, r, 300*time.Millisecond); err == nil {
		t.Fatalf("round trip through a black hole: got an answer, want a timeout")
	}
	p.SetBlackhole(false)
	// The held "ping" is delivered once the hole ends; read it, then the link works again.
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "ping\n" {
		t.Fatalf("after the black hole: got %q, %v; want the held ping", line, err)
	}
	if _, err := roundTrip(c, r, time.Second); err != nil {
		t.Fatalf("round trip after the black hole: %v", err)
	}

	if n := p.Reset(); n != 1 {
		t.Fatalf("Reset: got %d connections, want 1", n)
	}
	if _, err := roundTrip(c, r, time.Second); err == nil {
		t.Fatalf("round trip on a reset connection: got an answer, want an error")
	}
	if p.Accepted() != 1 {
		t.Fatalf("Accepted: got %d, want 1", p.Accepted())
	}
}

func packet(seq byte, cmd byte, q string) []byte {
	n := 1 + len(q)
	return append([]byte{byte(n), byte(n >> 8), byte(n >> 16), seq, cmd}, q...)
}

func TestResetAtCommit(t *testing.T) {
	e := newEcho(t, "mysql")
	p := start(t, e.ln.Addr().String(), Options{MySQL: true})
	p.ResetAtCommit("idempotency_keys", 1)

	exchange := func(c net.Conn, q string) error {
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write(packet(0, 0x03, q)); err != nil {
			return err
		}
		_, err := io.ReadFull(c, make([]byte, 5))
		return err
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, q := range []string{"START TRANSACTION", "INSERT INTO other VALUES (1)", "COMMIT"} {
		if err := exchange(c, q); err != nil {
			t.Fatalf("%s in a transaction that does not match: %v", q, err)
		}
	}
	// A matching statement outside a transaction does not arm the next transaction.
	for _, q := range []string{"SELECT * FROM idempotency_keys", "START TRANSACTION", "UPDATE other SET x = 1", "COMMIT"} {
		if err := exchange(c, q); err != nil {
			t.Fatalf("%s after a matching autocommit statement: %v", q, err)
		}
	}
	for _, q := range []string{"START TRANSACTION", "INSERT INTO idempotency_keys VALUES ('k')"} {
		if err := exchange(c, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := exchange(c, "COMMIT"); err == nil {
		t.Fatalf("the armed COMMIT: got its answer, want the connection cut")
	}
	if got := p.CommitResets(); got != 1 {
		t.Fatalf("CommitResets: got %d, want 1", got)
	}
	// The server did receive the COMMIT: the commit happened, only its answer was lost.
	deadline := time.Now().Add(time.Second)
	for {
		got := e.received()
		if len(got) > 0 && got[len(got)-1] == "\x03COMMIT" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server received %q, want the last to be COMMIT", got)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Disarmed after one: the next matching commit goes through.
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	for _, q := range []string{"BEGIN", "INSERT INTO idempotency_keys VALUES ('k2')", "COMMIT"} {
		if err := exchange(c2, q); err != nil {
			t.Fatalf("%s after the armed commits ran out: %v", q, err)
		}
	}
}

func TestDialFailureResetsClient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := start(t, dead, Options{DialTimeout: 500 * time.Millisecond})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		return // reset before the dial returned: what a client of a dead server sees too
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read through a proxy whose server is down: got data, want an error")
	}
}
