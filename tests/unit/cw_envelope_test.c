/*  cw_envelope_test: unit tests for common/cw_envelope.c.
 *
 *  Encode/decode round trips of every body type, the decoder's validation
 *  rules in their documented order (size, well-formed, version, body present
 *  and known), unknown-field handling, request-id recovery on errors, and
 *  the zmq helpers (cw_env_to_msg, cw_env_send over inproc sockets, every
 *  receive bounded by ZMQ_RCVTIMEO). Single-threaded.
 */
#define _GNU_SOURCE /* memmem */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cw_envelope.h"
#include "cw_status.h"

#define MAX_FRAME 65536
#define RECV_TIMEOUT_MS 2000

/* ---- helpers ----------------------------------------------------------- */

/* Packs env; caller frees. */
static uint8_t *pack(const cw_env_t *env, size_t *len)
{
    uint8_t *buf = NULL;
    assert_int_equal(cw_env_pack(env, &buf, len), CW_OK);
    assert_non_null(buf);
    assert_int_equal(*len, causeway__v1__envelope__get_packed_size(env));
    return buf;
}

/* Packs env, decodes it, checks the decoder accepted it, and checks that
 * re-packing the decoded envelope gives the same bytes (nothing lost or
 * changed on the way). Caller frees the result with cw_env_free. */
static cw_env_t *round_trip(const cw_env_t *env)
{
    size_t len = 0;
    uint8_t *buf = pack(env, &len);
    cw_env_t *out = (cw_env_t *) 0x1;
    uint64_t rid = 12345;
    const char *detail = NULL;
    int rc = cw_env_decode(buf, len, MAX_FRAME, &out, &rid, &detail);
    if (rc != CW_OK)
        fail_msg("decode failed: %s (%s)", cw_status_name(rc), detail ? detail : "");
    assert_non_null(out);
    assert_int_equal(out->version, CW_PROTOCOL_VERSION);
    assert_int_equal(out->request_id, env->request_id);
    assert_int_equal(out->body_case, env->body_case);
    size_t len2 = 0;
    uint8_t *buf2 = pack(out, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);
    free(buf2);
    free(buf);
    return out;
}

/* Decodes raw bytes expecting failure `want`; checks *out is NULL, a detail
 * is given, and the recovered request id equals want_rid. */
static void expect_decode_error(const void *data, size_t len, size_t max_frame, int want,
                                uint64_t want_rid)
{
    cw_env_t *out = (cw_env_t *) 0x1;
    uint64_t rid = 0xFFFFFFFFu;
    const char *detail = NULL;
    int rc = cw_env_decode(data, len, max_frame, &out, &rid, &detail);
    if (rc != want)
        fail_msg("decode of %zu bytes: expected %s, got %s", len, cw_status_name(want),
                 cw_status_name(rc));
    assert_null(out);
    assert_non_null(detail);
    assert_true(strlen(detail) > 0);
    assert_int_equal(rid, want_rid);
}

/* Appends a protobuf varint; returns bytes written. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    do {
        uint8_t b = v & 0x7f;
        v >>= 7;
        p[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

/* Appends a field key (number, wire type). */
static size_t put_key(uint8_t *p, uint32_t field, uint32_t wire_type)
{
    return put_varint(p, ((uint64_t) field << 3) | wire_type);
}

/* Header of a hand-built frame: version and request_id. */
static size_t put_header(uint8_t *p, uint32_t version, uint64_t rid)
{
    size_t n = 0;
    n += put_key(p + n, 1, 0);
    n += put_varint(p + n, version);
    n += put_key(p + n, 2, 0);
    n += put_varint(p + n, rid);
    return n;
}

/* Appends a login body {name}. */
static size_t put_login(uint8_t *p, const char *name)
{
    size_t n = 0, nl = strlen(name);
    n += put_key(p + n, 10, 2);
    n += put_varint(p + n, nl + 2);
    n += put_key(p + n, 1, 2);
    n += put_varint(p + n, nl);
    memcpy(p + n, name, nl);
    return n + nl;
}

static cw_clock_entry_msg_t e_alice = {PROTOBUF_C_MESSAGE_INIT(&causeway__v1__clock_entry__descriptor),
                                       "alice", 3};
static cw_clock_entry_msg_t e_bob = {PROTOBUF_C_MESSAGE_INIT(&causeway__v1__clock_entry__descriptor),
                                     "bob", 1};
static cw_clock_entry_msg_t e_big = {PROTOBUF_C_MESSAGE_INIT(&causeway__v1__clock_entry__descriptor),
                                     "zed", UINT64_MAX};

static void check_clock(const cw_env_t *out, size_t n, cw_clock_entry_msg_t *const *want,
                        size_t n_clock, cw_clock_entry_msg_t *const *got)
{
    (void) out;
    assert_int_equal(n_clock, n);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(got[i]->node, want[i]->node);
        assert_int_equal(got[i]->counter, want[i]->counter);
    }
}

/* ---- round trips ------------------------------------------------------- */

static void test_init(void **state)
{
    (void) state;
    cw_env_t env;
    memset(&env, 0xab, sizeof env);
    cw_env_init(&env, 77);
    assert_int_equal(env.version, 1);
    assert_int_equal(env.request_id, 77);
    assert_int_equal(env.n_clock, 0);
    assert_int_equal(env.body_case, CW_BODY(_NOT_SET));
    assert_string_equal(cw_env_body_name(&env), "none");
}

static void test_round_trip_login(void **state)
{
    (void) state;
    uint8_t token[16];
    for (int i = 0; i < 16; i++)
        token[i] = (uint8_t) (i * 17);
    Causeway__V1__Login login = CAUSEWAY__V1__LOGIN__INIT;
    login.name = "alice";
    login.resume_token.data = token;
    login.resume_token.len = sizeof token;
    login.agent = "cw-test/1";
    login.quiet = 1;
    cw_env_t env;
    cw_env_init(&env, 1);
    env.body_case = CW_BODY(LOGIN);
    env.login = &login;
    cw_clock_entry_msg_t *clock[] = {&e_alice, &e_bob};
    env.n_clock = 2;
    env.clock = clock;

    cw_env_t *out = round_trip(&env);
    assert_string_equal(cw_env_body_name(out), "login");
    assert_string_equal(out->login->name, "alice");
    assert_int_equal(out->login->resume_token.len, 16);
    assert_memory_equal(out->login->resume_token.data, token, 16);
    assert_string_equal(out->login->agent, "cw-test/1");
    assert_true(out->login->quiet);
    check_clock(out, 2, clock, out->n_clock, out->clock);
    cw_env_free(&out);
    assert_null(out);
}

/* Bodies without fields: logout, who, stats, heartbeat. */
static void test_round_trip_empty_bodies(void **state)
{
    (void) state;
    Causeway__V1__Logout logout = CAUSEWAY__V1__LOGOUT__INIT;
    Causeway__V1__Who who = CAUSEWAY__V1__WHO__INIT;
    Causeway__V1__Stats stats = CAUSEWAY__V1__STATS__INIT;
    Causeway__V1__Heartbeat hb = CAUSEWAY__V1__HEARTBEAT__INIT;
    struct {
        int body;
        void *msg;
        const char *name;
    } cases[] = {
        {CW_BODY(LOGOUT), &logout, "logout"},
        {CW_BODY(WHO), &who, "who"},
        {CW_BODY(STATS), &stats, "stats"},
        {CW_BODY(HEARTBEAT), &hb, "heartbeat"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cw_env_t env;
        cw_env_init(&env, 1000 + i);
        env.body_case = cases[i].body;
        env.login = cases[i].msg;   /* any union member: they alias */
        cw_env_t *out = round_trip(&env);
        assert_string_equal(cw_env_body_name(out), cases[i].name);
        assert_non_null(out->login);
        cw_env_free(&out);
    }
}

static void test_round_trip_send(void **state)
{
    (void) state;
    char *to[] = {"bob", "carl", "dora"};
    Causeway__V1__Send send = CAUSEWAY__V1__SEND__INIT;
    send.n_to = 3;
    send.to = to;
    send.text = "hello, w\xc3\xb6rld";
    send.durable = 1;
    send.message_id = "m-42";
    send.ttl_s = 3600;
    cw_env_t env;
    cw_env_init(&env, UINT64_MAX);
    env.body_case = CW_BODY(SEND);
    env.send = &send;
    cw_clock_entry_msg_t *clock[] = {&e_alice, &e_bob, &e_big};
    env.n_clock = 3;
    env.clock = clock;

    cw_env_t *out = round_trip(&env);
    assert_int_equal(out->request_id, UINT64_MAX);
    assert_string_equal(cw_env_body_name(out), "send");
    assert_int_equal(out->send->n_to, 3);
    for (int i = 0; i < 3; i++)
        assert_string_equal(out->send->to[i], to[i]);
    assert_false(out->send->broadcast);
    assert_string_equal(out->send->text, "hello, w\xc3\xb6rld");
    assert_true(out->send->durable);
    assert_string_equal(out->send->message_id, "m-42");
    assert_int_equal(out->send->ttl_s, 3600);
    check_clock(out, 3, clock, out->n_clock, out->clock);
    cw_env_free(&out);

    /* Broadcast, no recipients. */
    Causeway__V1__Send bc = CAUSEWAY__V1__SEND__INIT;
    bc.broadcast = 1;
    bc.text = "to all";
    env.send = &bc;
    env.n_clock = 0;
    out = round_trip(&env);
    assert_true(out->send->broadcast);
    assert_int_equal(out->send->n_to, 0);
    assert_string_equal(out->send->text, "to all");
    cw_env_free(&out);
}

static void test_round_trip_ack_fetch_history(void **state)
{
    (void) state;
    Causeway__V1__Ack ack = CAUSEWAY__V1__ACK__INIT;
    ack.seq = 1ull << 40;
    Causeway__V1__Fetch fetch = CAUSEWAY__V1__FETCH__INIT;
    fetch.max = 100;
    Causeway__V1__History hist = CAUSEWAY__V1__HISTORY__INIT;
    hist.last = 7;
    cw_env_t env;

    cw_env_init(&env, 5);
    env.body_case = CW_BODY(ACK);
    env.ack = &ack;
    cw_env_t *out = round_trip(&env);
    assert_string_equal(cw_env_body_name(out), "ack");
    assert_int_equal(out->ack->seq, 1ull << 40);
    cw_env_free(&out);

    cw_env_init(&env, 6);
    env.body_case = CW_BODY(FETCH);
    env.fetch = &fetch;
    out = round_trip(&env);
    assert_string_equal(cw_env_body_name(out), "fetch");
    assert_int_equal(out->fetch->max, 100);
    cw_env_free(&out);

    cw_env_init(&env, 7);
    env.body_case = CW_BODY(HISTORY);
    env.history = &hist;
    out = round_trip(&env);
    assert_string_equal(cw_env_body_name(out), "history");
    assert_int_equal(out->history->last, 7);
    cw_env_free(&out);
}

static void test_round_trip_deliver(void **state)
{
    (void) state;
    char *to[] = {"bob", "carl"};
    cw_clock_entry_msg_t *clock[] = {&e_alice, &e_bob};
    Causeway__V1__Deliver d = CAUSEWAY__V1__DELIVER__INIT;
    d.from = "alice";
    d.n_to = 2;
    d.to = to;
    d.text = "hi";
    d.timestamp_us = 1700000000123456ull;
    d.seq = 99;
    d.message_id = "id-1";
    d.durable = 1;
    d.n_clock = 2;
    d.clock = clock;
    d.redelivered = 1;
    cw_env_t env;
    cw_env_init(&env, 0);
    env.body_case = CW_BODY(DELIVER);
    env.deliver = &d;

    cw_env_t *out = round_trip(&env);
    assert_string_equal(cw_env_body_name(out), "deliver");
    Causeway__V1__Deliver *o = out->deliver;
    assert_string_equal(o->from, "alice");
    assert_int_equal(o->n_to, 2);
    assert_string_equal(o->to[0], "bob");
    assert_string_equal(o->to[1], "carl");
    assert_false(o->broadcast);
    assert_string_equal(o->text, "hi");
    assert_int_equal(o->timestamp_us, 1700000000123456ull);
    assert_int_equal(o->seq, 99);
    assert_string_equal(o->message_id, "id-1");
    assert_true(o->durable);
    assert_true(o->redelivered);
    check_clock(out, 2, clock, o->n_clock, o->clock);
    assert_int_equal(out->n_clock, 0);
    cw_env_free(&out);
}

static void test_round_trip_presence(void **state)
{
    (void) state;
    Causeway__V1__Presence p = CAUSEWAY__V1__PRESENCE__INIT;
    p.name = "bob";
    p.online = 0;
    p.reason = CAUSEWAY__V1__PRESENCE__REASON__REASON_EXPIRED;
    p.timestamp_us = 42;
    cw_env_t env;
    cw_env_init(&env, 0);
    env.body_case = CW_BODY(PRESENCE);
    env.presence = &p;
    cw_env_t *out = round_trip(&env);
    assert_string_equal(cw_env_body_name(out), "presence");
    assert_string_equal(out->presence->name, "bob");
    assert_false(out->presence->online);
    assert_int_equal(out->presence->reason, CAUSEWAY__V1__PRESENCE__REASON__REASON_EXPIRED);
    assert_int_equal(out->presence->timestamp_us, 42);
    cw_env_free(&out);
}

static void test_round_trip_reply(void **state)
{
    (void) state;
    Causeway__V1__RecipientStatus r1 = CAUSEWAY__V1__RECIPIENT_STATUS__INIT;
    r1.name = "bob";
    r1.status = CAUSEWAY__V1__STATUS__STATUS_DELIVERED;
    Causeway__V1__RecipientStatus r2 = CAUSEWAY__V1__RECIPIENT_STATUS__INIT;
    r2.name = "zoe";
    r2.status = CAUSEWAY__V1__STATUS__STATUS_UNKNOWN_USER;
    r2.seq = 3;
    Causeway__V1__RecipientStatus *rcpts[] = {&r1, &r2};
    Causeway__V1__UserInfo u1 = CAUSEWAY__V1__USER_INFO__INIT;
    u1.name = "alice";
    u1.online = 1;
    u1.last_seen_us = 11;
    Causeway__V1__UserInfo *users[] = {&u1};
    uint8_t tok[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    Causeway__V1__LoginInfo li = CAUSEWAY__V1__LOGIN_INFO__INIT;
    li.broker_version = "0.1.0";
    li.heartbeat_ms = 1000;
    li.liveness = 3;
    li.max_frame = 65536;
    li.max_recipients = 1000;
    li.max_text = 60000;
    li.resume_token.data = tok;
    li.resume_token.len = 16;
    li.durable = 1;
    Causeway__V1__BrokerStats st = CAUSEWAY__V1__BROKER_STATS__INIT;
    st.uptime_ms = 1;
    st.sessions = 2;
    st.known_users = 3;
    st.frames_in = 4;
    st.frames_out = 5;
    st.messages_routed = 6;
    st.deliveries = 7;
    st.bad_frames = 8;
    st.expired_sessions = 9;
    st.stored_messages = 10;
    st.fsyncs = 11;
    Causeway__V1__Deliver m = CAUSEWAY__V1__DELIVER__INIT;
    m.from = "carl";
    m.text = "queued";
    m.seq = 5;
    Causeway__V1__Deliver *msgs[] = {&m};
    Causeway__V1__Reply r = CAUSEWAY__V1__REPLY__INIT;
    r.status = CAUSEWAY__V1__STATUS__STATUS_NAME_TAKEN;
    r.detail = "name is held by a live session";
    r.n_recipients = 2;
    r.recipients = rcpts;
    r.n_users = 1;
    r.users = users;
    r.login = &li;
    r.stats = &st;
    r.n_messages = 1;
    r.messages = msgs;
    r.duplicate = 1;
    cw_env_t env;
    cw_env_init(&env, 31337);
    env.body_case = CW_BODY(REPLY);
    env.reply = &r;

    cw_env_t *out = round_trip(&env);
    assert_string_equal(cw_env_body_name(out), "reply");
    Causeway__V1__Reply *o = out->reply;
    assert_int_equal(o->status, CW_NAME_TAKEN);
    assert_string_equal(o->detail, r.detail);
    assert_int_equal(o->n_recipients, 2);
    assert_string_equal(o->recipients[0]->name, "bob");
    assert_int_equal(o->recipients[0]->status, CW_DELIVERED);
    assert_string_equal(o->recipients[1]->name, "zoe");
    assert_int_equal(o->recipients[1]->status, CW_UNKNOWN_USER);
    assert_int_equal(o->recipients[1]->seq, 3);
    assert_int_equal(o->n_users, 1);
    assert_string_equal(o->users[0]->name, "alice");
    assert_true(o->users[0]->online);
    assert_int_equal(o->users[0]->last_seen_us, 11);
    assert_non_null(o->login);
    assert_string_equal(o->login->broker_version, "0.1.0");
    assert_int_equal(o->login->heartbeat_ms, 1000);
    assert_int_equal(o->login->liveness, 3);
    assert_int_equal(o->login->max_frame, 65536);
    assert_int_equal(o->login->max_recipients, 1000);
    assert_int_equal(o->login->max_text, 60000);
    assert_int_equal(o->login->resume_token.len, 16);
    assert_memory_equal(o->login->resume_token.data, tok, 16);
    assert_true(o->login->durable);
    assert_non_null(o->stats);
    assert_int_equal(o->stats->uptime_ms, 1);
    assert_int_equal(o->stats->fsyncs, 11);
    assert_int_equal(o->stats->bad_frames, 8);
    assert_int_equal(o->n_messages, 1);
    assert_string_equal(o->messages[0]->from, "carl");
    assert_int_equal(o->messages[0]->seq, 5);
    assert_true(o->duplicate);
    cw_env_free(&out);
}

static void test_body_names(void **state)
{
    (void) state;
    struct {
        int body;
        const char *name;
    } names[] = {
        {CW_BODY(LOGIN), "login"}, {CW_BODY(LOGOUT), "logout"}, {CW_BODY(SEND), "send"},
        {CW_BODY(WHO), "who"}, {CW_BODY(STATS), "stats"}, {CW_BODY(ACK), "ack"},
        {CW_BODY(FETCH), "fetch"}, {CW_BODY(HISTORY), "history"},
        {CW_BODY(HEARTBEAT), "heartbeat"}, {CW_BODY(DELIVER), "deliver"},
        {CW_BODY(PRESENCE), "presence"}, {CW_BODY(REPLY), "reply"},
        {CW_BODY(_NOT_SET), "none"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        cw_env_t env;
        cw_env_init(&env, 0);
        env.body_case = names[i].body;
        assert_string_equal(cw_env_body_name(&env), names[i].name);
    }
    /* Every body field of the descriptor has a name. */
    const ProtobufCMessageDescriptor *d = &causeway__v1__envelope__descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        if (d->fields[i].id < 10)
            continue;
        cw_env_t env;
        cw_env_init(&env, 0);
        env.body_case = d->fields[i].id;
        assert_string_equal(cw_env_body_name(&env), d->fields[i].name);
    }
}

/* ---- decode errors ----------------------------------------------------- */

static void test_too_large(void **state)
{
    (void) state;
    Causeway__V1__Send send = CAUSEWAY__V1__SEND__INIT;
    char text[200];
    memset(text, 'x', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    send.broadcast = 1;
    send.text = text;
    cw_env_t env;
    cw_env_init(&env, 9);
    env.body_case = CW_BODY(SEND);
    env.send = &send;
    size_t len = 0;
    uint8_t *buf = pack(&env, &len);

    /* Exactly at the limit: accepted. */
    cw_env_t *out = NULL;
    const char *detail = NULL;
    assert_int_equal(cw_env_decode(buf, len, len, &out, NULL, &detail), CW_OK);
    assert_non_null(out);
    cw_env_free(&out);
    /* One byte over: refused before parsing, so no request id. */
    expect_decode_error(buf, len, len - 1, CW_TOO_LARGE, 0);
    expect_decode_error(buf, len, 0, CW_TOO_LARGE, 0);
    free(buf);

    /* Size is checked first: oversized garbage is TOO_LARGE. */
    uint8_t junk[64];
    memset(junk, 0xff, sizeof junk);
    expect_decode_error(junk, sizeof junk, 10, CW_TOO_LARGE, 0);
}

static void test_garbage(void **state)
{
    (void) state;
    static const uint8_t g1[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t g2[] = {0x0f};                   /* field 1, wire type 7 */
    static const uint8_t g3[] = {0x08};                   /* key without value */
    static const uint8_t g4[] = {0x00, 0x01};             /* field number 0 */
    static const uint8_t g5[] = {0x52, 0x10, 0x0a};       /* login length 16, 1 byte */
    static const uint8_t g6[] = {0x08, 0x01, 0x52, 0x05}; /* login length beyond end */
    static const char g7[] = "GET / HTTP/1.1\r\n\r\n";
    expect_decode_error(g1, sizeof g1, MAX_FRAME, CW_BAD_REQUEST, 0);
    expect_decode_error(g2, sizeof g2, MAX_FRAME, CW_BAD_REQUEST, 0);
    expect_decode_error(g3, sizeof g3, MAX_FRAME, CW_BAD_REQUEST, 0);
    expect_decode_error(g4, sizeof g4, MAX_FRAME, CW_BAD_REQUEST, 0);
    expect_decode_error(g5, sizeof g5, MAX_FRAME, CW_BAD_REQUEST, 0);
    expect_decode_error(g6, sizeof g6, MAX_FRAME, CW_BAD_REQUEST, 0);
    expect_decode_error(g7, sizeof g7 - 1, MAX_FRAME, CW_BAD_REQUEST, 0);
}

/* A known body field with the wrong wire type is malformed. */
static void test_wrong_wire_type(void **state)
{
    (void) state;
    uint8_t buf[32];
    size_t n = put_header(buf, 1, 8);
    n += put_key(buf + n, 10, 0);   /* login as a varint */
    n += put_varint(buf + n, 1);
    expect_decode_error(buf, n, MAX_FRAME, CW_BAD_REQUEST, 0);
}

/* Every strict prefix of a valid frame is refused: BAD_REQUEST (either
 * malformed or missing its body); the empty prefix has version 0. */
static void test_truncated(void **state)
{
    (void) state;
    char *to[] = {"bob"};
    cw_clock_entry_msg_t *clock[] = {&e_alice, &e_bob};
    Causeway__V1__Send send = CAUSEWAY__V1__SEND__INIT;
    send.n_to = 1;
    send.to = to;
    send.text = "truncate me";
    send.message_id = "m1";
    cw_env_t env;
    cw_env_init(&env, 300);
    env.n_clock = 2;
    env.clock = clock;
    env.body_case = CW_BODY(SEND);
    env.send = &send;
    size_t len = 0;
    uint8_t *buf = pack(&env, &len);
    assert_true(len > 20);
    for (size_t cut = 1; cut < len; cut++) {
        cw_env_t *out = (cw_env_t *) 0x1;
        uint64_t rid = 1;
        const char *detail = NULL;
        int rc = cw_env_decode(buf, cut, MAX_FRAME, &out, &rid, &detail);
        if (rc != CW_BAD_REQUEST)
            fail_msg("prefix of %zu/%zu bytes: expected BAD_REQUEST, got %s", cut, len,
                     cw_status_name(rc));
        assert_null(out);
        assert_non_null(detail);
        /* Either undecodable (id 0) or decoded without a body (id known). */
        assert_true(rid == 0 || rid == 300);
    }
    free(buf);
}

static void test_empty_frame(void **state)
{
    (void) state;
    /* An empty frame is a well-formed Envelope with version 0. */
    expect_decode_error("", 0, MAX_FRAME, CW_UNSUPPORTED_VERSION, 0);
}

static void test_bad_version(void **state)
{
    (void) state;
    uint32_t versions[] = {0, 2, 3, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        Causeway__V1__Who who = CAUSEWAY__V1__WHO__INIT;
        cw_env_t env;
        cw_env_init(&env, 0xDEADBEEF12345ull);
        env.version = versions[i];
        env.body_case = CW_BODY(WHO);
        env.who = &who;
        size_t len = 0;
        uint8_t *buf = pack(&env, &len);
        expect_decode_error(buf, len, MAX_FRAME, CW_UNSUPPORTED_VERSION, 0xDEADBEEF12345ull);
        free(buf);
    }
    /* Version is checked before the body: version 2 with no body. */
    uint8_t buf[32];
    size_t n = put_header(buf, 2, 4);
    expect_decode_error(buf, n, MAX_FRAME, CW_UNSUPPORTED_VERSION, 4);
}

static void test_no_body(void **state)
{
    (void) state;
    cw_env_t env;
    cw_env_init(&env, 555);
    cw_clock_entry_msg_t *clock[] = {&e_alice};
    env.n_clock = 1;
    env.clock = clock;
    size_t len = 0;
    uint8_t *buf = pack(&env, &len);
    expect_decode_error(buf, len, MAX_FRAME, CW_BAD_REQUEST, 555);
    free(buf);
}

/* Unknown fields in the body range are message types we do not know. */
static void test_unknown_body_field(void **state)
{
    (void) state;
    const uint32_t fields[] = {27, 28, 29, 36, 50, 1000, 536870911};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        uint8_t buf[64];
        size_t n = put_header(buf, 1, 4242 + i);
        n += put_key(buf + n, fields[i], 2);    /* an empty message */
        n += put_varint(buf + n, 0);
        expect_decode_error(buf, n, MAX_FRAME, CW_UNKNOWN_TYPE, 4242 + i);
    }
    /* A non-empty unknown message, and other wire types. */
    uint8_t buf[64];
    size_t n = put_header(buf, 1, 1);
    n += put_key(buf + n, 50, 2);
    n += put_varint(buf + n, 3);
    n += put_key(buf + n, 1, 0);
    n += put_varint(buf + n, 300);
    expect_decode_error(buf, n, MAX_FRAME, CW_UNKNOWN_TYPE, 1);
    n = put_header(buf, 1, 2);
    n += put_key(buf + n, 25, 0);
    n += put_varint(buf + n, 1);
    expect_decode_error(buf, n, MAX_FRAME, CW_UNKNOWN_TYPE, 2);
    n = put_header(buf, 1, 3);
    n += put_key(buf + n, 40, 1);
    memset(buf + n, 0, 8);
    n += 8;
    expect_decode_error(buf, n, MAX_FRAME, CW_UNKNOWN_TYPE, 3);
}

/* Unknown fields outside the body range are ignored. */
static void test_unknown_non_body_field(void **state)
{
    (void) state;
    uint8_t buf[128];
    size_t n = put_header(buf, 1, 77);
    n += put_key(buf + n, 4, 0);         /* unknown varint */
    n += put_varint(buf + n, 123456);
    n += put_key(buf + n, 9, 2);         /* unknown bytes */
    n += put_varint(buf + n, 3);
    memcpy(buf + n, "xyz", 3);
    n += 3;
    n += put_key(buf + n, 7, 5);         /* unknown fixed32 */
    memset(buf + n, 0x11, 4);
    n += 4;
    n += put_login(buf + n, "alice");
    cw_env_t *out = NULL;
    uint64_t rid = 0;
    const char *detail = NULL;
    int rc = cw_env_decode(buf, n, MAX_FRAME, &out, &rid, &detail);
    assert_int_equal(rc, CW_OK);
    assert_non_null(out);
    assert_int_equal(out->request_id, 77);
    assert_int_equal(out->body_case, CW_BODY(LOGIN));
    assert_string_equal(out->login->name, "alice");
    cw_env_free(&out);

    /* An unknown field inside a known body is ignored too. */
    n = put_header(buf, 1, 78);
    size_t at = n;
    n += put_login(buf + n, "bob");
    buf[at + 1] += 2;                    /* grow the login body by 2 bytes */
    n += put_key(buf + n, 9, 0);
    n += put_varint(buf + n, 1);
    rc = cw_env_decode(buf, n, MAX_FRAME, &out, &rid, &detail);
    assert_int_equal(rc, CW_OK);
    assert_string_equal(out->login->name, "bob");
    cw_env_free(&out);

    /* Without a body, an unknown non-body field is still "no body". */
    n = put_header(buf, 1, 79);
    n += put_key(buf + n, 5, 0);
    n += put_varint(buf + n, 1);
    expect_decode_error(buf, n, MAX_FRAME, CW_BAD_REQUEST, 79);

    /* An unknown body-range field next to a known body: the body wins. */
    n = put_header(buf, 1, 80);
    n += put_key(buf + n, 50, 2);
    n += put_varint(buf + n, 0);
    n += put_login(buf + n, "carl");
    rc = cw_env_decode(buf, n, MAX_FRAME, &out, &rid, &detail);
    assert_int_equal(rc, CW_OK);
    assert_string_equal(out->login->name, "carl");
    cw_env_free(&out);
}

/* ---- encoding rules (cw_wire_check, PROTOCOL.md §5 step 3b) ---------- */

/* A Who envelope with request id 9 whose ClockEntry {node "a", counter 1}
 * ends with the extra bytes; decoded with cw_env_decode. */
static int decode_with_clock_extra(const uint8_t *extra, size_t n, uint64_t *rid,
                                   const char **detail)
{
    uint8_t buf[64];
    size_t len = 0;
    const uint8_t head[] = {0x08, 0x01, 0x10, 0x09, 0x1a};
    memcpy(buf, head, sizeof head);
    len = sizeof head;
    buf[len++] = (uint8_t) (5 + n);
    const uint8_t entry[] = {0x0a, 0x01, 'a', 0x10, 0x01};
    memcpy(buf + len, entry, sizeof entry);
    len += sizeof entry;
    memcpy(buf + len, extra, n);
    len += n;
    buf[len++] = 0x6a; /* Who, field 13 */
    buf[len++] = 0x00;
    cw_env_t *env = NULL;
    int rc = cw_env_decode(buf, len, MAX_FRAME, &env, rid, detail);
    cw_env_free(&env);
    return rc;
}

static void test_field_numbers(void **state)
{
    (void) state;
    uint64_t rid = 0;
    const char *detail = NULL;
    /* 2^29-1 (key 0xf8 ff ff ff 0f, varint): the largest valid number. */
    const uint8_t max_ok[] = {0xf8, 0xff, 0xff, 0xff, 0x0f, 0x05};
    assert_int_equal(decode_with_clock_extra(max_ok, sizeof max_ok, &rid, &detail), CW_OK);
    /* 2^29: accepted by protobuf-c, refused by every standard decoder. */
    const uint8_t over[] = {0x80, 0x80, 0x80, 0x80, 0x10, 0x05};
    assert_int_equal(decode_with_clock_extra(over, sizeof over, &rid, &detail), CW_BAD_REQUEST);
    assert_int_equal(rid, 9); /* parsed: the request id is known */
    assert_non_null(strstr(detail, "2^29-1"));
    /* 0 in an overlong key (protobuf-c keeps it as an unknown field). */
    const uint8_t zero[] = {0x80, 0x00, 0x05};
    assert_int_equal(decode_with_clock_extra(zero, sizeof zero, &rid, &detail), CW_BAD_REQUEST);
    assert_non_null(strstr(detail, "is 0"));
    /* Unknown fields of every valid wire type pass. */
    const uint8_t fine[] = {0xa0, 0x06, 0x01,                         /* 100 varint */
                            0xa1, 0x06, 1, 2, 3, 4, 5, 6, 7, 8,       /* 100 fixed64 */
                            0xa2, 0x06, 0x02, 0xff, 0x00,             /* 100 bytes: opaque */
                            0xa5, 0x06, 1, 2, 3, 4};                  /* 100 fixed32 */
    assert_int_equal(decode_with_clock_extra(fine, sizeof fine, &rid, &detail), CW_OK);
}

static void test_wire_check_direct(void **state)
{
    (void) state;
    const ProtobufCMessageDescriptor *ce = &causeway__v1__clock_entry__descriptor;
    const char *why = NULL;
    const uint8_t ok[] = {0x0a, 0x01, 'a', 0x10, 0x01};
    assert_int_equal(cw_wire_check(ce, ok, sizeof ok, &why), CW_OK);
    assert_int_equal(cw_wire_check(ce, ok, 0, NULL), CW_OK);
    const uint8_t group[] = {0xa3, 0x06, 0xa4, 0x06};
    assert_int_equal(cw_wire_check(ce, group, sizeof group, &why), CW_BAD_REQUEST);
    assert_non_null(strstr(why, "groups"));
    const uint8_t wt6[] = {0xa6, 0x06, 0x01};
    assert_int_equal(cw_wire_check(ce, wt6, sizeof wt6, &why), CW_BAD_REQUEST);
    const uint8_t cut_fixed[] = {0xa1, 0x06, 1, 2, 3};
    assert_int_equal(cw_wire_check(ce, cut_fixed, sizeof cut_fixed, &why), CW_BAD_REQUEST);
    const uint8_t cut_len[] = {0x0a, 0x05, 'a'};
    assert_int_equal(cw_wire_check(ce, cut_len, sizeof cut_len, &why), CW_BAD_REQUEST);
    const uint8_t long_varint[] = {0x10, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(cw_wire_check(ce, long_varint, sizeof long_varint, &why), CW_BAD_REQUEST);
    const uint8_t key_32[] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x01, 0x01};
    assert_int_equal(cw_wire_check(ce, key_32, sizeof key_32, &why), CW_BAD_REQUEST);
    /* A known string with a zero byte, or not UTF-8. */
    const uint8_t nul[] = {0x0a, 0x03, 'a', 0x00, 'b'};
    assert_int_equal(cw_wire_check(ce, nul, sizeof nul, &why), CW_BAD_REQUEST);
    assert_non_null(strstr(why, "zero byte"));
    const uint8_t bad_utf8[] = {0x0a, 0x02, 0xc0, 0x80};
    assert_int_equal(cw_wire_check(ce, bad_utf8, sizeof bad_utf8, &why), CW_BAD_REQUEST);
    assert_non_null(strstr(why, "UTF-8"));
}

/* Every nesting level is checked: a zero byte in the text of a Deliver
 * inside a Reply (Envelope > Reply > Deliver > text), and a bad field
 * number in a ClockEntry of that Deliver. */
static void test_nested_levels(void **state)
{
    (void) state;
    cw_env_t env;
    Causeway__V1__Reply reply;
    Causeway__V1__Deliver d, *dp = &d;
    Causeway__V1__ClockEntry ce, *cep = &ce;
    cw_env_init(&env, 77);
    causeway__v1__reply__init(&reply);
    causeway__v1__deliver__init(&d);
    causeway__v1__clock_entry__init(&ce);
    ce.node = "a";
    ce.counter = 1;
    d.text = "TEXT";
    d.n_clock = 1;
    d.clock = &cep;
    reply.n_messages = 1;
    reply.messages = &dp;
    env.body_case = CW_BODY(REPLY);
    env.reply = &reply;
    size_t len = 0;
    uint8_t *buf = pack(&env, &len);
    cw_env_t *out = NULL;
    uint64_t rid = 0;
    const char *detail = NULL;
    assert_int_equal(cw_env_decode(buf, len, MAX_FRAME, &out, &rid, &detail), CW_OK);
    cw_env_free(&out);
    uint8_t *t = memmem(buf, len, "TEXT", 4);
    assert_non_null(t);
    t[1] = 0;
    assert_int_equal(cw_env_decode(buf, len, MAX_FRAME, &out, &rid, &detail), CW_BAD_REQUEST);
    assert_null(out);
    assert_int_equal(rid, 77);
    assert_non_null(strstr(detail, "zero byte"));
    t[1] = 'E';
    /* The node key 0x0a (field 1, bytes) becomes field 1 with an overlong
     * key is not expressible in place; instead turn the counter's key
     * (0x10: field 2, varint) into field 0 (0x00), which protobuf-c itself
     * refuses: rid 0. */
    uint8_t *node = memmem(buf, len, "\x0a\x01" "a\x10\x01", 5);
    assert_non_null(node);
    node[3] = 0x00;
    assert_int_equal(cw_env_decode(buf, len, MAX_FRAME, &out, &rid, &detail), CW_BAD_REQUEST);
    assert_int_equal(rid, 0);
    free(buf);
}

static void test_request_id_optional_and_free_twice(void **state)
{
    (void) state;
    Causeway__V1__Who who = CAUSEWAY__V1__WHO__INIT;
    cw_env_t env;
    cw_env_init(&env, 3);
    env.body_case = CW_BODY(WHO);
    env.who = &who;
    size_t len = 0;
    uint8_t *buf = pack(&env, &len);
    cw_env_t *out = NULL;
    const char *detail = NULL;
    assert_int_equal(cw_env_decode(buf, len, MAX_FRAME, &out, NULL, &detail), CW_OK);
    assert_non_null(out);
    cw_env_free(&out);
    assert_null(out);
    cw_env_free(&out);           /* safe twice */
    cw_env_free(NULL);           /* and on NULL */
    env.version = 2;
    free(buf);
    buf = pack(&env, &len);
    assert_int_equal(cw_env_decode(buf, len, MAX_FRAME, &out, NULL, &detail),
                     CW_UNSUPPORTED_VERSION);
    assert_null(out);
    free(buf);
}

/* Random byte strings never crash the decoder, and whatever it accepts
 * has a body and version 1. Seeded: reproducible. */
static void test_random_bytes(void **state)
{
    (void) state;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    uint8_t buf[64];
    int accepted = 0;
    for (int iter = 0; iter < 20000; iter++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t len = x % sizeof buf;
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[i] = (uint8_t) x;
        }
        cw_env_t *out = NULL;
        uint64_t rid = 0;
        const char *detail = NULL;
        int rc = cw_env_decode(buf, len, MAX_FRAME, &out, &rid, &detail);
        if (rc == CW_OK) {
            accepted++;
            assert_non_null(out);
            assert_int_equal(out->version, 1);
            assert_int_not_equal(out->body_case, CW_BODY(_NOT_SET));
            cw_env_free(&out);
        } else {
            assert_null(out);
            assert_true(rc == CW_BAD_REQUEST || rc == CW_UNSUPPORTED_VERSION ||
                        rc == CW_UNKNOWN_TYPE);
        }
    }
    (void) accepted;
}

/* ---- zmq helpers ------------------------------------------------------- */

static void test_to_msg(void **state)
{
    (void) state;
    Causeway__V1__Login login = CAUSEWAY__V1__LOGIN__INIT;
    login.name = "zmqer";
    cw_env_t env;
    cw_env_init(&env, 64);
    env.body_case = CW_BODY(LOGIN);
    env.login = &login;
    zmq_msg_t msg;
    assert_int_equal(cw_env_to_msg(&env, &msg), CW_OK);
    size_t len = 0;
    uint8_t *buf = pack(&env, &len);
    assert_int_equal(zmq_msg_size(&msg), len);
    assert_memory_equal(zmq_msg_data(&msg), buf, len);
    cw_env_t *out = NULL;
    const char *detail = NULL;
    assert_int_equal(
        cw_env_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), MAX_FRAME, &out, NULL, &detail),
        CW_OK);
    assert_string_equal(out->login->name, "zmqer");
    cw_env_free(&out);
    zmq_msg_close(&msg);
    free(buf);
}

/* cw_env_to_msg writes the header of clock-less envelopes by hand: the
 * bytes must be protobuf-c's, for every body, request id, after_seq and
 * version, and with a clock or unknown fields (the generic path). */
static void expect_same_as_protobuf_c(const cw_env_t *env)
{
    zmq_msg_t msg;
    assert_int_equal(cw_env_to_msg(env, &msg), CW_OK);
    size_t len = 0;
    uint8_t *buf = pack(env, &len);
    assert_int_equal(zmq_msg_size(&msg), len);
    assert_memory_equal(zmq_msg_data(&msg), buf, len);
    zmq_msg_close(&msg);
    free(buf);
}

static void test_to_msg_matches_protobuf_c(void **state)
{
    (void) state;
    static const uint64_t ids[] = {0, 1, 127, 128, 64, 1ull << 40, UINT64_MAX};
    char *to[] = {"bob", "carl"};
    cw_clock_entry_msg_t *clock[] = {&e_alice, &e_bob};
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    Causeway__V1__Deliver d = CAUSEWAY__V1__DELIVER__INIT;
    d.from = "alice";
    d.n_to = 2;
    d.to = to;
    d.text = big;   /* a body longer than 127 bytes: two-byte length */
    d.timestamp_us = 1700000000123456ull;
    d.message_id = "id-1";
    d.n_clock = 2;
    d.clock = clock;
    Causeway__V1__RecipientStatus r1 = CAUSEWAY__V1__RECIPIENT_STATUS__INIT, *rp[] = {&r1};
    r1.name = "bob";
    r1.status = CAUSEWAY__V1__STATUS__STATUS_DELIVERED;
    Causeway__V1__Reply reply = CAUSEWAY__V1__REPLY__INIT;
    reply.detail = "sent";
    reply.n_recipients = 1;
    reply.recipients = rp;
    Causeway__V1__Presence pres = CAUSEWAY__V1__PRESENCE__INIT;
    pres.name = "carl";
    pres.online = 1;
    Causeway__V1__Heartbeat hb = CAUSEWAY__V1__HEARTBEAT__INIT;
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        cw_env_t env;
        cw_env_init(&env, ids[i]);
        env.after_seq = ids[(i + 3) % (sizeof ids / sizeof ids[0])];
        env.body_case = CW_BODY(DELIVER);
        env.deliver = &d;
        expect_same_as_protobuf_c(&env);
        env.body_case = CW_BODY(REPLY);
        env.reply = &reply;
        expect_same_as_protobuf_c(&env);
        env.body_case = CW_BODY(PRESENCE);
        env.presence = &pres;
        expect_same_as_protobuf_c(&env);
        env.body_case = CW_BODY(HEARTBEAT);
        env.heartbeat = &hb;
        expect_same_as_protobuf_c(&env);
        env.version = 0;
        expect_same_as_protobuf_c(&env);
        env.version = 1;
        env.n_clock = 2;   /* generic path */
        env.clock = clock;
        expect_same_as_protobuf_c(&env);
    }
    cw_env_t none;
    cw_env_init(&none, 5);   /* no body: generic path */
    expect_same_as_protobuf_c(&none);
}

/* Receives one frame (bounded by RCVTIMEO) and decodes it. */
static cw_env_t *recv_env(void *sock, int *more)
{
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    int rc = zmq_msg_recv(&msg, sock, 0);
    assert_true(rc >= 0);
    *more = zmq_msg_more(&msg);
    cw_env_t *out = NULL;
    const char *detail = NULL;
    assert_int_equal(
        cw_env_decode(zmq_msg_data(&msg), zmq_msg_size(&msg), MAX_FRAME, &out, NULL, &detail),
        CW_OK);
    zmq_msg_close(&msg);
    return out;
}

static void test_send_on_sockets(void **state)
{
    (void) state;
    void *ctx = zmq_ctx_new();
    assert_non_null(ctx);
    int timeout = RECV_TIMEOUT_MS, zero = 0;

    /* Without a routing id: one frame on a PAIR socket. */
    void *a = zmq_socket(ctx, ZMQ_PAIR);
    void *b = zmq_socket(ctx, ZMQ_PAIR);
    assert_int_equal(zmq_bind(a, "inproc://cw-env-pair"), 0);
    assert_int_equal(zmq_connect(b, "inproc://cw-env-pair"), 0);
    zmq_setsockopt(b, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    Causeway__V1__Heartbeat hb = CAUSEWAY__V1__HEARTBEAT__INIT;
    cw_env_t env;
    cw_env_init(&env, 0);
    env.body_case = CW_BODY(HEARTBEAT);
    env.heartbeat = &hb;
    assert_int_equal(cw_env_send(a, NULL, 0, &env, 0), 0);
    int more = 1;
    cw_env_t *out = recv_env(b, &more);
    assert_false(more);
    assert_int_equal(out->body_case, CW_BODY(HEARTBEAT));
    cw_env_free(&out);

    /* With a routing id: ROUTER -> the DEALER of that id, one frame. */
    void *router = zmq_socket(ctx, ZMQ_ROUTER);
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    int mandatory = 1;
    zmq_setsockopt(router, ZMQ_ROUTER_MANDATORY, &mandatory, sizeof mandatory);
    zmq_setsockopt(router, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    zmq_setsockopt(dealer, ZMQ_ROUTING_ID, "peer-1", 6);
    assert_int_equal(zmq_bind(router, "inproc://cw-env-router"), 0);
    assert_int_equal(zmq_connect(dealer, "inproc://cw-env-router"), 0);
    /* The dealer speaks first so the router knows the peer. */
    Causeway__V1__Who who = CAUSEWAY__V1__WHO__INIT;
    cw_env_init(&env, 21);
    env.body_case = CW_BODY(WHO);
    env.who = &who;
    assert_int_equal(cw_env_send(dealer, NULL, 0, &env, 0), 0);
    char id[16];
    int idlen = zmq_recv(router, id, sizeof id, 0);
    assert_int_equal(idlen, 6);
    assert_memory_equal(id, "peer-1", 6);
    out = recv_env(router, &more);
    assert_false(more);
    assert_int_equal(out->request_id, 21);
    cw_env_free(&out);

    Causeway__V1__Reply reply = CAUSEWAY__V1__REPLY__INIT;
    reply.status = CAUSEWAY__V1__STATUS__STATUS_OK;
    cw_env_init(&env, 21);
    env.body_case = CW_BODY(REPLY);
    env.reply = &reply;
    assert_int_equal(cw_env_send(router, "peer-1", 6, &env, ZMQ_DONTWAIT), 0);
    out = recv_env(dealer, &more);
    assert_false(more);
    assert_int_equal(out->body_case, CW_BODY(REPLY));
    assert_int_equal(out->request_id, 21);
    cw_env_free(&out);

    /* An unknown peer with ROUTER_MANDATORY fails with errno set. */
    assert_int_equal(cw_env_send(router, "nobody", 6, &env, ZMQ_DONTWAIT), -1);
    assert_int_equal(zmq_errno(), EHOSTUNREACH);

    zmq_setsockopt(a, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(b, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
    zmq_close(a);
    zmq_close(b);
    zmq_close(router);
    zmq_close(dealer);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_to_msg_matches_protobuf_c),
        cmocka_unit_test(test_round_trip_login),
        cmocka_unit_test(test_round_trip_empty_bodies),
        cmocka_unit_test(test_round_trip_send),
        cmocka_unit_test(test_round_trip_ack_fetch_history),
        cmocka_unit_test(test_round_trip_deliver),
        cmocka_unit_test(test_round_trip_presence),
        cmocka_unit_test(test_round_trip_reply),
        cmocka_unit_test(test_body_names),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_wrong_wire_type),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_empty_frame),
        cmocka_unit_test(test_bad_version),
        cmocka_unit_test(test_no_body),
        cmocka_unit_test(test_unknown_body_field),
        cmocka_unit_test(test_unknown_non_body_field),
        cmocka_unit_test(test_field_numbers),
        cmocka_unit_test(test_wire_check_direct),
        cmocka_unit_test(test_nested_levels),
        cmocka_unit_test(test_request_id_optional_and_free_twice),
        cmocka_unit_test(test_random_bytes),
        cmocka_unit_test(test_to_msg),
        cmocka_unit_test(test_send_on_sockets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
