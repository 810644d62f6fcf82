package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// DispatcherOptions configure simulated dispatchers: each opens a socket, watches one district
// with `watch.area` and counts what it is sent.
type DispatcherOptions struct {
	URL    string // ws://127.0.0.1:PORT/v1/ws
	Secret []byte
	Areas  []Area // one dispatcher each
	Series *Series
	// IDPrefix names the dispatchers (default "sim").
	IDPrefix string
}

// DispatcherCounts are what the dispatchers received.
type DispatcherCounts struct {
	Connected atomic.Int64
	Snapshots atomic.Int64
	Frames    atomic.Int64 // every frame but acks
	Drivers   atomic.Int64 // driver updates (snapshot and `drivers` frames)
	Bookings  atomic.Int64 // booking updates (snapshot and `bookings` frames)
	Cells     atomic.Int64 // `cells` frames
	Errors    atomic.Int64 // failed sockets and error frames
}

// Dispatchers run until their context ends.
type Dispatchers struct {
	opts   DispatcherOptions
	log    zerolog.Logger
	Counts DispatcherCounts
}

// NewDispatchers returns simulated dispatchers.
func NewDispatchers(opts DispatcherOptions, log zerolog.Logger) *Dispatchers {
	if opts.IDPrefix == "" {
		opts.IDPrefix = "sim"
	}
	if opts.Series == nil {
		opts.Series = NewSeries(time.Now())
	}
	return &Dispatchers{opts: opts, log: log}
}

// Run opens every dispatcher's socket, reopening it after a failure, until ctx ends.
func (d *Dispatchers) Run(ctx context.Context) error {
	if err := CheckLoopback(d.opts.URL); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i, a := range d.opts.Areas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("%s-dsp-%d", d.opts.IDPrefix, i)
			for ctx.Err() == nil {
				if err := d.watch(ctx, id, a); err != nil && ctx.Err() == nil {
					d.Counts.Errors.Add(1)
					d.log.Debug().Err(err).Str("dispatcher", id).Msg("dispatcher socket ended")
				}
				if !sleep(ctx, time.Second) {
					return
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

func (d *Dispatchers) watch(ctx context.Context, id string, a Area) error {
	token, err := signToken(d.opts.Secret, "dispatcher", id)
	if err != nil {
		return err
	}
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	dialer := &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 16 << 10}
	ws, _, err := dialer.DialContext(ctx, d.opts.URL, h)
	if err != nil {
		return err
	}
	defer ws.Close()
	d.Counts.Connected.Add(1)
	defer d.Counts.Connected.Add(-1)
	data, _ := json.Marshal(map[string]float64{"min_lat": a.MinLat, "min_lng": a.MinLng, "max_lat": a.MaxLat, "max_lng": a.MaxLng})
	_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteJSON(frame{Type: "watch.area", Seq: 1, Data: data}); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
		_ = ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	})
	defer stop()
	for {
		var fr frame
		if err := ws.ReadJSON(&fr); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		now := time.Now()
		if fr.Type == "ack" {
			continue
		}
		d.Counts.Frames.Add(1)
		d.opts.Series.Add(KindViewFrames, now, 1)
		switch fr.Type {
		case "snapshot":
			var s struct {
				Drivers  []json.RawMessage `json:"drivers"`
				Bookings []json.RawMessage `json:"bookings"`
			}
			_ = json.Unmarshal(fr.Data, &s)
			d.Counts.Snapshots.Add(1)
			d.Counts.Drivers.Add(int64(len(s.Drivers)))
			d.Counts.Bookings.Add(int64(len(s.Bookings)))
			d.opts.Series.Add(KindViewDrivers, now, int64(len(s.Drivers)))
		case "drivers", "bookings":
			var u struct {
				Updates []json.RawMessage `json:"updates"`
			}
			_ = json.Unmarshal(fr.Data, &u)
			if fr.Type == "drivers" {
				d.Counts.Drivers.Add(int64(len(u.Updates)))
				d.opts.Series.Add(KindViewDrivers, now, int64(len(u.Updates)))
			} else {
				d.Counts.Bookings.Add(int64(len(u.Updates)))
			}
		case "cells":
			d.Counts.Cells.Add(1)
		case "error":
			d.Counts.Errors.Add(1)
		}
	}
}
