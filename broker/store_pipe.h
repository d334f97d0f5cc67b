/*  store_pipe: a store backend's thread and how its two threads hand each
 *  other owned objects over their pipe (store_actor.c for SQLite,
 *  store_redis.c for Redis; shared/STYLE.md "hand over owned objects, not
 *  bytes"). One frame is {magic, pointer}: whoever receives it owns the
 *  object. Either thread, each on its own end of the pipe. Nothing else
 *  (no codec).
 *
 *  Why not zactor: CZMQ 4.2's zactor_destroy sends "$TERM" and then waits
 *  for the thread's signal with zsock_wait, which returns early when a
 *  signal interrupts it (EINTR: SIGTERM during shutdown, SIGHUP, a
 *  profiler's or libFuzzer's SIGALRM). The caller then frees what the
 *  thread still uses (the fuzzer saw a whole store leaked; in the broker it
 *  is a use after free). cw_store_thread_stop joins the thread instead,
 *  which no signal cuts short.
 */
#ifndef CW_STORE_PIPE_H
#define CW_STORE_PIPE_H

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

/* A backend's thread with its PAIR pipe. fn runs on the thread with the
 * thread's end; it must zsock_signal(pipe, 0) once it is ready, first
 * thing, and return after it receives "$TERM" (or when it gives up). */
typedef struct cw_store_thread cw_store_thread_t;
typedef void(cw_store_task_fn)(zsock_t *pipe, void *arg);

/* Starts fn(pipe, arg) and returns once fn has signalled; NULL when no
 * pipe or thread could be made (fn never ran). */
cw_store_thread_t *cw_store_thread_start(cw_store_task_fn *fn, void *arg);

/* Our end of the pipe (poll it, set options on it). */
zsock_t *cw_store_thread_sock(cw_store_thread_t *t);

/* Sends "$TERM" (unless fn has already returned), waits for the thread to
 * end, closes the pipe and frees *p; NULL-safe. When it returns fn has
 * returned, whatever signals arrived meanwhile. */
void cw_store_thread_stop(cw_store_thread_t **p);

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
