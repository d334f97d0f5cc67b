/*  cw_clock: vector clocks keyed by user name.
 *
 *  A clock is a set of (node, counter) entries kept sorted by node (byte
 *  order, strcmp) with no duplicates; an absent node has counter 0. This is
 *  the wire shape of Envelope.clock. Rules (Tanenbaum & van Steen): before a
 *  send, tick your own entry; on delivery, merge (element-wise max) the
 *  message's clock, then tick your own entry.
 *  Not thread-safe: one clock belongs to one thread.
 */
#ifndef CW_CLOCK_H
#define CW_CLOCK_H

#include <stddef.h>
#include <stdint.h>

#include "cw_envelope.h"

typedef struct cw_clock cw_clock_t;

typedef enum {
    CW_CLOCK_EQUAL = 0,
    CW_CLOCK_BEFORE = 1,     /* a happened before b */
    CW_CLOCK_AFTER = 2,      /* b happened before a */
    CW_CLOCK_CONCURRENT = 3,
} cw_clock_order_t;

/* A new empty clock; NULL only if out of memory. */
cw_clock_t *cw_clock_new(void);
/* Frees the clock and NULLs *p; safe on NULL and twice. */
void cw_clock_destroy(cw_clock_t **p);

uint64_t cw_clock_get(const cw_clock_t *c, const char *node);
size_t cw_clock_size(const cw_clock_t *c);

/* Increments node's entry (creating it at 1). CW_OK or CW_ERR_NOMEM (clock
 * unchanged). */
int cw_clock_tick(cw_clock_t *c, const char *node);

/* Element-wise max with a wire clock. The entries need not be sorted.
 * CW_OK or CW_ERR_NOMEM (clock may hold part of the merge: still a valid
 * clock, never smaller than before). */
int cw_clock_merge(cw_clock_t *c, cw_clock_entry_msg_t *const *entries, size_t n);

/* The clock as wire entries, valid until the clock next changes. */
size_t cw_clock_entries(const cw_clock_t *c, cw_clock_entry_msg_t ***entries);

/* Compares two wire clocks (each sorted or not); missing entries are 0. */
cw_clock_order_t cw_clock_compare(cw_clock_entry_msg_t *const *a, size_t na,
                                  cw_clock_entry_msg_t *const *b, size_t nb);

/* True if entries are strictly sorted by node (so no duplicates) and every
 * node is a valid user name (cw_name_check with the hard length limit, so
 * also valid UTF-8): the form a sender must put on the wire. */
int cw_clock_entries_valid(cw_clock_entry_msg_t *const *entries, size_t n);

/* Writes "{alice:2, bob:1}" into buf (truncated with "..." if needed).
 * Returns buf. */
char *cw_clock_format(cw_clock_entry_msg_t *const *entries, size_t n, char *buf, size_t size);

#endif
