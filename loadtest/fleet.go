package loadtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	mrand "math/rand"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/drivers4me/dispatch/api"
	"github.com/drivers4me/dispatch/geo"
	"github.com/gorilla/websocket"
	"github.com/rs/zerolog"
)

// FleetOptions configure simulated drivers and customers.
type FleetOptions struct {
	// URL is the socket address, ws://127.0.0.1:PORT/v1/ws; only loopback is accepted.
	URL    string
	Secret []byte
	// Drivers on their own sockets; each sends a point every Tick.
	Drivers int
	Tick    time.Duration // default 2 s
	// BookingsPerMinute by simulated customers (0: none).
	BookingsPerMinute float64
	// AcceptP is the probability a driver accepts an offer (default 0.85).
	AcceptP float64
	// TripTime is how long a simulated trip lasts once started (default 40 s).
	TripTime time.Duration
	City     City
	Seed     int64
	// IDPrefix names the simulated users (default "sim").
	IDPrefix string
	// LocalAddrs, when set, spread the sockets over these 127.0.0.x source addresses.
	LocalAddrs []string
}

// Counts are what a fleet did, for the report and for checking against the server's counters.
type Counts struct {
	LocationsSent     atomic.Int64
	OffersReceived    atomic.Int64
	OffersAccepted    atomic.Int64
	OffersDeclined    atomic.Int64
	BookingsCreated   atomic.Int64
	BookingsCompleted atomic.Int64
	Errors            atomic.Int64
	Connected         atomic.Int64
}

// Fleet runs simulated drivers and customers until its context ends.
type Fleet struct {
	opts   FleetOptions
	log    zerolog.Logger
	Counts Counts

	otps sync.Map // booking id -> OTP, as the customer would tell its driver
}

// NewFleet returns a fleet.
func NewFleet(opts FleetOptions, log zerolog.Logger) *Fleet {
	if opts.Tick <= 0 {
		opts.Tick = 2 * time.Second
	}
	if opts.AcceptP == 0 {
		opts.AcceptP = 0.85
	}
	if opts.TripTime <= 0 {
		opts.TripTime = 40 * time.Second
	}
	if opts.City.Name == "" {
		opts.City = Bengaluru
	}
	if opts.IDPrefix == "" {
		opts.IDPrefix = "sim"
	}
	return &Fleet{opts: opts, log: log}
}

// CheckLoopback refuses any target that is not on this machine's loopback.
func CheckLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("target %q: %w", raw, err)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("target %q is not a loopback address: load is only ever sent to 127.0.0.0/8 or ::1", raw)
	}
	return nil
}

// Run starts every driver and the customers, and returns when ctx ends.
func (f *Fleet) Run(ctx context.Context) error {
	if err := CheckLoopback(f.opts.URL); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for i := 0; i < f.opts.Drivers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			f.driver(ctx, i)
		}(i)
	}
	if f.opts.BookingsPerMinute > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.customers(ctx)
		}()
	}
	wg.Wait()
	return nil
}

func (f *Fleet) token(role, sub string) string {
	t, err := api.Sign(f.opts.Secret, role, sub, 24*time.Hour, "", "")
	if err != nil {
		panic(err)
	}
	return t
}

func (f *Fleet) dialer(i int) *websocket.Dialer {
	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 1024, WriteBufferSize: 1024}
	if n := len(f.opts.LocalAddrs); n > 0 {
		local := &net.TCPAddr{IP: net.ParseIP(f.opts.LocalAddrs[i%n])}
		nd := &net.Dialer{LocalAddr: local, Timeout: 10 * time.Second}
		d.NetDialContext = nd.DialContext
	}
	return d
}

type frame struct {
	Type string          `json:"type"`
	Seq  int64           `json:"seq,omitempty"`
	Data json.RawMessage `json:"data,omitempty"`
}

// driver is one simulated driver: it reconnects until ctx ends.
func (f *Fleet) driver(ctx context.Context, i int) {
	r := mrand.New(mrand.NewSource(f.opts.Seed*1_000_003 + int64(i)))
	id := fmt.Sprintf("%s-drv-%d", f.opts.IDPrefix, i)
	lat, lng := f.opts.City.Point(r, 0.6)
	heading := r.Float64() * 360
	// Start ticking at a random phase so the fleet does not send in lockstep.
	select {
	case <-time.After(time.Duration(r.Int63n(int64(f.opts.Tick)))):
	case <-ctx.Done():
		return
	}
	for ctx.Err() == nil {
		err := f.driveSession(ctx, r, i, id, &lat, &lng, &heading)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			f.Counts.Errors.Add(1)
			f.log.Debug().Err(err).Str("driver", id).Msg("driver session ended")
		}
		select {
		case <-time.After(time.Second + time.Duration(r.Int63n(int64(time.Second)))):
		case <-ctx.Done():
			return
		}
	}
}

type trip struct {
	bookingID  string
	pickupLat  float64
	pickupLng  float64
	status     string
	startedAt  time.Time
	arriveSent bool
	startSent  bool
	endSent    bool
}

func (f *Fleet) driveSession(ctx context.Context, r *mrand.Rand, i int, id string, lat, lng, heading *float64) error {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+f.token("driver", id))
	ws, _, err := f.dialer(i).DialContext(ctx, f.opts.URL, h)
	if err != nil {
		return err
	}
	f.Counts.Connected.Add(1)
	defer f.Counts.Connected.Add(-1)
	var wmu sync.Mutex
	var seq int64
	send := func(typ string, data any) error {
		b, _ := json.Marshal(data)
		wmu.Lock()
		defer wmu.Unlock()
		seq++
		_ = ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
		return ws.WriteJSON(frame{Type: typ, Seq: seq, Data: b})
	}
	var mu sync.Mutex
	var cur *trip
	readErr := make(chan error, 1)
	go func() {
		for {
			var fr frame
			if err := ws.ReadJSON(&fr); err != nil {
				readErr <- err
				return
			}
			switch fr.Type {
			case "hello":
				var h struct {
					Booking *struct {
						ID     string `json:"id"`
						Status string `json:"status"`
						Pickup struct{ Lat, Lng float64 }
					} `json:"booking"`
				}
				_ = json.Unmarshal(fr.Data, &h)
				if h.Booking != nil {
					mu.Lock()
					cur = &trip{bookingID: h.Booking.ID, status: h.Booking.Status, pickupLat: h.Booking.Pickup.Lat, pickupLng: h.Booking.Pickup.Lng}
					mu.Unlock()
				}
			case "offer":
				f.Counts.OffersReceived.Add(1)
				var o struct {
					OfferID string `json:"offer_id"`
				}
				_ = json.Unmarshal(fr.Data, &o)
				mu.Lock()
				accept := r.Float64() < f.opts.AcceptP && cur == nil
				mu.Unlock()
				go func() {
					time.Sleep(300 * time.Millisecond)
					if accept {
						f.Counts.OffersAccepted.Add(1)
						_ = send("offer.accept", map[string]string{"offer_id": o.OfferID})
					} else {
						f.Counts.OffersDeclined.Add(1)
						_ = send("offer.decline", map[string]string{"offer_id": o.OfferID, "reason": "busy"})
					}
				}()
			case "booking":
				var b struct {
					ID     string `json:"id"`
					Status string `json:"status"`
					Pickup struct{ Lat, Lng float64 }
				}
				_ = json.Unmarshal(fr.Data, &b)
				mu.Lock()
				switch b.Status {
				case "assigned", "arrived", "in_progress":
					if cur == nil || cur.bookingID != b.ID {
						cur = &trip{bookingID: b.ID, pickupLat: b.Pickup.Lat, pickupLng: b.Pickup.Lng}
					}
					cur.status = b.Status
					if b.Status == "in_progress" && cur.startedAt.IsZero() {
						cur.startedAt = time.Now()
					}
				default:
					if cur != nil && cur.bookingID == b.ID {
						if b.Status == "completed" {
							f.Counts.BookingsCompleted.Add(1)
						}
						cur = nil
					}
				}
				mu.Unlock()
			}
		}
	}()
	defer ws.Close()
	if err := send("status", map[string]string{"state": "online"}); err != nil {
		return err
	}
	t := time.NewTicker(f.opts.Tick)
	defer t.Stop()
	speed := 6 + r.Float64()*6 // metres a second
	for {
		select {
		case <-ctx.Done():
			wmu.Lock()
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			wmu.Unlock()
			return nil
		case err := <-readErr:
			return err
		case <-t.C:
		}
		mu.Lock()
		tr := cur
		var action, bid string
		if tr != nil {
			bid = tr.bookingID
			switch tr.status {
			case "assigned":
				*heading = bearing(*lat, *lng, tr.pickupLat, tr.pickupLng)
				if geo.DistanceM(*lat, *lng, tr.pickupLat, tr.pickupLng) < 150 && !tr.arriveSent {
					tr.arriveSent, action = true, "trip.arrive"
				}
			case "arrived":
				if otp, ok := f.otps.Load(bid); ok && !tr.startSent {
					tr.startSent, action = true, "trip.start:"+otp.(string)
				}
			case "in_progress":
				if time.Since(tr.startedAt) > f.opts.TripTime && !tr.endSent {
					tr.endSent, action = true, "trip.end"
				}
			}
		}
		mu.Unlock()
		if tr == nil || tr.status != "assigned" {
			*heading = math.Mod(*heading+r.NormFloat64()*25+360, 360)
		}
		moved := speed * f.opts.Tick.Seconds()
		if tr != nil && tr.status == "assigned" {
			moved = math.Min(moved, geo.DistanceM(*lat, *lng, tr.pickupLat, tr.pickupLng))
		}
		if tr == nil || tr.status == "assigned" || tr.status == "in_progress" {
			*lat, *lng, *heading = f.opts.City.step(*lat, *lng, *heading, moved)
		}
		if err := send("location", map[string]any{"lat": round6(*lat), "lng": round6(*lng), "heading": math.Round(*heading),
			"speed": speed, "acc": 8, "ts": time.Now().UnixMilli()}); err != nil {
			return err
		}
		f.Counts.LocationsSent.Add(1)
		switch {
		case action == "trip.arrive" || action == "trip.end":
			_ = send(action, map[string]string{"booking_id": bid})
		case strings.HasPrefix(action, "trip.start:"):
			_ = send("trip.start", map[string]string{"booking_id": bid, "otp": strings.TrimPrefix(action, "trip.start:")})
		}
	}
}

// customers book at the configured rate, each booking with a fresh customer and key, and tell
// the OTP to the driver (the simulated stand-in for reading it out at the car).
func (f *Fleet) customers(ctx context.Context) error {
	r := mrand.New(mrand.NewSource(f.opts.Seed*7 + 3))
	base := strings.Replace(strings.Replace(f.opts.URL, "ws://", "http://", 1), "/v1/ws", "", 1)
	every := time.Duration(float64(time.Minute) / f.opts.BookingsPerMinute)
	t := time.NewTicker(every)
	defer t.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		n++
		lat, lng := f.opts.City.Point(r, 0.8)
		cust := fmt.Sprintf("%s-cust-%d", f.opts.IDPrefix, n%500)
		id, otp, err := f.book(ctx, base, cust, lat, lng, 1+r.Intn(4))
		if err != nil {
			f.Counts.Errors.Add(1)
			continue
		}
		f.Counts.BookingsCreated.Add(1)
		f.otps.Store(id, otp)
	}
}

func (f *Fleet) book(ctx context.Context, base, customer string, lat, lng float64, hours int) (id, otp string, err error) {
	body, _ := json.Marshal(map[string]any{"pickup": map[string]any{"lat": round6(lat), "lng": round6(lng), "address": "simulated"},
		"hours": hours, "car": map[string]string{"transmission": "manual"}})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/bookings", bytes.NewReader(body))
	if err != nil {
		return "", "", err
	}
	req.Header.Set("Authorization", "Bearer "+f.token("customer", customer))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", randomKey())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return "", "", errors.New(resp.Status)
	}
	var b struct {
		ID  string `json:"id"`
		OTP string `json:"otp"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		return "", "", err
	}
	return b.ID, b.OTP, nil
}

func randomKey() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func round6(x float64) float64 { return math.Round(x*1e6) / 1e6 }
