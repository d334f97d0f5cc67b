/*  clockd_causal_test: unit tests for clockd/causal.c (the analyses).
 *
 *  Audit: the crafted fixture tests/clockd/reordered.jsonl (a reordered
 *  delivery, a duplicate and a gap) gives exactly those three findings; the
 *  clean fixture phase3.jsonl gives none; small inline traces trigger each
 *  clock-rule and unmatched case alone. Queries: compare / past / future /
 *  concurrent on phase3.jsonl against answers worked out by hand.
 *  Statistics: counts on phase3.jsonl; then property tests over random
 *  traces from a seeded simulation (oldest-first delivery, so causally
 *  clean): the audit finds nothing, the exact width equals a brute-force
 *  largest antichain, and the greedy bounds bracket it. The seed is printed
 *  on failure. Single-threaded; reads the fixtures only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "causal.h"
#include "cw_clock.h"
#include "cw_status.h"
#include "trace.h"
#include "clockd_audit_ref.h"

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

/* A trace from inline JSON lines (NULL-terminated). */
static cw_trace_t *inline_trace(const char *const *lines)
{
    cw_trace_t *t = cw_trace_new();
    for (size_t i = 0; lines[i]; i++) {
        char err[400];
        if (cw_trace_add_json(t, lines[i], strlen(lines[i]), i + 1, err, sizeof err) != CW_OK)
            fail_msg("line %zu: %s", i + 1, err);
    }
    return t;
}

static size_t idx(const cw_trace_t *t, const char *id)
{
    size_t i;
    char err[200];
    if (cw_trace_find(t, id, &i, err, sizeof err) != CW_OK)
        fail_msg("%s", err);
    return i;
}

static const char *id_of(const cw_trace_t *t, size_t i, char *buf)
{
    if (i == CW_NO_EVENT)
        return "-";
    return cw_event_id(cw_trace_event(t, i), buf, CW_EVENT_ID_MAX);
}

/* Checks finding k: kind, process, a, b (or "-"), msg. */
static void expect_finding(const cw_causal_t *c, size_t k, cw_finding_kind_t kind, const char *process,
                           const char *a, const char *b, const char *msg)
{
    const cw_trace_t *t = cw_causal_trace(c);
    const cw_finding_t *f = cw_causal_finding(c, k);
    assert_non_null(f);
    char ia[CW_EVENT_ID_MAX], ib[CW_EVENT_ID_MAX];
    if (f->kind != kind || strcmp(cw_trace_process_name(t, f->process), process) != 0
        || strcmp(id_of(t, f->a, ia), a) != 0 || strcmp(id_of(t, f->b, ib), b) != 0
        || strcmp(f->msg, msg) != 0)
        fail_msg("finding %zu is %s %s a=%s b=%s msg=%s (%s); want %s %s a=%s b=%s msg=%s", k,
                 cw_finding_kind_name(f->kind), cw_trace_process_name(t, f->process), ia, ib, f->msg,
                 f->detail, cw_finding_kind_name(kind), process, a, b, msg);
}

static void dump_findings(const cw_causal_t *c)
{
    for (size_t k = 0; k < cw_causal_findings(c); k++)
        print_message("  %s: %s\n", cw_finding_kind_name(cw_causal_finding(c, k)->kind),
                      cw_causal_finding(c, k)->detail);
}

/* ---- audit ---------------------------------------------------------------- */

static void test_audit_reordered_fixture(void **state)
{
    (void) state;
    cw_trace_t *t = load("reordered.jsonl");
    cw_causal_t *c = cw_causal_new(t);
    assert_non_null(c);
    assert_int_equal(cw_causal_audit(c), CW_OK);
    if (cw_causal_findings(c) != 3)
        dump_findings(c);
    assert_int_equal(cw_causal_findings(c), 3);
    expect_finding(c, 0, CW_FIND_CAUSAL_ORDER, "bob", "bob:1", "bob:2", "alice:m2");
    expect_finding(c, 1, CW_FIND_DUPLICATE, "bob", "bob:3", "bob:2", "alice:m1");
    expect_finding(c, 2, CW_FIND_GAP, "bob", "bob:4", "alice:3", "alice:m3");
    /* Details name the events and their clocks. */
    assert_string_equal(cw_causal_finding(c, 0)->detail,
                        "bob:1 delivered alice:m2 (sent at {alice:2}) before alice:m1 (sent at "
                        "{alice:1}), which happened before it and was delivered later as bob:2");
    assert_non_null(strstr(cw_causal_finding(c, 2)->detail, "never delivered alice:m3 (sent as alice:3 at {alice:3})"));
    /* A second audit returns the kept result. */
    assert_int_equal(cw_causal_audit(c), CW_OK);
    assert_int_equal(cw_causal_findings(c), 3);
    assert_null(cw_causal_finding(c, 3));
    cw_causal_destroy(&c);
    assert_null(c);
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

static void test_audit_clean_fixture(void **state)
{
    (void) state;
    cw_trace_t *t = load("phase3.jsonl");
    cw_causal_t *c = cw_causal_new(t);
    assert_int_equal(cw_causal_audit(c), CW_OK);
    if (cw_causal_findings(c))
        dump_findings(c);
    assert_int_equal(cw_causal_findings(c), 0);
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

static void test_audit_clock_rules(void **state)
{
    (void) state;
    static const char *const lines[] = {
        /* alice skips a counter: alice:2 has alice:3 after alice:1. */
        "{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":1}}",
        "{\"process\":\"alice\",\"kind\":\"local\",\"clock\":{\"alice\":3}}",
        /* carol starts at 2. */
        "{\"process\":\"carol\",\"kind\":\"local\",\"clock\":{\"carol\":2}}",
        /* dave's send learns an entry from nowhere. */
        "{\"process\":\"dave\",\"kind\":\"send\",\"clock\":{\"alice\":1,\"dave\":1},\"msg\":\"dave:1\",\"peers\":[\"bob\"]}",
        /* bob delivers dave:1 without merging its clock. */
        "{\"process\":\"bob\",\"kind\":\"deliver\",\"clock\":{\"bob\":1},\"msg\":\"dave:1\",\"peers\":[\"dave\"]}",
        NULL,
    };
    cw_trace_t *t = inline_trace(lines);
    cw_causal_t *c = cw_causal_new(t);
    assert_int_equal(cw_causal_audit(c), CW_OK);
    if (cw_causal_findings(c) != 4)
        dump_findings(c);
    assert_int_equal(cw_causal_findings(c), 4);
    expect_finding(c, 0, CW_FIND_CLOCK_RULE, "alice", "alice:2", "alice:1", "");
    expect_finding(c, 1, CW_FIND_CLOCK_RULE, "carol", "carol:1", "-", "");
    expect_finding(c, 2, CW_FIND_CLOCK_RULE, "dave", "dave:1", "-", "dave:1");
    expect_finding(c, 3, CW_FIND_CLOCK_RULE, "bob", "bob:1", "dave:1", "dave:1");
    assert_non_null(strstr(cw_causal_finding(c, 0)->detail, "own entry alice:3, expected 2"));
    assert_non_null(strstr(cw_causal_finding(c, 2)->detail, "changed entry alice from 0 to 1"));
    assert_non_null(strstr(cw_causal_finding(c, 3)->detail, "entry alice is 0, needs >= 1"));
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

static void test_audit_msg_clock(void **state)
{
    (void) state;
    static const char *const lines[] = {
        "{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{\"alice\":1},\"msg\":\"a1\",\"peers\":[\"bob\"]}",
        /* The message arrives stamped differently from its send (rewritten). */
        "{\"process\":\"bob\",\"kind\":\"deliver\",\"clock\":{\"alice\":1,\"bob\":1},\"msg\":\"a1\","
        "\"peers\":[\"alice\"],\"msg_clock\":{\"alice\":1,\"zoe\":1}}",
        /* Without a send event, msg_clock is the reference for the merge rule. */
        "{\"process\":\"bob\",\"kind\":\"deliver\",\"clock\":{\"alice\":1,\"bob\":2},\"msg\":\"z9\","
        "\"peers\":[\"zoe\"],\"msg_clock\":{\"zoe\":3}}",
        NULL,
    };
    cw_trace_t *t = inline_trace(lines);
    cw_causal_t *c = cw_causal_new(t);
    assert_int_equal(cw_causal_audit(c), CW_OK);
    if (cw_causal_findings(c) != 3)
        dump_findings(c);
    assert_int_equal(cw_causal_findings(c), 3);
    expect_finding(c, 0, CW_FIND_CLOCK_RULE, "bob", "bob:1", "alice:1", "a1");
    assert_non_null(strstr(cw_causal_finding(c, 0)->detail, "stamped {alice:1, zoe:1}"));
    expect_finding(c, 1, CW_FIND_CLOCK_RULE, "bob", "bob:2", "-", "z9");
    assert_non_null(strstr(cw_causal_finding(c, 1)->detail, "entry zoe is 0, needs >= 3"));
    expect_finding(c, 2, CW_FIND_UNMATCHED, "bob", "bob:2", "-", "z9");
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

/* Issue 11 item 20: the detail of a broken merge quotes the previous
 * event's clock as "the previous clock" and the message's clock as the
 * message's, also when the delivery's msg_clock differs from its send's
 * clock (a first finding about the delivery). */
static void test_audit_merge_detail(void **state)
{
    (void) state;
    static const char *const lines[] = {
        "{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{\"alice\":1},\"msg\":\"a1\",\"peers\":[\"bob\"]}",
        "{\"process\":\"bob\",\"kind\":\"local\",\"clock\":{\"bob\":1}}",
        /* Stamped {alice:5} although sent at {alice:1}, and not merged at all. */
        "{\"process\":\"bob\",\"kind\":\"deliver\",\"clock\":{\"bob\":2},\"msg\":\"a1\","
        "\"peers\":[\"alice\"],\"msg_clock\":{\"alice\":5}}",
        /* No send in the trace: the stamped clock is the message's. */
        "{\"process\":\"bob\",\"kind\":\"deliver\",\"clock\":{\"bob\":3},\"msg\":\"z9\","
        "\"peers\":[\"zoe\"],\"msg_clock\":{\"zoe\":3}}",
        NULL,
    };
    cw_trace_t *t = inline_trace(lines);
    cw_causal_t *c = cw_causal_new(t);
    assert_int_equal(cw_causal_audit(c), CW_OK);
    if (cw_causal_findings(c) != 4)
        dump_findings(c);
    assert_int_equal(cw_causal_findings(c), 4);
    expect_finding(c, 0, CW_FIND_CLOCK_RULE, "bob", "bob:2", "alice:1", "a1");
    expect_finding(c, 1, CW_FIND_CLOCK_RULE, "bob", "bob:2", "alice:1", "a1");
    const char *d0 = cw_causal_finding(c, 0)->detail, *d1 = cw_causal_finding(c, 1)->detail;
    const char *merge = strstr(d0, "the merge of") ? d0 : d1;
    const char *stamp = merge == d0 ? d1 : d0;
    assert_non_null(strstr(stamp, "stamped {alice:5}, but its send alice:1 has clock {alice:1}"));
    assert_non_null(strstr(merge, "with clock {bob:2}, which is not >= {alice:1, bob:1}, the merge "
                                  "of the previous clock {bob:1} and the message's clock {alice:1} "
                                  "from alice:1: entry alice is 0, needs >= 1"));
    expect_finding(c, 2, CW_FIND_CLOCK_RULE, "bob", "bob:3", "-", "z9");
    assert_non_null(strstr(cw_causal_finding(c, 2)->detail,
                           "the merge of the previous clock {bob:2} and the message's clock "
                           "{zoe:3} as stamped: entry zoe is 0, needs >= 3"));
    expect_finding(c, 3, CW_FIND_UNMATCHED, "bob", "bob:3", "-", "z9");
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

static void test_audit_unmatched(void **state)
{
    (void) state;
    static const char *const lines[] = {
        "{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{\"alice\":1},\"msg\":\"k1\",\"peers\":[\"bob\"]}",
        /* alice reuses the key k1. */
        "{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{\"alice\":2},\"msg\":\"k1\",\"peers\":[\"bob\"]}",
        /* carol delivers k1, which was not addressed to her. */
        "{\"process\":\"carol\",\"kind\":\"deliver\",\"clock\":{\"alice\":1,\"carol\":1},\"msg\":\"k1\",\"peers\":[\"alice\"]}",
        /* bob delivers k1 naming the wrong sender. */
        "{\"process\":\"bob\",\"kind\":\"deliver\",\"clock\":{\"alice\":1,\"bob\":1},\"msg\":\"k1\",\"peers\":[\"carol\"]}",
        /* bob delivers a message nobody sent. */
        "{\"process\":\"bob\",\"kind\":\"deliver\",\"clock\":{\"alice\":1,\"bob\":2},\"msg\":\"ghost\",\"peers\":[\"alice\"]}",
        NULL,
    };
    cw_trace_t *t = inline_trace(lines);
    cw_causal_t *c = cw_causal_new(t);
    size_t s;
    assert_int_equal(cw_causal_send_of(c, "k1", &s), CW_OK);
    assert_int_equal(s, 0);   /* the first send owns the key */
    assert_int_equal(cw_causal_send_of(c, "ghost", &s), CW_UNKNOWN_USER);
    assert_int_equal(cw_causal_audit(c), CW_OK);
    if (cw_causal_findings(c) != 4)
        dump_findings(c);
    assert_int_equal(cw_causal_findings(c), 4);
    expect_finding(c, 0, CW_FIND_UNMATCHED, "alice", "alice:2", "alice:1", "k1");
    expect_finding(c, 1, CW_FIND_UNMATCHED, "carol", "carol:1", "alice:1", "k1");
    assert_non_null(strstr(cw_causal_finding(c, 1)->detail, "did not address to carol"));
    expect_finding(c, 2, CW_FIND_UNMATCHED, "bob", "bob:1", "alice:1", "k1");
    assert_non_null(strstr(cw_causal_finding(c, 2)->detail, "as from carol, but alice sent it"));
    expect_finding(c, 3, CW_FIND_UNMATCHED, "bob", "bob:2", "-", "ghost");
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

/* A broadcast is addressed to every other process; its loss is a gap. */
static void test_audit_broadcast_gap(void **state)
{
    (void) state;
    static const char *const lines[] = {
        "{\"process\":\"alice\",\"kind\":\"send\",\"clock\":{\"alice\":1},\"msg\":\"b1\",\"broadcast\":true}",
        "{\"process\":\"bob\",\"kind\":\"deliver\",\"clock\":{\"alice\":1,\"bob\":1},\"msg\":\"b1\",\"peers\":[\"alice\"]}",
        "{\"process\":\"bob\",\"kind\":\"send\",\"clock\":{\"alice\":1,\"bob\":2},\"msg\":\"b2\",\"peers\":[\"carol\"]}",
        /* carol gets bob's b2 (which depends on b1) but never b1. */
        "{\"process\":\"carol\",\"kind\":\"deliver\",\"clock\":{\"alice\":1,\"bob\":2,\"carol\":1},\"msg\":\"b2\",\"peers\":[\"bob\"]}",
        NULL,
    };
    cw_trace_t *t = inline_trace(lines);
    cw_causal_t *c = cw_causal_new(t);
    assert_int_equal(cw_causal_audit(c), CW_OK);
    if (cw_causal_findings(c) != 1)
        dump_findings(c);
    assert_int_equal(cw_causal_findings(c), 1);
    expect_finding(c, 0, CW_FIND_GAP, "carol", "carol:1", "alice:1", "b1");
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

/* ---- queries ---------------------------------------------------------------- */

static void expect_related(const cw_causal_t *c, const char *e, cw_relation_t rel, const char *want)
{
    const cw_trace_t *t = cw_causal_trace(c);
    size_t *list = NULL, n = 0;
    assert_int_equal(cw_causal_related(c, idx(t, e), rel, &list, &n), CW_OK);
    char got[512] = "";
    for (size_t i = 0; i < n; i++) {
        char id[CW_EVENT_ID_MAX];
        strcat(got, i ? " " : "");
        strcat(got, cw_event_id(cw_trace_event(t, list[i]), id, sizeof id));
    }
    free(list);
    if (strcmp(got, want) != 0)
        fail_msg("relation %d of %s: got \"%s\", want \"%s\"", (int) rel, e, got, want);
}

static void test_queries(void **state)
{
    (void) state;
    cw_trace_t *t = load("phase3.jsonl");
    cw_causal_t *c = cw_causal_new(t);
    assert_int_equal(cw_causal_compare(c, idx(t, "alice:1"), idx(t, "carol:2")), CW_CLOCK_BEFORE);
    assert_int_equal(cw_causal_compare(c, idx(t, "carol:2"), idx(t, "alice:1")), CW_CLOCK_AFTER);
    assert_int_equal(cw_causal_compare(c, idx(t, "bob:1"), idx(t, "carol:1")), CW_CLOCK_CONCURRENT);
    assert_int_equal(cw_causal_compare(c, idx(t, "alice:2"), idx(t, "bob:4")), CW_CLOCK_CONCURRENT);
    assert_int_equal(cw_causal_compare(c, idx(t, "carol:1"), idx(t, "bob:4")), CW_CLOCK_BEFORE);
    assert_int_equal(cw_causal_compare(c, idx(t, "bob:2"), idx(t, "bob:2")), CW_CLOCK_EQUAL);
    assert_string_equal(cw_clock_order_name(CW_CLOCK_CONCURRENT), "concurrent");

    expect_related(c, "bob:3", CW_REL_PAST, "alice:1 bob:1 bob:2");
    expect_related(c, "bob:3", CW_REL_FUTURE, "carol:2 bob:4");
    expect_related(c, "bob:3", CW_REL_CONCURRENT, "carol:1 alice:2");
    expect_related(c, "alice:1", CW_REL_PAST, "");
    expect_related(c, "alice:1", CW_REL_FUTURE, "bob:2 bob:3 alice:2 carol:2 bob:4");
    expect_related(c, "alice:1", CW_REL_CONCURRENT, "bob:1 carol:1");
    expect_related(c, "bob:4", CW_REL_PAST, "alice:1 bob:1 bob:2 carol:1 bob:3");
    expect_related(c, "bob:4", CW_REL_CONCURRENT, "alice:2 carol:2");
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

/* ---- statistics --------------------------------------------------------------- */

static int is_antichain(const cw_causal_t *c, const size_t *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = i + 1; j < n; j++)
            if (cw_causal_compare(c, a[i], a[j]) != CW_CLOCK_CONCURRENT)
                return 0;
    return 1;
}

static void test_stats_fixture(void **state)
{
    (void) state;
    cw_trace_t *t = load("phase3.jsonl");
    cw_causal_t *c = cw_causal_new(t);
    const cwc_stats_t *s;
    assert_int_equal(cw_causal_stats(c, NULL, &s), CW_OK);
    assert_int_equal(s->events, 8);
    assert_int_equal(s->processes, 3);
    assert_int_equal(s->sends, 3);
    assert_int_equal(s->delivers, 4);
    assert_int_equal(s->locals, 1);
    assert_int_equal(s->messages, 3);
    assert_int_equal(s->messages_delivered, 3);
    assert_int_equal(s->deliveries_matched, 4);
    assert_true(s->pairs_counted);
    assert_int_equal(s->pairs, 28);
    assert_int_equal(s->ordered_pairs, 17);
    assert_int_equal(s->concurrent_pairs, 11);
    assert_int_equal(s->equal_pairs, 0);
    assert_int_equal(s->width, 3);
    assert_true(s->width_exact);
    assert_true(is_antichain(c, s->antichain, s->width));
    assert_int_equal(s->clock_min, 1);
    assert_int_equal(s->clock_max, 3);
    assert_int_equal(s->clock_hist[1], 3);
    assert_int_equal(s->clock_hist[2], 3);
    assert_int_equal(s->clock_hist[3], 2);
    assert_int_equal(s->holdback_n, 2);
    assert_int_equal(s->holdback_min, 0);
    assert_int_equal(s->holdback_max, 1500);
    assert_int_equal(s->holdback_p50, 0);
    assert_int_equal(s->holdback_p99, 1500);

    /* Forcing the greedy path: bounds around 3, an antichain of lower. */
    cw_stats_options_t o;
    cw_stats_options_init(&o);
    o.exact_width_max = 0;
    o.pairs_max = 4;
    assert_int_equal(cw_causal_stats(c, &o, &s), CW_OK);
    assert_false(s->pairs_counted);
    assert_true(s->width_lower <= 3 && s->width_upper >= 3);
    assert_true(is_antichain(c, s->antichain, s->width_lower));
    assert_int_equal(s->width_exact, s->width_lower == s->width_upper);
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

static void test_stats_empty(void **state)
{
    (void) state;
    cw_trace_t *t = cw_trace_new();
    cw_causal_t *c = cw_causal_new(t);
    const cwc_stats_t *s;
    assert_int_equal(cw_causal_stats(c, NULL, &s), CW_OK);
    assert_int_equal(s->events, 0);
    assert_int_equal(s->width, 0);
    assert_true(s->width_exact);
    assert_int_equal(cw_causal_audit(c), CW_OK);
    assert_int_equal(cw_causal_findings(c), 0);
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
}

/* ---- random traces --------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

#define SIM_PROCS 4
#define SIM_MAXMSG 64

/* Simulates a run with correct clocks and oldest-first delivery: a linear
 * extension of the sends, so every receiver delivers in causal order and
 * never skips a message. Returns a trace of about n_events events. */
static cw_trace_t *simulate(size_t n_events)
{
    static const char *names[SIM_PROCS] = {"p0", "p1", "p2", "p3"};
    cw_clock_t *clocks[SIM_PROCS];
    for (int p = 0; p < SIM_PROCS; p++)
        clocks[p] = cw_clock_new();
    struct { int from, to; char key[16]; cw_clock_t *clock; int done; } msgs[SIM_MAXMSG];
    size_t n_msgs = 0;
    cw_trace_t *t = cw_trace_new();
    char err[300];
    for (size_t step = 0; cw_trace_count(t) < n_events; step++) {
        int p = (int) (rnd() % SIM_PROCS);
        int action = (int) (rnd() % 3);
        cw_clock_entry_msg_t **e;
        size_t ne;
        cwc_event_t ev = {.process = names[p]};
        const char *peer[1];
        if (action == 0 && n_msgs < SIM_MAXMSG) {
            int to = (p + 1 + (int) (rnd() % (SIM_PROCS - 1))) % SIM_PROCS;
            cw_clock_tick(clocks[p], names[p]);
            msgs[n_msgs].from = p;
            msgs[n_msgs].to = to;
            snprintf(msgs[n_msgs].key, sizeof msgs[n_msgs].key, "m%zu", n_msgs);
            msgs[n_msgs].clock = cw_clock_new();
            ne = cw_clock_entries(clocks[p], &e);
            cw_clock_merge(msgs[n_msgs].clock, e, ne);
            msgs[n_msgs].done = 0;
            peer[0] = names[to];
            ev.kind = CW_EV_SEND;
            ev.msg = msgs[n_msgs].key;
            ev.peers = peer;
            ev.n_peers = 1;
            n_msgs++;
        } else if (action == 1) {
            size_t m;
            for (m = 0; m < n_msgs && (msgs[m].done || msgs[m].to != p); m++)
                ;
            if (m == n_msgs)
                continue;
            msgs[m].done = 1;
            ne = cw_clock_entries(msgs[m].clock, &e);
            cw_clock_merge(clocks[p], e, ne);
            cw_clock_tick(clocks[p], names[p]);
            peer[0] = names[msgs[m].from];
            ev.kind = CW_EV_DELIVER;
            ev.msg = msgs[m].key;
            ev.peers = peer;
            ev.n_peers = 1;
        } else {
            cw_clock_tick(clocks[p], names[p]);
            ev.kind = CW_EV_LOCAL;
        }
        ev.n_clock = cw_clock_entries(clocks[p], &ev.clock);
        if (cw_trace_add(t, &ev, step + 1, err, sizeof err) != CW_OK)
            fail_msg("simulate: %s", err);
    }
    for (int p = 0; p < SIM_PROCS; p++)
        cw_clock_destroy(&clocks[p]);
    for (size_t m = 0; m < n_msgs; m++)
        cw_clock_destroy(&msgs[m].clock);
    return t;
}

/* Largest antichain by trying every subset (n <= 16). */
static size_t brute_width(const cw_causal_t *c, size_t n)
{
    size_t best = 0;
    for (uint32_t set = 1; set < (1u << n); set++) {
        size_t k = (size_t) __builtin_popcount(set);
        if (k <= best)
            continue;
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++) {
            if (!(set & (1u << i)))
                continue;
            for (size_t j = i + 1; j < n && ok; j++)
                if ((set & (1u << j)) && cw_causal_compare(c, i, j) != CW_CLOCK_CONCURRENT)
                    ok = 0;
        }
        if (ok)
            best = k;
    }
    return best;
}

static void test_prop_random_traces(void **state)
{
    (void) state;
    for (uint64_t seed = 1; seed <= 60; seed++) {
        rng_state = seed * 0x9E3779B97F4A7C15ull;
        size_t n = 6 + (size_t) (seed % 11);   /* 6..16 events */
        cw_trace_t *t = simulate(n);
        cw_causal_t *c = cw_causal_new(t);
        assert_int_equal(cw_causal_audit(c), CW_OK);
        if (cw_causal_findings(c)) {
            dump_findings(c);
            fail_msg("seed %llu: a causally clean run has findings", (unsigned long long) seed);
        }
        const cwc_stats_t *s;
        assert_int_equal(cw_causal_stats(c, NULL, &s), CW_OK);
        size_t brute = brute_width(c, cw_trace_count(t));
        if (!s->width_exact || s->width != brute || !is_antichain(c, s->antichain, s->width))
            fail_msg("seed %llu: exact width %zu (exact %d), brute force %zu", (unsigned long long) seed,
                     s->width, s->width_exact, brute);
        assert_true(s->ordered_pairs + s->concurrent_pairs + s->equal_pairs == s->pairs);
        cw_stats_options_t o;
        cw_stats_options_init(&o);
        o.exact_width_max = 0;
        assert_int_equal(cw_causal_stats(c, &o, &s), CW_OK);
        if (s->width_lower > brute || s->width_upper < brute || s->width_upper > SIM_PROCS
            || !is_antichain(c, s->antichain, s->width_lower))
            fail_msg("seed %llu: greedy bounds [%zu, %zu] miss %zu", (unsigned long long) seed,
                     s->width_lower, s->width_upper, brute);
        cw_causal_destroy(&c);
        cw_trace_destroy(&t);
    }
}

/* Swapping two causally ordered deliveries at one receiver is caught. */
static void test_prop_swap_is_caught(void **state)
{
    (void) state;
    int caught = 0;
    for (uint64_t seed = 100; seed < 160; seed++) {
        rng_state = seed * 0x9E3779B97F4A7C15ull;
        cw_trace_t *t = simulate(24);
        cw_causal_t *c = cw_causal_new(t);
        /* Find a receiver with two deliveries whose sends are ordered. */
        size_t d1 = CW_NO_EVENT, d2 = CW_NO_EVENT;
        for (size_t i = 0; i < cw_trace_count(t) && d2 == CW_NO_EVENT; i++) {
            const cwc_event_t *a = cw_trace_event(t, i);
            if (a->kind != CW_EV_DELIVER)
                continue;
            for (size_t j = i + 1; j < cw_trace_count(t) && d2 == CW_NO_EVENT; j++) {
                const cwc_event_t *b = cw_trace_event(t, j);
                size_t sa, sb;
                if (b->kind != CW_EV_DELIVER || b->proc != a->proc)
                    continue;
                cw_causal_send_of(c, a->msg, &sa);
                cw_causal_send_of(c, b->msg, &sb);
                if (cw_causal_compare(c, sa, sb) == CW_CLOCK_BEFORE) {
                    d1 = i;
                    d2 = j;
                }
            }
        }
        if (d2 == CW_NO_EVENT) {
            cw_causal_destroy(&c);
            cw_trace_destroy(&t);
            continue;
        }
        /* Rebuild the trace with the two messages' keys swapped at that
         * receiver (clocks unchanged): the receiver now claims to have
         * delivered the later message first. */
        cw_trace_t *u = cw_trace_new();
        for (size_t i = 0; i < cw_trace_count(t); i++) {
            cwc_event_t ev = *cw_trace_event(t, i);
            const cwc_event_t *other = i == d1 ? cw_trace_event(t, d2) : i == d2 ? cw_trace_event(t, d1) : NULL;
            if (other) {
                ev.msg = other->msg;
                ev.peers = other->peers;
            }
            char err[300];
            assert_int_equal(cw_trace_add(u, &ev, i + 1, err, sizeof err), CW_OK);
        }
        cw_causal_t *cu = cw_causal_new(u);
        assert_int_equal(cw_causal_audit(cu), CW_OK);
        int found = 0;
        for (size_t k = 0; k < cw_causal_findings(cu); k++) {
            const cw_finding_t *f = cw_causal_finding(cu, k);
            if (f->kind == CW_FIND_CAUSAL_ORDER && f->a == d1)
                found = 1;
        }
        if (!found) {
            dump_findings(cu);
            fail_msg("seed %llu: swapped deliveries %zu/%zu not reported", (unsigned long long) seed, d1, d2);
        }
        caught++;
        cw_causal_destroy(&cu);
        cw_trace_destroy(&u);
        cw_causal_destroy(&c);
        cw_trace_destroy(&t);
    }
    assert_true(caught >= 10);   /* the property was exercised */
}

/* ---- differential: the fast audit against the old one -------------------------- */

/* Appends a clock {"pN":c,...} (dense, zeros left out) to buf. */
static int put_dense(char *buf, size_t size, const uint64_t *c, int np, int extra_zoe)
{
    int off = snprintf(buf, size, "{");
    int first = 1;
    for (int q = 0; q < np; q++)
        if (c[q]) {
            off += snprintf(buf + off, size - (size_t) off, "%s\"p%d\":%llu", first ? "" : ",", q,
                            (unsigned long long) c[q]);
            first = 0;
        }
    if (extra_zoe)
        off += snprintf(buf + off, size - (size_t) off, "%s\"zoe\":%d", first ? "" : ",", extra_zoe);
    off += snprintf(buf + off, size - (size_t) off, "}");
    return off;
}

#define DF_PROCS 6
#define DF_MSGS 512

/* A random trace with every kind of fault: reordered, repeated, dropped,
 * misaddressed and unknown deliveries, reused keys, broadcasts, unmerged
 * clocks, own entries going back or missing, other entries changed,
 * rewritten message clocks, a node without events. */
static cw_trace_t *faulty_trace(size_t n_events, int np)
{
    uint64_t clocks[DF_PROCS][DF_PROCS];
    memset(clocks, 0, sizeof clocks);
    struct { int from; int to[2]; int nto; int bcast; uint64_t clock[DF_PROCS]; char key[24]; int left; } msgs[DF_MSGS];
    size_t n_msgs = 0;
    cw_trace_t *t = cw_trace_new();
    char line[2048], cbuf[512], mbuf[512];
    while (cw_trace_count(t) < n_events) {
        int p = (int) (rnd() % (uint64_t) np);
        uint64_t *c = clocks[p];
        unsigned roll = (unsigned) (rnd() % 100);
        int zoe = rnd() % 40 == 0 ? 1 + (int) (rnd() % 3) : 0;
        if (roll < 40 && n_msgs < DF_MSGS) {                    /* send */
            c[p]++;
            msgs[n_msgs].from = p;
            msgs[n_msgs].bcast = rnd() % 20 == 0;
            msgs[n_msgs].nto = msgs[n_msgs].bcast ? 0 : 1 + (int) (rnd() % 2);
            for (int k = 0; k < msgs[n_msgs].nto; k++) {
                int r;
                do
                    r = (int) (rnd() % (uint64_t) np);
                while (r == p || (k == 1 && r == msgs[n_msgs].to[0]));
                msgs[n_msgs].to[k] = r;
                if (np == 2)
                    msgs[n_msgs].nto = 1;
            }
            uint64_t save = c[p];
            unsigned fault = (unsigned) (rnd() % 20);
            if (fault == 0)
                c[p] = 0;                                       /* a send without its own entry */
            else if (fault == 1 && c[p] > 2)
                c[p] -= 2;                                      /* or with one gone back */
            memcpy(msgs[n_msgs].clock, c, sizeof msgs[n_msgs].clock);
            if (rnd() % 30 == 0 && n_msgs)   /* reuse an earlier key */
                memcpy(msgs[n_msgs].key, msgs[rnd() % n_msgs].key, sizeof msgs[n_msgs].key);
            else
                snprintf(msgs[n_msgs].key, sizeof msgs[n_msgs].key, "p%d:%llu", p, (unsigned long long) save);
            msgs[n_msgs].left = msgs[n_msgs].bcast ? np - 1 : msgs[n_msgs].nto;
            put_dense(cbuf, sizeof cbuf, c, np, zoe);
            char peers[64];
            if (msgs[n_msgs].bcast)
                snprintf(peers, sizeof peers, "[],\"broadcast\":true");
            else if (msgs[n_msgs].nto == 1)
                snprintf(peers, sizeof peers, "[\"p%d\"]", msgs[n_msgs].to[0]);
            else
                snprintf(peers, sizeof peers, "[\"p%d\",\"p%d\"]", msgs[n_msgs].to[0], msgs[n_msgs].to[1]);
            snprintf(line, sizeof line, "{\"process\":\"p%d\",\"kind\":\"send\",\"clock\":%s,\"msg\":\"%s\",\"peers\":%s}",
                     p, cbuf, msgs[n_msgs].key, peers);
            c[p] = save;
            n_msgs++;
        } else if (roll < 85 && n_msgs) {                       /* deliver */
            /* Mostly the oldest message addressed to p; sometimes any. */
            size_t m = SIZE_MAX;
            int any = rnd() % 4 == 0;
            for (size_t k = 0; k < n_msgs && m == SIZE_MAX; k++) {
                size_t i = any ? (size_t) (rnd() % n_msgs) : k;
                int to_p = msgs[i].bcast ? msgs[i].from != p
                           : (msgs[i].to[0] == p || (msgs[i].nto > 1 && msgs[i].to[1] == p));
                if ((to_p && msgs[i].left > 0) || rnd() % 50 == 0)
                    m = i;
            }
            if (m == SIZE_MAX)
                continue;
            if (rnd() % 20 == 0) {                              /* dropped */
                msgs[m].left--;
                continue;
            }
            if (rnd() % 8 != 0)
                msgs[m].left--;                                 /* else: delivered again later */
            if (rnd() % 10 != 0)                                /* else: not merged */
                for (int q = 0; q < np; q++)
                    if (msgs[m].clock[q] > c[q])
                        c[q] = msgs[m].clock[q];
            c[p]++;
            put_dense(cbuf, sizeof cbuf, c, np, zoe);
            uint64_t mc[DF_PROCS];
            memcpy(mc, msgs[m].clock, sizeof mc);
            if (rnd() % 15 == 0)
                mc[rnd() % (uint64_t) np] += 1;                 /* rewritten on the way */
            put_dense(mbuf, sizeof mbuf, mc, np, 0);
            int from = rnd() % 30 == 0 ? (int) (rnd() % (uint64_t) np) : msgs[m].from;
            const char *key = rnd() % 30 == 0 ? "nobody:1" : msgs[m].key;
            int with_mc = rnd() % 3 != 0;
            snprintf(line, sizeof line, "{\"process\":\"p%d\",\"kind\":\"deliver\",\"clock\":%s,\"msg\":\"%s\","
                     "\"peers\":[\"p%d\"]%s%s}", p, cbuf, key, from, with_mc ? ",\"msg_clock\":" : "",
                     with_mc ? mbuf : "");
        } else {                                                /* local */
            c[p]++;
            uint64_t save = c[p], other = 0;
            int q = (int) (rnd() % (uint64_t) np);
            unsigned fault = (unsigned) (rnd() % 25);
            if (fault == 0 && c[p] > 2)
                c[p] -= 2;                                      /* 1, 2, 1 */
            else if (fault == 1)
                c[p] += 1;                                      /* skips one */
            else if (fault == 2)
                c[p] = 0;                                       /* no own entry */
            else if (fault == 3 && q != p) {
                other = c[q];
                c[q] += 1;                                      /* changes another entry */
            }
            put_dense(cbuf, sizeof cbuf, c, np, zoe);
            c[p] = save;
            if (fault == 3 && q != p)
                c[q] = other;
            snprintf(line, sizeof line, "{\"process\":\"p%d\",\"kind\":\"local\",\"clock\":%s}", p, cbuf);
        }
        char err[400];
        if (cw_trace_add_json(t, line, strlen(line), cw_trace_count(t) + 1, err, sizeof err) != CW_OK)
            fail_msg("generated line refused: %s\n%s", err, line);
    }
    return t;
}

/* Issue 15: the fast audit finds exactly what the old quadratic one found,
 * detail sentences included, on random traces with every kind of fault
 * (and on clean ones). */
static void test_prop_same_findings_as_old_audit(void **state)
{
    (void) state;
    size_t total = 0;
    for (uint64_t seed = 1; seed <= 400; seed++) {
        rng_state = seed * 0x9E3779B97F4A7C15ull;
        int np = 2 + (int) (seed % (DF_PROCS - 1));
        size_t n = 10 + (size_t) (rnd() % 300);
        cw_trace_t *t = faulty_trace(n, np);
        cw_causal_t *c = cw_causal_new(t);
        ref_t *ref = ref_new(t);
        assert_int_equal(cw_causal_audit(c), CW_OK);
        assert_int_equal(ref_audit(ref), CW_OK);
        size_t nf = cw_causal_findings(c);
        if (nf != ref_findings(ref)) {
            dump_findings(c);
            fail_msg("seed %llu: %zu findings, the old audit %zu", (unsigned long long) seed, nf,
                     ref_findings(ref));
        }
        for (size_t k = 0; k < nf; k++) {
            const cw_finding_t *a = cw_causal_finding(c, k), *b = ref_finding(ref, k);
            if (a->kind != b->kind || a->process != b->process || a->a != b->a || a->b != b->b
                || strcmp(a->msg, b->msg) != 0 || strcmp(a->detail, b->detail) != 0)
                fail_msg("seed %llu: finding %zu differs:\n  new %s %zu %zu %s\n  old %s %zu %zu %s",
                         (unsigned long long) seed, k, cw_finding_kind_name(a->kind), a->a, a->b,
                         a->detail, cw_finding_kind_name(b->kind), b->a, b->b, b->detail);
        }
        total += nf;
        ref_destroy(&ref);
        cw_causal_destroy(&c);
        cw_trace_destroy(&t);
    }
    assert_true(total > 1000);   /* the traces do exercise the audit */
}

/* cw_vc_compare (compact clocks) answers as cw_clock_compare (wire). */
static void test_prop_vc_compare(void **state)
{
    (void) state;
    rng_state = 77;
    cw_trace_t *t = faulty_trace(400, 5);
    size_t n = cw_trace_count(t);
    for (size_t i = 0; i < n; i++) {
        for (size_t j = 0; j < n; j += 1 + (size_t) (rnd() % 7)) {
            const cwc_event_t *a = cw_trace_event(t, i), *b = cw_trace_event(t, j);
            cw_clock_entry_msg_t *ia, **pa, *ib, **pb;
            assert_int_equal(cw_trace_clock_wire(t, &a->vc, &ia, &pa), CW_OK);
            assert_int_equal(cw_trace_clock_wire(t, &b->vc, &ib, &pb), CW_OK);
            assert_int_equal(cw_vc_compare(&a->vc, &b->vc), cw_clock_compare(pa, a->vc.n, pb, b->vc.n));
            free(ia);
            free(pa);
            free(ib);
            free(pb);
        }
    }
    cw_trace_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_audit_reordered_fixture),
        cmocka_unit_test(test_audit_clean_fixture),
        cmocka_unit_test(test_audit_clock_rules),
        cmocka_unit_test(test_audit_msg_clock),
        cmocka_unit_test(test_audit_merge_detail),
        cmocka_unit_test(test_audit_unmatched),
        cmocka_unit_test(test_audit_broadcast_gap),
        cmocka_unit_test(test_queries),
        cmocka_unit_test(test_stats_fixture),
        cmocka_unit_test(test_stats_empty),
        cmocka_unit_test(test_prop_random_traces),
        cmocka_unit_test(test_prop_swap_is_caught),
        cmocka_unit_test(test_prop_same_findings_as_old_audit),
        cmocka_unit_test(test_prop_vc_compare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
