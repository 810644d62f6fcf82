package store_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/rs/zerolog"

	"github.com/drivers4me/dispatch/dispatch"
	"github.com/drivers4me/dispatch/store"
	"github.com/drivers4me/dispatch/store/storetest"
)

// writeCA writes a self-signed CA certificate as PEM (a stand-in for RDS's global bundle).
func writeCA(t *testing.T, dir string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOpenWithCAFile: a CA file demands tls=true and a readable PEM bundle; with both, the
// connection must be TLS (the test MariaDB has TLS off, so Open fails rather than fall back
// to plaintext).
func TestOpenWithCAFile(t *testing.T) {
	dir := t.TempDir()
	ca := writeCA(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := storetest.MySQL(t)
	with := func(tlsParam string) string {
		if strings.Contains(dsn, "?") {
			return dsn + "&tls=" + tlsParam
		}
		return dsn + "?tls=" + tlsParam
	}
	tests := []struct {
		name, dsn, caFile string
		wantInvalid       bool
		wantErr           error
	}{
		{"no tls in the DSN", dsn, ca, true, nil},
		{"tls=skip-verify", with("skip-verify"), ca, true, nil},
		{"missing file", with("true"), filepath.Join(dir, "missing.pem"), true, nil},
		{"not PEM", with("true"), notPEM, true, nil},
		{"tls=true with the CA: TLS or nothing", with("true"), ca, false, mysql.ErrNoTLS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			db, err := store.Open(ctx, tt.dsn, store.Options{CAFile: tt.caFile}, zerolog.Nop())
			if err == nil {
				db.Close()
				t.Fatal("got a connection, want an error")
			}
			if got := errors.Is(err, dispatch.ErrInvalid); got != tt.wantInvalid {
				t.Errorf("got ErrInvalid %v (%v), want %v", got, err, tt.wantInvalid)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, want %v", err, tt.wantErr)
			}
		})
	}
}
