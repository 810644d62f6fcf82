// Package store keeps the business in MySQL (RDS MySQL 8.0 in deployment, MariaDB 10.11 in the tests, go-mysql-server in
// process for development): bookings and their append-only history, offers, drivers' profiles,
// idempotency keys, and the transactional outbox from which booking events reach the realtime
// layer. It implements dispatch.BookingStore and owns the schema (goose migrations embedded from
// migrations/*.sql).
//
// It must not hold business rules beyond what keeps the data true: every change of a booking is one
// conditional UPDATE, made in one transaction with its audit row and its outbox event; an
// assignment puts the booking's block in the driver's calendar (driver_blocks) under a lock of
// the driver's calendar row, which makes it impossible for a driver to hold two overlapping
// bookings, whatever the callers do (book, in people.go). Driver errors are translated into dispatch's errors (ErrNotFound,
// ErrConflict, ErrInvalid, ErrUnavailable); the original error stays in the chain for errors.As.
//
// All methods of DB are safe for concurrent use by many goroutines and many processes.
//
// # Dialect
//
// The SQL is the subset that MariaDB 10.11 and go-mysql-server v0.20.0 both accept. Deliberately
// avoided: FOR UPDATE / SKIP LOCKED (the outbox is claimed with a conditional UPDATE instead, and
// bookings are changed with conditional UPDATEs, never read-then-write), foreign keys, NOW() and
// other server clocks (every time comes from the Go process, in UTC, truncated to milliseconds),
// native JSON columns (JSON is stored as text, so it comes back byte for byte), savepoints and
// server-side prepared statements (the DSN gets interpolateParams=true). Write transactions run at
// READ COMMITTED on MariaDB, so inserts never meet gap locks; go-mysql-server accepts the setting
// and store/embedded runs its transactions one at a time, which is stricter still. Named locks
// (Migrate) are polled with GET_LOCK(name, 0), never waited for inside the server, because a
// waiting statement would hold store/embedded's gate. Lengths are checked in Go before MySQL does,
// because the two servers report an oversized value with different error numbers.
//
// The state machine the store enforces (see next in bookings.go) is the one of API.md plus two
// moves dispatch.Service makes: scheduled -> assigned (a dispatcher's early assignment) and
// arrived -> searching (a driver cancelling after arriving). Completing a trip also records it
// (trips: route, distance, times, final fare) in the same transaction; completions asked for at
// the same time share one transaction (Transition, CompleteTrips).
//
// # Durability
//
// "Committed" means on disk only if the server is configured so, and the claims of this package
// (every booking change and its outbox event survive a crash once the call returned; the relay
// loses no event) rely on these server settings, MySQL's and MariaDB's alike, which ops must keep
// (production's RDS parameter group in deploy/cloudformation/data.yml sets them; OPERATIONS.md):
//
//   - innodb_flush_log_at_trx_commit = 1: InnoDB writes and fsyncs its redo log at every commit.
//     With 2 (written, fsynced once a second) or 0, a server or machine crash loses up to a second
//     of committed changes, outbox events included.
//   - sync_binlog = 1 whenever log_bin is on (replicas, point-in-time recovery): the binary log is
//     fsynced at every commit group, so a replica or a restore never misses a change the primary
//     acknowledged. With 0, changes acknowledged before a crash can be missing from the binlog.
//   - InnoDB tables (the default engine; the migrations name no other) and innodb_doublewrite = 1
//     (the default), so a torn page write cannot corrupt committed data.
//
// The test MariaDB 10.11 has the first and the last by default, and log_bin off; check a server
// with SELECT @@innodb_flush_log_at_trx_commit, @@sync_binlog, @@log_bin. The embedded
// go-mysql-server keeps nothing on disk and makes no durability claim at all.
package store

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"database/sql/driver"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-sql-driver/mysql"
	"github.com/pressly/goose/v3"
	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/dispatch"
)

//go:embed migrations/*.sql
var migrations embed.FS

var _ dispatch.BookingStore = (*DB)(nil)

// Options tune a DB. Zero values take the defaults named on each field.
type Options struct {
	// MaxOpenConns bounds the connection pool (default 32; Migrate needs 2); MaxIdleConns
	// defaults to it.
	MaxOpenConns int
	MaxIdleConns int
	// ConnMaxLifetime recycles connections (default 5 minutes), so a fail-over is picked up.
	ConnMaxLifetime time.Duration
	// RelayBatch is how many outbox rows a relay claims at a time (default 200).
	RelayBatch int
	// RelayLease is how long a claim keeps other relays off the rows (default 30 s); rows whose
	// relay died are published by another one after it.
	RelayLease time.Duration
	// TxAttempts is how many times a transaction chosen as a deadlock victim is run (default 3).
	TxAttempts int
	// CompletionBatch is the most trip completions that Transition commits together in one
	// transaction (default 64; 1 commits each alone), and CompletionCommitters how many such
	// transactions run at once (default 4). See Transition.
	CompletionBatch      int
	CompletionCommitters int
	// CAFile is a PEM bundle of the certificate authorities the server's certificate must chain
	// to (RDS: its global-bundle.pem). The DSN must then say tls=true: the connection is
	// encrypted and the server verified against these authorities alone, by host name. Empty:
	// the DSN's tls setting as it is (tls=true verifies against the system's authorities).
	CAFile string
}

func (o Options) withDefaults() Options {
	if o.MaxOpenConns <= 0 {
		o.MaxOpenConns = 32
	}
	if o.MaxIdleConns <= 0 {
		o.MaxIdleConns = o.MaxOpenConns
	}
	if o.ConnMaxLifetime <= 0 {
		o.ConnMaxLifetime = 5 * time.Minute
	}
	if o.RelayBatch <= 0 {
		o.RelayBatch = 200
	}
	if o.RelayLease <= 0 {
		o.RelayLease = 30 * time.Second
	}
	if o.TxAttempts <= 0 {
		o.TxAttempts = 3
	}
	if o.CompletionBatch <= 0 {
		o.CompletionBatch = 64
	}
	if o.CompletionCommitters <= 0 {
		o.CompletionCommitters = 4
	}
	return o
}

// DB is the MySQL store. Close it when done.
type DB struct {
	db     *sql.DB
	opts   Options
	log    zerolog.Logger
	addr   string // host:port/db, for messages
	goose  *goose.Provider
	target []int64 // migration versions the binary knows

	// Grouped completions (trips.go): Transition queues them, the committers take them.
	completions chan *pendingCompletion
	stop        chan struct{}
	committers  sync.WaitGroup
	closeOnce   sync.Once
}

// Open connects to the database named in dsn (a go-sql-driver DSN) and checks that it answers.
// It sets parseTime=true, loc=UTC, time_zone='+00:00' (unless given), interpolateParams=true and a
// 5 s dial timeout (unless given); it does not migrate (see Migrate). An unreachable server is
// ErrUnavailable.
func Open(ctx context.Context, dsn string, opts Options, log zerolog.Logger) (*DB, error) {
	cfg, err := parseDSN(dsn, opts)
	if err != nil {
		return nil, err
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	cfg.RejectReadOnly = true
	if _, ok := cfg.Params["time_zone"]; !ok {
		cfg.Params["time_zone"] = "'+00:00'"
	}
	opts = opts.withDefaults()
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql connector: %w", withKind(dispatch.ErrInvalid, err))
	}
	sqlDB := sql.OpenDB(connector)
	sqlDB.SetMaxOpenConns(opts.MaxOpenConns)
	sqlDB.SetMaxIdleConns(opts.MaxIdleConns)
	sqlDB.SetConnMaxLifetime(opts.ConnMaxLifetime)

	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("migrations: %w", err)
	}
	p, err := goose.NewProvider(goose.DialectMySQL, sqlDB, sub, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("goose provider: %w", err)
	}
	d := &DB{
		db:    sqlDB,
		opts:  opts,
		log:   log.With().Str("component", "store").Logger(),
		addr:  cfg.Addr + "/" + cfg.DBName,
		goose: p,
	}
	for _, s := range p.ListSources() {
		d.target = append(d.target, s.Version)
	}
	if err := d.Ping(ctx); err != nil {
		sqlDB.Close()
		return nil, err
	}
	d.startCommitters()
	return d, nil
}

// parseDSN parses dsn (which must name a database) into what Open and rawConn share: TLS
// against opts.CAFile when given, interpolateParams=true, a 5 s dial timeout unless given, and
// Params ready to add to. Its errors wrap dispatch.ErrInvalid.
func parseDSN(dsn string, opts Options) (*mysql.Config, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse mysql dsn: %w", withKind(dispatch.ErrInvalid, err))
	}
	if cfg.DBName == "" {
		return nil, fmt.Errorf("mysql dsn names no database: %w", dispatch.ErrInvalid)
	}
	if opts.CAFile != "" {
		if err := trustOnly(cfg, opts.CAFile); err != nil {
			return nil, fmt.Errorf("mysql tls: %w", withKind(dispatch.ErrInvalid, err))
		}
	}
	cfg.InterpolateParams = true
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	return cfg, nil
}

// trustOnly makes cfg verify the server against the authorities of the PEM file caFile. It
// sets the parsed Config's TLS directly rather than mysql.RegisterTLSConfig, which would keep
// the pool in the driver's global registry under a name every DSN of the process could use.
func trustOnly(cfg *mysql.Config, caFile string) error {
	if cfg.TLSConfig != "true" || cfg.TLS == nil {
		return fmt.Errorf("a CA file (%s) is given, so the DSN must say tls=true, not tls=%q", caFile, cfg.TLSConfig)
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	cfg.TLS.RootCAs = pool
	cfg.TLS.InsecureSkipVerify = false
	cfg.TLS.MinVersion = tls.VersionTLS12
	return nil
}

// Close stops the committers of grouped completions (waiting for the transactions they are
// running) and closes the connection pool. Other in-flight calls fail; call it last.
func (d *DB) Close() error {
	d.closeOnce.Do(func() {
		close(d.stop)
		d.committers.Wait()
	})
	return d.db.Close()
}

// Ping checks that the database answers (ErrUnavailable when it does not).
func (d *DB) Ping(ctx context.Context) error {
	if err := d.db.PingContext(ctx); err != nil {
		return fmt.Errorf("ping mysql %s: %w", d.addr, withKind(dispatch.ErrUnavailable, err))
	}
	return nil
}

// migrateLock serialises Migrate across processes (GET_LOCK is per server, held by a connection).
const migrateLock = "dispatch.migrate"

// Migrate applies the pending migrations. Several processes may call it at once: they take turns
// under a named lock (waiting up to 2 minutes), and the later ones find nothing to do. It uses two
// connections at once, so Options.MaxOpenConns must be at least 2. MariaDB commits each DDL
// statement by itself: a migration that fails half way is not rolled back.
func (d *DB) Migrate(ctx context.Context) error {
	conn, err := d.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", d.addr, translate(err))
	}
	defer conn.Close()
	if err := takeLock(ctx, conn, migrateLock, 2*time.Minute); err != nil {
		return fmt.Errorf("migrate %s: %w", d.addr, err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT RELEASE_LOCK(?)", migrateLock)
	res, err := d.goose.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", d.addr, translate(err))
	}
	for _, r := range res {
		d.log.Info().Int64("version", r.Source.Version).Str("file", r.Source.Path).Float64("took_ms", float64(r.Duration.Microseconds())/1000).Msg("migration applied")
	}
	return nil
}

// takeLock takes a named lock on conn, polling rather than blocking in the server: a statement
// that waits inside store/embedded would hold up every other connection.
func takeLock(ctx context.Context, conn *sql.Conn, name string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK(?, 0)", name).Scan(&got); err != nil {
			return fmt.Errorf("take lock %s: %w", name, translate(err))
		}
		if got.Valid && got.Int64 == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lock %s held elsewhere for %s: %w", name, wait, dispatch.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("take lock %s: %w", name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// SchemaCurrent reports whether every migration this binary knows has been applied (for /readyz).
// It only reads: a database never migrated answers false, not an error.
func (d *DB) SchemaCurrent(ctx context.Context) (bool, error) {
	var n int
	err := d.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables
		WHERE table_schema = DATABASE() AND table_name = 'goose_db_version'`).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("schema version: %w", translate(err))
	}
	if n == 0 {
		return false, nil
	}
	rows, err := d.db.QueryContext(ctx, "SELECT version_id FROM goose_db_version WHERE is_applied = 1")
	if err != nil {
		return false, fmt.Errorf("schema version: %w", translate(err))
	}
	defer rows.Close()
	applied := map[int64]bool{}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return false, fmt.Errorf("schema version: %w", translate(err))
		}
		applied[v] = true
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("schema version: %w", translate(err))
	}
	for _, v := range d.target {
		if !applied[v] {
			return false, nil
		}
	}
	return true, nil
}

// inTx runs fn in a READ COMMITTED transaction, committing when fn returns nil. A deadlock victim
// is run again, up to Options.TxAttempts times in all; fn must not keep state between runs.
func (d *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	var err error
	for attempt := 1; ; attempt++ {
		err = d.tryTx(ctx, fn)
		if err == nil || !isErrno(err, errDeadlock) || attempt >= d.opts.TxAttempts || ctx.Err() != nil {
			return err
		}
	}
}

func (d *DB) tryTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return translate(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return translate(err)
	}
	return nil
}

// MySQL error numbers the store gives a meaning to.
const (
	errDupEntry      = 1062
	errLockWait      = 1205
	errDeadlock      = 1213
	errDataTooLong   = 1406
	errOutOfRange    = 1264
	errCheckViolated = 4025 // MariaDB; MySQL says 3819
	errNoSuchTable   = 1146
	// The server going away in good order (a clean restart, maintenance, a fail-over): what a
	// connection is told instead of being cut. Unavailable, as a cut connection is.
	errTooManyConns     = 1040
	errServerShutdown   = 1053
	errQueryInterrupted = 1317
	errConnKilled       = 1927 // MariaDB
)

func isErrno(err error, n uint16) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && me.Number == n
}

// withKind gives a driver's error (or the store's own reason) a domain kind, as the cause of a
// dispatch.Error: errors.Is finds the kind, errors.As the driver's error, and the message is the
// kind's then the cause's. A client is told the cause only when it is plain text (dispatch.Message).
func withKind(kind *dispatch.Error, err error) error {
	return &dispatch.Error{Kind: kind.Kind, Msg: kind.Msg, Err: err}
}

// translate maps driver errors to dispatch errors; errors it does not know pass unchanged, and
// so does a cancelled context. A deadline that ran out is unavailable: MySQL did not answer in
// time.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var de *dispatch.Error
	var me *mysql.MySQLError
	var ne net.Error
	switch {
	case errors.As(err, &de):
		return err
	case errors.Is(err, sql.ErrNoRows):
		return withKind(dispatch.ErrNotFound, err)
	case errors.As(err, &me):
		switch me.Number {
		case errDupEntry:
			return withKind(dispatch.ErrConflict, err)
		case errDeadlock, errLockWait, errTooManyConns, errServerShutdown, errQueryInterrupted, errConnKilled:
			return withKind(dispatch.ErrUnavailable, err)
		case errDataTooLong, errOutOfRange, errCheckViolated, 3819:
			return withKind(dispatch.ErrInvalid, err)
		}
		return err
	case errors.Is(err, context.Canceled):
		return err // the caller gave up: nothing to say of the server
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, mysql.ErrInvalidConn) ||
		errors.Is(err, sql.ErrConnDone) || errors.As(err, &ne):
		return withKind(dispatch.ErrUnavailable, err)
	}
	return err
}

// now is the store's clock when a caller gives no time: UTC, milliseconds, like every stored time.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// dbTime is t as stored: UTC, milliseconds; the zero time means now.
func dbTime(t time.Time) time.Time {
	if t.IsZero() {
		return now()
	}
	return t.UTC().Truncate(time.Millisecond)
}

func newID(prefix string) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return prefix + "_" + hex.EncodeToString(b[:])
}

// checkLen refuses a value the column cannot hold, before MySQL does so in its own way.
func checkLen(field, v string, most int, required bool) error {
	switch {
	case required && v == "":
		return fmt.Errorf("%s is required: %w", field, dispatch.ErrInvalid)
	case utf8.RuneCountInString(v) > most: // VARCHAR(n) counts characters
		return fmt.Errorf("%s longer than %d characters: %w", field, most, dispatch.ErrInvalid)
	}
	return nil
}
