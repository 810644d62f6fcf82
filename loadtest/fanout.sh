#!/usr/bin/env bash
# The fan-out figures of BENCHMARKS.md (issue 14): starts bin/dispatchd on loopback against the
# local Redis and MariaDB, runs `bin/loadtest fanout` (drivers at a point a second, dispatchers
# each watching a tenth of the city, customers tracking their assigned driver; send-to-receive
# per viewer, deliveries/s, the servers' CPU per delivery from /proc, what coalescing saved), and
# stops the servers.
#
#   loadtest/fanout.sh [loadtest fanout flags...]   e.g. loadtest/fanout.sh -drivers 2000 -dispatchers 20 -customers 30
# FANOUT_GATEWAYS=N [0]: one process with every role (0), or an api+dispatcher process and N
# gateway processes, the sockets spread over the gateways (past 20,000 sockets one process
# cannot hold them: give -procs too, for the load generator's side).
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
mysql -uroot -h127.0.0.1 -e "drop database if exists \`$db\`; create database \`$db\`"
export DISPATCH_REDIS_PREFIX="fanoutbench$$:"
export DISPATCH_JWT_SECRET=${DISPATCH_JWT_SECRET:-fanout-bench-secret-0123456789abcdef}
export DISPATCH_MIGRATE=true DISPATCH_LOG_LEVEL=warn DISPATCH_LOG_FORMAT=json
# Every driver is registered by an admin of its own, from one address: no per-user or
# per-address limit is what is measured here.
export DISPATCH_RATE_PER_USER=0 DISPATCH_RATE_PER_ADDR=0
port=${FANOUT_PORT:-18081} admin=${FANOUT_ADMIN_PORT:-19091}
ulimit -n 20000
log=$(mktemp)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  redis-cli -u "$REDIS_URL" --scan --pattern "$DISPATCH_REDIS_PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" del >/dev/null
  echo "server log: $log" >&2
}
trap cleanup EXIT
gateways=${FANOUT_GATEWAYS:-0}
roles=all
[[ $gateways -gt 0 ]] && roles=api,dispatcher
DISPATCH_ROLES=$roles DISPATCH_HTTP_ADDR=127.0.0.1:$port DISPATCH_ADMIN_ADDR=127.0.0.1:$admin ${DISPATCHD:-bin/dispatchd} serve >"$log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
urls=ws://127.0.0.1:$port/v1/ws metrics=http://127.0.0.1:$admin/metrics
[[ $gateways -gt 0 ]] && urls=
for i in $(seq "$gateways"); do
  DISPATCH_ROLES=gateway DISPATCH_MIGRATE=false DISPATCH_HTTP_ADDR=127.0.0.1:$((port + i)) DISPATCH_ADMIN_ADDR=127.0.0.1:$((admin + i)) \
    ${DISPATCHD:-bin/dispatchd} serve >>"$log" 2>&1 &
  pids+=($!)
  urls=${urls:+$urls,}ws://127.0.0.1:$((port + i))/v1/ws metrics=$metrics,http://127.0.0.1:$((admin + i))/metrics
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$((port + i))/readyz" >/dev/null && break; sleep 0.2; done
done
# The CPU per delivery counts the servers and Redis (the one on REDIS_URL's port).
redis_port=${REDIS_URL##*:}; redis_port=${redis_port%%/*}
redis=$(pgrep -f "redis-server.*:$redis_port" | head -1 || true)
pidlist=$(IFS=,; echo "${pids[*]}${redis:+,$redis}")
redis_host=${REDIS_URL#*://}; redis_host=${redis_host%%/*}
baseline="$root/../shared/bench/redis-geo-baseline.sh" # the same-run Redis baseline BENCHMARKS.md quotes
[[ -x $baseline ]] && { echo "# $baseline ${redis_host%:*} ${redis_host#*:}"; "$baseline" "${redis_host%:*}" "${redis_host#*:}"; echo; }
echo "# $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg); $((gateways > 0 ? gateways : 1)) gateway processes"
echo "# bin/loadtest fanout -url $urls -rest http://127.0.0.1:$port -metrics $metrics -pid $pidlist $*"
bin/loadtest fanout -url "$urls" -rest "http://127.0.0.1:$port" -metrics "$metrics" -pid "$pidlist" "$@"
