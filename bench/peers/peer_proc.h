/*  peer_proc: the server processes of peer_bench — causeway-broker, the
 *  raw-libzmq relay, nats-server and redis-server — started on free
 *  loopback ports, measured through the kernel's per-thread accounting,
 *  traced for fsyncs, and stopped by PID.
 *
 *  Single-threaded: the bench's main thread calls everything here. Every
 *  process is started with posix_spawn, its stdout and stderr going to a
 *  log file in the run's directory, and stopped with SIGTERM (SIGKILL after
 *  a bounded wait). Nothing here ever waits without a deadline.
 */
#ifndef CW_PEER_PROC_H
#define CW_PEER_PROC_H

#include <stdint.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;              /* 0: not running */
    char name[32];          /* what it is, for messages */
    int port;               /* loopback TCP port it serves */
    char log[512];          /* its stdout+stderr */
} peer_proc_t;

/* A free TCP port on 127.0.0.1 (bound, read back, closed: another process
 * may take it before the server binds, so callers retry a failed start).
 * 0 on error. */
int peer_free_port(void);

/* Starts argv[0] (looked up in PATH when it has no slash) with stdout and
 * stderr appended to log, then waits up to timeout_ms until 127.0.0.1:port
 * accepts a TCP connection. 0 when it serves; -1 (message on stderr, the
 * process stopped) when it exited or never accepted. */
int peer_proc_start(peer_proc_t *p, const char *name, char *const argv[], int port,
                    const char *log, int timeout_ms);

/* SIGTERM, up to 5 s for it to exit, then SIGKILL. Safe when not running. */
void peer_proc_stop(peer_proc_t *p);

/* CPU time used so far by every live thread of pid, in nanoseconds, from
 * /proc/PID/task/TID/schedstat (the scheduler's exact run time), falling
 * back to utime+stime of /proc/PID/task/TID/stat (clock ticks). 0 if the
 * process is gone. */
uint64_t peer_proc_cpu_ns(pid_t pid);

/* Number of threads of pid (0 if gone). */
int peer_proc_threads(pid_t pid);

/* Attaches `strace -f` to pid, recording fsync, fdatasync, sync_file_range
 * and msync calls into path; returns strace's pid after every thread of pid
 * is traced (bounded wait), or -1 (strace missing or could not attach). */
pid_t peer_trace_syncs(pid_t pid, const char *path);

/* Detaches the tracer started by peer_trace_syncs and counts the sync calls
 * it recorded (completed calls only). -1 if the file cannot be read. */
long peer_trace_count(pid_t tracer, const char *path);

/* Starts `perf record -e cpu-clock -g` on every thread of pid, writing
 * path; returns perf's pid once it has started (bounded wait), or -1. */
pid_t peer_perf_start(pid_t pid, const char *path);

/* Stops perf (SIGINT, bounded wait) and writes `perf report --stdio` of its
 * data, self time by symbol, to report. 0 or -1. */
int peer_perf_stop(pid_t perf, const char *path, const char *report);

/* The 1-minute load average. */
double peer_load1(void);

#endif
