/*  store_contract_test: what every store backend must do (store_if.h's
 *  contract), run against each backend through its operations table only.
 *
 *  BACKENDS below lists them; a Redis backend is one more line (a `where`
 *  maker that starts or names a cluster, e.g. from the scaleout fixture).
 *  Every test opens a fresh store, talks to it only through cw_store_ops_t
 *  and waits for replies with a bounded timeout (never a sleep). Events
 *  are checked (kind, token 0, DONE batches increasing) and skipped.
 *
 *  Covered: replies in submission order, one per accepted submission;
 *  dedupe (the original's recipients for a repeat, ask-only); acks and
 *  reads; history with retention; the user log (add, pages, reload);
 *  resume clocks; sessions and live sends of a single store; events;
 *  failure statuses (invalid arguments queue nothing, unknown users,
 *  full queues, bad names); shutdown with requests in flight (every one
 *  durable after reopening; under valgrind, nothing leaks).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"
#include "store_if.h"

#ifdef CW_HAVE_REDIS
#include <hiredis/hiredis.h>
#endif

#define WAIT_MS 10000 /* upper bound for any single expected reply */

/* ------------------------------------------------------------------------ */
/* Backends                                                                  */

typedef struct {
    const char *name;
    const cw_store_ops_t *ops;
    /* Makes a fresh, empty place for a store into where (a directory, a
     * URL); 0, or -1 to skip the backend (with why). */
    int (*make)(char *where, size_t len, char *why, size_t whylen);
    void (*drop)(const char *where);
} backend_t;

static int sqlite_make(char *where, size_t len, char *why, size_t whylen)
{
    (void) why;
    (void) whylen;
    snprintf(where, len, "/tmp/cw-store-contract-XXXXXX");
    return mkdtemp(where) ? 0 : -1;
}

static void sqlite_drop(const char *where)
{
    DIR *d = opendir(where);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", where, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(where);
}

#ifdef CW_HAVE_REDIS
/* The cluster is the one CW_REDIS_SEEDS names (tests/scaleout/with_cluster.py
 * starts it for ctest); a fresh store is an empty cluster: FLUSHALL on
 * every node that takes it (replicas refuse: they follow their primary). */
static int redis_cluster_make(char *where, size_t len, char *why, size_t whylen)
{
    const char *seeds = getenv("CW_REDIS_SEEDS");
    if (!seeds || !*seeds) {
        snprintf(why, whylen, "CW_REDIS_SEEDS is not set");
        return -1;
    }
    snprintf(where, len, "redis://%s", seeds);
    int primaries = 0;
    for (const char *p = seeds; p && *p;) {
        const char *end = strchr(p, ',');
        char seed[128];
        size_t l = end ? (size_t) (end - p) : strlen(p);
        if (l >= sizeof seed)
            l = sizeof seed - 1;
        memcpy(seed, p, l);
        seed[l] = 0;
        char *colon = strrchr(seed, ':');
        if (colon) {
            *colon = 0;
            struct timeval tv = {5, 0};
            redisContext *c = redisConnectWithTimeout(seed, atoi(colon + 1), tv);
            if (c && !c->err) {
                redisSetTimeout(c, tv);
                redisReply *r = redisCommand(c, "FLUSHALL");
                if (r && r->type == REDIS_REPLY_STATUS)
                    primaries++;
                if (r)
                    freeReplyObject(r);
            }
            if (c)
                redisFree(c);
        }
        p = end ? end + 1 : NULL;
    }
    if (primaries == 0) {
        snprintf(why, whylen, "no node of %s took FLUSHALL", seeds);
        return -1;
    }
    return 0;
}

static void redis_cluster_drop(const char *where)
{
    (void) where;
}
#endif

static const backend_t BACKENDS[] = {
    {"sqlite", &cw_store_sqlite_ops, sqlite_make, sqlite_drop},
#ifdef CW_HAVE_REDIS
    {"redis", &cw_store_redis_ops, redis_cluster_make, redis_cluster_drop},
#endif
};

/* SQLite always; Redis when a cluster is named (CW_REDIS_SEEDS), so that
 * plain `ctest -R store_contract_test` runs without one and
 * store_contract_redis (ctest) runs both against a cluster it started. */
static size_t n_backends(void)
{
    const char *seeds = getenv("CW_REDIS_SEEDS");
    size_t n = sizeof BACKENDS / sizeof BACKENDS[0];
    return seeds && *seeds ? n : 1;
}
#define N_BACKENDS n_backends()

/* ------------------------------------------------------------------------ */
/* Fixture                                                                   */

typedef struct {
    const backend_t *be;
    char where[1024];
    cw_store_backend_t *s;
    cw_store_loaded_t loaded;
    uint64_t last_batch;      /* highest DONE batch seen */
    size_t events;            /* events seen */
} fx_t;

static void fx_open(fx_t *f, const cw_store_config_t *cfg)
{
    char err[512];
    cw_store_loaded_free(&f->loaded);
    int rc = f->be->ops->open(f->where, cfg, &f->s, &f->loaded, err, sizeof err);
    if (rc != CW_OK)
        fail_msg("%s: open %s: %s", f->be->name, f->where, err);
    assert_non_null(f->s);
    assert_non_null(f->be->ops->poll_handle(f->s));
}

static void fx_close(fx_t *f)
{
    f->be->ops->close(&f->s);
    assert_null(f->s);
    f->be->ops->close(&f->s); /* safe twice */
}

static fx_t *fx_new(size_t backend, const cw_store_config_t *cfg)
{
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->be = &BACKENDS[backend];
    char why[256] = "";
    if (f->be->make(f->where, sizeof f->where, why, sizeof why) != 0)
        fail_msg("%s: cannot make a store: %s", f->be->name, why);
    cw_store_config_t def;
    cw_store_config_init(&def);
    def.retention = 10;
    fx_open(f, cfg ? cfg : &def);
    return f;
}

static void fx_destroy(fx_t **p)
{
    fx_t *f = *p;
    fx_close(f);
    cw_store_loaded_free(&f->loaded);
    f->be->drop(f->where);
    free(f);
    *p = NULL;
}

/* The next reply (events checked and skipped), or NULL after ms. */
static cw_store_reply_t *next_or_null(fx_t *f, int ms)
{
    for (;;) {
        cw_store_reply_t *r = f->be->ops->recv(f->s, ms);
        if (!r || !cw_store_reply_is_event(r))
            return r;
        assert_int_equal(cw_store_reply_token(r), 0);
        assert_true(r->kind >= CW_STORE_EV_ENTRY && r->kind <= CW_STORE_EV_UNFENCED);
        if (r->kind == CW_STORE_EV_DONE) {
            assert_true(r->batch > f->last_batch); /* batches complete in order */
            f->last_batch = r->batch;
        }
        f->events++;
        cw_store_reply_destroy(&r);
    }
}

/* The next reply, which must be for `token` (submission order). */
static cw_store_reply_t *expect(fx_t *f, uint64_t token, int kind)
{
    cw_store_reply_t *r = next_or_null(f, WAIT_MS);
    if (!r)
        fail_msg("%s: no reply for token %llu within %d ms", f->be->name,
                 (unsigned long long) token, WAIT_MS);
    assert_int_equal(cw_store_reply_token(r), token);
    assert_int_equal(cw_store_reply_kind(r), kind);
    return r;
}

/* Expects the reply for token with this status and drops it. */
static void expect_status(fx_t *f, uint64_t token, int kind, int status)
{
    cw_store_reply_t *r = expect(f, token, kind);
    assert_int_equal(cw_store_reply_status(r), status);
    cw_store_reply_destroy(&r);
}

static void add_users(fx_t *f, uint64_t *tok)
{
    static const char *const users[] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(f->be->ops->add_user(f->s, ++*tok, users[i]), CW_OK);
    for (int i = 0; i < 3; i++)
        expect_status(f, *tok - 2 + (uint64_t) i, CW_STORE_REQ_ADD_USER, CW_OK);
}

/* A fresh store of backend b (cfg: NULL for the defaults of fx_new) with
 * the users alice, bob and carol; *tok is the last token used. */
static fx_t *fx_users(size_t b, const cw_store_config_t *cfg, uint64_t *tok)
{
    fx_t *f = fx_new(b, cfg);
    add_users(f, tok);
    return f;
}

/* Appends text from sender to one or two recipients. */
static int append(fx_t *f, uint64_t token, const char *sender, const char *mid,
                  const char *text, const char *to1, const char *to2)
{
    cw_store_rcpt_t r[2] = {{to1, 0, 0}, {to2, 0, 0}};
    cw_store_msg_t m;
    memset(&m, 0, sizeof m);
    m.sender = sender;
    m.message_id = mid;
    m.text = text;
    m.text_len = strlen(text);
    m.timestamp_us = cw_now_us();
    m.rcpts = to1 ? r : NULL;
    m.n_rcpts = to1 ? (to2 ? 2 : 1) : 0;
    return f->be->ops->append(f->s, token, &m);
}

/* append(), which must be taken and answered CW_OK (the reply is the next). */
static void append_ok(fx_t *f, uint64_t token, const char *sender, const char *mid,
                      const char *text, const char *to1, const char *to2)
{
    assert_int_equal(append(f, token, sender, mid, text, to1, to2), CW_OK);
    expect_status(f, token, CW_STORE_REQ_APPEND, CW_OK);
}

#define FOR_EACH_BACKEND(b) for (size_t b = 0; b < N_BACKENDS; b++)

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* Every kind of request, interleaved: one reply each, in submission order. */
static void test_reply_order(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        const cw_store_ops_t *o = f->be->ops;
        static const int kinds[] = {CW_STORE_REQ_APPEND,        CW_STORE_REQ_READ,
                                    CW_STORE_REQ_ACK,           CW_STORE_REQ_HISTORY,
                                    CW_STORE_REQ_ADD_USER,      CW_STORE_REQ_CLOCK,
                                    CW_STORE_REQ_CLAIM_SESSION, CW_STORE_REQ_LIVE_SEND,
                                    CW_STORE_REQ_WHO_PAGE,      CW_STORE_REQ_RELEASE_SESSION};
        enum { ROUNDS = 20, K = sizeof kinds / sizeof kinds[0] };
        static const uint8_t clock[] = {0x0a, 0x03, 'a', 'b', 'c'};
        const char *live_to[] = {"bob", "carol"};
        uint64_t first = t + 1;
        for (int round = 0; round < ROUNDS; round++) {
            char name[32];
            snprintf(name, sizeof name, "user%02d", round);
            assert_int_equal(append(f, ++t, "alice", NULL, "hello", "bob", NULL), CW_OK);
            assert_int_equal(o->read(f->s, ++t, "bob", 0, 100), CW_OK);
            assert_int_equal(o->ack(f->s, ++t, "bob", 0, 1), CW_OK);
            assert_int_equal(o->history(f->s, ++t, "bob", 5), CW_OK);
            assert_int_equal(o->add_user(f->s, ++t, name), CW_OK);
            assert_int_equal(o->save_clock(f->s, ++t, "alice", (uint64_t) round + 1, clock,
                                           sizeof clock), CW_OK);
            assert_int_equal(o->claim_session(f->s, ++t, "carol", NULL, 0, 0), CW_OK);
            assert_int_equal(o->live_send(f->s, ++t, live_to, 2, "x", 1), CW_OK);
            assert_int_equal(o->who_page(f->s, ++t, "", 10), CW_OK);
            assert_int_equal(o->release_session(f->s, ++t, "carol"), CW_OK);
        }
        for (uint64_t k = first; k <= t; k++) {
            cw_store_reply_t *r = expect(f, k, kinds[(k - first) % K]);
            assert_int_equal(cw_store_reply_status(r), CW_OK);
            cw_store_reply_destroy(&r);
        }
        assert_null(next_or_null(f, 0)); /* nothing more */
        fx_destroy(&f);
    }
}

/* A repeated (sender, message_id) stores nothing and is answered with the
 * original's recipients; without an id every append is new. */
static void test_dedupe(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        assert_int_equal(append(f, ++t, "alice", "m1", "first", "bob", "carol"), CW_OK);
        cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_APPEND);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_false(cw_store_reply_duplicate(r));
        assert_int_equal(cw_store_reply_rcpts(r), 2);
        assert_int_equal(cw_store_reply_rcpt_status(r, 0), CW_ACCEPTED);
        assert_int_equal(cw_store_reply_rcpt_seq(r, 0), 1);
        assert_int_equal(cw_store_reply_rcpt_status(r, 1), CW_ACCEPTED);
        assert_int_equal(cw_store_reply_rcpt_seq(r, 1), 1);
        cw_store_reply_destroy(&r);

        /* The repeat names other recipients: still the original's. */
        assert_int_equal(append(f, ++t, "alice", "m1", "again", "carol", NULL), CW_OK);
        r = expect(f, t, CW_STORE_REQ_APPEND);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_true(cw_store_reply_duplicate(r));
        const cw_store_rcpt_t *orig = NULL;
        assert_int_equal(cw_store_reply_original(r, &orig), 2);
        assert_string_equal(orig[0].name, "bob");
        assert_int_equal(orig[0].status, CW_ACCEPTED);
        assert_int_equal(orig[0].seq, 1);
        assert_string_equal(orig[1].name, "carol");
        cw_store_reply_destroy(&r);

        /* Ask only: no recipients, the id of a stored message. */
        assert_int_equal(append(f, ++t, "alice", "m1", "ask", NULL, NULL), CW_OK);
        r = expect(f, t, CW_STORE_REQ_APPEND);
        assert_true(cw_store_reply_duplicate(r));
        assert_int_equal(cw_store_reply_original(r, &orig), 2);
        cw_store_reply_destroy(&r);

        /* The same id from another sender is another message. */
        assert_int_equal(append(f, ++t, "bob", "m1", "mine", "carol", NULL), CW_OK);
        r = expect(f, t, CW_STORE_REQ_APPEND);
        assert_false(cw_store_reply_duplicate(r));
        assert_int_equal(cw_store_reply_rcpt_seq(r, 0), 2);
        cw_store_reply_destroy(&r);

        /* Without an id, every append is new. */
        for (int i = 0; i < 2; i++) {
            assert_int_equal(append(f, ++t, "alice", NULL, "same", "bob", NULL), CW_OK);
            r = expect(f, t, CW_STORE_REQ_APPEND);
            assert_false(cw_store_reply_duplicate(r));
            assert_int_equal(cw_store_reply_rcpt_seq(r, 0), (uint64_t) i + 2);
            cw_store_reply_destroy(&r);
        }
        /* Only one copy of m1 in bob's queue. */
        assert_int_equal(f->be->ops->read(f->s, ++t, "bob", 0, 100), CW_OK);
        r = expect(f, t, CW_STORE_REQ_READ);
        size_t n = 0;
        const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 3);
        assert_string_equal(e[0].text, "first");
        assert_string_equal(e[0].message_id, "m1");
        cw_store_reply_destroy(&r);
        fx_destroy(&f);
    }
}

/* Reads return unacknowledged entries in seq order; acks move the queue. */
static void test_acks_and_reads(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        const cw_store_ops_t *o = f->be->ops;
        for (int i = 1; i <= 5; i++) {
            char text[32];
            snprintf(text, sizeof text, "m%d", i);
            append_ok(f, ++t, "alice", NULL, text, "bob", NULL);
        }
        assert_int_equal(o->read(f->s, ++t, "bob", 0, 10), CW_OK);
        cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_READ);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_int_equal(cw_store_reply_pending(r), 5);
        size_t n = 0;
        const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 5);
        for (size_t i = 0; i < n; i++) {
            char text[32];
            snprintf(text, sizeof text, "m%zu", i + 1);
            assert_int_equal(e[i].seq, i + 1);
            assert_int_equal(e[i].status, CW_OK);
            assert_string_equal(e[i].sender, "alice");
            assert_string_equal(e[i].text, text);
            assert_int_equal(e[i].n_to, 1);
            assert_string_equal(e[i].to[0], "bob");
        }
        cw_store_reply_destroy(&r);

        assert_int_equal(o->read(f->s, ++t, "bob", 4, 1), CW_OK);  /* from, max */
        r = expect(f, t, CW_STORE_REQ_READ);
        e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 1);
        assert_int_equal(e[0].seq, 4);
        cw_store_reply_destroy(&r);

        assert_int_equal(o->ack(f->s, ++t, "bob", 3, 0), CW_OK);
        r = expect(f, t, CW_STORE_REQ_ACK);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_int_equal(cw_store_reply_pending(r), 2);
        cw_store_reply_destroy(&r);
        assert_int_equal(o->ack(f->s, ++t, "bob", 2, 1), CW_OK);      /* below: no-op */
        r = expect(f, t, CW_STORE_REQ_ACK);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_int_equal(cw_store_reply_pending(r), 2);
        cw_store_reply_destroy(&r);

        assert_int_equal(o->read(f->s, ++t, "bob", 0, 10), CW_OK);
        r = expect(f, t, CW_STORE_REQ_READ);
        e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 2);
        assert_int_equal(e[0].seq, 4);
        assert_int_equal(e[1].seq, 5);
        cw_store_reply_destroy(&r);

        assert_int_equal(o->read(f->s, ++t, "carol", 0, 10), CW_OK); /* empty queue */
        r = expect(f, t, CW_STORE_REQ_READ);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_null(cw_store_reply_entries(r, &n));
        assert_int_equal(n, 0);
        cw_store_reply_destroy(&r);
        fx_destroy(&f);
    }
}

/* History: the last n entries, acknowledged ones kept by retention. */
static void test_history(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        cw_store_config_t cfg;
        cw_store_config_init(&cfg);
        cfg.retention = 2;
        uint64_t t = 0;
        fx_t *f = fx_users(b, &cfg, &t);
        const cw_store_ops_t *o = f->be->ops;
        for (int i = 1; i <= 6; i++) {
            append_ok(f, ++t, "alice", NULL, "h", "bob", NULL);
        }
        assert_int_equal(o->ack(f->s, ++t, "bob", 5, 0), CW_OK);
        expect_status(f, t, CW_STORE_REQ_ACK, CW_OK);
        assert_int_equal(o->history(f->s, ++t, "bob", 10), CW_OK);
        cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_HISTORY);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        size_t n = 0;
        const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 3); /* retention 2 acknowledged + 1 pending */
        assert_int_equal(e[0].seq, 4);
        assert_true(e[0].acked);
        assert_int_equal(e[1].seq, 5);
        assert_true(e[1].acked);
        assert_int_equal(e[2].seq, 6);
        assert_false(e[2].acked);
        cw_store_reply_destroy(&r);
        assert_int_equal(o->history(f->s, ++t, "bob", 1), CW_OK);
        r = expect(f, t, CW_STORE_REQ_HISTORY);
        e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 1);
        assert_int_equal(e[0].seq, 6);
        cw_store_reply_destroy(&r);
        fx_destroy(&f);
    }
}

/* The user log: created once, paged in byte order, there after reopening. */
static void test_users(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        fx_t *f = fx_new(b, NULL);
        const cw_store_ops_t *o = f->be->ops;
        assert_int_equal(f->loaded.n_users, 0);
        uint64_t t = 0;
        static const char *const names[] = {"mike", "Zed", "anna", "bob", "éva"};
        for (int i = 0; i < 5; i++)
            assert_int_equal(o->add_user(f->s, ++t, names[i]), CW_OK);
        assert_int_equal(o->add_user(f->s, ++t, "anna"), CW_OK); /* known */
        for (int i = 0; i < 5; i++) {
            cw_store_reply_t *r = expect(f, (uint64_t) i + 1, CW_STORE_REQ_ADD_USER);
            assert_int_equal(cw_store_reply_status(r), CW_OK);
            assert_true(cw_store_reply_created(r));
            cw_store_reply_destroy(&r);
        }
        cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_ADD_USER);
        assert_false(cw_store_reply_created(r));
        cw_store_reply_destroy(&r);

        /* Byte order: "Zed" < "anna" < "bob" < "mike" < "éva". */
        assert_int_equal(o->who_page(f->s, ++t, "", 2), CW_OK);
        r = expect(f, t, CW_STORE_REQ_WHO_PAGE);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_int_equal(r->n_users, 2);
        assert_string_equal(r->users[0].name, "Zed");
        assert_string_equal(r->users[1].name, "anna");
        assert_true(r->truncated);
        cw_store_reply_destroy(&r);
        assert_int_equal(o->who_page(f->s, ++t, "anna", 10), CW_OK);
        r = expect(f, t, CW_STORE_REQ_WHO_PAGE);
        assert_int_equal(r->n_users, 3);
        assert_string_equal(r->users[0].name, "bob");
        assert_string_equal(r->users[2].name, "éva");
        assert_false(r->truncated);
        cw_store_reply_destroy(&r);
        assert_int_equal(o->who_page(f->s, ++t, "éva", 10), CW_OK);
        r = expect(f, t, CW_STORE_REQ_WHO_PAGE);
        assert_int_equal(r->n_users, 0);
        assert_false(r->truncated);
        cw_store_reply_destroy(&r);

        fx_close(f);
        cw_store_config_t cfg;
        cw_store_config_init(&cfg);
        fx_open(f, &cfg);
        assert_int_equal(f->loaded.n_users, 5);
        int seen = 0;
        for (size_t i = 0; i < f->loaded.n_users; i++)
            for (int k = 0; k < 5; k++)
                seen += strcmp(f->loaded.users[i].name, names[k]) == 0;
        assert_int_equal(seen, 5);
        fx_destroy(&f);
    }
}

/* Resume clocks: the last one saved per user is there after reopening. */
static void test_clocks(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        static const uint8_t c1[] = {1, 2, 3}, c2[] = {4, 5, 6, 7};
        assert_int_equal(f->be->ops->save_clock(f->s, ++t, "bob", 1, c1, sizeof c1), CW_OK);
        assert_int_equal(f->be->ops->save_clock(f->s, ++t, "bob", 2, c2, sizeof c2), CW_OK);
        expect_status(f, t - 1, CW_STORE_REQ_CLOCK, CW_OK);
        expect_status(f, t, CW_STORE_REQ_CLOCK, CW_OK);
        fx_close(f);
        cw_store_config_t cfg;
        cw_store_config_init(&cfg);
        fx_open(f, &cfg);
        assert_int_equal(f->loaded.n_clocks, 1);
        assert_string_equal(f->loaded.clocks[0].name, "bob");
        assert_int_equal(f->loaded.clocks[0].own, 2);
        assert_int_equal(f->loaded.clocks[0].clock_len, sizeof c2);
        assert_memory_equal(f->loaded.clocks[0].clock, c2, sizeof c2);
        fx_destroy(&f);
    }
}

/* One store alone: every claim is this broker's, no live send reaches
 * another broker. */
static void test_sessions_single_store(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        const cw_store_ops_t *o = f->be->ops;
        static const uint8_t token[16] = {1};
        assert_int_equal(o->claim_session(f->s, ++t, "bob", NULL, 0, 0), CW_OK);
        assert_int_equal(o->claim_session(f->s, ++t, "bob", token, sizeof token, 1), CW_OK);
        for (uint64_t k = t - 1; k <= t; k++) {
            cw_store_reply_t *r = expect(f, k, CW_STORE_REQ_CLAIM_SESSION);
            assert_int_equal(cw_store_reply_status(r), CW_OK);
            assert_false(r->resumed);
            cw_store_reply_destroy(&r);
        }
        const char *to[] = {"bob", "carol", "nobody"};
        assert_int_equal(o->live_send(f->s, ++t, to, 3, "frame", 5), CW_OK);
        cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_LIVE_SEND);
        assert_int_equal(cw_store_reply_rcpts(r), 3);
        for (size_t i = 0; i < 3; i++)
            assert_int_equal(cw_store_reply_rcpt_status(r, i), CW_OFFLINE);
        cw_store_reply_destroy(&r);
        assert_int_equal(o->release_session(f->s, ++t, "bob"), CW_OK);
        expect_status(f, t, CW_STORE_REQ_RELEASE_SESSION, CW_OK);
        fx_destroy(&f);
    }
}

/* Events: never a reply's place; DONE after the replies of its batch. */
static void test_events(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        for (int i = 0; i < 3; i++) {
            append_ok(f, ++t, "alice", NULL, "e", "bob", NULL);
            uint64_t before = f->last_batch;
            /* Nothing is owed now: whatever comes is an event, and the
             * batch that answered this append completes. */
            cw_store_reply_t *r = next_or_null(f, 200);
            assert_null(r);
            if (f->be->ops == &cw_store_sqlite_ops)
                assert_true(f->last_batch > before); /* SQLite: one DONE per batch */
        }
        fx_destroy(&f);
    }
}

/* Failure statuses, each exact. */
static void test_failures(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        cw_store_config_t cfg;
        cw_store_config_init(&cfg);
        cfg.queue_quota = 2;
        uint64_t t = 0;
        fx_t *f = fx_users(b, &cfg, &t);
        const cw_store_ops_t *o = f->be->ops;
        /* Invalid arguments: nothing queued, no reply. */
        cw_store_msg_t bad;
        memset(&bad, 0, sizeof bad);
        assert_int_equal(o->append(f->s, 900, &bad), CW_ERR_INVALID);
        assert_int_equal(o->ack(f->s, 901, NULL, 1, 0), CW_ERR_INVALID);
        assert_int_equal(o->read(f->s, 902, NULL, 0, 1), CW_ERR_INVALID);
        assert_int_equal(o->live_send(f->s, 903, NULL, 0, "", 0), CW_ERR_INVALID);
        assert_null(next_or_null(f, 0));

        assert_int_equal(append(f, ++t, "alice", NULL, "x", "nobody", NULL), CW_OK);
        cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_APPEND);
        assert_int_equal(cw_store_reply_status(r), CW_UNKNOWN_USER);
        assert_int_equal(cw_store_reply_rcpt_status(r, 0), CW_UNKNOWN_USER);
        cw_store_reply_destroy(&r);
        for (int i = 0; i < 2; i++) {
            append_ok(f, ++t, "alice", NULL, "q", "bob", NULL);
        }
        assert_int_equal(append(f, ++t, "alice", NULL, "q", "bob", "carol"), CW_OK);
        r = expect(f, t, CW_STORE_REQ_APPEND);
        assert_int_equal(cw_store_reply_status(r), CW_OK);       /* stored for carol */
        assert_int_equal(cw_store_reply_rcpt_status(r, 0), CW_QUEUE_FULL);
        assert_int_equal(cw_store_reply_rcpt_status(r, 1), CW_ACCEPTED);
        cw_store_reply_destroy(&r);
        assert_int_equal(append(f, ++t, "alice", NULL, "q", "bob", NULL), CW_OK);
        expect_status(f, t, CW_STORE_REQ_APPEND, CW_QUEUE_FULL);

        assert_int_equal(o->ack(f->s, ++t, "bob", 99, 1), CW_OK);
        expect_status(f, t, CW_STORE_REQ_ACK, CW_BAD_REQUEST);   /* beyond the queue */
        assert_int_equal(o->ack(f->s, ++t, "nobody", 1, 0), CW_OK);
        expect_status(f, t, CW_STORE_REQ_ACK, CW_UNKNOWN_USER);
        assert_int_equal(o->read(f->s, ++t, "nobody", 0, 5), CW_OK);
        expect_status(f, t, CW_STORE_REQ_READ, CW_UNKNOWN_USER);
        assert_int_equal(o->history(f->s, ++t, "nobody", 5), CW_OK);
        expect_status(f, t, CW_STORE_REQ_HISTORY, CW_UNKNOWN_USER);
        assert_int_equal(o->add_user(f->s, ++t, ""), CW_OK);
        expect_status(f, t, CW_STORE_REQ_ADD_USER, CW_BAD_NAME);
        char longname[CW_NAME_MAX_HARD + 2];
        memset(longname, 'n', sizeof longname - 1);
        longname[sizeof longname - 1] = 0;
        assert_int_equal(o->add_user(f->s, ++t, longname), CW_OK);
        expect_status(f, t, CW_STORE_REQ_ADD_USER, CW_BAD_NAME);
        fx_destroy(&f);
    }
}

/* Closing with requests in flight: each was applied before the store
 * stopped (it answers what it received), nothing leaks (valgrind). */
static void test_close_in_flight(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        enum { N = 2000 };
        for (int i = 0; i < N; i++)
            assert_int_equal(append(f, ++t, "alice", NULL, "in flight", "bob", NULL), CW_OK);
        fx_close(f); /* replies never received */
        cw_store_config_t cfg;
        cw_store_config_init(&cfg);
        fx_open(f, &cfg);
        for (size_t i = 0; i < f->loaded.n_users; i++)
            if (strcmp(f->loaded.users[i].name, "bob") == 0) {
                assert_int_equal(f->loaded.users[i].pending, N);
                assert_int_equal(f->loaded.users[i].last_seq, N);
            }
        fx_destroy(&f);
    }
}

/* A fresh instance reads back everything a cleanly closed one wrote, at
 * once and whole: no reply comes back short (the closed writer published
 * its last DONE and dropped its lease; a shared backend asks for a lease it
 * has not heard of instead of cutting the read). */
static void test_reopen_reads_all(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        const cw_store_ops_t *o = f->be->ops;
        enum { N = 300 };
        uint64_t first = t + 1;
        for (int i = 0; i < N; i++) {
            char mid[32];
            snprintf(mid, sizeof mid, "r%d", i);
            assert_int_equal(append(f, ++t, "alice", mid, mid, "bob", i % 2 ? "carol" : NULL),
                             CW_OK);
        }
        for (uint64_t k = first; k <= t; k++)
            expect_status(f, k, CW_STORE_REQ_APPEND, CW_OK);
        fx_close(f);
        cw_store_config_t cfg;
        cw_store_config_init(&cfg);
        cfg.retention = 10;
        fx_open(f, &cfg);
        f->last_batch = 0; /* a new instance numbers its batches from 1 */
        static const char *const who[] = {"bob", "carol"};
        static const size_t want[] = {N, N / 2};
        for (int u = 0; u < 2; u++) {
            assert_int_equal(o->read(f->s, ++t, who[u], 0, 1000), CW_OK);
            cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_READ);
            assert_int_equal(cw_store_reply_status(r), CW_OK);
            assert_false(r->truncated);
            size_t n = 0;
            const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
            assert_int_equal(n, want[u]);
            for (size_t i = 0; i < n; i++)
                assert_int_equal(e[i].seq, i + 1);
            assert_int_equal(cw_store_reply_pending(r), want[u]);
            cw_store_reply_destroy(&r);
            assert_int_equal(o->history(f->s, ++t, who[u], 20), CW_OK);
            r = expect(f, t, CW_STORE_REQ_HISTORY);
            assert_false(r->truncated);
            e = cw_store_reply_entries(r, &n);
            assert_int_equal(n, 20);
            assert_int_equal(e[19].seq, want[u]);
            cw_store_reply_destroy(&r);
        }
        fx_destroy(&f);
    }
}

/* The pending and users counters follow appends, acks and new users (not
 * only what open loaded): Stats reads them. */
static void test_counters_current(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        fx_t *f = fx_new(b, NULL);
        const cw_store_ops_t *o = f->be->ops;
        cw_store_counters_t c;
        o->stats(f->s, &c);
        assert_int_equal(c.users, 0);
        assert_int_equal(c.pending, 0);
        uint64_t t = 0;
        add_users(f, &t);
        o->stats(f->s, &c);
        assert_int_equal(c.users, 3);
        for (int i = 0; i < 5; i++) {
            append_ok(f, ++t, "alice", NULL, "x", "bob", i < 2 ? "carol" : NULL);
        }
        o->stats(f->s, &c);
        assert_int_equal(c.pending, 7);
        assert_int_equal(o->ack(f->s, ++t, "bob", 3, 0), CW_OK);
        expect_status(f, t, CW_STORE_REQ_ACK, CW_OK);
        assert_int_equal(o->ack(f->s, ++t, "bob", 2, 0), CW_OK); /* below: no change */
        expect_status(f, t, CW_STORE_REQ_ACK, CW_OK);
        o->stats(f->s, &c);
        assert_int_equal(c.pending, 4);
        assert_int_equal(o->add_user(f->s, ++t, "dave"), CW_OK);
        expect_status(f, t, CW_STORE_REQ_ADD_USER, CW_OK);
        assert_int_equal(o->add_user(f->s, ++t, "dave"), CW_OK); /* known: not counted */
        expect_status(f, t, CW_STORE_REQ_ADD_USER, CW_OK);
        o->stats(f->s, &c);
        assert_int_equal(c.users, 4);
        fx_destroy(&f);
    }
}

/* Appends text to `to` with TTL ttl_s, received age_s seconds ago. */
static int append_aged(fx_t *f, uint64_t token, const char *to, const char *text,
                       uint32_t ttl_s, uint64_t age_s)
{
    cw_store_rcpt_t r = {to, 0, 0};
    cw_store_msg_t m;
    memset(&m, 0, sizeof m);
    m.sender = "alice";
    m.text = text;
    m.text_len = strlen(text);
    m.timestamp_us = cw_now_us() - age_s * 1000000u;
    m.ttl_s = ttl_s;
    m.rcpts = &r;
    m.n_rcpts = 1;
    return f->be->ops->append(f->s, token, &m);
}

/* append_aged(), which must be taken and answered CW_OK (the reply is the next). */
static void append_aged_ok(fx_t *f, uint64_t token, const char *to, const char *text,
                           uint32_t ttl_s, uint64_t age_s)
{
    assert_int_equal(append_aged(f, token, to, text, ttl_s, age_s), CW_OK);
    expect_status(f, token, CW_STORE_REQ_APPEND, CW_OK);
}

/* Reads user's queue from 0: the reply (status checked), n entries. */
static cw_store_reply_t *read_all(fx_t *f, uint64_t *t, const char *user, size_t *n)
{
    assert_int_equal(f->be->ops->read(f->s, ++*t, user, 0, 100), CW_OK);
    cw_store_reply_t *r = expect(f, *t, CW_STORE_REQ_READ);
    assert_int_equal(cw_store_reply_status(r), CW_OK);
    cw_store_reply_entries(r, n);
    return r;
}

/* TTL (PROTOCOL.md §13.8): an entry whose TTL ran out is read once as
 * CW_EXPIRED without its text, then it is gone from the queue and from
 * pending; an ack past it works. */
static void test_ttl_expired_read_once(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        append_aged_ok(f, ++t, "bob", "stale", 1, 5);
        append_aged_ok(f, ++t, "bob", "fresh", 3600, 0);
        /* History says so too, and removes nothing */
        assert_int_equal(f->be->ops->history(f->s, ++t, "bob", 10), CW_OK);
        cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_HISTORY);
        size_t n = 0;
        const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 2);
        assert_int_equal(e[0].seq, 1);
        assert_int_equal(e[0].status, CW_EXPIRED);
        assert_int_equal(e[1].status, CW_OK);
        cw_store_reply_destroy(&r);
        r = read_all(f, &t, "bob", &n);
        e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 2);
        assert_int_equal(e[0].seq, 1);
        assert_int_equal(e[0].status, CW_EXPIRED);
        assert_int_equal(e[0].text_len, 0);
        assert_int_equal(e[1].seq, 2);
        assert_int_equal(e[1].status, CW_OK);
        assert_string_equal(e[1].text, "fresh");
        assert_int_equal(cw_store_reply_pending(r), 1);
        cw_store_reply_destroy(&r);
        /* reported once: gone now */
        r = read_all(f, &t, "bob", &n);
        e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 1);
        assert_int_equal(e[0].seq, 2);
        assert_int_equal(cw_store_reply_pending(r), 1);
        cw_store_reply_destroy(&r);
        cw_store_counters_t c;
        f->be->ops->stats(f->s, &c);
        assert_int_equal(c.pending, 1);
        assert_int_equal(f->be->ops->ack(f->s, ++t, "bob", 2, 0), CW_OK);
        r = expect(f, t, CW_STORE_REQ_ACK);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_int_equal(cw_store_reply_pending(r), 0);
        cw_store_reply_destroy(&r);
        f->be->ops->stats(f->s, &c);
        assert_int_equal(c.pending, 0);
        fx_destroy(&f);
    }
}

/* A full queue removes its expired entries to make room (without
 * reporting them); with none expired it stays full. */
static void test_full_queue_drops_expired(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        cw_store_config_t cfg;
        cw_store_config_init(&cfg);
        cfg.queue_quota = 2;
        uint64_t t = 0;
        fx_t *f = fx_users(b, &cfg, &t);
        for (int i = 0; i < 2; i++) {
            append_aged_ok(f, ++t, "bob", "stale", 1, 5);
        }
        assert_int_equal(append_aged(f, ++t, "bob", "room", 3600, 0), CW_OK);
        cw_store_reply_t *r = expect(f, t, CW_STORE_REQ_APPEND);
        assert_int_equal(cw_store_reply_status(r), CW_OK);
        assert_int_equal(cw_store_reply_rcpt_status(r, 0), CW_ACCEPTED);
        assert_int_equal(cw_store_reply_rcpt_seq(r, 0), 3);
        cw_store_reply_destroy(&r);
        append_aged_ok(f, ++t, "bob", "more", 3600, 0);
        assert_int_equal(append_aged(f, ++t, "bob", "over", 3600, 0), CW_OK);
        r = expect(f, t, CW_STORE_REQ_APPEND);
        assert_int_equal(cw_store_reply_rcpt_status(r, 0), CW_QUEUE_FULL);
        cw_store_reply_destroy(&r);
        size_t n = 0;
        r = read_all(f, &t, "bob", &n);
        const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 2);
        assert_int_equal(e[0].seq, 3);
        assert_int_equal(e[0].status, CW_OK);
        assert_int_equal(e[1].seq, 4);
        assert_int_equal(cw_store_reply_pending(r), 2);
        cw_store_reply_destroy(&r);
        fx_destroy(&f);
    }
}

/* Shared backends: ENTRY raises an expired entry as a read does
 * (CW_EXPIRED, no text: never its content), once. */
static void test_entry_expired(void **state)
{
    (void) state;
    FOR_EACH_BACKEND(b) {
        if (!BACKENDS[b].ops->shared)
            continue;
        uint64_t t = 0;
        fx_t *f = fx_users(b, NULL, &t);
        const cw_store_ops_t *o = f->be->ops;
        static const uint8_t sess[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        assert_int_equal(o->claim_session(f->s, ++t, "bob", sess, sizeof sess, 0), CW_OK);
        expect_status(f, t, CW_STORE_REQ_CLAIM_SESSION, CW_OK);
        assert_int_equal(append_aged(f, ++t, "bob", "stale", 1, 5), CW_OK);
        assert_int_equal(append_aged(f, ++t, "bob", "fresh", 3600, 0), CW_OK);
        int got[3] = {0, 0, 0}, replies = 0;
        uint64_t until = cw_now_us() + WAIT_MS * 1000ull;
        while ((replies < 2 || !got[2]) && cw_now_us() < until) {
            cw_store_reply_t *r = o->recv(f->s, 100);
            if (!r)
                continue;
            if (!cw_store_reply_is_event(r)) {
                assert_int_equal(cw_store_reply_status(r), CW_OK);
                replies++;
            } else if (r->kind == CW_STORE_EV_ENTRY && strcmp(r->user, "bob") == 0) {
                assert_int_equal(r->n_entries, 1);
                const cw_store_entry_t *e = &r->entries[0];
                assert_true(e->seq == 1 || e->seq == 2);
                assert_false(got[e->seq]); /* once */
                got[e->seq] = 1;
                if (e->seq == 1) {
                    assert_int_equal(e->status, CW_EXPIRED);
                    assert_int_equal(e->text_len, 0);
                } else {
                    assert_int_equal(e->status, CW_OK);
                    assert_string_equal(e->text, "fresh");
                }
            }
            cw_store_reply_destroy(&r);
        }
        assert_int_equal(replies, 2);
        assert_true(got[1] && got[2]);
        size_t n = 0;
        cw_store_reply_t *r = read_all(f, &t, "bob", &n); /* reported once */
        const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
        assert_int_equal(n, 1);
        assert_int_equal(e[0].seq, 2);
        cw_store_reply_destroy(&r);
        fx_destroy(&f);
    }
}

/* A backend that cannot serve says so at open, clearly, and opens nothing
 * (no cluster at that address; or a build without hiredis). */
static void test_store_choose(void **state)
{
    (void) state;
    cw_store_config_t cfg;
    cw_store_config_init(&cfg);
    cfg.retry_ms = 500;
    cw_store_backend_t *s = (cw_store_backend_t *) (void *) &cfg; /* must be NULLed */
    cw_store_loaded_t loaded;
    char err[512] = "";
    int rc = cw_store_redis_ops.open("redis://127.0.0.1:1", &cfg, &s, &loaded, err, sizeof err);
    assert_int_not_equal(rc, CW_OK);
    assert_null(s);
#ifdef CW_HAVE_REDIS
    assert_non_null(strstr(err, "cannot reach the cluster"));
#else
    assert_non_null(strstr(err, "without libhiredis-dev"));
#endif
    cw_store_loaded_free(&loaded);

    /* Choosing a backend from the broker's options. */
    const char *where = NULL;
    assert_ptr_equal(cw_store_choose("/d", "", &where, err, sizeof err), &cw_store_sqlite_ops);
    assert_string_equal(where, "/d");
    assert_ptr_equal(cw_store_choose("", "redis://a:1,b:2", &where, err, sizeof err),
                     &cw_store_redis_ops);
    assert_null(cw_store_choose("/d", "redis://a:1", &where, err, sizeof err));
    assert_non_null(strstr(err, "mutually exclusive"));
    assert_null(cw_store_choose("", "", &where, err, sizeof err));
    static const char *const bad[] = {"redis://", "redis://a", "redis://a:", "redis://:1",
                                      "redis://a:0", "redis://a:65536", "redis://a:1,",
                                      "http://a:1", "redis://a:1x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = 0;
        if (cw_store_redis_url_check(bad[i], &n, err, sizeof err) == 0)
            fail_msg("%s accepted", bad[i]);
    }
    size_t n = 0;
    assert_int_equal(cw_store_redis_url_check("redis://10.0.0.1:7000,h:7001,[::1]:7002", &n, err,
                                              sizeof err), 0);
    assert_int_equal(n, 3);
}

int main(void)
{
    cw_log_set_level(CW_LOG_ERROR);
    cw_log_set_tag("store_contract_test");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reply_order),
        cmocka_unit_test(test_dedupe),
        cmocka_unit_test(test_acks_and_reads),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_users),
        cmocka_unit_test(test_clocks),
        cmocka_unit_test(test_sessions_single_store),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_failures),
        cmocka_unit_test(test_close_in_flight),
        cmocka_unit_test(test_reopen_reads_all),
        cmocka_unit_test(test_counters_current),
        cmocka_unit_test(test_ttl_expired_read_once),
        cmocka_unit_test(test_full_queue_drops_expired),
        cmocka_unit_test(test_entry_expired),
        cmocka_unit_test(test_store_choose),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
