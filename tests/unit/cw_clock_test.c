/*  cw_clock_test: unit tests for common/cw_clock.c.
 *
 *  Example-based tests of tick, merge, compare (missing entries count as 0),
 *  the wire-form check and formatting; then property tests over clocks drawn
 *  from a seeded generator (reproducible: the seed is printed on failure):
 *  compare is antisymmetric and transitive, merge is an upper bound of both
 *  inputs and the least one, and agrees with a dense reference model.
 *  Single-threaded; no I/O.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cw_clock.h"
#include "cw_status.h"

/* ---- wire clocks built by hand ---------------------------------------- */

#define MAXE 16

/* A wire clock owned by the test: entries plus the pointer array. */
typedef struct {
    cw_clock_entry_msg_t items[MAXE];   /* entries (node strings are literals/static) */
    cw_clock_entry_msg_t *ptrs[MAXE];   /* ptrs[i] = &items[i] */
    size_t n;                           /* entries in use */
} wire_t;

static void wire_set(wire_t *w, size_t n, const char *const *nodes, const uint64_t *counters)
{
    assert_true(n <= MAXE);
    w->n = n;
    for (size_t i = 0; i < n; i++) {
        causeway__v1__clock_entry__init(&w->items[i]);
        w->items[i].node = (char *) nodes[i];
        w->items[i].counter = counters[i];
        w->ptrs[i] = &w->items[i];
    }
}

#define WIRE(w, ...)                                                             \
    do {                                                                         \
        struct { const char *node; uint64_t counter; } e_[] = {__VA_ARGS__};     \
        const char *n_[MAXE];                                                    \
        uint64_t c_[MAXE];                                                       \
        size_t k_ = sizeof e_ / sizeof e_[0];                                    \
        for (size_t i_ = 0; i_ < k_; i_++) {                                     \
            n_[i_] = e_[i_].node;                                                \
            c_[i_] = e_[i_].counter;                                             \
        }                                                                        \
        wire_set((w), k_, n_, c_);                                               \
    } while (0)

static cw_clock_order_t cmp(const wire_t *a, const wire_t *b)
{
    return cw_clock_compare(a->ptrs, a->n, b->ptrs, b->n);
}

/* Compares a clock object against a wire clock. */
static cw_clock_order_t cmp_cw(const cw_clock_t *c, const wire_t *w)
{
    cw_clock_entry_msg_t **e = NULL;
    size_t n = cw_clock_entries(c, &e);
    return cw_clock_compare(e, n, w->ptrs, w->n);
}

/* ---- examples ---------------------------------------------------------- */

static void test_new_destroy(void **state)
{
    (void) state;
    cw_clock_t *c = cw_clock_new();
    assert_non_null(c);
    assert_int_equal(cw_clock_size(c), 0);
    assert_int_equal(cw_clock_get(c, "alice"), 0);
    cw_clock_entry_msg_t **e = NULL;
    assert_int_equal(cw_clock_entries(c, &e), 0);
    cw_clock_destroy(&c);
    assert_null(c);
    cw_clock_destroy(&c);   /* safe twice */
    cw_clock_destroy(NULL);
}

static void test_tick(void **state)
{
    (void) state;
    cw_clock_t *c = cw_clock_new();
    assert_int_equal(cw_clock_tick(c, "bob"), CW_OK);
    assert_int_equal(cw_clock_get(c, "bob"), 1);
    assert_int_equal(cw_clock_tick(c, "bob"), CW_OK);
    assert_int_equal(cw_clock_tick(c, "alice"), CW_OK);
    assert_int_equal(cw_clock_tick(c, "carl"), CW_OK);
    assert_int_equal(cw_clock_get(c, "bob"), 2);
    assert_int_equal(cw_clock_get(c, "alice"), 1);
    assert_int_equal(cw_clock_get(c, "carl"), 1);
    assert_int_equal(cw_clock_get(c, "dora"), 0);
    assert_int_equal(cw_clock_size(c), 3);
    cw_clock_entry_msg_t **e = NULL;
    size_t n = cw_clock_entries(c, &e);
    assert_int_equal(n, 3);
    assert_string_equal(e[0]->node, "alice");
    assert_string_equal(e[1]->node, "bob");
    assert_string_equal(e[2]->node, "carl");
    assert_true(cw_clock_entries_valid(e, n));
    /* Many nodes: growth keeps order and the pointer array in step. */
    char name[16];
    for (int i = 99; i >= 0; i--) {
        snprintf(name, sizeof name, "n%03d", i);
        assert_int_equal(cw_clock_tick(c, name), CW_OK);
    }
    n = cw_clock_entries(c, &e);
    assert_int_equal(n, 103);
    assert_true(cw_clock_entries_valid(e, n));
    assert_int_equal(cw_clock_get(c, "n050"), 1);
    assert_int_equal(cw_clock_get(c, "bob"), 2);
    cw_clock_destroy(&c);
}

static void test_merge(void **state)
{
    (void) state;
    cw_clock_t *c = cw_clock_new();
    cw_clock_tick(c, "alice");
    cw_clock_tick(c, "alice");
    cw_clock_tick(c, "carl");          /* {alice:2, carl:1} */
    wire_t w;
    /* Unsorted input; an entry with counter 0 adds nothing. */
    WIRE(&w, {"dora", 4}, {"alice", 1}, {"bob", 3}, {"carl", 5}, {"eve", 0});
    assert_int_equal(cw_clock_merge(c, w.ptrs, w.n), CW_OK);
    assert_int_equal(cw_clock_get(c, "alice"), 2);   /* kept: larger */
    assert_int_equal(cw_clock_get(c, "bob"), 3);     /* new */
    assert_int_equal(cw_clock_get(c, "carl"), 5);    /* raised */
    assert_int_equal(cw_clock_get(c, "dora"), 4);
    assert_int_equal(cw_clock_get(c, "eve"), 0);
    assert_int_equal(cw_clock_size(c), 4);
    cw_clock_entry_msg_t **e = NULL;
    size_t n = cw_clock_entries(c, &e);
    assert_true(cw_clock_entries_valid(e, n));
    /* Merge of nothing changes nothing. */
    assert_int_equal(cw_clock_merge(c, NULL, 0), CW_OK);
    assert_int_equal(cw_clock_size(c), 4);
    /* Receive rule: merge then tick own entry. */
    cw_clock_tick(c, "alice");
    assert_int_equal(cw_clock_get(c, "alice"), 3);
    cw_clock_destroy(&c);
}

static void test_compare_examples(void **state)
{
    (void) state;
    wire_t a, b;
    WIRE(&a, {"alice", 1});
    WIRE(&b, {"alice", 1});
    assert_int_equal(cmp(&a, &b), CW_CLOCK_EQUAL);
    WIRE(&b, {"alice", 2});
    assert_int_equal(cmp(&a, &b), CW_CLOCK_BEFORE);
    assert_int_equal(cmp(&b, &a), CW_CLOCK_AFTER);
    WIRE(&a, {"alice", 1}, {"bob", 1});
    WIRE(&b, {"alice", 2});
    assert_int_equal(cmp(&a, &b), CW_CLOCK_CONCURRENT);
    assert_int_equal(cmp(&b, &a), CW_CLOCK_CONCURRENT);
    /* Missing entries are 0: {} < {a:1}; {a:0} == {}. */
    wire_t empty;
    empty.n = 0;
    WIRE(&a, {"alice", 1});
    assert_int_equal(cmp(&empty, &a), CW_CLOCK_BEFORE);
    assert_int_equal(cmp(&a, &empty), CW_CLOCK_AFTER);
    assert_int_equal(cmp(&empty, &empty), CW_CLOCK_EQUAL);
    WIRE(&a, {"alice", 0});
    assert_int_equal(cmp(&a, &empty), CW_CLOCK_EQUAL);
    WIRE(&a, {"alice", 0}, {"bob", 2});
    WIRE(&b, {"bob", 2}, {"carl", 0});
    assert_int_equal(cmp(&a, &b), CW_CLOCK_EQUAL);
    /* Disjoint nodes are concurrent. */
    WIRE(&a, {"alice", 1});
    WIRE(&b, {"bob", 1});
    assert_int_equal(cmp(&a, &b), CW_CLOCK_CONCURRENT);
    /* Order of the entries does not matter. */
    WIRE(&a, {"carl", 1}, {"alice", 2}, {"bob", 3});
    WIRE(&b, {"bob", 3}, {"carl", 2}, {"alice", 2});
    assert_int_equal(cmp(&a, &b), CW_CLOCK_BEFORE);
    /* Large counters. */
    WIRE(&a, {"x", UINT64_MAX - 1});
    WIRE(&b, {"x", UINT64_MAX});
    assert_int_equal(cmp(&a, &b), CW_CLOCK_BEFORE);
}

/* The send/receive rules give the textbook order on a 3-process run. */
static void test_textbook_run(void **state)
{
    (void) state;
    cw_clock_t *a = cw_clock_new(), *b = cw_clock_new(), *c = cw_clock_new();
    cw_clock_entry_msg_t **e = NULL;
    size_t n;
    wire_t m1, m2, m3;
    /* A sends m1 to B. */
    cw_clock_tick(a, "A");
    n = cw_clock_entries(a, &e);
    wire_set(&m1, n, (const char *[]){"A"}, (uint64_t[]){cw_clock_get(a, "A")});
    /* C sends m3 (concurrent with m1). */
    cw_clock_tick(c, "C");
    wire_set(&m3, 1, (const char *[]){"C"}, (uint64_t[]){cw_clock_get(c, "C")});
    /* B receives m1, then sends m2 to C. */
    cw_clock_merge(b, m1.ptrs, m1.n);
    cw_clock_tick(b, "B");
    cw_clock_tick(b, "B");
    n = cw_clock_entries(b, &e);
    assert_int_equal(n, 2);
    wire_set(&m2, 2, (const char *[]){"A", "B"},
             (uint64_t[]){cw_clock_get(b, "A"), cw_clock_get(b, "B")});
    assert_int_equal(cmp(&m1, &m2), CW_CLOCK_BEFORE);
    assert_int_equal(cmp(&m2, &m1), CW_CLOCK_AFTER);
    assert_int_equal(cmp(&m1, &m3), CW_CLOCK_CONCURRENT);
    assert_int_equal(cmp(&m3, &m2), CW_CLOCK_CONCURRENT);
    /* C receives m2: now C's clock is after m1, m2 and m3. */
    cw_clock_merge(c, m2.ptrs, m2.n);
    cw_clock_tick(c, "C");
    assert_int_equal(cmp_cw(c, &m1), CW_CLOCK_AFTER);
    assert_int_equal(cmp_cw(c, &m2), CW_CLOCK_AFTER);
    assert_int_equal(cmp_cw(c, &m3), CW_CLOCK_AFTER);
    assert_int_equal(cw_clock_get(c, "A"), 1);
    assert_int_equal(cw_clock_get(c, "B"), 2);
    assert_int_equal(cw_clock_get(c, "C"), 2);
    cw_clock_destroy(&a);
    cw_clock_destroy(&b);
    cw_clock_destroy(&c);
}

static void test_entries_valid(void **state)
{
    (void) state;
    wire_t w;
    w.n = 0;
    assert_true(cw_clock_entries_valid(w.ptrs, 0));
    WIRE(&w, {"alice", 1});
    assert_true(cw_clock_entries_valid(w.ptrs, w.n));
    WIRE(&w, {"alice", 1}, {"bob", 0}, {"carl", 7});
    assert_true(cw_clock_entries_valid(w.ptrs, w.n));
    WIRE(&w, {"bob", 1}, {"alice", 1});          /* unsorted */
    assert_false(cw_clock_entries_valid(w.ptrs, w.n));
    WIRE(&w, {"alice", 1}, {"alice", 2});        /* duplicate */
    assert_false(cw_clock_entries_valid(w.ptrs, w.n));
    WIRE(&w, {"", 1});                           /* empty node */
    assert_false(cw_clock_entries_valid(w.ptrs, w.n));
    WIRE(&w, {"alice", 1}, {"", 1});
    assert_false(cw_clock_entries_valid(w.ptrs, w.n));
    /* Byte order, not locale order: "Z" < "a". */
    WIRE(&w, {"Zed", 1}, {"alice", 1});
    assert_true(cw_clock_entries_valid(w.ptrs, w.n));
    WIRE(&w, {"alice", 1}, {"Zed", 1});
    assert_false(cw_clock_entries_valid(w.ptrs, w.n));
    WIRE(&w, {"a", 1}, {"a.b", 1}, {"ab", 1});
    assert_true(cw_clock_entries_valid(w.ptrs, w.n));
    /* A NULL node is invalid, not a crash. */
    WIRE(&w, {"alice", 1});
    w.items[0].node = NULL;
    assert_false(cw_clock_entries_valid(w.ptrs, w.n));
}

static void test_format(void **state)
{
    (void) state;
    char buf[64];
    wire_t w;
    w.n = 0;
    assert_string_equal(cw_clock_format(w.ptrs, 0, buf, sizeof buf), "{}");
    WIRE(&w, {"alice", 2}, {"bob", 1});
    assert_ptr_equal(cw_clock_format(w.ptrs, w.n, buf, sizeof buf), buf);
    assert_string_equal(buf, "{alice:2, bob:1}");
    WIRE(&w, {"x", UINT64_MAX});
    assert_string_equal(cw_clock_format(w.ptrs, w.n, buf, sizeof buf),
                        "{x:18446744073709551615}");
    /* Exactly fits: "{alice:2, bob:1}" is 16 chars + NUL. */
    WIRE(&w, {"alice", 2}, {"bob", 1});
    char small[17];
    assert_string_equal(cw_clock_format(w.ptrs, w.n, small, sizeof small), "{alice:2, bob:1}");
    /* Too small: truncated, terminated, ends with "...}". */
    for (size_t size = 5; size < 17; size++) {
        char t[32];
        memset(t, '#', sizeof t);
        cw_clock_format(w.ptrs, w.n, t, size);
        assert_int_equal(strlen(t), size - 1);
        assert_string_equal(t + size - 5, "...}");
        assert_int_equal(t[size], '#');   /* nothing written past size */
    }
    /* Many entries into a small buffer. */
    const char *nodes[MAXE];
    uint64_t counters[MAXE];
    for (int i = 0; i < MAXE; i++) {
        nodes[i] = "node";
        counters[i] = 1000000 + (uint64_t) i;
    }
    wire_set(&w, MAXE, nodes, counters);
    char mid[40];
    cw_clock_format(w.ptrs, w.n, mid, sizeof mid);
    assert_int_equal(strlen(mid), sizeof mid - 1);
    assert_string_equal(mid + sizeof mid - 5, "...}");
}

/* ---- properties over random clocks ------------------------------------ */

#define NODES 6
#define ITER 5000

static const char *node_names[NODES] = {"a", "b", "c", "d", "e", "f"};

/* xorshift64*: small, seeded, reproducible. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* Dense reference clock: counter per node index. */
typedef struct {
    uint64_t v[NODES];
} dense_t;

/* A random dense clock with small counters (so equal and ordered pairs
 * are common), and its wire form in a random entry order, sometimes with
 * explicit zero entries. */
static void random_clock(uint64_t *s, dense_t *d, wire_t *w)
{
    const char *nodes[NODES];
    uint64_t counters[NODES];
    size_t n = 0;
    for (int i = 0; i < NODES; i++) {
        d->v[i] = rnd(s) % 4 == 0 ? 0 : rnd(s) % 3;
        if (d->v[i] > 0 || rnd(s) % 4 == 0) {
            nodes[n] = node_names[i];
            counters[n] = d->v[i];
            n++;
        }
    }
    /* Shuffle: compare and merge accept any order. */
    for (size_t i = n; i > 1; i--) {
        size_t j = rnd(s) % i;
        const char *tn = nodes[i - 1];
        uint64_t tc = counters[i - 1];
        nodes[i - 1] = nodes[j];
        counters[i - 1] = counters[j];
        nodes[j] = tn;
        counters[j] = tc;
    }
    wire_set(w, n, nodes, counters);
}

static cw_clock_order_t dense_cmp(const dense_t *a, const dense_t *b)
{
    int lt = 0, gt = 0;
    for (int i = 0; i < NODES; i++) {
        if (a->v[i] < b->v[i]) lt = 1;
        if (a->v[i] > b->v[i]) gt = 1;
    }
    return lt && gt ? CW_CLOCK_CONCURRENT : lt ? CW_CLOCK_BEFORE : gt ? CW_CLOCK_AFTER
                                                                   : CW_CLOCK_EQUAL;
}

static cw_clock_order_t converse(cw_clock_order_t o)
{
    return o == CW_CLOCK_BEFORE ? CW_CLOCK_AFTER : o == CW_CLOCK_AFTER ? CW_CLOCK_BEFORE : o;
}

static uint64_t seed_from_env(void)
{
    const char *s = getenv("CW_TEST_SEED");
    return s ? strtoull(s, NULL, 0) : 0xC0FFEE1234567ull;
}

static void test_prop_compare_matches_model_and_antisymmetric(void **state)
{
    (void) state;
    uint64_t seed = seed_from_env(), s = seed;
    int seen[4] = {0};
    for (int it = 0; it < ITER; it++) {
        dense_t da, db;
        wire_t a, b;
        random_clock(&s, &da, &a);
        random_clock(&s, &db, &b);
        cw_clock_order_t ab = cmp(&a, &b), ba = cmp(&b, &a);
        if (ab != dense_cmp(&da, &db) || ba != converse(ab))
            fail_msg("seed %#llx iteration %d: compare %d/%d, model %d",
                     (unsigned long long) seed, it, ab, ba, dense_cmp(&da, &db));
        seen[ab]++;
        /* Reflexive. */
        assert_int_equal(cmp(&a, &a), CW_CLOCK_EQUAL);
    }
    /* The generator exercised every outcome. */
    for (int i = 0; i < 4; i++)
        assert_true(seen[i] > 0);
}

static void test_prop_transitive(void **state)
{
    (void) state;
    uint64_t seed = seed_from_env() ^ 0x5555, s = seed;
    int chains = 0;
    for (int it = 0; it < ITER; it++) {
        dense_t da, db, dc;
        wire_t a, b, c;
        random_clock(&s, &da, &a);
        random_clock(&s, &db, &b);
        random_clock(&s, &dc, &c);
        /* Force a chain half the time: b = a + something, c = b + something. */
        if (it % 2) {
            const char *nb[NODES], *nc[NODES];
            uint64_t cb[NODES], cc[NODES];
            for (int i = 0; i < NODES; i++) {
                db.v[i] = da.v[i] + (rnd(&s) % 3 == 0);
                dc.v[i] = db.v[i] + (rnd(&s) % 3 == 0);
                nb[i] = nc[i] = node_names[i];
                cb[i] = db.v[i];
                cc[i] = dc.v[i];
            }
            wire_set(&b, NODES, nb, cb);
            wire_set(&c, NODES, nc, cc);
        }
        cw_clock_order_t ab = cmp(&a, &b), bc = cmp(&b, &c), ac = cmp(&a, &c);
        int a_le_b = ab == CW_CLOCK_BEFORE || ab == CW_CLOCK_EQUAL;
        int b_le_c = bc == CW_CLOCK_BEFORE || bc == CW_CLOCK_EQUAL;
        if (a_le_b && b_le_c) {
            chains++;
            cw_clock_order_t want =
                (ab == CW_CLOCK_EQUAL && bc == CW_CLOCK_EQUAL) ? CW_CLOCK_EQUAL : CW_CLOCK_BEFORE;
            if (ac != want)
                fail_msg("seed %#llx iteration %d: a?b=%d b?c=%d but a?c=%d",
                         (unsigned long long) seed, it, ab, bc, ac);
        }
    }
    assert_true(chains > ITER / 4);
}

/* merge(a, b) >= a and >= b, equals the element-wise max, and is <= every
 * other upper bound u of a and b. */
static void test_prop_merge_least_upper_bound(void **state)
{
    (void) state;
    uint64_t seed = seed_from_env() ^ 0xAAAA, s = seed;
    for (int it = 0; it < ITER; it++) {
        dense_t da, db;
        wire_t a, b;
        random_clock(&s, &da, &a);
        random_clock(&s, &db, &b);
        cw_clock_t *m = cw_clock_new();
        assert_int_equal(cw_clock_merge(m, a.ptrs, a.n), CW_OK);
        assert_int_equal(cw_clock_merge(m, b.ptrs, b.n), CW_OK);
        cw_clock_entry_msg_t **e = NULL;
        size_t n = cw_clock_entries(m, &e);
        assert_true(cw_clock_entries_valid(e, n));
        /* Upper bound of both. */
        cw_clock_order_t am = cw_clock_compare(a.ptrs, a.n, e, n);
        cw_clock_order_t bm = cw_clock_compare(b.ptrs, b.n, e, n);
        if (!(am == CW_CLOCK_BEFORE || am == CW_CLOCK_EQUAL) ||
            !(bm == CW_CLOCK_BEFORE || bm == CW_CLOCK_EQUAL))
            fail_msg("seed %#llx iteration %d: merge is not an upper bound",
                     (unsigned long long) seed, it);
        /* Exactly the element-wise max; no zero entries stored. */
        size_t nonzero = 0;
        for (int i = 0; i < NODES; i++) {
            uint64_t want = da.v[i] > db.v[i] ? da.v[i] : db.v[i];
            if (cw_clock_get(m, node_names[i]) != want)
                fail_msg("seed %#llx iteration %d: node %s is %llu, want %llu",
                         (unsigned long long) seed, it, node_names[i],
                         (unsigned long long) cw_clock_get(m, node_names[i]),
                         (unsigned long long) want);
            nonzero += want > 0;
        }
        assert_int_equal(n, nonzero);
        /* Least: any upper bound u (max plus random bumps) is >= m. */
        const char *nu[NODES];
        uint64_t cu[NODES];
        for (int i = 0; i < NODES; i++) {
            nu[i] = node_names[i];
            cu[i] = (da.v[i] > db.v[i] ? da.v[i] : db.v[i]) + rnd(&s) % 2;
        }
        wire_t u;
        wire_set(&u, NODES, nu, cu);
        cw_clock_order_t mu = cw_clock_compare(e, n, u.ptrs, u.n);
        assert_true(mu == CW_CLOCK_BEFORE || mu == CW_CLOCK_EQUAL);
        /* Merge is commutative and idempotent. */
        cw_clock_t *m2 = cw_clock_new();
        cw_clock_merge(m2, b.ptrs, b.n);
        cw_clock_merge(m2, a.ptrs, a.n);
        cw_clock_merge(m2, a.ptrs, a.n);
        cw_clock_entry_msg_t **e2 = NULL;
        size_t n2 = cw_clock_entries(m2, &e2);
        assert_int_equal(cw_clock_compare(e, n, e2, n2), CW_CLOCK_EQUAL);
        assert_int_equal(n2, n);
        cw_clock_destroy(&m2);
        /* Tick after merge is strictly after both inputs. */
        cw_clock_tick(m, "a");
        n = cw_clock_entries(m, &e);
        assert_int_equal(cw_clock_compare(a.ptrs, a.n, e, n), CW_CLOCK_BEFORE);
        assert_int_equal(cw_clock_compare(b.ptrs, b.n, e, n), CW_CLOCK_BEFORE);
        cw_clock_destroy(&m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_destroy),
        cmocka_unit_test(test_tick),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_compare_examples),
        cmocka_unit_test(test_textbook_run),
        cmocka_unit_test(test_entries_valid),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_prop_compare_matches_model_and_antisymmetric),
        cmocka_unit_test(test_prop_transitive),
        cmocka_unit_test(test_prop_merge_least_upper_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
