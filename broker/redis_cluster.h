/*  redis_cluster: routes Redis commands to the primaries of a Redis Cluster
 *  on hiredis 0.14, which has no cluster support of its own (and Debian 12
 *  has no hiredis-cluster; upstream's needs hiredis >= 1.0). This is the
 *  ordinary client side of the cluster protocol, written here for that
 *  reason: CRC16 key slots with {hash tags}, a slot table from CLUSTER
 *  SLOTS, MOVED and ASK redirections, back-off on TRYAGAIN, CLUSTERDOWN
 *  and LOADING, and reconnects — with commands kept in submission order
 *  per slot through all of it.
 *
 *  Thread: one owner (the Redis store thread). Nothing blocks except
 *  cw_rc_new, which loads the first slot table with a bounded wait. The
 *  owner polls the items cw_rc_pollitems fills (with its own sockets, in
 *  one zmq_poll, for at most cw_rc_timeout_ms) and then calls cw_rc_process.
 *
 *  Commands. cw_rc_command queues a command for the primary that owns a
 *  slot; its callback runs exactly once, from cw_rc_process (never from
 *  cw_rc_command), with the reply or a failure status. Connections are
 *  pipelined: one per primary, commands written as soon as their order
 *  allows, replies matched in order.
 *
 *  Invariants (ordering, the reason this module exists):
 *    1. Per slot, commands execute in submission order. A command is sent
 *       only when no earlier command of its slot waits to be sent, and only
 *       to the node where every in-flight command of its slot went
 *       (per-slot in-flight node and count), so one connection's FIFO
 *       orders them.
 *    2. MOVED: the slot's owner changed at the node, atomically, so the
 *       commands of that slot still in flight there are answered MOVED too,
 *       in order. Each is put back among the unsent ones at its submission
 *       position and re-sent, in order, to the new owner.
 *    3. ASK (a slot being migrated): the command is re-sent once to the
 *       named node preceded by ASKING, and the slot is marked migrating for
 *       a second: while it is, at most one of its commands is in flight, so
 *       no later command can overtake one that was asked elsewhere.
 *    4. TRYAGAIN, CLUSTERDOWN, LOADING, a lost connection: the command is
 *       put back at its position and retried after a back-off (10 ms
 *       doubling to 1 s), its slot's later commands held behind it; a lost
 *       connection also reloads the slot table. Commands whose reply was
 *       lost with a connection are sent again: they MUST be idempotent
 *       (the store's scripts are: dedupe records, compare-and-set).
 *    5. A command not answered within its deadline (cw_rc_opts_t.retry_ms
 *       after submission) completes with CW_STORE_ERROR; nothing else
 *       fails it.
 *    6. NOSCRIPT (cw_rc_script; the node lacks the script: a promoted
 *       replica, a restarted node, SCRIPT FLUSH): the command is rewritten
 *       as EVAL of the source and put back at its submission position, as
 *       after MOVED, so it runs before every later command of its slot
 *       that had not run yet. The later commands of the slot in flight at
 *       that node were refused NOSCRIPT too if they are scripts the node
 *       lacks, and go back at their own positions. What cannot be undone:
 *       a later command of the slot in flight behind it that did run there
 *       (a plain command, or a script someone else loaded between the
 *       two). To make NOSCRIPT rare, every new connection first SCRIPT
 *       LOADs the scripts given to cw_rc_preload, so a primary this module
 *       connects to after a failover has them before any EVALSHA arrives.
 *
 *  Subscriptions (SSUBSCRIBE for shard channels at their slot's primary,
 *  SUBSCRIBE for plain channels at any primary: Redis Cluster forwards
 *  PUBLISH to every node). One subscriber connection per node, RESP2
 *  push replies (smessage, message, ssubscribe, sunsubscribe) parsed from
 *  the stream. The owner's callback gets READY (the server confirmed the
 *  subscription: messages published from now on arrive), MESSAGE (only
 *  from the connection where the channel is active), LOST (the
 *  subscription ended without being asked: the connection was lost, the
 *  server sent sunsubscribe because the slot moved, or the slot table
 *  names another owner now). Invariants:
 *    S1. After LOST the module subscribes again by itself (at the slot's
 *        current owner) and says READY again; between LOST and READY
 *        messages may have been missed, so the owner resynchronises at
 *        READY.
 *    S2. A sharded subscription is active only at its slot's owner per
 *        the table: the table is reloaded every second while subscriptions
 *        exist, and a subscription found elsewhere has its connection
 *        given up (LOST for all of it), so a demoted node cannot keep
 *        feeding messages after the table knows better.
 *    S3. Nothing arrives from a connection after it was given up.
 *    S4. A channel has at most one live subscription (one not being
 *        ended), and a channel's (S)SUBSCRIBE and (S)UNSUBSCRIBE requests
 *        are written in the order of the calls that made them: a channel
 *        unsubscribed and subscribed again before the next cw_rc_process
 *        (a user released and claimed again) ends subscribed at the
 *        server. (Written the other way round, the old subscription's
 *        SUNSUBSCRIBE ended the server's only subscription after the new
 *        one's SSUBSCRIBE had been confirmed READY: the channel stayed
 *        silent for good.)
 */
#ifndef CW_REDIS_CLUSTER_H
#define CW_REDIS_CLUSTER_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

typedef struct cw_rc cw_rc_t;

typedef struct {
    int connect_ms;    /* connect and initial CLUSTER SLOTS timeout (0: 2000) */
    int retry_ms;      /* a command's deadline from submission (0: 10000) */
} cw_rc_opts_t;

/* The callback of one command: status CW_OK with the reply (a Redis error
 * reply included: REDIS_REPLY_ERROR other than the redirections and
 * retry-later errors handled here), or CW_STORE_ERROR with reply NULL (the
 * deadline passed) or CW_SHUTTING_DOWN (cw_rc_destroy). The reply is freed
 * after the callback returns. */
typedef void cw_rc_cb_t(void *arg, int status, redisReply *reply);

/* The hash slot of a key: CRC16 (XMODEM) of the key, or of the part
 * between the first '{' and the next '}' when that part is not empty;
 * mod 16384. Can't fail. */
uint16_t cw_rc_slot(const char *key, size_t len);

/* Connects to the cluster through the first reachable seed of `seeds`
 * ("HOST:PORT[,HOST:PORT...]"), loads the slot table (bounded wait) and
 * connects to every primary (non-blocking). NULL on failure with a
 * message in err. */
cw_rc_t *cw_rc_new(const char *seeds, const cw_rc_opts_t *opts, char *err, size_t errlen);

/* Fails every command still queued with CW_SHUTTING_DOWN (callbacks run
 * here), closes the connections, frees, NULLs *p. Safe on NULL and twice. */
void cw_rc_destroy(cw_rc_t **p);

/* Queues a command (argv copied) for the primary of `slot`. CW_OK (the
 * callback will run), CW_ERR_INVALID, CW_ERR_NOMEM (nothing queued). */
int cw_rc_command(cw_rc_t *rc, uint16_t slot, int argc, const char **argv, const size_t *argvlen,
                  cw_rc_cb_t *cb, void *arg);

/* Queues a script call for the primary of `slot`: EVALSHA sha, then argv
 * (numkeys, the keys, the arguments; copied). On NOSCRIPT it is sent
 * again once as EVAL body ... from its submission position (invariant 6);
 * the callback sees only the final reply. sha (40 hex digits of body's
 * SHA1) and body are the caller's and must outlive the command (static
 * strings). CW_OK, CW_ERR_INVALID, CW_ERR_NOMEM (nothing queued). */
int cw_rc_script(cw_rc_t *rc, uint16_t slot, const char *sha, const char *body, int argc,
                 const char **argv, const size_t *argvlen, cw_rc_cb_t *cb, void *arg);

/* Registers a script to SCRIPT LOAD on every command connection before
 * any command submitted after this call: written now to the connections
 * up, first on every connection made later (invariant 6). body is the
 * caller's and must outlive rc. CW_OK, CW_ERR_INVALID, CW_ERR_NOMEM
 * (more than 32 scripts). */
int cw_rc_preload(cw_rc_t *rc, const char *body);

/* Fills up to max poll items (one per connection; POLLOUT while output
 * waits) and returns how many. */
size_t cw_rc_pollitems(cw_rc_t *rc, zmq_pollitem_t *items, size_t max);

/* After the poll: reads and writes the connections whose items are ready,
 * runs callbacks, sends what may be sent, retries what is due, reconnects.
 * items/n as filled by cw_rc_pollitems (n = 0: timers only). */
void cw_rc_process(cw_rc_t *rc, const zmq_pollitem_t *items, size_t n);

/* How long the owner may sleep before cw_rc_process has timers to run:
 * -1 when nothing waits, else milliseconds (0: now). */
int cw_rc_timeout_ms(const cw_rc_t *rc);

/* Commands queued or in flight. */
size_t cw_rc_pending(const cw_rc_t *rc);

/* Counters since cw_rc_new. */
typedef struct {
    uint64_t sent;          /* commands written (retries included) */
    uint64_t moved;         /* MOVED replies */
    uint64_t asked;         /* ASK replies */
    uint64_t retried;       /* TRYAGAIN, CLUSTERDOWN, LOADING, lost connections */
    uint64_t reconnects;    /* connections re-established */
    uint64_t refreshes;     /* slot tables loaded */
    uint64_t expired;       /* commands failed at their deadline */
    uint64_t noscript;      /* NOSCRIPT replies (sent again as EVAL, invariant 6) */
} cw_rc_stats_t;
void cw_rc_stats(const cw_rc_t *rc, cw_rc_stats_t *out);

/* Only inside a command's callback: how many times the command was
 * written to a connection (1: answered at its first attempt, no redirect,
 * no retry) and the index of the node whose reply it is (-1: none, the
 * command failed). Node indexes are stable for the life of rc. */
int cw_rc_cb_attempts(const cw_rc_t *rc);
int cw_rc_cb_node(const cw_rc_t *rc);

/* The node owning a slot per the table (-1: unknown). */
int cw_rc_slot_node(const cw_rc_t *rc, uint16_t slot);

enum { CW_RC_SUB_READY = 1, CW_RC_SUB_LOST = 2, CW_RC_SUB_MESSAGE = 3 };
/* A subscription event (see "Subscriptions" above); payload only for
 * MESSAGE. Runs from cw_rc_process. */
typedef void cw_rc_sub_cb_t(void *arg, int event, const char *channel, size_t channel_len,
                            int sharded, const char *payload, size_t len);
void cw_rc_set_sub_cb(cw_rc_t *rc, cw_rc_sub_cb_t *cb, void *arg);
/* Subscribes (sharded: SSUBSCRIBE in the channel's slot; else SUBSCRIBE)
 * from the next cw_rc_process on; READY follows. A channel that has a
 * subscription not ended by cw_rc_unsubscribe is not subscribed again
 * (CW_ERR_INVALID, nothing done: invariant S4); one just ended may be
 * subscribed again at once. CW_OK, CW_ERR_INVALID, CW_ERR_NOMEM. */
int cw_rc_subscribe(cw_rc_t *rc, const char *channel, size_t len, int sharded);
/* Ends one subscription of the channel: no MESSAGE, READY or LOST for it
 * from now on. CW_OK (also when there was none). */
int cw_rc_unsubscribe(cw_rc_t *rc, const char *channel, size_t len, int sharded);

#endif
