/*  cw_log: leveled, timestamped logging to stderr.
 *
 *  One global level, set once at start-up (cw_log_set_level) before threads
 *  start; cw_log itself is safe from any thread (one locked write per line).
 */
#ifndef CW_LOG_H
#define CW_LOG_H

typedef enum {
    CW_LOG_ERROR = 0,
    CW_LOG_WARN = 1,
    CW_LOG_INFO = 2,
    CW_LOG_DEBUG = 3,
    CW_LOG_TRACE = 4,
} cw_log_level_t;

void cw_log_set_level(cw_log_level_t level);
cw_log_level_t cw_log_get_level(void);

/* Parse "error|warn|info|debug|trace"; returns -1 if unknown. */
int cw_log_level_parse(const char *s);

/* Tag printed after the level on every line (e.g. "broker"); not copied,
 * must outlive the program's logging. */
void cw_log_set_tag(const char *tag);

void cw_log(cw_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define cw_log_enabled(lvl) ((lvl) <= cw_log_get_level())
#define CW_ERROR(...) cw_log(CW_LOG_ERROR, __VA_ARGS__)
#define CW_WARN(...) cw_log(CW_LOG_WARN, __VA_ARGS__)
#define CW_INFO(...) cw_log(CW_LOG_INFO, __VA_ARGS__)
#define CW_DEBUG(...) \
    do { if (cw_log_enabled(CW_LOG_DEBUG)) cw_log(CW_LOG_DEBUG, __VA_ARGS__); } while (0)
#define CW_TRACE(...) \
    do { if (cw_log_enabled(CW_LOG_TRACE)) cw_log(CW_LOG_TRACE, __VA_ARGS__); } while (0)

#endif
