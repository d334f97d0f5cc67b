"""Bad input never hurts the broker.

Each test feeds one kind of bad frame or bad request to a real broker and
checks the exact status of the reply (and its request_id), then checks that
the broker still serves: two fresh, well-behaved clients log in and chat.
"""

import itertools
import random

import zmq
from zmq.utils.monitor import recv_monitor_message

from conftest import assert_status, field_bytes, field_key, field_varint, status_name

_names = itertools.count(1)


def fresh(prefix="ok"):
    return f"{prefix}{next(_names)}"


def assert_serving(hub, broker):
    """Two new clients log in and one sends to the other: the broker is alive
    and routing. Both log out again (freeing their sessions)."""
    pb = hub.pb
    a = hub.logged_in(broker.endpoint, fresh("well"))
    b = hub.logged_in(broker.endpoint, fresh("well"))
    reply = a.send_text(to=[b.name], text="alive")
    assert_status(pb, reply, "OK")
    assert [(r.name, r.status) for r in reply.recipients] == [(b.name, pb.STATUS_DELIVERED)]
    d = b.recv_body("deliver")
    assert getattr(d, "from") == a.name
    assert d.text == "alive"
    a.logout()
    b.logout()
    a.close()
    b.close()


def any_reply(client, timeout=3.0):
    return client.recv_reply(None, timeout)


# ---------------------------------------------------------------------------
# Undecodable frames

def test_random_bytes_not_protobuf(broker, hub, pb):
    """Frames that cannot be protobuf (first key has wire type 6 or 7) get
    BAD_REQUEST with request_id 0."""
    br = broker()
    c = hub.client(br.endpoint)
    rnd = random.Random(1234)
    for i in range(20):
        first = rnd.choice([k for k in range(0x80) if k & 7 in (6, 7)])
        frame = bytes([first]) + rnd.randbytes(rnd.randrange(0, 64))
        c.send_bytes(frame)
        env = any_reply(c)
        assert env.request_id == 0, f"frame {frame!r}"
        assert_status(pb, env.reply, "BAD_REQUEST")
        assert env.reply.detail
    c.send_bytes(b"\xff" * 16)   # varint that never ends
    assert_status(pb, any_reply(c).reply, "BAD_REQUEST")
    c.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_status(pb, any_reply(c).reply, "BAD_REQUEST")
    assert_serving(hub, br)


def test_random_bytes_fuzz(broker, hub, pb):
    """Arbitrary random frames: each gets at most one reply, always an error
    status, and the broker keeps answering. A `who` sent after each frame
    marks where that frame's answer must have arrived."""
    br = broker()
    c = hub.client(br.endpoint)
    rnd = random.Random(99)
    allowed = {pb.STATUS_BAD_REQUEST, pb.STATUS_UNSUPPORTED_VERSION, pb.STATUS_UNKNOWN_TYPE,
               pb.STATUS_NOT_LOGGED_IN, pb.STATUS_BAD_NAME}
    for i in range(300):
        frame = rnd.randbytes(rnd.randrange(0, 48))
        c.send_bytes(frame)
        marker = c.envelope("who", request_id=10_000_000 + i)
        c.send_env(marker)
        c.recv_reply(marker.request_id)
        # Whatever arrived before the marker's reply answers the random frame.
        replies = [e for _, e in c.inbox if e.WhichOneof("body") == "reply"]
        c.inbox.clear()
        assert len(replies) <= 1, f"frame {frame!r} got {len(replies)} replies"
        for e in replies:
            assert e.reply.status in allowed, (
                f"frame {frame!r}: {status_name(pb, e.reply.status)} {e.reply.detail!r}")
    stats = c.request("stats")
    assert_status(pb, stats, "OK")
    assert stats.stats.bad_frames >= 1
    assert_serving(hub, br)


def test_truncated_protobuf(broker, hub, pb):
    br = broker()
    c = hub.client(br.endpoint)
    c.login("trunc")
    env = c.envelope("send", pb.Send(to=["nobody"], text="x" * 40), request_id=4242,
                     clock=[("trunc", 1)])
    data = env.SerializeToString()
    # Cut inside the body (the last field): undecodable, so request_id 0.
    for cut in (len(data) - 1, len(data) - 10, len(data) - 30):
        c.send_bytes(data[:cut])
        reply_env = any_reply(c)
        assert reply_env.request_id == 0
        assert_status(pb, reply_env.reply, "BAD_REQUEST")
    # The whole frame still works.
    c.send_bytes(data)
    reply_env = c.recv_reply(4242)
    assert_status(pb, reply_env.reply, "OK")
    assert [(r.name, r.status) for r in reply_env.reply.recipients] == [
        ("nobody", pb.STATUS_UNKNOWN_USER)]
    assert_serving(hub, br)


def test_envelope_without_body(broker, hub, pb):
    br = broker()
    c = hub.client(br.endpoint)
    env = c.envelope(None, request_id=77, clock=[("a", 1)])
    reply_env = c.request_env(env)
    assert reply_env.request_id == 77
    assert_status(pb, reply_env.reply, "BAD_REQUEST")
    # Also after login.
    c.login("nobody1")
    reply_env = c.request_env(c.envelope(None, request_id=78))
    assert_status(pb, reply_env.reply, "BAD_REQUEST")
    assert_serving(hub, br)


def test_unknown_fields_are_ignored(broker, hub, pb):
    """Unknown fields outside the body range (envelope) and inside a body
    are skipped: the request works as if they were absent."""
    br = broker()
    c = hub.client(br.endpoint)
    extra = (field_varint(4, 123456) + field_bytes(9, b"future")
             + field_key(7, 5) + b"\x01\x02\x03\x04")
    env = c.envelope("who", request_id=501)
    c.send_bytes(env.SerializeToString() + extra)
    reply_env = c.recv_reply(501)
    assert_status(pb, reply_env.reply, "OK")
    # A Login with an unknown field 9 inside it (e.g. from a newer client).
    login = pb.Login(name="newer", agent="future/2").SerializeToString() + field_varint(9, 1)
    raw = (field_varint(1, 1) + field_varint(2, 502) + field_bytes(10, login) + extra)
    c.send_bytes(raw)
    reply_env = c.recv_reply(502)
    assert_status(pb, reply_env.reply, "OK")
    assert reply_env.reply.login.heartbeat_ms == 200
    c.logged_in, c.name = True, "newer"
    # The session works: a Send with unknown fields inside the Send.
    other = hub.logged_in(br.endpoint, "other1")
    send = pb.Send(to=["other1"], text="hi from the future").SerializeToString()
    send += field_bytes(15, b"\x08\x01")
    c.send_bytes(field_varint(1, 1) + field_varint(2, 503) + field_bytes(12, send))
    reply_env = c.recv_reply(503)
    assert_status(pb, reply_env.reply, "OK")
    assert [(r.name, r.status) for r in reply_env.reply.recipients] == [
        ("other1", pb.STATUS_DELIVERED)]
    assert other.recv_body("deliver").text == "hi from the future"
    assert_serving(hub, br)


def test_unknown_message_type(broker, hub, pb):
    """A body field number this broker does not know (in the body range)
    is UNKNOWN_TYPE, with the request_id echoed."""
    br = broker()
    c = hub.client(br.endpoint)
    for rid, number in ((601, 50), (602, 28), (603, 29), (604, 1000)):
        c.send_bytes(field_varint(1, 1) + field_varint(2, rid) + field_bytes(number, b""))
        reply_env = c.recv_reply(rid)
        assert_status(pb, reply_env.reply, "UNKNOWN_TYPE")
    # Same after login, and with content in the unknown message.
    c.login("curious")
    c.send_bytes(field_varint(1, 1) + field_varint(2, 605)
                 + field_bytes(50, field_varint(1, 7) + field_bytes(2, b"x")))
    assert_status(pb, c.recv_reply(605).reply, "UNKNOWN_TYPE")
    assert_serving(hub, br)


def test_unsupported_version(broker, hub, pb):
    br = broker()
    c = hub.client(br.endpoint)
    for rid, version in ((701, 2), (702, 0), (703, 1000)):
        env = c.envelope("login", pb.Login(name="vers"), request_id=rid, version=version)
        reply_env = c.request_env(env)
        assert reply_env.request_id == rid
        assert_status(pb, reply_env.reply, "UNSUPPORTED_VERSION")
    # Nothing happened: the name is still free, and who does not list it.
    who = c.request("who")
    assert "vers" not in [u.name for u in who.users]
    c.login("vers")
    assert_serving(hub, br)


def test_frame_over_size_limit(broker, hub, pb):
    """--max-frame 1024: a 1024-byte frame is served, 1025..2048 bytes get
    TOO_LARGE (request_id 0: refused before decoding), and a frame above
    twice the limit makes libzmq drop that connection; the broker goes on."""
    br = broker("--max-frame", 1024)
    c = hub.client(br.endpoint)

    def padded_who(rid, size):
        base = c.envelope("who", request_id=rid).SerializeToString()
        pad_len = size - len(base) - 3          # field 9 key (1) + 2-byte length
        frame = base + field_bytes(9, b"p" * pad_len)
        assert len(frame) == size, len(frame)
        return frame

    c.send_bytes(padded_who(801, 1024))
    assert_status(pb, c.recv_reply(801).reply, "OK")
    for rid, size in ((802, 1025), (803, 2000)):
        c.send_bytes(padded_who(rid, size))
        reply_env = any_reply(c)
        assert reply_env.request_id == 0
        assert_status(pb, reply_env.reply, "TOO_LARGE")
    # A big text in an otherwise valid Send: TOO_LARGE for the frame.
    c.login("bigsender")
    c.send_bytes(c.envelope("send", pb.Send(to=["x"], text="t" * 1500)).SerializeToString())
    assert_status(pb, any_reply(c).reply, "TOO_LARGE")

    # Above 2 * max_frame: the connection is dropped without a reply.
    big = hub.client(br.endpoint)
    mon = big.sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
    try:
        big.send_bytes(padded_who(804, 3000))
        events = []
        deadline_polls = 150  # x 20 ms = 3 s
        while zmq.EVENT_DISCONNECTED not in events and deadline_polls > 0:
            deadline_polls -= 1
            hub.pump()
            if mon.poll(20):
                events.append(recv_monitor_message(mon)["event"])
        assert zmq.EVENT_DISCONNECTED in events, f"no disconnect, monitor events {events}"
        big.drain()
        assert not [e for _, e in big.inbox if e.WhichOneof("body") == "reply"]
    finally:
        big.sock.disable_monitor()
        mon.close(linger=0)
    assert_serving(hub, br)


def test_multi_frame_message(broker, hub, pb):
    """Two frames in one message: BAD_REQUEST with request_id 0, even when
    each frame alone would be a valid request."""
    br = broker()
    c = hub.client(br.endpoint)
    who = c.envelope("who", request_id=901).SerializeToString()
    c.send_frames([who, who])
    reply_env = any_reply(c)
    assert reply_env.request_id == 0
    assert_status(pb, reply_env.reply, "BAD_REQUEST")
    # Exactly one reply: the next reply is for the next request.
    reply_env = c.request_env(c.envelope("who", request_id=902))
    assert_status(pb, reply_env.reply, "OK")
    c.drain()
    assert not [e for _, e in c.inbox if e.WhichOneof("body") == "reply"]
    # A logged-in client too; its session survives.
    c.login("multi")
    c.send_frames([c.envelope("logout").SerializeToString(), b"", b"x"])
    reply_env = any_reply(c)
    assert reply_env.request_id == 0
    assert_status(pb, reply_env.reply, "BAD_REQUEST")
    assert_status(pb, c.send_text(to=["multi"], text="self"), "OK")
    assert_serving(hub, br)


# ---------------------------------------------------------------------------
# Protocol misuse

def test_requests_before_login(broker, hub, pb):
    br = broker()
    c = hub.client(br.endpoint)
    hub.logged_in(br.endpoint, "target")
    assert_status(pb, c.send_text(to=["target"], text="hi"), "NOT_LOGGED_IN")
    assert_status(pb, c.send_text(broadcast=True, text="hi"), "NOT_LOGGED_IN")
    assert_status(pb, c.request("logout"), "NOT_LOGGED_IN")
    assert_status(pb, c.request("ack", pb.Ack(seq=1)), "NOT_LOGGED_IN")
    assert_status(pb, c.request("fetch", pb.Fetch(max=10)), "NOT_LOGGED_IN")
    assert_status(pb, c.request("history", pb.History(last=10)), "NOT_LOGGED_IN")
    # A heartbeat before login is not a request: no reply. The next reply
    # is the who's.
    c.send_env(c.envelope("heartbeat", request_id=950))
    reply_env = c.request_env(c.envelope("who", request_id=951))
    assert_status(pb, reply_env.reply, "OK")
    c.drain()
    assert not [e for _, e in c.inbox if e.WhichOneof("body") == "reply"]
    assert_serving(hub, br)


def test_durable_requests_without_store(broker, hub, pb):
    """A broker without --data: durable sends and queue requests are
    NOT_DURABLE after login."""
    br = broker()
    c = hub.logged_in(br.endpoint, "durable1")
    hub.logged_in(br.endpoint, "durable2")
    reply = c.send_text(to=["durable2"], text="keep me", durable=True)
    assert_status(pb, reply, "NOT_DURABLE")
    assert_status(pb, c.request("ack", pb.Ack(seq=1)), "NOT_DURABLE")
    assert_status(pb, c.request("fetch", pb.Fetch(max=10)), "NOT_DURABLE")
    assert_status(pb, c.request("history", pb.History(last=10)), "NOT_DURABLE")
    assert_serving(hub, br)


def test_second_login_on_same_connection(broker, hub, pb):
    br = broker()
    c = hub.logged_in(br.endpoint, "first")
    assert_status(pb, c.try_login("first"), "ALREADY_LOGGED_IN")
    assert_status(pb, c.try_login("second"), "ALREADY_LOGGED_IN")
    # "second" was not created; "first" is still online.
    who = c.request("who")
    assert [(u.name, u.online) for u in who.users] == [("first", True)]
    assert_serving(hub, br)


def test_client_sends_broker_bodies(broker, hub, pb):
    """deliver, presence and reply are broker-to-client types."""
    br = broker()
    c = hub.client(br.endpoint)
    victim = hub.logged_in(br.endpoint, "victim")
    bodies = [
        ("deliver", pb.Deliver(**{"from": "mallory", "to": ["victim"], "text": "forged"})),
        ("presence", pb.Presence(name="victim", online=False, reason=pb.Presence.REASON_LOGOUT)),
        ("reply", pb.Reply(status=pb.STATUS_OK, detail="forged")),
    ]
    for logged_in in (False, True):
        if logged_in:
            c.login("mallory")
        for body, msg in bodies:
            reply_env = c.request_env(c.envelope(body, msg))
            assert_status(pb, reply_env.reply, "BAD_REQUEST")
    # Nothing was forwarded to the victim: its next deliver is a real one.
    c.send_text(to=["victim"], text="real")
    d = victim.recv_body("deliver")
    assert d.text == "real"
    victim.assert_none(lambda e: e.WhichOneof("body") == "presence"
                       and e.presence.name == "victim", "forged presence forwarded")
    assert_serving(hub, br)


def test_bad_clocks(broker, hub, pb):
    """Clock entries must be strictly sorted by node, unique and non-empty;
    a bad clock is BAD_REQUEST and the message is not routed."""
    br = broker()
    a = hub.logged_in(br.endpoint, "clocka")
    b = hub.logged_in(br.endpoint, "clockb")
    bad = [
        [("clockb", 1), ("clocka", 2)],          # unsorted
        [("clocka", 1), ("clocka", 2)],          # duplicate
        [("", 1)],                               # empty node
        [("a", 1), ("", 2)],
        [("b", 1), ("a", 1), ("c", 1)],
    ]
    for clock in bad:
        reply = a.send_text(to=["clockb"], text="bad clock", clock=clock)
        assert_status(pb, reply, "BAD_REQUEST")
        assert not reply.recipients
    # Also on requests other than send.
    reply_env = a.request_env(a.envelope("who", clock=[("z", 1), ("a", 1)]))
    assert_status(pb, reply_env.reply, "BAD_REQUEST")
    # Byte order: "Z" < "a" is sorted.
    good = [("Zed", 1), ("clocka", 3), ("clockb", 0)]
    reply = a.send_text(to=["clockb"], text="good clock", clock=good)
    assert_status(pb, reply, "OK")
    d = b.recv_body("deliver")
    assert d.text == "good clock", "a message with a bad clock was delivered"
    assert [(e.node, e.counter) for e in d.clock] == good
    assert_serving(hub, br)


def test_text_over_max_text(broker, hub, pb):
    br = broker("--max-text", 100)
    a = hub.logged_in(br.endpoint, "texter")
    b = hub.logged_in(br.endpoint, "reader")
    reply = a.send_text(to=["reader"], text="x" * 101)
    assert_status(pb, reply, "TOO_LARGE")
    assert not reply.recipients
    # The limit is in bytes: 51 two-byte characters are 102 bytes.
    assert_status(pb, a.send_text(to=["reader"], text="\u00e9" * 51), "TOO_LARGE")
    reply = a.send_text(to=["reader"], text="\u00e9" * 50)
    assert_status(pb, reply, "OK")
    reply = a.send_text(to=["reader"], text="y" * 100)
    assert_status(pb, reply, "OK")
    assert [r.status for r in reply.recipients] == [pb.STATUS_DELIVERED]
    assert [d.text for d in (b.recv_body("deliver"), b.recv_body("deliver"))] == [
        "\u00e9" * 50, "y" * 100]
    assert a.login_info.max_text == 100
    assert_serving(hub, br)


def test_too_many_recipients(broker, hub, pb):
    br = broker("--max-recipients", 2)
    a = hub.logged_in(br.endpoint, "rcpta")
    hub.logged_in(br.endpoint, "rcptb")
    hub.logged_in(br.endpoint, "rcptc")
    assert a.login_info.max_recipients == 2
    reply = a.send_text(to=["rcptb", "rcptc", "rcptd"], text="three")
    assert_status(pb, reply, "TOO_MANY_RECIPIENTS")
    assert not reply.recipients
    reply = a.send_text(to=["rcptb", "rcptc"], text="two")
    assert_status(pb, reply, "OK")
    assert [(r.name, r.status) for r in reply.recipients] == [
        ("rcptb", pb.STATUS_DELIVERED), ("rcptc", pb.STATUS_DELIVERED)]
    # Broadcast is not limited by max_recipients.
    reply = a.send_text(broadcast=True, text="everyone")
    assert_status(pb, reply, "OK")
    assert [r.name for r in reply.recipients] == ["rcptb", "rcptc"]
    assert_serving(hub, br)


def test_send_addressing_errors(broker, hub, pb):
    br = broker()
    a = hub.logged_in(br.endpoint, "addr")
    hub.logged_in(br.endpoint, "addr2")
    assert_status(pb, a.send_text(to=["addr2"], broadcast=True, text="both"), "BAD_REQUEST")
    assert_status(pb, a.send_text(text="neither"), "BAD_REQUEST")
    assert_serving(hub, br)


def test_bad_names(broker, hub, pb):
    br = broker()
    c = hub.client(br.endpoint)
    for name in ["", "all", "ALL", "Admin", "everyone", "a b", "a" * 33, "-lead", "_x",
                 ".x", "caf\u00e9", "a/b", "a\nb", "tab\t"]:
        reply = c.try_login(name)
        assert_status(pb, reply, "BAD_NAME")
        assert reply.detail
    # Bad names never enter the user log.
    assert [u.name for u in c.request("who").users] == []
    # 32 bytes is fine.
    c.login("b" * 32)
    assert_serving(hub, br)


def test_max_sessions(broker, hub, pb):
    br = broker("--max-sessions", 2)
    a = hub.logged_in(br.endpoint, "sess1")
    b = hub.logged_in(br.endpoint, "sess2")
    c = hub.client(br.endpoint)
    assert_status(pb, c.try_login("sess3"), "TOO_MANY_SESSIONS")
    # A refused login creates nothing.
    assert "sess3" not in [u.name for u in c.request("who").users]
    stats = c.request("stats")
    assert stats.stats.sessions == 2
    # Once a session ends, the third client can log in.
    a.logout()
    c.login("sess3")
    assert_status(pb, c.send_text(to=["sess2"], text="made it"), "OK")
    c.logout()
    b.logout()
    assert_serving(hub, br)


def test_check_order(broker, hub, pb):
    """PROTOCOL.md §5: the first failing step decides the status."""
    br = broker("--max-frame", 1024)
    c = hub.client(br.endpoint)
    # Step 1 before 2: a multi-frame message with an oversized frame.
    c.send_frames([b"x" * 1500, b"y"])
    env = any_reply(c)
    assert (env.request_id, env.reply.status) == (0, pb.STATUS_BAD_REQUEST)
    # Step 2 before 3: oversized garbage.
    c.send_bytes(b"\xff" * 1500)
    env = any_reply(c)
    assert (env.request_id, env.reply.status) == (0, pb.STATUS_TOO_LARGE)
    # Step 4 before 5: version 2 without a body.
    env = c.request_env(c.envelope(None, request_id=1001, version=2))
    assert_status(pb, env.reply, "UNSUPPORTED_VERSION")
    # Step 4 before 6: version 2 with a bad clock.
    env = c.request_env(c.envelope("who", request_id=1002, version=2, clock=[("b", 1), ("a", 1)]))
    assert_status(pb, env.reply, "UNSUPPORTED_VERSION")
    # Step 5 before 6: no body and a bad clock.
    env = c.request_env(c.envelope(None, request_id=1003, clock=[("", 1)]))
    assert_status(pb, env.reply, "BAD_REQUEST")
    # Step 6 before 8: a Login with a bad clock logs nobody in.
    env = c.request_env(c.envelope("login", pb.Login(name="early"), request_id=1004,
                                   clock=[("b", 1), ("a", 1)]))
    assert_status(pb, env.reply, "BAD_REQUEST")
    assert [u.name for u in c.request("who").users] == []
    # Login order: ALREADY_LOGGED_IN before BAD_NAME.
    c.login("early")
    assert_status(pb, c.try_login("all"), "ALREADY_LOGGED_IN")
    # Send order: NOT_LOGGED_IN first, then both/neither, then recipients,
    # then text size, then message_id, then durable.
    anon = hub.client(br.endpoint)
    assert_status(pb, anon.send_text(to=["a", "b"], broadcast=True, text="x" * 500),
                  "NOT_LOGGED_IN")
    reply = c.send_text(to=["early"], broadcast=True, text="t" * 500, durable=True)
    assert_status(pb, reply, "BAD_REQUEST")
    assert_status(pb, c.send_text(to=["early"], text="t" * 60, message_id="m" * 129,
                                  durable=True), "BAD_REQUEST")
    assert_status(pb, c.send_text(to=["early"], text="t", message_id="m" * 128, durable=True),
                  "NOT_DURABLE")
    assert_serving(hub, br)


def test_send_validation_order(broker, hub, pb):
    """PROTOCOL.md §10.2 with limits small enough to reach every step."""
    br = broker("--max-recipients", 2, "--max-text", 10)
    c = hub.logged_in(br.endpoint, "order")
    # Recipients (counting duplicates) before text size.
    assert_status(pb, c.send_text(to=["order"] * 3, text="x" * 11), "TOO_MANY_RECIPIENTS")
    # Text size before message_id.
    assert_status(pb, c.send_text(to=["order"], text="x" * 11, message_id="m" * 129),
                  "TOO_LARGE")
    # message_id before durable.
    assert_status(pb, c.send_text(to=["order"], text="x", message_id="m" * 129, durable=True),
                  "BAD_REQUEST")
    assert_status(pb, c.send_text(to=["order"], text="x", durable=True), "NOT_DURABLE")
    reply = c.send_text(to=["order", "order"], text="x" * 10, message_id="m" * 128)
    assert_status(pb, reply, "OK")
    assert [(r.name, r.status) for r in reply.recipients] == [("order", pb.STATUS_DELIVERED)]
    assert c.recv_body("deliver").message_id == "m" * 128
    assert_serving(hub, br)


def test_long_agent(broker, hub, pb):
    br = broker()
    c = hub.client(br.endpoint)
    assert_status(pb, c.try_login("agent1", agent="a" * 129), "BAD_REQUEST")
    assert [u.name for u in c.request("who").users] == []
    c.login("agent1", agent="a" * 128)
    assert_serving(hub, br)


def test_heartbeat_with_bad_clock(broker, hub, pb):
    """A Heartbeat is never answered, except when it fails §5 (bad clock)."""
    br = broker()
    c = hub.logged_in(br.endpoint, "beater")
    env = c.request_env(c.envelope("heartbeat", request_id=1201, clock=[("b", 1), ("a", 1)]))
    assert_status(pb, env.reply, "BAD_REQUEST")
    # A good heartbeat gets no reply: the next reply is the who's.
    c.send_env(c.envelope("heartbeat", request_id=1202, clock=[("a", 1)]))
    env = c.request_env(c.envelope("who", request_id=1203))
    assert_status(pb, env.reply, "OK")
    c.assert_none(lambda e: e.WhichOneof("body") == "reply", "heartbeat answered")
    assert_serving(hub, br)


def test_bad_frames_count_as_liveness(broker, hub, pb):
    """§5 step 0 / §9.1: any frame from a session's connection, even one
    that is rejected, keeps the session alive."""
    br = broker()
    watcher = hub.logged_in(br.endpoint, "watcher")
    noisy = hub.client(br.endpoint, auto_heartbeat=False)
    noisy.login("noisy")
    watcher.recv_body("presence", where=lambda p: p.name == "noisy")
    # For three expiry periods, noisy sends only multi-frame garbage, each
    # answered BAD_REQUEST (the answer is the event we wait for).
    end = noisy.last_tx + 3 * 0.6
    rejected = 0
    while noisy.last_tx < end:
        noisy.send_frames([b"junk", b"junk"])
        assert_status(pb, any_reply(noisy).reply, "BAD_REQUEST")
        rejected += 1
        # Pace the garbage at about one frame per 100 ms, keeping others alive.
        hub.wait(0.1)
    assert rejected >= 10
    watcher.assert_none(lambda e: e.WhichOneof("body") == "presence"
                        and e.presence.name == "noisy" and not e.presence.online,
                        "session expired despite incoming frames")
    reply = watcher.send_text(to=["noisy"], text="alive")
    assert [(r.name, r.status) for r in reply.recipients] == [("noisy", pb.STATUS_DELIVERED)]


def _raw_send(rid, to=b"utfb", text=b"hello", message_id=b"", clock=b""):
    """A Send envelope built byte by byte (Python's protobuf refuses to
    encode strings that are not UTF-8)."""
    body = field_bytes(1, to) + field_bytes(3, text)
    if message_id:
        body += field_bytes(5, message_id)
    return field_varint(1, 1) + field_varint(2, rid) + clock + field_bytes(12, body)


def test_invalid_utf8(broker, hub, pb):
    """String fields must be UTF-8 (PROTOCOL.md §3.3). Relayed strings with
    bytes that are not UTF-8 are refused with BAD_REQUEST, so that no
    receiver gets a Deliver its protobuf library cannot parse."""
    br = broker()
    a = hub.logged_in(br.endpoint, "utfa")
    b = hub.logged_in(br.endpoint, "utfb")

    raw_send = _raw_send
    cases = [
        ("text", raw_send(1301, text=b"bad \xff\xfe text")),
        ("text, truncated sequence", raw_send(1302, text=b"caf\xc3")),
        ("text, surrogate", raw_send(1303, text=b"\xed\xa0\x80")),
        ("recipient", raw_send(1304, to=b"utf\xffb")),
        ("message_id", raw_send(1305, message_id=b"id-\xc0\x80")),
    ]
    for what, frame in cases:
        a.send_bytes(frame)
        reply_env = any_reply(a)
        assert reply_env.request_id != 0, what
        assert reply_env.reply.status == pb.STATUS_BAD_REQUEST, (
            f"{what}: got {status_name(pb, reply_env.reply.status)}")
    # The same frame with valid UTF-8 goes through, and is the first thing
    # utfb receives (nothing invalid was relayed).
    a.send_bytes(raw_send(1310, text="caf\u00e9".encode()))
    assert_status(pb, a.recv_reply(1310).reply, "OK")
    assert b.recv_body("deliver").text == "caf\u00e9"
    # Login.agent too.
    c = hub.client(br.endpoint)
    c.send_bytes(field_varint(1, 1) + field_varint(2, 1320)
                 + field_bytes(10, field_bytes(1, b"utfc") + field_bytes(3, b"agent\xff")))
    assert_status(pb, c.recv_reply(1320).reply, "BAD_REQUEST")
    assert_serving(hub, br)


def test_invalid_utf8_clock_node(broker, hub, pb):
    """A clock node is a string too, and the broker copies the clock into
    the Deliver verbatim: a node that is not UTF-8 must be refused, or
    every proto3 receiver (Python here) fails to parse the Deliver."""
    br = broker()
    a = hub.logged_in(br.endpoint, "utfa")
    b = hub.logged_in(br.endpoint, "utfb")
    clock = field_bytes(3, field_bytes(1, b"\xff") + field_varint(2, 1))
    a.send_bytes(_raw_send(1401, clock=clock))
    assert_status(pb, a.recv_reply(1401).reply, "BAD_REQUEST")
    a.send_bytes(_raw_send(1402, text=b"after"))
    assert_status(pb, a.recv_reply(1402).reply, "OK")
    assert b.recv_body("deliver").text == "after"
    assert_serving(hub, br)
