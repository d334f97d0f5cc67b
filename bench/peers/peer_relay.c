/*  peer_relay: the raw-libzmq relay of bench_util.h as a process of its own,
 *  so that peer_bench measures it like every other server (its own process,
 *  CPU from the kernel's per-thread accounting).
 *
 *      peer_relay ENDPOINT REPLY_BYTES
 *
 *  Binds ENDPOINT, forwards 'D' frames and answers every frame with
 *  REPLY_BYTES bytes (see bench_util.h), until SIGTERM or SIGINT. Exit 0
 *  after a clean stop, 1 if it cannot start, 2 on a usage error.
 */
#include "bench_util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: peer_relay ENDPOINT REPLY_BYTES\n");
        return 2;
    }
    long reply = strtol(argv[2], NULL, 10);
    if (reply < 1 || reply > 65536) {
        fprintf(stderr, "peer_relay: REPLY_BYTES must be 1..65536\n");
        return 2;
    }
    /* Block the stop signals before any thread starts, then wait for one. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    bench_relay_t r;
    if (bench_relay_start_at(&r, argv[1], (size_t) reply, 10000000) != 0)
        return 1;
    printf("listening %s\n", r.endpoint);
    fflush(stdout);
    int sig;
    sigwait(&set, &sig);
    bench_relay_stop(&r);
    return 0;
}
