/*  store_actor: the SQLite backend of store_if.h. Runs store.c on its own
 *  thread, so the router never blocks on disk; cw_store_sqlite_ops (the
 *  operations table the router uses) is a thin layer over the functions
 *  below, which tests and benchmarks also call directly.
 *
 *  Ownership and threads. cw_store_actor_new takes the cw_store_t and moves
 *  it into its own thread (store_pipe.h); from then on only that thread
 *  touches the store, and it closes it when the actor is destroyed. Every
 *  other function of this header is for the thread that created the actor
 *  (the router), except cw_store_actor_stats, which any thread may call.
 *
 *  Flow. The router submits requests (store_if.h's kinds), each tagged with
 *  a 64-bit token of its choosing (never 0, never a pointer). A submit
 *  builds one owned request object (the arguments copied into one
 *  allocation) and passes the POINTER through the actor's pipe: no bytes
 *  are encoded or decoded between the two threads of one process (STYLE.md,
 *  "hand over owned objects, not bytes"). Ownership of the object moves
 *  with it:
 *      router --(submit: pipe)--> actor --(reply: pipe)--> router
 *  The router owns it until the pipe accepted it (a refused submit frees
 *  it), the actor from its receipt until the pipe accepted its reply, the
 *  router again from cw_store_actor_recv (it destroys it with
 *  cw_store_reply_destroy): the reply IS the request object, with its
 *  results (entries read by store.c are handed over as they are). At any
 *  moment exactly one thread owns each object; the actor never touches an
 *  object it has sent.
 *  Submitting never blocks: once about max_queued requests wait in the pipe
 *  (libzmq's high-water mark; it learns of the actor's progress in steps of
 *  half that, so the real bound is between max_queued/2 and max_queued plus
 *  a little), the submit returns CW_FLOODED and nothing is queued.
 *  The actor loop: block for one request; then take every request already
 *  waiting in the pipe without blocking (up to 8192); apply them all, in
 *  arrival order, inside ONE store transaction; COMMIT (one WAL fsync for
 *  the whole group: group commit); only then send every reply, in arrival
 *  order, then a CW_STORE_EV_DONE event numbering the group. So a reply
 *  saying CW_OK/CW_ACCEPTED always describes committed, fsynced data. If
 *  the commit fails, the group is retried in halves (each its own
 *  transaction); a request that fails on its own is answered
 *  CW_STORE_ERROR.
 *  Shutdown (cw_store_actor_destroy): a flush marker goes through the pipe
 *  and every object that comes back before it is freed; then the thread
 *  stops and the store is closed. If the thread has stopped already (its
 *  pipe broke), it freed what it still held. So nothing leaks with
 *  requests in flight.
 *  Pipe frames: 16 bytes {u64 magic, pointer}; the pipe also carries
 *  CZMQ's 5-byte "$TERM" and its 8-byte signal, which never look like one.
 */
#ifndef CW_STORE_ACTOR_H
#define CW_STORE_ACTOR_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "store_if.h"

typedef struct cw_store_actor cw_store_actor_t;

/* Counters, updated by the actor after each group (store_if.h). */
typedef cw_store_counters_t cw_store_actor_stats_t;

/* Starts the store thread. Takes *store (NULLs it) whatever happens; on
 * failure the store is closed. max_queued bounds the requests waiting in
 * the pipe (0 = 100000). Returns the actor, or NULL (out of memory, thread
 * creation failed). */
cw_store_actor_t *cw_store_actor_new(cw_store_t **store, size_t max_queued);

/* Stops the thread after it has answered every request it received,
 * closes the store, NULLs *p. Replies not yet received are freed.
 * Safe on NULL and twice. */
void cw_store_actor_destroy(cw_store_actor_t **p);

/* The router's end of the pipe, to poll for replies. Owned by the actor. */
zsock_t *cw_store_actor_sock(cw_store_actor_t *a);

/* Submit a request: see store_if.h's contract (copies its arguments;
 * CW_OK, CW_FLOODED, CW_ERR_INVALID, CW_ERR_NOMEM, CW_SHUTTING_DOWN). */
int cw_store_actor_append(cw_store_actor_t *a, uint64_t token, const cw_store_msg_t *msg);
/* ACK making read receipts (receipts.h): cw_store_actor_ack_receipts with
 * receipts true. */
int cw_store_actor_ack(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t up_to_seq);
/* receipts: also make the receipts the acknowledged entries asked for; the
 * reply's entries are the receipt entries made (store_if.h, ACK). */
int cw_store_actor_ack_receipts(cw_store_actor_t *a, uint64_t token, const char *user,
                                uint64_t up_to_seq, bool receipts);
int cw_store_actor_read(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t from_seq,
                        uint32_t max);
int cw_store_actor_history(cw_store_actor_t *a, uint64_t token, const char *user,
                           uint32_t last_n);
int cw_store_actor_add_user(cw_store_actor_t *a, uint64_t token, const char *user);
int cw_store_actor_save_clock(cw_store_actor_t *a, uint64_t token, const char *user, uint64_t own,
                              const uint8_t *clock, size_t clock_len);
int cw_store_actor_claim_session(cw_store_actor_t *a, uint64_t token, const char *user);
int cw_store_actor_release_session(cw_store_actor_t *a, uint64_t token, const char *user);
int cw_store_actor_live_send(cw_store_actor_t *a, uint64_t token, const char *const *users,
                             size_t n_users);
int cw_store_actor_who_page(cw_store_actor_t *a, uint64_t token, const char *after,
                            uint32_t max);

/* Receives one reply or event: waits up to timeout_ms (0 = don't wait,
 * -1 = forever). Returns it (caller destroys it with
 * cw_store_reply_destroy) or NULL if none came. */
cw_store_reply_t *cw_store_actor_recv(cw_store_actor_t *a, int timeout_ms);

/* A copy of the counters. Any thread; can't fail. */
void cw_store_actor_stats(cw_store_actor_t *a, cw_store_actor_stats_t *out);

/* Reply statuses are those of the store calls (store.h):
 *   APPEND    cw_store_msg_t.status; per recipient status and seq; a
 *             duplicate: the original's recipients (cw_store_original)
 *   ACK       cw_store_ack; pending
 *   READ      cw_store_read; entries; pending
 *   HISTORY   cw_store_history; entries
 *   ADD_USER  cw_store_add_user; created
 *   CLOCK     cw_store_save_clock
 * or CW_STORE_ERROR for a request whose group (and retry) failed. */

#endif
