#!/usr/bin/env bash
# Fleet scale: submissions while emulated agents sync over real HTTP (bench/agents.mjs), with the
# load from wrk in its own process (CLIENT=node: from the emulator's own 32 Node.js clients).
# Figures in README.md ("Fleet scale").
# Usage: bench/fleet.sh [PARKED_AGENTS=1000] [SECONDS=10] [WORKING_AGENTS=0]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./build/release/src/cli/reservoir
[ -x "$bin" ] || { cmake --preset release >/dev/null && cmake --build --preset release -j"$(nproc)"; }
CLIENT=${CLIENT:-wrk} exec node bench/agents.mjs "$bin" "${1:-1000}" "${2:-10}" "${3:-0}"
