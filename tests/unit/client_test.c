/*  client_test.c: libcauseway against a scripted fake broker.
 *
 *  The fake broker is a ROUTER socket on a free loopback port driven by the
 *  test thread itself, so each step (reply, push, silence, refusal) happens
 *  exactly when the test says. Covers: login, events queued during a
 *  request, the level-triggered fd, vector clock stamping and merging,
 *  heartbeats, broker loss, requests while disconnected, reconnection with
 *  the resume token and NAME_TAKEN retry, timeouts, polite logout on
 *  destroy; durable mode: duplicate suppression (seq watermark across a
 *  reconnection, live message ids, fetch replies), durable sends retried
 *  with the same message id and clock after a lost reply and a lost
 *  connection (also one made while disconnected), live sends not retried,
 *  auto_ack (batched, never past a queued delivery, flushed before logout)
 *  and Login.pull; causal events: the trace file's lines (canonical JSON,
 *  appended, duplicates not recorded) and reports to a fake causeway-clockd
 *  (batches, confirmation, STORE_ERROR resent, refusals and an unreachable
 *  daemon counted, sends never delayed).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "causeway.h"
#include "cw_envelope.h"
#include "cw_util.h"

typedef struct {
    void *ctx;
    void *router;
    char endpoint[64];
    uint8_t peer[256];      /* routing id of the last client frame */
    size_t peer_len;
    int64_t last_hb;        /* when we last pushed a heartbeat */
    int alive;              /* push heartbeats while waiting */
} fake_t;

static fake_t *fake_new(void)
{
    fake_t *f = calloc(1, sizeof *f);
    f->ctx = zmq_ctx_new();
    f->router = zmq_socket(f->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(f->router, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(f->router, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof f->endpoint;
    zmq_getsockopt(f->router, ZMQ_LAST_ENDPOINT, f->endpoint, &len);
    f->alive = 1;
    return f;
}

static void fake_destroy(fake_t **p)
{
    if (!*p)
        return;
    zmq_close((*p)->router);
    zmq_ctx_term((*p)->ctx);
    free(*p);
    *p = NULL;
}

static void fake_send(fake_t *f, cw_env_t *env)
{
    assert_int_equal(cw_env_send(f->router, f->peer, f->peer_len, env, 0), 0);
}

static void fake_heartbeat(fake_t *f)
{
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Heartbeat hb = CAUSEWAY__V1__HEARTBEAT__INIT;
    env.body_case = CW_BODY(HEARTBEAT);
    env.heartbeat = &hb;
    fake_send(f, &env);
    f->last_hb = cw_mono_ms();
}

/* Next frame from the client that is not a heartbeat (or, if want_hb, the
 * next heartbeat), within timeout_ms; NULL on timeout. */
static cw_env_t *fake_recv_any(fake_t *f, int timeout_ms, int want_hb)
{
    int64_t end = cw_mono_ms() + timeout_ms;
    for (;;) {
        int64_t now = cw_mono_ms();
        if (now >= end)
            return NULL;
        if (f->alive && f->peer_len && now - f->last_hb >= 50)
            fake_heartbeat(f);
        zmq_pollitem_t it = {.socket = f->router, .events = ZMQ_POLLIN};
        zmq_poll(&it, 1, 20);
        if (!(it.revents & ZMQ_POLLIN))
            continue;
        zmq_msg_t id, body;
        zmq_msg_init(&id);
        zmq_msg_init(&body);
        zmq_msg_recv(&id, f->router, 0);
        zmq_msg_recv(&body, f->router, 0);
        f->peer_len = zmq_msg_size(&id);
        memcpy(f->peer, zmq_msg_data(&id), f->peer_len);
        cw_env_t *env;
        uint64_t rid;
        const char *detail;
        int st = cw_env_decode(zmq_msg_data(&body), zmq_msg_size(&body), 1 << 20, &env, &rid,
                               &detail);
        zmq_msg_close(&id);
        zmq_msg_close(&body);
        assert_int_equal(st, CW_OK);
        if ((env->body_case == CW_BODY(HEARTBEAT)) == (want_hb != 0))
            return env;
        cw_env_free(&env);
    }
}

static cw_env_t *fake_recv(fake_t *f, int timeout_ms) { return fake_recv_any(f, timeout_ms, 0); }

static void fake_reply(fake_t *f, uint64_t rid, int status, Causeway__V1__LoginInfo *info,
                       size_t n_users)
{
    cw_env_t env;
    cw_env_init(&env, rid);
    cw_reply_msg_t r = CAUSEWAY__V1__REPLY__INIT;
    r.status = (Causeway__V1__Status) status;
    r.login = info;
    cw_userinfo_msg_t u = CAUSEWAY__V1__USER_INFO__INIT, *up = &u;
    u.name = "alice";
    u.online = 1;
    r.users = &up;
    r.n_users = n_users;
    env.body_case = CW_BODY(REPLY);
    env.reply = &r;
    fake_send(f, &env);
}

static uint8_t token_bytes[] = {1, 2, 3, 4};

/* Serves one login; returns after replying with status. */
static void fake_login(fake_t *f, int status, const char *expect_name, int expect_token)
{
    cw_env_t *env = fake_recv(f, 3000);
    assert_non_null(env);
    assert_int_equal(env->body_case, CW_BODY(LOGIN));
    assert_string_equal(env->login->name, expect_name);
    if (expect_token) {
        assert_int_equal(env->login->resume_token.len, sizeof token_bytes);
        assert_memory_equal(env->login->resume_token.data, token_bytes, sizeof token_bytes);
    }
    Causeway__V1__LoginInfo info = CAUSEWAY__V1__LOGIN_INFO__INIT;
    info.broker_version = "fake";
    info.heartbeat_ms = 100;
    info.liveness = 3;
    info.max_frame = 65536;
    info.resume_token.data = token_bytes;
    info.resume_token.len = sizeof token_bytes;
    fake_reply(f, env->request_id, status, status == CW_OK ? &info : NULL, status == CW_OK);
    cw_env_free(&env);
}

/* Runs cw_client_login on a helper thread while the fake serves it. */
typedef struct {
    cw_client_t *c;
    const char *name;
    cw_status_t st;
    cw_reply_t *reply;
} login_job_t;

static void *login_thread(void *arg)
{
    login_job_t *j = arg;
    j->st = cw_client_login(j->c, j->name, 3000, &j->reply);
    return NULL;
}

/* A client on endpoint list `list` logged in as alice through fake f (the
 * first endpoint of the list that f answers on), with every check of a
 * fresh session. Caller owns the client. */
static cw_client_t *logged_in_list(fake_t *f, const char *list)
{
    cw_client_t *c = cw_client_new(list, NULL);
    assert_non_null(c);
    login_job_t j = {.c = c, .name = "alice"};
    pthread_t t;
    pthread_create(&t, NULL, login_thread, &j);
    fake_login(f, CW_OK, "alice", 0);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_OK);
    assert_non_null(j.reply);
    assert_int_equal(j.reply->n_users, 1);
    assert_string_equal(j.reply->login.broker_version, "fake");
    assert_string_equal(cw_client_name(c), "alice");
    assert_int_equal(cw_client_connected(c), 1);
    cw_reply_destroy(&j.reply);
    assert_string_equal(cw_client_endpoint(c), f->endpoint);
    return c;
}

static cw_client_t *logged_in(fake_t *f)
{
    return logged_in_list(f, f->endpoint);
}

/* The fixture of the tests that start with a logged-in client: fake f (and,
 * for failover, fake g), client c logged in through f (setup_one: on f's
 * endpoint; setup_two: on the list "f,g"). Teardown destroys what the test
 * left (each pointer may have been destroyed and NULLed by the test). */
typedef struct {
    fake_t *f;          /* the broker the client logged in through */
    fake_t *g;          /* setup_two: the second endpoint of the list; else NULL */
    cw_client_t *c;     /* the client */
} fixture_t;

static int setup_one(void **state)
{
    fixture_t *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->f = fake_new();
    x->c = logged_in(x->f);
    *state = x;
    return 0;
}

static int setup_two(void **state)
{
    fixture_t *x = calloc(1, sizeof *x);
    assert_non_null(x);
    x->f = fake_new();
    x->g = fake_new();
    char list[160];
    snprintf(list, sizeof list, "%s,%s", x->f->endpoint, x->g->endpoint);
    x->c = logged_in_list(x->f, list);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *x = *state;
    cw_client_destroy(&x->c);
    fake_destroy(&x->f);
    fake_destroy(&x->g);
    free(x);
    return 0;
}

static int fd_readable(cw_client_t *c, int timeout_ms)
{
    struct pollfd p = {.fd = cw_client_fd(c), .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1;
}

/* --- tests ----------------------------------------------------------------- */

static void test_new_destroy(void **state)
{
    (void) state;
    cw_client_t *c = cw_client_new("tcp://127.0.0.1:1", NULL);
    assert_non_null(c);
    cw_client_destroy(&c);
    assert_null(c);
    cw_client_destroy(&c);   /* safe twice */
    assert_null(cw_client_new("not an endpoint", NULL));
}

static void test_timeout(void **state)
{
    (void) state;
    fake_t *f = fake_new();
    cw_client_t *c = cw_client_new(f->endpoint, NULL);
    cw_reply_t *r = (cw_reply_t *) 1;
    int64_t t0 = cw_mono_ms();
    assert_int_equal(cw_client_who(c, 200, &r), CW_ERR_TIMEOUT);
    assert_null(r);
    assert_true(cw_mono_ms() - t0 >= 200);
    /* The fake saw the request: a late reply is dropped, not mistaken for
     * the next request's. */
    cw_env_t *env = fake_recv(f, 1000);
    assert_non_null(env);
    fake_reply(f, env->request_id, CW_BAD_REQUEST, NULL, 0);
    cw_env_free(&env);
    cw_event_t *ev;
    assert_int_equal(cw_client_next_event(c, 100, &ev), CW_ERR_TIMEOUT);
    cw_client_destroy(&c);
    fake_destroy(&f);
}

typedef struct {
    cw_client_t *c;
    cw_send_t msg;
    cw_status_t st;
    cw_reply_t *reply;
} send_job_t;

static void *send_thread(void *arg)
{
    send_job_t *j = arg;
    j->st = cw_client_send(j->c, &j->msg, 3000, &j->reply);
    return NULL;
}

static void test_send_events_clock(void **state)
{
    fixture_t *x = *state;
    fake_t *f = x->f;
    cw_client_t *c = x->c;
    assert_false(fd_readable(c, 0));

    const char *to[] = {"bob"};
    send_job_t j = {.c = c, .msg = {.to = to, .n_to = 1, .text = "hi", .message_id = "m1"}};
    pthread_t t;
    pthread_create(&t, NULL, send_thread, &j);
    cw_env_t *env = fake_recv(f, 3000);
    assert_non_null(env);
    assert_int_equal(env->body_case, CW_BODY(SEND));
    assert_string_equal(env->send->text, "hi");
    assert_string_equal(env->send->message_id, "m1");
    assert_int_equal(env->n_clock, 1);   /* stamped {alice:1} */
    assert_string_equal(env->clock[0]->node, "alice");
    assert_int_equal(env->clock[0]->counter, 1);

    /* Push a delivery and a presence before the reply. */
    cw_env_t push;
    cw_env_init(&push, 0);
    cw_deliver_msg_t d = CAUSEWAY__V1__DELIVER__INIT;
    cw_clock_entry_msg_t e1 = CAUSEWAY__V1__CLOCK_ENTRY__INIT, *ep = &e1;
    e1.node = "bob";
    e1.counter = 5;
    d.from = "bob";
    d.text = "yo \"there\"";
    d.clock = &ep;
    d.n_clock = 1;
    push.body_case = CW_BODY(DELIVER);
    push.deliver = &d;
    fake_send(f, &push);
    cw_presence_msg_t pr = CAUSEWAY__V1__PRESENCE__INIT;
    pr.name = "carol";
    pr.online = 1;
    pr.reason = CAUSEWAY__V1__PRESENCE__REASON__REASON_LOGIN;
    push.body_case = CW_BODY(PRESENCE);
    push.presence = &pr;
    fake_send(f, &push);

    cw_env_t rep;
    cw_env_init(&rep, env->request_id);
    cw_reply_msg_t r = CAUSEWAY__V1__REPLY__INIT;
    cw_rcpt_msg_t rs = CAUSEWAY__V1__RECIPIENT_STATUS__INIT, *rsp = &rs;
    rs.name = "bob";
    rs.status = CAUSEWAY__V1__STATUS__STATUS_OFFLINE;
    r.recipients = &rsp;
    r.n_recipients = 1;
    rep.body_case = CW_BODY(REPLY);
    rep.reply = &r;
    fake_send(f, &rep);
    cw_env_free(&env);
    pthread_join(t, NULL);

    assert_int_equal(j.st, CW_OK);
    assert_int_equal(j.reply->n_recipients, 1);
    assert_string_equal(j.reply->recipients[0].name, "bob");
    assert_int_equal(j.reply->recipients[0].status, CW_OFFLINE);
    assert_int_equal(j.reply->n_clock, 1);
    assert_int_equal(j.reply->clock[0].counter, 1);
    cw_reply_destroy(&j.reply);

    /* Both events were queued while the send waited; fd is level-triggered. */
    assert_true(fd_readable(c, 1000));
    cw_event_t *ev;
    assert_int_equal(cw_client_next_event(c, 0, &ev), CW_OK);
    assert_int_equal(ev->type, CW_EVENT_DELIVER);
    assert_string_equal(ev->msg.from, "bob");
    assert_string_equal(ev->msg.text, "yo \"there\"");
    assert_int_equal(ev->msg.n_clock, 1);
    /* merge {bob:5} into {alice:1}, then tick: {alice:2, bob:5} */
    assert_int_equal(ev->n_local_clock, 2);
    assert_string_equal(ev->local_clock[0].node, "alice");
    assert_int_equal(ev->local_clock[0].counter, 2);
    assert_int_equal(ev->local_clock[1].counter, 5);
    cw_event_destroy(&ev);
    assert_null(ev);
    assert_true(fd_readable(c, 0));
    assert_int_equal(cw_client_next_event(c, 0, &ev), CW_OK);
    assert_int_equal(ev->type, CW_EVENT_PRESENCE);
    assert_string_equal(ev->presence.name, "carol");
    assert_int_equal(ev->presence.reason, CW_PRESENCE_LOGIN);
    cw_event_destroy(&ev);
    assert_false(fd_readable(c, 0));
    assert_int_equal(cw_client_next_event(c, 0, &ev), CW_ERR_TIMEOUT);

    char buf[64];
    assert_string_equal(cw_client_clock(c, buf, sizeof buf), "{alice:2, bob:5}");
    cw_clock_item_t *items;
    size_t n = cw_client_clock_items(c, &items);
    assert_int_equal(n, 2);
    cw_client_clock_free(&items, n);

    /* Invalid sends are refused locally. */
    cw_send_t bad = {.text = "x"};   /* neither to nor broadcast */
    assert_int_equal(cw_client_send(c, &bad, 100, NULL), CW_ERR_INVALID);

    /* destroy logs out politely */
    cw_client_destroy(&x->c);
    env = fake_recv(f, 1000);
    assert_non_null(env);
    assert_int_equal(env->body_case, CW_BODY(LOGOUT));
    cw_env_free(&env);
}

static void test_heartbeat_loss_reconnect(void **state)
{
    fixture_t *x = *state;
    fake_t *f = x->f;
    cw_client_t *c = x->c;

    /* Idle client heartbeats (heartbeat_ms = 100). */
    cw_env_t *env = fake_recv_any(f, 500, 1);
    assert_non_null(env);
    cw_env_free(&env);

    /* Broker goes silent: loss after 3 * 100 ms. */
    f->alive = 0;
    cw_event_t *ev;
    assert_int_equal(cw_client_next_event(c, 2000, &ev), CW_OK);
    assert_int_equal(ev->type, CW_EVENT_DISCONNECTED);
    assert_int_equal(ev->conn.status, CW_ERR_DISCONNECTED);
    cw_event_destroy(&ev);
    assert_int_equal(cw_client_connected(c), 0);
    assert_string_equal(cw_client_name(c), "alice");
    /* Requests while disconnected fail at once. */
    int64_t t0 = cw_mono_ms();
    assert_int_equal(cw_client_who(c, 2000, NULL), CW_ERR_DISCONNECTED);
    assert_true(cw_mono_ms() - t0 < 1000);

    /* The client logs in again with its token; first refusal NAME_TAKEN
     * is retried with backoff. */
    f->alive = 1;
    f->peer_len = 0;
    fake_login(f, CW_NAME_TAKEN, "alice", 1);
    int64_t t1 = cw_mono_ms();
    fake_login(f, CW_OK, "alice", 1);
    assert_true(cw_mono_ms() - t1 >= 150);   /* backoff 200 ms */
    assert_int_equal(cw_client_next_event(c, 2000, &ev), CW_OK);
    assert_int_equal(ev->type, CW_EVENT_RECONNECTED);
    assert_int_equal(ev->conn.n_users, 1);
    cw_event_destroy(&ev);
    assert_int_equal(cw_client_connected(c), 1);
}

static void test_logout_while_lost(void **state)
{
    fixture_t *x = *state;
    fake_t *f = x->f;
    cw_client_t *c = x->c;
    f->alive = 0;
    cw_event_t *ev;
    assert_int_equal(cw_client_next_event(c, 2000, &ev), CW_OK);
    assert_int_equal(ev->type, CW_EVENT_DISCONNECTED);
    cw_event_destroy(&ev);
    assert_int_equal(cw_client_logout(c, 1000), CW_ERR_DISCONNECTED);
    assert_null(cw_client_name(c));
    /* No more login attempts reach the fake (one may have been on its way
     * when we logged out). */
    int logins = 0;
    cw_env_t *env;
    while ((env = fake_recv(f, 1500)) != NULL) {
        logins += env->body_case == CW_BODY(LOGIN);
        cw_env_free(&env);
    }
    assert_true(logins <= 1);
}


/* --- durable helpers -------------------------------------------------------- */

#define STR(x) ((char *) (uintptr_t) (x))

/* Pushes a Deliver from `from` (seq 0: live) carrying the clock {from: k}. */
/* Pushes a Deliver stamped with Envelope.after_seq (causal hold-back). */
static void fake_push_after(fake_t *f, const char *from, uint64_t seq, uint64_t after,
                            const char *mid, const char *text, uint64_t k)
{
    cw_env_t env;
    cw_env_init(&env, 0);
    env.after_seq = after;
    cw_deliver_msg_t d = CAUSEWAY__V1__DELIVER__INIT;
    cw_clock_entry_msg_t e = CAUSEWAY__V1__CLOCK_ENTRY__INIT, *ep = &e;
    e.node = STR(from);
    e.counter = k;
    d.from = STR(from);
    d.text = STR(text);
    d.seq = seq;
    d.durable = seq != 0;
    d.message_id = STR(mid ? mid : "");
    d.clock = &ep;
    d.n_clock = 1;
    env.body_case = CW_BODY(DELIVER);
    env.deliver = &d;
    fake_send(f, &env);
}

static void fake_push(fake_t *f, const char *from, uint64_t seq, const char *mid,
                      const char *text, uint64_t k)
{
    fake_push_after(f, from, seq, 0, mid, text, k);
}

/* Replies to a Send with one recipient `bob` of status rstatus / seq. */
static void fake_send_reply(fake_t *f, uint64_t rid, int status, int rstatus, uint64_t seq,
                            int duplicate)
{
    cw_env_t rep;
    cw_env_init(&rep, rid);
    cw_reply_msg_t r = CAUSEWAY__V1__REPLY__INIT;
    cw_rcpt_msg_t rs = CAUSEWAY__V1__RECIPIENT_STATUS__INIT, *rsp = &rs;
    rs.name = "bob";
    rs.status = (Causeway__V1__Status) rstatus;
    rs.seq = seq;
    r.status = (Causeway__V1__Status) status;
    r.recipients = &rsp;
    r.n_recipients = 1;
    r.duplicate = duplicate;
    rep.body_case = CW_BODY(REPLY);
    rep.reply = &r;
    fake_send(f, &rep);
}

/* Replies to a Fetch with stored messages from bob with these seqs. */
static void fake_fetch_reply(fake_t *f, uint64_t rid, const uint64_t *seqs, size_t n)
{
    cw_env_t rep;
    cw_env_init(&rep, rid);
    cw_reply_msg_t r = CAUSEWAY__V1__REPLY__INIT;
    cw_deliver_msg_t d[8], *dp[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        cw_deliver_msg_t init = CAUSEWAY__V1__DELIVER__INIT;
        d[i] = init;
        d[i].from = "bob";
        d[i].text = "stored";
        d[i].seq = seqs[i];
        d[i].durable = 1;
        dp[i] = &d[i];
    }
    r.messages = dp;
    r.n_messages = n;
    rep.body_case = CW_BODY(REPLY);
    rep.reply = &r;
    fake_send(f, &rep);
}

/* The next delivery event (other events are skipped), or NULL. */
static cw_event_t *next_deliver(cw_client_t *c, int timeout_ms)
{
    int64_t end = cw_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - cw_mono_ms();
        cw_event_t *ev;
        if (left <= 0 || cw_client_next_event(c, (int) left, &ev) != CW_OK)
            return NULL;
        if (ev->type == CW_EVENT_DELIVER)
            return ev;
        cw_event_destroy(&ev);
    }
}

/* Reads the next delivery and checks its text and seq. */
static void expect_deliver(cw_client_t *c, const char *text, uint64_t seq)
{
    cw_event_t *ev = next_deliver(c, 2000);
    assert_non_null(ev);
    assert_string_equal(ev->msg.text, text);
    assert_int_equal(ev->msg.seq, seq);
    cw_event_destroy(&ev);
}

/* The next event, which must be of this type. */
static void expect_event(cw_client_t *c, cw_event_type_t type)
{
    cw_event_t *ev;
    assert_int_equal(cw_client_next_event(c, 3000, &ev), CW_OK);
    assert_int_equal(ev->type, type);
    cw_event_destroy(&ev);
}

/* Makes the fake broker go silent until the client declares it lost, then
 * serves the client's login again (resume token). */
static void fake_lose_and_resume(fake_t *f, cw_client_t *c)
{
    f->alive = 0;
    expect_event(c, CW_EVENT_DISCONNECTED);
    assert_int_equal(cw_client_connected(c), 0);
    f->alive = 1;
    f->peer_len = 0;
    fake_login(f, CW_OK, "alice", 1);
    expect_event(c, CW_EVENT_RECONNECTED);
}

static cw_client_t *logged_in_opts(fake_t *f, const cw_client_opts_t *opts, int expect_pull)
{
    cw_client_t *c = cw_client_new(f->endpoint, opts);
    assert_non_null(c);
    login_job_t j = {.c = c, .name = "alice"};
    pthread_t t;
    pthread_create(&t, NULL, login_thread, &j);
    cw_env_t *env = fake_recv(f, 3000);
    assert_non_null(env);
    assert_int_equal(env->body_case, CW_BODY(LOGIN));
    assert_int_equal(env->login->pull, expect_pull);
    Causeway__V1__LoginInfo info = CAUSEWAY__V1__LOGIN_INFO__INIT;
    info.broker_version = "fake";
    info.heartbeat_ms = 100;
    info.liveness = 3;
    info.max_frame = 65536;
    info.durable = 1;
    info.resume_token.data = token_bytes;
    info.resume_token.len = sizeof token_bytes;
    fake_reply(f, env->request_id, CW_OK, &info, 1);
    cw_env_free(&env);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_OK);
    cw_reply_destroy(&j.reply);
    return c;
}

typedef struct {
    cw_client_t *c;
    uint32_t max;
    cw_status_t st;
    cw_reply_t *reply;
} fetch_job_t;

static void *fetch_thread(void *arg)
{
    fetch_job_t *j = arg;
    j->st = cw_client_fetch(j->c, j->max, 3000, &j->reply);
    return NULL;
}

typedef struct {
    cw_client_t *c;
    cw_status_t st;
} logout_job_t;

static void *logout_thread(void *arg)
{
    logout_job_t *j = arg;
    j->st = cw_client_logout(j->c, 3000);
    return NULL;
}

/* A send of "hi" to bob with a 5 s timeout, on its own thread. */
static void *send5_thread(void *arg)
{
    send_job_t *j = arg;
    j->st = cw_client_send(j->c, &j->msg, 5000, &j->reply);
    return NULL;
}

static const char *const to_bob[] = {"bob"};

/* --- durable tests ---------------------------------------------------------- */

static void test_dedup_watermark(void **state)
{
    fixture_t *x = *state;
    fake_t *f = x->f;
    cw_client_t *c = x->c;

    /* A redelivery of seq 1 between 2 and 3 is dropped, clock untouched. */
    fake_push(f, "bob", 1, "b-1", "one", 1);
    fake_push(f, "bob", 2, "b-2", "two", 2);
    fake_push(f, "bob", 1, "b-1", "one", 1);
    fake_push(f, "bob", 3, "b-3", "three", 3);
    expect_deliver(c, "one", 1);
    expect_deliver(c, "two", 2);
    cw_event_t *ev = next_deliver(c, 2000);
    assert_non_null(ev);
    assert_int_equal(ev->msg.seq, 3);
    assert_int_equal(ev->local_clock[0].counter, 3);   /* alice ticked 3 times, not 4 */
    cw_event_destroy(&ev);

    /* The watermark survives a reconnection: the broker pushes everything
     * unacknowledged again after the login. */
    fake_lose_and_resume(f, c);
    fake_push(f, "bob", 1, "b-1", "one", 1);
    fake_push(f, "bob", 2, "b-2", "two", 2);
    fake_push(f, "bob", 3, "b-3", "three", 3);
    fake_push(f, "bob", 4, "b-4", "four", 4);
    expect_deliver(c, "four", 4);

    /* Live: a repeated (from, message_id) is dropped; no id, no dropping;
     * the same id from someone else is another message. */
    fake_push(f, "bob", 0, "L1", "live one", 5);
    fake_push(f, "bob", 0, "L1", "live one", 5);
    fake_push(f, "bob", 0, "", "no id", 6);
    fake_push(f, "bob", 0, "", "no id", 6);
    fake_push(f, "carol", 0, "L1", "carol's", 1);
    fake_push(f, "bob", 0, "L2", "live two", 7);
    expect_deliver(c, "live one", 0);
    expect_deliver(c, "no id", 0);
    expect_deliver(c, "no id", 0);
    expect_deliver(c, "carol's", 0);
    expect_deliver(c, "live two", 0);

    /* Fetch leaves out what was handed over (seq 4) and hands over 5: a
     * later push of 5 is dropped, 6 comes. */
    fetch_job_t j = {.c = c, .max = 10};
    pthread_t t;
    pthread_create(&t, NULL, fetch_thread, &j);
    cw_env_t *env = fake_recv(f, 3000);
    assert_non_null(env);
    assert_int_equal(env->body_case, CW_BODY(FETCH));
    assert_int_equal(env->fetch->max, 10);
    uint64_t seqs[] = {4, 5};
    fake_fetch_reply(f, env->request_id, seqs, 2);
    cw_env_free(&env);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_OK);
    assert_int_equal(j.reply->n_messages, 1);
    assert_int_equal(j.reply->messages[0].seq, 5);
    assert_int_equal(j.reply->n_seen, 1);
    cw_reply_destroy(&j.reply);
    fake_push(f, "bob", 5, "b-5", "five", 5);
    fake_push(f, "bob", 6, "b-6", "six", 6);
    expect_deliver(c, "six", 6);
}

/* Causal hold-back: deliveries are shown in the order of the broker's
 * after_seq chain whatever order they arrive in; what was held reports how
 * long; duplicates of held messages are dropped. */
static void test_holdback_order(void **state)
{
    fixture_t *x = *state;
    fake_t *f = x->f;
    cw_client_t *c = x->c;

    /* Stored messages reordered in transit: 2 and 3 wait for 1. */
    fake_push_after(f, "bob", 2, 1, "b-2", "two", 2);
    fake_push_after(f, "bob", 3, 2, "b-3", "three", 3);
    fake_push_after(f, "bob", 1, 0, "b-1", "one", 1);
    expect_deliver(c, "one", 1);
    cw_event_t *ev = next_deliver(c, 2000);
    assert_non_null(ev);
    assert_string_equal(ev->msg.text, "two");
    assert_true(ev->msg.holdback_us > 0);
    assert_int_equal(ev->msg.gap, 0);
    assert_int_equal(ev->local_clock[0].counter, 2);   /* alice: one tick per shown message */
    cw_event_destroy(&ev);
    expect_deliver(c, "three", 3);

    /* A live message that follows stored seq 5 waits for 4 and 5; one that
     * follows what was shown goes at once, overtaking it. */
    fake_push_after(f, "carol", 0, 5, "c-1", "live after five", 1);
    fake_push_after(f, "carol", 0, 3, "c-2", "live after three", 2);
    expect_deliver(c, "live after three", 0);
    fake_push_after(f, "bob", 4, 3, "b-4", "four", 4);
    fake_push_after(f, "bob", 5, 4, "b-5", "five", 5);
    expect_deliver(c, "four", 4);
    expect_deliver(c, "five", 5);
    ev = next_deliver(c, 2000);
    assert_non_null(ev);
    assert_string_equal(ev->msg.text, "live after five");
    assert_true(ev->msg.holdback_us > 0);
    assert_int_equal(ev->msg.gap, 0);
    cw_event_destroy(&ev);

    /* A held stored message pushed again, and the live duplicate of a held
     * one, are dropped; so is what was shown before. */
    fake_push_after(f, "bob", 7, 6, "b-7", "seven", 7);
    fake_push_after(f, "bob", 7, 6, "b-7", "seven", 7);
    fake_push_after(f, "carol", 0, 7, "c-3", "live after seven", 3);
    fake_push_after(f, "carol", 0, 7, "c-3", "live after seven", 3);
    fake_push_after(f, "bob", 5, 4, "b-5", "five", 5);
    fake_push_after(f, "bob", 6, 5, "b-6", "six", 6);
    fake_push_after(f, "carol", 0, 0, "c-4", "end", 4);
    expect_deliver(c, "six", 6);
    expect_deliver(c, "seven", 7);
    expect_deliver(c, "live after seven", 0);
    expect_deliver(c, "end", 0);
    assert_null(next_deliver(c, 200));
}

/* The next delivery within timeout_ms, or NULL, while the fake keeps the
 * connection alive with a heartbeat every 50 ms. */
static cw_event_t *next_deliver_hb(fake_t *f, cw_client_t *c, int timeout_ms)
{
    int64_t end = cw_mono_ms() + timeout_ms;
    while (cw_mono_ms() < end) {
        fake_heartbeat(f);
        cw_event_t *ev = next_deliver(c, 50);
        if (ev)
            return ev;
    }
    return NULL;
}

/* A held live message is shown after holdback_ms with gap set; a held
 * stored one never times out (its predecessors are pushed again). */
static void test_holdback_timeout(void **state)
{
    (void) state;
    fake_t *f = fake_new();
    cw_client_opts_t opts = {.holdback_ms = 300};
    cw_client_t *c = logged_in_opts(f, &opts, 0);

    int64_t t0 = cw_mono_ms();
    fake_push_after(f, "bob", 3, 2, "b-3", "three", 3);
    fake_push_after(f, "carol", 0, 2, "c-1", "live after two", 1);
    cw_event_t *ev = next_deliver_hb(f, c, 3000);
    assert_non_null(ev);
    int64_t waited = cw_mono_ms() - t0;
    assert_string_equal(ev->msg.text, "live after two");
    assert_int_equal(ev->msg.gap, 1);
    assert_true(ev->msg.holdback_us >= 290000);
    assert_true(waited >= 290);
    cw_event_destroy(&ev);
    /* Seq 3 stays held well past the hold-back time, then its
     * predecessors come again and it follows them. */
    assert_null(next_deliver_hb(f, c, 600));
    assert_int_equal(cw_client_connected(c), 1);
    fake_push_after(f, "bob", 1, 0, "b-1", "one", 1);
    fake_push_after(f, "bob", 2, 1, "b-2", "two", 2);
    expect_deliver(c, "one", 1);
    expect_deliver(c, "two", 2);
    expect_deliver(c, "three", 3);

    cw_client_destroy(&c);
    fake_destroy(&f);
}

/* The durable send is answered with silence; after the attempt timeout the
 * client reconnects and sends the same frame again. */
static void test_durable_retry_lost_reply(void **state)
{
    fixture_t *x = *state;
    fake_t *f = x->f;
    cw_client_t *c = x->c;
    send_job_t j = {.c = c, .msg = {.to = to_bob, .n_to = 1, .text = "hi", .durable = 1}};
    pthread_t t;
    int64_t t0 = cw_mono_ms();
    pthread_create(&t, NULL, send5_thread, &j);
    cw_env_t *first = fake_recv(f, 3000);
    assert_non_null(first);
    assert_int_equal(first->body_case, CW_BODY(SEND));
    assert_true(first->send->durable);
    /* A generated id: alice-<16 hex>-<counter>. */
    const char *mid = first->send->message_id;
    assert_int_equal(strncmp(mid, "alice-", 6), 0);
    assert_int_equal(strlen(mid), 6 + 16 + 2);
    assert_int_equal(mid[22], '-');

    /* No reply (heartbeats keep flowing): after CW_DURABLE_ATTEMPT_MS the
     * client takes the reply for lost and logs in again. */
    fake_login(f, CW_OK, "alice", 1);
    assert_true(cw_mono_ms() - t0 >= CW_DURABLE_ATTEMPT_MS - 50);
    cw_env_t *again = fake_recv(f, 3000);
    assert_non_null(again);
    assert_int_equal(again->body_case, CW_BODY(SEND));
    assert_string_equal(again->send->message_id, mid);
    assert_int_equal(again->request_id, first->request_id);
    assert_int_equal(again->n_clock, 1);                 /* the same clock: */
    assert_int_equal(again->clock[0]->counter, 1);      /* not ticked again */
    assert_string_equal(again->send->text, "hi");
    /* The broker had it: the original result, duplicate. */
    fake_send_reply(f, again->request_id, CW_ACCEPTED, CW_ACCEPTED, 7, 1);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_ACCEPTED);
    assert_non_null(j.reply);
    assert_int_equal(j.reply->duplicate, 1);
    assert_string_equal(j.reply->message_id, mid);
    assert_int_equal(j.reply->recipients[0].seq, 7);
    assert_int_equal(j.reply->n_clock, 1);
    assert_int_equal(j.reply->clock[0].counter, 1);
    cw_reply_destroy(&j.reply);
    cw_env_free(&first);
    cw_env_free(&again);
    expect_event(c, CW_EVENT_DISCONNECTED);
    expect_event(c, CW_EVENT_RECONNECTED);
    char buf[64];
    assert_string_equal(cw_client_clock(c, buf, sizeof buf), "{alice:1}");

    /* A given id is used as is; a broker that forgot the session
     * (NOT_LOGGED_IN) gets the send again after the login. */
    j = (send_job_t){.c = c,
                     .msg = {.to = to_bob, .n_to = 1, .text = "again", .durable = 1,
                             .message_id = "my-id"}};
    pthread_create(&t, NULL, send5_thread, &j);
    first = fake_recv(f, 3000);
    assert_non_null(first);
    assert_string_equal(first->send->message_id, "my-id");
    fake_reply(f, first->request_id, CW_NOT_LOGGED_IN, NULL, 0);
    fake_login(f, CW_OK, "alice", 1);
    again = fake_recv(f, 3000);
    assert_non_null(again);
    assert_string_equal(again->send->message_id, "my-id");
    fake_send_reply(f, again->request_id, CW_ACCEPTED, CW_ACCEPTED, 8, 0);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_ACCEPTED);
    assert_int_equal(j.reply->duplicate, 0);
    assert_string_equal(j.reply->message_id, "my-id");
    cw_reply_destroy(&j.reply);
    cw_env_free(&first);
    cw_env_free(&again);
}

/* The connection is lost while a durable send waits, and a durable send is
 * made while it is lost: both go out after the reconnection. A live send is
 * never sent twice. */
static void test_durable_retry_lost_connection(void **state)
{
    fixture_t *x = *state;
    fake_t *f = x->f;
    cw_client_t *c = x->c;

    send_job_t j = {.c = c, .msg = {.to = to_bob, .n_to = 1, .text = "one", .durable = 1}};
    pthread_t t;
    pthread_create(&t, NULL, send5_thread, &j);
    cw_env_t *first = fake_recv(f, 3000);
    assert_non_null(first);
    f->alive = 0;   /* silent: lost after 3 x 100 ms */
    f->peer_len = 0;
    fake_login(f, CW_OK, "alice", 1);
    f->alive = 1;
    cw_env_t *again = fake_recv(f, 3000);
    assert_non_null(again);
    assert_string_equal(again->send->message_id, first->send->message_id);
    assert_int_equal(again->clock[0]->counter, first->clock[0]->counter);
    fake_send_reply(f, again->request_id, CW_ACCEPTED, CW_ACCEPTED, 1, 0);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_ACCEPTED);
    assert_string_equal(j.reply->message_id, first->send->message_id);
    cw_reply_destroy(&j.reply);
    cw_env_free(&first);
    cw_env_free(&again);
    expect_event(c, CW_EVENT_DISCONNECTED);
    expect_event(c, CW_EVENT_RECONNECTED);

    /* Lost again: a live send fails at once, a durable one waits. */
    f->alive = 0;
    expect_event(c, CW_EVENT_DISCONNECTED);
    cw_reply_t *r = NULL;
    cw_send_t live = {.to = to_bob, .n_to = 1, .text = "live"};
    assert_int_equal(cw_client_send(c, &live, 2000, &r), CW_ERR_DISCONNECTED);
    assert_non_null(r);   /* sends always say which id they used */
    assert_int_equal(r->status, CW_ERR_DISCONNECTED);
    assert_non_null(r->message_id);
    assert_true(strlen(r->message_id) > 0);
    cw_reply_destroy(&r);
    j = (send_job_t){.c = c, .msg = {.to = to_bob, .n_to = 1, .text = "two", .durable = 1}};
    pthread_create(&t, NULL, send5_thread, &j);
    f->alive = 1;
    f->peer_len = 0;
    fake_login(f, CW_OK, "alice", 1);
    again = fake_recv(f, 3000);
    assert_non_null(again);
    assert_string_equal(again->send->text, "two");   /* the live one never came */
    fake_send_reply(f, again->request_id, CW_ACCEPTED, CW_ACCEPTED, 2, 0);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_ACCEPTED);
    cw_reply_destroy(&j.reply);
    cw_env_free(&again);
    expect_event(c, CW_EVENT_RECONNECTED);

    /* A live send whose reply is lost is not retried: CW_ERR_TIMEOUT. */
    j = (send_job_t){.c = c, .msg = {.to = to_bob, .n_to = 1, .text = "live2"}};
    pthread_create(&t, NULL, send_thread, &j);
    first = fake_recv(f, 3000);
    assert_non_null(first);
    assert_false(first->send->durable);
    assert_null(fake_recv(f, 3200));   /* nothing else until the caller gives up */
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_ERR_TIMEOUT);
    assert_string_equal(j.reply->message_id, first->send->message_id);
    cw_reply_destroy(&j.reply);
    cw_env_free(&first);
}

/* Answers Acks OK until one for `want` (earlier ones may cover less, never
 * more, and go up); fails if none comes in time. */
static void fake_expect_ack(fake_t *f, uint64_t want, int timeout_ms)
{
    uint64_t last = 0;
    for (;;) {
        cw_env_t *env = fake_recv(f, timeout_ms);
        assert_non_null(env);
        assert_int_equal(env->body_case, CW_BODY(ACK));
        uint64_t seq = env->ack->seq;
        fake_reply(f, env->request_id, CW_OK, NULL, 0);
        cw_env_free(&env);
        assert_true(seq > last && seq <= want);
        if (seq == want)
            return;
        last = seq;
    }
}

static void test_auto_ack(void **state)
{
    (void) state;
    fake_t *f = fake_new();
    cw_client_opts_t opts = {.auto_ack = 1, .pull = 0};
    cw_client_t *c = logged_in_opts(f, &opts, 0);

    /* Cumulative Acks, CW_AUTO_ACK_DELAY_MS after the hand-overs; the
     * last one only once it is old enough to count as handled. */
    fake_push(f, "bob", 1, "", "one", 1);
    fake_push(f, "bob", 2, "", "two", 2);
    fake_push(f, "bob", 3, "", "three", 3);
    expect_deliver(c, "one", 1);
    expect_deliver(c, "two", 2);
    int64_t t3 = cw_mono_ms();
    expect_deliver(c, "three", 3);
    fake_expect_ack(f, 3, 2000);
    assert_true(cw_mono_ms() - t3 >= CW_AUTO_ACK_DELAY_MS - 20);

    /* Never past a delivery that is queued but not taken: 5 waits in the
     * queue while a fetch hands over 6. */
    fake_push(f, "bob", 4, "", "four", 4);
    fake_push(f, "bob", 5, "", "five", 5);
    expect_deliver(c, "four", 4);
    fake_expect_ack(f, 4, 2000);
    assert_true(fd_readable(c, 2000));   /* 5 is queued */
    fetch_job_t fj = {.c = c};
    pthread_t t;
    pthread_create(&t, NULL, fetch_thread, &fj);
    cw_env_t *env = fake_recv(f, 3000);
    assert_non_null(env);
    uint64_t seqs[] = {5, 6};
    fake_fetch_reply(f, env->request_id, seqs, 2);
    cw_env_free(&env);
    pthread_join(t, NULL);
    assert_int_equal(fj.st, CW_OK);
    assert_int_equal(fj.reply->n_messages, 1);
    assert_int_equal(fj.reply->messages[0].seq, 6);
    cw_reply_destroy(&fj.reply);
    /* No Ack while 5 is untaken (bounded wait: absence over 3 delays). */
    assert_null(fake_recv(f, 3 * CW_AUTO_ACK_DELAY_MS));
    expect_deliver(c, "five", 5);
    fake_expect_ack(f, 6, 2000);

    /* Logout acknowledges what was taken first, and waits for it. */
    fake_push(f, "bob", 7, "", "seven", 7);
    expect_deliver(c, "seven", 7);
    logout_job_t lj = {.c = c};
    pthread_create(&t, NULL, logout_thread, &lj);
    uint64_t top = 0;
    for (;;) {
        env = fake_recv(f, 3000);
        assert_non_null(env);
        if (env->body_case == CW_BODY(LOGOUT)) {
            fake_reply(f, env->request_id, CW_OK, NULL, 0);
            cw_env_free(&env);
            break;
        }
        assert_int_equal(env->body_case, CW_BODY(ACK));
        top = env->ack->seq;
        fake_reply(f, env->request_id, CW_OK, NULL, 0);
        cw_env_free(&env);
    }
    pthread_join(t, NULL);
    assert_int_equal(lj.st, CW_OK);
    assert_int_equal(top, 7);

    cw_client_destroy(&c);
    fake_destroy(&f);
}

/* Login.pull is sent at login and again when logging in after a loss;
 * without auto_ack nothing is acknowledged by the library. */
static void test_pull_login(void **state)
{
    (void) state;
    fake_t *f = fake_new();
    cw_client_opts_t opts = {.pull = 1};
    cw_client_t *c = logged_in_opts(f, &opts, 1);
    f->alive = 0;
    expect_event(c, CW_EVENT_DISCONNECTED);
    f->alive = 1;
    f->peer_len = 0;
    cw_env_t *env = fake_recv(f, 3000);
    assert_non_null(env);
    assert_int_equal(env->body_case, CW_BODY(LOGIN));
    assert_true(env->login->pull);
    assert_int_equal(env->login->resume_token.len, sizeof token_bytes);
    cw_env_free(&env);
    cw_client_destroy(&c);   /* before it tries again */

    cw_client_t *d = logged_in(f);   /* plain client: pull false */
    fake_push(f, "bob", 1, "", "one", 1);
    expect_deliver(d, "one", 1);
    assert_int_equal(cw_client_ack_flush(d, 1000), CW_OK);   /* no auto_ack: nothing */
    assert_null(fake_recv(f, 3 * CW_AUTO_ACK_DELAY_MS));
    cw_client_destroy(&d);
    fake_destroy(&f);
}

/* --- causal events (trace_path, clockd_endpoint) ------------------------ */

/* Sends msg on a helper thread; the fake answers it DELIVERED for bob.
 * Returns the Send envelope the fake saw (caller frees). */
static cw_env_t *traced_send(fake_t *f, cw_client_t *c, cw_send_t msg)
{
    send_job_t j = {.c = c, .msg = msg};
    pthread_t t;
    pthread_create(&t, NULL, send_thread, &j);
    cw_env_t *env = fake_recv(f, 3000);
    assert_non_null(env);
    assert_int_equal(env->body_case, CW_BODY(SEND));
    fake_send_reply(f, env->request_id, CW_OK, CW_DELIVERED, 0, 0);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_OK);
    cw_reply_destroy(&j.reply);
    return env;
}

/* Reads the trace file: its lines (without '\n') into lines[], at most max. */
static size_t read_lines(const char *path, char lines[][1024], size_t max)
{
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    size_t n = 0;
    char buf[1024];
    while (fgets(buf, sizeof buf, fp)) {
        assert_true(n < max);
        size_t len = strlen(buf);
        assert_true(len > 0 && buf[len - 1] == '\n');   /* whole lines only */
        buf[len - 1] = '\0';
        strcpy(lines[n++], buf);
    }
    fclose(fp);
    return n;
}

/* Parses a trace line back: takes out the "ts_us" member (checking that
 * it is a number within [lo, hi]) and returns it; *rest gets the line
 * without it, to compare with the exact canonical form. */
static uint64_t take_ts(const char *line, char *rest, size_t size, uint64_t lo, uint64_t hi)
{
    const char *k = strstr(line, ",\"ts_us\":");
    assert_non_null(k);
    char *end;
    uint64_t ts = strtoull(k + 9, &end, 10);
    assert_true(end > k + 9);
    assert_true(*end == ',' || *end == '}');
    assert_true(ts >= lo && ts <= hi);
    snprintf(rest, size, "%.*s%s", (int) (k - line), line, end);
    return ts;
}

static void test_trace_file(void **state)
{
    (void) state;
    char path[] = "/tmp/cw-client-trace-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "# earlier lines stay\n", 21), 21);   /* appended, not truncated */
    close(fd);
    uint64_t t0 = cw_now_us();

    fake_t *f = fake_new();
    cw_client_opts_t o = {.trace_path = path};
    cw_client_t *c = logged_in_opts(f, &o, 0);

    /* A send (escapes in the id and the text), a delivery, and the same
     * delivery again: dropped as a duplicate, so no event. */
    cw_env_t *env = traced_send(f, c, (cw_send_t){.to = to_bob, .n_to = 1,
                                                   .text = "hi\n\"there\"", .message_id = "m\"1"});
    cw_env_free(&env);
    fake_push(f, "bob", 0, "b7", "yo", 5);
    fake_push(f, "bob", 0, "b7", "yo", 5);
    fake_push(f, "bob", 0, "b8", "again", 6);
    expect_deliver(c, "yo", 0);
    expect_deliver(c, "again", 0);
    /* A multicast to bob twice and carol is one send to two peers; a send
     * without an id gets a generated one, which the key carries. */
    const char *to2[] = {"bob", "carol", "bob"};
    env = traced_send(f, c, (cw_send_t){.to = to2, .n_to = 3, .text = ""});
    char key[256];
    snprintf(key, sizeof key, "alice:%s", env->send->message_id);
    assert_true(strlen(env->send->message_id) > 0);
    cw_env_free(&env);

    cw_trace_stats_t st;
    cw_client_trace_stats(c, &st);
    assert_int_equal(st.recorded, 4);
    assert_int_equal(st.written, 4);
    assert_int_equal(st.write_errors, 0);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.dropped, 0);
    assert_int_equal(cw_client_trace_flush(c, 0), CW_OK);   /* no daemon: nothing pending */
    cw_client_destroy(&c);
    uint64_t t1 = cw_now_us();

    char lines[8][1024], rest[1024];
    assert_int_equal(read_lines(path, lines, 8), 5);
    assert_string_equal(lines[0], "# earlier lines stay");
    uint64_t ts = take_ts(lines[1], rest, sizeof rest, t0, t1);
    assert_string_equal(rest, "{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{\"alice\":1},"
                              "\"msg\":\"alice:m\\\"1\",\"peers\":[\"bob\"],"
                              "\"text\":\"hi\\n\\\"there\\\"\"}");
    uint64_t ts2 = take_ts(lines[2], rest, sizeof rest, ts, t1);
    assert_string_equal(rest, "{\"process\":\"alice\",\"kind\":\"deliver\","
                              "\"clock\":{\"alice\":2,\"bob\":5},\"msg\":\"bob:b7\","
                              "\"peers\":[\"bob\"],\"holdback_us\":0,\"msg_clock\":{\"bob\":5}}");
    ts = take_ts(lines[3], rest, sizeof rest, ts2, t1);
    assert_string_equal(rest, "{\"process\":\"alice\",\"kind\":\"deliver\","
                              "\"clock\":{\"alice\":3,\"bob\":6},\"msg\":\"bob:b8\","
                              "\"peers\":[\"bob\"],\"holdback_us\":0,\"msg_clock\":{\"bob\":6}}");
    take_ts(lines[4], rest, sizeof rest, ts, t1);
    char want[512];
    snprintf(want, sizeof want,
             "{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{\"alice\":4,\"bob\":6},"
             "\"msg\":\"%s\",\"peers\":[\"bob\",\"carol\"]}", key);
    assert_string_equal(rest, want);
    unlink(path);
    fake_destroy(&f);

    /* A trace file that cannot be opened fails cw_client_new. */
    cw_client_opts_t bad = {.trace_path = "/nonexistent-dir/trace.jsonl"};
    assert_null(cw_client_new("tcp://127.0.0.1:1", &bad));
}

/* A fake causeway-clockd: a ROUTER on a free loopback port. */
typedef struct {
    void *ctx;
    void *router;
    char endpoint[64];
    uint8_t peer[256];
    size_t peer_len;
} fake_clockd_t;

static fake_clockd_t *clockd_new(void)
{
    fake_clockd_t *d = calloc(1, sizeof *d);
    d->ctx = zmq_ctx_new();
    d->router = zmq_socket(d->ctx, ZMQ_ROUTER);
    int zero = 0;
    zmq_setsockopt(d->router, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(d->router, "tcp://127.0.0.1:*"), 0);
    size_t len = sizeof d->endpoint;
    zmq_getsockopt(d->router, ZMQ_LAST_ENDPOINT, d->endpoint, &len);
    return d;
}

static void clockd_destroy(fake_clockd_t **p)
{
    zmq_close((*p)->router);
    zmq_ctx_term((*p)->ctx);
    free(*p);
    *p = NULL;
}

/* The next report the client sends, within timeout_ms; NULL if none. The
 * fake broker f keeps sending heartbeats meanwhile. */
static Causeway__V1__ClockdRequest *clockd_recv(fake_clockd_t *d, fake_t *f, int timeout_ms)
{
    int64_t end = cw_mono_ms() + timeout_ms;
    for (;;) {
        int64_t now = cw_mono_ms();
        if (now >= end)
            return NULL;
        if (f->peer_len && now - f->last_hb >= 50)
            fake_heartbeat(f);
        zmq_pollitem_t it = {.socket = d->router, .events = ZMQ_POLLIN};
        if (zmq_poll(&it, 1, 20) == 1)
            break;
    }
    zmq_msg_t id, body;
    zmq_msg_init(&id);
    zmq_msg_init(&body);
    zmq_msg_recv(&id, d->router, 0);
    assert_true(zmq_msg_more(&id));
    zmq_msg_recv(&body, d->router, 0);
    assert_false(zmq_msg_more(&body));   /* a DEALER: one frame, no delimiter */
    d->peer_len = zmq_msg_size(&id);
    memcpy(d->peer, zmq_msg_data(&id), d->peer_len);
    Causeway__V1__ClockdRequest *req =
        causeway__v1__clockd_request__unpack(NULL, zmq_msg_size(&body), zmq_msg_data(&body));
    zmq_msg_close(&id);
    zmq_msg_close(&body);
    assert_non_null(req);
    assert_int_equal(req->version, 1);
    assert_true(req->request_id != 0);   /* it wants to know they are stored */
    assert_int_equal(req->body_case, CAUSEWAY__V1__CLOCKD_REQUEST__BODY_REPORT);
    return req;
}

static void clockd_reply(fake_clockd_t *d, uint64_t rid, int status, uint32_t stored)
{
    Causeway__V1__ClockdReply r = CAUSEWAY__V1__CLOCKD_REPLY__INIT;
    r.request_id = rid;
    r.status = (Causeway__V1__Status) status;
    r.stored = stored;
    uint8_t buf[64];
    size_t len = causeway__v1__clockd_reply__pack(&r, buf);
    assert_int_equal(zmq_send(d->router, d->peer, d->peer_len, ZMQ_SNDMORE), (int) d->peer_len);
    assert_int_equal(zmq_send(d->router, buf, len, 0), (int) len);
}

static uint64_t clock_of(Causeway__V1__ClockEntry *const *e, size_t n, const char *node)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(e[i]->node, node) == 0)
            return e[i]->counter;
    return 0;
}

static void test_clockd_report(void **state)
{
    (void) state;
    fake_t *f = fake_new();
    fake_clockd_t *d = clockd_new();
    cw_client_opts_t o = {.clockd_endpoint = d->endpoint};
    cw_client_t *c = logged_in_opts(f, &o, 0);

    /* A send: reported in a batch of one, confirmed. */
    cw_env_t *env = traced_send(f, c, (cw_send_t){.to = to_bob, .n_to = 1, .text = "hi",
                                                   .message_id = "m1"});
    cw_env_free(&env);
    Causeway__V1__ClockdRequest *req = clockd_recv(d, f, 3000);
    assert_non_null(req);
    assert_int_equal(req->report->n_events, 1);
    Causeway__V1__ClockEvent *e = req->report->events[0];
    assert_string_equal(e->process, "alice");
    assert_int_equal(e->kind, CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_SEND);
    assert_string_equal(e->msg, "alice:m1");
    assert_int_equal(e->n_peers, 1);
    assert_string_equal(e->peers[0], "bob");
    assert_string_equal(e->text, "hi");
    assert_int_equal(e->n_clock, 1);
    assert_int_equal(clock_of(e->clock, e->n_clock, "alice"), 1);
    assert_true(e->ts_us > 0);
    clockd_reply(d, req->request_id, CW_OK, 1);
    causeway__v1__clockd_request__free_unpacked(req, NULL);
    assert_int_equal(cw_client_trace_flush(c, 3000), CW_OK);
    cw_trace_stats_t st;
    cw_client_trace_stats(c, &st);
    assert_int_equal(st.recorded, 1);
    assert_int_equal(st.reported, 1);
    assert_int_equal(st.pending, 0);
    assert_int_equal(st.written, 0);   /* no trace file */

    /* A delivery: while unconfirmed it is pending (flush times out); a
     * STORE_ERROR sends the same event again; then confirmed. */
    fake_push(f, "bob", 0, "b7", "yo", 5);
    expect_deliver(c, "yo", 0);
    req = clockd_recv(d, f, 3000);
    assert_non_null(req);
    assert_int_equal(req->report->n_events, 1);
    e = req->report->events[0];
    assert_int_equal(e->kind, CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_DELIVER);
    assert_string_equal(e->msg, "bob:b7");
    assert_int_equal(e->n_peers, 1);
    assert_string_equal(e->peers[0], "bob");
    assert_int_equal(clock_of(e->clock, e->n_clock, "alice"), 2);
    assert_int_equal(clock_of(e->clock, e->n_clock, "bob"), 5);
    assert_int_equal(e->n_msg_clock, 1);
    assert_int_equal(clock_of(e->msg_clock, e->n_msg_clock, "bob"), 5);
    assert_int_equal(cw_client_trace_flush(c, 100), CW_ERR_TIMEOUT);
    cw_client_trace_stats(c, &st);
    assert_int_equal(st.pending, 1);
    uint64_t first = req->request_id;
    clockd_reply(d, first, CW_STORE_ERROR, 0);
    causeway__v1__clockd_request__free_unpacked(req, NULL);
    req = clockd_recv(d, f, 3000);   /* again, after STORE_RETRY_MS */
    assert_non_null(req);
    assert_true(req->request_id != first);
    assert_int_equal(req->report->n_events, 1);
    assert_string_equal(req->report->events[0]->msg, "bob:b7");
    clockd_reply(d, req->request_id, CW_OK, 1);
    causeway__v1__clockd_request__free_unpacked(req, NULL);
    assert_int_equal(cw_client_trace_flush(c, 3000), CW_OK);
    cw_client_trace_stats(c, &st);
    assert_int_equal(st.recorded, 2);
    assert_int_equal(st.reported, 2);
    assert_int_equal(st.dropped, 0);

    /* Refused for good (BAD_REQUEST): dropped and counted. */
    env = traced_send(f, c, (cw_send_t){.to = to_bob, .n_to = 1, .text = "x"});
    cw_env_free(&env);
    req = clockd_recv(d, f, 3000);
    assert_non_null(req);
    clockd_reply(d, req->request_id, CW_BAD_REQUEST, 0);
    causeway__v1__clockd_request__free_unpacked(req, NULL);
    assert_int_equal(cw_client_trace_flush(c, 3000), CW_OK);
    cw_client_trace_stats(c, &st);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(st.reported, 2);

    cw_client_destroy(&c);
    clockd_destroy(&d);
    fake_destroy(&f);
}

static void test_clockd_unreachable(void **state)
{
    (void) state;
    fake_t *f = fake_new();
    /* Port 1 on loopback: connections are refused. Two events fit. */
    cw_client_opts_t o = {.clockd_endpoint = "tcp://127.0.0.1:1", .clockd_queue = 2,
                          .clockd_linger_ms = 200};
    cw_client_t *c = logged_in_opts(f, &o, 0);
    for (int i = 0; i < 3; i++) {
        int64_t t0 = cw_mono_ms();
        cw_env_t *env = traced_send(f, c, (cw_send_t){.to = to_bob, .n_to = 1, .text = "x"});
        cw_env_free(&env);
        assert_true(cw_mono_ms() - t0 < 1000);   /* the daemon never delays a send */
    }
    cw_trace_stats_t st;
    cw_client_trace_stats(c, &st);
    assert_int_equal(st.recorded, 3);
    assert_int_equal(st.pending, 2);
    assert_int_equal(st.dropped, 1);
    assert_int_equal(st.reported, 0);
    int64_t t0 = cw_mono_ms();
    assert_int_equal(cw_client_trace_flush(c, 100), CW_ERR_TIMEOUT);
    assert_true(cw_mono_ms() - t0 >= 100);
    t0 = cw_mono_ms();
    cw_client_destroy(&c);   /* waits clockd_linger_ms at most */
    assert_true(cw_mono_ms() - t0 < 1500);
    fake_destroy(&f);
}


/* Late marks (PROTOCOL.md §13.14): a delivery whose sender's clock entry is
 * at or below ours is shown flagged late, in the event and in the trace;
 * our own messages and new entries are not. */
static void test_late_mark(void **state)
{
    (void) state;
    char path[] = "/tmp/cw-client-late-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    fake_t *f = fake_new();
    cw_client_opts_t o = {.trace_path = path};
    cw_client_t *c = logged_in_opts(f, &o, 0);
    fake_push(f, "bob", 0, "b1", "new", 2);      /* bob:2 > our 0 */
    fake_push(f, "bob", 0, "b2", "old", 1);      /* bob:1 <= our 2: late */
    fake_push(f, "bob", 0, "b3", "same", 2);     /* bob:2 <= 2: late too */
    fake_push(f, "bob", 0, "b4", "newer", 3);
    fake_push(f, "alice", 0, "a1", "mine", 1);   /* our own: never late */
    const char *texts[] = {"new", "old", "same", "newer", "mine"};
    int late[] = {0, 1, 1, 0, 0};
    for (int i = 0; i < 5; i++) {
        cw_event_t *ev = next_deliver(c, 2000);
        assert_non_null(ev);
        assert_string_equal(ev->msg.text, texts[i]);
        if (ev->msg.late != late[i])
            fail_msg("'%s': late %d, want %d", texts[i], ev->msg.late, late[i]);
        cw_event_destroy(&ev);
    }
    /* Fetched messages too: bob:2 is at or below our bob:3, bob:4 is not. */
    fetch_job_t fj = {.c = c};
    pthread_t t;
    pthread_create(&t, NULL, fetch_thread, &fj);
    cw_env_t *req = fake_recv(f, 3000);
    assert_non_null(req);
    assert_int_equal(req->body_case, CW_BODY(FETCH));
    {
        cw_env_t rep;
        cw_env_init(&rep, req->request_id);
        cw_reply_msg_t r = CAUSEWAY__V1__REPLY__INIT;
        cw_deliver_msg_t d[2] = {CAUSEWAY__V1__DELIVER__INIT, CAUSEWAY__V1__DELIVER__INIT};
        cw_deliver_msg_t *dp[2] = {&d[0], &d[1]};
        cw_clock_entry_msg_t e[2] = {CAUSEWAY__V1__CLOCK_ENTRY__INIT,
                                     CAUSEWAY__V1__CLOCK_ENTRY__INIT};
        cw_clock_entry_msg_t *ep[2] = {&e[0], &e[1]};
        for (int i = 0; i < 2; i++) {
            e[i].node = STR("bob");
            e[i].counter = i ? 4 : 2;
            d[i].from = STR("bob");
            d[i].text = STR(i ? "fresh" : "stale");
            d[i].seq = (uint64_t) i + 1;
            d[i].durable = 1;
            d[i].message_id = STR(i ? "f2" : "f1");
            d[i].clock = &ep[i];
            d[i].n_clock = 1;
        }
        r.messages = dp;
        r.n_messages = 2;
        rep.body_case = CW_BODY(REPLY);
        rep.reply = &r;
        fake_send(f, &rep);
    }
    cw_env_free(&req);
    pthread_join(t, NULL);
    assert_int_equal(fj.st, CW_OK);
    assert_int_equal(fj.reply->n_messages, 2);
    assert_int_equal(fj.reply->messages[0].late, 1);
    assert_int_equal(fj.reply->messages[1].late, 0);
    cw_reply_destroy(&fj.reply);
    cw_client_destroy(&c);
    char lines[8][1024];
    assert_int_equal(read_lines(path, lines, 8), 7);
    int late7[] = {0, 1, 1, 0, 0, 1, 0};   /* the five deliveries, then the two fetched */
    for (int i = 0; i < 7; i++) {
        int has = strstr(lines[i], "\"late\":true}") != NULL;
        if (has != late7[i])
            fail_msg("trace line %d: %s", i, lines[i]);
    }
    unlink(path);
    fake_destroy(&f);
}

/* --- endpoint lists and failover ------------------------------------------ */

static void test_endpoint_lists(void **state)
{
    (void) state;
    cw_client_t *c = cw_client_new(" tcp://127.0.0.1:1 ,\ttcp://127.0.0.1:2", NULL);
    assert_non_null(c);
    assert_int_equal(cw_client_endpoint_count(c), 2);
    assert_string_equal(cw_client_endpoint_at(c, 0), "tcp://127.0.0.1:1");
    assert_string_equal(cw_client_endpoint_at(c, 1), "tcp://127.0.0.1:2");
    assert_null(cw_client_endpoint_at(c, 2));
    assert_string_equal(cw_client_endpoint(c), "tcp://127.0.0.1:1");
    assert_int_equal(cw_client_resume_token(c, NULL, 0), 0);   /* no session */
    cw_client_destroy(&c);
    c = cw_client_new(NULL, NULL);   /* the default: one endpoint */
    assert_int_equal(cw_client_endpoint_count(c), 1);
    assert_string_equal(cw_client_endpoint(c), CW_CLIENT_DEFAULT_ENDPOINT);
    cw_client_destroy(&c);
    assert_int_equal(cw_client_endpoint_count(NULL), 0);
    assert_null(cw_client_endpoint(NULL));

    /* Exactly CW_ENDPOINTS_MAX is fine, one more is refused. */
    char list[CW_ENDPOINTS_MAX * 32 + 32] = "";
    for (int i = 1; i <= CW_ENDPOINTS_MAX; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%stcp://127.0.0.1:%d",
                 i > 1 ? "," : "", i);
    c = cw_client_new(list, NULL);
    assert_non_null(c);
    assert_int_equal(cw_client_endpoint_count(c), CW_ENDPOINTS_MAX);
    assert_string_equal(cw_client_endpoint_at(c, CW_ENDPOINTS_MAX - 1), "tcp://127.0.0.1:16");
    cw_client_destroy(&c);
    strcat(list, ",tcp://127.0.0.1:17");
    errno = 0;
    assert_null(cw_client_new(list, NULL));
    assert_int_equal(errno, EINVAL);

    const char *bad[] = {
        "", " ", ",", "tcp://127.0.0.1:1,", ",tcp://127.0.0.1:1",
        "tcp://127.0.0.1:1,,tcp://127.0.0.1:2", "tcp://127.0.0.1:1, ,tcp://127.0.0.1:2",
        "tcp://127.0.0.1:1,tcp://127.0.0.1:1",        /* twice */
        "tcp://127.0.0.1:1,127.0.0.1:2",              /* no transport */
        "tcp://127.0.0.1:1,tcp://127.0.0.1",          /* no port */
        "tcp://127.0.0.1:1,tcp://127.0.0.1:0", "tcp://127.0.0.1:65536",
        "tcp://127.0.0.1:1,udp://127.0.0.1:2", "tcp://127.0.0.1:1,ipc://",
        "tcp://127.0.0.1:1 tcp://127.0.0.1:2",        /* blank is no separator */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 0;
        c = cw_client_new(bad[i], NULL);
        if (c)
            fail_msg("accepted endpoint list '%s'", bad[i]);
        assert_int_equal(errno, EINVAL);
    }
    char longer[CW_ENDPOINT_LEN_MAX + 32] = "tcp://";
    memset(longer + 6, 'a', CW_ENDPOINT_LEN_MAX);
    strcpy(longer + 6 + CW_ENDPOINT_LEN_MAX, ":1");
    errno = 0;
    assert_null(cw_client_new(longer, NULL));
    assert_int_equal(errno, EINVAL);
}

/* The next event of type `type`, other types skipped (heartbeats keep fake
 * `keep` alive meanwhile if not NULL); NULL on timeout. */
static cw_event_t *next_event_of(cw_client_t *c, cw_event_type_t type, fake_t *keep,
                                 int timeout_ms)
{
    int64_t end = cw_mono_ms() + timeout_ms;
    for (;;) {
        int64_t left = end - cw_mono_ms();
        if (left <= 0)
            return NULL;
        if (keep && keep->peer_len && cw_mono_ms() - keep->last_hb >= 50)
            fake_heartbeat(keep);
        cw_event_t *ev;
        if (cw_client_next_event(c, left < 20 ? (int) left : 20, &ev) != CW_OK)
            continue;
        if (ev->type == type)
            return ev;
        cw_event_destroy(&ev);
    }
}

/* A broker whose connection closes (killed): the client moves to the next
 * endpoint at once, logs in there with its resume token, says so; an
 * unanswered durable send goes out again there with the same id and is
 * answered once. */
static void test_failover_on_close(void **state)
{
    fixture_t *x = *state;
    fake_t *a = x->f, *b = x->g;
    cw_client_t *c = x->c;
    uint8_t tok[CW_RESUME_TOKEN_MAX];
    assert_int_equal(cw_client_resume_token(c, tok, sizeof tok), sizeof token_bytes);
    assert_memory_equal(tok, token_bytes, sizeof token_bytes);

    send_job_t j = {.c = c, .msg = {.to = to_bob, .n_to = 1, .text = "one", .durable = 1}};
    pthread_t t;
    pthread_create(&t, NULL, send5_thread, &j);
    cw_env_t *first = fake_recv(a, 3000);
    assert_non_null(first);
    char a_ep[64];
    snprintf(a_ep, sizeof a_ep, "%s", a->endpoint);
    fake_destroy(&x->f);   /* the TCP connection closes: no waiting for silence */
    fake_login(b, CW_OK, "alice", 1);
    cw_env_t *again = fake_recv(b, 3000);
    assert_non_null(again);
    assert_int_equal(again->body_case, CW_BODY(SEND));
    assert_string_equal(again->send->message_id, first->send->message_id);
    fake_send_reply(b, again->request_id, CW_ACCEPTED, CW_ACCEPTED, 1, 1);
    pthread_join(t, NULL);
    assert_int_equal(j.st, CW_ACCEPTED);
    assert_int_equal(j.reply->duplicate, 1);
    cw_reply_destroy(&j.reply);
    cw_env_free(&first);
    cw_env_free(&again);
    assert_null(fake_recv(b, 300));   /* sent once more, not twice */

    cw_event_t *ev = next_event_of(c, CW_EVENT_DISCONNECTED, b, 2000);
    assert_non_null(ev);
    assert_string_equal(ev->failover.endpoint, a_ep);
    char closed[160];
    snprintf(closed, sizeof closed, "the connection to %s was closed", a_ep);
    assert_string_equal(ev->conn.detail, closed);
    cw_event_destroy(&ev);
    ev = next_event_of(c, CW_EVENT_RECONNECTED, b, 2000);
    assert_non_null(ev);
    assert_string_equal(ev->failover.endpoint, b->endpoint);
    assert_int_equal(ev->failover.switched, 1);
    assert_int_equal(ev->failover.resumed, 0);   /* the fake says no "session resumed" */
    char want[160];
    snprintf(want, sizeof want, "reconnected to %s (new session)", b->endpoint);
    assert_string_equal(ev->conn.detail, want);
    cw_event_destroy(&ev);
    assert_string_equal(cw_client_endpoint(c), b->endpoint);
    assert_int_equal(cw_client_connected(c), 1);
}

/* A silent broker (stopped) is left after heartbeat x liveness; the next
 * one refuses the resume with NAME_TAKEN for a while (the old claim not
 * expired): the client asks it again, and it is not sent back to the
 * silent one meanwhile. */
static void test_failover_silent_then_name_taken(void **state)
{
    fixture_t *x = *state;
    fake_t *a = x->f, *b = x->g;
    cw_client_t *c = x->c;
    a->alive = 0;   /* no more heartbeats, the connection stays up */
    fake_login(b, CW_NAME_TAKEN, "alice", 1);
    fake_login(b, CW_NAME_TAKEN, "alice", 1);
    fake_login(b, CW_OK, "alice", 1);
    cw_event_t *ev = next_event_of(c, CW_EVENT_RECONNECTED, b, 3000);
    assert_non_null(ev);
    assert_string_equal(ev->failover.endpoint, b->endpoint);
    cw_event_destroy(&ev);
    assert_null(fake_recv(a, 200));   /* A never saw a login again */
    assert_int_equal(cw_client_connected(c), 1);
}

/* A login whose first endpoint refuses the connection goes to the next. */
static void test_login_tries_next_endpoint(void **state)
{
    (void) state;
    fake_t *b = fake_new();
    char list[160];
    snprintf(list, sizeof list, "tcp://127.0.0.1:1,%s", b->endpoint);
    cw_client_t *c = logged_in_list(b, list);   /* asserts it ends on b */
    cw_client_destroy(&c);
    /* One endpoint that refuses: UNREACHABLE as before. */
    c = cw_client_new("tcp://127.0.0.1:1", NULL);
    assert_int_equal(cw_client_login(c, "alice", 3000, NULL), CW_ERR_UNREACHABLE);
    cw_client_destroy(&c);
    fake_destroy(&b);
}

/* One endpoint: as before, the heartbeat says the broker is gone and the
 * client logs in again there; events carry no failover endpoint. */
static void test_single_endpoint_no_failover_fields(void **state)
{
    fixture_t *x = *state;
    fake_t *f = x->f;
    cw_client_t *c = x->c;
    fake_lose_and_resume(f, c);   /* DISCONNECTED, RECONNECTED read inside */
    assert_int_equal(cw_client_endpoint_count(c), 1);
    assert_string_equal(cw_client_endpoint(c), f->endpoint);
    f->alive = 0;
    cw_event_t *ev = next_event_of(c, CW_EVENT_DISCONNECTED, NULL, 3000);
    assert_non_null(ev);
    assert_null(ev->failover.endpoint);
    assert_true(strncmp(ev->conn.detail, "no frame from the broker", 24) == 0);
    cw_event_destroy(&ev);
    f->alive = 1;
    f->peer_len = 0;
    fake_login(f, CW_OK, "alice", 1);
    ev = next_event_of(c, CW_EVENT_RECONNECTED, f, 3000);
    assert_non_null(ev);
    assert_null(ev->failover.endpoint);
    assert_string_equal(ev->conn.detail, "logged in again");
    cw_event_destroy(&ev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_destroy),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test_setup_teardown(test_send_events_clock, setup_one, teardown),
        cmocka_unit_test_setup_teardown(test_heartbeat_loss_reconnect, setup_one, teardown),
        cmocka_unit_test_setup_teardown(test_logout_while_lost, setup_one, teardown),
        cmocka_unit_test_setup_teardown(test_dedup_watermark, setup_one, teardown),
        cmocka_unit_test_setup_teardown(test_holdback_order, setup_one, teardown),
        cmocka_unit_test(test_holdback_timeout),
        cmocka_unit_test_setup_teardown(test_durable_retry_lost_reply, setup_one, teardown),
        cmocka_unit_test_setup_teardown(test_durable_retry_lost_connection, setup_one, teardown),
        cmocka_unit_test(test_auto_ack),
        cmocka_unit_test(test_pull_login),
        cmocka_unit_test(test_trace_file),
        cmocka_unit_test(test_clockd_report),
        cmocka_unit_test(test_clockd_unreachable),
        cmocka_unit_test(test_endpoint_lists),
        cmocka_unit_test_setup_teardown(test_failover_on_close, setup_two, teardown),
        cmocka_unit_test_setup_teardown(test_failover_silent_then_name_taken, setup_two, teardown),
        cmocka_unit_test(test_login_tries_next_endpoint),
        cmocka_unit_test_setup_teardown(test_single_endpoint_no_failover_fields, setup_one, teardown),
        cmocka_unit_test(test_late_mark),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
