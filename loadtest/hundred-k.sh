#!/usr/bin/env bash
# The 100,000-socket figure of docs/BENCHMARKS.md: RUNS times (default 3) a
# fresh cluster (redis-server with appendonly yes + appendfsync always, six
# gateway nodes, each under the 20,000 open-files limit), 25,000 phones x 3
# webs spread over the nodes from many source addresses and worker processes,
# relay at 5,000 sends/s, then `logout_all` of every account at one instant.
# Prints medians: sockets held, RSS per socket, relay p99, and the time from
# the release to the last `ok` and to the last web socket's close.
#
# usage: loadtest/hundred-k.sh [RUNS]   (from the repo root, after
#        cargo build --release --workspace; needs redis-server; quiet machine)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-3}"
nodes=6
gw="$PWD/target/release/pairgate"
lt="$PWD/target/release/loadtest"
out="$(mktemp -d)"
secret="hundred-k-$RANDOM$RANDOM"
node_args=(--max-frames-per-sec 1000000)
# shellcheck source=loadtest/cluster-lib.sh
source "$PWD/loadtest/cluster-lib.sh"
trap 'stop_cluster; rm -rf "$out"' EXIT

for i in $(seq 1 "$runs"); do
  start_cluster
  gateway_pids=()
  for pid in "${pids[@]}"; do gateway_pids+=(--gateway-pid "$pid"); done
  "$lt" "${urls[@]}" "${gateway_pids[@]}" --secret "$secret" --quiet \
    --report "$out/run.$i.json" \
    --phones 25000 --webs-per-phone 3 --msg-size 256 --rate 5000 --duration 3s --warmup 1s \
    --churn-rounds 0 --source-ips 127.0.0.2-127.0.0.60 --timeout 60s >"$out/run.$i.out" 2>&1 ||
    { echo "run $i failed:"; tail -20 "$out/run.$i.out"; exit 1; }
  stop_cluster
done

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
rs = [json.load(open(f"{out}/run.{i}.json")) for i in range(1, runs + 1)]
med = statistics.median
def lat(key, pct):
    return [r["latency_ms"][key][pct] for r in rs]
rows = [
    ("webs paired", [r["totals"]["webs_paired"] for r in rs]),
    ("RSS per paired socket, all nodes (KiB)", [r["gateway"]["rss_per_socket_bytes"] / 1024 for r in rs]),
    ("relay p99 at 5,000/s from scheduled send, phone->web (ms)", lat("relay_phone_to_web", "p99")),
    ("relay p99 at 5,000/s from scheduled send, web->phone (ms)", lat("relay_web_to_phone", "p99")),
    ("25,000 x logout_all at once: ok p99 (ms, from release)", lat("logout_all_ok", "p99")),
    ("25,000 x logout_all at once: ok max (ms, from release)", lat("logout_all_ok", "max")),
    ("25,000 x logout_all at once: last web close p99 (ms)", lat("logout_all_last_close", "p99")),
]
print(f"median of {runs} runs (each run's value in brackets)")
for label, values in rows:
    print(f"{label:62} {med(values):12.2f}   {[round(v, 2) for v in values]}")
PY
