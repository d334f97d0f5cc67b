/*  cw_envelope: see cw_envelope.h. */
#include "cw_envelope.h"
#include "cw_status.h"

#include <errno.h>
#include <stdlib.h>
#include <zmq.h>

/* First field number of the body oneof: unknown fields from here on are
 * message types this peer does not know. */
#define BODY_FIELD_MIN 10

/* True unless m or a message inside it holds an unknown field numbered 0.
 * protobuf-c 1.4 refuses field number 0 only when its key is one byte; an
 * overlong key (0x82 0x00) passes, is kept as an unknown field and is
 * re-encoded in the one-byte form, which no decoder accepts. Unknown fields
 * of a ClockEntry travel on inside every Deliver of the message (and into
 * the store), so such a frame would let one client send recipients frames
 * they cannot decode. Found by tests/fuzz/envelope_fuzz.c. The nesting
 * of causeway.proto is finite, so the recursion is bounded. */
static int unknown_fields_valid(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return 0;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *) m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *) (const void *) (base + f->quantifier_offset);
            ProtobufCMessage *const *subs =
                *(ProtobufCMessage *const *const *) (const void *) (base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (!unknown_fields_valid(subs[k]))
                    return 0;
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *) (const void *) (base + f->quantifier_offset) != f->id)
            continue; /* another member of the oneof is set */
        const ProtobufCMessage *sub =
            *(ProtobufCMessage *const *) (const void *) (base + f->offset);
        if (sub && !unknown_fields_valid(sub))
            return 0;
    }
    return 1;
}

int cw_env_decode(const void *data, size_t len, size_t max_frame, cw_env_t **out,
                  uint64_t *request_id, const char **detail)
{
    *out = NULL;
    if (request_id)
        *request_id = 0;
    if (len > max_frame) {
        *detail = "frame is larger than the broker's frame limit";
        return CW_TOO_LARGE;
    }
    cw_env_t *env = causeway__v1__envelope__unpack(NULL, len, data);
    if (!env) {
        *detail = "frame is not a valid causeway.v1.Envelope";
        return CW_BAD_REQUEST;
    }
    if (request_id)
        *request_id = env->request_id;
    if (!unknown_fields_valid(&env->base)) {
        *detail = "frame holds a field numbered 0";
        causeway__v1__envelope__free_unpacked(env, NULL);
        return CW_BAD_REQUEST;
    }
    if (env->version != CW_PROTOCOL_VERSION) {
        *detail = "Envelope.version must be 1";
        causeway__v1__envelope__free_unpacked(env, NULL);
        return CW_UNSUPPORTED_VERSION;
    }
    if (env->body_case == CW_BODY(_NOT_SET)) {
        int unknown_body = 0;
        for (unsigned i = 0; i < env->base.n_unknown_fields; i++)
            if (env->base.unknown_fields[i].tag >= BODY_FIELD_MIN)
                unknown_body = 1;
        causeway__v1__envelope__free_unpacked(env, NULL);
        *detail = unknown_body ? "envelope body is of a type this broker does not know"
                               : "envelope has no body";
        return unknown_body ? CW_UNKNOWN_TYPE : CW_BAD_REQUEST;
    }
    *out = env;
    return CW_OK;
}

void cw_env_free(cw_env_t **env)
{
    if (env && *env) {
        causeway__v1__envelope__free_unpacked(*env, NULL);
        *env = NULL;
    }
}

void cw_env_init(cw_env_t *env, uint64_t request_id)
{
    causeway__v1__envelope__init(env);
    env->version = CW_PROTOCOL_VERSION;
    env->request_id = request_id;
}

int cw_env_to_msg(const cw_env_t *env, void *zmq_msg)
{
    size_t size = causeway__v1__envelope__get_packed_size(env);
    if (zmq_msg_init_size((zmq_msg_t *) zmq_msg, size) != 0)
        return CW_ERR_NOMEM;
    causeway__v1__envelope__pack(env, zmq_msg_data((zmq_msg_t *) zmq_msg));
    return CW_OK;
}

int cw_env_pack(const cw_env_t *env, uint8_t **buf, size_t *len)
{
    *len = causeway__v1__envelope__get_packed_size(env);
    *buf = malloc(*len ? *len : 1);
    if (!*buf)
        return CW_ERR_NOMEM;
    causeway__v1__envelope__pack(env, *buf);
    return CW_OK;
}

int cw_env_send(void *sock, const void *id, size_t id_len, const cw_env_t *env, int flags)
{
    zmq_msg_t msg;
    if (cw_env_to_msg(env, &msg) != CW_OK) {
        errno = ENOMEM;
        return -1;
    }
    if (id && zmq_send(sock, id, id_len, ZMQ_SNDMORE | (flags & ZMQ_DONTWAIT)) < 0) {
        int e = errno;
        zmq_msg_close(&msg);
        errno = e;
        return -1;
    }
    if (zmq_msg_send(&msg, sock, flags) < 0) {
        int e = errno;
        zmq_msg_close(&msg);
        errno = e;
        return -1;
    }
    return 0;
}

const char *cw_env_body_name(const cw_env_t *env)
{
    switch (env->body_case) {
    case CW_BODY(LOGIN): return "login";
    case CW_BODY(LOGOUT): return "logout";
    case CW_BODY(SEND): return "send";
    case CW_BODY(WHO): return "who";
    case CW_BODY(STATS): return "stats";
    case CW_BODY(ACK): return "ack";
    case CW_BODY(FETCH): return "fetch";
    case CW_BODY(HISTORY): return "history";
    case CW_BODY(HEARTBEAT): return "heartbeat";
    case CW_BODY(DELIVER): return "deliver";
    case CW_BODY(PRESENCE): return "presence";
    case CW_BODY(REPLY): return "reply";
    default: return "none";
    }
}
