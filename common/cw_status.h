/*  cw_status: the one error enum of causeway.
 *
 *  Values 0..99 are the wire Status codes of proto/causeway.proto, number for
 *  number, so a status can travel in a Reply unchanged. Values from 100 up
 *  are local to a process (the client library's timeouts, I/O failures) and
 *  never appear on the wire. CW_OK is 0. Thread-safe: pure functions.
 */
#ifndef CW_STATUS_H
#define CW_STATUS_H

typedef enum {
    CW_OK = 0,
    CW_DELIVERED = 1,
    CW_OFFLINE = 2,
    CW_UNKNOWN_USER = 3,
    CW_ACCEPTED = 4,
    CW_NAME_TAKEN = 10,
    CW_BAD_NAME = 11,
    CW_ALREADY_LOGGED_IN = 12,
    CW_NOT_LOGGED_IN = 13,
    CW_TOO_MANY_SESSIONS = 14,
    CW_UNAUTHORIZED = 15,
    CW_BAD_REQUEST = 20,
    CW_UNKNOWN_TYPE = 21,
    CW_UNSUPPORTED_VERSION = 22,
    CW_TOO_LARGE = 23,
    CW_TOO_MANY_RECIPIENTS = 24,
    CW_QUEUE_FULL = 30,
    CW_STORE_ERROR = 31,
    CW_EXPIRED = 32,
    CW_NOT_DURABLE = 33,
    CW_FLOODED = 34,
    CW_RATE_LIMITED = 35,
    CW_STORE_FULL = 36,
    CW_INTERNAL = 40,
    CW_SHUTTING_DOWN = 41,
    CW_DAMAGED = 42,           /* durable: a stored entry failed its checksum (issue 11 item 7) */
    /* Local codes: never on the wire. */
    CW_ERR_TIMEOUT = 100,      /* no reply within the caller's timeout */
    CW_ERR_DISCONNECTED = 101, /* broker connection lost; request not sent or reply lost */
    CW_ERR_IO = 102,           /* a system call failed; see errno/log */
    CW_ERR_NOMEM = 103,        /* allocation failed */
    CW_ERR_INVALID = 104,      /* caller passed an invalid argument */
    CW_ERR_HANDSHAKE = 105,    /* the security handshake with the server failed
                                  (plain vs CURVE, key refused, wrong server key) */
    CW_ERR_UNREACHABLE = 106,  /* no connection to the server can be made (TCP
                                  connect refused or failed) */
} cw_status_t;

/* Short stable name of a status ("NAME_TAKEN"); "UNKNOWN_STATUS" for a
 * value outside the enum. Never NULL. */
const char *cw_status_name(int status);

/* One-line human explanation of a status. Never NULL. */
const char *cw_strerror(int status);

/* Parse a name back into a status; returns -1 if there is no such name. */
int cw_status_from_name(const char *name);

/* True for statuses a Reply may carry for a whole request that succeeded. */
int cw_status_is_success(int status);

#endif
