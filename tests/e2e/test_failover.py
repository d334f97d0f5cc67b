"""Client failover between brokers on one real Redis Cluster
(tests/e2e/scaleout/rediscluster.py: six redis-server processes on free
loopback ports, started and stopped by this test by PID), with clients
given a comma-separated endpoint list (PROTOCOL.md §13.14).

What is checked, end to end, with real processes:
  - libcauseway (tests/e2e/failover_probe.c) and the C CLI (causeway
    listen): the broker both clients are on is SIGKILLed under durable
    load; they fail over to the other broker, resume the session, the
    receiver is shown every message exactly once (no id twice, seqs
    strictly increasing), and every send of the sender is answered exactly
    once with ACCEPTED (a retried send that had landed answered with
    duplicate = true and its original seq, so no seq is given to two
    sends); the CLI prints one "reconnected to ..." line;
  - the same with the Python client (threaded and asyncio);
  - SIGSTOP of the broker: the clients fail over on heartbeat loss;
  - a client with one endpoint behaves as before: it stays on its
    endpoint, its events carry no failover endpoint, and it resumes when
    a broker is back there;
  - late marks: a raw protocol client that sends with an old clock makes
    a delivery late; the receiver's trace carries "late":true and
    causeway-clockd audit counts it.

Every wait is bounded and waits for the line, reply or event it expects.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "scaleout"))

from conftest import BUILD_DIR, CLI_BIN, CLOCKD_BIN, assert_status  # noqa: E402
from rediscluster import cluster  # noqa: E402,F401 (pytest fixture)

PROBE_BIN = os.path.join(BUILD_DIR, "tests", "e2e", "failover_probe")
LEASE_S = 1.0                 # brokers' default lease period (expires after 3)
BOUND = 30.0                  # bound for what a failover may take, with margin



@pytest.fixture
def brokers(cluster, broker):
    def start(n=2, *extra):
        return [broker("--store", f"redis://{cluster.seeds}", *extra) for _ in range(n)]
    return start


class Proc:
    """A child printing JSON lines (failover_probe, causeway --json);
    lines are read by a thread into a queue; killed by PID at the end."""

    def __init__(self, args, env=None):
        self.args = args
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.lines = queue.Queue()
        self.seen = []
        self.err = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                self.lines.put({"text": line})
        self.lines.put(None)

    def _read_err(self):
        for raw in iter(self.proc.stderr.readline, b""):
            self.err.append(raw.decode(errors="replace"))

    def next(self, predicate, timeout, what):
        """The next line matching predicate (others are kept in seen)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; "
                                     f"seen {self.seen[-10:]}; stderr {''.join(self.err)[-3000:]}")
            try:
                obj = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if obj is None:
                raise AssertionError(f"{self.args[0]} exited (rc={self.proc.wait()}) before "
                                     f"{what}; seen {self.seen[-10:]}; "
                                     f"stderr {''.join(self.err)[-3000:]}")
            self.seen.append(obj)
            if predicate(obj):
                return obj

    def wait(self, timeout):
        """Waits for the exit; every line it printed is then in seen."""
        rc = self.proc.wait(timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                obj = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.args[0]}: stdout not closed after its exit")
            if obj is None:
                self.lines.put(None)   # later waits end at once too
                return rc
            self.seen.append(obj)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture
def procs():
    started = []

    def start(*args, env=None):
        p = Proc([str(a) for a in args], env=env)
        started.append(p)
        return p
    yield start
    for p in started:
        p.kill()
        # Shown by pytest when the test failed.
        print(f"----- {' '.join(p.args)} rc={p.proc.returncode} -----")
        print("".join(p.err)[-20000:])


def probe(procs, *args):
    assert os.access(PROBE_BIN, os.X_OK), f"not built: {PROBE_BIN}"
    return procs(PROBE_BIN, *args)


def check_sender(lines, count):
    """Every send answered exactly once, ACCEPTED, distinct seqs."""
    sends = [o for o in lines if "send" in o]
    assert [o["send"] for o in sends] == list(range(count)), sends
    assert all(o["status"] == "ACCEPTED" for o in sends), [o for o in sends
                                                            if o["status"] != "ACCEPTED"]
    seqs = [o["seq"] for o in sends]
    assert len(set(seqs)) == count and seqs == sorted(seqs), seqs
    return sends


def check_receiver(lines, ids):
    """Every id shown exactly once, seqs strictly increasing."""
    got = [o for o in lines if "deliver" in o]
    shown = [o["deliver"] for o in got]
    assert sorted(shown) == sorted(ids), (
        f"missing {sorted(set(ids) - set(shown))}, "
        f"twice {sorted(i for i in set(shown) if shown.count(i) > 1)}")
    seqs = [o["seq"] for o in got]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), seqs
    return got


def failover_of(p, old, new):
    """The probe's disconnected event (from old) and reconnected (to new)."""
    d = p.next(lambda o: o.get("event") == "disconnected", BOUND, "a disconnected event")
    assert d["endpoint"] == old, d
    r = p.next(lambda o: o.get("event") == "reconnected", BOUND, "a reconnected event")
    assert r["endpoint"] == new and r["switched"] is True, r
    assert r["detail"].startswith(f"reconnected to {new} ("), r
    return r


COUNT = 60


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_libcauseway_fails_over_under_durable_load(brokers, procs, how):
    a, b = brokers(2)
    eps = f"{a.endpoint},{b.endpoint}"
    bob = probe(procs, "recv", eps, "bob", COUNT, 60000)
    assert bob.next(lambda o: "login" in o, BOUND, "bob's login")["endpoint"] == a.endpoint
    alice = probe(procs, "send", eps, "alice", "bob", COUNT, 60000)
    assert alice.next(lambda o: "login" in o, BOUND, "alice's login")["endpoint"] == a.endpoint
    # Under load: bob has been shown some, alice is still sending.
    bob.next(lambda o: o.get("deliver") == "alice-9", BOUND, "the tenth delivery")
    t_signal_us = time.time_ns() // 1000
    if how == "kill":
        a.kill()
    else:
        a.proc.send_signal(signal.SIGSTOP)
    try:
        for p in (alice, bob):
            r = failover_of(p, a.endpoint, b.endpoint)
            # A figure for people (docs/OPERATIONS.md), never asserted.
            print(f"failover after SIG{how.upper()}: {p.args[1]} logged in on B "
                  f"{(r['ts_us'] - t_signal_us) / 1000:.0f} ms after the signal")
            # A SIGKILLed broker's session is resumed with the token: the
            # client is on B at once, long before A's lease (3 x 1 s) can
            # expire, so B takes the claim over. A stopped one's is found
            # lost only after heartbeat silence, by when its lease may have
            # expired and B opens a new session: either is right there.
            if how == "kill":
                assert r["resumed"] is True, r
        alice.next(lambda o: "done" in o, BOUND * 2, "the sender's end")
        bob.next(lambda o: "done" in o, BOUND * 2, "the receiver's end")
        check_sender(alice.seen, COUNT)
        check_receiver(bob.seen, [f"alice-{i}" for i in range(COUNT)])
        assert alice.wait(10) == 0 and bob.wait(10) == 0
        assert sum(1 for o in alice.seen + bob.seen if o.get("event") == "reconnected") == 2
    finally:
        if how == "stop":
            a.proc.send_signal(signal.SIGCONT)


def test_cli_listen_fails_over_and_says_so(brokers, procs):
    a, b = brokers(2)
    eps = f"{a.endpoint},{b.endpoint}"
    bob = procs(CLI_BIN, "--json", "--endpoint", eps, "listen", "--name", "bob",
                "--count", COUNT)
    bob.next(lambda o: o.get("event") == "login", BOUND, "the CLI's login")
    alice = probe(procs, "send", eps, "alice", "bob", COUNT, 60000)
    bob.next(lambda o: o.get("event") == "deliver" and o.get("message_id") == "alice-9", BOUND,
             "the tenth delivery")
    a.kill()
    d = bob.next(lambda o: o.get("event") == "disconnected", BOUND, "disconnected")
    assert d["endpoint"] == a.endpoint, d
    r = bob.next(lambda o: o.get("event") == "reconnected", BOUND, "reconnected")
    assert r["endpoint"] == b.endpoint and r["switched"] is True, r
    alice.next(lambda o: "done" in o, BOUND * 2, "the sender's end")
    assert bob.wait(BOUND * 2) == 0, "".join(bob.err)
    check_sender(alice.seen, COUNT)
    shown = [o["message_id"] for o in bob.seen if o.get("event") == "deliver"]
    assert sorted(shown) == sorted(f"alice-{i}" for i in range(COUNT)), shown


def test_cli_human_output_prints_one_reconnected_line(brokers, procs):
    a, b = brokers(2)
    eps = f"{a.endpoint},{b.endpoint}"
    bob = procs(CLI_BIN, "--endpoint", eps, "listen", "--name", "bob", "--count", 2)
    first = probe(procs, "send", a.endpoint, "alice", "bob", 1, 10000)
    bob.next(lambda o: "alice -> you: m0" in o.get("text", ""), BOUND, "the first message")
    first.next(lambda o: "done" in o, BOUND, "the first send")
    a.kill()
    line = bob.next(lambda o: "reconnected" in o.get("text", ""), BOUND, "the reconnected line")
    assert line["text"] in (f"* reconnected to {b.endpoint} (session resumed)",
                            f"* reconnected to {b.endpoint} (new session)"), line
    lost = [o for o in bob.seen if " lost (" in o.get("text", "")]
    assert lost and lost[0]["text"].startswith(f"* connection to {a.endpoint} lost ("), bob.seen
    second = probe(procs, "send", b.endpoint, "carol", "bob", 1, 10000)
    second.next(lambda o: "done" in o, BOUND, "the second send")
    bob.next(lambda o: "carol -> you: m0" in o.get("text", ""), BOUND, "the second message")
    assert bob.wait(BOUND) == 0, "".join(bob.err)
    assert sum(1 for o in bob.seen if "reconnected" in o.get("text", "")) == 1


def test_single_endpoint_behaves_as_before(brokers, broker, cluster, procs, tmp_path):
    (a,) = brokers(1)
    bob = probe(procs, "recv", a.endpoint, "bob", 1, 60000)
    assert bob.next(lambda o: "login" in o, BOUND, "bob's login")["endpoint"] == a.endpoint
    port = a.port
    a.kill()
    d = bob.next(lambda o: o.get("event") == "disconnected", BOUND, "disconnected")
    # No failover: no endpoint on the event, and the heartbeat decides.
    assert d["endpoint"] == "" and d["detail"].startswith("no frame from the broker"), d
    # A broker back on the same endpoint: the client resumes there.
    a2 = broker("--store", f"redis://{cluster.seeds}", "--bind", f"tcp://127.0.0.1:{port}")
    assert a2.endpoint == a.endpoint
    r = bob.next(lambda o: o.get("event") == "reconnected", BOUND, "reconnected")
    assert r["endpoint"] == "" and r["detail"] == "logged in again", r
    alice = probe(procs, "send", a2.endpoint, "alice", "bob", 1, 10000)
    alice.next(lambda o: "done" in o, BOUND, "the send")
    assert bob.next(lambda o: "deliver" in o, BOUND, "the delivery")["deliver"] == "alice-0"
    assert bob.wait(10) == 0


# ---------------------------------------------------------------------------
# The Python client (clients/python), threaded and asyncio.

@pytest.fixture(scope="module")
def cw():
    from conftest import import_installed_causeway
    return import_installed_causeway()


def python_events_until(client, want, deadline, got):
    """Reads events (threaded client) into got until want(got) or deadline."""
    while not want(got):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; got {got[-5:]}"
        ev = client.next_event(timeout=min(left, 1.0))
        if ev is not None:
            got.append(ev)


def check_python_run(cw, got, results, a, b, count):
    shown = [e.message_id for e in got if e.kind == "deliver"]
    assert sorted(shown) == sorted(f"py-{i}" for i in range(count)), (
        f"missing {sorted(set(f'py-{i}' for i in range(count)) - set(shown))}, "
        f"twice {sorted(i for i in set(shown) if shown.count(i) > 1)}")
    seqs = [e.seq for e in got if e.kind == "deliver"]
    assert all(x < y for x, y in zip(seqs, seqs[1:])), seqs
    assert not any(e.late for e in got if e.kind == "deliver")
    assert [r.message_id for r in results] == [f"py-{i}" for i in range(count)]
    assert all(r.status == "ACCEPTED" for r in results), results
    rseqs = [r["bob"].seq for r in results]
    assert len(set(rseqs)) == count, rseqs   # a duplicate answer keeps its original seq
    lost = [e for e in got if e.kind == "disconnected"]
    back = [e for e in got if e.kind == "reconnected"]
    assert len(lost) == 1 and lost[0].endpoint == a.endpoint, lost
    assert len(back) == 1 and back[0].endpoint == b.endpoint and back[0].switched, back
    assert back[0].detail.startswith(f"reconnected to {b.endpoint} ("), back


def test_python_client_fails_over(cw, brokers):
    a, b = brokers(2)
    eps = f"{a.endpoint}, {b.endpoint}"
    got, results, errors = [], [], []
    with cw.Client(eps, "bob", timeout=10.0) as bob, \
            cw.Client([a.endpoint, b.endpoint], "alice", timeout=60.0) as alice:
        assert bob.endpoint == a.endpoint and bob.endpoints == (a.endpoint, b.endpoint)

        def sender():
            try:
                for i in range(COUNT):
                    results.append(alice.send("bob", f"m{i}", durable=True, message_id=f"py-{i}"))
            except Exception as e:  # noqa: BLE001 - reported by the test thread
                errors.append(e)
        t = threading.Thread(target=sender)
        t.start()
        deadline = time.monotonic() + BOUND * 2
        python_events_until(bob, lambda g: sum(e.kind == "deliver" for e in g) >= 10,
                            deadline, got)
        a.kill()
        python_events_until(bob, lambda g: sum(e.kind == "deliver" for e in g) >= COUNT,
                            deadline, got)
        t.join(BOUND)
        assert not t.is_alive() and not errors, errors
        assert bob.endpoint == b.endpoint and alice.endpoint == b.endpoint
        sender_events = []
        while (ev := alice.next_event(timeout=0)) is not None:
            sender_events.append(ev)
        assert [e.kind for e in sender_events] == ["disconnected", "reconnected"], sender_events
    check_python_run(cw, got, results, a, b, COUNT)


def test_python_asyncio_client_fails_over(cw, brokers):
    import asyncio
    a, b = brokers(2)
    eps = [a.endpoint, b.endpoint]

    async def run():
        got, results = [], []
        bob = await cw.AsyncClient.connect(eps, name="bob", timeout=10.0)
        alice = await cw.AsyncClient.connect(",".join(eps), name="alice", timeout=60.0)
        try:
            assert bob.endpoint == a.endpoint

            async def sender():
                for i in range(COUNT):
                    results.append(await alice.send("bob", f"m{i}", durable=True,
                                                    message_id=f"py-{i}"))
            task = asyncio.ensure_future(sender())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + BOUND * 2
            while sum(e.kind == "deliver" for e in got) < COUNT:
                assert loop.time() < deadline, f"timed out; got {got[-5:]}"
                ev = await bob.next_event(timeout=1.0)
                if ev is not None:
                    got.append(ev)
                    if ev.kind == "deliver" and ev.message_id == "py-9" and a.running():
                        a.kill()
            await asyncio.wait_for(task, BOUND)
            assert bob.endpoint == b.endpoint and alice.endpoint == b.endpoint
        finally:
            await alice.close()
            await bob.close()
        return got, results

    got, results = asyncio.run(run())
    check_python_run(cw, got, results, a, b, COUNT)


# ---------------------------------------------------------------------------
# Late marks (PROTOCOL.md §13.14), on one broker: a raw protocol client sends
# a message with an old clock on purpose.

def test_late_delivery_marked_in_trace_cli_and_clockd_audit(broker, hub, pb, procs, tmp_path):
    from conftest import ClockdDaemon
    from test_clockd import Client as ClockdClient
    b = broker()
    daemon = ClockdDaemon(tmp_path / "clockd.db", tmp_path / "clockd.log")
    try:
        trace = tmp_path / "bob.jsonl"
        bob = procs(CLI_BIN, "--json", "--endpoint", b.endpoint, "listen", "--name", "bob",
                    "--count", 3, "--trace", trace, "--clockd", daemon.endpoint)
        bob.next(lambda o: o.get("event") == "login", BOUND, "the CLI's login")
        mallory = hub.logged_in(b.endpoint, "mallory")
        for text, k in (("m1", 2), ("m2", 1), ("m3", 3)):   # m2 carries an old clock
            reply = mallory.send_text(["bob"], text, clock=[("mallory", k)], message_id=text)
            assert_status(pb, reply, "OK")
        assert bob.wait(BOUND) == 0, "".join(bob.err)
        shown = [(o["message_id"], o.get("late", False)) for o in bob.seen
                 if o.get("event") == "deliver"]
        assert shown == [("m1", False), ("m2", True), ("m3", False)], shown
        lines = [json.loads(line) for line in trace.read_text().splitlines()]
        late = [e["msg"] for e in lines if e.get("late")]
        assert late == ["mallory:m2"], lines
        res = subprocess.run([CLOCKD_BIN, "audit", "--json", str(trace)], capture_output=True,
                             text=True, timeout=30)
        assert json.loads(res.stdout)["late"] == 1, res.stdout + res.stderr
        res = subprocess.run([CLOCKD_BIN, "audit", str(trace)], capture_output=True, text=True,
                             timeout=30)
        assert "1 late delivery (flagged by the receiving client)" in res.stdout, res.stdout
        import zmq
        ctx = zmq.Context()
        try:
            c = ClockdClient(pb, ctx, daemon.endpoint)
            reply = c.request("audit", pb.ClockdAudit())
            assert reply.status == pb.STATUS_OK and reply.late == 1, reply
            c.sock.close()
        finally:
            ctx.term()
    finally:
        assert daemon.stop() == 0


# ---------------------------------------------------------------------------
# Endpoint lists at the edges: refused lists, a first endpoint that refuses.

BAD_LISTS = [
    ("tcp://127.0.0.1:7400,,tcp://127.0.0.1:7401", "has an empty element"),
    ("tcp://127.0.0.1:7400,", "has an empty element"),
    ("tcp://127.0.0.1:7400,tcp://127.0.0.1:7400", "names 'tcp://127.0.0.1:7400' twice"),
    ("tcp://127.0.0.1:7400,127.0.0.1:7401", "has no transport"),
    (",".join(f"tcp://127.0.0.1:{7400 + i}" for i in range(17)), "lists more than 16 endpoints"),
]


@pytest.mark.parametrize("bad,why", BAD_LISTS)
def test_cli_refuses_bad_endpoint_lists(bad, why):
    for args, env in (([CLI_BIN, "--endpoint", bad, "who"], None),
                      ([CLI_BIN, "who"], {**os.environ, "CAUSEWAY_ENDPOINT": bad})):
        res = subprocess.run(args, capture_output=True, text=True, timeout=30, env=env)
        assert res.returncode == 2 and why in res.stderr, (res.returncode, res.stderr)


@pytest.mark.parametrize("bad,why", BAD_LISTS)
def test_python_refuses_bad_endpoint_lists(cw, bad, why):
    with pytest.raises(ValueError, match=why.replace("'", ".")):
        cw.Client(bad)
    with pytest.raises(ValueError):
        cw.Client([])


def test_login_moves_past_a_refusing_endpoint(broker, cw, procs):
    b = broker()
    eps = f"tcp://127.0.0.1:1,{b.endpoint}"   # port 1: connection refused
    res = subprocess.run([CLI_BIN, "--json", "--endpoint", eps, "listen", "--name", "carol",
                          "--for", "200"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    with cw.Client(eps, "dave", timeout=10.0) as dave:
        assert dave.endpoint == b.endpoint
    p = probe(procs, "recv", eps, "erin", 0, 1000)
    assert p.next(lambda o: "login" in o, BOUND, "the login")["endpoint"] == b.endpoint
