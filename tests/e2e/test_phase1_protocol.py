"""Phase 1 (synchronous chat) over the wire, with raw Python clients.

Three clients chat 1-to-1, 1-to-n and 1-to-all; each test checks the exact
per-recipient statuses and every field of what the recipients get. Then
names (NAME_TAKEN, reuse), OFFLINE vs UNKNOWN_USER, presence events, the
user log, expiry of silent clients, session takeover with the resume token,
who/stats without a session and broker heartbeats.
"""

import signal
import time

from conftest import HEARTBEAT_MS, LIVENESS, assert_status, now_us


def sender(d):
    return getattr(d, "from")


def clock_of(msg):
    return [(e.node, e.counter) for e in msg.clock]


def statuses(reply):
    return [(r.name, r.status) for r in reply.recipients]


def is_body(body, **fields):
    def pred(e):
        if e.WhichOneof("body") != body:
            return False
        msg = getattr(e, body)
        return all(getattr(msg, k) == v for k, v in fields.items())
    return pred


def test_login_reply(broker, hub, pb):
    br = broker()
    t0 = now_us()
    a = hub.client(br.endpoint)
    reply = a.login("alice")
    t1 = now_us()
    assert reply.detail
    info = reply.login
    assert info.broker_version
    assert info.heartbeat_ms == HEARTBEAT_MS
    assert info.liveness == LIVENESS
    assert info.max_frame == 65536
    assert info.max_recipients == 1000
    assert info.max_text == 60000
    assert len(info.resume_token) == 16
    assert info.durable is False
    assert [(u.name, u.online) for u in reply.users] == [("alice", True)]
    assert t0 <= reply.users[0].last_seen_us <= t1
    b = hub.client(br.endpoint)
    reply_b = b.login("bob")
    assert len(reply_b.login.resume_token) == 16
    assert reply_b.login.resume_token != info.resume_token


def test_three_clients_chat(broker, hub, pb):
    br = broker()
    alice = hub.logged_in(br.endpoint, "alice")
    bob = hub.logged_in(br.endpoint, "bob")
    carl = hub.logged_in(br.endpoint, "carl")
    D = pb.STATUS_DELIVERED

    # 1-to-1, with a clock that must travel verbatim (zero entry included).
    clock = [("alice", 3), ("bob", 0), ("zed", 2**64 - 1)]
    t0 = now_us()
    reply = alice.send_text(to=["bob"], text="hi bob", clock=clock, message_id="m1")
    t1 = now_us()
    assert_status(pb, reply, "OK")
    assert statuses(reply) == [("bob", D)]
    assert not reply.duplicate
    d = bob.recv_body("deliver")
    assert sender(d) == "alice"
    assert d.text == "hi bob"
    assert list(d.to) == ["bob"]
    assert d.broadcast is False
    assert t0 <= d.timestamp_us <= t1
    assert d.seq == 0
    assert d.durable is False
    assert d.redelivered is False
    assert d.message_id == "m1"
    assert clock_of(d) == clock

    # 1-to-n, in the order given; duplicates collapse to the first mention.
    t0 = now_us()
    reply = alice.send_text(to=["carl", "bob", "carl"], text="hi both", clock=[("alice", 4)])
    t1 = now_us()
    assert_status(pb, reply, "OK")
    assert statuses(reply) == [("carl", D), ("bob", D)]
    for who in (bob, carl):
        d = who.recv_body("deliver")
        assert sender(d) == "alice"
        assert d.text == "hi both"
        assert list(d.to) == ["carl", "bob"]
        assert d.broadcast is False
        assert t0 <= d.timestamp_us <= t1
        assert clock_of(d) == [("alice", 4)]

    # 1-to-all from bob: every known user but the sender, sorted by name.
    t0 = now_us()
    reply = bob.send_text(broadcast=True, text="hello all", clock=[("alice", 4), ("bob", 1)])
    t1 = now_us()
    assert_status(pb, reply, "OK")
    assert statuses(reply) == [("alice", D), ("carl", D)]
    for who in (alice, carl):
        d = who.recv_body("deliver")
        assert sender(d) == "bob"
        assert d.text == "hello all"
        assert list(d.to) == []
        assert d.broadcast is True
        assert t0 <= d.timestamp_us <= t1
        assert clock_of(d) == [("alice", 4), ("bob", 1)]

    # Sending to oneself is allowed and delivered.
    reply = carl.send_text(to=["carl"], text="note to self")
    assert statuses(reply) == [("carl", D)]
    assert carl.recv_body("deliver").text == "note to self"

    # Exactly those deliveries, nothing extra (carl got no 1-to-1 copy,
    # nobody got their own broadcast, the duplicate name gave one copy).
    stats = alice.request("stats").stats
    assert stats.messages_routed == 4
    assert stats.deliveries == 6
    assert [d.text for d in alice.deliveries()] == []
    assert [d.text for d in bob.deliveries()] == []
    assert [d.text for d in carl.deliveries()] == []


def test_unknown_and_offline(broker, hub, pb):
    br = broker()
    alice = hub.logged_in(br.endpoint, "alice")
    dave = hub.logged_in(br.endpoint, "dave")
    dave.logout()
    reply = alice.send_text(to=["dave", "nobody", "alice", "a b", "dave", "nobody"],
                             text="anyone?")
    assert_status(pb, reply, "OK")
    assert statuses(reply) == [("dave", pb.STATUS_OFFLINE), ("nobody", pb.STATUS_UNKNOWN_USER),
                               ("alice", pb.STATUS_DELIVERED),
                               ("a b", pb.STATUS_UNKNOWN_USER)]
    d = alice.recv_body("deliver")
    assert d.text == "anyone?"
    assert list(d.to) == ["dave", "nobody", "alice", "a b"]
    # Broadcast reports offline users too.
    reply = alice.send_text(broadcast=True, text="all")
    assert statuses(reply) == [("dave", pb.STATUS_OFFLINE)]
    # Dave's connection gets nothing while logged out; it can log in again.
    dave.drain()
    assert not [e for _, e in dave.inbox if e.WhichOneof("body") == "deliver"]
    dave.login("dave")
    reply = alice.send_text(to=["dave"], text="welcome back")
    assert statuses(reply) == [("dave", pb.STATUS_DELIVERED)]
    assert dave.recv_body("deliver").text == "welcome back"


def test_name_taken_then_other_name(broker, hub, pb):
    br = broker()
    hub.logged_in(br.endpoint, "alice")
    c = hub.client(br.endpoint)
    reply = c.try_login("alice")
    assert_status(pb, reply, "NAME_TAKEN")
    assert reply.detail
    assert not reply.HasField("login")
    # A wrong resume token does not help.
    assert_status(pb, c.try_login("alice", resume_token=b"\0" * 16), "NAME_TAKEN")
    reply = c.login("alice2")
    assert [(u.name, u.online) for u in reply.users] == [("alice", True), ("alice2", True)]


def test_presence_events(broker, hub, pb):
    br = broker()
    alice = hub.logged_in(br.endpoint, "alice")
    quiet = hub.logged_in(br.endpoint, "quiet", quiet=True)
    alice.recv_body("presence", where=lambda p: p.name == "quiet")
    t0 = now_us()
    bob = hub.logged_in(br.endpoint, "bob")
    t1 = now_us()
    p = alice.recv_body("presence", where=lambda p: p.name == "bob")
    assert p.online is True
    assert p.reason == pb.Presence.REASON_LOGIN
    assert t0 <= p.timestamp_us <= t1
    t0 = now_us()
    bob.logout()
    t1 = now_us()
    p = alice.recv_body("presence", where=lambda p: p.name == "bob")
    assert p.online is False
    assert p.reason == pb.Presence.REASON_LOGOUT
    assert t0 <= p.timestamp_us <= t1
    # Bob was told about nobody but got no event about himself.
    bob.assert_none(is_body("presence", name="bob"), "own presence pushed")
    # A quiet session gets no presence; its who reply comes after anything
    # the broker pushed it before.
    assert_status(pb, quiet.request("who"), "OK")
    quiet.assert_none(is_body("presence"), "presence pushed to a quiet session")
    # Alice saw quiet's own login (quiet only mutes what quiet receives).
    alice.assert_none(is_body("presence", name="alice"), "own presence pushed")


def test_user_log(broker, hub, pb):
    br = broker()
    a1 = hub.logged_in(br.endpoint, "carol")
    hub.logged_in(br.endpoint, "bob")
    a1.logout()
    zed = hub.logged_in(br.endpoint, "zed")
    zed.logout()
    a2 = hub.client(br.endpoint)
    t0 = now_us()
    reply = a2.login("carol")      # the name is reused: listed once
    t1 = now_us()
    users = [(u.name, u.online) for u in reply.users]
    assert users == [("bob", True), ("carol", True), ("zed", False)]
    last = {u.name: u.last_seen_us for u in reply.users}
    assert t0 <= last["carol"] <= t1
    assert 0 < last["bob"] < t0 and 0 < last["zed"] < t0
    who = a2.request("who")
    assert [(u.name, u.online) for u in who.users] == users
    stats = a2.request("stats").stats
    assert stats.sessions == 2
    assert stats.known_users == 3


def test_who_and_stats_without_login(broker, hub, pb):
    br = broker()
    c = hub.client(br.endpoint)
    who = c.request("who")
    assert_status(pb, who, "OK")
    assert list(who.users) == []
    stats = c.request("stats")
    assert_status(pb, stats, "OK")
    assert stats.stats.sessions == 0
    assert stats.stats.known_users == 0
    assert stats.stats.frames_in >= 2
    hub.logged_in(br.endpoint, "xavier")
    assert [(u.name, u.online) for u in c.request("who").users] == [("xavier", True)]
    s2 = c.request("stats").stats
    assert s2.sessions == 1
    assert s2.known_users == 1
    assert s2.frames_in > stats.stats.frames_in
    assert s2.uptime_ms >= stats.stats.uptime_ms
    # Still not logged in: who/stats did not create a session.
    assert_status(pb, c.send_text(to=["xavier"], text="x"), "NOT_LOGGED_IN")


def test_silent_client_expires(broker, hub, pb):
    """A connected client that sends nothing expires after
    heartbeat_ms * liveness, and the others are told."""
    br = broker()
    alice = hub.logged_in(br.endpoint, "alice")
    mute = hub.client(br.endpoint, auto_heartbeat=False)
    mute.login("mute")
    alice.recv_body("presence", where=lambda p: p.name == "mute" and p.online)
    silent_since = mute.last_tx
    p = alice.recv_body("presence", where=lambda p: p.name == "mute", timeout=5.0)
    elapsed = time.monotonic() - silent_since
    assert p.online is False
    assert p.reason == pb.Presence.REASON_EXPIRED
    bound = HEARTBEAT_MS * LIVENESS / 1000.0
    assert elapsed >= bound * 0.9, f"expired after {elapsed:.3f}s, before the {bound}s bound"
    assert elapsed <= bound + 1.0, f"expired after {elapsed:.3f}s, bound {bound}s"
    assert [(u.name, u.online) for u in alice.request("who").users] == [
        ("alice", True), ("mute", False)]
    assert statuses(alice.send_text(to=["mute"], text="gone?")) == [("mute", pb.STATUS_OFFLINE)]
    assert alice.request("stats").stats.expired_sessions == 1
    # The name is free again.
    hub.logged_in(br.endpoint, "mute")


def test_closed_client_expires(broker, hub, pb):
    """A client that vanishes (socket closed, no logout) is noticed within
    the liveness bound."""
    br = broker()
    alice = hub.logged_in(br.endpoint, "alice")
    gone = hub.logged_in(br.endpoint, "gone")
    alice.recv_body("presence", where=lambda p: p.name == "gone" and p.online)
    closed_at = time.monotonic()
    gone.close()
    p = alice.recv_body("presence", where=lambda p: p.name == "gone", timeout=5.0)
    elapsed = time.monotonic() - closed_at
    assert p.online is False
    assert p.reason == pb.Presence.REASON_EXPIRED
    assert elapsed <= HEARTBEAT_MS * LIVENESS / 1000.0 + 1.0, f"noticed after {elapsed:.3f}s"
    assert statuses(alice.send_text(to=["gone"], text="?")) == [("gone", pb.STATUS_OFFLINE)]


def test_heartbeats_keep_session_alive(broker, hub, pb):
    """An idle session gets broker heartbeats about every heartbeat_ms and,
    as long as it answers with its own, never expires."""
    br = broker()
    alice = hub.logged_in(br.endpoint, "alice")
    idle = hub.logged_in(br.endpoint, "idle")
    times = []
    for _ in range(6):      # ~1 s, well past the expiry bound
        idle.recv_until(lambda e: e.WhichOneof("body") == "heartbeat", timeout=2.0,
                        what="broker heartbeat")
        times.append(time.monotonic())
    # Five intervals of about heartbeat_ms each. Judged over the whole span
    # (not per gap) so that a test process stalled for a moment, which then
    # reads two heartbeats at once, does not look like a broker spamming.
    span = times[-1] - times[0]
    hb = HEARTBEAT_MS / 1000.0
    assert span >= 5 * hb * 0.7, f"heartbeats too often: 6 in {span:.3f}s"
    assert span <= 5 * hb * 2.5, f"heartbeats too rare: 6 in {span:.3f}s"
    # Heartbeats are pushes, never replies.
    idle.assert_none(is_body("reply"), "stray reply")
    alice.assert_none(lambda e: e.WhichOneof("body") == "presence" and e.presence.name == "idle"
                      and not e.presence.online, "idle session expired")
    assert statuses(alice.send_text(to=["idle"], text="still there")) == [
        ("idle", pb.STATUS_DELIVERED)]
    assert idle.recv_body("deliver").text == "still there"


def test_heartbeat_push_fields(broker, hub, pb):
    br = broker()
    c = hub.logged_in(br.endpoint, "beat")
    env = c.recv_until(lambda e: e.WhichOneof("body") == "heartbeat", timeout=2.0)
    assert env.request_id == 0
    assert env.version == 1
    assert list(env.clock) == []


def test_resume_token_takeover(broker, hub, pb):
    br = broker()
    watcher = hub.logged_in(br.endpoint, "watcher")
    old = hub.logged_in(br.endpoint, "rita")
    watcher.recv_body("presence", where=lambda p: p.name == "rita")
    token = old.token
    new = hub.client(br.endpoint)
    assert_status(pb, new.try_login("rita", resume_token=token[:15]), "NAME_TAKEN")
    assert_status(pb, new.try_login("rita", resume_token=bytes(16)), "NAME_TAKEN")
    reply = new.login("rita", resume_token=token)
    assert len(reply.login.resume_token) == 16
    # No presence for a takeover: the watcher's who reply comes after
    # anything the takeover made the broker push.
    who = watcher.request("who")
    assert [(u.name, u.online) for u in who.users] == [("rita", True), ("watcher", True)]
    watcher.assert_none(is_body("presence", name="rita"), "presence for a takeover")
    # Messages go to the new connection; the old one has no session.
    assert statuses(watcher.send_text(to=["rita"], text="where are you")) == [
        ("rita", pb.STATUS_DELIVERED)]
    assert new.recv_body("deliver").text == "where are you"
    old.logged_in = False
    assert_status(pb, old.send_text(to=["watcher"], text="ghost"), "NOT_LOGGED_IN")
    old.assert_none(is_body("deliver"), "deliver to the replaced connection")
    # The session is the same one: logging out ends it for everybody.
    new.logout()
    p = watcher.recv_body("presence", where=lambda p: p.name == "rita")
    assert (p.online, p.reason) == (False, pb.Presence.REASON_LOGOUT)


def test_logout_then_login_again_on_same_connection(broker, hub, pb):
    br = broker()
    other = hub.logged_in(br.endpoint, "other")
    c = hub.logged_in(br.endpoint, "first")
    c.logout()
    assert_status(pb, c.send_text(to=["other"], text="x"), "NOT_LOGGED_IN")
    assert_status(pb, c.request("logout"), "NOT_LOGGED_IN")
    c.login("second")
    assert statuses(c.send_text(to=["other"], text="as second")) == [
        ("other", pb.STATUS_DELIVERED)]
    d = other.recv_body("deliver")
    assert (sender(d), d.text) == ("second", "as second")


def test_sigterm_with_live_sessions(broker, hub, pb):
    """SIGTERM while clients are logged in: the broker exits 0 promptly."""
    br = broker()
    hub.logged_in(br.endpoint, "a")
    hub.logged_in(br.endpoint, "b")
    t0 = time.monotonic()
    rc, killed = br.terminate()
    assert not killed
    assert rc == 0, br.log()[-4000:]
    assert time.monotonic() - t0 < 3.0


def test_sigint_exits_zero(broker, hub, pb):
    """SIGINT (Ctrl-C in a terminal) stops the broker as cleanly as SIGTERM."""
    br = broker()
    hub.logged_in(br.endpoint, "a")
    br.proc.send_signal(signal.SIGINT)
    rc = br.proc.wait(timeout=5.0)
    assert rc == 0, br.log()[-4000:]


def test_quiet_login_reply(broker, hub, pb):
    """§7.6: a quiet Login gets no user log in its Reply; Who still works."""
    br = broker()
    hub.logged_in(br.endpoint, "loud")
    q = hub.client(br.endpoint)
    reply = q.login("hush", quiet=True)
    assert list(reply.users) == []
    assert len(reply.login.resume_token) == 16
    assert [u.name for u in q.request("who").users] == ["hush", "loud"]


def test_resume_keeps_token_and_last_seen(broker, hub, pb):
    """§7.5: a resumed session keeps its token and last_seen_us."""
    br = broker()
    old = hub.logged_in(br.endpoint, "rex")
    before = {u.name: u.last_seen_us for u in old.request("who").users}["rex"]
    new = hub.client(br.endpoint)
    reply = new.login("rex", resume_token=old.token)
    assert reply.login.resume_token == old.token
    assert {u.name: u.last_seen_us for u in reply.users}["rex"] == before
    assert {u.name: u.online for u in reply.users}["rex"] is True


def test_stale_token_opens_new_session(broker, hub, pb):
    """§7.5: once the session ended, the old token is ignored: a new
    session with a new token, announced with Presence LOGIN."""
    br = broker()
    watcher = hub.logged_in(br.endpoint, "watcher")
    first = hub.logged_in(br.endpoint, "sam")
    token = first.token
    first.logout()
    watcher.recv_body("presence", where=lambda p: p.name == "sam" and not p.online)
    again = hub.client(br.endpoint)
    reply = again.login("sam", resume_token=token)
    assert reply.login.resume_token != token
    p = watcher.recv_body("presence", where=lambda p: p.name == "sam")
    assert (p.online, p.reason) == (True, pb.Presence.REASON_LOGIN)


def test_broadcast_alone(broker, hub, pb):
    """§10.3: a broadcast with no other known user is OK with no recipients."""
    br = broker()
    c = hub.logged_in(br.endpoint, "alone")
    reply = c.send_text(broadcast=True, text="anyone?")
    assert_status(pb, reply, "OK")
    assert list(reply.recipients) == []
    c.assert_none(is_body("deliver"), "sender got its own broadcast")


def test_names_are_case_sensitive(broker, hub, pb):
    """§10.3: names compare byte for byte: bob and Bob are two users."""
    br = broker()
    a = hub.logged_in(br.endpoint, "alice")
    bob = hub.logged_in(br.endpoint, "bob")
    big = hub.logged_in(br.endpoint, "Bob")
    reply = a.send_text(to=["bob", "Bob", "BOB"], text="which bob?")
    assert statuses(reply) == [("bob", pb.STATUS_DELIVERED), ("Bob", pb.STATUS_DELIVERED),
                               ("BOB", pb.STATUS_UNKNOWN_USER)]
    assert bob.recv_body("deliver").text == "which bob?"
    assert big.recv_body("deliver").text == "which bob?"


def test_fifo_and_causal_order(broker, hub, pb):
    """§10.6: a recipient gets one sender's messages in sending order, and a
    message sent after receiving m1 reaches a common recipient after m1."""
    br = broker()
    a = hub.logged_in(br.endpoint, "a")
    b = hub.logged_in(br.endpoint, "b")
    c = hub.logged_in(br.endpoint, "c")
    for i in range(50):
        assert statuses(a.send_text(to=["c"], text=f"fifo {i}")) == [("c", pb.STATUS_DELIVERED)]
    got = [c.recv_body("deliver").text for _ in range(50)]
    assert got == [f"fifo {i}" for i in range(50)]
    # a -> {b, c}: m1; b reacts to m1 with m2 -> c. c must see m1 first.
    for round_ in range(20):
        a.send_text(to=["b", "c"], text=f"m1 {round_}", clock=[("a", round_ + 1)])
        m1 = b.recv_body("deliver", where=lambda d: d.text == f"m1 {round_}")
        b.send_text(to=["c"], text=f"m2 {round_}", clock=[("a", m1.clock[0].counter),
                                                         ("b", round_ + 1)])
        first = c.recv_body("deliver")
        second = c.recv_body("deliver")
        assert (first.text, second.text) == (f"m1 {round_}", f"m2 {round_}")


def _hex(s):
    return bytes.fromhex(s)


def test_protocol_md_worked_example(broker, hub, pb):
    """docs/PROTOCOL.md §17, byte for byte: the client frames of the worked
    example are accepted, and the broker's frames equal the documented ones
    once the run-specific values (timestamps, token) are put back in."""
    br = broker(heartbeat_ms=1000)
    alice = hub.client(br.endpoint)
    bob = hub.client(br.endpoint)

    def recv_raw(c, body):
        raw, env = c.recv_frame_until(lambda e: e.WhichOneof("body") == body, timeout=3.0,
                                      what=body)
        # The broker encodes canonically: what Python would write.
        assert env.SerializeToString() == raw
        return env, raw

    # alice logs in (13 bytes).
    login = _hex("08 01 10 01 52 07 0a 05 61 6c 69 63 65")
    alice.send_bytes(login)
    env, raw = recv_raw(alice, "reply")
    doc = _hex("08 01 10 01 82 02 4a 12 09 6c 6f 67 67 65 64 20 69 6e 22 12 0a 05 61 6c"
               "69 63 65 10 01 18 f3 83 99 c7 b9 a3 98 03 2a 29 0a 05 30 2e 31 2e 30 10"
               "e8 07 18 03 20 80 80 04 28 e8 07 30 e0 d4 03 3a 10 90 95 08 ab bb 22 0f"
               "59 8a c3 e3 3d dd a1 38 e7")
    assert len(env.reply.login.resume_token) == 16
    env.reply.users[0].last_seen_us = 1795621017502195
    env.reply.login.resume_token = _hex("90 95 08 ab bb 22 0f 59 8a c3 e3 3d dd a1 38 e7")
    env.reply.login.broker_version = "0.1.0"
    assert env.SerializeToString() == doc
    alice.logged_in, alice.name = True, "alice"

    bob.send_bytes(_hex("08 01 10 01 52 05 0a 03 62 6f 62"))
    bob.recv_reply(1)
    bob.logged_in, bob.name = True, "bob"
    env, raw = recv_raw(alice, "presence")
    env.presence.timestamp_us = 1795621017502729
    assert env.SerializeToString() == _hex(
        "08 01 fa 01 12 0a 03 62 6f 62 10 01 18 01 20 89 88 99 c7 b9 a3 98 03")

    # alice sends "hi" to bob with clock {alice: 1} (26 bytes).
    alice.send_bytes(_hex("08 01 10 02 1a 09 0a 05 61 6c 69 63 65 10 01 62 09 0a 03 62 6f 62"
                          "1a 02 68 69"))
    env, raw = recv_raw(bob, "deliver")
    env.deliver.timestamp_us = 1795621017502905
    assert env.SerializeToString() == _hex(
        "08 01 f2 01 24 0a 05 61 6c 69 63 65 12 03 62 6f 62 22 02 68 69 28 b9 89"
        "99 c7 b9 a3 98 03 4a 09 0a 05 61 6c 69 63 65 10 01")
    env, raw = recv_raw(alice, "reply")
    assert raw == _hex("08 01 10 02 82 02 0f 12 04 73 65 6e 74 1a 07 0a 03 62 6f 62 10 01")

    # A broker heartbeat push is 08 01 92 01 00.
    env, raw = recv_raw(bob, "heartbeat")
    assert raw == _hex("08 01 92 01 00")
