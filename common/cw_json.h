/*  cw_json: the one JSON string escaper of causeway (RFC 8259). Used by
 *  the JSON log format (cw_log), the CLI's --json output, the client's
 *  causal trace, causeway-clockd's exports and causeway-sim's verdict.
 *  Thread-safe: pure functions.
 *
 *  The escaped form: '"' and '\\' are backslash-escaped; \n, \r and \t use
 *  their short escapes; every other control character (below 0x20) and DEL
 *  is \u00XX (lower-case hex); valid UTF-8 is copied as it is; each byte of
 *  an invalid UTF-8 sequence becomes the escape \ufffd (U+FFFD). The output
 *  is therefore always valid JSON, and the same input always gives the
 *  same bytes (clockd compares trace lines).
 */
#ifndef CW_JSON_H
#define CW_JSON_H

#include <stddef.h>
#include <stdio.h>

/* Writes the len bytes of s (may hold no NUL: a NUL ends it), quoted and
 * escaped, into out (cap bytes, NUL-terminated if cap > 0, cut if too
 * small). Returns the length the whole quoted string needs, without the
 * NUL (like snprintf), so a caller may size a buffer with a first call of
 * cap 0. s NULL is "". */
size_t cw_json_escape(char *out, size_t cap, const char *s, size_t len);

/* The same written to f. */
void cw_json_fput(FILE *f, const char *s);

#endif
