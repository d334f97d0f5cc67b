/*  cw_status_test: unit tests for common/cw_status.c.
 *
 *  Checks that every status has a stable name that parses back to the same
 *  code, that explanations are never NULL, and that the wire codes (0..99)
 *  are exactly the values of the proto enum causeway.v1.Status, name for
 *  name and number for number. Single-threaded; no I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "causeway.pb-c.h"
#include "cw_status.h"

/* Every code of cw_status_t, wire and local. */
static const int all_codes[] = {
    CW_OK, CW_DELIVERED, CW_OFFLINE, CW_UNKNOWN_USER, CW_ACCEPTED, CW_NAME_TAKEN,
    CW_BAD_NAME, CW_ALREADY_LOGGED_IN, CW_NOT_LOGGED_IN, CW_TOO_MANY_SESSIONS,
    CW_UNAUTHORIZED, CW_BAD_REQUEST, CW_UNKNOWN_TYPE, CW_UNSUPPORTED_VERSION, CW_TOO_LARGE,
    CW_TOO_MANY_RECIPIENTS, CW_QUEUE_FULL, CW_STORE_ERROR, CW_EXPIRED, CW_NOT_DURABLE,
    CW_FLOODED, CW_RATE_LIMITED, CW_STORE_FULL, CW_INTERNAL, CW_SHUTTING_DOWN, CW_DAMAGED, CW_ERR_TIMEOUT,
    CW_ERR_DISCONNECTED, CW_ERR_IO, CW_ERR_NOMEM, CW_ERR_INVALID, CW_ERR_HANDSHAKE,
    CW_ERR_UNREACHABLE,
};
#define N_CODES (sizeof all_codes / sizeof all_codes[0])

static void test_ok_is_zero(void **state)
{
    (void) state;
    assert_int_equal(CW_OK, 0);
    assert_string_equal(cw_status_name(CW_OK), "OK");
}

static void test_names_round_trip(void **state)
{
    (void) state;
    for (size_t i = 0; i < N_CODES; i++) {
        const char *name = cw_status_name(all_codes[i]);
        assert_non_null(name);
        assert_string_not_equal(name, "UNKNOWN_STATUS");
        assert_int_equal(cw_status_from_name(name), all_codes[i]);
    }
}

static void test_names_are_distinct(void **state)
{
    (void) state;
    for (size_t i = 0; i < N_CODES; i++)
        for (size_t j = i + 1; j < N_CODES; j++)
            assert_string_not_equal(cw_status_name(all_codes[i]), cw_status_name(all_codes[j]));
}

static void test_unknown_codes(void **state)
{
    (void) state;
    const int bogus[] = {-1, 5, 9, 19, 25, 43, 99, 107, 1000, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bogus / sizeof bogus[0]; i++) {
        assert_string_equal(cw_status_name(bogus[i]), "UNKNOWN_STATUS");
        assert_non_null(cw_strerror(bogus[i]));
    }
    assert_int_equal(cw_status_from_name("UNKNOWN_STATUS"), -1);
    assert_int_equal(cw_status_from_name("no_such_status"), -1);
    assert_int_equal(cw_status_from_name(""), -1);
    /* Names are exact: case matters. */
    assert_int_equal(cw_status_from_name("ok"), -1);
    assert_int_equal(cw_status_from_name("name_taken"), -1);
}

static void test_strerror_never_null(void **state)
{
    (void) state;
    for (int code = -5; code < 200; code++) {
        const char *s = cw_strerror(code);
        assert_non_null(s);
        assert_true(strlen(s) > 0);
    }
    for (size_t i = 0; i < N_CODES; i++)
        assert_string_not_equal(cw_strerror(all_codes[i]), "unknown status");
}

/* The C enum must equal the proto enum constant for constant. */
static void test_wire_values_equal_proto(void **state)
{
    (void) state;
    assert_int_equal(CW_OK, CAUSEWAY__V1__STATUS__STATUS_OK);
    assert_int_equal(CW_DELIVERED, CAUSEWAY__V1__STATUS__STATUS_DELIVERED);
    assert_int_equal(CW_OFFLINE, CAUSEWAY__V1__STATUS__STATUS_OFFLINE);
    assert_int_equal(CW_UNKNOWN_USER, CAUSEWAY__V1__STATUS__STATUS_UNKNOWN_USER);
    assert_int_equal(CW_ACCEPTED, CAUSEWAY__V1__STATUS__STATUS_ACCEPTED);
    assert_int_equal(CW_NAME_TAKEN, CAUSEWAY__V1__STATUS__STATUS_NAME_TAKEN);
    assert_int_equal(CW_BAD_NAME, CAUSEWAY__V1__STATUS__STATUS_BAD_NAME);
    assert_int_equal(CW_ALREADY_LOGGED_IN, CAUSEWAY__V1__STATUS__STATUS_ALREADY_LOGGED_IN);
    assert_int_equal(CW_NOT_LOGGED_IN, CAUSEWAY__V1__STATUS__STATUS_NOT_LOGGED_IN);
    assert_int_equal(CW_TOO_MANY_SESSIONS, CAUSEWAY__V1__STATUS__STATUS_TOO_MANY_SESSIONS);
    assert_int_equal(CW_UNAUTHORIZED, CAUSEWAY__V1__STATUS__STATUS_UNAUTHORIZED);
    assert_int_equal(CW_BAD_REQUEST, CAUSEWAY__V1__STATUS__STATUS_BAD_REQUEST);
    assert_int_equal(CW_UNKNOWN_TYPE, CAUSEWAY__V1__STATUS__STATUS_UNKNOWN_TYPE);
    assert_int_equal(CW_UNSUPPORTED_VERSION, CAUSEWAY__V1__STATUS__STATUS_UNSUPPORTED_VERSION);
    assert_int_equal(CW_TOO_LARGE, CAUSEWAY__V1__STATUS__STATUS_TOO_LARGE);
    assert_int_equal(CW_TOO_MANY_RECIPIENTS, CAUSEWAY__V1__STATUS__STATUS_TOO_MANY_RECIPIENTS);
    assert_int_equal(CW_QUEUE_FULL, CAUSEWAY__V1__STATUS__STATUS_QUEUE_FULL);
    assert_int_equal(CW_STORE_ERROR, CAUSEWAY__V1__STATUS__STATUS_STORE_ERROR);
    assert_int_equal(CW_EXPIRED, CAUSEWAY__V1__STATUS__STATUS_EXPIRED);
    assert_int_equal(CW_NOT_DURABLE, CAUSEWAY__V1__STATUS__STATUS_NOT_DURABLE);
    assert_int_equal(CW_FLOODED, CAUSEWAY__V1__STATUS__STATUS_FLOODED);
    assert_int_equal(CW_INTERNAL, CAUSEWAY__V1__STATUS__STATUS_INTERNAL);
    assert_int_equal(CW_SHUTTING_DOWN, CAUSEWAY__V1__STATUS__STATUS_SHUTTING_DOWN);
    assert_int_equal(CW_RATE_LIMITED, CAUSEWAY__V1__STATUS__STATUS_RATE_LIMITED);
    assert_int_equal(CW_STORE_FULL, CAUSEWAY__V1__STATUS__STATUS_STORE_FULL);
    assert_int_equal(CW_DAMAGED, CAUSEWAY__V1__STATUS__STATUS_DAMAGED);
}

/* Walks the generated descriptor: every proto value has a C status whose
 * name is the proto name without "STATUS_", and every wire-range C status
 * (< 100) is in the proto. Catches a value added on one side only. */
static void test_wire_set_matches_descriptor(void **state)
{
    (void) state;
    const ProtobufCEnumDescriptor *d = &causeway__v1__status__descriptor;
    assert_true(d->n_values > 0);
    for (unsigned i = 0; i < d->n_values; i++) {
        const ProtobufCEnumValue *v = &d->values[i];
        assert_int_equal(strncmp(v->name, "STATUS_", 7), 0);
        assert_string_equal(cw_status_name(v->value), v->name + 7);
        assert_int_equal(cw_status_from_name(v->name + 7), v->value);
    }
    for (int code = 0; code < 100; code++) {
        int in_c = strcmp(cw_status_name(code), "UNKNOWN_STATUS") != 0;
        int in_proto = protobuf_c_enum_descriptor_get_value(d, code) != NULL;
        assert_int_equal(in_c, in_proto);
    }
    /* Local codes never collide with a wire value. */
    for (size_t i = 0; i < N_CODES; i++)
        if (all_codes[i] >= 100)
            assert_null(protobuf_c_enum_descriptor_get_value(d, all_codes[i]));
}

static void test_is_success(void **state)
{
    (void) state;
    assert_true(cw_status_is_success(CW_OK));
    assert_true(cw_status_is_success(CW_DELIVERED));
    assert_true(cw_status_is_success(CW_ACCEPTED));
    for (size_t i = 0; i < N_CODES; i++) {
        int c = all_codes[i];
        if (c != CW_OK && c != CW_DELIVERED && c != CW_ACCEPTED)
            assert_false(cw_status_is_success(c));
    }
    assert_false(cw_status_is_success(-1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_is_zero),
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_names_are_distinct),
        cmocka_unit_test(test_unknown_codes),
        cmocka_unit_test(test_strerror_never_null),
        cmocka_unit_test(test_wire_values_equal_proto),
        cmocka_unit_test(test_wire_set_matches_descriptor),
        cmocka_unit_test(test_is_success),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
