package store

import (
	"bufio"
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/drivers4me/dispatch/dispatch"
)

// A logical backup is gzip-compressed SQL text, one statement per line, which Restore reads
// back and nothing else needs to:
//
//	-- dispatchd backup 1
//	-- taken <RFC 3339 time> from <host:port/db>
//	SET NAMES utf8mb4;
//	SET FOREIGN_KEY_CHECKS=0;
//	CREATE TABLE `t` (...);            (SHOW CREATE TABLE, its newlines turned into spaces)
//	INSERT INTO `t` (`a`,`b`) VALUES (...),(...);
//	-- end <tables> tables <rows> rows
//
// Every value is a hex literal: X'..' for binary columns, _utf8mb4 X'..' for the others (MySQL
// converts it to the column's type as it would the text the server printed), so no escaping
// or character set can garble a value and no line holds a newline. The trailer is checked:
// a truncated backup is refused.
const (
	backupMagic    = "-- dispatchd backup 1"
	backupMaxLine  = 16 << 20 // a CREATE TABLE or one INSERT batch
	backupBatchLen = 1 << 20  // an INSERT batch stops growing past this many bytes
)

// BackupStats says what a backup or a restore held.
type BackupStats struct {
	Tables int
	Rows   int64
}

// rawConn opens one connection to the database of dsn without the conversions Open asks for
// (no parseTime): values come back as the text the server prints, which is what a logical
// backup must keep. CAFile applies as in Open. op names the caller in its errors; an
// unreachable server is ErrUnavailable. The caller calls closeAll when done with conn.
func rawConn(ctx context.Context, dsn string, opts Options, op string) (conn *sql.Conn, cfg *mysql.Config, closeAll func(), err error) {
	cfg, err = parseDSN(dsn, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg.ParseTime = false
	cfg.Params["time_zone"] = "'+00:00'"
	connector, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("mysql connector: %w", withKind(dispatch.ErrInvalid, err))
	}
	db := sql.OpenDB(connector)
	db.SetMaxOpenConns(1)
	conn, err = db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, nil, fmt.Errorf("%s %s/%s: %w", op, cfg.Addr, cfg.DBName, withKind(dispatch.ErrUnavailable, err))
	}
	return conn, cfg, func() { conn.Close(); db.Close() }, nil
}

func quoteIdent(name string) string { return "`" + strings.ReplaceAll(name, "`", "``") + "`" }

// binaryType are the column types whose values are bytes, not text.
func binaryType(dbType string) bool {
	switch strings.ToUpper(dbType) {
	case "BINARY", "VARBINARY", "BLOB", "TINYBLOB", "MEDIUMBLOB", "LONGBLOB", "BIT", "GEOMETRY":
		return true
	}
	return false
}

// Backup writes a consistent logical backup of every base table of dsn's database to w,
// gzip-compressed: one REPEATABLE READ transaction WITH CONSISTENT SNAPSHOT, so the tables are
// as they were at one instant while writers carry on (InnoDB; nothing is locked but the
// tables' metadata, so a migration waits for the backup to end). It returns what it wrote;
// on error w holds a partial backup, which Restore refuses.
func Backup(ctx context.Context, dsn string, opts Options, w io.Writer) (BackupStats, error) {
	var st BackupStats
	conn, cfg, closeAll, err := rawConn(ctx, dsn, opts, "backup")
	if err != nil {
		return st, err
	}
	defer closeAll()
	for _, q := range []string{
		"SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
		"START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY",
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return st, fmt.Errorf("backup: %s: %w", q, translate(err))
		}
	}
	defer conn.ExecContext(context.Background(), "ROLLBACK") //nolint:errcheck // read-only: nothing to keep

	zw := gzip.NewWriter(w)
	bw := bufio.NewWriterSize(zw, 256<<10)
	fmt.Fprintf(bw, "%s\n-- taken %s from %s/%s\nSET NAMES utf8mb4;\nSET FOREIGN_KEY_CHECKS=0;\n",
		backupMagic, time.Now().UTC().Format(time.RFC3339), cfg.Addr, cfg.DBName)

	var tables []string
	rows, err := conn.QueryContext(ctx, "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME")
	if err != nil {
		return st, fmt.Errorf("backup: list tables: %w", translate(err))
	}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			rows.Close()
			return st, err
		}
		tables = append(tables, name)
	}
	if err := rows.Close(); err != nil {
		return st, err
	}
	for _, table := range tables {
		n, err := backupTable(ctx, conn, bw, table)
		if err != nil {
			return st, fmt.Errorf("backup table %s: %w", table, err)
		}
		st.Tables++
		st.Rows += n
	}
	fmt.Fprintf(bw, "-- end %d tables %d rows\n", st.Tables, st.Rows)
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("backup: write: %w", err)
	}
	if err := zw.Close(); err != nil {
		return st, fmt.Errorf("backup: write: %w", err)
	}
	return st, nil
}

func backupTable(ctx context.Context, conn *sql.Conn, w *bufio.Writer, table string) (int64, error) {
	var name, create string
	if err := conn.QueryRowContext(ctx, "SHOW CREATE TABLE "+quoteIdent(table)).Scan(&name, &create); err != nil {
		return 0, translate(err)
	}
	fmt.Fprintf(w, "%s;\n", strings.ReplaceAll(strings.ReplaceAll(create, "\r", " "), "\n", " "))

	rows, err := conn.QueryContext(ctx, "SELECT * FROM "+quoteIdent(table))
	if err != nil {
		return 0, translate(err)
	}
	defer rows.Close()
	cols, err := rows.ColumnTypes()
	if err != nil {
		return 0, err
	}
	names := make([]string, len(cols))
	binary := make([]bool, len(cols))
	for i, c := range cols {
		names[i] = quoteIdent(c.Name())
		binary[i] = binaryType(c.DatabaseTypeName())
	}
	head := "INSERT INTO " + quoteIdent(table) + " (" + strings.Join(names, ",") + ") VALUES "
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	var stmt strings.Builder
	flush := func() {
		if stmt.Len() > 0 {
			w.WriteString(stmt.String())
			w.WriteString(";\n")
			stmt.Reset()
		}
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		if stmt.Len() == 0 {
			stmt.WriteString(head)
		} else {
			stmt.WriteByte(',')
		}
		stmt.WriteByte('(')
		for i, v := range vals {
			if i > 0 {
				stmt.WriteByte(',')
			}
			switch {
			case v == nil:
				stmt.WriteString("NULL")
			case binary[i]:
				stmt.WriteString("X'" + hex.EncodeToString(v) + "'")
			default:
				stmt.WriteString("_utf8mb4 X'" + hex.EncodeToString(v) + "'")
			}
		}
		stmt.WriteByte(')')
		n++
		if stmt.Len() >= backupBatchLen {
			flush()
		}
	}
	if err := rows.Err(); err != nil {
		return n, translate(err)
	}
	flush()
	return n, nil
}

// Restore loads a backup written by Backup into dsn's database, which must hold no table
// (restore into a fresh database, then point the application at it: OPERATIONS.md). It runs
// only the statement kinds Backup writes, and refuses a backup that is not one, is truncated
// or does not decompress; on any error it drops the tables it created, leaving the database
// empty as it found it. It returns what it loaded.
func Restore(ctx context.Context, dsn string, opts Options, r io.Reader) (BackupStats, error) {
	var st BackupStats
	conn, cfg, closeAll, err := rawConn(ctx, dsn, opts, "restore")
	if err != nil {
		return st, err
	}
	defer closeAll()
	var existing int
	if err := conn.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()").Scan(&existing); err != nil {
		return st, fmt.Errorf("restore: %w", translate(err))
	}
	if existing > 0 {
		return st, fmt.Errorf("restore into %s/%s: the database holds %d tables; restore into a new, empty database: %w", cfg.Addr, cfg.DBName, existing, dispatch.ErrConflict)
	}
	var created []string
	st, err = restore(ctx, conn, r, &created)
	if err != nil {
		for i := len(created) - 1; i >= 0; i-- {
			conn.ExecContext(context.Background(), "DROP TABLE IF EXISTS "+quoteIdent(created[i])) //nolint:errcheck // best effort; the error returned is the cause
		}
		return BackupStats{}, err
	}
	return st, nil
}

func restore(ctx context.Context, conn *sql.Conn, r io.Reader, created *[]string) (BackupStats, error) {
	var st BackupStats
	zr, err := gzip.NewReader(r)
	if err != nil {
		return st, fmt.Errorf("restore: not a gzip stream: %w", withKind(dispatch.ErrInvalid, err))
	}
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 64<<10), backupMaxLine)
	line := 0
	bad := func(format string, args ...any) error {
		return fmt.Errorf("restore: line %d: %s: %w", line, fmt.Sprintf(format, args...), dispatch.ErrInvalid)
	}
	ended := false
	for sc.Scan() {
		line++
		text := sc.Text()
		switch {
		case line == 1:
			if text != backupMagic {
				return st, bad("not a dispatchd backup (want %q first)", backupMagic)
			}
			continue
		case ended:
			return st, bad("text after the end marker")
		case strings.HasPrefix(text, "-- end "):
			var tables int
			var rows int64
			if _, err := fmt.Sscanf(text, "-- end %d tables %d rows", &tables, &rows); err != nil || tables != st.Tables || rows != st.Rows {
				return st, bad("the end marker %q does not match what was read (%d tables, %d rows)", text, st.Tables, st.Rows)
			}
			ended = true
			continue
		case strings.HasPrefix(text, "-- "):
			continue
		case text == "SET NAMES utf8mb4;", text == "SET FOREIGN_KEY_CHECKS=0;":
		case strings.HasPrefix(text, "CREATE TABLE `"):
			name, err := identAfter(text, "CREATE TABLE ")
			if err != nil {
				return st, bad("%v", err)
			}
			*created = append(*created, name)
			st.Tables++
		case strings.HasPrefix(text, "INSERT INTO `"):
			n, err := countTuples(text)
			if err != nil {
				return st, bad("%v", err)
			}
			st.Rows += n
		default:
			return st, bad("unexpected statement %.40q", text)
		}
		if _, err := conn.ExecContext(ctx, strings.TrimSuffix(text, ";")); err != nil {
			return st, fmt.Errorf("restore: line %d: %w", line, translate(err))
		}
	}
	if err := sc.Err(); err != nil {
		return st, fmt.Errorf("restore: read line %d: %w", line+1, withKind(dispatch.ErrInvalid, err))
	}
	if !ended {
		return st, bad("no end marker: the backup is truncated")
	}
	return st, nil
}

// identAfter reads the backquoted identifier that follows prefix.
func identAfter(text, prefix string) (string, error) {
	rest := strings.TrimPrefix(text, prefix)
	if !strings.HasPrefix(rest, "`") {
		return "", errors.New("no table name")
	}
	var b strings.Builder
	for i := 1; i < len(rest); i++ {
		if rest[i] == '`' {
			if i+1 < len(rest) && rest[i+1] == '`' {
				b.WriteByte('`')
				i++
				continue
			}
			return b.String(), nil
		}
		b.WriteByte(rest[i])
	}
	return "", errors.New("unterminated table name")
}

// backupValues is the VALUES part of an INSERT that Backup writes: rows of hex literals and
// NULLs only. Anything else in an INSERT line is refused before it reaches the server.
var backupValues = regexp.MustCompile(`^\((?:NULL|X'[0-9a-f]*'|_utf8mb4 X'[0-9a-f]*')(?:,(?:NULL|X'[0-9a-f]*'|_utf8mb4 X'[0-9a-f]*'))*\)(?:,\((?:NULL|X'[0-9a-f]*'|_utf8mb4 X'[0-9a-f]*')(?:,(?:NULL|X'[0-9a-f]*'|_utf8mb4 X'[0-9a-f]*'))*\))*;$`)

// countTuples checks an INSERT line and counts its rows (the values hold no parentheses).
func countTuples(text string) (int64, error) {
	_, values, ok := strings.Cut(text, ") VALUES ")
	if !ok || !backupValues.MatchString(values) {
		return 0, errors.New("an INSERT not written by dispatchd backup")
	}
	return int64(strings.Count(values, "(")), nil
}

// String is how the commands print a backup's contents.
func (s BackupStats) String() string {
	return strconv.Itoa(s.Tables) + " tables, " + strconv.FormatInt(s.Rows, 10) + " rows"
}
