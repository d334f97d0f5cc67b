"""A real Redis Cluster for the scale-out tests: six ``redis-server``
processes (three primaries, three replicas) on free loopback ports,
created with ``redis-cli --cluster create``, stopped by PID.

Settings are those of shared/SCALEOUT.md §1 for tests: ``appendonly yes``,
``appendfsync always``, ``maxmemory-policy noeviction``,
``cluster-node-timeout 2000``. Each node has its own directory. Every wait
is bounded and polls the state it waits for (``CLUSTER INFO``, ``INFO
replication``); nothing sleeps to synchronise.
"""

import os
import random
import socket
import subprocess
import time

import pytest
import redis

NODE_TIMEOUT_MS = 2000
START_TIMEOUT = 30.0


def _port_free(port):
    for p in (port, port + 10000):  # the cluster bus is port + 10000
        s = socket.socket()
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_ports(n):
    """n ports in 12000-21999 that are free now, with their cluster bus
    ports (+10000, in 22000-31999) free too. All lie below Linux's ephemeral
    range (32768 and up): a port the kernel hands out for binding to 0 can
    be taken by another process's outgoing connection in the seconds before
    redis-server binds it (seen in parallel ctest runs as "Address already
    in use")."""
    rng = random.Random()
    ports = []
    for _ in range(10000):
        if len(ports) == n:
            return ports
        port = rng.randrange(12000, 22000)
        if port not in ports and _port_free(port):
            ports.append(port)
    raise AssertionError(f"found only {len(ports)} of {n} free ports in 12000-21999")


def wait_for(what, predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)  # polling a server's state; there is no event to wait on
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Node:
    def __init__(self, port, directory, log):
        self.port = port
        self.dir = directory
        self.log = log
        self.proc = None

    def start(self):
        os.makedirs(self.dir, exist_ok=True)
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--appendonly", "yes", "--appendfsync", "always",
                "--maxmemory-policy", "noeviction", "--save", "",
                "--daemonize", "no", "--protected-mode", "no"]
        self.proc = subprocess.Popen(args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_for(f"redis-server on {self.port}", lambda: self.client().ping(), START_TIMEOUT)

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2,
                           socket_connect_timeout=2)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def role(self):
        return self.client().info("replication")["role"]


class Cluster:
    def __init__(self, root, n=6):
        self.root = root
        self.nodes = [Node(p, os.path.join(root, f"node-{p}"), os.path.join(root, f"node-{p}.log"))
                      for p in free_ports(n)]

    @property
    def seeds(self):
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self):
        for n in self.nodes:
            n.start()
        subprocess.run(["redis-cli", "--cluster", "create",
                        *[f"127.0.0.1:{n.port}" for n in self.nodes],
                        "--cluster-replicas", "1", "--cluster-yes"],
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.STDOUT,
                       timeout=60)
        self.wait_healthy()

    def wait_healthy(self, timeout=START_TIMEOUT):
        live = [n for n in self.nodes if n.proc and n.proc.poll() is None]
        wait_for("cluster_state:ok on every node",
                 lambda: all(n.client().cluster("info")["cluster_state"] == "ok" for n in live),
                 timeout)
        wait_for("every replica linked to its primary",
                 lambda: all(n.client().info("replication").get("master_link_status", "up") == "up"
                             for n in live), timeout)

    def primaries(self):
        return [n for n in self.nodes if n.proc and n.proc.poll() is None and n.role() == "master"]

    def node(self, port):
        return next(n for n in self.nodes if n.port == port)

    def stop(self):
        for n in self.nodes:
            n.stop()


@pytest.fixture
def cluster(tmp_path):
    """A running cluster for one test, its files under tmp_path/redis,
    stopped by PID after the test (every scale-out test file imports this
    one fixture)."""
    c = Cluster(str(tmp_path / "redis"))
    try:
        c.start()
        yield c
    finally:
        c.stop()
