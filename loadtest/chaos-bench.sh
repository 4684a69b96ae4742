#!/usr/bin/env bash
# The chaos figures of docs/BENCHMARKS.md ("Cluster mode": node kill and
# Redis restart under load): `loadtest chaos --kill node` and `--kill redis`,
# RUNS times each (default 3), each run on a fresh cluster the load test
# starts itself (redis-server with appendonly yes + appendfsync always, three
# nodes with --node-lease-ms 2000). Prints every run's verdict and the medians.
#
# usage: loadtest/chaos-bench.sh [RUNS] [extra loadtest chaos options...]
#        (from the repo root, after cargo build --release --workspace; needs redis-server)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-3}"
shift || true
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
for kill in node redis; do
  for i in $(seq 1 "$runs"); do
    target/release/loadtest chaos --kill "$kill" --report "$out/$kill.$i.json" "$@" \
      >"$out/$kill.$i.txt" 2>/dev/null
    echo "$kill run $i: exit $? ($(grep -E '^(PASS|FAIL)$' "$out/$kill.$i.txt"))"
    grep -E '^(FAIL|TARGET MISSED|LOST):' "$out/$kill.$i.txt" | grep -v '^FAIL: account' | sed 's/^/    /'
  done
done

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def load(kill):
    return [json.load(open(f"{out}/{kill}.{i}.json")) for i in range(1, runs + 1)]
def row(label, values):
    shown = " / ".join(f"{v:.0f}" for v in values)
    print(f"{label:70} {statistics.median(values):9.0f}   ({shown})")
n = load("node")
print(f"--kill node: median of {runs} (runs in brackets)")
row("kill -> last phone_status false, ms", [r["phone_offline"]["max_ms"] for r in n])
row("kill -> last session_offline, ms", [r["session_offline"]["max_ms"] for r in n])
for key, what in (("", "home alive"), ("_home_killed", "home killed")):
    row(f"kill -> killed node's clients resumed, {what}: p50 ms", [r["resumed" + key]["p50_ms"] for r in n])
    row(f"kill -> killed node's clients resumed, {what}: max ms", [r["resumed" + key]["max_ms"] for r in n])
    row(f"kill -> killed node's clients acked again, {what}: p50 ms", [r["relaying_again" + key]["p50_ms"] for r in n])
    row(f"kill -> killed node's clients acked again, {what}: max ms", [r["relaying_again" + key]["max_ms"] for r in n])
row("acked deliveries lost", [r["losses"]["lost"] for r in n])
row("held by the killed node (acked before the kill)", [r["losses"]["held_by_killed_node"] for r in n])
row("through the killed home (acked before the kill)", [r["losses"]["through_killed_home"] for r in n])
row("counted a dead socket (acked after the kill)", [r["losses"]["counted_dead_socket"] for r in n])
row("links not resumed", [r["links"] - r["links_resumed"] for r in n])
r = load("redis")
print(f"--kill redis: median of {runs} (runs in brackets)")
row("restart -> PING, ms", [x["restart_to_ping_ms"] for x in r])
row("restart -> every node's /readyz 200 for good, ms", [x["readyz"]["max_ms"] for x in r])
row("restart -> every socket's sends acked again, ms", [x["sockets_recovered"]["max_ms"] for x in r])
row("recovery (the later of both), ms", [x["recovery_ms"] for x in r])
row("sockets interrupted", [x["sockets_interrupted"] for x in r])
row("sockets closed by the gateway", [x["disconnected"] for x in r])
row("acked deliveries lost", [x["losses"]["lost"] for x in r])
row("links not resumed", [x["links"] - x["links_resumed"] for x in r])
PY
