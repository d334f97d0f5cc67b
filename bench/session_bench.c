/*  session_bench: resident memory the broker spends per idle session.
 *
 *  Starts causeway-broker as a separate process (live mode, no store) on a
 *  free loopback port and reads its VmRSS from /proc/PID/status: once when
 *  it is idle (started, no connection), then with N sessions logged in.
 *  The sessions come from P client processes forked by this program, each
 *  holding N/P DEALER sockets (one TCP connection and one logged-in quiet
 *  session each, so no presence fan-out and no user log in the replies).
 *  The clients stay connected and answer nothing but send a Heartbeat now
 *  and then, like idle clients. The figure is
 *
 *      (RSS with N sessions - RSS idle) / N
 *
 *  which counts everything the broker process holds for a session: its own
 *  session and user records and libzmq's per-connection state (engine,
 *  pipes, buffers). The broker's own Stats reply confirms the session
 *  count. Not a test: it never fails on a figure, only when sessions cannot
 *  be set up.
 *
 *  Raises RLIMIT_NOFILE in-process (the broker inherits it): each client
 *  socket needs two descriptors in its process (TCP and mailbox), the
 *  broker one per connection.
 */
#include "bench_util.h"
#include "cw_log.h"
#include "cw_status.h"
#include "sessions.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#define LOGIN_CHUNK 100       /* logins in flight per client process */
#define HEARTBEAT_MS 60000    /* broker heartbeat; expiry after 3 of them */
#define CLIENT_BEAT_MS 20000  /* how often an idle client sends a Heartbeat */

typedef struct {
    int sessions;             /* N */
    int procs;                /* P */
    int settle_ms;            /* wait before each RSS reading */
    int connect_only;         /* analysis: connections without sessions */
    char broker[PATH_MAX];    /* causeway-broker executable */
} params_t;

/* VmRSS (or another field) of pid in KiB, or -1. */
static long proc_status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, field, fl) && line[fl] == ':') {
            v = atol(line + fl + 1);
            break;
        }
    fclose(f);
    return v;
}

/* Open file descriptors of pid, or -1. */
static long proc_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", (int) pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* -------------------------------------------------------------------------
 * Client process: logs in `count` sessions, reports, idles until go_fd
 * reaches EOF.
 */

static void send_heartbeats(void **socks, int count)
{
    cw_env_t env;
    Causeway__V1__Heartbeat hb;
    cw_env_init(&env, 0);
    causeway__v1__heartbeat__init(&hb);
    env.body_case = CW_BODY(HEARTBEAT);
    env.heartbeat = &hb;
    for (int i = 0; i < count; i++)
        cw_env_send(socks[i], NULL, 0, &env, ZMQ_DONTWAIT);
}

/* Drops whatever the broker pushed (heartbeats). */
static void drain(void **socks, int count)
{
    char buf[512];
    for (int i = 0; i < count; i++)
        while (zmq_recv(socks[i], buf, sizeof buf, ZMQ_DONTWAIT) >= 0)
            ;
}

static int client_main(const char *endpoint, int first, int count, int connect_only,
                       int report_fd, int go_fd)
{
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, count + 16);
    void **socks = calloc((size_t) count, sizeof *socks);
    int ok = 0;
    for (int base = 0; base < count; base += LOGIN_CHUNK) {
        int n = count - base < LOGIN_CHUNK ? count - base : LOGIN_CHUNK;
        for (int i = base; i < base + n; i++) {
            socks[i] = bench_dealer(ctx, endpoint);
            if (!socks[i]) {
                fprintf(stderr, "session_bench: socket %d: %s\n", first + i, zmq_strerror(errno));
                goto report;
            }
            if (connect_only)
                continue;
            char name[32];
            snprintf(name, sizeof name, "idle%06d", first + i);
            cw_env_t env;
            Causeway__V1__Login l;
            cw_env_init(&env, 1);
            causeway__v1__login__init(&l);
            l.name = name;
            l.quiet = 1;
            env.body_case = CW_BODY(LOGIN);
            env.login = &l;
            bench_send_env(socks[i], &env);
        }
        for (int i = base; i < base + n && connect_only; i++)
            ok++;
        for (int i = base; i < base + n && !connect_only; i++) {
            int st = bench_wait_reply(socks[i], 30000);
            if (st != CW_OK) {
                fprintf(stderr, "session_bench: login %d: %s\n", first + i,
                        st < 0 ? "no reply" : cw_status_name(st));
                goto report;
            }
            ok++;
        }
    }
report:
    if (write(report_fd, &ok, sizeof ok) != (ssize_t) sizeof ok)
        ok = -1;
    close(report_fd);
    int64_t next_beat = bench_now_ns() + (int64_t) CLIENT_BEAT_MS * 1000000;
    for (;;) {
        struct pollfd pfd = {go_fd, POLLIN, 0};
        int rc = poll(&pfd, 1, 1000);
        if (rc > 0) {
            char c;
            if (read(go_fd, &c, 1) <= 0)
                break; /* the parent closed it: done */
        }
        drain(socks, ok);
        if (bench_now_ns() >= next_beat) {
            if (!connect_only)
                send_heartbeats(socks, ok);
            next_beat = bench_now_ns() + (int64_t) CLIENT_BEAT_MS * 1000000;
        }
    }
    for (int i = 0; i < count; i++)
        if (socks[i])
            zmq_close(socks[i]);
    free(socks);
    zmq_ctx_term(ctx);
    return 0;
}

/* -------------------------------------------------------------------------
 * Broker process
 */

/* Starts the broker; fills endpoint from its "listening ..." line. Returns
 * its pid or -1. */
static pid_t start_broker(const params_t *p, char *endpoint, size_t len)
{
    int out[2];
    if (pipe(out) != 0)
        return -1;
    char max_sessions[32], heartbeat[32];
    snprintf(max_sessions, sizeof max_sessions, "%d", p->sessions + 16);
    snprintf(heartbeat, sizeof heartbeat, "%d", HEARTBEAT_MS);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(out[1], STDOUT_FILENO);
        close(out[0]);
        close(out[1]);
        execl(p->broker, p->broker, "--bind", "tcp://127.0.0.1:*", "--max-sessions",
              max_sessions, "--heartbeat-ms", heartbeat, "--log-level", "warn", (char *) NULL);
        fprintf(stderr, "session_bench: cannot run %s: %s\n", p->broker, strerror(errno));
        _exit(127);
    }
    close(out[1]);
    char buf[512];
    size_t got = 0;
    int64_t deadline = bench_now_ns() + 10 * (int64_t) 1000000000;
    while (got < sizeof buf - 1 && !memchr(buf, '\n', got) && bench_now_ns() < deadline) {
        struct pollfd pfd = {out[0], POLLIN, 0};
        if (poll(&pfd, 1, 200) <= 0)
            continue;
        ssize_t n = read(out[0], buf + got, sizeof buf - 1 - got);
        if (n <= 0)
            break;
        got += (size_t) n;
    }
    buf[got] = '\0';
    close(out[0]); /* the broker prints nothing else on stdout */
    char *nl = strchr(buf, '\n');
    if (strncmp(buf, "listening ", 10) != 0 || !nl) {
        fprintf(stderr, "session_bench: the broker did not start (%s)\n", buf);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return -1;
    }
    *nl = '\0';
    size_t elen = strlen(buf + 10);
    if (elen >= len)
        elen = len - 1;
    memcpy(endpoint, buf + 10, elen);
    endpoint[elen] = '\0';
    return pid;
}

static void stop_process(pid_t pid, int sig)
{
    kill(pid, sig);
    for (int i = 0; i < 100; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return;
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Asks the broker how many sessions it holds; -1 on failure. */
static long broker_sessions(const char *endpoint)
{
    void *ctx = zmq_ctx_new();
    void *sock = bench_dealer(ctx, endpoint);
    long n = -1;
    if (sock) {
        cw_env_t env;
        Causeway__V1__Stats st;
        cw_env_init(&env, 7);
        causeway__v1__stats__init(&st);
        env.body_case = CW_BODY(STATS);
        env.stats = &st;
        bench_send_env(sock, &env);
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 10000) > 0) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            zmq_msg_recv(&m, sock, 0);
            cw_env_t *e = NULL;
            const char *d;
            if (cw_env_decode(zmq_msg_data(&m), zmq_msg_size(&m), 1u << 30, &e, NULL, &d) ==
                    CW_OK &&
                e->body_case == CW_BODY(REPLY) && e->reply->stats)
                n = (long) e->reply->stats->sessions;
            cw_env_free(&e);
            zmq_msg_close(&m);
        }
        zmq_close(sock);
    }
    zmq_ctx_term(ctx);
    return n;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: session_bench [--sessions N] [--procs P] [--settle-ms MS] [--broker PATH]\n"
            "                     [--connect-only]\n"
            "\n"
            "Broker resident memory per idle logged-in session.\n"
            "  --sessions N   sessions to hold (default 10000)\n"
            "  --procs P      client processes holding them (default 4)\n"
            "  --settle-ms MS wait before each RSS reading (default 1000)\n"
            "  --broker PATH  causeway-broker (default: ../broker/causeway-broker next to\n"
            "                 this program's directory)\n"
            "  --connect-only analysis: connect the sockets but never log in, to tell\n"
            "                 libzmq's per-connection memory from the session's\n");
}

int main(int argc, char **argv)
{
    params_t p = {10000, 4, 1000, 0, ""};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--connect-only")) {
            p.connect_only = 1;
            continue;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        long n = atol(v);
        if (!strcmp(a, "--sessions") && n > 0 && n <= 1000000) p.sessions = (int) n;
        else if (!strcmp(a, "--procs") && n > 0 && n <= 256) p.procs = (int) n;
        else if (!strcmp(a, "--settle-ms") && n >= 0) p.settle_ms = (int) n;
        else if (!strcmp(a, "--broker") && strlen(v) < sizeof p.broker)
            snprintf(p.broker, sizeof p.broker, "%s", v);
        else {
            usage(stderr);
            return 2;
        }
    }
    if (p.procs > p.sessions)
        p.procs = p.sessions;
    if (!p.broker[0]) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) {
            fprintf(stderr, "session_bench: cannot find myself; pass --broker\n");
            return 2;
        }
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        snprintf(p.broker, sizeof p.broker, "%.*s/../broker/causeway-broker",
                 (int) (sizeof p.broker - 32), self);
    }
    zsys_handler_set(NULL);
    signal(SIGPIPE, SIG_IGN);
    cw_log_set_tag("bench");
    cw_log_set_level(CW_LOG_WARN);
    printf("session_bench --sessions %d --procs %d --settle-ms %d%s\n", p.sessions, p.procs,
           p.settle_ms, p.connect_only ? " --connect-only" : "");
    int per = p.sessions / p.procs + 1;
    long need = (p.sessions > 2L * per ? p.sessions : 2L * per) + 256;
    long have = bench_raise_nofile(need);
    if (have < need) {
        fprintf(stderr, "session_bench: need %ld file descriptors, the limit is %ld\n", need, have);
        return 1;
    }

    char endpoint[256];
    pid_t broker = start_broker(&p, endpoint, sizeof endpoint);
    if (broker < 0)
        return 1;
    usleep((useconds_t) p.settle_ms * 1000);
    long rss_idle = proc_status_kib(broker, "VmRSS");
    long fds_idle = proc_fds(broker);

    int go[2], report[2];
    if (pipe(go) != 0 || pipe(report) != 0) {
        stop_process(broker, SIGTERM);
        return 1;
    }
    pid_t *kids = calloc((size_t) p.procs, sizeof *kids);
    int64_t t0 = bench_now_ns();
    int first = 0;
    for (int i = 0; i < p.procs; i++) {
        int count = p.sessions / p.procs + (i < p.sessions % p.procs);
        fflush(stdout);
        kids[i] = fork();
        if (kids[i] == 0) {
            close(go[1]);
            close(report[0]);
            _exit(client_main(endpoint, first, count, p.connect_only, report[1], go[0]));
        }
        first += count;
    }
    close(go[0]);
    close(report[1]);
    long logged_in = 0;
    int reports = 0;
    while (reports < p.procs) {
        int n;
        struct pollfd pfd = {report[0], POLLIN, 0};
        if (poll(&pfd, 1, 300000) <= 0)
            break;
        if (read(report[0], &n, sizeof n) != (ssize_t) sizeof n)
            break;
        logged_in += n;
        reports++;
    }
    double login_secs = (double) (bench_now_ns() - t0) / 1e9;
    /* Without logins nothing says when the broker has accepted every
     * connection (bursts of connects overflow the listen backlog and are
     * retried): wait until it holds one descriptor per connection. */
    for (int64_t until = bench_now_ns() + 60 * (int64_t) 1000000000;
         p.connect_only && proc_fds(broker) < fds_idle + logged_in && bench_now_ns() < until;)
        usleep(100000);
    usleep((useconds_t) p.settle_ms * 1000);
    long rss_loaded = proc_status_kib(broker, "VmRSS");
    long hwm = proc_status_kib(broker, "VmHWM");
    long counted = broker_sessions(endpoint);

    close(go[1]); /* clients exit */
    close(report[0]);
    for (int i = 0; i < p.procs; i++)
        waitpid(kids[i], NULL, 0);
    stop_process(broker, SIGTERM);
    free(kids);

    double per_kib = logged_in > 0 ? (double) (rss_loaded - rss_idle) / (double) logged_in : 0;
    printf("%-34s %12s\n", "broker (separate process)", "KiB");
    printf("%-34s %12ld\n", "VmRSS idle", rss_idle);
    printf("%-34s %12ld\n", "VmRSS with the sessions", rss_loaded);
    printf("%-34s %12ld\n", "VmHWM (peak)", hwm);
    if (p.connect_only)
        printf("connections: %ld opened by the clients (no login), %ld sessions reported by the "
               "broker\n", logged_in, counted);
    else
        printf("sessions: %ld logged in by the clients, %ld reported by the broker; logins took "
               "%.1f s\n", logged_in, counted, login_secs);
    printf("per %s: %.2f KiB = %.0f bytes (target <= 4 KiB); causeway's own records are "
           "%zu bytes (cw_session_t %zu, cwb_user_t %zu) plus table slots\n\n",
           p.connect_only ? "connection" : "session", per_kib,
           per_kib * 1024, sizeof(cw_session_t) + sizeof(cwb_user_t), sizeof(cw_session_t),
           sizeof(cwb_user_t));
    bench_figure("session_rss_idle_kib", (double) rss_idle);
    bench_figure("session_rss_loaded_kib", (double) rss_loaded);
    bench_figure("session_kib_per_session", per_kib);
    if (logged_in != p.sessions || counted != (p.connect_only ? 0 : p.sessions)) {
        fprintf(stderr, "session_bench: %ld of %d sessions logged in\n", logged_in, p.sessions);
        return 1;
    }
    return 0;
}
