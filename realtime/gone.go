package realtime

import (
	"context"
	"time"
)

// A driver whose socket closed is given GoneGrace to come back, on this gateway or another;
// after that dispatch.Service.DriverGone takes them out of matching and revokes their open offer.
// The timers are the hub's: Shutdown stops them (a draining gateway's drivers reconnect
// elsewhere, and the sessions they open there replace the marks).

// Presence marks which socket is a driver's latest, wherever it is (geo.Index): a socket
// marks itself as it opens (Attach) and, once its grace is over, asks whether the mark is
// still its own (Detach: false when a newer socket of the driver came up, here or on another
// gateway). Forget tells the index a driver's socket closed: it may reconnect to another
// gateway. Safe for concurrent use.
type Presence interface {
	Attach(ctx context.Context, driverID, session string) error
	Detach(ctx context.Context, driverID, session string) (bool, error)
	Forget(driverID string)
}

// watchGone starts the grace of a driver whose socket closed.
func (h *Hub) watchGone(driverID, session string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.draining {
		return
	}
	if t := h.gone[driverID]; t != nil {
		t.Stop()
	}
	h.gone[driverID] = time.AfterFunc(h.opts.GoneGrace, func() { h.driverGone(driverID, session) })
}

// cancelGone stops the grace of a driver who came back on this gateway.
func (h *Hub) cancelGone(driverID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if t := h.gone[driverID]; t != nil {
		t.Stop()
		delete(h.gone, driverID)
	}
}

func (h *Hub) driverGone(driverID, session string) {
	h.mu.Lock()
	if h.draining {
		h.mu.Unlock()
		return
	}
	delete(h.gone, driverID)
	h.wg.Add(1)
	h.mu.Unlock()
	defer h.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gone, err := h.index.Detach(ctx, driverID, session)
	if err != nil {
		h.log.Warn().Err(err).Str("driver", driverID).Msg("driver gone: read the socket mark")
		return
	}
	if !gone {
		return // back on another gateway
	}
	h.m.gone.Inc()
	if err := h.svc.DriverGone(ctx, driverID); err != nil {
		h.log.Warn().Err(err).Str("driver", driverID).Msg("driver gone")
	}
}

// stopGone stops every grace timer (Shutdown).
func (h *Hub) stopGone() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, t := range h.gone {
		t.Stop()
		delete(h.gone, id)
	}
}
