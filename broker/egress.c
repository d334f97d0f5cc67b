/*  egress: see egress.h. Router thread; owns nothing (the ROUTER socket and
 *  outq belong to the broker); calls only outq, sessions and libzmq.
 */
#include "egress.h"

#include "cw_log.h"
#include "cw_status.h"

#include <errno.h>
#include <string.h>

int cwe_push(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg)
{
    if (s->dead || s->gone) {
        zmq_msg_close(msg);
        return CW_OFFLINE;
    }
    size_t size = zmq_msg_size(msg);
    int rc = zmq_send(b->router, s->id + 1, s->id[0], ZMQ_SNDMORE | ZMQ_DONTWAIT);
    if (rc >= 0)
        rc = zmq_msg_send(msg, b->router, ZMQ_DONTWAIT);
    if (rc >= 0) {
        s->last_tx_ms = b->now_ms;
        b->stats.frames_out++;
        b->mc.bytes_out += size;
        return CW_DELIVERED;
    }
    int e = errno;
    zmq_msg_close(msg);
    if (e == EAGAIN) {
        CW_DEBUG("%s: send queue full, frame dropped", s->user->name);
        return CW_FLOODED;
    }
    CW_DEBUG("%s: peer gone (%s)", s->user->name, zmq_strerror(e));
    if (!s->dead) {
        s->dead = true;
        b->n_dead++;
    }
    return CW_OFFLINE;
}

/* Appends v as a protobuf varint at p; returns the bytes written (<= 10). */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t) (v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t) v;
    return n;
}

/* The field goes at the end of the frame, which is a valid encoding of the
 * same Envelope with after_seq set. */
int cwe_push_after(cw_broker_t *b, cw_session_t *s, zmq_msg_t *msg, uint64_t after)
{
    if (after == 0)
        return cwe_push(b, s, msg);
    uint8_t field[11];
    field[0] = (4 << 3) | 0;   /* Envelope.after_seq, wire type varint */
    size_t flen = 1 + put_varint(field + 1, after);
    size_t len = zmq_msg_size(msg);
    zmq_msg_t stamped;
    if (zmq_msg_init_size(&stamped, len + flen) != 0) {
        zmq_msg_close(msg);
        return CW_FLOODED;
    }
    memcpy(zmq_msg_data(&stamped), zmq_msg_data(msg), len);
    memcpy((uint8_t *) zmq_msg_data(&stamped) + len, field, flen);
    zmq_msg_close(msg);
    return cwe_push(b, s, &stamped);
}

#define DROP_WARN_MS 1000 /* at most one WARN line about dropped replies per second */

/* A reply that could not be queued (errno e). A full queue (EAGAIN: the
 * connection holds sndhwm frames, its client is not reading) is counted
 * (replies_dropped) and logged at WARN, at most once per DROP_WARN_MS
 * with the count of those in between; a connection that is gone
 * (EHOSTUNREACH) has nobody to answer, debug only. Can't fail. */
static void reply_dropped(cw_broker_t *b, const cw_session_t *s, const cw_env_t *env, int e)
{
    const char *who = s ? s->user->name : "a connection without a session";
    if (e != EAGAIN) {
        if (e == EHOSTUNREACH)
            CW_DEBUG("reply to request %llu of %s dropped: %s",
                     (unsigned long long) env->request_id, who, zmq_strerror(e));
        else
            CW_WARN("reply to request %llu of %s dropped: %s",
                    (unsigned long long) env->request_id, who, zmq_strerror(e));
        return;
    }
    b->mc.replies_dropped++;
    if (b->drop_warn_ms && b->now_ms - b->drop_warn_ms < DROP_WARN_MS) {
        b->drops_quiet++;
        CW_DEBUG("reply to request %llu of %s dropped: its queue is full",
                 (unsigned long long) env->request_id, who);
        return;
    }
    CW_WARN("reply to request %llu of %s dropped: its queue holds --sndhwm %u frames (the "
            "client is not reading); %llu more dropped since the last such line, %llu in all",
            (unsigned long long) env->request_id, who, b->cfg.sndhwm,
            (unsigned long long) b->drops_quiet, (unsigned long long) b->mc.replies_dropped);
    b->drop_warn_ms = b->now_ms ? b->now_ms : 1;
    b->drops_quiet = 0;
}

void cwe_send_to_id(cw_broker_t *b, const void *id, size_t id_len, const cw_env_t *env)
{
    cw_session_t *s = cw_sessions_find(b->sessions, id, id_len);
    if (cw_outq_send(b->outq, b->router, id, id_len, env, ZMQ_DONTWAIT) == 0) {
        b->stats.frames_out++;
        if (s)
            s->last_tx_ms = b->now_ms; /* a reply is traffic: no heartbeat needed */
    } else {
        reply_dropped(b, s, env, errno);
    }
}

void cwe_send_to_session(cw_broker_t *b, cw_session_t *s, const cw_env_t *env)
{
    if (cw_outq_send(b->outq, b->router, s->id + 1, s->id[0], env, ZMQ_DONTWAIT) == 0) {
        b->stats.frames_out++;
        s->last_tx_ms = b->now_ms;
    } else {
        reply_dropped(b, s, env, errno);
    }
}

/* Builds and sends a status reply; a non-success status is counted in
 * *counter. */
static void reply_counted(cw_broker_t *b, const void *id, size_t id_len, uint64_t request_id,
                          int status, const char *detail, uint64_t *counter)
{
    cw_env_t env;
    Causeway__V1__Reply reply;
    cw_env_init(&env, request_id);
    causeway__v1__reply__init(&reply);
    reply.status = (Causeway__V1__Status) status;
    reply.detail = (char *) (detail ? detail : cw_strerror(status));
    env.body_case = CW_BODY(REPLY);
    env.reply = &reply;
    if (!cw_status_is_success(status)) {
        (*counter)++;
        cw_mon_count(b->mc.refusals, status);
        CW_DEBUG("reply %s to request %llu: %s", cw_status_name(status),
                 (unsigned long long) request_id, reply.detail);
    }
    cwe_send_to_id(b, id, id_len, &env);
}

void cwe_reply_recipients(cw_broker_t *b, cw_session_t *s, const void *id, size_t id_len,
                          uint64_t request_id, int status, const char *detail, bool duplicate,
                          Causeway__V1__RecipientStatus *rcpts,
                          Causeway__V1__RecipientStatus **rptrs, size_t n)
{
    cw_env_t env;
    Causeway__V1__Reply reply;
    cw_env_init(&env, request_id);
    causeway__v1__reply__init(&reply);
    reply.status = (Causeway__V1__Status) status;
    reply.detail = (char *) detail;
    reply.duplicate = duplicate;
    for (size_t i = 0; i < n; i++)
        rptrs[i] = &rcpts[i];
    reply.n_recipients = n;
    reply.recipients = rptrs;
    env.body_case = CW_BODY(REPLY);
    env.reply = &reply;
    if (!cw_status_is_success(status)) {
        b->stats.refused++;
        cw_mon_count(b->mc.refusals, status);
    }
    if (s)
        cwe_send_to_session(b, s, &env);
    else
        cwe_send_to_id(b, id, id_len, &env);
}

void cwe_reply_status(cw_broker_t *b, const void *id, size_t id_len, uint64_t request_id,
                      int status, const char *detail)
{
    reply_counted(b, id, id_len, request_id, status, detail, &b->stats.refused);
}

void cwe_reply_bad_frame(cw_broker_t *b, const void *id, size_t id_len, uint64_t request_id,
                         int status, const char *detail)
{
    reply_counted(b, id, id_len, request_id, status, detail, &b->stats.bad_frames);
}

void cwe_announce(cw_broker_t *b, const char *name, bool online, int reason,
                  const cw_session_t *except)
{
    cw_env_t env;
    Causeway__V1__Presence p;
    cw_env_init(&env, 0);
    causeway__v1__presence__init(&p);
    p.name = (char *) name;
    p.online = online;
    p.reason = (Causeway__V1__Presence__Reason) reason;
    p.timestamp_us = b->now_us;
    env.body_case = CW_BODY(PRESENCE);
    env.presence = &p;
    zmq_msg_t proto;
    if (cw_env_to_msg(&env, &proto) != CW_OK) {
        CW_ERROR("out of memory announcing %s", name);
        return;
    }
    size_t n = cw_sessions_count(b->sessions);
    for (size_t i = 0; i < n; i++) {
        cw_session_t *s = cw_sessions_at(b->sessions, i);
        if (s == except || s->quiet || s->dead || s->claiming)
            continue;
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, &proto);
        cwe_push(b, s, &copy);
    }
    zmq_msg_close(&proto);
}
