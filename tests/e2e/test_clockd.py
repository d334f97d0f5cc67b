"""End-to-end tests of causeway-clockd (clockd/, docs/CLOCKD.md).

What is covered:
  - the CLI on the checked-in traces (tests/clockd/): audit exit codes and
    findings, compare / past / future / concurrent, --json everywhere,
    --help on every command, the documented exit codes for bad input;
  - export-shiviz equals tests/clockd/expected.shiviz, and the export reads
    back (as a TRACE) to the same events;
  - diagram: the SVG is well-formed XML (xml.etree) with one lane per
    process and one event group per event; the HTML page embeds the same;
  - the daemon: started on a free loopback port (``tcp://127.0.0.1:*``, it
    prints ``listening ENDPOINT`` first), fed ClockEvent batches from a
    Python DEALER (causeway.proto compiled by protoc, the ``pb`` fixture of
    conftest.py), asked for its audit over the wire, read by the CLI with
    --db while it runs, stopped with SIGTERM (exit 0), restarted on the same
    store.

Every wait is bounded (subprocess timeouts, socket polls); nothing sleeps.
"""

import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET

import pytest
import zmq

from conftest import ClockdDaemon

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CW_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("CW_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
CLOCKD_BIN = os.path.join(BUILD_DIR, "clockd", "causeway-clockd")
FIXTURES = os.path.join(SOURCE_DIR, "tests", "clockd")
PHASE3 = os.path.join(FIXTURES, "phase3.jsonl")
REORDERED = os.path.join(FIXTURES, "reordered.jsonl")

RUN_TIMEOUT = 30.0      # one CLI run
STOP_TIMEOUT = 5.0      # the daemon exits after SIGTERM within this
REPLY_TIMEOUT = 5.0     # one request/reply
SVG = "{http://www.w3.org/2000/svg}"

COMMANDS = ["serve", "events", "compare", "past", "future", "concurrent", "audit", "stats",
            "export-shiviz", "diagram"]


@pytest.fixture(scope="module", autouse=True)
def built():
    if not os.access(CLOCKD_BIN, os.X_OK):
        pytest.fail(f"causeway-clockd not built: {CLOCKD_BIN}")


def clockd(*args, input=None):
    """Runs causeway-clockd to completion; returns CompletedProcess (text)."""
    return subprocess.run([CLOCKD_BIN, *map(str, args)], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, input=input)


def clockd_json(*args):
    res = clockd(*args, "--json")
    try:
        return res.returncode, json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (rc={res.returncode}):\n{res.stdout}\n{res.stderr}")


def read_trace(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip() and not line.lstrip().startswith("#")]


# ---------------------------------------------------------------------------
# CLI on files

def test_help_on_everything():
    for args in (["--help"], ["help"]):
        res = clockd(*args)
        assert res.returncode == 0, res.stderr
        assert "usage: causeway-clockd COMMAND" in res.stdout
        assert "Exit codes:" in res.stdout
    for cmd in COMMANDS:
        for args in ([cmd, "--help"], ["help", cmd]):
            res = clockd(*args)
            assert res.returncode == 0, (cmd, res.stderr)
            assert res.stdout.startswith(f"usage: causeway-clockd {cmd}"), res.stdout
    res = clockd()
    assert res.returncode == 2 and "usage:" in res.stderr
    res = clockd("frobnicate", PHASE3)
    assert res.returncode == 2 and "unknown command" in res.stderr
    res = clockd("audit", PHASE3, "--bogus")
    assert res.returncode == 2 and "unknown option --bogus" in res.stderr


def test_audit_reordered_trace():
    res = clockd("audit", REORDERED)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "3 findings: 1 causal-order, 1 duplicate, 1 gap" in res.stdout
    rc, out = clockd_json("audit", REORDERED)
    assert rc == 1
    assert out["count"] == 3
    assert out["by_kind"] == {"causal-order": 1, "duplicate": 1, "gap": 1, "clock-rule": 0,
                              "unmatched": 0}
    got = [(f["kind"], f["process"], f["a"]["id"], f["b"]["id"], f["msg"]) for f in out["findings"]]
    assert got == [("causal-order", "bob", "bob:1", "bob:2", "alice:m2"),
                   ("duplicate", "bob", "bob:3", "bob:2", "alice:m1"),
                   ("gap", "bob", "bob:4", "alice:3", "alice:m3")]
    # Each finding carries both events' clocks.
    assert out["findings"][0]["a"]["clock"] == {"alice": 2, "bob": 1}
    assert out["findings"][2]["b"]["clock"] == {"alice": 3}


def test_audit_clean_trace():
    res = clockd("audit", PHASE3)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("no findings (8 events, 3 processes)")
    rc, out = clockd_json("audit", PHASE3)
    assert rc == 0 and out["count"] == 0 and out["findings"] == []


def test_events_and_queries():
    rc, out = clockd_json("events", PHASE3)
    assert rc == 0
    assert out["count"] == 8 and out["processes"] == ["alice", "bob", "carol"]
    ids = [e["id"] for e in out["events"]]
    assert ids == ["alice:1", "bob:1", "bob:2", "carol:1", "bob:3", "alice:2", "carol:2", "bob:4"]
    # Listings carry the trace line as written (plus the id).
    for listed, original in zip(out["events"], read_trace(PHASE3)):
        listed = dict(listed)
        del listed["id"]
        for key, value in original.items():
            assert listed[key] == value, (key, listed, original)

    rc, out = clockd_json("compare", PHASE3, "alice:1", "carol:2")
    assert rc == 0
    assert out == {"a": {"id": "alice:1", "clock": {"alice": 1}},
                   "b": {"id": "carol:2", "clock": {"alice": 1, "bob": 3, "carol": 2}},
                   "order": "before"}
    for a, b, order in [("carol:2", "alice:1", "after"), ("bob:1", "carol:1", "concurrent"),
                        ("bob:2", "bob:2", "equal")]:
        rc, out = clockd_json("compare", PHASE3, a, b)
        assert (rc, out["order"]) == (0, order)
    res = clockd("compare", PHASE3, "alice:1", "carol:2")
    assert res.stdout.strip() == ("alice:1 {alice:1} happened before carol:2 "
                                  "{alice:1, bob:3, carol:2}")

    expect = {"past": ["alice:1", "bob:1", "bob:2"], "future": ["carol:2", "bob:4"],
              "concurrent": ["carol:1", "alice:2"]}
    for rel, ids in expect.items():
        rc, out = clockd_json(rel, PHASE3, "bob:3")
        assert rc == 0
        assert out["relation"] == rel and out["event"]["id"] == "bob:3"
        assert [e["id"] for e in out["events"]] == ids
        assert out["count"] == len(ids)


def test_stats():
    rc, out = clockd_json("stats", PHASE3)
    assert rc == 0
    assert (out["events"], out["processes"], out["messages"]) == (8, 3, 3)
    assert out["pairs"] == {"total": 28, "ordered": 17, "concurrent": 11, "equal": 0}
    assert out["width"]["value"] == 3 and out["width"]["exact"] is True
    assert sorted(out["width"]["antichain"]) == ["alice:2", "bob:4", "carol:2"]
    assert out["clock_size"]["histogram"] == {"1": 3, "2": 3, "3": 2}
    assert out["holdback_us"]["count"] == 2 and out["holdback_us"]["max"] == 1500
    rc, out = clockd_json("stats", PHASE3, "--exact-limit", "0", "--pairs-limit", "3")
    assert rc == 0 and out["pairs"] is None
    assert out["width"]["lower"] <= 3 <= out["width"]["upper"]


def test_bad_input_exit_codes(tmp_path):
    bad = tmp_path / "bad.jsonl"
    lines = open(PHASE3).read().splitlines()
    lines.insert(4, '{"process":"alice","kind":"send","clock":{"alice":1}')   # line 5: cut short
    bad.write_text("\n".join(lines) + "\n")
    res = clockd("audit", bad)
    assert res.returncode == 3
    assert f"{bad}:5: column 53: expected ',' or '}}'" in res.stderr
    rc, out = clockd_json("audit", bad)
    assert rc == 3 and out["exit"] == 3 and ":5: column 53" in out["error"]
    res = clockd("audit", bad, "--skip-bad")
    assert res.returncode == 0, res.stderr
    assert "warning: skipped" in res.stderr and ":5:" in res.stderr

    res = clockd("audit", tmp_path / "missing.jsonl")
    assert res.returncode == 3 and "No such file" in res.stderr
    res = clockd("past", PHASE3, "alice:7")
    assert res.returncode == 4 and "alice has 2 events" in res.stderr
    res = clockd("past", PHASE3, "dave:1")
    assert res.returncode == 4
    res = clockd("past", PHASE3, "alice")
    assert res.returncode == 2
    res = clockd("compare", PHASE3, "alice:1")
    assert res.returncode == 2
    res = clockd("export-shiviz", PHASE3, tmp_path / "no" / "such" / "dir.shiviz")
    assert res.returncode == 5 and "No such file or directory" in res.stderr
    # A trace on stdin.
    res = clockd("audit", "-", input=open(REORDERED).read())
    assert res.returncode == 1


def refused_code_points():
    """Every code point CLOCKD.md forbids in names: Unicode White_Space
    (str.isspace adds only U+001C..U+001F, which are Cc anyway) and the
    general categories Cc and Cf, from Python's unicodedata, not from clockd."""
    import unicodedata
    return [cp for cp in range(1, 0x110000)
            if not 0xD800 <= cp <= 0xDFFF
            and (chr(cp).isspace() or unicodedata.category(chr(cp)) in ("Cc", "Cf"))]


def test_names_refuse_unicode_whitespace_and_controls(tmp_path):
    """Issue 11 item 18: a name with U+00A0, U+3000, U+2028, U+0085, U+FEFF or
    any other White_Space / Cc / Cf code point is refused, as a process, a
    clock node or a peer, written as a JSON escape or as raw UTF-8."""
    cps = refused_code_points()
    for must in (0x00A0, 0x3000, 0x2028, 0x0085, 0xFEFF, 0x200B, 0x180E, 0xE0001):
        assert must in cps
    good = {"process": "ok", "kind": "local", "clock": {"ok": 1}}
    lines, expected_bad = [json.dumps(good)], 0
    for cp in cps:
        name = "a" + chr(cp) + "b"
        for ev in ({"process": name, "kind": "local", "clock": {name: 1}},
                   {"process": "ok", "kind": "local", "clock": {"ok": 2, name: 1}},
                   {"process": "ok", "kind": "send", "clock": {"ok": 2}, "msg": "k",
                    "peers": [name]}):
            lines.append(json.dumps(ev))                          # \uXXXX escapes
            expected_bad += 1
            if cp >= 0x80:
                lines.append(json.dumps(ev, ensure_ascii=False))   # raw UTF-8
                expected_bad += 1
    trace = tmp_path / "names.jsonl"
    trace.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = clockd("events", trace)
    assert res.returncode == 3 and ":2: " in res.stderr and "bad name" in res.stderr, res.stderr
    res = clockd("events", trace, "--skip-bad", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["count"] == 1
    warnings = [w for w in res.stderr.splitlines() if "warning: skipped" in w]
    assert len(warnings) == expected_bad, (len(warnings), expected_bad)


def test_export_shiviz(tmp_path):
    out = tmp_path / "phase3.shiviz"
    rc, summary = clockd_json("export-shiviz", PHASE3, out)
    assert rc == 0 and summary == {"output": str(out), "format": "shiviz", "events": 8,
                                   "processes": 3}
    with open(os.path.join(FIXTURES, "expected.shiviz")) as f:
        expected = f.read()
    assert out.read_text() == expected
    # Header: ShiViz's parser regex, then an empty delimiter line.
    first, second = expected.split("\n")[:2]
    assert "(?<event>" in first and "(?<host>" in first and "(?<clock>" in first
    assert second == ""
    # ShiViz's parser, simulated: apply the header regex (named groups in
    # Python syntax) to the rest of the file, as ShiViz does after trimming.
    regex = re.compile(first.replace("(?<", "(?P<"), re.M)
    log = expected.split("\n", 2)[2].strip()
    matches = list(regex.finditer(log))
    trace = read_trace(PHASE3)
    assert len(matches) == len(trace)
    for m, ev in zip(matches, trace):
        assert m.group("host") == ev["process"]
        assert json.loads(m.group("clock")) == ev["clock"]
        assert m.group("kind") == ev["kind"] and int(m.group("ts")) == ev["ts_us"]
    # Stdout export is the same text.
    assert clockd("export-shiviz", PHASE3, "-").stdout == expected
    # Our own export reads back as a trace with the same events and clocks.
    _, a = clockd_json("events", PHASE3)
    _, b = clockd_json("events", out)
    assert a == b
    # And the audit of the exported reordered trace still finds the same three.
    out2 = tmp_path / "reordered.shiviz"
    assert clockd("export-shiviz", REORDERED, out2).returncode == 0
    rc, audit = clockd_json("audit", out2)
    assert rc == 1 and audit["count"] == 3


def lanes_and_events(root):
    lanes = [g for g in root.iter(SVG + "g") if g.get("class") == "lane"]
    events = [g for lane in lanes for g in lane.iter(SVG + "g")
              if (g.get("class") or "").startswith("event ")]
    return lanes, events


def test_diagram_svg_is_wellformed(tmp_path):
    for trace in (PHASE3, REORDERED):
        _, listing = clockd_json("events", trace)
        out = tmp_path / (os.path.basename(trace) + ".svg")
        res = clockd("diagram", trace, out)
        assert res.returncode == 0, res.stderr
        root = ET.parse(out).getroot()      # raises on malformed XML
        assert root.tag == SVG + "svg"
        lanes, events = lanes_and_events(root)
        assert [lane.get("data-process") for lane in lanes] == listing["processes"]
        assert sorted(g.get("data-id") for g in events) == sorted(e["id"] for e in listing["events"])
        for g in events:    # every event's clock is JSON in data-clock
            json.loads(g.get("data-clock"))
    # Focus: past / future / concurrent classes around bob:3.
    out = tmp_path / "focus.svg"
    assert clockd("diagram", PHASE3, out, "--focus", "bob:3", "--title", "a <b> & c").returncode == 0
    root = ET.parse(out).getroot()
    assert root.find(SVG + "title").text == "a <b> & c"
    _, events = lanes_and_events(root)
    cls = {g.get("data-id"): g.get("class").split()[2:] for g in events}
    assert cls["bob:3"] == ["focus"]
    assert sorted(k for k, v in cls.items() if "past" in v) == ["alice:1", "bob:1", "bob:2"]
    assert sorted(k for k, v in cls.items() if "future" in v) == ["bob:4", "carol:2"]
    assert sorted(k for k, v in cls.items() if "concurrent" in v) == ["alice:2", "carol:1"]
    # HTML: a page embedding the same SVG.
    html = tmp_path / "reordered.html"
    rc, summary = clockd_json("diagram", REORDERED, html)
    assert rc == 0 and summary["format"] == "html"
    text = html.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<script>" in text
    svg = text[text.index("<svg "):text.index("</svg>") + len("</svg>")]
    lanes, events = lanes_and_events(ET.fromstring(svg))
    assert len(lanes) == 2 and len(events) == 8


# ---------------------------------------------------------------------------
# The daemon

@pytest.fixture
def daemons(tmp_path):
    started = []

    def start(db, name="clockd"):
        d = ClockdDaemon(db, tmp_path / f"{name}{len(started)}.log")
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(timeout=STOP_TIMEOUT)


class Client:
    """A DEALER speaking ClockdRequest / ClockdReply."""

    def __init__(self, pb, ctx, endpoint, kind=zmq.DEALER):
        self.pb = pb
        self.sock = ctx.socket(kind)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.next_id = 1

    def request(self, body=None, msg=None, version=1, request_id=None):
        req = self.pb.ClockdRequest(version=version,
                                    request_id=self.next_id if request_id is None else request_id)
        self.next_id += 1
        if body:
            getattr(req, body).CopyFrom(msg)
        return self.raw(req.SerializeToString(), req.request_id)

    def raw(self, data, request_id):
        self.sock.send(data)
        if request_id == 0:
            return None
        assert self.sock.poll(int(REPLY_TIMEOUT * 1000), zmq.POLLIN), "no reply from clockd"
        reply = self.pb.ClockdReply()
        reply.ParseFromString(self.sock.recv())
        assert reply.request_id == request_id
        return reply


def to_pb(pb, ev):
    kinds = {"send": pb.ClockEvent.KIND_SEND, "deliver": pb.ClockEvent.KIND_DELIVER,
             "local": pb.ClockEvent.KIND_LOCAL}
    m = pb.ClockEvent(process=ev["process"], kind=kinds[ev["kind"]], msg=ev.get("msg", ""),
                      peers=ev.get("peers", []), ts_us=ev.get("ts_us", 0), text=ev.get("text", ""),
                      holdback_us=ev.get("holdback_us", 0), broadcast=ev.get("broadcast", False))
    for node, counter in sorted(ev["clock"].items()):
        m.clock.add(node=node, counter=counter)
    for node, counter in sorted(ev.get("msg_clock", {}).items()):
        m.msg_clock.add(node=node, counter=counter)
    return m


def status(pb, name):
    return pb.Status.Value("STATUS_" + name)


def test_daemon_collects_and_audits(pb, daemons, tmp_path):
    db = tmp_path / "clockd.db"
    d = daemons(db)
    ctx = zmq.Context()
    try:
        c = Client(pb, ctx, d.endpoint)
        events = read_trace(REORDERED)
        # alice reports her sends, bob his deliveries, as two batches.
        for batch in (events[:4], events[4:]):
            reply = c.request("report", pb.ClockEventBatch(events=[to_pb(pb, e) for e in batch]))
            assert reply.status == status(pb, "OK"), reply.detail
            assert reply.stored == len(batch)
        assert (reply.total_events, reply.processes) == (8, 2)

        reply = c.request("audit", pb.ClockdAudit())
        assert reply.status == status(pb, "OK")
        assert reply.total_findings == 3
        F = pb.ClockFinding
        got = [(f.kind, f.process, f.event_a, f.event_b, f.msg) for f in reply.findings]
        assert got == [(F.KIND_CAUSAL_ORDER, "bob", "bob:1", "bob:2", "alice:m2"),
                       (F.KIND_DUPLICATE, "bob", "bob:3", "bob:2", "alice:m1"),
                       (F.KIND_GAP, "bob", "bob:4", "alice:3", "alice:m3")]
        assert {e.node: e.counter for e in reply.findings[0].clock_a} == {"alice": 2, "bob": 1}
        assert "delivered alice:m2" in reply.findings[0].detail

        reply = c.request("compare", pb.ClockdCompare(a="alice:4", b="bob:4"))
        assert reply.order == pb.CLOCK_ORDER_BEFORE
        reply = c.request("compare", pb.ClockdCompare(a="alice:4", b="bob:3"))
        assert reply.order == pb.CLOCK_ORDER_CONCURRENT
        reply = c.request("compare", pb.ClockdCompare(a="alice:4", b="zed:1"))
        assert reply.status == status(pb, "BAD_REQUEST") and "zed" in reply.detail

        # Bad requests get their statuses and change nothing.
        bad = to_pb(pb, events[0])
        bad.process = "not a name"
        reply = c.request("report", pb.ClockEventBatch(events=[to_pb(pb, events[1]), bad]))
        assert reply.status == status(pb, "BAD_REQUEST")
        assert reply.detail.startswith("event 1: process: bad name")
        for bad_name in ("a\u00a0b", "a\u3000b", "a\u2028b", "a\u0085b", "\ufeffalice"):
            bad.process = bad_name
            reply = c.request("report", pb.ClockEventBatch(events=[bad]))
            assert reply.status == status(pb, "BAD_REQUEST"), bad_name
            assert reply.detail.startswith("event 0: process: bad name"), reply.detail
        assert reply.total_events == 8
        c.sock.send(b"not protobuf \xff\xff")
        assert c.sock.poll(int(REPLY_TIMEOUT * 1000), zmq.POLLIN)
        garbage = pb.ClockdReply()
        garbage.ParseFromString(c.sock.recv())
        assert garbage.status == status(pb, "BAD_REQUEST")
        reply = c.request("info", pb.ClockdInfo(), version=2)
        assert reply.status == status(pb, "UNSUPPORTED_VERSION")
        reply = c.request()
        assert reply.status == status(pb, "BAD_REQUEST")

        # A REQ socket works too (the empty delimiter is echoed).
        r = Client(pb, ctx, d.endpoint, kind=zmq.REQ)
        reply = r.request("info", pb.ClockdInfo())
        assert reply.status == status(pb, "OK") and reply.total_events == 8

        # Fire-and-forget (request_id 0), then a query proves it was stored.
        local = {"process": "carol", "kind": "local", "clock": {"carol": 1}}
        c.request("report", pb.ClockEventBatch(events=[to_pb(pb, local)]), request_id=0)
        reply = c.request("info", pb.ClockdInfo())
        assert reply.total_events == 9 and reply.processes == 3

        # The CLI reads the store while the daemon runs.
        rc, out = clockd_json("audit", "--db", db)
        assert rc == 1, out
        assert [(f["kind"], f["a"]["id"], f["b"]["id"]) for f in out["findings"]] == [
            ("causal-order", "bob:1", "bob:2"), ("duplicate", "bob:3", "bob:2"),
            ("gap", "bob:4", "alice:3")]
        rc, out = clockd_json("events", "--db", db)
        assert rc == 0 and out["count"] == 9
        # The stored lines are the trace format: the first 8 equal the file's.
        for stored, original in zip(out["events"], events):
            for key, value in original.items():
                assert stored[key] == value
        c.sock.close()
        r.sock.close()
    finally:
        ctx.term()
    assert d.stop() == 0, d.log()
    assert "listening on" in d.log()

    # Restarted on the same store, it still holds everything.
    d2 = daemons(db)
    ctx = zmq.Context()
    try:
        c = Client(pb, ctx, d2.endpoint)
        reply = c.request("info", pb.ClockdInfo())
        assert (reply.status, reply.total_events) == (status(pb, "OK"), 9)
        reply = c.request("audit", pb.ClockdAudit(max_findings=1))
        assert (reply.total_findings, len(reply.findings)) == (3, 1)
        c.sock.close()
    finally:
        ctx.term()
    assert d2.stop() == 0, d2.log()


def test_daemon_refuses_bad_store(tmp_path):
    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("hello, this file is not an SQLite database at all " * 10)
    res = subprocess.run([CLOCKD_BIN, "serve", "--bind", "tcp://127.0.0.1:*", "--db",
                          str(not_a_store)], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert res.returncode == 5 and res.stdout == ""
    assert "notes.txt" in res.stderr
    res = subprocess.run([CLOCKD_BIN, "serve", "--bind", "nonsense://x", "--db", ":memory:"],
                         capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert res.returncode == 5 and "cannot bind nonsense://x" in res.stderr
