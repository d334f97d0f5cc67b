/*  broker: the router. Owns the ROUTER socket and all routing state
 *  (sessions, user log, counters) and runs on one thread: the thread that
 *  calls cw_broker_run. No locks on the hot path.
 *
 *  Each frame from a client is decoded, validated and answered in turn:
 *  every request gets exactly one Reply (see docs/PROTOCOL.md). Sessions
 *  that die while a frame is being handled are only marked; they are closed
 *  (and their presence announced) at the next safe point, after the frame.
 */
#ifndef CW_BROKER_H
#define CW_BROKER_H

#include <signal.h>
#include <stddef.h>

#include "broker_config.h"

typedef struct cw_broker cw_broker_t;

/* Creates the broker and binds its socket (and opens the store when
 * cfg->data is set). On failure returns NULL with a message in err.
 * cfg is copied. */
cw_broker_t *cw_broker_new(const cw_broker_config_t *cfg, char *err, size_t errlen);

/* Closes everything; NULLs *p; safe on NULL and twice. */
void cw_broker_destroy(cw_broker_t **p);

/* The endpoint actually bound (wildcard port resolved). */
const char *cw_broker_endpoint(const cw_broker_t *b);

/* The broker's snapshots (monitor.h), for a reader on another thread (the
 * metrics endpoint). The first call (on the router's thread, before
 * cw_broker_run) publishes a first snapshot; cw_broker_run publishes one
 * every CW_MON_PUBLISH_MS from then on. Owned by b. */
typedef struct cw_monitor cw_monitor_t;
cw_monitor_t *cw_broker_monitor(cw_broker_t *b);

/* Serves until *stop becomes non-zero (set it from a signal handler).
 * Returns 0 after a clean stop, -1 on a fatal socket error (logged). */
int cw_broker_run(cw_broker_t *b, volatile sig_atomic_t *stop);

/* Makes cw_broker_run re-read the users directory (CURVE) whenever *flag
 * becomes non-zero (set it from a signal handler); it resets *flag. */
void cw_broker_watch_reload(cw_broker_t *b, volatile sig_atomic_t *flag);

/* Handles one message as if it came from the peer with routing id `id`:
 * `frames` are its payload frames (normally exactly one). Replies go to the
 * ROUTER socket (and are dropped if no such peer is connected). Sessions
 * found dead meanwhile are closed before it returns (the safe point after
 * the frame). For in-process tests and fuzzing. */
void cw_broker_handle(cw_broker_t *b, const void *id, size_t id_len,
                      const void *const *frames, const size_t *sizes, size_t n_frames);

#endif
