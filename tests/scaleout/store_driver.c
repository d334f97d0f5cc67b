/*  store_driver: drives the Redis store (broker/store_redis.c) through
 *  store_if.h only, against a real Redis Cluster, and checks what it
 *  answered ACCEPTED against what a fresh store instance reads back.
 *
 *    store_driver SEEDS N USERS INFLIGHT WAIT [RETRY_MS] [options]
 *
 *  SEEDS is "host:port,..." (with_cluster.py's CW_REDIS_SEEDS). The driver
 *  FLUSHes nothing: the cluster must be fresh (or hold only earlier runs'
 *  users, which are reused). It adds USERS users u0..u(USERS-1), then
 *  submits N durable appends from sender "drv" (message id "m<i>", text
 *  "<i>"), each to RCPTS distinct users (u(i), u(i+1), ... mod USERS),
 *  keeping INFLIGHT submitted and unanswered, with the store's
 *  wait_replicas = WAIT and retry_ms = RETRY_MS (default 10000). Then it
 *  closes the store cleanly, opens a fresh instance (another broker id) and
 *  reads every queue from seq 1, and counts:
 *    missing     an ACCEPTED (user, seq, message) not read back as is;
 *    duplicated  a message read twice from one queue;
 *    reused      an ACCEPTED (user, seq, message) whose seq was read back
 *                holding another message, or was ACCEPTED for another one;
 *    wrong       an entry whose content does not match its message id;
 *    extra       an entry of a message never ACCEPTED for that user (an
 *                append answered CW_STORE_ERROR may still have run: legal);
 *    short       READ replies marked truncated (waited on and re-read).
 *
 *  Options:
 *    --rcpts M        recipients per message (default 1, at most USERS);
 *    --stdin-stop     stop submitting at the first line (or EOF) on stdin
 *                     instead of after N (N is then an upper bound); the
 *                     fault tests use it to keep load on while they inject;
 *    --progress K     print "progress ACCEPTED ERRORS" every K replies;
 *    --expect-clean   exit 1 unless missing, duplicated, reused and wrong
 *                     are 0 (and at least one append was ACCEPTED).
 *
 *  Prints "appends A accepted C errors E seconds S appends_per_s R
 *  us_per_append U", then "readback users U entries R missing M duplicated
 *  D reused S wrong W extra X short K". Exit 0 when it ran to the end
 *  (and, with --expect-clean, found nothing wrong), 1 otherwise, 2 on
 *  usage. Single-threaded: the store's owner thread is main.
 */
#include "cw_status.h"
#include "store_if.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define REPLY_MS 60000   /* longest wait for any one reply */
#define READ_MAX 512     /* entries per READ */
#define SHORT_MS 30000   /* longest wait for a truncated queue to fill */

typedef struct {
    uint64_t seq;
    long msg;
} acc_t;

typedef struct {
    acc_t *v;
    size_t n, cap;
} accs_t;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void die(const char *what)
{
    fprintf(stderr, "store_driver: %s\n", what);
    exit(1);
}

static void acc_push(accs_t *a, uint64_t seq, long msg)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = realloc(a->v, a->cap * sizeof *a->v);
        if (!a->v)
            die("out of memory");
    }
    a->v[a->n++] = (acc_t){seq, msg};
}

static int acc_cmp(const void *x, const void *y)
{
    const acc_t *a = x, *b = y;
    if (a->seq != b->seq)
        return a->seq < b->seq ? -1 : 1;
    return a->msg < b->msg ? -1 : a->msg > b->msg;
}

/* The next reply to a request (events are dropped), or exit after REPLY_MS. */
static cw_store_reply_t *next_reply(const cw_store_ops_t *ops, cw_store_backend_t *s)
{
    int64_t until = now_ms() + REPLY_MS;
    for (;;) {
        int64_t left = until - now_ms();
        if (left <= 0)
            die("no reply within the deadline");
        cw_store_reply_t *r = ops->recv(s, (int) left);
        if (!r)
            continue;
        if (!cw_store_reply_is_event(r))
            return r;
        cw_store_reply_destroy(&r);
    }
}

static cw_store_backend_t *open_store(const char *url, const cw_store_config_t *cfg)
{
    cw_store_backend_t *s = NULL;
    cw_store_loaded_t loaded;
    char err[512];
    if (cw_store_redis_ops.open(url, cfg, &s, &loaded, err, sizeof err) != CW_OK) {
        fprintf(stderr, "store_driver: open %s: %s\n", url, err);
        exit(1);
    }
    cw_store_loaded_free(&loaded);
    return s;
}

static long parse_long(const char *s, long min, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < min) {
        fprintf(stderr, "store_driver: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: store_driver SEEDS N USERS INFLIGHT WAIT [RETRY_MS] [--rcpts M] "
                        "[--stdin-stop] [--progress K] [--expect-clean]\n");
        return 2;
    }
    const char *seeds = argv[1];
    long n = parse_long(argv[2], 1, "N");
    long users = parse_long(argv[3], 1, "USERS");
    long inflight = parse_long(argv[4], 1, "INFLIGHT");
    long wait = parse_long(argv[5], 0, "WAIT");
    long retry = 10000, rcpts = 1, progress = 0;
    int stdin_stop = 0, expect_clean = 0;
    int ai = 6;
    if (ai < argc && argv[ai][0] != '-')
        retry = parse_long(argv[ai++], 1, "RETRY_MS");
    for (; ai < argc; ai++) {
        if (strcmp(argv[ai], "--rcpts") == 0 && ai + 1 < argc)
            rcpts = parse_long(argv[++ai], 1, "--rcpts");
        else if (strcmp(argv[ai], "--progress") == 0 && ai + 1 < argc)
            progress = parse_long(argv[++ai], 1, "--progress");
        else if (strcmp(argv[ai], "--stdin-stop") == 0)
            stdin_stop = 1;
        else if (strcmp(argv[ai], "--expect-clean") == 0)
            expect_clean = 1;
        else {
            fprintf(stderr, "store_driver: unknown option '%s'\n", argv[ai]);
            return 2;
        }
    }
    if (rcpts > users) {
        fprintf(stderr, "store_driver: --rcpts %ld exceeds USERS %ld\n", rcpts, users);
        return 2;
    }
    char url[4096];
    snprintf(url, sizeof url, "redis://%s", seeds);
    cw_store_config_t cfg;
    cw_store_config_init(&cfg);
    cfg.wait_replicas = (uint32_t) wait;
    cfg.retry_ms = (uint32_t) retry;
    const cw_store_ops_t *ops = &cw_store_redis_ops;
    cw_store_backend_t *s = open_store(url, &cfg);

    char (*names)[32] = calloc((size_t) users, sizeof *names);
    accs_t *acc = calloc((size_t) users, sizeof *acc);
    if (!names || !acc)
        die("out of memory");
    uint64_t tok = 0;
    for (long u = 0; u < users; u++) {
        snprintf(names[u], sizeof names[u], "u%ld", u);
        if (ops->add_user(s, ++tok, names[u]) != CW_OK)
            die("add_user not accepted");
    }
    for (long u = 0; u < users; u++) {
        cw_store_reply_t *r = next_reply(ops, s);
        if (r->status != CW_OK)
            die("add_user failed");
        cw_store_reply_destroy(&r);
    }
    if (ops->add_user(s, ++tok, "drv") != CW_OK)
        die("add_user not accepted");
    cw_store_reply_t *ar = next_reply(ops, s);
    cw_store_reply_destroy(&ar);

    /* Appends: token = i + 1 + base; replies come in submission order. */
    uint64_t base = tok;
    long sent = 0, answered = 0, accepted = 0, errors = 0, entries_acc = 0;
    int stop = 0;
    cw_store_rcpt_t *rv = calloc((size_t) rcpts, sizeof *rv);
    if (!rv)
        die("out of memory");
    int64_t t0 = now_ms();
    while (answered < sent || (!stop && sent < n)) {
        while (!stop && sent < n && sent - answered < inflight) {
            char mid[32], text[32];
            snprintf(mid, sizeof mid, "m%ld", sent);
            int tl = snprintf(text, sizeof text, "%ld", sent);
            for (long k = 0; k < rcpts; k++)
                rv[k] = (cw_store_rcpt_t){names[(sent + k) % users], 0, 0};
            cw_store_msg_t m = {0};
            m.sender = "drv";
            m.message_id = mid;
            m.text = text;
            m.text_len = (size_t) tl;
            m.timestamp_us = (uint64_t) now_ms() * 1000;
            m.rcpts = rv;
            m.n_rcpts = (size_t) rcpts;
            int rc = ops->append(s, base + (uint64_t) sent + 1, &m);
            if (rc == CW_FLOODED)
                break;
            if (rc != CW_OK)
                die("append not accepted by the store");
            sent++;
        }
        zmq_pollitem_t items[2] = {{ops->poll_handle(s), 0, ZMQ_POLLIN, 0},
                                   {NULL, 0, ZMQ_POLLIN, 0}};
        int ni = 1;
        if (stdin_stop && !stop)
            ni = 2;
        if (zmq_poll(items, ni, 1000) < 0 && errno != EINTR)
            die("zmq_poll failed");
        if (ni == 2 && (items[1].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) {
            char line[256];
            (void) !read(0, line, sizeof line);
            stop = 1;
        }
        cw_store_reply_t *r;
        while ((r = ops->recv(s, 0)) != NULL) {
            if (cw_store_reply_is_event(r)) {
                cw_store_reply_destroy(&r);
                continue;
            }
            long i = (long) (r->token - base - 1);
            if (r->kind != CW_STORE_REQ_APPEND || i != answered)
                die("reply out of submission order");
            answered++;
            if (r->status == CW_STORE_ERROR)
                errors++;
            int any = 0;
            for (size_t k = 0; k < r->n_rcpts; k++)
                if (r->rcpts[k].status == CW_ACCEPTED) {
                    acc_push(&acc[(i + (long) k) % users], r->rcpts[k].seq, i);
                    entries_acc++;
                    any = 1;
                }
            accepted += any;
            if (progress && answered % progress == 0) {
                printf("progress %ld %ld\n", accepted, errors);
                fflush(stdout);
            }
            cw_store_reply_destroy(&r);
        }
    }
    int64_t el = now_ms() - t0;
    if (el < 1)
        el = 1;
    printf("appends %ld accepted %ld errors %ld seconds %.2f appends_per_s %.0f "
           "us_per_append %.1f\n",
           sent, accepted, errors, (double) el / 1000.0, (double) sent * 1000.0 / (double) el,
           (double) el * 1000.0 / (double) (sent ? sent : 1));
    fflush(stdout);
    ops->close(&s);

    /* Read-back by a fresh instance. */
    s = open_store(url, &cfg);
    long missing = 0, duplicated = 0, reused = 0, wrong = 0, extra = 0, shorts = 0, read_n = 0;
    char *seen = calloc((size_t) (sent ? sent : 1), 1);
    if (!seen)
        die("out of memory");
    accs_t got = {0};
    for (long u = 0; u < users; u++) {
        accs_t *a = &acc[u];
        qsort(a->v, a->n, sizeof *a->v, acc_cmp);
        memset(seen, 0, (size_t) (sent ? sent : 1));
        got.n = 0;
        uint64_t from = 1;
        int64_t short_until = 0;
        for (;;) {
            if (ops->read(s, ++tok, names[u], from, READ_MAX) != CW_OK)
                die("read not accepted");
            cw_store_reply_t *r = next_reply(ops, s);
            if (r->status != CW_OK)
                die("read failed");
            size_t ne = 0;
            const cw_store_entry_t *es = cw_store_reply_entries(r, &ne);
            for (size_t k = 0; k < ne; k++) {
                const cw_store_entry_t *e = &es[k];
                read_n++;
                from = e->seq + 1;
                long msg = -1;
                if (e->message_id[0] == 'm')
                    msg = strtol(e->message_id + 1, NULL, 10);
                char want[32];
                snprintf(want, sizeof want, "%ld", msg);
                if (msg < 0 || msg >= sent || strcmp(e->sender, "drv") != 0 ||
                    e->text_len != strlen(want) || memcmp(e->text, want, e->text_len) != 0) {
                    wrong++;
                    continue;
                }
                if (seen[msg]++)
                    duplicated++;
                acc_push(&got, e->seq, msg);
            }
            int trunc = r->truncated;
            cw_store_reply_destroy(&r);
            if (trunc) {
                shorts++;
                if (!short_until)
                    short_until = now_ms() + SHORT_MS;
                if (now_ms() > short_until)
                    break; /* what stays unread counts as missing */
                struct timespec ts = {0, 20 * 1000000};
                nanosleep(&ts, NULL); /* the gate learns the writer's lease */
                continue;
            }
            if (!ne)
                break;
        }
        /* got: in seq order, one message per seq. Each ACCEPTED (seq, msg)
         * must be there as is. */
        size_t g = 0;
        for (size_t k = 0; k < a->n; k++) {
            const acc_t *x = &a->v[k];
            while (g < got.n && got.v[g].seq < x->seq)
                g++;
            int here = g < got.n && got.v[g].seq == x->seq;
            int twice = (k > 0 && a->v[k - 1].seq == x->seq && a->v[k - 1].msg != x->msg) ||
                        (k + 1 < a->n && a->v[k + 1].seq == x->seq && a->v[k + 1].msg != x->msg);
            if (!here || got.v[g].msg != x->msg)
                missing++;
            if (twice || (here && got.v[g].msg != x->msg))
                reused++;
        }
        size_t k = 0;
        for (g = 0; g < got.n; g++) {
            while (k < a->n && acc_cmp(&a->v[k], &got.v[g]) < 0)
                k++;
            if (k == a->n || acc_cmp(&a->v[k], &got.v[g]) != 0)
                extra++;
        }
    }
    free(got.v);
    ops->close(&s);
    printf("readback users %ld entries %ld accepted_entries %ld missing %ld duplicated %ld "
           "reused %ld wrong %ld extra %ld short %ld\n",
           users, read_n, entries_acc, missing, duplicated, reused, wrong, extra, shorts);
    fflush(stdout);
    for (long u = 0; u < users; u++)
        free(acc[u].v);
    free(acc);
    free(names);
    free(rv);
    free(seen);
    if (expect_clean && (missing || duplicated || reused || wrong || !accepted)) {
        fprintf(stderr, "store_driver: the read-back does not match what was ACCEPTED\n");
        return 1;
    }
    return 0;
}
