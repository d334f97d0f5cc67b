/*  broker_internal: the router's state, shared by the broker's modules.
 *  Router thread only. Not part of any public interface.
 *
 *  The broker is one-way: each module calls only the modules below it, so
 *  no two broker files call each other (Redis's server.c routes and its
 *  networking.c sends; neither calls back up). The layers, top down:
 *
 *      broker.c     routing: the loop, decoding, login/logout, live Send,
 *        |   \       Who, Stats, presence, expiry, life cycle
 *        |    v
 *        |  resume_clock.c  each user's resume clock (PROTOCOL.md 11.4)
 *        |    v
 *        |  durable.c   durable handling: the store actor's requests and
 *        |    |           replies (pending FIFO, budgets, Ack/Fetch/History,
 *        |    |           durable Send)
 *        v    v
 *      outorder.c   per-session outbound order: the delivery state machine,
 *        |            the stored-push chain and the held ring
 *        v
 *      egress.c     what goes to clients: push, stamp, reply
 *        v
 *      sessions.c, outq.c, store_actor.c (leaves; store_actor is called
 *      by durable.c only)
 *
 *  broker.c may call resume_clock.c, durable.c, outorder.c and egress.c;
 *  resume_clock.c calls durable.c; durable.c calls outorder.c and egress.c;
 *  outorder.c calls egress.c; nothing calls up. tests/layers_check.py
 *  checks this (calls by prefix: cwb_/cw_broker_ broker.c, cwr_
 *  resume_clock.c, cwd_ durable.c, cwo_ outorder.c, cwe_ egress.c, and
 *  which module headers each file includes), as ctest `broker_layers`.
 *  The struct below is data shared by all of them (configuration, clock,
 *  counters, the session table); reading it is not a call.
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
    bool shared;              /* the store is shared by several brokers (store_if.h
                                 S1-S6: ops->shared); set by cwd_open */
    cw_outq_t *outq;          /* unread bulky replies per connection, owned */
    size_t n_dead;            /* sessions marked dead and not yet reaped */
    uint64_t serial;          /* last session serial handed out */
    int64_t started_ms;       /* monotonic start time */
    int64_t now_ms;           /* monotonic time of the current message or tick */
    uint64_t now_us;          /* wall-clock time of the current message or tick */
    counters_t stats;         /* monotonic counters */
    cw_mon_counters_t mc;     /* monitoring counters (monitor.h), router thread only */
    int64_t drop_warn_ms;     /* monotonic: when a dropped reply was last logged at WARN */
    uint64_t drops_quiet;     /* replies dropped since then, logged at debug only */
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

#endif
