/*  live_bench: live (synchronous) routing of causeway-broker against a
 *  raw-libzmq relay, measured in the same run.
 *
 *  Two figures, each first on the raw relay (bench_util.h: a ROUTER that
 *  forwards a frame to a registered peer and answers the sender with a
 *  small frame; no protobuf, no sessions) and then on a real broker core
 *  (in-process, its own thread and libzmq context, no store):
 *
 *    throughput  one sender keeps W Send requests in flight to one online
 *                receiver; the figure is Delivers received per second,
 *                from the first send to the last Deliver;
 *    latency     A sends to B, B echoes each Deliver back to A; the
 *                figure is the A->broker->B->broker->A round trip, p50,
 *                p99 and p99.9 over R round trips, one at a time.
 *
 *  Both sides are driven by the same client loops with frames of the same
 *  sizes: the relay forwards frames of the Send's packed size and answers
 *  with frames of the Reply's packed size. By default the clients are lean
 *  (client_t: a frame packed once, with each Send's own request id and
 *  message id written into it in place, pushes told from replies by their
 *  first bytes, every Reply still checked), so that the client work is
 *  nearly the same on both sides and the difference is the broker's, while
 *  the broker sees what real clients send (no two Sends alike);
 *  --clients protobuf encodes every Send and decodes every frame, as an
 *  application would.
 *  Clients use their own libzmq context; relay and broker each have their
 *  own, with one I/O thread, so both sides get the same threads. Besides
 *  the rates it prints CPU time per message: the routing thread's (relay
 *  or broker) and the whole process's. Prints a table, "figure" lines for
 *  scripts/bench and the command line. Not a test: it never fails on a
 *  figure, only when a message goes missing or is refused.
 */
#define _GNU_SOURCE /* memmem */
#include "bench_util.h"
#include "cw_log.h"
#include "cw_status.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

typedef struct {
    long messages;     /* throughput: messages sent */
    int window;        /* throughput: Sends in flight */
    int size;          /* text bytes */
    long round_trips;  /* latency: measured round trips */
    int throughput;    /* run the throughput figure */
    int latency;       /* run the latency figure */
    int sides;         /* bit 0: raw relay, bit 1: causeway (for profiling one) */
    int lean;          /* lean clients (see client_t), else protobuf clients */
} params_t;

#define MID_LEN 16     /* message id bytes: a 64-bit counter in hex */
/* Lean request ids: from 2^21, so that each is a 4-byte varint (up to 2^28,
 * far beyond any run), written at bytes 3-6 of the frame: an Envelope
 * starts with version (0x08 0x01), then request_id (0x10 <varint>). The
 * broker's Reply starts the same way. */
#define LEAN_RID_BASE (1u << 21)
#define RID_OFF 3
#define RID_LEN 4

/* One side of a run: where to connect and how to speak. */
typedef struct {
    const params_t *p;
    void *ctx;                 /* clients' context */
    const char *endpoint;
    int raw;                   /* relay frames instead of envelopes */
    size_t raw_size;           /* raw: bytes per data frame (= packed Send) */
} side_t;

/* One client connection. Lean clients (the default) send a frame packed
 * once, into which each Send's request id (a 4-byte varint, LEAN_RID_BASE
 * up) and message id (16 hex digits) are written in place, and recognise
 * what they receive by its first bytes, nearly the same work on both
 * sides; protobuf clients encode every Send and decode every frame. Either
 * way every Reply is checked: lean causeway clients decode the first
 * DELIVERED Reply fully and then compare each further Reply with its bytes
 * but for the request id (the one field that differs), decoding any that
 * differ otherwise. */
typedef struct {
    const side_t *sd;
    void *sock;
    const char *to;            /* causeway: recipient name */
    int to_slot;               /* raw: recipient slot */
    char *text;                /* text of every Send */
    uint8_t *frame;            /* lean: the prepacked Send or raw frame */
    size_t frame_len;
    size_t mid_off;            /* lean causeway: where the message id sits in frame */
    uint8_t reply[128];        /* lean causeway: a verified DELIVERED Reply */
    size_t reply_len;          /* 0 until the first one */
    uint64_t sent;             /* Sends so far */
} client_t;

/* Registers (raw) or logs in (causeway) as slot/name. 0 or -1. */
static int join(const side_t *sd, void *sock, int slot, const char *name)
{
    if (!sd->raw)
        return bench_login(sock, name, 10000) == CW_OK ? 0 : -1;
    uint8_t reg[2] = {'R', (uint8_t) slot};
    if (zmq_send(sock, reg, 2, 0) != 2)
        return -1;
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&it, 1, 10000) <= 0)
        return -1;
    uint8_t buf[64];
    return zmq_recv(sock, buf, sizeof buf, 0) >= 1 && buf[0] == 'A' ? 0 : -1;
}

/* Packs Send number n to c->to into a fresh buffer (caller frees). */
static uint8_t *pack_send(const client_t *c, uint64_t n, size_t *len)
{
    char mid[MID_LEN + 1];
    snprintf(mid, sizeof mid, "%016llx", (unsigned long long) n);
    char *to_list[1] = {(char *) c->to};
    cw_env_t env;
    Causeway__V1__Send snd;
    cw_env_init(&env, n + 1);
    causeway__v1__send__init(&snd);
    snd.n_to = 1;
    snd.to = to_list;
    snd.text = c->text;
    snd.message_id = mid;
    env.body_case = CW_BODY(SEND);
    env.send = &snd;
    uint8_t *buf = NULL;
    cw_env_pack(&env, &buf, len);
    return buf;
}

/* Connects and joins as slot/name; Sends go to to/to_slot. 0 or -1
 * (message on stderr; c is closed). */
static int client_open(client_t *c, const side_t *sd, int slot, const char *name, const char *to,
                       int to_slot)
{
    memset(c, 0, sizeof *c);
    c->sd = sd;
    c->to = to;
    c->to_slot = to_slot;
    c->text = malloc((size_t) sd->p->size + 1);
    memset(c->text, 'x', (size_t) sd->p->size);
    c->text[sd->p->size] = '\0';
    if (sd->raw) {
        c->frame_len = sd->raw_size;
        c->frame = malloc(c->frame_len);
        memset(c->frame, 'x', c->frame_len);
        c->frame[0] = 'D';
        c->frame[1] = (uint8_t) to_slot;
    } else {
        /* the template: Send number LEAN_RID_BASE - 1 (request id LEAN_RID_BASE) */
        char mid[MID_LEN + 1];
        snprintf(mid, sizeof mid, "%016llx", (unsigned long long) (LEAN_RID_BASE - 1));
        c->frame = pack_send(c, LEAN_RID_BASE - 1, &c->frame_len);
        uint8_t *at = c->frame ? memmem(c->frame, c->frame_len, mid, MID_LEN) : NULL;
        if (!at || c->frame_len < RID_OFF + RID_LEN || c->frame[2] != 0x10 ||
            (c->frame[RID_OFF + RID_LEN - 1] & 0x80)) {
            fprintf(stderr, "live_bench: unexpected Send layout\n");
            free(c->text);
            free(c->frame);
            return -1;
        }
        c->mid_off = (size_t) (at - c->frame);
    }
    c->sock = bench_dealer(sd->ctx, sd->endpoint);
    if (!c->sock || join(sd, c->sock, slot, name) != 0) {
        fprintf(stderr, "live_bench: %s cannot join\n", name);
        if (c->sock)
            zmq_close(c->sock);
        free(c->text);
        free(c->frame);
        return -1;
    }
    return 0;
}

static void client_close(client_t *c)
{
    zmq_close(c->sock);
    free(c->text);
    free(c->frame);
}

/* Sends the next message. 0 or -1. */
static int client_send(client_t *c)
{
    const side_t *sd = c->sd;
    uint64_t n = c->sent++;
    if (sd->p->lean && !sd->raw) {
        /* this Send's own request id and message id, in place */
        uint64_t rid = LEAN_RID_BASE + n;
        for (int i = 0; i < RID_LEN; i++, rid >>= 7)
            c->frame[RID_OFF + i] = (uint8_t) ((rid & 0x7f) | (i < RID_LEN - 1 ? 0x80 : 0));
        char mid[MID_LEN + 1];
        snprintf(mid, sizeof mid, "%016llx", (unsigned long long) (LEAN_RID_BASE - 1 + n));
        memcpy(c->frame + c->mid_off, mid, MID_LEN);
    }
    if (sd->p->lean)
        return zmq_send(c->sock, c->frame, c->frame_len, 0) < 0 ? -1 : 0;
    if (sd->raw) {
        /* build the frame afresh, as a client building each message would */
        zmq_msg_t m;
        if (zmq_msg_init_size(&m, c->frame_len) != 0)
            return -1;
        uint8_t *d = zmq_msg_data(&m);
        memcpy(d, c->frame, c->frame_len);
        if (c->frame_len >= 2 + sizeof n)
            memcpy(d + 2, &n, sizeof n);
        if (zmq_msg_send(&m, c->sock, 0) < 0) {
            zmq_msg_close(&m);
            return -1;
        }
        return 0;
    }
    size_t len;
    uint8_t *buf = pack_send(c, n, &len);
    int rc = buf && zmq_send(c->sock, buf, len, 0) >= 0 ? 0 : -1;
    free(buf);
    return rc;
}

typedef enum { GOT_NONE, GOT_REPLY_OK, GOT_REPLY_BAD, GOT_DATA } got_t;

/* Classifies one received frame: a reply (good or not) or data (a Deliver
 * on causeway, a forwarded frame on the relay). */
static got_t client_classify(client_t *c, zmq_msg_t *m)
{
    const uint8_t *d = zmq_msg_data(m);
    size_t n = zmq_msg_size(m);
    if (c->sd->raw) {
        if (n >= 1 && d[0] == 'A')
            return GOT_REPLY_OK;
        return n >= 1 && d[0] == 'D' ? GOT_DATA : GOT_NONE;
    }
    if (c->sd->p->lean) {
        if (c->reply_len && n == c->reply_len && memcmp(d, c->reply, RID_OFF) == 0 &&
            memcmp(d + RID_OFF + RID_LEN, c->reply + RID_OFF + RID_LEN,
                   n - RID_OFF - RID_LEN) == 0)
            return GOT_REPLY_OK;
        if (bench_body_field(d, n) == 30) /* Envelope.deliver */
            return GOT_DATA;
    }
    cw_env_t *env = NULL;
    const char *detail;
    got_t got = GOT_NONE;
    if (cw_env_decode(d, n, 1u << 30, &env, NULL, &detail) == CW_OK) {
        if (env->body_case == CW_BODY(DELIVER)) {
            got = GOT_DATA;
        } else if (env->body_case == CW_BODY(REPLY)) {
            const Causeway__V1__Reply *r = env->reply;
            got = r->status == (Causeway__V1__Status) CW_OK && r->n_recipients == 1 &&
                          r->recipients[0]->status == (Causeway__V1__Status) CW_DELIVERED
                      ? GOT_REPLY_OK
                      : GOT_REPLY_BAD;
            if (got == GOT_REPLY_OK && n <= sizeof c->reply && n > RID_OFF + RID_LEN &&
                d[2] == 0x10 && !(d[RID_OFF + RID_LEN - 1] & 0x80)) {
                memcpy(c->reply, d, n);
                c->reply_len = n;
            }
        }
    }
    cw_env_free(&env);
    return got;
}

/* -------------------------------------------------------------------------
 * Throughput
 */

typedef struct {
    const side_t *sd;
    atomic_int ready;          /* 1 joined, -1 failed */
    atomic_int stop;           /* main gives up */
    long received;             /* out: data frames */
    int64_t last_ns;           /* out: time of the last one */
} receiver_t;

static void *receiver_main(void *arg)
{
    receiver_t *r = arg;
    bench_thread_name("receiver");
    client_t c;
    if (client_open(&c, r->sd, 0, "receiver", "sender", 1) != 0) {
        atomic_store(&r->ready, -1);
        return NULL;
    }
    atomic_store(&r->ready, 1);
    int64_t idle_limit = 20 * (int64_t) 1000000000, last_any = bench_now_ns();
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (r->received < r->sd->p->messages && !atomic_load(&r->stop)) {
        if (zmq_msg_recv(&m, c.sock, ZMQ_DONTWAIT) < 0) {
            zmq_pollitem_t it = {c.sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 100) == 0 && bench_now_ns() - last_any > idle_limit)
                break;
            continue;
        }
        if (client_classify(&c, &m) == GOT_DATA) {
            r->received++;
            r->last_ns = last_any = bench_now_ns();
        }
    }
    zmq_msg_close(&m);
    client_close(&c);
    return NULL;
}

typedef struct {
    double msgs_per_s;   /* Delivers received per second */
    double secs;         /* first send to last Deliver */
    long received;       /* Delivers received */
    long replies_bad;    /* replies that were not OK / DELIVERED */
    double cpu_s;        /* CPU time of the whole process during the run */
    double router_cpu_s; /* CPU time of the broker's or relay's thread (its whole life) */
} tp_result_t;

static int run_throughput(const side_t *sd, tp_result_t *res)
{
    const params_t *p = sd->p;
    memset(res, 0, sizeof *res);
    receiver_t r;
    memset(&r, 0, sizeof r);
    r.sd = sd;
    pthread_t rth;
    pthread_create(&rth, NULL, receiver_main, &r);
    while (atomic_load(&r.ready) == 0)
        usleep(1000);
    if (atomic_load(&r.ready) < 0) {
        pthread_join(rth, NULL);
        return -1;
    }
    client_t c;
    if (client_open(&c, sd, 1, "sender", "receiver", 0) != 0) {
        atomic_store(&r.stop, 1);
        pthread_join(rth, NULL);
        return -1;
    }
    long sent = 0, answered = 0;
    double cpu0 = bench_process_cpu_s();
    int64_t t0 = bench_now_ns();
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (answered < p->messages) {
        while (sent < p->messages && sent - answered < p->window && client_send(&c) == 0)
            sent++;
        if (zmq_msg_recv(&m, c.sock, ZMQ_DONTWAIT) < 0) {
            zmq_pollitem_t it = {c.sock, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&it, 1, 20000) <= 0) {
                fprintf(stderr, "live_bench: no reply for 20 s (%ld of %ld answered)\n",
                        answered, p->messages);
                break;
            }
            continue;
        }
        got_t g = client_classify(&c, &m);
        if (g == GOT_REPLY_OK || g == GOT_REPLY_BAD) {
            answered++;
            res->replies_bad += g == GOT_REPLY_BAD;
        }
    }
    zmq_msg_close(&m);
    pthread_join(rth, NULL);
    res->cpu_s = bench_process_cpu_s() - cpu0;
    res->received = r.received;
    res->secs = (double) ((r.last_ns > t0 ? r.last_ns : bench_now_ns()) - t0) / 1e9;
    res->msgs_per_s = res->secs > 0 ? (double) r.received / res->secs : 0;
    client_close(&c);
    return res->received == p->messages && res->replies_bad == 0 ? 0 : -1;
}

/* -------------------------------------------------------------------------
 * Latency
 */

typedef struct {
    const side_t *sd;
    atomic_int ready;          /* 1 joined, -1 failed */
    atomic_int stop;           /* main is done */
    long echoed;               /* out */
    long replies_bad;          /* out */
} echo_t;

static void *echo_main(void *arg)
{
    echo_t *e = arg;
    bench_thread_name("echo");
    client_t c;
    if (client_open(&c, e->sd, 0, "b", "a", 1) != 0) {
        atomic_store(&e->ready, -1);
        return NULL;
    }
    atomic_store(&e->ready, 1);
    zmq_msg_t m;
    zmq_msg_init(&m);
    while (!atomic_load(&e->stop)) {
        zmq_pollitem_t it = {c.sock, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            continue;
        while (zmq_msg_recv(&m, c.sock, ZMQ_DONTWAIT) >= 0) {
            got_t g = client_classify(&c, &m);
            if (g == GOT_DATA) {
                client_send(&c);
                e->echoed++;
            } else if (g == GOT_REPLY_BAD) {
                e->replies_bad++;
            }
        }
    }
    zmq_msg_close(&m);
    client_close(&c);
    return NULL;
}

typedef struct {
    double p50_us, p99_us, p999_us, max_us;
    long replies_bad;
} lat_result_t;

static int run_latency(const side_t *sd, lat_result_t *res)
{
    const params_t *p = sd->p;
    memset(res, 0, sizeof *res);
    echo_t e;
    memset(&e, 0, sizeof e);
    e.sd = sd;
    pthread_t eth;
    pthread_create(&eth, NULL, echo_main, &e);
    while (atomic_load(&e.ready) == 0)
        usleep(1000);
    if (atomic_load(&e.ready) < 0) {
        pthread_join(eth, NULL);
        return -1;
    }
    client_t c;
    if (client_open(&c, sd, 1, "a", "b", 0) != 0) {
        atomic_store(&e.stop, 1);
        pthread_join(eth, NULL);
        return -1;
    }
    long warmup = p->round_trips / 10 < 1000 ? p->round_trips / 10 : 1000;
    long total = warmup + p->round_trips;
    double *rtt = calloc((size_t) p->round_trips, sizeof *rtt);
    int rc = 0;
    zmq_msg_t m;
    zmq_msg_init(&m);
    for (long i = 0; i < total && rc == 0; i++) {
        int64_t t0 = bench_now_ns(), t_echo = 0;
        int have_reply = 0, have_echo = 0;
        client_send(&c);
        while (!(have_reply && have_echo)) {
            if (zmq_msg_recv(&m, c.sock, ZMQ_DONTWAIT) < 0) {
                zmq_pollitem_t it = {c.sock, 0, ZMQ_POLLIN, 0};
                if (zmq_poll(&it, 1, 10000) <= 0) {
                    fprintf(stderr, "live_bench: round trip %ld lost\n", i);
                    rc = -1;
                    break;
                }
                continue;
            }
            got_t g = client_classify(&c, &m);
            if (g == GOT_DATA) {
                t_echo = bench_now_ns();
                have_echo = 1;
            } else if (g == GOT_REPLY_OK || g == GOT_REPLY_BAD) {
                have_reply = 1;
                res->replies_bad += g == GOT_REPLY_BAD;
            }
        }
        if (rc == 0 && i >= warmup)
            rtt[i - warmup] = (double) (t_echo - t0) / 1000.0;
    }
    zmq_msg_close(&m);
    atomic_store(&e.stop, 1);
    pthread_join(eth, NULL);
    res->replies_bad += e.replies_bad;
    if (rc == 0) {
        res->p50_us = bench_quantile(rtt, (size_t) p->round_trips, 0.50);
        res->p99_us = bench_quantile(rtt, (size_t) p->round_trips, 0.99);
        res->p999_us = bench_quantile(rtt, (size_t) p->round_trips, 0.999);
        res->max_us = rtt[p->round_trips - 1];
    }
    free(rtt);
    client_close(&c);
    return rc == 0 && res->replies_bad == 0 ? 0 : -1;
}

/* -------------------------------------------------------------------------
 * Reporting
 */

/* Prints "figure <prefix>_<name> <value>": the prefix says which clients
 * drove the run, so lean and protobuf figures never mix in scripts/bench. */
static void figure(const params_t *p, const char *prefix, const char *name, double v)
{
    char full[128];
    snprintf(full, sizeof full, "%s%s_%s", prefix, p->lean ? "" : "_pb", name);
    bench_figure(full, v);
}

static void report_throughput(const params_t *p, const tp_result_t *tr, const tp_result_t *tc)
{
    double n = (double) p->messages;
    printf("%-32s %12s %10s %10s %14s %14s\n", "live unicast throughput", "msgs/s", "seconds",
           "delivered", "router us/msg", "all CPU us/msg");
    const tp_result_t *res[2] = {tr, tc};
    const char *label[2] = {"raw libzmq relay", "causeway broker"};
    const char *key[2] = {"raw", "causeway"};
    for (int i = 0; i < 2; i++) {
        if (!(p->sides & (1 << i)))
            continue;
        const tp_result_t *r = res[i];
        printf("%-32s %12.0f %10.3f %10ld %14.2f %14.2f\n", label[i], r->msgs_per_s, r->secs,
               r->received, r->router_cpu_s * 1e6 / n, r->cpu_s * 1e6 / n);
    }
    printf("router us/msg: CPU time of the relay's or the broker's routing thread per\n"
           "message; all CPU: every thread of this process (clients, libzmq I/O threads).\n");
    double ratio = tr->msgs_per_s > 0 ? tc->msgs_per_s / tr->msgs_per_s : 0;
    if (p->sides == 3)
        printf("causeway/raw %.2f (target >= 0.70)\n", ratio);
    if (tc->replies_bad)
        printf("%ld replies were not OK with the recipient DELIVERED\n", tc->replies_bad);
    printf("\n");
    if (p->sides == 3)
        figure(p, "live", "ratio", ratio);
    for (int i = 0; i < 2; i++) {
        if (!(p->sides & (1 << i)))
            continue;
        char name[64];
        snprintf(name, sizeof name, "%s_msgs_per_s", key[i]);
        figure(p, "live", name, res[i]->msgs_per_s);
        snprintf(name, sizeof name, "%s_router_us_per_msg", key[i]);
        figure(p, "live", name, res[i]->router_cpu_s * 1e6 / n);
        snprintf(name, sizeof name, "%s_cpu_us_per_msg", key[i]);
        figure(p, "live", name, res[i]->cpu_s * 1e6 / n);
    }
}

static void report_latency(const params_t *p, const lat_result_t *lr, const lat_result_t *lc)
{
    printf("%-32s %10s %10s %10s %10s\n", "round trip A->B->A (us)", "p50", "p99", "p99.9",
           "max");
    const lat_result_t *res[2] = {lr, lc};
    const char *label[2] = {"raw libzmq relay", "causeway broker"};
    const char *key[2] = {"raw", "causeway"};
    for (int i = 0; i < 2; i++)
        if (p->sides & (1 << i))
            printf("%-32s %10.1f %10.1f %10.1f %10.1f\n", label[i], res[i]->p50_us,
                   res[i]->p99_us, res[i]->p999_us, res[i]->max_us);
    double r50 = lr->p50_us > 0 ? lc->p50_us / lr->p50_us : 0;
    double r99 = lr->p99_us > 0 ? lc->p99_us / lr->p99_us : 0;
    double r999 = lr->p999_us > 0 ? lc->p999_us / lr->p999_us : 0;
    if (p->sides == 3)
        printf("causeway/raw p50 %.2f (target <= 1.2), p99 %.2f (target <= 1.3), p99.9 %.2f\n",
               r50, r99, r999);
    printf("\n");
    if (p->sides == 3) {
        figure(p, "rtt", "ratio_p50", r50);
        figure(p, "rtt", "ratio_p99", r99);
        figure(p, "rtt", "ratio_p999", r999);
    }
    for (int i = 0; i < 2; i++) {
        if (!(p->sides & (1 << i)))
            continue;
        char name[64];
        snprintf(name, sizeof name, "%s_p50_us", key[i]);
        figure(p, "rtt", name, res[i]->p50_us);
        snprintf(name, sizeof name, "%s_p99_us", key[i]);
        figure(p, "rtt", name, res[i]->p99_us);
        snprintf(name, sizeof name, "%s_p999_us", key[i]);
        figure(p, "rtt", name, res[i]->p999_us);
    }
}

/* -------------------------------------------------------------------------
 * Main
 */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: live_bench [--messages N] [--window W] [--size B] [--round-trips R]\n"
            "                  [--only throughput|latency] [--clients lean|protobuf]\n"
            "                  [--side raw|causeway]\n"
            "\n"
            "Live routing of causeway-broker against a raw-libzmq relay, in one run.\n"
            "  --messages N     throughput: messages sent (default 200000)\n"
            "  --window W       throughput: Send requests in flight (default 256)\n"
            "  --size B         text bytes per message (default 100)\n"
            "  --round-trips R  latency: measured round trips (default 20000)\n"
            "  --only WHAT      run only the throughput or only the latency figure\n"
            "  --clients lean|protobuf  lean (default): a Send packed once with each\n"
            "                   Send's own request id and message id written in place,\n"
            "                   frames recognised by their first bytes, nearly the same\n"
            "                   work as the raw clients; protobuf: every Send encoded,\n"
            "                   every frame decoded. Replies are checked either way.\n"
            "  --side raw|causeway  measure one side only (for profiling; no ratios)\n");
}

int main(int argc, char **argv)
{
    params_t p = {200000, 256, 100, 20000, 1, 1, 3, 1};
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
        const char *v = argv[++i];
        long n = atol(v);
        if (!strcmp(a, "--messages") && n > 0) p.messages = n;
        else if (!strcmp(a, "--window") && n > 0 && n <= 1000000) p.window = (int) n;
        else if (!strcmp(a, "--size") && n > 0 && n <= 60000) p.size = (int) n;
        else if (!strcmp(a, "--round-trips") && n > 0) p.round_trips = n;
        else if (!strcmp(a, "--only") && !strcmp(v, "throughput")) p.latency = 0;
        else if (!strcmp(a, "--only") && !strcmp(v, "latency")) p.throughput = 0;
        else if (!strcmp(a, "--clients") && !strcmp(v, "lean")) p.lean = 1;
        else if (!strcmp(a, "--clients") && !strcmp(v, "protobuf")) p.lean = 0;
        else if (!strcmp(a, "--side") && !strcmp(v, "raw")) p.sides = 1;
        else if (!strcmp(a, "--side") && !strcmp(v, "causeway")) p.sides = 2;
        else {
            usage(stderr);
            return 2;
        }
    }
    zsys_handler_set(NULL);
    cw_log_set_tag("bench");
    cw_log_set_level(CW_LOG_WARN);
    printf("live_bench --messages %ld --window %d --size %d --round-trips %ld --clients %s%s%s\n",
           p.messages, p.window, p.size, p.round_trips, p.lean ? "lean" : "protobuf",
           !p.latency ? " --only throughput" : !p.throughput ? " --only latency" : "",
           p.sides == 1 ? " --side raw" : p.sides == 2 ? " --side causeway" : "");
    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_THREAD_NAME_PREFIX, 1); /* clients' I/O thread: "1/ZMQbg/IO/0" */
    size_t send_size = bench_send_size("receiver", (size_t) p.size, MID_LEN, 1000000);
    size_t reply_size = bench_reply_size("receiver", 1000000);
    printf("frames: Send %zu bytes, Reply %zu bytes (the relay forwards and answers the same "
           "sizes)\n\n", send_size, reply_size);

    cw_broker_config_t cfg;
    bench_broker_config(&cfg);
    cfg.heartbeat_ms = 60000; /* the throughput receiver never speaks: no expiry */
    int failed = 0;
    side_t raw = {&p, ctx, NULL, 1, send_size};
    side_t cw = {&p, ctx, NULL, 0, 0};

    if (p.throughput) {
        tp_result_t tr = {0}, tc = {0};
        if (p.sides & 1) {
            bench_relay_t relay;
            if (bench_relay_start(&relay, reply_size, (int) cfg.sndhwm) != 0)
                return 1;
            raw.endpoint = relay.endpoint;
            failed |= run_throughput(&raw, &tr);
            bench_relay_stop(&relay);
            tr.router_cpu_s = relay.thread_cpu_s;
        }
        if (p.sides & 2) {
            bench_broker_t bb;
            if (bench_broker_start(&bb, &cfg) != 0)
                return 1;
            cw.endpoint = bb.endpoint;
            failed |= run_throughput(&cw, &tc);
            bench_broker_stop(&bb);
            tc.router_cpu_s = bb.thread_cpu_s;
        }
        report_throughput(&p, &tr, &tc);
    }
    if (p.latency) {
        lat_result_t lr = {0}, lc = {0};
        if (p.sides & 1) {
            bench_relay_t relay;
            if (bench_relay_start(&relay, reply_size, (int) cfg.sndhwm) != 0)
                return 1;
            raw.endpoint = relay.endpoint;
            failed |= run_latency(&raw, &lr);
            bench_relay_stop(&relay);
        }
        if (p.sides & 2) {
            bench_broker_t bb;
            if (bench_broker_start(&bb, &cfg) != 0)
                return 1;
            cw.endpoint = bb.endpoint;
            failed |= run_latency(&cw, &lc);
            bench_broker_stop(&bb);
        }
        report_latency(&p, &lr, &lc);
    }
    zmq_ctx_term(ctx);
    if (failed)
        fprintf(stderr, "live_bench: messages went missing or were refused (see above)\n");
    return failed ? 1 : 0;
}
