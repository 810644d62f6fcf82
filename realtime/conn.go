package realtime

import (
	"encoding/json"
	"math"
	"net"
	"sync"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/gorilla/websocket"
)

const (
	writeWait   = 5 * time.Second
	pingEvery   = 20 * time.Second
	peerSilence = 60 * time.Second
	readLimit   = 4 << 10
	stateQueue  = 256
	// sendBuffer is the kernel's send buffer for a socket (SO_SNDBUF; Linux doubles it), set
	// rather than left to autotuning, which grows it towards tcp_wmem's 4 MiB for a peer that
	// reads nothing: that bounds the memory a slow reader holds, and the state queue behind it
	// fills, and the socket is closed with 1013, after some 2,500 unread frames rather than
	// 40,000. A dispatcher's map at city scale needs well under 256 KiB per 50 ms round trip.
	sendBuffer = 128 << 10
	// closeLinger bounds how long a socket stays open after its close frame, waiting for the
	// peer's answer. The answer comes after everything the peer still had to read, and a slow
	// reader closed with 1013 may have a send buffer's worth to read first: closing the TCP
	// connection before would reset it and destroy what was not yet delivered, the close frame
	// included.
	closeLinger = 10 * time.Second
)

// Envelope is every frame on the socket (API.md).
type Envelope struct {
	Type string          `json:"type"`
	Seq  *int64          `json:"seq,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
	// point is the data of a `location` frame read by fastLocation (parsed is then true and
	// Data empty).
	point  dispatch.Point
	parsed bool
}

type outFrame struct {
	Type string `json:"type"`
	Data any    `json:"data,omitempty"`
}

// conn is one WebSocket with at most one writer at a time. State frames queue in order and
// are never dropped: a reader so slow that the queue fills is closed with 1013. Location frames
// are latest-wins per key, looked at every flush tick: each key leaves at most once per gap of
// its points' own times (a point a gap after the last one sent leaves at the next tick, whatever
// the phase between the sender's clock and this socket's; see viewer.due).
//
// The writer is a goroutine started when there is something to write (a frame queued, a tick, a
// ping due, the close) and ended when there is nothing left: an idle socket, a driver's between
// offers, holds no goroutine and no queue but its reader, which at 100,000 sockets is most of a
// gateway's memory (BENCHMARKS.md). Ticks and pings are timers.
//
// Lock order: conn.mu only; never held while writing to the network.
type conn struct {
	ws      *websocket.Conn
	flush   time.Duration // how often pending latest-wins frames are looked at (0: at once)
	gap     time.Duration // a latest-wins key leaves at most this often
	done    chan struct{} // closed when the socket has ended: its last write done, the network connection closed
	closing chan struct{} // closed to ask the writer to say goodbye and end the socket
	// readerGone is closed when the read loop has ended (readerDone): after its close frame the
	// writer waits for it, so that the peer's frames still arriving are read, not reset away.
	readerGone chan struct{}
	readOnce   sync.Once
	endOnce    sync.Once

	mu     sync.Mutex
	queue  [][]byte               // state frames not yet taken by the writer, in order
	taken  int                    // state frames the writer took last and may still be writing; with queue, at most stateQueue
	latest map[string]latestFrame // nil until the first latest-wins frame
	order  []string
	sentAt map[string]latestSent // what of each latest-wins key last left, and when
	// The writer's state: started once the socket may be written (start); running while a
	// writer goroutine is at work; ended once the socket is. pingDue and tickDue are work the
	// timers left for it.
	started, running, ended bool
	pingDue, tickDue        bool
	timers                  []*time.Timer
	closeCode               int
	closeMsg                string
	closeOnce               sync.Once
	onDrop                  func(kind string)
	// pull, if set, is asked at each flush tick for coalesced frames to write (dispatchers' deltas).
	pull func() [][]byte
}

func newConn(ws *websocket.Conn, flush, gap time.Duration, onDrop func(string)) *conn {
	return &conn{ws: ws, flush: flush, gap: gap, done: make(chan struct{}), closing: make(chan struct{}), readerGone: make(chan struct{}),
		onDrop: onDrop}
}

// start lets the writer run: what was queued before goes out now, then pings every pingEvery
// and, for a conn with a flush interval, a tick every flush. A conn never started (the tests'
// conns without a socket) only queues.
func (c *conn) start() {
	c.mu.Lock()
	c.started = true
	c.timers = append(c.timers, c.every(pingEvery, func() { c.pingDue = true }))
	if c.flush > 0 {
		c.timers = append(c.timers, c.every(c.flush, func() { c.tickDue = true }))
	}
	c.mu.Unlock()
	c.wake()
}

// every runs note (under c.mu) and wakes the writer every d, until the socket ends.
func (c *conn) every(d time.Duration, note func()) *time.Timer {
	// Armed only once t is set, which the callback's t.Reset reads.
	var t *time.Timer
	t = time.AfterFunc(time.Duration(math.MaxInt64), func() {
		c.mu.Lock()
		if c.ended {
			c.mu.Unlock()
			return
		}
		note()
		c.mu.Unlock()
		c.wake()
		t.Reset(d)
	})
	t.Reset(d)
	return t
}

// wake starts a writer unless one is running (it looks for work again before it ends).
func (c *conn) wake() {
	c.mu.Lock()
	if !c.started || c.running || c.ended {
		c.mu.Unlock()
		return
	}
	c.running = true
	c.mu.Unlock()
	go c.write()
}

// send queues a state frame. It never blocks: when the queue is full the socket is closed with
// 1013 (too slow a reader), because dropping a state change would leave the app wrong.
func (c *conn) send(typ string, data any) {
	b, err := json.Marshal(outFrame{Type: typ, Data: data})
	if err != nil {
		return
	}
	c.sendRaw(b)
}

func (c *conn) sendRaw(b []byte) {
	if c.closed() {
		return
	}
	c.mu.Lock()
	if len(c.queue)+c.taken >= stateQueue {
		c.mu.Unlock()
		c.onDrop("slow_reader")
		c.close(websocket.CloseTryAgainLater, "too slow a reader")
		return
	}
	c.queue = append(c.queue, b)
	c.mu.Unlock()
	c.wake()
}

type latestFrame struct {
	b  []byte
	ts int64 // the point's time, ms
}

type latestSent struct {
	ts int64
	at time.Time
}

// sendLatest replaces the pending frame under key (a location: only the newest matters); ts is
// the point's own time in ms.
func (c *conn) sendLatest(key string, ts int64, typ string, data any) {
	b, err := json.Marshal(outFrame{Type: typ, Data: data})
	if err != nil {
		return
	}
	c.mu.Lock()
	if c.latest == nil { // made on first use: most sockets (drivers') never have one
		c.latest, c.sentAt = map[string]latestFrame{}, map[string]latestSent{}
	}
	if _, ok := c.latest[key]; ok {
		c.onDrop("stale_location")
	} else {
		c.order = append(c.order, key)
	}
	c.latest[key] = latestFrame{b: b, ts: ts}
	c.mu.Unlock()
	if c.flush == 0 {
		c.wake()
	}
}

// close asks the writer to send a close frame with code and stop; safe to call many times.
func (c *conn) close(code int, msg string) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closeCode, c.closeMsg = code, msg
		c.mu.Unlock()
		close(c.closing)
		c.wake()
	})
}

// write is the writer: it writes what is pending (state frames in order, then a ping, then on
// a tick the latest-wins frames) until nothing is, or the socket ends. On a write error, or
// after its goodbye, it ends the socket.
func (c *conn) write() {
	for {
		c.mu.Lock()
		q := c.queue
		c.queue, c.taken = nil, len(q)
		ping, tick := c.pingDue, c.tickDue || (c.flush == 0 && len(c.order) > 0)
		c.pingDue, c.tickDue = false, false
		bye := len(q) == 0 && c.closed()
		if len(q) == 0 && !ping && !tick && !bye {
			c.running = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		for _, b := range q {
			if !c.writeFrame(b) {
				c.end()
				return
			}
		}
		if ping {
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
			if c.ws.WriteMessage(websocket.PingMessage, nil) != nil {
				c.end()
				return
			}
		}
		if tick && !c.writeLatest() {
			c.end()
			return
		}
		if bye {
			c.goodbye()
			c.end()
			return
		}
	}
}

func (c *conn) writeFrame(b []byte) bool {
	_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
	err := c.ws.WriteMessage(websocket.TextMessage, b)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		// The peer read nothing for writeWait: as slow a reader as a full queue, closed
		// without the 1013 it could not read.
		c.onDrop("write_timeout")
	}
	return err == nil
}

// writeLatest writes the dispatchers' deltas (pull) and the latest-wins frames that may leave.
func (c *conn) writeLatest() bool {
	if c.pull != nil {
		for _, b := range c.pull() {
			if !c.writeFrame(b) {
				return false
			}
		}
	}
	now := time.Now()
	var out [][]byte
	c.mu.Lock()
	keep := c.order[:0]
	for _, k := range c.order {
		f := c.latest[k]
		if m, ok := c.sentAt[k]; ok && c.gap > 0 &&
			(f.ts-m.ts < (c.gap-c.gap/10).Milliseconds() || now.Sub(m.at) < c.gap/2) {
			keep = append(keep, k) // too soon after the last one sent: wait, newest still wins
			continue
		}
		out = append(out, f.b)
		delete(c.latest, k)
		if c.gap > 0 {
			c.sentAt[k] = latestSent{ts: f.ts, at: now}
		}
	}
	c.order = keep
	if len(c.sentAt) > 4*len(c.latest)+1024 {
		for k, m := range c.sentAt {
			if now.Sub(m.at) >= c.gap {
				delete(c.sentAt, k)
			}
		}
	}
	c.mu.Unlock()
	for _, b := range out {
		if !c.writeFrame(b) {
			return false
		}
	}
	return true
}

// goodbye sends the close frame, then waits for the peer's answer (the read loop's end).
func (c *conn) goodbye() {
	c.mu.Lock()
	code, msg := c.closeCode, c.closeMsg
	c.mu.Unlock()
	if c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, msg), time.Now().Add(writeWait)) != nil {
		return
	}
	// Closing the TCP connection at once would reset it if the peer's frames are still
	// arriving unread, and the reset destroys the close frame on its way (a flooding slow
	// reader saw 1006, not 1013: TestFaultSlowReader in cmd/dispatchd). The read loop goes on
	// reading, discarding, until the peer answers the close, or closeLinger.
	t := time.NewTimer(closeLinger)
	select {
	case <-c.readerGone:
	case <-t.C:
	}
	t.Stop()
}

// end ends the socket: no writer runs again, the timers stop, the network connection closes
// (which ends the reader too) and done is closed.
func (c *conn) end() {
	c.endOnce.Do(func() {
		c.mu.Lock()
		c.ended, c.running = true, false
		timers := c.timers
		c.queue = nil
		c.mu.Unlock()
		for _, t := range timers {
			t.Stop()
		}
		_ = c.ws.Close()
		close(c.done)
	})
}

// closed reports whether the socket is closing: the read loop then discards what it reads,
// looking only for the peer's answer to the close frame.
func (c *conn) closed() bool {
	select {
	case <-c.closing:
		return true
	default:
		return false
	}
}

// readerDone tells the writer that the read loop has ended; the read loop calls it as it ends.
func (c *conn) readerDone() { c.readOnce.Do(func() { close(c.readerGone) }) }
