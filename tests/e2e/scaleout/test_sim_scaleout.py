"""causeway-sim on several brokers sharing one Redis Cluster (issue 14,
shared/SCALEOUT.md section 7): the harness and the fault scenarios S1-S5
must end in a clean verdict, and the control (S3's fault with the brokers'
replica wait switched off, --redis-wait 0, scaleout-control.scn) must LOSE
accepted messages: the proof that the S3 test can fail. The same control
scenario with the wait on must be clean.

The simulator starts everything itself: a 3x1 Redis Cluster (six
redis-server processes on free loopback ports, sim/cluster.c), three
brokers with --store redis://..., nine libcauseway clients; it plays the
faults at their planned times, stops everything by PID and prints its
verdict as JSON (docs/SIMULATION.md). Here we only run it and read the
verdict: counts, never latencies. Each test is its own ctest entry (label
scaleout, tests/scaleout/CMakeLists.txt), selected with -k.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("CW_SOURCE_DIR") or os.path.normpath(os.path.join(HERE, "..", "..", ".."))
BUILD_DIR = os.environ.get("CW_BUILD_DIR") or os.path.join(SOURCE_DIR, "build")
TIMEOUT_SCALE = float(os.environ.get("CW_TIMEOUT_SCALE", "1"))
SIM_BIN = os.path.join(BUILD_DIR, "sim", "causeway-sim")
SCENARIOS = os.path.join(SOURCE_DIR, "scripts", "scenarios")
# One run: the cluster (~5 s), the plan (~20 s), a failover's pause, the
# drain (at most its drain_timeout, 20 s) and the audit.
RUN_TIMEOUT = 240 * TIMEOUT_SCALE
# SIGCONT of the stop in scaleout-control.scn ("at 5s stop-primary 1 for 6s").
CONTROL_CONT_S = 11.0


def run_sim(name, *args):
    if not os.access(SIM_BIN, os.X_OK):
        pytest.fail(f"simulator not built: {SIM_BIN}")
    for prog in ("redis-server", "redis-cli"):
        if not shutil.which(prog):
            pytest.fail(f"{prog} is not installed (scripts/test installs redis-server)")
    start = time.monotonic()
    res = subprocess.run([SIM_BIN, "--json", *map(str, args),
                          os.path.join(SCENARIOS, f"{name}.scn")],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=RUN_TIMEOUT)
    res.elapsed = time.monotonic() - start
    lines = [line for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, f"expected one JSON verdict\n{res.stdout}\n{res.stderr}"
    v = json.loads(lines[0])
    # The figures the issue asks for, in the test log.
    print(f"{name}{' ' + ' '.join(map(str, args[2:])) if len(args) > 2 else ''}: "
          f"{res.elapsed:.1f}s accepted {v['accepted']} delivered {v['delivered']} "
          f"lost {v['lost']} dup {v['duplicated']} seq_reuse {v['seq_reuse']} "
          f"causal {v['causal']} late {v['late']} "
          f"accepted_pause {v['accepted_pause_s']:.2f}s (from {v['accepted_pause_at_s']:.2f}s)")
    return v, res


def assert_clean(v, res, late_max=0):
    why = f"{json.dumps(v, indent=1)}\n--- stderr ---\n{res.stderr}"
    assert res.returncode == 0, why
    assert v["clean"] is True, why
    assert v["brokers"] == 3 and v["store"] == "redis" and v["redis_cluster"] == "3x1", why
    assert v["sent"] > 0 and v["messages"]["not_sent"] == 0, why
    assert v["durable"]["accepted"] > 0, why
    assert v["delivered"] == v["accepted"], why
    assert v["lost"] == 0, why
    assert v["duplicated"] == 0, why
    assert v["seq_reuse"] == 0, why
    assert v["unexpected"] == 0, why
    # A causal-order finding on a delivery libcauseway flagged late is the
    # documented price of order across brokers (SCALEOUT.md section 8):
    # detected, not silent. Anything else is a violation.
    assert v["causal"] - v["causal_late"] == 0, why
    assert v["late"] <= late_max, why
    assert v["audit"]["ok"] is True and v["audit"]["events"] > 0, why
    assert v["drain"]["timed_out"] is False, why
    assert v["faults"]["errors"] == 0, why
    assert v["broker_exit"] == 0, why
    # Every durable send was answered ACCEPTED (libcauseway retries until
    # it is, within send_timeout). A live send may end DISCONNECTED when a
    # busy broker misses heartbeats (at most once: not counted as lost).
    assert v["durable"]["messages_accepted"] == v["messages"]["durable"], why


def run_dir(tmp_path):
    return tmp_path / "run"


def test_harness_is_clean(tmp_path):
    v, res = run_sim("scaleout-harness", "--workdir", run_dir(tmp_path))
    assert_clean(v, res)
    assert v["broker_exits"] == [0, 0, 0]


def test_s1_kill_broker_is_clean(tmp_path):
    v, res = run_sim("scaleout-s1", "--workdir", run_dir(tmp_path))
    assert v["failover"] is True, "libcauseway without endpoint lists: S1 cannot pass"
    # late: at most the dead broker's open multicasts (one send in flight
    # per client of broker 2).
    assert_clean(v, res, late_max=3 * 4)
    assert v["faults"]["broker_kills"] == 1
    assert v["broker_exits"][1] == -2  # down at the end, not counted


def test_s2_kill_primary_is_clean(tmp_path):
    v, res = run_sim("scaleout-s2", "--workdir", run_dir(tmp_path))
    assert_clean(v, res)
    assert v["faults"]["redis_primary_kills"] == 1 and v["faults"]["redis_node_restarts"] == 1


def test_s3_stop_primary_is_clean(tmp_path):
    v, res = run_sim("scaleout-s3", "--workdir", run_dir(tmp_path))
    assert_clean(v, res)
    assert v["faults"]["redis_primary_stops"] == 1


def test_s3_short_stop_primary_is_clean(tmp_path):
    # A 1000 ms node timeout and 3 s frozen: brokers are fenced and their
    # clients log in again, some on another broker and back (a user
    # released and claimed again at once). 3 runs in 10 stalled recipients
    # for good before redis_cluster.c kept a channel's SSUBSCRIBE and
    # SUNSUBSCRIBE in call order (docs/SIMULATION.md).
    v, res = run_sim("scaleout-s3-short", "--workdir", run_dir(tmp_path))
    assert_clean(v, res)
    assert v["faults"]["redis_primary_stops"] == 1


def test_s4_reshard_is_clean(tmp_path):
    v, res = run_sim("scaleout-s4", "--workdir", run_dir(tmp_path))
    assert_clean(v, res)
    assert v["faults"]["reshards"] == 1


def test_s5_kill_pubsub_is_clean(tmp_path):
    v, res = run_sim("scaleout-s5", "--workdir", run_dir(tmp_path))
    assert_clean(v, res)
    assert v["faults"]["pubsub_kills"] == 2
    # The fault hit something: the brokers' subscriber connections.
    assert v["faults"]["pubsub_closed"] > 0


def crc16(data):
    """CRC-16/XMODEM, Redis Cluster's key hash (broker/redis_cluster.c)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def control_offline():
    """The clients scaleout-control.scn keeps offline across the stop."""
    with open(os.path.join(SCENARIOS, "scaleout-control.scn")) as f:
        return sorted(m.group(1) for m in re.finditer(r"^at 3s offline (\S+) for 17s$", f.read(), re.M))


def test_control_premise():
    """scaleout-control.scn's offline clients are exactly the default names
    c01-c27 whose keys ({name}: one slot per user) hash to primary 1, which
    redis-cli --cluster create gives slots 0-5460 of 16384 on 3 primaries.
    If this breaks, the control loses by chance again, not by design."""
    names = [f"c{i:02d}" for i in range(1, 28)]
    on_primary_1 = sorted(n for n in names if crc16(n.encode()) % 16384 <= 5460)
    assert control_offline() == on_primary_1
    # Every broker homes some of them (client i on broker i mod 3), so the
    # clients of every broker have some among their recipients
    # (recipients = other-broker): each broker's stuck batch holds an append.
    assert {names.index(n) % 3 for n in on_primary_1} == {0, 1, 2}


def lost_pairs(workdir):
    """lost.txt: '#K SENDER -> RCPT (home broker A -> B) sent Ts ACCEPTED Ts'."""
    with open(os.path.join(workdir, "lost.txt")) as f:
        return [re.match(r"#\d+ (\S+) -> (\S+) .* ACCEPTED ([0-9.]+)s$", line).groups()
                for line in f if line.strip()]


def test_control_without_wait_loses(tmp_path):
    """The control: S3's stop of primary 1 with --redis-wait 0 loses what
    the frozen primary acknowledged after SIGCONT. ONE run.

    Why it is certain (docs/SCALEOUT.md section 13, scaleout-control.scn):
    a broker has one store batch in flight; when primary 1 freezes, each
    broker stops at its first batch that touches primary 1. The users
    whose keys live there are offline across the stop, so that batch is
    another client's send to one of them, waiting in phase 2 with its
    APPEND script queued in the frozen node's socket. On SIGCONT the node
    runs the queued scripts and answers them (its client sockets are read
    before the cluster bus connections that tell it, a few ms later, that
    its replica was promoted), then resyncs from the new primary, which
    never had them. Without WAIT the brokers answer ACCEPTED: one pair or
    more per broker (3 in each of 25 measured runs, SIMULATION.md). At
    least one lost pair must be of exactly that kind: to a user of primary
    1, from a user that was online, ACCEPTED after the SIGCONT. (Other lost
    pairs are printed: before 60669b1 users starved after the stop showed
    up here too; SIMULATION.md.)"""
    wd = tmp_path / "run"
    v, res = run_sim("scaleout-control", "--workdir", wd, "--broker-args", "--redis-wait 0")
    why = f"{json.dumps(v, indent=1)}\n--- stderr ---\n{res.stderr}"
    assert v["faults"]["redis_primary_stops"] == 1 and v["faults"]["errors"] == 0, why
    assert v["faults"]["offline_periods"] == 12, why
    assert v["durable"]["accepted"] > 0, why
    assert v["lost"] > 0, why
    assert v["clean"] is False and res.returncode == 1, why
    pairs = lost_pairs(wd)
    assert len(pairs) == v["lost"], why
    offline = set(control_offline())
    # A frozen node answers nothing: these came after the SIGCONT.
    expected = [p for p in pairs
                if p[1] in offline and p[0] not in offline and float(p[2]) >= CONTROL_CONT_S]
    print(f"lost: {len(expected)} by the frozen primary's answers: {expected}; "
          f"others: {[p for p in pairs if p not in expected]}")
    assert expected, (pairs, why)


def test_control_with_wait_is_clean(tmp_path):
    """The control scenario with the default --redis-wait 1: the same
    scripts are run and answered by the old primary on SIGCONT, but the
    WAIT that follows is not satisfied there (its replica link is gone,
    then it is a replica itself), so the batch re-runs them on the new
    primary and answers only once a replica has them. Nothing is lost:
    S3's clean verdict with writes known to be at risk."""
    v, res = run_sim("scaleout-control", "--workdir", run_dir(tmp_path))
    assert_clean(v, res)
    assert v["faults"]["redis_primary_stops"] == 1 and v["faults"]["offline_periods"] == 12
