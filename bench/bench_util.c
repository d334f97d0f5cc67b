/*  bench_util: see bench_util.h. */
#include "bench_util.h"
#include "cw_log.h"
#include "cw_status.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_figure(const char *name, double value)
{
    printf("figure %s %.6g\n", name, value);
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

double bench_quantile(double *v, size_t n, double q)
{
    qsort(v, n, sizeof v[0], cmp_double);
    /* nearest rank: the smallest value with at least q*n values <= it */
    size_t rank = (size_t) (q * (double) n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return v[rank - 1];
}

double bench_thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

double bench_process_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

void bench_thread_name(const char *name)
{
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

/* -------------------------------------------------------------------------
 * In-process broker
 */

static void *broker_main(void *arg)
{
    bench_broker_t *bb = arg;
    bench_thread_name("broker");
    cw_broker_run(bb->broker, &bb->stop);
    bb->thread_cpu_s = bench_thread_cpu_s();
    return NULL;
}

void bench_broker_config(cw_broker_config_t *cfg)
{
    cw_broker_config_defaults(cfg);
    snprintf(cfg->bind, sizeof cfg->bind, "tcp://127.0.0.1:*");
    cfg->log_level = CW_LOG_WARN;
    cfg->sndhwm = 1000000;
    cfg->heartbeat_ms = 5000;
}

int bench_broker_start(bench_broker_t *bb, const cw_broker_config_t *cfg)
{
    memset(bb, 0, sizeof *bb);
    char err[512];
    cw_log_set_level((cw_log_level_t) cfg->log_level);
    bb->broker = cw_broker_new(cfg, err, sizeof err);
    if (!bb->broker) {
        fprintf(stderr, "bench: cannot start the broker: %s\n", err);
        return -1;
    }
    snprintf(bb->endpoint, sizeof bb->endpoint, "%s", cw_broker_endpoint(bb->broker));
    if (pthread_create(&bb->thread, NULL, broker_main, bb) != 0) {
        fprintf(stderr, "bench: cannot start the broker thread\n");
        cw_broker_destroy(&bb->broker);
        return -1;
    }
    return 0;
}

void bench_broker_stop(bench_broker_t *bb)
{
    if (!bb->broker)
        return;
    bb->stop = 1;
    /* The router sleeps in zmq_poll until its next tick; a frame wakes it.
     * A Heartbeat from a peer without a session gets no reply. */
    void *ctx = zmq_ctx_new();
    void *sock = bench_dealer(ctx, bb->endpoint);
    if (sock) {
        cw_env_t env;
        Causeway__V1__Heartbeat hb;
        cw_env_init(&env, 0);
        causeway__v1__heartbeat__init(&hb);
        env.body_case = CW_BODY(HEARTBEAT);
        env.heartbeat = &hb;
        bench_send_env(sock, &env);
    }
    pthread_join(bb->thread, NULL);
    if (sock)
        zmq_close(sock);
    zmq_ctx_term(ctx);
    cw_broker_destroy(&bb->broker);
}

/* -------------------------------------------------------------------------
 * Raw relay
 */

enum { RELAY_STARTING = 0, RELAY_RUNNING = 2, RELAY_STOPPING = 3, RELAY_FAILED = -1 };

typedef struct {
    uint8_t id[256];  /* routing id */
    size_t len;       /* 0: empty slot */
} slot_t;

static void *relay_main(void *arg)
{
    bench_relay_t *r = arg;
    bench_thread_name("relay");
    void *sock = zmq_socket(r->ctx, ZMQ_ROUTER);
    int hwm = r->sndhwm, one = 1, linger = 0;
    zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(sock, r->bind[0] ? r->bind : "tcp://127.0.0.1:*") != 0) {
        fprintf(stderr, "bench: relay cannot bind: %s\n", zmq_strerror(errno));
        zmq_close(sock);
        atomic_store(&r->state, RELAY_FAILED);
        return NULL;
    }
    char ep[256];
    size_t len = sizeof ep;
    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &len);
    memcpy(r->endpoint, ep, len);
    slot_t *slots = calloc(256, sizeof *slots);
    uint8_t *reply = calloc(1, r->reply_size ? r->reply_size : 1);
    reply[0] = 'A';
    atomic_store(&r->state, RELAY_RUNNING);
    uint64_t forwarded = 0;
    while (atomic_load(&r->state) == RELAY_RUNNING) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        for (int i = 0; i < 1024; i++) {
            zmq_msg_t id, body;
            zmq_msg_init(&id);
            if (zmq_msg_recv(&id, sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&id);
                break;
            }
            zmq_msg_init(&body);
            if (!zmq_msg_more(&id) || zmq_msg_recv(&body, sock, 0) < 0) {
                zmq_msg_close(&body);
                zmq_msg_close(&id);
                continue;
            }
            const uint8_t *d = zmq_msg_data(&body);
            size_t n = zmq_msg_size(&body);
            if (n >= 2 && d[0] == 'D') {
                slot_t *s = &slots[d[1]];
                if (s->len && zmq_send(sock, s->id, s->len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0 &&
                    zmq_msg_send(&body, sock, ZMQ_DONTWAIT) >= 0)
                    forwarded++;
            } else if (n >= 2 && d[0] == 'R' && zmq_msg_size(&id) <= sizeof slots[0].id) {
                slot_t *s = &slots[d[1]];
                s->len = zmq_msg_size(&id);
                memcpy(s->id, zmq_msg_data(&id), s->len);
            }
            zmq_msg_close(&body);
            if (zmq_msg_send(&id, sock, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
                zmq_send(sock, reply, r->reply_size, ZMQ_DONTWAIT);
            zmq_msg_close(&id);
        }
    }
    r->forwarded = forwarded;
    r->thread_cpu_s = bench_thread_cpu_s();
    free(slots);
    free(reply);
    zmq_close(sock);
    return NULL;
}

int bench_relay_start(bench_relay_t *r, size_t reply_size, int sndhwm)
{
    return bench_relay_start_at(r, "", reply_size, sndhwm);
}

int bench_relay_start_at(bench_relay_t *r, const char *bind, size_t reply_size, int sndhwm)
{
    memset(r, 0, sizeof *r);
    snprintf(r->bind, sizeof r->bind, "%s", bind);
    r->ctx = zmq_ctx_new();
    if (r->ctx)
        zmq_ctx_set(r->ctx, ZMQ_THREAD_NAME_PREFIX, 2); /* I/O thread "2/ZMQbg/IO/0" */
    r->reply_size = reply_size;
    r->sndhwm = sndhwm;
    if (!r->ctx || pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        fprintf(stderr, "bench: cannot start the relay\n");
        if (r->ctx)
            zmq_ctx_term(r->ctx);
        r->ctx = NULL;
        return -1;
    }
    while (atomic_load(&r->state) == RELAY_STARTING)
        usleep(1000);
    if (atomic_load(&r->state) == RELAY_FAILED) {
        pthread_join(r->thread, NULL);
        zmq_ctx_term(r->ctx);
        r->ctx = NULL;
        return -1;
    }
    return 0;
}

void bench_relay_stop(bench_relay_t *r)
{
    if (!r->ctx)
        return;
    atomic_store(&r->state, RELAY_STOPPING);
    pthread_join(r->thread, NULL);
    zmq_ctx_term(r->ctx);
    r->ctx = NULL;
}

/* -------------------------------------------------------------------------
 * Protobuf clients
 */

/* The field number of the first length-delimited field numbered >= 10 in
 * a top-level Envelope (its body), or -1. Reads only the frame's first few
 * bytes: version, request_id and clock come before the body. */
int bench_body_field(const uint8_t *d, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint64_t key = 0;
        for (int shift = 0; i < n && shift < 64; shift += 7) {
            key |= (uint64_t) (d[i] & 0x7f) << shift;
            if (!(d[i++] & 0x80))
                break;
        }
        unsigned field = (unsigned) (key >> 3), type = (unsigned) (key & 7);
        if (type == 0) {
            while (i < n && (d[i] & 0x80))
                i++;
            i++;
        } else if (type == 2) {
            if (field >= 10)
                return (int) field;
            uint64_t len = 0;
            for (int shift = 0; i < n && shift < 64; shift += 7) {
                len |= (uint64_t) (d[i] & 0x7f) << shift;
                if (!(d[i++] & 0x80))
                    break;
            }
            i += (size_t) len;
        } else {
            return -1;
        }
    }
    return -1;
}

void *bench_dealer(void *ctx, const char *endpoint)
{
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    if (!sock)
        return NULL;
    int zero = 0;
    zmq_setsockopt(sock, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_connect(sock, endpoint) != 0) {
        zmq_close(sock);
        return NULL;
    }
    return sock;
}

int bench_send_env(void *sock, const cw_env_t *env)
{
    return cw_env_send(sock, NULL, 0, env, 0);
}

int bench_wait_reply(void *sock, int timeout_ms)
{
    int64_t deadline = bench_now_ns() + (int64_t) timeout_ms * 1000000;
    for (;;) {
        int64_t left = (deadline - bench_now_ns()) / 1000000;
        if (left <= 0)
            return -1;
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, (long) left) <= 0)
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        cw_env_t *env = NULL;
        const char *detail;
        int rc = cw_env_decode(zmq_msg_data(&m), zmq_msg_size(&m), 1u << 30, &env, NULL, &detail);
        zmq_msg_close(&m);
        if (rc == CW_OK && env->body_case == CW_BODY(REPLY)) {
            int st = env->reply->status;
            cw_env_free(&env);
            return st;
        }
        cw_env_free(&env);
    }
}

int bench_login_pull(void *sock, const char *name, int pull, int timeout_ms)
{
    cw_env_t env;
    Causeway__V1__Login l;
    cw_env_init(&env, 1);
    causeway__v1__login__init(&l);
    l.name = (char *) name;
    l.quiet = 1;
    l.pull = pull;
    env.body_case = CW_BODY(LOGIN);
    env.login = &l;
    if (bench_send_env(sock, &env) != 0)
        return -1;
    return bench_wait_reply(sock, timeout_ms);
}

int bench_login(void *sock, const char *name, int timeout_ms)
{
    return bench_login_pull(sock, name, 0, timeout_ms);
}

size_t bench_send_size(const char *to, size_t text_len, size_t mid_len, uint64_t rid)
{
    char *text = calloc(1, text_len + 1), *mid = calloc(1, mid_len + 1);
    memset(text, 'x', text_len);
    memset(mid, 'm', mid_len);
    char *to_list[1] = {(char *) to};
    cw_env_t env;
    Causeway__V1__Send snd;
    cw_env_init(&env, rid);
    causeway__v1__send__init(&snd);
    snd.n_to = 1;
    snd.to = to_list;
    snd.text = text;
    snd.message_id = mid_len ? mid : NULL;
    env.body_case = CW_BODY(SEND);
    env.send = &snd;
    size_t n = causeway__v1__envelope__get_packed_size(&env);
    free(text);
    free(mid);
    return n;
}

size_t bench_reply_size(const char *to, uint64_t rid)
{
    cw_env_t env;
    Causeway__V1__Reply reply;
    Causeway__V1__RecipientStatus rs, *rptr = &rs;
    cw_env_init(&env, rid);
    causeway__v1__reply__init(&reply);
    causeway__v1__recipient_status__init(&rs);
    rs.name = (char *) to;
    rs.status = (Causeway__V1__Status) CW_DELIVERED;
    reply.status = (Causeway__V1__Status) CW_OK;
    reply.detail = "sent";
    reply.n_recipients = 1;
    reply.recipients = &rptr;
    env.body_case = CW_BODY(REPLY);
    env.reply = &reply;
    return causeway__v1__envelope__get_packed_size(&env);
}

long bench_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -1;
    rlim_t target = (rlim_t) want;
    if (rl.rlim_max != RLIM_INFINITY && target > rl.rlim_max)
        target = rl.rlim_max;
    if (target > rl.rlim_cur) {
        rl.rlim_cur = target;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long) rl.rlim_cur;
}

/* -------------------------------------------------------------------------
 * Where benchmarks write
 */

int bench_fs_of(const char *path, char *type, size_t type_len, char *mount, size_t mount_len)
{
    char real[4096];
    if (!realpath(path, real))
        return -1;
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return -1;
    size_t best = 0;
    int found = -1;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        /* id parent major:minor root mountpoint options [optional...] - fstype source super */
        char mp[2048];
        if (sscanf(line, "%*s %*s %*s %*s %2047s", mp) != 1)
            continue;
        size_t n = strlen(mp);
        int under = strncmp(real, mp, n) == 0 && (real[n] == '/' || real[n] == '\0' || n == 1);
        if (!under || n < best)
            continue;
        const char *dash = strstr(line, " - ");
        char fstype[64];
        if (!dash || sscanf(dash + 3, "%63s", fstype) != 1)
            continue;
        best = n;
        snprintf(type, type_len, "%s", fstype);
        snprintf(mount, mount_len, "%s", mp);
        found = 0;
    }
    fclose(f);
    return found;
}

int bench_data_dir(const char *prefix, char *out, size_t len)
{
    const char *base = getenv("CW_BENCH_DATA");
    if (!base || !*base)
        base = ".";
    if (mkdir(base, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "bench: cannot create %s: %s\n", base, strerror(errno));
        return -1;
    }
    char type[64] = "?", mount[1024] = "?";
    bench_fs_of(base, type, sizeof type, mount, sizeof mount);
    const char *allow = getenv("CW_BENCH_ALLOW_TMPFS");
    if ((!strcmp(type, "tmpfs") || !strcmp(type, "ramfs")) && !(allow && *allow == '1')) {
        fprintf(stderr, "bench: %s is on a %s, which measures no disk: set CW_BENCH_DATA to a "
                        "directory on the disk your data would live on (or CW_BENCH_ALLOW_TMPFS=1)\n",
                base, type);
        return -1;
    }
    char *real = realpath(base, NULL);
    int n = snprintf(out, len, "%s/%s-XXXXXX", real ? real : base, prefix);
    free(real);
    if (n < 0 || (size_t) n >= len) {
        fprintf(stderr, "bench: the path under %s is too long\n", base);
        return -1;
    }
    if (!mkdtemp(out)) {
        fprintf(stderr, "bench: cannot create a directory under %s: %s\n", base, strerror(errno));
        return -1;
    }
    printf("data: %s (file system %s, mounted at %s)\n", out, type, mount);
    fflush(stdout);
    return 0;
}
