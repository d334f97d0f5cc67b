/*  clockd_trace_test: unit tests for clockd/trace.c (events, ids and the
 *  JSON-lines trace format).
 *
 *  Loads the checked-in fixture tests/clockd/phase3.jsonl and checks every
 *  field; checks that each rule of the event model rejects its bad event
 *  with a message naming the field; that a malformed file fails with its
 *  line number (and is skipped line by line with CW_TRACE_SKIP_BAD); that
 *  ids resolve; and that the canonical JSON of every event reads back to
 *  the same line. Files are mkstemp files under /tmp, removed at the end.
 *  Single-threaded.
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

#include "cw_status.h"
#include "trace.h"

#ifndef CW_CLOCKD_FIXTURES
#error "CW_CLOCKD_FIXTURES must name tests/clockd"
#endif

#define PHASE3 CW_CLOCKD_FIXTURES "/phase3.jsonl"

static cw_trace_t *load(const char *path)
{
    cw_trace_t *t = cw_trace_new();
    assert_non_null(t);
    char err[600];
    int rc = cw_trace_load_file(t, path, 0, NULL, NULL, err, sizeof err);
    if (rc != CW_OK)
        fail_msg("loading %s: %s", path, err);
    return t;
}

/* Writes text to a fresh temporary file; returns its malloc'd path. */
static char *temp_file(const char *text)
{
    char *path = strdup("/tmp/cw-clockd-trace-XXXXXX");
    assert_non_null(path);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t) len);
    close(fd);
    return path;
}

static void test_load_fixture(void **state)
{
    (void) state;
    cw_trace_t *t = load(PHASE3);
    assert_int_equal(cw_trace_count(t), 8);
    assert_int_equal(cw_trace_processes(t), 3);
    assert_string_equal(cw_trace_process_name(t, 0), "alice");
    assert_string_equal(cw_trace_process_name(t, 1), "bob");
    assert_string_equal(cw_trace_process_name(t, 2), "carol");
    assert_int_equal(cw_trace_process_count(t, 1), 4);

    const cwc_event_t *e = cw_trace_event(t, 0);
    char id[CW_EVENT_ID_MAX];
    assert_string_equal(cw_event_id(e, id, sizeof id), "alice:1");
    assert_int_equal(e->kind, CW_EV_SEND);
    assert_string_equal(e->msg, "alice:m1");
    assert_int_equal(e->n_peers, 1);
    assert_string_equal(e->peers[0], "bob");
    assert_int_equal(e->vc.n, 1);
    assert_null(e->clock);   /* stored clocks are compact (vc), not wire entries */
    assert_true(e->ts_us == 1700000000000000ull);
    assert_string_equal(e->text, "hello bob");
    assert_int_equal(e->line, 4);   /* three comment lines first */

    e = cw_trace_event(t, 1);       /* bob's local event */
    assert_int_equal(e->kind, CW_EV_LOCAL);
    assert_string_equal(e->msg, "");
    assert_int_equal(e->seq, 1);

    e = cw_trace_event(t, 3);       /* carol's broadcast */
    assert_true(e->broadcast);
    assert_int_equal(e->n_peers, 0);
    assert_string_equal(e->text, "hi all | with \"quotes\", a \\ and\na second line");

    e = cw_trace_event(t, 5);       /* alice's delivery with a hold-back delay */
    assert_string_equal(cw_event_id(e, id, sizeof id), "alice:2");
    assert_true(e->has_holdback);
    assert_int_equal(e->holdback_us, 1500);
    assert_null(e->text);

    e = cw_trace_event(t, 7);       /* bob:4 carries the message clock */
    assert_string_equal(cw_event_id(e, id, sizeof id), "bob:4");
    assert_true(e->has_msg_clock);
    assert_int_equal(e->mvc.n, 1);
    assert_string_equal(cw_trace_node_name(t, e->mvc.node[0]), "carol");
    /* Clock entries come back sorted by node id, formatted by name. */
    assert_int_equal(e->vc.n, 3);
    for (size_t k = 1; k < e->vc.n; k++)
        assert_true(e->vc.node[k - 1] < e->vc.node[k]);
    char buf[128];
    assert_string_equal(cw_trace_clock_format(t, &e->vc, buf, sizeof buf), "{alice:1, bob:4, carol:1}");
    assert_int_equal(cw_vc_get(&e->vc, (uint32_t) cw_trace_node_find(t, "bob")), 4);
    cw_trace_destroy(&t);
    assert_null(t);
    cw_trace_destroy(&t);
}

static void test_find(void **state)
{
    (void) state;
    cw_trace_t *t = load(PHASE3);
    char err[300];
    size_t i = 99;
    assert_int_equal(cw_trace_find(t, "bob:3", &i, err, sizeof err), CW_OK);
    assert_int_equal(i, 4);
    assert_int_equal(cw_trace_find(t, "carol:2", &i, err, sizeof err), CW_OK);
    assert_int_equal(i, 6);
    assert_int_equal(cw_trace_find(t, "alice:3", &i, err, sizeof err), CW_UNKNOWN_USER);
    assert_non_null(strstr(err, "alice has 2 events"));
    assert_int_equal(cw_trace_find(t, "alice:0", &i, err, sizeof err), CW_UNKNOWN_USER);
    assert_int_equal(cw_trace_find(t, "dave:1", &i, err, sizeof err), CW_UNKNOWN_USER);
    assert_non_null(strstr(err, "no process \"dave\""));
    assert_int_equal(cw_trace_find(t, "alice", &i, err, sizeof err), CW_BAD_REQUEST);
    assert_int_equal(cw_trace_find(t, "alice:", &i, err, sizeof err), CW_BAD_REQUEST);
    assert_int_equal(cw_trace_find(t, "alice:x1", &i, err, sizeof err), CW_BAD_REQUEST);
    assert_int_equal(cw_trace_find(t, ":1", &i, err, sizeof err), CW_BAD_REQUEST);
    assert_int_equal(cw_trace_find(t, "alice:-1", &i, err, sizeof err), CW_BAD_REQUEST);
    assert_int_equal(i, 6);   /* untouched by failures */
    cw_trace_destroy(&t);
}

/* Each line breaks one rule; the error names the field. */
static void test_rules(void **state)
{
    (void) state;
    static const struct { const char *line; const char *why; } bad[] = {
        {"[1,2]", "expected a JSON object"},
        {"{\"kind\":\"local\",\"clock\":{}}", "process: missing"},
        {"{\"process\":7,\"kind\":\"local\",\"clock\":{}}", "process: expected a string"},
        {"{\"process\":\"al ice\",\"kind\":\"local\",\"clock\":{}}", "process: bad name"},
        {"{\"process\":\"a|b\",\"kind\":\"local\",\"clock\":{}}", "process: bad name"},
        {"{\"process\":\"alice\",\"clock\":{}}", "kind: missing"},
        {"{\"process\":\"alice\",\"kind\":\"recv\",\"clock\":{}}", "kind: \"recv\""},
        {"{\"process\":\"alice\",\"kind\":\"local\"}", "clock: missing"},
        {"{\"process\":\"alice\",\"kind\":\"local\",\"clock\":[1]}", "clock: expected an object"},
        {"{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":-1}}", "non-negative integer"},
        {"{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":1.5}}", "non-negative integer"},
        {"{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"b b\":1}}", "clock: bad node name"},
        {"{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{},\"msg\":\"x\"}", "msg: a local event"},
        {"{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{},\"peers\":[\"bob\"]}", "peers: a local event"},
        {"{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{},\"peers\":[\"bob\"]}", "msg: a send event needs"},
        {"{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{},\"msg\":\"m\"}", "at least one recipient"},
        {"{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{},\"msg\":\"m\",\"peers\":\"bob\"}", "peers: expected an array"},
        {"{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{},\"msg\":\"m\",\"peers\":[1]}", "not a string"},
        {"{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{},\"msg\":\"m\",\"peers\":[\"b\",\"b\"]}", "listed twice"},
        {"{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{},\"msg\":\"m\",\"peers\":[\"b\"],\"broadcast\":true}", "broadcast send lists no peers"},
        {"{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{},\"msg\":\"m\",\"broadcast\":1}", "broadcast: expected true or false"},
        {"{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{},\"msg\":\"m\",\"peers\":[\"b\"],\"holdback_us\":5}", "holdback_us: only for deliver"},
        {"{\"process\":\"alice\",\"kind\":\"deliver\",\"clock\":{},\"msg\":\"m\",\"peers\":[]}", "exactly one peer"},
        {"{\"process\":\"alice\",\"kind\":\"deliver\",\"clock\":{},\"msg\":\"m\",\"peers\":[\"b\",\"c\"]}", "exactly one peer"},
        {"{\"process\":\"alice\",\"kind\":\"deliver\",\"clock\":{},\"msg\":\"m\",\"peers\":[\"b\"],\"broadcast\":true}", "broadcast: only for send"},
        {"{\"process\":\"alice\",\"kind\":\"deliver\",\"clock\":{},\"msg\":\"m\",\"peers\":[\"b\"],\"ts_us\":\"now\"}", "ts_us: expected"},
        {"{\"process\":\"alice\",\"kind\":\"deliver\",\"clock\":{},\"msg\":\"m\",\"peers\":[\"b\"],\"msg_clock\":5}", "msg_clock: expected an object"},
        {"{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{},\"text\":[]}", "text: expected a string"},
        {"{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{}", "column 45: expected ',' or '}'"},
    };
    cw_trace_t *t = cw_trace_new();
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[400] = "";
        int rc = cw_trace_add_json(t, bad[i].line, strlen(bad[i].line), i + 1, err, sizeof err);
        if (rc != CW_BAD_REQUEST || !strstr(err, bad[i].why))
            fail_msg("line %zu (%s): rc %d, err \"%s\", want \"%s\"", i, bad[i].line, rc, err, bad[i].why);
    }
    assert_int_equal(cw_trace_count(t), 0);
    assert_int_equal(cw_trace_processes(t), 0);

    /* Accepted: unknown fields ignored, null as absent, zero entries
     * dropped, empty text as none, comments and blank lines skipped. */
    static const char *good[] = {
        ("{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":1,\"zed\":0},\"future\":{\"x\":[1]},"
         "\"text\":null,\"msg\":null}"),
        "{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":2},\"text\":\"\"}",
        "   # a comment",
        "",
        "  \t ",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char err[400] = "";
        if (cw_trace_add_json(t, good[i], strlen(good[i]), i + 1, err, sizeof err) != CW_OK)
            fail_msg("good line %zu: %s", i, err);
    }
    assert_int_equal(cw_trace_count(t), 2);
    assert_int_equal(cw_trace_event(t, 0)->vc.n, 1);
    assert_null(cw_trace_event(t, 0)->text);
    assert_null(cw_trace_event(t, 1)->text);
    assert_int_equal(cw_trace_event(t, 1)->seq, 2);
    cw_trace_destroy(&t);
}

static int g_warnings;

static void count_warning(void *ctx, const char *msg)
{
    (void) ctx;
    assert_non_null(strstr(msg, ":3: column"));
    g_warnings++;
}

static void test_bad_file(void **state)
{
    (void) state;
    char *path = temp_file(
        "{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":1}}\n"
        "# comment\n"
        "{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":2}\n"
        "{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":2}}\r\n");
    cw_trace_t *t = cw_trace_new();
    char err[600];
    assert_int_equal(cw_trace_load_file(t, path, 0, NULL, NULL, err, sizeof err), CW_BAD_REQUEST);
    char want[400];
    snprintf(want, sizeof want, "%s:3: column 54: expected ',' or '}', found end of line", path);
    assert_string_equal(err, want);
    assert_int_equal(cw_trace_count(t), 1);   /* lines before the bad one stay */
    cw_trace_destroy(&t);

    t = cw_trace_new();
    g_warnings = 0;
    assert_int_equal(cw_trace_load_file(t, path, CW_TRACE_SKIP_BAD, count_warning, NULL, err, sizeof err), CW_OK);
    assert_int_equal(g_warnings, 1);
    assert_int_equal(cw_trace_count(t), 2);   /* CRLF line accepted */
    assert_int_equal(cw_trace_event(t, 1)->line, 4);
    cw_trace_destroy(&t);
    unlink(path);
    free(path);

    t = cw_trace_new();
    assert_int_equal(cw_trace_load_file(t, "/nonexistent/trace.jsonl", 0, NULL, NULL, err, sizeof err), CW_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/trace.jsonl: No such file"));
    cw_trace_destroy(&t);
}

static void test_long_line(void **state)
{
    (void) state;
    size_t n = CW_TRACE_MAX_LINE + 100;
    char *text = malloc(n + 2);
    assert_non_null(text);
    const char *head = "{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{},\"text\":\"";
    memcpy(text, head, strlen(head));
    memset(text + strlen(head), 'x', n - strlen(head) - 2);
    memcpy(text + n - 2, "\"}", 2);
    text[n] = '\n';
    text[n + 1] = '\0';
    char *path = temp_file(text);
    cw_trace_t *t = cw_trace_new();
    char err[600];
    assert_int_equal(cw_trace_load_file(t, path, 0, NULL, NULL, err, sizeof err), CW_BAD_REQUEST);
    assert_non_null(strstr(err, ":1: line longer than"));
    cw_trace_destroy(&t);
    unlink(path);
    free(path);
    free(text);
}

/* Every event's canonical line reads back to the same line. */
static void test_canonical_round_trip(void **state)
{
    (void) state;
    cw_trace_t *t = load(PHASE3);
    cw_trace_t *u = cw_trace_new();
    for (size_t i = 0; i < cw_trace_count(t); i++) {
        char *line = cw_event_to_json(cw_trace_event(t, i));
        assert_non_null(line);
        char err[300];
        assert_int_equal(cw_trace_add_json(u, line, strlen(line), i + 1, err, sizeof err), CW_OK);
        char *again = cw_event_to_json(cw_trace_event(u, i));
        assert_string_equal(line, again);
        free(line);
        free(again);
    }
    char *first = cw_event_to_json(cw_trace_event(t, 0));
    assert_string_equal(first, "{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{\"alice\":1},"
                               "\"msg\":\"alice:m1\",\"peers\":[\"bob\"],\"ts_us\":1700000000000000,"
                               "\"text\":\"hello bob\"}");
    free(first);
    cw_trace_destroy(&t);
    cw_trace_destroy(&u);
}

/* cw_trace_check on events built in C (the daemon's path). */
static void test_check_wire_event(void **state)
{
    (void) state;
    cw_clock_entry_msg_t a = CAUSEWAY__V1__CLOCK_ENTRY__INIT, b = CAUSEWAY__V1__CLOCK_ENTRY__INIT;
    a.node = "bob";
    a.counter = 1;
    b.node = "bob";
    b.counter = 2;
    cw_clock_entry_msg_t *clock[] = {&a, &b};
    cwc_event_t ev = {.process = "bob", .kind = CW_EV_LOCAL, .clock = clock, .n_clock = 2};
    char err[300];
    assert_int_equal(cw_trace_check(&ev, err, sizeof err), CW_BAD_REQUEST);
    assert_non_null(strstr(err, "node \"bob\" appears twice"));
    ev.n_clock = 1;
    assert_int_equal(cw_trace_check(&ev, err, sizeof err), CW_OK);
    ev.text = "\xC3\x28";
    assert_int_equal(cw_trace_check(&ev, err, sizeof err), CW_BAD_REQUEST);
    assert_non_null(strstr(err, "text: not valid UTF-8"));
    ev.text = NULL;
    ev.kind = 9;
    assert_int_equal(cw_trace_check(&ev, err, sizeof err), CW_BAD_REQUEST);
    assert_non_null(strstr(err, "kind"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_fixture),
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_bad_file),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_canonical_round_trip),
        cmocka_unit_test(test_check_wire_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
