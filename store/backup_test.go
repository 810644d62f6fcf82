//go:build !prod

package store_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/store"
	"github.com/drivers4me/dispatch/store/storetest"
)

// tableFacts are each table's row count and CHECKSUM TABLE.
func tableFacts(t *testing.T, raw *sql.DB) map[string]string {
	t.Helper()
	rows, err := raw.Query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME")
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	out := map[string]string{}
	for _, tb := range tables {
		var count int64
		if err := raw.QueryRow("SELECT COUNT(*) FROM `" + tb + "`").Scan(&count); err != nil {
			t.Fatal(err)
		}
		var name string
		var sum sql.NullInt64
		if err := raw.QueryRow("CHECKSUM TABLE `"+tb+"`").Scan(&name, &sum); err != nil {
			t.Fatal(err)
		}
		out[tb] = fmt.Sprintf("%d rows, checksum %d", count, sum.Int64)
	}
	return out
}

// fill writes a little of everything through the store: drivers, customers and bookings in
// several states, offers, history, outbox, a completed trip.
func fill(t *testing.T, e env) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		p := dispatch.DriverProfile{ID: id("dr"), Name: fmt.Sprintf("Driver ಚಾಲಕ %d 'quoted' \\ back", i), Rating: 3.1 + float64(i)/7, Transmissions: []dispatch.Transmission{dispatch.Manual}}
		if err := e.db.UpsertDriver(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 120; i++ {
		nb := newBooking(id("cu"), i%4 == 0)
		nb.Pickup.Lat = 12.9 + float64(i)/997
		nb.Pickup.Lng = 77.5 + float64(i)/1009
		b, _, err := e.db.CreateBooking(ctx, nb)
		if err != nil {
			t.Fatal(err)
		}
		if i%4 == 0 {
			continue
		}
		d := dispatch.DriverProfile{ID: id("dr"), Name: "Ravi", Rating: 4.5}
		o := offer(t, e, b, d.ID, 20*time.Second)
		if i%3 == 0 {
			if _, err := e.db.AcceptOffer(ctx, o.ID, d.Ref(), t0.Add(time.Second)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestBackupRestore: a backup of a database filled through the store, restored into a fresh
// database, has every table with the same row count and CHECKSUM TABLE.
func TestBackupRestore(t *testing.T) {
	ctx := context.Background()
	srcDSN := storetest.MySQL(t)
	e := env{db: storetest.Open(t, srcDSN), raw: rawDB(t, srcDSN), dsn: srcDSN}
	fill(t, e)
	want := tableFacts(t, e.raw)

	var buf bytes.Buffer
	st, err := store.Backup(ctx, srcDSN, store.Options{}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Tables != len(want) || st.Rows == 0 {
		t.Fatalf("backup: got %s, want %d tables and some rows", st, len(want))
	}

	dstDSN := storetest.MySQL(t)
	got, err := store.Restore(ctx, dstDSN, store.Options{}, bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if got != st {
		t.Errorf("restore: got %s, want %s (what the backup wrote)", got, st)
	}
	gotFacts := tableFacts(t, rawDB(t, dstDSN))
	for table, w := range want {
		if g := gotFacts[table]; g != w {
			t.Errorf("table %s: got %q, want %q", table, g, w)
		}
	}
	if len(gotFacts) != len(want) {
		t.Errorf("got %d tables, want %d", len(gotFacts), len(want))
	}
	// The restored database is a working store: its schema is current and a booking reads back.
	restored := storetest.Open(t, dstDSN)
	if ok, err := restored.SchemaCurrent(ctx); err != nil || !ok {
		t.Errorf("restored schema current: got %v, %v; want true", ok, err)
	}

	// A second restore into the now full database is refused and changes nothing.
	if _, err := store.Restore(ctx, dstDSN, store.Options{}, bytes.NewReader(buf.Bytes())); !errors.Is(err, dispatch.ErrConflict) {
		t.Errorf("restore into a database with tables: got %v, want ErrConflict", err)
	}
}

// TestRestoreRefusesBadBackups: whatever is wrong with the input, Restore says so and leaves
// the database empty.
func TestRestoreRefusesBadBackups(t *testing.T) {
	ctx := context.Background()
	srcDSN := storetest.MySQL(t)
	e := env{db: storetest.Open(t, srcDSN), raw: rawDB(t, srcDSN), dsn: srcDSN}
	fill(t, e)
	var buf bytes.Buffer
	if _, err := store.Backup(ctx, srcDSN, store.Options{}, &buf); err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(mustGunzip(t, buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	text := string(plain)
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	gz := func(s string) []byte {
		var b bytes.Buffer
		w := gzip.NewWriter(&b)
		w.Write([]byte(s))
		w.Close()
		return b.Bytes()
	}
	lastInsert := 0
	for i, l := range lines {
		if strings.HasPrefix(l, "INSERT") {
			lastInsert = i
		}
	}
	tests := []struct {
		name string
		in   []byte
	}{
		{"not gzip", plain},
		{"gzip cut short", buf.Bytes()[:buf.Len()/2]},
		{"no end marker", gz(strings.Join(lines[:len(lines)-1], "\n") + "\n")},
		{"a line missing", gz(strings.Join(append(append([]string{}, lines[:lastInsert]...), lines[lastInsert+1:]...), "\n") + "\n")},
		{"not a backup", gz("SELECT 1;\n")},
		{"a foreign statement", gz(lines[0] + "\nDROP DATABASE test;\n" + strings.Join(lines[1:], "\n") + "\n")},
		{"an INSERT with a subquery", gz(lines[0] + "\nINSERT INTO `t` (`a`) VALUES ((SELECT 1));\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := storetest.MySQL(t)
			_, err := store.Restore(ctx, dst, store.Options{}, bytes.NewReader(tt.in))
			if !errors.Is(err, dispatch.ErrInvalid) {
				t.Errorf("got %v, want ErrInvalid", err)
			}
			if n := len(tableFacts(t, rawDB(t, dst))); n != 0 {
				t.Errorf("after a refused restore: got %d tables, want 0", n)
			}
		})
	}
}

func mustGunzip(t *testing.T, b []byte) io.Reader {
	t.Helper()
	r, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return r
}
