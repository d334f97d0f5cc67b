/*  store_actor_test: unit tests of broker/store_actor.c (the SQLite
 *  backend's thread; tests/unit/store_contract_test.c holds what every
 *  backend must do).
 *
 *  The store runs over a VFS shim whose WAL fsync can be held at a gate:
 *  the test knows exactly when the actor is inside a COMMIT, so it can
 *  check that no reply leaves before the commit returns and that requests
 *  queued meanwhile are committed together. Waits are on events (a
 *  semaphore, replies with a timeout), never sleeps.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"
#include "store.h"
#include "store_actor.h"

#define WAIT_MS 10000   /* upper bound for any single expected event */

/* ------------------------------------------------------------------------ */
/* Gate VFS: the default VFS, with the WAL's fsync held or failed on demand */

typedef struct {
    sqlite3_file base;
    sqlite3_file *real;
    int is_wal;
} gate_file_t;

static struct {
    volatile int hold;            /* hold the next WAL sync at the gate */
    volatile int fail;            /* fail WAL syncs with SQLITE_IOERR_FSYNC */
    sem_t reached;                /* posted when a sync is held */
    sem_t release;                /* posted by the test to let it go */
} g_gate;

static sqlite3_vfs *g_real;
static sqlite3_vfs g_vfs;

#define REAL(p) (((gate_file_t *) (p))->real)
static int g_close(sqlite3_file *p) { return REAL(p)->pMethods->xClose(REAL(p)); }
static int g_read(sqlite3_file *p, void *b, int n, sqlite3_int64 o)
{
    return REAL(p)->pMethods->xRead(REAL(p), b, n, o);
}
static int g_write(sqlite3_file *p, const void *b, int n, sqlite3_int64 o)
{
    return REAL(p)->pMethods->xWrite(REAL(p), b, n, o);
}
static int g_truncate(sqlite3_file *p, sqlite3_int64 n)
{
    return REAL(p)->pMethods->xTruncate(REAL(p), n);
}
static int g_sync(sqlite3_file *p, int flags)
{
    if (((gate_file_t *) p)->is_wal) {
        if (g_gate.fail)
            return SQLITE_IOERR_FSYNC;
        if (g_gate.hold) {
            g_gate.hold = 0;
            sem_post(&g_gate.reached);
            while (sem_wait(&g_gate.release) != 0 && errno == EINTR) {
            }
        }
    }
    return REAL(p)->pMethods->xSync(REAL(p), flags);
}
static int g_size(sqlite3_file *p, sqlite3_int64 *n)
{
    return REAL(p)->pMethods->xFileSize(REAL(p), n);
}
static int g_lock(sqlite3_file *p, int l) { return REAL(p)->pMethods->xLock(REAL(p), l); }
static int g_unlock(sqlite3_file *p, int l) { return REAL(p)->pMethods->xUnlock(REAL(p), l); }
static int g_reserved(sqlite3_file *p, int *o)
{
    return REAL(p)->pMethods->xCheckReservedLock(REAL(p), o);
}
static int g_fcntl(sqlite3_file *p, int op, void *a)
{
    return REAL(p)->pMethods->xFileControl(REAL(p), op, a);
}
static int g_sector(sqlite3_file *p) { return REAL(p)->pMethods->xSectorSize(REAL(p)); }
static int g_devchar(sqlite3_file *p)
{
    return REAL(p)->pMethods->xDeviceCharacteristics(REAL(p));
}
static int g_shm_map(sqlite3_file *p, int pg, int sz, int ext, void volatile **pp)
{
    return REAL(p)->pMethods->xShmMap(REAL(p), pg, sz, ext, pp);
}
static int g_shm_lock(sqlite3_file *p, int off, int n, int flags)
{
    return REAL(p)->pMethods->xShmLock(REAL(p), off, n, flags);
}
static void g_shm_barrier(sqlite3_file *p) { REAL(p)->pMethods->xShmBarrier(REAL(p)); }
static int g_shm_unmap(sqlite3_file *p, int del)
{
    return REAL(p)->pMethods->xShmUnmap(REAL(p), del);
}
static int g_fetch(sqlite3_file *p, sqlite3_int64 o, int n, void **pp)
{
    return REAL(p)->pMethods->xFetch(REAL(p), o, n, pp);
}
static int g_unfetch(sqlite3_file *p, sqlite3_int64 o, void *ptr)
{
    return REAL(p)->pMethods->xUnfetch(REAL(p), o, ptr);
}

static const sqlite3_io_methods gate_io = {
    3,        g_close,   g_read,       g_write,       g_truncate,  g_sync,
    g_size,   g_lock,    g_unlock,     g_reserved,    g_fcntl,     g_sector,
    g_devchar, g_shm_map, g_shm_lock,  g_shm_barrier, g_shm_unmap, g_fetch,
    g_unfetch,
};

static int gate_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p, int flags, int *out)
{
    gate_file_t *f = (gate_file_t *) p;
    f->real = (sqlite3_file *) (f + 1);
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = g_real->xOpen(g_real, name, f->real, flags, out);
    f->base.pMethods = rc == SQLITE_OK ? &gate_io : NULL;
    return rc;
}

static void gate_register(void)
{
    if (g_real)
        return;
    g_real = sqlite3_vfs_find(NULL);
    g_vfs = *g_real;
    g_vfs.zName = "cwgate";
    g_vfs.szOsFile = (int) sizeof(gate_file_t) + g_real->szOsFile;
    g_vfs.xOpen = gate_open;
    g_vfs.pNext = NULL;
    assert_int_equal(sqlite3_vfs_register(&g_vfs, 0), SQLITE_OK);
    sem_init(&g_gate.reached, 0, 0);
    sem_init(&g_gate.release, 0, 0);
}

/* Waits for the actor to be held at the gate (bounded). */
static void gate_wait_reached(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WAIT_MS / 1000;
    int rc;
    while ((rc = sem_timedwait(&g_gate.reached, &ts)) != 0 && errno == EINTR) {
    }
    assert_int_equal(rc, 0);
}

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static char *make_dir(void)
{
    char *d = strdup("/tmp/cw-store-actor-test-XXXXXX");
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

static void remove_dir(char **dirp)
{
    DIR *d = opendir(*dirp);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", *dirp, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(*dirp);
    free(*dirp);
    *dirp = NULL;
}

/* Opens a store (over the gate VFS) with users alice, bob, carol. */
static cw_store_t *open_store(const char *dir)
{
    gate_register();
    cw_store_options_t opt;
    cw_store_options_init(&opt);
    opt.sqlite_vfs = "cwgate";
    opt.retention = 10;
    cw_store_t *s = NULL;
    char err[256];
    int rc = cw_store_open(dir, &opt, &s, err, sizeof err);
    if (rc != CW_OK)
        fail_msg("open: %s", err);
    static const char *const users[] = {"alice", "bob", "carol"};
    for (int i = 0; i < 3; i++)
        assert_int_equal(cw_store_add_user(s, users[i], NULL), CW_OK);
    return s;
}

static int submit_append(cw_store_actor_t *a, uint64_t token, const char *mid, const char *text,
                         const char *to1, const char *to2)
{
    cw_store_rcpt_t r[2] = {{to1, 0, 0}, {to2, 0, 0}};
    cw_store_msg_t m = {0};
    m.sender = "alice";
    m.message_id = mid;
    m.text = text;
    m.text_len = strlen(text);
    m.timestamp_us = cw_now_us();
    m.rcpts = r;
    m.n_rcpts = to2 ? 2 : 1;
    return cw_store_actor_append(a, token, &m);
}

/* The next reply, waiting up to ms. Events are checked and
 * skipped: SQLite raises only DONE, numbered from 1 (store_if.h). */
static cw_store_reply_t *next_reply(cw_store_actor_t *a, int ms)
{
    for (;;) {
        cw_store_reply_t *r = cw_store_actor_recv(a, ms);
        if (!r || !cw_store_reply_is_event(r))
            return r;
        assert_int_equal(cw_store_reply_token(r), 0);
        assert_int_equal(cw_store_reply_kind(r), CW_STORE_EV_DONE);
        assert_true(r->batch >= 1);
        cw_store_reply_destroy(&r);
    }
}

static cw_store_reply_t *recv_reply(cw_store_actor_t *a)
{
    cw_store_reply_t *r = next_reply(a, WAIT_MS);
    if (!r)
        fail_msg("no reply from the store actor within %d ms", WAIT_MS);
    return r;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                     */

/* A repeat is answered with the original's recipients, also when it names
 * others or nobody (PROTOCOL.md §13.2). */
static void test_duplicate_original(void **state)
{
    (void) state;
    char *dir = make_dir();
    cw_store_t *s = open_store(dir);
    cw_store_actor_t *a = cw_store_actor_new(&s, 0);
    assert_non_null(a);
    assert_int_equal(cw_store_actor_add_user(a, 1, "dave"), CW_OK);
    assert_int_equal(submit_append(a, 2, "m", "hi", "bob", "dave"), CW_OK);
    assert_int_equal(submit_append(a, 3, "m", "hi", "dave", NULL), CW_OK);   /* subset */
    assert_int_equal(submit_append(a, 4, "m", "hi", "carol", NULL), CW_OK);  /* disjoint */
    cw_store_msg_t ask = {.sender = "alice", .message_id = "m", .text = "", .n_rcpts = 0};
    assert_int_equal(cw_store_actor_append(a, 5, &ask), CW_OK);             /* nobody */
    ask.message_id = "";
    assert_int_equal(cw_store_actor_append(a, 6, &ask), CW_ERR_INVALID);    /* no id */
    cw_store_reply_t *rep = recv_reply(a);
    assert_int_equal(cw_store_reply_kind(rep), CW_STORE_REQ_ADD_USER);
    cw_store_reply_destroy(&rep);
    rep = recv_reply(a);
    assert_false(cw_store_reply_duplicate(rep));
    const cw_store_rcpt_t *o = NULL;
    assert_int_equal(cw_store_reply_original(rep, &o), 0);
    cw_store_reply_destroy(&rep);
    for (uint64_t token = 3; token <= 5; token++) {
        rep = recv_reply(a);
        assert_int_equal(cw_store_reply_token(rep), token);
        assert_int_equal(cw_store_reply_status(rep), CW_OK);
        assert_true(cw_store_reply_duplicate(rep));
        assert_int_equal(cw_store_reply_original(rep, &o), 2);
        assert_string_equal(o[0].name, "bob");
        assert_int_equal(o[0].status, CW_ACCEPTED);
        assert_int_equal(o[0].seq, 1);
        assert_string_equal(o[1].name, "dave");
        assert_int_equal(o[1].seq, 1);
        cw_store_reply_destroy(&rep);
    }
    cw_store_actor_destroy(&a);
    remove_dir(&dir);
}

/* Every request kind through the pipe and back. */
static void test_roundtrip(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir);
    cw_store_actor_t *a = cw_store_actor_new(&s, 0);
    assert_non_null(a);
    assert_null(s);                                   /* the actor owns it */
    assert_non_null(cw_store_actor_sock(a));

    assert_int_equal(cw_store_actor_add_user(a, 1, "dave"), CW_OK);
    assert_int_equal(cw_store_actor_add_user(a, 2, "dave"), CW_OK);
    static const uint8_t clock[] = {1, 2, 3, 0, 4};
    cw_store_rcpt_t r[2] = {{"bob", 0, 0}, {"dave", 0, 0}};
    cw_store_msg_t m = {.sender = "alice", .message_id = "x1", .text = "hi there",
                        .text_len = 8, .clock = clock, .clock_len = sizeof clock,
                        .timestamp_us = 42, .rcpts = r, .n_rcpts = 2};
    assert_int_equal(cw_store_actor_append(a, 3, &m), CW_OK);
    assert_int_equal(cw_store_actor_append(a, 4, &m), CW_OK);        /* a retry */
    assert_int_equal(submit_append(a, 5, NULL, "second", "bob", NULL), CW_OK);
    assert_int_equal(cw_store_actor_read(a, 6, "bob", 0, 10), CW_OK);
    assert_int_equal(cw_store_actor_ack(a, 7, "bob", 1), CW_OK);
    assert_int_equal(cw_store_actor_history(a, 8, "bob", 10), CW_OK);
    assert_int_equal(cw_store_actor_ack(a, 9, "bob", 99), CW_OK);     /* refused by the store */
    assert_int_equal(cw_store_actor_read(a, 10, "nobody", 0, 10), CW_OK);
    assert_int_equal(submit_append(a, 11, NULL, "x", "nobody", NULL), CW_OK);

    cw_store_reply_t *rep = recv_reply(a);
    assert_int_equal(cw_store_reply_token(rep), 1);
    assert_int_equal(cw_store_reply_kind(rep), CW_STORE_REQ_ADD_USER);
    assert_int_equal(cw_store_reply_status(rep), CW_OK);
    assert_true(cw_store_reply_created(rep));
    cw_store_reply_destroy(&rep);
    cw_store_reply_destroy(&rep);                     /* safe twice */
    rep = recv_reply(a);
    assert_int_equal(cw_store_reply_token(rep), 2);
    assert_false(cw_store_reply_created(rep));
    cw_store_reply_destroy(&rep);

    rep = recv_reply(a);                              /* 3: the append */
    assert_int_equal(cw_store_reply_token(rep), 3);
    assert_int_equal(cw_store_reply_kind(rep), CW_STORE_REQ_APPEND);
    assert_int_equal(cw_store_reply_status(rep), CW_OK);
    assert_false(cw_store_reply_duplicate(rep));
    assert_int_equal(cw_store_reply_rcpts(rep), 2);
    assert_int_equal(cw_store_reply_rcpt_status(rep, 0), CW_ACCEPTED);
    assert_int_equal(cw_store_reply_rcpt_seq(rep, 0), 1);
    assert_int_equal(cw_store_reply_rcpt_status(rep, 1), CW_ACCEPTED);
    assert_int_equal(cw_store_reply_rcpt_seq(rep, 1), 1);
    cw_store_reply_destroy(&rep);
    rep = recv_reply(a);                              /* 4: the retry */
    assert_int_equal(cw_store_reply_token(rep), 4);
    assert_true(cw_store_reply_duplicate(rep));
    assert_int_equal(cw_store_reply_rcpt_seq(rep, 0), 1);
    cw_store_reply_destroy(&rep);
    rep = recv_reply(a);
    assert_int_equal(cw_store_reply_token(rep), 5);
    assert_int_equal(cw_store_reply_rcpt_seq(rep, 0), 2);
    cw_store_reply_destroy(&rep);

    rep = recv_reply(a);                              /* 6: read */
    assert_int_equal(cw_store_reply_token(rep), 6);
    assert_int_equal(cw_store_reply_status(rep), CW_OK);
    assert_int_equal(cw_store_reply_pending(rep), 2);
    size_t n;
    const cw_store_entry_t *e = cw_store_reply_entries(rep, &n);
    assert_int_equal(n, 2);
    assert_int_equal(e[0].seq, 1);
    assert_int_equal(e[0].status, CW_OK);
    assert_string_equal(e[0].sender, "alice");
    assert_string_equal(e[0].message_id, "x1");
    assert_int_equal(e[0].text_len, 8);
    assert_string_equal(e[0].text, "hi there");
    assert_int_equal(e[0].timestamp_us, 42);
    assert_int_equal(e[0].clock_len, sizeof clock);
    assert_memory_equal(e[0].clock, clock, sizeof clock);
    assert_int_equal(e[0].n_to, 2);
    assert_string_equal(e[0].to[0], "bob");
    assert_string_equal(e[0].to[1], "dave");
    assert_int_equal(e[1].seq, 2);
    assert_null(e[1].clock);
    assert_string_equal(e[1].message_id, "");
    assert_int_equal(e[1].n_to, 1);
    assert_string_equal(e[1].to[0], "bob");
    cw_store_reply_destroy(&rep);

    rep = recv_reply(a);                              /* 7: ack */
    assert_int_equal(cw_store_reply_kind(rep), CW_STORE_REQ_ACK);
    assert_int_equal(cw_store_reply_status(rep), CW_OK);
    assert_int_equal(cw_store_reply_pending(rep), 1);
    cw_store_reply_destroy(&rep);
    rep = recv_reply(a);                              /* 8: history */
    e = cw_store_reply_entries(rep, &n);
    assert_int_equal(n, 2);
    assert_true(e[0].acked);
    assert_false(e[1].acked);
    cw_store_reply_destroy(&rep);
    rep = recv_reply(a);
    assert_int_equal(cw_store_reply_token(rep), 9);
    assert_int_equal(cw_store_reply_status(rep), CW_BAD_REQUEST);
    cw_store_reply_destroy(&rep);
    rep = recv_reply(a);
    assert_int_equal(cw_store_reply_status(rep), CW_UNKNOWN_USER);
    assert_null(cw_store_reply_entries(rep, &n));
    assert_int_equal(n, 0);
    cw_store_reply_destroy(&rep);
    rep = recv_reply(a);
    assert_int_equal(cw_store_reply_token(rep), 11);
    assert_int_equal(cw_store_reply_status(rep), CW_UNKNOWN_USER);
    assert_int_equal(cw_store_reply_rcpt_status(rep, 0), CW_UNKNOWN_USER);
    cw_store_reply_destroy(&rep);
    assert_null(next_reply(a, 0));           /* one reply per request */

    /* invalid submissions queue nothing */
    cw_store_msg_t bad = {0};
    assert_int_equal(cw_store_actor_append(a, 12, &bad), CW_ERR_INVALID);
    assert_int_equal(cw_store_actor_ack(a, 13, NULL, 1), CW_ERR_INVALID);
    assert_null(next_reply(a, 0));

    cw_store_actor_stats_t st;
    cw_store_actor_stats(a, &st);
    assert_int_equal(st.requests, 11);
    assert_int_equal(st.appended, 2);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.pending, 2);                  /* bob 1, dave 1 */
    assert_int_equal(st.users, 4);
    assert_int_equal(st.failed_groups, 0);
    cw_store_actor_destroy(&a);
    cw_store_actor_destroy(&a);                       /* safe twice */
    assert_null(a);
    remove_dir(&dir);
}

/* The group commit, observed: while the actor is held inside a COMMIT, no
 * reply comes out; requests queued meanwhile are committed together, and
 * answered only after that commit. */
static void test_group_commit(void **state)
{
    enum { QUEUED = 500 };
    char *dir = make_dir();
    cw_store_t *s = open_store(dir);
    cw_store_actor_t *a = cw_store_actor_new(&s, 0);
    assert_non_null(a);

    g_gate.hold = 1;
    assert_int_equal(submit_append(a, 0, "first", "first", "bob", NULL), CW_OK);
    gate_wait_reached();                   /* the actor is inside the first COMMIT */
    for (int i = 1; i <= QUEUED; i++) {
        char mid[16];
        snprintf(mid, sizeof mid, "g%d", i);
        assert_int_equal(submit_append(a, (uint64_t) i, mid, "queued", "bob",
                                       i % 2 ? "carol" : NULL), CW_OK);
    }
    /* Not durable yet, so nothing may have been answered. */
    assert_null(next_reply(a, 0));
    cw_store_actor_stats_t st;
    cw_store_actor_stats(a, &st);
    uint64_t commits_before = st.commits;
    assert_int_equal(st.requests, 0);
    sem_post(&g_gate.release);

    uint64_t seen_bob = 0;
    for (int i = 0; i <= QUEUED; i++) {
        cw_store_reply_t *rep = recv_reply(a);
        /* Every reply describes committed data: the actor's committed
         * append count covers this reply. */
        cw_store_actor_stats(a, &st);
        assert_true(st.appended >= (uint64_t) i + 1);
        assert_int_equal(cw_store_reply_token(rep), (uint64_t) i);   /* arrival order */
        assert_int_equal(cw_store_reply_status(rep), CW_OK);
        assert_int_equal(cw_store_reply_rcpt_status(rep, 0), CW_ACCEPTED);
        assert_int_equal(cw_store_reply_rcpt_seq(rep, 0), ++seen_bob);
        cw_store_reply_destroy(&rep);
    }
    cw_store_actor_stats(a, &st);
    /* The first COMMIT, then all QUEUED requests in one group (they were
     * all waiting in the pipe when the actor came back for more). */
    assert_int_equal(st.commits - commits_before, 1 + 1);
    assert_int_equal(st.max_group, QUEUED);
    assert_int_equal(st.requests, QUEUED + 1);
    assert_int_equal(st.appended, QUEUED + 1);
    assert_int_equal(st.entries, QUEUED + 1 + QUEUED / 2);
    cw_store_actor_destroy(&a);

    /* Everything answered is on disk. */
    s = open_store(dir);
    uint64_t pending;
    assert_int_equal(cw_store_pending(s, "bob", &pending), CW_OK);
    assert_int_equal(pending, QUEUED + 1);
    assert_int_equal(cw_store_pending(s, "carol", &pending), CW_OK);
    assert_int_equal(pending, QUEUED / 2);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* The pipe is bounded: while the actor is stuck, submits end in
 * CW_FLOODED (nothing queued) instead of blocking the router; every
 * accepted submit still gets exactly one reply. */
static void test_flooded(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir);
    cw_store_actor_t *a = cw_store_actor_new(&s, 100);
    assert_non_null(a);
    g_gate.hold = 1;
    assert_int_equal(submit_append(a, 0, NULL, "first", "bob", NULL), CW_OK);
    gate_wait_reached();
    size_t ok = 1;
    int flooded = 0;
    for (int i = 1; i < 100000 && !flooded; i++) {
        int rc = submit_append(a, (uint64_t) i, NULL, "x", "bob", NULL);
        if (rc == CW_FLOODED)
            flooded = 1;
        else {
            assert_int_equal(rc, CW_OK);
            ok++;
        }
    }
    assert_true(flooded);
    assert_true(ok <= 100 + 1000 + 1);   /* about max_queued (plus libzmq's slack) */
    sem_post(&g_gate.release);
    for (size_t i = 0; i < ok; i++) {
        cw_store_reply_t *rep = recv_reply(a);
        assert_int_equal(cw_store_reply_token(rep), i);
        assert_int_equal(cw_store_reply_status(rep), CW_OK);
        cw_store_reply_destroy(&rep);
    }
    assert_null(next_reply(a, 0));
    /* room again */
    assert_int_equal(submit_append(a, 7, NULL, "x", "bob", NULL), CW_OK);
    cw_store_reply_t *rep = recv_reply(a);
    assert_int_equal(cw_store_reply_token(rep), 7);
    cw_store_reply_destroy(&rep);
    cw_store_actor_destroy(&a);
    remove_dir(&dir);
}

/* A failed commit: every request of the group is answered CW_STORE_ERROR,
 * and the store (failed state) keeps refusing until reopened. */
static void test_commit_failure(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir);
    cw_store_actor_t *a = cw_store_actor_new(&s, 0);
    assert_non_null(a);
    g_gate.fail = 1;
    for (int i = 0; i < 5; i++)
        assert_int_equal(submit_append(a, (uint64_t) i, NULL, "x", "bob", NULL), CW_OK);
    for (int i = 0; i < 5; i++) {
        cw_store_reply_t *rep = recv_reply(a);
        assert_int_equal(cw_store_reply_token(rep), (uint64_t) i);
        assert_int_equal(cw_store_reply_status(rep), CW_STORE_ERROR);
        assert_int_equal(cw_store_reply_rcpt_status(rep, 0), CW_STORE_ERROR);
        assert_int_equal(cw_store_reply_rcpt_seq(rep, 0), 0);
        cw_store_reply_destroy(&rep);
    }
    g_gate.fail = 0;
    assert_int_equal(cw_store_actor_read(a, 9, "bob", 0, 10), CW_OK);
    cw_store_reply_t *rep = recv_reply(a);
    assert_int_equal(cw_store_reply_status(rep), CW_STORE_ERROR);   /* sticky */
    cw_store_reply_destroy(&rep);
    cw_store_actor_stats_t st;
    cw_store_actor_stats(a, &st);
    assert_true(st.failed_groups >= 1);
    assert_int_equal(st.appended, 0);
    cw_store_actor_destroy(&a);

    s = open_store(dir);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* Opens dir's store under an actor, submits n appends to bob without
 * reading a reply, destroys the actor and opens the store again (the
 * test fails if it cannot: the actor must have closed it). */
static cw_store_t *append_and_destroy(const char *dir, int n)
{
    cw_store_t *s = open_store(dir);
    cw_store_actor_t *a = cw_store_actor_new(&s, 0);
    assert_non_null(a);
    for (int i = 0; i < n; i++)
        assert_int_equal(submit_append(a, (uint64_t) i, NULL, "x", "bob", NULL), CW_OK);
    cw_store_actor_destroy(&a);
    assert_null(a);
    return open_store(dir);
}

/* Destroying the actor with requests in flight: it answers (and so
 * commits) everything it received before "$TERM", then closes the store. */
static void test_destroy_drains(void **state)
{
    enum { N = 3000 };
    char *dir = make_dir();
    cw_store_t *s = append_and_destroy(dir, N);
    uint64_t pending;
    assert_int_equal(cw_store_pending(s, "bob", &pending), CW_OK);
    assert_int_equal(pending, N);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* A signal must not cut cw_store_actor_destroy short: when it returns the
 * thread has closed the store (its LOCK is free, so the directory opens at
 * once) and holds nothing of ours. A second thread interrupts the main
 * thread every 100 µs with a handler installed without SA_RESTART, as
 * SIGTERM during shutdown, a profiler or libFuzzer's SIGALRM would (CZMQ's
 * zactor_destroy returned early on EINTR and the store thread went on
 * closing a store the caller had already given up on). */
static _Atomic int g_pester_stop;
static _Atomic unsigned long g_pester_hits;

static void on_pester(int sig)
{
    (void) sig;
    atomic_fetch_add(&g_pester_hits, 1);
}

static void *pester(void *arg)
{
    pthread_t target = *(pthread_t *) arg;
    const struct timespec gap = {0, 100 * 1000};
    while (!atomic_load(&g_pester_stop)) {
        pthread_kill(target, SIGUSR1);
        nanosleep(&gap, NULL);
    }
    return NULL;
}

static void test_destroy_under_signals(void **state)
{
    (void) state;
    enum { ROUNDS = 40, N = 200 };
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_pester;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;                      /* no SA_RESTART: EINTR reaches libzmq */
    assert_int_equal(sigaction(SIGUSR1, &sa, &old), 0);
    char *dir = make_dir();
    pthread_t self = pthread_self(), th;
    atomic_store(&g_pester_stop, 0);
    atomic_store(&g_pester_hits, 0);
    assert_int_equal(pthread_create(&th, NULL, pester, &self), 0);
    for (int r = 0; r < ROUNDS; r++) {
        /* open_store fails the test if the LOCK is still held. */
        cw_store_t *s = append_and_destroy(dir, N);
        uint64_t pending;
        assert_int_equal(cw_store_pending(s, "bob", &pending), CW_OK);
        assert_int_equal(pending, (uint64_t) (r + 1) * N);
        cw_store_close(&s);
    }
    atomic_store(&g_pester_stop, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(sigaction(SIGUSR1, &old, NULL), 0);
    /* The test is only a test if the signals landed while it ran. */
    assert_true(atomic_load(&g_pester_hits) > ROUNDS);
    remove_dir(&dir);
}

int main(void)
{
    cw_log_set_level(CW_LOG_WARN);
    cw_log_set_tag("store_actor_test");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_duplicate_original),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_flooded),
        cmocka_unit_test(test_commit_failure),
        cmocka_unit_test(test_destroy_drains),
        cmocka_unit_test(test_destroy_under_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
