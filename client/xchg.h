/*  xchg.h: the phase-3 vector clock exchange as pure logic (no I/O), shared
 *  by `causeway exchange` (cli_exchange.c, line output) and the exchange
 *  view of `causeway tui` (tui.c).
 *
 *  The caller feeds it what it learns (the user log, presence events,
 *  deliveries) and asks xchg_step() what to do now; it does the sending
 *  itself and prints what it likes. Phases, and what moves between them:
 *
 *    XCHG_WAITING    some member is not online yet
 *    XCHG_RUNNING    all online (xchg_step returns XCHG_START once); a send
 *                    is due every MIN..MAX ms; ends after `count` sends or
 *                    `for_ms` ms (xchg_step returns XCHG_FINISH: send
 *                    "done" to every other member)
 *    XCHG_FINISHING  we sent "done"; once each other member has sent "done"
 *                    to us or went offline xchg_step returns XCHG_LEAVE
 *    XCHG_FINISHED   after XCHG_LEAVE
 *
 *  Ending without a timer: the broker forwards one sender's messages to a
 *  receiver in order, and a member sends "done" only after its last clock
 *  message, so with every member's "done" we have all they sent us.
 *  Picks and intervals come from splitmix64 seeded by the caller, so a run
 *  repeats given the same seed. Single-threaded; no allocation after
 *  xchg_new.
 */
#ifndef CW_XCHG_H
#define CW_XCHG_H

#include <stddef.h>
#include <stdint.h>

#include "causeway.h"

#define XCHG_DEFAULT_MIN_MS 2000
#define XCHG_DEFAULT_MAX_MS 10000
/* The text of the message that says "I have sent everything". */
#define XCHG_DONE_TEXT "done"

typedef struct xchg xchg_t;

typedef enum { XCHG_WAITING, XCHG_RUNNING, XCHG_FINISHING, XCHG_FINISHED } xchg_phase_t;

typedef enum {
    XCHG_NONE = 0,     /* nothing to do now */
    XCHG_START,        /* everyone is online: the exchange begins */
    XCHG_SEND,         /* send a clock-only message (empty text, live) to *to */
    XCHG_FINISH,       /* send XCHG_DONE_TEXT to every peer (xchg_peer) */
    XCHG_LEAVE,        /* all done: log out / close the view */
} xchg_action_t;

/* An exchange for `me` in `group` (names borrowed: they must outlive x; me
 * must be among them; duplicates are ignored). min_ms <= max_ms; count: stop
 * after this many sends (0: never); for_ms: stop this long after the start
 * (0: never). NULL with a reason in err (size bytes) if the group is not
 * valid (a bad name, me missing, nobody else) or out of memory. */
xchg_t *xchg_new(const char *me, const char *const *group, size_t n_group, long min_ms,
                 long max_ms, uint64_t seed, long count, long for_ms, char *err, size_t size);
/* Frees; NULLs *p. Safe on NULL and twice. */
void xchg_destroy(xchg_t **p);

/* The user log (login, reconnection) says who is online. After the start a
 * member who is not online counts as done. */
void xchg_users(xchg_t *x, const cw_user_t *users, size_t n);
/* A presence event; returns 1 if name is one of the peers. */
int xchg_presence(xchg_t *x, const char *name, int online);
/* A delivery from `from`; returns 1 if it was a peer's "done". Counted in
 * xchg_received either way. */
int xchg_delivery(xchg_t *x, const char *from, const char *text);

/* What to do at monotonic ms `now`: see xchg_action_t. For XCHG_SEND *to is
 * the peer (owned by the caller's group strings), counted as sent. *wait_ms
 * (if not NULL) is how long until something may be due without an event
 * (-1: only after an event). Can't fail. */
xchg_action_t xchg_step(xchg_t *x, int64_t now, const char **to, int *wait_ms);

/* Ends early: while waiting, at once (XCHG_FINISHED, nothing was sent);
 * while running, the next xchg_step returns XCHG_FINISH. */
void xchg_stop(xchg_t *x);

xchg_phase_t xchg_phase(const xchg_t *x);
/* The other members in group order: n_peers, and peer i's name / state. */
size_t xchg_n_peers(const xchg_t *x);
const char *xchg_peer(const xchg_t *x, size_t i);
int xchg_peer_online(const xchg_t *x, size_t i);
int xchg_peer_done(const xchg_t *x, size_t i);
int xchg_is_peer(const xchg_t *x, const char *name);
long xchg_sent(const xchg_t *x);
long xchg_received(const xchg_t *x);
long xchg_min_ms(const xchg_t *x);
long xchg_max_ms(const xchg_t *x);

#endif
