/*  rc_driver: drives broker/redis_cluster.c against a real Redis Cluster for
 *  tests/e2e/scaleout/test_redis_cluster.py, which starts the cluster and
 *  injects the faults (resharding, a killed primary) while this runs.
 *
 *    rc_driver keyslots SEEDS N          cw_rc_slot against CLUSTER KEYSLOT
 *                                        for N keys (with and without tags)
 *    rc_driver push SEEDS COUNT KEYS W [HOLDS]
 *                                        COUNT "RPUSH {kJ} i" (i = 0..COUNT-1,
 *                                        J = i % KEYS), W in flight; then
 *                                        LRANGE every list and print it.
 *                                        HOLDS: a comma-separated list of
 *                                        points N (or Ni): once N commands
 *                                        are sent and written out (Ni: and
 *                                        all of them answered), print
 *                                        "holding" and wait for a line on
 *                                        stdin (the test injects its fault
 *                                        then).
 *
 *  push prints one line "acked A failed F" (F: commands that reached their
 *  deadline), then "list J v1 v2 ..." per key, then the routing counters as
 *  "stats sent S moved M asked K retried R reconnects C refreshes T expired E".
 *  Exit 0 when it ran to the end, 1 on a failure to set up, 2 on usage.
 *  Single-threaded: the module's owner thread is main.
 */
#include "cw_status.h"
#include "redis_cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    long acked, failed, answered;
    long *keyslot;          /* keyslots: CLUSTER KEYSLOT answers */
    char **lists;           /* push: LRANGE results */
} state_t;

typedef struct {
    state_t *st;
    long i;
} job_t;

static void run(cw_rc_t *rc, state_t *st, long until, int64_t limit_ms)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    zmq_pollitem_t items[64];
    while (st->answered < until) {
        size_t n = cw_rc_pollitems(rc, items, 64);
        int to = cw_rc_timeout_ms(rc);
        zmq_poll(items, (int) n, to < 0 ? 100 : to);
        cw_rc_process(rc, items, n);
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 > limit_ms) {
            fprintf(stderr, "rc_driver: gave up after %lld ms (%ld of %ld answered)\n",
                    (long long) limit_ms, st->answered, until);
            exit(1);
        }
    }
}

static void on_keyslot(void *arg, int status, redisReply *r)
{
    job_t *j = arg;
    j->st->answered++;
    if (status == CW_OK && r && r->type == REDIS_REPLY_INTEGER)
        j->st->keyslot[j->i] = (long) r->integer;
    free(j);
}

static void on_push(void *arg, int status, redisReply *r)
{
    job_t *j = arg;
    j->st->answered++;
    if (status == CW_OK && r && r->type == REDIS_REPLY_INTEGER)
        j->st->acked++;
    else
        j->st->failed++;
    free(j);
}

static void on_lrange(void *arg, int status, redisReply *r)
{
    job_t *j = arg;
    j->st->answered++;
    size_t cap = 64, len = 0;
    char *out = malloc(cap);
    out[0] = '\0';
    if (status == CW_OK && r && r->type == REDIS_REPLY_ARRAY)
        for (size_t k = 0; k < r->elements; k++) {
            size_t need = len + r->element[k]->len + 2;
            if (need > cap) {
                while (cap < need)
                    cap *= 2;
                out = realloc(out, cap);
            }
            len += (size_t) sprintf(out + len, " %s", r->element[k]->str);
        }
    j->st->lists[j->i] = out;
    free(j);
}

static job_t *job(state_t *st, long i)
{
    job_t *j = malloc(sizeof *j);
    j->st = st;
    j->i = i;
    return j;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: rc_driver keyslots SEEDS N | push SEEDS COUNT KEYS W\n");
        return 2;
    }
    char err[512];
    cw_rc_opts_t opts = {.connect_ms = 2000, .retry_ms = 20000};
    cw_rc_t *rc = cw_rc_new(argv[2], &opts, err, sizeof err);
    if (!rc) {
        fprintf(stderr, "rc_driver: %s\n", err);
        return 1;
    }
    state_t st = {0};
    if (!strcmp(argv[1], "keyslots")) {
        long n = atol(argv[3]);
        st.keyslot = calloc((size_t) n, sizeof *st.keyslot);
        char (*keys)[64] = calloc((size_t) n, sizeof *keys);
        srand(7);
        for (long i = 0; i < n; i++) {
            /* plain keys, tagged keys, empty tags, a tag at the end */
            switch (i % 4) {
            case 0: snprintf(keys[i], 64, "user%ld:%d", i, rand()); break;
            case 1: snprintf(keys[i], 64, "cw:q:{u%ld}", i); break;
            case 2: snprintf(keys[i], 64, "a{}b%ld", i); break;
            default: snprintf(keys[i], 64, "x%d{t%ld}", rand() % 100, i); break;
            }
            const char *av[] = {"CLUSTER", "KEYSLOT", keys[i]};
            cw_rc_command(rc, (uint16_t) (i % 16384), 3, av, NULL, on_keyslot, job(&st, i));
        }
        run(rc, &st, n, 30000);
        long bad = 0;
        for (long i = 0; i < n; i++)
            if (st.keyslot[i] != cw_rc_slot(keys[i], strlen(keys[i]))) {
                if (bad++ < 5)
                    fprintf(stderr, "slot of %s: ours %u, Redis %ld\n", keys[i],
                            cw_rc_slot(keys[i], strlen(keys[i])), st.keyslot[i]);
            }
        printf("keyslots %ld mismatches %ld\n", n, bad);
        cw_rc_destroy(&rc);
        free(keys);
        free(st.keyslot);
        return bad ? 1 : 0;
    }
    if (strcmp(argv[1], "push") || argc < 6 || argc > 7) {
        fprintf(stderr, "usage: rc_driver push SEEDS COUNT KEYS W [HOLDS]\n");
        return 2;
    }
    const char *holds = argc == 7 ? argv[6] : "";
    long count = atol(argv[3]), keys = atol(argv[4]), window = atol(argv[5]);
    long hold = -1;
    int idle = 0;
    char *next_hold = (char *) holds;
    if (*next_hold) {
        hold = strtol(next_hold, &next_hold, 10);
        idle = *next_hold == 'i';
    }
    char (*names)[32] = calloc((size_t) keys, sizeof *names);
    for (long k = 0; k < keys; k++)
        snprintf(names[k], sizeof names[k], "{k%ld}", k);
    zmq_pollitem_t items[64];
    long sent = 0;
    while (st.answered < count) {
        while (sent < count && sent - st.answered < window && (hold < 0 || sent < hold)) {
            char v[32];
            snprintf(v, sizeof v, "%ld", sent);
            const char *av[] = {"RPUSH", names[sent % keys], v};
            uint16_t slot = cw_rc_slot(names[sent % keys], strlen(names[sent % keys]));
            cw_rc_command(rc, slot, 3, av, NULL, on_push, job(&st, sent));
            sent++;
        }
        if (hold >= 0 && sent >= hold && (!idle || st.answered == sent)) {
            /* write what is queued, then wait for the test's fault */
            cw_rc_process(rc, items, 0);
            printf("holding\n");
            fflush(stdout);
            char line[16];
            if (!fgets(line, sizeof line, stdin))
                return 1;
            /* the next hold point, if any */
            while (*next_hold && *next_hold != ',')
                next_hold++;
            if (*next_hold == ',') {
                hold = strtol(next_hold + 1, &next_hold, 10);
                idle = *next_hold == 'i';
            } else {
                hold = -1;
            }
        }
        size_t n = cw_rc_pollitems(rc, items, 64);
        int to = cw_rc_timeout_ms(rc);
        zmq_poll(items, (int) n, to < 0 ? 100 : to);
        cw_rc_process(rc, items, n);
    }
    printf("acked %ld failed %ld\n", st.acked, st.failed);
    st.lists = calloc((size_t) keys, sizeof *st.lists);
    long base = st.answered;
    for (long k = 0; k < keys; k++) {
        const char *av[] = {"LRANGE", names[k], "0", "-1"};
        cw_rc_command(rc, cw_rc_slot(names[k], strlen(names[k])), 4, av, NULL, on_lrange,
                      job(&st, k));
    }
    run(rc, &st, base + keys, 60000);
    for (long k = 0; k < keys; k++) {
        printf("list %ld%s\n", k, st.lists[k] ? st.lists[k] : "");
        free(st.lists[k]);
    }
    cw_rc_stats_t s;
    cw_rc_stats(rc, &s);
    printf("stats sent %llu moved %llu asked %llu retried %llu reconnects %llu refreshes %llu "
           "expired %llu\n", (unsigned long long) s.sent, (unsigned long long) s.moved,
           (unsigned long long) s.asked, (unsigned long long) s.retried,
           (unsigned long long) s.reconnects, (unsigned long long) s.refreshes,
           (unsigned long long) s.expired);
    cw_rc_destroy(&rc);
    free(st.lists);
    free(names);
    return 0;
}
