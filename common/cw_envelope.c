/*  cw_envelope: see cw_envelope.h. */
#include "cw_envelope.h"
#include "cw_status.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
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

/* --- decoding into an arena -------------------------------------------------
 *
 * protobuf-c allocates every string, array and sub-message of a decoded
 * envelope separately (a Send to one recipient with a two-entry clock: a
 * dozen malloc/free pairs). Decoded envelopes live in an arena instead: one
 * block sized from the frame, carved in order, further blocks chained only
 * when a frame decodes into more than that (many small clock entries), all
 * freed at once by cw_env_free. The envelope itself is the first thing
 * protobuf-c allocates, so it sits at the start of the first block and
 * cw_env_free finds the arena from it. Frees protobuf-c makes while
 * decoding (scratch space) leave their space unused until then. */

typedef struct arena_block {
    struct arena_block *next;   /* first block: the newest further block;
                                   further blocks: the one before */
    size_t cap;                 /* bytes in data */
    size_t used;                /* bytes handed out */
    _Alignas(max_align_t) unsigned char data[];
} arena_t;

#define ARENA_ALIGN (_Alignof(max_align_t))

/* protobuf-c's alloc: carves from the newest block, chaining a new one
 * (at least twice the size) when it is full. */
static void *arena_alloc(void *data, size_t size)
{
    arena_t *first = data;
    arena_t *b = first->next ? first->next : first;
    size = (size + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if (b->cap - b->used < size) {
        size_t cap = b->cap * 2 > size ? b->cap * 2 : size;
        if (cap < size || cap > SIZE_MAX - sizeof *b || !(b = malloc(sizeof *b + cap)))
            return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = first->next;
        first->next = b;
    }
    void *p = b->data + b->used;
    b->used += size;
    return p;
}

static void arena_free_nothing(void *data, void *p)
{
    (void) data;
    (void) p;
}

static void arena_destroy(arena_t *first)
{
    arena_t *b = first->next;
    while (b) {
        arena_t *next = b->next;
        free(b);
        b = next;
    }
    free(first);
}

/* Decodes len bytes into a fresh arena; NULL if malformed or out of memory. */
static cw_env_t *arena_unpack(const void *data, size_t len)
{
    /* Typical frames decode into about their own size plus the structs. */
    size_t cap = 512 + len + len / 2;
    if (cap < len)
        return NULL;
    arena_t *a = malloc(sizeof *a + cap);
    if (!a)
        return NULL;
    a->cap = cap;
    a->used = 0;
    a->next = NULL;
    ProtobufCAllocator alloc = {arena_alloc, arena_free_nothing, a};
    cw_env_t *env = causeway__v1__envelope__unpack(&alloc, len, data);
    if (!env) {
        arena_destroy(a);
        return NULL;
    }
    /* cw_env_free relies on it (see above); protobuf-c 1.x allocates the
     * message first. */
    if ((void *) env != (void *) a->data)
        abort();
    return env;
}

cw_env_t *cw_env_unpack(const void *data, size_t len)
{
    return arena_unpack(data, len);
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
    cw_env_t *env = arena_unpack(data, len);
    if (!env) {
        *detail = "frame is not a valid causeway.v1.Envelope";
        return CW_BAD_REQUEST;
    }
    if (request_id)
        *request_id = env->request_id;
    if (!unknown_fields_valid(&env->base)) {
        *detail = "frame holds a field numbered 0";
        cw_env_free(&env);
        return CW_BAD_REQUEST;
    }
    if (env->version != CW_PROTOCOL_VERSION) {
        *detail = "Envelope.version must be 1";
        cw_env_free(&env);
        return CW_UNSUPPORTED_VERSION;
    }
    if (env->body_case == CW_BODY(_NOT_SET)) {
        int unknown_body = 0;
        for (unsigned i = 0; i < env->base.n_unknown_fields; i++)
            if (env->base.unknown_fields[i].tag >= BODY_FIELD_MIN)
                unknown_body = 1;
        cw_env_free(&env);
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
        arena_destroy((arena_t *) (void *) ((unsigned char *) *env - offsetof(arena_t, data)));
        *env = NULL;
    }
}

void cw_env_init(cw_env_t *env, uint64_t request_id)
{
    causeway__v1__envelope__init(env);
    env->version = CW_PROTOCOL_VERSION;
    env->request_id = request_id;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t) (v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t) v;
    return p;
}

/* A scalar field of the Envelope header: key and varint, if non-zero
 * (proto3 leaves zero scalars out). */
static size_t scalar_len(unsigned field, uint64_t v)
{
    return v ? varint_len((uint64_t) field << 3) + varint_len(v) : 0;
}

static uint8_t *put_scalar(uint8_t *p, unsigned field, uint64_t v)
{
    return v ? put_varint(put_varint(p, (uint64_t) field << 3), v) : p;
}

int cw_env_to_msg(const cw_env_t *env, void *zmq_msg)
{
    zmq_msg_t *msg = zmq_msg;
    /* Every body member of the oneof is a message pointer at the same
     * place; body_case is its field number. */
    const ProtobufCMessage *body =
        env->body_case != CW_BODY(_NOT_SET) ? (const ProtobufCMessage *) env->login : NULL;
    if (!body || env->n_clock || env->base.n_unknown_fields) {
        size_t size = causeway__v1__envelope__get_packed_size(env);
        if (zmq_msg_init_size(msg, size) != 0)
            return CW_ERR_NOMEM;
        causeway__v1__envelope__pack(env, zmq_msg_data(msg));
        return CW_OK;
    }
    /* The frames the broker sends (no clock): protobuf-c would size the
     * body once for the whole envelope and again when packing it; write
     * the header by hand and size the body once. The bytes are the ones
     * protobuf-c writes (fields in number order), checked by
     * cw_envelope_test. */
    size_t bsize = protobuf_c_message_get_packed_size(body);
    uint64_t bkey = ((uint64_t) env->body_case << 3) | 2; /* length-delimited */
    size_t size = scalar_len(1, env->version) + scalar_len(2, env->request_id) +
                  scalar_len(4, env->after_seq) + varint_len(bkey) + varint_len(bsize) + bsize;
    if (zmq_msg_init_size(msg, size) != 0)
        return CW_ERR_NOMEM;
    uint8_t *p = zmq_msg_data(msg);
    p = put_scalar(p, 1, env->version);
    p = put_scalar(p, 2, env->request_id);
    p = put_scalar(p, 4, env->after_seq);
    p = put_varint(p, bkey);
    p = put_varint(p, bsize);
    protobuf_c_message_pack(body, p);
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
    case CW_BODY(SESSIONS): return "sessions";
    case CW_BODY(QUEUES): return "queues";
    case CW_BODY(RECENT): return "recent";
    case CW_BODY(DELIVER): return "deliver";
    case CW_BODY(PRESENCE): return "presence";
    case CW_BODY(REPLY): return "reply";
    default: return "none";
    }
}
