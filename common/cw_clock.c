/*  cw_clock: see cw_clock.h.
 *
 *  Invariant: items[0..n) is strictly sorted by node; ptrs[i] == &items[i]
 *  (the pointer array is what protobuf-c wants for repeated messages).
 */
#include "cw_clock.h"
#include "cw_status.h"
#include "cw_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cw_clock {
    cw_clock_entry_msg_t *items;  /* sorted entries; node strings owned here */
    cw_clock_entry_msg_t **ptrs;  /* ptrs[i] = &items[i], rebuilt on growth */
    size_t n;                     /* entries in use */
    size_t cap;                   /* entries allocated */
};

cw_clock_t *cw_clock_new(void)
{
    return calloc(1, sizeof(cw_clock_t));
}

void cw_clock_destroy(cw_clock_t **p)
{
    if (!p || !*p)
        return;
    cw_clock_t *c = *p;
    for (size_t i = 0; i < c->n; i++)
        free(c->items[i].node);
    free(c->items);
    free(c->ptrs);
    free(c);
    *p = NULL;
}

/* Index of node, or -(insertion point) - 1 if absent. */
static long find(const cw_clock_t *c, const char *node)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(c->items[mid].node, node);
        if (cmp == 0)
            return (long) mid;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long) lo - 1;
}

uint64_t cw_clock_get(const cw_clock_t *c, const char *node)
{
    long i = find(c, node);
    return i >= 0 ? c->items[i].counter : 0;
}

size_t cw_clock_size(const cw_clock_t *c) { return c->n; }

/* Inserts node with counter at the sorted position; returns its index or -1. */
static long insert(cw_clock_t *c, const char *node, uint64_t counter, long at)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        cw_clock_entry_msg_t *items = realloc(c->items, cap * sizeof *items);
        if (!items)
            return -1;
        c->items = items;
        cw_clock_entry_msg_t **ptrs = realloc(c->ptrs, cap * sizeof *ptrs);
        if (!ptrs)
            return -1;
        c->ptrs = ptrs;
        c->cap = cap;
    }
    char *copy = strdup(node);
    if (!copy)
        return -1;
    memmove(&c->items[at + 1], &c->items[at], (c->n - (size_t) at) * sizeof c->items[0]);
    causeway__v1__clock_entry__init(&c->items[at]);
    c->items[at].node = copy;
    c->items[at].counter = counter;
    c->n++;
    for (size_t i = 0; i < c->n; i++)
        c->ptrs[i] = &c->items[i];
    return at;
}

int cw_clock_tick(cw_clock_t *c, const char *node)
{
    long i = find(c, node);
    if (i >= 0) {
        c->items[i].counter++;
        return CW_OK;
    }
    return insert(c, node, 1, -i - 1) >= 0 ? CW_OK : CW_ERR_NOMEM;
}

int cw_clock_merge(cw_clock_t *c, cw_clock_entry_msg_t *const *entries, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const char *node = entries[k]->node;
        if (!node || !*node || entries[k]->counter == 0)
            continue;
        long i = find(c, node);
        if (i >= 0) {
            if (entries[k]->counter > c->items[i].counter)
                c->items[i].counter = entries[k]->counter;
        } else if (insert(c, node, entries[k]->counter, -i - 1) < 0) {
            return CW_ERR_NOMEM;
        }
    }
    return CW_OK;
}

size_t cw_clock_entries(const cw_clock_t *c, cw_clock_entry_msg_t ***entries)
{
    *entries = c->ptrs;
    return c->n;
}

static uint64_t lookup(cw_clock_entry_msg_t *const *e, size_t n, const char *node)
{
    for (size_t i = 0; i < n; i++)
        if (e[i]->node && strcmp(e[i]->node, node) == 0)
            return e[i]->counter;
    return 0;
}

cw_clock_order_t cw_clock_compare(cw_clock_entry_msg_t *const *a, size_t na,
                                  cw_clock_entry_msg_t *const *b, size_t nb)
{
    int a_less = 0, b_less = 0;   /* some entry of a < b's, and vice versa */
    for (size_t i = 0; i < na; i++) {
        uint64_t vb = lookup(b, nb, a[i]->node ? a[i]->node : "");
        if (a[i]->counter < vb) a_less = 1;
        if (a[i]->counter > vb) b_less = 1;
    }
    for (size_t i = 0; i < nb; i++) {
        uint64_t va = lookup(a, na, b[i]->node ? b[i]->node : "");
        if (va < b[i]->counter) a_less = 1;
        if (va > b[i]->counter) b_less = 1;
    }
    if (a_less && b_less) return CW_CLOCK_CONCURRENT;
    if (a_less) return CW_CLOCK_BEFORE;
    if (b_less) return CW_CLOCK_AFTER;
    return CW_CLOCK_EQUAL;
}

int cw_clock_entries_valid(cw_clock_entry_msg_t *const *entries, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!entries[i]->node || cw_name_check(entries[i]->node, CW_NAME_MAX_HARD, NULL) != CW_OK)
            return 0;
        if (i > 0 && strcmp(entries[i - 1]->node, entries[i]->node) >= 0)
            return 0;
    }
    return 1;
}

char *cw_clock_format(cw_clock_entry_msg_t *const *entries, size_t n, char *buf, size_t size)
{
    size_t off = 0;
    int w = snprintf(buf, size, "{");
    off = w > 0 ? (size_t) w : 0;
    for (size_t i = 0; i < n && off < size; i++) {
        w = snprintf(buf + off, size - off, "%s%s:%llu", i ? ", " : "", entries[i]->node,
                     (unsigned long long) entries[i]->counter);
        if (w < 0)
            break;
        off += (size_t) w;
    }
    if (off + 2 <= size) {
        buf[off] = '}';
        buf[off + 1] = '\0';
    } else if (size >= 5) {
        strcpy(buf + size - 5, "...}");
    }
    return buf;
}
