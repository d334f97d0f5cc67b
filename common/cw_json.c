/*  cw_json: see cw_json.h. */
#include "cw_json.h"
#include "cw_util.h"

#include <string.h>

/* Appends n bytes at out[*o] if they fit (below cap - 1); counts them. */
static void put(char *out, size_t cap, size_t *o, const char *p, size_t n)
{
    if (cap && *o < cap - 1) {
        size_t room = cap - 1 - *o;
        memcpy(out + *o, p, n < room ? n : room);
    }
    *o += n;
}

size_t cw_json_escape(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    const unsigned char *c = (const unsigned char *) (s ? s : "");
    const unsigned char *end = c + (s ? len : 0);
    put(out, cap, &o, "\"", 1);
    while (c < end && *c) {
        switch (*c) {
        case '"': put(out, cap, &o, "\\\"", 2); c++; continue;
        case '\\': put(out, cap, &o, "\\\\", 2); c++; continue;
        case '\n': put(out, cap, &o, "\\n", 2); c++; continue;
        case '\r': put(out, cap, &o, "\\r", 2); c++; continue;
        case '\t': put(out, cap, &o, "\\t", 2); c++; continue;
        default: break;
        }
        if (*c < 0x20 || *c == 0x7f) {
            char esc[6] = {'\\', 'u', '0', '0', hex[*c >> 4], hex[*c & 15]};
            put(out, cap, &o, esc, 6);
            c++;
        } else if (*c < 0x80) {
            put(out, cap, &o, (const char *) c, 1);
            c++;
        } else {
            /* cw_utf8_seq_len stops at a NUL; a sequence running past
             * `end` is cut, so it counts as invalid. */
            size_t n = cw_utf8_seq_len((const char *) c);
            if (n == 0 || n > (size_t) (end - c)) {
                put(out, cap, &o, "\\ufffd", 6);
                c++;
            } else {
                put(out, cap, &o, (const char *) c, n);
                c += n;
            }
        }
    }
    put(out, cap, &o, "\"", 1);
    if (cap)
        out[o < cap ? o : cap - 1] = '\0';
    return o;
}

void cw_json_fput(FILE *f, const char *s)
{
    char small[256];
    size_t len = s ? strlen(s) : 0;
    size_t need = cw_json_escape(small, sizeof small, s, len);
    if (need < sizeof small) {
        fwrite(small, 1, need, f);
        return;
    }
    /* Long: escape piece by piece at character boundaries, without quotes. */
    fputc('"', f);
    size_t i = 0;
    while (i < len) {
        size_t n = 0;
        while (i + n < len && n < 32) {
            size_t k = (unsigned char) s[i + n] < 0x80 ? 1 : cw_utf8_seq_len(s + i + n);
            n += k ? k : 1;
        }
        if (i + n > len)
            n = len - i;
        size_t w = cw_json_escape(small, sizeof small, s + i, n);
        fwrite(small + 1, 1, w - 2, f); /* without the quotes: at most (32 + 3) * 6 + 2 */
        i += n;
    }
    fputc('"', f);
}
