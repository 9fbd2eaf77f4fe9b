#!/usr/bin/env bash
# Durable submissions per second over HTTP with wrk from another process, against a release
# server on a fresh SQLite file (WAL, synchronous=FULL, group commit). Figures in README.md.
# Usage: bench/submit_throughput.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-64}
bin=./build/release/src/cli/reservoir
[ -x "$bin" ] || { cmake --preset release >/dev/null && cmake --build --preset release -j"$(nproc)"; }
dir=$(mktemp -d)
cat > "$dir/config.json" <<'JSON'
{"tick": "1s", "pools": [{"name": "h100", "reserve_price": "1"}],
 "nodes": [{"name": "n", "pool": "h100", "gpus": 8, "count": 1000}]}
JSON
RESERVOIR_ADMIN_TOKEN=bench-admin "$bin" server --listen 127.0.0.1:0 --db "$dir/r.db" \
  --config "$dir/config.json" --threads 2 > "$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/server.log" && break; sleep 0.1; done
port=$(grep -o '127.0.0.1:[0-9]*' "$dir/server.log" | head -1 | cut -d: -f2)
url=http://127.0.0.1:$port
curl -s -H "Authorization: Bearer bench-admin" -d '{"name":"bench"}' "$url/v1/tenants" >/dev/null
export RESERVOIR_TOKEN=$(curl -s -H "Authorization: Bearer bench-admin" -d '{"tenant":"bench"}' "$url/v1/tokens" | sed 's/.*"token":"\([^"]*\)".*/\1/')
wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${secs}s" --latency -s bench/submit.lua "$url/v1/jobs"
echo "jobs in the store after the run: $(curl -s -H "Authorization: Bearer bench-admin" "$url/v1/jobs?limit=100000000" | grep -o '"id":' | wc -l)"
echo "of them running (placed when submitted): $(curl -s -H "Authorization: Bearer bench-admin" "$url/v1/jobs?state=running&limit=100000000" | grep -o '"id":' | wc -l)"
