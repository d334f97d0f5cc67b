/*  outorder: see outorder.h for the state machine and its invariants.
 *
 *  Owns each session's held ring (struct cw_held, allocated on the first
 *  hold, freed by cwo_release) and the session's delivery fields
 *  (delivery, pushed_seq, acked_seq, ack_wait_ms, read_retry_ms,
 *  read_backoff_ms, redeliver_next; `pull` is set here too). Router thread.
 *  Calls egress.c only.
 */
#include "outorder.h"

#include "cw_log.h"
#include "cw_status.h"
#include "egress.h"

#include <assert.h>
#include <stdlib.h>

/* Live Delivers held back for one session, each with its barrier: the
 * stored entries of the recipient's queue that were committed or submitted
 * before it was read. It is pushed after those and before any entry
 * appended after it: a held frame goes out once every entry up to its
 * barrier is pushed, and before a stored entry above its barrier is pushed
 * (flush_while from cwo_push_stored). */
typedef struct {
    zmq_msg_t msg;
    uint64_t barrier;  /* seq: push after every entry up to it */
    uint64_t token;    /* != 0: the barrier is the seq the pending append with
                          this token gets (cwo_held_resolve) */
} held_msg_t;

struct cw_held {
    held_msg_t *msgs; /* ring buffer of cap frames */
    size_t head;      /* index of the oldest */
    size_t n;         /* frames held */
    size_t cap;       /* allocated */
};

const char *cwo_state_name(int state)
{
    switch (state) {
    case CWO_NEW: return "new";
    case CWO_OFF: return "off";
    case CWO_CATCHING_UP: return "catching-up";
    case CWO_READING: return "reading";
    case CWO_CAUGHT_UP: return "caught-up";
    default: return "invalid";
    }
}

void cwo_check(const cw_broker_t *b, const cw_session_t *s)
{
#ifdef NDEBUG
    (void) b;
    (void) s;
#else
    int st = s->delivery;
    bool off = !b->durable || s->pull;
    assert(st >= CWO_NEW && st <= CWO_CAUGHT_UP);
    assert((st == CWO_OFF) == off);                               /* 1 */
    assert(s->acked_seq <= s->pushed_seq);                        /* 2 */
    assert(!b->durable || s->pushed_seq <= s->user->last_seq);
    assert(s->pushed_seq - s->acked_seq <= b->cfg.push_window);   /* 3 */
    assert(st != CWO_CAUGHT_UP || s->pushed_seq - s->acked_seq < b->cfg.push_window);
    assert(s->pushed_seq == s->acked_seq || s->ack_wait_ms != 0); /* 4 */
    size_t held = s->held ? s->held->n : 0;                       /* 5 */
    assert(st != CWO_OFF || held == 0);
    assert(held <= b->cfg.sndhwm);
    (void) held;
#endif
}

/* Moves s from one of the states in `from` (a bit mask of 1 << state) to
 * `to`; asserts the transition is one the machine has. */
static void transition(const cw_broker_t *b, cw_session_t *s, unsigned from, cwo_state_t to)
{
    assert(from & (1u << s->delivery));
    (void) from;
    (void) b;
    s->delivery = (uint8_t) to;
}
#define FROM(st) (1u << (st))

bool cwo_catching_up(const cw_session_t *s)
{
    return s->delivery == CWO_CATCHING_UP || s->delivery == CWO_READING;
}

bool cwo_pending(const cw_broker_t *b, const cw_session_t *s)
{
    if (!b->durable || s->pull)
        return false;
    return (cwo_catching_up(s) && s->pushed_seq < s->user->last_seq) ||
           s->user->durable_inflight > 0;
}

/* Live Delivers to s wait while cwo_pending (or while older ones wait), so
 * that nothing overtakes a stored message that may causally precede it. */
static bool must_hold(const cw_broker_t *b, const cw_session_t *s)
{
    return cwo_pending(b, s) || (s->held && s->held->n > 0);
}

/* Pushes a live Deliver frame (consumed) to s. A session that has been
 * pushed stored messages gets it stamped with its pushed position, so the
 * client shows it only after those (PROTOCOL.md §13.10). */
static int push_live(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg)
{
    uint64_t after = b->durable && !s->pull ? s->pushed_seq : 0;
    return cwe_push_after(b, s, msg, after);
}

/* Holds msg (consumed) for s. CW_DELIVERED (it will be pushed in order) or
 * CW_FLOODED (sndhwm frames are already held: dropped). */
static int hold(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg)
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
    /* Appends are answered in submission order, so the latest one naming
     * the user gets the highest seq of those submitted before this
     * message; with none pending, the committed queue is the barrier. */
    slot->barrier = s->user->last_seq;
    slot->token = s->user->durable_inflight ? s->user->last_append_token : 0;
    h->n++;
    return CW_DELIVERED;
}

int cwo_send_live(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg)
{
    if (must_hold(b, s))
        return hold(b, s, msg); /* counted in deliveries when flushed */
    int st = push_live(b, s, msg);
    if (st == CW_DELIVERED)
        b->stats.deliveries++;
    return st;
}

void cwo_held_resolve(cw_session_t *s, uint64_t token, uint64_t seq)
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
                                                      : !cwo_catching_up(s) ||
                                                            m->barrier <= s->pushed_seq));
        if (!ready)
            return;
        h->head = (h->head + 1) % h->cap;
        h->n--;
        if (push_live(b, s, &m->msg) == CW_DELIVERED)
            b->stats.deliveries++;
        else
            CW_DEBUG("%s: held live message dropped", s->user->name);
    }
}

void cwo_flush_held(cw_broker_t *b, cw_session_t *s)
{
    flush_while(b, s, 0);
}

void cwo_release(cw_session_t *s)
{
    cw_held_t *h = s->held;
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        zmq_msg_close(&h->msgs[(h->head + i) % h->cap].msg);
    free(h->msgs);
    free(h);
    s->held = NULL;
}

void cwo_set_pull(cw_broker_t *b, cw_session_t *s, bool pull)
{
    s->pull = pull;
    if (!b->durable || pull)
        s->delivery = CWO_OFF; /* from any state */
    else if (s->delivery == CWO_OFF)
        transition(b, s, FROM(CWO_OFF), CWO_NEW);
    flush_while(b, s, 0); /* a session that now pulls holds nothing back */
    cwo_check(b, s);
}

void cwo_resumed(cw_broker_t *b, cw_session_t *s)
{
    if (s->delivery == CWO_READING)
        transition(b, s, FROM(CWO_READING), CWO_CATCHING_UP);
    cwo_check(b, s);
}

void cwo_start(cw_broker_t *b, cw_session_t *s)
{
    if (s->delivery == CWO_OFF)
        return;
    transition(b, s, FROM(CWO_NEW) | FROM(CWO_CATCHING_UP) | FROM(CWO_CAUGHT_UP),
               CWO_CATCHING_UP);
    s->pushed_seq = s->acked_seq;
    s->ack_wait_ms = 0;
    cwo_check(b, s);
}

/* A push or a read failed: wait before reading s's queue again, doubling
 * from one heartbeat up to redeliver_ms, so a client that stopped reading
 * does not make the store re-read its queue at every tick. */
static void read_backoff(cw_broker_t *b, cw_session_t *s)
{
    uint32_t next = s->read_backoff_ms ? s->read_backoff_ms * 2 : b->cfg.heartbeat_ms;
    s->read_backoff_ms = next < b->cfg.redeliver_ms ? next : b->cfg.redeliver_ms;
    s->read_retry_ms = b->now_ms + s->read_backoff_ms;
}

bool cwo_read_wanted(const cw_broker_t *b, const cw_session_t *s, uint32_t batch,
                     uint64_t *from, uint32_t *max, bool *redeliver)
{
    if (s->delivery != CWO_CATCHING_UP || s->dead || b->now_ms < s->read_retry_ms)
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

void cwo_read_submitted(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWO_CATCHING_UP), CWO_READING);
    s->redeliver_next = false;
    cwo_check(b, s);
}

void cwo_read_returned(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWO_READING), CWO_CATCHING_UP);
    cwo_check(b, s);
}

void cwo_read_failed(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWO_READING), CWO_CATCHING_UP);
    read_backoff(b, s); /* still catching up: the tick retries after the backoff */
    cwo_check(b, s);
}

void cwo_read_drained(cw_broker_t *b, cw_session_t *s)
{
    transition(b, s, FROM(CWO_CATCHING_UP), CWO_CAUGHT_UP);
    cwo_check(b, s);
}

bool cwo_takes_commit(const cw_session_t *s, uint64_t seq)
{
    return s->delivery == CWO_CAUGHT_UP && !s->dead && seq > s->pushed_seq;
}

bool cwo_push_stored(cw_broker_t *b, cw_session_t *s, Causeway__V1__Deliver *d)
{
    assert(s->delivery == CWO_CATCHING_UP || s->delivery == CWO_CAUGHT_UP);
    assert(d->seq > s->pushed_seq); /* invariant 6 */
    /* Live messages read before this entry was appended go first. */
    flush_while(b, s, d->seq);
    cw_env_t env;
    cw_env_init(&env, 0);
    env.body_case = CW_BODY(DELIVER);
    env.deliver = d;
    /* The chain the client follows (PROTOCOL.md §13.10): this entry comes
     * right after the one pushed before it in this session. */
    env.after_seq = s->pushed_seq;
    zmq_msg_t msg;
    if (cw_env_to_msg(&env, &msg) != CW_OK || cwe_push(b, s, &msg) != CW_DELIVERED) {
        /* A later read starts again at pushed_seq + 1. */
        if (s->delivery == CWO_CAUGHT_UP)
            transition(b, s, FROM(CWO_CAUGHT_UP), CWO_CATCHING_UP);
        read_backoff(b, s);
        cwo_check(b, s);
        return false;
    }
    s->read_backoff_ms = 0;
    b->stats.deliveries++;
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
    if (s->pushed_seq - s->acked_seq >= b->cfg.push_window && s->delivery == CWO_CAUGHT_UP)
        transition(b, s, FROM(CWO_CAUGHT_UP), CWO_CATCHING_UP);
    cwo_check(b, s);
    return true;
}

void cwo_acked(cw_broker_t *b, cw_session_t *s, uint64_t seq)
{
    if (seq > s->acked_seq)
        s->acked_seq = seq;
    if (s->acked_seq > s->pushed_seq)
        s->pushed_seq = s->acked_seq;
    /* Progress restarts the redelivery clock; all acked stops it. */
    s->ack_wait_ms = s->acked_seq >= s->pushed_seq ? 0 : b->now_ms;
    cwo_check(b, s);
}

bool cwo_tick(cw_broker_t *b, cw_session_t *s)
{
    if (s->delivery != CWO_CATCHING_UP && s->delivery != CWO_CAUGHT_UP)
        return false;
    if (!s->ack_wait_ms || s->pushed_seq <= s->acked_seq ||
        b->now_ms - s->ack_wait_ms <= (int64_t) b->cfg.redeliver_ms)
        return false;
    CW_INFO("redelivering to %s from seq %llu (no ack for %u ms)", s->user->name,
            (unsigned long long) s->acked_seq + 1, b->cfg.redeliver_ms);
    transition(b, s, FROM(CWO_CATCHING_UP) | FROM(CWO_CAUGHT_UP), CWO_CATCHING_UP);
    s->pushed_seq = s->acked_seq;
    s->redeliver_next = true;
    s->ack_wait_ms = b->now_ms;
    cwo_check(b, s);
    return true;
}
