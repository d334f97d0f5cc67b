/*  clockd_gen: writes a synthetic causeway-clockd trace (JSON lines, the
 *  format of docs/CLOCKD.md) for benchmarks and differential tests.
 *
 *  usage: clockd_gen --events N --processes P [--seed S] [--reorder F]
 *                    [--dup F] [--drop F] [--local F] [--multicast F]
 *                    [--broken F] [--no-msg-clock] [OUT]
 *
 *  A seeded simulation of P processes (p0 .. p{P-1}) with vector clocks
 *  done as libcauseway does them: each step one random process either
 *  delivers a pending message (a deliver event: merge, then tick, with the
 *  message's clock as msg_clock), sends to one random peer (or to two or
 *  three with probability --multicast), or does a local event (--local,
 *  default 0.1). Deliveries normally follow global send order, which is
 *  causal; with probability --reorder a random pending message is
 *  delivered instead (causal-order findings), --dup delivers a message
 *  twice (duplicate), --drop loses it (gaps when later ones are delivered),
 *  and --broken writes an event whose own entry goes back by one (clock-rule
 *  findings). Exactly N events are written. Deterministic for a given
 *  command line. Prints "clockd_gen: N events, P processes, mean clock
 *  entries M" on stderr at the end. Single-threaded; writes OUT (default
 *  stdout) only.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t from;
    uint64_t *clock;     /* sender's clock at the send, P entries */
    uint64_t own;        /* sender's own entry: the key is from:own */
    size_t refs;         /* receivers still to deliver it */
} message_t;

typedef struct {
    size_t *msgs;        /* pending message indexes, in send order */
    size_t n, cap;
} inbox_t;

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* splitmix64: small, seeded, good enough for a workload. */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double unit(void) { return (double) (rnd() >> 11) / 9007199254740992.0; }

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "clockd_gen: out of memory\n");
        exit(5);
    }
    return q;
}

static unsigned long long entries_written;   /* entries of "clock" fields, for the summary */

static size_t put_clock(FILE *f, const uint64_t *c, size_t np)
{
    /* Sorted by name, as the canonical form: p0 < p1 < p10 < ... as strings. */
    static size_t *order;
    static size_t norder;
    if (norder != np) {
        order = xrealloc(order, np * sizeof *order);
        for (size_t i = 0; i < np; i++)
            order[i] = i;
        /* insertion sort by decimal string: fine for the few hundred processes */
        for (size_t i = 1; i < np; i++) {
            size_t v = order[i], j = i;
            char a[24], b[24];
            snprintf(a, sizeof a, "%zu", v);
            while (j > 0) {
                snprintf(b, sizeof b, "%zu", order[j - 1]);
                if (strcmp(b, a) <= 0)
                    break;
                order[j] = order[j - 1];
                j--;
            }
            order[j] = v;
        }
        norder = np;
    }
    fputc('{', f);
    size_t written = 0;
    for (size_t k = 0; k < np; k++) {
        size_t i = order[k];
        if (!c[i])
            continue;
        fprintf(f, "%s\"p%zu\":%llu", written ? "," : "", i, (unsigned long long) c[i]);
        written++;
    }
    fputc('}', f);
    return written;
}

static int arg_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || v < 0 || v > 1)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long long events = 0, procs = 0, seed = 1;
    double reorder = 0, dup = 0, drop = 0, local = 0.1, multicast = 0, broken = 0;
    int msg_clock = 1;
    const char *out = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--events") && v) events = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--processes") && v) procs = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--seed") && v) seed = strtoull(v, NULL, 10), i++;
        else if (!strcmp(a, "--reorder") && v) bad = arg_double(v, &reorder), i++;
        else if (!strcmp(a, "--dup") && v) bad = arg_double(v, &dup), i++;
        else if (!strcmp(a, "--drop") && v) bad = arg_double(v, &drop), i++;
        else if (!strcmp(a, "--local") && v) bad = arg_double(v, &local), i++;
        else if (!strcmp(a, "--multicast") && v) bad = arg_double(v, &multicast), i++;
        else if (!strcmp(a, "--broken") && v) bad = arg_double(v, &broken), i++;
        else if (!strcmp(a, "--no-msg-clock")) msg_clock = 0;
        else if (a[0] != '-' && !out) out = a;
        else bad = 1;
        if (bad) {
            fprintf(stderr, "usage: clockd_gen --events N --processes P [--seed S] [--reorder F] "
                            "[--dup F] [--drop F] [--local F] [--multicast F] [--broken F] "
                            "[--no-msg-clock] [OUT]\n");
            return 2;
        }
    }
    if (!events || procs < 2 || procs > 100000) {
        fprintf(stderr, "clockd_gen: --events N (>= 1) and --processes P (2..100000) are required\n");
        return 2;
    }
    FILE *f = out ? fopen(out, "w") : stdout;
    if (!f) {
        fprintf(stderr, "clockd_gen: %s: %s\n", out, strerror(errno));
        return 5;
    }
    rng_state = seed;
    size_t np = (size_t) procs;
    uint64_t *clocks = calloc(np * np, sizeof *clocks);   /* clocks[p * np + q] */
    inbox_t *inbox = calloc(np, sizeof *inbox);
    message_t *msgs = NULL;
    size_t n_msgs = 0, cap_msgs = 0;
    if (!clocks || !inbox) {
        fprintf(stderr, "clockd_gen: out of memory\n");
        return 5;
    }
    unsigned long long written = 0;
    while (written < events) {
        size_t p = (size_t) (rnd() % np);
        uint64_t *c = clocks + p * np;
        inbox_t *in = &inbox[p];
        if (in->n && unit() < 0.5) {
            size_t pos = unit() < reorder ? (size_t) (rnd() % in->n) : 0;
            size_t m = in->msgs[pos];
            message_t *msg = &msgs[m];
            int again = unit() < dup;
            if (!again) {
                memmove(in->msgs + pos, in->msgs + pos + 1, (in->n - pos - 1) * sizeof *in->msgs);
                in->n--;
            }
            if (unit() < drop) {
                if (!again && --msg->refs == 0) {
                    free(msg->clock);
                    msg->clock = NULL;
                }
                continue;   /* lost in transit: no event */
            }
            for (size_t q = 0; q < np; q++)
                if (msg->clock[q] > c[q])
                    c[q] = msg->clock[q];
            c[p]++;
            fprintf(f, "{\"process\":\"p%zu\",\"kind\":\"deliver\",\"clock\":", p);
            entries_written += put_clock(f, c, np);
            fprintf(f, ",\"msg\":\"p%zu:%llu\",\"peers\":[\"p%zu\"]", msg->from,
                    (unsigned long long) msg->own, msg->from);
            if (msg_clock) {
                fputs(",\"msg_clock\":", f);
                put_clock(f, msg->clock, np);
            }
            fputs("}\n", f);
            if (!again && --msg->refs == 0) {
                free(msg->clock);
                msg->clock = NULL;
            }
        } else if (unit() < local) {
            c[p]++;
            int bad = unit() < broken && c[p] > 2;
            if (bad)
                c[p] -= 2;   /* the own entry goes back: 1, 2, 1 */
            fprintf(f, "{\"process\":\"p%zu\",\"kind\":\"local\",\"clock\":", p);
            entries_written += put_clock(f, c, np);
            fputs("}\n", f);
            if (bad)
                c[p] += 2;
        } else {
            c[p]++;
            size_t to[3], nto = 1;
            if (unit() < multicast)
                nto = 2 + (size_t) (rnd() % 2);
            if (nto > np - 1)
                nto = np - 1;
            for (size_t k = 0; k < nto; k++) {
                size_t r;
                int fresh;
                do {
                    r = (size_t) (rnd() % np);
                    fresh = r != p;
                    for (size_t j = 0; j < k && fresh; j++)
                        fresh = to[j] != r;
                } while (!fresh);
                to[k] = r;
            }
            if (n_msgs == cap_msgs) {
                cap_msgs = cap_msgs ? cap_msgs * 2 : 1024;
                msgs = xrealloc(msgs, cap_msgs * sizeof *msgs);
            }
            message_t *msg = &msgs[n_msgs];
            msg->from = p;
            msg->own = c[p];
            msg->refs = nto;
            msg->clock = xrealloc(NULL, np * sizeof *msg->clock);
            memcpy(msg->clock, c, np * sizeof *c);
            fprintf(f, "{\"process\":\"p%zu\",\"kind\":\"send\",\"clock\":", p);
            entries_written += put_clock(f, c, np);
            fprintf(f, ",\"msg\":\"p%zu:%llu\",\"peers\":[", p, (unsigned long long) c[p]);
            for (size_t k = 0; k < nto; k++) {
                fprintf(f, "%s\"p%zu\"", k ? "," : "", to[k]);
                inbox_t *ri = &inbox[to[k]];
                if (ri->n == ri->cap) {
                    ri->cap = ri->cap ? ri->cap * 2 : 16;
                    ri->msgs = xrealloc(ri->msgs, ri->cap * sizeof *ri->msgs);
                }
                ri->msgs[ri->n++] = n_msgs;
            }
            fputs("]}\n", f);
            n_msgs++;
        }
        written++;
    }
    for (size_t m = 0; m < n_msgs; m++)
        free(msgs[m].clock);
    free(msgs);
    for (size_t p = 0; p < np; p++)
        free(inbox[p].msgs);
    free(inbox);
    free(clocks);
    if (fflush(f) != 0 || (out && fclose(f) != 0)) {
        fprintf(stderr, "clockd_gen: write failed: %s\n", strerror(errno));
        return 5;
    }
    fprintf(stderr, "clockd_gen: %llu events, %zu processes, mean clock entries %.1f\n", written, np,
            (double) entries_written / (double) written);
    return 0;
}
