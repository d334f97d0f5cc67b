"""A real terminal for tests: one tmux server of our own (its own socket, so
nothing touches the user's tmux), one detached session of a fixed size
running a command. Keys go in with send-keys; the screen comes back with
capture-pane -p. Every wait polls the screen (or a condition) with a bound:
nothing sleeps to synchronise.

tmux is a Debian package (scripts/setup installs it)."""

import os
import shlex
import subprocess
import time
import uuid

POLL_S = 0.02
# Under scripts/valgrind the programs are slower: waits scale like conftest's.
SCALE = float(os.environ.get("CW_TIMEOUT_SCALE", "1"))


class Tmux:
    def __init__(self, command, width=120, height=40, env=None, cwd=None):
        """Starts `command` (a list) in a new detached session. env: extra
        environment variables for it (LANG and LC_ALL default to
        C.UTF-8, TERM to xterm-256color inside tmux)."""
        self.socket = f"cwtest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.session = "t"
        full_env = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        full_env.update(env or {})
        assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in full_env.items())
        shell_cmd = f"exec env {assigns} {shlex.join(map(str, command))}"
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", self.session, "-x", str(width),
                  "-y", str(height), *(["-c", str(cwd)] if cwd else []), shell_cmd)
        # Keep the pane (and its last screen) when the program exits.
        self.tmux("set-option", "-t", self.session, "remain-on-exit", "on")

    def tmux(self, *args, check=True):
        p = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, timeout=10)
        if check and p.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {p.stderr.decode(errors='replace')}")
        return p.stdout.decode(errors="replace")

    def send(self, *keys):
        """send-keys: named keys (Enter, BSpace, Left, C-u) and, with
        literal(), text."""
        self.tmux("send-keys", "-t", self.session, *keys)

    def type(self, text):
        """Types text literally (UTF-8 goes in as the bytes a terminal sends)."""
        self.tmux("send-keys", "-t", self.session, "-l", text)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def pane_pid(self):
        return int(self.tmux("display-message", "-p", "-t", self.session, "#{pane_pid}").strip())

    def dead(self):
        out = self.tmux("display-message", "-p", "-t", self.session, "#{pane_dead}", check=False)
        return out.strip() == "1"

    def wait_for(self, predicate, timeout=10.0, what="screen"):
        """Polls the screen until predicate(screen) is true; returns the screen."""
        timeout *= SCALE
        deadline = time.monotonic() + timeout
        while True:
            s = self.screen()
            if predicate(s):
                return s
            if time.monotonic() > deadline:
                raise AssertionError(f"terminal: no {what} within {timeout}s; screen:\n{s}")
            time.sleep(POLL_S)

    def wait_text(self, text, timeout=10.0):
        return self.wait_for(lambda s: text in s, timeout, repr(text))

    def kill_session(self):
        """Closes the terminal: tmux hangs up the pane (SIGHUP to its process)."""
        self.tmux("kill-session", "-t", self.session, check=False)

    def close(self):
        self.tmux("kill-server", check=False)


def wait_until(cond, timeout=10.0, what="condition"):
    timeout *= SCALE
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s")
        time.sleep(POLL_S)


def pid_alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
