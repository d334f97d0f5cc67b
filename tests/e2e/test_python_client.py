"""The Python client package (clients/python, installed by the build into
$CW_BUILD_DIR/python and imported from there) against real brokers,
talking with C clients (libcauseway through the ``causeway`` CLI).

What is covered:
  - conversations in both directions: the module -> ``causeway listen
    --json``; ``causeway send`` -> the module; a multicast with one C and one
    Python recipient, answered by a C multicast to both Python users;
    broadcast; a durable message from the module to an offline C user;
  - session errors as CausewayError with the broker's status name
    (NAME_TAKEN, BAD_NAME, NOT_DURABLE, NOT_LOGGED_IN), local checks, who()
    and stats() without a session;
  - an idle client (blocked in next_event) is kept alive by the I/O thread's
    heartbeats; a duplicate live (from, message_id) is dropped;
  - durable delivery to a Python user that was offline: exactly once, also
    across broker restarts on the same --data directory (checked
    afterwards with ``causeway fetch``); a logged-in Python client that
    loses its broker (SIGKILL) notices by heartbeat silence, reconnects and
    logs in again by itself, drops the broker's redelivery, and a durable
    send made while the broker is down is retried and stored once;
  - clock agreement: Python and C clients (``causeway chat --json`` driven
    through a pipe, ``causeway listen --json``) exchange unicast, multicast
    and broadcast messages; every clock each side printed or computed equals
    the one a reference vector-clock model predicts; the trace files the
    Python clients wrote plus traces built from the C clients' JSON output
    pass ``causeway-clockd audit``; the events one client reported to a
    ``causeway-clockd serve`` daemon are the lines of its trace file;
  - clients/python/examples/example.py runs against a broker (with the
    installed package on PYTHONPATH).

Every wait is bounded (event timeouts, CLI line reads, process waits);
nothing sleeps to synchronise. The one timed wait (the idle test) measures
that nothing happens during it.
"""

import json
import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import (CLI_BIN, SOURCE_DIR, BUILD_DIR, PY_INSTALLED, ClockdDaemon, CliProc,
                      import_installed_causeway, run_cli)

EXAMPLE = os.path.join(SOURCE_DIR, "clients", "python", "examples", "example.py")
CLOCKD_BIN = os.path.join(BUILD_DIR, "clockd", "causeway-clockd")
EVENT_TIMEOUT = 10.0      # bound for one expected event at a Python client


@pytest.fixture(scope="session")
def cw(tmp_path_factory):
    """The causeway module, with its protoc output cached in a temporary
    directory for this session."""
    causeway = import_installed_causeway()
    return causeway


@pytest.fixture
def py(cw):
    """Factory: py(endpoint, name=None, **opts) -> a causeway.Client, closed at
    teardown."""
    made = []

    def make(endpoint, name=None, **opts):
        c = cw.Client(endpoint, name, **opts)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


class ChatProc(CliProc):
    """``causeway chat`` with a pipe on stdin (no terminal: plain lines)."""

    def __init__(self, args, hub):  # noqa: super().__init__ would use DEVNULL for stdin
        self.args = [CLI_BIN, "chat", *map(str, args)]
        self.hub = hub
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines = []
        self.unread = []
        self._buf = b""
        self._err = b""
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)

    def say(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def kill(self):
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
        super().kill()


@pytest.fixture
def chat(hub, request):
    """Factory: chat(*args) -> a running ChatProc; killed at teardown."""
    procs = []

    def start(*args):
        p = ChatProc(args, hub)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        for p in procs:
            print(p.describe())


@pytest.fixture
def clockd_daemon(tmp_path):
    if not os.access(CLOCKD_BIN, os.X_OK):
        pytest.fail(f"causeway-clockd not built: {CLOCKD_BIN}")
    started = []

    def start(db):
        d = ClockdDaemon(db, tmp_path / f"clockd{len(started)}.log")
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def clockd(*args):
    res = subprocess.run([CLOCKD_BIN, *map(str, args)], capture_output=True, text=True,
                         timeout=30)
    try:
        out = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"clockd {args}: not JSON (rc={res.returncode})\n"
                             f"{res.stdout}\n{res.stderr}")
    return res.returncode, out


def is_event(name):
    return lambda obj: obj.get("event") == name


def deliver_from(sender):
    return lambda o: o.get("event") == "deliver" and o.get("from") == sender


def next_kind(client, kind, timeout=EVENT_TIMEOUT, where=None):
    """The next event of that kind at a Python client (others are skipped),
    failing after timeout seconds."""
    deadline = time.monotonic() + timeout
    skipped = []
    while True:
        left = deadline - time.monotonic()
        ev = client.next_event(max(0.0, left)) if left > 0 else None
        if ev is None:
            raise AssertionError(f"{client.name}: no {kind} event within {timeout}s; "
                                 f"skipped {skipped}")
        if ev.kind == kind and (where is None or where(ev)):
            return ev
        skipped.append(ev)


def start_durable(broker, data, *extra):
    return broker("--data", str(data), *extra)


def cli_json(cli, command, *args, code=0, timeout=15.0):
    """Runs a CLI command with --json to completion; returns its JSON lines."""
    p = run_cli(cli, command, "--json", *args, timeout=timeout)
    assert p.proc.returncode == code, p.describe()
    return [json.loads(line) for line in p.lines if line.strip().startswith("{")]


def dsend(cli, endpoint, sender, to, text, *extra):
    out = cli_json(cli, "send", "--endpoint", endpoint, "--name", sender, "--to", to,
                   "--durable", *extra, text)
    sends = [o for o in out if o.get("event") == "send"]
    assert len(sends) == 1 and sends[0]["status"] == "ACCEPTED", out
    return sends[0]


def pending_at_broker(cli, endpoint, name):
    """What `causeway fetch --keep` lists as waiting for name."""
    out = cli_json(cli, "fetch", "--endpoint", endpoint, "--name", name, "--keep")
    return [o for o in out if o.get("event") == "message"]


# ---------------------------------------------------------------------------
# Conversations with C clients


def test_module_to_cli_listen(broker, cli, py):
    br = broker()
    listener = cli("listen", "--endpoint", br.endpoint, "--name", "carl", "--json",
                   "--count", 1, "--for", 15000)
    listener.read_json(is_event("login"), what="login line")
    alice = py(br.endpoint, "alice")
    assert alice.connected and alice.name == "alice"
    text = "hello from the module \u2713 \"quoted\"\nsecond line"
    result = alice.send("carl", text)
    assert (result.status, result.ok, result.duplicate) == ("OK", True, False)
    assert [(r.name, r.status, r.seq) for r in result.recipients] == [("carl", "DELIVERED", 0)]
    assert result.clock == {"alice": 1} == alice.clock
    assert result.message_id.startswith("alice-")
    got = listener.read_json(is_event("deliver"), what="delivery")
    assert (got["from"], got["to"], got["text"], got["broadcast"]) == ("alice", ["carl"], text,
                                                                      False)
    assert got["message_id"] == result.message_id
    assert got["clock"] == result.clock
    assert got["local_clock"] == {"alice": 1, "carl": 1}
    assert listener.wait() == 0, listener.describe()
    # The module saw carl leave (listen logs out after --count 1).
    p = next_kind(alice, "presence", where=lambda p: p.name == "carl")
    assert (p.online, p.reason) == (False, "logout")


def test_cli_send_to_module(broker, cli, py):
    br = broker()
    bob = py(br.endpoint, "bob")
    out = cli_json(cli, "send", "--endpoint", br.endpoint, "--name", "carol", "--to", "bob",
                   "hi", "bob")
    sent = [o for o in out if o["event"] == "send"][0]
    assert [(r["name"], r["status"]) for r in sent["recipients"]] == [("bob", "DELIVERED")]
    # The iterator gives presence and delivery events in arrival order.
    kinds = []
    for ev in bob.events(timeout=EVENT_TIMEOUT):
        kinds.append((ev.kind, getattr(ev, "name", None) or getattr(ev, "sender", None)))
        if ev.kind == "deliver":
            d = ev
            break
    else:
        raise AssertionError(f"no delivery; events {kinds}")
    assert kinds == [("presence", "carol"), ("deliver", "carol")]
    assert (d.sender, d.from_, d.to, d.text, d.broadcast, d.seq) == (
        "carol", "carol", ["bob"], "hi bob", False, 0)
    assert d.message_id == sent["message_id"]
    assert d.clock == sent["clock"] == {"carol": 1}
    assert d.local_clock == {"bob": 1, "carol": 1} == bob.clock
    p = next_kind(bob, "presence")
    assert (p.name, p.online, p.reason) == ("carol", False, "logout")


def test_multicast_mixed_recipients(broker, cli, py):
    """A Python multicast to a C and a Python user, then a C multicast to
    both Python users, then a Python broadcast."""
    br = broker()
    dave = cli("listen", "--endpoint", br.endpoint, "--name", "dave", "--json", "--for", 20000)
    dave.read_json(is_event("login"), what="login line")
    alice = py(br.endpoint, "alice", quiet=True)
    erin = py(br.endpoint, "erin", quiet=True)

    result = alice.send(["dave", "erin", "nobody"], "to dave and erin")
    assert [(r.name, r.status) for r in result.recipients] == [
        ("dave", "DELIVERED"), ("erin", "DELIVERED"), ("nobody", "UNKNOWN_USER")]
    assert not result.ok and result["erin"].ok and not result["nobody"].ok
    got = dave.read_json(deliver_from("alice"), what="alice's multicast")
    assert got["to"] == ["dave", "erin", "nobody"] and got["text"] == "to dave and erin"
    d = next_kind(erin, "deliver")
    assert (d.sender, d.to, d.message_id) == ("alice", ["dave", "erin", "nobody"],
                                              result.message_id)
    assert d.clock == got["clock"] == {"alice": 1}

    out = cli_json(cli, "send", "--endpoint", br.endpoint, "--name", "carol", "--to",
                   "alice,erin", "from C to both")
    sent = [o for o in out if o["event"] == "send"][0]
    assert [(r["name"], r["status"]) for r in sent["recipients"]] == [
        ("alice", "DELIVERED"), ("erin", "DELIVERED")]
    for c, expect in ((alice, {"alice": 2, "carol": 1}), (erin, {"alice": 1, "carol": 1,
                                                                 "erin": 2})):
        d = next_kind(c, "deliver")
        assert (d.sender, d.text, d.to) == ("carol", "from C to both", ["alice", "erin"])
        assert d.local_clock == expect

    result = erin.send(broadcast=True, text="everyone")
    assert [(r.name, r.status) for r in result.recipients] == [
        ("alice", "DELIVERED"), ("carol", "OFFLINE"), ("dave", "DELIVERED")]
    got = dave.read_json(deliver_from("erin"), what="erin's broadcast")
    assert (got["broadcast"], got["to"], got["text"]) == (True, [], "everyone")
    d = next_kind(alice, "deliver")
    assert (d.sender, d.broadcast, d.to) == ("erin", True, [])


def test_session_errors_and_requests_without_login(broker, cli, py, cw):
    br = broker()
    holder = cli("listen", "--endpoint", br.endpoint, "--name", "taken", "--json",
                 "--for", 15000)
    holder.read_json(is_event("login"), what="login line")
    c = py(br.endpoint)
    assert c.name is None and not c.connected
    # who and stats need no session.
    assert [(u.name, u.online) for u in c.who()] == [("taken", True)]
    assert c.stats().sessions == 1
    with pytest.raises(cw.CausewayError) as e:
        c.login("taken")
    assert e.value.status == "NAME_TAKEN" and not e.value.local and e.value.detail
    with pytest.raises(cw.CausewayError) as e:
        c.login("admin")
    assert e.value.status == "BAD_NAME"
    with pytest.raises(cw.CausewayError) as e:
        c.send("taken", "not logged in")
    assert e.value.status == "NOT_LOGGED_IN" and e.value.message_id
    # The constructor logs in and raises the same way.
    with pytest.raises(cw.CausewayError) as e:
        cw.Client(br.endpoint, name="taken")
    assert e.value.status == "NAME_TAKEN"

    info = c.login("fresh").info
    assert (info.heartbeat_ms, info.liveness, info.durable) == (200, 3, False)
    with pytest.raises(cw.CausewayError) as e:
        c.login("again")
    assert e.value.status == "ALREADY_LOGGED_IN"
    with pytest.raises(cw.CausewayError) as e:
        c.send("taken", "stored?", durable=True)
    assert e.value.status == "NOT_DURABLE"
    with pytest.raises(cw.CausewayError) as e:
        c.fetch()
    assert e.value.status == "NOT_DURABLE"
    # Limits checked before sending.
    with pytest.raises(cw.CausewayError) as e:
        c.send("taken", "x" * (info.max_text + 1))
    assert (e.value.status, e.value.local) == ("TOO_LARGE", True)
    with pytest.raises(cw.CausewayError) as e:
        c.send("taken", "x", message_id="m" * 129)
    assert (e.value.status, e.value.local) == ("BAD_REQUEST", True)
    with pytest.raises(ValueError):
        c.send(["taken"], "both", broadcast=True)
    with pytest.raises(ValueError):
        c.send([], "neither")
    # Still a working session; logout, then log in under another name.
    assert c.send("taken", "fine").ok
    holder.read_json(deliver_from("fresh"), what="delivery")
    c.logout()
    assert c.name is None
    c.login("fresh2")
    assert c.name == "fresh2"


def test_idle_client_stays_alive_and_drops_duplicate_live_ids(broker, hub, py):
    """An application blocked in next_event for several H x L periods keeps
    its session: the I/O thread sends the heartbeats. A raw client sending
    the same message id twice gets through once."""
    br = broker()   # H = 200 ms, L = 3: silent sessions expire after 600 ms
    bob = py(br.endpoint, "bob", quiet=True)
    t0 = time.monotonic()
    assert bob.next_event(2.0) is None
    assert time.monotonic() - t0 >= 2.0
    assert bob.connected
    stats = bob.stats()
    assert (stats.sessions, stats.expired_sessions) == (1, 0)

    raw = hub.logged_in(br.endpoint, "raw")
    for text in ("first", "first again", "second"):
        mid = "raw-1" if text != "second" else "raw-2"
        reply = raw.send_text(to=["bob"], text=text, message_id=mid, clock=[("raw", 1)])
        assert [r.status for r in reply.recipients] == [hub.pb.STATUS_DELIVERED]
    d1 = next_kind(bob, "deliver")
    d2 = next_kind(bob, "deliver")
    assert [(d1.text, d1.message_id), (d2.text, d2.message_id)] == [("first", "raw-1"),
                                                                    ("second", "raw-2")]
    # The dropped duplicate did not tick the clock either.
    assert d2.local_clock == {"bob": 2, "raw": 1} == bob.clock
    assert bob.next_event(0) is None


# ---------------------------------------------------------------------------
# Durable mode


def test_durable_offline_module_user_gets_messages_once(broker, cli, py, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    c = py(br.endpoint, "bob")
    assert c.login_info.durable
    c.logout()   # bob is a known user now, offline
    first = dsend(cli, br.endpoint, "carol", "bob", "one")
    second = dsend(cli, br.endpoint, "carol", "bob", "two")
    assert (first["recipients"][0]["seq"], second["recipients"][0]["seq"]) == (1, 2)

    c.login("bob")
    got = [next_kind(c, "deliver"), next_kind(c, "deliver")]
    assert [(d.text, d.seq, d.durable, d.sender) for d in got] == [
        ("one", 1, True, "carol"), ("two", 2, True, "carol")]
    assert [d.message_id for d in got] == [first["message_id"], second["message_id"]]
    # carol's second run went on from her first (resume clock, PROTOCOL.md 11.4).
    assert [d.clock for d in got] == [{"carol": 1}, {"carol": 2}]
    assert got[1].local_clock == {"bob": 2, "carol": 2}
    # history lists them (acknowledged or not); fetch leaves out what was
    # handed out already.
    assert [m.text for m in c.history()] == ["one", "two"]
    assert c.fetch() == []
    c.logout()   # auto_ack: acknowledged (and committed) before the logout
    assert pending_at_broker(cli, br.endpoint, "bob") == []

    # A durable send from the module to an offline C user, received by
    # causeway listen once.
    c.login("alice")
    r = c.send("carl", "unknown yet", durable=True)
    assert [(x.name, x.status) for x in r.recipients] == [("carl", "UNKNOWN_USER")]
    assert r.status == "OK"
    cli_json(cli, "fetch", "--endpoint", br.endpoint, "--name", "carl")   # carl is known now
    r = c.send("carl", "for carl", durable=True, message_id="alice-for-carl-1")
    assert (r.status, r["carl"].status, r["carl"].seq) == ("ACCEPTED", "ACCEPTED", 1)
    again = c.send("carl", "for carl", durable=True, message_id="alice-for-carl-1")
    assert (again.status, again.duplicate, again["carl"].seq) == ("ACCEPTED", True, 1)
    out = cli_json(cli, "listen", "--endpoint", br.endpoint, "--name", "carl", "--count", 1,
                   "--for", 10000)
    got = [o for o in out if o["event"] == "deliver"]
    assert [(o["from"], o["text"], o["seq"], o["message_id"]) for o in got] == [
        ("alice", "for carl", 1, "alice-for-carl-1")]


def test_durable_to_offline_module_user_across_restarts(broker, cli, py, tmp_path):
    data = tmp_path / "data"
    br = start_durable(broker, data)
    py(br.endpoint, "bob").close()   # logs in, then out: a known user
    dsend(cli, br.endpoint, "carol", "bob", "before the kill", "--id", "c-1")
    br.kill()   # SIGKILL after the ACCEPTED
    br2 = start_durable(broker, data)
    second = dsend(cli, br2.endpoint, "carol", "bob", "after the restart")
    assert second["recipients"][0]["seq"] == 2

    bob = py(br2.endpoint, "bob")
    got = [next_kind(bob, "deliver"), next_kind(bob, "deliver")]
    assert [(d.text, d.seq, d.message_id) for d in got] == [
        ("before the kill", 1, "c-1"), ("after the restart", 2, second["message_id"])]
    bob.close()   # logs out, acknowledging both first
    br2.terminate()
    br3 = start_durable(broker, data)
    assert pending_at_broker(cli, br3.endpoint, "bob") == []
    bob = py(br3.endpoint, "bob")
    assert bob.fetch() == []
    assert [m.text for m in bob.history()] == ["before the kill", "after the restart"]


def test_module_reconnects_after_broker_kill(broker, cli, py, cw, tmp_path, caplog):
    """A logged-in Python client whose broker is SIGKILLed and restarted on
    the same port and data directory: it notices by heartbeat silence,
    reconnects and logs in again with its token; the broker pushes the not
    yet acknowledged m1 again after the login and the module drops it; a
    durable send made while the broker is down is retried (same id) and
    stored once."""
    caplog.set_level(logging.DEBUG, logger="causeway")
    data = tmp_path / "data"
    br = start_durable(broker, data)
    port = br.port
    bob = py(br.endpoint, "bob", quiet=True)
    alice = py(br.endpoint, "alice", quiet=True)
    dsend(cli, br.endpoint, "carol", "bob", "m1")
    m1 = next_kind(bob, "deliver")
    br.kill()   # before the batched Ack (200 ms after the hand-over) can go out

    # A durable send while the broker is gone: retried until it is stored.
    outcome = {}

    def send_during_outage():
        try:
            outcome["result"] = alice.send("bob", "during the outage", durable=True,
                                           timeout=30.0)
        except Exception as e:  # noqa: BLE001 - reported to the test thread
            outcome["error"] = e

    sender = threading.Thread(target=send_during_outage)
    sender.start()
    lost = next_kind(bob, "disconnected")
    assert "no frame from the broker" in lost.detail
    assert not bob.connected and bob.name == "bob"
    with pytest.raises(cw.ConnectionLost) as e:     # live requests fail at once while lost
        bob.send("alice", "live, while lost")
    assert e.value.status == "DISCONNECTED"

    br2 = start_durable(broker, data, "--bind", f"tcp://127.0.0.1:{port}")
    assert br2.port == port
    back = next_kind(bob, "reconnected", timeout=20.0)
    assert back.resumed is False   # a new broker: a new session, same name
    assert bob.connected
    sender.join(timeout=35.0)
    assert not sender.is_alive()
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert (result.status, result["bob"].status) == ("ACCEPTED", "ACCEPTED")
    assert result.duplicate is False

    dsend(cli, br2.endpoint, "carol", "bob", "m3")
    got = [m1]
    while len(got) < 3:
        got.append(next_kind(bob, "deliver"))
    assert [(d.text, d.seq) for d in got] == [("m1", 1), ("during the outage", 2), ("m3", 3)]
    # m1 did come again after the login (it was never acknowledged) and was dropped.
    assert any("dropping seq 1 from carol" in r.getMessage() for r in caplog.records)
    assert got[1].message_id == result.message_id
    assert bob.send("alice", "live after the restart").ok
    bob.close()
    # Everything acknowledged; the retried send was stored once (seq 2).
    assert pending_at_broker(cli, br2.endpoint, "bob") == []


# ---------------------------------------------------------------------------
# Clock agreement and causeway-clockd


class ClockModel:
    """Reference vector clocks: tick before a send, merge then tick on a
    delivery."""

    def __init__(self):
        self.clocks = {}

    def send(self, who):
        c = self.clocks.setdefault(who, {})
        c[who] = c.get(who, 0) + 1
        return dict(c)

    def deliver(self, who, stamp):
        c = self.clocks.setdefault(who, {})
        for k, v in stamp.items():
            c[k] = max(c.get(k, 0), v)
        c[who] = c.get(who, 0) + 1
        return dict(c)


def c_trace(process, lines, broadcasts=()):
    """Trace events (docs/CLOCKD.md) for a C client, from its --json output:
    its sends (event "send", with the clock stamped) and deliveries (event
    "deliver", with the message clock and local_clock), in clock order."""
    events = []
    for o in lines:
        if o.get("event") == "send":
            ev = {"process": process, "kind": "send", "clock": o["clock"],
                  "msg": f"{process}:{o['message_id']}"}
            if o["message_id"] in broadcasts:
                ev["broadcast"] = True
            else:
                ev["peers"] = [r["name"] for r in o["recipients"]]
            events.append(ev)
        elif o.get("event") == "deliver":
            events.append({"process": process, "kind": "deliver", "clock": o["local_clock"],
                           "msg": f"{o['from']}:{o['message_id']}", "peers": [o["from"]],
                           "msg_clock": o["clock"]})
    return sorted(events, key=lambda e: e["clock"][process])


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_clock_agreement_and_clockd_audit(broker, cli, chat, py, clockd_daemon, tmp_path):
    br = broker()
    daemon = clockd_daemon(tmp_path / "clockd.db")
    dave = cli("listen", "--endpoint", br.endpoint, "--name", "dave", "--json", "--for", 60000)
    dave.read_json(is_event("login"), what="dave's login")
    carol = chat("--endpoint", br.endpoint, "--name", "carol", "--json")
    carol.read_json(is_event("login"), what="carol's login")
    alice = py(br.endpoint, "alice", quiet=True, trace=str(tmp_path / "alice.jsonl"),
               clockd=daemon.endpoint)
    bob = py(br.endpoint, "bob", quiet=True, trace=str(tmp_path / "bob.jsonl"))
    model = ClockModel()
    c_out = {"carol": [], "dave": []}
    broadcasts = set()

    def c_deliver(proc, name, sender, stamp):
        got = proc.read_json(deliver_from(sender), what=f"{name}'s delivery from {sender}")
        c_out[name].append(got)
        assert got["clock"] == stamp, got          # the sender's clock, verbatim
        assert got["local_clock"] == model.deliver(name, stamp), got
        return got

    def py_deliver(client, sender, stamp, text):
        d = next_kind(client, "deliver")
        assert (d.sender, d.text) == (sender, text)
        assert d.clock == stamp
        assert d.local_clock == model.deliver(client.name, stamp) == client.clock
        return d

    def carol_sends(line, text, recipients):
        carol.say(line)
        sent = carol.read_json(is_event("send"), what="carol's send result")
        c_out["carol"].append(sent)
        assert sent["status"] == "OK" and [r["status"] for r in sent["recipients"]] == [
            "DELIVERED"] * len(recipients), sent
        assert [r["name"] for r in sent["recipients"]] == recipients
        assert sent["clock"] == model.send("carol")
        return sent

    # 1. Python multicast to C (chat, listen) and Python.
    r = alice.send(["carol", "dave", "bob"], "m1")
    assert r.ok and r.clock == model.send("alice") == {"alice": 1}
    c_deliver(carol, "carol", "alice", r.clock)
    c_deliver(dave, "dave", "alice", r.clock)
    py_deliver(bob, "alice", r.clock, "m1")

    # 2. C multicast to both Python clients.
    sent = carol_sends("/to alice,bob reply from carol", "reply from carol", ["alice", "bob"])
    py_deliver(alice, "carol", sent["clock"], "reply from carol")
    py_deliver(bob, "carol", sent["clock"], "reply from carol")

    # 3. Python broadcast: every known user but bob (C and Python).
    r = bob.send(broadcast=True, text="bob to all")
    assert [x.name for x in r.recipients] == ["alice", "carol", "dave"] and r.ok
    assert r.clock == model.send("bob") == {"alice": 1, "bob": 3, "carol": 2}
    py_deliver(alice, "bob", r.clock, "bob to all")
    c_deliver(carol, "carol", "bob", r.clock)
    c_deliver(dave, "dave", "bob", r.clock)

    # 4. C broadcast (a plain chat line).
    sent = carol_sends("carol to all", "carol to all", ["alice", "bob", "dave"])
    broadcasts.add(sent["message_id"])
    py_deliver(alice, "carol", sent["clock"], "carol to all")
    py_deliver(bob, "carol", sent["clock"], "carol to all")
    c_deliver(dave, "dave", "carol", sent["clock"])

    # 5. Python unicasts to C, one each way round.
    r = alice.send("dave", "last for dave")
    assert r.clock == model.send("alice")
    c_deliver(dave, "dave", "alice", r.clock)
    r = bob.send("carol", "last for carol")
    assert r.clock == model.send("bob")
    c_deliver(carol, "carol", "bob", r.clock)

    # Both sides agree on the final clocks.
    assert alice.clock == model.clocks["alice"] == {"alice": 5, "bob": 3, "carol": 4}
    assert bob.clock == model.clocks["bob"]
    assert c_out["dave"][-1]["local_clock"] == model.clocks["dave"]
    assert c_out["carol"][-1]["local_clock"] == model.clocks["carol"]

    # The traces: the Python clients' files, the C clients' built from their
    # JSON output; together they pass the audit.
    alice.flush_trace()
    py_events = {n: read_jsonl(tmp_path / f"{n}.jsonl") for n in ("alice", "bob")}
    for name, events in py_events.items():
        assert [e["clock"][name] for e in events] == list(range(1, len(events) + 1))
        assert events[-1]["clock"] == model.clocks[name]
    assert [(e["kind"], e.get("peers"), e.get("broadcast")) for e in py_events["bob"]] == [
        ("deliver", ["alice"], None), ("deliver", ["carol"], None), ("send", None, True),
        ("deliver", ["carol"], None), ("send", ["carol"], None)]
    combined = tmp_path / "combined.jsonl"
    with open(combined, "w") as f:
        for events in (py_events["alice"], py_events["bob"],
                       c_trace("carol", c_out["carol"], broadcasts),
                       c_trace("dave", c_out["dave"])):
            for e in events:
                f.write(json.dumps(e) + "\n")
    rc, audit = clockd("audit", combined, "--json")
    assert rc == 0 and audit["count"] == 0, audit
    assert (audit["events"], audit["processes"]) == (19, 4), audit
    rc, cmp = clockd("compare", combined, "alice:1", "dave:4", "--json")
    assert rc == 0 and cmp["order"] == "before", cmp

    # What alice reported to the daemon is her trace file, event for event.
    rc, stored = clockd("events", "--db", tmp_path / "clockd.db", "--json")
    assert rc == 0 and stored["count"] == len(py_events["alice"]), stored
    for got, want in zip(stored["events"], py_events["alice"]):
        for key, value in want.items():
            assert got[key] == value, (key, got, want)


def test_refused_send_is_a_local_event_in_the_trace(broker, py, cw, tmp_path):
    """A send the broker refuses as a whole (NOT_DURABLE here) still ticked
    the clock, as in libcauseway; the trace records it as a local event, so
    the audit sees neither a gap nor a broken clock."""
    br = broker()
    alice = py(br.endpoint, "alice", quiet=True, trace=str(tmp_path / "alice.jsonl"))
    bob = py(br.endpoint, "bob", quiet=True, trace=str(tmp_path / "bob.jsonl"))
    assert alice.send("bob", "one").ok
    with pytest.raises(cw.CausewayError) as e:
        alice.send("bob", "two", durable=True)
    assert e.value.status == "NOT_DURABLE"
    assert alice.clock == {"alice": 2}
    r = alice.send("bob", "three")
    assert r.clock == {"alice": 3}
    assert [next_kind(bob, "deliver").text for _ in range(2)] == ["one", "three"]
    alice.close()
    bob.close()
    events = read_jsonl(tmp_path / "alice.jsonl")
    assert [e["kind"] for e in events] == ["send", "local", "send"]
    assert "NOT_DURABLE" in events[1]["text"]
    combined = tmp_path / "combined.jsonl"
    combined.write_text((tmp_path / "alice.jsonl").read_text()
                        + (tmp_path / "bob.jsonl").read_text())
    rc, audit = clockd("audit", combined, "--json")
    assert rc == 0 and audit["count"] == 0, audit


# ---------------------------------------------------------------------------
# The example script


def test_example_script(broker, cw):
    br = broker()
    env = dict(os.environ, CAUSEWAY_ENDPOINT=br.endpoint, PYTHONPATH=PY_INSTALLED)
    res = subprocess.run([sys.executable, EXAMPLE],
                         capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "bob got 'hello bob' from example-alice" in res.stdout
    assert "alice got 'hi alice, got it'" in res.stdout


def test_who_pages_are_joined(broker, cli, py, hub):
    """A broker sending the user log in pages of 2 (--page-users): the
    Python client's who() and the C CLI's `who` both return all of it."""
    br = broker("--page-users", 2)
    names = [f"pg{i}" for i in range(5)]
    for n in names:
        hub.logged_in(br.endpoint, n, quiet=True)
    c = py(br.endpoint)
    assert [u.name for u in c.who()] == names
    p = run_cli(cli, "who", "--endpoint", br.endpoint, "--json")
    assert p.proc.returncode == 0, p.stderr()
    assert [u["name"] for u in json.loads(p.lines[0])["users"]] == names


def test_read_receipts(broker, py, cw, tmp_path):
    """clients/python: send(receipt=True) and Client(receipts=True) ask; the
    reader's acknowledgement (auto_ack, once handled) comes back as a
    Receipt event, also to a sender that was offline meanwhile; fetch()
    lists a waiting receipt as a Deliver with .receipt (PROTOCOL.md 13.12)."""
    br = broker("--data", str(tmp_path / "data"))
    alice = py(br.endpoint, "alice")
    bob = py(br.endpoint, "bob")
    with pytest.raises(ValueError):
        alice.send("bob", "x", receipt=True)           # receipt needs durable
    r = alice.send("bob", "please read", durable=True, receipt=True)
    d = bob.next_event(EVENT_TIMEOUT)
    while d is not None and d.kind != "deliver":
        d = bob.next_event(EVENT_TIMEOUT)
    assert d.receipt_requested and d.message_id == r.message_id
    bob.ack_flush()                                     # handled: acknowledged
    ev = alice.next_event(EVENT_TIMEOUT)
    while ev is not None and ev.kind != "receipt":
        ev = alice.next_event(EVENT_TIMEOUT)
    assert ev is not None, "no receipt"
    assert isinstance(ev, cw.Receipt)
    assert ev.reader == "bob" and ev.message_id == r.message_id and ev.read_us > 0
    assert ev.message_seq == d.seq and ev.seq >= 1
    alice.ack_flush()
    # Session-wide receipts; the sender is offline when the reader reads.
    alice.close()
    carol = py(br.endpoint, "carol", receipts=True)
    r2 = carol.send("bob", "for later", durable=True)
    carol.close()
    d = bob.next_event(EVENT_TIMEOUT)
    while d is not None and not (d.kind == "deliver" and d.text == "for later"):
        d = bob.next_event(EVENT_TIMEOUT)
    assert d.receipt_requested
    bob.ack_flush()
    puller = py(br.endpoint, "carol", pull=True, auto_ack=False)
    listed = puller.fetch()
    rcpt = [m for m in listed if m.receipt is not None]
    assert len(rcpt) == 1 and rcpt[0].receipt.message_id == r2.message_id
    assert rcpt[0].receipt.reader == "bob" and rcpt[0].text == ""
