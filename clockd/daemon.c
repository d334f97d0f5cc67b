/*  daemon: see daemon.h.
 *
 *  Invariants: trace holds exactly the store's rows with id <= last_id, in
 *  id order; every reply is built in handle() and packed before anything
 *  is sent, so a failure to pack never leaves a half reply on the wire.
 */
#include "daemon.h"
#include "causal.h"
#include "evstore.h"
#include "trace.h"
#include "cw_envelope.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "cw_sec.h"

typedef Causeway__V1__ClockdRequest request_t;
typedef Causeway__V1__ClockdReply reply_t;
typedef Causeway__V1__ClockEvent event_msg_t;
typedef Causeway__V1__ClockFinding finding_msg_t;

struct cw_clockd {
    cw_clockd_config_t cfg;   /* copy; strings below */
    char *bind;               /* owned copy of cfg.bind */
    char *db_path;            /* owned copy of cfg.db */
    void *ctx;                /* zmq context, owned */
    void *sock;               /* ROUTER, owned */
    char endpoint[256];       /* resolved endpoint */
    cw_evstore_t *store;      /* owned */
    cw_trace_t *trace;        /* owned; mirrors the store */
    uint64_t last_id;         /* last store row in trace */
    cw_zap_t *zap;            /* CURVE: ZAP handler; NULL: plain */
    volatile sig_atomic_t *reload; /* set by SIGHUP: re-read the users directory */
};


void cw_clockd_config_defaults(cw_clockd_config_t *cfg)
{
    cfg->bind = CW_CLOCKD_DEFAULT_BIND;
    cfg->db = CW_CLOCKD_DEFAULT_DB;
    cfg->max_frame = 4u << 20;
    cfg->max_findings = 1000;
    cfg->curve_secret = NULL;
    cfg->users = NULL;
}

void cw_clockd_destroy(cw_clockd_t **p)
{
    if (!p || !*p)
        return;
    cw_clockd_t *d = *p;
    if (d->sock)
        zmq_close(d->sock);
    cw_zap_destroy(&d->zap);
    if (d->ctx)
        zmq_ctx_term(d->ctx);
    cw_evstore_close(&d->store);
    cw_trace_destroy(&d->trace);
    free(d->bind);
    free(d->db_path);
    free(d);
    *p = NULL;
}

cw_clockd_t *cw_clockd_new(const cw_clockd_config_t *cfg, char *err, size_t errlen)
{
    cw_clockd_t *d = calloc(1, sizeof *d);
    if (!d) {
        cw_set_err(err, errlen, "out of memory");
        return NULL;
    }
    d->cfg = *cfg;
    d->bind = strdup(cfg->bind ? cfg->bind : CW_CLOCKD_DEFAULT_BIND);
    d->db_path = strdup(cfg->db ? cfg->db : CW_CLOCKD_DEFAULT_DB);
    d->trace = cw_trace_new();
    if (!d->bind || !d->db_path || !d->trace) {
        cw_set_err(err, errlen, "out of memory");
        goto fail;
    }
    d->cfg.bind = d->bind;
    d->cfg.db = d->db_path;
    if (!d->cfg.max_frame)
        d->cfg.max_frame = 4u << 20;
    if (!d->cfg.max_findings)
        d->cfg.max_findings = 1000;
    int st;
    d->store = cw_evstore_open(d->db_path, 0, &st, err, errlen);
    if (!d->store)
        goto fail;
    if (cw_evstore_load(d->store, d->trace, &d->last_id, err, errlen) != CW_OK)
        goto fail;
    d->ctx = zmq_ctx_new();
    if (!d->ctx) {
        cw_set_err(err, errlen, "zmq_ctx_new: %s", zmq_strerror(errno));
        goto fail;
    }
    d->sock = zmq_socket(d->ctx, ZMQ_ROUTER);
    if (!d->sock) {
        cw_set_err(err, errlen, "zmq_socket: %s", zmq_strerror(errno));
        goto fail;
    }
    int linger = 1000;
    int64_t maxmsg = (int64_t) d->cfg.max_frame * 2 + 1024;   /* hard guard; TOO_LARGE below it */
    zmq_setsockopt(d->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(d->sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (cfg->curve_secret) {
        cw_keypair_t kp;
        if (cw_keypair_load(cfg->curve_secret, true, &kp, err, errlen) != 0)
            goto fail;
        if (!cfg->users) {
            cw_set_err(err, errlen, "CURVE needs a users directory");
            goto fail;
        }
        /* The handler first: no handshake without it. */
        if (!(d->zap = cw_zap_new(d->ctx, cfg->users, err, errlen)) ||
            cw_curve_server_apply(d->sock, &kp, err, errlen) != 0)
            goto fail;
        CW_INFO("CURVE on: server key %s, %zu keys from %s", kp.public_txt,
                cw_zap_key_count(d->zap), cfg->users);
        explicit_bzero(&kp, sizeof kp);
    }
    if (zmq_bind(d->sock, d->bind) != 0) {
        cw_set_err(err, errlen, "cannot bind %s: %s", d->bind, zmq_strerror(errno));
        goto fail;
    }
    size_t len = sizeof d->endpoint;
    if (zmq_getsockopt(d->sock, ZMQ_LAST_ENDPOINT, d->endpoint, &len) != 0)
        snprintf(d->endpoint, sizeof d->endpoint, "%s", d->bind);
    CW_INFO("%zu events loaded from %s", cw_trace_count(d->trace), d->db_path);
    return d;
fail:
    cw_clockd_destroy(&d);
    return NULL;
}

const char *cw_clockd_endpoint(const cw_clockd_t *d) { return d->endpoint; }
size_t cw_clockd_events(const cw_clockd_t *d) { return cw_trace_count(d->trace); }

/* ---- requests ---------------------------------------------------------------- */

/* A stored clock as wire entries (cw_trace_clock_wire). */
typedef struct {
    cw_clock_entry_msg_t *items, **ptrs;
} wire_t;

/* Storage that a reply points into while it is packed. */
typedef struct {
    finding_msg_t *findings;   /* array */
    finding_msg_t **ptrs;
    char (*ids)[2][CW_EVENT_ID_MAX];
    wire_t (*wire)[2];             /* per finding: clock a, clock b */
    size_t n;
    cw_causal_t *causal;
} reply_mem_t;

static void reply_mem_free(reply_mem_t *m)
{
    free(m->findings);
    free(m->ptrs);
    free(m->ids);
    if (m->wire)
        for (size_t i = 0; i < m->n; i++)
            for (int k = 0; k < 2; k++) {
                free(m->wire[i][k].items);
                free(m->wire[i][k].ptrs);
            }
    free(m->wire);
    cw_causal_destroy(&m->causal);
}

static void fill_totals(const cw_clockd_t *d, reply_t *r)
{
    r->total_events = cw_trace_count(d->trace);
    r->processes = (uint32_t) cw_trace_processes(d->trace);
}

/* The one place that builds an error reply. */
static void reply_error(const cw_clockd_t *d, reply_t *r, int status, const char *detail)
{
    r->status = (Causeway__V1__Status) status;
    r->detail = (char *) detail;
    fill_totals(d, r);
    CW_DEBUG("request %llu: %s: %s", (unsigned long long) r->request_id,
             cw_status_name(status), detail);
}

static int do_report(cw_clockd_t *d, const Causeway__V1__ClockEventBatch *b, reply_t *r,
                     char *detail, size_t dlen)
{
    size_t n = b ? b->n_events : 0;
    cwc_event_t *evs = calloc(n ? n : 1, sizeof *evs);
    const cwc_event_t **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    int rc = CW_OK;
    if (!evs || !ptrs) {
        rc = CW_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const event_msg_t *m = b->events[i];
        cwc_event_t *e = &evs[i];
        e->process = m->process;
        switch (m->kind) {
        case CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_SEND: e->kind = CW_EV_SEND; break;
        case CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_DELIVER: e->kind = CW_EV_DELIVER; break;
        case CAUSEWAY__V1__CLOCK_EVENT__KIND__KIND_LOCAL: e->kind = CW_EV_LOCAL; break;
        default: e->kind = 0; break;
        }
        e->clock = m->clock;
        e->n_clock = m->n_clock;
        e->msg = m->msg;
        e->peers = (const char *const *) m->peers;
        e->n_peers = m->n_peers;
        e->ts_us = m->ts_us;
        e->text = m->text && *m->text ? m->text : NULL;
        e->has_holdback = m->holdback_us != 0;
        e->holdback_us = m->holdback_us;
        e->has_msg_clock = m->n_msg_clock != 0;
        e->msg_clock = m->msg_clock;
        e->n_msg_clock = m->n_msg_clock;
        e->broadcast = m->broadcast;
        e->late = m->late;
        char why[400];
        if (cw_trace_check(e, why, sizeof why) != CW_OK) {
            snprintf(detail, dlen, "event %zu: %s", i, why);
            reply_error(d, r, CW_BAD_REQUEST, detail);
            goto out;
        }
        ptrs[i] = e;
    }
    char why[400];
    rc = cw_evstore_append(d->store, ptrs, n, cw_now_us(), why, sizeof why);
    if (rc == CW_STORE_ERROR || rc == CW_ERR_INVALID) {
        CW_ERROR("%s", why);
        snprintf(detail, dlen, "store: %s", why);
        reply_error(d, r, CW_STORE_ERROR, detail);
        rc = CW_OK;
        goto out;
    }
    if (rc != CW_OK)
        goto out;
    rc = cw_evstore_load(d->store, d->trace, &d->last_id, why, sizeof why);
    if (rc == CW_ERR_NOMEM)
        goto out;
    if (rc != CW_OK) {
        /* Stored, but the mirror could not read it back: a bug or a foreign writer. */
        CW_ERROR("reloading the store: %s", why);
        snprintf(detail, dlen, "stored, but reloading failed: %s", why);
        reply_error(d, r, CW_INTERNAL, detail);
        rc = CW_OK;
        goto out;
    }
    r->status = CAUSEWAY__V1__STATUS__STATUS_OK;
    r->stored = (uint32_t) n;
    fill_totals(d, r);
    CW_DEBUG("stored %zu events (%zu in all)", n, cw_trace_count(d->trace));
out:
    free(evs);
    free(ptrs);
    return rc;
}

static Causeway__V1__ClockFinding__Kind finding_kind(cw_finding_kind_t k)
{
    switch (k) {
    case CW_FIND_CAUSAL_ORDER: return CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_CAUSAL_ORDER;
    case CW_FIND_DUPLICATE: return CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_DUPLICATE;
    case CW_FIND_GAP: return CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_GAP;
    case CW_FIND_CLOCK_RULE: return CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_CLOCK_RULE;
    case CW_FIND_UNMATCHED: return CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_UNMATCHED;
    }
    return CAUSEWAY__V1__CLOCK_FINDING__KIND__KIND_UNSPECIFIED;
}

static int do_audit(cw_clockd_t *d, const Causeway__V1__ClockdAudit *a, reply_t *r, reply_mem_t *m)
{
    m->causal = cw_causal_new(d->trace);
    if (!m->causal || cw_causal_audit(m->causal) != CW_OK)
        return CW_ERR_NOMEM;
    size_t total = cw_causal_findings(m->causal);
    size_t limit = d->cfg.max_findings;
    if (a && a->max_findings && a->max_findings < limit)
        limit = a->max_findings;
    size_t n = total < limit ? total : limit;
    if (n) {
        m->findings = calloc(n, sizeof *m->findings);
        m->ptrs = calloc(n, sizeof *m->ptrs);
        m->ids = calloc(n, sizeof *m->ids);
        m->wire = calloc(n, sizeof *m->wire);
        if (!m->findings || !m->ptrs || !m->ids || !m->wire)
            return CW_ERR_NOMEM;
        m->n = n;   /* so reply_mem_free frees what was built */
    }
    for (size_t i = 0; i < n; i++) {
        const cw_finding_t *f = cw_causal_finding(m->causal, i);
        finding_msg_t *fm = &m->findings[i];
        causeway__v1__clock_finding__init(fm);
        const cwc_event_t *ea = cw_trace_event(d->trace, f->a);
        fm->kind = finding_kind(f->kind);
        fm->process = (char *) cw_trace_process_name(d->trace, f->process);
        fm->event_a = cw_event_id(ea, m->ids[i][0], sizeof m->ids[i][0]);
        wire_t *w = m->wire[i];
        if (cw_trace_clock_wire(d->trace, &ea->vc, &w[0].items, &w[0].ptrs) != CW_OK)
            return CW_ERR_NOMEM;
        fm->clock_a = w[0].ptrs;
        fm->n_clock_a = ea->vc.n;
        if (f->b != CW_NO_EVENT) {
            const cwc_event_t *eb = cw_trace_event(d->trace, f->b);
            fm->event_b = cw_event_id(eb, m->ids[i][1], sizeof m->ids[i][1]);
            if (cw_trace_clock_wire(d->trace, &eb->vc, &w[1].items, &w[1].ptrs) != CW_OK)
                return CW_ERR_NOMEM;
            fm->clock_b = w[1].ptrs;
            fm->n_clock_b = eb->vc.n;
        }
        fm->msg = (char *) f->msg;
        fm->detail = (char *) f->detail;
        m->ptrs[i] = fm;
    }
    m->n = n;
    r->status = CAUSEWAY__V1__STATUS__STATUS_OK;
    r->findings = m->ptrs;
    r->n_findings = n;
    r->total_findings = (uint32_t) total;
    r->late = cw_causal_late(m->causal);
    fill_totals(d, r);
    return CW_OK;
}

static int do_compare(cw_clockd_t *d, const Causeway__V1__ClockdCompare *c, reply_t *r,
                      char *detail, size_t dlen)
{
    size_t a, b;
    if (cw_trace_find(d->trace, c->a, &a, detail, dlen) != CW_OK
        || cw_trace_find(d->trace, c->b, &b, detail, dlen) != CW_OK) {
        reply_error(d, r, CW_BAD_REQUEST, detail);
        return CW_OK;
    }
    const cwc_event_t *ea = cw_trace_event(d->trace, a), *eb = cw_trace_event(d->trace, b);
    switch (cw_vc_compare(&ea->vc, &eb->vc)) {
    case CW_CLOCK_EQUAL: r->order = CAUSEWAY__V1__CLOCK_ORDER__CLOCK_ORDER_EQUAL; break;
    case CW_CLOCK_BEFORE: r->order = CAUSEWAY__V1__CLOCK_ORDER__CLOCK_ORDER_BEFORE; break;
    case CW_CLOCK_AFTER: r->order = CAUSEWAY__V1__CLOCK_ORDER__CLOCK_ORDER_AFTER; break;
    case CW_CLOCK_CONCURRENT: r->order = CAUSEWAY__V1__CLOCK_ORDER__CLOCK_ORDER_CONCURRENT; break;
    }
    r->status = CAUSEWAY__V1__STATUS__STATUS_OK;
    fill_totals(d, r);
    return CW_OK;
}

int cw_clockd_handle(cw_clockd_t *d, const void *frame, size_t len, uint8_t **out, size_t *out_len)
{
    reply_t r;
    causeway__v1__clockd_reply__init(&r);
    reply_mem_t mem;
    memset(&mem, 0, sizeof mem);
    char detail[600];
    int rc = CW_OK;
    request_t *req = NULL;
    *out = NULL;
    *out_len = 0;
    if (len > d->cfg.max_frame) {
        snprintf(detail, sizeof detail, "frame of %zu bytes is over the limit of %zu", len, d->cfg.max_frame);
        reply_error(d, &r, CW_TOO_LARGE, detail);
        goto reply;
    }
    req = causeway__v1__clockd_request__unpack(NULL, len, frame);
    if (!req) {
        reply_error(d, &r, CW_BAD_REQUEST, "undecodable frame (not a ClockdRequest)");
        goto reply;
    }
    r.request_id = req->request_id;
    if (req->request_id == 0
        && (req->version != 1 || req->body_case != CAUSEWAY__V1__CLOCKD_REQUEST__BODY_REPORT)) {
        /* No reply wanted, and only a report does something without one. */
        CW_WARN("dropped a request without request_id (version %u, body %d)", req->version,
                (int) req->body_case);
        goto done;
    }
    if (req->version != 1) {
        snprintf(detail, sizeof detail, "protocol version %u; this daemon speaks 1", req->version);
        reply_error(d, &r, CW_UNSUPPORTED_VERSION, detail);
        goto reply;
    }
    switch (req->body_case) {
    case CAUSEWAY__V1__CLOCKD_REQUEST__BODY_REPORT:
        rc = do_report(d, req->report, &r, detail, sizeof detail);
        break;
    case CAUSEWAY__V1__CLOCKD_REQUEST__BODY_AUDIT:
        rc = do_audit(d, req->audit, &r, &mem);
        break;
    case CAUSEWAY__V1__CLOCKD_REQUEST__BODY_COMPARE:
        rc = do_compare(d, req->compare, &r, detail, sizeof detail);
        break;
    case CAUSEWAY__V1__CLOCKD_REQUEST__BODY_INFO:
        r.status = CAUSEWAY__V1__STATUS__STATUS_OK;
        fill_totals(d, &r);
        break;
    default: {
        int unknown_body = 0;
        for (size_t i = 0; i < req->base.n_unknown_fields; i++)
            if (req->base.unknown_fields[i].tag >= 10)
                unknown_body = 1;
        reply_error(d, &r, unknown_body ? CW_UNKNOWN_TYPE : CW_BAD_REQUEST,
                    unknown_body ? "request body of a type this daemon does not know"
                                 : "request has no body");
        break;
    }
    }
    if (rc != CW_OK)
        goto done;
    if (req->request_id == 0)
        goto done;
reply:
    *out_len = causeway__v1__clockd_reply__get_packed_size(&r);
    *out = malloc(*out_len ? *out_len : 1);
    if (!*out) {
        rc = CW_ERR_NOMEM;
        *out_len = 0;
        goto done;
    }
    causeway__v1__clockd_reply__pack(&r, *out);
done:
    reply_mem_free(&mem);
    if (req)
        causeway__v1__clockd_request__free_unpacked(req, NULL);
    return rc;
}

/* ---- the loop ---------------------------------------------------------------- */

/* Receives one multipart message into parts (at most max); returns the
 * number of parts, or -1 (errno from libzmq). Parts beyond max are
 * received and dropped, and reported as max + 1. */
static int recv_parts(void *sock, zmq_msg_t *parts, int max)
{
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t tmp;
        zmq_msg_t *m = n < max ? &parts[n] : &tmp;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, sock, 0) < 0) {
            int e = errno;
            zmq_msg_close(m);
            for (int i = 0; i < n && i < max; i++)
                zmq_msg_close(&parts[i]);
            errno = e;
            return -1;
        }
        more = zmq_msg_more(m);
        if (m == &tmp)
            zmq_msg_close(&tmp);
        n++;
    }
    return n;
}

void cw_clockd_watch_reload(cw_clockd_t *d, volatile sig_atomic_t *flag)
{
    d->reload = flag;
}

int cw_clockd_run(cw_clockd_t *d, volatile sig_atomic_t *stop)
{
    CW_INFO("listening on %s, store %s", d->endpoint, d->db_path);
    while (!*stop) {
        if (d->reload && *d->reload) {
            *d->reload = 0;
            char err[1200];
            if (!d->zap)
                CW_INFO("SIGHUP: nothing to reload in plain mode");
            else if (cw_zap_reload(d->zap, err, sizeof err) != 0)
                CW_ERROR("users not reloaded, the old keys stay in force: %s", err);
            else
                CW_INFO("users reloaded: %zu keys", cw_zap_key_count(d->zap));
        }
        zmq_pollitem_t items[2] = {{.socket = d->sock, .events = ZMQ_POLLIN},
                                   {.socket = d->zap ? cw_zap_socket(d->zap) : NULL,
                                    .events = ZMQ_POLLIN}};
        int rc = zmq_poll(items, d->zap ? 2 : 1, 200);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            CW_ERROR("poll: %s", zmq_strerror(errno));
            return -1;
        }
        if (d->zap && (items[1].revents & ZMQ_POLLIN))
            cw_zap_handle(d->zap);
        if (!(items[0].revents & ZMQ_POLLIN))
            continue;
        zmq_msg_t parts[3];
        int n = recv_parts(d->sock, parts, 3);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            CW_ERROR("recv: %s", zmq_strerror(errno));
            return -1;
        }
        /* [id, payload] from DEALER, [id, "", payload] from REQ. */
        int ok = (n == 2) || (n == 3 && zmq_msg_size(&parts[1]) == 0);
        if (!ok) {
            CW_WARN("dropped a message of %d frames", n);
        } else {
            zmq_msg_t *payload = &parts[n - 1];
            uint8_t *reply = NULL;
            size_t reply_len = 0;
            int hrc = cw_clockd_handle(d, zmq_msg_data(payload), zmq_msg_size(payload), &reply, &reply_len);
            if (hrc != CW_OK)
                CW_ERROR("request failed: %s", cw_strerror(hrc));
            if (reply) {
                int sent = zmq_send(d->sock, zmq_msg_data(&parts[0]), zmq_msg_size(&parts[0]), ZMQ_SNDMORE);
                if (sent >= 0 && n == 3)
                    sent = zmq_send(d->sock, "", 0, ZMQ_SNDMORE);
                if (sent >= 0)
                    sent = zmq_send(d->sock, reply, reply_len, 0);
                if (sent < 0)
                    CW_WARN("reply not sent: %s", zmq_strerror(errno));
                free(reply);
            }
        }
        for (int i = 0; i < n && i < 3; i++)
            zmq_msg_close(&parts[i]);
    }
    CW_INFO("stopping (%zu events held)", cw_trace_count(d->trace));
    return 0;
}
