"""Resume clocks (PROTOCOL.md 11.4, issue 11 item 10): successive short-lived
client processes of one user continue one vector clock, so two runs never
stamp the same clock, and causeway-clockd's audit of all their events is
clean. Checked with the C CLI (trace file and daemon), across a broker
restart with a store, and with the Python client."""

import json
import subprocess

import pytest

from conftest import CLOCKD_BIN, import_installed_causeway, run_cli



def audit(*args):
    p = subprocess.run([CLOCKD_BIN, "audit", *map(str, args), "--json"], capture_output=True,
                       timeout=30)
    return p.returncode, json.loads(p.stdout.decode() or "{}"), p.stderr.decode()


def events(trace):
    with open(trace) as f:
        return [json.loads(line) for line in f if line.strip()]


def own(ev):
    return ev["clock"].get(ev["process"], 0)


def cli_ok(cli, *args):
    p = run_cli(cli, *args)
    assert p.proc.returncode == 0, p.describe()
    return p


def test_cli_runs_continue_one_clock_across_a_restart(broker, cli, tmp_path):
    data = tmp_path / "data"
    b = broker("--data", data)
    trace = tmp_path / "trace.jsonl"
    t = ("--trace", trace)

    def send(ep, frm, to, text):
        cli_ok(cli, "-e", ep, "send", "--name", frm, "--to", to, "--durable", *t, text)

    def fetch(ep, name):
        cli_ok(cli, "-e", ep, "fetch", "--name", name, *t)

    fetch(b.endpoint, "bob")                       # both names known, no events yet
    fetch(b.endpoint, "alice")
    send(b.endpoint, "alice", "bob", "one")
    send(b.endpoint, "alice", "bob", "two")
    fetch(b.endpoint, "bob")                       # bob delivers both (bob:1, bob:2)
    send(b.endpoint, "bob", "alice", "thanks")     # bob's clock goes on: bob:3, after alice:2
    # A clean restart: the store keeps the clocks.
    rc, killed = b.terminate()
    assert rc == 0 and not killed
    b = broker("--data", data)
    send(b.endpoint, "alice", "bob", "three")      # before the fetch below: alice:3
    fetch(b.endpoint, "alice")
    fetch(b.endpoint, "bob")

    evs = events(trace)
    mine = {}
    for ev in evs:
        mine.setdefault(ev["process"], []).append(own(ev))
    # Every process's own entry counts 1, 2, 3, ... across all its runs.
    assert mine["alice"] == list(range(1, len(mine["alice"]) + 1)), evs
    assert mine["bob"] == list(range(1, len(mine["bob"]) + 1)), evs
    assert len(mine["alice"]) == 4 and len(mine["bob"]) == 4, evs
    # Distinct events, distinct clocks.
    clocks = [json.dumps(ev["clock"], sort_keys=True) for ev in evs]
    assert len(set(clocks)) == len(clocks), evs
    # bob's send after his fetch run carries what that run had seen.
    thanks = next(ev for ev in evs if ev["kind"] == "send" and ev.get("text") == "thanks")
    assert thanks["clock"] == {"alice": 2, "bob": 3}, thanks
    rc, out, err = audit(trace)
    assert rc == 0, (out, err)
    assert out["findings"] == [], out


def test_cli_runs_reported_to_clockd_audit_clean(broker, cli, tmp_path):
    """Live-only broker, short-lived runs reporting to a causeway-clockd
    daemon: the daemon's audit over all of them is clean."""
    from conftest import ClockdDaemon
    db = tmp_path / "clockd.db"
    d = ClockdDaemon(db, str(tmp_path / "clockd.log"))
    try:
        b = broker()
        for i in range(4):
            p = run_cli(cli, "-e", b.endpoint, "send", "--name", "v", "--to", "v", "--json",
                        "--clockd", d.endpoint, f"note {i}")
            assert p.proc.returncode == 0, p.describe()
            sent = [o for o in p.unread if o.get("event") == "send"]
            assert sent and sent[0]["clock"] == {"v": 2 * i + 1}, p.describe()
        rc, out, err = audit("--db", db)
        assert rc == 0, (out, err)
        assert out["findings"] == [], out
        p = subprocess.run([CLOCKD_BIN, "events", "--db", str(db), "--json"], capture_output=True,
                           timeout=30)
        evs = json.loads(p.stdout)["events"]
        assert [own(e) for e in evs] == list(range(1, 9)), evs
    finally:
        d.proc.kill()
        d.proc.wait(timeout=10)


def test_python_client_resumes_the_clock(broker, tmp_path):
    causeway = import_installed_causeway()
    b = broker()
    seen = []
    for _ in range(3):
        c = causeway.Client(b.endpoint)
        try:
            info = c.login("py")
            r = c.send(to=["py"], text="x")
            seen.append(r.clock["py"])
            ev = c.next_event(timeout=5)
            while not isinstance(ev, causeway.Deliver):
                ev = c.next_event(timeout=5)
            c.logout()
        finally:
            c.close()
    assert seen == [1, 3, 5], seen
    assert info is not None
