/*  store_redis_int: what the files of the Redis Cluster backend share
 *  (store_redis.c: the thread, batches, WAIT, replies; store_redis_lua.c:
 *  the scripts and the entry encoding; store_redis_gate.c: the visibility
 *  gate and the events). Not for anyone else: store_if.h is the interface.
 *
 *  Thread: everything declared here runs on the backend's own thread,
 *  except the request-object helpers (rs_req_*), which the router's
 *  submit functions use too (an object belongs to one thread at a time:
 *  the one that holds it, as in store_actor.c).
 */
#ifndef CW_STORE_REDIS_INT_H
#define CW_STORE_REDIS_INT_H

#include "redis_cluster.h"
#include "store_if.h"

#include <czmq.h>
#include <stdint.h>

/* ------------------------------------------------------------------------ */
/* Request objects: the reply is the first member (store_actor.c's layout). */

typedef struct rs_req rs_req_t;
struct rs_req {
    cw_store_reply_t rep;        /* kind, token, results (store_if.h) */
    uint32_t n;                  /* READ max, HISTORY last_n, WHO_PAGE max, ACK receipts */
    uint64_t arg;                /* ACK up_to, READ from, CLOCK own, CLAIM resume */
    const char *user;            /* the user; WHO_PAGE: after */
    const uint8_t *blob;         /* CLOCK: the clock; CLAIM: the session token; LIVE: frame */
    size_t blob_len;
    cw_store_msg_t msg;          /* APPEND: strings and rcpts point into the object */
    void *work;                  /* the thread's per-request state while in a batch */
};

/* A new object with room for n_rcpts recipients and `strings` bytes (in
 * *strp); NULL if out of memory. */
rs_req_t *rs_req_new(int kind, uint64_t token, size_t n_rcpts, size_t strings, char **strp);
void rs_req_destroy(cw_store_reply_t *r);
/* Copies len bytes plus a NUL at *at; returns the copy. */
char *rs_put(char **at, const void *s, size_t len);

/* ------------------------------------------------------------------------ */
/* Entries (store_redis_lua.c)                                               */

/* The stream fields of an entry, in this order in XADD and in the packed
 * form SPUBLISHed on cw:n:{u} ("E<seq>" then ",<len>:<bytes>" per field
 * name and value). */
enum { F_FROM, F_MID, F_TO, F_BCAST, F_TS, F_EXP, F_CLOCK, F_TEXT, F_W, F_CRC, N_FIELDS };
extern const char *const rs_field_names[N_FIELDS];

/* The field values of one message (F_W and F_CRC included), built by
 * rs_fields_build; v[i]/len[i] point into buf. */
typedef struct {
    char *buf;
    const char *v[N_FIELDS];
    size_t len[N_FIELDS];
} rs_fields_t;
/* Fills f for message m written as `w` ("<broker> <inc> <batch>"). 0, -1
 * out of memory. */
int rs_fields_build(rs_fields_t *f, const cw_store_msg_t *m, uint64_t expires_us, const char *w);
void rs_fields_free(rs_fields_t *f);

/* A parsed writer "<broker> <inc> <batch>". */
typedef struct {
    const char *b;               /* broker id; not NUL-terminated */
    size_t b_len;
    const char *inc;
    size_t inc_len;
    uint64_t batch;
} rs_w_t;

/* Builds e (one allocation in e->mem_) from a stream entry's field/value
 * list (fv[2k] name, fv[2k+1] value). Anything that does not parse or fails
 * its checksum is a CW_DAMAGED entry (seq and acked only). acked_seq: the
 * queue's acked seq (entries at or below are acked); now_us for expiry
 * (0: none is reported expired). *w (may be NULL) receives the writer,
 * pointing into fv. Returns 0, or -1 out of memory. *crc receives the
 * stored checksum (0 if none). */
int rs_entry_decode(uint64_t seq, const char *const *fv, const size_t *fvlen, size_t nfv,
                    uint64_t acked_seq, uint64_t now_us, cw_store_entry_t *e, rs_w_t *w,
                    uint32_t *crc);
/* The same from a packed payload (after the leading "E<seq>"): 0, -1 OOM,
 * -2 does not parse (nothing allocated). */
int rs_entry_unpack(uint64_t seq, const char *p, size_t len, cw_store_entry_t *e, rs_w_t *w,
                    uint32_t *crc);
/* Parses "<broker> <inc> <batch>": 0 or -1. */
int rs_w_parse(const char *s, size_t len, rs_w_t *w);

/* The scripts (EVALSHA with a fallback to EVAL on NOSCRIPT). */
enum { SC_APPEND, SC_ACK, SC_READ, SC_HISTORY, SC_ADD_USER, SC_CLAIM, SC_RELEASE, SC_LIVE,
       SC_PEEK, SC_DROP, SC_LEASE, N_SCRIPTS };
extern const char *const rs_scripts[N_SCRIPTS];

/* ------------------------------------------------------------------------ */
/* The thread's state (store_redis.c)                                        */

typedef struct rs rs_t;
typedef struct rs_gate rs_gate_t;

/* Who this backend is as a writer: broker id and incarnation. */
const char *rs_me_b(const rs_t *t);
const char *rs_me_inc(const rs_t *t);
cw_rc_t *rs_rc(rs_t *t);
const cw_store_config_t *rs_cfg(const rs_t *t);
/* Queues an event (an object the gate made) for the router; freed on a
 * broken pipe. */
void rs_emit(rs_t *t, rs_req_t *ev);
/* Removes user's entries seqs[0..n) if their TTL ran out (SC_DROP, in the
 * background): each expired entry is reported once (READ, ENTRY). */
void rs_drop_expired(rs_t *t, const char *user, const uint64_t *seqs, size_t n);
/* Issues a script: argv[0] is numkeys as a string, then the keys (the
 * first key's slot routes it), then the arguments. The callback runs as
 * cw_rc_command's, after a NOSCRIPT fallback to EVAL if needed
 * (from the command's position: redis_cluster.h invariant 6). CW_OK or
 * a status. */
int rs_script(rs_t *t, int script, int numkeys, int argc, const char **argv, const size_t *lens,
              cw_rc_cb_t *cb, void *arg);

/* ------------------------------------------------------------------------ */
/* The gate (store_redis_gate.c)                                             */

rs_gate_t *rs_gate_new(rs_t *t);
void rs_gate_destroy(rs_gate_t **p);
/* Subscription events from cw_rc (the module's one callback). */
void rs_gate_on_sub(rs_gate_t *g, int event, const char *ch, size_t ch_len, int sharded,
                    const char *payload, size_t len);
/* The user's session is now this broker's / no longer is. */
void rs_gate_claim(rs_gate_t *g, const char *user);
void rs_gate_release(rs_gate_t *g, const char *user);
/* This broker completed batch `batch` (clean: every command answered at
 * its first attempt and every WAIT satisfied at once). */
void rs_gate_own_done(rs_gate_t *g, uint64_t batch, int clean);
/* An entry this broker appended in its batch (not yet done): its packed
 * payload (as SPUBLISHed, after "E<seq>"). Kept only for claimed users. */
void rs_gate_own_entry(rs_gate_t *g, const char *user, uint64_t seq, const char *payload,
                       size_t len, uint64_t batch);

/* What the gate knows of the writers, frozen at a moment (a read's send
 * time), so a read's entries are judged by what was complete before the
 * read ran (content read before its writer's WAIT may vanish). */
typedef struct rs_snap rs_snap_t;
rs_snap_t *rs_gate_snap(rs_gate_t *g);
void rs_snap_free(rs_snap_t **p);
/* Is entry (writer w) visible as of snap? own_batch_done: this broker's
 * batches up to it count as complete. */
int rs_snap_visible(rs_gate_t *g, const rs_snap_t *snap, const rs_w_t *w, uint64_t own_done);
/* Applies the lease of entry writer w as just read (r: the reply to HMGET
 * cw:b:{B} inc done): the writer's lease gone or another incarnation makes
 * its entries visible, a higher done its batches up to it. 1 if that
 * changed anything (the gate re-runs its users), else 0. */
int rs_gate_writer_learn(rs_gate_t *g, const rs_w_t *w, const redisReply *r);
/* Writer (b, inc) closed its store cleanly after completing batch done
 * (its "closed" cw:done): everything it wrote is visible. 1 if news. */
int rs_gate_writer_closed(rs_gate_t *g, const char *b, size_t bl, const char *inc, size_t il,
                          uint64_t done);
/* This broker now writes as a new incarnation (rs_me_inc, after a fence):
 * the previous one counts as dead here too (it has no batch in flight),
 * the new one is this broker's own. 0, or -1 (out of memory: nothing
 * changed). */
int rs_gate_reincarnate(rs_gate_t *g);
/* Called every turn: lease checks that are due, resyncs. */
void rs_gate_tick(rs_gate_t *g, int64_t now_ms);

/* Key builders: "<prefix>{<user>}<suffix>" into buf; returns the length. */
size_t rs_key(char *buf, size_t size, const char *prefix, const char *user, const char *suffix);

uint64_t rs_now_us(void);
int64_t rs_now_ms(void);

#endif
