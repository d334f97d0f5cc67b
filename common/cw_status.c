/*  cw_status: names and explanations of the status codes. See cw_status.h. */
#include "cw_status.h"

#include <stddef.h>
#include <string.h>

typedef struct {
    int code;          /* the cw_status_t value */
    const char *name;  /* stable identifier, as in PROTOCOL.md */
    const char *text;  /* human explanation */
} status_row_t;

static const status_row_t rows[] = {
    {CW_OK, "OK", "success"},
    {CW_DELIVERED, "DELIVERED", "handed to the recipient's live session"},
    {CW_OFFLINE, "OFFLINE", "recipient is not logged in"},
    {CW_UNKNOWN_USER, "UNKNOWN_USER", "no such user on this broker"},
    {CW_ACCEPTED, "ACCEPTED", "stored durably (fsynced)"},
    {CW_NAME_TAKEN, "NAME_TAKEN", "name is held by a live session"},
    {CW_BAD_NAME, "BAD_NAME", "name is empty, too long, reserved or has invalid characters"},
    {CW_ALREADY_LOGGED_IN, "ALREADY_LOGGED_IN", "this connection already has a session"},
    {CW_NOT_LOGGED_IN, "NOT_LOGGED_IN", "log in first"},
    {CW_TOO_MANY_SESSIONS, "TOO_MANY_SESSIONS", "broker session limit reached"},
    {CW_UNAUTHORIZED, "UNAUTHORIZED", "not allowed"},
    {CW_BAD_REQUEST, "BAD_REQUEST", "malformed request"},
    {CW_UNKNOWN_TYPE, "UNKNOWN_TYPE", "unknown message type"},
    {CW_UNSUPPORTED_VERSION, "UNSUPPORTED_VERSION", "unsupported protocol version"},
    {CW_TOO_LARGE, "TOO_LARGE", "message over the size limit"},
    {CW_TOO_MANY_RECIPIENTS, "TOO_MANY_RECIPIENTS", "more recipients than allowed"},
    {CW_QUEUE_FULL, "QUEUE_FULL", "recipient queue is full"},
    {CW_STORE_ERROR, "STORE_ERROR", "message store failed; nothing stored"},
    {CW_EXPIRED, "EXPIRED", "message expired before delivery"},
    {CW_NOT_DURABLE, "NOT_DURABLE", "broker has no durable store"},
    {CW_FLOODED, "FLOODED", "recipient cannot take more messages now"},
    {CW_RATE_LIMITED, "RATE_LIMITED", "too many requests per second from this session"},
    {CW_STORE_FULL, "STORE_FULL", "the broker's store is full; nothing stored"},
    {CW_INTERNAL, "INTERNAL", "internal broker error"},
    {CW_SHUTTING_DOWN, "SHUTTING_DOWN", "broker is shutting down"},
    {CW_DAMAGED, "DAMAGED", "a message was lost: damaged in the store"},
    {CW_ERR_TIMEOUT, "TIMEOUT", "no reply from broker in time"},
    {CW_ERR_DISCONNECTED, "DISCONNECTED", "connection to broker lost"},
    {CW_ERR_IO, "IO_ERROR", "system call failed"},
    {CW_ERR_NOMEM, "NO_MEMORY", "out of memory"},
    {CW_ERR_INVALID, "INVALID_ARGUMENT", "invalid argument"},
    {CW_ERR_HANDSHAKE, "HANDSHAKE_FAILED", "security handshake with the server failed"},
    {CW_ERR_UNREACHABLE, "UNREACHABLE", "cannot connect to the broker"},
};

static const status_row_t *find(int code)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (rows[i].code == code)
            return &rows[i];
    return NULL;
}

const char *cw_status_name(int status)
{
    const status_row_t *r = find(status);
    return r ? r->name : "UNKNOWN_STATUS";
}

const char *cw_strerror(int status)
{
    const status_row_t *r = find(status);
    return r ? r->text : "unknown status";
}

int cw_status_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++)
        if (strcmp(rows[i].name, name) == 0)
            return rows[i].code;
    return -1;
}

int cw_status_is_success(int status)
{
    return status == CW_OK || status == CW_DELIVERED || status == CW_ACCEPTED;
}
