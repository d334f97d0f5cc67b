/*  json: see json.h.
 *
 *  A recursive-descent parser over a byte range. Invariants of a finished
 *  tree: every node's type matches the union member in use; object keys are
 *  unique; strings are valid UTF-8 without NUL. On any error the partial
 *  tree is freed before returning, so a failed parse leaks nothing.
 *
 *  Memory. One tree lives in an arena: nodes, strings and member arrays
 *  are cut from a few large chunks that the root owns and cw_json_destroy
 *  frees at once (a 200-entry clock is some 600 allocations otherwise,
 *  which dominated loading a trace). Only the root is ever destroyed (the
 *  accessors hand out const children), so nothing is freed piecemeal.
 */
#include "json.h"
#include "cw_json.h"
#include "cw_status.h"
#include "cw_util.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct chunk {
    struct chunk *next;        /* older chunk */
    size_t used, cap;          /* bytes of data */
    max_align_t data[];
} chunk_t;

struct cw_json {
    cw_json_type_t type;       /* which member below is in use */
    chunk_t *chunks;           /* root only: the arena of the whole tree */
    int boolean;               /* CW_JSON_BOOL: 0 or 1 */
    int is_uint;               /* CW_JSON_NUMBER: literal was a non-negative integer fitting u64 */
    uint64_t u;                /* CW_JSON_NUMBER with is_uint: exact value */
    double d;                  /* CW_JSON_NUMBER: value as a double (always set) */
    char *str;                 /* CW_JSON_STRING: NUL-terminated, owned */
    size_t str_len;            /* CW_JSON_STRING: bytes before the NUL */
    cw_json_t **items;         /* ARRAY elements / OBJECT member values, owned */
    char **keys;               /* OBJECT: member keys, owned, parallel to items */
    size_t n;                  /* ARRAY/OBJECT: items in use */
    size_t cap;                /* ARRAY/OBJECT: items allocated */
};

/* Parser state for one document. */
typedef struct {
    const char *s;             /* the text */
    size_t len;                /* its length */
    size_t pos;                /* next byte to read */
    int status;                /* CW_OK until the first error */
    char *err;                 /* caller's message buffer */
    size_t errlen;
    chunk_t *chunks;           /* the tree's arena, newest chunk first */
} parser_t;

static void fail(parser_t *p, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(parser_t *p, int status, const char *fmt, ...)
{
    if (p->status != CW_OK)
        return;            /* keep the first error */
    p->status = status;
    if (p->err && p->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err, p->errlen, fmt, ap);
        va_end(ap);
    }
}

static void chunks_free(chunk_t *c)
{
    while (c) {
        chunk_t *next = c->next;
        free(c);
        c = next;
    }
}

void cw_json_destroy(cw_json_t **p)
{
    if (!p || !*p)
        return;
    chunks_free((*p)->chunks);
    *p = NULL;
}

/* size bytes from the arena (aligned as malloc's), or NULL after fail(). */
static void *ar_alloc(parser_t *p, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
    chunk_t *c = p->chunks;
    if (!c || c->cap - c->used < size) {
        size_t cap = c ? c->cap * 2 : 8 * p->len + 1024;
        if (cap < size)
            cap = size;
        if (cap > ((size_t) 64 << 20) && size <= ((size_t) 64 << 20))
            cap = (size_t) 64 << 20;
        c = malloc(sizeof *c + cap);
        if (!c) {
            fail(p, CW_ERR_NOMEM, "out of memory");
            return NULL;
        }
        c->next = p->chunks;
        c->used = 0;
        c->cap = cap;
        p->chunks = c;
    }
    void *r = (char *) c->data + c->used;
    c->used += size;
    return r;
}

static cw_json_t *node_new(parser_t *p, cw_json_type_t t)
{
    cw_json_t *v = ar_alloc(p, sizeof *v);
    if (v) {
        memset(v, 0, sizeof *v);
        v->type = t;
    }
    return v;
}

/* Appends child (and key, for objects) to a container. */
static int node_append(parser_t *p, cw_json_t *v, char *key, cw_json_t *child)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        cw_json_t **items = ar_alloc(p, cap * sizeof *items);
        if (!items)
            return -1;
        if (v->n)
            memcpy(items, v->items, v->n * sizeof *items);
        v->items = items;
        if (v->type == CW_JSON_OBJECT) {
            char **keys = ar_alloc(p, cap * sizeof *keys);
            if (!keys)
                return -1;
            if (v->n)
                memcpy(keys, v->keys, v->n * sizeof *keys);
            v->keys = keys;
        }
        v->cap = cap;
    }
    v->items[v->n] = child;
    if (v->type == CW_JSON_OBJECT)
        v->keys[v->n] = key;
    v->n++;
    return 0;
}

static void skip_ws(parser_t *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

/* Describes the byte at the cursor for error messages. */
static const char *here(parser_t *p, char *buf, size_t size)
{
    if (p->pos >= p->len)
        return "end of line";
    unsigned char c = (unsigned char) p->s[p->pos];
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, size, "'%c'", c);
    else
        snprintf(buf, size, "byte 0x%02x", c);
    return buf;
}

static int match_word(parser_t *p, const char *w)
{
    size_t n = strlen(w);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, w, n) == 0) {
        p->pos += n;
        return 1;
    }
    return 0;
}

static int hex4(parser_t *p, unsigned *out)
{
    if (p->len - p->pos < 4) {
        fail(p, CW_BAD_REQUEST, "truncated \\u escape");
        return -1;
    }
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + (size_t) i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned) (c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned) (c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned) (c - 'A' + 10);
        else {
            p->pos += (size_t) i;
            fail(p, CW_BAD_REQUEST, "bad hex digit in \\u escape");
            return -1;
        }
    }
    p->pos += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char) cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char) (0xC0 | (cp >> 6));
        o[1] = (char) (0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char) (0xE0 | (cp >> 12));
        o[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char) (0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char) (0xF0 | (cp >> 18));
    o[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char) (0x80 | (cp & 0x3F));
    return 4;
}

/* Parses a string at the cursor (which is on '"'); returns a copy in the arena
 * (length in *len) or NULL after fail(). Decoded output is never longer than
 * the escaped input, so one buffer of the raw length suffices. */
static char *parse_string(parser_t *p, size_t *len)
{
    size_t start = ++p->pos;
    size_t end = start;
    while (end < p->len && p->s[end] != '"') {
        if (p->s[end] == '\\')
            end++;
        end++;
    }
    if (end >= p->len) {
        p->pos = p->len;
        fail(p, CW_BAD_REQUEST, "unterminated string");
        return NULL;
    }
    char *out = ar_alloc(p, end - start + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    while (p->pos < end) {
        unsigned char c = (unsigned char) p->s[p->pos];
        if (c < 0x20) {
            fail(p, CW_BAD_REQUEST, "control character 0x%02x in string (escape it)", c);
            goto bad;
        }
        if (c != '\\') {
            out[o++] = (char) c;
            p->pos++;
            continue;
        }
        p->pos++;
        char e = p->s[p->pos++];
        switch (e) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case '/': out[o++] = '/'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned cp;
            if (hex4(p, &cp) < 0)
                goto bad;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (!(p->pos + 1 < end && p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u')) {
                    fail(p, CW_BAD_REQUEST, "unpaired UTF-16 surrogate in \\u escape");
                    goto bad;
                }
                p->pos += 2;
                if (hex4(p, &lo) < 0)
                    goto bad;
                if (lo < 0xDC00 || lo > 0xDFFF) {
                    fail(p, CW_BAD_REQUEST, "unpaired UTF-16 surrogate in \\u escape");
                    goto bad;
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(p, CW_BAD_REQUEST, "unpaired UTF-16 surrogate in \\u escape");
                goto bad;
            } else if (cp == 0) {
                fail(p, CW_BAD_REQUEST, "\\u0000 (NUL) is not allowed in strings");
                goto bad;
            }
            o += put_utf8(out + o, cp);
            break;
        }
        default:
            p->pos--;
            fail(p, CW_BAD_REQUEST, "bad escape '\\%c' in string", e >= 0x20 && e < 0x7f ? e : '?');
            goto bad;
        }
    }
    out[o] = '\0';
    p->pos = end + 1;
    if (!cw_utf8_valid(out, o)) {
        p->pos = start;
        fail(p, CW_BAD_REQUEST, "string is not valid UTF-8");
        goto bad;
    }
    *len = o;
    return out;
bad:
    return NULL;
}

static cw_json_t *parse_number(parser_t *p)
{
    size_t start = p->pos;
    int neg = 0, frac = 0, expo = 0;
    if (p->s[p->pos] == '-') {
        neg = 1;
        p->pos++;
    }
    if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
        fail(p, CW_BAD_REQUEST, "bad number: digit expected");
        return NULL;
    }
    if (p->s[p->pos] == '0') {
        p->pos++;
        if (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9') {
            fail(p, CW_BAD_REQUEST, "bad number: leading zero");
            return NULL;
        }
    } else {
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    }
    if (p->pos < p->len && p->s[p->pos] == '.') {
        frac = 1;
        p->pos++;
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
            fail(p, CW_BAD_REQUEST, "bad number: digit expected after '.'");
            return NULL;
        }
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    }
    if (p->pos < p->len && (p->s[p->pos] == 'e' || p->s[p->pos] == 'E')) {
        expo = 1;
        p->pos++;
        if (p->pos < p->len && (p->s[p->pos] == '+' || p->s[p->pos] == '-'))
            p->pos++;
        if (p->pos >= p->len || p->s[p->pos] < '0' || p->s[p->pos] > '9') {
            fail(p, CW_BAD_REQUEST, "bad number: digit expected in exponent");
            return NULL;
        }
        while (p->pos < p->len && p->s[p->pos] >= '0' && p->s[p->pos] <= '9')
            p->pos++;
    }
    char buf[64];
    size_t n = p->pos - start;
    cw_json_t *v = node_new(p, CW_JSON_NUMBER);
    if (!v)
        return NULL;
    if (!neg && !frac && !expo) {
        uint64_t u = 0;
        int ok = 1;
        for (size_t i = start; i < p->pos; i++) {
            unsigned dgt = (unsigned) (p->s[i] - '0');
            if (u > (UINT64_MAX - dgt) / 10) {
                ok = 0;
                break;
            }
            u = u * 10 + dgt;
        }
        v->is_uint = ok;
        v->u = ok ? u : 0;
    }
    if (v->is_uint) {
        v->d = (double) v->u;   /* rounds to nearest, as strtod would: no strtod for counters */
    } else if (n < sizeof buf) {
        memcpy(buf, p->s + start, n);
        buf[n] = '\0';
        v->d = strtod(buf, NULL);
    } else {
        v->d = neg ? -1e308 : 1e308;   /* absurdly long literal: magnitude only */
    }
    return v;
}

static cw_json_t *parse_value(parser_t *p, int depth);

/* Duplicate keys: objects up to KEYS_LINEAR members are checked by a scan,
 * larger ones (a 200-entry clock) through an open-addressing table of
 * member indexes + 1, so a key costs O(1) instead of O(members). */
#define KEYS_LINEAR 8

typedef struct {
    size_t *slots;   /* 0 = empty, else member index + 1; cap is a power of two */
    size_t cap;
} keyset_t;

static uint64_t key_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
        h ^= *c;
        h *= 1099511628211ull;
    }
    return h;
}

/* Index + 1 of a member of v named key, or 0. */
static size_t keyset_find(const keyset_t *ks, const cw_json_t *v, const char *key)
{
    if (!ks->cap) {
        for (size_t i = 0; i < v->n; i++)
            if (strcmp(v->keys[i], key) == 0)
                return i + 1;
        return 0;
    }
    for (size_t k = (size_t) key_hash(key) & (ks->cap - 1);; k = (k + 1) & (ks->cap - 1)) {
        size_t m = ks->slots[k];
        if (!m)
            return 0;
        if (strcmp(v->keys[m - 1], key) == 0)
            return m;
    }
}

/* Records member v->n - 1 (just appended); builds or grows the table when
 * the object gets large. 0 or -1 if out of memory. */
static int keyset_add(keyset_t *ks, const cw_json_t *v)
{
    if (v->n <= KEYS_LINEAR)
        return 0;
    if (!ks->cap || v->n * 2 > ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 4 * KEYS_LINEAR;
        size_t *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return -1;
        free(ks->slots);
        ks->slots = slots;
        ks->cap = cap;
        for (size_t i = 0; i < v->n; i++) {
            size_t k = (size_t) key_hash(v->keys[i]) & (cap - 1);
            while (slots[k])
                k = (k + 1) & (cap - 1);
            slots[k] = i + 1;
        }
        return 0;
    }
    size_t k = (size_t) key_hash(v->keys[v->n - 1]) & (ks->cap - 1);
    while (ks->slots[k])
        k = (k + 1) & (ks->cap - 1);
    ks->slots[k] = v->n;
    return 0;
}

static cw_json_t *parse_container(parser_t *p, int depth, int object)
{
    keyset_t ks = {NULL, 0};
    char close = object ? '}' : ']';
    char tmp[32];
    if (depth >= CW_JSON_MAX_DEPTH) {
        fail(p, CW_BAD_REQUEST, "nesting deeper than %d levels", CW_JSON_MAX_DEPTH);
        return NULL;
    }
    p->pos++;   /* '{' or '[' */
    cw_json_t *v = node_new(p, object ? CW_JSON_OBJECT : CW_JSON_ARRAY);
    if (!v)
        return NULL;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"') {
                fail(p, CW_BAD_REQUEST, "expected a string key, found %s", here(p, tmp, sizeof tmp));
                goto bad;
            }
            size_t key_start = p->pos;
            size_t klen;
            key = parse_string(p, &klen);
            if (!key)
                goto bad;
            if (keyset_find(&ks, v, key)) {
                p->pos = key_start;
                char ex[64];
                fail(p, CW_BAD_REQUEST, "duplicate key \"%s\"", cw_json_excerpt(key, 40, ex, sizeof ex));
                goto bad;
            }
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                fail(p, CW_BAD_REQUEST, "expected ':' after key, found %s", here(p, tmp, sizeof tmp));
                goto bad;
            }
            p->pos++;
        }
        cw_json_t *child = parse_value(p, depth + 1);
        if (!child)
            goto bad;
        if (node_append(p, v, key, child) < 0)
            goto bad;
        if (object && keyset_add(&ks, v) < 0) {
            fail(p, CW_ERR_NOMEM, "out of memory");
            goto bad;
        }
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            free(ks.slots);
            return v;
        }
        fail(p, CW_BAD_REQUEST, "expected ',' or '%c', found %s", close, here(p, tmp, sizeof tmp));
        goto bad;
    }
bad:
    free(ks.slots);
    return NULL;
}

static cw_json_t *parse_value(parser_t *p, int depth)
{
    char tmp[32];
    skip_ws(p);
    if (p->pos >= p->len) {
        fail(p, CW_BAD_REQUEST, "expected a value, found end of line");
        return NULL;
    }
    char c = p->s[p->pos];
    cw_json_t *v;
    switch (c) {
    case '{':
        return parse_container(p, depth, 1);
    case '[':
        return parse_container(p, depth, 0);
    case '"': {
        size_t len;
        char *s = parse_string(p, &len);
        if (!s)
            return NULL;
        v = node_new(p, CW_JSON_STRING);
        if (!v)
            return NULL;
        v->str = s;
        v->str_len = len;
        return v;
    }
    case 't':
    case 'f':
    case 'n':
        if (match_word(p, "true") || match_word(p, "false")) {
            v = node_new(p, CW_JSON_BOOL);
            if (v)
                v->boolean = c == 't';
            return v;
        }
        if (match_word(p, "null"))
            return node_new(p, CW_JSON_NULL);
        break;
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(p);
        break;
    }
    fail(p, CW_BAD_REQUEST, "expected a value, found %s", here(p, tmp, sizeof tmp));
    return NULL;
}

int cw_json_parse(const char *text, size_t len, cw_json_t **out, size_t *col,
                  char *err, size_t errlen)
{
    parser_t p = {.s = text, .len = len, .pos = 0, .status = CW_OK, .err = err, .errlen = errlen};
    char tmp[32];
    *out = NULL;
    if (err && errlen)
        err[0] = '\0';
    cw_json_t *v = parse_value(&p, 0);
    if (v) {
        skip_ws(&p);
        if (p.pos < p.len) {
            fail(&p, CW_BAD_REQUEST, "unexpected %s after the JSON value", here(&p, tmp, sizeof tmp));
            v = NULL;
        }
    }
    if (col)
        *col = p.pos + 1;
    if (!v) {
        chunks_free(p.chunks);
        return p.status != CW_OK ? p.status : CW_BAD_REQUEST;
    }
    v->chunks = p.chunks;   /* the root owns the arena */
    *out = v;
    return CW_OK;
}

cw_json_type_t cw_json_type(const cw_json_t *v) { return v ? v->type : CW_JSON_NULL; }

const char *cw_json_type_name(cw_json_type_t t)
{
    switch (t) {
    case CW_JSON_NULL: return "null";
    case CW_JSON_BOOL: return "boolean";
    case CW_JSON_NUMBER: return "number";
    case CW_JSON_STRING: return "string";
    case CW_JSON_ARRAY: return "array";
    case CW_JSON_OBJECT: return "object";
    }
    return "unknown";
}

const cw_json_t *cw_json_get(const cw_json_t *v, const char *key)
{
    if (!v || v->type != CW_JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], key) == 0)
            return v->items[i];
    return NULL;
}

size_t cw_json_len(const cw_json_t *v)
{
    return v && (v->type == CW_JSON_ARRAY || v->type == CW_JSON_OBJECT) ? v->n : 0;
}

const cw_json_t *cw_json_at(const cw_json_t *v, size_t i)
{
    return i < cw_json_len(v) ? v->items[i] : NULL;
}

const char *cw_json_key_at(const cw_json_t *v, size_t i)
{
    return v && v->type == CW_JSON_OBJECT && i < v->n ? v->keys[i] : NULL;
}

const char *cw_json_str(const cw_json_t *v, size_t *len)
{
    if (!v || v->type != CW_JSON_STRING)
        return NULL;
    if (len)
        *len = v->str_len;
    return v->str;
}

int cw_json_bool(const cw_json_t *v)
{
    return v && v->type == CW_JSON_BOOL ? v->boolean : -1;
}

int cw_json_uint(const cw_json_t *v, uint64_t *out)
{
    if (!v || v->type != CW_JSON_NUMBER || !v->is_uint)
        return CW_BAD_REQUEST;
    *out = v->u;
    return CW_OK;
}

/* Length of the valid UTF-8 sequence at s, or 0 if the bytes there are not
 * one. */
static size_t utf8_seq(const unsigned char *s)
{
    size_t n = s[0] < 0x80 ? 1 : (s[0] & 0xE0) == 0xC0 ? 2 : (s[0] & 0xF0) == 0xE0 ? 3
             : (s[0] & 0xF8) == 0xF0 ? 4 : 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return n && cw_utf8_valid((const char *) s, n) ? n : 0;
}

void cw_json_put_string(FILE *f, const char *s)
{
    cw_json_fput(f, s); /* the one escaper (common/cw_json.h) */
}

char *cw_json_excerpt(const char *s, size_t max, char *buf, size_t size)
{
    const unsigned char *c = (const unsigned char *) (s ? s : "");
    size_t o = 0;
    if (size < 5) {
        if (size)
            buf[0] = '\0';
        return buf;
    }
    if (max > size - 4)
        max = size - 4;   /* room for "..." and the NUL */
    while (*c) {
        size_t n = *c < 0x80 ? 1 : utf8_seq(c);
        if (o + (n ? n : 1) > max) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (n == 0 || (n == 1 && (*c < 0x20 || *c == 0x7f))) {
            buf[o++] = '?';
            c++;
            continue;
        }
        memcpy(buf + o, c, n);
        o += n;
        c += n;
    }
    buf[o] = '\0';
    return buf;
}
