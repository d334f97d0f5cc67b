/*  durable_bench: durable throughput of causeway-broker, end to end.
 *
 *  Runs, in one process and one run:
 *    1. baseline: a raw-libzmq ROUTER that answers every DEALER frame with a
 *       reply frame of the same size (no protobuf, no store), driven by the
 *       same senders with the same window and body size;
 *    2. accept: a real broker (broker core on its own thread, store actor
 *       with a fresh --data directory) and S senders that each keep W
 *       durable Sends of B-byte text in flight to an offline recipient,
 *       counting ACCEPTED replies. Every ACCEPTED reply left the broker
 *       after the fsync covering its message (docs/OPERATIONS.md);
 *    3. deliver: the same, with each sender's recipient online, receiving
 *       the pushes and acknowledging every 100th seq; the figure is pushes
 *       received per second.
 *  Prints messages/s, fsyncs/s and messages per fsync for each phase, the
 *  same as "figure" lines for scripts/bench, and the command line to
 *  reproduce. Not a test: it never fails on a figure.
 *
 *  Threads: the main thread drives; the broker and each sender/receiver run
 *  on their own threads, each with its own sockets.
 */
#include "bench_util.h"
#include "broker.h"
#include "broker_config.h"
#include "cw_envelope.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"

#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    int senders;          /* sender threads */
    long messages;        /* messages per sender */
    int window;           /* requests in flight per sender */
    int size;             /* text bytes */
} params_t;

typedef struct {
    const params_t *p;
    void *ctx;
    char endpoint[256];
    int index;            /* sender number */
    int raw;              /* baseline: raw frames, no login */
    int online;           /* recipient is online (deliver phase) */
    long accepted;        /* out: replies with ACCEPTED (or raw replies) */
    long failed;          /* out: other replies */
} sender_t;

typedef struct {
    void *ctx;
    char endpoint[256];
    char name[32];
    long expect;          /* pushes to receive */
    atomic_int ready;     /* logged in */
    long received;        /* out */
    int64_t done_ms;      /* out: time of the last push */
} receiver_t;

static volatile sig_atomic_t g_stop_broker = 0;

static void *broker_thread(void *arg)
{
    cw_broker_run(arg, &g_stop_broker);
    return NULL;
}

static int64_t now_ms(void) { return cw_mono_ms(); }

static void *sender_run(void *arg)
{
    sender_t *s = arg;
    const params_t *p = s->p;
    void *sock = zmq_socket(s->ctx, ZMQ_DEALER);
    int hwm = 0;
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_connect(sock, s->endpoint);
    char name[32], to[32];
    snprintf(name, sizeof name, "sender%d", s->index);
    snprintf(to, sizeof to, "%s%d", s->online ? "reader" : "offline", s->index);
    if (!s->raw && bench_login_pull(sock, name, 1, 5000) != CW_OK) {
        fprintf(stderr, "durable_bench: %s cannot log in\n", name);
        zmq_close(sock);
        return NULL;
    }
    char *text = malloc((size_t) p->size + 1);
    memset(text, 'x', (size_t) p->size);
    text[p->size] = '\0';

    /* Prepacked request; only request_id changes, and the broker does not
     * look at request ids, so one packing serves every message. For durable
     * sends each message needs its own message_id: encode per message. */
    char *to_list[1] = {to};
    char mid[80];
    long sent = 0, answered = 0;
    while (answered < p->messages) {
        while (sent < p->messages && sent - answered < p->window) {
            if (s->raw) {
                zmq_send(sock, text, (size_t) p->size, 0);
            } else {
                cw_env_t env;
                Causeway__V1__Send snd;
                cw_env_init(&env, (uint64_t) sent + 2);
                causeway__v1__send__init(&snd);
                snd.n_to = 1;
                snd.to = to_list;
                snd.text = text;
                snd.durable = 1;
                snprintf(mid, sizeof mid, "%s-%ld", name, sent);
                snd.message_id = mid;
                env.body_case = CW_BODY(SEND);
                env.send = &snd;
                bench_send_env(sock, &env);
            }
            sent++;
        }
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        if (s->raw) {
            s->accepted++;
        } else {
            cw_env_t *env = NULL;
            const char *detail;
            if (cw_env_decode(zmq_msg_data(&m), zmq_msg_size(&m), 1u << 30, &env, NULL,
                              &detail) == CW_OK &&
                env->body_case == CW_BODY(REPLY)) {
                if (env->reply->status == (Causeway__V1__Status) CW_ACCEPTED)
                    s->accepted++;
                else
                    s->failed++;
            }
            cw_env_free(&env);
        }
        zmq_msg_close(&m);
        answered++;
    }
    free(text);
    zmq_close(sock);
    return NULL;
}

static void *receiver_run(void *arg)
{
    receiver_t *r = arg;
    void *sock = zmq_socket(r->ctx, ZMQ_DEALER);
    int hwm = 0;
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_connect(sock, r->endpoint);
    if (bench_login_pull(sock, r->name, 0, 5000) != CW_OK) {
        fprintf(stderr, "durable_bench: %s cannot log in\n", r->name);
        zmq_close(sock);
        atomic_store(&r->ready, -1);
        return NULL;
    }
    atomic_store(&r->ready, 1);
    uint64_t rid = 100;
    int64_t idle_deadline = now_ms() + 30000;
    while (r->received < r->expect && now_ms() < idle_deadline) {
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 200) <= 0)
            continue;
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            break;
        }
        cw_env_t *env = NULL;
        const char *detail;
        if (cw_env_decode(zmq_msg_data(&m), zmq_msg_size(&m), 1u << 30, &env, NULL, &detail) ==
                CW_OK &&
            env->body_case == CW_BODY(DELIVER)) {
            r->received++;
            r->done_ms = now_ms();
            idle_deadline = r->done_ms + 30000;
            if (env->deliver->seq % 100 == 0 || r->received == r->expect) {
                cw_env_t ack_env;
                Causeway__V1__Ack ack;
                cw_env_init(&ack_env, ++rid);
                causeway__v1__ack__init(&ack);
                ack.seq = env->deliver->seq;
                ack_env.body_case = CW_BODY(ACK);
                ack_env.ack = &ack;
                bench_send_env(sock, &ack_env);
            }
        }
        cw_env_free(&env);
        zmq_msg_close(&m);
    }
    zmq_close(sock);
    return NULL;
}

/* The raw-libzmq relay: answers each frame with a frame of the same size. */
typedef struct {
    void *ctx;
    char endpoint[256];   /* written before ready is set */
    atomic_int ready;     /* endpoint is valid */
    atomic_int stop;      /* main asks the relay to stop */
} relay_t;

static void *relay_run(void *arg)
{
    relay_t *r = arg;
    void *sock = zmq_socket(r->ctx, ZMQ_ROUTER);
    int hwm = 0;
    zmq_setsockopt(sock, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_bind(sock, "tcp://127.0.0.1:*");
    size_t len = sizeof r->endpoint;
    char ep[256];
    zmq_getsockopt(sock, ZMQ_LAST_ENDPOINT, ep, &len);
    memcpy(r->endpoint, ep, len);
    atomic_store(&r->ready, 1);
    while (!atomic_load(&r->stop)) {
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
            zmq_msg_recv(&body, sock, 0);
            zmq_msg_send(&id, sock, ZMQ_SNDMORE);
            zmq_msg_send(&body, sock, 0);
        }
    }
    zmq_close(sock);
    return NULL;
}

typedef struct {
    double seconds;
    long accepted, failed;
} run_result_t;

static run_result_t run_senders(void *ctx, const char *endpoint, const params_t *p, int raw,
                                int online)
{
    pthread_t th[64];
    sender_t s[64];
    run_result_t res = {0};
    int64_t t0 = now_ms();
    for (int i = 0; i < p->senders; i++) {
        memset(&s[i], 0, sizeof s[i]);
        s[i].p = p;
        s[i].ctx = ctx;
        snprintf(s[i].endpoint, sizeof s[i].endpoint, "%s", endpoint);
        s[i].index = i;
        s[i].raw = raw;
        s[i].online = online;
        pthread_create(&th[i], NULL, sender_run, &s[i]);
    }
    for (int i = 0; i < p->senders; i++) {
        pthread_join(th[i], NULL);
        res.accepted += s[i].accepted;
        res.failed += s[i].failed;
    }
    res.seconds = (double) (now_ms() - t0) / 1000.0;
    return res;
}

/* Starts a broker with a fresh data dir; fills endpoint. */
static cw_broker_t *start_broker(const char *data, pthread_t *th, char *endpoint, size_t len)
{
    cw_broker_config_t cfg;
    cw_broker_config_defaults(&cfg);
    snprintf(cfg.bind, sizeof cfg.bind, "tcp://127.0.0.1:*");
    snprintf(cfg.data, sizeof cfg.data, "%s", data);
    cfg.log_level = CW_LOG_WARN;
    cfg.sndhwm = 1000000;
    cfg.queue_max = 100000000;
    cfg.heartbeat_ms = 5000;
    char err[512];
    cw_broker_t *b = cw_broker_new(&cfg, err, sizeof err);
    if (!b) {
        fprintf(stderr, "durable_bench: %s\n", err);
        return NULL;
    }
    snprintf(endpoint, len, "%s", cw_broker_endpoint(b));
    g_stop_broker = 0;
    pthread_create(th, NULL, broker_thread, b);
    return b;
}

/* Asks the broker for its fsync counter. */
static uint64_t broker_fsyncs(void *ctx, const char *endpoint)
{
    void *sock = zmq_socket(ctx, ZMQ_DEALER);
    zmq_connect(sock, endpoint);
    cw_env_t env;
    Causeway__V1__Stats st;
    cw_env_init(&env, 7);
    causeway__v1__stats__init(&st);
    env.body_case = CW_BODY(STATS);
    env.stats = &st;
    bench_send_env(sock, &env);
    uint64_t fsyncs = 0;
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 5000) > 0) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        zmq_msg_recv(&m, sock, 0);
        cw_env_t *e = NULL;
        const char *d;
        if (cw_env_decode(zmq_msg_data(&m), zmq_msg_size(&m), 1u << 30, &e, NULL, &d) == CW_OK &&
            e->body_case == CW_BODY(REPLY) && e->reply->stats)
            fsyncs = e->reply->stats->fsyncs;
        cw_env_free(&e);
        zmq_msg_close(&m);
    }
    int linger = 0;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(sock);
    return fsyncs;
}

static void usage(void)
{
    printf("usage: durable_bench [--senders N] [--messages M] [--window W] [--size B]\n"
           "\n"
           "Durable throughput of causeway-broker against a raw-libzmq relay, in one run.\n"
           "  --senders N    sender threads (default 4)\n"
           "  --messages M   messages per sender (default 50000)\n"
           "  --window W     requests in flight per sender (default 512)\n"
           "  --size B       text bytes per message (default 100)\n");
}

int main(int argc, char **argv)
{
    params_t p = {4, 50000, 512, 100};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage();
            return 0;
        }
        if (i + 1 >= argc) {
            usage();
            return 2;
        }
        long v = atol(argv[++i]);
        if (!strcmp(a, "--senders") && v > 0 && v <= 64) p.senders = (int) v;
        else if (!strcmp(a, "--messages") && v > 0) p.messages = v;
        else if (!strcmp(a, "--window") && v > 0) p.window = (int) v;
        else if (!strcmp(a, "--size") && v > 0 && v < 60000) p.size = (int) v;
        else {
            usage();
            return 2;
        }
    }
    zsys_handler_set(NULL);
    cw_log_set_tag("bench");
    cw_log_set_level(CW_LOG_WARN);
    void *ctx = zmq_ctx_new();
    long total = (long) p.senders * p.messages;
    printf("durable_bench --senders %d --messages %ld --window %d --size %d\n", p.senders,
           p.messages, p.window, p.size);
    printf("machine: %ld cores\n\n", sysconf(_SC_NPROCESSORS_ONLN));

    /* 1. baseline */
    relay_t relay = {ctx, "", 0, 0};
    pthread_t relay_th;
    pthread_create(&relay_th, NULL, relay_run, &relay);
    while (!atomic_load(&relay.ready))
        usleep(1000);
    run_result_t base = run_senders(ctx, relay.endpoint, &p, 1, 0);
    atomic_store(&relay.stop, 1);
    pthread_join(relay_th, NULL);
    double base_rate = (double) base.accepted / base.seconds;

    /* 2. accept (recipients offline) */
    char dir[1200];
    if (bench_data_dir("cw-durable-bench", dir, sizeof dir) != 0)
        return 1;
    char data[1300], endpoint[256];
    snprintf(data, sizeof data, "%s/accept", dir);
    pthread_t bth;
    cw_broker_t *b = start_broker(data, &bth, endpoint, sizeof endpoint);
    if (!b)
        return 1;
    /* The recipients must be known users: log each in once. */
    for (int i = 0; i < p.senders; i++) {
        void *sock = zmq_socket(ctx, ZMQ_DEALER);
        int linger = 0;
        zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
        zmq_connect(sock, endpoint);
        char name[32];
        snprintf(name, sizeof name, "offline%d", i);
        bench_login_pull(sock, name, 1, 5000);
        zmq_close(sock);
    }
    uint64_t f0 = broker_fsyncs(ctx, endpoint);
    run_result_t acc = run_senders(ctx, endpoint, &p, 0, 0);
    uint64_t f1 = broker_fsyncs(ctx, endpoint);
    g_stop_broker = 1;
    pthread_join(bth, NULL);
    cw_broker_destroy(&b);
    double acc_rate = (double) acc.accepted / acc.seconds;

    /* 3. deliver (recipients online, acking) */
    snprintf(data, sizeof data, "%s/deliver", dir);
    b = start_broker(data, &bth, endpoint, sizeof endpoint);
    if (!b)
        return 1;
    receiver_t r[64];
    pthread_t rth[64];
    for (int i = 0; i < p.senders; i++) {
        memset(&r[i], 0, sizeof r[i]);
        r[i].ctx = ctx;
        snprintf(r[i].endpoint, sizeof r[i].endpoint, "%s", endpoint);
        snprintf(r[i].name, sizeof r[i].name, "reader%d", i);
        r[i].expect = p.messages;
        pthread_create(&rth[i], NULL, receiver_run, &r[i]);
    }
    for (int i = 0; i < p.senders; i++)
        while (atomic_load(&r[i].ready) == 0)
            usleep(1000);
    int64_t t0 = now_ms();
    uint64_t g0 = broker_fsyncs(ctx, endpoint);
    run_result_t del = run_senders(ctx, endpoint, &p, 0, 1);
    long received = 0;
    int64_t last = t0;
    for (int i = 0; i < p.senders; i++) {
        pthread_join(rth[i], NULL);
        received += r[i].received;
        if (r[i].done_ms > last)
            last = r[i].done_ms;
    }
    uint64_t g1 = broker_fsyncs(ctx, endpoint);
    g_stop_broker = 1;
    pthread_join(bth, NULL);
    cw_broker_destroy(&b);
    double del_secs = (double) (last - t0) / 1000.0;
    double del_rate = (double) received / (del_secs > 0 ? del_secs : 1);

    printf("%-44s %12s %10s %12s\n", "phase", "msgs/s", "fsyncs/s", "msgs/fsync");
    printf("%-44s %12.0f %10s %12s\n", "raw libzmq relay (baseline, request/reply)", base_rate,
           "-", "-");
    printf("%-44s %12.0f %10.0f %12.1f\n", "durable ACCEPTED (recipients offline)", acc_rate,
           (double) (f1 - f0) / acc.seconds, f1 > f0 ? (double) acc.accepted / (double) (f1 - f0) : 0);
    printf("%-44s %12.0f %10.0f %12.1f\n", "durable delivered (recipients online, acking)",
           del_rate, (double) (g1 - g0) / del_secs,
           g1 > g0 ? (double) del.accepted / (double) (g1 - g0) : 0);
    printf("\naccepted %ld/%ld (failed %ld); delivered %ld/%ld; durable/baseline %.2f\n",
           acc.accepted, total, acc.failed, received, total, acc_rate / base_rate);
    bench_figure("durable_raw_msgs_per_s", base_rate);
    bench_figure("durable_accepted_per_s", acc_rate);
    bench_figure("durable_fsyncs_per_s", (double) (f1 - f0) / acc.seconds);
    bench_figure("durable_msgs_per_fsync",
                      f1 > f0 ? (double) acc.accepted / (double) (f1 - f0) : 0);
    bench_figure("durable_delivered_per_s", del_rate);
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "durable_bench: could not remove %s\n", dir);
    zmq_ctx_term(ctx);
    return 0;
}
