//go:build !prod

package store_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// Invoice numbers of a series are 1..n with no gap and no repeat when many processes issue at
// once, the same booking is asked for twice at once, and issues fail in between.
func TestInvoiceNumbersGapFreeUnderConcurrency(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		const n = 12
		var ids []string
		for range n {
			ids = append(ids, bookingIn(t, e, dispatch.StatusCompleted).ID)
		}
		fare := dispatch.DefaultTariff().Estimate(t0, 2, 1)
		series := "TST/2526"
		var mu sync.Mutex
		got := map[string][]string{} // booking -> numbers answered
		var wg sync.WaitGroup
		errs := make(chan error, 3*n)
		for i, bid := range ids {
			for range 2 { // each booking asked for twice at once: one number
				wg.Add(1)
				go func() {
					defer wg.Done()
					inv, err := e.db.IssueInvoice(ctx, bid, "bengaluru", series, fare, t0.Add(time.Duration(i)*time.Second))
					if err != nil {
						errs <- err
						return
					}
					mu.Lock()
					got[bid] = append(got[bid], inv.No)
					mu.Unlock()
				}()
			}
			wg.Add(1)
			go func() { // an issue that fails (no such booking) takes no number
				defer wg.Done()
				if _, err := e.db.IssueInvoice(ctx, fmt.Sprintf("bk_missing_%d", i), "bengaluru", series, fare, t0); !errors.Is(err, dispatch.ErrNotFound) {
					errs <- fmt.Errorf("unknown booking: got %v, want ErrNotFound", err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		var all []string
		for _, bid := range ids {
			nos := got[bid]
			if len(nos) != 2 || nos[0] != nos[1] {
				t.Errorf("booking %s: got numbers %v, want the same number twice", bid, nos)
				continue
			}
			all = append(all, nos[0])
		}
		sort.Strings(all)
		var want []string
		for i := 1; i <= n; i++ {
			want = append(want, fmt.Sprintf("%s/%06d", series, i))
		}
		if !reflect.DeepEqual(all, want) {
			t.Errorf("numbers issued: got %v, want %v", all, want)
		}
		listed, err := e.db.InvoiceNumbers(ctx, series)
		if err != nil || !reflect.DeepEqual(listed, want) {
			t.Errorf("InvoiceNumbers: got %v, %v; want %v", listed, err, want)
		}
		if last := e.count(t, "SELECT last FROM invoice_counters WHERE series = ?", series); last != n {
			t.Errorf("counter: got %d, want %d", last, n)
		}
		// Another series starts at 1.
		inv, err := e.db.IssueInvoice(ctx, bookingIn(t, e, dispatch.StatusCompleted).ID, "pune", "PNQ/2526", fare, t0)
		if err != nil || inv.No != "PNQ/2526/000001" || !reflect.DeepEqual(inv.Fare, fare) {
			t.Errorf("first of another series: got %+v, %v; want PNQ/2526/000001 with the fare", inv, err)
		}
	})
}

// A charged cancel keeps its fee and final fare on the booking, with its own audit row and the
// event, in the cancel's transaction; assigned_at follows the driver.
func TestCancelChargeAndAssignedAt(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		b := bookingIn(t, e, dispatch.StatusAssigned)
		if b.AssignedAt == nil || !b.AssignedAt.Equal(t0.Add(time.Minute)) {
			t.Fatalf("assigned_at: got %v, want %v", b.AssignedAt, t0.Add(time.Minute))
		}
		back, err := e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, To: dispatch.StatusSearching,
			Driver: b.Driver, ClearDriver: true, Actor: "driver:" + b.DriverID(), At: t0.Add(2 * time.Minute)})
		if err != nil || back.AssignedAt != nil {
			t.Fatalf("back to searching: got assigned_at %v, %v; want none", back.AssignedAt, err)
		}

		b = bookingIn(t, e, dispatch.StatusArrived)
		fee := dispatch.Fare{Currency: "INR", TotalPaise: 17700, Lines: []dispatch.FareLine{
			{Code: "cancellation_fee", Label: "Cancellation fee", AmountPaise: 15000}, {Code: "gst", Label: "GST 18%", AmountPaise: 2700}}}
		got, err := e.db.Transition(ctx, dispatch.Change{BookingID: b.ID, To: dispatch.StatusCancelled, Actor: "customer:" + b.CustomerID,
			Reason: "plans changed", At: t0.Add(time.Hour), Fare: &fee, CancellationFeePaise: 15000, Charge: "cancelled after the driver arrived"})
		if err != nil {
			t.Fatal(err)
		}
		read, err := e.db.Booking(ctx, b.ID)
		if err != nil || read.CancellationFeePaise != 15000 || !reflect.DeepEqual(read.Fare, fee) || !reflect.DeepEqual(read, got) {
			t.Errorf("cancelled booking: got %+v, %v; want fee 15000 and fare %+v", read, err, fee)
		}
		if !read.Charged() {
			t.Errorf("Charged: got false, want true")
		}
		if n := e.count(t, "SELECT COUNT(*) FROM booking_events WHERE booking_id = ? AND reason = ?", b.ID,
			"charged: cancelled after the driver arrived"); n != 1 {
			t.Errorf("charge audit rows: got %d, want 1", n)
		}
		if n := e.count(t, "SELECT COUNT(*) FROM outbox WHERE booking_id = ? AND payload LIKE '%cancellation_fee_paise\":15000%'", b.ID); n != 1 {
			t.Errorf("outbox events with the fee: got %d, want 1", n)
		}
		// A charge with anything but a cancel is refused and changes nothing.
		c := bookingIn(t, e, dispatch.StatusAssigned)
		if _, err := e.db.Transition(ctx, dispatch.Change{BookingID: c.ID, To: dispatch.StatusArrived, Driver: c.Driver,
			CancellationFeePaise: 100, At: t0}); !errors.Is(err, dispatch.ErrInvalid) {
			t.Errorf("fee on arrive: got %v, want ErrInvalid", err)
		}
	})
}

func TestQuotesRoundTrip(t *testing.T) {
	eachBackend(t, func(t *testing.T, e env) {
		ctx := context.Background()
		q := dispatch.Quote{ID: id("qt"), CustomerID: "cu_1", City: "pune", Surge: 1.5,
			Pickup: dispatch.Place{Lat: 18.52, Lng: 73.85}, Fare: dispatch.DefaultTariff().Estimate(t0, 2, 1.5),
			CreatedAt: t0, ExpiresAt: t0.Add(dispatch.QuoteTTL)}
		if err := e.db.SaveQuote(ctx, q); err != nil {
			t.Fatal(err)
		}
		got, err := e.db.Quote(ctx, q.ID)
		if err != nil || !reflect.DeepEqual(got, q) {
			t.Errorf("Quote: got %+v, %v; want %+v", got, err, q)
		}
		if _, err := e.db.Quote(ctx, "qt_nope"); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("unknown quote: got %v, want ErrNotFound", err)
		}
		// Purging drops what expired before the bound and keeps the rest.
		if n, err := e.db.PurgeQuotes(ctx, q.ExpiresAt); err != nil || n != 0 {
			t.Errorf("purge before the expiry: got %d, %v; want 0", n, err)
		}
		if n, err := e.db.PurgeQuotes(ctx, q.ExpiresAt.Add(time.Millisecond)); err != nil || n != 1 {
			t.Errorf("purge after the expiry: got %d, %v; want 1", n, err)
		}
		if _, err := e.db.Quote(ctx, q.ID); !errors.Is(err, dispatch.ErrNotFound) {
			t.Errorf("purged quote: got %v, want ErrNotFound", err)
		}
	})
}
