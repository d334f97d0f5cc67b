/*  cw_envelope: see cw_envelope.h. */
#include "cw_envelope.h"
#include "cw_status.h"
#include "cw_util.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

/* First field number of the body oneof: unknown fields from here on are
 * message types this peer does not know. */
#define BODY_FIELD_MIN 10

/* --- the encoding rules (PROTOCOL.md §5, step 3b) --------------------------
 *
 * protobuf-c 1.4 accepts some encodings that standard decoders (the C++
 * and upb runtimes behind python3-protobuf, Go, Java) refuse, and keeps
 * unknown fields to re-encode them: an unknown field inside a ClockEntry
 * travels on in every Deliver of the message and into the store, so one
 * such frame would make a recipient's Delivers and Fetch replies
 * undecodable (issue 11 item 1). And it cuts a string at its first zero
 * byte, so "ca\0ol" would log in as "ca" (item 4). wire_check walks the
 * raw bytes once, with the descriptors, at every nesting level: keys,
 * wire types, varints, lengths, and the bytes of every known string field.
 * Hand-written because protobuf-c has no strict mode and no other Debian
 * package checks protobuf wire bytes against protobuf-c descriptors.
 * Unknown length-delimited fields are opaque bytes to every decoder and
 * are not looked into. The recursion follows known message fields only,
 * and causeway.proto has no recursive message, so it is bounded; MAX_DEPTH
 * guards against a future one. */

#define FIELD_NUMBER_MAX ((UINT64_C(1) << 29) - 1)
#define MAX_DEPTH 16

/* Reads a varint of at most 10 bytes at *p (< end). 0 or -1. */
static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < 10 && *p < end; i++) {
        uint8_t c = *(*p)++;
        x |= (uint64_t) (c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

static const ProtobufCFieldDescriptor *field_of(const ProtobufCMessageDescriptor *d,
                                                uint64_t number)
{
    return d ? protobuf_c_message_descriptor_get_field(d, (unsigned) number) : NULL;
}

static int wire_check(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t len,
                      unsigned depth, const char **why)
{
    const uint8_t *end = p + len;
    if (depth > MAX_DEPTH) {
        *why = "messages nested too deeply";
        return -1;
    }
    while (p < end) {
        uint64_t key, v;
        if (get_varint(&p, end, &key) != 0) {
            *why = "a field key is cut off or longer than 10 bytes";
            return -1;
        }
        uint64_t number = key >> 3;
        unsigned wt = (unsigned) (key & 7);
        if (number == 0) {
            *why = "a field number is 0";
            return -1;
        }
        if (number > FIELD_NUMBER_MAX) {
            *why = "a field number is above 2^29-1, the protobuf maximum";
            return -1;
        }
        switch (wt) {
        case 0: /* varint */
            if (get_varint(&p, end, &v) != 0) {
                *why = "a varint is cut off or longer than 10 bytes";
                return -1;
            }
            break;
        case 1: /* 64-bit */
        case 5: /* 32-bit */
            if ((size_t) (end - p) < (wt == 1 ? 8u : 4u)) {
                *why = "a fixed-size field is cut off";
                return -1;
            }
            p += wt == 1 ? 8 : 4;
            break;
        case 2: { /* length-delimited */
            if (get_varint(&p, end, &v) != 0 || v > (uint64_t) (end - p)) {
                *why = "a length-delimited field is cut off";
                return -1;
            }
            const ProtobufCFieldDescriptor *f = field_of(d, number);
            if (f && f->type == PROTOBUF_C_TYPE_STRING) {
                if (memchr(p, 0, (size_t) v)) {
                    *why = "a string field holds a zero byte";
                    return -1;
                }
                if (!cw_utf8_valid((const char *) p, (size_t) v)) {
                    *why = "a string field is not valid UTF-8";
                    return -1;
                }
            } else if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                       wire_check(f->descriptor, p, (size_t) v, depth + 1, why) != 0) {
                return -1;
            }
            p += v;
            break;
        }
        case 3:
        case 4:
            *why = "groups (wire types 3 and 4) are not part of proto3";
            return -1;
        default:
            *why = "wire types 6 and 7 do not exist";
            return -1;
        }
    }
    return 0;
}

int cw_wire_check(const ProtobufCMessageDescriptor *d, const void *data, size_t len,
                  const char **why)
{
    const char *dummy;
    return wire_check(d, data, len, 0, why ? why : &dummy) == 0 ? CW_OK : CW_BAD_REQUEST;
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
    if (cw_wire_check(&causeway__v1__envelope__descriptor, data, len, detail) != CW_OK) {
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
    case CW_BODY(RECEIPT): return "receipt";
    default: return "none";
    }
}
