/*  trace: the events causeway-clockd analyses, and the JSON-lines trace
 *  format they are read from and written to.
 *
 *  What it owns. A cw_trace_t holds a list of events in the order they were
 *  added (file order, or the daemon's arrival order) with deep copies of all
 *  their strings and clocks, plus the per-process view: the processes
 *  numbered in order of first appearance, and for each the indexes of its
 *  events in the order they were added. An event's id is "process:seq"
 *  where seq counts that process's events from 1 in that order ("alice:3"
 *  is alice's third event). Adding events never renumbers anything, so ids
 *  and indexes stay valid while a trace grows (the daemon relies on it).
 *
 *  Event model (docs/CLOCKD.md, "Events"): process, kind (send | deliver |
 *  local), the process's vector clock after the event, a message key (msg)
 *  linking a send to its deliveries, peers (recipients of a send, [sender]
 *  of a deliver), a wall timestamp, and optional text, hold-back delay,
 *  message clock (deliver) and broadcast flag (send).
 *
 *  Invariants. Every stored event passed cw_trace_add's checks: a valid
 *  process name (see cw_trace_name_ok), a known kind, a clock whose node
 *  names are valid and whose zero entries are dropped (missing = 0), a
 *  non-empty msg for send and deliver and none for local, peers as the kind
 *  requires. Events are never removed or changed once added; pointers
 *  returned by the accessors (events, names) stay valid until the trace is
 *  destroyed.
 *
 *  Thread. Not thread-safe; one thread builds a trace. A finished trace is
 *  read-only and may be read from several threads.
 */
#ifndef CW_CLOCKD_TRACE_H
#define CW_CLOCKD_TRACE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cw_clock.h"
#include "cw_util.h"
#include "json.h"

typedef enum {
    CW_EV_SEND = 1,
    CW_EV_DELIVER = 2,
    CW_EV_LOCAL = 3,
} cw_ev_kind_t;

/* Longest accepted JSON line, in bytes (newline excluded). */
#define CW_TRACE_MAX_LINE (1024 * 1024)
/* Most peers of one event and most entries of one clock. */
#define CW_TRACE_MAX_PEERS 4096
#define CW_TRACE_MAX_CLOCK 4096

typedef struct cw_trace cw_trace_t;

/* A vector clock as the trace stores it: node ids (cw_trace_node_name),
 * strictly ascending, with their counters (all > 0; missing = 0). 12 bytes
 * an entry, names interned once per trace. */
typedef struct {
    const uint32_t *node;
    const uint64_t *count;
    size_t n;
} cw_vc_t;

/* One event. As input to cw_trace_add every pointer is borrowed for the call
 * and the fields marked "out" are ignored; as returned by cw_trace_event
 * everything is owned by the trace, the clocks are in vc / mvc and the
 * fields marked "in" are NULL / 0. */
typedef struct {
    const char *process;                /* process (user) name */
    cw_ev_kind_t kind;
    cw_clock_entry_msg_t **clock;       /* in: clock after the event (any order) */
    size_t n_clock;                     /* in */
    const char *msg;                    /* message key; out: "" for local events */
    const char *const *peers;           /* send: recipients; deliver: {sender} */
    size_t n_peers;
    uint64_t ts_us;                     /* wall time, µs since the epoch; 0 = unknown */
    const char *text;                   /* optional; NULL = none (out: "" is stored as NULL) */
    uint64_t holdback_us;               /* deliver: hold-back delay, if has_holdback */
    int has_holdback;
    cw_clock_entry_msg_t **msg_clock;   /* in, deliver: the message's clock, if has_msg_clock */
    size_t n_msg_clock;                 /* in */
    int has_msg_clock;
    int broadcast;                      /* send: to every other process (peers empty) */
    int late;                           /* deliver: flagged late by the receiving client
                                           (PROTOCOL.md §13.14; "late": true) */
    cw_vc_t vc;                         /* out: the clock, zero entries dropped */
    cw_vc_t mvc;                        /* out: the message's clock, if has_msg_clock */
    const cw_trace_t *trace;            /* out: the trace holding the event; NULL for input */
    size_t proc;                        /* out: index of the process (cw_trace_process_name) */
    size_t seq;                         /* out: 1-based position among the process's events */
    size_t line;                        /* out: source line (file) or row id (store); 0 = none */
} cwc_event_t;

/* Flags of cw_trace_load_file. */
#define CW_TRACE_SKIP_BAD 1   /* skip malformed lines (each reported through warn) */

/* A new empty trace; NULL only if out of memory. */
cw_trace_t *cw_trace_new(void);
/* Frees the trace and NULLs *p; safe on NULL and twice. */
void cw_trace_destroy(cw_trace_t **p);

/* Checks and adds one event (deep copy); line is recorded as the event's
 * source line. ev may also be an event of another (or this) trace: its
 * clocks are then read from vc / mvc. CW_OK; CW_BAD_REQUEST if the event breaks a rule of the
 * event model (err says which; nothing added); CW_ERR_NOMEM (no event
 * added, but a process seen for the first time may stay listed with no
 * events). */
int cw_trace_add(cw_trace_t *t, const cwc_event_t *ev, size_t line, char *err, size_t errlen);

/* Checks an event without adding it: the same rules as cw_trace_add.
 * CW_OK or CW_BAD_REQUEST with err set. */
int cw_trace_check(const cwc_event_t *ev, char *err, size_t errlen);

/* Parses one JSON line (without its newline) and adds the event. Blank
 * lines and lines whose first non-blank byte is '#' are skipped (CW_OK,
 * nothing added). CW_BAD_REQUEST with err "column C: ..." for malformed
 * JSON or "field: ..." for a bad event; CW_ERR_NOMEM. Nothing is added on
 * failure. */
int cw_trace_add_json(cw_trace_t *t, const char *line, size_t len, size_t lineno,
                      char *err, size_t errlen);

/* Reads a JSON-lines trace file ("-" = stdin) and adds its events. On a bad
 * line: without CW_TRACE_SKIP_BAD, stops and returns CW_BAD_REQUEST with err
 * "PATH:LINE: ..." (events of earlier lines stay added); with it, calls
 * warn(ctx, message) (if warn is not NULL) and goes on. Lines longer than
 * CW_TRACE_MAX_LINE are bad lines. CW_ERR_IO if the file cannot be opened or
 * read (err says why); CW_ERR_NOMEM. */
int cw_trace_load_file(cw_trace_t *t, const char *path, int flags,
                       void (*warn)(void *ctx, const char *msg), void *ctx,
                       char *err, size_t errlen);

/* Number of events; event i in insertion order (NULL if out of range). */
size_t cw_trace_count(const cw_trace_t *t);
const cwc_event_t *cw_trace_event(const cw_trace_t *t, size_t i);

/* Processes, numbered in order of first appearance. */
size_t cw_trace_processes(const cw_trace_t *t);
const char *cw_trace_process_name(const cw_trace_t *t, size_t p);
/* Index of a process by name; -1 if the trace has no event of it. */
long cw_trace_process_find(const cw_trace_t *t, const char *name);
/* Number of events of process p, and the trace index of its event with
 * 1-based seq (SIZE_MAX if out of range). */
size_t cw_trace_process_count(const cw_trace_t *t, size_t p);
size_t cw_trace_process_event(const cw_trace_t *t, size_t p, size_t seq);

/* Clock node names: every process, peer and clock node name the trace has
 * seen, numbered densely from 0 in order of first appearance. */
size_t cw_trace_nodes(const cw_trace_t *t);
const char *cw_trace_node_name(const cw_trace_t *t, uint32_t node);
/* Id of a node name; -1 if the trace never saw it. */
long cw_trace_node_find(const cw_trace_t *t, const char *name);
/* Node id of process p's name. */
uint32_t cw_trace_process_node(const cw_trace_t *t, size_t p);

/* Counter of node in c (binary search); 0 if absent. */
uint64_t cw_vc_get(const cw_vc_t *c, uint32_t node);
/* Relation of a to b, as cw_clock_compare: O(a.n + b.n). */
cw_clock_order_t cw_vc_compare(const cw_vc_t *a, const cw_vc_t *b);
/* Sum of the counters. */
uint64_t cw_vc_sum(const cw_vc_t *c);

/* A stored clock as wire entries sorted by node name (the form of
 * cw_clock_format and the canonical JSON): *items and *ptrs malloc'd
 * (caller frees both; node strings belong to the trace). CW_OK or
 * CW_ERR_NOMEM. */
int cw_trace_clock_wire(const cw_trace_t *t, const cw_vc_t *c, cw_clock_entry_msg_t **items,
                        cw_clock_entry_msg_t ***ptrs);
/* cw_clock_format of a stored clock ("{alice:2, bob:1}"); "{?}" if out of
 * memory. Returns buf. */
char *cw_trace_clock_format(const cw_trace_t *t, const cw_vc_t *c, char *buf, size_t size);
/* Writes a stored clock as JSON (cw_clock_put_json's form). */
void cw_trace_clock_put_json(FILE *f, const cw_trace_t *t, const cw_vc_t *c);

/* Finds an event by id "process:seq". CW_OK and *index set; CW_BAD_REQUEST
 * if id is not of that form; CW_UNKNOWN_USER if there is no such event (err
 * explains, e.g. "alice has 5 events"). */
int cw_trace_find(const cw_trace_t *t, const char *id, size_t *index, char *err, size_t errlen);

/* Writes the event's id ("alice:3") into buf (truncated to size); returns
 * buf. CW_EVENT_ID_MAX is always enough. */
#define CW_EVENT_ID_MAX 96
char *cw_event_id(const cwc_event_t *ev, char *buf, size_t size);

/* "send", "deliver", "local"; cw_ev_kind_parse returns 0 if unknown. */
const char *cw_ev_kind_name(cw_ev_kind_t k);
cw_ev_kind_t cw_ev_kind_parse(const char *s);

/* Process and node names follow cw_trace_name_ok (common/cw_util.h). */

/* Converts a JSON object {"node": counter, ...} into wire clock entries.
 * On CW_OK, *items and *ptrs are malloc'd (caller frees both; node strings
 * point into the JSON tree, which must outlive them) and *n is set.
 * CW_BAD_REQUEST with err "FIELD: ..." if obj is not such an object;
 * CW_ERR_NOMEM. */
int cw_clock_from_json(const cw_json_t *obj, const char *field, cw_clock_entry_msg_t **items,
                       cw_clock_entry_msg_t ***ptrs, size_t *n, char *err, size_t errlen);

/* Writes a clock as a JSON object {"alice":1,"bob":2} (sorted, no spaces). */
void cw_clock_put_json(FILE *f, cw_clock_entry_msg_t *const *e, size_t n);

/* Writes the event (an input event, or one returned by cw_trace_event) as
 * one canonical JSON line (with '\n'): the trace format that
 * cw_trace_add_json reads back to an equal event. Returns 0 or -1 if the
 * stream reported an error. */
int cw_event_put_json(FILE *f, const cwc_event_t *ev);

/* The same line in a malloc'd NUL-terminated string (no trailing newline);
 * caller frees. NULL if out of memory. */
char *cw_event_to_json(const cwc_event_t *ev);

#endif
