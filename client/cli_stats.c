/*  cli_stats: `causeway stats` and its views (main thread).
 *
 *    causeway stats                   every figure once (no login)
 *    causeway stats --watch           a line of rates per interval
 *    causeway stats sessions|queues|recent --name OPERATOR
 *                                     who is connected from where, queue
 *                                     depths, recently forwarded messages
 *
 *  The views are the broker's operator requests (PROTOCOL.md §12.2): the
 *  CLI logs in as --name, which must be in the broker's --operators.
 *  Rates are differences of two Stats replies over the difference of the
 *  broker's uptime, so they do not depend on the CLI's own timing.
 *  --count N bounds --watch (scripts); without it, --watch runs until
 *  SIGINT/SIGTERM.
 */
#include "cli.h"
#include "cw_util.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const kind_name[3] = {"unicast", "multicast", "broadcast"};
static const char *const mode_name[2] = {"live", "durable"};

/* Received and delivered totals over modes and kinds. */
static void traffic_totals(const cw_stats_t *st, uint64_t *rx, uint64_t *dl, uint64_t *rx_b,
                           uint64_t *dl_b)
{
    *rx = *dl = *rx_b = *dl_b = 0;
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < 3; k++) {
            *rx += st->traffic[m][k].received;
            *dl += st->traffic[m][k].delivered;
            *rx_b += st->traffic[m][k].received_bytes;
            *dl_b += st->traffic[m][k].delivered_bytes;
        }
}

static uint64_t sum_counts(const cw_status_count_t *c, size_t n, cw_status_t only)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        if (only == (cw_status_t) -1 || c[i].status == only)
            v += c[i].count;
    return v;
}

/* The q-quantile of the commit latency histogram, as the upper bound of
 * the bucket holding it (µs); 0 if there are no commits. UINT64_MAX above
 * the last bound. */
uint64_t cli_commit_quantile(const cw_stats_t *st, double q)
{
    if (!st->commit_count || !st->n_commit_bounds)
        return 0;
    double exact = (double) st->commit_count * q;
    uint64_t want = (uint64_t) exact;
    if ((double) want < exact)
        want++; /* the rank, rounded up */
    if (want < 1)
        want = 1;
    for (size_t i = 0; i < st->n_commit_bounds; i++)
        if (st->commit_counts[i] >= want)
            return st->commit_bounds_us[i];
    return UINT64_MAX;
}

static void add_counts_json(cli_str_t *s, const char *key, const cw_status_count_t *c, size_t n)
{
    cli_str_addf(s, ",\"%s\":{", key);
    for (size_t i = 0; i < n; i++)
        cli_str_addf(s, "%s\"%s\":%llu", i ? "," : "", cw_status_name(c[i].status),
                     (unsigned long long) c[i].count);
    cli_str_add(s, "}");
}

void cli_stats_extras(cli_str_t *sp, FILE *f, const cli_opts_t *o, const cw_reply_t *r)
{
    const cw_stats_t *st = &r->stats;
    cli_str_t s = {0};
    if (o->json) {
        cli_str_t *j = sp;
#define s (*j)
        cli_str_add(&s, ",\"version\":");
        cli_str_json(&s, st->version);
        cli_str_addf(&s,
                     ",\"started_us\":%llu,\"logins\":%llu,\"max_sessions\":%u,"
                     "\"bytes_in\":%llu,\"bytes_out\":%llu,\"redeliveries\":%llu,"
                     "\"held_messages\":%u,\"store_transactions\":%llu,\"store_pending\":%u,"
                     "\"replies_dropped\":%llu,\"memory_rss_bytes\":%llu,\"traffic\":{",
                     (unsigned long long) st->started_us, (unsigned long long) st->logins,
                     st->max_sessions, (unsigned long long) st->bytes_in,
                     (unsigned long long) st->bytes_out, (unsigned long long) st->redeliveries,
                     st->held_messages, (unsigned long long) st->store_transactions,
                     st->store_pending, (unsigned long long) st->replies_dropped,
                     (unsigned long long) st->memory_rss_bytes);
        for (int m = 0; m < 2; m++) {
            cli_str_addf(&s, "%s\"%s\":{", m ? "," : "", mode_name[m]);
            for (int k = 0; k < 3; k++)
                cli_str_addf(&s,
                             "%s\"%s\":{\"received\":%llu,\"received_bytes\":%llu,"
                             "\"delivered\":%llu,\"delivered_bytes\":%llu}",
                             k ? "," : "", kind_name[k],
                             (unsigned long long) st->traffic[m][k].received,
                             (unsigned long long) st->traffic[m][k].received_bytes,
                             (unsigned long long) st->traffic[m][k].delivered,
                             (unsigned long long) st->traffic[m][k].delivered_bytes);
            cli_str_add(&s, "}");
        }
        cli_str_add(&s, "}");
        add_counts_json(&s, "refusals", r->refusals, r->n_refusals);
        add_counts_json(&s, "recipient_fates", r->fates, r->n_fates);
        cli_str_addf(&s, ",\"commit_latency\":{\"count\":%llu,\"sum_us\":%llu,\"buckets\":[",
                     (unsigned long long) st->commit_count,
                     (unsigned long long) st->commit_sum_us);
        for (size_t i = 0; i < st->n_commit_bounds; i++)
            cli_str_addf(&s, "%s[%llu,%llu]", i ? "," : "",
                         (unsigned long long) st->commit_bounds_us[i],
                         (unsigned long long) st->commit_counts[i]);
        cli_str_add(&s, "]},\"deepest_queues\":[");
        for (size_t i = 0; i < r->n_queues; i++) {
            cli_str_add(&s, i ? ",{\"name\":" : "{\"name\":");
            cli_str_json(&s, r->queues[i].name);
            cli_str_addf(&s, ",\"depth\":%llu}", (unsigned long long) r->queues[i].depth);
        }
        cli_str_add(&s, "]");
#undef s
        return;
    }
    char when[32];
    cli_fmt_datetime(st->started_us, when, sizeof when);
    cli_str_addf(&s, "%-17s %s", "version", st->version[0] ? st->version : "?");
    cli_str_emit(&s, f);
    cli_str_addf(&s, "%-17s %s", "started", when);
    cli_str_emit(&s, f);
    struct {
        const char *key;
        unsigned long long v;
    } rows[] = {
        {"logins", st->logins},
        {"max_sessions", st->max_sessions},
        {"bytes_in", st->bytes_in},
        {"bytes_out", st->bytes_out},
        {"redeliveries", st->redeliveries},
        {"held_messages", st->held_messages},
        {"store_txns", st->store_transactions},
        {"store_pending", st->store_pending},
        {"replies_dropped", st->replies_dropped},
        {"memory_rss_bytes", st->memory_rss_bytes},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        cli_str_addf(&s, "%-17s %llu", rows[i].key, rows[i].v);
        cli_str_emit(&s, f);
    }
    cli_str_addf(&s, "%-17s %10s %12s %10s %12s", "traffic", "received", "bytes", "delivered",
                 "bytes");
    cli_str_emit(&s, f);
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < 3; k++) {
            cli_str_addf(&s, "  %-7s %-9s %8llu %12llu %10llu %12llu", mode_name[m], kind_name[k],
                         (unsigned long long) st->traffic[m][k].received,
                         (unsigned long long) st->traffic[m][k].received_bytes,
                         (unsigned long long) st->traffic[m][k].delivered,
                         (unsigned long long) st->traffic[m][k].delivered_bytes);
            cli_str_emit(&s, f);
        }
    const cw_status_count_t *lists[2] = {r->refusals, r->fates};
    size_t ns[2] = {r->n_refusals, r->n_fates};
    for (int l = 0; l < 2; l++) {
        cli_str_addf(&s, "%-17s", l ? "recipient fates" : "refusals");
        for (size_t i = 0; i < ns[l]; i++)
            cli_str_addf(&s, " %s=%llu", cw_status_name(lists[l][i].status),
                         (unsigned long long) lists[l][i].count);
        if (!ns[l])
            cli_str_add(&s, " none");
        cli_str_emit(&s, f);
    }
    if (st->commit_count) {
        uint64_t p50 = cli_commit_quantile(st, 0.5), p99 = cli_commit_quantile(st, 0.99);
        cli_str_addf(&s, "%-17s %llu commits, mean %.0f us, p50 <= %s%llu us, p99 <= %s%llu us",
                     "commit latency", (unsigned long long) st->commit_count,
                     (double) st->commit_sum_us / (double) st->commit_count,
                     p50 == UINT64_MAX ? ">" : "",
                     (unsigned long long) (p50 == UINT64_MAX
                                               ? st->commit_bounds_us[st->n_commit_bounds - 1]
                                               : p50),
                     p99 == UINT64_MAX ? ">" : "",
                     (unsigned long long) (p99 == UINT64_MAX
                                               ? st->commit_bounds_us[st->n_commit_bounds - 1]
                                               : p99));
        cli_str_emit(&s, f);
    }
    for (size_t i = 0; i < r->n_queues; i++) {
        cli_str_addf(&s, "%-17s %s %llu", i ? "" : "deepest queues", r->queues[i].name,
                     (unsigned long long) r->queues[i].depth);
        cli_str_emit(&s, f);
    }
    cli_str_free(&s);
}

/* Waits ms milliseconds or until a signal; false if stopping. */
static int nap(long ms)
{
    struct pollfd p = {cli_signal_fd, POLLIN, 0};
    int64_t end = cw_mono_ms() + ms;
    while (!cli_stopping) {
        int64_t left = end - cw_mono_ms();
        if (left <= 0)
            return 1;
        poll(&p, 1, (int) left);
    }
    return 0;
}

/* One --watch line from two replies `dt_ms` apart. */
static void watch_line(FILE *f, const cli_opts_t *o, const cw_reply_t *prev, const cw_reply_t *cur)
{
    const cw_stats_t *a = &prev->stats, *b = &cur->stats;
    double dt = (double) (b->uptime_ms - a->uptime_ms) / 1000.0;
    if (dt <= 0)
        dt = 1e-3;
    uint64_t rx0, dl0, rxb0, dlb0, rx1, dl1, rxb1, dlb1;
    traffic_totals(a, &rx0, &dl0, &rxb0, &dlb0);
    traffic_totals(b, &rx1, &dl1, &rxb1, &dlb1);
    uint64_t ref0 = sum_counts(prev->refusals, prev->n_refusals, (cw_status_t) -1);
    uint64_t ref1 = sum_counts(cur->refusals, cur->n_refusals, (cw_status_t) -1);
    uint64_t fl0 = sum_counts(prev->refusals, prev->n_refusals, CW_FLOODED) +
                   sum_counts(prev->fates, prev->n_fates, CW_FLOODED);
    uint64_t fl1 = sum_counts(cur->refusals, cur->n_refusals, CW_FLOODED) +
                   sum_counts(cur->fates, cur->n_fates, CW_FLOODED);
#define RATE(x1, x0) ((double) ((x1) >= (x0) ? (x1) - (x0) : 0) / dt)
    double in_s = RATE(rx1, rx0), out_s = RATE(dl1, dl0), inb_s = RATE(rxb1, rxb0),
           outb_s = RATE(dlb1, dlb0), ref_s = RATE(ref1, ref0), fl_s = RATE(fl1, fl0),
           fs_s = RATE(b->fsyncs, a->fsyncs), fr_s = RATE(b->frames_in, a->frames_in);
#undef RATE
    cli_str_t s = {0};
    if (o->json) {
        cli_str_addf(&s,
                     "{\"event\":\"watch\",\"uptime_ms\":%llu,\"interval_ms\":%llu,"
                     "\"sessions\":%u,\"known_users\":%u,\"stored_messages\":%llu,"
                     "\"held_messages\":%u,\"rates\":{\"frames_in\":%.1f,\"received\":%.1f,"
                     "\"received_bytes\":%.1f,\"delivered\":%.1f,\"delivered_bytes\":%.1f,"
                     "\"refused\":%.1f,\"flooded\":%.1f,\"fsyncs\":%.1f},"
                     "\"totals\":{\"received\":%llu,\"delivered\":%llu,\"refused\":%llu}}",
                     (unsigned long long) b->uptime_ms,
                     (unsigned long long) (b->uptime_ms - a->uptime_ms), b->sessions,
                     b->known_users, (unsigned long long) b->stored_messages, b->held_messages,
                     fr_s, in_s, inb_s, out_s, outb_s, ref_s, fl_s, fs_s,
                     (unsigned long long) rx1, (unsigned long long) dl1,
                     (unsigned long long) ref1);
    } else {
        char when[16];
        cli_fmt_time(cw_now_us(), when, sizeof when);
        cli_str_addf(&s, "%-8s %8u %9.1f %9.1f %10.0f %9.1f %9.1f %8.1f %9llu %6u", when,
                     b->sessions, in_s, out_s, inb_s + outb_s, ref_s, fl_s, fs_s,
                     (unsigned long long) b->stored_messages, b->held_messages);
    }
    cli_str_emit(&s, f);
    cli_str_free(&s);
}

static int watch(const cli_opts_t *o, cw_client_t *c)
{
    long interval = o->interval_ms ? o->interval_ms : 1000;
    cw_reply_t *prev = NULL;
    cw_status_t st = cw_client_stats(c, o->timeout_ms, &prev);
    if (st != CW_OK) {
        int code = cli_fail(o, "stats", st, prev);
        cw_reply_destroy(&prev);
        return code;
    }
    if (!o->json) {
        printf("%-8s %8s %9s %9s %10s %9s %9s %8s %9s %6s\n", "time", "sessions", "in/s", "out/s",
               "bytes/s", "refused/s", "flooded/s", "fsync/s", "queued", "held");
        fflush(stdout);
    }
    int code = CLI_EXIT_OK;
    for (long n = 0; !o->count || n < o->count; n++) {
        if (!nap(interval))
            break;
        cw_reply_t *cur = NULL;
        st = cw_client_stats(c, o->timeout_ms, &cur);
        if (st != CW_OK) {
            code = cli_fail(o, "stats", st, cur);
            cw_reply_destroy(&cur);
            break;
        }
        watch_line(stdout, o, prev, cur);
        cw_reply_destroy(&prev);
        prev = cur;
    }
    cw_reply_destroy(&prev);
    return code;
}

static void print_sessions(FILE *f, const cli_opts_t *o, const cw_reply_t *r)
{
    cli_str_t s = {0};
    if (!o->json) {
        cli_str_addf(&s, "%-20s %-22s %-19s %8s %7s %5s %-5s %s", "NAME", "PEER", "SINCE",
                     "IDLE_MS", "QUEUED", "HELD", "FLAGS", "AGENT");
        cli_str_emit(&s, f);
    }
    for (size_t i = 0; i < r->n_sessions; i++) {
        const cw_session_info_t *x = &r->sessions[i];
        if (o->json) {
            cli_str_add(&s, "{\"event\":\"session\",\"name\":");
            cli_str_json(&s, x->name);
            cli_str_add(&s, ",\"peer\":");
            cli_str_json(&s, x->peer);
            cli_str_addf(&s,
                         ",\"since_us\":%llu,\"idle_ms\":%llu,\"queued\":%llu,\"held\":%u,"
                         "\"pull\":%s,\"quiet\":%s,\"agent\":",
                         (unsigned long long) x->since_us, (unsigned long long) x->idle_ms,
                         (unsigned long long) x->queued, x->held, x->pull ? "true" : "false",
                         x->quiet ? "true" : "false");
            cli_str_json(&s, x->agent);
            cli_str_add(&s, ",\"key\":");
            cli_str_json(&s, x->key);
            cli_str_add(&s, "}");
        } else {
            char when[32];
            cli_fmt_datetime(x->since_us, when, sizeof when);
            cli_str_addf(&s, "%-20s %-22s %-19s %8llu %7llu %5u %-5s %s", x->name,
                         x->peer[0] ? x->peer : "-", when, (unsigned long long) x->idle_ms,
                         (unsigned long long) x->queued, x->held,
                         x->pull ? (x->quiet ? "pull,q" : "pull") : (x->quiet ? "quiet" : "-"),
                         x->agent);
        }
        cli_str_emit(&s, f);
    }
    if (o->json) {
        cli_str_addf(&s, "{\"event\":\"sessions\",\"count\":%zu,\"truncated\":%s}", r->n_sessions,
                     r->truncated ? "true" : "false");
        cli_str_emit(&s, f);
    }
    cli_str_free(&s);
}

static void print_queues(FILE *f, const cli_opts_t *o, const cw_reply_t *r)
{
    cli_str_t s = {0};
    uint64_t total = 0;
    if (!o->json) {
        cli_str_addf(&s, "%-20s %10s %10s %s", "NAME", "DEPTH", "LAST_SEQ", "ONLINE");
        cli_str_emit(&s, f);
    }
    for (size_t i = 0; i < r->n_queues; i++) {
        const cw_queue_info_t *q = &r->queues[i];
        total += q->depth;
        if (o->json) {
            cli_str_add(&s, "{\"event\":\"queue\",\"name\":");
            cli_str_json(&s, q->name);
            cli_str_addf(&s, ",\"depth\":%llu,\"last_seq\":%llu,\"online\":%s}",
                         (unsigned long long) q->depth, (unsigned long long) q->last_seq,
                         q->online ? "true" : "false");
        } else {
            cli_str_addf(&s, "%-20s %10llu %10llu %s", q->name, (unsigned long long) q->depth,
                         (unsigned long long) q->last_seq, q->online ? "yes" : "no");
        }
        cli_str_emit(&s, f);
    }
    if (o->json)
        cli_str_addf(&s, "{\"event\":\"queues\",\"count\":%zu,\"total\":%llu,\"truncated\":%s}",
                     r->n_queues, (unsigned long long) total, r->truncated ? "true" : "false");
    else
        cli_str_addf(&s, "%zu queues, %llu messages waiting", r->n_queues,
                     (unsigned long long) total);
    cli_str_emit(&s, f);
    cli_str_free(&s);
}

static void print_recent(FILE *f, const cli_opts_t *o, const cw_reply_t *r)
{
    cli_str_t s = {0};
    for (size_t i = 0; i < r->n_forwarded; i++) {
        const cw_forwarded_t *x = &r->forwarded[i];
        if (o->json) {
            cli_str_addf(&s, "{\"event\":\"forwarded\",\"timestamp_us\":%llu,\"from\":",
                         (unsigned long long) x->timestamp_us);
            cli_str_json(&s, x->from);
            cli_str_add(&s, ",\"to\":[");
            for (size_t k = 0; k < x->n_to; k++) {
                if (k)
                    cli_str_add(&s, ",");
                cli_str_json(&s, x->to[k]);
            }
            cli_str_addf(&s,
                         "],\"recipients\":%u,\"broadcast\":%s,\"durable\":%s,\"size\":%u,"
                         "\"delivered\":%u",
                         x->recipients, x->broadcast ? "true" : "false",
                         x->durable ? "true" : "false", x->size, x->delivered);
            if (o->text) {
                cli_str_add(&s, ",\"text\":");
                cli_str_json(&s, x->text);
            }
            cli_str_add(&s, "}");
        } else {
            char when[16];
            cli_fmt_time(x->timestamp_us, when, sizeof when);
            cli_str_addf(&s, "%s %-7s %s -> ", when, x->durable ? "durable" : "live", x->from);
            if (x->broadcast)
                cli_str_add(&s, "all");
            for (size_t k = 0; k < x->n_to; k++)
                cli_str_addf(&s, "%s%s", k ? "," : "", x->to[k]);
            if (x->recipients > x->n_to && !x->broadcast)
                cli_str_addf(&s, ",... (%u)", x->recipients);
            cli_str_addf(&s, "  %u bytes, %u/%u %s", x->size, x->delivered, x->recipients,
                         x->durable ? "accepted" : "delivered");
            if (o->text) {
                cli_str_add(&s, ": ");
                cli_str_add(&s, x->text);
            }
        }
        cli_str_emit(&s, f);
    }
    cli_str_free(&s);
}

int cli_stats(const cli_opts_t *o)
{
    const char *view = o->n_args ? o->args[0] : NULL;
    if (o->n_args > 1) {
        fprintf(stderr, "causeway stats: unexpected argument '%s' (see causeway stats --help)\n",
                o->args[1]);
        return CLI_EXIT_USAGE;
    }
    int kind = !view                          ? 0
               : strcmp(view, "sessions") == 0 ? 1
               : strcmp(view, "queues") == 0   ? 2
               : strcmp(view, "recent") == 0   ? 3
                                               : -1;
    if (kind < 0) {
        fprintf(stderr,
                "causeway stats: unknown view '%s': sessions, queues or recent "
                "(see causeway stats --help)\n",
                view);
        return CLI_EXIT_USAGE;
    }
    if (kind && !o->name) {
        fprintf(stderr, "causeway stats %s: need --name OPERATOR (a name in the broker's "
                        "--operators)\n", view);
        return CLI_EXIT_USAGE;
    }
    if (kind && o->watch) {
        fprintf(stderr, "causeway stats: --watch is for the counters, not the %s view\n", view);
        return CLI_EXIT_USAGE;
    }
    if (o->text && kind != 3) {
        fprintf(stderr, "causeway stats: --text is for the recent view\n");
        return CLI_EXIT_USAGE;
    }
    if ((o->count || o->interval_ms) && !o->watch) {
        fprintf(stderr, "causeway stats: --count and --interval go with --watch\n");
        return CLI_EXIT_USAGE;
    }
    cw_client_t *c = cli_connect(o, 1, 1, 0);
    if (!c)
        return CLI_EXIT_USAGE;
    int code = CLI_EXIT_OK;
    cw_reply_t *reply = NULL;
    if (o->name) { /* an operator sees the deepest queues in the counters too */
        cw_status_t st = cw_client_login(c, o->name, o->timeout_ms, &reply);
        if (st != CW_OK) {
            char what[128];
            snprintf(what, sizeof what, "login as '%s'", o->name);
            code = cli_fail(o, what, st, reply);
            cw_reply_destroy(&reply);
            cw_client_destroy(&c);
            return code;
        }
        cw_reply_destroy(&reply);
    }
    if (o->watch) {
        code = watch(o, c);
    } else {
        static const char *const what[] = {"stats", "sessions", "queues", "recent"};
        cw_status_t st = kind == 0   ? cw_client_stats(c, o->timeout_ms, &reply)
                         : kind == 1 ? cw_client_sessions(c, o->timeout_ms, &reply)
                         : kind == 2 ? cw_client_queues(c, o->timeout_ms, &reply)
                                     : cw_client_recent(c, 0, o->text, o->timeout_ms, &reply);
        if (st != CW_OK)
            code = cli_fail(o, what[kind], st, reply);
        else if (kind == 0)
            cli_print_stats(stdout, o, reply);
        else if (kind == 1)
            print_sessions(stdout, o, reply);
        else if (kind == 2)
            print_queues(stdout, o, reply);
        else
            print_recent(stdout, o, reply);
        cw_reply_destroy(&reply);
    }
    if (o->name)
        cw_client_logout(c, o->timeout_ms);
    cw_client_destroy(&c);
    return code;
}
