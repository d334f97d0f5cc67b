/*  clockd_json_test: unit tests for clockd/json.c (the JSON parser).
 *
 *  Valid documents of every type, exact 64-bit integers, string escapes
 *  (surrogate pairs included), and a table of malformed inputs each of
 *  which must fail with CW_BAD_REQUEST at the expected column and leak
 *  nothing. Single-threaded; no I/O except a memstream for the writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_status.h"
#include "json.h"

static cw_json_t *parse_ok(const char *s)
{
    cw_json_t *v = NULL;
    char err[200];
    size_t col = 0;
    int rc = cw_json_parse(s, strlen(s), &v, &col, err, sizeof err);
    if (rc != CW_OK)
        fail_msg("parse of %s failed at column %zu: %s", s, col, err);
    assert_non_null(v);
    return v;
}

static void test_object(void **state)
{
    (void) state;
    cw_json_t *v = parse_ok(" {\"process\":\"alice\",\"clock\":{\"alice\":1,\"bob\":18446744073709551615},"
                            "\"peers\":[\"bob\",\"carol\"],\"ok\":true,\"no\":false,\"n\":null,\"x\":-1.5e3} ");
    assert_int_equal(cw_json_type(v), CW_JSON_OBJECT);
    assert_int_equal(cw_json_len(v), 7);
    assert_string_equal(cw_json_str(cw_json_get(v, "process"), NULL), "alice");
    const cw_json_t *clock = cw_json_get(v, "clock");
    assert_int_equal(cw_json_type(clock), CW_JSON_OBJECT);
    assert_string_equal(cw_json_key_at(clock, 1), "bob");
    uint64_t u = 0;
    assert_int_equal(cw_json_uint(cw_json_at(clock, 1), &u), CW_OK);
    assert_true(u == UINT64_MAX);
    const cw_json_t *peers = cw_json_get(v, "peers");
    assert_int_equal(cw_json_type(peers), CW_JSON_ARRAY);
    assert_int_equal(cw_json_len(peers), 2);
    assert_string_equal(cw_json_str(cw_json_at(peers, 1), NULL), "carol");
    assert_null(cw_json_at(peers, 2));
    assert_int_equal(cw_json_bool(cw_json_get(v, "ok")), 1);
    assert_int_equal(cw_json_bool(cw_json_get(v, "no")), 0);
    assert_int_equal(cw_json_type(cw_json_get(v, "n")), CW_JSON_NULL);
    /* -1.5e3 is a number but not an exact unsigned integer. */
    assert_int_equal(cw_json_type(cw_json_get(v, "x")), CW_JSON_NUMBER);
    assert_int_equal(cw_json_uint(cw_json_get(v, "x"), &u), CW_BAD_REQUEST);
    assert_null(cw_json_get(v, "missing"));
    assert_null(cw_json_get(peers, "process"));   /* not an object */
    cw_json_destroy(&v);
    assert_null(v);
    cw_json_destroy(&v);   /* safe twice */
}

static void test_numbers(void **state)
{
    (void) state;
    struct { const char *text; int is_uint; uint64_t value; } cases[] = {
        {"0", 1, 0}, {"42", 1, 42}, {"18446744073709551615", 1, UINT64_MAX},
        {"18446744073709551616", 0, 0},   /* one too many: a double, not exact */
        {"1.0", 0, 0}, {"1e2", 0, 0}, {"-0", 0, 0}, {"-7", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cw_json_t *v = parse_ok(cases[i].text);
        uint64_t u = 12345;
        int rc = cw_json_uint(v, &u);
        assert_int_equal(rc, cases[i].is_uint ? CW_OK : CW_BAD_REQUEST);
        if (cases[i].is_uint)
            assert_true(u == cases[i].value);
        else
            assert_true(u == 12345);
        cw_json_destroy(&v);
    }
}

static void test_strings(void **state)
{
    (void) state;
    cw_json_t *v = parse_ok("\"a\\\"b\\\\c\\/d\\n\\t\\u00e9\\u20ac\\ud83d\\ude00\"");
    size_t len = 0;
    const char *s = cw_json_str(v, &len);
    assert_string_equal(s, "a\"b\\c/d\n\t\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80");
    assert_int_equal(len, strlen(s));
    cw_json_destroy(&v);
    v = parse_ok("\"h\xC3\xA9llo\"");   /* raw UTF-8 passes through */
    assert_string_equal(cw_json_str(v, NULL), "h\xC3\xA9llo");
    cw_json_destroy(&v);
}

/* Large objects (a 300-entry clock) find duplicate keys through a hash
 * table: every position of the repeat is caught, at the repeated key. */
static void test_duplicate_keys_large(void **state)
{
    (void) state;
    char text[8192];
    for (size_t dup = 0; dup < 300; dup += 7) {
        size_t off = 0, col = 0;
        off += (size_t) snprintf(text + off, sizeof text - off, "{");
        for (size_t k = 0; k < 300; k++) {
            if (k == dup + 1)
                col = off + 2;   /* 1-based column of the repeated key's quote */
            off += (size_t) snprintf(text + off, sizeof text - off, "%s\"n%zu\":%zu", k ? "," : "",
                                     k == dup + 1 ? dup : k, k);
        }
        snprintf(text + off, sizeof text - off, "}");
        cw_json_t *v = NULL;
        char err[200] = "";
        size_t got = 0;
        int rc = cw_json_parse(text, strlen(text), &v, &got, err, sizeof err);
        if (dup + 1 < 300) {
            assert_int_equal(rc, CW_BAD_REQUEST);
            assert_null(v);
            assert_non_null(strstr(err, "duplicate key"));
            assert_int_equal(got, col);
        } else {
            assert_int_equal(rc, CW_OK);
            cw_json_destroy(&v);
        }
    }
    /* No repeat: all 300 members kept. */
    size_t off = (size_t) snprintf(text, sizeof text, "{");
    for (size_t k = 0; k < 300; k++)
        off += (size_t) snprintf(text + off, sizeof text - off, "%s\"n%zu\":%zu", k ? "," : "", k, k);
    snprintf(text + off, sizeof text - off, "}");
    cw_json_t *v = NULL;
    char err[200];
    size_t col;
    assert_int_equal(cw_json_parse(text, strlen(text), &v, &col, err, sizeof err), CW_OK);
    assert_int_equal(cw_json_len(v), 300);
    cw_json_destroy(&v);
}

static void test_malformed(void **state)
{
    (void) state;
    struct { const char *text; size_t col; const char *why; } cases[] = {
        {"", 1, "expected a value"},
        {"{", 2, "expected a string key"},
        {"{\"a\"}", 5, "expected ':'"},
        {"{\"a\":1,}", 8, "expected a string key"},
        {"{\"a\":1 \"b\":2}", 8, "expected ','"},
        {"{\"a\":1}x", 8, "unexpected 'x'"},
        {"[1,2", 5, "expected ','"},
        {"{\"a\":1,\"a\":2}", 8, "duplicate key"},
        {"\"abc", 5, "unterminated string"},
        {"\"a\\qb\"", 4, "bad escape"},
        {"\"a\\u12g4\"", 7, "bad hex digit"},
        {"\"\\ud83d\"", 8, "unpaired"},
        {"\"\\udc00\"", 8, "unpaired"},
        {"\"\\u0000\"", 8, "NUL"},
        {"\"tab\there\"", 5, "control character"},
        {"\"\xC3\x28\"", 2, "UTF-8"},
        {"01", 2, "leading zero"},
        {"-", 2, "digit expected"},
        {"1.", 3, "digit expected after '.'"},
        {"1e", 3, "exponent"},
        {"tru", 1, "expected a value"},
        {"nul", 1, "expected a value"},
        {"'a'", 1, "expected a value"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cw_json_t *v = (cw_json_t *) 1;
        char err[200] = "";
        size_t col = 0;
        int rc = cw_json_parse(cases[i].text, strlen(cases[i].text), &v, &col, err, sizeof err);
        if (rc != CW_BAD_REQUEST || v != NULL || !strstr(err, cases[i].why) || col != cases[i].col)
            print_error("case %zu (%s): rc %d, col %zu (want %zu), err \"%s\" (want \"%s\")\n", i,
                     cases[i].text, rc, col, cases[i].col, err, cases[i].why), bad++;
    }
    assert_int_equal(bad, 0);
}

static void test_depth_limit(void **state)
{
    (void) state;
    char deep[2 * CW_JSON_MAX_DEPTH + 8];
    size_t n = 0;
    for (int i = 0; i < CW_JSON_MAX_DEPTH; i++)
        deep[n++] = '[';
    for (int i = 0; i < CW_JSON_MAX_DEPTH; i++)
        deep[n++] = ']';
    cw_json_t *v = NULL;
    char err[200];
    assert_int_equal(cw_json_parse(deep, n, &v, NULL, err, sizeof err), CW_OK);
    cw_json_destroy(&v);
    /* One level more is refused. */
    memmove(deep + 1, deep, n);
    deep[0] = '[';
    deep[n + 1] = ']';
    assert_int_equal(cw_json_parse(deep, n + 2, &v, NULL, err, sizeof err), CW_BAD_REQUEST);
    assert_non_null(strstr(err, "nesting"));
    assert_null(v);
}

static void test_writer_round_trip(void **state)
{
    (void) state;
    const char *s = "q\"b\\s\n\r\t\x01\x7f \xC3\xA9";
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cw_json_put_string(f, s);
    fclose(f);
    assert_string_equal(buf, "\"q\\\"b\\\\s\\n\\r\\t\\u0001\\u007f \xC3\xA9\"");
    cw_json_t *v = parse_ok(buf);
    assert_string_equal(cw_json_str(v, NULL), s);
    cw_json_destroy(&v);
    free(buf);
}

static void test_writer_invalid_utf8_and_excerpt(void **state)
{
    (void) state;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cw_json_put_string(f, "a\xff\xC3\xA9\xE2\x82");   /* bad byte, e-acute, cut euro sign */
    fclose(f);
    assert_string_equal(buf, "\"a\\ufffd\xC3\xA9\\ufffd\\ufffd\"");
    cw_json_t *v = parse_ok(buf);   /* valid JSON again */
    cw_json_destroy(&v);
    free(buf);

    char ex[16];
    assert_string_equal(cw_json_excerpt("short", 10, ex, sizeof ex), "short");
    assert_string_equal(cw_json_excerpt("0123456789abcdef", 10, ex, sizeof ex), "0123456789...");
    assert_string_equal(cw_json_excerpt("a\x01" "b\xff" "c", 10, ex, sizeof ex), "a?b?c");
    /* Never cuts inside a character: the euro sign (3 bytes) does not fit. */
    assert_string_equal(cw_json_excerpt("12345678\xE2\x82\xAC", 10, ex, sizeof ex), "12345678...");
    assert_string_equal(cw_json_excerpt("x", 10, ex, 3), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_object),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_duplicate_keys_large),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_writer_round_trip),
        cmocka_unit_test(test_writer_invalid_utf8_and_excerpt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
