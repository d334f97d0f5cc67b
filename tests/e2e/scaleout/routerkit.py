"""Fixtures and helpers of the shared-store router tests
(test_router_shared.py, test_router_claims.py): a real Redis Cluster per
test (rediscluster.py: six redis-server processes on free loopback ports,
started and stopped by PID), brokers on it with ``--store redis://...``,
and bounded waits. Imported by the test modules (fixtures included), not a
conftest: tests/e2e/conftest.py is the one conftest of the e2e suites.
"""

import contextlib
import os
import signal
import time

import pytest

from conftest import TIMEOUT_SCALE, assert_status, status_name
from rediscluster import cluster  # noqa: F401 (the pytest fixture, re-exported)

# The brokers' lease: renewed every LEASE_MS, expired after 3 x LEASE_MS
# (store_if.h, cw_store_config_t.lease_ms; default 1000 ms).
LEASE_S = 1.0
# Bound for what crosses brokers through the cluster (scaled like
# conftest's bounds: scripts/valgrind runs the brokers under memcheck).
REMOTE_TIMEOUT = 10.0 * TIMEOUT_SCALE



@pytest.fixture
def brokers(cluster, broker):
    """Factory: brokers(n) -> n running brokers on the cluster."""
    def start(n=2, *extra):
        return [broker("--store", f"redis://{cluster.seeds}", *extra) for _ in range(n)]
    return start


def send_durable(c, to, text, message_id=""):
    return c.request("send", c.pb.Send(to=list(to), text=text, durable=True,
                                       message_id=message_id))


def ack(c, seq):
    reply = c.request("ack", c.pb.Ack(seq=seq))
    assert_status(c.pb, reply, "OK")


def statuses(c, reply):
    return {r.name: status_name(c.pb, r.status) for r in reply.recipients}


def wait_until(what, predicate, timeout=REMOTE_TIMEOUT, hub=None):
    """Polls predicate (each call a real request) until true, bounded."""
    deadline = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        if hub:
            hub.wait(0.05)  # between two requests: keeps the clients alive


def collect_deliveries(c, n, timeout=REMOTE_TIMEOUT):
    """The next n Deliver envelopes of c (bounded), in arrival order."""
    out = []
    for _ in range(n):
        out.append(c.recv_until(lambda e: e.WhichOneof("body") == "deliver", timeout,
                                what="a delivery"))
    return out


def send_durable_many(c, to, texts, prefix):
    """Durable sends of texts to `to`, pipelined (each Send goes out before
    the earlier ones are answered); returns the Replies in order."""
    rids = [c.send_env(c.envelope("send", c.pb.Send(to=list(to), text=t, durable=True,
                                                   message_id=f"{prefix}{i}")))
            for i, t in enumerate(texts)]
    return [c.recv_reply(rid, REMOTE_TIMEOUT).reply for rid in rids]


def primary_of(cluster, user):
    """The node of `cluster` serving the slot of user's keys ({user})."""
    seed = next(n for n in cluster.nodes if n.proc and n.proc.poll() is None)
    slot = seed.client().execute_command("CLUSTER", "KEYSLOT", "{%s}" % user)
    for row in seed.client().execute_command("CLUSTER", "SLOTS"):
        if row[0] <= slot <= row[1]:
            return cluster.node(int(row[2][1]))
    raise AssertionError(f"no node serves slot {slot}")


@contextlib.contextmanager
def paused_primary(cluster, user):
    """SIGSTOPs the primary of user's slot for the body of the with (keep
    it well below the cluster's node timeout, rediscluster.NODE_TIMEOUT_MS,
    or a replica is promoted), SIGCONT after. While it is stopped nothing
    of user's keys is answered: a broker's claim of user stays pending."""
    node = primary_of(cluster, user)
    os.kill(node.proc.pid, signal.SIGSTOP)
    try:
        yield node
    finally:
        os.kill(node.proc.pid, signal.SIGCONT)


def no_reply(c, request_id):
    """True if c got no Reply to request_id: checked after a round trip
    (a Who), which the broker answers after anything it sent c before."""
    c.request("who")
    c.drain()
    return not [e for _, e in c.inbox
                if e.WhichOneof("body") == "reply" and e.request_id == request_id]


def wait_for_log(b, text, timeout=REMOTE_TIMEOUT, hub=None):
    """Waits (bounded) until broker b has logged a line containing text."""
    wait_until(f"broker log line {text!r}", lambda: text in b.log(), timeout, hub=hub)
