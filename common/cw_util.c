/*  cw_util: see cw_util.h. */
#include "cw_util.h"
#include "cw_status.h"

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
