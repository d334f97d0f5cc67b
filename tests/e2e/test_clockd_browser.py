"""The HTML diagram of causeway-clockd (docs/CLOCKD.md, "Space-time
diagram") in a real headless Chromium (headless.py: Debian's /usr/bin/chromium
over the DevTools protocol, started and stopped by these tests).

What is covered:
  - clicking an event (a real mouse click at the event's position on the
    page) colours its causal past, future and concurrent events and prints
    the counts, checked against an independent vector-clock comparison in
    Python, with process names that are also names of Object.prototype
    members (constructor, toString, __proto__, hasOwnProperty, valueOf);
  - the URL fragment #event=ID selects an event on load;
  - no event hides another: at the centre of every event's mark the page
    shows that event (elementFromPoint), also when a process's own clock
    entry goes backwards (1, 2, 1), and the red ring of each audit finding
    is what the page shows at a point of the ring.
"""

import json
import os
import subprocess
import urllib.parse

import pytest

from headless import Chromium

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CW_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", ".."))
BUILD_DIR = os.environ.get("CW_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
CLOCKD_BIN = os.path.join(BUILD_DIR, "clockd", "causeway-clockd")
RUN_TIMEOUT = 30.0

PROTO_NAMES = ["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf"]


def ev(process, kind, clock, msg=None, peers=None):
    e = {"process": process, "kind": kind, "clock": clock}
    if msg is not None:
        e["msg"] = msg
    if peers is not None:
        e["peers"] = peers
    return e


# Every name of PROTO_NAMES has events concurrent with events of the others,
# and messages make some of them ordered.
PROTO_TRACE = [
    ev("constructor", "local", {"constructor": 1}),
    ev("toString", "send", {"toString": 1}, "t1", ["alice"]),
    ev("alice", "deliver", {"alice": 1, "toString": 1}, "t1", ["toString"]),
    ev("__proto__", "local", {"__proto__": 1}),
    ev("__proto__", "send", {"__proto__": 2}, "p1", ["alice"]),
    ev("alice", "deliver", {"alice": 2, "toString": 1, "__proto__": 2}, "p1", ["__proto__"]),
    ev("valueOf", "local", {"valueOf": 1}),
    ev("hasOwnProperty", "local", {"hasOwnProperty": 1}),
    ev("constructor", "send", {"constructor": 2}, "c1", ["toString"]),
    ev("toString", "deliver", {"toString": 2, "constructor": 2}, "c1", ["constructor"]),
    ev("valueOf", "send", {"valueOf": 2}, "v1", ["hasOwnProperty"]),
    ev("hasOwnProperty", "deliver", {"hasOwnProperty": 2, "valueOf": 2}, "v1", ["valueOf"]),
    ev("alice", "local", {"alice": 3, "toString": 1, "__proto__": 2}),
]


def order(a, b):
    """Relation of clock a to clock b: an oracle independent of clockd."""
    lt = gt = False
    for k in set(a) | set(b):
        x, y = a.get(k, 0), b.get(k, 0)
        lt |= x < y
        gt |= x > y
    return "concurrent" if lt and gt else "before" if lt else "after" if gt else "equal"


def with_ids(trace):
    seen = {}
    out = []
    for e in trace:
        seen[e["process"]] = seen.get(e["process"], 0) + 1
        out.append((f"{e['process']}:{seen[e['process']]}", e))
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.access(CLOCKD_BIN, os.X_OK):
        pytest.fail(f"causeway-clockd not built: {CLOCKD_BIN}")
    with Chromium(tmp_path_factory.mktemp("chromium")) as b:
        yield b


def diagram(tmp_path, trace, name):
    src = tmp_path / f"{name}.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in trace))
    out = tmp_path / f"{name}.html"
    res = subprocess.run([CLOCKD_BIN, "diagram", str(src), str(out)], capture_output=True,
                         text=True, timeout=RUN_TIMEOUT)
    assert res.returncode == 0, res.stderr
    return "file://" + urllib.parse.quote(str(out))


def event_centre(page, event_id):
    """Viewport coordinates of the centre of an event's mark (scrolled into view)."""
    return page.eval(
        "(function(){var g=Array.prototype.find.call(document.querySelectorAll('g.event'),"
        f"function(g){{return g.getAttribute('data-id')==={json.dumps(event_id)};}});"
        "var m=g.querySelector('.mark');m.scrollIntoView({block:'center',inline:'center'});"
        "var r=m.getBoundingClientRect();return [r.left+r.width/2,r.top+r.height/2];})()")


def click(browser, page, x, y):
    for kind in ("mousePressed", "mouseReleased"):
        browser.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                  "button": "left", "clickCount": 1},
                     page.session)


def classes(page):
    return page.eval(
        "Array.prototype.map.call(document.querySelectorAll('svg g.lane g.event'),"
        "function(g){return [g.getAttribute('data-id'),g.getAttribute('class')];})")


def expected_after_click(trace, chosen):
    ids = with_ids(trace)
    clock = dict(ids)[chosen]["clock"]
    want, counts = {}, {"past": 0, "future": 0, "concurrent": 0}
    for eid, e in ids:
        if eid == chosen:
            want[eid] = "focus"
            continue
        r = order(e["clock"], clock)
        k = {"before": "past", "after": "future", "concurrent": "concurrent"}.get(r)
        want[eid] = k
        if k:
            counts[k] += 1
    return want, counts


def test_click_colours_relations_with_prototype_names(browser, tmp_path):
    url = diagram(tmp_path, PROTO_TRACE, "proto")
    page = browser.open(url)
    ids = [eid for eid, _ in with_ids(PROTO_TRACE)]
    assert sorted(i for i, _ in classes(page)) == sorted(ids)
    for chosen in ids:
        x, y = event_centre(page, chosen)
        click(browser, page, x, y)
        want, counts = expected_after_click(PROTO_TRACE, chosen)
        for eid, cls in classes(page):
            got = [c for c in cls.split() if c in ("focus", "past", "future", "concurrent")]
            assert got == ([want[eid]] if want[eid] else []), (chosen, eid, cls)
        text = page.eval("document.getElementById('cw-selection').textContent")
        assert text.startswith(chosen + " "), text
        assert (f"{counts['past']} in its past (blue), {counts['future']} in its future "
                f"(green), {counts['concurrent']} concurrent (orange)") in text, (chosen, text)


def test_fragment_selects_an_event(browser, tmp_path):
    url = diagram(tmp_path, PROTO_TRACE, "fragment")
    page = browser.open(url + "#event=" + urllib.parse.quote("__proto__:2"))
    want, counts = expected_after_click(PROTO_TRACE, "__proto__:2")
    got = {eid: [c for c in cls.split() if c in ("focus", "past", "future", "concurrent")]
           for eid, cls in classes(page)}
    assert got == {eid: [k] if k else [] for eid, k in want.items()}
    text = page.eval("document.getElementById('cw-selection').textContent")
    assert text.startswith("__proto__:2 ") and f"{counts['past']} in its past" in text, text


# bob's own entry goes 1, 2, 1 (and then 2 again): four events with
# colliding clocks, two clock-rule findings.
BACKWARDS_TRACE = [
    ev("alice", "send", {"alice": 1}, "m1", ["bob"]),
    ev("bob", "local", {"bob": 1}),
    ev("bob", "local", {"bob": 2}),
    ev("bob", "local", {"bob": 1}),
    ev("bob", "deliver", {"alice": 1, "bob": 2}, "m1", ["alice"]),
    ev("carol", "local", {"carol": 1}),
]


def visible_at_centres(page):
    """For each event: the data-id of the event the page shows at the centre
    of that event's mark, and whether the ring (if any) shows at its rim."""
    return page.eval(
        "Array.prototype.map.call(document.querySelectorAll('svg g.lane g.event'),function(g){"
        "var m=g.querySelector('.mark');m.scrollIntoView({block:'center',inline:'center'});"
        "var r=m.getBoundingClientRect(),cx=r.left+r.width/2,cy=r.top+r.height/2;"
        "var hit=document.elementFromPoint(cx,cy),he=hit&&hit.closest('g.event');"
        "var ring=g.querySelector('.ring'),rs=null;"
        "if(ring){var rr=ring.getBoundingClientRect();"
        "var h2=document.elementFromPoint(rr.left+rr.width/2,rr.top+1);rs=h2===ring;}"
        "return [g.getAttribute('data-id'),he?he.getAttribute('data-id'):null,rs];})")


@pytest.mark.parametrize("name,trace", [("backwards", BACKWARDS_TRACE), ("proto", PROTO_TRACE)])
def test_no_event_hides_another(browser, tmp_path, name, trace):
    url = diagram(tmp_path, trace, name)
    page = browser.open(url)
    seen = visible_at_centres(page)
    assert len(seen) == len(trace)
    for eid, shown, ring_visible in seen:
        assert shown == eid, (eid, shown, seen)
        assert ring_visible in (None, True), (eid, seen)
    if name == "backwards":
        res = subprocess.run([CLOCKD_BIN, "audit", "--json", "-"], capture_output=True,
                             text=True, timeout=RUN_TIMEOUT,
                             input="".join(json.dumps(e) + "\n" for e in trace))
        findings = json.loads(res.stdout)["findings"]
        at_fault = {f["a"]["id"] for f in findings if f["kind"] == "clock-rule"}
        assert "bob:3" in at_fault
        rings = {eid for eid, _, ring in seen if ring}
        assert at_fault <= rings, (at_fault, rings)
