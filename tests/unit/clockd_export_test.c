/*  clockd_export_test: unit tests for clockd/export.c (ShiViz log and
 *  space-time diagram).
 *
 *  The ShiViz export of tests/clockd/phase3.jsonl must equal the checked-in
 *  tests/clockd/expected.shiviz byte for byte; parsing our own export back
 *  gives the same events (compared as canonical JSON lines, so every field
 *  and clock counts), also for awkward texts and keys; malformed logs fail
 *  with a line number. The diagram checks here are structural (one lane
 *  group per process, one event group per event, arrows for matched
 *  deliveries, highlight classes); tests/e2e/test_clockd.py parses the SVG
 *  with a real XML parser. Files are mkstemp files under /tmp, removed at
 *  the end. Single-threaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "causal.h"
#include "cw_status.h"
#include "export.h"
#include "trace.h"

#ifndef CW_CLOCKD_FIXTURES
#error "CW_CLOCKD_FIXTURES must name tests/clockd"
#endif

static cw_trace_t *load(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", CW_CLOCKD_FIXTURES, name);
    cw_trace_t *t = cw_trace_new();
    char err[600];
    if (cw_trace_load_file(t, path, 0, NULL, NULL, err, sizeof err) != CW_OK)
        fail_msg("loading %s: %s", path, err);
    return t;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        size_t got = fread(buf + n, 1, 4096, f);
        n += got;
        if (got < 4096)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;
}

/* Runs writer into a memory buffer; returns it (caller frees). Not inlined:
 * GCC 12 at -O3 then takes the buffer for the address of the local `buf`
 * handed to open_memstream and reports a dangling pointer in count(). */
__attribute__((noinline)) static char *render(const cw_export_t *x, int (*writer)(const cw_export_t *, FILE *))
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(writer(x, f), CW_OK);
    fclose(f);
    return buf;
}

static char *temp_write(const char *text)
{
    char *path = strdup("/tmp/cw-clockd-export-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t) len);
    close(fd);
    return path;
}

/* Asserts two traces hold the same events (canonical JSON, same order). */
static void assert_same_events(const cw_trace_t *a, const cw_trace_t *b)
{
    assert_int_equal(cw_trace_count(a), cw_trace_count(b));
    for (size_t i = 0; i < cw_trace_count(a); i++) {
        char *x = cw_event_to_json(cw_trace_event(a, i));
        char *y = cw_event_to_json(cw_trace_event(b, i));
        if (strcmp(x, y) != 0)
            fail_msg("event %zu differs:\n  %s\n  %s", i, x, y);
        free(x);
        free(y);
    }
}

/* Exports t to ShiViz, parses it back, compares. */
static void round_trip(const cw_trace_t *t)
{
    cw_causal_t *c = cw_causal_new(t);
    cw_export_t *x = cw_export_new(c, NULL, NULL);
    assert_non_null(x);
    char *log = render(x, cw_export_shiviz);
    char *path = temp_write(log);
    cw_trace_t *back = cw_trace_new();
    char err[600];
    if (cw_shiviz_load(back, path, err, sizeof err) != CW_OK)
        fail_msg("reading our own export: %s\n%s", err, log);
    assert_same_events(t, back);
    cw_trace_destroy(&back);
    unlink(path);
    free(path);
    free(log);
    cw_export_destroy(&x);
    assert_null(x);
    cw_export_destroy(&x);
    cw_causal_destroy(&c);
}

static void test_shiviz_matches_expected(void **state)
{
    (void) state;
    cw_trace_t *t = load("phase3.jsonl");
    cw_causal_t *c = cw_causal_new(t);
    cw_export_t *x = cw_export_new(c, NULL, NULL);
    char *got = render(x, cw_export_shiviz);
    char *want = slurp(CW_CLOCKD_FIXTURES "/expected.shiviz", NULL);
    if (strcmp(got, want) != 0)
        fail_msg("ShiViz export differs from tests/clockd/expected.shiviz:\n%s", got);
    /* Line 1 is the regex, line 2 the empty delimiter, then 2 lines per event. */
    assert_true(strncmp(got, CW_SHIVIZ_REGEX "\n\n", strlen(CW_SHIVIZ_REGEX) + 2) == 0);
    size_t lines = 0;
    for (const char *p = got; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 2 + 2 * cw_trace_count(t));
    free(got);
    free(want);
    cw_export_destroy(&x);
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

static void test_shiviz_round_trip_fixtures(void **state)
{
    (void) state;
    const char *names[] = {"phase3.jsonl", "reordered.jsonl"};
    for (size_t i = 0; i < 2; i++) {
        cw_trace_t *t = load(names[i]);
        round_trip(t);
        cw_trace_destroy(&t);
    }
}

static void test_shiviz_round_trip_awkward(void **state)
{
    (void) state;
    static const char *const lines[] = {
        /* keys with spaces, '%', '|', '-' alone and non-ASCII; texts with
         * every escape, U+2028, a leading space, " | " and "ts=" inside. */
        "{\"process\":\"a.b-c_1\",\"kind\":\"send\",\"clock\":{\"a.b-c_1\":1},\"msg\":\"key with spaces|%20\","
        "\"peers\":[\"x\",\"y\"],\"ts_us\":0,\"text\":\" lead\\\\ing \\\\n | ts=5 \\u2028\\t\\u0001\\r\\n\"}",
        "{\"process\":\"x\",\"kind\":\"deliver\",\"clock\":{\"a.b-c_1\":1,\"x\":1},\"msg\":\"key with spaces|%20\","
        "\"peers\":[\"a.b-c_1\"],\"ts_us\":18446744073709551615,\"holdback_us\":7,\"msg_clock\":{\"a.b-c_1\":1}}",
        "{\"process\":\"x\",\"kind\":\"send\",\"clock\":{\"a.b-c_1\":1,\"x\":2},\"msg\":\"-\",\"broadcast\":true,"
        "\"text\":\"caf\\u00e9 \\u2029\"}",
        "{\"process\":\"y\",\"kind\":\"local\",\"clock\":{\"y\":1},\"text\":\"|\"}",
        "{\"process\":\"y\",\"kind\":\"local\",\"clock\":{\"y\":2}}",
        NULL,
    };
    cw_trace_t *t = cw_trace_new();
    for (size_t i = 0; lines[i]; i++) {
        char err[300];
        if (cw_trace_add_json(t, lines[i], strlen(lines[i]), i + 1, err, sizeof err) != CW_OK)
            fail_msg("line %zu: %s", i + 1, err);
    }
    round_trip(t);
    cw_trace_destroy(&t);
}

static void test_shiviz_malformed(void **state)
{
    (void) state;
    static const struct { const char *log; const char *why; } bad[] = {
        {"", "no header lines"},
        {"\n\n", ":1: expected the parser regular expression"},
        {"re\n(?<trace>.*)\n", ":2: multiple executions"},
        {"re\n\nsend k to=b ts=1 |\n", ":3: event line without"},
        {"re\n\nsend k to=b ts=1\nalice {\"alice\":1}\n", ":3: expected \" |\""},
        {"re\n\nsend k to=b |\nalice {\"alice\":1}\n", ":3: expected \"KIND MSG PEERS ts=N\""},
        {"re\n\nrecv k to=b ts=1 |\nalice {\"alice\":1}\n", "unknown event kind"},
        {"re\n\nsend k to=b ts=x |\nalice {\"alice\":1}\n", "expected ts="},
        {"re\n\nsend k%zz to=b ts=1 |\nalice {\"alice\":1}\n", "%-escape"},
        {"re\n\nsend k bob ts=1 |\nalice {\"alice\":1}\n", "bad peers token"},
        {"re\n\nsend k to=b ts=1 color=red |\nalice {\"alice\":1}\n", "unknown option"},
        {"re\n\nsend k to=b ts=1 | \\q\nalice {\"alice\":1}\n", "bad escape"},
        {"re\n\nsend k to=b ts=1 |\nalice\n", ":4: expected \"PROCESS {clock}\""},
        {"re\n\nsend k to=b ts=1 |\nalice {\"alice\":x}\n", ":4: clock:"},
        {"re\n\nsend k to=b ts=1 |\nalice {\"alice\":1}\nsend k to=b ts=2 |\nalice {\"alice\":2}\n",
         "already"},   /* not a parse error: see below */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *path = temp_write(bad[i].log);
        cw_trace_t *t = cw_trace_new();
        char err[600] = "";
        int rc = cw_shiviz_load(t, path, err, sizeof err);
        if (i == sizeof bad / sizeof bad[0] - 1) {
            /* A reused key loads fine; the audit reports it. */
            assert_int_equal(rc, CW_OK);
            assert_int_equal(cw_trace_count(t), 2);
        } else if (rc != CW_BAD_REQUEST || !strstr(err, bad[i].why)) {
            fail_msg("case %zu: rc %d, err \"%s\", want \"%s\"", i, rc, err, bad[i].why);
        }
        cw_trace_destroy(&t);
        unlink(path);
        free(path);
    }
    cw_trace_t *t = cw_trace_new();
    char err[300];
    assert_int_equal(cw_shiviz_load(t, "/nonexistent.shiviz", err, sizeof err), CW_ERR_IO);
    cw_trace_destroy(&t);
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

static void test_svg_structure(void **state)
{
    (void) state;
    cw_trace_t *t = load("reordered.jsonl");
    cw_causal_t *c = cw_causal_new(t);
    cw_export_options_t o;
    cw_export_options_init(&o);
    o.title = "reordered <&> \"trace\"";
    cw_export_t *x = cw_export_new(c, &o, NULL);
    char *svg = render(x, cw_export_svg);
    const char *head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"";
    assert_true(strncmp(svg, head, strlen(head)) == 0);
    assert_int_equal(count(svg, "<g class=\"lane\""), 2);
    assert_int_equal(count(svg, "data-process=\"alice\""), 1);
    assert_int_equal(count(svg, "data-id=\""), 8);
    /* Four deliveries of sent messages: four arrows, two of them red (the
     * causal-order violation: the early delivery and the one it overtook). */
    assert_int_equal(count(svg, "<line class=\"msg"), 4);
    assert_int_equal(count(svg, "<line class=\"msg bad\""), 2);
    assert_int_equal(count(svg, "<circle class=\"ring\""), 3 + 1);   /* 3 findings + legend */
    assert_non_null(strstr(svg, "<title>reordered &lt;&amp;&gt; &quot;trace&quot;</title>"));
    assert_non_null(strstr(svg, "data-clock=\"{&quot;alice&quot;:2,&quot;bob&quot;:1}\""));
    assert_non_null(strstr(svg, "audit: causal-order"));
    assert_true(strstr(svg, "</svg>\n") && strstr(svg, "</svg>\n")[7] == '\0');
    free(svg);
    char *html = render(x, cw_export_html);
    assert_true(strncmp(html, "<!DOCTYPE html>", 15) == 0);
    assert_int_equal(count(html, "<svg "), 1);
    assert_int_equal(count(html, "<?xml"), 0);
    assert_non_null(strstr(html, "<script>"));
    free(html);
    cw_export_destroy(&x);
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

static void test_svg_focus(void **state)
{
    (void) state;
    cw_trace_t *t = load("phase3.jsonl");
    cw_causal_t *c = cw_causal_new(t);
    cw_export_options_t o;
    cw_export_options_init(&o);
    char err[200];
    assert_int_equal(cw_trace_find(t, "bob:3", &o.focus, err, sizeof err), CW_OK);
    cw_export_t *x = cw_export_new(c, &o, NULL);
    char *svg = render(x, cw_export_svg);
    /* bob:3 has 3 events in its past, 2 in its future, 2 concurrent. */
    assert_int_equal(count(svg, "<g class=\"event send focus\""), 1);
    assert_int_equal(count(svg, " past\" data-id="), 3);
    assert_int_equal(count(svg, " future\" data-id="), 2);
    assert_int_equal(count(svg, " concurrent\" data-id="), 2);
    assert_int_equal(count(svg, " antichain\""), 0);
    assert_int_equal(count(svg, "<g class=\"lane\""), 3);
    free(svg);
    cw_export_destroy(&x);
    /* Without focus, the largest antichain (3 events) is highlighted. */
    x = cw_export_new(c, NULL, NULL);
    svg = render(x, cw_export_svg);
    assert_int_equal(count(svg, " antichain\" data-id="), 3);
    free(svg);
    cw_export_destroy(&x);
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shiviz_matches_expected),
        cmocka_unit_test(test_shiviz_round_trip_fixtures),
        cmocka_unit_test(test_shiviz_round_trip_awkward),
        cmocka_unit_test(test_shiviz_malformed),
        cmocka_unit_test(test_svg_structure),
        cmocka_unit_test(test_svg_focus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
