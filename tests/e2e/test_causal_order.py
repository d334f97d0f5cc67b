"""Causal order at one broker across the two modes (PROTOCOL.md §10.6,
docs/CAUSALITY.md): a live message never overtakes a stored message that
may causally precede it, because the broker holds live Delivers back while
stored ones for the same recipient are pending (catching up after login,
or an append naming it awaits its commit)."""

from conftest import assert_status
from test_durable import ack, dsend, dsend_env, login_first, register, start_durable


def kind(d):
    return "durable" if d.durable else "live"


def test_live_waits_for_durable_backlog(broker, hub, pb, tmp_path):
    """bob logs in with 5 stored messages and a push window of 2; a live
    message sent after them waits until every stored one was pushed."""
    br = start_durable(broker, tmp_path / "data", "--push-window", 2)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(5):
        assert_status(pb, dsend(alice, ["bob"], f"d{i}", f"m{i}"), "ACCEPTED")
    bob = login_first(hub, br.endpoint, "bob")
    first = [bob.recv_body("deliver"), bob.recv_body("deliver")]
    assert [d.text for d in first] == ["d0", "d1"]
    # alice's live message is answered DELIVERED (it is queued for bob) ...
    reply = alice.send_text(["bob"], "live after the backlog")
    assert_status(pb, reply, "OK")
    assert [r.status for r in reply.recipients] == [pb.STATUS_DELIVERED]
    # ... but it is not pushed while bob's window is full: a request bob
    # makes now is answered before anything else reaches him.
    who = bob.request("who")
    assert_status(pb, who, "OK")
    assert not [d for d in bob.deliveries() if not d.durable], "live overtook the backlog"
    got = list(first)
    while len(got) < 6:
        ack(bob, got[-1].seq)
        got.append(bob.recv_body("deliver"))
    assert [d.text for d in got] == ["d0", "d1", "d2", "d3", "d4", "live after the backlog"]
    assert [kind(d) for d in got] == ["durable"] * 5 + ["live"]


def test_pipelined_durable_then_live_keeps_program_order(broker, hub, pb, tmp_path):
    """alice sends a durable message and, without waiting for its reply, a
    live one to online bob: program order makes the first causally precede
    the second, so bob must see the durable one first, although it is only
    pushed after its commit."""
    br = start_durable(broker, tmp_path / "data")
    bob = login_first(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for round_ in range(20):
        rid_d = dsend_env(alice, ["bob"], f"durable {round_}", f"m{round_}")
        rid_l = alice.send_env(alice.envelope(
            "send", pb.Send(to=["bob"], text=f"live {round_}")))
        replies = {alice.recv_reply().request_id, alice.recv_reply().request_id}
        assert replies == {rid_d, rid_l}
        a = bob.recv_body("deliver")
        b = bob.recv_body("deliver")
        assert (a.text, b.text) == (f"durable {round_}", f"live {round_}"), round_
        ack(bob, a.seq)


def test_pull_sessions_are_not_held(broker, hub, pb, tmp_path):
    """A pull session fetches stored messages itself; live ones reach it at
    once even while its queue is not empty."""
    br = start_durable(broker, tmp_path / "data")
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    assert_status(pb, dsend(alice, ["bob"], "stored", "m1"), "ACCEPTED")
    bob = login_first(hub, br.endpoint, "bob", pull=True)
    reply = alice.send_text(["bob"], "live")
    assert [r.status for r in reply.recipients] == [pb.STATUS_DELIVERED]
    d = bob.recv_body("deliver")
    assert (d.text, d.durable) == ("live", False)


def test_full_window_without_backlog_holds_nothing(broker, hub, pb, tmp_path):
    """bob's push window (2) is full of unacknowledged messages but nothing
    stored is left to push: live messages reach him at once, and the
    broker counts each delivery once."""
    br = start_durable(broker, tmp_path / "data", "--push-window", 2)
    bob = login_first(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(2):
        assert_status(pb, dsend(alice, ["bob"], f"d{i}", f"m{i}"), "ACCEPTED")
    assert [bob.recv_body("deliver").text for _ in range(2)] == ["d0", "d1"]
    for i in range(3):
        reply = alice.send_text(["bob"], f"live {i}")
        assert [r.status for r in reply.recipients] == [pb.STATUS_DELIVERED]
        d = bob.recv_body("deliver")
        assert (d.text, d.durable) == (f"live {i}", False)
    stats = alice.request("stats")
    assert stats.stats.deliveries == 5
