/*  broker_internal: the router's state and helpers shared by broker.c
 *  (sessions, live routing) and durable.c (queues through the store actor).
 *  Router thread only. Not part of any public interface.
 */
#ifndef CW_BROKER_INTERNAL_H
#define CW_BROKER_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <zmq.h>

#include "broker.h"
#include "cw_envelope.h"
#include "cw_sec.h"
#include "monitor.h"
#include "outq.h"
#include "sessions.h"

#define BATCH 1024            /* messages handled between timer checks */
#define MESSAGE_ID_MAX 128    /* longest Send.message_id, bytes */
#define AGENT_MAX 128         /* longest Login.agent, bytes */
#define USER_LOG_LINE_MAX 40  /* names shown in the user-log log line */

typedef struct {
    uint64_t frames_in;        /* frames received (payload frames) */
    uint64_t frames_out;       /* frames sent successfully */
    uint64_t messages_routed;  /* Send requests routed */
    uint64_t deliveries;       /* Deliver pushes sent */
    uint64_t bad_frames;       /* frames refused by PROTOCOL.md §5 steps 1-7 */
    uint64_t refused;          /* other error replies: requests refused by their handling */
    uint64_t expired;          /* sessions expired for silence or disconnection */
} counters_t;

typedef struct cw_durable cw_durable_t;

struct cw_broker {
    cw_broker_config_t cfg;   /* copy of the configuration */
    void *ctx;                /* libzmq context, owned */
    void *router;             /* ROUTER socket, owned */
    char endpoint[256];       /* bound endpoint, wildcard port resolved */
    cw_sessions_t *sessions;  /* sessions and user log, owned */
    cw_durable_t *durable;    /* store actor and pending store requests; NULL: live-only */
    cw_outq_t *outq;          /* unread bulky replies per connection, owned */
    size_t n_dead;            /* sessions marked dead and not yet reaped */
    uint64_t mark;            /* generation counter for cw_user_t.mark */
    uint64_t serial;          /* last session serial handed out */
    int64_t started_ms;       /* monotonic start time */
    int64_t now_ms;           /* monotonic time of the current message or tick */
    uint64_t now_us;          /* wall-clock time of the current message or tick */
    counters_t stats;         /* monotonic counters */
    cw_mon_counters_t mc;     /* monitoring counters (monitor.h), router thread only */
    cw_mon_ring_t *ring;      /* recently forwarded messages, owned */
    int64_t ring_until_ms;    /* monotonic: forwarded messages are recorded in the ring
                                 until then (CW_MON_WATCH_MS after the last Recent) */
    cw_monitor_t *monitor;    /* snapshots for other threads (metrics), owned */
    int64_t next_publish_ms;  /* monotonic time of the next snapshot publication */
    bool monitor_wanted;      /* cw_broker_monitor was called: publish snapshots */
    uint64_t started_us;      /* wall-clock start time */
    const zmq_msg_t *frame;   /* the frame being handled (recv_one); NULL in-process */
    cw_zap_t *zap;            /* CURVE: ZAP handler and registered keys; NULL: plain */
    void *mon;                /* CURVE: PAIR reading the router's socket monitor
                                 (failed handshakes, closed connections); NULL if none */
    const char *peer_key;     /* CURVE: Z85 key (ZAP User-Id) of the message being
                                 handled; NULL outside recv_one and in plain mode */
    int peer_fd;              /* CURVE: its connection's descriptor; -1 if unknown */
    volatile sig_atomic_t *reload; /* set by a reload signal (main.c): re-read the users directory */
};

/* broker.c */
int cwb_push(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg);
void cwb_send_to_id(cw_broker_t *b, const void *id, size_t id_len, const cw_env_t *env);
void cwb_reply_status(cw_broker_t *b, const void *id, size_t id_len, uint64_t request_id,
                      int status, const char *detail);
long cwb_resolve(cw_broker_t *b, const Causeway__V1__Send *send, const cw_user_t *sender,
                 Causeway__V1__RecipientStatus *rcpts, cw_user_t **users);
/* True while stored messages for s are pending: entries of its queue not
 * yet pushed, or appends naming its user not yet committed. Never for pull
 * sessions or without a store. */
bool cwd_pending(const cw_broker_t *b, const cw_session_t *s);
/* Live Delivers to s wait while cwd_pending (or while older ones wait), so
 * that nothing overtakes a stored message that may causally precede it. */
bool cwb_must_hold(const cw_broker_t *b, const cw_session_t *s);
/* Live Delivers held back for s now. */
size_t cwb_held_count(const cw_session_t *s);
/* Pushes the held live Delivers of s once nothing stored is pending. */
void cwb_flush_held(cw_broker_t *b, cw_session_t *s);
/* resume_clock.c (PROTOCOL.md 11.4): a frame of u's session carried this
 * (validated) clock: keep it as u's resume clock if its own entry is the
 * highest yet, and have the store write it (a durable Send: at once). */
void cwb_note_clock(cw_broker_t *b, cw_user_t *u, Causeway__V1__ClockEntry *const *clock,
                    size_t n, bool durable_send);
/* u's resume clock for LoginInfo.clock, or NULL if none is known (or it
 * cannot be decoded); free with causeway__v1__deliver__free_unpacked. */
Causeway__V1__Deliver *cwb_resume_clock(const cw_user_t *u);
/* Before stored entry `seq` is pushed to s: pushes the held live messages
 * that must precede it (their barrier is below seq). */
void cwb_flush_held_before(cw_broker_t *b, cw_session_t *s, uint64_t seq);
/* The append with this token is answered: held live messages that waited
 * for it follow stored entry `seq` of s's queue (the seq it got, or the
 * queue's last seq if it was not stored for s). */
void cwb_held_resolve(cw_session_t *s, uint64_t token, uint64_t seq);
/* The user log from the first name sorting after `after` (NULL or "":
 * from the start), at most cfg.page_users entries; *truncated tells
 * whether more follow. Caller frees *infos and *ptrs. The count, or -1 if
 * out of memory. */
long cwb_user_log(cw_broker_t *b, const char *after, Causeway__V1__UserInfo **infos,
                  Causeway__V1__UserInfo ***ptrs, bool *truncated);

/* observe.c — monitoring (PROTOCOL.md §12.1-12.2, docs/OPERATIONS.md
 * "Monitoring"). Router thread. */

/* Fills a snapshot with the broker's figures now. Can't fail. */
void cwo_snapshot(cw_broker_t *b, cw_mon_snap_t *snap);
/* Publishes a snapshot to b->monitor if one is due (every
 * CW_MON_PUBLISH_MS). */
void cwo_maybe_publish(cw_broker_t *b);
/* Stats, Sessions, Queues and Recent requests. */
void cwo_stats(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
               const cw_env_t *env);
void cwo_sessions(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                  const cw_env_t *env);
void cwo_queues(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                const cw_env_t *env);
void cwo_recent(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                const cw_env_t *env);
/* Notes a new session's peer address and login time. */
void cwo_session_opened(cw_broker_t *b, cw_session_t *s);

/* durable.c — all no-ops / NOT_DURABLE when b->durable is NULL. */

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
void cwd_save_clock(cw_broker_t *b, cw_user_t *u, bool now);
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
/* Counters for Stats (0 when live-only). */
void cwd_stats(cw_broker_t *b, uint64_t *stored, uint64_t *fsyncs, uint64_t *damaged);
/* The store thread's counters and the store requests not yet answered;
 * false (nothing filled) when live-only. */
bool cwd_monitor(cw_broker_t *b, cw_store_actor_stats_t *st, uint32_t *pending);

#endif
