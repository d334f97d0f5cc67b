/*  scaleout_bench: causeway on a Redis Cluster with 1, 2 and 3 brokers,
 *  beside the single SQLite broker, in one interleaved run.
 *
 *  Servers, each its own process on free loopback ports, stopped by PID:
 *    a Redis Cluster of 3 primaries and 3 replicas (redis-server with the
 *    settings of docs/SCALEOUT.md: appendonly yes, appendfsync always,
 *    noeviction), created once with `redis-cli --cluster create` and
 *    emptied (FLUSHALL on every primary) before each measurement;
 *    causeway-broker processes started fresh for every measurement: one
 *    with --data DIR (SQLite), or 1, 2 or 3 with --store redis://… .
 *
 *  Workloads (100-byte bodies unless --size):
 *    accept   --senders publishers, publisher i on broker i mod n, each
 *             keeping --window durable Sends in flight to its own offline
 *             recipient; ACCEPTED/s (every ACCEPTED is fsynced by the
 *             primaries and, on Redis, acknowledged by a replica: WAIT 1)
 *    deliver  the same, each recipient online on the NEXT broker (another
 *             broker whenever n > 1) and acknowledging every 32nd push;
 *             pushes received/s
 *    live     one publisher on broker 0, one subscriber on broker 1 mod n,
 *             --live-window live Sends in flight; delivered/s
 *  For each: CPU per message of the brokers (every thread of every broker
 *  process, from the kernel's accounting) and of the six redis-servers;
 *  on Redis also the commands the primaries executed per message and the
 *  server time per script call (INFO stats / INFO commandstats deltas).
 *  Rounds interleave the configurations (sqlite, redis×1, ×2, ×3 for each
 *  workload, then the next round); figures are min / median / max over
 *  the rounds, ratios taken within a round.
 *
 *  On a 2-core machine the brokers, the six Redis nodes and the clients
 *  share two cores: these figures measure what a message costs, not how
 *  the deployment scales. bench/RESULTS.md extrapolates per primary core.
 *
 *  Not a test: it fails only when a message goes missing or is refused, or
 *  a server does not start.
 */
#include "bench_util.h"
#include "cw_status.h"
#include "peer_link.h"
#include "peer_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

extern char **environ;

#define N_NODES 6
#define MAX_BROKERS 3
#define MAX_ROUNDS 15
#define MAX_SENDERS 32
#define RUN_TIMEOUT_MS 180000
#define JOIN_TIMEOUT_MS 15000
#define CLUSTER_TIMEOUT_MS 60000

typedef enum { W_ACCEPT, W_DELIVER, W_LIVE, N_WORKLOADS } workload_t;
static const char *const workload_name[N_WORKLOADS] = {"accept", "deliver", "live"};

typedef enum { C_SQLITE, C_REDIS1, C_REDIS2, C_REDIS3, N_CONFIGS } config_t;
static const char *const config_name[N_CONFIGS] = {"sqlite", "redis1", "redis2", "redis3"};
static const int config_brokers[N_CONFIGS] = {1, 1, 2, 3};

typedef struct {
    int rounds, senders, window, live_window, size, smoke;
    long messages, live_messages;
    char broker[PATH_MAX];
    char data_dir[1024];      /* short enough for every path built under it */
    char run_dir[1100];
} params_t;

typedef struct {
    int ok;
    double secs, count;
    double broker_cpu_s, redis_cpu_s;
    double commands;      /* Redis commands executed on the primaries */
    double script_calls;  /* EVAL/EVALSHA calls on the primaries */
    double script_usec;   /* their server time */
} result_t;

static result_t results[N_WORKLOADS][N_CONFIGS][MAX_ROUNDS];
static FILE *figures;

/* --- the cluster --------------------------------------------------------- */

typedef struct {
    peer_proc_t node[N_NODES];
    char seeds[N_NODES * 24];   /* "127.0.0.1:P,..." */
} cluster_t;

/* A free port below 55535 whose cluster bus port (+10000) is free too. */
static int cluster_port(void)
{
    for (int tries = 0; tries < 200; tries++) {
        int p = peer_free_port();
        if (p <= 0 || p >= 55535)
            continue;
        char ep[64];
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", p + 10000);
        void *ctx = zmq_ctx_new();
        void *s = zmq_socket(ctx, ZMQ_REP);
        int linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
        int bus_free = zmq_bind(s, ep) == 0;
        zmq_close(s);
        zmq_ctx_term(ctx);
        if (bus_free)
            return p;
    }
    return 0;
}

static redisReply *node_command(int port, const char *cmd)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisReply *r = redisCommand(c, cmd);
    redisFree(c);
    return r;
}

/* INFO text of a node contains `want` (NULL reply: no). */
static int node_info_has(int port, const char *cmd, const char *want)
{
    redisReply *r = node_command(port, cmd);
    int yes = r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) &&
              strstr(r->str, want);
    freeReplyObject(r);
    return yes;
}

/* A number after `key` in an INFO section of a node (0 if absent). */
static double node_info_num(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : 0;
}

static int is_primary(int port) { return node_info_has(port, "INFO replication", "role:master"); }

/* Runs argv to completion within timeout_ms, output appended to log. */
static int run_tool(char *const argv[], const char *log, int timeout_ms)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        fprintf(stderr, "scaleout_bench: cannot run %s: %s\n", argv[0], strerror(rc));
        return -1;
    }
    int64_t deadline = bench_now_ns() + (int64_t) timeout_ms * 1000000;
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (bench_now_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fprintf(stderr, "scaleout_bench: %s did not finish in %d ms (see %s)\n", argv[0],
                    timeout_ms, log);
            return -1;
        }
        struct timespec ts = {0, 20 * 1000000}; /* polling a child's exit */
        nanosleep(&ts, NULL);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "scaleout_bench: %s failed (see %s)\n", argv[0], log);
        return -1;
    }
    return 0;
}

static void cluster_stop(cluster_t *c)
{
    for (int i = 0; i < N_NODES; i++)
        peer_proc_stop(&c->node[i]);
}

/* Until every node says cluster_state:ok and every replica's link is up. */
static int cluster_healthy(const cluster_t *c)
{
    for (int i = 0; i < N_NODES; i++) {
        if (!node_info_has(c->node[i].port, "CLUSTER INFO", "cluster_state:ok"))
            return 0;
        if (!is_primary(c->node[i].port) &&
            !node_info_has(c->node[i].port, "INFO replication", "master_link_status:up"))
            return 0;
    }
    return 1;
}

static int cluster_start(const params_t *p, cluster_t *c)
{
    memset(c, 0, sizeof *c);
    char *create[N_NODES + 8];
    char addr[N_NODES][32];
    int na = 0;
    create[na++] = "redis-cli";
    create[na++] = "--cluster";
    create[na++] = "create";
    for (int i = 0; i < N_NODES; i++) {
        char dir[PATH_MAX], log[PATH_MAX], sport[16];
        snprintf(dir, sizeof dir, "%s/redis-%d", p->data_dir, i);
        mkdir(dir, 0700);
        snprintf(log, sizeof log, "%s/redis-%d.log", p->run_dir, i);
        int started = 0;
        for (int attempt = 0; attempt < 5 && !started; attempt++) {
            int port = cluster_port();
            if (!port)
                break;
            snprintf(sport, sizeof sport, "%d", port);
            char *av[] = {"redis-server", "--port", sport, "--bind", "127.0.0.1",
                          "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                          "--cluster-node-timeout", "5000", "--dir", dir, "--appendonly", "yes",
                          "--appendfsync", "always", "--maxmemory-policy", "noeviction",
                          "--save", "", "--client-output-buffer-limit", "pubsub 0 0 0",
                          "--maxclients", "20000", NULL};
            started = peer_proc_start(&c->node[i], "redis-node", av, port, log, 10000) == 0;
        }
        if (!started) {
            fprintf(stderr, "scaleout_bench: redis-server %d did not start\n", i);
            cluster_stop(c);
            return -1;
        }
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", c->node[i].port);
        create[na++] = addr[i];
        size_t used = strlen(c->seeds);
        snprintf(c->seeds + used, sizeof c->seeds - used, "%s%s", i ? "," : "", addr[i]);
    }
    create[na++] = "--cluster-replicas";
    create[na++] = "1";
    create[na++] = "--cluster-yes";
    create[na] = NULL;
    char log[PATH_MAX];
    snprintf(log, sizeof log, "%s/cluster-create.log", p->run_dir);
    if (run_tool(create, log, CLUSTER_TIMEOUT_MS) != 0) {
        cluster_stop(c);
        return -1;
    }
    int64_t deadline = bench_now_ns() + (int64_t) CLUSTER_TIMEOUT_MS * 1000000;
    while (!cluster_healthy(c)) {
        if (bench_now_ns() > deadline) {
            fprintf(stderr, "scaleout_bench: the cluster did not become healthy\n");
            cluster_stop(c);
            return -1;
        }
        struct timespec ts = {0, 50 * 1000000}; /* polling the cluster's state */
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* Empties the cluster (FLUSHALL on every primary, replicated). */
static int cluster_flush(const cluster_t *c)
{
    for (int i = 0; i < N_NODES; i++) {
        if (!is_primary(c->node[i].port))
            continue;
        redisReply *r = node_command(c->node[i].port, "FLUSHALL");
        int ok = r && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!ok)
            return -1;
    }
    return 0;
}

/* The primaries' command counters so far. */
static void cluster_counters(const cluster_t *c, double *commands, double *calls, double *usec)
{
    *commands = *calls = *usec = 0;
    for (int i = 0; i < N_NODES; i++) {
        if (!is_primary(c->node[i].port))
            continue;
        redisReply *r = node_command(c->node[i].port, "INFO stats");
        if (r && r->type == REDIS_REPLY_STRING)
            *commands += node_info_num(r->str, "total_commands_processed:");
        freeReplyObject(r);
        r = node_command(c->node[i].port, "INFO commandstats");
        if (r && r->type == REDIS_REPLY_STRING) {
            static const char *const keys[] = {"cmdstat_evalsha:calls=", "cmdstat_eval:calls="};
            for (size_t k = 0; k < 2; k++) {
                const char *s = strstr(r->str, keys[k]);
                if (!s)
                    continue;
                *calls += strtod(s + strlen(keys[k]), NULL);
                const char *u = strstr(s, "usec=");
                if (u)
                    *usec += strtod(u + 5, NULL);
            }
        }
        freeReplyObject(r);
    }
}

static uint64_t cluster_cpu_ns(const cluster_t *c)
{
    uint64_t ns = 0;
    for (int i = 0; i < N_NODES; i++)
        ns += peer_proc_cpu_ns(c->node[i].pid);
    return ns;
}

/* --- brokers ----------------------------------------------------------- */

static int run_serial;

static void remove_tree(const char *dir)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "scaleout_bench: could not remove %s\n", dir);
}

/* Starts config c's brokers (sqlite: one with a fresh --data directory). */
static int brokers_start(const params_t *p, config_t c, const cluster_t *cl,
                         peer_proc_t *b, char *sqlite_dir, size_t dir_len)
{
    int n = config_brokers[c];
    sqlite_dir[0] = '\0';
    if (c == C_SQLITE) {
        snprintf(sqlite_dir, dir_len, "%s/sqlite-%d", p->data_dir, ++run_serial);
        if (mkdir(sqlite_dir, 0700) != 0) {
            fprintf(stderr, "scaleout_bench: mkdir %s: %s\n", sqlite_dir, strerror(errno));
            return -1;
        }
    }
    char url[sizeof cl->seeds + 16];
    snprintf(url, sizeof url, "redis://%s", cl->seeds);
    for (int i = 0; i < n; i++) {
        int started = 0;
        for (int attempt = 0; attempt < 5 && !started; attempt++) {
            int port = peer_free_port();
            char bind[64], log[PATH_MAX];
            snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", port);
            snprintf(log, sizeof log, "%s/broker-%s-%d.log", p->run_dir, config_name[c], i);
            char *av[] = {(char *) p->broker,
                          "--bind", bind, "--log-level", "warn",
                          "--sndhwm", "10000000", "--heartbeat-ms", "10000", "--liveness", "30",
                          "--max-sessions", "100000", "--burst", "10000000",
                          "--reply-budget", "1073741824", "--queue-max", "100000000",
                          "--store-max", "0", "--store-inflight", "100000",
                          "--store-inflight-bytes", "1073741824",
                          c == C_SQLITE ? "--data" : "--store", c == C_SQLITE ? sqlite_dir : url,
                          NULL};
            started = peer_proc_start(&b[i], "causeway-broker", av, port, log, 15000) == 0;
        }
        if (!started) {
            fprintf(stderr, "scaleout_bench: broker %d of %s did not start\n", i, config_name[c]);
            for (int k = 0; k < i; k++)
                peer_proc_stop(&b[k]);
            return -1;
        }
    }
    return 0;
}

static uint64_t brokers_cpu_ns(const peer_proc_t *b, int n)
{
    uint64_t ns = 0;
    for (int i = 0; i < n; i++)
        ns += peer_proc_cpu_ns(b[i].pid);
    return ns;
}

/* --- the runs ------------------------------------------------------------ */


/* One measurement of workload w on configuration c. */
static result_t measure(const params_t *p, workload_t w, config_t c, const cluster_t *cl,
                        void *zctx)
{
    result_t res = {0};
    int n = config_brokers[c];
    if (c != C_SQLITE && cluster_flush(cl) != 0) {
        fprintf(stderr, "scaleout_bench: FLUSHALL failed\n");
        return res;
    }
    peer_proc_t b[MAX_BROKERS];
    memset(b, 0, sizeof b);
    char sqlite_dir[PATH_MAX];
    if (brokers_start(p, c, cl, b, sqlite_dir, sizeof sqlite_dir) != 0)
        return res;
    size_t n_pubs = w == W_LIVE ? 1 : (size_t) p->senders;
    size_t n_subs = w == W_ACCEPT ? 0 : n_pubs;
    peer_link_t *links[2 * MAX_SENDERS] = {0};
    long sent[MAX_SENDERS] = {0};
    int ok = 1;
    for (size_t i = 0; i < n_subs && ok; i++) {
        char name[32];
        snprintf(name, sizeof name, "r%zu", i);
        int port = b[(i + 1) % (size_t) n].port;
        peer_link_t *l = links[n_pubs + i] = peer_link_new(PEER_CAUSEWAY, zctx, port);
        ok = l && peer_link_join(l, name, 0, JOIN_TIMEOUT_MS) == 0;
        if (ok && w == W_DELIVER)
            peer_link_ack_every(l, 32);
    }
    for (size_t i = 0; i < n_pubs && ok; i++) {
        char name[32], target[32];
        snprintf(name, sizeof name, "s%zu", i);
        if (w == W_ACCEPT) {
            snprintf(target, sizeof target, "o%zu", i);
            ok = peer_causeway_known_offline(zctx, b[(i + 1) % (size_t) n].port, target,
                                             JOIN_TIMEOUT_MS) == 0;
        } else {
            snprintf(target, sizeof target, "r%zu", i);
        }
        peer_link_t *l = links[i] = ok ? peer_link_new(PEER_CAUSEWAY, zctx, b[i % (size_t) n].port)
                                       : NULL;
        ok = l && peer_link_join(l, name, 0, JOIN_TIMEOUT_MS) == 0 &&
             peer_link_prepare(l, w == W_LIVE ? PUB_LIVE : PUB_DURABLE, target,
                               (size_t) p->size) == 0;
    }
    if (!ok)
        fprintf(stderr, "scaleout_bench: %s %s: a client could not join\n", workload_name[w],
                config_name[c]);
    if (ok) {
        for (size_t i = 0; i < n_pubs + n_subs; i++)
            peer_link_reset(links[i]);
        long total = w == W_LIVE ? p->live_messages : p->messages;
        peer_run_t r = {.pubs = links, .n_pubs = n_pubs, .per_pub = total / (long) n_pubs,
                   .sent = sent, .window = w == W_LIVE ? p->live_window : p->window,
                   .subs = links + n_pubs, .n_subs = n_subs};
        r.want_msgs = (double) r.per_pub * (double) n_subs;
        double cmd0, calls0, usec0, cmd1, calls1, usec1;
        if (c != C_SQLITE)
            cluster_counters(cl, &cmd0, &calls0, &usec0);
        uint64_t bcpu0 = brokers_cpu_ns(b, n), rcpu0 = cluster_cpu_ns(cl);
        int64_t t0 = bench_now_ns();
        int rc = peer_links_run(links, n_pubs + n_subs, peer_run_step, &r, RUN_TIMEOUT_MS);
        int64_t t1 = bench_now_ns();
        uint64_t bcpu1 = brokers_cpu_ns(b, n), rcpu1 = cluster_cpu_ns(cl);
        if (rc == 0 && !r.failed) {
            res.ok = 1;
            res.secs = (double) (t1 - t0) / 1e9;
            res.count = w == W_ACCEPT ? (double) r.per_pub * (double) n_pubs : r.want_msgs;
            res.broker_cpu_s = (double) (bcpu1 - bcpu0) / 1e9;
            if (c != C_SQLITE) {
                cluster_counters(cl, &cmd1, &calls1, &usec1);
                res.redis_cpu_s = (double) (rcpu1 - rcpu0) / 1e9;
                res.commands = cmd1 - cmd0;
                res.script_calls = calls1 - calls0;
                res.script_usec = usec1 - usec0;
            }
        } else {
            fprintf(stderr, "scaleout_bench: %s %s: the run %s (logs in %s)\n", workload_name[w],
                    config_name[c], rc ? "timed out or a connection failed" : "had refusals",
                    p->run_dir);
        }
    }
    for (size_t i = 0; i < n_pubs + n_subs; i++)
        peer_link_destroy(&links[i]);
    for (int i = 0; i < n; i++)
        peer_proc_stop(&b[i]);
    if (sqlite_dir[0])
        remove_tree(sqlite_dir);
    return res;
}

/* --- the table ----------------------------------------------------------- */


typedef double (*metric_fn)(const result_t *r);
static double m_rate(const result_t *r) { return r->count / r->secs; }
static double m_broker_us(const result_t *r) { return r->broker_cpu_s * 1e6 / r->count; }
static double m_redis_us(const result_t *r) { return r->redis_cpu_s * 1e6 / r->count; }
static double m_commands(const result_t *r) { return r->commands / r->count; }
static double m_script_us(const result_t *r)
{
    return r->script_calls > 0 ? r->script_usec / r->script_calls : 0;
}

static void row(const params_t *p, workload_t w, config_t c, const char *label, const char *unit,
                const char *fig, metric_fn f)
{
    double v[MAX_ROUNDS];
    int n = 0;
    for (int r = 0; r < p->rounds; r++)
        if (results[w][c][r].ok) {
            v[n++] = f(&results[w][c][r]);
            fprintf(figures, "figure scaleout_%s_%s_%s %.6g\n", workload_name[w], config_name[c],
                    fig, v[n - 1]);
        }
    if (!n) {
        printf("  %-46s %-10s %12s\n", label, unit, "failed");
        return;
    }
    double s[3];
    peer_stats3(v, n, s);
    printf("  %-46s %-10s %12.2f %12.2f %12.2f\n", label, unit, s[0], s[1], s[2]);
}

/* f(w, ca) / f(w, cb) within each round. */
static void ratio_row(const params_t *p, workload_t w, config_t ca, config_t cb, metric_fn f,
                      const char *label, const char *fig)
{
    double v[MAX_ROUNDS];
    int n = 0;
    for (int r = 0; r < p->rounds; r++) {
        const result_t *a = &results[w][ca][r], *b = &results[w][cb][r];
        if (a->ok && b->ok && f(b) > 0) {
            v[n++] = f(a) / f(b);
            fprintf(figures, "figure scaleout_%s_%s %.6g\n", workload_name[w], fig, v[n - 1]);
        }
    }
    if (!n)
        return;
    double s[3];
    peer_stats3(v, n, s);
    printf("  %-46s %-10s %12.2f %12.2f %12.2f\n", label, "ratio", s[0], s[1], s[2]);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: scaleout_bench --broker PATH [options]\n"
            "  --rounds N          interleaved rounds (default 3)\n"
            "  --senders N         accept, deliver: publishers (default 6)\n"
            "  --messages N        accept, deliver: messages per run over all publishers\n"
            "                      (default 30000)\n"
            "  --window N          accept, deliver: durable Sends in flight per publisher\n"
            "                      (default 64)\n"
            "  --live-messages N   live: messages per run (default 100000)\n"
            "  --live-window N     live: Sends in flight (default 256)\n"
            "  --size N            body bytes (default 100)\n"
            "  --data-dir DIR      where the Redis nodes and the SQLite broker write\n"
            "                      (default ./scaleout-data, on the disk the project is on)\n"
            "  --smoke             tiny counts, one round (proves it runs; figures meaningless)\n");
}

static long arg_long(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || x < lo || x > hi) {
        fprintf(stderr, "scaleout_bench: %s needs a number from %ld to %ld\n", opt, lo, hi);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    params_t p = {.rounds = 3, .senders = 6, .window = 64, .live_window = 256, .size = 100,
                  .messages = 30000, .live_messages = 100000};
    snprintf(p.data_dir, sizeof p.data_dir, "scaleout-data");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--smoke")) {
            p.smoke = 1;
            continue;
        } else if (!strcmp(a, "--broker") && v) {
            snprintf(p.broker, sizeof p.broker, "%s", v);
        } else if (!strcmp(a, "--data-dir") && v) {
            snprintf(p.data_dir, sizeof p.data_dir, "%s", v);
        } else if (!strcmp(a, "--rounds")) {
            p.rounds = (int) arg_long(a, v, 1, MAX_ROUNDS);
        } else if (!strcmp(a, "--senders")) {
            p.senders = (int) arg_long(a, v, 1, MAX_SENDERS);
        } else if (!strcmp(a, "--messages")) {
            p.messages = arg_long(a, v, 1, 100000000);
        } else if (!strcmp(a, "--window")) {
            p.window = (int) arg_long(a, v, 1, 100000);
        } else if (!strcmp(a, "--live-messages")) {
            p.live_messages = arg_long(a, v, 1, 100000000);
        } else if (!strcmp(a, "--live-window")) {
            p.live_window = (int) arg_long(a, v, 1, 100000);
        } else if (!strcmp(a, "--size")) {
            p.size = (int) arg_long(a, v, 1, 60000);
        } else {
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (!p.broker[0]) {
        usage(stderr);
        return 2;
    }
    if (p.smoke) {
        p.rounds = 1;
        p.messages = 600;
        p.live_messages = 2000;
    }
    if (p.messages < p.senders)
        p.messages = p.senders;
    mkdir(p.data_dir, 0700);
    char fs[64], mount[PATH_MAX];
    if (bench_fs_of(p.data_dir, fs, sizeof fs, mount, sizeof mount) == 0)
        printf("data: %s (%s on %s)\n", p.data_dir, fs, mount);
    snprintf(p.run_dir, sizeof p.run_dir, "%s/run-%ld", p.data_dir, (long) getpid());
    if (mkdir(p.run_dir, 0700) != 0) {
        fprintf(stderr, "scaleout_bench: mkdir %s: %s\n", p.run_dir, strerror(errno));
        return 1;
    }
    figures = tmpfile();
    if (!figures)
        return 1;
    bench_raise_nofile(65536);
    void *zctx = zmq_ctx_new();
    printf("machine: %ld cores; brokers, 6 Redis nodes and the clients share them: these\n"
           "figures are the cost of a message, not the scaling of a deployment\n",
           sysconf(_SC_NPROCESSORS_ONLN));
    cluster_t cl;
    int64_t c0 = bench_now_ns();
    if (cluster_start(&p, &cl) != 0)
        return 1;
    printf("cluster: 3 primaries + 3 replicas (%s), healthy after %.1f s\n", cl.seeds,
           (double) (bench_now_ns() - c0) / 1e9);
    int missing = 0;
    for (int r = 0; r < p.rounds; r++) {
        printf("round %d of %d: load %.2f\n", r + 1, p.rounds, peer_load1());
        fflush(stdout);
        for (int w = 0; w < N_WORKLOADS; w++)
            for (int c = 0; c < N_CONFIGS; c++) {
                results[w][c][r] = measure(&p, (workload_t) w, (config_t) c, &cl, zctx);
                missing += !results[w][c][r].ok;
            }
    }
    cluster_stop(&cl);
    zmq_ctx_term(zctx);

    printf("\n  %-46s %-10s %12s %12s %12s\n", "figure", "unit", "min", "median", "max");
    static const char *const rate_unit[N_WORKLOADS] = {"ACCEPTED/s", "pushes/s", "msgs/s"};
    for (int w = 0; w < N_WORKLOADS; w++) {
        printf("%s\n", workload_name[w]);
        for (int c = 0; c < N_CONFIGS; c++) {
            char label[96];
            snprintf(label, sizeof label, "%s: rate", config_name[c]);
            row(&p, (workload_t) w, (config_t) c, label, rate_unit[w], "rate", m_rate);
            snprintf(label, sizeof label, "%s: broker CPU per message", config_name[c]);
            row(&p, (workload_t) w, (config_t) c, label, "us", "broker_us", m_broker_us);
            if (c == C_SQLITE)
                continue;
            snprintf(label, sizeof label, "%s: Redis CPU per message (6 nodes)", config_name[c]);
            row(&p, (workload_t) w, (config_t) c, label, "us", "redis_us", m_redis_us);
            snprintf(label, sizeof label, "%s: primaries' commands per message", config_name[c]);
            row(&p, (workload_t) w, (config_t) c, label, "commands", "commands", m_commands);
            if (w != W_LIVE) {
                snprintf(label, sizeof label, "%s: server time per script call", config_name[c]);
                row(&p, (workload_t) w, (config_t) c, label, "us", "script_us", m_script_us);
            }
        }
        ratio_row(&p, (workload_t) w, C_REDIS1, C_SQLITE, m_rate, "redis1 / sqlite rate",
                  "redis1_over_sqlite");
        ratio_row(&p, (workload_t) w, C_REDIS3, C_REDIS1, m_rate, "redis3 / redis1 rate",
                  "redis3_over_redis1");
    }
    printf("\n");
    rewind(figures);
    char line[256];
    while (fgets(line, sizeof line, figures))
        fputs(line, stdout);
    printf("\nreproduce:");
    for (int i = 0; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\n");
    if (!missing)
        remove_tree(p.run_dir);      /* kept with the logs when something failed */
    for (int i = 0; i < N_NODES; i++) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%s/redis-%d", p.data_dir, i);
        remove_tree(dir);
    }
    fflush(stdout);
    if (missing)
        fprintf(stderr, "scaleout_bench: %d measurement(s) failed\n", missing);
    return missing ? 1 : 0;
}
