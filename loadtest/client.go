package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// client speaks the REST half of the contract as any role, with tokens signed by the shared
// secret. Safe for concurrent use.
type client struct {
	base    string // http://127.0.0.1:8080
	secret  []byte
	http    *http.Client
	tokens  sync.Map      // role+":"+sub -> token
	limited *atomic.Int64 // 429 answers waited out
}

func newClient(base string, secret []byte, conns int, limited *atomic.Int64) *client {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     30 * time.Second,
	}
	return &client{base: strings.TrimSuffix(base, "/"), secret: secret, http: &http.Client{Transport: tr, Timeout: 15 * time.Second}, limited: limited}
}

// baseOf turns the socket URL ws://host/v1/ws into http://host.
func baseOf(wsURL string) string {
	u := strings.Replace(strings.Replace(wsURL, "wss://", "https://", 1), "ws://", "http://", 1)
	return strings.TrimSuffix(u, "/v1/ws")
}

func (c *client) token(role, sub string) string {
	key := role + ":" + sub
	if t, ok := c.tokens.Load(key); ok {
		return t.(string)
	}
	t, err := signToken(c.secret, role, sub)
	if err != nil {
		panic(fmt.Sprintf("sign a %s token: %v", role, err)) // only a broken secret gets here
	}
	c.tokens.Store(key, t)
	return t
}

// statusError is a non-2xx answer.
type statusError struct {
	Status     int
	Body       string
	RetryAfter time.Duration
}

func (e *statusError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Body) }

// do sends body (when not nil) as JSON and decodes a 2xx answer into out (when not nil). A 429
// is waited out as its Retry-After says (at least 250 ms, at most 2 s, up to 8 times), as an
// app would; each is counted in limited.
func (c *client) do(ctx context.Context, method, path, role, sub string, header map[string]string, body, out any) error {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return err
		}
	}
	for attempt := 0; ; attempt++ {
		err := c.once(ctx, method, path, role, sub, header, raw, out)
		var se *statusError
		if attempt == 8 || !errors.As(err, &se) || se.Status != http.StatusTooManyRequests {
			return err
		}
		c.limited.Add(1)
		wait := min(max(se.RetryAfter, 250*time.Millisecond), 2*time.Second)
		if !sleep(ctx, wait) {
			return err
		}
	}
}

func (c *client) once(ctx context.Context, method, path, role, sub string, header map[string]string, raw []byte, out any) error {
	var rd io.Reader
	if raw != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token(role, sub))
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		se := &statusError{Status: resp.StatusCode, Body: strings.TrimSpace(string(b))}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			se.RetryAfter = time.Duration(s) * time.Second
		}
		return se
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// bookingView is the part of a Booking the simulation reads.
type bookingView struct {
	ID         string `json:"id"`
	Status     string `json:"status"`
	CustomerID string `json:"customer_id"`
	Pickup     struct {
		Lat float64 `json:"lat"`
		Lng float64 `json:"lng"`
	} `json:"pickup"`
	CreatedAt time.Time `json:"created_at"`
	OTP       string    `json:"otp"`
}
