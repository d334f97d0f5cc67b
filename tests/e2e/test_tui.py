"""`causeway tui` driven in a real terminal: Debian's tmux.

Each test starts its own tmux server on a socket in its tmp_path (``-S``,
no user configuration: ``-f /dev/null``), one session per TUI at 120x40,
types with ``send-keys`` and reads the screen with ``capture-pane -p``.
Every wait polls the screen until the expected text is there, bounded;
nothing sleeps to synchronise. The tmux server is stopped by PID at
teardown. Brokers are real, on free loopback ports (conftest.broker).

Covered: login and the user log (online/offline marks, every user ever
seen), choosing recipients (1-to-1 with /to and Tab completion, 1-to-n by
toggling users in the list, everyone), the fates of sent messages updated
in place (delivered, offline, stored #seq), receiving while typing (the
half-typed line survives), UTF-8 round trip (accents, CJK, emoji,
combining marks), control characters shown harmlessly, resize, fetch and
history keys, the clock pane, a monochrome terminal, the exchange view
against two `causeway exchange` processes, and reconnection across a
broker restart.
"""

import os
import signal
import subprocess
import time

import pytest

from conftest import CLI_BIN, TIMEOUT_SCALE

WAIT = 10.0 * TIMEOUT_SCALE
POLL = 0.05


class Tmux:
    """One tmux server of the test."""

    def __init__(self, tmp_path):
        self.sock = str(tmp_path / "tmux.sock")
        self.dir = str(tmp_path)
        self.sessions = []
        self.pid = None

    def run(self, *args, check=True):
        res = subprocess.run(["tmux", "-S", self.sock, "-f", "/dev/null", *args],
                             capture_output=True, text=True, timeout=10)
        if check:
            assert res.returncode == 0, f"tmux {args}: {res.stderr}"
        return res

    def start(self, name, argv, width=120, height=40, env=None):
        cmd = ["env", "LANG=C.UTF-8", "LC_ALL=C.UTF-8"]
        for k, v in (env or {}).items():
            cmd.append(f"{k}={v}")
        cmd += [CLI_BIN, *map(str, argv)]
        status = os.path.join(self.dir, f"{name}.status")
        # The shell writes the program's exit status to a file the test
        # waits for; the pane stays (remain-on-exit, set in the same tmux
        # command, before anything can exit) so its last screen is kept.
        shell = f"{subprocess.list2cmdline(cmd)}; echo $? > {status}"
        self.run("new-session", "-d", "-s", name, "-x", str(width), "-y", str(height),
                 shell, ";", "set-option", "-t", name, "remain-on-exit", "on")
        if self.pid is None:
            self.pid = int(self.run("display-message", "-p", "-t", name, "#{pid}").stdout)
        self.sessions.append(name)
        return Screen(self, name, status)

    def stop(self):
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(POLL)
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Screen:
    """One TUI in one tmux session."""

    def __init__(self, tmux, name, status_path):
        self.tmux = tmux
        self.name = name
        self.status_path = status_path

    def text(self):
        return self.tmux.run("capture-pane", "-p", "-t", self.name).stdout

    def lines(self):
        return self.text().split("\n")

    def keys(self, *keys):
        """Named keys (Enter, F5, Tab, Space, PageUp, ...)."""
        self.tmux.run("send-keys", "-t", self.name, *keys)

    def type(self, text):
        """Literal text, typed."""
        self.tmux.run("send-keys", "-t", self.name, "-l", text)

    def send(self, text):
        self.type(text)
        self.keys("Enter")

    def wait(self, predicate, what, timeout=WAIT):
        deadline = time.monotonic() + timeout
        while True:
            screen = self.text()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {what} within {timeout}s; screen:\n{screen}")
            time.sleep(POLL)   # polling the screen: the bounded wait of a terminal test

    def wait_text(self, needle, timeout=WAIT):
        return self.wait(lambda s: needle in s, repr(needle), timeout)

    def line_with(self, needle):
        for line in self.lines():
            if needle in line:
                return line
        return None

    def wait_exit(self, timeout=WAIT):
        """The program's exit status (written by the pane's shell)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(self.status_path) as f:
                    text = f.read().strip()
                if text:
                    return int(text)
            except FileNotFoundError:
                pass
            time.sleep(POLL)
        raise AssertionError(f"{self.name} did not exit; screen:\n{self.text()}")


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.stop()


def tui(tmux, br, name, *extra, **kw):
    s = tmux.start(name, ["tui", "--name", name, "--endpoint", br.endpoint, *extra], **kw)
    s.wait_text(f"logged in to {br.endpoint} as {name}")
    return s


def register(cli, endpoint, name):
    """Makes name known to the broker (and offline again)."""
    p = cli("send", "--endpoint", endpoint, "--name", name, "--all", "hello")
    p.wait()


def durable_broker(broker, tmp_path, *extra):
    return broker("--data", str(tmp_path / "data"), *extra)


def test_send_one_set_all_with_fates(broker, cli, tmux, tmp_path):
    br = durable_broker(broker, tmp_path)
    register(cli, br.endpoint, "dave")
    alice = tui(tmux, br, "alice")
    bob = tui(tmux, br, "bob")
    carol = tui(tmux, br, "carol")
    # The user log: everyone ever seen, with online marks.
    alice.wait(lambda s: "● bob" in s and "● carol" in s and "○ dave" in s, "user log")

    # 1-to-1, the name completed with Tab.
    alice.type("/to b")
    alice.keys("Tab")
    alice.wait(lambda s: "\n> /to bob\n" in s, "completed name")
    alice.keys("Enter")
    alice.wait_text("to bob (1-to-1)")
    alice.send("hi bob")
    bob.wait_text("alice → you: hi bob")
    alice.wait_text("    bob: delivered")
    assert "hi bob" not in carol.text()

    # 1-to-n: toggle bob and carol in the user list.
    alice.keys("F3")   # 1-to-1 -> 1-to-n (set)
    alice.keys("F4")
    alice.wait_text("users (4) *")
    # Sorted: alice (you), bob, carol, dave; the highlight starts at alice.
    alice.keys("Down", "Space", "Down", "Space", "Escape")
    alice.wait_text("to bob, carol (1-to-n)")
    alice.wait(lambda s: "[x]bob" in s and "[x]carol" in s and "[ ]dave" in s, "set marks")
    alice.send("to the two of you")
    bob.wait_text("alice → you, carol: to the two of you")
    carol.wait_text("alice → bob, you: to the two of you")
    alice.wait_text("    bob: delivered · carol: delivered")

    # Everyone: live, so dave (offline) gets nothing and alice sees it.
    alice.send("/all")
    alice.wait_text("to everyone (1-to-all)")
    alice.send("all hands")
    for s in (bob, carol):
        s.wait_text("alice → everyone: all hands")
    line = alice.wait(lambda s: "dave: offline" in s, "offline fate")
    fates = [l for l in line.split("\n") if "dave: offline" in l][0]
    assert "bob: delivered" in fates and "carol: delivered" in fates

    # Durable to dave (offline): stored, with its seq.
    alice.keys("F2")
    alice.wait_text("· durable ·")
    alice.send("/to dave")
    alice.send("see you later")
    alice.wait_text("    dave: stored #")
    assert "✉ you → dave: see you later" in alice.text()

    # dave logs in later: the stored message arrives, marked durable.
    dave = tui(tmux, br, "dave")
    dave.wait_text("✉ alice → you: see you later")
    alice.wait_text("● dave")

    # F10 quits cleanly (logout: the others see alice go offline).
    alice.keys("F10")
    assert alice.wait_exit() == 0
    bob.wait_text("○ alice")


def test_receive_while_typing_utf8_and_controls(broker, cli, tmux, tmp_path):
    br = broker()
    alice = tui(tmux, br, "alice")
    bob = tui(tmux, br, "bob")
    alice.wait_text("● bob")
    # Half a line typed, then a message arrives: the line is untouched.
    alice.type("half typed")
    bob.send("/to alice")
    bob.send("interrupting")
    alice.wait_text("bob → you: interrupting")
    assert alice.line_with("> half typed") is not None, alice.text()
    alice.type(" and more")
    alice.keys("Enter")
    bob.wait_text("alice → everyone: half typed and more")

    # UTF-8 round trip: accents, CJK (wide), emoji, a combining mark.
    text = "héllo 日本語 👍 café e\u0301!"
    alice.send(text)
    screen = bob.wait_text("alice → everyone: héllo 日本語 👍")
    line = [l for l in screen.split("\n") if "héllo" in l][0]
    assert text in line, repr(line)
    # Editing by display width: Left over the wide characters, then insert.
    alice.type("日本")
    alice.keys("Left", "Left")
    alice.type(">")
    alice.keys("End")
    alice.type("<")
    alice.keys("Enter")
    bob.wait_text("alice → everyone: >日本<")

    # Control characters from the wire cannot move the cursor or make a
    # second line: shown as visible symbols on the message's own line.
    p = cli("send", "--endpoint", br.endpoint, "--name", "mallory", "--to", "alice",
            "one\nfake] bob → you: forged\x1b[2J\x07")
    assert p.wait() == 0
    # common/cw_render's one-line rule: the newline shows as \n, ESC as ^[.
    screen = alice.wait_text("mallory → you: one\\nfake] bob → you: forged^[[2J^G")
    assert "\n[" not in screen.split("mallory")[1].split("\n", 1)[0]
    assert not any(l.startswith("fake]") for l in screen.split("\n"))


def test_resize_colours_clock_and_listings(broker, cli, tmux, tmp_path):
    br = durable_broker(broker, tmp_path)
    # A monochrome terminal: vt100 has no colours; the screen still reads.
    alice = tui(tmux, br, "alice", env={"TERM": "vt100"})
    bob = tui(tmux, br, "bob")
    alice.wait_text("● bob")
    alice.keys("F2")
    alice.send("/to bob")
    alice.send("first stored")
    # stored #1, then read once bob's TUI has shown and acknowledged it.
    alice.wait(lambda s: "bob: stored #1" in s or "bob: read " in s, "stored fate")
    bob.wait_text("✉ alice → you: first stored")

    # Clock pane: the changed entries are marked.
    bob.keys("F7")
    screen = bob.wait_text("vector clock")
    assert "*bob: 1" in screen and "*alice: 1" in screen, screen
    bob.send("/to alice")
    bob.send("answer")
    screen = bob.wait_text("*bob: 2")
    assert " alice: 1" in screen, screen   # unchanged by our send: not marked

    # History (F6) lists the stored messages again; fetch (F5) finds none
    # waiting (all shown and acknowledged).
    bob.keys("F6")
    bob.wait_text("history: 1 message")
    bob.wait_text("(history) ✉ alice → you: first stored")
    bob.keys("F5")
    bob.wait_text("check for messages: 0 messages (nothing waiting)")

    # Resize: the layout follows, the status line stays at the bottom.
    tmux.run("resize-window", "-t", "bob", "-x", "70", "-y", "20")
    bob.wait(lambda s: len(s.rstrip("\n").split("\n")) == 20 and
             s.rstrip("\n").split("\n")[-1].startswith("● connected"), "resized screen")
    lines = bob.text().rstrip("\n").split("\n")
    assert all(len(l) <= 70 for l in lines), lines
    assert "to alice (1-to-1)" in lines[-3]
    # Still working after the resize.
    alice.send("after resize")
    bob.wait_text("alice → you: after resize")
    tmux.run("resize-window", "-t", "bob", "-x", "120", "-y", "40")
    bob.wait(lambda s: len(s.rstrip("\n").split("\n")) == 40, "grown screen")

    # Help overlay.
    bob.keys("F1")
    bob.wait_text("causeway tui — keys")
    bob.keys("Escape")
    bob.wait(lambda s: "causeway tui — keys" not in s, "help closed")

    # Scrollback: PageUp shows older lines and says there is more below.
    for i in range(40):
        alice.send(f"line {i:02d}")
    bob.wait_text("alice → you: line 39")
    assert "line 00" not in bob.text()
    bob.keys("PageUp", "PageUp")
    bob.wait_text("more below")
    bob.keys("PageDown", "PageDown", "PageDown")
    bob.wait(lambda s: "more below" not in s and "line 39" in s, "back at the bottom")


def test_failed_live_send_is_kept_and_resent(broker, cli, tmux, tmp_path):
    br = broker()
    port = br.port
    alice = tui(tmux, br, "alice")
    bob = tui(tmux, br, "bob")
    alice.wait_text("● bob")
    alice.send("/to bob")
    alice.send("before the restart")
    bob.wait_text("alice → you: before the restart")

    br.kill()
    alice.wait_text("connection to the broker lost")
    alice.wait_text("reconnecting")
    # A live message while the broker is gone is not lost from the screen.
    alice.send("while away")
    alice.wait_text("not sent: ")
    alice.wait_text("F9 resends")

    br2 = broker("--bind", f"tcp://127.0.0.1:{port}")
    assert br2.port == port
    alice.wait_text("reconnected to", timeout=20 * TIMEOUT_SCALE)
    bob.wait_text("reconnected to", timeout=20 * TIMEOUT_SCALE)
    alice.wait(lambda s: s.rstrip("\n").split("\n")[-1].startswith("● connected"), "connected")
    alice.keys("F9")
    bob.wait_text("alice → you: while away")
    alice.wait(lambda s: "not sent" not in s and "bob: delivered" in s.split("while away")[1],
               "resent and delivered")
    assert bob.text().count("while away") == 1


def test_exchange_view(broker, cli, tmux, tmp_path):
    br = broker()
    a = tui(tmux, br, "A")
    others = [cli("exchange", "--endpoint", br.endpoint, "--name", n, "--group", "A,B,C",
                  "--min-ms", 20, "--max-ms", 60, "--count", 3, "--seed", 7) for n in ("B", "C")]
    a.send("/exchange A,B,C 20 60 3")
    a.wait_text("exchange view")
    a.wait_text("all online; clock")
    a.wait_text("finished: 3 sent", timeout=30 * TIMEOUT_SCALE)
    screen = a.text()
    assert "sent to " in screen and "from " in screen and "done to every member" in screen
    for p in others:
        assert p.wait(timeout=30) == 0, p.describe()
    # The clock-only messages went to the exchange log, not the conversation.
    a.keys("F8")
    a.wait(lambda s: "exchange view" not in s, "conversation view")
    assert "B → you:" not in a.text()


def test_read_receipts_update_the_fate(broker, cli, tmux, tmp_path):
    br = durable_broker(broker, tmp_path)
    register(cli, br.endpoint, "dave")
    alice = tui(tmux, br, "alice", "--durable")
    bob = tui(tmux, br, "bob")
    alice.wait_text("● bob")
    assert "durable + receipts" in alice.text()
    alice.send("/to bob")
    alice.send("please confirm")
    # bob's TUI shows it (the sender asked for a receipt), then acknowledges
    # it: alice's fate line turns from stored to read, in place.
    bob.wait_text("alice → you: please confirm  (read receipt asked)")
    line = alice.wait(lambda s: "    bob: read " in s, "read fate")
    assert "bob: stored" not in line
    # Offline reader: dave reads later while alice is away; the receipt
    # waits in alice's queue and reaches her next session.
    alice.send("/to dave")
    alice.send("for later")
    alice.wait_text("    dave: stored #")
    alice.keys("F10")
    assert alice.wait_exit() == 0
    dave = tui(tmux, br, "dave")
    dave.wait_text("alice → you: for later  (read receipt asked)")
    alice2 = tmux.start("alice2", ["tui", "--name", "alice", "--endpoint", br.endpoint,
                                   "--durable"])
    alice2.wait_text("dave read your message alice-")
    # Without receipts, nothing asks.
    alice2.send("/receipts off")
    alice2.wait(lambda s: "durable + receipts" not in s and "· durable ·" in s, "receipts off")
    alice2.send("/to bob")
    alice2.send("no receipt please")
    bob.wait_text("alice → you: no receipt please")
    assert "no receipt please  (read receipt asked)" not in bob.text()
