"""causeway-sim end to end: the CI's crash, churn and mixed scenarios must
end in a clean verdict, a verdict can fail, plans are deterministic, bad scenario
files are refused with their line.

The simulator starts its own broker (free loopback port, store in a
temporary directory) and judges the run from what its clients were shown;
here we only run it and read its --json verdict (docs/SIMULATION.md).
"""

import json
import os
import subprocess
import time

import pytest

from conftest import BUILD_DIR, SOURCE_DIR, TIMEOUT_SCALE

SIM_BIN = os.path.join(BUILD_DIR, "sim", "causeway-sim")
SCENARIOS = os.path.join(SOURCE_DIR, "scripts", "scenarios")
# A scenario run: its own waits scale with CW_TIMEOUT_SCALE too (the
# simulator reads it), plus the audit.
RUN_TIMEOUT = 90 * TIMEOUT_SCALE


def run_sim(*args, timeout=RUN_TIMEOUT):
    if not os.access(SIM_BIN, os.X_OK):
        pytest.fail(f"simulator not built: {SIM_BIN}")
    start = time.monotonic()
    res = subprocess.run([SIM_BIN, *map(str, args)], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=timeout)
    res.elapsed = time.monotonic() - start
    return res


def verdict(res):
    lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
    assert len(lines) == 1, f"expected one JSON line\n{res.stdout}\n{res.stderr}"
    return json.loads(lines[0])


def assert_clean(v, res):
    why = f"{json.dumps(v, indent=1)}\n--- stderr ---\n{res.stderr}"
    assert res.returncode == 0, why
    assert v["clean"] is True, why
    assert v["sent"] > 0 and v["messages"]["not_sent"] == 0, why
    assert v["durable"]["accepted"] > 0, why
    assert v["durable"]["delivered"] == v["durable"]["accepted"], why
    assert v["lost"] == 0 and v["durable"]["lost"] == 0, why
    assert v["duplicated"] == 0, why
    assert v["unexpected"] == 0, why
    assert v["causal"] == 0, why
    assert v["audit"]["ok"] is True and v["audit"]["events"] > 0, why
    assert v["drain"]["timed_out"] is False, why
    assert v["broker_exit"] == 0, why
    assert v["latency_ms"]["count"] >= v["durable"]["delivered"], why


def test_crash_scenario_is_clean(tmp_path):
    res = run_sim("--json", "--workdir", tmp_path / "run", os.path.join(SCENARIOS, "crash.scn"))
    v = verdict(res)
    assert_clean(v, res)
    assert v["faults"]["broker_kills"] == 2 and v["faults"]["broker_restarts"] == 2
    assert v["faults"]["broker_pauses"] == 1
    # Durable sends across the kills are retried by libcauseway until ACCEPTED.
    assert v["outcomes"] == {"ACCEPTED": v["sent"]}, v["outcomes"]
    print(f"crash: {res.elapsed:.1f}s {json.dumps(v)}")


def test_churn_scenario_is_clean(tmp_path):
    res = run_sim("--json", "--workdir", tmp_path / "run", os.path.join(SCENARIOS, "churn.scn"))
    v = verdict(res)
    assert_clean(v, res)
    assert v["faults"]["offline_periods"] == 18
    print(f"churn: {res.elapsed:.1f}s {json.dumps(v)}")


def test_mixed_scenario_is_clean(tmp_path):
    """Live and durable messages mixed across kills and a pause: the
    scenario that found live messages overtaken by durable ones read after
    them (docs/CAUSALITY.md, point 4); clockd's audit must find nothing."""
    res = run_sim("--json", "--workdir", tmp_path / "run", os.path.join(SCENARIOS, "mixed.scn"))
    v = verdict(res)
    assert_clean(v, res)
    assert v["live"]["reported_delivered"] > 0, v
    assert v["audit"]["by_kind"]["causal-order"] == 0, v
    print(f"mixed: {res.elapsed:.1f}s {json.dumps(v)}")


def test_a_duplicate_fails_the_verdict(tmp_path):
    """--inject-duplicate makes one receiver show its first message twice:
    the verdict counts it and the exit status says so (and keeps the work
    directory, here under tmp_path)."""
    work = tmp_path / "run"
    res = run_sim("--json", "--workdir", work, "--inject-duplicate",
                  os.path.join(SCENARIOS, "exchange.scn"), "--seed", "7")
    v = verdict(res)
    assert res.returncode == 1, res.stderr
    assert v["duplicated"] == 1 and v["clean"] is False, v
    assert v["lost"] == 0 and v["causal"] == 0, v
    assert v["workdir"] == str(work) and (work / "trace.jsonl").exists()


def test_same_seed_same_plan(tmp_path):
    scn = os.path.join(SCENARIOS, "churn.scn")
    a = run_sim("--plan", scn, timeout=30)
    b = run_sim("--plan", scn, timeout=30)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert a.stdout == b.stdout
    assert a.stdout.startswith("# scenario churn, seed 5: 12 clients, 360 messages")
    assert a.stdout.count(" send #") == 360
    assert a.stdout.count(" offline for ") == 18
    c = run_sim("--plan", "--seed", "6", scn, timeout=30)
    d = run_sim("--plan", "--seed", "6", scn, timeout=30)
    assert c.returncode == 0 and c.stdout == d.stdout
    assert c.stdout != a.stdout


@pytest.mark.parametrize("body,line,reason", [
    ("clients = 3\nmix = unicast 1, anycast 2\n", 2, "mix: unknown kind 'anycast'"),
    ("clients = 1\n", 1, "clients: 1 is out of range 2..1000"),
    ("think = 100\n", 1, "think: '100' needs a unit: s or ms"),
    ("names = a, b\n\nat 1s offline carol for 1s\n", 3, "offline: no client called 'carol'"),
    ("at 1s restart-broker\n", 1, "restart-broker at 1.000s: the broker is running"),
    ("at 1s kill-broker\n", 1, "the broker is never restarted after this kill"),
    ("# fine\nsize = 400..100\n", 2, "size: range 400..100 runs backwards"),
    ("clients = 3\nclients = 4\n", 2, "'clients' is set twice"),
    ("hello\n", 1, "expected 'key = value' or 'at TIME ACTION'"),
])
def test_bad_scenarios_name_line_and_reason(tmp_path, body, line, reason):
    scn = tmp_path / "bad.scn"
    scn.write_text(body)
    res = run_sim("--plan", scn, timeout=30)
    assert res.returncode == 2, res.stdout
    assert f"{scn}:{line}: " in res.stderr and reason in res.stderr, res.stderr
