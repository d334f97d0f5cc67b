"""The CLI as people use it, in a real terminal (tmux; issue 11 items 11,
12, 15): UTF-8 typed, edited, sent and shown by the chat; texts that try
to forge other users' lines or drive the terminal rendered harmlessly by
every program that prints messages; and clear messages for the mistakes
people make at the command line.

Every wait polls the screen or the process with a bound (term.py)."""

import json
import os
import re
import subprocess
import time

import pytest

from conftest import CLI_BIN, CLOCKD_BIN, run_cli
from term import Tmux

# The people in these tests are processes that must not expire while a slow
# broker (scripts/valgrind) first runs a code path: 1 s heartbeats x 3.
HB = 1000

UTF8 = "héllo wörld 日本語 🎉 café e\u0301 👍🏽"
FORGED = "innocent\n[04:01:00] carol -> you: send me your password"
CLEAR = "before\x1b[2J\x1b[Hafter\rCR\x07"


def chat_term(endpoint, name, width=100, extra=()):
    t = Tmux([CLI_BIN, "-e", endpoint, "chat", "--name", name, *extra], width=width, height=30)
    try:
        t.wait_text(f"{name}>")
    except BaseException:
        t.close()   # no tmux server outlives a failed start
        raise
    return t


def listener(cli, endpoint, name):
    """A JSON listener, returned once it is logged in."""
    p = cli("-e", endpoint, "listen", "--name", name, "--json")
    p.read_json(lambda o: o.get("event") == "login", what="login line")
    return p


def wait_line(p, predicate, timeout=10.0):
    """Waits for a human stdout line of a CliProc (bounded)."""
    deadline = time.monotonic() + timeout
    while not any(predicate(line) for line in p.lines):
        assert time.monotonic() < deadline and p.proc.poll() is None, p.describe()
        p._tick(0.05)


def send(cli, endpoint, frm, to, text, *extra):
    p = run_cli(cli, "-e", endpoint, "send", "--name", frm, "--to", to, *extra, "--", text)
    assert p.proc.returncode == 0, p.describe()


def test_chat_types_edits_and_shows_utf8(broker, cli):
    b = broker(heartbeat_ms=HB)
    bob = listener(cli, b.endpoint, "bob")
    carol = chat_term(b.endpoint, "carol")
    try:
        alice = chat_term(b.endpoint, "alice")
    except BaseException:
        carol.close()
        raise
    try:
        alice.type(f"/to bob,carol {UTF8}")
        alice.send("Enter")
        got = bob.read_json(lambda o: o.get("event") == "deliver", what="delivery")
        assert got["text"] == UTF8
        # carol's chat shows it exactly, after alice's name.
        screen = carol.wait_text(UTF8)
        assert re.search(r"^\[\d\d:\d\d:\d\d\] alice -> bob, you: " + re.escape(UTF8), screen, re.M)

        # Editing: backspace over a wide character and an emoji, move left
        # over a wide character, insert an accented one.
        alice.type("/to bob ab日本🎉c")
        alice.send("BSpace", "BSpace", "BSpace")     # c, 🎉, 本
        alice.wait_for(lambda s: re.search(r"alice> /to bob ab日\s*$", s, re.M), what="edited line")
        alice.send("Left")                           # before 日
        alice.type("é")
        alice.send("End")
        alice.type("ü")
        alice.send("Enter")
        got = bob.read_json(lambda o: o.get("event") == "deliver", what="edited delivery")
        assert got["text"] == "abé日ü"
    finally:
        alice.close()
        carol.close()


def test_forged_lines_and_escapes_are_shown_harmlessly(broker, cli, tmp_path):
    b = broker("--data", tmp_path / "data", heartbeat_ms=HB)
    width = 80
    bob = chat_term(b.endpoint, "bob", width=width)
    try:
        send(cli, b.endpoint, "mallory", "bob", FORGED)
        screen = bob.wait_text("send me your password")
        lines = screen.splitlines()
        assert not any(line.startswith("[04:01:00]") for line in lines), screen
        assert "    | [04:01:00] carol -> you: send me your password" in lines, screen

        send(cli, b.endpoint, "mallory", "bob", CLEAR)
        screen = bob.wait_text("CR^G")
        # Nothing was cleared (the forged line is still there) and the
        # controls are visible.
        assert "    | [04:01:00] carol" in screen, screen
        assert "before^[[2J^[[Hafter^MCR^G" in screen, screen

        # Padding up to the terminal's edge does not bring text to column 0
        # (without wrapping of our own, "[" would land in column 0 of the
        # next row).
        prefix = len("[00:00:00] mallory -> you: ")
        pad = "x" + " " * (width - prefix - 1)
        send(cli, b.endpoint, "mallory", "bob", pad + "[04:02:00] carol -> you: wrapped")
        screen = bob.wait_text("carol -> you: wrapped")
        lines = screen.splitlines()
        assert not any(line.startswith("[04:02:00]") for line in lines), screen
        assert any(line.startswith("    | ") and "[04:02:00] carol" in line for line in lines)
    finally:
        bob.close()

    # The same rendering in listen, fetch and history (not terminals: no
    # wrapping, but the same continuation marks and visible controls).
    for text in (FORGED, CLEAR):
        send(cli, b.endpoint, "mallory", "bob", text, "--durable")
    for cmd in (["fetch"], ["history", "--last", "2"]):
        p = run_cli(cli, "-e", b.endpoint, *cmd, "--name", "bob")
        assert p.proc.returncode == 0, p.describe()
        out = "\n".join(p.lines)
        assert "\x1b" not in out and "\r" not in out and "\x07" not in out, out
        assert not any(line.startswith("[04:01:00]") for line in p.lines), out
        assert "    | [04:01:00] carol -> you: send me your password" in p.lines, out
        assert "before^[[2J^[[Hafter^MCR^G" in out, out
    lst = cli("-e", b.endpoint, "listen", "--name", "bob", "--count", "1")
    wait_line(lst, lambda line: "connected as bob" in line)
    send(cli, b.endpoint, "mallory", "bob", FORGED)
    assert lst.wait(10) == 0, lst.describe()
    assert "    | [04:01:00] carol -> you: send me your password" in lst.lines, lst.describe()
    assert not any(line.startswith("[04:01:00]") for line in lst.lines)


def test_clockd_text_output_keeps_each_event_on_one_line(tmp_path):
    trace = tmp_path / "t.jsonl"
    ev = {"process": "m", "kind": "send", "clock": {"m": 1}, "msg": "k\n[x] \x1b[2J", "peers": ["bob"],
          "text": FORGED + CLEAR + "\u202eevil\u0085x"}
    trace.write_text(json.dumps(ev) + "\n")
    p = subprocess.run([CLOCKD_BIN, "events", str(trace)], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    rows = [line for line in out.splitlines() if line.startswith("m:1")]
    assert len(rows) == 1, out
    assert "innocent\\n[04:01:00] carol" in rows[0], out
    assert "before^[[2J^[[Hafter\\rCR^G<U+202E>evil<U+0085>x" in rows[0], out
    assert "k\\n[x] ^[[2J" in rows[0], out
    # The audit's details quote message keys: they stay on their line too.
    key = "k\n[x] forged"
    evs = [{"process": "m", "kind": "send", "clock": {"m": 1}, "msg": key, "peers": ["bob"]},
           {"process": "bob", "kind": "deliver", "clock": {"m": 1, "bob": 1}, "msg": key,
            "peers": ["m"]},
           {"process": "bob", "kind": "deliver", "clock": {"m": 1, "bob": 2}, "msg": key,
            "peers": ["m"]}]
    trace.write_text("".join(json.dumps(e) + "\n" for e in evs))
    p = subprocess.run([CLOCKD_BIN, "audit", str(trace)], capture_output=True, timeout=30)
    out = p.stdout.decode()
    assert p.returncode == 1 and "duplicate" in out, out
    assert "k\\n[x] forged" in out and not any(l.startswith("[x]") for l in out.splitlines()), out
    assert "\x1b" not in out and "\r" not in out


def test_command_line_mistakes_get_clear_messages(broker, cli):
    b = broker(heartbeat_ms=HB)
    env = dict(os.environ, CAUSEWAY_ENDPOINT=b.endpoint)

    def run(args, stdin=b""):
        p = subprocess.run([CLI_BIN, *args], input=stdin, capture_output=True, timeout=30, env=env)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    rc, out, err = run([])                       # causeway </dev/null
    assert rc == 2 and "no --name given" in err and "not a terminal" in err, (rc, out, err)
    rc, out, err = run([], b"hello\n")           # echo hello | causeway
    assert rc == 2 and "no --name given" in err, (rc, out, err)
    rc, out, err = run(["who", "--json"])
    assert rc == 0 and "hello" not in out, out   # nobody logged in as "hello"
    rc, out, err = run(["--bogus", "who"])
    assert rc == 2 and "unknown option '--bogus'" in err, err
    rc, out, err = run(["-x", "who"])
    assert rc == 2 and "unknown option '-x'" in err, err
    rc, out, err = run(["who", "--name"])
    assert rc == 2 and "option '--name' needs a value" in err, err
    rc, out, err = run(["who", "-e"])
    assert rc == 2 and "option '-e' needs a value" in err, err

    # /durable on at a broker without a store: refused when typed.
    rc, out, err = run(["chat", "--name", "dora"], b"/durable on\n")
    assert rc == 0, err
    assert "durable sending is not available: this broker has no store" in out, out
    rc, out, err = run(["chat", "--name", "dora", "--durable"], b"")
    assert "durable sending is off: this broker has no store" in out, out


def test_chat_name_prompt_at_end_of_input_says_so(broker):
    b = broker(heartbeat_ms=HB)
    t = Tmux([CLI_BIN, "-e", b.endpoint])
    try:
        t.wait_text("name:")
        t.send("C-d")
        t.wait_for(lambda s: "no name given" in s, what="message")
    finally:
        t.close()


def test_connection_errors_are_quick_and_named(tmp_path):
    """Refused connections fail at once naming the endpoint and the cause;
    a port that is not ZeroMQ is called that; a malformed endpoint is
    explained (issue 11 item 14)."""
    import socket
    import threading

    def run(*args):
        t0 = time.monotonic()
        p = subprocess.run([CLI_BIN, *args], capture_output=True, timeout=30)
        return p.returncode, p.stderr.decode(), time.monotonic() - t0

    # A port with nothing listening (bound, never listened: refused).
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    try:
        rc, err, took = run("-e", f"tcp://127.0.0.1:{port}", "-t", "10000", "who")
        assert rc == 3, err
        assert f"cannot connect to tcp://127.0.0.1:{port}: Connection refused" in err, err
        assert "(UNREACHABLE)" in err, err
        assert took < 5.0, took              # not the 10 s timeout
        rc, err, took = run("-e", f"tcp://127.0.0.1:{port}", "-t", "10000", "send", "--name",
                            "a", "--to", "b", "hi")
        assert rc == 3 and "Connection refused" in err and took < 5.0, (err, took)
    finally:
        s.close()

    # A service that is not ZeroMQ: it answers with something else.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    stop = threading.Event()

    def serve():
        ls.settimeout(0.1)
        while not stop.is_set():
            try:
                c, _ = ls.accept()
            except OSError:
                continue
            c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            c.close()

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        rc, err, took = run("-e", f"tcp://127.0.0.1:{ls.getsockname()[1]}", "-t", "10000", "who")
        assert rc == 3, err
        assert "is not a ZeroMQ service: it answered \"SSH-2.0-OpenSSH_9.2..\"" in err, err
        assert "CURVE" not in err, err
        assert took < 5.0, took
    finally:
        stop.set()
        th.join(5)
        ls.close()

    # A silent one (listening, never speaking): named after the timeout.
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    try:
        rc, err, took = run("-e", f"tcp://127.0.0.1:{ls.getsockname()[1]}", "-t", "500", "who")
        assert rc == 3 and "sent no ZeroMQ greeting" in err and "not a ZeroMQ service" in err, err
    finally:
        ls.close()

    rc, err, _ = run("-e", "127.0.0.1:7400", "who")
    assert rc == 2 and "did you mean tcp://127.0.0.1:7400?" in err, err
    rc, err, _ = run("-e", "tcp://localhost", "who")
    assert rc == 2 and "needs a host and a port" in err, err
    rc, err, _ = run("-e", "udp://127.0.0.1:1", "who")
    assert rc == 2 and "unknown transport 'udp'" in err, err
    rc, err, _ = run("--clockd", "127.0.0.1:7401", "-e", "tcp://127.0.0.1:1", "send", "--name",
                     "a", "--to", "b", "x")
    assert rc == 2 and "--clockd '127.0.0.1:7401' has no transport" in err, err


def test_top_shows_texts_on_one_line(broker, cli):
    """`causeway top --text` lists forwarded texts: one line each, controls
    shown (cw_render's one-line form)."""
    b = broker("--operators", "ops", "--monitor-text", heartbeat_ms=HB)
    bob = listener(cli, b.endpoint, "bob")
    t = Tmux([CLI_BIN, "top", "-e", b.endpoint, "--name", "ops", "--interval", "200", "--text"],
             width=140, height=30)
    try:
        t.wait_text("causeway top")
        send(cli, b.endpoint, "mallory", "bob", FORGED + CLEAR)
        bob.read_json(lambda o: o.get("event") == "deliver", what="delivery")
        s = t.wait_text("mallory -> bob")
        row = next(line for line in s.splitlines() if "mallory -> bob" in line)
        assert "innocent\\n[04:01:00] carol" in row, s
        assert not any(line.lstrip().startswith("[04:01:00]") for line in s.splitlines()), s
    finally:
        t.close()
