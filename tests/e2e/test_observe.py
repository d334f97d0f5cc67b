"""The monitoring requests on the wire (PROTOCOL.md §12.1-12.2).

Stats carries the monitoring figures to anyone; Sessions, Queues and
Recent only to sessions logged in under a name of --operators (everyone
else: NOT_LOGGED_IN without a session, UNAUTHORIZED with one), and Recent
carries texts only from a broker started with --monitor-text. Figures are
checked against exactly what the test did.
"""

from conftest import assert_status, now_us


def traffic(stats, durable, kind):
    for t in stats.traffic:
        if t.durable == durable and t.kind == kind:
            return t
    raise AssertionError(f"no traffic entry for durable={durable} kind={kind}")


def counts(entries, pb):
    return {pb.Status.Name(e.status)[len("STATUS_"):]: e.count for e in entries}


def test_stats_figures(broker, hub, pb, tmp_path):
    b = broker("--data", tmp_path / "d")
    a = hub.logged_in(b.endpoint, "alice")
    hub.logged_in(b.endpoint, "bob")
    for _ in range(3):
        assert_status(pb, a.send_text(to=["bob"], text="hello"), "OK")
    assert_status(pb, a.send_text(to=["bob", "zed"], text="hi"), "OK")
    assert_status(pb, a.send_text(to=["bob"], text="kept", durable=True), "ACCEPTED")
    assert_status(pb, a.send_text(to=[], text="x"), "BAD_REQUEST")
    st = hub.client(b.endpoint).request("stats").stats  # no session needed
    K = pb.TrafficCount
    assert traffic(st, False, K.KIND_UNICAST).received == 3
    assert traffic(st, False, K.KIND_UNICAST).received_bytes == 15
    assert traffic(st, False, K.KIND_UNICAST).delivered == 3
    assert traffic(st, False, K.KIND_MULTICAST).received == 1
    assert traffic(st, True, K.KIND_UNICAST).received == 1
    assert traffic(st, True, K.KIND_UNICAST).received_bytes == 4
    assert counts(st.refusals, pb) == {"BAD_REQUEST": 1}
    fates = counts(st.recipient_fates, pb)
    assert fates["DELIVERED"] == 4 and fates["UNKNOWN_USER"] == 1 and fates["ACCEPTED"] == 1
    assert st.logins == 2 and st.sessions == 2 and st.max_sessions == 10000
    assert st.version == "0.1.0"
    assert abs(st.started_us - now_us()) < 60_000_000
    assert st.memory_rss_bytes > 1 << 20
    h = st.commit_latency
    assert h.count >= 1 and len(h.counts) == len(h.bounds_us) + 1 and h.counts[-1] == h.count
    assert list(h.counts) == sorted(h.counts)
    assert st.store_transactions >= 1
    assert len(st.deepest_queues) == 0  # operators only


def test_operator_requests_need_an_operator(broker, hub, pb):
    b = broker("--operators", "ops,root2")
    anon = hub.client(b.endpoint)
    for body in ("sessions", "queues", "recent"):
        assert_status(pb, anon.request(body), "NOT_LOGGED_IN")
    eve = hub.logged_in(b.endpoint, "eve")
    for body in ("sessions", "queues", "recent"):
        r = eve.request(body)
        assert_status(pb, r, "UNAUTHORIZED")
        assert "not an operator" in r.detail
        assert len(r.sessions) == 0 and len(r.forwarded) == 0
    ops = hub.logged_in(b.endpoint, "ops")
    r = ops.request("sessions")
    assert_status(pb, r, "OK")
    assert sorted(s.name for s in r.sessions) == ["eve", "ops"]
    assert_status(pb, ops.request("queues"), "NOT_DURABLE")  # live-only broker
    # Texts need --monitor-text.
    r = ops.request("recent", pb.Recent(text=True))
    assert_status(pb, r, "UNAUTHORIZED")
    assert "--monitor-text" in r.detail


def test_sessions_queues_recent(broker, hub, pb, tmp_path):
    b = broker("--data", tmp_path / "d", "--operators", "ops", "--monitor-text",
               "--page-users", "2")
    t0 = now_us()
    ops = hub.logged_in(b.endpoint, "ops", agent="causeway-top/1")
    alice = hub.logged_in(b.endpoint, "alice", pull=True)
    bob = hub.logged_in(b.endpoint, "bob")
    hub.logged_in(b.endpoint, "carol")
    t1 = now_us()
    # Two pages of two sessions each (sorted by name).
    r = ops.request("sessions")
    assert_status(pb, r, "OK")
    assert [s.name for s in r.sessions] == ["alice", "bob"] and r.truncated
    r2 = ops.request("sessions", pb.Sessions(after="bob"))
    assert [s.name for s in r2.sessions] == ["carol", "ops"] and not r2.truncated
    by = {s.name: s for s in list(r.sessions) + list(r2.sessions)}
    for s in by.values():
        assert s.peer == "127.0.0.1", s.peer  # the connection's IP (libzmq's Peer-Address)
        assert t0 <= s.since_us <= t1
    assert by["alice"].pull and not by["bob"].pull
    assert by["ops"].agent == "causeway-top/1"

    # The ring records while an operator watches: from this Recent on.
    assert len(ops.request("recent").forwarded) == 0
    # Durable messages to alice (pull: nothing pushed, nothing acked) and bob.
    for i in range(5):
        assert_status(pb, bob.send_text(to=["alice"], text=f"m{i}", durable=True), "ACCEPTED")
    assert_status(pb, alice.send_text(to=["bob", "carol"], text="héllo", durable=True),
                  "ACCEPTED")
    assert_status(pb, bob.send_text(to=["carol"], text="live one"), "OK")
    q = ops.request("queues")
    assert [x.name for x in q.queues] == ["alice", "bob"] and q.truncated
    q2 = ops.request("queues", pb.Queues(after="bob"))
    depth = {x.name: x.depth for x in list(q.queues) + list(q2.queues)}
    assert depth["alice"] == 5
    assert depth["carol"] == 1
    assert depth["ops"] == 0
    st = ops.request("stats").stats
    assert [(x.name, x.depth) for x in st.deepest_queues][0] == ("alice", 5)

    r = ops.request("recent", pb.Recent(max=3, text=True))
    assert_status(pb, r, "OK")
    assert len(r.forwarded) == 3
    last = r.forwarded[-1]  # newest last
    assert (last.__getattribute__("from"), list(last.to), last.durable, last.text,
            last.size, last.recipients, last.delivered) == \
        ("bob", ["carol"], False, "live one", 8, 1, 1)
    mid = r.forwarded[-2]
    assert mid.durable and mid.text == "héllo" and mid.size == len("héllo".encode())
    assert list(mid.to) == ["bob", "carol"] and mid.delivered == 2
    r = ops.request("recent")  # without texts
    assert len(r.forwarded) == 7 and all(f.text == "" for f in r.forwarded)
    # Sessions see the queue depth and idle time.
    by = {s.name: s for s in ops.request("sessions", pb.Sessions(after="")).sessions}
    assert by["alice"].queued == 5
    assert all(s.idle_ms < 60_000 for s in by.values())


def test_python_client_monitoring(broker, hub, pb, tmp_path, tmp_path_factory):
    """The Python client's stats(), sessions(), queues() and recent()."""
    from conftest import import_installed_causeway
    causeway = import_installed_causeway()
    b = broker("--data", tmp_path / "d", "--operators", "ops", "--monitor-text")
    bob = hub.logged_in(b.endpoint, "bob", pull=True)
    with causeway.Client(b.endpoint, "ops", timeout=5) as ops:
        assert ops.recent() == []  # nothing recorded before someone watches
        ops.send(["bob"], "one", durable=True)
        ops.send(["bob"], "two")
        assert_status(pb, bob.send_text(to=[], text="x"), "BAD_REQUEST")
        st = ops.stats()
        assert st.traffic[("durable", "unicast")]["received"] == 1
        assert st.traffic[("live", "unicast")]["delivered"] == 1
        assert st.refusals == {"BAD_REQUEST": 1}
        assert st.recipient_fates == {"ACCEPTED": 1, "DELIVERED": 1}
        assert st.commit_latency["count"] >= 1 and st.version == "0.1.0"
        assert [(q.name, q.depth) for q in st.deepest_queues] == [("bob", 1)]
        sess = {s.name: s for s in ops.sessions()}
        assert set(sess) == {"bob", "ops"} and sess["bob"].pull
        assert sess["ops"].peer == "127.0.0.1"
        assert {q.name: q.depth for q in ops.queues()}["bob"] == 1
        fw = ops.recent(text=True)
        assert [(f.sender, f.to, f.durable, f.text) for f in fw] == \
            [("ops", ["bob"], True, "one"), ("ops", ["bob"], False, "two")]
        assert all(f.text == "" for f in ops.recent())
    with causeway.Client(b.endpoint, "eve", timeout=5) as eve:
        try:
            eve.sessions()
            raise AssertionError("eve saw the sessions")
        except causeway.CausewayError as e:
            assert e.status == "UNAUTHORIZED"
