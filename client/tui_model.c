/*  tui_model.c: the state behind `causeway tui` (see tui_model.h): user
 *  log, recipient choice, conversation and fates, clock, exchange log,
 *  input line. Pure logic on one thread; no terminal, no I/O.
 *
 *  Invariants: users are sorted by name and unique; the recipient set is
 *  the users with `selected`; `targets` (what tm_recipients hands out) is
 *  rebuilt after every change of users or choice; entries are in arrival
 *  order, at most TM_ENTRIES_MAX; a TM_OUT entry has fates only once its
 *  reply came (or a receipt arrived for it).
 *
 *  Wide characters: wcwidth() needs a UTF-8 LC_CTYPE (tui.c calls
 *  setlocale); UTF-8 is decoded and encoded here by hand (a few lines, with
 *  cw_utf8_seq_len doing the validation) so the conversion does not depend
 *  on the locale's multibyte state.
 */
#include "tui_model.h"
#include "cw_render.h"
#include "cw_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

struct tm {
    char *me;                 /* our name */
    tm_user_t *users;         /* sorted by name */
    size_t n_users, cap_users;
    tm_mode_t mode;
    char *one;                /* TM_TO_ONE: the chosen user, NULL if none */
    const char **targets;     /* tm_recipients' list (borrowed names) */
    size_t n_targets;
    tm_entry_t *entries;      /* ring: oldest at head */
    size_t head, n_entries;
    uint64_t gen;             /* change counter */
    cw_clock_item_t *clock;   /* current clock (names owned) */
    int *changed;             /* per entry of clock */
    size_t n_clock;
    char **xlog;              /* ring of exchange log lines */
    size_t xhead, n_xlog;
};

static char *xstrdup(const char *s)
{
    return strdup(s ? s : "");
}

/* --- users ------------------------------------------------------------------ */

tm_t *tm_new(const char *me)
{
    tm_t *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->me = xstrdup(me);
    m->entries = calloc(TM_ENTRIES_MAX, sizeof *m->entries);
    m->xlog = calloc(TM_XLOG_MAX, sizeof *m->xlog);
    if (!m->me || !m->entries || !m->xlog) {
        tm_destroy(&m);
        return NULL;
    }
    m->mode = TM_TO_ALL;
    tm_presence(m, me, 1);
    return m;
}

static void entry_free(tm_entry_t *e)
{
    free(e->from);
    for (size_t i = 0; i < e->n_to; i++)
        free(e->to[i]);
    free(e->to);
    free(e->text);
    free(e->message_id);
    for (size_t i = 0; i < e->n_fates; i++)
        free(e->fates[i].name);
    free(e->fates);
    memset(e, 0, sizeof *e);
}

static void clock_free(tm_t *m)
{
    for (size_t i = 0; i < m->n_clock; i++)
        free(m->clock[i].node);
    free(m->clock);
    free(m->changed);
    m->clock = NULL;
    m->changed = NULL;
    m->n_clock = 0;
}

void tm_destroy(tm_t **p)
{
    if (!p || !*p)
        return;
    tm_t *m = *p;
    for (size_t i = 0; i < m->n_users; i++)
        free(m->users[i].name);
    free(m->users);
    free(m->one);
    free(m->targets);
    if (m->entries)
        for (size_t i = 0; i < m->n_entries; i++)
            entry_free(&m->entries[(m->head + i) % TM_ENTRIES_MAX]);
    free(m->entries);
    clock_free(m);
    if (m->xlog)
        for (size_t i = 0; i < m->n_xlog; i++)
            free(m->xlog[(m->xhead + i) % TM_XLOG_MAX]);
    free(m->xlog);
    free(m->me);
    free(m);
    *p = NULL;
}

const char *tm_me(const tm_t *m) { return m->me; }

static void rebuild_targets(tm_t *m)
{
    free(m->targets);
    m->targets = NULL;
    m->n_targets = 0;
    if (m->mode == TM_TO_ONE && m->one) {
        m->targets = malloc(sizeof *m->targets);
        if (m->targets)
            m->targets[m->n_targets++] = m->one;
    } else if (m->mode == TM_TO_SET) {
        m->targets = malloc((m->n_users ? m->n_users : 1) * sizeof *m->targets);
        for (size_t i = 0; m->targets && i < m->n_users; i++)
            if (m->users[i].selected)
                m->targets[m->n_targets++] = m->users[i].name;
    }
    m->gen++;
}

long tm_find_user(const tm_t *m, const char *name)
{
    size_t lo = 0, hi = m->n_users;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(m->users[mid].name, name);
        if (c == 0)
            return (long) mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1 - (long) lo;   /* insertion point encoded */
}

/* The user `name`, added if new; NULL on out of memory. */
static tm_user_t *user_get(tm_t *m, const char *name)
{
    long at = tm_find_user(m, name);
    if (at >= 0)
        return &m->users[at];
    size_t pos = (size_t) (-1 - at);
    if (m->n_users == m->cap_users) {
        size_t cap = m->cap_users ? m->cap_users * 2 : 16;
        tm_user_t *u = realloc(m->users, cap * sizeof *u);
        if (!u)
            return NULL;
        m->users = u;
        m->cap_users = cap;
    }
    char *copy = xstrdup(name);
    if (!copy)
        return NULL;
    memmove(&m->users[pos + 1], &m->users[pos], (m->n_users - pos) * sizeof *m->users);
    m->users[pos] = (tm_user_t){.name = copy, .me = strcmp(name, m->me) == 0};
    m->n_users++;
    rebuild_targets(m);   /* names moved: the borrowed pointers are still valid, order not */
    return &m->users[pos];
}

void tm_users(tm_t *m, const cw_user_t *users, size_t n, int complete)
{
    if (complete)
        for (size_t i = 0; i < m->n_users; i++)
            m->users[i].online = m->users[i].me;
    for (size_t i = 0; i < n; i++) {
        tm_user_t *u = user_get(m, users[i].name);
        if (u)
            u->online = users[i].online || u->me;
    }
    m->gen++;
}

void tm_presence(tm_t *m, const char *name, int online)
{
    tm_user_t *u = user_get(m, name);
    if (u)
        u->online = online || u->me;
    m->gen++;
}

size_t tm_n_users(const tm_t *m) { return m->n_users; }
const tm_user_t *tm_user(const tm_t *m, size_t i) { return i < m->n_users ? &m->users[i] : NULL; }

void tm_mark_read(tm_t *m, const char *name)
{
    long i = tm_find_user(m, name);
    if (i >= 0 && m->users[i].unread) {
        m->users[i].unread = 0;
        m->gen++;
    }
}

/* --- recipients ------------------------------------------------------------------ */

tm_mode_t tm_mode(const tm_t *m) { return m->mode; }

void tm_set_mode(tm_t *m, tm_mode_t mode)
{
    m->mode = mode;
    rebuild_targets(m);
}

void tm_choose(tm_t *m, const char *name)
{
    char *copy = xstrdup(name);
    if (!copy)
        return;
    free(m->one);
    m->one = copy;
    m->mode = TM_TO_ONE;
    tm_mark_read(m, name);
    rebuild_targets(m);
}

int tm_toggle(tm_t *m, const char *name)
{
    if (strcmp(name, m->me) == 0)
        return -1;
    tm_user_t *u = user_get(m, name);
    if (!u)
        return -1;
    u->selected = !u->selected;
    u->unread = 0;
    m->mode = TM_TO_SET;
    rebuild_targets(m);
    return 0;
}

int tm_recipients(const tm_t *m, const char ***names, size_t *n, int *broadcast,
                  const char **why)
{
    *names = m->targets;
    *n = m->n_targets;
    *broadcast = m->mode == TM_TO_ALL;
    if (*broadcast)
        return 0;
    if (m->n_targets)
        return 0;
    if (why)
        *why = m->mode == TM_TO_ONE ? "no recipient chosen (F4: the user list, /to NAME, F3: mode)"
                                    : "nobody in the set (F4, then Space toggles a user)";
    return -1;
}

char *tm_target_label(const tm_t *m, char *buf, size_t size)
{
    size_t len = 0;
    if (size == 0)
        return buf;
    buf[0] = '\0';
    if (m->mode == TM_TO_ALL) {
        snprintf(buf, size, "to everyone (1-to-all)");
        return buf;
    }
    if (!m->n_targets) {
        snprintf(buf, size, "to (nobody chosen) (%s)", m->mode == TM_TO_ONE ? "1-to-1" : "1-to-n");
        return buf;
    }
    len = (size_t) snprintf(buf, size, "to ");
    for (size_t i = 0; i < m->n_targets && len < size; i++)
        len += (size_t) snprintf(buf + len, size - len, "%s%s", i ? ", " : "", m->targets[i]);
    if (len < size)
        snprintf(buf + len, size - len, " (%s)", m->mode == TM_TO_ONE ? "1-to-1" : "1-to-n");
    return buf;
}

/* --- conversation ------------------------------------------------------------------- */

size_t tm_n_entries(const tm_t *m) { return m->n_entries; }

const tm_entry_t *tm_entry(const tm_t *m, size_t i)
{
    return i < m->n_entries ? &m->entries[(m->head + i) % TM_ENTRIES_MAX] : NULL;
}

uint64_t tm_generation(const tm_t *m) { return m->gen; }

/* A fresh entry at the end (the oldest dropped when full). */
static tm_entry_t *entry_add(tm_t *m)
{
    if (m->n_entries == TM_ENTRIES_MAX) {
        entry_free(&m->entries[m->head]);
        m->head = (m->head + 1) % TM_ENTRIES_MAX;
        m->n_entries--;
    }
    tm_entry_t *e = &m->entries[(m->head + m->n_entries) % TM_ENTRIES_MAX];
    memset(e, 0, sizeof *e);
    m->n_entries++;
    m->gen++;
    return e;
}

static tm_entry_t *entry_by_id(tm_t *m, uint64_t id)
{
    for (size_t i = m->n_entries; i-- > 0;) {
        tm_entry_t *e = &m->entries[(m->head + i) % TM_ENTRIES_MAX];
        if (e->kind == TM_OUT && e->id == id)
            return e;
    }
    return NULL;
}

static char **names_copy(const char *const *names, size_t n)
{
    char **out = calloc(n ? n : 1, sizeof *out);
    for (size_t i = 0; out && i < n; i++)
        out[i] = xstrdup(names[i]);
    return out;
}

void tm_add_in(tm_t *m, const cw_message_t *msg, int listing)
{
    tm_entry_t *e = entry_add(m);
    e->kind = TM_IN;
    e->from = xstrdup(msg->from);
    e->to = names_copy((const char *const *) msg->to, msg->n_to);
    e->n_to = e->to ? msg->n_to : 0;
    e->broadcast = msg->broadcast;
    e->text = xstrdup(msg->text);
    e->ts_us = msg->timestamp_us;
    e->durable = msg->durable;
    e->seq = msg->seq;
    e->listing = listing;
    e->expired = msg->expired;
    e->receipt_requested = msg->receipt_requested;
    e->message_id = xstrdup(msg->message_id);
    if (!listing) {
        long i = tm_find_user(m, msg->from);
        if (i < 0) {
            tm_presence(m, msg->from, 0);   /* a sender we had not heard of */
            i = tm_find_user(m, msg->from);
        }
        if (i >= 0 && !m->users[i].me)
            m->users[i].unread++;
    }
}

const tm_entry_t *tm_add_out(tm_t *m, uint64_t id, const char *const *to, size_t n_to,
                             int broadcast, const char *text, int durable, uint64_t now_us)
{
    tm_entry_t *e = entry_add(m);
    e->kind = TM_OUT;
    e->id = id;
    e->from = xstrdup(m->me);
    e->to = names_copy(to, n_to);
    e->n_to = e->to ? n_to : 0;
    e->broadcast = broadcast;
    e->text = xstrdup(text);
    e->ts_us = now_us;
    e->durable = durable;
    e->message_id = xstrdup("");
    e->pending = 1;
    for (size_t i = 0; i < n_to; i++)
        tm_mark_read(m, to[i]);
    return e;
}

static tm_fate_kind_t fate_kind(cw_status_t st)
{
    switch (st) {
    case CW_DELIVERED: return TM_FATE_DELIVERED;
    case CW_OFFLINE: return TM_FATE_OFFLINE;
    case CW_ACCEPTED: return TM_FATE_STORED;
    default: return TM_FATE_REFUSED;
    }
}

static void fates_free(tm_entry_t *e)
{
    for (size_t i = 0; i < e->n_fates; i++)
        free(e->fates[i].name);
    free(e->fates);
    e->fates = NULL;
    e->n_fates = 0;
}

int tm_send_result(tm_t *m, uint64_t id, cw_status_t st, const cw_reply_t *reply)
{
    tm_entry_t *e = entry_by_id(m, id);
    if (!e)
        return -1;
    e->pending = 0;
    e->status = st;
    if (reply && reply->message_id) {
        free(e->message_id);
        e->message_id = xstrdup(reply->message_id);
    }
    /* Receipts may have come before the reply (they cannot in practice, the
     * broker replies first, but nothing here depends on it). */
    tm_fate_t *old = e->fates;
    size_t n_old = e->n_fates;
    e->fates = NULL;
    e->n_fates = 0;
    int routed = st == CW_OK || st == CW_ACCEPTED || st == CW_QUEUE_FULL;
    if (routed && reply && reply->n_recipients) {
        e->fates = calloc(reply->n_recipients, sizeof *e->fates);
        for (size_t i = 0; e->fates && i < reply->n_recipients; i++) {
            tm_fate_t *f = &e->fates[e->n_fates++];
            f->name = xstrdup(reply->recipients[i].name);
            f->status = reply->recipients[i].status;
            f->kind = fate_kind(f->status);
            f->seq = reply->recipients[i].seq;
            for (size_t j = 0; j < n_old; j++)
                if (old[j].kind == TM_FATE_READ && strcmp(old[j].name, f->name) == 0) {
                    f->kind = TM_FATE_READ;
                    f->at_us = old[j].at_us;
                }
        }
    }
    for (size_t j = 0; j < n_old; j++)
        free(old[j].name);
    free(old);
    e->failed = !routed;
    m->gen++;
    return 0;
}

int tm_receipt(tm_t *m, const char *message_id, const char *recipient, uint64_t at_us)
{
    if (!message_id || !*message_id)
        return -1;
    for (size_t i = m->n_entries; i-- > 0;) {
        tm_entry_t *e = &m->entries[(m->head + i) % TM_ENTRIES_MAX];
        if (e->kind != TM_OUT || strcmp(e->message_id, message_id) != 0)
            continue;
        for (size_t j = 0; j < e->n_fates; j++)
            if (strcmp(e->fates[j].name, recipient) == 0) {
                e->fates[j].kind = TM_FATE_READ;
                e->fates[j].at_us = at_us;
                m->gen++;
                return 0;
            }
        tm_fate_t *f = realloc(e->fates, (e->n_fates + 1) * sizeof *f);
        if (!f)
            return -1;
        e->fates = f;
        e->fates[e->n_fates++] =
            (tm_fate_t){.name = xstrdup(recipient), .kind = TM_FATE_READ,
                        .status = CW_ACCEPTED, .at_us = at_us};
        m->gen++;
        return 0;
    }
    return -1;
}

const tm_entry_t *tm_last_failed(const tm_t *m)
{
    for (size_t i = m->n_entries; i-- > 0;) {
        const tm_entry_t *e = &m->entries[(m->head + i) % TM_ENTRIES_MAX];
        if (e->kind == TM_OUT && e->failed && !e->pending)
            return e;
    }
    return NULL;
}

int tm_resend(tm_t *m, uint64_t id, uint64_t new_id)
{
    tm_entry_t *e = entry_by_id(m, id);
    if (!e)
        return -1;
    e->id = new_id;
    e->pending = 1;
    e->failed = 0;
    e->status = CW_OK;
    fates_free(e);
    m->gen++;
    return 0;
}

void tm_note(tm_t *m, tm_kind_t kind, uint64_t now_us, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tm_entry_t *e = entry_add(m);
    e->kind = kind == TM_ERROR ? TM_ERROR : TM_NOTE;
    e->text = xstrdup(buf);
    e->ts_us = now_us;
    e->message_id = xstrdup("");
}

const char *tm_fate_word(const tm_fate_t *f, char *buf, size_t size,
                         void (*fmt_time)(uint64_t us, char *buf, size_t size))
{
    char t[32] = "";
    switch (f->kind) {
    case TM_FATE_SENDING: snprintf(buf, size, "sending"); break;
    case TM_FATE_DELIVERED: snprintf(buf, size, "delivered"); break;
    case TM_FATE_OFFLINE: snprintf(buf, size, "offline"); break;
    case TM_FATE_STORED: snprintf(buf, size, "stored #%llu", (unsigned long long) f->seq); break;
    case TM_FATE_READ:
        if (fmt_time)
            fmt_time(f->at_us, t, sizeof t);
        snprintf(buf, size, "read%s%s", *t ? " " : "", t);
        break;
    default: snprintf(buf, size, "%s", cw_status_name(f->status)); break;
    }
    return buf;
}

/* --- clock --------------------------------------------------------------------------- */

void tm_clock(tm_t *m, const cw_clock_item_t *items, size_t n)
{
    cw_clock_item_t *c = calloc(n ? n : 1, sizeof *c);
    int *changed = calloc(n ? n : 1, sizeof *changed);
    if (!c || !changed) {
        free(c);
        free(changed);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        c[i].node = xstrdup(items[i].node);
        c[i].counter = items[i].counter;
        changed[i] = 1;
        for (size_t j = 0; j < m->n_clock; j++)
            if (strcmp(m->clock[j].node, items[i].node) == 0)
                changed[i] = m->clock[j].counter != items[i].counter;
    }
    clock_free(m);
    m->clock = c;
    m->changed = changed;
    m->n_clock = n;
    m->gen++;
}

size_t tm_n_clock(const tm_t *m) { return m->n_clock; }

const char *tm_clock_entry(const tm_t *m, size_t i, uint64_t *counter, int *changed)
{
    if (i >= m->n_clock)
        return NULL;
    if (counter)
        *counter = m->clock[i].counter;
    if (changed)
        *changed = m->changed[i];
    return m->clock[i].node;
}

/* --- exchange log ------------------------------------------------------------------------ */

void tm_xlog(tm_t *m, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *line = xstrdup(buf);
    if (!line)
        return;
    if (m->n_xlog == TM_XLOG_MAX) {
        free(m->xlog[m->xhead]);
        m->xhead = (m->xhead + 1) % TM_XLOG_MAX;
        m->n_xlog--;
    }
    m->xlog[(m->xhead + m->n_xlog++) % TM_XLOG_MAX] = line;
    m->gen++;
}

size_t tm_n_xlog(const tm_t *m) { return m->n_xlog; }

const char *tm_xlog_line(const tm_t *m, size_t i)
{
    return i < m->n_xlog ? m->xlog[(m->xhead + i) % TM_XLOG_MAX] : NULL;
}

/* --- rendering -------------------------------------------------------------------------- */

/* Decodes one well-formed UTF-8 sequence of length len (from cw_utf8_seq_len). */
static wchar_t utf8_decode(const unsigned char *p, size_t len)
{
    switch (len) {
    case 1: return p[0];
    case 2: return (wchar_t) (((p[0] & 0x1F) << 6) | (p[1] & 0x3F));
    case 3: return (wchar_t) (((p[0] & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F));
    default:
        return (wchar_t) (((p[0] & 0x07) << 18) | ((p[1] & 0x3F) << 12) | ((p[2] & 0x3F) << 6) |
                          (p[3] & 0x3F));
    }
}

static size_t utf8_encode(wchar_t wc, char *out)
{
    unsigned long c = (unsigned long) wc;
    if (c < 0x80) {
        out[0] = (char) c;
        return 1;
    }
    if (c < 0x800) {
        out[0] = (char) (0xC0 | (c >> 6));
        out[1] = (char) (0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char) (0xE0 | (c >> 12));
        out[1] = (char) (0x80 | ((c >> 6) & 0x3F));
        out[2] = (char) (0x80 | (c & 0x3F));
        return 3;
    }
    out[0] = (char) (0xF0 | (c >> 18));
    out[1] = (char) (0x80 | ((c >> 12) & 0x3F));
    out[2] = (char) (0x80 | ((c >> 6) & 0x3F));
    out[3] = (char) (0x80 | (c & 0x3F));
    return 4;
}

/* The character shown for c (which came from untrusted text). */
static wchar_t safe_char(wchar_t c)
{
    if (c < 0x20)
        return (wchar_t) (0x2400 + c);           /* control pictures: ␊ ␉ ␛ ... */
    if (c == 0x7F)
        return 0x2421;                           /* ␡ */
    if ((c >= 0x80 && c < 0xA0) || c == 0x2028 || c == 0x2029 ||
        (c >= 0x202A && c <= 0x202E) || (c >= 0x2066 && c <= 0x2069) || c == 0x200E ||
        c == 0x200F || c == 0x061C || c == 0xFEFF)
        return 0xFFFD;
    if (c == 0x0A)
        return 0x2424;
    if (wcwidth(c) < 0)
        return 0xFFFD;                           /* unassigned, non-printable */
    return c;
}

size_t tm_render(const char *utf8, wchar_t *out, size_t cap)
{
    size_t n = 0;
    if (cap == 0)
        return 0;
    /* The project's one rule for untrusted text (common/cw_render.h), on
     * one line: LF as \n, ESC as ^[, C1, bidi and separators as <U+XXXX>,
     * bad bytes as U+FFFD. safe_char below then only guards what is left. */
    const char *in = utf8 ? utf8 : "";
    char *rendered = cw_render_text(in, strlen(in), 0, 0, NULL, CW_RENDER_ONELINE);
    const unsigned char *p = (const unsigned char *) (rendered ? rendered : "\xef\xbf\xbd");
    while (*p && n + 1 < cap) {
        size_t len = cw_utf8_seq_len((const char *) p);
        wchar_t c;
        if (len == 0) {
            c = 0xFFFD;
            len = 1;
        } else {
            c = *p == '\n' ? 0x2424 : safe_char(utf8_decode(p, len));
        }
        if (n == 0 && wcwidth(c) == 0 && n + 2 < cap)
            out[n++] = 0x25CC;                   /* ◌: a mark needs a base of its own */
        out[n++] = c;
        p += len;
    }
    out[n] = L'\0';
    free(rendered);
    return n;
}

static int char_width(wchar_t c)
{
    int w = wcwidth(c);
    return w < 0 ? 1 : w;
}

int tm_width(const wchar_t *s, size_t n)
{
    int w = 0;
    for (size_t i = 0; i < n && s[i]; i++)
        w += char_width(s[i]);
    return w;
}

size_t tm_wrap(const wchar_t *s, int width, size_t *ends, size_t max_rows)
{
    size_t rows = 0, i = 0, len = wcslen(s);
    if (width < 2)
        width = 2;
    if (max_rows == 0)
        return 0;
    while (rows < max_rows) {
        int col = 0;
        size_t start = i;
        while (i < len) {
            int w = char_width(s[i]);
            if (col + w > width && i > start)
                break;
            col += w;
            i++;
            while (i < len && wcwidth(s[i]) == 0)
                i++;   /* marks stay with their base */
        }
        ends[rows++] = i;
        if (i >= len)
            break;
    }
    return rows;
}

/* --- input line ------------------------------------------------------------------------------ */

struct tm_line {
    wchar_t buf[TM_LINE_MAX + 1];
    size_t len, cur;
    size_t first;                 /* first character shown (tm_line_view) */
    char *hist[TM_HISTORY_MAX];   /* oldest first, UTF-8 */
    size_t n_hist;
    size_t hpos;                  /* == n_hist: the line being typed */
    char *typed;                  /* the line being typed while walking history */
};

tm_line_t *tm_line_new(void)
{
    return calloc(1, sizeof(tm_line_t));
}

void tm_line_destroy(tm_line_t **p)
{
    if (!p || !*p)
        return;
    for (size_t i = 0; i < (*p)->n_hist; i++)
        free((*p)->hist[i]);
    free((*p)->typed);
    free(*p);
    *p = NULL;
}

int tm_line_insert(tm_line_t *l, wchar_t c)
{
    if (l->len >= TM_LINE_MAX || c < 0x20 || c == 0x7F || (c >= 0x80 && c < 0xA0))
        return -1;
    memmove(&l->buf[l->cur + 1], &l->buf[l->cur], (l->len - l->cur) * sizeof(wchar_t));
    l->buf[l->cur++] = c;
    l->len++;
    l->buf[l->len] = L'\0';
    return 0;
}

static int is_mark(wchar_t c) { return c && wcwidth(c) == 0; }

/* Start of the character cluster before position i. */
static size_t cluster_prev(const tm_line_t *l, size_t i)
{
    while (i > 0 && is_mark(l->buf[i - 1]))
        i--;
    return i > 0 ? i - 1 : 0;
}

static size_t cluster_next(const tm_line_t *l, size_t i)
{
    if (i < l->len)
        i++;
    while (i < l->len && is_mark(l->buf[i]))
        i++;
    return i;
}

static void cut(tm_line_t *l, size_t from, size_t to)
{
    memmove(&l->buf[from], &l->buf[to], (l->len - to) * sizeof(wchar_t));
    l->len -= to - from;
    l->buf[l->len] = L'\0';
    if (l->cur > to)
        l->cur -= to - from;
    else if (l->cur > from)
        l->cur = from;
}

void tm_line_left(tm_line_t *l) { l->cur = l->cur ? cluster_prev(l, l->cur) : 0; }
void tm_line_right(tm_line_t *l) { l->cur = cluster_next(l, l->cur); }
void tm_line_home(tm_line_t *l) { l->cur = 0; }
void tm_line_end(tm_line_t *l) { l->cur = l->len; }

void tm_line_backspace(tm_line_t *l)
{
    if (l->cur)
        cut(l, cluster_prev(l, l->cur), l->cur);
}

void tm_line_delete(tm_line_t *l)
{
    if (l->cur < l->len)
        cut(l, l->cur, cluster_next(l, l->cur));
}

void tm_line_kill_end(tm_line_t *l) { cut(l, l->cur, l->len); }
void tm_line_kill_start(tm_line_t *l) { cut(l, 0, l->cur); }

void tm_line_kill_word(tm_line_t *l)
{
    size_t i = l->cur;
    while (i > 0 && iswspace((wint_t) l->buf[i - 1]))
        i--;
    while (i > 0 && !iswspace((wint_t) l->buf[i - 1]))
        i--;
    cut(l, i, l->cur);
}

const wchar_t *tm_line_text(const tm_line_t *l, size_t *len, size_t *cursor)
{
    if (len)
        *len = l->len;
    if (cursor)
        *cursor = l->cur;
    return l->buf;
}

static char *wide_to_utf8(const wchar_t *s, size_t n)
{
    char *out = malloc(n * 4 + 1), *p = out;
    for (size_t i = 0; out && i < n; i++)
        p += utf8_encode(s[i], p);
    if (out)
        *p = '\0';
    return out;
}

char *tm_line_utf8(const tm_line_t *l) { return wide_to_utf8(l->buf, l->len); }

void tm_line_set(tm_line_t *l, const char *utf8)
{
    l->len = l->cur = 0;
    const unsigned char *p = (const unsigned char *) (utf8 ? utf8 : "");
    while (*p && l->len < TM_LINE_MAX) {
        size_t len = cw_utf8_seq_len((const char *) p);
        if (len == 0) {
            p++;
            continue;
        }
        wchar_t c = utf8_decode(p, len);
        if (c >= 0x20 && c != 0x7F)
            l->buf[l->len++] = c;
        p += len;
    }
    l->buf[l->len] = L'\0';
    l->cur = l->len;
    l->first = 0;
}

void tm_line_view(tm_line_t *l, int width, size_t *first, int *cursor_col)
{
    if (width < 2)
        width = 2;
    if (l->first > l->cur)
        l->first = l->cur;
    /* Move the window right until the cursor (and a cell for it) fits. */
    while (tm_width(&l->buf[l->first], l->cur - l->first) + 1 > width && l->first < l->cur)
        l->first = cluster_next(l, l->first);
    /* Use free space on the right to show more on the left. */
    while (l->first > 0) {
        size_t prev = cluster_prev(l, l->first);
        if (tm_width(&l->buf[prev], l->len - prev) + 1 > width)
            break;
        l->first = prev;
    }
    *first = l->first;
    *cursor_col = tm_width(&l->buf[l->first], l->cur - l->first);
}

void tm_line_submit(tm_line_t *l)
{
    char *s = tm_line_utf8(l);
    free(l->typed);
    l->typed = NULL;
    if (s && *s && (l->n_hist == 0 || strcmp(l->hist[l->n_hist - 1], s) != 0)) {
        if (l->n_hist == TM_HISTORY_MAX) {
            free(l->hist[0]);
            memmove(&l->hist[0], &l->hist[1], (TM_HISTORY_MAX - 1) * sizeof l->hist[0]);
            l->n_hist--;
        }
        l->hist[l->n_hist++] = s;
    } else {
        free(s);
    }
    l->hpos = l->n_hist;
    l->len = l->cur = l->first = 0;
    l->buf[0] = L'\0';
}

void tm_line_prev(tm_line_t *l)
{
    if (l->hpos == 0)
        return;
    if (l->hpos == l->n_hist) {
        free(l->typed);
        l->typed = tm_line_utf8(l);
    }
    l->hpos--;
    tm_line_set(l, l->hist[l->hpos]);
}

void tm_line_next(tm_line_t *l)
{
    if (l->hpos >= l->n_hist)
        return;
    l->hpos++;
    tm_line_set(l, l->hpos == l->n_hist ? l->typed : l->hist[l->hpos]);
}

size_t tm_complete(const tm_t *m, tm_line_t *l, char *buf, size_t size)
{
    size_t start = l->cur;
    while (start > 0 && !iswspace((wint_t) l->buf[start - 1]) && l->buf[start - 1] != L',')
        start--;
    char *prefix = wide_to_utf8(&l->buf[start], l->cur - start);
    if (!prefix)
        return 0;
    size_t plen = strlen(prefix), n = 0, len = 0;
    const char *first = NULL;
    size_t common = 0;
    if (size)
        buf[0] = '\0';
    for (size_t i = 0; i < m->n_users; i++) {
        const char *name = m->users[i].name;
        if (m->users[i].me || strncmp(name, prefix, plen) != 0)
            continue;
        if (!first) {
            first = name;
            common = strlen(name);
        } else {
            size_t k = 0;
            while (k < common && name[k] == first[k])
                k++;
            common = k;
        }
        if (len < size)
            len += (size_t) snprintf(buf + len, size - len, "%s%s", n ? ", " : "", name);
        n++;
    }
    if (n >= 1 && common >= plen) {
        /* Names are ASCII ([A-Za-z0-9_.-]): one byte, one character. */
        for (size_t k = plen; k < common; k++)
            tm_line_insert(l, (wchar_t) (unsigned char) first[k]);
        if (n == 1 && (l->cur == l->len || l->buf[l->cur] != L' '))
            tm_line_insert(l, L' ');
    }
    free(prefix);
    return n;
}
