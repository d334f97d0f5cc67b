/*  cw_log: see cw_log.h. */
#include "cw_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static cw_log_level_t g_level = CW_LOG_INFO;   /* lines above this are dropped */
static const char *g_tag = "causeway";           /* program tag */

static const char *level_names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

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

void cw_log(cw_log_level_t level, const char *fmt, ...)
{
    if (level > g_level)
        return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L, level_names[level], g_tag);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t) n < sizeof line)
        vsnprintf(line + n, sizeof line - (size_t) n, fmt, ap);
    va_end(ap);
    /* Client-supplied strings (agents, texts) end up here: a control
     * character could forge a line or drive the terminal. */
    for (char *c = line; *c; c++)
        if ((unsigned char) *c < 0x20 || *c == 0x7f)
            *c = '?';
    /* One write per line so lines from several threads never interleave. */
    flockfile(stderr);
    fputs(line, stderr);
    fputc('\n', stderr);
    funlockfile(stderr);
}
