/*  peer_link: one client connection of peer_bench, in any of the four
 *  protocols it measures — causeway (protobuf Envelopes on a DEALER), the
 *  raw-libzmq relay (bench_util.h's frames), NATS (its text protocol on
 *  TCP) and Redis (RESP on TCP).
 *
 *  Why the NATS and Redis sides are written here instead of using libnats
 *  or hiredis's connection API: the bench must load the brokers, not the
 *  clients, and both libraries add threads, locks or an allocation per
 *  message that would be measured as client cost and slow the publisher
 *  down on two cores. A publish here is one prepacked byte string appended
 *  to a buffer; what comes back is still fully parsed and checked (NATS by
 *  its MSG/PING/PONG/-ERR grammar, Redis by hiredis's own RESP reader),
 *  so no reply is counted that the server did not send. causeway clients
 *  are realistic: every Send is encoded anew with its own request id and
 *  message id, and every Reply is decoded and its per-recipient status
 *  checked.
 *
 *  One link belongs to the thread that made it (peer_bench runs them all on
 *  its main thread and polls them together).
 */
#ifndef CW_PEER_LINK_H
#define CW_PEER_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

typedef enum { PEER_CAUSEWAY, PEER_RELAY, PEER_NATS, PEER_REDIS } peer_proto_t;

typedef enum {
    PUB_LIVE,       /* causeway live unicast, relay forward, NATS PUB+PING, Redis PUBLISH */
    PUB_DURABLE,    /* causeway durable Send, NATS JetStream PUB with ack, Redis XADD */
    PUB_BROADCAST,  /* causeway live broadcast, NATS PUB+PING, Redis PUBLISH */
} peer_pub_kind_t;

/* What a link counts. acks: the server's acknowledgements of this link's
 * publishes (causeway Reply with the expected status, relay reply, NATS
 * PONG or JetStream ack, Redis reply); msgs: messages it received as a
 * subscriber; errors: refusals and protocol errors (the first is printed). */
typedef struct {
    uint64_t acks;
    uint64_t msgs;
    uint64_t errors;
} peer_counts_t;

typedef struct peer_link peer_link_t;

/* Connects to 127.0.0.1:port (zctx: the clients' libzmq context, for
 * causeway and the relay). NULL on error (message on stderr). */
peer_link_t *peer_link_new(peer_proto_t proto, void *zctx, int port);

/* Closes the connection and frees the link; NULLs *p; safe on NULL. */
void peer_link_destroy(peer_link_t **p);

/* The handshake, waiting up to timeout_ms: causeway logs in as name
 * (quiet), the relay registers slot, NATS sends CONNECT and waits for the
 * PONG of a PING, Redis does nothing. 0 or -1. */
int peer_link_join(peer_link_t *l, const char *name, int slot, int timeout_ms);

/* As a subscriber (NATS SUB, Redis SUBSCRIBE, confirmed before returning;
 * causeway and the relay receive what is routed to their name or slot and
 * need nothing). 0 or -1. */
int peer_link_subscribe(peer_link_t *l, const char *subject, int timeout_ms);

/* Prepares this link's publishes: kind, where they go (causeway: user name,
 * ignored for broadcast; relay: slot number as text; NATS: subject; Redis:
 * channel or stream key) and text_len bytes of body. For NATS JetStream
 * the link subscribes to its own ack inbox first. 0 or -1. */
int peer_link_prepare(peer_link_t *l, peer_pub_kind_t kind, const char *target, size_t text_len);

/* Queues one publish (and, where the protocol needs one, its ack request).
 * Sent by the next pump. 0 or -1. */
int peer_link_publish(peer_link_t *l);

/* Sends what is queued, reads and parses what arrived; never blocks.
 * 0, or -1 when the connection failed. */
int peer_link_pump(peer_link_t *l);

/* A poll item for zmq_poll: the DEALER socket or the TCP descriptor, with
 * ZMQ_POLLOUT while output is queued. */
zmq_pollitem_t peer_link_pollitem(const peer_link_t *l);

/* causeway only: acknowledge every Nth durable push received (0, the
 * default: never; the broker then stops at its push window). Acks are
 * Requests whose Replies are counted like any other. */
void peer_link_ack_every(peer_link_t *l, uint32_t every);

/* The counters (live view) and a reset to zero (after set-up traffic). */
const peer_counts_t *peer_link_counts(const peer_link_t *l);
void peer_link_reset(peer_link_t *l);

/* NATS only: a request-reply on the JetStream API (subject, JSON body); the
 * reply body is copied into reply (NUL-terminated). 0 or -1. */
int peer_link_nats_request(peer_link_t *l, const char *subject, const char *json, char *reply,
                           size_t reply_len, int timeout_ms);

/* Makes `name` a known causeway user that is offline: logs it in on the
 * broker at 127.0.0.1:port and out again. 0 or -1. */
int peer_causeway_known_offline(void *zctx, int port, const char *name, int timeout_ms);

/* One windowed run over publisher and subscriber links: peer_run_step
 * (a `done` for peer_links_run) keeps every publisher's window full until
 * per_pub publishes each are acknowledged and the subscribers together
 * received want_msgs messages; failed is set on any error or refusal. */
typedef struct {
    peer_link_t **pubs;      /* publishers */
    size_t n_pubs;
    long per_pub;            /* messages each publisher sends */
    long *sent;              /* per publisher */
    int window;              /* publishes in flight per publisher */
    peer_link_t **subs;      /* subscribers (may be 0) */
    size_t n_subs;
    double want_msgs;        /* deliveries expected over all subscribers */
    int failed;
} peer_run_t;
int peer_run_step(void *run);

/* Sorts v[0..n) (n >= 1) and gives its min, median and max. */
void peer_stats3(double *v, int n, double out[3]);

/* Polls the links together until done(arg) is true or timeout_ms passes.
 * 0 when done, -1 on timeout or a failed connection. */
int peer_links_run(peer_link_t **links, size_t n, int (*done)(void *), void *arg, int timeout_ms);

#endif
