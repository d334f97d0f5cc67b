/*  client_internal.h: what the parts of libcauseway share; not installed.
 *
 *  Two threads meet in a cw_client_t:
 *   - the application thread (client.c) builds request envelopes, hands them
 *     to the I/O thread over an inproc PAIR pipe, and waits on `cond` for the
 *     reply slot or for queued events;
 *   - the I/O thread (client_actor.c) owns the DEALER socket, the session
 *     state machine and the vector clock, and posts replies and events into
 *     the shared part below.
 *  The shared part is guarded by `mu`. Invariants (under mu):
 *   I1. the notify pipe holds exactly one byte iff the event queue is
 *       non-empty (so cw_client_fd() is level-triggered);
 *   I2. `reply_ready` is set only for the request id in `waiting_rid`; a
 *       reply for any other id is freed by the I/O thread, never queued;
 *   I3. `clock_copy` is a copy of the I/O thread's clock after its last
 *       change (the I/O thread never lets the application see its own);
 *   I4. durable bookkeeping (auto_ack) belongs to the user of `epoch`: the
 *       I/O thread bumps epoch and zeroes ack_* when a login changes the
 *       session's user; an event carries the epoch it was queued in, and
 *       only events of the current epoch count as taken;
 *   I5. ack_done <= ack_sent when both were set in this epoch, and an Ack
 *       never goes beyond cw_ack_target_locked(): below every durable
 *       delivery still queued and below ack_pending, the last hand-over,
 *       which the application may still be handling. A hand-over counts as
 *       handled (ack_pending -> ack_taken) when the application comes back
 *       (next_event, fetch, ack_flush, logout) or CW_AUTO_ACK_DELAY_MS
 *       after it.
 *   I6. `tstats` is the tracer's counters after its last change; the I/O
 *       thread signals `cond` whenever tstats.pending drops to 0.
 *  Conversions from wire messages to public structs live in client_conv.c;
 *  causal event recording lives in client_trace.c.
 */
#ifndef CW_CLIENT_INTERNAL_H
#define CW_CLIENT_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "causeway.h"
#include "cw_clock.h"
#include "cw_envelope.h"
#include "cw_sec.h"

/* One command from the application to the I/O thread: this header followed
 * by a packed Envelope, in one inproc frame. */
typedef enum {
    CMD_REQUEST = 1,   /* forward the envelope (request_id set) */
    CMD_TERM = 2,      /* log out politely if logged in, then stop */
    CMD_ACK = 3,       /* auto_ack: the application took durable messages (no body) */
    CMD_FLUSH = 4,     /* send the events waiting for clockd now (no body) */
    CMD_NEXT_EP = 5,   /* without a session: connect to the next endpoint of the
                          list (cw_client_login after CW_ERR_UNREACHABLE; no body) */
} cmd_type_t;

typedef struct {
    int type;          /* cmd_type_t */
    uint64_t rid;      /* CMD_REQUEST: the envelope's request id;
                          CMD_ACK: 1 = acknowledge now, 0 = within the delay */
    int64_t deadline;  /* CMD_REQUEST: monotonic ms after which nobody waits */
} cmd_hdr_t;

typedef struct event_node {
    cw_event_t *ev;            /* owned */
    unsigned epoch;            /* `epoch` when it was queued (I4) */
    uint64_t seq;              /* durable delivery: its seq; else 0 */
    struct event_node *next;
} event_node_t;

struct cw_client {
    /* --- application thread only ------------------------------------ */
    void *ctx;                 /* this client's own zmq context */
    void *pipe;                /* app end of the PAIR pipe */
    pthread_t thread;          /* the I/O thread */
    int thread_started;        /* thread must be joined */
    uint64_t next_rid;         /* last request id used (application ids < 2^63) */
    char *name;                /* session name after a successful login, else NULL */
    uint64_t mid_random;       /* random middle part of generated message ids */
    uint64_t mid_count;        /* message ids generated so far */

    /* --- given to the I/O thread at creation, read-only after -------- */
    char **endpoints;          /* the broker endpoints, in the order given (1..
                                  CW_ENDPOINTS_MAX); the one in use is ep_cur */
    size_t n_endpoints;
    char *agent;               /* Login.agent */
    int quiet;                 /* Login.quiet */
    int no_reconnect;          /* drop the session on broker loss */
    int pull;                  /* Login.pull */
    int receipts;              /* Login.receipts */
    int auto_ack;              /* acknowledge taken durable deliveries */
    void *actor_pipe;          /* I/O end of the pipe (owned by the I/O thread) */
    void *first_sock;          /* DEALER connected in cw_client_new, handed over */
    void *first_mon;           /* its handshake monitor (or NULL), handed over */
    unsigned mon_count;        /* monitors made so far (unique inproc names) */
    int trace_fd;              /* trace_path opened O_APPEND, -1 if none; written
                                  by the I/O thread only, closed by client_free */
    char *clockd_endpoint;     /* causeway-clockd endpoint, NULL if none */
    void *clockd_sock;         /* DEALER to it, connected in cw_client_new, handed
                                  over to the I/O thread's tracer */
    size_t clockd_queue;       /* events held for the daemon at most */
    int clockd_linger_ms;      /* destroy waits this long for confirmations; < 0 none */
    int holdback_ms;           /* longest hold-back of a live delivery */
    int curve;                 /* CURVE towards the broker: keys below are set */
    cw_keypair_t curve_cert;   /* this client's key pair (curve or clockd_curve) */
    char curve_server[CW_Z85_KEY_LEN + 1];  /* the broker's public key */
    int clockd_curve;          /* CURVE towards clockd */
    char clockd_server[CW_Z85_KEY_LEN + 1]; /* clockd's public key */

    /* --- shared, guarded by mu --------------------------------------- */
    pthread_mutex_t mu;
    pthread_cond_t cond;       /* signalled on new event, reply, state change */
    event_node_t *ev_head;     /* event queue, oldest first */
    event_node_t *ev_tail;
    size_t ev_count;
    int notify[2];             /* non-blocking pipe; see I1 */
    uint64_t waiting_rid;      /* request the application waits for, 0 if none */
    int reply_ready;           /* the reply for waiting_rid is in the slot */
    cw_status_t reply_status;  /* its status (the reply's, or a local error) */
    cw_reply_t *reply;         /* broker reply or NULL for local errors; owned */
    cw_clock_t *clock_copy;    /* see I3; NULL until the first change */
    int connected;             /* session logged in and connection up */
    unsigned epoch;            /* user of the durable bookkeeping below (I4) */
    uint64_t ack_taken;        /* auto_ack: highest durable seq handled (I5) */
    uint64_t ack_pending;      /* auto_ack: highest seq of the last hand-over, 0 none */
    int64_t ack_pending_at;    /* auto_ack: when it was handed over (monotonic ms) */
    unsigned ack_untold;       /* auto_ack: takes since the I/O thread last flushed */
    uint64_t ack_sent;         /* highest seq an Ack was sent for */
    uint64_t ack_done;         /* highest seq the broker confirmed acknowledged */
    cw_trace_stats_t tstats;   /* causal event counters (I6) */
    size_t ep_cur;             /* index of the endpoint in use (I/O thread writes) */
    uint8_t *token_copy;       /* the session's resume token (I/O thread writes),
                                  NULL if none; read by cw_client_resume_token */
    size_t token_copy_len;
    char hs_error[192];        /* why the last handshake with the broker failed,
                                  "" if none since the last success */
    int conn_refused;          /* a TCP connect to the broker failed (libzmq's
                                  CONNECT_RETRIED) while there was no session, and
                                  none succeeded since: the waiting request fails
                                  with CW_ERR_UNREACHABLE; cleared per request */
    int hs_fatal;              /* hs_error is a configuration mismatch (key refused,
                                  plain vs CURVE): waiting requests fail at once */
};

/* The endpoint in use; the string lives as long as c. Takes mu. */
const char *cw_client_cur_endpoint(cw_client_t *c);

/* Applies the CURVE settings of c to a new socket (before connect):
 * towards the broker, or towards clockd if `clockd`; also the handshake
 * interval. 0, or -1 (errno set). */
int cw_client_secure_sock(const cw_client_t *c, void *sock, int clockd);

/* A PAIR socket receiving sock's handshake events (socket monitor), to be
 * made before sock connects; NULL if it cannot be made. Called by the one
 * thread that owns c's sockets at the time. */
void *cw_client_monitor_new(cw_client_t *c, void *sock);

/* The I/O thread's entry point (client_actor.c). */
void *cw_client_actor_main(void *arg);

/* client.c, called with mu held. The last hand-over counts as handled if
 * `handled` or if it is CW_AUTO_ACK_DELAY_MS old at `now`; then returns the
 * highest seq an Ack may cover now (I5), 0 if nothing. */
uint64_t cw_ack_target_locked(cw_client_t *c, int handled, int64_t now);

/* --- client_trace.c: causal events (I/O thread only) ------------------ */

typedef struct cw_tracer cw_tracer_t;

/* A recorder writing to c->trace_fd and reporting through c->clockd_sock
 * (taken over: c->clockd_sock is NULLed). NULL if c records nothing, or
 * out of memory (logged; nothing is recorded then). */
cw_tracer_t *cw_tracer_new(cw_client_t *c);
/* Counts what is still pending as dropped, closes the socket, frees; NULLs
 * *p. Safe on NULL. */
void cw_tracer_destroy(cw_tracer_t **p);

/* Recording; t may be NULL (nothing happens). `me` is the session's name,
 * `clock` the clock right after the event. */
/* A send that went out (or waits for a reconnection). */
void cw_tracer_send(cw_tracer_t *t, const char *me, const cw_clock_t *clock,
                    const cw_send_msg_t *send);
/* A clock tick that is no message: text says what. */
void cw_tracer_local(cw_tracer_t *t, const char *me, const cw_clock_t *clock, const char *text);
/* A delivery of the message `from` sent with id message_id and clock mclock;
 * late: flagged late (PROTOCOL.md §13.14). */
void cw_tracer_deliver(cw_tracer_t *t, const char *me, const cw_clock_t *clock, uint64_t holdback_us,
                       int late, const char *from,
                       const char *message_id, cw_clock_entry_msg_t *const *mclock,
                       size_t n_mclock);

/* The poll loop. cw_tracer_poll_item: the daemon socket and the events to
 * poll it for (0: none needed now); NULL if there is none. */
void *cw_tracer_poll_item(const cw_tracer_t *t, short *events);
/* Milliseconds until the tracer's next timer, -1 for none. */
long cw_tracer_timeout(const cw_tracer_t *t, int64_t now);
/* After poll: reads the daemon's replies, sends a due batch, times out a
 * silent daemon. Never blocks. */
void cw_tracer_step(cw_tracer_t *t, int64_t now);
/* CMD_FLUSH: batches go out without the batching delay until the queue is
 * empty. */
void cw_tracer_flush(cw_tracer_t *t);
/* Leaving: sends and waits for confirmations until nothing is pending or
 * monotonic ms `deadline`. */
void cw_tracer_drain(cw_tracer_t *t, int64_t deadline);

/* --- client_conv.c: wire -> public structs (NULL on out of memory) --- */
cw_reply_t *cw_conv_reply(const cw_reply_msg_t *r);
int cw_conv_message(cw_message_t *out, const cw_deliver_msg_t *d);
void cw_conv_message_free(cw_message_t *m);
int cw_conv_users(cw_user_t **out, size_t *n, cw_userinfo_msg_t *const *users, size_t count);
void cw_conv_users_free(cw_user_t **users, size_t n);
/* Copies wire clock entries. CW_OK or CW_ERR_NOMEM (*out NULL, *n 0). */
int cw_conv_clock(cw_clock_item_t **out, size_t *n, cw_clock_entry_msg_t *const *e, size_t count);
char *cw_conv_strdup(const char *s);   /* strdup of s, "" for NULL; NULL on OOM */

#endif
