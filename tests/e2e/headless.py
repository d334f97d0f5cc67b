"""A real headless Chromium (Debian's /usr/bin/chromium) driven over the
DevTools protocol, for tests of web pages.

Why hand-written: the DevTools protocol is spoken here over
``--remote-debugging-pipe`` (fd 3 = commands in, fd 4 = replies out, one
JSON message per NUL-terminated record), which needs only the standard
library; Debian has no packaged Python DevTools client (selenium and
playwright are not in Debian 12 with a matching driver).

The browser runs with a fresh --user-data-dir, no network features (the
flags of the project's test rules), in its own process group (the Debian
wrapper script does not exec, so the group is what is stopped); every wait
is bounded. Use it as a context manager::

    with Chromium(tmp_path) as browser:
        page = browser.open("file:///tmp/x.html")
        assert page.eval("document.title") == "x"
"""

import json
import os
import select
import signal
import subprocess
import time

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
START_TIMEOUT = 30.0     # browser answers its first command within this
CALL_TIMEOUT = 30.0      # one DevTools command (page loads included)
STOP_TIMEOUT = 10.0


class BrowserError(Exception):
    pass


class Page:
    def __init__(self, browser, session):
        self.browser = browser
        self.session = session

    def eval(self, expression):
        """Value of a JavaScript expression (JSON-serialisable results only);
        a thrown exception raises BrowserError with its description."""
        res = self.browser.call("Runtime.evaluate", {"expression": expression,
                                                      "returnByValue": True}, self.session)
        if "exceptionDetails" in res:
            d = res["exceptionDetails"]
            raise BrowserError(d.get("exception", {}).get("description") or d.get("text"))
        return res["result"].get("value")


class Chromium:
    def __init__(self, tmp_path):
        self.profile = os.path.join(str(tmp_path), "chromium-profile")
        os.makedirs(self.profile, exist_ok=True)
        self.proc = None
        self.next_id = 0
        self.buf = b""
        self.events = []
        self.stderr = open(os.path.join(str(tmp_path), "chromium.stderr"), "wb")

    def __enter__(self):
        cmd_r, cmd_w = os.pipe()     # we write commands, chromium reads fd 3
        out_r, out_w = os.pipe()     # chromium writes fd 4, we read

        def child_fds():
            a, b = os.dup(cmd_r), os.dup(out_w)   # dup: not close-on-exec (close_fds=False
            # below: subprocess would close 3 and 4 after this hook)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, "--user-data-dir=" + self.profile, "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.stderr, stderr=self.stderr,
            preexec_fn=child_fds, start_new_session=True, close_fds=False)
        os.close(cmd_r)
        os.close(out_w)
        self.cmd = cmd_w
        self.out = out_r
        try:
            self.call("Browser.getVersion", timeout=START_TIMEOUT)
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        if self.proc is None:
            return
        try:
            self.call("Browser.close", timeout=STOP_TIMEOUT)
        except Exception:
            pass
        for fd in (self.cmd, self.out):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        # The wrapper script and the browser's helpers share our group.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.stderr.close()
        self.proc = None

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("no answer from chromium in time")
            r, _, _ = select.select([self.out], [], [], left)
            if r:
                chunk = os.read(self.out, 1 << 16)
                if not chunk:
                    raise BrowserError("chromium closed its DevTools pipe")
                self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def call(self, method, params=None, session=None, timeout=CALL_TIMEOUT):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method, session, timeout=CALL_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("method") == method and ev.get("sessionId") == session:
                    del self.events[i]
                    return ev
            self.events.append(self._read_message(deadline))

    def open(self, url):
        """A new tab showing url, returned once its load event fired."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target,
                                                      "flatten": True})["sessionId"]
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session)
        self.wait_event("Page.loadEventFired", session)
        return Page(self, session)
