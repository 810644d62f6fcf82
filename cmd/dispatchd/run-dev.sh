#!/usr/bin/env bash
# `make run`: the engine on the embedded default (no Redis or MySQL needed), with simulated
# drivers so the live map moves, ready-made tokens for a driver, a customer and a dispatcher,
# and the printed driver online (bin/loadtest drive) so that it can be driven by hand.
# It listens on 127.0.0.1 only (pprof included) unless DISPATCH_HTTP_ADDR / DISPATCH_ADMIN_ADDR
# say otherwise, e.g. DISPATCH_HTTP_ADDR=:8080 make run.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DISPATCH_JWT_SECRET=${DISPATCH_JWT_SECRET:-dev-only-secret-not-for-production-0123456789}
export DISPATCH_SIMULATE_DRIVERS=${DISPATCH_SIMULATE_DRIVERS:-300}
export DISPATCH_SIMULATE_BOOKINGS_PER_MIN=${DISPATCH_SIMULATE_BOOKINGS_PER_MIN:-6}
export DISPATCH_HTTP_ADDR=${DISPATCH_HTTP_ADDR:-127.0.0.1:8080}
export DISPATCH_ADMIN_ADDR=${DISPATCH_ADMIN_ADDR:-127.0.0.1:9090}
port=${DISPATCH_HTTP_ADDR##*:}
unset REDIS_URL MYSQL_DSN
driver_token=$(bin/dispatchd token -role driver -sub dev-driver -ttl 12h)
cat <<MSG
dispatch (development): embedded Redis and MySQL, ${DISPATCH_SIMULATE_DRIVERS} simulated drivers in Bengaluru,
listening on ${DISPATCH_HTTP_ADDR} (admin, metrics and pprof on ${DISPATCH_ADMIN_ADDR}).

  live map:          http://127.0.0.1:${port}/   (sign in with the dispatcher token)
  dispatcher token:  $(bin/dispatchd token -role dispatcher -sub dev-dispatcher -ttl 12h)
  customer token:    $(bin/dispatchd token -role customer -sub dev-customer -ttl 12h)
  driver token:      ${driver_token}
                     (driver dev-driver, kept online near MG Road; README: "Drive a booking by hand")

MSG
bin/dispatchd serve &
server=$!
trap 'kill $server ${drive:-} 2>/dev/null || true' EXIT INT TERM
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:${port}/livez" >/dev/null 2>&1 && break
  kill -0 $server 2>/dev/null || exit 1
  sleep 0.2
done
# dev-driver is registered and verified the way operations registers drivers (POST, then PATCH
# /v1/drivers), then waits online and declines offers: it takes the bookings a dispatcher
# assigns it.
admin_token=$(bin/dispatchd token -role admin -sub dev-admin -ttl 1h)
curl -sf -X POST "http://127.0.0.1:${port}/v1/drivers" -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
  -d "{\"id\":\"dev-driver\",\"name\":\"Dev Driver\",\"phone\":\"+919800000001\",\"licence_no\":\"KA0120260000001\",\"licence_expires\":\"$(date -d '+3 years' +%F)\",\"transmissions\":[\"manual\",\"automatic\"],\"cities\":[\"bengaluru\"]}" >/dev/null || true
curl -sf -X PATCH "http://127.0.0.1:${port}/v1/drivers/dev-driver" -H "Authorization: Bearer $admin_token" -H 'Content-Type: application/json' \
  -d '{"verified":true}' >/dev/null || echo "run-dev.sh: could not verify dev-driver" >&2
bin/loadtest drive -url "ws://127.0.0.1:${port}/v1/ws" -token "$driver_token" </dev/null >/dev/null &
drive=$!
wait $server
