package loadtest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress draws a bar on a terminal (one line, redrawn) or writes a plain line every 5 s.
type progress struct {
	w      io.Writer
	tty    bool
	length time.Duration
	series *Series

	mu sync.Mutex
	ph string
	// wmu serialises writes to w: the bar's lines and the phase lines come from two goroutines.
	wmu sync.Mutex
}

func newProgress(w io.Writer, tty bool, length time.Duration, s *Series) *progress {
	return &progress{w: w, tty: tty, length: length, series: s}
}

// phase names what the run does now; off a terminal it also writes "phase NAME at TIME", the
// line scripts wait for (city.sh starts its kill clock at "phase run").
func (p *progress) phase(ph string) {
	p.mu.Lock()
	p.ph = ph
	p.mu.Unlock()
	if !p.tty {
		p.wmu.Lock()
		fmt.Fprintf(p.w, "phase %s at %s\n", ph, time.Now().UTC().Format(time.RFC3339Nano))
		p.wmu.Unlock()
	}
}

// run draws until ctx ends; totals reads the live counts.
func (p *progress) run(ctx context.Context, totals func() (Totals, int64)) {
	every := 5 * time.Second
	if p.tty {
		every = 250 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var prevLoc int64
	prevAt := time.Now()
	draw := func(final bool) {
		tot, dsp := totals()
		now := time.Now()
		rate := float64(tot.LocationsSent-prevLoc) / max(now.Sub(prevAt).Seconds(), 0.001)
		prevLoc, prevAt = tot.LocationsSent, now
		p.mu.Lock()
		ph := p.ph
		p.mu.Unlock()
		el := now.Sub(p.series.Start())
		line := fmt.Sprintf("%-12s %5.0fs  drivers %d  dispatchers %d  loc/s %.0f  bookings %d  offers %d  accepted %d  completed %d  in flight %d",
			ph, el.Seconds(), tot.Connected, dsp, rate, tot.BookingsCreated, tot.OffersReceived, tot.OffersAccepted, tot.BookingsCompleted, tot.InFlight)
		p.wmu.Lock()
		defer p.wmu.Unlock()
		if !p.tty {
			fmt.Fprintln(p.w, line)
			return
		}
		const width = 24
		done := min(1, float64(el)/float64(p.length))
		n := int(done * width)
		bar := "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
		end := ""
		if final {
			end = "\n"
		}
		fmt.Fprintf(p.w, "\r\033[K%s %s%s", bar, line, end)
	}
	for {
		select {
		case <-ctx.Done():
			draw(true)
			return
		case <-t.C:
			draw(false)
		}
	}
}
