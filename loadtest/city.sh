#!/usr/bin/env bash
# The engine as production runs it, scaled out role by role on this machine: CITY_GATEWAYS
# gateway processes (DISPATCH_ROLES=gateway, each under the 20,000-file cap), CITY_DISPATCHERS
# dispatcher processes and one API process, on the real Redis and MariaDB, a fresh database and
# Redis prefix; then bin/loadtest peak against them (driver sockets spread over child processes
# and 127.0.0.x sources, REST to the API), kill -9 of one dispatcher CITY_KILL_AT seconds into
# the demand, and the CPU each role spent (from /proc: utime + stime, sampled every second) over
# the demand alone, per booking and per location point.
#
#   loadtest/city.sh [extra bin/loadtest peak flags...]
#
# Settings (environment, defaults in brackets):
#   CITY_DRIVERS [10000] CITY_RATE [100] bookings/s  CITY_DURATION [60s]  CITY_TICK [5s]
#   CITY_WARMUP [10m]: the longest the demand waits for every driver to register and connect
#   CITY_GATEWAYS [3] CITY_DISPATCHERS [2] CITY_KILL_AT [30] (0: no kill)  CITY_PROCS [gateways]
#   REDIS_URL [redis://127.0.0.1:6379]  LOADTEST_MYSQL [root@tcp(127.0.0.1:3306)/]
#   CITY_PRIVATE [0]: 1 starts a redis-server and a mariadbd of the run's own (their CPU is then
#   the run's alone, and city.md lists MariaDB's costliest statements per booking)
#   CITY_OUT [loadtest/out/city-<time>]
# Writes the peak report there, with city.md: the topology, per-role CPU and the takeover gap.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

drivers=${CITY_DRIVERS:-10000}
rate=${CITY_RATE:-100}
duration=${CITY_DURATION:-60s}
tick=${CITY_TICK:-5s}
warmup=${CITY_WARMUP:-10m}
ngw=${CITY_GATEWAYS:-3}
ndisp=${CITY_DISPATCHERS:-2}
kill_at=${CITY_KILL_AT:-30}
procs=${CITY_PROCS:-$ngw}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
mysql_base=${LOADTEST_MYSQL:-root@tcp(127.0.0.1:3306)/}
stamp=$(date +%Y%m%d-%H%M%S)
out=${CITY_OUT:-loadtest/out/city-$stamp}
db="dispatch_city_${stamp//-/_}_$$"
prefix="city:$stamp:$$:"

for bin in bin/dispatchd bin/loadtest; do
  [[ -x $bin ]] || { echo "city.sh: $bin is missing; run make build" >&2; exit 1; }
done
mkdir -p "$out"
private_pids=()
if [[ ${CITY_PRIVATE:-0} == 1 ]]; then
  # A redis-server and a mariadbd of the run's own, so that their CPU is the run's alone (the
  # shared ones serve everyone's tests): MariaDB durable as production is (flush at commit),
  # with the statement digests of performance_schema for the report.
  pdir=$(mktemp -d /tmp/city-backends.XXXXXX)
  rport=$((20000 + RANDOM % 10000)); mport=$((rport + 1))
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$pdir" --daemonize no \
    >"$pdir/redis.log" 2>&1 &
  private_pids+=($!); redis_pid=$!
  mariadb-install-db --no-defaults --auth-root-authentication-method=normal --datadir="$pdir/data" \
    --user=root --skip-test-db --innodb-use-native-aio=0 >"$pdir/install.log" 2>&1
  mariadbd --no-defaults --datadir="$pdir/data" --port="$mport" --bind-address=127.0.0.1 --socket="$pdir/sock" \
    --pid-file="$pdir/pid" --log-error="$pdir/mariadb.err" --user=root --skip-grant-tables --skip-name-resolve \
    --innodb-buffer-pool-size=1G --innodb-use-native-aio=0 --innodb-flush-log-at-trx-commit=1 --skip-log-bin \
    --performance-schema=on --max-connections=1000 &
  private_pids+=($!); mariadb_pid=$!
  for _ in $(seq 1 120); do
    mysql -h 127.0.0.1 -P "$mport" -u root -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  redis_url=redis://127.0.0.1:$rport
  mysql_base="root@tcp(127.0.0.1:$mport)/"
fi
mysql_addr=$(sed -E 's/.*tcp\(([^)]*)\).*/\1/' <<<"$mysql_base")
mysql_user=${mysql_base%%@*}; mysql_user=${mysql_user%%:*}
sql() { mysql -h "${mysql_addr%:*}" -P "${mysql_addr##*:}" -u "$mysql_user" -e "$1"; }
sql "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
# Six processes of 32 connections and the matchers' pools pass MariaDB's default 151, as an RDS
# instance's max_connections would be sized for them.
sql "SET GLOBAL max_connections = GREATEST(@@max_connections, 1000)"
secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')

declare -A pid http admin role
names=()
cleanup() {
  for n in "${names[@]}"; do kill -TERM "${pid[$n]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli --scan --pattern "$prefix*" | xargs -r -n 500 redis-cli del >/dev/null || true
  sql "DROP DATABASE IF EXISTS \`$db\`" || true
  for p in "${private_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n ${pdir:-} ]] && rm -rf "$pdir"
}
trap cleanup EXIT

start() { # name roles
  local n=$1
  DISPATCH_HTTP_ADDR=127.0.0.1:0 DISPATCH_ADMIN_ADDR=127.0.0.1:0 REDIS_URL=$redis_url \
    MYSQL_DSN="${mysql_base%/}/$db" DISPATCH_MIGRATE=true DISPATCH_REDIS_PREFIX=$prefix DISPATCH_ROLES=$2 \
    DISPATCH_JWT_SECRET=$secret DISPATCH_LOG_FORMAT=json DISPATCH_LOG_LEVEL=info DISPATCH_DRAIN_DELAY=0s \
    DISPATCH_RATE_PER_USER=0 DISPATCH_RATE_PER_ADDR=0 \
    bin/dispatchd serve >"$out/$n.log" 2>&1 &
  pid[$n]=$! role[$n]=$2; names+=("$n")
}
start api api
for i in $(seq 1 "$ndisp"); do start "dispatcher-$i" dispatcher; done
for i in $(seq 1 "$ngw"); do start "gateway-$i" gateway; done
for n in "${names[@]}"; do
  for _ in $(seq 1 300); do
    line=$(grep -m1 '"message":"listening"' "$out/$n.log" 2>/dev/null || true)
    [[ -n $line ]] && break
    kill -0 "${pid[$n]}" 2>/dev/null || { echo "city.sh: $n exited" >&2; tail -5 "$out/$n.log" >&2; exit 1; }
    sleep 0.2
  done
  http[$n]=$(sed -E 's/.*"http":"([^"]*)".*/\1/' <<<"$line"); admin[$n]=$(sed -E 's/.*"admin":"([^"]*)".*/\1/' <<<"$line")
  curl -fs "http://${http[$n]}/readyz" >/dev/null || { sleep 2; curl -fs "http://${http[$n]}/readyz" >/dev/null; }
done
# The fleet's verified profiles, seeded in one statement as an operator's bulk onboarding would
# (bin/loadtest peak -registered): registering 50,000 drivers through the API one by one would
# take the warm-up minutes and says nothing about dispatch.
sql "USE \`$db\`; INSERT INTO drivers (id, name, rating, transmissions, phone, licence_no, licence_expires, cities, verified,
  suspended, created_at, updated_at)
  SELECT CONCAT('load-drv-', seq), CONCAT('Sim Driver ', seq), 4.5, '[\"manual\",\"automatic\"]',
    CONCAT('+91', 9000000000 + seq), CONCAT('KA01SIM', LPAD(seq, 8, '0')), CURDATE() + INTERVAL 5 YEAR, '[\"bengaluru\"]',
    TRUE, FALSE, NOW(3), NOW(3) FROM seq_0_to_$((drivers - 1))"
gws=() metrics=()
for n in "${names[@]}"; do
  metrics+=("http://${admin[$n]}/metrics")
  [[ ${role[$n]} == gateway ]] && gws+=("http://${http[$n]}")
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; } # clock ticks; nothing once it has exited
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "topology: api ${http[api]}, ${#gws[@]} gateways, $ndisp dispatchers; $drivers drivers, $rate bookings/s, a point every $tick"

DISPATCH_JWT_SECRET=$secret bin/loadtest peak -target "http://${http[api]}" -gateways "$(IFS=,; echo "${gws[*]}")" \
  -metrics "$(IFS=,; echo "${metrics[*]}")" -mysql-dsn "${mysql_base%/}/$db" -drivers "$drivers" -tick "$tick" \
  -duration "$duration" -warmup "$warmup" -registered -profile steady -rate "$rate" -dispatchers 0 -procs "$procs" -out "$out" "$@" \
  > >(tee "$out/generator.out") &
gen=$!
# Every process's CPU, once a second, so that the figures cover the demand alone (the warm-up,
# in which every driver registers and connects, and the drain are left out): the engine's
# processes, Redis, MariaDB, and the generator with its children.
redis_pid=${redis_pid:-$(pgrep -x redis-server | head -1 || true)}
mariadb_pid=${mariadb_pid:-$(pgrep -x mariadbd | head -1 || true)}
(
  while kill -0 $gen 2>/dev/null; do
    now=$(date +%s.%N)
    for n in "${names[@]}"; do c=$(cpu "${pid[$n]}" || true); [[ -n $c ]] && echo "$now $n ${role[$n]} $c"; done
    [[ -n $redis_pid ]] && echo "$now redis redis $(cpu "$redis_pid")"
    [[ -n $mariadb_pid ]] && echo "$now mariadb mariadb $(cpu "$mariadb_pid")"
    g=$(cpu $gen)
    for c in $(pgrep -P $gen); do g=$((g + $(cpu "$c" || echo 0))); done
    echo "$now generator generator ${g:-0}"
    sleep 1
  done
) >"$out/cpu.samples" &
sampler=$!
if [[ ${CITY_PRIVATE:-0} == 1 ]]; then
  # MariaDB's statements over the demand alone: the digests read when it starts and when it
  # ends, and subtracted.
  digests() {
    mysql -h "${mysql_addr%:*}" -P "${mysql_addr##*:}" -u "$mysql_user" --batch --skip-column-names -e "SELECT DIGEST,
      COUNT_STAR, SUM_TIMER_WAIT, SUM_ROWS_EXAMINED, REPLACE(DIGEST_TEXT, '\n', ' ')
      FROM performance_schema.events_statements_summary_by_digest WHERE DIGEST IS NOT NULL"
  }
  (
    until grep -q '^phase run' "$out/generator.out" 2>/dev/null; do kill -0 $gen 2>/dev/null || exit 0; sleep 0.2; done
    digests >"$out/mariadb-digests.before.tsv"
    until grep -q '^phase drain' "$out/generator.out" 2>/dev/null; do kill -0 $gen 2>/dev/null || exit 0; sleep 0.2; done
    digests >"$out/mariadb-digests.after.tsv"
  ) &
  digester=$!
fi
killed_at=
if (( kill_at > 0 )); then
  until grep -q '^phase run' "$out/generator.out" 2>/dev/null; do
    kill -0 $gen 2>/dev/null || break
    sleep 0.5
  done
  sleep "$kill_at"
  kill -9 "${pid[dispatcher-1]}" && killed_at=$(date +%s.%N)
  echo "killed dispatcher-1 (pid ${pid[dispatcher-1]}) at $(date -u +%T.%N)"
fi
status=0
wait $gen || status=$?
[[ -n ${digester:-} ]] && { wait "$digester" || true; }
kill $sampler 2>/dev/null || true
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$out" "$killed_at" "$load_before" "$load_after" "$tick" "$rate" "$drivers" <<PY
import json, sys, os, glob, datetime
out, killed, lb, la, tick, rate, drivers = sys.argv[1:8]
r = json.load(open(os.path.join(out, "report.json")))
c = r["counts"]
hz = os.sysconf("SC_CLK_TCK")
# The demand's window, and the points and bookings the generator sent in it (by second).
t0 = datetime.datetime.fromisoformat(r["demand_started_at"].replace("Z", "+00:00")).timestamp()
t1 = t0 + r["run_s"]
w0 = round(r.get("warmup_s", 0))
rows_in = r["seconds"][w0:w0 + max(1, round(r["run_s"]))]
points = sum(x["counts"].get("locations", 0) for x in rows_in)
bookings = sum(x["counts"].get("bookings", 0) for x in rows_in)
# CPU ticks of each process at t, interpolated between the samples (a killed process keeps its
# last reading).
samples = {}
for line in open(os.path.join(out, "cpu.samples")):
    t, n, role, ticks = line.split()
    samples.setdefault((n, role), []).append((float(t), float(ticks)))
def at(xs, t):
    if t <= xs[0][0]:
        return xs[0][1]
    for (ta, a), (tb, b) in zip(xs, xs[1:]):
        if ta <= t <= tb:
            return a + (b - a) * (t - ta) / max(tb - ta, 1e-9)
    return xs[-1][1]
per = {}
lines = []
procs = []
for (n, role), xs in samples.items():
    s = (at(xs, t1) - at(xs, t0)) / hz
    per[role] = per.get(role, 0.0) + s
    lines.append(f"| {n} | {role} | {s:.1f} | {s / r['run_s'] * 100:.0f}% |")
    procs.append(n)
lat = r["latency"]["booking_to_offer"]
md = [f"# City run: {drivers} drivers, {rate} bookings/s, a point every {tick}", "",
      f"Load average before {lb}, after {la}. Every driver connected after {r.get('warmup_s', 0):.0f} s of warm-up; "
      f"the figures cover the {r['run_s']:.0f} s of demand after it: {points} location points and {bookings} bookings sent.", "",
      "| process | role | CPU-s over the demand | of one core |", "|---|---|---:|---:|"] + lines + ["",
      "| role | CPU-s | per | CPU-us per unit |", "|---|---:|---|---:|"]
for role, unit, n in (("gateway", "location point", points), ("dispatcher", "booking", bookings), ("api", "booking", bookings),
                      ("redis", "booking", bookings), ("mariadb", "booking", bookings), ("generator", "booking", bookings)):
    if role in per and n:
        md.append(f"| {role} | {per[role]:.1f} | {unit} ({n}) | {per[role]/n*1e6:.0f} |")
engine = sum(v for k, v in per.items() if k != "generator")
md += ["", f"The engine with Redis and MariaDB used {engine / r['run_s']:.2f} cores over the demand "
       f"({points / r['run_s']:.0f} points/s, {bookings / r['run_s']:.1f} bookings/s); the generator {per.get('generator', 0) / r['run_s']:.2f}."]
md += ["", f"Booking to first offer: p50 {lat['p50_ms']:.0f} ms, p90 {lat['p90_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms (n {lat['n']}).",
       f"Offers received {c['offers_received']}, accepted {c['offers_accepted']}, completed {c['completions']}; never offered {r['latency']['never_offered']}."]
if r.get("mysql"):
    md.append(f"Invariant violations in MySQL: {r['mysql']['invariant_violations']}.")
if killed:
    k = float(killed)
    held = set()
    for line in open(os.path.join(out, "dispatcher-1.log")):
        if '"region acquired"' in line:
            held.add(json.loads(line)["region"])
        elif '"region handed over"' in line or '"region lease lost"' in line:
            held.discard(json.loads(line)["region"])
    taken = {}
    for f in glob.glob(os.path.join(out, "dispatcher-*.log")):
        if f.endswith("dispatcher-1.log"):
            continue
        for line in open(f):
            if '"region acquired"' in line:
                e = json.loads(line)
                ts = datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
                if e["region"] in held and ts >= k - 1 and e["region"] not in taken:
                    taken[e["region"]] = ts - k
    if taken:
        md.append(f"kill -9 of dispatcher-1, which held {len(held)} regions: {len(taken)} taken over by the others, "
                  f"the first {min(taken.values()):.0f} s and the last {max(taken.values()):.0f} s after the kill "
                  f"(log times to the second; the lease TTL is 5 s).")
    else:
        md.append(f"kill -9 of dispatcher-1, which held {len(held)} regions: none taken over in the logs.")
def digests(f):
    d = {}
    if os.path.exists(f):
        for line in open(f).read().splitlines():
            k, n, t, rows, text = line.split("\t", 4)
            d[k] = (int(n), int(t), int(rows), text)
    return d
before, after = digests(os.path.join(out, "mariadb-digests.before.tsv")), digests(os.path.join(out, "mariadb-digests.after.tsv"))
if after:
    diff = []
    for k, (n, t, rows, text) in after.items():
        n0, t0, r0, _ = before.get(k, (0, 0, 0, ""))
        if n > n0:
            diff.append((t - t0, n - n0, rows - r0, text))
    diff.sort(reverse=True)
    md += ["", "MariaDB's costliest statements over the demand (performance_schema digests, by time taken):", "",
           "| statements | per booking | seconds | rows examined per statement | statement |", "|---:|---:|---:|---:|---|"]
    for t, n, rows, text in diff[:15]:
        md.append(f"| {n} | {n / max(bookings, 1):.2f} | {t / 1e12:.2f} | {rows / n:.0f} | \`{text[:150]}\` |")
open(os.path.join(out, "city.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
echo "report: $out/report.md and $out/city.md"
exit $status
