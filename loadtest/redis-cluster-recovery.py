#!/usr/bin/env python3
"""How pairgate nodes come back from a Redis Cluster restart, and what they
cost while its masters are down (docs/BENCHMARKS.md, "Cluster mode").

Starts three redis-server masters (cluster mode, AOF with fsync always,
cluster-node-timeout 5000, as tests/contract/support/redis.rs does) joined
with `redis-cli --cluster create`, and three nodes of BIN on
`redis+cluster://` (lease 1000 ms), in a temp dir (logs kept there). Then:

  default   per run: one master down 10 s (CPU of each node), back (time to
            cluster_state:ok and to every node's /readyz 200); every master
            down 10 s (CPU of each node), back (the same times).
  QUICK=1   per run: every master kill -9ed and restarted at once, as the
            contract test does: time from the kill to cluster_state:ok and to
            each node's /readyz 200, and each node's CPU over that time. Stops
            at the first run where a node is not ready within 30 s.

CPU is utime + stime from /proc/PID/stat, as a % of one core.

    python3 loadtest/redis-cluster-recovery.py target/release/pairgate 3
    QUICK=1 python3 loadtest/redis-cluster-recovery.py target/release/pairgate 12

Needs redis-server and redis-cli on PATH; nothing beyond Python's stdlib.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
RUNS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
OUTAGE = 10.0
TICK = os.sysconf("SC_CLK_TCK")


def free_port(bus=False):
    """A free loopback port (and, for a cluster node, port + 10000 too)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        if not bus:
            return p
        if p >= 55535:
            continue
        try:
            b = socket.socket()
            b.bind(("127.0.0.1", p + 10000))
            b.close()
            return p
        except OSError:
            pass


def redis_cmd(port, *args, timeout=1.0):
    """One command over a fresh connection; the raw reply, or None."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.sendall(("*%d\r\n" % len(args)
                   + "".join("$%d\r\n%s\r\n" % (len(a), a) for a in args)).encode())
        data = b""
        while True:
            c = s.recv(65536)
            if not c:
                break
            data += c
            if data[:1] in (b"+", b"-", b":") and data.endswith(b"\r\n"):
                break
            if data[:1] in (b"$", b"=") and b"\r\n" in data:
                head = data.index(b"\r\n")
                if len(data) >= head + 2 + int(data[1:head]) + 2:
                    break
        s.close()
        return data.decode(errors="replace")
    except (OSError, ValueError):
        return None


def cluster_state(port):
    reply = redis_cmd(port, "CLUSTER", "INFO") or ""
    for line in reply.splitlines():
        if line.startswith("cluster_state:"):
            return line.split(":")[1]
    return None


def http_status(port, path):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
        s.settimeout(2)
        head = s.recv(100)
        s.close()
        return int(head.split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


class Master:
    def __init__(self, root):
        self.port = free_port(bus=True)
        self.dir = os.path.join(root, "redis-%d" % self.port)
        os.makedirs(self.dir)
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", "always",
             "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log"),
             "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "5000"],
            cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while redis_cmd(self.port, "PING") != "+PONG\r\n":
            time.sleep(0.01)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def main():
    root = tempfile.mkdtemp(prefix="pairgate-rcluster-")
    masters = [Master(root) for _ in range(3)]
    for m in masters:
        m.start()
    subprocess.run(["redis-cli", "--cluster", "create"]
                   + ["127.0.0.1:%d" % m.port for m in masters]
                   + ["--cluster-replicas", "0", "--cluster-yes"],
                   check=True, stdout=subprocess.DEVNULL)

    def all_ok():
        return all(cluster_state(m.port) == "ok" for m in masters)

    while not all_ok():
        time.sleep(0.02)
    url = "redis+cluster://" + ",".join("127.0.0.1:%d" % m.port for m in masters)
    nodes = []
    for i in range(3):
        port = free_port()
        d = os.path.join(root, "node-%d" % (i + 1))
        os.makedirs(d)
        log = open(os.path.join(d, "log"), "w")
        proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:%d" % port, "--data-dir", d,
             "--redis", url, "--secret", "s" * 32, "--node-id", "node-%d" % (i + 1),
             "--node-lease-ms", "1000"], stdout=log, stderr=subprocess.STDOUT)
        nodes.append((proc, port))

    def all_ready():
        return all(http_status(port, "/readyz") == 200 for _, port in nodes)

    start = time.time()
    while not all_ready():
        assert time.time() - start < 30, "nodes not ready at start"
        time.sleep(0.02)
    print("dir", root, flush=True)

    def cpu_over(secs):
        a = [cpu_ticks(p.pid) for p, _ in nodes]
        time.sleep(secs)
        b = [cpu_ticks(p.pid) for p, _ in nodes]
        return [round((y - x) / TICK / secs * 100, 1) for x, y in zip(a, b)]

    def back(since):
        """Waits for cluster_state:ok and each node's /readyz 200 (30 s at
        most); each as seconds since `since` (None: not within 30 s)."""
        ok_at, ready = None, [None] * len(nodes)
        while (None in ready or ok_at is None) and time.time() - since < 30:
            now = time.time()
            if ok_at is None and all_ok():
                ok_at = now
            for i, (_, port) in enumerate(nodes):
                if ready[i] is None and http_status(port, "/readyz") == 200:
                    ready[i] = now
            time.sleep(0.02)
        rel = lambda t: round(t - since, 2) if t else None
        return rel(ok_at), [rel(t) for t in ready]

    try:
        for run in range(RUNS):
            if os.environ.get("QUICK"):
                a = [cpu_ticks(p.pid) for p, _ in nodes]
                killed = time.time()
                for m in masters:
                    m.kill9()
                for m in masters:
                    m.start()
                ok, ready = back(killed)
                elapsed = time.time() - killed
                b = [cpu_ticks(p.pid) for p, _ in nodes]
                cpu = [round((y - x) / TICK / elapsed * 100, 1) for x, y in zip(a, b)]
                print("run %d: from the kill: cluster ok %s s, nodes ready %s s, node CPU %% %s"
                      % (run, ok, json.dumps(ready), cpu), flush=True)
                if None in ready:
                    print("a node was not ready within 30 s: stop", flush=True)
                    break
                continue
            one = masters[run % 3]
            one.kill9()
            print("run %d: one master down %d s: node CPU %% %s"
                  % (run, OUTAGE, cpu_over(OUTAGE)), flush=True)
            restarted = time.time()
            one.start()
            ok, ready = back(restarted)
            print("run %d: it restarted: cluster ok %s s, nodes ready %s s"
                  % (run, ok, json.dumps(ready)), flush=True)
            for m in masters:
                m.kill9()
            print("run %d: every master down %d s: node CPU %% %s"
                  % (run, OUTAGE, cpu_over(OUTAGE)), flush=True)
            restarted = time.time()
            for m in masters:
                m.start()
            ok, ready = back(restarted)
            print("run %d: they restarted: cluster ok %s s, nodes ready %s s"
                  % (run, ok, json.dumps(ready)), flush=True)
    finally:
        for proc, _ in nodes:
            proc.kill()
        for m in masters:
            if m.proc and m.proc.poll() is None:
                m.kill9()


main()
