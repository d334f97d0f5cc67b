"""Durable replies say exactly what PROTOCOL.md §13 promises (issue 11).

- Item 2: a retried durable Send (same sender, same message_id) is answered
  ACCEPTED with duplicate=true and the ORIGINAL's recipients and seqs
  (§13.2), whatever recipients the retry names: the same set, a subset, a
  superset, a disjoint set, only unknown names, or a broadcast; nothing is
  stored or pushed again.
- Item 3: Envelope.after_seq (§13.10) restarts at 0 whenever the broker
  starts a session's stored pushes again from the first unacknowledged
  entry (login, resume, redelivery timer), so a new client process whose
  `shown` is 0 never waits for entries that are acknowledged already.
- Item 5: Reply.truncated has one meaning: more exist than this Reply
  carries (§4.5).
"""

import itertools
import os
import subprocess
import time

import pytest

from conftest import BUILD_DIR, assert_status, import_installed_causeway

from test_durable import (ACCEPTED, ack, dsend, fetch, history, login_first, next_deliveries,
                          rcpts, register, start_durable)

_ids = itertools.count(1)
PROBE_BIN = os.path.join(BUILD_DIR, "tests", "e2e", "resume_probe")


def mid():
    return f"retry-{next(_ids)}"


# ---------------------------------------------------------------------------
# Item 2: duplicates repeat the original's answer


def test_retry_with_other_recipients_repeats_the_original(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(hub, br.endpoint, "bob", "carl", "dave")
    alice = hub.logged_in(br.endpoint, "alice")
    dsend(alice, ["carl"], "warm-up", "w")          # carl's next seq is 2
    m = mid()
    first = dsend(alice, ["bob", "carl"], "original", m)
    assert_status(pb, first, "ACCEPTED")
    assert first.duplicate is False
    original = [("bob", ACCEPTED, 1), ("carl", ACCEPTED, 2)]
    assert rcpts(first) == original
    shapes = {
        "same set": dict(to=["bob", "carl"]),
        "same set, other order": dict(to=["carl", "bob"]),
        "subset": dict(to=["carl"]),
        "superset": dict(to=["bob", "carl", "dave"]),
        "overlapping": dict(to=["carl", "dave"]),
        "disjoint": dict(to=["dave"]),
        "only unknown names": dict(to=["nobody", "nobody2"]),
        "broadcast": dict(broadcast=True),
    }
    for what, kw in shapes.items():
        reply = dsend(alice, text="retry", message_id=m, **kw)
        assert reply.status == pb.STATUS_ACCEPTED, (
            f"{what}: {pb.Status.Name(reply.status)} {reply.detail!r}")
        assert reply.duplicate is True, what
        assert rcpts(reply) == original, what
    # Nothing was stored again: dave has nothing, bob and carl only the
    # original.
    for name, want in (("bob", [(1, "original")]), ("carl", [(1, "warm-up"), (2, "original")]),
                       ("dave", [])):
        c = login_first(hub, br.endpoint, name, pull=True)
        assert [(x.seq, x.text) for x in fetch(c).messages] == want, name
        c.logout()


def test_retry_of_a_broadcast(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(hub, br.endpoint, "bob", "carl")
    alice = hub.logged_in(br.endpoint, "alice")
    m = mid()
    first = dsend(alice, text="to all", message_id=m, broadcast=True)
    original = [("bob", ACCEPTED, 1), ("carl", ACCEPTED, 1)]
    assert rcpts(first) == original
    register(hub, br.endpoint, "dave")   # a user who did not exist then
    for what, kw in (("broadcast again", dict(broadcast=True)), ("unicast", dict(to=["dave"])),
                     ("multicast", dict(to=["bob", "dave"]))):
        reply = dsend(alice, text="to all", message_id=m, **kw)
        assert_status(pb, reply, "ACCEPTED")
        assert reply.duplicate is True, what
        assert rcpts(reply) == original, what
    dave = login_first(hub, br.endpoint, "dave", pull=True)
    assert fetch(dave).detail == "no messages"


def test_retry_is_not_pushed_again(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    bob = login_first(hub, br.endpoint, "bob")
    carl = login_first(hub, br.endpoint, "carl")
    alice = hub.logged_in(br.endpoint, "alice")
    m = mid()
    assert rcpts(dsend(alice, ["bob"], "one", m)) == [("bob", ACCEPTED, 1)]
    assert bob.recv_body("deliver").text == "one"
    reply = dsend(alice, ["bob", "carl"], "one", m)
    assert reply.duplicate is True
    assert rcpts(reply) == [("bob", ACCEPTED, 1)]
    # The next message is the next thing each of them gets.
    dsend(alice, ["bob", "carl"], "two", mid())
    assert bob.recv_body("deliver").text == "two"
    assert carl.recv_body("deliver").text == "two"


# ---------------------------------------------------------------------------
# Item 3: after_seq restarts at 0 with every restart of the stored pushes


def next_deliver_envs(c, n, timeout=5.0):
    """The next n Deliver envelopes (after_seq is an Envelope field)."""
    return [c.recv_until(lambda e: e.WhichOneof("body") == "deliver", timeout,
                         what="deliver") for _ in range(n)]


def chain(envs):
    return [(e.deliver.seq, e.after_seq) for e in envs]


def test_after_seq_on_timer_redelivery(broker, hub, pb, tmp_path):
    """Seqs 1-2 acknowledged, 3 redelivered: its after_seq is 0 (it was 2,
    an entry a new client never sees again)."""
    br = start_durable(broker, tmp_path / "data", "--redeliver-ms", 300)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(1, 4):
        dsend(alice, ["bob"], f"m{i}", mid())
    bob = login_first(hub, br.endpoint, "bob")
    assert chain(next_deliver_envs(bob, 3)) == [(1, 0), (2, 1), (3, 2)]
    ack(bob, 2)
    bob.deliveries()   # a redelivery that crossed the ack (heavy load only)
    again = next_deliver_envs(bob, 1)[0]
    assert again.deliver.redelivered is True
    assert chain([again]) == [(3, 0)]
    # The chain goes on from there: a new message follows 3.
    dsend(alice, ["bob"], "m4", mid())
    env = bob.recv_until(lambda e: e.WhichOneof("body") == "deliver" and e.deliver.seq == 4,
                         what="seq 4")
    assert env.after_seq == 3
    ack(bob, 4)


def test_after_seq_after_resume_from_a_new_process(broker, hub, pb, tmp_path):
    """A client that dies holding unacknowledged entries, and a new process
    (shown = 0) that resumes the session with the token: the first entry
    pushed to it says after_seq 0, so it is shown at once; a live message
    to a resumed session whose queue is empty says 0 too (it said the
    session's acknowledged position)."""
    br = start_durable(broker, tmp_path / "data")
    bob = login_first(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(1, 4):
        dsend(alice, ["bob"], f"m{i}", mid())
    assert chain(next_deliver_envs(bob, 3)) == [(1, 0), (2, 1), (3, 2)]
    ack(bob, 3)
    for i in range(4, 6):
        dsend(alice, ["bob"], f"m{i}", mid())
    assert chain(next_deliver_envs(bob, 2)) == [(4, 3), (5, 4)]
    token = bob.token
    bob.close()                     # the process dies; its session lives on
    new = hub.client(br.endpoint)   # a new process, shown = 0, with the token
    reply = new.login("bob", resume_token=token)
    assert reply.detail == "session resumed"
    assert chain(next_deliver_envs(new, 2)) == [(4, 0), (5, 4)]
    ack(new, 5)
    # A live message follows the last stored one pushed in this chain.
    assert_status(pb, alice.send_text(to=["bob"], text="live"), "OK")
    live = new.recv_until(lambda e: e.WhichOneof("body") == "deliver" and not e.deliver.seq,
                          what="live message")
    assert live.after_seq == 5
    # Resumed again with nothing pending: live messages follow nothing.
    token = new.token
    new.close()
    newer = hub.client(br.endpoint)
    assert newer.login("bob", resume_token=token).detail == "session resumed"
    assert fetch(newer).detail == "no messages"     # the resume's read is done
    assert_status(pb, alice.send_text(to=["bob"], text="live 2"), "OK")
    live = newer.recv_until(lambda e: e.WhichOneof("body") == "deliver", what="live message")
    assert (live.deliver.text, live.after_seq) == ("live 2", 0)


def leave_session_with_pending(hub, br, name):
    """A first process: name is pushed seqs 1-3, acknowledges them, is
    pushed 4 and 5 and dies without acknowledging them or logging out.
    Returns (the sender, the session's resume token)."""
    first = login_first(hub, br.endpoint, name)
    alice = hub.logged_in(br.endpoint, fresh_sender())
    for i in range(1, 4):
        dsend(alice, [name], f"m{i}", mid())
    assert [e.deliver.seq for e in next_deliver_envs(first, 3)] == [1, 2, 3]
    ack(first, 3)
    for i in range(4, 6):
        dsend(alice, [name], f"m{i}", mid())
    assert chain(next_deliver_envs(first, 2)) == [(4, 3), (5, 4)]
    token = first.token
    first.close()
    return alice, token


_senders = itertools.count(1)


def fresh_sender():
    return f"sender{next(_senders)}"


@pytest.fixture(scope="module")
def cw(tmp_path_factory):
    """The installed Python client package (conftest.import_installed_causeway)."""
    return import_installed_causeway()


def test_new_python_client_resumes_and_is_shown_pending(broker, hub, pb, tmp_path, cw):
    br = start_durable(broker, tmp_path / "data")
    alice, token = leave_session_with_pending(hub, br, "bob")
    c = cw.Client(br.endpoint, auto_ack=False)
    try:
        c.login("bob", resume_token=token)
        assert c.resume_token == token
        got = []
        deadline = time.monotonic() + 10.0
        while len(got) < 2 and time.monotonic() < deadline:
            ev = c.next_event(timeout=max(0.0, deadline - time.monotonic()))
            if isinstance(ev, cw.Deliver):
                got.append((ev.seq, ev.text, ev.holdback_us))
        assert [(s, t) for s, t, _ in got] == [(4, "m4"), (5, "m5")], got
        assert all(h == 0 for _, _, h in got), f"held back: {got}"
        c.ack(5)
    finally:
        c.close()


def test_new_libcauseway_process_resumes_and_is_shown_pending(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    alice, token = leave_session_with_pending(hub, br, "bob")
    hub.pump()
    proc = subprocess.run([PROBE_BIN, br.endpoint, "bob", token.hex(), "2", "10000"],
                          capture_output=True, text=True, timeout=30)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, f"rc {proc.returncode}: {proc.stdout!r} {proc.stderr[-2000:]!r}"
    assert lines == ["login OK session resumed", "seq 4 m4", "seq 5 m5"], lines


# ---------------------------------------------------------------------------
# Item 5: Reply.truncated means "more exist than this Reply carries"


def test_fetch_truncated_when_more_are_pending(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(1, 6):
        dsend(alice, ["bob"], f"m{i}", mid())
    bob = login_first(hub, br.endpoint, "bob", pull=True)
    r = fetch(bob, 2)                       # Fetch.max left 3 out
    assert [m.seq for m in r.messages] == [1, 2]
    assert r.truncated is True
    r = fetch(bob, 5)                       # exactly what is pending
    assert [m.seq for m in r.messages] == [1, 2, 3, 4, 5]
    assert r.truncated is False
    r = fetch(bob, 10)
    assert r.truncated is False
    ack(bob, 4)
    r = fetch(bob, 1)
    assert ([m.seq for m in r.messages], r.truncated) == ([5], False)
    ack(bob, 5)
    r = fetch(bob, 1)
    assert (len(r.messages), r.truncated) == (0, False)


def test_fetch_and_history_truncated_by_max_reply(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data", "--max-reply", 4096)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(1, 5):
        dsend(alice, ["bob"], f"{i}" * 1500, mid())
    bob = login_first(hub, br.endpoint, "bob", pull=True)
    r = fetch(bob, 10)
    assert [m.seq for m in r.messages] == [1, 2]
    assert r.truncated is True
    r = history(bob, 10)
    assert [m.seq for m in r.messages] == [3, 4]
    assert r.truncated is True


def test_history_truncated_when_older_exist(broker, hub, pb, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(1, 5):
        dsend(alice, ["bob"], f"m{i}", mid())
    bob = login_first(hub, br.endpoint, "bob", pull=True)
    ack(bob, 2)                             # acknowledged ones count too (retention)
    r = history(bob, 3)
    assert ([m.seq for m in r.messages], r.truncated) == ([2, 3, 4], True)
    r = history(bob, 4)
    assert ([m.seq for m in r.messages], r.truncated) == ([1, 2, 3, 4], False)
    r = history(bob, 100)
    assert r.truncated is False
