package dispatch

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Codes of the lines of a Fare, in the order they appear. A line whose amount is zero is left
// out, but for LineBase, which is always first.
const (
	LineBase           = "base"            // BasePaise for the first BaseHours
	LineExtraHours     = "extra_hours"     // booked hours beyond BaseHours
	LineOvertime       = "overtime"        // minutes past the booked hours and the grace period
	LineNight          = "night"           // minutes of the trip inside 22:00-06:00 IST
	LineSurge          = "surge"           // the surge on the four lines above
	LineConvenienceFee = "convenience_fee" // flat, never surged
	LineGST            = "gst"             // on everything above, always last
)

// MaxBillableHours bounds what Final bills: a booking or a trip longer than this (a year) is
// billed as this long. Such inputs are refused upstream (a booking is 1 to 24 hours); the bound
// keeps every line exact and non-negative in int64 whatever a caller passes.
const MaxBillableHours = 366 * 24

// Bounds LoadTariffs and Tariff.Validate enforce. They are far beyond any real price; they exist
// so that no product in Final can overflow int64.
const (
	maxRatePaise   = 100_000_00 // ₹1,00,000 per unit (hour, minute, trip)
	maxGraceMin    = 240
	maxSurgeCap    = 10.0
	maxBaseHours   = 24
	maxTariffBytes = 1 << 20
	bpOne          = 10_000 // 100% in basis points
)

// ist is India Standard Time. India keeps no daylight saving time, so a fixed zone is exact and
// needs no tzdata on the host.
const istOffset = 5*3600 + 1800

var ist = time.FixedZone("IST", istOffset)

// FareLine is one line of a fare breakdown. Lines of a Fare add up to its TotalPaise.
type FareLine struct {
	Code        string `json:"code"`
	Label       string `json:"label"`
	AmountPaise int64  `json:"amount_paise"`
}

// Fare is a price in paise with its breakdown (API.md "Fare").
//
// Money is integer paise (1/100 rupee), never float64: a float cannot hold most decimal
// amounts exactly (₹0.10 is not a binary fraction), so sums of float lines drift by fractions of
// a paisa and the total shown would not equal the sum of the lines shown, or what the payment
// gateway, the GST invoice and the driver's payout compute. With int64 paise, sums are exact.
//
// Rounding happens in exactly two places, each once, half a paisa up: the surge line (a
// fractional multiplier times the time charges) and the GST line (basis points times the
// taxable subtotal), GST last. Every other line is a whole number of units (hours, started
// minutes) times an integer rate, so it is exact. TotalPaise is the integer sum of the lines;
// nothing is rounded after the lines are made, so the lines always add up to the total.
type Fare struct {
	Currency   string     `json:"currency"`
	TotalPaise int64      `json:"total_paise"`
	Lines      []FareLine `json:"lines"`
}

// Tariff prices hours of a driver's time in one city. All amounts are in paise. A Tariff from
// LoadTariffs or DefaultTariffs is valid; one built by hand should pass Validate first, since
// Final trusts its rates (a negative rate makes a negative line).
type Tariff struct {
	City string `json:"city"`
	// BaseHours is the minimum billed; BasePaise covers them.
	BaseHours int   `json:"base_hours"`
	BasePaise int64 `json:"base_paise"`
	// ExtraHourPaise is charged for each booked hour beyond BaseHours.
	ExtraHourPaise int64 `json:"extra_hour_paise"`
	// OvertimeGraceMinutes past the booked hours are free; each started minute after them costs
	// OvertimeMinutePaise.
	OvertimeGraceMinutes int   `json:"overtime_grace_minutes"`
	OvertimeMinutePaise  int64 `json:"overtime_minute_paise"`
	// NightMinutePaise is charged for each started minute of the trip inside 22:00-06:00 IST.
	NightMinutePaise int64 `json:"night_minute_paise"`
	// SurgeCap is the highest surge multiplier applied (1 means never any surge).
	SurgeCap       float64 `json:"surge_cap"`
	ConvenienceFee int64   `json:"convenience_fee_paise"`
	GSTBasisPoints int64   `json:"gst_basis_points"` // 1800 is 18%

	// The fields below are optional in tariffs.json, so that a price list written before they
	// existed still loads: no name is the key, no surge steps never surge, no cancellation
	// policy never charges a cancel, no GSTIN prints none, no invoice prefix is the key's first
	// three letters in capitals.

	// Name is the city as shown to people ("Bengaluru").
	Name string `json:"name,omitempty"`
	// GSTIN is the business's GST registration in the city's state, printed on its invoices.
	GSTIN string `json:"gstin,omitempty"`
	// InvoicePrefix starts the city's invoice numbers ("BLR" in BLR/2627/000001).
	InvoicePrefix string `json:"invoice_prefix,omitempty"`
	// Surge is the city's published surge steps (surge.go).
	Surge SurgePolicy `json:"surge"`
	// Cancellation is what a cancel costs the customer (cancel.go).
	Cancellation CancellationPolicy `json:"cancellation"`
	// TravelBufferMinutes is how long after a booking's hours its driver's calendar stays
	// blocked, to reach the next pickup (tariffs.json travel_buffer_minutes; default 30).
	TravelBufferMinutes int `json:"travel_buffer_minutes"`
}

// Validate reports every field out of range, each error wrapping ErrInvalid.
func (t Tariff) Validate() error {
	var errs []error
	bad := func(field string, v any, want string) {
		errs = append(errs, fmt.Errorf("%s is %v, want %s: %w", field, v, want, ErrInvalid))
	}
	if t.BaseHours < 1 || t.BaseHours > maxBaseHours {
		bad("base_hours", t.BaseHours, fmt.Sprintf("1 to %d", maxBaseHours))
	}
	if t.BasePaise < 1 || t.BasePaise > maxRatePaise {
		bad("base_paise", t.BasePaise, fmt.Sprintf("1 to %d", maxRatePaise))
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"extra_hour_paise", t.ExtraHourPaise},
		{"overtime_minute_paise", t.OvertimeMinutePaise},
		{"night_minute_paise", t.NightMinutePaise},
		{"convenience_fee_paise", t.ConvenienceFee},
	} {
		if f.v < 0 || f.v > maxRatePaise {
			bad(f.name, f.v, fmt.Sprintf("0 to %d", maxRatePaise))
		}
	}
	if t.OvertimeGraceMinutes < 0 || t.OvertimeGraceMinutes > maxGraceMin {
		bad("overtime_grace_minutes", t.OvertimeGraceMinutes, fmt.Sprintf("0 to %d", maxGraceMin))
	}
	// Written so that NaN fails too.
	if !(t.SurgeCap >= 1 && t.SurgeCap <= maxSurgeCap) {
		bad("surge_cap", t.SurgeCap, fmt.Sprintf("1 to %g", maxSurgeCap))
	}
	if t.TravelBufferMinutes < 0 || t.TravelBufferMinutes > 240 {
		bad("travel_buffer_minutes", t.TravelBufferMinutes, "0 to 240")
	}
	if t.GSTBasisPoints < 0 || t.GSTBasisPoints > bpOne {
		bad("gst_basis_points", t.GSTBasisPoints, fmt.Sprintf("0 to %d", bpOne))
	}
	if len(t.Name) > 100 {
		bad("name", len(t.Name), "at most 100 characters")
	}
	if len(t.GSTIN) > 15 {
		bad("gstin", t.GSTIN, "at most 15 characters")
	}
	if !validInvoicePrefix(t.InvoicePrefix) {
		bad("invoice_prefix", t.InvoicePrefix, "1 to 4 capital letters or digits, or absent")
	}
	errs = append(errs, t.Surge.validate(), t.Cancellation.validate())
	return errors.Join(errs...)
}

// Estimate is the fare quoted at booking time for hours starting at start: Final over exactly
// the booked span, so with no overtime, and with the night charge for the booked minutes that
// fall inside 22:00-06:00 IST.
func (t Tariff) Estimate(start time.Time, hours int, surge float64) Fare {
	hours = min(max(hours, 0), MaxBillableHours)
	return t.Final(start, start.Add(time.Duration(hours)*time.Hour), hours, surge)
}

// Final is the fare for a trip that ran from start to end on a booking of bookedHours:
//
//   - base: BasePaise, covering BaseHours;
//   - extra_hours: ExtraHourPaise for each booked hour beyond BaseHours. A trip that ends early
//     still pays its booked hours;
//   - overtime: the trip past the covered hours (the booked hours, at least BaseHours) is free
//     for OvertimeGraceMinutes; each started minute after that costs OvertimeMinutePaise;
//   - night: NightMinutePaise for each started minute of the actual trip inside 22:00-06:00 IST
//     (an overtime minute at night pays both);
//   - surge: when surge > 1, the sum of the four time charges above times (surge-1), surge
//     capped at SurgeCap and taken to 4 decimals. Surge <= 1 or NaN: no surge line. The
//     convenience fee and GST are never surged;
//   - convenience_fee: flat;
//   - gst: GSTBasisPoints of the sum of all the lines above.
//
// Lines of zero are left out, but for base. end before start counts as a trip of no time;
// bookedHours below BaseHours (zero included) is billed as BaseHours; spans beyond
// MaxBillableHours are billed as MaxBillableHours. Rounding: see Fare.
func (t Tariff) Final(start, end time.Time, bookedHours int, surge float64) Fare {
	covered := min(max(bookedHours, t.BaseHours), MaxBillableHours)
	span := min(max(end.Sub(start), 0), MaxBillableHours*time.Hour)
	end = start.Add(span)

	f := Fare{Currency: "INR", Lines: make([]FareLine, 0, 7)}
	add := func(code, label string, paise int64) {
		f.Lines = append(f.Lines, FareLine{Code: code, Label: label, AmountPaise: paise})
		f.TotalPaise += paise
	}

	add(LineBase, fmt.Sprintf("Base fare (first %d h)", t.BaseHours), t.BasePaise)
	if h := int64(covered - t.BaseHours); h > 0 && t.ExtraHourPaise > 0 {
		add(LineExtraHours, fmt.Sprintf("Extra hours (%d h × %s)", h, rupees(t.ExtraHourPaise)), h*t.ExtraHourPaise)
	}
	if over := span - time.Duration(covered)*time.Hour - time.Duration(t.OvertimeGraceMinutes)*time.Minute; over > 0 && t.OvertimeMinutePaise > 0 {
		m := startedMinutes(over)
		add(LineOvertime, fmt.Sprintf("Overtime (%d min × %s after %d min grace)", m, rupees(t.OvertimeMinutePaise), t.OvertimeGraceMinutes), m*t.OvertimeMinutePaise)
	}
	if night := nightTime(start, end); night > 0 && t.NightMinutePaise > 0 {
		m := startedMinutes(night)
		add(LineNight, fmt.Sprintf("Night charge (%d min × %s)", m, rupees(t.NightMinutePaise)), m*t.NightMinutePaise)
	}
	if bp := t.surgeBasisPoints(surge); bp > 0 {
		if s := applyBasisPoints(f.TotalPaise, bp); s > 0 {
			add(LineSurge, fmt.Sprintf("Surge ×%s on time charges", decimalBP(bpOne+bp)), s)
		}
	}
	if t.ConvenienceFee > 0 {
		add(LineConvenienceFee, "Convenience fee", t.ConvenienceFee)
	}
	if g := applyBasisPoints(f.TotalPaise, t.GSTBasisPoints); g > 0 {
		add(LineGST, fmt.Sprintf("GST %s%%", decimalBP(t.GSTBasisPoints*100)), g)
	}
	return f
}

// surgeBasisPoints is the surge above 1 in basis points (5000 for ×1.5), 0 for no surge.
func (t Tariff) surgeBasisPoints(surge float64) int64 {
	s := min(surge, t.SurgeCap, maxSurgeCap)
	if !(s > 1) { // NaN included, from either side
		return 0
	}
	return int64(math.Round(s*bpOne)) - bpOne
}

// applyBasisPoints is a*bp/10000 rounded half up, for a, bp >= 0. Splitting a keeps the
// products small: q*bp is exact and only r*bp/10000 carries a fraction.
func applyBasisPoints(a, bp int64) int64 {
	if a <= 0 || bp <= 0 {
		return 0
	}
	q, r := a/bpOne, a%bpOne
	return q*bp + (r*bp+bpOne/2)/bpOne
}

// startedMinutes counts each begun minute of d > 0.
func startedMinutes(d time.Duration) int64 {
	return int64((d + time.Minute - 1) / time.Minute)
}

// Night is 22:00 to 06:00 IST: in each IST day, [00:00, 06:00) and [22:00, 24:00).
const (
	nightEnds   = 6 * time.Hour
	nightStarts = 22 * time.Hour
	nightPerDay = nightEnds + 24*time.Hour - nightStarts
)

// nightTime is how much of [start, end) lies inside 22:00-06:00 IST, for end - start of at most
// MaxBillableHours. It counts night time from a fixed origin to each end and subtracts, so it
// costs the same for a trip of an hour or of a year.
func nightTime(start, end time.Time) time.Duration {
	d0, p0 := nightSinceEpoch(start)
	d1, p1 := nightSinceEpoch(end)
	return time.Duration(d1-d0)*nightPerDay + p1 - p0
}

// nightSinceEpoch splits the night time from the IST midnight that began 1970-01-01 up to t into
// whole IST days and the night part of t's own day.
func nightSinceEpoch(t time.Time) (days int64, part time.Duration) {
	sec := t.Unix() + istOffset
	days = sec / 86400
	if sec%86400 < 0 {
		days--
	}
	tod := time.Duration(sec-days*86400)*time.Second + time.Duration(t.Nanosecond())
	return days, min(tod, nightEnds) + max(tod-nightStarts, 0)
}

// rupees formats paise for a label: ₹149, ₹1.50.
func rupees(p int64) string {
	if p%100 == 0 {
		return "₹" + strconv.FormatInt(p/100, 10)
	}
	return fmt.Sprintf("₹%d.%02d", p/100, p%100)
}

// decimalBP formats basis points as a plain decimal without trailing zeros: 15000 -> "1.5".
func decimalBP(bp int64) string {
	return strconv.FormatFloat(float64(bp)/bpOne, 'f', -1, 64)
}

// defaultTravelBufferMinutes is a city's travel buffer when tariffs.json gives none.
const defaultTravelBufferMinutes = 30

// DefaultTariff is the tariff of the default city of DefaultTariffs (Bengaluru), for callers
// that have no configuration.
func DefaultTariff() Tariff {
	t, err := DefaultTariffs().For("")
	if err != nil {
		panic(err) // cannot happen: LoadTariffs checked that the default city exists
	}
	return t
}

// Tariffs is a versioned set of city tariffs (dispatch/tariffs.json is the shipped one). It is
// read-only once loaded and then safe for concurrent use.
type Tariffs struct {
	// Version names this price list; record it with what was priced from it.
	Version string `json:"version"`
	// Default is the city used when a caller names none.
	Default string `json:"default"`
	// Cities are keyed by lower-case city name; each Tariff's City equals its key.
	Cities map[string]Tariff `json:"cities"`
}

//go:embed tariffs.json
var tariffsJSON []byte

var embeddedTariffs = sync.OnceValues(func() (*Tariffs, error) {
	return LoadTariffs(bytes.NewReader(tariffsJSON))
})

// DefaultTariffs is the price list embedded from dispatch/tariffs.json. Each call returns a
// copy the caller may change. It panics if the embedded file is invalid, which the package's
// tests rule out before it can ship.
func DefaultTariffs() *Tariffs {
	ts, err := embeddedTariffs()
	if err != nil {
		panic("dispatch: embedded tariffs.json: " + err.Error())
	}
	c := *ts
	c.Cities = maps.Clone(ts.Cities)
	return &c
}

// For is the tariff of city, matched without regard to case or surrounding spaces; "" is the
// default city. A city with no tariff is an error wrapping ErrInvalid: the service does not
// price trips there, which is the request's problem, not a missing resource. A nil *Tariffs
// answers from DefaultTariffs.
func (ts *Tariffs) For(city string) (Tariff, error) {
	if ts == nil {
		ts = DefaultTariffs()
	}
	key := normalizeCity(city)
	if key == "" {
		key = ts.Default
	}
	t, ok := ts.Cities[key]
	if !ok {
		return Tariff{}, fmt.Errorf("no tariff for city %q in tariffs %q: %w", city, ts.Version, ErrInvalid)
	}
	return t, nil
}

func normalizeCity(city string) string {
	return strings.ToLower(strings.TrimSpace(city))
}

// tariffsFile is tariffs.json as written, pointers telling a missing field from a zero.
type tariffsFile struct {
	Version *string                `json:"version"`
	Default *string                `json:"default"`
	Cities  map[string]*tariffJSON `json:"cities"`
}

type tariffJSON struct {
	City                 *string  `json:"city"`
	BaseHours            *int     `json:"base_hours"`
	BasePaise            *int64   `json:"base_paise"`
	ExtraHourPaise       *int64   `json:"extra_hour_paise"`
	OvertimeGraceMinutes *int     `json:"overtime_grace_minutes"`
	OvertimeMinutePaise  *int64   `json:"overtime_minute_paise"`
	NightMinutePaise     *int64   `json:"night_minute_paise"`
	SurgeCap             *float64 `json:"surge_cap"`
	ConvenienceFee       *int64   `json:"convenience_fee_paise"`
	GSTBasisPoints       *int64   `json:"gst_basis_points"`
	// Optional (see Tariff).
	Name                string             `json:"name"`
	GSTIN               string             `json:"gstin"`
	InvoicePrefix       string             `json:"invoice_prefix"`
	Surge               SurgePolicy        `json:"surge"`
	Cancellation        CancellationPolicy `json:"cancellation"`
	TravelBufferMinutes *int               `json:"travel_buffer_minutes"`
}

// LoadTariffs reads a price list in the format of dispatch/tariffs.json (at most 1 MiB). Every
// field of every city is required (a zero rate must be written as 0), unknown fields are
// refused, and every problem found is reported at once; each wraps ErrInvalid. An error reading
// r is returned as it is, without ErrInvalid.
func LoadTariffs(r io.Reader) (*Tariffs, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxTariffBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read tariffs: %w", err)
	}
	if len(data) > maxTariffBytes {
		return nil, fmt.Errorf("tariffs: larger than %d bytes: %w", maxTariffBytes, ErrInvalid)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f tariffsFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("tariffs: %w: %w", err, ErrInvalid)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("tariffs: data after the top-level object: %w", ErrInvalid)
	}

	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("tariffs: "+format+": %w", append(a, ErrInvalid)...))
	}
	ts := &Tariffs{Cities: make(map[string]Tariff, len(f.Cities))}
	if f.Version == nil || strings.TrimSpace(*f.Version) == "" {
		bad("version is missing")
	} else {
		ts.Version = *f.Version
	}
	if len(f.Cities) == 0 {
		bad("cities is missing or empty")
	}
	keys := make([]string, 0, len(f.Cities))
	for k := range f.Cities {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		t, err := decodeTariff(key, f.Cities[key])
		if err != nil {
			errs = append(errs, fmt.Errorf("tariffs: city %q: %w", key, err))
			continue
		}
		ts.Cities[key] = t
	}
	switch {
	case f.Default == nil || *f.Default == "":
		bad("default is missing")
	case f.Cities[*f.Default] == nil:
		bad("default city %q is not among the cities", *f.Default)
	default:
		ts.Default = *f.Default
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ts, nil
}

func decodeTariff(key string, j *tariffJSON) (Tariff, error) {
	if key == "" || key != normalizeCity(key) {
		return Tariff{}, fmt.Errorf("name must be lower case with no surrounding spaces: %w", ErrInvalid)
	}
	if j == nil {
		return Tariff{}, fmt.Errorf("tariff is null: %w", ErrInvalid)
	}
	if j.City != nil && *j.City != key {
		return Tariff{}, fmt.Errorf("city is %q, want %q or absent: %w", *j.City, key, ErrInvalid)
	}
	var missing []string
	need := func(name string, present bool) {
		if !present {
			missing = append(missing, name)
		}
	}
	need("base_hours", j.BaseHours != nil)
	need("base_paise", j.BasePaise != nil)
	need("extra_hour_paise", j.ExtraHourPaise != nil)
	need("overtime_grace_minutes", j.OvertimeGraceMinutes != nil)
	need("overtime_minute_paise", j.OvertimeMinutePaise != nil)
	need("night_minute_paise", j.NightMinutePaise != nil)
	need("surge_cap", j.SurgeCap != nil)
	need("convenience_fee_paise", j.ConvenienceFee != nil)
	need("gst_basis_points", j.GSTBasisPoints != nil)
	if len(missing) > 0 {
		return Tariff{}, fmt.Errorf("missing %s: %w", strings.Join(missing, ", "), ErrInvalid)
	}
	t := Tariff{
		City:                 key,
		BaseHours:            *j.BaseHours,
		BasePaise:            *j.BasePaise,
		ExtraHourPaise:       *j.ExtraHourPaise,
		OvertimeGraceMinutes: *j.OvertimeGraceMinutes,
		OvertimeMinutePaise:  *j.OvertimeMinutePaise,
		NightMinutePaise:     *j.NightMinutePaise,
		SurgeCap:             *j.SurgeCap,
		ConvenienceFee:       *j.ConvenienceFee,
		GSTBasisPoints:       *j.GSTBasisPoints,
		Name:                 j.Name,
		GSTIN:                j.GSTIN,
		InvoicePrefix:        j.InvoicePrefix,
		Surge:                j.Surge,
		Cancellation:         j.Cancellation,
		TravelBufferMinutes:  defaultTravelBufferMinutes,
	}
	if j.TravelBufferMinutes != nil {
		t.TravelBufferMinutes = *j.TravelBufferMinutes
	}
	if t.Name == "" {
		t.Name = strings.ToUpper(key[:1]) + key[1:]
	}
	if t.InvoicePrefix == "" {
		t.InvoicePrefix = defaultInvoicePrefix(key)
	}
	return t, t.Validate()
}
