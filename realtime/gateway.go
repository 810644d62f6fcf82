package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/gorilla/websocket"
)

type ackFrame struct {
	Ref int64 `json:"ref"`
}

// session is what each role does with the frames its socket reads. start and handle may wait
// on the backends: the read loop runs them on the socket's backlog (but handle for positions
// while nothing is pending there, which waits on none), one at a time, in the order of the
// frames; stop runs once the read loop has ended and the backlog is done.
type session interface {
	start(ctx context.Context)
	handle(ctx context.Context, env Envelope) error
	stop(ctx context.Context)
}

// ServeHTTP authenticates, upgrades, starts the socket's reader and writer and returns.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	actor, exp, err := h.opts.Auth(r)
	if err != nil {
		writeHTTPError(w, http.StatusUnauthorized, dispatch.Errorf(dispatch.Unauthenticated, "a valid bearer token is required"))
		return
	}
	if h.Draining() {
		writeHTTPError(w, http.StatusServiceUnavailable, dispatch.Errorf(dispatch.Unavailable, "server is shutting down"))
		return
	}
	slot, err := h.guards.admit(actor)
	if err != nil {
		writeHTTPError(w, http.StatusTooManyRequests, err)
		return
	}
	fw := &framing{ResponseWriter: w}
	ws, err := h.up.Upgrade(fw, r, nil)
	if err != nil {
		slot.release()
		return // the upgrader has answered
	}
	if tc, ok := fw.conn.Conn.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(sendBuffer)
	}
	var tick, gap time.Duration
	if actor.Role != "driver" {
		tick, gap = h.opts.ViewTick, h.opts.ViewFlush
	}
	c := newConn(ws, tick, gap, func(kind string) { h.m.dropped.WithLabelValues(kind).Inc() })
	work := &backlog{}
	var s session
	switch actor.Role {
	case "driver":
		s = newDriverSession(h, actor, c, work)
	default:
		s = newViewer(h, actor, c)
	}
	h.mu.Lock()
	if h.draining {
		h.mu.Unlock()
		slot.release()
		c.start()
		c.close(websocket.CloseGoingAway, "server shutting down")
		return
	}
	h.all[c] = true
	h.wg.Add(1)
	h.mu.Unlock()
	h.m.sockets.WithLabelValues(actor.Role).Inc()
	c.start()
	go func() {
		defer h.wg.Done()
		defer slot.release()
		h.readLoop(actor, exp, c, s, slot, work, fw.conn)
	}()
}

// readLoop reads the socket's frames and hands them to its session. It never waits on a
// backend: what may (s.start, s.handle) runs on work, in the order of the frames, and the
// answers the loop gives itself (refusals, frames it cannot read, positions handled here) wait
// behind what is pending there. Only positions are handled here, when nothing is pending and
// the socket is busy (busyGap): they are the frames sent several times a second, and handling
// one waits on nothing (the index's writer and the trail are fed in the background). Between
// messages it waits in its own shallow frame when it can (idle.go).
func (h *Hub) readLoop(actor dispatch.Actor, exp time.Time, c *conn, s session, slot *slot, work *backlog, fc *framedConn) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	expiry := time.AfterFunc(time.Until(exp), func() { c.close(websocket.ClosePolicyViolation, "token expired") })
	defer func() {
		c.readerDone()
		expiry.Stop()
		// The frames read are still handled, in order, then the session stops; reading has
		// ended, so this holds up nothing but the socket's own end.
		work.wait()
		s.stop(context.Background())
		c.close(websocket.CloseNormalClosure, "")
		<-c.done
		h.mu.Lock()
		delete(h.all, c)
		h.mu.Unlock()
		h.m.sockets.WithLabelValues(actor.Role).Dec()
	}()
	c.ws.SetReadLimit(readLimit)
	_ = c.ws.SetReadDeadline(time.Now().Add(peerSilence))
	alive := func(string) error { return c.ws.SetReadDeadline(time.Now().Add(peerSilence)) }
	c.ws.SetPongHandler(alive)
	work.push(func() { s.start(ctx) })
	r := &frameReader{h: h, ctx: ctx, c: c, s: s, slot: slot, work: work, fc: fc, extended: time.Now()}
	// Pings and pongs read while idle (idle.go), answered as gorilla's handlers would.
	control := func(op int, payload []byte) {
		if op == websocket.PingMessage {
			_ = c.ws.WriteControl(websocket.PongMessage, payload, time.Now().Add(writeWait))
		}
		_ = alive("")
	}
	for {
		// A busy socket's reader handles its points itself, its stack grown anyway: it waits in
		// gorilla, without idle.go's peek (a syscall a frame on the ingestion path).
		if fc != nil && !r.busy && fc.drained() {
			fc.idleWait(control)
		}
		if !r.next() {
			return
		}
	}
}

// frameReader is a read loop's state between frames.
type frameReader struct {
	h        *Hub
	ctx      context.Context
	c        *conn
	s        session
	slot     *slot
	work     *backlog
	fc       *framedConn
	buf      []byte // reused frame to frame: nothing read from a frame keeps pointing into it
	extended time.Time
	last     time.Time // when the last frame was read
	busy     bool      // the last frame came less than busyGap after the one before
}

// busyGap: a socket that sent its last frame less than this ago is busy, and the read loop
// handles its positions itself (the frames sent several times a second: no goroutine, no
// closure per point); a quieter socket's go to its backlog, so that the reader's stack, grown
// to 8 KiB by the handling, does not stay grown until the next GC while it waits (idle.go):
// at a point every 30 s most sockets of a gateway are quiet.
const busyGap = 2 * time.Second

// inOrder runs fn once the work pending on the backends is done (at once when none is).
func (r *frameReader) inOrder(fn func()) {
	if r.work.idle() {
		fn()
	} else if !r.work.push(fn) {
		r.h.m.dropped.WithLabelValues("backlog").Inc()
		r.c.close(websocket.CloseTryAgainLater, "overloaded")
	}
}

// next reads and handles one message; false when the socket has ended.
func (r *frameReader) next() bool {
	h, c, s, ctx, work := r.h, r.c, r.s, r.ctx, r.work
	typ, data, err := readFrame(c.ws, r.buf)
	r.buf = data
	if err != nil {
		if errors.Is(err, websocket.ErrReadLimit) {
			c.close(websocket.CloseMessageTooBig, "message too big")
		}
		return false
	}
	if r.fc != nil {
		r.fc.tookMessage()
	}
	// Moving the deadline costs a timer update: a driver sends several frames a second,
	// and a second's slack on a 60 s bound is nothing.
	now := time.Now()
	if now.Sub(r.extended) >= time.Second {
		_ = c.ws.SetReadDeadline(now.Add(peerSilence))
		r.extended = now
	}
	busy := now.Sub(r.last) < busyGap
	r.last, r.busy = now, busy
	if !busy {
		r.buf = nil // a quiet socket keeps no frame buffer between frames (nothing points into it)
	}
	if c.closed() {
		return true
	}
	if typ != websocket.TextMessage {
		r.inOrder(func() {
			c.send("error", errorFrame(nil, dispatch.Errorf(dispatch.InvalidArgument, "frames are JSON text")))
		})
		return true
	}
	env, fast := fastLocation(data)
	if !fast {
		var derr error
		if env, derr = decodeEnvelope(data); derr != nil {
			r.inOrder(func() { c.send("error", errorFrame(nil, derr)) })
			return true
		}
	}
	if refusal, strikeOut := r.slot.refuse(env); refusal != nil {
		r.inOrder(func() {
			c.send("error", errorFrame(env.Seq, refusal))
			if strikeOut {
				c.close(websocket.ClosePolicyViolation, "rate limit exceeded")
			}
		})
		return true
	}
	if env.Type == "location" || env.Type == "locations" {
		if busy && work.idle() {
			answer(c, env, s.handle(ctx, env))
		} else if !work.push(func() { answer(c, env, s.handle(ctx, env)) }) {
			h.m.rejected.WithLabelValues("backlog").Inc() // a stale position: dropped, as a slow writer's
		}
		return true
	}
	if !work.push(func() { answer(c, env, s.handle(ctx, env)) }) {
		h.m.dropped.WithLabelValues("backlog").Inc()
		c.close(websocket.CloseTryAgainLater, "overloaded")
	}
	return true
}

// answer replies to a frame its session handled: its error, else an ack when it carries seq
// (positions are not acknowledged: API.md).
func answer(c *conn, env Envelope, err error) {
	switch {
	case err != nil:
		c.send("error", errorFrame(env.Seq, err))
	case env.Seq != nil && env.Type != "location" && env.Type != "locations":
		c.send("ack", ackFrame{Ref: *env.Seq})
	}
}

// readFrame reads the next message into buf's storage (growing it as needed, up to the
// read limit) rather than a new slice per message as websocket.Conn.ReadMessage does.
func readFrame(ws *websocket.Conn, buf []byte) (int, []byte, error) {
	typ, r, err := ws.NextReader()
	if err != nil {
		return typ, buf, err
	}
	if cap(buf) == 0 {
		buf = make([]byte, 0, 512)
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return typ, buf, nil
		}
		if err != nil {
			return typ, buf, err
		}
	}
}

// writeHTTPError answers an upgrade refused before the socket exists, with its kind's code (in
// the shape of api's errors) and its own text (written here, for the client).
func writeHTTPError(w http.ResponseWriter, status int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": dispatch.KindOf(err).String(), "message": err.Error()}})
}

// decode reads a frame's data strictly: unknown fields are ignored (API.md), wrong types refused.
func decode(env Envelope, v any) error {
	if len(env.Data) == 0 {
		return dispatch.Errorf(dispatch.InvalidArgument, "data is required")
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return dispatch.Errorf(dispatch.InvalidArgument, "data of %s is malformed: %s", env.Type, err)
	}
	return nil
}
