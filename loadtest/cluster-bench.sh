#!/usr/bin/env bash
# The cluster figures of docs/BENCHMARKS.md: each scenario RUNS times (default
# 3) against a fresh cluster (redis-server with appendonly yes + appendfsync
# always, and NODES gateway nodes, default 3, all on this machine), and the
# same relay scenario against one node, for the fraction. Prints medians.
#
# usage: loadtest/cluster-bench.sh [RUNS] [NODES]   (from the repo root, after
#        cargo build --release --workspace; needs redis-server)
#
# Every account's phone and web clients are spread over the nodes (the load
# test's --url, repeated): with 3 nodes and 3 webs, each account has a socket
# on every node.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-3}"
nodes="${2:-3}"
gw="$PWD/target/release/pairgate"
lt="$PWD/target/release/loadtest"
out="$(mktemp -d)"
secret="cluster-bench-$RANDOM$RANDOM"
# shellcheck source=loadtest/cluster-lib.sh
source "$PWD/loadtest/cluster-lib.sh"
trap 'stop_cluster; rm -rf "$out"' EXIT

scenario() { # name, loadtest options...
  local name="$1"
  shift
  for i in $(seq 1 "$runs"); do
    start_cluster
    local gateway_pids=()
    for pid in "${pids[@]}"; do gateway_pids+=(--gateway-pid "$pid"); done
    "$lt" "${urls[@]}" "${gateway_pids[@]}" --secret "$secret" --quiet \
      --report "$out/$name.$i.json" "$@" >/dev/null
    stop_cluster
  done
}

single() { # name, loadtest options...: the same against one node
  local name="$1"
  shift
  for i in $(seq 1 "$runs"); do
    "$lt" --spawn-gateway "$gw" --quiet --report "$out/$name.$i.json" "$@" >/dev/null
  done
}

relay=(--phones 500 --webs-per-phone 3 --msg-size 256 --duration 10s --warmup 2s)
scenario relay_flat_out "${relay[@]}" --in-flight 16
single single_flat_out "${relay[@]}" --in-flight 16
scenario relay_5k "${relay[@]}" --rate 5000
scenario pairing --phones 2000 --webs-per-phone 3 --rate 1000 --duration 1s --warmup 0s --churn-rounds 1
scenario held --phones 2000 --webs-per-phone 3 --rate 2000 --duration 3s --warmup 1s --churn-rounds 1

python3 - "$out" "$runs" "$nodes" <<'PY'
import json, statistics, sys
out, runs, nodes = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(name):
    return [json.load(open(f"{out}/{name}.{i}.json")) for i in range(1, runs + 1)]
def med(values):
    return statistics.median(values)
def lat(rs, key, pct):
    return med([r["latency_ms"][key][pct] for r in rs])
rows = []
r = load("relay_flat_out")
s = load("single_flat_out")
cluster_rx = med([x["throughput"]["received_per_sec"] for x in r])
single_rx = med([x["throughput"]["received_per_sec"] for x in s])
rows.append((f"relay 500 x 3 flat out, {nodes} nodes: sends/s", med([x["throughput"]["sent_per_sec"] for x in r])))
rows.append((f"relay 500 x 3 flat out, {nodes} nodes: messages received/s", cluster_rx))
rows.append(("the same on one node: messages received/s", single_rx))
rows.append(("cluster / one node", cluster_rx / single_rx))
r = load("relay_5k")
rows.append(("at 5,000/s: sent/s", med([x["throughput"]["sent_per_sec"] for x in r])))
rows.append(("relay p99 at 5,000/s from scheduled send, web->phone (ms)", lat(r, "relay_web_to_phone", "p99")))
rows.append(("relay p99 at 5,000/s from scheduled send, phone->web (ms)", lat(r, "relay_phone_to_web", "p99")))
rows.append(("relay p50 at 5,000/s from scheduled send, web->phone (ms)", lat(r, "relay_web_to_phone", "p50")))
rows.append(("relay p50 at 5,000/s from scheduled send, phone->web (ms)", lat(r, "relay_phone_to_web", "p50")))
r = load("pairing")
pairings = [x["totals"]["webs_paired"] / next(p["wall_secs"] for p in x["phases"] if p["name"] == "connect") for x in r]
rows.append(("durable cross-node pairings/s (connect phase, 6,000 links + 2,000 phones)", med(pairings)))
r = load("held")
rows.append(("8,000 paired sockets over the nodes: RSS per socket (KiB, all nodes)", med([x["gateway"]["rss_per_socket_bytes"] / 1024 for x in r])))
r = load("relay_flat_out")
rows.append(("500 x logout_all at once: last web close p99 (ms, from release)", lat(r, "logout_all_last_close", "p99")))
rows.append(("500 x logout_all at once: ok p99 (ms, from release)", lat(r, "logout_all_ok", "p99")))
rows.append(("500 x logout_all at once: ok max (ms, from release)", lat(r, "logout_all_ok", "max")))
print(f"median of {runs} runs, {nodes} nodes")
for label, value in rows:
    print(f"{label:76} {value:12.2f}")
PY
