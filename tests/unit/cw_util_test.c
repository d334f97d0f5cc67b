/*  cw_util_test: unit tests for common/cw_util.c.
 *
 *  The user-name rules (length, charset, first character, reserved words
 *  compared case-insensitively, the hard cap), the UTF-8 check (boundaries,
 *  overlongs, surrogates, truncation) and the two time sources.
 *  Single-threaded; no I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cw_status.h"
#include "cw_util.h"

#define MAX 32

/* Asserts that name is refused and that the refusal explains itself. */
static void expect_bad(const char *name, size_t max_len)
{
    const char *why = NULL;
    int rc = cw_name_check(name, max_len, &why);
    if (rc != CW_BAD_NAME)
        fail_msg("name \"%s\" (max %zu): expected BAD_NAME, got %d", name ? name : "(null)",
                 max_len, rc);
    assert_non_null(why);
    assert_true(strlen(why) > 0);
}

static void expect_ok(const char *name, size_t max_len)
{
    const char *why = "untouched";
    int rc = cw_name_check(name, max_len, &why);
    if (rc != CW_OK)
        fail_msg("name \"%s\" (max %zu): expected OK, got %d (%s)", name, max_len, rc, why);
}

static void test_valid_names(void **state)
{
    (void) state;
    const char *ok[] = {"a", "Z", "7", "alice", "Bob", "carl2", "a_b", "a.b", "a-b",
                        "0day", "x-", "x.", "x_", "A.B-C_D", "ALLy", "all1", "alice.all",
                        "administrator", "systems", "broker2", "causeway_fan", "every1"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        expect_ok(ok[i], MAX);
    /* why may be NULL. */
    assert_int_equal(cw_name_check("alice", MAX, NULL), CW_OK);
}

static void test_empty_and_null(void **state)
{
    (void) state;
    expect_bad("", MAX);
    expect_bad(NULL, MAX);
    assert_int_equal(cw_name_check("", MAX, NULL), CW_BAD_NAME);
}

static void test_length_limit(void **state)
{
    (void) state;
    char name[CW_NAME_MAX_HARD + 8];
    memset(name, 'a', sizeof name);
    name[MAX] = '\0';
    expect_ok(name, MAX);               /* exactly max_len */
    name[MAX] = 'a';
    name[MAX + 1] = '\0';
    expect_bad(name, MAX);              /* max_len + 1 */
    name[1] = '\0';
    expect_bad(name, 0);                /* a zero limit refuses everything */
    expect_ok("abc", 3);
    expect_bad("abcd", 3);
}

/* A limit above CW_NAME_MAX_HARD is clamped to it. */
static void test_hard_cap(void **state)
{
    (void) state;
    char name[CW_NAME_MAX_HARD + 2];
    memset(name, 'b', sizeof name);
    name[CW_NAME_MAX_HARD] = '\0';
    expect_ok(name, 1000);
    name[CW_NAME_MAX_HARD] = 'b';
    name[CW_NAME_MAX_HARD + 1] = '\0';
    expect_bad(name, 1000);
    expect_bad(name, SIZE_MAX);
}

static void test_bad_chars(void **state)
{
    (void) state;
    const char *bad[] = {"a b", " a", "a ", "a\tb", "a\nb", "a,b", "a;b", "a/b", "a@b",
                         "a:b", "a+b", "a*b", "a\"b", "a'b", "a\\b", "a#b", "a!b", "a~b",
                         "caf\xc3\xa9", "\xc3\xa9", "a\x7f", "a\x01", "a{b}", "a=b"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_bad(bad[i], MAX);
}

static void test_first_char(void **state)
{
    (void) state;
    expect_bad("-a", MAX);
    expect_bad("-", MAX);
    expect_bad("_a", MAX);
    expect_bad(".a", MAX);
    expect_bad("..", MAX);
    expect_ok("a-", MAX);
    expect_ok("9-", MAX);
}

static void test_reserved(void **state)
{
    (void) state;
    const char *reserved[] = {"all", "everyone", "broker", "server", "system", "admin",
                              "causeway", "ALL", "All", "aLl", "Everyone", "EVERYONE",
                              "Broker", "SERVER", "SyStEm", "ADMIN", "Admin", "CAUSEWAY",
                              "CauseWay"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        expect_bad(reserved[i], MAX);
    /* A reserved word refused even when a generous limit is given. */
    expect_bad("admin", 1000);
    /* Prefixes and extensions of reserved words are ordinary names. */
    expect_ok("al", MAX);
    expect_ok("alls", MAX);
    expect_ok("admins", MAX);
    expect_ok("sys", MAX);
}

static void test_time_sources(void **state)
{
    (void) state;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = cw_now_us();
    uint64_t sys_us = (uint64_t) ts.tv_sec * 1000000u + (uint64_t) ts.tv_nsec / 1000u;
    /* Microseconds since the epoch: within a second of the system clock. */
    assert_true(now + 1000000u >= sys_us);
    assert_true(now <= sys_us + 1000000u);
    assert_true(now > 1577836800ull * 1000000u);   /* after 2020-01-01 */

    int64_t m0 = cw_mono_ms();
    for (int i = 0; i < 1000; i++) {
        int64_t m = cw_mono_ms();
        assert_true(m >= m0);
        m0 = m;
    }
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t sys_ms = (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    assert_true(sys_ms - cw_mono_ms() <= 1000);
    assert_true(cw_mono_ms() - sys_ms <= 1000);
}

/* Asserts cw_utf8_valid over exactly len bytes of s. */
static void utf8(const char *s, size_t len, int want)
{
    if (cw_utf8_valid(s, len) != want) {
        char hex[128] = "";
        for (size_t i = 0; i < len && i < 40; i++)
            snprintf(hex + 3 * i, sizeof hex - 3 * i, "%02x ", (unsigned char) s[i]);
        fail_msg("cw_utf8_valid(%s) != %d", hex, want);
    }
}
#define UTF8(lit, want) utf8(lit, sizeof lit - 1, want)

static void test_utf8_valid(void **state)
{
    (void) state;
    UTF8("", 1);
    UTF8("plain ascii", 1);
    UTF8("\x7f", 1);                  /* U+007F, last 1-byte */
    UTF8("\xc2\x80", 1);              /* U+0080, first 2-byte */
    UTF8("caf\xc3\xa9", 1);
    UTF8("\xdf\xbf", 1);              /* U+07FF */
    UTF8("\xe0\xa0\x80", 1);          /* U+0800, first 3-byte */
    UTF8("\xe2\x9c\x93", 1);          /* check mark */
    UTF8("\xed\x9f\xbf", 1);          /* U+D7FF, just below surrogates */
    UTF8("\xee\x80\x80", 1);          /* U+E000, just above */
    UTF8("\xef\xbf\xbf", 1);          /* U+FFFF */
    UTF8("\xf0\x90\x80\x80", 1);      /* U+10000, first 4-byte */
    UTF8("\xf0\x9f\x98\x80", 1);      /* emoji */
    UTF8("\xf4\x8f\xbf\xbf", 1);      /* U+10FFFF, last code point */
    UTF8("a\0b", 1);                  /* NUL is ASCII; len, not strlen, counts */
}

static void test_utf8_invalid(void **state)
{
    (void) state;
    UTF8("\x80", 0);                  /* lone continuation */
    UTF8("a\xbf", 0);
    UTF8("\xc0\x80", 0);              /* overlong NUL */
    UTF8("\xc1\xbf", 0);              /* overlong U+007F */
    UTF8("\xe0\x80\x80", 0);          /* overlong 3-byte */
    UTF8("\xe0\x9f\xbf", 0);          /* overlong U+07FF */
    UTF8("\xf0\x80\x80\x80", 0);      /* overlong 4-byte */
    UTF8("\xf0\x8f\xbf\xbf", 0);      /* overlong U+FFFF */
    UTF8("\xed\xa0\x80", 0);          /* U+D800 surrogate */
    UTF8("\xed\xbf\xbf", 0);          /* U+DFFF surrogate */
    UTF8("\xf4\x90\x80\x80", 0);      /* U+110000 */
    UTF8("\xf5\x80\x80\x80", 0);      /* lead byte F5 */
    UTF8("\xff", 0);
    UTF8("\xfe", 0);
    UTF8("\xc3", 0);                  /* truncated at the end */
    UTF8("\xe2\x9c", 0);
    UTF8("\xf0\x9f\x98", 0);
    UTF8("\xc3" "a", 0);               /* continuation missing */
    UTF8("\xe2\x28\xa1", 0);
    UTF8("ok\xf0\x9f\x98\x80ok\xc3", 0);
    /* len limits the scan: a valid prefix of an invalid buffer. */
    utf8("ab\xff", 2, 1);
    /* A sequence cut by len is invalid even if the buffer goes on. */
    utf8("\xc3\xa9", 1, 0);
    utf8("\xf0\x9f\x98\x80", 3, 0);
}

/* The scanner takes ASCII eight bytes at a time: a non-ASCII byte at any
 * offset of a word, and a sequence straddling two words, must be seen. */
static void test_utf8_word_boundaries(void **state)
{
    (void) state;
    for (size_t at = 0; at < 30; at++) {
        char buf[40];
        memset(buf, 'a', sizeof buf);
        memcpy(buf + at, "\xc3\xa9", 2);        /* valid, 2 bytes */
        utf8(buf, sizeof buf, 1);
        memcpy(buf + at, "\xe2\x9c\x93", 3);    /* valid, 3 bytes */
        utf8(buf, sizeof buf, 1);
        memset(buf, 'a', sizeof buf);
        buf[at] = (char) 0x80;                 /* lone continuation */
        utf8(buf, sizeof buf, 0);
        buf[at] = (char) 0xc3;                 /* lead without continuation */
        utf8(buf, sizeof buf, 0);
        utf8(buf, at + 1, 0);                  /* cut by len right after it */
        utf8(buf, at, 1);                      /* the ASCII before it */
        memcpy(buf + at, "\xed\xa0\x80", 3);    /* surrogate */
        utf8(buf, sizeof buf, 0);
    }
}

/* The trace name rule (cw_trace_name_ok): Unicode whitespace, controls and
 * format characters are refused wherever they stand (issue 11 item 18);
 * other UTF-8 and ':' are fine. tests/e2e/test_clockd.py checks every such
 * code point against Python's unicodedata. */
static void test_trace_names(void **state)
{
    (void) state;
    const char *bad[] = {
        "a\xc2\xa0" "b",         /* U+00A0 no-break space */
        "a\xe3\x80\x80" "b",     /* U+3000 ideographic space */
        "a\xe2\x80\xa8" "b",     /* U+2028 line separator */
        "a\xc2\x85" "b",         /* U+0085 next line */
        "\xef\xbb\xbf" "alice",  /* U+FEFF byte order mark */
        "a\xe2\x80\x8b" "b",     /* U+200B zero width space (Cf) */
        "a\xe2\x80\xae" "b",     /* U+202E right-to-left override (Cf) */
        "a\xe1\x9a\x80" "b",     /* U+1680 ogham space mark */
        "a\xf3\xa0\x80\x81",     /* U+E0001 language tag (Cf, 4 bytes) */
        "a\xc2\x9f",             /* U+009F (Cc) */
        "a b", "a\tb", "a\x7f", "a\x01", "a,b", "a|b", "a%b", "a\"b", "a\\b", "",
        "a\xc3",                  /* not UTF-8 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (cw_trace_name_ok(bad[i]))
            fail_msg("accepted bad trace name #%zu", i);
    const char *good[] = {"alice", "a:b", "caf\xc3\xa9", "\xe6\x97\xa5\xe6\x9c\xac",
                          "\xf0\x9f\x8e\x89", "a\xc2\xa1", "__proto__",
                          ("a\xe2\x80\x90" "b")};   /* split: \x90b would be one escape */
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!cw_trace_name_ok(good[i]))
            fail_msg("refused good trace name #%zu", i);
    char name[CW_NAME_MAX_HARD + 2];
    memset(name, 'x', sizeof name);
    name[CW_NAME_MAX_HARD] = '\0';
    assert_true(cw_trace_name_ok(name));
    name[CW_NAME_MAX_HARD] = 'x';
    name[CW_NAME_MAX_HARD + 1] = '\0';
    assert_false(cw_trace_name_ok(name));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_names),
        cmocka_unit_test(test_empty_and_null),
        cmocka_unit_test(test_length_limit),
        cmocka_unit_test(test_hard_cap),
        cmocka_unit_test(test_bad_chars),
        cmocka_unit_test(test_first_char),
        cmocka_unit_test(test_reserved),
        cmocka_unit_test(test_time_sources),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_invalid),
        cmocka_unit_test(test_utf8_word_boundaries),
        cmocka_unit_test(test_trace_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
