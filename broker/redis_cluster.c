/*  redis_cluster: cluster routing on hiredis 0.14 (see redis_cluster.h for
 *  why it is written here, the threading rule and the ordering invariants).
 *
 *  Data. Nodes are kept in an array and referred to by index (stable for
 *  the life of the cw_rc_t: a node that leaves the table keeps its slot in
 *  the array). Commands are either unsent — one list in submission order
 *  (seq), retried ones put back at their place — or in flight on exactly
 *  one node, in that node's FIFO, whose order is the connection's reply
 *  order. Per slot: the owner from the table (slot_node), and the node and
 *  number of its commands in flight (fl_node, fl_count), which is what
 *  invariant 1 checks before a command may be sent.
 */
#include "redis_cluster.h"

#include "cw_status.h"

#include <errno.h>
#include <hiredis/sds.h>
#include <poll.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define SLOTS 16384
#define NODES_MAX 64
#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000
#define MIGRATING_MS 1000     /* how long an ASK keeps its slot one-at-a-time */
#define REFRESH_GAP_MS 100    /* at most one CLUSTER SLOTS per this */
#define SUB_REFRESH_MS 1000   /* table reload period while subscriptions exist */
#define PRELOADS_MAX 32       /* scripts cw_rc_preload keeps */

typedef enum { C_USER, C_ASKING, C_REFRESH, C_PRELOAD } cmd_kind_t;

typedef struct cmd {
    struct cmd *next;        /* unsent list, or the node's in-flight FIFO */
    cmd_kind_t kind;         /* a caller's command, or an internal one */
    uint64_t seq;            /* submission order */
    uint16_t slot;
    char *buf;               /* the command, RESP-formatted (redisFormatCommandArgv) */
    size_t len;
    int ask_node;            /* >= 0: send to this node, after ASKING (invariant 3) */
    int64_t retry_at_ms;     /* not before (back-off) */
    int backoff_ms;          /* the next back-off */
    int64_t deadline_ms;     /* invariant 5 */
    int attempts;            /* times written to a connection */
    const char *body;        /* cw_rc_script: the source, for EVAL after NOSCRIPT
                                (the caller's, static); NULL: a plain command */
    size_t rest;             /* cw_rc_script: where the arguments after the sha
                                start in buf */
    int argc;                /* cw_rc_script: words in buf */
    cw_rc_cb_t *cb;
    void *arg;
} cmd_t;

typedef struct {
    char host[256];
    int port;
    redisContext *c;         /* NULL: no connection */
    int connected;           /* the non-blocking connect completed */
    int ever_connected;      /* for the reconnect counter */
    cmd_t *head, *tail;      /* in flight, in reply order */
    int64_t reconnect_at_ms; /* when c is NULL: next attempt */
    int backoff_ms;
    /* The subscriber connection (subscriptions.h part of the header). */
    redisContext *sc;        /* NULL: none */
    int sconnected;
    struct sub **spend;      /* subscribe/unsubscribe requests sent, in reply order */
    size_t n_spend, cap_spend;
    int64_t sreconnect_at_ms;
} node_t;

/* A subscription (invariants in redis_cluster.h, "Subscriptions"). */
enum { S_WANT, S_SENT, S_ACTIVE, S_DROP, S_DROP_SENT };
typedef struct sub {
    struct sub *next;
    char *ch;
    size_t len;
    int sharded;
    uint16_t slot;
    int node;                /* where it was sent / is active; -1 none */
    int state;
    int64_t retry_at_ms;
} sub_t;

struct cw_rc {
    cw_rc_opts_t opts;
    node_t nodes[NODES_MAX];
    int n_nodes;
    int16_t slot_node[SLOTS];      /* owner per the table; -1 unknown */
    int16_t fl_node[SLOTS];        /* node of the slot's in-flight commands */
    uint32_t fl_count[SLOTS];      /* how many */
    int64_t migrating_until[SLOTS];
    uint32_t blocked[SLOTS];       /* == gen: held back in this dispatch */
    uint32_t gen;
    cmd_t *unsent, *unsent_tail;   /* by seq */
    uint64_t next_seq;
    size_t pending;                /* commands unsent or in flight (callers' only) */
    int refresh_wanted;            /* reload the slot table */
    int refresh_inflight;
    int64_t refresh_last_ms;
    int item_node[2 * NODES_MAX];  /* pollitem i -> node index */
    int item_sub[2 * NODES_MAX];   /* pollitem i is the node's subscriber connection */
    cw_rc_stats_t st;
    int cur_attempts, cur_node;    /* of the command whose callback runs */
    sub_t *subs, *subs_tail;       /* every subscription, any state, in the order
                                      cw_rc_subscribe made them (invariant S4) */
    cw_rc_sub_cb_t *sub_cb;
    void *sub_arg;
    int64_t sub_refresh_ms;        /* last periodic table reload while subscribed */
    const char *preload[PRELOADS_MAX]; /* SCRIPT LOADed first on every new connection */
    int n_preload;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- slots --------------------------------------------------------------- */

static uint16_t crc16(const unsigned char *p, size_t n)
{
    /* CRC-16/XMODEM: polynomial 0x1021, initial 0, no reflection — the
     * function Redis Cluster specifies for key slots. Bitwise: a table
     * would be faster, and this runs once per command. */
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t) (p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t) (crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

uint16_t cw_rc_slot(const char *key, size_t len)
{
    const char *open = memchr(key, '{', len);
    if (open) {
        const char *close = memchr(open + 1, '}', len - (size_t) (open + 1 - key));
        if (close && close > open + 1)
            return crc16((const unsigned char *) open + 1, (size_t) (close - open - 1)) % SLOTS;
    }
    return crc16((const unsigned char *) key, len) % SLOTS;
}

/* --- nodes ---------------------------------------------------------------- */

static int node_index(cw_rc_t *rc, const char *host, int port)
{
    for (int i = 0; i < rc->n_nodes; i++)
        if (rc->nodes[i].port == port && strcmp(rc->nodes[i].host, host) == 0)
            return i;
    if (rc->n_nodes == NODES_MAX)
        return -1;
    node_t *n = &rc->nodes[rc->n_nodes];
    memset(n, 0, sizeof *n);
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    n->backoff_ms = BACKOFF_MIN_MS;
    return rc->n_nodes++;
}

static void node_connect(cw_rc_t *rc, node_t *n)
{
    if (n->c)
        return;
    n->c = redisConnectNonBlock(n->host, n->port);
    n->connected = 0;
    if (!n->c || n->c->err) {
        if (n->c)
            redisFree(n->c);
        n->c = NULL;
        n->reconnect_at_ms = now_ms() + n->backoff_ms;
        n->backoff_ms = n->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : n->backoff_ms * 2;
    }
    (void) rc;
}

/* Puts c back among the unsent commands at its submission position. */
static void unsent_insert(cw_rc_t *rc, cmd_t *c)
{
    c->next = NULL;
    if (!rc->unsent || c->seq > rc->unsent_tail->seq) {
        if (rc->unsent_tail)
            rc->unsent_tail->next = c;
        else
            rc->unsent = c;
        rc->unsent_tail = c;
        return;
    }
    cmd_t **pp = &rc->unsent;
    while (*pp && (*pp)->seq < c->seq)
        pp = &(*pp)->next;
    c->next = *pp;
    *pp = c;
}

static void cmd_free(cmd_t *c)
{
    free(c->buf);
    free(c);
}

/* Runs the callback once and frees the command (and the reply). */
static void complete(cw_rc_t *rc, cmd_t *c, int status, redisReply *r)
{
    if (c->kind == C_USER) {
        rc->pending--;
        rc->cur_attempts = c->attempts;
        if (status != CW_OK)
            rc->cur_node = -1;
        if (c->cb)
            c->cb(c->arg, status, r);
        rc->cur_node = -1;
    }
    if (r)
        freeReplyObject(r);
    cmd_free(c);
}

/* Invariant 4: back to the unsent list after a back-off, or failed at its
 * deadline. */
static void retry_later(cw_rc_t *rc, cmd_t *c, int64_t now)
{
    if (now >= c->deadline_ms) {
        rc->st.expired++;
        complete(rc, c, CW_STORE_ERROR, NULL);
        return;
    }
    c->retry_at_ms = now + c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
    unsent_insert(rc, c);
}

/* The connection of node i is gone: everything in flight there goes back
 * (invariant 4), and the table is reloaded. */
static void node_lost(cw_rc_t *rc, int i)
{
    node_t *n = &rc->nodes[i];
    int64_t now = now_ms();
    cmd_t *c = n->head;
    n->head = n->tail = NULL;
    while (c) {
        cmd_t *next = c->next;
        if (c->kind == C_USER) {
            rc->fl_count[c->slot]--;
            rc->st.retried++;
            retry_later(rc, c, now);
        } else {
            if (c->kind == C_REFRESH)
                rc->refresh_inflight = 0;
            cmd_free(c);
        }
        c = next;
    }
    if (n->c)
        redisFree(n->c);
    n->c = NULL;
    n->connected = 0;
    n->reconnect_at_ms = now + n->backoff_ms;
    n->backoff_ms = n->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : n->backoff_ms * 2;
    rc->refresh_wanted = 1;
}

static void node_push(node_t *n, cmd_t *c)
{
    c->next = NULL;
    if (n->tail)
        n->tail->next = c;
    else
        n->head = c;
    n->tail = c;
}

/* --- the slot table --------------------------------------------------------- */

/* Applies a CLUSTER SLOTS reply; asked: the node it came from (for an
 * empty host). Returns the number of slots covered. */
static int apply_slots(cw_rc_t *rc, const redisReply *r, const char *asked)
{
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return 0;
    int covered = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER || e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY || e->element[2]->elements < 2)
            continue;
        const redisReply *m = e->element[2];
        if (m->element[0]->type != REDIS_REPLY_STRING || m->element[1]->type != REDIS_REPLY_INTEGER)
            continue;
        const char *host = m->element[0]->len ? m->element[0]->str : asked;
        int idx = node_index(rc, host, (int) m->element[1]->integer);
        if (idx < 0)
            continue;
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        for (long long s = lo; s <= hi && s < SLOTS; s++)
            if (s >= 0) {
                rc->slot_node[s] = (int16_t) idx;
                covered++;
            }
        node_connect(rc, &rc->nodes[idx]);
    }
    return covered;
}

/* Sends CLUSTER SLOTS to a connected node when a reload is wanted. */
static void maybe_refresh(cw_rc_t *rc, int64_t now)
{
    if (!rc->refresh_wanted || rc->refresh_inflight || now - rc->refresh_last_ms < REFRESH_GAP_MS)
        return;
    for (int i = 0; i < rc->n_nodes; i++) {
        node_t *n = &rc->nodes[i];
        if (!n->connected)
            continue;
        cmd_t *c = calloc(1, sizeof *c);
        const char *argv[] = {"CLUSTER", "SLOTS"};
        int len = c ? redisFormatCommandArgv(&c->buf, 2, argv, NULL) : -1;
        if (len < 0 || redisAppendFormattedCommand(n->c, c->buf, (size_t) len) != REDIS_OK) {
            if (c)
                cmd_free(c);
            return;
        }
        c->kind = C_REFRESH;
        node_push(n, c);
        rc->refresh_inflight = 1;
        rc->refresh_wanted = 0;
        rc->refresh_last_ms = now;
        return;
    }
}

/* --- replies ----------------------------------------------------------------- */

/* "MOVED 3999 127.0.0.1:6381" / "ASK ..." -> the node's index, or -1. */
static int redirect_node(cw_rc_t *rc, const char *err)
{
    const char *sp = strchr(err, ' ');
    sp = sp ? strchr(sp + 1, ' ') : NULL;
    if (!sp)
        return -1;
    const char *colon = strrchr(sp + 1, ':');
    if (!colon || colon - (sp + 1) <= 0 || colon - (sp + 1) >= 256)
        return -1;
    char host[256];
    memcpy(host, sp + 1, (size_t) (colon - (sp + 1)));
    host[colon - (sp + 1)] = '\0';
    int idx = node_index(rc, host, atoi(colon + 1));
    if (idx >= 0)
        node_connect(rc, &rc->nodes[idx]);
    return idx;
}

static int starts(const redisReply *r, const char *prefix)
{
    return r->type == REDIS_REPLY_ERROR && strncmp(r->str, prefix, strlen(prefix)) == 0;
}

/* Rewrites a cw_rc_script command "EVALSHA sha args..." as "EVAL body
 * args..." (once: body is cleared). 0, or -1 out of memory (the command
 * is left as it was). */
static int script_to_eval(cmd_t *c)
{
    size_t blen = strlen(c->body), tail = c->len - c->rest;
    char head[64];
    int hl = snprintf(head, sizeof head, "*%d\r\n$4\r\nEVAL\r\n$%zu\r\n", c->argc, blen);
    if (hl < 0 || (size_t) hl >= sizeof head)
        return -1;
    size_t len = (size_t) hl + blen + 2 + tail;
    char *buf = malloc(len + 1);
    if (!buf)
        return -1;
    memcpy(buf, head, (size_t) hl);
    memcpy(buf + hl, c->body, blen);
    memcpy(buf + hl + blen, "\r\n", 2);
    memcpy(buf + hl + blen + 2, c->buf + c->rest, tail);
    buf[len] = '\0';
    free(c->buf);
    c->buf = buf;
    c->len = len;
    c->body = NULL;
    return 0;
}

/* A MOVED or NOSCRIPT command: sent again at once, from its submission
 * position (unsent_insert keeps the slot's order), unless its deadline
 * has passed. */
static void resend(cw_rc_t *rc, cmd_t *c, int64_t now)
{
    c->ask_node = -1;
    c->retry_at_ms = 0;
    if (now >= c->deadline_ms) {
        rc->st.expired++;
        complete(rc, c, CW_STORE_ERROR, NULL);
    } else {
        unsent_insert(rc, c);
    }
}

static void on_reply(cw_rc_t *rc, int ni, cmd_t *c, redisReply *r)
{
    int64_t now = now_ms();
    if (c->kind == C_ASKING || c->kind == C_PRELOAD) {
        /* a preload that failed (LOADING, OOM) leaves its script to the
         * NOSCRIPT fallback below */
        freeReplyObject(r);
        cmd_free(c);
        return;
    }
    if (c->kind == C_REFRESH) {
        rc->refresh_inflight = 0;
        if (apply_slots(rc, r, rc->nodes[ni].host) > 0)
            rc->st.refreshes++;
        else
            rc->refresh_wanted = 1;
        freeReplyObject(r);
        cmd_free(c);
        return;
    }
    rc->fl_count[c->slot]--;
    if (starts(r, "MOVED ")) {
        rc->st.moved++;
        int idx = redirect_node(rc, r->str);
        if (idx >= 0)
            rc->slot_node[c->slot] = (int16_t) idx;
        rc->refresh_wanted = 1;
        freeReplyObject(r);
        resend(rc, c, now);
        return;
    }
    if (starts(r, "ASK ")) {
        rc->st.asked++;
        c->ask_node = redirect_node(rc, r->str);
        rc->migrating_until[c->slot] = now + MIGRATING_MS;
        freeReplyObject(r);
        c->retry_at_ms = 0;
        if (c->ask_node < 0 || now >= c->deadline_ms) {
            rc->st.expired += c->ask_node >= 0;
            complete(rc, c, CW_STORE_ERROR, NULL);
        } else {
            unsent_insert(rc, c);
        }
        return;
    }
    if (c->body && starts(r, "NOSCRIPT") && script_to_eval(c) == 0) {
        /* Invariant 6: the node lacks the script (a promoted replica, a
         * SCRIPT FLUSH): sent again as EVAL from its submission position,
         * like a MOVED one. */
        rc->st.noscript++;
        freeReplyObject(r);
        resend(rc, c, now);
        return;
    }
    if (starts(r, "TRYAGAIN") || starts(r, "CLUSTERDOWN") || starts(r, "LOADING")) {
        rc->st.retried++;
        rc->migrating_until[c->slot] = now + MIGRATING_MS;
        freeReplyObject(r);
        c->ask_node = -1;
        retry_later(rc, c, now);
        return;
    }
    rc->cur_node = ni;
    complete(rc, c, CW_OK, r);
}

/* --- dispatch ---------------------------------------------------------------- */

/* Sends every unsent command that invariants 1-4 allow now. */
static void dispatch(cw_rc_t *rc, int64_t now)
{
    rc->gen++;
    if (rc->gen == 0) { /* wrapped: clear the stamps */
        memset(rc->blocked, 0, sizeof rc->blocked);
        rc->gen = 1;
    }
    cmd_t **pp = &rc->unsent, *prev = NULL;
    while (*pp) {
        cmd_t *c = *pp;
        uint16_t s = c->slot;
        int target = c->ask_node >= 0 ? c->ask_node : rc->slot_node[s];
        node_t *n = target >= 0 ? &rc->nodes[target] : NULL;
        int hold = rc->blocked[s] == rc->gen || c->retry_at_ms > now || !n || !n->connected ||
                   (rc->fl_count[s] > 0 &&
                    (rc->fl_node[s] != target || rc->migrating_until[s] > now));
        if (!n)
            rc->refresh_wanted = 1;
        else if (!n->c && now >= n->reconnect_at_ms)
            node_connect(rc, n);
        if (hold) {
            rc->blocked[s] = rc->gen; /* nothing later of this slot overtakes it */
            prev = c;
            pp = &c->next;
            continue;
        }
        if (c->ask_node >= 0) {
            cmd_t *a = calloc(1, sizeof *a);
            const char *argv[] = {"ASKING"};
            int len = a ? redisFormatCommandArgv(&a->buf, 1, argv, NULL) : -1;
            if (len < 0 || redisAppendFormattedCommand(n->c, a->buf, (size_t) len) != REDIS_OK) {
                if (a)
                    cmd_free(a);
                rc->blocked[s] = rc->gen;
                prev = c;
                pp = &c->next;
                continue;
            }
            a->kind = C_ASKING;
            node_push(n, a);
        }
        if (redisAppendFormattedCommand(n->c, c->buf, c->len) != REDIS_OK) {
            rc->blocked[s] = rc->gen;
            prev = c;
            pp = &c->next;
            continue;
        }
        *pp = c->next; /* unlink */
        if (rc->unsent_tail == c)
            rc->unsent_tail = prev;
        c->ask_node = -1;
        node_push(n, c);
        rc->fl_node[s] = (int16_t) target;
        rc->fl_count[s]++;
        rc->st.sent++;
        c->attempts++;
        if (rc->migrating_until[s] > now)
            rc->blocked[s] = rc->gen; /* one at a time while migrating */
    }
}

/* --- subscriptions -------------------------------------------------------- */

static void sub_event(cw_rc_t *rc, sub_t *u, int ev, const char *p, size_t len)
{
    if (rc->sub_cb)
        rc->sub_cb(rc->sub_arg, ev, u->ch, u->len, u->sharded, p, len);
}

static void sub_unlink_free(cw_rc_t *rc, sub_t *u)
{
    sub_t *prev = NULL;
    for (sub_t **pp = &rc->subs; *pp; prev = *pp, pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            if (rc->subs_tail == u)
                rc->subs_tail = prev;
            break;
        }
    free(u->ch);
    free(u);
}

/* Node i's subscriber connection is gone (or given up): every active
 * subscription on it is LOST and wanted again; requests in flight there
 * are forgotten (an unsubscribe among them is done: the server dropped
 * it with the connection). */
static void sub_conn_lost(cw_rc_t *rc, int i)
{
    node_t *n = &rc->nodes[i];
    int64_t now = now_ms();
    if (n->sc)
        redisFree(n->sc);
    n->sc = NULL;
    n->sconnected = 0;
    n->n_spend = 0;
    n->sreconnect_at_ms = now + BACKOFF_MIN_MS * 10;
    sub_t *u = rc->subs;
    while (u) {
        sub_t *next = u->next;
        if (u->node == i) {
            if (u->state == S_DROP_SENT || u->state == S_DROP) {
                sub_unlink_free(rc, u);
            } else {
                int was = u->state;
                u->state = S_WANT;
                u->node = -1;
                u->retry_at_ms = now + BACKOFF_MIN_MS;
                if (was == S_ACTIVE)
                    sub_event(rc, u, CW_RC_SUB_LOST, NULL, 0);
            }
        }
        u = next;
    }
    rc->refresh_wanted = 1;
}

static int spend_push(node_t *n, sub_t *u)
{
    if (n->n_spend == n->cap_spend) {
        size_t cap = n->cap_spend ? n->cap_spend * 2 : 16;
        sub_t **g = realloc(n->spend, cap * sizeof *g);
        if (!g)
            return -1;
        n->spend = g;
        n->cap_spend = cap;
    }
    n->spend[n->n_spend++] = u;
    return 0;
}

static sub_t *spend_pop(node_t *n)
{
    if (!n->n_spend)
        return NULL;
    sub_t *u = n->spend[0];
    memmove(n->spend, n->spend + 1, (n->n_spend - 1) * sizeof *n->spend);
    n->n_spend--;
    return u;
}

/* Writes a (S)SUBSCRIBE or (S)UNSUBSCRIBE of u to node i. 0 or -1. */
static int sub_send(cw_rc_t *rc, int i, sub_t *u, int subscribe)
{
    node_t *n = &rc->nodes[i];
    const char *cmd = u->sharded ? (subscribe ? "SSUBSCRIBE" : "SUNSUBSCRIBE")
                                 : (subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE");
    const char *argv[] = {cmd, u->ch};
    size_t lens[] = {strlen(cmd), u->len};
    char *buf = NULL;
    int len = redisFormatCommandArgv(&buf, 2, argv, lens);
    if (len < 0)
        return -1;
    int ok = spend_push(n, u) == 0 &&
             redisAppendFormattedCommand(n->sc, buf, (size_t) len) == REDIS_OK;
    free(buf);
    if (!ok)
        return -1;
    (void) rc;
    return 0;
}

static void sub_connect(node_t *n, int64_t now)
{
    if (n->sc || now < n->sreconnect_at_ms)
        return;
    n->sc = redisConnectNonBlock(n->host, n->port);
    n->sconnected = 0;
    if (!n->sc || n->sc->err) {
        if (n->sc)
            redisFree(n->sc);
        n->sc = NULL;
        n->sreconnect_at_ms = now + BACKOFF_MAX_MS / 4;
    }
}

/* Sends what subscriptions want; checks that every active sharded one is
 * still at its slot's owner (else its connection is given up: invariant
 * S2). The list is walked in subscription order and the walk stops at the
 * first request that cannot be written (out of memory), so an older
 * subscription's (S)UNSUBSCRIBE always goes out before a newer one's
 * (S)SUBSCRIBE of the same channel (invariant S4). */
static void sub_dispatch(cw_rc_t *rc, int64_t now)
{
    for (sub_t *u = rc->subs; u; u = u->next)
        if (u->state == S_ACTIVE && u->sharded && rc->slot_node[u->slot] >= 0 &&
            rc->slot_node[u->slot] != u->node) {
            sub_conn_lost(rc, u->node);
            break; /* the list changed; the rest is checked next turn */
        }
    sub_t *u = rc->subs;
    while (u) {
        sub_t *next = u->next;
        if (u->state == S_DROP && u->node >= 0) {
            node_t *n = &rc->nodes[u->node];
            if (!n->sc || !n->sconnected) {
                sub_unlink_free(rc, u); /* its connection is gone, and with it the
                                           server's subscription */
            } else if (sub_send(rc, u->node, u, 0) != 0) {
                return; /* out of memory: the rest after it, in order, next turn */
            } else {
                u->state = S_DROP_SENT;
            }
        } else if (u->state == S_DROP) {
            sub_unlink_free(rc, u);
        } else if (u->state == S_WANT && now >= u->retry_at_ms) {
            int target = -1;
            if (u->sharded) {
                target = rc->slot_node[u->slot];
            } else {
                for (int i = 0; i < rc->n_nodes && target < 0; i++)
                    if (rc->nodes[i].sc && rc->nodes[i].sconnected)
                        target = i;
                for (int i = 0; i < rc->n_nodes && target < 0; i++)
                    if (rc->nodes[i].connected)
                        target = i;
            }
            if (target < 0) {
                rc->refresh_wanted = 1;
            } else {
                node_t *n = &rc->nodes[target];
                sub_connect(n, now);
                if (n->sc && n->sconnected) {
                    if (sub_send(rc, target, u, 1) != 0)
                        return; /* out of memory: the rest in order, next turn */
                    u->state = S_SENT;
                    u->node = target;
                }
            }
        }
        u = next;
    }
}

static sub_t *sub_find_active(cw_rc_t *rc, int i, const char *ch, size_t len, int sharded)
{
    for (sub_t *u = rc->subs; u; u = u->next)
        if (u->node == i && u->state == S_ACTIVE && u->sharded == sharded && u->len == len &&
            memcmp(u->ch, ch, len) == 0)
            return u;
    return NULL;
}

static int is_word(const redisReply *r, const char *w)
{
    return r->type == REDIS_REPLY_STRING && r->len == strlen(w) && strncasecmp(r->str, w, r->len) == 0;
}

/* One reply on node i's subscriber connection. 0, or -1: out of step. */
static int sub_reply(cw_rc_t *rc, int i, redisReply *r)
{
    node_t *n = &rc->nodes[i];
    if (r->type == REDIS_REPLY_ERROR) { /* answers the oldest request: MOVED, CLUSTERDOWN */
        sub_t *u = spend_pop(n);
        if (!u)
            return -1;
        rc->refresh_wanted = 1;
        if (u->state == S_DROP_SENT) {
            sub_unlink_free(rc, u);
        } else if (u->state == S_SENT) {
            u->state = S_WANT;
            u->node = -1;
            u->retry_at_ms = now_ms() + BACKOFF_MIN_MS * 10;
        }
        return 0;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return -1;
    const redisReply *k = r->element[0], *ch = r->element[1];
    if (is_word(k, "smessage") || is_word(k, "message")) {
        if (r->element[2]->type != REDIS_REPLY_STRING)
            return -1;
        sub_t *u = sub_find_active(rc, i, ch->str, ch->len, is_word(k, "smessage"));
        if (u)
            sub_event(rc, u, CW_RC_SUB_MESSAGE, r->element[2]->str, r->element[2]->len);
        return 0;
    }
    int subs = is_word(k, "ssubscribe") || is_word(k, "subscribe");
    int unsubs = is_word(k, "sunsubscribe") || is_word(k, "unsubscribe");
    if (!subs && !unsubs)
        return -1;
    sub_t *head = n->n_spend ? n->spend[0] : NULL;
    if (head && head->len == ch->len && memcmp(head->ch, ch->str, ch->len) == 0 &&
        ((subs && (head->state == S_SENT || head->state == S_DROP || head->state == S_DROP_SENT)) ||
         (unsubs && head->state == S_DROP_SENT))) {
        spend_pop(n);
        if (subs && head->state == S_SENT) {
            head->state = S_ACTIVE;
            sub_event(rc, head, CW_RC_SUB_READY, NULL, 0);
        } else if (subs) {
            /* confirmed while an unsubscribe is wanted (S_DROP: sent next
             * turn) or already sent (its confirmation follows) */
        } else {
            sub_unlink_free(rc, head);
        }
        return 0;
    }
    if (unsubs) { /* the server ended it: a slot moved away (invariant S2) */
        sub_t *u = sub_find_active(rc, i, ch->str, ch->len, is_word(k, "sunsubscribe"));
        if (u) {
            u->state = S_WANT;
            u->node = -1;
            u->retry_at_ms = now_ms() + BACKOFF_MIN_MS;
            rc->refresh_wanted = 1;
            sub_event(rc, u, CW_RC_SUB_LOST, NULL, 0);
        }
        return 0;
    }
    return -1;
}

/* One reply of node i's connection: 0 (go on) or -1 (give it up). */
typedef int reply_fn_t(cw_rc_t *rc, int i, void *v);

/* Node i's command (sub 0) or subscriber (sub 1) connection, looked up
 * afresh (a callback may grow rc->nodes). */
static redisContext *conn(cw_rc_t *rc, int i, int sub)
{
    return sub ? rc->nodes[i].sc : rc->nodes[i].c;
}

/* Reads what that connection of node i sent and hands every complete reply
 * to fn, in order, while fn says 0 and the connection stays open. 0, or -1
 * when it is to be given up (read error, bad stream, fn said so). */
static int read_replies(cw_rc_t *rc, int i, int sub, reply_fn_t *fn)
{
    if (redisBufferRead(conn(rc, i, sub)) != REDIS_OK)
        return -1;
    for (;;) {
        void *v = NULL;
        if (redisGetReplyFromReader(conn(rc, i, sub), &v) != REDIS_OK)
            return -1;
        if (!v)
            return 0;
        int r = fn(rc, i, v);
        if (r != 0 || !conn(rc, i, sub))
            return r;
    }
}

static int sub_one(cw_rc_t *rc, int i, void *v)
{
    int r = sub_reply(rc, i, v);
    freeReplyObject(v);
    return r;
}

static int sub_read(cw_rc_t *rc, int i)
{
    return read_replies(rc, i, 1, sub_one);
}

void cw_rc_set_sub_cb(cw_rc_t *rc, cw_rc_sub_cb_t *cb, void *arg)
{
    rc->sub_cb = cb;
    rc->sub_arg = arg;
}

int cw_rc_subscribe(cw_rc_t *rc, const char *channel, size_t len, int sharded)
{
    if (!rc || !channel || !len)
        return CW_ERR_INVALID;
    /* One live subscription per channel: the server keeps one per
     * connection, so a second one's end would end both (invariant S4). */
    for (const sub_t *o = rc->subs; o; o = o->next)
        if (o->len == len && o->sharded == (sharded ? 1 : 0) && o->state != S_DROP &&
            o->state != S_DROP_SENT && memcmp(o->ch, channel, len) == 0)
            return CW_ERR_INVALID;
    sub_t *u = calloc(1, sizeof *u);
    char *ch = u ? malloc(len + 1) : NULL;
    if (!ch) {
        free(u);
        return CW_ERR_NOMEM;
    }
    memcpy(ch, channel, len);
    ch[len] = '\0';
    u->ch = ch;
    u->len = len;
    u->sharded = sharded ? 1 : 0;
    u->slot = cw_rc_slot(channel, len);
    u->node = -1;
    u->state = S_WANT;
    u->next = NULL;
    if (rc->subs_tail)
        rc->subs_tail->next = u;
    else
        rc->subs = u;
    rc->subs_tail = u;
    return CW_OK;
}

int cw_rc_unsubscribe(cw_rc_t *rc, const char *channel, size_t len, int sharded)
{
    if (!rc || !channel)
        return CW_ERR_INVALID;
    for (sub_t *u = rc->subs; u; u = u->next)
        if (u->len == len && u->sharded == (sharded ? 1 : 0) && memcmp(u->ch, channel, len) == 0 &&
            u->state != S_DROP && u->state != S_DROP_SENT) {
            if (u->state == S_WANT)
                u->node = -1;
            u->state = S_DROP; /* S_SENT: the confirmation comes first, then ours */
            return CW_OK;
        }
    return CW_OK;
}

/* --- public ------------------------------------------------------------------ */

cw_rc_t *cw_rc_new(const char *seeds, const cw_rc_opts_t *opts, char *err, size_t errlen)
{
    cw_rc_t *rc = calloc(1, sizeof *rc);
    if (!rc) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (opts)
        rc->opts = *opts;
    if (rc->opts.connect_ms <= 0)
        rc->opts.connect_ms = 2000;
    if (rc->opts.retry_ms <= 0)
        rc->opts.retry_ms = 10000;
    for (int s = 0; s < SLOTS; s++)
        rc->slot_node[s] = rc->fl_node[s] = -1;
    rc->gen = 1;
    rc->cur_node = -1;
    snprintf(err, errlen, "no seed given");
    const char *p = seeds;
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        char seed[300];
        if (len && len < sizeof seed) {
            memcpy(seed, p, len);
            seed[len] = '\0';
            char *colon = strrchr(seed, ':');
            int port = colon ? atoi(colon + 1) : 0;
            if (colon && port > 0 && port < 65536) {
                *colon = '\0';
                struct timeval tv = {rc->opts.connect_ms / 1000, (rc->opts.connect_ms % 1000) * 1000};
                redisContext *c = redisConnectWithTimeout(seed, port, tv);
                redisReply *r = NULL;
                if (c && !c->err) {
                    redisSetTimeout(c, tv);
                    r = redisCommand(c, "CLUSTER SLOTS");
                }
                int covered = r ? apply_slots(rc, r, seed) : 0;
                if (r && r->type == REDIS_REPLY_ERROR)
                    snprintf(err, errlen, "%s:%d: %s", seed, port, r->str);
                else if (!r)
                    snprintf(err, errlen, "%s:%d: %s", seed, port,
                             c && c->err ? c->errstr : "no reply to CLUSTER SLOTS");
                else if (covered < SLOTS)
                    snprintf(err, errlen, "%s:%d: the cluster covers %d of %d slots", seed, port,
                             covered, SLOTS);
                if (r)
                    freeReplyObject(r);
                if (c)
                    redisFree(c);
                if (covered == SLOTS) {
                    rc->st.refreshes = 1;
                    err[0] = '\0';
                    return rc;
                }
            } else {
                snprintf(err, errlen, "%s: not HOST:PORT", seed);
            }
        }
        p = end ? end + 1 : NULL;
    }
    cw_rc_destroy(&rc);
    return NULL;
}

void cw_rc_destroy(cw_rc_t **p)
{
    cw_rc_t *rc = p ? *p : NULL;
    if (!rc)
        return;
    for (int i = 0; i < rc->n_nodes; i++) {
        node_t *n = &rc->nodes[i];
        while (n->head) {
            cmd_t *c = n->head;
            n->head = c->next;
            complete(rc, c, CW_SHUTTING_DOWN, NULL);
        }
        if (n->c)
            redisFree(n->c);
        if (n->sc)
            redisFree(n->sc);
        free(n->spend);
    }
    while (rc->subs) {
        sub_t *u = rc->subs;
        rc->subs = u->next;
        free(u->ch);
        free(u);
    }
    rc->subs_tail = NULL;
    while (rc->unsent) {
        cmd_t *c = rc->unsent;
        rc->unsent = c->next;
        complete(rc, c, CW_SHUTTING_DOWN, NULL);
    }
    free(rc);
    *p = NULL;
}

/* Queues a formatted command (buf/len taken over by the command). */
static cmd_t *queue_formatted(cw_rc_t *rc, uint16_t slot, char *buf, int len, cw_rc_cb_t *cb,
                              void *arg)
{
    cmd_t *c = calloc(1, sizeof *c);
    if (!c) {
        free(buf);
        return NULL;
    }
    c->buf = buf;
    c->len = (size_t) len;
    c->kind = C_USER;
    c->seq = ++rc->next_seq;
    c->slot = slot;
    c->ask_node = -1;
    c->backoff_ms = BACKOFF_MIN_MS;
    c->deadline_ms = now_ms() + rc->opts.retry_ms;
    c->cb = cb;
    c->arg = arg;
    unsent_insert(rc, c);
    rc->pending++;
    return c;
}

int cw_rc_command(cw_rc_t *rc, uint16_t slot, int argc, const char **argv, const size_t *argvlen,
                  cw_rc_cb_t *cb, void *arg)
{
    if (!rc || slot >= SLOTS || argc < 1 || !argv)
        return CW_ERR_INVALID;
    char *buf = NULL;
    int len = redisFormatCommandArgv(&buf, argc, argv, argvlen);
    if (len < 0)
        return CW_ERR_NOMEM;
    return queue_formatted(rc, slot, buf, len, cb, arg) ? CW_OK : CW_ERR_NOMEM;
}

int cw_rc_script(cw_rc_t *rc, uint16_t slot, const char *sha, const char *body, int argc,
                 const char **argv, const size_t *argvlen, cw_rc_cb_t *cb, void *arg)
{
    if (!rc || slot >= SLOTS || !sha || strlen(sha) != 40 || !body || !*body || argc < 1 ||
        !argv || argc > INT_MAX - 2)
        return CW_ERR_INVALID;
    const char **av = malloc((size_t) (argc + 2) * sizeof *av);
    size_t *lv = malloc((size_t) (argc + 2) * sizeof *lv);
    if (!av || !lv) {
        free(av);
        free(lv);
        return CW_ERR_NOMEM;
    }
    av[0] = "EVALSHA";
    lv[0] = 7;
    av[1] = sha;
    lv[1] = 40;
    for (int i = 0; i < argc; i++) {
        av[i + 2] = argv[i];
        lv[i + 2] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    char *buf = NULL;
    int len = redisFormatCommandArgv(&buf, argc + 2, av, lv);
    free(av);
    free(lv);
    if (len < 0)
        return CW_ERR_NOMEM;
    /* "*N\r\n$7\r\nEVALSHA\r\n$40\r\n<sha>\r\n" comes first */
    const char *eol = strstr(buf, "\r\n");
    size_t rest = eol ? (size_t) (eol - buf) + 2 + 13 + 5 + 40 + 2 : 0;
    if (!eol || rest > (size_t) len) {
        free(buf);
        return CW_ERR_NOMEM;
    }
    cmd_t *c = queue_formatted(rc, slot, buf, len, cb, arg);
    if (!c)
        return CW_ERR_NOMEM;
    c->body = body;
    c->rest = rest;
    c->argc = argc + 2;
    return CW_OK;
}

/* Writes SCRIPT LOAD of preloaded scripts [from, n_preload) to n's
 * connection, ahead of any command not written yet (the replies are
 * dropped). Out of memory: what was not written is left to the NOSCRIPT
 * fallback. */
static void send_preloads(cw_rc_t *rc, node_t *n, int from)
{
    for (int i = from; i < rc->n_preload; i++) {
        cmd_t *c = calloc(1, sizeof *c);
        const char *argv[] = {"SCRIPT", "LOAD", rc->preload[i]};
        int len = c ? redisFormatCommandArgv(&c->buf, 3, argv, NULL) : -1;
        if (len < 0 || redisAppendFormattedCommand(n->c, c->buf, (size_t) len) != REDIS_OK) {
            if (c)
                cmd_free(c);
            return;
        }
        c->kind = C_PRELOAD;
        node_push(n, c);
    }
}

int cw_rc_preload(cw_rc_t *rc, const char *body)
{
    if (!rc || !body || !*body)
        return CW_ERR_INVALID;
    if (rc->n_preload == PRELOADS_MAX)
        return CW_ERR_NOMEM;
    rc->preload[rc->n_preload++] = body;
    for (int i = 0; i < rc->n_nodes; i++) /* the connections up now: at once */
        if (rc->nodes[i].c && rc->nodes[i].connected)
            send_preloads(rc, &rc->nodes[i], rc->n_preload - 1);
    return CW_OK;
}

size_t cw_rc_pollitems(cw_rc_t *rc, zmq_pollitem_t *items, size_t max)
{
    size_t k = 0;
    for (int i = 0; i < rc->n_nodes && k < max; i++) {
        node_t *n = &rc->nodes[i];
        if (!n->c)
            continue;
        short ev = ZMQ_POLLIN;
        if (!n->connected || sdslen(n->c->obuf) > 0)
            ev |= ZMQ_POLLOUT;
        items[k] = (zmq_pollitem_t){NULL, n->c->fd, ev, 0};
        rc->item_node[k] = i;
        rc->item_sub[k] = 0;
        k++;
    }
    for (int i = 0; i < rc->n_nodes && k < max; i++) {
        node_t *n = &rc->nodes[i];
        if (!n->sc)
            continue;
        short ev = ZMQ_POLLIN;
        if (!n->sconnected || sdslen(n->sc->obuf) > 0)
            ev |= ZMQ_POLLOUT;
        items[k] = (zmq_pollitem_t){NULL, n->sc->fd, ev, 0};
        rc->item_node[k] = i;
        rc->item_sub[k] = 1;
        k++;
    }
    return k;
}

/* The non-blocking connect of n finished (writable): did it succeed? */
static int connect_done(node_t *n)
{
    int e = 0;
    socklen_t len = sizeof e;
    if (getsockopt(n->c->fd, SOL_SOCKET, SO_ERROR, &e, &len) != 0 || e != 0)
        return -1;
    n->connected = 1;
    n->backoff_ms = BACKOFF_MIN_MS;
    return 0;
}

/* Reads what node i sent and handles every complete reply. 0, or -1 when
 * the connection is gone. */
static int node_one(cw_rc_t *rc, int i, void *v)
{
    node_t *n = &rc->nodes[i];
    cmd_t *c = n->head;
    if (!c) { /* a reply nobody asked for: the stream is out of step */
        freeReplyObject(v);
        return -1;
    }
    n->head = c->next;
    if (!n->head)
        n->tail = NULL;
    on_reply(rc, i, c, v); /* a callback cannot close n->c; read_replies checks */
    return 0;
}

static int node_read(cw_rc_t *rc, int i)
{
    return read_replies(rc, i, 0, node_one);
}

static int node_write(node_t *n)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(n->c, &done) != REDIS_OK)
            return errno == EAGAIN ? 0 : -1;
    return 0;
}

void cw_rc_process(cw_rc_t *rc, const zmq_pollitem_t *items, size_t n)
{
    int64_t now = now_ms();
    for (size_t k = 0; k < n; k++) {
        int i = rc->item_node[k];
        node_t *nd = &rc->nodes[i];
        if (rc->item_sub[k]) {
            if (!nd->sc || nd->sc->fd != items[k].fd || !items[k].revents)
                continue;
            if (!nd->sconnected) {
                if (items[k].revents & (ZMQ_POLLOUT | ZMQ_POLLERR)) {
                    int e = 0;
                    socklen_t elen = sizeof e;
                    if (getsockopt(nd->sc->fd, SOL_SOCKET, SO_ERROR, &e, &elen) != 0 || e != 0)
                        sub_conn_lost(rc, i);
                    else
                        nd->sconnected = 1;
                }
                continue;
            }
            if ((items[k].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) && sub_read(rc, i) != 0)
                sub_conn_lost(rc, i);
            continue;
        }
        if (!nd->c || nd->c->fd != items[k].fd || !items[k].revents)
            continue;
        if (!nd->connected) {
            if (items[k].revents & (ZMQ_POLLOUT | ZMQ_POLLERR)) {
                if (connect_done(nd) != 0) {
                    node_lost(rc, i);
                    continue;
                }
                if (nd->ever_connected)
                    rc->st.reconnects++;
                nd->ever_connected = 1;
                send_preloads(rc, nd, 0);
            }
            continue;
        }
        if ((items[k].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) && node_read(rc, i) != 0) {
            node_lost(rc, i);
            continue;
        }
    }
    /* Unsent commands past their deadline fail (invariant 5); a node whose
     * oldest command in flight is past its deadline is treated as lost, so
     * that a frozen node cannot hold commands for ever. */
    cmd_t *expired = NULL, **pp = &rc->unsent, *prev = NULL;
    while (*pp) {
        cmd_t *c = *pp;
        if (now >= c->deadline_ms) {
            *pp = c->next;
            if (rc->unsent_tail == c)
                rc->unsent_tail = prev;
            c->next = expired;
            expired = c;
        } else {
            prev = c;
            pp = &c->next;
        }
    }
    while (expired) {
        cmd_t *c = expired;
        expired = c->next;
        rc->st.expired++;
        complete(rc, c, CW_STORE_ERROR, NULL);
    }
    for (int i = 0; i < rc->n_nodes; i++) {
        node_t *nd = &rc->nodes[i];
        if (nd->head && nd->head->kind == C_USER && now >= nd->head->deadline_ms)
            node_lost(rc, i);
        else if (!nd->c && now >= nd->reconnect_at_ms &&
                 (nd->head || rc->unsent || rc->refresh_wanted))
            node_connect(rc, nd);
    }
    if (rc->subs && now - rc->sub_refresh_ms >= SUB_REFRESH_MS) {
        rc->sub_refresh_ms = now; /* a demoted owner may keep a subscription quiet */
        rc->refresh_wanted = 1;
    }
    maybe_refresh(rc, now);
    dispatch(rc, now);
    sub_dispatch(rc, now);
    for (int i = 0; i < rc->n_nodes; i++) {
        node_t *nd = &rc->nodes[i];
        if (nd->c && nd->connected && sdslen(nd->c->obuf) > 0 && node_write(nd) != 0)
            node_lost(rc, i);
        int done = 0;
        while (nd->sc && nd->sconnected && sdslen(nd->sc->obuf) > 0 && !done)
            if (redisBufferWrite(nd->sc, &done) != REDIS_OK) {
                if (errno != EAGAIN)
                    sub_conn_lost(rc, i);
                break;
            }
    }
}

int cw_rc_timeout_ms(const cw_rc_t *rc)
{
    if (rc->unsent || rc->refresh_wanted)
        return BACKOFF_MIN_MS;
    for (const sub_t *u = rc->subs; u; u = u->next)
        if (u->state == S_WANT || u->state == S_DROP)
            return BACKOFF_MIN_MS * 5;
    if (rc->subs)
        return SUB_REFRESH_MS / 2;
    for (int i = 0; i < rc->n_nodes; i++)
        if (rc->nodes[i].head)
            return 100; /* replies wake the poll; this only runs the deadlines */
    return -1;
}

size_t cw_rc_pending(const cw_rc_t *rc)
{
    return rc->pending;
}

void cw_rc_stats(const cw_rc_t *rc, cw_rc_stats_t *out)
{
    *out = rc->st;
}

int cw_rc_cb_attempts(const cw_rc_t *rc)
{
    return rc->cur_attempts;
}

int cw_rc_cb_node(const cw_rc_t *rc)
{
    return rc->cur_node;
}

int cw_rc_slot_node(const cw_rc_t *rc, uint16_t slot)
{
    return slot < SLOTS ? rc->slot_node[slot] : -1;
}
