/*  egress: everything the router sends to clients. The bottom of the
 *  broker's layers (see broker_internal.h): it calls nothing above it.
 *
 *  Router thread only. Three jobs, one place each:
 *    push   a prepared frame to a logged-in session (Deliver, Presence,
 *           Heartbeat: request id 0), never blocking: ZMQ_ROUTER_MANDATORY
 *           and ZMQ_DONTWAIT, so a peer that is gone marks its session dead
 *           (reaped by broker.c at the next safe point) and a peer whose
 *           queue is at the high-water mark is reported FLOODED;
 *    stamp  a shared live Deliver frame with Envelope.after_seq for one
 *           session (PROTOCOL.md §13.10) by appending the field, so the
 *           frame shared by every recipient is copied only when needed;
 *    reply  an envelope to a routing id that may have no session (replies
 *           to requests), through outq's accounting of bulky replies.
 *  cwe_reply_status (and cwe_reply_bad_frame, the same counted as a bad
 *  frame) is the one function that builds an error reply.
 */
#ifndef CW_EGRESS_H
#define CW_EGRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "broker_internal.h"

/* Sends a prepared frame to s (consumes *msg in every case). Returns
 * CW_DELIVERED, CW_FLOODED (peer's queue full: dropped) or CW_OFFLINE (peer
 * gone: s is marked dead and b->n_dead counts it). */
int cwe_push(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg);

/* cwe_push of a Deliver frame stamped with Envelope.after_seq = after
 * (0: not stamped, the frame goes as is). Consumes *msg. Same returns;
 * CW_FLOODED also when the stamped copy cannot be allocated. */
int cwe_push_after(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg, uint64_t after);

/* Sends env to a routing id that may have no session. Failures are logged
 * (a peer that vanished cannot be answered); can't fail otherwise. */
void cwe_send_to_id(cw_broker_t *b, const void *id, size_t id_len, const cw_env_t *env);

/* cwe_send_to_id for the session s at hand (s->id is the routing id). */
void cwe_send_to_session(cw_broker_t *b, cw_session_t *s, const cw_env_t *env);

/* Presence (PROTOCOL.md §8): tells every live, logged-in, non-quiet
 * session but `except` that `name` came (online) or went. Presence of
 * users served here (broker.c) and, with a shared store, of users served
 * by other brokers (durable.c's PRESENCE events). Can't fail (out of
 * memory: logged, nothing sent). */
void cwe_announce(cw_broker_t *b, const char *name, bool online, int reason,
                  const cw_session_t *except);

/* A Send's Reply: status, detail, duplicate and the outcomes of its n
 * recipients (rcpts, in the sender's order; rptrs is room for n pointers,
 * set here to &rcpts[i]). To session s (the sender, when it is at hand)
 * or else to the routing id. A non-success status counts as a refused
 * request, as with cwe_reply_status. The one place a Reply with
 * recipients is built (live, stored, duplicate, nothing to store). Can't
 * fail. */
void cwe_reply_recipients(cw_broker_t *b, cw_session_t *s, const void *id, size_t id_len,
                          uint64_t request_id, int status, const char *detail, bool duplicate,
                          Causeway__V1__RecipientStatus *rcpts,
                          Causeway__V1__RecipientStatus **rptrs, size_t n);

/* The one function that builds an error (or bare status) reply: status and
 * detail (NULL: cw_strerror(status)) for request_id. A non-success status
 * counts as a refused request (BrokerStats.refused_requests). */
void cwe_reply_status(cw_broker_t *b, const void *id, size_t id_len, uint64_t request_id,
                      int status, const char *detail);
/* The same reply for a frame refused by PROTOCOL.md §5 steps 1-7, counted
 * in BrokerStats.bad_frames instead. */
void cwe_reply_bad_frame(cw_broker_t *b, const void *id, size_t id_len, uint64_t request_id,
                         int status, const char *detail);

#endif
