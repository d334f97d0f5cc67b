"""Lease fencing (shared/SCALEOUT.md §5, PROTOCOL.md §13.13): a broker that
cannot renew its store lease within 2 x H stops serving. The store raises
FENCED; the router closes every session, so that clients fail over to
another broker, and refuses Logins with SHUTTING_DOWN ("fenced: ...")
until the lease is renewed (UNFENCED), when it serves again.

The first test SIGSTOPs the Redis primary holding the broker's lease key
(cw:b:{broker}) of a real 6-node cluster (rediscluster.py), waits for the
session to be closed and a Login to be refused, then SIGCONTs it and waits
for a Login to succeed again; Stats counts the fence.

The second shows that a broker comes back from a fence as a new
incarnation (docs/SCALEOUT.md §7): other brokers' gates treat the lapsed
incarnation as dead (its unfinished batch is released) but wait for the
batches of the new one, as for any live broker. The third deletes the
lease key: the next renewal finds it gone and fences the broker at once.
Every wait is bounded and each poll is a real request.
"""

import os
import signal

from conftest import assert_status
from rediscluster import cluster  # noqa: F401 (pytest fixture)
from routerkit import REMOTE_TIMEOUT, brokers, primary_of, wait_for_log, wait_until  # noqa: F401

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


def replica_of(cluster, primary):
    """The (running) replica of `primary`."""
    for n in cluster.nodes:
        if n is primary or not n.proc or n.proc.poll() is not None:
            continue
        info = n.client().info("replication")
        if info["role"] == "slave" and int(info["master_port"]) == primary.port:
            return n
    raise AssertionError(f"no replica of {primary.port}")


def has_entry(node, user, seq):
    """True once entry `seq` is in user's queue (its append ran on node)."""
    key = "cw:q:{%s}" % user
    return bool(node.client().xrange(key, f"0-{seq}", f"0-{seq}"))


def history_seqs(c):
    reply = c.request("history", c.pb.History(last=100))
    assert_status(c.pb, reply, "OK")
    return [m.seq for m in reply.messages]


def test_fenced_broker_comes_back_as_a_new_incarnation(cluster, brokers, hub, pb):
    # b1 writes, b2 serves the recipient. A long --store-retry-ms on b1 keeps
    # a batch whose WAIT cannot be satisfied (the shard's replica stopped)
    # in flight instead of answering STORE_ERROR.
    b1, = brokers(1, "--lease-ms", LEASE_MS, "--store-retry-ms", 60000)
    b2, = brokers(1, "--lease-ms", LEASE_MS)
    rcv = hub.logged_in(b2.endpoint, "rcv")
    snd = hub.logged_in(b1.endpoint, "snd")
    primary = primary_of(cluster, "rcv")
    replica = replica_of(cluster, primary)

    # 1. Warm up: b2 has seen b1 complete a batch.
    assert_status(pb, snd.send_text(to=["rcv"], text="m1", durable=True), "ACCEPTED")
    d = rcv.recv_body("deliver", REMOTE_TIMEOUT)
    assert (d.seq, d.text) == (1, "m1")

    # 2. b1 stops in the middle of a batch: m2's append ran on rcv's primary,
    # its WAIT cannot be satisfied (replica stopped), then b1 itself stops
    # longer than its lease (3 x LEASE_MS). b2 releases m2 when b1's lease
    # is gone: that incarnation is dead, its unfinished batch with it.
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        rid2 = snd.send_env(snd.envelope("send", pb.Send(to=["rcv"], text="m2", durable=True)))
        wait_until("m2 appended", lambda: has_entry(primary, "rcv", 2), BOUND, hub=hub)
        os.kill(b1.proc.pid, signal.SIGSTOP)
        try:
            d = rcv.recv_body("deliver", BOUND)
            assert (d.seq, d.text) == (2, "m2")
            wait_for_log(b2, "has no lease: its entries are visible", BOUND, hub=hub)
        finally:
            os.kill(replica.proc.pid, signal.SIGCONT)
            replica = None
            cluster.wait_healthy()
    finally:
        if replica:
            os.kill(replica.proc.pid, signal.SIGCONT)
        os.kill(b1.proc.pid, signal.SIGCONT)

    # 3. b1 fences on waking, takes a new incarnation and serves again.
    again = hub.client(b1.endpoint)
    wait_until("a Login on b1 accepted again",
               lambda: again.try_login("snd2").status == pb.STATUS_OK, timeout=BOUND, hub=hub)
    assert "fenced" in b1.log()
    assert "new incarnation" in b1.log()
    assert again.request("stats").stats.store_fences >= 1
    del rid2  # m2's Reply went to a session the fence closed

    # 4. The new incarnation's batch stalls between its append and its DONE
    # (the replica stopped again): b2's gate must wait for it. Before this
    # fix b2 still took b1 for dead and showed m3 at once.
    replica = replica_of(cluster, primary)
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        rid3 = again.send_env(again.envelope("send", pb.Send(to=["rcv"], text="m3",
                                                            durable=True)))
        wait_until("m3 appended", lambda: has_entry(primary, "rcv", 3), BOUND, hub=hub)
        # A History on b2 is judged by b2's gate (and a fresh read of b1's
        # lease): m3's batch is not complete, so m3 is not in it.
        assert history_seqs(rcv) == [1, 2]
        assert 3 not in [x.seq for x in rcv.deliveries()]
        assert no_reply_yet(again, rid3)
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    # Completed: ACCEPTED, then shown on b2.
    reply = again.recv_reply(rid3, REMOTE_TIMEOUT).reply
    assert_status(pb, reply, "ACCEPTED")
    d = rcv.recv_body("deliver", REMOTE_TIMEOUT)
    assert (d.seq, d.text) == (3, "m3")
    assert history_seqs(rcv) == [1, 2, 3]


def no_reply_yet(c, rid):
    c.drain()
    return not [e for _, e in c.inbox if e.WhichOneof("body") == "reply" and e.request_id == rid]


def test_lease_found_gone_fences_at_once(cluster, broker, hub, pb):
    """A renewal that finds the broker's lease gone from the store (it
    lapsed, or was lost) fences the broker at once, whatever the time since
    the last renewal: other brokers may already have taken that incarnation
    for dead. It then comes back as a new incarnation and serves again."""
    b = broker("--store", f"redis://{cluster.seeds}", "--lease-ms", LEASE_MS)
    alice = hub.logged_in(b.endpoint, "alice")
    node = lease_holder(cluster)
    key = node.client().keys("cw:b:*")[0]
    old = node.client().hget(key, "inc")
    assert node.client().delete(key) == 1
    wait_for_log(b, "is gone from the store", BOUND, hub=hub)
    wait_until("alice's session closed by the fence",
               lambda: alice.send_text(to=["alice"], text="hi").status == pb.STATUS_NOT_LOGGED_IN,
               timeout=BOUND, hub=hub)
    again = hub.client(b.endpoint)
    wait_until("a Login accepted again", lambda: again.try_login("carol").status == pb.STATUS_OK,
               timeout=BOUND, hub=hub)
    new = node.client().hget(key, "inc")
    assert new and new != old  # the lease names a new incarnation
    st = again.request("stats").stats
    assert st.store_fences == 1
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
