#!/usr/bin/env bash
# A three-node pairgate cluster on this machine, for trying cluster mode.
#
# usage: deploy/local-cluster.sh        (from the checkout; Ctrl-C stops it all)
#
# Starts, all on 127.0.0.1:
#   - redis-server on port 6390 (appendonly yes, appendfsync always, no RDB
#     snapshots), its data and log in ./cluster-data/redis/;
#   - three gateway nodes, node-1..node-3, on ports 8081, 8082, 8083, all
#     with --redis redis://127.0.0.1:6390, one shared secret and --demo; each
#     node's data dir, log (node.log) and pid file in ./cluster-data/node-I/.
# The secret is generated once and kept in ./cluster-data/secret (mode 0600);
# it reaches the nodes through their environment (PAIRGATE_SECRET), never their
# command line. Then it prints the URLs and waits: open the web page on node 1
# (http://127.0.0.1:8081/) and the demo phone on node 2
# (http://127.0.0.1:8082/phone), type the pairing code into the phone, and the
# two talk across nodes. `kill -9 "$(cat cluster-data/node-2/pid)"` shows a node
# dying; the others keep running. Ctrl-C (or SIGTERM) stops every process this
# script started, and nothing else. Data is kept for the next run; delete
# ./cluster-data to start afresh.
#
# The binary: $CLUSTER_BIN if set, else target/release/pairgate if built, else
# `cargo build --release` first.
#
# Environment (defaults):
#   CLUSTER_DIR=./cluster-data      data, logs, pid files and the secret
#   CLUSTER_HOST=127.0.0.1          address everything listens on
#   CLUSTER_REDIS_PORT=6390         redis-server's port
#   CLUSTER_PORTS="8081 8082 8083"  one gateway node per port
#   CLUSTER_LEASE_MS=10000          --node-lease-ms of every node
#   CLUSTER_BIN=                    the pairgate binary to run
#   CLUSTER_ARGS=                   extra options for every node (split on spaces)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${CLUSTER_DIR:-./cluster-data}"
host="${CLUSTER_HOST:-127.0.0.1}"
redis_port="${CLUSTER_REDIS_PORT:-6390}"
read -r -a ports <<<"${CLUSTER_PORTS:-8081 8082 8083}"
lease_ms="${CLUSTER_LEASE_MS:-10000}"
read -r -a extra_args <<<"${CLUSTER_ARGS:-}"

say() { printf '%s\n' "$*"; }
die() {
  printf 'local-cluster: %s\n' "$*" >&2
  exit 1
}

command -v redis-server >/dev/null ||
  die "redis-server not found (Debian: apt-get install -y redis-server)"
command -v redis-cli >/dev/null ||
  die "redis-cli not found (Debian: apt-get install -y redis-tools)"
[ "${#ports[@]}" -gt 0 ] || die "CLUSTER_PORTS is empty"

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

bin="${CLUSTER_BIN:-}"
if [ -z "$bin" ]; then
  bin="$root/target/release/pairgate"
  if [ ! -x "$bin" ]; then
    say "building pairgate (cargo build --release)..."
    (cd "$root" && cargo build --release --bin pairgate)
  fi
fi
[ -x "$bin" ] || die "no pairgate binary at $bin"

# A value from the environment would override nothing given on the command
# line, but would set what is not: only this script's choices reach the nodes.
while IFS= read -r name; do
  unset "$name"
done < <(compgen -e | grep '^PAIRGATE_' || true)

# --- every process started here, stopped on the way out

pids=()
names=()
stopping=0
stop_pid() {
  [ -z "$1" ] || kill -TERM "$1" 2>/dev/null || true
}
cleanup() {
  [ "$stopping" -eq 1 ] && return
  stopping=1
  trap - INT TERM EXIT
  local i running=()
  for i in "${!pids[@]}"; do
    [ -z "${pids[i]}" ] || running+=("${names[i]}")
  done
  if [ "${#running[@]}" -gt 0 ]; then
    say
    say "stopping ${running[*]}..."
    # the gateway nodes first (they close their sockets 1012), then Redis
    # (pids[0]), which they may still need while they shut down
    for ((i = ${#pids[@]} - 1; i >= 1; i--)); do
      stop_pid "${pids[i]}"
    done
    for ((i = ${#pids[@]} - 1; i >= 1; i--)); do
      [ -z "${pids[i]}" ] || wait "${pids[i]}" 2>/dev/null || true
    done
    stop_pid "${pids[0]}"
    [ -z "${pids[0]}" ] || wait "${pids[0]}" 2>/dev/null || true
  fi
  rm -f "$dir"/node-*/pid "$dir/redis/pid"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

started() {
  pids+=("$1")
  names+=("$2")
}

port_free() {
  ! (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null
}

# The status code of GET $1 on $host:$2, or nothing if no answer within 2 s.
http_status() {
  (
    exec 3<>"/dev/tcp/$host/$2" || exit 0
    printf 'GET %s HTTP/1.1\r\nHost: %s:%s\r\nConnection: close\r\n\r\n' "$1" "$host" "$2" >&3
    IFS=' ' read -r -t 2 _ status _ <&3 || true
    printf '%s' "${status%$'\r'}"
  ) 2>/dev/null
}

# wait_for SECS PID CMD...: runs CMD every 0.1 s until it succeeds; fails after
# SECS seconds, or as soon as process PID has exited.
wait_for() {
  local secs="$1" pid="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || return 1
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

# --- Redis

for p in "$redis_port" "${ports[@]}"; do
  port_free "$p" || die "port $p on $host is taken (set CLUSTER_REDIS_PORT / CLUSTER_PORTS)"
done

mkdir -p "$dir/redis"
redis-server --port "$redis_port" --bind "$host" \
  --save '' --appendonly yes --appendfsync always \
  --dir "$dir/redis" --logfile "$dir/redis/redis.log" --daemonize no \
  </dev/null >/dev/null 2>&1 &
started "$!" redis
echo "$!" >"$dir/redis/pid"
redis_ping() { [ "$(redis-cli -h "$host" -p "$redis_port" ping 2>/dev/null)" = PONG ]; }
wait_for 20 "$!" redis_ping ||
  die "redis-server did not answer PING on $host:$redis_port; see $dir/redis/redis.log"
redis_url="redis://$host:$redis_port"

# --- the shared secret (0600, created once)

if [ ! -s "$dir/secret" ]; then
  (
    umask 077
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' >"$dir/secret"
  )
fi
chmod 600 "$dir/secret"
secret="$(tr -d '[:space:]' <"$dir/secret")"

# --- the nodes

node_ready() {
  local port="$1" status
  status="$(http_status /readyz "$port")"
  # a build without /readyz yet: /healthz says the node is up
  if [ "$status" = 404 ]; then
    status="$(http_status /healthz "$port")"
  fi
  [ "$status" = 200 ]
}

for i in "${!ports[@]}"; do
  n=$((i + 1))
  node_dir="$dir/node-$n"
  mkdir -p "$node_dir"
  PAIRGATE_SECRET="$secret" "$bin" serve \
    --listen "$host:${ports[i]}" \
    --data-dir "$node_dir" \
    --redis "$redis_url" \
    --node-id "node-$n" \
    --node-lease-ms "$lease_ms" \
    --demo \
    "${extra_args[@]}" \
    </dev/null >>"$node_dir/node.log" 2>&1 &
  started "$!" "node-$n"
  echo "$!" >"$node_dir/pid"
done
for i in "${!ports[@]}"; do
  n=$((i + 1))
  wait_for 30 "${pids[n]}" node_ready "${ports[i]}" ||
    die "node-$n is not ready on $host:${ports[i]}; see $dir/node-$n/node.log"
done

say
say "pairgate cluster: ${#ports[@]} nodes on $redis_url (secret in $dir/secret)"
for i in "${!ports[@]}"; do
  n=$((i + 1))
  say "  node-$n  http://$host:${ports[i]}/   pid ${pids[n]}, log $dir/node-$n/node.log"
done
say "  redis   $redis_url   pid ${pids[0]}, log $dir/redis/redis.log"
say
say "web page:   http://$host:${ports[0]}/"
say "demo phone: http://$host:${ports[1 % ${#ports[@]}]}/phone"
say
say "Ctrl-C stops everything."

# Until Ctrl-C; a process that exits meanwhile is reported, the rest go on.
while [ "$stopping" -eq 0 ]; do
  live=0
  for i in "${!pids[@]}"; do
    [ -n "${pids[i]}" ] || continue
    if kill -0 "${pids[i]}" 2>/dev/null; then
      live=$((live + 1))
    else
      status=0
      wait "${pids[i]}" 2>/dev/null || status=$?
      say "${names[i]} (pid ${pids[i]}) exited with status $status"
      pids[i]=""
    fi
  done
  [ "$live" -gt 0 ] || break
  wait -n 2>/dev/null || true
done
