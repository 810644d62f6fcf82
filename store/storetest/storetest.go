// Package storetest gives tests a MySQL database of their own: a fresh database on the test
// MariaDB (MySQL) or a fresh in-process go-mysql-server (Embedded), removed when the test ends.
// It never skips: a test that asked for MariaDB and cannot reach it fails, saying why.
//
// MySQL and Open build with -tags prod, so that the tests using them are vetted with the
// production build too; Embedded and Backends do not (embedded.go), as store/embedded does not.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/store"
)

// EnvDSN names the variable holding the test server's DSN (no database name needed);
// DefaultDSN is used when it is unset.
const (
	EnvDSN     = "DISPATCH_TEST_MYSQL_DSN"
	DefaultDSN = "root@tcp(127.0.0.1:3306)/"
)

var unsafeChars = regexp.MustCompile(`[^a-z0-9]+`)

// MySQL creates a uniquely named, empty database on the test MariaDB, drops it when the test
// ends, and returns a DSN for it. It calls t.Fatal when the server cannot be reached.
func MySQL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvDSN)
	if base == "" {
		base = DefaultDSN
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("storetest: %s=%q is not a go-sql-driver DSN: %v", EnvDSN, base, err)
	}
	cfg.DBName = ""
	cfg.Timeout = 5 * time.Second
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatalf("storetest: open %s: %v", cfg.Addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		admin.Close()
		t.Fatalf("storetest: the test MariaDB at %s does not answer (%v); start it or point %s at one", cfg.Addr, err, EnvDSN)
	}

	var r [6]byte
	if _, err := rand.Read(r[:]); err != nil {
		t.Fatal(err)
	}
	prefix := strings.Trim(unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "_"), "_")
	if len(prefix) > 40 {
		prefix = prefix[:40]
	}
	name := "t_" + prefix + "_" + hex.EncodeToString(r[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE `"+name+"` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		admin.Close()
		t.Fatalf("storetest: create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS `"+name+"`"); err != nil {
			t.Errorf("storetest: drop database %s: %v", name, err)
		}
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}

// Open opens a store.DB on dsn with the schema migrated, closed when the test ends.
func Open(t testing.TB, dsn string) *store.DB {
	t.Helper()
	ctx := context.Background()
	db, err := store.Open(ctx, dsn, store.Options{}, zerolog.Nop())
	if err != nil {
		t.Fatalf("storetest: open store: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Migrate(ctx); err != nil {
		t.Fatalf("storetest: migrate: %v", err)
	}
	return db
}
