/*  sim.c: causeway-sim, runs N libcauseway clients against a broker from a
 *  scenario and judges the run by what the clients were shown.
 *
 *  Threads:
 *   - main: parses, plans (scenario.c, plan.c), spawns and supervises the
 *     broker (procs.c), logs every client in, then plays the broker's part
 *     of the plan (kill, restart, pause, resume) at its planned times,
 *     prints progress, runs the drain phase, stops everything, runs
 *     `causeway-clockd audit` on the trace and computes the verdict;
 *   - one worker per simulated client: plays that client's part of the plan
 *     (sends, going offline and back) at the planned times and, in between,
 *     reads its deliveries;
 *   - inside libcauseway, one I/O thread per client.
 *
 *  What is shared: the plan (read-only) and, per message, the run-time
 *  fields of sim_msg_t: sent_us (atomic), outcome and rstate written only by
 *  the sender's worker, shown[r] written only by r's worker; the main
 *  thread reads outcome, rstate and shown only after joining the workers.
 *  Drain and progress use the atomic counters of sim_t.
 *
 *  Message identity: every text starts "cwsim RUNID INDEX " (RUNID: 16 hex
 *  digits, new per run), so a receiver finds the planned message from what
 *  it was shown, never from what the broker says. Definitions of sent,
 *  accepted, delivered, lost, duplicated and unexpected: docs/SIMULATION.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "causeway.h"
#include "cluster.h"
#include "cw_json.h"
#include "procs.h"
#include "scenario.h"

#define SIM_VERSION CW_VERSION
/* Exit statuses. */
#define EXIT_CLEAN 0
#define EXIT_VERDICT 1
#define EXIT_USAGE 2
#define EXIT_RUNTIME 3
#define EXIT_INTERRUPTED 130
/* Bounds of the simulator's own waits (multiplied by CW_TIMEOUT_SCALE). */
#define BROKER_START_MS 10000     /* the broker prints `listening` */
#define BROKER_STOP_MS 10000      /* the broker exits after SIGTERM */
#define LOGIN_ATTEMPT_MS 2000     /* one login attempt */
#define AUDIT_MS 300000           /* causeway-clockd audit / diagram */
#define PROGRESS_MS 200           /* progress line refresh on a terminal */
#define PUMP_SLICE_MS 50          /* longest wait for an event in one call */
#define CLUSTER_START_MS 60000    /* the Redis Cluster is up and healthy */
#define NODE_RESTART_MS 20000     /* a restarted redis-server answers PING */
#define RESHARD_MS 120000         /* a redis-cli --cluster reshard run ends */
#define SIM_MAX_RESHARDS 16       /* reshard lines in one scenario */

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig)
{
    (void) sig;
    g_interrupted = 1;
}

typedef struct {
    /* options */
    const char *scenario_path;
    int has_seed;
    uint64_t seed;
    int plan_only, json, keep, verbose, inject_dup, progress;
    const char *workdir_opt, *diagram, *broker_bin, *clockd_bin;
    const char *broker_args;  /* --broker-args: words after every broker's arguments */
    double scale;             /* CW_TIMEOUT_SCALE */
} opts_t;

typedef struct sim sim_t;

typedef struct {
    sim_t *sim;
    int ci;                /* client index */
    pthread_t th;
    int started;           /* th is joinable */
    size_t *acts;          /* indices into plan->acts of this client's actions */
    size_t n_acts;
    uint64_t *lat_live;    /* first-show latencies, us */
    size_t n_live, cap_live;
    uint64_t *lat_dur;
    size_t n_dur, cap_dur;
    long unexpected;       /* shown: not a message of this run, or from a wrong sender */
    long login_retries;    /* login attempts that failed (retried) */
    long logout_failed;    /* logouts without the broker's OK */
    uint64_t (*shows)[2];  /* durable shows: (seq, message index), for seq_reuse */
    size_t n_shows, cap_shows;
    long late;             /* deliveries libcauseway marked late */
    int online;            /* logged in (as far as the worker knows) */
} worker_t;

struct sim {
    const opts_t *o;
    const sim_scenario_t *sc;
    sim_plan_t *plan;
    cw_client_t **clients;       /* one per simulated client */
    worker_t *w;
    int *by_name;                /* client indices sorted by name */
    char runid[17];
    int failover;                /* clients were given every broker's endpoint */
    sim_broker_t *brokers[SIM_MAX_BROKERS];  /* sc->n_brokers of them; main thread only */
    int paused[SIM_MAX_BROKERS]; /* SIGSTOPped now (pause-broker, stop-broker) */
    sim_cluster_t *cluster;      /* store = redis: the Redis Cluster; main thread only */
    char workdir[1024];
    char trace_path[1100];
    int send_timeout_ms;
    int64_t t0_us;               /* monotonic start of the run */
    _Atomic int stop;            /* workers: finish now */
    _Atomic int done;            /* workers through their actions */
    _Atomic long sends;          /* sends made */
    _Atomic long acc_pairs;      /* durable recipients ACCEPTED */
    _Atomic long shown_dur;      /* durable (message, recipient) pairs both ACCEPTED and
                                    shown (sim_msg_t.pair): the drain waits for acc_pairs */
    _Atomic long shown_all;      /* first shows, any mode */
    _Atomic int64_t last_show_us;
    _Atomic int offline;         /* clients offline now */
    _Atomic int injected;        /* --inject-duplicate used */
    pthread_mutex_t out_mu;      /* --verbose lines */
};

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_us(int64_t us)
{
    if (us <= 0)
        return;
    struct timespec ts = {(time_t) (us / 1000000), (long) (us % 1000000) * 1000L};
    nanosleep(&ts, NULL);   /* EINTR: the caller re-checks its condition */
}

static double run_s(const sim_t *s)
{
    return (double) (mono_us() - s->t0_us) / 1e6;
}

static void vlog(sim_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void vlog(sim_t *s, const char *fmt, ...)
{
    if (!s->o->verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&s->out_mu);
    if (s->o->progress)
        fputs("\r\033[K", stderr);
    fprintf(stderr, "[%7.3fs] ", s->t0_us ? run_s(s) : 0.0);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    pthread_mutex_unlock(&s->out_mu);
    va_end(ap);
}

/* --- names -------------------------------------------------------------- */

static const sim_scenario_t *g_sort_sc;   /* qsort has no context argument */

static int cmp_by_name(const void *a, const void *b)
{
    return strcmp(g_sort_sc->names[*(const int *) a], g_sort_sc->names[*(const int *) b]);
}

/* Client index of name, or -1. */
static int client_index(const sim_t *s, const char *name)
{
    size_t lo = 0, hi = (size_t) s->sc->n_clients;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(s->sc->names[s->by_name[mid]], name);
        if (c == 0)
            return s->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

/* --- worker: one simulated client ---------------------------------------- */

static int push_lat(uint64_t **a, size_t *n, size_t *cap, uint64_t v)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 256;
        uint64_t *g = realloc(*a, ncap * sizeof *g);
        if (!g)
            return -1;
        *a = g;
        *cap = ncap;
    }
    (*a)[(*n)++] = v;
    return 0;
}

static void format_clock(const cw_clock_item_t *c, size_t n, char *buf, size_t size)
{
    size_t off = 0;
    off += (size_t) snprintf(buf + off, size - off, "{");
    for (size_t i = 0; i < n && off < size; i++)
        off += (size_t) snprintf(buf + off, size - off, "%s%s:%" PRIu64, i ? ", " : "",
                                 c[i].node, c[i].counter);
    if (off < size)
        snprintf(buf + off, size - off, "}");
}

static void on_deliver(worker_t *w, const cw_event_t *ev)
{
    sim_t *s = w->sim;
    const cw_message_t *msg = &ev->msg;
    char run[32];
    unsigned long long idx;
    if (!msg->text || sscanf(msg->text, "cwsim %31s %llu ", run, &idx) != 2 ||
        strcmp(run, s->runid) != 0 || idx >= s->plan->n_msgs) {
        w->unexpected++;
        vlog(s, "%s <- %s: not a message of this run: \"%.40s\"", s->sc->names[w->ci],
             msg->from ? msg->from : "?", msg->text ? msg->text : "");
        return;
    }
    sim_msg_t *m = &s->plan->msgs[idx];
    if (!msg->from || strcmp(msg->from, s->sc->names[m->sender]) != 0 ||
        (int) msg->durable != m->durable) {
        w->unexpected++;
        vlog(s, "%s <- %s: message #%llu claims the wrong sender or mode", s->sc->names[w->ci],
             msg->from ? msg->from : "?", idx);
        return;
    }
    int64_t now = mono_us();
    if (m->shown[w->ci] == 0) {
        uint64_t sent = atomic_load(&m->sent_us);
        if (sent && (uint64_t) now >= sent) {
            if (m->durable)
                push_lat(&w->lat_dur, &w->n_dur, &w->cap_dur, (uint64_t) now - sent);
            else
                push_lat(&w->lat_live, &w->n_live, &w->cap_live, (uint64_t) now - sent);
        }
        if (m->durable && atomic_fetch_or(&m->pair[w->ci], SIM_PAIR_SHOWN) == SIM_PAIR_ACCEPTED)
            atomic_fetch_add(&s->shown_dur, 1);
        atomic_fetch_add(&s->shown_all, 1);
    }
    atomic_store(&s->last_show_us, now);
    if (m->shown[w->ci] < 255)
        m->shown[w->ci]++;
#ifdef CW_ENDPOINTS_MAX
    if (msg->late)
        w->late++;
#endif
    if (m->durable && msg->seq) {
        if (w->n_shows == w->cap_shows) {
            size_t ncap = w->cap_shows ? w->cap_shows * 2 : 256;
            uint64_t (*g)[2] = realloc(w->shows, ncap * sizeof *g);
            if (g) {
                w->shows = g;
                w->cap_shows = ncap;
            }
        }
        if (w->n_shows < w->cap_shows) {
            w->shows[w->n_shows][0] = msg->seq;
            w->shows[w->n_shows][1] = idx;
            w->n_shows++;
        }
    }
    /* Test only: this "application" shows its first message twice. */
    if (s->o->inject_dup && !atomic_exchange(&s->injected, 1) && m->shown[w->ci] < 255)
        m->shown[w->ci]++;
    if (s->o->verbose) {
        char clk[512];
        format_clock(ev->local_clock, ev->n_local_clock, clk, sizeof clk);
        vlog(s, "%s <- %s #%llu (%s%s): clock now %s", s->sc->names[w->ci], msg->from, idx,
             m->durable ? "durable" : "live", msg->redelivered ? ", redelivered" : "", clk);
    }
}

/* Reads events for at most wait_ms (0: only what is queued). */
static void pump(worker_t *w, int wait_ms)
{
    cw_client_t *c = w->sim->clients[w->ci];
    for (int i = 0; i < 1000; i++) {
        cw_event_t *ev = NULL;
        if (cw_client_next_event(c, i == 0 ? wait_ms : 0, &ev) != CW_OK)
            return;
        if (ev->type == CW_EVENT_DELIVER)
            on_deliver(w, ev);
        else if (ev->type == CW_EVENT_DISCONNECTED || ev->type == CW_EVENT_RECONNECTED)
            vlog(w->sim, "%s %s", w->sim->sc->names[w->ci],
                 ev->type == CW_EVENT_DISCONNECTED ? "lost the broker, reconnecting"
                                                   : "reconnected");
        cw_event_destroy(&ev);
    }
}

static void wait_until(worker_t *w, int64_t t_us)
{
    sim_t *s = w->sim;
    for (;;) {
        int64_t left = t_us - mono_us();
        if (left <= 0 || atomic_load(&s->stop))
            return;
        int ms = (int) (left / 1000) + 1;
        pump(w, ms < PUMP_SLICE_MS ? ms : PUMP_SLICE_MS);
    }
}

static void do_send(worker_t *w, size_t idx)
{
    sim_t *s = w->sim;
    const sim_scenario_t *sc = s->sc;
    sim_msg_t *m = &s->plan->msgs[idx];
    char *text = malloc((size_t) m->size + 64);
    const char *to[SIM_MAX_CLIENTS];
    if (!text) {
        m->outcome = CW_ERR_NOMEM;
        return;
    }
    int off = snprintf(text, (size_t) m->size + 64, "cwsim %s %zu ", s->runid, idx);
    for (int i = off; i < m->size; i++)
        text[i] = (char) ('a' + (i - off) % 26);
    text[off > m->size ? off : m->size] = '\0';
    for (int j = 0; j < m->n_to; j++)
        to[j] = sc->names[m->to[j]];
    cw_send_t snd = {.to = to, .n_to = (size_t) m->n_to, .broadcast = m->kind == SIM_BROADCAST,
                     .text = text, .durable = m->durable};
    cw_reply_t *reply = NULL;
    atomic_store(&m->sent_us, (uint64_t) mono_us());
    cw_status_t st = cw_client_send(s->clients[w->ci], &snd, s->send_timeout_ms, &reply);
    m->outcome = (int) st;
    m->replied_us = mono_us();
    long acc = 0;
    char fates[512];
    size_t fo = 0;
    fates[0] = '\0';
    for (size_t i = 0; reply && i < reply->n_recipients; i++) {
        const cw_recipient_t *r = &reply->recipients[i];
        int ri = client_index(s, r->name);
        uint8_t v = r->status == CW_DELIVERED ? SIM_R_DELIVERED
                    : r->status == CW_ACCEPTED ? SIM_R_ACCEPTED
                    : r->status == CW_OFFLINE ? SIM_R_OFFLINE : SIM_R_OTHER;
        if (ri >= 0)
            m->rstate[ri] = v;
        if (v == SIM_R_ACCEPTED) {
            acc++;
            /* Shown before the reply came back: the pair is done now. */
            if (ri >= 0 && atomic_fetch_or(&m->pair[ri], SIM_PAIR_ACCEPTED) == SIM_PAIR_SHOWN)
                atomic_fetch_add(&s->shown_dur, 1);
        }
        if (s->o->verbose && fo < sizeof fates - 64)
            fo += (size_t) snprintf(fates + fo, sizeof fates - fo, "%s%s %s", i ? ", " : "",
                                    r->name, cw_status_name(r->status));
    }
    atomic_fetch_add(&s->acc_pairs, acc);
    atomic_fetch_add(&s->sends, 1);
    if (s->o->verbose) {
        char dest[256];
        size_t d = 0;
        if (m->kind == SIM_BROADCAST)
            snprintf(dest, sizeof dest, "everyone");
        else
            for (int j = 0; j < m->n_to && d < sizeof dest - 40; j++)
                d += (size_t) snprintf(dest + d, sizeof dest - d, "%s%s", j ? "," : "", to[j]);
        char clk[512] = "";
        if (reply && reply->n_clock)
            format_clock(reply->clock, reply->n_clock, clk, sizeof clk);
        vlog(s, "%s -> %s #%zu (%s %s): %s%s%s%s", sc->names[w->ci], dest, idx,
             m->durable ? "durable" : "live", sim_kind_name(m->kind), cw_status_name(st),
             *fates ? " [" : "", fates, *fates ? "]" : "");
        if (*clk)
            vlog(s, "%s    clock on the message %s", sc->names[w->ci], clk);
    }
    cw_reply_destroy(&reply);
    free(text);
}

static void go_offline(worker_t *w, int64_t dur_us)
{
    sim_t *s = w->sim;
    pump(w, 0);
    cw_status_t st = cw_client_logout(s->clients[w->ci], s->send_timeout_ms);
    if (st != CW_OK)
        w->logout_failed++;
    pump(w, 0);   /* what arrived before the logout took effect */
    w->online = 0;
    atomic_fetch_add(&s->offline, 1);
    vlog(s, "%s goes offline for %.3fs (logout: %s)", s->sc->names[w->ci], (double) dur_us / 1e6,
         cw_status_name(st));
}

/* Logs in, retrying until it works, the run stops, or (deadline_us > 0)
 * the monotonic deadline passes. 0, or -1 (stopped, or too late). */
static int log_in(sim_t *s, worker_t *w, int ci, int64_t deadline_us)
{
    const char *name = s->sc->names[ci];
    for (;;) {
        cw_status_t st = cw_client_login(s->clients[ci], name, LOGIN_ATTEMPT_MS, NULL);
        if (st == CW_OK || st == CW_ALREADY_LOGGED_IN)
            return 0;
        if (w)
            w->login_retries++;
        if (atomic_load(&s->stop) || g_interrupted ||
            (deadline_us > 0 && mono_us() >= deadline_us)) {
            if (deadline_us > 0)
                fprintf(stderr, "causeway-sim: %s cannot log in: %s\n", name,
                        cw_status_name(st));
            return -1;
        }
        /* NAME_TAKEN: the broker still holds the old session (a logout it
         * never saw); it expires within heartbeat x liveness. */
        sleep_us(100000);
    }
}

static void go_online(worker_t *w)
{
    sim_t *s = w->sim;
    if (log_in(s, w, w->ci, 0) == 0) {
        w->online = 1;
        atomic_fetch_sub(&s->offline, 1);
        vlog(s, "%s is back online", s->sc->names[w->ci]);
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    sim_t *s = w->sim;
    for (size_t i = 0; i < w->n_acts && !atomic_load(&s->stop); i++) {
        const sim_action_t *a = &s->plan->acts[w->acts[i]];
        wait_until(w, s->t0_us + a->at_us);
        if (atomic_load(&s->stop))
            break;
        switch (a->type) {
        case SIM_ACT_SEND: do_send(w, a->msg); break;
        case SIM_ACT_OFFLINE: go_offline(w, a->dur_us); break;
        case SIM_ACT_ONLINE: go_online(w); break;
        default: break;
        }
    }
    atomic_fetch_add(&s->done, 1);
    while (!atomic_load(&s->stop))
        pump(w, PUMP_SLICE_MS);
    pump(w, 0);
    return NULL;
}

/* --- verdict -------------------------------------------------------------- */

typedef struct {
    uint64_t count, p50, p90, p99, max;  /* us */
} lat_t;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

/* (seq, message index) pairs by seq, then index. */
static int cmp_show(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

static uint64_t rank(const uint64_t *v, size_t n, double p)
{
    size_t k = (size_t) ((p / 100.0) * (double) n + 0.999999);
    if (k < 1)
        k = 1;
    if (k > n)
        k = n;
    return v[k - 1];
}

static lat_t latency(uint64_t *v, size_t n)
{
    lat_t l = {0};
    if (!n)
        return l;
    qsort(v, n, sizeof *v, cmp_u64);
    l.count = n;
    l.p50 = rank(v, n, 50);
    l.p90 = rank(v, n, 90);
    l.p99 = rank(v, n, 99);
    l.max = v[n - 1];
    return l;
}

typedef struct {
    long planned, sent, sent_live, sent_durable, not_sent;
    long outcomes[256];          /* by cw_status_t (< 256) */
    long live_ok, dur_msgs_accepted;
    long acc, delivered, lost, shown_unconfirmed;         /* durable, per recipient */
    long live_reported, live_shown, live_unshown, live_offline;  /* live, per recipient */
    long duplicated, unexpected;
    long audit_events, audit_findings, causal;
    long causal_order;           /* of causal: the audit's causal-order findings */
    long causal_late;            /* of those, as many as deliveries were marked late (at most
                                    min(causal_order, late)): detected and flagged, the
                                    documented price of cross-broker order (SCALEOUT.md §4) */
    char audit_by_kind[512];     /* JSON object text */
    int audit_ok;
    char audit_err[1400];
    lat_t lat_all, lat_live, lat_dur;
    long kills, restarts, pauses, offlines;
    long stops;                  /* stop-broker */
    long redis_kills, redis_restarts, redis_stops, reshards, pubsub_kills;
    long pubsub_closed;          /* connections closed by kill-pubsub */
    long fault_errors;           /* a fault that could not be played (see stderr) */
    long seq_reuse;              /* (recipient, seq) shown with two different messages */
    long late;                   /* deliveries marked late by libcauseway */
    double accepted_pause_s;     /* longest time between two replies with an ACCEPTED */
    double accepted_pause_at_s;  /* when (run time) that pause began */
    int drain_timed_out;
    double drain_s, elapsed_s;
    int broker_exit;             /* the first non-zero exit of a broker running at the end */
    int broker_exits[SIM_MAX_BROKERS];  /* per broker; -2: down at the end (killed) */
    long login_retries, logout_failed;
    int clean;
} verdict_t;

/* Reads the numbers of clockd's audit JSON: "events", "count", "by_kind". */
static int parse_audit(const char *path, verdict_t *v)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (n + 1 == cap) {
            /* The numbers come first; 64 KiB holds them. */
            break;
        }
    }
    fclose(f);
    if (!buf)
        return -1;
    buf[n] = '\0';
    int rc = -1;
    const char *ev = strstr(buf, "\"events\":");
    const char *cnt = strstr(buf, "\"count\":");
    const char *bk = strstr(buf, "\"by_kind\":");
    if (ev && cnt && bk) {
        v->audit_events = strtol(ev + 9, NULL, 10);
        v->audit_findings = strtol(cnt + 8, NULL, 10);
        const char *o = strchr(bk, '{'), *e = o ? strchr(o, '}') : NULL;
        if (o && e && (size_t) (e - o + 1) < sizeof v->audit_by_kind) {
            memcpy(v->audit_by_kind, o, (size_t) (e - o + 1));
            v->audit_by_kind[e - o + 1] = '\0';
            static const char *const counted[] = {"causal-order", "clock-rule", "unmatched"};
            v->causal = 0;
            for (size_t i = 0; i < 3; i++) {
                char key[64];
                snprintf(key, sizeof key, "\"%s\":", counted[i]);
                const char *p = strstr(v->audit_by_kind, key);
                if (p) {
                    long nk = strtol(p + strlen(key), NULL, 10);
                    v->causal += nk;
                    if (i == 0)
                        v->causal_order = nk;
                }
            }
            rc = 0;
        }
    }
    free(buf);
    return rc;
}

static void tally(sim_t *s, verdict_t *v)
{
    const sim_plan_t *p = s->plan;
    int n = s->sc->n_clients;
    /* Every lost pair, one line each, for whoever reads a failed run. */
    char lost_path[1100];
    snprintf(lost_path, sizeof lost_path, "%s/lost.txt", s->workdir);
    FILE *lf = fopen(lost_path, "w");
    v->planned = (long) p->n_msgs;
    for (size_t k = 0; k < p->n_msgs; k++) {
        const sim_msg_t *m = &p->msgs[k];
        int sent = m->outcome >= 0;
        if (!sent) {
            v->not_sent++;
        } else {
            v->sent++;
            if (m->durable)
                v->sent_durable++;
            else
                v->sent_live++;
            v->outcomes[m->outcome & 255]++;
            if (!m->durable && m->outcome == CW_OK)
                v->live_ok++;
            if (m->durable && m->outcome == CW_ACCEPTED)
                v->dur_msgs_accepted++;
        }
        /* A send whose outcome the sender never learnt (timeout, lost
         * connection): whatever its recipients were shown is fine. */
        int unknown = sent && (m->outcome == CW_ERR_TIMEOUT || m->outcome == CW_ERR_DISCONNECTED);
        for (int r = 0; r < n; r++) {
            int st = m->rstate[r], sh = m->shown[r];
            if (sh > 1)
                v->duplicated += sh - 1;
            if (m->durable) {
                if (st == SIM_R_ACCEPTED) {
                    v->acc++;
                    if (sh)
                        v->delivered++;
                    else {
                        v->lost++;
                        if (lf)
                            fprintf(lf, "#%zu %s -> %s (home broker %d -> %d) sent %.3fs "
                                        "ACCEPTED %.3fs\n", k, s->sc->names[m->sender],
                                    s->sc->names[r], sim_home(s->sc, m->sender) + 1,
                                    sim_home(s->sc, r) + 1,
                                    (double) ((int64_t) atomic_load(&m->sent_us) - s->t0_us) / 1e6,
                                    (double) (m->replied_us - s->t0_us) / 1e6);
                    }
                } else if (sh) {
                    if (unknown)
                        v->shown_unconfirmed++;
                    else
                        v->unexpected++;
                }
            } else {
                if (st == SIM_R_DELIVERED) {
                    v->live_reported++;
                    if (sh)
                        v->live_shown++;
                    else
                        v->live_unshown++;
                } else {
                    if (st == SIM_R_OFFLINE)
                        v->live_offline++;
                    if (sh) {
                        if (unknown)
                            v->shown_unconfirmed++;
                        else
                            v->unexpected++;
                    }
                }
            }
        }
    }
    /* accepted_pause: the longest gap between two replies that ACCEPTED
     * something, over the whole run. */
    {
        int64_t *t = malloc((p->n_msgs + 1) * sizeof *t);
        size_t nt = 0;
        for (size_t k = 0; t && k < p->n_msgs; k++) {
            const sim_msg_t *m = &p->msgs[k];
            int any = 0;
            for (int r = 0; r < n && !any; r++)
                any = m->rstate[r] == SIM_R_ACCEPTED;
            if (any && m->replied_us)
                t[nt++] = m->replied_us;
        }
        if (t && nt > 1) {
            qsort(t, nt, sizeof *t, cmp_i64);
            int64_t best = 0, at = 0;
            for (size_t i = 1; i < nt; i++)
                if (t[i] - t[i - 1] > best) {
                    best = t[i] - t[i - 1];
                    at = t[i - 1];
                }
            v->accepted_pause_s = (double) best / 1e6;
            v->accepted_pause_at_s = (double) (at - s->t0_us) / 1e6;
        }
        free(t);
    }
    /* seq_reuse: per recipient, a seq shown with more than one message. */
    for (int c = 0; c < n; c++) {
        worker_t *w = &s->w[c];
        v->late += w->late;
        if (w->n_shows < 2)
            continue;
        qsort(w->shows, w->n_shows, sizeof *w->shows, cmp_show);
        /* Sorted by (seq, index): a run of one seq whose first and last
         * index differ is one reused seq. */
        for (size_t i = 0, j; i < w->n_shows; i = j) {
            for (j = i + 1; j < w->n_shows && w->shows[j][0] == w->shows[i][0]; j++) {
            }
            if (w->shows[j - 1][1] != w->shows[i][1])
                v->seq_reuse++;
        }
    }
    if (lf)
        fclose(lf);
    v->causal_late = v->causal_order < v->late ? v->causal_order : v->late;
    size_t nl = 0, nd = 0;
    for (int c = 0; c < n; c++) {
        nl += s->w[c].n_live;
        nd += s->w[c].n_dur;
        v->unexpected += s->w[c].unexpected;
        v->login_retries += s->w[c].login_retries;
        v->logout_failed += s->w[c].logout_failed;
    }
    uint64_t *all = malloc((nl + nd + 1) * sizeof *all);
    uint64_t *live = malloc((nl + 1) * sizeof *live);
    uint64_t *dur = malloc((nd + 1) * sizeof *dur);
    if (all && live && dur) {
        size_t a = 0, l = 0, d = 0;
        for (int c = 0; c < n; c++) {
            for (size_t i = 0; i < s->w[c].n_live; i++)
                all[a++] = live[l++] = s->w[c].lat_live[i];
            for (size_t i = 0; i < s->w[c].n_dur; i++)
                all[a++] = dur[d++] = s->w[c].lat_dur[i];
        }
        v->lat_all = latency(all, a);
        v->lat_live = latency(live, l);
        v->lat_dur = latency(dur, d);
    }
    free(all);
    free(live);
    free(dur);
    for (size_t i = 0; i < p->n_acts; i++) {
        switch (p->acts[i].type) {
        case SIM_ACT_KILL: v->kills++; break;
        case SIM_ACT_RESTART: v->restarts++; break;
        case SIM_ACT_PAUSE: v->pauses++; break;
        case SIM_ACT_OFFLINE: v->offlines++; break;
        case SIM_ACT_STOP: v->stops++; break;
        case SIM_ACT_KILL_PRIMARY: v->redis_kills++; break;
        case SIM_ACT_NODE_RESTART: v->redis_restarts++; break;
        case SIM_ACT_STOP_PRIMARY: v->redis_stops++; break;
        case SIM_ACT_RESHARD: v->reshards++; break;
        case SIM_ACT_KILL_PUBSUB: v->pubsub_kills++; break;
        default: break;
        }
    }
}

static void json_str(FILE *f, const char *s)
{
    cw_json_fput(f, s);
}

static void json_lat(FILE *f, const char *key, const lat_t *l)
{
    fprintf(f, "\"%s\":{\"count\":%" PRIu64 ",\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
               "\"max\":%.3f}", key, l->count, (double) l->p50 / 1e3, (double) l->p90 / 1e3,
            (double) l->p99 / 1e3, (double) l->max / 1e3);
}

static void print_json(const sim_t *s, const verdict_t *v, FILE *f)
{
    fputs("{\"scenario\":", f);
    json_str(f, s->sc->name);
    fputs(",\"file\":", f);
    json_str(f, s->sc->path);
    fprintf(f, ",\"seed\":%" PRIu64 ",\"clients\":%d,\"elapsed_s\":%.3f", s->plan->seed,
            s->sc->n_clients, v->elapsed_s);
    fprintf(f, ",\"sent\":%ld,\"accepted\":%ld,\"delivered\":%ld,\"lost\":%ld,"
               "\"duplicated\":%ld,\"unexpected\":%ld,\"causal\":%ld",
            v->sent, v->acc, v->delivered, v->lost, v->duplicated, v->unexpected, v->causal);
    fprintf(f, ",\"causal_late\":%ld", v->causal_late);
    fprintf(f, ",\"seq_reuse\":%ld,\"late\":%ld,\"accepted_pause_s\":%.3f,"
               "\"accepted_pause_at_s\":%.3f", v->seq_reuse, v->late, v->accepted_pause_s,
            v->accepted_pause_at_s);
    fprintf(f, ",\"brokers\":%d,\"store\":\"%s\"", s->sc->n_brokers,
            s->sc->store == SIM_STORE_REDIS ? "redis" : "sqlite");
    if (s->sc->store == SIM_STORE_REDIS)
        fprintf(f, ",\"redis_cluster\":\"%dx%d\"", s->sc->redis_primaries, s->sc->redis_replicas);
    fprintf(f, ",\"failover\":%s,\"broker_exits\":[", s->failover ? "true" : "false");
    for (int b = 0; b < s->sc->n_brokers; b++)
        fprintf(f, "%s%d", b ? "," : "", v->broker_exits[b]);
    fputc(']', f);
    fprintf(f, ",\"messages\":{\"planned\":%ld,\"sent\":%ld,\"live\":%ld,\"durable\":%ld,"
               "\"not_sent\":%ld}", v->planned, v->sent, v->sent_live, v->sent_durable,
            v->not_sent);
    fputs(",\"outcomes\":{", f);
    int first = 1;
    for (int i = 0; i < 256; i++)
        if (v->outcomes[i]) {
            fprintf(f, "%s\"%s\":%ld", first ? "" : ",", cw_status_name(i), v->outcomes[i]);
            first = 0;
        }
    fputc('}', f);
    fprintf(f, ",\"durable\":{\"messages_accepted\":%ld,\"accepted\":%ld,\"delivered\":%ld,"
               "\"lost\":%ld}", v->dur_msgs_accepted, v->acc, v->delivered, v->lost);
    fprintf(f, ",\"live\":{\"messages_ok\":%ld,\"reported_delivered\":%ld,\"shown\":%ld,"
               "\"unshown\":%ld,\"offline\":%ld}", v->live_ok, v->live_reported, v->live_shown,
            v->live_unshown, v->live_offline);
    fprintf(f, ",\"shown_unconfirmed\":%ld", v->shown_unconfirmed);
    fprintf(f, ",\"audit\":{\"ok\":%s,\"events\":%ld,\"findings\":%ld,\"by_kind\":%s",
            v->audit_ok ? "true" : "false", v->audit_events, v->audit_findings,
            v->audit_ok && v->audit_by_kind[0] ? v->audit_by_kind : "{}");
    if (!v->audit_ok) {
        fputs(",\"error\":", f);
        json_str(f, v->audit_err);
    }
    fputc('}', f);
    fputc(',', f);
    json_lat(f, "latency_ms", &v->lat_all);
    fputc(',', f);
    json_lat(f, "latency_live_ms", &v->lat_live);
    fputc(',', f);
    json_lat(f, "latency_durable_ms", &v->lat_dur);
    fprintf(f, ",\"faults\":{\"broker_kills\":%ld,\"broker_restarts\":%ld,\"broker_pauses\":%ld,"
               "\"offline_periods\":%ld,\"broker_stops\":%ld,\"redis_primary_kills\":%ld,"
               "\"redis_node_restarts\":%ld,\"redis_primary_stops\":%ld,\"reshards\":%ld,"
               "\"pubsub_kills\":%ld,\"pubsub_closed\":%ld,\"errors\":%ld}", v->kills,
            v->restarts, v->pauses, v->offlines, v->stops, v->redis_kills, v->redis_restarts,
            v->redis_stops, v->reshards, v->pubsub_kills, v->pubsub_closed, v->fault_errors);
    fprintf(f, ",\"drain\":{\"s\":%.3f,\"timed_out\":%s},\"broker_exit\":%d,"
               "\"login_retries\":%ld,\"logout_failed\":%ld", v->drain_s,
            v->drain_timed_out ? "true" : "false", v->broker_exit, v->login_retries,
            v->logout_failed);
    fputs(",\"workdir\":", f);
    json_str(f, s->o->keep || !v->clean ? s->workdir : "");
    fprintf(f, ",\"clean\":%s}\n", v->clean ? "true" : "false");
}

static void print_lat(FILE *f, const char *what, const lat_t *l)
{
    if (!l->count) {
        fprintf(f, "  latency %-8s none\n", what);
        return;
    }
    fprintf(f, "  latency %-8s p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms  (%" PRIu64
               " shown)\n", what, (double) l->p50 / 1e3, (double) l->p90 / 1e3,
            (double) l->p99 / 1e3, (double) l->max / 1e3, l->count);
}

static void print_text(const sim_t *s, const verdict_t *v, FILE *f)
{
    fprintf(f, "verdict for scenario %s (seed %" PRIu64 ", %d clients, %.1f s)\n", s->sc->name,
            s->plan->seed, s->sc->n_clients, v->elapsed_s);
    fprintf(f, "  sent       %ld of %ld planned (%ld live, %ld durable)\n", v->sent, v->planned,
            v->sent_live, v->sent_durable);
    fprintf(f, "  outcomes  ");
    for (int i = 0; i < 256; i++)
        if (v->outcomes[i])
            fprintf(f, " %s %ld", cw_status_name(i), v->outcomes[i]);
    fputc('\n', f);
    fprintf(f, "  durable    %ld messages accepted, %ld deliveries accepted, %ld delivered, "
               "%ld lost\n", v->dur_msgs_accepted, v->acc, v->delivered, v->lost);
    fprintf(f, "  live       %ld deliveries reported DELIVERED, %ld shown, %ld not shown "
               "(allowed), %ld recipients OFFLINE\n", v->live_reported, v->live_shown,
            v->live_unshown, v->live_offline);
    fprintf(f, "  duplicated %ld   unexpected %ld   shown with unknown send outcome %ld\n",
            v->duplicated, v->unexpected, v->shown_unconfirmed);
    fprintf(f, "  seq_reuse  %ld   late %ld   accepted_pause %.2f s (from %.2f s)\n",
            v->seq_reuse, v->late, v->accepted_pause_s, v->accepted_pause_at_s);
    if (v->audit_ok)
        fprintf(f, "  causal     %ld violations, %ld of them flagged late (clockd audit: %ld events, "
                   "%ld findings %s)\n", v->causal, v->causal_late, v->audit_events,
                v->audit_findings, v->audit_by_kind);
    else
        fprintf(f, "  causal     not checked: %s\n", v->audit_err);
    print_lat(f, "all", &v->lat_all);
    print_lat(f, "live", &v->lat_live);
    print_lat(f, "durable", &v->lat_dur);
    fprintf(f, "  faults     %ld broker kills, %ld restarts, %ld pauses, %ld offline periods\n",
            v->kills, v->restarts, v->pauses, v->offlines);
    if (s->sc->n_brokers > 1 || s->sc->store == SIM_STORE_REDIS) {
        fprintf(f, "  brokers    %d on %s", s->sc->n_brokers,
                s->sc->store == SIM_STORE_REDIS ? "a Redis Cluster" : "SQLite");
        if (s->sc->store == SIM_STORE_REDIS)
            fprintf(f, " %dx%d", s->sc->redis_primaries, s->sc->redis_replicas);
        fprintf(f, ", failover %s, %ld stops; exits", s->failover ? "on" : "off", v->stops);
        for (int b = 0; b < s->sc->n_brokers; b++)
            fprintf(f, " %d", v->broker_exits[b]);
        fputc('\n', f);
        fprintf(f, "  redis      %ld primary kills, %ld node restarts, %ld primary stops, %ld "
                   "reshards, %ld pubsub kills (%ld connections)\n", v->redis_kills,
                v->redis_restarts, v->redis_stops, v->reshards, v->pubsub_kills,
                v->pubsub_closed);
    }
    if (v->fault_errors)
        fprintf(f, "  faults     %ld could not be played (see stderr)\n", v->fault_errors);
    fprintf(f, "  drain      %.1f s%s; broker exit status %d\n", v->drain_s,
            v->drain_timed_out ? " (timed out)" : "", v->broker_exit);
    if (s->o->keep || !v->clean)
        fprintf(f, "  workdir    %s\n", s->workdir);
    fprintf(f, "%s\n", v->clean ? "CLEAN: nothing accepted was lost, shown twice or under a "
                                  "reused seq, causal order held"
                                : "FAILED: see the figures above");
}

/* --- main ------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fputs("usage: causeway-sim [OPTIONS] SCENARIO\n"
          "\n"
          "Runs the clients of SCENARIO (a file like scripts/scenarios/crash.scn) against a broker it\n"
          "starts itself (embedded SQLite store in a temporary directory, free loopback port),\n"
          "or against several brokers on a Redis Cluster it starts itself (`brokers`, `store =\n"
          "redis`, `redis_cluster = 3x1`: redis-server and redis-cli from PATH), plays the\n"
          "scenario's broker and Redis faults and offline periods, drains, and prints a verdict\n"
          "computed from what the clients were shown (docs/SIMULATION.md).\n"
          "\n"
          "options:\n"
          "  --seed N            seed of the scenario's randomness (default: the file's `seed`)\n"
          "  --plan              print the planned actions and exit; runs nothing\n"
          "  --json              print the verdict as one JSON object on stdout\n"
          "  --verbose           print every action and delivery to stderr as it happens\n"
          "  --diagram FILE      write causeway-clockd's space-time diagram (.html or .svg)\n"
          "  --keep              keep the work directory (trace, broker logs, store)\n"
          "  --workdir DIR       use DIR (created, must not exist) instead of a temporary one\n"
          "  --broker PATH       causeway-broker to run (default: the one beside this program,\n"
          "                      else the one in its build tree)\n"
          "  --clockd PATH       causeway-clockd to run (default: likewise)\n"
          "  --broker-args WORDS words appended to every broker's command line, after the\n"
          "                      scenario's broker_args (e.g. '--redis-wait 0', the control run)\n"
          "  --inject-duplicate  test only: one receiver shows its first message twice\n"
          "  --help              this text\n"
          "\n"
          "Progress goes to stderr when it is a terminal. CW_TIMEOUT_SCALE multiplies the\n"
          "simulator's own waits (slow builds, valgrind); CW_BROKER_WRAPPER (words put before\n"
          "the broker's command line, e.g. valgrind) is honoured as in the e2e tests.\n"
          "exit status: 0 clean verdict; 1 something accepted was lost, shown twice, shown\n"
          "under a reused seq, unexpected, causal order broke, a fault could not be played, or\n"
          "a broker did not exit cleanly; 2 usage or\n"
          "scenario error; 3 runtime failure; 130 interrupted.\n", f);
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (strcmp(a, "--plan") == 0) {
            o->plan_only = 1;
        } else if (strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--verbose") == 0) {
            o->verbose = 1;
        } else if (strcmp(a, "--keep") == 0) {
            o->keep = 1;
        } else if (strcmp(a, "--inject-duplicate") == 0) {
            o->inject_dup = 1;
        } else if (strcmp(a, "--seed") == 0 || strcmp(a, "--diagram") == 0 ||
                   strcmp(a, "--workdir") == 0 || strcmp(a, "--broker") == 0 ||
                   strcmp(a, "--clockd") == 0 || strcmp(a, "--broker-args") == 0) {
            if (!val) {
                fprintf(stderr, "causeway-sim: %s needs a value\n", a);
                return -1;
            }
            i++;
            if (strcmp(a, "--seed") == 0) {
                char *end;
                errno = 0;
                o->seed = strtoull(val, &end, 0);
                if (!*val || *end || errno || val[0] == '-') {
                    fprintf(stderr, "causeway-sim: --seed: '%s' is not an unsigned 64-bit "
                                    "number\n", val);
                    return -1;
                }
                o->has_seed = 1;
            } else if (strcmp(a, "--diagram") == 0) {
                o->diagram = val;
            } else if (strcmp(a, "--workdir") == 0) {
                o->workdir_opt = val;
            } else if (strcmp(a, "--broker") == 0) {
                o->broker_bin = val;
            } else if (strcmp(a, "--broker-args") == 0) {
                if (strlen(val) > SIM_MAX_BROKER_ARGS) {
                    fprintf(stderr, "causeway-sim: --broker-args: longer than %d bytes\n",
                            SIM_MAX_BROKER_ARGS);
                    return -1;
                }
                o->broker_args = val;
            } else {
                o->clockd_bin = val;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "causeway-sim: unknown option %s (see --help)\n", a);
            return -1;
        } else if (o->scenario_path) {
            fprintf(stderr, "causeway-sim: one scenario only (got %s and %s)\n",
                    o->scenario_path, a);
            return -1;
        } else {
            o->scenario_path = a;
        }
    }
    if (!o->scenario_path) {
        fprintf(stderr, "causeway-sim: no scenario given (see --help)\n");
        return -1;
    }
    return 0;
}

/* The program NAME beside this executable (the installed layout: every
 * program in one bin directory) if it is there and executable, else
 * bin_dir/../BUILD_REL (the build tree: build/sim/causeway-sim next to
 * build/broker/causeway-broker). NULL if this executable's path is
 * unknown or out of memory. Caller frees. */
static char *sibling(const char *name, const char *build_rel)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return NULL;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (slash)
        *slash = '\0';
    char *out = NULL;
    if (asprintf(&out, "%s/%s", self, name) < 0)
        return NULL;
    if (access(out, X_OK) == 0)
        return out;
    free(out);
    out = NULL;
    if (asprintf(&out, "%s/../%s", self, build_rel) < 0)
        return NULL;
    return out;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void) sb;
    (void) flag;
    (void) ftw;
    remove(path);
    return 0;
}

static void progress(sim_t *s, const char *phase)
{
    if (!s->o->progress)
        return;
    char bs[SIM_MAX_BROKERS * 8 + 8];
    size_t off = 0;
    for (int b = 0; b < s->sc->n_brokers; b++)
        off += (size_t) snprintf(bs + off, sizeof bs - off, "%s%s", b ? "," : "",
                                 !sim_broker_running(s->brokers[b]) ? "down"
                                 : s->paused[b]                     ? "paused"
                                                                    : "up");
    pthread_mutex_lock(&s->out_mu);
    fprintf(stderr, "\r\033[K[%6.1fs] %-5s sent %ld/%zu  shown %ld  durable pending %ld  "
                    "offline %d  broker%s %s", run_s(s), phase, atomic_load(&s->sends),
            s->plan->n_msgs, atomic_load(&s->shown_all),
            atomic_load(&s->acc_pairs) - atomic_load(&s->shown_dur), atomic_load(&s->offline),
            s->sc->n_brokers > 1 ? "s" : "", bs);
    fflush(stderr);
    pthread_mutex_unlock(&s->out_mu);
}

/* Sleeps until t_us (monotonic), refreshing the progress line. 0, or -1
 * when interrupted. */
static int main_wait(sim_t *s, int64_t t_us, const char *phase)
{
    static int64_t last;
    for (;;) {
        if (g_interrupted)
            return -1;
        int64_t now = mono_us();
        if (now - last >= PROGRESS_MS * 1000) {
            progress(s, phase);
            last = now;
        }
        if (now >= t_us)
            return 0;
        int64_t d = t_us - now;
        sleep_us(d < 20000 ? d : 20000);
    }
}

/* A fault that could not be played: said on stderr, counted, the run goes on. */
static void fault_error(sim_t *s, verdict_t *v, const char *what, const char *why)
{
    v->fault_errors++;
    pthread_mutex_lock(&s->out_mu);
    fprintf(stderr, "%scauseway-sim: [%.3fs] %s: %s\n", s->o->progress ? "\r\033[K" : "",
            run_s(s), what, why);
    pthread_mutex_unlock(&s->out_mu);
}

/* Run-time state of the Redis faults. */
typedef struct {
    int node[SIM_MAX_EVENTS];      /* by fault ref: the node a kill/stop-primary hit, or -1 */
    pid_t reshard[SIM_MAX_RESHARDS];
    int n_reshard;
} redis_faults_t;

/* Plays one action of the brokers' or the cluster's part of the plan. */
static void play(sim_t *s, verdict_t *v, redis_faults_t *rf, const sim_action_t *a, int *failed)
{
    const opts_t *o = s->o;
    char err[1024], what[64];
    sim_broker_t *b = a->broker >= 0 ? s->brokers[a->broker] : NULL;
    if (s->sc->n_brokers > 1)
        snprintf(what, sizeof what, "broker %d", a->broker + 1);
    else
        snprintf(what, sizeof what, "broker");
    switch (a->type) {
    case SIM_ACT_KILL:
        vlog(s, "%s: SIGKILL", what);
        sim_broker_kill(b);
        s->paused[a->broker] = 0;
        break;
    case SIM_ACT_RESTART:
        if (sim_broker_start(b, (int) (BROKER_START_MS * o->scale), err, sizeof err) != 0) {
            fprintf(stderr, "\ncauseway-sim: restarting the %s: %s\n", what, err);
            *failed = 1;
        } else {
            vlog(s, "%s restarted on %s", what, sim_broker_endpoint(b));
        }
        break;
    case SIM_ACT_PAUSE:
    case SIM_ACT_STOP:
        if (a->type == SIM_ACT_PAUSE)
            vlog(s, "%s: SIGSTOP for %.3fs", what, (double) a->dur_us / 1e6);
        else
            vlog(s, "%s: SIGSTOP", what);
        sim_broker_pause(b);
        s->paused[a->broker] = 1;
        break;
    case SIM_ACT_RESUME:
    case SIM_ACT_CONT:
        vlog(s, "%s: SIGCONT", what);
        sim_broker_resume(b);
        s->paused[a->broker] = 0;
        break;
    case SIM_ACT_KILL_PRIMARY:
    case SIM_ACT_STOP_PRIMARY: {
        int node = sim_cluster_primary(s->cluster, a->n, err, sizeof err);
        rf->node[a->ref] = node;
        const char *act = a->type == SIM_ACT_KILL_PRIMARY ? "kill-primary" : "stop-primary";
        if (node < 0) {
            fault_error(s, v, act, err);
            break;
        }
        vlog(s, "redis: %s primary %d (port %d)", a->type == SIM_ACT_KILL_PRIMARY ? "SIGKILL"
                                                                                   : "SIGSTOP",
             a->n, sim_cluster_port(s->cluster, node));
        if ((a->type == SIM_ACT_KILL_PRIMARY ? sim_cluster_kill(s->cluster, node)
                                             : sim_cluster_stop(s->cluster, node)) != 0)
            fault_error(s, v, act, "the node is not running");
        break;
    }
    case SIM_ACT_NODE_RESTART:
        if (rf->node[a->ref] < 0)
            break;   /* the kill failed (counted) */
        if (sim_cluster_restart(s->cluster, rf->node[a->ref], (int) (NODE_RESTART_MS * o->scale),
                                err, sizeof err) != 0)
            fault_error(s, v, "restarting a Redis node", err);
        else
            vlog(s, "redis: node %d restarted", sim_cluster_port(s->cluster, rf->node[a->ref]));
        break;
    case SIM_ACT_NODE_CONT:
        if (rf->node[a->ref] < 0)
            break;
        vlog(s, "redis: SIGCONT node %d", sim_cluster_port(s->cluster, rf->node[a->ref]));
        if (sim_cluster_cont(s->cluster, rf->node[a->ref]) != 0)
            fault_error(s, v, "SIGCONT of a Redis node", "the node is not running");
        break;
    case SIM_ACT_RESHARD: {
        if (rf->n_reshard == SIM_MAX_RESHARDS) {
            snprintf(err, sizeof err, "more than %d in one run", SIM_MAX_RESHARDS);
            fault_error(s, v, "reshard", err);
            break;
        }
        pid_t pid = sim_cluster_reshard(s->cluster, a->n, err, sizeof err);
        if (pid < 0)
            fault_error(s, v, "reshard", err);
        else
            rf->reshard[rf->n_reshard++] = pid;
        vlog(s, "redis: reshard %d slots from primary 1 to 2 (in the background)", a->n);
        break;
    }
    case SIM_ACT_KILL_PUBSUB: {
        long k = sim_cluster_kill_pubsub(s->cluster, err, sizeof err);
        if (k < 0)
            fault_error(s, v, "kill-pubsub", err);
        else
            v->pubsub_closed += k;
        vlog(s, "redis: CLIENT KILL TYPE pubsub closed %ld connections", k);
        break;
    }
    default:
        break;
    }
}

/* Reaps the reshard runs that ended; with wait_ms > 0 waits that long for
 * the others, then counts each that failed or is still running. */
static void reap_reshards(sim_t *s, verdict_t *v, redis_faults_t *rf, int wait_ms)
{
    for (int i = 0; i < rf->n_reshard; i++) {
        if (rf->reshard[i] <= 0)
            continue;
        int st = sim_wait(rf->reshard[i], wait_ms);
        if (st < 0 && wait_ms <= 0)
            continue;
        if (st < 0) {
            kill(rf->reshard[i], SIGKILL);
            sim_wait(rf->reshard[i], 5000);
            fault_error(s, v, "reshard", "redis-cli --cluster reshard did not finish in time");
        } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fault_error(s, v, "reshard", "redis-cli --cluster reshard failed (see "
                        "redis/reshard-N.log in the work directory)");
        } else {
            vlog(s, "redis: reshard done");
        }
        rf->reshard[i] = 0;
    }
}

int main(int argc, char **argv)
{
    opts_t o = {0};
    if (parse_args(argc, argv, &o) != 0)
        return EXIT_USAGE;
    const char *scale_env = getenv("CW_TIMEOUT_SCALE");
    o.scale = scale_env ? atof(scale_env) : 1.0;
    if (o.scale < 1.0)
        o.scale = 1.0;
    o.progress = isatty(2) && !o.plan_only;

    char err[1024];
    sim_scenario_t *sc = sim_scenario_load(o.scenario_path, err, sizeof err);
    if (!sc) {
        fprintf(stderr, "causeway-sim: %s\n", err);
        return EXIT_USAGE;
    }
    sim_plan_t *plan = sim_plan_new(sc, o.has_seed ? o.seed : sc->seed, err, sizeof err);
    if (!plan) {
        fprintf(stderr, "causeway-sim: %s\n", err);
        sim_scenario_destroy(&sc);
        return EXIT_USAGE;
    }
    if (o.plan_only) {
        sim_plan_print(plan, stdout);
        sim_plan_destroy(&plan);
        sim_scenario_destroy(&sc);
        return 0;
    }

    int rc = EXIT_RUNTIME;
    int n = sc->n_clients;
    sim_t s = {.o = &o, .sc = sc, .plan = plan};
    pthread_mutex_init(&s.out_mu, NULL);
    redis_faults_t *rf = calloc(1, sizeof *rf);
    char *extra = NULL;
    char *broker_bin = o.broker_bin ? strdup(o.broker_bin) : sibling("causeway-broker", "broker/causeway-broker");
    char *clockd_bin = o.clockd_bin ? strdup(o.clockd_bin) : sibling("causeway-clockd", "clockd/causeway-clockd");
    int have_workdir = 0;
    verdict_t *v = calloc(1, sizeof *v);
    s.clients = calloc((size_t) n, sizeof *s.clients);
    s.w = calloc((size_t) n, sizeof *s.w);
    s.by_name = calloc((size_t) n, sizeof *s.by_name);
    if (asprintf(&extra, "%s %s", sc->broker_args, o.broker_args ? o.broker_args : "") < 0)
        extra = NULL;
    if (!broker_bin || !clockd_bin || !v || !s.clients || !s.w || !s.by_name || !rf || !extra) {
        fprintf(stderr, "causeway-sim: out of memory\n");
        goto out;
    }
    if (access(broker_bin, X_OK) != 0 || access(clockd_bin, X_OK) != 0) {
        fprintf(stderr, "causeway-sim: cannot run %s (use --broker / --clockd)\n",
                access(broker_bin, X_OK) != 0 ? broker_bin : clockd_bin);
        goto out;
    }
    for (int i = 0; i < n; i++)
        s.by_name[i] = i;
    g_sort_sc = sc;
    qsort(s.by_name, (size_t) n, sizeof *s.by_name, cmp_by_name);
    for (size_t k = 0; k < plan->n_msgs; k++) {
        plan->msgs[k].rstate = calloc((size_t) n, 1);
        plan->msgs[k].shown = calloc((size_t) n, 1);
        plan->msgs[k].pair = calloc((size_t) n, sizeof *plan->msgs[k].pair);
        if (!plan->msgs[k].rstate || !plan->msgs[k].shown || !plan->msgs[k].pair) {
            fprintf(stderr, "causeway-sim: out of memory\n");
            goto out;
        }
    }
    /* Each client's actions, in plan order. */
    for (size_t i = 0; i < plan->n_acts; i++)
        if (plan->acts[i].client >= 0)
            s.w[plan->acts[i].client].n_acts++;
    for (int c = 0; c < n; c++) {
        s.w[c].sim = &s;
        s.w[c].ci = c;
        s.w[c].online = 1;
        s.w[c].acts = calloc(s.w[c].n_acts ? s.w[c].n_acts : 1, sizeof *s.w[c].acts);
        if (!s.w[c].acts) {
            fprintf(stderr, "causeway-sim: out of memory\n");
            goto out;
        }
        s.w[c].n_acts = 0;
    }
    for (size_t i = 0; i < plan->n_acts; i++)
        if (plan->acts[i].client >= 0) {
            worker_t *w = &s.w[plan->acts[i].client];
            w->acts[w->n_acts++] = i;
        }
    {
        uint64_t r = 0;
        FILE *f = fopen("/dev/urandom", "rb");
        if (!f || fread(&r, sizeof r, 1, f) != 1)
            r = (uint64_t) mono_us() ^ ((uint64_t) getpid() << 32);
        if (f)
            fclose(f);
        snprintf(s.runid, sizeof s.runid, "%016" PRIx64, r);
    }
    s.send_timeout_ms = (int) ((double) sc->send_timeout_us / 1000.0 * o.scale);

    /* Limits: 1 DEALER + a context per client, plus the trace file. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (o.workdir_opt) {
        if (strlen(o.workdir_opt) > 900) {
            fprintf(stderr, "causeway-sim: --workdir: longer than 900 bytes\n");
            goto out;
        }
        if (mkdir(o.workdir_opt, 0700) != 0) {
            fprintf(stderr, "causeway-sim: --workdir %s: %s\n", o.workdir_opt, strerror(errno));
            goto out;
        }
        snprintf(s.workdir, sizeof s.workdir, "%s", o.workdir_opt);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(s.workdir, sizeof s.workdir, "%s/causeway-sim.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(s.workdir)) {
            fprintf(stderr, "causeway-sim: cannot make a work directory: %s\n", strerror(errno));
            goto out;
        }
    }
    have_workdir = 1;
    snprintf(s.trace_path, sizeof s.trace_path, "%s/trace.jsonl", s.workdir);

    /* Signals: workers and library threads inherit a mask without
     * SIGINT/SIGTERM; only the main thread takes them. */
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    /* The Redis Cluster, then the brokers, then the clients. */
    int failed = 0;
    char store_url[SIM_CLUSTER_MAX_NODES * 24 + 16] = "";
    if (sc->store == SIM_STORE_REDIS) {
        s.cluster = sim_cluster_new(s.workdir, sc->redis_primaries, sc->redis_replicas,
                                    sc->node_timeout_ms, "redis-server", "redis-cli", err,
                                    sizeof err);
        if (!s.cluster || sim_cluster_start(s.cluster, (int) (CLUSTER_START_MS * o.scale), err,
                                            sizeof err) != 0) {
            fprintf(stderr, "causeway-sim: the Redis Cluster: %s\n", err);
            failed = 1;
        } else {
            snprintf(store_url, sizeof store_url, "redis://%s", sim_cluster_seeds(s.cluster));
            vlog(&s, "Redis Cluster %dx%d up: %s", sc->redis_primaries, sc->redis_replicas,
                 sim_cluster_seeds(s.cluster));
        }
    }
    for (int b = 0; b < sc->n_brokers && !failed; b++) {
        char bdir[1100];
        if (sc->n_brokers == 1)
            snprintf(bdir, sizeof bdir, "%s", s.workdir);
        else {
            snprintf(bdir, sizeof bdir, "%s/broker-%d", s.workdir, b + 1);
            mkdir(bdir, 0700);
        }
        s.brokers[b] = sim_broker_new(broker_bin, bdir, sc->heartbeat_ms, sc->liveness,
                                      getenv("CW_BROKER_WRAPPER"));
        if (!s.brokers[b] ||
            sim_broker_set_store(s.brokers[b], *store_url ? store_url : NULL, extra) != 0) {
            fprintf(stderr, "causeway-sim: %s\n",
                    errno == E2BIG ? "broker_args / --broker-args: more than 31 words"
                                   : "out of memory");
            failed = 1;
        } else if (sim_broker_start(s.brokers[b], (int) (BROKER_START_MS * o.scale), err,
                                    sizeof err) != 0) {
            fprintf(stderr, "causeway-sim: %s\n", err);
            failed = 1;
        } else {
            vlog(&s, "broker %d listening on %s (%s)", b + 1, sim_broker_endpoint(s.brokers[b]),
                 *store_url ? store_url : "SQLite in data/");
        }
    }
    if (failed) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        goto out;
    }
    cw_client_opts_t copts = {.agent = "causeway-sim/" SIM_VERSION, .quiet = 1, .auto_ack = 1,
                              .trace_path = s.trace_path};
#ifdef CW_ENDPOINTS_MAX
    s.failover = sc->n_brokers > 1;   /* libcauseway takes endpoint lists */
#endif
    for (int c = 0; c < n && !failed; c++) {
        /* Home broker first, then the others in order (failover). */
        char eps[SIM_MAX_BROKERS * 40];
        int home = sim_home(sc, c);
        size_t off = (size_t) snprintf(eps, sizeof eps, "%s", sim_broker_endpoint(s.brokers[home]));
        for (int b = 0; s.failover && b < sc->n_brokers; b++)
            if (b != home)
                off += (size_t) snprintf(eps + off, sizeof eps - off, ",%s",
                                         sim_broker_endpoint(s.brokers[b]));
        s.clients[c] = cw_client_new(eps, &copts);
        if (!s.clients[c]) {
            fprintf(stderr, "causeway-sim: cannot create client %s: %s\n", sc->names[c],
                    strerror(errno));
            failed = 1;
        } else if (log_in(&s, NULL, c, mono_us() + (int64_t) (BROKER_START_MS * o.scale) * 1000) !=
                   0) {
            failed = 1;
        }
    }
    if (!failed)
        vlog(&s, "%d clients logged in%s", n, s.failover ? " (every broker's endpoint, home first)"
                                                        : "");
    s.t0_us = mono_us();
    for (int c = 0; c < n && !failed; c++) {
        if (pthread_create(&s.w[c].th, NULL, worker_main, &s.w[c]) != 0) {
            fprintf(stderr, "causeway-sim: cannot start a thread: %s\n", strerror(errno));
            failed = 1;
        } else {
            s.w[c].started = 1;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);

    /* The brokers' and the cluster's part of the plan. */
    for (int i = 0; i < SIM_MAX_EVENTS; i++)
        rf->node[i] = -1;
    for (size_t i = 0; i < plan->n_acts && !failed; i++) {
        const sim_action_t *a = &plan->acts[i];
        if (a->client >= 0)
            continue;
        if (main_wait(&s, s.t0_us + a->at_us, "run") != 0) {
            failed = 2;
            break;
        }
        play(&s, v, rf, a, &failed);
        reap_reshards(&s, v, rf, 0);
    }
    /* Wait for the workers to get through their parts (a send may block up
     * to send_timeout; a login retries until it works). */
    int64_t hard = s.t0_us + plan->end_us + 2 * (int64_t) s.send_timeout_ms * 1000 +
                   (int64_t) ((double) sc->drain_timeout_us * o.scale);
    while (!failed && atomic_load(&s.done) < n) {
        if (mono_us() >= hard) {
            fprintf(stderr, "\ncauseway-sim: clients still busy %.1f s after the plan ended\n",
                    (double) (mono_us() - s.t0_us - plan->end_us) / 1e6);
            break;
        }
        if (main_wait(&s, mono_us() + 20000, "run") != 0)
            failed = 2;
    }
    /* Drain: everyone is online; wait until every accepted durable delivery
     * was shown and nothing was shown for `quiet`, or the drain timeout. */
    int64_t drain_start = mono_us();
    int64_t drain_end = drain_start + (int64_t) ((double) sc->drain_timeout_us * o.scale);
    if (!failed)
        vlog(&s, "drain: waiting for outstanding deliveries");
    while (!failed) {
        int64_t now = mono_us();
        long pending = atomic_load(&s.acc_pairs) - atomic_load(&s.shown_dur);
        if (atomic_load(&s.done) == n && pending <= 0 && now - drain_start >= sc->quiet_us &&
            now - atomic_load(&s.last_show_us) >= sc->quiet_us)
            break;
        if (now >= drain_end) {
            v->drain_timed_out = 1;
            break;
        }
        if (main_wait(&s, now + 20000, "drain") != 0)
            failed = 2;
    }
    v->drain_s = (double) (mono_us() - drain_start) / 1e6;
    atomic_store(&s.stop, 1);
    for (int c = 0; c < n; c++)
        if (s.w[c].started) {
            pthread_join(s.w[c].th, NULL);
            s.w[c].started = 0;
        }
    v->elapsed_s = run_s(&s);
    if (o.progress) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    /* Destroying a client logs it out and closes its trace: the trace is
     * complete once all are gone. */
    for (int c = 0; c < n; c++)
        cw_client_destroy(&s.clients[c]);
    reap_reshards(&s, v, rf, (int) (RESHARD_MS * o.scale));
    /* Every broker still running exits cleanly; one killed for good (its
     * clients failed over) is -2 and does not count. */
    for (int b = 0; b < sc->n_brokers; b++) {
        if (!s.brokers[b] || !sim_broker_running(s.brokers[b])) {
            v->broker_exits[b] = -2;
            continue;
        }
        v->broker_exits[b] = sim_broker_stop(s.brokers[b], (int) (BROKER_STOP_MS * o.scale));
        if (v->broker_exits[b] != 0 && v->broker_exit == 0)
            v->broker_exit = v->broker_exits[b];
    }
    sim_cluster_destroy(&s.cluster);
    if (failed == 2) {
        fprintf(stderr, "causeway-sim: interrupted\n");
        rc = EXIT_INTERRUPTED;
        goto out;
    }
    if (failed)
        goto out;

    char audit_out[1100], audit_err[1100];
    snprintf(audit_out, sizeof audit_out, "%s/audit.json", s.workdir);
    snprintf(audit_err, sizeof audit_err, "%s/audit.err", s.workdir);
    char *aargv[] = {clockd_bin, "audit", s.trace_path, "--json", NULL};
    if (o.progress) {
        fprintf(stderr, "[%6.1fs] auditing the clients' trace with causeway-clockd ...",
                v->elapsed_s);
        fflush(stderr);
    }
    int arc = access(s.trace_path, R_OK) == 0
                  ? sim_run(aargv, audit_out, audit_err, (int) (AUDIT_MS * o.scale),
                            v->audit_err, sizeof v->audit_err)
                  : -2;
    if (arc == -2)
        snprintf(v->audit_err, sizeof v->audit_err, "no trace was written (%s)", s.trace_path);
    else if (arc != 0 && arc != 1) {
        if (arc > 1)
            snprintf(v->audit_err, sizeof v->audit_err, "causeway-clockd audit exited %d; see %s",
                     arc, audit_err);
    } else if (parse_audit(audit_out, v) != 0)
        snprintf(v->audit_err, sizeof v->audit_err, "cannot read %s", audit_out);
    else
        v->audit_ok = 1;
    if (o.progress) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
    tally(&s, v);
    /* A run that sent nothing, was cut short or never drained proves
     * nothing: not clean either. */
    v->clean = v->audit_ok && v->lost == 0 && v->duplicated == 0 && v->unexpected == 0 &&
               v->causal - v->causal_late == 0 && v->broker_exit == 0 && v->sent > 0 && v->not_sent == 0 &&
               !v->drain_timed_out && v->seq_reuse == 0 && v->fault_errors == 0;
    if (o.json)
        print_json(&s, v, stdout);
    else
        print_text(&s, v, stdout);
    if (o.diagram) {
        char *dargv[] = {clockd_bin, "diagram", s.trace_path, (char *) o.diagram, "--title",
                         sc->name, NULL};
        int drc = sim_run(dargv, NULL, NULL, (int) (AUDIT_MS * o.scale), err, sizeof err);
        if (drc != 0)
            fprintf(stderr, "causeway-sim: the diagram failed (%s)\n",
                    drc < 0 ? err : "see above");
        else if (!o.json)
            printf("space-time diagram: %s\n", o.diagram);
    }
    rc = v->clean ? EXIT_CLEAN : EXIT_VERDICT;
    fflush(stdout);

out:
    atomic_store(&s.stop, 1);
    for (int c = 0; s.w && c < n; c++) {
        if (s.w[c].started)
            pthread_join(s.w[c].th, NULL);
        free(s.w[c].acts);
        free(s.w[c].lat_live);
        free(s.w[c].lat_dur);
        free(s.w[c].shows);
    }
    for (int c = 0; s.clients && c < n; c++)
        cw_client_destroy(&s.clients[c]);
    for (int b = 0; b < SIM_MAX_BROKERS; b++)
        sim_broker_destroy(&s.brokers[b]);
    sim_cluster_destroy(&s.cluster);
    free(rf);
    free(extra);
    if (have_workdir && !o.keep && rc == EXIT_CLEAN)
        nftw(s.workdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    else if (have_workdir && rc != EXIT_CLEAN && !o.json)
        fprintf(stderr, "causeway-sim: work directory kept: %s\n", s.workdir);
    free(s.clients);
    free(s.w);
    free(s.by_name);
    free(broker_bin);
    free(clockd_bin);
    free(v);
    pthread_mutex_destroy(&s.out_mu);
    sim_plan_destroy(&plan);
    sim_scenario_destroy(&sc);
    return rc;
}
