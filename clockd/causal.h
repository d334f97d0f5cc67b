/*  causal: the analyses of causeway-clockd over one trace: comparing events
 *  by their vector clocks, causal past / future / concurrent sets, the audit
 *  (causal-order violations, duplicates, gaps, clock-rule violations,
 *  unmatched deliveries) and statistics (pairs, width of the partial order,
 *  clock sizes, hold-back delays).
 *
 *  What it owns. A cw_causal_t borrows a trace (which must outlive it and
 *  must not grow while it exists) and owns what it derives from it: the
 *  message index (message key -> its send), the findings of the audit and
 *  the statistics. Both are computed on first request and kept.
 *
 *  Happened-before is read from the clocks alone (the rule of
 *  cw_clock_compare, on the trace's compact clocks: cw_vc_compare, missing
 *  entries = 0): e happened before f iff e's clock is <=
 *  f's entry by entry and differs somewhere. Two distinct events with equal
 *  clocks are neither before nor after each other nor concurrent; the audit
 *  reports the clock-rule violation that made them equal.
 *
 *  Audit rules (docs/CLOCKD.md, "Audit", has the examples). For each
 *  receiver R, over R's deliver events in R's order (the first delivery of
 *  each message counts; a message is "addressed to R" if R is among its
 *  send's peers, or it is a broadcast by another process):
 *    causal-order  a = a delivery at R of message x, b = a later delivery
 *                  at R of message y whose send happened before x's send
 *                  (one finding per such a, naming the first such b);
 *    duplicate     a = a second (third, ...) delivery of a message at R,
 *                  b = its first delivery;
 *    gap           b = the send of a message y addressed to R and never
 *                  delivered at R, a = the first delivery at R of a message
 *                  whose send y's send happened before (one per y);
 *    unmatched     a = a delivery whose message has no send in the trace,
 *                  was sent by another process than the delivery names, or
 *                  was not addressed to R (b = the send, if any); or a = a
 *                  second send with an already used message key (b = the
 *                  first);
 *  and for each process P, over P's events in order, with prev the clock of
 *  P's previous event (empty before the first):
 *    clock-rule    a's own entry is not prev's + 1 (b = the previous event);
 *                  a send or local event changed an entry other than its own
 *                  (b = the previous event); a delivery's clock is not >=
 *                  the merge of prev and the message's clock (the send's
 *                  clock, else the delivery's msg_clock; b = the send); a
 *                  delivery's msg_clock differs from its send's clock.
 *  Findings are listed in trace order of event a, then by kind.
 *
 *  Cost. compare is O(k) in the clock sizes k; past/future/concurrent are
 *  O(n) compares; the audit is O(n k) for the clock rules plus, per
 *  receiver, O(k log D) per first delivery and O(k) per candidate pair:
 *  causal-order and gap take as candidates only the pairs that pass the
 *  vector-clock shortcut (e before f needs e.clock[e's process] <=
 *  f.clock[e's process]) and confirm each with the full comparison, so the
 *  findings are exactly those of comparing all pairs (tested against the
 *  old all-pairs audit, tests/unit/clockd_audit_ref.c); pair counts are
 *  O(n^2) and are skipped above a limit; the exact width is a bipartite
 *  matching over all ordered pairs (Hopcroft-Karp, O(n^2.5)) below a
 *  limit, else greedy bounds (docs/CLOCKD.md, "Statistics").
 *
 *  Thread. Not thread-safe: one thread uses a cw_causal_t.
 */
#ifndef CW_CLOCKD_CAUSAL_H
#define CW_CLOCKD_CAUSAL_H

#include <stddef.h>
#include <stdint.h>

#include "cw_clock.h"
#include "trace.h"

#define CW_NO_EVENT SIZE_MAX

typedef enum {
    CW_FIND_CAUSAL_ORDER = 1,
    CW_FIND_DUPLICATE = 2,
    CW_FIND_GAP = 3,
    CW_FIND_CLOCK_RULE = 4,
    CW_FIND_UNMATCHED = 5,
} cw_finding_kind_t;

/* One audit finding. Strings are owned by the cw_causal_t (detail) or the
 * trace (msg). */
typedef struct {
    cw_finding_kind_t kind;
    size_t process;       /* trace process index: the receiver, or the process whose clock is wrong */
    size_t a;             /* trace index of the event at fault */
    size_t b;             /* trace index of the event that shows it, or CW_NO_EVENT */
    const char *msg;      /* message key concerned; "" if none */
    const char *detail;   /* one human-readable sentence */
} cw_finding_t;

typedef enum {
    CW_REL_PAST = 1,        /* events that happened before e */
    CW_REL_FUTURE = 2,      /* events that e happened before */
    CW_REL_CONCURRENT = 3,  /* events concurrent with e */
} cw_relation_t;

/* Options of the statistics. */
typedef struct {
    size_t exact_width_max;   /* exact width (matching) up to this many events; default 2000 */
    size_t pairs_max;         /* count pairs up to this many events; default 10000 */
} cw_stats_options_t;

/* Statistics of a trace. Arrays are owned by the cw_causal_t. */
typedef struct {
    size_t events, processes, sends, delivers, locals;
    size_t messages;             /* distinct message keys of send events */
    size_t messages_delivered;   /* of those, delivered at least once */
    size_t deliveries_matched;   /* deliver events whose message has a send */
    int pairs_counted;           /* 0 if skipped (more than pairs_max events) */
    uint64_t pairs;              /* unordered pairs of distinct events */
    uint64_t ordered_pairs;      /* one happened before the other */
    uint64_t concurrent_pairs;
    uint64_t equal_pairs;        /* distinct events with equal clocks */
    size_t width;                /* largest antichain: exact if width_exact */
    int width_exact;
    size_t width_lower, width_upper;  /* bounds (equal to width when exact) */
    const size_t *antichain;     /* trace indexes of one antichain of width_lower events */
    size_t clock_min, clock_max; /* entries per clock (non-zero ones) */
    double clock_mean;
    const size_t *clock_hist;    /* clock_hist[k] = events whose clock has k entries, k <= clock_max */
    size_t holdback_n;           /* deliver events that carry holdback_us */
    uint64_t holdback_min, holdback_max, holdback_p50, holdback_p90, holdback_p99;
    double holdback_mean;
} cwc_stats_t;

typedef struct cw_causal cw_causal_t;

/* Indexes the trace (borrowed). NULL only if out of memory. */
cw_causal_t *cw_causal_new(const cw_trace_t *t);
/* Frees the analysis and NULLs *p; safe on NULL and twice. */
void cw_causal_destroy(cw_causal_t **p);

/* The trace this analysis reads. */
const cw_trace_t *cw_causal_trace(const cw_causal_t *c);

/* Relation of events a and b (trace indexes, asserted in range):
 * CW_CLOCK_BEFORE means a happened before b. Can't fail. */
cw_clock_order_t cw_causal_compare(const cw_causal_t *c, size_t a, size_t b);
/* "equal", "before", "after", "concurrent". */
const char *cw_clock_order_name(cw_clock_order_t o);

/* The events in relation rel to e, in trace order. CW_OK with *out a
 * malloc'd array (caller frees; NULL when *n is 0); CW_ERR_NOMEM. */
int cw_causal_related(const cw_causal_t *c, size_t e, cw_relation_t rel, size_t **out, size_t *n);

/* The send event of a message key: CW_OK and *index, or CW_UNKNOWN_USER if
 * the trace has no send with that key. */
int cw_causal_send_of(const cw_causal_t *c, const char *msg, size_t *index);

/* Runs the audit (once; later calls return the kept result). CW_OK or
 * CW_ERR_NOMEM (no findings kept; may be retried). */
int cw_causal_audit(cw_causal_t *c);
/* Findings of the last successful audit (0 before it). */
size_t cw_causal_findings(const cw_causal_t *c);
const cw_finding_t *cw_causal_finding(const cw_causal_t *c, size_t i);
/* Deliver events the receiving client flagged late ("late": true,
 * PROTOCOL.md §13.14): shown although the sender's clock entry was at or
 * below the receiver's. Counted, not findings: a late delivery can be a
 * retried send after a broker failover that the audit orders correctly.
 * Can't fail. */
size_t cw_causal_late(const cw_causal_t *c);
/* "causal-order", "duplicate", "gap", "clock-rule", "unmatched". */
const char *cw_finding_kind_name(cw_finding_kind_t k);

/* Defaults: exact width up to 2000 events, pairs up to 10000. */
void cw_stats_options_init(cw_stats_options_t *o);
/* Computes the statistics (again, if called twice; earlier arrays are
 * freed). CW_OK and *out (valid until the next call or destroy), or
 * CW_ERR_NOMEM. */
int cw_causal_stats(cw_causal_t *c, const cw_stats_options_t *o, const cwc_stats_t **out);

#endif
