package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/drivers4me/dispatch/legacy"
	"github.com/drivers4me/dispatch/store"
	"github.com/rs/zerolog"
)

// importExport loads the old system's CSV export (legacy) into MYSQL_DSN's database and prints
// the report. Refused rows make it exit non-zero, after the rest is written.
func importExport(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("import", flag.ContinueOnError)
	dir := fs.String("dir", ".", "directory holding customers.csv, drivers.csv and bookings.csv")
	batch := fs.Int("batch", 500, "rows written per transaction")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dsn := getenv("MYSQL_DSN")
	if dsn == "" {
		return errors.New("MYSQL_DSN must be set for import")
	}
	db, err := store.Open(ctx, dsn, store.Options{CAFile: getenv("DISPATCH_MYSQL_CA_FILE")}, zerolog.Nop())
	if err != nil {
		return err
	}
	defer db.Close()
	if ok, err := db.SchemaCurrent(ctx); err != nil || !ok {
		return fmt.Errorf("the schema is not current (run dispatchd migrate first): %v", err)
	}
	rep, err := legacy.Import(ctx, db, *dir, legacy.Options{BatchSize: *batch})
	rep.Write(stdout)
	if err != nil {
		return err
	}
	if n := len(rep.Refusals); n > 0 {
		return fmt.Errorf("%d rows refused (listed above); the others are written, and a second run leaves them as they are", n)
	}
	return nil
}
