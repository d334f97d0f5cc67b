/*  outq: how many bytes of bulky replies each connection has not taken yet.
 *
 *  A client that pipelines requests whose replies are large (Who, Login,
 *  Fetch, History, broadcast Send) and never reads them makes the broker
 *  hold those replies in libzmq's queue towards it, up to sndhwm frames
 *  each. outq bounds that by bytes: every reply of at least CW_OUTQ_BULKY
 *  bytes is sent as a zmq message whose free function (called by libzmq,
 *  on its I/O thread, once the bytes have been handed to the kernel or
 *  dropped with the connection) subtracts its size from the connection's
 *  counter. The router asks cw_outq_unread before serving a request that
 *  would produce such a reply and refuses it (FLOODED) over the budget.
 *
 *  Threads: the table is the router's; the counters in its entries are
 *  atomics shared with libzmq's I/O threads. Entries are reference counted
 *  (the table holds one reference, each message in flight one more) and
 *  freed by whoever drops the last one, so a connection that goes away or
 *  a broker that closes its socket never leaves a dangling counter.
 *  Entries whose counter is back at 0 are dropped by cw_outq_sweep.
 */
#ifndef CW_OUTQ_H
#define CW_OUTQ_H

#include <stddef.h>
#include <stdint.h>

#include "cw_envelope.h"

#define CW_OUTQ_BULKY 1024  /* replies from this size up are counted, bytes */

typedef struct cw_outq cw_outq_t;

/* New empty table; NULL if out of memory. */
cw_outq_t *cw_outq_new(void);
/* Drops the table's references (messages in flight keep their entries
 * alive until libzmq frees them); NULLs *p; safe on NULL and twice. */
void cw_outq_destroy(cw_outq_t **p);

/* Bytes of counted replies to routing id `id` still held in the broker. */
uint64_t cw_outq_unread(cw_outq_t *t, const void *id, size_t id_len);

/* Sends env to `id` on the ROUTER socket `sock` with flags (ZMQ_DONTWAIT),
 * counting it against the connection if it is bulky. Returns 0, or -1 with
 * errno set (nothing is counted then). */
int cw_outq_send(cw_outq_t *t, void *sock, const void *id, size_t id_len, const cw_env_t *env,
                 int flags);

/* Forgets connections with nothing unread. Router thread; can't fail. */
void cw_outq_sweep(cw_outq_t *t);

/* Connections currently tracked (for tests). */
size_t cw_outq_size(const cw_outq_t *t);

#endif
