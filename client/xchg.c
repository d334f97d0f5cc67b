/*  xchg.c: the phase-3 exchange's state machine (see xchg.h). Owns the
 *  member table and the PRNG; pure logic, called from one thread.
 *  Invariant: `done` is only set for a peer after the start, or by its
 *  "done" message; XCHG_FINISHED is final.
 */
#include "xchg.h"
#include "cw_util.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;          /* borrowed from the caller's group */
    int online;                /* a session holds the name now */
    int done;                  /* sent us "done", or left after the start */
} member_t;

struct xchg {
    member_t *peers;           /* the other members, in group order */
    size_t n_peers;
    xchg_phase_t phase;
    uint64_t rng;              /* splitmix64 state */
    long min_ms, max_ms;
    long count, for_ms;        /* ends after count sends / for_ms ms (0: never) */
    long sent;                 /* clock messages sent */
    long received;             /* deliveries, "done" ones included */
    int64_t next_send;         /* RUNNING: monotonic ms of the next send */
    int64_t run_end;           /* RUNNING: for_ms ends then; INT64_MAX if none */
};

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static long interval(xchg_t *x)
{
    uint64_t span = (uint64_t) (x->max_ms - x->min_ms) + 1;
    return x->min_ms + (long) (splitmix64(&x->rng) % span);
}

static member_t *find_peer(const xchg_t *x, const char *name)
{
    for (size_t i = 0; name && i < x->n_peers; i++)
        if (strcmp(x->peers[i].name, name) == 0)
            return &x->peers[i];
    return NULL;
}

xchg_t *xchg_new(const char *me, const char *const *group, size_t n_group, long min_ms,
                 long max_ms, uint64_t seed, long count, long for_ms, char *err, size_t size)
{
    const char *why;
    if (min_ms < 0 || max_ms < min_ms) {
        cw_set_err(err, size, "--min-ms %ld is above --max-ms %ld", min_ms,
                   max_ms);
        return NULL;
    }
    xchg_t *x = calloc(1, sizeof *x);
    if (!x || !(x->peers = calloc(n_group ? n_group : 1, sizeof *x->peers))) {
        free(x);
        cw_set_err(err, size, "out of memory");
        return NULL;
    }
    int in_group = 0;
    for (size_t i = 0; i < n_group; i++) {
        const char *name = group[i];
        if (cw_name_check(name, CW_NAME_MAX_HARD, &why) != CW_OK) {
            cw_set_err(err, size, "--group: '%s' is not a user name: %s", name, why);
            xchg_destroy(&x);
            return NULL;
        }
        if (strcmp(name, me) == 0)
            in_group = 1;
        else if (!find_peer(x, name))
            x->peers[x->n_peers++].name = name;
    }
    if (!in_group) {
        cw_set_err(err, size, "%s is not in --group", me);
        xchg_destroy(&x);
    } else if (!x->n_peers) {
        cw_set_err(err, size, "--group has nobody but %s", me);
        xchg_destroy(&x);
    } else {
        x->min_ms = min_ms;
        x->max_ms = max_ms;
        x->rng = seed;
        x->count = count;
        x->for_ms = for_ms;
        x->phase = XCHG_WAITING;
    }
    return x;
}

void xchg_destroy(xchg_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->peers);
    free(*p);
    *p = NULL;
}

void xchg_users(xchg_t *x, const cw_user_t *u, size_t n)
{
    for (size_t i = 0; i < x->n_peers; i++)
        x->peers[i].online = 0;
    for (size_t i = 0; i < n; i++) {
        member_t *m = find_peer(x, u[i].name);
        if (m)
            m->online = u[i].online;
    }
    if (x->phase != XCHG_WAITING)
        for (size_t i = 0; i < x->n_peers; i++)
            if (!x->peers[i].online)
                x->peers[i].done = 1;
}

int xchg_presence(xchg_t *x, const char *name, int online)
{
    member_t *m = find_peer(x, name);
    if (!m)
        return 0;
    m->online = online;
    if (!online && x->phase != XCHG_WAITING)
        m->done = 1;   /* left after the start: nothing more will come */
    return 1;
}

int xchg_delivery(xchg_t *x, const char *from, const char *text)
{
    member_t *peer = find_peer(x, from);
    int done = peer && text && strcmp(text, XCHG_DONE_TEXT) == 0;
    if (done)
        peer->done = 1;
    x->received++;
    return done;
}

static int all_online(const xchg_t *x)
{
    for (size_t i = 0; i < x->n_peers; i++)
        if (!x->peers[i].online)
            return 0;
    return 1;
}

static int all_done(const xchg_t *x)
{
    for (size_t i = 0; i < x->n_peers; i++)
        if (!x->peers[i].done)
            return 0;
    return 1;
}

xchg_action_t xchg_step(xchg_t *x, int64_t now, const char **to, int *wait_ms)
{
    xchg_action_t act = XCHG_NONE;
    if (x->phase == XCHG_WAITING && all_online(x)) {
        x->phase = XCHG_RUNNING;
        x->next_send = now + interval(x);
        x->run_end = x->for_ms ? now + x->for_ms : INT64_MAX;
        act = XCHG_START;
    } else if (x->phase == XCHG_RUNNING) {
        if (now >= x->run_end || (x->count && x->sent >= x->count)) {
            x->phase = XCHG_FINISHING;
            act = XCHG_FINISH;
        } else if (now >= x->next_send) {
            member_t *m = &x->peers[splitmix64(&x->rng) % x->n_peers];
            if (to)
                *to = m->name;
            x->sent++;
            x->next_send = now + interval(x);
            act = XCHG_SEND;
        }
    } else if (x->phase == XCHG_FINISHING && all_done(x)) {
        x->phase = XCHG_FINISHED;
        act = XCHG_LEAVE;
    }
    if (wait_ms) {
        if (act != XCHG_NONE) {
            *wait_ms = 0;   /* ask again at once: more may be due */
        } else if (x->phase == XCHG_RUNNING) {
            int64_t due = x->next_send < x->run_end ? x->next_send : x->run_end;
            int64_t left = due - now;
            *wait_ms = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int) left;
        } else {
            *wait_ms = -1;
        }
    }
    return act;
}

void xchg_stop(xchg_t *x)
{
    if (x->phase == XCHG_WAITING)
        x->phase = XCHG_FINISHED;
    else if (x->phase == XCHG_RUNNING)
        x->run_end = INT64_MIN;
}

xchg_phase_t xchg_phase(const xchg_t *x) { return x->phase; }
size_t xchg_n_peers(const xchg_t *x) { return x->n_peers; }
const char *xchg_peer(const xchg_t *x, size_t i) { return i < x->n_peers ? x->peers[i].name : NULL; }
int xchg_peer_online(const xchg_t *x, size_t i) { return i < x->n_peers && x->peers[i].online; }
int xchg_peer_done(const xchg_t *x, size_t i) { return i < x->n_peers && x->peers[i].done; }
int xchg_is_peer(const xchg_t *x, const char *name) { return find_peer(x, name) != NULL; }
long xchg_sent(const xchg_t *x) { return x->sent; }
long xchg_received(const xchg_t *x) { return x->received; }
long xchg_min_ms(const xchg_t *x) { return x->min_ms; }
long xchg_max_ms(const xchg_t *x) { return x->max_ms; }
