package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestREADMEListsEverySetting keeps the README's settings table true to the code.
func TestREADMEListsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, s := range Settings {
		row := "| `" + s.Name + "` |"
		if !strings.Contains(readme, row) {
			t.Errorf("README.md has no row for %s", s.Name)
		}
	}
	for _, cmd := range []string{"make run", "make test"} {
		if !strings.Contains(readme, cmd) {
			t.Errorf("README.md does not show %q", cmd)
		}
	}
}

// TestConfigRefusesBadSettings: each bad value is named in the error.
func TestConfigRefusesBadSettings(t *testing.T) {
	base := map[string]string{"DISPATCH_JWT_SECRET": testSecret}
	cases := map[string]string{
		"DISPATCH_JWT_SECRET":          "short",
		"DISPATCH_ROLES":               "gateway,chef",
		"DISPATCH_SHUTDOWN_TIMEOUT":    "soon",
		"DISPATCH_HTTP_ADDR":           "8080",
		"DISPATCH_LOG_LEVEL":           "loud",
		"DISPATCH_MIGRATE":             "perhaps",
		"DISPATCH_REDIS_PREFIX":        "a{b}",
		"REDIS_URL":                    "redis://127.0.0.1:6379",    // without MYSQL_DSN
		"DISPATCH_JWT_SECRET_PREVIOUS": testSecret,                  // the current one again
		"DISPATCH_MYSQL_CA_FILE":       "/etc/ssl/certs/rds-ca.pem", // without MYSQL_DSN
		"DISPATCH_STAFF_NETWORKS":      "10.40.0.0/16,vpn",
		"DISPATCH_OUTBOX_KEEP":         "0s",
	}
	for name, val := range cases {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		env[name] = val
		_, err := LoadConfig(func(k string) string { return env[k] })
		if err == nil {
			t.Errorf("%s=%q: got no error", name, val)
			continue
		}
		if want := strings.Split(name, "_URL")[0]; !strings.Contains(err.Error(), want) {
			t.Errorf("%s=%q: error %q does not name the setting", name, val, err)
		}
	}
	if _, err := LoadConfig(func(k string) string { return base[k] }); err != nil {
		t.Errorf("defaults with a secret: got %v, want no error", err)
	}
}

// TestOutboxPruneEvery: every 10 minutes, or a tenth of the age kept when that is shorter.
func TestOutboxPruneEvery(t *testing.T) {
	for _, c := range []struct {
		keep string
		want time.Duration
	}{
		{"", 10 * time.Minute}, // the default, 24h
		{"2h", 10 * time.Minute},
		{"30m", 3 * time.Minute},
		{"1s", 100 * time.Millisecond},
	} {
		cfg, err := LoadConfig(func(k string) string {
			return map[string]string{"DISPATCH_JWT_SECRET": testSecret, "DISPATCH_OUTBOX_KEEP": c.keep}[k]
		})
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.OutboxPruneEvery(); got != c.want {
			t.Errorf("DISPATCH_OUTBOX_KEEP=%q: got every %s, want %s", c.keep, got, c.want)
		}
	}
}
