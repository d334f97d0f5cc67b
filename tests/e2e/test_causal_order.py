"""Causal order at one broker across the two modes (PROTOCOL.md §10.6,
docs/CAUSALITY.md): a live message never overtakes a stored message that
may causally precede it, because the broker holds live Delivers back while
stored ones for the same recipient are pending (catching up after login,
or an append naming it awaits its commit)."""

import json
import subprocess
import threading

import pytest
import zmq

from conftest import CLOCKD_BIN, assert_status
from test_durable import ack, dsend, dsend_env, login_first, register, start_durable
from test_python_client import cw, next_kind, py  # noqa: F401 - fixtures


def kind(d):
    return "durable" if d.durable else "live"


def catching_up_bob(broker, hub, pb, tmp_path):
    """A broker with a push window of 2; alice stores d0..d4 for bob while
    he is away, then bob logs in and is catching up. Returns (alice, bob)."""
    br = start_durable(broker, tmp_path / "data", "--push-window", 2)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i in range(5):
        assert_status(pb, dsend(alice, ["bob"], f"d{i}", f"m{i}"), "ACCEPTED")
    return alice, login_first(hub, br.endpoint, "bob")


def test_live_waits_for_durable_backlog(broker, hub, pb, tmp_path):
    """bob logs in with 5 stored messages and a push window of 2; a live
    message sent after them waits until every stored one was pushed."""
    alice, bob = catching_up_bob(broker, hub, pb, tmp_path)
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


def test_held_live_message_goes_before_later_stored_ones(broker, hub, pb, tmp_path):
    """bob is catching up (5 stored, push window 2) when alice sends him a
    live message and then, after its reply, a durable one: the live one was
    read first, so it may causally precede the durable one and must reach
    bob before it, although both wait behind the backlog. (Found by
    causeway-sim's mixed scenario: the held live message used to go out
    only once nothing at all was pending for bob.)"""
    alice, bob = catching_up_bob(broker, hub, pb, tmp_path)
    got = [bob.recv_body("deliver"), bob.recv_body("deliver")]
    reply = alice.send_text(["bob"], "live")
    assert [r.status for r in reply.recipients] == [pb.STATUS_DELIVERED]
    assert_status(pb, dsend(alice, ["bob"], "after live", "m5"), "ACCEPTED")
    while len(got) < 7:
        if got[-1].durable:
            ack(bob, got[-1].seq)
        got.append(bob.recv_body("deliver"))
    assert [d.text for d in got] == ["d0", "d1", "d2", "d3", "d4", "live", "after live"]


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


# --- the client's hold-back (PROTOCOL.md 13.10) -------------------------------

class ReorderProxy:
    """A relay between one client and the broker that can permute frames,
    as a redelivery, a reconnection or a relay between brokers could: the
    client connects to a ROUTER, the proxy talks to the broker on a DEALER.
    Client frames pass at once; after reverse_next(n), the next n Deliver
    frames from the broker are collected and passed on in reverse order.
    Runs in a thread until close()."""

    def __init__(self, pb, broker_endpoint):
        self.pb = pb
        self.ctx = zmq.Context.instance()
        self.front = self.ctx.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        port = self.front.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.back = self.ctx.socket(zmq.DEALER)
        self.back.setsockopt(zmq.LINGER, 0)
        self.back.connect(broker_endpoint)
        self.lock = threading.Lock()
        self.to_reverse = 0
        self.collected = []
        self.reversed_batches = 0
        self.peer = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def reverse_next(self, n):
        with self.lock:
            self.to_reverse = n

    def _is_deliver(self, frame):
        env = self.pb.Envelope()
        env.ParseFromString(frame)
        return env.WhichOneof("body") == "deliver"

    def _run(self):
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        while not self.stop.is_set():
            for sock, _ in poller.poll(50):
                if sock is self.front:
                    peer, frame = self.front.recv_multipart()
                    self.peer = peer
                    self.back.send(frame)
                    continue
                frame = self.back.recv()
                if self.peer is None:
                    continue
                with self.lock:
                    if self.to_reverse and self._is_deliver(frame):
                        self.collected.append(frame)
                        if len(self.collected) < self.to_reverse:
                            continue
                        out, self.collected, self.to_reverse = self.collected[::-1], [], 0
                        self.reversed_batches += 1
                    else:
                        out = [frame]
                for f in out:
                    self.front.send_multipart([self.peer, f])

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.front.close()
        self.back.close()


@pytest.fixture
def reorder_proxy(pb):
    made = []

    def make(endpoint):
        p = ReorderProxy(pb, endpoint)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_module_holds_back_permuted_deliveries(broker, pb, cw, py, reorder_proxy, tmp_path):
    """Stored messages arriving 3, 2, 1 are shown 1, 2, 3; a live message
    overtaking the stored one it follows waits for it. The hold-back times
    reach the trace, and clockd's audit of the conversation is clean."""
    br = start_durable(broker, tmp_path / "data")
    proxy = reorder_proxy(br.endpoint)
    trace = tmp_path / "trace.jsonl"
    bob = py(proxy.endpoint, "bob", trace=str(trace))
    alice = py(br.endpoint, "alice", trace=str(trace))

    proxy.reverse_next(3)
    for i in range(1, 4):
        assert alice.send("bob", f"d{i}", durable=True).status == "ACCEPTED"
    got = [next_kind(bob, "deliver") for _ in range(3)]
    assert [(d.text, d.seq) for d in got] == [("d1", 1), ("d2", 2), ("d3", 3)]
    assert got[0].holdback_us == 0 and got[1].holdback_us > 0 and got[2].holdback_us > 0
    assert not any(d.gap for d in got)

    proxy.reverse_next(2)
    assert alice.send("bob", "d4", durable=True).status == "ACCEPTED"
    assert alice.send("bob", "live after d4").status == "OK"
    got = [next_kind(bob, "deliver") for _ in range(2)]
    assert [(d.text, d.seq) for d in got] == [("d4", 4), ("live after d4", 0)]
    assert got[0].holdback_us == 0 and got[1].holdback_us > 0 and not got[1].gap
    assert proxy.reversed_batches == 2
    bob.close()
    alice.close()

    audit = subprocess.run([CLOCKD_BIN, "audit", str(trace), "--json"], capture_output=True,
                           text=True, timeout=30)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    stats = subprocess.run([CLOCKD_BIN, "stats", str(trace), "--json"], capture_output=True,
                           text=True, timeout=30)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["holdback_us"]["count"] == 3


def test_cli_holds_back_permuted_deliveries(broker, pb, cw, py, cli, reorder_proxy, tmp_path):
    """The same through libcauseway: `causeway listen --json` behind the
    permuting relay prints the stored messages in seq order and the live
    one after the stored one it follows, with their hold-back times."""
    br = start_durable(broker, tmp_path / "data")
    proxy = reorder_proxy(br.endpoint)
    listener = cli("listen", "--endpoint", proxy.endpoint, "--name", "bob", "--json",
                   "--count", 5, "--for", 20000)
    listener.read_json(lambda o: o.get("event") == "login", what="login line")
    alice = py(br.endpoint, "alice")
    proxy.reverse_next(3)
    for i in range(1, 4):
        assert alice.send("bob", f"d{i}", durable=True).status == "ACCEPTED"
    got = [listener.read_json(lambda o: o.get("event") == "deliver", what="delivery")
           for _ in range(3)]
    assert [(d["text"], d["seq"]) for d in got] == [("d1", 1), ("d2", 2), ("d3", 3)]
    assert "holdback_us" not in got[0]
    assert got[1]["holdback_us"] > 0 and got[2]["holdback_us"] > 0
    assert not got[1]["gap"] and not got[2]["gap"]
    proxy.reverse_next(2)
    assert alice.send("bob", "d4", durable=True).status == "ACCEPTED"
    assert alice.send("bob", "live after d4").status == "OK"
    got = [listener.read_json(lambda o: o.get("event") == "deliver", what="delivery")
           for _ in range(2)]
    assert [(d["text"], d["seq"]) for d in got] == [("d4", 4), ("live after d4", 0)]
    assert got[1]["holdback_us"] > 0 and got[1]["gap"] is False
    assert listener.wait() == 0, listener.describe()
