//go:build !prod

package embedded_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/store/embedded"
)

// TestTransactionsTakeTurns checks the gate: while one connection is inside a transaction, a
// statement on another waits for its COMMIT and then sees its writes.
func TestTransactionsTakeTurns(t *testing.T) {
	ctx := context.Background()
	dsn, stop, err := embedded.Start(ctx, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE kv (k VARCHAR(10) PRIMARY KEY, v INT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO kv VALUES ('a', 1)"); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
		at  time.Time
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = db.QueryRow("SELECT COUNT(*) FROM kv").Scan(&r.n)
		r.at = time.Now()
		done <- r
	}()
	time.Sleep(200 * time.Millisecond)
	committed := time.Now()
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.n != 1 {
		t.Fatalf("read during another transaction: got %d, %v; want 1, nil", r.n, r.err)
	}
	if r.at.Before(committed) {
		t.Errorf("read finished %s before the other transaction committed, want after", committed.Sub(r.at))
	}

	// A rolled-back transaction leaves nothing behind.
	tx, err = db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec("INSERT INTO kv VALUES ('b', 2)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM kv").Scan(&n); err != nil || n != 1 {
		t.Errorf("rows after a rollback: got %d, %v; want 1, nil", n, err)
	}

	stop()
	db.SetMaxIdleConns(0) // drop pooled connections so the next call dials
	if err := db.PingContext(ctx); err == nil {
		t.Errorf("ping after stop: got nil, want an error")
	}
}
