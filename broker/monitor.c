/*  monitor: see monitor.h. The ring and the top-queues selection run on
 *  the router thread; the triple buffer is shared by the router (writer)
 *  and the readers (the metrics HTTP thread). */
#include "monitor.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FRESH 4u   /* in `middle`: its buffer was published since the last read */

struct cw_monitor {
    cw_mon_snap_t buf[3];       /* the three buffers */
    unsigned back;              /* writer's buffer (writer thread only) */
    _Atomic unsigned middle;    /* index of the handed-over buffer | FRESH */
    unsigned front;             /* readers' buffer (under rmu) */
    uint64_t generation;        /* writer's publication count */
    pthread_mutex_t rmu;        /* serialises readers; never taken by the writer */
};

cw_monitor_t *cw_monitor_new(void)
{
    cw_monitor_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->back = 0;
    atomic_init(&m->middle, 1u);
    m->front = 2;
    pthread_mutex_init(&m->rmu, NULL);
    return m;
}

void cw_monitor_destroy(cw_monitor_t **p)
{
    if (!p || !*p)
        return;
    pthread_mutex_destroy(&(*p)->rmu);
    free(*p);
    *p = NULL;
}

cw_mon_snap_t *cw_monitor_back(cw_monitor_t *m)
{
    return &m->buf[m->back];
}

void cw_monitor_publish(cw_monitor_t *m)
{
    m->buf[m->back].generation = ++m->generation;
    unsigned old = atomic_exchange_explicit(&m->middle, m->back | FRESH, memory_order_acq_rel);
    m->back = old & 3u;
}

void cw_monitor_read(cw_monitor_t *m, cw_mon_snap_t *out)
{
    pthread_mutex_lock(&m->rmu);
    if (atomic_load_explicit(&m->middle, memory_order_acquire) & FRESH) {
        unsigned old = atomic_exchange_explicit(&m->middle, m->front, memory_order_acq_rel);
        m->front = old & 3u;
    }
    memcpy(out, &m->buf[m->front], sizeof *out);
    pthread_mutex_unlock(&m->rmu);
}

/* Reads /proc/self/statm: which = 0 the size, 1 the resident pages. */
static uint64_t statm(int which)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long v[2] = {0, 0};
    if (!f)
        return 0;
    int got = fscanf(f, "%llu %llu", &v[0], &v[1]);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return got == 2 && page > 0 ? v[which] * (uint64_t) page : 0;
}

uint64_t cw_mon_rss_bytes(void)
{
    return statm(1);
}

uint64_t cw_mon_vsize_bytes(void)
{
    return statm(0);
}

void cw_mon_top_offer(cw_mon_queue_t *top, size_t *n_top, size_t cap, const char *name,
                      uint64_t depth)
{
    if (depth == 0 || cap == 0)
        return;
    size_t n = *n_top;
    if (n == cap && top[n - 1].depth >= depth)
        return;
    size_t i = n < cap ? n++ : cap - 1; /* the slot to fill, then bubble up */
    while (i > 0 && top[i - 1].depth < depth) {
        top[i] = top[i - 1];
        i--;
    }
    snprintf(top[i].name, sizeof top[i].name, "%s", name);
    top[i].depth = depth;
    *n_top = n;
}

/* Copies at most max bytes of s (a NUL-terminated, valid UTF-8 string),
 * cut at a character boundary. Returns the bytes copied. */
static size_t copy_cut(char *dst, const char *s, size_t len, size_t max)
{
    size_t n = 0;
    while (n < len) {
        size_t k = cw_utf8_seq_len(s + n);
        if (k == 0 || n + k > max)
            break;
        n += k;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
    return n;
}

cw_mon_ring_t *cw_mon_ring_new(bool keep_text)
{
    cw_mon_ring_t *r = calloc(1, sizeof *r);
    if (r && keep_text && !(r->text = calloc(CW_MON_RING, sizeof *r->text))) {
        free(r);
        return NULL;
    }
    return r;
}

void cw_mon_ring_destroy(cw_mon_ring_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->text);
    free(*p);
    *p = NULL;
}

void cw_mon_ring_add(cw_mon_ring_t *r, uint64_t ts_us, const char *from, char *const *names,
                     size_t n_names, size_t n_to, bool broadcast, bool durable,
                     uint32_t delivered, const char *text, size_t len)
{
    size_t slot = r->next++ % CW_MON_RING;
    cw_mon_fwd_t *e = &r->e[slot];
    e->ts_us = ts_us;
    size_t n = strnlen(from, CW_NAME_MAX_HARD);
    memcpy(e->from, from, n);
    e->from[n] = '\0';
    size_t off = 0;
    for (size_t i = 0; i < n_names && i < CW_MON_RING_TO; i++) {
        n = strnlen(names[i], CW_NAME_MAX_HARD);
        if (off + n + 2 > CW_MON_TO_BYTES)
            break; /* the rest does not fit: n_to still says how many */
        memcpy(e->to + off, names[i], n + 1);
        off += n + 1;
    }
    e->to[off] = '\0';
    e->n_to = (uint32_t) n_to;
    e->delivered = delivered;
    e->size = (uint32_t) len;
    e->broadcast = broadcast;
    e->durable = durable;
    if (r->text)
        copy_cut(r->text[slot], text ? text : "", text ? len : 0, CW_MON_TEXT_MAX);
}

size_t cw_mon_fwd_names(const cw_mon_fwd_t *e, const char **names, size_t max)
{
    size_t k = 0;
    for (const char *p = e->to; *p && k < max; p += strlen(p) + 1)
        names[k++] = p;
    return k;
}

const char *cw_mon_ring_text(const cw_mon_ring_t *r, const cw_mon_fwd_t *e)
{
    return r->text ? r->text[e - r->e] : "";
}

const cw_mon_fwd_t *cw_mon_ring_at(const cw_mon_ring_t *r, size_t i)
{
    if (i >= r->next || i >= CW_MON_RING)
        return NULL;
    return &r->e[(r->next - 1 - i) % CW_MON_RING];
}
