/*  clock_bench: what vector clocks cost on the wire.
 *
 *  For clocks of 0, 10, 100 and 1,000 entries (node names "user0001"...),
 *  prints the packed size of a Send envelope with a 100-byte text, and the
 *  time to encode and to decode it (cw_env_pack / cw_env_decode), median of
 *  repeated batches, as a table and as "figure" lines for scripts/bench.
 *  Not a test: it prints figures, never fails on them.
 *  usage: clock_bench [iterations]   (default 20000 per batch, 5 batches)
 */
#include "cw_envelope.h"
#include "cw_status.h"
#include "cw_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCHES 5

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: clock_bench [iterations]\n");
        return 0;
    }
    long iters = argc > 1 ? atol(argv[1]) : 20000;
    if (iters <= 0)
        iters = 20000;
    static const size_t sizes[] = {0, 10, 100, 1000};
    double figures[4][3];
    printf("clock_bench %ld\n%8s %12s %14s %14s\n", iters, "entries", "bytes", "encode ns",
           "decode ns");
    char text[101];
    memset(text, 'x', 100);
    text[100] = '\0';
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = sizes[k];
        cw_clock_entry_msg_t *entries = calloc(n ? n : 1, sizeof *entries);
        cw_clock_entry_msg_t **ptrs = calloc(n ? n : 1, sizeof *ptrs);
        char (*names)[32] = calloc(n ? n : 1, sizeof *names);
        for (size_t i = 0; i < n; i++) {
            snprintf(names[i], sizeof names[i], "user%04zu", i);
            causeway__v1__clock_entry__init(&entries[i]);
            entries[i].node = names[i];
            entries[i].counter = 1000 + i * 7;
            ptrs[i] = &entries[i];
        }
        char *to[] = {"bob"};
        cw_env_t env;
        Causeway__V1__Send send;
        cw_env_init(&env, 42);
        causeway__v1__send__init(&send);
        send.n_to = 1;
        send.to = to;
        send.text = text;
        env.body_case = CW_BODY(SEND);
        env.send = &send;
        env.n_clock = n;
        env.clock = ptrs;
        uint8_t *buf = NULL;
        size_t len = 0;
        double enc[BATCHES], dec[BATCHES];
        for (int b = 0; b < BATCHES; b++) {
            double t0 = now_ns();
            for (long i = 0; i < iters; i++) {
                free(buf);
                cw_env_pack(&env, &buf, &len);
            }
            enc[b] = (now_ns() - t0) / (double) iters;
            t0 = now_ns();
            for (long i = 0; i < iters; i++) {
                cw_env_t *out = NULL;
                uint64_t rid;
                const char *detail;
                if (cw_env_decode(buf, len, 1u << 30, &out, &rid, &detail) != CW_OK) {
                    fprintf(stderr, "clock_bench: decode failed: %s\n", detail);
                    return 1;
                }
                cw_env_free(&out);
            }
            dec[b] = (now_ns() - t0) / (double) iters;
        }
        qsort(enc, BATCHES, sizeof enc[0], cmp_d);
        qsort(dec, BATCHES, sizeof dec[0], cmp_d);
        printf("%8zu %12zu %14.0f %14.0f\n", n, len, enc[BATCHES / 2], dec[BATCHES / 2]);
        figures[k][0] = (double) len;
        figures[k][1] = enc[BATCHES / 2];
        figures[k][2] = dec[BATCHES / 2];
        free(buf);
        free(entries);
        free(ptrs);
        free(names);
    }
    /* "figure" lines for scripts/bench, after the table */
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        printf("figure clock%zu_bytes %.0f\n", sizes[k], figures[k][0]);
        printf("figure clock%zu_encode_ns %.0f\n", sizes[k], figures[k][1]);
        printf("figure clock%zu_decode_ns %.0f\n", sizes[k], figures[k][2]);
    }
    return 0;
}
