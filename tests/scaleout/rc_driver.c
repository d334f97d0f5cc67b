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
 *                                        then); each "holding" line follows
 *                                        one "noscript N" (NOSCRIPT replies so
 *                                        far).
 *
 *    rc_driver spush SEEDS COUNT KEYS W [HOLDS]
 *                                        the same with every RPUSH made by a
 *                                        script (cw_rc_script, preloaded with
 *                                        cw_rc_preload): the test flushes the
 *                                        scripts at a hold point (NOSCRIPT)
 *    rc_driver resub SEEDS               subscription churn on shard channels:
 *                                        a channel unsubscribed and subscribed
 *                                        again in one turn, once while active
 *                                        and once before its first
 *                                        confirmation; each must end
 *                                        subscribed at the server (SPUBLISH
 *                                        reaches 1 subscriber, whose message
 *                                        arrives); prints "resub CASE
 *                                        receivers N received M" per case
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

static void on_sha(void *arg, int status, redisReply *r)
{
    job_t *j = arg;
    j->st->answered++;
    if (status == CW_OK && r && r->type == REDIS_REPLY_STRING)
        j->st->lists[j->i] = strdup(r->str);
    free(j);
}

static job_t *job(state_t *st, long i)
{
    job_t *j = malloc(sizeof *j);
    j->st = st;
    j->i = i;
    return j;
}

/* --- resub ---------------------------------------------------------------- */

typedef struct {
    long ready[4];           /* READY per channel index */
    long lost[4];
    long msgs[4];
    long spublished;         /* SPUBLISH replies */
    long receivers;          /* the last SPUBLISH's count */
} subst_t;

static const char *const resub_ch[4] = {"{rs}a", "{rs}b", "{rs}s1", "{rs}s2"};

static void on_sub(void *arg, int event, const char *ch, size_t len, int sharded,
                   const char *payload, size_t plen)
{
    subst_t *s = arg;
    (void) sharded;
    (void) payload;
    (void) plen;
    for (int i = 0; i < 4; i++)
        if (strlen(resub_ch[i]) == len && memcmp(resub_ch[i], ch, len) == 0) {
            if (event == CW_RC_SUB_READY)
                s->ready[i]++;
            else if (event == CW_RC_SUB_LOST)
                s->lost[i]++;
            else
                s->msgs[i]++;
        }
}

static void on_spublish(void *arg, int status, redisReply *r)
{
    subst_t *s = arg;
    s->spublished++;
    s->receivers = status == CW_OK && r && r->type == REDIS_REPLY_INTEGER ? (long) r->integer : -1;
}

/* Runs the module until *counter reaches want; exits 1 after limit_ms. */
static void run_until(cw_rc_t *rc, const long *counter, long want, int64_t limit_ms,
                      const char *what)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    zmq_pollitem_t items[64];
    while (*counter < want) {
        size_t n = cw_rc_pollitems(rc, items, 64);
        int to = cw_rc_timeout_ms(rc);
        zmq_poll(items, (int) n, to < 0 || to > 100 ? 100 : to);
        cw_rc_process(rc, items, n);
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 > limit_ms) {
            fprintf(stderr, "rc_driver: gave up after %lld ms waiting for %s\n",
                    (long long) limit_ms, what);
            exit(1);
        }
    }
}

/* Channel c (index) ends subscribed after churn: a sentinel channel of the
 * same slot (so the same node and subscriber connection) is subscribed
 * after it and confirmed, so every earlier (S)SUBSCRIBE/(S)UNSUBSCRIBE of
 * that connection has been answered; then SPUBLISH must reach exactly one
 * subscriber and its message must arrive. 0 or -1. */
static int resub_check(cw_rc_t *rc, subst_t *s, const char *name, int c, int sentinel)
{
    cw_rc_subscribe(rc, resub_ch[sentinel], strlen(resub_ch[sentinel]), 1);
    run_until(rc, &s->ready[sentinel], 1, 10000, "the sentinel's READY");
    long want = s->spublished + 1, before = s->msgs[c];
    const char *av[] = {"SPUBLISH", resub_ch[c], "hello"};
    cw_rc_command(rc, cw_rc_slot(resub_ch[c], strlen(resub_ch[c])), 3, av, NULL, on_spublish, s);
    run_until(rc, &s->spublished, want, 10000, "SPUBLISH's reply");
    long receivers = s->receivers;
    if (receivers == 1) /* it was delivered to our connection: it arrives */
        run_until(rc, &s->msgs[c], before + 1, 10000, "the published message");
    printf("resub %s receivers %ld received %ld lost %ld\n", name, receivers, s->msgs[c] - before,
           s->lost[c]);
    return receivers == 1 && s->msgs[c] == before + 1 ? 0 : -1;
}

static int resub(cw_rc_t *rc)
{
    subst_t s = {0};
    cw_rc_set_sub_cb(rc, on_sub, &s);
    zmq_pollitem_t items[64];
    /* A: active, then unsubscribed and subscribed again before the next
     * cw_rc_process (a user released and claimed again at once). */
    cw_rc_subscribe(rc, resub_ch[0], strlen(resub_ch[0]), 1);
    run_until(rc, &s.ready[0], 1, 10000, "READY of A");
    cw_rc_unsubscribe(rc, resub_ch[0], strlen(resub_ch[0]), 1);
    cw_rc_subscribe(rc, resub_ch[0], strlen(resub_ch[0]), 1);
    run_until(rc, &s.ready[0], 2, 10000, "READY of A again");
    int bad = resub_check(rc, &s, "active", 0, 2) != 0;
    /* B: subscribed and written out (cw_rc_process with no poll items reads
     * nothing), then unsubscribed and subscribed again before its
     * confirmation was read. */
    cw_rc_subscribe(rc, resub_ch[1], strlen(resub_ch[1]), 1);
    cw_rc_process(rc, items, 0);
    cw_rc_unsubscribe(rc, resub_ch[1], strlen(resub_ch[1]), 1);
    cw_rc_subscribe(rc, resub_ch[1], strlen(resub_ch[1]), 1);
    run_until(rc, &s.ready[1], 1, 10000, "READY of B");
    bad |= resub_check(rc, &s, "unconfirmed", 1, 3) != 0;
    /* a channel with a live subscription is not subscribed twice */
    int twice = cw_rc_subscribe(rc, resub_ch[1], strlen(resub_ch[1]), 1);
    printf("resub twice %s\n", cw_status_name(twice));
    bad |= twice != CW_ERR_INVALID;
    return bad ? 1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "resub") != 0 && argc < 4)) {
        fprintf(stderr, "usage: rc_driver keyslots SEEDS N | push SEEDS COUNT KEYS W | resub SEEDS\n");
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
    if (!strcmp(argv[1], "resub")) {
        int rc2 = resub(rc);
        cw_rc_destroy(&rc);
        return rc2;
    }
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
    int scripted = !strcmp(argv[1], "spush");
    if ((strcmp(argv[1], "push") && !scripted) || argc < 6 || argc > 7) {
        fprintf(stderr, "usage: rc_driver push|spush SEEDS COUNT KEYS W [HOLDS]\n");
        return 2;
    }
    static const char body[] = "return redis.call('RPUSH', KEYS[1], ARGV[1])";
    static char sha[41];
    if (scripted) {
        /* its sha from one node; every connection made from now on loads it
         * first (the ones up already: the NOSCRIPT fallback) */
        const char *av[] = {"SCRIPT", "LOAD", body};
        st.lists = calloc(1, sizeof *st.lists);
        cw_rc_command(rc, 0, 3, av, NULL, on_sha, job(&st, 0));
        run(rc, &st, 1, 30000);
        if (!st.lists[0] || strlen(st.lists[0]) != 40) {
            fprintf(stderr, "rc_driver: SCRIPT LOAD failed\n");
            return 1;
        }
        memcpy(sha, st.lists[0], 41);
        free(st.lists[0]);
        free(st.lists);
        st.lists = NULL;
        st.answered = 0;
        cw_rc_preload(rc, body);
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
            uint16_t slot = cw_rc_slot(names[sent % keys], strlen(names[sent % keys]));
            if (scripted) {
                const char *av[] = {"1", names[sent % keys], v};
                cw_rc_script(rc, slot, sha, body, 3, av, NULL, on_push, job(&st, sent));
            } else {
                const char *av[] = {"RPUSH", names[sent % keys], v};
                cw_rc_command(rc, slot, 3, av, NULL, on_push, job(&st, sent));
            }
            sent++;
        }
        if (hold >= 0 && sent >= hold && (!idle || st.answered == sent)) {
            /* write what is queued, then wait for the test's fault */
            cw_rc_process(rc, items, 0);
            cw_rc_stats_t hs;
            cw_rc_stats(rc, &hs);
            printf("noscript %llu\nholding\n", (unsigned long long) hs.noscript);
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
           "expired %llu noscript %llu\n", (unsigned long long) s.sent,
           (unsigned long long) s.moved, (unsigned long long) s.asked,
           (unsigned long long) s.retried, (unsigned long long) s.reconnects,
           (unsigned long long) s.refreshes, (unsigned long long) s.expired,
           (unsigned long long) s.noscript);
    cw_rc_destroy(&rc);
    free(st.lists);
    free(names);
    return 0;
}
