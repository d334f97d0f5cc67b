"""End-to-end tests of the phase-3 exchange and of causal event recording
(client/README.md, "Causal events"; docs/CLOCKD.md).

What is covered:
  - ``causeway exchange``: three real CLI processes A, B, C against a real
    broker, short intervals and fixed seeds, each writing a trace file
    (``--trace``). Afterwards: every process sent its 10 clock messages and
    a "done"; each "from X" line matches a "sent" line of X to it (same
    message id) and every delivered send was received exactly once; the
    broker logged a ``forward`` line with the clock of each message; the
    printed clocks equal the traced ones; ``causeway-clockd audit`` over the
    concatenated traces finds nothing and ``stats`` counts the messages.
    A second ``exchange --name A`` while A runs is refused (exit 4).
  - ``--clockd``: a running ``causeway-clockd serve`` (free loopback port,
    tmp --db) receives the send event of ``causeway send`` and the deliver
    event of ``causeway listen``; ``audit --db`` finds nothing and
    ``events --db --json`` shows both with matching message keys.
  - an unreachable daemon never delays a send; the CLI says on stderr how
    many events were not confirmed.

Every wait is bounded; nothing sleeps to synchronise: the tests wait for
output lines, exits and log lines.
"""

import json
import os
import re
import socket
import subprocess
import time

import pytest

from conftest import BUILD_DIR, ClockdDaemon, run_cli

CLOCKD_BIN = os.path.join(BUILD_DIR, "clockd", "causeway-clockd")

RUN_TIMEOUT = 30.0       # one causeway-clockd command
EXCHANGE_TIMEOUT = 60.0  # one exchange process, start to exit
STOP_TIMEOUT = 5.0
LOG_TIMEOUT = 10.0       # the broker writes its forward lines within this
COUNT = 10               # clock messages per exchange process
GROUP = ["A", "B", "C"]


def clockd(*args):
    return subprocess.run([CLOCKD_BIN, *map(str, args)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


def clockd_json(*args):
    res = clockd(*args, "--json")
    try:
        return res.returncode, json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (rc={res.returncode}):\n{res.stdout}\n{res.stderr}")


def json_lines(proc):
    return [json.loads(line) for line in proc.lines if line.startswith("{")]


def human_clock(clock):
    """{"B":1,"A":2} -> "{A:2, B:1}", as the broker logs clocks."""
    return "{" + ", ".join(f"{k}:{clock[k]}" for k in sorted(clock)) + "}"


def read_trace(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module", autouse=True)
def built():
    if not os.access(CLOCKD_BIN, os.X_OK):
        pytest.fail(f"causeway-clockd not built: {CLOCKD_BIN}")


# ---------------------------------------------------------------------------
# The exchange

def exchange_args(endpoint, name, seed, trace):
    return ["exchange", "--endpoint", endpoint, "--name", name, "--group", ",".join(GROUP),
            "--min-ms", 20, "--max-ms", 60, "--count", COUNT, "--seed", seed,
            "--trace", trace, "--json"]


def wait_for_log(broker, pattern_lines, timeout=LOG_TIMEOUT):
    """Waits until every expected forward line is in the broker's log."""
    deadline = time.monotonic() + timeout
    while True:
        log = broker.log()
        missing = [p for p in pattern_lines if not p.search(log)]
        if not missing:
            return log
        if time.monotonic() >= deadline:
            raise AssertionError(f"broker log lacks {len(missing)} forward lines, e.g. "
                                 f"{missing[0].pattern}")
        time.sleep(0.02)   # polling a file for a line: the wait is for the event


def test_exchange_three_processes(broker, cli, tmp_path):
    b = broker()
    traces = {n: tmp_path / f"{n}.jsonl" for n in GROUP}
    procs = {}

    procs["A"] = cli(*exchange_args(b.endpoint, "A", 1, traces["A"]))
    head = procs["A"].read_json(lambda o: o.get("event") == "exchange", what="exchange line")
    assert head["seed"] == 1 and head["group"] == GROUP and head["count"] == COUNT
    waiting = procs["A"].read_json(lambda o: o.get("event") == "waiting", what="waiting line")
    assert waiting["for"] == ["B", "C"]

    # A is logged in and waits for B and C: a second A is refused.
    dup = run_cli(cli, *exchange_args(b.endpoint, "A", 9, tmp_path / "dup.jsonl"))
    assert dup.proc.returncode == 4, dup.describe()
    assert "NAME_TAKEN" in dup.stderr() and "duplicates are refused" in dup.stderr()
    assert any(o.get("event") == "error" and o.get("status") == "NAME_TAKEN"
               for o in json_lines(dup))
    assert not any(o.get("event") == "sent" for o in json_lines(dup))

    procs["B"] = cli(*exchange_args(b.endpoint, "B", 2, traces["B"]))
    procs["C"] = cli(*exchange_args(b.endpoint, "C", 3, traces["C"]))
    for n, p in procs.items():
        assert p.wait(EXCHANGE_TIMEOUT) == 0, p.describe()
        assert "not written" not in p.stderr(), p.describe()

    out = {n: json_lines(p) for n, p in procs.items()}
    sent = {n: [o for o in out[n] if o["event"] == "sent"] for n in GROUP}
    received = {n: [o for o in out[n] if o["event"] == "received"] for n in GROUP}
    done = {n: [o for o in out[n] if o["event"] == "done"] for n in GROUP}

    for n in GROUP:
        assert any(o["event"] == "start" for o in out[n]), n
        assert len(sent[n]) == COUNT, (n, sent[n])
        for s in sent[n]:
            assert s["to"] in GROUP and s["to"] != n
            assert s["status"] == "DELIVERED", s
            assert s["message_id"]
        assert len(done[n]) == 1 and sorted(done[n][0]["to"]) == sorted(set(GROUP) - {n})
        # Each other member said "done" to n exactly once, after all it sent.
        dones = [r["from"] for r in received[n] if r["done"]]
        assert sorted(dones) == sorted(set(GROUP) - {n}), (n, dones)
        fin = [o for o in out[n] if o["event"] == "finished"]
        assert len(fin) == 1
        assert fin[0]["sent"] == COUNT and fin[0]["received"] == len(received[n])
        # Our own entry counts our events: 10 sends, a done, every delivery.
        assert fin[0]["clock"][n] == COUNT + 1 + len(received[n])

    # Every "from X" at n is a send of X to n, and every send was received once.
    by_id = {(s["message_id"]): (x, s) for x in GROUP for s in sent[x]}
    done_ids = {d["message_id"]: x for x in GROUP for d in done[x]}
    for n in GROUP:
        for r in received[n]:
            if r["done"]:
                assert done_ids.get(r["message_id"]) == r["from"], r
                continue
            assert r["message_id"] in by_id, r
            x, s = by_id[r["message_id"]]
            assert (x, s["to"]) == (r["from"], n), (r, s)
            # The message carried the sender's clock after its send.
            assert r["msg_clock"] == s["clock"], (r, s)
            # Receive rule: our clock dominates the message's.
            assert all(r["clock"].get(k, 0) >= v for k, v in r["msg_clock"].items())
    got = sorted(r["message_id"] for n in GROUP for r in received[n] if not r["done"])
    assert got == sorted(by_id), "some clock message was lost or received twice"

    # The broker shows every forwarded clock with sender and receiver.
    patterns = [re.compile(re.escape(f"forward {x} -> {s['to']} (0 bytes): delivered 1,")
                           + r"[^\n]*" + re.escape(f" clock {human_clock(s['clock'])}"))
                for x in GROUP for s in sent[x]]
    patterns += [re.compile(re.escape(f"forward {x} -> {','.join(d['to'])} (4 bytes): delivered 2,")
                            + r"[^\n]*" + re.escape(f" clock {human_clock(d['clock'])}"))
                 for x in GROUP for d in done[x]]
    wait_for_log(b, patterns)

    # The traces say what the processes printed...
    for n in GROUP:
        events = read_trace(traces[n])
        assert all(e["process"] == n for e in events)
        sends = {e["msg"]: e for e in events if e["kind"] == "send"}
        for s in sent[n] + done[n]:
            e = sends[f"{n}:{s['message_id']}"]
            assert e["clock"] == s["clock"]
        delivers = [e for e in events if e["kind"] == "deliver"]
        assert [(e["peers"], e["msg"], e["clock"], e["msg_clock"]) for e in delivers] == [
            ([r["from"]], f"{r['from']}:{r['message_id']}", r["clock"], r["msg_clock"])
            for r in received[n]]
        assert all(e["holdback_us"] == 0 for e in delivers)
        # ...and every clock tick is an event: the own entry counts 1, 2, 3, ...
        assert [e["clock"][n] for e in events] == list(range(1, len(events) + 1))

    # causeway-clockd reads the concatenated traces and finds nothing wrong.
    all_path = tmp_path / "exchange.jsonl"
    with open(all_path, "w") as f:
        for n in GROUP:
            f.write(traces[n].read_text())
    res = clockd("audit", all_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("no findings")
    rc, stats = clockd_json("stats", all_path)
    assert rc == 0
    n_done = len(GROUP)
    n_deliveries = sum(len(received[n]) for n in GROUP)
    assert stats["processes"] == 3
    # 30 clock messages plus one "done" multicast per process, all delivered.
    assert stats["messages"] == len(GROUP) * COUNT + n_done
    assert stats["events"] == len(GROUP) * COUNT + n_done + n_deliveries
    assert n_deliveries == len(GROUP) * COUNT + n_done * (len(GROUP) - 1)


def test_exchange_usage(cli):
    for args, what in [(["--name", "A", "--group", "B,C"], "not in --group"),
                       (["--name", "A", "--group", "A"], "nobody but A"),
                       (["--name", "A", "--group", "A,B", "--min-ms", "50", "--max-ms", "10"],
                        "above --max-ms"),
                       (["--name", "A", "--group", "A,all"], "not a user name"),
                       (["--group", "A,B"], "need --name")]:
        p = run_cli(cli, "exchange", "--endpoint", "tcp://127.0.0.1:1", *args)
        assert p.proc.returncode == 2, p.describe()
        assert what in p.stderr(), p.describe()
    p = run_cli(cli, "who", "--endpoint", "tcp://127.0.0.1:1", "--trace", "x.jsonl")
    assert p.proc.returncode == 2 and "does not apply" in p.stderr()
    p = run_cli(cli, "exchange", "--help")
    assert p.proc.returncode == 0 and "duplicates are refused" in "\n".join(p.lines)


def test_trace_file_unwritable(broker, cli, tmp_path):
    b = broker()
    p = run_cli(cli, "send", "--endpoint", b.endpoint, "--name", "alice", "--to", "bob",
                "--trace", tmp_path / "no" / "such" / "dir.jsonl", "hi")
    assert p.proc.returncode == 2, p.describe()
    assert "cannot open trace file" in p.stderr()


# ---------------------------------------------------------------------------
# Reporting to a running causeway-clockd

@pytest.fixture
def daemon(tmp_path):
    started = []

    def start(db):
        d = ClockdDaemon(db, tmp_path / f"clockd{len(started)}.log")
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=STOP_TIMEOUT)


def test_clockd_daemon_receives_events(broker, cli, daemon, tmp_path):
    b = broker()
    db = tmp_path / "clockd.db"
    d = daemon(db)

    bob = cli("listen", "--endpoint", b.endpoint, "--name", "bob", "--count", 1, "--json",
              "--clockd", d.endpoint)
    bob.read_json(lambda o: o.get("event") == "login", what="bob's login")
    alice = run_cli(cli, "send", "--endpoint", b.endpoint, "--name", "alice", "--to", "bob",
                    "--clockd", d.endpoint, "--json", "hello", "bob")
    assert alice.proc.returncode == 0, alice.describe()
    sent = [o for o in json_lines(alice) if o["event"] == "send"][0]
    mid = sent["message_id"]
    assert mid and sent["clock"] == {"alice": 1}
    assert bob.wait(EXCHANGE_TIMEOUT) == 0, bob.describe()
    delivered = [o for o in json_lines(bob) if o["event"] == "deliver"][0]
    assert delivered["message_id"] == mid
    # Both CLIs waited for the daemon's confirmation before exiting.
    for p in (alice, bob):
        assert "not confirmed" not in p.stderr(), p.describe()

    rc, audit = clockd_json("audit", "--db", db)
    assert rc == 0, audit
    assert audit["count"] == 0 and audit["events"] == 2 and audit["processes"] == 2
    rc, listing = clockd_json("events", "--db", db)
    assert rc == 0
    events = {e["id"]: e for e in listing["events"]}
    assert sorted(events) == ["alice:1", "bob:1"]
    s, r = events["alice:1"], events["bob:1"]
    key = f"alice:{mid}"
    assert (s["kind"], s["msg"], s["peers"], s["clock"], s["text"]) == (
        "send", key, ["bob"], {"alice": 1}, "hello bob")
    assert (r["kind"], r["msg"], r["peers"], r["clock"], r["msg_clock"]) == (
        "deliver", key, ["alice"], {"alice": 1, "bob": 1}, {"alice": 1})
    assert r["clock"] == delivered["local_clock"]
    rc, cmp = clockd_json("compare", "--db", db, "alice:1", "bob:1")
    assert rc == 0 and cmp["order"] == "before"
    assert d.stop() == 0, d.log()


def test_clockd_unreachable_never_delays(broker, cli, tmp_path):
    """A daemon that is not there costs the send nothing; the CLI waits a
    bounded time at exit and says what was not confirmed."""
    b = broker()
    # A bound, never listening port: connections to it are refused.
    hole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    hole.bind(("127.0.0.1", 0))
    port = hole.getsockname()[1]
    try:
        bob = cli("listen", "--endpoint", b.endpoint, "--name", "bob", "--count", 1, "--json")
        bob.read_json(lambda o: o.get("event") == "login", what="bob's login")
        trace = tmp_path / "alice.jsonl"
        t0 = time.monotonic()
        alice = run_cli(cli, "send", "--endpoint", b.endpoint, "--name", "alice", "--to", "bob",
                        "--clockd", f"tcp://127.0.0.1:{port}", "--trace", trace, "--json",
                        "hi", timeout=20.0)
        elapsed = time.monotonic() - t0
        assert alice.proc.returncode == 0, alice.describe()
        # It was delivered at once; the exit waited at most the flush bound (2 s).
        delivered = bob.read_json(lambda o: o.get("event") == "deliver", what="delivery")
        assert delivered["from"] == "alice"
        assert elapsed < 10.0
        assert "clockd: 1 of 1 events not confirmed" in alice.stderr(), alice.describe()
        # The trace file got the event regardless.
        events = read_trace(trace)
        assert [(e["kind"], e["clock"]) for e in events] == [("send", {"alice": 1})]
        assert bob.wait(10.0) == 0
    finally:
        hole.close()
