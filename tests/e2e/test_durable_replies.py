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

from conftest import assert_status

from test_durable import (ACCEPTED, ack, dsend, fetch, history, login_first, next_deliveries,
                          rcpts, register, start_durable)

_ids = itertools.count(1)


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
