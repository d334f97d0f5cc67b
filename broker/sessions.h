/*  sessions: the broker's table of live sessions and its user log.
 *
 *  Owned and used by the router thread only; no locking. A *user* is every
 *  name the broker has ever seen (the cumulative user log, phase 1 item 3);
 *  a *session* is one logged-in connection, keyed by its ROUTER routing id.
 *
 *  Invariants (checked by cw_sessions_check in debug builds):
 *    1. user->session == s  <=>  s->user == user  (a user has at most one session);
 *    2. every session is in the id table under its current routing id and in
 *       the dense array at s->slot;
 *    3. the users array is strictly sorted by name and holds every user once.
 *  Users are never removed while the broker runs. Sessions are freed only by
 *  cw_sessions_close, which callers run at a safe point (never while
 *  iterating the session array).
 */
#ifndef CW_SESSIONS_H
#define CW_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cw_util.h"

#define CW_ROUTING_ID_MAX 255
#define CW_TOKEN_LEN 16

typedef struct cw_session cw_session_t;

typedef struct {
    char name[CW_NAME_MAX_HARD + 1];  /* validated user name */
    cw_session_t *session;            /* live session, NULL when offline */
    uint64_t last_seen_us;            /* last login, logout or expiry; 0 never */
    uint64_t mark;                    /* scratch of cw_sessions_resolve: dedupes recipients */
    uint32_t durable_inflight;        /* durable appends naming this user, not yet committed */
    uint64_t last_append_token;       /* durable: token of the latest append naming this user */
    uint64_t last_seq;                /* durable: highest seq assigned in the user's queue */
    uint8_t stored;                   /* durable: CW_USER_UNSTORED, _STORING or _STORED */
    double tokens;                    /* rate limit: requests the user may send now (token
                                         bucket; kept across sessions, so a new login does
                                         not refill it) */
    int64_t tokens_ms;                /* when tokens was last refilled; 0: never (full) */
    /* Resume clock (PROTOCOL.md 11.4): the clock with the highest own entry
     * that this user's sessions put on any frame, as a serialized Deliver
     * holding only `clock` (the stored-clock form of durable.c); owned. */
    uint8_t *clock;
    size_t clock_len;                 /* 0: none known */
    uint64_t clock_own;               /* the user's own entry in `clock` */
    uint64_t clock_saved;             /* durable: own entry of the last clock submitted
                                         to the store */
    bool clock_saving;                /* durable: a clock write is in flight */
    uint64_t queued;                  /* durable: unacknowledged entries, as last learnt
                                         (store load, ack and read replies, commits) */
    bool remote_online;               /* shared store: served by another broker, as last
                                         learnt (loaded log, PRESENCE, TAKEOVER events);
                                         best effort */
} cwb_user_t;

enum { CW_USER_UNSTORED = 0, CW_USER_STORING = 1, CW_USER_STORED = 2 };

typedef struct cw_held cw_held_t;     /* live frames held back for causal order (outorder.c) */

struct cw_session {
    uint8_t id[1 + CW_ROUTING_ID_MAX];  /* id[0] = length, then the routing id */
    cwb_user_t *user;                    /* the user logged in on this session */
    int64_t last_rx_ms;                 /* monotonic time of the last frame received */
    int64_t last_tx_ms;                 /* monotonic time of the last frame sent */
    uint8_t token[CW_TOKEN_LEN];        /* resume token handed out at login */
    bool quiet;                         /* no Presence pushes, no user log at login */
    bool resumable;                     /* token is secret (getrandom worked) */
    bool dead;                          /* peer gone; close at the next safe point */
    size_t slot;                        /* index in the dense session array */
    uint64_t serial;                    /* unique per session for the broker's life */
    uint64_t origin;                    /* serial at login; unlike serial kept by a resume */
    /* Abuse limits (broker.c, durable.c). */
    uint32_t store_reqs;                /* durable: its store requests not yet answered */
    uint64_t store_bytes;               /* durable: their size in the store pipe, bytes */
    uint64_t replies_owed;              /* durable: most bytes their bulky replies can
                                           weigh (Fetch/History, large Send replies) */
    /* Delivery state (outorder.c: its state machine; durable.c drives it).
     * Seqs are positions in the user's queue. */
    uint8_t delivery;                   /* cwor_state_t (outorder.h) */
    bool pull;                          /* no pushes: the client fetches */
    bool receipts;                      /* Login.receipts: durable sends ask for
                                           read receipts (PROTOCOL.md 13.12) */
    bool receipts_seen;                 /* was pushed or listed an entry asking for a
                                           read receipt: its Acks look for them */
    bool redeliver_next;                /* the next push read redelivers */
    uint64_t pushed_seq;                /* highest seq pushed to this session */
    uint64_t chain_seq;                 /* the Envelope.after_seq of the next push: the
                                           seq of the last stored message pushed since
                                           the pushes last started again from the first
                                           unacknowledged entry (login, resume,
                                           redelivery); 0 right after (PROTOCOL.md
                                           §13.10) */
    uint64_t acked_seq;                 /* highest seq this session acknowledged */
    int64_t ack_wait_ms;                /* since when pushes wait for an ack; 0 none */
    int64_t read_retry_ms;              /* no push read before this (backoff after a failure) */
    uint32_t read_backoff_ms;           /* current backoff; 0 after a successful push */
    uint32_t cut_backoff_ms;            /* shared store: the last push read came back cut
                                           (truncated) and the next waits this long (or
                                           for an ENTRY); 0: it was not cut */
    cw_held_t *held;                    /* live Delivers waiting behind durable ones; owned
                                           by the router, freed before the session closes */
    char key[41];                       /* CURVE: Z85 public key of the connection that
                                           logged in (or resumed); "" in plain mode */
    int fd;                             /* CURVE: that connection's descriptor (ZMQ_SRCFD) */
    char peer[64];                      /* "ip:port" of the connection at login; "" unknown */
    uint64_t since_us;                  /* wall-clock login time */
    char agent[64];                     /* Login.agent, cut to fit */
    bool gone;                          /* CURVE: that connection closed (socket monitor):
                                           nothing is pushed to the routing id, which
                                           another connection may now hold */
    /* Shared store (broker.c's two-phase login, durable.c's events). */
    bool claiming;                      /* the Login waits for the store's claim: not
                                           logged in yet (no pushes, no requests) */
    bool taken_over;                    /* another broker took the session (TAKEOVER):
                                           closed without presence and without a release */
    uint64_t login_rid;                 /* claiming: the Login's request id to answer */
    uint64_t entry_hint;                /* highest ENTRY seq seen while a push read was in
                                           flight: a short read reads again if it is
                                           above pushed_seq (no lost wake-up) */
};

typedef struct cw_sessions cw_sessions_t;

/* A CZMQ hash keyed by routing ids stored length-prefixed (byte 0 is the
 * length), as the session table and outq keep them: keys are neither
 * copied nor freed by the hash. NULL if out of memory. */
typedef struct _zhashx_t zhashx_t;
zhashx_t *cw_id_table_new(void);

/* New empty table; NULL if out of memory. */
cw_sessions_t *cw_sessions_new(void);
/* Frees every session and user; NULLs *p; safe on NULL and twice. */
void cw_sessions_destroy(cw_sessions_t **p);

/* Session for a routing id, or NULL. */
cw_session_t *cw_sessions_find(cw_sessions_t *t, const void *id, size_t len);

/* User by name, or NULL if never seen. */
cwb_user_t *cw_sessions_user(cw_sessions_t *t, const char *name);

/* The user for name, created (offline, last_seen 0) if new. The name must
 * be valid already. Sets *created if not NULL. NULL if out of memory. */
cwb_user_t *cw_sessions_user_add(cw_sessions_t *t, const char *name, bool *created);

/* Opens a session for user on routing id. The user must be offline and the
 * id unused. NULL if out of memory (nothing changed). */
cw_session_t *cw_sessions_open(cw_sessions_t *t, const void *id, size_t len, cwb_user_t *user,
                               int64_t now_ms);

/* Moves a session to another routing id (resume after reconnect). The new
 * id must be unused. 0, or -1 if out of memory (nothing changed). */
int cw_sessions_rebind(cw_sessions_t *t, cw_session_t *s, const void *id, size_t len);

/* Closes and frees *s: the user goes offline with last_seen = now_us.
 * NULLs *s. */
void cw_sessions_close(cw_sessions_t *t, cw_session_t **s, uint64_t now_us);

/* Resolves the recipients of a Send: broadcast, every user but sender (in
 * name order); else the n_to names of `to`, deduplicated, in the order
 * given. names[i] is the name (the user's own copy for a known user, else
 * the caller's string) and users[i] its user or NULL if unknown; both
 * arrays need room for n_to (broadcast: the user count) entries. Returns
 * the count; can't fail. */
size_t cw_sessions_resolve(cw_sessions_t *t, bool broadcast, char *const *to, size_t n_to,
                           const cwb_user_t *sender, const char **names, cwb_user_t **users);

/* Live sessions, as a dense array valid until the next open/close. */
size_t cw_sessions_count(const cw_sessions_t *t);
cw_session_t *cw_sessions_at(const cw_sessions_t *t, size_t i);

/* Users sorted by name, valid until the next user_add. */
size_t cw_sessions_user_count(const cw_sessions_t *t);
cwb_user_t *cw_sessions_user_at(const cw_sessions_t *t, size_t i);

/* Asserts the invariants above (no-op with NDEBUG). */
void cw_sessions_check(const cw_sessions_t *t);

#endif
