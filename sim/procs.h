/*  procs.h: child processes of causeway-sim (the broker, clockd runs).
 *
 *  sim_spawn() starts a program with stdout and stderr in files; the child
 *  gets SIGKILL if the simulator dies (PR_SET_PDEATHSIG), so a crashed or
 *  killed simulator leaves no broker behind. sim_broker_t supervises the
 *  one broker of a run: start (first on a free port, later on the same
 *  port and data directory), SIGKILL, SIGSTOP/SIGCONT, SIGTERM at the end.
 *
 *  Threads: only the main thread calls these (PR_SET_PDEATHSIG fires when
 *  the thread that forked exits, so forking from a worker would kill the
 *  child with it). Several brokers of one run (a shared Redis store) are
 *  several sim_broker_t, each with its own work directory.
 */
#ifndef CW_SIM_PROCS_H
#define CW_SIM_PROCS_H

#include <stddef.h>
#include <sys/types.h>

/* Starts argv[0] (a path, or a name looked up in PATH) with stdin /dev/null, stdout in out_path and
 * stderr in err_path (NULL: inherited). Returns the pid, or -1 with errno
 * (fork failed). An exec failure shows as exit status 127. */
pid_t sim_spawn(char *const argv[], const char *out_path, const char *err_path);

/* Waits at most timeout_ms for pid to exit. Returns its wait status (>= 0)
 * or -1 if it is still running. */
int sim_wait(pid_t pid, int timeout_ms);

/* Runs argv to completion (bounded by timeout_ms, then SIGKILL). Returns
 * the exit code, or -1 (could not start, killed, timed out; err says). */
int sim_run(char *const argv[], const char *out_path, const char *err_path, int timeout_ms,
            char *err, size_t err_size);

typedef struct sim_broker sim_broker_t;

/* A broker supervisor; nothing is started yet. bin: causeway-broker;
 * workdir: where its data directory and logs go; wrapper: NULL, or words
 * (split at blanks, no quoting, at most 31) put before the broker's command
 * line, e.g. "valgrind --error-exitcode=99" (CW_BROKER_WRAPPER, as in the
 * e2e tests). NULL on out of memory. */
sim_broker_t *sim_broker_new(const char *bin, const char *workdir, int heartbeat_ms,
                             int liveness, const char *wrapper);
/* The store and extra arguments of every later start: store_url NULL
 * means --data WORKDIR/data (SQLite), else --store store_url; extra: NULL
 * or words (split at blanks, no quoting, at most 31) put after the
 * simulator's own arguments (a scenario's broker_args, --broker-args).
 * 0, or -1 (out of memory, E2BIG: too many words). */
int sim_broker_set_store(sim_broker_t *b, const char *store_url, const char *extra);
/* SIGTERM (SIGKILL after timeout) if still running, frees; NULLs *p. */
void sim_broker_destroy(sim_broker_t **p);

/* Starts the broker (again) and waits at most timeout_ms for its
 * `listening` line. The first start binds a free port; later starts bind
 * the same one (a few tries, in case it is still being released). 0 on
 * success, -1 with err (its log is in workdir/broker-N.log). */
int sim_broker_start(sim_broker_t *b, int timeout_ms, char *err, size_t err_size);
/* SIGKILL and reap. 0, or -1 if it was not running. */
int sim_broker_kill(sim_broker_t *b);
/* SIGSTOP / SIGCONT. 0, or -1 if it was not running. */
int sim_broker_pause(sim_broker_t *b);
int sim_broker_resume(sim_broker_t *b);
/* SIGTERM (after SIGCONT if paused), wait at most timeout_ms, then SIGKILL.
 * Returns its exit code (0 = clean shutdown), or -1 if it had to be
 * killed or died of a signal. */
int sim_broker_stop(sim_broker_t *b, int timeout_ms);

/* "tcp://127.0.0.1:PORT" once started; "" before. */
const char *sim_broker_endpoint(const sim_broker_t *b);
/* How often it was started. */
int sim_broker_starts(const sim_broker_t *b);
/* 1 if a broker process is running (possibly paused). */
int sim_broker_running(const sim_broker_t *b);

#endif
