/*  client.c: the application side of libcauseway (see causeway.h).
 *
 *  Owns the cw_client_t: creates the zmq context, the inproc PAIR pipe and
 *  the first DEALER socket, starts the I/O thread (client_actor.c) and stops
 *  it. Requests are packed here, sent down the pipe with a deadline, and
 *  answered through the reply slot of the shared part; events are popped
 *  from the shared queue. Runs on the application thread (one at a time).
 *  Also here: message ids for sends that come without one, and the
 *  application's half of auto_ack (what counts as taken, the synchronous
 *  flush before logout); the I/O thread sends the batched Acks. And the
 *  application's side of causal event recording: opening the trace file
 *  and the clockd socket (handed to the I/O thread), reading the counters,
 *  waiting for a flush.
 *  Invariants: see client_internal.h (I1..I5); application request ids are
 *  1..2^63-1, the I/O thread's own requests use the upper half.
 */
#include "client_internal.h"
#include "cw_log.h"
#include "cw_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#define CW_AGENT_DEFAULT "libcauseway/" CW_VERSION

const char *cw_client_version(void) { return CW_VERSION; }

/* Frees everything cw_client_new may have built; the thread is not running. */
static void client_free(cw_client_t *c)
{
    if (c->first_mon) {
        zmq_socket_monitor(c->first_sock, NULL, 0);   /* first: see monitor_stop */
        zmq_close(c->first_mon);
    }
    if (c->first_sock)
        zmq_close(c->first_sock);
    if (c->actor_pipe)
        zmq_close(c->actor_pipe);
    if (c->pipe)
        zmq_close(c->pipe);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    while (c->ev_head) {
        event_node_t *n = c->ev_head;
        c->ev_head = n->next;
        cw_event_destroy(&n->ev);
        free(n);
    }
    if (c->clockd_sock)
        zmq_close(c->clockd_sock);
    cw_reply_destroy(&c->reply);
    cw_clock_destroy(&c->clock_copy);
    if (c->trace_fd >= 0)
        close(c->trace_fd);
    if (c->notify[0] >= 0)
        close(c->notify[0]);
    if (c->notify[1] >= 0)
        close(c->notify[1]);
    pthread_cond_destroy(&c->cond);
    pthread_mutex_destroy(&c->mu);
    cw_endpoint_list_free(&c->endpoints, c->n_endpoints);
    free(c->token_copy);
    free(c->agent);
    free(c->name);
    free(c->clockd_endpoint);
    explicit_bzero(&c->curve_cert, sizeof c->curve_cert);
    free(c);
}

static int set_nonblock_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    return fcntl(fd, F_SETFD, FD_CLOEXEC);
}

cw_client_t *cw_client_new(const char *endpoint, const cw_client_opts_t *opts)
{
    static const cw_client_opts_t defaults = {0};
    if (!opts)
        opts = &defaults;
    if (!endpoint)
        endpoint = CW_CLIENT_DEFAULT_ENDPOINT;

    cw_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->notify[0] = c->notify[1] = -1;
    c->trace_fd = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);

    int err = ENOMEM;
    char why[512];
    c->n_endpoints = cw_endpoint_list_parse("endpoint", endpoint, &c->endpoints, why, sizeof why);
    if (!c->n_endpoints) {
        err = errno;
        if (err == EINVAL)
            CW_WARN("client: %s", why);
        goto fail;
    }
    c->agent = strdup(opts->agent ? opts->agent : CW_AGENT_DEFAULT);
    c->quiet = opts->quiet;
    c->no_reconnect = opts->no_reconnect;
    c->pull = opts->pull;
    c->receipts = opts->receipts;
    c->auto_ack = opts->auto_ack;
    c->clockd_queue = opts->clockd_queue;
    c->clockd_linger_ms = opts->clockd_linger_ms ? opts->clockd_linger_ms : CW_CLOCKD_LINGER_MS;
    c->holdback_ms = opts->holdback_ms > 0 ? opts->holdback_ms : CW_HOLDBACK_MS_DEFAULT;
    if (opts->curve_server_key || opts->clockd_server_key) {
        err = EINVAL;
        if (!opts->curve_cert) {
            CW_WARN("client: CURVE needs the client's certificate (curve_cert)");
            goto fail;
        }
        if (cw_keypair_load(opts->curve_cert, true, &c->curve_cert, why, sizeof why) != 0 ||
            (opts->curve_server_key &&
             cw_public_key_load(opts->curve_server_key, c->curve_server, why, sizeof why) != 0) ||
            (opts->clockd_server_key &&
             cw_public_key_load(opts->clockd_server_key, c->clockd_server, why, sizeof why) != 0)) {
            CW_WARN("client: %s", why);
            goto fail;
        }
        c->curve = opts->curve_server_key != NULL;
        c->clockd_curve = opts->clockd_server_key != NULL;
        err = ENOMEM;
    }
    if (getrandom(&c->mid_random, sizeof c->mid_random, GRND_NONBLOCK) !=
        (ssize_t) sizeof c->mid_random) {
        /* No entropy yet (early boot): time, pid and address still make a
         * collision between two clients unlikely. */
        c->mid_random = cw_now_us() ^ ((uint64_t) getpid() << 40) ^ (uint64_t) (uintptr_t) c;
    }
    if (!c->agent)
        goto fail;
    if (opts->clockd_endpoint && !(c->clockd_endpoint = strdup(opts->clockd_endpoint)))
        goto fail;
    if (opts->trace_path) {
        c->trace_fd = open(opts->trace_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (c->trace_fd < 0) {
            err = errno;
            goto fail;
        }
    }
    if (pipe(c->notify) != 0 || set_nonblock_cloexec(c->notify[0]) != 0 ||
        set_nonblock_cloexec(c->notify[1]) != 0) {
        err = errno;
        goto fail;
    }

    c->ctx = zmq_ctx_new();
    if (!c->ctx) {
        err = errno;
        goto fail;
    }
    /* The DEALER is created and connected here so that a malformed endpoint
     * fails cw_client_new instead of the I/O thread. */
    c->first_sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->first_sock) {
        err = errno;
        goto fail;
    }
    int zero = 0;
    zmq_setsockopt(c->first_sock, ZMQ_LINGER, &zero, sizeof zero);
    c->first_mon = cw_client_monitor_new(c, c->first_sock);
    if (cw_client_secure_sock(c, c->first_sock, 0) != 0 ||
        zmq_connect(c->first_sock, c->endpoints[0]) != 0) {
        err = errno;
        goto fail;
    }

    /* The daemon's socket too (ZMQ_IMMEDIATE: a send without a connection
     * fails at once instead of queueing; see client_trace.c). */
    if (c->clockd_endpoint) {
        int one = 1;
        c->clockd_sock = zmq_socket(c->ctx, ZMQ_DEALER);
        if (!c->clockd_sock) {
            err = errno;
            goto fail;
        }
        zmq_setsockopt(c->clockd_sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_setsockopt(c->clockd_sock, ZMQ_IMMEDIATE, &one, sizeof one);
        if (cw_client_secure_sock(c, c->clockd_sock, 1) != 0 ||
            zmq_connect(c->clockd_sock, c->clockd_endpoint) != 0) {
            err = errno;
            goto fail;
        }
    }

    char addr[64];
    snprintf(addr, sizeof addr, "inproc://cw-client-%p", (void *) c);
    c->pipe = zmq_socket(c->ctx, ZMQ_PAIR);
    c->actor_pipe = zmq_socket(c->ctx, ZMQ_PAIR);
    if (!c->pipe || !c->actor_pipe || zmq_bind(c->pipe, addr) != 0 ||
        zmq_connect(c->actor_pipe, addr) != 0) {
        err = errno;
        goto fail;
    }
    zmq_setsockopt(c->pipe, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(c->actor_pipe, ZMQ_LINGER, &zero, sizeof zero);

    /* From here the I/O thread owns actor_pipe, first_sock and clockd_sock. */
    err = pthread_create(&c->thread, NULL, cw_client_actor_main, c);
    if (err != 0)
        goto fail;
    c->thread_started = 1;
    return c;

fail:
    client_free(c);
    errno = err;
    return NULL;
}

const char *cw_client_cur_endpoint(cw_client_t *c)
{
    pthread_mutex_lock(&c->mu);
    const char *ep = c->endpoints[c->ep_cur];
    pthread_mutex_unlock(&c->mu);
    return ep;
}

const char *cw_client_endpoint(cw_client_t *c)
{
    return c ? cw_client_cur_endpoint(c) : NULL;
}

size_t cw_client_endpoint_count(const cw_client_t *c)
{
    return c ? c->n_endpoints : 0;
}

const char *cw_client_endpoint_at(const cw_client_t *c, size_t i)
{
    return c && i < c->n_endpoints ? c->endpoints[i] : NULL;
}

size_t cw_client_resume_token(cw_client_t *c, uint8_t *buf, size_t size)
{
    if (!c)
        return 0;
    pthread_mutex_lock(&c->mu);
    size_t n = c->token_copy ? c->token_copy_len : 0;
    if (buf && n <= size)
        memcpy(buf, c->token_copy, n);
    pthread_mutex_unlock(&c->mu);
    return n;
}

int cw_client_secure_sock(const cw_client_t *c, void *sock, int clockd)
{
    int ivl = CW_HANDSHAKE_MS;
    zmq_setsockopt(sock, ZMQ_HANDSHAKE_IVL, &ivl, sizeof ivl);
    if (!(clockd ? c->clockd_curve : c->curve))
        return 0;
    char why[256];
    if (cw_curve_client_apply(sock, &c->curve_cert, clockd ? c->clockd_server : c->curve_server,
                              why, sizeof why) != 0) {
        CW_WARN("client: %s", why);
        errno = EINVAL;
        return -1;
    }
    return 0;
}

void *cw_client_monitor_new(cw_client_t *c, void *sock)
{
    char addr[96];
    snprintf(addr, sizeof addr, "inproc://cw-mon-%p-%u", (void *) c, c->mon_count++);
    int events = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                 ZMQ_EVENT_CONNECTED | ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_DISCONNECTED;
    if (zmq_socket_monitor(sock, addr, events) != 0)
        return NULL;
    void *mon = zmq_socket(c->ctx, ZMQ_PAIR);
    int zero = 0;
    if (mon)
        zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero);
    if (mon && zmq_connect(mon, addr) != 0) {
        zmq_close(mon);
        mon = NULL;
    }
    if (!mon)
        zmq_socket_monitor(sock, NULL, 0);
    return mon;
}

const char *cw_client_handshake_error(cw_client_t *c, char *buf, size_t size)
{
    pthread_mutex_lock(&c->mu);
    int have = c->hs_error[0] != '\0';
    if (have && size)
        snprintf(buf, size, "%s", c->hs_error);
    pthread_mutex_unlock(&c->mu);
    return have && size ? buf : NULL;
}

/* --- diagnosis of an endpoint that does not work ------------------------ */

/* A ZMTP 3 peer's greeting starts with this signature (RFC 23): 0xFF, eight
 * bytes of padding, 0x7F. Every libzmq peer sends it as soon as the TCP
 * connection is up, without waiting for ours. */
static int zmtp_signature(const unsigned char *b, size_t n)
{
    return n >= 1 && b[0] == 0xFF && (n < 10 || b[9] == 0x7F);
}

/* Milliseconds left until deadline (CLOCK_MONOTONIC ms), at least 0. */
static int ms_left(int64_t deadline)
{
    int64_t left = deadline - cw_mono_ms();
    return left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int) left;
}

const char *cw_client_diagnose(cw_client_t *c, int timeout_ms, char *buf, size_t size)
{
    if (!c || !buf || !size || strncmp(cw_client_cur_endpoint(c), "tcp://", 6) != 0)
        return NULL;
    const char *ep = cw_client_cur_endpoint(c);
    char host[256], port[16];
    const char *hp = ep + 6;
    const char *colon = strrchr(hp, ':');
    if (!colon || (size_t) (colon - hp) >= sizeof host || strlen(colon + 1) >= sizeof port)
        return NULL;
    snprintf(host, sizeof host, "%.*s", (int) (colon - hp), hp);
    snprintf(port, sizeof port, "%s", colon + 1);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1] */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    /* libzmq accepts "tcp://src;host:port"; probe the destination only. */
    char *semi = strchr(host, ';');
    if (semi)
        memmove(host, semi + 1, strlen(semi));
    int64_t deadline = cw_mono_ms() + (timeout_ms < 0 ? 1000 : timeout_ms);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(buf, size, "cannot connect to %s: host '%s': %s", ep, host, gai_strerror(gai));
        return buf;
    }
    int err = 0, fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            err = errno;
            close(fd);
            fd = -1;
            continue;
        }
        struct pollfd pfd = {fd, POLLOUT, 0};
        socklen_t len = sizeof err;
        if (poll(&pfd, 1, ms_left(deadline)) != 1) {
            err = ETIMEDOUT;
        } else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        if (err) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(buf, size, "cannot connect to %s: %s%s", ep, strerror(err),
                 err == ECONNREFUSED ? " (is the broker running there?)" : "");
        return buf;
    }
    /* Connected: a ZeroMQ peer greets at once. */
    unsigned char greet[64];
    ssize_t n = 0;
    struct pollfd pfd = {fd, POLLIN, 0};
    int wait = ms_left(deadline);
    if (poll(&pfd, 1, wait) == 1)
        n = recv(fd, greet, sizeof greet, 0);
    else
        n = -2;
    close(fd);
    if (n > 0 && zmtp_signature(greet, (size_t) n))
        return NULL; /* a ZeroMQ peer: the problem is elsewhere */
    if (n == -2) {
        snprintf(buf, size, "%s accepted a TCP connection but sent no ZeroMQ greeting within %d ms: "
                 "not a ZeroMQ service (a causeway broker greets at once)", ep, wait);
    } else if (n > 0) {
        char shown[48];
        size_t k = 0;
        for (ssize_t i = 0; i < n && k + 1 < sizeof shown; i++)
            shown[k++] = greet[i] >= 0x20 && greet[i] < 0x7F ? (char) greet[i] : '.';
        shown[k] = '\0';
        snprintf(buf, size, "%s is not a ZeroMQ service: it answered \"%s\" instead of a ZeroMQ "
                 "greeting", ep, shown);
    } else {
        snprintf(buf, size, "%s accepted a TCP connection and closed it without a ZeroMQ "
                 "greeting: not a ZeroMQ service", ep);
    }
    return buf;
}

void cw_client_destroy(cw_client_t **p)
{
    if (!p || !*p)
        return;
    cw_client_t *c = *p;
    *p = NULL;
    if (c->thread_started) {
        cmd_hdr_t hdr = {.type = CMD_TERM, .rid = 0, .deadline = 0};
        if (zmq_send(c->pipe, &hdr, sizeof hdr, 0) < 0)
            abort();   /* inproc PAIR to our own thread: can't fail */
        pthread_join(c->thread, NULL);
        /* The I/O thread closed its sockets on the way out. */
        c->actor_pipe = NULL;
        c->first_sock = NULL;
        c->first_mon = NULL;
        c->clockd_sock = NULL;
    }
    client_free(c);
}

/* Deadline in monotonic ms for a timeout (< 0: none). */
static int64_t deadline_for(int timeout_ms)
{
    return timeout_ms < 0 ? INT64_MAX : cw_mono_ms() + timeout_ms;
}

/* Waits on cond until deadline (monotonic ms). Returns 0, or ETIMEDOUT. */
static int cond_wait_until(cw_client_t *c, int64_t deadline)
{
    if (deadline == INT64_MAX)
        return pthread_cond_wait(&c->cond, &c->mu);
    struct timespec ts = {.tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000L};
    return pthread_cond_timedwait(&c->cond, &c->mu, &ts);
}

/* Sends env (request_id assigned here) to the I/O thread and waits for its
 * reply. Returns the status; *out gets the broker's reply if out is not NULL
 * and there is one. */
static cw_status_t request(cw_client_t *c, cw_env_t *env, int timeout_ms, cw_reply_t **out)
{
    if (out)
        *out = NULL;
    env->request_id = ++c->next_rid;
    int64_t deadline = deadline_for(timeout_ms);

    size_t len = causeway__v1__envelope__get_packed_size(env);
    zmq_msg_t msg;
    if (zmq_msg_init_size(&msg, sizeof(cmd_hdr_t) + len) != 0)
        return CW_ERR_NOMEM;
    cmd_hdr_t hdr = {.type = CMD_REQUEST, .rid = env->request_id, .deadline = deadline};
    uint8_t *data = zmq_msg_data(&msg);
    memcpy(data, &hdr, sizeof hdr);
    causeway__v1__envelope__pack(env, data + sizeof hdr);

    pthread_mutex_lock(&c->mu);
    c->waiting_rid = env->request_id;
    c->reply_ready = 0;
    c->conn_refused = 0; /* a fresh failed attempt is needed to fail this one */
    pthread_mutex_unlock(&c->mu);

    if (zmq_msg_send(&msg, c->pipe, 0) < 0) {
        zmq_msg_close(&msg);
        pthread_mutex_lock(&c->mu);
        c->waiting_rid = 0;
        pthread_mutex_unlock(&c->mu);
        return CW_ERR_IO;
    }

    pthread_mutex_lock(&c->mu);
    while (!c->reply_ready && !c->hs_fatal && !c->conn_refused)
        if (cond_wait_until(c, deadline) == ETIMEDOUT && !c->reply_ready)
            break;
    cw_status_t status = c->hs_error[0] ? CW_ERR_HANDSHAKE
                         : c->conn_refused ? CW_ERR_UNREACHABLE
                                           : CW_ERR_TIMEOUT;
    cw_reply_t *reply = NULL;
    if (c->reply_ready) {
        status = c->reply_status;
        reply = c->reply;
        if (status == CW_ERR_DISCONNECTED && c->hs_error[0])
            status = CW_ERR_HANDSHAKE; /* the connection was lost to a failed handshake */
    }
    c->reply = NULL;
    c->reply_ready = 0;
    c->waiting_rid = 0;   /* I2: a late reply is now dropped by the I/O thread */
    pthread_mutex_unlock(&c->mu);

    if (out)
        *out = reply;
    else
        cw_reply_destroy(&reply);
    return status;
}

static cw_status_t login_as(cw_client_t *c, const char *name, const uint8_t *token,
                            size_t token_len, int timeout_ms, cw_reply_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!c || !name || (token_len && !token))
        return CW_ERR_INVALID;
    char *copy = strdup(name);
    if (!copy)
        return CW_ERR_NOMEM;
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Login login = CAUSEWAY__V1__LOGIN__INIT;
    login.name = copy;
    login.agent = c->agent;
    login.quiet = c->quiet;
    login.pull = c->pull;
    login.receipts = c->receipts;
    login.resume_token.data = (uint8_t *) token;
    login.resume_token.len = token_len;
    env.body_case = CW_BODY(LOGIN);
    env.login = &login;
    /* Several endpoints: one that refuses the connection passes the login
     * to the next (each tried once, within the one timeout). */
    int64_t deadline = deadline_for(timeout_ms);
    cw_status_t st = request(c, &env, timeout_ms, reply);
    for (size_t tried = 1; st == CW_ERR_UNREACHABLE && tried < c->n_endpoints; tried++) {
        int left = timeout_ms;
        if (timeout_ms >= 0) {
            int64_t l = deadline - cw_mono_ms();
            if (l <= 0)
                break;
            left = (int) l;
        }
        cmd_hdr_t hdr = {.type = CMD_NEXT_EP, .rid = 0, .deadline = 0};
        if (zmq_send(c->pipe, &hdr, sizeof hdr, 0) < 0)
            break;
        if (reply)
            cw_reply_destroy(reply);
        st = request(c, &env, left, reply);
    }
    if (st == CW_OK) {
        free(c->name);
        c->name = copy;
    } else {
        free(copy);
    }
    return st;
}

cw_status_t cw_client_login(cw_client_t *c, const char *name, int timeout_ms, cw_reply_t **reply)
{
    return login_as(c, name, NULL, 0, timeout_ms, reply);
}

cw_status_t cw_client_login_resume(cw_client_t *c, const char *name, const uint8_t *token,
                                   size_t token_len, int timeout_ms, cw_reply_t **reply)
{
    return login_as(c, name, token, token_len, timeout_ms, reply);
}

cw_status_t cw_client_logout(cw_client_t *c, int timeout_ms)
{
    if (!c)
        return CW_ERR_INVALID;
    if (c->auto_ack && c->name) {
        /* What the application took is acknowledged (and committed) before
         * the session ends; the Logout gets what is left of the time. */
        int64_t deadline = deadline_for(timeout_ms);
        cw_status_t st = cw_client_ack_flush(c, timeout_ms);
        if (st != CW_OK)
            CW_DEBUG("client: acknowledging before logout: %s", cw_status_name(st));
        if (timeout_ms >= 0) {
            int64_t left = deadline - cw_mono_ms();
            timeout_ms = left > 0 ? (int) left : 0;
        }
    }
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Logout logout = CAUSEWAY__V1__LOGOUT__INIT;
    env.body_case = CW_BODY(LOGOUT);
    env.logout = &logout;
    cw_status_t st = request(c, &env, timeout_ms, NULL);
    /* OK, NOT_LOGGED_IN and DISCONNECTED all leave us without a session. */
    if (st == CW_OK || st == CW_NOT_LOGGED_IN || st == CW_ERR_DISCONNECTED) {
        free(c->name);
        c->name = NULL;
    }
    return st;
}

char *cw_client_message_id(cw_client_t *c, char *buf, size_t size)
{
    if (size == 0)
        return buf;
    /* A name is at most 64 bytes: 64 + 1 + 16 + 1 + 20 + NUL < 128. */
    snprintf(buf, size, "%s-%016" PRIx64 "-%" PRIu64, c->name ? c->name : "anon",
             c->mid_random, ++c->mid_count);
    return buf;
}

cw_status_t cw_client_send(cw_client_t *c, const cw_send_t *m, int timeout_ms, cw_reply_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!c || !m || !m->text || (m->n_to && !m->to) || (m->broadcast != 0) == (m->n_to != 0))
        return CW_ERR_INVALID;
    for (size_t i = 0; i < m->n_to; i++)
        if (!m->to[i])
            return CW_ERR_INVALID;
    char idbuf[CW_MESSAGE_ID_MAX];
    const char *mid = m->message_id;
    if (!mid || !*mid)
        mid = cw_client_message_id(c, idbuf, sizeof idbuf);
    cw_env_t env;
    cw_env_init(&env, 0);
    cw_send_msg_t send = CAUSEWAY__V1__SEND__INIT;
    /* protobuf-c's struct is not const-correct; packing only reads. */
    send.to = (char **) (uintptr_t) m->to;
    send.n_to = m->n_to;
    send.broadcast = m->broadcast;
    send.text = (char *) (uintptr_t) m->text;
    send.durable = m->durable;
    send.message_id = (char *) (uintptr_t) mid;
    send.ttl_s = m->ttl_s;
    send.receipt = m->durable && m->receipt;
    env.body_case = CW_BODY(SEND);
    env.send = &send;
    cw_status_t st = request(c, &env, timeout_ms, reply);
    if (!reply)
        return st;
    /* Every outcome but these two carries the message id, so that the
     * caller can retry with it. */
    if (!*reply && st != CW_ERR_INVALID && st != CW_ERR_NOMEM) {
        *reply = calloc(1, sizeof **reply);
        if (*reply) {
            (*reply)->status = st;
            (*reply)->detail = cw_conv_strdup("");
        }
    }
    if (*reply)
        (*reply)->message_id = cw_conv_strdup(mid);   /* NULL only out of memory */
    return st;
}

cw_status_t cw_client_who(cw_client_t *c, int timeout_ms, cw_reply_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!c)
        return CW_ERR_INVALID;
    cw_reply_t *all = NULL;
    char after[CW_NAME_MAX_HARD + 1] = "";
    for (;;) {
        cw_env_t env;
        cw_env_init(&env, 0);
        Causeway__V1__Who who = CAUSEWAY__V1__WHO__INIT;
        who.after = after;
        env.body_case = CW_BODY(WHO);
        env.who = &who;
        cw_reply_t *page = NULL;
        cw_status_t st = request(c, &env, timeout_ms, &page);
        if (!all) {
            all = page;
        } else if (page) {
            /* Join: the page's users after the ones we have. */
            cw_user_t *u = page->n_users
                               ? realloc(all->users, (all->n_users + page->n_users) * sizeof *u)
                               : all->users;
            if (page->n_users && !u) {
                cw_reply_destroy(&page);
                st = CW_ERR_NOMEM;
            } else {
                memcpy(u + all->n_users, page->users, page->n_users * sizeof *u);
                all->users = u;
                all->n_users += page->n_users;
                free(page->users);
                page->users = NULL;
                page->n_users = 0;
                free(all->detail);
                all->detail = page->detail;
                page->detail = NULL;
                all->status = page->status;
                /* A later page refused (RATE_LIMITED, FLOODED, ...): what
                 * we have is still only part of the log. */
                all->truncated = st == CW_OK ? page->truncated : 1;
                cw_reply_destroy(&page);
            }
        }
        if (st != CW_OK || !all || !all->truncated || !all->n_users ||
            strlen(all->users[all->n_users - 1].name) >= sizeof after) {
            if (reply)
                *reply = all;
            else
                cw_reply_destroy(&all);
            return st;
        }
        snprintf(after, sizeof after, "%s", all->users[all->n_users - 1].name);
    }
}

cw_status_t cw_client_stats(cw_client_t *c, int timeout_ms, cw_reply_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!c)
        return CW_ERR_INVALID;
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Stats stats = CAUSEWAY__V1__STATS__INIT;
    env.body_case = CW_BODY(STATS);
    env.stats = &stats;
    return request(c, &env, timeout_ms, reply);
}

/* Sessions and Queues: every page, joined (see causeway.h). */
static cw_status_t operator_pages(cw_client_t *c, int body, int timeout_ms, cw_reply_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!c)
        return CW_ERR_INVALID;
    cw_reply_t *all = NULL;
    char after[CW_NAME_MAX_HARD + 1] = "";
    cw_status_t st = CW_OK;
    for (int pages = 0; pages < 100000; pages++) {
        cw_env_t env;
        cw_env_init(&env, 0);
        Causeway__V1__Sessions sreq = CAUSEWAY__V1__SESSIONS__INIT;
        Causeway__V1__Queues qreq = CAUSEWAY__V1__QUEUES__INIT;
        sreq.after = qreq.after = after;
        env.body_case = (Causeway__V1__Envelope__BodyCase) body;
        if (body == CW_BODY(SESSIONS))
            env.sessions = &sreq;
        else
            env.queues = &qreq;
        cw_reply_t *page = NULL;
        st = request(c, &env, timeout_ms, &page);
        if (!all) {
            all = page;
            page = NULL;
        } else if (page && st == CW_OK) {
            /* Join: the page's entries after the ones we have. */
            if (body == CW_BODY(SESSIONS) && page->n_sessions) {
                cw_session_info_t *s = realloc(all->sessions, (all->n_sessions + page->n_sessions) *
                                                                  sizeof *s);
                if (!s) {
                    st = CW_ERR_NOMEM;
                } else {
                    memcpy(s + all->n_sessions, page->sessions, page->n_sessions * sizeof *s);
                    all->sessions = s;
                    all->n_sessions += page->n_sessions;
                    page->n_sessions = 0;
                }
            } else if (body == CW_BODY(QUEUES) && page->n_queues) {
                cw_queue_info_t *q = realloc(all->queues, (all->n_queues + page->n_queues) *
                                                              sizeof *q);
                if (!q) {
                    st = CW_ERR_NOMEM;
                } else {
                    memcpy(q + all->n_queues, page->queues, page->n_queues * sizeof *q);
                    all->queues = q;
                    all->n_queues += page->n_queues;
                    page->n_queues = 0;
                }
            }
            all->truncated = st == CW_OK ? page->truncated : 1;
        } else if (all) {
            all->truncated = 1; /* a later page refused: only part of the list */
            all->status = st;
        }
        cw_reply_destroy(&page);
        size_t n = all ? (body == CW_BODY(SESSIONS) ? all->n_sessions : all->n_queues) : 0;
        const char *last = !n ? NULL
                           : body == CW_BODY(SESSIONS) ? all->sessions[n - 1].name
                                                       : all->queues[n - 1].name;
        if (st != CW_OK || !all || !all->truncated || !last || strlen(last) >= sizeof after ||
            strcmp(last, after) == 0)
            break;
        snprintf(after, sizeof after, "%s", last);
    }
    if (reply)
        *reply = all;
    else
        cw_reply_destroy(&all);
    return st;
}

cw_status_t cw_client_sessions(cw_client_t *c, int timeout_ms, cw_reply_t **reply)
{
    return operator_pages(c, CW_BODY(SESSIONS), timeout_ms, reply);
}

cw_status_t cw_client_queues(cw_client_t *c, int timeout_ms, cw_reply_t **reply)
{
    return operator_pages(c, CW_BODY(QUEUES), timeout_ms, reply);
}

cw_status_t cw_client_recent(cw_client_t *c, uint32_t max, int text, int timeout_ms,
                             cw_reply_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!c)
        return CW_ERR_INVALID;
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Recent rq = CAUSEWAY__V1__RECENT__INIT;
    rq.max = max;
    rq.text = text != 0;
    env.body_case = CW_BODY(RECENT);
    env.recent = &rq;
    return request(c, &env, timeout_ms, reply);
}

cw_status_t cw_client_ack(cw_client_t *c, uint64_t seq, int timeout_ms)
{
    if (!c)
        return CW_ERR_INVALID;
    pthread_mutex_lock(&c->mu);
    unsigned epoch = c->epoch;
    pthread_mutex_unlock(&c->mu);
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Ack ack = CAUSEWAY__V1__ACK__INIT;
    ack.seq = seq;
    env.body_case = CW_BODY(ACK);
    env.ack = &ack;
    cw_status_t st = request(c, &env, timeout_ms, NULL);
    if (st == CW_OK) {
        pthread_mutex_lock(&c->mu);
        if (c->epoch == epoch) {
            if (seq > c->ack_done)
                c->ack_done = seq;
            if (seq > c->ack_sent)
                c->ack_sent = seq;
        }
        pthread_mutex_unlock(&c->mu);
    }
    return st;
}

uint64_t cw_ack_target_locked(cw_client_t *c, int handled, int64_t now)
{
    if (c->ack_pending && (handled || now - c->ack_pending_at >= CW_AUTO_ACK_DELAY_MS)) {
        if (c->ack_pending > c->ack_taken)
            c->ack_taken = c->ack_pending;
        c->ack_pending = 0;
    }
    uint64_t t = c->ack_taken;
    if (c->ack_pending && c->ack_pending <= t)
        t = c->ack_pending - 1;
    /* Durable deliveries of one epoch are queued in seq order (the I/O
     * thread drops any at or below its watermark), so the first is the
     * lowest. */
    for (const event_node_t *n = c->ev_head; n; n = n->next) {
        if (n->seq && n->epoch == c->epoch) {
            if (n->seq <= t)
                t = n->seq - 1;
            break;
        }
    }
    return t;
}

cw_status_t cw_client_ack_flush(cw_client_t *c, int timeout_ms)
{
    if (!c)
        return CW_ERR_INVALID;
    if (!c->auto_ack)
        return CW_OK;
    pthread_mutex_lock(&c->mu);
    /* The application calls: it is done with what it took. */
    uint64_t seq = cw_ack_target_locked(c, 1, cw_mono_ms());
    uint64_t done = c->ack_done;
    pthread_mutex_unlock(&c->mu);
    if (seq == 0 || seq <= done)
        return CW_OK;
    return cw_client_ack(c, seq, timeout_ms);
}

/* auto_ack, with mu held: the application is back for more, so it has
 * handled the previous hand-over (I5). */
static void handled_locked(cw_client_t *c)
{
    if (c->ack_pending > c->ack_taken)
        c->ack_taken = c->ack_pending;
    c->ack_pending = 0;
}

/* auto_ack, with mu held: the application is handed `count` durable
 * messages, the highest `seq`, in the current epoch. Returns what to tell
 * the I/O thread (wake_acker): 0 nothing, 1 a batch starts (it arms its
 * timer), 2 a batch is full (it acknowledges what is handled now). */
static int note_taken_locked(cw_client_t *c, uint64_t seq, unsigned count)
{
    handled_locked(c);
    c->ack_pending = seq;
    c->ack_pending_at = cw_mono_ms();
    unsigned before = c->ack_untold;
    c->ack_untold += count;
    if (before / CW_AUTO_ACK_BATCH != c->ack_untold / CW_AUTO_ACK_BATCH)
        return 2;
    return before == 0 ? 1 : 0;
}

static void wake_acker(cw_client_t *c, int what)
{
    if (!what)
        return;
    cmd_hdr_t hdr = {.type = CMD_ACK, .rid = (uint64_t) (what == 2), .deadline = 0};
    /* inproc PAIR to our own I/O thread: can't fail while it runs. */
    if (zmq_send(c->pipe, &hdr, sizeof hdr, 0) < 0)
        CW_DEBUG("client: cannot wake the I/O thread: %s", zmq_strerror(errno));
}

cw_status_t cw_client_fetch(cw_client_t *c, uint32_t max, int timeout_ms, cw_reply_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!c)
        return CW_ERR_INVALID;
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__Fetch fetch = CAUSEWAY__V1__FETCH__INIT;
    fetch.max = max;
    env.body_case = CW_BODY(FETCH);
    env.fetch = &fetch;
    if (c->auto_ack) {
        pthread_mutex_lock(&c->mu);
        handled_locked(c);
        pthread_mutex_unlock(&c->mu);
    }
    cw_reply_t *r = NULL;
    cw_status_t st = request(c, &env, timeout_ms, &r);
    if (st == CW_OK && r && r->n_messages && c->auto_ack) {
        uint64_t top = 0;
        for (size_t i = 0; i < r->n_messages; i++)
            if (r->messages[i].seq > top)
                top = r->messages[i].seq;
        if (top) {
            pthread_mutex_lock(&c->mu);
            int what = note_taken_locked(c, top, (unsigned) r->n_messages);
            pthread_mutex_unlock(&c->mu);
            wake_acker(c, what);
        }
    }
    if (reply)
        *reply = r;
    else
        cw_reply_destroy(&r);
    return st;
}

cw_status_t cw_client_history(cw_client_t *c, uint32_t last, int timeout_ms, cw_reply_t **reply)
{
    if (reply)
        *reply = NULL;
    if (!c)
        return CW_ERR_INVALID;
    cw_env_t env;
    cw_env_init(&env, 0);
    Causeway__V1__History history = CAUSEWAY__V1__HISTORY__INIT;
    history.last = last;
    env.body_case = CW_BODY(HISTORY);
    env.history = &history;
    return request(c, &env, timeout_ms, reply);
}

cw_status_t cw_client_next_event(cw_client_t *c, int timeout_ms, cw_event_t **event)
{
    *event = NULL;
    int64_t deadline = deadline_for(timeout_ms);
    pthread_mutex_lock(&c->mu);
    if (c->auto_ack)
        handled_locked(c);
    while (!c->ev_head && timeout_ms != 0)
        if (cond_wait_until(c, deadline) == ETIMEDOUT)
            break;
    event_node_t *n = c->ev_head;
    int wake = 0;
    if (n) {
        c->ev_head = n->next;
        if (!c->ev_head) {
            c->ev_tail = NULL;
            char byte;
            /* I1: the queue is empty now, so take the pipe's one byte. */
            if (read(c->notify[0], &byte, 1) != 1)
                abort();
        }
        c->ev_count--;
        if (c->auto_ack && n->seq && n->epoch == c->epoch)
            wake = note_taken_locked(c, n->seq, 1);
    }
    pthread_mutex_unlock(&c->mu);
    if (!n)
        return CW_ERR_TIMEOUT;
    wake_acker(c, wake);
    *event = n->ev;
    free(n);
    /* Without reconnection a lost connection ends the session. */
    if ((*event)->type == CW_EVENT_DISCONNECTED && c->no_reconnect) {
        free(c->name);
        c->name = NULL;
    }
    return CW_OK;
}

int cw_client_fd(cw_client_t *c) { return c->notify[0]; }

size_t cw_client_clock_items(cw_client_t *c, cw_clock_item_t **items)
{
    size_t n = 0;
    *items = NULL;
    pthread_mutex_lock(&c->mu);
    if (c->clock_copy) {
        cw_clock_entry_msg_t **e;
        size_t count = cw_clock_entries(c->clock_copy, &e);
        cw_conv_clock(items, &n, e, count);
    }
    pthread_mutex_unlock(&c->mu);
    return n;
}

char *cw_client_clock(cw_client_t *c, char *buf, size_t size)
{
    pthread_mutex_lock(&c->mu);
    cw_clock_entry_msg_t **e = NULL;
    size_t count = c->clock_copy ? cw_clock_entries(c->clock_copy, &e) : 0;
    cw_clock_format(e, count, buf, size);
    pthread_mutex_unlock(&c->mu);
    return buf;
}

const char *cw_client_name(const cw_client_t *c) { return c->name; }

int cw_client_connected(cw_client_t *c)
{
    pthread_mutex_lock(&c->mu);
    int v = c->connected;
    pthread_mutex_unlock(&c->mu);
    return v;
}

void cw_client_trace_stats(cw_client_t *c, cw_trace_stats_t *stats)
{
    pthread_mutex_lock(&c->mu);
    *stats = c->tstats;
    pthread_mutex_unlock(&c->mu);
}

cw_status_t cw_client_trace_flush(cw_client_t *c, int timeout_ms)
{
    if (!c)
        return CW_ERR_INVALID;
    int64_t deadline = deadline_for(timeout_ms);
    pthread_mutex_lock(&c->mu);
    int pending = c->tstats.pending != 0;
    pthread_mutex_unlock(&c->mu);
    if (!pending)
        return CW_OK;
    cmd_hdr_t hdr = {.type = CMD_FLUSH, .rid = 0, .deadline = 0};
    if (zmq_send(c->pipe, &hdr, sizeof hdr, 0) < 0)
        return CW_ERR_IO;
    pthread_mutex_lock(&c->mu);
    /* I6: the I/O thread signals when nothing is pending any more. */
    while (c->tstats.pending)
        if (cond_wait_until(c, deadline) == ETIMEDOUT)
            break;
    cw_status_t st = c->tstats.pending ? CW_ERR_TIMEOUT : CW_OK;
    pthread_mutex_unlock(&c->mu);
    return st;
}
