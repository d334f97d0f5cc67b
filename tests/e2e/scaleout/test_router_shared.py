"""The router with a shared store: several causeway-broker processes on one
real Redis Cluster (tests/e2e/scaleout/rediscluster.py: six redis-server
processes on free loopback ports, started and stopped by this test), each
started with ``--store redis://...`` (store_if.h S1-S6, PROTOCOL.md §13.13).

What a client sees with several brokers, checked end to end with raw
protocol clients (tests/e2e/conftest.py):
  - a name live on broker A is NAME_TAKEN on broker B, and free again on B
    once A's session logs out (the claim is released);
  - a resume token from A is accepted by B ("session resumed"); A's session
    is closed by the takeover, without a presence LOGOUT;
  - durable sends between users on different brokers are delivered once
    each, in seq order, and acknowledged; a name made on B a moment ago is
    accepted by A (the store decides unknown names), a name nowhere is
    UNKNOWN_USER;
  - live sends across brokers are DELIVERED and shown; a known user that is
    nowhere online is OFFLINE, a name nowhere UNKNOWN_USER;
  - a broadcast (live and durable) reaches users on every broker;
  - Who on B lists users of A with online marks, and B's sessions get A's
    presence;
  - a login read cut before an entry whose batch is not complete is read
    again with a back-off, and the entry is pushed once, when complete.

Every wait is bounded and waits for the reply or event it expects; where a
state can only be polled (a lease expiring, remote presence reaching a
cache) the poll is bounded and each try is a real request.
"""

import os
import signal

import pytest

from conftest import assert_status
from routerkit import (REMOTE_TIMEOUT, ack, brokers, cluster, collect_deliveries,  # noqa: F401
                       primary_of, send_durable, statuses, wait_until)


def test_name_taken_across_brokers_and_released_by_logout(brokers, hub, pb):
    a, b = brokers(2)
    alice = hub.logged_in(a.endpoint, "alice")
    other = hub.client(b.endpoint)
    reply = other.try_login("alice")
    assert_status(pb, reply, "NAME_TAKEN")
    assert "another broker" in reply.detail
    # Another name on B is not affected.
    hub.logged_in(b.endpoint, "bob")
    alice.logout()
    # The release goes through the store: B accepts the name once it is done.
    again = hub.client(b.endpoint)
    wait_until("the name released on B",
               lambda: again.try_login("alice").status == pb.STATUS_OK, hub=hub)
    stats = hub.logged_in(b.endpoint, "carol").request("stats").stats
    assert stats.claims_refused >= 1


def test_resume_token_from_a_accepted_by_b(brokers, hub, pb):
    a, b = brokers(2)
    watcher = hub.logged_in(a.endpoint, "watcher")
    alice_a = hub.logged_in(a.endpoint, "alice")
    token = alice_a.token
    assert len(token) == 16
    alice_b = hub.client(b.endpoint)
    reply = alice_b.login("alice", resume_token=token)
    assert reply.detail == "session resumed"
    assert reply.login.resume_token == token
    alice_b.logged_in = True
    # A closed its session: the old connection is no longer logged in.
    wait_until("A's session closed by the takeover",
               lambda: alice_a.request("fetch", pb.Fetch(max=1)).status ==
               pb.STATUS_NOT_LOGGED_IN, hub=hub)
    alice_a.logged_in = False
    # ... and it said nothing to A's sessions: alice is online (on B).
    watcher.drain()
    gone = [e.presence for _, e in watcher.inbox if e.WhichOneof("body") == "presence"
            and e.presence.name == "alice" and not e.presence.online]
    assert not gone, f"presence LOGOUT for a session taken over: {gone}"
    stats = watcher.request("stats").stats
    assert stats.takeovers == 1
    # The resumed session works on B.
    assert_status(pb, alice_b.send_text(["watcher"], "from b"), "OK")
    d = watcher.recv_body("deliver", REMOTE_TIMEOUT)
    assert d.text == "from b" and getattr(d, "from") == "alice"


def test_durable_between_brokers_once_in_order_and_acked(brokers, hub, pb):
    a, b = brokers(2)
    alice = hub.logged_in(a.endpoint, "alice")
    bob = hub.logged_in(b.endpoint, "bob")
    n = 20
    for i in range(n):
        reply = send_durable(alice, ["bob"], f"m{i}", message_id=f"id{i}")
        assert_status(pb, reply, "ACCEPTED")
        assert statuses(alice, reply) == {"bob": "ACCEPTED"}
    got = collect_deliveries(bob, n)
    seqs = [e.deliver.seq for e in got]
    assert [e.deliver.text for e in got] == [f"m{i}" for i in range(n)]
    assert seqs == sorted(seqs) and len(set(seqs)) == n
    # The chain: each push follows the one before it (0 for the first).
    assert got[0].after_seq == 0
    assert [e.after_seq for e in got[1:]] == seqs[:-1]
    ack(bob, seqs[-1])
    # Nothing comes twice: a repeat is answered from the dedupe record.
    dup = send_durable(alice, ["bob"], "m0", message_id="id0")
    assert_status(pb, dup, "ACCEPTED")
    assert dup.duplicate
    bob.drain()
    again = [e for _, e in bob.inbox if e.WhichOneof("body") == "deliver"]
    assert not again, f"delivered twice: {again}"
    # A name made on B a moment ago is one the store knows (A may not yet).
    hub.logged_in(b.endpoint, "newbie").logout()
    reply = send_durable(alice, ["newbie", "nobody-anywhere"], "hello")
    assert statuses(alice, reply) == {"newbie": "ACCEPTED", "nobody-anywhere": "UNKNOWN_USER"}


def test_live_between_brokers(brokers, hub, pb):
    a, b = brokers(2)
    alice = hub.logged_in(a.endpoint, "alice")
    bob = hub.logged_in(b.endpoint, "bob")
    hub.logged_in(b.endpoint, "carol").logout()  # known, then nowhere online
    # A learns carol (NEW_USER), and B's release of her claim goes through
    # the store after the Logout's reply (until it has, a live frame for her
    # still goes to B): poll with live sends until she is known and free.
    reply = wait_until(
        "carol known on A and released by B",
        lambda: (lambda r: r if statuses(alice, r).get("carol") == "OFFLINE" else None)(
            alice.send_text(["bob", "carol", "ghost"], "live hello")), hub=hub)
    assert statuses(alice, reply) == {"bob": "DELIVERED", "carol": "OFFLINE",
                                      "ghost": "UNKNOWN_USER"}
    d = bob.recv_body("deliver", REMOTE_TIMEOUT, where=lambda d: d.text == "live hello")
    assert getattr(d, "from") == "alice" and not d.durable
    stats = alice.request("stats").stats
    assert stats.live_remote >= 1


def test_broadcast_reaches_every_broker(brokers, hub, pb):
    a, b, c = brokers(3)
    alice = hub.logged_in(a.endpoint, "alice")
    users = {"bob": hub.logged_in(b.endpoint, "bob"), "carol": hub.logged_in(c.endpoint, "carol"),
             "dave": hub.logged_in(a.endpoint, "dave")}
    # A's cache learns the others (NEW_USER, PRESENCE): eventually consistent.
    wait_until("A knows every user online",
               lambda: {u.name for u in alice.request("who").users if u.online} >=
               {"alice", "bob", "carol", "dave"}, hub=hub)
    reply = alice.send_text(broadcast=True, text="to all, live")
    assert_status(pb, reply, "OK")
    assert statuses(alice, reply) == {"bob": "DELIVERED", "carol": "DELIVERED",
                                      "dave": "DELIVERED"}
    for name, c in users.items():
        d = c.recv_body("deliver", REMOTE_TIMEOUT, where=lambda d: d.text == "to all, live")
        assert d.broadcast
    reply = alice.request("send", pb.Send(broadcast=True, text="to all, stored", durable=True))
    assert_status(pb, reply, "ACCEPTED")
    assert set(statuses(alice, reply).values()) == {"ACCEPTED"}
    for name, c in users.items():
        d = c.recv_body("deliver", REMOTE_TIMEOUT, where=lambda d: d.text == "to all, stored")
        assert d.durable and d.broadcast
        ack(c, d.seq)


def test_who_and_presence_across_brokers(brokers, hub, pb):
    a, b = brokers(2)
    bob = hub.logged_in(b.endpoint, "bob")
    alice = hub.logged_in(a.endpoint, "alice")
    p = bob.recv_body("presence", REMOTE_TIMEOUT, where=lambda p: p.name == "alice")
    assert p.online
    who = {u.name: u.online for u in bob.request("who").users}
    assert who.get("alice") is True and who.get("bob") is True
    alice.logout()
    p = bob.recv_body("presence", REMOTE_TIMEOUT,
                      where=lambda p: p.name == "alice" and not p.online)
    who = {u.name: u.online for u in bob.request("who").users}
    assert who.get("alice") is False


def replica_of(cluster, primary):
    """The running replica node of `primary` (INFO replication)."""
    for n in cluster.nodes:
        if n is primary or not n.proc or n.proc.poll() is not None:
            continue
        info = n.client().info("replication")
        if info.get("role") == "slave" and int(info.get("master_port", 0)) == primary.port:
            return n
    raise AssertionError(f"no replica of {primary.port}")


def test_read_cut_at_an_incomplete_batch_is_read_again(cluster, brokers, hub, pb):
    # A's multicast to bob and carol (users on two shards) cannot complete
    # while carol's shard has no replica to WAIT for (its replica is
    # SIGSTOPped): bob's entry is in his stream, invisible (store_if.h S1).
    # bob logs in on B meanwhile: B's login read comes back cut (truncated)
    # before it. The router must stay catching up and read again, with a
    # back-off (outorder.h cwor_read_cut: 10 ms doubling to 1 s), never a
    # tight loop and never caught up on a cut read; once the batch
    # completes bob gets the entry, once.
    a, b = brokers(2, "--store-retry-ms", "30000")
    bob_primary = primary_of(cluster, "bob")
    carol = next(n for n in (f"carol{i}" for i in range(200))
                 if primary_of(cluster, n).port != bob_primary.port)
    hub.logged_in(b.endpoint, "bob").logout()  # bob exists, offline
    hub.logged_in(a.endpoint, carol)
    alice = hub.logged_in(a.endpoint, "alice")
    replica = replica_of(cluster, primary_of(cluster, carol))
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        rid = alice.send_env(alice.envelope("send", pb.Send(
            to=["bob", carol], text="cut", durable=True, message_id="cut-1")))
        wait_until("bob's entry in his stream (not yet visible)",
                   lambda: bob_primary.client().xlen("cw:q:{bob}") == 1, hub=hub)
        bob = hub.client(b.endpoint)
        bob.login("bob")
        # cut once, then read again after the back-off (still cut)
        wait_until("B's read of bob's queue cut twice",
                   lambda: b.log().count("bob's queue read cut after seq 0") >= 2, hub=hub)
        bob.request("who")  # a round trip: anything pushed before it has arrived
        assert bob.deliveries() == [], "pushed before its batch completed"
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    reply = alice.recv_reply(rid, REMOTE_TIMEOUT).reply
    assert statuses(alice, reply) == {"bob": "ACCEPTED", carol: "ACCEPTED"}
    d = collect_deliveries(bob, 1)[0].deliver
    assert (d.seq, d.text, getattr(d, "from")) == (1, "cut", "alice")
    ack(bob, 1)
    bob.request("who")
    assert bob.deliveries() == [], "delivered twice"
    # read again with a back-off, not in a tight loop: the replica was
    # stopped for a few hundred milliseconds at most past the second cut
    cuts = b.log().count("bob's queue read cut after seq 0")
    print(f"B read bob's queue {cuts} times cut before the batch completed")
    assert 2 <= cuts <= 40, cuts
