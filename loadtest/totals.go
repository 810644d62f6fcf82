package loadtest

// Totals are Counts at one moment, in JSON: what a process reports to its parent and what the
// report shows.
type Totals struct {
	LocationsSent     int64 `json:"locations_sent"`
	LocationErrors    int64 `json:"location_errors"`
	OffersReceived    int64 `json:"offers_received"`
	OffersRepeated    int64 `json:"offers_repeated"`
	OffersAccepted    int64 `json:"offers_accepted"`
	AcceptsRefused    int64 `json:"accepts_refused"`
	OffersDeclined    int64 `json:"offers_declined"`
	OffersIgnored     int64 `json:"offers_ignored"`
	BookingsCreated   int64 `json:"bookings_created"`
	BookingErrors     int64 `json:"booking_errors"`
	BookingsSkipped   int64 `json:"bookings_skipped"`
	BookingsCompleted int64 `json:"completions"`
	ActionErrors      int64 `json:"action_errors"`
	Unanswered        int64 `json:"unanswered"`
	Reconnects        int64 `json:"reconnects"`
	Errors            int64 `json:"socket_errors"`
	Connected         int64 `json:"connected"`
	Arrived           int64 `json:"drivers_arrived"`
	InFlight          int64 `json:"in_flight"`
	RateLimited       int64 `json:"rate_limited"`
	// Refused counts the server's error frames by "message type: code", with an example message.
	Refused map[string]Refused `json:"refused,omitempty"`
}

// Refused is one kind of error frame.
type Refused struct {
	N       int64  `json:"n"`
	Example string `json:"example"`
}

// Totals snapshots the counts.
func (c *Counts) Totals() Totals {
	return Totals{
		LocationsSent: c.LocationsSent.Load(), LocationErrors: c.LocationErrors.Load(),
		OffersReceived: c.OffersReceived.Load(), OffersRepeated: c.OffersRepeated.Load(),
		OffersAccepted: c.OffersAccepted.Load(), AcceptsRefused: c.AcceptsRefused.Load(),
		OffersDeclined: c.OffersDeclined.Load(), OffersIgnored: c.OffersIgnored.Load(),
		BookingsCreated: c.BookingsCreated.Load(), BookingErrors: c.BookingErrors.Load(),
		BookingsSkipped: c.BookingsSkipped.Load(), BookingsCompleted: c.BookingsCompleted.Load(),
		ActionErrors: c.ActionErrors.Load(), Unanswered: c.Unanswered.Load(), Reconnects: c.Reconnects.Load(),
		Errors: c.Errors.Load(), Connected: c.Connected.Load(), Arrived: c.Arrived.Load(), InFlight: c.InFlight.Load(),
		RateLimited: c.RateLimited.Load(), Refused: c.refusedTotals(),
	}
}

func (c *Counts) refusedTotals() map[string]Refused {
	var out map[string]Refused
	c.refusals.Range(func(k, v any) bool {
		if out == nil {
			out = map[string]Refused{}
		}
		r := v.(*refusal)
		out[k.(string)] = Refused{N: r.n.Load(), Example: r.example}
		return true
	})
	return out
}

// Add adds o to t.
func (t *Totals) Add(o Totals) {
	t.LocationsSent += o.LocationsSent
	t.LocationErrors += o.LocationErrors
	t.OffersReceived += o.OffersReceived
	t.OffersRepeated += o.OffersRepeated
	t.OffersAccepted += o.OffersAccepted
	t.AcceptsRefused += o.AcceptsRefused
	t.OffersDeclined += o.OffersDeclined
	t.OffersIgnored += o.OffersIgnored
	t.BookingsCreated += o.BookingsCreated
	t.BookingErrors += o.BookingErrors
	t.BookingsSkipped += o.BookingsSkipped
	t.BookingsCompleted += o.BookingsCompleted
	t.ActionErrors += o.ActionErrors
	t.Unanswered += o.Unanswered
	t.Reconnects += o.Reconnects
	t.Errors += o.Errors
	t.Connected += o.Connected
	t.Arrived += o.Arrived
	t.InFlight += o.InFlight
	t.RateLimited += o.RateLimited
	for k, r := range o.Refused {
		if t.Refused == nil {
			t.Refused = map[string]Refused{}
		}
		old := t.Refused[k]
		if old.Example == "" {
			old.Example = r.Example
		}
		old.N += r.N
		t.Refused[k] = old
	}
}
