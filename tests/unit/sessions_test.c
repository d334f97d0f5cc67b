/*  Unit tests for broker/sessions.c: the session table and the user log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "sessions.h"

static void test_user_log_sorted_and_unique(void **state)
{
    (void) state;
    cw_sessions_t *t = cw_sessions_new();
    assert_non_null(t);
    const char *names[] = {"carol", "alice", "bob", "alice", "dave", "bob"};
    int created = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        bool c = false;
        cwb_user_t *u = cw_sessions_user_add(t, names[i], &c);
        assert_non_null(u);
        assert_string_equal(u->name, names[i]);
        created += c;
    }
    assert_int_equal(created, 4);
    assert_int_equal(cw_sessions_user_count(t), 4);
    const char *sorted[] = {"alice", "bob", "carol", "dave"};
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(cw_sessions_user_at(t, i)->name, sorted[i]);
    assert_non_null(cw_sessions_user(t, "bob"));
    assert_null(cw_sessions_user(t, "bobby"));
    assert_null(cw_sessions_user(t, ""));
    cw_sessions_check(t);
    cw_sessions_destroy(&t);
    assert_null(t);
    cw_sessions_destroy(&t); /* safe twice */
}

static void test_open_find_close(void **state)
{
    (void) state;
    cw_sessions_t *t = cw_sessions_new();
    cwb_user_t *alice = cw_sessions_user_add(t, "alice", NULL);
    cwb_user_t *bob = cw_sessions_user_add(t, "bob", NULL);
    const uint8_t id_a[] = {0, 1, 2, 3, 4};
    const uint8_t id_b[] = {0, 1, 2, 3, 5};
    cw_session_t *sa = cw_sessions_open(t, id_a, sizeof id_a, alice, 100);
    cw_session_t *sb = cw_sessions_open(t, id_b, sizeof id_b, bob, 200);
    assert_non_null(sa);
    assert_non_null(sb);
    assert_ptr_equal(alice->session, sa);
    assert_ptr_equal(sa->user, alice);
    assert_int_equal(sa->last_rx_ms, 100);
    assert_int_equal(cw_sessions_count(t), 2);
    assert_ptr_equal(cw_sessions_find(t, id_a, sizeof id_a), sa);
    assert_ptr_equal(cw_sessions_find(t, id_b, sizeof id_b), sb);
    /* A prefix of an id is another id. */
    assert_null(cw_sessions_find(t, id_a, 4));
    /* The same routing id cannot hold two sessions. */
    cwb_user_t *carol = cw_sessions_user_add(t, "carol", NULL);
    assert_null(cw_sessions_open(t, id_a, sizeof id_a, carol, 300));
    assert_null(carol->session);
    cw_sessions_check(t);

    cw_sessions_close(t, &sa, 12345);
    assert_null(sa);
    assert_null(alice->session);
    assert_int_equal(alice->last_seen_us, 12345);
    assert_null(cw_sessions_find(t, id_a, sizeof id_a));
    assert_int_equal(cw_sessions_count(t), 1);
    assert_ptr_equal(cw_sessions_at(t, 0), sb);
    assert_int_equal(cw_sessions_user_count(t), 3); /* users stay */
    cw_sessions_check(t);
    cw_sessions_destroy(&t);
}

static void test_rebind_moves_routing_id(void **state)
{
    (void) state;
    cw_sessions_t *t = cw_sessions_new();
    cwb_user_t *alice = cw_sessions_user_add(t, "alice", NULL);
    const uint8_t old_id[] = {0, 9, 9, 9, 9};
    const uint8_t new_id[] = {0, 7, 7, 7, 7, 7, 7};
    cw_session_t *s = cw_sessions_open(t, old_id, sizeof old_id, alice, 0);
    s->dead = true;
    assert_int_equal(cw_sessions_rebind(t, s, new_id, sizeof new_id), 0);
    assert_false(s->dead);
    assert_null(cw_sessions_find(t, old_id, sizeof old_id));
    assert_ptr_equal(cw_sessions_find(t, new_id, sizeof new_id), s);
    assert_int_equal(cw_sessions_rebind(t, s, new_id, 0), -1); /* empty id refused */
    assert_ptr_equal(cw_sessions_find(t, new_id, sizeof new_id), s);
    cw_sessions_check(t);
    cw_sessions_destroy(&t);
}

static void test_many_sessions_dense_array(void **state)
{
    (void) state;
    cw_sessions_t *t = cw_sessions_new();
    enum { N = 2000 };
    cw_session_t *s[N];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "u%04d", i);
        cwb_user_t *u = cw_sessions_user_add(t, name, NULL);
        uint32_t id = (uint32_t) i;
        s[i] = cw_sessions_open(t, &id, sizeof id, u, i);
        assert_non_null(s[i]);
    }
    /* Close every third one; the rest must all still be found. */
    for (int i = 0; i < N; i += 3)
        cw_sessions_close(t, &s[i], 1);
    cw_sessions_check(t);
    size_t expected = N - (N + 2) / 3;
    assert_int_equal(cw_sessions_count(t), expected);
    for (int i = 0; i < N; i++) {
        uint32_t id = (uint32_t) i;
        assert_ptr_equal(cw_sessions_find(t, &id, sizeof id), s[i]);
    }
    cw_sessions_destroy(&t);
}

static void test_oversized_inputs_refused(void **state)
{
    (void) state;
    cw_sessions_t *t = cw_sessions_new();
    char longname[CW_NAME_MAX_HARD + 2];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_null(cw_sessions_user_add(t, longname, NULL));
    cwb_user_t *u = cw_sessions_user_add(t, "alice", NULL);
    uint8_t id[CW_ROUTING_ID_MAX + 1] = {0};
    assert_null(cw_sessions_open(t, id, sizeof id, u, 0));
    assert_null(cw_sessions_open(t, id, 0, u, 0));
    assert_null(cw_sessions_find(t, id, sizeof id));
    assert_null(u->session);
    cw_sessions_check(t);
    cw_sessions_destroy(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_user_log_sorted_and_unique),
        cmocka_unit_test(test_open_find_close),
        cmocka_unit_test(test_rebind_moves_routing_id),
        cmocka_unit_test(test_many_sessions_dense_array),
        cmocka_unit_test(test_oversized_inputs_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
