#!/usr/bin/env bash
# The engine as production runs it, scaled out role by role on this machine: CITY_GATEWAYS
# gateway processes (DISPATCH_ROLES=gateway, each under the 20,000-file cap), CITY_DISPATCHERS
# dispatcher processes and one API process, on the real Redis and MariaDB, a fresh database and
# Redis prefix; then bin/loadtest peak against them (driver sockets spread over child processes
# and 127.0.0.x sources, REST to the API), kill -9 of one dispatcher at CITY_KILL_AT seconds,
# and the CPU each role spent (from /proc: utime + stime) per booking and per location point.
#
#   loadtest/city.sh [extra bin/loadtest peak flags...]
#
# Settings (environment, defaults in brackets):
#   CITY_DRIVERS [10000] CITY_RATE [100] bookings/s  CITY_DURATION [60s]  CITY_TICK [5s]
#   CITY_GATEWAYS [3] CITY_DISPATCHERS [2] CITY_KILL_AT [30] (0: no kill)  CITY_PROCS [gateways]
#   REDIS_URL [redis://127.0.0.1:6379]  LOADTEST_MYSQL [root@tcp(127.0.0.1:3306)/]
#   CITY_OUT [loadtest/out/city-<time>]
# Writes the peak report there, with city.md: the topology, per-role CPU and the takeover gap.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

drivers=${CITY_DRIVERS:-10000}
rate=${CITY_RATE:-100}
duration=${CITY_DURATION:-60s}
tick=${CITY_TICK:-5s}
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
mysql_addr=$(sed -E 's/.*tcp\(([^)]*)\).*/\1/' <<<"$mysql_base")
mysql_user=${mysql_base%%@*}; mysql_user=${mysql_user%%:*}
sql() { mysql -h "${mysql_addr%:*}" -P "${mysql_addr##*:}" -u "$mysql_user" -e "$1"; }
sql "CREATE DATABASE \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
# Six processes of 32 connections and the matchers' pools pass MariaDB's default 151, as an RDS
# instance's max_connections would be sized for them.
sql "SET GLOBAL max_connections = GREATEST(@@max_connections, 1000)"
mkdir -p "$out"
secret=$(head -c 48 /dev/urandom | base64 | tr -d '\n')

declare -A pid http admin role
names=()
cleanup() {
  for n in "${names[@]}"; do kill -TERM "${pid[$n]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  redis-cli --scan --pattern "$prefix*" | xargs -r -n 500 redis-cli del >/dev/null || true
  sql "DROP DATABASE IF EXISTS \`$db\`" || true
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
gws=() metrics=()
for n in "${names[@]}"; do
  metrics+=("http://${admin[$n]}/metrics")
  [[ ${role[$n]} == gateway ]] && gws+=("http://${http[$n]}")
done
cpu() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # clock ticks
declare -A cpu0 cpu1
for n in "${names[@]}"; do cpu0[$n]=$(cpu "${pid[$n]}"); done
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "topology: api ${http[api]}, ${#gws[@]} gateways, $ndisp dispatchers; $drivers drivers, $rate bookings/s, a point every $tick"

DISPATCH_JWT_SECRET=$secret bin/loadtest peak -target "http://${http[api]}" -gateways "$(IFS=,; echo "${gws[*]}")" \
  -metrics "$(IFS=,; echo "${metrics[*]}")" -mysql-dsn "${mysql_base%/}/$db" -drivers "$drivers" -tick "$tick" \
  -duration "$duration" -profile steady -rate "$rate" -dispatchers 0 -procs "$procs" -out "$out" "$@" &
gen=$!
killed_at=
if (( kill_at > 0 )); then
  sleep "$kill_at"
  cpu1[dispatcher-1]=$(cpu "${pid[dispatcher-1]}")
  kill -9 "${pid[dispatcher-1]}" && killed_at=$(date +%s.%N)
  echo "killed dispatcher-1 (pid ${pid[dispatcher-1]}) at $(date -u +%T.%N)"
fi
status=0
wait $gen || status=$?
for n in "${names[@]}"; do [[ -n ${cpu1[$n]:-} ]] || cpu1[$n]=$(cpu "${pid[$n]}"); done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

python3 - "$out" "$killed_at" "$load_before" "$load_after" "$tick" "$rate" "$drivers" <<PY
import json, sys, os, glob, datetime
out, killed, lb, la, tick, rate, drivers = sys.argv[1:8]
r = json.load(open(os.path.join(out, "report.json")))
c = r["counts"]
points, bookings = c["locations_sent"], c["bookings_created"]
hz = os.sysconf("SC_CLK_TCK")
rows = """$(for n in "${names[@]}"; do echo "$n ${role[$n]} ${cpu0[$n]} ${cpu1[$n]}"; done)""".split("\n")
per = {}
lines = []
for row in rows:
    n, role, a, b = row.split()
    s = (float(b) - float(a)) / hz
    per.setdefault(role, 0.0)
    per[role] += s
    lines.append(f"| {n} | {role} | {s:.1f} |")
lat = r["latency"]["booking_to_offer"]
md = [f"# City run: {drivers} drivers, {rate} bookings/s, a point every {tick}", "",
      f"Load average before {lb}, after {la}. Processes: " + ", ".join(row.split()[0] for row in rows) + ".", "",
      "| process | role | CPU-s during the run |", "|---|---|---:|"] + lines + ["",
      "| role | CPU-s | per | CPU-us per unit |", "|---|---:|---|---:|"]
for role, unit, n in (("gateway", "location point", points), ("dispatcher", "booking", bookings), ("api", "booking", bookings)):
    if role in per and n:
        md.append(f"| {role} | {per[role]:.1f} | {unit} ({n}) | {per[role]/n*1e6:.0f} |")
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
open(os.path.join(out, "city.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
echo "report: $out/report.md and $out/city.md"
exit $status
