/*  broker_fuzz: a real broker driven in-process by a script of messages
 *  from four clients, through cw_broker_handle.
 *
 *  Built twice from this file: broker_fuzz (live-only broker) and, with
 *  CW_FUZZ_DURABLE=1, broker_durable_fuzz (a broker with --data in a fresh
 *  temporary directory per input: /dev/shm when writable, so fsync is
 *  cheap; $CW_FUZZ_TMPDIR overrides). Every input gets a new broker bound
 *  to inproc://, four DEALER sockets connected to it in its own context
 *  (they receive what the broker sends; what they "send" is handed to
 *  cw_broker_handle under their routing id), and small limits so that
 *  every limit can be reached by a short input (fuzz_config).
 *
 *  Input: a sequence of operations (at most MAX_OPS), each one control
 *  byte c, then its arguments:
 *      peer = c & 3, ghost = c & 0x20, kind = (c >> 2) & 7:
 *      0-3 FRAME      u16le len, len bytes (fewer if the input ends): a
 *                     one-frame message from the peer.
 *      4   FRAMES     u8 n, then n % 4 times (u16le len, bytes): a message
 *                     of 0..3 frames.
 *      5   RESUME     u8 j, u8 flags, u8 request_id: a Login, built here,
 *                     for the user of peer j's last successful login with
 *                     the resume token the broker gave it (flags bit0
 *                     quiet, bit1 pull, bit2 a wrong token): a client that
 *                     reconnected taking its session over. Tokens are
 *                     random, so a fuzzer could not forge this.
 *      6   RECONNECT  the peer's socket is closed and a new one connected
 *                     under a new routing id, like a client that was killed
 *                     and restarted: its session is left behind (dead at
 *                     the next push to it).
 *      7   TIME       the store's answers are handled (all of them: the
 *                     store thread is waited for), then, unless ghost is
 *                     set, the broker's clock jumps past the redelivery
 *                     interval and the durable tick runs (redelivery, read
 *                     retries) and its answers are handled too.
 *      ghost: FRAME, FRAMES and RESUME come from a routing id with no socket
 *      behind it (a client gone before its message was handled): replies
 *      to it are dropped and pushes to its session fail.
 *  A durable broker's store answers only at TIME, RECONNECT and the end:
 *  the input decides which messages arrive while appends and reads are in
 *  flight (live messages held back behind them, full holding queues), and
 *  the run does not depend on the store thread's speed.
 *
 *  Logging is at trace level (every log line is formatted; CW_FUZZ_LOG
 *  sets another level): scripts/fuzz hides the output with libFuzzer's
 *  -close_fd_mask=2, which keeps sanitizer reports. FUZZ_CHECK writes to
 *  stdout for that reason.
 *
 *  Properties checked after every operation, beyond "no crash, no leak,
 *  no undefined behaviour":
 *    1. the session table's invariants (cw_sessions_check, which asserts
 *       in builds without NDEBUG, and the same ones re-checked here with
 *       FUZZ_CHECK so that they hold in every build), no session left
 *       dead after cw_broker_handle returned, at most max_sessions live;
 *    2. durable: per session, acked_seq <= pushed_seq and at most
 *       push_window pushes wait for an ack (durable.c, invariant 3);
 *    3. every frame the broker sends is one well-formed version-1
 *       envelope: a Reply with a wire status, or a Deliver, Presence or
 *       Heartbeat push with request id 0 and no envelope clock;
 *    4. every request gets exactly one Reply (docs/PROTOCOL.md): a peer
 *       never gets more Replies than it sent requests, live replies are
 *       there as soon as cw_broker_handle returns, durable ones once the
 *       store has answered (bounded wait, SETTLE_MS). A heartbeat (with a
 *       valid clock) is the one message that gets no Reply.
 *  At the end the store's answers are awaited, then everything is closed
 *  and freed (LeakSanitizer checks that nothing stays allocated).
 */
#include "fuzz.h"

#include "broker.h"
#include "broker_internal.h"
#include "durable.h"
#include "cw_clock.h"
#include "cw_envelope.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"
#include "sessions.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#ifndef CW_FUZZ_DURABLE
#define CW_FUZZ_DURABLE 0
#endif

#define PEERS 4          /* connected clients */
#define MAX_OPS 256      /* operations run per input */
#define SETTLE_MS 10000  /* longest wait for the store's answers */
#define PROBE_MS 2000    /* longest wait for the router to drop a closed peer */

typedef struct {
    void *sock;                             /* DEALER, in the broker's context */
    char id[24];                            /* its routing id */
    size_t id_len;                          /* bytes of id */
    unsigned gen;                           /* reconnects so far */
    uint64_t expect;                        /* requests on this socket owed a Reply */
    uint64_t replies;                       /* Replies received on this socket */
    char login_name[CW_NAME_MAX_HARD + 1];  /* name of its last Login request */
    char token_name[CW_NAME_MAX_HARD + 1];  /* user of its last successful login */
    uint8_t token[CW_TOKEN_LEN];            /* the resume token that login got */
    bool has_token;                         /* token_name and token are set */
} peer_t;

typedef struct {
    cw_broker_t *b;      /* the broker under test */
    peer_t peers[PEERS]; /* its clients */
    char dir[512];       /* durable: the data directory; "" live */
} world_t;

/* A cursor over the input. Reads past the end give zeros. */
typedef struct {
    const uint8_t *p;
    size_t n;
} input_t;

static uint8_t in_u8(input_t *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

static size_t in_u16(input_t *in)
{
    size_t lo = in_u8(in);
    return lo | (size_t) in_u8(in) << 8;
}

/* Up to len bytes; *got says how many. */
static const uint8_t *in_bytes(input_t *in, size_t len, size_t *got)
{
    const uint8_t *p = in->p;
    *got = len < in->n ? len : in->n;
    in->p += *got;
    in->n -= *got;
    return p;
}

/* ------------------------------------------------------------------------
 * Set-up
 */

static const char *tmp_base(void)
{
    const char *env = getenv("CW_FUZZ_TMPDIR");
    if (env && *env)
        return env;
    if (access("/dev/shm", W_OK) == 0)
        return "/dev/shm";
    env = getenv("TMPDIR");
    return env && *env ? env : "/tmp";
}

/* Removes dir and the files in it (the store makes no subdirectories). */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[1024];
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* The data directory of the input being run, removed by atexit if the
 * process exits in the middle of one (libFuzzer's time limits). */
static char g_dir[512];

static void remove_current_dir(void)
{
    if (g_dir[0])
        remove_dir(g_dir);
}

/* Small limits: each is reachable by a short input. */
static void fuzz_config(cw_broker_config_t *cfg, const char *dir)
{
    cw_broker_config_defaults(cfg);
    snprintf(cfg->bind, sizeof cfg->bind, "inproc://causeway-fuzz");
    snprintf(cfg->data, sizeof cfg->data, "%s", dir);
    cfg->log_level = (int) cw_log_get_level();
    cfg->max_frame = 1024;
    cfg->max_text = 256;
    cfg->max_recipients = 4;
    cfg->max_name = 16;
    cfg->max_sessions = 3; /* one fewer than the peers */
    cfg->sndhwm = 4;       /* live messages held behind durable ones */
    cfg->queue_max = 6;
    cfg->retention = 3;
    cfg->redeliver_ms = 100;
    cfg->push_window = 3;
    /* Abuse limits, below their option ranges so that they are reachable. */
    cfg->page_users = 2;     /* Who/Login pages, Who.after */
    cfg->max_reply = 600;    /* Fetch/History truncation */
    cfg->reply_budget = 4096; /* FLOODED for unread bulky replies */
    cfg->store_inflight = 2; /* per-session store budget */
    cfg->store_max = 10;     /* STORE_FULL */
    /* Operator requests (Sessions, Queues, Recent with texts). */
    snprintf(cfg->operators, sizeof cfg->operators, "alice,bob");
    cfg->monitor_text = 1;
}

/* Makes the router take in pending pipe events (a peer connected or gone):
 * ZMQ_EVENTS processes the socket's commands without throttling. */
static void router_sync(world_t *w)
{
    int ev = 0;
    size_t len = sizeof ev;
    zmq_getsockopt(w->b->router, ZMQ_EVENTS, &ev, &len);
}

static void peer_connect(world_t *w, int i)
{
    peer_t *p = &w->peers[i];
    p->sock = zmq_socket(w->b->ctx, ZMQ_DEALER);
    FUZZ_CHECK(p->sock, "zmq_socket: %s", zmq_strerror(errno));
    p->id_len = (size_t) snprintf(p->id, sizeof p->id, "peer%d.%u", i, p->gen);
    int zero = 0;
    zmq_setsockopt(p->sock, ZMQ_ROUTING_ID, p->id, p->id_len);
    zmq_setsockopt(p->sock, ZMQ_LINGER, &zero, sizeof zero);
    FUZZ_CHECK(zmq_connect(p->sock, cw_broker_endpoint(w->b)) == 0, "zmq_connect: %s",
               zmq_strerror(errno));
    p->expect = p->replies = 0;
    /* Handshake: an empty frame from the router must reach the new socket
     * before the broker may answer it. The router can learn of a new
     * inproc peer up to a millisecond after zmq_connect returned, even
     * after ZMQ_EVENTS (seen after many reconnects): without this a reply
     * could be dropped (EHOSTUNREACH) and the harness report a lost one. */
    int64_t deadline = cw_mono_ms() + PROBE_MS;
    for (;;) {
        router_sync(w);
        if (zmq_send(w->b->router, p->id, p->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
            zmq_send(w->b->router, "", 0, ZMQ_DONTWAIT);
            break;
        }
        FUZZ_CHECK(errno == EHOSTUNREACH || errno == EINTR, "probe %s: %s", p->id,
                   zmq_strerror(errno));
        FUZZ_CHECK(cw_mono_ms() < deadline, "the router does not see a new peer");
        usleep(100);
    }
    char probe[1];
    int rc;
    while ((rc = zmq_recv(p->sock, probe, sizeof probe, ZMQ_DONTWAIT)) < 0) {
        FUZZ_CHECK(errno == EAGAIN || errno == EINTR, "zmq_recv: %s", zmq_strerror(errno));
        FUZZ_CHECK(cw_mono_ms() < deadline, "the probe did not arrive");
        zmq_pollitem_t item = {p->sock, 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 10);
    }
    FUZZ_CHECK(rc == 0, "a %d-byte frame instead of the probe", rc);
}

/* Closes peer i's socket and waits until the router no longer routes to
 * it, so that what happens next does not depend on thread timing. */
static void peer_close(world_t *w, int i)
{
    peer_t *p = &w->peers[i];
    zmq_close(p->sock);
    p->sock = NULL;
    int64_t deadline = cw_mono_ms() + PROBE_MS;
    for (;;) {
        router_sync(w);
        /* A probe: an empty message to the closed peer, dropped if it is
         * still attached, refused (EHOSTUNREACH) once it is gone. */
        if (zmq_send(w->b->router, p->id, p->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
            zmq_send(w->b->router, "", 0, ZMQ_DONTWAIT);
        else if (errno != EINTR && errno != EAGAIN)
            break; /* EHOSTUNREACH: gone */
        FUZZ_CHECK(cw_mono_ms() < deadline, "router still routes to a closed peer");
        usleep(100);
    }
}

/* ------------------------------------------------------------------------
 * Checks
 */

/* Property 3, for one frame received by peer p. */
static void check_frame(peer_t *p, const void *data, size_t len)
{
    cw_env_t *env = NULL;
    const char *detail = NULL;
    int rc = cw_env_decode(data, len, SIZE_MAX, &env, NULL, &detail);
    FUZZ_CHECK(rc == CW_OK, "the broker sent a frame that does not decode: %s", detail);
    FUZZ_CHECK(env->n_clock == 0, "the broker sent an envelope clock");
    switch (env->body_case) {
    case CW_BODY(REPLY): {
        const Causeway__V1__Reply *r = env->reply;
        int st = (int) r->status;
        FUZZ_CHECK(st >= 0 && st < 100 && strcmp(cw_status_name(st), "UNKNOWN_STATUS") != 0,
                   "reply with status %d", st);
        for (size_t i = 0; i < r->n_recipients; i++) {
            int rs = (int) r->recipients[i]->status;
            FUZZ_CHECK(rs >= 0 && rs < 100 && strcmp(cw_status_name(rs), "UNKNOWN_STATUS") != 0,
                       "recipient status %d", rs);
        }
        p->replies++;
        FUZZ_CHECK(p->replies <= p->expect, "%s: %llu replies to %llu requests", p->id,
                   (unsigned long long) p->replies, (unsigned long long) p->expect);
        if (st == CW_OK && r->login && r->login->resume_token.len == CW_TOKEN_LEN &&
            p->login_name[0]) {
            memcpy(p->token, r->login->resume_token.data, CW_TOKEN_LEN);
            memcpy(p->token_name, p->login_name, sizeof p->token_name);
            p->has_token = true;
        }
        break;
    }
    case CW_BODY(DELIVER): {
        const Causeway__V1__Deliver *d = env->deliver;
        FUZZ_CHECK(env->request_id == 0, "a push with request id %llu",
                   (unsigned long long) env->request_id);
        FUZZ_CHECK(cw_name_check(d->from, CW_NAME_MAX_HARD, NULL) == CW_OK,
                   "deliver from a bad name");
        FUZZ_CHECK(d->durable ? d->seq > 0 : d->seq == 0, "deliver: durable %d, seq %llu",
                   (int) d->durable, (unsigned long long) d->seq);
        FUZZ_CHECK(cw_utf8_valid(d->text, strlen(d->text)), "deliver: text not UTF-8");
        break;
    }
    case CW_BODY(PRESENCE):
        FUZZ_CHECK(env->request_id == 0, "a push with a request id");
        FUZZ_CHECK(cw_name_check(env->presence->name, CW_NAME_MAX_HARD, NULL) == CW_OK,
                   "presence of a bad name");
        break;
    case CW_BODY(HEARTBEAT):
        FUZZ_CHECK(env->request_id == 0, "a push with a request id");
        break;
    default:
        FUZZ_CHECK(0, "the broker sent a %s", cw_env_body_name(env));
    }
    cw_env_free(&env);
}

/* Takes in every frame waiting for peer i, checking each. */
static void drain(world_t *w, int i)
{
    peer_t *p = &w->peers[i];
    for (;;) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, p->sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            zmq_msg_close(&m);
            if (e == EINTR) /* libFuzzer's timers */
                continue;
            FUZZ_CHECK(e == EAGAIN, "zmq_msg_recv: %s", zmq_strerror(e));
            return;
        }
        FUZZ_CHECK(!zmq_msg_more(&m), "the broker sent a multi-frame message");
        check_frame(p, zmq_msg_data(&m), zmq_msg_size(&m));
        zmq_msg_close(&m);
    }
}

static bool all_answered(const world_t *w)
{
    for (int i = 0; i < PEERS; i++)
        if (w->peers[i].replies != w->peers[i].expect)
            return false;
    return true;
}

/* Property 4: waits (durable: bounded) until every request has its Reply,
 * handling the store's answers meanwhile. */
static void settle(world_t *w)
{
    int64_t deadline = cw_mono_ms() + SETTLE_MS;
    for (;;) {
        if (w->b->durable)
            cwd_on_replies(w->b);
        for (int i = 0; i < PEERS; i++)
            drain(w, i);
        if (all_answered(w))
            return;
        for (int i = 0; !w->b->durable && i < PEERS; i++)
            FUZZ_CHECK(w->peers[i].replies == w->peers[i].expect,
                       "%s: live broker: %llu requests, %llu replies", w->peers[i].id,
                       (unsigned long long) w->peers[i].expect,
                       (unsigned long long) w->peers[i].replies);
        FUZZ_CHECK(cw_mono_ms() < deadline, "requests unanswered after %d ms", SETTLE_MS);
        zmq_pollitem_t item = {cwd_poll_handle(w->b), 0, ZMQ_POLLIN, 0};
        zmq_poll(&item, 1, 10);
    }
}

/* After an operation: a live broker has answered everything (settle); a
 * durable one's store answers wait for the next TIME, so only what the
 * router already sent is taken in. */
static void pump(world_t *w)
{
    if (!w->b->durable) {
        settle(w);
        return;
    }
    for (int i = 0; i < PEERS; i++)
        drain(w, i);
}

/* Property 1 (and 2 for a durable broker). */
static void check_broker(world_t *w, bool after_handle)
{
    cw_broker_t *b = w->b;
    cw_sessions_t *t = b->sessions;
    cw_sessions_check(t);
    size_t n = cw_sessions_count(t), online = 0;
    FUZZ_CHECK(n <= b->cfg.max_sessions, "%zu sessions, limit %u", n, b->cfg.max_sessions);
    if (after_handle)
        FUZZ_CHECK(b->n_dead == 0, "%zu dead sessions left after a message", b->n_dead);
    for (size_t i = 0; i < n; i++) {
        cw_session_t *s = cw_sessions_at(t, i);
        FUZZ_CHECK(s->slot == i, "session %zu in slot %zu", i, s->slot);
        FUZZ_CHECK(s->user && s->user->session == s, "session and user disagree");
        FUZZ_CHECK(cw_sessions_find(t, s->id + 1, s->id[0]) == s, "session not found by id");
        if (b->durable) {
            FUZZ_CHECK(s->acked_seq <= s->pushed_seq, "%s: acked %llu > pushed %llu",
                       s->user->name, (unsigned long long) s->acked_seq,
                       (unsigned long long) s->pushed_seq);
            FUZZ_CHECK(s->pushed_seq - s->acked_seq <= b->cfg.push_window,
                       "%s: %llu pushes unacknowledged, window %u", s->user->name,
                       (unsigned long long) (s->pushed_seq - s->acked_seq), b->cfg.push_window);
        }
    }
    size_t nu = cw_sessions_user_count(t);
    for (size_t i = 0; i < nu; i++) {
        cwb_user_t *u = cw_sessions_user_at(t, i);
        FUZZ_CHECK(cw_name_check(u->name, CW_NAME_MAX_HARD, NULL) == CW_OK, "bad user name");
        if (i > 0)
            FUZZ_CHECK(strcmp(cw_sessions_user_at(t, i - 1)->name, u->name) < 0,
                       "user log not strictly sorted");
        if (u->session) {
            FUZZ_CHECK(u->session->user == u, "user and session disagree");
            online++;
        }
    }
    FUZZ_CHECK(online == n, "%zu users online, %zu sessions", online, n);
}

/* ------------------------------------------------------------------------
 * Operations
 */

/* True unless the message is one that gets no Reply: exactly one frame
 * holding a heartbeat with a valid clock. Notes the name of a Login. */
static bool wants_reply(world_t *w, peer_t *p, size_t n_frames, const void *data, size_t len)
{
    if (n_frames != 1)
        return true;
    cw_env_t *env = NULL;
    const char *detail = NULL;
    if (cw_env_decode(data, len, w->b->cfg.max_frame, &env, NULL, &detail) != CW_OK)
        return true;
    if (p && env->body_case == CW_BODY(LOGIN))
        snprintf(p->login_name, sizeof p->login_name, "%s", env->login->name);
    bool quiet = env->body_case == CW_BODY(HEARTBEAT) &&
                 cw_clock_entries_valid(env->clock, env->n_clock);
    cw_env_free(&env);
    return !quiet;
}

/* A message of n frames from peer i (or its ghost). */
static void send_frames(world_t *w, int i, bool ghost, const void *const *frames,
                        const size_t *sizes, size_t n)
{
    peer_t *p = &w->peers[i];
    char gid[16];
    const void *id = p->id;
    size_t id_len = p->id_len;
    if (ghost) {
        id_len = (size_t) snprintf(gid, sizeof gid, "ghost%d", i);
        id = gid;
    }
    if (wants_reply(w, ghost ? NULL : p, n, n ? frames[0] : NULL, n ? sizes[0] : 0) && !ghost)
        p->expect++;
    cw_broker_handle(w->b, id, id_len, frames, sizes, n);
    check_broker(w, true);
}

static void op_resume(world_t *w, int i, bool ghost, input_t *in)
{
    peer_t *from = &w->peers[in_u8(in) % PEERS];
    uint8_t flags = in_u8(in);
    uint64_t rid = in_u8(in);
    cw_env_t env;
    Causeway__V1__Login login;
    uint8_t token[CW_TOKEN_LEN];
    cw_env_init(&env, rid);
    causeway__v1__login__init(&login);
    login.name = from->has_token ? from->token_name : "nobody";
    memcpy(token, from->token, sizeof token);
    if (flags & 4)
        token[0] ^= 1;
    login.resume_token.data = token;
    login.resume_token.len = from->has_token ? sizeof token : 0;
    login.quiet = flags & 1;
    login.pull = (flags & 2) != 0;
    login.agent = "broker_fuzz";
    env.body_case = CW_BODY(LOGIN);
    env.login = &login;
    uint8_t *buf = NULL;
    size_t len = 0;
    FUZZ_CHECK(cw_env_pack(&env, &buf, &len) == CW_OK, "out of memory");
    const void *frames[1] = {buf};
    size_t sizes[1] = {len};
    send_frames(w, i, ghost, frames, sizes, 1);
    free(buf);
}

static void op_time(world_t *w)
{
    cw_broker_t *b = w->b;
    b->now_ms += (int64_t) b->cfg.redeliver_ms + 1;
    b->now_us += ((uint64_t) b->cfg.redeliver_ms + 1) * 1000;
    cwd_tick(b);
    check_broker(w, false);
}

static void run_ops(world_t *w, input_t *in)
{
    for (int op = 0; op < MAX_OPS && in->n; op++) {
        uint8_t c = in_u8(in);
        int i = c & 3;
        bool ghost = (c & 0x20) != 0;
        switch ((c >> 2) & 7) {
        case 0: case 1: case 2: case 3: {
            size_t got = 0;
            const void *frames[1];
            size_t sizes[1];
            size_t len = in_u16(in);
            frames[0] = in_bytes(in, len, &got);
            sizes[0] = got;
            send_frames(w, i, ghost, frames, sizes, 1);
            break;
        }
        case 4: {
            const void *frames[3];
            size_t sizes[3];
            size_t n = in_u8(in) % 4;
            for (size_t k = 0; k < n; k++)
                frames[k] = in_bytes(in, in_u16(in), &sizes[k]);
            send_frames(w, i, ghost, frames, sizes, n);
            break;
        }
        case 5:
            op_resume(w, i, ghost, in);
            break;
        case 6:
            settle(w); /* what the old socket is owed arrives first */
            peer_close(w, i);
            w->peers[i].gen++;
            peer_connect(w, i);
            break;
        case 7:
            settle(w);
            if (!ghost) {
                op_time(w);
                settle(w);
            }
            break;
        }
        pump(w);
        check_broker(w, false);
    }
}

/* ------------------------------------------------------------------------
 * Entry points
 */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    /* Every log line is formatted (its code is fuzzed too). */
    const char *lvl = getenv("CW_FUZZ_LOG");
    int level = lvl ? cw_log_level_parse(lvl) : -1;
    cw_log_set_tag("fuzz");
    cw_log_set_level(level >= 0 ? (cw_log_level_t) level : CW_LOG_TRACE);
    zsys_handler_set(NULL); /* CZMQ must not take over SIGINT/SIGTERM */
    atexit(remove_current_dir);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    world_t w;
    memset(&w, 0, sizeof w);
    if (CW_FUZZ_DURABLE) {
        snprintf(w.dir, sizeof w.dir, "%s/cw-fuzz-XXXXXX", tmp_base());
        FUZZ_CHECK(mkdtemp(w.dir), "mkdtemp %s: %s", w.dir, strerror(errno));
        memcpy(g_dir, w.dir, sizeof g_dir);
    }
    cw_broker_config_t cfg;
    fuzz_config(&cfg, w.dir);
    char err[256] = "";
    w.b = cw_broker_new(&cfg, err, sizeof err);
    FUZZ_CHECK(w.b, "cw_broker_new: %s", err);
    for (int i = 0; i < PEERS; i++)
        peer_connect(&w, i);

    input_t in = {data, size};
    run_ops(&w, &in);
    settle(&w);
    check_broker(&w, false);

    for (int i = 0; i < PEERS; i++)
        zmq_close(w.peers[i].sock);
    cw_broker_destroy(&w.b);
    FUZZ_CHECK(w.b == NULL, "cw_broker_destroy did not NULL the pointer");
    if (w.dir[0])
        remove_dir(w.dir);
    g_dir[0] = '\0';
    return 0;
}
