package deploy

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/drivers4me/dispatch/store/storetest"
)

// needBuildah finds buildah and root (chroot, mounts). Where either is missing the test skips,
// except in CI (CI=true), where .ci/run installs buildah and a skip would hide an untested image.
func needBuildah(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("buildah")
	switch {
	case err != nil && os.Getenv("CI") == "true":
		t.Fatal("CI=true but buildah is not installed: .ci/run installs it (apt-get install buildah)")
	case err != nil:
		t.Skip("buildah is not installed (apt-get install buildah); the image is not tested here")
	case os.Geteuid() != 0 && os.Getenv("CI") == "true":
		t.Fatal("CI=true but not root: the image test mounts and chroots into the image")
	case os.Geteuid() != 0:
		t.Skip("not root: the image test mounts and chroots into the image")
	}
	return path
}

func randomName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// testCABundle writes a self-signed CA certificate, standing in for AWS's RDS bundle (which
// this machine cannot download).
func testCABundle(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test RDS CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rds-ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// snapshot lists every file of a root filesystem with its size, mode and time of change.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out[rel] = fmt.Sprintf("%d %v %d", info.Size(), info.Mode(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestImage builds the production image with deploy/image.sh (the script CodeBuild runs, with
// deploy/Dockerfile), checks its user, then runs `dispatchd migrate` and `healthcheck` in it
// with `buildah run --isolation chroot`, and `dispatchd serve` chrooted into a read-only mount
// of the image's root filesystem, as uid 65532, against the loopback Redis and a fresh MariaDB
// database, until /readyz answers 200. The root filesystem is unchanged afterwards.
func TestImage(t *testing.T) {
	buildah := needBuildah(t)
	bah := func(args ...string) (string, error) {
		out, err := exec.Command(buildah, append([]string{"--storage-driver", "vfs"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	tag := "localhost/" + randomName("dispatchd-test-") + ":test"
	build := exec.Command("bash", "image.sh")
	build.Env = append(os.Environ(), "IMAGE="+tag, "IMAGE_BUILDER=buildah", "RDS_CA_BUNDLE="+testCABundle(t))
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("deploy/image.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { bah("rmi", "-f", tag) })

	for _, c := range []struct{ format, want string }{
		{"{{.OCIv1.Config.User}}", "65532:65532"},
		{"{{.Docker.Config.Entrypoint}} {{.Docker.Config.Cmd}}", "[/usr/local/bin/dispatchd] [serve]"},
		{"{{.Docker.Config.Healthcheck.Test}}", "[CMD /usr/local/bin/dispatchd healthcheck]"},
	} {
		got, err := bah("inspect", "--format", c.format, tag)
		if err != nil || got != c.want {
			t.Errorf("image %s: got %q (%v), want %q", c.format, got, err, c.want)
		}
	}

	ctr, err := bah("from", "--name", randomName("dispatchd-test-"), tag)
	if err != nil {
		t.Fatalf("buildah from: %v: %s", err, ctr)
	}
	t.Cleanup(func() { bah("rm", ctr) })
	rootfs, err := bah("mount", ctr)
	if err != nil {
		t.Fatalf("buildah mount: %v: %s", err, rootfs)
	}
	before := snapshot(t, rootfs)
	for _, want := range []string{"usr/local/bin/dispatchd", "etc/passwd", "etc/ssl/certs/ca-certificates.crt", "etc/ssl/certs/rds-ca.pem", "var/backups"} {
		if _, ok := before[want]; !ok {
			t.Errorf("image root: got no %s, want it", want)
		}
	}
	if len(before) > 16 {
		t.Errorf("image root: got %d entries, want a handful (FROM scratch): %v", len(before), sortedKeys(before))
	}

	dsn := storetest.MySQL(t)
	httpAddr, adminAddr := freePort(t), freePort(t)
	env := []string{
		"MYSQL_DSN=" + dsn,
		"REDIS_URL=redis://127.0.0.1:6379",
		"DISPATCH_REDIS_PREFIX=" + randomName("imagetest") + ":",
		"DISPATCH_JWT_SECRET=image-test-secret-of-at-least-32-bytes-0123",
		"DISPATCH_HTTP_ADDR=" + httpAddr,
		"DISPATCH_ADMIN_ADDR=" + adminAddr,
		"DISPATCH_LOG_FORMAT=json",
	}
	inImage := func(args ...string) (string, error) {
		a := []string{"run", "--isolation", "chroot", "--user", "65532:65532"}
		for _, e := range env {
			a = append(a, "--env", e)
		}
		return bah(append(append(a, ctr, "--", "/usr/local/bin/dispatchd"), args...)...)
	}
	if out, err := inImage("migrate"); err != nil || !strings.Contains(out, "schema is current") {
		t.Fatalf("dispatchd migrate in the image: got %v\n%s\nwant the schema current", err, out)
	}
	if out, err := inImage("healthcheck"); err == nil {
		t.Fatalf("dispatchd healthcheck with no server: got success (%s), want a failure", out)
	}

	// serve, chrooted into a read-only bind mount of the image's root, as 65532.
	ro := t.TempDir()
	if err := syscall.Mount(rootfs, ro, "", syscall.MS_BIND, ""); err != nil {
		t.Fatalf("bind mount: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(ro, syscall.MNT_DETACH) })
	if err := syscall.Mount("", ro, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("writing into the read-only root as root: got %v, want EROFS", err)
	}
	var logs bytes.Buffer
	serve := exec.Command("/usr/local/bin/dispatchd", "serve")
	serve.Env = env
	serve.Dir = "/"
	serve.Stdout, serve.Stderr = &logs, &logs
	serve.SysProcAttr = &syscall.SysProcAttr{Chroot: ro, Credential: &syscall.Credential{Uid: 65532, Gid: 65532, NoSetGroups: true}}
	if err := serve.Start(); err != nil {
		t.Fatalf("start serve in the image: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()
	t.Cleanup(func() {
		serve.Process.Kill()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ready := false
	for !ready {
		select {
		case err := <-exited:
			t.Fatalf("serve exited early: %v\n%s", err, logs.String())
		case <-ctx.Done():
			t.Fatalf("/readyz never answered 200 in 90 s\n%s", logs.String())
		case <-time.After(200 * time.Millisecond):
		}
		resp, err := http.Get("http://" + httpAddr + "/readyz")
		if err == nil {
			ready = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
	}
	if out, err := inImage("healthcheck"); err != nil {
		t.Errorf("dispatchd healthcheck in the image against the running server: %v\n%s", err, out)
	}

	serve.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("serve after SIGTERM: got %v, want exit 0\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("serve did not stop within 30 s of SIGTERM\n%s", logs.String())
	}
	if s := logs.String(); strings.Contains(s, "read-only file system") {
		t.Errorf("serve tried to write its root filesystem:\n%s", s)
	}

	// What `buildah run` itself adds to a container's root (mount points, the resolver files)
	// is the runtime's, not dispatchd's; everything else must be as built.
	runtime := func(p string) bool {
		switch p {
		case ".", "etc", "dev", "proc", "sys", "run", "etc/hosts", "etc/hostname", "etc/resolv.conf":
			return true
		}
		return strings.HasPrefix(p, "run/") || strings.HasPrefix(p, "dev/")
	}
	after := snapshot(t, rootfs)
	for _, p := range sortedKeys(after) {
		if before[p] != after[p] && !runtime(p) {
			t.Errorf("image root after migrate, serve and healthcheck: %s got %q, was %q", p, after[p], before[p])
		}
	}
	for _, p := range sortedKeys(before) {
		if _, ok := after[p]; !ok {
			t.Errorf("image root: %s disappeared", p)
		}
	}
}
