#!/usr/bin/env bash
# Trace-replay benchmark: the whole Philly trace under market, then all four policies, with wall
# time, events/s and peak memory. Figures are quoted in README.md.
# Usage: bench/sim_replay.sh [TRACE]   (default ../shared/traces/philly-derived/philly_jobs_pollux.csv)
set -euo pipefail
cd "$(dirname "$0")/.."
trace=${1:-../shared/traces/philly-derived/philly_jobs_pollux.csv}
bin=./build/release/src/cli/reservoir
[ -x "$bin" ] || { cmake --preset release >/dev/null && cmake --build --preset release -j"$(nproc)"; }
out=$(mktemp -d)
for policy in market all; do
  echo "== --policy $policy"
  /usr/bin/time -f "elapsed %e s, peak RSS %M KB" \
    "$bin" sim --trace "$trace" --format philly --policy "$policy" --seed 1 --out "$out/$policy" --quiet \
    | grep -E "^metric|wall time"
  cat "$out/$policy/timing.json"
done
rm -rf "$out"
