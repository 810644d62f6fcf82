package loadtest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// DriveOptions configure Drive: one driver on its own socket, driven by a person.
type DriveOptions struct {
	URL      string        // the socket, e.g. ws://127.0.0.1:8080/v1/ws
	Token    string        // the driver's token (dispatchd token -role driver -sub ID)
	Lat, Lng float64       // where the driver waits
	Every    time.Duration // how often it sends its position (default 1 s)
	// Accept takes every offer; otherwise offers are declined at once and the driver takes only
	// the bookings a dispatcher assigns it (POST /v1/bookings/{id}/assign).
	Accept bool
}

// Drive keeps one driver online at a fixed spot, sending its position every opts.Every, until
// ctx ends (it then returns nil) or the socket fails (it returns why). It prints a line for
// each frame the server sends and reads commands from in, one a line, for the driver's current
// booking (the last one the server sent): `arrive`, `start OTP` (the OTP the customer sees),
// `end`, `cancel [reason]`; and `online`, `offline`. The end of in ends no drive: `drive
// </dev/null` is a driver that only waits for assignments. Not safe for concurrent use.
func Drive(ctx context.Context, opts DriveOptions, in io.Reader, out io.Writer) error {
	if opts.Token == "" {
		return errors.New("drive: a driver token is required (dispatchd token -role driver -sub ID)")
	}
	if opts.Every <= 0 {
		opts.Every = time.Second
	}
	ws, _, err := (&websocket.Dialer{HandshakeTimeout: 5 * time.Second}).DialContext(ctx, opts.URL,
		http.Header{"Authorization": {"Bearer " + opts.Token}})
	if err != nil {
		return fmt.Errorf("drive: connect %s: %w", opts.URL, err)
	}
	defer ws.Close()
	d := &driver{ws: ws, out: out, sent: map[int64]string{}}
	if err := d.send("status", map[string]string{"state": "online"}, "online"); err != nil {
		return err
	}
	if err := d.location(opts); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	failed := make(chan error, 1)
	go func() { failed <- d.read(opts.Accept) }()
	go d.commands(in)
	t := time.NewTicker(opts.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			return nil
		case err := <-failed:
			return fmt.Errorf("drive: socket closed: %w", err)
		case <-t.C:
			if err := d.location(opts); err != nil {
				return err
			}
		}
	}
}

// driver is Drive's socket: writes from the ticker, the reader (offer answers) and the command
// reader are serialised by mu.
type driver struct {
	ws  *websocket.Conn
	out io.Writer

	mu      sync.Mutex
	seq     int64
	sent    map[int64]string // seq -> the command, for its ack or error
	booking string           // the current booking
}

func (d *driver) send(typ string, data any, what string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	env := map[string]any{"type": typ, "data": data}
	if what != "" {
		env["seq"] = d.seq
		d.sent[d.seq] = what
	}
	_ = d.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := d.ws.WriteJSON(env); err != nil {
		return fmt.Errorf("drive: send %s: %w", typ, err)
	}
	return nil
}

func (d *driver) location(opts DriveOptions) error {
	return d.send("location", map[string]any{"lat": opts.Lat, "lng": opts.Lng, "acc": 5, "ts": time.Now().UnixMilli()}, "")
}

func (d *driver) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, format+"\n", args...)
}

// read prints the server's frames and answers offers, until the socket fails.
func (d *driver) read(accept bool) error {
	for {
		var env struct {
			Type string          `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if err := d.ws.ReadJSON(&env); err != nil {
			return err
		}
		var m struct {
			DriverID  string `json:"driver_id"`
			State     string `json:"state"`
			OfferID   string `json:"offer_id"`
			BookingID string `json:"booking_id"`
			ID        string `json:"id"`
			Status    string `json:"status"`
			Code      string `json:"code"`
			Message   string `json:"message"`
			Ref       *int64 `json:"ref"`
			DistanceM int    `json:"distance_m"`
			Booking   *struct {
				ID     string `json:"id"`
				Status string `json:"status"`
			} `json:"booking"`
		}
		_ = json.Unmarshal(env.Data, &m)
		switch env.Type {
		case "hello":
			if m.Booking != nil {
				d.current(m.Booking.ID)
				d.printf("hello: driver %s, %s, current booking %s (%s)", m.DriverID, m.State, m.Booking.ID, m.Booking.Status)
			} else {
				d.printf("hello: driver %s, %s", m.DriverID, m.State)
			}
		case "offer":
			what, typ := "decline", "offer.decline"
			if accept {
				what, typ = "accept", "offer.accept"
			}
			d.printf("offer %s: booking %s, %d m away: %s", m.OfferID, m.BookingID, m.DistanceM, what)
			if err := d.send(typ, map[string]string{"offer_id": m.OfferID, "reason": "hand-driven"}, what+" "+m.OfferID); err != nil {
				return err
			}
		case "booking":
			d.current(m.ID)
			d.printf("booking %s: %s", m.ID, m.Status)
		case "ack", "error":
			what := ""
			if m.Ref != nil {
				d.mu.Lock()
				what = d.sent[*m.Ref]
				delete(d.sent, *m.Ref)
				d.mu.Unlock()
			}
			if env.Type == "ack" {
				d.printf("%s: ok", what)
			} else {
				d.printf("%s: %s: %s", what, m.Code, m.Message)
			}
		default:
			d.printf("%s %s", env.Type, env.Data)
		}
	}
}

func (d *driver) current(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if id != "" {
		d.booking = id
	}
}

// commands reads a person's commands until in ends.
func (d *driver) commands(in io.Reader) {
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		d.mu.Lock()
		bk := d.booking
		d.mu.Unlock()
		var err error
		switch f[0] {
		case "online", "offline":
			err = d.send("status", map[string]string{"state": f[0]}, f[0])
		case "arrive", "end":
			err = d.send("trip."+f[0], map[string]string{"booking_id": bk}, f[0]+" "+bk)
		case "start":
			if len(f) != 2 {
				d.printf("start: the OTP the customer sees is required: start 1234")
				continue
			}
			err = d.send("trip.start", map[string]string{"booking_id": bk, "otp": f[1]}, "start "+bk)
		case "cancel":
			err = d.send("trip.cancel", map[string]string{"booking_id": bk, "reason": strings.Join(f[1:], " ")}, "cancel "+bk)
		default:
			d.printf("commands: arrive, start OTP, end, cancel [reason], online, offline")
		}
		if err != nil {
			d.printf("%v", err)
			return
		}
	}
}
