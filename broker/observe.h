/*  observe: monitoring (PROTOCOL.md §12.1-12.2, docs/OPERATIONS.md
 *  "Monitoring"). Router thread. Below broker.c, above durable.c,
 *  outorder.c and egress.c (layers: broker_internal.h).
 */
#ifndef CW_OBSERVE_H
#define CW_OBSERVE_H

#include "broker_internal.h"

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

#endif
