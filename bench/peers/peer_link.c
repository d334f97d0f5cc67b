/*  peer_link: client connections of peer_bench (see peer_link.h for what
 *  is hand-written here and why).
 *
 *  Thread: the one that made the link. Buffers grow as needed; a link
 *  never blocks except inside the bounded waits of join, subscribe and
 *  nats_request.
 */
#define _GNU_SOURCE /* memmem */
#include "peer_link.h"

#include "bench_util.h"
#include "cw_envelope.h"
#include "cw_status.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)
#define NATS_SID_DATA 1     /* subscriptions to the data subject */
#define NATS_SID_ACK 2      /* this link's JetStream ack inbox */
#define NATS_SID_REQ 9      /* peer_link_nats_request's inbox */

typedef struct {
    char *d;
    size_t len, cap, off;   /* bytes [off, len) are pending */
} buf_t;

struct peer_link {
    peer_proto_t proto;
    void *sock;              /* causeway, relay: DEALER */
    int fd;                  /* NATS, Redis: TCP, non-blocking; -1 otherwise */
    buf_t in, out;           /* TCP only */
    redisReader *rr;         /* Redis: RESP parser */
    peer_counts_t n;
    int printed_error;       /* the first error was printed */
    /* publishing */
    peer_pub_kind_t kind;
    char *target;            /* user, slot, subject, channel or key */
    char *text;              /* causeway: the Send's text */
    char *pre;               /* TCP, relay: the prepacked publish */
    size_t pre_len;
    char name[64];           /* causeway: own name, for message ids */
    uint64_t rid;            /* causeway: last request id used */
    int want;                /* causeway: expected per-recipient status */
    /* handshake and request state */
    uint64_t pongs;          /* NATS: PONGs seen */
    int subscribed;          /* Redis: SUBSCRIBE confirmed */
    char *req_reply;         /* NATS request: the reply once it came */
    uint32_t ack_every;      /* causeway: acknowledge every Nth durable push (0: never) */
};

/* --- buffers -------------------------------------------------------------- */

static int buf_reserve(buf_t *b, size_t more)
{
    if (b->off && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + more <= b->cap)
        return 0;
    if (b->off) {
        memmove(b->d, b->d + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + more <= b->cap)
            return 0;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *d = realloc(b->d, cap);
    if (!d)
        return -1;
    b->d = d;
    b->cap = cap;
    return 0;
}

static int buf_put(buf_t *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    memcpy(b->d + b->len, p, n);
    b->len += n;
    return 0;
}

static void link_error(peer_link_t *l, const char *what)
{
    l->n.errors++;
    if (!l->printed_error) {
        l->printed_error = 1;
        fprintf(stderr, "peer_bench: %s\n", what);
    }
}

/* --- connection ------------------------------------------------------------- */

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t) port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *) &a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

peer_link_t *peer_link_new(peer_proto_t proto, void *zctx, int port)
{
    peer_link_t *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->proto = proto;
    l->fd = -1;
    if (proto == PEER_CAUSEWAY || proto == PEER_RELAY) {
        char ep[64];
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
        l->sock = bench_dealer(zctx, ep);
        if (!l->sock) {
            fprintf(stderr, "peer_bench: cannot connect a DEALER to %s\n", ep);
            free(l);
            return NULL;
        }
        return l;
    }
    l->fd = tcp_connect(port);
    if (l->fd < 0) {
        fprintf(stderr, "peer_bench: cannot connect to 127.0.0.1:%d: %s\n", port, strerror(errno));
        free(l);
        return NULL;
    }
    if (proto == PEER_REDIS && !(l->rr = redisReaderCreate())) {
        close(l->fd);
        free(l);
        return NULL;
    }
    return l;
}

void peer_link_destroy(peer_link_t **p)
{
    peer_link_t *l = p ? *p : NULL;
    if (!l)
        return;
    if (l->sock)
        zmq_close(l->sock);
    if (l->fd >= 0)
        close(l->fd);
    if (l->rr)
        redisReaderFree(l->rr);
    free(l->in.d);
    free(l->out.d);
    free(l->target);
    free(l->text);
    free(l->pre);
    free(l->req_reply);
    free(l);
    *p = NULL;
}

const peer_counts_t *peer_link_counts(const peer_link_t *l)
{
    return &l->n;
}

void peer_link_reset(peer_link_t *l)
{
    memset(&l->n, 0, sizeof l->n);
}

zmq_pollitem_t peer_link_pollitem(const peer_link_t *l)
{
    zmq_pollitem_t it = {l->sock, l->fd, ZMQ_POLLIN, 0};
    if (l->fd >= 0 && l->out.len > l->out.off)
        it.events |= ZMQ_POLLOUT;
    return it;
}

/* --- causeway --------------------------------------------------------------- */

static void causeway_reply(peer_link_t *l, const void *d, size_t n)
{
    cw_env_t *env = NULL;
    const char *detail = NULL;
    if (cw_env_decode(d, n, 1u << 30, &env, NULL, &detail) != CW_OK) {
        link_error(l, "causeway: undecodable Reply");
        return;
    }
    const Causeway__V1__Reply *r = env->reply;
    /* A live Send is answered OK, a durable one ACCEPTED; either way every
     * recipient must have the wanted fate (DELIVERED or ACCEPTED). */
    int ok = r->status == (int) CW_OK || (int) r->status == l->want;
    if (ok && l->want != CW_OK)
        for (size_t i = 0; i < r->n_recipients; i++)
            ok = ok && (int) r->recipients[i]->status == l->want;
    if (ok) {
        l->n.acks++;
    } else {
        char what[512];
        snprintf(what, sizeof what, "causeway refused a request: %s (%s)",
                 cw_strerror(r->status), r->detail ? r->detail : "");
        link_error(l, what);
    }
    cw_env_free(&env);
}

/* A push to a link that acknowledges: counted, and every ack_every-th
 * durable one acknowledged (cumulatively, up to its seq) so that the
 * broker's push window keeps moving. */
static void causeway_deliver(peer_link_t *l, const void *d, size_t n)
{
    cw_env_t *env = NULL;
    const char *detail = NULL;
    if (cw_env_decode(d, n, 1u << 30, &env, NULL, &detail) != CW_OK) {
        link_error(l, "causeway: undecodable Deliver");
        return;
    }
    l->n.msgs++;
    uint64_t seq = env->deliver->seq;
    cw_env_free(&env);
    if (!seq || l->n.msgs % l->ack_every)
        return;
    cw_env_t ack_env;
    Causeway__V1__Ack ack;
    cw_env_init(&ack_env, ++l->rid);
    causeway__v1__ack__init(&ack);
    ack.seq = seq;
    ack_env.body_case = CW_BODY(ACK);
    ack_env.ack = &ack;
    if (bench_send_env(l->sock, &ack_env) != 0)
        link_error(l, "causeway: cannot send an Ack");
}

static int causeway_pump(peer_link_t *l)
{
    for (int i = 0; i < 4096; i++) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, l->sock, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&m);
            return errno == EAGAIN ? 0 : -1;
        }
        const uint8_t *d = zmq_msg_data(&m);
        size_t n = zmq_msg_size(&m);
        if (l->proto == PEER_RELAY) {
            if (n >= 1 && d[0] == 'A')
                l->n.acks++;
            else if (n >= 1 && d[0] == 'D')
                l->n.msgs++;
        } else {
            int body = bench_body_field(d, n);
            if (body == CW_BODY(REPLY))
                causeway_reply(l, d, n);
            else if (body == CW_BODY(DELIVER) && !l->ack_every)
                l->n.msgs++;
            else if (body == CW_BODY(DELIVER))
                causeway_deliver(l, d, n);
        }
        zmq_msg_close(&m);
    }
    return 0;
}

static int causeway_publish(peer_link_t *l)
{
    if (l->proto == PEER_RELAY)
        return zmq_send(l->sock, l->pre, l->pre_len, 0) == (int) l->pre_len ? 0 : -1;
    char mid[96];
    l->rid++;
    snprintf(mid, sizeof mid, "%s-%llu", l->name, (unsigned long long) l->rid);
    char *to[1] = {l->target};
    cw_env_t env;
    Causeway__V1__Send snd;
    cw_env_init(&env, l->rid);
    causeway__v1__send__init(&snd);
    if (l->kind == PUB_BROADCAST) {
        snd.broadcast = 1;
    } else {
        snd.n_to = 1;
        snd.to = to;
    }
    snd.durable = l->kind == PUB_DURABLE;
    snd.text = l->text;
    snd.message_id = mid;
    env.body_case = CW_BODY(SEND);
    env.send = &snd;
    zmq_msg_t m;
    if (cw_env_to_msg(&env, &m) != CW_OK)
        return -1;
    if (zmq_msg_send(&m, l->sock, 0) < 0) {
        zmq_msg_close(&m);
        return -1;
    }
    return 0;
}

/* --- NATS ------------------------------------------------------------------ */

/* Parses every complete NATS protocol message in l->in. */
static void nats_parse(peer_link_t *l)
{
    buf_t *b = &l->in;
    for (;;) {
        char *start = b->d + b->off, *end = b->d + b->len;
        char *eol = memmem(start, (size_t) (end - start), "\r\n", 2);
        if (!eol)
            return;
        size_t line_len = (size_t) (eol - start);
        if (line_len >= 4 && memcmp(start, "MSG ", 4) == 0) {
            /* MSG <subject> <sid> [reply-to] <#bytes> */
            char line[512];
            size_t k = line_len < sizeof line - 1 ? line_len : sizeof line - 1;
            memcpy(line, start, k);
            line[k] = '\0';
            char *tok[6];
            int nt = 0;
            for (char *s = strtok(line, " "); s && nt < 6; s = strtok(NULL, " "))
                tok[nt++] = s;
            if (nt < 4) {
                link_error(l, "NATS: malformed MSG line");
                b->off = b->len;
                return;
            }
            long sid = atol(tok[2]);
            size_t size = (size_t) atol(tok[nt - 1]);
            if ((size_t) (end - (eol + 2)) < size + 2)
                return; /* the payload is not all here yet */
            const char *payload = eol + 2;
            if (sid == NATS_SID_DATA) {
                l->n.msgs++;
            } else if (sid == NATS_SID_ACK) {
                /* a JetStream PubAck: {"stream":"B","seq":N} or {"error":...} */
                if (memmem(payload, size, "\"error\"", 7) || !memmem(payload, size, "\"seq\"", 5))
                    link_error(l, "NATS JetStream refused a publish");
                else
                    l->n.acks++;
            } else if (sid == NATS_SID_REQ) {
                free(l->req_reply);
                l->req_reply = strndup(payload, size);
            }
            b->off = (size_t) (payload + size + 2 - b->d);
            continue;
        }
        if (line_len >= 4 && memcmp(start, "PING", 4) == 0)
            buf_put(&l->out, "PONG\r\n", 6);
        else if (line_len >= 4 && memcmp(start, "PONG", 4) == 0) {
            l->pongs++;
            if (l->kind != PUB_DURABLE)
                l->n.acks++;
        } else if (line_len >= 4 && memcmp(start, "-ERR", 4) == 0) {
            char what[256];
            snprintf(what, sizeof what, "NATS: %.*s", (int) (line_len > 200 ? 200 : line_len),
                     start);
            link_error(l, what);
        } /* INFO and +OK need nothing */
        b->off = (size_t) (eol + 2 - b->d);
    }
}

/* --- Redis ----------------------------------------------------------------- */

static void redis_parse(peer_link_t *l)
{
    buf_t *b = &l->in;
    if (b->len > b->off) {
        redisReaderFeed(l->rr, b->d + b->off, b->len - b->off);
        b->off = b->len;
    }
    for (;;) {
        void *v = NULL;
        if (redisReaderGetReply(l->rr, &v) != REDIS_OK) {
            link_error(l, "Redis: protocol error in a reply");
            return;
        }
        if (!v)
            return;
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING) {
            const char *k = r->element[0]->str;
            if (strcmp(k, "message") == 0)
                l->n.msgs++;
            else if (strcmp(k, "subscribe") == 0)
                l->subscribed = 1;
        } else if (r->type == REDIS_REPLY_ERROR) {
            char what[256];
            snprintf(what, sizeof what, "Redis: %.200s", r->str);
            link_error(l, what);
        } else if ((l->kind == PUB_DURABLE && r->type == REDIS_REPLY_STRING) ||
                   (l->kind != PUB_DURABLE && r->type == REDIS_REPLY_INTEGER)) {
            l->n.acks++; /* XADD's entry id; PUBLISH's receiver count */
        } else if (r->type != REDIS_REPLY_STATUS) {
            link_error(l, "Redis: unexpected reply type");
        }
        freeReplyObject(r);
    }
}

/* --- TCP pump ---------------------------------------------------------------- */

static int tcp_pump(peer_link_t *l)
{
    while (l->out.len > l->out.off) {
        ssize_t w = send(l->fd, l->out.d + l->out.off, l->out.len - l->out.off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            return -1;
        }
        l->out.off += (size_t) w;
    }
    for (int i = 0; i < 16; i++) {
        if (buf_reserve(&l->in, READ_CHUNK) != 0)
            return -1;
        ssize_t r = recv(l->fd, l->in.d + l->in.len, READ_CHUNK, 0);
        if (r == 0)
            return -1;
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            return -1;
        }
        l->in.len += (size_t) r;
        if (l->proto == PEER_NATS)
            nats_parse(l);
        else
            redis_parse(l);
        if ((size_t) r < READ_CHUNK)
            break;
    }
    return 0;
}

int peer_link_pump(peer_link_t *l)
{
    if (l->sock)
        return causeway_pump(l);
    return tcp_pump(l);
}

int peer_link_publish(peer_link_t *l)
{
    if (l->sock)
        return causeway_publish(l);
    return buf_put(&l->out, l->pre, l->pre_len);
}

/* --- set-up -------------------------------------------------------------- */

/* What a bounded wait of the set-up waits for. */
static int pongs_moved(const peer_link_t *l, uint64_t since) { return l->pongs != since; }
static int acks_moved(const peer_link_t *l, uint64_t since) { return l->n.acks != since; }
static int is_subscribed(const peer_link_t *l, uint64_t since) { (void) since; return l->subscribed; }
static int has_reply(const peer_link_t *l, uint64_t since) { (void) since; return l->req_reply != NULL; }

/* Pumps l until done(l, since) or an error, for at most timeout_ms. 0 when
 * done. */
static int pump_until(peer_link_t *l, int (*done)(const peer_link_t *, uint64_t), uint64_t since,
                      int timeout_ms)
{
    int64_t deadline = bench_now_ns() + (int64_t) timeout_ms * 1000000;
    while (!done(l, since)) {
        if (l->n.errors || bench_now_ns() > deadline)
            return -1;
        zmq_pollitem_t it = peer_link_pollitem(l);
        zmq_poll(&it, 1, 10);
        if (peer_link_pump(l) != 0)
            return -1;
    }
    return 0;
}

int peer_link_join(peer_link_t *l, const char *name, int slot, int timeout_ms)
{
    snprintf(l->name, sizeof l->name, "%s", name ? name : "");
    switch (l->proto) {
    case PEER_CAUSEWAY:
        return bench_login(l->sock, name, timeout_ms) == CW_OK ? 0 : -1;
    case PEER_RELAY: {
        uint8_t reg[2] = {'R', (uint8_t) slot};
        if (zmq_send(l->sock, reg, 2, 0) != 2)
            return -1;
        uint64_t before = l->n.acks;
        int rc = pump_until(l, acks_moved, before, timeout_ms);
        l->n.acks = before;
        return rc;
    }
    case PEER_NATS: {
        const char *hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"peer_bench\"}"
                            "\r\nPING\r\n";
        buf_put(&l->out, hello, strlen(hello));
        l->kind = PUB_DURABLE; /* so the handshake PONG is not counted as an ack */
        return pump_until(l, pongs_moved, l->pongs, timeout_ms);
    }
    case PEER_REDIS:
        return 0;
    }
    return -1;
}

int peer_link_subscribe(peer_link_t *l, const char *subject, int timeout_ms)
{
    char cmd[512];
    if (l->proto == PEER_NATS) {
        snprintf(cmd, sizeof cmd, "SUB %s %d\r\nPING\r\n", subject, NATS_SID_DATA);
        buf_put(&l->out, cmd, strlen(cmd));
        l->kind = PUB_DURABLE;
        return pump_until(l, pongs_moved, l->pongs, timeout_ms);
    }
    if (l->proto == PEER_REDIS) {
        int n = snprintf(cmd, sizeof cmd, "*2\r\n$9\r\nSUBSCRIBE\r\n$%zu\r\n%s\r\n", strlen(subject),
                         subject);
        buf_put(&l->out, cmd, (size_t) n);
        return pump_until(l, is_subscribed, 0, timeout_ms);
    }
    return 0;
}

int peer_link_prepare(peer_link_t *l, peer_pub_kind_t kind, const char *target, size_t text_len)
{
    l->kind = kind;
    free(l->target);
    free(l->text);
    free(l->pre);
    l->target = strdup(target ? target : "");
    l->text = malloc(text_len + 1);
    if (!l->target || !l->text)
        return -1;
    memset(l->text, 'x', text_len);
    l->text[text_len] = '\0';
    l->pre = NULL;
    l->pre_len = 0;
    char head[512];
    int n = 0;
    switch (l->proto) {
    case PEER_CAUSEWAY:
        l->want = kind == PUB_DURABLE ? CW_ACCEPTED : CW_DELIVERED;
        return 0;
    case PEER_RELAY: {
        /* the relay forwards frames of the size of the equivalent Send */
        size_t size = bench_send_size("r", text_len, 16, 1);
        l->pre = calloc(1, size);
        if (!l->pre)
            return -1;
        l->pre[0] = 'D';
        l->pre[1] = (char) atoi(l->target);
        l->pre_len = size;
        return 0;
    }
    case PEER_NATS:
        if (kind == PUB_DURABLE) {
            n = snprintf(head, sizeof head, "SUB _INBOX.%s %d\r\n", l->name, NATS_SID_ACK);
            buf_put(&l->out, head, (size_t) n);
            n = snprintf(head, sizeof head, "PUB %s _INBOX.%s %zu\r\n", target, l->name, text_len);
        } else {
            n = snprintf(head, sizeof head, "PUB %s %zu\r\n", target, text_len);
        }
        break;
    case PEER_REDIS:
        if (kind == PUB_DURABLE)
            n = snprintf(head, sizeof head, "*5\r\n$4\r\nXADD\r\n$%zu\r\n%s\r\n$1\r\n*\r\n$1\r\nm\r\n$%zu\r\n",
                         strlen(target), target, text_len);
        else
            n = snprintf(head, sizeof head, "*3\r\n$7\r\nPUBLISH\r\n$%zu\r\n%s\r\n$%zu\r\n",
                         strlen(target), target, text_len);
        break;
    }
    const char *tail = l->proto == PEER_NATS && kind != PUB_DURABLE ? "\r\nPING\r\n" : "\r\n";
    size_t tl = strlen(tail);
    l->pre_len = (size_t) n + text_len + tl;
    l->pre = malloc(l->pre_len);
    if (!l->pre)
        return -1;
    memcpy(l->pre, head, (size_t) n);
    memcpy(l->pre + n, l->text, text_len);
    memcpy(l->pre + n + text_len, tail, tl);
    return 0;
}

int peer_link_nats_request(peer_link_t *l, const char *subject, const char *json, char *reply,
                           size_t reply_len, int timeout_ms)
{
    char head[512];
    int n = snprintf(head, sizeof head, "SUB _INBOX.req.%s %d\r\nPUB %s _INBOX.req.%s %zu\r\n",
                     l->name, NATS_SID_REQ, subject, l->name, strlen(json));
    buf_put(&l->out, head, (size_t) n);
    buf_put(&l->out, json, strlen(json));
    buf_put(&l->out, "\r\n", 2);
    free(l->req_reply);
    l->req_reply = NULL;
    if (pump_until(l, has_reply, 0, timeout_ms) != 0)
        return -1;
    snprintf(reply, reply_len, "%s", l->req_reply);
    return 0;
}

int peer_links_run(peer_link_t **links, size_t n, int (*done)(void *), void *arg, int timeout_ms)
{
    zmq_pollitem_t *items = calloc(n, sizeof *items);
    if (!items)
        return -1;
    int64_t deadline = bench_now_ns() + (int64_t) timeout_ms * 1000000;
    int rc = 0;
    while (!done(arg)) {
        if (bench_now_ns() > deadline) {
            rc = -1;
            break;
        }
        for (size_t i = 0; i < n; i++)
            items[i] = peer_link_pollitem(links[i]);
        if (zmq_poll(items, (int) n, 100) < 0 && errno != EINTR) {
            rc = -1;
            break;
        }
        for (size_t i = 0; i < n; i++)
            if (items[i].revents && peer_link_pump(links[i]) != 0) {
                fprintf(stderr, "peer_bench: a connection failed\n");
                rc = -1;
                goto out;
            }
    }
out:
    free(items);
    return rc;
}

void peer_link_ack_every(peer_link_t *l, uint32_t every)
{
    l->ack_every = every;
}

int peer_causeway_known_offline(void *zctx, int port, const char *name, int timeout_ms)
{
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    void *s = bench_dealer(zctx, ep);
    if (!s)
        return -1;
    int rc = bench_login(s, name, timeout_ms) == CW_OK ? 0 : -1;
    if (rc == 0) {
        cw_env_t env;
        Causeway__V1__Logout lo;
        cw_env_init(&env, 2);
        causeway__v1__logout__init(&lo);
        env.body_case = CW_BODY(LOGOUT);
        env.logout = &lo;
        rc = bench_send_env(s, &env) == 0 && bench_wait_reply(s, timeout_ms) == CW_OK ? 0 : -1;
    }
    zmq_close(s);
    return rc;
}

int peer_run_step(void *arg)
{
    peer_run_t *r = arg;
    int done = 1;
    for (size_t i = 0; i < r->n_pubs; i++) {
        const peer_counts_t *c = peer_link_counts(r->pubs[i]);
        if (c->errors) {
            r->failed = 1;
            return 1;
        }
        while (r->sent[i] < r->per_pub && (uint64_t) r->sent[i] - c->acks < (uint64_t) r->window) {
            if (peer_link_publish(r->pubs[i]) != 0) {
                r->failed = 1;
                return 1;
            }
            r->sent[i]++;
        }
        if (c->acks < (uint64_t) r->per_pub)
            done = 0;
    }
    double got = 0;
    for (size_t i = 0; i < r->n_subs; i++) {
        const peer_counts_t *c = peer_link_counts(r->subs[i]);
        if (c->errors) {
            r->failed = 1;
            return 1;
        }
        got += (double) c->msgs;
    }
    return done && got >= r->want_msgs;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

void peer_stats3(double *v, int n, double out[3])
{
    qsort(v, (size_t) n, sizeof *v, cmp_double);
    out[0] = v[0];
    out[1] = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    out[2] = v[n - 1];
}
