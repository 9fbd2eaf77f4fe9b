#!/usr/bin/env bash
# Restart time against the size of the command log (docs/ha.md, "Snapshots"): a release server
# on a fresh SQLite file takes `wrk -c32` submissions for SECONDS (about 14,000 commands a
# second here), is stopped with SIGKILL (a crash: nothing is written at exit), and started again;
# the time from exec to serving is measured. EVERY is the config's snapshot_every (0: no
# snapshots, so the start replays the whole log). QUIET seconds after the load (default 0) the
# server is killed: with QUIET past 60, the interval's snapshot (snapshot_interval "1m") has
# been taken by then and the start replays almost nothing. Figures in README.md.
# Usage: bench/restart.sh [SECONDS] [EVERY] [QUIET]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-70}; every=${2:-100000}; quiet=${3:-0}
bin=./build/release/src/cli/reservoir
[ -x "$bin" ] || { cmake --preset release >/dev/null && cmake --build --preset release -j"$(nproc)"; }
dir=$(mktemp -d)
cat > "$dir/config.json" <<JSON
{"tick": "1s", "snapshot_every": $every, "snapshot_interval": "1m", "pools": [{"name": "h100", "reserve_price": "1"}],
 "nodes": [{"name": "n", "pool": "h100", "gpus": 8, "count": 1000}]}
JSON
trap 'kill $(cat "$dir/pid" 2>/dev/null) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
start() {  # starts the server, waits until it serves; prints the seconds that took
  local t0 t1
  t0=$(date +%s%N)
  RESERVOIR_ADMIN_TOKEN=bench-admin "$bin" server --listen 127.0.0.1:0 --db "$dir/r.db" \
    --config "$dir/config.json" --threads 2 >> "$dir/server.log" 2>&1 &
  local pid=$!
  echo $pid > "$dir/pid"
  until grep -q listening "$dir/server.log" 2>/dev/null; do
    kill -0 $pid 2>/dev/null || { cat "$dir/server.log"; exit 1; }
    sleep 0.01
  done
  t1=$(date +%s%N)
  echo "scale=2; ($t1 - $t0) / 1000000000" | bc
}
start >/dev/null
port=$(grep -o '127.0.0.1:[0-9]*' "$dir/server.log" | head -1 | cut -d: -f2)
url=http://127.0.0.1:$port
curl -s -H "Authorization: Bearer bench-admin" -d '{"name":"bench"}' "$url/v1/tenants" >/dev/null
export RESERVOIR_TOKEN=$(curl -s -H "Authorization: Bearer bench-admin" -d '{"tenant":"bench"}' "$url/v1/tokens" | sed 's/.*"token":"\([^"]*\)".*/\1/')
wrk -t2 -c32 -d"${secs}s" --latency -s bench/submit.lua "$url/v1/jobs" | grep -E "Requests/sec|  (50|90|99)%"
sleep "$quiet"
seq=$(curl -s "$url/healthz" | sed 's/.*"applied_seq":\([0-9]*\).*/\1/')
grep "snapshot at" "$dir/server.log" | tail -3 || true
curl -s "$url/metrics" | grep -E '^reservoir_snapshot' || true
kill -9 "$(cat "$dir/pid")"; wait 2>/dev/null || true
: > "$dir/server.log"
took=$(start)
echo "commands in the log: $seq (snapshot_every $every)"
echo "restart after SIGKILL: ${took} s to serving"
grep -E "loaded the snapshot|listening" "$dir/server.log"
echo "resident memory after the restart: $(( $(awk '/VmRSS/ {print $2}' "/proc/$(cat "$dir/pid")/status") / 1024 )) MiB"
