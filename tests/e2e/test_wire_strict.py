"""Frames that a standard protobuf decoder would refuse never get relayed.

PROTOCOL.md §5 lists the encodings the broker refuses (step 3b) with
BAD_REQUEST and the request's own request_id: a field number 0 or above
2^29-1, wire types 3, 4 (groups), 6 and 7, and in every string field a
byte sequence that is not UTF-8 or holds a zero byte, at every nesting
level. Each test sends such a frame, checks the exact reply, checks that
the would-be recipient got nothing (its Python protobuf decoder, the C++
implementation, parses every frame the hub receives), and that the same
frame without the defect goes through.

Also here: BrokerStats counts what its names say (issue 11 item 6):
bad_frames only frames refused by §5 steps 1-7, refused_requests the
error Replies to frames that passed them.
"""

import itertools

from conftest import assert_status, field_bytes, field_key, field_varint, status_name, varint

_names = itertools.count(1)

BIG = (1 << 29) - 1   # the largest field number protobuf allows


def fresh(prefix):
    return f"{prefix}{next(_names)}"


def clock_entry(node=b"wsa", counter=1, extra=b""):
    return field_bytes(1, node) + field_varint(2, counter) + extra


def raw_send(rid, to=(b"wsb",), text=b"hello", message_id=b"", clock=b"", body_extra=b"",
             top_extra=b"", durable=False):
    """A Send envelope built byte by byte; clock is the bytes of one
    ClockEntry (or b"" for none)."""
    body = b"".join(field_bytes(1, t) for t in to) + field_bytes(3, text)
    if durable:
        body += field_varint(4, 1)
    if message_id:
        body += field_bytes(5, message_id)
    body += body_extra
    env = field_varint(1, 1) + field_varint(2, rid)
    if clock:
        env += field_bytes(3, clock)
    return env + top_extra + field_bytes(12, body)


def reply_to(client, rid):
    return client.recv_reply(rid).reply


def pair(hub, br):
    a = hub.logged_in(br.endpoint, fresh("wsa"))
    b = hub.logged_in(br.endpoint, fresh("wsb"))
    return a, b


def assert_refused(a, frame, rid, what):
    a.send_bytes(frame)
    r = reply_to(a, rid)
    assert r.status == a.pb.STATUS_BAD_REQUEST, (
        f"{what}: got {status_name(a.pb, r.status)} ({r.detail!r})")
    assert r.detail
    return r


def assert_nothing_then(a, b, rid, what):
    """a sends a valid message to b: it is the next Deliver b gets."""
    a.send_bytes(raw_send(rid, to=(b.name.encode(),), text=b"after " + what.encode(),
                          clock=clock_entry(a.name.encode())))
    assert_status(a.pb, reply_to(a, rid), "OK")
    d = b.recv_body("deliver")
    assert d.text == "after " + what, f"{what}: b got {d.text!r} first"


# ---------------------------------------------------------------------------
# Item 1: field numbers and wire types, every nesting level

def test_field_number_above_max_refused_at_every_level(broker, hub, pb):
    br = broker()
    a, b = pair(hub, br)
    to = (b.name.encode(),)
    bad = field_varint(BIG + 1, 7)          # field number 2^29
    cases = [
        ("clock entry", dict(clock=clock_entry(a.name.encode(), extra=bad))),
        ("send body", dict(clock=clock_entry(a.name.encode()), body_extra=bad)),
        ("envelope", dict(clock=clock_entry(a.name.encode()), top_extra=bad)),
        ("clock entry, huge", dict(clock=clock_entry(a.name.encode(),
                                                     extra=field_varint((1 << 31) - 1, 1)))),
    ]
    rid = 1000
    for what, kw in cases:
        rid += 1
        r = assert_refused(a, raw_send(rid, to=to, **kw), rid, what)
        assert "field number" in r.detail, r.detail
        rid += 1
        assert_nothing_then(a, b, rid, what)
    # Login and Who bodies, and a heartbeat, too (a heartbeat is answered
    # only when refused).
    c = hub.client(br.endpoint)
    c.send_bytes(field_varint(1, 1) + field_varint(2, 1100)
                 + field_bytes(10, field_bytes(1, fresh("wsc").encode()) + bad))
    assert_status(pb, reply_to(c, 1100), "BAD_REQUEST")
    assert not c.logged_in
    c.send_bytes(field_varint(1, 1) + field_varint(2, 1101) + field_bytes(13, bad))
    assert_status(pb, reply_to(c, 1101), "BAD_REQUEST")
    c.send_bytes(field_varint(1, 1) + field_varint(2, 1102) + field_bytes(18, bad))
    assert_status(pb, reply_to(c, 1102), "BAD_REQUEST")


def test_largest_field_number_is_relayed_and_decodable(broker, hub, pb):
    """2^29-1 is a valid field number: an unknown field with it inside a
    ClockEntry travels on (PROTOCOL.md §11.2: the clock verbatim) and the
    recipient's standard decoder parses the Deliver."""
    br = broker()
    a, b = pair(hub, br)
    extra = field_varint(BIG, 5)
    a.send_bytes(raw_send(1201, to=(b.name.encode(),), text=b"edge",
                          clock=clock_entry(a.name.encode(), extra=extra)))
    assert_status(pb, reply_to(a, 1201), "OK")
    raw, env = b.recv_frame_until(lambda e: e.WhichOneof("body") == "deliver")
    assert env.deliver.text == "edge"
    assert extra in raw          # verbatim
    assert [(e.node, e.counter) for e in env.deliver.clock] == [(a.name, 1)]


def test_field_number_zero_and_bad_wire_types_refused(broker, hub, pb):
    """Refused whether or not protobuf-c can parse them: the ones it cannot
    (§5 step 3) are answered with request_id 0, the one it parses (an
    overlong key for field 0, step 3b) with the request's id."""
    br = broker()
    a, b = pair(hub, br)
    to = (b.name.encode(),)
    me = a.name.encode()
    cases = [
        ("field 0, one-byte key", clock_entry(me, extra=b"\x00\x01"), 0),
        ("field 0, overlong key", clock_entry(me, extra=b"\x80\x00\x01"), None),
        ("wire type 6", clock_entry(me, extra=field_key(100, 6) + b"\x01"), 0),
        ("wire type 7", clock_entry(me, extra=field_key(100, 7) + b"\x01"), 0),
        ("group", clock_entry(me, extra=field_key(100, 3) + field_varint(101, 1)
                              + field_key(100, 4)), 0),
        ("lone end group", clock_entry(me, extra=field_key(100, 4)), 0),
        ("key over 32 bits", clock_entry(me, extra=b"\x80\x80\x80\x80\x80\x01\x01"), 0),
        ("varint over 10 bytes", clock_entry(me, extra=field_key(100, 0) + b"\xff" * 10
                                             + b"\x01"), 0),
    ]
    rid = 1300
    for what, clock, want_rid in cases:
        rid += 1
        a.send_bytes(raw_send(rid, to=to, clock=clock))
        env = a.recv_until(lambda e: e.WhichOneof("body") == "reply", what=what)
        assert env.request_id == (rid if want_rid is None else want_rid), what
        assert_status(pb, env.reply, "BAD_REQUEST")
        rid += 1
        assert_nothing_then(a, b, rid, what)


def test_durable_send_with_bad_tag_is_not_stored(broker, hub, pb, tmp_path):
    """The poisoned-queue report: a durable message with tag 2^29 in a
    ClockEntry was stored and every later Fetch of the recipient failed to
    decode. Now it is refused; the recipient's Fetch is clean."""
    br = broker("--data", tmp_path / "data")
    a = hub.logged_in(br.endpoint, fresh("wsa"))
    b = hub.logged_in(br.endpoint, fresh("wsb"), pull=True)
    bad = clock_entry(a.name.encode(), extra=field_varint(BIG + 1, 1))
    a.send_bytes(raw_send(1401, to=(b.name.encode(),), text=b"poison", clock=bad,
                          durable=True, message_id=b"p1"))
    assert_status(pb, reply_to(a, 1401), "BAD_REQUEST")
    a.send_bytes(raw_send(1402, to=(b.name.encode(),), text=b"fine", durable=True,
                          message_id=b"p2", clock=clock_entry(a.name.encode())))
    assert_status(pb, reply_to(a, 1402), "ACCEPTED")
    fetched = b.request("fetch", pb.Fetch(max=10))   # parsed by the standard decoder
    assert_status(pb, fetched, "OK")
    assert [m.text for m in fetched.messages] == ["fine"]


# ---------------------------------------------------------------------------
# Item 4: zero bytes in strings are refused, never cut

def test_zero_byte_in_send_strings_refused(broker, hub, pb):
    br = broker()
    a, b = pair(hub, br)
    bn = b.name.encode()
    me = a.name.encode()
    cases = [
        ("text", dict(to=(bn,), text=b"innocent\x00 and the rest")),
        ("text, leading", dict(to=(bn,), text=b"\x00")),
        ("recipient", dict(to=(bn + b"\x00x",))),
        ("second recipient", dict(to=(bn, b"zz\x00"))),
        ("message_id", dict(to=(bn,), message_id=b"id\x00tail")),
        ("clock node", dict(to=(bn,), clock=clock_entry(me + b"\x00x"))),
    ]
    rid = 1500
    for what, kw in cases:
        kw.setdefault("clock", clock_entry(me))
        rid += 1
        r = assert_refused(a, raw_send(rid, **kw), rid, what)
        assert "zero byte" in r.detail, r.detail
        rid += 1
        assert_nothing_then(a, b, rid, what)


def test_zero_byte_in_login_and_who_refused(broker, hub, pb):
    br = broker()
    c = hub.client(br.endpoint)
    # "ca\0ol" used to log in as "ca".
    c.send_bytes(field_varint(1, 1) + field_varint(2, 1601)
                 + field_bytes(10, field_bytes(1, b"ca\x00ol")))
    assert_status(pb, reply_to(c, 1601), "BAD_REQUEST")
    c.send_bytes(field_varint(1, 1) + field_varint(2, 1602)
                 + field_bytes(10, field_bytes(1, b"carol") + field_bytes(3, b"agent\x00x")))
    assert_status(pb, reply_to(c, 1602), "BAD_REQUEST")
    c.send_bytes(field_varint(1, 1) + field_varint(2, 1603) + field_bytes(13, field_bytes(1, b"a\x00")))
    assert_status(pb, reply_to(c, 1603), "BAD_REQUEST")
    who = c.request("who")
    assert_status(pb, who, "OK")
    assert [u.name for u in who.users] == [], "a cut name was logged in"
    # The same Login without the zero byte works.
    c.login("carol")


# ---------------------------------------------------------------------------
# Item 6: counters count what their names say

def stats(c):
    r = c.request("stats")
    assert_status(c.pb, r, "OK")
    return r.stats


def test_bad_frames_counts_only_refused_frames(broker, hub, pb):
    br = broker()
    a = hub.logged_in(br.endpoint, fresh("wsa"))
    c = hub.client(br.endpoint)
    s0 = stats(c)
    # Well-formed requests refused: NAME_TAKEN, NOT_LOGGED_IN, UNKNOWN_TYPE
    # is a frame error (§5 step 5), BAD_NAME.
    assert_status(pb, c.try_login(a.name), "NAME_TAKEN")
    assert_status(pb, c.request("logout"), "NOT_LOGGED_IN")
    assert_status(pb, c.try_login("admin"), "BAD_NAME")
    s1 = stats(c)
    assert s1.bad_frames == s0.bad_frames, "NAME_TAKEN & co. counted as bad frames"
    assert s1.refused_requests == s0.refused_requests + 3
    # Frames refused by §5: not protobuf, bad version, no body, a field
    # number above the maximum.
    c.send_bytes(b"\xff\xff")
    c.recv_reply(0)
    c.send_env(c.envelope("who", request_id=1701, version=2))
    assert_status(pb, c.recv_reply(1701).reply, "UNSUPPORTED_VERSION")
    c.send_env(c.envelope(None, request_id=1702))
    assert_status(pb, c.recv_reply(1702).reply, "BAD_REQUEST")
    c.send_bytes(field_varint(1, 1) + field_varint(2, 1703) + field_bytes(13, b"")
                 + field_varint(BIG + 1, 1))
    assert_status(pb, c.recv_reply(1703).reply, "BAD_REQUEST")
    s2 = stats(c)
    assert s2.bad_frames == s1.bad_frames + 4
    assert s2.refused_requests == s1.refused_requests


def test_stored_entry_the_broker_now_refuses_is_damaged(broker, hub, pb, tmp_path):
    """A store written before these checks (schema 1, no checksums) may
    hold what the broker now refuses: here the poisoned-queue report's
    ClockEntry with tag 2^29. Such an entry is served as a damaged Deliver
    (seq kept, nothing else), which the recipient acknowledges; the queue
    goes on, and the broker logs and counts it (PROTOCOL.md §13.11)."""
    import sqlite3

    data = tmp_path / "data"
    br = broker("--data", data)
    b = hub.logged_in(br.endpoint, "wsbob")
    b.logout()
    a = hub.logged_in(br.endpoint, "wsalice")
    marker = field_varint(BIG, 7)             # valid: number 2^29-1
    for i, clock in ((1, clock_entry(b"wsalice", 1, extra=marker)),
                     (2, clock_entry(b"wsalice", 2))):
        a.send_bytes(raw_send(1800 + i, to=(b"wsbob",), text=f"m{i}".encode(), clock=clock,
                              durable=True, message_id=f"m{i}".encode()))
        assert_status(pb, reply_to(a, 1800 + i), "ACCEPTED")
    a.logout()
    rc, killed = br.terminate()
    assert rc == 0 and not killed
    # What an older broker would have stored: the same clock with 2^29, in
    # a schema 1 store (no checksums; migrated, and so vouched for, at open).
    poisoned = field_varint(BIG + 1, 7)
    assert len(poisoned) == len(marker)
    db = sqlite3.connect(str(data / "causeway.db"))
    (clock,) = db.execute("SELECT clock FROM messages WHERE message_id = 'm1'").fetchone()
    assert marker in clock
    db.execute("UPDATE messages SET clock = ? WHERE message_id = 'm1'",
               (clock.replace(marker, poisoned),))
    db.execute("ALTER TABLE messages DROP COLUMN crc")
    db.execute("ALTER TABLE entries DROP COLUMN crc")
    db.execute("UPDATE schema_version SET version = 1")
    db.commit()
    db.close()

    br = broker("--data", data)
    bob = hub.client(br.endpoint)
    bob.login("wsbob")      # every frame bob gets is parsed by the standard decoder
    d1 = bob.recv_body("deliver")
    assert (d1.seq, d1.damaged, d1.text, getattr(d1, "from"), len(d1.clock)) == (1, True, "",
                                                                                 "", 0)
    d2 = bob.recv_body("deliver")
    assert (d2.seq, d2.damaged, d2.text) == (2, False, "m2")
    assert_status(pb, bob.request("ack", pb.Ack(seq=2)), "OK")
    st = bob.request("stats").stats
    assert st.damaged_entries == 1
    log = br.log()
    assert "seq 1 of wsbob's queue is damaged" in log and "now refuses" in log, log[-3000:]
