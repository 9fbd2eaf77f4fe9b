#!/usr/bin/env bash
# Failover of the leader under load (docs/ha.md): TRIALS seeded trials of the HA test with the
# default lease (5 s), from the debug build (the test binaries are built there; the time is the
# lease's, not the build's). Each trial starts two servers on a real PostgreSQL 15 and an agent
# given both, runs a long job, has 4 clients submit jobs that run on the agent, SIGKILLs the
# leader after a seeded number of acknowledgements, and measures the time until the standby
# acknowledges a write; then checks that no acknowledged job was lost or duplicated and that
# nothing was requeued or preempted. The servers snapshot and compact the log every 40 commands
# (the test's config), so takeovers and restarts go across snapshots. Figures in README.md.
# Usage: bench/failover.sh [TRIALS] [LEASE]
set -euo pipefail
cd "$(dirname "$0")/.."
trials=${1:-20}; lease=${2:-5s}
[ -x build/debug/tests/ha_test ] || { cmake --preset debug >/dev/null && cmake --build --preset debug -j"$(nproc)"; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
RSV_HA_TRIALS=$trials RSV_HA_LEASE=$lease ./build/debug/tests/ha_test \
  --gtest_filter='HaTest.Failover*' 2>/dev/null | tee "$out" | grep -E '^trial|OK|FAILED'
grep '^trial' "$out" | awk '{print $4}' | sort -n | awk -v lease="$lease" '
  {t[NR] = $1} END {
    if (NR == 0) exit 1
    printf "failover with a %s lease over %d trials: p50 %.2f s, max %.2f s\n", lease, NR,
           t[int((NR + 1) / 2)], t[NR]
  }'
awk '/^trial/ {a += $6; l += $8; d += $10; r += $12; p += $14}
     END {printf "acknowledged %d, lost %d, duplicated %d, requeued %d, preempted %d\n", a, l, d, r, p}' "$out"
