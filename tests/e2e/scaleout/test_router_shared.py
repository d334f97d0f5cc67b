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

Every wait is bounded and waits for the reply or event it expects; where a
state can only be polled (a lease expiring, remote presence reaching a
cache) the poll is bounded and each try is a real request.
"""

import pytest

from conftest import assert_status
from routerkit import (REMOTE_TIMEOUT, ack, brokers, cluster, collect_deliveries,  # noqa: F401
                       send_durable, statuses, wait_until)


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
