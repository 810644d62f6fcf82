#!/usr/bin/env bash
# make bench: every Go benchmark of the module, then the Redis baseline of this machine
# (../shared/bench/redis-geo-baseline.sh), so that figures and baseline come from the same run.
#
#   loadtest/bench.sh [go test flags...]     e.g. loadtest/bench.sh -benchtime 3s
# BENCH_PATTERN [.] selects benchmarks; REDIS_HOST [127.0.0.1] and REDIS_PORT [6379] the Redis.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
echo "# go test -run '^\$' -bench ${BENCH_PATTERN:-.} -benchmem ./...   ($(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
status=0
go test -run '^$' -bench "${BENCH_PATTERN:-.}" -benchmem "$@" ./... || status=$?
echo
baseline="$root/../shared/bench/redis-geo-baseline.sh"
if [[ -x $baseline ]]; then
  echo "# $baseline"
  "$baseline" "${REDIS_HOST:-127.0.0.1}" "${REDIS_PORT:-6379}" || status=$?
else
  echo "bench.sh: $baseline not found: no Redis baseline" >&2
  status=1
fi
exit $status
