/*  store_pipe: owned objects over a store backend's pipe (store_pipe.h).
 *  No state; either thread of a backend, each on its own end.
 */
#include "store_pipe.h"

#include <errno.h>
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
