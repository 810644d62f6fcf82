#!/usr/bin/env bash
# The location ingestion figure of BENCHMARKS.md (issue 3), with its same-run baseline: starts
# a gateway (bin/dispatchd, DISPATCH_ROLES=gateway,api: the probes read through the REST API,
# unthrottled) on loopback against the local Redis and MariaDB, runs
# ../shared/bench/redis-geo-baseline.sh, then `bin/loadtest ingest` (driver sockets sending
# `location` frames; probes from socket write to visible in a nearby query; a check that every
# driver's stored position is the last point it sent), and stops the gateway.
#
#   loadtest/ingest.sh [loadtest ingest flags...]     e.g. loadtest/ingest.sh -drivers 8000 -rate 4
# INGEST_GATEWAYS=N [1] starts N gateway processes (the first also serves the API, on INGEST_PORT;
# the others on the ports after it) and spreads the drivers over them.
# REDIS_URL [redis://127.0.0.1:6379/0], MYSQL_DSN [root@tcp(127.0.0.1:3306)/ingest_bench],
# INGEST_PORT [18080] and INGEST_ADMIN_PORT [19090] choose the backends and ports; INGEST_CMD
# [bin/loadtest ingest] the command that runs loadtest.IngestMain.
# INGEST_REDIS_PORT=N starts a Redis of its own on port N for the run (no other client's load
# in it) and uses it for the baseline too. INGEST_PRIORITY=1 raises this script's scheduling
# group (Linux autogroup nice -10, root only): on a machine shared with other jobs it stands in
# for the dedicated machine the figure is about; say so wherever you quote such a figure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
make -s build
if [[ ${INGEST_PRIORITY:-} == 1 ]]; then
  echo -10 >/proc/self/autogroup
fi
own_redis=
if [[ -n ${INGEST_REDIS_PORT:-} ]]; then
  dir=$(mktemp -d)
  redis-server --port "$INGEST_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
    --daemonize yes --pidfile "$dir/pid" --logfile "$dir/log"
  sleep 0.5
  own_redis=$(cat "$dir/pid")
  [[ ${INGEST_PRIORITY:-} == 1 ]] && echo -10 >"/proc/$own_redis/autogroup"
  export REDIS_URL=redis://127.0.0.1:$INGEST_REDIS_PORT/0
fi
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379/0}
redis_host=${REDIS_URL#*://}; redis_host=${redis_host%%/*}
export MYSQL_DSN=${MYSQL_DSN:-root@tcp(127.0.0.1:3306)/ingest_bench}
db=${MYSQL_DSN##*/}; db=${db%%\?*}
mysql -uroot -h127.0.0.1 -e "create database if not exists \`$db\`" 2>/dev/null || true
export DISPATCH_REDIS_PREFIX="ingestbench$$:"
export DISPATCH_JWT_SECRET=${DISPATCH_JWT_SECRET:-ingest-bench-secret-0123456789abcdef}
export DISPATCH_ROLES=gateway,api DISPATCH_RATE_PER_USER=0 DISPATCH_MIGRATE=true DISPATCH_LOG_LEVEL=warn DISPATCH_LOG_FORMAT=json
export DISPATCH_HTTP_ADDR=127.0.0.1:${INGEST_PORT:-18080} DISPATCH_ADMIN_ADDR=127.0.0.1:${INGEST_ADMIN_PORT:-19090}
ulimit -n 20000
log=$(mktemp)
bin/dispatchd serve >"$log" 2>&1 &
server=$!
servers=("$server")
http_port=${DISPATCH_HTTP_ADDR##*:} admin_port=${DISPATCH_ADMIN_ADDR##*:}
urls=ws://$DISPATCH_HTTP_ADDR/v1/ws metrics=http://$DISPATCH_ADMIN_ADDR/metrics
for i in $(seq 2 "${INGEST_GATEWAYS:-1}"); do
  DISPATCH_ROLES=gateway DISPATCH_MIGRATE=false DISPATCH_HTTP_ADDR=127.0.0.1:$((http_port + i - 1)) \
    DISPATCH_ADMIN_ADDR=127.0.0.1:$((admin_port + i - 1)) bin/dispatchd serve >>"$log" 2>&1 &
  servers+=($!)
  urls+=,ws://127.0.0.1:$((http_port + i - 1))/v1/ws metrics+=,http://127.0.0.1:$((admin_port + i - 1))/metrics
done
cleanup() {
  for p in "${servers[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  redis-cli -u "$REDIS_URL" --scan --pattern "$DISPATCH_REDIS_PREFIX*" | xargs -r -n 1000 redis-cli -u "$REDIS_URL" del >/dev/null
  [[ -n $own_redis ]] && kill "$own_redis" 2>/dev/null
  [[ ${INGEST_PRIORITY:-} == 1 ]] && echo 0 >/proc/self/autogroup
  echo "gateway log: $log" >&2
}
trap cleanup EXIT
for u in ${urls//,/ }; do
  u=${u#ws://}; u=${u%/v1/ws}
  for _ in $(seq 50); do curl -sf "http://$u/readyz" >/dev/null && break; sleep 0.2; done
done
echo "# $(nproc) CPUs; load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# Redis PING latency before (ms, min/max/avg over 3 s): $(timeout 3 redis-cli -u "$REDIS_URL" --latency --raw 2>/dev/null | tail -1 || true)"
baseline="$root/../shared/bench/redis-geo-baseline.sh"
[[ -x $baseline ]] && { echo "# $baseline ${redis_host%:*} ${redis_host#*:}"; "$baseline" "${redis_host%:*}" "${redis_host#*:}"; echo; }
ingest=${INGEST_CMD:-bin/loadtest ingest} # the command that runs loadtest.IngestMain
echo "# $ingest -url $urls -metrics $metrics $*"
$ingest -url "$urls" -metrics "$metrics" "$@"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg); gateways' RSS: $(ps -o rss= -p "${servers[*]}" | tr '\n' ' ')KiB"
