/*  scenario.c: reads and checks scenario files (format: docs/SIMULATION.md).
 *
 *  Owns the parser only; planning is plan.c. Runs on the main thread.
 *  Every error names the file and line and says what was wrong; nothing is
 *  half-applied (a failed load frees everything). Invariants of a loaded
 *  scenario: 2 <= n_clients <= SIM_MAX_CLIENTS with unique valid names,
 *  every range has lo <= hi, sizes are within [SIM_MIN_TEXT, SIM_MAX_TEXT],
 *  at least one mix weight is non-zero, every `at` line names a known
 *  client (checked once the whole file is read, since `names` may come
 *  after it).
 */
#include "scenario.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "cw_util.h"

typedef struct {
    sim_scenario_t *s;
    const char *path;
    int line;
    char *err;
    size_t err_size;
    unsigned seen;      /* bit per key in KEYS: set once given */
} parser_t;

static const char *const KEYS[] = {
    "name", "description", "clients", "names", "messages", "mix", "multicast",
    "durable", "size", "think", "seed", "heartbeat", "liveness",
    "send_timeout", "drain_timeout", "quiet", "brokers", "store", "redis_cluster",
    "node_timeout", "broker_args", "recipients", NULL,
};
enum { KEY_CLIENTS = 2, KEY_STORE = 17, KEY_REDIS_CLUSTER = 18 };

/* Records the error "path:line: message" in p->err. */
static void report(parser_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(parser_t *p, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->line > 0)
        snprintf(p->err, p->err_size, "%s:%d: %s", p->path, p->line, msg);
    else
        snprintf(p->err, p->err_size, "%s: %s", p->path, msg);
}

/* report() the error and evaluate to -1, for `return fail(p, ...)`. A macro
 * rather than a function returning -1 so that the compiler sees the -1 at
 * each call site: the callers of parse_int() and parse_dur() rely on "0
 * means *out was set", which gcc -O3 cannot prove through a varargs
 * function it does not inline (-Wmaybe-uninitialized). */
#define fail(p, ...) (report((p), __VA_ARGS__), -1)

static char *trim(char *s)
{
    while (isspace((unsigned char) *s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char) e[-1]))
        *--e = '\0';
    return s;
}

/* A whole-string integer in [lo, hi]. 0 or -1 (err set). */
static int parse_int(parser_t *p, const char *what, const char *v, long long lo, long long hi,
                     long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno)
        return fail(p, "%s: '%s' is not a whole number", what, v);
    if (x < lo || x > hi)
        return fail(p, "%s: %lld is out of range %lld..%lld", what, x, lo, hi);
    *out = x;
    return 0;
}

/* A duration "1.5s" or "200ms" (unit required), 0..SIM_MAX_TIME_US. */
static int parse_dur(parser_t *p, const char *what, const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || errno || !isfinite(x))
        return fail(p, "%s: '%s' is not a duration (like 1.5s or 200ms)", what, v);
    double scale;
    if (strcmp(end, "s") == 0)
        scale = 1e6;
    else if (strcmp(end, "ms") == 0)
        scale = 1e3;
    else if (*end == '\0')
        return fail(p, "%s: '%s' needs a unit: s or ms", what, v);
    else
        return fail(p, "%s: unknown unit '%s' in '%s' (s or ms)", what, end, v);
    double us = x * scale;
    if (us < 0 || us > (double) SIM_MAX_TIME_US)
        return fail(p, "%s: '%s' is out of range 0s..3600s", what, v);
    *out = (int64_t) llround(us);
    return 0;
}

/* "A..B" or "A" of durations (dur = 1) or integers in [lo, hi]. */
static int parse_range(parser_t *p, const char *what, char *v, int dur, long long lo, long long hi,
                       sim_range_t *out)
{
    char *dots = strstr(v, "..");
    char *a = v, *b = v;
    if (dots) {
        *dots = '\0';
        a = trim(v);
        b = trim(dots + 2);
    }
    int64_t x, y;
    long long t;
    if (dur) {
        if (parse_dur(p, what, a, &x) || parse_dur(p, what, b, &y))
            return -1;
    } else {
        if (parse_int(p, what, a, lo, hi, &t))
            return -1;
        x = t;
        if (parse_int(p, what, b, lo, hi, &t))
            return -1;
        y = t;
    }
    if (x > y)
        return fail(p, "%s: range %s..%s runs backwards", what, a, b);
    out->lo = x;
    out->hi = y;
    return 0;
}

static int valid_name(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > SIM_NAME_MAX)
        return 0;
    for (const char *c = n; *c; c++)
        if (!isalnum((unsigned char) *c) && *c != '_' && *c != '-' && *c != '.')
            return 0;
    return 1;
}

static void free_names(char **names, int n)
{
    if (!names)
        return;
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static int parse_names(parser_t *p, char *v)
{
    sim_scenario_t *s = p->s;
    char **names = NULL;
    int n = 0;
    char *save = NULL;
    for (char *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        if (!valid_name(tok)) {
            free_names(names, n);
            return fail(p, "names: '%s' is not a valid name (1-%d of A-Z a-z 0-9 _ - .)", tok,
                        SIM_NAME_MAX);
        }
        for (int i = 0; i < n; i++)
            if (strcmp(names[i], tok) == 0) {
                free_names(names, n);
                return fail(p, "names: '%s' is given twice", tok);
            }
        if (n == SIM_MAX_CLIENTS) {
            free_names(names, n);
            return fail(p, "names: more than %d", SIM_MAX_CLIENTS);
        }
        char **grown = realloc(names, (size_t) (n + 1) * sizeof *names);
        char *copy = grown ? strdup(tok) : NULL;
        if (grown)
            names = grown;
        if (!copy) {
            free_names(names, n);
            return fail(p, "out of memory");
        }
        names[n++] = copy;
    }
    if (n < 2) {
        free_names(names, n);
        return fail(p, "names: at least 2 clients are needed");
    }
    s->names = names;
    s->n_clients = n;
    return 0;
}

static int parse_mix(parser_t *p, char *v)
{
    sim_scenario_t *s = p->s;
    s->w_unicast = s->w_multicast = s->w_broadcast = 0;
    char *save = NULL;
    for (char *tok = strtok_r(v, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        tok = trim(tok);
        char *sp = tok + strcspn(tok, " \t");
        if (!*sp)
            return fail(p, "mix: '%s' should be KIND WEIGHT (like 'unicast 60')", tok);
        *sp = '\0';
        long long w;
        if (parse_int(p, "mix", trim(sp + 1), 0, 1000000, &w))
            return -1;
        if (strcmp(tok, "unicast") == 0)
            s->w_unicast = (unsigned) w;
        else if (strcmp(tok, "multicast") == 0)
            s->w_multicast = (unsigned) w;
        else if (strcmp(tok, "broadcast") == 0)
            s->w_broadcast = (unsigned) w;
        else
            return fail(p, "mix: unknown kind '%s' (unicast, multicast, broadcast)", tok);
    }
    if (s->w_unicast + s->w_multicast + s->w_broadcast == 0)
        return fail(p, "mix: every weight is 0");
    return 0;
}

static int parse_setting(parser_t *p, char *key, char *v)
{
    sim_scenario_t *s = p->s;
    int k = 0;
    while (KEYS[k] && strcmp(KEYS[k], key) != 0)
        k++;
    if (!KEYS[k])
        return fail(p, "unknown key '%s' (known: name, description, clients, names, messages, "
                       "mix, multicast, durable, size, think, seed, heartbeat, liveness, "
                       "send_timeout, drain_timeout, quiet, brokers, store, redis_cluster, "
                       "node_timeout, broker_args, recipients)", key);
    if (p->seen & (1u << k))
        return fail(p, "'%s' is set twice", key);
    p->seen |= 1u << k;
    if (!*v)
        return fail(p, "'%s' has no value", key);
    long long x;
    sim_range_t r;
    if (strcmp(key, "name") == 0 || strcmp(key, "description") == 0) {
        char *copy = strdup(v);
        if (!copy)
            return fail(p, "out of memory");
        char **dst = key[0] == 'n' ? &s->name : &s->description;
        free(*dst);
        *dst = copy;
    } else if (strcmp(key, "clients") == 0) {
        if (parse_int(p, key, v, 2, SIM_MAX_CLIENTS, &x))
            return -1;
        if (s->names && s->n_clients != x)
            return fail(p, "clients = %lld but names lists %d", x, s->n_clients);
        s->n_clients = (int) x;
    } else if (strcmp(key, "names") == 0) {
        int want = s->n_clients;
        int had = (p->seen & (1u << KEY_CLIENTS)) != 0;   /* clients given before */
        if (parse_names(p, v))
            return -1;
        if (had && want != s->n_clients)
            return fail(p, "names lists %d but clients = %d", s->n_clients, want);
    } else if (strcmp(key, "messages") == 0) {
        if (parse_int(p, key, v, 0, SIM_MAX_MESSAGES, &x))
            return -1;
        s->messages = (long) x;
    } else if (strcmp(key, "mix") == 0) {
        return parse_mix(p, v);
    } else if (strcmp(key, "multicast") == 0) {
        if (parse_range(p, key, v, 0, 2, SIM_MAX_CLIENTS, &r))
            return -1;
        s->multicast = r;
    } else if (strcmp(key, "durable") == 0) {
        size_t len = strlen(v);
        if (len && v[len - 1] == '%')
            v[len - 1] = '\0';
        if (parse_int(p, "durable (percent)", trim(v), 0, 100, &x))
            return -1;
        s->durable_pct = (int) x;
    } else if (strcmp(key, "size") == 0) {
        if (parse_range(p, key, v, 0, SIM_MIN_TEXT, SIM_MAX_TEXT, &r))
            return -1;
        s->size = r;
    } else if (strcmp(key, "think") == 0) {
        if (parse_range(p, key, v, 1, 0, 0, &r))
            return -1;
        s->think_us = r;
    } else if (strcmp(key, "seed") == 0) {
        char *end;
        errno = 0;
        unsigned long long u = strtoull(v, &end, 0);
        if (*end || errno || v[0] == '-')
            return fail(p, "seed: '%s' is not an unsigned 64-bit number", v);
        s->seed = u;
    } else if (strcmp(key, "heartbeat") == 0) {
        int64_t us;
        if (parse_dur(p, key, v, &us))
            return -1;
        if (us < 50000 || us > 60000000)
            return fail(p, "heartbeat: %s is out of range 50ms..60s", v);
        s->heartbeat_ms = (int) (us / 1000);
    } else if (strcmp(key, "liveness") == 0) {
        if (parse_int(p, key, v, 2, 100, &x))
            return -1;
        s->liveness = (int) x;
    } else if (strcmp(key, "brokers") == 0) {
        if (parse_int(p, key, v, 1, SIM_MAX_BROKERS, &x))
            return -1;
        s->n_brokers = (int) x;
    } else if (strcmp(key, "store") == 0) {
        if (strcmp(v, "sqlite") == 0)
            s->store = SIM_STORE_SQLITE;
        else if (strcmp(v, "redis") == 0)
            s->store = SIM_STORE_REDIS;
        else
            return fail(p, "store: '%s' is not sqlite or redis", v);
    } else if (strcmp(key, "redis_cluster") == 0) {
        char *xs = strchr(v, 'x');
        if (!xs)
            return fail(p, "redis_cluster: '%s' should be PRIMARIESxREPLICAS (like 3x1)", v);
        *xs = '\0';
        if (parse_int(p, "redis_cluster primaries", trim(v), SIM_CLUSTER_MIN_PRIMARIES,
                      SIM_CLUSTER_MAX_PRIMARIES, &x))
            return -1;
        s->redis_primaries = (int) x;
        if (parse_int(p, "redis_cluster replicas", trim(xs + 1), 0, SIM_CLUSTER_MAX_REPLICAS, &x))
            return -1;
        s->redis_replicas = (int) x;
    } else if (strcmp(key, "node_timeout") == 0) {
        int64_t us;
        if (parse_dur(p, key, v, &us))
            return -1;
        if (us < 100000 || us > 60000000)
            return fail(p, "node_timeout: %s is out of range 100ms..60s", v);
        s->node_timeout_ms = (int) (us / 1000);
    } else if (strcmp(key, "broker_args") == 0) {
        if (strlen(v) > SIM_MAX_BROKER_ARGS)
            return fail(p, "broker_args: longer than %d bytes", SIM_MAX_BROKER_ARGS);
        char *copy = strdup(v);
        if (!copy)
            return fail(p, "out of memory");
        free(s->broker_args);
        s->broker_args = copy;
    } else if (strcmp(key, "recipients") == 0) {
        if (strcmp(v, "any") == 0)
            s->recipients = SIM_TO_ANY;
        else if (strcmp(v, "other-broker") == 0)
            s->recipients = SIM_TO_OTHER_BROKER;
        else
            return fail(p, "recipients: '%s' is not any or other-broker", v);
    } else {
        int64_t us;
        if (parse_dur(p, key, v, &us))
            return -1;
        if (us < 1000)
            return fail(p, "%s: %s is too short (at least 1ms)", key, v);
        if (strcmp(key, "send_timeout") == 0)
            s->send_timeout_us = us;
        else if (strcmp(key, "drain_timeout") == 0)
            s->drain_timeout_us = us;
        else
            s->quiet_us = us;
    }
    return 0;
}

/* "for DUR" at *save's position. */
static int parse_for(parser_t *p, char **save, const char *what, sim_range_t *out)
{
    char *kw = strtok_r(NULL, " \t", save);
    if (!kw || strcmp(kw, "for") != 0)
        return fail(p, "%s needs 'for DURATION' (like 'for 1s' or 'for 0.5s..2s')", what);
    char *rest = *save ? trim(*save) : NULL;
    if (!rest || !*rest)
        return fail(p, "%s: missing duration after 'for'", what);
    *save = NULL;
    if (parse_range(p, what, rest, 1, 0, 0, out))
        return -1;
    if (out->lo <= 0)
        return fail(p, "%s: the duration must be more than 0", what);
    return 0;
}

static int parse_at(parser_t *p, char *rest)
{
    sim_scenario_t *s = p->s;
    if (s->n_events == SIM_MAX_EVENTS)
        return fail(p, "more than %d 'at' lines", SIM_MAX_EVENTS);
    sim_event_spec_t ev = {.line = p->line};
    char *save = NULL;
    char *when = strtok_r(rest, " \t", &save);
    char *what = strtok_r(NULL, " \t", &save);
    if (!when || !what)
        return fail(p, "'at' needs a time and an action (like 'at 2s kill-broker')");
    if (parse_dur(p, "at", when, &ev.at_us))
        return -1;
    if (strcmp(what, "kill-broker") == 0 || strcmp(what, "restart-broker") == 0 ||
        strcmp(what, "stop-broker") == 0 || strcmp(what, "cont-broker") == 0 ||
        strcmp(what, "pause-broker") == 0) {
        ev.type = strcmp(what, "kill-broker") == 0      ? SIM_EV_KILL
                  : strcmp(what, "restart-broker") == 0 ? SIM_EV_RESTART
                  : strcmp(what, "stop-broker") == 0    ? SIM_EV_STOP
                  : strcmp(what, "cont-broker") == 0    ? SIM_EV_CONT
                                                        : SIM_EV_PAUSE;
        /* An optional broker number K (1-based; default 1). */
        char *rest2 = save ? trim(save) : NULL;
        if (rest2 && isdigit((unsigned char) rest2[0])) {
            char *num = strtok_r(NULL, " \t", &save);
            long long k;
            if (parse_int(p, what, num, 1, SIM_MAX_BROKERS, &k))
                return -1;
            ev.broker = (int) k - 1;
        }
        if (ev.type == SIM_EV_PAUSE) {
            if (parse_for(p, &save, what, &ev.dur_us))
                return -1;
        } else if (save && *trim(save)) {
            return fail(p, "%s: unexpected '%s'", what, trim(save));
        }
    } else if (strcmp(what, "kill-primary") == 0 || strcmp(what, "stop-primary") == 0) {
        ev.type = what[0] == 'k' ? SIM_EV_KILL_PRIMARY : SIM_EV_STOP_PRIMARY;
        char *num = strtok_r(NULL, " \t", &save);
        long long k;
        if (!num)
            return fail(p, "%s needs a primary number (like '%s 1')", what, what);
        if (parse_int(p, what, num, 1, SIM_CLUSTER_MAX_PRIMARIES, &k))
            return -1;
        ev.primary = (int) k;
        if (ev.type == SIM_EV_STOP_PRIMARY) {
            if (parse_for(p, &save, what, &ev.dur_us))
                return -1;
        } else if (save && *trim(save)) {
            /* "restart after DURATION" */
            char *kw = strtok_r(NULL, " \t", &save);
            char *kw2 = strtok_r(NULL, " \t", &save);
            char *d = save ? trim(save) : NULL;
            if (!kw || strcmp(kw, "restart") != 0 || !kw2 || strcmp(kw2, "after") != 0 || !d ||
                !*d)
                return fail(p, "kill-primary: expected 'restart after DURATION' after the "
                               "number");
            save = NULL;
            if (parse_range(p, "kill-primary restart after", d, 1, 0, 0, &ev.dur_us))
                return -1;
            if (ev.dur_us.lo <= 0)
                return fail(p, "kill-primary: the restart delay must be more than 0");
        }
    } else if (strcmp(what, "reshard") == 0) {
        ev.type = SIM_EV_RESHARD;
        char *num = strtok_r(NULL, " \t", &save);
        long long k;
        if (!num)
            return fail(p, "reshard needs a number of slots (like 'reshard 500')");
        if (parse_int(p, "reshard", num, 1, SIM_CLUSTER_SLOTS - 1, &k))
            return -1;
        ev.slots = (int) k;
        if (save && *trim(save))
            return fail(p, "reshard: unexpected '%s'", trim(save));
    } else if (strcmp(what, "kill-pubsub") == 0) {
        ev.type = SIM_EV_KILL_PUBSUB;
        if (save && *trim(save))
            return fail(p, "kill-pubsub: unexpected '%s'", trim(save));
    } else if (strcmp(what, "offline") == 0) {
        ev.type = SIM_EV_OFFLINE;
        char *who = strtok_r(NULL, " \t", &save);
        if (!who)
            return fail(p, "offline needs a client name or 'random N'");
        if (strcmp(who, "random") == 0) {
            char *n = strtok_r(NULL, " \t", &save);
            long long x;
            if (!n)
                return fail(p, "offline random needs a count (like 'offline random 3 for 1s')");
            if (parse_int(p, "offline random", n, 1, SIM_MAX_CLIENTS, &x))
                return -1;
            ev.n_random = (int) x;
        } else {
            ev.client = strdup(who);
            if (!ev.client)
                return fail(p, "out of memory");
        }
        if (parse_for(p, &save, "offline", &ev.dur_us)) {
            free(ev.client);
            return -1;
        }
    } else {
        return fail(p, "unknown action '%s' (kill-broker, restart-broker, pause-broker, "
                       "stop-broker, cont-broker, kill-primary, stop-primary, reshard, "
                       "kill-pubsub, offline)",
                    what);
    }
    sim_event_spec_t *grown = realloc(s->events, (s->n_events + 1) * sizeof *grown);
    if (!grown) {
        free(ev.client);
        return fail(p, "out of memory");
    }
    s->events = grown;
    s->events[s->n_events++] = ev;
    return 0;
}

static int finish(parser_t *p)
{
    sim_scenario_t *s = p->s;
    p->line = 0;
    if (!s->names) {
        s->names = calloc((size_t) s->n_clients, sizeof *s->names);
        if (!s->names)
            return fail(p, "out of memory");
        int width = s->n_clients >= 100 ? 3 : 2;
        for (int i = 0; i < s->n_clients; i++) {
            char buf[16];
            snprintf(buf, sizeof buf, "c%0*d", width, i + 1);
            if (!(s->names[i] = strdup(buf)))
                return fail(p, "out of memory");
        }
    }
    if (!s->name) {
        const char *base = strrchr(s->path, '/');
        base = base ? base + 1 : s->path;
        s->name = strndup(base, strcspn(base, "."));
        if (!s->name)
            return fail(p, "out of memory");
    }
    if (!s->description && !(s->description = strdup("")))
        return fail(p, "out of memory");
    if (!s->broker_args && !(s->broker_args = strdup("")))
        return fail(p, "out of memory");
    int have_store = (p->seen & (1u << KEY_STORE)) != 0;
    int have_cluster = (p->seen & (1u << KEY_REDIS_CLUSTER)) != 0;
    if (have_cluster && !have_store)
        s->store = SIM_STORE_REDIS;
    if (have_cluster && s->store != SIM_STORE_REDIS)
        return fail(p, "redis_cluster is set but store = sqlite");
    if (s->store == SIM_STORE_REDIS && !have_cluster) {
        s->redis_primaries = 3;
        s->redis_replicas = 1;
    }
    if (s->n_brokers > 1 && s->store != SIM_STORE_REDIS)
        return fail(p, "brokers = %d needs store = redis (an SQLite store belongs to one broker)",
                    s->n_brokers);
    if (s->recipients == SIM_TO_OTHER_BROKER) {
        if (s->n_brokers < 2)
            return fail(p, "recipients = other-broker needs brokers = 2 or more");
        /* The fewest clients homed on other brokers than a sender's. */
        int fewest = s->n_clients;
        for (int b = 0; b < s->n_brokers; b++) {
            int home = 0;
            for (int i = 0; i < s->n_clients; i++)
                home += sim_home(s, i) == b;
            if (s->n_clients - home < fewest)
                fewest = s->n_clients - home;
        }
        if (fewest < 1)
            return fail(p, "recipients = other-broker: %d clients on %d brokers leave a broker "
                           "with no one elsewhere", s->n_clients, s->n_brokers);
        if (s->w_multicast && s->multicast.lo > fewest)
            return fail(p, "multicast: %lld recipients but only %d clients on other brokers",
                        (long long) s->multicast.lo, fewest);
    }
    if (s->multicast.lo > s->n_clients - 1 && s->w_multicast)
        return fail(p, "multicast: %lld recipients but only %d other clients",
                    (long long) s->multicast.lo, s->n_clients - 1);
    for (size_t i = 0; i < s->n_events; i++) {
        sim_event_spec_t *e = &s->events[i];
        p->line = e->line;
        if (e->type == SIM_EV_KILL || e->type == SIM_EV_RESTART || e->type == SIM_EV_PAUSE ||
            e->type == SIM_EV_STOP || e->type == SIM_EV_CONT) {
            if (e->broker >= s->n_brokers)
                return fail(p, "there is no broker %d (brokers = %d)", e->broker + 1,
                            s->n_brokers);
            continue;
        }
        if (e->type == SIM_EV_KILL_PRIMARY || e->type == SIM_EV_STOP_PRIMARY ||
            e->type == SIM_EV_RESHARD || e->type == SIM_EV_KILL_PUBSUB) {
            if (s->store != SIM_STORE_REDIS)
                return fail(p, "Redis faults need store = redis (and a redis_cluster)");
            if (e->primary > s->redis_primaries)
                return fail(p, "there is no primary %d (redis_cluster has %d)", e->primary,
                            s->redis_primaries);
            continue;
        }
        if (e->client && sim_scenario_client(s, e->client) < 0)
            return fail(p, "offline: no client called '%s'", e->client);
        if (!e->client && e->n_random > s->n_clients)
            return fail(p, "offline random %d: there are only %d clients", e->n_random,
                        s->n_clients);
    }
    return 0;
}

sim_scenario_t *sim_scenario_load(const char *path, char *err, size_t err_size)
{
    sim_scenario_t *s = calloc(1, sizeof *s);
    parser_t p = {.s = s, .path = path, .err = err, .err_size = err_size};
    if (!s) {
        cw_set_err(err, err_size, "%s: out of memory", path);
        return NULL;
    }
    s->path = strdup(path);
    s->n_clients = 3;
    s->messages = 30;
    s->w_unicast = 1;
    s->multicast = (sim_range_t) {2, 3};
    s->size = (sim_range_t) {SIM_MIN_TEXT, 64};
    s->think_us = (sim_range_t) {100000, 300000};
    s->seed = 1;
    s->heartbeat_ms = 500;
    s->liveness = 3;
    s->send_timeout_us = 15000000;
    s->drain_timeout_us = 20000000;
    s->quiet_us = 500000;
    s->n_brokers = 1;
    s->node_timeout_ms = 2000;
    FILE *f = fopen(path, "r");
    if (!s->path || !f) {
        if (!f)
            report(&p, "cannot open: %s", strerror(errno));
        else
            report(&p, "out of memory");
        if (f)
            fclose(f);
        sim_scenario_destroy(&s);
        return NULL;
    }
    char buf[SIM_MAX_LINE + 2];
    int rc = 0;
    while (rc == 0 && fgets(buf, sizeof buf, f)) {
        p.line++;
        size_t len = strlen(buf);
        if (len == sizeof buf - 1 && buf[len - 1] != '\n') {
            rc = fail(&p, "line longer than %d bytes", SIM_MAX_LINE);
            break;
        }
        char *hash = strchr(buf, '#');
        if (hash)
            *hash = '\0';
        char *line = trim(buf);
        if (!*line)
            continue;
        if (strncmp(line, "at", 2) == 0 && isspace((unsigned char) line[2])) {
            rc = parse_at(&p, line + 3);
            continue;
        }
        char *eq = strchr(line, '=');
        if (!eq) {
            rc = fail(&p, "expected 'key = value' or 'at TIME ACTION', got '%s'", line);
            break;
        }
        *eq = '\0';
        rc = parse_setting(&p, trim(line), trim(eq + 1));
    }
    if (rc == 0 && ferror(f))
        rc = fail(&p, "read error: %s", strerror(errno));
    fclose(f);
    if (rc == 0)
        rc = finish(&p);
    if (rc != 0) {
        sim_scenario_destroy(&s);
        return NULL;
    }
    return s;
}

void sim_scenario_destroy(sim_scenario_t **p)
{
    if (!p || !*p)
        return;
    sim_scenario_t *s = *p;
    free(s->path);
    free(s->name);
    free(s->description);
    free(s->broker_args);
    free_names(s->names, s->n_clients);
    for (size_t i = 0; i < s->n_events; i++)
        free(s->events[i].client);
    free(s->events);
    free(s);
    *p = NULL;
}

int sim_scenario_client(const sim_scenario_t *s, const char *name)
{
    for (int i = 0; i < s->n_clients; i++)
        if (strcmp(s->names[i], name) == 0)
            return i;
    return -1;
}

int sim_home(const sim_scenario_t *s, int ci)
{
    return s->n_brokers > 0 ? ci % s->n_brokers : 0;
}
