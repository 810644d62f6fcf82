package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
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
	// Outside counts driver updates about a driver outside the watched area (must stay 0).
	Outside atomic.Int64

	latency latencySample // ms from a driver's point (its ts) to its arrival here
}

// ViewLatency returns the p50 and p99 in milliseconds of driver updates, from the point's own
// timestamp on the driver's phone to its arrival on a dispatcher's socket, and the sample size.
func (c *DispatcherCounts) ViewLatency() (p50, p99 float64, n int) { return c.latency.quantiles() }

// maxLatencySamples bounds the memory of a latency sample (about 8 MB).
const maxLatencySamples = 1 << 20

// latencySample is a sample of latencies in ms, at most maxLatencySamples (later ones are not
// kept). Safe for concurrent use.
type latencySample struct {
	mu sync.Mutex
	ms []float64
}

func (l *latencySample) add(ms ...float64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	room := max(maxLatencySamples-len(l.ms), 0)
	l.ms = append(l.ms, ms[:min(len(ms), room)]...)
}

// reset forgets the sample (what came before a measurement).
func (l *latencySample) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ms = nil
}

// quantiles returns the sample's p50 and p99 and its size.
func (l *latencySample) quantiles() (p50, p99 float64, n int) {
	l.mu.Lock()
	ls := append([]float64(nil), l.ms...)
	l.mu.Unlock()
	if len(ls) == 0 {
		return 0, 0, 0
	}
	sort.Float64s(ls)
	at := func(q float64) float64 { return ls[min(len(ls)-1, int(q*float64(len(ls))))] }
	return at(0.50), at(0.99), len(ls)
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
				d.measure(a, u.Updates, now)
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

// measure takes the latency of each driver update and checks that it lies inside the area.
func (d *Dispatchers) measure(a Area, updates []json.RawMessage, now time.Time) {
	var ms []float64
	for _, raw := range updates {
		var v struct {
			Lat       float64   `json:"lat"`
			Lng       float64   `json:"lng"`
			UpdatedAt time.Time `json:"updated_at"`
		}
		if json.Unmarshal(raw, &v) != nil {
			continue
		}
		if v.Lat < a.MinLat || v.Lat > a.MaxLat || v.Lng < a.MinLng || v.Lng > a.MaxLng {
			d.Counts.Outside.Add(1)
		}
		if !v.UpdatedAt.IsZero() {
			ms = append(ms, float64(now.Sub(v.UpdatedAt).Microseconds())/1000)
		}
	}
	d.Counts.latency.add(ms...)
}
