/*  durable: the router's side of phase 2, durable per-user queues.
 *
 *  Runs on the router thread. The store runs behind store_if.h's operations
 *  table (SQLite: its own thread, store_actor.c), chosen at open from
 *  --data or --store; the router submits requests tagged with a token and
 *  keeps, per request, a pending record in a FIFO. The store answers in
 *  submission order, after what it reports is durable (fsync), so the
 *  reply at the FIFO's head is always the next to arrive; its events
 *  (token 0) are handled apart and never take a FIFO place.
 *
 *  Invariants:
 *    1. Never acknowledge before durable: the ACCEPTED reply to a durable
 *       Send and every push of a stored message leave only after the store
 *       reply for its append, which comes after the commit.
 *    2. Per session, pushes of stored messages go out in seq order. Either
 *       the session is catching up (outorder.h's CATCHING_UP or READING)
 *       and only push reads (cw_store_read from pushed_seq + 1) push, at
 *       most one read in flight (READING <=> a push read for the session's
 *       serial is pending); or it is CAUGHT_UP, and each committed append
 *       pushes its seq directly.
 *       Commits and reads are answered in submission order, so an append
 *       that a read could not see is answered after that read (and pushed
 *       directly), and one that it could see is answered before it (and
 *       skipped while catching up).
 *    3. At most push_window pushes per session wait for an ack; a full
 *       window switches the session to catching up (outorder.c).
 *    4. Pending records refer to sessions by serial, never by pointer: a
 *       session may be gone, or replaced, when the reply arrives.
 *    5. Budgets (docs/OPERATIONS.md "Floods, slow readers and budgets"): a
 *       client request submitted to the store is charged to its session
 *       (session->store_reqs, store_bytes; found again by `origin`, which
 *       a resume keeps) and released exactly once, when its reply is
 *       handled or dropped (budget_release). A session at its budget gets
 *       FLOODED and submits nothing, so one session cannot fill the pipe
 *       that every session shares. Appends also count their entries in
 *       inflight_entries until answered, for the store-wide store_max.
 *  cwd_check asserts 2 (one read per READING session), 4's bookkeeping
 *  and 5's counts (n_pending, inflight_entries) in builds without NDEBUG,
 *  after every batch of replies; outorder.c checks 3 and the per-session
 *  state at every transition.
 *
 *  Stored clock: the sender's vector clock is stored as a serialized
 *  Deliver holding only its `clock` field, and decoded the same way.
 *
 *  Damaged entries (issue 11 item 7): an entry that must not be served as
 *  data (entry_damage: the store found it damaged, CW_DAMAGED) is pushed,
 *  fetched and listed as a Deliver with `damaged` set, its seq and nothing
 *  else, which the client acknowledges like any other seq: the queue goes
 *  on. Each distinct (user, seq) is logged once at ERROR and counted in
 *  BrokerStats.damaged_entries (note_damaged).
 */
#include "durable.h"

#include "cw_clock.h"
#include "cw_envelope.h"
#include "cw_log.h"
#include "cw_status.h"
#include "egress.h"
#include "outorder.h"
#include "store_if.h"

#include <assert.h>

#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define DRAIN_MS 5000      /* how long a shutdown waits for the store's answers */
#define FETCH_DEFAULT 100  /* Fetch.max 0 */
#define FETCH_MAX 1000     /* largest Fetch.max / History.last honoured */
#define READ_BATCH 128     /* entries per push read */

typedef enum {
    P_APPEND,
    P_ACK,
    P_PUSH_READ,
    P_FETCH,
    P_HISTORY,
    P_ADD_USER,
    P_CLOCK,
    P_CLAIM,   /* shared store: a Login's claim (answered through cwd_next_claimed) */
    P_RELEASE, /* shared store: a claim ended */
    P_LIVE,    /* shared store: a live Send's remote recipients (LIVE_SEND) */
} pending_kind_t;

/* Records that answer no client request when dropped: every PUSH_READ,
 * ADD_USER and CLOCK, and a RELEASE that no Logout waits for
 * (cwd_release_then_reply). */
#define P_SILENT(p)                                                            \
    ((p)->kind == P_PUSH_READ || (p)->kind == P_ADD_USER || (p)->kind == P_CLOCK || \
     ((p)->kind == P_RELEASE && !(p)->id[0]))

typedef struct pending {
    struct pending *next;        /* FIFO link */
    pending_kind_t kind;         /* what was submitted */
    uint64_t token;              /* the submission's token */
    uint8_t id[1 + CW_ROUTING_ID_MAX]; /* requester's routing id, length-prefixed */
    uint64_t request_id;         /* to echo in the reply */
    char user[CW_NAME_MAX_HARD + 1]; /* user of the request; APPEND: the sender */
    uint64_t serial;             /* session the request is for (0: none) */
    uint64_t seq;                /* ACK: up to; CLOCK: the own entry saved */
    uint32_t max;                /* PUSH_READ: entries asked for */
    bool redeliver;              /* PUSH_READ: mark pushes redelivered */
    uint64_t origin;             /* session charged for it (its origin serial); 0 none */
    uint64_t cost;               /* bytes charged to that session */
    uint64_t owed;               /* bytes of reply owed to it, for the reply budget */
    size_t n_entries;            /* APPEND: queue entries submitted (for store_max) */
    bool resume;                 /* CLAIM: the client presented the session's token */
    /* APPEND, LIVE */
    cw_env_t *env;               /* the Send request, owned */
    uint64_t timestamp_us;       /* broker receipt time */
    size_t n;                    /* distinct recipients */
    bool receipt_requested;      /* the message asks for read receipts (receipts.h) */
    /* The arrays below, cap entries each, live in the same allocation as
     * the record (pending_new_append): one malloc per durable Send. */
    Causeway__V1__RecipientStatus *rcpts; /* names and router-side statuses */
    Causeway__V1__RecipientStatus **rptrs; /* rptrs[i] = &rcpts[i], for the Reply */
    cwb_user_t **users;           /* users[i]: the user of rcpts[i], NULL unknown */
    long *store_idx;             /* index among stored recipients, -1 none (LIVE: among
                                    the recipients asked of the store) */
    char **to;                   /* scratch: Deliver.to of the pushes */
} pending_t;

struct cw_durable {
    const cw_store_ops_t *ops;   /* the backend (store_if.h), chosen at open */
    cw_store_backend_t *store;   /* the open store, owned */
    bool closing;                /* shutting down: no new push reads */
    uint64_t next_token;         /* last token used */
    pending_t *head, *tail;      /* FIFO of submitted requests */
    size_t n_pending;            /* FIFO length */
    uint64_t inflight_entries;   /* queue entries of appends not yet answered */
    zhashx_t *damaged_seen;      /* "user seq" of damaged entries already reported */
    uint64_t damaged;            /* distinct damaged entries seen (BrokerStats) */
    cwd_claimed_t *claimed;      /* claims answered, for broker.c (cwd_next_claimed) */
    size_t n_claimed, cap_claimed;
    cwd_shared_stats_t sh;       /* shared-store counters (cwd_shared_stats) */
};

#define DAMAGED_SEEN_MAX 100000  /* (user, seq) pairs remembered; beyond, each read counts */

/* ------------------------------------------------------------------------ */

static void pending_free(pending_t *p)
{
    if (!p)
        return;
    cw_env_free(&p->env);
    free(p);
}

/* A record with room for cap recipients after it (0 for non-appends).
 * NULL if out of memory. */
static pending_t *pending_alloc(size_t cap)
{
    size_t per = sizeof(Causeway__V1__RecipientStatus) + sizeof(Causeway__V1__RecipientStatus *) +
                 sizeof(cwb_user_t *) + sizeof(long) + sizeof(char *);
    if (cap > (SIZE_MAX - sizeof(pending_t)) / per)
        return NULL;
    pending_t *p = calloc(1, sizeof *p + cap * per);
    if (!p || !cap)
        return p;
    /* Pointer-aligned pieces first; every piece's size is a multiple of 8. */
    char *at = (char *) (p + 1);
    p->rcpts = (Causeway__V1__RecipientStatus *) (void *) at;
    at += cap * sizeof *p->rcpts;
    p->rptrs = (Causeway__V1__RecipientStatus **) (void *) at;
    at += cap * sizeof *p->rptrs;
    p->users = (cwb_user_t **) (void *) at;
    at += cap * sizeof *p->users;
    p->store_idx = (long *) (void *) at;
    at += cap * sizeof *p->store_idx;
    p->to = (char **) (void *) at;
    return p;
}

static pending_t *pending_new_cap(cw_durable_t *d, pending_kind_t kind, const void *id,
                                  size_t id_len, uint64_t request_id, const char *user,
                                  size_t cap)
{
    pending_t *p = pending_alloc(cap);
    if (!p)
        return NULL;
    p->kind = kind;
    p->token = ++d->next_token;
    if (id && id_len <= CW_ROUTING_ID_MAX) {
        p->id[0] = (uint8_t) id_len;
        memcpy(p->id + 1, id, id_len);
    }
    p->request_id = request_id;
    if (user)
        snprintf(p->user, sizeof p->user, "%s", user);
    return p;
}

static pending_t *pending_new(cw_durable_t *d, pending_kind_t kind, const void *id, size_t id_len,
                              uint64_t request_id, const char *user)
{
    return pending_new_cap(d, kind, id, id_len, request_id, user, 0);
}

/* Queues p after a successful submission. */
static void pending_push(cw_durable_t *d, pending_t *p)
{
    if (d->tail)
        d->tail->next = p;
    else
        d->head = p;
    d->tail = p;
    d->n_pending++;
}

static pending_t *pending_pop(cw_durable_t *d)
{
    pending_t *p = d->head;
    if (p) {
        d->head = p->next;
        if (!d->head)
            d->tail = NULL;
        d->n_pending--;
    }
    return p;
}

/* The session a charge was made to, if it is still live. */
static cw_session_t *charged_session(cw_broker_t *b, const pending_t *p)
{
    cwb_user_t *u = cw_sessions_user(b->sessions, p->user);
    if (!u || !u->session || u->session->origin != p->origin)
        return NULL;
    return u->session;
}

/* Refuses a request (FLOODED) if session s has its budget of store
 * requests waiting (invariant 5). Replies and returns false if refused. */
static bool budget_or_reply(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                            uint64_t request_id)
{
    if (s->store_reqs < b->cfg.store_inflight && s->store_bytes < b->cfg.store_inflight_bytes)
        return true;
    char detail[160];
    snprintf(detail, sizeof detail,
             "this session has %u store requests (%llu bytes) waiting "
             "(store-inflight %u, store-inflight-bytes %u); retry when they are answered",
             s->store_reqs, (unsigned long long) s->store_bytes, b->cfg.store_inflight,
             b->cfg.store_inflight_bytes);
    cwe_reply_status(b, id, id_len, request_id, CW_FLOODED, detail);
    return false;
}

/* Charges a submitted request to s (invariant 5): its size in the store
 * pipe, and `owed`, the most its reply can weigh if that is a bulky reply
 * (the reply budget counts replies not sent yet as well as unread ones:
 * within_limits_or_reply in broker.c). */
static void budget_charge(cw_session_t *s, pending_t *p, uint64_t cost, uint64_t owed)
{
    p->origin = s->origin;
    p->cost = cost;
    p->owed = owed >= CW_OUTQ_BULKY ? owed : 0;
    s->store_reqs++;
    s->store_bytes += cost;
    s->replies_owed += p->owed;
}

/* Releases what p was charged, once (invariant 5), and its entries. */
static void budget_release(cw_broker_t *b, pending_t *p)
{
    if (p->kind == P_APPEND && p->env) {
        cw_durable_t *d = b->durable;
        d->inflight_entries -= p->n_entries <= d->inflight_entries ? p->n_entries
                                                                    : d->inflight_entries;
        p->n_entries = 0;
    }
    if (!p->origin)
        return;
    cw_session_t *s = charged_session(b, p);
    if (s) {
        s->store_reqs -= s->store_reqs ? 1 : 0;
        s->store_bytes -= p->cost <= s->store_bytes ? p->cost : s->store_bytes;
        s->replies_owed -= p->owed <= s->replies_owed ? p->owed : s->replies_owed;
    }
    p->origin = 0;
}

/* Maps a failed submission to the status for the client. */
static int submit_status(int rc)
{
    return rc == CW_FLOODED ? CW_FLOODED : rc == CW_ERR_NOMEM ? CW_INTERNAL : CW_STORE_ERROR;
}

static const char *submit_detail(int rc)
{
    return rc == CW_FLOODED ? "the store is behind; retry later" : "the store is unavailable";
}

/* The wire status for a store result of Ack, Fetch or History: the store's
 * own refusals pass, anything else (an unknown user the router believed
 * known, a local error code) is STORE_ERROR. Codes >= 100 never reach the
 * wire. */
static int wire_status(int st)
{
    return st == CW_OK || st == CW_BAD_REQUEST ? st : CW_STORE_ERROR;
}

/* The live session a pending request was for, or NULL if it is gone. */
static cw_session_t *session_of(cw_broker_t *b, const pending_t *p)
{
    cwb_user_t *u = cw_sessions_user(b->sessions, p->user);
    if (!u || !u->session || u->session->serial != p->serial || u->session->dead)
        return NULL;
    return u->session;
}

/* Asserts invariant 2 (a READING session has exactly one push read
 * pending, every pending read of a live session is its one) and the counts
 * of invariant 5 (n_pending, inflight_entries). No-op with NDEBUG. */
static void cwd_check(cw_broker_t *b)
{
#ifndef NDEBUG
    cw_durable_t *d = b->durable;
    size_t n = 0, reads = 0, reading = 0;
    uint64_t entries = 0;
    for (pending_t *p = d->head; p; p = p->next) {
        n++;
        assert(p->next || p == d->tail);
        if (p->kind == P_APPEND && p->env)
            entries += p->n_entries;
        if (p->kind == P_PUSH_READ) {
            cw_session_t *s = session_of(b, p);
            if (s) {
                assert(s->delivery == CWOR_READING);
                reads++;
            }
        }
    }
    assert(n == d->n_pending);
    assert(entries == d->inflight_entries);
    for (size_t i = 0; i < cw_sessions_count(b->sessions); i++) {
        const cw_session_t *s = cw_sessions_at(b->sessions, i);
        reading += s->delivery == CWOR_READING && !s->dead;
    }
    assert(reading == reads);
    (void) reads;
    (void) reading;
    (void) entries;
#else
    (void) b;
#endif
}

/* Why the entry e must not be served as data, or NULL if it may. The one
 * place that decides it: any other check of a stored entry (what the
 * broker would now refuse at Send) belongs here too. When it may be
 * served, *clock_msg holds its decoded clock holder (NULL: no clock), which
 * the caller frees (causeway__v1__deliver__free_unpacked). */
static const char *entry_damage(const cw_store_entry_t *e, Causeway__V1__Deliver **clock_msg)
{
    *clock_msg = NULL;
    if (e->status == CW_DAMAGED)
        return "it failed its checksum in the store";
    /* What a Send is refused for now (PROTOCOL.md §5 step 3b, §11.2) but an
     * older broker stored, e.g. a ClockEntry with an unknown field numbered
     * 2^29: served, it would make every Deliver and Fetch reply of the
     * recipient undecodable. The store already refuses strings that are not
     * UTF-8; the clock and zero bytes are checked here. */
    if (e->status != CW_EXPIRED && e->text_len && memchr(e->text, 0, e->text_len))
        return "its text holds a zero byte, which the broker now refuses";
    if (e->clock_len) {
        const char *why = NULL;
        if (cw_wire_check(&causeway__v1__deliver__descriptor, e->clock, e->clock_len, &why) !=
            CW_OK)
            return "its clock holds an encoding the broker now refuses (PROTOCOL.md §5)";
        Causeway__V1__Deliver *c = causeway__v1__deliver__unpack(NULL, e->clock_len, e->clock);
        if (!c || !cw_clock_entries_valid(c->clock, c->n_clock)) {
            if (c)
                causeway__v1__deliver__free_unpacked(c, NULL);
            return "its clock is not a valid clock (PROTOCOL.md §11.2)";
        }
        *clock_msg = c;
    }
    return NULL;
}

/* Tells the operator, once per (user, seq), that a message was lost. */
static void note_damaged(cw_broker_t *b, const char *user, uint64_t seq, const char *why)
{
    cw_durable_t *d = b->durable;
    char key[CW_NAME_MAX_HARD + 32];
    snprintf(key, sizeof key, "%s %llu", user, (unsigned long long) seq);
    if (d->damaged_seen && zhashx_lookup(d->damaged_seen, key))
        return;
    if (d->damaged_seen && zhashx_size(d->damaged_seen) < DAMAGED_SEEN_MAX)
        zhashx_insert(d->damaged_seen, key, (void *) 1);
    d->damaged++;
    CW_ERROR("MESSAGE LOST: seq %llu of %s's queue is damaged (%s); delivered as a damaged "
             "entry for the client to acknowledge (OPERATIONS.md, \"Damaged store files\")",
             (unsigned long long) seq, user, why);
}

/* Fills d from a store entry of user's queue. *clock_msg receives a
 * decoded clock holder the caller frees (causeway__v1__deliver__free_unpacked)
 * after packing. */
static void entry_to_deliver(cw_broker_t *b, const char *user, const cw_store_entry_t *e,
                             Causeway__V1__Deliver *d, Causeway__V1__Deliver **clock_msg)
{
    causeway__v1__deliver__init(d);
    const char *why = entry_damage(e, clock_msg);
    if (why) {
        /* A lost message: its seq, for the client to acknowledge; nothing
         * of its data (all of it is suspect). */
        note_damaged(b, user, e->seq, why);
        d->text = "";
        d->from = "";
        d->message_id = "";
        d->seq = e->seq;
        d->durable = true;
        d->damaged = true;
        return;
    }
    d->from = (char *) e->sender;
    d->n_to = e->n_to;
    d->to = (char **) e->to;
    d->broadcast = e->broadcast;
    d->expired = e->status == CW_EXPIRED;
    d->text = d->expired ? "" : (char *) e->text;
    d->timestamp_us = e->timestamp_us;
    d->seq = e->seq;
    d->message_id = (char *) e->message_id;
    d->durable = true;
    if (*clock_msg) {
        d->n_clock = (*clock_msg)->n_clock;
        d->clock = (*clock_msg)->clock;
        /* A receipt entry (receipts.h) or a message asking for one. */
        d->receipt = (*clock_msg)->receipt;
        d->receipt_requested = (*clock_msg)->receipt_requested;
        if (d->receipt)
            d->receipt->seq = e->seq;
    }
}

/* Asks the store for the next part of s's queue, if s may take more. */
static void push_read(cw_broker_t *b, cw_session_t *s)
{
    cw_durable_t *d = b->durable;
    uint64_t from = 0;
    uint32_t max = 0;
    bool redeliver = false;
    if (d->closing || !cwor_read_wanted(b, s, READ_BATCH, &from, &max, &redeliver))
        return;
    pending_t *p = pending_new(d, P_PUSH_READ, NULL, 0, 0, s->user->name);
    if (!p)
        return;
    p->serial = s->serial;
    p->max = max;
    p->redeliver = redeliver;
    int rc = d->ops->read(d->store, p->token, s->user->name, from, p->max);
    if (rc != CW_OK) {
        CW_WARN("cannot read %s's queue now (%s); retrying", s->user->name, cw_status_name(rc));
        pending_free(p);
        return; /* the tick retries */
    }
    cwor_read_submitted(b, s);
    pending_push(d, p);
}

/* An append's commit is answered (or abandoned): its recipients no longer
 * wait for it, and live messages held behind it may go (outorder.c). */
static void inflight_done(cw_broker_t *b, pending_t *p)
{
    if (p->kind != P_APPEND || !p->env)
        return; /* never submitted: never counted */
    for (size_t i = 0; i < p->n; i++) {
        cwb_user_t *u = p->users[i];
        if (!u || p->store_idx[i] < 0)
            continue;
        if (u->durable_inflight)
            u->durable_inflight--;
        if (u->session && !u->session->dead) {
            /* Live messages read after this append follow its entry (or,
             * if it was not stored for u, what u's queue holds now). */
            bool stored = p->rcpts[i].status == (Causeway__V1__Status) CW_ACCEPTED;
            cwor_held_resolve(u->session, p->token, stored ? p->rcpts[i].seq : u->last_seq);
            cwor_flush_held(b, u->session);
        }
    }
}

/* ------------------------------------------------------------------------
 * Store replies
 */

/* A repeat of a stored message (same sender, same message_id): answered
 * ACCEPTED, duplicate, with the original's recipients and seqs as the
 * store remembers them, whatever recipients the repeat names (PROTOCOL.md
 * §13.2). Nothing was stored and nothing is pushed. */
static void on_duplicate(cw_broker_t *b, pending_t *p, cw_store_reply_t *r)
{
    const cw_store_rcpt_t *orig = NULL;
    size_t n = cw_store_reply_original(r, &orig);
    Causeway__V1__RecipientStatus *rs = calloc(n ? n : 1, sizeof *rs);
    Causeway__V1__RecipientStatus **rptrs = calloc(n ? n : 1, sizeof *rptrs);
    /* Nothing of this request is stored: live messages held behind it wait
     * for what the recipients' queues hold now. */
    for (size_t i = 0; i < p->n; i++)
        p->rcpts[i].status = (Causeway__V1__Status) CW_OK;
    inflight_done(b, p);
    if (!rs || !rptrs) {
        cwe_reply_status(b, p->id + 1, p->id[0], p->request_id, CW_INTERNAL, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            causeway__v1__recipient_status__init(&rs[i]);
            rs[i].name = (char *) orig[i].name;
            rs[i].status = (Causeway__V1__Status) orig[i].status;
            rs[i].seq = orig[i].status == CW_ACCEPTED ? orig[i].seq : 0;
        }
        cwe_reply_recipients(b, NULL, p->id + 1, p->id[0], p->request_id, CW_ACCEPTED,
                             "already stored (duplicate message_id): the original's recipients",
                             true, rs, rptrs, n);
        b->stats.messages_routed++;
    }
    CW_INFO("stored %s -> %zu recipient(s): duplicate of message '%s' (%zu original recipients)",
            p->user, p->n, p->env->send->message_id ? p->env->send->message_id : "", n);
    free(rs);
    free(rptrs);
}

static void on_append(cw_broker_t *b, pending_t *p, cw_store_reply_t *r)
{
    int st = cw_store_reply_status(r);
    bool dup = cw_store_reply_duplicate(r);
    if (dup && st == CW_OK) {
        on_duplicate(b, p, r);
        return;
    }
    /* The store answers per message CW_OK (stored for someone), QUEUE_FULL
     * or UNKNOWN_USER (stored for no one); anything else means the append
     * failed and nothing of it is stored. */
    bool failed = !(st == CW_OK || st == CW_QUEUE_FULL || st == CW_UNKNOWN_USER);
    size_t accepted = 0, full = 0, errors = 0;
    for (size_t i = 0; i < p->n; i++) {
        long k = p->store_idx[i];
        if (k < 0)
            continue; /* UNKNOWN_USER, decided by the router */
        int rs = failed || (size_t) k >= cw_store_reply_rcpts(r)
                     ? CW_STORE_ERROR
                     : cw_store_reply_rcpt_status(r, (size_t) k);
        /* A shared store decides unknown names (store_if.h S3): the name
         * the router did not know is unknown to every broker. */
        bool unknown = b->shared && rs == CW_UNKNOWN_USER;
        if (rs != CW_ACCEPTED && rs != CW_QUEUE_FULL && !unknown)
            rs = CW_STORE_ERROR; /* e.g. a user the store does not know */
        p->rcpts[i].status = (Causeway__V1__Status) rs;
        if (rs == CW_ACCEPTED && !p->users[i] && b->shared) {
            /* Made on another broker a moment ago: the cache learns it
             * (its NEW_USER event may still be on its way). The record
             * keeps users[i] NULL: nothing was counted in flight for it. */
            cwb_user_t *u = cw_sessions_user_add(b->sessions, p->rcpts[i].name, NULL);
            if (u) {
                u->stored = CW_USER_STORED;
                uint64_t seq = cw_store_reply_rcpt_seq(r, (size_t) k);
                /* last_seq follows ENTRY events only for local sessions'
                 * users; with no session here there is nothing to push. */
                if (!u->session && seq > u->last_seq)
                    u->last_seq = seq;
            }
        }
        if (rs == CW_ACCEPTED) {
            p->rcpts[i].seq = cw_store_reply_rcpt_seq(r, (size_t) k);
            if (p->users[i] && p->rcpts[i].seq > p->users[i]->last_seq)
                p->users[i]->last_seq = p->rcpts[i].seq;
            if (p->users[i] && !dup)
                p->users[i]->queued++;
        }
        accepted += rs == CW_ACCEPTED;
        full += rs == CW_QUEUE_FULL;
        errors += rs == CW_STORE_ERROR;
    }

    /* Push to recipients that are caught up (invariant 2). A duplicate was
     * pushed or queued the first time. */
    if (!failed && !dup && accepted) {
        const Causeway__V1__Send *send = p->env->send;
        char **to = p->to;
        Causeway__V1__Deliver dl;
        causeway__v1__deliver__init(&dl);
        dl.from = p->user;
        if (!send->broadcast) {
            /* The stored list: known users only (PROTOCOL.md 13.3), so a
             * push and a later read of the same entry say the same. */
            size_t n_to = 0;
            for (size_t i = 0; i < p->n; i++)
                if (p->store_idx[i] >= 0 &&
                    p->rcpts[i].status != (Causeway__V1__Status) CW_UNKNOWN_USER)
                    to[n_to++] = p->rcpts[i].name;
            dl.n_to = n_to;
            dl.to = to;
        }
        dl.broadcast = send->broadcast;
        dl.text = send->text;
        dl.timestamp_us = p->timestamp_us;
        dl.message_id = send->message_id;
        dl.durable = true;
        dl.receipt_requested = p->receipt_requested;
        dl.n_clock = p->env->n_clock;
        dl.clock = p->env->clock;
        for (size_t i = 0; i < p->n; i++) {
            if (p->rcpts[i].status != (Causeway__V1__Status) CW_ACCEPTED || !p->users[i])
                continue;
            cw_session_t *s = p->users[i]->session;
            if (!s || !cwor_takes_commit(b, s, p->rcpts[i].seq))
                continue;
            dl.seq = p->rcpts[i].seq;
            if (p->receipt_requested)
                s->receipts_seen = true;   /* its Acks look for receipts */
            cwor_push_stored(b, s, &dl);
        }
    }

    inflight_done(b, p);

    int status;
    const char *detail;
    if (failed) {
        status = CW_STORE_ERROR;
        detail = "the store failed; nothing was stored";
    } else if (accepted) {
        status = CW_ACCEPTED;
        detail = dup ? "already stored (duplicate message_id)" : "stored";
    } else if (full) {
        status = CW_QUEUE_FULL;
        detail = "every recipient queue is full; nothing stored";
    } else if (errors) {
        status = CW_STORE_ERROR;
        detail = "the store could not take the message; nothing was stored";
    } else {
        status = CW_OK;
        detail = "no known recipient; nothing stored";
    }
    cwe_reply_recipients(b, NULL, p->id + 1, p->id[0], p->request_id, status, detail,
                         dup && !failed, p->rcpts, p->rptrs, p->n);
    b->stats.messages_routed++;
    {
        const Causeway__V1__Send *send = p->env->send;
        size_t text_len = send->text ? strlen(send->text) : 0;
        int kind = cw_mon_kind(send->broadcast, send->n_to);
        b->mc.rx[1][kind]++;
        b->mc.rx_bytes[1][kind] += text_len;
        for (size_t i = 0; i < p->n; i++) {
            cw_mon_count(b->mc.fates, (int) p->rcpts[i].status);
            p->to[i] = p->rcpts[i].name;
        }
        if (b->now_ms < b->ring_until_ms) /* an operator watches (cwo_recent) */
            cw_mon_ring_add(b->ring, p->timestamp_us, p->user, p->to,
                            send->broadcast ? 0 : p->n, p->n, send->broadcast, true,
                            (uint32_t) accepted, send->text, text_len);
    }
    CW_INFO("stored %s -> %s%zu recipient(s): accepted %zu, full %zu%s (%s)", p->user,
            p->env->send->broadcast ? "all: " : "", p->n, accepted, full,
            dup ? ", duplicate" : "", cw_status_name(status));
}

static void on_push_read(cw_broker_t *b, pending_t *p, cw_store_reply_t *r)
{
    cw_session_t *s = session_of(b, p);
    if (!s)
        return; /* the session ended; its next login reads again */
    int st = cw_store_reply_status(r);
    if (st != CW_OK) {
        CW_WARN("reading %s's queue failed: %s", s->user->name, cw_status_name(st));
        cwor_read_failed(b, s); /* still catching up: the tick retries after a backoff */
        return;
    }
    cwor_read_returned(b, s);
    s->user->queued = cw_store_reply_pending(r);
    size_t n = 0;
    const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
    uint64_t hint = s->entry_hint;
    s->entry_hint = 0;
    for (size_t i = 0; i < n; i++) {
        Causeway__V1__Deliver dl, *clock = NULL;
        if (e[i].seq > s->user->last_seq) /* written by another broker (shared store) */
            s->user->last_seq = e[i].seq;
        entry_to_deliver(b, s->user->name, &e[i], &dl, &clock);
        dl.redelivered = p->redeliver;
        if (dl.receipt_requested)
            s->receipts_seen = true;   /* its Acks look for receipts */
        if (dl.expired)
            CW_INFO("message seq %llu for %s expired before delivery",
                    (unsigned long long) e[i].seq, s->user->name);
        bool ok = cwor_push_stored(b, s, &dl);
        if (clock)
            causeway__v1__deliver__free_unpacked(clock, NULL);
        if (!ok)
            return; /* the rest in order, from the tick */
    }
    bool cut = cw_store_reply_truncated(r) != 0;
    if (!cut)
        cwor_read_whole(s);
    if (n == 0 && cw_store_reply_pending(r) == 0 && hint <= s->pushed_seq && !cut)
        cwor_read_empty(b, s); /* shared store: everything known is acknowledged */
    if (n < p->max && hint > s->pushed_seq)
        ; /* shared: an ENTRY above what came arrived meanwhile: read again */
    else if (cut) {
        /* shared: an entry after these is not visible yet (store_if.h S1):
         * read again after a back-off or at its ENTRY, never caught up on
         * a cut read (nothing beyond the cut goes out but by a read) */
        CW_DEBUG("%s's queue read cut after seq %llu (not visible yet): reading again",
                 s->user->name, (unsigned long long) s->pushed_seq);
        cwor_read_cut(b, s);
    } else if (n < p->max)
        cwor_read_drained(b, s); /* the whole queue is out: pushes follow commits */
    cwor_flush_held(b, s);       /* what waited for the entries just pushed */
    if (cwor_catching_up(s))
        push_read(b, s);
}

/* Fetch and History replies: the entries as Reply.messages. */
static void on_listing(cw_broker_t *b, pending_t *p, cw_store_reply_t *r)
{
    int st = cw_store_reply_status(r);
    if (st != CW_OK) {
        cwe_reply_status(b, p->id + 1, p->id[0], p->request_id, CW_STORE_ERROR,
                         "the store could not read the queue");
        return;
    }
    size_t n = 0;
    const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
    /* Reply.truncated: more exist than the Reply carries (PROTOCOL.md
     * §4.5). History asked for one more than wanted, the oldest: if it
     * came, older messages exist. */
    bool more = false;
    if (p->kind == P_HISTORY && n > p->max) {
        e += n - p->max;
        n = p->max;
        more = true;
    }
    Causeway__V1__Deliver *dl = calloc(n ? n : 1, sizeof *dl);
    Causeway__V1__Deliver **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    Causeway__V1__Deliver **clocks = calloc(n ? n : 1, sizeof *clocks);
    if (!dl || !ptrs || !clocks) {
        cwe_reply_status(b, p->id + 1, p->id[0], p->request_id, CW_INTERNAL, "out of memory");
    } else {
        for (size_t i = 0; i < n; i++) {
            entry_to_deliver(b, p->user, &e[i], &dl[i], &clocks[i]);
            ptrs[i] = &dl[i];
        }
        /* At most max_reply bytes of messages, and always at least one:
         * Fetch keeps the first (lowest seq; the rest stay queued for the
         * next Fetch), History the newest. */
        size_t keep = 0, bytes = 0;
        for (size_t k = 0; k < n; k++) {
            size_t i = p->kind == P_HISTORY ? n - 1 - k : k;
            bytes += causeway__v1__deliver__get_packed_size(&dl[i]) + 4;
            if (keep && bytes > b->cfg.max_reply)
                break;
            keep++;
        }
        size_t first = p->kind == P_HISTORY ? n - keep : 0;
        if (keep < n)
            more = true;
        if (p->kind == P_FETCH) {
            /* Still pending after the read: every entry carried but the
             * expired ones (the read removed those) and whatever the read
             * or max_reply left out. */
            uint64_t carried = 0;
            for (size_t i = 0; i < keep; i++)
                carried += e[i].status != CW_EXPIRED;
            more = cw_store_reply_pending(r) > carried;
        }
        cw_env_t out;
        Causeway__V1__Reply reply;
        char detail[96];
        cw_env_init(&out, p->request_id);
        causeway__v1__reply__init(&reply);
        reply.status = (Causeway__V1__Status) CW_OK;
        if (keep < n)
            snprintf(detail, sizeof detail, "%zu message%s (truncated at max-reply %u bytes)",
                     keep, keep == 1 ? "" : "s", b->cfg.max_reply);
        else if (n && more)
            snprintf(detail, sizeof detail, "%zu message%s (more exist)", n, n == 1 ? "" : "s");
        else if (n)
            snprintf(detail, sizeof detail, "%zu message%s", n, n == 1 ? "" : "s");
        else
            snprintf(detail, sizeof detail, "no messages");
        reply.detail = detail;
        reply.truncated = more;
        reply.n_messages = keep;
        reply.messages = ptrs + first;
        out.body_case = CW_BODY(REPLY);
        out.reply = &reply;
        cwe_send_to_id(b, p->id + 1, p->id[0], &out);
        for (size_t i = 0; i < n; i++)
            if (clocks[i])
                causeway__v1__deliver__free_unpacked(clocks[i], NULL);
    }
    free(dl);
    free(ptrs);
    free(clocks);
}

/* The Ack of `reader` just committed made read receipts (receipts.h) in
 * the queues of the entries' senders. Each made entry tells the receipt's
 * seq in the sender's queue (seq), the read time (timestamp_us) and the
 * message's seq in the reader's queue (expires_us). A caught-up sender
 * session is pushed the receipt at once, like a committed append; one that
 * is catching up reads it from its queue in order; an offline sender gets
 * it at its next login. Only the sender's own session is told anything. */
static void push_receipts(cw_broker_t *b, const char *reader, cw_store_reply_t *r)
{
    size_t n = 0;
    const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
    for (size_t i = 0; i < n; i++) {
        cwb_user_t *u = cw_sessions_user(b->sessions, e[i].sender);
        if (!u)
            continue;
        if (e[i].seq > u->last_seq)
            u->last_seq = e[i].seq;
        u->queued++;
        cw_session_t *s = u->session;
        if (!s || !cwor_takes_commit(b, s, e[i].seq))
            continue;
        Causeway__V1__Receipt rc;
        Causeway__V1__Deliver dl;
        causeway__v1__receipt__init(&rc);
        causeway__v1__deliver__init(&dl);
        rc.message_id = (char *) e[i].message_id;
        rc.reader = (char *) reader;
        rc.read_us = e[i].timestamp_us;
        rc.seq = e[i].seq;
        rc.message_seq = e[i].expires_us;
        dl.from = (char *) reader;
        dl.text = "";
        dl.message_id = "";
        dl.seq = e[i].seq;
        dl.timestamp_us = e[i].timestamp_us;
        dl.durable = true;
        dl.receipt = &rc;
        cwor_push_stored(b, s, &dl);
    }
}

static void on_ack(cw_broker_t *b, pending_t *p, cw_store_reply_t *r)
{
    int st = cw_store_reply_status(r);
    cw_session_t *s = session_of(b, p);
    cwb_user_t *u = st == CW_OK ? cw_sessions_user(b->sessions, p->user) : NULL;
    if (u) {
        u->queued = cw_store_reply_pending(r);
        /* The store accepted the Ack, so seqs up to p->seq exist. With a
         * shared store they may be ones this broker has not learnt yet
         * (appended through another broker, acked by a client that got
         * them there, before the re-read after the claim raised them):
         * the queue's last seq is at least the acked one (outorder.h
         * invariant 2, pushed_seq <= last_seq, once cwor_acked moves
         * pushed_seq there). */
        if (p->seq > u->last_seq)
            u->last_seq = p->seq;
    }
    if (st == CW_OK && s) {
        cwor_acked(b, s, p->seq);
        push_read(b, s);
    }
    if (st == CW_OK)
        push_receipts(b, p->user, r);
    st = wire_status(st);
    const char *detail = st == CW_OK            ? "acknowledged"
                         : st == CW_BAD_REQUEST ? "seq is beyond the last message of the queue"
                                                : "the store could not record the ack";
    cwe_reply_status(b, p->id + 1, p->id[0], p->request_id, st, detail);
}

/* A resume clock write is answered: write the newer one that waited. */
static void on_clock_saved(cw_broker_t *b, pending_t *p, cw_store_reply_t *r)
{
    cwb_user_t *u = cw_sessions_user(b->sessions, p->user);
    if (cw_store_reply_status(r) != CW_OK)
        CW_ERROR("saving the clock of %s failed: %s", p->user,
                 cw_status_name(cw_store_reply_status(r)));
    if (!u)
        return;
    u->clock_saving = false;
    if (cw_store_reply_status(r) != CW_OK) {
        if (u->clock_saved == p->seq)
            u->clock_saved = 0; /* the user's next frame with a clock writes it again */
        return;
    }
    if (u->clock_own > u->clock_saved)
        cwd_save_clock(b, u, false);
}

/* ------------------------------------------------------------------------
 * Shared stores: claims, remote live messages and events (store_if.h S1-S6)
 */

/* A claim is answered: queued for broker.c, which finishes the Login
 * (cwd_next_claimed). */
static void on_claim(cw_broker_t *b, pending_t *p, cw_store_reply_t *r)
{
    cw_durable_t *d = b->durable;
    int st = cw_store_reply_status(r);
    d->sh.claims += st == CW_OK;
    d->sh.claims_taken += st == CW_NAME_TAKEN;
    if (d->n_claimed == d->cap_claimed) {
        size_t cap = d->cap_claimed ? d->cap_claimed * 2 : 16;
        cwd_claimed_t *c = realloc(d->claimed, cap * sizeof *c);
        if (!c) {
            /* Claiming sessions never expire for silence (broker.c tick):
             * this one is closed at the next reap, its Login answered
             * INTERNAL now (every request gets one Reply), and a claim it
             * got is released here. */
            CW_ERROR("out of memory: the claim of %s is dropped", p->user);
            cwb_user_t *u = cw_sessions_user(b->sessions, p->user);
            cw_session_t *s = u ? u->session : NULL;
            if (s && s->claiming && s->serial == p->serial && !s->dead) {
                cwe_reply_status(b, s->id + 1, s->id[0], s->login_rid, CW_INTERNAL,
                                 "out of memory");
                s->dead = true;
                b->n_dead++;
            }
            if (st == CW_OK || st == CW_STORE_ERROR)
                cwd_release(b, p->user);
            return;
        }
        d->claimed = c;
        d->cap_claimed = cap;
    }
    cwd_claimed_t *c = &d->claimed[d->n_claimed++];
    snprintf(c->user, sizeof c->user, "%s", p->user);
    c->serial = p->serial;
    c->status = st;
    c->resumed = st == CW_OK && r->resumed;
    c->resume = p->resume;
}

bool cwd_next_claimed(cw_broker_t *b, cwd_claimed_t *out)
{
    cw_durable_t *d = b->durable;
    if (!d || !d->n_claimed)
        return false;
    *out = d->claimed[0];
    memmove(d->claimed, d->claimed + 1, (d->n_claimed - 1) * sizeof *d->claimed);
    d->n_claimed--;
    return true;
}

int cwd_claim(cw_broker_t *b, cw_session_t *s, bool resume)
{
    cw_durable_t *d = b->durable;
    if (d->closing)
        return CW_SHUTTING_DOWN;
    pending_t *p = pending_new(d, P_CLAIM, s->id + 1, s->id[0], s->login_rid, s->user->name);
    if (!p)
        return CW_INTERNAL;
    p->serial = s->serial;
    p->resume = resume;
    int rc = d->ops->claim_session(d->store, p->token, s->user->name, s->token,
                                   sizeof s->token, resume);
    if (rc != CW_OK) {
        pending_free(p);
        return submit_status(rc);
    }
    pending_push(d, p);
    return CW_OK;
}

/* Submits the release; with a requester, its Reply follows the store's
 * answer. false (nothing submitted) when there is no shared store or the
 * submission failed (logged). */
static bool release(cw_broker_t *b, const char *user, const void *id, size_t id_len,
                    uint64_t request_id)
{
    cw_durable_t *d = b->durable;
    if (!d || !b->shared)
        return false;
    pending_t *p = pending_new(d, P_RELEASE, id, id_len, request_id, user);
    int rc = p ? d->ops->release_session(d->store, p->token, user) : CW_ERR_NOMEM;
    if (rc != CW_OK) {
        CW_WARN("cannot release the session of %s now (%s); it ends with this broker's lease",
                user, cw_status_name(rc));
        pending_free(p);
        return false;
    }
    pending_push(d, p);
    return true;
}

void cwd_release(cw_broker_t *b, const char *user)
{
    (void) release(b, user, NULL, 0, 0);
}

bool cwd_release_then_reply(cw_broker_t *b, const char *user, const void *id, size_t id_len,
                            uint64_t request_id)
{
    return release(b, user, id, id_len, request_id);
}

/* The Reply of a live Send with remote recipients: every recipient in the
 * sender's order, local and remote outcomes merged. */
static void live_reply(cw_broker_t *b, const pending_t *p, size_t n)
{
    cwe_reply_recipients(b, NULL, p->id + 1, p->id[0], p->request_id, CW_OK, "sent", false,
                         p->rcpts, p->rptrs, n);
}

void cwd_live_send(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                   cw_env_t **envp, const Causeway__V1__RecipientStatus *rcpts,
                   const bool *remote, size_t n, const zmq_msg_t *frame)
{
    cw_durable_t *d = b->durable;
    cw_env_t *env = *envp;
    pending_t *p = pending_new_cap(d, P_LIVE, id, id_len, env->request_id, s->user->name, n);
    if (!p) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        return;
    }
    size_t n_remote = 0;
    for (size_t i = 0; i < n; i++) {
        p->rcpts[i] = rcpts[i];
        p->store_idx[i] = remote[i] ? (long) n_remote : -1;
        if (remote[i])
            p->to[n_remote++] = rcpts[i].name;
    }
    p->n = n;
    int rc = CW_FLOODED;
    if (s->store_reqs < b->cfg.store_inflight && s->store_bytes < b->cfg.store_inflight_bytes)
        rc = d->ops->live_send(d->store, p->token, (const char *const *) p->to, n_remote,
                               zmq_msg_data((zmq_msg_t *) frame), zmq_msg_size((zmq_msg_t *) frame));
    if (rc != CW_OK) {
        /* The local recipients have it; the others are told why not. */
        int st = submit_status(rc);
        for (size_t i = 0; i < n; i++)
            if (p->store_idx[i] >= 0) {
                p->rcpts[i].status = (Causeway__V1__Status) st;
                cw_mon_count(b->mc.fates, st);
            }
        live_reply(b, p, n);
        pending_free(p);
        return;
    }
    p->env = env; /* the names may point into the request */
    *envp = NULL;
    budget_charge(s, p, 64 + zmq_msg_size((zmq_msg_t *) frame) + 16 * n_remote, 0);
    pending_push(d, p);
}

static void on_live_sent(cw_broker_t *b, pending_t *p, cw_store_reply_t *r)
{
    cw_durable_t *d = b->durable;
    bool ok = cw_store_reply_status(r) == CW_OK;
    for (size_t i = 0; i < p->n; i++) {
        long k = p->store_idx[i];
        if (k < 0)
            continue;
        int st = ok && (size_t) k < cw_store_reply_rcpts(r) ? cw_store_reply_rcpt_status(r, (size_t) k)
                                                           : CW_STORE_ERROR;
        if (st != CW_DELIVERED && st != CW_OFFLINE)
            st = CW_STORE_ERROR;
        p->rcpts[i].status = (Causeway__V1__Status) st;
        cw_mon_count(b->mc.fates, st);
        d->sh.live_remote += st == CW_DELIVERED;
    }
    live_reply(b, p, p->n);
}

/* ENTRY (S2): entry e of u's queue became visible. A hint with content:
 * pushed if it is the next one for a caught-up session, else it makes the
 * session read. */
static void on_entry(cw_broker_t *b, cw_store_reply_t *r)
{
    size_t n = 0;
    const cw_store_entry_t *e = cw_store_reply_entries(r, &n);
    b->durable->sh.entry_events++;
    cwb_user_t *u = r->user ? cw_sessions_user(b->sessions, r->user) : NULL;
    if (!u || !e)
        return;
    if (e->seq > u->last_seq)
        u->last_seq = e->seq;
    cw_session_t *s = u->session;
    if (!s || s->dead || s->claiming || s->pull || e->seq <= s->pushed_seq)
        return;
    switch (s->delivery) {
    case CWOR_CAUGHT_UP:
        if (cwor_takes_commit(b, s, e->seq)) {
            Causeway__V1__Deliver dl, *clock = NULL;
            entry_to_deliver(b, u->name, e, &dl, &clock);
            if (dl.receipt_requested)
                s->receipts_seen = true; /* its Acks look for receipts */
            cwor_push_stored(b, s, &dl);
            if (clock)
                causeway__v1__deliver__free_unpacked(clock, NULL);
            cwor_flush_held(b, s); /* what waited for this entry */
            if (cwor_catching_up(s))
                push_read(b, s);
        } else {
            cwor_fall_behind(b, s); /* others' entries it was not sent: read them */
            push_read(b, s);
        }
        break;
    case CWOR_READING:
        if (e->seq > s->entry_hint)
            s->entry_hint = e->seq; /* the read may have missed it: no lost wake-up */
        break;
    case CWOR_CATCHING_UP:
        cwor_entry_seen(b, s); /* a read cut before it: read now */
        push_read(b, s);
        break;
    default:
        break; /* NEW: the login's read will see it */
    }
}

/* LIVE (S5): a live frame from another broker for u, after entry r->seq. */
static void on_live(cw_broker_t *b, cw_store_reply_t *r)
{
    cwb_user_t *u = r->user ? cw_sessions_user(b->sessions, r->user) : NULL;
    cw_session_t *s = u ? u->session : NULL;
    if (!s || s->dead || s->claiming || !r->frame || !r->frame_len)
        return; /* live messages are at most once */
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, r->frame_len) != 0)
        return;
    memcpy(zmq_msg_data(&msg), r->frame, r->frame_len);
    if (cwor_send_live_after(b, s, &msg, r->seq) == CW_DELIVERED)
        b->durable->sh.live_in++;
}

/* TAKEOVER (S4): u's session moved to another broker (the client resumed
 * there): the local one is closed at once, without presence (the user is
 * online elsewhere) and without a release (the claim is not ours). */
static void on_takeover(cw_broker_t *b, cw_store_reply_t *r)
{
    cwb_user_t *u = r->user ? cw_sessions_user(b->sessions, r->user) : NULL;
    if (!u)
        return;
    u->remote_online = true;
    cw_session_t *s = u->session;
    if (!s || s->claiming) /* a claim in flight is newer than what was taken */
        return;
    s->taken_over = true;
    if (!s->dead) {
        s->dead = true;
        b->n_dead++;
    }
    b->durable->sh.takeovers++;
    CW_INFO("%s: session taken over by another broker", u->name);
}

/* The cache learns a user (NEW_USER, PRESENCE of a name it did not know). */
static cwb_user_t *cache_user(cw_broker_t *b, const char *name)
{
    if (!name || cw_name_check(name, CW_NAME_MAX_HARD, NULL) != CW_OK)
        return NULL;
    bool created = false;
    cwb_user_t *u = cw_sessions_user_add(b->sessions, name, &created);
    if (u && created)
        u->stored = CW_USER_STORED;
    return u;
}

/* PRESENCE (S6): u came or went on another broker; local sessions that
 * want presence are told (best effort, PROTOCOL.md §8). */
static void on_presence(cw_broker_t *b, cw_store_reply_t *r)
{
    cwb_user_t *u = cache_user(b, r->user);
    if (!u || (u->session && !u->session->claiming))
        return; /* served here: this broker announces it itself */
    bool online = r->created != 0;
    if (u->remote_online == online)
        return;
    u->remote_online = online;
    cwe_announce(b, u->name, online,
                 online ? CAUSEWAY__V1__PRESENCE__REASON__REASON_LOGIN
                        : CAUSEWAY__V1__PRESENCE__REASON__REASON_LOGOUT,
                 NULL);
}

/* NEW_USER (S3): a name made on another broker joins the cache. */
static void on_new_user(cw_broker_t *b, cw_store_reply_t *r)
{
    if (!r->n_users || !r->users)
        return;
    cwb_user_t *u = cache_user(b, r->users[0].name);
    if (!u)
        return;
    if (r->users[0].last_seq > u->last_seq && !u->session)
        u->last_seq = r->users[0].last_seq;
    if (!u->session)
        u->remote_online = r->users[0].online;
}

/* FENCED (store_if.h): this broker could not renew its lease in time, so
 * other brokers may take its users over: it stops serving. Every session
 * is closed (the reaper releases its claim and says EXPIRED), so that the
 * clients fail over to another broker; logins are refused until UNFENCED
 * (handle_login asks cwd_fenced). A session whose Login still waits for
 * its claim gets that Login's one Reply here, SHUTTING_DOWN as a Login
 * refused while fenced (the claim's answer, when it comes, finds no
 * session and releases what it may have written: broker.c on_claims). */
static void on_fenced(cw_broker_t *b)
{
    if (b->durable->sh.fenced)
        return;
    b->durable->sh.fenced = true;
    b->durable->sh.fences++;
    size_t closed = 0;
    for (size_t i = 0; i < cw_sessions_count(b->sessions); i++) {
        cw_session_t *s = cw_sessions_at(b->sessions, i);
        if (s->dead)
            continue;
        if (s->claiming)
            cwe_reply_status(b, s->id + 1, s->id[0], s->login_rid, CW_SHUTTING_DOWN,
                             CWD_FENCED_DETAIL);
        s->dead = true;
        b->n_dead++;
        closed++;
    }
    b->durable->sh.fenced_sessions += closed;
    CW_WARN("store lease lapsed: fenced; %zu sessions closed, logins refused until it is "
            "renewed",
            closed);
}

static void on_unfenced(cw_broker_t *b)
{
    if (!b->durable->sh.fenced)
        return;
    b->durable->sh.fenced = false;
    CW_INFO("store lease renewed: serving again");
}

bool cwd_fenced(const cw_broker_t *b)
{
    return b->durable && b->durable->sh.fenced;
}

/* An unsolicited event of the store. SQLite raises only DONE (its batches
 * complete in submission order, which the FIFO already relies on); a
 * shared store raises the others (store_if.h S1-S6). */
static void on_event(cw_broker_t *b, cw_store_reply_t *r)
{
    switch (cw_store_reply_kind(r)) {
    case CW_STORE_EV_ENTRY: on_entry(b, r); break;
    case CW_STORE_EV_LIVE: on_live(b, r); break;
    case CW_STORE_EV_TAKEOVER: on_takeover(b, r); break;
    case CW_STORE_EV_PRESENCE: on_presence(b, r); break;
    case CW_STORE_EV_NEW_USER: on_new_user(b, r); break;
    case CW_STORE_EV_DONE: break;
    case CW_STORE_EV_FENCED: on_fenced(b); break;
    case CW_STORE_EV_UNFENCED: on_unfenced(b); break;
    default:
        CW_WARN("store event %d ignored (unknown kind)", cw_store_reply_kind(r));
        break;
    }
}

void cwd_shared_stats(cw_broker_t *b, cwd_shared_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (b->durable)
        *out = b->durable->sh;
}

void cwd_on_replies(cw_broker_t *b)
{
    cw_durable_t *d = b->durable;
    if (!d)
        return;
    cw_store_reply_t *r;
    while ((r = d->ops->recv(d->store, 0))) {
        uint64_t token = cw_store_reply_token(r);
        if (cw_store_reply_is_event(r)) { /* never in the FIFO (store_if.h, 3) */
            on_event(b, r);
            cw_store_reply_destroy(&r);
            continue;
        }
        pending_t *p = pending_pop(d);
        /* Replies come in submission order (store_if.h); anything else is
         * a bug: fail the skipped requests rather than answer them wrongly. */
        while (p && p->token != token) {
            CW_ERROR("store reply %llu out of order (expected %llu)", (unsigned long long) token,
                     (unsigned long long) p->token);
            if (!P_SILENT(p))
                cwe_reply_status(b, p->id + 1, p->id[0], p->request_id, CW_INTERNAL,
                                 "store reply lost");
            budget_release(b, p);
            inflight_done(b, p);
            pending_free(p);
            p = pending_pop(d);
        }
        if (!p) {
            cw_store_reply_destroy(&r);
            continue;
        }
        b->now_ms = cw_mono_ms();
        budget_release(b, p); /* before the reply: a client answered may submit again */
        switch (p->kind) {
        case P_APPEND: on_append(b, p, r); break;
        case P_PUSH_READ: on_push_read(b, p, r); break;
        case P_FETCH:
        case P_HISTORY: on_listing(b, p, r); break;
        case P_ACK: on_ack(b, p, r); break;
        case P_CLOCK: on_clock_saved(b, p, r); break;
        case P_CLAIM: on_claim(b, p, r); break;
        case P_LIVE: on_live_sent(b, p, r); break;
        case P_RELEASE:
            if (cw_store_reply_status(r) != CW_OK)
                CW_WARN("releasing the session of %s failed: %s", p->user,
                        cw_status_name(cw_store_reply_status(r)));
            if (p->id[0]) /* a Logout waited for it (cwd_release_then_reply) */
                cwe_reply_status(b, p->id + 1, p->id[0], p->request_id, CW_OK, "logged out");
            break;
        case P_ADD_USER: {
            cwb_user_t *u = cw_sessions_user(b->sessions, p->user);
            bool ok = cw_store_reply_status(r) == CW_OK;
            if (u)
                u->stored = ok ? CW_USER_STORED : CW_USER_UNSTORED;
            if (!ok) /* submitted again before the next append naming the user */
                CW_ERROR("storing user %s failed: %s", p->user,
                         cw_status_name(cw_store_reply_status(r)));
            break;
        }
        }
        pending_free(p);
        cw_store_reply_destroy(&r);
    }
    cwd_check(b);
}

/* ------------------------------------------------------------------------
 * Requests
 */

int cwd_add_user(cw_broker_t *b, const char *name)
{
    cw_durable_t *d = b->durable;
    if (!d)
        return CW_OK;
    pending_t *p = pending_new(d, P_ADD_USER, NULL, 0, 0, name);
    if (!p)
        return CW_INTERNAL;
    int rc = d->ops->add_user(d->store, p->token, name);
    if (rc != CW_OK) {
        pending_free(p);
        return submit_status(rc);
    }
    pending_push(d, p);
    cwb_user_t *u = cw_sessions_user(b->sessions, name);
    if (u) /* else the caller is about to create it, and marks it */
        u->stored = CW_USER_STORING;
    return CW_OK;
}

void cwd_save_clock(cw_broker_t *b, cwb_user_t *u, bool now)
{
    cw_durable_t *d = b->durable;
    if (!d || !u->clock_len || u->clock_own <= u->clock_saved || (u->clock_saving && !now) ||
        d->closing)
        return;
    pending_t *p = pending_new(d, P_CLOCK, NULL, 0, 0, u->name);
    if (!p)
        return; /* written with the user's next clock */
    p->seq = u->clock_own;
    int rc = d->ops->save_clock(d->store, p->token, u->name, u->clock_own, u->clock,
                                u->clock_len);
    if (rc != CW_OK) {
        pending_free(p);
        return; /* the pipe is full: written with the user's next clock */
    }
    pending_push(d, p);
    u->clock_saving = true;
    u->clock_saved = u->clock_own;
}

void cwd_on_login(cw_broker_t *b, cw_session_t *s)
{
    if (!b->durable || s->pull)
        return;
    /* Everything unacknowledged goes out again, from the start of the queue,
     * on a chain of its own: this connection may be a new process. */
    cwor_start(b, s);
    push_read(b, s);
}

void cwd_tick(cw_broker_t *b)
{
    if (!b->durable)
        return;
    size_t n = cw_sessions_count(b->sessions);
    for (size_t i = 0; i < n; i++) {
        cw_session_t *s = cw_sessions_at(b->sessions, i);
        if (s->dead || s->pull)
            continue;
        cwor_tick(b, s);  /* redelivery when an ack is overdue */
        push_read(b, s); /* also retries reads that failed */
    }
    cwd_check(b);
}

void cwd_send(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s, cw_env_t **envp)
{
    cw_durable_t *d = b->durable;
    cw_env_t *env = *envp;
    uint64_t rid = env->request_id;
    const Causeway__V1__Send *send = env->send;
    if (!budget_or_reply(b, id, id_len, s, rid))
        return;
    size_t cap = send->broadcast ? cw_sessions_user_count(b->sessions) : send->n_to;
    if (cap == 0)
        cap = 1;
    pending_t *p = pending_new_cap(d, P_APPEND, id, id_len, rid, s->user->name, cap);
    /* Small sends (the common case) keep their scratch on the stack. */
    enum { SMALL = 16, SMALL_CLOCK = 512 };
    cw_store_rcpt_t srcpts_small[SMALL];
    uint8_t clock_small[SMALL_CLOCK];
    cw_store_rcpt_t *srcpts = cap <= SMALL ? srcpts_small : calloc(cap, sizeof *srcpts);
    Causeway__V1__Deliver clock_holder;
    uint8_t *clock = NULL;
    size_t clock_len = 0;
    if (cap <= SMALL)
        memset(srcpts_small, 0, sizeof srcpts_small);
    if (!p || !srcpts) {
        cwe_reply_status(b, id, id_len, rid, CW_INTERNAL, "out of memory");
        goto fail;
    }
    long n = (long) cw_sessions_resolve(b->sessions, send->broadcast, send->to, send->n_to,
                                        s->user, (const char **) p->to, p->users);
    for (long i = 0; i < n; i++) {
        causeway__v1__recipient_status__init(&p->rcpts[i]);
        p->rcpts[i].name = p->to[i];
    }
    size_t n_store = 0;
    /* A user whose name is not in the store yet (its first write failed) is
     * written again, ahead of this append in the store's order. */
    for (long i = 0; i < n; i++) {
        if (p->users[i] && p->users[i]->stored == CW_USER_UNSTORED) {
            int rc = cwd_add_user(b, p->users[i]->name);
            if (rc != CW_OK) {
                cwe_reply_status(b, id, id_len, rid, rc, "cannot store a recipient's name now");
                goto fail;
            }
        }
    }
    for (long i = 0; i < n; i++) {
        if (p->users[i] || b->shared) {
            /* A shared store: names this broker does not know may have
             * been made on another; the store decides (store_if.h S3). */
            p->store_idx[i] = (long) n_store;
            srcpts[n_store++].name = p->users[i] ? p->users[i]->name : p->to[i];
        } else {
            p->store_idx[i] = -1;
            p->rcpts[i].status = (Causeway__V1__Status) CW_UNKNOWN_USER;
        }
    }
    p->n = (size_t) n;
    p->timestamp_us = b->now_us;
    /* With no known recipient nothing can be stored, but a message id may
     * repeat a stored message, which is answered as the duplicate it is
     * (§13.2): the store is asked with no recipients. */
    bool ask_only = n_store == 0 && send->message_id && *send->message_id;
    if (n_store == 0 && !ask_only) {
        /* Nobody to store for: answer now, through the same reply path. */
        cwe_reply_recipients(b, NULL, id, id_len, rid, CW_OK, "no known recipient; nothing stored",
                             false, p->rcpts, p->rptrs, p->n);
        goto fail;
    }
    if (b->cfg.store_max && n_store) {
        cw_store_counters_t st;
        d->ops->stats(d->store, &st);
        if (st.pending + d->inflight_entries + n_store > b->cfg.store_max) {
            char detail[160];
            snprintf(detail, sizeof detail,
                     "the store holds %llu messages waiting; %zu more would pass store-max %u; "
                     "nothing stored",
                     (unsigned long long) (st.pending + d->inflight_entries), n_store,
                     b->cfg.store_max);
            cwe_reply_status(b, id, id_len, rid, CW_STORE_FULL, detail);
            goto fail;
        }
    }
    causeway__v1__deliver__init(&clock_holder);
    clock_holder.n_clock = env->n_clock;
    clock_holder.clock = env->clock;
    /* Read receipts (PROTOCOL.md 13.11, receipts.h): asked for by the Send
     * or the session, and only for a message with an id to name it by. */
    clock_holder.receipt_requested =
        (send->receipt || s->receipts) && send->message_id && *send->message_id;
    p->receipt_requested = clock_holder.receipt_requested;
    clock_len = causeway__v1__deliver__get_packed_size(&clock_holder);
    if (clock_len) {
        clock = clock_len <= SMALL_CLOCK ? clock_small : malloc(clock_len);
        if (!clock) {
            cwe_reply_status(b, id, id_len, rid, CW_INTERNAL, "out of memory");
            goto fail;
        }
        causeway__v1__deliver__pack(&clock_holder, clock);
    }
    cw_store_msg_t msg;
    memset(&msg, 0, sizeof msg);
    msg.sender = s->user->name;
    msg.message_id = send->message_id;
    msg.text = send->text ? send->text : "";
    msg.text_len = strlen(msg.text);
    msg.clock = clock;
    msg.clock_len = clock_len;
    msg.timestamp_us = b->now_us;
    msg.ttl_s = send->ttl_s;
    msg.broadcast = send->broadcast;
    msg.rcpts = srcpts;
    msg.n_rcpts = n_store;
    int rc = d->ops->append(d->store, p->token, &msg);
    if (rc != CW_OK) {
        cwe_reply_status(b, id, id_len, rid, submit_status(rc), submit_detail(rc));
        goto fail;
    }
    p->env = env; /* the pending record owns the request from here */
    *envp = NULL;
    {
        uint64_t cost = 64 + msg.text_len + clock_len + strlen(msg.message_id ? msg.message_id : "");
        for (size_t i = 0; i < n_store; i++)
            cost += 8 + strlen(srcpts[i].name);
        /* The Reply lists every recipient (a broadcast: every user). */
        budget_charge(s, p, cost, 64 + (uint64_t) n * (16 + CW_NAME_MAX_HARD));
        p->n_entries = n_store;
        d->inflight_entries += n_store;
    }
    for (long i = 0; i < n; i++)
        if (p->store_idx[i] >= 0 && p->users[i]) {
            p->users[i]->durable_inflight++;
            p->users[i]->last_append_token = p->token;
        }
    pending_push(d, p);
    if (srcpts != srcpts_small)
        free(srcpts);
    if (clock != clock_small)
        free(clock);
    return;
fail:
    pending_free(p);
    if (srcpts != srcpts_small)
        free(srcpts);
    if (clock != clock_small)
        free(clock);
}

void cwd_ack(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s, const cw_env_t *env)
{
    cw_durable_t *d = b->durable;
    /* No budget check: an Ack frees resources (PROTOCOL.md 14.1); it is
     * charged like any request, and the store pipe's own bound holds. */
    pending_t *p = pending_new(d, P_ACK, id, id_len, env->request_id, s->user->name);
    if (!p) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        return;
    }
    p->serial = s->serial;
    p->seq = env->ack->seq;
    /* Read receipts (receipts.h) are looked for only when an acknowledged
     * entry may have asked for one: this session was sent such an entry,
     * or the Ack goes beyond what this session was pushed (entries it
     * fetched, or got from an earlier broker or process). */
    bool receipts = s->receipts_seen || p->seq > s->pushed_seq;
    int rc = d->ops->ack(d->store, p->token, s->user->name, p->seq, receipts);
    if (rc != CW_OK) {
        cwe_reply_status(b, id, id_len, env->request_id, submit_status(rc), submit_detail(rc));
        pending_free(p);
        return;
    }
    budget_charge(s, p, 64, 0);
    pending_push(d, p);
}

/* Fetch and History: a read-only listing of the caller's queue. */
static void listing(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                    const cw_env_t *env, pending_kind_t kind, uint32_t want)
{
    cw_durable_t *d = b->durable;
    if (!budget_or_reply(b, id, id_len, s, env->request_id))
        return;
    pending_t *p = pending_new(d, kind, id, id_len, env->request_id, s->user->name);
    if (!p) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        return;
    }
    if (want == 0)
        want = FETCH_DEFAULT;
    if (want > FETCH_MAX)
        want = FETCH_MAX;
    p->max = want;
    /* History: one more, to tell whether older messages exist (truncated);
     * Fetch knows from the queue's pending count. */
    int rc = kind == P_FETCH ? d->ops->read(d->store, p->token, s->user->name, 0, want)
                             : d->ops->history(d->store, p->token, s->user->name, want + 1);
    if (rc != CW_OK) {
        cwe_reply_status(b, id, id_len, env->request_id, submit_status(rc), submit_detail(rc));
        pending_free(p);
        return;
    }
    budget_charge(s, p, 64, b->cfg.max_reply);
    pending_push(d, p);
}

void cwd_fetch(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s, const cw_env_t *env)
{
    listing(b, id, id_len, s, env, P_FETCH, env->fetch->max);
}

void cwd_history(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                 const cw_env_t *env)
{
    listing(b, id, id_len, s, env, P_HISTORY, env->history->last);
}

/* ------------------------------------------------------------------------
 * Life cycle
 */

int cwd_open(cw_broker_t *b, char *err, size_t errlen)
{
    const char *where = NULL;
    const cw_store_ops_t *ops = cw_store_choose(b->cfg.data, b->cfg.store, &where, err, errlen);
    if (!ops)
        return -1;
    cw_store_config_t cfg;
    cw_store_config_init(&cfg);
    cfg.queue_quota = b->cfg.queue_max;
    cfg.retention = b->cfg.retention;
    cfg.default_ttl_s = b->cfg.ttl_s;
    cfg.recover = b->cfg.recover_store;
    cfg.wait_replicas = b->cfg.redis_wait;
    cfg.retry_ms = b->cfg.store_retry_ms;
    cfg.lease_ms = b->cfg.lease_ms;
    cfg.broker_id = b->cfg.broker_id;
    cw_store_backend_t *store = NULL;
    cw_store_loaded_t loaded;
    int64_t t0 = cw_mono_ms();
    if (ops->open(where, &cfg, &store, &loaded, err, errlen) != CW_OK)
        return -1;
    cw_store_user_t *users = loaded.users;
    size_t n = loaded.n_users;
    uint64_t pending = 0;
    for (size_t i = 0; i < n; i++) {
        cwb_user_t *u = NULL;
        if (cw_name_check(users[i].name, CW_NAME_MAX_HARD, NULL) != CW_OK ||
            !(u = cw_sessions_user_add(b->sessions, users[i].name, NULL))) {
            CW_WARN("ignoring stored user '%s'", users[i].name);
            continue;
        }
        u->stored = CW_USER_STORED;
        u->last_seq = users[i].last_seq;
        u->queued = users[i].pending;
        u->remote_online = ops->shared && users[i].online;
        pending += users[i].pending;
    }
    cw_store_clock_t *clocks = loaded.clocks;
    size_t n_clocks = loaded.n_clocks;
    for (size_t i = 0; i < n_clocks; i++) {
        cwb_user_t *u = cw_sessions_user(b->sessions, clocks[i].name);
        if (!u) { /* every clock's user logged in, so is in the user log */
            CW_WARN("ignoring the stored clock of '%s'", clocks[i].name);
            continue;
        }
        free(u->clock);
        u->clock = clocks[i].clock; /* taken over */
        u->clock_len = clocks[i].clock_len;
        u->clock_own = u->clock_saved = clocks[i].own;
        clocks[i].clock = NULL;
    }
    cw_store_loaded_free(&loaded);
    b->durable = calloc(1, sizeof *b->durable);
    if (!b->durable) {
        snprintf(err, errlen, "out of memory");
        ops->close(&store);
        return -1;
    }
    b->durable->damaged_seen = zhashx_new();   /* NULL: every read counts */
    b->durable->ops = ops;
    b->durable->store = store;
    b->shared = ops->shared != 0;
    CW_INFO("store %s (%s) opened in %lld ms: %zu users, %llu messages waiting", where,
            ops->name, (long long) (cw_mono_ms() - t0), n, (unsigned long long) pending);
    return 0;
}

void cwd_close(cw_broker_t *b)
{
    cw_durable_t *d = b->durable;
    if (!d)
        return;
    /* Answer what the store still owes: a sender whose message is being
     * committed gets its ACCEPTED (or error) before the broker exits. No
     * new push reads meanwhile, so the FIFO drains. */
    /* The clocks not yet written go first (each behind the user's write in
     * flight, if any; the drain below waits for both). */
    for (size_t i = 0; i < cw_sessions_user_count(b->sessions); i++)
        cwd_save_clock(b, cw_sessions_user_at(b->sessions, i), true);
    /* A shared store: this broker's claims end (SIGTERM drains, §5), the
     * claiming ones too (each release follows its claim in the store's
     * order); a taken-over session's claim is another broker's. */
    for (size_t i = 0; b->shared && i < cw_sessions_count(b->sessions); i++) {
        cw_session_t *s = cw_sessions_at(b->sessions, i);
        if (!s->taken_over)
            cwd_release(b, s->user->name);
    }
    d->closing = true;
    int64_t deadline = cw_mono_ms() + DRAIN_MS;
    while (d->head && cw_mono_ms() < deadline) {
        zmq_pollitem_t item = {d->ops->poll_handle(d->store), 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, 100) > 0)
            cwd_on_replies(b);
    }
    /* Logins whose claim was answered during the drain, or never. */
    cwd_claimed_t c;
    while (cwd_next_claimed(b, &c)) {
        cwb_user_t *u = cw_sessions_user(b->sessions, c.user);
        cw_session_t *s = u ? u->session : NULL;
        if (s && s->claiming && s->serial == c.serial) {
            cwe_reply_status(b, s->id + 1, s->id[0], s->login_rid, CW_SHUTTING_DOWN,
                             "broker stopped before the login completed");
            s->claiming = false; /* answered */
        }
    }
    pending_t *p;
    while ((p = pending_pop(d))) {
        if (p->kind == P_CLAIM) {
            cwb_user_t *u = cw_sessions_user(b->sessions, p->user);
            cw_session_t *s = u ? u->session : NULL;
            if (s && s->claiming && s->serial == p->serial)
                cwe_reply_status(b, s->id + 1, s->id[0], s->login_rid, CW_SHUTTING_DOWN,
                                 "broker stopped before the login completed");
        } else if (p->kind == P_RELEASE && p->id[0]) {
            /* The session is closed; the broker's own release of every
             * claim at shutdown covers the name. */
            cwe_reply_status(b, p->id + 1, p->id[0], p->request_id, CW_OK, "logged out");
        } else if (!P_SILENT(p))
            cwe_reply_status(b, p->id + 1, p->id[0], p->request_id, CW_SHUTTING_DOWN,
                             "broker stopped before the store answered");
        budget_release(b, p);
        inflight_done(b, p);
        pending_free(p);
    }
    d->ops->close(&d->store);
    zhashx_destroy(&d->damaged_seen);
    free(d->claimed);
    free(d);
    b->durable = NULL;
}

void *cwd_poll_handle(cw_broker_t *b)
{
    return b->durable ? b->durable->ops->poll_handle(b->durable->store) : NULL;
}

void cwd_stats(cw_broker_t *b, uint64_t *stored, uint64_t *fsyncs, uint64_t *damaged)
{
    *stored = *fsyncs = *damaged = 0;
    if (!b->durable)
        return;
    *damaged = b->durable->damaged;
    cw_store_counters_t st;
    b->durable->ops->stats(b->durable->store, &st);
    *stored = st.pending;
    *fsyncs = st.commits;
}

bool cwd_monitor(cw_broker_t *b, cw_store_counters_t *st, uint32_t *pending)
{
    if (!b->durable)
        return false;
    b->durable->ops->stats(b->durable->store, st);
    *pending = (uint32_t) b->durable->n_pending;
    return true;
}
