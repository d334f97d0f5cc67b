/*  cli_exchange.c: `causeway exchange`, the vector clock exchange of the
 *  original's phase 3 (SEED.md): a fixed group of processes, duplicates
 *  refused, started once all are online; every MIN..MAX ms each sends a
 *  clock-only message to another member picked at random; each shows the
 *  clock after every send and every delivery.
 *
 *  Phases, and the function or condition that moves between them:
 *
 *    WAITING    logged in; some member is not online yet (the login's user
 *               log, then presence events, say who is)
 *    RUNNING    all online (-> when the last one appears); a send is due
 *               at next_send; ends after --count sends or --for ms
 *    FINISHING  we sent "done" to every other member (finish()); we leave
 *               once each of them has sent "done" to us or went offline
 *
 *  Ending without a timer: the broker forwards one sender's messages to a
 *  receiver in the order it read them (docs/CAUSALITY.md), and a member
 *  sends "done" only after its last clock message, so when we have every
 *  member's "done" we have everything they sent us. A member that leaves
 *  (logout, expiry) after the start counts as done.
 *
 *  Picks and intervals come from splitmix64 seeded with --seed (or the
 *  time), so a run repeats given the same seed. Runs on the CLI's main
 *  thread; events are read between sends, and deliveries that arrive while
 *  a send waits for its reply are queued by libcauseway meanwhile.
 */
#include "cli.h"
#include "cw_util.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MIN_MS 2000
#define DEFAULT_MAX_MS 10000
/* The text of the message that says "I have sent everything". */
#define DONE_TEXT "done"

typedef enum { WAITING, RUNNING, FINISHING } phase_t;

typedef struct {
    const char *name;          /* borrowed from the options */
    int online;                /* a session holds the name now */
    int done;                  /* sent us "done", or left after the start */
} member_t;

typedef struct {
    const cli_opts_t *o;
    cw_client_t *c;
    const char *me;            /* our name */
    member_t *peers;           /* the other members, in --group order */
    size_t n_peers;
    phase_t phase;
    uint64_t rng;              /* splitmix64 state */
    long min_ms, max_ms;
    long sent;                 /* clock messages sent (attempts) */
    long received;             /* deliveries, "done" ones included */
    int64_t next_send;         /* RUNNING: monotonic ms of the next send */
    int64_t run_end;           /* RUNNING: --for ends then; INT64_MAX if not given */
} xchg_t;

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static long interval(xchg_t *x)
{
    uint64_t span = (uint64_t) (x->max_ms - x->min_ms) + 1;
    return x->min_ms + (long) (splitmix64(&x->rng) % span);
}

static member_t *find_peer(xchg_t *x, const char *name)
{
    for (size_t i = 0; name && i < x->n_peers; i++)
        if (strcmp(x->peers[i].name, name) == 0)
            return &x->peers[i];
    return NULL;
}

static int all_online(const xchg_t *x)
{
    for (size_t i = 0; i < x->n_peers; i++)
        if (!x->peers[i].online)
            return 0;
    return 1;
}

static int all_done(const xchg_t *x)
{
    for (size_t i = 0; i < x->n_peers; i++)
        if (!x->peers[i].done)
            return 0;
    return 1;
}

/* The user log (login, reconnection) says who is online. */
static void take_users(xchg_t *x, const cw_user_t *u, size_t n)
{
    for (size_t i = 0; i < x->n_peers; i++)
        x->peers[i].online = 0;
    for (size_t i = 0; i < n; i++) {
        member_t *m = find_peer(x, u[i].name);
        if (m)
            m->online = u[i].online;
    }
    if (x->phase != WAITING)
        for (size_t i = 0; i < x->n_peers; i++)
            if (!x->peers[i].online)
                x->peers[i].done = 1;
}

/* --- output ------------------------------------------------------------------ */

static void json_names(cli_str_t *s, const char *const *names, size_t n)
{
    cli_str_add(s, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            cli_str_add(s, ",");
        cli_str_json(s, names[i]);
    }
    cli_str_add(s, "]");
}

static void human_names(cli_str_t *s, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cli_str_addf(s, "%s%s", i ? ", " : "", names[i]);
}

static void print_header(xchg_t *x, unsigned long long seed)
{
    const cli_opts_t *o = x->o;
    cli_str_t s = {0};
    if (o->json) {
        cli_str_add(&s, "{\"event\":\"exchange\",\"name\":");
        cli_str_json(&s, x->me);
        cli_str_add(&s, ",\"group\":");
        json_names(&s, (const char *const *) o->group, o->n_group);
        cli_str_addf(&s,
                     ",\"seed\":%llu,\"min_ms\":%ld,\"max_ms\":%ld,\"count\":%ld,\"for_ms\":%ld}",
                     seed, x->min_ms, x->max_ms, o->count, o->for_ms);
    } else {
        cli_str_addf(&s, "exchange as %s with ", x->me);
        for (size_t i = 0; i < x->n_peers; i++)
            cli_str_addf(&s, "%s%s", i ? ", " : "", x->peers[i].name);
        cli_str_addf(&s, "; every %ld..%ld ms; seed %llu", x->min_ms, x->max_ms, seed);
        if (o->count)
            cli_str_addf(&s, "; %ld sends", o->count);
        if (o->for_ms)
            cli_str_addf(&s, "; for %ld ms", o->for_ms);
    }
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

static void print_waiting(xchg_t *x)
{
    const char *missing[x->n_peers ? x->n_peers : 1];
    size_t n = 0;
    for (size_t i = 0; i < x->n_peers; i++)
        if (!x->peers[i].online)
            missing[n++] = x->peers[i].name;
    cli_str_t s = {0};
    if (x->o->json) {
        cli_str_add(&s, "{\"event\":\"waiting\",\"for\":");
        json_names(&s, missing, n);
        cli_str_add(&s, "}");
    } else {
        cli_str_add(&s, "waiting for ");
        human_names(&s, missing, n);
    }
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

/* A line with our current clock at the end: JSON "...,\"clock\":{..}}",
 * human "..., clock {..}". */
static void add_clock(xchg_t *x, cli_str_t *s, const cw_clock_item_t *clock, size_t n)
{
    cw_clock_item_t *own = NULL;
    size_t n_own = 0;
    if (!clock) {
        n_own = cw_client_clock_items(x->c, &own);
        clock = own;
        n = n_own;
    }
    cli_str_add(s, x->o->json ? ",\"clock\":" : ", clock ");
    cli_str_clock(s, clock, n, x->o->json);
    if (x->o->json)
        cli_str_add(s, "}");
    cw_client_clock_free(&own, n_own);
}

static void print_start(xchg_t *x)
{
    cli_str_t s = {0};
    if (x->o->json) {
        cli_str_add(&s, "{\"event\":\"start\"");
    } else {
        cli_str_addf(&s, "all online: %s", x->me);
        for (size_t i = 0; i < x->n_peers; i++)
            cli_str_addf(&s, ", %s", x->peers[i].name);
    }
    add_clock(x, &s, NULL, 0);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

static void print_finished(xchg_t *x)
{
    cli_str_t s = {0};
    if (x->o->json)
        cli_str_addf(&s, "{\"event\":\"finished\",\"sent\":%ld,\"received\":%ld", x->sent,
                     x->received);
    else
        cli_str_addf(&s, "finished: %ld sent, %ld received", x->sent, x->received);
    add_clock(x, &s, NULL, 0);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

/* --- events -------------------------------------------------------------------- */

static void on_delivery(xchg_t *x, const cw_event_t *ev)
{
    const cw_message_t *m = &ev->msg;
    member_t *peer = find_peer(x, m->from);
    int done = peer && strcmp(m->text, DONE_TEXT) == 0;
    if (done)
        peer->done = 1;
    x->received++;
    cli_str_t s = {0};
    if (x->o->json) {
        cli_str_add(&s, "{\"event\":\"received\",\"from\":");
        cli_str_json(&s, m->from);
        cli_str_add(&s, ",\"message_id\":");
        cli_str_json(&s, m->message_id);
        cli_str_addf(&s, ",\"done\":%s,\"msg_clock\":", done ? "true" : "false");
        cli_str_clock(&s, m->clock, m->n_clock, 1);
    } else {
        cli_str_addf(&s, "from %s%s", m->from, done ? ": done" : "");
    }
    add_clock(x, &s, ev->local_clock, ev->n_local_clock);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

static void on_event(xchg_t *x, const cw_event_t *ev)
{
    switch (ev->type) {
    case CW_EVENT_DELIVER:
        on_delivery(x, ev);
        return;
    case CW_EVENT_PRESENCE: {
        member_t *m = find_peer(x, ev->presence.name);
        if (!m)
            return;   /* not one of us: none of our business */
        m->online = ev->presence.online;
        if (!m->online && x->phase != WAITING)
            m->done = 1;   /* left after the start: nothing more will come */
        break;
    }
    case CW_EVENT_RECONNECTED:
        take_users(x, ev->conn.users, ev->conn.n_users);
        break;
    default:
        break;
    }
    cli_print_event(stdout, x->o, ev, x->me);
}

/* Handles every queued event. */
static void drain(xchg_t *x)
{
    cw_event_t *ev;
    while (cw_client_next_event(x->c, 0, &ev) == CW_OK) {
        on_event(x, ev);
        cw_event_destroy(&ev);
    }
}

/* --- sending ---------------------------------------------------------------------- */

/* One clock-only message to a member picked at random. */
static void send_one(xchg_t *x)
{
    member_t *to = &x->peers[splitmix64(&x->rng) % x->n_peers];
    const char *names[1] = {to->name};
    cw_send_t msg = {.to = names, .n_to = 1, .text = ""};
    cw_reply_t *r = NULL;
    cw_status_t st = cw_client_send(x->c, &msg, x->o->timeout_ms, &r);
    x->sent++;
    if (st != CW_OK || !r || r->n_recipients != 1) {
        char what[96];
        snprintf(what, sizeof what, "send to %s", to->name);
        cli_fail(x->o, what, st, r);
        cw_reply_destroy(&r);
        return;
    }
    cw_status_t rst = r->recipients[0].status;
    cli_str_t s = {0};
    if (x->o->json) {
        cli_str_add(&s, "{\"event\":\"sent\",\"to\":");
        cli_str_json(&s, to->name);
        cli_str_addf(&s, ",\"status\":\"%s\",\"message_id\":", cw_status_name(rst));
        cli_str_json(&s, r->message_id);
    } else if (rst == CW_DELIVERED) {
        cli_str_addf(&s, "sent to %s", to->name);
    } else {
        cli_str_addf(&s, "sent to %s (%s)", to->name, cw_status_name(rst));
    }
    add_clock(x, &s, r->clock, r->n_clock);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
    cw_reply_destroy(&r);
}

/* RUNNING -> FINISHING: "done" to every other member. */
static void finish(xchg_t *x)
{
    x->phase = FINISHING;
    const char *names[x->n_peers];
    for (size_t i = 0; i < x->n_peers; i++)
        names[i] = x->peers[i].name;
    cw_send_t msg = {.to = names, .n_to = x->n_peers, .text = DONE_TEXT};
    cw_reply_t *r = NULL;
    cw_status_t st = cw_client_send(x->c, &msg, x->o->timeout_ms, &r);
    if (st != CW_OK || !r) {
        /* The others see us leave instead. */
        cli_fail(x->o, "send done", st, r);
        cw_reply_destroy(&r);
        return;
    }
    cli_str_t s = {0};
    if (x->o->json) {
        cli_str_add(&s, "{\"event\":\"done\",\"to\":");
        json_names(&s, names, x->n_peers);
        cli_str_add(&s, ",\"message_id\":");
        cli_str_json(&s, r->message_id);
    } else {
        cli_str_add(&s, "sent done to ");
        for (size_t i = 0; i < r->n_recipients; i++) {
            cli_str_addf(&s, "%s%s", i ? ", " : "", r->recipients[i].name);
            if (r->recipients[i].status != CW_DELIVERED)
                cli_str_addf(&s, " (%s)", cw_status_name(r->recipients[i].status));
        }
    }
    add_clock(x, &s, r->clock, r->n_clock);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
    cw_reply_destroy(&r);
}

/* --- the command ---------------------------------------------------------------- */

/* Checks the options and fills in x's members. 0, or an exit code. */
static int setup(xchg_t *x, const cli_opts_t *o)
{
    const char *why;
    if (!o->name || !o->n_group) {
        fprintf(stderr, "causeway exchange: need --name and --group "
                        "(see causeway exchange --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (o->n_args) {
        fprintf(stderr, "causeway exchange: unexpected argument '%s'\n", o->args[0]);
        return CLI_EXIT_USAGE;
    }
    x->min_ms = o->min_ms >= 0 ? o->min_ms : DEFAULT_MIN_MS;
    x->max_ms = o->max_ms >= 0 ? o->max_ms : DEFAULT_MAX_MS;
    if (o->min_ms >= 0 && o->max_ms < 0 && x->max_ms < x->min_ms)
        x->max_ms = x->min_ms;
    if (x->min_ms > x->max_ms) {
        fprintf(stderr, "causeway exchange: --min-ms %ld is above --max-ms %ld\n", x->min_ms,
                x->max_ms);
        return CLI_EXIT_USAGE;
    }
    int in_group = 0;
    x->peers = calloc(o->n_group, sizeof *x->peers);
    if (!x->peers) {
        fputs("causeway: out of memory\n", stderr);
        return CLI_EXIT_UNREACHABLE;
    }
    for (size_t i = 0; i < o->n_group; i++) {
        const char *name = o->group[i];
        if (cw_name_check(name, CW_NAME_MAX_HARD, &why) != CW_OK) {
            fprintf(stderr, "causeway exchange: --group: '%s' is not a user name: %s\n", name, why);
            return CLI_EXIT_USAGE;
        }
        if (strcmp(name, o->name) == 0) {
            in_group = 1;
            continue;
        }
        if (!find_peer(x, name))
            x->peers[x->n_peers++].name = name;
    }
    if (!in_group) {
        fprintf(stderr, "causeway exchange: --name %s is not in --group\n", o->name);
        return CLI_EXIT_USAGE;
    }
    if (!x->n_peers) {
        fprintf(stderr, "causeway exchange: --group has nobody but %s\n", o->name);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

int cli_exchange(const cli_opts_t *o)
{
    xchg_t x;
    memset(&x, 0, sizeof x);
    x.o = o;
    int code = setup(&x, o);
    if (code != 0) {
        free(x.peers);
        return code;
    }
    unsigned long long seed =
        o->has_seed ? o->seed : (unsigned long long) (cw_now_us() ^ (uint64_t) getpid() << 32);
    x.rng = seed;

    /* Not quiet: presence events tell who is online. */
    x.c = cli_connect(o, 0, 0, 1);
    if (!x.c) {
        free(x.peers);
        return CLI_EXIT_USAGE;
    }
    cw_reply_t *reply = NULL;
    cw_status_t st = cw_client_login(x.c, o->name, o->timeout_ms, &reply);
    if (st != CW_OK) {
        char what[128];
        snprintf(what, sizeof what, "login as '%s'", o->name);
        code = cli_fail(o, what, st, reply);
        if (st == CW_NAME_TAKEN)
            fprintf(stderr, "causeway exchange: %s is in the exchange already (duplicates are "
                            "refused)\n", o->name);
        cw_reply_destroy(&reply);
        cli_close(&x.c, o);
        free(x.peers);
        return code;
    }
    x.me = cw_client_name(x.c);
    cli_print_login(stdout, o, x.me, reply);
    print_header(&x, seed);
    take_users(&x, reply->users, reply->n_users);
    cw_reply_destroy(&reply);
    if (!all_online(&x))
        print_waiting(&x);

    while (!cli_stopping && !ferror(stdout)) {
        drain(&x);
        int64_t now = cw_mono_ms();
        if (x.phase == WAITING && all_online(&x)) {
            x.phase = RUNNING;
            print_start(&x);
            x.next_send = now + interval(&x);
            x.run_end = o->for_ms ? now + o->for_ms : INT64_MAX;
        }
        if (x.phase == RUNNING) {
            if (now >= x.run_end || (o->count && x.sent >= o->count)) {
                finish(&x);
                continue;
            }
            if (now >= x.next_send) {
                send_one(&x);
                x.next_send = cw_mono_ms() + interval(&x);
                continue;
            }
        }
        if (x.phase == FINISHING && all_done(&x))
            break;
        int64_t due = INT64_MAX;
        if (x.phase == RUNNING)
            due = x.next_send < x.run_end ? x.next_send : x.run_end;
        int timeout = -1;
        if (due != INT64_MAX) {
            int64_t left = due - cw_mono_ms();
            timeout = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int) left;
        }
        struct pollfd fds[2] = {{.fd = cw_client_fd(x.c), .events = POLLIN},
                                {.fd = cli_signal_fd, .events = POLLIN}};
        if (poll(fds, 2, timeout) < 0 && errno != EINTR)
            break;
    }
    drain(&x);
    print_finished(&x);
    cw_client_logout(x.c, o->timeout_ms);
    cli_close(&x.c, o);
    free(x.peers);
    return CLI_EXIT_OK;
}
