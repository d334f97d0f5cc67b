"""Lease fencing (shared/SCALEOUT.md §5, PROTOCOL.md §13.13): a broker that
cannot renew its store lease within 2 x H stops serving. The store raises
FENCED; the router closes every session, so that clients fail over to
another broker, and refuses Logins with SHUTTING_DOWN ("fenced: ...")
until the lease is renewed (UNFENCED), when it serves again.

The test SIGSTOPs the Redis primary holding the broker's lease key
(cw:b:{broker}) of a real 6-node cluster (rediscluster.py), waits for the
session to be closed and a Login to be refused, then SIGCONTs it and waits
for a Login to succeed again; Stats counts the fence. Every wait is
bounded and each poll is a real request.
"""

import signal

from conftest import assert_status
from rediscluster import cluster  # noqa: F401 (pytest fixture)
from routerkit import wait_until

LEASE_MS = 500           # H: fenced after 2 H without a renewal
BOUND = 30.0             # bound for each step



def lease_holder(cluster):
    """The primary holding the (only) broker's lease key."""
    for n in cluster.primaries():
        if n.client().keys("cw:b:*"):
            return n
    raise AssertionError("no primary holds a broker lease key")


def test_fenced_broker_drops_sessions_and_refuses_logins(cluster, broker, hub, pb):
    b = broker("--store", f"redis://{cluster.seeds}", "--lease-ms", LEASE_MS)
    alice = hub.logged_in(b.endpoint, "alice")
    # A live Send to herself needs the session and not the store.
    assert_status(pb, alice.send_text(to=["alice"], text="hi"), "OK")
    node = lease_holder(cluster)
    node.proc.send_signal(signal.SIGSTOP)
    try:
        # The session is closed: its next Send is NOT_LOGGED_IN.
        wait_until("alice's session closed by the fence",
                   lambda: alice.send_text(to=["alice"], text="hi").status == pb.STATUS_NOT_LOGGED_IN,
                   timeout=BOUND, hub=hub)
        # A Login is refused while the lease cannot be renewed.
        bob = hub.client(b.endpoint)
        reply = bob.try_login("bob")
        assert_status(pb, reply, "SHUTTING_DOWN")
        assert "fenced" in reply.detail
    finally:
        node.proc.send_signal(signal.SIGCONT)
    # Renewed (at the old primary or at its promoted replica): serving again.
    again = hub.client(b.endpoint)
    wait_until("a Login accepted again", lambda: again.try_login("carol").status == pb.STATUS_OK,
               timeout=BOUND, hub=hub)
    st = again.request("stats").stats
    assert st.store_fences >= 1
    assert st.fenced_sessions >= 1
    assert not st.store_fenced


def test_fence_answers_a_login_waiting_for_its_claim(cluster, broker, hub, pb):
    """A Login whose claim the store has not answered when the broker is
    fenced gets its one Reply then (SHUTTING_DOWN, "fenced"), not silence:
    its client can go to another broker at once."""
    lease_ms = 2000   # fenced 2-4 s after the store stops answering
    b = broker("--store", f"redis://{cluster.seeds}", "--lease-ms", lease_ms)
    hub.logged_in(b.endpoint, "alice")   # the store answers before the stop
    stopped = cluster.primaries()
    for n in stopped:
        n.proc.send_signal(signal.SIGSTOP)
    try:
        bob = hub.client(b.endpoint)
        # Sent at once after the stop, long before the fence (>= 2 s): the
        # claim (and the new name's ADD_USER) wait for the stopped store.
        rid = bob.send_env(bob.envelope("login", pb.Login(name="bob", agent="pytest")))
        reply = bob.recv_reply(rid, timeout=BOUND).reply
        assert_status(pb, reply, "SHUTTING_DOWN")
        assert "fenced" in reply.detail
    finally:
        for n in stopped:
            n.proc.send_signal(signal.SIGCONT)
    again = hub.client(b.endpoint)
    wait_until("bob's Login accepted after the fence",
               lambda: again.try_login("bob").status == pb.STATUS_OK, timeout=BOUND, hub=hub)
