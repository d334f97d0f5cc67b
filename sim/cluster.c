/*  cluster.c: the simulator's own Redis Cluster (see cluster.h).
 *
 *  Main thread only. Invariants: pid > 0 exactly while a redis-server of
 *  ours runs on that node and has not been reaped; stopped only while
 *  pid > 0. Every wait is bounded and polls the state it waits for over
 *  RESP (there is no event to wait on); every RESP call has its own
 *  timeout, so a stopped node makes a call fail, never hang.
 */
#define _GNU_SOURCE
#include "cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cw_util.h"
#include "procs.h"

#define RESP_TIMEOUT_MS 1000   /* one call to one node */
#define RESP_MAX 65536         /* largest reply read (CLUSTER NODES of 24 nodes fits) */
#define POLL_MS 50             /* between two looks at a state being waited for */

typedef struct {
    int port;          /* client port; bus on port + 10000 */
    pid_t pid;         /* running redis-server, or 0 */
    int stopped;       /* SIGSTOPped */
    int starts;        /* how often started */
    char dir[1100];    /* its --dir */
} node_t;

struct sim_cluster {
    char *root;                /* workdir/redis */
    char *server;              /* redis-server */
    char *cli;                 /* redis-cli */
    int primaries, replicas;   /* shape asked for */
    int node_timeout_ms;       /* cluster-node-timeout */
    int n;                     /* primaries * (1 + replicas) */
    node_t nodes[SIM_CLUSTER_MAX_NODES];
    char seeds[SIM_CLUSTER_MAX_NODES * 24];  /* "127.0.0.1:P,..." */
    int reshards;              /* reshard runs started (log names) */
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long) (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* --- RESP ---------------------------------------------------------------- */

/* Waits for events on fd until the monotonic deadline. 1 ready, 0 not. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - cw_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, (int) left);
        if (r > 0)
            return 1;
        if (r < 0 && errno != EINTR)
            return 0;
    }
}

/* Sends one command (argv, argc words) to 127.0.0.1:port and reads the
 * reply. Returns its type byte ('+', '-', ':', '$'; '*' is not read) with
 * the reply's text (a bulk string's contents, a simple string, an error or
 * an integer, NUL-terminated) in buf, or -1 (cannot connect, timeout, a
 * reply too long or malformed). */
static int resp_call(int port, char *buf, size_t size, int argc, const char *const *argv)
{
    int64_t deadline = cw_mono_ms() + RESP_TIMEOUT_MS;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = -1;
    if (connect(fd, (struct sockaddr *) &a, sizeof a) != 0) {
        if (errno != EINPROGRESS || !wait_fd(fd, POLLOUT, deadline))
            goto out;
        int e = 0;
        socklen_t el = sizeof e;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0 || e != 0)
            goto out;
    }
    char req[1024];
    size_t len = (size_t) snprintf(req, sizeof req, "*%d\r\n", argc);
    for (int i = 0; i < argc && len < sizeof req; i++)
        len += (size_t) snprintf(req + len, sizeof req - len, "$%zu\r\n%s\r\n", strlen(argv[i]),
                                 argv[i]);
    if (len >= sizeof req)
        goto out;
    for (size_t off = 0; off < len;) {
        ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
        if (w > 0)
            off += (size_t) w;
        else if (w < 0 && errno != EAGAIN && errno != EINTR)
            goto out;
        else if (!wait_fd(fd, POLLOUT, deadline))
            goto out;
    }
    char *in = malloc(RESP_MAX + 1);
    size_t got = 0;
    if (!in)
        goto out;
    for (;;) {
        char *eol = got ? memmem(in, got, "\r\n", 2) : NULL;
        if (eol) {
            char type = in[0];
            size_t hlen = (size_t) (eol - in);
            if (type == '+' || type == '-' || type == ':') {
                if (hlen - 1 >= size)
                    break;
                memcpy(buf, in + 1, hlen - 1);
                buf[hlen - 1] = '\0';
                rc = type;
                break;
            }
            if (type != '$')
                break;
            long bl = strtol(in + 1, NULL, 10);
            if (bl < 0) {   /* nil */
                if (size)
                    buf[0] = '\0';
                rc = type;
                break;
            }
            if ((size_t) bl >= size || hlen + 2 + (size_t) bl + 2 > RESP_MAX)
                break;
            if (got >= hlen + 2 + (size_t) bl + 2) {
                memcpy(buf, eol + 2, (size_t) bl);
                buf[bl] = '\0';
                rc = type;
                break;
            }
        }
        if (got == RESP_MAX)
            break;
        ssize_t r = recv(fd, in + got, RESP_MAX - got, 0);
        if (r > 0)
            got += (size_t) r;
        else if (r == 0 || (errno != EAGAIN && errno != EINTR))
            break;
        else if (!wait_fd(fd, POLLIN, deadline))
            break;
    }
    free(in);
out:
    close(fd);
    return rc;
}

/* The value of "key:" in an INFO-style text ("key:value\r\n" lines) into
 * out. 1 found, 0 not. */
static int info_field(const char *text, const char *key, char *out, size_t size)
{
    size_t kl = strlen(key);
    for (const char *p = text; p && *p;) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
            size_t vl = strcspn(p + kl + 1, "\r\n");
            if (vl >= size)
                vl = size - 1;
            memcpy(out, p + kl + 1, vl);
            out[vl] = '\0';
            return 1;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return 0;
}

/* --- ports and processes ---------------------------------------------------- */

static int port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = bind(fd, (struct sockaddr *) &a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* A loopback port in SIM_CLUSTER_PORT_MIN..SIM_CLUSTER_PORT_MAX, free now,
 * whose bus port (+10000) is free too, and neither clashing with a node of
 * taken[0..n). Below Linux's ephemeral range (32768 and up) like the bus
 * ports: a port the kernel hands out for binding to 0 can be taken by any
 * process's outgoing connection before redis-server binds it, or between a
 * node's kill and its restart on the same port. *rng: the search's state
 * (xorshift; not the scenario's seed: ports do not change a run). 0 if
 * none was found in a bounded search. */
static int free_port(const node_t *taken, int n, uint64_t *rng)
{
    const int span = SIM_CLUSTER_PORT_MAX - SIM_CLUSTER_PORT_MIN + 1;
    for (int tries = 0; tries < 10000; tries++) {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        int port = SIM_CLUSTER_PORT_MIN + (int) (*rng % (uint64_t) span);
        int dup = 0;
        for (int i = 0; i < n; i++)
            if (taken[i].port == port || taken[i].port + 10000 == port ||
                taken[i].port == port + 10000)
                dup = 1;
        if (!dup && port_bindable(port) && port_bindable(port + 10000))
            return port;
    }
    return 0;
}

sim_cluster_t *sim_cluster_new(const char *workdir, int primaries, int replicas,
                               int node_timeout_ms, const char *redis_server,
                               const char *redis_cli, char *err, size_t err_size)
{
    if (primaries < SIM_CLUSTER_MIN_PRIMARIES || primaries > SIM_CLUSTER_MAX_PRIMARIES ||
        replicas < 0 || replicas > SIM_CLUSTER_MAX_REPLICAS || node_timeout_ms < 100) {
        cw_set_err(err, err_size, "redis_cluster %dx%d: out of range", primaries, replicas);
        return NULL;
    }
    sim_cluster_t *c = calloc(1, sizeof *c);
    if (!c || asprintf(&c->root, "%s/redis", workdir) < 0 ||
        !(c->server = strdup(redis_server)) || !(c->cli = strdup(redis_cli))) {
        sim_cluster_destroy(&c);
        cw_set_err(err, err_size, "out of memory");
        return NULL;
    }
    c->primaries = primaries;
    c->replicas = replicas;
    c->node_timeout_ms = node_timeout_ms;
    c->n = primaries * (1 + replicas);
    size_t off = 0;
    uint64_t rng = (uint64_t) cw_mono_ms() ^ ((uint64_t) getpid() << 32) ^ (uintptr_t) c;
    if (!rng)
        rng = 1;
    for (int i = 0; i < c->n; i++) {
        node_t *nd = &c->nodes[i];
        nd->port = free_port(c->nodes, i, &rng);
        if (!nd->port) {
            cw_set_err(err, err_size, "no free loopback port pair (PORT in %d-%d and PORT+10000) "
                       "for redis-server", SIM_CLUSTER_PORT_MIN, SIM_CLUSTER_PORT_MAX);
            sim_cluster_destroy(&c);
            return NULL;
        }
        snprintf(nd->dir, sizeof nd->dir, "%s/node-%d", c->root, nd->port);
        off += (size_t) snprintf(c->seeds + off, sizeof c->seeds - off, "%s127.0.0.1:%d",
                                 i ? "," : "", nd->port);
    }
    return c;
}

/* SIGTERM, wait, SIGKILL: node i stops. */
static void node_stop(node_t *nd)
{
    if (nd->pid <= 0)
        return;
    if (nd->stopped)
        kill(nd->pid, SIGCONT);
    kill(nd->pid, SIGTERM);
    if (sim_wait(nd->pid, 10000) < 0) {
        kill(nd->pid, SIGKILL);
        sim_wait(nd->pid, 5000);
    }
    nd->pid = 0;
    nd->stopped = 0;
}

void sim_cluster_destroy(sim_cluster_t **p)
{
    if (!p || !*p)
        return;
    sim_cluster_t *c = *p;
    /* SIGTERM to all first, so that they shut down side by side. */
    for (int i = 0; i < c->n; i++)
        if (c->nodes[i].pid > 0) {
            if (c->nodes[i].stopped)
                kill(c->nodes[i].pid, SIGCONT);
            kill(c->nodes[i].pid, SIGTERM);
            c->nodes[i].stopped = 0;
        }
    for (int i = 0; i < c->n; i++)
        node_stop(&c->nodes[i]);
    free(c->root);
    free(c->server);
    free(c->cli);
    free(c);
    *p = NULL;
}

/* Starts node i's redis-server and waits until it answers PING. */
static int node_start(sim_cluster_t *c, int i, int64_t deadline, char *err, size_t err_size)
{
    node_t *nd = &c->nodes[i];
    if (mkdir(c->root, 0700) != 0 && errno != EEXIST) {
        cw_set_err(err, err_size, "cannot make %s: %s", c->root, strerror(errno));
        return -1;
    }
    if (mkdir(nd->dir, 0700) != 0 && errno != EEXIST) {
        cw_set_err(err, err_size, "cannot make %s: %s", nd->dir, strerror(errno));
        return -1;
    }
    char port[16], timeout[16], log[1200];
    snprintf(port, sizeof port, "%d", nd->port);
    snprintf(timeout, sizeof timeout, "%d", c->node_timeout_ms);
    snprintf(log, sizeof log, "%s/redis-%d.log", nd->dir, nd->starts + 1);
    char *argv[] = {c->server, "--port", port, "--bind", "127.0.0.1", "--dir", nd->dir,
                    "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-node-timeout", timeout, "--appendonly", "yes",
                    "--appendfsync", "always", "--maxmemory-policy", "noeviction",
                    "--save", "", "--daemonize", "no", "--protected-mode", "no", NULL};
    pid_t pid = sim_spawn(argv, log, log);
    if (pid < 0) {
        cw_set_err(err, err_size, "cannot start %s: %s", c->server, strerror(errno));
        return -1;
    }
    nd->pid = pid;
    nd->stopped = 0;
    nd->starts++;
    char buf[256];
    for (;;) {
        const char *ping[] = {"PING"};
        if (resp_call(nd->port, buf, sizeof buf, 1, ping) == '+' && strcmp(buf, "PONG") == 0)
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            nd->pid = 0;
            cw_set_err(err, err_size, "redis-server on port %d exited (%s %d) before answering; "
                       "see %s", nd->port, WIFEXITED(st) ? "status" : "signal",
                       WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), log);
            return -1;
        }
        if (cw_mono_ms() >= deadline) {
            cw_set_err(err, err_size, "redis-server on port %d did not answer PING in time; "
                       "see %s", nd->port, log);
            return -1;
        }
        sleep_ms(POLL_MS);
    }
}

int sim_cluster_start(sim_cluster_t *c, int timeout_ms, char *err, size_t err_size)
{
    int64_t deadline = cw_mono_ms() + timeout_ms;
    for (int i = 0; i < c->n; i++)
        if (node_start(c, i, deadline, err, err_size) != 0)
            return -1;
    /* redis-cli --cluster create 127.0.0.1:P ... --cluster-replicas R --cluster-yes */
    char *argv[SIM_CLUSTER_MAX_NODES + 8];
    char addr[SIM_CLUSTER_MAX_NODES][32], reps[8], log[1200];
    int a = 0;
    argv[a++] = c->cli;
    argv[a++] = "--cluster";
    argv[a++] = "create";
    for (int i = 0; i < c->n; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", c->nodes[i].port);
        argv[a++] = addr[i];
    }
    snprintf(reps, sizeof reps, "%d", c->replicas);
    argv[a++] = "--cluster-replicas";
    argv[a++] = reps;
    argv[a++] = "--cluster-yes";
    argv[a] = NULL;
    snprintf(log, sizeof log, "%s/create.log", c->root);
    int left = (int) (deadline - cw_mono_ms());
    char why[512];
    int rc = sim_run(argv, log, log, left > 1000 ? left : 1000, why, sizeof why);
    if (rc != 0) {
        cw_set_err(err, err_size, "redis-cli --cluster create failed (%s); see %s",
                   rc < 0 ? why : "non-zero exit", log);
        return -1;
    }
    left = (int) (deadline - cw_mono_ms());
    return sim_cluster_wait_healthy(c, left > 1000 ? left : 1000, err, err_size);
}

/* 1 if node i (running, not stopped) is healthy; why says what is not. */
static int node_healthy(const sim_cluster_t *c, int i, char *why, size_t size)
{
    const node_t *nd = &c->nodes[i];
    char *buf = malloc(RESP_MAX);
    char v[64];
    int ok = 0;
    const char *info[] = {"CLUSTER", "INFO"};
    const char *repl[] = {"INFO", "replication"};
    if (!buf)
        return 0;
    if (resp_call(nd->port, buf, RESP_MAX, 2, info) != '$' ||
        !info_field(buf, "cluster_state", v, sizeof v))
        snprintf(why, size, "node %d does not answer CLUSTER INFO", nd->port);
    else if (strcmp(v, "ok") != 0)
        snprintf(why, size, "node %d: cluster_state:%s", nd->port, v);
    else if (resp_call(nd->port, buf, RESP_MAX, 2, repl) != '$' ||
             !info_field(buf, "role", v, sizeof v))
        snprintf(why, size, "node %d does not answer INFO replication", nd->port);
    else if (strcmp(v, "slave") == 0 &&
             (!info_field(buf, "master_link_status", v, sizeof v) || strcmp(v, "up") != 0))
        snprintf(why, size, "replica %d: master_link_status:%s", nd->port, v);
    else
        ok = 1;
    free(buf);
    return ok;
}

int sim_cluster_wait_healthy(sim_cluster_t *c, int timeout_ms, char *err, size_t err_size)
{
    int64_t deadline = cw_mono_ms() + timeout_ms;
    char why[256] = "no node is running";
    for (;;) {
        int all = 1, any = 0;
        for (int i = 0; i < c->n && all; i++) {
            if (c->nodes[i].pid <= 0 || c->nodes[i].stopped)
                continue;
            any = 1;
            all = node_healthy(c, i, why, sizeof why);
        }
        if (all && any)
            return 0;
        if (cw_mono_ms() >= deadline) {
            cw_set_err(err, err_size, "the Redis Cluster is not healthy after %d ms: %s",
                       timeout_ms, why);
            return -1;
        }
        sleep_ms(POLL_MS);
    }
}

const char *sim_cluster_seeds(const sim_cluster_t *c)
{
    return c->seeds;
}

int sim_cluster_nodes(const sim_cluster_t *c)
{
    return c->n;
}

int sim_cluster_port(const sim_cluster_t *c, int node)
{
    return node >= 0 && node < c->n ? c->nodes[node].port : 0;
}

typedef struct {
    int node;       /* our index */
    long slot;      /* lowest slot it serves */
    char id[48];    /* cluster node id */
} primary_t;

static int cmp_primary(const void *a, const void *b)
{
    const primary_t *x = a, *y = b;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/* The primaries serving slots as the first answering node sees them,
 * sorted by lowest slot. Returns how many (<= SIM_CLUSTER_MAX_NODES), or
 * -1 with err. */
static int list_primaries(sim_cluster_t *c, primary_t *out, char *err, size_t err_size)
{
    char *buf = malloc(RESP_MAX);
    if (!buf) {
        cw_set_err(err, err_size, "out of memory");
        return -1;
    }
    const char *cmd[] = {"CLUSTER", "NODES"};
    int got = 0;
    for (int i = 0; i < c->n && !got; i++)
        if (c->nodes[i].pid > 0 && !c->nodes[i].stopped &&
            resp_call(c->nodes[i].port, buf, RESP_MAX, 2, cmd) == '$')
            got = 1;
    if (!got) {
        free(buf);
        cw_set_err(err, err_size, "no Redis node answers CLUSTER NODES");
        return -1;
    }
    /* "<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>..." */
    int n = 0;
    char *save = NULL;
    for (char *line = strtok_r(buf, "\n", &save); line && n < SIM_CLUSTER_MAX_NODES;
         line = strtok_r(NULL, "\n", &save)) {
        char *f[9] = {0}, *s2 = NULL;
        int k = 0;
        /* Nine fields, the ninth the first slot token; nothing read past
         * it here (the loop below goes on from there). */
        for (char *t = strtok_r(line, " \r", &s2); t;
             t = k < 9 ? strtok_r(NULL, " \r", &s2) : NULL)
            f[k++] = t;
        if (k < 9 || !strstr(f[2], "master") || strstr(f[2], "fail"))
            continue;
        const char *colon = strchr(f[1], ':');
        int port = colon ? atoi(colon + 1) : 0;
        long lowest = -1;
        for (char *t = f[8]; t; t = strtok_r(NULL, " \r", &s2)) {
            if (t[0] == '[')
                continue;   /* a slot being migrated or imported */
            long sl = strtol(t, NULL, 10);
            if (lowest < 0 || sl < lowest)
                lowest = sl;
        }
        int node = -1;
        for (int i = 0; i < c->n; i++)
            if (c->nodes[i].port == port)
                node = i;
        if (node < 0 || lowest < 0)
            continue;
        out[n].node = node;
        out[n].slot = lowest;
        snprintf(out[n].id, sizeof out[n].id, "%.40s", f[0]);
        n++;
    }
    free(buf);
    qsort(out, (size_t) n, sizeof *out, cmp_primary);
    return n;
}

/* list_primaries, when at least `need` primaries serve slots: how many, or
 * -1 with err (the cluster's answer, or "<what> (the cluster has N
 * primaries serving slots)"). */
static int primaries_at_least(sim_cluster_t *c, primary_t *out, int need, const char *what,
                              char *err, size_t err_size)
{
    int n = list_primaries(c, out, err, err_size);
    if (n >= 0 && n < need) {
        cw_set_err(err, err_size, "%s (the cluster has %d primaries serving slots)", what, n);
        return -1;
    }
    return n;
}

int sim_cluster_primary(sim_cluster_t *c, int k, char *err, size_t err_size)
{
    primary_t p[SIM_CLUSTER_MAX_NODES];
    char what[64];
    snprintf(what, sizeof what, "there is no primary %d", k);
    if (primaries_at_least(c, p, k < 1 ? SIM_CLUSTER_MAX_NODES + 1 : k, what, err, err_size) < 0)
        return -1;
    return p[k - 1].node;
}

int sim_cluster_kill(sim_cluster_t *c, int node)
{
    if (node < 0 || node >= c->n || c->nodes[node].pid <= 0)
        return -1;
    kill(c->nodes[node].pid, SIGKILL);
    sim_wait(c->nodes[node].pid, 10000);
    c->nodes[node].pid = 0;
    c->nodes[node].stopped = 0;
    return 0;
}

int sim_cluster_restart(sim_cluster_t *c, int node, int timeout_ms, char *err, size_t err_size)
{
    if (node < 0 || node >= c->n) {
        cw_set_err(err, err_size, "no Redis node %d", node);
        return -1;
    }
    if (c->nodes[node].pid > 0) {
        cw_set_err(err, err_size, "redis-server on port %d is running", c->nodes[node].port);
        return -1;
    }
    return node_start(c, node, cw_mono_ms() + timeout_ms, err, err_size);
}

int sim_cluster_stop(sim_cluster_t *c, int node)
{
    if (node < 0 || node >= c->n || c->nodes[node].pid <= 0)
        return -1;
    kill(c->nodes[node].pid, SIGSTOP);
    c->nodes[node].stopped = 1;
    return 0;
}

int sim_cluster_cont(sim_cluster_t *c, int node)
{
    if (node < 0 || node >= c->n || c->nodes[node].pid <= 0)
        return -1;
    kill(c->nodes[node].pid, SIGCONT);
    c->nodes[node].stopped = 0;
    return 0;
}

long sim_cluster_kill_pubsub(sim_cluster_t *c, char *err, size_t err_size)
{
    long total = 0;
    const char *cmd[] = {"CLIENT", "KILL", "TYPE", "pubsub"};
    for (int i = 0; i < c->n; i++) {
        if (c->nodes[i].pid <= 0 || c->nodes[i].stopped)
            continue;
        char buf[128];
        if (resp_call(c->nodes[i].port, buf, sizeof buf, 4, cmd) != ':') {
            cw_set_err(err, err_size, "CLIENT KILL TYPE pubsub failed on node %d",
                       c->nodes[i].port);
            return -1;
        }
        total += strtol(buf, NULL, 10);
    }
    return total;
}

pid_t sim_cluster_reshard(sim_cluster_t *c, int n_slots, char *err, size_t err_size)
{
    primary_t p[SIM_CLUSTER_MAX_NODES];
    if (primaries_at_least(c, p, 2, "reshard: fewer than 2 primaries serve slots", err,
                           err_size) < 0)
        return -1;
    char host[32], slots[16], log[1200];
    snprintf(host, sizeof host, "127.0.0.1:%d", c->nodes[p[0].node].port);
    snprintf(slots, sizeof slots, "%d", n_slots);
    snprintf(log, sizeof log, "%s/reshard-%d.log", c->root, ++c->reshards);
    char *argv[] = {c->cli, "--cluster", "reshard", host, "--cluster-from", p[0].id,
                    "--cluster-to", p[1].id, "--cluster-slots", slots, "--cluster-yes", NULL};
    pid_t pid = sim_spawn(argv, log, log);
    if (pid < 0)
        cw_set_err(err, err_size, "cannot start %s: %s", c->cli, strerror(errno));
    return pid;
}
