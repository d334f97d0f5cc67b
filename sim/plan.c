/*  plan.c: turns a scenario and a seed into the list of intended actions.
 *
 *  Runs on the main thread before the run. The random draws happen in this
 *  order, and only here: first the `at` lines in time order (offline
 *  durations, random clients), then the messages in index order (sender,
 *  kind, recipients, durable or not, size, think time). Message k's planned
 *  time is its sender's previous planned time plus the think time; a send
 *  that falls inside an offline window of its sender moves to the end of
 *  the window (the user sends when back). The actions are then sorted by
 *  (time, type, creation order), a total order, so the printed plan is a
 *  pure function of (scenario, seed).
 *
 *  Checked here (they need the time order): the broker runs, is killed,
 *  restarted, paused only when that makes sense, and runs at the end; a
 *  client is never offline twice at once.
 */
#include "scenario.h"

#include <stdlib.h>
#include <string.h>

#include "cw_util.h"
#include "rng.h"

typedef struct {
    int64_t from, to;  /* [from, to) */
} window_t;

typedef struct {
    window_t *w;
    size_t n;
} windows_t;

const char *sim_kind_name(sim_kind_t k)
{
    switch (k) {
    case SIM_UNICAST: return "unicast";
    case SIM_MULTICAST: return "multicast";
    case SIM_BROADCAST: return "broadcast";
    }
    return "?";
}

static int cmp_event(const void *a, const void *b)
{
    const sim_event_spec_t *x = *(const sim_event_spec_t *const *) a;
    const sim_event_spec_t *y = *(const sim_event_spec_t *const *) b;
    if (x->at_us != y->at_us)
        return x->at_us < y->at_us ? -1 : 1;
    return x->line - y->line;
}

static int cmp_action(const void *a, const void *b)
{
    const sim_action_t *x = a, *y = b;
    if (x->at_us != y->at_us)
        return x->at_us < y->at_us ? -1 : 1;
    if (x->type != y->type)
        return (int) x->type - (int) y->type;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int overlaps(const windows_t *ws, int64_t from, int64_t to)
{
    for (size_t i = 0; i < ws->n; i++)
        if (from < ws->w[i].to && ws->w[i].from < to)
            return 1;
    return 0;
}

static int add_window(windows_t *ws, int64_t from, int64_t to)
{
    window_t *g = realloc(ws->w, (ws->n + 1) * sizeof *g);
    if (!g)
        return -1;
    ws->w = g;
    ws->w[ws->n++] = (window_t) {from, to};
    return 0;
}

static int add_action(sim_plan_t *p, size_t *cap, sim_action_t a)
{
    if (p->n_acts == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        sim_action_t *g = realloc(p->acts, ncap * sizeof *g);
        if (!g)
            return -1;
        p->acts = g;
        *cap = ncap;
    }
    a.seq = p->n_acts;
    p->acts[p->n_acts++] = a;
    return 0;
}

static double secs(int64_t us)
{
    return (double) us / 1e6;
}

/* Broker faults and offline windows, in time order. 0, or -1 with err. */
static int plan_events(sim_plan_t *p, sim_rng_t *rng, windows_t *off, size_t *cap, char *err,
                       size_t err_size)
{
    const sim_scenario_t *sc = p->sc;
    const sim_event_spec_t **ev = calloc(sc->n_events ? sc->n_events : 1, sizeof *ev);
    int *cand = calloc((size_t) sc->n_clients, sizeof *cand);
    int rc = -1;
    if (!ev || !cand) {
        cw_set_err(err, err_size, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < sc->n_events; i++)
        ev[i] = &sc->events[i];
    qsort(ev, sc->n_events, sizeof *ev, cmp_event);
    /* Per broker: its state, until when it is paused, the line that killed it. */
    enum { UP, DOWN, STOPPED } bstate[SIM_MAX_BROKERS] = {UP};
    int64_t paused_until[SIM_MAX_BROKERS];
    int kill_line[SIM_MAX_BROKERS] = {0};
    for (int b = 0; b < SIM_MAX_BROKERS; b++) {
        bstate[b] = UP;
        paused_until[b] = -1;
    }
    int one = sc->n_brokers == 1;
    for (size_t i = 0; i < sc->n_events; i++) {
        const sim_event_spec_t *e = ev[i];
        const char *f = sc->path;
        int b = e->broker;
        char bn[32];
        if (one)
            snprintf(bn, sizeof bn, "the broker");
        else
            snprintf(bn, sizeof bn, "broker %d", b + 1);
        int on_broker = e->type == SIM_EV_KILL || e->type == SIM_EV_RESTART ||
                        e->type == SIM_EV_PAUSE || e->type == SIM_EV_STOP ||
                        e->type == SIM_EV_CONT;
        if (on_broker && e->at_us < paused_until[b]) {
            cw_set_err(err, err_size, "%s:%d: %s is paused until %.3fs", f, e->line, bn,
                       secs(paused_until[b]));
            goto out;
        }
        sim_action_t a = {.at_us = e->at_us, .client = -1, .broker = b};
        switch (e->type) {
        case SIM_EV_KILL:
            if (bstate[b] == DOWN) {
                cw_set_err(err, err_size, "%s:%d: kill-broker at %.3fs: %s is not "
                           "running (killed on line %d)", f, e->line, secs(e->at_us), bn,
                           kill_line[b]);
                goto out;
            }
            bstate[b] = DOWN;
            kill_line[b] = e->line;
            a.type = SIM_ACT_KILL;
            if (add_action(p, cap, a))
                goto oom;
            break;
        case SIM_EV_RESTART:
            if (bstate[b] != DOWN) {
                cw_set_err(err, err_size, "%s:%d: restart-broker at %.3fs: %s is "
                           "running (kill it first)", f, e->line, secs(e->at_us), bn);
                goto out;
            }
            bstate[b] = UP;
            a.type = SIM_ACT_RESTART;
            if (add_action(p, cap, a))
                goto oom;
            break;
        case SIM_EV_PAUSE:
        case SIM_EV_STOP: {
            if (bstate[b] != UP) {
                cw_set_err(err, err_size, "%s:%d: %s at %.3fs: %s is not running%s", f, e->line,
                           e->type == SIM_EV_PAUSE ? "pause-broker" : "stop-broker",
                           secs(e->at_us), bn, bstate[b] == STOPPED ? " (stopped)" : "");
                if (bstate[b] == DOWN)
                    cw_set_err(err, err_size, "%s:%d: %s at %.3fs: %s is not running (killed "
                               "on line %d)", f, e->line,
                               e->type == SIM_EV_PAUSE ? "pause-broker" : "stop-broker",
                               secs(e->at_us), bn, kill_line[b]);
                goto out;
            }
            if (e->type == SIM_EV_STOP) {
                bstate[b] = STOPPED;
                a.type = SIM_ACT_STOP;
                if (add_action(p, cap, a))
                    goto oom;
                break;
            }
            int64_t d = sim_rng_range(rng, e->dur_us.lo, e->dur_us.hi);
            paused_until[b] = e->at_us + d;
            a.type = SIM_ACT_PAUSE;
            a.dur_us = d;
            sim_action_t r = {.at_us = paused_until[b], .type = SIM_ACT_RESUME, .client = -1,
                              .broker = b};
            if (add_action(p, cap, a) || add_action(p, cap, r))
                goto oom;
            break;
        }
        case SIM_EV_CONT:
            if (bstate[b] != STOPPED) {
                cw_set_err(err, err_size, "%s:%d: cont-broker at %.3fs: %s was not stopped "
                           "(stop-broker)", f, e->line, secs(e->at_us), bn);
                goto out;
            }
            bstate[b] = UP;
            a.type = SIM_ACT_CONT;
            if (add_action(p, cap, a))
                goto oom;
            break;
        case SIM_EV_KILL_PRIMARY:
        case SIM_EV_STOP_PRIMARY: {
            a.broker = -1;
            a.n = e->primary;
            a.ref = p->n_node_faults++;
            a.type = e->type == SIM_EV_KILL_PRIMARY ? SIM_ACT_KILL_PRIMARY : SIM_ACT_STOP_PRIMARY;
            int64_t d = e->dur_us.hi > 0 ? sim_rng_range(rng, e->dur_us.lo, e->dur_us.hi) : 0;
            a.dur_us = d;
            if (add_action(p, cap, a))
                goto oom;
            if (d > 0) {
                sim_action_t r = {.at_us = e->at_us + d, .client = -1, .broker = -1,
                                  .n = e->primary, .ref = a.ref,
                                  .type = e->type == SIM_EV_KILL_PRIMARY ? SIM_ACT_NODE_RESTART
                                                                         : SIM_ACT_NODE_CONT};
                if (add_action(p, cap, r))
                    goto oom;
            }
            break;
        }
        case SIM_EV_RESHARD:
        case SIM_EV_KILL_PUBSUB:
            a.broker = -1;
            a.n = e->slots;
            a.type = e->type == SIM_EV_RESHARD ? SIM_ACT_RESHARD : SIM_ACT_KILL_PUBSUB;
            if (add_action(p, cap, a))
                goto oom;
            break;
        case SIM_EV_OFFLINE: {
            int64_t d = sim_rng_range(rng, e->dur_us.lo, e->dur_us.hi);
            int64_t from = e->at_us, to = e->at_us + d;
            int want = e->client ? 1 : e->n_random;
            int n = 0;
            if (e->client) {
                cand[n++] = sim_scenario_client(sc, e->client);
                if (overlaps(&off[cand[0]], from, to)) {
                    cw_set_err(err, err_size, "%s:%d: %s is already offline during "
                               "%.3fs..%.3fs", f, e->line, e->client, secs(from), secs(to));
                    goto out;
                }
            } else {
                for (int c = 0; c < sc->n_clients; c++)
                    if (!overlaps(&off[c], from, to))
                        cand[n++] = c;
                if (n < want) {
                    cw_set_err(err, err_size, "%s:%d: offline random %d: only %d clients are "
                               "online during %.3fs..%.3fs", f, e->line, want, n, secs(from),
                               secs(to));
                    goto out;
                }
                /* Partial Fisher-Yates: the first `want` are the pick. */
                for (int k = 0; k < want; k++) {
                    int j = k + (int) sim_rng_below(rng, (uint64_t) (n - k));
                    int t = cand[k];
                    cand[k] = cand[j];
                    cand[j] = t;
                }
            }
            for (int k = 0; k < want; k++) {
                int c = cand[k];
                if (add_window(&off[c], from, to) ||
                    add_action(p, cap, (sim_action_t) {.at_us = from, .type = SIM_ACT_OFFLINE, .client = c, .dur_us = d}) ||
                    add_action(p, cap, (sim_action_t) {.at_us = to, .type = SIM_ACT_ONLINE, .client = c}))
                    goto oom;
            }
            break;
        }
        }
    }
    /* One broker: it runs at the end. Several: at least one does (the
     * clients of a broker killed for good fail over to the others), and
     * none is left stopped. */
    int running = 0;
    for (int b = 0; b < sc->n_brokers; b++) {
        if (bstate[b] == STOPPED) {
            cw_set_err(err, err_size, "%s: %s is stopped at the end (add 'at TIME cont-broker%s')",
                       sc->path, one ? "the broker" : "a broker", one ? "" : " K");
            goto out;
        }
        running += bstate[b] == UP;
    }
    if (one && bstate[0] == DOWN) {
        cw_set_err(err, err_size, "%s:%d: the broker is never restarted after this kill "
                   "(add 'at TIME restart-broker')", sc->path, kill_line[0]);
        goto out;
    }
    if (!running) {
        cw_set_err(err, err_size, "%s: every broker is down at the end", sc->path);
        goto out;
    }
    rc = 0;
    goto out;
oom:
    cw_set_err(err, err_size, "out of memory");
out:
    free(ev);
    free(cand);
    return rc;
}

/* Messages, in index order. 0, or -1 with err. */
static int plan_messages(sim_plan_t *p, sim_rng_t *rng, const windows_t *off, size_t *cap,
                         char *err, size_t err_size)
{
    const sim_scenario_t *sc = p->sc;
    int n = sc->n_clients;
    int64_t *clock = calloc((size_t) n, sizeof *clock);
    int *pool = calloc((size_t) n, sizeof *pool);
    if (!clock || !pool)
        goto oom;
    unsigned wsum = sc->w_unicast + sc->w_multicast + sc->w_broadcast;
    for (size_t k = 0; k < p->n_msgs; k++) {
        sim_msg_t *m = &p->msgs[k];
        m->sender = (int) sim_rng_below(rng, (uint64_t) n);
        uint64_t w = sim_rng_below(rng, wsum);
        m->kind = w < sc->w_unicast ? SIM_UNICAST
                  : w < sc->w_unicast + sc->w_multicast ? SIM_MULTICAST : SIM_BROADCAST;
        int n_to = 0;
        if (m->kind == SIM_UNICAST)
            n_to = 1;
        else if (m->kind == SIM_MULTICAST) {
            int64_t hi = sc->multicast.hi < n - 1 ? sc->multicast.hi : n - 1;
            if (sc->recipients == SIM_TO_OTHER_BROKER) {
                int others = 0;
                for (int c = 0; c < n; c++)
                    others += sim_home(sc, c) != sim_home(sc, m->sender);
                if (hi > others)
                    hi = others;
            }
            n_to = (int) sim_rng_range(rng, sc->multicast.lo, hi);
        }
        if (n_to) {
            m->to = calloc((size_t) n_to, sizeof *m->to);
            if (!m->to)
                goto oom;
            /* Everyone but the sender, then a partial Fisher-Yates. */
            int np = 0;
            for (int c = 0; c < n; c++)
                if (c != m->sender && (sc->recipients == SIM_TO_ANY ||
                                       sim_home(sc, c) != sim_home(sc, m->sender)))
                    pool[np++] = c;
            if (n_to > np)
                n_to = np;   /* multicast.hi beyond the pool (lo was checked) */
            for (int j = 0; j < n_to; j++) {
                int r = j + (int) sim_rng_below(rng, (uint64_t) (np - j));
                int t = pool[j];
                pool[j] = pool[r];
                pool[r] = t;
                m->to[j] = pool[j];
            }
            m->n_to = n_to;
        }
        m->durable = sim_rng_below(rng, 100) < (uint64_t) sc->durable_pct;
        m->size = (int) sim_rng_range(rng, sc->size.lo, sc->size.hi);
        int64_t think = sim_rng_range(rng, sc->think_us.lo, sc->think_us.hi);
        clock[m->sender] += think;
        m->at_us = clock[m->sender];
        const windows_t *ws = &off[m->sender];
        for (size_t i = 0; i < ws->n; i++)
            if (m->at_us >= ws->w[i].from && m->at_us < ws->w[i].to)
                m->at_us = ws->w[i].to;
        m->outcome = -1;
        if (add_action(p, cap, (sim_action_t) {.at_us = m->at_us, .type = SIM_ACT_SEND,
                                                .client = m->sender, .msg = k}))
            goto oom;
    }
    free(clock);
    free(pool);
    return 0;
oom:
    free(clock);
    free(pool);
    cw_set_err(err, err_size, "out of memory");
    return -1;
}

sim_plan_t *sim_plan_new(const sim_scenario_t *sc, uint64_t seed, char *err, size_t err_size)
{
    sim_plan_t *p = calloc(1, sizeof *p);
    windows_t *off = calloc((size_t) sc->n_clients, sizeof *off);
    size_t cap = 0;
    if (!p || !off) {
        free(p);
        free(off);
        cw_set_err(err, err_size, "out of memory");
        return NULL;
    }
    p->sc = sc;
    p->seed = seed;
    p->n_msgs = (size_t) sc->messages;
    p->msgs = calloc(p->n_msgs ? p->n_msgs : 1, sizeof *p->msgs);
    sim_rng_t rng;
    sim_rng_seed(&rng, seed);
    int rc = -1;
    if (!p->msgs)
        cw_set_err(err, err_size, "out of memory");
    else if (plan_events(p, &rng, off, &cap, err, err_size) == 0 &&
             plan_messages(p, &rng, off, &cap, err, err_size) == 0)
        rc = 0;
    for (int c = 0; c < sc->n_clients; c++)
        free(off[c].w);
    free(off);
    if (rc != 0) {
        sim_plan_destroy(&p);
        return NULL;
    }
    qsort(p->acts, p->n_acts, sizeof *p->acts, cmp_action);
    p->end_us = p->n_acts ? p->acts[p->n_acts - 1].at_us : 0;
    return p;
}

void sim_plan_destroy(sim_plan_t **pp)
{
    if (!pp || !*pp)
        return;
    sim_plan_t *p = *pp;
    for (size_t k = 0; k < p->n_msgs && p->msgs; k++) {
        free(p->msgs[k].to);
        free(p->msgs[k].rstate);
        free(p->msgs[k].shown);
        free((void *) p->msgs[k].pair);
    }
    free(p->msgs);
    free(p->acts);
    free(p);
    *pp = NULL;
}

void sim_plan_print(const sim_plan_t *p, FILE *f)
{
    const sim_scenario_t *sc = p->sc;
    fprintf(f, "# scenario %s, seed %llu: %d clients, %zu messages, %zu actions\n", sc->name,
            (unsigned long long) p->seed, sc->n_clients, p->n_msgs, p->n_acts);
    for (size_t i = 0; i < p->n_acts; i++) {
        const sim_action_t *a = &p->acts[i];
        fprintf(f, "%10.3fs  ", secs(a->at_us));
        switch (a->type) {
        case SIM_ACT_KILL:
        case SIM_ACT_RESTART:
        case SIM_ACT_PAUSE:
        case SIM_ACT_RESUME:
        case SIM_ACT_STOP:
        case SIM_ACT_CONT:
            if (sc->n_brokers > 1)
                fprintf(f, "broker %d ", a->broker + 1);
            else
                fprintf(f, "broker ");
            switch (a->type) {
            case SIM_ACT_KILL: fprintf(f, "kill (SIGKILL)\n"); break;
            case SIM_ACT_RESTART: fprintf(f, "restart\n"); break;
            case SIM_ACT_PAUSE: fprintf(f, "pause (SIGSTOP) for %.3fs\n", secs(a->dur_us)); break;
            case SIM_ACT_RESUME: fprintf(f, "resume (SIGCONT)\n"); break;
            case SIM_ACT_STOP: fprintf(f, "stop (SIGSTOP)\n"); break;
            default: fprintf(f, "cont (SIGCONT)\n"); break;
            }
            break;
        case SIM_ACT_KILL_PRIMARY:
            fprintf(f, "redis kill primary %d (SIGKILL)", a->n);
            if (a->dur_us)
                fprintf(f, ", restart after %.3fs", secs(a->dur_us));
            fputc('\n', f);
            break;
        case SIM_ACT_NODE_RESTART: fprintf(f, "redis restart the node of primary %d\n", a->n); break;
        case SIM_ACT_STOP_PRIMARY:
            fprintf(f, "redis stop primary %d (SIGSTOP) for %.3fs\n", a->n, secs(a->dur_us));
            break;
        case SIM_ACT_NODE_CONT: fprintf(f, "redis cont the node of primary %d (SIGCONT)\n", a->n); break;
        case SIM_ACT_RESHARD: fprintf(f, "redis reshard %d slots from primary 1 to 2\n", a->n); break;
        case SIM_ACT_KILL_PUBSUB: fprintf(f, "redis CLIENT KILL TYPE pubsub on every node\n"); break;
        case SIM_ACT_OFFLINE:
            fprintf(f, "%s offline for %.3fs\n", sc->names[a->client], secs(a->dur_us));
            break;
        case SIM_ACT_ONLINE: fprintf(f, "%s online\n", sc->names[a->client]); break;
        case SIM_ACT_SEND: {
            const sim_msg_t *m = &p->msgs[a->msg];
            fprintf(f, "%s send #%zu %s %s %dB ->", sc->names[a->client], a->msg,
                    m->durable ? "durable" : "live", sim_kind_name(m->kind), m->size);
            if (m->kind == SIM_BROADCAST)
                fprintf(f, " *");
            for (int j = 0; j < m->n_to; j++)
                fprintf(f, "%s%s", j ? "," : " ", sc->names[m->to[j]]);
            fputc('\n', f);
            break;
        }
        }
    }
}
