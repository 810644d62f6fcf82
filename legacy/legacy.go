// Package legacy moves the old system's records into dispatch: it reads CSV exports of
// customers, drivers and bookings (the columns are in OPERATIONS.md, "Moving off the old
// system"), checks every row, writes the good ones through the store in batches, and reports
// what it took and what it refused, with the reason, line by line.
//
// It must not write a row it has not checked, and must be safe to run again: rows whose id is
// already present are left as they are (the store inserts only new ids), so a second run of
// the same export changes nothing. A file whose header lacks a required column is refused
// before anything is written.
package legacy

import (
	"context"
	"crypto/rand"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
)

// Store is what an import writes through (store.DB).
type Store interface {
	ExistingIDs(ctx context.Context, table string, ids []string) (map[string]bool, error)
	Driver(ctx context.Context, id string) (dispatch.DriverProfile, error)
	ImportCustomers(ctx context.Context, cs []dispatch.ImportedCustomer) (int, error)
	ImportDrivers(ctx context.Context, ds []dispatch.ImportedDriver) (int, error)
	ImportBookings(ctx context.Context, bs []dispatch.Booking) (int, error)
}

// The export's files, in the order they are imported (bookings name customers and drivers).
const (
	CustomersFile = "customers.csv"
	DriversFile   = "drivers.csv"
	BookingsFile  = "bookings.csv"
)

// Options tune an import.
type Options struct {
	// BatchSize is how many rows one store call (one transaction) writes (default 500).
	BatchSize int
	// Now is the import's clock (default time.Now): scheduled bookings must start after it.
	Now func() time.Time
	// Zone is how times without an offset are read (default Asia/Kolkata, the old system's).
	Zone *time.Location
}

// Refusal is one row not imported, and why.
type Refusal struct {
	File   string
	Line   int
	ID     string
	Reason string
}

// Counts are one file's rows: read, taken (new or already present) and refused.
type Counts struct {
	Read, New, Present, Refused int
}

// Report is what an import did.
type Report struct {
	Customers, Drivers, Bookings Counts
	Refusals                     []Refusal
}

// Write prints the report for a person.
func (r Report) Write(w io.Writer) {
	for _, f := range []struct {
		name string
		c    Counts
	}{{CustomersFile, r.Customers}, {DriversFile, r.Drivers}, {BookingsFile, r.Bookings}} {
		fmt.Fprintf(w, "%-14s %6d read, %6d taken (%d new, %d already present), %6d refused\n",
			f.name, f.c.Read, f.c.New+f.c.Present, f.c.New, f.c.Present, f.c.Refused)
	}
	if len(r.Refusals) > 0 {
		fmt.Fprintln(w, "refused:")
	}
	for _, x := range r.Refusals {
		fmt.Fprintf(w, "  %s:%d %q: %s\n", x.File, x.Line, x.ID, x.Reason)
	}
}

// record is one data row of a CSV file, by column name.
type record struct {
	line int
	get  func(col string) string
}

// readCSV reads a whole file (exports are a few hundred thousand rows at most), checking the
// header has the required columns. Other columns (optional ones, and whatever else the old
// system exported) are read by name or ignored.
func readCSV(path string, required []string) ([]record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", filepath.Base(path), err)
	}
	index := map[string]int{}
	for i, h := range header {
		index[strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))] = i
	}
	var missing []string
	for _, c := range required {
		if _, ok := index[c]; !ok {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: the header lacks the column(s) %s (it has %s)", filepath.Base(path), strings.Join(missing, ", "), strings.Join(header, ","))
	}
	var out []record
	for {
		fields, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		line, _ := r.FieldPos(0)
		if len(fields) == 1 && strings.TrimSpace(fields[0]) == "" {
			continue
		}
		out = append(out, record{line: line, get: func(col string) string {
			i, ok := index[col]
			if !ok || i >= len(fields) {
				return ""
			}
			return strings.TrimSpace(fields[i])
		}})
	}
	return out, nil
}

// validID is the ids dispatch accepts anywhere (token subjects, Redis keys, URLs).
func validID(s string) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > 64 {
		return errors.New("longer than 64 characters")
	}
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.ContainsRune("._:@|+=-", c):
		default:
			return fmt.Errorf("character %q outside [A-Za-z0-9._:@|+=-]", c)
		}
	}
	return nil
}

// parseTime reads RFC 3339, or "YYYY-MM-DD HH:MM:SS" (optionally with fractions) in zone.
func parseTime(s string, zone *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05.999999999", "2006-01-02 15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, zone); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not a time (want 2006-01-02T15:04:05+05:30 or 2006-01-02 15:04:05 in IST)", s)
}

// rupees reads an amount such as 1250 or 1250.50 as paise.
func rupees(s string) (int64, error) {
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" || len(frac) > 2 {
		return 0, fmt.Errorf("%q is not an amount in rupees (want 1250 or 1250.50)", s)
	}
	r, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || r < 0 || r > 10_000_000 {
		return 0, fmt.Errorf("%q is not an amount from 0 to 1,00,00,000 rupees", s)
	}
	p := int64(0)
	if frac != "" {
		for len(frac) < 2 {
			frac += "0"
		}
		if p, err = strconv.ParseInt(frac, 10, 64); err != nil || p < 0 {
			return 0, fmt.Errorf("%q is not an amount in rupees", s)
		}
	}
	return r*100 + p, nil
}

// India's bounding box: a pickup outside it is a data error (lat/lng swapped, zeros).
const minLat, maxLat, minLng, maxLng = 6.0, 37.5, 68.0, 97.5

// Import reads dir's export and writes it through st. It returns an error, having written
// nothing, when a file is missing or its header lacks a required column; rows with bad values
// are refused one by one, in the report.
func Import(ctx context.Context, st Store, dir string, opts Options) (Report, error) {
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Zone == nil {
		ist, err := time.LoadLocation("Asia/Kolkata")
		if err != nil {
			ist = time.FixedZone("IST", 5*3600+1800)
		}
		opts.Zone = ist
	}
	var rep Report
	customers, err := readCSV(filepath.Join(dir, CustomersFile), []string{"customer_id", "created_at"})
	if err != nil {
		return rep, err
	}
	drivers, err := readCSV(filepath.Join(dir, DriversFile), []string{"driver_id", "name", "rating", "transmissions", "created_at"})
	if err != nil {
		return rep, err
	}
	bookings, err := readCSV(filepath.Join(dir, BookingsFile), []string{"booking_id", "customer_id", "status", "pickup_lat", "pickup_lng",
		"pickup_address", "hours", "start_at", "created_at", "transmission", "driver_id", "fare_rupees"})
	if err != nil {
		return rep, err
	}
	im := importer{st: st, opts: opts, rep: &rep}

	// Customers.
	seen := map[string]bool{}
	var cs []dispatch.ImportedCustomer
	for _, r := range customers {
		rep.Customers.Read++
		id := r.get("customer_id")
		c, why := checkCustomer(r, seen, opts.Zone, opts.Now())
		if why != "" {
			im.refuse(CustomersFile, r.line, id, why, &rep.Customers)
			continue
		}
		seen[id] = true
		cs = append(cs, c)
	}
	if err := batches(ctx, cs, opts.BatchSize, "customers", st.ImportCustomers, &rep.Customers); err != nil {
		return rep, err
	}

	// Drivers.
	profiles := map[string]dispatch.DriverProfile{}
	var ds []dispatch.ImportedDriver
	for _, r := range drivers {
		rep.Drivers.Read++
		id := r.get("driver_id")
		d, why := checkDriver(r, profiles, opts.Zone, opts.Now())
		if why != "" {
			im.refuse(DriversFile, r.line, id, why, &rep.Drivers)
			continue
		}
		profiles[id] = d.Profile
		ds = append(ds, d)
	}
	if err := batches(ctx, ds, opts.BatchSize, "drivers", st.ImportDrivers, &rep.Drivers); err != nil {
		return rep, err
	}

	// Bookings: their customers and drivers must be in this export (and taken) or already in
	// dispatch.
	knownCustomers, err := im.known(ctx, "customers", bookings, "customer_id", seen)
	if err != nil {
		return rep, err
	}
	driverIDs := map[string]bool{}
	for id := range profiles {
		driverIDs[id] = true
	}
	knownDrivers, err := im.known(ctx, "drivers", bookings, "driver_id", driverIDs)
	if err != nil {
		return rep, err
	}
	booked := map[string]bool{}
	var bs []dispatch.Booking
	for _, r := range bookings {
		rep.Bookings.Read++
		id := r.get("booking_id")
		b, why := im.checkBooking(r, booked, knownCustomers, knownDrivers)
		if why == "" && b.Driver != nil {
			p, ok := profiles[b.Driver.ID]
			if !ok {
				if p, err = st.Driver(ctx, b.Driver.ID); err != nil {
					return rep, fmt.Errorf("driver %s of booking %s: %w", b.Driver.ID, id, err)
				}
				profiles[p.ID] = p
			}
			b.Driver = &dispatch.DriverRef{ID: p.ID, Name: p.Name, Rating: p.Rating}
		}
		if why != "" {
			im.refuse(BookingsFile, r.line, id, why, &rep.Bookings)
			continue
		}
		booked[id] = true
		bs = append(bs, b)
	}
	if err := batches(ctx, bs, opts.BatchSize, "bookings", st.ImportBookings, &rep.Bookings); err != nil {
		return rep, err
	}
	return rep, nil
}

type importer struct {
	st   Store
	opts Options
	rep  *Report
}

func (im importer) refuse(file string, line int, id, why string, c *Counts) {
	c.Refused++
	im.rep.Refusals = append(im.rep.Refusals, Refusal{File: file, Line: line, ID: id, Reason: why})
}

// known is the ids of col in rows that are in this export (inFile) or already in table.
func (im importer) known(ctx context.Context, table string, rows []record, col string, inFile map[string]bool) (map[string]bool, error) {
	out := map[string]bool{}
	var ask []string
	for _, r := range rows {
		id := r.get(col)
		if id == "" || out[id] {
			continue
		}
		if inFile[id] {
			out[id] = true
			continue
		}
		if validID(id) == nil {
			ask = append(ask, id)
		}
	}
	sort.Strings(ask)
	have, err := im.st.ExistingIDs(ctx, table, slicesCompact(ask))
	if err != nil {
		return nil, err
	}
	for id := range have {
		out[id] = true
	}
	return out, nil
}

func slicesCompact(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// batches writes rows in batches and counts which were new and which already present.
func batches[T any](ctx context.Context, rows []T, size int, table string, write func(context.Context, []T) (int, error), c *Counts) error {
	for start := 0; start < len(rows); start += size {
		batch := rows[start:min(start+size, len(rows))]
		n, err := write(ctx, batch)
		if err != nil {
			return fmt.Errorf("write %s %d to %d: %w", table, start+1, start+len(batch), err)
		}
		c.New += n
		c.Present += len(batch) - n
	}
	return nil
}

func checkCustomer(r record, seen map[string]bool, zone *time.Location, now time.Time) (dispatch.ImportedCustomer, string) {
	id := r.get("customer_id")
	if err := validID(id); err != nil {
		return dispatch.ImportedCustomer{}, "customer_id: " + err.Error()
	}
	if seen[id] {
		return dispatch.ImportedCustomer{}, "customer_id: a second row with this id"
	}
	at, err := parseTime(r.get("created_at"), zone)
	if err != nil {
		return dispatch.ImportedCustomer{}, "created_at: " + err.Error()
	}
	if at.After(now) {
		return dispatch.ImportedCustomer{}, "created_at: in the future"
	}
	return dispatch.ImportedCustomer{ID: id, CreatedAt: at}, ""
}

func checkDriver(r record, seen map[string]dispatch.DriverProfile, zone *time.Location, now time.Time) (dispatch.ImportedDriver, string) {
	id := r.get("driver_id")
	if err := validID(id); err != nil {
		return dispatch.ImportedDriver{}, "driver_id: " + err.Error()
	}
	if _, dup := seen[id]; dup {
		return dispatch.ImportedDriver{}, "driver_id: a second row with this id"
	}
	name := r.get("name")
	if name == "" || len(name) > 200 {
		return dispatch.ImportedDriver{}, "name: empty or longer than 200 bytes"
	}
	rating, err := strconv.ParseFloat(r.get("rating"), 64)
	if err != nil || rating < 0 || rating > 5 {
		return dispatch.ImportedDriver{}, fmt.Sprintf("rating: %q is not a number from 0 to 5", r.get("rating"))
	}
	var trs []dispatch.Transmission
	for _, t := range strings.Split(r.get("transmissions"), ";") {
		switch tr := dispatch.Transmission(strings.ToLower(strings.TrimSpace(t))); tr {
		case dispatch.Manual, dispatch.Automatic:
			trs = append(trs, tr)
		default:
			return dispatch.ImportedDriver{}, fmt.Sprintf("transmissions: %q, want manual, automatic or manual;automatic", r.get("transmissions"))
		}
	}
	at, err := parseTime(r.get("created_at"), zone)
	if err != nil {
		return dispatch.ImportedDriver{}, "created_at: " + err.Error()
	}
	if at.After(now) {
		return dispatch.ImportedDriver{}, "created_at: in the future"
	}
	return dispatch.ImportedDriver{Profile: dispatch.DriverProfile{ID: id, Name: name, Rating: rating, Transmissions: trs}, CreatedAt: at}, ""
}

func (im importer) checkBooking(r record, seen, customers, drivers map[string]bool) (dispatch.Booking, string) {
	var b dispatch.Booking
	b.ID = r.get("booking_id")
	if err := validID(b.ID); err != nil {
		return b, "booking_id: " + err.Error()
	}
	if seen[b.ID] {
		return b, "booking_id: a second row with this id"
	}
	b.CustomerID = r.get("customer_id")
	if err := validID(b.CustomerID); err != nil {
		return b, "customer_id: " + err.Error()
	}
	if !customers[b.CustomerID] {
		return b, "customer_id: no such customer in customers.csv (taken) or in dispatch"
	}
	b.Status = dispatch.Status(strings.ToLower(r.get("status")))
	switch b.Status {
	case dispatch.StatusScheduled, dispatch.StatusCompleted, dispatch.StatusCancelled, dispatch.StatusUnfulfilled:
	case dispatch.StatusSearching, dispatch.StatusAssigned, dispatch.StatusArrived, dispatch.StatusInProgress:
		return b, fmt.Sprintf("status %q: a booking in flight; finish or cancel it in the old system before the cut-over", b.Status)
	default:
		return b, fmt.Sprintf("status %q: want scheduled, completed, cancelled or unfulfilled", r.get("status"))
	}
	lat, err1 := strconv.ParseFloat(r.get("pickup_lat"), 64)
	lng, err2 := strconv.ParseFloat(r.get("pickup_lng"), 64)
	if err1 != nil || err2 != nil || lat < minLat || lat > maxLat || lng < minLng || lng > maxLng {
		return b, fmt.Sprintf("pickup %q,%q: not a place in India (latitude %g..%g, longitude %g..%g)", r.get("pickup_lat"), r.get("pickup_lng"), minLat, maxLat, minLng, maxLng)
	}
	b.Pickup = dispatch.Place{Lat: lat, Lng: lng, Address: r.get("pickup_address")}
	if b.Pickup.Address == "" || len(b.Pickup.Address) > 500 {
		return b, "pickup_address: empty or longer than 500 bytes"
	}
	hours, err := strconv.Atoi(r.get("hours"))
	if err != nil || hours < 1 || hours > 24 {
		return b, fmt.Sprintf("hours: %q is not a whole number from 1 to 24", r.get("hours"))
	}
	b.Hours = hours
	if b.StartAt, err = parseTime(r.get("start_at"), im.opts.Zone); err != nil {
		return b, "start_at: " + err.Error()
	}
	if b.CreatedAt, err = parseTime(r.get("created_at"), im.opts.Zone); err != nil {
		return b, "created_at: " + err.Error()
	}
	now := im.opts.Now()
	if b.CreatedAt.After(now) {
		return b, "created_at: in the future"
	}
	if b.Status == dispatch.StatusScheduled && !b.StartAt.After(now) {
		return b, "start_at: a scheduled booking whose start has passed (it was never served: cancel it in the old system)"
	}
	b.Car.Transmission = dispatch.Transmission(strings.ToLower(r.get("transmission")))
	if b.Car.Transmission != dispatch.Manual && b.Car.Transmission != dispatch.Automatic {
		return b, fmt.Sprintf("transmission: %q, want manual or automatic", r.get("transmission"))
	}
	switch driver := r.get("driver_id"); {
	case driver == "" && b.Status == dispatch.StatusCompleted:
		return b, "driver_id: a completed booking needs its driver"
	case driver != "" && b.Status == dispatch.StatusScheduled:
		return b, "driver_id: a scheduled booking is imported unassigned (assign it again in dispatch)"
	case driver != "" && !drivers[driver]:
		return b, "driver_id: no such driver in drivers.csv (taken) or in dispatch"
	case driver != "":
		b.Driver = &dispatch.DriverRef{ID: driver}
	}
	paise, err := rupees(r.get("fare_rupees"))
	if err != nil {
		return b, "fare_rupees: " + err.Error()
	}
	b.Fare = dispatch.Fare{Currency: "INR", TotalPaise: paise, Lines: []dispatch.FareLine{{Code: "imported", Label: "Fare in the old system", AmountPaise: paise}}}
	b.OTP = r.get("otp")
	if b.OTP != "" && (len(b.OTP) != 4 || strings.Trim(b.OTP, "0123456789") != "") {
		return b, fmt.Sprintf("otp: %q is not 4 digits", b.OTP)
	}
	if b.OTP == "" && b.Status == dispatch.StatusScheduled {
		n, err := rand.Int(rand.Reader, big.NewInt(10000))
		if err != nil {
			return b, "otp: " + err.Error()
		}
		b.OTP = fmt.Sprintf("%04d", n.Int64())
	}
	if s := r.get("ended_at"); s != "" {
		t, err := parseTime(s, im.opts.Zone)
		if err != nil {
			return b, "ended_at: " + err.Error()
		}
		if t.Before(b.StartAt) {
			return b, "ended_at: before start_at"
		}
		b.EndedAt = &t
	}
	b.CancelReason = r.get("cancel_reason")
	if len(b.CancelReason) > 500 {
		return b, "cancel_reason: longer than 500 bytes"
	}
	b.Version = 1
	return b, ""
}
