/*  fanout_bench: live broadcast fan-out of causeway-broker.
 *
 *  A broker core runs in-process (its own thread and libzmq context, no
 *  store). R recipients log in (quiet) on R DEALER sockets, spread over T
 *  receiver threads that poll their sockets; one sender logs in and sends
 *  M live broadcasts (Send.broadcast, B-byte text) keeping W requests in
 *  flight. Every broadcast goes to every recipient (all online), so the
 *  broker pushes M x R Delivers. The figure is Delivers received per
 *  second, from the first send to the last Deliver; each Reply is decoded
 *  and every one of its R recipient statuses must be DELIVERED.
 *
 *  Receivers recognise a Deliver by the Envelope's body field
 *  (bench_body_field) without decoding it; the first Deliver on every socket is
 *  decoded in full and checked. Prints a table, "figure" lines for
 *  scripts/bench and the command line. Not a test: it never fails on a
 *  figure, only when a Deliver goes missing.
 */
#include "bench_util.h"
#include "cw_log.h"
#include "cw_status.h"

#include <czmq.h>
#include <errno.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    int recipients;     /* R */
    int threads;        /* T */
    long messages;      /* M broadcasts */
    int window;         /* W */
    int size;           /* B */
} params_t;

typedef struct {
    const params_t *p;
    void *ctx;
    const char *endpoint;
    int first, count;           /* recipients first..first+count-1 */
    atomic_int ready;           /* 1 all logged in, -1 failed */
    atomic_int stop;            /* main gives up */
    long received;              /* out: Delivers */
    long bad;                   /* out: first Delivers that did not decode as expected */
    int64_t last_ns;            /* out: time of the last Deliver */
} rthread_t;

/* Logs in every socket of the thread, pipelined. 0 or -1. */
static int login_all(rthread_t *t, void **socks)
{
    for (int i = 0; i < t->count; i++) {
        char name[32];
        snprintf(name, sizeof name, "r%05d", t->first + i);
        cw_env_t env;
        Causeway__V1__Login l;
        cw_env_init(&env, 1);
        causeway__v1__login__init(&l);
        l.name = name;
        l.quiet = 1;
        env.body_case = CW_BODY(LOGIN);
        env.login = &l;
        if (bench_send_env(socks[i], &env) != 0)
            return -1;
    }
    for (int i = 0; i < t->count; i++)
        if (bench_wait_reply(socks[i], 20000) != CW_OK) {
            fprintf(stderr, "fanout_bench: recipient %d cannot log in\n", t->first + i);
            return -1;
        }
    return 0;
}

/* Takes every frame waiting on receiver i's socket; counts Delivers. */
static void drain_socket(rthread_t *t, void *sock, char *checked, zmq_msg_t *m)
{
    for (;;) {
        int events = 0;
        size_t elen = sizeof events;
        if (zmq_getsockopt(sock, ZMQ_EVENTS, &events, &elen) != 0 || !(events & ZMQ_POLLIN))
            return;
        while (zmq_msg_recv(m, sock, ZMQ_DONTWAIT) >= 0) {
            const uint8_t *d = zmq_msg_data(m);
            size_t n = zmq_msg_size(m);
            if (bench_body_field(d, n) != 30)
                continue;
            if (!*checked) {
                cw_env_t *env = NULL;
                const char *detail;
                if (cw_env_decode(d, n, 1u << 30, &env, NULL, &detail) != CW_OK ||
                    env->body_case != CW_BODY(DELIVER) || !env->deliver->broadcast ||
                    strlen(env->deliver->text) != (size_t) t->p->size)
                    t->bad++;
                cw_env_free(&env);
                *checked = 1;
            }
            t->received++;
        }
    }
}

/* A receiver thread: t->count DEALER sockets, woken through epoll on their
 * ZMQ_FD descriptors (edge-triggered: a wake-up drains the socket until
 * ZMQ_EVENTS says nothing is left). zmq_poll() over hundreds of sockets
 * would scan every one of them at each wake-up, a harness cost counted
 * against the broker; a scan of all of them happens only when epoll has
 * been silent for 100 ms (the safety net of the edge-triggered rule). */
static void *rthread_main(void *arg)
{
    rthread_t *t = arg;
    bench_thread_name("receivers");
    void **socks = calloc((size_t) t->count, sizeof *socks);
    char *checked = calloc((size_t) t->count, 1);
    struct epoll_event *evs = calloc((size_t) t->count, sizeof *evs);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int ok = socks && checked && evs && ep >= 0;
    for (int i = 0; i < t->count && ok; i++) {
        socks[i] = bench_dealer(t->ctx, t->endpoint);
        ok = socks[i] != NULL;
    }
    if (!ok || login_all(t, socks) != 0) {
        atomic_store(&t->ready, -1);
        goto done;
    }
    for (int i = 0; i < t->count && ok; i++) {
        int fd;
        size_t fdlen = sizeof fd;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t) i};
        ok = zmq_getsockopt(socks[i], ZMQ_FD, &fd, &fdlen) == 0 &&
             epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
    }
    if (!ok) {
        fprintf(stderr, "fanout_bench: epoll: %s\n", strerror(errno));
        atomic_store(&t->ready, -1);
        goto done;
    }
    atomic_store(&t->ready, 1);
    long expect = t->p->messages * t->count;
    int64_t last_any = bench_now_ns();
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (t->received < expect && !atomic_load(&t->stop)) {
        long before = t->received;
        int n = epoll_wait(ep, evs, t->count, 100);
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0) {
            for (int k = 0; k < n; k++) {
                uint32_t i = evs[k].data.u32;
                drain_socket(t, socks[i], &checked[i], &m);
            }
        } else {
            for (int i = 0; i < t->count; i++)
                drain_socket(t, socks[i], &checked[i], &m);
        }
        if (t->received > before)
            t->last_ns = last_any = bench_now_ns();
        else if (bench_now_ns() - last_any > 20 * (int64_t) 1000000000)
            break;
    }
    zmq_msg_close(&m);
done:
    for (int i = 0; socks && i < t->count; i++)
        if (socks[i])
            zmq_close(socks[i]);
    if (ep >= 0)
        close(ep);
    free(socks);
    free(checked);
    free(evs);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: fanout_bench [--recipients R] [--threads T] [--messages M] [--window W]\n"
            "                    [--size B]\n"
            "\n"
            "Live broadcast fan-out of causeway-broker: deliveries per second.\n"
            "  --recipients R  online recipients, one DEALER socket each (default 1000)\n"
            "  --threads T     receiver threads polling them (default 4)\n"
            "  --messages M    broadcasts sent (default 2000)\n"
            "  --window W      broadcasts in flight (default 128)\n"
            "  --size B        text bytes (default 100)\n");
}

int main(int argc, char **argv)
{
    params_t p = {1000, 4, 2000, 128, 100};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        long v = atol(argv[++i]);
        if (!strcmp(a, "--recipients") && v > 0 && v <= 100000) p.recipients = (int) v;
        else if (!strcmp(a, "--threads") && v > 0 && v <= 64) p.threads = (int) v;
        else if (!strcmp(a, "--messages") && v > 0) p.messages = v;
        else if (!strcmp(a, "--window") && v > 0 && v <= 100000) p.window = (int) v;
        else if (!strcmp(a, "--size") && v > 0 && v <= 60000) p.size = (int) v;
        else {
            usage(stderr);
            return 2;
        }
    }
    if (p.threads > p.recipients)
        p.threads = p.recipients;
    zsys_handler_set(NULL);
    cw_log_set_tag("bench");
    cw_log_set_level(CW_LOG_WARN);
    printf("fanout_bench --recipients %d --threads %d --messages %ld --window %d --size %d\n",
           p.recipients, p.threads, p.messages, p.window, p.size);
    /* Each DEALER socket holds a TCP connection and a mailbox descriptor;
     * the broker holds one descriptor per connection, all in one process. */
    long need = 3L * p.recipients + 256;
    if (bench_raise_nofile(need) < need) {
        fprintf(stderr, "fanout_bench: need %ld file descriptors (ulimit -n)\n", need);
        return 1;
    }
    cw_broker_config_t cfg;
    bench_broker_config(&cfg);
    cfg.heartbeat_ms = 60000; /* silent recipients must not expire during the run */
    cfg.max_sessions = (uint32_t) p.recipients + 16;
    bench_broker_t bb;
    if (bench_broker_start(&bb, &cfg) != 0)
        return 1;
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_MAX_SOCKETS, p.recipients + 64);
    zmq_ctx_set(ctx, ZMQ_THREAD_NAME_PREFIX, 1);

    rthread_t *th = calloc((size_t) p.threads, sizeof *th);
    pthread_t *tid = calloc((size_t) p.threads, sizeof *tid);
    int per = p.recipients / p.threads, extra = p.recipients % p.threads, first = 0;
    for (int i = 0; i < p.threads; i++) {
        th[i].p = &p;
        th[i].ctx = ctx;
        th[i].endpoint = bb.endpoint;
        th[i].first = first;
        th[i].count = per + (i < extra);
        first += th[i].count;
        pthread_create(&tid[i], NULL, rthread_main, &th[i]);
    }
    int failed = 0;
    for (int i = 0; i < p.threads; i++) {
        while (atomic_load(&th[i].ready) == 0)
            usleep(1000);
        failed |= atomic_load(&th[i].ready) < 0;
    }
    void *sock = bench_dealer(ctx, bb.endpoint);
    if (failed || !sock || bench_login(sock, "sender", 10000) != CW_OK) {
        fprintf(stderr, "fanout_bench: set-up failed\n");
        for (int i = 0; i < p.threads; i++)
            atomic_store(&th[i].stop, 1);
        failed = 1;
    }
    long sent = 0, answered = 0, bad_replies = 0;
    char *text = malloc((size_t) p.size + 1);
    memset(text, 'x', (size_t) p.size);
    text[p.size] = '\0';
    double cpu0 = bench_process_cpu_s();
    int64_t t0 = bench_now_ns();
    while (!failed && answered < p.messages) {
        while (sent < p.messages && sent - answered < p.window) {
            cw_env_t env;
            Causeway__V1__Send snd;
            char mid[32];
            snprintf(mid, sizeof mid, "%016lx", sent);
            cw_env_init(&env, (uint64_t) sent + 2);
            causeway__v1__send__init(&snd);
            snd.broadcast = 1;
            snd.text = text;
            snd.message_id = mid;
            env.body_case = CW_BODY(SEND);
            env.send = &snd;
            if (bench_send_env(sock, &env) != 0)
                break;
            sent++;
        }
        zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 20000) <= 0) {
            fprintf(stderr, "fanout_bench: no reply for 20 s\n");
            failed = 1;
            break;
        }
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, sock, 0) < 0) {
            zmq_msg_close(&m);
            failed = 1;
            break;
        }
        cw_env_t *env = NULL;
        const char *detail;
        if (cw_env_decode(zmq_msg_data(&m), zmq_msg_size(&m), 1u << 30, &env, NULL, &detail) ==
                CW_OK &&
            env->body_case == CW_BODY(REPLY)) {
            const Causeway__V1__Reply *r = env->reply;
            size_t delivered = 0;
            for (size_t k = 0; k < r->n_recipients; k++)
                delivered += r->recipients[k]->status == (Causeway__V1__Status) CW_DELIVERED;
            if (r->status != (Causeway__V1__Status) CW_OK || delivered != (size_t) p.recipients)
                bad_replies++;
            answered++;
        }
        cw_env_free(&env);
        zmq_msg_close(&m);
    }
    long received = 0, bad = 0;
    int64_t last = t0;
    for (int i = 0; i < p.threads; i++) {
        pthread_join(tid[i], NULL);
        received += th[i].received;
        bad += th[i].bad;
        if (th[i].last_ns > last)
            last = th[i].last_ns;
    }
    double cpu = bench_process_cpu_s() - cpu0;
    double secs = (double) (last - t0) / 1e9;
    long expect = p.messages * p.recipients;
    double rate = secs > 0 ? (double) received / secs : 0;
    if (sock)
        zmq_close(sock);
    zmq_ctx_term(ctx);
    bench_broker_stop(&bb);

    double us_per = received > 0 ? 1e6 / (double) received : 0;
    printf("%-24s %14s %10s %12s %14s %14s\n", "broadcast fan-out", "deliveries/s", "seconds",
           "delivered", "router us/dlv", "all CPU us/dlv");
    printf("%-24s %14.0f %10.3f %12ld %14.3f %14.3f\n", "causeway broker", rate, secs, received,
           bb.thread_cpu_s * us_per, cpu * us_per);
    printf("router us/dlv: CPU time of the broker's routing thread per Delivery (its whole\n"
           "life); all CPU: every thread of this process (broker, its libzmq I/O thread,\n"
           "receivers and theirs) during the run.\n");
    printf("broadcasts %ld x recipients %d = %ld expected; replies not all DELIVERED: %ld; "
           "bad Delivers: %ld\n", p.messages, p.recipients, expect, bad_replies, bad);
    printf("target >= 1,000,000 deliveries/s\n\n");
    bench_figure("fanout_deliveries_per_s", rate);
    bench_figure("fanout_router_us_per_delivery", bb.thread_cpu_s * us_per);
    bench_figure("fanout_cpu_us_per_delivery", cpu * us_per);
    free(text);
    free(th);
    free(tid);
    if (failed || received != expect || bad_replies || bad) {
        fprintf(stderr, "fanout_bench: Delivers went missing or were refused\n");
        return 1;
    }
    return 0;
}
