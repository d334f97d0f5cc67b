/*  store_if: the one interface between the router and a durable store
 *  (shared/SCALEOUT.md §6: the seam is the store actor, not a synchronous API).
 *
 *  A backend is an operations table (cw_store_ops_t) chosen at run time:
 *  `--data DIR` is the embedded SQLite store (store.c run by its own thread,
 *  store_actor.c), `--store redis://HOST:PORT[,HOST:PORT...]` a Redis
 *  Cluster (store_redis.c, store_redis_lua.c, store_redis_gate.c). Nothing
 *  in this header is any backend's: no transactions, no files, no SQL.
 *
 *  The contract every backend keeps (tests/unit/store_contract_test.c runs
 *  the same tests against each one):
 *    1. Submitting never blocks. Each submit function returns CW_OK (exactly
 *       one reply with this token follows), CW_FLOODED (the backend's queue
 *       is full: nothing queued, no reply), CW_ERR_INVALID (bad arguments:
 *       nothing queued), CW_ERR_NOMEM or CW_SHUTTING_DOWN. Arguments are
 *       copied: the caller keeps its data.
 *    2. Replies come in submission order, one per accepted submission,
 *       only after what they report is durable (CW_OK/CW_ACCEPTED describe
 *       data that survives a crash: SQLite's fsync of the WAL, Redis's AOF
 *       fsync and WAIT).
 *    3. Events (unsolicited: kind >= CW_STORE_EV_ENTRY, token 0; see
 *       cw_store_reply_is_event) may come between replies; they never take
 *       a reply's place, so a router that keeps its submissions in a FIFO
 *       skips them. SQLite raises only
 *       CW_STORE_EV_DONE, once per batch after its replies (one broker is
 *       the only writer, so there is no one else's entry, live message,
 *       takeover, presence or user to report); Redis raises all of them.
 *    4. Tokens are the caller's: a stable id, never a pointer (the
 *       router's are never 0, so that 0 can mean "no request").
 *    5. Statuses are the wire's (cw_status.h); CW_STORE_ERROR means the
 *       backend failed and nothing of the request is stored.
 *  Threads: every function here is for the thread that opened the store
 *  (the router), except ops->stats, which any thread may call.
 *
 *  Requests and their replies (reply fields in cw_store_reply_t):
 *    APPEND          msg: one message for its recipients. status: CW_OK
 *                    (stored for at least one), CW_QUEUE_FULL, CW_UNKNOWN_USER
 *                    (stored for none), CW_BAD_REQUEST, CW_STORE_ERROR;
 *                    rcpts[i]: status (CW_ACCEPTED, CW_QUEUE_FULL,
 *                    CW_UNKNOWN_USER, ...) and seq, in the request's order;
 *                    duplicate: (sender, message_id) was stored before:
 *                    nothing was added, and orig[] holds the original's
 *                    recipients and outcome (PROTOCOL.md §13.2), whatever
 *                    the repeat names. n_rcpts 0 with a message_id only
 *                    asks whether it repeats a stored message.
 *    ACK             user's queue up to seq. CW_OK, CW_UNKNOWN_USER,
 *                    CW_BAD_REQUEST (beyond the last seq); pending. With
 *                    receipts: the read receipts the acknowledged entries
 *                    asked for are made in the same commit, and entries[]
 *                    lists the receipt entries made in their senders'
 *                    queues (seq there, read time, and in expires_us the
 *                    message's seq in the reader's queue: receipts.h).
 *    READ            up to max unacknowledged entries from seq, in seq
 *                    order (expired ones once, CW_EXPIRED); pending;
 *                    truncated = 1: the reply stops before an entry that
 *                    exists but is not visible yet (S1: its writer has not
 *                    completed it); read again later (an ENTRY for a
 *                    claimed user says when; the router also reads
 *                    again after a back-off: outorder.h cwor_read_cut).
 *                    A reply never stops short without saying so.
 *                    HISTORY: the same.
 *    HISTORY         the last n entries, acknowledged or not, oldest first.
 *    ADD_USER        created: the name was new. CW_OK, CW_BAD_NAME.
 *    CLOCK           saves (replaces) the user's resume clock with own
 *                    entry `own`. CW_OK, CW_BAD_NAME, CW_STORE_ERROR.
 *    CLAIM_SESSION   the user's session is this broker's, with session
 *                    token `sess` (the resume token the client will be
 *                    given). resume = 1: `sess` is the token the client
 *                    presented. CW_OK (claimed; resumed = 1 if `sess`
 *                    matched another broker's session, which is taken
 *                    over), CW_NAME_TAKEN (live on another broker, token
 *                    not matching). SQLite: always CW_OK, resumed 0 (the
 *                    router's own table decides: one broker).
 *    RELEASE_SESSION the claim ends. CW_OK.
 *    LIVE_SEND       a live frame for users on other brokers: rcpts[i]
 *                    CW_DELIVERED or CW_OFFLINE. SQLite: every one
 *                    CW_OFFLINE (there is no other broker).
 *    WHO_PAGE        users sorting after `after` (byte order), at most max:
 *                    users[], truncated. The router adds `online` and
 *                    last-seen from its own table.
 *  Events: ENTRY (entries[0] is an entry of `user`'s queue; one whose TTL
 *  ran out comes CW_EXPIRED without its text, as a READ reports it, once:
 *  it is then gone from the queue), LIVE (frame
 *  for `user`, to go out after entry `seq` of its queue), TAKEOVER
 *  (`user`'s session moved to another broker), PRESENCE (`user` came or
 *  went on another broker: created 1 = online), NEW_USER (users[0], made by
 *  another broker), DONE (the backend completed batch `batch`; batches
 *  complete in submission order), FENCED (shared: this broker could not
 *  renew its lease within 2 x lease_ms, so other brokers may soon take its
 *  users; the router must stop serving: drop its sessions, refuse logins),
 *  UNFENCED (the lease is renewed again, under a new incarnation: the
 *  backend's later writes are the new one's; FENCED and UNFENCED
 *  alternate, FENCED first).
 *
 *  Shared backends (ops->shared = 1: Redis; several brokers, shared/SCALEOUT.md):
 *    S1. Visibility. An entry is visible once its writer (any broker)
 *        completed the entry's batch (every append of it and of the
 *        writer's earlier batches executed and replicated: WAIT) or the
 *        writer's lease expired, and every lower seq of the queue is
 *        visible. READ replies hold only visible entries (the prefix up to
 *        the first one that is not, marked truncated); nothing invisible
 *        reaches the router. Before cutting a read at a writer's entry the
 *        backend reads that writer's lease (a writer it has not heard of,
 *        one that closed or died is no reason to stop), and a store closed
 *        cleanly announces it (every batch complete) and drops its lease,
 *        so no reader waits for it.
 *    S2. ENTRY. For every user whose session this broker claimed (CLAIM
 *        answered CW_OK and neither RELEASE nor TAKEOVER since), the
 *        backend raises ENTRY for each entry as it becomes visible, in
 *        strictly increasing seq per user, the entries this broker
 *        appended itself included, at least once (after a lost
 *        subscription it re-reads the queue and raises what it had not).
 *        The router treats ENTRY as a hint with content: it pushes the
 *        entry when the session is caught up and seq == pushed + 1; any
 *        other seq above pushed makes it read (and a read that comes back
 *        short while an ENTRY above pushed arrived meanwhile reads again).
 *        user->last_seq follows the ENTRY seqs.
 *    S3. APPEND may name users the router does not know (made on another
 *        broker a moment ago): the backend answers CW_UNKNOWN_USER for
 *        names it does not know either. The router's user table is a cache
 *        fed by the loaded log and NEW_USER; broadcast addresses the cache
 *        (eventually consistent; documented).
 *    S4. CLAIM_SESSION decides who serves a name: CW_NAME_TAKEN while
 *        another live broker serves it (unless the resume token matches:
 *        then resumed = 1 and the other broker gets TAKEOVER), CW_OK
 *        otherwise. RELEASE ends the claim (logout, reap, shutdown).
 *    S5. LIVE_SEND reaches users served by other brokers; each recipient
 *        gets LIVE on its broker with the barrier seq (its queue's last
 *        seq when the frame took its place), pushed after that entry.
 *    S6. PRESENCE is best effort (PROTOCOL.md §8), as is LIVE.
 *  Unshared backends (SQLite) raise only DONE and answer CLAIM, RELEASE,
 *  LIVE_SEND as the table above says.
 */
#ifndef CW_STORE_IF_H
#define CW_STORE_IF_H

#include <stddef.h>
#include <stdint.h>

/* One recipient of an appended message: name in, outcome out. */
typedef struct {
    const char *name;         /* in: a known user (see cw_store_add_user) */
    int status;               /* out: CW_ACCEPTED (queued under seq), CW_QUEUE_FULL,
                                 CW_UNKNOWN_USER, CW_BAD_REQUEST or CW_STORE_ERROR */
    uint64_t seq;             /* out: seq in name's queue when CW_ACCEPTED, else 0 */
} cw_store_rcpt_t;

/* One message of an append batch. Inputs are borrowed for the call only. */
typedef struct {
    const char *sender;       /* in: sender's user name, non-empty */
    const char *message_id;   /* in: sender-chosen id; NULL or "" = no deduplication */
    const char *text;         /* in: body bytes (need not be NUL-terminated) */
    size_t text_len;          /* in */
    const uint8_t *clock;     /* in: the sender's encoded vector clock, stored as is */
    size_t clock_len;         /* in: 0 = no clock */
    uint64_t timestamp_us;    /* in: broker receipt time; TTL counts from it */
    uint32_t ttl_s;           /* in: seconds the message may wait; 0 = store default */
    int broadcast;            /* in: sender addressed everyone (entries get an empty "to") */
    cw_store_rcpt_t *rcpts;   /* in/out: the recipients, in the sender's order */
    size_t n_rcpts;           /* in: >= 1, or 0 with a message_id: only asks whether
                                 it repeats a stored message (nothing is stored) */
    int status;               /* out: see cw_store_append_batch */
    int duplicate;            /* out: 1 if (sender, message_id) was already stored: the
                                 rcpts hold the original outcome and nothing was added */
} cw_store_msg_t;

/* A queued message as read back. Strings are NUL-terminated. */
typedef struct {
    uint64_t seq;             /* position in the user's queue */
    int status;               /* CW_OK; CW_EXPIRED: its TTL ran out (text is empty);
                                 CW_DAMAGED: the stored entry failed its checksum (or
                                 holds what no client could decode): only seq and acked
                                 are set, every string is "", no clock, no "to" */
    int acked;                /* history: already acknowledged */
    int broadcast;            /* sender addressed everyone; to is empty */
    const char *sender;
    const char *message_id;   /* "" when the sender gave none */
    const char *const *to;    /* recipients as named by the sender */
    size_t n_to;
    const char *text;         /* body; text_len bytes plus a NUL */
    size_t text_len;
    const uint8_t *clock;     /* encoded vector clock as appended; NULL if none */
    size_t clock_len;
    uint64_t timestamp_us;    /* broker receipt time */
    uint64_t expires_us;      /* 0 = never */
    void *mem_;               /* private: the allocation holding this entry's data */
} cw_store_entry_t;

/* One entry of the user log. */
typedef struct {
    const char *name;
    uint64_t created_us;      /* when the name was first seen */
    uint64_t pending;         /* unacknowledged messages in the queue */
    uint64_t last_seq;        /* highest seq ever assigned; 0 if none */
    int online;               /* shared backends: served by a live broker now
                                 (at open, WHO_PAGE); 0 otherwise */
} cw_store_user_t;

/* A user's resume clock (PROTOCOL.md 11.4): opaque bytes to the store (the
 * serialized Deliver holding only `clock`) and the user's own entry. */
typedef struct {
    char *name;               /* user name */
    uint64_t own;             /* the user's own entry in the clock */
    uint8_t *clock;           /* the bytes as saved */
    size_t clock_len;
} cw_store_clock_t;


/* What a request asks; also the kind of its reply. */
typedef enum {
    CW_STORE_REQ_APPEND = 1,
    CW_STORE_REQ_ACK = 2,
    CW_STORE_REQ_READ = 3,
    CW_STORE_REQ_HISTORY = 4,
    CW_STORE_REQ_ADD_USER = 5,
    CW_STORE_REQ_CLOCK = 6,
    CW_STORE_REQ_CLAIM_SESSION = 7,
    CW_STORE_REQ_RELEASE_SESSION = 8,
    CW_STORE_REQ_LIVE_SEND = 9,
    CW_STORE_REQ_WHO_PAGE = 10,
} cw_store_req_kind_t;

/* The kind of an event (a reply with token 0). */
typedef enum {
    CW_STORE_EV_ENTRY = 16,
    CW_STORE_EV_LIVE = 17,
    CW_STORE_EV_TAKEOVER = 18,
    CW_STORE_EV_PRESENCE = 19,
    CW_STORE_EV_NEW_USER = 20,
    CW_STORE_EV_DONE = 21,
    CW_STORE_EV_FENCED = 22,
    CW_STORE_EV_UNFENCED = 23,
} cw_store_event_kind_t;

/* A reply or an event: an owned object the router destroys with
 * cw_store_reply_destroy. Fields not listed for a kind are 0/NULL. */
typedef struct cw_store_reply cw_store_reply_t;
struct cw_store_reply {
    int kind;                   /* cw_store_req_kind_t, or cw_store_event_kind_t */
    uint64_t token;             /* the request's token; 0: an event */
    int status;                 /* see the table above; events: CW_OK */
    int duplicate;              /* APPEND: answered from the dedup record */
    int created;                /* ADD_USER: new name; PRESENCE: 1 online, 0 offline */
    int truncated;              /* WHO_PAGE: more users follow; READ, HISTORY: stopped
                                   before an entry not visible yet */
    int resumed;                /* CLAIM_SESSION: taken over from another broker */
    uint64_t pending;           /* ACK, READ: the user's unacknowledged entries after it */
    uint64_t batch;             /* DONE: the batch completed */
    uint64_t seq;               /* LIVE: the barrier (push after this entry) */
    size_t n_rcpts;             /* APPEND, LIVE_SEND */
    cw_store_rcpt_t *rcpts;     /* the request's recipients with their outcome */
    size_t n_orig;              /* APPEND duplicate */
    cw_store_rcpt_t *orig;      /* the original's recipients (names owned by the reply) */
    size_t n_entries;           /* READ, HISTORY, ACK (receipts made); ENTRY: 1 */
    cw_store_entry_t *entries;  /* valid until the reply is destroyed */
    size_t n_users;             /* WHO_PAGE; NEW_USER: 1 */
    cw_store_user_t *users;     /* valid until the reply is destroyed */
    const char *user;           /* events: the user concerned */
    const void *frame;          /* LIVE: the frame to push */
    size_t frame_len;
    void (*destroy)(cw_store_reply_t *r); /* the backend's: frees r and all it holds */
};

/* Frees *p (through its backend) and NULLs it; safe on NULL and twice. */
void cw_store_reply_destroy(cw_store_reply_t **p);

/* True for an event, false for the reply to a request. Can't fail. */
static inline int cw_store_reply_is_event(const cw_store_reply_t *r)
{
    return r->kind >= CW_STORE_EV_ENTRY;
}

/* Accessors, kept for readability at call sites; can't fail. */
static inline int cw_store_reply_kind(const cw_store_reply_t *r) { return r->kind; }
static inline uint64_t cw_store_reply_token(const cw_store_reply_t *r) { return r->token; }
static inline int cw_store_reply_status(const cw_store_reply_t *r) { return r->status; }
static inline int cw_store_reply_duplicate(const cw_store_reply_t *r) { return r->duplicate; }
static inline int cw_store_reply_created(const cw_store_reply_t *r) { return r->created; }
static inline uint64_t cw_store_reply_pending(const cw_store_reply_t *r) { return r->pending; }
/* READ, HISTORY: stopped before an entry that is not visible yet (S1). */
static inline int cw_store_reply_truncated(const cw_store_reply_t *r) { return r->truncated; }
/* APPEND, LIVE_SEND: recipients in the request's order (i < the count). */
static inline size_t cw_store_reply_rcpts(const cw_store_reply_t *r) { return r->n_rcpts; }
static inline int cw_store_reply_rcpt_status(const cw_store_reply_t *r, size_t i)
{
    return r->rcpts[i].status;
}
static inline uint64_t cw_store_reply_rcpt_seq(const cw_store_reply_t *r, size_t i)
{
    return r->rcpts[i].seq;
}
/* APPEND duplicate: the original's recipients (*rcpts NULL when none). */
static inline size_t cw_store_reply_original(const cw_store_reply_t *r,
                                             const cw_store_rcpt_t **rcpts)
{
    *rcpts = r->orig;
    return r->orig ? r->n_orig : 0;
}
/* READ, HISTORY: the entries (NULL when none). */
static inline const cw_store_entry_t *cw_store_reply_entries(const cw_store_reply_t *r, size_t *n)
{
    *n = r->n_entries;
    return r->n_entries ? r->entries : NULL;
}

/* Limits and defaults a backend applies (the broker's --queue-max,
 * --retention, --ttl); start from cw_store_config_init. */
typedef struct {
    uint32_t queue_quota;     /* max unacknowledged messages per user; 0 = unlimited */
    uint32_t retention;       /* acknowledged messages kept per user for history */
    uint32_t default_ttl_s;   /* TTL of messages appended with ttl_s 0; 0 = never expire */
    uint32_t dedup_window_s;  /* a (sender, message_id) is remembered at least this long */
    size_t max_queued;        /* requests waiting before submit says CW_FLOODED; 0 = 100000 */
    int recover;              /* open even if committed data is missing (a damaged log):
                                 report it, move every seq past what was lost (the
                                 broker's --recover-store) */
    /* Shared backends (Redis) only: */
    uint32_t wait_replicas;   /* replicas WAIT must see per primary per batch before
                                 anything is answered or visible (--redis-wait; default
                                 1; 0 = no WAIT: a test control that can lose data) */
    uint32_t retry_ms;        /* a request's deadline before CW_STORE_ERROR
                                 (--store-retry-ms; default 10000) */
    uint32_t lease_ms;        /* the broker's lease renewal period H; the lease
                                 expires after 3 H (default 1000) */
    const char *broker_id;    /* this broker's id (--broker-id; borrowed for open);
                                 NULL or "" = HOST-PID-N. A new run under an id takes
                                 its lease at once: what the previous run held (claims,
                                 half-done batches) counts as expired */
} cw_store_config_t;

/* Defaults: no quota, no retention, no TTL, dedup window 86400 s; Redis:
 * wait 1 replica, retry 10 s, lease 1 s. */
void cw_store_config_init(cw_store_config_t *cfg);

/* Upper bounds of the durable-sync latency histogram's buckets,
 * microseconds (cw_store_counters_t.commit_hist; a last bucket counts the
 * rest). */
#define CW_COMMIT_BUCKETS 14
#define CW_COMMIT_BOUNDS_US                                                              \
    {100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, \
     1000000, 2500000}

/* Counters of a backend, any thread. */
typedef struct {
    uint64_t requests;       /* requests answered */
    uint64_t groups;         /* batches processed (one durable sync each at most) */
    uint64_t commits;        /* batches that wrote something = durable syncs (fsyncs) */
    uint64_t appended;       /* messages stored (a multicast counts once) */
    uint64_t entries;        /* queue entries created */
    uint64_t duplicates;     /* appends answered from the dedup record */
    uint64_t failed_groups;  /* batches answered CW_STORE_ERROR */
    uint64_t max_group;      /* most requests seen in one batch */
    uint64_t pending;        /* unacknowledged entries over all users (shared
                                backends: as loaded at open, then kept current
                                with this broker's appends and acks; other
                                brokers' appends and acks are not seen) */
    uint64_t users;          /* known users (shared: plus NEW_USER) */
    uint64_t fences;         /* shared: times FENCED was raised */
    /* Durable-sync latency (SQLite: every group's COMMIT, the WAL fsync,
     * timed on the store thread). commit_hist[i] counts the syncs that took
     * at most bound i (not cumulative); commit_hist[CW_COMMIT_BUCKETS] the
     * longer ones. commit_count is written last (release): a reader that
     * loads it first (acquire) sees a histogram at least that far along. */
    uint64_t commit_hist[CW_COMMIT_BUCKETS + 1];
    uint64_t commit_sum_us;  /* total sync time, microseconds */
    uint64_t commit_count;   /* syncs timed */
} cw_store_counters_t;

typedef struct cw_store_backend cw_store_backend_t; /* an open store; each backend's own */

/* What a store holds at open that the router keeps in memory. */
typedef struct {
    cw_store_user_t *users;   /* the user log */
    size_t n_users;
    cw_store_clock_t *clocks; /* the users' resume clocks */
    size_t n_clocks;
} cw_store_loaded_t;

/* Frees what open loaded; safe twice. */
void cw_store_loaded_free(cw_store_loaded_t *l);

/* The operations table. Every submit function: see the contract above. */
typedef struct {
    const char *name;         /* "sqlite", "redis" */
    int shared;               /* 1: several brokers share the store (S1-S6 above) */
    /* Opens the store at `where` (a directory, a URL) and starts serving.
     * *loaded receives the user log and the resume clocks as stored
     * (caller frees with cw_store_loaded_free). CW_OK and *out set, or a
     * status with err filled and nothing left open. */
    int (*open)(const char *where, const cw_store_config_t *cfg, cw_store_backend_t **out,
                cw_store_loaded_t *loaded, char *err, size_t errlen);
    /* Stops after answering what was submitted; replies not received are
     * freed. NULLs *p; safe on NULL and twice. */
    void (*close)(cw_store_backend_t **p);
    /* A libzmq socket (or NULL) readable when a reply or event waits, for
     * zmq_poll; owned by the backend. */
    void *(*poll_handle)(cw_store_backend_t *s);
    /* The next reply or event, waiting up to timeout_ms (0: don't, -1:
     * forever); NULL if none. Caller destroys it. */
    cw_store_reply_t *(*recv)(cw_store_backend_t *s, int timeout_ms);
    int (*append)(cw_store_backend_t *s, uint64_t token, const cw_store_msg_t *msg);
    /* receipts: also make the read receipts the acknowledged entries asked
     * for (receipts.h), in the same commit. */
    int (*ack)(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t up_to_seq,
               int receipts);
    int (*read)(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t from_seq,
                uint32_t max);
    int (*history)(cw_store_backend_t *s, uint64_t token, const char *user, uint32_t last_n);
    int (*add_user)(cw_store_backend_t *s, uint64_t token, const char *user);
    int (*save_clock)(cw_store_backend_t *s, uint64_t token, const char *user, uint64_t own,
                      const uint8_t *clock, size_t clock_len);
    /* sess: the session's token (sess_len bytes); resume: the client
     * presented it (see CLAIM_SESSION). */
    int (*claim_session)(cw_store_backend_t *s, uint64_t token, const char *user,
                         const uint8_t *sess, size_t sess_len, int resume);
    int (*release_session)(cw_store_backend_t *s, uint64_t token, const char *user);
    int (*live_send)(cw_store_backend_t *s, uint64_t token, const char *const *users,
                     size_t n_users, const void *frame, size_t frame_len);
    int (*who_page)(cw_store_backend_t *s, uint64_t token, const char *after, uint32_t max);
    void (*stats)(cw_store_backend_t *s, cw_store_counters_t *out);
} cw_store_ops_t;

extern const cw_store_ops_t cw_store_sqlite_ops; /* store_actor.c */
extern const cw_store_ops_t cw_store_redis_ops;  /* store_redis.c */

/* Chooses the backend from the broker's options: data_dir (SQLite) or
 * store_url (redis://HOST:PORT[,HOST:PORT...]); exactly one must be
 * non-empty. Returns the table and sets *where, or NULL with a one-line
 * reason in err (neither or both given, a malformed URL). */
const cw_store_ops_t *cw_store_choose(const char *data_dir, const char *store_url,
                                      const char **where, char *err, size_t errlen);

/* Checks a redis:// URL: one or more HOST:PORT, comma-separated, ports
 * 1..65535, hosts non-empty without spaces. *n receives the count. 0, or
 * -1 with the reason in err. */
int cw_store_redis_url_check(const char *url, size_t *n, char *err, size_t errlen);

/* Frees a user log from open or a WHO_PAGE built by a backend (store.c). */
void cw_store_users_free(cw_store_user_t **users, size_t n);
/* Frees resume clocks (store.c). */
void cw_store_clocks_free(cw_store_clock_t **clocks, size_t n);

#endif
