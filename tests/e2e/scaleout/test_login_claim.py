"""Claims and releases on a shared store (PROTOCOL.md §7.7, §9.1, §13.13):
a Login waiting for the store's claim gets its Reply however long the
store takes within --store-retry-ms, a claim that failed leaves the name
free, and a Logout is answered only once the name is free on every broker.

1. A client sends no Heartbeat before it is logged in (§9.2: it learns the
   interval from LoginInfo), so the broker must not expire, for silence, a
   session whose Login is still being decided. It did: a claim whose WAIT
   could not succeed yet (right after `redis-cli --cluster create`, before
   the replicas had synced) outlived heartbeat x liveness, the broker
   closed the session ("gone before its login completed") and the Login
   was never answered; the client saw only its own timeout.
2. A claim answered STORE_ERROR because its WAIT fell short was written on
   the primary all the same (a script is not rolled back). The broker did
   not release it, so the name stayed NAME_TAKEN on every other broker for
   as long as that broker ran.

Here the claim cannot succeed at all: --redis-wait 2 on a cluster with one
replica per shard, so every WAIT falls short and the claim is retried until
--store-retry-ms (1500 ms) runs out, well after heartbeat x liveness
(200 ms x 3). The Login must be answered STORE_ERROR, and a broker with the
default --redis-wait 1 on the same cluster must then log the same name in
while the first broker still runs.
"""

import signal
import time

import pytest

from conftest import assert_status
from rediscluster import cluster  # noqa: F401 (pytest fixture)

RETRY_MS = 1500           # the claim's deadline: > heartbeat x liveness (600 ms)
REPLY_BOUND = 15.0        # a bound for the Reply, far above RETRY_MS



def test_login_answered_store_error_when_the_claim_cannot_be_replicated(cluster, broker, hub, pb):
    b = broker("--store", f"redis://{cluster.seeds}", "--redis-wait", "2",
               "--store-retry-ms", str(RETRY_MS))
    c = hub.client(b.endpoint)
    reply = c.request("login", pb.Login(name="alice", agent="pytest"), timeout=REPLY_BOUND)
    assert_status(pb, reply, "STORE_ERROR")
    assert "retry" in reply.detail
    # The connection is not logged in, and says so.
    assert_status(pb, c.request("fetch", pb.Fetch(max=1)), "NOT_LOGGED_IN")
    assert "gone before its login completed" not in b.log()

    # The same name on a broker whose WAITs succeed. The failed claim was
    # written on the primary all the same (a short WAIT rolls nothing
    # back); the first broker releases it, so the name is free although
    # that broker keeps running (its lease never expires). The release
    # goes through the store: polled, bounded, each try a real Login.
    ok = broker("--store", f"redis://{cluster.seeds}")
    deadline = time.monotonic() + REPLY_BOUND
    while True:
        alice = hub.client(ok.endpoint)
        reply = alice.try_login("alice")
        if reply.status != pb.STATUS_NAME_TAKEN or time.monotonic() > deadline:
            break
        alice.close()
        hub.wait(0.05)  # between two Logins; the release is a store round trip
    assert_status(pb, reply, "OK")
    alice.logout()
    assert b.running()


def primary_of(cluster, key):
    """The Node serving key's slot (per CLUSTER KEYSLOT and CLUSTER SLOTS)."""
    c = cluster.primaries()[0].client()
    slot = c.execute_command("CLUSTER", "KEYSLOT", key)
    for lo, hi, primary, *_ in c.execute_command("CLUSTER", "SLOTS"):
        if lo <= slot <= hi:
            return cluster.node(int(primary[1]))
    raise AssertionError(f"no primary serves slot {slot}")


def test_logout_answered_once_the_name_is_free_everywhere(cluster, broker, hub, pb):
    """"logged out" from a broker on a shared store means the name is free
    on every broker, even if that broker dies at once. It did not: the
    Logout was answered before the release was sent to the store, so a
    broker killed right after (docs/SCALEOUT.md's trial kills one right
    after a `causeway send`) kept the name NAME_TAKEN elsewhere until its
    lease expired. The primary holding alice's session is frozen while she
    logs out (shorter than the node timeout: no failover), so the release
    cannot have run yet: the Reply must wait for it."""
    a = broker("--store", f"redis://{cluster.seeds}")
    b = broker("--store", f"redis://{cluster.seeds}")
    alice = hub.client(a.endpoint)
    alice.login("alice")
    node = primary_of(cluster, "cw:s:{alice}")
    node.proc.send_signal(signal.SIGSTOP)
    try:
        rid = alice.send_env(alice.envelope("logout"))
        # Nothing can answer while the release cannot run. (An event that
        # must not happen: waited for a bounded moment.)
        alice._recv_ready(0.5)
        alice.assert_none(lambda e: e.WhichOneof("body") == "reply" and e.request_id == rid,
                          "Logout answered before the store released the name")
    finally:
        node.proc.send_signal(signal.SIGCONT)
    assert_status(pb, alice.recv_reply(rid, timeout=REPLY_BOUND).reply, "OK")
    alice.logged_in = False
    a.kill()   # at once, as the trial does
    again = hub.client(b.endpoint)
    assert_status(pb, again.try_login("alice"), "OK")
    again.logout()
