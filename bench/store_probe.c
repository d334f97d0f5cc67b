/*  store_probe: what an embedded store can do on this machine's disk, for
 *  the durable target of issue 15 (ACCEPTED/s >= Redis appendfsync always,
 *  <= 2 us of broker CPU per message). The same work on three engines:
 *
 *    sqlite  SQLite 3 in WAL mode, synchronous=FULL: one INSERT per record
 *            into (user, seq, body) with its primary key, one transaction
 *            and one WAL fsync per group — the shape of causeway's store,
 *            without its extra tables, checksums and dedup records (so a
 *            floor for any SQLite design)
 *    lmdb    LMDB, default (synchronous) commits: one write transaction
 *            per group, one put per record keyed (user, seq)
 *    log     an append-only file of our own: a record is a 16-byte header
 *            (length, user, seq, CRC-32) and the body, written with one
 *            write() per group and made durable with one fdatasync()
 *
 *  usage: store_probe [records [body_bytes [groups]]]
 *    records     per run (default 200000)
 *    body_bytes  (default 100)
 *    groups      comma-separated records per commit (default 64,512,2048)
 *  For each engine and group size: records/s, CPU per record (this thread,
 *  which does nothing else) and commits/s. A record counts only after the
 *  commit that holds it returned. Writes under CW_BENCH_DATA (see
 *  bench_util.h: never a tmpfs) and removes what it made. Not a test.
 */
#include "bench_util.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define USERS 64

typedef struct {
    double secs, cpu_s;
    long commits;
} probe_t;

static int run_sqlite(const char *dir, long n, int body, int group, probe_t *out)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/probe.db", dir);
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        return -1;
    sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE q(user INTEGER, seq INTEGER, body BLOB, PRIMARY KEY(user, seq))"
                     " WITHOUT ROWID;", NULL, NULL, NULL);
    sqlite3_stmt *ins;
    sqlite3_prepare_v2(db, "INSERT INTO q VALUES(?,?,?)", -1, &ins, NULL);
    char *buf = calloc(1, (size_t) body);
    long seq[USERS] = {0};
    double c0 = bench_thread_cpu_s();
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n;) {
        sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
        for (int k = 0; k < group && i < n; k++, i++) {
            int u = (int) (i % USERS);
            sqlite3_bind_int(ins, 1, u);
            sqlite3_bind_int64(ins, 2, ++seq[u]);
            sqlite3_bind_blob(ins, 3, buf, body, SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE)
                return -1;
            sqlite3_reset(ins);
        }
        if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            return -1;
        out->commits++;
    }
    out->secs = (double) (bench_now_ns() - t0) / 1e9;
    out->cpu_s = bench_thread_cpu_s() - c0;
    sqlite3_finalize(ins);
    sqlite3_close(db);
    free(buf);
    return 0;
}

static int run_lmdb(const char *dir, long n, int body, int group, probe_t *out)
{
    MDB_env *env;
    if (mdb_env_create(&env) != 0)
        return -1;
    mdb_env_set_mapsize(env, (size_t) 8 << 30);
    if (mdb_env_open(env, dir, 0, 0644) != 0)
        return -1;
    MDB_txn *txn;
    MDB_dbi dbi;
    mdb_txn_begin(env, NULL, 0, &txn);
    mdb_dbi_open(txn, NULL, 0, &dbi);
    mdb_txn_commit(txn);
    char *buf = calloc(1, (size_t) body);
    uint64_t seq[USERS] = {0};
    double c0 = bench_thread_cpu_s();
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n;) {
        if (mdb_txn_begin(env, NULL, 0, &txn) != 0)
            return -1;
        for (int k = 0; k < group && i < n; k++, i++) {
            int u = (int) (i % USERS);
            /* big-endian (user, seq): keys sort by user, then seq */
            unsigned char key[12];
            uint64_t s = ++seq[u];
            for (int b = 0; b < 4; b++)
                key[b] = (unsigned char) ((unsigned) u >> (24 - 8 * b));
            for (int b = 0; b < 8; b++)
                key[4 + b] = (unsigned char) (s >> (56 - 8 * b));
            MDB_val kv = {sizeof key, key}, vv = {(size_t) body, buf};
            if (mdb_put(txn, dbi, &kv, &vv, 0) != 0)
                return -1;
        }
        if (mdb_txn_commit(txn) != 0)
            return -1;
        out->commits++;
    }
    out->secs = (double) (bench_now_ns() - t0) / 1e9;
    out->cpu_s = bench_thread_cpu_s() - c0;
    mdb_env_close(env);
    free(buf);
    return 0;
}

static int run_log(const char *dir, long n, int body, int group, probe_t *out)
{
    char path[1400];
    snprintf(path, sizeof path, "%s/probe.log", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    size_t rec = 16 + (size_t) body;
    char *batch = malloc(rec * (size_t) group);
    char *payload = calloc(1, (size_t) body);
    uint32_t seq[USERS] = {0};
    double c0 = bench_thread_cpu_s();
    int64_t t0 = bench_now_ns();
    for (long i = 0; i < n;) {
        size_t len = 0;
        for (int k = 0; k < group && i < n; k++, i++) {
            uint32_t u = (uint32_t) (i % USERS), s = ++seq[u], l = (uint32_t) body;
            char *r = batch + len;
            memcpy(r, &l, 4);
            memcpy(r + 4, &u, 4);
            memcpy(r + 8, &s, 4);
            memcpy(r + 16, payload, (size_t) body);
            uint32_t crc = (uint32_t) crc32(crc32(0L, (const Bytef *) r, 12),
                                            (const Bytef *) r + 16, (uInt) body);
            memcpy(r + 12, &crc, 4);
            len += rec;
        }
        if (write(fd, batch, len) != (ssize_t) len || fdatasync(fd) != 0)
            return -1;
        out->commits++;
    }
    out->secs = (double) (bench_now_ns() - t0) / 1e9;
    out->cpu_s = bench_thread_cpu_s() - c0;
    close(fd);
    free(batch);
    free(payload);
    return 0;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    int body = argc > 2 ? atoi(argv[2]) : 100;
    const char *groups = argc > 3 ? argv[3] : "64,512,2048";
    if (n < 1 || body < 1 || body > 1 << 20) {
        fprintf(stderr, "usage: store_probe [records [body_bytes [groups]]]\n");
        return 2;
    }
    char base[1200];
    if (bench_data_dir("cw-store-probe", base, sizeof base) != 0)
        return 1;
    static const char *const names[] = {"sqlite", "lmdb", "log"};
    int (*const runs[])(const char *, long, int, int, probe_t *) = {run_sqlite, run_lmdb, run_log};
    printf("%-8s %8s %14s %14s %12s\n", "engine", "group", "records/s", "CPU us/rec", "commits/s");
    int failed = 0;
    for (const char *g = groups; g && *g;) {
        int group = atoi(g);
        for (int e = 0; e < 3 && group > 0; e++) {
            char dir[1300];
            snprintf(dir, sizeof dir, "%s/%s-%d", base, names[e], group);
            mkdir(dir, 0755);
            probe_t p = {0};
            if (runs[e](dir, n, body, group, &p) != 0) {
                fprintf(stderr, "store_probe: %s failed (group %d): %s\n", names[e], group,
                        strerror(errno));
                failed = 1;
                continue;
            }
            printf("%-8s %8d %14.0f %14.3f %12.0f\n", names[e], group, (double) n / p.secs,
                   p.cpu_s * 1e6 / (double) n, (double) p.commits / p.secs);
            char fig[64];
            snprintf(fig, sizeof fig, "probe_%s_g%d_per_s", names[e], group);
            bench_figure(fig, (double) n / p.secs);
            snprintf(fig, sizeof fig, "probe_%s_g%d_cpu_us", names[e], group);
            bench_figure(fig, p.cpu_s * 1e6 / (double) n);
        }
        g = strchr(g, ',');
        g = g ? g + 1 : NULL;
    }
    char cmd[1300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0)
        fprintf(stderr, "store_probe: could not remove %s\n", base);
    printf("command: store_probe %ld %d %s\n", n, body, groups);
    return failed;
}
