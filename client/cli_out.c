/*  cli_out.c: how the `causeway` CLI prints things.
 *
 *  Two forms for everything: human text, and JSON lines (--json): one JSON
 *  object per line, an "event" member first, strings escaped per RFC 8259,
 *  invalid UTF-8 replaced by U+FFFD so every line is valid JSON. Message
 *  texts in human output go through cw_render (common/cw_render.h): a text
 *  cannot pass for another message (continuation lines start with "    | "
 *  and long lines wrap onto such lines on a terminal), nor move the cursor
 *  or clear the screen (controls and escape sequences are shown). Every line
 *  is flushed as soon as it is written (scripts read line by line). Runs on
 *  the CLI's main thread; no state.
 */
#include "cli.h"
#include "cw_json.h"
#include "cw_render.h"
#include "cw_util.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- strings ------------------------------------------------------------ */

static void str_reserve(cli_str_t *s, size_t more)
{
    if (s->len + more + 1 <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < s->len + more + 1)
        cap *= 2;
    char *b = realloc(s->buf, cap);
    if (!b) {
        fputs("causeway: out of memory\n", stderr);
        exit(CLI_EXIT_UNREACHABLE);
    }
    s->buf = b;
    s->cap = cap;
}

static void str_addn(cli_str_t *s, const char *text, size_t n)
{
    str_reserve(s, n);
    memcpy(s->buf + s->len, text, n);
    s->len += n;
    s->buf[s->len] = '\0';
}

void cli_str_add(cli_str_t *s, const char *text) { str_addn(s, text, strlen(text)); }

void cli_str_addf(cli_str_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    str_reserve(s, (size_t) n);
    va_start(ap, fmt);
    vsnprintf(s->buf + s->len, (size_t) n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t) n;
}

void cli_str_json(cli_str_t *s, const char *text)
{
    size_t len = text ? strlen(text) : 0;
    size_t need = cw_json_escape(NULL, 0, text, len);
    char small[256];
    char *buf = need < sizeof small ? small : malloc(need + 1);
    if (!buf) {
        str_addn(s, "\"\"", 2); /* out of memory: an empty string keeps the line valid */
        return;
    }
    cw_json_escape(buf, need + 1, text, len);
    str_addn(s, buf, need);
    if (buf != small)
        free(buf);
}

void cli_str_free(cli_str_t *s)
{
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

void cli_str_emit(cli_str_t *s, FILE *f)
{
    str_addn(s, "\n", 1);
    fputs(s->buf, f);
    fflush(f);
    s->len = 0;
    s->buf[0] = '\0';
}

/* --- pieces --------------------------------------------------------------- */

void cli_fmt_time(uint64_t us, char *buf, size_t size)
{
    time_t t = (time_t) (us / 1000000u);
    struct tm tm;
    if (us == 0 || !localtime_r(&t, &tm) || strftime(buf, size, "%H:%M:%S", &tm) == 0)
        snprintf(buf, size, "--:--:--");
}

void cli_fmt_datetime(uint64_t us, char *buf, size_t size)
{
    time_t t = (time_t) (us / 1000000u);
    struct tm tm;
    if (us == 0 || !localtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, size, "---------- --:--:--");
}

static void json_clock(cli_str_t *s, const cw_clock_item_t *c, size_t n)
{
    cli_str_add(s, "{");
    for (size_t i = 0; i < n; i++) {
        if (i)
            cli_str_add(s, ",");
        cli_str_json(s, c[i].node);
        cli_str_addf(s, ":%llu", (unsigned long long) c[i].counter);
    }
    cli_str_add(s, "}");
}

static void human_clock(cli_str_t *s, const cw_clock_item_t *c, size_t n)
{
    cli_str_add(s, "{");
    for (size_t i = 0; i < n; i++)
        cli_str_addf(s, "%s%s:%llu", i ? ", " : "", c[i].node, (unsigned long long) c[i].counter);
    cli_str_add(s, "}");
}

void cli_str_clock(cli_str_t *s, const cw_clock_item_t *c, size_t n, int json)
{
    if (json)
        json_clock(s, c, n);
    else
        human_clock(s, c, n);
}

static void json_users(cli_str_t *s, const cw_user_t *u, size_t n)
{
    cli_str_add(s, "[");
    for (size_t i = 0; i < n; i++) {
        cli_str_add(s, i ? ",{\"name\":" : "{\"name\":");
        cli_str_json(s, u[i].name);
        cli_str_addf(s, ",\"online\":%s,\"last_seen_us\":%llu}", u[i].online ? "true" : "false",
                     (unsigned long long) u[i].last_seen_us);
    }
    cli_str_add(s, "]");
}

/* Continuation lines of a message text start with this (never with the
 * "[" of a message line): cw_render.h. */
#define CONT_PREFIX "    | "

/* Untrusted text, rendered so that it cannot pass for other output
 * (cw_render.h): continuation lines marked, controls shown, wrapped at
 * `width` columns (0: not a terminal) counting from the current line of s. */
static void human_text(cli_str_t *s, const char *text, int width)
{
    const char *line = s->buf ? strrchr(s->buf, '\n') : NULL;
    line = line ? line + 1 : (s->buf ? s->buf : "");
    char *r = cw_render_text(text, strlen(text), cw_render_width(line), width, CONT_PREFIX, 0);
    if (!r) {
        fputs("causeway: out of memory\n", stderr);
        exit(CLI_EXIT_UNREACHABLE);
    }
    cli_str_add(s, r);
    free(r);
}

/* --- messages ------------------------------------------------------------- */

/* The JSON members of a message, after the "event" member. */
static void json_message(cli_str_t *s, const cw_message_t *m)
{
    cli_str_add(s, ",\"from\":");
    cli_str_json(s, m->from);
    cli_str_add(s, ",\"to\":[");
    for (size_t i = 0; i < m->n_to; i++) {
        if (i)
            cli_str_add(s, ",");
        cli_str_json(s, m->to[i]);
    }
    cli_str_addf(s, "],\"broadcast\":%s,\"text\":", m->broadcast ? "true" : "false");
    cli_str_json(s, m->text);
    cli_str_addf(s, ",\"timestamp_us\":%llu,\"seq\":%llu,\"message_id\":",
                 (unsigned long long) m->timestamp_us, (unsigned long long) m->seq);
    cli_str_json(s, m->message_id);
    cli_str_addf(s, ",\"durable\":%s,\"redelivered\":%s,\"expired\":%s,\"damaged\":%s,"
                 "\"clock\":",
                 m->durable ? "true" : "false", m->redelivered ? "true" : "false",
                 m->expired ? "true" : "false", m->damaged ? "true" : "false");
    json_clock(s, m->clock, m->n_clock);
    if (m->holdback_us) /* held back for its causal predecessors (PROTOCOL.md §13.10) */
        cli_str_addf(s, ",\"holdback_us\":%llu,\"gap\":%s", (unsigned long long) m->holdback_us,
                     m->gap ? "true" : "false");
    if (m->receipt_requested) /* the sender asked for a read receipt (§13.12) */
        cli_str_add(s, ",\"receipt_requested\":true");
    if (m->late)              /* shown after something it caused (§13.14) */
        cli_str_add(s, ",\"late\":true");
    if (m->is_receipt) {      /* this entry is a read receipt for our message */
        cli_str_add(s, ",\"receipt\":{\"message_id\":");
        cli_str_json(s, m->receipt_for);
        cli_str_addf(s, ",\"read_us\":%llu}", (unsigned long long) m->read_us);
    }
}

/* "[12:00:01] bob -> you: hi", durable "[12:00:01 #3] ..."; with long_time
 * the date too (stored messages may be old). */
static void human_message(cli_str_t *s, const cli_opts_t *o, const cw_message_t *m, const char *me,
                          int long_time, int width)
{
    char when[32];
    if (m->damaged) {
        /* Nothing of it is known but its seq (no time, no sender). */
        cli_str_addf(s, "[#%llu] (a message was lost: damaged in the store)",
                     (unsigned long long) m->seq);
        return;
    }
    if (long_time)
        cli_fmt_datetime(m->timestamp_us, when, sizeof when);
    else
        cli_fmt_time(m->timestamp_us, when, sizeof when);
    cli_str_addf(s, "[%s", when);
    if (m->is_receipt) {
        char read[32];
        cli_fmt_time(m->read_us, read, sizeof read);
        cli_str_addf(s, " #%llu] %s read your message %s at %s", (unsigned long long) m->seq,
                     m->from, m->receipt_for, read);
        return;
    }
    if (m->seq)
        cli_str_addf(s, " #%llu", (unsigned long long) m->seq);
    cli_str_addf(s, "]%s %s -> ", m->late ? " (late)" : "", m->from);
    if (m->broadcast || m->n_to == 0)
        cli_str_add(s, "all");
    for (size_t i = 0; i < m->n_to; i++)
        cli_str_addf(s, "%s%s", i ? ", " : "", me && strcmp(m->to[i], me) == 0 ? "you" : m->to[i]);
    cli_str_add(s, ": ");
    if (m->expired)
        cli_str_add(s, "(expired before delivery)");
    else
        human_text(s, m->text, width);
    if (o->clocks) {
        cli_str_add(s, "   ");
        human_clock(s, m->clock, m->n_clock);
    }
}

void cli_print_message(FILE *f, const cli_opts_t *o, const cw_message_t *m, const char *me)
{
    cli_str_t s = {0};
    if (o->json) {
        cli_str_add(&s, "{\"event\":\"message\"");
        json_message(&s, m);
        cli_str_add(&s, "}");
    } else {
        human_message(&s, o, m, me, 1, cw_render_term_width(fileno(f)));
    }
    cli_str_emit(&s, f);
    cli_str_free(&s);
}

void cli_print_listing_end(FILE *f, const cli_opts_t *o, const char *what, size_t count,
                           const uint64_t *acked)
{
    cli_str_t s = {0};
    if (o->json) {
        cli_str_addf(&s, "{\"event\":\"%s\",\"count\":%zu", what, count);
        if (acked)
            cli_str_addf(&s, ",\"acked\":%llu", (unsigned long long) *acked);
        cli_str_add(&s, "}");
        cli_str_emit(&s, f);
    } else if (count == 0) {
        cli_str_add(&s, "no messages");
        cli_str_emit(&s, f);
    }
    cli_str_free(&s);
}

/* --- events and results ---------------------------------------------------- */

void cli_print_event(FILE *f, const cli_opts_t *o, const cw_event_t *ev, const char *me)
{
    cli_str_t s = {0};
    switch (ev->type) {
    case CW_EVENT_DELIVER: {
        const cw_message_t *m = &ev->msg;
        if (o->json) {
            cli_str_add(&s, "{\"event\":\"deliver\"");
            json_message(&s, m);
            cli_str_add(&s, ",\"local_clock\":");
            json_clock(&s, ev->local_clock, ev->n_local_clock);
            cli_str_add(&s, "}");
        } else {
            human_message(&s, o, m, me, 0, cw_render_term_width(fileno(f)));
        }
        break;
    }
    case CW_EVENT_PRESENCE: {
        const char *reason = cw_presence_reason_name(ev->presence.reason);
        if (o->json) {
            cli_str_add(&s, "{\"event\":\"presence\",\"name\":");
            cli_str_json(&s, ev->presence.name);
            cli_str_addf(&s, ",\"online\":%s,\"reason\":\"%s\",\"timestamp_us\":%llu}",
                         ev->presence.online ? "true" : "false", reason,
                         (unsigned long long) ev->presence.timestamp_us);
        } else {
            const char *what = ev->presence.online ? "joined"
                               : ev->presence.reason == CW_PRESENCE_EXPIRED ? "expired"
                               : ev->presence.reason == CW_PRESENCE_SHUTDOWN
                                   ? "left (broker shutting down)"
                                   : "left";
            cli_str_addf(&s, "* %s %s", ev->presence.name, what);
        }
        break;
    }
    case CW_EVENT_DISCONNECTED:
        if (o->json) {
            cli_str_add(&s, "{\"event\":\"disconnected\",\"detail\":");
            cli_str_json(&s, ev->conn.detail);
            if (ev->failover.endpoint) {
                cli_str_add(&s, ",\"endpoint\":");
                cli_str_json(&s, ev->failover.endpoint);
            }
            cli_str_add(&s, "}");
        } else if (ev->failover.endpoint) {
            cli_str_addf(&s, "* connection to %s lost (%s); failing over", ev->failover.endpoint,
                         ev->conn.detail);
        } else {
            cli_str_addf(&s, "* connection to the broker lost (%s); reconnecting", ev->conn.detail);
        }
        break;
    case CW_EVENT_RECEIPT:
        if (o->json) {
            cli_str_add(&s, "{\"event\":\"receipt\",\"message_id\":");
            cli_str_json(&s, ev->receipt.message_id);
            cli_str_add(&s, ",\"reader\":");
            cli_str_json(&s, ev->receipt.reader);
            cli_str_addf(&s, ",\"read_us\":%llu,\"seq\":%llu,\"message_seq\":%llu}",
                         (unsigned long long) ev->receipt.read_us,
                         (unsigned long long) ev->receipt.seq,
                         (unsigned long long) ev->receipt.message_seq);
        } else {
            char when[32];
            cli_fmt_time(ev->receipt.read_us, when, sizeof when);
            cli_str_addf(&s, "[%s #%llu] %s read your message %s", when,
                         (unsigned long long) ev->receipt.seq, ev->receipt.reader,
                         ev->receipt.message_id);
        }
        break;
    case CW_EVENT_RECONNECTED:
        if (o->json) {
            cli_str_add(&s, "{\"event\":\"reconnected\",\"name\":");
            cli_str_json(&s, me);
            cli_str_add(&s, ",\"users\":");
            json_users(&s, ev->conn.users, ev->conn.n_users);
            if (ev->failover.endpoint) {   /* several endpoints: where, and how */
                cli_str_add(&s, ",\"endpoint\":");
                cli_str_json(&s, ev->failover.endpoint);
                cli_str_addf(&s, ",\"resumed\":%s,\"switched\":%s",
                             ev->failover.resumed ? "true" : "false",
                             ev->failover.switched ? "true" : "false");
            }
            cli_str_add(&s, "}");
        } else if (ev->failover.endpoint) {
            cli_str_addf(&s, "* %s", ev->conn.detail);   /* "reconnected to tcp://b (session resumed)" */
        } else {
            cli_str_addf(&s, "* reconnected as %s", me ? me : "?");
        }
        break;
    default:
        return;
    }
    cli_str_emit(&s, f);
    cli_str_free(&s);
}

static void human_users(cli_str_t *s, const cw_user_t *u, size_t n)
{
    if (n == 0)
        cli_str_add(s, "(none)");
    for (size_t i = 0; i < n; i++)
        cli_str_addf(s, "%s%s%s", i ? ", " : "", u[i].name, u[i].online ? "*" : "");
}

void cli_print_login(FILE *f, const cli_opts_t *o, const char *me, const cw_reply_t *r)
{
    cli_str_t s = {0};
    if (o->json) {
        cli_str_add(&s, "{\"event\":\"login\",\"name\":");
        cli_str_json(&s, me);
        cli_str_add(&s, ",\"broker_version\":");
        cli_str_json(&s, r->has_login ? r->login.broker_version : "");
        cli_str_addf(&s, ",\"durable\":%s,\"users\":",
                     r->has_login && r->login.durable ? "true" : "false");
        json_users(&s, r->users, r->n_users);
        cli_str_add(&s, "}");
        cli_str_emit(&s, f);
    } else {
        cli_str_addf(&s, "connected as %s (broker %s)", me,
                     r->has_login ? r->login.broker_version : "?");
        cli_str_emit(&s, f);
        cli_str_add(&s, "users (* = online): ");
        human_users(&s, r->users, r->n_users);
        cli_str_emit(&s, f);
    }
    cli_str_free(&s);
}

static int delivered(cw_status_t st) { return st == CW_DELIVERED || st == CW_ACCEPTED; }

void cli_print_send(FILE *f, const cli_opts_t *o, const cw_reply_t *r, int durable, int compact)
{
    cli_str_t s = {0};
    if (o->json) {
        cli_str_addf(&s, "{\"event\":\"send\",\"status\":\"%s\",\"durable\":%s,"
                     "\"duplicate\":%s,\"message_id\":",
                     cw_status_name(r->status), durable ? "true" : "false",
                     r->duplicate ? "true" : "false");
        cli_str_json(&s, r->message_id);
        cli_str_add(&s, ",\"recipients\":[");
        for (size_t i = 0; i < r->n_recipients; i++) {
            cli_str_add(&s, i ? ",{\"name\":" : "{\"name\":");
            cli_str_json(&s, r->recipients[i].name);
            cli_str_addf(&s, ",\"status\":\"%s\",\"seq\":%llu}",
                         cw_status_name(r->recipients[i].status),
                         (unsigned long long) r->recipients[i].seq);
        }
        cli_str_add(&s, "],\"clock\":");
        json_clock(&s, r->clock, r->n_clock);
        cli_str_add(&s, "}");
        cli_str_emit(&s, f);
    } else if (compact) {
        cli_str_add(&s, "  ->");
        if (r->n_recipients == 0)
            cli_str_add(&s, " nobody (no other user known)");
        for (size_t i = 0; i < r->n_recipients; i++) {
            cw_status_t st = r->recipients[i].status;
            cli_str_addf(&s, "%s %s: %s", i ? "," : "", r->recipients[i].name,
                         st == CW_ACCEPTED ? "stored" : delivered(st) ? "ok" : cw_status_name(st));
            if (r->recipients[i].seq)
                cli_str_addf(&s, " #%llu", (unsigned long long) r->recipients[i].seq);
        }
        if (r->duplicate)
            cli_str_add(&s, " (duplicate: stored before)");
        if (o->clocks) {
            cli_str_add(&s, "   ");
            human_clock(&s, r->clock, r->n_clock);
        }
        cli_str_emit(&s, f);
    } else {
        for (size_t i = 0; i < r->n_recipients; i++) {
            cli_str_addf(&s, "%s: %s", r->recipients[i].name, cw_status_name(r->recipients[i].status));
            if (r->recipients[i].seq)
                cli_str_addf(&s, " (seq %llu)", (unsigned long long) r->recipients[i].seq);
            cli_str_emit(&s, f);
        }
        if (durable) {
            cli_str_addf(&s, "message id: %s", r->message_id ? r->message_id : "");
            cli_str_emit(&s, f);
        }
        if (r->duplicate) {
            cli_str_add(&s, "duplicate: the broker had this message id already; nothing stored again");
            cli_str_emit(&s, f);
        }
        if (o->clocks) {
            cli_str_add(&s, "clock: ");
            human_clock(&s, r->clock, r->n_clock);
            cli_str_emit(&s, f);
        }
    }
    cli_str_free(&s);
}

void cli_print_users(FILE *f, const cli_opts_t *o, const char *event, const cw_user_t *u, size_t n)
{
    cli_str_t s = {0};
    if (o->json) {
        cli_str_addf(&s, "{\"event\":\"%s\",\"users\":", event);
        json_users(&s, u, n);
        cli_str_add(&s, "}");
        cli_str_emit(&s, f);
    } else {
        size_t w = 4;
        for (size_t i = 0; i < n; i++)
            if (strlen(u[i].name) > w)
                w = strlen(u[i].name);
        for (size_t i = 0; i < n; i++) {
            char when[16];
            cli_fmt_time(u[i].last_seen_us, when, sizeof when);
            cli_str_addf(&s, "%-*s  %-7s  since %s", (int) w, u[i].name,
                         u[i].online ? "online" : "offline", when);
            cli_str_emit(&s, f);
        }
        if (n == 0) {
            cli_str_add(&s, "(no users)");
            cli_str_emit(&s, f);
        }
    }
    cli_str_free(&s);
}

void cli_print_stats(FILE *f, const cli_opts_t *o, const cw_reply_t *r)
{
    const cw_stats_t *st = &r->stats;
    struct {
        const char *key;
        unsigned long long v;
    } rows[] = {
        {"uptime_ms", st->uptime_ms},
        {"sessions", st->sessions},
        {"known_users", st->known_users},
        {"frames_in", st->frames_in},
        {"frames_out", st->frames_out},
        {"messages_routed", st->messages_routed},
        {"deliveries", st->deliveries},
        {"bad_frames", st->bad_frames},
        {"expired_sessions", st->expired_sessions},
        {"stored_messages", st->stored_messages},
        {"fsyncs", st->fsyncs},
        {"refused_requests", st->refused_requests},
        {"damaged_entries", st->damaged_entries},
    };
    size_t n = sizeof rows / sizeof rows[0];
    cli_str_t s = {0};
    if (o->json) {
        cli_str_add(&s, "{\"event\":\"stats\"");
        for (size_t i = 0; i < n; i++)
            cli_str_addf(&s, ",\"%s\":%llu", rows[i].key, rows[i].v);
        cli_stats_extras(&s, f, o, r);
        cli_str_add(&s, "}");
        cli_str_emit(&s, f);
    } else {
        for (size_t i = 0; i < n; i++) {
            cli_str_addf(&s, "%-17s %llu", rows[i].key, rows[i].v);
            cli_str_emit(&s, f);
        }
        cli_stats_extras(NULL, f, o, r);
    }
    cli_str_free(&s);
}

void cli_print_error(FILE *f, const char *what, cw_status_t st, const char *detail)
{
    cli_print_error_id(f, what, st, detail, NULL);
}

void cli_print_error_id(FILE *f, const char *what, cw_status_t st, const char *detail,
                        const char *message_id)
{
    cli_str_t s = {0};
    cli_str_add(&s, "{\"event\":\"error\",\"what\":");
    cli_str_json(&s, what);
    cli_str_addf(&s, ",\"status\":\"%s\",\"code\":%d,\"detail\":", cw_status_name(st), (int) st);
    cli_str_json(&s, detail && *detail ? detail : cw_strerror(st));
    if (message_id) {
        cli_str_add(&s, ",\"message_id\":");
        cli_str_json(&s, message_id);
    }
    cli_str_add(&s, "}");
    cli_str_emit(&s, f);
    cli_str_free(&s);
}
