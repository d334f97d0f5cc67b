/*  store_actor: the store thread (group commit). See store_actor.h for the
 *  flow and the wire format of the pipe.
 *
 *  Owns: the zactor (thread + pipe) and, inside the thread, the cw_store_t.
 *  Threads: the router thread calls the submit/recv functions on its end of
 *  the pipe; actor_task runs in the actor thread and is the only code that
 *  touches the store after cw_store_actor_new. The two share only the
 *  atomic counters of struct cw_store_actor, and the store pointer, which
 *  is handed over once before the thread starts and never read again by
 *  the router.
 *
 *  Invariants:
 *    1. A reply is sent only after the COMMIT of the group holding its
 *       request returned (or the group failed and the reply says
 *       CW_STORE_ERROR): never acknowledge before durable.
 *    2. Replies are sent in the order the requests arrived, one per request
 *       that could be decoded.
 *    3. Frames (and so every pointer decoded from them) live until the
 *       replies of their group are sent.
 *    4. A group that failed is retried in halves, recursively (each half
 *       its own transaction), so one bad request cannot fail its
 *       neighbours; not when the store refuses to start a group at all
 *       (its failed state).
 */
#include "store_actor.h"
#include "receipts.h"

#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define REQ_HEADER 28            /* kind flags 0 n token arg ttl */
#define REP_HEADER 28            /* kind flags 0 status token pending n */
#define MAX_GROUP 8192           /* requests taken per group */
#define DEFAULT_MAX_QUEUED 100000

#define REP_DUPLICATE 1
#define REP_CREATED 2
#define ENT_ACKED 1
#define ENT_BROADCAST 2

struct cw_store_actor {
    zactor_t *actor;              /* thread + pipe; zactor_sock() is our end */
    void *handle;                 /* libzmq handle of our end */
    cw_store_t *store;            /* handed to the thread at start, then not ours */
    size_t max_queued;            /* pipe high-water mark, both directions */
    zmq_msg_t *frames;            /* the thread's: a group's frames (MAX_GROUP) */
    void *reqs;                   /* the thread's: req_t[MAX_GROUP] */
    _Atomic uint64_t requests, groups, commits, appended, entries, duplicates, failed_groups,
        max_group, pending, users;   /* see cw_store_actor_stats_t */
    _Atomic uint64_t commit_hist[CW_COMMIT_BUCKETS + 1], commit_sum_us, commit_count;
};

struct cw_store_reply {
    zmq_msg_t frame;              /* the reply as received; the views point into it */
    cw_store_req_kind_t kind;
    uint64_t token;
    int status;
    int flags;                    /* REP_* */
    uint64_t pending;
    uint32_t n;                   /* recipients or entries */
    const uint8_t *rcpts;         /* APPEND: n x (i32, u64) */
    cw_store_rcpt_t *orig;        /* APPEND duplicate: the original's recipients
                                     (owned array; names point into frame) */
    size_t n_orig;
    cw_store_entry_t *entries;    /* READ/HISTORY: decoded views (owned array) */
};

/* ------------------------------------------------------------------------ */
/* Packing                                                                   */

typedef struct {
    uint8_t *p;                   /* next byte to write */
} wbuf_t;

static void w_u8(wbuf_t *w, uint8_t v) { *w->p++ = v; }
static void w_u32(wbuf_t *w, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *w->p++ = (uint8_t) (v >> (8 * i));
}
static void w_u64(wbuf_t *w, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        *w->p++ = (uint8_t) (v >> (8 * i));
}
static void w_str(wbuf_t *w, const void *s, size_t len)
{
    w_u32(w, (uint32_t) len);
    if (len)
        memcpy(w->p, s, len);
    w->p += len;
    *w->p++ = 0;
}
static size_t str_size(size_t len) { return 4 + len + 1; }

typedef struct {
    const uint8_t *p;             /* next byte to read */
    const uint8_t *end;           /* one past the last */
    int bad;                      /* a read ran past the end */
} rbuf_t;

static uint8_t r_u8(rbuf_t *r)
{
    if (r->bad || r->end - r->p < 1) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}
static uint32_t r_u32(rbuf_t *r)
{
    if (r->bad || r->end - r->p < 4) {
        r->bad = 1;
        return 0;
    }
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t) *r->p++ << (8 * i);
    return v;
}
static uint64_t r_u64(rbuf_t *r)
{
    if (r->bad || r->end - r->p < 8) {
        r->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t) *r->p++ << (8 * i);
    return v;
}
/* A str: points *s into the buffer (NUL-terminated there). */
static const char *r_str(rbuf_t *r, size_t *len)
{
    size_t n = r_u32(r);
    if (r->bad || (size_t) (r->end - r->p) < n + 1 || r->p[n] != 0) {
        r->bad = 1;
        if (len)
            *len = 0;
        return "";
    }
    const char *s = (const char *) r->p;
    r->p += n + 1;
    if (len)
        *len = n;
    return s;
}

/* ------------------------------------------------------------------------ */
/* The actor thread                                                          */

/* One request of a group, decoded. */
typedef struct {
    cw_store_req_kind_t kind;
    uint64_t token;
    uint32_t n;                   /* recipients / max / last_n */
    uint64_t arg;                 /* timestamp_us / up_to_seq / from_seq */
    const char *user;             /* ACK, READ, HISTORY, ADD_USER, CLOCK */
    const uint8_t *blob;          /* CLOCK: the clock bytes (points into the frame) */
    size_t blob_len;
    cw_store_msg_t msg;           /* APPEND; rcpts point into the group's pool */
    int status;                   /* result */
    int created;                  /* ADD_USER result */
    uint64_t pending;             /* ACK/READ result */
    cw_store_entry_t *entries;    /* READ/HISTORY result (store-owned array) */
    size_t n_entries;
    cw_store_rcpt_t *orig;        /* APPEND duplicate: the original's recipients
                                     (cw_store_original; one block, owned) */
    size_t n_orig;
} req_t;

/* Per-thread state of the actor. */
typedef struct {
    cw_store_actor_t *shared;     /* counters */
    cw_store_t *store;            /* owned */
    void *pipe;                   /* libzmq handle of the actor's end */
    zmq_msg_t *frames;            /* the group's frames */
    req_t *reqs;                  /* decoded, one per frame (invalid ones dropped) */
    cw_store_rcpt_t *pool;        /* recipients of the group's appends */
    size_t pool_cap;
} task_t;

/* Decodes a request frame into q; recipients taken from pool. 0 or -1. */
static int decode_request(const uint8_t *data, size_t size, req_t *q, cw_store_rcpt_t *pool)
{
    memset(q, 0, sizeof *q);
    rbuf_t r = {data, data + size, 0};
    q->kind = r_u8(&r);
    uint8_t flags = r_u8(&r);
    r_u8(&r);
    r_u8(&r);
    q->n = r_u32(&r);
    q->token = r_u64(&r);
    q->arg = r_u64(&r);
    uint32_t ttl = r_u32(&r);
    if (r.bad)
        return -1;
    switch (q->kind) {
    case CW_STORE_REQ_APPEND: {
        cw_store_msg_t *m = &q->msg;
        m->broadcast = flags & 1;
        m->timestamp_us = q->arg;
        m->ttl_s = ttl;
        m->sender = r_str(&r, NULL);
        m->message_id = r_str(&r, NULL);
        m->text = r_str(&r, &m->text_len);
        size_t clock_len;
        const char *clock = r_str(&r, &clock_len);
        m->clock = clock_len ? (const uint8_t *) clock : NULL;
        m->clock_len = clock_len;
        m->rcpts = pool;
        m->n_rcpts = q->n;
        for (uint32_t i = 0; i < q->n; i++) {
            pool[i] = (cw_store_rcpt_t){r_str(&r, NULL), 0, 0};
            if (r.bad)
                return -1;
        }
        break;
    }
    case CW_STORE_REQ_ACK:
    case CW_STORE_REQ_READ:
    case CW_STORE_REQ_HISTORY:
    case CW_STORE_REQ_ADD_USER:
        q->user = r_str(&r, NULL);
        break;
    case CW_STORE_REQ_CLOCK:
        q->user = r_str(&r, NULL);
        q->blob = (const uint8_t *) r_str(&r, &q->blob_len);
        break;
    default:
        return -1;
    }
    return r.bad || r.p != r.end ? -1 : 0;
}

static void req_clear_result(req_t *q)
{
    cw_store_entries_free(&q->entries, q->n_entries);
    q->n_entries = 0;
    free(q->orig);
    q->orig = NULL;
    q->n_orig = 0;
    q->created = 0;
    q->pending = 0;
    q->status = CW_STORE_ERROR;
    q->msg.status = CW_STORE_ERROR;
    q->msg.duplicate = 0;
    for (size_t i = 0; i < q->msg.n_rcpts; i++) {
        q->msg.rcpts[i].status = CW_STORE_ERROR;
        q->msg.rcpts[i].seq = 0;
    }
}

/* Applies one request inside the open group. */
static void apply(cw_store_t *s, req_t *q)
{
    switch (q->kind) {
    case CW_STORE_REQ_APPEND: {
        int rc = cw_store_append_batch(s, &q->msg, 1);
        q->status = rc == CW_OK ? q->msg.status : rc;
        if (q->status == CW_OK && q->msg.duplicate) {
            /* A repeat is answered with the original's recipients, not the
             * repeat's (PROTOCOL.md §13.2). Failing to read them fails the
             * request: nothing was stored either way. */
            free(q->orig);
            q->orig = NULL;
            if (cw_store_original(s, q->msg.sender, q->msg.message_id, &q->orig,
                                  &q->n_orig) != CW_OK)
                q->status = CW_STORE_ERROR;
        }
        break;
    }
    case CW_STORE_REQ_ACK:
        /* Read receipts first, in the same group: made iff the Ack commits
         * (receipts.h). The entries that made one go back to the router,
         * which pushes the receipts to their senders. */
        if (q->n)
            q->status = cw_receipts_ack(s, q->user, q->arg, cw_now_us(), &q->pending,
                                        &q->entries, &q->n_entries);
        else   /* the router knows no acknowledged entry asked for a receipt */
            q->status = cw_store_ack(s, q->user, q->arg, &q->pending);
        break;
    case CW_STORE_REQ_READ:
        q->status = cw_store_read(s, q->user, q->arg, q->n, cw_now_us(), &q->entries,
                                  &q->n_entries);
        if (q->status == CW_OK)
            cw_store_pending(s, q->user, &q->pending);
        break;
    case CW_STORE_REQ_HISTORY:
        q->status = cw_store_history(s, q->user, q->n, cw_now_us(), &q->entries,
                                     &q->n_entries);
        break;
    case CW_STORE_REQ_ADD_USER:
        q->status = cw_store_add_user(s, q->user, &q->created);
        break;
    case CW_STORE_REQ_CLOCK:
        q->status = cw_store_save_clock(s, q->user, q->arg, q->blob, q->blob_len);
        break;
    }
}

/* Counts one commit of `us` microseconds in the latency histogram. */
static void observe_commit(cw_store_actor_t *a, int64_t us)
{
    static const uint64_t bounds[CW_COMMIT_BUCKETS] = CW_COMMIT_BOUNDS_US;
    uint64_t v = us > 0 ? (uint64_t) us : 0;
    size_t i = 0;
    while (i < CW_COMMIT_BUCKETS && v > bounds[i])
        i++;
    atomic_fetch_add_explicit(&a->commit_hist[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->commit_sum_us, v, memory_order_relaxed);
    atomic_fetch_add_explicit(&a->commit_count, 1, memory_order_release);
}

/* Runs reqs[0..n) as one group. Returns CW_OK (committed), 1 (the group
 * failed) or -1 (the store refused to start a group: its failed state).
 * On failure every request's result is CW_STORE_ERROR. */
static int run_group(task_t *t, req_t *reqs, size_t n)
{
    int rc = cw_store_txn_begin(t->store);
    if (rc == CW_OK) {
        for (size_t i = 0; i < n; i++)
            apply(t->store, &reqs[i]);
        int64_t t0 = cw_mono_us();
        rc = cw_store_txn_commit(t->store) == CW_OK ? CW_OK : 1;
        observe_commit(t->shared, cw_mono_us() - t0);
    } else {
        rc = -1;
    }
    if (rc != CW_OK)
        for (size_t i = 0; i < n; i++)
            req_clear_result(&reqs[i]);
    return rc;
}

/* Runs reqs[0..n) as one group; if that fails, runs each half as a group,
 * recursively (invariant 4): a request that fails on its own costs its
 * group O(log n) extra commits, and the others still succeed. Arrival
 * order is kept. */
static void run_or_split(task_t *t, req_t *reqs, size_t n)
{
    int rc = run_group(t, reqs, n);
    if (rc == CW_OK)
        return;
    atomic_fetch_add_explicit(&t->shared->failed_groups, 1, memory_order_relaxed);
    if (n == 1 || rc < 0)
        return;
    CW_WARN("store actor: group of %zu failed (%s); retrying it in halves", n,
            cw_store_errmsg(t->store));
    run_or_split(t, reqs, n / 2);
    run_or_split(t, reqs + n / 2, n - n / 2);
}

static size_t reply_size(const req_t *q)
{
    size_t size = REP_HEADER;
    if (q->kind == CW_STORE_REQ_APPEND) {
        size += q->msg.n_rcpts * 12;
        if (q->msg.duplicate) {
            size += 4;
            for (size_t i = 0; i < q->n_orig; i++)
                size += 12 + str_size(strlen(q->orig[i].name));
        }
    }
    for (size_t i = 0; i < q->n_entries; i++) {
        const cw_store_entry_t *e = &q->entries[i];
        size += 8 + 4 + 4 + 8 + 8 + str_size(strlen(e->sender)) +
                str_size(strlen(e->message_id)) + str_size(e->text_len) +
                str_size(e->clock_len) + 4;
        for (size_t k = 0; k < e->n_to; k++)
            size += str_size(strlen(e->to[k]));
    }
    return size;
}

/* Sends q's reply (blocking: the router reads replies). 0 or -1. */
static int send_reply(task_t *t, const req_t *q)
{
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, reply_size(q)) != 0)
        return -1;
    wbuf_t w = {zmq_msg_data(&msg)};
    w_u8(&w, (uint8_t) q->kind);
    w_u8(&w, (uint8_t) ((q->msg.duplicate ? REP_DUPLICATE : 0) | (q->created ? REP_CREATED : 0)));
    w_u8(&w, 0);
    w_u8(&w, 0);
    w_u32(&w, (uint32_t) q->status);
    w_u64(&w, q->token);
    w_u64(&w, q->pending);
    if (q->kind == CW_STORE_REQ_APPEND) {
        w_u32(&w, (uint32_t) q->msg.n_rcpts);
        for (size_t i = 0; i < q->msg.n_rcpts; i++) {
            w_u32(&w, (uint32_t) q->msg.rcpts[i].status);
            w_u64(&w, q->msg.rcpts[i].seq);
        }
        if (q->msg.duplicate) {
            w_u32(&w, (uint32_t) q->n_orig);
            for (size_t i = 0; i < q->n_orig; i++) {
                w_u32(&w, (uint32_t) q->orig[i].status);
                w_u64(&w, q->orig[i].seq);
                w_str(&w, q->orig[i].name, strlen(q->orig[i].name));
            }
        }
    } else {
        w_u32(&w, (uint32_t) q->n_entries);
        for (size_t i = 0; i < q->n_entries; i++) {
            const cw_store_entry_t *e = &q->entries[i];
            w_u64(&w, e->seq);
            w_u32(&w, (uint32_t) e->status);
            w_u8(&w, (uint8_t) ((e->acked ? ENT_ACKED : 0) | (e->broadcast ? ENT_BROADCAST : 0)));
            w_u8(&w, 0);
            w_u8(&w, 0);
            w_u8(&w, 0);
            w_u64(&w, e->timestamp_us);
            w_u64(&w, e->expires_us);
            w_str(&w, e->sender, strlen(e->sender));
            w_str(&w, e->message_id, strlen(e->message_id));
            w_str(&w, e->text, e->text_len);
            w_str(&w, e->clock, e->clock_len);
            w_u32(&w, (uint32_t) e->n_to);
            for (size_t k = 0; k < e->n_to; k++)
                w_str(&w, e->to[k], strlen(e->to[k]));
        }
    }
    assert(w.p == (uint8_t *) zmq_msg_data(&msg) + zmq_msg_size(&msg));
    while (zmq_msg_send(&msg, t->pipe, 0) < 0) {
        if (errno != EINTR) {
            zmq_msg_close(&msg);
            return -1;
        }
    }
    return 0;
}

/* Publishes the store's counters to the shared atomics. */
static void publish_stats(task_t *t, size_t group)
{
    cw_store_stats_t st;
    cw_store_stats(t->store, &st);
    cw_store_actor_t *a = t->shared;
    atomic_store_explicit(&a->commits, st.commits, memory_order_relaxed);
    atomic_store_explicit(&a->appended, st.appended, memory_order_relaxed);
    atomic_store_explicit(&a->entries, st.entries, memory_order_relaxed);
    atomic_store_explicit(&a->duplicates, st.duplicates, memory_order_relaxed);
    atomic_store_explicit(&a->pending, st.pending, memory_order_relaxed);
    atomic_store_explicit(&a->users, st.users, memory_order_relaxed);
    if (group)
        atomic_fetch_add_explicit(&a->groups, 1, memory_order_relaxed);
    if (group > atomic_load_explicit(&a->max_group, memory_order_relaxed))
        atomic_store_explicit(&a->max_group, group, memory_order_relaxed);
}

/* Processes frames[0..n): decode, apply as one group, reply. Returns 1 if
 * "$TERM" was among them (always the last: nothing follows it), -1 if the
 * pipe broke, else 0. */
static int process(task_t *t, size_t n)
{
    int term = 0;
    /* Pass 1: room for the recipients of every append. */
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        size_t size = zmq_msg_size(&t->frames[i]);
        const uint8_t *d = zmq_msg_data(&t->frames[i]);
        if (size >= REQ_HEADER && d[0] == CW_STORE_REQ_APPEND)
            need += (size_t) d[4] | (size_t) d[5] << 8 | (size_t) d[6] << 16 |
                    (size_t) d[7] << 24;
    }
    int nomem = 0;
    if (need > t->pool_cap) {
        cw_store_rcpt_t *p = realloc(t->pool, need * sizeof *p);
        if (p) {
            t->pool = p;
            t->pool_cap = need;
        } else {
            CW_ERROR("store actor: out of memory for %zu recipients; refusing the group", need);
            nomem = 1;
        }
    }
    /* Pass 2: decode. */
    size_t nq = 0, used = 0;
    for (size_t i = 0; i < n; i++) {
        size_t size = zmq_msg_size(&t->frames[i]);
        const uint8_t *d = zmq_msg_data(&t->frames[i]);
        if (size == 5 && memcmp(d, "$TERM", 5) == 0) {
            term = 1;
            continue;
        }
        if (nomem && size >= REQ_HEADER) {
            /* Answer without applying: kind and token are all we need. */
            req_t *q = &t->reqs[nq++];
            memset(q, 0, sizeof *q);
            rbuf_t rb = {d + 8, d + 16, 0};
            q->kind = d[0];
            q->token = r_u64(&rb);
            q->status = CW_ERR_NOMEM;
            continue;
        }
        if (nomem ||
            decode_request(d, size, &t->reqs[nq], t->pool ? t->pool + used : NULL) != 0) {
            /* Only our own submit functions write to the pipe: a bug. */
            CW_ERROR("store actor: dropping a malformed request (%zu bytes)", size);
            continue;
        }
        if (t->reqs[nq].kind == CW_STORE_REQ_APPEND)
            used += t->reqs[nq].n;
        nq++;
    }
    if (nq && !nomem) {
        run_or_split(t, t->reqs, nq);
        publish_stats(t, nq);
    }
    /* Counters first, so that whoever holds a reply sees them cover it. */
    atomic_fetch_add_explicit(&t->shared->requests, nq, memory_order_relaxed);
    int rc = term;
    for (size_t i = 0; i < nq; i++) {
        if (rc >= 0 && send_reply(t, &t->reqs[i]) != 0) {
            CW_ERROR("store actor: cannot send reply: %s", zmq_strerror(errno));
            rc = -1;
        }
        cw_store_entries_free(&t->reqs[i].entries, t->reqs[i].n_entries);
        free(t->reqs[i].orig);
        t->reqs[i].orig = NULL;
    }
    return rc;
}

static void actor_task(zsock_t *pipe, void *args)
{
    task_t t = {0};
    t.shared = args;
    t.store = t.shared->store;
    t.pipe = zsock_resolve(pipe);
    t.frames = t.shared->frames;
    t.reqs = t.shared->reqs;
    zsock_set_sndhwm(pipe, (int) t.shared->max_queued);
    zsock_set_rcvhwm(pipe, (int) t.shared->max_queued);
    publish_stats(&t, 0);
    zsock_signal(pipe, 0);
    for (;;) {
        zmq_msg_init(&t.frames[0]);
        if (zmq_msg_recv(&t.frames[0], t.pipe, 0) < 0) {
            zmq_msg_close(&t.frames[0]);
            if (errno == EINTR)
                continue;
            break;
        }
        size_t n = 1;
        while (n < MAX_GROUP) {
            zmq_msg_init(&t.frames[n]);
            if (zmq_msg_recv(&t.frames[n], t.pipe, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&t.frames[n]);
                break;
            }
            n++;
        }
        int rc = process(&t, n);
        for (size_t i = 0; i < n; i++)
            zmq_msg_close(&t.frames[i]);
        if (rc != 0)
            break;
    }
    cw_store_close(&t.store);
    free(t.pool);
}

/* ------------------------------------------------------------------------ */
/* The router's side                                                         */

cw_store_actor_t *cw_store_actor_new(cw_store_t **store, size_t max_queued)
{
    if (!store || !*store)
        return NULL;
    cw_store_actor_t *a = calloc(1, sizeof *a);
    if (!a) {
        cw_store_close(store);
        return NULL;
    }
    a->store = *store;
    *store = NULL;
    a->max_queued = max_queued ? max_queued : DEFAULT_MAX_QUEUED;
    if (a->max_queued > INT32_MAX)
        a->max_queued = INT32_MAX;
    a->frames = calloc(MAX_GROUP, sizeof *a->frames);
    a->reqs = calloc(MAX_GROUP, sizeof(req_t));
    if (a->frames && a->reqs)
        a->actor = zactor_new(actor_task, a);   /* returns once the task runs */
    if (!a->actor) {
        cw_store_close(&a->store);
        free(a->frames);
        free(a->reqs);
        free(a);
        return NULL;
    }
    zsock_t *sock = zactor_sock(a->actor);
    zsock_set_sndhwm(sock, (int) a->max_queued);
    zsock_set_rcvhwm(sock, (int) a->max_queued);
    a->handle = zsock_resolve(sock);
    a->store = NULL;                 /* the thread's now */
    return a;
}

void cw_store_actor_destroy(cw_store_actor_t **p)
{
    if (!p || !*p)
        return;
    cw_store_actor_t *a = *p;
    zactor_destroy(&a->actor);       /* "$TERM", then waits for the task to return */
    free(a->frames);
    free(a->reqs);
    free(a);
    *p = NULL;
}

zsock_t *cw_store_actor_sock(cw_store_actor_t *a)
{
    return a ? zactor_sock(a->actor) : NULL;
}

/* Allocates a request frame of size bytes and writes its header. */
static int req_start(zmq_msg_t *msg, wbuf_t *w, size_t size, cw_store_req_kind_t kind,
                     uint8_t flags, uint32_t n, uint64_t token, uint64_t arg, uint32_t ttl)
{
    if (zmq_msg_init_size(msg, size) != 0)
        return CW_ERR_NOMEM;
    w->p = zmq_msg_data(msg);
    w_u8(w, (uint8_t) kind);
    w_u8(w, flags);
    w_u8(w, 0);
    w_u8(w, 0);
    w_u32(w, n);
    w_u64(w, token);
    w_u64(w, arg);
    w_u32(w, ttl);
    return CW_OK;
}

static int req_send(cw_store_actor_t *a, zmq_msg_t *msg)
{
    if (zmq_msg_send(msg, a->handle, ZMQ_DONTWAIT) >= 0)
        return CW_OK;
    int e = errno;
    zmq_msg_close(msg);
    if (e == EAGAIN)
        return CW_FLOODED;
    return CW_SHUTTING_DOWN;
}

int cw_store_actor_append(cw_store_actor_t *a, uint64_t token, const cw_store_msg_t *m)
{
    int ask_only = m && m->n_rcpts == 0 && m->message_id && *m->message_id; /* store.h */
    if (!a || !m || !m->sender || (!ask_only && (!m->rcpts || m->n_rcpts == 0)) ||
        m->n_rcpts > UINT32_MAX ||
        (!m->text && m->text_len) || m->text_len > UINT32_MAX || m->clock_len > UINT32_MAX ||
        (m->clock_len && !m->clock))
        return CW_ERR_INVALID;
    const char *mid = m->message_id ? m->message_id : "";
    size_t size = REQ_HEADER + str_size(strlen(m->sender)) + str_size(strlen(mid)) +
                  str_size(m->text_len) + str_size(m->clock_len);
    for (size_t i = 0; i < m->n_rcpts; i++) {
        if (!m->rcpts[i].name)
            return CW_ERR_INVALID;
        size += str_size(strlen(m->rcpts[i].name));
    }
    zmq_msg_t msg;
    wbuf_t w;
    int rc = req_start(&msg, &w, size, CW_STORE_REQ_APPEND, m->broadcast ? 1 : 0,
                       (uint32_t) m->n_rcpts, token, m->timestamp_us, m->ttl_s);
    if (rc != CW_OK)
        return rc;
    w_str(&w, m->sender, strlen(m->sender));
    w_str(&w, mid, strlen(mid));
    w_str(&w, m->text, m->text_len);
    w_str(&w, m->clock, m->clock_len);
    for (size_t i = 0; i < m->n_rcpts; i++)
        w_str(&w, m->rcpts[i].name, strlen(m->rcpts[i].name));
    return req_send(a, &msg);
}

/* ACK, READ, HISTORY, ADD_USER: a header and a user name. */
static int user_request(cw_store_actor_t *a, cw_store_req_kind_t kind, uint64_t token,
                        const char *user, uint64_t arg, uint32_t n)
{
    if (!a || !user)
        return CW_ERR_INVALID;
    size_t len = strlen(user);
    zmq_msg_t msg;
    wbuf_t w;
    int rc = req_start(&msg, &w, REQ_HEADER + str_size(len), kind, 0, n, token, arg, 0);
    if (rc != CW_OK)
        return rc;
    w_str(&w, user, len);
    return req_send(a, &msg);
}

int cw_store_actor_ack(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t up_to_seq)
{
    return cw_store_actor_ack_receipts(a, token, user, up_to_seq, true);
}

int cw_store_actor_ack_receipts(cw_store_actor_t *a, uint64_t token, const char *user,
                                uint64_t up_to_seq, bool receipts)
{
    return user_request(a, CW_STORE_REQ_ACK, token, user, up_to_seq, receipts ? 1 : 0);
}

int cw_store_actor_read(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t from_seq,
                        uint32_t max)
{
    return user_request(a, CW_STORE_REQ_READ, token, user, from_seq, max);
}

int cw_store_actor_history(cw_store_actor_t *a, uint64_t token, const char *user,
                           uint32_t last_n)
{
    return user_request(a, CW_STORE_REQ_HISTORY, token, user, 0, last_n);
}

int cw_store_actor_add_user(cw_store_actor_t *a, uint64_t token, const char *user)
{
    return user_request(a, CW_STORE_REQ_ADD_USER, token, user, 0, 0);
}

int cw_store_actor_save_clock(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t own,
                              const uint8_t *clock, size_t clock_len)
{
    if (!a || !user || (!clock && clock_len) || clock_len > UINT32_MAX)
        return CW_ERR_INVALID;
    size_t len = strlen(user);
    zmq_msg_t msg;
    wbuf_t w;
    int rc = req_start(&msg, &w, REQ_HEADER + str_size(len) + str_size(clock_len),
                       CW_STORE_REQ_CLOCK, 0, 0, token, own, 0);
    if (rc != CW_OK)
        return rc;
    w_str(&w, user, len);
    w_str(&w, clock, clock_len);
    return req_send(a, &msg);
}

/* Decodes the entries of a READ/HISTORY reply into r->entries. 0 or -1. */
static int decode_entries(cw_store_reply_t *r, rbuf_t *rb)
{
    /* Pass 1: count the "to" names to size one allocation. */
    rbuf_t scan = *rb;
    size_t total_to = 0;
    for (uint32_t i = 0; i < r->n && !scan.bad; i++) {
        if (scan.end - scan.p < 32) {
            scan.bad = 1;
            break;
        }
        scan.p += 32;
        for (int k = 0; k < 4; k++)
            r_str(&scan, NULL);
        uint32_t n_to = r_u32(&scan);
        for (uint32_t k = 0; k < n_to && !scan.bad; k++)
            r_str(&scan, NULL);
        total_to += n_to;
    }
    if (scan.bad)
        return -1;
    size_t size = r->n * sizeof(cw_store_entry_t) + total_to * sizeof(char *);
    r->entries = calloc(1, size ? size : 1);
    if (!r->entries)
        return -1;
    const char **names = (const char **) (r->entries + r->n);
    for (uint32_t i = 0; i < r->n; i++) {
        cw_store_entry_t *e = &r->entries[i];
        e->seq = r_u64(rb);
        e->status = (int) r_u32(rb);
        uint8_t flags = r_u8(rb);
        rb->p += 3;
        e->acked = (flags & ENT_ACKED) != 0;
        e->broadcast = (flags & ENT_BROADCAST) != 0;
        e->timestamp_us = r_u64(rb);
        e->expires_us = r_u64(rb);
        e->sender = r_str(rb, NULL);
        e->message_id = r_str(rb, NULL);
        e->text = r_str(rb, &e->text_len);
        const char *clock = r_str(rb, &e->clock_len);
        e->clock = e->clock_len ? (const uint8_t *) clock : NULL;
        e->n_to = r_u32(rb);
        e->to = e->n_to ? names : NULL;
        for (size_t k = 0; k < e->n_to; k++)
            *names++ = r_str(rb, NULL);
    }
    return rb->bad ? -1 : 0;
}

cw_store_reply_t *cw_store_actor_recv(cw_store_actor_t *a, int timeout_ms)
{
    if (!a)
        return NULL;
    for (;;) {
        if (timeout_ms != 0) {
            zmq_pollitem_t item = {a->handle, 0, ZMQ_POLLIN, 0};
            int rc = zmq_poll(&item, 1, timeout_ms);
            if (rc <= 0)
                return NULL;
        }
        cw_store_reply_t *r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
        zmq_msg_init(&r->frame);
        if (zmq_msg_recv(&r->frame, a->handle, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&r->frame);
            free(r);
            return NULL;
        }
        const uint8_t *d = zmq_msg_data(&r->frame);
        rbuf_t rb = {d, d + zmq_msg_size(&r->frame), 0};
        r->kind = r_u8(&rb);
        r->flags = r_u8(&rb);
        r_u8(&rb);
        r_u8(&rb);
        r->status = (int) r_u32(&rb);
        r->token = r_u64(&rb);
        r->pending = r_u64(&rb);
        r->n = r_u32(&rb);
        if (!rb.bad && r->kind == CW_STORE_REQ_APPEND) {
            r->rcpts = rb.p;
            if ((size_t) (rb.end - rb.p) < (size_t) r->n * 12)
                rb.bad = 1;
            else
                rb.p += (size_t) r->n * 12;
            if (!rb.bad && (r->flags & REP_DUPLICATE)) {
                uint32_t n = r_u32(&rb);
                if (!rb.bad && n > (size_t) (rb.end - rb.p) / 17)
                    rb.bad = 1; /* each takes at least 17 bytes */
                if (!rb.bad && n && !(r->orig = calloc(n, sizeof *r->orig)))
                    rb.bad = 1;
                for (uint32_t i = 0; !rb.bad && i < n; i++) {
                    r->orig[i].status = (int) r_u32(&rb);
                    r->orig[i].seq = r_u64(&rb);
                    r->orig[i].name = r_str(&rb, NULL);
                }
                r->n_orig = n;
            }
            if (rb.p != rb.end)
                rb.bad = 1;
        } else if (!rb.bad && (r->kind == CW_STORE_REQ_READ || r->kind == CW_STORE_REQ_HISTORY ||
                               r->kind == CW_STORE_REQ_ACK)) {
            /* ACK: the acknowledged entries that made read receipts. */
            if (decode_entries(r, &rb) != 0)
                rb.bad = 1;
        }
        if (!rb.bad)
            return r;
        CW_ERROR("store actor: dropping a malformed reply (%zu bytes)", zmq_msg_size(&r->frame));
        cw_store_reply_destroy(&r);
        timeout_ms = 0;
    }
}

void cw_store_actor_stats(cw_store_actor_t *a, cw_store_actor_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!a)
        return;
    out->requests = atomic_load_explicit(&a->requests, memory_order_relaxed);
    out->groups = atomic_load_explicit(&a->groups, memory_order_relaxed);
    out->commits = atomic_load_explicit(&a->commits, memory_order_relaxed);
    out->appended = atomic_load_explicit(&a->appended, memory_order_relaxed);
    out->entries = atomic_load_explicit(&a->entries, memory_order_relaxed);
    out->duplicates = atomic_load_explicit(&a->duplicates, memory_order_relaxed);
    out->failed_groups = atomic_load_explicit(&a->failed_groups, memory_order_relaxed);
    out->max_group = atomic_load_explicit(&a->max_group, memory_order_relaxed);
    out->pending = atomic_load_explicit(&a->pending, memory_order_relaxed);
    out->users = atomic_load_explicit(&a->users, memory_order_relaxed);
    out->commit_count = atomic_load_explicit(&a->commit_count, memory_order_acquire);
    out->commit_sum_us = atomic_load_explicit(&a->commit_sum_us, memory_order_relaxed);
    for (size_t i = 0; i <= CW_COMMIT_BUCKETS; i++)
        out->commit_hist[i] = atomic_load_explicit(&a->commit_hist[i], memory_order_relaxed);
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                   */

cw_store_req_kind_t cw_store_reply_kind(const cw_store_reply_t *r) { return r->kind; }
uint64_t cw_store_reply_token(const cw_store_reply_t *r) { return r->token; }
int cw_store_reply_status(const cw_store_reply_t *r) { return r->status; }
int cw_store_reply_duplicate(const cw_store_reply_t *r) { return (r->flags & REP_DUPLICATE) != 0; }
int cw_store_reply_created(const cw_store_reply_t *r) { return (r->flags & REP_CREATED) != 0; }
uint64_t cw_store_reply_pending(const cw_store_reply_t *r) { return r->pending; }

size_t cw_store_reply_rcpts(const cw_store_reply_t *r)
{
    return r->kind == CW_STORE_REQ_APPEND ? r->n : 0;
}

int cw_store_reply_rcpt_status(const cw_store_reply_t *r, size_t i)
{
    assert(r->kind == CW_STORE_REQ_APPEND && i < r->n);
    const uint8_t *p = r->rcpts + i * 12;
    return (int) ((uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16 |
                  (uint32_t) p[3] << 24);
}

uint64_t cw_store_reply_rcpt_seq(const cw_store_reply_t *r, size_t i)
{
    assert(r->kind == CW_STORE_REQ_APPEND && i < r->n);
    const uint8_t *p = r->rcpts + i * 12 + 4;
    uint64_t v = 0;
    for (int k = 0; k < 8; k++)
        v |= (uint64_t) p[k] << (8 * k);
    return v;
}

size_t cw_store_reply_original(const cw_store_reply_t *r, const cw_store_rcpt_t **rcpts)
{
    *rcpts = r->orig;
    return r->orig ? r->n_orig : 0;
}

const cw_store_entry_t *cw_store_reply_entries(const cw_store_reply_t *r, size_t *n)
{
    *n = r->entries ? r->n : 0;
    return *n ? r->entries : NULL;
}

void cw_store_reply_destroy(cw_store_reply_t **p)
{
    if (!p || !*p)
        return;
    zmq_msg_close(&(*p)->frame);
    free((*p)->entries);
    free((*p)->orig);
    free(*p);
    *p = NULL;
}
