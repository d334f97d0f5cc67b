"""`causeway stats`: the counters, --watch rates, and the operator views
(sessions, queues, recent), human and --json, against a real broker.

Figures are checked against what the test sent; --watch is bounded by
--count; the views need an operator (exit 4 and UNAUTHORIZED otherwise).
"""

import json

from conftest import assert_status, run_cli


def jsons(p):
    return [json.loads(line) for line in p.lines if line.startswith("{")]


def test_stats_json_and_human(broker, hub, cli, pb, tmp_path):
    b = broker("--data", tmp_path / "d", "--operators", "ops")
    a = hub.logged_in(b.endpoint, "alice")
    hub.logged_in(b.endpoint, "bob")
    for _ in range(4):
        assert_status(pb, a.send_text(to=["bob"], text="abcdef"), "OK")
    assert_status(pb, a.send_text(to=["bob"], text="x" * 60001), "TOO_LARGE")
    p = run_cli(cli, "stats", "-e", b.endpoint, "--json")
    assert p.proc.returncode == 0, p.describe()
    (st,) = jsons(p)
    assert st["event"] == "stats"
    assert st["traffic"]["live"]["unicast"] == {"received": 4, "received_bytes": 24,
                                                 "delivered": 4, "delivered_bytes": 24}
    assert st["refusals"] == {"TOO_LARGE": 1}
    assert st["recipient_fates"] == {"DELIVERED": 4}
    assert st["version"] == "0.1.0" and st["logins"] == 2
    assert st["deepest_queues"] == []  # no login: no operator figures
    p = run_cli(cli, "stats", "-e", b.endpoint)
    assert p.proc.returncode == 0, p.describe()
    text = "\n".join(p.lines)
    assert "refusals          TOO_LARGE=1" in text
    assert any(line.split()[:4] == ["live", "unicast", "4", "24"] for line in p.lines), text


def test_watch_rates_bounded_by_count(broker, hub, cli, pb):
    b = broker()
    a = hub.logged_in(b.endpoint, "alice")
    hub.logged_in(b.endpoint, "bob")
    w = cli("stats", "--watch", "--interval", "200", "--count", "3", "--json", "-e", b.endpoint)
    first = w.read_json(lambda o: o["event"] == "watch", what="a watch line")
    for _ in range(50):
        assert_status(pb, a.send_text(to=["bob"], text="0123456789"), "OK")
    # The totals reach what was sent; the rate line covering them is > 0.
    later = w.read_json(lambda o: o["event"] == "watch" and o["totals"]["received"] == 50,
                        what="a watch line with all 50 messages")
    assert first["totals"]["received"] <= later["totals"]["received"]
    assert w.wait(10) == 0, w.describe()
    lines = [o for o in jsons(w) if o["event"] == "watch"]
    assert len(lines) == 3  # --count
    covering = [o for o in lines if o["rates"]["received"] > 0]
    assert covering, lines
    for prev, o in zip(lines, lines[1:]):
        assert o["interval_ms"] > 0 and o["sessions"] == 2
        # A rate is the change of the total over the broker's own interval
        # (printed with one decimal).
        change = o["totals"]["received"] - prev["totals"]["received"]
        assert abs(o["rates"]["received"] * o["interval_ms"] / 1000 - change) <= \
            0.05 * o["interval_ms"] / 1000 + 1e-9, (prev, o)
    # Human form: a header and one line per interval.
    h = run_cli(cli, "stats", "--watch", "--interval", "100", "--count", "2", "-e", b.endpoint)
    assert h.proc.returncode == 0, h.describe()
    assert h.lines[0].split()[:3] == ["time", "sessions", "in/s"]
    assert len(h.lines) == 3


def test_views_need_an_operator(broker, hub, cli):
    b = broker("--operators", "ops")
    p = run_cli(cli, "stats", "sessions", "--name", "eve", "-e", b.endpoint)
    assert p.proc.returncode == 4, p.describe()
    assert "UNAUTHORIZED" in p.stderr() and "not an operator" in p.stderr()
    p = run_cli(cli, "stats", "sessions", "-e", b.endpoint)
    assert p.proc.returncode == 2 and "need --name" in p.stderr()
    p = run_cli(cli, "stats", "bogus", "-e", b.endpoint)
    assert p.proc.returncode == 2 and "unknown view" in p.stderr()
    p = run_cli(cli, "stats", "recent", "--text", "--name", "ops", "-e", b.endpoint)
    assert p.proc.returncode == 4 and "--monitor-text" in p.stderr(), p.describe()


def test_sessions_queues_recent_views(broker, hub, cli, pb, tmp_path):
    b = broker("--data", tmp_path / "d", "--operators", "ops", "--monitor-text")
    alice = hub.logged_in(b.endpoint, "alice", agent="agent-a")
    hub.logged_in(b.endpoint, "bob", pull=True)
    # The broker records forwarded messages once an operator watches.
    p = run_cli(cli, "stats", "recent", "--name", "ops", "-e", b.endpoint)
    assert p.proc.returncode == 0 and p.lines == [], p.describe()
    for i in range(3):
        assert_status(pb, alice.send_text(to=["bob"], text=f"d{i}", durable=True), "ACCEPTED")
    assert_status(pb, alice.send_text(to=["bob"], text="live ✓"), "OK")

    p = run_cli(cli, "stats", "sessions", "--name", "ops", "--json", "-e", b.endpoint)
    assert p.proc.returncode == 0, p.describe()
    objs = jsons(p)
    sess = {o["name"]: o for o in objs if o["event"] == "session"}
    assert set(sess) == {"alice", "bob", "ops"}
    assert sess["alice"]["agent"] == "agent-a" and sess["bob"]["pull"] is True
    assert sess["bob"]["queued"] == 3
    assert sess["alice"]["peer"] == "127.0.0.1"
    assert objs[-1] == {"event": "sessions", "count": 3, "truncated": False}
    p = run_cli(cli, "stats", "sessions", "--name", "ops", "-e", b.endpoint)
    assert p.lines[0].split()[:3] == ["NAME", "PEER", "SINCE"]
    assert any(line.split()[:2] == ["alice", "127.0.0.1"] for line in p.lines), p.lines

    p = run_cli(cli, "stats", "queues", "--name", "ops", "--json", "-e", b.endpoint)
    q = {o["name"]: o for o in jsons(p) if o["event"] == "queue"}
    assert q["bob"]["depth"] == 3 and q["bob"]["last_seq"] == 3 and q["bob"]["online"]
    assert jsons(p)[-1]["total"] == 3
    p = run_cli(cli, "stats", "queues", "--name", "ops", "-e", b.endpoint)
    assert p.lines[-1] == "3 queues, 3 messages waiting", p.lines

    p = run_cli(cli, "stats", "recent", "--name", "ops", "--json", "--text", "-e", b.endpoint)
    fw = [o for o in jsons(p) if o["event"] == "forwarded"]
    assert [(o["from"], o["to"], o["durable"], o["text"]) for o in fw] == \
        [("alice", ["bob"], True, "d0"), ("alice", ["bob"], True, "d1"),
         ("alice", ["bob"], True, "d2"), ("alice", ["bob"], False, "live ✓")]
    p = run_cli(cli, "stats", "recent", "--name", "ops", "-e", b.endpoint)
    assert len(p.lines) == 4 and "live ✓" not in "\n".join(p.lines)
    assert "alice -> bob" in p.lines[-1] and "live" in p.lines[-1]
    # An operator's plain stats also lists the deepest queues.
    p = run_cli(cli, "stats", "--name", "ops", "--json", "-e", b.endpoint)
    assert jsons(p)[0]["deepest_queues"] == [{"name": "bob", "depth": 3}]
