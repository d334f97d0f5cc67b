/*  sessions: see sessions.h.
 *
 *  Routing ids are looked up in a zhashx keyed by the length-prefixed id
 *  stored inside the session (no copy: the key lives as long as the
 *  session). Users live in a sorted array searched by binary search; the
 *  array only grows, and the user structs are allocated one by one so their
 *  addresses stay stable for session->user pointers.
 */
#include "sessions.h"

#include <assert.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>

struct cw_sessions {
    zhashx_t *by_id;        /* length-prefixed routing id -> cw_session_t* */
    cw_session_t **live;    /* dense array of live sessions */
    size_t n_live, cap_live;
    cwb_user_t **users;      /* sorted by name */
    size_t n_users, cap_users;
    uint64_t mark;          /* generation counter for cwb_user_t.mark */
};

/* FNV-1a over the length-prefixed id. */
static size_t id_hash(const void *key)
{
    const uint8_t *k = key;
    size_t h = 1469598103934665603ull;
    for (size_t i = 0; i <= k[0]; i++) {
        h ^= k[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int id_compare(const void *a, const void *b)
{
    const uint8_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return memcmp(x + 1, y + 1, x[0]);
}

zhashx_t *cw_id_table_new(void)
{
    zhashx_t *h = zhashx_new();
    if (!h)
        return NULL;
    zhashx_set_key_hasher(h, id_hash);
    zhashx_set_key_comparator(h, id_compare);
    zhashx_set_key_duplicator(h, NULL);
    zhashx_set_key_destructor(h, NULL);
    return h;
}

cw_sessions_t *cw_sessions_new(void)
{
    cw_sessions_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->by_id = cw_id_table_new();
    if (!t->by_id) {
        free(t);
        return NULL;
    }
    return t;
}

void cw_sessions_destroy(cw_sessions_t **p)
{
    if (!p || !*p)
        return;
    cw_sessions_t *t = *p;
    for (size_t i = 0; i < t->n_live; i++)
        free(t->live[i]);
    for (size_t i = 0; i < t->n_users; i++) {
        free(t->users[i]->clock);
        free(t->users[i]);
    }
    zhashx_destroy(&t->by_id);
    free(t->live);
    free(t->users);
    free(t);
    *p = NULL;
}

static void make_key(uint8_t *key, const void *id, size_t len)
{
    key[0] = (uint8_t) len;
    memcpy(key + 1, id, len);
}

cw_session_t *cw_sessions_find(cw_sessions_t *t, const void *id, size_t len)
{
    if (len > CW_ROUTING_ID_MAX)
        return NULL;
    uint8_t key[1 + CW_ROUTING_ID_MAX];
    make_key(key, id, len);
    return zhashx_lookup(t->by_id, key);
}

/* Index of name in users, or -(insertion point) - 1. */
static long user_index(const cw_sessions_t *t, const char *name)
{
    size_t lo = 0, hi = t->n_users;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(t->users[mid]->name, name);
        if (c == 0)
            return (long) mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -(long) lo - 1;
}

cwb_user_t *cw_sessions_user(cw_sessions_t *t, const char *name)
{
    long i = user_index(t, name);
    return i >= 0 ? t->users[i] : NULL;
}

cwb_user_t *cw_sessions_user_add(cw_sessions_t *t, const char *name, bool *created)
{
    if (created)
        *created = false;
    long i = user_index(t, name);
    if (i >= 0)
        return t->users[i];
    if (strlen(name) > CW_NAME_MAX_HARD)
        return NULL;
    if (t->n_users == t->cap_users) {
        size_t cap = t->cap_users ? t->cap_users * 2 : 64;
        cwb_user_t **users = realloc(t->users, cap * sizeof *users);
        if (!users)
            return NULL;
        t->users = users;
        t->cap_users = cap;
    }
    cwb_user_t *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    strcpy(u->name, name);
    size_t at = (size_t) (-i - 1);
    memmove(&t->users[at + 1], &t->users[at], (t->n_users - at) * sizeof t->users[0]);
    t->users[at] = u;
    t->n_users++;
    if (created)
        *created = true;
    return u;
}

cw_session_t *cw_sessions_open(cw_sessions_t *t, const void *id, size_t len, cwb_user_t *user,
                               int64_t now_ms)
{
    assert(user->session == NULL);
    if (len == 0 || len > CW_ROUTING_ID_MAX)
        return NULL;
    if (t->n_live == t->cap_live) {
        size_t cap = t->cap_live ? t->cap_live * 2 : 64;
        cw_session_t **live = realloc(t->live, cap * sizeof *live);
        if (!live)
            return NULL;
        t->live = live;
        t->cap_live = cap;
    }
    cw_session_t *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    make_key(s->id, id, len);
    if (zhashx_insert(t->by_id, s->id, s) != 0) {
        free(s); /* id already in use: a caller bug, refused rather than corrupting */
        return NULL;
    }
    s->user = user;
    s->last_rx_ms = s->last_tx_ms = now_ms;
    s->slot = t->n_live;
    t->live[t->n_live++] = s;
    user->session = s;
    return s;
}

int cw_sessions_rebind(cw_sessions_t *t, cw_session_t *s, const void *id, size_t len)
{
    if (len == 0 || len > CW_ROUTING_ID_MAX)
        return -1;
    uint8_t old[sizeof s->id];
    memcpy(old, s->id, sizeof old);
    zhashx_delete(t->by_id, s->id);
    make_key(s->id, id, len);
    if (zhashx_insert(t->by_id, s->id, s) != 0) {
        memcpy(s->id, old, sizeof old);
        zhashx_insert(t->by_id, s->id, s);
        return -1;
    }
    s->dead = false;
    return 0;
}

void cw_sessions_close(cw_sessions_t *t, cw_session_t **sp, uint64_t now_us)
{
    cw_session_t *s = *sp;
    if (!s)
        return;
    zhashx_delete(t->by_id, s->id);
    size_t slot = s->slot;
    t->live[slot] = t->live[--t->n_live];
    t->live[slot]->slot = slot;
    s->user->session = NULL;
    s->user->last_seen_us = now_us;
    free(s);
    *sp = NULL;
}

size_t cw_sessions_count(const cw_sessions_t *t) { return t->n_live; }
cw_session_t *cw_sessions_at(const cw_sessions_t *t, size_t i) { return t->live[i]; }
size_t cw_sessions_user_count(const cw_sessions_t *t) { return t->n_users; }
cwb_user_t *cw_sessions_user_at(const cw_sessions_t *t, size_t i) { return t->users[i]; }

size_t cw_sessions_resolve(cw_sessions_t *t, bool broadcast, char *const *to, size_t n_to,
                           const cwb_user_t *sender, const char **names, cwb_user_t **users)
{
    size_t n = 0;
    t->mark++;
    if (broadcast) {
        for (size_t i = 0; i < t->n_users; i++) {
            cwb_user_t *u = t->users[i];
            if (u == sender)
                continue;
            names[n] = u->name;
            users[n++] = u;
        }
        return n;
    }
    for (size_t i = 0; i < n_to; i++) {
        const char *name = to[i];
        cwb_user_t *u = cw_sessions_user(t, name);
        if (u) {
            if (u->mark == t->mark)
                continue;
            u->mark = t->mark;
        } else {
            bool seen = false;
            for (size_t k = 0; k < n && !seen; k++)
                seen = !users[k] && strcmp(names[k], name) == 0;
            if (seen)
                continue;
        }
        names[n] = u ? u->name : name;
        users[n++] = u;
    }
    return n;
}

void cw_sessions_check(const cw_sessions_t *t)
{
#ifndef NDEBUG
    for (size_t i = 0; i < t->n_live; i++) {
        const cw_session_t *s = t->live[i];
        assert(s->slot == i);
        assert(s->user && s->user->session == s);
        assert(zhashx_lookup(t->by_id, s->id) == s);
    }
    size_t online = 0;
    for (size_t i = 0; i < t->n_users; i++) {
        if (i > 0)
            assert(strcmp(t->users[i - 1]->name, t->users[i]->name) < 0);
        if (t->users[i]->session) {
            assert(t->users[i]->session->user == t->users[i]);
            online++;
        }
    }
    assert(online == t->n_live);
    assert(zhashx_size(t->by_id) == t->n_live);
#else
    (void) t;
#endif
}
