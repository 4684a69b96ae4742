#!/usr/bin/env bash
# Real-browser tests of pairgate: headless Chromium (Debian's) and the real
# gateway binary, one test file at a time; then the JavaScript client
# library's type check (`npm run typecheck` in clients/js) and its Node tests
# (clients/js/test/) against the same binary.
#
#   tests/browser/run.sh                 # builds target/release/pairgate, then runs
#   PAIRGATE_BIN=/path/to/pairgate tests/browser/run.sh   # that binary, no build
#   PAIRGATE_SKIP_BUILD=1 tests/browser/run.sh            # the existing release binary
#   PAIRGATE_DOC_SCREENSHOTS=1 tests/browser/run.sh       # also refresh docs/screenshots/
#
# The pages are compiled into the binary (rust-embed), so a stale binary
# tests stale pages: without PAIRGATE_BIN the release binary is brought up to
# date first (a no-op when it already is).
# Screenshots go to test-artifacts/screenshots/ (git-ignored).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

if [ ! -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ]; then
  echo "run.sh: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends chromium
fi

if [ -z "${PAIRGATE_BIN:-}" ]; then
  PAIRGATE_BIN="$ROOT/target/release/pairgate"
  if [ -z "${PAIRGATE_SKIP_BUILD:-}" ] || [ ! -x "$PAIRGATE_BIN" ]; then
    echo "run.sh: cargo build --release --bin pairgate" >&2
    cargo build --release --bin pairgate
  fi
fi
export PAIRGATE_BIN

# npm ci also when the lock file changed since the last install (npm writes
# node_modules/.package-lock.json) or a package is missing, so a checkout
# that installed before picks up a new one (axe-core).
if [ ! -d tests/browser/node_modules ] \
  || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ] \
  || [ ! -f tests/browser/node_modules/axe-core/axe.min.js ]; then
  if [ -f tests/browser/package-lock.json ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
  else
    (cd tests/browser && npm install --no-audit --no-fund)
  fi
fi

# The JavaScript client library's own tests (Node, `ws`) run here too, after
# its TypeScript declarations are checked (strict) against a use of the whole
# API and against its README's examples.
if [ ! -x clients/js/node_modules/.bin/tsc ]; then
  (cd clients/js && npm ci --no-audit --no-fund)
fi
echo "run.sh: clients/js: tsc --noEmit --strict (pairgate.d.ts, typecheck.ts, README examples)" >&2
(cd clients/js && npm run --silent typecheck)

mkdir -p test-artifacts/screenshots
exec node --test --test-concurrency=1 --test-timeout=120000 tests/browser/*.test.mjs clients/js/test/*.test.mjs
