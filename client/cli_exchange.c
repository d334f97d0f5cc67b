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
 *  time), so a run repeats given the same seed. The phases, the member
 *  table and the PRNG are xchg.c's (shared with the exchange view of
 *  `causeway tui`); this file does the I/O and the printing. Runs on the
 *  CLI's main thread; events are read between sends, and deliveries that
 *  arrive while a send waits for its reply are queued by libcauseway
 *  meanwhile.
 */
#include "cli.h"
#include "cw_util.h"
#include "xchg.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    const cli_opts_t *o;
    cw_client_t *c;
    const char *me;            /* our name */
    xchg_t *x;                 /* the exchange's state machine (xchg.c) */
} run_t;

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

static void print_header(run_t *r, unsigned long long seed)
{
    const cli_opts_t *o = r->o;
    cli_str_t s = {0};
    if (o->json) {
        cli_str_add(&s, "{\"event\":\"exchange\",\"name\":");
        cli_str_json(&s, r->me);
        cli_str_add(&s, ",\"group\":");
        json_names(&s, (const char *const *) o->group, o->n_group);
        cli_str_addf(&s,
                     ",\"seed\":%llu,\"min_ms\":%ld,\"max_ms\":%ld,\"count\":%ld,\"for_ms\":%ld}",
                     seed, xchg_min_ms(r->x), xchg_max_ms(r->x), o->count, o->for_ms);
    } else {
        cli_str_addf(&s, "exchange as %s with ", r->me);
        for (size_t i = 0; i < xchg_n_peers(r->x); i++)
            cli_str_addf(&s, "%s%s", i ? ", " : "", xchg_peer(r->x, i));
        cli_str_addf(&s, "; every %ld..%ld ms; seed %llu", xchg_min_ms(r->x), xchg_max_ms(r->x),
                     seed);
        if (o->count)
            cli_str_addf(&s, "; %ld sends", o->count);
        if (o->for_ms)
            cli_str_addf(&s, "; for %ld ms", o->for_ms);
    }
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

static void print_waiting(run_t *r)
{
    size_t np = xchg_n_peers(r->x);
    const char *missing[np ? np : 1];
    size_t n = 0;
    for (size_t i = 0; i < np; i++)
        if (!xchg_peer_online(r->x, i))
            missing[n++] = xchg_peer(r->x, i);
    cli_str_t s = {0};
    if (r->o->json) {
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
static void add_clock(run_t *r, cli_str_t *s, const cw_clock_item_t *clock, size_t n)
{
    cw_clock_item_t *own = NULL;
    size_t n_own = 0;
    if (!clock) {
        n_own = cw_client_clock_items(r->c, &own);
        clock = own;
        n = n_own;
    }
    cli_str_add(s, r->o->json ? ",\"clock\":" : ", clock ");
    cli_str_clock(s, clock, n, r->o->json);
    if (r->o->json)
        cli_str_add(s, "}");
    cw_client_clock_free(&own, n_own);
}

static void print_start(run_t *r)
{
    cli_str_t s = {0};
    if (r->o->json) {
        cli_str_add(&s, "{\"event\":\"start\"");
    } else {
        cli_str_addf(&s, "all online: %s", r->me);
        for (size_t i = 0; i < xchg_n_peers(r->x); i++)
            cli_str_addf(&s, ", %s", xchg_peer(r->x, i));
    }
    add_clock(r, &s, NULL, 0);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

static void print_finished(run_t *r)
{
    cli_str_t s = {0};
    if (r->o->json)
        cli_str_addf(&s, "{\"event\":\"finished\",\"sent\":%ld,\"received\":%ld",
                     xchg_sent(r->x), xchg_received(r->x));
    else
        cli_str_addf(&s, "finished: %ld sent, %ld received", xchg_sent(r->x),
                     xchg_received(r->x));
    add_clock(r, &s, NULL, 0);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

/* --- events -------------------------------------------------------------------- */

static void on_delivery(run_t *r, const cw_event_t *ev)
{
    const cw_message_t *m = &ev->msg;
    int done = xchg_delivery(r->x, m->from, m->text);
    cli_str_t s = {0};
    if (r->o->json) {
        cli_str_add(&s, "{\"event\":\"received\",\"from\":");
        cli_str_json(&s, m->from);
        cli_str_add(&s, ",\"message_id\":");
        cli_str_json(&s, m->message_id);
        cli_str_addf(&s, ",\"done\":%s,\"msg_clock\":", done ? "true" : "false");
        cli_str_clock(&s, m->clock, m->n_clock, 1);
    } else {
        cli_str_addf(&s, "from %s%s", m->from, done ? ": done" : "");
    }
    add_clock(r, &s, ev->local_clock, ev->n_local_clock);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
}

static void on_event(run_t *r, const cw_event_t *ev)
{
    switch (ev->type) {
    case CW_EVENT_DELIVER:
        on_delivery(r, ev);
        return;
    case CW_EVENT_PRESENCE:
        if (!xchg_presence(r->x, ev->presence.name, ev->presence.online))
            return;   /* not one of us: none of our business */
        break;
    case CW_EVENT_RECONNECTED:
        xchg_users(r->x, ev->conn.users, ev->conn.n_users);
        break;
    default:
        break;
    }
    cli_print_event(stdout, r->o, ev, r->me);
}

/* Handles every queued event. */
static void drain(run_t *r)
{
    cw_event_t *ev;
    while (cw_client_next_event(r->c, 0, &ev) == CW_OK) {
        on_event(r, ev);
        cw_event_destroy(&ev);
    }
}

/* --- sending ---------------------------------------------------------------------- */

/* One clock-only message to the member xchg_step picked. */
static void send_one(run_t *r, const char *to)
{
    const char *names[1] = {to};
    cw_send_t msg = {.to = names, .n_to = 1, .text = ""};
    cw_reply_t *rep = NULL;
    cw_status_t st = cw_client_send(r->c, &msg, r->o->timeout_ms, &rep);
    if (st != CW_OK || !rep || rep->n_recipients != 1) {
        char what[96];
        snprintf(what, sizeof what, "send to %s", to);
        cli_fail(r->o, what, st, rep);
        cw_reply_destroy(&rep);
        return;
    }
    cw_status_t rst = rep->recipients[0].status;
    cli_str_t s = {0};
    if (r->o->json) {
        cli_str_add(&s, "{\"event\":\"sent\",\"to\":");
        cli_str_json(&s, to);
        cli_str_addf(&s, ",\"status\":\"%s\",\"message_id\":", cw_status_name(rst));
        cli_str_json(&s, rep->message_id);
    } else if (rst == CW_DELIVERED) {
        cli_str_addf(&s, "sent to %s", to);
    } else {
        cli_str_addf(&s, "sent to %s (%s)", to, cw_status_name(rst));
    }
    add_clock(r, &s, rep->clock, rep->n_clock);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
    cw_reply_destroy(&rep);
}

/* XCHG_FINISH: "done" to every other member. */
static void finish(run_t *r)
{
    size_t np = xchg_n_peers(r->x);
    const char *names[np];
    for (size_t i = 0; i < np; i++)
        names[i] = xchg_peer(r->x, i);
    cw_send_t msg = {.to = names, .n_to = np, .text = XCHG_DONE_TEXT};
    cw_reply_t *rep = NULL;
    cw_status_t st = cw_client_send(r->c, &msg, r->o->timeout_ms, &rep);
    if (st != CW_OK || !rep) {
        /* The others see us leave instead. */
        cli_fail(r->o, "send done", st, rep);
        cw_reply_destroy(&rep);
        return;
    }
    cli_str_t s = {0};
    if (r->o->json) {
        cli_str_add(&s, "{\"event\":\"done\",\"to\":");
        json_names(&s, names, np);
        cli_str_add(&s, ",\"message_id\":");
        cli_str_json(&s, rep->message_id);
    } else {
        cli_str_add(&s, "sent done to ");
        for (size_t i = 0; i < rep->n_recipients; i++) {
            cli_str_addf(&s, "%s%s", i ? ", " : "", rep->recipients[i].name);
            if (rep->recipients[i].status != CW_DELIVERED)
                cli_str_addf(&s, " (%s)", cw_status_name(rep->recipients[i].status));
        }
    }
    add_clock(r, &s, rep->clock, rep->n_clock);
    cli_str_emit(&s, stdout);
    cli_str_free(&s);
    cw_reply_destroy(&rep);
}

/* --- the command ---------------------------------------------------------------- */

/* Checks the options and makes r->x. 0, or an exit code. */
static int setup(run_t *r, const cli_opts_t *o, unsigned long long seed)
{
    if (!o->name || !o->n_group) {
        fprintf(stderr, "causeway exchange: need --name and --group "
                        "(see causeway exchange --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (o->n_args) {
        fprintf(stderr, "causeway exchange: unexpected argument '%s'\n", o->args[0]);
        return CLI_EXIT_USAGE;
    }
    long min_ms = o->min_ms >= 0 ? o->min_ms : XCHG_DEFAULT_MIN_MS;
    long max_ms = o->max_ms >= 0 ? o->max_ms : XCHG_DEFAULT_MAX_MS;
    if (o->min_ms >= 0 && o->max_ms < 0 && max_ms < min_ms)
        max_ms = min_ms;
    char err[256];
    r->x = xchg_new(o->name, (const char *const *) o->group, o->n_group, min_ms, max_ms, seed,
                    o->count, o->for_ms, err, sizeof err);
    if (!r->x) {
        fprintf(stderr, "causeway exchange: %s\n", err);
        return strcmp(err, "out of memory") == 0 ? CLI_EXIT_UNREACHABLE : CLI_EXIT_USAGE;
    }
    return 0;
}

int cli_exchange(const cli_opts_t *o)
{
    run_t r;
    memset(&r, 0, sizeof r);
    r.o = o;
    unsigned long long seed =
        o->has_seed ? o->seed : (unsigned long long) (cw_now_us() ^ (uint64_t) getpid() << 32);
    int code = setup(&r, o, seed);
    if (code != 0)
        return code;

    /* Not quiet: presence events tell who is online. */
    r.c = cli_connect(o, 0, 0, 1);
    if (!r.c) {
        xchg_destroy(&r.x);
        return CLI_EXIT_USAGE;
    }
    cw_reply_t *reply = NULL;
    cw_status_t st = cw_client_login(r.c, o->name, o->timeout_ms, &reply);
    if (st != CW_OK) {
        char what[128];
        snprintf(what, sizeof what, "login as '%s'", o->name);
        code = cli_fail(o, what, st, reply);
        if (st == CW_NAME_TAKEN)
            fprintf(stderr, "causeway exchange: %s is in the exchange already (duplicates are "
                            "refused)\n", o->name);
        cw_reply_destroy(&reply);
        cli_close(&r.c, o);
        xchg_destroy(&r.x);
        return code;
    }
    r.me = cw_client_name(r.c);
    cli_print_login(stdout, o, r.me, reply);
    print_header(&r, seed);
    xchg_users(r.x, reply->users, reply->n_users);
    cw_reply_destroy(&reply);
    if (xchg_phase(r.x) == XCHG_WAITING) {
        size_t i;
        for (i = 0; i < xchg_n_peers(r.x) && xchg_peer_online(r.x, i); i++)
            ;
        if (i < xchg_n_peers(r.x))
            print_waiting(&r);
    }

    while (!cli_stopping && !ferror(stdout)) {
        drain(&r);
        const char *to = NULL;
        int timeout = -1;
        xchg_action_t act = xchg_step(r.x, cw_mono_ms(), &to, &timeout);
        if (act == XCHG_LEAVE)
            break;
        if (act == XCHG_START)
            print_start(&r);
        else if (act == XCHG_SEND)
            send_one(&r, to);
        else if (act == XCHG_FINISH)
            finish(&r);
        if (act != XCHG_NONE)
            continue;
        struct pollfd fds[2] = {{.fd = cw_client_fd(r.c), .events = POLLIN},
                                {.fd = cli_signal_fd, .events = POLLIN}};
        if (poll(fds, 2, timeout) < 0 && errno != EINTR)
            break;
    }
    drain(&r);
    print_finished(&r);
    cw_client_logout(r.c, o->timeout_ms);
    cli_close(&r.c, o);
    xchg_destroy(&r.x);
    return CLI_EXIT_OK;
}
