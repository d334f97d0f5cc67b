/*  store_bench: append throughput of the durable store, direct and through
 *  the store actor (group commit).
 *
 *  usage: store_bench [messages [body_bytes [window [what]]]]
 *    messages    appends per measured run (default 200000)
 *    body_bytes  text size (default 100)
 *    window      appends the "router" keeps in flight through the actor
 *                (default 20000)
 *    what        all (default), direct or actor: which runs to do
 *  Runs in a fresh directory from bench_data_dir (on a disk, never a tmpfs), removed
 *  at the end. Every append is durable (WAL fsync) before it is counted.
 *  Figures printed:
 *    baseline      one append per transaction: one fsync per message, the
 *                  rate without group commit
 *    direct N      cw_store_append_batch with N messages per call
 *    actor         requests submitted to the store actor by one thread,
 *                  replies drained by the same thread (the router's shape)
 *  Not a test: it prints figures and never fails on them.
 */
#include "bench_util.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"
#include "store.h"
#include "store_actor.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define USERS 64

static char g_names[USERS][16];

static double now_s(void) { return (double) cw_mono_ms() / 1000.0; }

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static cw_store_t *open_fresh(char *dir, size_t size)
{
    if (bench_data_dir("cw-store-bench", dir, size) != 0)
        exit(1);
    cw_store_t *s = NULL;
    char err[256];
    int rc = cw_store_open(dir, NULL, &s, err, sizeof err);
    if (rc != CW_OK) {
        fprintf(stderr, "open: %s\n", err);
        exit(1);
    }
    for (int i = 0; i < USERS; i++)
        cw_store_add_user(s, g_names[i], NULL);
    return s;
}

/* Fills m as message i (unicast, round-robin over the users). */
static void make_msg(cw_store_msg_t *m, cw_store_rcpt_t *r, char *mid, size_t mid_size,
                     const char *body, size_t body_len, uint64_t i)
{
    snprintf(mid, mid_size, "m%llu", (unsigned long long) i);
    memset(m, 0, sizeof *m);
    m->sender = g_names[i % USERS];
    m->message_id = mid;
    m->text = body;
    m->text_len = body_len;
    m->timestamp_us = cw_now_us();
    r->name = g_names[(i + 1) % USERS];
    m->rcpts = r;
    m->n_rcpts = 1;
}

static void run_direct(size_t batch, size_t total, const char *body, size_t body_len,
                       const char *label)
{
    char dir[4096];
    cw_store_t *s = open_fresh(dir, sizeof dir);
    cw_store_msg_t *msgs = calloc(batch, sizeof *msgs);
    cw_store_rcpt_t *rcpts = calloc(batch, sizeof *rcpts);
    char (*mids)[24] = calloc(batch, sizeof *mids);
    cw_store_stats_t st0, st;
    cw_store_stats(s, &st0);
    double t0 = now_s();
    for (size_t done = 0; done < total;) {
        size_t n = total - done < batch ? total - done : batch;
        for (size_t i = 0; i < n; i++)
            make_msg(&msgs[i], &rcpts[i], mids[i], sizeof mids[i], body, body_len, done + i);
        if (cw_store_append_batch(s, msgs, n) != CW_OK) {
            fprintf(stderr, "append: %s\n", cw_store_errmsg(s));
            exit(1);
        }
        done += n;
    }
    double dt = now_s() - t0;
    cw_store_stats(s, &st);
    printf("%-22s %8zu msgs %7.3f s %10.0f msgs/s  %7llu commits\n", label, total, dt,
           (double) total / dt, (unsigned long long) (st.commits - st0.commits));
    free(msgs);
    free(rcpts);
    free(mids);
    cw_store_close(&s);
    remove_dir(dir);
}

static void run_actor(size_t total, size_t window, const char *body, size_t body_len)
{
    char dir[4096];
    cw_store_t *s = open_fresh(dir, sizeof dir);
    cw_store_actor_t *a = cw_store_actor_new(&s, 2 * window + 1000);
    if (!a) {
        fprintf(stderr, "actor_new failed\n");
        exit(1);
    }
    cw_store_actor_stats_t st0, st;
    cw_store_actor_stats(a, &st0);
    size_t sent = 0, answered = 0, accepted = 0, flooded = 0;
    cw_store_msg_t m;
    cw_store_rcpt_t r;
    char mid[24];
    double t0 = now_s();
    while (answered < total) {
        while (sent < total && sent - answered < window) {
            make_msg(&m, &r, mid, sizeof mid, body, body_len, sent);
            int rc = cw_store_actor_append(a, sent, &m);
            if (rc == CW_FLOODED) {
                flooded++;
                break;
            }
            if (rc != CW_OK) {
                fprintf(stderr, "submit: %s\n", cw_status_name(rc));
                exit(1);
            }
            sent++;
        }
        cw_store_reply_t *rep = cw_store_actor_recv(a, sent - answered < window ? 0 : 1000);
        while (rep) {
            answered++;
            if (cw_store_reply_status(rep) == CW_OK &&
                cw_store_reply_rcpt_status(rep, 0) == CW_ACCEPTED)
                accepted++;
            cw_store_reply_destroy(&rep);
            rep = cw_store_actor_recv(a, 0);
        }
        if (sent == total && answered < total) {
            rep = cw_store_actor_recv(a, 1000);
            if (rep) {
                answered++;
                if (cw_store_reply_status(rep) == CW_OK)
                    accepted++;
                cw_store_reply_destroy(&rep);
            }
        }
    }
    double dt = now_s() - t0;
    cw_store_actor_stats(a, &st);
    unsigned long long commits = (unsigned long long) (st.commits - st0.commits);
    printf("%-22s %8zu msgs %7.3f s %10.0f msgs/s  %7llu commits  %.0f msgs/commit, "
           "largest group %llu, %zu flooded submits, %zu accepted\n",
           "actor (group commit)", total, dt, (double) total / dt, commits,
           commits ? (double) total / (double) commits : 0.0,
           (unsigned long long) st.max_group, flooded, accepted);
    cw_store_actor_destroy(&a);
    remove_dir(dir);
}

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: store_bench [messages [body_bytes [window [all|direct|actor]]]]\n"
               "Append throughput of the durable store, direct and through the store actor.\n");
        return 0;
    }
    size_t total = argc > 1 ? strtoul(argv[1], NULL, 10) : 200000;
    size_t body_len = argc > 2 ? strtoul(argv[2], NULL, 10) : 100;
    size_t window = argc > 3 ? strtoul(argv[3], NULL, 10) : 20000;
    const char *what = argc > 4 ? argv[4] : "all";
    int direct = strcmp(what, "actor") != 0, actor = strcmp(what, "direct") != 0;
    cw_log_set_level(CW_LOG_WARN);
    cw_log_set_tag("store_bench");
    for (int i = 0; i < USERS; i++)
        snprintf(g_names[i], sizeof g_names[i], "user%02d", i);
    char *body = malloc(body_len + 1);
    memset(body, 'x', body_len);
    body[body_len] = '\0';

    printf("store_bench: %zu messages of %zu bytes, %d users, fsync per commit\n", total,
           body_len, USERS);
    if (direct) {
        run_direct(1, total < 2000 ? total : 2000, body, body_len, "baseline (1/commit)");
        run_direct(100, total, body, body_len, "direct (100/commit)");
        run_direct(1000, total, body, body_len, "direct (1000/commit)");
    }
    if (actor)
        run_actor(total, window, body, body_len);
    free(body);
    return 0;
}
