"""Shared fixtures for causeway's end-to-end and interop tests.

What lives here:
  - ``pb``: causeway.proto compiled with ``protoc --python_out`` at test time
    (never committed) and imported as a module;
  - ``broker``: a factory starting real ``causeway-broker`` processes on free
    loopback ports (``tcp://127.0.0.1:*``; the broker prints
    ``listening tcp://127.0.0.1:PORT`` as its first stdout line), stopped at
    teardown with SIGTERM (must exit 0) and SIGKILL after a bound;
  - ``hub``: a zmq context plus every RawClient of the test. RawClient is a
    raw DEALER speaking the protocol frame by frame. While any client waits,
    the hub sends heartbeats for every other logged-in client, so idle
    clients do not expire behind the test's back (the brokers run with
    200 ms heartbeats x 3);
  - ``cli``: runs the C CLI (``$CW_BUILD_DIR/client/causeway``) as a
    subprocess with bounded waits, pumping the hub's heartbeats meanwhile.

Every wait is bounded; nothing sleeps to synchronise: tests wait for the
reply or the event they expect. Processes a test starts are killed at
teardown.
"""

import json
import os
import queue
import select
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CW_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("CW_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
BROKER_BIN = os.path.join(BUILD_DIR, "broker", "causeway-broker")
CLI_BIN = os.path.join(BUILD_DIR, "client", "causeway")
CLOCKD_BIN = os.path.join(BUILD_DIR, "clockd", "causeway-clockd")

# scripts/valgrind runs every broker under a wrapper command: CW_BROKER_WRAPPER
# (split like a shell would) is put before the broker's command line, and
# the bounds below are multiplied by CW_TIMEOUT_SCALE.
BROKER_WRAPPER = shlex.split(os.environ.get("CW_BROKER_WRAPPER", ""))
TIMEOUT_SCALE = float(os.environ.get("CW_TIMEOUT_SCALE", "1"))

HEARTBEAT_MS = 200       # brokers in tests: short heartbeats keep expiry tests fast
LIVENESS = 3
START_TIMEOUT = 10.0 * TIMEOUT_SCALE    # broker must print its endpoint within this
STOP_TIMEOUT = 5.0 * TIMEOUT_SCALE      # broker must exit after SIGTERM within this
REQUEST_TIMEOUT = 3.0 * TIMEOUT_SCALE   # default bound for a reply
PUMP_SLICE = 0.02        # poll granularity while waiting, seconds
CLIENT_HB_S = 0.1        # raw clients send a heartbeat after this much silence


def terminate(proc, timeout=STOP_TIMEOUT):
    """SIGTERM, a bounded wait, SIGKILL if that ran out. Returns True if the
    process had to be killed (the exit code is proc.returncode)."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
        return True


def now_us():
    return time.time_ns() // 1000


# ---------------------------------------------------------------------------
# Reporting: remember each phase's outcome so fixtures can dump logs on failure.

@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _test_failed(request):
    rep = getattr(request.node, "rep_call", None)
    return rep is None or rep.failed


# ---------------------------------------------------------------------------
# Protobuf module

@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """causeway_pb2, compiled from proto/causeway.proto for this session."""
    out = tmp_path_factory.mktemp("causeway_pb")
    proto_dir = os.path.join(SOURCE_DIR, "proto")
    res = subprocess.run(
        ["protoc", f"--proto_path={proto_dir}", f"--python_out={out}",
         os.path.join(proto_dir, "causeway.proto")],
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"protoc failed: {res.stderr}"
    sys.path.insert(0, str(out))
    try:
        import causeway_pb2
    finally:
        sys.path.remove(str(out))
    return causeway_pb2


# ---------------------------------------------------------------------------
# The Python client, as installed: the build's python-client target runs
# `pip install --target $CW_BUILD_DIR/python clients/python` (offline, with
# Debian's setuptools; setup.py generates causeway_pb2 then). Tests import
# that, never the source tree.

PY_INSTALLED = os.path.join(BUILD_DIR, "python")


def import_installed_causeway():
    """The causeway package from PY_INSTALLED (fails the test if it is not
    there or would come from elsewhere)."""
    init = os.path.join(PY_INSTALLED, "causeway", "__init__.py")
    if not os.path.isfile(init):
        pytest.fail(f"the Python client is not installed in {PY_INSTALLED} "
                    "(cmake --build BUILD --target python-client)")
    sys.path.insert(0, PY_INSTALLED)
    try:
        import causeway
    finally:
        sys.path.remove(PY_INSTALLED)
    assert os.path.realpath(causeway.__file__) == os.path.realpath(init), causeway.__file__
    assert os.path.dirname(os.path.realpath(causeway.pb.__file__)) == \
        os.path.dirname(os.path.realpath(init)), causeway.pb.__file__
    return causeway


def status_name(pb, value):
    try:
        return pb.Status.Name(value)[len("STATUS_"):]
    except ValueError:
        return f"<{value}>"


def status_value(pb, name):
    return pb.Status.Value("STATUS_" + name)


def assert_status(pb, reply, name):
    """Asserts reply (a Reply message) has status `name` ("OK", "NAME_TAKEN")."""
    want = status_value(pb, name)
    assert reply.status == want, (
        f"expected {name}, got {status_name(pb, reply.status)} ({reply.detail!r})")


# ---------------------------------------------------------------------------
# Wire helpers for hand-made frames

def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def field_key(number, wire_type):
    return varint((number << 3) | wire_type)


def field_varint(number, value):
    return field_key(number, 0) + varint(value)


def field_bytes(number, data):
    return field_key(number, 2) + varint(len(data)) + data


# ---------------------------------------------------------------------------
# Broker processes

class Broker:
    """One causeway-broker process."""

    def __init__(self, args, log_path):
        self.args = args
        self.log_path = log_path
        self.stdout_lines = queue.Queue()
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._log)
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self.endpoint = None
        self.returncode = None

    def _read_stdout(self):
        for line in iter(self.proc.stdout.readline, b""):
            self.stdout_lines.put(line.decode(errors="replace").rstrip("\n"))
        self.stdout_lines.put(None)

    def wait_listening(self, timeout=START_TIMEOUT):
        try:
            line = self.stdout_lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"broker printed no endpoint within {timeout}s\n{self.log()}")
        assert line is not None, (
            f"broker exited (rc={self.proc.poll()}) before printing its endpoint\n{self.log()}")
        prefix = "listening "
        assert line.startswith(prefix), f"first stdout line is {line!r}, not 'listening ...'"
        self.endpoint = line[len(prefix):].strip()
        assert self.endpoint.startswith("tcp://127.0.0.1:"), self.endpoint
        port = int(self.endpoint.rsplit(":", 1)[1])
        assert 0 < port < 65536
        self.port = port
        return self.endpoint

    def log(self):
        if not self._log.closed:
            self._log.flush()
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data.decode(errors="replace")

    def running(self):
        return self.proc.poll() is None

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM, bounded wait, SIGKILL if needed. Returns (rc, killed)."""
        killed = terminate(self.proc, timeout)
        self.returncode = self.proc.returncode
        self._reader.join(timeout=timeout)
        self._log.close()
        return self.returncode, killed

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


@pytest.fixture
def broker(tmp_path, request):
    """Factory: broker(*extra_args) -> a running Broker with .endpoint.

    Started with ``--bind tcp://127.0.0.1:* --heartbeat-ms 200 --liveness 3
    --log-level debug`` plus extra_args. At teardown every broker still
    running gets SIGTERM and must exit 0 within STOP_TIMEOUT."""
    if not os.access(BROKER_BIN, os.X_OK):
        pytest.fail(f"broker binary not built: {BROKER_BIN}")
    started = []

    def start(*extra, heartbeat_ms=HEARTBEAT_MS, liveness=LIVENESS):
        args = [*BROKER_WRAPPER, BROKER_BIN, "--bind", "tcp://127.0.0.1:*",
                "--heartbeat-ms", str(heartbeat_ms), "--liveness", str(liveness),
                "--log-level", "debug", *map(str, extra)]
        b = Broker(args, str(tmp_path / f"broker{len(started)}.log"))
        started.append(b)
        b.wait_listening()
        return b

    yield start

    problems = []
    for b in started:
        was_running = b.running()
        rc, killed = b.terminate()
        if killed:
            problems.append(f"broker {b.endpoint} ignored SIGTERM for {STOP_TIMEOUT}s")
        elif was_running and rc != 0:
            problems.append(f"broker {b.endpoint} exited {rc} on SIGTERM")
    if problems or _test_failed(request):
        for i, b in enumerate(started):
            print(f"----- broker {i} ({' '.join(b.args[1:])}) rc={b.returncode} -----")
            print(b.log()[-20000:])
    assert not problems, "; ".join(problems)


# ---------------------------------------------------------------------------
# Raw protocol clients

class RawClient:
    """A DEALER socket speaking causeway frame by frame.

    Incoming envelopes that a wait did not ask for are kept in ``inbox`` in
    arrival order, as (raw_frame, Envelope), so later waits still see them."""

    def __init__(self, hub, endpoint, auto_heartbeat=True, curve=None, routing_id=None,
                 sockopts=()):
        self.hub = hub
        self.pb = hub.pb
        self.endpoint = endpoint
        self.sock = hub.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:  # chosen by the client, as any client may
            self.sock.setsockopt(zmq.ROUTING_ID, routing_id)
        for opt, value in sockopts:  # e.g. a small RCVHWM: a client that reads slowly
            self.sock.setsockopt(opt, value)
        if curve:  # (server public, client public, client secret), Z85 bytes
            self.sock.curve_serverkey, self.sock.curve_publickey, self.sock.curve_secretkey = curve
        self.sock.connect(endpoint)
        self.inbox = []
        self.next_id = 1
        self.last_tx = time.monotonic()
        self.logged_in = False
        self.auto_heartbeat = auto_heartbeat
        self.name = None
        self.token = None
        self.login_info = None
        self.closed = False

    # -- building and sending ------------------------------------------------

    def new_id(self):
        rid = self.next_id
        self.next_id += 1
        return rid

    def envelope(self, body=None, msg=None, request_id=None, version=1, clock=None):
        """An Envelope with `body` ("login", "who", ...) set to `msg` (or empty)."""
        env = self.pb.Envelope(version=version,
                               request_id=self.new_id() if request_id is None else request_id)
        for node, counter in (clock or []):
            env.clock.add(node=node, counter=counter)
        if body is not None:
            field = getattr(env, body)
            if msg is not None:
                field.CopyFrom(msg)
            else:
                field.SetInParent()
        return env

    def send_bytes(self, data):
        assert not self.closed
        self.sock.send(data)
        self.last_tx = time.monotonic()

    def send_frames(self, frames):
        assert not self.closed
        self.sock.send_multipart(frames)
        self.last_tx = time.monotonic()

    def send_env(self, env):
        self.send_bytes(env.SerializeToString())
        return env.request_id

    def maybe_heartbeat(self):
        if (self.logged_in and self.auto_heartbeat and not self.closed
                and time.monotonic() - self.last_tx >= CLIENT_HB_S):
            self.send_env(self.envelope("heartbeat", request_id=0))

    # -- receiving -----------------------------------------------------------

    def _recv_ready(self, timeout):
        """Moves at most one frame into the inbox; waits up to timeout."""
        if self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            frames = self.sock.recv_multipart()
            assert len(frames) == 1, f"broker sent a {len(frames)}-frame message"
            env = self.pb.Envelope()
            env.ParseFromString(frames[0])
            assert env.version == 1, f"broker sent version {env.version}"
            self.inbox.append((frames[0], env))
            return True
        return False

    def drain(self):
        """Moves every frame already received into the inbox (no waiting)."""
        while not self.closed and self._recv_ready(0):
            pass

    def recv_frame_until(self, predicate, timeout=REQUEST_TIMEOUT, what="a matching envelope"):
        """Returns (and removes from the inbox) (raw_bytes, env) for the
        first envelope for which predicate(env) is true, waiting up to
        timeout seconds while keeping the hub's clients alive. Fails the
        test on timeout."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for i in range(checked, len(self.inbox)):
                if predicate(self.inbox[i][1]):
                    return self.inbox.pop(i)
            checked = len(self.inbox)
            left = deadline - time.monotonic()
            if left <= 0:
                seen = [e.WhichOneof("body") for _, e in self.inbox]
                raise AssertionError(
                    f"{self.name or 'client'}: no {what} within {timeout}s; inbox holds {seen}")
            self.hub.pump()
            self._recv_ready(min(PUMP_SLICE, left))

    def recv_until(self, predicate, timeout=REQUEST_TIMEOUT, what="a matching envelope"):
        """Like recv_frame_until, returning only the envelope."""
        return self.recv_frame_until(predicate, timeout, what)[1]

    def recv_body(self, body, timeout=REQUEST_TIMEOUT, where=None):
        """Next envelope whose body is `body` and, if given, where(msg) holds."""
        def pred(e):
            return e.WhichOneof("body") == body and (where is None or where(getattr(e, body)))
        return getattr(self.recv_until(pred, timeout, what=body), body)

    def recv_reply(self, request_id=None, timeout=REQUEST_TIMEOUT):
        """The next Reply envelope (with that request_id if given)."""
        def pred(e):
            return e.WhichOneof("body") == "reply" and (request_id is None
                                                         or e.request_id == request_id)
        return self.recv_until(pred, timeout, what=f"reply to request {request_id}")

    def assert_none(self, predicate, what="unexpected envelope"):
        """Fails if anything received so far matches predicate."""
        self.drain()
        bad = [e for _, e in self.inbox if predicate(e)]
        assert not bad, f"{self.name}: {what}: {bad[0]}"

    def deliveries(self):
        """Deliver bodies received so far (drained), removed from the inbox."""
        self.drain()
        out = [e.deliver for _, e in self.inbox if e.WhichOneof("body") == "deliver"]
        self.inbox = [(r, e) for r, e in self.inbox if e.WhichOneof("body") != "deliver"]
        return out

    # -- requests ------------------------------------------------------------

    def request_env(self, env, timeout=REQUEST_TIMEOUT):
        """Sends env and returns the Reply envelope carrying its request_id."""
        rid = self.send_env(env)
        return self.recv_reply(rid, timeout)

    def request(self, body, msg=None, timeout=REQUEST_TIMEOUT, clock=None, version=1):
        """Sends one request and returns its Reply message."""
        env = self.envelope(body, msg, clock=clock, version=version)
        return self.request_env(env, timeout).reply

    def try_login(self, name, resume_token=b"", agent="pytest", quiet=False, pull=False):
        reply = self.request("login", self.pb.Login(name=name, resume_token=resume_token,
                                                     agent=agent, quiet=quiet, pull=pull))
        if reply.status == self.pb.STATUS_OK:
            self.logged_in = True
            self.name = name
            self.login_info = reply.login
            self.token = reply.login.resume_token
        return reply

    def login(self, name, **kw):
        reply = self.try_login(name, **kw)
        assert_status(self.pb, reply, "OK")
        return reply

    def logout(self):
        reply = self.request("logout")
        assert_status(self.pb, reply, "OK")
        self.logged_in = False
        return reply

    def send_text(self, to=(), text="", broadcast=False, clock=None, message_id="",
                  durable=False):
        msg = self.pb.Send(to=list(to), text=text, broadcast=broadcast,
                           message_id=message_id, durable=durable)
        return self.request("send", msg, clock=clock)

    def close(self):
        if not self.closed:
            self.closed = True
            self.logged_in = False
            self.sock.close(linger=0)


class Hub:
    """The zmq context and every raw client of one test."""

    def __init__(self, pb):
        self.pb = pb
        self.ctx = zmq.Context()
        self.clients = []

    def client(self, endpoint, auto_heartbeat=True, curve=None, routing_id=None, sockopts=()):
        c = RawClient(self, endpoint, auto_heartbeat=auto_heartbeat, curve=curve,
                      routing_id=routing_id, sockopts=sockopts)
        self.clients.append(c)
        return c

    def logged_in(self, endpoint, name, **kw):
        c = self.client(endpoint)
        c.login(name, **kw)
        return c

    def pump(self, exclude=None):
        """Sends a heartbeat for each logged-in client that has been quiet."""
        for c in self.clients:
            if c is not exclude:
                c.maybe_heartbeat()

    def wait(self, seconds):
        """Keeps clients alive for `seconds` (used only where the test
        measures time itself, never to wait for an event)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.pump()
            time.sleep(min(PUMP_SLICE, max(0.0, deadline - time.monotonic())))

    def close(self):
        for c in self.clients:
            c.close()
        self.ctx.term()


@pytest.fixture
def hub(pb):
    h = Hub(pb)
    yield h
    h.close()


# ---------------------------------------------------------------------------
# The C CLI

class CliProc:
    """A running ``causeway`` CLI process with line-oriented stdout."""

    def __init__(self, args, hub=None):
        self.args = [CLI_BIN, *map(str, args)]
        self.hub = hub
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = []        # stdout lines read so far
        self.unread = []       # JSON objects not yet consumed by read_json
        self._buf = b""
        self._err = b""
        os.set_blocking(self.proc.stdout.fileno(), False)
        os.set_blocking(self.proc.stderr.fileno(), False)

    def _pump_io(self, timeout):
        fds = [f for f in (self.proc.stdout, self.proc.stderr) if not f.closed]
        if not fds:
            time.sleep(timeout)
            return
        ready, _, _ = select.select(fds, [], [], timeout)
        for f in ready:
            try:
                data = os.read(f.fileno(), 65536)
            except BlockingIOError:
                continue
            if f is self.proc.stderr:
                self._err += data
                if not data:
                    f.close()
                continue
            if not data:
                f.close()
            self._buf += data
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                self.lines.append(text)
                if text.strip().startswith("{"):
                    try:
                        self.unread.append(json.loads(text))
                    except ValueError:
                        pass

    def _tick(self, left):
        if self.hub is not None:
            self.hub.pump()
        self._pump_io(min(PUMP_SLICE, max(0.0, left)))

    def read_json(self, predicate=lambda obj: True, timeout=10.0, what="JSON line"):
        """The next JSON stdout line for which predicate(obj) holds."""
        deadline = time.monotonic() + timeout
        while True:
            for i, obj in enumerate(self.unread):
                if predicate(obj):
                    return self.unread.pop(i)
            left = deadline - time.monotonic()
            if left <= 0 or (self.proc.poll() is not None and self.proc.stdout.closed):
                raise AssertionError(
                    f"causeway CLI: no {what} within {timeout}s (rc={self.proc.poll()})\n"
                    f"{self.describe()}")
            self._tick(left)

    def wait(self, timeout=10.0):
        """Waits for exit, pumping output and heartbeats. Returns rc."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"causeway CLI still running after {timeout}s\n"
                                     f"{self.describe()}")
            self._tick(left)
        # Collect what is left in the pipes.
        for _ in range(100):
            if self.proc.stdout.closed and self.proc.stderr.closed:
                break
            self._pump_io(PUMP_SLICE)
        return self.proc.returncode

    def stderr(self):
        return self._err.decode(errors="replace")

    def describe(self):
        return (f"$ {' '.join(self.args)}\n--- stdout ---\n" + "\n".join(self.lines)
                + f"\n--- stderr ---\n{self.stderr()}")

    def kill(self):
        terminate(self.proc)
        for f in (self.proc.stdout, self.proc.stderr):
            if not f.closed:
                f.close()


@pytest.fixture
def cli(hub, request):
    """Factory: cli(*args) -> a started CliProc; killed at teardown."""
    if not os.access(CLI_BIN, os.X_OK):
        pytest.fail(f"CLI binary not built: {CLI_BIN}")
    procs = []

    def start(*args):
        p = CliProc(args, hub)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.kill()
    if _test_failed(request):
        for p in procs:
            print(p.describe())


def run_cli(cli, *args, timeout=10.0):
    """Runs the CLI to completion; returns the finished CliProc."""
    p = cli(*args)
    p.wait(timeout)
    return p


# ---------------------------------------------------------------------------
# causeway-clockd

class ClockdDaemon:
    """One ``causeway-clockd serve`` process on a free loopback port, its
    stderr in log_path; the first stdout line gives the endpoint."""

    def __init__(self, db, log_path, extra=()):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [CLOCKD_BIN, "serve", "--bind", "tcp://127.0.0.1:*", "--db", str(db),
             "--log-level", "debug", *map(str, extra)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log)
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            line = self.lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"clockd printed no endpoint within {START_TIMEOUT}s\n{self.log()}")
        assert line and line.startswith("listening tcp://127.0.0.1:"), (line, self.log())
        self.endpoint = line[len("listening "):]

    def _read(self):
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def log(self):
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self):
        """SIGTERM; returns the exit code (SIGKILL after a bound, and fails)."""
        if terminate(self.proc):
            raise AssertionError(f"clockd ignored SIGTERM\n{self.log()}")
        self._log.close()
        return self.proc.returncode
