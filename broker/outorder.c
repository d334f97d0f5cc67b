/*  outorder: see outorder.h for the state machine and its invariants.
 *
 *  Owns each session's held ring (struct cw_held, allocated on the first
 *  hold, freed by cwor_release) and the session's delivery fields
 *  (delivery, pushed_seq, chain_seq, acked_seq, ack_wait_ms, read_retry_ms,
 *  read_backoff_ms, redeliver_next; `pull` is set here too). Router thread.
 *  Calls egress.c only.
 */
#include "outorder.h"

#include "cw_log.h"
#include "cw_status.h"
#include "egress.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* Live Delivers held back for one session, each with its barrier: the
 * stored entries of the recipient's queue that were committed or submitted
 * before it was read. It is pushed after those and before any entry
 * appended after it: a held frame goes out once every entry up to its
 * barrier is pushed, and before a stored entry above its barrier is pushed
 * (flush_while from cwor_push_stored). */
typedef struct {
    zmq_msg_t msg;
    uint64_t barrier;  /* seq: push after every entry up to it */
    uint64_t token;    /* != 0: the barrier is the seq the pending append with
                          this token gets (cwor_held_resolve) */
    bool strict;       /* shared store: goes only once entry `barrier` is pushed,
                          whatever the state (a LIVE event's barrier, or a local
                          frame held behind entries the session was not sent yet) */
} held_msg_t;

struct cw_held {
    held_msg_t *msgs; /* ring buffer of cap frames */
    size_t head;      /* index of the oldest */
    size_t n;         /* frames held */
    size_t cap;       /* allocated */
};

const char *cwor_state_name(int state)
{
    switch (state) {
    case CWOR_NEW: return "new";
    case CWOR_OFF: return "off";
    case CWOR_CATCHING_UP: return "catching-up";
    case CWOR_READING: return "reading";
    case CWOR_CAUGHT_UP: return "caught-up";
    default: return "invalid";
    }
}

void cwor_check(const cw_broker_t *b, const cw_session_t *s)
{
#ifdef NDEBUG
    (void) b;
    (void) s;
#else
    int st = s->delivery;
    bool off = !b->durable || s->pull;
    assert(st >= CWOR_NEW && st <= CWOR_CAUGHT_UP);
    assert((st == CWOR_OFF) == off);                               /* 1 */
    assert(s->acked_seq <= s->pushed_seq);                        /* 2 */
    assert(s->chain_seq <= s->pushed_seq);
    assert(!b->durable || s->pushed_seq <= s->user->last_seq);
    assert(s->pushed_seq - s->acked_seq <= b->cfg.push_window);   /* 3 */
    assert(st != CWOR_CAUGHT_UP || s->pushed_seq - s->acked_seq < b->cfg.push_window);
    assert(s->pushed_seq == s->acked_seq || s->ack_wait_ms != 0); /* 4 */
    size_t held = s->held ? s->held->n : 0;                       /* 5 */
    assert(st != CWOR_OFF || held == 0);
    assert(held <= b->cfg.sndhwm);
    (void) held;
#endif
}

/* Moves s from one of the states in `from` (a bit mask of 1 << state) to
 * `to`; asserts the transition is one the machine has. */
static void transition(const cw_broker_t *b, cw_session_t *s, unsigned from, cwor_state_t to)
{
    assert(from & (1u << s->delivery));
    (void) from;
    (void) b;
    s->delivery = (uint8_t) to;
}
#define FROM(st) (1u << (st))

bool cwor_catching_up(const cw_session_t *s)
{
    return s->delivery == CWOR_CATCHING_UP || s->delivery == CWOR_READING;
}

bool cwor_pending(const cw_broker_t *b, const cw_session_t *s)
{
    if (!b->durable || s->pull)
        return false;
    /* A shared store: entries of other writers may be known (ENTRY, an
     * append's reply) before they are pushed, even when caught up. */
    bool behind = (cwor_catching_up(s) || b->shared) && s->pushed_seq < s->user->last_seq;
    return behind || s->user->durable_inflight > 0;
}

/* Live Delivers to s wait while cwor_pending (or while older ones wait), so
 * that nothing overtakes a stored message that may causally precede it. */
static bool must_hold(const cw_broker_t *b, const cw_session_t *s)
{
    return cwor_pending(b, s) || (s->held && s->held->n > 0);
}

/* Pushes a live Deliver frame (consumed) to s. A session that has been
 * pushed stored messages gets it stamped with the last of them since its
 * pushes last started again (s->chain_seq), so that the client shows it
 * only after those (PROTOCOL.md §13.10). */
static int push_live(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg)
{
    uint64_t after = b->durable && !s->pull ? s->chain_seq : 0;
    return cwe_push_after(b, s, msg, after);
}

/* Holds msg (consumed) for s behind `barrier` (with token: the seq that
 * append gets, if higher). CW_DELIVERED (it will be pushed in order) or
 * CW_FLOODED (sndhwm frames are already held: dropped). */
static int hold_at(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg, uint64_t barrier,
                   uint64_t token)
{
    cw_held_t *h = s->held;
    if (!h && !(h = s->held = calloc(1, sizeof *h))) {
        zmq_msg_close(msg);
        return CW_FLOODED;
    }
    if (h->n >= b->cfg.sndhwm) {
        zmq_msg_close(msg);
        return CW_FLOODED;
    }
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        held_msg_t *m = malloc(cap * sizeof *m);
        if (!m) {
            zmq_msg_close(msg);
            return CW_FLOODED;
        }
        for (size_t i = 0; i < h->n; i++) {
            held_msg_t *from = &h->msgs[(h->head + i) % h->cap];
            m[i] = *from;
            zmq_msg_init(&m[i].msg);
            zmq_msg_move(&m[i].msg, &from->msg);
        }
        free(h->msgs);
        h->msgs = m;
        h->head = 0;
        h->cap = cap;
    }
    held_msg_t *slot = &h->msgs[(h->head + h->n) % h->cap];
    zmq_msg_init(&slot->msg);
    zmq_msg_move(&slot->msg, msg);
    zmq_msg_close(msg);
    slot->barrier = barrier;
    slot->token = token;
    slot->strict = b->shared;
    h->n++;
    b->mc.held_total++;
    b->mc.held_now++;
    return CW_DELIVERED;
}

/* Holds a live frame from this broker: appends are answered in submission
 * order, so the latest one naming the user gets the highest seq of those
 * submitted before this message; with none pending, the committed queue
 * (shared: the entries known) is the barrier. */
static int hold(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg)
{
    return hold_at(b, s, msg, s->user->last_seq,
                   s->user->durable_inflight ? s->user->last_append_token : 0);
}

int cwor_send_live_after(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg, uint64_t barrier)
{
    if (s->dead || s->claiming) {
        zmq_msg_close(msg);
        return CW_OFFLINE;
    }
    bool all = !b->durable || s->pull;
    /* The store placed the frame after entry `barrier` of the queue: that
     * is its barrier, whatever this broker appends meanwhile. */
    if (!all && (barrier > s->pushed_seq || must_hold(b, s))) {
        int st = hold_at(b, s, msg, barrier, 0);
        cwor_check(b, s);
        return st;
    }
    int st = push_live(b, s, msg);
    if (st == CW_DELIVERED)
        b->stats.deliveries++;
    return st;
}

int cwor_send_live(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg)
{
    if (must_hold(b, s))
        return hold(b, s, msg); /* counted in deliveries when flushed */
    int st = push_live(b, s, msg);
    if (st == CW_DELIVERED)
        b->stats.deliveries++;
    return st;
}

void cwor_held_resolve(cw_session_t *s, uint64_t token, uint64_t seq)
{
    cw_held_t *h = s->held;
    for (size_t i = 0; h && i < h->n; i++) {
        held_msg_t *m = &h->msgs[(h->head + i) % h->cap];
        if (m->token == token) {
            m->token = 0;
            if (seq > m->barrier)
                m->barrier = seq;
        }
    }
}

/* Pushes held frames from the oldest while they are ready: every one if s
 * does not take stored pushes; else those whose append is answered and
 * whose barrier is below `before` (a stored entry about to be pushed) or,
 * with before 0, is pushed (or nothing is being caught up). */
static void flush_while(cw_broker_t *b, cw_session_t *s, uint64_t before)
{
    cw_held_t *h = s->held;
    bool all = !b->durable || s->pull;
    while (h && h->n) {
        held_msg_t *m = &h->msgs[h->head];
        bool ready = all || (m->token == 0 && (before ? m->barrier < before
                                                      : (!cwor_catching_up(s) && !m->strict) ||
                                                            m->barrier <= s->pushed_seq));
        if (!ready)
            return;
        h->head = (h->head + 1) % h->cap;
        h->n--;
        b->mc.held_now--;
        if (push_live(b, s, &m->msg) == CW_DELIVERED)
            b->stats.deliveries++;
        else
            CW_DEBUG("%s: held live message dropped", s->user->name);
    }
}

void cwor_flush_held(cw_broker_t *b, cw_session_t *s)
{
    flush_while(b, s, 0);
}

size_t cwor_held_count(const cw_session_t *s)
{
    return s->held ? s->held->n : 0;
}

void cwor_release(cw_broker_t *b, cw_session_t *s)
{
    cw_held_t *h = s->held;
    if (!h)
        return;
    b->mc.held_now -= h->n;
    for (size_t i = 0; i < h->n; i++)
        zmq_msg_close(&h->msgs[(h->head + i) % h->cap].msg);
    free(h->msgs);
    free(h);
    s->held = NULL;
}

void cwor_set_pull(cw_broker_t *b, cw_session_t *s, bool pull)
{
    s->pull = pull;
    if (!b->durable || pull)
        s->delivery = CWOR_OFF; /* from any state */
    else if (s->delivery == CWOR_OFF)
        transition(b, s, FROM(CWOR_OFF), CWOR_NEW);
    flush_while(b, s, 0); /* a session that now pulls holds nothing back */
    cwor_check(b, s);
}

void cwor_resumed(cw_broker_t *b, cw_session_t *s)
{
    if (s->delivery == CWOR_READING)
        transition(b, s, FROM(CWOR_READING), CWOR_CATCHING_UP);
    cwor_check(b, s);
}

void cwor_start(cw_broker_t *b, cw_session_t *s)
{
    if (s->delivery == CWOR_OFF)
        return;
    transition(b, s, FROM(CWOR_NEW) | FROM(CWOR_CATCHING_UP) | FROM(CWOR_CAUGHT_UP),
               CWOR_CATCHING_UP);
    s->pushed_seq = s->acked_seq;
    s->chain_seq = 0;
    s->ack_wait_ms = 0;
    cwor_check(b, s);
}

/* A push or a read failed: wait before reading s's queue again, doubling
 * from one heartbeat up to redeliver_ms, so a client that stopped reading
 * does not make the store re-read its queue at every tick. */
static void read_backoff(cw_broker_t *b, cw_session_t *s)
{
    uint32_t next = s->read_backoff_ms ? s->read_backoff_ms * 2 : b->cfg.heartbeat_ms;
    s->read_backoff_ms = next < b->cfg.redeliver_ms ? next : b->cfg.redeliver_ms;
    s->read_retry_ms = b->now_ms + s->read_backoff_ms;
    s->cut_backoff_ms = 0; /* this back-off is a failure's: an ENTRY does not end it */
}

bool cwor_read_wanted(const cw_broker_t *b, const cw_session_t *s, uint32_t batch,
                     uint64_t *from, uint32_t *max, bool *redeliver)
{
    if (s->delivery != CWOR_CATCHING_UP || s->dead || b->now_ms < s->read_retry_ms)
        return false;
    uint64_t in_flight = s->pushed_seq - s->acked_seq;
    if (in_flight >= b->cfg.push_window)
        return false; /* an ack will call again */
    *from = s->pushed_seq + 1;
    *max = b->cfg.push_window - (uint32_t) in_flight;
    if (*max > batch)
        *max = batch;
    *redeliver = s->redeliver_next;
    return true;
}

void cwor_read_submitted(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWOR_CATCHING_UP), CWOR_READING);
    s->redeliver_next = false;
    cwor_check(b, s);
}

void cwor_read_returned(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWOR_READING), CWOR_CATCHING_UP);
    cwor_check(b, s);
}

void cwor_read_failed(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWOR_READING), CWOR_CATCHING_UP);
    read_backoff(b, s); /* still catching up: the tick retries after the backoff */
    cwor_check(b, s);
}

void cwor_read_drained(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWOR_CATCHING_UP), CWOR_CAUGHT_UP);
    cwor_check(b, s);
}

void cwor_read_cut(cw_broker_t *b, cw_session_t *s)
{
    assert(s->delivery == CWOR_CATCHING_UP);
    uint32_t next = s->cut_backoff_ms ? s->cut_backoff_ms * 2 : CWOR_CUT_MIN_MS;
    s->cut_backoff_ms = next < CWOR_CUT_MAX_MS ? next : CWOR_CUT_MAX_MS;
    s->read_retry_ms = b->now_ms + s->cut_backoff_ms;
    cwor_check(b, s);
}

void cwor_read_whole(cw_session_t *s)
{
    s->cut_backoff_ms = 0;
}

void cwor_entry_seen(cw_broker_t *b, cw_session_t *s)
{
    if (s->delivery == CWOR_CATCHING_UP && s->cut_backoff_ms)
        s->read_retry_ms = b->now_ms; /* read now; the next cut doubles on */
}

bool cwor_takes_commit(const cw_broker_t *b, const cw_session_t *s, uint64_t seq)
{
    if (s->delivery != CWOR_CAUGHT_UP || s->dead || s->claiming)
        return false;
    /* One writer (SQLite): every commit reaches a caught-up session, so any
     * seq above pushed may go (a gap only follows --recover-store). A
     * shared store: strictly the next seq; what is beyond waits for its
     * ENTRY (store_if.h S2). */
    return b->shared ? seq == s->pushed_seq + 1 : seq > s->pushed_seq;
}

void cwor_fall_behind(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWOR_CAUGHT_UP), CWOR_CATCHING_UP);
    cwor_check(b, s);
}

void cwor_read_empty(cw_broker_t *b, cw_session_t *s)
{
    /* Nothing of the queue is unacknowledged: every entry known is
     * acknowledged, so held frames behind one of them may go. */
    if (b->shared && s->pushed_seq == s->acked_seq && s->user->last_seq > s->pushed_seq)
        s->pushed_seq = s->acked_seq = s->user->last_seq;
    cwor_check(b, s);
}

bool cwor_push_stored(cw_broker_t *b, cw_session_t *s, Causeway__V1__Deliver *d)
{
    assert(s->delivery == CWOR_CATCHING_UP || s->delivery == CWOR_CAUGHT_UP);
    assert(d->seq > s->pushed_seq); /* invariant 6 */
    /* Seqs of a queue are consecutive, except once after the operator
     * recovered a damaged store (--recover-store moves every queue's next
     * seq on, PROTOCOL.md §13.1). The window counts seqs (invariant 3), so
     * an entry beyond such a gap waits until the pushes in flight before
     * it are acknowledged; then the rule below restarts the window at it.
     * Without a gap this never holds: reads and caught-up pushes stop at
     * a full window. */
    if (s->pushed_seq > s->acked_seq && d->seq - s->acked_seq > b->cfg.push_window) {
        if (s->delivery == CWOR_CAUGHT_UP)
            transition(b, s, FROM(CWOR_CAUGHT_UP), CWOR_CATCHING_UP);
        read_backoff(b, s); /* the read is retried after the backoff */
        cwor_check(b, s);
        return false;
    }
    /* Live messages read before this entry was appended go first. */
    flush_while(b, s, d->seq);
    cw_env_t env;
    cw_env_init(&env, 0);
    env.body_case = CW_BODY(DELIVER);
    env.deliver = d;
    if (d->receipt) {
        /* A read receipt entry (receipts.h) goes out as Envelope.receipt
         * (PROTOCOL.md 13.12), in the same chain as the messages around it. */
        d->receipt->seq = d->seq;
        d->receipt->redelivered = d->redelivered;
        env.body_case = CW_BODY(RECEIPT);
        env.receipt = d->receipt;
    }
    /* The chain the client follows (PROTOCOL.md §13.10): this entry comes
     * right after the one pushed before it since the pushes last started
     * again from the first unacknowledged entry, which every receiver has
     * been sent on this connection; 0 for the first (everything below it is
     * acknowledged, possibly by another process, or removed). */
    env.after_seq = s->chain_seq;
    zmq_msg_t msg;
    if (cw_env_to_msg(&env, &msg) != CW_OK || cwe_push(b, s, &msg) != CW_DELIVERED) {
        /* A later read starts again at pushed_seq + 1. */
        if (s->delivery == CWOR_CAUGHT_UP)
            transition(b, s, FROM(CWOR_CAUGHT_UP), CWOR_CATCHING_UP);
        read_backoff(b, s);
        cwor_check(b, s);
        return false;
    }
    s->read_backoff_ms = 0;
    s->chain_seq = d->seq;
    b->stats.deliveries++;
    int kind = cw_mon_kind(d->broadcast, d->n_to);
    b->mc.dl[1][kind]++;
    b->mc.dl_bytes[1][kind] += d->text ? strlen(d->text) : 0;
    b->mc.redeliveries += d->redelivered;
    /* A session starts with acked_seq 0, below what the store has
     * acknowledged. With nothing in flight, every entry below d->seq is
     * acknowledged or gone (a read from acked_seq + 1 starts at the first
     * pending entry; a caught-up session was pushed every earlier commit),
     * so the window counts from there. */
    if (s->pushed_seq == s->acked_seq && d->seq > s->acked_seq + 1)
        s->acked_seq = s->pushed_seq = d->seq - 1;
    if (d->seq > s->pushed_seq)
        s->pushed_seq = d->seq;
    if (!s->ack_wait_ms)
        s->ack_wait_ms = b->now_ms;
    if (s->pushed_seq - s->acked_seq >= b->cfg.push_window && s->delivery == CWOR_CAUGHT_UP)
        transition(b, s, FROM(CWOR_CAUGHT_UP), CWOR_CATCHING_UP);
    cwor_check(b, s);
    return true;
}

void cwor_acked(cw_broker_t *b, cw_session_t *s, uint64_t seq)
{
    if (seq > s->acked_seq)
        s->acked_seq = seq;
    if (s->acked_seq > s->pushed_seq)
        s->pushed_seq = s->acked_seq;
    /* Progress restarts the redelivery clock; all acked stops it. */
    s->ack_wait_ms = s->acked_seq >= s->pushed_seq ? 0 : b->now_ms;
    cwor_check(b, s);
}

bool cwor_tick(cw_broker_t *b, cw_session_t *s)
{
    if (s->delivery != CWOR_CATCHING_UP && s->delivery != CWOR_CAUGHT_UP)
        return false;
    if (!s->ack_wait_ms || s->pushed_seq <= s->acked_seq ||
        b->now_ms - s->ack_wait_ms <= (int64_t) b->cfg.redeliver_ms)
        return false;
    CW_INFO("redelivering to %s from seq %llu (no ack for %u ms)", s->user->name,
            (unsigned long long) s->acked_seq + 1, b->cfg.redeliver_ms);
    transition(b, s, FROM(CWOR_CATCHING_UP) | FROM(CWOR_CAUGHT_UP), CWOR_CATCHING_UP);
    s->pushed_seq = s->acked_seq;
    s->chain_seq = 0;
    s->redeliver_next = true;
    s->ack_wait_ms = b->now_ms;
    cwor_check(b, s);
    return true;
}
