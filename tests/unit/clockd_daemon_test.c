/*  clockd_daemon_test: unit tests for clockd/daemon.c, driven in-process
 *  through cw_clockd_handle (the function the socket loop calls for every
 *  frame), so every reply can be checked without timing.
 *
 *  Reports the fixture tests/clockd/reordered.jsonl as ClockEvent batches,
 *  then checks audit (the three findings, with ids and clocks), compare,
 *  info, the all-or-nothing batch check, every error status, request_id 0,
 *  and that a restarted daemon reloads its store. The socket itself is
 *  bound to an inproc endpoint and never used here; tests/e2e/test_clockd.py
 *  drives the real loop over TCP. Each test has its own mkdtemp directory.
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

#include "causeway.pb-c.h"
#include "cw_log.h"
#include "cw_status.h"
#include "daemon.h"
#include "trace.h"

#ifndef CW_CLOCKD_FIXTURES
#error "CW_CLOCKD_FIXTURES must name tests/clockd"
#endif

typedef Causeway__V1__ClockdRequest request_t;
typedef Causeway__V1__ClockdReply reply_t;

typedef struct {
    char dir[64];
    char db[128];
    cw_clockd_t *d;
    cw_trace_t *fixture;
} ctx_t;

static cw_clockd_t *start(ctx_t *c, int n)
{
    cw_clockd_config_t cfg;
    cw_clockd_config_defaults(&cfg);
    char ep[64];
    snprintf(ep, sizeof ep, "inproc://clockd-test-%d-%d", (int) getpid(), n);
    cfg.bind = ep;
    cfg.db = c->db;
    cfg.max_frame = 64 * 1024;
    char err[300];
    cw_clockd_t *d = cw_clockd_new(&cfg, err, sizeof err);
    if (!d)
        fail_msg("cw_clockd_new: %s", err);
    assert_string_equal(cw_clockd_endpoint(d), ep);
    return d;
}

static int setup(void **state)
{
    cw_log_set_level(CW_LOG_ERROR);
    ctx_t *c = calloc(1, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "/tmp/cw-clockd-daemon-XXXXXX");
    if (!mkdtemp(c->dir))
        return -1;
    snprintf(c->db, sizeof c->db, "%s/clockd.db", c->dir);
    c->fixture = cw_trace_new();
    char err[600];
    if (cw_trace_load_file(c->fixture, CW_CLOCKD_FIXTURES "/reordered.jsonl", 0, NULL, NULL, err, sizeof err) != CW_OK)
        return -1;
    c->d = start(c, 0);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    ctx_t *c = *state;
    cw_clockd_destroy(&c->d);
    cw_trace_destroy(&c->fixture);
    char path[256];
    const char *files[] = {"clockd.db", "clockd.db-wal", "clockd.db-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", c->dir, files[i]);
        unlink(path);
    }
    rmdir(c->dir);
    free(c);
    return 0;
}

/* Packs req, handles it, unpacks the reply (NULL if none was produced). */
static reply_t *call_raw(cw_clockd_t *d, const void *frame, size_t len)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    assert_int_equal(cw_clockd_handle(d, frame, len, &out, &out_len), CW_OK);
    if (!out)
        return NULL;
    reply_t *r = causeway__v1__clockd_reply__unpack(NULL, out_len, out);
    assert_non_null(r);
    free(out);
    return r;
}

static reply_t *call(cw_clockd_t *d, const request_t *req)
{
    size_t len = causeway__v1__clockd_request__get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    causeway__v1__clockd_request__pack(req, buf);
    reply_t *r = call_raw(d, buf, len);
    free(buf);
    return r;
}

/* A report of the fixture's events [from, to), with one event optionally
 * replaced by a broken copy. */
static reply_t *report(ctx_t *c, size_t from, size_t to, uint64_t request_id, long broken)
{
    size_t n = to - from;
    Causeway__V1__ClockEvent *evs = calloc(n, sizeof *evs);
    Causeway__V1__ClockEvent **ptrs = calloc(n, sizeof *ptrs);
    cw_clock_entry_msg_t **items = calloc(n, sizeof *items), ***wire = calloc(n, sizeof *wire);
    for (size_t i = 0; i < n; i++) {
        const cwc_event_t *e = cw_trace_event(c->fixture, from + i);
        assert_int_equal(cw_trace_clock_wire(c->fixture, &e->vc, &items[i], &wire[i]), CW_OK);
        Causeway__V1__ClockEvent *m = &evs[i];
        causeway__v1__clock_event__init(m);
        m->process = (char *) e->process;
        m->kind = e->kind == CW_EV_SEND ? CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_SEND
                  : e->kind == CW_EV_DELIVER ? CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_DELIVER
                                             : CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_LOCAL;
        m->clock = wire[i];
        m->n_clock = e->vc.n;
        m->msg = (char *) e->msg;
        m->peers = (char **) e->peers;
        m->n_peers = e->n_peers;
        m->ts_us = e->ts_us;
        m->text = e->text ? (char *) e->text : (char *) "";
        if ((long) i == broken)
            m->kind = CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_UNSPECIFIED;
        ptrs[i] = m;
    }
    Causeway__V1__ClockEventBatch batch = CAUSEWAY__V1__CLOCK_EVENT_BATCH__INIT;
    batch.events = ptrs;
    batch.n_events = n;
    request_t req = CAUSEWAY__V1__CLOCKD_REQUEST__INIT;
    req.version = 1;
    req.request_id = request_id;
    req.body_case = CAUSEWAY__V1__CLOCKD_REQUEST__BODY_REPORT;
    req.report = &batch;
    reply_t *r = call(c->d, &req);
    for (size_t i = 0; i < n; i++) {
        free(items[i]);
        free(wire[i]);
    }
    free(items);
    free(wire);
    free(evs);
    free(ptrs);
    return r;
}

static void expect_status(const reply_t *r, int status, uint64_t request_id)
{
    assert_non_null(r);
    if ((int) r->status != status)
        fail_msg("status %s (%s), want %s", cw_status_name((int) r->status), r->detail, cw_status_name(status));
    assert_int_equal(r->request_id, request_id);
}

static void test_report_audit_compare(void **state)
{
    ctx_t *c = *state;
    reply_t *r = report(c, 0, 4, 7, -1);
    expect_status(r, CW_OK, 7);
    assert_int_equal(r->stored, 4);
    assert_int_equal(r->total_events, 4);
    assert_int_equal(r->processes, 1);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);
    r = report(c, 4, cw_trace_count(c->fixture), 8, -1);
    expect_status(r, CW_OK, 8);
    assert_int_equal(r->total_events, 8);
    assert_int_equal(r->processes, 2);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);

    Causeway__V1__ClockdAudit audit = CAUSEWAY__V1__CLOCKD_AUDIT__INIT;
    request_t req = CAUSEWAY__V1__CLOCKD_REQUEST__INIT;
    req.version = 1;
    req.request_id = 9;
    req.body_case = CAUSEWAY__V1__CLOCKD_REQUEST__BODY_AUDIT;
    req.audit = &audit;
    r = call(c->d, &req);
    expect_status(r, CW_OK, 9);
    assert_int_equal(r->total_findings, 3);
    assert_int_equal(r->n_findings, 3);
    assert_int_equal(r->findings[0]->kind, CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_CAUSAL_ORDER);
    assert_string_equal(r->findings[0]->process, "bob");
    assert_string_equal(r->findings[0]->event_a, "bob:1");
    assert_string_equal(r->findings[0]->event_b, "bob:2");
    assert_string_equal(r->findings[0]->msg, "alice:m2");
    assert_int_equal(r->findings[0]->n_clock_a, 2);
    assert_string_equal(r->findings[0]->clock_a[0]->node, "alice");
    assert_int_equal(r->findings[0]->clock_a[0]->counter, 2);
    assert_int_equal(r->findings[1]->kind, CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_DUPLICATE);
    assert_int_equal(r->findings[2]->kind, CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_GAP);
    assert_string_equal(r->findings[2]->event_b, "alice:3");
    causeway__v1__clockd_reply__free_unpacked(r, NULL);

    audit.max_findings = 1;   /* a smaller page */
    r = call(c->d, &req);
    assert_int_equal(r->total_findings, 3);
    assert_int_equal(r->n_findings, 1);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);

    Causeway__V1__ClockdCompare cmp = CAUSEWAY__V1__CLOCKD_COMPARE__INIT;
    cmp.a = "alice:1";
    cmp.b = "bob:4";
    req.request_id = 10;
    req.body_case = CAUSEWAY__V1__CLOCKD_REQUEST__BODY_COMPARE;
    req.compare = &cmp;
    r = call(c->d, &req);
    expect_status(r, CW_OK, 10);
    assert_int_equal(r->order, CAUSEWAY__V1__CLOCK_ORDER__CLOCK_ORDER_BEFORE);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);
    cmp.a = "bob:1";
    cmp.b = "alice:3";
    r = call(c->d, &req);
    assert_int_equal(r->order, CAUSEWAY__V1__CLOCK_ORDER__CLOCK_ORDER_CONCURRENT);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);
    cmp.b = "bob:9";
    r = call(c->d, &req);
    expect_status(r, CW_BAD_REQUEST, 10);
    assert_non_null(strstr(r->detail, "bob has 4 events"));
    causeway__v1__clockd_reply__free_unpacked(r, NULL);

    /* A restarted daemon reloads the store. */
    cw_clockd_destroy(&c->d);
    c->d = start(c, 1);
    assert_int_equal(cw_clockd_events(c->d), 8);
    Causeway__V1__ClockdInfo info = CAUSEWAY__V1__CLOCKD_INFO__INIT;
    req.request_id = 11;
    req.body_case = CAUSEWAY__V1__CLOCKD_REQUEST__BODY_INFO;
    req.info = &info;
    r = call(c->d, &req);
    expect_status(r, CW_OK, 11);
    assert_int_equal(r->total_events, 8);
    assert_int_equal(r->processes, 2);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);
}

static void test_batch_all_or_nothing(void **state)
{
    ctx_t *c = *state;
    reply_t *r = report(c, 0, 4, 1, 2);   /* the third event has no kind */
    expect_status(r, CW_BAD_REQUEST, 1);
    assert_non_null(strstr(r->detail, "event 2: kind"));
    assert_int_equal(r->stored, 0);
    assert_int_equal(r->total_events, 0);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);
    assert_int_equal(cw_clockd_events(c->d), 0);

    /* request_id 0: stored, no reply. */
    assert_null(report(c, 0, 2, 0, -1));
    assert_int_equal(cw_clockd_events(c->d), 2);
}

static void test_errors(void **state)
{
    ctx_t *c = *state;
    /* Not protobuf. */
    reply_t *r = call_raw(c->d, "\xff\xff\xff", 3);
    expect_status(r, CW_BAD_REQUEST, 0);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);

    /* Wrong version. */
    request_t req = CAUSEWAY__V1__CLOCKD_REQUEST__INIT;
    Causeway__V1__ClockdInfo info = CAUSEWAY__V1__CLOCKD_INFO__INIT;
    req.version = 2;
    req.request_id = 5;
    req.body_case = CAUSEWAY__V1__CLOCKD_REQUEST__BODY_INFO;
    req.info = &info;
    r = call(c->d, &req);
    expect_status(r, CW_UNSUPPORTED_VERSION, 5);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);

    /* No body. */
    req.version = 1;
    req.body_case = CAUSEWAY__V1__CLOCKD_REQUEST__BODY__NOT_SET;
    r = call(c->d, &req);
    expect_status(r, CW_BAD_REQUEST, 5);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);

    /* A body field from a newer protocol (field 20, empty message). */
    uint8_t newer[] = {0x08, 0x01, 0x10, 0x06, 0xa2, 0x01, 0x00};
    r = call_raw(c->d, newer, sizeof newer);
    expect_status(r, CW_UNKNOWN_TYPE, 6);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);

    /* Over max_frame (64 KiB in these tests). */
    size_t big = 65 * 1024;
    uint8_t *buf = calloc(1, big);
    r = call_raw(c->d, buf, big);
    expect_status(r, CW_TOO_LARGE, 0);
    causeway__v1__clockd_reply__free_unpacked(r, NULL);
    free(buf);

    /* A query without request_id gets no reply. */
    req.request_id = 0;
    req.body_case = CAUSEWAY__V1__CLOCKD_REQUEST__BODY_INFO;
    assert_null(call(c->d, &req));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_report_audit_compare, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
