#!/usr/bin/env bash
# Durable submissions per second over HTTP with wrk from another process, against a release
# server on a fresh SQLite file (WAL, synchronous=FULL, group commit), or with STORE=postgres on
# a throwaway PostgreSQL 15 cluster (fsync and synchronous_commit on, Unix socket; the server
# group-commits the same way). Figures in README.md.
# Usage: bench/submit_throughput.sh [SECONDS] [CONNECTIONS] [sqlite|postgres]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-64}; store=${3:-sqlite}
bin=./build/release/src/cli/reservoir
[ -x "$bin" ] || { cmake --preset release >/dev/null && cmake --build --preset release -j"$(nproc)"; }
dir=$(mktemp -d)
cat > "$dir/config.json" <<'JSON'
{"tick": "1s", "pools": [{"name": "h100", "reserve_price": "1"}],
 "nodes": [{"name": "n", "pool": "h100", "gpus": 8, "count": 1000}]}
JSON
db="$dir/r.db"
pg_stop=true
if [ "$store" = postgres ]; then
  # PostgreSQL refuses to run as root: the cluster belongs to nobody then.
  pgbin=$(pg_config --bindir)
  as=(); [ "$(id -u)" -eq 0 ] && { chown nobody "$dir"; as=(runuser -u nobody --); }
  chmod 755 "$dir"
  "${as[@]}" "$pgbin/initdb" -D "$dir/pg" -U reservoir -A trust -E UTF8 --locale=C >/dev/null
  "${as[@]}" "$pgbin/pg_ctl" -D "$dir/pg" -l "$dir/pg.log" -w \
    -o "-k $dir -c listen_addresses= -c fsync=on -c synchronous_commit=on" start >/dev/null
  pg_stop="${as[*]} $pgbin/pg_ctl -D $dir/pg -m fast -w stop"
  db="postgresql://reservoir@/postgres?host=$dir"
fi
RESERVOIR_ADMIN_TOKEN=bench-admin "$bin" server --listen 127.0.0.1:0 --db "$db" \
  --config "$dir/config.json" --threads 2 > "$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; $pg_stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
for _ in $(seq 100); do grep -q listening "$dir/server.log" && break; sleep 0.1; done
port=$(grep -o '127.0.0.1:[0-9]*' "$dir/server.log" | head -1 | cut -d: -f2)
url=http://127.0.0.1:$port
curl -s -H "Authorization: Bearer bench-admin" -d '{"name":"bench"}' "$url/v1/tenants" >/dev/null
export RESERVOIR_TOKEN=$(curl -s -H "Authorization: Bearer bench-admin" -d '{"tenant":"bench"}' "$url/v1/tokens" | sed 's/.*"token":"\([^"]*\)".*/\1/')
wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${secs}s" --latency -s bench/submit.lua "$url/v1/jobs"
metrics=$(curl -s "$url/metrics")
count() { echo "$metrics" | awk -v s="reservoir_jobs{state=\"$1\"}" '$1 == s {print $2}'; }
total=0; for st in pending starting running preempting succeeded failed cancelled; do total=$((total + $(count $st))); done
echo "jobs in the store after the run: $total"
echo "of them running (placed when submitted): $(count running)"
