/*  causal: see causal.h for the rules; this file says how.
 *
 *  Invariants: sends maps every message key used by a send event to the
 *  trace index of its first send; after a successful audit, findings[0..n)
 *  is sorted by (a, kind, b, detail); stats arrays belong to the last
 *  successful cw_causal_stats call.
 */
#include "causal.h"
#include "strmap.h"
#include "cw_status.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cw_causal {
    const cw_trace_t *t;          /* borrowed; must not grow while we exist */
    cw_strmap_t *sends;           /* message key -> trace index of its first send */
    cw_finding_t *findings;       /* audit result, sorted */
    size_t n_findings, cap_findings;
    int audited;                  /* findings are valid */
    cwc_stats_t stats;             /* last statistics */
    size_t *antichain;            /* owned array behind stats.antichain */
    size_t *hist;                 /* owned array behind stats.clock_hist */
};

static const cwc_event_t *EV(const cw_causal_t *c, size_t i)
{
    return cw_trace_event(c->t, i);
}

cw_causal_t *cw_causal_new(const cw_trace_t *t)
{
    cw_causal_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->t = t;
    c->sends = cw_strmap_new();
    if (!c->sends)
        goto fail;
    for (size_t i = 0; i < cw_trace_count(t); i++) {
        const cwc_event_t *e = cw_trace_event(t, i);
        size_t prev;
        if (e->kind == CW_EV_SEND && !cw_strmap_get(c->sends, e->msg, &prev)
            && cw_strmap_put(c->sends, e->msg, i) != CW_OK)
            goto fail;
    }
    return c;
fail:
    cw_causal_destroy(&c);
    return NULL;
}

static void clear_findings(cw_causal_t *c)
{
    for (size_t i = 0; i < c->n_findings; i++)
        free((char *) c->findings[i].detail);
    free(c->findings);
    c->findings = NULL;
    c->n_findings = c->cap_findings = 0;
    c->audited = 0;
}

void cw_causal_destroy(cw_causal_t **p)
{
    if (!p || !*p)
        return;
    cw_causal_t *c = *p;
    cw_strmap_destroy(&c->sends);
    clear_findings(c);
    free(c->antichain);
    free(c->hist);
    free(c);
    *p = NULL;
}

const cw_trace_t *cw_causal_trace(const cw_causal_t *c) { return c->t; }

/* ---- comparing ------------------------------------------------------------ */

cw_clock_order_t cw_causal_compare(const cw_causal_t *c, size_t a, size_t b)
{
    const cwc_event_t *ea = EV(c, a), *eb = EV(c, b);
    assert(ea && eb);
    return cw_vc_compare(&ea->vc, &eb->vc);
}

const char *cw_clock_order_name(cw_clock_order_t o)
{
    switch (o) {
    case CW_CLOCK_EQUAL: return "equal";
    case CW_CLOCK_BEFORE: return "before";
    case CW_CLOCK_AFTER: return "after";
    case CW_CLOCK_CONCURRENT: return "concurrent";
    }
    return "unknown";
}

int cw_causal_related(const cw_causal_t *c, size_t e, cw_relation_t rel, size_t **out, size_t *n)
{
    size_t total = cw_trace_count(c->t);
    *out = NULL;
    *n = 0;
    cw_clock_order_t want = rel == CW_REL_PAST ? CW_CLOCK_BEFORE
                          : rel == CW_REL_FUTURE ? CW_CLOCK_AFTER : CW_CLOCK_CONCURRENT;
    size_t *list = NULL, cap = 0, k = 0;
    for (size_t i = 0; i < total; i++) {
        if (i == e || cw_causal_compare(c, i, e) != want)
            continue;
        if (k == cap) {
            cap = cap ? cap * 2 : 16;
            size_t *grown = realloc(list, cap * sizeof *grown);
            if (!grown) {
                free(list);
                return CW_ERR_NOMEM;
            }
            list = grown;
        }
        list[k++] = i;
    }
    *out = list;
    *n = k;
    return CW_OK;
}

int cw_causal_send_of(const cw_causal_t *c, const char *msg, size_t *index)
{
    return cw_strmap_get(c->sends, msg, index) ? CW_OK : CW_UNKNOWN_USER;
}

/* ---- audit ---------------------------------------------------------------- */

const char *cw_finding_kind_name(cw_finding_kind_t k)
{
    switch (k) {
    case CW_FIND_CAUSAL_ORDER: return "causal-order";
    case CW_FIND_DUPLICATE: return "duplicate";
    case CW_FIND_GAP: return "gap";
    case CW_FIND_CLOCK_RULE: return "clock-rule";
    case CW_FIND_UNMATCHED: return "unmatched";
    }
    return "unknown";
}

static int add_finding(cw_causal_t *c, cw_finding_kind_t kind, size_t process, size_t a, size_t b,
                       const char *msg, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static int add_finding(cw_causal_t *c, cw_finding_kind_t kind, size_t process, size_t a, size_t b,
                       const char *msg, const char *fmt, ...)
{
    if (c->n_findings == c->cap_findings) {
        size_t cap = c->cap_findings ? c->cap_findings * 2 : 16;
        cw_finding_t *f = realloc(c->findings, cap * sizeof *f);
        if (!f)
            return CW_ERR_NOMEM;
        c->findings = f;
        c->cap_findings = cap;
    }
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *detail = strdup(buf);
    if (!detail)
        return CW_ERR_NOMEM;
    c->findings[c->n_findings++] = (cw_finding_t){
        .kind = kind, .process = process, .a = a, .b = b, .msg = msg ? msg : "", .detail = detail};
    return CW_OK;
}

/* Formats a stored clock for a detail sentence. */
static const char *fmt_clock(const cw_causal_t *c, const cw_vc_t *v, char *buf, size_t size)
{
    return cw_trace_clock_format(c->t, v, buf, size);
}

/* Whether a send is addressed to process r (named rname). */
static int addressed_to(const cwc_event_t *send, size_t r, const char *rname)
{
    if (send->broadcast)
        return send->proc != r;
    for (size_t i = 0; i < send->n_peers; i++)
        if (strcmp(send->peers[i], rname) == 0)
            return 1;
    return 0;
}

typedef struct {
    size_t d;   /* trace index of the first delivery of a message at the receiver */
    size_t s;   /* trace index of its send */
} first_t;

/* The audit's working memory, sized once for the whole trace. The
 * causal-order and gap checks use the vector-clock shortcut as a filter:
 * "e happened before f" needs e.clock[p] <= f.clock[p] with p e's process
 * (every entry of e must be <= f's, its own entry in particular), and with
 * clocks that follow the rules it is also enough. Candidates passing the
 * filter are confirmed with the full comparison (cw_vc_compare), so the
 * findings are those of comparing every pair, whatever the clocks. */
typedef struct {
    size_t key;     /* the send's own entry (its clock at its process's node) */
    size_t pos;     /* index in firsts */
} cand_t;

typedef struct {
    cand_t *items;  /* min-heap by key */
    size_t n, cap;
} heap_t;

typedef struct {
    heap_t *heaps;          /* per node id: later first deliveries whose sender is that node */
    uint32_t *used;         /* node ids with a non-empty heap */
    size_t n_used;
    size_t *zero;           /* later first deliveries whose send has no own entry (broken) */
    size_t n_zero;
    size_t *stack;          /* DFS over a heap */
    size_t cap_stack;
    first_t *firsts;        /* the receiver's first deliveries, in its order */
    size_t *send_of;        /* per event: the first send of its message key, or CW_NO_EVENT */
    size_t *seen_at;        /* per send: index in firsts of its first delivery at the receiver */
    uint32_t *snode;        /* per first: node id of its send's process */
    uint64_t *skey;         /* per first: the send's own entry */
} work_t;

static int heap_push(heap_t *h, cand_t v)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        cand_t *grown = realloc(h->items, cap * sizeof *grown);
        if (!grown)
            return CW_ERR_NOMEM;
        h->items = grown;
        h->cap = cap;
    }
    size_t k = h->n++;
    while (k > 0 && h->items[(k - 1) / 2].key > v.key) {
        h->items[k] = h->items[(k - 1) / 2];
        k = (k - 1) / 2;
    }
    h->items[k] = v;
    return CW_OK;
}

/* Counts the j in (i, nf) whose send happened before firsts[i]'s send, and
 * the smallest such j: the candidates are the heap entries with key <=
 * the bound (a DFS from the root of each min-heap) and the zero list. */
static int later_before(const cw_causal_t *c, work_t *w, size_t i, size_t *first_j, size_t *count)
{
    const cw_vc_t *si = &EV(c, w->firsts[i].s)->vc;
    *first_j = SIZE_MAX;
    *count = 0;
    for (size_t k = 0; k < si->n; k++) {
        heap_t *h = &w->heaps[si->node[k]];
        uint64_t bound = si->count[k];
        if (!h->n || h->items[0].key > bound)
            continue;
        size_t sp = 0;
        w->stack[sp++] = 0;
        while (sp) {
            size_t at = w->stack[--sp];
            const cand_t *cd = &h->items[at];
            if (cd->key > bound)
                continue;
            size_t j = cd->pos;
            if (cw_causal_compare(c, w->firsts[j].s, w->firsts[i].s) == CW_CLOCK_BEFORE) {
                (*count)++;
                if (j < *first_j)
                    *first_j = j;
            }
            for (size_t ch = 2 * at + 1; ch <= 2 * at + 2 && ch < h->n; ch++) {
                if (sp == w->cap_stack) {
                    size_t cap = w->cap_stack ? w->cap_stack * 2 : 64;
                    size_t *grown = realloc(w->stack, cap * sizeof *grown);
                    if (!grown)
                        return CW_ERR_NOMEM;
                    w->stack = grown;
                    w->cap_stack = cap;
                }
                w->stack[sp++] = ch;
            }
        }
    }
    for (size_t z = 0; z < w->n_zero; z++) {
        size_t j = w->zero[z];
        if (cw_causal_compare(c, w->firsts[j].s, w->firsts[i].s) == CW_CLOCK_BEFORE) {
            (*count)++;
            if (j < *first_j)
                *first_j = j;
        }
    }
    return CW_OK;
}

typedef struct {
    uint64_t key;   /* the undelivered send's own entry */
    size_t a;       /* index in addr */
} gapc_t;

static int cmp_gapc(const void *x, const void *y)
{
    const gapc_t *a = x, *b = y;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return a->a < b->a ? -1 : a->a > b->a;
}

/* Deliveries at receiver r: unmatched, duplicate, causal-order and gap. */
static int audit_receiver(cw_causal_t *c, work_t *w, size_t r, const size_t *addr, size_t n_addr)
{
    const cw_trace_t *t = c->t;
    const char *rname = cw_trace_process_name(t, r);
    size_t n = cw_trace_process_count(t, r);
    char ida[CW_EVENT_ID_MAX], idb[CW_EVENT_ID_MAX], ca[256], cb[256];
    int rc = CW_OK;
    size_t *seen = w->seen_at;   /* send -> index in firsts; SIZE_MAX between receivers */
    first_t *firsts = w->firsts;
    size_t nf = 0;
    gapc_t *gaps = NULL;
    size_t *gap_first = NULL;
    for (size_t seq = 1; seq <= n && rc == CW_OK; seq++) {
        size_t d = cw_trace_process_event(t, r, seq);
        const cwc_event_t *de = EV(c, d);
        if (de->kind != CW_EV_DELIVER)
            continue;
        size_t s;
        cw_event_id(de, ida, sizeof ida);
        if ((s = w->send_of[d]) == CW_NO_EVENT) {
            rc = add_finding(c, CW_FIND_UNMATCHED, r, d, CW_NO_EVENT, de->msg,
                             "%s delivered message %s, which no send event in the trace carries",
                             ida, de->msg);
            continue;
        }
        const cwc_event_t *se = EV(c, s);
        cw_event_id(se, idb, sizeof idb);
        if (strcmp(se->process, de->peers[0]) != 0) {
            rc = add_finding(c, CW_FIND_UNMATCHED, r, d, s, de->msg,
                             "%s delivered message %s as from %s, but %s sent it (%s)",
                             ida, de->msg, de->peers[0], se->process, idb);
            continue;
        }
        if (!addressed_to(se, r, rname)) {
            rc = add_finding(c, CW_FIND_UNMATCHED, r, d, s, de->msg,
                             "%s delivered message %s, which %s did not address to %s",
                             ida, de->msg, idb, rname);
            continue;
        }
        size_t k = seen[s];
        if (k != SIZE_MAX) {
            cw_event_id(EV(c, firsts[k].d), idb, sizeof idb);
            rc = add_finding(c, CW_FIND_DUPLICATE, r, d, firsts[k].d, de->msg,
                             "%s delivered message %s again; %s delivered it first",
                             ida, de->msg, idb);
            continue;
        }
        seen[s] = nf;
        w->snode[nf] = cw_trace_process_node(t, se->proc);
        w->skey[nf] = cw_vc_get(&se->vc, w->snode[nf]);
        firsts[nf++] = (first_t){.d = d, .s = s};
    }
    /* causal-order: x delivered before y although y's send happened before
     * x's. From the last first delivery back, the heaps hold the later ones. */
    for (size_t i = nf; i-- > 0 && rc == CW_OK;) {
        size_t first_j, count;
        if ((rc = later_before(c, w, i, &first_j, &count)) != CW_OK)
            break;
        if (w->skey[i] == 0) {
            w->zero[w->n_zero++] = i;
        } else {
            heap_t *h = &w->heaps[w->snode[i]];
            if (!h->n)
                w->used[w->n_used++] = w->snode[i];
            if ((rc = heap_push(h, (cand_t){.key = w->skey[i], .pos = i})) != CW_OK)
                break;
        }
        if (!count)
            continue;
        const cwc_event_t *dx = EV(c, firsts[i].d), *dy = EV(c, firsts[first_j].d);
        const cwc_event_t *sx = EV(c, firsts[i].s), *sy = EV(c, firsts[first_j].s);
        char idy[CW_EVENT_ID_MAX];
        cw_event_id(dx, ida, sizeof ida);
        cw_event_id(dy, idy, sizeof idy);
        fmt_clock(c, &sx->vc, ca, sizeof ca);
        fmt_clock(c, &sy->vc, cb, sizeof cb);
        char more[64] = "";
        if (count > 1)
            snprintf(more, sizeof more, " (and %zu more such messages)", count - 1);
        rc = add_finding(c, CW_FIND_CAUSAL_ORDER, r, firsts[i].d, firsts[first_j].d, dx->msg,
                         "%s delivered %s (sent at %s) before %s (sent at %s), which happened "
                         "before it and was delivered later as %s%s",
                         ida, dx->msg, ca, dy->msg, cb, idy, more);
    }
    for (size_t u = 0; u < w->n_used; u++)
        w->heaps[w->used[u]].n = 0;
    w->n_used = 0;
    w->n_zero = 0;
    if (rc != CW_OK)
        goto out;
    /* gap: y addressed to r, never delivered, but something that depends on
     * it was: the first j whose send y's send happened before. Candidates
     * are the j with s_j[q] >= y's own entry (q y's process): per q, the
     * undelivered y sorted by own entry meet a sweep over firsts. */
    gaps = malloc((n_addr ? n_addr : 1) * sizeof *gaps);
    gap_first = malloc((n_addr ? n_addr : 1) * sizeof *gap_first);
    if (!gaps || !gap_first) {
        rc = CW_ERR_NOMEM;
        goto out;
    }
    size_t ng = 0;
    for (size_t i = 0; i < n_addr; i++) {
        const cwc_event_t *sy = EV(c, addr[i]);
        gap_first[i] = SIZE_MAX;
        if (sy->proc == r || seen[addr[i]] != SIZE_MAX)
            continue;
        gaps[ng++] = (gapc_t){.key = cw_vc_get(&sy->vc, cw_trace_process_node(t, sy->proc)), .a = i};
    }
    /* Group by the sender's node, then by key. */
    for (size_t g = 0; g < ng;) {
        /* Collect the group of g's process (a simple partition pass). */
        size_t proc = EV(c, addr[gaps[g].a])->proc, end = g;
        for (size_t h = g; h < ng; h++)
            if (EV(c, addr[gaps[h].a])->proc == proc) {
                gapc_t tmp = gaps[end];
                gaps[end++] = gaps[h];
                gaps[h] = tmp;
            }
        qsort(gaps + g, end - g, sizeof *gaps, cmp_gapc);
        uint32_t q = cw_trace_process_node(t, proc);
        size_t ptr = g;
        for (size_t j = 0; j < nf && ptr < end; j++) {
            uint64_t v = cw_vc_get(&EV(c, firsts[j].s)->vc, q);
            for (; ptr < end && gaps[ptr].key <= v; ptr++) {
                size_t y = addr[gaps[ptr].a];
                /* The first j from here whose send y happened before. */
                for (size_t jj = j; jj < nf; jj++)
                    if (cw_causal_compare(c, y, firsts[jj].s) == CW_CLOCK_BEFORE) {
                        gap_first[gaps[ptr].a] = jj;
                        break;
                    }
            }
        }
        g = end;
    }
    for (size_t i = 0; i < n_addr && rc == CW_OK; i++) {
        size_t j = gap_first[i];
        if (j == SIZE_MAX)
            continue;
        const cwc_event_t *sy = EV(c, addr[i]);
        const cwc_event_t *dx = EV(c, firsts[j].d), *sx = EV(c, firsts[j].s);
        cw_event_id(dx, ida, sizeof ida);
        cw_event_id(sy, idb, sizeof idb);
        fmt_clock(c, &sx->vc, ca, sizeof ca);
        fmt_clock(c, &sy->vc, cb, sizeof cb);
        rc = add_finding(c, CW_FIND_GAP, r, firsts[j].d, addr[i], sy->msg,
                         "%s delivered %s (sent at %s) but %s never delivered %s (sent as %s "
                         "at %s), which happened before it and was addressed to %s",
                         ida, dx->msg, ca, rname, sy->msg, idb, cb, rname);
    }
out:
    free(gaps);
    free(gap_first);
    for (size_t i = 0; i < nf; i++)
        seen[firsts[i].s] = SIZE_MAX;
    return rc;
}

/* The node, in name order first, where a and b differ, ignoring `skip`;
 * UINT32_MAX if none. *va, *vb: the counters there. */
static uint32_t first_difference(const cw_causal_t *c, const cw_vc_t *a, const cw_vc_t *b,
                                 uint32_t skip, uint64_t *va, uint64_t *vb)
{
    uint32_t best = UINT32_MAX;
    size_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        uint32_t na = i < a->n ? a->node[i] : UINT32_MAX, nb = j < b->n ? b->node[j] : UINT32_MAX;
        uint32_t node = na < nb ? na : nb;
        uint64_t x = na == node ? a->count[i++] : 0;
        uint64_t y = nb == node ? b->count[j++] : 0;
        if (x != y && node != skip
            && (best == UINT32_MAX
                || strcmp(cw_trace_node_name(c->t, node), cw_trace_node_name(c->t, best)) < 0)) {
            best = node;
            *va = x;
            *vb = y;
        }
    }
    return best;
}

/* The entry-wise maximum of a and b into out (arrays of a->n + b->n). */
static void vc_merge(const cw_vc_t *a, const cw_vc_t *b, uint32_t *node, uint64_t *count, cw_vc_t *out)
{
    size_t i = 0, j = 0, k = 0;
    while (i < a->n || j < b->n) {
        uint32_t na = i < a->n ? a->node[i] : UINT32_MAX, nb = j < b->n ? b->node[j] : UINT32_MAX;
        uint32_t m = na < nb ? na : nb;
        uint64_t x = na == m ? a->count[i++] : 0;
        uint64_t y = nb == m ? b->count[j++] : 0;
        node[k] = m;
        count[k++] = x > y ? x : y;
    }
    *out = (cw_vc_t){.node = node, .count = count, .n = k};
}

/* Clock rules of process p's events. */
static int audit_clocks(cw_causal_t *c, const work_t *w, size_t p)
{
    const cw_trace_t *t = c->t;
    const char *pname = cw_trace_process_name(t, p);
    uint32_t pnode = cw_trace_process_node(t, p);
    size_t n = cw_trace_process_count(t, p);
    const cwc_event_t *prev = NULL;
    size_t prev_i = CW_NO_EVENT;
    char ida[CW_EVENT_ID_MAX], idb[CW_EVENT_ID_MAX], ca[256], cb[256], cm[256], cs[256];
    static const cw_vc_t empty = {NULL, NULL, 0};
    uint32_t *mnode = NULL;
    uint64_t *mcount = NULL;
    size_t mcap = 0;
    int rc = CW_OK;
    for (size_t seq = 1; seq <= n && rc == CW_OK; seq++) {
        size_t i = cw_trace_process_event(t, p, seq);
        const cwc_event_t *e = EV(c, i);
        const cw_vc_t *pc = prev ? &prev->vc : &empty;
        uint64_t own = cw_vc_get(&e->vc, pnode);
        uint64_t want = prev ? cw_vc_get(pc, pnode) + 1 : 1;
        /* ida, idb, ca, cb: the event and its predecessor, formatted only
         * when a finding needs them. */
        int named = 0;
#define NAME_THEM()                                                    \
        do {                                                           \
            if (!named) {                                              \
                cw_event_id(e, ida, sizeof ida);                       \
                if (prev)                                              \
                    cw_event_id(prev, idb, sizeof idb);                \
                fmt_clock(c, &e->vc, ca, sizeof ca);                   \
                fmt_clock(c, pc, cb, sizeof cb);                       \
                named = 1;                                             \
            }                                                          \
        } while (0)
        if (own != want) {
            NAME_THEM();
            if (prev)
                rc = add_finding(c, CW_FIND_CLOCK_RULE, p, i, prev_i, e->msg,
                                 "%s has own entry %s:%llu, expected %llu (previous event %s at %s; "
                                 "now %s)", ida, pname, (unsigned long long) own,
                                 (unsigned long long) want, idb, cb, ca);
            else
                rc = add_finding(c, CW_FIND_CLOCK_RULE, p, i, CW_NO_EVENT, e->msg,
                                 "%s is the first event of %s but has own entry %s:%llu, expected 1 "
                                 "(%s)", ida, pname, pname, (unsigned long long) own, ca);
            if (rc != CW_OK)
                break;
        }
        if (e->kind != CW_EV_DELIVER) {
            uint64_t va = 0, vb = 0;
            uint32_t node = first_difference(c, &e->vc, pc, pnode, &va, &vb);
            if (node != UINT32_MAX) {
                NAME_THEM();
                rc = add_finding(c, CW_FIND_CLOCK_RULE, p, i, prev ? prev_i : CW_NO_EVENT, e->msg,
                                 "%s is a %s event but changed entry %s from %llu to %llu; only "
                                 "the own entry may change (before: %s, after: %s)",
                                 ida, cw_ev_kind_name(e->kind), cw_trace_node_name(t, node),
                                 (unsigned long long) vb, (unsigned long long) va, cb, ca);
            }
        } else {
            size_t s = CW_NO_EVENT;
            const cwc_event_t *se = NULL;
            if ((s = w->send_of[i]) != CW_NO_EVENT && strcmp(EV(c, s)->process, e->peers[0]) == 0)
                se = EV(c, s);
            else
                s = CW_NO_EVENT;
            if (se && e->has_msg_clock && cw_vc_compare(&se->vc, &e->mvc) != CW_CLOCK_EQUAL) {
                NAME_THEM();
                cw_event_id(se, idb, sizeof idb);
                fmt_clock(c, &se->vc, cs, sizeof cs);
                fmt_clock(c, &e->mvc, cm, sizeof cm);
                rc = add_finding(c, CW_FIND_CLOCK_RULE, p, i, s, e->msg,
                                 "%s received message %s stamped %s, but its send %s has clock %s",
                                 ida, e->msg, cm, idb, cs);
                if (rc != CW_OK)
                    break;
            }
            const cw_vc_t *mc = se ? &se->vc : e->has_msg_clock ? &e->mvc : NULL;
            if (mc) {
                /* e >= merge(prev, mc) entry by entry? */
                uint32_t bad = UINT32_MAX;
                uint64_t have = 0, need = 0;
                /* One walk over the three clocks in node id order. */
                size_t ip = 0, im = 0, ie = 0;
                const cw_vc_t *ev = &e->vc;
                while (ip < pc->n || im < mc->n) {
                    uint32_t np_ = ip < pc->n ? pc->node[ip] : UINT32_MAX;
                    uint32_t nm_ = im < mc->n ? mc->node[im] : UINT32_MAX;
                    uint32_t node = np_ < nm_ ? np_ : nm_;
                    uint64_t x = np_ == node ? pc->count[ip++] : 0;
                    uint64_t y = nm_ == node ? mc->count[im++] : 0;
                    uint64_t need_k = x > y ? x : y;
                    while (ie < ev->n && ev->node[ie] < node)
                        ie++;
                    uint64_t have_k = ie < ev->n && ev->node[ie] == node ? ev->count[ie] : 0;
                    if (have_k < need_k
                        && (bad == UINT32_MAX
                            || strcmp(cw_trace_node_name(t, node), cw_trace_node_name(t, bad)) < 0)) {
                        bad = node;
                        have = have_k;
                        need = need_k;
                    }
                }
                if (bad != UINT32_MAX) {
                    NAME_THEM();
                    if (pc->n + mc->n > mcap) {
                        mcap = pc->n + mc->n;
                        uint32_t *gn = realloc(mnode, mcap * sizeof *gn);
                        if (gn)
                            mnode = gn;
                        uint64_t *gc = realloc(mcount, mcap * sizeof *gc);
                        if (gc)
                            mcount = gc;
                        if (!gn || !gc) {
                            rc = CW_ERR_NOMEM;
                            break;
                        }
                    }
                    cw_vc_t merged;
                    vc_merge(pc, mc, mnode, mcount, &merged);
                    fmt_clock(c, &merged, cm, sizeof cm);
                    fmt_clock(c, mc, cs, sizeof cs);
                    if (se)
                        cw_event_id(se, idb, sizeof idb);
                    /* cb is the previous event's clock; cs the message's:
                     * the send's, else msg_clock. */
                    rc = add_finding(c, CW_FIND_CLOCK_RULE, p, i, s, e->msg,
                                     "%s delivered %s with clock %s, which is not >= %s, the merge of "
                                     "the previous clock %s and the message's clock %s%s%s: entry %s "
                                     "is %llu, needs >= %llu",
                                     ida, e->msg, ca, cm, cb, cs, se ? " from " : " as stamped",
                                     se ? idb : "", cw_trace_node_name(t, bad),
                                     (unsigned long long) have, (unsigned long long) need);
                }
            }
        }
#undef NAME_THEM
        prev = e;
        prev_i = i;
    }
    free(mnode);
    free(mcount);
    return rc;
}

static int cmp_findings(const void *x, const void *y)
{
    const cw_finding_t *a = x, *b = y;
    if (a->a != b->a)
        return a->a < b->a ? -1 : 1;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->b != b->b)
        return a->b < b->b ? -1 : 1;
    return strcmp(a->detail, b->detail);
}

/* Appends send i to addr[r]. */
static int addr_append(size_t **addr, size_t *n_addr, size_t *cap_addr, size_t r, size_t i)
{
    if (n_addr[r] == cap_addr[r]) {
        size_t cap = cap_addr[r] ? cap_addr[r] * 2 : 16;
        size_t *grown = realloc(addr[r], cap * sizeof *grown);
        if (!grown)
            return CW_ERR_NOMEM;
        addr[r] = grown;
        cap_addr[r] = cap;
    }
    addr[r][n_addr[r]++] = i;
    return CW_OK;
}

int cw_causal_audit(cw_causal_t *c)
{
    if (c->audited)
        return CW_OK;
    const cw_trace_t *t = c->t;
    size_t np = cw_trace_processes(t), ne = cw_trace_count(t), nn = cw_trace_nodes(t);
    int rc = CW_OK;
    work_t w;
    memset(&w, 0, sizeof w);
    size_t most = 1;   /* events of the busiest process */
    for (size_t p = 0; p < np; p++)
        if (cw_trace_process_count(t, p) > most)
            most = cw_trace_process_count(t, p);
    /* addr[r]: sends (first of each key) addressed to r, in trace order. */
    size_t **addr = calloc(np ? np : 1, sizeof *addr);
    size_t *n_addr = calloc(np ? np : 1, sizeof *n_addr);
    size_t *cap_addr = calloc(np ? np : 1, sizeof *cap_addr);
    w.heaps = calloc(nn ? nn : 1, sizeof *w.heaps);
    w.used = malloc((nn ? nn : 1) * sizeof *w.used);
    w.zero = malloc(most * sizeof *w.zero);
    w.firsts = malloc(most * sizeof *w.firsts);
    w.snode = malloc(most * sizeof *w.snode);
    w.skey = malloc(most * sizeof *w.skey);
    w.send_of = malloc((ne ? ne : 1) * sizeof *w.send_of);
    w.seen_at = malloc((ne ? ne : 1) * sizeof *w.seen_at);
    if (w.send_of && w.seen_at)
        for (size_t i = 0; i < ne; i++) {
            const cwc_event_t *e = EV(c, i);
            size_t s;
            w.send_of[i] = e->kind != CW_EV_LOCAL && cw_strmap_get(c->sends, e->msg, &s) ? s : CW_NO_EVENT;
            w.seen_at[i] = SIZE_MAX;
        }
    w.cap_stack = 64;
    w.stack = malloc(w.cap_stack * sizeof *w.stack);
    if (!w.stack || !w.send_of || !w.seen_at || !addr || !n_addr || !cap_addr || !w.heaps || !w.used || !w.zero || !w.firsts || !w.snode
        || !w.skey) {
        rc = CW_ERR_NOMEM;
        goto out;
    }
    char ida[CW_EVENT_ID_MAX], idb[CW_EVENT_ID_MAX];
    for (size_t i = 0; i < ne && rc == CW_OK; i++) {
        const cwc_event_t *e = EV(c, i);
        if (e->kind != CW_EV_SEND)
            continue;
        size_t first = w.send_of[i];
        if (first != i) {
            cw_event_id(e, ida, sizeof ida);
            cw_event_id(EV(c, first), idb, sizeof idb);
            rc = add_finding(c, CW_FIND_UNMATCHED, e->proc, i, first, e->msg,
                             "%s sends message key %s, already used by %s", ida, e->msg, idb);
            continue;
        }
        if (e->broadcast) {
            for (size_t r = 0; r < np && rc == CW_OK; r++)
                if (r != e->proc)
                    rc = addr_append(addr, n_addr, cap_addr, r, i);
        } else {
            /* Peers are distinct (cw_trace_check), so each r at most once. */
            for (size_t k = 0; k < e->n_peers && rc == CW_OK; k++) {
                long r = cw_trace_process_find(t, e->peers[k]);
                if (r >= 0)
                    rc = addr_append(addr, n_addr, cap_addr, (size_t) r, i);
            }
        }
    }
    for (size_t r = 0; r < np && rc == CW_OK; r++)
        rc = audit_receiver(c, &w, r, addr[r], n_addr[r]);
    for (size_t p = 0; p < np && rc == CW_OK; p++)
        rc = audit_clocks(c, &w, p);
out:
    if (addr)
        for (size_t r = 0; r < np; r++)
            free(addr[r]);
    free(addr);
    free(n_addr);
    free(cap_addr);
    if (w.heaps)
        for (size_t k = 0; k < nn; k++)
            free(w.heaps[k].items);
    free(w.heaps);
    free(w.used);
    free(w.zero);
    free(w.stack);
    free(w.firsts);
    free(w.send_of);
    free(w.seen_at);
    free(w.snode);
    free(w.skey);
    if (rc != CW_OK) {
        clear_findings(c);
        return rc;
    }
    if (c->n_findings > 1)
        qsort(c->findings, c->n_findings, sizeof *c->findings, cmp_findings);
    c->audited = 1;
    return CW_OK;
}

size_t cw_causal_findings(const cw_causal_t *c) { return c->audited ? c->n_findings : 0; }

const cw_finding_t *cw_causal_finding(const cw_causal_t *c, size_t i)
{
    return c->audited && i < c->n_findings ? &c->findings[i] : NULL;
}

/* ---- statistics ----------------------------------------------------------- */

void cw_stats_options_init(cw_stats_options_t *o)
{
    o->exact_width_max = 2000;
    o->pairs_max = 10000;
}

/* The strict order used for the width: clock-before, and among distinct
 * events with equal clocks, trace order (so the relation stays a strict
 * partial order and equal events are never counted as an antichain). */
static int less(const cw_causal_t *c, size_t x, size_t y)
{
    cw_clock_order_t o = cw_causal_compare(c, x, y);
    return o == CW_CLOCK_BEFORE || (o == CW_CLOCK_EQUAL && x < y);
}

/* Hopcroft-Karp state over the comparability graph (x_L -> y_R iff x < y). */
typedef struct {
    size_t n;
    size_t *start;    /* CSR offsets, n + 1 */
    uint32_t *adj;    /* right endpoints */
    long *ml, *mr;    /* matches, -1 = free */
    size_t *dist;
    size_t *it;       /* DFS edge cursor per left vertex */
} hk_t;

#define HK_INF SIZE_MAX

static int hk_bfs(hk_t *h, size_t *queue)
{
    size_t qh = 0, qt = 0;
    int found = 0;
    for (size_t u = 0; u < h->n; u++) {
        if (h->ml[u] < 0) {
            h->dist[u] = 0;
            queue[qt++] = u;
        } else {
            h->dist[u] = HK_INF;
        }
    }
    while (qh < qt) {
        size_t u = queue[qh++];
        for (size_t k = h->start[u]; k < h->start[u + 1]; k++) {
            long w = h->mr[h->adj[k]];
            if (w < 0)
                found = 1;
            else if (h->dist[w] == HK_INF) {
                h->dist[w] = h->dist[u] + 1;
                queue[qt++] = (size_t) w;
            }
        }
    }
    return found;
}

static int hk_dfs(hk_t *h, size_t u)
{
    for (; h->it[u] < h->start[u + 1]; h->it[u]++) {
        size_t v = h->adj[h->it[u]];
        long w = h->mr[v];
        if (w < 0 || (h->dist[w] == h->dist[u] + 1 && hk_dfs(h, (size_t) w))) {
            h->ml[u] = (long) v;
            h->mr[v] = (long) u;
            h->it[u]++;
            return 1;
        }
    }
    h->dist[u] = HK_INF;
    return 0;
}

/* Exact width by Dilworth/König; fills c->antichain. */
static int width_exact(cw_causal_t *c, size_t n, size_t *width)
{
    hk_t h = {.n = n};
    int rc = CW_ERR_NOMEM;
    size_t edges = 0, cap = 0;
    size_t *queue = NULL;
    unsigned char *zl = NULL, *zr = NULL;
    h.start = calloc(n + 1, sizeof *h.start);
    h.ml = malloc(n * sizeof *h.ml);
    h.mr = malloc(n * sizeof *h.mr);
    h.dist = malloc(n * sizeof *h.dist);
    h.it = malloc(n * sizeof *h.it);
    queue = malloc(n * sizeof *queue);
    zl = calloc(n, 1);
    zr = calloc(n, 1);
    if (!h.start || !h.ml || !h.mr || !h.dist || !h.it || !queue || !zl || !zr)
        goto out;
    for (size_t x = 0; x < n; x++) {
        h.start[x] = edges;
        for (size_t y = 0; y < n; y++) {
            if (x == y || !less(c, x, y))
                continue;
            if (edges == cap) {
                cap = cap ? cap * 2 : 1024;
                uint32_t *grown = realloc(h.adj, cap * sizeof *grown);
                if (!grown)
                    goto out;
                h.adj = grown;
            }
            h.adj[edges++] = (uint32_t) y;
        }
    }
    h.start[n] = edges;
    for (size_t i = 0; i < n; i++)
        h.ml[i] = h.mr[i] = -1;
    size_t matching = 0;
    while (hk_bfs(&h, queue)) {
        for (size_t u = 0; u < n; u++)
            h.it[u] = h.start[u];
        for (size_t u = 0; u < n; u++)
            if (h.ml[u] < 0 && hk_dfs(&h, u))
                matching++;
    }
    /* König: Z = vertices reachable from free left vertices by alternating
     * paths; the antichain is {x : x_L in Z, x_R not in Z}. */
    size_t qh = 0, qt = 0;
    for (size_t u = 0; u < n; u++)
        if (h.ml[u] < 0) {
            zl[u] = 1;
            queue[qt++] = u;
        }
    while (qh < qt) {
        size_t u = queue[qh++];
        for (size_t k = h.start[u]; k < h.start[u + 1]; k++) {
            size_t v = h.adj[k];
            if (zr[v])
                continue;
            zr[v] = 1;
            long w = h.mr[v];
            if (w >= 0 && !zl[w]) {
                zl[w] = 1;
                queue[qt++] = (size_t) w;
            }
        }
    }
    size_t k = 0;
    for (size_t x = 0; x < n; x++)
        if (zl[x] && !zr[x])
            c->antichain[k++] = x;
    assert(k == n - matching);
    *width = k;
    rc = CW_OK;
out:
    free(h.start);
    free(h.adj);
    free(h.ml);
    free(h.mr);
    free(h.dist);
    free(h.it);
    free(queue);
    free(zl);
    free(zr);
    return rc;
}

typedef struct {
    uint64_t sum;   /* sum of the clock's entries */
    size_t i;       /* trace index */
} lin_t;

static int cmp_linear(const void *x, const void *y)
{
    const lin_t *a = x, *b = y;
    if (a->sum != b->sum)
        return a->sum < b->sum ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* Greedy bounds for large traces: a chain cover (upper bound) and the best
 * of several greedy antichains (lower bound); fills c->antichain. */
static int width_greedy(cw_causal_t *c, size_t n, size_t *lower, size_t *upper)
{
    int rc = CW_ERR_NOMEM;
    lin_t *lin = malloc(n * sizeof *lin);
    size_t *order = malloc(n * sizeof *order);
    size_t *tails = malloc(n * sizeof *tails);
    size_t *chain_of = malloc(n * sizeof *chain_of);
    size_t *cand = malloc(n * sizeof *cand);
    if (!lin || !order || !tails || !chain_of || !cand)
        goto out;
    for (size_t i = 0; i < n; i++) {
        const cwc_event_t *e = EV(c, i);
        lin[i] = (lin_t){.sum = cw_vc_sum(&e->vc), .i = i};
        chain_of[i] = SIZE_MAX;
    }
    /* Sorting by entry sum (ties by index) is a linear extension of less():
     * x < y means x's entries are <= y's and one is smaller (or the clocks
     * are equal and x comes first). */
    qsort(lin, n, sizeof *lin, cmp_linear);
    for (size_t i = 0; i < n; i++)
        order[i] = lin[i].i;
    /* Chain cover: extend the chain of the process's previous event if it
     * can take e, else the first chain that can, else start a new one. */
    size_t chains = 0;
    for (size_t k = 0; k < n; k++) {
        size_t e = order[k];
        const cwc_event_t *ev = EV(c, e);
        size_t pick = SIZE_MAX;
        if (ev->seq > 1) {
            size_t prev = cw_trace_process_event(c->t, ev->proc, ev->seq - 1);
            size_t ch = chain_of[prev];
            if (ch != SIZE_MAX && tails[ch] == prev && less(c, prev, e))
                pick = ch;
        }
        for (size_t ch = 0; ch < chains && pick == SIZE_MAX; ch++)
            if (less(c, tails[ch], e))
                pick = ch;
        if (pick == SIZE_MAX)
            pick = chains++;
        tails[pick] = e;
        chain_of[e] = pick;
    }
    /* Antichains: greedy passes over the linear extension from 8 offsets. */
    size_t best = 0;
    for (size_t off = 0; off < 8 && off < n; off++) {
        size_t start = off * n / 8, m = 0;
        for (size_t k = 0; k < n; k++) {
            size_t e = order[(start + k) % n];
            int ok = 1;
            for (size_t j = 0; j < m && ok; j++)
                if (cw_causal_compare(c, cand[j], e) != CW_CLOCK_CONCURRENT)
                    ok = 0;
            if (ok)
                cand[m++] = e;
        }
        if (m > best) {
            best = m;
            memcpy(c->antichain, cand, m * sizeof *cand);
        }
    }
    *lower = best;
    *upper = chains;
    rc = CW_OK;
out:
    free(lin);
    free(order);
    free(tails);
    free(chain_of);
    free(cand);
    return rc;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *) x, b = *(const uint64_t *) y;
    return a < b ? -1 : a > b;
}

static uint64_t percentile(const uint64_t *v, size_t n, unsigned p)
{
    size_t rank = (size_t) (((uint64_t) p * n + 99) / 100);   /* nearest rank, 1-based */
    if (rank == 0)
        rank = 1;
    return v[rank - 1];
}

int cw_causal_stats(cw_causal_t *c, const cw_stats_options_t *o, const cwc_stats_t **out)
{
    cw_stats_options_t defaults;
    if (!o) {
        cw_stats_options_init(&defaults);
        o = &defaults;
    }
    const cw_trace_t *t = c->t;
    size_t n = cw_trace_count(t);
    cwc_stats_t st;
    memset(&st, 0, sizeof st);
    st.events = n;
    st.processes = cw_trace_processes(t);
    size_t *antichain = malloc((n ? n : 1) * sizeof *antichain);
    uint64_t *hb = malloc((n ? n : 1) * sizeof *hb);
    cw_strmap_t *delivered = cw_strmap_new();
    size_t *hist = NULL;
    if (!antichain || !hb || !delivered)
        goto nomem;
    double clock_total = 0;
    st.clock_min = n ? SIZE_MAX : 0;
    for (size_t i = 0; i < n; i++) {
        const cwc_event_t *e = EV(c, i);
        size_t s;
        switch (e->kind) {
        case CW_EV_SEND: st.sends++; break;
        case CW_EV_DELIVER:
            st.delivers++;
            if (cw_strmap_get(c->sends, e->msg, &s)) {
                st.deliveries_matched++;
                if (cw_strmap_put(delivered, e->msg, 1) != CW_OK)
                    goto nomem;
            }
            if (e->has_holdback)
                hb[st.holdback_n++] = e->holdback_us;
            break;
        case CW_EV_LOCAL: st.locals++; break;
        }
        if (e->vc.n < st.clock_min) st.clock_min = e->vc.n;
        if (e->vc.n > st.clock_max) st.clock_max = e->vc.n;
        clock_total += (double) e->vc.n;
    }
    st.messages = cw_strmap_size(c->sends);
    st.messages_delivered = cw_strmap_size(delivered);
    st.clock_mean = n ? clock_total / (double) n : 0;
    hist = calloc(st.clock_max + 1, sizeof *hist);
    if (!hist)
        goto nomem;
    for (size_t i = 0; i < n; i++)
        hist[EV(c, i)->vc.n]++;
    if (st.holdback_n) {
        qsort(hb, st.holdback_n, sizeof *hb, cmp_u64);
        double total = 0;
        for (size_t i = 0; i < st.holdback_n; i++)
            total += (double) hb[i];
        st.holdback_min = hb[0];
        st.holdback_max = hb[st.holdback_n - 1];
        st.holdback_mean = total / (double) st.holdback_n;
        st.holdback_p50 = percentile(hb, st.holdback_n, 50);
        st.holdback_p90 = percentile(hb, st.holdback_n, 90);
        st.holdback_p99 = percentile(hb, st.holdback_n, 99);
    }
    st.pairs = n > 1 ? (uint64_t) n * (n - 1) / 2 : 0;
    if (n <= o->pairs_max) {
        st.pairs_counted = 1;
        for (size_t i = 0; i < n; i++) {
            for (size_t j = i + 1; j < n; j++) {
                switch (cw_causal_compare(c, i, j)) {
                case CW_CLOCK_BEFORE:
                case CW_CLOCK_AFTER: st.ordered_pairs++; break;
                case CW_CLOCK_CONCURRENT: st.concurrent_pairs++; break;
                case CW_CLOCK_EQUAL: st.equal_pairs++; break;
                }
            }
        }
    }
    /* c->antichain is written by the width functions: swap it in first. */
    size_t *old_antichain = c->antichain;
    c->antichain = antichain;
    int rc;
    if (n == 0) {
        rc = CW_OK;
        st.width_exact = 1;
    } else if (n <= o->exact_width_max && n <= UINT32_MAX) {
        rc = width_exact(c, n, &st.width);
        st.width_lower = st.width_upper = st.width;
        st.width_exact = 1;
    } else {
        rc = width_greedy(c, n, &st.width_lower, &st.width_upper);
        st.width = st.width_lower;
        st.width_exact = st.width_lower == st.width_upper;
    }
    if (rc != CW_OK) {
        c->antichain = old_antichain;
        goto nomem;
    }
    free(old_antichain);
    free(c->hist);
    c->hist = hist;
    st.antichain = c->antichain;
    st.clock_hist = c->hist;
    c->stats = st;
    free(hb);
    cw_strmap_destroy(&delivered);
    *out = &c->stats;
    return CW_OK;
nomem:
    free(antichain);
    free(hb);
    free(hist);
    cw_strmap_destroy(&delivered);
    return CW_ERR_NOMEM;
}

size_t cw_causal_late(const cw_causal_t *c)
{
    const cw_trace_t *t = cw_causal_trace(c);
    size_t n = 0;
    for (size_t i = 0; i < cw_trace_count(t); i++) {
        const cwc_event_t *e = cw_trace_event(t, i);
        n += e->kind == CW_EV_DELIVER && e->late;
    }
    return n;
}
