/*  peer_proc: server processes for peer_bench (see peer_proc.h).
 *
 *  Main thread only. The CPU figures come from the kernel's per-thread
 *  accounting of the server process, so they include every thread the
 *  server runs (libzmq's I/O thread, the store thread, Redis's background
 *  threads, the Go runtime's threads) and nothing of the clients.
 */
#include "peer_proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Starts argv[0] from PATH with stdin, stdout and stderr on /dev/null.
 * Its pid, or -1. */
static pid_t spawn_quiet(char *const argv[])
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc == 0 ? pid : -1;
}

/* Sends sig, waits up to ms for the process to exit, then SIGKILLs it.
 * 0 when it exited in time, -1 when it had to be killed. */
static int stop_wait(pid_t pid, int sig, int ms)
{
    int status;
    kill(pid, sig);
    int64_t deadline = now_ms() + ms;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        nap_ms(5);
    }
    return 0;
}

int peer_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(fd, (struct sockaddr *) &a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *) &a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int port_accepts(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *) &a, sizeof a) == 0;
    close(fd);
    return ok;
}

int peer_proc_start(peer_proc_t *p, const char *name, char *const argv[], int port,
                    const char *log, int timeout_ms)
{
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    snprintf(p->log, sizeof p->log, "%s", log);
    p->port = port;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    int rc = posix_spawnp(&p->pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "peer_bench: cannot start %s (%s): %s\n", name, argv[0], strerror(rc));
        p->pid = 0;
        return -1;
    }
    int64_t deadline = now_ms() + timeout_ms;
    while (now_ms() < deadline) {
        int status;
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            fprintf(stderr, "peer_bench: %s exited at start-up (see %s)\n", name, log);
            p->pid = 0;
            return -1;
        }
        if (port_accepts(port))
            return 0;
        nap_ms(5);
    }
    fprintf(stderr, "peer_bench: %s did not accept connections on port %d within %d ms (see %s)\n",
            name, port, timeout_ms, log);
    peer_proc_stop(p);
    return -1;
}

void peer_proc_stop(peer_proc_t *p)
{
    if (p->pid <= 0)
        return;
    if (stop_wait(p->pid, SIGTERM, 5000) != 0)
        fprintf(stderr, "peer_bench: %s ignored SIGTERM for 5 s; killed\n", p->name);
    p->pid = 0;
}

/* Reads a small /proc file into buf (NUL-terminated). Bytes read or -1. */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

/* utime+stime of one task in ns, from its stat line (fields 14 and 15,
 * counted after the parenthesised command name, which may hold spaces). */
static uint64_t stat_cpu_ns(const char *path)
{
    char buf[1024];
    if (read_small(path, buf, sizeof buf) < 0)
        return 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return 0;
    unsigned long long ut = 0, st = 0;
    /* after ") ": state ppid pgrp session tty tpgid flags minflt cminflt
     * majflt cmajflt utime stime */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return 0;
    long hz = sysconf(_SC_CLK_TCK);
    return (ut + st) * (1000000000ULL / (uint64_t) (hz > 0 ? hz : 100));
}

uint64_t peer_proc_cpu_ns(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int) pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[384], buf[256];
        snprintf(path, sizeof path, "%s/%s/schedstat", dir, e->d_name);
        unsigned long long run = 0;
        if (read_small(path, buf, sizeof buf) > 0 && sscanf(buf, "%llu", &run) == 1) {
            total += run;
        } else {
            snprintf(path, sizeof path, "%s/%s/stat", dir, e->d_name);
            total += stat_cpu_ns(path);
        }
    }
    closedir(d);
    return total;
}

int peer_proc_threads(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int) pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* True when every thread of pid has a tracer. */
static int all_traced(pid_t pid)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/task", (int) pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int ok = 1, seen = 0;
    struct dirent *e;
    while (ok && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        seen++;
        char path[384], buf[4096];
        snprintf(path, sizeof path, "%s/%s/status", dir, e->d_name);
        if (read_small(path, buf, sizeof buf) < 0)
            continue; /* the thread just ended */
        const char *t = strstr(buf, "TracerPid:");
        ok = t && atoi(t + 10) != 0;
    }
    closedir(d);
    return ok && seen > 0;
}

pid_t peer_trace_syncs(pid_t pid, const char *path)
{
    char spid[16];
    snprintf(spid, sizeof spid, "%d", (int) pid);
    char *argv[] = {"strace", "-f", "-qq", "-e", "trace=fsync,fdatasync,sync_file_range,msync",
                    "-o", (char *) path, "-p", spid, NULL};
    pid_t tracer = spawn_quiet(argv);
    if (tracer < 0)
        return -1;
    int64_t deadline = now_ms() + 5000;
    while (now_ms() < deadline) {
        int status;
        if (waitpid(tracer, &status, WNOHANG) == tracer)
            return -1; /* strace could not attach */
        if (all_traced(pid))
            return tracer;
        nap_ms(5);
    }
    kill(tracer, SIGKILL);
    waitpid(tracer, NULL, 0);
    return -1;
}

long peer_trace_count(pid_t tracer, const char *path)
{
    stop_wait(tracer, SIGINT, 5000); /* strace detaches and flushes its output */
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long n = 0;
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        /* "PID fsync(5) = 0", or an interrupted call resumed on another
         * line ("<... fsync resumed>) = 0"); count completed calls once. */
        if (strstr(line, " unfinished ...>"))
            continue;
        if (strstr(line, "fsync") || strstr(line, "fdatasync") || strstr(line, "sync_file_range") ||
            strstr(line, "msync"))
            n++;
    }
    fclose(f);
    return n;
}

pid_t peer_perf_start(pid_t pid, const char *path)
{
    char spid[16];
    snprintf(spid, sizeof spid, "%d", (int) pid);
    char *argv[] = {"perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-p", spid,
                    "-o", (char *) path, NULL};
    pid_t perf = spawn_quiet(argv);
    if (perf < 0)
        return -1;
    /* perf writes its header once the events are open */
    int64_t deadline = now_ms() + 5000;
    struct stat st;
    while (now_ms() < deadline) {
        int status;
        if (waitpid(perf, &status, WNOHANG) == perf)
            return -1;
        if (stat(path, &st) == 0 && st.st_size > 0)
            return perf;
        nap_ms(5);
    }
    kill(perf, SIGKILL);
    waitpid(perf, NULL, 0);
    return -1;
}

int peer_perf_stop(pid_t perf, const char *path, const char *report)
{
    if (stop_wait(perf, SIGINT, 10000) != 0)
        return -1;
    /* first by library (where the time goes), then by symbol */
    char cmd[3 * 1024];
    snprintf(cmd, sizeof cmd,
             "{ perf report -i '%s' --stdio --no-children --sort dso --percent-limit 0.5 -g none &&"
             "  perf report -i '%s' --stdio --no-children --sort dso,symbol --percent-limit 0.8 "
             "-g none; } 2>/dev/null | grep -v '^#' | grep -v '^$' > '%s'", path, path, report);
    return system(cmd) == 0 ? 0 : -1;
}

double peer_load1(void)
{
    char buf[128];
    double l = -1;
    if (read_small("/proc/loadavg", buf, sizeof buf) > 0)
        sscanf(buf, "%lf", &l);
    return l;
}
