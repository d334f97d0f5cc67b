"""causeway.py: a Python client for the causeway chat broker.

A package needing two Debian packages at run time (python3-zmq,
python3-protobuf) and protoc (protobuf-compiler) to build. It speaks the wire protocol of
docs/PROTOCOL.md and behaves like libcauseway (client/causeway.h):

- ``Client(endpoint, name=...)`` connects a DEALER socket to the broker and,
  given a name, logs in; ``login()``, ``logout()``, ``send()``, ``who()``,
  ``stats()``, ``fetch()``, ``history()``, ``ack()`` are blocking requests
  with a timeout; refusals raise ``CausewayError`` carrying the broker's
  status name (``e.status == "NAME_TAKEN"``).
- Events (``Deliver``, ``Presence``, ``Disconnected``, ``Reconnected``) are
  read with ``next_event(timeout)`` or by iterating over the client.
- A background I/O thread owns the socket. It sends heartbeats (so a session
  never expires while the application is idle or busy), declares the broker
  lost after ``heartbeat_ms * liveness`` of silence, reconnects with
  exponential backoff (100 ms doubling to 5 s) on a fresh socket and logs in
  again with the resume token; it keeps the vector clock (tick before a
  send, merge then tick on a delivery), drops duplicate deliveries (durable
  ``seq`` at or below the highest handed out, live ``(from, message_id)``
  among the last 1024), retries durable sends byte for byte with the same
  message id, and with ``auto_ack`` acknowledges durable deliveries once the
  application has handled them; and it keeps the broker's delivery order:
  a delivery is shown only after the stored messages it follows
  (``Envelope.after_seq``, docs/PROTOCOL.md §13.10), held back otherwise
  (a live one at most ``holdback`` seconds, then shown with ``gap=True``).
- With ``trace=PATH`` it appends one JSON line per send and delivery to a
  trace file, and with ``clockd=ENDPOINT`` it reports the same events to a
  ``causeway-clockd serve`` daemon (docs/CLOCKD.md).

The protobuf code is not committed: ``proto/causeway.proto`` is compiled
with ``protoc --python_out`` when the package is built (``setup.py``), into
``causeway/causeway_pb2.py``, imported as ``causeway.pb``. Install the
package (clients/python/README.md); the source tree alone does not import.
``causeway.aio.AsyncClient`` is the asyncio interface over the same engine.

Threads: a Client may be used from several application threads (requests
are serialised by the I/O thread), but only one thread should read events.
"""

import collections
import dataclasses
import json
import logging
import os
import random
import threading
import time

import zmq

__version__ = "0.1.0"
__all__ = [
    "Client", "CausewayError", "RequestTimeout", "ConnectionLost",
    "Deliver", "Receipt", "Presence", "Disconnected", "Reconnected", "User", "Recipient",
    "SendResult", "LoginInfo", "LoginResult", "Stats", "SessionInfo", "QueueInfo",
    "Forwarded", "pb", "AsyncClient",
    "status_name", "DEFAULT_ENDPOINT",
]

log = logging.getLogger("causeway")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:7400"
DEFAULT_TIMEOUT = 5.0          # seconds, per request
BACKOFF_MIN = 0.1              # reconnection backoff, seconds (PROTOCOL.md §16)
BACKOFF_MAX = 5.0
DEFAULT_HEARTBEAT_MS = 1000    # until LoginInfo says otherwise
DEFAULT_LIVENESS = 3
AUTO_ACK_DELAY = 0.2           # auto_ack: a hand-over counts as handled after this
AUTO_ACK_BATCH = 100           # ... or an Ack goes out at once after this many
LIVE_DEDUP_WINDOW = 1024       # live (from, message_id) pairs remembered
HOLDBACK_DEFAULT = 10.0        # seconds a live delivery may wait for stored predecessors
HOLDBACK_MAX = 4096            # deliveries held back at most (PROTOCOL.md 13.10)
DURABLE_ATTEMPT_MIN = 1.0      # a durable send's reply counts as lost after
                               # max(2 * H * L, this), then it is sent again
MESSAGE_ID_MAX = 128           # bytes (PROTOCOL.md §14)
INFLIGHT_GRACE = 60.0          # forget requests nobody waits for after this
ENDPOINTS_MAX = 16             # endpoints in one list (PROTOCOL.md §13.14)
ENDPOINT_LEN_MAX = 256         # bytes of one endpoint
FAILOVER_RETRY = 0.2           # failover: NAME_TAKEN asked again this often...
FAILOVER_TAKEN = 10.0          # ... for at most this long
READ_BURST = 256               # frames read per loop turn

# ---------------------------------------------------------------------------
# The protobuf module: causeway/causeway_pb2.py, generated from
# proto/causeway.proto by protoc when the package is built (setup.py), never
# at import time.

try:
    from . import causeway_pb2 as pb
except ImportError as _e:  # pragma: no cover - a source tree, not an installed package
    raise ImportError(
        "causeway: the generated module causeway.causeway_pb2 is missing: install the "
        "package (/usr/bin/python3 -m pip install --no-build-isolation --no-index "
        "clients/python; see clients/python/README.md) instead of importing the source "
        f"tree ({_e})") from None

# Local statuses (never on the wire; the numbers match libcauseway's).
_LOCAL_STATUS = {100: "TIMEOUT", 101: "DISCONNECTED", 102: "IO", 104: "INVALID"}
_TIMEOUT, _DISCONNECTED, _IO = 100, 101, 102
_OK = pb.STATUS_OK
_SUCCESS = (pb.STATUS_OK, pb.STATUS_ACCEPTED)
_RECIPIENT_OK = (pb.STATUS_DELIVERED, pb.STATUS_ACCEPTED)
_REASONS = {pb.Presence.REASON_LOGIN: "login", pb.Presence.REASON_LOGOUT: "logout",
            pb.Presence.REASON_EXPIRED: "expired", pb.Presence.REASON_SHUTDOWN: "shutdown"}


_TRANSPORTS = ("tcp", "ipc", "inproc", "ws", "wss", "tipc", "vmci")


def _endpoint_problem(ep):
    """What is wrong with one endpoint (libcauseway's rules), or None."""
    if len(ep.encode()) > ENDPOINT_LEN_MAX:
        return f"endpoint '{ep[:40]}...' is longer than {ENDPOINT_LEN_MAX} bytes"
    transport, sep, addr = ep.partition("://")
    if not sep:
        return (f"endpoint '{ep}' has no transport: ZeroMQ endpoints look like "
                f"tcp://HOST:PORT; did you mean tcp://{ep}?")
    if transport not in _TRANSPORTS:
        return f"endpoint '{ep}': unknown transport '{transport}'; use tcp://HOST:PORT"
    if transport == "tcp":
        host, colon, port = addr.rpartition(":")
        if (not colon or not host or "]" in port or not port.isdigit()
                or not 1 <= int(port) <= 65535 or any(c in addr for c in " \t,")):
            return (f"endpoint '{ep}' needs a host and a port from 1 to 65535: "
                    f"tcp://HOST:PORT, e.g. {DEFAULT_ENDPOINT}")
    elif not addr:
        return f"endpoint '{ep}' has no address after the transport"
    return None


def parse_endpoints(endpoint):
    """The endpoint list of Client(endpoint): a string, one endpoint or
    several separated by commas (blanks around each ignored), or a list or
    tuple of them. Returns a tuple; raises ValueError for an empty list or
    element, a malformed endpoint, one named twice, more than ENDPOINTS_MAX."""
    if isinstance(endpoint, str):
        parts = endpoint.split(",")
    elif isinstance(endpoint, (list, tuple)):
        parts = list(endpoint)
        if not parts or not all(isinstance(p, str) for p in parts):
            raise ValueError("endpoint: give a string or a non-empty list of strings")
    else:
        raise ValueError("endpoint: give a string or a non-empty list of strings")
    out = []
    for p in parts:
        ep = p.strip(" \t")
        if not ep:
            raise ValueError(f"endpoint {endpoint!r} has an empty element: give endpoints "
                             "separated by single commas, e.g. tcp://a:7400,tcp://b:7400")
        if len(out) == ENDPOINTS_MAX:
            raise ValueError(f"endpoint lists more than {ENDPOINTS_MAX} endpoints")
        why = _endpoint_problem(ep)
        if why:
            raise ValueError(why)
        if ep in out:
            raise ValueError(f"endpoint names '{ep}' twice")
        out.append(ep)
    return tuple(out)


def status_name(code):
    """Name of a status code without the STATUS_ prefix ("NAME_TAKEN");
    local codes give "TIMEOUT", "DISCONNECTED", "IO", "INVALID"; an unknown
    number gives "UNKNOWN_<n>"."""
    if code in _LOCAL_STATUS:
        return _LOCAL_STATUS[code]
    try:
        return pb.Status.Name(code)[len("STATUS_"):]
    except ValueError:
        return f"UNKNOWN_{code}"


# ---------------------------------------------------------------------------
# Errors


class CausewayError(Exception):
    """A request failed. ``status`` is the status name ("NAME_TAKEN",
    "NOT_DURABLE", ..., or a local one: "TIMEOUT", "DISCONNECTED",
    "TOO_LARGE" refused before sending), ``code`` its number, ``detail`` the
    broker's human-readable text (never parse it). ``local`` is true when
    the broker did not say so (a timeout, a lost connection, a limit checked
    before sending). A failed send also carries ``message_id`` (retry a
    durable send with it) and, when the broker answered, ``result`` (a
    SendResult with the per-recipient statuses)."""

    def __init__(self, code, detail="", *, local=False, message_id=None, result=None):
        self.code = code
        self.status = status_name(code)
        self.detail = detail
        self.local = local
        self.message_id = message_id
        self.result = result
        super().__init__(f"{self.status}: {detail}" if detail else self.status)


class RequestTimeout(CausewayError, TimeoutError):
    """No reply within the timeout (status "TIMEOUT"). A late reply is
    dropped, never handed to a later request."""


class ConnectionLost(CausewayError, ConnectionError):
    """The session's connection is lost (being re-established, or it was
    lost while the request waited): status "DISCONNECTED"."""


def _error(code, detail="", **kw):
    if code == _TIMEOUT:
        return RequestTimeout(code, detail or "no reply in time", local=True, **kw)
    if code == _DISCONNECTED:
        return ConnectionLost(code, detail or "connection to the broker lost", local=True, **kw)
    return CausewayError(code, detail, **kw)


# ---------------------------------------------------------------------------
# Results and events


@dataclasses.dataclass
class User:
    """One entry of the broker's user log."""
    name: str
    online: bool
    last_seen_us: int


@dataclasses.dataclass
class LoginInfo:
    """What the broker announced at login (PROTOCOL.md §7.3)."""
    broker_version: str
    heartbeat_ms: int
    liveness: int
    max_frame: int
    max_recipients: int
    max_text: int
    durable: bool


@dataclasses.dataclass
class LoginResult:
    users: list            # the user log (empty for a quiet session)
    info: LoginInfo


@dataclasses.dataclass
class Recipient:
    """The fate of one recipient of a send."""
    name: str
    status: str            # DELIVERED, OFFLINE, UNKNOWN_USER, FLOODED;
                           # durable: ACCEPTED, QUEUE_FULL
    seq: int = 0           # durable: its position in the recipient's queue

    @property
    def ok(self):
        return self.status in ("DELIVERED", "ACCEPTED")


@dataclasses.dataclass
class SendResult:
    """The broker's answer to a send."""
    status: str            # OK (live) or ACCEPTED (durable)
    recipients: list       # Recipient, one per distinct recipient, in order
    message_id: str        # the id the message carried (given or generated)
    duplicate: bool        # durable: the broker had this message id already
    clock: dict            # our vector clock as stamped on the message
    detail: str = ""

    @property
    def ok(self):
        """True if every recipient got it (DELIVERED or ACCEPTED)."""
        return all(r.ok for r in self.recipients)

    def __getitem__(self, name):
        """The Recipient named name (KeyError if none)."""
        for r in self.recipients:
            if r.name == name:
                return r
        raise KeyError(name)


@dataclasses.dataclass
class Stats:
    """Broker counters (BrokerStats, PROTOCOL.md §12)."""
    uptime_ms: int
    sessions: int
    known_users: int
    frames_in: int
    frames_out: int
    messages_routed: int
    deliveries: int
    bad_frames: int
    expired_sessions: int
    stored_messages: int
    fsyncs: int
    refused_requests: int = 0   # well-formed requests answered with an error status
    damaged_entries: int = 0  # durable: distinct stored entries found damaged (messages lost)
    # Monitoring figures (PROTOCOL.md §12.1); empty/0 from a broker without them.
    refusals: dict = dataclasses.field(default_factory=dict)        # {"FLOODED": n, ...}
    recipient_fates: dict = dataclasses.field(default_factory=dict)  # {"DELIVERED": n, ...}
    # {("live"|"durable", "unicast"|"multicast"|"broadcast"):
    #   {"received", "received_bytes", "delivered", "delivered_bytes"}}
    traffic: dict = dataclasses.field(default_factory=dict)
    redeliveries: int = 0
    held_messages: int = 0
    store_transactions: int = 0
    # {"bounds_us": [...], "counts": [... cumulative, last = +Inf], "sum_us", "count"}
    commit_latency: dict = dataclasses.field(default_factory=dict)
    deepest_queues: list = dataclasses.field(default_factory=list)  # [QueueInfo] (operators)
    memory_rss_bytes: int = 0
    version: str = ""
    started_us: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    logins: int = 0
    max_sessions: int = 0
    store_pending: int = 0
    replies_dropped: int = 0  # replies that found the connection's queue full (sndhwm)


@dataclasses.dataclass
class SessionInfo:
    """One live session (Client.sessions(), operators only; PROTOCOL.md §12.2)."""
    name: str
    peer: str          # IP address of its connection (no port), "" if unknown
    since_us: int      # login time, µs since the epoch
    idle_ms: int
    queued: int        # durable queue depth
    held: int          # live messages held back for it
    pull: bool
    quiet: bool
    agent: str
    key: str           # CURVE public key (Z85), "" in plain mode


@dataclasses.dataclass
class QueueInfo:
    """One user's durable queue (Client.queues(); Stats.deepest_queues)."""
    name: str
    depth: int
    last_seq: int
    online: bool


@dataclasses.dataclass
class Forwarded:
    """A recently forwarded message (Client.recent(), operators only)."""
    timestamp_us: int
    sender: str
    to: list           # the first recipients (at most 8); [] for a broadcast
    recipients: int    # how many there were
    broadcast: bool
    durable: bool
    size: int          # text bytes
    delivered: int     # recipients DELIVERED / ACCEPTED
    text: str          # "" unless asked for and allowed


@dataclasses.dataclass
class Deliver:
    """A message for us: a delivery event, or an entry of fetch()/history().
    ``sender`` is Deliver.from (``from`` is a Python keyword; ``from_`` is an
    alias). ``local_clock`` is our clock after merging ``clock`` and ticking
    (None in history())."""
    sender: str
    to: list
    broadcast: bool
    text: str
    timestamp_us: int
    seq: int
    message_id: str
    durable: bool
    redelivered: bool
    expired: bool
    damaged: bool  # a message was lost: damaged in the broker's store; only seq is set
    clock: dict
    local_clock: dict = None
    holdback_us: int = 0   # how long the client held it back for its predecessors
    gap: bool = False      # shown after the hold-back time without them
    late: bool = False     # its sender's clock entry is at or below ours (§13.14)
    receipt_requested: bool = False  # the sender asked for a read receipt (our ack tells them)
    receipt: "Receipt" = None        # listings: this entry is a read receipt, not a message
    kind: str = dataclasses.field(default="deliver", init=False)
    _epoch: int = dataclasses.field(default=0, repr=False, compare=False)

    @property
    def from_(self):
        return self.sender


@dataclasses.dataclass
class Receipt:
    """A read receipt (PROTOCOL.md 13.12): ``reader`` acknowledged our
    durable message ``message_id`` at ``read_us``. It is an entry of our own
    queue at ``seq``, de-duplicated, held back and acknowledged (auto_ack)
    like a stored delivery. In fetch()/history() listings a receipt entry
    is a Deliver with ``receipt`` set to one of these."""
    message_id: str
    reader: str
    read_us: int
    seq: int
    message_seq: int
    kind: str = dataclasses.field(default="receipt", init=False)
    _epoch: int = dataclasses.field(default=0, repr=False, compare=False)


@dataclasses.dataclass
class Presence:
    """Someone logged in or out. reason: login, logout, expired, shutdown,
    unspecified."""
    name: str
    online: bool
    reason: str
    timestamp_us: int
    kind: str = dataclasses.field(default="presence", init=False)


@dataclasses.dataclass
class Disconnected:
    """The broker was lost while logged in (the client reconnects unless
    reconnect=False). ``endpoint``: with several endpoints, the one lost
    (the client fails over to the next); None with one."""
    detail: str
    endpoint: str = None
    kind: str = dataclasses.field(default="disconnected", init=False)


@dataclasses.dataclass
class Reconnected:
    """Logged in again after a loss. ``resumed``: the broker still had the
    session (same resume token; with several endpoints: the broker said
    "session resumed"); else a new session was opened. ``users``: the user
    log (Presence events during the gap are lost). With several endpoints,
    ``endpoint`` is the one now in use, ``switched`` whether it is another
    than before the loss, and ``detail`` the line to show, e.g. "reconnected
    to tcp://b:7400 (session resumed)"; None/False/"" with one."""
    users: list
    resumed: bool
    endpoint: str = None
    switched: bool = False
    detail: str = ""
    kind: str = dataclasses.field(default="reconnected", init=False)


def _clock_dict(entries):
    return {e.node: e.counter for e in entries if e.counter}


def _sorted_clock(clock):
    """The clock as a dict in wire order (node names by UTF-8 bytes)."""
    return {k: clock[k] for k in sorted(clock, key=lambda n: n.encode()) if clock[k]}


def _users(reply):
    return [User(u.name, u.online, u.last_seen_us) for u in reply.users]


def _deliver(d, local_clock=None, epoch=0, holdback_us=0, gap=False, late=False):
    return Deliver(sender=getattr(d, "from"), to=list(d.to), broadcast=d.broadcast, text=d.text,
                   timestamp_us=d.timestamp_us, seq=d.seq, message_id=d.message_id,
                   durable=d.durable, redelivered=d.redelivered, expired=d.expired,
                   damaged=d.damaged,
                   clock=_clock_dict(d.clock), local_clock=local_clock,
                   holdback_us=holdback_us, gap=gap, late=late,
                   receipt_requested=d.receipt_requested,
                   receipt=_receipt(d.receipt, d.seq, epoch) if d.HasField("receipt") else None,
                   _epoch=epoch)


def _receipt(r, seq=None, epoch=0):
    return Receipt(message_id=r.message_id, reader=r.reader, read_us=r.read_us,
                   seq=r.seq if seq is None else seq, message_seq=r.message_seq, _epoch=epoch)


def _env_seq(env):
    """The queue seq of a held push: a Receipt's, or a Deliver's (0: live)."""
    return env.receipt.seq if env.WhichOneof("body") == "receipt" else env.deliver.seq


def _queue(q):
    return QueueInfo(name=q.name, depth=q.depth, last_seq=q.last_seq, online=q.online)


def _check_string(what, s):
    if not isinstance(s, str):
        raise TypeError(f"{what} must be a str, not {type(s).__name__}")
    if "\0" in s:
        raise ValueError(f"{what} must not contain U+0000")


# ---------------------------------------------------------------------------
# Requests in flight (shared between the application and the I/O thread)


class _Req:
    __slots__ = ("rid", "body", "msg", "deadline", "done", "reply", "error", "abandoned",
                 "internal", "frame", "attempt_deadline", "clock", "login_name", "ack_seq",
                 "epoch", "message_id", "on_done", "result", "trace_state", "idle_frame")

    def __init__(self, body, msg=None, deadline=None, internal=False):
        self.rid = 0
        self.body = body            # envelope body name: "login", "send", ...
        self.msg = msg              # the body message (pb), or None for empty bodies
        self.deadline = deadline    # monotonic seconds; None = no limit
        self.done = threading.Event()
        self.reply = None           # pb.Reply
        self.error = None           # local status code
        self.abandoned = False      # the caller gave up waiting
        self.internal = internal    # our own request (resume login, ack, logout)
        self.frame = None           # durable send: the packed envelope, resent as is
        self.attempt_deadline = None
        self.clock = None           # send: the clock stamped on it
        self.login_name = None
        self.ack_seq = 0
        self.epoch = 0
        self.message_id = None
        self.on_done = None         # I/O thread hook run before the caller wakes
        self.result = None          # extra result computed by the I/O thread
        self.trace_state = None     # send: "pending" until the reply, then "send" or
                                    # "local:STATUS" (refused as a whole)
        self.idle_frame = None      # several endpoints, no session: the packed request,
                                    # sent again to the next endpoint if this one refuses


# ---------------------------------------------------------------------------
# Tracing (docs/CLOCKD.md)


class _Tracer:
    """Writes events as JSON lines and/or reports them to causeway-clockd.
    Used by the I/O thread only (except flush waiters, via requests)."""

    KINDS = {"send": pb.ClockEvent.KIND_SEND, "deliver": pb.ClockEvent.KIND_DELIVER,
             "local": pb.ClockEvent.KIND_LOCAL}

    def __init__(self, path, clockd_endpoint, ctx, curve=None):
        self.file = open(path, "a", encoding="utf-8") if path else None
        self.sock = None
        if clockd_endpoint:
            self.sock = ctx.socket(zmq.DEALER)
            self.sock.setsockopt(zmq.LINGER, 2000)
            _apply_curve(self.sock, curve)
            self.sock.connect(clockd_endpoint)
        self.batch = []
        self.next_id = 0
        self.acked = 0              # highest report id answered
        self.error = None           # (status code, detail) of a refused report
        self.waiters = []           # flush requests: (target id, _Req)

    def record(self, event):
        if self.file:
            self.file.write(json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n")
            self.file.flush()
        if self.sock:
            self.batch.append(event)

    def _to_pb(self, ev):
        m = pb.ClockEvent(process=ev["process"], kind=self.KINDS[ev["kind"]],
                          msg=ev.get("msg", ""), peers=ev.get("peers", []),
                          ts_us=ev.get("ts_us", 0), text=ev.get("text", ""),
                          broadcast=ev.get("broadcast", False),
                          holdback_us=ev.get("holdback_us", 0), late=ev.get("late", False))
        for node, counter in ev["clock"].items():
            m.clock.add(node=node, counter=counter)
        for node, counter in ev.get("msg_clock", {}).items():
            m.msg_clock.add(node=node, counter=counter)
        return m

    def flush(self):
        """Sends the pending batch (one ClockdRequest per loop turn)."""
        if not self.sock or not self.batch:
            return
        self.next_id += 1
        req = pb.ClockdRequest(version=1, request_id=self.next_id)
        req.report.events.extend(self._to_pb(e) for e in self.batch)
        self.batch = []
        try:
            self.sock.send(req.SerializeToString(), zmq.NOBLOCK)
        except zmq.Again:
            self.error = (_DISCONNECTED, "causeway-clockd does not take reports")
            log.warning("causeway: clockd report dropped: daemon not reachable")
            self.acked = self.next_id    # nothing to wait for

    def read(self):
        while self.sock:
            try:
                data = self.sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            reply = pb.ClockdReply()
            try:
                reply.ParseFromString(data)
            except Exception:  # noqa: BLE001 - a malformed reply is logged and skipped
                log.warning("causeway: undecodable reply from clockd")
                continue
            if reply.status != _OK:
                self.error = (reply.status, reply.detail)
                log.warning("causeway: clockd refused a report: %s (%s)",
                            status_name(reply.status), reply.detail)
            self.acked = max(self.acked, reply.request_id)
        self.wake_waiters()

    def wait(self, req):
        self.flush()
        self.waiters.append((self.next_id, req))
        self.wake_waiters()

    def wake_waiters(self):
        keep = []
        for target, req in self.waiters:
            if self.acked >= target:
                req.result = self.error
                req.done.set()
            else:
                keep.append((target, req))
        self.waiters = keep

    def close(self):
        for _, req in self.waiters:
            req.error = _DISCONNECTED
            req.done.set()
        self.waiters = []
        if self.file:
            self.file.close()
            self.file = None
        if self.sock:
            self.sock.close()
            self.sock = None


# ---------------------------------------------------------------------------
# The client

_IDLE, _ONLINE, _LOST, _RESUMING = "IDLE", "ONLINE", "LOST", "RESUMING"


def load_cert(path):
    """Reads a CURVE certificate made by `causeway keygen` (CZMQ zcert format,
    Z85 keys). Returns (public_key, secret_key, user) as bytes, bytes or
    None, str or None. "NAME.key" also reads "NAME.key_secret" beside it, as
    zcert_load does. Raises ValueError if there is no public key."""
    def parse(text):
        out = {}
        for line in text.splitlines():
            line = line.strip()   # Z85 has '#': only whole lines are comments
            if line.startswith("#") or "=" not in line:
                continue
            k, v = (x.strip() for x in line.split("=", 1))
            if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
                v = v[1:-1]
            out[k] = v
        return out
    with open(path, encoding="utf-8") as f:
        fields = parse(f.read())
    if not path.endswith("_secret") and os.path.exists(path + "_secret"):
        with open(path + "_secret", encoding="utf-8") as f:
            fields.update(parse(f.read()))
    pub = fields.get("public-key", "")
    if len(pub) != 40:
        raise ValueError(f"{path}: not a certificate (no public-key)")
    sec = fields.get("secret-key")
    if sec is not None and (len(sec) != 40 or sec == "0" * 40):
        sec = None
    return pub.encode(), sec.encode() if sec else None, fields.get("user")


def _server_key(arg):
    """A server's public key: a certificate file or the Z85 key itself."""
    if len(arg) == 40 and not os.path.exists(arg):
        return arg.encode()
    return load_cert(arg)[0]


def _curve_keys(server_key, cert):
    """(server public, our public, our secret) for CURVE, or None for plain."""
    if server_key is None:
        if cert is not None:
            raise ValueError("cert needs server_key")
        return None
    if cert is None:
        raise ValueError("server_key needs cert (this client's certificate)")
    pub, sec, _ = load_cert(cert)
    if sec is None:
        raise ValueError(f"{cert}: no secret key (give NAME.key_secret)")
    if zmq.curve_public(sec) != pub:
        raise ValueError(f"{cert}: the secret key does not belong to the public key")
    return (_server_key(server_key), pub, sec)


def _apply_curve(sock, keys):
    if keys:
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = keys


class Client:
    """One connection to one broker, carrying at most one session.

    Client(endpoint, name=None, *, agent=None, quiet=False, pull=False,
           auto_ack=True, reconnect=True, timeout=5.0, trace=None,
           clockd=None, context=None, holdback=10.0, server_key=None, cert=None,
           clockd_key=None)

    - endpoint: "tcp://HOST:PORT" (default tcp://127.0.0.1:7400), or several
      brokers sharing one store: "tcp://a:7400,tcp://b:7400" or a list (at
      most 16; see parse_endpoints). One is used at a time (``endpoint``,
      ``endpoints``): a login whose endpoint refuses the connection goes to
      the next one; when the session's broker is lost (heartbeat silence, or
      at once when its connection closes) the client fails over to the next
      endpoint (round robin), logs in there with the resume token, retries
      unanswered durable sends with the same message id, and posts
      Disconnected(endpoint=old) then Reconnected(endpoint=new). NAME_TAKEN
      there (the old broker's claim not yet expired) is asked again every
      0.2 s for at most 10 s. One endpoint: behaviour unchanged.
    - name: if given, log in at once (raising CausewayError if refused).
    - agent: Login.agent (default "causeway-python/<version>").
    - quiet: no Presence events, no user log at login.
    - pull: durable: the broker pushes no stored messages; use fetch().
    - auto_ack: acknowledge durable deliveries once handled: what
      next_event() or fetch() handed out counts as handled when the
      application calls either again, ack_flush() or logout(), or 0.2 s
      later. Without it, call ack(seq) yourself after handling a message.
    - reconnect: on broker loss, reconnect and log in again (else the
      session ends with a Disconnected event).
    - timeout: default request timeout, seconds (None: no limit).
    - trace: path of a JSON-lines trace file (docs/CLOCKD.md) to append
      send and deliver events to.
    - clockd: endpoint of a causeway-clockd daemon to report them to.
    - context: a zmq.Context to use (default: a private one).
    - holdback: seconds a live delivery waits at most for the stored
      messages it follows (docs/PROTOCOL.md §13.10).
    - server_key, cert: CURVE (docs/OPERATIONS.md, "Security"): the broker's
      public key (its certificate file, or the Z85 key) and this client's
      certificate (NAME.key_secret from `causeway keygen NAME`). A client
      whose handshake fails (plain vs CURVE, unknown key) gets no reply:
      requests raise RequestTimeout, or ConnectionLost when the client has
      given up on the connection first.
    - clockd_key: the public key of a CURVE clockd (with cert).

    Use it as a context manager, or call close().
    """

    def __init__(self, endpoint=DEFAULT_ENDPOINT, name=None, *, agent=None, quiet=False,
                 pull=False, auto_ack=True, reconnect=True, timeout=DEFAULT_TIMEOUT,
                 trace=None, clockd=None, context=None, holdback=HOLDBACK_DEFAULT,
                 server_key=None, cert=None, clockd_key=None, receipts=False):
        self.endpoints = parse_endpoints(endpoint)   # ValueError if malformed
        self._ep = 0                  # index of the endpoint in use (I/O thread writes)
        self.receipts = bool(receipts)   # Login.receipts: every durable send asks
        self.holdback = float(holdback)
        self._curve = _curve_keys(server_key, cert)
        self._clockd_curve = _curve_keys(clockd_key, cert) if clockd_key else None
        self.agent = agent if agent is not None else f"causeway-python/{__version__}"
        self.quiet = bool(quiet)
        self.pull = bool(pull)
        self.auto_ack = bool(auto_ack)
        self.reconnect = bool(reconnect)
        self.timeout = timeout
        self._own_ctx = context is None
        self._ctx = context or zmq.Context()
        self._closed = False

        # Shared state, guarded by _lock (events, clock, ack state, session).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._events = collections.deque()
        self._clock = {}
        self._name = None             # session name (also while reconnecting)
        self._token = b""             # its resume token (a copy for resume_token)
        self._state = _IDLE
        self._info = None
        self._epoch = 0
        self._ack_pending = 0         # seq handed out, not yet counted as handled
        self._ack_pending_at = 0.0
        self._ack_taken = 0           # highest seq handled
        self._ack_sent = 0            # highest seq an Ack was sent for
        self._ack_done = 0            # highest seq the broker confirmed
        self._ack_untold = 0
        self._mid_random = random.SystemRandom().getrandbits(64)
        self._mid_count = 0
        self._thread_error = None
        self._thread = None
        # Called by the I/O thread (no lock held) after it queued an event,
        # ended with an error or shut down: AsyncClient's wake-up.
        self._event_hook = None

        # Command pipe: the application appends to _cmds and wakes the I/O
        # thread through an inproc PAIR.
        self._cmds = collections.deque()
        addr = f"inproc://causeway-py-{id(self):x}-{random.getrandbits(32):08x}"
        self._pipe_in = self._ctx.socket(zmq.PAIR)
        self._pipe_in.setsockopt(zmq.LINGER, 0)
        self._pipe_in.bind(addr)
        self._pipe_out = self._ctx.socket(zmq.PAIR)
        self._pipe_out.setsockopt(zmq.LINGER, 0)
        self._pipe_out.connect(addr)
        self._pipe_lock = threading.Lock()

        try:
            self._io = _IoThread(self, trace, clockd)
        except Exception:
            self._pipe_in.close()
            self._pipe_out.close()
            if self._own_ctx:
                self._ctx.term()
            raise
        self._thread = threading.Thread(target=self._io.run, name="causeway-io", daemon=True)
        self._thread.start()
        if name is not None:
            try:
                self.login(name)
            except BaseException:
                self.close()
                raise

    @property
    def endpoint(self):
        """The endpoint in use now (one of ``endpoints``)."""
        return self.endpoints[self._ep]

    # -- plumbing --------------------------------------------------------------

    def _call_event_hook(self):
        hook = self._event_hook
        if hook is not None:
            try:
                hook()
            except Exception:  # noqa: BLE001 - never let the hook kill the I/O thread
                log.exception("causeway: event hook failed")

    def _command(self, cmd):
        if self._closed:
            raise CausewayError(_IO, "client closed", local=True)
        if self._thread_error is not None or (self._thread is not None
                                               and not self._thread.is_alive()):
            raise CausewayError(_IO, f"the I/O thread stopped: {self._thread_error!r}",
                                local=True)
        self._cmds.append(cmd)
        with self._pipe_lock:
            try:
                self._pipe_out.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass   # a wake-up is pending already

    def _timeout(self, timeout):
        return self.timeout if timeout is ... else timeout

    def _request(self, body, msg=None, timeout=..., **attrs):
        """Hands a request to the I/O thread and waits for its end. Returns
        the _Req with .reply set, or raises for local errors."""
        timeout = self._timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        req = _Req(body, msg, deadline)
        for k, v in attrs.items():
            setattr(req, k, v)
        self._command(("request", req))
        if not req.done.wait(timeout):
            with self._lock:
                if not req.done.is_set():
                    req.abandoned = True
            if req.abandoned:
                raise _error(_TIMEOUT, message_id=req.message_id)
        if req.error is not None:
            raise _error(req.error, message_id=req.message_id)
        return req

    @staticmethod
    def _check(reply, **kw):
        if reply.status not in _SUCCESS:
            raise _error(reply.status, reply.detail, **kw)

    # -- session ---------------------------------------------------------------

    def login(self, name, timeout=..., *, resume_token=b""):
        """Logs in as name. Returns a LoginResult (user log, LoginInfo).
        Raises CausewayError: NAME_TAKEN, BAD_NAME, ALREADY_LOGGED_IN,
        TOO_MANY_SESSIONS, ...; RequestTimeout if the broker does not answer.

        resume_token: the token of a live session of name (PROTOCOL.md
        §7.5), e.g. the ``resume_token`` a program that died kept: this
        client takes that session over instead of getting NAME_TAKEN until
        it expires. Its unacknowledged messages are pushed again from the
        first, and shown here although this client has shown nothing yet
        (after_seq starts again at 0 with every login and resume, §13.10).
        The token is a secret: never log or show it."""
        _check_string("name", name)
        msg = pb.Login(name=name, agent=self.agent, quiet=self.quiet, pull=self.pull,
                       resume_token=bytes(resume_token), receipts=self.receipts)
        req = self._request("login", msg, timeout, login_name=name)
        self._check(req.reply)
        r = req.reply
        info = r.login
        return LoginResult(_users(r), LoginInfo(info.broker_version, info.heartbeat_ms,
                                                info.liveness, info.max_frame,
                                                info.max_recipients, info.max_text,
                                                info.durable))

    @property
    def resume_token(self):
        """The current session's resume token (bytes; b"" without a
        session): what login(..., resume_token=) of a later process takes
        the session over with. A secret: keep it like a password."""
        with self._lock:
            return self._token

    def logout(self, timeout=...):
        """Ends the session (with auto_ack, first acknowledges what was
        handed out). While the connection is lost the session is abandoned
        locally and ConnectionLost is raised."""
        if self.auto_ack:
            try:
                self.ack_flush(timeout)
            except CausewayError as e:
                log.debug("causeway: ack before logout failed: %s", e)
        req = self._request("logout", None, timeout)
        self._check(req.reply)

    def close(self, timeout=2.0):
        """Logs out if logged in (best effort, bounded by timeout), stops the
        I/O thread and releases the sockets. Safe to call twice."""
        if self._closed:
            return
        if self._name is not None and self._state == _ONLINE and self._thread.is_alive():
            try:
                self.logout(timeout)
            except CausewayError as e:
                log.debug("causeway: logout at close failed: %s", e)
        try:
            self._command(("term",))
        except CausewayError:
            pass
        self._closed = True
        self._thread.join(timeout=10.0)
        with self._cond:
            self._cond.notify_all()
        self._pipe_out.close()
        if self._own_ctx:
            self._ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- requests --------------------------------------------------------------

    def new_message_id(self):
        """A fresh message id, "<name>-<64-bit random hex>-<n>" (as
        libcauseway makes them)."""
        with self._lock:
            self._mid_count += 1
            n = self._mid_count
        return f"{self._name or 'anon'}-{self._mid_random:016x}-{n}"

    def send(self, to=None, text="", *, broadcast=False, durable=False, message_id=None,
             ttl_s=0, receipt=False, timeout=...):
        """Sends text to `to` (a name or a list of names) or, with
        broadcast=True, to every known user but us. Returns a SendResult:
        status "OK" (live; or durable when no recipient is a known user) or
        "ACCEPTED" (durable: stored and fsynced), per-recipient statuses in
        .recipients (result.ok: every recipient got it; result["bob"]).

        Before the send the own clock entry is ticked and the clock stamped
        on the message (result.clock). Live sends go out at most once.
        Durable sends (broker with --data) are resent byte for byte (same
        message_id, same clock) when the connection is lost or no reply
        comes in time, until `timeout`; the broker stores an id once
        (result.duplicate). A message_id is generated if none is given.
        receipt=True (durable only) asks each recipient for a read receipt:
        a Receipt event once they acknowledge it (PROTOCOL.md 13.12).

        Raises CausewayError (e.status) when the broker refuses the whole
        request: NOT_LOGGED_IN, NOT_DURABLE, BAD_REQUEST, TOO_LARGE,
        TOO_MANY_RECIPIENTS, STORE_ERROR, FLOODED, or QUEUE_FULL (durable,
        no queue could take it; e.result has the recipients); limits known
        from LoginInfo are checked before sending (e.local). RequestTimeout
        and ConnectionLost mean the outcome is unknown: retry a durable send
        with e.message_id. ValueError/TypeError: bad arguments."""
        if isinstance(to, str):
            to = [to]
        to = list(to or [])
        if broadcast == bool(to):
            raise ValueError("give either recipients (to=...) or broadcast=True")
        for n in to:
            _check_string("recipient", n)
        _check_string("text", text)
        if message_id in (None, ""):
            message_id = self.new_message_id()
        _check_string("message_id", message_id)
        info = self._info
        if len(message_id.encode()) > MESSAGE_ID_MAX:
            raise CausewayError(pb.STATUS_BAD_REQUEST, "message_id longer than 128 bytes",
                                local=True, message_id=message_id)
        if info and info.max_recipients and len(to) > info.max_recipients:
            raise CausewayError(pb.STATUS_TOO_MANY_RECIPIENTS,
                                f"more than {info.max_recipients} recipients", local=True,
                                message_id=message_id)
        if info and info.max_text and len(text.encode()) > info.max_text:
            raise CausewayError(pb.STATUS_TOO_LARGE, f"text longer than {info.max_text} bytes",
                                local=True, message_id=message_id)
        if receipt and not durable:
            raise ValueError("receipt=True needs durable=True (a read receipt is for a stored "
                             "message)")
        msg = pb.Send(to=to, broadcast=bool(broadcast), text=text, durable=bool(durable),
                      message_id=message_id, ttl_s=ttl_s, receipt=bool(receipt))
        req = self._request("send", msg, timeout, message_id=message_id)
        if req.error is None and req.reply is None:   # refused locally by the I/O thread
            raise CausewayError(req.result[0], req.result[1], local=True, message_id=message_id)
        r = req.reply
        result = SendResult(status=status_name(r.status),
                            recipients=[Recipient(x.name, status_name(x.status), x.seq)
                                        for x in r.recipients],
                            message_id=message_id, duplicate=r.duplicate,
                            clock=dict(req.clock or {}), detail=r.detail)
        self._check(r, message_id=message_id, result=result)
        return result

    def who(self, timeout=...):
        """The user log (no login needed): a list of User, sorted by name.
        A broker sends at most a page of names per reply (Reply.truncated):
        the pages are fetched in turn, each with its own timeout."""
        users, after = [], ""
        while True:
            req = self._request("who", pb.Who(after=after), timeout)
            self._check(req.reply)
            page = _users(req.reply)
            users.extend(page)
            if not req.reply.truncated or not page:
                return users
            after = page[-1].name

    def stats(self, timeout=...):
        """Broker statistics (no login needed): a Stats."""
        req = self._request("stats", None, timeout)
        self._check(req.reply)
        s = req.reply.stats
        simple = {f.name: getattr(s, f.name) for f in dataclasses.fields(Stats)
                  if f.name not in ("refusals", "recipient_fates", "traffic", "commit_latency",
                                    "deepest_queues")}
        kinds = {1: "unicast", 2: "multicast", 3: "broadcast"}
        traffic = {("durable" if t.durable else "live", kinds[t.kind]):
                   {"received": t.received, "received_bytes": t.received_bytes,
                    "delivered": t.delivered, "delivered_bytes": t.delivered_bytes}
                   for t in s.traffic if t.kind in kinds}
        h = s.commit_latency
        latency = ({"bounds_us": list(h.bounds_us), "counts": list(h.counts),
                    "sum_us": h.sum_us, "count": h.count} if s.HasField("commit_latency")
                   else {})
        return Stats(**simple,
                     refusals={status_name(c.status): c.count for c in s.refusals},
                     recipient_fates={status_name(c.status): c.count for c in s.recipient_fates},
                     traffic=traffic, commit_latency=latency,
                     deepest_queues=[_queue(q) for q in s.deepest_queues])

    def _pages(self, body, msg_type, field, timeout):
        out, after = [], ""
        while True:
            req = self._request(body, msg_type(after=after), timeout)
            self._check(req.reply)
            page = list(getattr(req.reply, field))
            out.extend(page)
            if not req.reply.truncated or not page:
                return out
            after = page[-1].name

    def sessions(self, timeout=...):
        """Operators only (the broker's --operators): every live session, as
        a list of SessionInfo sorted by name (all pages)."""
        return [SessionInfo(name=x.name, peer=x.peer, since_us=x.since_us, idle_ms=x.idle_ms,
                            queued=x.queued, held=x.held, pull=x.pull, quiet=x.quiet,
                            agent=x.agent, key=x.key)
                for x in self._pages("sessions", pb.Sessions, "sessions", timeout)]

    def queues(self, timeout=...):
        """Operators only, durable brokers: every user's queue depth, as a
        list of QueueInfo sorted by name (all pages)."""
        return [_queue(q) for q in self._pages("queues", pb.Queues, "queues", timeout)]

    def recent(self, max=0, text=False, timeout=...):  # noqa: A002 - the protocol's name
        """Operators only: the broker's most recently forwarded messages,
        oldest first, as Forwarded (texts only with text=True, which a broker
        without --monitor-text refuses: UNAUTHORIZED)."""
        req = self._request("recent", pb.Recent(max=max, text=text), timeout)
        self._check(req.reply)
        return [Forwarded(timestamp_us=f.timestamp_us, sender=getattr(f, "from"), to=list(f.to),
                          recipients=f.recipients, broadcast=f.broadcast, durable=f.durable,
                          size=f.size, delivered=f.delivered, text=f.text)
                for f in req.reply.forwarded]

    def fetch(self, max=0, timeout=...):  # noqa: A002 - the protocol's name
        """Durable: "check for messages": up to max (0: 100) of the oldest
        unacknowledged messages, as a list of Deliver in seq order. Messages
        this client has handed out before are left out; the others count as
        handed out (they will not come again as events), and their clocks
        are merged into ours. Fetch removes nothing at the broker: with
        auto_ack they are acknowledged once handled, else call ack()."""
        req = self._request("fetch", pb.Fetch(max=max), timeout)
        self._check(req.reply)
        messages = req.result or []
        top = 0
        for m in messages:
            top = m.seq if m.seq > top else top
        if self.auto_ack and top:
            with self._lock:
                what = self._note_taken_locked(top, len(messages))
            self._wake_acker(what)
        return messages

    def history(self, last=0, timeout=...):
        """Durable: our last `last` (0: 100) messages, acknowledged or not,
        oldest first, as Deliver (local_clock None). Changes nothing."""
        req = self._request("history", pb.History(last=last), timeout)
        self._check(req.reply)
        return [_deliver(d) for d in req.reply.messages]

    def ack(self, seq, timeout=...):
        """Durable: acknowledges every queued message up to and including
        seq. Call it only for messages handled (auto_ack does it for you)."""
        req = self._request("ack", pb.Ack(seq=seq), timeout)
        self._check(req.reply)
        with self._lock:
            if req.epoch == self._epoch and seq > self._ack_done:
                self._ack_done = seq
            if req.epoch == self._epoch and seq > self._ack_sent:
                self._ack_sent = seq

    def ack_flush(self, timeout=...):
        """auto_ack: everything handed out so far has been handled:
        acknowledge it now and wait for the broker's commit."""
        if not self.auto_ack:
            return
        with self._lock:
            seq = self._ack_target_locked(True, time.monotonic())
            done = self._ack_done
        if seq and seq > done:
            self.ack(seq, timeout)

    def flush_trace(self, timeout=...):
        """Waits until causeway-clockd has stored every event reported so far
        (no-op without clockd=). Raises CausewayError if it refused one."""
        timeout = self._timeout(timeout)
        req = _Req("flush_trace")
        self._command(("flush_trace", req))
        if not req.done.wait(timeout):
            raise _error(_TIMEOUT, "causeway-clockd did not confirm the reports")
        if req.error is not None:
            raise _error(req.error)
        if req.result:
            raise CausewayError(req.result[0], req.result[1])

    # -- events ----------------------------------------------------------------

    def next_event(self, timeout=None):
        """The next event (Deliver, Receipt, Presence, Disconnected, Reconnected), or
        None if none came within timeout seconds (None: wait forever, 0:
        don't wait) or the client is closed. Duplicate deliveries never come
        out. With auto_ack, calling it says the previous delivery has been
        handled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        what = 0
        with self._cond:
            if self.auto_ack:
                self._handled_locked()
            while not self._events:
                if self._closed or self._thread_error is not None:
                    return None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return None
                self._cond.wait(left if left is not None else 1.0)
            ev = self._events.popleft()
            if (self.auto_ack and isinstance(ev, (Deliver, Receipt)) and ev.seq
                    and ev._epoch == self._epoch):
                what = self._note_taken_locked(ev.seq, 1)
        self._wake_acker(what)
        return ev

    def events(self, timeout=None):
        """Iterates over events until none comes within timeout seconds
        (None: until the client is closed)."""
        while True:
            ev = self.next_event(timeout)
            if ev is None:
                return
            yield ev

    def __iter__(self):
        return self.events(None)

    # -- state -----------------------------------------------------------------

    @property
    def name(self):
        """The name we are logged in as (also while reconnecting), or None."""
        return self._name

    @property
    def connected(self):
        """True while the session's connection is up."""
        return self._state == _ONLINE

    @property
    def login_info(self):
        """The LoginInfo of the current session, or None."""
        return self._info

    @property
    def clock(self):
        """Our vector clock: a dict node -> counter, in wire order."""
        with self._lock:
            return _sorted_clock(self._clock)

    def clock_str(self):
        """Our clock formatted like libcauseway: "{alice:2, bob:1}"."""
        return "{" + ", ".join(f"{k}:{v}" for k, v in self.clock.items()) + "}"

    # -- auto_ack bookkeeping (with _lock held) ---------------------------------

    def _handled_locked(self):
        if self._ack_pending > self._ack_taken:
            self._ack_taken = self._ack_pending
        self._ack_pending = 0

    def _note_taken_locked(self, seq, count):
        """The application is handed `count` durable messages, the highest
        `seq`. Returns 0 (nothing to tell), 1 (arm the timer) or 2 (a batch
        is full: acknowledge now)."""
        self._handled_locked()
        self._ack_pending = seq
        self._ack_pending_at = time.monotonic()
        before = self._ack_untold
        self._ack_untold += count
        if before // AUTO_ACK_BATCH != self._ack_untold // AUTO_ACK_BATCH:
            return 2
        return 1 if before == 0 else 0

    def _ack_target_locked(self, handled, now):
        """The highest seq that may be acknowledged: handled, and below any
        durable delivery still queued."""
        if self._ack_pending and (handled or now - self._ack_pending_at >= AUTO_ACK_DELAY):
            if self._ack_pending > self._ack_taken:
                self._ack_taken = self._ack_pending
            self._ack_pending = 0
        t = self._ack_taken
        if self._ack_pending and self._ack_pending <= t:
            t = self._ack_pending - 1
        for ev in self._events:
            if isinstance(ev, Deliver) and ev.seq and ev._epoch == self._epoch:
                if ev.seq <= t:
                    t = ev.seq - 1
                break
        return t

    def _wake_acker(self, what):
        if what:
            try:
                self._command(("ack", what == 2))
            except CausewayError:
                pass


# ---------------------------------------------------------------------------
# The I/O thread


class _IoThread:
    """Owns the DEALER socket, the session state machine, requests in flight,
    the vector clock (shared with the application under Client._lock),
    de-duplication, auto_ack and tracing. Runs on one thread; the
    application reaches it only through Client._cmds.

    States: IDLE (no session; socket connected), ONLINE (logged in;
    heartbeats; loss detection), LOST (session wanted, no socket, waiting
    for the backoff), RESUMING (fresh socket, our Login with the resume
    token in flight)."""

    def __init__(self, client, trace, clockd):
        self.c = client
        self.ctx = client._ctx
        self.pipe = client._pipe_in
        self.sock = None
        self.sock_gen = 0
        self.state = _IDLE
        self.name = None
        self.token = b""
        self.hb = DEFAULT_HEARTBEAT_MS / 1000.0
        self.liveness = DEFAULT_LIVENESS
        self.max_frame = 0
        self.last_send = self.last_recv = time.monotonic()
        self.backoff = BACKOFF_MIN
        self.retry_at = 0.0
        self.resume_rid = 0
        self.resume_deadline = 0.0
        self.resume_token_sent = b""
        self.inflight = {}
        self.parked = []
        self.next_rid = 0
        self.terminated = False
        self.dd_name = None         # user the watermark and ack state belong to
        self.dd_seq = 0             # highest durable seq handed toward the application
        self.live_seen = collections.OrderedDict()
        self.held = []              # [envelope, arrival monotonic s], hold-back queue
        self.ack_due = 0.0
        self.tracer = (_Tracer(trace, clockd, self.ctx, client._clockd_curve)
                       if (trace or clockd) else None)
        self.trace_q = collections.deque()   # (event, send _Req or None), see trace()
        self.multi = len(client.endpoints) > 1
        self.mon = None             # several endpoints: the socket's monitor
        self.peer_gone = False      # the monitor saw the connection close / refused
        self.refused = False        # ... or refused, without a session (IDLE)
        self.ep_tries = 0           # endpoints tried in vain since the last login
        self.taken_until = 0.0      # NAME_TAKEN retried on the same endpoint until then
        self.lost_ep = 0            # endpoint index at the last loss
        self.idle_tries = 0         # IDLE: endpoints moved on from for the waiting requests
        self.open_sock()

    # -- sockets -----------------------------------------------------------------

    def close_sock(self):
        if self.mon is not None:
            try:
                self.sock.disable_monitor()
            except zmq.ZMQError:
                pass
            self.mon.close(linger=0)
            self.mon = None
        self.peer_gone = self.refused = False
        if self.sock is not None:
            self.sock.close(linger=0)
            self.sock = None
            self.sock_gen += 1

    def open_sock(self):
        self.close_sock()
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        _apply_curve(s, self.c._curve)
        if self.multi:
            # Failover needs to hear of a closed or refused connection at
            # once (one endpoint: the heartbeat decides, as it always did).
            self.mon = s.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
        s.connect(self.c.endpoint)
        self.sock = s
        self.sock_gen += 1

    def next_endpoint(self):
        self.c._ep = (self.c._ep + 1) % len(self.c.endpoints)

    def read_monitor(self):
        from zmq.utils.monitor import recv_monitor_message
        while self.mon is not None:
            try:
                ev = recv_monitor_message(self.mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            if ev["event"] == zmq.EVENT_DISCONNECTED and self.state in (_ONLINE, _RESUMING):
                self.peer_gone = True
            elif ev["event"] == zmq.EVENT_CONNECT_RETRIED:
                if self.state == _RESUMING:
                    self.peer_gone = True
                elif self.state == _IDLE and self.name is None:
                    self.refused = True

    def idle_next_endpoint(self):
        """No session, several endpoints, this one refuses: requests waiting
        go to the next endpoint (each tried once per request)."""
        waiting = [r for r in self.inflight.values()
                   if not r.internal and r.idle_frame is not None and not r.abandoned]
        if not waiting:
            self.refused = False
            return
        if self.idle_tries + 1 >= len(self.c.endpoints):
            self.refused = False
            return
        self.idle_tries += 1
        self.next_endpoint()
        self.open_sock()
        log.debug("causeway: trying %s", self.c.endpoint)
        for r in waiting:
            self.send_bytes(r.idle_frame)

    def send_bytes(self, data):
        """Sends one frame. Returns None, or a local status code."""
        if self.sock is None:
            return _DISCONNECTED
        try:
            self.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            return _DISCONNECTED     # the queue is full: the broker is not reading
        except zmq.ZMQError as e:
            log.warning("causeway: send: %s", e)
            return _IO
        self.last_send = time.monotonic()
        return None

    def envelope(self, body, msg=None, rid=0, clock=None):
        env = pb.Envelope(version=1, request_id=rid)
        if clock is None and body != "login" and self.name and self.state == _ONLINE:
            # Every frame of a session carries the clock, so the broker
            # learns the user's resume clock also from deliveries' ticks
            # (PROTOCOL.md 11.4).
            with self.c._lock:
                clock = _sorted_clock(self.c._clock)
        if clock:
            for node, counter in clock.items():
                env.clock.add(node=node, counter=counter)
        field = getattr(env, body)
        if msg is not None:
            field.CopyFrom(msg)
        else:
            field.SetInParent()
        return env

    def new_rid(self):
        self.next_rid += 1
        return self.next_rid

    def send_internal(self, body, msg=None, track=True):
        """Sends a request of our own; returns its _Req (or None if it could
        not be sent)."""
        req = _Req(body, msg, time.monotonic(), internal=True)
        req.rid = self.new_rid()
        if self.send_bytes(self.envelope(body, msg, req.rid).SerializeToString()) is not None:
            return None
        if track:
            self.inflight[req.rid] = req
        return req

    # -- finishing requests ----------------------------------------------------

    def finish(self, req, reply=None, error=None):
        """Ends an application request. Returns False if its caller has given
        up waiting (the result is dropped)."""
        if req.trace_state == "pending":
            # A send the broker refused as a whole reached nobody: its clock
            # tick is traced as a local event (SHUTTING_DOWN: it may have
            # been stored, so it stays a send).
            refused = (reply is not None and reply.status not in _SUCCESS
                       and reply.status != pb.STATUS_SHUTTING_DOWN)
            req.trace_state = ("local:" + status_name(reply.status)) if refused else "send"
            self.drain_trace()   # written before the caller wakes up
        with self.c._lock:
            if req.abandoned:
                return False
            req.reply = reply
            req.error = error
            if req.on_done:
                req.on_done(req)
            req.done.set()
            return True

    def fail_inflight(self, error, park):
        now = time.monotonic()
        for rid in list(self.inflight):
            req = self.inflight.pop(rid)
            if req.internal:
                continue
            if park and req.frame is not None and (req.deadline is None or req.deadline > now):
                self.parked.append(req)
                continue
            self.finish(req, error=error)

    def fail_parked(self, error):
        parked, self.parked = self.parked, []
        for req in parked:
            self.finish(req, error=error)

    # -- session -----------------------------------------------------------------

    def set_state(self, state):
        self.state = state
        self.c._state = state

    def loss_time(self):
        return self.hb * self.liveness

    def attempt_time(self):
        return max(2 * self.loss_time(), DURABLE_ATTEMPT_MIN)

    def forget_session(self):
        self.fail_parked(_DISCONNECTED)
        self.name = None
        self.token = b""
        with self.c._lock:
            self.c._token = b""
            self.c._name = None
            self.c._info = None

    def take_session(self, name, r):
        info = r.login
        self.name = name
        self.token = info.resume_token
        self.hb = (info.heartbeat_ms or DEFAULT_HEARTBEAT_MS) / 1000.0
        self.liveness = info.liveness or DEFAULT_LIVENESS
        self.max_frame = info.max_frame
        self.last_recv = self.last_send = time.monotonic()
        with self.c._lock:
            self.c._token = bytes(info.resume_token)
            # The user's clock as the broker last saw it (PROTOCOL.md 11.4),
            # merged before our first event: our own entry goes on above
            # every event of earlier clients of this user. Not an event.
            for e in info.clock:
                if e.counter > self.c._clock.get(e.node, 0):
                    self.c._clock[e.node] = e.counter
            self.c._name = name
            self.c._info = LoginInfo(info.broker_version, info.heartbeat_ms, info.liveness,
                                     info.max_frame, info.max_recipients, info.max_text,
                                     info.durable)
            if self.dd_name != name:
                # Another user: another queue; watermark and ack state restart.
                self.dd_name = name
                self.dd_seq = 0
                self.live_seen.clear()
                self.held.clear()
                self.ack_due = 0.0
                self.c._epoch += 1
                self.c._ack_taken = self.c._ack_sent = self.c._ack_done = 0
                self.c._ack_pending = self.c._ack_untold = 0

    def lose(self, why):
        log.debug("causeway: connection lost: %s", why)
        self.lost_ep = self.c._ep
        lost = self.c.endpoint if self.multi else None
        self.close_sock()
        if not self.c.reconnect:
            self.forget_session()
            self.set_state(_IDLE)
            self.fail_inflight(_DISCONNECTED, park=False)
            self.post(Disconnected(why, endpoint=lost))
            self.open_sock()
            return
        if self.multi:
            # Failover: the next broker at once (see resume_failed).
            self.ep_tries = 0
            self.taken_until = 0.0
            self.next_endpoint()
            self.schedule_retry(0.0)
        else:
            self.schedule_retry(BACKOFF_MIN)
        self.fail_inflight(_DISCONNECTED, park=True)
        self.post(Disconnected(why, endpoint=lost))

    def schedule_retry(self, backoff):
        self.backoff = backoff
        self.retry_at = time.monotonic() + backoff
        self.set_state(_LOST)

    def start_resume(self):
        try:
            self.open_sock()
        except zmq.ZMQError as e:
            log.debug("causeway: cannot open a socket: %s", e)
            self.resume_failed("no socket")
            return
        msg = pb.Login(name=self.name, resume_token=self.token, agent=self.c.agent,
                       quiet=self.c.quiet, pull=self.c.pull)
        self.resume_token_sent = self.token
        self.resume_rid = self.new_rid()
        self.send_bytes(self.envelope("login", msg, self.resume_rid).SerializeToString())
        self.resume_deadline = time.monotonic() + max(self.loss_time(), 1.0)
        self.set_state(_RESUMING)
        log.debug("causeway: logging in again as %s", self.name)

    def resume_failed(self, why, status=None):
        """One endpoint: the backoff doubles. Several: NAME_TAKEN is asked
        again on the same endpoint every FAILOVER_RETRY for at most
        FAILOVER_TAKEN; anything else moves to the next endpoint, at once
        in the first round over the list, then 0.1 s doubling per round."""
        if self.multi:
            now = time.monotonic()
            if status == pb.STATUS_NAME_TAKEN and not self.taken_until:
                self.taken_until = now + FAILOVER_TAKEN
            if status == pb.STATUS_NAME_TAKEN and now < self.taken_until:
                nxt = FAILOVER_RETRY
            else:
                self.ep_tries += 1
                self.next_endpoint()
                rounds = self.ep_tries // len(self.c.endpoints)
                nxt = 0.0 if rounds == 0 else min(BACKOFF_MIN * 2 ** min(rounds - 1, 6),
                                                  BACKOFF_MAX)
        else:
            nxt = min(self.backoff * 2, BACKOFF_MAX)
        log.debug("causeway: login again failed (%s); next try in %.1f s at %s", why, nxt,
                  self.c.endpoint)
        self.close_sock()
        self.schedule_retry(nxt)

    def on_resume_reply(self, r):
        self.resume_rid = 0
        if r.status != _OK:
            self.resume_failed(status_name(r.status), r.status)
            return
        self.take_session(self.name, r)
        self.set_state(_ONLINE)
        if self.multi:
            self.ep_tries = 0
            self.taken_until = 0.0
            resumed = r.detail == "session resumed"
            detail = (f"reconnected to {self.c.endpoint} "
                      f"({'session resumed' if resumed else 'new session'})")
            log.debug("causeway: %s", detail)
            self.post(Reconnected(_users(r), resumed=resumed, endpoint=self.c.endpoint,
                                  switched=self.c._ep != self.lost_ep, detail=detail))
        else:
            self.post(Reconnected(_users(r),
                                  resumed=r.login.resume_token == self.resume_token_sent))
        self.resend_parked()
        # An Ack in flight at the loss may never have arrived.
        with self.c._lock:
            self.c._ack_sent = self.c._ack_done
        self.ack_flush()

    def resend_parked(self):
        now = time.monotonic()
        parked, self.parked = self.parked, []
        for req in parked:
            if req.abandoned or (req.deadline is not None and req.deadline <= now):
                continue
            err = self.send_bytes(req.frame)
            if err is not None:
                self.finish(req, error=err)
                continue
            log.debug("causeway: durable send %s sent again", req.message_id)
            req.attempt_deadline = now + self.attempt_time()
            self.inflight[req.rid] = req

    # -- events, clock, tracing ----------------------------------------------------

    def post(self, ev):
        with self.c._cond:
            self.c._events.append(ev)
            self.c._cond.notify_all()
        self.c._call_event_hook()

    def trace(self, kind, clock, msg, peers, text, msg_clock=None, broadcast=False, req=None,
              holdback_us=0, late=False):
        """Queues one trace event. Events wait behind a send whose reply has
        not come yet (see drain_trace), so the trace keeps the order of the
        clock ticks."""
        if not self.tracer or not self.name:
            return
        ev = {"process": self.name, "kind": kind, "clock": clock, "msg": msg}
        if peers:
            ev["peers"] = peers
        ev["ts_us"] = time.time_ns() // 1000
        if text:
            ev["text"] = text
        if msg_clock:
            ev["msg_clock"] = msg_clock
        if broadcast:
            ev["broadcast"] = True
        if holdback_us:
            ev["holdback_us"] = holdback_us
        if late:
            ev["late"] = True
        if req is not None:
            req.trace_state = "pending"
        self.trace_q.append((ev, req))
        self.drain_trace()

    def drain_trace(self, force=False):
        """Writes queued trace events up to the first send still waiting for
        its reply (force: all; a send whose caller gave up counts as sent)."""
        while self.trace_q:
            ev, req = self.trace_q[0]
            if (req is not None and req.trace_state == "pending" and not req.abandoned
                    and not force):
                return
            self.trace_q.popleft()
            if req is not None and req.trace_state.startswith("local:"):
                status = req.trace_state[len("local:"):]
                ev = {"process": ev["process"], "kind": "local", "clock": ev["clock"],
                      "ts_us": ev["ts_us"], "text": f"send {ev['msg']} refused: {status}"}
            try:
                self.tracer.record(ev)
            except OSError as e:
                log.warning("causeway: cannot write the trace: %s", e)

    def is_late(self, d):
        """Late (PROTOCOL.md §13.14): the sender's own entry of the message
        clock is at or below ours before the merge, so something it caused
        (or the message itself) was seen before. With _lock held."""
        sender = getattr(d, "from")
        sent = next((e.counter for e in d.clock if e.node == sender), 0)
        return bool(sender and sender != self.name and sent
                    and sent <= self.c._clock.get(sender, 0))

    def receive_clock(self, d):
        """Clock rule on a delivery: merge the message's clock, tick our own
        entry. Returns our clock after it (wire order). With _lock held."""
        clock = self.c._clock
        for e in d.clock:
            if e.counter > clock.get(e.node, 0):
                clock[e.node] = e.counter
        if self.name:
            clock[self.name] = clock.get(self.name, 0) + 1
        return _sorted_clock(clock)

    def trace_deliver(self, d, local_clock, holdback_us=0, late=False):
        sender = getattr(d, "from")
        msg_clock = _sorted_clock(_clock_dict(d.clock))
        key = d.message_id or str(msg_clock.get(sender, 0))
        self.trace("deliver", local_clock, f"{sender}:{key}", [sender], d.text,
                   msg_clock=msg_clock, holdback_us=holdback_us, late=late)

    # -- frames from the broker --------------------------------------------------

    def is_duplicate(self, d):
        """Shown already, or waiting in the hold-back queue."""
        sender = getattr(d, "from")
        if d.seq:
            if d.seq <= self.dd_seq or any(_env_seq(h[0]) == d.seq for h in self.held):
                log.debug("causeway: dropping seq %d from %s: seen already", d.seq, sender)
                return True
            return False
        if not d.message_id:
            return False
        key = (sender, d.message_id)
        if key in self.live_seen or any(
                not _env_seq(h[0]) and (getattr(h[0].deliver, "from"),
                                          h[0].deliver.message_id) == key for h in self.held):
            log.debug("causeway: dropping live message %r from %s: seen already",
                      d.message_id, sender)
            return True
        return False

    def show(self, d, holdback_us=0, gap=False):
        """Hands one delivery to the application (merge, tick, event)."""
        with self.c._cond:
            late = self.is_late(d)
            local = self.receive_clock(d)
            ev = _deliver(d, local, self.c._epoch, holdback_us, gap, late)
            self.c._events.append(ev)
            self.c._cond.notify_all()
        self.c._call_event_hook()
        self.trace_deliver(d, local, holdback_us, late)
        if d.seq:
            self.dd_seq = max(self.dd_seq, d.seq)
        elif d.message_id:
            self.live_seen[(getattr(d, "from"), d.message_id)] = None
            if len(self.live_seen) > LIVE_DEDUP_WINDOW:
                self.live_seen.popitem(last=False)

    def on_deliver(self, env):
        """A Deliver push: dropped (duplicate), shown, or held back until
        the stored messages it follows are shown (PROTOCOL.md 13.10)."""
        d = env.deliver
        if self.is_duplicate(d):
            return
        if env.after_seq > self.dd_seq and not self.c.pull:
            if len(self.held) >= HOLDBACK_MAX:
                if d.seq:
                    return  # unacknowledged: the broker pushes it again
                self.release_held(time.monotonic())
            log.debug("causeway: holding a delivery from %s until seq %d is shown",
                      getattr(d, "from"), env.after_seq)
            self.held.append([env, time.monotonic()])
            return
        self.show(d)
        self.release_held()

    def release_held(self, force_before=None):
        """Shows held deliveries that may now be shown, oldest first; with
        force_before, also live ones that arrived before it (their hold-back
        ran out, shown with gap=True)."""
        moved = True
        while moved and self.held:
            moved = False
            for i, (env, since) in enumerate(self.held):
                seq = _env_seq(env)
                stale = seq and seq <= self.dd_seq
                ready = env.after_seq <= self.dd_seq
                timed_out = (not ready and not seq and force_before is not None
                             and since <= force_before)
                if not (stale or ready or timed_out):
                    continue
                del self.held[i]
                if stale:
                    pass
                elif env.WhichOneof("body") == "receipt":
                    self.show_receipt(env.receipt)
                else:
                    held_us = max(1, int((time.monotonic() - since) * 1e6))
                    self.show(env.deliver, held_us, bool(timed_out))
                moved = True
                break

    def show_receipt(self, r):
        """Hands a read receipt to the application: no clock change (it is
        no message between processes), de-duplicated by seq."""
        with self.c._cond:
            self.c._events.append(_receipt(r, epoch=self.c._epoch))
            self.c._cond.notify_all()
        self.dd_seq = max(self.dd_seq, r.seq)

    def on_receipt(self, env):
        """A Receipt push (PROTOCOL.md 13.12): like a stored Deliver for
        duplicates and hold-back."""
        r = env.receipt
        if not r.seq or r.seq <= self.dd_seq or any(_env_seq(h[0]) == r.seq for h in self.held):
            return
        if env.after_seq > self.dd_seq and not self.c.pull:
            if len(self.held) < HOLDBACK_MAX:
                self.held.append([env, time.monotonic()])
            return
        self.show_receipt(r)
        self.release_held()

    def held_due(self):
        """When the oldest held live delivery runs out, or None."""
        for env, since in self.held:
            if not _env_seq(env):
                return since + self.c.holdback
        return None

    def on_fetch_reply(self, req, r):
        """Leaves out what was handed over already, merges the clocks of the
        rest, and raises the watermark once the caller has them."""
        out = []
        top = 0
        with self.c._lock:
            for d in r.messages:
                if d.seq and d.seq <= self.dd_seq:
                    continue
                # A receipt entry is no message: no clock merge, no tick.
                late = False if d.HasField("receipt") else self.is_late(d)
                local = None if d.HasField("receipt") else self.receive_clock(d)
                out.append((d, _deliver(d, local, self.c._epoch, late=late)))
                top = max(top, d.seq)
        for d, m in out:
            if m.receipt is None:
                self.trace_deliver(d, m.local_clock, late=m.late)
        req.result = [m for _, m in out]
        if self.finish(req, reply=r) and top > self.dd_seq:
            self.dd_seq = top
            self.release_held()

    def on_ack_reply(self, req, r):
        status = r.status
        harmless = (pb.STATUS_BAD_REQUEST, pb.STATUS_NOT_DURABLE, pb.STATUS_UNKNOWN_TYPE)
        with self.c._lock:
            if req.epoch != self.c._epoch:
                return
            if status == _OK:
                self.c._ack_done = max(self.c._ack_done, req.ack_seq)
                return
            if status not in harmless and self.c._ack_sent > self.c._ack_done:
                self.c._ack_sent = self.c._ack_done   # transient: send again later
        log.debug("causeway: ack up to %d refused: %s", req.ack_seq, status_name(status))
        if status == pb.STATUS_NOT_LOGGED_IN and self.state == _ONLINE:
            self.lose("the broker no longer knows our session")
        elif status not in harmless and not self.ack_due:
            self.ack_due = time.monotonic() + AUTO_ACK_DELAY

    def on_reply(self, env):
        r = env.reply
        rid = env.request_id
        if self.state == _RESUMING and rid and rid == self.resume_rid:
            self.on_resume_reply(r)
            return
        req = self.inflight.pop(rid, None)
        if req is None:
            log.debug("causeway: reply to unknown request %d (%s: %s)", rid,
                      status_name(r.status), r.detail)
            return
        status = r.status
        if req.internal:
            if req.body == "ack":
                self.on_ack_reply(req, r)
            return
        now = time.monotonic()
        if (req.frame is not None and status in (pb.STATUS_NOT_LOGGED_IN,
                                                 pb.STATUS_SHUTTING_DOWN)
                and self.state == _ONLINE and (req.deadline is None or req.deadline > now)):
            # A durable send the broker did not handle: reconnect, send again.
            self.inflight[rid] = req
            self.lose("the broker no longer knows our session"
                      if status == pb.STATUS_NOT_LOGGED_IN else "the broker is shutting down")
            return
        if req.body == "fetch" and status == _OK:
            self.on_fetch_reply(req, r)
        elif req.body == "login" and status == _OK:
            self.take_session(req.login_name, r)
            self.set_state(_ONLINE)
            if not self.finish(req, reply=r):
                # Its caller gave up waiting: undo the login.
                self.send_internal("logout")
                self.forget_session()
                self.set_state(_IDLE)
        elif req.body == "logout" and status in (_OK, pb.STATUS_NOT_LOGGED_IN):
            self.forget_session()
            self.set_state(_IDLE)
            self.finish(req, reply=r)
        else:
            self.finish(req, reply=r)
            if (status == pb.STATUS_NOT_LOGGED_IN and self.state == _ONLINE
                    and req.body != "login"):
                self.lose("the broker no longer knows our session")

    def on_frame(self, data):
        env = pb.Envelope()
        try:
            env.ParseFromString(data)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends
            log.debug("causeway: undecodable frame from the broker")
            return
        if env.version != 1:
            log.debug("causeway: dropping a version %d frame", env.version)
            return
        body = env.WhichOneof("body")
        if body == "reply":
            self.on_reply(env)
        elif body == "deliver":
            if self.state in (_ONLINE, _RESUMING) or self.name:
                self.on_deliver(env)
        elif body == "receipt":
            if self.state in (_ONLINE, _RESUMING) or self.name:
                self.on_receipt(env)
        elif body == "presence":
            p = env.presence
            self.post(Presence(p.name, p.online, _REASONS.get(p.reason, "unspecified"),
                               p.timestamp_us))
        # heartbeat and unknown bodies: nothing to do (the receipt counted)

    def read_sock(self):
        gen = self.sock_gen
        for _ in range(READ_BURST):
            if self.sock is None or gen != self.sock_gen:
                return
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.last_recv = time.monotonic()
            if len(frames) != 1:
                log.debug("causeway: ignoring a %d-frame message from the broker", len(frames))
                continue
            self.on_frame(frames[0])

    # -- commands from the application --------------------------------------------

    def on_request(self, req):
        lost = self.state in (_LOST, _RESUMING)
        is_send = req.body == "send"
        keep = is_send and req.msg.durable and self.name is not None and self.c.reconnect
        if lost and not keep:
            if req.body == "logout":
                log.debug("causeway: logout while disconnected: session abandoned")
                self.forget_session()
                self.set_state(_IDLE)
                self.open_sock()
            self.finish(req, error=_DISCONNECTED)
            return
        req.rid = self.new_rid()
        session = is_send and (self.state == _ONLINE or lost)
        clock = None
        if session:
            with self.c._lock:
                cur = dict(self.c._clock)
            cur[self.name] = cur.get(self.name, 0) + 1
            clock = _sorted_clock(cur)
            env = self.envelope("send", req.msg, req.rid, clock)
            data = env.SerializeToString()
            if self.max_frame and len(data) > self.max_frame:
                req.result = (pb.STATUS_TOO_LARGE,
                              f"the message is {len(data)} bytes, the broker takes "
                              f"{self.max_frame}")
                self.finish(req)
                return
            # Vector clock rule: tick our own entry before the send, stamp it.
            with self.c._lock:
                self.c._clock[self.name] = clock[self.name]
            req.clock = clock
            m = req.msg
            if m.broadcast:
                self.trace("send", clock, f"{self.name}:{m.message_id}", None, m.text,
                           broadcast=True, req=req)
            else:
                peers = list(dict.fromkeys(m.to))
                self.trace("send", clock, f"{self.name}:{m.message_id}", peers, m.text,
                           req=req)
        else:
            data = self.envelope(req.body, req.msg, req.rid).SerializeToString()
            if self.multi and self.state == _IDLE:
                req.idle_frame = data   # for the next endpoint if this one refuses
                self.idle_tries = 0
        if req.body == "ack":
            req.epoch = self.c._epoch
        if keep and session:
            req.frame = data
            if lost:
                self.parked.append(req)     # goes out after the next login
                return
            err = self.send_bytes(data)
            req.attempt_deadline = time.monotonic() + self.attempt_time()
        else:
            err = self.send_bytes(data)
        if err == _DISCONNECTED and req.frame is not None:
            self.inflight[req.rid] = req
            self.lose("the broker does not take our frames")
            return
        if err is not None:
            self.finish(req, error=err)
            return
        self.prune(time.monotonic())
        self.inflight[req.rid] = req

    def prune(self, now):
        for rid in [rid for rid, r in self.inflight.items()
                    if r.deadline is not None and r.deadline + INFLIGHT_GRACE < now]:
            del self.inflight[rid]

    def ack_flush(self):
        """auto_ack: one cumulative Ack for what the application handled."""
        self.ack_due = 0.0
        if not self.c.auto_ack or self.state != _ONLINE:
            return
        now = time.monotonic()
        with self.c._lock:
            seq = self.c._ack_target_locked(False, now)
            need = seq > self.c._ack_sent
            self.c._ack_untold = 0
            if self.c._ack_pending:
                self.ack_due = self.c._ack_pending_at + AUTO_ACK_DELAY
            epoch = self.c._epoch
        if not need:
            return
        req = self.send_internal("ack", pb.Ack(seq=seq))
        if req is None:
            return     # the connection is in trouble; the reconnection acks
        req.ack_seq = seq
        req.epoch = epoch
        with self.c._lock:
            if seq > self.c._ack_sent:
                self.c._ack_sent = seq
        log.debug("causeway: acknowledging up to seq %d", seq)

    def read_commands(self):
        while True:
            try:
                self.pipe.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
        while self.c._cmds:
            cmd = self.c._cmds.popleft()
            kind = cmd[0]
            if kind == "term":
                self.terminated = True
                return
            if kind == "request":
                self.on_request(cmd[1])
            elif kind == "ack":
                if cmd[1]:
                    self.ack_flush()
                elif not self.ack_due:
                    self.ack_due = time.monotonic() + AUTO_ACK_DELAY
            elif kind == "flush_trace":
                if self.tracer:
                    self.drain_trace()
                    self.tracer.wait(cmd[1])
                else:
                    cmd[1].done.set()

    # -- timers and the loop -------------------------------------------------------

    def first_attempt_due(self, now):
        first = None
        for req in self.inflight.values():
            if (req.frame is not None and not req.abandoned
                    and (req.deadline is None or req.deadline > now)
                    and (first is None or req.attempt_deadline < first.attempt_deadline)):
                first = req
        return first

    def next_timeout(self, now):
        if (self.peer_gone and self.state in (_ONLINE, _RESUMING)) or (
                self.refused and self.state == _IDLE):
            return 0
        if self.state == _ONLINE:
            due = min(self.last_send + self.hb, self.last_recv + self.loss_time())
            if self.ack_due:
                due = min(due, self.ack_due)
            f = self.first_attempt_due(now)
            if f is not None:
                due = min(due, f.attempt_deadline)
        elif self.state == _LOST:
            due = self.retry_at
        elif self.state == _RESUMING:
            due = self.resume_deadline
        else:
            due = None
        held = self.held_due()
        if held is not None and (due is None or held < due):
            due = held
        if due is None:
            return None
        return max(0, int((due - now) * 1000) + 1)

    def run_timers(self):
        now = time.monotonic()
        if self.held:
            self.release_held(now - self.c.holdback)
        if self.state == _ONLINE:
            if self.peer_gone:
                if self.sock is not None and self.sock.poll(0, zmq.POLLIN):
                    self.read_sock()      # what it sent before closing counts first
                if self.state == _ONLINE:
                    self.lose(f"the connection to {self.c.endpoint} was closed")
                return
            if now - self.last_recv >= self.loss_time() and self.sock is not None:
                # Frames waiting count before the broker is declared lost.
                if self.sock.poll(0, zmq.POLLIN):
                    self.read_sock()
                    if self.state != _ONLINE:
                        return
            if now - self.last_recv >= self.loss_time():
                self.lose(f"no frame from the broker for {int((now - self.last_recv) * 1000)} ms")
                return
            f = self.first_attempt_due(now)
            if f is not None and f.attempt_deadline <= now:
                self.lose(f"no reply to a durable send for {int(self.attempt_time() * 1000)} ms")
                return
            if self.ack_due and now >= self.ack_due:
                self.ack_flush()
            if now - self.last_send >= self.hb:
                self.send_bytes(self.envelope("heartbeat").SerializeToString())
                self.last_send = now
        elif self.state == _LOST:
            if now >= self.retry_at:
                self.start_resume()
        elif self.state == _RESUMING:
            if self.peer_gone:
                self.resume_failed("the connection was refused or closed")
            elif now >= self.resume_deadline:
                self.resume_failed("no reply", _TIMEOUT)
        elif self.state == _IDLE and self.refused:
            self.idle_next_endpoint()

    def run(self):
        try:
            self.loop()
        except BaseException as e:  # noqa: BLE001 - report, then fail every waiter
            log.exception("causeway: I/O thread failed")
            with self.c._cond:
                self.c._thread_error = e
                self.c._cond.notify_all()
        finally:
            self.shutdown()
            self.c._call_event_hook()

    def loop(self):
        while not self.terminated:
            poller = zmq.Poller()
            poller.register(self.pipe, zmq.POLLIN)
            sock, gen, mon = self.sock, self.sock_gen, self.mon
            if sock is not None:
                poller.register(sock, zmq.POLLIN)
            if mon is not None:
                poller.register(mon, zmq.POLLIN)
            if self.tracer and self.tracer.sock is not None:
                poller.register(self.tracer.sock, zmq.POLLIN)
            ready = dict(poller.poll(self.next_timeout(time.monotonic())))
            if self.pipe in ready:
                self.read_commands()
                if self.terminated:
                    break
            if mon is not None and gen == self.sock_gen and mon in ready:
                self.read_monitor()
            if sock is not None and gen == self.sock_gen and sock in ready:
                self.read_sock()
            if self.tracer:
                if self.trace_q:
                    self.drain_trace()
                if self.tracer.sock is not None and self.tracer.sock in ready:
                    self.tracer.read()
                self.tracer.flush()
            self.run_timers()

    def shutdown(self):
        # Leaving while logged in (close() could not log out): best effort.
        if self.state == _ONLINE and self.sock is not None:
            try:
                self.ack_flush()
                self.send_internal("logout", track=False)
                self.sock.close(linger=500)
                self.sock = None
            except zmq.ZMQError:
                pass
        self.fail_inflight(_DISCONNECTED, park=False)
        self.fail_parked(_DISCONNECTED)
        while self.c._cmds:
            cmd = self.c._cmds.popleft()
            if cmd[0] == "request":
                self.finish(cmd[1], error=_DISCONNECTED)
            elif cmd[0] == "flush_trace":
                cmd[1].error = _DISCONNECTED
                cmd[1].done.set()
        self.close_sock()
        if self.tracer:
            self.drain_trace(force=True)
            if self.tracer.sock is not None:
                self.tracer.flush()
            self.tracer.close()
        self.pipe.close()
        self.set_state(_IDLE)
        with self.c._cond:
            self.c._name = None
            self.c._cond.notify_all()


def __getattr__(name):
    """causeway.AsyncClient: imported on first use (asyncio, zmq.asyncio)."""
    if name == "AsyncClient":
        from .aio import AsyncClient
        return AsyncClient
    raise AttributeError(f"module 'causeway' has no attribute {name!r}")
