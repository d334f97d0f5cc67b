"""The Redis store (broker/store_redis.c) under Redis node faults, at store
level: tests/scaleout/store_driver keeps durable appends flowing through
store_if.h (100 users, 2 recipients per message, 200 in flight) while the
test injects one fault into a primary of a real 6-node Redis Cluster
(rediscluster.py), then stops the load; the driver closes the store, reads
every queue back through a fresh instance and counts what is wrong
(SCALEOUT.md §3, §7 S2 and S3):

  - kill -9 of a primary, restarted after 5 s: 0 ACCEPTED lost, 0
    duplicates, 0 seqs reused;
  - SIGSTOP of a primary for 3 x cluster-node-timeout, then SIGCONT: the
    same (the frozen primary runs its queued scripts on SIGCONT and is
    demoted; WAIT 1 keeps what it answered from counting as ACCEPTED);
  - the control: the same SIGSTOP with wait-replicas 0 must lose ACCEPTED
    entries, which proves the SIGSTOP test can fail.

Every wait is bounded and waits for what it needs (the driver's progress
lines, the cluster's state); the fault's own length (5 s down, 6 s frozen)
is the scenario, not synchronisation.
"""

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from rediscluster import NODE_TIMEOUT_MS, cluster, wait_for  # noqa: F401 (cluster: pytest fixture)

BUILD_DIR = os.environ.get("CW_BUILD_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "build")
DRIVER = os.path.join(BUILD_DIR, "tests", "scaleout", "store_driver")

USERS, INFLIGHT, RCPTS = 100, 200, 2
RETRY_MS = 20000        # longer than the fault: a frozen primary's replies still come
WARMUP = 1500           # ACCEPTED appends before the fault
AFTER = 1500            # ACCEPTED appends after the cluster is whole again
STEP_TIMEOUT = 60.0



class Driver:
    """store_driver with --stdin-stop; a thread reads its progress lines."""

    def __init__(self, seeds, wait):
        self.p = subprocess.Popen(
            [DRIVER, seeds, "100000000", str(USERS), str(INFLIGHT), str(wait), str(RETRY_MS),
             "--rcpts", str(RCPTS), "--stdin-stop", "--progress", "100"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.accepted = 0
        self.errors = 0
        self.lines = []
        self.longest_gap = 0.0
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        last = None
        for line in self.p.stdout:
            with self.cond:
                self.lines.append(line)
                m = re.match(r"progress (\d+) (\d+)", line)
                if m:
                    now = time.monotonic()
                    if int(m.group(1)) > self.accepted:
                        if last is not None:
                            self.longest_gap = max(self.longest_gap, now - last)
                        last = now
                    self.accepted, self.errors = int(m.group(1)), int(m.group(2))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_accepted(self, n, timeout=STEP_TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.accepted < n:
                left = deadline - time.monotonic()
                assert left > 0 and self.p.poll() is None, (
                    f"driver reached {self.accepted} of {n} ACCEPTED "
                    f"(rc {self.p.poll()}): {self.p.stderr.read() if self.p.poll() else ''}")
                self.cond.wait(left)

    def finish(self, timeout=120):
        self.p.stdin.write("stop\n")
        self.p.stdin.flush()
        self.p.stdin.close()
        rc = self.p.wait(timeout=timeout)
        self.reader.join(10)
        err = self.p.stderr.read()
        assert rc == 0, f"store_driver failed ({rc}): {err[-3000:]}"
        out = "".join(self.lines)
        m = re.search(r"^appends (\d+) accepted (\d+) errors (\d+)", out, re.M)
        r = re.search(r"^readback .*$", out, re.M)
        assert m and r, out[-2000:]
        words = r.group(0).split()[1:]
        res = {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
        res["appends"], res["accepted"], res["errors"] = map(int, m.groups())
        print(f"store faults: {res} longest ACCEPTED pause {self.longest_gap:.1f} s")
        return res

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(timeout=10)


def victim_of(cluster):
    """A primary that holds users' queues (any primary: 100 users spread)."""
    return cluster.primaries()[0]


def run_fault(cluster, wait, fault):
    d = Driver(cluster.seeds, wait)
    try:
        d.wait_accepted(WARMUP)
        fault(victim_of(cluster))
        cluster.wait_healthy(timeout=STEP_TIMEOUT)
        with d.cond:
            mark = d.accepted
        d.wait_accepted(mark + AFTER)
        return d.finish()
    finally:
        d.kill()


def kill_and_restart(node):
    node.kill()
    time.sleep(5.0)  # the scenario: the primary stays down for 5 s
    node.start()


def freeze(node):
    node.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(3 * NODE_TIMEOUT_MS / 1000.0)  # the scenario: 3 x node timeout
    finally:
        node.proc.send_signal(signal.SIGCONT)


def assert_clean(res):
    assert res["accepted"] > WARMUP + AFTER, res
    assert res["missing"] == 0, res
    assert res["duplicated"] == 0, res
    assert res["reused"] == 0, res
    assert res["wrong"] == 0, res


def test_primary_killed_and_restarted(cluster):
    assert_clean(run_fault(cluster, 1, kill_and_restart))


def test_primary_frozen(cluster):
    assert_clean(run_fault(cluster, 1, freeze))


def test_primary_frozen_without_wait_loses(cluster):
    """The control: with wait-replicas 0 the same fault loses ACCEPTED data."""
    res = run_fault(cluster, 0, freeze)
    assert res["accepted"] > WARMUP + AFTER, res
    assert res["missing"] > 0, res
