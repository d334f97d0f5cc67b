/*  evstore: causeway-clockd's event store, one SQLite file (--db FILE).
 *
 *  What it owns. One SQLite connection. The file holds one table:
 *    events(id INTEGER PRIMARY KEY, received_us, process, kind, event)
 *  where id is the arrival order (never reused), received_us the daemon's
 *  time of receipt, and event the event's canonical JSON line (the trace
 *  format of docs/CLOCKD.md, written by cw_event_to_json), so that a store
 *  and a trace file hold the same thing and are read by the same parser.
 *  process and kind are copies kept for ad-hoc SQL. PRAGMA application_id
 *  marks the file as clockd's ("CWKD") and user_version is the schema
 *  version (1).
 *
 *  Durability. A writable store runs in WAL mode with synchronous=FULL: an
 *  append is one transaction, and cw_evstore_append returns CW_OK only after
 *  the commit (and its fsync) returned, so the daemon replies to a report
 *  only once the events are on disk. A batch is stored entirely or not at
 *  all. Readers (the CLI's --db) open the file read-only and may do so
 *  while the daemon writes; they see the last committed batch.
 *
 *  Errors. Every function returns a cw_status_t; CW_STORE_ERROR means SQLite
 *  failed (err says how) and, for an append, nothing of the batch is stored.
 *
 *  Thread. Not thread-safe: one thread uses a store (the daemon's loop).
 */
#ifndef CW_CLOCKD_EVSTORE_H
#define CW_CLOCKD_EVSTORE_H

#include <stddef.h>
#include <stdint.h>

#include "trace.h"

typedef struct cw_evstore cw_evstore_t;

#define CW_EVSTORE_READONLY 1   /* open an existing store for reading only */

/* Opens (read-write: creating if needed) the store at path; ":memory:" is a
 * private in-memory store. NULL on failure with *status set (CW_STORE_ERROR
 * if SQLite fails or the file is not a clockd store, CW_ERR_IO if a
 * read-only store does not exist, CW_ERR_NOMEM) and err explaining. */
cw_evstore_t *cw_evstore_open(const char *path, int flags, int *status, char *err, size_t errlen);
/* Closes the store and NULLs *p; safe on NULL and twice. */
void cw_evstore_close(cw_evstore_t **p);

/* Appends events (already checked with cw_trace_check) in one transaction.
 * CW_OK once committed; CW_ERR_NOMEM or CW_STORE_ERROR (nothing stored);
 * CW_ERR_INVALID on a read-only store. */
int cw_evstore_append(cw_evstore_t *s, const cwc_event_t *const *events, size_t n,
                      uint64_t received_us, char *err, size_t errlen);

/* Adds to t every stored event with id > *last_id, in id order, and sets
 * *last_id to the last id added (events carry their row id as `line`).
 * CW_OK; CW_STORE_ERROR; CW_BAD_REQUEST if a row does not hold a valid
 * event (err "row ID: ..."; rows before it stay added, *last_id says up to
 * where); CW_ERR_NOMEM. */
int cw_evstore_load(cw_evstore_t *s, cw_trace_t *t, uint64_t *last_id, char *err, size_t errlen);

/* Number of stored events; 0 if the count fails. */
uint64_t cw_evstore_count(cw_evstore_t *s);

#endif
