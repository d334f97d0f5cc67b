/*  json: a small, strict JSON parser (RFC 8259) and the writer helpers of
 *  causeway-clockd.
 *
 *  What it owns. A parsed document is a tree of cw_json_t nodes owned by the
 *  root; cw_json_destroy frees the whole tree. Every string in the tree is
 *  NUL-terminated, valid UTF-8 and holds no NUL byte (a "\u0000" escape is
 *  refused), so callers can use it as a C string.
 *
 *  Why our own. The JSON-lines trace format (docs/CLOCKD.md) is flat: one
 *  object per line with strings, integers, one array and one or two small
 *  objects. A 400-line parser keeps the dependency list at Debian's libzmq,
 *  CZMQ, protobuf-c and SQLite. It is still a complete JSON parser, so any
 *  conforming writer (Python's json, jq, JavaScript) can produce traces.
 *
 *  Limits. Nesting deeper than CW_JSON_MAX_DEPTH is refused; documents are
 *  parsed from memory, at most SIZE_MAX/2 bytes. Numbers keep their exact
 *  value when they are non-negative integers that fit in 64 bits; other
 *  numbers are kept as doubles. Duplicate keys in one object are refused.
 *
 *  Thread. No shared state: any thread may parse; a tree belongs to the
 *  thread that holds it.
 */
#ifndef CW_CLOCKD_JSON_H
#define CW_CLOCKD_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CW_JSON_MAX_DEPTH 32

typedef enum {
    CW_JSON_NULL = 0,
    CW_JSON_BOOL = 1,
    CW_JSON_NUMBER = 2,
    CW_JSON_STRING = 3,
    CW_JSON_ARRAY = 4,
    CW_JSON_OBJECT = 5,
} cw_json_type_t;

typedef struct cw_json cw_json_t;

/* Parses exactly one JSON value from text[0..len) (surrounding whitespace
 * allowed). Returns CW_OK and sets *out (caller frees with cw_json_destroy).
 * On malformed input returns CW_BAD_REQUEST, *out is NULL, err holds a
 * message and *col (if not NULL) the 1-based byte column where parsing
 * stopped. CW_ERR_NOMEM if memory ran out (also with a message). */
int cw_json_parse(const char *text, size_t len, cw_json_t **out, size_t *col,
                  char *err, size_t errlen);

/* Frees a tree and NULLs *p; safe on NULL and twice. Only for roots. */
void cw_json_destroy(cw_json_t **p);

/* The node's type; a NULL node is reported as CW_JSON_NULL. */
cw_json_type_t cw_json_type(const cw_json_t *v);
/* "null", "boolean", "number", "string", "array", "object". Never NULL. */
const char *cw_json_type_name(cw_json_type_t t);

/* Member `key` of an object; NULL if v is not an object or has no such key. */
const cw_json_t *cw_json_get(const cw_json_t *v, const char *key);
/* Elements of an array or members of an object; 0 for anything else. */
size_t cw_json_len(const cw_json_t *v);
/* Element i of an array or the value of member i of an object (in document
 * order); NULL if out of range or not a container. */
const cw_json_t *cw_json_at(const cw_json_t *v, size_t i);
/* Key of member i of an object; NULL if out of range or not an object. */
const char *cw_json_key_at(const cw_json_t *v, size_t i);

/* The string of a string node (length in *len if not NULL); NULL if v is
 * not a string. */
const char *cw_json_str(const cw_json_t *v, size_t *len);
/* 1 for true, 0 for false; -1 if v is not a boolean. */
int cw_json_bool(const cw_json_t *v);
/* The exact value of a non-negative integer literal (no fraction, no
 * exponent, fits in 64 bits): CW_OK. Anything else: CW_BAD_REQUEST and
 * *out untouched. */
int cw_json_uint(const cw_json_t *v, uint64_t *out);

/* Writes s as a quoted JSON string: '"', '\\' and control characters are
 * escaped, valid UTF-8 is copied, and each byte of an invalid UTF-8
 * sequence becomes U+FFFD (so the output is always valid JSON). NULL
 * writes "". */
void cw_json_put_string(FILE *f, const char *s);

/* Copies at most max bytes of s into buf (size > max) for an error
 * message: cut at a character boundary, control characters and bytes of
 * invalid UTF-8 replaced by '?', "..." appended if cut. Returns buf. */
char *cw_json_excerpt(const char *s, size_t max, char *buf, size_t size);

#endif
