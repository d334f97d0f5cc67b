/*  store_pipe: how a store backend's two threads hand each other owned
 *  objects over their zactor pipe (store_actor.c for SQLite, store_redis.c
 *  for Redis; shared/STYLE.md "hand over owned objects, not bytes"). One
 *  frame is {magic, pointer}: whoever receives it owns the object. Either
 *  thread, each on its own end of the pipe. Nothing else (no codec).
 */
#ifndef CW_STORE_PIPE_H
#define CW_STORE_PIPE_H

#include <stddef.h>
#include <stdint.h>

/* Sends obj through pipe (flags: 0 or ZMQ_DONTWAIT), marked with the
 * backend's magic. 0 (the receiver owns obj now), or -1 with errno (the
 * object stays the caller's). */
int cw_store_pipe_send(void *pipe, uint64_t magic, void *obj, int flags);

/* Receives one frame: 1 with *obj set (an object marked with magic: the
 * caller owns it), 0 for "$TERM", 2 for anything else (CZMQ's signal, a
 * stray frame: skip it), -1 with errno when none came. */
int cw_store_pipe_recv(void *pipe, uint64_t magic, void **obj, int flags);

/* Copies len bytes of s plus a NUL to *at and moves *at past them;
 * returns the copy. Can't fail (the caller sized the space). */
char *cw_store_put(char **at, const void *s, size_t len);

#endif
