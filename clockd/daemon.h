/*  daemon: the causeway-clockd service (`causeway-clockd serve`).
 *
 *  What it owns. A ROUTER socket bound to the configured endpoint, the
 *  event store (evstore.h) and an in-memory trace that mirrors the store
 *  row for row (it is refreshed from the store after every append, so it
 *  also picks up rows another writer added). Queries build a fresh analysis
 *  (causal.h) over that trace.
 *
 *  Protocol (proto/causeway.proto, section "causeway-clockd";
 *  docs/CLOCKD.md, "Daemon"). Each request is one ClockdRequest frame,
 *  after the routing id and, from REQ sockets, an empty delimiter frame
 *  that is echoed. Each request with a non-zero request_id gets exactly one
 *  ClockdReply; one function (reply_error) builds every error reply:
 *    - undecodable frame or no body: BAD_REQUEST (UNKNOWN_TYPE if the body
 *      is a field this build does not know); version != 1:
 *      UNSUPPORTED_VERSION; frame over max_frame: TOO_LARGE;
 *    - report: every event is checked (cw_trace_check) before any is
 *      stored; one bad event rejects the batch (BAD_REQUEST, detail names
 *      the event's index). The reply is sent after the batch committed;
 *      STORE_ERROR if the store failed (nothing stored);
 *    - audit / compare / info answer from the events stored so far.
 *
 *  Security. With cfg.curve_secret the ROUTER is a CURVE server and a ZAP
 *  handler (cw_sec.h) on this thread lets only keys registered in
 *  cfg.users complete the handshake (the broker's users directory can be
 *  reused). Reported events are not checked against the reporting key's
 *  user (docs/OPERATIONS.md, "Security").
 *
 *  Thread. Everything runs on the thread that calls cw_clockd_run (the main
 *  thread in causeway-clockd). Not thread-safe.
 */
#ifndef CW_CLOCKD_DAEMON_H
#define CW_CLOCKD_DAEMON_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#define CW_CLOCKD_DEFAULT_BIND "tcp://127.0.0.1:7401"
#define CW_CLOCKD_DEFAULT_DB "clockd.db"

typedef struct {
    const char *bind;         /* ZeroMQ endpoint; default CW_CLOCKD_DEFAULT_BIND */
    const char *db;           /* store file, ":memory:" for none; default CW_CLOCKD_DEFAULT_DB */
    size_t max_frame;         /* largest request frame, bytes; default 4 MiB */
    uint32_t max_findings;    /* most findings in one audit reply; default 1000 */
    const char *curve_secret; /* CURVE: the daemon's secret certificate; NULL: plain */
    const char *users;        /* CURVE: directory of the registered public certificates */
} cw_clockd_config_t;

typedef struct cw_clockd cw_clockd_t;

void cw_clockd_config_defaults(cw_clockd_config_t *cfg);

/* Opens the store, loads its events and binds the socket. NULL on failure
 * with err explaining (nothing left open). */
cw_clockd_t *cw_clockd_new(const cw_clockd_config_t *cfg, char *err, size_t errlen);
/* Closes socket and store, frees everything, NULLs *p; safe on NULL/twice. */
void cw_clockd_destroy(cw_clockd_t **p);

/* The endpoint actually bound (a '*' port resolved), e.g.
 * "tcp://127.0.0.1:40123". */
const char *cw_clockd_endpoint(const cw_clockd_t *d);

/* Serves requests until *stop becomes non-zero (checked at least every
 * 200 ms and after every signal). Returns 0, or -1 if the socket failed
 * (logged). */
int cw_clockd_run(cw_clockd_t *d, volatile sig_atomic_t *stop);

/* CURVE: while cw_clockd_run runs, whenever *flag is set (by a SIGHUP
 * handler) it is cleared and the users directory is read again, as the
 * broker does; keys no longer listed are refused from the next handshake. */
void cw_clockd_watch_reload(cw_clockd_t *d, volatile sig_atomic_t *flag);

/* Handles one request frame in-process (what cw_clockd_run does for each
 * frame; tests use it directly). Returns CW_OK with *reply a malloc'd
 * packed ClockdReply (caller frees), or CW_OK with *reply NULL when the
 * request asked for no reply (request_id 0); CW_ERR_NOMEM. */
int cw_clockd_handle(cw_clockd_t *d, const void *frame, size_t len, uint8_t **reply,
                     size_t *reply_len);

/* Events held. */
size_t cw_clockd_events(const cw_clockd_t *d);

#endif
