/*  store_actor: the SQLite backend's thread (group commit). See
 *  store_actor.h for the flow and who owns a request object when.
 *
 *  Owns: the thread and its pipe (store_pipe.h) and, inside the thread, the cw_store_t.
 *  Threads: the router thread calls the submit/recv functions on its end of
 *  the pipe; actor_task runs in the actor thread and is the only code that
 *  touches the store after cw_store_actor_new. The two share the atomic
 *  counters of struct cw_store_actor, the `exited` flag, and the request
 *  objects, each owned by one thread at a time (store_actor.h).
 *
 *  Invariants:
 *    1. A reply is sent only after the COMMIT of the group holding its
 *       request returned (or the group failed and the reply says
 *       CW_STORE_ERROR): never acknowledge before durable.
 *    2. Replies are sent in the order the requests arrived, one per
 *       request, then the group's DONE event.
 *    3. An object is touched only by its owner; the actor gives up an
 *       object by sending it, and frees every object it cannot send (a
 *       broken pipe) or has not processed when it stops.
 *    4. A group that failed is retried in halves, recursively (each half
 *       its own transaction), so one bad request cannot fail its
 *       neighbours; not when the store refuses to start a group at all
 *       (its failed state).
 */
#include "store_actor.h"
#include "receipts.h"
#include "store_pipe.h"

#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"

#include <assert.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GROUP 8192           /* requests taken per group */
#define DEFAULT_MAX_QUEUED 100000
#define OBJ_MAGIC 0x3130716572776375ull /* "ucwreq01": a pipe frame holding an object */
#define REQ_FLUSH 99             /* internal kind: cw_store_actor_destroy's marker */
#define MAX_ARG_LEN UINT32_MAX   /* longest string argument */

struct cw_store_actor {
    cw_store_thread_t *actor;     /* thread + pipe (store_pipe.h) */
    void *handle;                 /* libzmq handle of our end */
    cw_store_t *store;            /* handed to the thread at start, then not ours */
    size_t max_queued;            /* pipe high-water mark, both directions */
    void *reqs;                   /* the thread's: req_t *[MAX_GROUP] */
    _Atomic int exited;           /* the thread left its loop (and freed what it held) */
    _Atomic uint64_t requests, groups, commits, appended, entries, duplicates, failed_groups,
        max_group, pending, users;   /* see cw_store_counters_t */
    _Atomic uint64_t commit_hist[CW_COMMIT_BUCKETS + 1], commit_sum_us, commit_count;
};

/* A request object: the reply the router gets back is its first member.
 * One allocation: the struct, then n_rcpts recipients, then the strings. */
typedef struct {
    cw_store_reply_t rep;         /* kind, token, results (store_if.h) */
    uint32_t n;                   /* READ max, HISTORY last_n, WHO_PAGE max */
    uint64_t arg;                 /* ACK up_to_seq, READ from_seq, CLOCK own */
    const char *user;             /* the user; WHO_PAGE: after */
    const uint8_t *blob;          /* CLOCK: the clock bytes (in the object) */
    size_t blob_len;
    cw_store_msg_t msg;           /* APPEND: strings and rcpts point into the object */
} req_t;


/* ------------------------------------------------------------------------ */
/* Objects                                                                   */

static void req_destroy(cw_store_reply_t *r)
{
    req_t *q = (req_t *) (void *) r;
    cw_store_entries_free(&r->entries, r->n_entries);
    cw_store_users_free(&r->users, r->n_users);
    free(r->orig);
    free(q);
}

/* A new object of `kind` with room for n_rcpts recipients and `strings`
 * bytes (returned in *strp). NULL if out of memory. */
static req_t *req_new(int kind, uint64_t token, size_t n_rcpts, size_t strings, char **strp)
{
    if (n_rcpts > (SIZE_MAX - sizeof(req_t) - strings) / sizeof(cw_store_rcpt_t))
        return NULL;
    size_t size = sizeof(req_t) + n_rcpts * sizeof(cw_store_rcpt_t) + strings;
    req_t *q = calloc(1, size);
    if (!q)
        return NULL;
    q->rep.kind = kind;
    q->rep.token = token;
    q->rep.destroy = req_destroy;
    q->rep.rcpts = n_rcpts ? (cw_store_rcpt_t *) (void *) (q + 1) : NULL;
    q->rep.n_rcpts = n_rcpts;
    *strp = (char *) (q + 1) + n_rcpts * sizeof(cw_store_rcpt_t);
    return q;
}

/* The pipe (store_pipe.h), typed: 0 or -1 (errno; obj stays the caller's). */
static int send_obj(void *pipe, req_t *obj, int flags)
{
    return cw_store_pipe_send(pipe, OBJ_MAGIC, obj, flags);
}

/* 1 with *obj, 0 for "$TERM", 2 for anything else, -1 none (errno). */
static int recv_obj(void *pipe, req_t **obj, int flags)
{
    void *o = NULL;
    int rc = cw_store_pipe_recv(pipe, OBJ_MAGIC, &o, flags);
    if (rc == 1)
        *obj = o;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The actor thread                                                          */

typedef struct {
    cw_store_actor_t *shared;     /* counters */
    cw_store_t *store;            /* owned */
    void *pipe;                   /* libzmq handle of the actor's end */
    req_t **reqs;                 /* the group */
    uint64_t batch;               /* groups completed (DONE events) */
} task_t;

static void req_clear_result(req_t *q)
{
    cw_store_reply_t *r = &q->rep;
    cw_store_entries_free(&r->entries, r->n_entries);
    r->n_entries = 0;
    cw_store_users_free(&r->users, r->n_users);
    r->n_users = 0;
    free(r->orig);
    r->orig = NULL;
    r->n_orig = 0;
    r->created = 0;
    r->truncated = 0;
    r->pending = 0;
    r->duplicate = 0;
    r->status = CW_STORE_ERROR;
    q->msg.status = CW_STORE_ERROR;
    q->msg.duplicate = 0;
    for (size_t i = 0; i < r->n_rcpts; i++) {
        r->rcpts[i].status = CW_STORE_ERROR;
        r->rcpts[i].seq = 0;
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const cw_store_user_t *) a)->name, ((const cw_store_user_t *) b)->name);
}

/* WHO_PAGE on SQLite: the user log sorted by name (byte order), from the
 * first name after q->user, at most q->n entries. */
static int who_page(cw_store_t *s, req_t *q)
{
    cw_store_user_t *all = NULL;
    size_t n = 0;
    int rc = cw_store_list_users(s, &all, &n);
    if (rc != CW_OK)
        return rc;
    if (n > 1)
        qsort(all, n, sizeof *all, by_name);
    size_t from = 0;
    while (from < n && q->user[0] && strcmp(all[from].name, q->user) <= 0)
        from++;
    size_t take = n - from < q->n ? n - from : q->n;
    cw_store_reply_t *r = &q->rep;
    r->truncated = from + take < n;
    r->users = calloc(take ? take : 1, sizeof *r->users);
    if (!r->users) {
        cw_store_users_free(&all, n);
        return CW_ERR_NOMEM;
    }
    for (size_t i = 0; i < take; i++) {
        r->users[i] = all[from + i];
        all[from + i].name = NULL; /* moved */
    }
    r->n_users = take;
    for (size_t i = 0; i < n; i++) /* what was not moved */
        free((char *) all[i].name);
    free(all);
    return CW_OK;
}

/* Applies one request inside the open group. */
static void apply(cw_store_t *s, req_t *q)
{
    cw_store_reply_t *r = &q->rep;
    switch (r->kind) {
    case CW_STORE_REQ_APPEND: {
        int rc = cw_store_append_batch(s, &q->msg, 1);
        r->status = rc == CW_OK ? q->msg.status : rc;
        r->duplicate = q->msg.duplicate;
        if (r->status == CW_OK && q->msg.duplicate) {
            /* A repeat is answered with the original's recipients, not the
             * repeat's (PROTOCOL.md §13.2). Failing to read them fails the
             * request: nothing was stored either way. */
            free(r->orig);
            r->orig = NULL;
            if (cw_store_original(s, q->msg.sender, q->msg.message_id, &r->orig,
                                  &r->n_orig) != CW_OK)
                r->status = CW_STORE_ERROR;
        }
        break;
    }
    case CW_STORE_REQ_ACK:
        /* Read receipts first, in the same group: made iff the Ack commits
         * (receipts.h). The entries that made one go back to the router,
         * which pushes the receipts to their senders. */
        if (q->n)
            r->status = cw_receipts_ack(s, q->user, q->arg, cw_now_us(), &r->pending,
                                        &r->entries, &r->n_entries);
        else   /* the router knows no acknowledged entry asked for a receipt */
            r->status = cw_store_ack(s, q->user, q->arg, &r->pending);
        break;
    case CW_STORE_REQ_READ:
        r->status = cw_store_read(s, q->user, q->arg, q->n, cw_now_us(), &r->entries,
                                  &r->n_entries);
        if (r->status == CW_OK)
            cw_store_pending(s, q->user, &r->pending);
        break;
    case CW_STORE_REQ_HISTORY:
        r->status = cw_store_history(s, q->user, q->n, cw_now_us(), &r->entries,
                                     &r->n_entries);
        break;
    case CW_STORE_REQ_ADD_USER:
        r->status = cw_store_add_user(s, q->user, &r->created);
        break;
    case CW_STORE_REQ_CLOCK:
        r->status = cw_store_save_clock(s, q->user, q->arg, q->blob, q->blob_len);
        break;
    case CW_STORE_REQ_CLAIM_SESSION:   /* one broker: the router's table decides */
    case CW_STORE_REQ_RELEASE_SESSION:
    case REQ_FLUSH:
        r->status = CW_OK;
        break;
    case CW_STORE_REQ_LIVE_SEND:       /* no other broker to deliver to */
        for (size_t i = 0; i < r->n_rcpts; i++)
            r->rcpts[i].status = CW_OFFLINE;
        r->status = CW_OK;
        break;
    case CW_STORE_REQ_WHO_PAGE:
        r->status = who_page(s, q);
        break;
    default:
        r->status = CW_INTERNAL;
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
static int run_group(task_t *t, req_t **reqs, size_t n)
{
    int rc = cw_store_txn_begin(t->store);
    if (rc == CW_OK) {
        for (size_t i = 0; i < n; i++)
            apply(t->store, reqs[i]);
        int64_t t0 = cw_mono_us();
        rc = cw_store_txn_commit(t->store) == CW_OK ? CW_OK : 1;
        observe_commit(t->shared, cw_mono_us() - t0);
    } else {
        rc = -1;
    }
    if (rc != CW_OK)
        for (size_t i = 0; i < n; i++)
            req_clear_result(reqs[i]);
    return rc;
}

/* Runs reqs[0..n) as one group; if that fails, runs each half as a group,
 * recursively (invariant 4): a request that fails on its own costs its
 * group O(log n) extra commits, and the others still succeed. Arrival
 * order is kept. */
static void run_or_split(task_t *t, req_t **reqs, size_t n)
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

/* Applies reqs[0..n) as one group, then sends the replies and the DONE
 * event; a flush marker goes back last, after the DONE event, so nothing
 * of the group follows it. Returns 0, or -1 if the pipe broke (every
 * object not sent is freed: invariant 3). */
static int process(task_t *t, size_t n)
{
    run_or_split(t, t->reqs, n);
    publish_stats(t, n);
    /* Counters first, so that whoever holds a reply sees them cover it. */
    atomic_fetch_add_explicit(&t->shared->requests, n, memory_order_relaxed);
    int rc = 0;
    req_t *flush = NULL;
    for (size_t i = 0; i < n; i++) {
        req_t *q = t->reqs[i];
        t->reqs[i] = NULL;
        if (q->rep.kind == REQ_FLUSH && !flush) {
            flush = q;
            continue;
        }
        if (rc == 0 && send_obj(t->pipe, q, 0) != 0) {
            CW_ERROR("store actor: cannot send reply: %s", zmq_strerror(errno));
            rc = -1;
        }
        if (rc != 0)
            req_destroy(&q->rep);
    }
    char *unused;
    req_t *done = rc == 0 ? req_new(CW_STORE_EV_DONE, 0, 0, 0, &unused) : NULL;
    if (done) {
        done->rep.status = CW_OK;
        done->rep.batch = ++t->batch;
        if (send_obj(t->pipe, done, 0) != 0) {
            req_destroy(&done->rep);
            rc = -1;
        }
    }
    if (flush && (rc != 0 || send_obj(t->pipe, flush, 0) != 0)) {
        req_destroy(&flush->rep);
        rc = -1;
    }
    return rc;
}

static void actor_task(zsock_t *pipe, void *args)
{
    task_t t = {0};
    t.shared = args;
    t.store = t.shared->store;
    t.pipe = zsock_resolve(pipe);
    t.reqs = t.shared->reqs;
    zsock_set_sndhwm(pipe, (int) t.shared->max_queued);
    zsock_set_rcvhwm(pipe, (int) t.shared->max_queued);
    publish_stats(&t, 0);
    zsock_signal(pipe, 0);
    int term = 0;
    while (!term) {
        req_t *q = NULL;
        int got = recv_obj(t.pipe, &q, 0);
        if (got < 0)
            break;       /* the pipe is gone */
        if (got == 0)
            break;       /* "$TERM": nothing follows it */
        if (got == 2)
            continue;
        size_t n = 0;
        t.reqs[n++] = q;
        while (n < MAX_GROUP) {
            got = recv_obj(t.pipe, &q, ZMQ_DONTWAIT);
            if (got < 0)
                break;
            if (got == 0) {
                term = 1;
                break;
            }
            if (got == 1)
                t.reqs[n++] = q;
        }
        if (process(&t, n) != 0)
            break;
    }
    /* Whatever is still in the pipe is ours (invariant 3); the router
     * sends nothing once it sees `exited`. */
    atomic_store(&t.shared->exited, 1);
    req_t *q = NULL;
    int got;
    while ((got = recv_obj(t.pipe, &q, ZMQ_DONTWAIT)) >= 0)
        if (got == 1)
            req_destroy(&q->rep);
    cw_store_close(&t.store);
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
    a->reqs = calloc(MAX_GROUP, sizeof(req_t *));
    if (a->reqs)
        a->actor = cw_store_thread_start(actor_task, a);   /* returns once the task runs */
    if (!a->actor) {
        cw_store_close(&a->store);
        free(a->reqs);
        free(a);
        return NULL;
    }
    zsock_t *sock = cw_store_thread_sock(a->actor);
    zsock_set_sndhwm(sock, (int) a->max_queued);
    zsock_set_rcvhwm(sock, (int) a->max_queued);
    a->handle = zsock_resolve(sock);
    a->store = NULL;                 /* the thread's now */
    return a;
}

/* Frees every reply waiting and, unless the thread has stopped, pushes a
 * flush marker through the pipe and frees what comes back up to it (the
 * actor sends the marker after everything else of its group): then the
 * actor holds no object of ours, and "$TERM" finds it idle. Without
 * memory for the marker, replies sent after the drain are lost with the
 * pipe (logged). */
static void drain(cw_store_actor_t *a)
{
    char *unused;
    req_t *flush = req_new(REQ_FLUSH, 0, 0, 0, &unused);
    if (!flush)
        CW_ERROR("store actor: out of memory at shutdown; late replies may leak");
    bool sent = false;
    while (flush && !atomic_load(&a->exited)) {
        zmq_pollitem_t item = {a->handle, 0, (short) (ZMQ_POLLIN | (sent ? 0 : ZMQ_POLLOUT)), 0};
        if (zmq_poll(&item, 1, 100) < 0 && errno != EINTR)
            break;
        if (!sent && (item.revents & ZMQ_POLLOUT) &&
            send_obj(a->handle, flush, ZMQ_DONTWAIT) == 0)
            sent = true;
        req_t *q = NULL;
        int got;
        while ((got = recv_obj(a->handle, &q, ZMQ_DONTWAIT)) >= 0) {
            if (got != 1)
                continue;
            bool last = q == flush;
            req_destroy(&q->rep);
            if (last)
                return;
        }
    }
    if (flush && !sent)
        req_destroy(&flush->rep);
    req_t *q = NULL;
    int got;
    while ((got = recv_obj(a->handle, &q, ZMQ_DONTWAIT)) >= 0)
        if (got == 1)
            req_destroy(&q->rep);
}

void cw_store_actor_destroy(cw_store_actor_t **p)
{
    if (!p || !*p)
        return;
    cw_store_actor_t *a = *p;
    drain(a);
    cw_store_thread_stop(&a->actor); /* "$TERM", then joins the thread */
    free(a->reqs);
    free(a);
    *p = NULL;
}

zsock_t *cw_store_actor_sock(cw_store_actor_t *a)
{
    return a ? cw_store_thread_sock(a->actor) : NULL;
}

/* Hands q to the actor: CW_OK (the actor's now), else q is freed. */
static int submit(cw_store_actor_t *a, req_t *q)
{
    if (send_obj(a->handle, q, ZMQ_DONTWAIT) == 0)
        return CW_OK;
    int e = errno;
    req_destroy(&q->rep);
    return e == EAGAIN ? CW_FLOODED : CW_SHUTTING_DOWN;
}

int cw_store_actor_append(cw_store_actor_t *a, uint64_t token, const cw_store_msg_t *m)
{
    int ask_only = m && m->n_rcpts == 0 && m->message_id && *m->message_id; /* store.h */
    if (!a || !m || !m->sender || (!ask_only && (!m->rcpts || m->n_rcpts == 0)) ||
        m->n_rcpts > UINT32_MAX ||
        (!m->text && m->text_len) || m->text_len > MAX_ARG_LEN || m->clock_len > MAX_ARG_LEN ||
        (m->clock_len && !m->clock))
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
    req_t *q = req_new(CW_STORE_REQ_APPEND, token, m->n_rcpts, strings, &at);
    if (!q)
        return CW_ERR_NOMEM;
    cw_store_msg_t *qm = &q->msg;
    qm->sender = cw_store_put(&at, m->sender, sender_len);
    qm->message_id = cw_store_put(&at, mid, mid_len);
    qm->text = cw_store_put(&at, m->text, m->text_len);
    qm->text_len = m->text_len;
    const char *clock = cw_store_put(&at, m->clock, m->clock_len);
    qm->clock = m->clock_len ? (const uint8_t *) clock : NULL;
    qm->clock_len = m->clock_len;
    qm->timestamp_us = m->timestamp_us;
    qm->ttl_s = m->ttl_s;
    qm->broadcast = m->broadcast ? 1 : 0;
    qm->rcpts = q->rep.rcpts;
    qm->n_rcpts = m->n_rcpts;
    for (size_t i = 0; i < m->n_rcpts; i++)
        q->rep.rcpts[i].name = cw_store_put(&at, m->rcpts[i].name, strlen(m->rcpts[i].name));
    return submit(a, q);
}

/* A request naming one user (or, WHO_PAGE, a name to start after). */
static int user_request(cw_store_actor_t *a, int kind, uint64_t token, const char *user,
                        uint64_t arg, uint32_t n)
{
    if (!a || !user)
        return CW_ERR_INVALID;
    size_t len = strlen(user);
    char *at;
    req_t *q = req_new(kind, token, 0, len + 1, &at);
    if (!q)
        return CW_ERR_NOMEM;
    q->user = cw_store_put(&at, user, len);
    q->arg = arg;
    q->n = n;
    return submit(a, q);
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
    if (!a || !user || (!clock && clock_len) || clock_len > MAX_ARG_LEN)
        return CW_ERR_INVALID;
    size_t len = strlen(user);
    char *at;
    req_t *q = req_new(CW_STORE_REQ_CLOCK, token, 0, len + 1 + clock_len + 1, &at);
    if (!q)
        return CW_ERR_NOMEM;
    q->user = cw_store_put(&at, user, len);
    q->blob = (const uint8_t *) cw_store_put(&at, clock, clock_len);
    q->blob_len = clock_len;
    q->arg = own;
    return submit(a, q);
}

int cw_store_actor_claim_session(cw_store_actor_t *a, uint64_t token, const char *user)
{
    return user_request(a, CW_STORE_REQ_CLAIM_SESSION, token, user, 0, 0);
}

int cw_store_actor_release_session(cw_store_actor_t *a, uint64_t token, const char *user)
{
    return user_request(a, CW_STORE_REQ_RELEASE_SESSION, token, user, 0, 0);
}

int cw_store_actor_who_page(cw_store_actor_t *a, uint64_t token, const char *after,
                            uint32_t max)
{
    return user_request(a, CW_STORE_REQ_WHO_PAGE, token, after ? after : "", 0, max);
}

int cw_store_actor_live_send(cw_store_actor_t *a, uint64_t token, const char *const *users,
                             size_t n_users)
{
    if (!a || !users || n_users == 0 || n_users > UINT32_MAX)
        return CW_ERR_INVALID;
    size_t strings = 0;
    for (size_t i = 0; i < n_users; i++) {
        if (!users[i])
            return CW_ERR_INVALID;
        strings += strlen(users[i]) + 1;
    }
    char *at;
    req_t *q = req_new(CW_STORE_REQ_LIVE_SEND, token, n_users, strings, &at);
    if (!q)
        return CW_ERR_NOMEM;
    for (size_t i = 0; i < n_users; i++)
        q->rep.rcpts[i].name = cw_store_put(&at, users[i], strlen(users[i]));
    return submit(a, q);
}

cw_store_reply_t *cw_store_actor_recv(cw_store_actor_t *a, int timeout_ms)
{
    if (!a)
        return NULL;
    for (;;) {
        if (timeout_ms != 0) {
            zmq_pollitem_t item = {a->handle, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&item, 1, timeout_ms) <= 0)
                return NULL;
        }
        req_t *q = NULL;
        int got = recv_obj(a->handle, &q, ZMQ_DONTWAIT);
        if (got < 0)
            return NULL;
        if (got == 1)
            return &q->rep;
        CW_ERROR("store actor: dropping a stray frame on the reply pipe");
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
/* The operations table (store_if.h)                                         */

#define ACTOR(s) ((cw_store_actor_t *) (void *) (s))

static int sq_open(const char *where, const cw_store_config_t *cfg, cw_store_backend_t **out,
                   cw_store_loaded_t *loaded, char *err, size_t errlen)
{
    *out = NULL;
    memset(loaded, 0, sizeof *loaded);
    cw_store_options_t opt;
    cw_store_options_init(&opt);
    opt.queue_quota = cfg->queue_quota;
    opt.retention = cfg->retention;
    opt.default_ttl_s = cfg->default_ttl_s;
    opt.dedup_window_s = cfg->dedup_window_s;
    opt.recover = cfg->recover;
    cw_store_t *store = NULL;
    int rc = cw_store_open(where, &opt, &store, err, errlen);
    if (rc != CW_OK)
        return rc;
    rc = cw_store_list_users(store, &loaded->users, &loaded->n_users);
    if (rc != CW_OK) {
        snprintf(err, errlen, "cannot read the user log: %s", cw_store_errmsg(store));
        cw_store_close(&store);
        return rc;
    }
    rc = cw_store_list_clocks(store, &loaded->clocks, &loaded->n_clocks);
    if (rc != CW_OK) {
        snprintf(err, errlen, "cannot read the resume clocks: %s", cw_store_errmsg(store));
        cw_store_loaded_free(loaded);
        cw_store_close(&store);
        return rc;
    }
    cw_store_actor_t *a = cw_store_actor_new(&store, cfg->max_queued);
    if (!a) {
        cw_store_loaded_free(loaded);
        snprintf(err, errlen, "cannot start the store thread");
        return CW_INTERNAL;
    }
    *out = (cw_store_backend_t *) (void *) a;
    return CW_OK;
}

static void sq_close(cw_store_backend_t **p)
{
    if (!p)
        return;
    cw_store_actor_t *a = ACTOR(*p);
    cw_store_actor_destroy(&a);
    *p = NULL;
}

static void *sq_poll_handle(cw_store_backend_t *s)
{
    return s ? ACTOR(s)->handle : NULL;
}

static cw_store_reply_t *sq_recv(cw_store_backend_t *s, int timeout_ms)
{
    return cw_store_actor_recv(ACTOR(s), timeout_ms);
}

static int sq_append(cw_store_backend_t *s, uint64_t token, const cw_store_msg_t *msg)
{
    return cw_store_actor_append(ACTOR(s), token, msg);
}

static int sq_ack(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t up_to_seq,
                  int receipts)
{
    return cw_store_actor_ack_receipts(ACTOR(s), token, user, up_to_seq, receipts != 0);
}

static int sq_read(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t from_seq,
                   uint32_t max)
{
    return cw_store_actor_read(ACTOR(s), token, user, from_seq, max);
}

static int sq_history(cw_store_backend_t *s, uint64_t token, const char *user, uint32_t last_n)
{
    return cw_store_actor_history(ACTOR(s), token, user, last_n);
}

static int sq_add_user(cw_store_backend_t *s, uint64_t token, const char *user)
{
    return cw_store_actor_add_user(ACTOR(s), token, user);
}

static int sq_save_clock(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t own,
                         const uint8_t *clock, size_t clock_len)
{
    return cw_store_actor_save_clock(ACTOR(s), token, user, own, clock, clock_len);
}

static int sq_claim_session(cw_store_backend_t *s, uint64_t token, const char *user,
                            const uint8_t *sess, size_t sess_len, int resume)
{
    (void) sess;
    (void) sess_len;
    (void) resume;
    return cw_store_actor_claim_session(ACTOR(s), token, user);
}

static int sq_release_session(cw_store_backend_t *s, uint64_t token, const char *user)
{
    return cw_store_actor_release_session(ACTOR(s), token, user);
}

static int sq_live_send(cw_store_backend_t *s, uint64_t token, const char *const *users,
                        size_t n_users, const void *frame, size_t frame_len)
{
    (void) frame;
    (void) frame_len;
    return cw_store_actor_live_send(ACTOR(s), token, users, n_users);
}

static int sq_who_page(cw_store_backend_t *s, uint64_t token, const char *after, uint32_t max)
{
    return cw_store_actor_who_page(ACTOR(s), token, after, max);
}

static void sq_stats(cw_store_backend_t *s, cw_store_counters_t *out)
{
    cw_store_actor_stats(ACTOR(s), out);
}

const cw_store_ops_t cw_store_sqlite_ops = {
    .name = "sqlite",
    .shared = 0,
    .open = sq_open,
    .close = sq_close,
    .poll_handle = sq_poll_handle,
    .recv = sq_recv,
    .append = sq_append,
    .ack = sq_ack,
    .read = sq_read,
    .history = sq_history,
    .add_user = sq_add_user,
    .save_clock = sq_save_clock,
    .claim_session = sq_claim_session,
    .release_session = sq_release_session,
    .live_send = sq_live_send,
    .who_page = sq_who_page,
    .stats = sq_stats,
};
