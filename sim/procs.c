/*  procs.c: spawning and supervising child processes (see procs.h).
 *
 *  Main thread only. The broker's stdout (its `listening ENDPOINT` line)
 *  and stderr go to files in the work directory, one pair per start
 *  (broker-N.out, broker-N.log), so that a failed run can be read after.
 *  Invariant: pid > 0 exactly while a broker process of ours exists and has
 *  not been reaped; paused only while pid > 0.
 */
#define _GNU_SOURCE
#include "procs.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cw_util.h"

#define WRAPPER_MAX_ARGS 32

struct sim_broker {
    char *wrapper;      /* CW_BROKER_WRAPPER copy, cut into words in place; NULL: none */
    char *wrap_argv[WRAPPER_MAX_ARGS];  /* its words, NULL-terminated */
    char *extra;        /* words put after the broker's own arguments (broker_args), cut in place */
    char *extra_argv[WRAPPER_MAX_ARGS];  /* its words, NULL-terminated */
    char *store;        /* --store URL, or NULL: --data workdir/data */
    char *bin;          /* causeway-broker */
    char *workdir;      /* logs and data/ live here */
    int heartbeat_ms;   /* --heartbeat-ms */
    int liveness;       /* --liveness */
    pid_t pid;          /* running broker, or 0 */
    int paused;         /* SIGSTOPped */
    int starts;         /* successful starts so far */
    int port;           /* bound port after the first start; 0 before */
    char endpoint[64];  /* tcp://127.0.0.1:PORT, "" before the first start */
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

pid_t sim_spawn(char *const argv[], const char *out_path, const char *err_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    /* Child: async-signal-safe calls only until exec. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    int in = open("/dev/null", O_RDONLY);
    if (in >= 0)
        dup2(in, 0);
    if (out_path) {
        int fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            _exit(127);
        dup2(fd, 1);
    }
    if (err_path) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0)
            _exit(127);
        dup2(fd, 2);
    }
    /* Signals blocked or ignored by us would be inherited. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    execvp(argv[0], argv);
    _exit(127);
}

int sim_wait(pid_t pid, int timeout_ms)
{
    int64_t end = cw_mono_ms() + timeout_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        if (r < 0 && errno != EINTR)
            return 0;   /* not our child (any more): treat as gone */
        if (cw_mono_ms() >= end)
            return -1;
        sleep_ms(5);
    }
}

int sim_run(char *const argv[], const char *out_path, const char *err_path, int timeout_ms,
            char *err, size_t err_size)
{
    pid_t pid = sim_spawn(argv, out_path, err_path);
    if (pid < 0) {
        cw_set_err(err, err_size, "cannot start %s: %s", argv[0], strerror(errno));
        return -1;
    }
    int st = sim_wait(pid, timeout_ms);
    if (st < 0) {
        kill(pid, SIGKILL);
        sim_wait(pid, 5000);
        cw_set_err(err, err_size, "%s did not finish within %d ms", argv[0], timeout_ms);
        return -1;
    }
    if (WIFEXITED(st)) {
        if (WEXITSTATUS(st) == 127)
            cw_set_err(err, err_size, "cannot run %s", argv[0]);
        return WEXITSTATUS(st);
    }
    cw_set_err(err, err_size, "%s died of signal %d", argv[0], WTERMSIG(st));
    return -1;
}

sim_broker_t *sim_broker_new(const char *bin, const char *workdir, int heartbeat_ms,
                             int liveness, const char *wrapper)
{
    sim_broker_t *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    if (wrapper && *wrapper) {
        if (!(b->wrapper = strdup(wrapper))) {
            free(b);
            return NULL;
        }
        size_t n = 0;
        char *save = NULL;
        for (char *w = strtok_r(b->wrapper, " \t", &save); w && n < WRAPPER_MAX_ARGS - 1;
             w = strtok_r(NULL, " \t", &save))
            b->wrap_argv[n++] = w;
    }
    b->bin = strdup(bin);
    b->workdir = strdup(workdir);
    b->heartbeat_ms = heartbeat_ms;
    b->liveness = liveness;
    if (!b->bin || !b->workdir) {
        sim_broker_destroy(&b);
        return NULL;
    }
    return b;
}

void sim_broker_destroy(sim_broker_t **p)
{
    if (!p || !*p)
        return;
    sim_broker_t *b = *p;
    if (b->pid > 0)
        sim_broker_stop(b, 5000);
    free(b->wrapper);
    free(b->extra);
    free(b->store);
    free(b->bin);
    free(b->workdir);
    free(b);
    *p = NULL;
}

int sim_broker_set_store(sim_broker_t *b, const char *store_url, const char *extra)
{
    free(b->store);
    free(b->extra);
    b->store = b->extra = NULL;
    memset(b->extra_argv, 0, sizeof b->extra_argv);
    if (store_url && !(b->store = strdup(store_url)))
        return -1;
    if (extra && *extra) {
        if (!(b->extra = strdup(extra)))
            return -1;
        size_t n = 0;
        char *save = NULL;
        for (char *w = strtok_r(b->extra, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
            if (n == WRAPPER_MAX_ARGS - 1) {
                errno = E2BIG;
                return -1;
            }
            b->extra_argv[n++] = w;
        }
    }
    return 0;
}

/* Reads "listening ENDPOINT" from path into b->endpoint. 1 when found. */
static int read_listening(sim_broker_t *b, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[256];
    int found = 0;
    if (fgets(line, sizeof line, f) && strchr(line, '\n') &&
        strncmp(line, "listening ", 10) == 0) {
        line[strcspn(line, "\r\n")] = '\0';
        const char *colon = strrchr(line, ':');
        int port = colon ? atoi(colon + 1) : 0;
        if (port > 0 && port < 65536) {
            b->port = port;
            snprintf(b->endpoint, sizeof b->endpoint, "tcp://127.0.0.1:%d", port);
            found = 1;
        }
    }
    fclose(f);
    return found;
}

/* One start attempt. 0 ok, 1 exited early (bind failed?), -1 hard failure. */
static int start_once(sim_broker_t *b, int timeout_ms, char *err, size_t err_size)
{
    char bind[64], hb[16], live[16], data[4096], out[4096], log[4096];
    if (b->port)
        snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", b->port);
    else
        snprintf(bind, sizeof bind, "tcp://127.0.0.1:*");
    snprintf(hb, sizeof hb, "%d", b->heartbeat_ms);
    snprintf(live, sizeof live, "%d", b->liveness);
    snprintf(data, sizeof data, "%s/data", b->workdir);
    snprintf(out, sizeof out, "%s/broker-%d.out", b->workdir, b->starts + 1);
    snprintf(log, sizeof log, "%s/broker-%d.log", b->workdir, b->starts + 1);
    char *args[] = {b->bin, "--bind", bind, b->store ? "--store" : "--data",
                    b->store ? b->store : data, "--heartbeat-ms", hb,
                    "--liveness", live, "--log-level", "warn"};
    char *argv[2 * WRAPPER_MAX_ARGS + sizeof args / sizeof *args + 1];
    size_t n = 0;
    for (size_t i = 0; b->wrap_argv[i]; i++)
        argv[n++] = b->wrap_argv[i];
    for (size_t i = 0; i < sizeof args / sizeof *args; i++)
        argv[n++] = args[i];
    for (size_t i = 0; b->extra_argv[i]; i++)
        argv[n++] = b->extra_argv[i];
    argv[n] = NULL;
    pid_t pid = sim_spawn(argv, out, log);
    if (pid < 0) {
        cw_set_err(err, err_size, "cannot start %s: %s", b->bin, strerror(errno));
        return -1;
    }
    int64_t end = cw_mono_ms() + timeout_ms;
    for (;;) {
        if (read_listening(b, out)) {
            b->pid = pid;
            b->paused = 0;
            b->starts++;
            return 0;
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            cw_set_err(err, err_size, "the broker exited (%s %d) before listening; see %s",
                       WIFEXITED(st) ? "status" : "signal",
                       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), log);
            return WIFEXITED(st) && WEXITSTATUS(st) == 1 ? 1 : -1;
        }
        if (cw_mono_ms() >= end) {
            kill(pid, SIGKILL);
            sim_wait(pid, 5000);
            cw_set_err(err, err_size, "the broker printed no 'listening' line within %d ms; "
                       "see %s", timeout_ms, log);
            return -1;
        }
        sleep_ms(5);
    }
}

int sim_broker_start(sim_broker_t *b, int timeout_ms, char *err, size_t err_size)
{
    if (b->pid > 0) {
        cw_set_err(err, err_size, "the broker is already running");
        return -1;
    }
    /* A restart binds the old port: the kernel may take a moment to let it
     * go; exit status 1 is the broker's start-up error (bind included). */
    for (int attempt = 0; attempt < 20; attempt++) {
        int rc = start_once(b, timeout_ms, err, err_size);
        if (rc <= 0)
            return rc;
        if (!b->port)
            return -1;
        sleep_ms(100);
    }
    return -1;
}

int sim_broker_kill(sim_broker_t *b)
{
    if (b->pid <= 0)
        return -1;
    kill(b->pid, SIGKILL);
    sim_wait(b->pid, 10000);
    b->pid = 0;
    b->paused = 0;
    return 0;
}

int sim_broker_pause(sim_broker_t *b)
{
    if (b->pid <= 0)
        return -1;
    kill(b->pid, SIGSTOP);
    b->paused = 1;
    return 0;
}

int sim_broker_resume(sim_broker_t *b)
{
    if (b->pid <= 0)
        return -1;
    kill(b->pid, SIGCONT);
    b->paused = 0;
    return 0;
}

int sim_broker_stop(sim_broker_t *b, int timeout_ms)
{
    if (b->pid <= 0)
        return -1;
    if (b->paused)
        sim_broker_resume(b);
    kill(b->pid, SIGTERM);
    int st = sim_wait(b->pid, timeout_ms);
    if (st < 0) {
        kill(b->pid, SIGKILL);
        sim_wait(b->pid, 5000);
    }
    b->pid = 0;
    if (st >= 0 && WIFEXITED(st))
        return WEXITSTATUS(st);
    return -1;
}

const char *sim_broker_endpoint(const sim_broker_t *b)
{
    return b->endpoint;
}

int sim_broker_starts(const sim_broker_t *b)
{
    return b->starts;
}

int sim_broker_running(const sim_broker_t *b)
{
    return b->pid > 0;
}
