#!/usr/bin/env bash
# Runs the benchmark scenarios of docs/BENCHMARKS.md, each RUNS times (default
# 3) against a fresh gateway, and prints the median of each figure.
#
# usage: loadtest/bench.sh [RUNS]        (from the repo root, after
#        cargo build --release --workspace)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs="${1:-3}"
gw=target/release/pairgate
lt=target/release/loadtest
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

scenario() { # name, loadtest options...
  local name="$1"
  shift
  for i in $(seq 1 "$runs"); do
    "$lt" --spawn-gateway "$gw" --quiet --report "$out/$name.$i.json" "$@" >/dev/null
  done
}

scenario relay_flat_out --phones 500 --webs-per-phone 3 --msg-size 256 --in-flight 16 --duration 10s --warmup 2s
scenario relay_5k --phones 500 --webs-per-phone 3 --msg-size 256 --rate 5000 --duration 10s --warmup 2s
scenario relay_20k --phones 500 --webs-per-phone 3 --msg-size 256 --rate 20000 --duration 10s --warmup 2s
scenario held_12k --phones 3000 --webs-per-phone 3 --rate 5000 --duration 3s --warmup 1s --churn-rounds 1
scenario pairing --phones 2000 --webs-per-phone 3 --rate 1000 --duration 1s --warmup 0s --churn-rounds 1
# 5,000 phones x 3 webs = 20,000 sockets: two gateway processes (20,000 files each here)
scenario logout_5k --spawn-gateways 2 --phones 5000 --webs-per-phone 3 --rate 1000 --duration 1s --warmup 0s --churn-rounds 0

python3 - "$out" "$runs" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
def load(name):
    return [json.load(open(f"{out}/{name}.{i}.json")) for i in range(1, runs + 1)]
def med(values):
    return statistics.median(values)
def lat(rs, key, pct):
    return med([r["latency_ms"][key][pct] for r in rs])
rows = []
r = load("relay_flat_out")
rows.append(("relay, 500 x 3, flat out: sends/s", med([x["throughput"]["sent_per_sec"] for x in r])))
rows.append(("relay, 500 x 3, flat out: messages received/s", med([x["throughput"]["received_per_sec"] for x in r])))
for name, label in (("relay_5k", "5,000/s"), ("relay_20k", "20,000/s")):
    r = load(name)
    rows.append((f"at {label}: sent/s (scheduled {label})", med([x["throughput"]["sent_per_sec"] for x in r])))
    rows.append((f"at {label}: messages received/s", med([x["throughput"]["received_per_sec"] for x in r])))
    rows.append((f"at {label}: sends behind schedule at the end", med([x["throughput"]["behind_schedule"] for x in r])))
    rows.append((f"relay p99 at {label} from scheduled send, web->phone (ms)", lat(r, "relay_web_to_phone", "p99")))
    rows.append((f"relay p99 at {label} from scheduled send, phone->web (ms)", lat(r, "relay_phone_to_web", "p99")))
    rows.append((f"send lag p99 at {label} (load test late vs schedule, ms)", lat(r, "send_lag", "p99")))
r = load("held_12k")
rows.append(("12,000 paired sockets: RSS per socket (KiB)", med([x["gateway"]["rss_per_socket_bytes"] / 1024 for x in r])))
r = load("pairing")
pairings = [x["totals"]["webs_paired"] / next(p["wall_secs"] for p in x["phases"] if p["name"] == "connect") for x in r]
rows.append(("durable pairings/s (connect phase, 6,000 links + 2,000 phones)", med(pairings)))
for name, n in (("relay_flat_out", "500"), ("logout_5k", "5,000")):
    r = load(name)
    rows.append((f"{n} x logout_all at once: most outstanding at one instant", med([x["logout_all"]["max_outstanding"] for x in r])))
    rows.append((f"{n} x logout_all at once: last frame written after release (ms)", med([x["logout_all"]["last_written_after_release_ms"] for x in r])))
    rows.append((f"{n} x logout_all at once: last web close p99 (ms, from release)", lat(r, "logout_all_last_close", "p99")))
    rows.append((f"{n} x logout_all at once: last web close max (ms, from release)", lat(r, "logout_all_last_close", "max")))
    rows.append((f"{n} x logout_all at once: ok p99 (ms, from release)", lat(r, "logout_all_ok", "p99")))
    rows.append((f"{n} x logout_all at once: ok max (ms, from release)", lat(r, "logout_all_ok", "max")))
print(f"median of {runs} runs")
for label, value in rows:
    print(f"{label:70} {value:12.2f}")
PY
