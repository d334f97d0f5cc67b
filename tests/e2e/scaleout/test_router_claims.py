"""The router with a shared store, continued (test_router_shared.py has the
basics): what happens to sessions and their claims when a broker dies or
restarts, or a client moves, logs in twice or goes while its claim is
decided, and the broker's own limits on a shared store. Brokers run with
``--store redis://...`` on a real Redis Cluster started and stopped by
each test (routerkit.py, rediscluster.py).

Every wait is bounded and waits for the reply or event it expects; where a
state can only be polled (a lease expiring) the poll is bounded and each
try is a real request.
"""

import time

import pytest

from conftest import assert_status
from routerkit import (LEASE_S, REMOTE_TIMEOUT, ack, brokers, cluster,  # noqa: F401
                       collect_deliveries, no_reply, paused_primary, send_durable,
                       send_durable_many, statuses, wait_for_log, wait_until)


def test_broker_killed_users_move_and_get_unacked_again(brokers, hub, pb):
    a, b = brokers(2)
    alice = hub.logged_in(a.endpoint, "alice")
    bob = hub.logged_in(b.endpoint, "bob")
    for i in range(5):
        assert_status(pb, send_durable(bob, ["alice"], f"u{i}", message_id=f"k{i}"), "ACCEPTED")
    got = collect_deliveries(alice, 5)
    assert [e.deliver.text for e in got] == [f"u{i}" for i in range(5)]
    ack(alice, got[1].deliver.seq)  # u0, u1 acknowledged; u2..u4 not
    a.kill()
    alice.close()
    # Until A's lease expires the name is A's; then B takes the login.
    t0 = time.monotonic()
    moved = hub.client(b.endpoint)
    wait_until("alice able to log in on B after A's lease expired",
               lambda: moved.try_login("alice").status == pb.STATUS_OK,
               timeout=REMOTE_TIMEOUT + 3 * LEASE_S, hub=hub)
    assert time.monotonic() - t0 < REMOTE_TIMEOUT + 3 * LEASE_S
    again = collect_deliveries(moved, 3)
    assert [e.deliver.text for e in again] == ["u2", "u3", "u4"]
    assert again[0].after_seq == 0  # the pushes start again from the first unacknowledged
    ack(moved, again[-1].deliver.seq)
    moved.drain()
    more = [e for _, e in moved.inbox if e.WhichOneof("body") == "deliver"]
    assert not more, f"more than the unacknowledged ones: {more}"




def test_ack_beyond_seqs_this_broker_knows(cluster, broker, hub, pb):
    """Seqs appended through A, acknowledged on B at once: the Ack may be
    answered before B has learnt those seqs (its queue re-read after the
    claim raises them, READ_COUNT at a time). B's idea of the queue's last
    seq moves to the acked seq: a debug build asserted pushed_seq <=
    user->last_seq when it did not, and every build told operators a
    last_seq below what the user had acknowledged."""
    store = f"redis://{cluster.seeds}"
    a = broker("--store", store)
    b = broker("--store", store, "--operators", "ops", "--push-window", "2")
    for name in ("alice", "carol"):  # known users, offline
        hub.logged_in(a.endpoint, name).logout()
    ops = hub.logged_in(b.endpoint, "ops")
    bob = hub.logged_in(a.endpoint, "bob")
    n = 600
    seqs = {"alice": [], "carol": []}
    for reply in send_durable_many(bob, ["alice", "carol"], [f"m{i}" for i in range(n)], "ab"):
        assert_status(pb, reply, "ACCEPTED")
        for r in reply.recipients:
            seqs[r.name].append(r.seq)
    assert seqs["alice"] == seqs["carol"] == list(range(1, n + 1))

    def last_seq(name):
        q = {i.name: i for i in ops.request("queues", pb.Queues()).queues}
        return q[name].last_seq

    # Pull mode: B pushes nothing; the Ack goes out right after the Login.
    alice = hub.logged_in(b.endpoint, "alice", pull=True)
    ack(alice, n)
    assert last_seq("alice") == n
    # Push mode with a window of 2: B pushes seqs 1-2, the client acks n
    # without waiting for them.
    carol = hub.logged_in(b.endpoint, "carol")
    ack(carol, n)
    assert last_seq("carol") == n
    # The queue goes on at n + 1, pushed to carol on B as the next one.
    reply = send_durable(bob, ["carol"], "after", message_id="ab-after")
    assert statuses(bob, reply) == {"carol": "ACCEPTED"}
    d = carol.recv_body("deliver", REMOTE_TIMEOUT, where=lambda d: d.text == "after")
    assert d.seq == n + 1
    assert last_seq("carol") == n + 1
    assert a.running() and b.running()


# ---------------------------------------------------------------------------
# While a claim is pending. The primary of the user's slot is SIGSTOPped
# (well under the cluster's node timeout) before the Login is sent, so the
# store cannot answer the claim until the test lets it go on: each race is
# made to happen, not hoped for.

def login_env(c, name, token=b""):
    return c.envelope("login", c.pb.Login(name=name, resume_token=token, agent="pytest"))


def test_login_again_and_same_name_while_claim_pending(cluster, brokers, hub, pb):
    a, b = brokers(2)
    first = hub.client(a.endpoint)
    with paused_primary(cluster, "alice"):
        rid = first.send_env(login_env(first, "alice"))
        # The same connection again: refused at once, the first one stands.
        again = first.request("login", pb.Login(name="alice"))
        assert_status(pb, again, "ALREADY_LOGGED_IN")
        assert "still being decided" in again.detail
        # Another client with the name on the same broker: the name is this
        # broker's pending session's; refused at once, without the store.
        second = hub.client(a.endpoint)
        reply = second.try_login("alice")
        assert_status(pb, reply, "NAME_TAKEN")
        assert "another broker" not in reply.detail
    reply = first.recv_reply(rid, REMOTE_TIMEOUT).reply
    assert_status(pb, reply, "OK")
    first.logged_in, first.name = True, "alice"
    assert reply.detail == "logged in"
    # One session, claimed by A: B refuses the name, A serves it.
    assert_status(pb, hub.client(b.endpoint).try_login("alice"), "NAME_TAKEN")
    assert_status(pb, first.send_text(["alice"], "to myself"), "OK")
    d = first.recv_body("deliver", REMOTE_TIMEOUT, where=lambda d: d.text == "to myself")
    assert getattr(d, "from") == "alice"
    stats = first.request("stats").stats
    assert stats.sessions == 1


def test_client_gone_or_logged_out_while_claim_pending(cluster, brokers, hub, pb):
    a, b = brokers(2)
    # Gone: the client closes its connection while its claim is pending.
    # A pending claim is not expired by silence (the client cannot know the
    # heartbeat interval before the Login's reply), however long the store
    # takes: once answered, the reply finds the peer gone, the session ends
    # and its claim is released.
    gone = hub.client(a.endpoint)
    with paused_primary(cluster, "alice"):
        gone.send_env(login_env(gone, "alice"))
        # Any reply on the connection means A has handled the Login (in order).
        gone.request("who")
        gone.close()
        # Longer than the heartbeat x liveness of the fixture's brokers (600 ms),
        # still well below the cluster's node timeout: A answers a ping meanwhile.
        t_end = time.monotonic() + 0.8
        while time.monotonic() < t_end:
            hub.wait(0.1)
        assert "alice: gone before its login completed" not in a.log()
    other = hub.client(b.endpoint)
    wait_until("alice free on B", lambda: other.try_login("alice").status == pb.STATUS_OK,
               hub=hub)
    # Logged out before the claim was answered: OK at once; the Login gets
    # no Reply, the claim is released.
    c = hub.client(a.endpoint)
    with paused_primary(cluster, "dave"):
        rid = c.send_env(login_env(c, "dave"))
        out = c.request("logout")
        assert_status(pb, out, "OK")
    wait_until("dave free on B", lambda: hub.client(b.endpoint).try_login("dave").status ==
               pb.STATUS_OK, hub=hub)
    assert no_reply(c, rid), "a Reply to a Login logged out before it completed"
    # A still works, and serves neither name.
    carol = hub.logged_in(a.endpoint, "carol")
    assert carol.request("stats").stats.sessions == 1


def test_resume_again_while_claim_pending_answers_the_new_connection(cluster, brokers, hub, pb):
    a, b = brokers(2)
    alice_a = hub.logged_in(a.endpoint, "alice")
    token = alice_a.token
    c1 = hub.client(b.endpoint)
    c2 = hub.client(b.endpoint)
    with paused_primary(cluster, "alice"):
        rid1 = c1.send_env(login_env(c1, "alice", token))
        # Any reply to c1 means B has handled its Login: B reads its
        # connections fair-queued, so without this c2's Login could come
        # first and c1's, the newer for B, would take the answer (seen
        # twice in parallel ctest runs: no reply to c2).
        c1.request("who")
        # The client lost that connection and comes again with the token: the
        # pending claim's answer goes to the new connection and Login.
        rid2 = c2.send_env(login_env(c2, "alice", token))
        # Any reply to c2 means B has handled its Login (in order).
        c2.request("who")
    reply = c2.recv_reply(rid2, REMOTE_TIMEOUT).reply
    assert_status(pb, reply, "OK")
    assert reply.detail == "session resumed" and reply.login.resume_token == token
    c2.logged_in, c2.name = True, "alice"
    assert no_reply(c1, rid1), "the old connection was answered too"
    # A's session was taken over.
    wait_until("A's session closed by the takeover",
               lambda: alice_a.request("fetch", pb.Fetch(max=1)).status ==
               pb.STATUS_NOT_LOGGED_IN, hub=hub)
    alice_a.logged_in = False
    assert_status(pb, c2.send_text(["alice"], "here"), "OK")
    c2.recv_body("deliver", REMOTE_TIMEOUT, where=lambda d: d.text == "here")


def test_broker_restarted_with_its_id_takes_its_claims_back(cluster, broker, hub, pb):
    store = f"redis://{cluster.seeds}"
    # Leases that expire after 60 s: nothing in this test waits for that.
    long_lease = ("--lease-ms", "20000")
    a = broker("--store", store, "--broker-id", "a1", *long_lease)
    c = broker("--store", store, *long_lease)  # control: a new id at every start
    b = broker("--store", store)
    alice = hub.logged_in(a.endpoint, "alice")
    token = alice.token
    hub.logged_in(c.endpoint, "dave")
    bob = hub.logged_in(b.endpoint, "bob")
    for i in range(3):
        assert_status(pb, send_durable(bob, ["alice"], f"r{i}", message_id=f"r{i}"), "ACCEPTED")
    got = collect_deliveries(alice, 3)
    ack(alice, got[0].deliver.seq)
    a.kill()
    c.kill()
    # The control: C's live lease still holds dave's name (for 60 s).
    assert_status(pb, hub.client(b.endpoint).try_login("dave"), "NAME_TAKEN")
    # A again, under its id: its lease replaces the dead run's at once.
    # (With the default lease: a broker polls the leases of writers it has
    # not heard from once per lease period, here to see B's entries.)
    a2 = broker("--store", store, "--broker-id", "a1")
    assert "broker id a1 had a live lease" in a2.log()
    again = hub.client(a2.endpoint)
    reply = again.login("alice", resume_token=token)  # the first try
    # The old session died with its process: a new one, with a new token.
    assert reply.detail == "logged in" and reply.login.resume_token != token
    rest = collect_deliveries(again, 2)
    assert [e.deliver.text for e in rest] == ["r1", "r2"]
    ack(again, rest[-1].deliver.seq)
    # The claim is a2's now, and ends with its logout like any other.
    assert_status(pb, hub.client(b.endpoint).try_login("alice"), "NAME_TAKEN")
    alice_b = hub.client(b.endpoint)
    again.logout()
    wait_until("alice free on B", lambda: alice_b.try_login("alice").status == pb.STATUS_OK,
               hub=hub)


def test_store_max_holds_per_broker(cluster, broker, hub, pb):
    """--store-max bounds, per broker, the waiting entries as that broker
    counts them (OPERATIONS.md, Several brokers on one store): those in the
    store when it started, plus what it appended since, less what its own
    sessions acknowledged. Another broker's appends do not count here."""
    store = f"redis://{cluster.seeds}"
    a = broker("--store", store, "--store-max", "3")
    b = broker("--store", store)
    hub.logged_in(a.endpoint, "carol").logout()  # known, offline
    bob = hub.logged_in(a.endpoint, "bob")
    for i in range(3):
        assert_status(pb, send_durable(bob, ["carol"], f"s{i}", message_id=f"s{i}"), "ACCEPTED")
    full = send_durable(bob, ["carol"], "s3", message_id="s3")
    assert_status(pb, full, "STORE_FULL")
    assert "would pass store-max 3" in full.detail and "nothing stored" in full.detail
    # B has its own count (no limit here): its appends go on, and A's
    # count does not grow with them.
    dave = hub.logged_in(b.endpoint, "dave")
    for i in range(2):
        assert_status(pb, send_durable(dave, ["carol"], f"d{i}", message_id=f"d{i}"), "ACCEPTED")
    assert_status(pb, send_durable(bob, ["carol"], "s3", message_id="s3"), "STORE_FULL")
    # carol reads on A and acknowledges everything (A's 3 and B's 2): A's
    # count drops to 0 (never below), and A takes appends again.
    carol = hub.logged_in(a.endpoint, "carol")
    got = collect_deliveries(carol, 5)
    assert sorted(e.deliver.text for e in got) == ["d0", "d1", "s0", "s1", "s2"]
    ack(carol, max(e.deliver.seq for e in got))
    for i in range(3, 6):
        assert_status(pb, send_durable(bob, ["carol"], f"s{i}", message_id=f"s{i}"), "ACCEPTED")
    assert_status(pb, send_durable(bob, ["carol"], "s6", message_id="s6"), "STORE_FULL")


def test_second_broker_with_the_same_id_fences_the_first(cluster, broker, hub, pb):
    """Two running brokers must not share a --broker-id. If one is started
    anyway it takes the lease (as a restart does), and the first one's
    next renewal finds the lease another incarnation's: it stops serving
    at once and for good (fenced) instead of serving the same names twice."""
    store = f"redis://{cluster.seeds}"
    first = broker("--store", store, "--broker-id", "twin")
    alice = hub.logged_in(first.endpoint, "alice")
    second = broker("--store", store, "--broker-id", "twin")
    assert "broker id twin had a live lease" in second.log()
    wait_for_log(first, "is another incarnation's", hub=hub)
    # The store thread says so first; the router closes its sessions when
    # the FENCED event reaches it (alice may also have expired by then when
    # the broker runs slowly, under valgrind).
    wait_for_log(first, "store lease lapsed: fenced", hub=hub)
    wait_until("the first broker closed its sessions (fenced)",
               lambda: alice.request("fetch", pb.Fetch(max=1)).status ==
               pb.STATUS_NOT_LOGGED_IN, hub=hub)
    alice.logged_in = False
    assert_status(pb, hub.client(first.endpoint).try_login("bob"), "SHUTTING_DOWN")
    # The second one serves, alice included (the first run's claim ended).
    again = hub.client(second.endpoint)
    wait_until("alice logged in on the second broker",
               lambda: again.try_login("alice").status == pb.STATUS_OK, hub=hub)
    assert "is another incarnation's" not in second.log()
    # For good: the first one does not take the lease back (two brokers
    # would take it from each other in turn).
    assert_status(pb, hub.client(first.endpoint).try_login("carol"), "SHUTTING_DOWN")
    assert "store lease renewed: serving again" not in first.log()
