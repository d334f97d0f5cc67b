/*  cli_top: `causeway top`, the server window in the terminal (main
 *  thread; ncursesw draws, no escape sequence is written by hand).
 *
 *  Every --interval ms (default 1000) it asks the broker, over the
 *  ordinary protocol, for the figures of its monitoring interface: Stats
 *  (the same snapshot the metrics endpoint serves), Sessions and Recent
 *  (operator requests: --name must be in the broker's --operators) and
 *  the user log (Who). It draws them on one screen: a header with rates
 *  (differences of two Stats over the broker's uptime), refusals by
 *  status, store latency, then the user log with online marks, peers and
 *  login times beside the recently forwarded messages, and the deepest
 *  queues. The broker answers these between its batches like any request,
 *  so top never holds up routing.
 *
 *  Keys: q (or Q, Esc) quits, t toggles message texts (only when started
 *  with --text, and the broker must allow them: --monitor-text), space
 *  refreshes now. The screen follows resizes (KEY_RESIZE). --count N quits
 *  after N refreshes. Exit status: 0 after q/--count/SIGINT, 3 if the
 *  broker stops answering, 4 if it refuses the operator requests.
 */
#include "cli.h"
#include "cw_render.h"
#include "cw_util.h"

#define NCURSES_WIDECHAR 1
#include <curses.h>
#include <locale.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

typedef struct {
    const cli_opts_t *o;
    cw_client_t *c;
    cw_reply_t *stats, *prev;   /* the latest Stats and the one before */
    cw_reply_t *sessions;       /* latest Sessions */
    cw_reply_t *users;          /* latest Who */
    cw_reply_t *recent;         /* latest Recent */
    int show_text;              /* t toggles (with --text) */
    long refreshes;             /* done so far */
    char status[256];           /* last problem, shown at the bottom; "" none */
    int color;                  /* has_colors() */
} top_t;

enum { PAIR_HEAD = 1, PAIR_ON = 2, PAIR_WARN = 3 };

static void human_bytes(double v, char *buf, size_t size)
{
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

static void fmt_us(uint64_t us, char *buf, size_t size)
{
    if (us == UINT64_MAX)
        snprintf(buf, size, "slow");
    else if (us >= 1000000)
        snprintf(buf, size, "%.1fs", (double) us / 1e6);
    else if (us >= 1000)
        snprintf(buf, size, "%.1fms", (double) us / 1e3);
    else
        snprintf(buf, size, "%lluus", (unsigned long long) us);
}

/* Fetches everything once. 0, or the exit code of a fatal problem. */
static int poll_broker(top_t *t)
{
    const cli_opts_t *o = t->o;
    cw_reply_t *st = NULL, *ss = NULL, *who = NULL, *rc = NULL;
    cw_status_t s = cw_client_stats(t->c, o->timeout_ms, &st);
    if (s == CW_OK)
        s = cw_client_sessions(t->c, o->timeout_ms, &ss);
    if (s == CW_OK)
        s = cw_client_recent(t->c, 0, t->show_text, o->timeout_ms, &rc);
    if (s == CW_OK)
        s = cw_client_who(t->c, o->timeout_ms, &who);
    if (s != CW_OK) {
        const cw_reply_t *bad = rc ? rc : ss ? ss : st;
        snprintf(t->status, sizeof t->status, "%s: %s", cw_status_name(s),
                 bad && bad->detail && *bad->detail ? bad->detail : cw_strerror(s));
        cw_reply_destroy(&st);
        cw_reply_destroy(&ss);
        cw_reply_destroy(&who);
        cw_reply_destroy(&rc);
        if (s == CW_UNAUTHORIZED || s == CW_NOT_LOGGED_IN)
            return CLI_EXIT_REFUSED;
        return s == CW_RATE_LIMITED || s == CW_FLOODED ? 0 : CLI_EXIT_UNREACHABLE;
    }
    t->status[0] = '\0';
    cw_reply_destroy(&t->prev);
    t->prev = t->stats;
    t->stats = st;
    cw_reply_destroy(&t->sessions);
    t->sessions = ss;
    cw_reply_destroy(&t->users);
    t->users = who;
    cw_reply_destroy(&t->recent);
    t->recent = rc;
    t->refreshes++;
    return 0;
}

static uint64_t sum_status(const cw_status_count_t *c, size_t n, cw_status_t only)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++)
        if (only == (cw_status_t) -1 || c[i].status == only)
            v += c[i].count;
    return v;
}

/* Writes text (UTF-8) at (y, x), at most `w` characters, control
 * characters shown as '?'. ncursesw draws it; nothing is escaped here. */
static void put(int y, int x, int w, const char *text)
{
    if (y < 0 || y >= LINES || x >= COLS || w <= 0)
        return;
    if (x + w > COLS)
        w = COLS - x;
    wchar_t wbuf[1024];
    mbstate_t ps;
    memset(&ps, 0, sizeof ps);
    const char *src = text;
    size_t n = mbsrtowcs(wbuf, &src, sizeof wbuf / sizeof wbuf[0] - 1, &ps);
    if (n == (size_t) -1) { /* not valid in this locale: show the bytes, ASCII only */
        for (n = 0; text[n] && n < sizeof wbuf / sizeof wbuf[0] - 1; n++)
            wbuf[n] = (unsigned char) text[n] < 0x80 ? (wchar_t) text[n] : L'?';
    }
    wbuf[n] = L'\0';
    for (size_t i = 0; i < n; i++)
        if (wbuf[i] < 0x20 || wbuf[i] == 0x7f)
            wbuf[i] = L'?';
    mvaddnwstr(y, x, wbuf, w);
}

static void putf(int y, int x, int w, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void putf(int y, int x, int w, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    put(y, x, w, line);
}

static void title(top_t *t, int y, int x, int w, const char *text)
{
    if (t->color)
        attron(COLOR_PAIR(PAIR_HEAD) | A_BOLD);
    else
        attron(A_REVERSE);
    char line[512];
    snprintf(line, sizeof line, "%-*s", w < (int) sizeof line - 1 ? w : (int) sizeof line - 1,
             text);
    put(y, x, w, line);
    if (t->color)
        attroff(COLOR_PAIR(PAIR_HEAD) | A_BOLD);
    else
        attroff(A_REVERSE);
}

/* The session of a user, or NULL. */
static const cw_session_info_t *session_of(const top_t *t, const char *name)
{
    for (size_t i = 0; t->sessions && i < t->sessions->n_sessions; i++)
        if (strcmp(t->sessions->sessions[i].name, name) == 0)
            return &t->sessions->sessions[i];
    return NULL;
}

static void draw(top_t *t)
{
    erase();
    const cw_stats_t *st = t->stats ? &t->stats->stats : NULL;
    if (!st) {
        putf(0, 0, COLS, "causeway top: waiting for %s ...", t->o->endpoint);
        if (t->status[0])
            putf(LINES - 1, 0, COLS, "%s", t->status);
        refresh();
        return;
    }
    uint64_t rx = 0, dl = 0, rxb = 0, dlb = 0;
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < 3; k++) {
            rx += st->traffic[m][k].received;
            dl += st->traffic[m][k].delivered;
            rxb += st->traffic[m][k].received_bytes;
            dlb += st->traffic[m][k].delivered_bytes;
        }
    double in_s = 0, out_s = 0, bytes_s = 0, ref_s = 0, fl_s = 0, fs_s = 0;
    uint64_t refused = sum_status(t->stats->refusals, t->stats->n_refusals, (cw_status_t) -1);
    uint64_t flooded = sum_status(t->stats->refusals, t->stats->n_refusals, CW_FLOODED) +
                       sum_status(t->stats->fates, t->stats->n_fates, CW_FLOODED);
    if (t->prev) {
        const cw_stats_t *p = &t->prev->stats;
        double dt = (double) (st->uptime_ms - p->uptime_ms) / 1000.0;
        uint64_t prx = 0, pdl = 0, pb = 0;
        for (int m = 0; m < 2; m++)
            for (int k = 0; k < 3; k++) {
                prx += p->traffic[m][k].received;
                pdl += p->traffic[m][k].delivered;
                pb += p->traffic[m][k].received_bytes + p->traffic[m][k].delivered_bytes;
            }
        uint64_t pref = sum_status(t->prev->refusals, t->prev->n_refusals, (cw_status_t) -1);
        uint64_t pfl = sum_status(t->prev->refusals, t->prev->n_refusals, CW_FLOODED) +
                       sum_status(t->prev->fates, t->prev->n_fates, CW_FLOODED);
        if (dt > 0) {
            in_s = (double) (rx - prx) / dt;
            out_s = (double) (dl - pdl) / dt;
            bytes_s = (double) (rxb + dlb - pb) / dt;
            ref_s = (double) (refused - pref) / dt;
            fl_s = (double) (flooded - pfl) / dt;
            fs_s = (double) (st->fsyncs - p->fsyncs) / dt;
        }
    }
    uint64_t up = st->uptime_ms / 1000;
    char head[256], rss[32], bps[32];
    snprintf(head, sizeof head,
             "causeway top  %s  broker %s  up %llu:%02llu:%02llu  %s   q quit  t texts%s",
             t->o->endpoint, st->version[0] ? st->version : "?",
             (unsigned long long) (up / 3600), (unsigned long long) (up / 60 % 60),
             (unsigned long long) (up % 60), st->fsyncs || st->store_transactions ? "durable"
                                                                                  : "live",
             t->show_text ? " (on)" : "");
    title(t, 0, 0, COLS, head);
    human_bytes((double) st->memory_rss_bytes, rss, sizeof rss);
    human_bytes(bytes_s, bps, sizeof bps);
    putf(1, 0, COLS, "sessions %u/%u  users %u  logins %llu  memory %s", st->sessions,
         st->max_sessions, st->known_users, (unsigned long long) st->logins, rss);
    putf(2, 0, COLS, "messages in %llu (%.1f/s)  out %llu (%.1f/s)  %s/s", (unsigned long long) rx,
         in_s, (unsigned long long) dl, out_s, bps);
    if (t->color && fl_s > 0)
        attron(COLOR_PAIR(PAIR_WARN));
    putf(3, 0, COLS, "refused %llu (%.1f/s)  flooded %llu (%.1f/s)  redelivered %llu  held %u",
         (unsigned long long) refused, ref_s, (unsigned long long) flooded, fl_s,
         (unsigned long long) st->redeliveries, st->held_messages);
    if (t->color && fl_s > 0)
        attroff(COLOR_PAIR(PAIR_WARN));
    char p50[16], p99[16];
    fmt_us(cli_commit_quantile(st, 0.5), p50, sizeof p50);
    fmt_us(cli_commit_quantile(st, 0.99), p99, sizeof p99);
    if (st->commit_count)
        putf(4, 0, COLS,
             "store  queued %llu  pending %u  fsyncs %llu (%.1f/s)  commit p50 <= %s  "
             "p99 <= %s  mean %.0fus",
             (unsigned long long) st->stored_messages, st->store_pending,
             (unsigned long long) st->fsyncs, fs_s, p50, p99,
             (double) st->commit_sum_us / (double) st->commit_count);
    else
        putf(4, 0, COLS, "store  %s", st->fsyncs || st->store_transactions
                                           ? "no commits yet"
                                           : "none (live-only broker)");
    char line[1024];
    size_t off = (size_t) snprintf(line, sizeof line, "refusals:");
    for (size_t i = 0; i < t->stats->n_refusals && off < sizeof line; i++)
        off += (size_t) snprintf(line + off, sizeof line - off, " %s=%llu",
                                 cw_status_name(t->stats->refusals[i].status),
                                 (unsigned long long) t->stats->refusals[i].count);
    if (!t->stats->n_refusals)
        snprintf(line + off, sizeof line - off, " none");
    put(5, 0, COLS, line);

    /* Two panes: the user log (left) and recent messages (right). */
    int top = 7, bottom = LINES - 2;
    int lw = COLS >= 100 ? COLS * 2 / 5 : COLS / 2;
    int rw = COLS - lw - 1;
    size_t nu = t->users ? t->users->n_users : 0;
    snprintf(line, sizeof line, "Users (%zu, %u online): peer, since / last seen", nu,
             st->sessions);
    title(t, top - 1, 0, lw, line);
    int y = top;
    for (size_t i = 0; i < nu && y < bottom; i++, y++) {
        const cw_user_t *u = &t->users->users[i];
        const cw_session_info_t *si = u->online ? session_of(t, u->name) : NULL;
        char when[32];
        if (si) {
            cli_fmt_time(si->since_us, when, sizeof when);
            if (t->color)
                attron(COLOR_PAIR(PAIR_ON) | A_BOLD);
            else
                attron(A_BOLD);
            putf(y, 0, lw, "* %-12s %-21s %s q%llu", u->name, si->peer[0] ? si->peer : "-", when,
                 (unsigned long long) si->queued);
            if (t->color)
                attroff(COLOR_PAIR(PAIR_ON) | A_BOLD);
            else
                attroff(A_BOLD);
        } else {
            cli_fmt_time(u->last_seen_us, when, sizeof when);
            putf(y, 0, lw, "  %-12s %-21s %s", u->name, u->online ? "online" : "offline", when);
        }
    }
    size_t nf = t->recent ? t->recent->n_forwarded : 0;
    snprintf(line, sizeof line, "Recent messages (%zu)", nf);
    title(t, top - 1, lw + 1, rw, line);
    int rows = bottom - top;
    /* Newest at the top. */
    y = top;
    for (size_t k = 0; k < nf && y < top + rows; k++, y++) {
        const cw_forwarded_t *f = &t->recent->forwarded[nf - 1 - k];
        char when[16], to[128] = "";
        cli_fmt_time(f->timestamp_us, when, sizeof when);
        size_t o2 = 0;
        if (f->broadcast)
            o2 = (size_t) snprintf(to, sizeof to, "all(%u)", f->recipients);
        for (size_t i = 0; i < f->n_to && o2 < sizeof to; i++)
            o2 += (size_t) snprintf(to + o2, sizeof to - o2, "%s%s", i ? "," : "", f->to[i]);
        if (!f->broadcast && f->recipients > f->n_to && o2 < sizeof to)
            snprintf(to + o2, sizeof to - o2, ",+%u", f->recipients - (uint32_t) f->n_to);
        int n = snprintf(line, sizeof line, "%s %-7s %s -> %s  %uB %u/%u", when,
                         f->durable ? "durable" : "live", f->from, to, f->size, f->delivered,
                         f->recipients);
        if (t->show_text && n > 0 && (size_t) n < sizeof line) {
            /* Untrusted: one line, controls shown (cw_render.h). */
            char *text = cw_render_text(f->text, strlen(f->text), 0, 0, NULL, CW_RENDER_ONELINE);
            snprintf(line + n, sizeof line - (size_t) n, "  \"%s\"", text ? text : "");
            free(text);
        }
        put(y, lw + 1, rw, line);
    }
    if (t->stats->n_queues) {
        off = (size_t) snprintf(line, sizeof line, "deepest queues:");
        for (size_t i = 0; i < t->stats->n_queues && off < sizeof line; i++)
            off += (size_t) snprintf(line + off, sizeof line - off, " %s=%llu",
                                     t->stats->queues[i].name,
                                     (unsigned long long) t->stats->queues[i].depth);
        put(LINES - 2, 0, COLS, line);
    }
    if (t->status[0]) {
        if (t->color)
            attron(COLOR_PAIR(PAIR_WARN));
        putf(LINES - 1, 0, COLS, "%s", t->status);
        if (t->color)
            attroff(COLOR_PAIR(PAIR_WARN));
    } else {
        putf(LINES - 1, 0, COLS, "refresh %ld  every %ld ms  %dx%d", t->refreshes,
             t->o->interval_ms ? t->o->interval_ms : 1000L, COLS, LINES);
    }
    refresh();
}

int cli_top(const cli_opts_t *o)
{
    if (!o->name) {
        fprintf(stderr, "causeway top: need --name OPERATOR (a name in the broker's "
                        "--operators)\n");
        return CLI_EXIT_USAGE;
    }
    if (o->n_args) {
        fprintf(stderr, "causeway top: unexpected argument '%s'\n", o->args[0]);
        return CLI_EXIT_USAGE;
    }
    top_t t;
    memset(&t, 0, sizeof t);
    t.o = o;
    t.show_text = o->text;
    t.c = cli_connect(o, 1, 1, 0);
    if (!t.c)
        return CLI_EXIT_USAGE;
    cw_reply_t *reply = NULL;
    cw_status_t st = cw_client_login(t.c, o->name, o->timeout_ms, &reply);
    if (st != CW_OK) {
        char what[128];
        snprintf(what, sizeof what, "login as '%s'", o->name);
        int code = cli_fail(o, what, st, reply);
        cw_reply_destroy(&reply);
        cw_client_destroy(&t.c);
        return code;
    }
    cw_reply_destroy(&reply);
    /* Refused before the screen is taken: the message stays readable. */
    int code = poll_broker(&t);
    if (code) {
        fprintf(stderr, "causeway top: %s\n", t.status);
        cw_client_logout(t.c, o->timeout_ms);
        cw_client_destroy(&t.c);
        return code;
    }

    setlocale(LC_ALL, "");
    if (!initscr()) {
        fprintf(stderr, "causeway top: cannot use the terminal (TERM=%s)\n",
                getenv("TERM") ? getenv("TERM") : "");
        cw_client_destroy(&t.c);
        return CLI_EXIT_USAGE;
    }
    cbreak();
    noecho();
    keypad(stdscr, TRUE);
    curs_set(0);
    timeout(100);
    if (has_colors()) {
        start_color();
        use_default_colors();
        init_pair(PAIR_HEAD, COLOR_BLACK, COLOR_CYAN);
        init_pair(PAIR_ON, COLOR_GREEN, -1);
        init_pair(PAIR_WARN, COLOR_RED, -1);
        t.color = 1;
    }
    long interval = o->interval_ms ? o->interval_ms : 1000;
    int64_t next = cw_mono_ms() + interval;
    draw(&t);
    while (!cli_stopping && !code) {
        if (o->count && t.refreshes >= o->count)
            break;
        int ch = getch();
        if (ch == 'q' || ch == 'Q' || ch == 27)
            break;
        int now = 0;
        if (ch == KEY_RESIZE) {
            draw(&t);
            continue;
        }
        if (ch == 't' && o->text) {
            t.show_text = !t.show_text;
            now = 1;
        } else if (ch == 't') {
            snprintf(t.status, sizeof t.status,
                     "texts are hidden: start causeway top with --text (and the broker "
                     "with --monitor-text)");
            draw(&t);
        }
        if (ch == ' ')
            now = 1;
        if (now || cw_mono_ms() >= next) {
            code = poll_broker(&t);
            next = cw_mono_ms() + interval;
            draw(&t);
        }
    }
    endwin();
    if (code)
        fprintf(stderr, "causeway top: %s\n", t.status);
    cw_reply_destroy(&t.stats);
    cw_reply_destroy(&t.prev);
    cw_reply_destroy(&t.sessions);
    cw_reply_destroy(&t.users);
    cw_reply_destroy(&t.recent);
    cw_client_logout(t.c, o->timeout_ms);
    cw_client_destroy(&t.c);
    return code;
}
