/*  outq: see outq.h.
 *
 *  An entry is keyed by the length-prefixed routing id it holds. A counted
 *  message is one allocation: a header (the entry and the size) followed
 *  by the packed envelope; zmq_msg_init_data hands libzmq the bytes after
 *  the header and free_reply gets the header back from them.
 */
#include "outq.h"
#include "sessions.h"
#include "cw_status.h"

#include <czmq.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef struct {
    _Atomic uint64_t bytes;  /* counted bytes libzmq has not freed yet */
    _Atomic int refs;        /* the table's + one per message in flight */
    uint8_t key[1 + 255];    /* length-prefixed routing id */
} entry_t;

/* Precedes the packed bytes of a counted message. 16 bytes, so the bytes
 * after it keep malloc's alignment. */
typedef struct {
    entry_t *entry;          /* the connection's counter (one reference) */
    uint64_t size;           /* bytes counted */
} header_t;

struct cw_outq {
    zhashx_t *by_id;         /* key -> entry_t* */
};

static void entry_unref(entry_t *e)
{
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        free(e);
}

/* libzmq's free function: any thread. */
static void free_reply(void *data, void *hint)
{
    (void) hint;
    header_t *h = (header_t *) (void *) ((uint8_t *) data - sizeof(header_t));
    atomic_fetch_sub_explicit(&h->entry->bytes, h->size, memory_order_relaxed);
    entry_unref(h->entry);
    free(h);
}

cw_outq_t *cw_outq_new(void)
{
    cw_outq_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->by_id = cw_id_table_new();
    if (!t->by_id) {
        free(t);
        return NULL;
    }
    return t;
}

void cw_outq_destroy(cw_outq_t **p)
{
    if (!p || !*p)
        return;
    cw_outq_t *t = *p;
    for (entry_t *e = zhashx_first(t->by_id); e; e = zhashx_next(t->by_id))
        entry_unref(e);
    zhashx_destroy(&t->by_id);
    free(t);
    *p = NULL;
}

static int make_key(uint8_t *key, const void *id, size_t id_len)
{
    if (id_len == 0 || id_len > 255)
        return -1;
    key[0] = (uint8_t) id_len;
    memcpy(key + 1, id, id_len);
    return 0;
}

uint64_t cw_outq_unread(cw_outq_t *t, const void *id, size_t id_len)
{
    uint8_t key[1 + 255];
    /* The common case, no bulky reply in flight anywhere, costs no hashing. */
    if (!t || zhashx_size(t->by_id) == 0 || make_key(key, id, id_len) != 0)
        return 0;
    entry_t *e = zhashx_lookup(t->by_id, key);
    return e ? atomic_load_explicit(&e->bytes, memory_order_relaxed) : 0;
}

/* The entry for id, created if missing; NULL if out of memory. */
static entry_t *entry_for(cw_outq_t *t, const void *id, size_t id_len)
{
    uint8_t key[1 + 255];
    if (make_key(key, id, id_len) != 0)
        return NULL;
    entry_t *e = zhashx_lookup(t->by_id, key);
    if (e)
        return e;
    e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    memcpy(e->key, key, (size_t) key[0] + 1);
    atomic_init(&e->bytes, 0);
    atomic_init(&e->refs, 1);
    if (zhashx_insert(t->by_id, e->key, e) != 0) {
        free(e);
        return NULL;
    }
    return e;
}

int cw_outq_send(cw_outq_t *t, void *sock, const void *id, size_t id_len, const cw_env_t *env,
                 int flags)
{
    /* Packed once, into a plain message: most replies are small and go as
     * they are; a bulky one is copied into a counted block (a copy of at
     * least CW_OUTQ_BULKY bytes costs less than sizing every reply twice). */
    zmq_msg_t msg;
    if (cw_env_to_msg(env, &msg) != CW_OK) {
        errno = ENOMEM;
        return -1;
    }
    size_t size = zmq_msg_size(&msg);
    entry_t *e = t && size >= CW_OUTQ_BULKY ? entry_for(t, id, id_len) : NULL;
    if (e) {
        header_t *h = malloc(sizeof *h + size);
        if (!h) {
            zmq_msg_close(&msg);
            errno = ENOMEM;
            return -1;
        }
        uint8_t *data = (uint8_t *) (h + 1);
        memcpy(data, zmq_msg_data(&msg), size);
        zmq_msg_close(&msg);
        h->entry = e;
        h->size = size;
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&e->bytes, size, memory_order_relaxed);
        if (zmq_msg_init_data(&msg, data, size, free_reply, NULL) != 0) {
            int err = errno;
            free_reply(data, NULL);
            errno = err;
            return -1;
        }
    }
    if (zmq_send(sock, id, id_len, ZMQ_SNDMORE | (flags & ZMQ_DONTWAIT)) < 0 ||
        zmq_msg_send(&msg, sock, flags) < 0) {
        int err = errno;
        zmq_msg_close(&msg); /* calls free_reply: the count goes back */
        errno = err;
        return -1;
    }
    return 0;
}

void cw_outq_sweep(cw_outq_t *t)
{
    if (!t || zhashx_size(t->by_id) == 0)
        return;
    zlistx_t *keys = zhashx_keys(t->by_id);
    if (!keys)
        return;
    for (const uint8_t *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        entry_t *e = zhashx_lookup(t->by_id, k);
        if (e && atomic_load_explicit(&e->bytes, memory_order_relaxed) == 0) {
            zhashx_delete(t->by_id, k);
            entry_unref(e);
        }
    }
    zlistx_destroy(&keys);
}

size_t cw_outq_size(const cw_outq_t *t)
{
    return t ? zhashx_size(t->by_id) : 0;
}
