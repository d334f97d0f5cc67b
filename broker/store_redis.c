/*  store_redis: the Redis Cluster backend of store_if.h (cw_store_redis_ops;
 *  shared/SCALEOUT.md §2-§6). This file owns the backend's thread, its pipe to the
 *  router, the batches (group commit) and their durability (WAIT), the
 *  broker's lease, and open (the user log and resume clocks). The scripts
 *  and the entry encoding are store_redis_lua.c's; the visibility gate and
 *  the events are store_redis_gate.c's.
 *
 *  Threads: the router calls the ops (submit, recv, close) on its end of
 *  the thread's pipe (store_pipe.h), exactly as with store_actor.c (same
 *  object hand-over: a request object belongs to whoever holds it). The
 *  backend thread runs task(): one zmq_poll over the pipe and every Redis
 *  connection (cw_rc_pollitems), then cw_rc_process, then batch progress.
 *  Counters are atomics read by ops->stats from any thread.
 *
 *  A batch is what waited in the pipe when the previous batch completed
 *  (at most MAX_GROUP requests); one batch is in flight at a time. It runs
 *  in phases, each a set of commands sent at once (pipelined per primary by
 *  cw_rc) and awaited before the next: P1 checks (dedupe outcome records,
 *  session owners, entries an Ack with receipts covers), P2 the main
 *  commands (every APPEND script, in submission order), P3 what depends on
 *  P2 (outcome records, the claim's compare-and-set, receipts), P4 leases
 *  of session owners for WHO_PAGE. A READ/HISTORY that stops at an entry
 *  not visible as of the batch's snapshot reads the lease of each writer
 *  holding such an entry in P3 and, if that lets more through, reads again
 *  in P4 (judged by the gate as of that second read's sending). Then one
 *  WAIT per primary that ran a write of the batch.
 *
 *  Invariants:
 *    1. Nothing is answered before its writes are durable: the primary's
 *       reply (appendfsync always) and a WAIT on that same primary, sent
 *       after the reply came, that saw >= wait_replicas replicas. A WAIT
 *       that saw fewer, failed, or was answered by another node re-runs
 *       that primary's writes of the batch (idempotent scripts), in their
 *       order, and WAITs again, until the batch's deadline (retry_ms);
 *       what stays unconfirmed is CW_STORE_ERROR.
 *    2. Replies go out in submission order, then the DONE event. The batch
 *       counts as complete (visible to the gate, published on cw:done)
 *       only then; it is clean when every command was answered at its first
 *       attempt and every WAIT was satisfied at once.
 *    3. Every APPEND of a batch runs its scripts in the same phase (P2), in
 *       submission order, so per-slot FIFO (redis_cluster.h) keeps each
 *       sender's order in each queue.
 *    4. Objects: as store_actor.c's invariant 3 (the thread frees what it
 *       cannot send or has not processed when it stops).
 *    5. Incarnations: every command of a batch carries t->inc, and the
 *       lease names an incarnation before any batch carries it (at open;
 *       after a fence the new one is written with "reinc", WAITed, and
 *       adopted between batches), so that no other broker can have taken
 *       an incarnation for dead while its batches are still to come.
 */
#include "store_redis_int.h"
#include "receipts.h"
#include "store.h"
#include "store_pipe.h"

#include "causeway.pb-c.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_GROUP 4096
#define DEFAULT_MAX_QUEUED 100000
#define OBJ_MAGIC 0x3130716572736375ull /* "ucsreq01" */
#define REQ_FLUSH 99
#define MAX_ARG_LEN UINT32_MAX
#define PEEK_MAX 1024            /* entries an Ack with receipts looks at */
#define N_PHASES 4

/* ------------------------------------------------------------------------ */
/* Request objects                                                           */

void rs_req_destroy(cw_store_reply_t *r)
{
    rs_req_t *q = (rs_req_t *) (void *) r;
    cw_store_entries_free(&r->entries, r->n_entries);
    cw_store_users_free(&r->users, r->n_users);
    if (r->orig) {
        for (size_t i = 0; i < r->n_orig; i++)
            free((char *) r->orig[i].name);
        free(r->orig);
    }
    free(q);
}

rs_req_t *rs_req_new(int kind, uint64_t token, size_t n_rcpts, size_t strings, char **strp)
{
    if (n_rcpts > (SIZE_MAX - sizeof(rs_req_t) - strings) / sizeof(cw_store_rcpt_t))
        return NULL;
    size_t size = sizeof(rs_req_t) + n_rcpts * sizeof(cw_store_rcpt_t) + strings;
    rs_req_t *q = calloc(1, size);
    if (!q)
        return NULL;
    q->rep.kind = kind;
    q->rep.token = token;
    q->rep.destroy = rs_req_destroy;
    q->rep.rcpts = n_rcpts ? (cw_store_rcpt_t *) (void *) (q + 1) : NULL;
    q->rep.n_rcpts = n_rcpts;
    *strp = (char *) (q + 1) + n_rcpts * sizeof(cw_store_rcpt_t);
    return q;
}

char *rs_put(char **at, const void *s, size_t len)
{
    return cw_store_put(at, s, len);
}

/* The pipe (store_pipe.h), typed: 0 or -1 (errno; obj stays the caller's). */
static int send_obj(void *pipe, rs_req_t *obj, int flags)
{
    return cw_store_pipe_send(pipe, OBJ_MAGIC, obj, flags);
}

/* 1 with *obj, 0 for "$TERM", 2 for anything else, -1 none (errno). */
static int recv_obj(void *pipe, rs_req_t **obj, int flags)
{
    void *o = NULL;
    int rc = cw_store_pipe_recv(pipe, OBJ_MAGIC, &o, flags);
    if (rc == 1)
        *obj = o;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Shared state                                                              */

typedef struct {
    _Atomic uint64_t requests, groups, commits, appended, entries, duplicates, failed_groups,
        max_group, pending, users, fences;
    _Atomic uint64_t commit_hist[CW_COMMIT_BUCKETS + 1], commit_sum_us, commit_count;
} counters_t;

typedef struct backend {
    cw_store_thread_t *actor;    /* thread + pipe (store_pipe.h) */
    void *handle;
    size_t max_queued;
    rs_t *t;                     /* handed to the thread */
    _Atomic int exited;
    counters_t c;
} backend_t;

typedef struct batch batch_t;

typedef struct {
    char *user;
    uint64_t seq;
} drop_t;

struct rs {
    backend_t *be;
    cw_store_config_t cfg;
    cw_rc_t *rc;
    rs_gate_t *gate;
    void *pipe;
    char b[128];                 /* broker id */
    char inc[40];                /* incarnation of the batches (adopted between
                                    batches: the lease must name it first) */
    char lease_inc[40];          /* the incarnation the lease renewals write:
                                    inc, or after a fence the new one */
    char lease_prev[40];         /* the last incarnation a renewal confirmed */
    int quiet;                   /* the close's flush is answered: events are dropped
                                    here, not sent into a pipe nobody reads (store
                                    thread only) */
    char sha[N_SCRIPTS][41];     /* SCRIPT LOAD's */
    uint64_t batches;            /* batches completed */
    batch_t *cur;                /* the batch in flight */
    rs_req_t **reqs;             /* taken from the pipe for the next batch */
    int64_t lease_due_ms;
    int64_t lease_ok_ms;         /* last confirmed renewal */
    int lease_lost;              /* the lease is another incarnation's (said once) */
    int lease_gone;              /* a renewal found it gone (lapsed): fence now */
    int fenced;                  /* FENCED raised, UNFENCED not yet */
    int64_t fenced_ms;           /* when */
    uint64_t id_serial;          /* internal message ids */
    uint64_t pending_total;
    drop_t *drops;               /* expired entries to remove (next batch, P1) */
    size_t n_drops, cap_drops;
};

const char *rs_me_b(const rs_t *t) { return t->b; }
const char *rs_me_inc(const rs_t *t) { return t->inc; }
cw_rc_t *rs_rc(rs_t *t) { return t->rc; }
const cw_store_config_t *rs_cfg(const rs_t *t) { return &t->cfg; }

uint64_t rs_now_us(void) { return cw_now_us(); }

int64_t rs_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t rs_key(char *buf, size_t size, const char *prefix, const char *user, const char *suffix)
{
    int n = snprintf(buf, size, "%s{%s}%s", prefix, user, suffix ? suffix : "");
    return n < 0 ? 0 : ((size_t) n >= size ? size - 1 : (size_t) n);
}

void rs_emit(rs_t *t, rs_req_t *ev)
{
    if (t->quiet) { /* closing: the router reads nothing after the flush */
        rs_req_destroy(&ev->rep);
        return;
    }
    if (ev->rep.kind == CW_STORE_EV_NEW_USER) /* made by another broker */
        atomic_fetch_add_explicit(&t->be->c.users, 1, memory_order_relaxed);
    if (send_obj(t->pipe, ev, ZMQ_DONTWAIT) != 0) {
        CW_ERROR("redis store: event %d for the router dropped: %s", ev->rep.kind,
                 zmq_strerror(errno));
        rs_req_destroy(&ev->rep);
    }
}

/* A name the store can key: 1..CW_NAME_MAX_HARD bytes, no braces (a key's
 * hash tag must be the whole name). */
static int name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n > 0 && n <= CW_NAME_MAX_HARD && !strchr(name, '{') && !strchr(name, '}');
}

/* ------------------------------------------------------------------------ */
/* Commands and scripts                                                      */

/* A fire-and-forget command (PUBLISH, lease): errors logged at debug. */
static void ignore_cb(void *arg, int status, redisReply *r)
{
    (void) arg;
    if (status != CW_OK || (r && r->type == REDIS_REPLY_ERROR))
        CW_DEBUG("redis store: background command failed: %s",
                 r && r->type == REDIS_REPLY_ERROR ? r->str : cw_status_name(status));
}

static int cmd_key(rs_t *t, const char *key, int argc, const char **argv, const size_t *lens,
                   cw_rc_cb_t *cb, void *arg)
{
    return cw_rc_command(t->rc, cw_rc_slot(key, strlen(key)), argc, argv, lens, cb, arg);
}

int rs_script(rs_t *t, int script, int numkeys, int argc, const char **argv, const size_t *lens,
              cw_rc_cb_t *cb, void *arg)
{
    if (numkeys < 1 || argc < 2)
        return CW_ERR_INVALID;
    /* NOSCRIPT: cw_rc sends it again as EVAL from its position (redis_cluster.h 6) */
    uint16_t slot = cw_rc_slot(argv[1], lens ? lens[1] : strlen(argv[1])); /* the first key */
    return cw_rc_script(t->rc, slot, t->sha[script], rs_scripts[script], argc, argv, lens, cb, arg);
}

static void publish(rs_t *t, const char *channel, const char *msg, size_t len)
{
    const char *argv[] = {"PUBLISH", channel, msg};
    size_t lens[] = {7, strlen(channel), len};
    cmd_key(t, channel, 3, argv, lens, ignore_cb, NULL);
}

/* ------------------------------------------------------------------------ */
/* Batches                                                                   */

typedef enum {
    OP_DEDUP_GET,     /* P1 APPEND: the outcome record */
    OP_APPEND,        /* P2 APPEND: one recipient's script */
    OP_OUTCOME_SET,   /* P3 APPEND */
    OP_PEEK,          /* P1 ACK receipts */
    OP_ACK,           /* P2 */
    OP_RECEIPT,       /* P3 ACK: one receipt's append */
    OP_READ,
    OP_HISTORY,
    OP_ADD_USER,
    OP_ZADD,
    OP_CLOCK,
    OP_SESS_GET,      /* P1 CLAIM */
    OP_LEASE_GET,     /* P2 CLAIM, P4 WHO */
    OP_CLAIM,         /* P3 CLAIM */
    OP_RELEASE,
    OP_LIVE,
    OP_WHO_RANGE,     /* P2 WHO */
    OP_WHO_USER,      /* P3 WHO */
    OP_WHO_SESS,      /* P3 WHO */
    OP_WRITER_GET,    /* P3 READ/HISTORY: the lease of a writer the read stopped at */
    OP_DROP,          /* P1: expired entries reported, removed (rs_drop_expired) */
    OP_WAIT,
} op_kind_t;

typedef struct op {
    batch_t *b;
    rs_req_t *q;
    op_kind_t kind;
    size_t idx;              /* recipient / user / receipt index */
    uint16_t slot;
    int write;               /* covered by WAIT */
    int script;              /* -1: a plain command */
    int argc;
    char **argv;             /* kept for re-runs: [0] is the command or the sha */
    size_t *lens;
    int node;                /* the node whose reply it is; -1 none */
    int wait_node;           /* OP_WAIT: the node it confirms */
    int answered, failed, confirmed;
} op_t;

/* One receipt an Ack makes (ACK with receipts). */
typedef struct {
    cw_store_entry_t e;      /* the acknowledged entry (owns its memory) */
    rs_fields_t f;
    char *payload;
    size_t payload_len;
    cw_store_rcpt_t rcpt;
    char mid[600];
    uint8_t *blob;
    int status;              /* -1 unknown, else the recipient outcome */
    uint64_t seq;
    int dup;
} receipt_t;

/* Per-request state while the batch runs. */
typedef struct {
    /* APPEND */
    rs_fields_t f;
    char *payload;           /* ",<len>:<field>..." as the script publishes it */
    size_t payload_len;
    char dedupe_id[600];     /* message id or internal id */
    int have_mid;
    int outcome_found;       /* P1: the message was stored before */
    int *rdup;               /* per recipient: 1 answered from its dedupe record */
    int *rfail;              /* per recipient: failure status of its op, 0 none */
    /* ACK with receipts */
    receipt_t *rc;
    size_t n_rc;
    /* READ / HISTORY */
    uint64_t acked, last, gone; /* gone: expired entries removed above acked */
    cw_store_entry_t *ents;
    size_t n_ents;
    rs_w_t *ws;
    rs_snap_t *rsnap;        /* P4 re-read: the gate as of its sending (else b->snap) */
    /* CLAIM */
    char *own_b, *own_inc, *own_tok;
    size_t own_tok_len;
    int owner_alive;         /* -1 unknown */
    int claimed;
    /* WHO */
    char **names;
    size_t n_names;
    cw_store_user_t *wu;
    char **wb, **winc;
    uint64_t acked_now;      /* ACK: entries it acknowledged (the Stats pending) */
    int failed;              /* a write of the request failed: its status */
} work_t;

struct batch {
    rs_t *t;
    rs_req_t **reqs;
    size_t n;
    uint64_t number;
    op_t **ops;
    size_t n_ops, cap_ops;
    size_t outstanding;
    int phase;               /* 1..N_PHASES; N_PHASES+1: WAIT stage */
    int dirty;
    int waiting;             /* WAITs in flight */
    int64_t start_us, deadline_ms;
    rs_snap_t *snap;
    int wrote;
};

static void op_cb(void *arg, int status, redisReply *r);

static int op_send(op_t *o)
{
    rs_t *t = o->b->t;
    int rc;
    if (o->script >= 0) /* argv[0] is the sha; NOSCRIPT is cw_rc's (redis_cluster.h 6) */
        rc = cw_rc_script(t->rc, o->slot, t->sha[o->script], rs_scripts[o->script], o->argc - 1,
                          (const char **) o->argv + 1, o->lens + 1, op_cb, o);
    else
        rc = cw_rc_command(t->rc, o->slot, o->argc, (const char **) o->argv, o->lens, op_cb, o);
    if (rc == CW_OK) {
        o->answered = 0;
        o->b->outstanding++;
    }
    return rc;
}

/* Adds and sends an op. argv are copied (one allocation). For scripts,
 * argv is numkeys, keys..., args... (the sha is put in front). */
static op_t *op_add(batch_t *b, rs_req_t *q, op_kind_t kind, size_t idx, const char *slot_key,
                    int write, int script, int argc, const char **argv, const size_t *lens)
{
    if (b->n_ops == b->cap_ops) {
        size_t cap = b->cap_ops ? b->cap_ops * 2 : 64;
        op_t **g = realloc(b->ops, cap * sizeof *g);
        if (!g)
            return NULL;
        b->ops = g;
        b->cap_ops = cap;
    }
    int total = argc + (script >= 0 ? 1 : 0);
    size_t bytes = 0;
    for (int i = 0; i < argc; i++)
        bytes += (lens ? lens[i] : strlen(argv[i])) + 1;
    op_t *o = calloc(1, sizeof *o + (size_t) total * (sizeof(char *) + sizeof(size_t)) + bytes +
                           41);
    if (!o)
        return NULL;
    o->argv = (char **) (void *) (o + 1);
    o->lens = (size_t *) (void *) (o->argv + total);
    char *at = (char *) (o->lens + total);
    int k = 0;
    if (script >= 0) {
        o->argv[k] = rs_put(&at, b->t->sha[script], strlen(b->t->sha[script]));
        o->lens[k++] = strlen(b->t->sha[script]);
    }
    for (int i = 0; i < argc; i++) {
        size_t l = lens ? lens[i] : strlen(argv[i]);
        o->argv[k] = rs_put(&at, argv[i], l);
        o->lens[k++] = l;
    }
    o->argc = total;
    o->b = b;
    o->q = q;
    o->kind = kind;
    o->idx = idx;
    o->slot = cw_rc_slot(slot_key, strlen(slot_key));
    o->write = write;
    o->script = script;
    o->node = -1;
    o->wait_node = -1;
    b->ops[b->n_ops++] = o;
    if (op_send(o) != CW_OK) {
        o->answered = 1;
        o->failed = CW_STORE_ERROR;
    }
    if (write)
        b->wrote = 1;
    return o;
}

static work_t *W(rs_req_t *q)
{
    return q->work;
}

static void work_free(rs_req_t *q)
{
    work_t *w = q->work;
    if (!w)
        return;
    rs_fields_free(&w->f);
    free(w->payload);
    free(w->rdup);
    free(w->rfail);
    for (size_t i = 0; i < w->n_rc; i++) {
        free(w->rc[i].e.mem_);
        rs_fields_free(&w->rc[i].f);
        free(w->rc[i].payload);
        free(w->rc[i].blob);
    }
    free(w->rc);
    cw_store_entries_free(&w->ents, w->n_ents);
    free(w->ws);
    rs_snap_free(&w->rsnap);
    free(w->own_b);
    free(w->own_inc);
    free(w->own_tok);
    for (size_t i = 0; i < w->n_names; i++) {
        free(w->names[i]);
        if (w->wb)
            free(w->wb[i]);
        if (w->winc)
            free(w->winc[i]);
    }
    free(w->names);
    free(w->wb);
    free(w->winc);
    free(w->wu);
    free(w);
    q->work = NULL;
}

/* The packed form of fields (as SC_APPEND publishes it, after "E<seq>"). */
static char *pack_fields(const rs_fields_t *f, size_t *len)
{
    size_t size = 1;
    for (int i = 0; i < N_FIELDS; i++)
        size += 2 * 24 + strlen(rs_field_names[i]) + f->len[i];
    char *p = malloc(size);
    if (!p)
        return NULL;
    size_t at = 0;
    for (int i = 0; i < N_FIELDS; i++) {
        at += (size_t) sprintf(p + at, ",%zu:%s", strlen(rs_field_names[i]), rs_field_names[i]);
        at += (size_t) sprintf(p + at, ",%zu:", f->len[i]);
        memcpy(p + at, f->v[i], f->len[i]);
        at += f->len[i];
    }
    *len = at;
    return p;
}

/* Adds an SC_APPEND op of message m (fields f) for recipient `name`, with
 * the dedupe id `id`. */
static op_t *append_op(batch_t *b, rs_req_t *q, op_kind_t kind, size_t idx, const char *name,
                       const char *sender, const char *id, int internal, const rs_fields_t *f)
{
    rs_t *t = b->t;
    char ku[200], kq[200], kd[1000], kn[200], quota[24], tok[260], px[24];
    rs_key(ku, sizeof ku, "cw:u:", name, NULL);
    rs_key(kq, sizeof kq, "cw:q:", name, NULL);
    size_t kdl = rs_key(kd, sizeof kd, "cw:d:", name, ":");
    kdl += (size_t) snprintf(kd + kdl, sizeof kd - kdl, "%s:%s", sender, id);
    rs_key(kn, sizeof kn, "cw:n:", name, NULL);
    snprintf(quota, sizeof quota, "%u", t->cfg.queue_quota);
    snprintf(tok, sizeof tok, "%s %s %llu %p %zu", t->b, t->inc, (unsigned long long) b->number,
             (void *) q, idx);
    uint64_t pxv = internal ? (uint64_t) (t->cfg.retry_ms * 3u > 60000u ? t->cfg.retry_ms * 3u
                                                                         : 60000u)
                            : 0;
    snprintf(px, sizeof px, "%llu", (unsigned long long) pxv);
    const char *argv[10 + 2 * N_FIELDS];
    size_t lens[10 + 2 * N_FIELDS];
    int k = 0;
#define A(s, l) (argv[k] = (s), lens[k++] = (l))
    A("4", 1);
    A(ku, strlen(ku));
    A(kq, strlen(kq));
    A(kd, kdl);
    A(kn, strlen(kn));
    A(quota, strlen(quota));
    A(tok, strlen(tok));
    A(px, strlen(px));
    char nowwin[48];
    snprintf(nowwin, sizeof nowwin, "%llu,%llu", (unsigned long long) rs_now_us(),
             (unsigned long long) t->cfg.dedup_window_s * 1000ull);
    A(nowwin, strlen(nowwin));
    for (int i = 0; i < N_FIELDS; i++) {
        A(rs_field_names[i], strlen(rs_field_names[i]));
        A(f->v[i], f->len[i]);
    }
#undef A
    return op_add(b, q, kind, idx, ku, 1, SC_APPEND, k, argv, lens);
}

/* The outcome record of (sender, mid): "<status> <seq> <len>:<name>\n"... */
static void outcome_key(char *buf, size_t size, const char *sender, const char *mid)
{
    size_t n = rs_key(buf, size, "cw:o:", sender, ":");
    snprintf(buf + n, size - n, "%s", mid);
}

static int parse_outcome(rs_req_t *q, const char *s, size_t len)
{
    cw_store_reply_t *r = &q->rep;
    size_t cap = 0, n = 0;
    cw_store_rcpt_t *o = NULL;
    size_t off = 0;
    while (off < len) {
        int status = 0;
        unsigned long long seq = 0;
        size_t nl = 0;
        int used = 0;
        char tmp[64];
        size_t tl = len - off < sizeof tmp - 1 ? len - off : sizeof tmp - 1;
        memcpy(tmp, s + off, tl);
        tmp[tl] = 0;
        if (sscanf(tmp, "%d %llu %zu:%n", &status, &seq, &nl, &used) != 3 || used <= 0 ||
            off + (size_t) used + nl + 1 > len)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 4;
            cw_store_rcpt_t *g = realloc(o, cap * sizeof *g);
            if (!g)
                break;
            o = g;
        }
        char *name = malloc(nl + 1);
        if (!name)
            break;
        memcpy(name, s + off + used, nl);
        name[nl] = 0;
        o[n].name = name;
        o[n].status = status;
        o[n].seq = seq;
        n++;
        off += (size_t) used + nl + 1;
    }
    if (off != len || n == 0) {
        for (size_t i = 0; i < n; i++)
            free((char *) o[i].name);
        free(o);
        return -1;
    }
    r->orig = o;
    r->n_orig = n;
    return 0;
}

#define MAX_WRITER_GETS 8 /* lease reads per READ that stopped short */

/* How many of w's entries, oldest first, are visible as of snap (READ:
 * ascending already; HISTORY: still newest first). */
static size_t first_invisible(batch_t *b, work_t *w, const rs_snap_t *snap, int newest_first)
{
    uint64_t own_done = b->dirty ? b->number - 1 : b->number;
    size_t n = w->n_ents, keep = 0;
    while (keep < n) {
        size_t i = newest_first ? n - 1 - keep : keep;
        if (!(w->ents[i].status == CW_DAMAGED && !w->ws[i].b) &&
            !rs_snap_visible(b->t->gate, snap, &w->ws[i], own_done))
            break;
        keep++;
    }
    return keep;
}

/* Sends request q's READ or HISTORY script (P2; again in P4). */
static void read_op(batch_t *b, rs_req_t *q)
{
    char k1[200], k2[200], a1[24], a2[24];
    rs_key(k1, sizeof k1, "cw:u:", q->user, NULL);
    rs_key(k2, sizeof k2, "cw:q:", q->user, NULL);
    if (q->rep.kind == CW_STORE_REQ_READ) {
        snprintf(a1, sizeof a1, "%llu", (unsigned long long) q->arg);
        snprintf(a2, sizeof a2, "%u", q->n);
        const char *argv[] = {"2", k1, k2, a1, a2};
        op_add(b, q, OP_READ, 0, k1, 0, SC_READ, 5, argv, NULL);
    } else {
        snprintf(a1, sizeof a1, "%u", q->n);
        const char *argv[] = {"2", k1, k2, a1};
        op_add(b, q, OP_HISTORY, 0, k1, 0, SC_HISTORY, 4, argv, NULL);
    }
}

/* Issues the commands of request q for phase p. */
static void req_phase(batch_t *b, rs_req_t *q, int p)
{
    rs_t *t = b->t;
    cw_store_reply_t *r = &q->rep;
    work_t *w = W(q);
    char k1[1200], k2[200], k3[200];
    switch (r->kind) {
    case CW_STORE_REQ_APPEND: {
        cw_store_msg_t *m = &q->msg;
        if (p == 1 && w->have_mid) {
            outcome_key(k1, sizeof k1, m->sender, m->message_id);
            const char *argv[] = {"GET", k1};
            op_add(b, q, OP_DEDUP_GET, 0, k1, 0, -1, 2, argv, NULL);
        } else if (p == 2 && !w->outcome_found && m->n_rcpts) {
            for (size_t i = 0; i < m->n_rcpts; i++) {
                const char *name = m->rcpts[i].name;
                size_t j = 0;
                while (j < i && strcmp(m->rcpts[j].name, name) != 0)
                    j++;
                if (j < i || !name_ok(name))
                    continue; /* named twice: one entry (decided at the end) */
                append_op(b, q, OP_APPEND, i, name, m->sender, w->dedupe_id, !w->have_mid, &w->f);
            }
        } else if (p == 3 && w->have_mid && !w->outcome_found && !m->duplicate) {
            /* The outcome record, so that a repeat naming anyone is answered
             * with the original's recipients; only when every recipient got
             * an answer (a retry after a failure must re-run the scripts). */
            size_t size = 1;
            for (size_t i = 0; i < m->n_rcpts; i++) {
                if (m->rcpts[i].status == CW_STORE_ERROR || m->rcpts[i].status == CW_STORE_FULL)
                    return;
                size += 50 + strlen(m->rcpts[i].name);
            }
            char *rec = malloc(size);
            if (!rec)
                return;
            size_t at = 0;
            for (size_t i = 0; i < m->n_rcpts; i++)
                at += (size_t) sprintf(rec + at, "%d %llu %zu:%s\n", m->rcpts[i].status,
                                       (unsigned long long) m->rcpts[i].seq,
                                       strlen(m->rcpts[i].name), m->rcpts[i].name);
            outcome_key(k1, sizeof k1, m->sender, m->message_id);
            char px[24];
            snprintf(px, sizeof px, "%llu", (unsigned long long) t->cfg.dedup_window_s * 1000ull);
            const char *argv[] = {"SET", k1, rec, "PX", px};
            size_t lens[] = {3, strlen(k1), at, 2, strlen(px)};
            op_add(b, q, OP_OUTCOME_SET, 0, k1, 1, -1, 5, argv, lens);
            free(rec);
        }
        break;
    }
    case CW_STORE_REQ_ACK: {
        rs_key(k1, sizeof k1, "cw:u:", q->user, NULL);
        rs_key(k2, sizeof k2, "cw:q:", q->user, NULL);
        char a1[24], a2[24], a3[24], a4[24];
        if (p == 1 && q->n && name_ok(q->user)) {
            snprintf(a1, sizeof a1, "%llu", (unsigned long long) q->arg);
            snprintf(a2, sizeof a2, "%d", PEEK_MAX);
            const char *argv[] = {"2", k1, k2, a1, a2};
            op_add(b, q, OP_PEEK, 0, k1, 0, SC_PEEK, 5, argv, NULL);
        } else if (p == 2 && name_ok(q->user)) {
            snprintf(a1, sizeof a1, "%llu", (unsigned long long) q->arg);
            snprintf(a2, sizeof a2, "%u", t->cfg.retention);
            snprintf(a3, sizeof a3, "%llu", (unsigned long long) (rs_now_us() / 1000));
            snprintf(a4, sizeof a4, "%llu", (unsigned long long) t->cfg.dedup_window_s * 1000ull);
            rs_key(k3, sizeof k3, "cw:d:", q->user, ":");
            const char *argv[] = {"2", k1, k2, a1, a2, a3, a4, k3};
            op_add(b, q, OP_ACK, 0, k1, 1, SC_ACK, 8, argv, NULL);
        } else if (p == 3 && r->status == CW_OK) {
            for (size_t i = 0; i < w->n_rc; i++) {
                receipt_t *x = &w->rc[i];
                if (!name_ok(x->e.sender))
                    continue;
                append_op(b, q, OP_RECEIPT, i, x->e.sender, q->user, x->mid, 0, &x->f);
            }
        }
        break;
    }
    case CW_STORE_REQ_READ:
    case CW_STORE_REQ_HISTORY:
        if (!name_ok(q->user))
            break;
        if (p == 2) {
            read_op(b, q);
        } else if (p == 3 && r->status == CW_OK) {
            /* The read stops at the first entry not visible as of the
             * batch's snapshot: ask for the lease of every writer holding
             * such an entry (a writer this broker has not heard of, one
             * that closed or died, one whose DONE is not in yet). */
            size_t n = w->n_ents, asked = 0;
            const char *seen[MAX_WRITER_GETS];
            size_t at = first_invisible(b, w, b->snap, r->kind == CW_STORE_REQ_HISTORY);
            for (size_t k = at; k < n && asked < MAX_WRITER_GETS; k++) {
                size_t i = r->kind == CW_STORE_REQ_HISTORY ? n - 1 - k : k;
                const rs_w_t *x = &w->ws[i];
                if (!x->b || (strcmp(x->b, t->b) == 0 && strcmp(x->inc, t->inc) == 0))
                    continue;
                size_t j = 0;
                while (j < asked && strcmp(seen[j], x->b) != 0)
                    j++;
                if (j < asked)
                    continue;
                seen[asked++] = x->b;
                rs_key(k1, sizeof k1, "cw:b:", x->b, NULL);
                const char *argv[] = {"HMGET", k1, "inc", "done"};
                op_add(b, q, OP_WRITER_GET, i, k1, 0, -1, 4, argv, NULL);
            }
        } else if (p == 4 && r->status == CW_OK) {
            /* What the leases said is known before this read is sent: if it
             * lets more of the entries through, read again and judge that
             * read by the gate as of now (a snapshot, as for the first). */
            rs_snap_t *now = rs_gate_snap(t->gate);
            int hist = r->kind == CW_STORE_REQ_HISTORY;
            if (now && first_invisible(b, w, now, hist) > first_invisible(b, w, b->snap, hist)) {
                w->rsnap = now;
                r->status = CW_STORE_ERROR; /* until the re-read's reply parses */
                read_op(b, q);
            } else {
                rs_snap_free(&now);
            }
        }
        break;
    case CW_STORE_REQ_ADD_USER:
        if (p == 2 && name_ok(q->user)) {
            rs_key(k1, sizeof k1, "cw:u:", q->user, NULL);
            char now[24], tok[200];
            snprintf(now, sizeof now, "%llu", (unsigned long long) rs_now_us());
            snprintf(tok, sizeof tok, "%s %s %llu %p", t->b, t->inc,
                     (unsigned long long) b->number, (void *) q);
            const char *argv[] = {"1", k1, now, tok};
            op_add(b, q, OP_ADD_USER, 0, k1, 1, SC_ADD_USER, 4, argv, NULL);
            const char *zargv[] = {"ZADD", "cw:users", "0", q->user};
            op_add(b, q, OP_ZADD, 0, "cw:users", 1, -1, 4, zargv, NULL);
        }
        break;
    case CW_STORE_REQ_CLOCK:
        if (p == 2 && name_ok(q->user)) {
            rs_key(k1, sizeof k1, "cw:c:", q->user, NULL);
            char own[24];
            snprintf(own, sizeof own, "%llu", (unsigned long long) q->arg);
            const char *argv[] = {"HSET", k1, "own", own, "clock", (const char *) q->blob};
            size_t lens[] = {4, strlen(k1), 3, strlen(own), 5, q->blob_len};
            op_add(b, q, OP_CLOCK, 0, k1, 1, -1, 6, argv, lens);
        }
        break;
    case CW_STORE_REQ_CLAIM_SESSION:
        if (!name_ok(q->user))
            break;
        rs_key(k1, sizeof k1, "cw:s:", q->user, NULL);
        if (p == 1) {
            const char *argv[] = {"HMGET", k1, "b", "inc", "tok"};
            op_add(b, q, OP_SESS_GET, 0, k1, 0, -1, 5, argv, NULL);
        } else if (p == 2 && w->own_b && *w->own_b &&
                   !(strcmp(w->own_b, t->b) == 0 && strcmp(w->own_inc, t->inc) == 0)) {
            char kb[200];
            rs_key(kb, sizeof kb, "cw:b:", w->own_b, NULL);
            const char *argv[] = {"HGET", kb, "inc"};
            op_add(b, q, OP_LEASE_GET, 0, kb, 0, -1, 3, argv, NULL);
        } else if (p == 3 && r->status != CW_STORE_ERROR) {
            int mine = w->own_b && strcmp(w->own_b, t->b) == 0 && strcmp(w->own_inc, t->inc) == 0;
            int other = w->own_b && *w->own_b && !mine;
            int takeover = 0;
            if (other && w->owner_alive == 1) {
                if (!q->arg || q->blob_len != w->own_tok_len ||
                    memcmp(q->blob, w->own_tok, q->blob_len) != 0) {
                    r->status = CW_NAME_TAKEN;
                    break;
                }
                takeover = 1;
            }
            rs_key(k2, sizeof k2, "cw:n:", q->user, NULL);
            char now[24];
            snprintf(now, sizeof now, "%llu", (unsigned long long) rs_now_us());
            const char *argv[] = {"2", k1, k2,
                                  w->own_b ? w->own_b : "", w->own_inc ? w->own_inc : "",
                                  w->own_tok ? w->own_tok : "", t->b, t->inc,
                                  (const char *) q->blob, takeover ? "1" : "0", now};
            size_t lens[11];
            for (int i = 0; i < 11; i++)
                lens[i] = strlen(argv[i]);
            lens[5] = w->own_tok ? w->own_tok_len : 0;
            lens[8] = q->blob_len;
            r->resumed = takeover;
            op_add(b, q, OP_CLAIM, 0, k1, 1, SC_CLAIM, 11, argv, lens);
        }
        break;
    case CW_STORE_REQ_RELEASE_SESSION:
        if (p == 2 && name_ok(q->user)) {
            rs_key(k1, sizeof k1, "cw:s:", q->user, NULL);
            const char *argv[] = {"1", k1, t->b, t->inc};
            op_add(b, q, OP_RELEASE, 0, k1, 1, SC_RELEASE, 4, argv, NULL);
        }
        break;
    case CW_STORE_REQ_LIVE_SEND:
        if (p == 2)
            for (size_t i = 0; i < r->n_rcpts; i++) {
                const char *name = r->rcpts[i].name;
                if (!name_ok(name))
                    continue;
                rs_key(k1, sizeof k1, "cw:s:", name, NULL);
                rs_key(k2, sizeof k2, "cw:u:", name, NULL);
                rs_key(k3, sizeof k3, "cw:n:", name, NULL);
                const char *argv[] = {"3", k1, k2, k3, t->b, t->inc, (const char *) q->blob};
                size_t lens[] = {1, strlen(k1), strlen(k2), strlen(k3), strlen(t->b),
                                 strlen(t->inc), q->blob_len};
                op_add(b, q, OP_LIVE, i, k1, 0, SC_LIVE, 7, argv, lens);
            }
        break;
    case CW_STORE_REQ_WHO_PAGE:
        if (p == 2) {
            char from[CW_NAME_MAX_HARD + 8], lim[24];
            snprintf(from, sizeof from, "%s%s", q->user[0] ? "(" : "-", q->user);
            snprintf(lim, sizeof lim, "%llu", (unsigned long long) q->n + 1);
            const char *argv[] = {"ZRANGEBYLEX", "cw:users", from, "+", "LIMIT", "0", lim};
            op_add(b, q, OP_WHO_RANGE, 0, "cw:users", 0, -1, 7, argv, NULL);
        } else if (p == 3) {
            for (size_t i = 0; i < w->n_names; i++) {
                rs_key(k1, sizeof k1, "cw:u:", w->names[i], NULL);
                const char *argv[] = {"HMGET", k1, "created_us", "acked", "last", "gone"};
                op_add(b, q, OP_WHO_USER, i, k1, 0, -1, 6, argv, NULL);
                rs_key(k2, sizeof k2, "cw:s:", w->names[i], NULL);
                const char *sargv[] = {"HMGET", k2, "b", "inc"};
                op_add(b, q, OP_WHO_SESS, i, k2, 0, -1, 4, sargv, NULL);
            }
        } else if (p == 4) {
            for (size_t i = 0; i < w->n_names; i++) {
                if (!w->wb[i] || !*w->wb[i])
                    continue;
                if (strcmp(w->wb[i], t->b) == 0 && strcmp(w->winc[i], t->inc) == 0) {
                    w->wu[i].online = 1;
                    continue;
                }
                rs_key(k1, sizeof k1, "cw:b:", w->wb[i], NULL);
                const char *argv[] = {"HGET", k1, "inc"};
                op_add(b, q, OP_LEASE_GET, i, k1, 0, -1, 3, argv, NULL);
            }
        }
        break;
    default:
        break;
    }
}

static char *dup_str(const char *s, size_t len)
{
    char *p = malloc(len + 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = 0;
    }
    return p;
}

/* The user hash's HMGET created_us acked last gone into u (created_us,
 * last_seq, pending = last - acked - gone); anything else leaves u. */
static void user_counts(const redisReply *r, cw_store_user_t *u)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4)
        return;
    uint64_t a[4] = {0, 0, 0, 0};
    for (int k = 0; k < 4; k++)
        if (r->element[k]->type == REDIS_REPLY_STRING)
            a[k] = strtoull(r->element[k]->str, NULL, 10);
    u->created_us = a[0];
    u->last_seq = a[2];
    u->pending = a[2] > a[1] + a[3] ? a[2] - a[1] - a[3] : 0; /* gone: expired, removed */
}

static int reply_int(const redisReply *r, long long *v)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        *v = r->integer;
        return 0;
    }
    return -1;
}

/* Decodes an array of stream entries [[id, [f, v, ...]], ...] into w->ents
 * (with their writers in w->ws). 0 or -1 (OOM). */
static int decode_entries(work_t *w, const redisReply *es, uint64_t acked, uint64_t now_us)
{
    cw_store_entries_free(&w->ents, w->n_ents);
    free(w->ws);
    w->ws = NULL;
    w->n_ents = 0;
    if (es->type != REDIS_REPLY_ARRAY || es->elements == 0)
        return 0;
    w->ents = calloc(es->elements, sizeof *w->ents);
    w->ws = calloc(es->elements, sizeof *w->ws);
    if (!w->ents || !w->ws)
        return -1;
    for (size_t i = 0; i < es->elements; i++) {
        const redisReply *e = es->element[i];
        uint64_t seq = 0;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || strncmp(e->element[0]->str, "0-", 2) != 0)
            continue;
        seq = strtoull(e->element[0]->str + 2, NULL, 10);
        const redisReply *f = e->element[1];
        size_t nf = f->type == REDIS_REPLY_ARRAY ? f->elements : 0;
        const char **fv = calloc(nf ? nf : 1, sizeof *fv);
        size_t *fl = calloc(nf ? nf : 1, sizeof *fl);
        if (!fv || !fl) {
            free(fv);
            free(fl);
            return -1;
        }
        for (size_t k = 0; k < nf; k++) {
            fv[k] = f->element[k]->type == REDIS_REPLY_STRING ? f->element[k]->str : "";
            fl[k] = f->element[k]->type == REDIS_REPLY_STRING ? (size_t) f->element[k]->len : 0;
        }
        uint32_t crc;
        int rc = rs_entry_decode(seq, fv, fl, nf, acked, now_us, &w->ents[w->n_ents],
                                 &w->ws[w->n_ents], &crc);
        /* the writer points into the reply: copy what the gate needs */
        rs_w_t *ww = &w->ws[w->n_ents];
        if (ww->b) {
            char *bb = dup_str(ww->b, ww->b_len), *ii = dup_str(ww->inc, ww->inc_len);
            ww->b = bb;
            ww->inc = ii;
            if (!bb || !ii) {
                free(bb);
                free(ii);
                ww->b = ww->inc = NULL;
            }
        }
        free(fv);
        free(fl);
        if (rc != 0)
            return -1;
        w->n_ents++;
    }
    return 0;
}

static void free_ws(work_t *w)
{
    if (!w->ws)
        return;
    for (size_t i = 0; i < w->n_ents; i++) {
        free((char *) w->ws[i].b);
        free((char *) w->ws[i].inc);
    }
    free(w->ws);
    w->ws = NULL;
}

/* Prepares the receipts an Ack will make from the peeked entries. */
static void prepare_receipts(rs_t *t, batch_t *b, rs_req_t *q, work_t *w)
{
    size_t n = 0;
    for (size_t i = 0; i < w->n_ents; i++)
        n += cw_receipts_wanted(&w->ents[i]);
    if (!n)
        return;
    w->rc = calloc(n, sizeof *w->rc);
    if (!w->rc)
        return;
    uint64_t now = rs_now_us();
    char wstr[200];
    snprintf(wstr, sizeof wstr, "%s %s %llu", t->b, t->inc, (unsigned long long) b->number);
    for (size_t i = 0; i < w->n_ents; i++) {
        cw_store_entry_t *e = &w->ents[i];
        if (!cw_receipts_wanted(e))
            continue;
        receipt_t *x = &w->rc[w->n_rc];
        Causeway__V1__Receipt rr = CAUSEWAY__V1__RECEIPT__INIT;
        rr.message_id = (char *) e->message_id;
        rr.reader = (char *) q->user;
        rr.read_us = now;
        rr.message_seq = e->seq;
        Causeway__V1__Deliver holder = CAUSEWAY__V1__DELIVER__INIT;
        holder.receipt = &rr;
        size_t len = causeway__v1__deliver__get_packed_size(&holder);
        x->blob = malloc(len ? len : 1);
        if (!x->blob)
            continue;
        causeway__v1__deliver__pack(&holder, x->blob);
        snprintf(x->mid, sizeof x->mid, "\x01receipt:%s:%s", e->sender, e->message_id);
        x->rcpt.name = e->sender;
        cw_store_msg_t m = {.sender = q->user, .message_id = x->mid, .text = "", .text_len = 0,
                            .clock = x->blob, .clock_len = len, .timestamp_us = now,
                            .rcpts = &x->rcpt, .n_rcpts = 1};
        uint64_t exp = t->cfg.default_ttl_s ? now + (uint64_t) t->cfg.default_ttl_s * 1000000u : 0;
        if (rs_fields_build(&x->f, &m, exp, wstr) != 0) {
            free(x->blob);
            x->blob = NULL;
            continue;
        }
        x->payload = pack_fields(&x->f, &x->payload_len);
        x->e = *e;
        memset(e, 0, sizeof *e);   /* moved */
        e->status = CW_DAMAGED;    /* so the slot is not looked at again */
        x->status = -1;
        w->n_rc++;
    }
}

/* Handles the reply of op o (the first or a re-run). */
static void op_reply(op_t *o, const redisReply *r)
{
    batch_t *b = o->b;
    rs_t *t = b->t;
    rs_req_t *q = o->q;
    cw_store_reply_t *rep = q ? &q->rep : NULL;
    work_t *w = q ? W(q) : NULL;
    long long v = 0;
    switch (o->kind) {
    case OP_DEDUP_GET:
        if (r->type == REDIS_REPLY_STRING && parse_outcome(q, r->str, r->len) == 0) {
            w->outcome_found = 1;
            q->msg.duplicate = 1;
        }
        break;
    case OP_APPEND:
    case OP_RECEIPT: {
        int st = CW_STORE_ERROR, dup = 0;
        uint64_t seq = 0;
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && reply_int(r->element[0], &v) == 0) {
            if (v == -1)
                st = CW_UNKNOWN_USER;
            else if (v == -2)
                st = CW_QUEUE_FULL;
            else if (v == 0 && r->elements >= 2 && r->element[1]->type == REDIS_REPLY_INTEGER) {
                st = CW_ACCEPTED;
                seq = (uint64_t) r->element[1]->integer;
            } else if (v == 1 && r->elements >= 3 && r->element[1]->type == REDIS_REPLY_INTEGER) {
                st = CW_ACCEPTED;
                seq = (uint64_t) r->element[1]->integer;
                /* our own earlier run of this very op is not a duplicate */
                char tok[260];
                snprintf(tok, sizeof tok, "%s %s %llu %p %zu", t->b, t->inc,
                         (unsigned long long) b->number, (void *) q, o->idx);
                dup = !(r->element[2]->type == REDIS_REPLY_STRING &&
                        strcmp(r->element[2]->str, tok) == 0);
            }
        }
        if (o->kind == OP_APPEND) {
            q->msg.rcpts[o->idx].status = st;
            q->msg.rcpts[o->idx].seq = seq;
            w->rdup[o->idx] = dup;
        } else {
            w->rc[o->idx].status = st;
            w->rc[o->idx].seq = seq;
            w->rc[o->idx].dup = dup;
        }
        break;
    }
    case OP_PEEK:
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 4 && reply_int(r->element[0], &v) == 0 &&
            v == 0) {
            if (decode_entries(w, r->element[3], 0, 0) == 0)
                prepare_receipts(t, b, q, w);
            cw_store_entries_free(&w->ents, w->n_ents);
            free_ws(w);
            w->n_ents = 0;
        }
        break;
    case OP_ACK:
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 2 && reply_int(r->element[0], &v) == 0) {
            rep->status = v == 0 ? CW_OK : v == -1 ? CW_UNKNOWN_USER : CW_BAD_REQUEST;
            long long pend = 0, newly = 0;
            reply_int(r->element[1], &pend);
            rep->pending = pend > 0 ? (uint64_t) pend : 0;
            if (r->elements >= 3 && reply_int(r->element[2], &newly) == 0 && newly > 0)
                w->acked_now = (uint64_t) newly;
        }
        break;
    case OP_READ:
    case OP_HISTORY:
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && reply_int(r->element[0], &v) == 0) {
            if (v == -1) {
                rep->status = CW_UNKNOWN_USER;
                break;
            }
            long long acked = 0, last = 0;
            if (r->elements < 4 || reply_int(r->element[1], &acked) != 0 ||
                reply_int(r->element[2], &last) != 0)
                break;
            long long gone = 0;
            if (r->elements >= 5)
                reply_int(r->element[4], &gone);
            w->acked = (uint64_t) acked;
            w->last = (uint64_t) last;
            w->gone = gone > 0 ? (uint64_t) gone : 0;
            free_ws(w);
            uint64_t now = rs_now_us();
            if (decode_entries(w, r->element[3], w->acked, o->kind == OP_READ ? now : 0) != 0) {
                rep->status = CW_ERR_NOMEM;
                break;
            }
            /* HISTORY: an unacknowledged entry whose TTL ran out says so and
             * keeps its text (as the SQLite store's History); only READ
             * drops the text and reports it once */
            for (size_t i = 0; o->kind == OP_HISTORY && i < w->n_ents; i++) {
                cw_store_entry_t *e = &w->ents[i];
                if (e->status == CW_OK && !e->acked && e->expires_us && e->expires_us <= now)
                    e->status = CW_EXPIRED;
            }
            rep->status = CW_OK;
        }
        break;
    case OP_ADD_USER:
        if (reply_int(r, &v) == 0) {
            rep->created = v == 1;
            rep->status = CW_OK;
        }
        break;
    case OP_ZADD:
    case OP_CLOCK:
    case OP_OUTCOME_SET:
        break;
    case OP_SESS_GET:
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
            free(w->own_b);
            free(w->own_inc);
            free(w->own_tok);
            const redisReply *e0 = r->element[0], *e1 = r->element[1], *e2 = r->element[2];
            w->own_b = e0->type == REDIS_REPLY_STRING ? dup_str(e0->str, e0->len) : NULL;
            w->own_inc = e1->type == REDIS_REPLY_STRING ? dup_str(e1->str, e1->len) : dup_str("", 0);
            w->own_tok = e2->type == REDIS_REPLY_STRING ? dup_str(e2->str, e2->len) : dup_str("", 0);
            w->own_tok_len = e2->type == REDIS_REPLY_STRING ? e2->len : 0;
            rep->status = CW_OK;
        } else {
            rep->status = CW_STORE_ERROR;
        }
        break;
    case OP_LEASE_GET:
        if (rep->kind == CW_STORE_REQ_CLAIM_SESSION) {
            w->owner_alive = r->type == REDIS_REPLY_STRING && w->own_inc &&
                             strcmp(r->str, w->own_inc) == 0;
        } else {
            w->wu[o->idx].online = r->type == REDIS_REPLY_STRING && w->winc[o->idx] &&
                                   strcmp(r->str, w->winc[o->idx]) == 0;
        }
        break;
    case OP_CLAIM:
        if (reply_int(r, &v) == 0) {
            w->claimed = v == 1;
            rep->status = v == 1 ? CW_OK : CW_NAME_TAKEN;
            if (v != 1)
                rep->resumed = 0;
        }
        break;
    case OP_RELEASE:
        w->claimed = reply_int(r, &v) == 0 && v == 1;
        rep->status = CW_OK;
        break;
    case OP_LIVE:
        if (reply_int(r, &v) == 0)
            rep->rcpts[o->idx].status = v == 1 ? CW_DELIVERED : CW_OFFLINE;
        break;
    case OP_WHO_RANGE:
        if (r->type == REDIS_REPLY_ARRAY) {
            size_t n = r->elements;
            if (n > q->n) {
                rep->truncated = 1;
                n = q->n;
            }
            w->names = calloc(n ? n : 1, sizeof *w->names);
            w->wb = calloc(n ? n : 1, sizeof *w->wb);
            w->winc = calloc(n ? n : 1, sizeof *w->winc);
            w->wu = calloc(n ? n : 1, sizeof *w->wu);
            if (!w->names || !w->wb || !w->winc || !w->wu) {
                rep->status = CW_ERR_NOMEM;
                break;
            }
            for (size_t i = 0; i < n; i++)
                if (r->element[i]->type == REDIS_REPLY_STRING)
                    w->names[w->n_names++] = dup_str(r->element[i]->str, r->element[i]->len);
            rep->status = CW_OK;
        }
        break;
    case OP_WHO_USER:
        user_counts(r, &w->wu[o->idx]);
        break;
    case OP_WHO_SESS:
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
            const redisReply *e0 = r->element[0], *e1 = r->element[1];
            if (e0->type == REDIS_REPLY_STRING && e1->type == REDIS_REPLY_STRING) {
                w->wb[o->idx] = dup_str(e0->str, e0->len);
                w->winc[o->idx] = dup_str(e1->str, e1->len);
            }
        }
        break;
    case OP_WRITER_GET:
        rs_gate_writer_learn(t->gate, &w->ws[o->idx], r);
        break;
    case OP_DROP:
    case OP_WAIT:
        break;
    }
}

static int starts_with(const redisReply *r, const char *p)
{
    return r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, p, strlen(p)) == 0;
}

static void op_cb(void *arg, int status, redisReply *r)
{
    op_t *o = arg;
    batch_t *b = o->b;
    rs_t *t = b->t;
    b->outstanding--;
    o->answered = 1;
    if (status != CW_OK) {
        o->failed = status == CW_SHUTTING_DOWN ? CW_SHUTTING_DOWN : CW_STORE_ERROR;
        o->node = -1;
        b->dirty = 1;
        return;
    }
    if (cw_rc_cb_attempts(t->rc) > 1)
        b->dirty = 1;
    o->node = cw_rc_cb_node(t->rc);
    if (o->kind == OP_WAIT) {
        long long v = -1;
        if (reply_int(r, &v) == 0 && v >= (long long) t->cfg.wait_replicas &&
            o->node == o->wait_node) {
            for (size_t i = 0; i < b->n_ops; i++) {
                op_t *x = b->ops[i];
                if (x->write && x->answered && !x->failed && x->node == o->wait_node)
                    x->confirmed = 1;
            }
        } else {
            b->dirty = 1;
            CW_WARN("redis store: WAIT %u on node %d saw %lld replicas (batch %llu): re-running "
                    "its writes",
                    t->cfg.wait_replicas, o->wait_node, v, (unsigned long long) b->number);
        }
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        o->failed = starts_with(r, "OOM") ? CW_STORE_FULL : CW_STORE_ERROR;
        if (o->failed == CW_STORE_ERROR)
            CW_ERROR("redis store: command failed: %s", r->str);
        return;
    }
    o->failed = 0;
    op_reply(o, r);
}

/* ------------------------------------------------------------------------ */
/* Batch life                                                                */

static void observe_commit(counters_t *c, int64_t us)
{
    static const uint64_t bounds[CW_COMMIT_BUCKETS] = CW_COMMIT_BOUNDS_US;
    uint64_t v = us > 0 ? (uint64_t) us : 0;
    size_t i = 0;
    while (i < CW_COMMIT_BUCKETS && v > bounds[i])
        i++;
    atomic_fetch_add_explicit(&c->commit_hist[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->commit_sum_us, v, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->commit_count, 1, memory_order_release);
}

static void batch_free(batch_t **p)
{
    batch_t *b = *p;
    if (!b)
        return;
    for (size_t i = 0; i < b->n_ops; i++)
        free(b->ops[i]);
    free(b->ops);
    for (size_t i = 0; i < b->n; i++)
        if (b->reqs[i]) {
            work_free(b->reqs[i]);
            rs_req_destroy(&b->reqs[i]->rep);
        }
    free(b->reqs);
    rs_snap_free(&b->snap);
    free(b);
    *p = NULL;
}

/* Sets up request q's work state; statuses decided before any command. */
static int req_prepare(batch_t *b, rs_req_t *q)
{
    rs_t *t = b->t;
    cw_store_reply_t *r = &q->rep;
    work_t *w = calloc(1, sizeof *w);
    if (!w)
        return -1;
    q->work = w;
    w->owner_alive = -1;
    r->status = CW_OK;
    switch (r->kind) {
    case CW_STORE_REQ_APPEND: {
        cw_store_msg_t *m = &q->msg;
        m->status = CW_OK;
        m->duplicate = 0;
        w->rdup = calloc(m->n_rcpts ? m->n_rcpts : 1, sizeof *w->rdup);
        w->rfail = calloc(m->n_rcpts ? m->n_rcpts : 1, sizeof *w->rfail);
        if (!w->rdup || !w->rfail)
            return -1;
        for (size_t i = 0; i < m->n_rcpts; i++) {
            m->rcpts[i].status = name_ok(m->rcpts[i].name) ? CW_STORE_ERROR : CW_UNKNOWN_USER;
            m->rcpts[i].seq = 0;
        }
        w->have_mid = m->message_id && *m->message_id;
        if (w->have_mid)
            snprintf(w->dedupe_id, sizeof w->dedupe_id, "%s", m->message_id);
        else
            snprintf(w->dedupe_id, sizeof w->dedupe_id, "\x02%s:%s:%llu", t->b, t->inc,
                     (unsigned long long) ++t->id_serial);
        if (!name_ok(m->sender) || strlen(w->dedupe_id) >= sizeof w->dedupe_id - 1) {
            r->status = CW_BAD_REQUEST;
            for (size_t i = 0; i < m->n_rcpts; i++)
                m->rcpts[i].status = CW_BAD_REQUEST;
            w->have_mid = 0;
            w->outcome_found = 1; /* nothing to run */
            return 0;
        }
        char wstr[200];
        snprintf(wstr, sizeof wstr, "%s %s %llu", t->b, t->inc, (unsigned long long) b->number);
        uint32_t ttl = m->ttl_s ? m->ttl_s : t->cfg.default_ttl_s;
        uint64_t exp = ttl ? m->timestamp_us + (uint64_t) ttl * 1000000u : 0;
        if (rs_fields_build(&w->f, m, exp, wstr) != 0)
            return -1;
        w->payload = pack_fields(&w->f, &w->payload_len);
        if (!w->payload)
            return -1;
        break;
    }
    case CW_STORE_REQ_ACK:
    case CW_STORE_REQ_READ:
    case CW_STORE_REQ_HISTORY:
        r->status = name_ok(q->user) ? CW_STORE_ERROR : CW_UNKNOWN_USER;
        break;
    case CW_STORE_REQ_ADD_USER:
    case CW_STORE_REQ_CLOCK:
        r->status = name_ok(q->user) ? CW_STORE_ERROR : CW_BAD_NAME;
        if (r->kind == CW_STORE_REQ_CLOCK && r->status == CW_STORE_ERROR)
            r->status = CW_OK;
        break;
    case CW_STORE_REQ_CLAIM_SESSION:
        r->status = name_ok(q->user) ? CW_STORE_ERROR : CW_BAD_NAME;
        break;
    case CW_STORE_REQ_LIVE_SEND:
        for (size_t i = 0; i < r->n_rcpts; i++)
            r->rcpts[i].status = CW_OFFLINE;
        break;
    case CW_STORE_REQ_WHO_PAGE:
        r->status = CW_STORE_ERROR;
        break;
    default:
        break;
    }
    return 0;
}

static void drops_phase(batch_t *b);

static void batch_phase(batch_t *b)
{
    if (b->phase == 1)
        drops_phase(b);
    for (size_t i = 0; i < b->n; i++)
        if (b->reqs[i]->work)
            req_phase(b, b->reqs[i], b->phase);
}

/* The WAIT stage: one WAIT per node holding unconfirmed writes. Returns
 * the number sent. */
static int send_waits(batch_t *b)
{
    rs_t *t = b->t;
    int64_t left = b->deadline_ms - rs_now_ms();
    long long tmo = left - 100;
    if (tmo > 1000)
        tmo = 1000;
    if (tmo < 20)
        tmo = 20;
    char reps[16], tms[24];
    snprintf(reps, sizeof reps, "%u", t->cfg.wait_replicas);
    snprintf(tms, sizeof tms, "%lld", tmo);
    int sent = 0;
    int seen[256] = {0};
    for (size_t i = 0; i < b->n_ops; i++) {
        op_t *x = b->ops[i];
        if (!x->write || !x->answered || x->failed || x->confirmed || x->node < 0 ||
            x->node >= 256 || seen[x->node])
            continue;
        seen[x->node] = 1;
        op_t *o = calloc(1, sizeof *o + 3 * (sizeof(char *) + sizeof(size_t)));
        if (!o)
            continue;
        if (b->n_ops == b->cap_ops) {
            size_t cap = b->cap_ops * 2;
            op_t **g = realloc(b->ops, cap * sizeof *g);
            if (!g) {
                free(o);
                continue;
            }
            b->ops = g;
            b->cap_ops = cap;
        }
        o->argv = (char **) (void *) (o + 1);
        o->lens = (size_t *) (void *) (o->argv + 3);
        o->argv[0] = "WAIT";
        o->argv[1] = reps;
        o->argv[2] = tms;
        o->lens[0] = 4;
        o->lens[1] = strlen(reps);
        o->lens[2] = strlen(tms);
        o->argc = 3;
        o->b = b;
        o->kind = OP_WAIT;
        o->slot = x->slot;
        o->script = -1;
        o->node = -1;
        o->wait_node = x->node;
        b->ops[b->n_ops++] = o;
        if (op_send(o) == CW_OK)
            sent++;
        /* argv points at stack buffers: cw_rc copied them; never re-sent */
        o->argv[1] = o->argv[2] = NULL;
    }
    return sent;
}

/* Re-runs every unconfirmed write in op order. Returns how many. */
static int rerun(batch_t *b)
{
    int n = 0;
    for (size_t i = 0; i < b->n_ops; i++) {
        op_t *x = b->ops[i];
        if (x->kind == OP_WAIT || !x->write || x->confirmed ||
            (x->failed && x->failed != CW_STORE_ERROR))
            continue;
        x->failed = 0;
        if (op_send(x) == CW_OK)
            n++;
        else {
            x->answered = 1;
            x->failed = CW_STORE_ERROR;
        }
    }
    return n;
}

static void fill_status(rs_req_t *q)
{
    cw_store_reply_t *r = &q->rep;
    work_t *w = W(q);
    if (r->kind != CW_STORE_REQ_APPEND) {
        if (w && w->failed)
            r->status = w->failed;
        return;
    }
    cw_store_msg_t *m = &q->msg;
    if (r->status == CW_BAD_REQUEST) {
        m->status = CW_BAD_REQUEST;
        return;
    }
    if (m->n_rcpts == 0) {
        r->status = m->status = w->outcome_found ? CW_OK : CW_UNKNOWN_USER;
        r->duplicate = m->duplicate = w->outcome_found;
        return;
    }
    if (w->outcome_found) {
        /* The original's outcome, for the recipients the repeat names. */
        for (size_t i = 0; i < m->n_rcpts; i++) {
            m->rcpts[i].status = CW_BAD_REQUEST;
            m->rcpts[i].seq = 0;
            for (size_t k = 0; k < r->n_orig; k++)
                if (strcmp(r->orig[k].name, m->rcpts[i].name) == 0) {
                    m->rcpts[i].status = r->orig[k].status;
                    m->rcpts[i].seq = r->orig[k].seq;
                }
        }
        r->status = m->status = CW_OK;
        r->duplicate = m->duplicate = 1;
        return;
    }
    /* Names given twice share the first one's outcome. */
    for (size_t i = 0; i < m->n_rcpts; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(m->rcpts[j].name, m->rcpts[i].name) == 0) {
                m->rcpts[i].status = m->rcpts[j].status;
                m->rcpts[i].seq = m->rcpts[j].seq;
                w->rdup[i] = w->rdup[j];
                break;
            }
    for (size_t i = 0; i < m->n_rcpts; i++)
        if (w->rfail[i]) {
            m->rcpts[i].status = w->rfail[i];
            m->rcpts[i].seq = 0;
        }
    size_t acc = 0, dups = 0, full = 0, err = 0, sfull = 0;
    for (size_t i = 0; i < m->n_rcpts; i++) {
        int s = m->rcpts[i].status;
        acc += s == CW_ACCEPTED;
        dups += s == CW_ACCEPTED && w->rdup[i];
        full += s == CW_QUEUE_FULL;
        err += s == CW_STORE_ERROR;
        sfull += s == CW_STORE_FULL;
    }
    if (acc && dups == acc && acc == m->n_rcpts && w->have_mid) {
        /* Every recipient answered from its dedupe record: the repeat of a
         * message whose outcome record is gone (expired, or the original
         * failed somewhere): its recipients as found. */
        m->duplicate = 1;
        r->orig = calloc(m->n_rcpts, sizeof *r->orig);
        if (r->orig) {
            for (size_t i = 0; i < m->n_rcpts; i++) {
                r->orig[i] = m->rcpts[i];
                r->orig[i].name = dup_str(m->rcpts[i].name, strlen(m->rcpts[i].name));
            }
            r->n_orig = m->n_rcpts;
        }
    }
    m->status = acc ? CW_OK
                    : err ? CW_STORE_ERROR
                          : sfull ? CW_STORE_FULL : full ? CW_QUEUE_FULL : CW_UNKNOWN_USER;
    r->status = m->status;
    r->duplicate = m->duplicate;
}

/* Results of failed or unconfirmed writes go into their requests. */
static void apply_failures(batch_t *b)
{
    for (size_t i = 0; i < b->n_ops; i++) {
        op_t *x = b->ops[i];
        if (x->kind == OP_WAIT || x->kind == OP_WRITER_GET || !x->q)
            continue; /* a lease read that failed only leaves the read short */
        int f = x->failed;
        if (!f && x->write && !x->confirmed)
            f = CW_STORE_ERROR;
        if (!f && !x->answered)
            f = CW_STORE_ERROR;
        if (!f)
            continue;
        work_t *w = W(x->q);
        if (x->kind == OP_APPEND)
            w->rfail[x->idx] = f;
        else if (x->kind == OP_RECEIPT)
            w->rc[x->idx].status = f;
        else if (x->kind == OP_LIVE)
            x->q->rep.rcpts[x->idx].status = CW_OFFLINE;
        else if (x->kind != OP_OUTCOME_SET)
            w->failed = f;
    }
}

#define READ_DROP_MAX 64 /* expired seqs per SC_DROP */

void rs_drop_expired(rs_t *t, const char *user, const uint64_t *seqs, size_t n)
{
    /* Queued for the next batch's first phase, so that every read after
     * this report runs after the removal (phases are awaited in turn). */
    for (size_t i = 0; i < n; i++) {
        if (t->n_drops == t->cap_drops) {
            size_t cap = t->cap_drops ? t->cap_drops * 2 : 16;
            drop_t *g = realloc(t->drops, cap * sizeof *g);
            if (!g)
                return; /* reported again at the next read */
            t->drops = g;
            t->cap_drops = cap;
        }
        char *u = strdup(user);
        if (!u)
            return;
        t->drops[t->n_drops++] = (drop_t){u, seqs[i]};
        /* the Stats pending: as if it succeeds (a failed removal reports
         * the entry again at the next read) */
        uint64_t p = atomic_load_explicit(&t->be->c.pending, memory_order_relaxed);
        atomic_store_explicit(&t->be->c.pending, p ? p - 1 : 0, memory_order_relaxed);
    }
}

/* P1: the queued removals (rs_drop_expired), one SC_DROP per user and at
 * most READ_DROP_MAX seqs. */
static void drops_phase(batch_t *b)
{
    rs_t *t = b->t;
    char now[24], win[24];
    snprintf(now, sizeof now, "%llu", (unsigned long long) rs_now_us());
    snprintf(win, sizeof win, "%llu", (unsigned long long) t->cfg.dedup_window_s * 1000ull);
    size_t i = 0;
    while (i < t->n_drops) {
        const char *user = t->drops[i].user;
        char ku[200], kq[200], num[READ_DROP_MAX][24];
        const char *argv[5 + READ_DROP_MAX];
        rs_key(ku, sizeof ku, "cw:u:", user, NULL);
        rs_key(kq, sizeof kq, "cw:q:", user, NULL);
        argv[0] = "2";
        argv[1] = ku;
        argv[2] = kq;
        argv[3] = now;
        argv[4] = win;
        size_t k = 0;
        while (i + k < t->n_drops && k < READ_DROP_MAX && strcmp(t->drops[i + k].user, user) == 0) {
            snprintf(num[k], sizeof num[k], "%llu", (unsigned long long) t->drops[i + k].seq);
            argv[5 + k] = num[k];
            k++;
        }
        op_add(b, NULL, OP_DROP, 0, ku, 0, SC_DROP, (int) (5 + k), argv, NULL);
        i += k;
    }
    for (i = 0; i < t->n_drops; i++)
        free(t->drops[i].user);
    t->n_drops = 0;
}

/* Cuts a READ/HISTORY reply at the first entry that is not visible. */
static void finish_read(batch_t *b, rs_req_t *q)
{
    cw_store_reply_t *r = &q->rep;
    work_t *w = W(q);
    if (r->status != CW_OK) {
        cw_store_entries_free(&w->ents, w->n_ents);
        free_ws(w);
        w->n_ents = 0;
        return;
    }
    size_t n = w->n_ents;
    if (r->kind == CW_STORE_REQ_HISTORY)
        for (size_t i = 0; i < n / 2; i++) { /* newest first -> oldest first */
            cw_store_entry_t e = w->ents[i];
            w->ents[i] = w->ents[n - 1 - i];
            w->ents[n - 1 - i] = e;
            rs_w_t x = w->ws[i];
            w->ws[i] = w->ws[n - 1 - i];
            w->ws[n - 1 - i] = x;
        }
    size_t keep = first_invisible(b, w, w->rsnap ? w->rsnap : b->snap, 0);
    /* stopped before an entry that exists: say so (store_if.h READ) */
    r->truncated = keep < n;
    for (size_t i = keep; i < n; i++)
        free(w->ents[i].mem_);
    free_ws(w);
    r->entries = keep ? w->ents : NULL;
    if (!keep)
        free(w->ents);
    r->n_entries = keep;
    w->ents = NULL;
    w->n_ents = 0;
    /* Expired entries are reported once (store_if.h READ): removed now. */
    uint64_t expired[READ_DROP_MAX];
    size_t n_exp = 0;
    for (size_t i = 0; r->kind == CW_STORE_REQ_READ && i < keep; i++)
        if (r->entries[i].status == CW_EXPIRED) {
            if (n_exp == READ_DROP_MAX) {
                rs_drop_expired(b->t, q->user, expired, n_exp);
                n_exp = 0;
            }
            expired[n_exp++] = r->entries[i].seq;
            w->gone++;
        }
    if (n_exp)
        rs_drop_expired(b->t, q->user, expired, n_exp);
    uint64_t held = w->last > w->acked ? w->last - w->acked : 0;
    r->pending = held > w->gone ? held - w->gone : 0;
}

static void finish_ack(rs_req_t *q)
{
    cw_store_reply_t *r = &q->rep;
    work_t *w = W(q);
    if (r->status != CW_OK || !w->n_rc)
        return;
    size_t n = 0;
    for (size_t i = 0; i < w->n_rc; i++)
        n += w->rc[i].status == CW_ACCEPTED && !w->rc[i].dup;
    if (!n)
        return;
    r->entries = calloc(n, sizeof *r->entries);
    if (!r->entries)
        return;
    uint64_t now = rs_now_us();
    for (size_t i = 0; i < w->n_rc; i++) {
        receipt_t *x = &w->rc[i];
        if (x->status != CW_ACCEPTED || x->dup)
            continue;
        cw_store_entry_t *e = &r->entries[r->n_entries++];
        *e = x->e;
        memset(&x->e, 0, sizeof x->e);
        e->expires_us = e->seq;
        e->seq = x->seq;
        e->timestamp_us = now;
    }
}

static void finish_who(rs_req_t *q)
{
    cw_store_reply_t *r = &q->rep;
    work_t *w = W(q);
    if (r->status != CW_OK)
        return;
    r->users = w->wu;
    r->n_users = w->n_names;
    for (size_t i = 0; i < w->n_names; i++) {
        r->users[i].name = w->names[i];
        w->names[i] = NULL;
    }
    w->wu = NULL;
    if (!r->n_users) {
        free(r->users);
        r->users = NULL;
    }
}

/* Everything is in: replies in order, the gate, the DONE event and the
 * publications (invariant 2). */
static int batch_complete(batch_t *b)
{
    rs_t *t = b->t;
    counters_t *c = &t->be->c;
    apply_failures(b);
    size_t appended = 0, entries = 0, dups = 0, new_users = 0;
    uint64_t acked = 0;
    int failed = 0;
    for (size_t i = 0; i < b->n; i++) {
        rs_req_t *q = b->reqs[i];
        if (!q->work)
            continue;
        fill_status(q);
        cw_store_reply_t *r = &q->rep;
        work_t *w = W(q);
        switch (r->kind) {
        case CW_STORE_REQ_APPEND:
            if (r->duplicate) {
                dups++;
            } else if (r->status == CW_OK) {
                appended++;
                for (size_t k = 0; k < q->msg.n_rcpts; k++)
                    if (q->msg.rcpts[k].status == CW_ACCEPTED && !w->rdup[k]) {
                        size_t j = 0;
                        while (j < k && strcmp(q->msg.rcpts[j].name, q->msg.rcpts[k].name) != 0)
                            j++;
                        if (j == k) {
                            entries++;
                            rs_gate_own_entry(t->gate, q->msg.rcpts[k].name, q->msg.rcpts[k].seq,
                                              w->payload, w->payload_len, b->number);
                        }
                    }
            }
            failed |= r->status == CW_STORE_ERROR;
            break;
        case CW_STORE_REQ_ACK:
            if (r->status == CW_OK)
                acked += w->acked_now;
            for (size_t k = 0; k < w->n_rc; k++)
                if (w->rc[k].status == CW_ACCEPTED && !w->rc[k].dup) {
                    entries++;
                    rs_gate_own_entry(t->gate, w->rc[k].e.sender, w->rc[k].seq, w->rc[k].payload,
                                      w->rc[k].payload_len, b->number);
                }
            finish_ack(q);
            break;
        case CW_STORE_REQ_READ:
        case CW_STORE_REQ_HISTORY:
            finish_read(b, q);
            break;
        case CW_STORE_REQ_WHO_PAGE:
            finish_who(q);
            break;
        case CW_STORE_REQ_CLAIM_SESSION:
            if (r->status == CW_OK && w->claimed) {
                rs_gate_claim(t->gate, q->user);
                char msg[300];
                int l = snprintf(msg, sizeof msg, "1 %s %s", t->b, q->user);
                publish(t, "cw:presence", msg, (size_t) l);
            } else if (r->status == CW_OK) {
                r->status = CW_STORE_ERROR;
            }
            break;
        case CW_STORE_REQ_RELEASE_SESSION:
            if (r->status == CW_OK)
                rs_gate_release(t->gate, q->user);
            if (r->status == CW_OK && w->claimed) {
                char msg[300];
                int l = snprintf(msg, sizeof msg, "0 %s %s", t->b, q->user);
                publish(t, "cw:presence", msg, (size_t) l);
            }
            break;
        case CW_STORE_REQ_ADD_USER:
            if (r->status == CW_OK && r->created) {
                new_users++;
                char msg[300];
                int l = snprintf(msg, sizeof msg, "U %s %llu %s", t->b,
                                 (unsigned long long) rs_now_us(), q->user);
                publish(t, "cw:ev", msg, (size_t) l);
            }
            break;
        default:
            break;
        }
        failed |= r->status == CW_STORE_ERROR;
        if (r->status == CW_STORE_ERROR && r->kind == CW_STORE_REQ_APPEND && W(q)->have_mid) {
            /* the outcome record must not answer a retry for what failed */
            char k[1200];
            outcome_key(k, sizeof k, q->msg.sender, q->msg.message_id);
            const char *argv[] = {"DEL", k};
            cmd_key(t, k, 2, argv, NULL, ignore_cb, NULL);
        }
    }
    int clean = !b->dirty && !failed;
    if (b->wrote) {
        observe_commit(c, (int64_t) (rs_now_us() - (uint64_t) b->start_us));
        atomic_fetch_add_explicit(&c->commits, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&c->groups, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->appended, appended, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->entries, entries, memory_order_relaxed);
    /* pending and users: the counts at open, kept current with what this
     * broker appends, acknowledges and creates, and NEW_USER (rs_emit) */
    uint64_t pend = atomic_load_explicit(&c->pending, memory_order_relaxed) + entries;
    atomic_store_explicit(&c->pending, pend > acked ? pend - acked : 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->users, new_users, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->duplicates, dups, memory_order_relaxed);
    if (failed || b->dirty)
        atomic_fetch_add_explicit(&c->failed_groups, failed ? 1 : 0, memory_order_relaxed);
    if (b->n > atomic_load_explicit(&c->max_group, memory_order_relaxed))
        atomic_store_explicit(&c->max_group, b->n, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->requests, b->n, memory_order_relaxed);

    int rc = 0;
    rs_req_t *flush = NULL;
    for (size_t i = 0; i < b->n; i++) {
        rs_req_t *q = b->reqs[i];
        b->reqs[i] = NULL;
        work_free(q);
        if (q->rep.kind == REQ_FLUSH && !flush) {
            flush = q;
            continue;
        }
        if (rc == 0 && send_obj(t->pipe, q, 0) != 0) {
            CW_ERROR("redis store: cannot send reply: %s", zmq_strerror(errno));
            rc = -1;
        }
        if (rc != 0)
            rs_req_destroy(&q->rep);
    }
    t->batches = b->number;
    rs_gate_own_done(t->gate, b->number, clean);
    if (b->wrote) {
        char msg[300];
        int l = snprintf(msg, sizeof msg, "%s %s %llu %s", t->b, t->inc,
                         (unsigned long long) b->number, clean ? "clean" : "dirty");
        publish(t, "cw:done", msg, (size_t) l);
    }
    char *unused;
    rs_req_t *done = rc == 0 ? rs_req_new(CW_STORE_EV_DONE, 0, 0, 0, &unused) : NULL;
    if (done) {
        done->rep.status = CW_OK;
        done->rep.batch = b->number;
        if (send_obj(t->pipe, done, 0) != 0) {
            rs_req_destroy(&done->rep);
            rc = -1;
        }
    }
    /* The flush is the close's (drain): what comes after it is not read,
     * so events raised from now on are dropped where they are made. */
    if (flush)
        t->quiet = 1;
    if (flush && (rc != 0 || send_obj(t->pipe, flush, 0) != 0)) {
        rs_req_destroy(&flush->rep);
        rc = -1;
    }
    return rc;
}

/* Moves the batch on after replies came in. 0, or -1 (pipe broke). */
static int batch_progress(rs_t *t)
{
    batch_t *b = t->cur;
    while (b && b->outstanding == 0) {
        if (b->phase < N_PHASES) {
            b->phase++;
            batch_phase(b);
            continue;
        }
        if (b->phase == N_PHASES) {
            b->phase++;
            if (t->cfg.wait_replicas == 0)
                for (size_t i = 0; i < b->n_ops; i++)
                    b->ops[i]->confirmed = b->ops[i]->answered && !b->ops[i]->failed;
            else
                send_waits(b);
            continue;
        }
        /* The WAITs are in: anything unconfirmed is re-run while time is
         * left (invariant 1). */
        int left = 0;
        for (size_t i = 0; i < b->n_ops; i++) {
            op_t *x = b->ops[i];
            left += x->kind != OP_WAIT && x->write && !x->confirmed &&
                    (!x->failed || x->failed == CW_STORE_ERROR);
        }
        if (left && t->cfg.wait_replicas && rs_now_ms() < b->deadline_ms) {
            b->dirty = 1;
            if (rerun(b) > 0) {
                b->phase = N_PHASES; /* then WAIT again */
                continue;
            }
        }
        int rc = batch_complete(b);
        batch_free(&t->cur);
        return rc;
    }
    return 0;
}

static void batch_start(rs_t *t, size_t n)
{
    batch_t *b = calloc(1, sizeof *b);
    rs_req_t **reqs = calloc(n, sizeof *reqs);
    if (!b || !reqs) {
        free(b);
        free(reqs);
        /* out of memory: answer every request STORE_ERROR */
        for (size_t i = 0; i < n; i++) {
            t->reqs[i]->rep.status = CW_STORE_ERROR;
            if (send_obj(t->pipe, t->reqs[i], 0) != 0)
                rs_req_destroy(&t->reqs[i]->rep);
        }
        return;
    }
    memcpy(reqs, t->reqs, n * sizeof *reqs);
    b->t = t;
    b->reqs = reqs;
    b->n = n;
    b->number = t->batches + 1;
    b->start_us = (int64_t) rs_now_us();
    b->deadline_ms = rs_now_ms() + t->cfg.retry_ms;
    b->snap = rs_gate_snap(t->gate);
    t->cur = b;
    for (size_t i = 0; i < n; i++)
        if (req_prepare(b, reqs[i]) != 0) {
            work_free(reqs[i]);
            reqs[i]->rep.status = CW_ERR_NOMEM;
        }
    b->phase = 0;
}

/* ------------------------------------------------------------------------ */
/* The lease                                                                 */

/* A renewal in flight: the incarnation it wrote. */
typedef struct {
    rs_t *t;
    char inc[40];
} lease_ctx_t;

static void lease_confirmed(rs_t *t, const char *inc)
{
    if (strcmp(inc, t->lease_inc) != 0)
        return; /* a renewal of an incarnation given up since */
    t->lease_ok_ms = rs_now_ms();
    t->lease_lost = 0;
    snprintf(t->lease_prev, sizeof t->lease_prev, "%s", inc);
}

/* The WAIT after a "reinc": the new incarnation counts as the lease's only
 * once a replica has it, so that no failover of the lease's primary can
 * bring back the lapsed one under entries of the new one. */
static void lease_wait_cb(void *arg, int status, redisReply *r)
{
    lease_ctx_t *c = arg;
    rs_t *t = c->t;
    long long v = -1;
    if (status == CW_OK && r && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    if (v >= (long long) t->cfg.wait_replicas)
        lease_confirmed(t, c->inc);
    else
        CW_WARN("redis store: the lease naming incarnation %s saw %lld replicas (%u wanted): "
                "renewed again",
                c->inc, v, t->cfg.wait_replicas);
    free(c);
}

static void lease_cb(void *arg, int status, redisReply *r)
{
    lease_ctx_t *c = arg;
    rs_t *t = c->t;
    if (status != CW_OK || !r || r->type != REDIS_REPLY_INTEGER) {
        free(c);
        return;
    }
    if (r->integer == 1 && strcmp(c->inc, t->lease_prev) != 0 && t->cfg.wait_replicas) {
        /* A new incarnation's first renewal: confirmed after its WAIT. */
        char k[200], reps[16];
        rs_key(k, sizeof k, "cw:b:", t->b, NULL);
        snprintf(reps, sizeof reps, "%u", t->cfg.wait_replicas);
        const char *argv[] = {"WAIT", reps, "1000"};
        if (cmd_key(t, k, 3, argv, NULL, lease_wait_cb, c) != CW_OK)
            free(c);
        return;
    }
    if (r->integer == 1) {
        lease_confirmed(t, c->inc);
    } else if (r->integer == 2) {
        /* Gone: it lapsed (or a failover lost it), so other brokers may
         * have taken this incarnation for dead. fence_check fences now. */
        if (!t->fenced && strcmp(c->inc, t->lease_inc) == 0)
            t->lease_gone = 1;
    } else if (!t->lease_lost) {
        /* Another incarnation's: a broker started since with our id took
         * it. fence_check fences now, for good (no new incarnation: the
         * two would take the lease from each other in turn). */
        t->lease_lost = 1;
        CW_ERROR("redis store: the lease of broker id %s is another incarnation's: a broker "
                 "started since with this --broker-id; this one stops serving (each broker "
                 "needs its own id)",
                 t->b);
    }
    free(c);
}

/* SC_LEASE in `mode` ("take", "renew", "reinc", "drop"; see
 * store_redis_lua.c) for the incarnation lease_inc (previous: lease_prev). */
static void lease_script(rs_t *t, const char *mode, cw_rc_cb_t *cb)
{
    char k[200], done[24], px[24];
    rs_key(k, sizeof k, "cw:b:", t->b, NULL);
    snprintf(done, sizeof done, "%llu", (unsigned long long) t->batches);
    snprintf(px, sizeof px, "%llu", (unsigned long long) t->cfg.lease_ms * 3ull);
    const char *argv[] = {"1", k, t->lease_inc, done, px, mode, t->lease_prev};
    lease_ctx_t *c = NULL;
    if (cb == lease_cb) {
        c = malloc(sizeof *c);
        if (!c) {
            CW_DEBUG("redis store: lease %s not sent: out of memory", mode);
            return;
        }
        c->t = t;
        snprintf(c->inc, sizeof c->inc, "%s", t->lease_inc);
    }
    if (rs_script(t, SC_LEASE, 1, 7, argv, NULL, cb, c ? (void *) c : (void *) t) != CW_OK) {
        free(c);
        CW_DEBUG("redis store: lease %s not sent", mode);
    }
}

/* The incarnation in a lease record read at open ("" if none). */
typedef struct {
    char inc[40];
} prev_inc_t;

static void prev_inc_cb(void *arg, int status, redisReply *r)
{
    prev_inc_t *p = arg;
    if (status == CW_OK && r && r->type == REDIS_REPLY_STRING)
        snprintf(p->inc, sizeof p->inc, "%.*s", (int) r->len, r->str);
}

/* Renews the lease: the first time (at open) it takes it whoever held it
 * (a previous run under our id); later only while it is ours. */
static void lease_renew(rs_t *t)
{
    const char *mode = !t->lease_ok_ms                            ? "take"
                       : strcmp(t->lease_inc, t->lease_prev) != 0 ? "reinc"
                                                                  : "renew";
    lease_script(t, mode, lease_cb);
}

/* A new incarnation for the lease (fence_check, at a fence). */
static void new_incarnation(rs_t *t)
{
    zuuid_t *uu = zuuid_new();
    if (uu)
        snprintf(t->lease_inc, sizeof t->lease_inc, "%s", zuuid_str(uu));
    else /* still distinct from every earlier one of this process */
        snprintf(t->lease_inc, sizeof t->lease_inc, "%llx-%llu",
                 (unsigned long long) rs_now_us(), (unsigned long long) t->batches);
    zuuid_destroy(&uu);
}

/* Between batches: once the lease names the new incarnation (confirmed),
 * the batches carry it. Before, they carry the lapsed one, which the other
 * brokers treat as dead (their gates show its entries without waiting). */
static void adopt_incarnation(rs_t *t)
{
    if (t->cur || strcmp(t->inc, t->lease_prev) == 0)
        return;
    char old[sizeof t->inc];
    snprintf(old, sizeof old, "%s", t->inc);
    snprintf(t->inc, sizeof t->inc, "%s", t->lease_prev);
    if (rs_gate_reincarnate(t->gate) != 0) {
        snprintf(t->inc, sizeof t->inc, "%s", old); /* out of memory: next turn */
        return;
    }
    CW_INFO("redis store: broker %s serves as a new incarnation %s (was %s) from batch %llu",
            t->b, t->inc, old, (unsigned long long) t->batches + 1);
}

/* Fencing (SCALEOUT.md §5): a lease not renewed within 2 H, or found
 * gone, raises FENCED (other brokers see it expire at 3 H and may take
 * this broker's users, and their gates treat the incarnation as dead); a
 * lease found another incarnation's (a second broker with our id) raises
 * it at once and for good. The lease then goes to a new incarnation
 * ("reinc"); once a renewal of that
 * one is confirmed (WAITed), UNFENCED is raised, and the batches carry it
 * from the next one on (adopt_incarnation). */
static void fence_check(rs_t *t, int64_t now)
{
    int64_t limit = 2 * (int64_t) t->cfg.lease_ms;
    int ev = 0;
    if (!t->fenced && (now - t->lease_ok_ms > limit || t->lease_gone || t->lease_lost)) {
        t->fenced = 1;
        t->fenced_ms = now;
        atomic_fetch_add_explicit(&t->be->c.fences, 1, memory_order_relaxed);
        if (t->lease_lost)
            CW_WARN("redis store: broker %s fenced for good: its lease is another "
                    "incarnation's",
                    t->b);
        else if (t->lease_gone)
            CW_WARN("redis store: lease of broker %s is gone from the store (it lapsed): fenced, "
                    "not serving until it is renewed",
                    t->b);
        else
            CW_WARN("redis store: lease of broker %s not renewed for %lld ms (limit %lld): "
                    "fenced, not serving until it is renewed",
                    t->b, (long long) (now - t->lease_ok_ms), (long long) limit);
        t->lease_gone = 0;
        if (!t->lease_lost) {
            new_incarnation(t);
            CW_INFO("redis store: broker %s renews its lease as a new incarnation %s (was %s)",
                    t->b, t->lease_inc, t->inc);
            t->lease_due_ms = now; /* at once */
        }
        ev = CW_STORE_EV_FENCED;
    } else if (t->fenced && strcmp(t->lease_inc, t->lease_prev) == 0 &&
               t->lease_ok_ms >= t->fenced_ms) {
        t->fenced = 0;
        CW_INFO("redis store: lease of broker %s renewed (incarnation %s): serving again", t->b,
                t->lease_inc);
        ev = CW_STORE_EV_UNFENCED;
    }
    char *unused;
    rs_req_t *q = ev ? rs_req_new(ev, 0, 0, 0, &unused) : NULL;
    if (q) {
        q->rep.status = CW_OK;
        rs_emit(t, q);
    }
}

/* ------------------------------------------------------------------------ */
/* The thread                                                                */

static void on_sub(void *arg, int event, const char *ch, size_t ch_len, int sharded,
                   const char *payload, size_t len)
{
    rs_t *t = arg;
    rs_gate_on_sub(t->gate, event, ch, ch_len, sharded, payload, len);
}

#define MAX_ITEMS 260

static void task(zsock_t *pipe, void *arg)
{
    rs_t *t = arg;
    backend_t *be = t->be;
    t->pipe = zsock_resolve(pipe);
    zsock_set_sndhwm(pipe, (int) be->max_queued);
    zsock_set_rcvhwm(pipe, (int) be->max_queued);
    zsock_signal(pipe, 0);
    int term = 0, broken = 0;
    zmq_pollitem_t items[MAX_ITEMS];
    while (!broken && (!term || t->cur)) {
        int take = !term && !t->cur;
        items[0] = (zmq_pollitem_t){t->pipe, 0, take ? ZMQ_POLLIN : 0, 0};
        size_t n = 1 + cw_rc_pollitems(t->rc, items + 1, MAX_ITEMS - 1);
        int64_t now = rs_now_ms();
        long tmo = cw_rc_timeout_ms(t->rc);
        long lease = t->lease_due_ms - now;
        if (lease < 0)
            lease = 0;
        if (tmo < 0 || tmo > lease)
            tmo = lease;
        if (tmo > 100)
            tmo = 100; /* the gate's timers */
        if (zmq_poll(items, (int) n, tmo) < 0 && errno != EINTR)
            break;
        if (take && (items[0].revents & ZMQ_POLLIN)) {
            size_t k = 0;
            while (k < MAX_GROUP) {
                rs_req_t *q = NULL;
                int got = recv_obj(t->pipe, &q, ZMQ_DONTWAIT);
                if (got < 0)
                    break;
                if (got == 0) {
                    term = 1;
                    break;
                }
                if (got == 1)
                    t->reqs[k++] = q;
            }
            if (k)
                batch_start(t, k);
        }
        cw_rc_process(t->rc, items + 1, n - 1);
        if (batch_progress(t) != 0)
            broken = 1;
        now = rs_now_ms();
        if (now >= t->lease_due_ms) {
            lease_renew(t);
            t->lease_due_ms = now + t->cfg.lease_ms;
        }
        fence_check(t, now);
        adopt_incarnation(t);
        rs_gate_tick(t->gate, now);
    }
    atomic_store(&be->exited, 1);
    batch_free(&t->cur);
    rs_req_t *q = NULL;
    int got;
    while ((got = recv_obj(t->pipe, &q, ZMQ_DONTWAIT)) >= 0)
        if (got == 1)
            rs_req_destroy(&q->rep);
    /* Our claims and lease end with us (shared/SCALEOUT.md §5: on SIGTERM a broker
     * drops its lease); bounded by the command deadline. The "closed" DONE
     * tells the other brokers at once that every batch of ours is complete
     * and none follows, so that none waits for the lease to go. */
    if (!broken) {
        char msg[300];
        int l = snprintf(msg, sizeof msg, "%s %s %llu closed", t->b, t->inc,
                         (unsigned long long) t->batches);
        publish(t, "cw:done", msg, (size_t) l);
    }
    lease_script(t, "drop", ignore_cb); /* only if still ours */
    int64_t until = rs_now_ms() + 2000;
    while (cw_rc_pending(t->rc) && rs_now_ms() < until) {
        size_t n = cw_rc_pollitems(t->rc, items, MAX_ITEMS);
        zmq_poll(items, (int) n, 50);
        cw_rc_process(t->rc, items, n);
    }
}

/* ------------------------------------------------------------------------ */
/* Open: connect, load the scripts, the user log and the clocks              */

/* Runs the cluster client until nothing is pending or the deadline. */
static int run_until_idle(rs_t *t, int64_t deadline)
{
    zmq_pollitem_t items[MAX_ITEMS];
    while (cw_rc_pending(t->rc) && rs_now_ms() < deadline) {
        size_t n = cw_rc_pollitems(t->rc, items, MAX_ITEMS);
        long tmo = cw_rc_timeout_ms(t->rc);
        if (tmo < 0 || tmo > 50)
            tmo = 50;
        zmq_poll(items, (int) n, tmo);
        cw_rc_process(t->rc, items, n);
    }
    return cw_rc_pending(t->rc) ? -1 : 0;
}

typedef struct {
    rs_t *t;
    char sha[41];
    int ok;
} load_t;

static void script_cb(void *arg, int status, redisReply *r)
{
    load_t *l = arg;
    if (status == CW_OK && r && r->type == REDIS_REPLY_STRING && r->len == 40) {
        memcpy(l->sha, r->str, 40);
        l->sha[40] = 0;
        l->ok = 1;
    }
}

typedef struct {
    cw_store_loaded_t *out;
    int failed;
} users_t;

static void users_cb(void *arg, int status, redisReply *r)
{
    users_t *u = arg;
    if (status != CW_OK || !r || r->type != REDIS_REPLY_ARRAY) {
        u->failed = 1;
        return;
    }
    cw_store_loaded_t *l = u->out;
    l->users = calloc(r->elements ? r->elements : 1, sizeof *l->users);
    if (!l->users) {
        u->failed = 1;
        return;
    }
    for (size_t i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING) {
            char *name = dup_str(r->element[i]->str, r->element[i]->len);
            if (!name) {
                u->failed = 1;
                return;
            }
            l->users[l->n_users++].name = name;
        }
}

typedef struct {
    cw_store_loaded_t *out;
    size_t i;
    int kind;            /* 0 user hash, 1 session, 2 clock, 3 lease */
    char *b, *inc;
    int *failed;
    rs_t *t;
} uload_t;

static void uload_cb(void *arg, int status, redisReply *r)
{
    uload_t *x = arg;
    cw_store_loaded_t *l = x->out;
    if (status != CW_OK || !r || r->type == REDIS_REPLY_ERROR) {
        *x->failed = 1;
        return;
    }
    cw_store_user_t *u = &l->users[x->i];
    if (x->kind == 0 && r->type == REDIS_REPLY_ARRAY && r->elements == 4) {
        user_counts(r, u);
    } else if (x->kind == 1 && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[0]->type == REDIS_REPLY_STRING &&
               r->element[1]->type == REDIS_REPLY_STRING) {
        x->b = dup_str(r->element[0]->str, r->element[0]->len);
        x->inc = dup_str(r->element[1]->str, r->element[1]->len);
    } else if (x->kind == 2 && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[0]->type == REDIS_REPLY_STRING &&
               r->element[1]->type == REDIS_REPLY_STRING) {
        cw_store_clock_t *c = &l->clocks[l->n_clocks];
        c->name = dup_str(u->name, strlen(u->name));
        c->own = strtoull(r->element[0]->str, NULL, 10);
        c->clock = malloc(r->element[1]->len ? r->element[1]->len : 1);
        if (!c->name || !c->clock) {
            free(c->name);
            free(c->clock);
            *x->failed = 1;
            return;
        }
        memcpy(c->clock, r->element[1]->str, r->element[1]->len);
        c->clock_len = r->element[1]->len;
        l->n_clocks++;
    } else if (x->kind == 3) {
        u->online = r->type == REDIS_REPLY_STRING && x->inc && strcmp(r->str, x->inc) == 0;
    }
}

static int load_all(rs_t *t, cw_store_loaded_t *l, char *err, size_t errlen)
{
    int64_t deadline = rs_now_ms() + (t->cfg.retry_ms ? t->cfg.retry_ms : 10000);
    load_t loads[N_SCRIPTS];
    /* On every primary (one slot of each), and on every connection made
     * later (cw_rc_preload): a script missing on a node is answered
     * NOSCRIPT and sent again as EVAL (redis_cluster.h invariant 6). */
    uint16_t first[64];
    int nodes[64], n_nodes = 0;
    for (uint32_t slot = 0; slot < 16384; slot++) {
        int node = cw_rc_slot_node(t->rc, (uint16_t) slot);
        int j = 0;
        while (j < n_nodes && nodes[j] != node)
            j++;
        if (j == n_nodes && n_nodes < 64) {
            nodes[n_nodes] = node;
            first[n_nodes++] = (uint16_t) slot;
        }
    }
    for (int i = 0; i < N_SCRIPTS; i++) {
        loads[i] = (load_t){t, "", 0};
        const char *argv[] = {"SCRIPT", "LOAD", rs_scripts[i]};
        for (int j = 0; j < n_nodes; j++)
            cw_rc_command(t->rc, first[j], 3, argv, NULL, script_cb, &loads[i]);
    }
    users_t u = {l, 0};
    const char *argv[] = {"ZRANGE", "cw:users", "0", "-1"};
    cmd_key(t, "cw:users", 4, argv, NULL, users_cb, &u);
    if (run_until_idle(t, deadline) != 0 || u.failed) {
        snprintf(err, errlen, "cannot read the user log (cw:users) within %u ms",
                 t->cfg.retry_ms);
        return CW_STORE_ERROR;
    }
    for (int i = 0; i < N_SCRIPTS; i++) {
        if (!loads[i].ok) {
            snprintf(err, errlen, "SCRIPT LOAD failed");
            return CW_STORE_ERROR;
        }
        memcpy(t->sha[i], loads[i].sha, 41);
        if (cw_rc_preload(t->rc, rs_scripts[i]) != CW_OK) {
            snprintf(err, errlen, "too many scripts to preload");
            return CW_STORE_ERROR;
        }
    }
    size_t n = l->n_users;
    l->clocks = calloc(n ? n : 1, sizeof *l->clocks);
    uload_t *x = calloc(n ? 3 * n : 1, sizeof *x);
    int failed = 0;
    if (!l->clocks || !x) {
        free(x);
        snprintf(err, errlen, "out of memory loading %zu users", n);
        return CW_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        char k[200];
        const char *name = l->users[i].name;
        x[3 * i] = (uload_t){l, i, 0, NULL, NULL, &failed, t};
        rs_key(k, sizeof k, "cw:u:", name, NULL);
        const char *a0[] = {"HMGET", k, "created_us", "acked", "last", "gone"};
        cmd_key(t, k, 6, a0, NULL, uload_cb, &x[3 * i]);
        x[3 * i + 1] = (uload_t){l, i, 1, NULL, NULL, &failed, t};
        rs_key(k, sizeof k, "cw:s:", name, NULL);
        const char *a1[] = {"HMGET", k, "b", "inc"};
        cmd_key(t, k, 4, a1, NULL, uload_cb, &x[3 * i + 1]);
        x[3 * i + 2] = (uload_t){l, i, 2, NULL, NULL, &failed, t};
        rs_key(k, sizeof k, "cw:c:", name, NULL);
        const char *a2[] = {"HMGET", k, "own", "clock"};
        cmd_key(t, k, 4, a2, NULL, uload_cb, &x[3 * i + 2]);
    }
    int rc = run_until_idle(t, deadline);
    /* online: the owner's lease is live */
    uload_t *y = calloc(n ? n : 1, sizeof *y);
    for (size_t i = 0; rc == 0 && y && i < n; i++) {
        uload_t *s = &x[3 * i + 1];
        if (!s->b)
            continue;
        y[i] = (uload_t){l, i, 3, NULL, s->inc, &failed, t};
        char k[200];
        rs_key(k, sizeof k, "cw:b:", s->b, NULL);
        const char *a[] = {"HGET", k, "inc"};
        cmd_key(t, k, 3, a, NULL, uload_cb, &y[i]);
    }
    if (rc == 0)
        rc = run_until_idle(t, deadline);
    for (size_t i = 0; i < n; i++) {
        free(x[3 * i + 1].b);
        free(x[3 * i + 1].inc);
    }
    free(x);
    free(y);
    if (rc != 0 || failed) {
        snprintf(err, errlen, "cannot read the %zu users' records within %u ms", n,
                 t->cfg.retry_ms);
        return CW_STORE_ERROR;
    }
    uint64_t pending = 0;
    for (size_t i = 0; i < n; i++)
        pending += l->users[i].pending;
    atomic_store(&t->be->c.pending, pending);
    atomic_store(&t->be->c.users, n);
    return CW_OK;
}

static void rs_free(rs_t **p)
{
    rs_t *t = *p;
    if (!t)
        return;
    cw_rc_destroy(&t->rc);         /* callbacks may use the gate */
    rs_gate_destroy(&t->gate);
    free(t->reqs);
    for (size_t i = 0; i < t->n_drops; i++)
        free(t->drops[i].user);
    free(t->drops);
    free(t);
    *p = NULL;
}

static int redis_open(const char *where, const cw_store_config_t *cfg, cw_store_backend_t **out,
                      cw_store_loaded_t *loaded, char *err, size_t errlen)
{
    static _Atomic unsigned opens;
    *out = NULL;
    memset(loaded, 0, sizeof *loaded);
    size_t n_nodes = 0;
    if (cw_store_redis_url_check(where, &n_nodes, err, errlen) != 0)
        return CW_ERR_INVALID;
    backend_t *be = calloc(1, sizeof *be);
    rs_t *t = calloc(1, sizeof *t);
    if (!be || !t) {
        free(be);
        free(t);
        snprintf(err, errlen, "out of memory");
        return CW_ERR_NOMEM;
    }
    be->max_queued = cfg->max_queued ? cfg->max_queued : DEFAULT_MAX_QUEUED;
    if (be->max_queued > INT32_MAX)
        be->max_queued = INT32_MAX;
    t->be = be;
    t->cfg = *cfg;
    if (!t->cfg.retry_ms)
        t->cfg.retry_ms = 10000;
    if (!t->cfg.lease_ms)
        t->cfg.lease_ms = 1000;
    char host[64] = "host";
    gethostname(host, sizeof host - 1);
    for (char *c = host; *c; c++)
        if (*c == ' ' || *c == '{' || *c == '}')
            *c = '_';
    unsigned n_open = ++opens;
    if (cfg->broker_id && *cfg->broker_id) /* --broker-id: the same across restarts */
        snprintf(t->b, sizeof t->b, "%s", cfg->broker_id);
    else
        snprintf(t->b, sizeof t->b, "%s-%ld-%u", host, (long) getpid(), n_open);
    zuuid_t *uu = zuuid_new();
    snprintf(t->inc, sizeof t->inc, "%s", uu ? zuuid_str(uu) : "0");
    snprintf(t->lease_inc, sizeof t->lease_inc, "%s", t->inc);
    snprintf(t->lease_prev, sizeof t->lease_prev, "%s", t->inc);
    zuuid_destroy(&uu);
    t->reqs = calloc(MAX_GROUP, sizeof *t->reqs);
    cw_rc_opts_t opts = {.connect_ms = 2000, .retry_ms = (int) t->cfg.retry_ms};
    char rcerr[256] = "";
    t->rc = t->reqs ? cw_rc_new(where + strlen("redis://"), &opts, rcerr, sizeof rcerr) : NULL;
    if (!t->rc) {
        snprintf(err, errlen, "--store %s: cannot reach the cluster: %s", where,
                 t->reqs ? rcerr : "out of memory");
        rs_free(&t);
        free(be);
        return CW_STORE_ERROR;
    }
    int rc = load_all(t, loaded, err, errlen);
    t->gate = rc == CW_OK ? rs_gate_new(t) : NULL;
    if (rc == CW_OK && !t->gate) {
        snprintf(err, errlen, "out of memory");
        rc = CW_ERR_NOMEM;
    }
    if (rc != CW_OK) {
        cw_store_loaded_free(loaded);
        rs_free(&t);
        free(be);
        return rc;
    }
    cw_rc_set_sub_cb(t->rc, on_sub, t);
    if (cfg->broker_id && *cfg->broker_id) {
        /* A live lease under our id is a previous run's (a crash, a quick
         * restart): ours replaces it, so what that run held counts as
         * expired at once. Or another broker runs with our id: say so. */
        char k[200];
        rs_key(k, sizeof k, "cw:b:", t->b, NULL);
        const char *argv[] = {"HGET", k, "inc"};
        prev_inc_t prev = {""};
        cmd_key(t, k, 3, argv, NULL, prev_inc_cb, &prev);
        run_until_idle(t, rs_now_ms() + t->cfg.retry_ms);
        if (prev.inc[0])
            CW_WARN("redis store: broker id %s had a live lease (incarnation %s): taking it "
                    "over; its sessions' claims and unfinished batches end now (if a broker "
                    "still runs with this id, two brokers share one: give each its own "
                    "--broker-id)",
                    t->b, prev.inc);
    }
    lease_renew(t);
    t->lease_due_ms = rs_now_ms() + t->cfg.lease_ms;
    if (run_until_idle(t, rs_now_ms() + t->cfg.retry_ms) != 0 || !t->lease_ok_ms) {
        snprintf(err, errlen, "--store %s: cannot take this broker's lease", where);
        cw_store_loaded_free(loaded);
        rs_free(&t);
        free(be);
        return CW_STORE_ERROR;
    }
    be->t = t;
    be->actor = cw_store_thread_start(task, t);
    if (!be->actor) {
        cw_store_loaded_free(loaded);
        rs_free(&t);
        free(be);
        snprintf(err, errlen, "cannot start the store thread");
        return CW_INTERNAL;
    }
    zsock_t *sock = cw_store_thread_sock(be->actor);
    zsock_set_sndhwm(sock, (int) be->max_queued);
    zsock_set_rcvhwm(sock, (int) be->max_queued);
    be->handle = zsock_resolve(sock);
    CW_INFO("redis store: %s as broker %s (incarnation %s), %zu users", where, t->b, t->inc,
            loaded->n_users);
    *out = (cw_store_backend_t *) (void *) be;
    return CW_OK;
}

/* ------------------------------------------------------------------------ */
/* The router's side                                                         */

#define BE(s) ((backend_t *) (void *) (s))

static void drain(backend_t *a)
{
    char *unused;
    rs_req_t *flush = rs_req_new(REQ_FLUSH, 0, 0, 0, &unused);
    if (!flush)
        CW_ERROR("redis store: out of memory at shutdown; late replies may leak");
    bool sent = false;
    while (flush && !atomic_load(&a->exited)) {
        zmq_pollitem_t item = {a->handle, 0, (short) (ZMQ_POLLIN | (sent ? 0 : ZMQ_POLLOUT)), 0};
        if (zmq_poll(&item, 1, 100) < 0 && errno != EINTR)
            break;
        if (!sent && (item.revents & ZMQ_POLLOUT) &&
            send_obj(a->handle, flush, ZMQ_DONTWAIT) == 0)
            sent = true;
        rs_req_t *q = NULL;
        int got;
        while ((got = recv_obj(a->handle, &q, ZMQ_DONTWAIT)) >= 0) {
            if (got != 1)
                continue;
            bool last = q == flush;
            rs_req_destroy(&q->rep);
            if (last)
                return;
        }
    }
    if (flush && !sent)
        rs_req_destroy(&flush->rep);
    rs_req_t *q = NULL;
    int got;
    while ((got = recv_obj(a->handle, &q, ZMQ_DONTWAIT)) >= 0)
        if (got == 1)
            rs_req_destroy(&q->rep);
}

static void redis_close(cw_store_backend_t **p)
{
    if (!p || !*p)
        return;
    backend_t *a = BE(*p);
    drain(a);
    cw_store_thread_stop(&a->actor);   /* "$TERM", then joins the thread */
    /* events sent after the drain */
    rs_free(&a->t);
    free(a);
    *p = NULL;
}

static void *redis_poll_handle(cw_store_backend_t *s)
{
    return s ? BE(s)->handle : NULL;
}

static cw_store_reply_t *redis_recv(cw_store_backend_t *s, int timeout_ms)
{
    backend_t *a = BE(s);
    if (!a)
        return NULL;
    for (;;) {
        if (timeout_ms != 0) {
            zmq_pollitem_t item = {a->handle, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&item, 1, timeout_ms) <= 0)
                return NULL;
        }
        rs_req_t *q = NULL;
        int got = recv_obj(a->handle, &q, ZMQ_DONTWAIT);
        if (got < 0)
            return NULL;
        if (got == 1)
            return &q->rep;
        timeout_ms = 0;
    }
}

static int submit(backend_t *a, rs_req_t *q)
{
    if (send_obj(a->handle, q, ZMQ_DONTWAIT) == 0)
        return CW_OK;
    int e = errno;
    rs_req_destroy(&q->rep);
    return e == EAGAIN ? CW_FLOODED : CW_SHUTTING_DOWN;
}

static int redis_append(cw_store_backend_t *s, uint64_t token, const cw_store_msg_t *m)
{
    backend_t *a = BE(s);
    int ask_only = m && m->n_rcpts == 0 && m->message_id && *m->message_id;
    if (!a || !m || !m->sender || (!ask_only && (!m->rcpts || m->n_rcpts == 0)) ||
        m->n_rcpts > UINT32_MAX || (!m->text && m->text_len) || m->text_len > MAX_ARG_LEN ||
        m->clock_len > MAX_ARG_LEN || (m->clock_len && !m->clock))
        return CW_ERR_INVALID;
    const char *mid = m->message_id ? m->message_id : "";
    size_t sender_len = strlen(m->sender), mid_len = strlen(mid);
    size_t strings = sender_len + 1 + mid_len + 1 + m->text_len + 1 + m->clock_len + 1;
    for (size_t i = 0; i < m->n_rcpts; i++) {
        if (!m->rcpts[i].name)
            return CW_ERR_INVALID;
        strings += strlen(m->rcpts[i].name) + 1;
    }
    char *at;
    rs_req_t *q = rs_req_new(CW_STORE_REQ_APPEND, token, m->n_rcpts, strings, &at);
    if (!q)
        return CW_ERR_NOMEM;
    cw_store_msg_t *qm = &q->msg;
    qm->sender = rs_put(&at, m->sender, sender_len);
    qm->message_id = rs_put(&at, mid, mid_len);
    qm->text = rs_put(&at, m->text, m->text_len);
    qm->text_len = m->text_len;
    const char *clock = rs_put(&at, m->clock, m->clock_len);
    qm->clock = m->clock_len ? (const uint8_t *) clock : NULL;
    qm->clock_len = m->clock_len;
    qm->timestamp_us = m->timestamp_us;
    qm->ttl_s = m->ttl_s;
    qm->broadcast = m->broadcast ? 1 : 0;
    qm->rcpts = q->rep.rcpts;
    qm->n_rcpts = m->n_rcpts;
    for (size_t i = 0; i < m->n_rcpts; i++)
        q->rep.rcpts[i].name = rs_put(&at, m->rcpts[i].name, strlen(m->rcpts[i].name));
    return submit(a, q);
}

static int user_request(backend_t *a, int kind, uint64_t token, const char *user, uint64_t arg,
                        uint32_t n, const void *blob, size_t blob_len)
{
    if (!a || !user || (!blob && blob_len) || blob_len > MAX_ARG_LEN)
        return CW_ERR_INVALID;
    size_t len = strlen(user);
    char *at;
    rs_req_t *q = rs_req_new(kind, token, 0, len + 1 + blob_len + 1, &at);
    if (!q)
        return CW_ERR_NOMEM;
    q->user = rs_put(&at, user, len);
    q->blob = (const uint8_t *) rs_put(&at, blob, blob_len);
    q->blob_len = blob_len;
    q->arg = arg;
    q->n = n;
    return submit(a, q);
}

static int redis_ack(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t up_to,
                     int receipts)
{
    return user_request(BE(s), CW_STORE_REQ_ACK, token, user, up_to, receipts ? 1 : 0, NULL, 0);
}

static int redis_read(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t from,
                      uint32_t max)
{
    return user_request(BE(s), CW_STORE_REQ_READ, token, user, from, max, NULL, 0);
}

static int redis_history(cw_store_backend_t *s, uint64_t token, const char *user, uint32_t n)
{
    return user_request(BE(s), CW_STORE_REQ_HISTORY, token, user, 0, n, NULL, 0);
}

static int redis_add_user(cw_store_backend_t *s, uint64_t token, const char *user)
{
    return user_request(BE(s), CW_STORE_REQ_ADD_USER, token, user, 0, 0, NULL, 0);
}

static int redis_save_clock(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t own,
                            const uint8_t *clock, size_t clock_len)
{
    return user_request(BE(s), CW_STORE_REQ_CLOCK, token, user, own, 0, clock, clock_len);
}

static int redis_claim(cw_store_backend_t *s, uint64_t token, const char *user,
                       const uint8_t *sess, size_t sess_len, int resume)
{
    return user_request(BE(s), CW_STORE_REQ_CLAIM_SESSION, token, user, resume ? 1 : 0, 0, sess,
                        sess_len);
}

static int redis_release(cw_store_backend_t *s, uint64_t token, const char *user)
{
    return user_request(BE(s), CW_STORE_REQ_RELEASE_SESSION, token, user, 0, 0, NULL, 0);
}

static int redis_live_send(cw_store_backend_t *s, uint64_t token, const char *const *users,
                           size_t n_users, const void *frame, size_t frame_len)
{
    backend_t *a = BE(s);
    if (!a || !users || n_users == 0 || n_users > UINT32_MAX || (!frame && frame_len) ||
        frame_len > MAX_ARG_LEN)
        return CW_ERR_INVALID;
    size_t strings = frame_len + 1;
    for (size_t i = 0; i < n_users; i++) {
        if (!users[i])
            return CW_ERR_INVALID;
        strings += strlen(users[i]) + 1;
    }
    char *at;
    rs_req_t *q = rs_req_new(CW_STORE_REQ_LIVE_SEND, token, n_users, strings, &at);
    if (!q)
        return CW_ERR_NOMEM;
    for (size_t i = 0; i < n_users; i++)
        q->rep.rcpts[i].name = rs_put(&at, users[i], strlen(users[i]));
    q->blob = (const uint8_t *) rs_put(&at, frame, frame_len);
    q->blob_len = frame_len;
    return submit(a, q);
}

static int redis_who_page(cw_store_backend_t *s, uint64_t token, const char *after, uint32_t max)
{
    return user_request(BE(s), CW_STORE_REQ_WHO_PAGE, token, after ? after : "", 0, max, NULL,
                        0);
}

static void redis_stats(cw_store_backend_t *s, cw_store_counters_t *out)
{
    memset(out, 0, sizeof *out);
    backend_t *a = BE(s);
    if (!a)
        return;
    counters_t *c = &a->c;
    out->requests = atomic_load_explicit(&c->requests, memory_order_relaxed);
    out->groups = atomic_load_explicit(&c->groups, memory_order_relaxed);
    out->commits = atomic_load_explicit(&c->commits, memory_order_relaxed);
    out->appended = atomic_load_explicit(&c->appended, memory_order_relaxed);
    out->entries = atomic_load_explicit(&c->entries, memory_order_relaxed);
    out->duplicates = atomic_load_explicit(&c->duplicates, memory_order_relaxed);
    out->failed_groups = atomic_load_explicit(&c->failed_groups, memory_order_relaxed);
    out->max_group = atomic_load_explicit(&c->max_group, memory_order_relaxed);
    out->pending = atomic_load_explicit(&c->pending, memory_order_relaxed);
    out->users = atomic_load_explicit(&c->users, memory_order_relaxed);
    out->fences = atomic_load_explicit(&c->fences, memory_order_relaxed);
    out->commit_count = atomic_load_explicit(&c->commit_count, memory_order_acquire);
    out->commit_sum_us = atomic_load_explicit(&c->commit_sum_us, memory_order_relaxed);
    for (size_t i = 0; i <= CW_COMMIT_BUCKETS; i++)
        out->commit_hist[i] = atomic_load_explicit(&c->commit_hist[i], memory_order_relaxed);
}

const cw_store_ops_t cw_store_redis_ops = {
    .name = "redis",
    .shared = 1,
    .open = redis_open,
    .close = redis_close,
    .poll_handle = redis_poll_handle,
    .recv = redis_recv,
    .append = redis_append,
    .ack = redis_ack,
    .read = redis_read,
    .history = redis_history,
    .add_user = redis_add_user,
    .save_clock = redis_save_clock,
    .claim_session = redis_claim,
    .release_session = redis_release,
    .live_send = redis_live_send,
    .who_page = redis_who_page,
    .stats = redis_stats,
};
