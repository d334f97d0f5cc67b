"""The broker's signals (docs/OPERATIONS.md, "Signals"; issue 11 item 16),
sent for real: closing the terminal a broker runs in stops it (SIGHUP from
tmux's hangup), SIGHUP stops a plain broker, SIGUSR1 reloads the users of
a CURVE broker in a terminal and SIGHUP reloads those of one run as a
service (stdin not a terminal)."""

import os
import re
import signal
import subprocess

import pytest

from conftest import BROKER_BIN, CLI_BIN, START_TIMEOUT, STOP_TIMEOUT, Broker
from term import Tmux, pid_alive, wait_until


def read_log(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def start_in_terminal(tmp_path, *extra):
    log = tmp_path / "broker.log"
    t = Tmux(["sh", "-c", f'exec "$0" "$@" 2>{log}', BROKER_BIN, "--bind", "tcp://127.0.0.1:*",
              *map(str, extra)])
    try:
        screen = t.wait_for(lambda s: "listening tcp://" in s, START_TIMEOUT, "listening line")
    except BaseException:
        t.close()   # kill-server: the pane's broker gets its hangup
        raise
    endpoint = re.search(r"listening (tcp://\S+)", screen).group(1)
    return t, t.pane_pid(), endpoint, log


def test_closing_the_terminal_stops_a_foreground_broker(tmp_path):
    t, pid, endpoint, log = start_in_terminal(tmp_path)
    try:
        assert pid_alive(pid)
        t.kill_session()            # the terminal goes away: SIGHUP
        wait_until(lambda: not pid_alive(pid), STOP_TIMEOUT, "broker exit after the hangup")
        assert "shutting down" in read_log(log), read_log(log)
        # The port is free again: a new broker binds the same endpoint.
        b = Broker([BROKER_BIN, "--bind", endpoint], str(tmp_path / "again.log"))
        b.wait_listening()
        assert b.endpoint == endpoint
        rc, killed = b.terminate()
        assert rc == 0 and not killed
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        t.close()


def test_sighup_stops_a_plain_broker_without_a_terminal(tmp_path):
    b = Broker([BROKER_BIN, "--bind", "tcp://127.0.0.1:*"], str(tmp_path / "b.log"))
    b.wait_listening()
    b.proc.send_signal(signal.SIGHUP)
    assert b.proc.wait(timeout=STOP_TIMEOUT) == 0
    assert "shutting down" in b.log()


def keygen(tmp_path):
    d = tmp_path / "keys"
    users = d / "users"
    users.mkdir(parents=True)
    for args in (["--server"], ["alice"]):
        subprocess.run([CLI_BIN, "keygen", *args, "--dir", str(d)], check=True, timeout=30,
                       capture_output=True)
    return d, users


def test_curve_broker_reload_signals(tmp_path):
    keys, users = keygen(tmp_path)
    curve = ("--curve-secret", keys / "broker.key_secret", "--users", users)
    # As a service (stdin not a terminal): SIGHUP reloads, the broker runs on.
    b = Broker([BROKER_BIN, "--bind", "tcp://127.0.0.1:*", *map(str, curve)],
               str(tmp_path / "service.log"))
    b.wait_listening()
    assert "SIGHUP too (stdin is not a terminal)" in b.log()
    (users / "alice.key").write_bytes((keys / "alice.key").read_bytes())
    b.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "users reloaded: 1 keys" in b.log(), STOP_TIMEOUT, "reload")
    assert b.running()
    rc, killed = b.terminate()
    assert rc == 0 and not killed

    # In a terminal: SIGUSR1 reloads, closing the terminal stops it.
    t, pid, endpoint, log = start_in_terminal(tmp_path, *curve)
    try:
        assert "SIGHUP stops the broker (stdin is a terminal)" in read_log(log)
        os.remove(users / "alice.key")
        os.kill(pid, signal.SIGUSR1)
        wait_until(lambda: "users reloaded: 0 keys" in read_log(log), STOP_TIMEOUT, "reload")
        assert pid_alive(pid)
        t.kill_session()
        wait_until(lambda: not pid_alive(pid), STOP_TIMEOUT, "broker exit after the hangup")
        assert "shutting down" in read_log(log)
    finally:
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        t.close()
