/*  outorder: the per-session outbound order. Decides, for each logged-in
 *  session, when a frame may go out so that nothing overtakes what may
 *  causally precede it (docs/CAUSALITY.md point 4, PROTOCOL.md §13.10):
 *    - the stored-push chain: stored entries are pushed in seq order, each
 *      stamped with the seq pushed before it on the current chain
 *      (Envelope.after_seq = chain_seq; 0 when the pushes start again from
 *      the first unacknowledged entry: login, resume, redelivery), at most
 *      push_window of them waiting for an ack;
 *    - the held ring: live Delivers that arrive while stored messages for
 *      the session are pending wait, each behind a barrier seq, and go out
 *      once the stored entries up to their barrier are pushed, before any
 *      entry above it.
 *  Router thread only. Below durable.c and broker.c, above egress.c (see
 *  the layer graph in broker_internal.h): it calls egress only, and is
 *  told what happened (a read submitted or answered, an ack recorded, a
 *  commit) by the layers above.
 *
 *  The delivery state machine (session->delivery; the five booleans of
 *  old are this state plus `pull` and `redeliver_next`):
 *
 *      state          meaning                                   stored pushes
 *      CWOR_NEW        logged in, delivery not started yet       none
 *      CWOR_OFF        no store, or the client pulls (Fetch)     none
 *      CWOR_CATCHING_UP pushes come from push reads; none in     by reads
 *                     flight (waits for the tick, a backoff or
 *                     an ack that opens the window)
 *      CWOR_READING    catching up, one push read in flight      by reads
 *      CWOR_CAUGHT_UP  the queue is out: each committed append   on commit
 *                     is pushed directly
 *
 *      transition                         function
 *      any -> OFF (pull or no store)      cwor_set_pull(pull = true)
 *      OFF -> NEW (resumed, now pushes)   cwor_set_pull(pull = false)
 *      READING -> CATCHING_UP (resume)    cwor_resumed
 *      NEW|CATCHING_UP|CAUGHT_UP ->       cwor_start (login: from the first
 *        CATCHING_UP                        unacknowledged entry)
 *      CATCHING_UP -> READING             cwor_read_submitted
 *      READING -> CATCHING_UP             cwor_read_returned, cwor_read_failed
 *      CATCHING_UP -> CAUGHT_UP           cwor_read_drained (a read came back
 *                                           short and every entry went out)
 *      CAUGHT_UP -> CATCHING_UP           cwor_push_stored (push failed, or
 *                                           the window is full), cwor_tick
 *                                           (redelivery), cwor_fall_behind
 *                                           (shared store: an ENTRY beyond
 *                                           pushed_seq + 1)
 *
 *  With a shared store (b->shared; store_if.h S1-S6) a caught-up session
 *  takes only the next seq (cwor_takes_commit: seq == pushed_seq + 1, from
 *  an append's reply or an ENTRY event); an ENTRY beyond it falls behind
 *  and reads; a read that comes back short while an ENTRY above pushed_seq
 *  arrived (session->entry_hint) reads again instead of draining, and a read
 *  cut before an entry not visible yet (READ truncated) never drains: it
 *  reads again after a back-off or at the next ENTRY (cwor_read_cut). Live
 *  frames from other brokers (LIVE events) are held with the store's
 *  barrier, and every hold is strict: it goes once entry `barrier` is
 *  pushed, whatever the state (a caught-up session may know entries it was
 *  not sent yet). Claiming sessions (broker.c's two-phase login) stay NEW
 *  and take nothing.
 *  Invariants, checked by cwor_check at every transition in builds without
 *  NDEBUG (like SQLite's assert_pager_state):
 *    1. state == OFF  <=>  no store or s->pull;
 *    2. acked_seq <= pushed_seq <= user->last_seq; chain_seq <= pushed_seq;
 *    3. pushed_seq - acked_seq <= push_window, and < push_window when
 *       CAUGHT_UP (a full window switches to catching up);
 *    4. pushed_seq > acked_seq  =>  ack_wait_ms != 0 (redelivery is timed);
 *    5. OFF => nothing held; at most sndhwm frames held;
 *    6. each stored push has a seq above pushed_seq (seq order).
 *  durable.c checks what only it can see (one read per READING session).
 */
#ifndef CW_OUTORDER_H
#define CW_OUTORDER_H

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#include "broker_internal.h"

typedef enum {
    CWOR_NEW = 0,
    CWOR_OFF = 1,
    CWOR_CATCHING_UP = 2,
    CWOR_READING = 3,
    CWOR_CAUGHT_UP = 4,
} cwor_state_t;

/* The state's name, for logs and test messages; can't fail. */
const char *cwor_state_name(int state);

/* True while stored messages for s are pending: entries of its queue not
 * yet pushed, or appends naming its user not yet committed. Never for pull
 * sessions or without a store. */
bool cwor_pending(const cw_broker_t *b, const cw_session_t *s);

/* A live Deliver frame (consumed) for s: pushed now, stamped with s's
 * pushed position, or held while cwor_pending (or older frames are held).
 * CW_DELIVERED (pushed, or held to be pushed in order), CW_FLOODED (queue
 * or ring full: dropped), CW_OFFLINE. Pushes count in stats.deliveries
 * (held ones when they go). */
int cwor_send_live(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg);

/* A live frame (consumed) from another broker (a shared store's LIVE
 * event) for s, to go out after entry `barrier` of s's queue: pushed now
 * if that entry is pushed and nothing waits, else held until it is (a
 * strict hold: whatever the state). Same returns as cwor_send_live. */
int cwor_send_live_after(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg, uint64_t barrier);

/* The append with this token is answered: held frames that waited for it
 * follow stored entry `seq` of s's queue (the seq it got, or the queue's
 * last seq if it was not stored for s). Can't fail. */
void cwor_held_resolve(cw_session_t *s, uint64_t token, uint64_t seq);

/* Pushes the held frames of s whose barrier is out. */
void cwor_flush_held(cw_broker_t *b, cw_session_t *s);

/* Frees the held ring of s; call before cw_sessions_close. Safe twice. */
void cwor_release(cw_broker_t *b, cw_session_t *s);

/* Live Delivers held back for s now. Can't fail. */
size_t cwor_held_count(const cw_session_t *s);

/* Login (or resume) chose pull or push: sets s->pull and the state (OFF,
 * or NEW for a resumed session leaving OFF), then pushes what a pull
 * session no longer holds back. */
void cwor_set_pull(cw_broker_t *b, cw_session_t *s, bool pull);

/* A resume took s over: a push read issued for the old connection is
 * abandoned (its reply is ignored by serial). */
void cwor_resumed(cw_broker_t *b, cw_session_t *s);

/* Starts pushing s's queue from its first unacknowledged entry (every
 * unacknowledged entry goes out again). No-op for OFF. */
void cwor_start(cw_broker_t *b, cw_session_t *s);

/* Whether s wants a push read now, and which: *from (first seq), *max
 * (entries, <= batch). False while a read is in flight, during a backoff,
 * when caught up or with a full window. */
bool cwor_read_wanted(const cw_broker_t *b, const cw_session_t *s, uint32_t batch,
                     uint64_t *from, uint32_t *max, bool *redeliver);
/* The read cwor_read_wanted asked for was submitted: CATCHING_UP -> READING. */
void cwor_read_submitted(cw_broker_t *b, cw_session_t *s);
/* Its reply came: READING -> CATCHING_UP; _failed also backs off. */
void cwor_read_returned(cw_broker_t *b, cw_session_t *s);
void cwor_read_failed(cw_broker_t *b, cw_session_t *s);
/* The read came back short and every entry was pushed: CAUGHT_UP. */
void cwor_read_drained(cw_broker_t *b, cw_session_t *s);

/* Shared store: the read came back cut (store_if.h READ `truncated`: an
 * entry after the last one it holds exists but is not visible yet) and
 * every entry it held was pushed. s stays CATCHING_UP, and reads again
 * after a back-off (CWOR_CUT_MIN_MS doubling to CWOR_CUT_MAX_MS per cut in
 * a row) or at once when an ENTRY for it arrives (cwor_entry_seen); it is
 * never caught up on a cut read, so nothing of its queue beyond the cut
 * is pushed except by a read, in seq order. */
void cwor_read_cut(cw_broker_t *b, cw_session_t *s);
/* The read was not cut: the next cut starts its back-off afresh. */
void cwor_read_whole(cw_session_t *s);
/* Shared store: an ENTRY for s arrived while it is catching up: a back-off
 * after a cut read ends now (what was cut may be visible). Not a failure's
 * back-off. */
void cwor_entry_seen(cw_broker_t *b, cw_session_t *s);
#define CWOR_CUT_MIN_MS 10u     /* first back-off after a cut read */
#define CWOR_CUT_MAX_MS 1000u   /* its bound: one default lease period (--lease-ms), the
                                   longest a fresh reader waits for an unknown writer */

/* True if s is caught up and entry seq (just committed, or an ENTRY
 * event) is for it: any seq above pushed_seq with one writer (SQLite),
 * exactly pushed_seq + 1 with a shared store. */
bool cwor_takes_commit(const cw_broker_t *b, const cw_session_t *s, uint64_t seq);

/* Shared store: an entry beyond pushed_seq + 1 became visible while s was
 * caught up (others' entries it was not sent): CAUGHT_UP -> CATCHING_UP,
 * and the caller reads. */
void cwor_fall_behind(cw_broker_t *b, cw_session_t *s);

/* Shared store: a push read found nothing unacknowledged in the queue (no
 * entry, pending 0) with nothing in flight: every entry known (up to
 * user->last_seq) is acknowledged, so pushed_seq and acked_seq move there
 * and strict holds behind them may go. No state change. */
void cwor_read_empty(cw_broker_t *b, cw_session_t *s);

/* Pushes stored entry d (d->seq set; after_seq is filled here) to s, after
 * the held frames that precede it, and advances the chain. False if it
 * could not be pushed (out of memory, queue full, peer gone): s then
 * catches up from this entry again after a backoff, so no entry is skipped
 * and an Ack can never cover an entry that was not sent. */
bool cwor_push_stored(cw_broker_t *b, cw_session_t *s, Causeway__V1__Deliver *d);

/* The store recorded s's Ack up to seq. */
void cwor_acked(cw_broker_t *b, cw_session_t *s, uint64_t seq);

/* Redelivery: if pushes to s waited redeliver_ms for an ack, rewinds to
 * the first unacknowledged entry (the next read marks them redelivered).
 * True if it rewound. */
bool cwor_tick(cw_broker_t *b, cw_session_t *s);

/* True while s is catching up (CATCHING_UP or READING). */
bool cwor_catching_up(const cw_session_t *s);

/* Asserts the invariants above for s (no-op with NDEBUG). */
void cwor_check(const cw_broker_t *b, const cw_session_t *s);

#endif
