/*  client_actor.c: the I/O thread of libcauseway.
 *
 *  Owns the DEALER socket to the broker, the session state machine, the
 *  requests in flight and the session's vector clock. Runs on its own
 *  thread, started by cw_client_new and stopped by cw_client_destroy; it
 *  talks to the application only through the PAIR pipe (commands in) and the
 *  shared part of cw_client_t (replies, events, clock copy out; see
 *  client_internal.h).
 *
 *  Session states and the function that performs each transition:
 *
 *    IDLE      no session; socket connected; requests forwarded as they are.
 *    ONLINE    logged in; heartbeats sent after heartbeat_ms of silence; a
 *              broker silent for heartbeat_ms*liveness is lost.
 *    LOST      session wanted, no socket; waiting `backoff_ms` to retry.
 *    RESUMING  session wanted; fresh socket; our own Login (same name, resume
 *              token) in flight with a deadline.
 *
 *    IDLE     -> ONLINE    login reply OK to an application login (on_reply)
 *    ONLINE   -> IDLE      logout reply (on_reply)
 *    ONLINE   -> LOST      broker silent, or it forgot our session (lose)
 *    ONLINE   -> IDLE      same, with no_reconnect (lose)
 *    LOST     -> RESUMING  backoff elapsed (start_resume)
 *    RESUMING -> ONLINE    login reply OK (on_resume_reply)
 *    RESUMING -> LOST      refused or no reply in time; backoff doubles up
 *                          to 5 s (resume_failed)
 *    LOST/RESUMING -> IDLE application logout: session abandoned (on_request)
 *
 *  Durable mode, also here:
 *   - Retried sends. A durable Send is packed once (message id and clock
 *     included) and kept with its request. When the connection is lost
 *     while it waits, lose() parks it instead of failing it; a durable Send
 *     the application makes while LOST/RESUMING is parked at once; after
 *     the next successful login every parked Send whose caller still waits
 *     goes out again, byte for byte (resend_parked). A Send with no reply
 *     for attempt_ms(), or answered NOT_LOGGED_IN / SHUTTING_DOWN, counts as
 *     a lost reply: lose() and the same path. The broker's duplicate check
 *     by (sender, message_id) makes the resend safe.
 *   - De-duplication (dedup_deliver, filter_fetch): dd_seq is the highest
 *     durable seq handed to the application for user dd_name; anything at
 *     or below it is dropped before it touches the clock. Live deliveries
 *     with a message id go through a ring of the last CW_LIVE_DEDUP_WINDOW
 *     (from, message_id) pairs.
 *   - Hold-back (on_deliver, release_held): a Deliver whose after_seq is
 *     above dd_seq waits in `held` (arrival order) until dd_seq reaches it;
 *     a live one at most holdback_ms (then shown with gap set), a stored
 *     one until its predecessors come again (it is not acknowledged, so the
 *     broker pushes them again). Every showing re-examines the queue.
 *   - auto_ack (ack_flush): the application thread records what it took
 *     and handled (client.c) and wakes us with CMD_ACK; we send one
 *     cumulative Ack for cw_ack_target_locked() CW_AUTO_ACK_DELAY_MS later,
 *     or at once for a full batch, and after every reconnection (an Ack in
 *     flight at a loss may be lost).
 *
 *  Causal events (client_trace.c): every change of the clock is recorded
 *  where it happens (on_request for a send's tick, on_deliver and
 *  on_fetch_reply for merge and tick), so the recorder sees each session's
 *  events in clock order; the recorder's daemon socket is polled by the
 *  same loop, and at exit it gets clockd_linger_ms to confirm the rest.
 *
 *  Invariants: sock != NULL in every state but LOST; name/token are set in
 *  ONLINE, LOST and RESUMING and only there; every request in `inflight` was
 *  sent on the current socket (lose() fails or parks them all when it
 *  closes it); `parked` is empty in IDLE and ONLINE except inside
 *  resend_parked; the application sees each request end exactly once (a
 *  reply, a local error, or its own timeout); dd_seq only grows while
 *  dd_name stays the same; nothing in `held` is shown yet, and every entry
 *  of it has after_seq > dd_seq once release_held has run.
 */
#include "client_internal.h"
#include "cw_log.h"
#include "cw_util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define DEFAULT_HEARTBEAT_MS 1000
#define DEFAULT_LIVENESS 3
#define LOGOUT_LINGER_MS 500
/* A request nobody waits for is forgotten this long after its deadline. */
#define INFLIGHT_GRACE_MS 60000
/* Frames read per loop turn, so commands are never starved. */
#define READ_BURST 256
/* Request ids of the I/O thread's own requests have the top bit set. */
#define INTERNAL_RID (UINT64_C(1) << 63)

typedef enum { ST_IDLE, ST_ONLINE, ST_LOST, ST_RESUMING } state_t;

static const char *state_name[] = {"IDLE", "ONLINE", "LOST", "RESUMING"};

typedef struct inflight {
    uint64_t rid;              /* request id */
    int body;                  /* envelope body case of the request */
    int64_t deadline;          /* application's deadline (monotonic ms) */
    char *login_name;          /* login: the name asked for; owned */
    cw_clock_item_t *clock;    /* send: the clock stamped on it; owned */
    size_t n_clock;
    uint8_t *frame;            /* durable send: the packed envelope, sent again
                                  as is after a reconnection; owned */
    size_t frame_len;
    int64_t attempt_deadline;  /* durable send: no reply by then = reply lost */
    uint64_t seq;              /* our own Ack: the seq acknowledged */
    unsigned epoch;            /* our own Ack: the epoch it belongs to */
    struct inflight *next;
} inflight_t;

/* A delivery held back for its causal predecessors (hold-back queue). */
typedef struct held {
    cw_env_t *env;             /* the Deliver frame, decoded; owned */
    int64_t since_ms;          /* monotonic ms of its arrival */
    uint64_t since_us;         /* the same, for holdback_us */
    struct held *next;         /* arrival order */
} held_t;

/* One remembered live delivery (duplicate suppression by from+message_id). */
typedef struct {
    uint64_t hash;             /* of from and message_id; 0 = empty slot */
    char *from;                /* owned */
    char *id;                  /* owned */
} live_seen_t;

typedef struct {
    cw_client_t *c;            /* shared part and creation parameters */
    void *pipe;                /* our end of the command pipe */
    void *sock;                /* DEALER to the broker; NULL in LOST */
    unsigned sock_gen;         /* bumped whenever sock is replaced */
    void *mon;                 /* PAIR reading sock's handshake events; NULL if none */
    unsigned hs_failures;      /* handshakes failed since the last that succeeded */
    int hs_known;              /* one of them said why (key refused, mechanism
                                  mismatch): vaguer failures keep that reason */
    state_t state;
    char *name;                /* session name (ONLINE/LOST/RESUMING) */
    uint8_t *token;            /* resume token from LoginInfo */
    size_t token_len;
    uint32_t hb_ms;            /* heartbeat interval from LoginInfo */
    uint32_t liveness;         /* missed intervals before the broker is lost */
    uint32_t max_frame;        /* broker's frame limit; 0 if unknown */
    int64_t last_send;         /* monotonic ms of our last frame out */
    int64_t last_recv;         /* monotonic ms of the broker's last frame in */
    int backoff_ms;            /* LOST: delay that led to retry_at */
    int64_t retry_at;          /* LOST: when to try again */
    uint64_t resume_rid;       /* RESUMING: id of our Login */
    int64_t resume_deadline;   /* RESUMING: give up on that Login */
    cw_clock_t *clock;         /* the session's vector clock */
    inflight_t *inflight;      /* requests sent on sock, awaiting replies */
    inflight_t *parked;        /* durable sends waiting for a reconnection */
    uint64_t next_rid;         /* last internal request id used */
    int terminated;            /* CMD_TERM received */
    unsigned epoch;            /* our copy of c->epoch (only we change it) */
    char *dd_name;             /* user that dd_seq and the ack state belong to */
    uint64_t dd_seq;           /* highest durable seq handed to the application */
    live_seen_t *live;         /* ring of CW_LIVE_DEDUP_WINDOW live deliveries */
    size_t live_next;          /* next slot to overwrite */
    int64_t ack_due;           /* auto_ack: flush then (monotonic ms); 0 = not armed */
    held_t *held;              /* hold-back queue, oldest first */
    held_t **held_tail;        /* where the next one goes */
    size_t n_held;             /* entries in held, <= CW_HOLDBACK_MAX */
    cw_tracer_t *tracer;       /* causal event recorder (client_trace.c); NULL: none */
    /* Failover (several endpoints; see cw_client_new): */
    int peer_gone;             /* the socket's monitor saw its TCP connection close
                                  (or refused): run_timers loses it / fails the
                                  resume at once instead of waiting for silence */
    unsigned ep_tries;         /* endpoints tried in vain since the last login */
    int64_t taken_until;       /* NAME_TAKEN on a resume is retried on the same
                                  endpoint until then (monotonic ms); 0: not yet seen */
    size_t lost_ep;            /* endpoint index when the session was last lost */
} actor_t;

/* --- posting to the application -------------------------------------- */

static void set_state(actor_t *a, state_t st)
{
    if (a->state != st)
        CW_DEBUG("client: %s -> %s", state_name[a->state], state_name[st]);
    a->state = st;
    pthread_mutex_lock(&a->c->mu);
    a->c->connected = (st == ST_ONLINE);
    pthread_mutex_unlock(&a->c->mu);
}

static void on_monitor(actor_t *a);
static size_t cur_ep(actor_t *a);
/* The endpoint in use. Only this thread changes c->ep_cur, so it reads it
 * without the lock (which may be held by the caller). */
static const char *my_ep(const actor_t *a)
{
    return a->c->endpoints[a->c->ep_cur];
}
#define HS_FAILURES_FATAL 3  /* failed handshakes in a row that fail waiting requests */

/* Hands the reply for rid to the application if it still waits for it.
 * Takes reply (may be NULL for local errors). Returns 1 if taken. */
static int post_reply(actor_t *a, uint64_t rid, cw_status_t status, cw_reply_t *reply)
{
    cw_client_t *c = a->c;
    int taken = 0;
    /* A connection that just failed its handshake is gone before its
     * monitor event is read: read it first, so that the application
     * learns why (client.c turns DISCONNECTED into HANDSHAKE_FAILED). */
    if (status == CW_ERR_DISCONNECTED && a->mon)
        on_monitor(a);
    pthread_mutex_lock(&c->mu);
    if (c->waiting_rid == rid && !c->reply_ready) {
        c->reply_ready = 1;
        c->reply_status = status;
        c->reply = reply;
        taken = 1;
        pthread_cond_broadcast(&c->cond);
    }
    pthread_mutex_unlock(&c->mu);
    if (!taken) {
        CW_DEBUG("client: reply to request %llu dropped: nobody waits",
                 (unsigned long long) rid);
        cw_reply_destroy(&reply);
    }
    return taken;
}

/* Queues an event for the application; takes ev. */
static void post_event(actor_t *a, cw_event_t *ev)
{
    cw_client_t *c = a->c;
    event_node_t *n = malloc(sizeof *n);
    if (!n) {
        CW_ERROR("client: out of memory, event dropped");
        cw_event_destroy(&ev);
        return;
    }
    n->ev = ev;
    n->next = NULL;
    n->epoch = a->epoch;
    n->seq = ev->type == CW_EVENT_DELIVER   ? ev->msg.seq
             : ev->type == CW_EVENT_RECEIPT ? ev->receipt.seq
                                            : 0;
    pthread_mutex_lock(&c->mu);
    if (c->ev_tail) {
        c->ev_tail->next = n;
    } else {
        c->ev_head = n;
        /* I1: the queue was empty, so the pipe was too. */
        if (write(c->notify[1], "e", 1) != 1)
            abort();
    }
    c->ev_tail = n;
    c->ev_count++;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mu);
}

static void post_conn_event(actor_t *a, cw_event_type_t type, const char *detail,
                            const cw_reply_msg_t *login_reply)
{
    cw_event_t *ev = calloc(1, sizeof *ev);
    if (!ev)
        return;
    if (a->c->n_endpoints > 1) {
        size_t i = cur_ep(a);
        ev->failover.endpoint = cw_conv_strdup(a->c->endpoints[type == CW_EVENT_DISCONNECTED
                                                                   ? a->lost_ep : i]);
        ev->failover.switched = type == CW_EVENT_RECONNECTED && i != a->lost_ep;
        ev->failover.resumed = type == CW_EVENT_RECONNECTED && login_reply &&
                               login_reply->detail &&
                               strcmp(login_reply->detail, "session resumed") == 0;
    }
    ev->type = type;
    ev->conn.status = type == CW_EVENT_DISCONNECTED ? CW_ERR_DISCONNECTED : CW_OK;
    ev->conn.detail = cw_conv_strdup(detail);
    if (login_reply)
        cw_conv_users(&ev->conn.users, &ev->conn.n_users, login_reply->users,
                      login_reply->n_users);
    post_event(a, ev);
}

/* I3: refreshes the application's copy of the clock. */
static void publish_clock(actor_t *a)
{
    cw_clock_t *copy = cw_clock_new();
    cw_clock_entry_msg_t **e;
    size_t n = cw_clock_entries(a->clock, &e);
    if (!copy || cw_clock_merge(copy, e, n) != CW_OK) {
        cw_clock_destroy(&copy);
        return;   /* out of memory: the application keeps the older copy */
    }
    pthread_mutex_lock(&a->c->mu);
    cw_clock_destroy(&a->c->clock_copy);
    a->c->clock_copy = copy;
    pthread_mutex_unlock(&a->c->mu);
}

/* --- socket and in-flight requests ------------------------------------ */

static void inflight_free(inflight_t **p)
{
    inflight_t *f = *p;
    free(f->login_name);
    cw_client_clock_free(&f->clock, f->n_clock);
    free(f->frame);
    free(f);
    *p = NULL;
}

static int64_t loss_ms(const actor_t *a);
static void live_clear(actor_t *a);
static void held_clear(actor_t *a);
static void release_held(actor_t *a, int64_t force_before);

/* How long a durable send waits for its reply before it counts as lost. */
static int64_t attempt_ms(const actor_t *a)
{
    int64_t t = 2 * loss_ms(a);
    return t < CW_DURABLE_ATTEMPT_MS ? CW_DURABLE_ATTEMPT_MS : t;
}

/* Unlinks and returns the in-flight request rid, or NULL. */
static inflight_t *inflight_take(actor_t *a, uint64_t rid)
{
    for (inflight_t **pp = &a->inflight; *pp; pp = &(*pp)->next) {
        if ((*pp)->rid == rid) {
            inflight_t *f = *pp;
            *pp = f->next;
            return f;
        }
    }
    return NULL;
}

/* Forgets requests nobody has waited for in a long time (their replies
 * never came). */
static void inflight_prune(actor_t *a, int64_t now)
{
    for (inflight_t **pp = &a->inflight; *pp;) {
        inflight_t *f = *pp;
        if (f->deadline != INT64_MAX && f->deadline + INFLIGHT_GRACE_MS < now) {
            *pp = f->next;
            inflight_free(&f);
        } else {
            pp = &f->next;
        }
    }
}

/* Fails every request in flight with status (the socket is going away);
 * with park, durable sends whose caller still waits are parked instead. */
static void inflight_fail_all(actor_t *a, cw_status_t status, int park)
{
    int64_t now = cw_mono_ms();
    inflight_t **tail = &a->parked;
    while (*tail)
        tail = &(*tail)->next;
    while (a->inflight) {
        inflight_t *f = a->inflight;
        a->inflight = f->next;
        f->next = NULL;
        if (park && f->frame && !(f->rid & INTERNAL_RID) && f->deadline > now) {
            *tail = f;
            tail = &f->next;
            continue;
        }
        if (!(f->rid & INTERNAL_RID))
            post_reply(a, f->rid, status, NULL);
        inflight_free(&f);
    }
}

/* Ends every parked send with status (for a caller that still waits). */
static void parked_fail_all(actor_t *a, cw_status_t status)
{
    while (a->parked) {
        inflight_t *f = a->parked;
        a->parked = f->next;
        post_reply(a, f->rid, status, NULL);
        inflight_free(&f);
    }
}

/* Watches the handshakes of a->sock (read by on_monitor). Without a
 * monitor only the messages are less precise. */
static void monitor_start(actor_t *a)
{
    a->mon = cw_client_monitor_new(a->c, a->sock);
}

/* The monitor is switched off before its reading end closes: libzmq sends
 * monitor events with a blocking send from its own I/O thread, and one
 * sent to a PAIR whose peer is gone would block that thread, and with it
 * every connection of the context (seen as logins that never leave). */
static void monitor_stop(actor_t *a)
{
    if (a->mon) {
        if (a->sock)
            zmq_socket_monitor(a->sock, NULL, 0);
        zmq_close(a->mon);
        a->mon = NULL;
    }
}

/* Records one handshake event of the broker connection for the application
 * (c->hs_error, c->hs_fatal; see cw_client_handshake_error). */
static void on_monitor(actor_t *a)
{
    for (;;) {
        zmq_msg_t ev, ep;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, a->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        zmq_msg_init(&ep);
        if (zmq_msg_more(&ev))
            zmq_msg_recv(&ep, a->mon, 0);
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (uint8_t *) zmq_msg_data(&ev) + 2, 4);
        }
        zmq_msg_close(&ev);
        zmq_msg_close(&ep);
        if (event == ZMQ_EVENT_DISCONNECTED) {
            /* The broker's end closed (killed, stopped, restarted). With
             * several endpoints that is a failover now (run_timers); with
             * one, the heartbeat timer decides as it always did. */
            if (a->c->n_endpoints > 1 && (a->state == ST_ONLINE || a->state == ST_RESUMING))
                a->peer_gone = 1;
            continue;
        }
        if (event == ZMQ_EVENT_CONNECT_RETRIED && a->c->n_endpoints > 1 &&
            a->state == ST_RESUMING)
            a->peer_gone = 1;   /* this endpoint refuses: on to the next one */
        if (event == ZMQ_EVENT_CONNECTED || event == ZMQ_EVENT_CONNECT_RETRIED) {
            /* A TCP connect failed (refused, unreachable) and libzmq will
             * try again: without a session nothing is gained by waiting,
             * so the waiting request fails at once (CW_ERR_UNREACHABLE; a
             * session keeps reconnecting instead). */
            pthread_mutex_lock(&a->c->mu);
            a->c->conn_refused = event == ZMQ_EVENT_CONNECT_RETRIED && !a->name;
            if (a->c->conn_refused)
                pthread_cond_broadcast(&a->c->cond);
            pthread_mutex_unlock(&a->c->mu);
            continue;
        }
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            a->hs_failures = 0;
            a->hs_known = 0;
            pthread_mutex_lock(&a->c->mu);
            a->c->hs_error[0] = '\0';
            a->c->hs_fatal = 0;
            pthread_mutex_unlock(&a->c->mu);
            continue;
        }
        int curve = a->c->curve;
        const char *why = NULL; /* a precise reason, or a guess */
        int known = 1;
        if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            why = "the broker refused this client's key: it is not registered there "
                  "(or not for this broker)";
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL &&
                   value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
            why = curve ? "the broker does not use CURVE; connect without --server-key/--cert"
                        : "the broker requires CURVE; give its public key and your "
                          "certificate (--server-key FILE --cert FILE)";
        } else {
            known = 0;
            why = curve ? "the CURVE handshake failed: a wrong server key, a certificate "
                          "whose keys do not match, or a broker that does not use CURVE?"
                        : "the security handshake with the broker failed (a CURVE broker? "
                          "use --server-key FILE --cert FILE)";
        }
        /* A precise reason fails waiting requests at once and is kept
         * while later failures say less (a side may close before the other
         * could tell why). Failures without one are fatal after
         * HS_FAILURES_FATAL in a row (libzmq retries every 100 ms): a
         * connection accepted and then closed in the handshake again and
         * again is no passing outage. */
        a->hs_failures++;
        int fatal = known || a->hs_known || a->hs_failures >= HS_FAILURES_FATAL;
        pthread_mutex_lock(&a->c->mu);
        if (known || !a->hs_known) {
            if (strcmp(a->c->hs_error, why) != 0)
                CW_DEBUG("client: handshake with %s failed: %s", my_ep(a),
                         why);
            snprintf(a->c->hs_error, sizeof a->c->hs_error, "%s", why);
        }
        a->hs_known |= known;
        a->c->hs_fatal = fatal;
        pthread_cond_broadcast(&a->c->cond);
        pthread_mutex_unlock(&a->c->mu);
    }
}

static void close_sock(actor_t *a)
{
    monitor_stop(a);
    a->peer_gone = 0;
    if (a->sock) {
        zmq_close(a->sock);
        a->sock = NULL;
        a->sock_gen++;
    }
}

/* A fresh DEALER connected to the endpoint. 0, or -1 (sock stays NULL). */
static int open_sock(actor_t *a)
{
    close_sock(a);
    void *s = zmq_socket(a->c->ctx, ZMQ_DEALER);
    if (!s)
        return -1;
    int zero = 0;
    zmq_setsockopt(s, ZMQ_LINGER, &zero, sizeof zero);
    a->sock = s;
    a->sock_gen++;
    monitor_start(a); /* before connecting: no handshake goes unseen */
    const char *ep = my_ep(a);
    if (cw_client_secure_sock(a->c, s, 0) != 0 || zmq_connect(s, ep) != 0) {
        CW_WARN("client: connect %s: %s", ep, zmq_strerror(errno));
        close_sock(a);
        return -1;
    }
    return 0;
}

/* Sends env on the socket. CW_OK, CW_ERR_DISCONNECTED (no socket, or the
 * socket's queue is full because the broker is unreachable), CW_ERR_NOMEM or
 * CW_ERR_IO. */
static cw_status_t send_env(actor_t *a, const cw_env_t *env)
{
    if (!a->sock)
        return CW_ERR_DISCONNECTED;
    /* Every frame of a session carries the clock (a Send: the one it was
     * stamped with), so the broker learns the user's resume clock also
     * from deliveries' ticks (PROTOCOL.md 11.4). */
    cw_env_t with_clock;
    if (a->name && a->state == ST_ONLINE && !env->n_clock && env->body_case != CW_BODY(LOGIN) &&
        cw_clock_size(a->clock)) {
        with_clock = *env;
        with_clock.n_clock = cw_clock_entries(a->clock, &with_clock.clock);
        env = &with_clock;
    }
    if (cw_env_send(a->sock, NULL, 0, env, ZMQ_DONTWAIT) != 0) {
        if (errno == EAGAIN)
            return CW_ERR_DISCONNECTED;
        if (errno == ENOMEM)
            return CW_ERR_NOMEM;
        CW_WARN("client: send: %s", zmq_strerror(errno));
        return CW_ERR_IO;
    }
    a->last_send = cw_mono_ms();
    return CW_OK;
}

/* Sends an already packed envelope. Statuses as send_env. */
static cw_status_t send_bytes(actor_t *a, const uint8_t *data, size_t len)
{
    if (!a->sock)
        return CW_ERR_DISCONNECTED;
    if (zmq_send(a->sock, data, len, ZMQ_DONTWAIT) < 0) {
        if (errno == EAGAIN)
            return CW_ERR_DISCONNECTED;
        if (errno == ENOMEM)
            return CW_ERR_NOMEM;
        CW_WARN("client: send: %s", zmq_strerror(errno));
        return CW_ERR_IO;
    }
    a->last_send = cw_mono_ms();
    return CW_OK;
}

/* Sends a request of our own (logout, ack, resume login) and returns its
 * id, 0 if it could not be sent. With track, its reply is expected: the
 * record is returned in *tracked (NULL if out of memory). */
static uint64_t send_internal(actor_t *a, cw_env_t *env, int track, inflight_t **tracked)
{
    if (tracked)
        *tracked = NULL;
    env->request_id = INTERNAL_RID | ++a->next_rid;
    if (send_env(a, env) != CW_OK)
        return 0;
    if (track) {
        inflight_t *f = calloc(1, sizeof *f);
        if (f) {
            f->rid = env->request_id;
            f->body = env->body_case;
            f->deadline = cw_mono_ms();
            f->next = a->inflight;
            a->inflight = f;
        }
        if (tracked)
            *tracked = f;
    }
    return env->request_id;
}

static void send_logout(actor_t *a)
{
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Logout logout = CAUSEWAY__V1__LOGOUT__INIT;
    env.body_case = CW_BODY(LOGOUT);
    env.logout = &logout;
    send_internal(a, &env, 1, NULL);
}

/* auto_ack: sends one cumulative Ack for what the application has taken
 * (I5), if that is more than was sent; only while ONLINE (a reconnection
 * calls again). Disarms the timer. */
static void ack_flush(actor_t *a)
{
    cw_client_t *c = a->c;
    a->ack_due = 0;
    if (!c->auto_ack || a->state != ST_ONLINE)
        return;
    int64_t now = cw_mono_ms();
    pthread_mutex_lock(&c->mu);
    uint64_t seq = cw_ack_target_locked(c, 0, now);
    int need = seq > c->ack_sent;
    c->ack_untold = 0;
    /* A hand-over too recent to count as handled: look again when it is
     * old enough (I5). */
    if (c->ack_pending)
        a->ack_due = c->ack_pending_at + CW_AUTO_ACK_DELAY_MS;
    pthread_mutex_unlock(&c->mu);
    if (!need)
        return;
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Ack ack = CAUSEWAY__V1__ACK__INIT;
    ack.seq = seq;
    env.body_case = CW_BODY(ACK);
    env.ack = &ack;
    inflight_t *f;
    if (!send_internal(a, &env, 1, &f))
        return;   /* the connection is in trouble; the reconnection acks */
    if (f) {
        f->seq = seq;
        f->epoch = a->epoch;
    }
    pthread_mutex_lock(&c->mu);
    if (seq > c->ack_sent)
        c->ack_sent = seq;
    pthread_mutex_unlock(&c->mu);
    CW_DEBUG("client: acknowledging up to seq %llu", (unsigned long long) seq);
}

static void send_heartbeat(actor_t *a)
{
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Heartbeat hb = CAUSEWAY__V1__HEARTBEAT__INIT;
    env.body_case = CW_BODY(HEARTBEAT);
    env.heartbeat = &hb;
    /* A heartbeat that does not fit (queue full) is not retried before the
     * next interval: the loss timer decides. */
    send_env(a, &env);
    a->last_send = cw_mono_ms();
}

/* --- session ----------------------------------------------------------- */

/* Publishes the session's resume token to the application
 * (cw_client_resume_token). */
static void publish_token(actor_t *a)
{
    uint8_t *copy = NULL;
    if (a->token_len && (copy = malloc(a->token_len)))
        memcpy(copy, a->token, a->token_len);
    pthread_mutex_lock(&a->c->mu);
    free(a->c->token_copy);
    a->c->token_copy = copy;
    a->c->token_copy_len = copy ? a->token_len : 0;
    pthread_mutex_unlock(&a->c->mu);
}

/* Moves to the next endpoint of the list (round robin); the socket is
 * opened by the caller. */
static void next_endpoint(actor_t *a)
{
    cw_client_t *c = a->c;
    if (c->n_endpoints < 2)
        return;
    pthread_mutex_lock(&c->mu);
    c->ep_cur = (c->ep_cur + 1) % c->n_endpoints;
    pthread_mutex_unlock(&c->mu);
}

static size_t cur_ep(actor_t *a)
{
    return a->c->ep_cur;   /* written by this thread only (see my_ep) */
}

static void forget_session(actor_t *a)
{
    parked_fail_all(a, CW_ERR_DISCONNECTED);
    free(a->name);
    a->name = NULL;
    free(a->token);
    a->token = NULL;
    a->token_len = 0;
    publish_token(a);
}

/* Records a successful login. CW_OK or CW_ERR_NOMEM (session unchanged). */
static int take_session(actor_t *a, const char *name, const Causeway__V1__LoginInfo *info)
{
    char *n = strdup(name);
    uint8_t *tok = NULL;
    size_t tok_len = info ? info->resume_token.len : 0;
    if (tok_len) {
        tok = malloc(tok_len);
        if (tok)
            memcpy(tok, info->resume_token.data, tok_len);
    }
    if (!n || (tok_len && !tok)) {
        free(n);
        free(tok);
        return CW_ERR_NOMEM;
    }
    char *old = a->name;   /* name may be a->name itself */
    a->name = n;
    free(old);
    free(a->token);
    a->token = tok;
    a->token_len = tok_len;
    publish_token(a);
    a->hb_ms = info && info->heartbeat_ms ? info->heartbeat_ms : DEFAULT_HEARTBEAT_MS;
    a->liveness = info && info->liveness ? info->liveness : DEFAULT_LIVENESS;
    a->max_frame = info ? info->max_frame : 0;
    /* The user's clock as the broker last saw it (PROTOCOL.md 11.4): merged
     * before our first event, so our own entry goes on above every event
     * of earlier clients of this user. Not an event itself. */
    if (info && info->n_clock) {
        if (cw_clock_merge(a->clock, info->clock, info->n_clock) != CW_OK)
            CW_ERROR("client: out of memory merging the resume clock");
        publish_clock(a);
    }
    a->last_recv = a->last_send = cw_mono_ms();
    if (!a->dd_name || strcmp(a->dd_name, a->name) != 0) {
        /* Another user: another queue, so the watermark and the ack state
         * start again (I4). */
        free(a->dd_name);
        a->dd_name = strdup(a->name);   /* NULL: reset again at the next login */
        a->dd_seq = 0;
        held_clear(a);
        live_clear(a);
        a->ack_due = 0;
        a->epoch++;
        pthread_mutex_lock(&a->c->mu);
        a->c->epoch = a->epoch;
        a->c->ack_taken = a->c->ack_sent = a->c->ack_done = a->c->ack_pending = 0;
        a->c->ack_untold = 0;
        pthread_mutex_unlock(&a->c->mu);
    }
    return CW_OK;
}

static int64_t loss_ms(const actor_t *a)
{
    return (int64_t) a->hb_ms * a->liveness;
}

static void schedule_retry(actor_t *a, int backoff_ms)
{
    a->backoff_ms = backoff_ms;
    a->retry_at = cw_mono_ms() + backoff_ms;
    set_state(a, ST_LOST);
}

/* The connection of a live session is gone: fail what is in flight (park
 * durable sends), tell the application, and start reconnecting (or drop the
 * session). The state changes first, so that an application woken by the
 * failure or the event already sees it. */
static void lose(actor_t *a, const char *why)
{
    CW_DEBUG("client: connection lost: %s", why);
    a->lost_ep = cur_ep(a);
    close_sock(a);
    if (a->c->no_reconnect) {
        forget_session(a);
        set_state(a, ST_IDLE);
        inflight_fail_all(a, CW_ERR_DISCONNECTED, 0);
        post_conn_event(a, CW_EVENT_DISCONNECTED, why, NULL);
        open_sock(a);
        if (!a->sock)
            CW_ERROR("client: cannot open a socket; every request will fail");
        return;
    }
    if (a->c->n_endpoints > 1) {
        /* Failover: the next broker at once (see resume_failed). */
        a->ep_tries = 0;
        a->taken_until = 0;
        next_endpoint(a);
        schedule_retry(a, 0);
    } else {
        schedule_retry(a, BACKOFF_MIN_MS);
    }
    inflight_fail_all(a, CW_ERR_DISCONNECTED, 1);
    post_conn_event(a, CW_EVENT_DISCONNECTED, why, NULL);
}

/* After a successful login again: sends every parked durable send whose
 * caller still waits, unchanged, on the new socket. */
static void resend_parked(actor_t *a)
{
    int64_t now = cw_mono_ms();
    while (a->parked) {
        inflight_t *f = a->parked;
        a->parked = f->next;
        f->next = NULL;
        if (f->deadline <= now) {   /* its caller has given up */
            inflight_free(&f);
            continue;
        }
        cw_status_t st = send_bytes(a, f->frame, f->frame_len);
        if (st != CW_OK) {
            post_reply(a, f->rid, st, NULL);
            inflight_free(&f);
            continue;
        }
        CW_DEBUG("client: durable send %llu sent again", (unsigned long long) f->rid);
        f->attempt_deadline = now + attempt_ms(a);
        f->next = a->inflight;
        a->inflight = f;
    }
}

static void resume_failed(actor_t *a, const char *why, cw_status_t status);

static void start_resume(actor_t *a)
{
    if (open_sock(a) != 0) {
        resume_failed(a, "no socket", CW_ERR_IO);
        return;
    }
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Login login = CAUSEWAY__V1__LOGIN__INIT;
    login.name = a->name;
    login.resume_token.data = a->token;
    login.resume_token.len = a->token_len;
    login.agent = a->c->agent;
    login.quiet = a->c->quiet;
    login.pull = a->c->pull;
    env.body_case = CW_BODY(LOGIN);
    env.login = &login;
    a->resume_rid = send_internal(a, &env, 0, NULL);
    int64_t wait = loss_ms(a) > 1000 ? loss_ms(a) : 1000;
    a->resume_deadline = cw_mono_ms() + wait;
    set_state(a, ST_RESUMING);
    CW_DEBUG("client: logging in again as %s", a->name);
}

/* A login again failed (status: the broker's refusal, or CW_ERR_DISCONNECTED
 * without a reply). One endpoint: the backoff doubles. Several: NAME_TAKEN
 * is tried again on the same endpoint every CW_FAILOVER_RETRY_MS for at
 * most CW_FAILOVER_TAKEN_MS (the old broker's claim has not expired yet);
 * anything else moves to the next endpoint, at once during the first round
 * over the list, then after 100 ms doubling per round up to 5 s. */
static void resume_failed(actor_t *a, const char *why, cw_status_t status)
{
    int next;
    if (a->c->n_endpoints > 1) {
        int64_t now = cw_mono_ms();
        if (status == CW_NAME_TAKEN && !a->taken_until)
            a->taken_until = now + CW_FAILOVER_TAKEN_MS;
        if (status == CW_NAME_TAKEN && now < a->taken_until) {
            next = CW_FAILOVER_RETRY_MS;
        } else {
            a->ep_tries++;
            next_endpoint(a);
            unsigned rounds = a->ep_tries / (unsigned) a->c->n_endpoints;
            next = rounds == 0 ? 0 : BACKOFF_MIN_MS << (rounds > 6 ? 6 : rounds - 1);
            if (next > BACKOFF_MAX_MS)
                next = BACKOFF_MAX_MS;
        }
    } else {
        next = a->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : a->backoff_ms * 2;
    }
    CW_DEBUG("client: login again failed (%s); next try in %d ms at %s", why, next,
             my_ep(a));
    close_sock(a);
    schedule_retry(a, next);
}

static void on_resume_reply(actor_t *a, const cw_reply_msg_t *r)
{
    a->resume_rid = 0;
    if ((int) r->status != CW_OK) {
        resume_failed(a, cw_status_name((int) r->status), (cw_status_t) r->status);
        return;
    }
    if (take_session(a, a->name, r->login) != CW_OK) {
        resume_failed(a, "out of memory", CW_ERR_NOMEM);
        return;
    }
    set_state(a, ST_ONLINE);
    a->ep_tries = 0;
    a->taken_until = 0;
    if (a->c->n_endpoints > 1) {
        char detail[CW_ENDPOINT_LEN_MAX + 64];
        int resumed = r->detail && strcmp(r->detail, "session resumed") == 0;
        snprintf(detail, sizeof detail, "reconnected to %s (%s)", my_ep(a),
                 resumed ? "session resumed" : "new session");
        CW_DEBUG("client: %s", detail);
        post_conn_event(a, CW_EVENT_RECONNECTED, detail, r);
    } else {
        post_conn_event(a, CW_EVENT_RECONNECTED, "logged in again", r);
    }
    resend_parked(a);
    /* An Ack in flight at the loss may never have arrived: send again
     * whatever is not confirmed. */
    pthread_mutex_lock(&a->c->mu);
    a->c->ack_sent = a->c->ack_done;
    pthread_mutex_unlock(&a->c->mu);
    ack_flush(a);
}

/* --- de-duplication ------------------------------------------------------ */

static uint64_t live_hash(const char *from, const char *id)
{
    uint64_t h = UINT64_C(1469598103934665603);   /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *) from; *p; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    h = (h ^ 0xFF) * UINT64_C(1099511628211);     /* separator no name holds */
    for (const unsigned char *p = (const unsigned char *) id; *p; p++)
        h = (h ^ *p) * UINT64_C(1099511628211);
    return h ? h : 1;
}

static int live_seen(const actor_t *a, uint64_t h, const char *from, const char *id)
{
    for (size_t i = 0; i < CW_LIVE_DEDUP_WINDOW; i++) {
        const live_seen_t *e = &a->live[i];
        if (e->hash == h && strcmp(e->from, from) == 0 && strcmp(e->id, id) == 0)
            return 1;
    }
    return 0;
}

/* Remembers a live delivery, forgetting the oldest. Out of memory it is
 * not remembered (a duplicate of it would get through). */
static void live_remember(actor_t *a, uint64_t h, const char *from, const char *id)
{
    live_seen_t *e = &a->live[a->live_next];
    free(e->from);
    free(e->id);
    e->from = strdup(from);
    e->id = strdup(id);
    e->hash = e->from && e->id ? h : 0;
    if (!e->hash) {
        free(e->from);
        free(e->id);
        e->from = e->id = NULL;
    }
    a->live_next = (a->live_next + 1) % CW_LIVE_DEDUP_WINDOW;
}

/* Forgets every remembered live delivery. */
static void live_clear(actor_t *a)
{
    for (size_t i = 0; a->live && i < CW_LIVE_DEDUP_WINDOW; i++) {
        free(a->live[i].from);
        free(a->live[i].id);
        memset(&a->live[i], 0, sizeof a->live[i]);
    }
    a->live_next = 0;
}

static void live_free(actor_t *a)
{
    live_clear(a);
    free(a->live);
    a->live = NULL;
}

/* Leaves out of a Fetch reply the messages handed to the application
 * already (seq <= dd_seq), counting them in n_seen. Returns the highest
 * seq left. */
static uint64_t filter_fetch(actor_t *a, cw_reply_t *out)
{
    size_t k = 0;
    uint64_t top = 0;
    for (size_t i = 0; i < out->n_messages; i++) {
        cw_message_t *m = &out->messages[i];
        if (m->seq && m->seq <= a->dd_seq) {
            cw_conv_message_free(m);
            out->n_seen++;
            continue;
        }
        if (m->seq > top)
            top = m->seq;
        if (k != i) {
            out->messages[k] = *m;
            memset(m, 0, sizeof *m);
        }
        k++;
    }
    out->n_messages = k;
    return top;
}

/* Vector clock rule on receipt: merge the message's clock, tick our own. */
static void clock_receive(actor_t *a, cw_clock_entry_msg_t *const *clock, size_t n_clock)
{
    if (cw_clock_merge(a->clock, clock, n_clock) != CW_OK ||
        (a->name && cw_clock_tick(a->clock, a->name) != CW_OK))
        CW_ERROR("client: out of memory updating the vector clock");
}

/* Late marks (PROTOCOL.md §13.14, SCALEOUT.md §4): a delivery from `from`
 * whose clock entry of its sender is at or below our own entry of that
 * sender, before the merge, carries nothing of `from` we had not seen: a
 * message caused after it was shown first (a retried send landing after
 * its effects, e.g. across a broker failover), or it was seen by an
 * earlier process of ours. Duplicates are dropped before this is asked.
 * Our own messages and messages without the sender's entry are never late. */
static int is_late(const actor_t *a, const char *from, cw_clock_entry_msg_t *const *clock,
                   size_t n_clock)
{
    if (!*from || (a->name && strcmp(from, a->name) == 0))
        return 0;
    uint64_t sent = 0;
    for (size_t i = 0; i < n_clock; i++)
        if (clock[i]->node && strcmp(clock[i]->node, from) == 0)
            sent = clock[i]->counter;
    return sent > 0 && sent <= cw_clock_get(a->clock, from);
}

/* --- frames from the broker -------------------------------------------- */

/* The reply to one of our own Acks. */
static void on_ack_reply(actor_t *a, const inflight_t *f, cw_status_t status)
{
    if (f->epoch != a->epoch)
        return;
    cw_client_t *c = a->c;
    pthread_mutex_lock(&c->mu);
    if (status == CW_OK) {
        if (f->seq > c->ack_done)
            c->ack_done = f->seq;
    } else if (status != CW_BAD_REQUEST && status != CW_NOT_DURABLE &&
               status != CW_UNKNOWN_TYPE) {
        /* Transient (store trouble, session lost): send it again later. */
        if (c->ack_sent > c->ack_done)
            c->ack_sent = c->ack_done;
    }
    pthread_mutex_unlock(&c->mu);
    if (status == CW_OK)
        return;
    CW_DEBUG("client: ack up to seq %llu refused: %s", (unsigned long long) f->seq,
             cw_status_name(status));
    if (status == CW_NOT_LOGGED_IN && a->state == ST_ONLINE)
        lose(a, "the broker no longer knows our session");
    else if (status != CW_BAD_REQUEST && status != CW_NOT_DURABLE && status != CW_UNKNOWN_TYPE &&
             !a->ack_due)
        a->ack_due = cw_mono_ms() + CW_AUTO_ACK_DELAY_MS;
}

/* A Fetch reply with messages: drop those handed over already, count the
 * rest as handed over once the application has the reply. */
static void on_fetch_reply(actor_t *a, const cw_reply_msg_t *r, uint64_t rid, cw_reply_t *out)
{
    uint64_t top = filter_fetch(a, out);
    uint64_t before = a->dd_seq;
    for (size_t i = 0; i < r->n_messages; i++) {
        const cw_deliver_msg_t *m = r->messages[i];
        if (m->seq > before && !m->receipt) {   /* a receipt is no message: no tick */
            int late = is_late(a, m->from ? m->from : "", m->clock, m->n_clock);
            for (size_t k = 0; late && k < out->n_messages; k++)
                if (out->messages[k].seq == m->seq)
                    out->messages[k].late = 1;
            clock_receive(a, m->clock, m->n_clock);
            cw_tracer_deliver(a->tracer, a->name, a->clock, 0, late, m->from, m->message_id,
                              m->clock, m->n_clock);
        }
    }
    publish_clock(a);
    if (post_reply(a, rid, CW_OK, out) && top > a->dd_seq) {
        a->dd_seq = top;
        release_held(a, 0);
    }
}

static void on_reply(actor_t *a, const cw_env_t *env)
{
    const cw_reply_msg_t *r = env->reply;
    uint64_t rid = env->request_id;
    if (a->state == ST_RESUMING && rid == a->resume_rid && rid) {
        on_resume_reply(a, r);
        return;
    }
    inflight_t *f = inflight_take(a, rid);
    if (!f) {
        CW_DEBUG("client: reply to unknown request %llu (%s)", (unsigned long long) rid,
                 cw_status_name((int) r->status));
        return;
    }
    cw_status_t status = (cw_status_t) r->status;
    if (rid & INTERNAL_RID) {   /* our own logout or ack */
        if (f->body == CW_BODY(ACK))
            on_ack_reply(a, f, status);
        inflight_free(&f);
        return;
    }
    /* A durable send the broker did not handle (it lost our session, or it
     * is stopping): reconnect and send it again. */
    if (f->frame && (status == CW_NOT_LOGGED_IN || status == CW_SHUTTING_DOWN) &&
        a->state == ST_ONLINE && f->deadline > cw_mono_ms()) {
        f->next = a->inflight;
        a->inflight = f;
        lose(a, status == CW_NOT_LOGGED_IN ? "the broker no longer knows our session"
                                           : "the broker is shutting down");
        return;
    }
    cw_reply_t *out = cw_conv_reply(r);
    if (out && f->clock) {
        out->clock = f->clock;
        out->n_clock = f->n_clock;
        f->clock = NULL;
    }
    if (f->body == CW_BODY(FETCH) && status == CW_OK && out) {
        on_fetch_reply(a, r, rid, out);
    } else if (f->body == CW_BODY(LOGIN) && status == CW_OK) {
        if (!out || take_session(a, f->login_name, r->login) != CW_OK) {
            cw_reply_destroy(&out);
            post_reply(a, rid, CW_ERR_NOMEM, NULL);
            send_logout(a);
        } else {
            set_state(a, ST_ONLINE);
            /* A login whose caller gave up waiting is undone at once. */
            if (!post_reply(a, rid, status, out)) {
                send_logout(a);
                forget_session(a);
                set_state(a, ST_IDLE);
            }
        }
    } else if (f->body == CW_BODY(LOGOUT) &&
               (status == CW_OK || status == CW_NOT_LOGGED_IN)) {
        forget_session(a);
        set_state(a, ST_IDLE);
        post_reply(a, rid, out ? status : CW_ERR_NOMEM, out);
    } else {
        post_reply(a, rid, out ? status : CW_ERR_NOMEM, out);
        /* The broker forgot our session (restarted, or took it over): get
         * it back as after a lost connection. */
        if (status == CW_NOT_LOGGED_IN && a->state == ST_ONLINE && f->body != CW_BODY(LOGIN))
            lose(a, "the broker no longer knows our session");
    }
    inflight_free(&f);
}

/* Shows one delivery to the application: merge and tick the clock, record
 * the event, queue it. held_us: how long it was held back (0: not). */
static void show_deliver(actor_t *a, const cw_deliver_msg_t *d, uint64_t held_us, int gap)
{
    const char *from = d->from ? d->from : "";
    const char *mid = d->message_id ? d->message_id : "";
    int late = is_late(a, from, d->clock, d->n_clock);
    if (late)
        CW_DEBUG("client: late delivery from %s ('%s', seq %llu)", from, mid,
                 (unsigned long long) d->seq);
    clock_receive(a, d->clock, d->n_clock);
    publish_clock(a);
    cw_tracer_deliver(a->tracer, a->name, a->clock, held_us, late, from, mid, d->clock,
                      d->n_clock);
    if (d->seq && d->seq > a->dd_seq)
        a->dd_seq = d->seq;
    else if (!d->seq && *mid)
        live_remember(a, live_hash(from, mid), from, mid);
    cw_event_t *ev = calloc(1, sizeof *ev);
    if (!ev || cw_conv_message(&ev->msg, d) != CW_OK) {
        free(ev);
        CW_ERROR("client: out of memory, delivery dropped");
        return;
    }
    ev->type = CW_EVENT_DELIVER;
    ev->msg.holdback_us = held_us;
    ev->msg.gap = gap;
    ev->msg.late = late;
    cw_clock_entry_msg_t **e;
    size_t n = cw_clock_entries(a->clock, &e);
    cw_conv_clock(&ev->local_clock, &ev->n_local_clock, e, n);
    post_event(a, ev);
}

/* The queue seq of a held envelope: a Deliver's (0 for a live one) or a
 * Receipt's (always stored). */
static uint64_t env_seq(const cw_env_t *env)
{
    return env->body_case == CW_BODY(RECEIPT) ? env->receipt->seq : env->deliver->seq;
}

/* Shows a read receipt (PROTOCOL.md 13.12): no clock change (a receipt is
 * no message between processes), de-duplicated and acknowledged by seq
 * like a stored delivery. */
static void show_receipt(actor_t *a, const Causeway__V1__Receipt *r)
{
    if (r->seq > a->dd_seq)
        a->dd_seq = r->seq;
    cw_event_t *ev = calloc(1, sizeof *ev);
    if (!ev || !(ev->receipt.message_id = cw_conv_strdup(r->message_id)) ||
        !(ev->receipt.reader = cw_conv_strdup(r->reader))) {
        if (ev)
            free(ev->receipt.message_id);
        free(ev);
        CW_ERROR("client: out of memory, receipt dropped");
        return;
    }
    ev->type = CW_EVENT_RECEIPT;
    ev->receipt.read_us = r->read_us;
    ev->receipt.seq = r->seq;
    ev->receipt.message_seq = r->message_seq;
    post_event(a, ev);
}

/* Has this delivery been shown already (or is it waiting in `held`)?
 * Duplicates go before they touch the clock: receiving one again is not a
 * new event. */
static int is_duplicate(actor_t *a, const cw_deliver_msg_t *d)
{
    const char *from = d->from ? d->from : "";
    const char *mid = d->message_id ? d->message_id : "";
    if (d->seq) {
        if (d->seq <= a->dd_seq) {
            CW_DEBUG("client: dropping seq %llu from %s: handed over already",
                     (unsigned long long) d->seq, from);
            return 1;
        }
        for (const held_t *h = a->held; h; h = h->next)
            if (env_seq(h->env) == d->seq) {
                CW_DEBUG("client: dropping seq %llu from %s: held already",
                         (unsigned long long) d->seq, from);
                return 1;
            }
        return 0;
    }
    if (!*mid)
        return 0;
    if (live_seen(a, live_hash(from, mid), from, mid)) {
        CW_DEBUG("client: dropping live message '%s' from %s: seen already", mid, from);
        return 1;
    }
    for (const held_t *h = a->held; h; h = h->next) {
        if (h->env->body_case != CW_BODY(DELIVER))
            continue;
        const cw_deliver_msg_t *o = h->env->deliver;
        if (!o->seq && o->message_id && strcmp(o->message_id, mid) == 0 && o->from &&
            strcmp(o->from, from) == 0)
            return 1;
    }
    return 0;
}

/* Unlinks *link from the hold-back queue and returns its envelope. */
static cw_env_t *held_unlink(actor_t *a, held_t **link)
{
    held_t *h = *link;
    cw_env_t *env = h->env;
    *link = h->next;
    if (a->held_tail == &h->next)
        a->held_tail = link;
    free(h);
    a->n_held--;
    return env;
}

static void held_clear(actor_t *a)
{
    while (a->held) {
        cw_env_t *env = held_unlink(a, &a->held);
        cw_env_free(&env);
    }
    a->held_tail = &a->held;
}

/* Shows what in the hold-back queue may now be shown, oldest first, and
 * drops stored messages that came again in the meantime; with force_before
 * > 0 also live deliveries that arrived before that time (their hold-back
 * ran out). Each showing can free others, so it looks again until nothing
 * moves. */
static void release_held(actor_t *a, int64_t force_before)
{
    int moved = 1;
    while (moved) {
        moved = 0;
        for (held_t **link = &a->held; *link; link = &(*link)->next) {
            held_t *h = *link;
            int is_receipt = h->env->body_case == CW_BODY(RECEIPT);
            const cw_deliver_msg_t *d = is_receipt ? NULL : h->env->deliver;
            uint64_t seq = env_seq(h->env);
            int stale = seq && seq <= a->dd_seq;
            int ready = h->env->after_seq <= a->dd_seq;
            int timed_out = !ready && !seq && force_before > 0 && h->since_ms <= force_before;
            if (!stale && !ready && !timed_out)
                continue;
            uint64_t held_us = cw_now_us() - h->since_us;
            cw_env_t *env = held_unlink(a, link);
            if (stale) {
                CW_DEBUG("client: held seq %llu shown meanwhile, dropped",
                         (unsigned long long) seq);
            } else if (is_receipt) {
                show_receipt(a, env->receipt);
            } else {
                if (timed_out)
                    CW_DEBUG("client: live message from %s shown without stored messages up "
                             "to seq %llu (held %llu us)", d->from,
                             (unsigned long long) env->after_seq, (unsigned long long) held_us);
                show_deliver(a, d, held_us ? held_us : 1, timed_out);
            }
            cw_env_free(&env);
            moved = 1;
            break;
        }
    }
}

/* Takes env (a Deliver or a Receipt) into the hold-back queue; returns 1
 * if it did. */
static int hold(actor_t *a, cw_env_t *env)
{
    uint64_t seq = env_seq(env);
    if (a->n_held >= CW_HOLDBACK_MAX) {
        if (seq) {
            /* Not acknowledged, so the broker pushes it again. */
            CW_DEBUG("client: hold-back queue full, seq %llu dropped for now",
                     (unsigned long long) seq);
            return 0;
        }
        /* The live ones held go first: shown now, with a gap. */
        release_held(a, cw_mono_ms());
    }
    held_t *h = calloc(1, sizeof *h);
    if (!h)
        return 0;
    h->env = env;
    h->since_ms = cw_mono_ms();
    h->since_us = cw_now_us();
    *a->held_tail = h;
    a->held_tail = &h->next;
    a->n_held++;
    CW_DEBUG("client: holding %s until seq %llu is shown (have %llu)",
             env->body_case == CW_BODY(RECEIPT) ? "a receipt"
             : seq                              ? "a stored message"
                                                : "a live message",
             (unsigned long long) env->after_seq, (unsigned long long) a->dd_seq);
    return 1;
}

/* A Deliver frame. Returns 1 if it took env (held back). */
static int on_deliver(actor_t *a, cw_env_t *env)
{
    const cw_deliver_msg_t *d = env->deliver;
    if (is_duplicate(a, d))
        return 0;
    if (env->after_seq > a->dd_seq && !a->c->pull)
        return hold(a, env);
    show_deliver(a, d, 0, 0);
    if (a->held)
        release_held(a, 0);
    return 0;
}

/* A Receipt frame (PROTOCOL.md 13.12). Returns 1 if it took env. */
static int on_receipt(actor_t *a, cw_env_t *env)
{
    const Causeway__V1__Receipt *r = env->receipt;
    if (!r->seq || r->seq <= a->dd_seq) {
        CW_DEBUG("client: dropping receipt seq %llu: handed over already",
                 (unsigned long long) r->seq);
        return 0;
    }
    for (const held_t *h = a->held; h; h = h->next)
        if (env_seq(h->env) == r->seq)
            return 0;
    if (env->after_seq > a->dd_seq && !a->c->pull)
        return hold(a, env);
    show_receipt(a, r);
    if (a->held)
        release_held(a, 0);
    return 0;
}

/* Live deliveries whose hold-back ran out are shown. */
static void expire_held(actor_t *a, int64_t now)
{
    if (a->held)
        release_held(a, now - a->c->holdback_ms);
}

/* When the oldest held live delivery runs out (monotonic ms), or -1. */
static int64_t held_due(const actor_t *a)
{
    for (const held_t *h = a->held; h; h = h->next)
        if (!env_seq(h->env))
            return h->since_ms + a->c->holdback_ms;
    return -1;
}

static void on_presence(actor_t *a, const cw_presence_msg_t *p)
{
    cw_event_t *ev = calloc(1, sizeof *ev);
    if (!ev || !(ev->presence.name = cw_conv_strdup(p->name))) {
        free(ev);
        CW_ERROR("client: out of memory, presence event dropped");
        return;
    }
    ev->type = CW_EVENT_PRESENCE;
    ev->presence.online = p->online;
    ev->presence.reason = (cw_presence_reason_t) p->reason;
    ev->presence.timestamp_us = p->timestamp_us;
    post_event(a, ev);
}

static void on_frame(actor_t *a, const void *data, size_t len)
{
    cw_env_t *env;
    uint64_t rid;
    const char *detail;
    int st = cw_env_decode(data, len, SIZE_MAX, &env, &rid, &detail);
    if (st != CW_OK) {
        CW_DEBUG("client: undecodable frame from broker (%s): %s", cw_status_name(st), detail);
        return;
    }
    switch (env->body_case) {
    case CW_BODY(REPLY):
        on_reply(a, env);
        break;
    case CW_BODY(DELIVER):
        if (on_deliver(a, env))
            env = NULL;   /* held back */
        break;
    case CW_BODY(RECEIPT):
        if (on_receipt(a, env))
            env = NULL;   /* held back */
        break;
    case CW_BODY(PRESENCE):
        on_presence(a, env->presence);
        break;
    case CW_BODY(HEARTBEAT):
        break;
    default:
        CW_DEBUG("client: ignoring %s from broker", cw_env_body_name(env));
        break;
    }
    cw_env_free(&env);
}

/* Reads what the broker sent, at most READ_BURST frames. */
static void read_sock(actor_t *a)
{
    for (int i = 0; i < READ_BURST && a->sock; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, a->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        a->last_recv = cw_mono_ms();
        if (zmq_msg_more(&msg)) {
            /* Not the protocol: skip the whole multi-frame message. */
            CW_DEBUG("client: ignoring multi-frame message from broker");
            do {
                zmq_msg_close(&msg);
                zmq_msg_init(&msg);
            } while (zmq_msg_recv(&msg, a->sock, ZMQ_DONTWAIT) >= 0 && zmq_msg_more(&msg));
            zmq_msg_close(&msg);
            continue;
        }
        on_frame(a, zmq_msg_data(&msg), zmq_msg_size(&msg));
        zmq_msg_close(&msg);
    }
}

/* True if the socket holds a frame we have not read. */
static int sock_readable(actor_t *a)
{
    int events = 0;
    size_t len = sizeof events;
    return a->sock && zmq_getsockopt(a->sock, ZMQ_EVENTS, &events, &len) == 0 &&
           (events & ZMQ_POLLIN);
}

/* --- commands from the application ------------------------------------- */

static void on_request(actor_t *a, uint64_t rid, int64_t deadline, const uint8_t *data, size_t len)
{
    cw_env_t *env = cw_env_unpack(data, len);
    if (!env) {
        post_reply(a, rid, CW_ERR_NOMEM, NULL);
        return;
    }
    int lost = a->state == ST_LOST || a->state == ST_RESUMING;
    int is_send = env->body_case == CW_BODY(SEND);
    /* A durable send of a session is kept packed, to go out again after a
     * reconnection; made while the connection is lost, it waits for one. */
    int keep = is_send && env->send->durable && a->name && !a->c->no_reconnect;
    if (lost && !keep) {
        if (env->body_case == CW_BODY(LOGOUT)) {
            CW_DEBUG("client: logout while disconnected: session abandoned");
            forget_session(a);
            set_state(a, ST_IDLE);
            open_sock(a);
        }
        post_reply(a, rid, CW_ERR_DISCONNECTED, NULL);
        cw_env_free(&env);
        return;
    }

    inflight_t *f = calloc(1, sizeof *f);
    if (!f || (env->body_case == CW_BODY(LOGIN) && !(f->login_name = strdup(env->login->name)))) {
        free(f);
        post_reply(a, rid, CW_ERR_NOMEM, NULL);
        cw_env_free(&env);
        return;
    }
    f->rid = rid;
    f->body = env->body_case;
    f->deadline = deadline;
    /* A session's sends follow the clock rule and the frame limit (ONLINE,
     * or a kept durable send while the connection is lost). */
    int session = is_send && (a->state == ST_ONLINE || lost);

    /* A frame over the broker's limit would be refused, or dropped with
     * the connection by libzmq; refuse it here instead. Measured with the
     * clock it will carry: today's, plus room for our entry's tick. */
    size_t size = 0;
    if (session && a->max_frame) {
        env->n_clock = cw_clock_entries(a->clock, &env->clock);
        size = causeway__v1__envelope__get_packed_size(env) + strlen(a->name) + 24;
        env->clock = NULL;
        env->n_clock = 0;
    }
    if (size > a->max_frame) {
        inflight_free(&f);
        post_reply(a, rid, CW_TOO_LARGE, NULL);
        cw_env_free(&env);
        return;
    }

    /* Vector clock rule: before a send, tick our own entry, stamp it. */
    if (session) {
        if (cw_clock_tick(a->clock, a->name) != CW_OK) {
            inflight_free(&f);
            post_reply(a, rid, CW_ERR_NOMEM, NULL);
            cw_env_free(&env);
            return;
        }
        publish_clock(a);
        /* The envelope borrows the clock's entries for packing. */
        env->n_clock = cw_clock_entries(a->clock, &env->clock);
        cw_conv_clock(&f->clock, &f->n_clock, env->clock, env->n_clock);
    }

    cw_status_t st;
    if (keep && session) {
        st = (cw_status_t) cw_env_pack(env, &f->frame, &f->frame_len);
        if (st == CW_OK && lost) {
            /* Waits in `parked` for the next successful login. */
            inflight_t **tail = &a->parked;
            while (*tail)
                tail = &(*tail)->next;
            *tail = f;
            f = NULL;
        } else if (st == CW_OK) {
            st = send_bytes(a, f->frame, f->frame_len);
            f->attempt_deadline = cw_mono_ms() + attempt_ms(a);
        }
    } else {
        st = send_env(a, env);
    }
    if (session) {
        env->clock = NULL;
        env->n_clock = 0;
        /* The tick is an event: the send, if the message went out or will
         * go out again (parked, or a durable send whose socket is full);
         * else a local event. */
        if (st == CW_OK || !f || (st == CW_ERR_DISCONNECTED && f->frame)) {
            cw_tracer_send(a->tracer, a->name, a->clock, env->send);
        } else {
            char what[96];
            snprintf(what, sizeof what, "send failed: %s", cw_status_name(st));
            cw_tracer_local(a->tracer, a->name, a->clock, what);
        }
    }
    cw_env_free(&env);
    if (!f)
        return;
    if (st == CW_ERR_DISCONNECTED && f->frame) {
        /* The socket takes no more frames: the broker is not reading. The
         * send waits for a fresh connection like one whose reply is lost. */
        f->next = a->inflight;
        a->inflight = f;
        lose(a, "the broker does not take our frames");
        return;
    }
    if (st != CW_OK) {
        inflight_free(&f);
        post_reply(a, rid, st, NULL);
        return;
    }
    inflight_prune(a, cw_mono_ms());
    f->next = a->inflight;
    a->inflight = f;
}

static void read_pipe(actor_t *a)
{
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, a->pipe, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        size_t len = zmq_msg_size(&msg);
        const uint8_t *data = zmq_msg_data(&msg);
        cmd_hdr_t hdr;
        if (len < sizeof hdr)
            abort();   /* only client.c writes to this pipe */
        memcpy(&hdr, data, sizeof hdr);
        if (hdr.type == CMD_TERM) {
            a->terminated = 1;
            zmq_msg_close(&msg);
            return;
        }
        if (hdr.type == CMD_NEXT_EP) {
            zmq_msg_close(&msg);
            if (!a->name && a->c->n_endpoints > 1) {
                inflight_fail_all(a, CW_ERR_UNREACHABLE, 0);
                next_endpoint(a);
                if (open_sock(a) != 0)
                    CW_ERROR("client: cannot open a socket; every request will fail");
                CW_DEBUG("client: trying %s", my_ep(a));
            }
            continue;
        }
        if (hdr.type == CMD_FLUSH) {
            zmq_msg_close(&msg);
            cw_tracer_flush(a->tracer);
            continue;
        }
        if (hdr.type == CMD_ACK) {
            zmq_msg_close(&msg);
            if (hdr.rid)
                ack_flush(a);
            else if (!a->ack_due)
                a->ack_due = cw_mono_ms() + CW_AUTO_ACK_DELAY_MS;
            continue;
        }
        on_request(a, hdr.rid, hdr.deadline, data + sizeof hdr, len - sizeof hdr);
        zmq_msg_close(&msg);
    }
}

/* --- timers and the loop ------------------------------------------------ */

/* The durable send in flight whose reply counts as lost first (its caller
 * still waiting), or NULL. */
static const inflight_t *first_attempt_due(const actor_t *a, int64_t now)
{
    const inflight_t *first = NULL;
    for (const inflight_t *f = a->inflight; f; f = f->next)
        if (f->frame && f->deadline > now &&
            (!first || f->attempt_deadline < first->attempt_deadline))
            first = f;
    return first;
}

/* Milliseconds until the next timer is due; -1 for none. */
static long next_timeout(const actor_t *a, int64_t now)
{
    int64_t due;
    switch (a->state) {
    case ST_ONLINE: {
        int64_t hb = a->last_send + a->hb_ms;
        int64_t dead = a->last_recv + loss_ms(a);
        due = hb < dead ? hb : dead;
        if (a->ack_due && a->ack_due < due)
            due = a->ack_due;
        const inflight_t *f = first_attempt_due(a, now);
        if (f && f->attempt_deadline < due)
            due = f->attempt_deadline;
        break;
    }
    case ST_LOST:
        due = a->retry_at;
        break;
    case ST_RESUMING:
        due = a->resume_deadline;
        break;
    default:
        due = -1;
        break;
    }
    if (a->peer_gone && (a->state == ST_ONLINE || a->state == ST_RESUMING))
        return 0;
    int64_t held = held_due(a);
    if (held >= 0 && (due < 0 || held < due))
        due = held;
    if (due < 0)
        return -1;
    return due <= now ? 0 : (long) (due - now);
}

static void run_timers(actor_t *a)
{
    int64_t now = cw_mono_ms();
    expire_held(a, now);   /* in every state: a lost broker holds nothing longer */
    switch (a->state) {
    case ST_ONLINE:
        if (a->peer_gone) {
            /* Frames it sent before closing count first. */
            if (sock_readable(a))
                read_sock(a);
            if (a->state != ST_ONLINE)
                break;
            char why[CW_ENDPOINT_LEN_MAX + 64];
            snprintf(why, sizeof why, "the connection to %s was closed",
                     my_ep(a));
            lose(a, why);
            break;
        }
        if (now - a->last_recv >= loss_ms(a) && sock_readable(a)) {
            /* We were not scheduled for a while (stopped, suspended) and
             * frames wait: they count before the broker is declared lost. */
            read_sock(a);
            if (a->state != ST_ONLINE)
                break;
        }
        if (now - a->last_recv >= loss_ms(a)) {
            char why[96];
            snprintf(why, sizeof why, "no frame from the broker for %lld ms",
                     (long long) (now - a->last_recv));
            lose(a, why);
            break;
        }
        const inflight_t *f = first_attempt_due(a, now);
        if (f && f->attempt_deadline <= now) {
            char why[96];
            snprintf(why, sizeof why, "no reply to a durable send for %lld ms",
                     (long long) attempt_ms(a));
            lose(a, why);
            break;
        }
        if (a->ack_due && now >= a->ack_due)
            ack_flush(a);
        if (now - a->last_send >= a->hb_ms)
            send_heartbeat(a);
        break;
    case ST_LOST:
        if (now >= a->retry_at)
            start_resume(a);
        break;
    case ST_RESUMING:
        if (a->peer_gone)
            resume_failed(a, "the connection was refused or closed", CW_ERR_UNREACHABLE);
        else if (now >= a->resume_deadline)
            resume_failed(a, "no reply", CW_ERR_TIMEOUT);
        break;
    default:
        break;
    }
}

void *cw_client_actor_main(void *arg)
{
    actor_t a;
    memset(&a, 0, sizeof a);
    a.c = arg;
    a.pipe = a.c->actor_pipe;
    a.sock = a.c->first_sock;
    a.mon = a.c->first_mon;
    a.state = ST_IDLE;
    a.hb_ms = DEFAULT_HEARTBEAT_MS;
    a.liveness = DEFAULT_LIVENESS;
    a.held_tail = &a.held;
    a.clock = cw_clock_new();
    a.live = calloc(CW_LIVE_DEDUP_WINDOW, sizeof *a.live);
    if (!a.clock || !a.live)
        abort();   /* a few kilobytes at start-up; nothing sensible to do */

    a.tracer = cw_tracer_new(a.c);

    while (!a.terminated) {
        zmq_pollitem_t items[4] = {{.socket = a.pipe, .events = ZMQ_POLLIN}};
        int n_items = 1, sock_item = -1, mon_item = -1;
        if (a.mon) {
            items[n_items] = (zmq_pollitem_t){.socket = a.mon, .events = ZMQ_POLLIN};
            mon_item = n_items++;
        }
        if (a.sock) {
            items[n_items] = (zmq_pollitem_t){.socket = a.sock, .events = ZMQ_POLLIN};
            sock_item = n_items++;
        }
        short tev;
        void *tsock = cw_tracer_poll_item(a.tracer, &tev);
        if (tsock && tev)
            items[n_items++] = (zmq_pollitem_t){.socket = tsock, .events = tev};
        unsigned gen = a.sock_gen;
        int64_t now = cw_mono_ms();
        long timeout = next_timeout(&a, now);
        long ttimeout = cw_tracer_timeout(a.tracer, now);
        if (ttimeout >= 0 && (timeout < 0 || ttimeout < timeout))
            timeout = ttimeout;
        int rc = zmq_poll(items, n_items, timeout);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            CW_ERROR("client: poll: %s", zmq_strerror(errno));
            break;
        }
        if (items[0].revents & ZMQ_POLLIN)
            read_pipe(&a);
        if (a.terminated)
            break;
        if (mon_item > 0 && a.mon && gen == a.sock_gen && (items[mon_item].revents & ZMQ_POLLIN))
            on_monitor(&a);
        if (sock_item > 0 && a.sock && gen == a.sock_gen && (items[sock_item].revents & ZMQ_POLLIN))
            read_sock(&a);
        run_timers(&a);
        cw_tracer_step(a.tracer, cw_mono_ms());
    }

    /* Leaving: a polite logout gets LOGOUT_LINGER_MS to leave (the context
     * termination in cw_client_destroy waits that long at most). */
    if (a.state == ST_ONLINE && a.sock) {
        int linger = LOGOUT_LINGER_MS;
        zmq_setsockopt(a.sock, ZMQ_LINGER, &linger, sizeof linger);
        ack_flush(&a);   /* auto_ack: what was taken, best effort */
        send_logout(&a);
    }
    /* What the daemon has not confirmed gets the linger time (sent at
     * once, no batching delay), and is counted as dropped after it. */
    if (a.c->clockd_linger_ms > 0)
        cw_tracer_drain(a.tracer, cw_mono_ms() + a.c->clockd_linger_ms);
    cw_tracer_destroy(&a.tracer);
    inflight_fail_all(&a, CW_ERR_DISCONNECTED, 0);
    close_sock(&a);
    zmq_close(a.pipe);
    forget_session(&a);
    cw_clock_destroy(&a.clock);
    live_free(&a);
    held_clear(&a);
    free(a.dd_name);
    return NULL;
}
