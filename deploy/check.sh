#!/usr/bin/env bash
# Checks the files in deploy/ that can be checked without deploying:
# the systemd unit with `systemd-analyze verify` (syntax, directives, the
# binary it starts) and `systemd-analyze security` (its exposure stays at or
# under MAX_EXPOSURE). Run by tests/run.sh.
#
# usage: deploy/check.sh [PAIRGATE_BINARY]   (default: target/release/pairgate)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
binary="$(realpath "${1:-$root/target/release/pairgate}")"
MAX_EXPOSURE=2.0

if ! command -v systemd-analyze >/dev/null; then
  echo "systemd-analyze is missing (Debian package systemd)" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The unit names the installed path; check it against the binary just built.
sed "s#^ExecStart=/usr/local/bin/pairgate#ExecStart=$binary#" \
  "$root/deploy/pairgate.service" >"$work/pairgate.service"
# verify only warns about an unknown or misspelt directive: any word from it fails.
if ! systemd-analyze verify "$work/pairgate.service" >"$work/verify.log" 2>&1 ||
  [ -s "$work/verify.log" ]; then
  cat "$work/verify.log" >&2
  echo "pairgate.service: systemd-analyze verify complained" >&2
  exit 1
fi
exposure="$(systemd-analyze security --offline=true "$work/pairgate.service" |
  sed -n 's/.*Overall exposure level for pairgate.service: \([0-9.]*\).*/\1/p')"
echo "pairgate.service: verified; exposure $exposure (at most $MAX_EXPOSURE)"
awk -v e="$exposure" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(e != "" && e <= max) }'
