#!/usr/bin/env bash
# The 100,000-socket figure of BENCHMARKS.md (issue 14, item 1): starts SOCKETS_GATEWAYS gateway
# processes (DISPATCH_ROLES=gateway, each under its own 20,000-file cap) and one process with the
# api and dispatcher roles, all on loopback against the local Redis and MariaDB, then runs
# `bin/loadtest sockets` (its own generator processes, sockets over 127.0.0.x): connect rate, RSS
# growth per socket, drops over the hold, and a reconnect storm with /readyz and the matcher
# probed. Stops everything at the end.
#
#   loadtest/sockets.sh [loadtest sockets flags...]   e.g. loadtest/sockets.sh -sockets 100000 -storm 20000
# SOCKETS_GATEWAYS [6], REDIS_URL [redis://127.0.0.1:6379/0], MYSQL_DSN
# [root@tcp(127.0.0.1:3306)/sockets_bench], SOCKETS_PORT [18300: gateways from +1, admin +100];
# DISPATCHD [bin/dispatchd] the server to measure (a build of an older commit, for a before-and-after).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
make -s build
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export MYSQL_DSN=${MYSQL_DSN:-root@tcp(127.0.0.1:3306)/sockets_bench}
db=${MYSQL_DSN##*/}; db=${db%%\?*}
mysql -uroot -h127.0.0.1 -e "drop database if exists \`$db\`; create database \`$db\`"
export DISPATCH_REDIS_PREFIX="socketsbench$$:"
export DISPATCH_JWT_SECRET=${DISPATCH_JWT_SECRET:-sockets-bench-secret-0123456789abcdef}
export DISPATCH_MIGRATE=true DISPATCH_LOG_LEVEL=warn DISPATCH_LOG_FORMAT=json
# The sockets come from a few 127.0.0.x addresses, and the probe's registrar is one admin per
# driver: per-address and per-user HTTP limits would throttle the test, not a fleet.
export DISPATCH_RATE_PER_ADDR=0 DISPATCH_RATE_PER_USER=0
ulimit -n 20000
gateways=${SOCKETS_GATEWAYS:-6}
port=${SOCKETS_PORT:-18300}
logs=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -u "$REDIS_URL" --scan --pattern "$DISPATCH_REDIS_PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" del >/dev/null
  echo "server logs: $logs" >&2
}
trap cleanup EXIT
DISPATCH_ROLES=api,dispatcher DISPATCH_HTTP_ADDR=127.0.0.1:$port DISPATCH_ADMIN_ADDR=127.0.0.1:$((port + 100)) \
  ${DISPATCHD:-bin/dispatchd} serve >"$logs/api.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
urls=() metrics=()
for i in $(seq "$gateways"); do
  DISPATCH_MIGRATE=false DISPATCH_ROLES=gateway DISPATCH_HTTP_ADDR=127.0.0.1:$((port + i)) DISPATCH_ADMIN_ADDR=127.0.0.1:$((port + 100 + i)) \
    ${DISPATCHD:-bin/dispatchd} serve >"$logs/gateway-$i.log" 2>&1 &
  pids+=($!)
  urls+=("ws://127.0.0.1:$((port + i))/v1/ws")
  metrics+=("http://127.0.0.1:$((port + 100 + i))/metrics")
done
for i in $(seq "$gateways"); do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((port + i))/readyz" >/dev/null && break; sleep 0.2; done
done
redis_host=${REDIS_URL#*://}; redis_host=${redis_host%%/*}
baseline="$root/../shared/bench/redis-geo-baseline.sh" # the same-run Redis baseline BENCHMARKS.md quotes
[[ -x $baseline ]] && { echo "# $baseline ${redis_host%:*} ${redis_host#*:}"; "$baseline" "${redis_host%:*}" "${redis_host#*:}"; echo; }
echo "# $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg); redis $(redis-cli -u "$REDIS_URL" info server | grep -o 'redis_version:[0-9.]*')"
echo "# $gateways gateways; bin/loadtest sockets -rest http://127.0.0.1:$port $*"
IFS=,
bin/loadtest sockets -urls "${urls[*]}" -metrics "${metrics[*]}" -rest "http://127.0.0.1:$port" "$@"
