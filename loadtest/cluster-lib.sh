# Shared by the cluster benchmark scripts (sourced, not run): a fresh
# redis-server (appendonly yes + appendfsync always) and $nodes gateway
# nodes on free ports, and their teardown.
#
# The sourcing script sets: $gw (the pairgate binary), $out (a temp dir),
# $secret, $nodes, and optionally the array $node_args (more `serve`
# options). start_cluster sets $urls (--url options), $pids and $redis_port.

pids=()
node_args=("${node_args[@]}")

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop_cluster() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  if [ -n "${redis_port:-}" ]; then
    redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
    redis_port=""
  fi
}

start_cluster() {
  local dir="$out/cluster.$RANDOM" i port
  mkdir -p "$dir/redis"
  redis_port="$(free_port)"
  redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" --save '' \
    --appendonly yes --appendfsync always --daemonize yes --logfile "$dir/redis/log"
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  urls=()
  for i in $(seq 1 "$nodes"); do
    port="$(free_port)"
    mkdir -p "$dir/node-$i"
    PAIRGATE_SECRET="$secret" "$gw" serve --listen "127.0.0.1:$port" --data-dir "$dir/node-$i" \
      --redis "redis://127.0.0.1:$redis_port" --node-id "node-$i" --max-devices 8 \
      "${node_args[@]}" >"$dir/node-$i/log" 2>&1 &
    pids+=("$!")
    for _ in $(seq 200); do
      [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
      sleep 0.05
    done
    urls+=(--url "ws://127.0.0.1:$port")
  done
}
