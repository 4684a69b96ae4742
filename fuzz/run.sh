#!/usr/bin/env bash
# A bounded fuzz run of every target in fuzz/fuzz_targets/, one after another.
# Needs the nightly toolchain (cargo-fuzz builds with sanitizers); without it,
# says "skipped: no nightly toolchain" and exits 0. Installs cargo-fuzz from
# crates.io when missing.
#
# Each target starts from its checked-in seeds (fuzz/corpus/<target>/, read
# only) and what earlier runs found (fuzz/corpus-run/<target>/, not checked
# in). A crash stops the run: its input is in fuzz/artifacts/<target>/; fix it
# in the library and copy the input to fuzz/regressions/<target>/, which
# `cargo test --test fuzz_regressions` replays on stable.
#
# usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]   (default 20 s, all)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds="${1:-20}"
shift || true

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "skipped: no nightly toolchain (rustup toolchain install nightly to fuzz)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in fuzz_targets/*.rs; do
    targets+=("$(basename "$f" .rs)")
  done
fi

started=$SECONDS
# One build of every target (optimised, with overflow checks and ASan, as
# cargo-fuzz does by default); `fuzz run` below reuses it.
cargo +nightly fuzz build
echo "fuzz build: $((SECONDS - started)) s"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "corpus-run/$t"
  echo "--- $t: ${seconds} s"
  # New inputs go to the first corpus dir, so the seeds stay as they are.
  status=0
  cargo +nightly fuzz run "$t" "corpus-run/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -max_len=4096 -timeout=10 \
    -rss_limit_mb=1024 >"$log" 2>&1 || status=$?
  grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|cov: .*corp:.*exec/s' "$log" | tail -n 4
  if [ "$status" -ne 0 ]; then
    grep -E -A 20 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -n 60
    echo "fuzz target $t FAILED (status $status): its input is in fuzz/artifacts/$t/"
    exit 1
  fi
done
echo "fuzzed ${#targets[@]} targets for ${seconds} s each in $((SECONDS - started)) s"
