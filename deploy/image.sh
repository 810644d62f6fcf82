#!/usr/bin/env bash
# Build the production image of deploy/Dockerfile: the static dispatchd binary on this host,
# then the image from a context holding only what the Dockerfile copies. With docker when a
# Docker engine answers, else buildah (no daemon: vfs storage, chroot isolation).
#
#   IMAGE          the tag to give it (default localhost/dispatchd:dev)
#   RDS_CA_BUNDLE  path of AWS's RDS CA bundle; unset: downloaded from RDS_CA_URL
#   RDS_CA_URL     default https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
#   CA_BUNDLE      the system CA bundle to copy (default: Debian's or Amazon Linux's)
#   IMAGE_BUILDER  docker or buildah to choose instead of detecting
#   REVISION       the org.opencontainers.image.revision label (default: git HEAD)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin:/usr/sbin:/sbin
image=${IMAGE:-localhost/dispatchd:dev}
die() { echo "image: $*" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

echo "image: building the static binary"
CGO_ENABLED=1 GOFLAGS=-buildvcs=false go build -trimpath -tags 'prod netgo osusergo' \
  -ldflags '-s -w -linkmode external -extldflags -static' -o "$ctx/dispatchd" ./cmd/dispatchd
if ldd "$ctx/dispatchd" >/dev/null 2>&1; then
  die "dispatchd is dynamically linked; FROM scratch needs a static binary (install glibc's static libraries: libc6-dev / glibc-static)"
fi

ca=${CA_BUNDLE:-}
for c in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  [ -n "$ca" ] || { [ -s "$c" ] && ca=$c; }
done
[ -n "$ca" ] && [ -s "$ca" ] || die "no CA bundle found: set CA_BUNDLE (Debian: apt-get install ca-certificates)"
cp "$ca" "$ctx/ca-certificates.crt"

if [ -n "${RDS_CA_BUNDLE:-}" ]; then
  cp "$RDS_CA_BUNDLE" "$ctx/rds-ca.pem"
else
  url=${RDS_CA_URL:-https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem}
  curl -fsSL --retry 3 -o "$ctx/rds-ca.pem" "$url" \
    || die "cannot download the RDS CA bundle from $url: set RDS_CA_BUNDLE to a copy of it"
fi
grep -q 'BEGIN CERTIFICATE' "$ctx/rds-ca.pem" || die "the RDS CA bundle holds no PEM certificate"

printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$ctx/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$ctx/group"
mkdir "$ctx/var" "$ctx/backups"
chmod 0755 "$ctx/var" "$ctx/backups"
chmod 0644 "$ctx/passwd" "$ctx/group" "$ctx/ca-certificates.crt" "$ctx/rds-ca.pem"
chmod 0755 "$ctx/dispatchd"

revision=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
builder=${IMAGE_BUILDER:-}
if [ -z "$builder" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then builder=docker
  elif command -v buildah >/dev/null 2>&1; then builder=buildah
  else die "neither a Docker engine nor buildah: apt-get install buildah"
  fi
fi
echo "image: building $image with $builder"
case $builder in
  docker)
    docker build -f deploy/Dockerfile --label org.opencontainers.image.revision="$revision" -t "$image" "$ctx" ;;
  buildah)
    buildah --storage-driver vfs bud --isolation chroot --format docker -f "$PWD/deploy/Dockerfile" \
      --label org.opencontainers.image.revision="$revision" -t "$image" "$ctx" ;;
  *) die "IMAGE_BUILDER=$builder: want docker or buildah" ;;
esac
echo "image: built $image"
