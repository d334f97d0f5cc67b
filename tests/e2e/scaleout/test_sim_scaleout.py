"""causeway-sim on several brokers sharing one Redis Cluster (issue 14,
shared/SCALEOUT.md section 7): the harness and the fault scenarios S1-S5
must end in a clean verdict, and the control run (S3 with the brokers'
replica wait switched off, --redis-wait 0) must LOSE accepted messages:
the proof that the S3 test can fail.

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
# The control: runs made until one loses (see the test).
CONTROL_RUNS = 3


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


def test_control_without_wait_loses(tmp_path):
    """S3 with --redis-wait 0: the frozen primary runs the scripts queued in
    its sockets on SIGCONT and answers them before it learns it was
    demoted; without WAIT the brokers say ACCEPTED for writes that the new
    primary never had. The verdict must show it.

    How many are lost depends on how many sends are in flight when the
    primary freezes and on whether a broker retried them elsewhere first:
    with main at 4bc9a50 a run lost 0 to 4 pairs (27 clients; 90 clients
    lost 4), so up to CONTROL_RUNS runs are made and one must lose. Every
    run must still have played its fault and accepted something."""
    losses = []
    for i in range(CONTROL_RUNS):
        v, res = run_sim("scaleout-s3", "--workdir", tmp_path / f"run{i}",
                         "--broker-args", "--redis-wait 0")
        why = f"{json.dumps(v, indent=1)}\n--- stderr ---\n{res.stderr}"
        assert v["faults"]["redis_primary_stops"] == 1 and v["faults"]["errors"] == 0, why
        assert v["durable"]["accepted"] > 0, why
        losses.append(v["lost"])
        if v["lost"] > 0:
            assert v["clean"] is False and res.returncode == 1, why
            break
    assert max(losses) > 0, f"no run of the control lost anything: {losses}"
