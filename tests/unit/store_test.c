/*  store_test: unit tests of broker/store.c (the SQLite store).
 *
 *  Each test works in its own mkdtemp directory, removed at the end. Time is
 *  passed explicitly (timestamps, now_us), so TTL tests never sleep. The
 *  crash test forks a child that appends and reports each committed batch
 *  over a pipe, SIGKILLs it mid-stream and checks the reopened store; the
 *  fault tests run SQLite over a VFS shim that fails a chosen I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"
#include "store.h"
#include "seq_ledger.h"

#define T0 1700000000000000ull   /* a fixed "now" in microseconds */
#define SEC 1000000ull

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */

static char *make_dir(void)
{
    char *d = strdup("/tmp/cw-store-test-XXXXXX");
    assert_non_null(d);
    assert_non_null(mkdtemp(d));
    return d;
}

static void remove_dir(char **dirp)
{
    char *dir = *dirp;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
    *dirp = NULL;
}

static cw_store_t *open_store(const char *dir, const cw_store_options_t *opt)
{
    cw_store_t *s = NULL;
    char err[256];
    int rc = cw_store_open(dir, opt, &s, err, sizeof err);
    if (rc != CW_OK)
        fail_msg("open %s: %s: %s", dir, cw_status_name(rc), err);
    return s;
}

static void add_users(cw_store_t *s, const char *const *names)
{
    for (; *names; names++)
        assert_int_equal(cw_store_add_user(s, *names, NULL), CW_OK);
}

/* A message with up to 8 recipients, in one place for building batches. */
typedef struct {
    cw_store_msg_t m;
    cw_store_rcpt_t r[8];
} tmsg_t;

static void tmsg(tmsg_t *t, const char *sender, const char *mid, const char *text, uint64_t ts,
                 uint32_t ttl, const char *rcpts)
{
    memset(t, 0, sizeof *t);
    t->m.sender = sender;
    t->m.message_id = mid;
    t->m.text = text;
    t->m.text_len = strlen(text);
    t->m.timestamp_us = ts;
    t->m.ttl_s = ttl;
    t->m.rcpts = t->r;
    /* rcpts: comma-separated names, kept in static storage per slot */
    static char names[64][8][32];
    static int slot;
    slot = (slot + 1) % 64;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", rcpts);
    size_t n = 0;
    for (char *save = NULL, *p = strtok_r(buf, ",", &save); p && n < 8;
         p = strtok_r(NULL, ",", &save)) {
        snprintf(names[slot][n], sizeof names[slot][n], "%s", p);
        t->r[n].name = names[slot][n];
        n++;
    }
    t->m.n_rcpts = n;
}

/* Appends one message in its own transaction; returns the call's status. */
static int append1(cw_store_t *s, tmsg_t *t)
{
    return cw_store_append_batch(s, &t->m, 1);
}

static const char *const base_users[] = {"alice", "bob", "carol", NULL};

/* ------------------------------------------------------------------------ */
/* Basic append / read / ack                                                 */

static void test_append_read_ack(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);

    static const uint8_t clock[] = {0x0a, 0x07, 0x0a, 0x05, 'a', 'l', 'i', 'c', 'e', 0x10, 0x03};
    tmsg_t b[3];
    tmsg(&b[0], "alice", "m1", "hello bob", T0, 0, "bob");
    tmsg(&b[1], "alice", "m2", "hello both", T0 + 1, 0, "bob,carol");
    tmsg(&b[2], "carol", NULL, "no id", T0 + 2, 0, "bob");
    b[1].m.clock = clock;
    b[1].m.clock_len = sizeof clock;
    cw_store_msg_t batch[3] = {b[0].m, b[1].m, b[2].m};
    assert_int_equal(cw_store_append_batch(s, batch, 3), CW_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(batch[i].status, CW_OK);
        assert_false(batch[i].duplicate);
    }
    assert_int_equal(batch[0].rcpts[0].status, CW_ACCEPTED);
    assert_int_equal(batch[0].rcpts[0].seq, 1);
    assert_int_equal(batch[1].rcpts[0].seq, 2);          /* bob */
    assert_int_equal(batch[1].rcpts[1].seq, 1);          /* carol: own queue */
    assert_int_equal(batch[2].rcpts[0].seq, 3);

    cw_store_stats_t st;
    cw_store_stats(s, &st);
    assert_int_equal(st.appended, 3);
    assert_int_equal(st.entries, 4);
    assert_int_equal(st.pending, 4);
    assert_int_equal(st.commits, 4);   /* 3 add_user + 1 batch: one fsync for the batch */

    cw_store_entry_t *e;
    size_t n;
    assert_int_equal(cw_store_read(s, "bob", 1, 100, T0, &e, &n), CW_OK);
    assert_int_equal(n, 3);
    assert_int_equal(e[0].seq, 1);
    assert_int_equal(e[0].status, CW_OK);
    assert_string_equal(e[0].sender, "alice");
    assert_string_equal(e[0].message_id, "m1");
    assert_string_equal(e[0].text, "hello bob");
    assert_int_equal(e[0].text_len, 9);
    assert_int_equal(e[0].timestamp_us, T0);
    assert_int_equal(e[0].expires_us, 0);
    assert_null(e[0].clock);
    assert_int_equal(e[0].n_to, 1);
    assert_string_equal(e[0].to[0], "bob");
    assert_int_equal(e[1].seq, 2);
    assert_int_equal(e[1].n_to, 2);
    assert_string_equal(e[1].to[1], "carol");
    assert_int_equal(e[1].clock_len, sizeof clock);
    assert_memory_equal(e[1].clock, clock, sizeof clock);
    assert_string_equal(e[2].message_id, "");
    cw_store_entries_free(&e, n);
    assert_null(e);

    /* from_seq and max */
    assert_int_equal(cw_store_read(s, "bob", 2, 1, T0, &e, &n), CW_OK);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].seq, 2);
    cw_store_entries_free(&e, n);

    uint64_t pending = 0;
    assert_int_equal(cw_store_ack(s, "bob", 2, &pending), CW_OK);
    assert_int_equal(pending, 1);
    assert_int_equal(cw_store_read(s, "bob", 0, 100, T0, &e, &n), CW_OK);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].seq, 3);
    cw_store_entries_free(&e, n);

    /* ack is cumulative and idempotent; beyond the last seq is refused */
    assert_int_equal(cw_store_ack(s, "bob", 1, &pending), CW_OK);
    assert_int_equal(pending, 1);
    assert_int_equal(cw_store_ack(s, "bob", 4, NULL), CW_BAD_REQUEST);
    assert_int_equal(cw_store_ack(s, "nobody", 1, NULL), CW_UNKNOWN_USER);
    assert_int_equal(cw_store_read(s, "nobody", 0, 10, T0, &e, &n), CW_UNKNOWN_USER);
    assert_int_equal(cw_store_ack(s, "bob", 3, &pending), CW_OK);
    assert_int_equal(pending, 0);
    assert_int_equal(cw_store_read(s, "bob", 0, 100, T0, &e, &n), CW_OK);
    assert_int_equal(n, 0);
    assert_null(e);

    /* unknown recipients and malformed messages */
    tmsg_t u;
    tmsg(&u, "alice", "m9", "x", T0, 0, "nobody");
    assert_int_equal(append1(s, &u), CW_OK);
    assert_int_equal(u.m.status, CW_UNKNOWN_USER);
    assert_int_equal(u.r[0].status, CW_UNKNOWN_USER);
    tmsg(&u, "alice", "m10", "x", T0, 0, "nobody,bob");
    assert_int_equal(append1(s, &u), CW_OK);
    assert_int_equal(u.m.status, CW_OK);
    assert_int_equal(u.r[0].status, CW_UNKNOWN_USER);
    assert_int_equal(u.r[1].status, CW_ACCEPTED);
    assert_int_equal(u.r[1].seq, 4);
    tmsg(&u, "", "m11", "x", T0, 0, "bob");
    assert_int_equal(append1(s, &u), CW_OK);
    assert_int_equal(u.m.status, CW_BAD_REQUEST);
    /* a name twice in one message: one entry, same seq twice */
    tmsg(&u, "alice", "m12", "x", T0, 0, "bob,bob");
    assert_int_equal(append1(s, &u), CW_OK);
    assert_int_equal(u.r[0].seq, 5);
    assert_int_equal(u.r[1].seq, 5);
    assert_int_equal(cw_store_pending(s, "bob", &pending), CW_OK);
    assert_int_equal(pending, 2);

    /* a broadcast: queued for everyone named, delivered with an empty "to" */
    tmsg(&u, "alice", "all-1", "to all", T0, 0, "bob,carol");
    u.m.broadcast = 1;
    assert_int_equal(append1(s, &u), CW_OK);
    assert_int_equal(cw_store_read(s, "carol", 0, 10, T0, &e, &n), CW_OK);
    assert_int_equal(n, 2);
    assert_true(e[1].broadcast);
    assert_int_equal(e[1].n_to, 0);
    assert_null(e[1].to);
    assert_false(e[0].broadcast);
    cw_store_entries_free(&e, n);
    assert_int_equal(cw_store_read(s, "carol", 0, 0, T0, &e, &n), CW_OK);   /* max 0 */
    assert_int_equal(n, 0);

    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    cw_store_close(&s);   /* safe twice */
    remove_dir(&dir);
}

/* ------------------------------------------------------------------------ */
/* Restart: seqs, queues and the user log persist                            */

static void test_seqs_survive_reopen(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    tmsg_t t;
    for (int i = 0; i < 5; i++) {
        tmsg(&t, "alice", NULL, "x", T0 + (uint64_t) i, 0, "bob");
        assert_int_equal(append1(s, &t), CW_OK);
    }
    /* Ack everything: with retention 0 every entry is deleted, yet the
     * next seq must not be reused. */
    assert_int_equal(cw_store_ack(s, "bob", 5, NULL), CW_OK);
    tmsg(&t, "alice", NULL, "kept", T0 + 10, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.r[0].seq, 6);
    cw_store_close(&s);

    s = open_store(dir, NULL);
    uint64_t pending;
    assert_int_equal(cw_store_pending(s, "bob", &pending), CW_OK);
    assert_int_equal(pending, 1);
    cw_store_entry_t *e;
    size_t n;
    assert_int_equal(cw_store_read(s, "bob", 0, 10, T0, &e, &n), CW_OK);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].seq, 6);
    assert_string_equal(e[0].text, "kept");
    cw_store_entries_free(&e, n);
    assert_int_equal(cw_store_ack(s, "bob", 6, NULL), CW_OK);
    cw_store_close(&s);

    s = open_store(dir, NULL);
    tmsg(&t, "alice", NULL, "after", T0 + 20, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.r[0].seq, 7);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

static void test_user_log_persists(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    int created = -1;
    assert_int_equal(cw_store_add_user(s, "zed", &created), CW_OK);
    assert_int_equal(created, 1);
    assert_int_equal(cw_store_add_user(s, "amy", &created), CW_OK);
    assert_int_equal(created, 1);
    assert_int_equal(cw_store_add_user(s, "zed", &created), CW_OK);
    assert_int_equal(created, 0);
    assert_int_equal(cw_store_add_user(s, "", &created), CW_BAD_NAME);
    char longname[100];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_int_equal(cw_store_add_user(s, longname, &created), CW_BAD_NAME);
    tmsg_t t;
    tmsg(&t, "zed", NULL, "hi", T0, 0, "amy");
    assert_int_equal(append1(s, &t), CW_OK);
    cw_store_close(&s);

    s = open_store(dir, NULL);
    cw_store_user_t *u;
    size_t n;
    assert_int_equal(cw_store_list_users(s, &u, &n), CW_OK);
    assert_int_equal(n, 2);
    assert_string_equal(u[0].name, "zed");     /* order of first appearance */
    assert_int_equal(u[0].pending, 0);         /* an empty queue persists too */
    assert_int_equal(u[0].last_seq, 0);
    assert_true(u[0].created_us > 0);
    assert_string_equal(u[1].name, "amy");
    assert_int_equal(u[1].pending, 1);
    assert_int_equal(u[1].last_seq, 1);
    cw_store_users_free(&u, n);
    assert_null(u);
    /* zed's empty queue works after the restart */
    tmsg(&t, "amy", NULL, "back", T0, 0, "zed");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.r[0].status, CW_ACCEPTED);
    assert_int_equal(t.r[0].seq, 1);
    cw_store_stats_t st;
    cw_store_stats(s, &st);
    assert_int_equal(st.users, 2);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* ------------------------------------------------------------------------ */
/* Quota, TTL, duplicates, retention                                         */

static void test_quota(void **state)
{
    char *dir = make_dir();
    cw_store_options_t opt;
    cw_store_options_init(&opt);
    opt.queue_quota = 3;
    cw_store_t *s = open_store(dir, &opt);
    add_users(s, base_users);

    tmsg_t t[5];
    cw_store_msg_t batch[5];
    for (int i = 0; i < 5; i++) {
        char mid[16];
        snprintf(mid, sizeof mid, "q%d", i);
        tmsg(&t[i], "alice", strdup(mid), "x", T0, 0, "bob");
        batch[i] = t[i].m;
    }
    assert_int_equal(cw_store_append_batch(s, batch, 5), CW_OK);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(batch[i].status, CW_OK);
        assert_int_equal(batch[i].rcpts[0].seq, (uint64_t) i + 1);
    }
    for (int i = 3; i < 5; i++) {
        assert_int_equal(batch[i].status, CW_QUEUE_FULL);
        assert_int_equal(batch[i].rcpts[0].status, CW_QUEUE_FULL);
        assert_int_equal(batch[i].rcpts[0].seq, 0);
    }
    /* multicast: full for bob, fine for carol */
    tmsg_t m;
    tmsg(&m, "alice", "multi", "x", T0, 0, "bob,carol");
    assert_int_equal(append1(s, &m), CW_OK);
    assert_int_equal(m.m.status, CW_OK);
    assert_int_equal(m.r[0].status, CW_QUEUE_FULL);
    assert_int_equal(m.r[1].status, CW_ACCEPTED);
    /* a message refused for everyone leaves no dedup record: retry works */
    assert_int_equal(cw_store_ack(s, "bob", 1, NULL), CW_OK);
    tmsg(&t[0], "alice", "q3", "x", T0, 0, "bob");
    assert_int_equal(append1(s, &t[0]), CW_OK);
    assert_int_equal(t[0].m.status, CW_OK);
    assert_false(t[0].m.duplicate);
    assert_int_equal(t[0].r[0].seq, 4);   /* the refused ones took no seq */
    cw_store_stats_t st;
    cw_store_stats(s, &st);
    assert_int_equal(st.queue_full, 3);
    for (int i = 0; i < 5; i++)
        free((char *) batch[i].message_id);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

static void test_ttl_expiry(void **state)
{
    char *dir = make_dir();
    cw_store_options_t opt;
    cw_store_options_init(&opt);
    opt.default_ttl_s = 60;
    opt.queue_quota = 4;
    cw_store_t *s = open_store(dir, &opt);
    add_users(s, base_users);
    tmsg_t t;
    tmsg(&t, "alice", "short", "gone soon", T0, 10, "bob");     /* seq 1, expires T0+10s */
    assert_int_equal(append1(s, &t), CW_OK);
    tmsg(&t, "alice", "default", "default ttl", T0, 0, "bob"); /* seq 2, T0+60s */
    assert_int_equal(append1(s, &t), CW_OK);
    tmsg(&t, "alice", "later", "later", T0 + 30 * SEC, 10, "bob"); /* seq 3, T0+40s */
    assert_int_equal(append1(s, &t), CW_OK);

    cw_store_entry_t *e;
    size_t n;
    /* before anything expires: history shows all three */
    assert_int_equal(cw_store_read(s, "bob", 0, 10, T0 + 5 * SEC, &e, &n), CW_OK);
    assert_int_equal(n, 3);
    assert_int_equal(e[0].status, CW_OK);
    assert_int_equal(e[0].expires_us, T0 + 10 * SEC);
    assert_int_equal(e[1].expires_us, T0 + 60 * SEC);
    cw_store_entries_free(&e, n);

    /* at T0+11s the first is reported EXPIRED once, with no text */
    assert_int_equal(cw_store_read(s, "bob", 0, 10, T0 + 11 * SEC, &e, &n), CW_OK);
    assert_int_equal(n, 3);
    assert_int_equal(e[0].seq, 1);
    assert_int_equal(e[0].status, CW_EXPIRED);
    assert_int_equal(e[0].text_len, 0);
    assert_string_equal(e[0].message_id, "short");
    assert_int_equal(e[1].status, CW_OK);
    assert_int_equal(e[2].status, CW_OK);
    cw_store_entries_free(&e, n);
    uint64_t pending;
    cw_store_pending(s, "bob", &pending);
    assert_int_equal(pending, 2);
    assert_int_equal(cw_store_read(s, "bob", 0, 10, T0 + 11 * SEC, &e, &n), CW_OK);
    assert_int_equal(n, 2);
    assert_int_equal(e[0].seq, 2);
    cw_store_entries_free(&e, n);
    cw_store_stats_t st;
    cw_store_stats(s, &st);
    assert_int_equal(st.expired, 1);

    /* a full queue drops its expired entries to make room */
    tmsg(&t, "alice", NULL, "4", T0 + 31 * SEC, 0, "bob");      /* seq 4 */
    assert_int_equal(append1(s, &t), CW_OK);
    tmsg(&t, "alice", NULL, "5", T0 + 31 * SEC, 0, "bob");      /* seq 5: full now */
    assert_int_equal(append1(s, &t), CW_OK);
    tmsg(&t, "alice", NULL, "6", T0 + 32 * SEC, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.m.status, CW_QUEUE_FULL);
    tmsg(&t, "alice", NULL, "7", T0 + 45 * SEC, 0, "bob");      /* seq 3 expired at 40s */
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.m.status, CW_OK);
    assert_int_equal(t.r[0].seq, 6);
    cw_store_stats(s, &st);
    assert_int_equal(st.expired, 2);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* A repeat is answered with the original's recipients (cw_store_original),
 * whatever it names; a repeat naming nobody (n_rcpts 0) only asks. */
static void test_original_recipients(void **state)
{
    (void) state;
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    const uint64_t now = cw_now_us();
    add_users(s, base_users);
    tmsg_t w, a, b;
    tmsg(&w, "alice", "w", "warm-up", now, 0, "carol");
    assert_int_equal(append1(s, &w), CW_OK);
    tmsg(&a, "alice", "orig", "original", now, 0, "bob,carol");
    assert_int_equal(append1(s, &a), CW_OK);
    cw_store_rcpt_t *o = NULL;
    size_t n = 0;
    assert_int_equal(cw_store_original(s, "alice", "orig", &o, &n), CW_OK);
    assert_int_equal(n, 2);
    assert_string_equal(o[0].name, "bob");
    assert_int_equal(o[0].status, CW_ACCEPTED);
    assert_int_equal(o[0].seq, 1);
    assert_string_equal(o[1].name, "carol");
    assert_int_equal(o[1].seq, 2);
    free(o);
    assert_int_equal(cw_store_original(s, "bob", "orig", &o, &n), CW_UNKNOWN_USER);
    assert_null(o);
    assert_int_equal(cw_store_original(s, "alice", "", &o, &n), CW_ERR_INVALID);
    /* a disjoint repeat is a duplicate; the repeat's own names say
     * BAD_REQUEST (not recipients of the original) */
    tmsg(&b, "alice", "orig", "again", now, 0, "alice");
    assert_int_equal(append1(s, &b), CW_OK);
    assert_true(b.m.duplicate);
    assert_int_equal(b.r[0].status, CW_BAD_REQUEST);
    /* asking with no recipients */
    tmsg(&b, "alice", "orig", "again", now, 0, "");
    assert_int_equal(b.m.n_rcpts, 0);
    assert_int_equal(append1(s, &b), CW_OK);
    assert_true(b.m.duplicate);
    assert_int_equal(b.m.status, CW_OK);
    tmsg(&b, "alice", "never", "new", now, 0, "");
    assert_int_equal(append1(s, &b), CW_OK);
    assert_false(b.m.duplicate);
    assert_int_equal(b.m.status, CW_UNKNOWN_USER);
    tmsg(&b, "alice", NULL, "no id", now, 0, "");
    assert_int_equal(append1(s, &b), CW_OK);
    assert_int_equal(b.m.status, CW_BAD_REQUEST);
    cw_store_stats_t st;
    cw_store_stats(s, &st);
    assert_int_equal(st.appended, 2);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

static void test_duplicates(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    const uint64_t now = cw_now_us();   /* the dedup window counts from receipt time */
    add_users(s, base_users);
    tmsg_t a;
    tmsg(&a, "alice", "id-1", "once", now, 0, "bob,carol");
    assert_int_equal(append1(s, &a), CW_OK);
    assert_false(a.m.duplicate);

    /* the retry (another transaction) gets the original seqs */
    tmsg_t b;
    tmsg(&b, "alice", "id-1", "once", now + 5, 0, "bob,carol");
    assert_int_equal(append1(s, &b), CW_OK);
    assert_true(b.m.duplicate);
    assert_int_equal(b.m.status, CW_OK);
    assert_int_equal(b.r[0].status, CW_ACCEPTED);
    assert_int_equal(b.r[0].seq, a.r[0].seq);
    assert_int_equal(b.r[1].seq, a.r[1].seq);
    uint64_t pending;
    cw_store_pending(s, "bob", &pending);
    assert_int_equal(pending, 1);

    /* a repeat inside one batch; another sender's same id is not one */
    tmsg_t c[3];
    tmsg(&c[0], "carol", "id-2", "x", now, 0, "bob");
    tmsg(&c[1], "carol", "id-2", "x", now, 0, "bob");
    tmsg(&c[2], "bob", "id-1", "x", now, 0, "alice");
    cw_store_msg_t batch[3] = {c[0].m, c[1].m, c[2].m};
    assert_int_equal(cw_store_append_batch(s, batch, 3), CW_OK);
    assert_false(batch[0].duplicate);
    assert_true(batch[1].duplicate);
    assert_int_equal(batch[1].rcpts[0].seq, batch[0].rcpts[0].seq);
    assert_false(batch[2].duplicate);

    /* no id: never deduplicated */
    tmsg(&a, "alice", "", "a", now, 0, "bob");
    assert_int_equal(append1(s, &a), CW_OK);
    tmsg(&a, "alice", NULL, "a", now, 0, "bob");
    assert_int_equal(append1(s, &a), CW_OK);
    assert_false(a.m.duplicate);
    cw_store_pending(s, "bob", &pending);
    assert_int_equal(pending, 4);

    /* still remembered after every recipient acked it (dedup window), and
     * after a restart */
    assert_int_equal(cw_store_ack(s, "bob", 4, NULL), CW_OK);
    assert_int_equal(cw_store_ack(s, "carol", 1, NULL), CW_OK);
    cw_store_close(&s);
    s = open_store(dir, NULL);
    tmsg(&b, "alice", "id-1", "once", now + 9, 0, "bob,carol");
    assert_int_equal(append1(s, &b), CW_OK);
    assert_true(b.m.duplicate);
    assert_int_equal(b.r[0].seq, 1);
    cw_store_stats_t st;
    cw_store_stats(s, &st);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.appended, 0);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);

    /* past the window (receipt time T0 is years ago, the window a day) the
     * record is pruned by the next ack, and the id is free again */
    s = open_store(dir, NULL);
    tmsg(&a, "alice", "old-1", "x", T0, 0, "bob");
    assert_int_equal(append1(s, &a), CW_OK);
    tmsg(&b, "alice", "old-1", "x", T0, 0, "bob");
    assert_int_equal(append1(s, &b), CW_OK);
    assert_true(b.m.duplicate);                 /* queued: remembered */
    assert_int_equal(cw_store_ack(s, "bob", a.r[0].seq, NULL), CW_OK);
    tmsg(&b, "alice", "old-1", "x", T0, 0, "bob");
    assert_int_equal(append1(s, &b), CW_OK);
    assert_false(b.m.duplicate);
    assert_int_equal(b.r[0].seq, a.r[0].seq + 1);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

static void test_history_retention(void **state)
{
    char *dir = make_dir();
    cw_store_options_t opt;
    cw_store_options_init(&opt);
    opt.retention = 2;
    cw_store_t *s = open_store(dir, &opt);
    add_users(s, base_users);
    tmsg_t t;
    for (int i = 1; i <= 5; i++) {
        char text[8];
        snprintf(text, sizeof text, "m%d", i);
        tmsg(&t, "alice", NULL, text, T0 + (uint64_t) i, 0, "bob");
        assert_int_equal(append1(s, &t), CW_OK);
    }
    assert_int_equal(cw_store_ack(s, "bob", 4, NULL), CW_OK);
    cw_store_entry_t *e;
    size_t n;
    assert_int_equal(cw_store_history(s, "bob", 10, T0, &e, &n), CW_OK);
    assert_int_equal(n, 3);                  /* 3 and 4 kept acked, 5 pending */
    assert_int_equal(e[0].seq, 3);
    assert_true(e[0].acked);
    assert_string_equal(e[0].text, "m3");
    assert_int_equal(e[1].seq, 4);
    assert_true(e[1].acked);
    assert_int_equal(e[2].seq, 5);
    assert_false(e[2].acked);
    cw_store_entries_free(&e, n);
    assert_int_equal(cw_store_history(s, "bob", 2, T0, &e, &n), CW_OK);
    assert_int_equal(n, 2);
    assert_int_equal(e[0].seq, 4);
    assert_int_equal(e[1].seq, 5);
    cw_store_entries_free(&e, n);
    /* read never returns acked history */
    assert_int_equal(cw_store_read(s, "bob", 0, 10, T0, &e, &n), CW_OK);
    assert_int_equal(n, 1);
    assert_int_equal(e[0].seq, 5);
    cw_store_entries_free(&e, n);
    assert_int_equal(cw_store_history(s, "nobody", 2, T0, &e, &n), CW_UNKNOWN_USER);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* ------------------------------------------------------------------------ */
/* Groups (explicit transactions)                                            */

static void test_group_commit_and_rollback(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    cw_store_stats_t st0, st;
    cw_store_stats(s, &st0);

    assert_int_equal(cw_store_txn_begin(s), CW_OK);
    assert_int_equal(cw_store_txn_begin(s), CW_ERR_INVALID);
    tmsg_t t;
    for (int i = 0; i < 10; i++) {
        tmsg(&t, "alice", NULL, "g", T0, 0, "bob");
        assert_int_equal(append1(s, &t), CW_OK);
    }
    int created;
    assert_int_equal(cw_store_add_user(s, "dave", &created), CW_OK);
    tmsg(&t, "alice", NULL, "to dave", T0, 0, "dave");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.r[0].status, CW_ACCEPTED);
    assert_int_equal(cw_store_txn_commit(s), CW_OK);
    cw_store_stats(s, &st);
    assert_int_equal(st.commits - st0.commits, 1);      /* 12 writes, one fsync */
    assert_int_equal(st.appended, 11);

    /* rollback: nothing stored, seqs and users given back */
    assert_int_equal(cw_store_txn_begin(s), CW_OK);
    tmsg(&t, "alice", "rolled", "r", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.r[0].seq, 11);
    assert_int_equal(cw_store_add_user(s, "erin", &created), CW_OK);
    cw_store_txn_rollback(s);
    assert_int_equal(cw_store_txn_commit(s), CW_ERR_INVALID);
    uint64_t pending;
    assert_int_equal(cw_store_pending(s, "erin", &pending), CW_UNKNOWN_USER);
    tmsg(&t, "alice", "rolled", "r", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_false(t.m.duplicate);
    assert_int_equal(t.r[0].seq, 11);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_stats(s, &st);
    assert_int_equal(st.errors, 0);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* ------------------------------------------------------------------------ */
/* Lock and integrity                                                        */

static void test_second_open_refused(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    cw_store_t *s2 = (cw_store_t *) 1;
    char err[256] = "";
    assert_int_equal(cw_store_open(dir, NULL, &s2, err, sizeof err), CW_ERR_IO);
    assert_null(s2);
    assert_non_null(strstr(err, "in use by another broker"));
    char pid[32];
    snprintf(pid, sizeof pid, "pid %ld", (long) getpid());
    assert_non_null(strstr(err, pid));
    cw_store_close(&s);
    s2 = open_store(dir, NULL);          /* free again once closed */
    cw_store_close(&s2);

    /* bad arguments */
    assert_int_equal(cw_store_open(NULL, NULL, &s2, err, sizeof err), CW_ERR_INVALID);
    assert_int_equal(cw_store_open("/proc/definitely/not/here", NULL, &s2, err, sizeof err),
                     CW_ERR_IO);
    remove_dir(&dir);
}

static void test_corrupt_store_refused(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    tmsg_t t;
    for (int i = 0; i < 200; i++) {
        tmsg(&t, "alice", NULL, "some text to fill a few pages of the database file", T0, 0,
             "bob,carol");
        assert_int_equal(append1(s, &t), CW_OK);
    }
    cw_store_close(&s);                  /* checkpoints the WAL into causeway.db */

    char path[4096];
    snprintf(path, sizeof path, "%s/causeway.db", dir);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    for (off_t page = 2; page < 6; page++)   /* pages 3..6: b-tree pages, not the header */
        assert_int_equal(pwrite(fd, junk, sizeof junk, page * 4096), (ssize_t) sizeof junk);
    close(fd);
    char err[512] = "";
    assert_int_equal(cw_store_open(dir, NULL, &s, err, sizeof err), CW_STORE_ERROR);
    assert_null(s);
    assert_true(strlen(err) > 0);
    /* the lock was released on the failure path */
    fd = open(path, O_WRONLY | O_TRUNC);
    close(fd);
    snprintf(path, sizeof path, "%s/causeway.db-wal", dir);
    unlink(path);

    /* an SQLite file that is not ours */
    snprintf(path, sizeof path, "%s/causeway.db", dir);
    unlink(path);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(cw_store_open(dir, NULL, &s, err, sizeof err), CW_STORE_ERROR);
    assert_non_null(strstr(err, "not a causeway store"));
    remove_dir(&dir);
}

/* ------------------------------------------------------------------------ */
/* Damaged files (issue 11 item 7): bytes changed inside records            */

/* Reads a whole file into a malloc'ed buffer. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t) n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t) n, f), (size_t) n);
    fclose(f);
    *len = (size_t) n;
    return buf;
}

/* Replaces every occurrence of `from` in dir/file with `to` (same length),
 * as a hand with a hex editor would (every occurrence: a message id is also
 * in its index, and a store whose index disagrees with its table is a
 * different, SQLite-level corruption); fails the test if it is not there. */
static void patch_file(const char *dir, const char *file, const void *from, const void *to,
                       size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    size_t n;
    uint8_t *buf = slurp(path, &n);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    int hits = 0;
    for (size_t i = 0; i + len <= n; i++)
        if (memcmp(buf + i, from, len) == 0) {
            assert_int_equal(pwrite(fd, to, len, (off_t) i), (ssize_t) len);
            hits++;
        }
    close(fd);
    free(buf);
    if (!hits)
        fail_msg("'%.*s' not found in %s", (int) len, (const char *) from, path);
}

/* bob's pending entries, into e (caller frees); asserts the read works. */
static size_t read_bob(cw_store_t *s, cw_store_entry_t **e)
{
    size_t n;
    assert_int_equal(cw_store_read(s, "bob", 0, SIZE_MAX, T0, e, &n), CW_OK);
    return n;
}

/* The reproduction: with the broker stopped, change letters of a
 * stored text and a digit of a stored message id. quick_check passes (the
 * pages are well-formed); the entries' checksums do not: each is returned
 * CW_DAMAGED with no data, the others intact, and acknowledging the
 * damaged ones lets the queue go on. */
static void test_damaged_records(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    tmsg_t t;
    char mid[32], text[64];
    for (int i = 130; i < 140; i++) {
        snprintf(mid, sizeof mid, "mid-%d", i);
        snprintf(text, sizeof text, "the text of message %d, spelt out", i);
        tmsg(&t, "alice", mid, text, T0, 0, "bob");
        assert_int_equal(append1(s, &t), CW_OK);
    }
    cw_store_close(&s);                  /* checkpoints: the rows are in causeway.db */

    patch_file(dir, "causeway.db", "message 132, spelt", "massage 132, spelt", 18);
    /* a digit of an id; in the table and its index alike, keeping the
     * index in order (another change is SQLite-level corruption, refused
     * at open: test_index_damage_refused) */
    patch_file(dir, "causeway.db", "mid-139", "mid-189", 7);
    s = open_store(dir, NULL);           /* quick_check cannot see it */
    cw_store_entry_t *e;
    size_t n = read_bob(s, &e);
    assert_int_equal(n, 10);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(e[i].seq, i + 1);
        if (i + 130 == 132 || i + 130 == 139) {
            assert_int_equal(e[i].status, CW_DAMAGED);
            assert_string_equal(e[i].text, "");
            assert_int_equal(e[i].text_len, 0);
            assert_string_equal(e[i].sender, "");
            assert_string_equal(e[i].message_id, "");
            assert_int_equal(e[i].n_to, 0);
            assert_null(e[i].clock);
            assert_int_equal(e[i].timestamp_us, 0);
        } else {
            assert_int_equal(e[i].status, CW_OK);
            snprintf(mid, sizeof mid, "mid-%zu", i + 130);
            assert_string_equal(e[i].message_id, mid);
        }
    }
    cw_store_entries_free(&e, n);
    cw_store_stats_t st;
    cw_store_stats(s, &st);
    assert_int_equal(st.damaged, 2);
    /* history shows them damaged too */
    assert_int_equal(cw_store_history(s, "bob", 10, T0, &e, &n), CW_OK);
    assert_int_equal(n, 10);
    assert_int_equal(e[2].status, CW_DAMAGED);
    assert_int_equal(e[9].status, CW_DAMAGED);
    cw_store_entries_free(&e, n);
    /* a retry of a message whose dedup record is damaged gets STORE_ERROR,
     * without failing its neighbours in the batch */
    tmsg_t two[2];
    tmsg(&two[0], "alice", "mid-189", "retry", T0, 0, "bob");   /* the damaged row's id now */
    tmsg(&two[1], "alice", "fresh", "new", T0, 0, "bob");
    cw_store_msg_t batch[2] = {two[0].m, two[1].m};
    assert_int_equal(cw_store_append_batch(s, batch, 2), CW_OK);
    assert_int_equal(batch[0].status, CW_STORE_ERROR);
    assert_int_equal(batch[1].status, CW_OK);
    assert_int_equal(batch[1].rcpts[0].seq, 11);
    /* acknowledged like any seq: the queue goes on */
    assert_int_equal(cw_store_ack(s, "bob", 3, NULL), CW_OK);
    n = read_bob(s, &e);
    assert_int_equal(n, 8);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(e[i].status, i == 6 ? CW_DAMAGED : CW_OK);
    cw_store_entries_free(&e, n);
    tmsg(&t, "alice", "after", "after the damage", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(cw_store_ack(s, "bob", 11, NULL), CW_OK);
    n = read_bob(s, &e);
    assert_int_equal(n, 1);
    assert_string_equal(e[0].text, "after the damage");
    for (size_t i = 0; i < n; i++)
        assert_int_equal(e[i].status, CW_OK);
    cw_store_entries_free(&e, n);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* Damage to the queue entry itself (its seq, or what it points at) and to
 * the recipient list: each caught by a checksum. */
static void test_damaged_entry_fields(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    tmsg_t t;
    tmsg(&t, "alice", "a", "first", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    tmsg(&t, "alice", "b", "second", T0, 0, "bob,carol");
    assert_int_equal(append1(s, &t), CW_OK);
    tmsg(&t, "alice", "c", "third", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    cw_store_close(&s);

    /* entry (bob, 3) now points at message 1: the entry's sum covers msg */
    char path[4096];
    snprintf(path, sizeof path, "%s/causeway.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE entries SET msg = (SELECT min(id) FROM messages) "
                                  "WHERE seq = 3 AND user_id = (SELECT id FROM users WHERE "
                                  "name = 'bob')",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    /* carol's name in message 2's recipient list */
    assert_int_equal(sqlite3_exec(db,
                                  "UPDATE messages SET rcpts = CAST(replace(CAST(rcpts AS TEXT), "
                                  "'carol', 'karol') AS BLOB) WHERE message_id = 'b'",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    s = open_store(dir, NULL);
    cw_store_entry_t *e;
    size_t n = read_bob(s, &e);
    assert_int_equal(n, 3);
    assert_int_equal(e[0].status, CW_OK);
    assert_int_equal(e[1].status, CW_DAMAGED);
    assert_int_equal(e[2].status, CW_DAMAGED);
    assert_int_equal(e[2].seq, 3);
    cw_store_entries_free(&e, n);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* A schema 1 store (before checksums) opens: it is migrated, checksums
 * computed at migration; after that a change is caught. Text that is not
 * UTF-8 (stored so by an older broker: its checksum is right) is never
 * served either. */
static void test_migrate_schema_1(void **state)
{
    char *dir = make_dir();
    char path[4096];
    snprintf(path, sizeof path, "%s/causeway.db", dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char rcpts[32] = {0};
    rcpts[0] = CW_ACCEPTED;                       /* u8 status, u64 seq 1, "bob\0" */
    rcpts[1] = 1;
    memcpy(rcpts + 9, "bob", 4);
    char sql[4096];
    snprintf(sql, sizeof sql,
             "PRAGMA application_id = %d; PRAGMA journal_mode = WAL;"
             "CREATE TABLE schema_version (version INTEGER NOT NULL);"
             "INSERT INTO schema_version VALUES (1);"
             "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
             "  next_seq INTEGER NOT NULL, acked_seq INTEGER NOT NULL,"
             "  created_us INTEGER NOT NULL);"
             "CREATE TABLE messages (id INTEGER PRIMARY KEY, sender TEXT NOT NULL,"
             "  message_id TEXT, ts_us INTEGER NOT NULL, expires_us INTEGER NOT NULL,"
             "  flags INTEGER NOT NULL, live INTEGER NOT NULL, clock BLOB,"
             "  rcpts BLOB NOT NULL, text BLOB NOT NULL);"
             "CREATE UNIQUE INDEX messages_dedup ON messages(sender, message_id)"
             "  WHERE message_id IS NOT NULL;"
             "CREATE INDEX messages_dead ON messages(ts_us) WHERE live = 0;"
             "CREATE TABLE entries (user_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
             "  msg INTEGER NOT NULL, PRIMARY KEY (user_id, seq)) WITHOUT ROWID;"
             "INSERT INTO users VALUES (1, 'alice', 1, 0, 1), (2, 'bob', 4, 0, 1);",
             0x43574159);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO messages VALUES (?1, 'alice', ?2, 5, 0, 0, "
                                        "1, NULL, ?3, ?4)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    const char *texts[3] = {"one", "t\xffo", "three"};
    for (int i = 0; i < 3; i++) {
        char m[8];
        snprintf(m, sizeof m, "m%d", i + 1);
        rcpts[1] = (char) (i + 1);
        sqlite3_bind_int(st, 1, i + 1);
        sqlite3_bind_text(st, 2, m, -1, SQLITE_TRANSIENT);
        sqlite3_bind_blob(st, 3, rcpts, 13, SQLITE_TRANSIENT);
        sqlite3_bind_blob(st, 4, texts[i], (int) strlen(texts[i]), SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO entries VALUES (2, 1, 1), (2, 2, 2), (2, 3, 3)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    cw_store_t *s = open_store(dir, NULL);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_entry_t *e;
    size_t n = read_bob(s, &e);
    assert_int_equal(n, 3);
    assert_int_equal(e[0].status, CW_OK);
    assert_string_equal(e[0].text, "one");
    assert_int_equal(e[1].status, CW_DAMAGED);   /* not UTF-8 */
    assert_int_equal(e[2].status, CW_OK);
    assert_string_equal(e[2].text, "three");
    cw_store_entries_free(&e, n);
    /* new appends get the next seqs; a duplicate of a migrated message answers */
    tmsg_t t;
    tmsg(&t, "alice", "m3", "three", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_true(t.m.duplicate);
    assert_int_equal(t.r[0].seq, 3);
    cw_store_close(&s);

    /* schema 2 now; checksums in force */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE messages SET text = CAST('ONE' AS BLOB) "
                                      "WHERE id = 1", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    s = open_store(dir, NULL);
    n = read_bob(s, &e);
    assert_int_equal(n, 3);
    assert_int_equal(e[0].status, CW_DAMAGED);
    cw_store_entries_free(&e, n);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* ------------------------------------------------------------------------ */
/* Crash safety: SIGKILL a writer mid-stream                                 */

#define CRASH_BATCH 40
#define CRASH_REPORTS 25

/* The child: append batches forever, reporting each committed batch. */
static void crash_child(const char *dir, int round, int fd)
{
    cw_store_t *s = NULL;
    char err[256];
    if (cw_store_open(dir, NULL, &s, err, sizeof err) != CW_OK)
        _exit(2);
    for (uint32_t b = 0;; b++) {
        static tmsg_t t[CRASH_BATCH];
        static cw_store_msg_t batch[CRASH_BATCH];
        static char mids[CRASH_BATCH][32];
        for (int i = 0; i < CRASH_BATCH; i++) {
            snprintf(mids[i], sizeof mids[i], "r%d-b%u-m%d", round, b, i);
            /* every batch: half to bob, half to bob and carol */
            tmsg(&t[i], "alice", mids[i], "crash test body .......................", T0, 0,
                 i % 2 ? "bob,carol" : "bob");
            batch[i] = t[i].m;
        }
        if (cw_store_append_batch(s, batch, CRASH_BATCH) != CW_OK)
            _exit(3);
        if (write(fd, &b, sizeof b) != sizeof b)   /* committed: report it */
            _exit(4);
    }
}

static void test_crash_safety(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    cw_store_close(&s);

    for (int round = 0; round < 3; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_child(dir, round, fds[1]);
            _exit(0);
        }
        close(fds[1]);
        uint32_t b, reported = 0, max_reported = 0;
        int have = 0;
        while (read(fds[0], &b, sizeof b) == sizeof b) {
            max_reported = b;
            have = 1;
            if (++reported == CRASH_REPORTS + (uint32_t) round * 7)
                kill(pid, SIGKILL);           /* mid-stream: the child is appending */
        }
        close(fds[0]);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        assert_true(have);

        /* Reopen: recovery, quick_check, invariants. */
        s = open_store(dir, NULL);
        assert_int_equal(cw_store_verify(s), CW_OK);
        /* Count this round's messages per batch in bob's and carol's queues. */
        size_t cap = max_reported + 2;
        uint32_t *bob = calloc(cap + 1, sizeof *bob), *carol = calloc(cap + 1, sizeof *carol);
        const char *who[2] = {"bob", "carol"};
        uint32_t *cnt[2] = {bob, carol};
        for (int k = 0; k < 2; k++) {
            cw_store_entry_t *e;
            size_t n;
            assert_int_equal(cw_store_read(s, who[k], 0, SIZE_MAX, T0, &e, &n), CW_OK);
            uint64_t prev = 0;
            for (size_t i = 0; i < n; i++) {
                assert_true(e[i].seq > prev);   /* in order, no duplicates */
                prev = e[i].seq;
                int r;
                unsigned bb;
                int m;
                assert_int_equal(sscanf(e[i].message_id, "r%d-b%u-m%d", &r, &bb, &m), 3);
                if (r != round)
                    continue;
                assert_true(bb <= cap);  /* at most one batch beyond the last report */
                cnt[k][bb]++;
            }
            cw_store_entries_free(&e, n);
        }
        for (uint32_t i = 0; i <= cap; i++) {
            int full = bob[i] == CRASH_BATCH && carol[i] == CRASH_BATCH / 2;
            int none = bob[i] == 0 && carol[i] == 0;
            if (i <= max_reported && !full)
                fail_msg("round %d: reported batch %u incomplete (bob %u, carol %u)", round, i,
                         bob[i], carol[i]);
            if (!full && !none)
                fail_msg("round %d: batch %u is partial (bob %u, carol %u)", round, i, bob[i],
                         carol[i]);
            if (i > max_reported + 1 && !none)
                fail_msg("round %d: batch %u present but never started", round, i);
        }
        free(bob);
        free(carol);
        cw_store_close(&s);
    }
    remove_dir(&dir);
}

/* ------------------------------------------------------------------------ */
/* Fault injection: a VFS shim over the default VFS fails a chosen I/O.      */

typedef struct {
    sqlite3_file base;            /* pMethods = &fault_io */
    sqlite3_file *real;           /* the default VFS's file, right after us */
    int is_wal;                   /* opened as the WAL */
} fault_file_t;

static struct {
    int seen_writes;              /* every xWrite/xTruncate on any file (counting, no fault) */
    int countdown;                /* fail the countdown-th matching I/O (1 = next); 0 = off */
    int wal_only;                 /* count WAL I/O only */
    int writes, syncs;            /* which operations count */
    int error;                    /* what the failing call returns */
    int fired;                    /* how many failed so far */
    int sticky;                   /* keep failing after the first */
} g_fault;

static sqlite3_vfs *g_real_vfs;

static int fault_hit(fault_file_t *f, int is_sync)
{
    if (g_fault.countdown <= 0 || (g_fault.wal_only && !f->is_wal))
        return 0;
    if (is_sync ? !g_fault.syncs : !g_fault.writes)
        return 0;
    if (g_fault.fired && g_fault.sticky)
        return 1;
    if (--g_fault.countdown == 0) {
        g_fault.fired++;
        if (g_fault.sticky)
            g_fault.countdown = 1;
        return 1;
    }
    return 0;
}

static int f_close(sqlite3_file *p)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xClose(f->real);
}
static int f_read(sqlite3_file *p, void *b, int n, sqlite3_int64 o)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xRead(f->real, b, n, o);
}
static int f_write(sqlite3_file *p, const void *b, int n, sqlite3_int64 o)
{
    fault_file_t *f = (fault_file_t *) p;
    g_fault.seen_writes++;
    if (fault_hit(f, 0))
        return g_fault.error;
    return f->real->pMethods->xWrite(f->real, b, n, o);
}
static int f_truncate(sqlite3_file *p, sqlite3_int64 size)
{
    fault_file_t *f = (fault_file_t *) p;
    g_fault.seen_writes++;
    return f->real->pMethods->xTruncate(f->real, size);
}
static int f_sync(sqlite3_file *p, int flags)
{
    fault_file_t *f = (fault_file_t *) p;
    if (fault_hit(f, 1))
        return g_fault.error;
    return f->real->pMethods->xSync(f->real, flags);
}
static int f_size(sqlite3_file *p, sqlite3_int64 *size)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xFileSize(f->real, size);
}
static int f_lock(sqlite3_file *p, int l)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xLock(f->real, l);
}
static int f_unlock(sqlite3_file *p, int l)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xUnlock(f->real, l);
}
static int f_check_reserved(sqlite3_file *p, int *out)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xCheckReservedLock(f->real, out);
}
static int f_fcntl(sqlite3_file *p, int op, void *arg)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}
static int f_sector(sqlite3_file *p)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xSectorSize(f->real);
}
static int f_devchar(sqlite3_file *p)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xDeviceCharacteristics(f->real);
}
static int f_shm_map(sqlite3_file *p, int pg, int sz, int ext, void volatile **pp)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xShmMap(f->real, pg, sz, ext, pp);
}
static int f_shm_lock(sqlite3_file *p, int off, int n, int flags)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xShmLock(f->real, off, n, flags);
}
static void f_shm_barrier(sqlite3_file *p)
{
    fault_file_t *f = (fault_file_t *) p;
    f->real->pMethods->xShmBarrier(f->real);
}
static int f_shm_unmap(sqlite3_file *p, int del)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xShmUnmap(f->real, del);
}
static int f_fetch(sqlite3_file *p, sqlite3_int64 o, int n, void **pp)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xFetch(f->real, o, n, pp);
}
static int f_unfetch(sqlite3_file *p, sqlite3_int64 o, void *ptr)
{
    fault_file_t *f = (fault_file_t *) p;
    return f->real->pMethods->xUnfetch(f->real, o, ptr);
}

static const sqlite3_io_methods fault_io = {
    3,         f_close,  f_read,  f_write,   f_truncate,    f_sync,      f_size,
    f_lock,    f_unlock, f_check_reserved,   f_fcntl,       f_sector,    f_devchar,
    f_shm_map, f_shm_lock, f_shm_barrier,    f_shm_unmap,   f_fetch,     f_unfetch,
};

static int fault_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p, int flags,
                      int *out_flags)
{
    fault_file_t *f = (fault_file_t *) p;
    f->real = (sqlite3_file *) (f + 1);
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = g_real_vfs->xOpen(g_real_vfs, name, f->real, flags, out_flags);
    f->base.pMethods = rc == SQLITE_OK ? &fault_io : NULL;
    return rc;
}

static sqlite3_vfs fault_vfs;

static void fault_register(void)
{
    if (g_real_vfs)
        return;
    g_real_vfs = sqlite3_vfs_find(NULL);
    fault_vfs = *g_real_vfs;
    fault_vfs.zName = "cwfault";
    fault_vfs.szOsFile = (int) sizeof(fault_file_t) + g_real_vfs->szOsFile;
    fault_vfs.xOpen = fault_open;
    fault_vfs.pNext = NULL;
    assert_int_equal(sqlite3_vfs_register(&fault_vfs, 0), SQLITE_OK);
}

static void fault_arm(int countdown, int wal_only, int writes, int syncs, int error, int sticky)
{
    g_fault.countdown = countdown;
    g_fault.wal_only = wal_only;
    g_fault.writes = writes;
    g_fault.syncs = syncs;
    g_fault.error = error;
    g_fault.fired = 0;
    g_fault.sticky = sticky;
}

static void fault_off(void) { memset(&g_fault, 0, sizeof g_fault); }

static cw_store_t *open_fault_store(const char *dir)
{
    fault_register();
    cw_store_options_t opt;
    cw_store_options_init(&opt);
    opt.sqlite_vfs = "cwfault";
    return open_store(dir, &opt);
}

/* Appends a batch of n to bob, ids "<tag>-<i>"; returns the call status. */
static int fault_batch(cw_store_t *s, const char *tag, int n)
{
    static tmsg_t t[16];
    static cw_store_msg_t batch[16];
    static char mids[16][32];
    for (int i = 0; i < n; i++) {
        snprintf(mids[i], sizeof mids[i], "%s-%d", tag, i);
        tmsg(&t[i], "alice", mids[i], "fault injection body", T0, 0, "bob");
        batch[i] = t[i].m;
    }
    return cw_store_append_batch(s, batch, (size_t) n);
}

/* Number of bob's pending messages whose id starts with tag. */
static size_t count_tag(cw_store_t *s, const char *tag)
{
    cw_store_entry_t *e;
    size_t n, found = 0;
    assert_int_equal(cw_store_read(s, "bob", 0, SIZE_MAX, T0, &e, &n), CW_OK);
    for (size_t i = 0; i < n; i++)
        if (strncmp(e[i].message_id, tag, strlen(tag)) == 0 && e[i].message_id[strlen(tag)] == '-')
            found++;
    cw_store_entries_free(&e, n);
    return found;
}

/* Disk full while the COMMIT writes WAL frames: the batch fails cleanly,
 * the store stays usable, the seqs it would have used are not burnt. */
static void test_disk_full_rolls_back(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_fault_store(dir);
    add_users(s, base_users);
    assert_int_equal(fault_batch(s, "before", 4), CW_OK);

    fault_arm(1, 1, 1, 0, SQLITE_FULL, 0);
    tmsg_t t;
    tmsg(&t, "alice", "full", "x", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_STORE_ERROR);
    assert_int_equal(t.m.status, CW_STORE_ERROR);
    assert_int_equal(t.r[0].status, CW_STORE_ERROR);
    assert_int_equal(g_fault.fired, 1);
    fault_off();
    assert_true(strlen(cw_store_errmsg(s)) > 0);

    /* consistent, not failed: the next write works and reuses seq 5 */
    assert_int_equal(cw_store_verify(s), CW_OK);
    tmsg(&t, "alice", "full", "x", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_false(t.m.duplicate);
    assert_int_equal(t.r[0].seq, 5);
    cw_store_stats_t st;
    cw_store_stats(s, &st);
    assert_int_equal(st.errors, 1);
    cw_store_close(&s);

    s = open_fault_store(dir);
    assert_int_equal(cw_store_verify(s), CW_OK);
    assert_int_equal(count_tag(s, "before"), 4);
    uint64_t pending;
    cw_store_pending(s, "bob", &pending);
    assert_int_equal(pending, 5);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* fsync of the WAL fails at COMMIT: whether the batch is on disk is now
 * unknown, so the store goes into its sticky failed state. After a reopen
 * the batch is either entirely there or entirely absent. */
static void test_fsync_failure_is_sticky(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_fault_store(dir);
    add_users(s, base_users);
    assert_int_equal(fault_batch(s, "before", 3), CW_OK);

    fault_arm(1, 1, 0, 1, SQLITE_IOERR_FSYNC, 0);
    assert_int_equal(fault_batch(s, "doubt", 5), CW_STORE_ERROR);
    assert_int_equal(g_fault.fired, 1);
    fault_off();
    /* refuses writes and reads until reopened */
    tmsg_t t;
    tmsg(&t, "alice", "after", "x", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_STORE_ERROR);
    assert_non_null(strstr(cw_store_errmsg(s), "store failed"));
    assert_int_equal(cw_store_ack(s, "bob", 1, NULL), CW_STORE_ERROR);
    assert_int_equal(cw_store_add_user(s, "zoe", NULL), CW_STORE_ERROR);
    assert_int_equal(cw_store_txn_begin(s), CW_STORE_ERROR);
    cw_store_close(&s);

    s = open_fault_store(dir);
    assert_int_equal(cw_store_verify(s), CW_OK);
    assert_int_equal(count_tag(s, "before"), 3);
    size_t doubt = count_tag(s, "doubt");
    assert_true(doubt == 0 || doubt == 5);
    /* a retry is answered consistently either way */
    assert_int_equal(fault_batch(s, "doubt", 5), CW_OK);
    assert_int_equal(count_tag(s, "doubt"), 5);
    assert_int_equal(cw_store_verify(s), CW_OK);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* Fail the Nth write or sync (any file) during a batch, for every N until
 * a batch gets through untouched. Whatever the outcome: after a reopen the
 * store verifies, earlier data is intact, the batch is all-or-nothing, and
 * a batch reported CW_OK is there. */
static void test_fail_nth_io(void **state)
{
    for (int kind = 0; kind < 2; kind++) {
        int clean = 0;
        for (int nth = 1; nth <= 60 && !clean; nth++) {
            char *dir = make_dir();
            cw_store_t *s = open_fault_store(dir);
            add_users(s, base_users);
            assert_int_equal(fault_batch(s, "base", 8), CW_OK);
            fault_arm(nth, 0, kind == 0, kind == 1, kind == 0 ? SQLITE_IOERR_WRITE
                                                              : SQLITE_IOERR_FSYNC, 1);
            int rc = fault_batch(s, "nth", 12);
            int fired = g_fault.fired;
            fault_off();
            if (!fired) {
                assert_int_equal(rc, CW_OK);
                clean = 1;
            } else {
                assert_int_equal(rc, CW_STORE_ERROR);
            }
            cw_store_close(&s);
            s = open_fault_store(dir);
            assert_int_equal(cw_store_verify(s), CW_OK);
            assert_int_equal(count_tag(s, "base"), 8);
            size_t got = count_tag(s, "nth");
            if (rc == CW_OK)
                assert_int_equal(got, 12);
            else if (got != 0 && got != 12)
                fail_msg("nth %d kind %d: partial batch (%zu of 12)", nth, kind, got);
            cw_store_close(&s);
            remove_dir(&dir);
        }
        assert_true(clean);
    }
}

/* ------------------------------------------------------------------------ */
/* A damaged WAL (issue 11 items 8 and 9)                                    */

/* A child process opens the store, appends n messages to bob (ids
 * "<tag>-<i>", batches of 10, each committed = fsynced), and exits without
 * closing, as after kill -9: the commits stay in causeway.db-wal. */
static void append_and_die(const char *dir, const char *tag, int n)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cw_store_t *s = NULL;
        char err[512];
        if (cw_store_open(dir, NULL, &s, err, sizeof err) != CW_OK)
            _exit(2);
        if (cw_store_add_user(s, "alice", NULL) != CW_OK ||
            cw_store_add_user(s, "bob", NULL) != CW_OK)
            _exit(3);
        static tmsg_t t[10];
        static cw_store_msg_t batch[10];
        static char mids[10][32];
        for (int i = 0; i < n; i += 10) {
            int k = n - i < 10 ? n - i : 10;
            for (int j = 0; j < k; j++) {
                snprintf(mids[j], sizeof mids[j], "%s-%d", tag, i + j);
                tmsg(&t[j], "alice", mids[j], "a message in the WAL, not yet checkpointed", T0,
                     0, "bob");
                batch[j] = t[j].m;
            }
            if (cw_store_append_batch(s, batch, (size_t) k) != CW_OK)
                _exit(4);
        }
        _exit(0);                        /* no close: no checkpoint */
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static off_t file_size(const char *dir, const char *file)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    struct stat sb;
    return stat(path, &sb) == 0 ? sb.st_size : -1;
}

static void truncate_file(const char *dir, const char *file, off_t size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    assert_int_equal(truncate(path, size), 0);
}

static void flip_byte(const char *dir, const char *file, off_t at)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, at), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, at), 1);
    close(fd);
}

/* Opens dir expecting a refusal; returns it in err. Counts (over the fault
 * VFS) that the refused open wrote nothing to the database or the WAL. */
static void open_refused(const char *dir, int recover, char *err, size_t err_size)
{
    fault_register();
    cw_store_options_t opt;
    cw_store_options_init(&opt);
    opt.sqlite_vfs = "cwfault";
    opt.recover = recover;
    cw_store_t *s = (cw_store_t *) 1;
    g_fault.seen_writes = 0;
    int rc = cw_store_open(dir, &opt, &s, err, err_size);
    if (rc != CW_STORE_ERROR)
        fail_msg("open of damaged %s: %s, expected STORE_ERROR (%s)", dir, cw_status_name(rc),
                 err);
    assert_null(s);
    assert_int_equal(g_fault.seen_writes, 0);
}

static cw_store_t *open_recover(const char *dir)
{
    cw_store_options_t opt;
    cw_store_options_init(&opt);
    opt.recover = 1;
    return open_store(dir, &opt);
}

/* The case: a truncated WAL loses the commits after the cut.
 * Without the ledger the store opened with the commits before it and
 * handed their seqs out again. Now: refused, naming what was lost; with
 * recover, it opens and the next seq is above every seq ever accepted. */
static void wal_damage_case(int how)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    tmsg_t t;
    tmsg(&t, "alice", "cp", "checkpointed", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    cw_store_close(&s);                  /* seq 1 in causeway.db */
    append_and_die(dir, "w", 300);       /* seqs 2..301 only in the WAL */
    off_t wal = file_size(dir, "causeway.db-wal");
    assert_true(wal > 32 * 1024);
    if (how == 0)
        truncate_file(dir, "causeway.db-wal", wal / 2);
    else if (how == 1)
        flip_byte(dir, "causeway.db-wal", wal / 3);
    else
        flip_byte(dir, "causeway.db-wal", 20);     /* the header's salt: the whole WAL ignored */
    off_t damaged = file_size(dir, "causeway.db-wal");

    char err[1024] = "";
    open_refused(dir, 0, err, sizeof err);
    if (!strstr(err, "committed data is missing") || !strstr(err, "bob lost seqs") ||
        !strstr(err, "--recover-store"))
        fail_msg("refusal does not say what was lost: %s", err);
    unsigned lo = 0, hi = 0;
    assert_int_equal(sscanf(strstr(err, "bob lost seqs"), "bob lost seqs %u-%u", &lo, &hi), 2);
    assert_int_equal(hi, 301);
    assert_true(lo >= 2 && lo <= 301);
    if (how == 2)
        assert_int_equal(lo, 2);
    /* refusing changed nothing: the same files, twice */
    assert_int_equal(file_size(dir, "causeway.db-wal"), damaged);
    open_refused(dir, 0, err, sizeof err);

    s = open_recover(dir);
    assert_int_equal(cw_store_verify(s), CW_OK);
    /* what survived is served, the rest is gone; a new message gets a seq
     * no earlier message had */
    size_t have = count_tag(s, "w");
    assert_int_equal(have, lo - 2);
    tmsg(&t, "alice", "after", "after recovery", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_true(t.r[0].seq > 301);
    /* a user created now starts above every lost seq too */
    assert_int_equal(cw_store_add_user(s, "dave", NULL), CW_OK);
    tmsg(&t, "alice", "to-dave", "hi", T0, 0, "dave");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_true(t.r[0].seq > 300);
    uint64_t after = t.r[0].seq;
    cw_store_close(&s);
    /* and the next start is clean again */
    s = open_store(dir, NULL);
    tmsg(&t, "alice", "later", "later", T0, 0, "dave");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.r[0].seq, after + 1);
    cw_store_close(&s);
    remove_dir(&dir);
}

static void test_truncated_wal_refused(void **state) { wal_damage_case(0); }
static void test_bitflipped_wal_refused(void **state) { wal_damage_case(1); }
static void test_wal_header_damage_after_checkpoint(void **state) { wal_damage_case(2); }

/* Item 9: the store was never checkpointed (everything, the schema too, is
 * in the WAL) and the WAL header is damaged: SQLite sees an empty database.
 * The store used to create a new, empty store there. Now it refuses, with
 * or without recover, names the files, and leaves them as they were. */
static void test_wal_header_damage_never_creates_a_store(void **state)
{
    char *dir = make_dir();
    append_and_die(dir, "w", 100);
    off_t wal = file_size(dir, "causeway.db-wal");
    assert_true(wal > 0);
    flip_byte(dir, "causeway.db-wal", 4);          /* the header's magic/format */
    char err[1024] = "";
    for (int recover = 0; recover < 2; recover++) {
        open_refused(dir, recover, err, sizeof err);
        if (!strstr(err, "refusing") || !strstr(err, "causeway.db-wal") ||
            !strstr(err, "new store") || !strstr(err, "OPERATIONS.md"))
            fail_msg("unclear refusal: %s", err);
        assert_int_equal(file_size(dir, "causeway.db-wal"), wal);
    }
    /* An empty causeway.db beside the WAL (SQLite would delete that WAL),
     * or none at all: refused as well. */
    off_t db = file_size(dir, "causeway.db");
    truncate_file(dir, "causeway.db", 0);
    open_refused(dir, 1, err, sizeof err);
    assert_non_null(strstr(err, "causeway.db is empty"));
    assert_int_equal(file_size(dir, "causeway.db-wal"), wal);
    (void) db;
    remove_dir(&dir);
}

/* The ledger itself damaged: refused (it cannot tell which seqs were
 * handed out) unless recover, which rebuilds it from the database. */
static void test_damaged_ledger(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    assert_int_equal(fault_batch(s, "x", 5), CW_OK);
    cw_store_close(&s);
    char path[4096];
    snprintf(path, sizeof path, "%s/causeway.seqs", dir);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    char junk[64];
    memset(junk, 0x77, sizeof junk);
    assert_int_equal(pwrite(fd, junk, sizeof junk, 0), (ssize_t) sizeof junk);
    close(fd);
    char err[1024] = "";
    open_refused(dir, 0, err, sizeof err);
    assert_non_null(strstr(err, "causeway.seqs is damaged"));
    s = open_recover(dir);
    tmsg_t t;
    tmsg(&t, "alice", "y", "y", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.r[0].seq, 6);
    cw_store_close(&s);
    s = open_store(dir, NULL);           /* clean again */
    cw_store_close(&s);
    remove_dir(&dir);
}

/* A ledger made and abandoned before its first reservation (the broker
 * died between creating the file and reserving): it opens next time,
 * nothing reserved, instead of reading as damaged (it used to be a
 * zero-filled file). A half-written causeway.seqs.new from an earlier
 * crash is overwritten. */
static void test_new_ledger_opens_after_crash(void **state)
{
    (void) state;
    char *dir = make_dir();
    char path[4096], tmp[4200], err[512] = "";
    snprintf(path, sizeof path, "%s/causeway.seqs", dir);
    /* The database exists (made first at creation), the ledger does not yet. */
    cw_store_t *s = open_store(dir, NULL);
    cw_store_close(&s);
    assert_int_equal(unlink(path), 0);
    snprintf(tmp, sizeof tmp, "%s.new", path);
    int fd = open(tmp, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 8192), 0);          /* zeros, as a crash leaves them */
    close(fd);
    cw_ledger_t *l = NULL;
    int existed = -1;
    assert_int_equal(cw_ledger_open(path, &l, &existed, err, sizeof err), CW_OK);
    assert_int_equal(existed, 0);
    cw_ledger_close(&l);                               /* no reservation made */
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(cw_ledger_open(path, &l, &existed, err, sizeof err), CW_OK);
    assert_int_equal(existed, 1);
    assert_int_equal(cw_ledger_reserved(l), 0);
    cw_ledger_close(&l);
    s = open_store(dir, NULL);                         /* and the store opens over it */
    add_users(s, base_users);
    assert_int_equal(fault_batch(s, "x", 3), CW_OK);
    cw_store_close(&s);
    s = open_store(dir, NULL);
    cw_store_close(&s);
    remove_dir(&dir);
}

/* The reservation: seqs are reserved in blocks, so the ledger is written
 * with fsync once per block, not per commit; a store missing its ledger
 * (one from before it) gets one made from the database. */
static void test_ledger_reserves_in_blocks(void **state)
{
    char *dir = make_dir();
    cw_store_t *s = open_store(dir, NULL);
    add_users(s, base_users);
    char tag[16];
    for (int i = 0; i < 20; i++) {
        snprintf(tag, sizeof tag, "b%d", i);
        assert_int_equal(fault_batch(s, tag, 10), CW_OK);
    }
    cw_store_close(&s);
    char path[4096];
    snprintf(path, sizeof path, "%s/causeway.seqs", dir);
    uint8_t slot[64];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, slot, sizeof slot, 0), (ssize_t) sizeof slot);
    close(fd);
    /* the file's birth (generation 1, nothing reserved, slot 1) and one
     * reservation (generation 2, slot 0): 200 entries fit the first block */
    uint32_t gen0 = (uint32_t) slot[4] | (uint32_t) slot[5] << 8;
    uint32_t gen1 = (uint32_t) slot[36] | (uint32_t) slot[37] << 8;
    assert_int_equal(gen0, 2);
    assert_int_equal(gen1, 1);
    assert_int_equal(unlink(path), 0);
    s = open_store(dir, NULL);           /* made again from the database */
    tmsg_t t;
    tmsg(&t, "alice", "z", "z", T0, 0, "bob");
    assert_int_equal(append1(s, &t), CW_OK);
    assert_int_equal(t.r[0].seq, 201);
    cw_store_close(&s);
    assert_true(file_size(dir, "causeway.seqs") > 0);
    remove_dir(&dir);
}

int main(void)
{
    cw_log_set_level(CW_LOG_WARN);
    cw_log_set_tag("store_test");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_read_ack),
        cmocka_unit_test(test_seqs_survive_reopen),
        cmocka_unit_test(test_user_log_persists),
        cmocka_unit_test(test_quota),
        cmocka_unit_test(test_ttl_expiry),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_original_recipients),
        cmocka_unit_test(test_history_retention),
        cmocka_unit_test(test_group_commit_and_rollback),
        cmocka_unit_test(test_second_open_refused),
        cmocka_unit_test(test_corrupt_store_refused),
        cmocka_unit_test(test_damaged_records),
        cmocka_unit_test(test_damaged_entry_fields),
        cmocka_unit_test(test_migrate_schema_1),
        cmocka_unit_test(test_crash_safety),
        cmocka_unit_test(test_disk_full_rolls_back),
        cmocka_unit_test(test_fsync_failure_is_sticky),
        cmocka_unit_test(test_fail_nth_io),
        cmocka_unit_test(test_truncated_wal_refused),
        cmocka_unit_test(test_bitflipped_wal_refused),
        cmocka_unit_test(test_wal_header_damage_after_checkpoint),
        cmocka_unit_test(test_wal_header_damage_never_creates_a_store),
        cmocka_unit_test(test_damaged_ledger),
        cmocka_unit_test(test_new_ledger_opens_after_crash),
        cmocka_unit_test(test_ledger_reserves_in_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
