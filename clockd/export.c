/*  export: see export.h for the formats.
 *
 *  Invariants of a cw_export_t: col[i] is the diagram column of event i,
 *  strictly increasing along each process's events (so no two events of a
 *  lane share a position), and ncols = 1 + the largest; send_of[i] is the
 *  trace index of the send a delivery i delivers (matching key and sender) or CW_NO_EVENT; hl[i] is a
 *  set of HL_* bits; findings_of[i] lists the kinds of the findings whose
 *  event a is i (for tooltips), NULL if none.
 */
#include "export.h"
#include "cw_util.h"
#include "cw_status.h"
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HL_ANTICHAIN 0x01
#define HL_PAST 0x02
#define HL_FUTURE 0x04
#define HL_CONCURRENT 0x08
#define HL_FOCUS 0x10
#define HL_FINDING 0x20
#define HL_BAD_ARROW 0x40   /* deliveries: the arrow into it is part of a causal-order finding */

/* Diagram geometry, in SVG user units (px). */
#define G_LEFT 120       /* x of column 0 (lane labels to its left) */
#define G_TOP 60         /* y of lane 0 */
#define G_COL 56         /* column width */
#define G_LANE 72        /* lane height */
#define G_RIGHT 40       /* margin right of the last column */
#define G_R 7            /* event radius */
#define G_LEGEND 70      /* room for the legend under the lanes */

struct cw_export {
    cw_causal_t *c;            /* borrowed */
    const cw_trace_t *t;       /* borrowed, c's trace */
    char *title;               /* owned */
    size_t focus;              /* trace index or CW_NO_EVENT */
    size_t *col;               /* column per event */
    size_t ncols;
    size_t *send_of;           /* per event: matched send or CW_NO_EVENT */
    unsigned char *hl;         /* per event: HL_* bits */
    char **findings_of;        /* per event: "causal-order, gap" or NULL */
    size_t n_findings;         /* audit findings in all */
};


void cw_export_options_init(cw_export_options_t *o)
{
    o->title = NULL;
    o->focus = CW_NO_EVENT;
}

void cw_export_destroy(cw_export_t **p)
{
    if (!p || !*p)
        return;
    cw_export_t *x = *p;
    if (x->findings_of)
        for (size_t i = 0; i < cw_trace_count(x->t); i++)
            free(x->findings_of[i]);
    free(x->findings_of);
    free(x->title);
    free(x->col);
    free(x->send_of);
    free(x->hl);
    free(x);
    *p = NULL;
}

typedef struct {
    uint64_t sum;
    size_t i;
} lin_t;

static int cmp_lin(const void *a, const void *b)
{
    const lin_t *x = a, *y = b;
    if (x->sum != y->sum)
        return x->sum < y->sum ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* The next unplaced event of process p (its seq) and that event's rank in
 * the linear extension: the layout's min-heap, keyed by rank. */
typedef struct {
    size_t rank, p, seq;
} next_t;

static void heap_push(next_t *h, size_t *n, next_t v)
{
    size_t k = (*n)++;
    while (k > 0 && h[(k - 1) / 2].rank > v.rank) {
        h[k] = h[(k - 1) / 2];
        k = (k - 1) / 2;
    }
    h[k] = v;
}

static next_t heap_pop(next_t *h, size_t *n)
{
    next_t top = h[0], last = h[--*n];
    size_t k = 0;
    for (;;) {
        size_t c = 2 * k + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && h[c + 1].rank < h[c].rank)
            c++;
        if (h[c].rank >= last.rank)
            break;
        h[k] = h[c];
        k = c;
    }
    if (*n > 0)
        h[k] = last;
    return top;
}

/* Appends ", kind" to *s (or sets it). 0 or -1 if out of memory. */
static int note_append(char **s, const char *kind)
{
    if (*s && strstr(*s, kind))
        return 0;
    size_t old = *s ? strlen(*s) : 0;
    char *grown = realloc(*s, old + strlen(kind) + 3);
    if (!grown)
        return -1;
    if (old)
        strcpy(grown + old, ", ");
    strcpy(grown + (old ? old + 2 : 0), kind);
    *s = grown;
    return 0;
}

cw_export_t *cw_export_new(cw_causal_t *c, const cw_export_options_t *o, int *status)
{
    cw_export_options_t defaults;
    if (!o) {
        cw_export_options_init(&defaults);
        o = &defaults;
    }
    const cw_trace_t *t = cw_causal_trace(c);
    size_t n = cw_trace_count(t), alloc = n ? n : 1;
    size_t np = cw_trace_processes(t);
    lin_t *lin = NULL;
    size_t *rank = NULL;
    next_t *heap = NULL;
    size_t *rel = NULL, nrel = 0;
    cw_export_t *x = calloc(1, sizeof *x);
    if (!x)
        goto nomem;
    x->c = c;
    x->t = t;
    x->focus = o->focus;
    x->title = strdup(o->title ? o->title : "causeway-clockd");
    x->col = calloc(alloc, sizeof *x->col);
    x->send_of = malloc(alloc * sizeof *x->send_of);
    x->hl = calloc(alloc, 1);
    x->findings_of = calloc(alloc, sizeof *x->findings_of);
    lin = malloc(alloc * sizeof *lin);
    if (!x->title || !x->col || !x->send_of || !x->hl || !x->findings_of || !lin)
        goto nomem;
    /* Matched sends. */
    for (size_t i = 0; i < n; i++) {
        const cwc_event_t *e = cw_trace_event(t, i);
        size_t s;
        x->send_of[i] = CW_NO_EVENT;
        if (e->kind == CW_EV_DELIVER && cw_causal_send_of(c, e->msg, &s) == CW_OK
            && strcmp(cw_trace_event(t, s)->process, e->peers[0]) == 0)
            x->send_of[i] = s;
        lin[i] = (lin_t){.sum = cw_vc_sum(&e->vc), .i = i};
    }
    /* Columns: longest-path layering along a linear extension, except that
     * an event is placed only after its process predecessor: with broken
     * clocks (an own entry going 1, 2, 1) the extension by entry sums would
     * put a later event of a lane left of (or on top of) an earlier one.
     * heap holds each process's next unplaced event, smallest rank first;
     * with sound clocks that is the extension's order itself. */
    qsort(lin, n, sizeof *lin, cmp_lin);
    rank = malloc(alloc * sizeof *rank);
    heap = malloc((np ? np : 1) * sizeof *heap);
    if (!rank || !heap)
        goto nomem;
    for (size_t k = 0; k < n; k++)
        rank[lin[k].i] = k;
    size_t nh = 0;
    for (size_t p = 0; p < np; p++)
        if (cw_trace_process_count(t, p) > 0)
            heap_push(heap, &nh, (next_t){.rank = rank[cw_trace_process_event(t, p, 1)], .p = p, .seq = 1});
    unsigned char *placed = x->hl;   /* borrow hl as a "placed" flag, cleared below */
    while (nh > 0) {
        next_t top = heap_pop(heap, &nh);
        size_t p = top.p, seq = top.seq;
        size_t i = cw_trace_process_event(t, p, seq);
        size_t col = 0;
        if (seq > 1) {
            size_t prev = cw_trace_process_event(t, p, seq - 1);
            col = x->col[prev] + 1;
        }
        size_t s = x->send_of[i];
        if (s != CW_NO_EVENT && placed[s] && x->col[s] + 1 > col)
            col = x->col[s] + 1;
        x->col[i] = col;
        placed[i] = 1;
        if (col + 1 > x->ncols)
            x->ncols = col + 1;
        if (seq < cw_trace_process_count(t, p))
            heap_push(heap, &nh, (next_t){.rank = rank[cw_trace_process_event(t, p, seq + 1)], .p = p,
                                          .seq = seq + 1});
    }
    memset(x->hl, 0, alloc);
    /* Highlights: audit findings. */
    if (cw_causal_audit(c) != CW_OK)
        goto nomem;
    x->n_findings = cw_causal_findings(c);
    for (size_t k = 0; k < x->n_findings; k++) {
        const cw_finding_t *f = cw_causal_finding(c, k);
        x->hl[f->a] |= HL_FINDING;
        if (note_append(&x->findings_of[f->a], cw_finding_kind_name(f->kind)) < 0)
            goto nomem;
        if (f->kind == CW_FIND_CAUSAL_ORDER) {
            x->hl[f->a] |= HL_BAD_ARROW;
            if (f->b != CW_NO_EVENT)
                x->hl[f->b] |= HL_BAD_ARROW;
        }
    }
    if (x->focus != CW_NO_EVENT && x->focus < n) {
        static const struct { cw_relation_t rel; unsigned char bit; } rels[] = {
            {CW_REL_PAST, HL_PAST}, {CW_REL_FUTURE, HL_FUTURE}, {CW_REL_CONCURRENT, HL_CONCURRENT}};
        for (size_t r = 0; r < 3; r++) {
            if (cw_causal_related(c, x->focus, rels[r].rel, &rel, &nrel) != CW_OK)
                goto nomem;
            for (size_t k = 0; k < nrel; k++)
                x->hl[rel[k]] |= rels[r].bit;
            free(rel);
            rel = NULL;
        }
        x->hl[x->focus] |= HL_FOCUS;
    } else {
        x->focus = CW_NO_EVENT;
        /* Only the antichain is needed: skip the O(n^2) pair counts. */
        cw_stats_options_t so;
        cw_stats_options_init(&so);
        so.pairs_max = 0;
        const cwc_stats_t *st;
        if (cw_causal_stats(c, &so, &st) != CW_OK)
            goto nomem;
        for (size_t k = 0; k < st->width_lower; k++)
            x->hl[st->antichain[k]] |= HL_ANTICHAIN;
    }
    free(lin);
    free(rank);
    free(heap);
    if (status)
        *status = CW_OK;
    return x;
nomem:
    free(lin);
    free(rank);
    free(heap);
    free(rel);
    cw_export_destroy(&x);
    if (status)
        *status = CW_ERR_NOMEM;
    return NULL;
}

/* ---- ShiViz ---------------------------------------------------------------- */

/* Percent-encodes a message key so that it is one token: bytes <= 0x20,
 * >= 0x7f, '%' and '|'; a key that is exactly "-" becomes "%2D". */
static void put_msg_token(FILE *f, const char *msg)
{
    if (!msg || !*msg) {
        fputc('-', f);
        return;
    }
    if (strcmp(msg, "-") == 0) {
        fputs("%2D", f);
        return;
    }
    for (const unsigned char *c = (const unsigned char *) msg; *c; c++) {
        if (*c <= 0x20 || *c >= 0x7f || *c == '%' || *c == '|')
            fprintf(f, "%%%02X", *c);
        else
            fputc(*c, f);
    }
}

/* Escapes text for one ShiViz line: \\ \n \r \xHH (other controls) and
 * \u2028 / \u2029 (which end a line for JavaScript's '.'). */
static void put_text(FILE *f, const char *s)
{
    for (const unsigned char *c = (const unsigned char *) s; *c; c++) {
        if (*c == '\\')
            fputs("\\\\", f);
        else if (*c == '\n')
            fputs("\\n", f);
        else if (*c == '\r')
            fputs("\\r", f);
        else if (*c < 0x20 || *c == 0x7f)
            fprintf(f, "\\x%02X", *c);
        else if (c[0] == 0xE2 && c[1] == 0x80 && (c[2] == 0xA8 || c[2] == 0xA9)) {
            fputs(c[2] == 0xA8 ? "\\u2028" : "\\u2029", f);
            c += 2;
        } else
            fputc(*c, f);
    }
}

int cw_export_shiviz(const cw_export_t *x, FILE *f)
{
    fputs(CW_SHIVIZ_REGEX "\n\n", f);
    for (size_t i = 0; i < cw_trace_count(x->t); i++) {
        const cwc_event_t *e = cw_trace_event(x->t, i);
        fprintf(f, "%s ", cw_ev_kind_name(e->kind));
        put_msg_token(f, e->kind == CW_EV_LOCAL ? NULL : e->msg);
        fputc(' ', f);
        if (e->kind == CW_EV_LOCAL) {
            fputc('-', f);
        } else if (e->broadcast) {
            fputs("to=*", f);
        } else {
            fputs(e->kind == CW_EV_SEND ? "to=" : "from=", f);
            for (size_t k = 0; k < e->n_peers; k++)
                fprintf(f, "%s%s", k ? "," : "", e->peers[k]);
        }
        fprintf(f, " ts=%llu", (unsigned long long) e->ts_us);
        if (e->has_holdback)
            fprintf(f, " holdback_us=%llu", (unsigned long long) e->holdback_us);
        if (e->has_msg_clock) {
            fputs(" msg_clock=", f);
            cw_trace_clock_put_json(f, e->trace, &e->mvc);
        }
        fputs(" |", f);
        if (e->text) {
            fputc(' ', f);
            put_text(f, e->text);
        }
        fprintf(f, "\n%s ", e->process);
        cw_trace_clock_put_json(f, e->trace, &e->vc);
        fputc('\n', f);
    }
    fflush(f);
    return ferror(f) ? CW_ERR_IO : CW_OK;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes %HH in place; -1 on a bad escape or an encoded NUL. */
static int pct_decode(char *s)
{
    char *o = s;
    for (char *c = s; *c; c++) {
        if (*c != '%') {
            *o++ = *c;
            continue;
        }
        int hi = hexval(c[1]), lo = hi >= 0 ? hexval(c[2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return -1;
        *o++ = (char) (hi * 16 + lo);
        c += 2;
    }
    *o = '\0';
    return 0;
}

/* Undoes put_text in place; -1 on a bad escape. */
static int text_decode(char *s)
{
    char *o = s;
    for (char *c = s; *c; c++) {
        if (*c != '\\') {
            *o++ = *c;
            continue;
        }
        c++;
        switch (*c) {
        case '\\': *o++ = '\\'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 'x': {
            int hi = hexval(c[1]), lo = hi >= 0 ? hexval(c[2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -1;
            *o++ = (char) (hi * 16 + lo);
            c += 2;
            break;
        }
        case 'u':
            if (strncmp(c, "u2028", 5) == 0 || strncmp(c, "u2029", 5) == 0) {
                *o++ = (char) 0xE2;
                *o++ = (char) 0x80;
                *o++ = (char) (c[4] == '8' ? 0xA8 : 0xA9);
                c += 4;
                break;
            }
            return -1;
        default:
            return -1;
        }
    }
    *o = '\0';
    return 0;
}

/* Splits peers "a,b" in place into an array (malloc'd; caller frees). */
static int split_peers(char *list, const char ***out, size_t *n)
{
    size_t count = 1;
    for (char *c = list; *c; c++)
        if (*c == ',')
            count++;
    const char **arr = calloc(count, sizeof *arr);
    if (!arr)
        return CW_ERR_NOMEM;
    size_t k = 0;
    char *save = NULL;
    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        arr[k++] = tok;
    *out = arr;
    *n = k;
    return CW_OK;
}

/* Parses one event (description line + host line) and adds it; on error
 * *bad_line says which of the two lines (lineno or lineno + 1) is at fault. */
static int shiviz_event(cw_trace_t *t, char *desc, char *host_line, size_t lineno, size_t *bad_line,
                        char *err, size_t errlen)
{
    cwc_event_t ev;
    memset(&ev, 0, sizeof ev);
    int rc = CW_BAD_REQUEST;
    const char **peers = NULL;
    cw_json_t *clock_json = NULL, *mc_json = NULL;
    cw_clock_entry_msg_t *items = NULL, **ptrs = NULL, *mitems = NULL, **mptrs = NULL;
    char why[300] = "";
    char ex[80];   /* excerpts of bad input for messages */
    *bad_line = lineno;

    /* Text: after the first " |" (options hold no '|'). */
    char *bar = strstr(desc, " |");
    if (!bar) {
        cw_set_err(err, errlen, "expected \" |\" in the event line");
        goto out;
    }
    *bar = '\0';
    char *text = bar + 2;
    if (*text == ' ')
        text++;
    if (text_decode(text) < 0) {
        cw_set_err(err, errlen, "bad escape in the event text");
        goto out;
    }
    ev.text = *text ? text : NULL;

    char *save = NULL;
    char *kind = strtok_r(desc, " ", &save);
    char *msg = strtok_r(NULL, " ", &save);
    char *peer_tok = strtok_r(NULL, " ", &save);
    char *ts = strtok_r(NULL, " ", &save);
    if (!kind || !msg || !peer_tok || !ts) {
        cw_set_err(err, errlen, "expected \"KIND MSG PEERS ts=N\" in the event line");
        goto out;
    }
    ev.kind = cw_ev_kind_parse(kind);
    if (!ev.kind) {
        cw_set_err(err, errlen, "unknown event kind \"%s\"", cw_json_excerpt(kind, 40, ex, sizeof ex));
        goto out;
    }
    if (strcmp(msg, "-") != 0) {
        if (pct_decode(msg) < 0) {
            cw_set_err(err, errlen, "bad %%-escape in the message key");
            goto out;
        }
        ev.msg = msg;
    }
    if (strcmp(peer_tok, "-") == 0) {
        /* local: no peers */
    } else if (strcmp(peer_tok, "to=*") == 0) {
        ev.broadcast = 1;
    } else if (strncmp(peer_tok, "to=", 3) == 0 || strncmp(peer_tok, "from=", 5) == 0) {
        char *list = strchr(peer_tok, '=') + 1;
        if ((rc = split_peers(list, &peers, &ev.n_peers)) != CW_OK) {
            cw_set_err(err, errlen, "out of memory");
            goto out;
        }
        rc = CW_BAD_REQUEST;
        ev.peers = peers;
    } else {
        cw_set_err(err, errlen, "bad peers token \"%s\"", cw_json_excerpt(peer_tok, 60, ex, sizeof ex));
        goto out;
    }
    char *end;
    if (strncmp(ts, "ts=", 3) != 0 || ts[3] < '0' || ts[3] > '9'
        || (errno = 0, ev.ts_us = strtoull(ts + 3, &end, 10), *end || errno)) {
        cw_set_err(err, errlen, "expected ts=MICROSECONDS, found \"%s\"", cw_json_excerpt(ts, 60, ex, sizeof ex));
        goto out;
    }
    for (char *opt = strtok_r(NULL, " ", &save); opt; opt = strtok_r(NULL, " ", &save)) {
        if (strncmp(opt, "holdback_us=", 12) == 0 && opt[12] >= '0' && opt[12] <= '9') {
            errno = 0;
            ev.holdback_us = strtoull(opt + 12, &end, 10);
            if (*end || errno) {
                cw_set_err(err, errlen, "bad holdback_us");
                goto out;
            }
            ev.has_holdback = 1;
        } else if (strncmp(opt, "msg_clock=", 10) == 0) {
            size_t col;
            if (cw_json_parse(opt + 10, strlen(opt + 10), &mc_json, &col, why, sizeof why) != CW_OK
                || cw_clock_from_json(mc_json, "msg_clock", &mitems, &mptrs, &ev.n_msg_clock, why,
                                      sizeof why) != CW_OK) {
                cw_set_err(err, errlen, "msg_clock: %s", why);
                goto out;
            }
            ev.msg_clock = mptrs;
            ev.has_msg_clock = 1;
        } else {
            cw_set_err(err, errlen, "unknown option \"%s\"", cw_json_excerpt(opt, 60, ex, sizeof ex));
            goto out;
        }
    }

    /* Host line: "PROCESS {clock}". */
    *bad_line = lineno + 1;
    char *sp = strchr(host_line, ' ');
    if (!sp) {
        cw_set_err(err, errlen, "expected \"PROCESS {clock}\"");
        goto out;
    }
    *sp = '\0';
    ev.process = host_line;
    size_t col;
    if (cw_json_parse(sp + 1, strlen(sp + 1), &clock_json, &col, why, sizeof why) != CW_OK
        || cw_clock_from_json(clock_json, "clock", &items, &ptrs, &ev.n_clock, why, sizeof why) != CW_OK) {
        cw_set_err(err, errlen, "clock: %s", why);
        goto out;
    }
    ev.clock = ptrs;
    *bad_line = lineno;
    rc = cw_trace_add(t, &ev, lineno, err, errlen);
out:
    free(peers);
    free(items);
    free(ptrs);
    free(mitems);
    free(mptrs);
    cw_json_destroy(&clock_json);
    cw_json_destroy(&mc_json);
    return rc;
}

int cw_shiviz_load(cw_trace_t *t, const char *path, char *err, size_t errlen)
{
    int is_stdin = strcmp(path, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(path, "r");
    if (!f) {
        cw_set_err(err, errlen, "%s: %s", path, strerror(errno));
        return CW_ERR_IO;
    }
    char *line = NULL, *desc = NULL;
    size_t cap = 0, lineno = 0, desc_line = 0;
    int rc = CW_OK;
    ssize_t got;
    char why[400];
    while ((got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t) got;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (memchr(line, '\0', len)) {
            cw_set_err(err, errlen, "%s:%zu: NUL byte in line", path, lineno);
            rc = CW_BAD_REQUEST;
            break;
        }
        if (lineno == 1) {
            if (!len) {
                cw_set_err(err, errlen, "%s:1: expected the parser regular expression", path);
                rc = CW_BAD_REQUEST;
                break;
            }
            continue;
        }
        if (lineno == 2) {
            if (strspn(line, " \t") != len) {
                cw_set_err(err, errlen, "%s:2: multiple executions (a delimiter) are not supported", path);
                rc = CW_BAD_REQUEST;
                break;
            }
            continue;
        }
        if (!desc) {
            if (!len)
                continue;   /* blank lines between events */
            desc = strdup(line);
            desc_line = lineno;
            if (!desc) {
                rc = CW_ERR_NOMEM;
                cw_set_err(err, errlen, "out of memory");
                break;
            }
            continue;
        }
        size_t bad_line;
        rc = shiviz_event(t, desc, line, desc_line, &bad_line, why, sizeof why);
        free(desc);
        desc = NULL;
        if (rc != CW_OK) {
            cw_set_err(err, errlen, "%s:%zu: %s", path, bad_line, why);
            break;
        }
    }
    if (rc == CW_OK && desc) {
        cw_set_err(err, errlen, "%s:%zu: event line without its \"PROCESS {clock}\" line", path, desc_line);
        rc = CW_BAD_REQUEST;
    }
    if (rc == CW_OK && lineno < 2) {
        cw_set_err(err, errlen, "%s: not a ShiViz log (no header lines)", path);
        rc = CW_BAD_REQUEST;
    }
    if (rc == CW_OK && ferror(f)) {
        cw_set_err(err, errlen, "%s: read error: %s", path, strerror(errno));
        rc = CW_ERR_IO;
    }
    free(desc);
    free(line);
    if (!is_stdin)
        fclose(f);
    return rc;
}

/* ---- SVG / HTML ------------------------------------------------------------ */

/* Writes s (valid UTF-8) escaped for XML character data and attribute
 * values; characters that XML 1.0 forbids (controls, U+FFFE, U+FFFF) become
 * U+FFFD. */
static void xml(FILE *f, const char *s)
{
    for (const unsigned char *c = (const unsigned char *) (s ? s : ""); *c; c++) {
        switch (*c) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        case '\n': fputs("&#10;", f); break;
        case '\t': fputs("&#9;", f); break;
        default:
            if (*c < 0x20 || *c == 0x7f) {
                fputs("\xEF\xBF\xBD", f);
            } else if (c[0] == 0xEF && c[1] == 0xBF && (c[2] == 0xBE || c[2] == 0xBF)) {
                fputs("\xEF\xBF\xBD", f);   /* U+FFFE, U+FFFF: not XML characters */
                c += 2;
            } else {
                fputc(*c, f);
            }
        }
    }
}

static double ex(const cw_export_t *x, size_t i) { return G_LEFT + (double) x->col[i] * G_COL; }
static double ey(const cw_export_t *x, size_t i)
{
    return G_TOP + (double) cw_trace_event(x->t, i)->proc * G_LANE;
}

static const char *css =
    ".cw-title{font:bold 16px sans-serif}"
    ".lane line{stroke:#9a9a9a;stroke-width:1.5}"
    ".lane text.name{font:14px sans-serif;text-anchor:end;dominant-baseline:middle}"
    ".event .mark{stroke:#333;stroke-width:1.5;fill:#fff}"
    ".event.send .mark{fill:#333}"
    ".event.local .mark{fill:#bbb}"
    ".event.antichain .mark,.event.concurrent .mark{fill:#ff9f1c;stroke:#c66a00}"
    ".event.past .mark{fill:#2f6fdf;stroke:#1b4aa0}"
    ".event.future .mark{fill:#2ca02c;stroke:#1c6b1c}"
    ".event.focus .mark{fill:#000;stroke:#000;stroke-width:3}"
    ".event .ring{fill:none;stroke:#d62728;stroke-width:2.5}"
    ".event{cursor:pointer}"
    ".msg{stroke:#666;stroke-width:1.2;fill:none}"
    ".msg.bad{stroke:#d62728;stroke-dasharray:5 3;stroke-width:1.8}"
    ".legend text{font:12px sans-serif;dominant-baseline:middle}";

static void put_mark(FILE *f, cw_ev_kind_t kind, double cx, double cy)
{
    if (kind == CW_EV_LOCAL)
        fprintf(f, "<rect class=\"mark\" x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\"/>",
                cx - G_R, cy - G_R, 2 * G_R, 2 * G_R);
    else
        fprintf(f, "<circle class=\"mark\" cx=\"%.1f\" cy=\"%.1f\" r=\"%d\"/>", cx, cy, G_R);
}

static void put_svg(const cw_export_t *x, FILE *f, int inline_html)
{
    const cw_trace_t *t = x->t;
    size_t n = cw_trace_count(t), np = cw_trace_processes(t);
    double width = G_LEFT + (double) (x->ncols ? x->ncols - 1 : 0) * G_COL + G_RIGHT + 20;
    double lanes_bottom = G_TOP + (double) (np ? np - 1 : 0) * G_LANE;
    double height = lanes_bottom + 30 + G_LEGEND;
    if (width < 640)
        width = 640;
    if (!inline_html)
        fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n", f);
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"cw-diagram\" width=\"%.0f\" "
               "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\">\n", width, height, width, height);
    fputs("<title>", f);
    xml(f, x->title);
    fputs("</title>\n", f);
    fprintf(f, "<desc>Space-time diagram: %zu events, %zu processes, %zu audit findings. "
               "Generated by causeway-clockd.</desc>\n", n, np, x->n_findings);
    fprintf(f, "<style>%s</style>\n", css);
    fputs("<defs><marker id=\"cw-arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" "
          "markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" "
          "fill=\"#666\"/></marker><marker id=\"cw-arrow-bad\" viewBox=\"0 0 10 10\" refX=\"10\" "
          "refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path "
          "d=\"M0,0 L10,5 L0,10 z\" fill=\"#d62728\"/></marker></defs>\n", f);
    fputs("<text class=\"cw-title\" x=\"12\" y=\"24\">", f);
    xml(f, x->title);
    fputs("</text>\n", f);

    /* Messages first, so that events are drawn over them. */
    fputs("<g class=\"messages\">\n", f);
    for (size_t i = 0; i < n; i++) {
        size_t s = x->send_of[i];
        if (s == CW_NO_EVENT)
            continue;
        const cwc_event_t *e = cw_trace_event(t, i);
        double x1 = ex(x, s), y1 = ey(x, s), x2 = ex(x, i), y2 = ey(x, i);
        /* Stop the line at the receiver's mark. */
        double dx = x2 - x1, dy = y2 - y1, len = dx * dx + dy * dy;
        if (len > 0) {
            double k = (G_R + 1) / sqrt(len);
            x2 -= dx * k;
            y2 -= dy * k;
        }
        int bad = (x->hl[i] & HL_BAD_ARROW) != 0;
        fprintf(f, "<line class=\"msg%s\" data-msg=\"", bad ? " bad" : "");
        xml(f, e->msg);
        fprintf(f, "\" x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" marker-end=\"url(#%s)\"/>\n",
                x1, y1, x2, y2, bad ? "cw-arrow-bad" : "cw-arrow");
    }
    fputs("</g>\n", f);

    /* One lane per process, holding its events. */
    char id[CW_EVENT_ID_MAX], clock[512];
    for (size_t p = 0; p < np; p++) {
        const char *name = cw_trace_process_name(t, p);
        double y = G_TOP + (double) p * G_LANE;
        fputs("<g class=\"lane\" data-process=\"", f);
        xml(f, name);
        fprintf(f, "\">\n<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\"/>"
                   "<text class=\"name\" x=\"%d\" y=\"%.1f\">", G_LEFT - 24, y, width - G_RIGHT / 2.0, y,
                G_LEFT - 30, y);
        xml(f, name);
        fputs("</text>\n", f);
        size_t count = cw_trace_process_count(t, p);
        for (size_t seq = 1; seq <= count; seq++) {
            size_t i = cw_trace_process_event(t, p, seq);
            const cwc_event_t *e = cw_trace_event(t, i);
            unsigned hl = x->hl[i];
            fprintf(f, "<g class=\"event %s%s%s%s%s%s%s\" data-id=\"", cw_ev_kind_name(e->kind),
                    hl & HL_ANTICHAIN ? " antichain" : "", hl & HL_PAST ? " past" : "",
                    hl & HL_FUTURE ? " future" : "", hl & HL_CONCURRENT ? " concurrent" : "",
                    hl & HL_FOCUS ? " focus" : "", hl & HL_FINDING ? " finding" : "");
            xml(f, cw_event_id(e, id, sizeof id));
            fputs("\" data-clock=\"", f);
            {
                char *buf = NULL;
                size_t blen = 0;
                FILE *m = open_memstream(&buf, &blen);
                if (m) {
                    cw_trace_clock_put_json(m, e->trace, &e->vc);
                    fclose(m);
                    xml(f, buf);
                }
                free(buf);
            }
            fputs("\"><title>", f);
            xml(f, id);
            fprintf(f, " %s", cw_ev_kind_name(e->kind));
            if (e->kind != CW_EV_LOCAL) {
                fputc(' ', f);
                xml(f, e->msg);
                fputs(e->kind == CW_EV_SEND ? " to " : " from ", f);
                if (e->broadcast)
                    fputs("everyone", f);
                for (size_t k = 0; k < e->n_peers; k++) {
                    fputs(k ? "," : "", f);
                    xml(f, e->peers[k]);
                }
            }
            fputs("&#10;", f);
            xml(f, cw_trace_clock_format(e->trace, &e->vc, clock, sizeof clock));
            if (e->text) {
                fputs("&#10;", f);
                xml(f, e->text);
            }
            if (x->findings_of[i]) {
                fputs("&#10;audit: ", f);
                xml(f, x->findings_of[i]);
            }
            fputs("</title>", f);
            put_mark(f, e->kind, ex(x, i), y);
            if (hl & HL_FINDING)
                fprintf(f, "<circle class=\"ring\" cx=\"%.1f\" cy=\"%.1f\" r=\"%d\"/>", ex(x, i), y, G_R + 5);
            fputs("</g>\n", f);
        }
        fputs("</g>\n", f);
    }

    /* Legend. */
    double ly = lanes_bottom + 40;
    fprintf(f, "<g class=\"legend\" transform=\"translate(12,%.1f)\">\n", ly);
    struct { const char *cls; cw_ev_kind_t kind; const char *label; } items[] = {
        {"event send", CW_EV_SEND, "send"},
        {"event deliver", CW_EV_DELIVER, "deliver"},
        {"event local", CW_EV_LOCAL, "local"},
        {x->focus == CW_NO_EVENT ? "event deliver antichain" : "event deliver concurrent", CW_EV_DELIVER,
         x->focus == CW_NO_EVENT ? "largest antichain found (mutually concurrent)" : "concurrent with focus"},
    };
    double lx = 10;
    for (size_t k = 0; k < sizeof items / sizeof items[0]; k++) {
        fprintf(f, "<g class=\"%s\">", items[k].cls);
        put_mark(f, items[k].kind, lx, 0);
        fprintf(f, "</g><text x=\"%.1f\" y=\"0\">%s</text>\n", lx + 14, items[k].label);
        lx += 40 + 7.0 * (double) strlen(items[k].label);
    }
    double l2 = 24;
    lx = 10;
    if (x->focus != CW_NO_EVENT) {
        fprintf(f, "<g class=\"event deliver past\">");
        put_mark(f, CW_EV_DELIVER, lx, l2);
        fprintf(f, "</g><text x=\"%.1f\" y=\"%.1f\">causal past</text>\n", lx + 14, l2);
        lx += 120;
        fprintf(f, "<g class=\"event deliver future\">");
        put_mark(f, CW_EV_DELIVER, lx, l2);
        fprintf(f, "</g><text x=\"%.1f\" y=\"%.1f\">causal future</text>\n", lx + 14, l2);
        lx += 130;
    }
    fprintf(f, "<g class=\"event deliver\"><circle class=\"ring\" cx=\"%.1f\" cy=\"%.1f\" r=\"%d\"/>",
            lx, l2, G_R + 3);
    put_mark(f, CW_EV_DELIVER, lx, l2);
    fprintf(f, "</g><text x=\"%.1f\" y=\"%.1f\">audit finding (red dashed arrow: causal-order "
               "violation)</text>\n", lx + 16, l2);
    fputs("</g>\n</svg>\n", f);
}

int cw_export_svg(const cw_export_t *x, FILE *f)
{
    put_svg(x, f, 0);
    fflush(f);
    return ferror(f) ? CW_ERR_IO : CW_OK;
}

/* The page's script. Clocks are read into Maps (own keys only): a node named
 * "constructor", "toString" or "__proto__" must not find Object.prototype's
 * members (docs/CLOCKD.md, "Space-time diagram"). A URL fragment
 * #event=ID selects that event on load, as a click on it would. */
static const char *html_script =
    "(function(){\n"
    "function clock(g){var o=JSON.parse(g.getAttribute('data-clock')),m=new Map();\n"
    " Object.keys(o).forEach(function(k){m.set(k,o[k]);});return m;}\n"
    "function cmp(a,b){var lt=false,gt=false;\n"
    " a.forEach(function(x,k){var y=b.has(k)?b.get(k):0;if(x<y)lt=true;if(x>y)gt=true;});\n"
    " b.forEach(function(y,k){var x=a.has(k)?a.get(k):0;if(x<y)lt=true;if(x>y)gt=true;});\n"
    " return lt&&gt?'concurrent':lt?'before':gt?'after':'equal';}\n"
    "var evs=Array.prototype.slice.call(document.querySelectorAll('svg g.lane g.event'));\n"
    "var out=document.getElementById('cw-selection');\n"
    "evs.forEach(function(g){g.addEventListener('click',function(){\n"
    " var c=clock(g),n={past:0,future:0,concurrent:0};\n"
    " evs.forEach(function(h){['antichain','past','future','concurrent','focus'].forEach(\n"
    "  function(k){h.classList.remove(k);});\n"
    "  if(h===g){h.classList.add('focus');return;}\n"
    "  var r=cmp(clock(h),c);\n"
    "  var k=r==='before'?'past':r==='after'?'future':r==='concurrent'?'concurrent':null;\n"
    "  if(k){h.classList.add(k);n[k]++;}});\n"
    " out.textContent=g.getAttribute('data-id')+' '+g.getAttribute('data-clock')+': '+n.past+\n"
    "  ' in its past (blue), '+n.future+' in its future (green), '+n.concurrent+' concurrent (orange)';\n"
    "});});\n"
    "var h=decodeURIComponent(location.hash.slice(1));\n"
    "if(h.indexOf('event=')===0){var id=h.slice(6);\n"
    " evs.forEach(function(g){if(g.getAttribute('data-id')===id)g.dispatchEvent(new MouseEvent('click'));});}\n"
    "})();\n";

int cw_export_html(const cw_export_t *x, FILE *f)
{
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>", f);
    xml(f, x->title);
    fputs("</title>\n<style>body{font-family:sans-serif;margin:16px}#cw-selection{margin:8px 0;"
          "min-height:1.2em}</style>\n</head>\n<body>\n<h1>", f);
    xml(f, x->title);
    fprintf(f, "</h1>\n<p>%zu events, %zu processes, %zu audit findings. Hover over an event for "
               "its clock; click it to colour its causal past, future and concurrent events.</p>\n"
               "<p id=\"cw-selection\"></p>\n",
            cw_trace_count(x->t), cw_trace_processes(x->t), x->n_findings);
    put_svg(x, f, 1);
    fprintf(f, "<script>\n%s</script>\n</body>\n</html>\n", html_script);
    fflush(f);
    return ferror(f) ? CW_ERR_IO : CW_OK;
}
