#!/usr/bin/env bash
# `make run`: the engine on the embedded default (no Redis or MySQL needed), with simulated
# drivers so the live map moves, and ready-made tokens for a driver, a customer and a dispatcher.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DISPATCH_JWT_SECRET=${DISPATCH_JWT_SECRET:-dev-only-secret-not-for-production-0123456789}
export DISPATCH_SIMULATE_DRIVERS=${DISPATCH_SIMULATE_DRIVERS:-300}
export DISPATCH_SIMULATE_BOOKINGS_PER_MIN=${DISPATCH_SIMULATE_BOOKINGS_PER_MIN:-6}
export DISPATCH_HTTP_ADDR=${DISPATCH_HTTP_ADDR:-:8080}
port=${DISPATCH_HTTP_ADDR##*:}
unset REDIS_URL MYSQL_DSN
cat <<MSG
dispatch (development): embedded Redis and MySQL, ${DISPATCH_SIMULATE_DRIVERS} simulated drivers in Bengaluru.

  live map:          http://localhost:${port}/   (sign in with the dispatcher token)
  dispatcher token:  $(bin/dispatchd token -role dispatcher -sub dev-dispatcher -ttl 12h)
  customer token:    $(bin/dispatchd token -role customer -sub dev-customer -ttl 12h)
  driver token:      $(bin/dispatchd token -role driver -sub dev-driver -ttl 12h)

MSG
exec bin/dispatchd serve
