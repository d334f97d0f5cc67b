/*  store: the durable message store of the broker (phase 2, per-user queues).
 *
 *  What it owns. A data directory holding LOCK (an flock'ed lock file: one
 *  broker per directory) and causeway.db (+ causeway.db-wal): the user log,
 *  one queue per known user, and the messages those queues point at. Each
 *  queue hands out sequence numbers (seqs) that are monotonic per user and
 *  never reused, also across restarts.
 *
 *  Who calls it. Exactly one thread at a time: in the broker that is the
 *  store actor's thread (store_actor.h), so the router never calls this
 *  header while running. The router may use it directly before it starts
 *  the actor (open, list_users) and tests use it directly. Not thread-safe.
 *
 *  Backends. This header is the SQLite backend's synchronous API, internal
 *  to it: the router never calls it (it talks to store_if.h's operations
 *  table; store_actor.c runs this store on its own thread behind that
 *  table). Other backends (store_redis.c) implement store_if.h directly.
 *
 *  Results and durability. No result of a write may be reported to a client
 *  before the transaction holding it committed (STYLE habit 7): every write
 *  function either runs in its own transaction (committed, i.e. fsynced,
 *  before it returns) or, between cw_store_txn_begin and cw_store_txn_commit,
 *  joins the caller's transaction; then its results are provisional until
 *  cw_store_txn_commit returns CW_OK (group commit).
 *
 *  Errors. Every function returns a cw_status_t. CW_STORE_ERROR means the
 *  backend failed (disk full, I/O error, corruption): the transaction was
 *  rolled back, nothing of it is stored, and cw_store_errmsg() says why. If
 *  the store cannot tell whether the data on disk matches what it believes
 *  (a failed COMMIT, a failed ROLLBACK) it enters a sticky failed state and
 *  refuses every further call with CW_STORE_ERROR until it is closed and
 *  reopened (which re-runs recovery and the integrity check).
 */
#ifndef CW_STORE_H
#define CW_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "store_if.h" /* the message, entry and user types */

typedef struct cw_store cw_store_t;

/* Options of cw_store_open; start from cw_store_options_init. */
typedef struct {
    uint32_t queue_quota;     /* max unacknowledged messages per user; 0 = unlimited */
    uint32_t retention;       /* acknowledged messages kept per user for history; 0 = none */
    uint32_t default_ttl_s;   /* TTL of messages appended with ttl_s 0; 0 = never expire */
    uint32_t dedup_window_s;  /* a (sender, message_id) is remembered at least this long
                                 after receipt, and always while some queue holds it */
    const char *sqlite_vfs;   /* test hook: name of a registered SQLite VFS; NULL = default */
    int recover;              /* open even if committed data is missing (damaged WAL):
                                 report it, move every seq past what was lost (the
                                 broker's --recover-store) */
} cw_store_options_t;

/* Defaults: no quota, no retention, no TTL, dedup window 86400 s. */
void cw_store_options_init(cw_store_options_t *opt);


/* Counters since open. Only committed work is counted. */
typedef struct {
    uint64_t commits;         /* write transactions committed = WAL fsyncs */
    uint64_t appended;        /* messages stored (a multicast counts once) */
    uint64_t entries;         /* queue entries created (one per accepted recipient) */
    uint64_t duplicates;      /* messages answered from the dedup record */
    uint64_t queue_full;      /* recipients refused for quota */
    uint64_t expired;         /* entries dropped because their TTL ran out */
    uint64_t acked;           /* entries acknowledged */
    uint64_t errors;          /* transactions that failed (CW_STORE_ERROR) */
    uint64_t damaged;         /* rows read that failed their check (CW_DAMAGED entries,
                                 damaged duplicate records), counted at every read */
    uint64_t pending;         /* unacknowledged entries over all users, now */
    uint64_t users;           /* known users, now */
} cw_store_stats_t;

/* Opens (creating if needed) the store in data_dir: creates the directory
 * (mode 0700) if it is missing, takes an exclusive flock on data_dir/LOCK,
 * opens data_dir/causeway.db in WAL mode with synchronous=FULL, runs
 * recovery and PRAGMA quick_check, creates or checks the schema, and loads
 * the user log. opt may be NULL (defaults).
 * Returns CW_OK and sets *out (caller closes with cw_store_close).
 * On failure *out is NULL, nothing is left open or locked, err (if not NULL)
 * holds a one-line explanation, and the status is CW_ERR_INVALID (bad
 * arguments), CW_ERR_IO (directory or lock file unusable; the lock is held
 * by another process: "data dir ... is in use by another broker (pid N)"),
 * or CW_STORE_ERROR (SQLite failed, integrity check failed, unknown schema). */
int cw_store_open(const char *data_dir, const cw_store_options_t *opt, cw_store_t **out,
                  char *err, size_t err_size);

/* Closes the store and releases the lock; NULLs *p. Safe on NULL and twice.
 * An open transaction is rolled back. Can't fail (errors are logged). */
void cw_store_close(cw_store_t **p);

/* Last error message (SQLite's, with context); "" if none. Valid until the
 * next call. */
const char *cw_store_errmsg(const cw_store_t *s);

/* Starts a group: the writes until cw_store_txn_commit share one
 * transaction and one fsync. CW_OK, CW_STORE_ERROR, or CW_ERR_INVALID if a
 * group is already open. */
int cw_store_txn_begin(cw_store_t *s);
/* Commits the group. CW_OK: every result given inside the group is
 * durable. CW_STORE_ERROR: nothing of the group is stored (and if the
 * failure left that in doubt, the store is now in its failed state); every
 * result given inside the group must be reported as CW_STORE_ERROR.
 * If an operation inside the group failed, the group was already rolled
 * back, later operations were refused, and commit returns CW_STORE_ERROR. */
int cw_store_txn_commit(cw_store_t *s);
/* Abandons the group: nothing of it is stored. Can't fail (a failed
 * rollback puts the store in its failed state). */
void cw_store_txn_rollback(cw_store_t *s);

/* Adds name to the user log (and creates its empty queue) unless known.
 * *created (may be NULL) is 1 if it was new. Returns CW_OK, CW_BAD_NAME
 * (empty or longer than CW_NAME_MAX_HARD), CW_STORE_ERROR. */
int cw_store_add_user(cw_store_t *s, const char *name, int *created);

/* The user log in order of first appearance. Caller frees with
 * cw_store_users_free. CW_OK or CW_STORE_ERROR / CW_ERR_NOMEM (*users NULL). */
int cw_store_list_users(cw_store_t *s, cw_store_user_t **users, size_t *n);
/* (cw_store_users_free: store_if.h.) */

/* Appends n messages in one transaction (one fsync), or inside the open
 * group. For each message: if (sender, message_id) is already stored, its
 * original per-recipient outcome is copied into rcpts (matched by name; a
 * name the original did not have gets CW_BAD_REQUEST), duplicate is set
 * and nothing is stored. Otherwise each recipient gets CW_ACCEPTED and the next
 * seq of its queue, or CW_QUEUE_FULL (quota reached; expired entries are
 * dropped first to make room), or CW_UNKNOWN_USER; a name repeated within
 * one message is queued once and reported twice with the same seq.
 * msg->status is then
 *   CW_OK           stored for at least one recipient (see rcpts);
 *   CW_QUEUE_FULL   stored for none, at least one queue was full;
 *   CW_UNKNOWN_USER stored for none, every recipient unknown;
 *   CW_BAD_REQUEST  malformed (no sender, no recipients, NULL text);
 *   CW_STORE_ERROR  the transaction failed.
 * A message refused for everyone leaves no dedup record (a retry with the
 * same id is a fresh attempt).
 * Returns CW_OK (each message has its status), CW_STORE_ERROR (nothing of
 * the batch is stored, every status is CW_STORE_ERROR), CW_ERR_INVALID
 * (msgs NULL with n > 0; nothing done). */
int cw_store_append_batch(cw_store_t *s, cw_store_msg_t *msgs, size_t n);

/* The recipients of the message (sender, message_id) as stored: the
 * original's per-recipient outcome (CW_ACCEPTED with its seq, CW_QUEUE_FULL,
 * CW_UNKNOWN_USER), in the original's order, whatever a repeat names. This
 * is what a repeat is answered with (PROTOCOL.md §13.2). *rcpts is one
 * allocation, names included; the caller frees it with free(). Returns
 * CW_OK, CW_UNKNOWN_USER (no such message is remembered; *rcpts NULL),
 * CW_ERR_INVALID (an empty id), CW_ERR_NOMEM, CW_STORE_ERROR (also when
 * the record fails its checksum: damaged, logged). Read-only. */
int cw_store_original(cw_store_t *s, const char *sender, const char *message_id,
                      cw_store_rcpt_t **rcpts, size_t *n);

/* Acknowledges every message of user's queue up to and including up_to_seq.
 * Acknowledged entries beyond the newest `retention` ones are deleted.
 * *pending (may be NULL) receives the user's unacknowledged count after it.
 * Returns CW_OK (also when up_to_seq is at or below what was acked), 
 * CW_UNKNOWN_USER, CW_BAD_REQUEST (up_to_seq above the last seq ever
 * assigned to user: nothing done), CW_STORE_ERROR. */
int cw_store_ack(cw_store_t *s, const char *user, uint64_t up_to_seq, uint64_t *pending);

/* Up to max unacknowledged entries of user's queue with seq >= from_seq, in
 * seq order. Entries whose TTL ran out by now_us are returned once with
 * status CW_EXPIRED (no text) and deleted; they count toward max. Entries
 * that fail their checksum are returned (each time, until acknowledged)
 * with status CW_DAMAGED and no data, and logged; they count toward max.
 * Caller frees with cw_store_entries_free. Returns CW_OK (possibly 0
 * entries), CW_UNKNOWN_USER, CW_STORE_ERROR, CW_ERR_NOMEM (nothing changed);
 * *entries is NULL when *n is 0. */
int cw_store_read(cw_store_t *s, const char *user, uint64_t from_seq, size_t max,
                  uint64_t now_us, cw_store_entry_t **entries, size_t *n);

/* The last last_n entries of user's queue, acknowledged (kept by retention)
 * or not, oldest first. Unacknowledged expired ones have status CW_EXPIRED
 * (left for cw_store_read to report). Read-only. Same returns as read. */
int cw_store_history(cw_store_t *s, const char *user, size_t last_n, uint64_t now_us,
                     cw_store_entry_t **entries, size_t *n);

/* Read-only look at user's unacknowledged entries with from_seq <= seq <=
 * up_to_seq, at most max, in seq order (expired ones have status
 * CW_EXPIRED and stay; nothing is deleted). For read receipts: what an Ack
 * up to up_to_seq is about to acknowledge. Same returns as read. */
int cw_store_peek(cw_store_t *s, const char *user, uint64_t from_seq, uint64_t up_to_seq,
                  size_t max, uint64_t now_us, cw_store_entry_t **entries, size_t *n);

void cw_store_entries_free(cw_store_entry_t **entries, size_t n);

/* Unacknowledged entries in user's queue (expired ones not yet read
 * included). CW_OK or CW_UNKNOWN_USER. */
int cw_store_pending(cw_store_t *s, const char *user, uint64_t *pending);

/* Counters; can't fail. */
void cw_store_stats(const cw_store_t *s, cw_store_stats_t *out);

/* Debug check of the invariants of store.c against the database (seqs,
 * pending counts, reference counts, dedup uniqueness). Expensive: for tests
 * and debug builds. CW_OK, CW_INTERNAL (an invariant is broken; errmsg says
 * which), CW_STORE_ERROR. */
int cw_store_verify(cw_store_t *s);

/* --- Resume clocks (PROTOCOL.md 11.4) -------------------------------------
 * One clock per user name: the broker's record of the last vector clock the
 * user's sessions sent (opaque bytes to the store: the serialized Deliver
 * holding only `clock`, as for stored messages) and its own entry. Kept in
 * their own table `clocks`, created on first write (a store from before it
 * simply has none). */
/* (cw_store_clock_t: store_if.h.) */

/* Saves (replaces) name's clock, in its own transaction or the caller's
 * (see "Results and durability"). The caller submits increasing `own` per
 * name; the store keeps the last one written. CW_OK, CW_BAD_NAME,
 * CW_ERR_INVALID, CW_STORE_ERROR. */
int cw_store_save_clock(cw_store_t *s, const char *name, uint64_t own, const uint8_t *clock,
                        size_t clock_len);

/* Every saved clock; caller frees with cw_store_clocks_free. CW_OK (none:
 * *out NULL, *n 0), CW_STORE_ERROR, CW_ERR_NOMEM. */
int cw_store_list_clocks(cw_store_t *s, cw_store_clock_t **out, size_t *n);
/* (cw_store_clocks_free: store_if.h.) */

#endif
