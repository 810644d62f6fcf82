//go:build !prod

// Package embedded runs an in-process, in-memory MySQL-compatible server (go-mysql-server) for
// `make run` without a MYSQL_DSN and for tests. It speaks the MySQL wire protocol on 127.0.0.1, so
// store talks to it through the ordinary go-sql-driver client exactly as it talks to MariaDB.
//
// It is never linked into the production binary (build tag !prod) and keeps nothing on disk:
// everything is lost when it stops.
//
// # Differences from MariaDB that callers must know
//
// go-mysql-server's in-memory tables have no concurrency control: a transaction works on its own
// copy of each table it touches and COMMIT writes those copies back whole, so two transactions
// running at the same time lose each other's writes and never see each other's unique keys.
// This package therefore serialises transactions across all connections: a connection takes a
// server-wide gate for each statement outside a transaction and holds it from START TRANSACTION
// (or the first statement with autocommit off) until COMMIT, ROLLBACK or disconnect. The result is
// strict serial execution, so unique keys, conditional updates and rollbacks behave as on
// MariaDB, only slower. A connection that waits more than LockWait for the gate gets MySQL error
// 1205 (lock wait timeout). Two consequences: a client that opens a transaction on one connection
// and then, from the same goroutine, waits for a statement on another connection deadlocks until
// that timeout; and a statement that blocks inside the server (GET_LOCK with a timeout, SLEEP)
// holds everyone up while it waits, so poll GET_LOCK(name, 0) instead. store does neither.
//
// Other differences met so far, all handled in store: a violated CHECK constraint and a value too
// long for its column are error 1105 (MariaDB: 4025 and 1406), so store checks lengths itself;
// SELECT ... FOR UPDATE is accepted (the gate makes it moot; store does not use it); goose's version
// table, information_schema.tables, GET_LOCK/RELEASE_LOCK, UPDATE/DELETE ... ORDER BY ... LIMIT,
// INSERT ... ON DUPLICATE KEY UPDATE, unique secondary keys (error 1062), SET TRANSACTION
// ISOLATION LEVEL and SET time_zone all work as on MariaDB.
//
// The engine logs through logrus, a process-wide logger: Start routes its warnings and errors to
// the zerolog.Logger given to the latest Start and drops the rest.
package embedded

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sqle "github.com/dolthub/go-mysql-server"
	"github.com/dolthub/go-mysql-server/memory"
	"github.com/dolthub/go-mysql-server/server"
	"github.com/dolthub/go-mysql-server/sql"
	"github.com/dolthub/vitess/go/mysql"
	"github.com/dolthub/vitess/go/sqltypes"
	querypb "github.com/dolthub/vitess/go/vt/proto/query"
	"github.com/rs/zerolog"
	"github.com/sirupsen/logrus"
)

// Database is the name of the database the server holds.
const Database = "dispatch"

// LockWait is how long a statement waits for another connection's transaction to end before it
// fails with error 1205.
const LockWait = 15 * time.Second

var (
	logrusOnce sync.Once
	// engineLog receives the engine's warnings: logrus is process-wide, so the logger given to the
	// latest Start gets those of every running server.
	engineLog atomic.Pointer[zerolog.Logger]
)

// Start starts a server on a free port of 127.0.0.1 with an empty database named Database and
// returns a go-sql-driver DSN for it (user root, no password). The server runs until stop is
// called or ctx is done; stop is safe to call more than once and waits for nothing.
func Start(ctx context.Context, log zerolog.Logger) (dsn string, stop func(), err error) {
	l := log.With().Str("component", "embedded-mysql").Logger()
	engineLog.Store(&l)
	logrusOnce.Do(func() {
		logrus.SetOutput(io.Discard)
		logrus.SetLevel(logrus.WarnLevel)
		logrus.AddHook(zerologHook{})
	})

	db := memory.NewDatabase(Database)
	db.BaseDatabase.EnablePrimaryKeyIndexes()
	pro := memory.NewDBProvider(db)
	engine := sqle.NewDefault(pro)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("embedded mysql: listen: %w", err)
	}
	cfg := server.Config{Protocol: "tcp", Address: ln.Addr().String(), Listener: ln}
	g := newGate(LockWait)
	wrap := func(h mysql.Handler) (mysql.Handler, error) { return &serialHandler{Handler: h, gate: g}, nil }
	srv, err := server.NewServerWithHandler(cfg, engine, sql.NewContext, memory.NewSessionBuilder(pro), nil, wrap)
	if err != nil {
		ln.Close()
		return "", nil, fmt.Errorf("embedded mysql: new server: %w", err)
	}
	go func() {
		if err := srv.Start(); err != nil {
			log.Error().Err(err).Msg("embedded mysql stopped")
		}
	}()

	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := srv.Close(); err != nil {
				log.Warn().Err(err).Msg("embedded mysql: close")
			}
			engine.Close()
		})
	}
	context.AfterFunc(ctx, stop)
	return fmt.Sprintf("root@tcp(%s)/%s", ln.Addr().String(), Database), stop, nil
}

// gate is the server-wide mutex described in the package doc. holders records which connection
// holds it; a connection's commands run one at a time, so only the gate's own fields need mu.
type gate struct {
	sem     chan struct{}
	wait    time.Duration
	mu      sync.Mutex
	holders map[uint32]bool
}

func newGate(wait time.Duration) *gate {
	return &gate{sem: make(chan struct{}, 1), wait: wait, holders: make(map[uint32]bool)}
}

func (g *gate) held(c *mysql.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.holders[c.ConnectionID]
}

// enter takes the gate for c unless c already holds it.
func (g *gate) enter(ctx context.Context, c *mysql.Conn) error {
	if g.held(c) {
		return nil
	}
	t := time.NewTimer(g.wait)
	defer t.Stop()
	select {
	case g.sem <- struct{}{}:
	case <-t.C:
		return mysql.NewSQLError(mysql.ERLockWaitTimeout, mysql.SSUnknownSQLState,
			"Lock wait timeout exceeded; embedded server busy with another transaction")
	case <-ctx.Done():
		return mysql.NewSQLError(mysql.ERQueryInterrupted, mysql.SSUnknownSQLState, "query interrupted: %v", ctx.Err())
	}
	g.mu.Lock()
	g.holders[c.ConnectionID] = true
	g.mu.Unlock()
	return nil
}

// leave gives the gate back unless c is inside a transaction (force: give it back anyway).
func (g *gate) leave(c *mysql.Conn, force bool) {
	if !force && c.StatusFlags&mysql.ServerInTransaction != 0 {
		return
	}
	g.mu.Lock()
	held := g.holders[c.ConnectionID]
	delete(g.holders, c.ConnectionID)
	g.mu.Unlock()
	if held {
		<-g.sem
	}
}

// serialHandler runs every command that touches data under the gate. It embeds the interface, not
// the concrete handler, so the listener sees only mysql.Handler and cannot bypass the wrapper
// through the extended (pre-parsed) entry points.
type serialHandler struct {
	mysql.Handler
	gate *gate
}

func (h *serialHandler) ComQuery(ctx context.Context, c *mysql.Conn, query string, cb mysql.ResultSpoolFn) error {
	if err := h.gate.enter(ctx, c); err != nil {
		return err
	}
	defer h.gate.leave(c, false)
	return h.Handler.ComQuery(ctx, c, query, cb)
}

func (h *serialHandler) ComMultiQuery(ctx context.Context, c *mysql.Conn, query string, cb mysql.ResultSpoolFn) (string, error) {
	if err := h.gate.enter(ctx, c); err != nil {
		return "", err
	}
	defer h.gate.leave(c, false)
	return h.Handler.ComMultiQuery(ctx, c, query, cb)
}

func (h *serialHandler) ComPrepare(ctx context.Context, c *mysql.Conn, query string, p *mysql.PrepareData) ([]*querypb.Field, error) {
	if err := h.gate.enter(ctx, c); err != nil {
		return nil, err
	}
	defer h.gate.leave(c, false)
	return h.Handler.ComPrepare(ctx, c, query, p)
}

func (h *serialHandler) ComStmtExecute(ctx context.Context, c *mysql.Conn, p *mysql.PrepareData, cb func(*sqltypes.Result) error) error {
	if err := h.gate.enter(ctx, c); err != nil {
		return err
	}
	defer h.gate.leave(c, false)
	return h.Handler.ComStmtExecute(ctx, c, p, cb)
}

func (h *serialHandler) ComResetConnection(c *mysql.Conn) error {
	defer h.gate.leave(c, true)
	return h.Handler.ComResetConnection(c)
}

func (h *serialHandler) ConnectionClosed(c *mysql.Conn) {
	defer h.gate.leave(c, true)
	h.Handler.ConnectionClosed(c)
}

// zerologHook forwards the engine's logrus warnings and errors to engineLog.
type zerologHook struct{}

func (zerologHook) Levels() []logrus.Level {
	return []logrus.Level{logrus.PanicLevel, logrus.FatalLevel, logrus.ErrorLevel, logrus.WarnLevel}
}

func (zerologHook) Fire(e *logrus.Entry) error {
	log := engineLog.Load()
	// The server warns at every start that LOAD DATA may read any file; it listens on loopback
	// only and has no users but root, so that is noise here.
	if log == nil || strings.Contains(e.Message, "secure_file_priv") || strings.Contains(e.Message, "GRANT FILE") {
		return nil
	}
	ev := log.Warn()
	if e.Level <= logrus.ErrorLevel {
		ev = log.Error()
	}
	for k, v := range e.Data {
		ev = ev.Interface(k, v)
	}
	ev.Msg(e.Message)
	return nil
}
