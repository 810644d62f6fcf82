package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/drivers4me/dispatch/store"
)

// backup writes a consistent, gzip-compressed logical backup of MYSQL_DSN's database to a file
// (written beside it, then renamed, so a reader never sees half a backup) or to stdout.
func backup(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	out := fs.String("o", "-", "file to write (gzip-compressed SQL), - for stdout")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dsn := getenv("MYSQL_DSN")
	if dsn == "" {
		return errors.New("MYSQL_DSN must be set for backup")
	}
	opts := store.Options{CAFile: getenv("DISPATCH_MYSQL_CA_FILE")}
	if *out == "-" {
		st, err := store.Backup(ctx, dsn, opts, stdout)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "backup written to stdout: %s\n", st)
		return nil
	}
	f, err := os.CreateTemp(filepath.Dir(*out), filepath.Base(*out)+".partial-*")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename, there is nothing left to remove
	st, err := store.Backup(ctx, dsn, opts, f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(f.Name(), *out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "backup written to %s: %s\n", *out, st)
	return nil
}

// restore loads a backup into MYSQL_DSN's database, which must be empty.
func restore(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	in := fs.String("i", "-", "backup file to read, - for stdin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dsn := getenv("MYSQL_DSN")
	if dsn == "" {
		return errors.New("MYSQL_DSN must be set for restore (a new, empty database)")
	}
	r := stdin
	if *in != "-" {
		f, err := os.Open(*in)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer f.Close()
		r = f
	}
	st, err := store.Restore(ctx, dsn, store.Options{CAFile: getenv("DISPATCH_MYSQL_CA_FILE")}, r)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s\n", st)
	return nil
}
