package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/gorilla/websocket"
)

type errFrame struct {
	Ref     *int64 `json:"ref,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type ackFrame struct {
	Ref int64 `json:"ref"`
}

// session is what each role does with the frames its socket reads.
type session interface {
	start(ctx context.Context)
	handle(ctx context.Context, env Envelope) error
	stop(ctx context.Context)
}

// ServeHTTP authenticates, upgrades, starts the socket's two goroutines and returns.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	actor, exp, err := h.opts.Auth(r)
	if err != nil {
		writeHTTPError(w, http.StatusUnauthorized, "unauthenticated", "a valid bearer token is required")
		return
	}
	if h.Draining() {
		writeHTTPError(w, http.StatusServiceUnavailable, "unavailable", "server is shutting down")
		return
	}
	ws, err := h.up.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered
	}
	var tick, gap time.Duration
	if actor.Role != "driver" {
		tick, gap = h.opts.ViewTick, h.opts.ViewFlush
	}
	c := newConn(ws, tick, gap, func(kind string) { h.m.dropped.WithLabelValues(kind).Inc() })
	var s session
	switch actor.Role {
	case "driver":
		s = newDriverSession(h, actor, c)
	default:
		s = newViewer(h, actor, c)
	}
	h.mu.Lock()
	if h.draining {
		h.mu.Unlock()
		c.close(websocket.CloseGoingAway, "server shutting down")
		go c.writeLoop()
		return
	}
	h.all[c] = true
	h.wg.Add(2)
	h.mu.Unlock()
	h.m.sockets.WithLabelValues(actor.Role).Inc()
	go func() {
		defer h.wg.Done()
		c.writeLoop()
	}()
	go func() {
		defer h.wg.Done()
		h.readLoop(actor, exp, c, s)
	}()
}

func (h *Hub) readLoop(actor dispatch.Actor, exp time.Time, c *conn, s session) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	expiry := time.AfterFunc(time.Until(exp), func() { c.close(websocket.ClosePolicyViolation, "token expired") })
	defer func() {
		expiry.Stop()
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
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(peerSilence)) })
	s.start(ctx)
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			if errors.Is(err, websocket.ErrReadLimit) {
				c.close(websocket.CloseMessageTooBig, "message too big")
			}
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(peerSilence))
		if typ != websocket.TextMessage {
			c.send("error", errFrame{Code: "invalid_argument", Message: "frames are JSON text"})
			continue
		}
		var env Envelope
		if err := json.Unmarshal(data, &env); err != nil || env.Type == "" {
			c.send("error", errFrame{Code: "invalid_argument", Message: "frame is not a JSON envelope {type, seq?, data}"})
			continue
		}
		err = s.handle(ctx, env)
		if env.Type == "location" || env.Type == "locations" {
			if err != nil {
				c.send("error", errFrame{Ref: env.Seq, Code: dispatch.ErrorCode(err), Message: dispatch.ErrorMessage(err)})
			}
			continue
		}
		switch {
		case err != nil:
			c.send("error", errFrame{Ref: env.Seq, Code: dispatch.ErrorCode(err), Message: dispatch.ErrorMessage(err)})
		case env.Seq != nil:
			c.send("ack", ackFrame{Ref: *env.Seq})
		}
	}
}

func writeHTTPError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

// decode reads a frame's data strictly: unknown fields are ignored (API.md), wrong types refused.
func decode(env Envelope, v any) error {
	if len(env.Data) == 0 {
		return errInvalid("data is required")
	}
	if err := json.Unmarshal(env.Data, v); err != nil {
		return errInvalid("data of " + env.Type + " is malformed: " + err.Error())
	}
	return nil
}

type invalidErr string

func (e invalidErr) Error() string { return string(e) }
func (e invalidErr) Unwrap() error { return dispatch.ErrInvalid }

func errInvalid(msg string) error { return invalidErr(msg) }
