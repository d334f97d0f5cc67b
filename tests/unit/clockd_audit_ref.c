/*  clockd_audit_ref: the audit of causeway-clockd as it was before it was
 *  made fast (clockd/causal.c up to issue 15): every pair of deliveries at
 *  a receiver compared with cw_clock_compare on wire clocks, O(D^2 k^2).
 *  Kept only as the reference of the differential test in
 *  clockd_causal_test.c, which checks that the fast audit reports exactly
 *  the same findings (kind, process, events, message, detail) on random
 *  traces with every kind of fault. The code below is the old one with
 *  the clocks read from per-event wire copies (cw_trace_clock_wire); it is
 *  not built into any program. Single-threaded.
 */
#include "clockd_audit_ref.h"
#include "strmap.h"
#include "cw_status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ref {
    const cw_trace_t *t;
    cw_strmap_t *sends;           /* message key -> trace index of its first send */
    cw_finding_t *findings;
    size_t n_findings, cap_findings;
    cwc_event_t *shadow;           /* copies of the events with wire clocks */
    cw_clock_entry_msg_t **items; /* 2 per event: clock, msg clock */
};

static const cwc_event_t *EV(const ref_t *c, size_t i) { return &c->shadow[i]; }

static cw_clock_order_t ref_compare(const ref_t *c, size_t a, size_t b)
{
    const cwc_event_t *ea = EV(c, a), *eb = EV(c, b);
    return cw_clock_compare(ea->clock, ea->n_clock, eb->clock, eb->n_clock);
}

static void ref_clear_findings(ref_t *c)
{
    for (size_t i = 0; i < c->n_findings; i++)
        free((char *) c->findings[i].detail);
    free(c->findings);
    c->findings = NULL;
    c->n_findings = c->cap_findings = 0;
}

static int add_finding(ref_t *c, cw_finding_kind_t kind, size_t process, size_t a, size_t b,
                       const char *msg, const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static int add_finding(ref_t *c, cw_finding_kind_t kind, size_t process, size_t a, size_t b,
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

/* Counter of node in sorted wire entries (binary search); 0 if absent. */
static uint64_t entry_get(cw_clock_entry_msg_t *const *e, size_t n, const char *node)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(e[mid]->node, node);
        if (cmp == 0)
            return e[mid]->counter;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Formats a clock for a detail sentence. */
static const char *fmt_clock(cw_clock_entry_msg_t *const *e, size_t n, char *buf, size_t size)
{
    return cw_clock_format(e, n, buf, size);
}

static int addressed_to(const cwc_event_t *send, const char *receiver)
{
    if (send->broadcast)
        return strcmp(send->process, receiver) != 0;
    for (size_t i = 0; i < send->n_peers; i++)
        if (strcmp(send->peers[i], receiver) == 0)
            return 1;
    return 0;
}

typedef struct {
    size_t d;   /* trace index of the first delivery of a message at the receiver */
    size_t s;   /* trace index of its send */
} first_t;

/* Deliveries at receiver r: unmatched, duplicate, causal-order and gap. */
static int ref_audit_receiver(ref_t *c, size_t r, const size_t *addr, size_t n_addr)
{
    const cw_trace_t *t = c->t;
    const char *rname = cw_trace_process_name(t, r);
    size_t n = cw_trace_process_count(t, r);
    char ida[CW_EVENT_ID_MAX], idb[CW_EVENT_ID_MAX], ca[256], cb[256];
    int rc = CW_OK;
    cw_strmap_t *seen = cw_strmap_new();      /* message key -> index in firsts */
    first_t *firsts = calloc(n ? n : 1, sizeof *firsts);
    size_t nf = 0;
    if (!seen || !firsts) {
        rc = CW_ERR_NOMEM;
        goto out;
    }
    for (size_t seq = 1; seq <= n && rc == CW_OK; seq++) {
        size_t d = cw_trace_process_event(t, r, seq);
        const cwc_event_t *de = EV(c, d);
        if (de->kind != CW_EV_DELIVER)
            continue;
        size_t s;
        cw_event_id(de, ida, sizeof ida);
        if (!cw_strmap_get(c->sends, de->msg, &s)) {
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
        if (!addressed_to(se, rname)) {
            rc = add_finding(c, CW_FIND_UNMATCHED, r, d, s, de->msg,
                             "%s delivered message %s, which %s did not address to %s",
                             ida, de->msg, idb, rname);
            continue;
        }
        size_t k;
        if (cw_strmap_get(seen, de->msg, &k)) {
            cw_event_id(EV(c, firsts[k].d), idb, sizeof idb);
            rc = add_finding(c, CW_FIND_DUPLICATE, r, d, firsts[k].d, de->msg,
                             "%s delivered message %s again; %s delivered it first",
                             ida, de->msg, idb);
            continue;
        }
        if ((rc = cw_strmap_put(seen, de->msg, nf)) != CW_OK)
            break;
        firsts[nf++] = (first_t){.d = d, .s = s};
    }
    /* causal-order: x delivered before y although y's send happened before x's. */
    for (size_t i = 0; i < nf && rc == CW_OK; i++) {
        size_t first_j = SIZE_MAX, count = 0;
        for (size_t j = i + 1; j < nf; j++) {
            if (ref_compare(c, firsts[j].s, firsts[i].s) == CW_CLOCK_BEFORE) {
                if (!count)
                    first_j = j;
                count++;
            }
        }
        if (!count)
            continue;
        const cwc_event_t *dx = EV(c, firsts[i].d), *dy = EV(c, firsts[first_j].d);
        const cwc_event_t *sx = EV(c, firsts[i].s), *sy = EV(c, firsts[first_j].s);
        char idy[CW_EVENT_ID_MAX];
        cw_event_id(dx, ida, sizeof ida);
        cw_event_id(dy, idy, sizeof idy);
        fmt_clock(sx->clock, sx->n_clock, ca, sizeof ca);
        fmt_clock(sy->clock, sy->n_clock, cb, sizeof cb);
        char more[64] = "";
        if (count > 1)
            snprintf(more, sizeof more, " (and %zu more such messages)", count - 1);
        rc = add_finding(c, CW_FIND_CAUSAL_ORDER, r, firsts[i].d, firsts[first_j].d, dx->msg,
                         "%s delivered %s (sent at %s) before %s (sent at %s), which happened "
                         "before it and was delivered later as %s%s",
                         ida, dx->msg, ca, dy->msg, cb, idy, more);
    }
    /* gap: y addressed to r, never delivered, but something that depends on it was. */
    for (size_t i = 0; i < n_addr && rc == CW_OK; i++) {
        const cwc_event_t *sy = EV(c, addr[i]);
        size_t k;
        if (strcmp(sy->process, rname) == 0 || cw_strmap_get(seen, sy->msg, &k))
            continue;
        for (size_t j = 0; j < nf; j++) {
            if (ref_compare(c, addr[i], firsts[j].s) != CW_CLOCK_BEFORE)
                continue;
            const cwc_event_t *dx = EV(c, firsts[j].d), *sx = EV(c, firsts[j].s);
            cw_event_id(dx, ida, sizeof ida);
            cw_event_id(sy, idb, sizeof idb);
            fmt_clock(sx->clock, sx->n_clock, ca, sizeof ca);
            fmt_clock(sy->clock, sy->n_clock, cb, sizeof cb);
            rc = add_finding(c, CW_FIND_GAP, r, firsts[j].d, addr[i], sy->msg,
                             "%s delivered %s (sent at %s) but %s never delivered %s (sent as %s "
                             "at %s), which happened before it and was addressed to %s",
                             ida, dx->msg, ca, rname, sy->msg, idb, cb, rname);
            break;
        }
    }
out:
    cw_strmap_destroy(&seen);
    free(firsts);
    return rc;
}

/* The first node where a and b differ, ignoring `skip`; NULL if none.
 * Both are sorted wire clocks. */
static const char *first_difference(cw_clock_entry_msg_t *const *a, size_t na,
                                    cw_clock_entry_msg_t *const *b, size_t nb, const char *skip,
                                    uint64_t *va, uint64_t *vb)
{
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        int cmp = i >= na ? 1 : j >= nb ? -1 : strcmp(a[i]->node, b[j]->node);
        const char *node = cmp <= 0 ? a[i]->node : b[j]->node;
        uint64_t x = cmp <= 0 ? a[i]->counter : 0;
        uint64_t y = cmp >= 0 ? b[j]->counter : 0;
        if (cmp <= 0) i++;
        if (cmp >= 0) j++;
        if (x != y && strcmp(node, skip) != 0) {
            *va = x;
            *vb = y;
            return node;
        }
    }
    return NULL;
}

/* Clock rules of process p's events. */
static int ref_audit_clocks(ref_t *c, size_t p)
{
    const cw_trace_t *t = c->t;
    const char *pname = cw_trace_process_name(t, p);
    size_t n = cw_trace_process_count(t, p);
    const cwc_event_t *prev = NULL;
    size_t prev_i = CW_NO_EVENT;
    char ida[CW_EVENT_ID_MAX], idb[CW_EVENT_ID_MAX], ca[256], cb[256], cm[256], cs[256];
    int rc = CW_OK;
    for (size_t seq = 1; seq <= n && rc == CW_OK; seq++) {
        size_t i = cw_trace_process_event(t, p, seq);
        const cwc_event_t *e = EV(c, i);
        cw_clock_entry_msg_t *const *pc = prev ? prev->clock : NULL;
        size_t npc = prev ? prev->n_clock : 0;
        uint64_t own = entry_get(e->clock, e->n_clock, pname);
        uint64_t want = prev ? entry_get(pc, npc, pname) + 1 : 1;
        cw_event_id(e, ida, sizeof ida);
        if (prev)
            cw_event_id(prev, idb, sizeof idb);
        fmt_clock(e->clock, e->n_clock, ca, sizeof ca);
        fmt_clock(pc, npc, cb, sizeof cb);
        if (own != want) {
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
            const char *node = first_difference(e->clock, e->n_clock, pc, npc, pname, &va, &vb);
            if (node)
                rc = add_finding(c, CW_FIND_CLOCK_RULE, p, i, prev ? prev_i : CW_NO_EVENT, e->msg,
                                 "%s is a %s event but changed entry %s from %llu to %llu; only "
                                 "the own entry may change (before: %s, after: %s)",
                                 ida, cw_ev_kind_name(e->kind), node, (unsigned long long) vb,
                                 (unsigned long long) va, cb, ca);
        } else {
            size_t s = CW_NO_EVENT;
            const cwc_event_t *se = NULL;
            if (cw_strmap_get(c->sends, e->msg, &s) && strcmp(EV(c, s)->process, e->peers[0]) == 0)
                se = EV(c, s);
            else
                s = CW_NO_EVENT;
            if (se && e->has_msg_clock
                && cw_clock_compare(se->clock, se->n_clock, e->msg_clock, e->n_msg_clock) != CW_CLOCK_EQUAL) {
                cw_event_id(se, idb, sizeof idb);
                fmt_clock(se->clock, se->n_clock, cs, sizeof cs);
                fmt_clock(e->msg_clock, e->n_msg_clock, cm, sizeof cm);
                rc = add_finding(c, CW_FIND_CLOCK_RULE, p, i, s, e->msg,
                                 "%s received message %s stamped %s, but its send %s has clock %s",
                                 ida, e->msg, cm, idb, cs);
                if (rc != CW_OK)
                    break;
            }
            cw_clock_entry_msg_t *const *mc = se ? se->clock : e->has_msg_clock ? e->msg_clock : NULL;
            size_t nmc = se ? se->n_clock : e->has_msg_clock ? e->n_msg_clock : 0;
            if (se || e->has_msg_clock) {
                cw_clock_t *merged = cw_clock_new();
                if (!merged || cw_clock_merge(merged, pc, npc) != CW_OK
                    || cw_clock_merge(merged, mc, nmc) != CW_OK) {
                    cw_clock_destroy(&merged);
                    rc = CW_ERR_NOMEM;
                    break;
                }
                cw_clock_entry_msg_t **me;
                size_t nme = cw_clock_entries(merged, &me);
                cw_clock_order_t o = cw_clock_compare(e->clock, e->n_clock, me, nme);
                if (o != CW_CLOCK_AFTER && o != CW_CLOCK_EQUAL) {
                    const char *node = NULL;
                    uint64_t have = 0, need = 0;
                    for (size_t k = 0; k < nme; k++) {
                        uint64_t v = entry_get(e->clock, e->n_clock, me[k]->node);
                        if (v < me[k]->counter) {
                            node = me[k]->node;
                            have = v;
                            need = me[k]->counter;
                            break;
                        }
                    }
                    fmt_clock(me, nme, cm, sizeof cm);
                    fmt_clock(mc, nmc, cs, sizeof cs);
                    if (se)
                        cw_event_id(se, idb, sizeof idb);
                    /* cb is the previous event's clock (set above for every
                     * event); cs the message's: the send's, else msg_clock. */
                    rc = add_finding(c, CW_FIND_CLOCK_RULE, p, i, s, e->msg,
                                     "%s delivered %s with clock %s, which is not >= %s, the merge of "
                                     "the previous clock %s and the message's clock %s%s%s: entry %s "
                                     "is %llu, needs >= %llu",
                                     ida, e->msg, ca, cm, cb, cs, se ? " from " : " as stamped",
                                     se ? idb : "", node ? node : "?", (unsigned long long) have,
                                     (unsigned long long) need);
                }
                cw_clock_destroy(&merged);
            }
        }
        prev = e;
        prev_i = i;
    }
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

int ref_audit(ref_t *c)
{
    const cw_trace_t *t = c->t;
    size_t np = cw_trace_processes(t), ne = cw_trace_count(t);
    int rc = CW_OK;
    /* addr[r]: sends (first of each key) addressed to r, in trace order. */
    size_t **addr = calloc(np ? np : 1, sizeof *addr);
    size_t *n_addr = calloc(np ? np : 1, sizeof *n_addr);
    size_t *cap_addr = calloc(np ? np : 1, sizeof *cap_addr);
    if (!addr || !n_addr || !cap_addr) {
        rc = CW_ERR_NOMEM;
        goto out;
    }
    char ida[CW_EVENT_ID_MAX], idb[CW_EVENT_ID_MAX];
    for (size_t i = 0; i < ne && rc == CW_OK; i++) {
        const cwc_event_t *e = EV(c, i);
        if (e->kind != CW_EV_SEND)
            continue;
        size_t first;
        cw_strmap_get(c->sends, e->msg, &first);
        if (first != i) {
            cw_event_id(e, ida, sizeof ida);
            cw_event_id(EV(c, first), idb, sizeof idb);
            rc = add_finding(c, CW_FIND_UNMATCHED, e->proc, i, first, e->msg,
                             "%s sends message key %s, already used by %s", ida, e->msg, idb);
            continue;
        }
        for (size_t r = 0; r < np; r++) {
            if (!addressed_to(e, cw_trace_process_name(t, r)))
                continue;
            if (n_addr[r] == cap_addr[r]) {
                size_t cap = cap_addr[r] ? cap_addr[r] * 2 : 16;
                size_t *grown = realloc(addr[r], cap * sizeof *grown);
                if (!grown) {
                    rc = CW_ERR_NOMEM;
                    break;
                }
                addr[r] = grown;
                cap_addr[r] = cap;
            }
            addr[r][n_addr[r]++] = i;
        }
    }
    for (size_t r = 0; r < np && rc == CW_OK; r++)
        rc = ref_audit_receiver(c, r, addr[r], n_addr[r]);
    for (size_t p = 0; p < np && rc == CW_OK; p++)
        rc = ref_audit_clocks(c, p);
out:
    if (addr)
        for (size_t r = 0; r < np; r++)
            free(addr[r]);
    free(addr);
    free(n_addr);
    free(cap_addr);
    if (rc != CW_OK) {
        ref_clear_findings(c);
        return rc;
    }
    if (c->n_findings > 1)
        qsort(c->findings, c->n_findings, sizeof *c->findings, cmp_findings);
    return CW_OK;
}


ref_t *ref_new(const cw_trace_t *t)
{
    ref_t *c = calloc(1, sizeof *c);
    size_t n = cw_trace_count(t);
    c->t = t;
    c->sends = cw_strmap_new();
    c->shadow = calloc(n ? n : 1, sizeof *c->shadow);
    c->items = calloc(2 * (n ? n : 1), sizeof *c->items);
    for (size_t i = 0; i < n; i++) {
        const cwc_event_t *e = cw_trace_event(t, i);
        cwc_event_t *s = &c->shadow[i];
        *s = *e;
        cw_trace_clock_wire(t, &e->vc, &c->items[2 * i], &s->clock);
        s->n_clock = e->vc.n;
        if (e->has_msg_clock) {
            cw_trace_clock_wire(t, &e->mvc, &c->items[2 * i + 1], &s->msg_clock);
            s->n_msg_clock = e->mvc.n;
        }
        size_t prev;
        if (e->kind == CW_EV_SEND && !cw_strmap_get(c->sends, e->msg, &prev))
            cw_strmap_put(c->sends, e->msg, i);
    }
    return c;
}

void ref_destroy(ref_t **p)
{
    ref_t *c = *p;
    if (!c)
        return;
    for (size_t i = 0; i < cw_trace_count(c->t); i++) {
        free(c->items[2 * i]);
        free(c->items[2 * i + 1]);
        free(c->shadow[i].clock);
        free(c->shadow[i].msg_clock);
    }
    free(c->items);
    free(c->shadow);
    cw_strmap_destroy(&c->sends);
    ref_clear_findings(c);
    free(c);
    *p = NULL;
}

size_t ref_findings(const ref_t *c) { return c->n_findings; }
const cw_finding_t *ref_finding(const ref_t *c, size_t i) { return &c->findings[i]; }
