package main

// Private Redis and MariaDB for the fault suite: real server processes on free loopback ports
// with fresh data directories under the test's temporary directory, started and killed by the
// test, so that killing them disturbs nothing else on the machine (never the shared instances
// on 6379 and 3306). A backend that cannot start fails the test, saying why; nothing is skipped.

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/loadtest/faultproxy"
	"github.com/go-sql-driver/mysql"
)

const (
	faultRedisBin     = "/usr/bin/redis-server"
	faultMariadbdBin  = "/usr/sbin/mariadbd"
	faultInstallDBBin = "/usr/bin/mariadb-install-db"
)

var (
	portsMu sync.Mutex
	ports   = map[int]bool{} // handed out by faultFreePort in this process
)

// faultFreePort asks the kernel for a free loopback port, never the same twice in this process
// (tests run in parallel). The port is free when this returns; a server started right after
// takes it (the backends retry on another port if some other process took it meanwhile).
func faultFreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	for {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !ports[port] {
			ports[port] = true
			return port
		}
	}
}

// faultProc is one backend server process.
type faultProc struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
}

func startFaultProc(t testing.TB, name, logPath, bin string, args ...string) *faultProc {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("%s log: %v", name, err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Die with the test binary, even when it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s (%s): %v", name, bin, err)
	}
	p := &faultProc{name: name, cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	return p
}

func (p *faultProc) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL (no chance to flush or say goodbye) and waits for the process to go.
func (p *faultProc) kill() {
	if p == nil || !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

func faultLogTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), n)
}

// faultRedis is a private redis-server without persistence: a restart comes back empty, the
// worst case for the engine (every position, lease and fence counter gone).
type faultRedis struct {
	t    testing.TB
	dir  string
	port int
	p    *faultProc
}

func startFaultRedis(t testing.TB) *faultRedis {
	t.Helper()
	r := &faultRedis{t: t, dir: t.TempDir()}
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		r.port = faultFreePort(t)
		if err = r.tryStart(); err == nil {
			t.Cleanup(func() { r.p.kill() })
			return r
		}
	}
	t.Fatalf("private redis-server did not start (%v):\n%s", err, faultLogTail(r.log(), 20))
	return nil
}

func (r *faultRedis) Addr() string { return fmt.Sprintf("127.0.0.1:%d", r.port) }

func (r *faultRedis) log() string { return filepath.Join(r.dir, "redis.log") }

// tryStart runs redis-server on its port and waits until it answers PING.
func (r *faultRedis) tryStart() error {
	r.t.Helper()
	r.p = startFaultProc(r.t, "redis-server", r.log(), faultRedisBin,
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", r.dir, "--daemonize", "no", "--databases", "1")
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := faultPingRedis(r.Addr())
		if err == nil {
			return nil
		}
		if !r.p.running() || time.Now().After(deadline) {
			r.p.kill()
			return fmt.Errorf("on %s: %w", r.Addr(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill kills redis-server with SIGKILL; Restart starts it again on the same port, empty.
func (r *faultRedis) Kill() { r.p.kill() }
func (r *faultRedis) Restart() {
	r.t.Helper()
	if err := r.tryStart(); err != nil {
		r.t.Fatalf("private redis-server did not start again (%v):\n%s", err, faultLogTail(r.log(), 20))
	}
}

func faultPingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// faultMaria is a private mariadbd with its own data directory, made by mariadb-install-db.
// It is durable as production is (innodb_flush_log_at_trx_commit=1): a SIGKILL loses nothing
// committed, and a restart runs InnoDB crash recovery on the same directory.
type faultMaria struct {
	t    testing.TB
	dir  string
	port int
	p    *faultProc
}

func startFaultMaria(t testing.TB) *faultMaria {
	t.Helper()
	m := &faultMaria{t: t, dir: t.TempDir()}
	// A temporary directory of its own: bootstrap servers running at once (tests run in parallel)
	// collide on their temporary tables' names in a shared /tmp.
	if err := os.MkdirAll(m.tmpdir(), 0o755); err != nil {
		t.Fatal(err)
	}
	var out []byte
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		_ = os.RemoveAll(m.datadir())
		out, err = exec.Command(faultInstallDBBin, "--no-defaults", "--auth-root-authentication-method=normal",
			"--datadir="+m.datadir(), "--tmpdir="+m.tmpdir(), "--user=root", "--skip-test-db",
			"--innodb-use-native-aio=0", "--innodb-buffer-pool-size=64M").CombinedOutput()
		if err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("mariadb-install-db into %s: %v\n%s", m.datadir(), err, tail(string(out), 80))
	}
	for attempt := 0; attempt < 3; attempt++ {
		m.port = faultFreePort(t)
		if err = m.tryStart(); err == nil {
			t.Cleanup(func() { m.p.kill() })
			return m
		}
	}
	t.Fatalf("private mariadbd did not start (%v):\n%s", err, faultLogTail(m.log(), 30))
	return nil
}

func (m *faultMaria) datadir() string { return filepath.Join(m.dir, "data") }
func (m *faultMaria) tmpdir() string  { return filepath.Join(m.dir, "tmp") }
func (m *faultMaria) log() string     { return filepath.Join(m.dir, "mariadb.err") }
func (m *faultMaria) Addr() string    { return fmt.Sprintf("127.0.0.1:%d", m.port) }

// DSN is a go-sql-driver DSN for database db on this server, at addr (the server's own address
// or a proxy in front of it).
func (m *faultMaria) DSN(addr, db string) string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName = "root", "tcp", addr, db
	return cfg.FormatDSN()
}

// tryStart runs mariadbd and waits until it answers a query (crash recovery included).
func (m *faultMaria) tryStart() error {
	m.t.Helper()
	m.p = startFaultProc(m.t, "mariadbd", m.log(), faultMariadbdBin, "--no-defaults",
		"--datadir="+m.datadir(), "--tmpdir="+m.tmpdir(), "--port="+strconv.Itoa(m.port), "--bind-address=127.0.0.1",
		"--socket="+filepath.Join(m.dir, "sock"), "--pid-file="+filepath.Join(m.dir, "pid"),
		"--log-error="+m.log(), "--user=root", "--skip-grant-tables", "--skip-name-resolve",
		"--innodb-buffer-pool-size=64M", "--innodb-use-native-aio=0", "--innodb-flush-log-at-trx-commit=1",
		"--skip-log-bin", "--performance-schema=off", "--max-connections=500")
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := m.ping()
		if err == nil {
			return nil
		}
		if !m.p.running() || time.Now().After(deadline) {
			m.p.kill()
			return fmt.Errorf("on %s: %w", m.Addr(), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *faultMaria) ping() error {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.Timeout = "root", "tcp", m.Addr(), time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return db.PingContext(ctx)
}

// Kill kills mariadbd with SIGKILL; Restart starts it again on the same data directory.
func (m *faultMaria) Kill() { m.p.kill() }

// Stop shuts mariadbd down cleanly (SIGTERM: connections are told the server is going away),
// as a planned restart or a managed database's maintenance does, and waits for it to go.
func (m *faultMaria) Stop() {
	m.t.Helper()
	if !m.p.running() {
		return
	}
	_ = m.p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.p.exited:
	case <-time.After(60 * time.Second):
		m.p.kill()
		m.t.Fatalf("mariadbd still running 60 s after SIGTERM")
	}
}

func (m *faultMaria) Restart() {
	m.t.Helper()
	if err := m.tryStart(); err != nil {
		m.t.Fatalf("private mariadbd did not start again (%v):\n%s", err, faultLogTail(m.log(), 30))
	}
}

// exec runs statements as root on the server itself (not through any proxy).
func (m *faultMaria) exec(stmts ...string) {
	m.t.Helper()
	db, err := sql.Open("mysql", m.DSN(m.Addr(), ""))
	if err != nil {
		m.t.Fatal(err)
	}
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			m.t.Fatalf("%s: %v", s, err)
		}
	}
}

// faultBackends are one test's private Redis and MariaDB, optionally each behind a fault proxy.
type faultBackends struct {
	redis  *faultRedis
	maria  *faultMaria
	rproxy *faultproxy.Proxy // nil when the engine talks to Redis directly
	mproxy *faultproxy.Proxy // nil when the engine talks to MariaDB directly
}

const faultDB = "dispatch"

func startFaultBackends(t testing.TB, proxied bool) *faultBackends {
	t.Helper()
	b := &faultBackends{redis: startFaultRedis(t), maria: startFaultMaria(t)}
	b.maria.exec("CREATE DATABASE " + faultDB + " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
	if proxied {
		var err error
		if b.rproxy, err = faultproxy.Listen(b.redis.Addr(), faultproxy.Options{}); err != nil {
			t.Fatalf("redis fault proxy: %v", err)
		}
		t.Cleanup(func() { b.rproxy.Close() })
		if b.mproxy, err = faultproxy.Listen(b.maria.Addr(), faultproxy.Options{MySQL: true}); err != nil {
			t.Fatalf("mariadb fault proxy: %v", err)
		}
		t.Cleanup(func() { b.mproxy.Close() })
	}
	return b
}

// RedisURL and DSN are what the engine is given: through the proxies when there are any.
func (b *faultBackends) RedisURL() string {
	if b.rproxy != nil {
		return "redis://" + b.rproxy.Addr()
	}
	return "redis://" + b.redis.Addr()
}

func (b *faultBackends) DSN() string {
	if b.mproxy != nil {
		return b.maria.DSN(b.mproxy.Addr(), faultDB)
	}
	return b.maria.DSN(b.maria.Addr(), faultDB)
}

// DirectDSN reaches MariaDB without the proxy, for the test's own checks.
func (b *faultBackends) DirectDSN() string { return b.maria.DSN(b.maria.Addr(), faultDB) }

// env is the engine's environment for these backends.
func (b *faultBackends) env() map[string]string {
	return map[string]string{"REDIS_URL": b.RedisURL(), "MYSQL_DSN": b.DSN(), "DISPATCH_MIGRATE": "true"}
}
