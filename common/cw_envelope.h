/*  cw_envelope: the one frame of the causeway protocol.
 *
 *  Wraps the protobuf-c generated Envelope: decoding with the protocol's
 *  validation rules (size, version, body present and known), encoding
 *  straight into a zmq_msg_t, and small builders. Thread-safe: no shared
 *  state. Decoded envelopes are owned by the caller (cw_env_free).
 */
#ifndef CW_ENVELOPE_H
#define CW_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "causeway.pb-c.h"

#define CW_PROTOCOL_VERSION 1

/* Short names for the generated types. */
typedef Causeway__V1__Envelope cw_env_t;
typedef Causeway__V1__Reply cw_reply_msg_t;
typedef Causeway__V1__Deliver cw_deliver_msg_t;
typedef Causeway__V1__Presence cw_presence_msg_t;
typedef Causeway__V1__Send cw_send_msg_t;
typedef Causeway__V1__UserInfo cw_userinfo_msg_t;
typedef Causeway__V1__RecipientStatus cw_rcpt_msg_t;
typedef Causeway__V1__ClockEntry cw_clock_entry_msg_t;

#define CW_BODY(x) CAUSEWAY__V1__ENVELOPE__BODY_##x

/* Decodes one frame. Checks, in this order: len <= max_frame (TOO_LARGE),
 * protobuf-c can decode it (BAD_REQUEST, *request_id 0), the encoding
 * rules of cw_wire_check (BAD_REQUEST, *request_id set), version ==
 * CW_PROTOCOL_VERSION (UNSUPPORTED_VERSION), a body present: an
 * unset body whose frame holds an unknown field in the body range (>= 10)
 * is UNKNOWN_TYPE, otherwise BAD_REQUEST.
 * Returns CW_OK and sets *out (caller frees with cw_env_free). On failure
 * *out is NULL, *detail points at a static explanation, and if the frame
 * could be decoded far enough *request_id holds its request id (else 0). */
int cw_env_decode(const void *data, size_t len, size_t max_frame, cw_env_t **out,
                  uint64_t *request_id, const char **detail);

/* Checks len bytes at data, an encoded message of type d, against the
 * encoding rules every standard protobuf decoder enforces and causeway's
 * own (PROTOCOL.md §5, step 3b), at every nesting level: every field number
 * is 1 .. 2^29-1; wire types are 0, 1, 2 or 5 (no groups); varints and keys
 * have at most 10 bytes and nothing is cut off; every known string field is
 * valid UTF-8 without a zero byte. Unknown length-delimited fields are not
 * looked into. Returns CW_OK, or CW_BAD_REQUEST with *why (may be NULL)
 * pointing at a static explanation. Thread-safe; can't fail otherwise. */
int cw_wire_check(const ProtobufCMessageDescriptor *d, const void *data, size_t len,
                  const char **why);

/* Decodes a frame without any of cw_env_decode's checks (for frames this
 * process packed itself). NULL if it is not an Envelope or out of memory.
 * Free with cw_env_free. */
cw_env_t *cw_env_unpack(const void *data, size_t len);

/* Frees an envelope from cw_env_decode or cw_env_unpack (never one made
 * otherwise: decoded envelopes live in one arena) and NULLs the pointer;
 * safe on NULL. */
void cw_env_free(cw_env_t **env);

/* Initialises a stack envelope: version 1, the given request id, no body. */
void cw_env_init(cw_env_t *env, uint64_t request_id);

/* Packs env into a fresh zmq message (one allocation, no extra copy).
 * Returns CW_OK or CW_ERR_NOMEM; on failure msg is left closed. */
int cw_env_to_msg(const cw_env_t *env, void *zmq_msg);

/* Packs env into a malloc'd buffer; caller frees *buf. CW_OK or CW_ERR_NOMEM. */
int cw_env_pack(const cw_env_t *env, uint8_t **buf, size_t *len);

/* Sends env as one frame on a zmq socket (raw libzmq handle), preceded by a
 * routing-id frame when id is not NULL (ROUTER sockets). flags are
 * zmq_send flags for the last frame (e.g. ZMQ_DONTWAIT).
 * Returns 0 or -1 with errno set by libzmq. */
int cw_env_send(void *sock, const void *id, size_t id_len, const cw_env_t *env, int flags);

/* Name of the envelope's body type ("send", "login", ...), "none" if unset. */
const char *cw_env_body_name(const cw_env_t *env);

#endif
