"""broker/redis_cluster.c against a real Redis Cluster (tests/e2e/scaleout/
rediscluster.py), driven by tests/scaleout/rc_driver.c:

  - key slots: CRC16 with hash tags equals CLUSTER KEYSLOT on 2,000 keys;
  - resharding under load: 1,000 slots moved with ``redis-cli --cluster
    reshard`` while 60,000 RPUSHes run pipelined; MOVED and ASK are followed
    and every list holds exactly its values, in submission order (the
    per-slot ordering invariant of redis_cluster.h);
  - a primary killed under load: the client reconnects, reloads the table,
    finishes every command (acked, or failed at its deadline), and what is
    acked after the failover is stored in order;
  - scripts flushed under load (NOSCRIPT): every script call is sent again
    as EVAL from its position and every list holds its values in order; a
    connection made afterwards loads the scripts first (no NOSCRIPT);
  - a shard channel unsubscribed and subscribed again at once ends
    subscribed at the server.
"""

import os
import re
import signal
import subprocess
import threading

import pytest

from rediscluster import cluster, wait_for  # noqa: F401 (cluster: pytest fixture)

BUILD_DIR = os.environ.get("CW_BUILD_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "build")
DRIVER = os.path.join(BUILD_DIR, "tests", "scaleout", "rc_driver")



def driver(*args):
    return subprocess.Popen([DRIVER, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_holding(p, timeout=60):
    """Reads the driver's stdout until it says "holding" (bounded); returns
    the lines before it."""
    result = {"lines": []}

    def read():
        for line in p.stdout:
            if line.strip() == "holding":
                result["held"] = True
                return
            result["lines"].append(line.strip())

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    assert result.get("held"), f"driver did not hold: {result}"
    return result["lines"]


def release(p):
    p.stdin.write("go\n")
    p.stdin.flush()


def slots_of(cluster, port):
    """How many slots the node on port owns (per CLUSTER SLOTS)."""
    n = 0
    for lo, hi, primary, *_ in cluster.primaries()[0].client().execute_command("CLUSTER", "SLOTS"):
        if int(primary[1]) == port:
            n += hi - lo + 1
    return n


def finish(p, timeout=120):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, f"rc_driver failed ({p.returncode}): {err}"
    return out


def parse_push(out):
    acked = failed = None
    lists = {}
    stats = {}
    for line in out.splitlines():
        if line.startswith("acked "):
            m = re.match(r"acked (\d+) failed (\d+)", line)
            acked, failed = int(m.group(1)), int(m.group(2))
        elif line.startswith("list "):
            parts = line.split()
            lists[int(parts[1])] = [int(v) for v in parts[2:]]
        elif line.startswith("stats "):
            words = line.split()[1:]
            stats = {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
    return acked, failed, lists, stats


def test_key_slots_match_redis(cluster):
    out = finish(driver("keyslots", cluster.seeds, 2000))
    assert "keyslots 2000 mismatches 0" in out


def test_resharding_under_load_keeps_order(cluster, tmp_path):
    count, keys = 60000, 200
    p = driver("push", cluster.seeds, count, keys, 2000, f"{count // 3}i")
    wait_holding(p)
    # Move 1,000 slots from one primary to another; the driver (idle, its
    # slot table from before) goes on once the first 100 slots have moved,
    # so it meets MOVED for moved slots and ASK for the one moving.
    prim = cluster.primaries()
    src, dst = prim[0], prim[1]
    ids = {n.port: n.client().execute_command("CLUSTER", "MYID").decode() for n in (src, dst)}
    before = slots_of(cluster, dst.port)
    reshard_log = tmp_path / "reshard.log"  # a file: its output would fill a pipe
    r = subprocess.Popen(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{src.port}",
                          "--cluster-from", ids[src.port], "--cluster-to", ids[dst.port],
                          "--cluster-slots", "1000", "--cluster-yes", "--cluster-pipeline", "10"],
                         stdin=subprocess.DEVNULL,  # redis-cli reads arguments from a piped stdin
                         stdout=open(reshard_log, "w"), stderr=subprocess.STDOUT)
    try:
        try:
            wait_for("the first slots moved", lambda: slots_of(cluster, dst.port) > before + 100, 60)
        except AssertionError:
            r.kill()
            raise AssertionError("reshard did not progress: " + reshard_log.read_text()[-1500:])
        release(p)
        out = finish(p)
        r.wait(timeout=120)
        assert r.returncode == 0, reshard_log.read_text()[-2000:]
    finally:
        if r.poll() is None:
            r.kill()
    acked, failed, lists, stats = parse_push(out)
    assert (acked, failed) == (count, 0)
    for k in range(keys):
        assert lists[k] == list(range(k, count, keys)), f"list {k} out of order or incomplete"
    assert stats["moved"] + stats["asked"] > 0, stats


def test_primary_killed_under_load(cluster):
    count, keys = 40000, 100
    half = count // 2
    p = driver("push", cluster.seeds, count, keys, 500, f"{half}i,{half + 500}")
    wait_holding(p)
    # The victim is stopped while the driver is idle; the driver then writes
    # 500 more commands (about a third of them to the victim, unanswered)
    # and holds again; the victim is killed with them in flight.
    victim = cluster.primaries()[0]
    victim.proc.send_signal(signal.SIGSTOP)
    try:
        release(p)
        wait_holding(p)
    finally:
        victim.kill()
    release(p)
    # The replica takes over within a few node timeouts.
    wait_for("a replica promoted", lambda: len(cluster.primaries()) == 3, 30)
    out = finish(p, timeout=180)
    acked, failed, lists, stats = parse_push(out)
    assert acked + failed == count
    assert acked > 0
    # The connection to the dead primary was lost with commands in flight:
    # they were retried, and the table reloaded to find the new primary.
    assert stats["retried"] > 0, stats
    assert stats["refreshes"] > 1, stats
    # After the failover every list can be read again (the LRANGEs above
    # all answered), and what is there for a key is in submission order
    # apart from re-sent commands whose reply was lost with the connection
    # (at most the window's worth, each a repeat of an earlier value).
    for k in range(keys):
        vals = lists[k]
        seen = set()
        for v in vals:
            assert v % keys == k
        firsts = [v for v in vals if not (v in seen or seen.add(v))]
        assert firsts == sorted(firsts), f"list {k}: first occurrences out of order"


def test_noscript_retried_in_order(cluster):
    # Every RPUSH is a script call (cw_rc_script). At the first hold (all
    # answered) the scripts are flushed on every primary: the next calls
    # meet NOSCRIPT, are sent again as EVAL from their positions
    # (redis_cluster.h invariant 6), and every list must hold its values
    # in submission order. At the second hold the scripts are flushed again
    # and the driver's connections killed: its new connections SCRIPT LOAD
    # the preloaded script before anything else, so no NOSCRIPT follows.
    count, keys = 30000, 100
    p = driver("spush", cluster.seeds, count, keys, 1000, f"{count // 3}i,{2 * count // 3}i")
    assert wait_holding(p) == ["noscript 0"]
    for n in cluster.primaries():
        n.client().execute_command("SCRIPT", "FLUSH")
    release(p)
    lines = wait_holding(p)
    flushed = int(lines[-1].split()[1])
    assert flushed > 0, lines  # the flush was met: NOSCRIPT replies, sent again
    for n in cluster.primaries():
        c = n.client()
        c.execute_command("SCRIPT", "FLUSH")
        c.execute_command("CLIENT", "KILL", "TYPE", "normal")  # the driver's, not this one
    release(p)
    out = finish(p)
    acked, failed, lists, stats = parse_push(out)
    assert (acked, failed) == (count, 0)
    for k in range(keys):
        assert lists[k] == list(range(k, count, keys)), f"list {k} out of order or incomplete"
    assert stats["reconnects"] > 0, stats
    assert stats["noscript"] == flushed, stats  # the new connections had the script


def test_resubscribe_in_one_turn(cluster):
    # A shard channel unsubscribed and subscribed again before the module
    # ran (a user's session released and claimed again at once) must end
    # subscribed at the server: the SSUBSCRIBE of the new subscription was
    # once written before the SUNSUBSCRIBE of the old one, so the server
    # ended unsubscribed while the module had said READY, and nothing
    # published on the channel arrived again (a user's deliveries stalled
    # for good). Both orders of the churn: while active, and before the
    # first confirmation was read.
    p = driver("resub", cluster.seeds)
    out, err = p.communicate(timeout=60)
    assert "resub active receivers 1 received 1 lost 0" in out, out
    assert "resub unconfirmed receivers 1 received 1 lost 0" in out, out
    assert "resub twice INVALID_ARGUMENT" in out, out
    assert p.returncode == 0, f"rc_driver failed ({p.returncode}): {err}"
