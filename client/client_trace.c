/*  client_trace.c: libcauseway's causal event recorder (docs/CLOCKD.md,
 *  "For client writers").
 *
 *  Owns the events a session records at each change of its vector clock
 *  (a send after its tick, a delivery after merge and tick, a local event
 *  for a tick without a message) and their two destinations:
 *   - the trace file (cw_client_opts_t.trace_path): each event becomes one
 *     line in the canonical JSON-lines form of causeway-clockd (keys in the
 *     documented order, clocks sorted, no spaces), written with one
 *     write(2) on a descriptor opened O_APPEND, so it is flushed per event
 *     and lines of several writers sharing a file do not tear;
 *   - a causeway-clockd daemon (clockd_endpoint): ClockdRequest reports of
 *     ClockEventBatches on a DEALER socket, each with a request id, so the
 *     daemon's reply says the batch is on disk.
 *
 *  Runs on the I/O thread (client_actor.c calls it where the clock changes,
 *  and from its poll loop); the application only reads the counters, which
 *  are published into the shared part under mu (client_internal.h, I6).
 *
 *  Invariants:
 *   T1. q_len + fl_len <= queue_max: an event that would exceed it is
 *       dropped when recorded and counted (st.dropped); st.pending ==
 *       q_len + fl_len.
 *   T2. At most one batch is in flight (fl_rid != 0), made of the oldest
 *       events; it leaves the queue when sent and is freed when the daemon
 *       confirms it (OK) or refuses it for good (counted as dropped). Without
 *       a reply within CW_CLOCKD_REPLY_MS, or after STORE_ERROR, its events
 *       go back to the head of the queue. So the daemon receives each
 *       process's events in recording order, which is clock order.
 *   T3. The socket never blocks us: ZMQ_IMMEDIATE makes a send without a
 *       connection fail with EAGAIN (then `blocked`, and we poll for
 *       POLLOUT), and every send and receive is ZMQ_DONTWAIT.
 */
#include "client_internal.h"
#include "cw_log.h"
#include "cw_json.h"
#include "cw_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

/* A batch is also cut at this many packed bytes (the daemon's default
 * frame limit is 4 MiB). */
#define BATCH_BYTES (256 * 1024)
/* After STORE_ERROR the batch goes again this much later. */
#define STORE_RETRY_MS 1000

typedef Causeway__V1__ClockEvent cev_t;
typedef Causeway__V1__ClockEntry centry_t;

/* One recorded event. */
typedef struct tev {
    cev_t pb;                  /* the wire form; every pointer in it is owned */
    size_t size;               /* packed size of pb */
    struct tev *next;
} tev_t;

struct cw_tracer {
    cw_client_t *c;            /* shared part (counters) and parameters */
    int fd;                    /* trace file (c->trace_fd, not owned), -1 none */
    void *sock;                /* DEALER to clockd; NULL if no daemon */
    tev_t *q_head;             /* events not sent yet, oldest first */
    tev_t *q_tail;
    size_t q_len;
    tev_t *fl_head;            /* the batch in flight, in order */
    size_t fl_len;
    uint64_t fl_rid;           /* its request id; 0: none in flight */
    int64_t fl_deadline;       /* monotonic ms: no reply by then = lost */
    uint64_t next_rid;         /* last request id used */
    int64_t send_at;           /* the next batch may go then (batching delay) */
    int64_t hold_until;        /* nothing goes before then (after STORE_ERROR) */
    int blocked;               /* the last send found no connection: wait for POLLOUT */
    int urgent;                /* flush asked for: no batching delay until empty */
    size_t queue_max;          /* T1 */
    cw_trace_stats_t st;       /* counters */
    cw_trace_stats_t shown;    /* counters as last published */
};

/* --- counters ------------------------------------------------------------ */

/* I6: copies the counters into the shared part if they changed. */
static void publish(cw_tracer_t *t)
{
    if (memcmp(&t->st, &t->shown, sizeof t->st) == 0)
        return;
    t->shown = t->st;
    cw_client_t *c = t->c;
    pthread_mutex_lock(&c->mu);
    c->tstats = t->st;
    if (t->st.pending == 0)
        pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

/* --- events --------------------------------------------------------------- */

static void free_clock(centry_t **e, size_t n)
{
    for (size_t i = 0; e && i < n; i++) {
        if (e[i])
            free(e[i]->node);
        free(e[i]);
    }
    free(e);
}

static void tev_free(tev_t *e)
{
    if (!e)
        return;
    free(e->pb.process);
    free_clock(e->pb.clock, e->pb.n_clock);
    free(e->pb.msg);
    for (size_t i = 0; i < e->pb.n_peers; i++)
        free(e->pb.peers[i]);
    free(e->pb.peers);
    free(e->pb.text);
    free_clock(e->pb.msg_clock, e->pb.n_msg_clock);
    free(e);
}

static void list_free(tev_t *e)
{
    while (e) {
        tev_t *next = e->next;
        tev_free(e);
        e = next;
    }
}

/* Copies clock entries, leaving out zero counters (canonical form; the
 * entries come sorted). 0, or -1 out of memory (*out NULL). */
static int copy_clock(centry_t ***out, size_t *n, cw_clock_entry_msg_t *const *e, size_t count)
{
    *out = NULL;
    *n = 0;
    if (count == 0)
        return 0;
    centry_t **p = calloc(count, sizeof *p);
    if (!p)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < count; i++) {
        if (e[i]->counter == 0)
            continue;
        p[k] = malloc(sizeof *p[k]);
        if (!p[k]) {
            free_clock(p, k);
            return -1;
        }
        causeway__v1__clock_entry__init(p[k]);
        p[k]->counter = e[i]->counter;
        p[k]->node = strdup(e[i]->node ? e[i]->node : "");
        if (!p[k]->node) {
            free_clock(p, k + 1);
            return -1;
        }
        k++;
    }
    *out = p;
    *n = k;
    return 0;
}

/* A copy of s as valid UTF-8 (invalid bytes become U+FFFD) of at most max
 * bytes, cut before a character that does not fit. NULL out of memory. */
static char *utf8_copy(const char *s, size_t max)
{
    const unsigned char *p = (const unsigned char *) (s ? s : "");
    size_t cap = strlen((const char *) p) * 3 + 1;
    if (cap > max + 1)
        cap = max + 1;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    size_t o = 0;
    while (*p) {
        size_t n = cw_utf8_seq_len((const char *) p);
        const char *piece = (const char *) p;
        size_t len = n;
        if (n == 0) {
            piece = "\xEF\xBF\xBD";
            len = 3;
            n = 1;
        }
        if (o + len > max)
            break;
        memcpy(out + o, piece, len);
        o += len;
        p += n;
    }
    out[o] = '\0';
    return out;
}

/* The message key "<sender>:<message_id>", or "<sender>:N" (N the sender's
 * own entry of the message clock) when there is no usable id. */
static char *msg_key(const char *from, const char *mid, cw_clock_entry_msg_t *const *mclock,
                     size_t n)
{
    size_t len = mid ? strlen(mid) : 0;
    char *key;
    if (len && len <= CW_MESSAGE_ID_MAX && cw_utf8_valid(mid, len)) {
        size_t size = strlen(from) + 1 + len + 1;
        key = malloc(size);
        if (key)
            snprintf(key, size, "%s:%s", from, mid);
        return key;
    }
    uint64_t own = 0;
    for (size_t i = 0; i < n; i++)
        if (mclock[i]->node && strcmp(mclock[i]->node, from) == 0)
            own = mclock[i]->counter;
    size_t size = strlen(from) + 24;
    key = malloc(size);
    if (key)
        snprintf(key, size, "%s:%llu", from, (unsigned long long) own);
    return key;
}

/* A new event of kind for process me with clock; NULL out of memory. */
static tev_t *tev_new(int kind, const char *me, const cw_clock_t *clock)
{
    tev_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    causeway__v1__clock_event__init(&e->pb);
    e->pb.kind = (Causeway__V1__ClockEvent__Kind) kind;
    e->pb.ts_us = cw_now_us();
    e->pb.process = strdup(me);
    e->pb.msg = NULL;
    e->pb.text = NULL;
    cw_clock_entry_msg_t **entries;
    size_t n = cw_clock_entries(clock, &entries);
    if (!e->pb.process || copy_clock(&e->pb.clock, &e->pb.n_clock, entries, n) != 0) {
        tev_free(e);
        return NULL;
    }
    return e;
}

/* Completes e's strings (msg and text "" when unset). -1 out of memory. */
static int tev_finish(tev_t *e)
{
    if (!e->pb.msg && !(e->pb.msg = strdup("")))
        return -1;
    if (!e->pb.text && !(e->pb.text = strdup("")))
        return -1;
    e->size = causeway__v1__clock_event__get_packed_size(&e->pb);
    return 0;
}

/* --- the trace line ------------------------------------------------------- */

typedef struct {
    char *buf;                 /* NUL-terminated; owned */
    size_t len;
    size_t cap;
    int oom;                   /* an allocation failed: the line is lost */
} line_t;

static void line_addn(line_t *l, const char *s, size_t n)
{
    if (l->oom)
        return;
    if (l->len + n + 1 > l->cap) {
        size_t cap = l->cap ? l->cap : 512;
        while (cap < l->len + n + 1)
            cap *= 2;
        char *b = realloc(l->buf, cap);
        if (!b) {
            l->oom = 1;
            return;
        }
        l->buf = b;
        l->cap = cap;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
    l->buf[l->len] = '\0';
}

static void line_add(line_t *l, const char *s) { line_addn(l, s, strlen(s)); }

static void line_u64(line_t *l, uint64_t v)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%llu", (unsigned long long) v);
    line_addn(l, num, (size_t) n);
}

/* A JSON string literal, escaped as causeway-clockd writes it. */
static void line_json(line_t *l, const char *s)
{
    char small[256];
    size_t len = s ? strlen(s) : 0;
    size_t need = cw_json_escape(small, sizeof small, s, len);
    if (need < sizeof small) {
        line_addn(l, small, need);
        return;
    }
    char *big = malloc(need + 1);
    if (!big) {
        line_addn(l, "\"\"", 2); /* out of memory: an empty string keeps the line valid */
        return;
    }
    cw_json_escape(big, need + 1, s, len);
    line_addn(l, big, need);
    free(big);
}

static void line_clock(line_t *l, centry_t *const *e, size_t n)
{
    line_addn(l, "{", 1);
    for (size_t i = 0; i < n; i++) {
        if (i)
            line_addn(l, ",", 1);
        line_json(l, e[i]->node);
        line_addn(l, ":", 1);
        line_u64(l, e[i]->counter);
    }
    line_addn(l, "}", 1);
}

/* The canonical JSON line of e (docs/CLOCKD.md: process, kind, clock, msg,
 * peers, broadcast, ts_us, text, holdback_us, msg_clock, late), with '\n'. */
static void line_event(line_t *l, const cev_t *e)
{
    static const char *kinds[] = {"unspecified", "send", "deliver", "local"};
    int kind = (int) e->kind;
    line_add(l, "{\"process\":");
    line_json(l, e->process);
    line_add(l, ",\"kind\":\"");
    line_add(l, kinds[kind >= 1 && kind <= 3 ? kind : 0]);
    line_add(l, "\",\"clock\":");
    line_clock(l, e->clock, e->n_clock);
    if (e->kind != CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_LOCAL) {
        line_add(l, ",\"msg\":");
        line_json(l, e->msg);
        line_add(l, ",\"peers\":[");
        for (size_t i = 0; i < e->n_peers; i++) {
            if (i)
                line_addn(l, ",", 1);
            line_json(l, e->peers[i]);
        }
        line_addn(l, "]", 1);
    }
    if (e->broadcast)
        line_add(l, ",\"broadcast\":true");
    line_add(l, ",\"ts_us\":");
    line_u64(l, e->ts_us);
    if (e->text && *e->text) {
        line_add(l, ",\"text\":");
        line_json(l, e->text);
    }
    if (e->kind == CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_DELIVER) {
        line_add(l, ",\"holdback_us\":");
        line_u64(l, e->holdback_us);
        line_add(l, ",\"msg_clock\":");
        line_clock(l, e->msg_clock, e->n_msg_clock);
        if (e->late)
            line_add(l, ",\"late\":true");
    }
    line_add(l, "}\n");
}

/* Appends e's line to the trace file: one write(2), O_APPEND. */
static void write_line(cw_tracer_t *t, const tev_t *e)
{
    line_t l = {0};
    line_event(&l, &e->pb);
    ssize_t n = l.oom ? -1 : write(t->fd, l.buf, l.len);
    if (n == (ssize_t) l.len) {
        t->st.written++;
    } else {
        if (t->st.write_errors++ == 0)
            CW_DEBUG("client: trace file: %s", n < 0 ? strerror(errno) : "short write");
    }
    free(l.buf);
}

/* --- the daemon ----------------------------------------------------------- */

/* A fresh DEALER to the daemon. NULL on failure (logged). */
static void *open_sock(cw_client_t *c)
{
    void *s = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!s) {
        CW_DEBUG("client: clockd socket: %s", zmq_strerror(errno));
        return NULL;
    }
    int zero = 0, one = 1;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(s, ZMQ_IMMEDIATE, &one, sizeof one);   /* T3 */
    if (cw_client_secure_sock(c, s, 1) != 0 || zmq_connect(s, c->clockd_endpoint) != 0) {
        CW_DEBUG("client: clockd connect %s: %s", c->clockd_endpoint, zmq_strerror(errno));
        zmq_close(s);
        return NULL;
    }
    return s;
}

/* Puts the batch in flight back at the head of the queue (T2). */
static void requeue_flight(cw_tracer_t *t)
{
    if (!t->fl_head)
        return;
    tev_t *last = t->fl_head;
    while (last->next)
        last = last->next;
    last->next = t->q_head;
    if (!t->q_head)
        t->q_tail = last;
    t->q_head = t->fl_head;
    t->q_len += t->fl_len;
    t->fl_head = NULL;
    t->fl_len = 0;
    t->fl_rid = 0;
}

/* The batch in flight is done with: confirmed (stored) or given up. */
static void end_flight(cw_tracer_t *t, int stored)
{
    if (stored)
        t->st.reported += t->fl_len;
    else
        t->st.dropped += t->fl_len;
    t->st.pending -= t->fl_len;
    list_free(t->fl_head);
    t->fl_head = NULL;
    t->fl_len = 0;
    t->fl_rid = 0;
}

/* Sends the next batch if one may go now. */
static void try_send(cw_tracer_t *t, int64_t now)
{
    if (!t->sock || t->fl_rid || !t->q_head || now < t->hold_until)
        return;
    if (!t->urgent && t->q_len < CW_CLOCKD_BATCH_MAX && now < t->send_at)
        return;
    size_t n = 0, bytes = 0;
    for (tev_t *e = t->q_head; e && n < CW_CLOCKD_BATCH_MAX; e = e->next) {
        if (n && bytes + e->size + 8 > BATCH_BYTES)
            break;
        bytes += e->size + 8;
        n++;
    }
    cev_t **ptrs = malloc(n * sizeof *ptrs);
    if (!ptrs)
        return;   /* out of memory: the events wait; the next step tries again */
    tev_t *e = t->q_head;
    for (size_t i = 0; i < n; i++, e = e->next)
        ptrs[i] = &e->pb;
    Causeway__V1__ClockEventBatch batch = CAUSEWAY__V1__CLOCK_EVENT_BATCH__INIT;
    batch.events = ptrs;
    batch.n_events = n;
    Causeway__V1__ClockdRequest req = CAUSEWAY__V1__CLOCKD_REQUEST__INIT;
    req.version = 1;
    req.request_id = ++t->next_rid;
    req.body_case = CAUSEWAY__V1__CLOCKD_REQUEST__BODY_REPORT;
    req.report = &batch;
    size_t len = causeway__v1__clockd_request__get_packed_size(&req);
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, len) != 0) {
        free(ptrs);
        return;
    }
    causeway__v1__clockd_request__pack(&req, zmq_msg_data(&msg));
    free(ptrs);
    if (zmq_msg_send(&msg, t->sock, ZMQ_DONTWAIT) < 0) {
        int err = errno;
        zmq_msg_close(&msg);
        if (err == EAGAIN) {
            t->blocked = 1;   /* no connection yet: POLLOUT says when */
        } else {
            CW_DEBUG("client: clockd send: %s", zmq_strerror(err));
            t->hold_until = now + STORE_RETRY_MS;
        }
        return;
    }
    t->blocked = 0;
    /* The first n events are in flight now. */
    t->fl_head = t->q_head;
    tev_t *last = t->q_head;
    for (size_t i = 1; i < n; i++)
        last = last->next;
    t->q_head = last->next;
    last->next = NULL;
    if (!t->q_head)
        t->q_tail = NULL;
    t->q_len -= n;
    t->fl_len = n;
    t->fl_rid = req.request_id;
    t->fl_deadline = now + CW_CLOCKD_REPLY_MS;
    t->send_at = t->q_head ? now + CW_CLOCKD_BATCH_DELAY_MS : 0;
}

static void on_reply(cw_tracer_t *t, const void *data, size_t len, int64_t now)
{
    Causeway__V1__ClockdReply *r = causeway__v1__clockd_reply__unpack(NULL, len, data);
    if (!r) {
        CW_DEBUG("client: undecodable frame from clockd");
        return;
    }
    if (!t->fl_rid || r->request_id != t->fl_rid) {
        CW_DEBUG("client: clockd reply to unknown request %llu",
                 (unsigned long long) r->request_id);
    } else if ((int) r->status == CW_OK) {
        end_flight(t, 1);
    } else if ((int) r->status == CW_STORE_ERROR) {
        CW_DEBUG("client: clockd could not store %zu events (%s); again in %d ms", t->fl_len,
                 r->detail, STORE_RETRY_MS);
        requeue_flight(t);
        t->hold_until = now + STORE_RETRY_MS;
    } else {
        CW_DEBUG("client: clockd refused %zu events: %s (%s)", t->fl_len,
                 cw_status_name((int) r->status), r->detail);
        end_flight(t, 0);
    }
    causeway__v1__clockd_reply__free_unpacked(r, NULL);
}

static void read_replies(cw_tracer_t *t, int64_t now)
{
    while (t->sock) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, t->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        if (zmq_msg_more(&msg))
            CW_DEBUG("client: multi-frame message from clockd ignored");
        else
            on_reply(t, zmq_msg_data(&msg), zmq_msg_size(&msg), now);
        zmq_msg_close(&msg);
    }
}

/* --- recording ------------------------------------------------------------ */

/* Records e (taken): the trace line, then the daemon's queue (T1). */
static void record(cw_tracer_t *t, tev_t *e)
{
    t->st.recorded++;
    if (tev_finish(e) != 0) {
        CW_DEBUG("client: out of memory, causal event lost");
        if (t->sock)
            t->st.dropped++;
        tev_free(e);
        publish(t);
        return;
    }
    if (t->fd >= 0)
        write_line(t, e);
    if (!t->sock) {
        tev_free(e);
    } else if (t->q_len + t->fl_len >= t->queue_max) {
        t->st.dropped++;
        tev_free(e);
    } else {
        e->next = NULL;
        if (t->q_tail)
            t->q_tail->next = e;
        else
            t->q_head = e;
        t->q_tail = e;
        t->q_len++;
        t->st.pending++;
        if (t->q_len == 1 && !t->fl_rid)
            t->send_at = cw_mono_ms() + CW_CLOCKD_BATCH_DELAY_MS;
    }
    publish(t);
}

void cw_tracer_send(cw_tracer_t *t, const char *me, const cw_clock_t *clock,
                    const cw_send_msg_t *send)
{
    if (!t || !me)
        return;
    tev_t *e = tev_new(CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_SEND, me, clock);
    if (!e)
        goto nomem;
    /* The distinct recipients a trace may name (others can be no user). */
    if (!send->broadcast && send->n_to) {
        e->pb.peers = calloc(send->n_to, sizeof *e->pb.peers);
        if (!e->pb.peers)
            goto nomem;
        for (size_t i = 0; i < send->n_to; i++) {
            const char *to = send->to[i];
            int dup = !cw_trace_name_ok(to);
            for (size_t k = 0; k < e->pb.n_peers && !dup; k++)
                dup = strcmp(e->pb.peers[k], to) == 0;
            if (dup)
                continue;
            if (!(e->pb.peers[e->pb.n_peers] = strdup(to)))
                goto nomem;
            e->pb.n_peers++;
        }
    }
    e->pb.broadcast = send->broadcast != 0;
    if (!e->pb.broadcast && e->pb.n_peers == 0) {
        /* No recipient can be a user: the tick is all that happened. */
        tev_free(e);
        cw_tracer_local(t, me, clock, "send to no valid recipient");
        return;
    }
    cw_clock_entry_msg_t **entries;
    size_t n = cw_clock_entries(clock, &entries);
    e->pb.msg = msg_key(me, send->message_id, entries, n);
    e->pb.text = utf8_copy(send->text, CW_TRACE_TEXT_MAX);
    if (!e->pb.msg || !e->pb.text)
        goto nomem;
    record(t, e);
    return;
nomem:
    tev_free(e);
    CW_DEBUG("client: out of memory, send event lost");
    t->st.recorded++;
    if (t->sock)
        t->st.dropped++;
    publish(t);
}

void cw_tracer_local(cw_tracer_t *t, const char *me, const cw_clock_t *clock, const char *text)
{
    if (!t || !me)
        return;
    tev_t *e = tev_new(CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_LOCAL, me, clock);
    if (e && !(e->pb.text = utf8_copy(text, CW_TRACE_TEXT_MAX))) {
        tev_free(e);
        e = NULL;
    }
    if (!e) {
        CW_DEBUG("client: out of memory, local event lost");
        t->st.recorded++;
        if (t->sock)
            t->st.dropped++;
        publish(t);
        return;
    }
    record(t, e);
}

void cw_tracer_deliver(cw_tracer_t *t, const char *me, const cw_clock_t *clock, uint64_t holdback_us,
                       int late, const char *from,
                       const char *message_id, cw_clock_entry_msg_t *const *mclock,
                       size_t n_mclock)
{
    if (!t || !me)
        return;
    if (!cw_trace_name_ok(from)) {
        /* The broker names every sender; this one no trace could name. */
        cw_tracer_local(t, me, clock, "delivery from an unnamed sender");
        return;
    }
    tev_t *e = tev_new(CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_DELIVER, me, clock);
    if (!e)
        goto nomem;
    e->pb.peers = calloc(1, sizeof *e->pb.peers);
    if (!e->pb.peers || !(e->pb.peers[0] = strdup(from)))
        goto nomem;
    e->pb.n_peers = 1;
    e->pb.msg = msg_key(from, message_id, mclock, n_mclock);
    if (!e->pb.msg || copy_clock(&e->pb.msg_clock, &e->pb.n_msg_clock, mclock, n_mclock) != 0)
        goto nomem;
    e->pb.holdback_us = holdback_us;
    e->pb.late = late != 0;
    record(t, e);
    return;
nomem:
    tev_free(e);
    CW_DEBUG("client: out of memory, deliver event lost");
    t->st.recorded++;
    if (t->sock)
        t->st.dropped++;
    publish(t);
}

/* --- lifetime and the loop ------------------------------------------------ */

cw_tracer_t *cw_tracer_new(cw_client_t *c)
{
    if (c->trace_fd < 0 && !c->clockd_sock)
        return NULL;
    cw_tracer_t *t = calloc(1, sizeof *t);
    if (!t) {
        CW_DEBUG("client: out of memory: no causal events will be recorded");
        return NULL;
    }
    t->c = c;
    t->fd = c->trace_fd;
    t->sock = c->clockd_sock;
    c->clockd_sock = NULL;
    t->queue_max = c->clockd_queue ? c->clockd_queue : CW_CLOCKD_QUEUE_DEFAULT;
    return t;
}

void cw_tracer_destroy(cw_tracer_t **p)
{
    if (!p || !*p)
        return;
    cw_tracer_t *t = *p;
    *p = NULL;
    t->st.dropped += t->q_len + t->fl_len;
    t->st.pending = 0;
    publish(t);
    list_free(t->q_head);
    list_free(t->fl_head);
    if (t->sock)
        zmq_close(t->sock);
    free(t);
}

void *cw_tracer_poll_item(const cw_tracer_t *t, short *events)
{
    *events = 0;
    if (!t || !t->sock)
        return NULL;
    if (t->fl_rid)
        *events = ZMQ_POLLIN;
    else if (t->q_head && t->blocked)
        *events = ZMQ_POLLOUT;
    return t->sock;
}

long cw_tracer_timeout(const cw_tracer_t *t, int64_t now)
{
    if (!t || !t->sock)
        return -1;
    int64_t due;
    if (t->fl_rid)
        due = t->fl_deadline;
    else if (!t->q_head || t->blocked)
        return -1;   /* nothing to send, or POLLOUT will say when */
    else if (now < t->hold_until)
        due = t->hold_until;
    else
        due = t->urgent ? now : t->send_at;
    return due <= now ? 0 : (long) (due - now);
}

void cw_tracer_step(cw_tracer_t *t, int64_t now)
{
    if (!t || !t->sock)
        return;
    read_replies(t, now);
    if (t->fl_rid && now >= t->fl_deadline) {
        /* The daemon went away (or hangs) with our batch: a fresh
         * connection, and the batch goes again. */
        CW_DEBUG("client: no reply from clockd in %d ms; reconnecting", CW_CLOCKD_REPLY_MS);
        requeue_flight(t);
        zmq_close(t->sock);
        t->sock = open_sock(t->c);
        t->blocked = 0;
        if (!t->sock) {
            /* Cannot happen with an endpoint that connected before, short
             * of running out of descriptors: give up on the daemon. */
            t->st.dropped += t->q_len;
            t->st.pending -= t->q_len;
            list_free(t->q_head);
            t->q_head = t->q_tail = NULL;
            t->q_len = 0;
        }
    }
    if (t->sock) {
        try_send(t, now);
        if (!t->q_head && !t->fl_rid)
            t->urgent = 0;
    }
    publish(t);
}

void cw_tracer_flush(cw_tracer_t *t)
{
    if (!t || !t->sock)
        return;
    if (t->q_head || t->fl_rid)
        t->urgent = 1;
    t->hold_until = 0;
    cw_tracer_step(t, cw_mono_ms());
}

void cw_tracer_drain(cw_tracer_t *t, int64_t deadline)
{
    if (!t || !t->sock)
        return;
    t->urgent = 1;
    for (;;) {
        int64_t now = cw_mono_ms();
        cw_tracer_step(t, now);
        if ((!t->q_head && !t->fl_rid) || !t->sock || now >= deadline)
            return;
        short events;
        void *s = cw_tracer_poll_item(t, &events);
        long timeout = cw_tracer_timeout(t, now);
        if (timeout < 0 || timeout > deadline - now)
            timeout = (long) (deadline - now);
        zmq_pollitem_t it = {.socket = s, .events = events};
        if (zmq_poll(&it, 1, timeout) < 0 && errno != EINTR)
            return;
    }
}
