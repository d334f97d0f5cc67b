/*  gen_corpus: writes the seed corpus of the fuzz targets, or checks it.
 *
 *      fuzz_gen_corpus write DIR   writes DIR/envelope/ and DIR/broker/
 *      fuzz_gen_corpus check DIR   exits 1 unless those files are exactly
 *                                  what `write` would produce
 *
 *  The files checked in under tests/fuzz/corpus/ are this program's output
 *  (a ctest runs `check`); change them by changing it and running
 *  `write tests/fuzz/corpus`.
 *
 *  envelope/: one valid envelope of every body type, client to broker and
 *  broker to client, plus a few that decode but are refused (bad clock,
 *  version 2, no body, unknown body) or do not decode.
 *  broker/: scripts in broker_fuzz.c's input format: short sessions that
 *  log in, chat, hit each limit, use durable queues, resume a session,
 *  vanish (ghost) and send bad frames.
 */
#include "cw_envelope.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------
 * Output
 */

static const char *g_mode;  /* "write" or "check" */
static const char *g_root;  /* corpus directory */
static int g_failures;      /* check: files that differ */
static int g_files;         /* files written or checked */
static int g_per_sub[2];    /* files emitted into envelope/ and broker/ */

static void emit(const char *sub, const char *name, const uint8_t *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", g_root, sub, name);
    g_files++;
    g_per_sub[strcmp(sub, "envelope") == 0 ? 0 : 1]++;
    if (strcmp(g_mode, "write") == 0) {
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
            fprintf(stderr, "gen_corpus: cannot write %s: %s\n", path, strerror(errno));
            exit(2);
        }
        return;
    }
    FILE *f = fopen(path, "rb");
    uint8_t *have = malloc(len + 1);
    size_t n = f && have ? fread(have, 1, len + 1, f) : 0;
    if (!f || n != len || memcmp(have, data, len) != 0) {
        fprintf(stderr, "gen_corpus: %s is missing or differs from the generator's output\n",
                path);
        g_failures++;
    }
    free(have);
    if (f)
        fclose(f);
}

/* ------------------------------------------------------------------------
 * Envelopes
 */

typedef struct {
    uint8_t *data;
    size_t len;
} buf_t;

static buf_t pack(const cw_env_t *env)
{
    buf_t b;
    if (cw_env_pack(env, &b.data, &b.len) != 0) {
        fprintf(stderr, "gen_corpus: out of memory\n");
        exit(2);
    }
    return b;
}

/* Clock storage for one envelope: "node:counter" pairs. */
typedef struct {
    cw_clock_entry_msg_t e[4];
    cw_clock_entry_msg_t *p[4];
    size_t n;
} clock_buf;

static void clock_set(clock_buf *c, cw_env_t *env, const char *const *nodes,
                      const uint64_t *counters, size_t n)
{
    for (size_t i = 0; i < n && i < 4; i++) {
        causeway__v1__clock_entry__init(&c->e[i]);
        c->e[i].node = (char *) nodes[i];
        c->e[i].counter = counters[i];
        c->p[i] = &c->e[i];
    }
    c->n = n;
    env->n_clock = n;
    env->clock = c->p;
}

static buf_t env_login(uint64_t rid, const char *name, bool quiet, bool pull)
{
    cw_env_t env;
    Causeway__V1__Login m;
    cw_env_init(&env, rid);
    causeway__v1__login__init(&m);
    m.name = (char *) name;
    m.agent = "gen_corpus";
    m.quiet = quiet;
    m.pull = pull;
    env.body_case = CW_BODY(LOGIN);
    env.login = &m;
    return pack(&env);
}

typedef struct {
    const char *const *to;  /* recipients */
    size_t n_to;
    const char *text;
    bool broadcast;
    bool durable;
    const char *message_id;
    uint32_t ttl_s;
    const char *clock_node;  /* one clock entry (node, counter) if set */
    uint64_t clock_counter;
} send_t;

static buf_t env_send(uint64_t rid, const send_t *s)
{
    cw_env_t env;
    Causeway__V1__Send m;
    clock_buf c;
    cw_env_init(&env, rid);
    causeway__v1__send__init(&m);
    m.to = (char **) s->to;
    m.n_to = s->n_to;
    m.text = (char *) (s->text ? s->text : "");
    m.broadcast = s->broadcast;
    m.durable = s->durable;
    m.message_id = (char *) (s->message_id ? s->message_id : "");
    m.ttl_s = s->ttl_s;
    if (s->clock_node)
        clock_set(&c, &env, &s->clock_node, &s->clock_counter, 1);
    env.body_case = CW_BODY(SEND);
    env.send = &m;
    return pack(&env);
}

/* An envelope whose body is an empty message (logout, who, stats,
 * heartbeat) or a one-integer one (ack, fetch, history). */
static buf_t env_simple(uint64_t rid, int body, uint64_t arg)
{
    cw_env_t env;
    Causeway__V1__Logout logout;
    Causeway__V1__Who who;
    Causeway__V1__Stats stats;
    Causeway__V1__Heartbeat hb;
    Causeway__V1__Ack ack;
    Causeway__V1__Fetch fetch;
    Causeway__V1__History history;
    Causeway__V1__Sessions sessions;
    Causeway__V1__Queues queues;
    Causeway__V1__Recent recent;
    cw_env_init(&env, rid);
    env.body_case = (Causeway__V1__Envelope__BodyCase) body;
    switch (body) {
    case CW_BODY(LOGOUT):
        causeway__v1__logout__init(&logout);
        env.logout = &logout;
        break;
    case CW_BODY(WHO):
        causeway__v1__who__init(&who);
        env.who = &who;
        break;
    case CW_BODY(STATS):
        causeway__v1__stats__init(&stats);
        env.stats = &stats;
        break;
    case CW_BODY(HEARTBEAT):
        causeway__v1__heartbeat__init(&hb);
        env.heartbeat = &hb;
        break;
    case CW_BODY(ACK):
        causeway__v1__ack__init(&ack);
        ack.seq = arg;
        env.ack = &ack;
        break;
    case CW_BODY(FETCH):
        causeway__v1__fetch__init(&fetch);
        fetch.max = (uint32_t) arg;
        env.fetch = &fetch;
        break;
    case CW_BODY(HISTORY):
        causeway__v1__history__init(&history);
        history.last = (uint32_t) arg;
        env.history = &history;
        break;
    case CW_BODY(SESSIONS):
        causeway__v1__sessions__init(&sessions);
        sessions.after = arg ? "alice" : "";
        env.sessions = &sessions;
        break;
    case CW_BODY(QUEUES):
        causeway__v1__queues__init(&queues);
        queues.after = arg ? "alice" : "";
        env.queues = &queues;
        break;
    case CW_BODY(RECENT):
        causeway__v1__recent__init(&recent);
        recent.max = (uint32_t) arg;
        recent.text = arg != 0;
        env.recent = &recent;
        break;
    default:
        fprintf(stderr, "gen_corpus: env_simple: body %d\n", body);
        exit(2);
    }
    return pack(&env);
}

static buf_t env_deliver(bool durable)
{
    cw_env_t env;
    Causeway__V1__Deliver d;
    clock_buf c;
    static const char *const to[] = {"bob", "carol"};
    static const char *const nodes[] = {"alice", "bob"};
    static const uint64_t counters[] = {3, 1};
    cw_env_init(&env, 0);
    causeway__v1__deliver__init(&d);
    d.from = "alice";
    d.to = (char **) to;
    d.n_to = 2;
    d.text = "caf\xc3\xa9 at 5?";
    d.timestamp_us = 1767225600000000ull;
    d.seq = durable ? 7 : 0;
    d.message_id = durable ? "alice-7" : "";
    d.durable = durable;
    d.redelivered = durable;
    clock_set(&c, &env, nodes, counters, 2);
    d.n_clock = env.n_clock; /* the clock travels inside the Deliver */
    d.clock = env.clock;
    env.n_clock = 0;
    env.clock = NULL;
    env.body_case = CW_BODY(DELIVER);
    env.deliver = &d;
    return pack(&env);
}

static buf_t env_presence(void)
{
    cw_env_t env;
    Causeway__V1__Presence p;
    cw_env_init(&env, 0);
    causeway__v1__presence__init(&p);
    p.name = "bob";
    p.online = true;
    p.reason = CAUSEWAY__V1__PRESENCE__REASON__REASON_LOGIN;
    p.timestamp_us = 1767225600000000ull;
    env.body_case = CW_BODY(PRESENCE);
    env.presence = &p;
    return pack(&env);
}

/* Replies of each shape: 0 login, 1 send, 2 stats, 3 fetch. */
static buf_t env_reply(int shape)
{
    cw_env_t env;
    Causeway__V1__Reply r;
    Causeway__V1__LoginInfo li;
    Causeway__V1__UserInfo ui[2], *uip[2];
    Causeway__V1__RecipientStatus rs[2], *rsp[2];
    Causeway__V1__BrokerStats st;
    Causeway__V1__Deliver d, *dp[1];
    static uint8_t token[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    cw_env_init(&env, 42);
    causeway__v1__reply__init(&r);
    r.status = CAUSEWAY__V1__STATUS__STATUS_OK;
    r.detail = "ok";
    switch (shape) {
    case 0:
        causeway__v1__login_info__init(&li);
        li.broker_version = "0.1.0";
        li.heartbeat_ms = 1000;
        li.liveness = 3;
        li.max_frame = 65536;
        li.max_recipients = 1000;
        li.max_text = 60000;
        li.resume_token.data = token;
        li.resume_token.len = sizeof token;
        li.durable = true;
        r.login = &li;
        for (int i = 0; i < 2; i++) {
            causeway__v1__user_info__init(&ui[i]);
            ui[i].name = i ? "bob" : "alice";
            ui[i].online = i == 0;
            ui[i].last_seen_us = 1767225600000000ull;
            uip[i] = &ui[i];
        }
        r.users = uip;
        r.n_users = 2;
        break;
    case 1:
        for (int i = 0; i < 2; i++) {
            causeway__v1__recipient_status__init(&rs[i]);
            rs[i].name = i ? "zed" : "bob";
            rs[i].status = i ? CAUSEWAY__V1__STATUS__STATUS_UNKNOWN_USER
                             : CAUSEWAY__V1__STATUS__STATUS_ACCEPTED;
            rs[i].seq = i ? 0 : 12;
            rsp[i] = &rs[i];
        }
        r.recipients = rsp;
        r.n_recipients = 2;
        r.status = CAUSEWAY__V1__STATUS__STATUS_ACCEPTED;
        r.duplicate = true;
        break;
    case 2:
        causeway__v1__broker_stats__init(&st);
        st.uptime_ms = 5000;
        st.sessions = 2;
        st.known_users = 3;
        st.frames_in = 100;
        st.frames_out = 120;
        st.messages_routed = 40;
        st.deliveries = 60;
        st.bad_frames = 1;
        st.expired_sessions = 1;
        st.stored_messages = 4;
        st.fsyncs = 9;
        r.stats = &st;
        break;
    default:
        causeway__v1__deliver__init(&d);
        d.from = "alice";
        d.text = "stored";
        d.seq = 3;
        d.durable = true;
        d.expired = true;
        dp[0] = &d;
        r.messages = dp;
        r.n_messages = 1;
        break;
    }
    env.body_case = CW_BODY(REPLY);
    env.reply = &r;
    return pack(&env);
}

/* ------------------------------------------------------------------------
 * Envelope corpus
 */

static void put_env(const char *name, buf_t b)
{
    emit("envelope", name, b.data, b.len);
    free(b.data);
}

static void envelope_corpus(void)
{
    static const char *const one[] = {"bob"};
    static const char *const three[] = {"bob", "carol", "dave"};
    static const char *const bad_nodes[] = {"bob", "alice"};
    static const uint64_t counters[] = {1, 2};
    put_env("login", env_login(1, "alice", false, false));
    put_env("login-quiet-pull", env_login(2, "bob", true, true));
    put_env("logout", env_simple(3, CW_BODY(LOGOUT), 0));
    put_env("send-unicast", env_send(4, &(send_t){.to = one, .n_to = 1, .text = "hello",
                                                  .clock_node = "alice", .clock_counter = 1}));
    put_env("send-multicast", env_send(5, &(send_t){.to = three, .n_to = 3,
                                                    .text = "\xe2\x82\xac 5, caf\xc3\xa9"}));
    put_env("send-broadcast", env_send(6, &(send_t){.broadcast = true, .text = "all hands"}));
    put_env("send-durable", env_send(7, &(send_t){.to = one, .n_to = 1, .text = "later",
                                                  .durable = true, .message_id = "alice-1",
                                                  .ttl_s = 60}));
    put_env("who", env_simple(8, CW_BODY(WHO), 0));
    put_env("stats", env_simple(9, CW_BODY(STATS), 0));
    put_env("ack", env_simple(10, CW_BODY(ACK), 5));
    put_env("fetch", env_simple(11, CW_BODY(FETCH), 10));
    put_env("history", env_simple(12, CW_BODY(HISTORY), 3));
    put_env("heartbeat", env_simple(0, CW_BODY(HEARTBEAT), 0));
    put_env("sessions", env_simple(14, CW_BODY(SESSIONS), 1));
    put_env("queues", env_simple(15, CW_BODY(QUEUES), 0));
    put_env("recent", env_simple(16, CW_BODY(RECENT), 4));
    put_env("deliver-live", env_deliver(false));
    put_env("deliver-durable", env_deliver(true));
    put_env("presence", env_presence());
    put_env("reply-login", env_reply(0));
    put_env("reply-send", env_reply(1));
    put_env("reply-stats", env_reply(2));
    put_env("reply-fetch", env_reply(3));

    /* Decodes, but the broker refuses the clock (not sorted). */
    cw_env_t env;
    Causeway__V1__Who who;
    clock_buf c;
    cw_env_init(&env, 13);
    causeway__v1__who__init(&who);
    env.body_case = CW_BODY(WHO);
    env.who = &who;
    clock_set(&c, &env, bad_nodes, counters, 2);
    put_env("who-unsorted-clock", pack(&env));

    /* Refused by cw_env_decode. */
    cw_env_init(&env, 14);
    env.version = 2;
    env.body_case = CW_BODY(WHO);
    env.who = &who;
    put_env("version-2", pack(&env));
    cw_env_init(&env, 15);
    put_env("no-body", pack(&env));
    /* version 1, request 16, then field 99 (varint 1): a body type from the future. */
    static const uint8_t future[] = {0x08, 0x01, 0x10, 0x10, 0x98, 0x06, 0x01};
    emit("envelope", "unknown-body", future, sizeof future);
    buf_t b = env_login(17, "alice", false, false);
    emit("envelope", "truncated-login", b.data, b.len - 3);
    free(b.data);
    emit("envelope", "empty", (const uint8_t *) "", 0);
}

/* ------------------------------------------------------------------------
 * Broker scripts (broker_fuzz.c's input format)
 */

typedef struct {
    uint8_t data[8192];
    size_t len;
} script_t;

static void s_byte(script_t *s, uint8_t v)
{
    if (s->len >= sizeof s->data) {
        fprintf(stderr, "gen_corpus: script too long\n");
        exit(2);
    }
    s->data[s->len++] = v;
}

static void s_frame_bytes(script_t *s, const uint8_t *data, size_t len)
{
    s_byte(s, (uint8_t) (len & 0xff));
    s_byte(s, (uint8_t) (len >> 8));
    for (size_t i = 0; i < len; i++)
        s_byte(s, data[i]);
}

/* FRAME from peer (| 0x20 for its ghost); consumes b. */
static void s_frame(script_t *s, int peer, buf_t b)
{
    s_byte(s, (uint8_t) peer);
    s_frame_bytes(s, b.data, b.len);
    free(b.data);
}

static void s_raw(script_t *s, int peer, const void *data, size_t len)
{
    s_byte(s, (uint8_t) peer);
    s_frame_bytes(s, data, len);
}

static void s_frames(script_t *s, int peer, size_t n, const buf_t *bufs)
{
    s_byte(s, (uint8_t) (peer | 4 << 2));
    s_byte(s, (uint8_t) n);
    for (size_t i = 0; i < n; i++)
        s_frame_bytes(s, bufs[i].data, bufs[i].len);
}

static void s_resume(script_t *s, int peer, int of, uint8_t flags, uint8_t rid)
{
    s_byte(s, (uint8_t) (peer | 5 << 2));
    s_byte(s, (uint8_t) of);
    s_byte(s, flags);
    s_byte(s, rid);
}

static void s_reconnect(script_t *s, int peer)
{
    s_byte(s, (uint8_t) (peer | 6 << 2));
}

/* TIME: the store answers, then the clock jumps and the tick runs. */
static void s_time(script_t *s)
{
    s_byte(s, 7 << 2);
}

/* TIME with the ghost bit: the store answers, no clock jump. */
static void s_store(script_t *s)
{
    s_byte(s, 0x20 | 7 << 2);
}

static void put_script(const char *name, const script_t *s)
{
    emit("broker", name, s->data, s->len);
}

#define GHOST 0x20

static void broker_corpus(void)
{
    static const char *const bob[] = {"bob"};
    static const char *const alice[] = {"alice"};
    static const char *const ghost[] = {"gone"};
    static const char *const many[] = {"bob", "carol", "zed", "bob"};
    static const char *const five[] = {"a1", "a2", "a3", "a4", "a5"};
    script_t s;

    /* Phase 1: two users chat with clocks, look around, leave. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, false));
    s_frame(&s, 0, env_send(2, &(send_t){.to = bob, .n_to = 1, .text = "hi bob",
                                         .clock_node = "alice", .clock_counter = 1}));
    s_frame(&s, 1, env_send(2, &(send_t){.to = alice, .n_to = 1, .text = "hi alice",
                                         .clock_node = "bob", .clock_counter = 2}));
    s_frame(&s, 2, env_simple(1, CW_BODY(WHO), 0));
    s_frame(&s, 0, env_simple(3, CW_BODY(STATS), 0));
    s_frame(&s, 0, env_simple(0, CW_BODY(HEARTBEAT), 0));
    s_frame(&s, 0, env_simple(4, CW_BODY(LOGOUT), 0));
    s_frame(&s, 1, env_send(3, &(send_t){.to = alice, .n_to = 1, .text = "still there?"}));
    s_frame(&s, 1, env_simple(4, CW_BODY(LOGOUT), 0));
    put_script("chat", &s);

    /* Names and the session limit (3 sessions, names up to 16 bytes). */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "", false, false));
    s_frame(&s, 0, env_login(2, "Admin", false, false));
    s_frame(&s, 0, env_login(3, "averyveryverylongname", false, false));
    s_frame(&s, 0, env_login(4, "alice", false, false));
    s_frame(&s, 1, env_login(1, "alice", false, false));
    s_frame(&s, 0, env_login(5, "bob", false, false));
    s_frame(&s, 1, env_login(2, "bob", true, false));
    s_frame(&s, 2, env_login(1, "carol", false, false));
    s_frame(&s, 3, env_login(1, "dave", false, false));
    s_frame(&s, 2, env_simple(2, CW_BODY(LOGOUT), 0));
    s_frame(&s, 3, env_login(2, "dave", false, false));
    put_script("names-and-limits", &s);

    /* Multicast with duplicates and unknown users, broadcast, and each Send
     * limit. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, false));
    s_frame(&s, 2, env_login(1, "carol", true, false));
    s_frame(&s, 0, env_send(2, &(send_t){.to = many, .n_to = 4, .text = "to many"}));
    s_frame(&s, 0, env_send(3, &(send_t){.broadcast = true, .text = "to all"}));
    s_frame(&s, 0, env_send(4, &(send_t){.to = five, .n_to = 5, .text = "too many"}));
    s_frame(&s, 0, env_send(5, &(send_t){.to = bob, .n_to = 1, .broadcast = true}));
    s_frame(&s, 0, env_send(6, &(send_t){.text = "nobody"}));
    char big[300];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    s_frame(&s, 0, env_send(7, &(send_t){.to = bob, .n_to = 1, .text = big}));
    s_frame(&s, 0, env_send(8, &(send_t){.to = bob, .n_to = 1, .text = "bad \xc3\x28 utf8"}));
    s_frame(&s, 0, env_send(9, &(send_t){.to = bob, .n_to = 1, .text = "x",
                                         .clock_node = "Not Valid!", .clock_counter = 1}));
    s_frame(&s, 0, env_send(10, &(send_t){.to = bob, .n_to = 1, .durable = true}));
    char long_id[131];
    memset(long_id, 'm', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    s_frame(&s, 0, env_send(11, &(send_t){.to = bob, .n_to = 1, .message_id = long_id}));
    s_frame(&s, 0, env_send(12, &(send_t){.to = bob, .n_to = 1, .message_id = "id\xff"}));
    put_script("send-limits", &s);

    /* Frames that are not requests. */
    memset(&s, 0, sizeof s);
    s_raw(&s, 0, "\xff\xff\xff", 3);
    s_raw(&s, 0, "", 0);
    static const uint8_t future[] = {0x08, 0x01, 0x10, 0x05, 0x98, 0x06, 0x01};
    s_raw(&s, 1, future, sizeof future);
    static const uint8_t v2[] = {0x08, 0x02, 0x10, 0x06, 0x6a, 0x00};
    s_raw(&s, 1, v2, sizeof v2);
    static const uint8_t nobody[] = {0x08, 0x01, 0x10, 0x07};
    s_raw(&s, 1, nobody, sizeof nobody);
    s_frame(&s, 2, env_deliver(false));
    s_frame(&s, 2, env_presence());
    s_frame(&s, 2, env_reply(0));
    uint8_t huge[1100];
    memset(huge, 0, sizeof huge);
    s_raw(&s, 3, huge, sizeof huge);
    buf_t two[2] = {env_simple(8, CW_BODY(WHO), 0), env_simple(9, CW_BODY(STATS), 0)};
    s_frames(&s, 3, 2, two);
    s_frames(&s, 3, 0, NULL);
    free(two[0].data);
    free(two[1].data);
    put_script("bad-frames", &s);

    /* Requests that need a session, without one. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_send(1, &(send_t){.to = bob, .n_to = 1, .text = "hi"}));
    s_frame(&s, 0, env_simple(2, CW_BODY(LOGOUT), 0));
    s_frame(&s, 0, env_simple(3, CW_BODY(ACK), 1));
    s_frame(&s, 0, env_simple(4, CW_BODY(FETCH), 0));
    s_frame(&s, 0, env_simple(5, CW_BODY(HISTORY), 0));
    s_frame(&s, 0, env_login(6, "alice", false, false));
    s_frame(&s, 0, env_simple(7, CW_BODY(ACK), 1));
    s_frame(&s, 0, env_simple(8, CW_BODY(FETCH), 0));
    put_script("no-session", &s);

    /* Durable: online delivery, ack, fetch, history, a duplicate, unknown
     * recipients only. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, false));
    s_frame(&s, 0, env_send(2, &(send_t){.to = bob, .n_to = 1, .text = "kept", .durable = true,
                                         .message_id = "m1", .clock_node = "alice",
                                         .clock_counter = 1}));
    s_store(&s);
    s_frame(&s, 1, env_simple(2, CW_BODY(ACK), 1));
    s_store(&s);
    s_frame(&s, 0, env_send(3, &(send_t){.to = bob, .n_to = 1, .text = "kept", .durable = true,
                                         .message_id = "m1"}));
    s_frame(&s, 0, env_send(4, &(send_t){.to = ghost, .n_to = 1, .durable = true}));
    s_frame(&s, 1, env_simple(3, CW_BODY(FETCH), 0));
    s_frame(&s, 1, env_simple(4, CW_BODY(HISTORY), 5));
    s_frame(&s, 1, env_simple(5, CW_BODY(ACK), 99));
    s_store(&s);
    put_script("durable-online", &s);

    /* Durable: a user logs in to a waiting queue; live messages to it are
     * held until the stored ones are out, and the holding queue fills. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, false));
    s_frame(&s, 1, env_simple(2, CW_BODY(LOGOUT), 0));
    for (int i = 0; i < 4; i++)
        s_frame(&s, 0, env_send((uint64_t) (2 + i), &(send_t){.to = bob, .n_to = 1,
                                                               .text = "first", .durable = true}));
    s_store(&s);
    s_frame(&s, 1, env_login(3, "bob", false, false));
    for (int i = 0; i < 6; i++)
        s_frame(&s, 0, env_send((uint64_t) (10 + i), &(send_t){.to = bob, .n_to = 1,
                                                                .text = "then"}));
    s_store(&s);
    s_frame(&s, 1, env_simple(4, CW_BODY(ACK), 3));
    s_store(&s);
    s_frame(&s, 1, env_simple(5, CW_BODY(ACK), 4));
    s_frame(&s, 0, env_simple(20, CW_BODY(STATS), 0));
    put_script("durable-catch-up-hold", &s);

    /* Durable: messages wait for an offline user, pushed at login,
     * redelivered when the ack is late. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, false));
    s_frame(&s, 1, env_simple(2, CW_BODY(LOGOUT), 0));
    for (int i = 0; i < 5; i++)
        s_frame(&s, 0, env_send((uint64_t) (2 + i), &(send_t){.to = bob, .n_to = 1,
                                                               .text = "wait", .durable = true}));
    s_time(&s);
    s_frame(&s, 1, env_login(3, "bob", false, false));
    s_time(&s);
    s_frame(&s, 1, env_simple(4, CW_BODY(ACK), 2));
    s_time(&s);
    s_time(&s);
    s_frame(&s, 1, env_simple(5, CW_BODY(ACK), 5));
    put_script("durable-offline-redeliver", &s);

    /* Durable: a pull-mode reader, a full queue, live messages behind
     * stored ones. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, true));
    s_frame(&s, 2, env_login(1, "carol", false, false));
    for (int i = 0; i < 8; i++)
        s_frame(&s, 0, env_send((uint64_t) (2 + i),
                                &(send_t){.to = bob, .n_to = 1, .text = "q", .durable = true}));
    static const char *const bc[] = {"bob", "carol"};
    s_frame(&s, 0, env_send(20, &(send_t){.to = bc, .n_to = 2, .text = "d", .durable = true}));
    for (int i = 0; i < 6; i++)
        s_frame(&s, 0, env_send((uint64_t) (21 + i),
                                &(send_t){.to = bc, .n_to = 2, .text = "live"}));
    s_time(&s);
    s_frame(&s, 1, env_simple(2, CW_BODY(FETCH), 0));
    s_frame(&s, 1, env_simple(3, CW_BODY(ACK), 6));
    s_frame(&s, 1, env_simple(4, CW_BODY(HISTORY), 10));
    s_frame(&s, 0, env_send(30, &(send_t){.broadcast = true, .text = "b", .durable = true}));
    put_script("durable-pull-full-hold", &s);

    /* Durable: a push finds its recipient's client gone (the session dies,
     * not yet reaped), and the client resumes the dead session in time. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, false));
    s_reconnect(&s, 1);
    s_frame(&s, 0, env_send(2, &(send_t){.to = bob, .n_to = 1, .text = "x", .durable = true}));
    s_store(&s);
    s_resume(&s, 1, 1, 0, 2);
    s_frame(&s, 1, env_simple(3, CW_BODY(ACK), 1));
    s_time(&s);
    put_script("durable-dead-resume", &s);

    /* A client reconnects and takes its session over with the resume
     * token; a wrong token is refused. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, false));
    s_reconnect(&s, 0);
    s_frame(&s, 2, env_login(1, "alice", false, false));
    s_resume(&s, 2, 0, 4, 2);
    s_resume(&s, 0, 0, 0, 3);
    s_frame(&s, 1, env_send(2, &(send_t){.to = alice, .n_to = 1, .text = "welcome back"}));
    s_frame(&s, 0, env_simple(4, CW_BODY(WHO), 0));
    s_reconnect(&s, 1);
    s_frame(&s, 0, env_send(5, &(send_t){.to = bob, .n_to = 1, .text = "bob?"}));
    s_frame(&s, 3, env_login(1, "bob", false, false));
    put_script("resume", &s);

    /* A client gone before its messages are handled: its session dies at
     * the first push to it. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0 | GHOST, env_login(1, "gone", false, false));
    s_frame(&s, 0, env_login(1, "alice", false, false));
    s_frame(&s, 0, env_send(2, &(send_t){.to = ghost, .n_to = 1, .text = "hello?"}));
    s_frame(&s, 1 | GHOST, env_login(1, "gone", false, false));
    s_frame(&s, 1, env_login(1, "bob", false, false));
    s_resume(&s, 2 | GHOST, 1, 0, 5);
    s_frame(&s, 0, env_send(3, &(send_t){.broadcast = true, .text = "anyone"}));
    put_script("ghost", &s);

    /* Quiet and pull logins; Who and Stats from everyone. */
    memset(&s, 0, sizeof s);
    s_frame(&s, 0, env_login(1, "alice", true, false));
    s_frame(&s, 1, env_login(1, "bob", true, true));
    s_frame(&s, 2, env_login(1, "carol", false, false));
    s_frame(&s, 0, env_simple(2, CW_BODY(WHO), 0));
    s_frame(&s, 1, env_simple(2, CW_BODY(STATS), 0));
    s_frame(&s, 2, env_simple(2, CW_BODY(LOGOUT), 0));
    s_frame(&s, 3, env_simple(2, CW_BODY(WHO), 0));
    put_script("quiet-pull", &s);
}

/* check: files in DIR/sub that the generator does not make (not counting
 * names starting with '.' or ending in .md). */
static int count_files(const char *sub)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", g_root, sub);
    DIR *d = opendir(path);
    int n = 0;
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] != '.' && !(len >= 3 && strcmp(e->d_name + len - 3, ".md") == 0))
            n++;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "check") != 0)) {
        fprintf(stderr, "usage: %s write|check DIR\n", argv[0]);
        return 2;
    }
    g_mode = argv[1];
    g_root = argv[2];
    if (strcmp(g_mode, "write") == 0) {
        char path[1024];
        mkdir(g_root, 0755);
        snprintf(path, sizeof path, "%s/envelope", g_root);
        mkdir(path, 0755);
        snprintf(path, sizeof path, "%s/broker", g_root);
        mkdir(path, 0755);
    }
    envelope_corpus();
    broker_corpus();
    if (strcmp(g_mode, "check") == 0) {
        static const char *const subs[2] = {"envelope", "broker"};
        for (int i = 0; i < 2; i++) {
            int have = count_files(subs[i]);
            if (have != g_per_sub[i]) {
                fprintf(stderr, "gen_corpus: %s/%s holds %d files, the generator makes %d\n",
                        g_root, subs[i], have, g_per_sub[i]);
                g_failures++;
            }
        }
    }
    if (g_failures) {
        fprintf(stderr, "gen_corpus: %d of %d files differ; run `%s write %s`\n", g_failures,
                g_files, argv[0], g_root);
        return 1;
    }
    printf("gen_corpus: %d files %s\n", g_files,
           strcmp(g_mode, "write") == 0 ? "written" : "up to date");
    return 0;
}
