/*  Unit tests for broker/outq.c: unread bulky replies per connection.
 *
 *  A ROUTER and a DEALER on inproc, one thread: on inproc a message is
 *  freed when the receiver closes it, so "unread" is exactly "not yet
 *  received" here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <zmq.h>

#include "outq.h"

typedef struct {
    void *ctx, *router, *dealer;
    uint8_t id[256];
    size_t id_len;
} pair_t;

static void pair_open(pair_t *p)
{
    p->ctx = zmq_ctx_new();
    p->router = zmq_socket(p->ctx, ZMQ_ROUTER);
    p->dealer = zmq_socket(p->ctx, ZMQ_DEALER);
    int zero = 0, one = 1;
    zmq_setsockopt(p->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one); /* as the broker */
    zmq_setsockopt(p->router, ZMQ_LINGER, &zero, sizeof zero);
    zmq_setsockopt(p->dealer, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(zmq_bind(p->router, "inproc://outq-test"), 0);
    assert_int_equal(zmq_connect(p->dealer, "inproc://outq-test"), 0);
    assert_int_equal(zmq_send(p->dealer, "hi", 2, 0), 2);
    int n = zmq_recv(p->router, p->id, sizeof p->id, 0);
    assert_true(n > 0);
    p->id_len = (size_t) n;
    char buf[8];
    assert_int_equal(zmq_recv(p->router, buf, sizeof buf, 0), 2);
}

static void pair_close(pair_t *p)
{
    zmq_close(p->dealer);
    zmq_close(p->router);
    zmq_ctx_term(p->ctx);
}

/* A Reply envelope whose detail is `len` bytes of 'd'. */
static size_t reply_env(cw_env_t *env, Causeway__V1__Reply *reply, char *detail, size_t len)
{
    memset(detail, 'd', len);
    detail[len] = '\0';
    cw_env_init(env, 7);
    causeway__v1__reply__init(reply);
    reply->detail = detail;
    env->body_case = CW_BODY(REPLY);
    env->reply = reply;
    return causeway__v1__envelope__get_packed_size(env);
}

static size_t recv_one(pair_t *p)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    int n = zmq_msg_recv(&m, p->dealer, 0);
    zmq_msg_close(&m); /* frees a counted message: its bytes are read */
    assert_true(n > 0);
    return (size_t) n;
}

static void test_bulky_counted_until_read(void **state)
{
    (void) state;
    pair_t p;
    pair_open(&p);
    cw_outq_t *q = cw_outq_new();
    assert_non_null(q);
    static char detail[4096];
    cw_env_t env;
    Causeway__V1__Reply reply;

    size_t small = reply_env(&env, &reply, detail, 10);
    assert_true(small < CW_OUTQ_BULKY);
    assert_int_equal(cw_outq_send(q, p.router, p.id, p.id_len, &env, ZMQ_DONTWAIT), 0);
    assert_int_equal(cw_outq_unread(q, p.id, p.id_len), 0); /* small: not counted */
    assert_int_equal(cw_outq_size(q), 0);

    size_t big = reply_env(&env, &reply, detail, 3000);
    assert_true(big >= CW_OUTQ_BULKY);
    assert_int_equal(cw_outq_send(q, p.router, p.id, p.id_len, &env, ZMQ_DONTWAIT), 0);
    assert_int_equal(cw_outq_send(q, p.router, p.id, p.id_len, &env, ZMQ_DONTWAIT), 0);
    assert_int_equal(cw_outq_unread(q, p.id, p.id_len), 2 * big);
    assert_int_equal(cw_outq_unread(q, "other", 5), 0);

    cw_outq_sweep(q); /* something unread: kept */
    assert_int_equal(cw_outq_size(q), 1);
    assert_int_equal(recv_one(&p), small);
    assert_int_equal(recv_one(&p), big);
    assert_int_equal(cw_outq_unread(q, p.id, p.id_len), big);
    assert_int_equal(recv_one(&p), big);
    assert_int_equal(cw_outq_unread(q, p.id, p.id_len), 0);
    cw_outq_sweep(q); /* nothing unread: forgotten */
    assert_int_equal(cw_outq_size(q), 0);

    /* A peer that is gone: the send fails and nothing stays counted. */
    assert_int_equal(cw_outq_send(q, p.router, "gone", 4, &env, ZMQ_DONTWAIT), -1);
    assert_int_equal(cw_outq_unread(q, "gone", 4), 0);
    cw_outq_sweep(q);
    assert_int_equal(cw_outq_size(q), 0);

    /* The table may go before the messages: they keep their counter. */
    assert_int_equal(cw_outq_send(q, p.router, p.id, p.id_len, &env, ZMQ_DONTWAIT), 0);
    cw_outq_destroy(&q);
    assert_null(q);
    cw_outq_destroy(&q); /* safe twice */
    assert_int_equal(recv_one(&p), big);
    pair_close(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bulky_counted_until_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
