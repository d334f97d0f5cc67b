/*  cw_util: small helpers shared by every program: clocks, name rules.
 *  Thread-safe: pure functions. */
#ifndef CW_UTIL_H
#define CW_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall-clock time, microseconds since the Unix epoch. */
uint64_t cw_now_us(void);
/* Monotonic time in milliseconds (for timers and timeouts). */
int64_t cw_mono_ms(void);
/* Monotonic time in microseconds (for durations). */
int64_t cw_mono_us(void);

/* Longest user name any build accepts; the broker's limit may be lower. */
#define CW_NAME_MAX_HARD 64

/* Checks a user name: 1..max_len bytes of [A-Za-z0-9_.-], starting with a
 * letter or digit, and not a reserved word (all, everyone, broker, server,
 * system, admin, causeway; compared case-insensitively).
 * Returns CW_OK or CW_BAD_NAME; on CW_BAD_NAME, *why (if not NULL) points at
 * a static explanation. */
int cw_name_check(const char *name, size_t max_len, const char **why);

/* Formats an error message into err (size bytes, always NUL-terminated,
 * truncated if needed). Does nothing if err is NULL or size is 0. */
void cw_set_err(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Length (1..4) of the well-formed UTF-8 sequence starting at p, or 0 if
 * the bytes there are not one (overlong, surrogate, above U+10FFFF,
 * truncated). Reads at most 4 bytes and stops at a NUL, so p may be any
 * position in a NUL-terminated string. */
size_t cw_utf8_seq_len(const char *p);

/* True if the len bytes at s are well-formed UTF-8 (no overlongs, no
 * surrogates, nothing above U+10FFFF). */
int cw_utf8_valid(const char *s, size_t len);

/* True if name is acceptable as a process or clock node name in a
 * causeway-clockd trace (docs/CLOCKD.md, "Events"): 1 to CW_NAME_MAX_HARD
 * bytes of valid UTF-8 with no code point that is Unicode White_Space or of
 * general category Cc or Cf (U+00A0, U+0085, U+2028, U+3000, U+FEFF, ...),
 * and none of  " \\ , | %  . Wider than the broker's user-name rule, so that
 * traces of other programs load too; narrow enough to need no quoting in
 * event ids, ShiViz logs and SVG ids. The one copy of the rule: clockd checks
 * traces with it, libcauseway's tracer the names it writes. */
int cw_trace_name_ok(const char *name);

/* Broker endpoint lists ("tcp://A:7400,tcp://B:7400"; PROTOCOL.md §13.14):
 * libcauseway's cw_client_new, the CLI's --endpoint and $CAUSEWAY_ENDPOINT
 * take one endpoint or several separated by commas. */
#define CW_ENDPOINTS_MAX 16      /* endpoints in one list, at most */
#define CW_ENDPOINT_LEN_MAX 256  /* bytes of one endpoint, at most */

/* 0 if ep looks like a ZeroMQ endpoint a client can connect to (a known
 * transport; tcp:// needs HOST:PORT with a port from 1 to 65535; the others
 * a non-empty address; at most CW_ENDPOINT_LEN_MAX bytes). Else 1 and why
 * (size bytes) says what is wrong, naming it `what` (e.g. "--endpoint").
 * libzmq has the last word on what passes here. */
int cw_endpoint_problem(const char *what, const char *ep, char *why, size_t size);

/* Splits a comma-separated endpoint list. Blanks (spaces, tabs) around an
 * element are ignored. Refused, with why (naming the list `what`) and
 * errno EINVAL: an empty list or element ("a,,b", a trailing comma), a
 * malformed element (cw_endpoint_problem), the same endpoint twice, more
 * than CW_ENDPOINTS_MAX. Returns the number of endpoints and *out an array
 * of that many strings (caller frees with cw_endpoint_list_free); on
 * failure 0 and *out NULL (errno ENOMEM when out of memory). */
size_t cw_endpoint_list_parse(const char *what, const char *list, char ***out, char *why,
                              size_t size);
/* Frees a list from cw_endpoint_list_parse; NULLs *list. Safe on NULL. */
void cw_endpoint_list_free(char ***list, size_t n);

#endif
