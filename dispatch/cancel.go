package dispatch

import (
	"errors"
	"fmt"
	"time"
)

// Lines of a cancellation charge.
const LineCancellationFee = "cancellation_fee"

// CancellationPolicy is what a city charges a customer for cancelling (all optional in
// tariffs.json; absent, every cancel is free but for a trip already under way).
//
//   - before a driver is assigned, or within GraceMinutes of the assignment: free;
//   - a booking still more than FreeBeforeStartMinutes from its start (booked ahead): free;
//   - assigned, past the grace: AssignedFeePaise;
//   - the driver has arrived: ArrivedFeePaise, grace or not (the driver came);
//   - in progress: the time used, billed as a trip of that many started hours (the tariff's
//     base hours at least) with the booking's surge: what a trip ended then would cost, but
//     for the booked hours not used.
//
// Fees carry GST at the tariff's rate. Who cancels matters: a driver's cancel never charges the
// customer (the booking goes back to searching), and neither does a dispatcher's before the
// trip starts (the business cancelled); a trip under way is billed for its time whoever ends it.
type CancellationPolicy struct {
	GraceMinutes           int   `json:"grace_minutes"`
	FreeBeforeStartMinutes int   `json:"free_before_start_minutes"`
	AssignedFeePaise       int64 `json:"assigned_fee_paise"`
	ArrivedFeePaise        int64 `json:"arrived_fee_paise"`
}

func (p CancellationPolicy) validate() error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("cancellation.%s is %v, want %s: %w", field, v, want, ErrInvalid))
	}
	if p.GraceMinutes < 0 || p.GraceMinutes > maxGraceMin {
		bad("grace_minutes", p.GraceMinutes, fmt.Sprintf("0 to %d", maxGraceMin))
	}
	if p.FreeBeforeStartMinutes < 0 || p.FreeBeforeStartMinutes > 7*24*60 {
		bad("free_before_start_minutes", p.FreeBeforeStartMinutes, "0 to 10080")
	}
	for _, f := range []struct {
		name string
		v    int64
	}{{"assigned_fee_paise", p.AssignedFeePaise}, {"arrived_fee_paise", p.ArrivedFeePaise}} {
		if f.v < 0 || f.v > maxRatePaise {
			bad(f.name, f.v, fmt.Sprintf("0 to %d", maxRatePaise))
		}
	}
	return errors.Join(errs...)
}

// CancelCharge is what a cancel costs the customer.
type CancelCharge struct {
	// Fare is the final fare of what is owed, nil when the cancel is free.
	Fare *Fare
	// FeePaise is the cancellation fee before tax (0 when free, and for a trip billed for its
	// time: its fare holds the time lines).
	FeePaise int64
	// Why says what was charged and why, for the audit trail ("" when free).
	Why string
}

// CancelCharge is the charge of a cancel of b by a, at `at`, under this tariff (see
// CancellationPolicy).
func (t Tariff) CancelCharge(b Booking, a Actor, at time.Time) CancelCharge {
	if a.Role == "driver" {
		return CancelCharge{}
	}
	if b.Status == StatusInProgress {
		start := b.StartAt
		if b.StartedAt != nil {
			start = *b.StartedAt
		}
		used := max(at.Sub(start), 0)
		hours := int(min((used+time.Hour-1)/time.Hour, MaxBillableHours))
		f := t.Final(start, start.Add(used), max(hours, 1), b.Surge)
		return CancelCharge{Fare: &f, Why: fmt.Sprintf("trip cancelled in progress after %s: billed %d h, %s", used.Truncate(time.Second), max(hours, t.BaseHours), rupees(f.TotalPaise))}
	}
	if a.Role != "customer" {
		return CancelCharge{}
	}
	p := t.Cancellation
	if p.FreeBeforeStartMinutes > 0 && b.StartAt.Sub(at) > time.Duration(p.FreeBeforeStartMinutes)*time.Minute {
		return CancelCharge{}
	}
	var fee int64
	var why string
	switch b.Status {
	case StatusArrived:
		fee, why = p.ArrivedFeePaise, "cancelled after the driver arrived"
	case StatusAssigned:
		if b.AssignedAt == nil || at.Sub(*b.AssignedAt) <= time.Duration(p.GraceMinutes)*time.Minute {
			return CancelCharge{}
		}
		fee, why = p.AssignedFeePaise, fmt.Sprintf("cancelled more than %d min after a driver was assigned", p.GraceMinutes)
	}
	if fee <= 0 {
		return CancelCharge{}
	}
	f := Fare{Currency: "INR", Lines: []FareLine{{Code: LineCancellationFee, Label: "Cancellation fee", AmountPaise: fee}}, TotalPaise: fee}
	if g := applyBasisPoints(fee, t.GSTBasisPoints); g > 0 {
		f.Lines = append(f.Lines, FareLine{Code: LineGST, Label: fmt.Sprintf("GST %s%%", decimalBP(t.GSTBasisPoints*100)), AmountPaise: g})
		f.TotalPaise += g
	}
	return CancelCharge{Fare: &f, FeePaise: fee, Why: fmt.Sprintf("%s: fee %s, %s with GST", why, rupees(fee), rupees(f.TotalPaise))}
}

// Charged reports whether a booking has something to invoice: a completed trip, or a cancel
// that was charged (a fee, or a trip cancelled under way, which has ended_at).
func (b Booking) Charged() bool {
	switch b.Status {
	case StatusCompleted:
		return true
	case StatusCancelled:
		return b.CancellationFeePaise > 0 || b.EndedAt != nil
	}
	return false
}
