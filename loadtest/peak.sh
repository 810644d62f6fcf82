#!/usr/bin/env bash
# make loadtest: the peak scenario against a dispatchd this script starts on loopback, on the
# real Redis and MariaDB of this machine, with a fresh database and Redis prefix of its own.
#
#   loadtest/peak.sh [extra bin/loadtest peak flags...]
#
# Settings (environment, defaults in brackets):
#   LOADTEST_DRIVERS [2000]  LOADTEST_DURATION [60s]  LOADTEST_PROFILE [flash]  LOADTEST_RATE [20]
#   LOADTEST_DISPATCHERS [8] LOADTEST_FLAGS []        extra flags for bin/loadtest peak
#   REDIS_URL [redis://127.0.0.1:6379]  LOADTEST_MYSQL [root@tcp(127.0.0.1:3306)/]
#   LOADTEST_OUT [loadtest/out/peak-<time>]  LOADTEST_KEEP_DB [unset: the database is dropped]
#   LOADTEST_BASELINE [1: run the Redis baseline after the load and add it to the report]
# The report is written under loadtest/out/ (gitignored); loadtest/out/latest points at it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

drivers=${LOADTEST_DRIVERS:-2000}
duration=${LOADTEST_DURATION:-60s}
profile=${LOADTEST_PROFILE:-flash}
rate=${LOADTEST_RATE:-20}
dispatchers=${LOADTEST_DISPATCHERS:-8}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
mysql_base=${LOADTEST_MYSQL:-root@tcp(127.0.0.1:3306)/}
stamp=$(date +%Y%m%d-%H%M%S)
out=${LOADTEST_OUT:-loadtest/out/peak-$stamp}
db="dispatch_load_${stamp//-/_}_$$"
prefix="load:$stamp:$$:"

for bin in bin/dispatchd bin/loadtest; do
  [[ -x $bin ]] || { echo "peak.sh: $bin is missing; run make build (make loadtest does)" >&2; exit 1; }
done
command -v mysql >/dev/null || { echo "peak.sh: the mysql client is needed to create the database" >&2; exit 1; }
redis_hostport=${redis_url#redis://}; redis_hostport=${redis_hostport%%/*}; redis_hostport=${redis_hostport##*@}
redis_host=${redis_hostport%:*}; redis_port=${redis_hostport##*:}
redis-cli -h "$redis_host" -p "$redis_port" ping >/dev/null || { echo "peak.sh: Redis at $redis_hostport does not answer" >&2; exit 1; }

# The mysql client takes host and port from the DSN's tcp(host:port).
mysql_addr=$(sed -E 's/.*tcp\(([^)]*)\).*/\1/' <<<"$mysql_base")
mysql_userinfo=${mysql_base%%@*}
mysql_user=${mysql_userinfo%%:*}
[[ $mysql_userinfo == *:* ]] && export MYSQL_PWD=${mysql_userinfo#*:}
sql() { mysql -h "${mysql_addr%:*}" -P "${mysql_addr##*:}" -u "$mysql_user" -e "$1"; }
sql "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin" \
  || { echo "peak.sh: cannot create database $db on $mysql_addr" >&2; exit 1; }

mkdir -p "$out"
secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')
server_pid=
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true
  fi
  redis-cli -h "$redis_host" -p "$redis_port" --scan --pattern "$prefix*" | xargs -r -n 500 redis-cli -h "$redis_host" -p "$redis_port" del >/dev/null || true
  if [[ -z ${LOADTEST_KEEP_DB:-} ]]; then sql "DROP DATABASE IF EXISTS \`$db\`" || true; else echo "kept database $db"; fi
}
trap cleanup EXIT

echo "starting dispatchd (database $db, Redis prefix $prefix); log: $out/dispatchd.log"
DISPATCH_HTTP_ADDR=127.0.0.1:0 DISPATCH_ADMIN_ADDR=127.0.0.1:0 REDIS_URL=$redis_url \
  MYSQL_DSN="${mysql_base%/}/$db" DISPATCH_MIGRATE=true DISPATCH_REDIS_PREFIX=$prefix \
  DISPATCH_JWT_SECRET=$secret DISPATCH_LOG_FORMAT=json DISPATCH_LOG_LEVEL=info DISPATCH_DRAIN_DELAY=0s \
  bin/dispatchd serve >"$out/dispatchd.log" 2>&1 &
server_pid=$!

http= admin=
for _ in $(seq 1 150); do
  line=$(grep -m1 '"message":"listening"' "$out/dispatchd.log" 2>/dev/null || true)
  if [[ -n $line ]]; then
    http=$(sed -E 's/.*"http":"([^"]*)".*/\1/' <<<"$line"); admin=$(sed -E 's/.*"admin":"([^"]*)".*/\1/' <<<"$line")
    curl -fs "http://$http/readyz" >/dev/null 2>&1 && break
  fi
  kill -0 "$server_pid" 2>/dev/null || { echo "peak.sh: dispatchd exited:" >&2; tail -20 "$out/dispatchd.log" >&2; exit 1; }
  sleep 0.2
done
[[ -n $http ]] && curl -fs "http://$http/readyz" >/dev/null || { echo "peak.sh: dispatchd not ready" >&2; tail -20 "$out/dispatchd.log" >&2; exit 1; }
echo "dispatchd on $http (metrics on $admin)"

status=0
DISPATCH_JWT_SECRET=$secret bin/loadtest peak -target "http://$http" -metrics "http://$admin/metrics" \
  -mysql-dsn "${mysql_base%/}/$db" -drivers "$drivers" -duration "$duration" -profile "$profile" -rate "$rate" \
  -dispatchers "$dispatchers" -out "$out" ${LOADTEST_FLAGS:-} "$@" || status=$?

kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
if [[ ${LOADTEST_BASELINE:-1} == 1 && -f $out/report.md ]]; then
  baseline="$root/../shared/bench/redis-geo-baseline.sh"
  if [[ -x $baseline ]]; then
    echo "Redis baseline (same machine, right after the run)..."
    { echo; echo "## Redis baseline, same machine, right after the run"; echo; "$baseline" "$redis_host" "$redis_port"; } | tee -a "$out/report.md"
  else
    echo "peak.sh: $baseline not found; no baseline in the report" >&2
  fi
fi
[[ $out == loadtest/out/* ]] && ln -sfn "${out#loadtest/out/}" loadtest/out/latest
echo "report: $out/report.md"
exit $status
