/*  cw_log: see cw_log.h. */
#include "cw_log.h"
#include "cw_json.h"

#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static cw_log_level_t g_level = CW_LOG_INFO;   /* lines above this are dropped */
static const char *g_tag = "causeway";           /* program tag */

static cw_log_format_t g_format = CW_LOG_TEXT;   /* text or JSON lines */

static const char *level_names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
static const char *level_lower[] = {"error", "warn", "info", "debug", "trace"};

int cw_log_format_parse(const char *s)
{
    if (strcmp(s, "text") == 0)
        return CW_LOG_TEXT;
    if (strcmp(s, "json") == 0)
        return CW_LOG_JSON;
    return -1;
}

void cw_log_set_format(cw_log_format_t format) { g_format = format; }
cw_log_format_t cw_log_get_format(void) { return g_format; }

void cw_log_set_level(cw_log_level_t level) { g_level = level; }
cw_log_level_t cw_log_get_level(void) { return g_level; }
void cw_log_set_tag(const char *tag) { g_tag = tag; }

int cw_log_level_parse(const char *s)
{
    static const char *lower[] = {"error", "warn", "info", "debug", "trace"};
    for (int i = 0; i < 5; i++)
        if (strcmp(s, lower[i]) == 0)
            return i;
    return -1;
}

/* "2026-12-02T06:25:25.457Z" into ts (at least 32 bytes). */
static void timestamp(char *ts, size_t size)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000L);
}

/* Appends the JSON string of s at line + *off (the caller sized line). */
static void add_json(char *line, size_t *off, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    *off += cw_json_escape(line + *off, cw_json_escape(NULL, 0, s, len) + 1, s, len);
}

static void add_raw(char *line, size_t *off, const char *s)
{
    size_t n = strlen(s);
    memcpy(line + *off, s, n + 1);
    *off += n;
}

#define MAX_FIELDS 16   /* key/value pairs per line; more are dropped */

/* Writes one line: msg and the NULL-terminated key/value pairs in
 * *fields (if any). Long lines are allocated, never cut (a JSON line must
 * stay an object). */
static void emit(cw_log_level_t level, const char *msg, va_list *fields)
{
    const char *kv[2 * MAX_FIELDS];
    size_t nkv = 0;
    for (const char *k; fields && (k = va_arg(*fields, const char *));) {
        const char *v = va_arg(*fields, const char *);
        if (nkv < 2 * MAX_FIELDS) {
            kv[nkv++] = k;
            kv[nkv++] = v ? v : "";
        }
    }
    char ts[64];
    timestamp(ts, sizeof ts);
    size_t need = 96 + strlen(ts) + strlen(g_tag) * 6 + strlen(msg) * 6;
    for (size_t i = 0; i < nkv; i++)
        need += strlen(kv[i]) * 6 + 4;
    char small[4096];
    char *line = need <= sizeof small ? small : malloc(need);
    if (!line)
        return; /* out of memory: the line is lost, nothing else is */
    size_t off = 0;
    line[0] = '\0';
    if (g_format == CW_LOG_JSON) {
        add_raw(line, &off, "{\"ts\":\"");
        add_raw(line, &off, ts);
        add_raw(line, &off, "\",\"level\":\"");
        add_raw(line, &off, level_lower[level]);
        add_raw(line, &off, "\",\"component\":");
        add_json(line, &off, g_tag);
        add_raw(line, &off, ",\"msg\":");
        add_json(line, &off, msg);
        for (size_t i = 0; i < nkv; i += 2) {
            add_raw(line, &off, ",");
            add_json(line, &off, kv[i]);
            add_raw(line, &off, ":");
            add_json(line, &off, kv[i + 1]);
        }
        add_raw(line, &off, "}");
    } else {
        add_raw(line, &off, ts);
        add_raw(line, &off, " ");
        add_raw(line, &off, level_names[level]);
        for (size_t pad = strlen(level_names[level]); pad < 5; pad++)
            add_raw(line, &off, " ");
        add_raw(line, &off, " ");
        add_raw(line, &off, g_tag);
        add_raw(line, &off, ": ");
        add_raw(line, &off, msg);
        for (size_t i = 0; i < nkv; i += 2) {
            add_raw(line, &off, " ");
            add_raw(line, &off, kv[i]);
            add_raw(line, &off, "=");
            add_raw(line, &off, kv[i + 1]);
        }
        /* Client-supplied strings (agents, texts) end up here: a control
         * character could forge a line or drive the terminal. */
        for (char *c = line; *c; c++)
            if ((unsigned char) *c < 0x20 || *c == 0x7f)
                *c = '?';
    }
    /* One write per line so lines from several threads never interleave. */
    flockfile(stderr);
    fputs(line, stderr);
    fputc('\n', stderr);
    funlockfile(stderr);
    if (line != small)
        free(line);
}

void cw_log(cw_log_level_t level, const char *fmt, ...)
{
    if (level > g_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(level, msg, NULL);
}

void cw_log_event(cw_log_level_t level, const char *msg, ...)
{
    if (level > g_level)
        return;
    va_list ap;
    va_start(ap, msg);
    emit(level, msg, &ap);
    va_end(ap);
}
