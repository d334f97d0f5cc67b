/*  tui_worker.h: the thread of `causeway tui` that owns the cw_client_t.
 *
 *  libcauseway's requests block until the broker replies, and a client is
 *  used by one thread at a time; the TUI must never block. So one worker
 *  thread makes every libcauseway call: the UI thread posts jobs (login,
 *  send, fetch, history, who, ack) and gets back, through a queue and a
 *  pipe it polls (tw_fd), finished jobs with their replies and the
 *  client's events, in the order they happened. A job or event handed out
 *  belongs to the UI thread. While a job waits for its reply, events
 *  queue up in libcauseway (never lost) and come out after it.
 *
 *  Login retries by itself while the broker is unreachable (TW_LOGIN comes
 *  back only with a broker answer, or when the worker is stopped); after
 *  that, libcauseway reconnects and logs in again on its own.
 */
#ifndef CW_TUI_WORKER_H
#define CW_TUI_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include "causeway.h"

typedef enum {
    TW_LOGIN = 1,      /* name */
    TW_SEND = 2,       /* to, n_to, broadcast, text, durable, message_id */
    TW_FETCH = 3,      /* "check for messages": n (0: default) */
    TW_HISTORY = 4,    /* n */
    TW_WHO = 5,        /* the whole user log */
    TW_ACK = 6,        /* acknowledge up to seq (shown) */
    TW_EVENT = 7,      /* not a job: a client event (ev) */
    TW_TRYING = 8,     /* not a job: login attempt failed with status, retrying */
} tw_kind_t;

typedef struct tw_job {
    tw_kind_t kind;
    uint64_t id;               /* the UI's id (sends: the model's entry id) */
    /* request (owned by the job) */
    char *name;                /* TW_LOGIN */
    char **to;                 /* TW_SEND */
    size_t n_to;
    int broadcast;
    char *text;
    int durable;
    int receipt;               /* TW_SEND: ask for a read receipt */
    char *message_id;          /* TW_SEND: NULL or the id to (re)send under */
    uint32_t n;                /* TW_FETCH, TW_HISTORY */
    uint64_t seq;              /* TW_ACK */
    /* result */
    cw_status_t status;        /* what the call returned */
    cw_reply_t *reply;         /* the broker's reply (may be NULL) */
    cw_event_t *ev;            /* TW_EVENT */
    struct tw_job *next;
} tw_job_t;

typedef struct tw tw_t;

/* Starts the worker for client c (taken over: the worker destroys it).
 * timeout_ms bounds each request. NULL on failure (c is destroyed). */
tw_t *tw_new(cw_client_t **c, int timeout_ms);
/* Stops the thread (a pending request finishes first, bounded by its
 * timeout), logs out if logged in, destroys the client and every queued
 * job; NULLs *p. Safe on NULL. */
void tw_destroy(tw_t **p);
/* A new zeroed job (NULL on out of memory). */
tw_job_t *tw_job_new(tw_kind_t kind);
void tw_job_destroy(tw_job_t **p);
/* Hands a job to the worker (taken over). */
void tw_post(tw_t *w, tw_job_t **job);
/* Readable while results wait. */
int tw_fd(const tw_t *w);
/* The next result (caller owns it), NULL if none. */
tw_job_t *tw_take(tw_t *w);

#endif
