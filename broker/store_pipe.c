/*  store_pipe: a store backend's thread, and owned objects over its pipe
 *  (store_pipe.h). The object functions have no state; either thread of a
 *  backend calls them, each on its own end.
 */
#include "store_pipe.h"

#include "cw_log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

typedef struct {
    uint64_t magic; /* the backend's: a frame holding one of its objects */
    void *obj;      /* the object handed over */
} wire_t;

int cw_store_pipe_send(void *pipe, uint64_t magic, void *obj, int flags)
{
    wire_t w = {magic, obj};
    for (;;) {
        if (zmq_send(pipe, &w, sizeof w, flags) == (int) sizeof w)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

int cw_store_pipe_recv(void *pipe, uint64_t magic, void **obj, int flags)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    int rc;
    do
        rc = zmq_msg_recv(&m, pipe, flags);
    while (rc < 0 && errno == EINTR && !(flags & ZMQ_DONTWAIT));
    if (rc < 0) {
        int e = errno;
        zmq_msg_close(&m);
        errno = e;
        return -1;
    }
    size_t size = zmq_msg_size(&m);
    const void *d = zmq_msg_data(&m);
    int out = 2;
    if (size == sizeof(wire_t)) {
        wire_t w;
        memcpy(&w, d, sizeof w);
        if (w.magic == magic && w.obj) {
            *obj = w.obj;
            out = 1;
        }
    } else if (size == 5 && memcmp(d, "$TERM", 5) == 0) {
        out = 0;
    }
    zmq_msg_close(&m);
    return out;
}

char *cw_store_put(char **at, const void *s, size_t len)
{
    char *dst = *at;
    if (len)
        memcpy(dst, s, len);
    dst[len] = 0;
    *at += len + 1;
    return dst;
}

/* ------------------------------------------------------------------------ */
/* The thread                                                                */

struct cw_store_thread {
    zsock_t *ours;            /* our end of the pipe */
    zsock_t *theirs;          /* the thread's end: the thread closes it */
    cw_store_task_fn *fn;
    void *arg;
    pthread_t thread;
    _Atomic int finished;     /* fn has returned */
};

static void *shim(void *p)
{
    cw_store_thread_t *t = p;
    t->fn(t->theirs, t->arg);
    zsock_destroy(&t->theirs);
    atomic_store(&t->finished, 1);
    return NULL;
}

cw_store_thread_t *cw_store_thread_start(cw_store_task_fn *fn, void *arg)
{
    cw_store_thread_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->fn = fn;
    t->arg = arg;
    t->theirs = zsys_create_pipe(&t->ours);
    if (!t->theirs) {
        free(t);
        return NULL;
    }
    int rc = pthread_create(&t->thread, NULL, shim, t);
    if (rc != 0) {
        zsock_destroy(&t->theirs);
        zsock_destroy(&t->ours);
        free(t);
        errno = rc;
        return NULL;
    }
    /* fn's first signal. zsock_wait returns -1 when a signal cuts it short
     * (and when the pipe breaks, which fn cannot do before signalling). */
    while (zsock_wait(t->ours) < 0 && errno == EINTR)
        ;
    return t;
}

zsock_t *cw_store_thread_sock(cw_store_thread_t *t)
{
    return t ? t->ours : NULL;
}

void cw_store_thread_stop(cw_store_thread_t **p)
{
    if (!p || !*p)
        return;
    cw_store_thread_t *t = *p;
    void *h = zsock_resolve(t->ours);
    /* The thread may be busy with its last group and its end full: retry
     * until "$TERM" is queued or fn has returned by itself. */
    while (!atomic_load(&t->finished)) {
        if (zmq_send(h, "$TERM", 5, ZMQ_DONTWAIT) == 5)
            break;
        if (errno != EAGAIN && errno != EINTR) {
            CW_ERROR("store thread: cannot send $TERM: %s; waiting for the thread",
                     zmq_strerror(errno));
            break;
        }
        zmq_pollitem_t item = {h, 0, ZMQ_POLLOUT, 0};
        (void) zmq_poll(&item, 1, 100);
    }
    int rc = pthread_join(t->thread, NULL);
    if (rc != 0)
        CW_ERROR("store thread: pthread_join: %s", strerror(rc));
    zsock_destroy(&t->ours);
    free(t);
    *p = NULL;
}
