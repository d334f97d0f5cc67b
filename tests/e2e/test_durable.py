"""Durable mode (phase 2) over the wire, with raw Python clients.

Brokers run with ``--data DIR`` (a fresh directory per test) on free
loopback ports; a restart is a new broker process on the same directory,
on a new port, and the clients reconnect to it. Covered, each with exact
status codes:

  - an offline recipient gets a durable message when it next logs in: on
    the same broker, after a clean restart (SIGTERM) and after a SIGKILL
    right after ACCEPTED; with pipelined sends a SIGKILL keeps exactly a
    prefix of them that contains every ACCEPTED one, and retries with the
    same message ids complete the queue without storing anything twice;
  - the user log persists across restarts (known users stay valid
    recipients, are offline in Who; broadcast reaches each of them);
  - pull mode (Login.pull): no pushes; Fetch lists pending messages with
    sender and broker timestamp, "no messages" when empty; Ack removes
    them; History keeps acknowledged ones within --retention;
  - Ack and redelivery (--redeliver-ms; at login and on session resume),
    duplicate suppression by (sender, message_id), QUEUE_FULL (--queue-max;
    expired entries make room), TTL expiry (--ttl and Send.ttl_s) reported
    once with Deliver.expired instead of the text;
  - order: per recipient seqs strictly increasing, each sender's messages
    in send order, live pushes and catch-up through a small push window;
  - without --data every durable request is NOT_DURABLE; a second broker
    on a data directory in use refuses to start.

Nothing sleeps to synchronise: tests wait for the reply or push they
expect. Absence of a push is checked after a later reply on the same
connection (a push the broker made earlier arrives earlier), or, where
the property is about time (redelivery, TTL), after a measured wait.
"""

import subprocess
import time

from conftest import BROKER_BIN, assert_status, now_us

ACCEPTED = 4  # pb.STATUS_ACCEPTED, spelled out where tuples are compared


def sender(d):
    return getattr(d, "from")


def rcpts(reply):
    return [(r.name, r.status, r.seq) for r in reply.recipients]


def clock_of(msg):
    return [(e.node, e.counter) for e in msg.clock]


def is_deliver(e):
    return e.WhichOneof("body") == "deliver"


def start_durable(broker, data, *extra, **kw):
    """A broker on the data directory `data` (created by the broker)."""
    return broker("--data", str(data), *extra, **kw)


def dsend(c, to=(), text="", message_id="", ttl_s=0, broadcast=False, clock=None):
    """A durable Send; returns the Reply."""
    msg = c.pb.Send(to=list(to), text=text, broadcast=broadcast, durable=True,
                    message_id=message_id, ttl_s=ttl_s)
    return c.request("send", msg, clock=clock)


def dsend_env(c, to=(), text="", message_id="", ttl_s=0):
    """Sends a durable Send without waiting; returns its request id."""
    msg = c.pb.Send(to=list(to), text=text, durable=True, message_id=message_id, ttl_s=ttl_s)
    return c.send_env(c.envelope("send", msg))


def ack(c, seq, status="OK"):
    reply = c.request("ack", c.pb.Ack(seq=seq))
    assert_status(c.pb, reply, status)
    return reply


def fetch(c, max_=0):
    reply = c.request("fetch", c.pb.Fetch(max=max_))
    assert_status(c.pb, reply, "OK")
    return reply


def history(c, last):
    reply = c.request("history", c.pb.History(last=last))
    assert_status(c.pb, reply, "OK")
    return reply


def register(hub, endpoint, *names):
    """Makes names known to the broker (login, logout), leaves them offline."""
    for name in names:
        c = hub.logged_in(endpoint, name)
        c.logout()
        c.close()


def login_first(hub, endpoint, name, pull=False):
    """Logs a new client in and checks that the login Reply is the first
    thing it receives (queued messages are pushed after it)."""
    c = hub.client(endpoint)
    rid = c.send_env(c.envelope("login", c.pb.Login(name=name, agent="pytest", pull=pull)))
    env = c.recv_until(lambda e: e.WhichOneof("body") in ("reply", "deliver"),
                       what="login reply")
    assert env.WhichOneof("body") == "reply", f"{name}: a push came before the login reply"
    assert env.request_id == rid
    assert_status(c.pb, env.reply, "OK")
    assert env.reply.login.durable is True
    c.logged_in = True
    c.name = name
    c.token = env.reply.login.resume_token
    return c


def next_deliveries(c, n, timeout=5.0):
    """The next n Deliver pushes, in arrival order."""
    return [c.recv_body("deliver", timeout=timeout) for _ in range(n)]


def sync(c):
    """A round trip through the broker and its store: every push the broker
    made to c before it is in c's inbox afterwards."""
    fetch(c, 1)


# ---------------------------------------------------------------------------
# Offline delivery and durability across restarts


def test_offline_recipient_gets_message_on_login(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    assert alice.login_info.durable is True
    clock = [("alice", 1), ("bob", 0)]
    t0 = now_us()
    reply = dsend(alice, ["bob"], "hello offline bob", "a-1", clock=clock)
    t1 = now_us()
    assert_status(pb, reply, "ACCEPTED")
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]
    assert reply.duplicate is False

    bob = login_first(hub, br.endpoint, "bob")
    d = bob.recv_body("deliver")
    assert sender(d) == "alice"
    assert d.text == "hello offline bob"
    assert list(d.to) == ["bob"]
    assert d.broadcast is False
    assert d.seq == 1
    assert d.message_id == "a-1"
    assert d.durable is True
    assert d.redelivered is False
    assert d.expired is False
    assert t0 <= d.timestamp_us <= t1
    assert clock_of(d) == clock
    reply = ack(bob, 1)
    assert reply.detail == "acknowledged"
    reply = fetch(bob)
    assert reply.detail == "no messages"
    assert len(reply.messages) == 0
    bob.assert_none(is_deliver, "pushed twice")
    stats = bob.request("stats").stats
    assert stats.stored_messages == 0
    assert stats.fsyncs >= 2  # the append and the ack were committed


def test_online_recipient_gets_push_after_commit(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    alice = hub.logged_in(br.endpoint, "alice")
    bob = hub.logged_in(br.endpoint, "bob")
    carl = hub.logged_in(br.endpoint, "carl")
    carl.logout()
    reply = dsend(alice, ["bob", "carl", "nobody", "bob"], "hi", "a-1")
    assert_status(pb, reply, "ACCEPTED")
    assert rcpts(reply) == [("bob", ACCEPTED, 1), ("carl", ACCEPTED, 1),
                            ("nobody", pb.STATUS_UNKNOWN_USER, 0)]
    # The push left before the sender's Reply; it names the known recipients.
    d = bob.recv_body("deliver")
    assert (sender(d), d.text, d.seq, d.durable) == ("alice", "hi", 1, True)
    assert list(d.to) == ["bob", "carl"]
    # The stored copy (pushed at login) says the same.
    carl = login_first(hub, br.endpoint, "carl")
    d = carl.recv_body("deliver")
    assert (sender(d), d.text, d.seq) == ("alice", "hi", 1)
    assert list(d.to) == ["bob", "carl"]
    # Sending to oneself queues for oneself.
    reply = dsend(alice, ["alice"], "note", "a-2")
    assert rcpts(reply) == [("alice", ACCEPTED, 1)]
    assert alice.recv_body("deliver").text == "note"


def test_offline_delivery_across_sigterm_restart(broker, hub, pb, tmp_path):
    data = tmp_path / "data"
    br = start_durable(broker, data)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in (1, 2):
        reply = dsend(alice, ["bob"], f"before restart {i}", f"a-{i}")
        assert_status(pb, reply, "ACCEPTED")
        assert rcpts(reply) == [("bob", ACCEPTED, i)]
    alice.close()
    rc, killed = br.terminate()
    assert (rc, killed) == (0, False)

    br2 = start_durable(broker, data)
    bob = login_first(hub, br2.endpoint, "bob")
    ds = next_deliveries(bob, 2)
    assert [(sender(d), d.text, d.seq, d.message_id) for d in ds] == [
        ("alice", "before restart 1", 1, "a-1"), ("alice", "before restart 2", 2, "a-2")]
    ack(bob, 2)
    assert fetch(bob).detail == "no messages"
    # A retry of an old message id after the restart is still recognised.
    alice = hub.logged_in(br2.endpoint, "alice")
    reply = dsend(alice, ["bob"], "before restart 2", "a-2")
    assert_status(pb, reply, "ACCEPTED")
    assert reply.duplicate is True
    assert rcpts(reply) == [("bob", ACCEPTED, 2)]
    # Seqs are never reused across restarts.
    reply = dsend(alice, ["bob"], "after restart", "a-3")
    assert rcpts(reply) == [("bob", ACCEPTED, 3)]
    d = bob.recv_body("deliver")
    assert (d.text, d.seq) == ("after restart", 3)
    sync(bob)
    bob.assert_none(is_deliver, "duplicate pushed")


def test_sigkill_right_after_accepted(broker, hub, pb, tmp_path):
    data = tmp_path / "data"
    br = start_durable(broker, data)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    reply = dsend(alice, ["bob"], "survives kill -9", "k-1")
    br.kill()  # at once: no clean shutdown, nothing flushed after the Reply
    assert_status(pb, reply, "ACCEPTED")
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]

    br2 = start_durable(broker, data)
    bob = login_first(hub, br2.endpoint, "bob")
    d = bob.recv_body("deliver")
    assert (sender(d), d.text, d.seq, d.message_id) == ("alice", "survives kill -9", 1, "k-1")
    ack(bob, 1)
    assert fetch(bob).detail == "no messages"


def test_sigkill_during_pipelined_sends(broker, hub, pb, tmp_path):
    """40 sends in flight; SIGKILL on the 5th ACCEPTED. What survives is a
    prefix of the send order containing every ACCEPTED message; retrying
    all 40 with the same ids completes the queue, each message once."""
    data = tmp_path / "data"
    br = start_durable(broker, data)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    n = 40
    mids = [f"p-{i}" for i in range(n)]
    rid_to_mid = {dsend_env(alice, ["bob"], f"text {mid}", mid): mid for mid in mids}
    accepted = {}
    while len(accepted) < 5:
        env = alice.recv_reply()
        assert_status(pb, env.reply, "ACCEPTED")
        accepted[rid_to_mid[env.request_id]] = env.reply.recipients[0].seq
    br.kill()
    alice.drain()  # replies that arrived before the kill count as well
    for _, env in alice.inbox:
        if env.WhichOneof("body") == "reply":
            assert_status(pb, env.reply, "ACCEPTED")
            accepted[rid_to_mid[env.request_id]] = env.reply.recipients[0].seq
    alice.close()

    br2 = start_durable(broker, data)
    bob = login_first(hub, br2.endpoint, "bob", pull=True)
    stored = list(fetch(bob, 1000).messages)
    assert [m.seq for m in stored] == list(range(1, len(stored) + 1))
    assert [m.message_id for m in stored] == mids[:len(stored)], "not a prefix"
    assert [m.text for m in stored] == [f"text {mid}" for mid in mids[:len(stored)]]
    for mid, seq in accepted.items():
        assert seq == mids.index(mid) + 1
        assert stored[seq - 1].message_id == mid, f"ACCEPTED {mid} lost"
    print(f"{len(accepted)} ACCEPTED before the kill, {len(stored)} stored")

    alice = hub.logged_in(br2.endpoint, "alice")
    for i, mid in enumerate(mids):
        reply = dsend(alice, ["bob"], f"text {mid}", mid)
        assert_status(pb, reply, "ACCEPTED")
        assert reply.duplicate is (i < len(stored)), mid
        assert rcpts(reply) == [("bob", ACCEPTED, i + 1)]
    stored = list(fetch(bob, 1000).messages)
    assert [(m.seq, m.message_id) for m in stored] == [(i + 1, mid) for i, mid in enumerate(mids)]


def test_user_log_persists_across_restarts(broker, hub, pb, tmp_path):
    data = tmp_path / "data"
    br = start_durable(broker, data)
    register(hub, br.endpoint, "carl", "alice", "bob")
    rc, killed = br.terminate()
    assert (rc, killed) == (0, False)

    br2 = start_durable(broker, data)
    dave = hub.client(br2.endpoint)
    reply = dave.login("dave")
    assert [(u.name, u.online) for u in reply.users] == [
        ("alice", False), ("bob", False), ("carl", False), ("dave", True)]
    who = dave.request("who")
    assert_status(pb, who, "OK")
    assert [(u.name, u.online) for u in who.users] == [
        ("alice", False), ("bob", False), ("carl", False), ("dave", True)]
    # A user seen before the restart is a valid recipient, durable or live.
    reply = dsend(dave, ["bob", "zed"], "still there?", "d-1")
    assert_status(pb, reply, "ACCEPTED")
    assert rcpts(reply) == [("bob", ACCEPTED, 1), ("zed", pb.STATUS_UNKNOWN_USER, 0)]
    reply = dave.send_text(to=["bob"], text="live")
    assert_status(pb, reply, "OK")
    assert [(r.name, r.status) for r in reply.recipients] == [("bob", pb.STATUS_OFFLINE)]
    # Nobody known: nothing stored, status OK.
    reply = dsend(dave, ["zed", "yves"], "anyone?", "d-x")
    assert_status(pb, reply, "OK")
    assert rcpts(reply) == [("zed", pb.STATUS_UNKNOWN_USER, 0),
                            ("yves", pb.STATUS_UNKNOWN_USER, 0)]
    # Broadcast: every known user but the sender, by name, online or not.
    reply = dsend(dave, broadcast=True, text="all hands", message_id="d-2")
    assert_status(pb, reply, "ACCEPTED")
    assert rcpts(reply) == [("alice", ACCEPTED, 1), ("bob", ACCEPTED, 2), ("carl", ACCEPTED, 1)]
    dave.close()

    # Both the users and the queues survive a crash too.
    br2.kill()
    br3 = start_durable(broker, data)
    want = {"alice": [("all hands", 1, True, [])],
            "bob": [("still there?", 1, False, ["bob"]), ("all hands", 2, True, [])],
            "carl": [("all hands", 1, True, [])]}
    for name, expect in want.items():
        c = login_first(hub, br3.endpoint, name)
        ds = next_deliveries(c, len(expect))
        assert [(d.text, d.seq, d.broadcast, list(d.to)) for d in ds] == expect, name
        assert all(sender(d) == "dave" for d in ds)
        ack(c, ds[-1].seq)
        sync(c)
        c.assert_none(is_deliver, "extra push")
    who = hub.client(br3.endpoint).request("who")
    assert [(u.name, u.online) for u in who.users] == [
        ("alice", True), ("bob", True), ("carl", True), ("dave", False)]


# ---------------------------------------------------------------------------
# Pull mode, Fetch, Ack, History


def test_pull_mode_fetch_ack_history(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data", "--retention", "2")
    bob = login_first(hub, br.endpoint, "bob", pull=True)
    reply = fetch(bob)
    assert reply.detail == "no messages"
    assert len(reply.messages) == 0
    assert len(history(bob, 10).messages) == 0
    alice = hub.logged_in(br.endpoint, "alice")
    t0 = now_us()
    for i in (1, 2, 3):
        reply = dsend(alice, ["bob"], f"m{i}", f"a-{i}", clock=[("alice", i)])
        assert rcpts(reply) == [("bob", ACCEPTED, i)]
    t1 = now_us()

    # No pushes to a pull session: its Fetch reply comes after any push.
    reply = fetch(bob)
    bob.assert_none(is_deliver, "pushed to a pull session")
    assert reply.detail == "3 messages"
    ms = list(reply.messages)
    assert [(sender(m), m.text, m.seq, m.message_id) for m in ms] == [
        ("alice", "m1", 1, "a-1"), ("alice", "m2", 2, "a-2"), ("alice", "m3", 3, "a-3")]
    for i, m in enumerate(ms, 1):
        assert t0 <= m.timestamp_us <= t1
        assert m.durable is True and m.expired is False and m.redelivered is False
        assert list(m.to) == ["bob"]
        assert clock_of(m) == [("alice", i)]
    assert ms[0].timestamp_us <= ms[1].timestamp_us <= ms[2].timestamp_us
    # Fetch changes nothing; max bounds the answer.
    reply = fetch(bob, 2)
    assert reply.detail == "2 messages (more exist)"
    assert reply.truncated is True     # seq 3 is pending too (PROTOCOL.md §4.5)
    assert [m.seq for m in reply.messages] == [1, 2]

    # Ack is cumulative and removes what it covers.
    ack(bob, 2)
    assert [m.seq for m in fetch(bob).messages] == [3]
    ack(bob, 1)  # at or below what is acknowledged: OK, no effect
    assert [m.seq for m in fetch(bob).messages] == [3]
    reply = ack(bob, 4, status="BAD_REQUEST")  # beyond the last seq ever assigned
    assert [m.seq for m in fetch(bob).messages] == [3]
    ack(bob, 3)
    reply = fetch(bob)
    assert reply.detail == "no messages"
    assert len(reply.messages) == 0

    # History keeps acknowledged messages, the newest --retention (2) of them.
    reply = history(bob, 10)
    assert [(m.seq, m.text, sender(m)) for m in reply.messages] == [(2, "m2", "alice"),
                                                                     (3, "m3", "alice")]
    assert all(t0 <= m.timestamp_us <= t1 for m in reply.messages)
    # Pending ones are in History too, oldest first; `last` bounds it.
    dsend(alice, ["bob"], "m4", "a-4")
    assert [m.seq for m in history(bob, 10).messages] == [2, 3, 4]
    assert [m.seq for m in history(bob, 2).messages] == [3, 4]
    assert [m.seq for m in fetch(bob).messages] == [4]
    bob.assert_none(is_deliver, "pushed to a pull session")

    # A pull session is not pushed its queue at login either; a push
    # session of the same user is.
    bob.logout()
    bob2 = login_first(hub, br.endpoint, "bob", pull=True)
    assert [m.seq for m in fetch(bob2).messages] == [4]
    bob2.assert_none(is_deliver, "pushed to a pull session at login")
    bob2.logout()
    bob3 = login_first(hub, br.endpoint, "bob")
    assert bob3.recv_body("deliver").seq == 4


def test_queue_requests_need_a_session(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    c = hub.client(br.endpoint)
    assert_status(pb, c.request("ack", pb.Ack(seq=1)), "NOT_LOGGED_IN")
    assert_status(pb, c.request("fetch", pb.Fetch(max=1)), "NOT_LOGGED_IN")
    assert_status(pb, c.request("history", pb.History(last=1)), "NOT_LOGGED_IN")
    assert_status(pb, dsend(c, ["x"], "t"), "NOT_LOGGED_IN")


# ---------------------------------------------------------------------------
# Acks and redelivery


def test_unacked_push_is_redelivered(broker, hub, pb, tmp_path):
    redeliver_ms = 300
    br = start_durable(broker, tmp_path / "data", "--redeliver-ms", redeliver_ms)
    bob = login_first(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    reply = dsend(alice, ["bob"], "ack me", "a-1")
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]
    first = bob.recv_body("deliver")
    t_first = time.monotonic()
    assert (first.seq, first.text, first.redelivered) == (1, "ack me", False)

    # Not acknowledged: the same seq comes again after --redeliver-ms.
    again = bob.recv_body("deliver", timeout=5.0)
    elapsed = time.monotonic() - t_first
    assert (again.seq, again.text, again.message_id, sender(again)) == (1, "ack me", "a-1",
                                                                         "alice")
    assert again.redelivered is True
    assert again.timestamp_us == first.timestamp_us
    assert elapsed >= redeliver_ms / 1000 * 0.8, f"redelivered after {elapsed:.3f}s"
    # And again, while it stays unacknowledged.
    assert bob.recv_body("deliver", timeout=5.0).seq == 1

    # After the ack: no more redeliveries, new messages flow normally.
    ack(bob, 1)
    bob.deliveries()  # forget redeliveries that crossed the ack
    hub.wait(3 * redeliver_ms / 1000)  # the property is about time: wait it out
    reply = dsend(alice, ["bob"], "next", "a-2")
    assert rcpts(reply) == [("bob", ACCEPTED, 2)]
    d = bob.recv_body("deliver")
    assert (d.seq, d.text, d.redelivered) == (2, "next", False)
    assert [x.seq for x in bob.deliveries()] == []
    ack(bob, 2)

    # Unacknowledged at logout: pushed again at the next login (not flagged:
    # the broker cannot know what the previous session showed).
    reply = dsend(alice, ["bob"], "third", "a-3")
    assert bob.recv_body("deliver").seq == 3
    bob.logout()
    bob.close()
    bob = login_first(hub, br.endpoint, "bob")
    d = bob.recv_body("deliver")
    assert (d.seq, d.text, d.redelivered) == (3, "third", False)
    ack(bob, 3)


def test_resumed_session_gets_unacked_again(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    bob = login_first(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    dsend(alice, ["bob"], "m1", "a-1")
    assert bob.recv_body("deliver").seq == 1
    token = bob.token
    bob.close()  # the connection is lost before bob acknowledged
    bob2 = hub.client(br.endpoint)
    reply = bob2.login("bob", resume_token=token)
    assert reply.detail == "session resumed"
    d = bob2.recv_body("deliver")
    assert (d.seq, d.text, d.redelivered) == (1, "m1", False)
    dsend(alice, ["bob"], "m2", "a-2")
    assert bob2.recv_body("deliver").seq == 2
    ack(bob2, 2)
    assert fetch(bob2).detail == "no messages"


def test_partial_ack_redelivers_from_first_unacked(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data", "--redeliver-ms", 300)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(1, 5):
        dsend(alice, ["bob"], f"m{i}", f"a-{i}")
    bob = login_first(hub, br.endpoint, "bob")
    assert [d.seq for d in next_deliveries(bob, 4)] == [1, 2, 3, 4]
    ack(bob, 2)
    bob.deliveries()  # forget a redelivery that crossed the ack (only under heavy load)
    ds = next_deliveries(bob, 2)
    assert [(d.seq, d.redelivered) for d in ds] == [(3, True), (4, True)]
    ack(bob, 4)


# ---------------------------------------------------------------------------
# Duplicate suppression


def test_duplicate_message_id(broker, hub, pb, tmp_path):
    data = tmp_path / "data"
    br = start_durable(broker, data)
    bob = login_first(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    carl = hub.logged_in(br.endpoint, "carl")
    reply = dsend(alice, ["bob"], "once", "dup-1")
    assert_status(pb, reply, "ACCEPTED")
    assert reply.duplicate is False
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]
    assert bob.recv_body("deliver").text == "once"

    # The retry (even with other text) repeats the original result.
    reply = dsend(alice, ["bob"], "once (retry)", "dup-1")
    assert_status(pb, reply, "ACCEPTED")
    assert reply.duplicate is True
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]
    assert reply.detail
    # Not pushed again: the next push bob gets is the next message.
    reply = dsend(alice, ["bob"], "twice", "dup-2")
    assert rcpts(reply) == [("bob", ACCEPTED, 2)]
    d = bob.recv_body("deliver")
    assert (d.seq, d.text) == (2, "twice")
    # Message ids are per sender: carl's "dup-1" is a new message.
    reply = dsend(carl, ["bob"], "carl's", "dup-1")
    assert reply.duplicate is False
    assert rcpts(reply) == [("bob", ACCEPTED, 3)]
    assert bob.recv_body("deliver").text == "carl's"
    # An empty message id means no deduplication.
    for seq in (4, 5):
        reply = dsend(alice, ["bob"], "no id", "")
        assert reply.duplicate is False
        assert rcpts(reply) == [("bob", ACCEPTED, seq)]
    assert [d.seq for d in next_deliveries(bob, 2)] == [4, 5]
    ack(bob, 5)
    # Acknowledged, then retried after a crash: still a duplicate.
    br.kill()
    br2 = start_durable(broker, data)
    alice = hub.logged_in(br2.endpoint, "alice")
    reply = dsend(alice, ["bob"], "once", "dup-1")
    assert_status(pb, reply, "ACCEPTED")
    assert reply.duplicate is True
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]
    bob = login_first(hub, br2.endpoint, "bob", pull=True)
    reply = fetch(bob)
    assert reply.detail == "no messages"
    assert [(m.seq, m.text) for m in history(bob, 10).messages] == [
        (1, "once"), (2, "twice"), (3, "carl's"), (4, "no id"), (5, "no id")]


def test_duplicate_of_multicast(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(hub, br.endpoint, "bob", "carl")
    alice = hub.logged_in(br.endpoint, "alice")
    dsend(alice, ["carl"], "warm-up", "w")  # carl's next seq is 2
    reply = dsend(alice, ["bob", "carl"], "both", "m-1")
    assert rcpts(reply) == [("bob", ACCEPTED, 1), ("carl", ACCEPTED, 2)]
    reply = dsend(alice, ["bob", "carl"], "both", "m-1")
    assert reply.duplicate is True
    assert rcpts(reply) == [("bob", ACCEPTED, 1), ("carl", ACCEPTED, 2)]
    for name, seqs in (("bob", [1]), ("carl", [1, 2])):
        c = login_first(hub, br.endpoint, name, pull=True)
        assert [m.seq for m in fetch(c).messages] == seqs


# ---------------------------------------------------------------------------
# Limits: queue quota, TTL


def test_queue_full(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data", "--queue-max", 3)
    register(hub, br.endpoint, "bob", "carl")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in (1, 2, 3):
        reply = dsend(alice, ["bob"], f"m{i}", f"a-{i}")
        assert_status(pb, reply, "ACCEPTED")
        assert rcpts(reply) == [("bob", ACCEPTED, i)]
    reply = dsend(alice, ["bob"], "m4", "a-4")
    assert_status(pb, reply, "QUEUE_FULL")
    assert rcpts(reply) == [("bob", pb.STATUS_QUEUE_FULL, 0)]
    assert reply.duplicate is False
    # One full queue does not stop the others.
    reply = dsend(alice, ["bob", "carl"], "m5", "a-5")
    assert_status(pb, reply, "ACCEPTED")
    assert rcpts(reply) == [("bob", pb.STATUS_QUEUE_FULL, 0), ("carl", ACCEPTED, 1)]

    # An ack makes room; the refused message left no record, so its retry
    # is a fresh attempt; the refusals consumed no seq.
    bob = login_first(hub, br.endpoint, "bob", pull=True)
    assert [m.text for m in fetch(bob).messages] == ["m1", "m2", "m3"]
    ack(bob, 1)
    reply = dsend(alice, ["bob"], "m4", "a-4")
    assert_status(pb, reply, "ACCEPTED")
    assert reply.duplicate is False
    assert rcpts(reply) == [("bob", ACCEPTED, 4)]
    assert_status(pb, dsend(alice, ["bob"], "m6", "a-6"), "QUEUE_FULL")
    # A duplicate of a stored message is answered even when the queue is full.
    reply = dsend(alice, ["bob"], "m2", "a-2")
    assert_status(pb, reply, "ACCEPTED")
    assert reply.duplicate is True
    assert rcpts(reply) == [("bob", ACCEPTED, 2)]
    assert [m.seq for m in fetch(bob).messages] == [2, 3, 4]


def test_full_queue_drops_expired_entries_to_make_room(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data", "--queue-max", 2)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    assert rcpts(dsend(alice, ["bob"], "short", "a-1", ttl_s=1)) == [("bob", ACCEPTED, 1)]
    t_sent = time.monotonic()
    assert rcpts(dsend(alice, ["bob"], "long", "a-2")) == [("bob", ACCEPTED, 2)]
    assert_status(pb, dsend(alice, ["bob"], "no room", "a-3"), "QUEUE_FULL")
    hub.wait(max(0.0, 1.3 - (time.monotonic() - t_sent)))  # the TTL is the property
    # The expired entry makes room (it is dropped, not reported, then).
    assert rcpts(dsend(alice, ["bob"], "room now", "a-3")) == [("bob", ACCEPTED, 3)]
    bob = login_first(hub, br.endpoint, "bob", pull=True)
    assert [(m.seq, m.text, m.expired) for m in fetch(bob).messages] == [
        (2, "long", False), (3, "room now", False)]


def test_default_ttl_expires(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data", "--ttl", 1)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    reply = dsend(alice, ["bob"], "too late", "a-1")
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]
    t_sent = time.monotonic()
    reply = dsend(alice, ["bob"], "longer ttl", "a-2", ttl_s=60)  # Send.ttl_s wins
    assert rcpts(reply) == [("bob", ACCEPTED, 2)]
    hub.wait(max(0.0, 1.3 - (time.monotonic() - t_sent)))  # the TTL is the property

    bob = login_first(hub, br.endpoint, "bob")
    d1, d2 = next_deliveries(bob, 2)
    assert (d1.seq, d1.expired, d1.text, d1.message_id, sender(d1)) == (1, True, "", "a-1",
                                                                         "alice")
    assert d1.durable is True
    assert (d2.seq, d2.expired, d2.text) == (2, False, "longer ttl")
    # Reported once: the expired entry is gone from the queue.
    reply = fetch(bob)
    assert [(m.seq, m.expired) for m in reply.messages] == [(2, False)]
    ack(bob, 2)
    assert fetch(bob).detail == "no messages"


def test_send_ttl_expires_in_pull_mode(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    bob = login_first(hub, br.endpoint, "bob", pull=True)
    alice = hub.logged_in(br.endpoint, "alice")
    reply = dsend(alice, ["bob"], "short-lived", "a-1", ttl_s=1)
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]
    t_sent = time.monotonic()
    reply = dsend(alice, ["bob"], "forever", "a-2")  # no --ttl: never expires
    assert rcpts(reply) == [("bob", ACCEPTED, 2)]
    assert [(m.seq, m.expired, m.text) for m in fetch(bob).messages] == [
        (1, False, "short-lived"), (2, False, "forever")]
    hub.wait(max(0.0, 1.3 - (time.monotonic() - t_sent)))

    # History shows the pending expired entry (without text) and leaves it.
    assert [(m.seq, m.expired, m.text) for m in history(bob, 10).messages] == [
        (1, True, ""), (2, False, "forever")]
    # Fetch reports it once, expired and without text, then it is gone.
    assert [(m.seq, m.expired, m.text) for m in fetch(bob).messages] == [
        (1, True, ""), (2, False, "forever")]
    assert [(m.seq, m.expired) for m in fetch(bob).messages] == [(2, False)]
    ack(bob, 2)
    assert fetch(bob).detail == "no messages"
    bob.assert_none(is_deliver, "pushed to a pull session")


# ---------------------------------------------------------------------------
# Order


def test_order_per_recipient_and_sender(broker, hub, pb, tmp_path):
    """Two senders pipeline 30 messages each to bob (online) and, every
    third one excepted, to carl (offline, catches up at login with a push
    window of 4 while a new message arrives)."""
    br = start_durable(broker, tmp_path / "data", "--push-window", 4)
    register(hub, br.endpoint, "carl")
    bob = login_first(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    dave = hub.logged_in(br.endpoint, "dave")
    n = 30
    pending = {}
    for i in range(n):  # interleaved, all in flight at once
        for who in (alice, dave):
            to = ["bob", "carl"] if i % 3 else ["bob"]
            rid = dsend_env(who, to, f"{who.name}:{i}", f"{who.name}-{i}")
            pending[(who.name, rid)] = to
    for who in (alice, dave):
        while any(k[0] == who.name for k in pending):
            env = who.recv_reply()
            to = pending.pop((who.name, env.request_id))
            assert_status(pb, env.reply, "ACCEPTED")
            assert [r.name for r in env.reply.recipients] == to
            assert all(r.status == ACCEPTED for r in env.reply.recipients)

    def check(ds, name):
        seqs = [d.seq for d in ds]
        assert seqs == list(range(1, len(ds) + 1)), f"{name}: seqs {seqs}"
        for s in ("alice", "dave"):
            mine = [int(d.text.split(":")[1]) for d in ds if sender(d) == s]
            assert mine == sorted(mine), f"{name}: {s}'s messages out of order: {mine}"
            assert all(d.message_id == f"{s}-{d.text.split(':')[1]}"
                       for d in ds if sender(d) == s)

    # bob, online: live pushes, acking in steps that keep the window open.
    got = []
    while len(got) < 2 * n:
        got.append(bob.recv_body("deliver"))
        if len(got) % 2 == 0:
            ack(bob, got[-1].seq)
    check(got, "bob")
    assert all(not d.redelivered for d in got)

    # carl catches up at login: at most 4 unacknowledged pushes at a time,
    # and a message committed meanwhile waits for its turn in seq order.
    n_carl = 2 * sum(1 for i in range(n) if i % 3)
    carl = login_first(hub, br.endpoint, "carl")
    got = next_deliveries(carl, 4)
    reply = dsend(alice, ["carl"], f"alice:{n}", f"alice-{n}")
    n_carl += 1
    assert rcpts(reply) == [("carl", ACCEPTED, n_carl)]
    sync(carl)
    carl.assert_none(is_deliver, "pushed beyond --push-window 4 or out of seq order")
    while len(got) < n_carl:
        ack(carl, got[-1].seq)
        got += next_deliveries(carl, min(4, n_carl - len(got)))
    check(got, "carl")
    ack(carl, got[-1].seq)
    assert fetch(carl).detail == "no messages"


def test_deliveries_carry_the_after_seq_chain(broker, hub, pb, tmp_path):
    """Envelope.after_seq (PROTOCOL.md 13.8): each stored push names the seq
    pushed before it in the session, each live push the last stored seq
    pushed; a session without stored pushes gets live frames unstamped; a
    new login starts the chain again from the acknowledged position."""
    br = start_durable(broker, tmp_path / "data")
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    carol = hub.logged_in(br.endpoint, "carol")
    for i in range(1, 4):
        dsend(alice, ["bob"], f"m{i}", f"a-{i}")
    bob = login_first(hub, br.endpoint, "bob")

    def next_deliver(c):
        return c.recv_until(is_deliver, what="deliver")

    got = [next_deliver(bob) for _ in range(3)]
    assert [(e.deliver.seq, e.after_seq) for e in got] == [(1, 0), (2, 1), (3, 2)]
    ack(bob, 1)
    reply = dsend(alice, ["bob"], "m4", "a-4")
    assert rcpts(reply) == [("bob", ACCEPTED, 4)]
    e = next_deliver(bob)
    assert (e.deliver.seq, e.after_seq) == (4, 3)

    # Live to bob and carol in one multicast: bob's copy follows seq 4,
    # carol (no stored pushes) gets the frame as it is.
    reply = alice.send_text(to=["bob", "carol"], text="live", message_id="l-1")
    assert_status(pb, reply, "OK")
    e = next_deliver(bob)
    assert (e.deliver.seq, e.deliver.text, e.after_seq) == (0, "live", 4)
    e = next_deliver(carol)
    assert (e.deliver.text, e.HasField("deliver"), e.after_seq) == ("live", True, 0)

    # A new login pushes from the first unacknowledged entry, chain from 0.
    bob.logout()
    bob.close()
    bob = login_first(hub, br.endpoint, "bob")
    got = [next_deliver(bob) for _ in range(3)]
    assert [(e.deliver.seq, e.after_seq) for e in got] == [(2, 0), (3, 2), (4, 3)]
    ack(bob, 4)


def test_push_window_counts_only_unacked_pushes(broker, hub, pb, tmp_path):
    """A user whose queue holds more acknowledged entries than the push
    window still gets every new message pushed after a new login."""
    br = start_durable(broker, tmp_path / "data", "--push-window", 4)
    bob = login_first(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(1, 7):
        dsend(alice, ["bob"], f"m{i}", f"a-{i}")
        assert bob.recv_body("deliver").seq == i
        ack(bob, i)
    bob.logout()
    bob.close()
    bob = login_first(hub, br.endpoint, "bob")
    for i in range(7, 10):  # three pushes outstanding, window 4: all pushed
        reply = dsend(alice, ["bob"], f"m{i}", f"a-{i}")
        assert rcpts(reply) == [("bob", ACCEPTED, i)]
    assert [d.seq for d in next_deliveries(bob, 3)] == [7, 8, 9]
    ack(bob, 9)


# ---------------------------------------------------------------------------
# Without a store; one broker per data directory


def test_no_store_means_not_durable(broker, hub, pb):
    br = broker()
    alice = hub.logged_in(br.endpoint, "alice")
    assert alice.login_info.durable is False
    hub.logged_in(br.endpoint, "bob")
    reply = dsend(alice, ["bob"], "keep me", "a-1")
    assert_status(pb, reply, "NOT_DURABLE")
    assert len(reply.recipients) == 0
    assert_status(pb, alice.request("ack", pb.Ack(seq=1)), "NOT_DURABLE")
    assert_status(pb, alice.request("fetch", pb.Fetch(max=10)), "NOT_DURABLE")
    assert_status(pb, alice.request("history", pb.History(last=10)), "NOT_DURABLE")
    # A live send still works, and bob got nothing from the refused one.
    reply = alice.send_text(to=["bob"], text="live")
    assert_status(pb, reply, "OK")


def test_second_broker_on_same_data_dir_refuses(broker, hub, pb, tmp_path):
    data = tmp_path / "data"
    br = start_durable(broker, data)
    res = subprocess.run([BROKER_BIN, "--bind", "tcp://127.0.0.1:*", "--data", str(data)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    assert res.returncode == 1, res
    assert "listening" not in res.stdout
    assert str(data) in res.stderr, res.stderr
    assert "in use by another broker" in res.stderr, res.stderr
    assert f"pid {br.proc.pid}" in res.stderr, res.stderr
    # The first broker is unharmed and its store still works.
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    assert rcpts(dsend(alice, ["bob"], "fine", "a-1")) == [("bob", ACCEPTED, 1)]
    # Once it stopped, the directory can be used again.
    rc, killed = br.terminate()
    assert (rc, killed) == (0, False)
    br2 = start_durable(broker, data)
    bob = login_first(hub, br2.endpoint, "bob")
    assert bob.recv_body("deliver").text == "fine"


def test_store_choice_at_start(tmp_path):
    """The store is chosen at start from --data DIR or --store URL: both is a
    usage error (exit 2), a malformed URL too, and a Redis store whose
    cluster cannot be reached refuses to start, saying so (exit 1); none of
    them listens."""
    def run(*args):
        res = subprocess.run([BROKER_BIN, "--bind", "tcp://127.0.0.1:*", *args],
                             stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=20)
        assert "listening" not in res.stdout, res
        return res

    res = run("--data", str(tmp_path / "d"), "--store", "redis://127.0.0.1:7000")
    assert res.returncode == 2, res
    assert "--data and --store are mutually exclusive" in res.stderr, res.stderr
    assert not (tmp_path / "d").exists()  # nothing created
    for bad in ("redis://127.0.0.1", "redis://h:0", "redis://h:70000", "http://h:1",
                "redis://h:1,"):
        res = run("--store", bad)
        assert res.returncode == 2, (bad, res)
        assert "--store" in res.stderr, res.stderr
    # --broker-id: only with --store, 1-48 of letters, digits and .-_:
    res = run("--broker-id", "b1")
    assert res.returncode == 2, res
    assert "--broker-id names this broker in a shared store: it needs --store" in res.stderr
    for bad in ("a b", "a{b}", "x" * 49, "é"):
        res = run("--store", "redis://127.0.0.1:7000", "--broker-id", bad)
        assert res.returncode == 2, (bad, res)
        assert f"--broker-id '{bad}': use 1 to 48 letters" in res.stderr, res.stderr
    res = run("--store", "redis://127.0.0.1:7000", "--broker-id", "x" * 48, "--store-retry-ms",
              "500")
    assert res.returncode == 1 and "cannot reach the cluster" in res.stderr, res
    res = run("--store", "redis://127.0.0.1:7000,127.0.0.1:7001")
    assert res.returncode == 1, res
    assert "cannot reach the cluster" in res.stderr, res.stderr
    assert "--store" in subprocess.run([BROKER_BIN, "--help"], capture_output=True,
                                       text=True, timeout=20).stdout
