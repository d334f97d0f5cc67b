/*  observe: the router's monitoring side. Runs on the router thread.
 *
 *  Owns nothing but what it builds per call: it reads the router's
 *  counters (b->mon, b->stats), the session table and the store thread's
 *  counters, and turns them into
 *    - snapshots published to b->monitor for other threads (the metrics
 *      endpoint; cwo_maybe_publish, at most every CW_MON_PUBLISH_MS, and
 *      only once someone asked for the monitor: cw_broker_monitor);
 *    - the replies to Stats (anyone) and to the operator requests
 *      Sessions, Queues and Recent (PROTOCOL.md §12.1-12.2), which only a
 *      session logged in under a name of --operators gets.
 *  Both come from cwo_snapshot, so the endpoint and the protocol show the
 *  same figures. The per-message cost on the router is in broker.c and
 *  durable.c: a few counter additions per Send, and one ring entry while
 *  an operator watches (for CW_MON_WATCH_MS after each Recent request).
 */
#include "observe.h"

#include "cw_log.h"
#include "cw_status.h"
#include "durable.h"
#include "egress.h"
#include "outorder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cwo_snapshot(cw_broker_t *b, cw_mon_snap_t *snap)
{
    uint64_t generation = snap->generation;
    memset(snap, 0, sizeof *snap);
    snap->generation = generation;
    snap->uptime_ms = (uint64_t) (b->now_ms - b->started_ms);
    snap->started_us = b->started_us;
    snap->sessions = (uint32_t) cw_sessions_count(b->sessions);
    snap->max_sessions = b->cfg.max_sessions;
    snap->users = (uint32_t) cw_sessions_user_count(b->sessions);
    snap->frames_in = b->stats.frames_in;
    snap->frames_out = b->stats.frames_out;
    snap->messages_routed = b->stats.messages_routed;
    snap->deliveries = b->stats.deliveries;
    snap->bad_frames = b->stats.bad_frames;
    snap->refused = b->stats.refused;
    snap->expired = b->stats.expired;
    snap->c = b->mc;
    snap->durable = cwd_monitor(b, &snap->store, &snap->store_pending);
    if (snap->durable) {
        uint64_t stored, fsyncs;
        cwd_stats(b, &stored, &fsyncs, &snap->damaged_entries);
        snap->queued_total = snap->store.pending;
        size_t n = cw_sessions_user_count(b->sessions);
        for (size_t i = 0; i < n; i++) {
            const cwb_user_t *u = cw_sessions_user_at(b->sessions, i);
            cw_mon_top_offer(snap->top, &snap->n_top, CW_MON_TOP_QUEUES, u->name, u->queued);
        }
    }
}

void cwo_maybe_publish(cw_broker_t *b)
{
    if (!b->monitor_wanted || b->now_ms < b->next_publish_ms)
        return;
    b->next_publish_ms = b->now_ms + CW_MON_PUBLISH_MS;
    cwo_snapshot(b, cw_monitor_back(b->monitor));
    cw_monitor_publish(b->monitor);
}

void cwo_session_opened(cw_broker_t *b, cw_session_t *s)
{
    s->since_us = b->now_us;
    s->peer[0] = '\0';
    if (!b->frame)
        return;
    /* The peer's address as libzmq recorded it for the connection this
     * frame came on (the IP, without the port). Not getpeername() on the
     * frame's ZMQ_SRCFD: by the time the router thread reads the frame,
     * that connection may be closed and its descriptor reused by another
     * one, whose address would be shown. */
    const char *addr = zmq_msg_gets(b->frame, "Peer-Address");
    if (addr)
        snprintf(s->peer, sizeof s->peer, "%s", addr);
}

/* The operator requests need a session whose user is in --operators:
 * the answer says who is online from where. Replies and returns false if
 * not. */
static bool operator_or_reply(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                              uint64_t rid)
{
    if (!s) {
        cwe_reply_status(b, id, id_len, rid, CW_NOT_LOGGED_IN,
                         "operator requests need a session (log in as an operator)");
        return false;
    }
    if (!cw_broker_config_is_operator(&b->cfg, s->user->name)) {
        char detail[128 + CW_NAME_MAX_HARD];
        snprintf(detail, sizeof detail,
                 "user %s is not an operator of this broker (causeway-broker --operators)",
                 s->user->name);
        cwe_reply_status(b, id, id_len, rid, CW_UNAUTHORIZED, detail);
        return false;
    }
    return true;
}

/* Sends a Reply carrying `reply` (status OK) to the requester. */
static void send_ok(cw_broker_t *b, const void *id, size_t id_len, uint64_t rid,
                    Causeway__V1__Reply *reply)
{
    cw_env_t out;
    cw_env_init(&out, rid);
    reply->status = (Causeway__V1__Status) CW_OK;
    out.body_case = CW_BODY(REPLY);
    out.reply = reply;
    cwe_send_to_id(b, id, id_len, &out);
}

/* Index of the first user whose name sorts after `after` ("" or NULL: 0). */
static size_t first_after(cw_broker_t *b, const char *after)
{
    size_t lo = 0, hi = cw_sessions_user_count(b->sessions);
    if (!after || !*after)
        return 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(cw_sessions_user_at(b->sessions, mid)->name, after) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

void cwo_stats(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
               const cw_env_t *env)
{
    cw_mon_snap_t *snap = malloc(sizeof *snap);
    if (!snap) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        return;
    }
    snap->generation = 0;
    cwo_snapshot(b, snap);
    Causeway__V1__BrokerStats st;
    causeway__v1__broker_stats__init(&st);
    st.uptime_ms = snap->uptime_ms;
    st.sessions = snap->sessions;
    st.known_users = snap->users;
    st.frames_in = snap->frames_in;
    st.frames_out = snap->frames_out;
    st.messages_routed = snap->messages_routed;
    st.deliveries = snap->deliveries;
    st.bad_frames = snap->bad_frames;
    st.refused_requests = snap->refused;
    st.expired_sessions = snap->expired;
    cwd_stats(b, &st.stored_messages, &st.fsyncs, &st.damaged_entries);
    cwd_shared_stats_t sh;
    cwd_shared_stats(b, &sh);
    st.claims_refused = sh.claims_taken;
    st.takeovers = sh.takeovers;
    st.live_remote = sh.live_remote;
    st.live_from_brokers = sh.live_in;
    st.entry_events = sh.entry_events;
    st.store_fenced = sh.fenced;
    st.store_fences = sh.fences;
    st.fenced_sessions = sh.fenced_sessions;

    /* Refusals and fates: only the statuses seen. */
    Causeway__V1__StatusCount counts[2][CW_MON_STATUSES], *cptr[2][CW_MON_STATUSES];
    size_t nc[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        const uint64_t *a = k ? snap->c.fates : snap->c.refusals;
        for (int i = 0; i < CW_MON_STATUSES; i++) {
            if (!a[i])
                continue;
            causeway__v1__status_count__init(&counts[k][nc[k]]);
            counts[k][nc[k]].status = (Causeway__V1__Status) i;
            counts[k][nc[k]].count = a[i];
            cptr[k][nc[k]] = &counts[k][nc[k]];
            nc[k]++;
        }
    }
    st.n_refusals = nc[0];
    st.refusals = cptr[0];
    st.n_recipient_fates = nc[1];
    st.recipient_fates = cptr[1];

    Causeway__V1__TrafficCount tc[2 * CW_KINDS], *tptr[2 * CW_KINDS];
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < CW_KINDS; k++) {
            Causeway__V1__TrafficCount *t = &tc[m * CW_KINDS + k];
            causeway__v1__traffic_count__init(t);
            t->durable = m;
            t->kind = (Causeway__V1__TrafficCount__Kind) (k + 1);
            t->received = snap->c.rx[m][k];
            t->received_bytes = snap->c.rx_bytes[m][k];
            t->delivered = snap->c.dl[m][k];
            t->delivered_bytes = snap->c.dl_bytes[m][k];
            tptr[m * CW_KINDS + k] = t;
        }
    st.n_traffic = 2 * CW_KINDS;
    st.traffic = tptr;
    st.redeliveries = snap->c.redeliveries;
    st.replies_dropped = snap->c.replies_dropped;
    st.held_messages = (uint32_t) snap->c.held_now;
    st.memory_rss_bytes = cw_mon_rss_bytes();
    st.version = CW_VERSION;
    st.started_us = snap->started_us;
    st.bytes_in = snap->c.bytes_in;
    st.bytes_out = snap->c.bytes_out;
    st.logins = snap->c.logins;
    st.max_sessions = snap->max_sessions;
    st.store_pending = snap->store_pending;

    Causeway__V1__Histogram hist;
    static const uint64_t bounds[CW_COMMIT_BUCKETS] = CW_COMMIT_BOUNDS_US;
    uint64_t cum[CW_COMMIT_BUCKETS + 1];
    if (snap->durable) {
        st.store_transactions = snap->store.groups;
        causeway__v1__histogram__init(&hist);
        uint64_t run = 0;
        for (size_t i = 0; i <= CW_COMMIT_BUCKETS; i++)
            cum[i] = run += snap->store.commit_hist[i];
        hist.n_bounds_us = CW_COMMIT_BUCKETS;
        hist.bounds_us = (uint64_t *) bounds;
        hist.n_counts = CW_COMMIT_BUCKETS + 1;
        hist.counts = cum;
        hist.sum_us = snap->store.commit_sum_us;
        hist.count = run;
        st.commit_latency = &hist;
    }

    Causeway__V1__QueueInfo q[CW_MON_TOP_QUEUES], *qptr[CW_MON_TOP_QUEUES];
    if (s && cw_broker_config_is_operator(&b->cfg, s->user->name)) {
        for (size_t i = 0; i < snap->n_top; i++) {
            causeway__v1__queue_info__init(&q[i]);
            q[i].name = snap->top[i].name;
            q[i].depth = snap->top[i].depth;
            const cwb_user_t *u = cw_sessions_user(b->sessions, snap->top[i].name);
            q[i].online = u && u->session;
            q[i].last_seq = u ? u->last_seq : 0;
            qptr[i] = &q[i];
        }
        st.n_deepest_queues = snap->n_top;
        st.deepest_queues = qptr;
    }

    Causeway__V1__Reply reply;
    causeway__v1__reply__init(&reply);
    reply.detail = "stats";
    reply.stats = &st;
    send_ok(b, id, id_len, env->request_id, &reply);
    free(snap);
}

void cwo_sessions(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                  const cw_env_t *env)
{
    if (!operator_or_reply(b, id, id_len, s, env->request_id))
        return;
    size_t nu = cw_sessions_user_count(b->sessions);
    size_t cap = cw_sessions_count(b->sessions);
    if (cap > b->cfg.page_users)
        cap = b->cfg.page_users;
    Causeway__V1__SessionInfo *infos = calloc(cap ? cap : 1, sizeof *infos);
    Causeway__V1__SessionInfo **ptrs = calloc(cap ? cap : 1, sizeof *ptrs);
    if (!infos || !ptrs) {
        free(infos);
        free(ptrs);
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        return;
    }
    size_t n = 0;
    bool truncated = false;
    for (size_t i = first_after(b, env->sessions->after); i < nu; i++) {
        cwb_user_t *u = cw_sessions_user_at(b->sessions, i);
        cw_session_t *us = u->session;
        if (!us || us->dead)
            continue;
        if (n == cap) {
            truncated = true;
            break;
        }
        Causeway__V1__SessionInfo *si = &infos[n];
        causeway__v1__session_info__init(si);
        si->name = u->name;
        si->peer = us->peer;
        si->since_us = us->since_us;
        si->idle_ms = (uint64_t) (b->now_ms - us->last_rx_ms);
        si->queued = u->queued;
        si->held = (uint32_t) cwor_held_count(us);
        si->pull = us->pull;
        si->quiet = us->quiet;
        si->agent = us->agent;
        si->key = us->key;
        ptrs[n++] = si;
    }
    Causeway__V1__Reply reply;
    causeway__v1__reply__init(&reply);
    reply.detail = truncated ? "sessions (more follow: ask again with Sessions.after)"
                             : "sessions";
    reply.truncated = truncated;
    reply.n_sessions = n;
    reply.sessions = ptrs;
    send_ok(b, id, id_len, env->request_id, &reply);
    free(infos);
    free(ptrs);
}

void cwo_queues(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                const cw_env_t *env)
{
    if (!operator_or_reply(b, id, id_len, s, env->request_id))
        return;
    if (!b->durable) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_NOT_DURABLE,
                         "queues need a broker started with --data DIR");
        return;
    }
    size_t nu = cw_sessions_user_count(b->sessions);
    size_t from = first_after(b, env->queues->after);
    size_t n = nu - from;
    bool truncated = n > b->cfg.page_users;
    if (truncated)
        n = b->cfg.page_users;
    Causeway__V1__QueueInfo *infos = calloc(n ? n : 1, sizeof *infos);
    Causeway__V1__QueueInfo **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    if (!infos || !ptrs) {
        free(infos);
        free(ptrs);
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        cwb_user_t *u = cw_sessions_user_at(b->sessions, from + i);
        causeway__v1__queue_info__init(&infos[i]);
        infos[i].name = u->name;
        infos[i].depth = u->queued;
        infos[i].last_seq = u->last_seq;
        infos[i].online = u->session != NULL;
        ptrs[i] = &infos[i];
    }
    Causeway__V1__Reply reply;
    causeway__v1__reply__init(&reply);
    reply.detail = truncated ? "queues (more follow: ask again with Queues.after)" : "queues";
    reply.truncated = truncated;
    reply.n_queues = n;
    reply.queues = ptrs;
    send_ok(b, id, id_len, env->request_id, &reply);
    free(infos);
    free(ptrs);
}

void cwo_recent(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                const cw_env_t *env)
{
    if (!operator_or_reply(b, id, id_len, s, env->request_id))
        return;
    const Causeway__V1__Recent *rq = env->recent;
    if (rq->text && !b->cfg.monitor_text) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_UNAUTHORIZED,
                         "message texts need a broker started with --monitor-text");
        return;
    }
    /* Someone watches: record forwarded messages for the next minute
     * (while nobody asks, the router does not spend a cycle on the ring). */
    b->ring_until_ms = b->now_ms + CW_MON_WATCH_MS;
    size_t n = 0;
    while (cw_mon_ring_at(b->ring, n))
        n++;
    if (rq->max && rq->max < n)
        n = rq->max;
    Causeway__V1__Forwarded *fw = calloc(n ? n : 1, sizeof *fw);
    Causeway__V1__Forwarded **ptrs = calloc(n ? n : 1, sizeof *ptrs);
    char **names = calloc(n ? n * CW_MON_RING_TO : 1, sizeof *names);
    if (!fw || !ptrs || !names) {
        free(fw);
        free(ptrs);
        free(names);
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        return;
    }
    for (size_t k = 0; k < n; k++) {
        const cw_mon_fwd_t *e = cw_mon_ring_at(b->ring, n - 1 - k); /* oldest first */
        Causeway__V1__Forwarded *f = &fw[k];
        causeway__v1__forwarded__init(f);
        f->timestamp_us = e->ts_us;
        f->from = (char *) e->from;
        char **to = names + k * CW_MON_RING_TO;
        f->n_to = cw_mon_fwd_names(e, (const char **) to, CW_MON_RING_TO);
        f->to = to;
        f->recipients = e->n_to;
        f->broadcast = e->broadcast;
        f->durable = e->durable;
        f->size = e->size;
        f->delivered = e->delivered;
        f->text = rq->text ? (char *) cw_mon_ring_text(b->ring, e) : "";
        ptrs[k] = f;
    }
    Causeway__V1__Reply reply;
    causeway__v1__reply__init(&reply);
    reply.detail = "recently forwarded messages";
    reply.n_forwarded = n;
    reply.forwarded = ptrs;
    send_ok(b, id, id_len, env->request_id, &reply);
    free(fw);
    free(ptrs);
    free(names);
}
