/*  clockd_evstore_test: unit tests for clockd/evstore.c (the daemon's
 *  SQLite event store).
 *
 *  Appends the fixture events in batches, reads them back incrementally
 *  (id > last_id) and after reopening read-only (the CLI's --db path), and
 *  compares canonical JSON lines; checks the refusals: read-only appends,
 *  missing files, files that are not clockd stores, and a row that does not
 *  hold a valid event. Each test works in its own mkdtemp directory,
 *  removed at the end. Single-threaded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cw_status.h"
#include "evstore.h"
#include "trace.h"

#ifndef CW_CLOCKD_FIXTURES
#error "CW_CLOCKD_FIXTURES must name tests/clockd"
#endif

typedef struct {
    char dir[64];
    char db[128];
    cw_trace_t *fixture;
} ctx_t;

static int setup(void **state)
{
    ctx_t *c = calloc(1, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "/tmp/cw-clockd-store-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    snprintf(c->db, sizeof c->db, "%s/clockd.db", c->dir);
    c->fixture = cw_trace_new();
    char err[600];
    if (cw_trace_load_file(c->fixture, CW_CLOCKD_FIXTURES "/phase3.jsonl", 0, NULL, NULL, err, sizeof err) != CW_OK)
        return -1;
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx_t *c = *state;
    DIR *d = opendir(c->dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            char path[512];
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof path, "%s/%s", c->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(c->dir);
    cw_trace_destroy(&c->fixture);
    free(c);
    return 0;
}

static void append_range(cw_evstore_t *s, const cw_trace_t *t, size_t from, size_t to)
{
    const cwc_event_t *evs[16];
    for (size_t i = from; i < to; i++)
        evs[i - from] = cw_trace_event(t, i);
    char err[300];
    int rc = cw_evstore_append(s, evs, to - from, 1700000009000000ull, err, sizeof err);
    if (rc != CW_OK)
        fail_msg("append: %s", err);
}

static void assert_same(const cw_trace_t *a, const cw_trace_t *b)
{
    assert_int_equal(cw_trace_count(a), cw_trace_count(b));
    for (size_t i = 0; i < cw_trace_count(a); i++) {
        char *x = cw_event_to_json(cw_trace_event(a, i)), *y = cw_event_to_json(cw_trace_event(b, i));
        assert_string_equal(x, y);
        free(x);
        free(y);
    }
}

static void test_append_and_load(void **state)
{
    ctx_t *c = *state;
    int st;
    char err[300];
    cw_evstore_t *s = cw_evstore_open(c->db, 0, &st, err, sizeof err);
    assert_non_null(s);
    assert_int_equal(st, CW_OK);
    cw_trace_t *mirror = cw_trace_new();
    uint64_t last = 0;
    append_range(s, c->fixture, 0, 3);
    assert_int_equal(cw_evstore_load(s, mirror, &last, err, sizeof err), CW_OK);
    assert_int_equal(cw_trace_count(mirror), 3);
    assert_int_equal(last, 3);
    assert_int_equal(cw_trace_event(mirror, 2)->line, 3);   /* row id */
    append_range(s, c->fixture, 3, cw_trace_count(c->fixture));
    assert_int_equal(cw_evstore_load(s, mirror, &last, err, sizeof err), CW_OK);   /* only the new rows */
    assert_same(c->fixture, mirror);
    assert_int_equal(cw_evstore_count(s), cw_trace_count(c->fixture));
    assert_int_equal(cw_evstore_append(s, NULL, 0, 0, err, sizeof err), CW_OK);   /* empty batch */
    cw_evstore_close(&s);
    assert_null(s);
    cw_evstore_close(&s);

    /* Read-only, as the CLI's --db does: everything, in order. */
    s = cw_evstore_open(c->db, CW_EVSTORE_READONLY, &st, err, sizeof err);
    assert_non_null(s);
    cw_trace_t *ro = cw_trace_new();
    last = 0;
    assert_int_equal(cw_evstore_load(s, ro, &last, err, sizeof err), CW_OK);
    assert_same(c->fixture, ro);
    const cwc_event_t *one = cw_trace_event(c->fixture, 0);
    assert_int_equal(cw_evstore_append(s, &one, 1, 0, err, sizeof err), CW_ERR_INVALID);
    cw_evstore_close(&s);
    cw_trace_destroy(&ro);
    cw_trace_destroy(&mirror);

    /* Reopening read-write keeps the rows and continues the ids. */
    s = cw_evstore_open(c->db, 0, &st, err, sizeof err);
    append_range(s, c->fixture, 0, 1);
    assert_int_equal(cw_evstore_count(s), cw_trace_count(c->fixture) + 1);
    cw_evstore_close(&s);
}

static void test_refusals(void **state)
{
    ctx_t *c = *state;
    int st = CW_OK;
    char err[300], path[256];
    snprintf(path, sizeof path, "%s/missing.db", c->dir);
    assert_null(cw_evstore_open(path, CW_EVSTORE_READONLY, &st, err, sizeof err));
    assert_int_equal(st, CW_ERR_IO);
    assert_non_null(strstr(err, "no such store"));

    /* Another program's SQLite file. */
    snprintf(path, sizeof path, "%s/other.db", c->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE users(name TEXT)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_null(cw_evstore_open(path, 0, &st, err, sizeof err));
    assert_int_equal(st, CW_STORE_ERROR);
    assert_non_null(strstr(err, "not a causeway-clockd store"));
    assert_null(cw_evstore_open(path, CW_EVSTORE_READONLY, &st, err, sizeof err));
    assert_int_equal(st, CW_STORE_ERROR);

    /* Not SQLite at all. */
    snprintf(path, sizeof path, "%s/text.db", c->dir);
    FILE *f = fopen(path, "w");
    fputs("{\"process\":\"alice\"}\n this is a trace, not a database, and long enough to have a header\n", f);
    fclose(f);
    assert_null(cw_evstore_open(path, CW_EVSTORE_READONLY, &st, err, sizeof err));
    assert_int_equal(st, CW_STORE_ERROR);

    /* An empty new file opened read-only is not a store either. */
    snprintf(path, sizeof path, "%s/empty.db", c->dir);
    f = fopen(path, "w");
    fclose(f);
    assert_null(cw_evstore_open(path, CW_EVSTORE_READONLY, &st, err, sizeof err));
    assert_int_equal(st, CW_STORE_ERROR);
}

static void test_bad_row(void **state)
{
    ctx_t *c = *state;
    int st;
    char err[300];
    cw_evstore_t *s = cw_evstore_open(c->db, 0, &st, err, sizeof err);
    append_range(s, c->fixture, 0, 2);
    cw_evstore_close(&s);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(c->db, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO events(received_us, process, kind, event) "
                                      "VALUES (0, 'x', 'local', '{\"process\":\"x\"')", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    s = cw_evstore_open(c->db, CW_EVSTORE_READONLY, &st, err, sizeof err);
    assert_non_null(s);
    cw_trace_t *t = cw_trace_new();
    uint64_t last = 0;
    assert_int_equal(cw_evstore_load(s, t, &last, err, sizeof err), CW_BAD_REQUEST);
    assert_non_null(strstr(err, ": row 3: column"));
    assert_int_equal(last, 2);
    assert_int_equal(cw_trace_count(t), 2);
    cw_trace_destroy(&t);
    cw_evstore_close(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_append_and_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_row, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
