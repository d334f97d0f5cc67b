/*  cw_render: see cw_render.h. Pure functions over a growable buffer. */
#define _XOPEN_SOURCE 700
#include "cw_render.h"

#include <langinfo.h>
#include <locale.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <wchar.h>

#define TAB_STOP 8

typedef struct {
    char *buf;        /* NUL-terminated output */
    size_t len, cap;
    int oom;          /* an allocation failed */
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    if (o->oom)
        return;
    if (o->len + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 64;
        while (cap < o->len + n + 1)
            cap *= 2;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->oom = 1;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    o->buf[o->len] = '\0';
}

/* Decodes the well-formed UTF-8 sequence at p (at most left bytes) into
 * *cp; returns its length, 0 if it is not one. */
static size_t decode(const unsigned char *p, size_t left, uint32_t *cp)
{
    unsigned c = p[0];
    size_t n;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        n = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return n;
}

/* Code points shown as <U+XXXX> whatever the locale says. */
static int always_escaped(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029 || cp == 0x061C ||
           cp == 0x200E || cp == 0x200F || (cp >= 0x202A && cp <= 0x202E) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

typedef struct {
    out_t o;
    int col;          /* display column of the next character */
    int width;        /* wrap before this column; 0: never */
    const char *cont; /* continuation prefix */
    int cont_w;
} ctx_t;

static void newline(ctx_t *x)
{
    put(&x->o, "\n", 1);
    put(&x->o, x->cont, strlen(x->cont));
    x->col = x->cont_w;
}

/* Emits n bytes that occupy w columns, wrapping first if they would reach
 * the last column (a terminal wraps there by itself). */
static void emit(ctx_t *x, const char *s, size_t n, int w)
{
    if (x->width && w > 0 && x->col + w > x->width - 1 && x->col > x->cont_w)
        newline(x);
    put(&x->o, s, n);
    x->col += w;
}

static void emit_ascii(ctx_t *x, const char *s)
{
    emit(x, s, strlen(s), (int) strlen(s));
}

char *cw_render_text(const char *text, size_t len, int col, int width, const char *cont,
                     int flags)
{
    ctx_t x = {{0}, col, width, cont ? cont : "  | ", 0};
    x.cont_w = (int) strlen(x.cont);
    if (x.width && x.width < x.cont_w + 8)
        x.width = 0; /* too narrow to wrap usefully */
    put(&x.o, "", 0);
    const unsigned char *p = (const unsigned char *) (text ? text : "");
    size_t i = 0;
    while (i < len && !x.o.oom) {
        unsigned c = p[i];
        char esc[16];
        if (c == '\n' || c == '\r' || c == '\t') {
            if (flags & CW_RENDER_ONELINE) {
                emit_ascii(&x, c == '\n' ? "\\n" : c == '\r' ? "\\r" : "\\t");
            } else if (c == '\n') {
                newline(&x);
            } else if (c == '\r') {
                emit_ascii(&x, "^M");
            } else {
                int n = TAB_STOP - (x.col % TAB_STOP);
                for (int k = 0; k < n; k++)
                    emit(&x, " ", 1, 1);
            }
            i++;
            continue;
        }
        if (c < 0x20 || c == 0x7F) {
            snprintf(esc, sizeof esc, "^%c", c == 0x7F ? '?' : (char) (c + '@'));
            emit_ascii(&x, esc);
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = decode(p + i, len - i, &cp);
        if (n == 0) {
            emit(&x, "\xEF\xBF\xBD", 3, 1); /* U+FFFD */
            i++;
            continue;
        }
        int w = n == 1 ? 1 : wcwidth((wchar_t) cp);
        if (always_escaped(cp) || w < 0) {
            snprintf(esc, sizeof esc, "<U+%04X>", (unsigned) cp);
            emit_ascii(&x, esc);
        } else {
            emit(&x, (const char *) p + i, n, w);
        }
        i += n;
    }
    if (x.o.oom) {
        free(x.o.buf);
        return NULL;
    }
    return x.o.buf;
}

int cw_render_width(const char *s)
{
    char *r = cw_render_text(s, s ? strlen(s) : 0, 0, 0, "", CW_RENDER_ONELINE);
    if (!r)
        return (int) strlen(s ? s : "");
    int w = 0;
    const unsigned char *p = (const unsigned char *) r;
    size_t len = strlen(r), i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = decode(p + i, len - i, &cp);
        if (n == 0) {
            w++, i++;
            continue;
        }
        int cw = n == 1 ? 1 : wcwidth((wchar_t) cp);
        w += cw > 0 ? cw : 0;
        i += n;
    }
    free(r);
    return w;
}

int cw_render_term_width(int fd)
{
    struct winsize ws;
    if (!isatty(fd) || ioctl(fd, TIOCGWINSZ, &ws) != 0)
        return 0;
    return ws.ws_col;
}

static int ctype_is_utf8(void)
{
    const char *cs = nl_langinfo(CODESET);
    return cs && (strcasecmp(cs, "UTF-8") == 0 || strcasecmp(cs, "utf8") == 0);
}

int cw_render_locale(void)
{
    if (setlocale(LC_CTYPE, "") && ctype_is_utf8())
        return 1;
    if (setlocale(LC_CTYPE, "C.UTF-8") && ctype_is_utf8())
        return 1;
    return ctype_is_utf8();
}
