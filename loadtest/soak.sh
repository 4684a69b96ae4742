#!/usr/bin/env bash
# The memory soak of docs/BENCHMARKS.md: one spawned gateway, 1,000 phones x 3
# web clients, in cycles until DURATION has passed. Each cycle pairs every web
# client anew (the same accounts), relays at 2,000 sends/s for 5 s, resumes
# every web session 3 times, logs one session per phone out (`logout`), then
# sends every phone's `logout_all` at once. The gateway's RSS is sampled every
# 10 s and at the end of each cycle's relay into CSV; the run FAILS (exit 1)
# when the Theil-Sen slope of the per-cycle samples over the second half
# exceeds MAX_SLOPE KiB/min, and prints the slope either way.
#
# usage: loadtest/soak.sh [DURATION] [MAX_SLOPE] [CSV]   (from the repo root,
#        after cargo build --release --workspace; defaults 10m 256
#        test-artifacts/soak-rss.csv)
#
# It runs exactly:
#   target/release/loadtest --spawn-gateway target/release/pairgate \
#     --phones 1000 --webs-per-phone 3 --rate 2000 --warmup 0s --duration 5s \
#     --churn-rounds 3 --soak 10m --rss-every 10s --max-rss-slope 256 \
#     --rss-csv test-artifacts/soak-rss.csv
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
duration="${1:-10m}"
slope="${2:-256}"
csv="${3:-test-artifacts/soak-rss.csv}"
mkdir -p "$(dirname "$csv")"
exec target/release/loadtest --spawn-gateway target/release/pairgate \
  --phones 1000 --webs-per-phone 3 --rate 2000 --warmup 0s --duration 5s \
  --churn-rounds 3 --soak "$duration" --rss-every 10s --max-rss-slope "$slope" \
  --rss-csv "$csv"
