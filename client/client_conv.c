/*  client_conv.c: converts decoded wire messages (protobuf-c structs) into
 *  the public structs of causeway.h, and frees those.
 *
 *  Runs on whichever thread calls it (the I/O thread converts, the
 *  application frees); no shared state. Invariant: a public struct either
 *  owns every pointer in it or is NULL/zeroed, so the free functions work on
 *  partially built structs (used on out-of-memory paths).
 */
#include "client_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *cw_conv_strdup(const char *s)
{
    return strdup(s ? s : "");
}

int cw_conv_clock(cw_clock_item_t **out, size_t *n, cw_clock_entry_msg_t *const *e, size_t count)
{
    *out = NULL;
    *n = 0;
    if (count == 0)
        return CW_OK;
    cw_clock_item_t *items = calloc(count, sizeof *items);
    if (!items)
        return CW_ERR_NOMEM;
    for (size_t i = 0; i < count; i++) {
        items[i].node = cw_conv_strdup(e[i]->node);
        items[i].counter = e[i]->counter;
        if (!items[i].node) {
            cw_client_clock_free(&items, i);
            return CW_ERR_NOMEM;
        }
    }
    *out = items;
    *n = count;
    return CW_OK;
}

void cw_client_clock_free(cw_clock_item_t **items, size_t n)
{
    if (!items || !*items)
        return;
    for (size_t i = 0; i < n; i++)
        free((*items)[i].node);
    free(*items);
    *items = NULL;
}

int cw_conv_users(cw_user_t **out, size_t *n, cw_userinfo_msg_t *const *users, size_t count)
{
    *out = NULL;
    *n = 0;
    if (count == 0)
        return CW_OK;
    cw_user_t *u = calloc(count, sizeof *u);
    if (!u)
        return CW_ERR_NOMEM;
    for (size_t i = 0; i < count; i++) {
        u[i].name = cw_conv_strdup(users[i]->name);
        u[i].online = users[i]->online;
        u[i].last_seen_us = users[i]->last_seen_us;
        if (!u[i].name) {
            cw_conv_users_free(&u, i);
            return CW_ERR_NOMEM;
        }
    }
    *out = u;
    *n = count;
    return CW_OK;
}

void cw_conv_users_free(cw_user_t **users, size_t n)
{
    if (!users || !*users)
        return;
    for (size_t i = 0; i < n; i++)
        free((*users)[i].name);
    free(*users);
    *users = NULL;
}

int cw_conv_message(cw_message_t *m, const cw_deliver_msg_t *d)
{
    memset(m, 0, sizeof *m);
    m->broadcast = d->broadcast;
    m->timestamp_us = d->timestamp_us;
    m->seq = d->seq;
    m->durable = d->durable;
    m->redelivered = d->redelivered;
    m->expired = d->expired;
    m->damaged = d->damaged;
    m->from = cw_conv_strdup(d->from);
    m->text = cw_conv_strdup(d->text);
    m->message_id = cw_conv_strdup(d->message_id);
    if (!m->from || !m->text || !m->message_id)
        goto nomem;
    m->receipt_requested = d->receipt_requested;
    if (d->receipt) {
        m->is_receipt = 1;
        m->read_us = d->receipt->read_us;
        if (!(m->receipt_for = cw_conv_strdup(d->receipt->message_id)))
            goto nomem;
    }
    if (d->n_to) {
        m->to = calloc(d->n_to, sizeof *m->to);
        if (!m->to)
            goto nomem;
        for (size_t i = 0; i < d->n_to; i++) {
            m->to[i] = cw_conv_strdup(d->to[i]);
            if (!m->to[i])
                goto nomem;
            m->n_to = i + 1;
        }
    }
    if (cw_conv_clock(&m->clock, &m->n_clock, d->clock, d->n_clock) != CW_OK)
        goto nomem;
    return CW_OK;
nomem:
    cw_conv_message_free(m);
    return CW_ERR_NOMEM;
}

void cw_conv_message_free(cw_message_t *m)
{
    free(m->from);
    free(m->text);
    free(m->message_id);
    free(m->receipt_for);
    for (size_t i = 0; i < m->n_to; i++)
        free(m->to[i]);
    free(m->to);
    cw_client_clock_free(&m->clock, m->n_clock);
    memset(m, 0, sizeof *m);
}

/* Status counts from the wire; CW_OK or CW_ERR_NOMEM. */
static int conv_counts(cw_status_count_t **out, size_t *n, Causeway__V1__StatusCount **in,
                       size_t n_in)
{
    if (!n_in)
        return CW_OK;
    *out = calloc(n_in, sizeof **out);
    if (!*out)
        return CW_ERR_NOMEM;
    for (size_t i = 0; i < n_in; i++) {
        (*out)[i].status = (cw_status_t) in[i]->status;
        (*out)[i].count = in[i]->count;
    }
    *n = n_in;
    return CW_OK;
}

/* Queue entries from the wire (appended to *out); CW_OK or CW_ERR_NOMEM. */
static int conv_queues(cw_queue_info_t **out, size_t *n, Causeway__V1__QueueInfo **in,
                       size_t n_in)
{
    if (!n_in)
        return CW_OK;
    cw_queue_info_t *q = realloc(*out, (*n + n_in) * sizeof *q);
    if (!q)
        return CW_ERR_NOMEM;
    *out = q;
    for (size_t i = 0; i < n_in; i++) {
        cw_queue_info_t *e = &q[*n];
        e->name = cw_conv_strdup(in[i]->name);
        if (!e->name)
            return CW_ERR_NOMEM;
        e->depth = in[i]->depth;
        e->last_seq = in[i]->last_seq;
        e->online = in[i]->online;
        (*n)++;
    }
    return CW_OK;
}

cw_reply_t *cw_conv_reply(const cw_reply_msg_t *r)
{
    cw_reply_t *out = calloc(1, sizeof *out);
    if (!out)
        return NULL;
    out->status = (cw_status_t) r->status;
    out->duplicate = r->duplicate;
    out->detail = cw_conv_strdup(r->detail);
    if (!out->detail)
        goto nomem;
    if (r->n_recipients) {
        out->recipients = calloc(r->n_recipients, sizeof *out->recipients);
        if (!out->recipients)
            goto nomem;
        for (size_t i = 0; i < r->n_recipients; i++) {
            out->recipients[i].name = cw_conv_strdup(r->recipients[i]->name);
            out->recipients[i].status = (cw_status_t) r->recipients[i]->status;
            out->recipients[i].seq = r->recipients[i]->seq;
            out->n_recipients = i + 1;
            if (!out->recipients[i].name)
                goto nomem;
        }
    }
    if (cw_conv_users(&out->users, &out->n_users, r->users, r->n_users) != CW_OK)
        goto nomem;
    out->truncated = r->truncated;
    if (r->login) {
        out->has_login = 1;
        out->login.broker_version = cw_conv_strdup(r->login->broker_version);
        if (!out->login.broker_version)
            goto nomem;
        out->login.heartbeat_ms = r->login->heartbeat_ms;
        out->login.liveness = r->login->liveness;
        out->login.max_frame = r->login->max_frame;
        out->login.max_recipients = r->login->max_recipients;
        out->login.max_text = r->login->max_text;
        out->login.durable = r->login->durable;
    }
    if (r->stats) {
        const Causeway__V1__BrokerStats *s = r->stats;
        out->has_stats = 1;
        out->stats = (cw_stats_t){
            .uptime_ms = s->uptime_ms,
            .sessions = s->sessions,
            .known_users = s->known_users,
            .frames_in = s->frames_in,
            .frames_out = s->frames_out,
            .messages_routed = s->messages_routed,
            .deliveries = s->deliveries,
            .bad_frames = s->bad_frames,
            .expired_sessions = s->expired_sessions,
            .stored_messages = s->stored_messages,
            .fsyncs = s->fsyncs,
            .refused_requests = s->refused_requests,
            .damaged_entries = s->damaged_entries,
            .redeliveries = s->redeliveries,
            .held_messages = s->held_messages,
            .store_transactions = s->store_transactions,
            .memory_rss_bytes = s->memory_rss_bytes,
            .started_us = s->started_us,
            .bytes_in = s->bytes_in,
            .bytes_out = s->bytes_out,
            .logins = s->logins,
            .max_sessions = s->max_sessions,
            .store_pending = s->store_pending,
            .replies_dropped = s->replies_dropped,
        };
        snprintf(out->stats.version, sizeof out->stats.version, "%s", s->version ? s->version : "");
        for (size_t i = 0; i < s->n_traffic; i++) {
            const Causeway__V1__TrafficCount *t = s->traffic[i];
            if (t->kind < 1 || t->kind > 3)
                continue; /* a kind this client does not know */
            int m = t->durable ? 1 : 0, k = (int) t->kind - 1;
            out->stats.traffic[m][k].received = t->received;
            out->stats.traffic[m][k].received_bytes = t->received_bytes;
            out->stats.traffic[m][k].delivered = t->delivered;
            out->stats.traffic[m][k].delivered_bytes = t->delivered_bytes;
        }
        const Causeway__V1__Histogram *h = s->commit_latency;
        if (h && h->n_bounds_us <= CW_STATS_BOUNDS_MAX && h->n_counts == h->n_bounds_us + 1) {
            out->stats.n_commit_bounds = h->n_bounds_us;
            memcpy(out->stats.commit_bounds_us, h->bounds_us, h->n_bounds_us * sizeof(uint64_t));
            memcpy(out->stats.commit_counts, h->counts, h->n_counts * sizeof(uint64_t));
            out->stats.commit_sum_us = h->sum_us;
            out->stats.commit_count = h->count;
        }
        if (conv_counts(&out->refusals, &out->n_refusals, s->refusals, s->n_refusals) != CW_OK ||
            conv_counts(&out->fates, &out->n_fates, s->recipient_fates, s->n_recipient_fates) !=
                CW_OK ||
            conv_queues(&out->queues, &out->n_queues, s->deepest_queues, s->n_deepest_queues) !=
                CW_OK)
            goto nomem;
    }
    if (r->n_queues &&
        conv_queues(&out->queues, &out->n_queues, r->queues, r->n_queues) != CW_OK)
        goto nomem;
    if (r->n_sessions) {
        out->sessions = calloc(r->n_sessions, sizeof *out->sessions);
        if (!out->sessions)
            goto nomem;
        for (size_t i = 0; i < r->n_sessions; i++) {
            const Causeway__V1__SessionInfo *si = r->sessions[i];
            cw_session_info_t *o = &out->sessions[i];
            out->n_sessions = i + 1;
            o->name = cw_conv_strdup(si->name);
            o->peer = cw_conv_strdup(si->peer);
            o->agent = cw_conv_strdup(si->agent);
            o->key = cw_conv_strdup(si->key);
            if (!o->name || !o->peer || !o->agent || !o->key)
                goto nomem;
            o->since_us = si->since_us;
            o->idle_ms = si->idle_ms;
            o->queued = si->queued;
            o->held = si->held;
            o->pull = si->pull;
            o->quiet = si->quiet;
        }
    }
    if (r->n_forwarded) {
        out->forwarded = calloc(r->n_forwarded, sizeof *out->forwarded);
        if (!out->forwarded)
            goto nomem;
        for (size_t i = 0; i < r->n_forwarded; i++) {
            const Causeway__V1__Forwarded *f = r->forwarded[i];
            cw_forwarded_t *o = &out->forwarded[i];
            out->n_forwarded = i + 1;
            o->timestamp_us = f->timestamp_us;
            o->recipients = f->recipients;
            o->size = f->size;
            o->delivered = f->delivered;
            o->broadcast = f->broadcast;
            o->durable = f->durable;
            o->from = cw_conv_strdup(f->from);
            o->text = cw_conv_strdup(f->text);
            if (!o->from || !o->text)
                goto nomem;
            if (f->n_to) {
                o->to = calloc(f->n_to, sizeof *o->to);
                if (!o->to)
                    goto nomem;
                for (size_t k = 0; k < f->n_to; k++) {
                    if (!(o->to[k] = cw_conv_strdup(f->to[k])))
                        goto nomem;
                    o->n_to = k + 1;
                }
            }
        }
    }
    if (r->n_messages) {
        out->messages = calloc(r->n_messages, sizeof *out->messages);
        if (!out->messages)
            goto nomem;
        for (size_t i = 0; i < r->n_messages; i++) {
            if (cw_conv_message(&out->messages[i], r->messages[i]) != CW_OK)
                goto nomem;
            out->n_messages = i + 1;
        }
    }
    return out;
nomem:
    cw_reply_destroy(&out);
    return NULL;
}

void cw_reply_destroy(cw_reply_t **p)
{
    if (!p || !*p)
        return;
    cw_reply_t *r = *p;
    free(r->detail);
    free(r->message_id);
    for (size_t i = 0; i < r->n_recipients; i++)
        free(r->recipients[i].name);
    free(r->recipients);
    cw_conv_users_free(&r->users, r->n_users);
    free(r->login.broker_version);
    for (size_t i = 0; i < r->n_messages; i++)
        cw_conv_message_free(&r->messages[i]);
    free(r->messages);
    free(r->refusals);
    free(r->fates);
    for (size_t i = 0; i < r->n_sessions; i++) {
        free(r->sessions[i].name);
        free(r->sessions[i].peer);
        free(r->sessions[i].agent);
        free(r->sessions[i].key);
    }
    free(r->sessions);
    for (size_t i = 0; i < r->n_queues; i++)
        free(r->queues[i].name);
    free(r->queues);
    for (size_t i = 0; i < r->n_forwarded; i++) {
        free(r->forwarded[i].from);
        free(r->forwarded[i].text);
        for (size_t k = 0; k < r->forwarded[i].n_to; k++)
            free(r->forwarded[i].to[k]);
        free(r->forwarded[i].to);
    }
    free(r->forwarded);
    cw_client_clock_free(&r->clock, r->n_clock);
    free(r);
    *p = NULL;
}

void cw_event_destroy(cw_event_t **p)
{
    if (!p || !*p)
        return;
    cw_event_t *e = *p;
    cw_conv_message_free(&e->msg);
    cw_client_clock_free(&e->local_clock, e->n_local_clock);
    free(e->presence.name);
    free(e->conn.detail);
    cw_conv_users_free(&e->conn.users, e->conn.n_users);
    free(e->receipt.message_id);
    free(e->receipt.reader);
    free(e->failover.endpoint);
    free(e);
    *p = NULL;
}

const char *cw_presence_reason_name(cw_presence_reason_t reason)
{
    switch (reason) {
    case CW_PRESENCE_LOGIN: return "login";
    case CW_PRESENCE_LOGOUT: return "logout";
    case CW_PRESENCE_EXPIRED: return "expired";
    case CW_PRESENCE_SHUTDOWN: return "shutdown";
    default: return "unspecified";
    }
}
