package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/ledongthuc/pdf"
)

// moneyBooking is a Booking with the fields of cities and prices.
type moneyBooking struct {
	ID                   string        `json:"id"`
	Status               string        `json:"status"`
	OTP                  string        `json:"otp"`
	City                 string        `json:"city"`
	Surge                float64       `json:"surge"`
	CancellationFeePaise *int64        `json:"cancellation_fee_paise"`
	Fare                 dispatch.Fare `json:"fare"`
}

type quoteAnswer struct {
	Fare      dispatch.Fare `json:"fare"`
	City      string        `json:"city"`
	Surge     float64       `json:"surge"`
	QuoteID   string        `json:"quote_id"`
	ExpiresAt time.Time     `json:"expires_at"`
}

func addsUp(f dispatch.Fare) bool {
	var sum int64
	for _, l := range f.Lines {
		sum += l.AmountPaise
	}
	return sum == f.TotalPaise && f.Currency == "INR" && f.TotalPaise > 0
}

func hasLine(f dispatch.Fare, code string) bool {
	for _, l := range f.Lines {
		if l.Code == code {
			return true
		}
	}
	return false
}

// tomorrowIST is 10:00 IST tomorrow: a daytime start within the week, so prices have no night
// charge whenever the test runs.
func tomorrowIST() time.Time {
	ist := time.FixedZone("IST", 19800)
	n := time.Now().In(ist)
	return time.Date(n.Year(), n.Month(), n.Day()+1, 10, 0, 0, 0, ist)
}

// TestMoneyInEveryCity tells the money side as the apps see it, in one process serving every
// city: the cities, two cities priced differently, a pickup outside every area, surge from
// supply and demand (off, on, capped, on the live map), a quote honoured and an old one refused,
// each cancellation case with its charge, and receipts as JSON and PDF with gap-free numbers.
func TestMoneyInEveryCity(t *testing.T) {
	// The shipped tariffs, but Bengaluru's cancellation grace and free-ahead window are 0, so
	// a cancel right after an assignment is charged without waiting five minutes.
	ts := dispatch.DefaultTariffs()
	blr := ts.Cities["bengaluru"]
	blr.Cancellation.GraceMinutes, blr.Cancellation.FreeBeforeStartMinutes = 0, 0
	ts.Cities["bengaluru"] = blr
	raw, _ := json.Marshal(ts)
	file := filepath.Join(t.TempDir(), "tariffs.json")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, "real", map[string]string{"DISPATCH_TARIFFS": file})
	suffix := fmt.Sprint(time.Now().UnixNano())
	ctok, otherTok := sign(t, "customer", "cust-"+suffix), sign(t, "customer", "other-"+suffix)
	staff := sign(t, "dispatcher", "ops-"+suffix)
	start := tomorrowIST()
	body := func(lat, lng float64, extra map[string]any) map[string]any {
		b := map[string]any{"pickup": map[string]any{"lat": lat, "lng": lng}, "hours": 2,
			"car": map[string]string{"transmission": "manual"}, "start_at": start.Format(time.RFC3339)}
		for k, v := range extra {
			b[k] = v
		}
		return b
	}
	n := 0
	book := func(tok string, b map[string]any) (moneyBooking, int, apiError) {
		t.Helper()
		n++
		var raw json.RawMessage
		st := s.rest(t, "POST", "/v1/bookings", tok, b, map[string]string{"Idempotency-Key": fmt.Sprint("money-", suffix, "-", n)}, &raw)
		var mb moneyBooking
		var e apiError
		_ = json.Unmarshal(raw, &mb)
		_ = json.Unmarshal(raw, &e)
		return mb, st, e
	}
	quote := func(lat, lng float64) quoteAnswer {
		t.Helper()
		var q quoteAnswer
		b := body(lat, lng, nil)
		delete(b, "car") // car is optional in a quote
		if st := s.rest(t, "POST", "/v1/quotes", ctok, b, nil, &q); st != 200 {
			t.Fatalf("quote at %g,%g: got %d, want 200", lat, lng, st)
		}
		if !addsUp(q.Fare) {
			t.Errorf("quote at %g,%g: lines do not add up to the total: %+v", lat, lng, q.Fare)
		}
		return q
	}

	t.Run("cities", func(t *testing.T) {
		var out struct {
			Cities []struct {
				ID, Name, TariffVersion string
				Area                    struct {
					Type        string           `json:"type"`
					Coordinates [][][][2]float64 `json:"coordinates"`
				}
			} `json:"cities"`
		}
		if st := s.rest(t, "GET", "/v1/cities", sign(t, "driver", "d-"+suffix), nil, nil, &out); st != 200 {
			t.Fatalf("GET /v1/cities: got %d, want 200", st)
		}
		var ids []string
		for _, c := range out.Cities {
			ids = append(ids, c.ID)
			if c.Name == "" || c.Area.Type != "MultiPolygon" || len(c.Area.Coordinates) == 0 {
				t.Errorf("city %s: got name %q, area %s with %d polygons; want a name and a MultiPolygon", c.ID, c.Name, c.Area.Type, len(c.Area.Coordinates))
			}
		}
		if want := []string{"bengaluru", "chennai", "delhi", "hyderabad", "mumbai", "pune"}; !reflect.DeepEqual(ids, want) {
			t.Errorf("cities: got %v, want %v", ids, want)
		}
		if st := s.rest(t, "GET", "/v1/cities", "", nil, nil, nil); st != 401 {
			t.Errorf("cities without a token: got %d, want 401", st)
		}
	})

	t.Run("two cities priced differently in one process", func(t *testing.T) {
		for _, c := range []struct {
			city     string
			lat, lng float64
		}{{"pune", 18.5308, 73.8475}, {"delhi", 28.6315, 77.2167}, {"chennai", 13.0500, 80.2500}} {
			q := quote(c.lat, c.lng)
			tr, _ := ts.For(c.city)
			want := tr.Estimate(start, 2, 1)
			if q.City != c.city || q.Surge != 1 || !reflect.DeepEqual(q.Fare, want) || q.QuoteID == "" {
				t.Errorf("quote in %s: got %s ×%g %+v (quote %q), want %s ×1 %+v with a quote_id", c.city, q.City, q.Surge, q.Fare, q.QuoteID, c.city, want)
			}
			b, st, _ := book(ctok, body(c.lat, c.lng, nil))
			if st != 201 || b.City != c.city || !reflect.DeepEqual(b.Fare, want) {
				t.Errorf("booking in %s: got %d %s %+v, want 201 %s %+v", c.city, st, b.City, b.Fare, c.city, want)
			}
		}
		// Pune 2 h: base 34900, fee 3900, GST 6984: 45784. Delhi 2 h: base 42900, fee 4900,
		// GST 8604: 56404. (Both by day, no surge.)
		if p, d := quote(18.5308, 73.8475).Fare.TotalPaise, quote(28.6315, 77.2167).Fare.TotalPaise; p != 45784 || d != 56404 {
			t.Errorf("totals: got Pune %d, Delhi %d; want 45784 and 56404", p, d)
		}
	})

	t.Run("outside every service area", func(t *testing.T) {
		var e apiError
		b := body(21.1458, 79.0882, nil) // Nagpur
		if st := s.rest(t, "POST", "/v1/quotes", ctok, b, nil, &e); st != 422 || e.Error.Code != "out_of_service_area" {
			t.Errorf("quote in Nagpur: got %d %q, want 422 out_of_service_area", st, e.Error.Code)
		}
		if _, st, e := book(ctok, b); st != 422 || e.Error.Code != "out_of_service_area" {
			t.Errorf("booking in Nagpur: got %d %q, want 422 out_of_service_area", st, e.Error.Code)
		}
	})

	t.Run("surge off then on, honoured, refused when old, on the map", func(t *testing.T) {
		// Two drivers available at Bandra, Mumbai: supply 2.
		lat, lng := 19.0596, 72.8295
		for i := range 2 {
			s.registerDriver(t, fmt.Sprintf("bandra-%d-%s", i, suffix))
			drv := s.mustDial(t, sign(t, "driver", fmt.Sprintf("bandra-%d-%s", i, suffix)))
			drv.expect("hello", 5*time.Second, nil)
			if code := drv.reply(drv.send("status", map[string]string{"state": "online"})); code != "" {
				t.Fatalf("online: got %q", code)
			}
			drv.send("location", point(lat+0.001*float64(i), lng))
		}
		time.Sleep(300 * time.Millisecond) // the points reach the index
		if q := quote(lat, lng); q.Surge != 1 || hasLine(q.Fare, "surge") {
			t.Fatalf("calm market: got ×%g with lines %+v, want no surge", q.Surge, q.Fare.Lines)
		}
		// Four requests for two drivers (bookings ahead of time, so the drivers stay available).
		for range 4 {
			if _, st, _ := book(otherTok, body(lat, lng, nil)); st != 201 {
				t.Fatalf("booking at Bandra: got %d, want 201", st)
			}
		}
		q := quote(lat, lng)
		mum, _ := ts.For("mumbai")
		// Mumbai 2 h at ×1.5: base 44900, surge 22450, fee 4900, subtotal 72250, GST 13005: 85255.
		if want := mum.Estimate(start, 2, 1.5); q.Surge != 1.5 || !reflect.DeepEqual(q.Fare, want) || q.Fare.TotalPaise != 85255 || !hasLine(q.Fare, "surge") {
			t.Fatalf("twice the demand of its supply: got ×%g %+v, want ×1.5 %+v (85255)", q.Surge, q.Fare, want)
		}
		if !q.ExpiresAt.After(time.Now().Add(4*time.Minute)) || q.ExpiresAt.After(time.Now().Add(5*time.Minute+time.Second)) {
			t.Errorf("quote expires_at: got %s, want 5 minutes from now", q.ExpiresAt)
		}
		// The live map outlines the market.
		disp := s.mustDial(t, staff)
		if code := disp.reply(disp.send("watch.area", map[string]float64{"min_lat": lat - 0.02, "min_lng": lng - 0.02, "max_lat": lat + 0.02, "max_lng": lng + 0.02})); code != "" {
			t.Fatalf("watch.area: got %q", code)
		}
		disp.expect("cells", 5*time.Second, func(d json.RawMessage) bool { return strings.Contains(string(d), `"surge":1.5`) })

		// A booking with the quote keeps its surge and its price.
		quoted := body(lat, lng, map[string]any{"quote_id": q.QuoteID})
		quotedKey := map[string]string{"Idempotency-Key": "quoted-" + suffix}
		var b moneyBooking
		if st := s.rest(t, "POST", "/v1/bookings", ctok, quoted, quotedKey, &b); st != 201 || b.Surge != 1.5 || !reflect.DeepEqual(b.Fare, q.Fare) || b.City != "mumbai" {
			t.Errorf("booking with the quote: got %d ×%g %+v, want 201 ×1.5 %+v", st, b.Surge, b.Fare, q.Fare)
		}
		// Another customer's or an unknown quote: 400. An old quote: 409, and nothing booked.
		if _, st, e := book(otherTok, body(lat, lng, map[string]any{"quote_id": q.QuoteID})); st != 400 || e.Error.Code != "invalid_argument" {
			t.Errorf("someone else's quote: got %d %q, want 400 invalid_argument", st, e.Error.Code)
		}
		old := quote(lat, lng)
		db, err := sql.Open("mysql", s.dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec("UPDATE quotes SET expires_at = ? WHERE id = ?", time.Now().UTC().Add(-time.Second), old.QuoteID); err != nil {
			t.Fatal(err)
		}
		var before int
		_ = db.QueryRow("SELECT COUNT(*) FROM bookings").Scan(&before)
		if _, st, e := book(ctok, body(lat, lng, map[string]any{"quote_id": old.QuoteID})); st != 409 || e.Error.Code != "conflict" || !strings.Contains(e.Error.Message, "new quote") {
			t.Errorf("an old quote: got %d %q %q, want 409 conflict asking for a new quote", st, e.Error.Code, e.Error.Message)
		}
		var after int
		_ = db.QueryRow("SELECT COUNT(*) FROM bookings").Scan(&after)
		if after != before {
			t.Errorf("refused booking stored: got %d bookings, want %d", after, before)
		}
		// A retry of the booking made while its quote held still answers that booking.
		if _, err := db.Exec("UPDATE quotes SET expires_at = ? WHERE id = ?", time.Now().UTC().Add(-time.Second), q.QuoteID); err != nil {
			t.Fatal(err)
		}
		var replayed moneyBooking
		if st := s.rest(t, "POST", "/v1/bookings", ctok, quoted, quotedKey, &replayed); st/100 != 2 || replayed.ID != b.ID || replayed.Surge != 1.5 {
			t.Errorf("retry after the quote expired: got %d %s ×%g, want the booking %s again", st, replayed.ID, replayed.Surge, b.ID)
		}

		// The cap holds: Pune's steps go to ×2, its tariff caps at ×1.75. Eight requests, no driver.
		plat, plng := 18.5913, 73.7389 // Hinjewadi
		for range 8 {
			book(otherTok, body(plat, plng, nil))
		}
		pq := quote(plat, plng)
		pun, _ := ts.For("pune")
		// Pune 2 h at ×1.75: base 34900, surge 26175, fee 3900, subtotal 64975, GST 11696: 76671.
		if pq.Surge != 1.75 || !reflect.DeepEqual(pq.Fare, pun.Estimate(start, 2, 1.75)) || pq.Fare.TotalPaise != 76671 {
			t.Errorf("capped: got ×%g %d, want ×1.75 76671", pq.Surge, pq.Fare.TotalPaise)
		}
	})

	t.Run("cancellations and receipts", func(t *testing.T) {
		// A driver with a profile (it connected once) who stays offline: only dispatchers
		// assign it, the matcher never does.
		driverID := "blr-" + suffix
		s.registerDriver(t, driverID)
		dtok := sign(t, "driver", driverID)
		s.mustDial(t, dtok).expect("hello", 5*time.Second, nil)
		lat, lng := 12.9756, 77.6050 // MG Road
		step := func(b moneyBooking, steps ...string) moneyBooking {
			t.Helper()
			for _, st := range steps {
				tok, body := dtok, any(nil)
				switch st {
				case "assign":
					tok, body = staff, map[string]string{"driver_id": driverID}
				case "start":
					// The OTP reaches the customer once a driver is assigned, not in the 201.
					var cur moneyBooking
					s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &cur)
					body = map[string]string{"otp": cur.OTP}
				}
				var out moneyBooking
				if code := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/"+st, tok, body, nil, &out); code != 200 {
					t.Fatalf("%s %s: got %d, want 200", b.ID, st, code)
				}
			}
			var out moneyBooking
			s.rest(t, "GET", "/v1/bookings/"+b.ID, ctok, nil, nil, &out)
			return out
		}
		cancel := func(b moneyBooking, tok string) moneyBooking {
			t.Helper()
			var out moneyBooking
			if code := s.rest(t, "POST", "/v1/bookings/"+b.ID+"/cancel", tok, map[string]string{"reason": "plans changed"}, nil, &out); code != 200 {
				t.Fatalf("cancel %s: got %d, want 200", b.ID, code)
			}
			return out
		}
		receipt := func(b moneyBooking, tok string) (map[string]any, int) {
			t.Helper()
			var out map[string]any
			code := s.rest(t, "GET", "/v1/bookings/"+b.ID+"/receipt", tok, nil, nil, &out)
			return out, code
		}
		fresh := func() moneyBooking {
			t.Helper()
			b, st, _ := book(ctok, body(lat, lng, nil))
			if st != 201 || b.City != "bengaluru" || b.CancellationFeePaise == nil || *b.CancellationFeePaise != 0 {
				t.Fatalf("booking: got %d %+v, want 201 in bengaluru with cancellation_fee_paise 0", st, b)
			}
			return b
		}
		var invoices []string
		charged := func(name string, b moneyBooking, fee int64, total int64) {
			t.Helper()
			if b.Status != "cancelled" || b.CancellationFeePaise == nil || *b.CancellationFeePaise != fee || !addsUp(b.Fare) || (total > 0 && b.Fare.TotalPaise != total) {
				t.Errorf("%s: got %s fee %v fare %+v, want cancelled, fee %d, total %d", name, b.Status, b.CancellationFeePaise, b.Fare, fee, total)
			}
			r, code := receipt(b, ctok)
			if code != 200 || r["invoice_no"] == nil || r["city"] != "bengaluru" || r["gstin"] != "29AAAAA0000A1Z5" {
				t.Fatalf("%s: receipt got %d %v, want 200 with an invoice number", name, code, r)
			}
			invoices = append(invoices, r["invoice_no"].(string))
			if n := eventCount(t, s.dsn, b.ID, "charged:%"); n != 1 {
				t.Errorf("%s: charge audit rows: got %d, want 1", name, n)
			}
		}
		free := func(name string, b moneyBooking, wantStatus string) {
			t.Helper()
			if b.Status != wantStatus || b.CancellationFeePaise == nil || *b.CancellationFeePaise != 0 || hasLine(b.Fare, "cancellation_fee") {
				t.Errorf("%s: got %s fee %v, want %s and free", name, b.Status, b.CancellationFeePaise, wantStatus)
			}
			if _, code := receipt(b, ctok); code != 409 && wantStatus == "cancelled" {
				t.Errorf("%s: receipt got %d, want 409 (nothing charged)", name, code)
			}
			if n := eventCount(t, s.dsn, b.ID, "charged:%"); n != 0 {
				t.Errorf("%s: charge audit rows: got %d, want 0", name, n)
			}
		}

		free("searching, the customer cancels", cancel(fresh(), ctok), "cancelled")
		free("assigned, a dispatcher cancels", cancel(step(fresh(), "assign"), staff), "cancelled")
		free("arrived, the driver cancels", cancel(step(fresh(), "assign", "arrive"), dtok), "searching")
		// Assigned past the (zero) grace: 7500 + GST 1350 = 8850.
		charged("assigned, the customer cancels", cancel(step(fresh(), "assign"), ctok), 7500, 8850)
		// After arrival: 15000 + GST 2700 = 17700.
		charged("arrived, the customer cancels", cancel(step(fresh(), "assign", "arrive"), ctok), 15000, 17700)
		// In progress: the time used, at least the base hours: no fee, the fare's time lines.
		ip := cancel(step(fresh(), "assign", "arrive", "start"), ctok)
		charged("in progress, the customer cancels", ip, 0, 0)
		if !hasLine(ip.Fare, "base") || hasLine(ip.Fare, "extra_hours") {
			t.Errorf("in progress: got lines %+v, want the base and no extra hours", ip.Fare.Lines)
		}

		// A completed trip: the receipt's fare is the final fare; as a PDF too.
		done := step(fresh(), "assign", "arrive", "start", "end")
		r, code := receipt(done, staff)
		if code != 200 {
			t.Fatalf("receipt of a completed trip (dispatcher): got %d", code)
		}
		rf, _ := json.Marshal(r["fare"])
		var fare dispatch.Fare
		_ = json.Unmarshal(rf, &fare)
		if done.Status != "completed" || !reflect.DeepEqual(fare, done.Fare) || !addsUp(fare) {
			t.Errorf("receipt fare: got %+v, want the final %+v", fare, done.Fare)
		}
		invoices = append(invoices, r["invoice_no"].(string))
		again, _ := receipt(done, ctok)
		if again["invoice_no"] != r["invoice_no"] || again["issued_at"] != r["issued_at"] {
			t.Errorf("asked again: got %v %v, want the same invoice %v %v", again["invoice_no"], again["issued_at"], r["invoice_no"], r["issued_at"])
		}
		if _, code := receipt(done, otherTok); code != 404 {
			t.Errorf("someone else's receipt: got %d, want 404", code)
		}
		if _, code := receipt(done, dtok); code != 403 {
			t.Errorf("a driver asks for a receipt: got %d, want 403", code)
		}
		text := receiptPDF(t, s, done.ID, ctok)
		for _, want := range []string{r["invoice_no"].(string), done.ID, "Bengaluru", "29AAAAA0000A1Z5", "Total"} {
			if !strings.Contains(text, want) {
				t.Errorf("receipt PDF lacks %q; got:\n%s", want, text)
			}
		}
		if !slices.Contains(amountsIn(text), done.Fare.TotalPaise) {
			t.Errorf("receipt PDF lacks the total %d paise; got amounts %v in:\n%s", done.Fare.TotalPaise, amountsIn(text), text)
		}

		// Invoice numbers: Bengaluru's series of this financial year, 1 to 4 in the order issued.
		series := dispatch.InvoiceSeries(blr, time.Now())
		var want []string
		for i := 1; i <= 4; i++ {
			want = append(want, fmt.Sprintf("%s/%06d", series, i))
		}
		if !reflect.DeepEqual(invoices, want) {
			t.Errorf("invoice numbers: got %v, want %v", invoices, want)
		}
	})
	if n := invariantViolations(t, s.dsn); n != 0 {
		t.Errorf("invariant violations: got %d, want 0", n)
	}
}

func eventCount(t *testing.T, dsn, bookingID, like string) int {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM booking_events WHERE booking_id = ? AND reason LIKE ?", bookingID, like).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// rupees is an amount as the PDF prints it (Rs. 1,23,456.50); how the digits are grouped is
// api's TestMoney's to check.
var rupees = regexp.MustCompile(`Rs\. ([0-9,]+)\.([0-9]{2})`)

// amountsIn returns the amounts in paise that text prints in rupees.
func amountsIn(text string) []int64 {
	var out []int64
	for _, m := range rupees.FindAllStringSubmatch(text, -1) {
		p, err := strconv.ParseInt(strings.ReplaceAll(m[1], ",", "")+m[2], 10, 64)
		if err == nil {
			out = append(out, p)
		}
	}
	return out
}

// receiptPDF fetches a receipt as a PDF and reads its text back with a PDF reader.
func receiptPDF(t *testing.T, s *server, id, tok string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+s.http+"/v1/bookings/"+id+"/receipt", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/pdf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pdf" {
		t.Fatalf("receipt PDF: got %d %s, want 200 application/pdf", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r, err := pdf.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("receipt PDF does not parse: %v", err)
	}
	var out strings.Builder
	for i := 1; i <= r.NumPage(); i++ {
		rows, err := r.Page(i).GetTextByRow()
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			for _, w := range row.Content {
				out.WriteString(w.S)
			}
			out.WriteString("\n")
		}
	}
	return out.String()
}
