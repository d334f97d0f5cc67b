/*  cw_util: see cw_util.h. */
#include "cw_util.h"
#include "cw_status.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <strings.h>
#include <string.h>
#include <time.h>

uint64_t cw_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
}

int64_t cw_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cw_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static const char *reserved[] = {"all", "everyone", "broker", "server", "system", "admin",
                                 "causeway"};

int cw_name_check(const char *name, size_t max_len, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    if (max_len > CW_NAME_MAX_HARD)
        max_len = CW_NAME_MAX_HARD;
    size_t len = name ? strlen(name) : 0;
    if (len == 0) {
        *why = "name is empty";
        return CW_BAD_NAME;
    }
    if (len > max_len) {
        *why = "name is too long";
        return CW_BAD_NAME;
    }
    unsigned char c0 = (unsigned char) name[0];
    if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z') || (c0 >= '0' && c0 <= '9'))) {
        *why = "name must start with a letter or digit";
        return CW_BAD_NAME;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char) name[i];
        /* isalnum is locale-dependent; spell the ASCII ranges out. */
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok) {
            *why = "name may only contain letters, digits, '_', '.' and '-'";
            return CW_BAD_NAME;
        }
    }
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcasecmp(name, reserved[i]) == 0) {
            *why = "name is reserved";
            return CW_BAD_NAME;
        }
    return CW_OK;
}

int cw_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *) str;
    size_t i = 0;
    while (i < len) {
        /* ASCII, the common case, eight bytes at a time. */
        while (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, sizeof w);
            if (w & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= len)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0; /* continuation byte first, overlong lead C0/C1, or F5.. */
        }
        if (len - i <= n)
            return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n + 1;
    }
    return 1;
}

void cw_set_err(char *err, size_t size, const char *fmt, ...)
{
    if (!err || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, size, fmt, ap);
    va_end(ap);
}

size_t cw_utf8_seq_len(const char *str)
{
    const unsigned char *p = (const unsigned char *) str;
    unsigned c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint32_t min, cp;
    if ((c & 0xE0) == 0xC0) {
        n = 2, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) /* also stops at a terminating NUL */
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

/* Code points no trace name may contain: Unicode's White_Space property and
 * the general categories Cc and Cf (controls and format characters: U+0085,
 * U+00A0, U+2028, U+200B..U+200F, U+FEFF, the bidirectional controls, ...),
 * as of Unicode 15.1. Sorted, inclusive ranges. A table of 25 ranges needs
 * no library (libunistring or ICU would be a new dependency of every
 * program); tests/e2e/test_clockd.py checks it against Python's unicodedata. */
static const struct {
    uint32_t lo, hi;
} not_in_names[] = {
    {0x0000, 0x0020}, {0x007F, 0x00A0}, {0x00AD, 0x00AD}, {0x0600, 0x0605}, {0x061C, 0x061C},
    {0x06DD, 0x06DD}, {0x070F, 0x070F}, {0x0890, 0x0891}, {0x08E2, 0x08E2}, {0x1680, 0x1680},
    {0x180E, 0x180E}, {0x2000, 0x200F}, {0x2028, 0x202F}, {0x205F, 0x2064}, {0x2066, 0x206F},
    {0x3000, 0x3000}, {0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFB}, {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
    {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
    {0xE0020, 0xE007F},
};

int cw_trace_name_ok(const char *name)
{
    if (!name)
        return 0;
    size_t len = strlen(name);
    if (len == 0 || len > CW_NAME_MAX_HARD || !cw_utf8_valid(name, len))
        return 0;
    const unsigned char *s = (const unsigned char *) name;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = cw_utf8_seq_len((const char *) s + i);   /* >= 1: the string is valid */
        if (n == 1) {
            cp = s[i];
            if (cp == '"' || cp == '\\' || cp == ',' || cp == '|' || cp == '%')
                return 0;
            if (cp > 0x20 && cp < 0x7F) {   /* printable ASCII: not in the table */
                i++;
                continue;
            }
        } else {
            cp = s[i] & (0x7F >> n);
            for (size_t k = 1; k < n; k++)
                cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        size_t lo = 0, hi = sizeof not_in_names / sizeof not_in_names[0];
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cp < not_in_names[mid].lo)
                hi = mid;
            else if (cp > not_in_names[mid].hi)
                lo = mid + 1;
            else
                return 0;
        }
        i += n;
    }
    return 1;
}

/* --- endpoint lists ------------------------------------------------------ */

int cw_endpoint_problem(const char *what, const char *ep, char *why, size_t size)
{
    if (strlen(ep) > CW_ENDPOINT_LEN_MAX) {
        cw_set_err(why, size, "%s '%.40s...' is longer than %d bytes", what, ep,
                   CW_ENDPOINT_LEN_MAX);
        return 1;
    }
    const char *sep = strstr(ep, "://");
    if (!sep) {
        cw_set_err(why, size, "%s '%s' has no transport: ZeroMQ endpoints look like "
                   "tcp://HOST:PORT; did you mean tcp://%s?", what, ep, ep);
        return 1;
    }
    size_t tlen = (size_t) (sep - ep);
    const char *known[] = {"tcp", "ipc", "inproc", "ws", "wss", "tipc", "vmci"};
    int ok = 0;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        ok |= strlen(known[i]) == tlen && strncmp(ep, known[i], tlen) == 0;
    if (!ok) {
        cw_set_err(why, size, "%s '%s': unknown transport '%.*s'; use tcp://HOST:PORT", what,
                   ep, (int) tlen, ep);
        return 1;
    }
    const char *addr = sep + 3;
    if (tlen == 3 && strncmp(ep, "tcp", 3) == 0) {
        const char *colon = strrchr(addr, ':');
        const char *bracket = strrchr(addr, ']');
        char *end = NULL;
        long port = colon && (!bracket || colon > bracket) ? strtol(colon + 1, &end, 10) : -1;
        if (!colon || colon == addr || (bracket && colon < bracket) || !end || *end ||
            end == colon + 1 || port < 1 || port > 65535 || strpbrk(addr, " \t,")) {
            cw_set_err(why, size, "%s '%s' needs a host and a port from 1 to 65535: "
                       "tcp://HOST:PORT, e.g. tcp://127.0.0.1:7400", what, ep);
            return 1;
        }
    } else if (!*addr) {
        cw_set_err(why, size, "%s '%s' has no address after the transport", what, ep);
        return 1;
    }
    return 0;
}

void cw_endpoint_list_free(char ***list, size_t n)
{
    if (!list || !*list)
        return;
    for (size_t i = 0; i < n; i++)
        free((*list)[i]);
    free(*list);
    *list = NULL;
}

size_t cw_endpoint_list_parse(const char *what, const char *list, char ***out, char *why,
                              size_t size)
{
    *out = NULL;
    char **eps = calloc(CW_ENDPOINTS_MAX, sizeof *eps);
    if (!eps) {
        cw_set_err(why, size, "out of memory");
        errno = ENOMEM;
        return 0;
    }
    size_t n = 0;
    const char *p = list ? list : "";
    for (;;) {
        const char *comma = strchr(p, ',');
        const char *b = p, *e = comma ? comma : p + strlen(p);
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (b == e) {
            cw_set_err(why, size, "%s '%s' has an empty element: give endpoints separated "
                       "by single commas, e.g. tcp://a:7400,tcp://b:7400", what, list ? list : "");
            goto bad;
        }
        if (n == CW_ENDPOINTS_MAX) {
            cw_set_err(why, size, "%s lists more than %d endpoints", what, CW_ENDPOINTS_MAX);
            goto bad;
        }
        size_t len = (size_t) (e - b);
        char *ep = malloc(len + 1);
        if (!ep) {
            cw_set_err(why, size, "out of memory");
            cw_endpoint_list_free(&eps, n);
            errno = ENOMEM;
            return 0;
        }
        memcpy(ep, b, len);
        ep[len] = '\0';
        eps[n++] = ep;
        if (cw_endpoint_problem(what, ep, why, size))
            goto bad;
        for (size_t i = 0; i + 1 < n; i++) {
            if (strcmp(eps[i], ep) == 0) {
                cw_set_err(why, size, "%s names '%s' twice", what, ep);
                goto bad;
            }
        }
        if (!comma)
            break;
        p = comma + 1;
    }
    *out = eps;
    return n;
bad:
    cw_endpoint_list_free(&eps, n);
    errno = EINVAL;
    return 0;
}
