/*  bench_util: helpers shared by the benchmark programs in bench/.
 *
 *  Clocks, percentiles, the machine-readable "figure" lines that
 *  scripts/bench collects, an in-process broker on its own thread, the
 *  raw-libzmq relay that serves as the baseline, and small protobuf client
 *  helpers (login, wait for a reply). Not part of any program outside
 *  bench/. Functions are thread-safe unless they say otherwise: every
 *  socket belongs to the thread that uses it.
 *
 *  Figure lines: every number a benchmark wants aggregated across runs is
 *  printed once as
 *
 *      figure <name> <value>
 *
 *  on stdout (name without spaces, value a plain decimal). scripts/bench
 *  runs each program --runs times and prints min/median/max per name. The
 *  human-readable table of each program is printed as well.
 */
#ifndef CW_BENCH_UTIL_H
#define CW_BENCH_UTIL_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.h"
#include "broker_config.h"
#include "cw_envelope.h"

/* Monotonic time in nanoseconds. Can't fail. */
int64_t bench_now_ns(void);

/* Prints "figure <name> <value>" on stdout and flushes. */
void bench_figure(const char *name, double value);

/* CPU time used by the calling thread, in seconds. */
double bench_thread_cpu_s(void);

/* CPU time used by the whole process (every thread), in seconds. */
double bench_process_cpu_s(void);

/* Names the calling thread (shown by top -H and perf). Can't fail. */
void bench_thread_name(const char *name);

/* Sorts v (n values, in place) and returns the value at quantile q (0..1),
 * nearest rank. v must hold at least one value. */
double bench_quantile(double *v, size_t n, double q);

/* A broker core on its own thread, with its own libzmq context (created by
 * cw_broker_new), bound to a free loopback port. */
typedef struct {
    cw_broker_t *broker;            /* owned */
    pthread_t thread;               /* runs cw_broker_run */
    volatile sig_atomic_t stop;     /* set by bench_broker_stop */
    char endpoint[256];             /* bound endpoint */
    double thread_cpu_s;            /* CPU time of the router thread, set when it ends */
} bench_broker_t;

/* Fills cfg with the benchmark defaults: loopback wildcard port, log level
 * warn, sndhwm 1,000,000 (a burst is queued, not FLOODED), no store. */
void bench_broker_config(cw_broker_config_t *cfg);

/* Creates the broker and starts its thread. 0, or -1 with a message on
 * stderr (nothing to stop). */
int bench_broker_start(bench_broker_t *bb, const cw_broker_config_t *cfg);

/* Stops the thread and destroys the broker. Safe after a failed start. */
void bench_broker_stop(bench_broker_t *bb);

/* The raw-libzmq relay, the baseline for live routing: a ROUTER socket on
 * its own thread and its own libzmq context (one I/O thread, like the
 * broker), with the broker's socket options (ROUTER_MANDATORY, DONTWAIT
 * sends, the same send high-water mark). No protobuf, no sessions. Frames:
 *
 *   'R' <slot>            register the sender's routing id in slot (0..255);
 *                         answered with one reply frame
 *   'D' <slot> <payload>  forward this frame, unchanged, to the peer in
 *                         slot, then answer the sender with one reply frame
 *
 * A reply frame is reply_size bytes ('A' then zeros). A forward to an empty
 * or vanished slot is dropped; the sender is still answered. */
typedef struct {
    void *ctx;                      /* the relay's own context, owned */
    pthread_t thread;
    size_t reply_size;              /* bytes per reply frame */
    int sndhwm;                     /* ZMQ_SNDHWM of the ROUTER socket */
    char bind[256];                 /* where to bind ("" = tcp://127.0.0.1:*) */
    char endpoint[256];             /* bound endpoint, valid after start */
    atomic_int state;               /* RELAY_*: starting, running, stopping, failed */
    uint64_t forwarded;             /* frames forwarded (read after stop) */
    double thread_cpu_s;            /* CPU time of the relay thread (read after stop) */
} bench_relay_t;

/* Starts the relay on a free loopback port; 0 or -1 (message on stderr). */
int bench_relay_start(bench_relay_t *r, size_t reply_size, int sndhwm);
/* The same on the given endpoint (peer_bench runs it as its own process). */
int bench_relay_start_at(bench_relay_t *r, const char *bind, size_t reply_size, int sndhwm);
void bench_relay_stop(bench_relay_t *r);

/* A DEALER socket connected to endpoint with the benchmark options
 * (unlimited send and receive high-water marks, linger 0). NULL on error. */
void *bench_dealer(void *ctx, const char *endpoint);

/* Sends one envelope on a DEALER socket. 0 or -1. */
int bench_send_env(void *sock, const cw_env_t *env);

/* Receives frames until a Reply arrives or timeout_ms passes, dropping
 * anything else (pushes). Returns the Reply's status, or -1 on timeout or
 * socket error. */
int bench_wait_reply(void *sock, int timeout_ms);

/* The body's field number in a packed Envelope (30 = Deliver, 32 = Reply),
 * or -1: the first length-delimited field numbered 10 or more. Reads only
 * the frame's first bytes (version, request_id and clock come first), so
 * a client can tell pushes from replies without decoding. */
int bench_body_field(const uint8_t *d, size_t n);

/* Logs in as name (quiet, so no presence pushes and no user log), waits for
 * the reply. Returns its status (CW_OK = 0), or -1 on timeout. */
int bench_login(void *sock, const char *name, int timeout_ms);
/* The same with Login.pull set as given (no pushes of stored messages). */
int bench_login_pull(void *sock, const char *name, int pull, int timeout_ms);

/* Packed size of the live Send a benchmark client sends: one recipient
 * `to`, a text of text_len bytes, a message id of the given length, and
 * request id rid. Used to give the raw baseline the same frame sizes. */
size_t bench_send_size(const char *to, size_t text_len, size_t mid_len, uint64_t rid);

/* Packed size of the broker's Reply to such a Send (status OK, detail
 * "sent", one recipient `to` DELIVERED, request id rid). */
size_t bench_reply_size(const char *to, uint64_t rid);

/* Raises RLIMIT_NOFILE to want (or the hard limit if lower). Returns the
 * new soft limit. */
long bench_raise_nofile(long want);

/* The file system that holds path: its type ("ext4", "tmpfs", ...) and
 * mount point, from /proc/self/mountinfo. 0, or -1 if not found. */
int bench_fs_of(const char *path, char *type, size_t type_len, char *mount, size_t mount_len);

/* A fresh directory prefix-XXXXXX for a benchmark's store, where the user's
 * data would go: under $CW_BENCH_DATA (scripts/bench sets build-bench/
 * bench-data), else the current directory — never /tmp, which may be a
 * tmpfs. A tmpfs or ramfs is refused unless CW_BENCH_ALLOW_TMPFS=1. Prints
 * "data: DIR (file system TYPE, mounted at MOUNT)" on stdout. 0, or -1
 * with a message on stderr. The caller removes the directory. */
int bench_data_dir(const char *prefix, char *out, size_t len);

#endif
