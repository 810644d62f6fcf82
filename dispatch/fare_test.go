package dispatch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

var testIST = time.FixedZone("IST", 5*3600+1800)

// at is a wall-clock time in India on 10 July 2025 (plus dayOffset days).
func at(dayOffset, hour, minute, sec int) time.Time {
	return time.Date(2025, 7, 10+dayOffset, hour, minute, sec, 0, testIST)
}

type wantLine struct {
	code  string
	paise int64
}

func lineString(ls []FareLine) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = fmt.Sprintf("%s:%d", l.Code, l.AmountPaise)
	}
	return strings.Join(parts, " ")
}

func wantString(ls []wantLine) string {
	parts := make([]string, len(ls))
	for i, l := range ls {
		parts[i] = fmt.Sprintf("%s:%d", l.code, l.paise)
	}
	return strings.Join(parts, " ")
}

func mustTariff(t testing.TB, city string) Tariff {
	t.Helper()
	tr, err := DefaultTariffs().For(city)
	if err != nil {
		t.Fatalf("For(%q): %v", city, err)
	}
	return tr
}

// The worked examples use Bengaluru unless they say otherwise: base ₹399 (39900) for 2 h,
// ₹149 (14900) an extra hour, overtime ₹3 (300) a started minute after 10 min grace, night
// ₹1.50 (150) a started minute in 22:00-06:00 IST, surge cap 2.0, fee ₹49 (4900), GST 18%.
func TestFareFinal(t *testing.T) {
	blr := mustTariff(t, "bengaluru")
	// A tariff with round numbers to pin the rounding direction of surge and GST: half a paisa up.
	halves := Tariff{City: "x", BaseHours: 1, BasePaise: 10001, SurgeCap: 2, GSTBasisPoints: 1800}
	gstHalf := Tariff{City: "x", BaseHours: 1, BasePaise: 2475, SurgeCap: 1, GSTBasisPoints: 1800}

	tests := []struct {
		name       string
		tariff     Tariff
		start, end time.Time
		booked     int
		surge      float64
		want       []wantLine
		wantTotal  int64
	}{
		{
			// 4 h by day: base 39900 + 2 extra h × 14900 = 29800 + fee 4900 = 74600 taxable;
			// GST 74600 × 18% = 13428. Total 88028. No night line.
			name: "day trip has no night line", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 14, 0, 0), booked: 4, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 29800}, {"convenience_fee", 4900}, {"gst", 13428}},
			wantTotal: 88028,
		},
		{
			// 21:30 to 00:30, 3 h booked: night only 22:00-00:30 = 150 min × 150 = 22500.
			// 39900 + 14900 + 22500 + 4900 = 82200; GST 14796. Total 96996.
			name: "across midnight counts only 22:00-06:00", tariff: blr,
			start: at(0, 21, 30, 0), end: at(1, 0, 30, 0), booked: 3, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 14900}, {"night", 22500}, {"convenience_fee", 4900}, {"gst", 14796}},
			wantTotal: 96996,
		},
		{
			// The same trip given in UTC (16:00Z is 21:30 IST): the zone of the inputs does not matter.
			name: "across midnight given in UTC", tariff: blr,
			start: time.Date(2025, 7, 10, 16, 0, 0, 0, time.UTC), end: time.Date(2025, 7, 10, 19, 0, 0, 0, time.UTC), booked: 3, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 14900}, {"night", 22500}, {"convenience_fee", 4900}, {"gst", 14796}},
			wantTotal: 96996,
		},
		{
			// 04:00 to 07:00: night 04:00-06:00 = 120 min × 150 = 18000.
			// 39900 + 14900 + 18000 + 4900 = 77700; GST 13986. Total 91686.
			name: "early morning stops counting at 06:00", tariff: blr,
			start: at(0, 4, 0, 0), end: at(0, 7, 0, 0), booked: 3, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 14900}, {"night", 18000}, {"convenience_fee", 4900}, {"gst", 13986}},
			wantTotal: 91686,
		},
		{
			// Noon to noon, 24 h: 22 extra h × 14900 = 327800; one whole night 8 h = 480 min × 150 = 72000.
			// 39900 + 327800 + 72000 + 4900 = 444600; GST 80028. Total 524628.
			name: "a day long trip has one whole night", tariff: blr,
			start: at(0, 12, 0, 0), end: at(1, 12, 0, 0), booked: 24, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 327800}, {"night", 72000}, {"convenience_fee", 4900}, {"gst", 80028}},
			wantTotal: 524628,
		},
		{
			// 2 h booked, 9 min 59 s over: within the 10 min grace. 39900 + 4900 = 44800; GST 8064. Total 52864.
			name: "overtime within grace is free", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 9, 59), booked: 2, surge: 1,
			want:      []wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}},
			wantTotal: 52864,
		},
		{
			name: "overtime of exactly the grace is free", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 10, 0), booked: 2, surge: 1,
			want:      []wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}},
			wantTotal: 52864,
		},
		{
			// One second past the grace starts a minute: 300. 39900 + 300 + 4900 = 45100; GST 8118. Total 53218.
			name: "one second past grace is a started minute", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 10, 1), booked: 2, surge: 1,
			want:      []wantLine{{"base", 39900}, {"overtime", 300}, {"convenience_fee", 4900}, {"gst", 8118}},
			wantTotal: 53218,
		},
		{
			// 25 min 30 s over; less 10 min grace = 15 min 30 s = 16 started minutes × 300 = 4800.
			// 39900 + 4800 + 4900 = 49600; GST 8928. Total 58528.
			name: "overtime past grace by the started minute", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 25, 30), booked: 2, surge: 1,
			want:      []wantLine{{"base", 39900}, {"overtime", 4800}, {"convenience_fee", 4900}, {"gst", 8928}},
			wantTotal: 58528,
		},
		{
			// 20:00 to 22:30, 2 h booked: overtime 30 - 10 = 20 min × 300 = 6000; night 22:00-22:30
			// = 30 min × 150 = 4500. 39900 + 6000 + 4500 + 4900 = 55300; GST 9954. Total 65254.
			name: "overtime at night pays both", tariff: blr,
			start: at(0, 20, 0, 0), end: at(0, 22, 30, 0), booked: 2, surge: 1,
			want:      []wantLine{{"base", 39900}, {"overtime", 6000}, {"night", 4500}, {"convenience_fee", 4900}, {"gst", 9954}},
			wantTotal: 65254,
		},
		{
			// 4 h booked, ended after 1 h: billed the 4 booked hours, as the day trip: 88028.
			name: "trip ending early pays the booked hours", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 11, 0, 0), booked: 4, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 29800}, {"convenience_fee", 4900}, {"gst", 13428}},
			wantTotal: 88028,
		},
		{
			// Booked 20:00-24:00 but ended at 21:00: the booked span's night never happened. 88028.
			name: "trip ending early before night has no night line", tariff: blr,
			start: at(0, 20, 0, 0), end: at(0, 21, 0, 0), booked: 4, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 29800}, {"convenience_fee", 4900}, {"gst", 13428}},
			wantTotal: 88028,
		},
		{
			// 1 h booked is billed as the 2 base hours, and overtime starts after those: 52864.
			name: "booking below base hours covers the base hours", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 5, 0), booked: 1, surge: 1,
			want:      []wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}},
			wantTotal: 52864,
		},
		{
			// Surge 3.0 capped at 2.0: surge line 39900 × 1 = 39900. 39900 + 39900 + 4900 = 84700;
			// GST 15246. Total 99946.
			name: "surge above the cap is capped", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 0, 0), booked: 2, surge: 3,
			want:      []wantLine{{"base", 39900}, {"surge", 39900}, {"convenience_fee", 4900}, {"gst", 15246}},
			wantTotal: 99946,
		},
		{
			name: "infinite surge is capped", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 0, 0), booked: 2, surge: math.Inf(1),
			want:      []wantLine{{"base", 39900}, {"surge", 39900}, {"convenience_fee", 4900}, {"gst", 15246}},
			wantTotal: 99946,
		},
		{
			// 21:00 to 23:20, 2 h booked, surge 1.5: overtime 20 - 10 = 10 min × 300 = 3000; night
			// 22:00-23:20 = 80 min × 150 = 12000. Time charges 39900 + 3000 + 12000 = 54900, surge
			// × 0.5 = 27450. The fee is not surged: 54900 + 27450 + 4900 = 87250; GST 15705.
			// Total 102955.
			name: "surge covers base overtime and night, not the fee", tariff: blr,
			start: at(0, 21, 0, 0), end: at(0, 23, 20, 0), booked: 2, surge: 1.5,
			want:      []wantLine{{"base", 39900}, {"overtime", 3000}, {"night", 12000}, {"surge", 27450}, {"convenience_fee", 4900}, {"gst", 15705}},
			wantTotal: 102955,
		},
		{
			// 3 h, surge 1.333: 54800 × 0.333 = 18248.4 -> 18248. 54800 + 18248 + 4900 = 77948;
			// GST 14030.64 -> 14031. Total 91979.
			name: "surge and GST are rounded once each", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 13, 0, 0), booked: 3, surge: 1.333,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 14900}, {"surge", 18248}, {"convenience_fee", 4900}, {"gst", 14031}},
			wantTotal: 91979,
		},
		{
			// 10001 × 0.5 = 5000.5 -> 5001 (half up). 15002 × 18% = 2700.36 -> 2700. Total 17702.
			name: "surge rounds half a paisa up", tariff: halves,
			start: at(0, 10, 0, 0), end: at(0, 11, 0, 0), booked: 1, surge: 1.5,
			want:      []wantLine{{"base", 10001}, {"surge", 5001}, {"gst", 2700}},
			wantTotal: 17702,
		},
		{
			// 2475 × 18% = 445.5 -> 446 (half up). Total 2921.
			name: "GST rounds half a paisa up", tariff: gstHalf,
			start: at(0, 10, 0, 0), end: at(0, 11, 0, 0), booked: 1, surge: 1,
			want:      []wantLine{{"base", 2475}, {"gst", 446}},
			wantTotal: 2921,
		},
		{
			name: "surge of 1 has no surge line", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 0, 0), booked: 2, surge: 1,
			want:      []wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}},
			wantTotal: 52864,
		},
		{
			name: "surge below 1 has no surge line", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 0, 0), booked: 2, surge: 0.5,
			want:      []wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}},
			wantTotal: 52864,
		},
		{
			name: "NaN surge has no surge line", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 12, 0, 0), booked: 2, surge: math.NaN(),
			want:      []wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}},
			wantTotal: 52864,
		},
		{
			name: "end before start is a trip of no time", tariff: blr,
			start: at(0, 10, 0, 0), end: at(0, 9, 0, 0), booked: 2, surge: 1,
			want:      []wantLine{{"base", 39900}, {"convenience_fee", 4900}, {"gst", 8064}},
			wantTotal: 52864,
		},
		{
			// Mumbai, 3 h by day: 44900 + 16900 + 4900 = 66700; GST 12006. Total 78706.
			name: "another city prices with its own tariff", tariff: mustTariff(t, " Mumbai "),
			start: at(0, 10, 0, 0), end: at(0, 13, 0, 0), booked: 3, surge: 1,
			want:      []wantLine{{"base", 44900}, {"extra_hours", 16900}, {"convenience_fee", 4900}, {"gst", 12006}},
			wantTotal: 78706,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.tariff.Final(tt.start, tt.end, tt.booked, tt.surge)
			if g, w := lineString(got.Lines), wantString(tt.want); g != w {
				t.Errorf("lines: got %s, want %s", g, w)
			}
			if got.TotalPaise != tt.wantTotal {
				t.Errorf("total: got %d, want %d", got.TotalPaise, tt.wantTotal)
			}
			if got.Currency != "INR" {
				t.Errorf("currency: got %q, want INR", got.Currency)
			}
			checkFare(t, got)
		})
	}
}

func TestFareEstimate(t *testing.T) {
	blr := mustTariff(t, "bengaluru")
	tests := []struct {
		name      string
		start     time.Time
		hours     int
		surge     float64
		want      []wantLine
		wantTotal int64
	}{
		{
			// As the day trip of TestFareFinal: 88028.
			name: "day", start: at(0, 10, 0, 0), hours: 4, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 29800}, {"convenience_fee", 4900}, {"gst", 13428}},
			wantTotal: 88028,
		},
		{
			// 20:00 + 4 h: the booked span has night 22:00-24:00 = 120 min × 150 = 18000.
			// 39900 + 29800 + 18000 + 4900 = 92600; GST 16668. Total 109268.
			name: "booked span into the night", start: at(0, 20, 0, 0), hours: 4, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 29800}, {"night", 18000}, {"convenience_fee", 4900}, {"gst", 16668}},
			wantTotal: 109268,
		},
		{
			// As the trip across midnight of TestFareFinal: 96996.
			name: "across midnight", start: at(0, 21, 30, 0), hours: 3, surge: 1,
			want:      []wantLine{{"base", 39900}, {"extra_hours", 14900}, {"night", 22500}, {"convenience_fee", 4900}, {"gst", 14796}},
			wantTotal: 96996,
		},
		{
			// As the capped surge of TestFareFinal: 99946.
			name: "surge capped", start: at(0, 10, 0, 0), hours: 2, surge: 2.5,
			want:      []wantLine{{"base", 39900}, {"surge", 39900}, {"convenience_fee", 4900}, {"gst", 15246}},
			wantTotal: 99946,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := blr.Estimate(tt.start, tt.hours, tt.surge)
			if g, w := lineString(got.Lines), wantString(tt.want); g != w {
				t.Errorf("lines: got %s, want %s", g, w)
			}
			if got.TotalPaise != tt.wantTotal {
				t.Errorf("total: got %d, want %d", got.TotalPaise, tt.wantTotal)
			}
			checkFare(t, got)
		})
	}
}

func TestFareLabels(t *testing.T) {
	// The trip of "surge covers base overtime and night, not the fee".
	got := mustTariff(t, "bengaluru").Final(at(0, 21, 0, 0), at(0, 23, 20, 0), 3, 1.5)
	want := []string{
		"Base fare (first 2 h)",
		"Extra hours (1 h × ₹149)",
		"Night charge (80 min × ₹1.50)",
		"Surge ×1.5 on time charges",
		"Convenience fee",
		"GST 18%",
	}
	var labels []string
	for _, l := range got.Lines {
		labels = append(labels, l.Label)
	}
	if !slices.Equal(labels, want) {
		t.Errorf("got labels %q, want %q", labels, want)
	}
	over := mustTariff(t, "bengaluru").Final(at(0, 10, 0, 0), at(0, 12, 25, 30), 2, 1)
	if got, want := over.Lines[1].Label, "Overtime (16 min × ₹3 after 10 min grace)"; got != want {
		t.Errorf("got label %q, want %q", got, want)
	}
}

func TestFareJSON(t *testing.T) {
	f := mustTariff(t, "bengaluru").Estimate(at(0, 10, 0, 0), 2, 1)
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"currency":"INR","total_paise":52864,"lines":[{"code":"base","label":"Base fare (first 2 h)","amount_paise":39900},{"code":"convenience_fee","label":"Convenience fee","amount_paise":4900},{"code":"gst","label":"GST 18%","amount_paise":8064}]}`
	if string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}

var lineOrder = []string{LineBase, LineExtraHours, LineOvertime, LineNight, LineSurge, LineConvenienceFee, LineGST}

// checkFare asserts what holds for every fare: the lines add up to the total exactly, none is
// negative or zero, base comes first and the codes come in their documented order, once each.
func checkFare(t testing.TB, f Fare) {
	t.Helper()
	var sum int64
	last := -1
	for i, l := range f.Lines {
		sum += l.AmountPaise
		if l.AmountPaise <= 0 {
			t.Errorf("line %d %s: got %d paise, want > 0", i, l.Code, l.AmountPaise)
		}
		pos := slices.Index(lineOrder, l.Code)
		if pos <= last {
			t.Errorf("line %d: got code %q after %v, want the order %v", i, l.Code, lineString(f.Lines[:i]), lineOrder)
		}
		last = pos
	}
	if sum != f.TotalPaise {
		t.Errorf("got lines adding up to %d, want the total %d (%s)", sum, f.TotalPaise, lineString(f.Lines))
	}
	if len(f.Lines) == 0 || f.Lines[0].Code != LineBase {
		t.Errorf("got lines %s, want base first", lineString(f.Lines))
	}
}

func amount(f Fare, code string) int64 {
	for _, l := range f.Lines {
		if l.Code == code {
			return l.AmountPaise
		}
	}
	return 0
}

// TestFareProperties prices many random trips in every shipped city.
func TestFareProperties(t *testing.T) {
	ts := DefaultTariffs()
	r := rand.New(rand.NewPCG(20250710, 1))
	surges := []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, 0, 1, 1.0000001, 2, 1e300}
	from := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	to := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).Unix()
	n := 20000
	if testing.Short() {
		n = 2000
	}
	for city, tr := range ts.Cities {
		for range n / len(ts.Cities) {
			start := time.Unix(from+r.Int64N(to-from), r.Int64N(1e9))
			span := time.Duration(r.Int64N(int64(31*time.Hour))) - time.Hour
			end := start.Add(span)
			booked := r.IntN(26)
			surge := 0.5 + 3*r.Float64()
			if r.IntN(4) == 0 {
				surge = surges[r.IntN(len(surges))]
			}
			name := fmt.Sprintf("%s from %s to %s booked %d surge %v", city, start.Format(time.RFC3339Nano), end.Format(time.RFC3339Nano), booked, surge)

			f := tr.Final(start, end, booked, surge)
			checkFare(t, f)

			// A later end never costs less; nor does a higher surge.
			later := tr.Final(start, end.Add(time.Duration(r.Int64N(int64(3*time.Hour)))), booked, surge)
			if later.TotalPaise < f.TotalPaise {
				t.Errorf("%s: got %d for a longer trip, want at least %d", name, later.TotalPaise, f.TotalPaise)
			}
			if !math.IsNaN(surge) {
				higher := tr.Final(start, end, booked, surge+r.Float64())
				if higher.TotalPaise < f.TotalPaise {
					t.Errorf("%s: got %d with a higher surge, want at least %d", name, higher.TotalPaise, f.TotalPaise)
				}
			}
			// Night minutes never exceed the trip's started minutes.
			if span > 0 && amount(f, LineNight) > startedMinutes(span)*tr.NightMinutePaise {
				t.Errorf("%s: got night %d, want at most %d", name, amount(f, LineNight), startedMinutes(span)*tr.NightMinutePaise)
			}

			// Estimate is Final over the booked span, with no overtime.
			e := tr.Estimate(start, booked, surge)
			if w := tr.Final(start, start.Add(time.Duration(booked)*time.Hour), booked, surge); !reflect.DeepEqual(e, w) {
				t.Errorf("%s: got estimate %s, want %s", name, lineString(e.Lines), lineString(w.Lines))
			}
			if amount(e, LineOvertime) != 0 {
				t.Errorf("%s: got estimate overtime %d, want 0", name, amount(e, LineOvertime))
			}
			checkFare(t, e)
		}
	}
}

// nightTimeByDays is a slow reference for nightTime: it intersects the trip with each night
// window [22:00, 06:00 next day) in IST, day by day.
func nightTimeByDays(start, end time.Time) time.Duration {
	var total time.Duration
	s := start.In(testIST)
	day := time.Date(s.Year(), s.Month(), s.Day()-1, 0, 0, 0, 0, testIST)
	for ; day.Before(end); day = day.AddDate(0, 0, 1) {
		from := day.Add(22 * time.Hour)
		until := day.Add(30 * time.Hour)
		lo, hi := start, end
		if from.After(lo) {
			lo = from
		}
		if until.Before(hi) {
			hi = until
		}
		if hi.After(lo) {
			total += hi.Sub(lo)
		}
	}
	return total
}

func TestFareNightTime(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	base := time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC) // before 1970, to cover negative Unix times
	for range 5000 {
		start := base.Add(time.Duration(r.Int64N(int64(100 * 365 * 24 * time.Hour))))
		end := start.Add(time.Duration(r.Int64N(int64(80 * time.Hour))))
		if got, want := nightTime(start, end), nightTimeByDays(start, end); got != want {
			t.Fatalf("from %s to %s: got %s, want %s", start, end, got, want)
		}
	}
}

func TestFareHugeInputsStayExact(t *testing.T) {
	tr := Tariff{City: "x", BaseHours: 24, BasePaise: maxRatePaise, ExtraHourPaise: maxRatePaise,
		OvertimeMinutePaise: maxRatePaise, NightMinutePaise: maxRatePaise, SurgeCap: maxSurgeCap,
		ConvenienceFee: maxRatePaise, GSTBasisPoints: bpOne}
	if err := tr.Validate(); err != nil {
		t.Fatalf("got %v, want a valid tariff", err)
	}
	start := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	end := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, booked := range []int{math.MinInt, 0, math.MaxInt} {
		f := tr.Final(start, end, booked, math.MaxFloat64)
		checkFare(t, f)
		e := tr.Estimate(start, booked, math.MaxFloat64)
		checkFare(t, e)
	}
}

func TestTariffsDefault(t *testing.T) {
	ts := DefaultTariffs()
	if ts.Version == "" {
		t.Errorf("got no version, want one")
	}
	for _, city := range []string{"bengaluru", "delhi", "mumbai", "hyderabad", "pune", "chennai"} {
		tr, err := ts.For(city)
		if err != nil {
			t.Errorf("For(%q): got %v, want a tariff", city, err)
			continue
		}
		if tr.City != city {
			t.Errorf("For(%q): got city %q, want %q", city, tr.City, city)
		}
		if err := tr.Validate(); err != nil {
			t.Errorf("For(%q): got %v, want valid", city, err)
		}
	}
	want := Tariff{City: "bengaluru", BaseHours: 2, BasePaise: 39900, ExtraHourPaise: 14900,
		OvertimeGraceMinutes: 10, OvertimeMinutePaise: 300, NightMinutePaise: 150, SurgeCap: 2,
		ConvenienceFee: 4900, GSTBasisPoints: 1800, Name: "Bengaluru", GSTIN: "29AAAAA0000A1Z5", InvoicePrefix: "BLR",
		Surge: SurgePolicy{WindowMinutes: 15, MinDemand: 3, HysteresisPercent: 20, Steps: []SurgeStep{
			{Ratio: 1.5, Multiplier: 1.2}, {Ratio: 2, Multiplier: 1.5}, {Ratio: 3, Multiplier: 1.75}, {Ratio: 4, Multiplier: 2}}},
		Cancellation:        CancellationPolicy{GraceMinutes: 5, FreeBeforeStartMinutes: 120, AssignedFeePaise: 7500, ArrivedFeePaise: 15000},
		TravelBufferMinutes: 45}
	if got := DefaultTariff(); !reflect.DeepEqual(got, want) {
		t.Errorf("DefaultTariff: got %+v, want %+v", got, want)
	}

	// Each call is a copy: changing one does not change the next.
	ts.Cities["bengaluru"] = Tariff{}
	delete(ts.Cities, "pune")
	if got := DefaultTariffs(); !reflect.DeepEqual(got.Cities["bengaluru"], want) || len(got.Cities) != 6 {
		t.Errorf("got %+v after changing an earlier copy, want the embedded tariffs", got.Cities)
	}

	// What Tariffs marshals to, LoadTariffs reads back unchanged.
	b, err := json.Marshal(DefaultTariffs())
	if err != nil {
		t.Fatal(err)
	}
	back, err := LoadTariffs(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("LoadTariffs of marshalled tariffs: got %v, want nil", err)
	}
	if !reflect.DeepEqual(back, DefaultTariffs()) {
		t.Errorf("got %+v, want %+v", back, DefaultTariffs())
	}
}

func TestTariffsFor(t *testing.T) {
	ts := DefaultTariffs()
	var none *Tariffs
	tests := []struct {
		name     string
		ts       *Tariffs
		city     string
		wantCity string
		wantErr  error
	}{
		{"exact", ts, "delhi", "delhi", nil},
		{"case and spaces ignored", ts, "  Hyderabad\t", "hyderabad", nil},
		{"empty is the default", ts, "", "bengaluru", nil},
		{"unknown city", ts, "kolkata", "", ErrInvalid},
		{"nil tariffs answers from the embedded ones", none, "pune", "pune", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.ts.For(tt.city)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got error %v, want %v", err, tt.wantErr)
			}
			if got.City != tt.wantCity {
				t.Errorf("got city %q, want %q", got.City, tt.wantCity)
			}
		})
	}
}

// tariffsDoc is the embedded tariffs.json as generic JSON, for a test to break.
func tariffsDoc(t testing.TB) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(tariffsJSON, &doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func city(doc map[string]any, name string) map[string]any {
	return doc["cities"].(map[string]any)[name].(map[string]any)
}

func TestLoadTariffsRefuses(t *testing.T) {
	tests := []struct {
		name string
		// edit breaks a copy of the shipped file; raw, when set, is the whole input instead.
		edit func(doc map[string]any)
		raw  string
		// wantIn is a part of the message that tells the operator what to fix.
		wantIn string
	}{
		{name: "missing base price", edit: func(d map[string]any) { delete(city(d, "pune"), "base_paise") }, wantIn: `city "pune": missing base_paise`},
		{name: "missing base hours", edit: func(d map[string]any) { delete(city(d, "delhi"), "base_hours") }, wantIn: "missing base_hours"},
		{name: "zero base price", edit: func(d map[string]any) { city(d, "pune")["base_paise"] = 0 }, wantIn: "base_paise is 0"},
		{name: "base hours above a day", edit: func(d map[string]any) { city(d, "pune")["base_hours"] = 25 }, wantIn: "base_hours is 25"},
		{name: "negative extra hour rate", edit: func(d map[string]any) { city(d, "mumbai")["extra_hour_paise"] = -1 }, wantIn: "extra_hour_paise is -1"},
		{name: "negative overtime rate", edit: func(d map[string]any) { city(d, "mumbai")["overtime_minute_paise"] = -300 }, wantIn: "overtime_minute_paise is -300"},
		{name: "negative night rate", edit: func(d map[string]any) { city(d, "chennai")["night_minute_paise"] = -150 }, wantIn: "night_minute_paise is -150"},
		{name: "negative fee", edit: func(d map[string]any) { city(d, "chennai")["convenience_fee_paise"] = -1 }, wantIn: "convenience_fee_paise is -1"},
		{name: "negative grace", edit: func(d map[string]any) { city(d, "chennai")["overtime_grace_minutes"] = -10 }, wantIn: "overtime_grace_minutes is -10"},
		{name: "absurd rate", edit: func(d map[string]any) { city(d, "chennai")["night_minute_paise"] = 1e12 }, wantIn: "night_minute_paise is 1000000000000"},
		{name: "surge cap below 1", edit: func(d map[string]any) { city(d, "bengaluru")["surge_cap"] = 0.9 }, wantIn: "surge_cap is 0.9"},
		{name: "surge cap missing", edit: func(d map[string]any) { delete(city(d, "bengaluru"), "surge_cap") }, wantIn: "missing surge_cap"},
		{name: "GST above 100%", edit: func(d map[string]any) { city(d, "bengaluru")["gst_basis_points"] = 10001 }, wantIn: "gst_basis_points is 10001"},
		{name: "negative GST", edit: func(d map[string]any) { city(d, "bengaluru")["gst_basis_points"] = -1800 }, wantIn: "gst_basis_points is -1800"},
		{name: "unknown default city", edit: func(d map[string]any) { d["default"] = "kolkata" }, wantIn: `default city "kolkata"`},
		{name: "missing default", edit: func(d map[string]any) { delete(d, "default") }, wantIn: "default is missing"},
		{name: "missing version", edit: func(d map[string]any) { delete(d, "version") }, wantIn: "version is missing"},
		{name: "blank version", edit: func(d map[string]any) { d["version"] = " " }, wantIn: "version is missing"},
		{name: "no cities", edit: func(d map[string]any) { d["cities"] = map[string]any{} }, wantIn: "cities is missing"},
		{name: "upper-case city", edit: func(d map[string]any) {
			c := d["cities"].(map[string]any)
			c["Pune"] = c["pune"]
			delete(c, "pune")
		}, wantIn: `city "Pune": name must be lower case`},
		{name: "null city", edit: func(d map[string]any) { d["cities"].(map[string]any)["pune"] = nil }, wantIn: `city "pune": tariff is null`},
		{name: "city field disagrees with key", edit: func(d map[string]any) { city(d, "pune")["city"] = "mumbai" }, wantIn: `city is "mumbai"`},
		{name: "misspelt field", edit: func(d map[string]any) { city(d, "pune")["night_paise"] = 150 }, wantIn: `unknown field "night_paise"`},
		{name: "wrong type", edit: func(d map[string]any) { city(d, "pune")["base_paise"] = "399" }, wantIn: "base_paise"},
		{name: "fractional paise", edit: func(d map[string]any) { city(d, "pune")["base_paise"] = 399.5 }, wantIn: "base_paise"},
		{name: "not JSON", raw: "version: 1", wantIn: "invalid character"},
		{name: "empty", raw: "", wantIn: "EOF"},
		{name: "data after the object", raw: string(tariffsJSON) + "{}", wantIn: "data after"},
		{name: "too large", raw: string(tariffsJSON) + strings.Repeat(" ", maxTariffBytes), wantIn: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.raw)
			if tt.edit != nil {
				doc := tariffsDoc(t)
				tt.edit(doc)
				var err error
				if in, err = json.Marshal(doc); err != nil {
					t.Fatal(err)
				}
			}
			ts, err := LoadTariffs(bytes.NewReader(in))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got error %v, want ErrInvalid", err)
			}
			if ts != nil {
				t.Errorf("got tariffs %+v with the error, want nil", ts)
			}
			if !strings.Contains(err.Error(), tt.wantIn) {
				t.Errorf("got message %q, want it to mention %q", err, tt.wantIn)
			}
		})
	}
}

func TestLoadTariffsReportsEveryProblem(t *testing.T) {
	doc := tariffsDoc(t)
	city(doc, "pune")["night_minute_paise"] = -1
	city(doc, "delhi")["surge_cap"] = 0.5
	doc["default"] = "kolkata"
	in, _ := json.Marshal(doc)
	_, err := LoadTariffs(bytes.NewReader(in))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v, want ErrInvalid", err)
	}
	for _, want := range []string{`"pune"`, `"delhi"`, `"kolkata"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got message %q, want it to mention %s", err, want)
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

func TestLoadTariffsReadError(t *testing.T) {
	_, err := LoadTariffs(failingReader{})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Errorf("got %v wrapping ErrInvalid, want a read error only", err)
	}
}

func FuzzLoadTariffs(f *testing.F) {
	f.Add(tariffsJSON)
	f.Add([]byte(`{"version":"1","default":"x","cities":{"x":{"base_hours":1,"base_paise":1,"extra_hour_paise":0,"overtime_grace_minutes":0,"overtime_minute_paise":0,"night_minute_paise":0,"surge_cap":1,"convenience_fee_paise":0,"gst_basis_points":0}}}`))
	f.Add([]byte(`{"version":"1","default":"x","cities":{"x":null}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, err := LoadTariffs(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v, want ErrInvalid", err)
			}
			return
		}
		if _, err := ts.For(""); err != nil {
			t.Fatalf("For the default: got %v, want a tariff", err)
		}
		start := at(0, 20, 17, 3)
		for _, tr := range ts.Cities {
			if err := tr.Validate(); err != nil {
				t.Fatalf("loaded an invalid tariff: %v", err)
			}
			checkFare(t, tr.Final(start, start.Add(5*time.Hour+7*time.Minute), 3, 1.7))
			checkFare(t, tr.Estimate(start, 24, math.Inf(1)))
		}
	})
}

func FuzzFareFinal(f *testing.F) {
	f.Add(at(0, 21, 30, 0).UnixNano(), int64(3*time.Hour), 3, 1.0)
	f.Add(at(0, 10, 0, 0).UnixNano(), int64(2*time.Hour+25*time.Minute), 2, 3.0)
	f.Add(int64(0), int64(-1), 0, math.NaN())
	tr := mustTariff(f, "bengaluru")
	f.Fuzz(func(t *testing.T, startNano, spanNano int64, booked int, surge float64) {
		start := time.Unix(0, startNano)
		checkFare(t, tr.Final(start, start.Add(time.Duration(spanNano)), booked, surge))
		checkFare(t, tr.Estimate(start, booked, surge))
	})
}
