#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need when it
# is missing (Python test packages, Debian's Chromium, npm packages), then runs
# formatting and lint checks, every cargo test (one release build serves the
# tests, the conformance suite, the browser tests and the load-test smoke run),
# a bounded fuzz run (with the nightly toolchain),
# the shared conformance smoke suite, the real-browser tests, and a short load
# test. Prints "steps: N passed, M failed" last; exits non-zero if any failed.
#
# usage: tests/run.sh            (from anywhere; CI runs it through .ci/run)
set -u
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

passed=0
failed=0
failures=()
step() {
  local name="$1"
  shift
  echo
  echo "=== $name"
  local started=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    echo "=== $name: ok ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "=== $name: FAILED ($((SECONDS - started)) s)"
  fi
}

need_python_packages() {
  python3 -c 'import pytest, websockets' >/dev/null 2>&1 ||
    python3 -m pip install -q --disable-pip-version-check pytest websockets
}

need_chromium() {
  [ -x /usr/bin/chromium ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
}

# Cluster-mode tests start their own redis-server (Debian's, Redis 7: sharded
# pub/sub) on a free port in a temp dir; nothing uses a system-wide one.
need_redis() {
  command -v redis-server >/dev/null && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends redis-server >/dev/null
}

# The proxy tests run Debian's nginx with deploy/nginx/pairgate.conf.
need_nginx() {
  [ -x /usr/sbin/nginx ] && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
}

# deploy/check.sh verifies the systemd unit with Debian's systemd-analyze.
need_systemd_analyze() {
  command -v systemd-analyze >/dev/null && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd >/dev/null
}

conformance() {
  local suite="$root/../shared/conformance/run.sh"
  if [ ! -x "$suite" ] && [ ! -f "$suite" ]; then
    echo "no shared conformance suite beside the checkout ($suite)"
    return 1
  fi
  # Version 1.1 on: readiness, the operator API and a two-node cluster too.
  PAIRGATE_V1_1=1 PAIRGATE_CMD="$root/target/release/pairgate" bash "$suite"
}

# The contract suite once more with every in-process gateway a cluster of
# three nodes on one redis-server (a database of its own per gateway), sockets
# spread round-robin; the tests about one process skip themselves.
contract_on_clusters() {
  local dir port rc
  dir="$(mktemp -d)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
    --databases 100000 --daemonize yes --pidfile "$dir/pid" --logfile "$dir/log"
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  PAIRGATE_TEST_REDIS="redis://127.0.0.1:$port" cargo test --release --test contract -- \
    --skip cluster:: --skip redis_harness
  rc=$?
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$dir/pid")" 2>/dev/null
  rm -rf "$dir"
  return $rc
}

step "install test tools" bash -c "$(declare -f need_python_packages need_chromium need_redis need_nginx need_systemd_analyze); need_python_packages && need_chromium && need_redis && need_nginx && need_systemd_analyze"
step "cargo fmt" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --release -- -D warnings
step "cargo test" cargo test --workspace --release --no-fail-fast
step "contract suite on 3-node clusters" contract_on_clusters
# A bounded fuzz run of every target (fuzz/run.sh: nightly only; says
# "skipped" and passes without it). Its inputs are replayed on stable by
# `cargo test` above (tests/fuzz_regressions.rs).
step "fuzz (20 s per target)" bash fuzz/run.sh 20
step "conformance smoke suite" conformance
step "deploy files (systemd unit)" deploy/check.sh target/release/pairgate
if [ -f tests/browser/run.sh ]; then
  step "browser tests" bash tests/browser/run.sh
fi
if [ -d loadtest ]; then
  step "load test smoke run" cargo run -q -p loadtest --release -- \
    --spawn-gateway target/release/pairgate --smoke --quiet
fi

echo
if [ "$failed" -gt 0 ]; then
  echo "failed steps: ${failures[*]}"
fi
echo "steps: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
