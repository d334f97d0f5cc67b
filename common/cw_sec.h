/*  cw_sec: transport security shared by the broker, clockd and libcauseway.
 *
 *  Three things live here:
 *   - cw_endpoint_is_local(): the classifier behind "secure by default":
 *     which endpoints only reach this machine (loopback TCP, ipc, inproc);
 *   - certificate files (CZMQ zcert format, ZPL text with Z85 keys and a
 *     metadata section): loading a key pair, a public key, and writing a
 *     new pair with `user = NAME` metadata (causeway keygen);
 *   - cw_zap_t: a ZAP handler (ZeroMQ RFC 27) on the caller's thread and
 *     libzmq context. It answers the CURVE handshakes of a server socket
 *     whose ZMQ_ZAP_DOMAIN is CW_ZAP_DOMAIN: a client public key registered
 *     in the users directory is accepted with the key itself (Z85) as its
 *     ZAP User-Id, readable on every message with
 *     zmq_msg_gets(msg, "User-Id") and mapped to the registered user with
 *     cw_zap_user_of() (so a key removed by a reload stops mapping at once);
 *     any other key is refused (400), so the connection never completes its
 *     handshake.
 *
 *  Why a handler of our own and not CZMQ's zauth actor: zauth runs on
 *  CZMQ's global context and thread, while the broker and clockd own their
 *  contexts; and zauth returns the certificate metadata as ZAP properties
 *  but an empty User-Id, and libzmq lets a peer add properties of its own
 *  in its handshake, so only User-Id (set from the ZAP reply, which wins
 *  over peer properties) is a value the peer cannot forge. Certificates are
 *  still read with CZMQ's zcert.
 *
 *  Threads: cw_zap_t belongs to the thread that created it; the rest are
 *  pure functions.
 */
#ifndef CW_SEC_H
#define CW_SEC_H

#include <stdbool.h>
#include <stddef.h>

#define CW_ZAP_DOMAIN "causeway"
#define CW_Z85_KEY_LEN 40  /* a 32-byte key in Z85 text, without the NUL */

/* True if binding endpoint can only be reached from this machine:
 * tcp:// on 127.0.0.0/8, ::1 (also as ::ffff:127.x.y.z) or "localhost";
 * ipc:// and inproc://. Anything else (a wildcard, an interface name such
 * as "lo" (names are not resolved), a routable address, another transport,
 * a "source;destination" pair, something unparsable) is false. */
bool cw_endpoint_is_local(const char *endpoint);

/* The bind policy ("secure by default"): true if listening on endpoint
 * without CURVE could be reached from other machines, as far as can be
 * told: a network transport libzmq knows (tcp, ws, wss, udp, pgm, epgm,
 * norm, tipc, vmci) that is not cw_endpoint_is_local. An unknown scheme is
 * false: libzmq cannot bind it, and the bind's own error says so. */
bool cw_endpoint_needs_curve(const char *endpoint);

/* A key pair read from a certificate file. */
typedef struct {
    char public_txt[CW_Z85_KEY_LEN + 1];  /* Z85 public key */
    char secret_txt[CW_Z85_KEY_LEN + 1];  /* Z85 secret key; "" if the file had none */
    char user[65];                        /* metadata `user`, "" if none */
} cw_keypair_t;

/* Loads the certificate at path (as zcert_load would: "NAME.key" also reads
 * "NAME.key_secret" when present; "NAME.key_secret" alone holds both keys).
 * need_secret: fail if there is no secret key, and also if the secret key
 * does not belong to the public key. 0, or -1 with err filled. */
int cw_keypair_load(const char *path, bool need_secret, cw_keypair_t *kp, char *err,
                    size_t errlen);

/* A server's public key for a client: `arg` is a certificate file (public
 * or secret), or the 40-character Z85 key itself. Writes the Z85 key into
 * out (CW_Z85_KEY_LEN + 1 bytes). 0, or -1 with err filled. */
int cw_public_key_load(const char *arg, char *out, char *err, size_t errlen);

/* Writes a new key pair: DIR/NAME.key (public) and DIR/NAME.key_secret
 * (secret, mode 0600), with metadata `user = NAME` when user is not NULL.
 * Refuses to overwrite existing files. 0, or -1 with err filled. */
int cw_keypair_generate(const char *dir, const char *name, const char *user, char *err,
                        size_t errlen);

/* Applies CURVE client keys to a libzmq socket (before zmq_connect). 0, or
 * -1 with err filled (e.g. libzmq built without CURVE). */
int cw_curve_client_apply(void *sock, const cw_keypair_t *mine, const char *server_public_txt,
                          char *err, size_t errlen);

/* Makes sock a CURVE server with the secret key of kp, authenticated
 * through ZAP domain CW_ZAP_DOMAIN. 0, or -1 with err filled. */
int cw_curve_server_apply(void *sock, const cw_keypair_t *kp, char *err, size_t errlen);

typedef struct cw_zap cw_zap_t;

/* Binds the ZAP handler in ctx (inproc://zeromq.zap.01; one per context)
 * and loads the users directory: every regular file not ending in
 * "_secret" must be a certificate with `user` metadata naming a valid user
 * name; one user may have several keys, a key may not name two users.
 * NULL with err on failure. */
cw_zap_t *cw_zap_new(void *ctx, const char *users_dir, char *err, size_t errlen);

/* Closes the socket and frees the table; NULLs *p; safe on NULL and twice. */
void cw_zap_destroy(cw_zap_t **p);

/* The socket to poll for ZMQ_POLLIN. */
void *cw_zap_socket(cw_zap_t *z);

/* Answers every ZAP request waiting; never blocks. Refusals are logged at
 * warn with the peer's address and key. */
void cw_zap_handle(cw_zap_t *z);

/* Reads the users directory again. On error the old table stays and -1 is
 * returned with err filled; 0 otherwise. */
int cw_zap_reload(cw_zap_t *z, char *err, size_t errlen);

/* Number of keys registered. */
size_t cw_zap_key_count(const cw_zap_t *z);

/* The user a Z85 public key is registered for, or NULL (unknown key, or
 * key_txt NULL). Valid until the next cw_zap_reload. */
const char *cw_zap_user_of(const cw_zap_t *z, const char *key_txt);

#endif
