package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drivers4me/dispatch/store/storetest"
)

// TestImportCommand drives `dispatchd import` as the cut-over would: a small export with one
// bad row is written except that row, reported, and exits non-zero; a second run adds nothing.
func TestImportCommand(t *testing.T) {
	ctx := context.Background()
	dsn := storetest.MySQL(t)
	env := func(k string) string {
		if k == "MYSQL_DSN" {
			return dsn
		}
		return ""
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"import", "-dir", t.TempDir()}, env, &out); err == nil || !strings.Contains(err.Error(), "migrate") {
		t.Errorf("import before migrate: got %v, want an error saying to migrate first", err)
	}
	if err := run(ctx, []string{"migrate"}, env, &out); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"customers.csv": "customer_id,created_at\ncu-1,2024-01-01 10:00:00\n",
		"drivers.csv":   "driver_id,name,rating,transmissions,created_at\ndr-1,Ravi,4.5,manual,2024-01-01 10:00:00\n",
		"bookings.csv": "booking_id,customer_id,status,pickup_lat,pickup_lng,pickup_address,hours,start_at,created_at,transmission,driver_id,fare_rupees\n" +
			"bk-1,cu-1,completed,12.97,77.59,MG Road,4,2025-01-01 10:00:00,2025-01-01 09:00:00,manual,dr-1,800\n" +
			"bk-2,cu-1,searching,12.97,77.59,MG Road,4,2025-01-01 10:00:00,2025-01-01 09:00:00,manual,,800\n",
	}
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out.Reset()
	err := run(ctx, []string{"import", "-dir", dir}, env, &out)
	if err == nil || !strings.Contains(err.Error(), "1 rows refused") {
		t.Errorf("import: got %v, want 1 row refused", err)
	}
	for _, w := range []string{"1 taken (1 new, 0 already present)", `bookings.csv:3 "bk-2": status "searching"`} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("report:\n%s\nwant %q", out.String(), w)
		}
	}
	out.Reset()
	run(ctx, []string{"import", "-dir", dir}, env, &out)
	if !strings.Contains(out.String(), "1 taken (0 new, 1 already present)") {
		t.Errorf("second run:\n%s\nwant every taken row already present", out.String())
	}
}
