/*  recovery_bench: how long causeway-broker takes to start on a store that
 *  holds many queued messages.
 *
 *  usage: recovery_bench [messages [users [runs]]]
 *         (default 1000000 messages over 64 users, 3 runs)
 *  Fills a fresh data directory through the store API (batches of 10000,
 *  100-byte bodies, every batch committed), closes it, then times
 *  cw_broker_new on it: lock, SQLite open and WAL recovery, quick_check,
 *  schema check, user log load, store thread start. Runs `runs` times on
 *  the same store and prints min/median/max, and each run as a "figure"
 *  line for scripts/bench. Not a test: it prints figures, never fails on
 *  them.
 */
#include "broker.h"
#include "broker_config.h"
#include "bench_util.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"
#include "store.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 10000
#define RUNS_MAX 100

static int cmp_ms(const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: recovery_bench [messages [users [runs]]]\n"
               "  Fills a store with `messages` queued messages (default 1000000) for\n"
               "  `users` users (default 64), then times `runs` broker starts on it\n"
               "  (default 3, at most 100).\n");
        return 0;
    }
    size_t total = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    size_t users = argc > 2 ? strtoul(argv[2], NULL, 10) : 64;
    int runs = argc > 3 ? atoi(argv[3]) : 3;
    if (total == 0 || users == 0 || users > 100000 || runs < 1 || runs > RUNS_MAX) {
        fprintf(stderr, "recovery_bench: bad arguments\n");
        return 2;
    }
    zsys_handler_set(NULL);
    cw_log_set_tag("bench");
    cw_log_set_level(CW_LOG_WARN);
    char dir[1000]; /* fits cw_broker_config_t.data */
    if (bench_data_dir("cw-recovery-bench", dir, sizeof dir) != 0)
        return 1;
    char err[512];
    cw_store_t *st = NULL;
    if (cw_store_open(dir, NULL, &st, err, sizeof err) != CW_OK) {
        fprintf(stderr, "recovery_bench: %s\n", err);
        return 1;
    }
    char (*names)[32] = calloc(users, sizeof *names);
    for (size_t u = 0; u < users; u++) {
        snprintf(names[u], sizeof names[u], "user%zu", u);
        cw_store_add_user(st, names[u], NULL);
    }
    char text[101];
    memset(text, 'x', 100);
    text[100] = '\0';
    cw_store_msg_t *msgs = calloc(BATCH, sizeof *msgs);
    cw_store_rcpt_t *rcpts = calloc(BATCH, sizeof *rcpts);
    int64_t t0 = cw_mono_ms();
    for (size_t done = 0; done < total;) {
        size_t n = total - done < BATCH ? total - done : BATCH;
        for (size_t i = 0; i < n; i++) {
            memset(&msgs[i], 0, sizeof msgs[i]);
            rcpts[i].name = names[(done + i) % users];
            msgs[i].sender = "filler";
            msgs[i].text = text;
            msgs[i].text_len = 100;
            msgs[i].timestamp_us = cw_now_us();
            msgs[i].rcpts = &rcpts[i];
            msgs[i].n_rcpts = 1;
        }
        if (cw_store_append_batch(st, msgs, n) != CW_OK) {
            fprintf(stderr, "recovery_bench: append failed: %s\n", cw_store_errmsg(st));
            return 1;
        }
        done += n;
    }
    cw_store_stats_t stats;
    cw_store_stats(st, &stats);
    cw_store_close(&st);
    printf("recovery_bench %zu %zu %d\nfilled %llu queued messages over %zu users in %.1f s\n",
           total, users, runs, (unsigned long long) stats.pending, users,
           (double) (cw_mono_ms() - t0) / 1000.0);

    int64_t ms[RUNS_MAX];
    for (int r = 0; r < runs; r++) {
        cw_broker_config_t cfg;
        cw_broker_config_defaults(&cfg);
        snprintf(cfg.bind, sizeof cfg.bind, "tcp://127.0.0.1:*");
        snprintf(cfg.data, sizeof cfg.data, "%s", dir);
        cfg.log_level = CW_LOG_WARN;
        int64_t s0 = cw_mono_ms();
        cw_broker_t *b = cw_broker_new(&cfg, err, sizeof err);
        ms[r] = cw_mono_ms() - s0;
        if (!b) {
            fprintf(stderr, "recovery_bench: %s\n", err);
            return 1;
        }
        cw_broker_destroy(&b);
        printf("figure recovery_start_ms %lld\n", (long long) ms[r]);
    }
    qsort(ms, (size_t) runs, sizeof ms[0], cmp_ms);
    printf("broker start on the filled store (%d runs): min %lld ms, median %lld ms, max %lld ms\n",
           runs, (long long) ms[0], (long long) ms[runs / 2], (long long) ms[runs - 1]);
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "recovery_bench: could not remove %s\n", dir);
    free(names);
    free(msgs);
    free(rcpts);
    return 0;
}
