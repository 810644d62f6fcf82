#!/usr/bin/env bash
# The fan-out figure of BENCHMARKS.md (issue 14): starts bin/dispatchd (all roles) on loopback
# against the local Redis and MariaDB, runs `bin/loadtest fanout` (drivers at a point a second,
# dispatchers each watching a tenth of the city, customers tracking their assigned driver;
# send-to-receive per viewer, deliveries/s, the server's CPU per delivery from /proc, what
# coalescing saved), and stops the server.
#
#   loadtest/fanout.sh [loadtest fanout flags...]   e.g. loadtest/fanout.sh -drivers 2000 -dispatchers 20 -customers 30
# REDIS_URL [redis://127.0.0.1:6379/0], MYSQL_DSN [root@tcp(127.0.0.1:3306)/fanout_bench],
# FANOUT_PORT [18081], FANOUT_ADMIN_PORT [19091]; DISPATCHD [bin/dispatchd] the server to measure
# (e.g. a build of an older commit, for a before-and-after).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
make -s build
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
export MYSQL_DSN=${MYSQL_DSN:-root@tcp(127.0.0.1:3306)/fanout_bench}
db=${MYSQL_DSN##*/}; db=${db%%\?*}
mysql -uroot -h127.0.0.1 -e "create database if not exists \`$db\`" 2>/dev/null || true
export DISPATCH_REDIS_PREFIX="fanoutbench$$:"
export DISPATCH_JWT_SECRET=${DISPATCH_JWT_SECRET:-fanout-bench-secret-0123456789abcdef}
export DISPATCH_MIGRATE=true DISPATCH_LOG_LEVEL=warn DISPATCH_LOG_FORMAT=json
export DISPATCH_HTTP_ADDR=127.0.0.1:${FANOUT_PORT:-18081} DISPATCH_ADMIN_ADDR=127.0.0.1:${FANOUT_ADMIN_PORT:-19091}
ulimit -n 20000
log=$(mktemp)
${DISPATCHD:-bin/dispatchd} serve >"$log" 2>&1 &
server=$!
cleanup() {
  kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  redis-cli -u "$REDIS_URL" --scan --pattern "$DISPATCH_REDIS_PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" del >/dev/null
  echo "server log: $log" >&2
}
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://$DISPATCH_HTTP_ADDR/readyz" >/dev/null && break; sleep 0.2; done
echo "# $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# bin/loadtest fanout -url ws://$DISPATCH_HTTP_ADDR/v1/ws -metrics http://$DISPATCH_ADMIN_ADDR/metrics -pid $server $*"
bin/loadtest fanout -url "ws://$DISPATCH_HTTP_ADDR/v1/ws" -metrics "http://$DISPATCH_ADMIN_ADDR/metrics" -pid "$server" "$@"
