package realtime

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/rand"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// clientFrame is one masked frame as a client sends it (RFC 6455 5.2).
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b0 := op
	if fin {
		b0 |= 0x80
	}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n < 1<<16:
		out = append(out, 0x80|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	mask := [4]byte{1, 2, 3, 4}
	out = append(out, mask[:]...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// chunked hands out a stream in pieces of random sizes, as TCP may.
type chunked struct {
	net.Conn
	r   *bytes.Reader
	rnd *rand.Rand
}

func (c *chunked) Read(p []byte) (int, error) {
	if n := 1 + c.rnd.Intn(40); n < len(p) {
		p = p[:n]
	}
	return c.r.Read(p)
}

// framedConn finds where every message ends, whatever the pieces the stream arrives in:
// single-frame messages of each length encoding, an empty one, a fragmented one with a ping
// between its fragments, and control frames between messages.
func TestFramedConnFindsMessageEnds(t *testing.T) {
	var stream []byte
	var want []int64
	msg := func(frames ...[]byte) {
		for _, f := range frames {
			stream = append(stream, f...)
		}
		want = append(want, int64(len(stream)))
	}
	ctl := func(f []byte) { stream = append(stream, f...) }
	msg(clientFrame(true, websocket.TextMessage, []byte(`{"type":"location"}`)))
	ctl(clientFrame(true, websocket.PingMessage, []byte("p")))
	msg(clientFrame(true, websocket.TextMessage, bytes.Repeat([]byte("a"), 300)))
	msg(clientFrame(true, websocket.TextMessage, nil))
	msg(clientFrame(false, websocket.TextMessage, []byte("first ")),
		clientFrame(true, websocket.PingMessage, nil),
		clientFrame(false, 0, []byte("middle ")),
		clientFrame(true, 0, []byte("last")))
	ctl(clientFrame(true, websocket.PongMessage, []byte("q")))
	msg(clientFrame(true, websocket.BinaryMessage, bytes.Repeat([]byte("b"), 70000)))
	for seed := int64(1); seed <= 50; seed++ {
		f := newFramedConn(&chunked{r: bytes.NewReader(stream), rnd: rand.New(rand.NewSource(seed))})
		if _, err := io.Copy(io.Discard, struct{ io.Reader }{f}); err != nil {
			t.Fatal(err)
		}
		if len(f.ends) != len(want) {
			t.Fatalf("seed %d: message ends %v, want %v", seed, f.ends, want)
		}
		for i := range want {
			if f.ends[i] != want[i] {
				t.Fatalf("seed %d: message ends %v, want %v", seed, f.ends, want)
			}
		}
		if f.hn != 0 || f.left != 0 || f.passed != int64(len(stream)) {
			t.Fatalf("seed %d: stopped inside a frame (header %d bytes, %d left)", seed, f.hn, f.left)
		}
	}
}

// An idle socket holds its reader and nothing else: no writer goroutine once its frames are
// written. A frame queued for it (an ack) starts a writer, which ends again. Two frames arriving
// in one TCP segment are both handled: the reader does not wait for the network while gorilla
// holds the second (where the read loop waits between messages, idle.go).
func TestIdleSocketHoldsOnlyItsReader(t *testing.T) {
	g := newGateway(t, Options{Rate: 1000})
	const n = 200
	settle := func() int {
		var last int
		for range 50 {
			runtime.GC()
			time.Sleep(20 * time.Millisecond)
			now := runtime.NumGoroutine()
			if now == last {
				return now
			}
			last = now
		}
		return last
	}
	before := settle()
	var socks []*websocket.Conn
	var ws []*watcher
	for i := range n {
		h := http.Header{}
		h.Set("Authorization", "Bearer idle"+itoa(int64(i)))
		c, _, err := websocket.DefaultDialer.Dial(g.url, h)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		w := watch(c)
		if f := w.next(t); f.Type != "hello" {
			t.Fatalf("first frame: got %+v, want hello", f)
		}
		socks, ws = append(socks, c), append(ws, w)
	}
	// Each socket costs the server one goroutine (its reader) and this test one (its watcher).
	if got := settle() - before; got > 2*n+20 {
		t.Fatalf("%d idle sockets added %d goroutines, want about %d (a reader each, and the test's watcher)", n, got, 2*n)
	}
	// Both frames of one segment are answered.
	two := append(clientFrame(true, websocket.TextMessage, []byte(`{"type":"status","seq":1,"data":{"state":"offline"}}`)),
		clientFrame(true, websocket.TextMessage, []byte(`{"type":"status","seq":2,"data":{"state":"bogus"}}`))...)
	if _, err := socks[0].NetConn().Write(two); err != nil {
		t.Fatal(err)
	}
	ws[0].want(t, "ack", 1, "")
	ws[0].want(t, "error", 2, "invalid_argument")
	// And the socket waits idle again, then reads the next frame.
	time.Sleep(100 * time.Millisecond)
	if err := socks[0].WriteMessage(websocket.TextMessage, []byte(`{"type":"status","seq":3,"data":{"state":"offline"}}`)); err != nil {
		t.Fatal(err)
	}
	ws[0].want(t, "ack", 3, "")
	ws[0].pinged(t, socks[0])
	if got := settle() - before; got > 2*n+20 {
		t.Fatalf("after the acks: %d goroutines more than before, want about %d: the writers did not end", got, 2*n)
	}
}

// An idle reader waits in a shallow frame, where the GC shrinks its stack to 4 KiB, however its
// socket was used: after a location frame (handled on the socket's backlog, not by the reader,
// for a socket sending less than every busyGap) and after the pong that answers the
// server's ping every 20 s (sent here unasked, as RFC 6455 allows), which gorilla would have read
// and then waited deep inside for the next frame, at 8 KiB a stack. A ping read while idle is
// answered with its payload. The stack figure is checked without -race (raceEnabled).
func TestIdleReaderStackStaysSmall(t *testing.T) {
	g := newGateway(t, Options{Rate: 1000})
	var ms runtime.MemStats
	stacks := func() int64 {
		for range 3 {
			runtime.GC()
		}
		runtime.ReadMemStats(&ms)
		return int64(ms.StackInuse)
	}
	const n = 500
	before := stacks()
	var socks []*websocket.Conn
	for i := range n {
		h := http.Header{}
		h.Set("Authorization", "Bearer stack"+itoa(int64(i)))
		c, _, err := websocket.DefaultDialer.Dial(g.url, h)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		socks = append(socks, c)
	}
	now := time.Now().UnixMilli()
	for i, c := range socks {
		if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"location","data":{"lat":12.9716,"lng":77.5946,"acc":5,"ts":`+itoa(now+int64(i))+`}}`)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond) // the pongs in segments of their own, as 20 s apart they are
	for _, c := range socks {
		if err := c.WriteControl(websocket.PongMessage, []byte("alive"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond)
	// Read without a GC first: a reader that handled the point itself holds the 8 KiB its stack
	// grew to until the next GC, seconds or a minute away on a gateway.
	runtime.ReadMemStats(&ms)
	if per := (int64(ms.StackInuse) - before) / n; per > 5<<10 && !raceEnabled {
		t.Fatalf("%d quiet sockets hold %d B of stack each before a GC, want about 4 KiB (their readers handled the point)", n, per)
	}
	if per := (stacks() - before) / n; per > 5<<10 && !raceEnabled {
		t.Fatalf("%d idle sockets hold %d B of stack each, want about 4 KiB (their readers wait deep)", n, per)
	}
	pong := make(chan string, 1)
	socks[0].SetPongHandler(func(s string) error { pong <- s; return nil })
	if err := socks[0].WriteControl(websocket.PingMessage, []byte("hi"), time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	_ = socks[0].SetReadDeadline(time.Now().Add(3 * time.Second))
	go func() { // the hello, then the pong (its handler)
		for {
			if _, _, err := socks[0].ReadMessage(); err != nil {
				return
			}
		}
	}()
	select {
	case s := <-pong:
		if s != "hi" {
			t.Fatalf("pong %q, want the ping's payload %q", s, "hi")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no pong to a ping sent while idle")
	}
}
