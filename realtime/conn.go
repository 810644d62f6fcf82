package realtime

import (
	"encoding/json"
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

// conn is one WebSocket with a single writer goroutine. State frames queue in order and are
// never dropped: a reader so slow that the queue fills is closed with 1013. Location frames are
// latest-wins per key, looked at every flush tick: each key leaves at most once per gap of its
// points' own times (a point a gap after the last one sent leaves at the next tick, whatever
// the phase between the sender's clock and this socket's; see viewer.due).
//
// Lock order: conn.mu only; never held while writing to the network.
type conn struct {
	ws      *websocket.Conn
	state   chan []byte
	flush   time.Duration // how often pending latest-wins frames are looked at (0: at once)
	gap     time.Duration // a latest-wins key leaves at most this often
	kick    chan struct{}
	done    chan struct{} // closed when the writer has finished
	closing chan struct{} // closed to ask the writer to stop
	// readerGone is closed when the read loop has ended (readerDone): after its close frame the
	// writer waits for it, so that the peer's frames still arriving are read, not reset away.
	readerGone chan struct{}
	readOnce   sync.Once

	mu        sync.Mutex
	latest    map[string]latestFrame
	order     []string
	sentAt    map[string]latestSent // what of each latest-wins key last left, and when
	closeCode int
	closeMsg  string
	closeOnce sync.Once
	onDrop    func(kind string)
	// pull, if set, is asked at each flush tick for coalesced frames to write (dispatchers' deltas).
	pull func() [][]byte
}

func newConn(ws *websocket.Conn, flush, gap time.Duration, onDrop func(string)) *conn {
	return &conn{ws: ws, state: make(chan []byte, stateQueue), flush: flush, gap: gap, kick: make(chan struct{}, 1),
		done: make(chan struct{}), closing: make(chan struct{}), readerGone: make(chan struct{}), latest: map[string]latestFrame{},
		sentAt: map[string]latestSent{}, onDrop: onDrop}
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
	select {
	case <-c.closing:
		return
	default:
	}
	select {
	case c.state <- b:
	default:
		c.onDrop("slow_reader")
		c.close(websocket.CloseTryAgainLater, "too slow a reader")
	}
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
	if _, ok := c.latest[key]; ok {
		c.onDrop("stale_location")
	} else {
		c.order = append(c.order, key)
	}
	c.latest[key] = latestFrame{b: b, ts: ts}
	c.mu.Unlock()
	if c.flush == 0 {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
}

// close asks the writer to send a close frame with code and stop; safe to call many times.
func (c *conn) close(code int, msg string) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closeCode, c.closeMsg = code, msg
		c.mu.Unlock()
		close(c.closing)
	})
}

// writeLoop owns every write to the socket. It returns when asked to close or on a write error,
// and then closes the network connection (which ends the reader too).
func (c *conn) writeLoop() {
	defer close(c.done)
	defer c.ws.Close()
	ping := time.NewTicker(pingEvery)
	defer ping.Stop()
	var flushC <-chan time.Time
	if c.flush > 0 {
		t := time.NewTicker(c.flush)
		defer t.Stop()
		flushC = t.C
	}
	write := func(b []byte) bool {
		_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
		err := c.ws.WriteMessage(websocket.TextMessage, b)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			// The peer read nothing for writeWait: as slow a reader as a full queue, closed
			// without the 1013 it could not read.
			c.onDrop("write_timeout")
		}
		return err == nil
	}
	writeLatest := func() bool {
		if c.pull != nil {
			for _, b := range c.pull() {
				if !write(b) {
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
			if !write(b) {
				return false
			}
		}
		return true
	}
	for {
		select {
		case b := <-c.state:
			if !write(b) {
				return
			}
		case <-c.kick:
			if !writeLatest() {
				return
			}
		case <-flushC:
			if !writeLatest() {
				return
			}
		case <-ping.C:
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
			if c.ws.WriteMessage(websocket.PingMessage, nil) != nil {
				return
			}
		case <-c.closing:
			// Flush state frames already queued, then say goodbye.
			for {
				select {
				case b := <-c.state:
					if !write(b) {
						return
					}
					continue
				default:
				}
				break
			}
			c.mu.Lock()
			code, msg := c.closeCode, c.closeMsg
			c.mu.Unlock()
			if c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, msg), time.Now().Add(writeWait)) == nil {
				// Closing the TCP connection at once would reset it if the peer's frames are still
				// arriving unread, and the reset destroys the close frame on its way (a flooding
				// slow reader saw 1006, not 1013: TestFaultSlowReader in cmd/dispatchd). The read
				// loop goes on reading, discarding, until the peer answers the close, or
				// closeLinger.
				t := time.NewTimer(closeLinger)
				select {
				case <-c.readerGone:
				case <-t.C:
				}
				t.Stop()
			}
			return
		}
	}
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
