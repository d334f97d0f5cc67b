/*  monitor_test: broker/monitor.c and the renderer of broker/metrics.c.
 *
 *  The triple buffer hands over every publication and never lets the
 *  writer touch the buffer a reader holds (checked from two threads with a
 *  pattern only a torn copy would break); the top-queues selection keeps
 *  the deepest; the ring keeps the newest entries and cuts texts at a
 *  character boundary; the rendered text has HELP/TYPE for every family.
 */
#include "metrics.h"
#include "monitor.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static void test_read_before_publish(void **state)
{
    (void) state;
    cw_monitor_t *m = cw_monitor_new();
    assert_non_null(m);
    cw_mon_snap_t out;
    cw_monitor_read(m, &out);
    assert_int_equal(out.generation, 0);
    cw_monitor_back(m)->sessions = 7;
    cw_monitor_publish(m);
    cw_monitor_read(m, &out);
    assert_int_equal(out.generation, 1);
    assert_int_equal(out.sessions, 7);
    cw_monitor_read(m, &out); /* nothing new: the same one again */
    assert_int_equal(out.generation, 1);
    assert_int_equal(out.sessions, 7);
    cw_monitor_back(m)->sessions = 8;
    cw_monitor_publish(m);
    cw_monitor_back(m)->sessions = 9;
    cw_monitor_publish(m);
    cw_monitor_read(m, &out); /* the newest only */
    assert_int_equal(out.generation, 3);
    assert_int_equal(out.sessions, 9);
    cw_monitor_destroy(&m);
    cw_monitor_destroy(&m);
    assert_null(m);
}

#define ROUNDS 20000

static void *writer(void *arg)
{
    cw_monitor_t *m = arg;
    for (uint64_t i = 1; i <= ROUNDS; i++) {
        cw_mon_snap_t *s = cw_monitor_back(m);
        /* Every figure of one publication is the same number. */
        s->frames_in = s->frames_out = s->deliveries = s->c.bytes_in = i;
        s->c.refusals[CW_MON_STATUSES - 1] = i;
        cw_monitor_publish(m);
    }
    return NULL;
}

static void test_no_torn_reads(void **state)
{
    (void) state;
    cw_monitor_t *m = cw_monitor_new();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, writer, m), 0);
    cw_mon_snap_t *out = malloc(sizeof *out);
    uint64_t last = 0;
    for (;;) {
        cw_monitor_read(m, out);
        uint64_t v = out->frames_in;
        assert_int_equal(out->frames_out, v);
        assert_int_equal(out->deliveries, v);
        assert_int_equal(out->c.bytes_in, v);
        assert_int_equal(out->c.refusals[CW_MON_STATUSES - 1], v);
        assert_true(v >= last); /* never an older one after a newer one */
        last = v;
        if (v == ROUNDS)
            break;
    }
    pthread_join(t, NULL);
    free(out);
    cw_monitor_destroy(&m);
}

static void test_top_queues(void **state)
{
    (void) state;
    cw_mon_queue_t top[3];
    size_t n = 0;
    const uint64_t depth[] = {5, 0, 9, 1, 7, 9, 2};
    const char *name[] = {"a", "b", "c", "d", "e", "f", "g"};
    for (size_t i = 0; i < 7; i++)
        cw_mon_top_offer(top, &n, 3, name[i], depth[i]);
    assert_int_equal(n, 3);
    assert_int_equal(top[0].depth, 9);
    assert_string_equal(top[0].name, "c"); /* the first of equals stays first */
    assert_int_equal(top[1].depth, 9);
    assert_string_equal(top[1].name, "f");
    assert_int_equal(top[2].depth, 7);
    assert_string_equal(top[2].name, "e");
    n = 0;
    cw_mon_top_offer(top, &n, 3, "z", 0); /* empty queues are not listed */
    assert_int_equal(n, 0);
}

static void test_ring(void **state)
{
    (void) state;
    cw_mon_ring_t *r = cw_mon_ring_new(false);
    assert_null(cw_mon_ring_at(r, 0));
    char *to[] = {"bob", "carol"};
    cw_mon_ring_add(r, 1, "alice", to, 2, 2, false, false, 2, "secret", 6);
    const cw_mon_fwd_t *e = cw_mon_ring_at(r, 0);
    assert_non_null(e);
    assert_string_equal(e->from, "alice");
    const char *names[CW_MON_RING_TO];
    assert_int_equal(cw_mon_fwd_names(e, names, CW_MON_RING_TO), 2);
    assert_string_equal(names[1], "carol");
    assert_string_equal(cw_mon_ring_text(r, e), ""); /* no texts kept */
    assert_int_equal(e->size, 6);
    cw_mon_ring_destroy(&r);
    cw_mon_ring_destroy(&r);
    assert_null(r);

    r = cw_mon_ring_new(true);
    /* A text longer than kept is cut before a multi-byte character. */
    char text[CW_MON_TEXT_MAX + 8];
    memset(text, 'x', CW_MON_TEXT_MAX - 1);
    memcpy(text + CW_MON_TEXT_MAX - 1, "\xc3\xa9zz", 5);
    cw_mon_ring_add(r, 2, "bob", NULL, 0, 40, true, true, 40, text, strlen(text));
    e = cw_mon_ring_at(r, 0);
    assert_int_equal(strlen(cw_mon_ring_text(r, e)), CW_MON_TEXT_MAX - 1);
    assert_int_equal(e->n_to, 40);
    assert_true(e->broadcast);
    assert_int_equal(cw_mon_fwd_names(e, names, CW_MON_RING_TO), 0);
    /* Names that do not fit are left out; the count stays. */
    char long_names[CW_MON_RING_TO + 2][CW_NAME_MAX_HARD + 1];
    char *many[CW_MON_RING_TO + 2];
    for (size_t i = 0; i < CW_MON_RING_TO + 2; i++) {
        memset(long_names[i], 'a' + (int) i, CW_NAME_MAX_HARD);
        long_names[i][CW_NAME_MAX_HARD] = '\0';
        many[i] = long_names[i];
    }
    cw_mon_ring_add(r, 3, "carol", many, CW_MON_RING_TO + 2, 99, false, false, 0, "t", 1);
    e = cw_mon_ring_at(r, 0);
    size_t k = cw_mon_fwd_names(e, names, CW_MON_RING_TO);
    assert_true(k >= 1 && k < CW_MON_RING_TO);
    assert_string_equal(names[0], long_names[0]);
    assert_int_equal(e->n_to, 99);
    assert_string_equal(cw_mon_ring_text(r, e), "t");
    for (uint64_t i = 0; i < CW_MON_RING + 5; i++)
        cw_mon_ring_add(r, 100 + i, "carol", to, 1, 1, false, false, 1, "t", 1);
    assert_int_equal(cw_mon_ring_at(r, 0)->ts_us, 100 + CW_MON_RING + 4);
    assert_int_equal(cw_mon_ring_at(r, CW_MON_RING - 1)->ts_us, 105);
    assert_null(cw_mon_ring_at(r, CW_MON_RING));
    cw_mon_ring_destroy(&r);
}

static void test_render(void **state)
{
    (void) state;
    cw_mon_snap_t *s = calloc(1, sizeof *s);
    s->generation = 1;
    s->durable = true;
    s->c.refusals[34] = 3; /* FLOODED */
    s->store.commit_hist[0] = 2;
    s->store.commit_hist[CW_COMMIT_BUCKETS] = 1;
    s->n_top = 1;
    snprintf(s->top[0].name, sizeof s->top[0].name, "bob");
    s->top[0].depth = 12;
    size_t len = 0;
    char *text = cw_metrics_render(s, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    assert_non_null(strstr(text, "causeway_refusals_total{status=\"FLOODED\"} 3\n"));
    assert_non_null(strstr(text, "causeway_queue_depth_top_messages{user=\"bob\"} 12\n"));
    assert_non_null(strstr(text, "causeway_store_commit_seconds_bucket{le=\"0.0001\"} 2\n"));
    assert_non_null(strstr(text, "causeway_store_commit_seconds_bucket{le=\"+Inf\"} 3\n"));
    assert_non_null(strstr(text, "causeway_store_commit_seconds_count 3\n"));
    /* Every sample's family has HELP and TYPE lines before it. */
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (*line != '#') {
            char name[128];
            size_t k = strcspn(line, "{ ");
            assert_true(k < sizeof name);
            memcpy(name, line, k);
            name[k] = '\0';
            char *u = strstr(name, "_bucket");
            if (!u)
                u = strstr(name, "_sum");
            if (!u)
                u = strstr(name, "_count");
            if (u && strstr(name, "commit_seconds"))
                *u = '\0';
            char want[160];
            snprintf(want, sizeof want, "# TYPE %s ", name);
            assert_non_null(strstr(text, want));
        }
        line = nl + 1;
    }
    free(text);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_read_before_publish),
        cmocka_unit_test(test_no_torn_reads),
        cmocka_unit_test(test_top_queues),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
