/*  trace: see trace.h.
 *
 *  Storage. Each event lives in its own heap slot (so cwc_event_t pointers
 *  stay valid while the trace grows); the slot owns the message key, text,
 *  peers and one block holding both clocks in the compact form (cw_vc_t:
 *  counters, then node ids). Node names (processes, peers, clock nodes) are
 *  interned once per trace in nodes / node_names, so a 200-entry clock costs
 *  2.4 KB rather than one allocation per entry. The public cwc_event_t
 *  inside the slot points into that storage; its process name is the
 *  interned one.
 *
 *  Invariants: slots[i]->ev.proc < n_procs; procs[p].events holds the trace
 *  indexes of p's events in insertion order and procs[p].events[k] has
 *  seq k + 1; names maps every process name to its index; nodes maps every
 *  interned name to its id < n_nodes and node_names[id] is that name;
 *  procs[p].node is the id of procs[p].name.
 */
#include "trace.h"
#include "json.h"
#include "strmap.h"
#include "cw_status.h"
#include "cw_util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MSG_KEY 1024   /* bytes of a message key */

typedef struct {
    cwc_event_t ev;            /* public view into the fields below */
    char *msg;                /* owned ("" for local) */
    char *text;               /* owned, NULL = none */
    const char **peers;       /* owned array; the names are interned */
    uint64_t *clocks;         /* owned block: counts of vc and mvc, then their node ids */
} slot_t;

typedef struct {
    const char *name;         /* interned (node_names) */
    uint32_t node;            /* its node id */
    size_t *events;           /* trace indexes, insertion order */
    size_t n, cap;
} proc_t;

struct cw_trace {
    slot_t **slots;           /* events in insertion order */
    size_t n, cap;
    proc_t *procs;            /* processes in order of first appearance */
    size_t n_procs, cap_procs;
    cw_strmap_t *names;       /* process name -> index in procs */
    cw_strmap_t *nodes;       /* node name -> node id */
    char **node_names;        /* owned, by id */
    size_t n_nodes, cap_nodes;
    uint64_t *mark;           /* owned scratch of to_pairs: cap_mark zeros */
    size_t cap_mark;
};


cw_trace_t *cw_trace_new(void)
{
    cw_trace_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->names = cw_strmap_new();
    t->nodes = cw_strmap_new();
    if (!t->names || !t->nodes) {
        cw_strmap_destroy(&t->names);
        cw_strmap_destroy(&t->nodes);
        free(t);
        return NULL;
    }
    return t;
}

static void slot_free(slot_t *s)
{
    if (!s)
        return;
    free(s->msg);
    free(s->text);
    free(s->peers);
    free(s->clocks);
    free(s);
}

void cw_trace_destroy(cw_trace_t **p)
{
    if (!p || !*p)
        return;
    cw_trace_t *t = *p;
    for (size_t i = 0; i < t->n; i++)
        slot_free(t->slots[i]);
    free(t->slots);
    for (size_t i = 0; i < t->n_procs; i++)
        free(t->procs[i].events);
    free(t->procs);
    for (size_t i = 0; i < t->n_nodes; i++)
        free(t->node_names[i]);
    free(t->node_names);
    free(t->mark);
    cw_strmap_destroy(&t->names);
    cw_strmap_destroy(&t->nodes);
    free(t);
    *p = NULL;
}

/* Id of name, interning it if new. CW_OK or CW_ERR_NOMEM. */
static int intern(cw_trace_t *t, const char *name, uint32_t *id)
{
    size_t v;
    if (cw_strmap_get(t->nodes, name, &v)) {
        *id = (uint32_t) v;
        return CW_OK;
    }
    if (t->n_nodes >= UINT32_MAX)
        return CW_ERR_NOMEM;
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? t->cap_nodes * 2 : 16;
        char **grown = realloc(t->node_names, cap * sizeof *grown);
        if (!grown)
            return CW_ERR_NOMEM;
        t->node_names = grown;
        t->cap_nodes = cap;
    }
    char *copy = strdup(name);
    if (!copy || cw_strmap_put(t->nodes, name, t->n_nodes) != CW_OK) {
        free(copy);
        return CW_ERR_NOMEM;
    }
    t->node_names[t->n_nodes] = copy;
    *id = (uint32_t) t->n_nodes++;
    return CW_OK;
}

size_t cw_trace_nodes(const cw_trace_t *t) { return t->n_nodes; }

const char *cw_trace_node_name(const cw_trace_t *t, uint32_t node)
{
    return node < t->n_nodes ? t->node_names[node] : NULL;
}

long cw_trace_node_find(const cw_trace_t *t, const char *name)
{
    size_t v;
    return cw_strmap_get(t->nodes, name, &v) ? (long) v : -1;
}

uint32_t cw_trace_process_node(const cw_trace_t *t, size_t p)
{
    return p < t->n_procs ? t->procs[p].node : UINT32_MAX;
}

/* ---- compact clocks -------------------------------------------------------- */

uint64_t cw_vc_get(const cw_vc_t *c, uint32_t node)
{
    size_t lo = 0, hi = c->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->node[mid] == node)
            return c->count[mid];
        if (c->node[mid] < node)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

cw_clock_order_t cw_vc_compare(const cw_vc_t *a, const cw_vc_t *b)
{
    int a_less = 0, b_less = 0;   /* some entry of a < b's, and vice versa */
    size_t i = 0, j = 0;
    while (i < a->n && j < b->n) {
        if (a->node[i] == b->node[j]) {
            if (a->count[i] < b->count[j]) a_less = 1;
            else if (a->count[i] > b->count[j]) b_less = 1;
            i++;
            j++;
        } else if (a->node[i] < b->node[j]) {
            b_less = 1;   /* a has an entry b lacks (counters are > 0) */
            i++;
        } else {
            a_less = 1;
            j++;
        }
        if (a_less && b_less)
            return CW_CLOCK_CONCURRENT;
    }
    if (i < a->n) b_less = 1;
    if (j < b->n) a_less = 1;
    if (a_less && b_less) return CW_CLOCK_CONCURRENT;
    if (a_less) return CW_CLOCK_BEFORE;
    if (b_less) return CW_CLOCK_AFTER;
    return CW_CLOCK_EQUAL;
}

uint64_t cw_vc_sum(const cw_vc_t *c)
{
    uint64_t s = 0;
    for (size_t k = 0; k < c->n; k++)
        s += c->count[k];
    return s;
}

static int cmp_entry_name(const void *x, const void *y)
{
    const cw_clock_entry_msg_t *a = *(cw_clock_entry_msg_t *const *) x;
    const cw_clock_entry_msg_t *b = *(cw_clock_entry_msg_t *const *) y;
    return strcmp(a->node, b->node);
}

int cw_trace_clock_wire(const cw_trace_t *t, const cw_vc_t *c, cw_clock_entry_msg_t **items,
                        cw_clock_entry_msg_t ***ptrs)
{
    *items = calloc(c->n ? c->n : 1, sizeof **items);
    *ptrs = calloc(c->n ? c->n : 1, sizeof **ptrs);
    if (!*items || !*ptrs) {
        free(*items);
        free(*ptrs);
        *items = NULL;
        *ptrs = NULL;
        return CW_ERR_NOMEM;
    }
    for (size_t k = 0; k < c->n; k++) {
        causeway__v1__clock_entry__init(&(*items)[k]);
        (*items)[k].node = t->node_names[c->node[k]];
        (*items)[k].counter = c->count[k];
        (*ptrs)[k] = &(*items)[k];
    }
    if (c->n > 1)
        qsort(*ptrs, c->n, sizeof **ptrs, cmp_entry_name);
    return CW_OK;
}

char *cw_trace_clock_format(const cw_trace_t *t, const cw_vc_t *c, char *buf, size_t size)
{
    cw_clock_entry_msg_t *items, **ptrs;
    if (cw_trace_clock_wire(t, c, &items, &ptrs) != CW_OK) {
        snprintf(buf, size, "{?}");
        return buf;
    }
    cw_clock_format(ptrs, c->n, buf, size);
    free(items);
    free(ptrs);
    return buf;
}

void cw_trace_clock_put_json(FILE *f, const cw_trace_t *t, const cw_vc_t *c)
{
    cw_clock_entry_msg_t *items, **ptrs;
    if (cw_trace_clock_wire(t, c, &items, &ptrs) != CW_OK) {
        fputs("{\"?\":0", f);   /* out of memory: leave a line that will not read back */
        return;
    }
    cw_clock_put_json(f, ptrs, c->n);
    free(items);
    free(ptrs);
}

/* ---- names and kinds ---------------------------------------------------- */

const char *cw_ev_kind_name(cw_ev_kind_t k)
{
    switch (k) {
    case CW_EV_SEND: return "send";
    case CW_EV_DELIVER: return "deliver";
    case CW_EV_LOCAL: return "local";
    }
    return "unknown";
}

cw_ev_kind_t cw_ev_kind_parse(const char *s)
{
    if (!s)
        return 0;
    if (strcmp(s, "send") == 0) return CW_EV_SEND;
    if (strcmp(s, "deliver") == 0) return CW_EV_DELIVER;
    if (strcmp(s, "local") == 0) return CW_EV_LOCAL;
    return 0;
}

char *cw_event_id(const cwc_event_t *ev, char *buf, size_t size)
{
    snprintf(buf, size, "%s:%zu", ev->process, ev->seq);
    return buf;
}

/* ---- checks ------------------------------------------------------------- */

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* Returns a name listed twice in names[0..n), or NULL. */
static const char *find_dup(const char *const *names, size_t n)
{
    if (n < 2)
        return NULL;
    int sorted = 1;
    for (size_t i = 1; i < n && sorted; i++)
        if (strcmp(names[i - 1], names[i]) >= 0)
            sorted = 0;
    if (sorted)
        return NULL;
    const char **copy = malloc(n * sizeof *copy);
    if (!copy) {   /* fall back to the quadratic scan */
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                if (strcmp(names[i], names[j]) == 0)
                    return names[i];
        return NULL;
    }
    memcpy(copy, names, n * sizeof *copy);
    qsort(copy, n, sizeof *copy, cmp_str_ptr);
    const char *dup = NULL;
    for (size_t i = 1; i < n && !dup; i++)
        if (strcmp(copy[i - 1], copy[i]) == 0)
            dup = copy[i];
    free(copy);
    return dup;
}

static int check_clock(const char *what, cw_clock_entry_msg_t *const *e, size_t n,
                       char *err, size_t errlen)
{
    if (n > CW_TRACE_MAX_CLOCK) {
        cw_set_err(err, errlen, "%s: more than %d entries", what, CW_TRACE_MAX_CLOCK);
        return CW_BAD_REQUEST;
    }
    if (n == 0)
        return CW_OK;
    const char **names = malloc(n * sizeof *names);
    if (!names) {
        cw_set_err(err, errlen, "out of memory");
        return CW_ERR_NOMEM;
    }
    int rc = CW_OK;
    for (size_t i = 0; i < n && rc == CW_OK; i++) {
        names[i] = e[i]->node ? e[i]->node : "";
        if (!cw_trace_name_ok(names[i])) {
            char ex[96];
            cw_set_err(err, errlen, "%s: bad node name \"%s\"", what, cw_json_excerpt(names[i], 80, ex, sizeof ex));
            rc = CW_BAD_REQUEST;
        }
    }
    if (rc == CW_OK) {
        const char *dup = find_dup(names, n);
        if (dup) {
            char ex[96];
            cw_set_err(err, errlen, "%s: node \"%s\" appears twice", what, cw_json_excerpt(dup, 80, ex, sizeof ex));
            rc = CW_BAD_REQUEST;
        }
    }
    free(names);
    return rc;
}

static int text_ok(const char *s)
{
    return cw_utf8_valid(s, strlen(s));
}

int cw_trace_check(const cwc_event_t *ev, char *err, size_t errlen)
{
    if (!ev->process || !*ev->process) {
        cw_set_err(err, errlen, "process: missing");
        return CW_BAD_REQUEST;
    }
    if (!cw_trace_name_ok(ev->process)) {
        char ex[96];
        cw_set_err(err, errlen, "process: bad name \"%s\" (1-%d bytes of UTF-8; no whitespace, "
                "control or format characters, none of \" \\ , | %%)",
                cw_json_excerpt(ev->process, 80, ex, sizeof ex), CW_NAME_MAX_HARD);
        return CW_BAD_REQUEST;
    }
    if (ev->kind != CW_EV_SEND && ev->kind != CW_EV_DELIVER && ev->kind != CW_EV_LOCAL) {
        cw_set_err(err, errlen, "kind: must be send, deliver or local");
        return CW_BAD_REQUEST;
    }
    int rc = check_clock("clock", ev->clock, ev->n_clock, err, errlen);
    if (rc != CW_OK)
        return rc;
    const char *kind = cw_ev_kind_name(ev->kind);
    const char *msg = ev->msg ? ev->msg : "";
    if (ev->kind == CW_EV_LOCAL) {
        if (*msg) {
            cw_set_err(err, errlen, "msg: a local event has no message");
            return CW_BAD_REQUEST;
        }
        if (ev->n_peers) {
            cw_set_err(err, errlen, "peers: a local event has no peers");
            return CW_BAD_REQUEST;
        }
    } else {
        if (!*msg) {
            cw_set_err(err, errlen, "msg: a %s event needs a message key", kind);
            return CW_BAD_REQUEST;
        }
        if (strlen(msg) > MAX_MSG_KEY || !text_ok(msg)) {
            cw_set_err(err, errlen, "msg: longer than %d bytes or not UTF-8", MAX_MSG_KEY);
            return CW_BAD_REQUEST;
        }
    }
    if (ev->n_peers > CW_TRACE_MAX_PEERS) {
        cw_set_err(err, errlen, "peers: more than %d", CW_TRACE_MAX_PEERS);
        return CW_BAD_REQUEST;
    }
    for (size_t i = 0; i < ev->n_peers; i++) {
        if (!cw_trace_name_ok(ev->peers[i])) {
            char ex[96];
            cw_set_err(err, errlen, "peers: bad name \"%s\"", cw_json_excerpt(ev->peers[i], 80, ex, sizeof ex));
            return CW_BAD_REQUEST;
        }
    }
    if (ev->kind == CW_EV_SEND) {
        if (ev->broadcast && ev->n_peers) {
            cw_set_err(err, errlen, "peers: a broadcast send lists no peers");
            return CW_BAD_REQUEST;
        }
        if (!ev->broadcast && !ev->n_peers) {
            cw_set_err(err, errlen, "peers: a send needs at least one recipient (or broadcast)");
            return CW_BAD_REQUEST;
        }
        const char *dup = find_dup(ev->peers, ev->n_peers);
        if (dup) {
            char ex[96];
            cw_set_err(err, errlen, "peers: \"%s\" listed twice", cw_json_excerpt(dup, 80, ex, sizeof ex));
            return CW_BAD_REQUEST;
        }
    } else if (ev->broadcast) {
        cw_set_err(err, errlen, "broadcast: only for send events");
        return CW_BAD_REQUEST;
    }
    if (ev->kind == CW_EV_DELIVER) {
        if (ev->n_peers != 1) {
            cw_set_err(err, errlen, "peers: a deliver event names exactly one peer, the sender");
            return CW_BAD_REQUEST;
        }
    } else {
        if (ev->has_holdback) {
            cw_set_err(err, errlen, "holdback_us: only for deliver events");
            return CW_BAD_REQUEST;
        }
        if (ev->has_msg_clock) {
            cw_set_err(err, errlen, "msg_clock: only for deliver events");
            return CW_BAD_REQUEST;
        }
        if (ev->late) {
            cw_set_err(err, errlen, "late: only for deliver events");
            return CW_BAD_REQUEST;
        }
    }
    if (ev->has_msg_clock) {
        rc = check_clock("msg_clock", ev->msg_clock, ev->n_msg_clock, err, errlen);
        if (rc != CW_OK)
            return rc;
    }
    if (ev->text && !text_ok(ev->text)) {
        cw_set_err(err, errlen, "text: not valid UTF-8");
        return CW_BAD_REQUEST;
    }
    return CW_OK;
}

/* ---- adding ------------------------------------------------------------- */

static int proc_index(cw_trace_t *t, const char *name, size_t *out)
{
    if (cw_strmap_get(t->names, name, out))
        return CW_OK;
    if (t->n_procs == t->cap_procs) {
        size_t cap = t->cap_procs ? t->cap_procs * 2 : 8;
        proc_t *procs = realloc(t->procs, cap * sizeof *procs);
        if (!procs)
            return CW_ERR_NOMEM;
        t->procs = procs;
        t->cap_procs = cap;
    }
    proc_t *p = &t->procs[t->n_procs];
    memset(p, 0, sizeof *p);
    if (intern(t, name, &p->node) != CW_OK)
        return CW_ERR_NOMEM;
    p->name = t->node_names[p->node];
    if (cw_strmap_put(t->names, name, t->n_procs) != CW_OK)
        return CW_ERR_NOMEM;
    *out = t->n_procs++;
    return CW_OK;
}

static char *dup_or_null(const char *s, int *nomem)
{
    if (!s)
        return NULL;
    char *c = strdup(s);
    if (!c)
        *nomem = 1;
    return c;
}

typedef struct {
    uint32_t node;
    uint64_t count;
} pair_t;

/* Makes t->mark cover every node id (new entries zero). */
static int mark_fit(cw_trace_t *t)
{
    if (t->cap_mark >= t->n_nodes)
        return CW_OK;
    size_t cap = t->cap_nodes;
    uint64_t *grown = realloc(t->mark, cap * sizeof *grown);
    if (!grown)
        return CW_ERR_NOMEM;
    memset(grown + t->cap_mark, 0, (cap - t->cap_mark) * sizeof *grown);
    t->mark = grown;
    t->cap_mark = cap;
    return CW_OK;
}

static int cmp_pair(const void *x, const void *y)
{
    const pair_t *a = x, *b = y;
    return a->node < b->node ? -1 : a->node > b->node;
}

/* Interns the nodes of a wire clock into pairs (zeros dropped, sorted by
 * id); returns the number kept, or SIZE_MAX if out of memory. A clock that
 * names a good share of all nodes (the usual case) is sorted by a pass over
 * t->mark, a per-node scratch array that is all zero between calls; a
 * sparse one by qsort. Nodes are distinct (cw_trace_check). */
static size_t to_pairs(cw_trace_t *t, cw_clock_entry_msg_t *const *e, size_t n, pair_t *out)
{
    size_t k = 0;
    int sorted = 1;
    for (size_t i = 0; i < n; i++) {
        if (!e[i]->counter)
            continue;
        if (intern(t, e[i]->node, &out[k].node) != CW_OK)
            return SIZE_MAX;
        out[k].count = e[i]->counter;
        if (k && out[k - 1].node > out[k].node)
            sorted = 0;
        k++;
    }
    if (sorted || k < 2)
        return k;
    if (k * 8 < t->n_nodes || mark_fit(t) != CW_OK) {
        qsort(out, k, sizeof *out, cmp_pair);
        return k;
    }
    for (size_t i = 0; i < k; i++)
        t->mark[out[i].node] = out[i].count;
    size_t m = 0;
    for (size_t id = 0; m < k; id++)
        if (t->mark[id]) {
            out[m++] = (pair_t){.node = (uint32_t) id, .count = t->mark[id]};
            t->mark[id] = 0;
        }
    return k;
}

/* An event of some trace (ev->trace set) as an input event: its clocks as
 * wire entries, then added as any other. */
static int add_stored(cw_trace_t *t, const cwc_event_t *ev, size_t line, char *err, size_t errlen)
{
    cwc_event_t in = *ev;
    cw_clock_entry_msg_t *items = NULL, **ptrs = NULL, *mitems = NULL, **mptrs = NULL;
    int rc = cw_trace_clock_wire(ev->trace, &ev->vc, &items, &ptrs);
    if (rc == CW_OK && ev->has_msg_clock)
        rc = cw_trace_clock_wire(ev->trace, &ev->mvc, &mitems, &mptrs);
    if (rc == CW_OK) {
        in.trace = NULL;
        in.clock = ptrs;
        in.n_clock = ev->vc.n;
        in.msg_clock = mptrs;
        in.n_msg_clock = ev->has_msg_clock ? ev->mvc.n : 0;
        rc = cw_trace_add(t, &in, line, err, errlen);
    } else {
        cw_set_err(err, errlen, "out of memory");
    }
    free(items);
    free(ptrs);
    free(mitems);
    free(mptrs);
    return rc;
}

int cw_trace_add(cw_trace_t *t, const cwc_event_t *ev, size_t line, char *err, size_t errlen)
{
    if (ev->trace)
        return add_stored(t, ev, line, err, errlen);
    int rc = cw_trace_check(ev, err, errlen);
    if (rc != CW_OK)
        return rc;
    int nomem = 0;
    size_t nm = ev->has_msg_clock ? ev->n_msg_clock : 0;
    pair_t *pairs = malloc((ev->n_clock + nm ? ev->n_clock + nm : 1) * sizeof *pairs);
    slot_t *s = calloc(1, sizeof *s);
    if (!s || !pairs)
        goto nomem;
    s->msg = dup_or_null(ev->kind == CW_EV_LOCAL ? "" : ev->msg, &nomem);
    s->text = dup_or_null(ev->text && *ev->text ? ev->text : NULL, &nomem);
    if (nomem)
        goto nomem;
    if (ev->n_peers) {
        s->peers = calloc(ev->n_peers, sizeof *s->peers);
        if (!s->peers)
            goto nomem;
        for (size_t i = 0; i < ev->n_peers; i++) {
            uint32_t id;
            if (intern(t, ev->peers[i], &id) != CW_OK)
                goto nomem;
            s->peers[i] = t->node_names[id];
        }
    }
    size_t n1 = to_pairs(t, ev->clock, ev->n_clock, pairs);
    size_t n2 = nm ? to_pairs(t, ev->msg_clock, nm, pairs + (n1 == SIZE_MAX ? 0 : n1)) : 0;
    if (n1 == SIZE_MAX || n2 == SIZE_MAX)
        goto nomem;
    size_t total = n1 + n2;
    s->clocks = malloc((total ? total : 1) * (sizeof(uint64_t) + sizeof(uint32_t)));
    if (!s->clocks)
        goto nomem;
    uint32_t *ids = (uint32_t *) (s->clocks + total);
    for (size_t k = 0; k < total; k++) {
        s->clocks[k] = pairs[k].count;
        ids[k] = pairs[k].node;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        slot_t **slots = realloc(t->slots, cap * sizeof *slots);
        if (!slots)
            goto nomem;
        t->slots = slots;
        t->cap = cap;
    }
    size_t p;
    if (proc_index(t, ev->process, &p) != CW_OK)
        goto nomem;
    proc_t *pr = &t->procs[p];
    if (pr->n == pr->cap) {
        size_t cap = pr->cap ? pr->cap * 2 : 16;
        size_t *events = realloc(pr->events, cap * sizeof *events);
        if (!events)
            goto nomem;
        pr->events = events;
        pr->cap = cap;
    }
    /* Commit point: nothing below can fail. */
    free(pairs);
    cwc_event_t *e = &s->ev;
    e->process = pr->name;
    e->kind = ev->kind;
    e->vc = (cw_vc_t){.node = ids, .count = s->clocks, .n = n1};
    e->msg = s->msg;
    e->peers = s->peers;
    e->n_peers = ev->n_peers;
    e->ts_us = ev->ts_us;
    e->text = s->text;
    e->has_holdback = ev->has_holdback;
    e->holdback_us = ev->has_holdback ? ev->holdback_us : 0;
    e->has_msg_clock = ev->has_msg_clock;
    if (ev->has_msg_clock)
        e->mvc = (cw_vc_t){.node = ids + n1, .count = s->clocks + n1, .n = n2};
    e->broadcast = ev->kind == CW_EV_SEND && ev->broadcast;
    e->late = ev->kind == CW_EV_DELIVER && ev->late;
    e->trace = t;
    e->proc = p;
    e->seq = pr->n + 1;
    e->line = line;
    pr->events[pr->n++] = t->n;
    t->slots[t->n++] = s;
    return CW_OK;
nomem:
    free(pairs);
    slot_free(s);
    cw_set_err(err, errlen, "out of memory");
    return CW_ERR_NOMEM;
}

/* ---- JSON lines ----------------------------------------------------------- */

int cw_clock_from_json(const cw_json_t *obj, const char *field, cw_clock_entry_msg_t **items,
                      cw_clock_entry_msg_t ***ptrs, size_t *n, char *err, size_t errlen)
{
    *items = NULL;
    *ptrs = NULL;
    *n = 0;
    if (cw_json_type(obj) != CW_JSON_OBJECT) {
        cw_set_err(err, errlen, "%s: expected an object {\"name\": counter}, found %s", field,
                cw_json_type_name(cw_json_type(obj)));
        return CW_BAD_REQUEST;
    }
    size_t len = cw_json_len(obj);
    if (len > CW_TRACE_MAX_CLOCK) {
        cw_set_err(err, errlen, "%s: more than %d entries", field, CW_TRACE_MAX_CLOCK);
        return CW_BAD_REQUEST;
    }
    if (len == 0)
        return CW_OK;
    *items = calloc(len, sizeof **items);
    *ptrs = calloc(len, sizeof **ptrs);
    if (!*items || !*ptrs) {
        free(*items);
        free(*ptrs);
        *items = NULL;
        *ptrs = NULL;
        cw_set_err(err, errlen, "out of memory");
        return CW_ERR_NOMEM;
    }
    for (size_t i = 0; i < len; i++) {
        uint64_t c;
        if (cw_json_uint(cw_json_at(obj, i), &c) != CW_OK) {
            char ex[96];
            cw_set_err(err, errlen, "%s: entry \"%s\" must be a non-negative integer", field,
                    cw_json_excerpt(cw_json_key_at(obj, i), 80, ex, sizeof ex));
            free(*items);
            free(*ptrs);
            *items = NULL;
            *ptrs = NULL;
            return CW_BAD_REQUEST;
        }
        causeway__v1__clock_entry__init(&(*items)[i]);
        (*items)[i].node = (char *) cw_json_key_at(obj, i);
        (*items)[i].counter = c;
        (*ptrs)[i] = &(*items)[i];
    }
    *n = len;
    return CW_OK;
}

/* The fields of a trace line, read in one pass over the object's members
 * (a lookup per field was a string scan of all members each time). */
enum { F_PROCESS, F_KIND, F_CLOCK, F_MSG, F_PEERS, F_TS, F_TEXT, F_HOLDBACK, F_MSG_CLOCK,
       F_BROADCAST, F_LATE, F_COUNT };

typedef struct {
    const cw_json_t *v[F_COUNT];   /* NULL = absent; JSON null counts as absent */
} fields_t;

static int field_index(const char *k)
{
    switch (k[0]) {
    case 'p': return !strcmp(k, "process") ? F_PROCESS : !strcmp(k, "peers") ? F_PEERS : -1;
    case 'k': return !strcmp(k, "kind") ? F_KIND : -1;
    case 'c': return !strcmp(k, "clock") ? F_CLOCK : -1;
    case 'm': return !strcmp(k, "msg") ? F_MSG : !strcmp(k, "msg_clock") ? F_MSG_CLOCK : -1;
    case 't': return !strcmp(k, "ts_us") ? F_TS : !strcmp(k, "text") ? F_TEXT : -1;
    case 'h': return !strcmp(k, "holdback_us") ? F_HOLDBACK : -1;
    case 'l': return !strcmp(k, "late") ? F_LATE : -1;
    case 'b': return !strcmp(k, "broadcast") ? F_BROADCAST : -1;
    }
    return -1;
}

static void fields_read(const cw_json_t *obj, fields_t *f)
{
    memset(f, 0, sizeof *f);
    for (size_t i = 0; i < cw_json_len(obj); i++) {
        int k = field_index(cw_json_key_at(obj, i));
        const cw_json_t *v = cw_json_at(obj, i);
        if (k >= 0 && cw_json_type(v) != CW_JSON_NULL)
            f->v[k] = v;
    }
}

static int want_string(const cw_json_t *v, const char *key, int required, const char **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    if (!v) {
        if (required) {
            cw_set_err(err, errlen, "%s: missing", key);
            return CW_BAD_REQUEST;
        }
        return CW_OK;
    }
    if (cw_json_type(v) != CW_JSON_STRING) {
        cw_set_err(err, errlen, "%s: expected a string, found %s", key, cw_json_type_name(cw_json_type(v)));
        return CW_BAD_REQUEST;
    }
    *out = cw_json_str(v, NULL);
    return CW_OK;
}

static int want_uint(const cw_json_t *v, const char *key, uint64_t *out, int *present,
                     char *err, size_t errlen)
{
    *out = 0;
    if (present)
        *present = v != NULL;
    if (!v)
        return CW_OK;
    if (cw_json_uint(v, out) != CW_OK) {
        cw_set_err(err, errlen, "%s: expected a non-negative integer", key);
        return CW_BAD_REQUEST;
    }
    return CW_OK;
}

static int is_blank_or_comment(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = line[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        return c == '#';
    }
    return 1;
}

int cw_trace_add_json(cw_trace_t *t, const char *line, size_t len, size_t lineno,
                      char *err, size_t errlen)
{
    if (is_blank_or_comment(line, len))
        return CW_OK;
    char jerr[200];
    size_t col = 0;
    cw_json_t *root = NULL;
    int rc = cw_json_parse(line, len, &root, &col, jerr, sizeof jerr);
    if (rc != CW_OK) {
        cw_set_err(err, errlen, "column %zu: %s", col, jerr);
        return rc;
    }
    cw_clock_entry_msg_t *clock_items = NULL, **clock_ptrs = NULL;
    cw_clock_entry_msg_t *mc_items = NULL, **mc_ptrs = NULL;
    const char **peers = NULL;
    cwc_event_t ev;
    memset(&ev, 0, sizeof ev);
    if (cw_json_type(root) != CW_JSON_OBJECT) {
        cw_set_err(err, errlen, "expected a JSON object, found %s", cw_json_type_name(cw_json_type(root)));
        rc = CW_BAD_REQUEST;
        goto out;
    }
    const char *kind;
    fields_t fl;
    fields_read(root, &fl);
    if ((rc = want_string(fl.v[F_PROCESS], "process", 1, &ev.process, err, errlen)) != CW_OK)
        goto out;
    if ((rc = want_string(fl.v[F_KIND], "kind", 1, &kind, err, errlen)) != CW_OK)
        goto out;
    ev.kind = cw_ev_kind_parse(kind);
    if (!ev.kind) {
        char ex[64];
        cw_set_err(err, errlen, "kind: \"%s\" is not send, deliver or local", cw_json_excerpt(kind, 40, ex, sizeof ex));
        rc = CW_BAD_REQUEST;
        goto out;
    }
    const cw_json_t *clock = fl.v[F_CLOCK];
    if (!clock) {
        cw_set_err(err, errlen, "clock: missing");
        rc = CW_BAD_REQUEST;
        goto out;
    }
    if ((rc = cw_clock_from_json(clock, "clock", &clock_items, &clock_ptrs, &ev.n_clock, err, errlen)) != CW_OK)
        goto out;
    ev.clock = clock_ptrs;
    if ((rc = want_string(fl.v[F_MSG], "msg", 0, &ev.msg, err, errlen)) != CW_OK)
        goto out;
    const cw_json_t *jp = fl.v[F_PEERS];
    if (jp) {
        if (cw_json_type(jp) != CW_JSON_ARRAY) {
            cw_set_err(err, errlen, "peers: expected an array of names, found %s",
                    cw_json_type_name(cw_json_type(jp)));
            rc = CW_BAD_REQUEST;
            goto out;
        }
        ev.n_peers = cw_json_len(jp);
        if (ev.n_peers > CW_TRACE_MAX_PEERS) {
            cw_set_err(err, errlen, "peers: more than %d", CW_TRACE_MAX_PEERS);
            rc = CW_BAD_REQUEST;
            goto out;
        }
        if (ev.n_peers) {
            peers = calloc(ev.n_peers, sizeof *peers);
            if (!peers) {
                cw_set_err(err, errlen, "out of memory");
                rc = CW_ERR_NOMEM;
                goto out;
            }
        }
        for (size_t i = 0; i < ev.n_peers; i++) {
            peers[i] = cw_json_str(cw_json_at(jp, i), NULL);
            if (!peers[i]) {
                cw_set_err(err, errlen, "peers: element %zu is not a string", i);
                rc = CW_BAD_REQUEST;
                goto out;
            }
        }
        ev.peers = peers;
    }
    if ((rc = want_uint(fl.v[F_TS], "ts_us", &ev.ts_us, NULL, err, errlen)) != CW_OK)
        goto out;
    if ((rc = want_string(fl.v[F_TEXT], "text", 0, &ev.text, err, errlen)) != CW_OK)
        goto out;
    if ((rc = want_uint(fl.v[F_HOLDBACK], "holdback_us", &ev.holdback_us, &ev.has_holdback, err, errlen)) != CW_OK)
        goto out;
    const cw_json_t *mc = fl.v[F_MSG_CLOCK];
    if (mc) {
        if ((rc = cw_clock_from_json(mc, "msg_clock", &mc_items, &mc_ptrs, &ev.n_msg_clock, err, errlen)) != CW_OK)
            goto out;
        ev.msg_clock = mc_ptrs;
        ev.has_msg_clock = 1;
    }
    const cw_json_t *bc = fl.v[F_BROADCAST];
    if (bc) {
        if (cw_json_bool(bc) < 0) {
            cw_set_err(err, errlen, "broadcast: expected true or false");
            rc = CW_BAD_REQUEST;
            goto out;
        }
        ev.broadcast = cw_json_bool(bc);
    }
    const cw_json_t *lt = fl.v[F_LATE];
    if (lt) {
        if (cw_json_bool(lt) < 0) {
            cw_set_err(err, errlen, "late: expected true or false");
            rc = CW_BAD_REQUEST;
            goto out;
        }
        ev.late = cw_json_bool(lt);
    }
    rc = cw_trace_add(t, &ev, lineno, err, errlen);
out:
    free(clock_items);
    free(clock_ptrs);
    free(mc_items);
    free(mc_ptrs);
    free(peers);
    cw_json_destroy(&root);
    return rc;
}

int cw_trace_load_file(cw_trace_t *t, const char *path, int flags,
                       void (*warn)(void *ctx, const char *msg), void *ctx,
                       char *err, size_t errlen)
{
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    if (!f) {
        cw_set_err(err, errlen, "%s: %s", path, strerror(errno));
        return CW_ERR_IO;
    }
    char *line = NULL;
    size_t cap = 0;
    size_t lineno = 0;
    int rc = CW_OK;
    ssize_t got;
    errno = 0;
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t) got;
        if (len && line[len - 1] == '\n')
            len--;
        if (len && line[len - 1] == '\r')
            len--;
        char why[512];
        int lrc;
        if (len > CW_TRACE_MAX_LINE) {
            snprintf(why, sizeof why, "line longer than %d bytes", CW_TRACE_MAX_LINE);
            lrc = CW_BAD_REQUEST;
        } else if (memchr(line, '\0', len)) {
            snprintf(why, sizeof why, "NUL byte in line");
            lrc = CW_BAD_REQUEST;
        } else {
            lrc = cw_trace_add_json(t, line, len, lineno, why, sizeof why);
        }
        if (lrc == CW_ERR_NOMEM) {
            cw_set_err(err, errlen, "%s:%zu: out of memory", path, lineno);
            rc = lrc;
            break;
        }
        if (lrc != CW_OK) {
            char msg[700];
            snprintf(msg, sizeof msg, "%s:%zu: %s", is_stdin ? "<stdin>" : path, lineno, why);
            if (flags & CW_TRACE_SKIP_BAD) {
                if (warn)
                    warn(ctx, msg);
                continue;
            }
            cw_set_err(err, errlen, "%s", msg);
            rc = lrc;
            break;
        }
    }
    if (rc == CW_OK && ferror(f)) {
        cw_set_err(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = CW_ERR_IO;
    }
    free(line);
    if (!is_stdin)
        fclose(f);
    return rc;
}

/* ---- accessors ------------------------------------------------------------ */

size_t cw_trace_count(const cw_trace_t *t) { return t->n; }

const cwc_event_t *cw_trace_event(const cw_trace_t *t, size_t i)
{
    return i < t->n ? &t->slots[i]->ev : NULL;
}

size_t cw_trace_processes(const cw_trace_t *t) { return t->n_procs; }

const char *cw_trace_process_name(const cw_trace_t *t, size_t p)
{
    return p < t->n_procs ? t->procs[p].name : NULL;
}

long cw_trace_process_find(const cw_trace_t *t, const char *name)
{
    size_t p;
    return cw_strmap_get(t->names, name, &p) ? (long) p : -1;
}

size_t cw_trace_process_count(const cw_trace_t *t, size_t p)
{
    return p < t->n_procs ? t->procs[p].n : 0;
}

size_t cw_trace_process_event(const cw_trace_t *t, size_t p, size_t seq)
{
    if (p >= t->n_procs || seq == 0 || seq > t->procs[p].n)
        return SIZE_MAX;
    return t->procs[p].events[seq - 1];
}

int cw_trace_find(const cw_trace_t *t, const char *id, size_t *index, char *err, size_t errlen)
{
    const char *colon = id ? strrchr(id, ':') : NULL;
    if (!colon || colon == id || !colon[1]) {
        cw_set_err(err, errlen, "bad event id \"%s\" (expected PROCESS:N, e.g. alice:3)", id ? id : "");
        return CW_BAD_REQUEST;
    }
    char *end;
    errno = 0;
    unsigned long long seq = strtoull(colon + 1, &end, 10);
    if (*end || errno || colon[1] < '0' || colon[1] > '9') {
        cw_set_err(err, errlen, "bad event id \"%s\" (expected PROCESS:N, e.g. alice:3)", id);
        return CW_BAD_REQUEST;
    }
    char name[CW_NAME_MAX_HARD + 1];
    size_t nlen = (size_t) (colon - id);
    if (nlen > CW_NAME_MAX_HARD) {
        cw_set_err(err, errlen, "no event %s: no such process", id);
        return CW_UNKNOWN_USER;
    }
    memcpy(name, id, nlen);
    name[nlen] = '\0';
    long p = cw_trace_process_find(t, name);
    if (p < 0) {
        cw_set_err(err, errlen, "no event %s: the trace has no process \"%s\"", id, name);
        return CW_UNKNOWN_USER;
    }
    size_t i = cw_trace_process_event(t, (size_t) p, (size_t) seq);
    if (i == SIZE_MAX) {
        cw_set_err(err, errlen, "no event %s: %s has %zu events (ids %s:1 to %s:%zu)", id, name,
                t->procs[p].n, name, name, t->procs[p].n);
        return CW_UNKNOWN_USER;
    }
    *index = i;
    return CW_OK;
}

/* ---- writing -------------------------------------------------------------- */

void cw_clock_put_json(FILE *f, cw_clock_entry_msg_t *const *e, size_t n)
{
    fputc('{', f);
    for (size_t i = 0; i < n; i++) {
        if (i)
            fputc(',', f);
        cw_json_put_string(f, e[i]->node);
        fprintf(f, ":%llu", (unsigned long long) e[i]->counter);
    }
    fputc('}', f);
}

/* An input clock in canonical form: sorted by name, zeros dropped (what the
 * trace would store). */
static void put_wire_sorted(FILE *f, cw_clock_entry_msg_t *const *e, size_t n)
{
    cw_clock_t *c = cw_clock_new();
    cw_clock_entry_msg_t **sorted;
    if (!c || cw_clock_merge(c, e, n) != CW_OK) {
        cw_clock_destroy(&c);
        fputs("{\"?\":0", f);   /* out of memory: leave a line that will not read back */
        return;
    }
    size_t k = cw_clock_entries(c, &sorted);
    cw_clock_put_json(f, sorted, k);
    cw_clock_destroy(&c);
}

static void put_event(FILE *f, const cwc_event_t *ev)
{
    fputs("{\"process\":", f);
    cw_json_put_string(f, ev->process);
    fprintf(f, ",\"kind\":\"%s\",\"clock\":", cw_ev_kind_name(ev->kind));
    if (ev->trace)
        cw_trace_clock_put_json(f, ev->trace, &ev->vc);
    else
        put_wire_sorted(f, ev->clock, ev->n_clock);
    if (ev->kind != CW_EV_LOCAL) {
        fputs(",\"msg\":", f);
        cw_json_put_string(f, ev->msg);
        fputs(",\"peers\":[", f);
        for (size_t i = 0; i < ev->n_peers; i++) {
            if (i)
                fputc(',', f);
            cw_json_put_string(f, ev->peers[i]);
        }
        fputc(']', f);
    }
    if (ev->broadcast)
        fputs(",\"broadcast\":true", f);
    fprintf(f, ",\"ts_us\":%llu", (unsigned long long) ev->ts_us);
    if (ev->text) {
        fputs(",\"text\":", f);
        cw_json_put_string(f, ev->text);
    }
    if (ev->has_holdback)
        fprintf(f, ",\"holdback_us\":%llu", (unsigned long long) ev->holdback_us);
    if (ev->has_msg_clock) {
        fputs(",\"msg_clock\":", f);
        if (ev->trace)
            cw_trace_clock_put_json(f, ev->trace, &ev->mvc);
        else
            put_wire_sorted(f, ev->msg_clock, ev->n_msg_clock);
    }
    if (ev->late)
        fputs(",\"late\":true", f);
    fputc('}', f);
}

int cw_event_put_json(FILE *f, const cwc_event_t *ev)
{
    put_event(f, ev);
    fputc('\n', f);
    return ferror(f) ? -1 : 0;
}

char *cw_event_to_json(const cwc_event_t *ev)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return NULL;
    put_event(f, ev);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(buf);
        return NULL;
    }
    return buf;
}
