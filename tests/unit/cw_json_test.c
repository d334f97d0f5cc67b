/*  cw_json_test: common/cw_json.c, the one JSON string escaper.
 *
 *  Every escape rule of cw_json.h, invalid UTF-8, sizing with cap 0,
 *  cutting into a small buffer (always NUL-terminated), the FILE form for
 *  long strings (the same bytes as the buffer form), and the JSON log
 *  format of cw_log built on it.
 */
#include "cw_json.h"
#include "cw_log.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void check(const char *in, size_t len, const char *want)
{
    char out[256];
    size_t n = cw_json_escape(out, sizeof out, in, len);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
    assert_int_equal(cw_json_escape(NULL, 0, in, len), strlen(want));
}

static void test_rules(void **state)
{
    (void) state;
    check("", 0, "\"\"");
    check(NULL, 5, "\"\"");
    check("plain", 5, "\"plain\"");
    check("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    check("\n\r\t", 3, "\"\\n\\r\\t\"");
    check("\x01\x08\x0c\x1f\x7f", 5, "\"\\u0001\\u0008\\u000c\\u001f\\u007f\"");
    check("h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80", 15, "\"h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80\"");
    check("\xff", 1, "\"\\ufffd\"");
    check("a\xc3", 2, "\"a\\ufffd\"");             /* truncated sequence */
    check("\xc3\xa9", 1, "\"\\ufffd\"");            /* cut by len */
    check("\xed\xa0\x80", 3, "\"\\ufffd\\ufffd\\ufffd\""); /* a surrogate: each byte */
    check("ab\0cd", 5, "\"ab\"");                   /* a NUL ends it */
}

static void test_small_buffer(void **state)
{
    (void) state;
    char out[6];
    size_t n = cw_json_escape(out, sizeof out, "abcdefgh", 8);
    assert_int_equal(n, 10);
    assert_string_equal(out, "\"abcd");
    assert_int_equal(cw_json_escape(out, 1, "x", 1), 3);
    assert_string_equal(out, "");
}

static void test_fput_matches(void **state)
{
    (void) state;
    size_t len = 5000;
    char *s = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        s[i] = "ab\"\n\x01\xc3\xa9z"[i % 8];
    s[len] = '\0';
    size_t need = cw_json_escape(NULL, 0, s, len);
    char *want = malloc(need + 1);
    cw_json_escape(want, need + 1, s, len);
    char *got = NULL;
    size_t got_len = 0;
    FILE *f = open_memstream(&got, &got_len);
    cw_json_fput(f, s);
    fclose(f);
    assert_int_equal(got_len, need);
    assert_memory_equal(got, want, need);
    free(s);
    free(want);
    free(got);
}

static void test_log_json_lines(void **state)
{
    (void) state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fds[1], 2);
    cw_log_set_tag("unit");
    cw_log_set_format(CW_LOG_JSON);
    cw_log_set_level(CW_LOG_INFO);
    cw_log(CW_LOG_WARN, "x=\"%s\"\n", "q");
    cw_log_event(CW_LOG_INFO, "with fields", "user", "alice\x01", "n", "3", NULL);
    CW_DEBUG("not shown");
    cw_log_set_format(CW_LOG_TEXT);
    cw_log_event(CW_LOG_ERROR, "text line", "url", "http://x", NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    char buf[2048];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    assert_true(n > 0);
    buf[n] = '\0';
    char *l1 = buf, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
    assert_true(strncmp(l1, "{\"ts\":\"", 7) == 0);
    assert_non_null(strstr(l1, "Z\",\"level\":\"warn\",\"component\":\"unit\","
                               "\"msg\":\"x=\\\"q\\\"\\n\"}\n"));
    assert_non_null(strstr(l2, "\"level\":\"info\",\"component\":\"unit\",\"msg\":\"with fields\","
                               "\"user\":\"alice\\u0001\",\"n\":\"3\"}\n"));
    assert_non_null(strstr(l3, " ERROR unit: text line url=http://x\n"));
    assert_null(strstr(buf, "not shown"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_small_buffer),
        cmocka_unit_test(test_fput_matches),
        cmocka_unit_test(test_log_json_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
