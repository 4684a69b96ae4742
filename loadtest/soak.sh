#!/usr/bin/env bash
# The memory soak of docs/BENCHMARKS.md: one gateway, 1,000 phones x 3 web
# sessions, then web sockets disconnecting and resuming over and over for about
# ten minutes. Samples the gateway's RSS every 10 s into a CSV and prints the
# first and last samples after warm-up.
#
# usage: loadtest/soak.sh [CHURN_ROUNDS] [CSV]   (from the repo root, after
#        cargo build --release --workspace)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rounds="${1:-1500}"
csv="${2:-test-artifacts/soak-rss.csv}"
mkdir -p "$(dirname "$csv")"
data="$(mktemp -d)"
log="$data/gateway.log"
target/release/pairgate serve --listen 127.0.0.1:0 --data-dir "$data" \
  --max-frames-per-sec 1000000 --max-devices 4 2>"$log" &
gw=$!
trap 'kill "$gw" 2>/dev/null; wait "$gw" 2>/dev/null; rm -rf "$data"' EXIT
port=""
for _ in $(seq 1 100); do
  port=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || { echo "gateway did not start"; cat "$log"; exit 1; }

echo "seconds,rss_kib" >"$csv"
start=$SECONDS
(
  while kill -0 "$gw" 2>/dev/null; do
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw/status" 2>/dev/null || true)
    [ -n "$rss" ] && echo "$((SECONDS - start)),$rss" >>"$csv"
    sleep 10
  done
) &
sampler=$!

target/release/loadtest --url "ws://127.0.0.1:$port" --data-dir "$data" --quiet \
  --phones 1000 --webs-per-phone 3 --rate 2000 --duration 10s --warmup 2s \
  --churn-rounds "$rounds"
kill "$sampler" 2>/dev/null || true
echo "RSS samples (seconds, KiB) in $csv:"
cat "$csv"
