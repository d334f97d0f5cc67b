/*  strmap: see strmap.h.
 *
 *  Invariants: cap is 0 or a power of two; n * 2 <= cap after every put;
 *  a slot is empty iff its key is NULL.
 */
#include "strmap.h"
#include "cw_status.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *key;      /* owned copy; NULL = empty slot */
    size_t value;
} slot_t;

struct cw_strmap {
    slot_t *slots;  /* cap slots */
    size_t cap;     /* 0 or a power of two */
    size_t n;       /* keys in use */
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
        h ^= *c;
        h *= 1099511628211ull;
    }
    return h;
}

cw_strmap_t *cw_strmap_new(void)
{
    return calloc(1, sizeof(cw_strmap_t));
}

void cw_strmap_destroy(cw_strmap_t **p)
{
    if (!p || !*p)
        return;
    cw_strmap_t *m = *p;
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    free(m);
    *p = NULL;
}

/* The slot holding key, or the empty slot where it would go. cap > 0. */
static slot_t *probe(slot_t *slots, size_t cap, const char *key)
{
    size_t i = (size_t) hash(key) & (cap - 1);
    while (slots[i].key && strcmp(slots[i].key, key) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

int cw_strmap_get(const cw_strmap_t *m, const char *key, size_t *value)
{
    if (!m->cap)
        return 0;
    slot_t *s = probe(m->slots, m->cap, key);
    if (!s->key)
        return 0;
    *value = s->value;
    return 1;
}

static int grow(cw_strmap_t *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    slot_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return CW_ERR_NOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key)
            *probe(slots, cap, m->slots[i].key) = m->slots[i];
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return CW_OK;
}

int cw_strmap_put(cw_strmap_t *m, const char *key, size_t value)
{
    if ((m->n + 1) * 2 > m->cap && grow(m) != CW_OK)
        return CW_ERR_NOMEM;
    slot_t *s = probe(m->slots, m->cap, key);
    if (!s->key) {
        s->key = strdup(key);
        if (!s->key)
            return CW_ERR_NOMEM;
        m->n++;
    }
    s->value = value;
    return CW_OK;
}

size_t cw_strmap_size(const cw_strmap_t *m) { return m->n; }
