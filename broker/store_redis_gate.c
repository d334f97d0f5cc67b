/*  store_redis_gate: the visibility gate and the events of the Redis store
 *  (store_if.h S1, S2, S5, S6; shared/SCALEOUT.md §4). Owns the claimed users'
 *  delivery state, what is known of every writer broker (completed
 *  batches, clean batches, lease), and the subscriptions (cw:n:{u} per
 *  claimed user; cw:done, cw:presence, cw:ev). Backend thread only.
 *
 *  Per claimed user, E is the emitted frontier: the highest seq raised as
 *  ENTRY. Entry E+1 (never another) is raised when
 *    - its writer completed its batch (done[B,inc] >= batch, from cw:done or
 *      this broker's own completion) or B's lease expired, and
 *    - its content is trustworthy: pub/sub content (or this broker's own
 *      copy) only when the writer announced that batch clean (every command
 *      answered at its first attempt, every WAIT satisfied at once: no ghost
 *      of a frozen, demoted primary can carry it); otherwise the buffered
 *      content is dropped and the queue re-read with the read script from
 *      E+1 at the slot's current primary, and what the read returns is
 *      judged by what was complete when the read was sent (a snapshot).
 *  Invariants:
 *    1. ENTRY seqs per user strictly increase by one; nothing is raised
 *       before the user's first read (E is then at least the acked seq).
 *    2. Content is buffered only from the subscription that is READY; LOST
 *       drops the buffered pub/sub content and READY re-reads (redis_cluster.h
 *       S1-S3: nothing arrives from a connection given up on).
 *    3. A gap (seq > E+1 arrives), conflicting content for one seq, a dirty
 *       or unknown-clean batch, an expired lease: a re-read, never a guess.
 *    4. Writers not heard from are asked for their lease (cw:b:{B}) every
 *       lease period while an entry waits on them: a dead writer's entries
 *       become visible when its lease is gone or names another incarnation.
 *    5. This broker's own writer is its current incarnation (rs_me_inc):
 *       after a fence the store adopts a new one between batches
 *       (rs_gate_reincarnate), and the old one counts as dead here as it
 *       does for the other brokers.
 *    6. A read that stopped at an entry whose writer is not complete yet
 *       (the stall) is not repeated at once for a gap behind it: the
 *       queue is read again when that writer's batch becomes visible (its
 *       DONE, its lease), and otherwise after a back-off doubling from
 *       STALL_BACKOFF_MIN_MS to one lease period while reads make no
 *       progress (a read that raised nothing), never in a tight loop.
 */
#include "store_redis_int.h"
#include "store.h"

#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CLEAN_BITS 8192        /* clean-batch window per writer */
#define READ_COUNT 256         /* entries per re-read */
#define STALL_BACKOFF_MIN_MS 10 /* first wait before re-reading a queue whose last read
                                   stopped at a writer not complete yet (invariant 6) */

typedef struct {
    char *b, *inc;
    int idx;
    uint64_t done;             /* highest batch known complete */
    int expired;               /* lease gone or another incarnation */
    int waited;                /* an entry waited on it: check the lease */
    int checking;
    int64_t next_check_ms;
    uint64_t clean_base;       /* bit i: batch clean_base + i announced clean */
    uint8_t clean[CLEAN_BITS / 8];
} writer_t;

typedef struct {
    uint64_t seq;
    int writer;
    uint64_t batch;
    uint32_t crc;
    int conflict;              /* another content for this seq was seen */
    char *payload;
    size_t len;
} bent_t;

typedef struct {
    char *name;
    uint64_t gen;              /* this claim's number (stale reads are dropped) */
    uint64_t E;
    int synced, ready, reading, want_read;
    int stall_writer;          /* the last read stopped at an entry of it; -1 none */
    uint64_t stall_batch;
    int64_t next_read_ms;      /* no re-read before this (invariant 6); 0 none */
    uint32_t stall_backoff_ms; /* the current back-off; 0 after progress */
    bent_t *buf;               /* sorted by seq */
    size_t n_buf, cap_buf;
} guser_t;

struct rs_gate {
    rs_t *t;
    zhashx_t *users;           /* name -> guser_t */
    zhashx_t *wkeys;           /* "b inc" -> writer_t */
    writer_t **writers;
    size_t n_writers, cap_writers;
    int me;
    uint64_t gens;
};

struct rs_snap {
    size_t n;
    uint64_t *done;
    uint8_t *expired;
};

/* ------------------------------------------------------------------------ */

static writer_t *writer_get(rs_gate_t *g, const char *b, size_t bl, const char *inc, size_t il)
{
    char key[300];
    if (bl + il + 2 > sizeof key)
        return NULL;
    memcpy(key, b, bl);
    key[bl] = ' ';
    memcpy(key + bl + 1, inc, il);
    key[bl + 1 + il] = 0;
    writer_t *w = zhashx_lookup(g->wkeys, key);
    if (w)
        return w;
    if (g->n_writers == g->cap_writers) {
        size_t cap = g->cap_writers ? g->cap_writers * 2 : 16;
        writer_t **n = realloc(g->writers, cap * sizeof *n);
        if (!n)
            return NULL;
        g->writers = n;
        g->cap_writers = cap;
    }
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->b = malloc(bl + 1);
    w->inc = malloc(il + 1);
    if (!w->b || !w->inc) {
        free(w->b);
        free(w->inc);
        free(w);
        return NULL;
    }
    memcpy(w->b, b, bl);
    w->b[bl] = 0;
    memcpy(w->inc, inc, il);
    w->inc[il] = 0;
    w->idx = (int) g->n_writers;
    w->clean_base = 1;
    g->writers[g->n_writers++] = w;
    zhashx_insert(g->wkeys, key, w);
    return w;
}

static void set_clean(writer_t *w, uint64_t batch)
{
    if (batch < w->clean_base)
        return;
    while (batch >= w->clean_base + CLEAN_BITS) { /* slide the window by half */
        memmove(w->clean, w->clean + CLEAN_BITS / 16, CLEAN_BITS / 16);
        memset(w->clean + CLEAN_BITS / 16, 0, CLEAN_BITS / 16);
        w->clean_base += CLEAN_BITS / 2;
    }
    uint64_t i = batch - w->clean_base;
    w->clean[i / 8] |= (uint8_t) (1u << (i % 8));
}

static int is_clean(const writer_t *w, uint64_t batch)
{
    if (batch < w->clean_base || batch >= w->clean_base + CLEAN_BITS)
        return 0;
    uint64_t i = batch - w->clean_base;
    return (w->clean[i / 8] >> (i % 8)) & 1;
}

static int visible_now(rs_gate_t *g, int wi, uint64_t batch)
{
    writer_t *w = g->writers[wi];
    if (wi == g->me)
        return batch <= w->done;
    if (w->expired || batch <= w->done)
        return 1;
    w->waited = 1;
    return 0;
}

static void guser_free(void **p)
{
    guser_t *u = *p;
    if (!u)
        return;
    for (size_t i = 0; i < u->n_buf; i++)
        free(u->buf[i].payload);
    free(u->buf);
    free(u->name);
    free(u);
    *p = NULL;
}

static void writer_free(void **p)
{
    writer_t *w = *p;
    if (!w)
        return;
    free(w->b);
    free(w->inc);
    free(w);
    *p = NULL;
}

rs_gate_t *rs_gate_new(rs_t *t)
{
    rs_gate_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->t = t;
    g->users = zhashx_new();
    g->wkeys = zhashx_new();
    if (!g->users || !g->wkeys) {
        rs_gate_destroy(&g);
        return NULL;
    }
    zhashx_set_destructor(g->users, guser_free);
    zhashx_set_destructor(g->wkeys, writer_free);
    const char *b = rs_me_b(t), *inc = rs_me_inc(t);
    writer_t *me = writer_get(g, b, strlen(b), inc, strlen(inc));
    if (!me) {
        rs_gate_destroy(&g);
        return NULL;
    }
    g->me = me->idx;
    cw_rc_t *rc = rs_rc(t);
    cw_rc_subscribe(rc, "cw:done", 7, 0);
    cw_rc_subscribe(rc, "cw:presence", 11, 0);
    cw_rc_subscribe(rc, "cw:ev", 5, 0);
    return g;
}

void rs_gate_destroy(rs_gate_t **p)
{
    rs_gate_t *g = *p;
    if (!g)
        return;
    zhashx_destroy(&g->users);
    zhashx_destroy(&g->wkeys);   /* frees the writers */
    free(g->writers);
    free(g);
    *p = NULL;
}

/* ------------------------------------------------------------------------ */
/* Events                                                                    */

static rs_req_t *event_new(int kind, const char *user, size_t extra, char **at)
{
    size_t len = user ? strlen(user) : 0;
    rs_req_t *q = rs_req_new(kind, 0, 0, len + 1 + extra, at);
    if (!q)
        return NULL;
    q->rep.status = CW_OK;
    q->rep.user = rs_put(at, user ? user : "", len);
    return q;
}

static void raise_entry(rs_gate_t *g, guser_t *u, cw_store_entry_t *e)
{
    /* An entry whose TTL ran out is raised as a read reports it (CW_EXPIRED,
     * no text), once: it is removed now, so no read reports it again. */
    if (e->status == CW_OK && e->expires_us && e->expires_us <= rs_now_us()) {
        e->status = CW_EXPIRED;
        e->text = "";
        e->text_len = 0;
        rs_drop_expired(g->t, u->name, &e->seq, 1);
    }
    char *at;
    rs_req_t *q = event_new(CW_STORE_EV_ENTRY, u->name, 0, &at);
    cw_store_entry_t *arr = q ? calloc(1, sizeof *arr) : NULL;
    if (!arr) {
        CW_ERROR("redis store: out of memory raising entry %llu of %s",
                 (unsigned long long) e->seq, u->name);
        free(e->mem_);
        if (q)
            rs_req_destroy(&q->rep);
        return;
    }
    arr[0] = *e;
    q->rep.entries = arr;
    q->rep.n_entries = 1;
    q->rep.seq = e->seq;
    rs_emit(g->t, q);
}

/* ------------------------------------------------------------------------ */
/* The gate                                                                  */

static void resync(rs_gate_t *g, guser_t *u);

static void buf_drop(guser_t *u, size_t from, size_t to)
{
    if (from == to)
        return; /* also keeps memmove away from an unallocated buffer */
    for (size_t i = from; i < to; i++)
        free(u->buf[i].payload);
    memmove(u->buf + from, u->buf + to, (u->n_buf - to) * sizeof *u->buf);
    u->n_buf -= to - from;
}

static void buf_clear(guser_t *u)
{
    buf_drop(u, 0, u->n_buf);
}

static void buf_insert(guser_t *u, const bent_t *x)
{
    size_t i = 0;
    while (i < u->n_buf && u->buf[i].seq < x->seq)
        i++;
    if (i < u->n_buf && u->buf[i].seq == x->seq) {
        bent_t *o = &u->buf[i];
        if (o->writer != x->writer || o->batch != x->batch || o->crc != x->crc)
            o->conflict = 1;
        free(x->payload);
        return;
    }
    if (u->n_buf == u->cap_buf) {
        size_t cap = u->cap_buf ? u->cap_buf * 2 : 8;
        bent_t *n = realloc(u->buf, cap * sizeof *n);
        if (!n) {
            free(x->payload);
            u->want_read = 1; /* content lost: read it */
            return;
        }
        u->buf = n;
        u->cap_buf = cap;
    }
    memmove(u->buf + i + 1, u->buf + i, (u->n_buf - i) * sizeof *u->buf);
    u->buf[i] = *x;
    u->n_buf++;
}

/* Raises what may be raised from the buffer (invariants 1, 3). */
static void gate_run(rs_gate_t *g, guser_t *u)
{
    if (!u->synced) {
        return;
    }
    size_t k = 0;
    while (k < u->n_buf && u->buf[k].seq <= u->E)
        k++;
    buf_drop(u, 0, k);
    while (u->n_buf) {
        bent_t *x = &u->buf[0];
        if (x->seq > u->E + 1 || x->conflict) {
            u->want_read = 1;
            break;
        }
        if (!visible_now(g, x->writer, x->batch))
            break;
        if (!is_clean(g->writers[x->writer], x->batch)) {
            u->want_read = 1; /* dirty, unknown, or released by an expired lease */
            buf_clear(u);
            break;
        }
        cw_store_entry_t e;
        rs_w_t w = {0};
        uint32_t crc;
        int rc = rs_entry_unpack(x->seq, x->payload, x->len, &e, &w, &crc);
        if (rc == 0 && e.status == CW_DAMAGED) {
            free(e.mem_);
            rc = -2;
        }
        if (rc != 0) {
            u->want_read = 1;
            buf_clear(u);
            break;
        }
        u->E = x->seq;
        raise_entry(g, u, &e);
        buf_drop(u, 0, 1);
    }
    if (u->want_read)
        resync(g, u);
}

/* A reason to read u's queue now (its stall ended, its subscription is
 * READY): the back-off of invariant 6 ends. */
static void read_now(guser_t *u)
{
    u->next_read_ms = 0;
    u->stall_backoff_ms = 0;
    u->want_read = 1;
}

static void regate_all(rs_gate_t *g)
{
    for (guser_t *u = zhashx_first(g->users); u; u = zhashx_next(g->users)) {
        if (u->stall_writer >= 0 && !u->reading &&
            visible_now(g, u->stall_writer, u->stall_batch)) {
            u->stall_writer = -1;
            read_now(u);
        }
        if (u->n_buf || u->want_read)
            gate_run(g, u);
    }
}

typedef struct {
    rs_gate_t *g;
    char *name;
    uint64_t gen;
    rs_snap_t *snap;
} readctx_t;

static void read_cb(void *arg, int status, redisReply *r)
{
    readctx_t *c = arg;
    rs_gate_t *g = c->g;
    guser_t *u = g ? zhashx_lookup(g->users, c->name) : NULL;
    if (!u || u->gen != c->gen) {
        rs_snap_free(&c->snap);
        free(c->name);
        free(c);
        return;
    }
    u->reading = 0;
    long long ok = -2;
    if (status == CW_OK && r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_INTEGER)
        ok = r->element[0]->integer;
    if (ok == -1) { /* no such user: nothing to deliver, ever, until it exists */
        u->synced = 1;
        goto out;
    }
    if (ok != 0 || r->elements < 4 || r->element[1]->type != REDIS_REPLY_INTEGER) {
        u->want_read = 1; /* retried from the tick */
        goto out;
    }
    uint64_t acked = (uint64_t) r->element[1]->integer;
    /* SC_READ starts after `acked`: entries up to it need no ENTRY, and an
     * Ack beyond E (seqs this broker had not raised yet: a client that got
     * them through another broker) must not leave E behind, or every later
     * entry would look like a gap and the read would stop before it. */
    if (u->E < acked)
        u->E = acked;
    u->synced = 1;
    const redisReply *es = r->element[3];
    size_t raised = 0, seen = 0;
    u->stall_writer = -1;
    for (size_t i = 0; es->type == REDIS_REPLY_ARRAY && i < es->elements; i++) {
        const redisReply *e = es->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
            e->element[0]->type != REDIS_REPLY_STRING || e->element[1]->type != REDIS_REPLY_ARRAY)
            break;
        seen++;
        uint64_t seq = strtoull(e->element[0]->str + 2, NULL, 10);
        if (seq <= u->E)
            continue;
        if (seq != u->E + 1)
            break;
        const redisReply *f = e->element[1];
        const char *fv[32];
        size_t fl[32];
        size_t nf = f->elements < 32 ? f->elements : 32;
        for (size_t k = 0; k < nf; k++) {
            fv[k] = f->element[k]->type == REDIS_REPLY_STRING ? f->element[k]->str : "";
            fl[k] = f->element[k]->type == REDIS_REPLY_STRING ? (size_t) f->element[k]->len : 0;
        }
        cw_store_entry_t ent;
        rs_w_t w;
        uint32_t crc;
        if (rs_entry_decode(seq, fv, fl, nf, 0, 0, &ent, &w, &crc) != 0) {
            u->want_read = 1;
            break;
        }
        uint64_t own_done = g->writers[g->me]->done;
        if (w.b && !rs_snap_visible(g, c->snap, &w, own_done)) {
            writer_t *wr = writer_get(g, w.b, w.b_len, w.inc, w.inc_len);
            free(ent.mem_);
            if (wr) {
                u->stall_writer = wr->idx;
                u->stall_batch = w.batch;
                wr->waited = 1;
            }
            break;
        }
        u->E = seq;
        raise_entry(g, u, &ent);
        raised++;
    }
    if (seen == READ_COUNT && u->stall_writer < 0)
        u->want_read = 1; /* more follow */
    if (u->stall_writer >= 0 && visible_now(g, u->stall_writer, u->stall_batch)) {
        u->stall_writer = -1; /* became visible while the read ran */
        read_now(u);
    } else if (u->stall_writer >= 0 && !raised) {
        /* stopped where it stopped before: the next read waits (invariant
         * 6), unless the writer completes first (regate_all) */
        uint32_t cap = rs_cfg(g->t)->lease_ms ? rs_cfg(g->t)->lease_ms : 1000;
        uint32_t next = u->stall_backoff_ms ? u->stall_backoff_ms * 2 : STALL_BACKOFF_MIN_MS;
        u->stall_backoff_ms = next < cap ? next : cap;
        u->next_read_ms = rs_now_ms() + u->stall_backoff_ms;
        CW_DEBUG("redis store: %s's queue read stopped again after seq %llu (writer %s, batch "
                 "%llu not complete): next read in %u ms", u->name, (unsigned long long) u->E,
                 g->writers[u->stall_writer]->b, (unsigned long long) u->stall_batch,
                 u->stall_backoff_ms);
    } else {
        u->stall_backoff_ms = 0;
        u->next_read_ms = 0;
    }
out:
    rs_snap_free(&c->snap);
    free(c->name);
    free(c);
    gate_run(g, u);
}

static void resync(rs_gate_t *g, guser_t *u)
{
    u->want_read = 1;
    if (!u->ready || u->reading)
        return;
    if (u->next_read_ms && rs_now_ms() < u->next_read_ms)
        return; /* invariant 6: the tick reads when the back-off is over */
    readctx_t *c = calloc(1, sizeof *c);
    char *name = c ? strdup(u->name) : NULL;
    rs_snap_t *snap = name ? rs_gate_snap(g) : NULL;
    if (!snap) {
        free(name);
        free(c);
        return; /* retried from the tick */
    }
    c->g = g;
    c->name = name;
    c->gen = u->gen;
    c->snap = snap;
    char k1[200], k2[200], from[24], cnt[24];
    rs_key(k1, sizeof k1, "cw:u:", u->name, NULL);
    rs_key(k2, sizeof k2, "cw:q:", u->name, NULL);
    snprintf(from, sizeof from, "%llu", (unsigned long long) u->E + 1);
    snprintf(cnt, sizeof cnt, "%d", READ_COUNT);
    const char *argv[] = {"2", k1, k2, from, cnt};
    size_t lens[] = {1, strlen(k1), strlen(k2), strlen(from), strlen(cnt)};
    if (rs_script(g->t, SC_READ, 2, 5, argv, lens, read_cb, c) != CW_OK) {
        rs_snap_free(&c->snap);
        free(c->name);
        free(c);
        return;
    }
    u->reading = 1;
    u->want_read = 0;
    CW_DEBUG("redis store: reading %s's queue from seq %s", u->name, from);
}

/* ------------------------------------------------------------------------ */

void rs_gate_claim(rs_gate_t *g, const char *user)
{
    if (zhashx_lookup(g->users, user))
        return;
    guser_t *u = calloc(1, sizeof *u);
    if (!u || !(u->name = strdup(user))) {
        free(u);
        CW_ERROR("redis store: out of memory claiming %s", user);
        return;
    }
    u->gen = ++g->gens;
    u->stall_writer = -1;
    u->want_read = 1;
    zhashx_insert(g->users, user, u);
    char ch[200];
    size_t n = rs_key(ch, sizeof ch, "cw:n:", user, NULL);
    int rc = cw_rc_subscribe(rs_rc(g->t), ch, n, 1);
    if (rc != CW_OK) /* never READY: nothing from other brokers reaches the user */
        CW_ERROR("redis store: cannot subscribe to %s's entries: %s", user, cw_status_name(rc));
}

void rs_gate_release(rs_gate_t *g, const char *user)
{
    if (!zhashx_lookup(g->users, user))
        return;
    zhashx_delete(g->users, user);
    char ch[200];
    size_t n = rs_key(ch, sizeof ch, "cw:n:", user, NULL);
    cw_rc_unsubscribe(rs_rc(g->t), ch, n, 1);
}

void rs_gate_own_done(rs_gate_t *g, uint64_t batch, int clean)
{
    writer_t *me = g->writers[g->me];
    if (batch > me->done)
        me->done = batch;
    if (clean)
        set_clean(me, batch);
    regate_all(g);
}

void rs_gate_own_entry(rs_gate_t *g, const char *user, uint64_t seq, const char *payload,
                       size_t len, uint64_t batch)
{
    guser_t *u = zhashx_lookup(g->users, user);
    if (!u || !payload)
        return;
    cw_store_entry_t e;
    rs_w_t w = {0};
    uint32_t crc = 0;
    if (rs_entry_unpack(seq, payload, len, &e, &w, &crc) != 0)
        return;
    free(e.mem_);
    bent_t x = {seq, g->me, batch, crc, 0, malloc(len ? len : 1), len};
    if (!x.payload)
        return;
    memcpy(x.payload, payload, len);
    buf_insert(u, &x);
}

rs_snap_t *rs_gate_snap(rs_gate_t *g)
{
    rs_snap_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->n = g->n_writers;
    s->done = calloc(s->n ? s->n : 1, sizeof *s->done);
    s->expired = calloc(s->n ? s->n : 1, 1);
    if (!s->done || !s->expired) {
        rs_snap_free(&s);
        return NULL;
    }
    for (size_t i = 0; i < s->n; i++) {
        s->done[i] = g->writers[i]->done;
        s->expired[i] = (uint8_t) g->writers[i]->expired;
    }
    return s;
}

void rs_snap_free(rs_snap_t **p)
{
    rs_snap_t *s = *p;
    if (!s)
        return;
    free(s->done);
    free(s->expired);
    free(s);
    *p = NULL;
}

int rs_snap_visible(rs_gate_t *g, const rs_snap_t *snap, const rs_w_t *w, uint64_t own_done)
{
    if (!w->b)
        return 1; /* no writer recorded (damaged): nothing to wait for */
    writer_t *wr = writer_get(g, w->b, w->b_len, w->inc, w->inc_len);
    if (!wr)
        return 0;
    if (wr->idx == g->me)
        return w->batch <= own_done;
    if (!snap || (size_t) wr->idx >= snap->n) {
        wr->waited = 1;
        return 0;
    }
    if (snap->expired[wr->idx] || w->batch <= snap->done[wr->idx])
        return 1;
    wr->waited = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Subscriptions                                                             */

/* "cw:n:{user}" -> the user (into buf); 0 or -1. */
static int channel_user(const char *ch, size_t len, char *buf, size_t size)
{
    if (len < 7 || memcmp(ch, "cw:n:{", 6) != 0 || ch[len - 1] != '}' || len - 7 >= size)
        return -1;
    memcpy(buf, ch + 6, len - 7);
    buf[len - 7] = 0;
    return 0;
}

static void on_user_message(rs_gate_t *g, guser_t *u, const char *p, size_t len)
{
    rs_t *t = g->t;
    if (len < 2)
        return;
    if (p[0] == 'E') {
        const char *comma = memchr(p, ',', len);
        if (!comma)
            return;
        uint64_t seq = strtoull(p + 1, NULL, 10);
        size_t plen = len - (size_t) (comma - p);
        cw_store_entry_t e;
        rs_w_t w = {0};
        uint32_t crc = 0;
        int rc = rs_entry_unpack(seq, comma, plen, &e, &w, &crc);
        int bad = rc != 0 || !w.b || e.status == CW_DAMAGED;
        if (rc == 0)
            free(e.mem_);
        if (bad) {
            u->want_read = 1;
            gate_run(g, u);
            return;
        }
        writer_t *wr = writer_get(g, w.b, w.b_len, w.inc, w.inc_len);
        if (!wr)
            return;
        bent_t x = {seq, wr->idx, w.batch, crc, 0, malloc(plen), plen};
        if (!x.payload)
            return;
        memcpy(x.payload, comma, plen);
        if (seq > u->E)
            buf_insert(u, &x);
        else
            free(x.payload);
        gate_run(g, u);
    } else if (p[0] == 'L') {
        const char *comma = memchr(p, ',', len);
        if (!comma)
            return;
        size_t flen = len - (size_t) (comma + 1 - p);
        char *at;
        rs_req_t *q = event_new(CW_STORE_EV_LIVE, u->name, flen + 1, &at);
        if (!q)
            return;
        q->rep.seq = strtoull(p + 1, NULL, 10);
        q->rep.frame = rs_put(&at, comma + 1, flen);
        q->rep.frame_len = flen;
        rs_emit(t, q);
    } else if (p[0] == 'T') {
        const char *sp = memchr(p, ' ', len);
        if (!sp)
            return;
        size_t bl = (size_t) (sp - p - 1), il = len - (size_t) (sp + 1 - p);
        if (bl == strlen(rs_me_b(t)) && memcmp(p + 1, rs_me_b(t), bl) == 0 &&
            il == strlen(rs_me_inc(t)) && memcmp(sp + 1, rs_me_inc(t), il) == 0) {
            char *at;
            rs_req_t *q = event_new(CW_STORE_EV_TAKEOVER, u->name, 0, &at);
            char name[CW_NAME_MAX_HARD * 4 + 1];
            snprintf(name, sizeof name, "%s", u->name);
            rs_gate_release(g, name);
            if (q)
                rs_emit(t, q);
        }
    }
}

static void on_done(rs_gate_t *g, const char *p, size_t len)
{
    rs_w_t w;
    char buf[300];
    if (len >= sizeof buf)
        return;
    memcpy(buf, p, len);
    buf[len] = 0;
    char *sp = strrchr(buf, ' ');
    if (!sp)
        return;
    int clean = strcmp(sp + 1, "clean") == 0, closed = strcmp(sp + 1, "closed") == 0;
    *sp = 0;
    if (rs_w_parse(buf, strlen(buf), &w) != 0)
        return;
    if (closed) {
        rs_gate_writer_closed(g, w.b, w.b_len, w.inc, w.inc_len, w.batch);
        return;
    }
    writer_t *wr = writer_get(g, w.b, w.b_len, w.inc, w.inc_len);
    if (!wr || wr->idx == g->me)
        return;
    if (clean)
        set_clean(wr, w.batch);
    if (w.batch > wr->done) {
        wr->done = w.batch;
        regate_all(g);
    }
}

void rs_gate_on_sub(rs_gate_t *g, int event, const char *ch, size_t ch_len, int sharded,
                    const char *payload, size_t len)
{
    rs_t *t = g->t;
    if (sharded) {
        char name[256];
        if (channel_user(ch, ch_len, name, sizeof name) != 0)
            return;
        guser_t *u = zhashx_lookup(g->users, name);
        if (!u)
            return;
        if (event == CW_RC_SUB_READY) {
            u->ready = 1;
            read_now(u);
            resync(g, u);
        } else if (event == CW_RC_SUB_LOST) {
            u->ready = 0;
            buf_clear(u);
            u->want_read = 1;
        } else {
            on_user_message(g, u, payload, len);
        }
        return;
    }
    if (event == CW_RC_SUB_LOST && ch_len == 7 && memcmp(ch, "cw:done", 7) == 0) {
        for (size_t i = 0; i < g->n_writers; i++)
            g->writers[i]->next_check_ms = 0; /* DONEs may have been missed */
        return;
    }
    if (event != CW_RC_SUB_MESSAGE)
        return;
    if (ch_len == 7 && memcmp(ch, "cw:done", 7) == 0) {
        on_done(g, payload, len);
        return;
    }
    const char *me = rs_me_b(t);
    size_t ml = strlen(me);
    if (ch_len == 11 && memcmp(ch, "cw:presence", 11) == 0) {
        /* "1|0 <broker> <user>" */
        if (len < 4 || (payload[0] != '0' && payload[0] != '1') || payload[1] != ' ')
            return;
        const char *sp = memchr(payload + 2, ' ', len - 2);
        if (!sp || ((size_t) (sp - payload - 2) == ml && memcmp(payload + 2, me, ml) == 0))
            return;
        char user[256];
        size_t ul = len - (size_t) (sp + 1 - payload);
        if (!ul || ul >= sizeof user)
            return;
        memcpy(user, sp + 1, ul);
        user[ul] = 0;
        char *at;
        rs_req_t *q = event_new(CW_STORE_EV_PRESENCE, user, 0, &at);
        if (q) {
            q->rep.created = payload[0] == '1';
            rs_emit(t, q);
        }
    } else if (ch_len == 5 && memcmp(ch, "cw:ev", 5) == 0) {
        /* "U <broker> <created_us> <user>" */
        char buf[400];
        if (len >= sizeof buf || len < 3 || payload[0] != 'U')
            return;
        memcpy(buf, payload, len);
        buf[len] = 0;
        char *b = buf + 2, *sp1 = strchr(b, ' '), *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
        if (!sp2)
            return;
        *sp1 = 0;
        if (strcmp(b, me) == 0)
            return;
        const char *user = sp2 + 1;
        if (!*user)
            return;
        char *at;
        rs_req_t *q = event_new(CW_STORE_EV_NEW_USER, user, 0, &at);
        cw_store_user_t *us = q ? calloc(1, sizeof *us) : NULL;
        char *name = us ? strdup(user) : NULL;
        if (!name) {
            free(us);
            if (q)
                rs_req_destroy(&q->rep);
            return;
        }
        us->name = name;
        us->created_us = strtoull(sp1 + 1, NULL, 10);
        q->rep.users = us;
        q->rep.n_users = 1;
        q->rep.created = 1;
        rs_emit(t, q);
    }
}

/* ------------------------------------------------------------------------ */
/* Leases                                                                    */

typedef struct {
    rs_gate_t *g;
    int idx;
} leasectx_t;

/* Applies a lease read (HMGET cw:b:{B} inc done) to writer w: expired when
 * the lease is gone or names another incarnation, else done moves up.
 * 1 if that changed what is visible. */
static int writer_apply_lease(writer_t *w, const redisReply *r)
{
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        return 0;
    const redisReply *inc = r->element[0], *done = r->element[1];
    if (inc->type != REDIS_REPLY_STRING || strcmp(inc->str, w->inc) != 0) {
        if (w->expired)
            return 0;
        w->expired = 1;
        CW_INFO("redis store: broker %s (incarnation %s) has no lease: its entries are visible",
                w->b, w->inc);
        return 1;
    }
    if (done->type == REDIS_REPLY_STRING) {
        uint64_t d = strtoull(done->str, NULL, 10);
        if (d > w->done) {
            w->done = d;
            return 1;
        }
    }
    return 0;
}

static void lease_cb(void *arg, int status, redisReply *r)
{
    leasectx_t *c = arg;
    rs_gate_t *g = c->g;
    writer_t *w = g->writers[c->idx];
    free(c);
    w->checking = 0;
    if (status != CW_OK || !r || r->type == REDIS_REPLY_ERROR)
        return;
    if (writer_apply_lease(w, r))
        regate_all(g);
}

int rs_gate_writer_learn(rs_gate_t *g, const rs_w_t *w, const redisReply *r)
{
    if (!w->b)
        return 0;
    writer_t *wr = writer_get(g, w->b, w->b_len, w->inc, w->inc_len);
    if (!wr || wr->idx == g->me || !writer_apply_lease(wr, r))
        return 0;
    regate_all(g);
    return 1;
}

int rs_gate_writer_closed(rs_gate_t *g, const char *b, size_t bl, const char *inc, size_t il,
                          uint64_t done)
{
    writer_t *wr = writer_get(g, b, bl, inc, il);
    if (!wr || wr->idx == g->me || wr->expired)
        return 0;
    if (done > wr->done)
        wr->done = done;
    wr->expired = 1;
    CW_INFO("redis store: broker %s (incarnation %s) closed its store: its entries are visible",
            wr->b, wr->inc);
    regate_all(g);
    return 1;
}

int rs_gate_reincarnate(rs_gate_t *g)
{
    const char *b = rs_me_b(g->t), *inc = rs_me_inc(g->t);
    writer_t *old = g->writers[g->me];
    writer_t *me = writer_get(g, b, strlen(b), inc, strlen(inc));
    if (!me)
        return -1;
    if (me == old)
        return 0;
    me->done = old->done; /* batch numbers go on: the new one's start above it */
    me->expired = 0;
    old->expired = 1;
    g->me = me->idx;
    regate_all(g);
    return 0;
}

void rs_gate_tick(rs_gate_t *g, int64_t now_ms)
{
    const cw_store_config_t *cfg = rs_cfg(g->t);
    for (size_t i = 0; i < g->n_writers; i++) {
        writer_t *w = g->writers[i];
        if ((int) i == g->me || w->expired || !w->waited || w->checking ||
            now_ms < w->next_check_ms)
            continue;
        leasectx_t *c = malloc(sizeof *c);
        if (!c)
            continue;
        c->g = g;
        c->idx = (int) i;
        char k[200];
        rs_key(k, sizeof k, "cw:b:", w->b, NULL);
        const char *argv[] = {"HMGET", k, "inc", "done"};
        if (cw_rc_command(rs_rc(g->t), cw_rc_slot(k, strlen(k)), 4, argv, NULL, lease_cb, c) !=
            CW_OK) {
            free(c);
            continue;
        }
        w->checking = 1;
        w->next_check_ms = now_ms + cfg->lease_ms;
    }
    for (guser_t *u = zhashx_first(g->users); u; u = zhashx_next(g->users))
        if (u->want_read && u->ready && !u->reading)
            resync(g, u);
}
