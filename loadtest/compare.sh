#!/usr/bin/env bash
# The same seeded peak load against the engine twice, batch-optimal then greedy matching
# (DISPATCH_MATCH_GREEDY), and one report with both side by side:
#
#   loadtest/compare.sh            (settings as loadtest/peak.sh; LOADTEST_SEED [7])
#
# Writes loadtest/out/compare-<time>/{batch,greedy}/ and compare.md there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
stamp=$(date +%Y%m%d-%H%M%S)
out=loadtest/out/compare-$stamp
seed=${LOADTEST_SEED:-7}
mkdir -p "$out"
for mode in batch greedy; do
  greedy=false; [[ $mode == greedy ]] && greedy=true
  echo "== $mode matching"
  DISPATCH_MATCH_GREEDY=$greedy LOADTEST_OUT="$out/$mode" LOADTEST_BASELINE=0 loadtest/peak.sh -seed "$seed" "$@"
done
bin/loadtest compare batch="$out/batch" greedy="$out/greedy" | tee "$out/compare.md"
echo "report: $out/compare.md"
