/*  cw_log: leveled, timestamped logging to stderr.
 *
 *  One global level and format, set once at start-up (cw_log_set_level,
 *  cw_log_set_format) before threads start; cw_log itself is safe from any
 *  thread (one locked write per line).
 *
 *  Formats (docs/OPERATIONS.md, "Logs"):
 *    text  2026-12-02T06:25:25.457Z INFO  broker: message [key=value ...]
 *          (control characters replaced by '?'); the default.
 *    json  one object per line with the stable keys, in this order:
 *          {"ts":"2026-12-02T06:25:25.457Z","level":"info",
 *           "component":"broker","msg":"...", then the event's fields}
 *          (strings escaped by cw_json; field values are strings).
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

typedef enum { CW_LOG_TEXT = 0, CW_LOG_JSON = 1 } cw_log_format_t;

/* Parse "text|json"; returns -1 if unknown. */
int cw_log_format_parse(const char *s);
void cw_log_set_format(cw_log_format_t format);
cw_log_format_t cw_log_get_format(void);

void cw_log(cw_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A line with fields: msg, then NULL-terminated pairs of key and value
 * strings (keys [a-z_]+; a NULL value is written as ""). JSON: extra
 * members; text: " key=value" after the message. */
void cw_log_event(cw_log_level_t level, const char *msg, ...) __attribute__((sentinel));

#define cw_log_enabled(lvl) ((lvl) <= cw_log_get_level())
#define CW_ERROR(...) cw_log(CW_LOG_ERROR, __VA_ARGS__)
#define CW_WARN(...) cw_log(CW_LOG_WARN, __VA_ARGS__)
#define CW_INFO(...) cw_log(CW_LOG_INFO, __VA_ARGS__)
#define CW_DEBUG(...) \
    do { if (cw_log_enabled(CW_LOG_DEBUG)) cw_log(CW_LOG_DEBUG, __VA_ARGS__); } while (0)
#define CW_TRACE(...) \
    do { if (cw_log_enabled(CW_LOG_TRACE)) cw_log(CW_LOG_TRACE, __VA_ARGS__); } while (0)

#endif
