package legacy_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/legacy"
	"github.com/drivers4me/dispatch/store/storetest"
)

// now is the import's clock in these tests.
var now = time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)

// export writes a generated export of the old system: good rows in bulk, and each kind of bad
// row once. It returns the ids of the bad rows with a word the refusal must contain.
func export(t *testing.T, dir string) map[string]string {
	t.Helper()
	bad := map[string]string{}
	var cu, dr, bk strings.Builder
	cu.WriteString("customer_id,name,phone,created_at\n") // name and phone: not kept
	for i := 0; i < 60; i++ {
		fmt.Fprintf(&cu, "cu-%03d,Customer %d,+9198450%05d,2024-0%d-1%d 09:%02d:00\n", i, i, i, 1+i%9, i%10, i%60)
	}
	cu.WriteString("cu 999,Spacey,,2024-01-01 10:00:00\n")
	bad["cu 999"] = "customer_id"
	cu.WriteString("cu-001,Twice,,2024-01-01 10:00:00\n") // a second cu-001
	cu.WriteString("cu-late,Late,,2031-01-01 10:00:00\n")
	bad["cu-late"] = "in the future"
	cu.WriteString("cu-when,When,,yesterday\n")
	bad["cu-when"] = "not a time"

	dr.WriteString("driver_id,name,phone,rating,transmissions,created_at\n")
	for i := 0; i < 25; i++ {
		trs := "manual"
		if i%3 == 0 {
			trs = "manual;automatic"
		}
		fmt.Fprintf(&dr, "dr-%03d,\"Driver, ಚಾಲಕ %d\",+9199000%05d,%.1f,%s,2023-06-01T08:00:00+05:30\n", i, i, i, 3.5+float64(i%15)/10, trs)
	}
	dr.WriteString("dr-stars,Too Good,,7,manual,2023-06-01 08:00:00\n")
	bad["dr-stars"] = "rating"
	dr.WriteString("dr-cvt,CVT,,4.1,cvt,2023-06-01 08:00:00\n")
	bad["dr-cvt"] = "transmissions"
	dr.WriteString("dr-noname,,,4.1,manual,2023-06-01 08:00:00\n")
	bad["dr-noname"] = "name"

	bk.WriteString("booking_id,customer_id,status,pickup_lat,pickup_lng,pickup_address,hours,start_at,created_at,transmission,driver_id,fare_rupees,otp,ended_at,cancel_reason,coupon\n")
	statuses := []string{"completed", "cancelled", "unfulfilled", "scheduled"}
	for i := 0; i < 200; i++ {
		st := statuses[i%4]
		driver, start, ended, reason := "", "2025-11-0"+fmt.Sprint(1+i%9)+" 10:00:00", "", ""
		switch st {
		case "completed":
			driver = fmt.Sprintf("dr-%03d", i%25)
			ended = strings.Replace(start, "10:00", "14:00", 1)
		case "cancelled":
			reason = "customer changed plans"
		case "scheduled":
			start = "2026-12-1" + fmt.Sprint(i%10) + " 07:30:00"
		}
		fmt.Fprintf(&bk, "bk-%04d,cu-%03d,%s,%.6f,%.6f,\"%d MG Road, Bengaluru\",%d,%s,2025-10-30 18:00:00,%s,%s,%d.50,,%s,%s,SAVE10\n",
			i, i%60, st, 12.9+float64(i)/1000, 77.5+float64(i)/1000, i, 1+i%8, start, []string{"manual", "automatic"}[i%2], driver, 400+i, ended, reason)
	}
	badBookings := []struct{ id, row, want string }{
		{"bk-live", "cu-001,assigned,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,dr-001,800,,,", "in flight"},
		{"bk-zero", "cu-001,completed,0,0,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,dr-001,800,,,", "not a place in India"},
		{"bk-stranger", "cu-nobody,completed,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,dr-001,800,,,", "no such customer"},
		{"bk-refusedcust", "cu 999,completed,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,dr-001,800,,,", "customer_id"},
		{"bk-nodriver", "cu-001,completed,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,,800,,,", "needs its driver"},
		{"bk-ghostdriver", "cu-001,completed,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,dr-ghost,800,,,", "no such driver"},
		{"bk-past", "cu-001,scheduled,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,,800,,,", "start has passed"},
		{"bk-paise", "cu-001,cancelled,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,,12.345,,,", "fare_rupees"},
		{"bk-long", "cu-001,cancelled,12.97,77.59,x,30,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,,800,,,", "hours"},
		{"bk-early", "cu-001,scheduled,12.97,77.59,x,4,2026-12-20 10:00:00,2025-11-01 09:00:00,manual,dr-001,800,,,", "unassigned"},
		{"bk-otp", "cu-001,scheduled,12.97,77.59,x,4,2026-12-20 10:00:00,2025-11-01 09:00:00,manual,,800,12345,,", "otp"},
		{"bk-gear", "cu-001,cancelled,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,cvt,,800,,,", "transmission"},
		{"bk-0000", "cu-001,cancelled,12.97,77.59,x,4,2025-11-01 10:00:00,2025-11-01 09:00:00,manual,,800,,,", "second row"},
	}
	for _, b := range badBookings {
		fmt.Fprintf(&bk, "%s,%s,\n", b.id, b.row)
		bad[b.id] = b.want
	}
	for name, text := range map[string]string{legacy.CustomersFile: cu.String(), legacy.DriversFile: dr.String(), legacy.BookingsFile: bk.String()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return bad
}

func facts(t *testing.T, db *sql.DB) string {
	t.Helper()
	var out []string
	for _, table := range []string{"customers", "drivers", "bookings", "booking_events", "outbox", "offers", "driver_active"} {
		var n int
		var name string
		var sum sql.NullInt64
		if err := db.QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow("CHECKSUM TABLE "+table).Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %d %d", table, n, sum.Int64))
	}
	return strings.Join(out, "; ")
}

// TestImport imports a generated export with bad rows into MariaDB through the store: the
// report counts what was taken and refused, each bad row with its reason, the data reads back
// through the store, and a second run changes nothing.
func TestImport(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.MySQL(t)
	st := storetest.Open(t, dsn)
	raw, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	dir := t.TempDir()
	bad := export(t, dir)
	opts := legacy.Options{BatchSize: 37, Now: func() time.Time { return now }}

	rep, err := legacy.Import(ctx, st, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	want := legacy.Report{
		Customers: legacy.Counts{Read: 64, New: 60, Refused: 4},
		Drivers:   legacy.Counts{Read: 28, New: 25, Refused: 3},
		Bookings:  legacy.Counts{Read: 213, New: 200, Refused: 13},
	}
	if rep.Customers != want.Customers || rep.Drivers != want.Drivers || rep.Bookings != want.Bookings {
		t.Errorf("first run: got %+v %+v %+v, want %+v %+v %+v", rep.Customers, rep.Drivers, rep.Bookings, want.Customers, want.Drivers, want.Bookings)
	}
	reasons := map[string]string{}
	for _, r := range rep.Refusals {
		if r.Line <= 1 || r.File == "" {
			t.Errorf("refusal %+v: got no file or line, want both", r)
		}
		reasons[r.ID] += r.Reason + " | "
	}
	for id, word := range bad {
		if !strings.Contains(reasons[id], word) {
			t.Errorf("row %s: got refusal %q, want one mentioning %q", id, reasons[id], word)
		}
	}
	if !strings.Contains(reasons["cu-001"], "second row") {
		t.Errorf("the second cu-001: got %q, want refused as a second row", reasons["cu-001"])
	}
	var out bytes.Buffer
	rep.Write(&out)
	for _, w := range []string{"bookings.csv      213 read,    200 taken (200 new, 0 already present),     13 refused",
		`customers.csv:62 "cu 999"`, `bookings.csv:202 "bk-live": status "assigned"`} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report:\n%s\nwant it to contain %q", out.String(), w)
		}
	}

	// What was taken reads back through the store.
	b, err := st.Booking(ctx, "bk-0003") // scheduled, no OTP in the export
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != dispatch.StatusScheduled || len(b.OTP) != 4 || b.Driver != nil || b.Fare.TotalPaise != 40350 {
		t.Errorf("scheduled booking: got %+v, want scheduled, a 4-digit OTP, no driver, 403.50 rupees", b)
	}
	b, err = st.Booking(ctx, "bk-0004") // completed by dr-004
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != dispatch.StatusCompleted || b.Driver == nil || b.Driver.ID != "dr-004" || !strings.Contains(b.Driver.Name, "ಚಾಲಕ 4") || b.EndedAt == nil {
		t.Errorf("completed booking: got %+v, want dr-004 with the name from drivers.csv and an end time", b)
	}
	p, err := st.Driver(ctx, "dr-003")
	if err != nil || len(p.Transmissions) != 2 {
		t.Errorf("driver dr-003: got %+v, %v; want manual and automatic", p, err)
	}
	var events, outbox int
	raw.QueryRow("SELECT COUNT(*) FROM booking_events WHERE actor = 'import'").Scan(&events)
	raw.QueryRow("SELECT COUNT(*) FROM outbox").Scan(&outbox)
	if events != 200 || outbox != 0 {
		t.Errorf("got %d import audit rows and %d outbox rows, want 200 and 0 (history is not published)", events, outbox)
	}

	// A second run of the same export changes nothing and says so.
	before := facts(t, raw)
	rep2, err := legacy.Import(ctx, st, dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if rep2.Customers.New+rep2.Drivers.New+rep2.Bookings.New != 0 || rep2.Bookings.Present != 200 || rep2.Customers.Present != 60 || rep2.Drivers.Present != 25 {
		t.Errorf("second run: got %+v %+v %+v, want nothing new, everything taken already present", rep2.Customers, rep2.Drivers, rep2.Bookings)
	}
	if after := facts(t, raw); after != before {
		t.Errorf("second run changed the tables:\nbefore %s\nafter  %s", before, after)
	}
}

// TestImportRefusesABadHeader: a file without a required column stops the import before it
// writes anything.
func TestImportRefusesABadHeader(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.MySQL(t)
	st := storetest.Open(t, dsn)
	raw, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	dir := t.TempDir()
	export(t, dir)
	before := facts(t, raw)
	data, _ := os.ReadFile(filepath.Join(dir, legacy.BookingsFile))
	broken := strings.Replace(string(data), "fare_rupees", "fare", 1)
	if err := os.WriteFile(filepath.Join(dir, legacy.BookingsFile), []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = legacy.Import(ctx, st, dir, legacy.Options{Now: func() time.Time { return now }})
	if err == nil || !strings.Contains(err.Error(), "fare_rupees") {
		t.Errorf("got %v, want an error naming the missing column fare_rupees", err)
	}
	if after := facts(t, raw); after != before {
		t.Errorf("a refused export changed the tables:\nbefore %s\nafter  %s", before, after)
	}
	os.Remove(filepath.Join(dir, legacy.DriversFile))
	if _, err := legacy.Import(ctx, st, dir, legacy.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("without drivers.csv: got %v, want a not-exist error", err)
	}
}
