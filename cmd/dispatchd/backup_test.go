package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/drivers4me/dispatch/store/storetest"
)

// TestBackupRestoreCommands drives `dispatchd migrate`, `backup -o` and `restore -i` as an
// operator would: the restored database has the source's tables and rows.
func TestBackupRestoreCommands(t *testing.T) {
	ctx := context.Background()
	src, dst := storetest.MySQL(t), storetest.MySQL(t)
	env := func(dsn string) func(string) string {
		return func(k string) string {
			if k == "MYSQL_DSN" {
				return dsn
			}
			return ""
		}
	}
	var out bytes.Buffer
	if err := run(ctx, []string{"migrate"}, env(src), &out); err != nil {
		t.Fatalf("migrate: %v\n%s", err, out.String())
	}
	file := filepath.Join(t.TempDir(), "dispatch.sql.gz")
	out.Reset()
	if err := run(ctx, []string{"backup", "-o", file}, env(src), &out); err != nil {
		t.Fatalf("backup: %v", err)
	}
	if !strings.Contains(out.String(), "backup written to "+file) {
		t.Errorf("backup: got output %q, want it to name the file", out.String())
	}
	if leftovers, _ := filepath.Glob(file + ".partial-*"); len(leftovers) != 0 {
		t.Errorf("got partial files %v left behind, want none", leftovers)
	}
	out.Reset()
	if err := run(ctx, []string{"restore", "-i", file}, env(dst), &out); err != nil {
		t.Fatalf("restore: %v", err)
	}
	count := func(dsn string) (n int) {
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.QueryRow("SELECT COUNT(*) FROM goose_db_version").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if got, want := count(dst), count(src); got != want || want == 0 {
		t.Errorf("goose_db_version rows: got %d restored, want %d (and more than 0)", got, want)
	}
	// Restoring again into the now full database is refused.
	if err := run(ctx, []string{"restore", "-i", file}, env(dst), &out); err == nil || !strings.Contains(err.Error(), "empty database") {
		t.Errorf("second restore: got %v, want a refusal naming an empty database", err)
	}
	if err := run(ctx, []string{"backup", "-o", file}, func(string) string { return "" }, &out); err == nil {
		t.Error("backup without MYSQL_DSN: got no error")
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the first backup: %v", err)
	}
}
