"""Durable mode (phase 2) through the C CLI and libcauseway, against real
brokers started with ``--data DIR`` (a fresh directory per test).

What a user of ``causeway`` sees:

  - an offline user gets a durable message through ``listen`` when logging
    in later, also after the broker was killed and restarted on the same
    data directory, exactly once (the next ``fetch`` says "no messages"
    because ``listen`` acknowledged it before logging out);
  - a ``listen`` that stays logged in while the broker is killed (SIGKILL,
    right after it printed a message and before its batched Ack) and
    restarted on the same port prints every message exactly once: the
    broker's redelivery after the new login is dropped by the library;
  - ``fetch`` prints the waiting messages (sender, broker date and time,
    seq), acknowledges them and says "no messages" the second time;
    ``--keep`` leaves them waiting, ``--max`` pages;
  - ``history`` shows them afterwards, ``--last`` bounds it;
  - ``send --durable`` twice with the same ``--id``: the second reports
    ``duplicate`` with the seq of the first, and the recipient sees one
    message; exit statuses for UNKNOWN_USER, QUEUE_FULL, NOT_DURABLE and
    usage errors;
  - the chat's ``/durable on|off``, ``/fetch`` and ``/history``.

Every wait is bounded and nothing sleeps to synchronise: tests wait for the
CLI's output line or exit, and check absence with a later round trip (a
``fetch`` after ``listen`` has logged out, which acknowledges and commits
before the logout).
"""

import json
import re
import subprocess

from conftest import CLI_BIN, run_cli


def is_event(name):
    return lambda obj: obj.get("event") == name


def start_durable(broker, data, *extra):
    return broker("--data", str(data), *extra)


def cli_ok(cli, *args, code=0, timeout=15.0):
    """Runs the CLI to completion and checks its exit status."""
    p = run_cli(cli, *args, timeout=timeout)
    assert p.proc.returncode == code, p.describe()
    return p


def json_lines(p, event=None):
    """Every JSON stdout line of a finished CliProc (optionally one event)."""
    out = []
    for line in p.lines:
        line = line.strip()
        if line.startswith("{"):
            obj = json.loads(line)
            if event is None or obj.get("event") == event:
                out.append(obj)
    return out


def register(cli, endpoint, *names):
    """Makes names known users (a fetch logs in and out); they stay offline."""
    for name in names:
        p = cli_ok(cli, "fetch", "--endpoint", endpoint, "--name", name)
        assert p.lines == ["no messages"], p.describe()


def dsend(cli, endpoint, sender, to, text, *extra, code=0):
    """A durable send with --json; returns its result line."""
    p = cli_ok(cli, "send", "--endpoint", endpoint, "--name", sender, "--to", to, "--durable",
               "--json", *extra, text, code=code)
    results = json_lines(p, "send")
    assert len(results) == 1, p.describe()
    return results[0]


def fetch_json(cli, endpoint, name, *extra):
    """Runs fetch --json; returns (messages, summary)."""
    p = cli_ok(cli, "fetch", "--endpoint", endpoint, "--name", name, "--json", *extra)
    summary = json_lines(p, "fetch")
    assert len(summary) == 1, p.describe()
    return json_lines(p, "message"), summary[0]


def texts(objs):
    return [o["text"] for o in objs]


def run_chat(endpoint, name, lines, *extra, timeout=20.0):
    """The interactive chat fed from a pipe (no terminal): each line is a
    command; end of input logs out. Returns the CompletedProcess."""
    res = subprocess.run([CLI_BIN, "chat", "--endpoint", endpoint, "--name", name, *extra],
                         input="".join(line + "\n" for line in lines), capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, f"chat exited {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


# ---------------------------------------------------------------------------
# Offline delivery through listen


def test_offline_user_gets_message_via_listen(broker, cli, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(cli, br.endpoint, "bob")
    sent = dsend(cli, br.endpoint, "alice", "bob", "see you tomorrow")
    assert sent["status"] == "ACCEPTED"
    assert sent["durable"] is True and sent["duplicate"] is False
    assert re.fullmatch(r"alice-[0-9a-f]{16}-\d+", sent["message_id"]), sent
    assert [(r["name"], r["status"], r["seq"]) for r in sent["recipients"]] == [
        ("bob", "ACCEPTED", 1)]

    # bob logs in later: the waiting message comes right after the login.
    listener = cli("listen", "--endpoint", br.endpoint, "--name", "bob", "--json",
                   "--count", 1, "--for", 10000)
    login = listener.read_json(is_event("login"), what="login line")
    assert login["durable"] is True
    got = listener.read_json(is_event("deliver"), what="the stored message")
    assert (got["from"], got["text"], got["seq"], got["durable"], got["message_id"]) == (
        "alice", "see you tomorrow", 1, True, sent["message_id"])
    assert got["clock"] == {"alice": 1}
    assert listener.wait() == 0, listener.describe()
    assert len(json_lines(listener, "deliver")) == 1

    # listen acknowledged it before logging out: nothing waits any more.
    messages, summary = fetch_json(cli, br.endpoint, "bob")
    assert messages == [] and summary["count"] == 0
    # So a second listen gets nothing (nothing is pending to push).
    again = cli_ok(cli, "listen", "--endpoint", br.endpoint, "--name", "bob", "--json",
                   "--for", 300)
    assert json_lines(again, "deliver") == [], again.describe()


def test_offline_user_gets_message_after_broker_restart(broker, cli, tmp_path):
    data = tmp_path / "data"
    br = start_durable(broker, data)
    register(cli, br.endpoint, "bob")
    first = dsend(cli, br.endpoint, "alice", "bob", "before the crash", "--id", "crash-1")
    assert first["status"] == "ACCEPTED"
    br.kill()   # SIGKILL: no clean shutdown after the ACCEPTED
    br2 = start_durable(broker, data)
    second = dsend(cli, br2.endpoint, "alice", "bob", "after the restart")
    assert second["recipients"][0]["seq"] == 2   # seqs are never reused

    listener = cli("listen", "--endpoint", br2.endpoint, "--name", "bob", "--json",
                   "--count", 2, "--for", 10000)
    got = [listener.read_json(is_event("deliver"), what=f"message {i}") for i in (1, 2)]
    assert [(m["text"], m["seq"]) for m in got] == [("before the crash", 1),
                                                    ("after the restart", 2)]
    assert got[0]["message_id"] == "crash-1"
    assert listener.wait() == 0, listener.describe()
    assert len(json_lines(listener, "deliver")) == 2

    # Acknowledged before the logout, and that survives a restart too.
    br2.terminate()
    br3 = start_durable(broker, data)
    messages, summary = fetch_json(cli, br3.endpoint, "bob")
    assert messages == [] and summary["count"] == 0


def test_listen_across_broker_kill_sees_each_message_once(broker, cli, tmp_path):
    """listen stays logged in while the broker dies and comes back on the
    same port. The broker is killed right after listen printed m1, before
    the batched Ack (up to 200 ms later) can be committed, so the new
    broker delivers m1 again after the login: listen must not print it
    twice."""
    data = tmp_path / "data"
    br = start_durable(broker, data)
    port = br.port
    register(cli, br.endpoint, "bob")
    listener = cli("listen", "--endpoint", br.endpoint, "--name", "bob", "--json",
                   "--count", 3, "--for", 30000)
    listener.read_json(is_event("login"), what="login line")
    dsend(cli, br.endpoint, "alice", "bob", "m1")
    m1 = listener.read_json(is_event("deliver"), what="m1")
    br.kill()
    br2 = start_durable(broker, data, "--bind", f"tcp://127.0.0.1:{port}")
    assert br2.port == port
    listener.read_json(is_event("disconnected"), timeout=10.0, what="disconnected line")
    listener.read_json(is_event("reconnected"), timeout=15.0, what="reconnected line")
    dsend(cli, br2.endpoint, "alice", "bob", "m2")
    dsend(cli, br2.endpoint, "alice", "bob", "m3")
    assert listener.wait(timeout=20.0) == 0, listener.describe()
    got = json_lines(listener, "deliver")
    assert [(m["text"], m["seq"]) for m in got] == [("m1", 1), ("m2", 2), ("m3", 3)], (
        listener.describe())
    assert m1["seq"] == 1
    messages, summary = fetch_json(cli, br2.endpoint, "bob")
    assert messages == [] and summary["count"] == 0


# ---------------------------------------------------------------------------
# fetch and history


def test_fetch_prints_waiting_messages_then_no_messages(broker, cli, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(cli, br.endpoint, "bob")
    dsend(cli, br.endpoint, "alice", "bob", "first note")
    dsend(cli, br.endpoint, "carol", "bob", "second note")

    p = cli_ok(cli, "fetch", "--endpoint", br.endpoint, "--name", "bob")
    assert len(p.lines) == 2, p.describe()
    stamp = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d #(\d+)\] "
    m = [re.fullmatch(stamp + r"(\w+) -> you: (.*)", line) for line in p.lines]
    assert all(m), p.describe()
    assert [(x.group(1), x.group(2), x.group(3)) for x in m] == [
        ("1", "alice", "first note"), ("2", "carol", "second note")]

    again = cli_ok(cli, "fetch", "--endpoint", br.endpoint, "--name", "bob")
    assert again.lines == ["no messages"], again.describe()


def test_fetch_keep_and_max(broker, cli, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(cli, br.endpoint, "bob")
    for i in range(1, 4):
        dsend(cli, br.endpoint, "alice", "bob", f"n{i}", "--id", f"n-{i}")

    # --keep: shown, not acknowledged (twice the same).
    for _ in range(2):
        messages, summary = fetch_json(cli, br.endpoint, "bob", "--keep")
        assert texts(messages) == ["n1", "n2", "n3"]
        assert [m["seq"] for m in messages] == [1, 2, 3]
        assert summary == {"event": "fetch", "count": 3, "acked": 0}
    first = messages[0]
    assert (first["from"], first["message_id"], first["durable"], first["expired"]) == (
        "alice", "n-1", True, False)
    assert first["timestamp_us"] > 0

    # --max pages through them; each page is acknowledged.
    messages, summary = fetch_json(cli, br.endpoint, "bob", "--max", 2)
    assert texts(messages) == ["n1", "n2"] and summary["acked"] == 2
    messages, summary = fetch_json(cli, br.endpoint, "bob")
    assert texts(messages) == ["n3"] and summary["acked"] == 3
    messages, summary = fetch_json(cli, br.endpoint, "bob")
    assert messages == [] and summary == {"event": "fetch", "count": 0, "acked": 0}


def test_history_shows_messages(broker, cli, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(cli, br.endpoint, "bob")
    p = cli_ok(cli, "history", "--endpoint", br.endpoint, "--name", "bob")
    assert p.lines == ["no messages"], p.describe()
    dsend(cli, br.endpoint, "alice", "bob", "h1")
    dsend(cli, br.endpoint, "alice", "bob", "h2")
    cli_ok(cli, "fetch", "--endpoint", br.endpoint, "--name", "bob")   # acknowledged now
    dsend(cli, br.endpoint, "alice", "bob", "h3")                       # still waiting

    p = cli_ok(cli, "history", "--endpoint", br.endpoint, "--name", "bob", "--json")
    assert texts(json_lines(p, "message")) == ["h1", "h2", "h3"]
    assert json_lines(p, "history") == [{"event": "history", "count": 3}]
    p = cli_ok(cli, "history", "--endpoint", br.endpoint, "--name", "bob", "--last", 1)
    assert len(p.lines) == 1 and p.lines[0].endswith("alice -> you: h3"), p.describe()
    # History changes nothing: h3 still waits.
    messages, _ = fetch_json(cli, br.endpoint, "bob")
    assert texts(messages) == ["h3"]


# ---------------------------------------------------------------------------
# send --durable


def test_send_same_id_twice_is_one_message(broker, cli, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(cli, br.endpoint, "bob")
    one = dsend(cli, br.endpoint, "alice", "bob", "only once", "--id", "retry-7")
    two = dsend(cli, br.endpoint, "alice", "bob", "only once", "--id", "retry-7")
    assert (one["status"], one["duplicate"], one["message_id"]) == ("ACCEPTED", False, "retry-7")
    assert (two["status"], two["duplicate"], two["message_id"]) == ("ACCEPTED", True, "retry-7")
    assert two["recipients"] == one["recipients"] == [
        {"name": "bob", "status": "ACCEPTED", "seq": 1}]

    # Human output says so too.
    p = cli_ok(cli, "send", "--endpoint", br.endpoint, "--name", "alice", "--to", "bob",
               "--durable", "--id", "retry-7", "only once")
    assert p.lines[0] == "bob: ACCEPTED (seq 1)", p.describe()
    assert "message id: retry-7" in p.lines
    assert any(line.startswith("duplicate:") for line in p.lines), p.describe()

    listener = cli("listen", "--endpoint", br.endpoint, "--name", "bob", "--json",
                   "--count", 1, "--for", 10000)
    got = listener.read_json(is_event("deliver"), what="the message")
    assert (got["text"], got["seq"], got["message_id"]) == ("only once", 1, "retry-7")
    assert listener.wait() == 0
    messages, _ = fetch_json(cli, br.endpoint, "bob")
    assert messages == []
    p = cli_ok(cli, "history", "--endpoint", br.endpoint, "--name", "bob", "--json")
    assert texts(json_lines(p, "message")) == ["only once"]


def test_send_durable_exit_statuses(broker, cli, tmp_path):
    br = start_durable(broker, tmp_path / "data", "--queue-max", 1)
    register(cli, br.endpoint, "bob")
    # An unknown recipient is not stored: exit 1, the known one is.
    res = dsend(cli, br.endpoint, "alice", "ghost,bob", "hi", code=1)
    assert [(r["name"], r["status"]) for r in res["recipients"]] == [
        ("ghost", "UNKNOWN_USER"), ("bob", "ACCEPTED")]
    # bob's queue holds its one message: QUEUE_FULL, exit 1.
    res = dsend(cli, br.endpoint, "alice", "bob", "no room", code=1)
    assert res["status"] == "QUEUE_FULL"
    assert [(r["name"], r["status"]) for r in res["recipients"]] == [("bob", "QUEUE_FULL")]
    # --ttl is accepted with --durable and rejected without it.
    cli_ok(cli, "fetch", "--endpoint", br.endpoint, "--name", "bob")
    res = dsend(cli, br.endpoint, "alice", "bob", "short-lived", "--ttl", 3600)
    assert res["status"] == "ACCEPTED"
    p = cli_ok(cli, "send", "--endpoint", br.endpoint, "--name", "alice", "--to", "bob",
               "--ttl", 5, "live", code=2)
    assert "--ttl needs --durable" in p.stderr()
    cli_ok(cli, "fetch", "--endpoint", br.endpoint, "--name", "bob", "--ttl", 5, code=2)
    cli_ok(cli, "history", "--endpoint", br.endpoint, "--name", "bob", "--keep", code=2)

    # A broker without a store refuses durable requests: exit 4.
    live = broker()
    p = cli_ok(cli, "send", "--endpoint", live.endpoint, "--name", "alice", "--to", "alice",
               "--durable", "--json", "nowhere", code=4)
    err = json_lines(p, "error")
    assert err and err[0]["status"] == "NOT_DURABLE", p.describe()
    p = cli_ok(cli, "fetch", "--endpoint", live.endpoint, "--name", "bob", "--json", code=4)
    assert json_lines(p, "error")[0]["status"] == "NOT_DURABLE"


# ---------------------------------------------------------------------------
# The chat


def test_chat_durable_fetch_history(broker, cli, tmp_path):
    br = start_durable(broker, tmp_path / "data")
    register(cli, br.endpoint, "bob")
    res = run_chat(br.endpoint, "alice", ["/durable", "/durable on", "/to bob kept for you",
                                          "/durable off", "/to bob gone"])
    out = res.stdout.splitlines()
    assert "durable sending is off: messages go to online users only" in out, res.stdout
    assert "  -> bob: stored #1" in out, res.stdout
    assert "  -> bob: OFFLINE" in out, res.stdout

    # bob: the stored message is pushed after the login and shown once,
    # whether it comes as a delivery or through /fetch.
    res = run_chat(br.endpoint, "bob", ["/fetch"], "--json")
    objs = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    shown = [o for o in objs if o.get("event") in ("deliver", "message")]
    assert [(o["from"], o["text"], o["seq"]) for o in shown] == [
        ("alice", "kept for you", 1)], res.stdout
    assert any(o.get("event") == "fetch" for o in objs), res.stdout

    # Acknowledged by the chat before it logged out.
    messages, _ = fetch_json(cli, br.endpoint, "bob")
    assert messages == []
    res = run_chat(br.endpoint, "bob", ["/fetch", "/history 5", "/history x"])
    out = res.stdout.splitlines()
    assert "no messages" in out, res.stdout
    assert any(line.endswith("#1] alice -> you: kept for you") for line in out), res.stdout
    assert "usage: /history [N], N from 1 to 1000" in out, res.stdout

    # chat --durable starts with durable sending on.
    res = run_chat(br.endpoint, "alice", ["/to bob second"], "--durable")
    assert "  -> bob: stored #2" in res.stdout.splitlines(), res.stdout
