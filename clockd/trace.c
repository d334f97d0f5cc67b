/*  trace: see trace.h.
 *
 *  Storage. Each event lives in its own heap slot (so cwc_event_t pointers
 *  stay valid while the trace grows); the slot owns the strings, a cw_clock_t
 *  for the clock (reused from common/: it keeps entries sorted and drops
 *  zeros on merge) and, for deliveries that carry it, one for the message's
 *  clock. The public cwc_event_t inside the slot points into that storage.
 *
 *  Invariants: slots[i]->ev.proc < n_procs; procs[p].events holds the trace
 *  indexes of p's events in insertion order and procs[p].events[k] has
 *  seq k + 1; names maps every process name to its index.
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
    char *process;            /* owned */
    char *msg;                /* owned ("" for local) */
    char *text;               /* owned, NULL = none */
    char **peers;             /* owned array of owned strings */
    cw_clock_t *clock;        /* owned */
    cw_clock_t *msg_clock;    /* owned, NULL unless has_msg_clock */
} slot_t;

typedef struct {
    char *name;               /* owned */
    size_t *events;           /* trace indexes, insertion order */
    size_t n, cap;
} proc_t;

struct cw_trace {
    slot_t **slots;           /* events in insertion order */
    size_t n, cap;
    proc_t *procs;            /* processes in order of first appearance */
    size_t n_procs, cap_procs;
    cw_strmap_t *names;       /* process name -> index in procs */
};


cw_trace_t *cw_trace_new(void)
{
    cw_trace_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->names = cw_strmap_new();
    if (!t->names) {
        free(t);
        return NULL;
    }
    return t;
}

static void slot_free(slot_t *s)
{
    if (!s)
        return;
    free(s->process);
    free(s->msg);
    free(s->text);
    for (size_t i = 0; i < s->ev.n_peers; i++)
        free(s->peers[i]);
    free(s->peers);
    cw_clock_destroy(&s->clock);
    cw_clock_destroy(&s->msg_clock);
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
    for (size_t i = 0; i < t->n_procs; i++) {
        free(t->procs[i].name);
        free(t->procs[i].events);
    }
    free(t->procs);
    cw_strmap_destroy(&t->names);
    free(t);
    *p = NULL;
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
    p->name = strdup(name);
    if (!p->name)
        return CW_ERR_NOMEM;
    if (cw_strmap_put(t->names, name, t->n_procs) != CW_OK) {
        free(p->name);
        return CW_ERR_NOMEM;
    }
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

int cw_trace_add(cw_trace_t *t, const cwc_event_t *ev, size_t line, char *err, size_t errlen)
{
    int rc = cw_trace_check(ev, err, errlen);
    if (rc != CW_OK)
        return rc;
    int nomem = 0;
    slot_t *s = calloc(1, sizeof *s);
    if (!s)
        goto nomem;
    s->process = dup_or_null(ev->process, &nomem);
    s->msg = dup_or_null(ev->kind == CW_EV_LOCAL ? "" : ev->msg, &nomem);
    s->text = dup_or_null(ev->text && *ev->text ? ev->text : NULL, &nomem);
    s->clock = cw_clock_new();
    if (nomem || !s->clock)
        goto nomem;
    if (ev->n_peers) {
        s->peers = calloc(ev->n_peers, sizeof *s->peers);
        if (!s->peers)
            goto nomem;
        s->ev.n_peers = ev->n_peers;   /* so slot_free frees what was copied */
        for (size_t i = 0; i < ev->n_peers; i++)
            if (!(s->peers[i] = strdup(ev->peers[i])))
                goto nomem;
    }
    if (cw_clock_merge(s->clock, ev->clock, ev->n_clock) != CW_OK)
        goto nomem;
    if (ev->has_msg_clock) {
        s->msg_clock = cw_clock_new();
        if (!s->msg_clock || cw_clock_merge(s->msg_clock, ev->msg_clock, ev->n_msg_clock) != CW_OK)
            goto nomem;
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
    cwc_event_t *e = &s->ev;
    e->process = s->process;
    e->kind = ev->kind;
    e->n_clock = cw_clock_entries(s->clock, &e->clock);
    e->msg = s->msg;
    e->peers = (const char *const *) s->peers;
    e->n_peers = ev->n_peers;
    e->ts_us = ev->ts_us;
    e->text = s->text;
    e->has_holdback = ev->has_holdback;
    e->holdback_us = ev->has_holdback ? ev->holdback_us : 0;
    e->has_msg_clock = ev->has_msg_clock;
    if (s->msg_clock)
        e->n_msg_clock = cw_clock_entries(s->msg_clock, &e->msg_clock);
    e->broadcast = ev->kind == CW_EV_SEND && ev->broadcast;
    e->proc = p;
    e->seq = pr->n + 1;
    e->line = line;
    pr->events[pr->n++] = t->n;
    t->slots[t->n++] = s;
    return CW_OK;
nomem:
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

/* The member or NULL; JSON null counts as absent. */
static const cw_json_t *member(const cw_json_t *obj, const char *key)
{
    const cw_json_t *v = cw_json_get(obj, key);
    return cw_json_type(v) == CW_JSON_NULL ? NULL : v;
}

static int want_string(const cw_json_t *obj, const char *key, int required, const char **out,
                       char *err, size_t errlen)
{
    const cw_json_t *v = member(obj, key);
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

static int want_uint(const cw_json_t *obj, const char *key, uint64_t *out, int *present,
                     char *err, size_t errlen)
{
    const cw_json_t *v = member(obj, key);
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
    if ((rc = want_string(root, "process", 1, &ev.process, err, errlen)) != CW_OK)
        goto out;
    if ((rc = want_string(root, "kind", 1, &kind, err, errlen)) != CW_OK)
        goto out;
    ev.kind = cw_ev_kind_parse(kind);
    if (!ev.kind) {
        char ex[64];
        cw_set_err(err, errlen, "kind: \"%s\" is not send, deliver or local", cw_json_excerpt(kind, 40, ex, sizeof ex));
        rc = CW_BAD_REQUEST;
        goto out;
    }
    const cw_json_t *clock = member(root, "clock");
    if (!clock) {
        cw_set_err(err, errlen, "clock: missing");
        rc = CW_BAD_REQUEST;
        goto out;
    }
    if ((rc = cw_clock_from_json(clock, "clock", &clock_items, &clock_ptrs, &ev.n_clock, err, errlen)) != CW_OK)
        goto out;
    ev.clock = clock_ptrs;
    if ((rc = want_string(root, "msg", 0, &ev.msg, err, errlen)) != CW_OK)
        goto out;
    const cw_json_t *jp = member(root, "peers");
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
    if ((rc = want_uint(root, "ts_us", &ev.ts_us, NULL, err, errlen)) != CW_OK)
        goto out;
    if ((rc = want_string(root, "text", 0, &ev.text, err, errlen)) != CW_OK)
        goto out;
    if ((rc = want_uint(root, "holdback_us", &ev.holdback_us, &ev.has_holdback, err, errlen)) != CW_OK)
        goto out;
    const cw_json_t *mc = member(root, "msg_clock");
    if (mc) {
        if ((rc = cw_clock_from_json(mc, "msg_clock", &mc_items, &mc_ptrs, &ev.n_msg_clock, err, errlen)) != CW_OK)
            goto out;
        ev.msg_clock = mc_ptrs;
        ev.has_msg_clock = 1;
    }
    const cw_json_t *bc = member(root, "broadcast");
    if (bc) {
        if (cw_json_bool(bc) < 0) {
            cw_set_err(err, errlen, "broadcast: expected true or false");
            rc = CW_BAD_REQUEST;
            goto out;
        }
        ev.broadcast = cw_json_bool(bc);
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

static void put_event(FILE *f, const cwc_event_t *ev)
{
    fputs("{\"process\":", f);
    cw_json_put_string(f, ev->process);
    fprintf(f, ",\"kind\":\"%s\",\"clock\":", cw_ev_kind_name(ev->kind));
    cw_clock_put_json(f, ev->clock, ev->n_clock);
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
        cw_clock_put_json(f, ev->msg_clock, ev->n_msg_clock);
    }
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
