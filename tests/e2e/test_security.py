"""Transport security end to end (docs/OPERATIONS.md, "Security";
docs/PROTOCOL.md, "Transport security").

A CURVE broker (``--curve-secret``, ``--users``) with users alice and bob
registered (keys made by ``causeway keygen``), and carol's key not:

  - alice and bob, each with their own key, chat live and durably;
  - a key whose halves do not match, and a wrong server key: refused with a
    clear message, within a bound;
  - carol's unregistered key: refused at the handshake (the client says so
    at once, the broker logs the key);
  - bob's valid key logging in as alice: UNAUTHORIZED, and nothing of
    alice's durable queue reaches him (fetch, history, listen all refused;
    the raw connection stays logged out);
  - a plain client against the CURVE broker: a clear error, no hang;
  - the bind policy: plain mode off loopback is refused (exit 2) unless
    --insecure, for the broker and for causeway-clockd;
  - key rotation with SIGHUP: a new key works at once, a removed key's
    session ends and its connection can no longer log in.

Every wait is bounded; nothing sleeps to synchronise.
"""

import os
import queue
import shutil
import signal
import stat
import subprocess
import threading
import time

import pytest
import zmq

from conftest import (BROKER_BIN, BROKER_WRAPPER, CLI_BIN, CLOCKD_BIN, START_TIMEOUT,
                      TIMEOUT_SCALE, ClockdDaemon, assert_status, import_installed_causeway,
                      run_cli, terminate)

QUICK = 2.5 * TIMEOUT_SCALE   # a definite handshake refusal is reported well within this


@pytest.fixture(scope="module")
def cw(tmp_path_factory):
    causeway = import_installed_causeway()
    return causeway


class Keys:
    """Key pairs made with `causeway keygen` in a temporary directory."""

    def __init__(self, base, cli):
        self.base = base
        self.dir = base / "keys"
        self.users = base / "users"
        self.users.mkdir()
        p = run_cli(cli, "keygen", "--server", "--dir", self.dir, "--json")
        assert p.proc.returncode == 0, p.describe()
        self.server_info = p.read_json(lambda o: o.get("event") == "keygen")
        for name in ("alice", "bob", "carol"):
            p = run_cli(cli, "keygen", name, "--dir", self.dir)
            assert p.proc.returncode == 0, p.describe()
        for name in ("alice", "bob"):  # registered; carol is not
            shutil.copy(self.dir / f"{name}.key", self.users / f"{name}.key")

    @property
    def server_secret(self):
        return self.dir / "broker.key_secret"

    @property
    def server_public(self):
        return self.dir / "broker.key"

    def cert(self, name):
        return self.dir / f"{name}.key_secret"

    def z85(self, path):
        """{key: value} of the quoted fields of a zcert file."""
        out = {}
        for line in open(path, encoding="utf-8"):
            if "=" in line and not line.lstrip().startswith("#"):
                k, v = (x.strip() for x in line.split("=", 1))
                out[k] = v.strip('"')
        return out

    def curve(self, name, server=None):
        """(server public, client public, client secret) for a raw socket."""
        mine = self.z85(self.cert(name))
        srv = self.z85(server or self.server_public)
        return (srv["public-key"].encode(), mine["public-key"].encode(),
                mine["secret-key"].encode())


@pytest.fixture
def keys(tmp_path, cli):
    return Keys(tmp_path, cli)


@pytest.fixture
def curve_broker(broker, keys, tmp_path):
    def start(*extra):
        return broker("--curve-secret", keys.server_secret, "--users", keys.users, *extra)
    return start


def ccli(cli, b, keys, who, *args, timeout=15.0):
    """The CLI against CURVE broker b with `who`'s certificate."""
    return run_cli(cli, "-e", b.endpoint, "--server-key", keys.server_public,
                   "--cert", keys.cert(who), *args, timeout=timeout)


def wait_log(b, text, timeout=5.0):
    """Waits (bounded) until the broker's log contains text."""
    deadline = time.monotonic() + timeout * TIMEOUT_SCALE
    while text not in b.log():
        assert time.monotonic() < deadline, f"broker log lacks {text!r}\n{b.log()[-4000:]}"
        time.sleep(0.02)


def no_reply(sock, seconds):
    """True if nothing arrives on sock within seconds."""
    return not sock.poll(int(seconds * 1000))


# ---------------------------------------------------------------------------
# Keys

def test_keygen_writes_a_private_secret_and_a_named_public_cert(keys, cli, cw):
    pub, sec = keys.dir / "alice.key", keys.dir / "alice.key_secret"
    assert stat.S_IMODE(os.stat(sec).st_mode) == 0o600
    assert 'user = "alice"' in pub.read_text()
    assert "secret-key" not in pub.read_text()
    pk, sk, user = cw.load_cert(str(pub))           # reads alice.key_secret beside it
    assert user == "alice" and sk and zmq.curve_public(sk) == pk
    assert "user" not in keys.z85(keys.server_public)
    assert keys.server_info["user"] is None
    assert keys.server_info["public_key"] == keys.z85(keys.server_public)["public-key"]
    again = run_cli(cli, "keygen", "alice", "--dir", keys.dir)
    assert again.proc.returncode == 4 and "not overwritten" in again.stderr()
    bad = run_cli(cli, "keygen", "all", "--dir", keys.dir)
    assert bad.proc.returncode == 2 and "not a valid user name" in bad.stderr()


# ---------------------------------------------------------------------------
# The good path

def test_registered_users_chat_live_and_durable(curve_broker, keys, cli, tmp_path):
    b = curve_broker("--data", tmp_path / "data")
    assert "CURVE on" in b.log()
    # bob becomes known, then alice writes to him while he is away.
    p = ccli(cli, b, keys, "bob", "fetch", "--name", "bob", "--json")
    assert p.proc.returncode == 0, p.describe()
    p = ccli(cli, b, keys, "alice", "send", "--name", "alice", "--to", "bob", "--durable",
             "--json", "stored for bob")
    assert p.proc.returncode == 0, p.describe()
    p = ccli(cli, b, keys, "bob", "fetch", "--name", "bob", "--json")
    assert p.proc.returncode == 0, p.describe()
    assert "stored for bob" in "\n".join(p.lines), p.describe()
    # Live: bob listens, alice sends.
    listener = cli("-e", b.endpoint, "--server-key", keys.server_public, "--cert",
                   keys.cert("bob"), "listen", "--name", "bob", "--json", "--count", "1")
    listener.read_json(lambda o: o.get("event") == "login", what="bob's login line")
    p = ccli(cli, b, keys, "alice", "send", "--name", "alice", "--to", "bob", "--json",
             "live hello")
    assert p.proc.returncode == 0, p.describe()
    msg = listener.read_json(lambda o: o.get("text") == "live hello", what="the live message")
    assert msg["from"] == "alice"
    assert listener.wait(10) == 0


def test_python_client_speaks_curve(curve_broker, keys, cw):
    b = curve_broker()
    with cw.Client(b.endpoint, "alice", server_key=str(keys.server_public),
                   cert=str(keys.cert("alice"))) as alice:
        with cw.Client(b.endpoint, "bob", server_key=str(keys.server_public),
                       cert=str(keys.cert("bob"))) as bob:
            alice.send(["bob"], "hi bob")
            ev = bob.next_event(timeout=10 * TIMEOUT_SCALE)
            while ev is not None and getattr(ev, "text", None) != "hi bob":
                ev = bob.next_event(timeout=10 * TIMEOUT_SCALE)
            assert ev is not None and ev.sender == "alice"
        with pytest.raises(cw.CausewayError) as e:
            cw.Client(b.endpoint, "bob", server_key=str(keys.server_public),
                      cert=str(keys.cert("alice")))
        assert e.value.status == "UNAUTHORIZED"


# ---------------------------------------------------------------------------
# Refusals

def test_name_spoofing_is_unauthorized_and_reveals_nothing(curve_broker, keys, cli, hub,
                                                          tmp_path):
    b = curve_broker("--data", tmp_path / "data")
    secret = "for alice's eyes only"
    p = ccli(cli, b, keys, "alice", "fetch", "--name", "alice")   # alice becomes known
    assert p.proc.returncode == 0, p.describe()
    p = ccli(cli, b, keys, "bob", "send", "--name", "bob", "--to", "alice", "--durable", secret)
    assert p.proc.returncode == 0, p.describe()

    # bob's valid key, alice's name: every way in is refused.
    for cmd in (["fetch"], ["history"], ["listen", "--count", "1"], ["send", "--to", "bob", "x"]):
        p = ccli(cli, b, keys, "bob", cmd[0], "--name", "alice", *cmd[1:])
        out = "\n".join(p.lines) + p.stderr()
        assert p.proc.returncode == 4, p.describe()
        assert "UNAUTHORIZED" in out and "may only log in as 'bob'" in out, p.describe()
        assert secret not in out
    wait_log(b, "login as 'alice' refused")

    # The same at the protocol level: the connection stays logged out.
    pb = hub.pb
    spoof = hub.client(b.endpoint, curve=keys.curve("bob"))
    r = spoof.try_login("alice")
    assert_status(pb, r, "UNAUTHORIZED")
    assert "alice" not in r.detail and len(r.users) == 0 and not r.HasField("login")
    assert_status(pb, spoof.request("fetch", pb.Fetch(max=10)), "NOT_LOGGED_IN")
    assert_status(pb, spoof.request("history", pb.History(last=10)), "NOT_LOGGED_IN")
    assert_status(pb, spoof.request("ack", pb.Ack(seq=1)), "NOT_LOGGED_IN")
    assert_status(pb, spoof.send_text(to=["bob"], text="as alice?"), "NOT_LOGGED_IN")
    spoof.assert_none(lambda e: e.WhichOneof("body") == "deliver", "a delivery to the spoofer")
    # Its own name is fine on the same connection.
    spoof.login("bob")

    # alice's message is still there, for alice.
    p = ccli(cli, b, keys, "alice", "fetch", "--name", "alice")
    assert p.proc.returncode == 0 and secret in "\n".join(p.lines), p.describe()


def test_a_routing_id_does_not_carry_a_session_to_another_key(curve_broker, keys, hub, pb,
                                                              tmp_path):
    """A client chooses its routing id. alice's connection goes away while
    her session lives on (until it expires); bob connects with the same
    routing id and his own valid key: nothing he sends counts as alice's,
    and nothing of hers reaches him."""
    b = curve_broker("--data", tmp_path / "data", "--heartbeat-ms", "2000")
    rid = b"\x01alice-session"
    alice = hub.client(b.endpoint, curve=keys.curve("alice"), routing_id=rid)
    alice.login("alice")
    carol_less = hub.client(b.endpoint, curve=keys.curve("bob"))   # bob, to send to alice
    carol_less.login("bob")
    alice.close()   # the connection is gone; the session waits for expiry
    # Until the broker's libzmq has seen alice's connection close, a second
    # connection with her routing id is ignored (duplicate id): try again
    # until one is answered.
    deadline = time.monotonic() + 10 * TIMEOUT_SCALE
    while True:
        spoof = hub.client(b.endpoint, curve=keys.curve("bob"), routing_id=rid)
        spoof.send_env(spoof.envelope("stats"))
        if not no_reply(spoof.sock, 0.5):
            break
        spoof.close()
        assert time.monotonic() < deadline, "no connection could take the routing id"
    env = spoof.recv_until(lambda e: e.WhichOneof("body") == "reply", what="a refusal")
    assert_status(pb, env.reply, "UNAUTHORIZED")
    for body, msg in (("who", None), ("fetch", pb.Fetch(max=10)), ("history", pb.History(last=5)),
                      ("send", pb.Send(to=["bob"], text="as alice?"))):
        spoof.send_env(spoof.envelope(body, msg))
        env = spoof.recv_until(lambda e: e.WhichOneof("body") == "reply", what="a refusal")
        assert_status(pb, env.reply, "UNAUTHORIZED")
        assert "another key's session" in env.reply.detail
    # A message to alice meanwhile is not delivered to the spoofer.
    carol_less.send_text(to=["alice"], text="for alice", durable=True)
    spoof.send_env(spoof.envelope("who"))
    spoof.recv_until(lambda e: e.WhichOneof("body") == "reply", what="a refusal")
    spoof.assert_none(lambda e: e.WhichOneof("body") == "deliver", "a delivery to the spoofer")
    wait_log(b, "its routing id belongs to alice's session")


def test_unregistered_key_is_refused_at_the_handshake(curve_broker, keys, cli, hub):
    b = curve_broker()
    t0 = time.monotonic()
    p = ccli(cli, b, keys, "carol", "who")
    assert time.monotonic() - t0 < QUICK + 1.0, p.describe()
    assert p.proc.returncode == 3, p.describe()
    assert "HANDSHAKE_FAILED" in p.stderr() and "refused this client's key" in p.stderr()
    carol_key = keys.z85(keys.cert("carol"))["public-key"]
    wait_log(b, f"handshake refused (unknown key): key {carol_key}")
    raw = hub.client(b.endpoint, curve=keys.curve("carol"))
    raw.send_env(raw.envelope("who"))
    assert no_reply(raw.sock, 1.0)


def test_wrong_keys_are_refused_with_a_clear_message(curve_broker, keys, cli, tmp_path, hub):
    b = curve_broker()
    # A certificate whose secret key is not the public key's (mixed-up files).
    mixed = tmp_path / "mixed.key_secret"
    a, c = keys.z85(keys.cert("alice")), keys.z85(keys.cert("carol"))
    mixed.write_text(keys.cert("alice").read_text().replace(a["secret-key"], c["secret-key"]))
    p = run_cli(cli, "-e", b.endpoint, "--server-key", keys.server_public, "--cert", mixed, "who")
    assert p.proc.returncode == 2, p.describe()
    assert "does not belong to the public key" in p.stderr()
    # The same keys forced onto a raw socket: the broker cannot verify them.
    raw = hub.client(b.endpoint, curve=(keys.z85(keys.server_public)["public-key"].encode(),
                                        a["public-key"].encode(), c["secret-key"].encode()))
    raw.send_env(raw.envelope("who"))
    assert no_reply(raw.sock, 1.0)
    # The wrong server key (bob's public key): no handshake, a clear error, bounded.
    t0 = time.monotonic()
    p = run_cli(cli, "-e", b.endpoint, "--server-key", keys.dir / "bob.key", "--cert",
                keys.cert("alice"), "-t", "2000", "who")
    assert time.monotonic() - t0 < 6.0 * TIMEOUT_SCALE
    assert p.proc.returncode == 3, p.describe()
    assert "HANDSHAKE_FAILED" in p.stderr() and "wrong server key" in p.stderr(), p.describe()
    wait_log(b, "handshake failed on ")
    # A server key file that is no certificate.
    junk = tmp_path / "junk.key"
    junk.write_text("hello\n")
    p = run_cli(cli, "-e", b.endpoint, "--server-key", junk, "--cert", keys.cert("alice"), "who")
    assert p.proc.returncode == 2 and "not a certificate" in p.stderr(), p.describe()
    # --cert without --server-key, and the reverse: usage errors.
    p = run_cli(cli, "-e", b.endpoint, "--cert", keys.cert("alice"), "who")
    assert p.proc.returncode == 2 and "--server-key" in p.stderr(), p.describe()
    p = run_cli(cli, "-e", b.endpoint, "--server-key", keys.server_public, "who")
    assert p.proc.returncode == 2 and "--cert" in p.stderr(), p.describe()


def test_plain_client_against_curve_broker_fails_fast(curve_broker, keys, cli, hub, cw):
    b = curve_broker()
    t0 = time.monotonic()
    p = run_cli(cli, "-e", b.endpoint, "who")
    assert time.monotonic() - t0 < QUICK + 1.0, p.describe()
    assert p.proc.returncode == 3, p.describe()
    # "the broker requires CURVE; ...", or when the broker closed before the
    # client could read its mechanism, the same hint as a question.
    assert "HANDSHAKE_FAILED" in p.stderr() and "CURVE" in p.stderr()
    assert "--server-key FILE --cert FILE" in p.stderr()
    wait_log(b, "handshake failed on ")   # the cause, if libzmq could tell
    # The same through the environment variables: works.
    env_p = subprocess.run([CLI_BIN, "-e", b.endpoint, "who", "--json"],
                           env={**os.environ, "CAUSEWAY_SERVER_KEY": str(keys.server_public),
                                "CAUSEWAY_CERT": str(keys.cert("alice"))},
                           capture_output=True, timeout=15 * TIMEOUT_SCALE)
    assert env_p.returncode == 0, env_p.stderr
    # A raw plain socket gets nothing at all.
    raw = hub.client(b.endpoint)
    raw.send_env(raw.envelope("who"))
    assert no_reply(raw.sock, 1.0)
    # The Python client: a bounded timeout (or, on a loaded machine, the
    # client declaring the silent connection lost first).
    t0 = time.monotonic()
    with pytest.raises(cw.CausewayError) as e:
        cw.Client(b.endpoint, "alice", timeout=1.0)
    assert e.value.status in ("TIMEOUT", "DISCONNECTED"), e.value
    assert time.monotonic() - t0 < 1.0 + QUICK


def test_curve_client_against_plain_broker(broker, keys, cli):
    b = broker()
    p = run_cli(cli, "-e", b.endpoint, "--server-key", keys.server_public, "--cert",
                keys.cert("alice"), "who")
    assert p.proc.returncode == 3, p.describe()
    assert "does not use CURVE" in p.stderr(), p.describe()


# ---------------------------------------------------------------------------
# Key rotation

def test_sighup_rotates_keys(curve_broker, keys, cli, hub, tmp_path):
    b = curve_broker("--data", tmp_path / "data")
    pb = hub.pb
    old = hub.client(b.endpoint, curve=keys.curve("alice"))
    old.login("alice")
    # A new key for alice, registered beside the old one.
    new_dir = tmp_path / "new"
    p = run_cli(cli, "keygen", "alice", "--dir", new_dir)
    assert p.proc.returncode == 0, p.describe()
    shutil.copy(new_dir / "alice.key", keys.users / "alice-2.key")
    b.proc.send_signal(signal.SIGHUP)
    wait_log(b, "users reloaded: 3 keys; 0 sessions ended")
    assert_status(pb, old.request("who"), "OK")
    # The old key goes: its session ends, its connection cannot log in again,
    # and a new connection with it is refused at the handshake.
    os.remove(keys.users / "alice.key")
    b.proc.send_signal(signal.SIGHUP)
    wait_log(b, "users reloaded: 2 keys; 1 sessions ended")
    r = old.try_login("alice")
    assert_status(pb, r, "UNAUTHORIZED")
    assert "not registered" in r.detail
    p = ccli(cli, b, keys, "alice", "who")
    assert p.proc.returncode == 3 and "refused this client's key" in p.stderr(), p.describe()
    p = run_cli(cli, "-e", b.endpoint, "--server-key", keys.server_public, "--cert",
                new_dir / "alice.key_secret", "history", "--name", "alice")
    assert p.proc.returncode == 0, p.describe()
    # A broken directory keeps the keys in force.
    (keys.users / "broken.key").write_text("not a certificate\n")
    b.proc.send_signal(signal.SIGHUP)
    wait_log(b, "users not reloaded")
    p = run_cli(cli, "-e", b.endpoint, "--server-key", keys.server_public, "--cert",
                new_dir / "alice.key_secret", "who")
    assert p.proc.returncode == 0, p.describe()


# ---------------------------------------------------------------------------
# Bind policy

def start_and_read(args, timeout=START_TIMEOUT):
    """Starts a program; returns (proc, first stdout line or None if it exited)."""
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline().decode()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        proc.kill()
        raise AssertionError(f"{args[0]} printed nothing within {timeout}s")
    return proc, line.strip() or None


def stop(proc):
    if terminate(proc):
        raise AssertionError("ignored SIGTERM")
    return proc.returncode


def refused(args):
    r = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=START_TIMEOUT)
    return r.returncode, r.stderr.decode()


# Refused before anything is bound, so these never listen off loopback.
NON_LOCAL = ["tcp://0.0.0.0:*", "tcp://*:*", "tcp://[::]:*", "tcp://192.0.2.1:*",
             "tcp://lo:*", "tcp://example.com:*"]


@pytest.mark.parametrize("endpoint", NON_LOCAL)
def test_broker_refuses_plain_mode_off_loopback(endpoint):
    rc, err = refused([BROKER_BIN, "--bind", endpoint])
    assert rc == 2, err
    assert f"refusing to listen on {endpoint} without CURVE" in err and "--insecure" in err


def test_broker_insecure_and_curve_pairing(keys, tmp_path, cli):
    # --insecure lets plain mode bind a non-loopback endpoint. `tcp://lo:*`
    # counts as non-loopback (interface names are not resolved) but only
    # listens on 127.0.0.1, so the test stays on loopback.
    proc, line = start_and_read([*BROKER_WRAPPER, BROKER_BIN, "--bind", "tcp://lo:*",
                                 "--insecure"])
    try:
        assert line and line.startswith("listening tcp://127.0.0.1:"), line
        p = run_cli(cli, "-e", line.split()[1], "who")
        assert p.proc.returncode == 0, p.describe()
    finally:
        assert stop(proc) == 0
    # The same from a config file.
    conf = tmp_path / "broker.conf"
    conf.write_text("bind = tcp://lo:*\ninsecure = yes\n")
    proc, line = start_and_read([*BROKER_WRAPPER, BROKER_BIN, "--config", conf])
    try:
        assert line and line.startswith("listening "), line
    finally:
        assert stop(proc) == 0
    conf.write_text("bind = tcp://lo:*\ninsecure = maybe\n")
    rc, err = refused([BROKER_BIN, "--config", conf])
    assert rc == 2 and "insecure: 'maybe'" in err
    # CURVE needs both halves.
    rc, err = refused([BROKER_BIN, "--curve-secret", keys.server_secret])
    assert rc == 2 and "both --curve-secret FILE and --users DIR" in err
    # A public certificate alone (no NAME.key_secret beside it) is no server
    # secret; a users directory with a certificate naming no user fails.
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(keys.server_public, lone / "broker.key")
    rc, err = refused([BROKER_BIN, "--bind", "tcp://127.0.0.1:*", "--curve-secret",
                       lone / "broker.key", "--users", keys.users])
    assert rc == 1 and "no secret key" in err, err
    bad = tmp_path / "badusers"
    bad.mkdir()
    shutil.copy(keys.server_public, bad / "server.key")   # no user metadata
    rc, err = refused([BROKER_BIN, "--bind", "tcp://127.0.0.1:*", "--curve-secret",
                       keys.server_secret, "--users", bad])
    assert rc == 1 and "no `user`" in err, err


@pytest.mark.parametrize("endpoint", ["tcp://0.0.0.0:*", "tcp://*:*"])
def test_clockd_refuses_plain_mode_off_loopback(endpoint):
    rc, err = refused([CLOCKD_BIN, "serve", "--db", ":memory:", "--bind", endpoint])
    assert rc == 2, err
    assert f"refusing to listen on {endpoint} without CURVE" in err and "--insecure" in err


def test_clockd_insecure_and_curve(keys, tmp_path, curve_broker, cli, hub):
    proc, line = start_and_read([CLOCKD_BIN, "serve", "--db", ":memory:", "--bind",
                                 "tcp://lo:*", "--insecure"])
    try:
        assert line and line.startswith("listening tcp://127.0.0.1:"), line
    finally:
        assert stop(proc) == 0
    rc, err = refused([CLOCKD_BIN, "serve", "--db", ":memory:", "--users", keys.users])
    assert rc == 2 and "both --curve-secret" in err
    # A CURVE clockd: events reported with the keys are stored; without, not.
    d = ClockdDaemon(":memory:", tmp_path / "clockd.log",
                     extra=["--curve-secret", keys.server_secret, "--users", keys.users])
    try:
        assert "CURVE on" in d.log()
        b = curve_broker()
        p = ccli(cli, b, keys, "alice", "send", "--name", "alice", "--all", "--clockd",
                 d.endpoint, "--clockd-key", keys.server_public, "reported")
        assert p.proc.returncode == 0 and "not confirmed" not in p.stderr(), p.describe()
        p = ccli(cli, b, keys, "alice", "send", "--name", "alice", "--all", "--clockd",
                 d.endpoint, "-t", "1500", "unreported")
        assert "not confirmed" in p.stderr(), p.describe()
        # An unregistered key (carol's) gets no answer and is logged.
        raw = hub.client(d.endpoint, curve=keys.curve("carol"))
        raw.send_bytes(b"\x08\x01")
        assert no_reply(raw.sock, 0.5)
        deadline = time.monotonic() + 5.0 * TIMEOUT_SCALE
        while "handshake refused (unknown key)" not in d.log():
            assert time.monotonic() < deadline, d.log()
            time.sleep(0.02)
        # SIGHUP re-reads the users directory (it used to kill clockd).
        d.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5.0 * TIMEOUT_SCALE
        while "users reloaded" not in d.log():
            assert time.monotonic() < deadline and d.proc.poll() is None, d.log()
            time.sleep(0.02)
    finally:
        assert d.stop() == 0
