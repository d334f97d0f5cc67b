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

import re
import subprocess

import pytest

from conftest import BROKER_BIN, assert_status, import_installed_causeway, run_cli
from test_durable import ack, dsend, fetch, history, login_first, next_deliveries, register



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

    br = broker("--data", str(data))
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
    assert re.fullmatch(r"\[[-0-9 :]+ #2\] .*\(a message was lost: damaged in the store\)",
                        p.lines[1]), p.describe()
    assert p.lines[2].endswith("alice -> you: kept two")
    p = run_cli(cli, "history", "--endpoint", br.endpoint, "--name", "bob", "--json")
    assert p.proc.returncode == 0, p.describe()
    assert [('"damaged":true' in line) for line in p.lines if '"event":"message"' in line] == [
        False, True, False], p.describe()
