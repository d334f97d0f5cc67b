"""`causeway top` in a real terminal: Debian's tmux, driven with send-keys
and read with capture-pane.

The test starts its own tmux server (a socket in the test's directory,
killed at teardown) running `causeway top` against a real broker, then
changes the broker's state with raw clients and waits (polling the screen,
bounded) for the figures on screen to follow: sessions and the user log,
message counts, recent messages with and without texts (t), refusals by
status, a logout, a resize, and the quit key with exit status 0.
"""

import os
import shutil
import subprocess
import time

import pytest

from conftest import CLI_BIN, TIMEOUT_SCALE, assert_status

SCREEN_TIMEOUT = 10.0 * TIMEOUT_SCALE

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, tmp_path):
        self.sock = str(tmp_path / "tmux.sock")
        conf = tmp_path / "tmux.conf"
        conf.write_text("set -g remain-on-exit on\nset -g default-terminal screen\n"
                        "set -g status off\n")
        self.conf = str(conf)
        self.started = False

    def run(self, *args, check=True):
        r = subprocess.run(["tmux", "-S", self.sock, "-f", self.conf, *args],
                           capture_output=True, text=True, timeout=10)
        if check:
            assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def start(self, cmd, width, height):
        """Runs cmd in the pane; its exit status lands in self.status_file."""
        self.status_file = self.sock + ".status"
        env_cmd = f"LANG=C.UTF-8 LC_ALL=C.UTF-8 {cmd}; echo $? > {self.status_file}"
        self.run("new-session", "-d", "-s", "top", "-x", str(width), "-y", str(height), env_cmd)
        self.started = True

    def exit_status(self):
        """Waits (bounded) for the command to end; its exit status."""
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while not (os.path.exists(self.status_file) and
                   open(self.status_file).read().endswith("\n")):
            assert time.monotonic() < deadline, f"the command did not end:\n{self.screen()}"
            time.sleep(0.05)
        return int(open(self.status_file).read())

    def screen(self):
        return self.run("capture-pane", "-p", "-t", "top")

    def wait(self, predicate, what):
        deadline = time.monotonic() + SCREEN_TIMEOUT
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"screen never showed {what}; it shows:\n{text}")
            time.sleep(0.05)  # polling the screen: the bounded wait for the redraw

    def kill(self):
        if self.started:
            self.run("kill-server", check=False)


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    yield t
    t.kill()


def line_with(text, *parts):
    return any(all(p in line for p in parts) for line in text.splitlines())


def test_top_follows_the_broker(broker, hub, pb, tmux, tmp_path):
    b = broker("--data", tmp_path / "d", "--operators", "ops", "--monitor-text")
    tmux.start(f"{CLI_BIN} top -e {b.endpoint} --name ops --interval 200 --text", 120, 32)
    tmux.wait(lambda s: "causeway top" in s and "sessions 1/10000" in s, "the header")

    alice = hub.logged_in(b.endpoint, "alice")
    bob = hub.logged_in(b.endpoint, "bob")
    s = tmux.wait(lambda s: "sessions 3/10000" in s, "three sessions")
    assert line_with(s, "* alice", "127.0.0.1")
    assert line_with(s, "* bob", "127.0.0.1")

    for i in range(7):
        assert_status(pb, alice.send_text(to=["bob"], text="héllo ✓ top"), "OK")
    assert_status(pb, bob.send_text(to=["alice"], text="stored", durable=True), "ACCEPTED")
    assert_status(pb, alice.send_text(to=[], text="x"), "BAD_REQUEST")
    s = tmux.wait(lambda s: "messages in 8 " in s and "BAD_REQUEST=1" in s,
                  "8 messages in and the refusal")
    assert "out 8 " in s  # 7 live to bob, 1 durable pushed to alice
    assert line_with(s, "live", "alice -> bob", "héllo ✓ top")
    assert line_with(s, "durable", "bob -> alice", "stored")
    assert "fsyncs" in s and "commit p50 <=" in s

    # t hides the texts; the messages stay listed.
    tmux.run("send-keys", "-t", "top", "t")
    s = tmux.wait(lambda s: "héllo" not in s and "alice -> bob" in s, "texts hidden")
    assert "t texts" in s and "(on)" not in s

    alice.logout()
    s = tmux.wait(lambda s: "sessions 2/10000" in s, "alice gone")
    assert line_with(s, "  alice", "offline")

    # Resize: everything is drawn again within the new width.
    tmux.run("resize-window", "-t", "top", "-x", "80", "-y", "20")
    s = tmux.wait(lambda s: "80x20" in s, "the new size in the footer")
    assert all(len(line) <= 80 for line in s.splitlines())
    assert "causeway top" in s and "sessions 2/10000" in s
    assert len(s.splitlines()) <= 20

    # q quits with status 0.
    tmux.run("send-keys", "-t", "top", "q")
    assert tmux.exit_status() == 0


def test_top_refused_without_operator(broker, tmux):
    b = broker("--operators", "ops")
    r = subprocess.run([CLI_BIN, "top", "-e", b.endpoint, "--name", "eve"], capture_output=True,
                       text=True, timeout=10 * TIMEOUT_SCALE, stdin=subprocess.DEVNULL)
    assert r.returncode == 4, r
    assert "not an operator" in r.stderr
    r = subprocess.run([CLI_BIN, "top", "-e", b.endpoint], capture_output=True, text=True,
                       timeout=10 * TIMEOUT_SCALE)
    assert r.returncode == 2 and "need --name" in r.stderr


def test_top_count_ends_it(broker, tmux):
    b = broker("--operators", "ops")
    tmux.start(f"{CLI_BIN} top -e {b.endpoint} --name ops --interval 100 --count 3", 100, 25)
    assert tmux.exit_status() == 0
