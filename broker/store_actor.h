/*  store_actor: the store thread. The router hands it durable work and
 *  never blocks on disk.
 *
 *  Ownership and threads. cw_store_actor_new takes the cw_store_t and moves
 *  it into a CZMQ actor thread (zactor); from then on only that thread
 *  touches the store, and it closes it when the actor is destroyed. Every
 *  other function of this header is for the thread that created the actor
 *  (the router), except cw_store_actor_stats, which any thread may call.
 *
 *  Flow. The router submits requests (append, ack, read, history,
 *  add_user), each tagged with a 64-bit token of its choosing: a stable id
 *  (e.g. a pending-request number), never a pointer, because the reply comes
 *  back on another turn of the router's loop when the object may be gone.
 *  Submitting never blocks: once about max_queued requests wait in the pipe
 *  (libzmq's high-water mark; it learns of the actor's progress in steps of
 *  half that, so the real bound is between max_queued/2 and max_queued plus
 *  a little), the submit returns CW_FLOODED and nothing is queued: the
 *  router answers the client with an error instead of blocking.
 *  The actor loop: block for one request; then take every request already
 *  waiting in the pipe without blocking (up to 8192); apply them all, in
 *  arrival order, inside ONE store transaction; COMMIT (one WAL fsync for
 *  the whole group: group commit); only then send one reply per request, in
 *  arrival order. So a reply saying CW_OK/CW_ACCEPTED always describes
 *  committed, fsynced data. If the commit fails, every request of the group
 *  is answered CW_STORE_ERROR (and nothing of the group is stored).
 *  The router polls cw_store_actor_sock (zpoller/zloop, readable when a
 *  reply waits) and drains replies with cw_store_actor_recv(a, 0).
 *
 *  Wire format of the pipe (one frame per request and per reply; integers
 *  little-endian; "str" is u32 length, the bytes, then a NUL not counted in
 *  the length, so the receiver can point into the frame):
 *    request  u8 kind | u8 flags | u16 0 | u32 n | u64 token | u64 arg |
 *             u32 ttl_s | body
 *      APPEND    flags bit0 broadcast; n = recipients; arg = timestamp_us;
 *                body = str sender, str message_id, str text, str clock,
 *                n x str recipient
 *      ACK       arg = up_to_seq; n = 1: make read receipts; body = str user
 *      READ      arg = from_seq; n = max; body = str user
 *      HISTORY   n = last_n; body = str user
 *      ADD_USER  body = str user
 *      CLOCK     arg = the user's own entry; body = str user, str clock
 *    reply    u8 kind | u8 flags | u16 0 | i32 status | u64 token |
 *             u64 pending | u32 n | body
 *      flags bit0 duplicate (APPEND), bit1 created (ADD_USER); pending is
 *      the user's unacknowledged count after an ACK or READ.
 *      APPEND    n x (i32 status, u64 seq), in the request's order; with
 *                the duplicate flag then u32 m, m x (i32 status, u64 seq,
 *                str name): the original's recipients (cw_store_original)
 *      READ,     n x entry: u64 seq, i32 status, u8 flags (bit0 acked,
 *      HISTORY,    bit1 broadcast), u8[3] 0, u64 timestamp_us,
 *      ACK         (ACK: the acknowledged entries that made read receipts,
 *                  receipts.h)
 *                  u64 expires_us, str sender, str message_id, str text,
 *                  str clock, u32 n_to, n_to x str name
 *  The pipe also carries CZMQ's "$TERM" (sent by zactor_destroy); request
 *  kinds are 1..6, so a request never looks like it.
 */
#ifndef CW_STORE_ACTOR_H
#define CW_STORE_ACTOR_H

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct cw_store_actor cw_store_actor_t;
typedef struct cw_store_reply cw_store_reply_t;

typedef enum {
    CW_STORE_REQ_APPEND = 1,
    CW_STORE_REQ_ACK = 2,
    CW_STORE_REQ_READ = 3,
    CW_STORE_REQ_HISTORY = 4,
    CW_STORE_REQ_ADD_USER = 5,
    CW_STORE_REQ_CLOCK = 6,
} cw_store_req_kind_t;

/* Upper bounds of the commit latency histogram's buckets, microseconds
 * (cw_store_actor_stats_t.commit_hist; a last bucket counts the rest). */
#define CW_COMMIT_BUCKETS 14
#define CW_COMMIT_BOUNDS_US                                                              \
    {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, \
     1000000, 2500000}

/* Counters, updated by the actor after each group. */
typedef struct {
    uint64_t requests;       /* requests answered */
    uint64_t groups;         /* groups processed (one transaction each) */
    uint64_t commits;        /* commits that wrote something = WAL fsyncs */
    uint64_t appended;       /* messages stored (a multicast counts once) */
    uint64_t entries;        /* queue entries created */
    uint64_t duplicates;     /* appends answered from the dedup record */
    uint64_t failed_groups;  /* groups answered CW_STORE_ERROR */
    uint64_t max_group;      /* most requests seen in one group */
    uint64_t pending;        /* unacknowledged entries over all users */
    uint64_t users;          /* known users */
    /* Commit latency: every group's COMMIT (the WAL fsync) timed on the
     * store thread. commit_hist[i] counts the commits that took at most
     * bound i (not cumulative); commit_hist[CW_COMMIT_BUCKETS] the longer
     * ones. Copied bucket by bucket: a reader may see one commit in the
     * buckets before it is in commit_count (never the reverse). */
    uint64_t commit_hist[CW_COMMIT_BUCKETS + 1];
    uint64_t commit_sum_us;  /* their total duration, microseconds */
    uint64_t commit_count;   /* commits timed */
} cw_store_actor_stats_t;

/* Starts the store thread. Takes *store (NULLs it) whatever happens; on
 * failure the store is closed. max_queued bounds the requests waiting in
 * the pipe (0 = 100000). Returns the actor, or NULL (out of memory, thread
 * creation failed). */
cw_store_actor_t *cw_store_actor_new(cw_store_t **store, size_t max_queued);

/* Stops the thread after it has answered every request it received,
 * closes the store, NULLs *p. Replies not yet received are discarded.
 * Safe on NULL and twice. */
void cw_store_actor_destroy(cw_store_actor_t **p);

/* The router's end of the pipe, to poll for replies. Owned by the actor. */
zsock_t *cw_store_actor_sock(cw_store_actor_t *a);

/* Submit a request. All copy what they need (the caller keeps its data)
 * and return CW_OK (one reply with this token will follow), CW_FLOODED
 * (max_queued requests waiting: nothing queued, no reply), CW_ERR_INVALID
 * (NULL or oversized arguments: nothing queued), CW_ERR_NOMEM,
 * CW_SHUTTING_DOWN (the pipe is closed). */
int cw_store_actor_append(cw_store_actor_t *a, uint64_t token, const cw_store_msg_t *msg);
int cw_store_actor_ack(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t up_to_seq);
/* The same; receipts false skips the look for read receipts (receipts.h),
 * for a caller that knows none of the acknowledged entries asked for one
 * (cw_store_actor_ack looks). */
int cw_store_actor_ack_receipts(cw_store_actor_t *a, uint64_t token, const char *user,
                                uint64_t up_to_seq, bool receipts);
int cw_store_actor_read(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t from_seq,
                        uint32_t max);
int cw_store_actor_history(cw_store_actor_t *a, uint64_t token, const char *user,
                           uint32_t last_n);
int cw_store_actor_add_user(cw_store_actor_t *a, uint64_t token, const char *user);
/* Saves a user's resume clock (cw_store_save_clock). */
int cw_store_actor_save_clock(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t own,
                              const uint8_t *clock, size_t clock_len);

/* Receives one reply: waits up to timeout_ms (0 = don't wait, -1 =
 * forever). Returns the reply (caller destroys it) or NULL if none came. */
cw_store_reply_t *cw_store_actor_recv(cw_store_actor_t *a, int timeout_ms);

/* A copy of the counters. Any thread; can't fail. */
void cw_store_actor_stats(cw_store_actor_t *a, cw_store_actor_stats_t *out);

/* --- Replies -------------------------------------------------------------
 * The status of a reply is that of the store call (store.h):
 *   APPEND    cw_store_msg_t.status; per recipient status and seq
 *   ACK       cw_receipts_ack (cw_store_ack and the read receipts it
 *             made); pending; entries: those that made a receipt
 *   READ      cw_store_read; entries; pending
 *   HISTORY   cw_store_history; entries
 *   ADD_USER  cw_store_add_user; created
 *   CLOCK     cw_store_save_clock
 * or CW_STORE_ERROR for every request of a group whose commit failed. */
cw_store_req_kind_t cw_store_reply_kind(const cw_store_reply_t *r);
uint64_t cw_store_reply_token(const cw_store_reply_t *r);
int cw_store_reply_status(const cw_store_reply_t *r);
int cw_store_reply_duplicate(const cw_store_reply_t *r);
int cw_store_reply_created(const cw_store_reply_t *r);
uint64_t cw_store_reply_pending(const cw_store_reply_t *r);
/* APPEND: recipients in the request's order (i < cw_store_reply_rcpts). */
size_t cw_store_reply_rcpts(const cw_store_reply_t *r);
int cw_store_reply_rcpt_status(const cw_store_reply_t *r, size_t i);
uint64_t cw_store_reply_rcpt_seq(const cw_store_reply_t *r, size_t i);
/* APPEND duplicate: the original message's recipients as stored (names,
 * statuses, seqs, in its order), valid until the reply is destroyed; 0
 * (and *rcpts NULL) for anything else. */
size_t cw_store_reply_original(const cw_store_reply_t *r, const cw_store_rcpt_t **rcpts);
/* READ/HISTORY (ACK: the entries that made read receipts): the entries,
 * valid until the reply is destroyed. */
const cw_store_entry_t *cw_store_reply_entries(const cw_store_reply_t *r, size_t *n);
/* Frees the reply and NULLs *p; safe on NULL and twice. */
void cw_store_reply_destroy(cw_store_reply_t **p);

#endif
