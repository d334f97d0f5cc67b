/*  tui.c: `causeway tui`, the full-screen terminal client: the view
 *  (ncursesw) and the controller (keys, commands, results). The state is
 *  tui_model.c's (pure logic, unit-tested); every libcauseway call runs on
 *  tui_worker.c's thread, so nothing here ever waits for the broker.
 *
 *  Screen (redrawn from the model after every change; ncurses sends only
 *  the difference):
 *
 *    conversation (scrollback)                | users: online mark, unread,
 *                                             |        [x] in the set
 *                                             | clock (F7): changed entries
 *    -- recipients line: "to bob (1-to-1) · live" --------------------------
 *    > input line
 *    status: connection, endpoint, name, live/durable, keys
 *
 *  The exchange view (F8, /exchange) replaces the conversation with the
 *  phase-3 exchange's log (xchg.c runs its state machine; its sends go
 *  through the worker like any other). The help overlay (F1, or ? on an
 *  empty line) lists every key.
 *
 *  Untrusted text (message texts, names, details) reaches the screen only
 *  through tm_render, so control characters, newlines and bidi controls
 *  cannot move the cursor or pass for another line. Colours are used only
 *  if has_colors(); otherwise bold/dim/reverse say the same.
 *
 *  Main thread only. poll() waits on the terminal, the worker's result
 *  pipe and the CLI's signal pipe (SIGINT/SIGTERM); resizes arrive as
 *  KEY_RESIZE from ncurses' own SIGWINCH handling. While the screen is up,
 *  stderr (libcauseway's log lines) goes to --log-file or /dev/null, so
 *  nothing writes over the screen.
 */
#define NCURSES_WIDECHAR 1

#include "cli.h"
#include "cw_util.h"
#include "tui_model.h"
#include "tui_worker.h"
#include "xchg.h"

#include <curses.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <wchar.h>

/* Width of the user pane, at most; the conversation gets the rest. */
#define USERS_W 26
/* Exchange ids are above this (conversation sends count up from 1). */
#define XCHG_ID_BASE (UINT64_C(1) << 62)
/* Rows produced for one conversation entry, at most. */
#define ENTRY_ROWS_MAX 64

enum { PAIR_ONLINE = 1, PAIR_OFFLINE, PAIR_OWN, PAIR_DURABLE, PAIR_ERROR, PAIR_NOTE, PAIR_BAR,
       PAIR_CHANGED, PAIR_READ };

typedef struct {
    const cli_opts_t *o;
    tw_t *w;                   /* the worker: owns the client */
    tm_t *m;                   /* the model */
    tm_line_t *line;           /* the input line */
    char me[CW_NAME_MAX_HARD + 1];
    int logged_in;             /* the login succeeded */
    int need_name;             /* refused: the next Enter logs in under the typed name */
    int connected;             /* connection up (as the events say) */
    int quit;
    int durable;               /* sends are durable */
    int receipts;              /* ask for read receipts on durable sends */
    int focus_users;           /* keys go to the user list */
    size_t ucursor;            /* highlighted user */
    int show_clock;            /* the clock pane is open */
    int view_xchg;             /* the exchange log replaces the conversation */
    int help;                  /* the help overlay is up */
    int scroll;                /* conversation rows scrolled back from the bottom */
    int colors;                /* has_colors() */
    uint64_t next_id;          /* last send id */
    char hint[256];            /* one-line message on the status line */
    uint64_t shown_seq;        /* highest durable seq drawn */
    uint64_t acked_seq;        /* highest seq an ack was posted for */
    size_t pending;            /* sends without a reply */
    xchg_t *x;                 /* running exchange, or NULL */
    char **xgroup;             /* its group (owned) */
    size_t n_xgroup;
    uint64_t next_xid;         /* exchange send ids */
} tui_t;

static void hint(tui_t *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hint(tui_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->hint, sizeof t->hint, fmt, ap);
    va_end(ap);
}

/* --- drawing ---------------------------------------------------------------- */

static attr_t attr_for(const tui_t *t, int pair, attr_t mono)
{
    return t->colors ? (attr_t) COLOR_PAIR(pair) : mono;
}

/* Draws UTF-8 text (untrusted) at y,x in at most `width` columns. Returns
 * the columns used. */
static int put_text(int y, int x, int width, const char *utf8, attr_t a)
{
    wchar_t buf[1024];
    size_t n = tm_render(utf8, buf, sizeof buf / sizeof buf[0]);
    size_t ends[1];
    if (width <= 0)
        return 0;
    size_t rows = tm_wrap(buf, width, ends, 1);
    size_t cut = rows ? ends[0] : 0;
    if (cut > n)
        cut = n;
    attron(a);
    mvaddnwstr(y, x, buf, (int) cut);
    attroff(a);
    return tm_width(buf, cut);
}

/* Box lines as Unicode characters (U+2502, U+2500), not the alternate
 * character set, so a screen capture reads as what it shows. */
static void box_vline(int y, int x, int n)
{
    for (int i = 0; i < n; i++)
        mvaddwstr(y + i, x, L"\u2502");
}

static void box_hline(int y, int x, int n)
{
    for (int i = 0; i < n; i++)
        mvaddwstr(y, x + i, L"\u2500");
}

static void fmt_time(uint64_t us, char *buf, size_t size) { cli_fmt_time(us, buf, size); }

/* The text of entry e's first row(s), as UTF-8 (caller frees). */
static void entry_head(const tui_t *t, const tm_entry_t *e, cli_str_t *s)
{
    char when[32];
    if (e->listing == 0)
        fmt_time(e->ts_us, when, sizeof when);
    else
        cli_fmt_datetime(e->ts_us, when, sizeof when);
    switch (e->kind) {
    case TM_IN:
        cli_str_addf(s, "[%s", when);
        if (e->durable)
            cli_str_addf(s, " #%llu", (unsigned long long) e->seq);
        cli_str_add(s, "] ");
        if (e->listing)
            cli_str_add(s, e->listing == 1 ? "(fetched) " : "(history) ");
        if (e->durable)
            cli_str_add(s, "\xe2\x9c\x89 ");   /* ✉: stored message */
        cli_str_addf(s, "%s \xe2\x86\x92 ", e->from);
        if (e->broadcast || e->n_to == 0) {
            cli_str_add(s, "everyone");
        } else {
            for (size_t i = 0; i < e->n_to; i++)
                cli_str_addf(s, "%s%s", i ? ", " : "",
                             strcmp(e->to[i], t->me) == 0 ? "you" : e->to[i]);
        }
        cli_str_add(s, ": ");
        cli_str_add(s, e->expired ? "(expired before delivery)" : e->text);
        if (e->receipt_requested)
            cli_str_add(s, "  (read receipt asked)");
        break;
    case TM_OUT:
        cli_str_addf(s, "[%s] %syou \xe2\x86\x92 ", when, e->durable ? "\xe2\x9c\x89 " : "");
        if (e->broadcast) {
            cli_str_add(s, "everyone");
        } else {
            for (size_t i = 0; i < e->n_to; i++)
                cli_str_addf(s, "%s%s", i ? ", " : "", e->to[i]);
        }
        cli_str_add(s, ": ");
        cli_str_add(s, e->text);
        break;
    default:
        cli_str_addf(s, "[%s] %s %s", when, e->kind == TM_ERROR ? "!!" : "--", e->text);
        break;
    }
}

/* The fate row of a sent message. */
static void entry_fates(const tm_entry_t *e, cli_str_t *s)
{
    char w[64];
    cli_str_add(s, "    ");
    if (e->pending) {
        cli_str_add(s, "sending\xe2\x80\xa6");
        return;
    }
    if (e->failed) {
        cli_str_addf(s, "not sent: %s \xe2\x80\x94 F9 resends", cw_status_name(e->status));
        return;
    }
    if (e->n_fates == 0) {
        cli_str_add(s, "nobody to send to");
        return;
    }
    for (size_t i = 0; i < e->n_fates; i++)
        cli_str_addf(s, "%s%s: %s", i ? " \xc2\xb7 " : "", e->fates[i].name,
                     tm_fate_word(&e->fates[i], w, sizeof w, fmt_time));
}

typedef struct {
    wchar_t text[2048];
    size_t ends[ENTRY_ROWS_MAX];
    size_t n_rows;
    attr_t attr;
} rows_t;

static void make_rows(rows_t *r, const char *utf8, int width, attr_t a)
{
    tm_render(utf8, r->text, sizeof r->text / sizeof r->text[0]);
    r->n_rows = tm_wrap(r->text, width, r->ends, ENTRY_ROWS_MAX);
    r->attr = a;
}

static void draw_rows(const rows_t *r, int *y, int top, int x, int skip_from_end)
{
    /* Draws r's rows upwards ending at *y, skipping skip_from_end rows at
     * the bottom (scrolled away); *y moves up. */
    (void) skip_from_end;
    for (size_t i = r->n_rows; i-- > 0;) {
        if (*y < top)
            return;
        size_t from = i ? r->ends[i - 1] : 0;
        attron(r->attr);
        mvaddnwstr(*y, x, r->text + from, (int) (r->ends[i] - from));
        attroff(r->attr);
        (*y)--;
    }
}

static void draw_conversation(tui_t *t, int top, int bottom, int width)
{
    int y = bottom;
    int skip = t->scroll;
    size_t n = tm_n_entries(t->m);
    static rows_t head, fates;
    for (size_t i = n; i-- > 0 && y >= top;) {
        const tm_entry_t *e = tm_entry(t->m, i);
        cli_str_t s = {0};
        entry_head(t, e, &s);
        attr_t a = A_NORMAL;
        if (e->kind == TM_OUT)
            a = attr_for(t, PAIR_OWN, A_BOLD);
        else if (e->kind == TM_NOTE)
            a = attr_for(t, PAIR_NOTE, A_DIM);
        else if (e->kind == TM_ERROR)
            a = attr_for(t, PAIR_ERROR, A_BOLD | A_UNDERLINE);
        make_rows(&head, s.buf ? s.buf : "", width, a);
        cli_str_free(&s);
        fates.n_rows = 0;
        if (e->kind == TM_OUT) {
            cli_str_t f = {0};
            entry_fates(e, &f);
            int read = 0;
            for (size_t k = 0; k < e->n_fates; k++)
                read |= e->fates[k].kind == TM_FATE_READ;
            make_rows(&fates, f.buf, width,
                      e->failed ? attr_for(t, PAIR_ERROR, A_BOLD)
                                : read ? attr_for(t, PAIR_READ, A_BOLD) : attr_for(t, PAIR_NOTE, A_DIM));
            cli_str_free(&f);
        }
        /* Scrolled-back rows are skipped from the bottom up. */
        rows_t *parts[2] = {&fates, &head};
        for (int p = 0; p < 2; p++) {
            rows_t *r = parts[p];
            while (skip > 0 && r->n_rows > 0) {
                r->n_rows--;
                skip--;
            }
            draw_rows(r, &y, top, 0, 0);
        }
    }
    if (t->scroll > 0 && skip > 0)
        t->scroll -= skip;   /* scrolled past the oldest entry: clamp */
    if (t->scroll > 0) {
        const char *more = " more below (PageDown) ";
        put_text(bottom, width > 24 ? width - 24 : 0, 24, more, A_REVERSE);
    }
}

static void draw_xlog(tui_t *t, int top, int bottom, int width)
{
    int y = bottom;
    size_t n = tm_n_xlog(t->m);
    static rows_t r;
    for (size_t i = n; i-- > 0 && y >= top;) {
        make_rows(&r, tm_xlog_line(t->m, i), width, A_NORMAL);
        draw_rows(&r, &y, top, 0, 0);
    }
    if (y >= top) {
        if (!t->x && n == 0)
            put_text(y, 0, width,
                     "exchange view: type /exchange A,B,C [MIN-MS MAX-MS [COUNT]] (you among them); "
                     "F8 goes back", attr_for(t, PAIR_NOTE, A_DIM));
    }
}

static void draw_users(tui_t *t, int x, int top, int bottom, int width)
{
    char line[128];
    snprintf(line, sizeof line, "users (%zu)%s", tm_n_users(t->m), t->focus_users ? " *" : "");
    put_text(top, x, width, line, A_BOLD | A_UNDERLINE);
    size_t n = tm_n_users(t->m);
    int rows = bottom - top;
    size_t first = 0;
    if (rows > 0 && t->ucursor >= (size_t) rows)
        first = t->ucursor - (size_t) rows + 1;
    for (size_t i = first; i < n && top + 1 + (int) (i - first) <= bottom; i++) {
        const tm_user_t *u = tm_user(t->m, i);
        int y = top + 1 + (int) (i - first);
        char mark[8] = "";
        if (tm_mode(t->m) == TM_TO_SET && !u->me)
            snprintf(mark, sizeof mark, "[%c]", u->selected ? 'x' : ' ');
        snprintf(line, sizeof line, "%s %s%s%s", u->online ? "\xe2\x97\x8f" : "\xe2\x97\x8b", mark,
                 u->name, u->me ? " (you)" : "");
        attr_t a = u->online ? attr_for(t, PAIR_ONLINE, A_BOLD) : attr_for(t, PAIR_OFFLINE, A_DIM);
        if (t->focus_users && i == t->ucursor)
            a |= A_REVERSE;
        int used = put_text(y, x, width, line, a);
        if (u->unread) {
            snprintf(line, sizeof line, " %u", u->unread);
            put_text(y, x + used, width - used, line, attr_for(t, PAIR_DURABLE, A_BOLD));
        }
    }
}

static void draw_clock(tui_t *t, int x, int top, int bottom, int width)
{
    put_text(top, x, width, "vector clock", A_BOLD | A_UNDERLINE);
    for (size_t i = 0; i < tm_n_clock(t->m) && top + 1 + (int) i <= bottom; i++) {
        uint64_t counter;
        int changed;
        const char *node = tm_clock_entry(t->m, i, &counter, &changed);
        char line[128];
        snprintf(line, sizeof line, "%s%s: %llu", changed ? "*" : " ", node,
                 (unsigned long long) counter);
        put_text(top + 1 + (int) i, x, width, line,
                 changed ? attr_for(t, PAIR_CHANGED, A_BOLD | A_REVERSE) | A_BOLD : A_NORMAL);
    }
    if (tm_n_clock(t->m) == 0)
        put_text(top + 1, x, width, "(empty: nothing sent or received yet)", A_DIM);
}

static const char *help_lines[] = {
    "causeway tui \xe2\x80\x94 keys",
    "Enter       send the line (or run a /command)",
    "Tab         complete a user name",
    "Up/Down     input history (user list: move)",
    "Left/Right Home/End  move; Ctrl-A/E, Ctrl-K/U/W edit",
    "PageUp/PageDown      scroll the conversation",
    "F1 or ?     this help (any key closes it)",
    "F2          durable / live sending",
    "F3          recipients: 1-to-1, 1-to-n (set), 1-to-all",
    "F4          user list: Up/Down, Enter picks one,",
    "            Space toggles in the set, a = all, Esc back",
    "F5          check for messages (fetch stored ones)",
    "F6          history (last 20 stored messages)",
    "F7          clock pane on/off",
    "F8          exchange view (/exchange A,B,C [MIN MAX [N]])",
    "F9, Ctrl-R  resend the last message that was not sent",
    "F10, Ctrl-C quit (/quit)",
    "Commands: /to a,b  /all  /durable on|off  /receipts on|off",
    "          /fetch  /history [N]  /exchange ...  /quit  //text",
};

static void draw_help(tui_t *t)
{
    int n = (int) (sizeof help_lines / sizeof help_lines[0]);
    int w = 60 < COLS - 2 ? 60 : COLS - 2, h = n + 2 < LINES ? n + 2 : LINES;
    int y0 = (LINES - h) / 2, x0 = (COLS - w) / 2;
    if (w < 10 || h < 3)
        return;
    for (int y = 0; y < h; y++)
        mvhline(y0 + y, x0, ' ', w);
    attron(A_BOLD);
    box_hline(y0, x0, w);
    box_hline(y0 + h - 1, x0, w);
    box_vline(y0, x0, h);
    box_vline(y0, x0 + w - 1, h);
    mvaddwstr(y0, x0, L"\u250c");
    mvaddwstr(y0, x0 + w - 1, L"\u2510");
    mvaddwstr(y0 + h - 1, x0, L"\u2514");
    mvaddwstr(y0 + h - 1, x0 + w - 1, L"\u2518");
    attroff(A_BOLD);
    for (int i = 0; i < n && i + 1 < h - 1; i++)
        put_text(y0 + 1 + i, x0 + 2, w - 4, help_lines[i], i == 0 ? A_BOLD : A_NORMAL);
}

static void draw(tui_t *t)
{
    erase();
    if (LINES < 6 || COLS < 30) {
        put_text(0, 0, COLS, "terminal too small", A_BOLD);
        refresh();
        return;
    }
    int uw = COLS / 3 < USERS_W ? COLS / 3 : USERS_W;
    int cw = COLS - uw - 1;
    int bottom = LINES - 4;
    if (t->view_xchg)
        draw_xlog(t, 0, bottom, cw);
    else
        draw_conversation(t, 0, bottom, cw);
    box_vline(0, cw, bottom + 1);
    int ubottom = bottom;
    if (t->show_clock) {
        int n = (int) tm_n_clock(t->m);
        int ch = n + 2 > (bottom + 1) / 2 ? (bottom + 1) / 2 : n + 2;
        if (ch < 3)
            ch = 3;
        ubottom = bottom - ch;
        box_hline(ubottom + 1, cw + 1, uw);
        draw_clock(t, cw + 1, ubottom + 2, bottom, uw);
    }
    draw_users(t, cw + 1, 0, ubottom, uw);

    /* The recipients line: the choice, always visible above the input. */
    char target[512], line[700];
    tm_target_label(t->m, target, sizeof target);
    snprintf(line, sizeof line, " %s \xc2\xb7 %s%s%s ", target,
             t->durable ? "durable" : "live",
             t->durable && t->receipts ? " + receipts" : "",
             t->view_xchg ? " \xc2\xb7 exchange view" : "");
    attr_t bar = attr_for(t, PAIR_BAR, A_REVERSE);
    attron(bar);
    mvhline(LINES - 3, 0, ' ', COLS);
    attroff(bar);
    put_text(LINES - 3, 0, COLS, line, bar | A_BOLD);

    /* The status line. */
    char status[700];
    const char *conn = t->need_name ? "name refused"
                       : !t->logged_in ? "connecting"
                       : t->connected ? "connected" : "reconnecting";
    snprintf(status, sizeof status, "%s %s \xc2\xb7 %s \xc2\xb7 %s \xc2\xb7 %s%s \xc2\xb7 F1 help%s%s",
             t->connected ? "\xe2\x97\x8f" : "\xe2\x97\x8b", conn, t->o->endpoint, t->me,
             t->durable ? "durable" : "live", t->pending ? " \xc2\xb7 sending" : "",
             *t->hint ? " \xc2\xb7 " : "", t->hint);
    attr_t sa = t->connected ? attr_for(t, PAIR_ONLINE, A_NORMAL) : attr_for(t, PAIR_ERROR, A_BOLD);
    put_text(LINES - 1, 0, COLS, status, sa);

    /* The input line. */
    const char *prompt = t->need_name ? "name> " : "> ";
    int pw = (int) strlen(prompt);
    mvaddstr(LINES - 2, 0, prompt);
    size_t len, cur, first;
    int col;
    const wchar_t *text = tm_line_text(t->line, &len, &cur);
    tm_line_view(t->line, COLS - pw, &first, &col);
    size_t ends[1];
    size_t rows = tm_wrap(text + first, COLS - pw - 1, ends, 1);
    mvaddnwstr(LINES - 2, pw, text + first, rows ? (int) ends[0] : 0);
    if (t->help)
        draw_help(t);
    move(LINES - 2, pw + col);
    curs_set(t->help || t->focus_users ? 0 : 1);
    refresh();
}

/* --- sending -------------------------------------------------------------------- */

static char **names_dup(const char *const *names, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++)
        out[i] = strdup(names[i]);
    return out;
}

static void post_send(tui_t *t, uint64_t id, const char *const *to, size_t n_to, int broadcast,
                      const char *text, int durable, const char *message_id)
{
    tw_job_t *j = tw_job_new(TW_SEND);
    if (!j)
        return;
    j->id = id;
    j->to = names_dup(to, n_to);
    j->n_to = j->to ? n_to : 0;
    j->broadcast = broadcast;
    j->text = strdup(text);
    j->durable = durable;
    j->receipt = durable && t->receipts;
    j->message_id = message_id && *message_id ? strdup(message_id) : NULL;
    t->pending++;
    tw_post(t->w, &j);
}

static void send_text(tui_t *t, const char *text)
{
    const char **names;
    size_t n;
    int broadcast;
    const char *why;
    if (!t->logged_in) {
        hint(t, "not logged in yet");
        return;
    }
    if (tm_recipients(t->m, &names, &n, &broadcast, &why) != 0) {
        hint(t, "%s", why);
        return;
    }
    uint64_t id = ++t->next_id;
    tm_add_out(t->m, id, names, n, broadcast, text, t->durable, cw_now_us());
    post_send(t, id, names, n, broadcast, text, t->durable, NULL);
    t->scroll = 0;
}

static void resend(tui_t *t)
{
    const tm_entry_t *e = tm_last_failed(t->m);
    if (!e) {
        hint(t, "nothing to resend");
        return;
    }
    uint64_t id = ++t->next_id;
    /* The same message id: a receiver that got the first attempt drops
     * the copy (durable: the broker stores an id once). */
    char *mid = strdup(e->message_id);
    uint64_t old = e->id;
    post_send(t, id, (const char *const *) e->to, e->n_to, e->broadcast, e->text, e->durable, mid);
    tm_resend(t->m, old, id);
    free(mid);
    hint(t, "sending again");
}

static void post_simple(tui_t *t, tw_kind_t kind, uint32_t n)
{
    if (!t->logged_in) {
        hint(t, "not logged in yet");
        return;
    }
    tw_job_t *j = tw_job_new(kind);
    if (j) {
        j->n = n;
        tw_post(t->w, &j);
        hint(t, "%s\xe2\x80\xa6", kind == TW_FETCH ? "checking for messages" : "asking for history");
    }
}

/* --- the exchange ------------------------------------------------------------------- */

static void xchg_end(tui_t *t)
{
    xchg_destroy(&t->x);
    for (size_t i = 0; i < t->n_xgroup; i++)
        free(t->xgroup[i]);
    free(t->xgroup);
    t->xgroup = NULL;
    t->n_xgroup = 0;
}

static void clock_text(tui_t *t, char *buf, size_t size)
{
    size_t len = (size_t) snprintf(buf, size, "{");
    for (size_t i = 0; i < tm_n_clock(t->m) && len < size; i++) {
        uint64_t c;
        const char *node = tm_clock_entry(t->m, i, &c, NULL);
        len += (size_t) snprintf(buf + len, size - len, "%s%s:%llu", i ? ", " : "", node,
                                 (unsigned long long) c);
    }
    if (len < size)
        snprintf(buf + len, size - len, "}");
}

static void xchg_begin(tui_t *t, const char *args)
{
    if (t->x) {
        hint(t, "an exchange is running already");
        return;
    }
    char *copy = strdup(args), *save = NULL;
    long min_ms = XCHG_DEFAULT_MIN_MS, max_ms = XCHG_DEFAULT_MAX_MS;
    char *list = copy ? strtok_r(copy, " ", &save) : NULL;
    char *a = list ? strtok_r(NULL, " ", &save) : NULL;
    char *b = a ? strtok_r(NULL, " ", &save) : NULL;
    char *cnt = b ? strtok_r(NULL, " ", &save) : NULL;
    long count = cnt ? strtol(cnt, NULL, 10) : 0;
    if (!list || count < 0) {
        hint(t, "usage: /exchange A,B,C [MIN-MS MAX-MS [COUNT]]");
        free(copy);
        return;
    }
    if (a)
        min_ms = max_ms = strtol(a, NULL, 10);
    if (b)
        max_ms = strtol(b, NULL, 10);
    char *s2 = NULL;
    for (char *tok = strtok_r(list, ",", &s2); tok; tok = strtok_r(NULL, ",", &s2)) {
        char **g = realloc(t->xgroup, (t->n_xgroup + 1) * sizeof *g);
        if (!g)
            break;
        t->xgroup = g;
        t->xgroup[t->n_xgroup++] = strdup(tok);
    }
    free(copy);
    char err[256];
    t->x = xchg_new(t->me, (const char *const *) t->xgroup, t->n_xgroup, min_ms, max_ms,
                    cw_now_us() ^ (uint64_t) getpid() << 32, count, 0, err, sizeof err);
    if (!t->x) {
        hint(t, "exchange: %s", err);
        xchg_end(t);
        return;
    }
    /* Who is online now, from the user log we have. */
    for (size_t i = 0; i < tm_n_users(t->m); i++) {
        const tm_user_t *u = tm_user(t->m, i);
        xchg_presence(t->x, u->name, u->online);
    }
    t->view_xchg = 1;
    tm_xlog(t->m, "exchange as %s with %zu others, every %ld..%ld ms%s; /exchange stop finishes",
            t->me, xchg_n_peers(t->x), min_ms, max_ms, count ? ", then done" : "");
    cli_str_t s = {0};
    for (size_t i = 0; i < xchg_n_peers(t->x); i++)
        if (!xchg_peer_online(t->x, i))
            cli_str_addf(&s, "%s%s", s.len ? ", " : "", xchg_peer(t->x, i));
    if (s.len)
        tm_xlog(t->m, "waiting for %s", s.buf);
    cli_str_free(&s);
}

/* Runs due exchange actions; returns ms until the next may be due (-1). */
static int xchg_run(tui_t *t)
{
    int wait = -1;
    while (t->x) {
        const char *to = NULL;
        xchg_action_t act = xchg_step(t->x, cw_mono_ms(), &to, &wait);
        char clock[512];
        if (act == XCHG_NONE)
            break;
        if (act == XCHG_START) {
            clock_text(t, clock, sizeof clock);
            tm_xlog(t->m, "all online; clock %s", clock);
        } else if (act == XCHG_SEND) {
            const char *names[1] = {to};
            post_send(t, XCHG_ID_BASE + ++t->next_xid, names, 1, 0, "", 0, NULL);
        } else if (act == XCHG_FINISH) {
            size_t np = xchg_n_peers(t->x);
            const char *names[np];
            for (size_t i = 0; i < np; i++)
                names[i] = xchg_peer(t->x, i);
            post_send(t, XCHG_ID_BASE + ++t->next_xid, names, np, 0, XCHG_DONE_TEXT, 0, NULL);
            tm_xlog(t->m, "sending done to every member");
        } else if (act == XCHG_LEAVE) {
            clock_text(t, clock, sizeof clock);
            tm_xlog(t->m, "finished: %ld sent, %ld received, clock %s", xchg_sent(t->x),
                    xchg_received(t->x), clock);
            xchg_end(t);
            wait = -1;
        }
    }
    return wait;
}

/* --- commands ------------------------------------------------------------------------ */

static void set_to(tui_t *t, char *list)
{
    char *save = NULL;
    size_t n = 0;
    char *names[256];
    for (char *tok = strtok_r(list, ", ", &save); tok && n < 256; tok = strtok_r(NULL, ", ", &save))
        names[n++] = tok;
    if (n == 0) {
        hint(t, "usage: /to NAME[,NAME...]");
        return;
    }
    if (n == 1) {
        tm_choose(t->m, names[0]);
        return;
    }
    for (size_t i = 0; i < tm_n_users(t->m); i++)
        if (tm_user(t->m, i)->selected)
            tm_toggle(t->m, tm_user(t->m, i)->name);   /* toggling keeps the order */
    for (size_t i = 0; i < n; i++) {
        long at = tm_find_user(t->m, names[i]);
        if (at < 0 || !tm_user(t->m, (size_t) at)->selected)
            tm_toggle(t->m, names[i]);
    }
    tm_set_mode(t->m, TM_TO_SET);
}

static void command(tui_t *t, char *line)
{
    char *args = line + strcspn(line, " ");
    if (*args)
        *args++ = '\0';
    while (*args == ' ')
        args++;
    if (strcmp(line, "/to") == 0) {
        set_to(t, args);
    } else if (strcmp(line, "/all") == 0) {
        tm_set_mode(t->m, TM_TO_ALL);
        if (*args)
            send_text(t, args);
    } else if (strcmp(line, "/durable") == 0) {
        t->durable = strcmp(args, "off") != 0;
    } else if (strcmp(line, "/receipts") == 0) {
        t->receipts = strcmp(args, "off") != 0;
    } else if (strcmp(line, "/fetch") == 0) {
        post_simple(t, TW_FETCH, 0);
    } else if (strcmp(line, "/history") == 0) {
        long n = *args ? strtol(args, NULL, 10) : 20;
        post_simple(t, TW_HISTORY, n > 0 && n <= 1000 ? (uint32_t) n : 20);
    } else if (strcmp(line, "/clock") == 0) {
        t->show_clock = !t->show_clock;
    } else if (strcmp(line, "/exchange") == 0) {
        if (strcmp(args, "stop") == 0 && t->x) {
            xchg_stop(t->x);
            if (xchg_phase(t->x) == XCHG_FINISHED) {
                xchg_end(t);
                tm_xlog(t->m, "exchange stopped before it started");
            }
        } else {
            xchg_begin(t, args);
        }
    } else if (strcmp(line, "/resend") == 0) {
        resend(t);
    } else if (strcmp(line, "/help") == 0) {
        t->help = 1;
    } else if (strcmp(line, "/quit") == 0) {
        t->quit = 1;
    } else {
        hint(t, "unknown command %s (F1: help)", line);
    }
}

static void post_login(tui_t *t, const char *name)
{
    tw_job_t *j = tw_job_new(TW_LOGIN);
    if (!j)
        return;
    j->name = strdup(name);
    snprintf(t->me, sizeof t->me, "%s", name);
    tw_post(t->w, &j);
}

static void submit(tui_t *t)
{
    char *s = tm_line_utf8(t->line);
    tm_line_submit(t->line);
    if (!s)
        return;
    *t->hint = '\0';
    if (t->need_name) {
        const char *why;
        if (cw_name_check(s, CW_NAME_MAX_HARD, &why) != CW_OK) {
            hint(t, "'%s' is not a user name: %s", s, why);
        } else {
            tm_t *m = tm_new(s);
            if (m) {
                tm_destroy(&t->m);
                t->m = m;
                t->need_name = 0;
                post_login(t, s);
            }
        }
    } else if (s[0] == '/' && s[1] != '/') {
        command(t, s);
    } else if (*s) {
        send_text(t, s[0] == '/' ? s + 1 : s);
    }
    free(s);
}

/* --- results from the worker ------------------------------------------------------------ */

static int is_xchg_msg(tui_t *t, const cw_message_t *m)
{
    return t->x && xchg_is_peer(t->x, m->from) && !m->durable &&
           (m->text[0] == '\0' || strcmp(m->text, XCHG_DONE_TEXT) == 0);
}

static void on_event(tui_t *t, const cw_event_t *ev)
{
    uint64_t now = cw_now_us();
    char clock[512];
    switch (ev->type) {
    case CW_EVENT_DELIVER:
        tm_clock(t->m, ev->local_clock, ev->n_local_clock);
        if (is_xchg_msg(t, &ev->msg)) {
            int done = xchg_delivery(t->x, ev->msg.from, ev->msg.text);
            clock_text(t, clock, sizeof clock);
            tm_xlog(t->m, "from %s%s, clock %s", ev->msg.from, done ? ": done" : "", clock);
        } else {
            tm_add_in(t->m, &ev->msg, 0);
            if (t->scroll)
                t->scroll += 0;   /* stay where the reader is */
        }
        if (ev->msg.seq > t->shown_seq)
            t->shown_seq = ev->msg.seq;
        break;
    case CW_EVENT_RECEIPT:
        /* One of our messages was read: its fate turns into "read". */
        if (tm_receipt(t->m, ev->receipt.message_id, ev->receipt.reader, ev->receipt.read_us) != 0)
            tm_note(t->m, TM_NOTE, now, "%s read your message %s (no longer on screen)",
                    ev->receipt.reader, ev->receipt.message_id);
        if (ev->receipt.seq > t->shown_seq)
            t->shown_seq = ev->receipt.seq;
        break;
    case CW_EVENT_PRESENCE:
        tm_presence(t->m, ev->presence.name, ev->presence.online);
        if (t->x)
            xchg_presence(t->x, ev->presence.name, ev->presence.online);
        break;
    case CW_EVENT_DISCONNECTED:
        t->connected = 0;
        tm_note(t->m, TM_ERROR, now, "connection to the broker lost (%s); reconnecting by itself",
                ev->conn.detail && *ev->conn.detail ? ev->conn.detail
                                                    : cw_strerror(ev->conn.status));
        break;
    case CW_EVENT_RECONNECTED: {
        t->connected = 1;
        tm_note(t->m, TM_NOTE, now, "reconnected to %s as %s", t->o->endpoint, t->me);
        tm_users(t->m, ev->conn.users, ev->conn.n_users, 0);
        if (t->x)
            xchg_users(t->x, ev->conn.users, ev->conn.n_users);
        tw_job_t *j = tw_job_new(TW_WHO);
        if (j)
            tw_post(t->w, &j);
        break;
    }
    default:
        break;
    }
}

static void on_send(tui_t *t, const tw_job_t *j)
{
    if (t->pending)
        t->pending--;
    const cw_reply_t *r = j->reply;
    if (r && r->n_clock)
        tm_clock(t->m, r->clock, r->n_clock);
    if (j->id > XCHG_ID_BASE) {
        char clock[512];
        clock_text(t, clock, sizeof clock);
        const char *to = j->n_to == 1 ? j->to[0] : "every member";
        cw_status_t st = j->status;
        if ((st == CW_OK) && r && r->n_recipients == 1)
            st = r->recipients[0].status;
        tm_xlog(t->m, "%s%s%s%s, clock %s", strcmp(j->text, XCHG_DONE_TEXT) == 0 ? "done to " : "sent to ",
                to, st == CW_DELIVERED || st == CW_OK ? "" : " ", 
                st == CW_DELIVERED || st == CW_OK ? "" : cw_status_name(st), clock);
        return;
    }
    tm_send_result(t->m, j->id, j->status, r);
    if (j->status != CW_OK && j->status != CW_ACCEPTED)
        hint(t, "send: %s", r && r->detail && *r->detail ? r->detail : cw_strerror(j->status));
}

static void on_listing(tui_t *t, const tw_job_t *j)
{
    uint64_t now = cw_now_us();
    int fetch = j->kind == TW_FETCH;
    *t->hint = '\0';
    if (j->status != CW_OK || !j->reply) {
        tm_note(t->m, TM_ERROR, now, "%s: %s", fetch ? "check for messages" : "history",
                j->reply && *j->reply->detail ? j->reply->detail : cw_strerror(j->status));
        return;
    }
    const cw_reply_t *r = j->reply;
    tm_note(t->m, TM_NOTE, now, "%s: %zu message%s%s", fetch ? "check for messages" : "history",
            r->n_messages, r->n_messages == 1 ? "" : "s",
            r->n_messages == 0 && fetch ? " (nothing waiting)" : "");
    for (size_t i = 0; i < r->n_messages; i++) {
        const cw_message_t *msg = &r->messages[i];
        if (msg->is_receipt) {
            /* A read receipt waiting in our queue (PROTOCOL.md 13.12). */
            if (tm_receipt(t->m, msg->receipt_for, msg->from, msg->read_us) != 0)
                tm_note(t->m, TM_NOTE, now, "%s read your message %s", msg->from,
                        msg->receipt_for);
        } else {
            tm_add_in(t->m, msg, fetch ? 1 : 2);
        }
        if (fetch && msg->seq > t->shown_seq)
            t->shown_seq = r->messages[i].seq;
    }
    t->scroll = 0;
}

static void on_result(tui_t *t, tw_job_t *j)
{
    uint64_t now = cw_now_us();
    switch (j->kind) {
    case TW_EVENT:
        on_event(t, j->ev);
        break;
    case TW_TRYING:
        hint(t, "broker not answering (%s); trying again", cw_status_name(j->status));
        break;
    case TW_LOGIN:
        if (j->status == CW_OK) {
            t->logged_in = t->connected = 1;
            *t->hint = '\0';
            tm_note(t->m, TM_NOTE, now, "logged in to %s as %s (%s broker)", t->o->endpoint,
                    t->me, j->reply && j->reply->login.durable ? "durable" : "live-only");
            if (j->reply)
                tm_users(t->m, j->reply->users, j->reply->n_users, !j->reply->truncated);
            if (t->x && j->reply)
                xchg_users(t->x, j->reply->users, j->reply->n_users);
        } else if (j->status == CW_NAME_TAKEN || j->status == CW_BAD_NAME) {
            t->need_name = 1;
            tm_note(t->m, TM_ERROR, now, "the name %s was refused: %s (%s); type another name",
                    t->me, j->reply && *j->reply->detail ? j->reply->detail : cw_strerror(j->status),
                    cw_status_name(j->status));
        } else {
            tm_note(t->m, TM_ERROR, now, "login as %s failed: %s (%s); F10 quits", t->me,
                    j->reply && *j->reply->detail ? j->reply->detail : cw_strerror(j->status),
                    cw_status_name(j->status));
        }
        break;
    case TW_WHO:
        if (j->status == CW_OK && j->reply)
            tm_users(t->m, j->reply->users, j->reply->n_users, !j->reply->truncated);
        break;
    case TW_SEND:
        on_send(t, j);
        break;
    case TW_FETCH:
    case TW_HISTORY:
        on_listing(t, j);
        break;
    case TW_ACK:
        if (j->status != CW_OK)
            t->acked_seq = 0;   /* try again after the next message */
        break;
    default:
        break;
    }
}

/* After drawing: acknowledge the durable messages now on screen. */
static void ack_shown(tui_t *t)
{
    if (t->shown_seq > t->acked_seq && t->logged_in) {
        tw_job_t *j = tw_job_new(TW_ACK);
        if (!j)
            return;
        j->seq = t->shown_seq;
        t->acked_seq = t->shown_seq;
        tw_post(t->w, &j);
    }
}

/* --- keys ---------------------------------------------------------------------------------- */

static void users_key(tui_t *t, int is_key, wint_t c)
{
    size_t n = tm_n_users(t->m);
    const tm_user_t *u = tm_user(t->m, t->ucursor);
    if (is_key && c == KEY_UP && t->ucursor > 0)
        t->ucursor--;
    else if (is_key && c == KEY_DOWN && t->ucursor + 1 < n)
        t->ucursor++;
    else if ((!is_key && (c == L'\n' || c == L'\r')) || (is_key && c == KEY_ENTER)) {
        if (u && !u->me)
            tm_choose(t->m, u->name);
        t->focus_users = 0;
    } else if (!is_key && c == L' ') {
        if (u && tm_toggle(t->m, u->name) != 0)
            hint(t, "that is you");
    } else if (!is_key && c == L'a') {
        tm_set_mode(t->m, TM_TO_ALL);
        t->focus_users = 0;
    } else if ((!is_key && (c == 27 || c == L'\t')) || (is_key && c == KEY_F(4))) {
        t->focus_users = 0;
    }
}

static void mouse(tui_t *t)
{
    MEVENT me;
    if (getmouse(&me) != OK)
        return;
    int uw = COLS / 3 < USERS_W ? COLS / 3 : USERS_W;
    if (me.bstate & BUTTON4_PRESSED) {
        t->scroll += 3;
    } else if (me.bstate & (BUTTON1_CLICKED | BUTTON1_PRESSED)) {
        if (me.x > COLS - uw - 1 && me.y >= 1) {
            size_t i = (size_t) (me.y - 1);
            const tm_user_t *u = tm_user(t->m, i);
            if (u && !u->me) {
                t->ucursor = i;
                if (tm_mode(t->m) == TM_TO_SET)
                    tm_toggle(t->m, u->name);
                else
                    tm_choose(t->m, u->name);
            }
        }
    }
#ifdef BUTTON5_PRESSED
    if (me.bstate & BUTTON5_PRESSED)
        t->scroll = t->scroll > 3 ? t->scroll - 3 : 0;
#endif
}

static void key(tui_t *t, int is_key, wint_t c)
{
    int page = LINES - 5 > 1 ? LINES - 5 : 1;
    if (t->help) {
        t->help = 0;
        return;
    }
    if (is_key) {
        switch (c) {
        case KEY_RESIZE: return;
        case KEY_F(1): t->help = 1; return;
        case KEY_F(2): t->durable = !t->durable; return;
        case KEY_F(3): tm_set_mode(t->m, (tm_mode_t) ((tm_mode(t->m) + 1) % 3)); return;
        case KEY_F(4): t->focus_users = !t->focus_users; return;
        case KEY_F(5): post_simple(t, TW_FETCH, 0); return;
        case KEY_F(6): post_simple(t, TW_HISTORY, 20); return;
        case KEY_F(7): t->show_clock = !t->show_clock; return;
        case KEY_F(8):
            t->view_xchg = !t->view_xchg;
            if (t->view_xchg && !t->x) {
                size_t len;
                tm_line_text(t->line, &len, NULL);
                if (len == 0)
                    tm_line_set(t->line, "/exchange ");
            }
            return;
        case KEY_F(9): resend(t); return;
        case KEY_F(10): t->quit = 1; return;
        case KEY_PPAGE: t->scroll += page; return;
        case KEY_NPAGE: t->scroll = t->scroll > page ? t->scroll - page : 0; return;
        case KEY_MOUSE: mouse(t); return;
        default: break;
        }
    }
    if (t->focus_users) {
        users_key(t, is_key, c);
        return;
    }
    if (is_key) {
        switch (c) {
        case KEY_LEFT: tm_line_left(t->line); break;
        case KEY_RIGHT: tm_line_right(t->line); break;
        case KEY_HOME: tm_line_home(t->line); break;
        case KEY_END: tm_line_end(t->line); break;
        case KEY_BACKSPACE: tm_line_backspace(t->line); break;
        case KEY_DC: tm_line_delete(t->line); break;
        case KEY_UP: tm_line_prev(t->line); break;
        case KEY_DOWN: tm_line_next(t->line); break;
        case KEY_ENTER: submit(t); break;
        default: break;
        }
        return;
    }
    size_t len;
    tm_line_text(t->line, &len, NULL);
    switch (c) {
    case L'\r':
    case L'\n': submit(t); return;
    case L'\t': {
        char cands[256];
        size_t n = tm_complete(t->m, t->line, cands, sizeof cands);
        if (n == 0)
            hint(t, "no user name starts so");
        else if (n > 1)
            hint(t, "%s", cands);
        else
            *t->hint = '\0';
        return;
    }
    case 1: tm_line_home(t->line); return;         /* Ctrl-A */
    case 2: tm_line_left(t->line); return;         /* Ctrl-B */
    case 4:                                        /* Ctrl-D */
        if (len == 0)
            t->quit = 1;
        else
            tm_line_delete(t->line);
        return;
    case 5: tm_line_end(t->line); return;          /* Ctrl-E */
    case 6: tm_line_right(t->line); return;        /* Ctrl-F */
    case 8:
    case 127: tm_line_backspace(t->line); return;
    case 11: tm_line_kill_end(t->line); return;    /* Ctrl-K */
    case 12: clearok(curscr, TRUE); return;        /* Ctrl-L */
    case 14: tm_line_next(t->line); return;        /* Ctrl-N */
    case 16: tm_line_prev(t->line); return;        /* Ctrl-P */
    case 18: resend(t); return;                    /* Ctrl-R */
    case 21: tm_line_kill_start(t->line); return;  /* Ctrl-U */
    case 23: tm_line_kill_word(t->line); return;   /* Ctrl-W */
    case 27: t->view_xchg = 0; return;             /* Esc */
    case L'?':
        if (len == 0) {
            t->help = 1;
            return;
        }
        break;
    default: break;
    }
    if (tm_line_insert(t->line, (wchar_t) c) != 0 && c >= 0x20)
        hint(t, "the line is full (%d characters)", TM_LINE_MAX);
}

/* --- the command ------------------------------------------------------------------------------ */

static void start_colors(tui_t *t)
{
    t->colors = has_colors();
    if (!t->colors)
        return;
    start_color();
    use_default_colors();
    init_pair(PAIR_ONLINE, COLOR_GREEN, -1);
    init_pair(PAIR_OFFLINE, COLOR_WHITE, -1);
    init_pair(PAIR_OWN, COLOR_CYAN, -1);
    init_pair(PAIR_DURABLE, COLOR_YELLOW, -1);
    init_pair(PAIR_ERROR, COLOR_RED, -1);
    init_pair(PAIR_NOTE, COLOR_BLUE, -1);
    init_pair(PAIR_BAR, COLOR_BLACK, COLOR_CYAN);
    init_pair(PAIR_CHANGED, COLOR_BLACK, COLOR_YELLOW);
    init_pair(PAIR_READ, COLOR_GREEN, -1);
}

int cli_tui(const cli_opts_t *o)
{
    if (!o->name) {
        fprintf(stderr, "causeway tui: need --name NAME (see causeway tui --help)\n");
        return CLI_EXIT_USAGE;
    }
    if (o->n_args) {
        fprintf(stderr, "causeway tui: unexpected argument '%s'\n", o->args[0]);
        return CLI_EXIT_USAGE;
    }
    const char *why;
    if (cw_name_check(o->name, CW_NAME_MAX_HARD, &why) != CW_OK) {
        fprintf(stderr, "causeway tui: '%s' is not a user name: %s\n", o->name, why);
        return CLI_EXIT_USAGE;
    }
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "causeway tui: needs a terminal (for scripts: causeway send/listen)\n");
        return CLI_EXIT_USAGE;
    }
    setlocale(LC_ALL, "");
    cw_client_t *c = cli_connect(o, 0, 0, 0);
    if (!c)
        return CLI_EXIT_USAGE;
    tui_t t;
    memset(&t, 0, sizeof t);
    t.o = o;
    t.durable = o->durable;
    t.receipts = 1;
    t.m = tm_new(o->name);
    t.line = tm_line_new();
    t.w = tw_new(&c, o->timeout_ms);
    if (!t.m || !t.line || !t.w) {
        fputs("causeway: out of memory\n", stderr);
        tw_destroy(&t.w);
        tm_destroy(&t.m);
        tm_line_destroy(&t.line);
        return CLI_EXIT_UNREACHABLE;
    }
    if (o->n_to == 1)
        tm_choose(t.m, o->to[0]);
    else if (o->n_to > 1)
        for (size_t i = 0; i < o->n_to; i++)
            tm_toggle(t.m, o->to[i]);
    post_login(&t, o->name);

    /* Diagnostics must not write over the screen. */
    fflush(stderr);
    int saved_err = dup(STDERR_FILENO);
    int logfd = open(o->log_file ? o->log_file : "/dev/null",
                     O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (logfd >= 0) {
        dup2(logfd, STDERR_FILENO);
        close(logfd);
    }

    set_escdelay(25);
    initscr();
    cbreak();
    noecho();
    nonl();
    intrflush(stdscr, FALSE);
    keypad(stdscr, TRUE);
    nodelay(stdscr, TRUE);
    start_colors(&t);
    if (o->mouse)
        mousemask(BUTTON1_CLICKED | BUTTON1_PRESSED | BUTTON4_PRESSED
#ifdef BUTTON5_PRESSED
                      | BUTTON5_PRESSED
#endif
                  , NULL);

    while (!t.quit && !cli_stopping) {
        int wait = xchg_run(&t);
        draw(&t);
        ack_shown(&t);
        if (wait != 0) {
            struct pollfd fds[3] = {{.fd = STDIN_FILENO, .events = POLLIN},
                                    {.fd = tw_fd(t.w), .events = POLLIN},
                                    {.fd = cli_signal_fd, .events = POLLIN}};
            if (poll(fds, 3, wait) < 0 && errno != EINTR)
                break;
        }
        wint_t ch;
        int r;
        while ((r = get_wch(&ch)) != ERR)
            key(&t, r == KEY_CODE_YES, ch);
        tw_job_t *j;
        while ((j = tw_take(t.w))) {
            on_result(&t, j);
            tw_job_destroy(&j);
        }
    }

    endwin();
    fflush(stderr);
    if (saved_err >= 0) {
        dup2(saved_err, STDERR_FILENO);
        close(saved_err);
    }
    xchg_end(&t);
    tw_destroy(&t.w);   /* logs out */
    tm_line_destroy(&t.line);
    tm_destroy(&t.m);
    return CLI_EXIT_OK;
}
