//go:build !prod

package store_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/store"
	"github.com/drivers4me/dispatch/store/storetest"
)

// env is one test's database: the store under test and a raw handle to look behind it.
type env struct {
	db  *store.DB
	raw *sql.DB
	dsn string
}

// eachBackend runs fn against a fresh, migrated database on MariaDB and on the embedded engine.
// After fn, the one-driver-one-active-booking invariant must hold (a test that breaks it on
// purpose repairs it).
func eachBackend(t *testing.T, fn func(t *testing.T, e env)) {
	t.Helper()
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			dsn := b.DSN(t)
			db := storetest.Open(t, dsn)
			e := env{db: db, raw: rawDB(t, dsn), dsn: dsn}
			t.Cleanup(func() {
				if t.Failed() {
					return
				}
				n, err := db.InvariantViolations(context.Background())
				if err != nil {
					t.Errorf("InvariantViolations: %v", err)
				} else if n != 0 {
					t.Errorf("after the test: got %d invariant violations, want 0", n)
				}
			})
			fn(t, e)
		})
	}
}

func rawDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.InterpolateParams = true
	raw, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	raw.SetMaxOpenConns(4)
	t.Cleanup(func() { raw.Close() })
	return raw
}

func (e env) count(t *testing.T, q string, args ...any) int {
	t.Helper()
	var n int
	if err := e.raw.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

func id(prefix string) string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return prefix + "_" + hex.EncodeToString(b[:])
}

// t0 is a fixed, millisecond-precise instant; tests move through time from it.
var t0 = time.Date(2026, 3, 14, 9, 26, 53, 589_000_000, time.UTC)

func newBooking(customer string, scheduled bool) dispatch.NewBooking {
	start := t0
	if scheduled {
		start = t0.Add(3 * time.Hour)
	}
	return dispatch.NewBooking{
		ID:             id("bk"),
		CustomerID:     customer,
		Pickup:         dispatch.Place{Lat: 12.9716, Lng: 77.5946, Address: "MG Road, ಬೆಂಗಳೂರು \"₹\" 🚗"},
		Hours:          3,
		StartAt:        start,
		Scheduled:      scheduled,
		Car:            dispatch.Car{Transmission: dispatch.Manual},
		OTP:            "4821",
		Fare:           dispatch.DefaultTariff().Estimate(start, 3, 1),
		CreatedAt:      t0,
		IdempotencyKey: id("key"),
		RequestHash:    "hash-1",
	}
}

func create(t *testing.T, e env, scheduled bool) dispatch.Booking {
	t.Helper()
	b, created, err := e.db.CreateBooking(context.Background(), newBooking(id("cu"), scheduled))
	if err != nil || !created {
		t.Fatalf("CreateBooking: got created=%v, %v; want true, nil", created, err)
	}
	return b
}

// path lists the moves that bring a new searching booking to a state.
var path = map[dispatch.Status][]dispatch.Status{
	dispatch.StatusScheduled:   nil,
	dispatch.StatusSearching:   nil,
	dispatch.StatusAssigned:    {dispatch.StatusAssigned},
	dispatch.StatusArrived:     {dispatch.StatusAssigned, dispatch.StatusArrived},
	dispatch.StatusInProgress:  {dispatch.StatusAssigned, dispatch.StatusArrived, dispatch.StatusInProgress},
	dispatch.StatusCompleted:   {dispatch.StatusAssigned, dispatch.StatusArrived, dispatch.StatusInProgress, dispatch.StatusCompleted},
	dispatch.StatusCancelled:   {dispatch.StatusCancelled},
	dispatch.StatusUnfulfilled: {dispatch.StatusUnfulfilled},
}

// bookingIn returns a booking brought to state s through the store, with its own driver if it
// ever had one.
func bookingIn(t *testing.T, e env, s dispatch.Status) dispatch.Booking {
	t.Helper()
	b := create(t, e, s == dispatch.StatusScheduled)
	driver := dispatch.DriverRef{ID: id("dr"), Name: "Ravi", Rating: 4.8}
	for i, to := range path[s] {
		c := dispatch.Change{BookingID: b.ID, From: []dispatch.Status{b.Status}, To: to,
			Actor: "test", Reason: "setup", At: t0.Add(time.Duration(i+1) * time.Minute)}
		if to.Active() {
			c.Driver = &driver
		}
		var err error
		if b, err = e.db.Transition(context.Background(), c); err != nil {
			t.Fatalf("setup %s -> %s: %v", c.From[0], to, err)
		}
	}
	return b
}

func TestOpenRefusesBadDSN(t *testing.T) {
	for _, tc := range []struct {
		name, dsn string
		want      error
	}{
		{"garbage", "::not a dsn::", dispatch.ErrInvalid},
		{"no database", "root@tcp(127.0.0.1:3306)/", dispatch.ErrInvalid},
		{"nobody listening", "root@tcp(127.0.0.1:1)/dispatch", dispatch.ErrUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := store.Open(context.Background(), tc.dsn, store.Options{}, zerolog.Nop())
			if !errors.Is(err, tc.want) {
				t.Errorf("Open(%q): got %v, want %v", tc.dsn, err, tc.want)
			}
		})
	}
}

func TestMigrate(t *testing.T) {
	for _, b := range storetest.Backends() {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := b.DSN(t)
			db, err := store.Open(ctx, dsn, store.Options{}, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if ok, err := db.SchemaCurrent(ctx); ok || err != nil {
				t.Fatalf("SchemaCurrent before Migrate: got %v, %v; want false, nil", ok, err)
			}
			// Processes starting together take turns; the later ones find nothing to do.
			var wg sync.WaitGroup
			errs := make([]error, 3)
			for i := range errs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					other, err := store.Open(ctx, dsn, store.Options{}, zerolog.Nop())
					if err != nil {
						errs[i] = err
						return
					}
					defer other.Close()
					errs[i] = other.Migrate(ctx)
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("concurrent Migrate %d: got %v, want nil", i, err)
				}
			}
			if err := db.Migrate(ctx); err != nil {
				t.Fatalf("Migrate again: %v", err)
			}
			if ok, err := db.SchemaCurrent(ctx); !ok || err != nil {
				t.Fatalf("SchemaCurrent after Migrate: got %v, %v; want true, nil", ok, err)
			}
			if err := db.Ping(ctx); err != nil {
				t.Errorf("Ping: got %v, want nil", err)
			}
		})
	}
}
