/*  peer_bench: causeway beside the brokers its users would pick instead,
 *  in one interleaved run on this machine.
 *
 *  Servers, each its own process on a free loopback port, started fresh
 *  for every measurement and stopped by PID afterwards:
 *    causeway    build/broker/causeway-broker (live-only, or --data DIR)
 *    relay       peer_relay: a raw-libzmq ROUTER that forwards a frame and
 *                answers the sender (the floor for any libzmq broker)
 *    nats        nats-server (core), and nats-js (JetStream, file storage)
 *    redis       redis-server (PUBLISH/SUBSCRIBE), and redis-aof (XADD,
 *                appendonly yes, appendfsync always)
 *
 *  Figures (100-byte bodies unless --size):
 *    live     one publisher keeps --window publishes in flight, each
 *             acknowledged by the broker (causeway: the Send's Reply after
 *             the hand-off; relay: its reply; NATS: PUB+PING, the PONG;
 *             Redis: PUBLISH's reply), to one subscriber; delivered msgs/s
 *    durable  --senders publishers × --durable-window in flight, each
 *             acknowledged once stored (causeway ACCEPTED, JetStream
 *             PubAck, XADD reply); acknowledged msgs/s
 *    fanout   one publisher, --subscribers subscribers, every message to
 *             all of them (causeway broadcast, NATS subject, Redis
 *             channel); deliveries/s
 *  For each: the server's CPU per message (per delivery for fanout) from
 *  the kernel's per-thread accounting of the server process (every thread
 *  it runs), and the client's CPU (this process) reported apart. Rounds
 *  are interleaved (live: causeway relay nats redis, then durable, then
 *  fanout; then the next round), the 1-minute load average is printed
 *  before each round, and every figure is given as min / median / max over
 *  the rounds. Ratios are taken within each round, then their median.
 *
 *  Whether a durable peer fsyncs before it acknowledges is checked, not
 *  assumed: one publisher with ONE message in flight sends --check
 *  messages while strace records the server's fsync/fdatasync/
 *  sync_file_range/msync calls; with one message in flight a server can
 *  only sync before every ack if it syncs at least once per message.
 *
 *  The durable data goes to --data-dir (default build-bench/peer-data, on
 *  the disk the project lives on) and the file system is printed; a tmpfs
 *  is refused unless --allow-tmpfs, since it measures no disk at all.
 *
 *  Output: a table, "figure" lines (one per round) for scripts/bench, and
 *  the command line. Not a test: it fails only when a message goes missing
 *  or is refused, or a server does not start.
 */
#include "bench_util.h"
#include "cw_envelope.h"
#include "cw_status.h"
#include "peer_link.h"
#include "peer_proc.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

typedef enum { W_LIVE, W_DURABLE, W_FANOUT, W_COUNT } workload_t;
typedef enum { K_CAUSEWAY, K_RELAY, K_NATS, K_NATS_JS, K_REDIS, K_REDIS_AOF, K_COUNT } kind_t;

static const char *const workload_name[W_COUNT] = {"live", "durable", "fanout"};
static const char *const kind_name[K_COUNT] = {"causeway", "relay", "nats", "nats-js", "redis",
                                               "redis-aof"};

/* Which servers each workload measures, in round order. */
static const kind_t plan[W_COUNT][4] = {
    [W_LIVE] = {K_CAUSEWAY, K_RELAY, K_NATS, K_REDIS},
    [W_DURABLE] = {K_CAUSEWAY, K_NATS_JS, K_REDIS_AOF, K_COUNT},
    [W_FANOUT] = {K_CAUSEWAY, K_NATS, K_REDIS, K_COUNT},
};

#define MAX_ROUNDS 50
#define RUN_TIMEOUT_MS 120000
#define JOIN_TIMEOUT_MS 10000

typedef struct {
    int rounds;
    long live_messages;
    int window;
    long durable_messages;   /* over all senders */
    int senders;
    int durable_window;
    int subscribers;
    long fanout_messages;
    int fanout_window;
    int size;
    int check;               /* fsync check: messages with one in flight; 0 = skip */
    int workloads;           /* bit per workload_t */
    int allow_tmpfs;
    char profile[1024];      /* --profile DIR: a perf profile of causeway per workload */
    char broker[PATH_MAX];
    char relay[PATH_MAX];
    char data_dir[1024];
    char run_dir[1100];      /* logs and per-run data, removed at the end */
} params_t;

typedef struct {
    int ok;
    double secs;
    double count;            /* messages (deliveries for fanout) */
    double server_cpu_s;
    double client_cpu_s;
    int threads;             /* server threads */
} result_t;

static result_t results[W_COUNT][K_COUNT][MAX_ROUNDS];
static FILE *figures;        /* "figure" lines, printed after the table */

static double client_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static peer_proto_t proto_of(kind_t k)
{
    switch (k) {
    case K_CAUSEWAY: return PEER_CAUSEWAY;
    case K_RELAY: return PEER_RELAY;
    case K_NATS: case K_NATS_JS: return PEER_NATS;
    default: return PEER_REDIS;
    }
}

/* --- servers ------------------------------------------------------------- */

static int run_serial;

/* Starts a fresh server of kind k; its data (if any) in a new directory
 * under the data dir. Retries with another port if the first was taken. */
static int server_start(const params_t *p, kind_t k, int durable, peer_proc_t *proc, char *dir,
                        size_t dirlen)
{
    run_serial++;
    snprintf(dir, dirlen, "%s/%s-%d", p->data_dir, kind_name[k], run_serial);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "peer_bench: cannot create %s: %s\n", dir, strerror(errno));
        return -1;
    }
    char log[PATH_MAX];
    snprintf(log, sizeof log, "%s/%s-%d.log", p->run_dir, kind_name[k], run_serial);
    for (int attempt = 0; attempt < 3; attempt++) {
        int port = peer_free_port();
        if (!port)
            return -1;
        char sport[16], bind[64], reply[16];
        snprintf(sport, sizeof sport, "%d", port);
        snprintf(bind, sizeof bind, "tcp://127.0.0.1:%d", port);
        snprintf(reply, sizeof reply, "%zu", bench_reply_size("r", 1));
        char *av[40];
        int n = 0;
        switch (k) {
        case K_CAUSEWAY:
            av[n++] = (char *) p->broker;
            av[n++] = "--bind"; av[n++] = bind;
            av[n++] = "--log-level"; av[n++] = "warn";
            av[n++] = "--sndhwm"; av[n++] = "10000000";
            av[n++] = "--heartbeat-ms"; av[n++] = "10000";
            av[n++] = "--liveness"; av[n++] = "30";
            av[n++] = "--max-sessions"; av[n++] = "100000";
            av[n++] = "--burst"; av[n++] = "10000000";
            av[n++] = "--reply-budget"; av[n++] = "1073741824";
            break;
        case K_RELAY:
            av[n++] = (char *) p->relay;
            av[n++] = bind;
            av[n++] = reply;
            break;
        case K_NATS:
        case K_NATS_JS:
            av[n++] = "nats-server";
            av[n++] = "-a"; av[n++] = "127.0.0.1";
            av[n++] = "-p"; av[n++] = sport;
            if (k == K_NATS_JS) {
                av[n++] = "-js";
                av[n++] = "-sd"; av[n++] = dir;
            }
            break;
        default:
            av[n++] = "redis-server";
            av[n++] = "--port"; av[n++] = sport;
            av[n++] = "--bind"; av[n++] = "127.0.0.1";
            av[n++] = "--save"; av[n++] = "";
            av[n++] = "--dir"; av[n++] = dir;
            av[n++] = "--appendonly"; av[n++] = k == K_REDIS_AOF ? "yes" : "no";
            av[n++] = "--appendfsync"; av[n++] = "always";
            av[n++] = "--client-output-buffer-limit"; av[n++] = "pubsub 0 0 0";
            av[n++] = "--maxclients"; av[n++] = "20000";
            break;
        }
        if (k == K_CAUSEWAY && durable) {
            av[n++] = "--data"; av[n++] = dir;
            av[n++] = "--queue-max"; av[n++] = "100000000";
            av[n++] = "--store-max"; av[n++] = "0";
            av[n++] = "--store-inflight"; av[n++] = "100000";
            av[n++] = "--store-inflight-bytes"; av[n++] = "1073741824";
        }
        av[n] = NULL;
        if (peer_proc_start(proc, kind_name[k], av, port, log, 10000) == 0)
            return 0;
    }
    return -1;
}

static void remove_tree(const char *dir)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "peer_bench: could not remove %s\n", dir);
}

/* --- the runs ------------------------------------------------------------ */


/* Creates the JetStream stream the durable publishers write to. */
static int nats_stream(void *zctx, int port)
{
    peer_link_t *l = peer_link_new(PEER_NATS, zctx, port);
    if (!l || peer_link_join(l, "setup", 0, JOIN_TIMEOUT_MS) != 0) {
        peer_link_destroy(&l);
        return -1;
    }
    char reply[4096];
    int rc = peer_link_nats_request(l, "$JS.API.STREAM.CREATE.BENCH",
                                    "{\"name\":\"BENCH\",\"subjects\":[\"bench.js\"],"
                                    "\"storage\":\"file\",\"retention\":\"limits\"}",
                                    reply, sizeof reply, JOIN_TIMEOUT_MS);
    if (rc == 0 && (strstr(reply, "\"error\"") || !strstr(reply, "\"config\""))) {
        fprintf(stderr, "peer_bench: JetStream stream not created: %s\n", reply);
        rc = -1;
    }
    peer_link_destroy(&l);
    return rc;
}

/* Everything a workload needs on one server: links made and joined. */
typedef struct {
    peer_link_t **links;     /* publishers first, then subscribers */
    size_t n_pubs, n_subs;
} setup_t;

static void setup_free(setup_t *s)
{
    for (size_t i = 0; i < s->n_pubs + s->n_subs; i++)
        peer_link_destroy(&s->links[i]);
    free(s->links);
    memset(s, 0, sizeof *s);
}

static int setup(const params_t *p, workload_t w, kind_t k, void *zctx, int port, size_t n_pubs,
                 setup_t *s)
{
    peer_proto_t proto = proto_of(k);
    size_t n_subs = w == W_DURABLE ? 0 : w == W_LIVE ? 1 : (size_t) p->subscribers;
    s->n_pubs = n_pubs;
    s->n_subs = n_subs;
    s->links = calloc(n_pubs + n_subs, sizeof *s->links);
    if (!s->links)
        return -1;
    const char *subject = w == W_LIVE ? "bench.live" : "bench.fan";
    for (size_t i = 0; i < n_subs; i++) {
        char name[32];
        snprintf(name, sizeof name, w == W_LIVE ? "r" : "f%05zu", i);
        peer_link_t *l = s->links[n_pubs + i] = peer_link_new(proto, zctx, port);
        if (!l || peer_link_join(l, name, 1, JOIN_TIMEOUT_MS) != 0 ||
            peer_link_subscribe(l, subject, JOIN_TIMEOUT_MS) != 0) {
            fprintf(stderr, "peer_bench: %s: subscriber %zu could not join\n", kind_name[k], i);
            return -1;
        }
    }
    if (w == W_DURABLE && k == K_CAUSEWAY && peer_causeway_known_offline(zctx, port, "sink", JOIN_TIMEOUT_MS) != 0) {
        fprintf(stderr, "peer_bench: causeway: the durable recipient could not be created\n");
        return -1;
    }
    if (w == W_DURABLE && k == K_NATS_JS && nats_stream(zctx, port) != 0)
        return -1;
    for (size_t i = 0; i < n_pubs; i++) {
        char name[32];
        snprintf(name, sizeof name, w == W_LIVE ? "s" : w == W_FANOUT ? "pub" : "d%zu", i);
        const char *target;
        peer_pub_kind_t kind = w == W_DURABLE ? PUB_DURABLE : w == W_FANOUT ? PUB_BROADCAST : PUB_LIVE;
        switch (k) {
        case K_CAUSEWAY: target = w == W_DURABLE ? "sink" : "r"; break;
        case K_RELAY: target = "1"; break;
        case K_NATS_JS: target = "bench.js"; break;
        case K_REDIS_AOF: target = "bench:stream"; break;
        default: target = subject; break;
        }
        peer_link_t *l = s->links[i] = peer_link_new(proto, zctx, port);
        if (!l || peer_link_join(l, name, 0, JOIN_TIMEOUT_MS) != 0 ||
            peer_link_prepare(l, kind, target, (size_t) p->size) != 0) {
            fprintf(stderr, "peer_bench: %s: publisher %zu could not join\n", kind_name[k], i);
            return -1;
        }
    }
    for (size_t i = 0; i < n_pubs + n_subs; i++)
        peer_link_reset(s->links[i]);
    return 0;
}

/* One measurement: a fresh server of kind k, workload w; with perf_base,
 * the server is profiled during the run into perf_base.data and .txt. */
static result_t measure(const params_t *p, workload_t w, kind_t k, void *zctx,
                        const char *perf_base)
{
    result_t res = {0};
    peer_proc_t proc;
    char dir[PATH_MAX];
    if (server_start(p, k, w == W_DURABLE, &proc, dir, sizeof dir) != 0)
        return res;
    size_t n_pubs = w == W_DURABLE ? (size_t) p->senders : 1;
    setup_t s = {0};
    if (setup(p, w, k, zctx, proc.port, n_pubs, &s) == 0) {
        long total = w == W_LIVE ? p->live_messages
                   : w == W_DURABLE ? p->durable_messages : p->fanout_messages;
        peer_run_t r = {.pubs = s.links, .n_pubs = n_pubs, .per_pub = total / (long) n_pubs,
                   .window = w == W_LIVE ? p->window
                           : w == W_DURABLE ? p->durable_window : p->fanout_window,
                   .subs = s.links + n_pubs, .n_subs = s.n_subs};
        r.want_msgs = (double) r.per_pub * (double) (w == W_DURABLE ? 0 : s.n_subs);
        r.sent = calloc(n_pubs, sizeof *r.sent);
        char perf_data[1200], perf_txt[1200];
        pid_t perf = -1;
        if (perf_base) {
            snprintf(perf_data, sizeof perf_data, "%s.data", perf_base);
            snprintf(perf_txt, sizeof perf_txt, "%s.txt", perf_base);
            if ((perf = peer_perf_start(proc.pid, perf_data)) < 0)
                fprintf(stderr, "peer_bench: cannot start perf record (linux-perf installed?)\n");
        }
        uint64_t cpu0 = peer_proc_cpu_ns(proc.pid);
        double ccpu0 = client_cpu_s();
        int64_t t0 = bench_now_ns();
        int rc = r.sent ? peer_links_run(s.links, n_pubs + s.n_subs, peer_run_step, &r, RUN_TIMEOUT_MS) : -1;
        int64_t t1 = bench_now_ns();
        uint64_t cpu1 = peer_proc_cpu_ns(proc.pid);
        if (perf > 0 && peer_perf_stop(perf, perf_data, perf_txt) == 0)
            printf("profile of %s %s: %s\n", kind_name[k], workload_name[w], perf_txt);
        res.client_cpu_s = client_cpu_s() - ccpu0;
        res.threads = peer_proc_threads(proc.pid);
        if (rc == 0 && !r.failed) {
            res.ok = 1;
            res.secs = (double) (t1 - t0) / 1e9;
            res.count = w == W_FANOUT ? r.want_msgs : (double) r.per_pub * (double) n_pubs;
            res.server_cpu_s = (double) (cpu1 - cpu0) / 1e9;
        } else {
            fprintf(stderr, "peer_bench: %s %s: the run %s (see %s)\n", workload_name[w],
                    kind_name[k], rc ? "timed out or a connection failed" : "had refusals",
                    proc.log);
        }
        free(r.sent);
    }
    setup_free(&s);
    peer_proc_stop(&proc);
    remove_tree(dir);
    return res;
}

/* The fsync check of durable server k: fsync calls per acknowledged
 * message with one message in flight. -1 if it could not be checked. */
static double fsync_check(const params_t *p, kind_t k, void *zctx, long *syncs_out)
{
    peer_proc_t proc;
    char dir[PATH_MAX];
    *syncs_out = -1;
    if (server_start(p, k, 1, &proc, dir, sizeof dir) != 0)
        return -1;
    double per_ack = -1;
    setup_t s = {0};
    if (setup(p, W_DURABLE, k, zctx, proc.port, 1, &s) == 0) {
        char trace[PATH_MAX];
        snprintf(trace, sizeof trace, "%s/%s-%d.strace", p->run_dir, kind_name[k], run_serial);
        pid_t tracer = peer_trace_syncs(proc.pid, trace);
        if (tracer > 0) {
            peer_run_t r = {.pubs = s.links, .n_pubs = 1, .per_pub = p->check, .window = 1};
            long sent = 0;
            r.sent = &sent;
            int rc = peer_links_run(s.links, 1, peer_run_step, &r, RUN_TIMEOUT_MS);
            long syncs = peer_trace_count(tracer, trace);
            if (rc == 0 && !r.failed && syncs >= 0) {
                *syncs_out = syncs;
                per_ack = (double) syncs / (double) p->check;
            }
        } else {
            fprintf(stderr, "peer_bench: cannot trace %s with strace (installed? ptrace allowed?)\n",
                    kind_name[k]);
        }
    }
    setup_free(&s);
    peer_proc_stop(&proc);
    remove_tree(dir);
    return per_ack;
}

/* --- the table ----------------------------------------------------------- */


typedef double (*metric_fn)(const result_t *r);
static double m_rate(const result_t *r) { return r->count / r->secs; }
static double m_server_us(const result_t *r) { return r->server_cpu_s * 1e6 / r->count; }
static double m_client_us(const result_t *r) { return r->client_cpu_s * 1e6 / r->count; }

static void fmt_num(char *out, size_t len, double v)
{
    if (v >= 10000) {
        char raw[64];
        snprintf(raw, sizeof raw, "%.0f", v);
        size_t n = strlen(raw), k = 0;
        for (size_t i = 0; i < n && k + 2 < len; i++) {
            out[k++] = raw[i];
            if ((n - i - 1) % 3 == 0 && i + 1 < n)
                out[k++] = ',';
        }
        out[k] = '\0';
    } else if (v >= 100) {
        snprintf(out, len, "%.0f", v);
    } else {
        snprintf(out, len, "%.2f", v);
    }
}

/* One row: the metric of (w, k) over the rounds; prints "figure" lines
 * too. Returns 0 if no round succeeded. */
static int row(const params_t *p, workload_t w, kind_t k, const char *label, const char *unit,
               const char *fig, metric_fn f)
{
    double v[MAX_ROUNDS];
    int n = 0;
    for (int r = 0; r < p->rounds; r++)
        if (results[w][k][r].ok) {
            v[n++] = f(&results[w][k][r]);
            fprintf(figures, "figure peers_%s_%s_%s %.6g\n", workload_name[w], kind_name[k], fig,
                    v[n - 1]);
        }
    if (!n) {
        printf("  %-44s %-9s %12s\n", label, unit, "failed");
        return 0;
    }
    double s[3];
    peer_stats3(v, n, s);
    char a[32], b[32], c[32];
    fmt_num(a, sizeof a, s[0]);
    fmt_num(b, sizeof b, s[1]);
    fmt_num(c, sizeof c, s[2]);
    printf("  %-44s %-9s %12s %12s %12s\n", label, unit, a, b, c);
    return 1;
}

/* A ratio taken within each round: f(w, ka) / f(w, kb). */
static void ratio_row(const params_t *p, workload_t w, kind_t ka, kind_t kb, metric_fn f,
                      const char *label, const char *fig, const char *target)
{
    double v[MAX_ROUNDS];
    int n = 0;
    for (int r = 0; r < p->rounds; r++) {
        const result_t *a = &results[w][ka][r], *b = &results[w][kb][r];
        if (a->ok && b->ok && f(b) > 0) {
            v[n++] = f(a) / f(b);
            fprintf(figures, "figure peers_%s_%s %.6g\n", workload_name[w], fig, v[n - 1]);
        }
    }
    if (!n)
        return;
    double s[3];
    peer_stats3(v, n, s);
    printf("  %-44s %-9s %12.2f %12.2f %12.2f   target %s\n", label, "ratio", s[0], s[1], s[2],
           target);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: peer_bench --broker PATH --relay PATH [options]\n"
            "  --rounds N            interleaved rounds (default 7)\n"
            "  --only LIST           live,durable,fanout (default all)\n"
            "  --messages N          live: messages per run (default 300000)\n"
            "  --window N            live: publishes in flight (default 256)\n"
            "  --durable-messages N  durable: messages per run over all senders (default 200000)\n"
            "  --senders N           durable: publishers (default 4)\n"
            "  --durable-window N    durable: in flight per publisher (default 512)\n"
            "  --subscribers N       fanout: subscribers (default 1000)\n"
            "  --fanout-messages N   fanout: messages per run (default 300)\n"
            "  --fanout-window N     fanout: publishes in flight (default 16)\n"
            "  --size N              body bytes (default 100)\n"
            "  --check N             fsync check: messages with one in flight, 0 = skip (default 200)\n"
            "  --data-dir DIR        where durable servers write (default ./peer-data)\n"
            "  --allow-tmpfs         measure on a tmpfs anyway\n"
            "  --profile DIR         after the rounds, perf-profile causeway and its peer per\n"
            "                        workload into DIR/<workload>-<server>.{data,txt}\n"
            "  --smoke               tiny counts, one round (proves it runs; figures meaningless)\n");
}

static long arg_long(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || x < lo || x > hi) {
        fprintf(stderr, "peer_bench: %s needs a number from %ld to %ld\n", opt, lo, hi);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv)
{
    params_t p = {.rounds = 7, .live_messages = 300000, .window = 256, .durable_messages = 200000,
                  .senders = 4, .durable_window = 512, .subscribers = 1000,
                  .fanout_messages = 300, .fanout_window = 16, .size = 100, .check = 200,
                  .workloads = 7};
    snprintf(p.data_dir, sizeof p.data_dir, "peer-data");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--smoke")) {
            p.rounds = 1;
            p.live_messages = 2000;
            p.durable_messages = 2000;
            p.subscribers = 50;
            p.fanout_messages = 20;
            p.check = 20;
            continue;
        } else if (!strcmp(a, "--allow-tmpfs")) {
            p.allow_tmpfs = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "peer_bench: %s: unknown option or missing value\n", a);
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(a, "--broker")) snprintf(p.broker, sizeof p.broker, "%s", v);
        else if (!strcmp(a, "--relay")) snprintf(p.relay, sizeof p.relay, "%s", v);
        else if (!strcmp(a, "--data-dir")) snprintf(p.data_dir, sizeof p.data_dir, "%s", v);
        else if (!strcmp(a, "--profile")) snprintf(p.profile, sizeof p.profile, "%s", v);
        else if (!strcmp(a, "--rounds")) p.rounds = (int) arg_long(a, v, 1, MAX_ROUNDS);
        else if (!strcmp(a, "--messages")) p.live_messages = arg_long(a, v, 1, 100000000);
        else if (!strcmp(a, "--window")) p.window = (int) arg_long(a, v, 1, 100000);
        else if (!strcmp(a, "--durable-messages")) p.durable_messages = arg_long(a, v, 1, 100000000);
        else if (!strcmp(a, "--senders")) p.senders = (int) arg_long(a, v, 1, 64);
        else if (!strcmp(a, "--durable-window")) p.durable_window = (int) arg_long(a, v, 1, 100000);
        else if (!strcmp(a, "--subscribers")) p.subscribers = (int) arg_long(a, v, 1, 10000);
        else if (!strcmp(a, "--fanout-messages")) p.fanout_messages = arg_long(a, v, 1, 10000000);
        else if (!strcmp(a, "--fanout-window")) p.fanout_window = (int) arg_long(a, v, 1, 100000);
        else if (!strcmp(a, "--size")) p.size = (int) arg_long(a, v, 1, 60000);
        else if (!strcmp(a, "--check")) p.check = (int) arg_long(a, v, 0, 100000);
        else if (!strcmp(a, "--only")) {
            p.workloads = 0;
            for (int w = 0; w < W_COUNT; w++)
                if (strstr(v, workload_name[w]))
                    p.workloads |= 1 << w;
            if (!p.workloads) {
                fprintf(stderr, "peer_bench: --only takes live,durable,fanout\n");
                return 2;
            }
        } else {
            fprintf(stderr, "peer_bench: %s: unknown option\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!p.broker[0] || !p.relay[0]) {
        usage(stderr);
        return 2;
    }
    if (mkdir(p.data_dir, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "peer_bench: cannot create %s: %s\n", p.data_dir, strerror(errno));
        return 1;
    }
    char fstype[64] = "?", mount[PATH_MAX] = "?";
    bench_fs_of(p.data_dir, fstype, sizeof fstype, mount, sizeof mount);
    if ((!strcmp(fstype, "tmpfs") || !strcmp(fstype, "ramfs")) && !p.allow_tmpfs) {
        fprintf(stderr, "peer_bench: %s is on a %s: durable figures would measure no disk "
                        "(choose --data-dir on a disk, or --allow-tmpfs)\n", p.data_dir, fstype);
        return 1;
    }
    char *real = realpath(p.data_dir, NULL);
    if (real) {
        snprintf(p.data_dir, sizeof p.data_dir, "%s", real);
        free(real);
    }
    snprintf(p.run_dir, sizeof p.run_dir, "%s/run-XXXXXX", p.data_dir);
    if (!mkdtemp(p.run_dir)) {
        fprintf(stderr, "peer_bench: cannot create a run directory: %s\n", strerror(errno));
        return 1;
    }
    bench_raise_nofile(4L * p.subscribers + 1024);

    char *figs_text = NULL;
    size_t figs_len = 0;
    figures = open_memstream(&figs_text, &figs_len);
    if (!figures)
        return 1;
    void *zctx = zmq_ctx_new();
    int failures = 0;
    char when[64];
    time_t t = time(NULL);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", gmtime(&t));
    printf("peer_bench: %d round(s), started %s\n", p.rounds, when);
    for (int r = 0; r < p.rounds; r++) {
        printf("round %d: load average (1 min) before: %.2f\n", r + 1, peer_load1());
        fflush(stdout);
        for (int w = 0; w < W_COUNT; w++) {
            if (!(p.workloads & (1 << w)))
                continue;
            for (int i = 0; i < 4 && plan[w][i] != K_COUNT; i++) {
                kind_t k = plan[w][i];
                results[w][k][r] = measure(&p, (workload_t) w, k, zctx, NULL);
                if (!results[w][k][r].ok)
                    failures++;
            }
        }
    }
    /* Profiles in a pass of their own, so that perf never runs during a
     * measured round: causeway, and the peer it is compared with. */
    if (p.profile[0]) {
        mkdir(p.profile, 0755);
        for (int w = 0; w < W_COUNT; w++) {
            if (!(p.workloads & (1 << w)))
                continue;
            kind_t other = w == W_LIVE ? K_RELAY : w == W_DURABLE ? K_REDIS_AOF : K_REDIS;
            kind_t ks[2] = {K_CAUSEWAY, other};
            for (int i = 0; i < 2; i++) {
                char base[1100];
                snprintf(base, sizeof base, "%s/%s-%s", p.profile, workload_name[w], kind_name[ks[i]]);
                measure(&p, (workload_t) w, ks[i], zctx, base);
            }
        }
    }
    double check[K_COUNT];
    long syncs[K_COUNT];
    for (int k = 0; k < K_COUNT; k++)
        check[k] = -2, syncs[k] = -1;
    if (p.check && p.workloads & (1 << W_DURABLE))
        for (int i = 0; i < 3; i++)
            check[plan[W_DURABLE][i]] = fsync_check(&p, plan[W_DURABLE][i], zctx, &syncs[plan[W_DURABLE][i]]);
    zmq_ctx_term(zctx);

    printf("\npeer_bench — causeway beside NATS and Redis (min / median / max over %d round(s))\n",
           p.rounds);
    printf("  body %d bytes; live window %d; durable %d senders x %d in flight; fanout %d "
           "subscribers, window %d\n", p.size, p.window, p.senders, p.durable_window,
           p.subscribers, p.fanout_window);
    printf("  durable data on %s (file system %s, mounted at %s)\n", p.data_dir, fstype, mount);
    printf("  server CPU: all threads of the server process (kernel per-thread accounting); "
           "client CPU: this process\n\n");
    printf("  %-44s %-9s %12s %12s %12s\n", "figure", "unit", "min", "median", "max");
    static const char *const what[W_COUNT] = {"delivered", "acked", "deliveries"};
    for (int w = 0; w < W_COUNT; w++) {
        if (!(p.workloads & (1 << w)))
            continue;
        printf("  -- %s\n", workload_name[w]);
        for (int i = 0; i < 4 && plan[w][i] != K_COUNT; i++) {
            kind_t k = plan[w][i];
            char label[96];
            snprintf(label, sizeof label, "%s %s/s", kind_name[k], what[w]);
            row(&p, w, k, label, "1/s", "per_s", m_rate);
            snprintf(label, sizeof label, "%s server CPU per %s", kind_name[k],
                     w == W_FANOUT ? "delivery" : "message");
            row(&p, w, k, label, "us", "server_us", m_server_us);
            snprintf(label, sizeof label, "%s client CPU per %s", kind_name[k],
                     w == W_FANOUT ? "delivery" : "message");
            row(&p, w, k, label, "us", "client_us", m_client_us);
        }
    }
    printf("  -- ratios (within each round)\n");
    if (p.workloads & (1 << W_LIVE)) {
        ratio_row(&p, W_LIVE, K_CAUSEWAY, K_RELAY, m_server_us, "live CPU/msg causeway / relay",
                  "cpu_ratio_relay", "<= 1.25");
        ratio_row(&p, W_LIVE, K_RELAY, K_NATS, m_server_us, "live CPU/msg relay / nats",
                  "cpu_ratio_relay_nats", "(libzmq's cost)");
        ratio_row(&p, W_LIVE, K_RELAY, K_REDIS, m_server_us, "live CPU/msg relay / redis",
                  "cpu_ratio_relay_redis", "(libzmq's cost)");
        ratio_row(&p, W_LIVE, K_CAUSEWAY, K_REDIS, m_rate, "live msgs/s causeway / redis",
                  "rate_ratio_redis", "-");
    }
    if (p.workloads & (1 << W_DURABLE)) {
        ratio_row(&p, W_DURABLE, K_CAUSEWAY, K_REDIS_AOF, m_rate,
                  "durable acked/s causeway / redis-aof", "rate_ratio_redis", ">= 1.0");
        ratio_row(&p, W_DURABLE, K_CAUSEWAY, K_REDIS_AOF, m_server_us,
                  "durable CPU/msg causeway / redis-aof", "cpu_ratio_redis", "-");
    }
    if (p.workloads & (1 << W_FANOUT))
        ratio_row(&p, W_FANOUT, K_CAUSEWAY, K_REDIS, m_server_us,
                  "fanout CPU/delivery causeway / redis", "cpu_ratio_redis", "-");
    if (p.check && p.workloads & (1 << W_DURABLE)) {
        printf("  -- fsync before acknowledging (checked: %d messages, one in flight, strace)\n",
               p.check);
        for (int i = 0; i < 3; i++) {
            kind_t k = plan[W_DURABLE][i];
            if (check[k] < 0)
                printf("  %-44s %s\n", kind_name[k], "could not be checked");
            else
                printf("  %-44s %ld syncs, %.2f per ack: %s\n", kind_name[k], syncs[k], check[k],
                       check[k] >= 1.0 ? "yes, syncs before every ack" : "NO, acks without a sync");
            if (check[k] >= 0)
                fprintf(figures, "figure peers_fsync_per_ack_%s %.6g\n", kind_name[k], check[k]);
        }
    }
    fclose(figures);
    printf("\n%s", figs_text ? figs_text : "");
    free(figs_text);
    printf("\ncommand:");
    for (int i = 0; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\n");
    if (failures)
        fprintf(stderr, "peer_bench: %d measurement(s) failed; the servers' logs are in %s\n",
                failures, p.run_dir);
    else
        remove_tree(p.run_dir);
    return failures ? 1 : 0;
}
