/*  sim_scenario_test.c: causeway-sim's scenario parser (sim/scenario.c),
 *  planner (sim/plan.c) and PRNG (sim/rng.h).
 *
 *  Scenario files are written to a temporary directory; every error case
 *  checks the exact "FILE:LINE: reason" message. The plan tests check the
 *  determinism contract (same scenario and seed, same actions) and the
 *  planner's rules: sends never fall inside their sender's offline window,
 *  recipients are distinct and never the sender, actions are time-sorted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cluster.h"
#include "rng.h"
#include "scenario.h"

static char g_dir[] = "/tmp/cw_sim_test.XXXXXX";
static char g_path[256];

static int setup_dir(void **state)
{
    (void) state;
    return mkdtemp(g_dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void) state;
    unlink(g_path);
    return rmdir(g_dir);
}

static const char *write_scn(const char *body)
{
    snprintf(g_path, sizeof g_path, "%s/test.scn", g_dir);
    FILE *f = fopen(g_path, "w");
    assert_non_null(f);
    fputs(body, f);
    fclose(f);
    return g_path;
}

/* Loads body; expects failure with "PATH:LINE: reason" (line 0: no line). */
static void expect_error(const char *body, int line, const char *reason)
{
    char err[1024], want[1024];
    const char *path = write_scn(body);
    sim_scenario_t *s = sim_scenario_load(path, err, sizeof err);
    if (s) {
        sim_scenario_destroy(&s);
        fail_msg("loaded although it should fail with: %s", reason);
    }
    if (line)
        snprintf(want, sizeof want, "%s:%d: %s", path, line, reason);
    else
        snprintf(want, sizeof want, "%s: %s", path, reason);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("got '%s', want '%s...'", err, want);
}

static void test_rng_is_deterministic(void **state)
{
    (void) state;
    sim_rng_t a, b, c;
    sim_rng_seed(&a, 42);
    sim_rng_seed(&b, 42);
    sim_rng_seed(&c, 43);
    int differs = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = sim_rng_next(&a);
        assert_int_equal(x, sim_rng_next(&b));
        differs |= x != sim_rng_next(&c);
    }
    assert_true(differs);
    for (int i = 0; i < 10000; i++) {
        assert_true(sim_rng_below(&a, 7) < 7);
        int64_t r = sim_rng_range(&a, -3, 3);
        assert_true(r >= -3 && r <= 3);
    }
    assert_int_equal(sim_rng_range(&a, 5, 5), 5);
}

static void test_loads_every_setting(void **state)
{
    (void) state;
    char err[1024];
    const char *path = write_scn(
        "# a comment\n"
        "name = t1   # trailing comment\n"
        "description = testing\n"
        "names = ann, ben, cy, dee\n"
        "messages = 50\n"
        "mix = unicast 2, broadcast 1\n"
        "multicast = 2..3\n"
        "durable = 40%\n"
        "size = 40..100\n"
        "think = 10ms..1.5s\n"
        "seed = 0x10\n"
        "heartbeat = 250ms\n"
        "liveness = 4\n"
        "send_timeout = 3s\n"
        "drain_timeout = 4s\n"
        "quiet = 100ms\n"
        "\n"
        "at 1s offline ben for 0.5s\n"
        "at 2s kill-broker\n"
        "at 2.5s restart-broker\n"
        "at 3s pause-broker for 100ms..200ms\n"
        "at 4s offline random 2 for 1s\n");
    sim_scenario_t *s = sim_scenario_load(path, err, sizeof err);
    if (!s)
        fail_msg("%s", err);
    assert_string_equal(s->name, "t1");
    assert_string_equal(s->description, "testing");
    assert_int_equal(s->n_clients, 4);
    assert_string_equal(s->names[3], "dee");
    assert_int_equal(s->messages, 50);
    assert_int_equal(s->w_unicast, 2);
    assert_int_equal(s->w_multicast, 0);
    assert_int_equal(s->w_broadcast, 1);
    assert_int_equal(s->durable_pct, 40);
    assert_int_equal(s->size.lo, 40);
    assert_int_equal(s->size.hi, 100);
    assert_int_equal(s->think_us.lo, 10000);
    assert_int_equal(s->think_us.hi, 1500000);
    assert_int_equal(s->seed, 16);
    assert_int_equal(s->heartbeat_ms, 250);
    assert_int_equal(s->liveness, 4);
    assert_int_equal(s->send_timeout_us, 3000000);
    assert_int_equal(s->drain_timeout_us, 4000000);
    assert_int_equal(s->quiet_us, 100000);
    assert_int_equal(s->n_events, 5);
    assert_int_equal(s->events[0].type, SIM_EV_OFFLINE);
    assert_string_equal(s->events[0].client, "ben");
    assert_int_equal(s->events[0].line, 18);
    assert_int_equal(s->events[3].type, SIM_EV_PAUSE);
    assert_int_equal(s->events[3].dur_us.lo, 100000);
    assert_int_equal(s->events[3].dur_us.hi, 200000);
    assert_null(s->events[4].client);
    assert_int_equal(s->events[4].n_random, 2);
    assert_int_equal(sim_scenario_client(s, "cy"), 2);
    assert_int_equal(sim_scenario_client(s, "zed"), -1);
    sim_scenario_destroy(&s);
    assert_null(s);
    sim_scenario_destroy(&s);   /* safe twice */
}

static void test_defaults(void **state)
{
    (void) state;
    char err[1024];
    sim_scenario_t *s = sim_scenario_load(write_scn("clients = 120\n"), err, sizeof err);
    if (!s)
        fail_msg("%s", err);
    assert_string_equal(s->name, "test");
    assert_string_equal(s->names[0], "c001");
    assert_string_equal(s->names[119], "c120");
    assert_int_equal(s->messages, 30);
    assert_int_equal(s->durable_pct, 0);
    sim_scenario_destroy(&s);
}

static void test_errors_name_line_and_reason(void **state)
{
    (void) state;
    /* Each body fails to load with its reason at its line (0: no line). */
    static const struct {
        const char *body;   /* the scenario file */
        int line;           /* the line named, 0 for none */
        const char *reason; /* what the error says */
    } cases[] = {
        {"clients = 3\nmix = unicast 1, anycast 2\n", 2,
         "mix: unknown kind 'anycast' (unicast, multicast, broadcast)"},
        {"clients = two\n", 1, "clients: 'two' is not a whole number"},
        {"clients = 1001\n", 1, "clients: 1001 is out of range 2..1000"},
        {"think = 5\n", 1, "think: '5' needs a unit: s or ms"},
        {"think = 5m\n", 1, "think: unknown unit 'm' in '5m' (s or ms)"},
        {"size = 10..20\n", 1, "size: 10 is out of range 40..60000"},
        {"size = 90..50\n", 1, "size: range 90..50 runs backwards"},
        {"durable = 101%\n", 1, "durable (percent): 101 is out of range 0..100"},
        {"colour = red\n", 1, "unknown key 'colour'"},
        {"seed = 1\nseed = 2\n", 2, "'seed' is set twice"},
        {"names = a, b, a\n", 1, "names: 'a' is given twice"},
        {"names = a, b c\n", 1, "names: 'b c' is not a valid name"},
        {"clients = 3\nnames = a, b\n", 2, "names lists 2 but clients = 3"},
        {"mix = unicast 0\n", 1, "mix: every weight is 0"},
        {"just words\n", 1, "expected 'key = value' or 'at TIME ACTION', got 'just words'"},
        {"at 1s explode\n", 1, "unknown action 'explode'"},
        {"at 1s pause-broker\n", 1, "pause-broker needs 'for DURATION'"},
        {"at 1s offline c01 for 0s\n", 1, "offline: the duration must be more than 0"},
        {"at 1s kill-broker now\n", 1, "kill-broker: unexpected 'now'"},
        {"\n\nat 1s offline zed for 1s\n", 3, "offline: no client called 'zed'"},
        {"clients = 3\nat 1s offline random 4 for 1s\n", 2,
         "offline random 4: there are only 3 clients"},
        {"clients = 2\nmulticast = 3\nmix = multicast 1\n", 0,
         "multicast: 3 recipients but only 1 other clients"},
        /* Scale-out settings and faults. */
        {"brokers = 9\n", 1, "brokers: 9 is out of range 1..8"},
        {"store = lmdb\n", 1, "store: 'lmdb' is not sqlite or redis"},
        {"redis_cluster = 3\n", 1, "redis_cluster: '3' should be PRIMARIESxREPLICAS"},
        {"redis_cluster = 2x1\n", 1, "redis_cluster primaries: 2 is out of range 3..8"},
        {"redis_cluster = 3x3\n", 1, "redis_cluster replicas: 3 is out of range 0..2"},
        {"node_timeout = 50ms\n", 1, "node_timeout: 50ms is out of range 100ms..60s"},
        {"recipients = some\n", 1, "recipients: 'some' is not any or other-broker"},
        {"brokers = 2\n", 0, "brokers = 2 needs store = redis"},
        {"store = sqlite\nredis_cluster = 3x1\n", 0, "redis_cluster is set but store = sqlite"},
        {"recipients = other-broker\n", 0, "recipients = other-broker needs brokers = 2 or more"},
        {"store = redis\nbrokers = 3\nclients = 6\nmix = multicast 1\n"
         "multicast = 5\nrecipients = other-broker\n", 0,
         "multicast: 5 recipients but only 4 clients on other brokers"},
        {"store = redis\nbrokers = 2\nat 1s kill-broker 3\n", 3,
         "there is no broker 3 (brokers = 2)"},
        {"at 1s kill-primary 1\n", 1, "Redis faults need store = redis"},
        {"store = redis\nat 1s kill-primary\n", 2, "kill-primary needs a primary number"},
        {"store = redis\nat 1s kill-primary 4\n", 2, "there is no primary 4 (redis_cluster has 3)"},
        {"store = redis\nat 1s kill-primary 1 restart 1s\n", 2,
         "kill-primary: expected 'restart after DURATION'"},
        {"store = redis\nat 1s stop-primary 1\n", 2, "stop-primary needs 'for DURATION'"},
        {"store = redis\nat 1s reshard 16384\n", 2, "reshard: 16384 is out of range"},
        {"store = redis\nat 1s kill-pubsub now\n", 2, "kill-pubsub: unexpected 'now'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_error(cases[i].body, cases[i].line, cases[i].reason);
    char long_line[SIM_MAX_LINE + 20];
    memset(long_line, 'x', sizeof long_line - 2);
    long_line[sizeof long_line - 2] = '\n';
    long_line[sizeof long_line - 1] = '\0';
    expect_error(long_line, 1, "line longer than 1024 bytes");
    char err[256];
    assert_null(sim_scenario_load("/nonexistent/x.scn", err, sizeof err));
    assert_string_equal(err, "/nonexistent/x.scn: cannot open: No such file or directory");
}

/* Plans the scenario in body with seed; fails the test on an error. */
static sim_plan_t *plan_of(const char *body, uint64_t seed, sim_scenario_t **sc)
{
    char err[1024];
    *sc = sim_scenario_load(write_scn(body), err, sizeof err);
    if (!*sc)
        fail_msg("%s", err);
    sim_plan_t *p = sim_plan_new(*sc, seed, err, sizeof err);
    if (!p)
        fail_msg("%s", err);
    return p;
}

static char *plan_text(const sim_plan_t *p)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    sim_plan_print(p, f);
    fclose(f);
    return buf;
}

static const char *CHURN =
    "clients = 8\nmessages = 400\nmix = unicast 5, multicast 3, broadcast 2\n"
    "multicast = 2..5\ndurable = 50%\nthink = 10ms..50ms\n"
    "at 0.2s offline random 3 for 0.1s..0.5s\nat 0.5s offline c02 for 1s\n"
    "at 1s kill-broker\nat 1.2s restart-broker\nat 1.5s pause-broker for 0.2s\n";

static void test_plan_is_deterministic(void **state)
{
    (void) state;
    sim_scenario_t *sc;
    sim_plan_t *a = plan_of(CHURN, 7, &sc);
    sim_plan_t *b = sim_plan_new(sc, 7, NULL, 0);
    sim_plan_t *c = sim_plan_new(sc, 8, NULL, 0);
    assert_non_null(b);
    assert_non_null(c);
    char *ta = plan_text(a), *tb = plan_text(b), *tc = plan_text(c);
    assert_string_equal(ta, tb);
    assert_string_not_equal(ta, tc);
    free(ta);
    free(tb);
    free(tc);
    sim_plan_destroy(&a);
    sim_plan_destroy(&b);
    sim_plan_destroy(&c);
    assert_null(a);
    sim_scenario_destroy(&sc);
}

static void test_plan_rules(void **state)
{
    (void) state;
    sim_scenario_t *sc;
    sim_plan_t *p = plan_of(CHURN, 99, &sc);
    assert_int_equal(p->n_msgs, 400);
    /* 400 sends + 4 offline + 4 online + kill, restart, pause, resume. */
    assert_int_equal(p->n_acts, 400 + 8 + 4);
    int64_t off_from[8], off_to[8];
    for (int c = 0; c < 8; c++)
        off_from[c] = off_to[c] = -1;
    for (size_t i = 0; i < p->n_acts; i++) {
        const sim_action_t *a = &p->acts[i];
        if (i)
            assert_true(p->acts[i - 1].at_us <= a->at_us);
        if (a->type == SIM_ACT_OFFLINE) {
            assert_int_equal(off_from[a->client], -1);   /* one window each here */
            off_from[a->client] = a->at_us;
            off_to[a->client] = a->at_us + a->dur_us;
        }
    }
    for (size_t k = 0; k < p->n_msgs; k++) {
        const sim_msg_t *m = &p->msgs[k];
        assert_true(m->size >= SIM_MIN_TEXT && m->size <= 64);
        if (off_from[m->sender] >= 0)
            assert_false(m->at_us >= off_from[m->sender] && m->at_us < off_to[m->sender]);
        if (m->kind == SIM_UNICAST)
            assert_int_equal(m->n_to, 1);
        else if (m->kind == SIM_MULTICAST)
            assert_true(m->n_to >= 2 && m->n_to <= 5);
        else
            assert_int_equal(m->n_to, 0);
        for (int j = 0; j < m->n_to; j++) {
            assert_int_not_equal(m->to[j], m->sender);
            for (int i = 0; i < j; i++)
                assert_int_not_equal(m->to[i], m->to[j]);
        }
    }
    sim_plan_destroy(&p);
    sim_scenario_destroy(&sc);
}

/* Several brokers: a broker killed for good is allowed while another
 * runs; other-broker recipients never share the sender's home broker;
 * Redis faults are planned with their ends. */
static void test_plan_scaleout(void **state)
{
    (void) state;
    sim_scenario_t *sc;
    sim_plan_t *p = plan_of("store = redis\nbrokers = 3\nclients = 9\nmessages = 300\n"
                            "mix = unicast 1, multicast 2\nmulticast = 2..6\n"
                            "recipients = other-broker\nthink = 10ms..20ms\n"
                            "at 1s kill-broker 2\nat 1s kill-primary 2 restart after 5s\n"
                            "at 2s stop-primary 1 for 3s\nat 3s reshard 500\nat 4s kill-pubsub\n"
                            "at 5s stop-broker 3\nat 6s cont-broker 3\n",
                            5, &sc);
    assert_int_equal(sc->n_brokers, 3);
    assert_int_equal(sc->store, SIM_STORE_REDIS);
    assert_int_equal(sc->redis_primaries, 3);   /* the default 3x1 */
    assert_int_equal(sc->redis_replicas, 1);
    assert_int_equal(sc->node_timeout_ms, 2000);
    for (size_t k = 0; k < p->n_msgs; k++) {
        const sim_msg_t *m = &p->msgs[k];
        assert_true(m->n_to >= 1 && m->n_to <= 6);
        for (int j = 0; j < m->n_to; j++)
            assert_int_not_equal(sim_home(sc, m->to[j]), sim_home(sc, m->sender));
    }
    int seen[SIM_ACT_SEND + 1] = {0};
    for (size_t i = 0; i < p->n_acts; i++) {
        const sim_action_t *a = &p->acts[i];
        seen[a->type]++;
        if (a->type == SIM_ACT_NODE_RESTART) {
            assert_int_equal(a->at_us, 6000000);
            assert_int_equal(a->n, 2);
        }
        if (a->type == SIM_ACT_NODE_CONT)
            assert_int_equal(a->at_us, 5000000);
        if (a->type == SIM_ACT_RESHARD)
            assert_int_equal(a->n, 500);
        if (a->type == SIM_ACT_KILL)
            assert_int_equal(a->broker, 1);
    }
    assert_int_equal(seen[SIM_ACT_KILL], 1);
    assert_int_equal(seen[SIM_ACT_KILL_PRIMARY], 1);
    assert_int_equal(seen[SIM_ACT_NODE_RESTART], 1);
    assert_int_equal(seen[SIM_ACT_STOP_PRIMARY], 1);
    assert_int_equal(seen[SIM_ACT_NODE_CONT], 1);
    assert_int_equal(seen[SIM_ACT_RESHARD], 1);
    assert_int_equal(seen[SIM_ACT_KILL_PUBSUB], 1);
    assert_int_equal(seen[SIM_ACT_STOP], 1);
    assert_int_equal(seen[SIM_ACT_CONT], 1);
    assert_int_equal(p->n_node_faults, 2);
    char *text = plan_text(p);
    assert_non_null(strstr(text, "1.000s  broker 2 kill (SIGKILL)\n"));
    assert_non_null(strstr(text, "1.000s  redis kill primary 2 (SIGKILL), restart after 5.000s\n"));
    assert_non_null(strstr(text, "3.000s  redis reshard 500 slots from primary 1 to 2\n"));
    free(text);
    sim_plan_destroy(&p);
    sim_scenario_destroy(&sc);
}

static void expect_plan_error(const char *body, const char *reason)
{
    char err[1024];
    sim_scenario_t *sc = sim_scenario_load(write_scn(body), err, sizeof err);
    if (!sc)
        fail_msg("%s", err);
    sim_plan_t *p = sim_plan_new(sc, 1, err, sizeof err);
    sim_scenario_destroy(&sc);
    if (p) {
        sim_plan_destroy(&p);
        fail_msg("planned although it should fail with: %s", reason);
    }
    if (!strstr(err, reason))
        fail_msg("got '%s', want '...%s'", err, reason);
}

static void test_plan_errors(void **state)
{
    (void) state;
    expect_plan_error("at 1s restart-broker\n",
                      "test.scn:1: restart-broker at 1.000s: the broker is running");
    expect_plan_error("at 1s kill-broker\nat 2s kill-broker\nat 3s restart-broker\n",
                      "test.scn:2: kill-broker at 2.000s: the broker is not running (killed on line 1)");
    expect_plan_error("\nat 1s kill-broker\n",
                      "test.scn:2: the broker is never restarted after this kill");
    expect_plan_error("at 1s pause-broker for 2s\nat 2s kill-broker\nat 4s restart-broker\n",
                      "test.scn:2: the broker is paused until 3.000s");
    expect_plan_error("store = redis\nbrokers = 2\nat 1s kill-broker 1\nat 2s kill-broker 2\n",
                      "every broker is down at the end");
    expect_plan_error("store = redis\nbrokers = 2\nat 1s stop-broker 2\n",
                      "a broker is stopped at the end (add 'at TIME cont-broker K')");
    expect_plan_error("store = redis\nbrokers = 2\nat 1s cont-broker 2\n",
                      "test.scn:3: cont-broker at 1.000s: broker 2 was not stopped");
    expect_plan_error("store = redis\nbrokers = 2\nat 1s kill-broker 2\nat 2s kill-broker 2\n",
                      "test.scn:4: kill-broker at 2.000s: broker 2 is not running (killed on line 3)");
    expect_plan_error("at 1s offline c01 for 2s\nat 2s offline c01 for 1s\n",
                      "test.scn:2: c01 is already offline during 2.000s..3.000s");
    expect_plan_error("clients = 3\nat 1s offline c01 for 2s\nat 2s offline random 3 for 1s\n",
                      "test.scn:3: offline random 3: only 2 clients are online");
}

/* sim_cluster_new chooses its node ports (nothing runs yet) in
 * SIM_CLUSTER_PORT_MIN..MAX, below the ephemeral range with their bus
 * ports, none clashing with another node's port or bus port. */
static void test_cluster_ports(void **state)
{
    (void) state;
    char err[512];
    sim_cluster_t *c = sim_cluster_new("/nonexistent", 3, 2, 2000, "redis-server", "redis-cli",
                                       err, sizeof err);
    if (!c)
        fail_msg("%s", err);
    int n = sim_cluster_nodes(c);
    assert_int_equal(n, 9);
    for (int i = 0; i < n; i++) {
        int p = sim_cluster_port(c, i);
        assert_in_range(p, SIM_CLUSTER_PORT_MIN, SIM_CLUSTER_PORT_MAX);
        assert_true(p + 10000 < 32768);   /* Linux's default ephemeral range starts there */
        for (int j = 0; j < i; j++) {
            int q = sim_cluster_port(c, j);
            assert_int_not_equal(p, q);
            assert_int_not_equal(p, q + 10000);
            assert_int_not_equal(p + 10000, q);
        }
    }
    assert_int_equal(sim_cluster_port(c, n), 0);
    sim_cluster_destroy(&c);
    assert_null(c);
    sim_cluster_destroy(&c);   /* safe twice */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rng_is_deterministic),
        cmocka_unit_test(test_loads_every_setting),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_errors_name_line_and_reason),
        cmocka_unit_test(test_plan_is_deterministic),
        cmocka_unit_test(test_plan_rules),
        cmocka_unit_test(test_plan_errors),
        cmocka_unit_test(test_plan_scaleout),
        cmocka_unit_test(test_cluster_ports),
    };
    return cmocka_run_group_tests(tests, setup_dir, remove_dir);
}
