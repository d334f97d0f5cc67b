/*  monitor: the broker's figures, counted by the router and read by
 *  other threads without slowing it.
 *
 *  Three pieces:
 *    - cw_mon_counters_t: plain counters the router thread increments on
 *      its hot path (a few additions per message; no atomics, no locks).
 *      Only the router thread touches them.
 *    - cw_mon_ring_t: the router's ring of the most recently forwarded
 *      messages (sender, recipients, mode, size; the text only when the
 *      operator allowed it with --monitor-text). Router thread only.
 *    - cw_monitor_t: a wait-free triple buffer of cw_mon_snap_t. The router
 *      fills the back buffer (cw_monitor_back), then publishes it with one
 *      atomic exchange (cw_monitor_publish), at most every
 *      CW_MON_PUBLISH_MS; a reader (the metrics HTTP thread) takes the
 *      newest published snapshot with one atomic exchange and copies it out
 *      (cw_monitor_read). Neither side ever waits for the other; readers
 *      serialise among themselves with a mutex the router never touches.
 *
 *  Invariant of the triple buffer: the three indexes back (router's),
 *  front (readers') and the one in `middle` are always a permutation of
 *  {0, 1, 2}, so the router never writes a buffer a reader is copying.
 */
#ifndef CW_MONITOR_H
#define CW_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cw_util.h"
#include "store_actor.h"

#define CW_MON_STATUSES 128     /* status codes counted (the enum's values are below) */
#define CW_MON_TOP_QUEUES 10    /* deepest queues in a snapshot */
#define CW_MON_RING 256         /* forwarded messages kept */
#define CW_MON_RING_TO 8        /* recipient names kept per forwarded message (at most) */
#define CW_MON_TO_BYTES 128     /* room for them (names that do not fit are left out) */
#define CW_MON_TEXT_MAX 200     /* text bytes kept per forwarded message (--monitor-text) */
#define CW_MON_PUBLISH_MS 200   /* the router publishes a snapshot this often */
#define CW_MON_WATCH_MS 60000   /* the ring records for this long after a Recent request */

/* Addressing kinds, as counted. */
enum { CW_KIND_UNICAST = 0, CW_KIND_MULTICAST = 1, CW_KIND_BROADCAST = 2, CW_KINDS = 3 };

/* The router's counters. Index [durable][kind]. */
typedef struct {
    uint64_t refusals[CW_MON_STATUSES];  /* error Replies by status */
    uint64_t fates[CW_MON_STATUSES];     /* per-recipient statuses of Sends */
    uint64_t rx[2][CW_KINDS];            /* Sends that passed validation */
    uint64_t rx_bytes[2][CW_KINDS];      /* their text bytes */
    uint64_t dl[2][CW_KINDS];            /* Deliver frames pushed */
    uint64_t dl_bytes[2][CW_KINDS];      /* their text bytes */
    uint64_t redeliveries;               /* durable entries pushed again */
    uint64_t replies_dropped;            /* replies that met a full queue (sndhwm) */
    uint64_t held_total;                 /* live messages ever held back */
    uint64_t held_now;                   /* live messages held back now */
    uint64_t logins;                     /* sessions opened (not resumes) */
    uint64_t bytes_in;                   /* frame bytes received */
    uint64_t bytes_out;                  /* frame bytes of pushes queued */
} cw_mon_counters_t;

/* The kind of a Send addressed to n_to names (or broadcast). */
static inline int cw_mon_kind(bool broadcast, size_t n_to)
{
    return broadcast ? CW_KIND_BROADCAST : n_to > 1 ? CW_KIND_MULTICAST : CW_KIND_UNICAST;
}

/* Counts one status in an array of CW_MON_STATUSES; out-of-range values
 * (never produced by the broker) go to the last slot. */
static inline void cw_mon_count(uint64_t *a, int status)
{
    a[status >= 0 && status < CW_MON_STATUSES ? status : CW_MON_STATUSES - 1]++;
}

/* One forwarded message. Kept small (about 220 bytes): the router writes
 * one per Send, and the ring should stay in cache. */
typedef struct {
    uint64_t ts_us;                               /* broker receipt time */
    char from[CW_NAME_MAX_HARD + 1];
    char to[CW_MON_TO_BYTES];                     /* the first recipients' names, each
                                                     ended by a NUL, then an empty one */
    uint32_t n_to;                                /* how many recipients there were */
    uint32_t delivered;                           /* DELIVERED / ACCEPTED recipients */
    uint32_t size;                                /* text bytes */
    bool broadcast, durable;
} cw_mon_fwd_t;

typedef struct {
    cw_mon_fwd_t e[CW_MON_RING];
    char (*text)[CW_MON_TEXT_MAX + 1]; /* CW_MON_RING texts (text[i] for e[i]) with
                                          --monitor-text, else NULL; owned */
    uint64_t next;    /* entries ever recorded; the newest is (next - 1) % CW_MON_RING */
} cw_mon_ring_t;

/* A new ring; keep_text allocates room for texts. NULL if out of memory. */
cw_mon_ring_t *cw_mon_ring_new(bool keep_text);
/* Frees it; NULLs *p; safe on NULL and twice. */
void cw_mon_ring_destroy(cw_mon_ring_t **p);
/* The recipient names kept in e (at most max) into names; their count. */
size_t cw_mon_fwd_names(const cw_mon_fwd_t *e, const char **names, size_t max);
/* The text kept for e (an entry of r): "" without --monitor-text. */
const char *cw_mon_ring_text(const cw_mon_ring_t *r, const cw_mon_fwd_t *e);

/* Records a forwarded message (router thread): names[0..n_names) are the
 * first of its n_to distinct recipients (a broadcast may name none);
 * text/len its text (kept only if the ring has room for texts, cut at a
 * character boundary). Can't fail. */
void cw_mon_ring_add(cw_mon_ring_t *r, uint64_t ts_us, const char *from, char *const *names,
                     size_t n_names, size_t n_to, bool broadcast, bool durable,
                     uint32_t delivered, const char *text, size_t len);
/* The i-th newest entry (0 = newest), or NULL past what is kept. */
const cw_mon_fwd_t *cw_mon_ring_at(const cw_mon_ring_t *r, size_t i);

/* A user's queue depth in a snapshot. */
typedef struct {
    char name[CW_NAME_MAX_HARD + 1];
    uint64_t depth;
} cw_mon_queue_t;

/* Everything the metrics endpoint serves; plain data, copied whole. */
typedef struct {
    uint64_t generation;        /* publications before this one + 1; 0: none yet */
    uint64_t uptime_ms;
    uint64_t started_us;        /* wall clock */
    uint32_t sessions, max_sessions, users;
    uint64_t frames_in, frames_out, messages_routed, deliveries, bad_frames, refused, expired;
    cw_mon_counters_t c;
    bool durable;               /* a store is open */
    uint64_t queued_total;      /* durable: entries waiting over all users */
    uint32_t store_pending;     /* durable: store requests not yet answered */
    uint64_t damaged_entries;   /* durable: distinct stored entries found damaged */
    cw_store_actor_stats_t store; /* durable: the store thread's counters */
    size_t n_top;
    cw_mon_queue_t top[CW_MON_TOP_QUEUES]; /* deepest queues, deepest first */
} cw_mon_snap_t;

/* Keeps the n deepest of the queues offered (a bounded insertion; n <=
 * CW_MON_TOP_QUEUES). Depth 0 is never kept. */
void cw_mon_top_offer(cw_mon_queue_t *top, size_t *n_top, size_t cap, const char *name,
                      uint64_t depth);

/* This process's resident and virtual memory sizes in bytes
 * (/proc/self/statm); 0 if unknown. Any thread. */
uint64_t cw_mon_rss_bytes(void);
uint64_t cw_mon_vsize_bytes(void);

typedef struct cw_monitor cw_monitor_t;

/* A new monitor, with zeroed buffers; NULL if out of memory. */
cw_monitor_t *cw_monitor_new(void);
/* Frees it; NULLs *p; safe on NULL and twice. No reader may be inside. */
void cw_monitor_destroy(cw_monitor_t **p);
/* The writer's buffer to fill (writer thread only). Can't fail. */
cw_mon_snap_t *cw_monitor_back(cw_monitor_t *m);
/* Publishes the back buffer (writer thread only); never waits. */
void cw_monitor_publish(cw_monitor_t *m);
/* Copies the newest published snapshot into *out (any thread but the
 * writer's). out->generation is 0 if nothing was published yet. */
void cw_monitor_read(cw_monitor_t *m, cw_mon_snap_t *out);

#endif
