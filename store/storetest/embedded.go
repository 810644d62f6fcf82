//go:build !prod

package storetest

import (
	"context"
	"os"
	"testing"

	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/store/embedded"
)

// Embedded starts an in-process go-mysql-server with an empty database for the test, stops it
// when the test ends, and returns a DSN for it.
func Embedded(t testing.TB) string {
	t.Helper()
	log := zerolog.New(os.Stderr).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	dsn, stop, err := embedded.Start(context.Background(), log)
	if err != nil {
		t.Fatalf("storetest: start embedded mysql: %v", err)
	}
	t.Cleanup(stop)
	return dsn
}

// Backend is a way of getting a test database, for tests that run against each.
type Backend struct {
	Name string
	DSN  func(testing.TB) string
}

// Backends are MariaDB and the embedded engine, for table-driven tests over both.
func Backends() []Backend {
	return []Backend{{Name: "mariadb", DSN: MySQL}, {Name: "embedded", DSN: Embedded}}
}
