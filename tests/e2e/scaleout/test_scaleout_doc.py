"""docs/SCALEOUT.md's one-machine trial runs as written.

The block under "A one-machine trial" is run by `sh -e`, verbatim except
for its three variable lines (REDIS_PORTS, BROKER_PORTS, TRIAL), which get
free loopback ports (each Redis port's bus port, +10000, free too) and a
directory under the test's tmp dir; `build` is linked to the build under
test. It starts six redis-server processes and three brokers itself, so
this checks what a new user would see: the cluster is created, waited for
(cluster_state:ok everywhere and every replica linked: without that wait
the first Login came right after `redis-cli --cluster create` and timed
out), the two users' messages are ACCEPTED and shown across brokers, one
broker is killed in between, and everything is stopped and removed.

If the block fails, every process it recorded (redis.pids, broker.pids
in the trial directory) is killed by PID, after checking that the PID is
still one of those programs.
"""

import os
import random
import re
import signal
import socket
import subprocess

from conftest import BUILD_DIR, SOURCE_DIR, TIMEOUT_SCALE

DOC = os.path.join(SOURCE_DIR, "docs", "SCALEOUT.md")
RUN_TIMEOUT = 120 * TIMEOUT_SCALE   # the block takes about 10 s


def _free(port):
    sock = socket.socket()
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def trial_ports():
    """6 Redis ports in 12000-21999 (their bus ports, +10000, in
    22000-31999) and 3 broker ports in 10000-11999, each free now. All lie
    below Linux's ephemeral range (32768 and up), so that no outgoing
    connection of another process takes one in the 10-20 s between this
    choice and the block's bind (a broker port chosen by the kernel was
    taken in between once: "Address already in use")."""
    rng = random.Random()
    chosen = set()

    def pick(lo, hi, bus):
        for _ in range(1000):
            p = rng.randrange(lo, hi)
            if p in chosen or not _free(p) or (bus and not _free(p + 10000)):
                continue
            chosen.add(p)
            return p
        raise AssertionError(f"no free port in {lo}-{hi}")

    redis = [pick(12000, 22000, True) for _ in range(6)]
    brokers = [pick(10000, 12000, False) for _ in range(3)]
    return redis, brokers


def trial_block():
    text = open(DOC).read()
    m = re.search(r"^## \d+\. A one-machine trial$", text, re.M)
    assert m, "no '## N. A one-machine trial' section in docs/SCALEOUT.md"
    block = re.search(r"```sh\n(.*?)```", text[m.end():], re.S)
    assert block, "no sh block in the trial section of docs/SCALEOUT.md"
    return block.group(1)


def substitute(block, values):
    """The block with each `NAME=...` line (at the start of a line)
    replaced; every name must occur exactly once."""
    for name, value in values.items():
        pattern = re.compile(rf"^{name}=.*$", re.M)
        assert len(pattern.findall(block)) == 1, f"{name}= must be one line of the block"
        block = pattern.sub(lambda _m, n=name, v=value: f"{n}={v}", block)
    return block


def kill_recorded(trial):
    """Kills (SIGKILL) every recorded PID that is still one of ours."""
    for pids in ("broker.pids", "redis.pids"):
        try:
            lines = open(os.path.join(trial, pids)).read().split()
        except OSError:
            continue
        for pid in map(int, lines):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue  # gone
            if b"redis-server" in cmd or b"causeway-broker" in cmd:
                os.kill(pid, signal.SIGKILL)


def test_the_trial_block_runs_verbatim(tmp_path):
    block = trial_block()
    # What the previous trial lacked: the wait for a usable cluster.
    assert "cluster_state:ok" in block and "master_link_status:up" in block
    redis_ports, broker_ports = trial_ports()
    trial = str(tmp_path / "trial")
    script = substitute(block, {
        "REDIS_PORTS": '"' + " ".join(map(str, redis_ports)) + '"',
        "BROKER_PORTS": '"' + " ".join(map(str, broker_ports)) + '"',
        "TRIAL": trial,
    })
    # Nothing else changed: the substituted lines are the only difference.
    changed = [(a, b) for a, b in zip(block.splitlines(), script.splitlines()) if a != b]
    assert len(changed) == 3 and len(block.splitlines()) == len(script.splitlines()), changed
    os.symlink(BUILD_DIR, tmp_path / "build")
    try:
        p = subprocess.run(["sh", "-e", "-c", script], cwd=tmp_path, capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
    finally:
        kill_recorded(trial)
    out, err = p.stdout.decode(), p.stderr.decode()
    logs = ""
    if p.returncode != 0 and os.path.isdir(trial):
        for f in sorted(os.listdir(trial)):
            if f.endswith(".log"):
                logs += f"--- {f}\n" + open(os.path.join(trial, f), errors="replace").read()[-3000:]
    assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{out}\nstderr:\n{err}\n{logs}"

    lines = out.splitlines()
    # bob's first fetch on broker 2 (nothing yet), alice's send on broker 1,
    # bob's fetch on broker 3 after broker 1 was killed, bob's answer, and
    # alice's fetch on broker 2: in this order, each once.
    expected = [
        r"no messages",
        r"bob: ACCEPTED \(seq 1\)",
        r"message id: alice-\S+-1",
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d #1\] alice -> you: hello bob, from broker 1",
        r"alice: ACCEPTED \(seq 1\)",
        r"message id: bob-\S+-1",
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d #1\] bob -> you: hi alice, from broker 3",
    ]
    assert len(lines) == len(expected), out
    for line, pattern in zip(lines, expected):
        assert re.fullmatch(pattern, line), (pattern, out)
    # Stopped and removed: the block cleans up after itself.
    assert not os.path.exists(trial), os.listdir(trial)
