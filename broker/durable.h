/*  durable: the router's side of durable queues (phase 2), below broker.c
 *  and above outorder.c and egress.c (layers: broker_internal.h). Router
 *  thread. Every function is a no-op (or answers NOT_DURABLE) when
 *  b->durable is NULL.
 */
#ifndef CW_DURABLE_H
#define CW_DURABLE_H

#include "broker_internal.h"
#include "store_if.h"

#include <stdbool.h>

/* Opens the store in cfg.data, loads the user log into the session table
 * and starts the store actor. 0, or -1 with a message in err. */
int cwd_open(cw_broker_t *b, char *err, size_t errlen);
/* Answers what the store still owes (bounded wait), stops the actor. */
void cwd_close(cw_broker_t *b);
/* The actor's socket to poll (NULL when live-only). */
void *cwd_poll_handle(cw_broker_t *b);
/* Handles every store reply waiting; never blocks. */
void cwd_on_replies(cw_broker_t *b);
/* Persists a new user name (the request is ordered before any append that
 * names the user). CW_OK (or live-only), else a status for the login reply. */
int cwd_add_user(cw_broker_t *b, const char *name);
/* Writes u's resume clock to the store if it is newer than the last one
 * written: at once with `now`, else only when no write of u's is in flight
 * (the reply of that one writes the newest). Ordered before every later
 * request: a durable Send's clock is committed no later than the message.
 * Best effort: a failure is logged, the next newer clock is written. */
void cwd_save_clock(cw_broker_t *b, cwb_user_t *u, bool now);
/* A session logged in or resumed: starts pushing the user's queue, from
 * the first unacknowledged message, unless the session pulls. */
void cwd_on_login(cw_broker_t *b, cw_session_t *s);
/* Redelivery of unacknowledged pushes whose ack is overdue. */
void cwd_tick(cw_broker_t *b);
/* A durable Send, already validated: resolves recipients and submits the
 * append; the reply goes out after the commit. Takes *envp (NULLs it). */
void cwd_send(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s, cw_env_t **envp);
/* Ack, Fetch and History requests from session s. */
void cwd_ack(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s, const cw_env_t *env);
void cwd_fetch(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s, const cw_env_t *env);
void cwd_history(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                 const cw_env_t *env);
/* ------------------------------------------------------------------------
 * Shared stores (b->shared: several brokers, store_if.h S1-S6). With
 * SQLite none of these is called.
 */

/* Submits the claim of s's user with session token s->token (store_if.h
 * S4; resume: the client presented that token). The answer comes through
 * cwd_next_claimed after cwd_on_replies. CW_OK, else a status for the
 * Login's reply (nothing submitted). */
int cwd_claim(cw_broker_t *b, cw_session_t *s, bool resume);

/* A claim answered: user, the session's serial when it was submitted,
 * status (CW_OK, CW_NAME_TAKEN, CW_STORE_ERROR...) and resumed. */
typedef struct {
    char user[CW_NAME_MAX_HARD + 1];
    uint64_t serial;
    int status;
    bool resumed;
    bool resume;  /* the claim presented the client's token (cwd_claim's resume) */
} cwd_claimed_t;

/* The next claim answered, oldest first; false when none is left. */
bool cwd_next_claimed(cw_broker_t *b, cwd_claimed_t *out);

/* Ends this broker's claim of `user` (logout, reap, a claim answered for
 * a session that is gone). Best effort: a failure is logged (the claim
 * then ends with the broker's lease). */
void cwd_release(cw_broker_t *b, const char *user);

/* Logout on a shared store: ends the claim like cwd_release and answers
 * the Logout (OK "logged out", whatever the release's outcome) only once
 * the store has answered the release, so that a client told "logged out"
 * may log in on any other broker at once, even if this one dies right
 * after. Returns true if that Reply will be sent; false (nothing sent,
 * nothing submitted) when the caller must reply itself: no shared store,
 * or the release could not be submitted (then logged). */
bool cwd_release_then_reply(cw_broker_t *b, const char *user, const void *id, size_t id_len,
                            uint64_t request_id);

/* A live Send with recipients that have no session here: rcpts[0..n) are
 * the Reply's recipients in the sender's order, with the local outcomes
 * already set; remote[i] says rcpts[i] is asked of the store (LIVE_SEND,
 * one request for all of them) with `frame` (the packed Deliver, copied).
 * The Reply goes out when the store answers, the remote outcomes merged
 * in. Takes *envp (the names may point into it; NULLs it). */
void cwd_live_send(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                   cw_env_t **envp, const Causeway__V1__RecipientStatus *rcpts,
                   const bool *remote, size_t n, const zmq_msg_t *frame);

/* Counters of the shared mode (BrokerStats). */
typedef struct {
    uint64_t claims;        /* claims answered CW_OK */
    uint64_t claims_taken;  /* claims answered CW_NAME_TAKEN */
    uint64_t takeovers;     /* local sessions taken over by another broker */
    uint64_t live_remote;   /* live recipients handed to other brokers (DELIVERED) */
    uint64_t live_in;       /* live frames from other brokers pushed or held here */
    uint64_t entry_events;  /* ENTRY events received */
    bool fenced;            /* the store's lease lapsed (FENCED): not serving */
    uint64_t fences;        /* FENCED events */
    uint64_t fenced_sessions; /* sessions closed because of one */
} cwd_shared_stats_t;
void cwd_shared_stats(cw_broker_t *b, cwd_shared_stats_t *out);
/* The detail of a Login refused (SHUTTING_DOWN) because of the fence. */
#define CWD_FENCED_DETAIL "fenced: this broker cannot renew its store lease; use another broker"
/* True while the shared store is fenced (store_if.h FENCED): logins are
 * refused until UNFENCED. Can't fail; false without a shared store. */
bool cwd_fenced(const cw_broker_t *b);

/* Counters for Stats (0 when live-only). */
void cwd_stats(cw_broker_t *b, uint64_t *stored, uint64_t *fsyncs, uint64_t *damaged);
/* The store thread's counters and the store requests not yet answered;
 * false (nothing filled) when live-only. */
bool cwd_monitor(cw_broker_t *b, cw_store_counters_t *st, uint32_t *pending);


#endif
