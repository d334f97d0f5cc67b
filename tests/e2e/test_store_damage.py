"""The broker on damaged store files (issue 11 items 7, 8 and 9).

Each test fills a store through a real broker, stops it (SIGTERM: the WAL
is checkpointed into causeway.db, or SIGKILL: the commits stay in the WAL),
damages the files as a failing disk or a careless hand would, and starts a
broker on them again:
  - a changed letter in a stored text: the entry is pushed, fetched and
    listed as a damaged Deliver (seq only), the client acknowledges it and
    the queue goes on; the broker logs the user and seq and counts it in
    BrokerStats.damaged_entries; the CLI prints "a message was lost:
    damaged in the store" and the Python client sets Deliver.damaged;
  - see the later sections for the WAL (items 8 and 9).
"""

import os
import re
import subprocess
import time

import pytest

from conftest import BROKER_BIN, TIMEOUT_SCALE, assert_status, import_installed_causeway, run_cli
from test_durable import ack, dsend, fetch, history, login_first, next_deliveries, register
from test_metrics import metrics_url, scrape, value



def patch_all(path, old, new):
    """Replaces every occurrence of old by new (same length) in the file;
    returns how many there were."""
    assert len(old) == len(new)
    with open(path, "rb") as f:
        data = f.read()
    hits = data.count(old)
    with open(path, "wb") as f:
        f.write(data.replace(old, new))
    return hits


def fill(broker, hub, data, texts, *extra):
    """A broker on data; bob known and offline; alice sends texts to bob
    durably (seqs 1..n). Returns the broker, still running."""
    br = broker("--data", str(data), *extra)
    register(hub, br.endpoint, "bob")
    alice = hub.logged_in(br.endpoint, "alice")
    for i, t in enumerate(texts, 1):
        reply = dsend(alice, ["bob"], t, f"m-{i}")
        assert_status(alice.pb, reply, "ACCEPTED")
        assert reply.recipients[0].seq == i
    alice.logout()
    alice.close()
    return br


def stop(br):
    rc, killed = br.terminate()
    assert not killed and rc == 0


# ---------------------------------------------------------------------------
# Item 7: altered data is never served


def test_damaged_text_is_a_lost_message_not_data(broker, hub, pb, tmp_path):
    data = tmp_path / "data"
    br = fill(broker, hub, data, ["first message", "second message", "third message"])
    stop(br)
    assert patch_all(data / "causeway.db", b"second message", b"secund message") == 1

    br = broker("--data", str(data), "--metrics", "127.0.0.1:0")
    url = metrics_url(br)
    bob = login_first(hub, br.endpoint, "bob")
    got = next_deliveries(bob, 3)
    assert [(d.seq, d.text, d.damaged) for d in got] == [
        (1, "first message", False), (2, "", True), (3, "third message", False)]
    lost = got[1]
    assert getattr(lost, "from") == "" and lost.message_id == "" and list(lost.to) == []
    assert lost.durable is True and len(lost.clock) == 0 and lost.timestamp_us == 0
    # Fetch and History say the same; the listing counts it once.
    assert [(m.seq, m.damaged) for m in fetch(bob).messages] == [(1, False), (2, True),
                                                                 (3, False)]
    assert [m.damaged for m in history(bob, 10).messages] == [False, True, False]
    ack(bob, 3)
    assert len(fetch(bob).messages) == 0
    stats = bob.request("stats").stats
    assert stats.damaged_entries == 1
    assert re.search(r"MESSAGE LOST: seq 2 of bob's queue is damaged", br.log())
    assert br.log().count("MESSAGE LOST") == 1      # once per entry, however often read
    # ... and the metric, once the broker has published a snapshot after it
    deadline = time.monotonic() + 10.0 * TIMEOUT_SCALE
    while True:
        samples, _ = scrape(url)
        if value(samples, "causeway_store_damaged_entries_total") == 1.0:
            break
        assert time.monotonic() < deadline, "damaged_entries metric never reached 1"
        bob.request("stats")           # a round trip: lets the router publish again
    # The queue goes on.
    alice = hub.logged_in(br.endpoint, "alice")
    assert dsend(alice, ["bob"], "after", "m-4").recipients[0].seq == 4
    assert bob.recv_body("deliver").text == "after"


def test_cli_and_python_client_show_a_lost_message(broker, hub, cli, tmp_path):
    data = tmp_path / "data"
    br = fill(broker, hub, data, ["kept one", "lost one", "kept two"])
    stop(br)
    assert patch_all(data / "causeway.db", b"lost one", b"LOST one") == 1
    br = broker("--data", str(data))

    # The Python client: fetch without acknowledging, then the CLI.
    causeway = import_installed_causeway()
    c = causeway.Client(br.endpoint, "bob", pull=True, auto_ack=False)
    try:
        ms = c.fetch()
        assert [(m.seq, m.damaged, m.text) for m in ms] == [
            (1, False, "kept one"), (2, True, ""), (3, False, "kept two")]
        assert c.stats().damaged_entries == 1
    finally:
        c.close()

    p = run_cli(cli, "fetch", "--endpoint", br.endpoint, "--name", "bob")
    assert p.proc.returncode == 0, p.describe()
    assert len(p.lines) == 3, p.describe()
    assert p.lines[0].endswith("alice -> you: kept one")
    assert p.lines[1] == "[#2] (a message was lost: damaged in the store)", p.describe()
    assert p.lines[2].endswith("alice -> you: kept two")
    p = run_cli(cli, "history", "--endpoint", br.endpoint, "--name", "bob", "--json")
    assert p.proc.returncode == 0, p.describe()
    assert [('"damaged":true' in line) for line in p.lines if '"event":"message"' in line] == [
        False, True, False], p.describe()


# ---------------------------------------------------------------------------
# Items 8 and 9: a damaged WAL


def start_refused(data, *extra):
    """Runs a broker on data that must refuse to start; returns its stderr."""
    res = subprocess.run([BROKER_BIN, "--bind", "tcp://127.0.0.1:*", "--data", str(data),
                          *extra], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=20 * TIMEOUT_SCALE)
    assert res.returncode == 1, res
    assert "listening" not in res.stdout, res
    return res.stderr


def fill_in_wal(broker, hub, data, n):
    """n durable messages alice -> bob (seqs 1..n), then kill -9: the
    commits stay in causeway.db-wal (no checkpoint)."""
    br = fill(broker, hub, data, [f"message {i}" for i in range(1, n + 1)])
    br.kill()
    wal = data / "causeway.db-wal"
    assert wal.stat().st_size > 0
    return wal


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_wal_damage_refused_then_recovered_without_seq_reuse(broker, hub, tmp_path, damage):
    data = tmp_path / "data"
    wal = fill_in_wal(broker, hub, data, 60)
    size = wal.stat().st_size
    if damage == "truncate":
        os.truncate(wal, size // 2)
    else:
        with open(wal, "r+b") as f:
            f.seek(size // 2)
            b = f.read(1)
            f.seek(size // 2)
            f.write(bytes([b[0] ^ 0x40]))
    before = wal.read_bytes()

    err = start_refused(data)
    m = re.search(r"bob lost seqs (\d+)-(\d+)", err)
    assert m, err
    assert int(m.group(2)) == 60
    assert "committed data is missing" in err and "--recover-store" in err, err
    assert wal.read_bytes() == before          # refusing changed nothing

    br = broker("--data", str(data), "--recover-store")
    assert "RECOVERED" in br.log()
    bob = login_first(hub, br.endpoint, "bob")
    survived = int(m.group(1)) - 1
    got = next_deliveries(bob, survived) if survived else []
    assert [d.text for d in got] == [f"message {i}" for i in range(1, survived + 1)]
    # A new message gets a seq no ACCEPTED message ever had: a client that
    # remembers what it showed does not drop it as a duplicate. It is beyond
    # a gap in bob's seqs: pushed once the pushes before it are acknowledged
    # (the push window counts seqs).
    alice = hub.logged_in(br.endpoint, "alice")
    reply = dsend(alice, ["bob"], "after the loss", "new-1")
    assert_status(alice.pb, reply, "ACCEPTED")
    assert reply.recipients[0].seq > 60
    if survived:
        ack(bob, survived)
    d = bob.recv_body("deliver", timeout=10.0 * TIMEOUT_SCALE)
    assert (d.text, d.seq) == ("after the loss", reply.recipients[0].seq)
    assert d.redelivered is False
    stop(br)
    # The next start is an ordinary one.
    br = broker("--data", str(data))
    assert "RECOVERED" not in br.log()


def test_damaged_wal_header_never_creates_a_new_store(broker, hub, tmp_path):
    data = tmp_path / "data"
    wal = fill_in_wal(broker, hub, data, 30)
    with open(wal, "r+b") as f:                # the WAL header's magic number
        f.seek(3)
        b = f.read(1)
        f.seek(3)
        f.write(bytes([b[0] ^ 0x01]))
    files = {p.name: p.read_bytes() for p in data.iterdir() if p.name != "LOCK"}
    for extra in ([], ["--recover-store"]):
        err = start_refused(data, *extra)
        assert "refusing to create a new store" in err, err
        assert "causeway.db-wal" in err and "OPERATIONS.md" in err, err
        assert "created a new store" not in err
        assert {p.name: p.read_bytes() for p in data.iterdir() if p.name != "LOCK"} == files


def test_recover_store_is_not_a_config_file_key(tmp_path):
    conf = tmp_path / "broker.conf"
    conf.write_text("recover-store = true\n")
    res = subprocess.run([BROKER_BIN, "--config", str(conf)], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 2, res
    assert "command-line flag only" in res.stderr, res.stderr
