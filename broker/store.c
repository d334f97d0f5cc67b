/*  store: the durable message store, on SQLite. See store.h for the API.
 *
 *  Owns: the data directory's LOCK file (flock held while open), one SQLite
 *  connection to causeway.db, its prepared statements, and an in-memory
 *  cache of the user log (per user: row id, next seq, acked seq, pending
 *  count). Thread: whichever thread owns the cw_store_t (the store actor in
 *  the broker); never two at once.
 *
 *  Schema (version 2, in table schema_version; PRAGMA application_id marks
 *  the file as causeway's):
 *    users(id, name UNIQUE, next_seq, acked_seq, created_us)
 *        the user log; next_seq is the seq the next entry will get.
 *    messages(id, sender, message_id, ts_us, expires_us, flags, live, clock,
 *             rcpts, text, crc)
 *        one row per stored message, however many recipients. rcpts is the
 *        per-recipient outcome in the sender's order (u8 status, u64 seq
 *        little-endian, name, NUL; repeated): the answer a duplicate gets,
 *        and the "to" list of deliveries. live counts the entries pointing
 *        at the row. Unique partial index on (sender, message_id).
 *    entries(user_id, seq, msg, crc) WITHOUT ROWID, primary key (user_id, seq)
 *        the queues: entry (u, s) is message msg at seq s of u's queue.
 *        Entries with seq <= users.acked_seq are acknowledged (kept for
 *        history), the others are pending.
 *
 *  Checksums (schema 2; issue 11 item 7, "damaged entries"). messages.crc
 *  is a CRC-32 over every field of the row that is ever served or answered
 *  from (sender, message_id, ts_us, expires_us, flags, clock, rcpts, text;
 *  not live, a reference count); entries.crc is a CRC-32 over the queue's
 *  user name, the seq, the msg it points at and that message's crc. Both
 *  are computed when the row is written and checked on every read
 *  (check_row): a row that fails, or whose strings are not well-formed
 *  UTF-8 (no protobuf client could decode them), or whose recipient list
 *  does not parse, is returned with status CW_DAMAGED and no data (seq
 *  kept), so the broker pushes a "damaged" Deliver the client acknowledges
 *  like any other, and the queue goes on. SQLite's own page checks
 *  (quick_check at open) do not see a changed byte inside a record; these
 *  do. The CRC is zlib's crc32 (Debian's zlib1g): damage detection, not
 *  authentication (whoever can write the file can recompute it).
 *  A schema 1 store (no checksums) is migrated at open, in one
 *  transaction: the checksums are computed then, so they vouch for the
 *  data as it was at migration, not before (the log says so).
 *
 *  Invariants (cw_store_verify checks 1-5 against the database):
 *    1. Seqs are never reused: every entry of u has seq < u.next_seq, and
 *       next_seq only grows (it is stored, not derived from the entries, so
 *       acking or expiring the newest entries does not give their seqs back).
 *    2. u.acked_seq < u.next_seq; the cached pending count of u is the
 *       number of u's entries with seq > acked_seq.
 *    3. messages.live = the number of entries whose msg is the row. A row
 *       with live = 0 exists only if it has a message_id (it is the dedup
 *       record), and is deleted once older than the dedup window.
 *    4. At most one row per (sender, message_id): a message is stored once;
 *       a repeat is answered from the row's rcpts (idempotent append).
 *    5. Every entry points at an existing message row and an existing user.
 *    6. Each public write runs in exactly one SQLite transaction (its own,
 *       or the caller's group): a batch is on disk entirely or not at all.
 *    7. The cache equals the database as the open transaction sees it;
 *       after any rollback it is reloaded from the database. If that is not
 *       possible the store enters its failed state.
 *
 *  Durability: the commit point. The connection runs in WAL mode with
 *  synchronous=FULL and locking_mode=EXCLUSIVE. Until COMMIT, a
 *  transaction's pages live in SQLite's page cache (or in WAL frames
 *  written without a commit mark, which recovery ignores). COMMIT appends
 *  the remaining changed pages to causeway.db-wal as frames, the last one
 *  marked as a commit frame carrying the new database size, each frame
 *  checksummed over the whole chain since the WAL header; then it fsync()s
 *  the WAL file, and only then returns SQLITE_OK.
 *  The commit point is the return of that fsync. At that moment the disk
 *  holds the main database file (possibly stale: older transactions may
 *  still be only in the WAL) plus a WAL file whose valid, checksummed
 *  prefix ends with this transaction's commit frame; recovery at the next
 *  open replays exactly that prefix, so a crash at any later moment keeps
 *  the transaction. Before the commit point a crash may keep it (the OS
 *  may have written the frames anyway) or lose it, but never half of it:
 *  recovery stops at the last valid commit frame. Nobody has been told
 *  about it yet in either case, and a client's retry is answered from the
 *  dedup record if it survived. Checkpoints copy WAL pages into the
 *  database file and fsync it before the WAL is rewound, so they never
 *  lose a committed frame. SQLite fsyncs the directory when it creates the
 *  WAL file; open() also fsyncs the data directory after creating the
 *  database. Nothing is reported ACCEPTED before the fsync returned.
 *  Assumed: fsync means what POSIX says (the drive's write cache is flushed
 *  or battery-backed).
 *
 *  State machine (s->state, s->txn):
 *    OPEN/NONE --txn_begin or an implicit write--> OPEN/TXN
 *    OPEN/TXN --commit ok--> OPEN/NONE
 *    OPEN/TXN --a statement failed; ROLLBACK ok, cache reloaded-->
 *        OPEN/NONE (implicit) or OPEN/ABORTED (group: later operations
 *        and the commit are refused; txn_rollback ends it)          abort_txn
 *    OPEN/TXN --COMMIT failed with SQLITE_FULL, rolled back--> OPEN/NONE
 *    any --COMMIT failed otherwise (the frames may or may not be on disk),
 *        ROLLBACK failed, cache reload failed, corruption seen--> FAILED:
 *        sticky; everything but close/stats/errmsg returns CW_STORE_ERROR.
 *        Reopening re-runs recovery and quick_check.                 set_failed
 */
#include "store.h"

#include "seq_ledger.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"

#include <czmq.h>
#include <sqlite3.h>
#include <zlib.h>

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCHEMA_VERSION 2                   /* 1: no checksums, migrated at open */
#define APPLICATION_ID 0x43574159          /* "CWAY" */
#define DB_FILE "causeway.db"
#define LOCK_FILE "LOCK"
#define RECLAIM_INTERVAL_US 1000000ull     /* a full queue looks for expired entries at most 1/s */
#define RCPT_REC_FIXED 9                   /* u8 status + u64 seq, then name + NUL */

typedef enum { STORE_OPEN, STORE_FAILED } store_state_t;
typedef enum { TXN_NONE, TXN_OPEN, TXN_ABORTED } txn_state_t;

/* One cached user: the database row plus what the open transaction did. */
typedef struct {
    int64_t id;            /* users.id */
    uint64_t next_seq;     /* seq for the next entry (users.next_seq + this txn) */
    uint64_t acked_seq;    /* users.acked_seq (+ this txn) */
    uint64_t pending;      /* entries with seq > acked_seq */
    uint64_t mark;         /* serial of the last appended message naming this user */
    size_t mark_idx;       /* index of that recipient in the message */
    uint64_t reclaim_us;   /* last time a full queue looked for expired entries */
    int dirty;             /* next_seq/acked_seq differ from the row: write before COMMIT */
    char name[CW_NAME_MAX_HARD + 1]; /* users.name (for the seq ledger) */
} user_t;

enum {
    S_BEGIN, S_COMMIT, S_ROLLBACK, S_USER_INSERT, S_USER_UPDATE, S_USER_LIST, S_DEDUP_FIND,
    S_MSG_INSERT, S_ENTRY_INSERT, S_READ, S_HISTORY, S_COUNT_RANGE, S_RETAIN_THRESHOLD,
    S_LIVE_DEC, S_MSG_DROP, S_ENTRY_DELETE, S_PRUNE, S_EXPIRED_FIND, N_STMTS
};

static const char *const stmt_sql[N_STMTS] = {
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_USER_INSERT] = "INSERT INTO users(name, next_seq, acked_seq, created_us) "
                      "VALUES (?1, ?3, 0, ?2)",
    [S_USER_UPDATE] = "UPDATE users SET next_seq = ?2, acked_seq = ?3 WHERE id = ?1",
    [S_USER_LIST] = "SELECT name, created_us FROM users ORDER BY id",
    [S_DEDUP_FIND] = "SELECT 0, sender, message_id, ts_us, expires_us, flags, clock, rcpts, "
                     "text, crc FROM messages WHERE sender = ?1 AND message_id = ?2",
    [S_MSG_INSERT] = "INSERT INTO messages(sender, message_id, ts_us, expires_us, flags, live, "
                     "clock, rcpts, text, crc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    [S_ENTRY_INSERT] = "INSERT INTO entries(user_id, seq, msg, crc) VALUES (?1, ?2, ?3, ?4)",
    /* S_READ, S_HISTORY and S_DEDUP_FIND: columns 0..8 are those of
     * COL_* (check_row reads them by these numbers). A LEFT JOIN, so that an
     * entry whose msg no longer points at a row is reported damaged instead
     * of silently skipped. */
    [S_READ] = "SELECT e.seq, m.sender, m.message_id, m.ts_us, m.expires_us, m.flags, m.clock, "
               "m.rcpts, m.text, m.crc, e.msg, e.crc FROM entries e LEFT JOIN messages m "
               "ON m.id = e.msg WHERE e.user_id = ?1 AND e.seq >= ?2 ORDER BY e.seq LIMIT ?3",
    [S_HISTORY] = "SELECT e.seq, m.sender, m.message_id, m.ts_us, m.expires_us, m.flags, "
                  "m.clock, m.rcpts, m.text, m.crc, e.msg, e.crc FROM entries e LEFT JOIN "
                  "messages m ON m.id = e.msg WHERE e.user_id = ?1 ORDER BY e.seq DESC LIMIT ?2",
    [S_COUNT_RANGE] = "SELECT count(*) FROM entries WHERE user_id = ?1 AND seq BETWEEN ?2 AND ?3",
    [S_RETAIN_THRESHOLD] = "SELECT seq FROM entries WHERE user_id = ?1 AND seq <= ?2 "
                           "ORDER BY seq DESC LIMIT 1 OFFSET ?3",
    [S_LIVE_DEC] = "UPDATE messages SET live = live - 1 WHERE id IN "
                   "(SELECT msg FROM entries WHERE user_id = ?1 AND seq BETWEEN ?2 AND ?3)",
    [S_MSG_DROP] = "DELETE FROM messages WHERE live = 0 AND message_id IS NULL AND id IN "
                   "(SELECT msg FROM entries WHERE user_id = ?1 AND seq BETWEEN ?2 AND ?3)",
    [S_ENTRY_DELETE] = "DELETE FROM entries WHERE user_id = ?1 AND seq BETWEEN ?2 AND ?3",
    [S_PRUNE] = "DELETE FROM messages WHERE id IN "
                "(SELECT id FROM messages WHERE live = 0 AND ts_us < ?1 LIMIT 256)",
    [S_EXPIRED_FIND] = "SELECT e.seq FROM entries e JOIN messages m ON m.id = e.msg "
                       "WHERE e.user_id = ?1 AND e.seq > ?2 AND m.expires_us > 0 "
                       "AND m.expires_us <= ?3 ORDER BY e.seq",
};

static const char *const schema_sql =
    "CREATE TABLE schema_version (version INTEGER NOT NULL);"
    "INSERT INTO schema_version VALUES (2);"
    "CREATE TABLE users ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  next_seq INTEGER NOT NULL,"
    "  acked_seq INTEGER NOT NULL,"
    "  created_us INTEGER NOT NULL);"
    "CREATE TABLE messages ("
    "  id INTEGER PRIMARY KEY,"
    "  sender TEXT NOT NULL,"
    "  message_id TEXT,"
    "  ts_us INTEGER NOT NULL,"
    "  expires_us INTEGER NOT NULL,"
    "  flags INTEGER NOT NULL,"
    "  live INTEGER NOT NULL,"
    "  clock BLOB,"
    "  rcpts BLOB NOT NULL,"
    "  text BLOB NOT NULL,"
    "  crc INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX messages_dedup ON messages(sender, message_id)"
    "  WHERE message_id IS NOT NULL;"
    "CREATE INDEX messages_dead ON messages(ts_us) WHERE live = 0;"
    "CREATE TABLE entries ("
    "  user_id INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  msg INTEGER NOT NULL,"
    "  crc INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (user_id, seq)) WITHOUT ROWID;";

/* Schema 1 -> 2: the checksum columns (same definition and place as in
 * schema_sql, so a migrated store is indistinguishable from a new one);
 * migrate_v1 then fills them. */
static const char *const migrate_v1_sql =
    "ALTER TABLE messages ADD COLUMN crc INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE entries ADD COLUMN crc INTEGER NOT NULL DEFAULT 0;"
    "UPDATE schema_version SET version = 2;";

#define MSG_FLAG_BROADCAST 1

struct cw_store {
    sqlite3 *db;                     /* the connection; exclusive lock on the file */
    sqlite3_stmt *st[N_STMTS];       /* prepared once, reset after every use */
    int lock_fd;                     /* data_dir/LOCK, flock'ed; -1 when closed */
    char *dir;                       /* data directory (owned) */
    cw_store_options_t opt;          /* options as given (sqlite_vfs not kept) */
    store_state_t state;             /* OPEN or sticky FAILED */
    txn_state_t txn;                 /* transaction state, see the state machine */
    int txn_group;                   /* the open transaction is the caller's group */
    int txn_wrote;                   /* the open transaction changed something */
    zhashx_t *users;                 /* name -> user_t (owned) */
    user_t **dirty;                  /* users with dirty set */
    size_t n_dirty, cap_dirty;
    uint64_t serial;                 /* counts appended messages: user_t.mark */
    uint64_t pending_total;          /* sum of users' pending */
    cw_store_stats_t stats;          /* committed counters */
    cw_store_stats_t tx;             /* counters of the open transaction */
    uint8_t *buf;                    /* scratch: rcpts blob under construction */
    size_t buf_cap;
    uint64_t *seqs;                  /* scratch: seqs to delete */
    size_t seqs_cap;
    char errmsg[512];                /* last error */
    sqlite3_stmt *clock_save;        /* resume clocks: the upsert, prepared (and the table
                                        created) at first use; NULL again after a failure */
    /* The seq ledger (seq_ledger.h; issue 11 item 8). seq_total and
     * acked_total are sums over the cache of next_seq - 1 and acked_seq;
     * reserved >= seq_total of every committed state (written to the
     * ledger with fsync before a COMMIT that would pass it); new users
     * start at floor + 1. */
    cw_ledger_t *ledger;
    uint64_t seq_total, acked_total, reserved, floor;
    size_t n_noted;                  /* dirty[0..n_noted): flushed users to note after COMMIT */
    int may_create;                  /* open: no store files existed, a new store may be made */
};

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */

static void set_err(cw_store_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(cw_store_t *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->errmsg, sizeof s->errmsg, fmt, ap);
    va_end(ap);
}

static void set_failed(cw_store_t *s, const char *why);

/* Records SQLite's error for `what`; returns CW_STORE_ERROR. Corruption
 * seen by any statement puts the store in its failed state. */
static int sql_err(cw_store_t *s, const char *what)
{
    int code = sqlite3_extended_errcode(s->db);
    set_err(s, "%s: %s (sqlite %d)", what, sqlite3_errmsg(s->db), code);
    CW_ERROR("store: %s", s->errmsg);
    if ((code & 0xff) == SQLITE_CORRUPT || (code & 0xff) == SQLITE_NOTADB)
        set_failed(s, "the database is corrupt");
    return CW_STORE_ERROR;
}

/* Enters the sticky failed state. */
static void set_failed(cw_store_t *s, const char *why)
{
    if (s->state != STORE_FAILED)
        CW_ERROR("store: entering failed state (%s); refusing all operations until reopened",
                 why);
    s->state = STORE_FAILED;
    s->txn = TXN_NONE;
    s->txn_group = 0;
}

static int failed_refusal(cw_store_t *s)
{
    /* Keep the original cause visible. */
    if (strncmp(s->errmsg, "store failed: ", 14) != 0) {
        char prev[sizeof s->errmsg];
        memcpy(prev, s->errmsg, sizeof prev);
        set_err(s, "store failed: %s", prev);
    }
    return CW_STORE_ERROR;
}

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t) (v >> (8 * i));
}

static uint64_t get_u64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t) p[i] << (8 * i);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Checksums (see "Checksums" in the file header)                            */

/* Columns of S_READ / S_HISTORY / S_DEDUP_FIND (the last two: entries only). */
enum {
    COL_SEQ, COL_SENDER, COL_MID, COL_TS, COL_EXPIRES, COL_FLAGS, COL_CLOCK, COL_RCPTS,
    COL_TEXT, COL_MCRC, COL_MSG, COL_ECRC
};

/* Every field goes in with its length first, so that moving bytes from one
 * field to the next changes the sum. */
static uint32_t crc_bytes(uint32_t crc, const void *p, size_t len)
{
    uint8_t l[8];
    put_u64le(l, len);
    crc = (uint32_t) crc32_z(crc, l, sizeof l);
    return len ? (uint32_t) crc32_z(crc, p, len) : crc;
}

static uint32_t crc_u64(uint32_t crc, uint64_t v)
{
    uint8_t b[8];
    put_u64le(b, v);
    return (uint32_t) crc32_z(crc, b, sizeof b);
}

/* The fields of a message row that are checksummed, as written or read. */
typedef struct {
    const char *sender;
    size_t sender_len;
    const char *mid;              /* NULL and "" sum alike (both are served as "") */
    size_t mid_len;
    uint64_t ts_us, expires_us;
    uint64_t flags;
    const uint8_t *clock;
    size_t clock_len;
    const uint8_t *rcpts;
    size_t rcpts_len;
    const void *text;
    size_t text_len;
} msg_fields_t;

static uint32_t msg_crc(const msg_fields_t *f)
{
    uint32_t crc = (uint32_t) crc32_z(0, NULL, 0);
    crc = crc_bytes(crc, f->sender, f->sender_len);
    crc = crc_bytes(crc, f->mid, f->mid ? f->mid_len : 0);
    crc = crc_u64(crc, f->ts_us);
    crc = crc_u64(crc, f->expires_us);
    crc = crc_u64(crc, f->flags);
    crc = crc_bytes(crc, f->clock, f->clock_len);
    crc = crc_bytes(crc, f->rcpts, f->rcpts_len);
    return crc_bytes(crc, f->text, f->text_len);
}

/* The checksum of queue entry (user, seq) pointing at message row msg. */
static uint32_t entry_crc(const char *user, uint64_t seq, int64_t msg, uint32_t mcrc)
{
    uint32_t crc = (uint32_t) crc32_z(0, NULL, 0);
    crc = crc_bytes(crc, user, strlen(user));
    crc = crc_u64(crc, seq);
    crc = crc_u64(crc, (uint64_t) msg);
    return crc_u64(crc, mcrc);
}

/* The message columns of a row of S_READ / S_HISTORY / S_DEDUP_FIND. The
 * pointers are SQLite's, valid until the statement moves on. */
static void row_fields(sqlite3_stmt *st, msg_fields_t *f)
{
    f->sender = (const char *) sqlite3_column_text(st, COL_SENDER);
    f->sender_len = f->sender ? (size_t) sqlite3_column_bytes(st, COL_SENDER) : 0;
    f->mid = (const char *) sqlite3_column_text(st, COL_MID);
    f->mid_len = f->mid ? (size_t) sqlite3_column_bytes(st, COL_MID) : 0;
    f->ts_us = (uint64_t) sqlite3_column_int64(st, COL_TS);
    f->expires_us = (uint64_t) sqlite3_column_int64(st, COL_EXPIRES);
    f->flags = (uint64_t) sqlite3_column_int64(st, COL_FLAGS);
    f->clock = sqlite3_column_blob(st, COL_CLOCK);
    f->clock_len = f->clock ? (size_t) sqlite3_column_bytes(st, COL_CLOCK) : 0;
    f->rcpts = sqlite3_column_blob(st, COL_RCPTS);
    f->rcpts_len = f->rcpts ? (size_t) sqlite3_column_bytes(st, COL_RCPTS) : 0;
    f->text = sqlite3_column_blob(st, COL_TEXT);
    f->text_len = f->text ? (size_t) sqlite3_column_bytes(st, COL_TEXT) : 0;
}

/* Checks a row read back (check_entry: also the entry columns, for the
 * queue of user). Returns NULL if it is sound, else why it is damaged. */
static const char *check_row(sqlite3_stmt *st, const msg_fields_t *f, int check_entry,
                             const char *user)
{
    if (check_entry && sqlite3_column_type(st, COL_MCRC) == SQLITE_NULL)
        return "the entry points at no stored message";
    /* the type first: after a conversion SQLite's column type is undefined */
    if (sqlite3_column_type(st, COL_MCRC) != SQLITE_INTEGER)
        return "the message fails its checksum";
    uint32_t mcrc = (uint32_t) sqlite3_column_int64(st, COL_MCRC);
    if (msg_crc(f) != mcrc)
        return "the message fails its checksum";
    if (check_entry &&
        (sqlite3_column_type(st, COL_ECRC) != SQLITE_INTEGER ||
         (uint32_t) sqlite3_column_int64(st, COL_ECRC) !=
             entry_crc(user, (uint64_t) sqlite3_column_int64(st, COL_SEQ),
                       sqlite3_column_int64(st, COL_MSG), mcrc)))
        return "the queue entry fails its checksum";
    /* Right sums over wrong data are possible only if it was stored so
     * (an older broker, a migrated store): still never served. */
    if (!cw_utf8_valid(f->sender, f->sender_len) || !cw_utf8_valid(f->mid, f->mid_len) ||
        !cw_utf8_valid(f->text, f->text_len))
        return "a stored string is not valid UTF-8";
    for (size_t off = 0; off < f->rcpts_len;) {
        if (off + RCPT_REC_FIXED >= f->rcpts_len)
            return "the recipient list does not parse";
        const char *name = (const char *) f->rcpts + off + RCPT_REC_FIXED;
        size_t nl = strnlen(name, f->rcpts_len - off - RCPT_REC_FIXED);
        if (off + RCPT_REC_FIXED + nl >= f->rcpts_len)
            return "the recipient list does not parse";
        if (!cw_utf8_valid(name, nl))
            return "a stored recipient name is not valid UTF-8";
        off += RCPT_REC_FIXED + nl + 1;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = n;
    return 0;
}

static sqlite3_stmt *stmt(cw_store_t *s, int which)
{
    sqlite3_stmt *st = s->st[which];
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
}

/* Steps a statement that returns no rows; resets it. SQLITE_DONE or error. */
static int exec_stmt(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        rc = SQLITE_DONE;
    sqlite3_reset(st);
    return rc;
}

static void user_free(void **item)
{
    if (item && *item) {
        free(*item);
        *item = NULL;
    }
}

static user_t *user_find(cw_store_t *s, const char *name)
{
    return name ? zhashx_lookup(s->users, name) : NULL;
}

static int mark_dirty(cw_store_t *s, user_t *u)
{
    if (u->dirty)
        return 0;
    if (grow((void **) &s->dirty, &s->cap_dirty, s->n_dirty + 1, sizeof *s->dirty) != 0)
        return -1;
    s->dirty[s->n_dirty++] = u;
    u->dirty = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The cache                                                                 */

/* Rebuilds the user cache from the database (invariant 7). CW_OK or
 * CW_STORE_ERROR (cache then empty). */
static int cache_load(cw_store_t *s)
{
    zhashx_purge(s->users);
    s->n_dirty = 0;
    s->n_noted = 0;
    s->pending_total = 0;
    s->seq_total = 0;
    s->acked_total = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT id, name, next_seq, acked_seq FROM users", -1,
                                &st, NULL);
    if (rc != SQLITE_OK)
        return sql_err(s, "loading users");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        user_t *u = calloc(1, sizeof *u);
        if (!u) {
            sqlite3_finalize(st);
            set_err(s, "loading users: out of memory");
            return CW_STORE_ERROR;
        }
        u->id = sqlite3_column_int64(st, 0);
        u->next_seq = (uint64_t) sqlite3_column_int64(st, 2);
        u->acked_seq = (uint64_t) sqlite3_column_int64(st, 3);
        const char *name = (const char *) sqlite3_column_text(st, 1);
        snprintf(u->name, sizeof u->name, "%s", name ? name : "");
        s->seq_total += u->next_seq ? u->next_seq - 1 : 0;
        s->acked_total += u->acked_seq;
        zhashx_insert(s->users, u->name, u);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_err(s, "loading users");

    /* Pending counts: one pass over the pending part of every queue. The
     * ids are mapped back to cached users through a temporary hash. */
    zhashx_t *by_id = zhashx_new();
    if (!by_id) {
        set_err(s, "loading users: out of memory");
        return CW_STORE_ERROR;
    }
    for (user_t *u = zhashx_first(s->users); u; u = zhashx_next(s->users)) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long) u->id);
        zhashx_insert(by_id, key, u);
    }
    zhashx_set_destructor(by_id, NULL);
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT e.user_id, count(*) FROM entries e JOIN users u "
                            "ON u.id = e.user_id WHERE e.seq > u.acked_seq GROUP BY e.user_id",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) {
        zhashx_destroy(&by_id);
        return sql_err(s, "counting pending entries");
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char key[32];
        snprintf(key, sizeof key, "%lld", (long long) sqlite3_column_int64(st, 0));
        user_t *u = zhashx_lookup(by_id, key);
        if (u) {
            u->pending = (uint64_t) sqlite3_column_int64(st, 1);
            s->pending_total += u->pending;
        }
    }
    sqlite3_finalize(st);
    zhashx_destroy(&by_id);
    if (rc != SQLITE_DONE)
        return sql_err(s, "counting pending entries");
    return CW_OK;
}

/* Debug builds: the cheap part of invariants 2 and 7, after every commit
 * (cw_store_verify checks the rest against the database). */
static void cache_check(cw_store_t *s)
{
#ifndef NDEBUG
    uint64_t total = 0;
    for (user_t *u = zhashx_first(s->users); u; u = zhashx_next(s->users)) {
        assert(u->next_seq >= 1);
        assert(u->acked_seq < u->next_seq);
        assert(u->pending <= u->next_seq - 1 - u->acked_seq);
        assert(!u->dirty);
        total += u->pending;
    }
    assert(total == s->pending_total);
    assert(s->n_dirty == 0);
#else
    (void) s;
#endif
}

/* Writes dirty users back (before COMMIT). SQLite status. */
static int cache_flush(cw_store_t *s)
{
    for (size_t i = 0; i < s->n_dirty; i++) {
        user_t *u = s->dirty[i];
        sqlite3_stmt *st = stmt(s, S_USER_UPDATE);
        sqlite3_bind_int64(st, 1, u->id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) u->next_seq);
        sqlite3_bind_int64(st, 3, (sqlite3_int64) u->acked_seq);
        int rc = exec_stmt(st);
        if (rc != SQLITE_DONE)
            return rc;
    }
    for (size_t i = 0; i < s->n_dirty; i++)
        s->dirty[i]->dirty = 0;
    s->n_noted = s->n_dirty;        /* for the ledger, once committed */
    s->n_dirty = 0;
    return SQLITE_DONE;
}

/* The store's progress: grows with every commit that assigns a seq,
 * acknowledges one or adds a user (seq_ledger.h). */
static uint64_t progress(const cw_store_t *s)
{
    return s->seq_total + s->acked_total + zhashx_size(s->users);
}

/* After a COMMIT: the ledger learns what it made durable. */
static void ledger_note(cw_store_t *s)
{
    if (!s->ledger)
        return;
    for (size_t i = 0; i < s->n_noted; i++) {
        user_t *u = s->dirty[i];
        cw_ledger_note_user(s->ledger, u->id, u->name, u->next_seq - 1, u->acked_seq);
    }
    s->n_noted = 0;
    cw_ledger_note_progress(s->ledger, progress(s));
}

/* ------------------------------------------------------------------------ */
/* Transactions                                                              */

/* Undoes the open transaction after a failed statement: ROLLBACK (unless
 * SQLite already did), reload the cache. A group becomes ABORTED, an
 * implicit transaction ends. Sticky failure if either step fails.
 * Returns CW_STORE_ERROR (the caller's result). */
static int abort_txn(cw_store_t *s)
{
    int group = s->txn_group;
    char cause[sizeof s->errmsg];
    memcpy(cause, s->errmsg, sizeof cause);
    s->stats.errors++;
    memset(&s->tx, 0, sizeof s->tx);
    if (!sqlite3_get_autocommit(s->db)) {
        int rc = exec_stmt(s->st[S_ROLLBACK]);
        if (rc != SQLITE_DONE) {
            sql_err(s, "rollback");
            set_failed(s, "rollback failed");
            return CW_STORE_ERROR;
        }
    }
    if (cache_load(s) != CW_OK) {
        set_failed(s, "cache reload after rollback failed");
        return CW_STORE_ERROR;
    }
    memcpy(s->errmsg, cause, sizeof cause);   /* report the first cause */
    s->txn = group ? TXN_ABORTED : TXN_NONE;
    s->txn_wrote = 0;
    return CW_STORE_ERROR;
}

/* Commits the open transaction: the commit point (see the file header). */
static int commit_txn(cw_store_t *s)
{
    int rc = cache_flush(s);
    if (rc != SQLITE_DONE) {
        sql_err(s, "writing user log");
        abort_txn(s);
        if (s->state == STORE_OPEN) {
            s->txn = TXN_NONE;      /* the group, if any, is over */
            s->txn_group = 0;
        }
        return CW_STORE_ERROR;
    }
    if (s->ledger && s->seq_total > s->reserved) {
        /* Before the commit that hands out seqs past the reservation, and
         * so before any reply about them: reserve the next block, fsynced
         * (seq_ledger.h). A failure fails the transaction, nothing else. */
        uint64_t want = s->seq_total + CW_LEDGER_RESERVE_BLOCK;
        if (cw_ledger_reserve(s->ledger, want, s->floor) != CW_OK) {
            set_err(s, "writing the seq reservation to %s/" CW_LEDGER_FILE ": %s", s->dir,
                    strerror(errno));
            CW_ERROR("store: %s", s->errmsg);
            abort_txn(s);
            if (s->state == STORE_OPEN) {
                s->txn = TXN_NONE;
                s->txn_group = 0;
            }
            return CW_STORE_ERROR;
        }
        s->reserved = want;
    }
    rc = exec_stmt(s->st[S_COMMIT]);
    if (rc != SQLITE_DONE) {
        sql_err(s, "commit");
        int code = sqlite3_extended_errcode(s->db);
        if ((code & 0xff) == SQLITE_FULL) {
            /* Disk full while writing WAL frames: the commit frame was not
             * written, the transaction did not happen. Roll back and go on. */
            abort_txn(s);
            if (s->state == STORE_OPEN) {
                s->txn = TXN_NONE;
                s->txn_group = 0;
            }
            return CW_STORE_ERROR;
        }
        /* The frames, even the commit frame, may be on disk (e.g. fsync
         * failed after the write): recovery might replay this transaction
         * that we are about to report as failed. Consistency in doubt. */
        s->stats.errors++;
        if (!sqlite3_get_autocommit(s->db))
            exec_stmt(s->st[S_ROLLBACK]);
        set_failed(s, "commit failed; its outcome on disk is unknown");
        return CW_STORE_ERROR;
    }
    if (s->txn_wrote)
        s->stats.commits++;
    s->stats.appended += s->tx.appended;
    s->stats.entries += s->tx.entries;
    s->stats.duplicates += s->tx.duplicates;
    s->stats.queue_full += s->tx.queue_full;
    s->stats.expired += s->tx.expired;
    s->stats.acked += s->tx.acked;
    memset(&s->tx, 0, sizeof s->tx);
    s->txn = TXN_NONE;
    s->txn_group = 0;
    s->txn_wrote = 0;
    ledger_note(s);
    cache_check(s);
    return CW_OK;
}

/* Makes sure a transaction is open for a write. *own is set if this call
 * opened it (and so must end it with txn_leave). */
static int txn_enter(cw_store_t *s, int *own)
{
    *own = 0;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    if (s->txn == TXN_ABORTED) {
        set_err(s, "the group already failed; roll it back");
        return CW_STORE_ERROR;
    }
    if (s->txn == TXN_OPEN)
        return CW_OK;
    if (exec_stmt(s->st[S_BEGIN]) != SQLITE_DONE) {
        sql_err(s, "begin");
        s->stats.errors++;
        return CW_STORE_ERROR;
    }
    s->txn = TXN_OPEN;
    s->txn_group = 0;
    s->txn_wrote = 0;
    *own = 1;
    return CW_OK;
}

/* Ends what txn_enter started: on failure (rc != CW_OK and not a logical
 * status) aborts the transaction (own or group), else commits if own. */
static int txn_leave(cw_store_t *s, int own, int rc)
{
    if (rc == CW_STORE_ERROR)
        return s->state == STORE_FAILED ? CW_STORE_ERROR : abort_txn(s);
    if (own)
        return commit_txn(s);
    return CW_OK;
}

int cw_store_txn_begin(cw_store_t *s)
{
    if (!s)
        return CW_ERR_INVALID;
    if (s->txn != TXN_NONE) {
        set_err(s, "a group is already open");
        return CW_ERR_INVALID;
    }
    int own;
    int rc = txn_enter(s, &own);
    if (rc == CW_OK)
        s->txn_group = 1;
    return rc;
}

int cw_store_txn_commit(cw_store_t *s)
{
    if (!s)
        return CW_ERR_INVALID;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    if (s->txn == TXN_ABORTED) {
        s->txn = TXN_NONE;
        s->txn_group = 0;
        return CW_STORE_ERROR;   /* errmsg still holds the cause */
    }
    if (s->txn != TXN_OPEN || !s->txn_group) {
        set_err(s, "no group is open");
        return CW_ERR_INVALID;
    }
    return commit_txn(s);
}

void cw_store_txn_rollback(cw_store_t *s)
{
    if (!s || s->state == STORE_FAILED)
        return;
    if (s->txn == TXN_ABORTED) {
        s->txn = TXN_NONE;
        s->txn_group = 0;
        return;
    }
    if (s->txn != TXN_OPEN)
        return;
    char cause[sizeof s->errmsg];
    memcpy(cause, s->errmsg, sizeof cause);
    set_err(s, "group rolled back by the caller");
    abort_txn(s);
    s->stats.errors--;          /* a requested rollback is not an error */
    s->txn = TXN_NONE;
    s->txn_group = 0;
    memcpy(s->errmsg, cause, sizeof cause);
}

/* ------------------------------------------------------------------------ */
/* Open / close                                                              */

void cw_store_options_init(cw_store_options_t *opt)
{
    memset(opt, 0, sizeof *opt);
    opt->dedup_window_s = 86400;
}

/* Runs a statement that must produce one text row, into out. */
static int pragma_text(sqlite3 *db, const char *sql, char *out, size_t size)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(out, size, "%s", t ? (const char *) t : "");
        rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
        out[0] = '\0';
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

/* fsync()s a directory so that entries created in it survive a crash. */
static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Takes the data directory lock. Returns the fd or -1 with err filled. */
static int take_lock(const char *dir, char *err, size_t err_size, int *status)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" LOCK_FILE, dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, err_size, "cannot open lock file %s: %s", path, strerror(errno));
        *status = CW_ERR_IO;
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        if (n > 0) {
            pid[n] = '\0';
            pid[strcspn(pid, "\n")] = '\0';
        }
        if (e == EWOULDBLOCK)
            snprintf(err, err_size, "data dir %s is in use by another broker (pid %s)", dir,
                     pid[0] ? pid : "unknown");
        else
            snprintf(err, err_size, "cannot lock %s: %s", path, strerror(e));
        close(fd);
        *status = CW_ERR_IO;
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long) getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t) n, 0) != n)
        CW_WARN("store: cannot write pid to %s: %s", path, strerror(errno));
    return fd;
}

/* Migrates a schema 1 store (no checksums) to schema 2 in one
 * transaction: adds the columns, computes every message's and entry's
 * checksum from the data as it is now. SQLite status (err filled on a
 * failure of ours). */
static int migrate_v1(cw_store_t *s, char *err, size_t err_size)
{
    sqlite3_stmt *sel = NULL, *upd = NULL;
    uint64_t n_msgs = 0, n_entries = 0;
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, migrate_v1_sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT 0, sender, message_id, ts_us, expires_us, flags, clock, "
                                "rcpts, text, id FROM messages",
                                -1, &sel, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db, "UPDATE messages SET crc = ?1 WHERE id = ?2", -1, &upd,
                                NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
        msg_fields_t f;
        row_fields(sel, &f);
        sqlite3_reset(upd);
        sqlite3_bind_int64(upd, 1, (sqlite3_int64) msg_crc(&f));
        sqlite3_bind_int64(upd, 2, sqlite3_column_int64(sel, 9));
        rc = exec_stmt(upd) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
        n_msgs++;
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    sel = upd = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT u.name, e.user_id, e.seq, e.msg, m.crc FROM entries e "
                                "JOIN users u ON u.id = e.user_id JOIN messages m ON m.id = e.msg",
                                -1, &sel, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(s->db,
                                "UPDATE entries SET crc = ?1 WHERE user_id = ?2 AND seq = ?3", -1,
                                &upd, NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(sel)) == SQLITE_ROW) {
        const char *name = (const char *) sqlite3_column_text(sel, 0);
        uint64_t seq = (uint64_t) sqlite3_column_int64(sel, 2);
        uint32_t crc = entry_crc(name ? name : "", seq, sqlite3_column_int64(sel, 3),
                                 (uint32_t) sqlite3_column_int64(sel, 4));
        sqlite3_reset(upd);
        sqlite3_bind_int64(upd, 1, (sqlite3_int64) crc);
        sqlite3_bind_int64(upd, 2, sqlite3_column_int64(sel, 1));
        sqlite3_bind_int64(upd, 3, (sqlite3_int64) seq);
        rc = exec_stmt(upd) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(s->db);
        n_entries++;
    }
    if (rc == SQLITE_DONE)
        rc = SQLITE_OK;
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "%s/" DB_FILE ": migrating schema 1 to 2: %s", s->dir,
                 sqlite3_errmsg(s->db));
        if (!sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return SQLITE_ERROR;
    }
    CW_WARN("store: migrated %s/" DB_FILE " from schema 1 to 2: checksums computed now for "
            "%llu messages and %llu queue entries (they vouch for the data as it is now, "
            "not for any damage it took before)",
            s->dir, (unsigned long long) n_msgs, (unsigned long long) n_entries);
    return SQLITE_OK;
}

/* Creates the schema in a fresh database, or checks an existing one.
 * SQLite status; on a semantic failure SQLITE_ERROR with err filled. */
static int schema_check(cw_store_t *s, char *err, size_t err_size)
{
    char buf[64];
    int rc = pragma_text(s->db, "SELECT count(*) FROM sqlite_master", buf, sizeof buf);
    if (rc != SQLITE_OK)
        return rc;
    if (atoi(buf) == 0) {
        if (!s->may_create) {
            /* Issue 11 item 9: e.g. a damaged WAL header makes SQLite ignore
             * the WAL, and a database never checkpointed then looks empty.
             * Never make a new store over the files of an old one. */
            snprintf(err, err_size,
                     "%s holds store files (%s) but SQLite finds no store in them (damaged "
                     "WAL header, or an interrupted creation); refusing to create a new store "
                     "over them. Nothing was changed. See OPERATIONS.md, \"Damaged store "
                     "files\"",
                     s->dir, s->errmsg);
            return SQLITE_ERROR;
        }
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA application_id = %d", APPLICATION_ID);
        rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(s->db, schema_sql, NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
        if (rc != SQLITE_OK && !sqlite3_get_autocommit(s->db))
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            CW_INFO("store: created a new store in %s (schema %d)", s->dir, SCHEMA_VERSION);
        return rc;
    }
    rc = pragma_text(s->db, "PRAGMA application_id", buf, sizeof buf);
    if (rc != SQLITE_OK)
        return rc;
    if (atoi(buf) != APPLICATION_ID) {
        snprintf(err, err_size, "%s/" DB_FILE " is not a causeway store (application_id %s)",
                 s->dir, buf);
        return SQLITE_ERROR;
    }
    rc = pragma_text(s->db, "SELECT max(version) FROM schema_version", buf, sizeof buf);
    if (rc != SQLITE_OK)
        return rc;
    int version = atoi(buf);
    if (version == 1)
        return migrate_v1(s, err, err_size);
    if (version != SCHEMA_VERSION) {
        snprintf(err, err_size, "%s/" DB_FILE " has schema version %d; this broker knows %d%s",
                 s->dir, version, SCHEMA_VERSION,
                 version > SCHEMA_VERSION ? " (written by a newer causeway)" : "");
        return SQLITE_ERROR;
    }
    return SQLITE_OK;
}

static void store_free(cw_store_t *s)
{
    cw_ledger_close(&s->ledger);
    for (int i = 0; i < N_STMTS; i++)
        sqlite3_finalize(s->st[i]);
    sqlite3_finalize(s->clock_save);
    if (s->db) {
        int rc = sqlite3_close(s->db);
        if (rc != SQLITE_OK)
            CW_ERROR("store: closing the database: %s", sqlite3_errstr(rc));
    }
    if (s->lock_fd >= 0)
        close(s->lock_fd);        /* releases the flock */
    zhashx_destroy(&s->users);
    free(s->dirty);
    free(s->buf);
    free(s->seqs);
    free(s->dir);
    free(s);
}

/* Appends to a bounded string. */
static void addf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void addf(char *buf, size_t size, const char *fmt, ...)
{
    size_t n = strlen(buf);
    if (n + 1 >= size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + n, size - n, fmt, ap);
    va_end(ap);
}

/* Before SQLite touches anything (issue 11 item 9): which store files are
 * there. Describes them into files (for messages) and decides may_create:
 * only when none of causeway.db (non-empty), causeway.db-wal (non-empty)
 * or the seq ledger exists. An empty or missing causeway.db beside a
 * non-empty WAL is refused here: SQLite would delete that WAL on open.
 * CW_OK or CW_STORE_ERROR (err filled). */
static int files_check(cw_store_t *s, char *files, size_t files_size, char *err, size_t err_size)
{
    static const char *const names[] = {DB_FILE, DB_FILE "-wal", CW_LEDGER_FILE};
    long long size[3];
    int present[3];
    files[0] = '\0';
    for (int i = 0; i < 3; i++) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", s->dir, names[i]);
        present[i] = stat(path, &sb) == 0;
        size[i] = present[i] ? (long long) sb.st_size : 0;
        if (present[i])
            addf(files, files_size, "%s%s %lld bytes", files[0] ? ", " : "", names[i], size[i]);
    }
    s->may_create = !(present[0] && size[0] > 0) && !(present[1] && size[1] > 0) && !present[2];
    if (!(present[0] && size[0] > 0) && present[1] && size[1] > 0) {
        snprintf(err, err_size,
                 "%s holds store files (%s) but %s is %s: refusing to open (SQLite would "
                 "discard the WAL) or to create a new store over them. Nothing was changed. "
                 "See OPERATIONS.md, \"Damaged store files\"",
                 s->dir, files, DB_FILE, present[0] ? "empty" : "missing");
        return CW_STORE_ERROR;
    }
    return CW_OK;
}

/* Moves every user's next seq past anything the lost commits can have
 * handed out, and new users' start with it (seq_ledger.h, "Guarantee"),
 * in one transaction; then a new reservation and a rewritten ledger.
 * missing_max: the highest last seq of a user the ledger knows and the
 * database lost. CW_OK or CW_STORE_ERROR (err). */
static int ledger_recover(cw_store_t *s, uint64_t missing_max, char *err, size_t err_size)
{
    uint64_t jump = s->reserved > s->seq_total ? s->reserved - s->seq_total : 0;
    uint64_t floor = s->floor;
    if (jump > floor)
        floor = jump;
    if (missing_max > floor)
        floor = missing_max;
    int rc = exec_stmt(s->st[S_BEGIN]) == SQLITE_DONE ? CW_OK : CW_STORE_ERROR;
    for (user_t *u = zhashx_first(s->users); rc == CW_OK && u; u = zhashx_next(s->users)) {
        cw_ledger_user_t rec;
        uint64_t next = u->next_seq + jump;
        if (cw_ledger_user(s->ledger, u->id, &rec) && strcmp(rec.name, u->name) == 0 &&
            rec.last_seq + 1 > next)
            next = rec.last_seq + 1;
        s->seq_total += next - u->next_seq;
        u->next_seq = next;
        if (mark_dirty(s, u) != 0)
            rc = CW_STORE_ERROR;
    }
    if (rc == CW_OK && cache_flush(s) != SQLITE_DONE)
        rc = CW_STORE_ERROR;
    if (rc == CW_OK && exec_stmt(s->st[S_COMMIT]) != SQLITE_DONE)
        rc = CW_STORE_ERROR;
    if (rc != CW_OK) {
        snprintf(err, err_size, "recovery: moving the seqs on failed: %s", sqlite3_errmsg(s->db));
        if (!sqlite3_get_autocommit(s->db))
            exec_stmt(s->st[S_ROLLBACK]);
        return CW_STORE_ERROR;
    }
    s->floor = floor;
    s->reserved = s->seq_total + CW_LEDGER_RESERVE_BLOCK;
    if (cw_ledger_reserve(s->ledger, s->reserved, s->floor) != CW_OK) {
        snprintf(err, err_size, "recovery: writing %s/" CW_LEDGER_FILE ": %s", s->dir,
                 strerror(errno));
        return CW_STORE_ERROR;
    }
    cw_ledger_truncate_users(s->ledger, 0);
    for (user_t *u = zhashx_first(s->users); u; u = zhashx_next(s->users))
        cw_ledger_note_user(s->ledger, u->id, u->name, u->next_seq - 1, u->acked_seq);
    s->n_noted = 0;
    cw_ledger_note_progress(s->ledger, progress(s));
    CW_WARN("store: RECOVERED %s with data lost (--recover-store): every user's next seq moved "
            "up by at least %llu, new users start at seq %llu; no seq is handed out twice",
            s->dir, (unsigned long long) jump, (unsigned long long) floor + 1);
    return CW_OK;
}

/* Opens the seq ledger and compares it with the database (issue 11 item
 * 8): committed data missing from the database is reported (every user
 * and seq range the ledger knows of) and refused, unless opt.recover.
 * fresh: the store was created by this open. CW_OK or CW_STORE_ERROR /
 * CW_ERR_IO (err). */
static int ledger_open(cw_store_t *s, int fresh, char *err, size_t err_size)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" CW_LEDGER_FILE, s->dir);
    int existed = 0;
    int rc = cw_ledger_open(path, &s->ledger, &existed, err, err_size);
    if (rc == CW_STORE_ERROR && s->opt.recover) {
        CW_ERROR("store: %s; --recover-store: making a new one from the database (seqs "
                 "handed out in commits the WAL lost, if it lost any, may be handed out again)",
                 err);
        if (unlink(path) != 0) {
            snprintf(err, err_size, "cannot remove %s: %s", path, strerror(errno));
            return CW_ERR_IO;
        }
        err[0] = '\0';
        rc = cw_ledger_open(path, &s->ledger, &existed, err, err_size);
    } else if (rc == CW_STORE_ERROR) {
        addf(err, err_size, "; not starting. Start once with --recover-store to rebuild it "
             "(OPERATIONS.md, \"Damaged store files\")");
    }
    if (rc != CW_OK)
        return rc;
    if (!existed) {
        if (!fresh)
            CW_WARN("store: %s was missing: made from the database (a store from before it, "
                    "or it was removed: a loss before now cannot be detected)", path);
        s->floor = 0;
        s->reserved = s->seq_total + CW_LEDGER_RESERVE_BLOCK;
        if (cw_ledger_reserve(s->ledger, s->reserved, 0) != CW_OK) {
            snprintf(err, err_size, "cannot write %s: %s", path, strerror(errno));
            return CW_ERR_IO;
        }
        for (user_t *u = zhashx_first(s->users); u; u = zhashx_next(s->users))
            cw_ledger_note_user(s->ledger, u->id, u->name, u->next_seq - 1, u->acked_seq);
        cw_ledger_note_progress(s->ledger, progress(s));
        return CW_OK;
    }
    s->reserved = cw_ledger_reserved(s->ledger);
    s->floor = cw_ledger_floor(s->ledger);

    /* What the ledger knows and the database does not. */
    char lost[1024] = "";
    size_t n_lost = 0;
    uint64_t missing_max = 0;
    for (int64_t id = 1; id <= cw_ledger_max_id(s->ledger); id++) {
        cw_ledger_user_t rec;
        if (!cw_ledger_user(s->ledger, id, &rec))
            continue;
        user_t *u = user_find(s, rec.name);
        char line[256] = "";
        if (!u) {
            if (rec.last_seq > missing_max)
                missing_max = rec.last_seq;
            snprintf(line, sizeof line, "user %s is missing (with its seqs up to %llu)", rec.name,
                     (unsigned long long) rec.last_seq);
        } else if (rec.last_seq > u->next_seq - 1) {
            snprintf(line, sizeof line, "%s lost seqs %llu-%llu", rec.name,
                     (unsigned long long) u->next_seq, (unsigned long long) rec.last_seq);
        } else if (rec.acked_seq > u->acked_seq) {
            snprintf(line, sizeof line,
                     "%s lost the acknowledgement of seqs %llu-%llu (they will be delivered "
                     "again)",
                     rec.name, (unsigned long long) u->acked_seq + 1,
                     (unsigned long long) rec.acked_seq);
        }
        if (line[0]) {
            CW_ERROR("store: committed data missing from %s: %s", s->dir, line);
            addf(lost, sizeof lost, "%s%s", n_lost ? "; " : "", line);
            n_lost++;
        }
    }
    int valid;
    uint64_t mark = cw_ledger_progress(s->ledger, &valid);
    if (valid && mark > progress(s)) {
        CW_ERROR("store: committed data missing from %s: the store had made %llu changes "
                 "(seqs, acknowledgements, users), the database holds %llu",
                 s->dir, (unsigned long long) mark, (unsigned long long) progress(s));
        if (!n_lost)
            addf(lost, sizeof lost, "%llu changes (seqs, acknowledgements, users) of which "
                 "the ledger has no detail", (unsigned long long) (mark - progress(s)));
        n_lost++;
    }
    if (cw_ledger_bad_records(s->ledger))
        CW_WARN("store: %s: %zu damaged user records ignored", path,
                cw_ledger_bad_records(s->ledger));
    if (!n_lost) {
        if (s->seq_total > s->reserved) {
            /* Only an older ledger put back by hand can say less than the
             * database: take a new reservation from the database. */
            CW_WARN("store: %s reserved fewer seqs than the database holds; reserving anew",
                    path);
            s->reserved = s->seq_total + CW_LEDGER_RESERVE_BLOCK;
            if (cw_ledger_reserve(s->ledger, s->reserved, s->floor) != CW_OK) {
                snprintf(err, err_size, "cannot write %s: %s", path, strerror(errno));
                return CW_ERR_IO;
            }
        }
        return CW_OK;
    }
    if (!s->opt.recover) {
        snprintf(err, err_size,
                 "committed data is missing from the store in %s (its WAL was damaged or "
                 "truncated, or older files were put back): %s. Not starting: nothing was "
                 "changed. Keep a copy of the directory, then start once with --recover-store "
                 "to accept the loss (OPERATIONS.md, \"Damaged store files\")",
                 s->dir, lost);
        return CW_STORE_ERROR;
    }
    return ledger_recover(s, missing_max, err, err_size);
}

int cw_store_open(const char *data_dir, const cw_store_options_t *opt, cw_store_t **out,
                  char *err, size_t err_size)
{
    char dummy[8];
    if (!err || !err_size) {
        err = dummy;
        err_size = sizeof dummy;
    }
    err[0] = '\0';
    if (!out) {
        snprintf(err, err_size, "no result pointer");
        return CW_ERR_INVALID;
    }
    *out = NULL;
    if (!data_dir || !*data_dir) {
        snprintf(err, err_size, "no data directory given");
        return CW_ERR_INVALID;
    }
    if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, err_size, "cannot create data dir %s: %s", data_dir, strerror(errno));
        return CW_ERR_IO;
    }
    struct stat sb;
    if (stat(data_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err, err_size, "data dir %s is not a directory", data_dir);
        return CW_ERR_IO;
    }

    cw_store_t *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, err_size, "out of memory");
        return CW_ERR_NOMEM;
    }
    s->lock_fd = -1;
    if (opt)
        s->opt = *opt;
    else
        cw_store_options_init(&s->opt);
    s->dir = strdup(data_dir);
    s->users = zhashx_new();
    if (!s->dir || !s->users) {
        store_free(s);
        snprintf(err, err_size, "out of memory");
        return CW_ERR_NOMEM;
    }
    zhashx_set_destructor(s->users, user_free);

    int status = CW_OK;
    s->lock_fd = take_lock(data_dir, err, err_size, &status);
    if (s->lock_fd < 0) {
        store_free(s);
        return status;
    }

    /* SQLite's allocation statistics take a global mutex on every malloc;
     * nothing here reads them. Only possible before SQLite initialises, so
     * the first store opened in a process decides (SQLITE_MISUSE after). */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);

    if (files_check(s, s->errmsg, sizeof s->errmsg, err, err_size) != CW_OK) {
        store_free(s);
        return CW_STORE_ERROR;
    }
    int fresh = s->may_create;

    char path[4096];
    snprintf(path, sizeof path, "%s/" DB_FILE, data_dir);
    int rc = sqlite3_open_v2(path, &s->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             s->opt.sqlite_vfs);
    const char *step = "opening the database";
    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(s->db, 1);
        /* Until the open succeeded, closing must not checkpoint: that would
         * rewrite (and then delete) a WAL this open refuses, destroying
         * what is left of it. Re-enabled at the end of a good open. */
        sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
        /* EXCLUSIVE before WAL: the WAL index then lives in heap memory
         * (no -shm file) and no other process can open the database. */
        step = "setting locking_mode";
        rc = sqlite3_exec(s->db, "PRAGMA locking_mode = EXCLUSIVE", NULL, NULL, NULL);
    }
    char mode[32] = "";
    if (rc == SQLITE_OK) {
        step = "switching to WAL mode";
        rc = pragma_text(s->db, "PRAGMA journal_mode = WAL", mode, sizeof mode);
        if (rc == SQLITE_OK && strcmp(mode, "wal") != 0) {
            snprintf(err, err_size, "%s: SQLite refused WAL mode (journal_mode is %s)", path,
                     mode);
            store_free(s);
            return CW_STORE_ERROR;
        }
    }
    if (rc == SQLITE_OK) {
        step = "setting pragmas";
        rc = sqlite3_exec(s->db,
                          "PRAGMA synchronous = FULL;"
                          "PRAGMA wal_autocheckpoint = 4096;"
                          "PRAGMA journal_size_limit = 67108864;"
                          "PRAGMA cache_size = -32768;"
                          "PRAGMA temp_store = MEMORY;"
                          "PRAGMA foreign_keys = OFF;",
                          NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK) {
        step = "integrity check";
        char result[256] = "";
        rc = pragma_text(s->db, "PRAGMA quick_check", result, sizeof result);
        if (rc == SQLITE_OK && strcmp(result, "ok") != 0) {
            snprintf(err, err_size, "%s failed its integrity check (quick_check: %s); "
                     "refusing to open a corrupt store", path, result);
            store_free(s);
            return CW_STORE_ERROR;
        }
    }
    if (rc == SQLITE_OK) {
        step = "checking the schema";
        rc = schema_check(s, err, err_size);
        if (rc != SQLITE_OK && err[0]) {
            store_free(s);
            return CW_STORE_ERROR;
        }
    }
    for (int i = 0; rc == SQLITE_OK && i < N_STMTS; i++) {
        step = "preparing statements";
        rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                                NULL);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, err_size, "%s: %s: %s", path, step,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        store_free(s);
        return CW_STORE_ERROR;
    }
    if (cache_load(s) != CW_OK) {
        snprintf(err, err_size, "%s: %s", path, s->errmsg);
        store_free(s);
        return CW_STORE_ERROR;
    }
    s->errmsg[0] = '\0';
    int lrc = ledger_open(s, fresh, err, err_size);
    if (lrc != CW_OK) {
        store_free(s);
        return lrc;
    }
    sqlite3_db_config(s->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
    if (sync_dir(data_dir) != 0) {
        snprintf(err, err_size, "cannot fsync data dir %s: %s", data_dir, strerror(errno));
        store_free(s);
        return CW_ERR_IO;
    }
    CW_INFO("store: opened %s (%zu users, %llu pending)", path, zhashx_size(s->users),
            (unsigned long long) s->pending_total);
    *out = s;
    return CW_OK;
}

void cw_store_close(cw_store_t **p)
{
    if (!p || !*p)
        return;
    cw_store_t *s = *p;
    if (s->txn == TXN_OPEN && s->state == STORE_OPEN && !sqlite3_get_autocommit(s->db))
        exec_stmt(s->st[S_ROLLBACK]);
    store_free(s);
    *p = NULL;
}

const char *cw_store_errmsg(const cw_store_t *s)
{
    return s ? s->errmsg : "no store";
}

/* ------------------------------------------------------------------------ */
/* Users                                                                     */

static int name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    return n > 0 && n <= CW_NAME_MAX_HARD;
}

int cw_store_add_user(cw_store_t *s, const char *name, int *created)
{
    int dummy;
    if (!created)
        created = &dummy;
    *created = 0;
    if (!s)
        return CW_ERR_INVALID;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    if (!name_ok(name))
        return CW_BAD_NAME;
    if (user_find(s, name))
        return CW_OK;
    int own;
    int rc = txn_enter(s, &own);
    if (rc != CW_OK)
        return rc;
    sqlite3_stmt *st = stmt(s, S_USER_INSERT);
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64) cw_now_us());
    sqlite3_bind_int64(st, 3, (sqlite3_int64) s->floor + 1);
    if (exec_stmt(st) != SQLITE_DONE)
        return txn_leave(s, own, sql_err(s, "adding user"));
    s->txn_wrote = 1;
    user_t *u = calloc(1, sizeof *u);
    if (!u) {
        set_err(s, "adding user: out of memory");
        return txn_leave(s, own, CW_STORE_ERROR);
    }
    u->id = sqlite3_last_insert_rowid(s->db);
    u->next_seq = s->floor + 1;
    snprintf(u->name, sizeof u->name, "%s", name);
    s->seq_total += s->floor;
    zhashx_insert(s->users, name, u);
    if (mark_dirty(s, u) != 0) {    /* the ledger notes it after the commit */
        set_err(s, "adding user: out of memory");
        return txn_leave(s, own, CW_STORE_ERROR);
    }
    rc = txn_leave(s, own, CW_OK);
    if (rc == CW_OK)
        *created = 1;
    return rc;
}

int cw_store_list_users(cw_store_t *s, cw_store_user_t **users, size_t *n)
{
    if (!s || !users || !n)
        return CW_ERR_INVALID;
    *users = NULL;
    *n = 0;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    size_t cap = zhashx_size(s->users);
    cw_store_user_t *arr = calloc(cap ? cap : 1, sizeof *arr);
    if (!arr)
        return CW_ERR_NOMEM;
    sqlite3_stmt *st = stmt(s, S_USER_LIST);
    size_t i = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && i < cap) {
        const char *name = (const char *) sqlite3_column_text(st, 0);
        user_t *u = user_find(s, name);
        arr[i].name = strdup(name ? name : "");
        if (!arr[i].name) {
            sqlite3_reset(st);
            cw_store_users_free(&arr, i);
            return CW_ERR_NOMEM;
        }
        arr[i].created_us = (uint64_t) sqlite3_column_int64(st, 1);
        arr[i].pending = u ? u->pending : 0;
        arr[i].last_seq = u ? u->next_seq - 1 : 0;
        i++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        cw_store_users_free(&arr, i);
        return sql_err(s, "listing users");
    }
    *users = arr;
    *n = i;
    return CW_OK;
}

void cw_store_users_free(cw_store_user_t **users, size_t n)
{
    if (!users || !*users)
        return;
    for (size_t i = 0; i < n; i++)
        free((char *) (*users)[i].name);
    free(*users);
    *users = NULL;
}

int cw_store_pending(cw_store_t *s, const char *user, uint64_t *pending)
{
    if (!s || !pending)
        return CW_ERR_INVALID;
    user_t *u = user_find(s, user);
    if (!u)
        return CW_UNKNOWN_USER;
    *pending = u->pending;
    return CW_OK;
}

void cw_store_stats(const cw_store_t *s, cw_store_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    *out = s->stats;
    out->pending = s->pending_total;
    out->users = zhashx_size(s->users);
}

/* ------------------------------------------------------------------------ */
/* Deleting entries                                                          */

/* Deletes u's entries with seq in [lo, hi], keeping messages.live right and
 * dropping message rows nobody needs (invariant 3). Does not touch the
 * pending count. Returns the number deleted, or -1 (errmsg set). */
static int64_t delete_range(cw_store_t *s, user_t *u, uint64_t lo, uint64_t hi)
{
    static const int order[] = {S_LIVE_DEC, S_MSG_DROP, S_ENTRY_DELETE};
    for (int i = 0; i < 3; i++) {
        sqlite3_stmt *st = stmt(s, order[i]);
        sqlite3_bind_int64(st, 1, u->id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) lo);
        sqlite3_bind_int64(st, 3, (sqlite3_int64) hi);
        if (exec_stmt(st) != SQLITE_DONE) {
            sql_err(s, "deleting entries");
            return -1;
        }
    }
    s->txn_wrote = 1;
    return sqlite3_changes64(s->db);
}

/* Deletes the pending entries of u expired by now_us, counting them.
 * Returns the number deleted or -1. */
static int64_t drop_expired(cw_store_t *s, user_t *u, uint64_t now_us)
{
    sqlite3_stmt *st = stmt(s, S_EXPIRED_FIND);
    sqlite3_bind_int64(st, 1, u->id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64) u->acked_seq);
    sqlite3_bind_int64(st, 3, (sqlite3_int64) now_us);
    size_t n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (grow((void **) &s->seqs, &s->seqs_cap, n + 1, sizeof *s->seqs) != 0) {
            sqlite3_reset(st);
            set_err(s, "dropping expired entries: out of memory");
            return -1;
        }
        s->seqs[n++] = (uint64_t) sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        sql_err(s, "finding expired entries");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (delete_range(s, u, s->seqs[i], s->seqs[i]) < 0)
            return -1;
        u->pending--;
        s->pending_total--;
    }
    s->tx.expired += n;
    return (int64_t) n;
}

/* ------------------------------------------------------------------------ */
/* Append                                                                    */

/* Fills m's rcpts from a stored rcpts blob (a duplicate). */
static void fill_from_record(cw_store_msg_t *m, const uint8_t *blob, size_t len)
{
    for (size_t i = 0; i < m->n_rcpts; i++) {
        m->rcpts[i].status = CW_BAD_REQUEST;   /* not a recipient of the original */
        m->rcpts[i].seq = 0;
    }
    size_t k = 0;
    for (size_t off = 0; off + RCPT_REC_FIXED < len; k++) {
        const char *name = (const char *) blob + off + RCPT_REC_FIXED;
        size_t nl = strnlen(name, len - off - RCPT_REC_FIXED);
        int status = blob[off];
        uint64_t seq = get_u64le(blob + off + 1);
        /* Fast path: same position; else look the name up. */
        if (k < m->n_rcpts && m->rcpts[k].name && strcmp(m->rcpts[k].name, name) == 0) {
            m->rcpts[k].status = status;
            m->rcpts[k].seq = seq;
        } else {
            for (size_t i = 0; i < m->n_rcpts; i++)
                if (m->rcpts[i].name && strcmp(m->rcpts[i].name, name) == 0) {
                    m->rcpts[i].status = status;
                    m->rcpts[i].seq = seq;
                }
        }
        off += RCPT_REC_FIXED + nl + 1;
    }
}

/* Answers m from its dedup record if (sender, mid) is stored. Returns 1
 * (answered), 0 (not stored) or -1 (SQL error, errmsg set). */
static int answer_duplicate(cw_store_t *s, cw_store_msg_t *m, const char *mid)
{
    sqlite3_stmt *st = stmt(s, S_DEDUP_FIND);
    sqlite3_bind_text(st, 1, m->sender, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, mid, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        msg_fields_t f;
        row_fields(st, &f);
        const char *why = check_row(st, &f, 0, NULL);
        if (why) {
            /* The original outcome cannot be told: answer this message
             * (only) STORE_ERROR; nothing is stored for it. */
            sqlite3_reset(st);
            CW_ERROR("store: DAMAGED duplicate record of message id '%s' from %s (%s): "
                     "a retry of it is answered STORE_ERROR",
                     mid, m->sender, why);
            s->stats.damaged++;
            m->status = CW_STORE_ERROR;
            for (size_t i = 0; i < m->n_rcpts; i++) {
                m->rcpts[i].status = CW_STORE_ERROR;
                m->rcpts[i].seq = 0;
            }
            return 1;
        }
        fill_from_record(m, f.rcpts, f.rcpts_len);
        sqlite3_reset(st);
        m->duplicate = 1;
        m->status = CW_OK;
        s->tx.duplicates++;
        return 1;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        sql_err(s, "looking up message id");
        return -1;
    }
    return 0;
}

int cw_store_original(cw_store_t *s, const char *sender, const char *message_id,
                      cw_store_rcpt_t **rcpts, size_t *n)
{
    *rcpts = NULL;
    *n = 0;
    if (!s || !sender || !message_id || !*message_id)
        return CW_ERR_INVALID;
    sqlite3_stmt *st = stmt(s, S_DEDUP_FIND);
    sqlite3_bind_text(st, 1, sender, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, message_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        if (rc == SQLITE_DONE)
            return CW_UNKNOWN_USER;
        sql_err(s, "looking up message id");
        return CW_STORE_ERROR;
    }
    msg_fields_t f;
    row_fields(st, &f);
    const char *why = check_row(st, &f, 0, NULL);
    if (why) {
        sqlite3_reset(st);
        s->stats.damaged++;
        set_err(s, "the duplicate record of message id '%s' from %s is damaged (%s)",
                message_id, sender, why);
        CW_ERROR("store: DAMAGED %s", s->errmsg + 4);
        return CW_STORE_ERROR;
    }
    const uint8_t *blob = f.rcpts;
    size_t len = f.rcpts_len;
    /* One block: the array, then the names (the record holds them with
     * their NULs, so len bytes are enough for them). */
    size_t count = 0;
    for (size_t off = 0; off + RCPT_REC_FIXED < len; count++)
        off += RCPT_REC_FIXED + strnlen((const char *) blob + off + RCPT_REC_FIXED,
                                        len - off - RCPT_REC_FIXED) + 1;
    cw_store_rcpt_t *out = malloc(count * sizeof *out + len + 1);
    if (!out) {
        sqlite3_reset(st);
        set_err(s, "original: out of memory");
        return CW_ERR_NOMEM;
    }
    char *names = (char *) (out + count);
    size_t k = 0, at = 0;
    for (size_t off = 0; off + RCPT_REC_FIXED < len && k < count; k++) {
        const char *name = (const char *) blob + off + RCPT_REC_FIXED;
        size_t nl = strnlen(name, len - off - RCPT_REC_FIXED);
        memcpy(names + at, name, nl);
        names[at + nl] = 0;
        out[k].name = names + at;
        out[k].status = blob[off];
        out[k].seq = get_u64le(blob + off + 1);
        at += nl + 1;
        off += RCPT_REC_FIXED + nl + 1;
    }
    sqlite3_reset(st);
    *rcpts = out;
    *n = k;
    return CW_OK;
}

/* Appends one message inside the open transaction. CW_OK (m->status says
 * what happened) or CW_STORE_ERROR (errmsg set; the caller aborts).
 *
 * Order of work, chosen so the common case (a new message) costs one
 * INSERT into messages plus one per recipient, with no separate dedup
 * lookup: (1) decide every recipient against the cache without changing
 * it (seqs are tentative: next_seq of each queue); (2) INSERT the message
 * row: the unique index on (sender, message_id) rejects a repeat
 * (invariant 4), rows written earlier in this transaction included, and
 * then the stored record answers; (3) only after the INSERT succeeded
 * consume the seqs in the cache and INSERT the entries. */
static int append_one(cw_store_t *s, cw_store_msg_t *m)
{
    m->duplicate = 0;
    if (m->n_rcpts == 0 && m->sender && *m->sender && m->message_id && *m->message_id &&
        m->text) {
        /* No known recipient: only the repeat of a stored message answers
         * (the broker asks so that a retry naming nobody known is still
         * answered as the duplicate it is). */
        int dup = answer_duplicate(s, m, m->message_id);
        if (dup < 0)
            return CW_STORE_ERROR;
        if (dup == 0)
            m->status = CW_UNKNOWN_USER;
        return CW_OK;
    }
    if (!m->sender || !*m->sender || !m->rcpts || m->n_rcpts == 0 || !m->text ||
        (m->clock_len && !m->clock)) {
        m->status = CW_BAD_REQUEST;
        for (size_t i = 0; m->rcpts && i < m->n_rcpts; i++) {
            m->rcpts[i].status = CW_BAD_REQUEST;
            m->rcpts[i].seq = 0;
        }
        return CW_OK;
    }
    const char *mid = (m->message_id && *m->message_id) ? m->message_id : NULL;

    /* (1) Decide each recipient; the cache is not changed yet. */
    uint64_t serial = ++s->serial;
    size_t accepted = 0, full = 0, blob_len = 0;
    for (size_t i = 0; i < m->n_rcpts; i++) {
        cw_store_rcpt_t *r = &m->rcpts[i];
        r->seq = 0;
        user_t *u = user_find(s, r->name);
        blob_len += RCPT_REC_FIXED + (r->name ? strlen(r->name) : 0) + 1;
        if (!u) {
            r->status = CW_UNKNOWN_USER;
            continue;
        }
        if (u->mark == serial) {            /* named twice: one entry */
            r->status = m->rcpts[u->mark_idx].status;
            r->seq = m->rcpts[u->mark_idx].seq;
            continue;
        }
        u->mark = serial;
        u->mark_idx = i;
        if (s->opt.queue_quota && u->pending >= s->opt.queue_quota &&
            m->timestamp_us >= u->reclaim_us + RECLAIM_INTERVAL_US) {
            u->reclaim_us = m->timestamp_us;
            int64_t dropped = drop_expired(s, u, m->timestamp_us);
            if (dropped < 0)
                return CW_STORE_ERROR;
            if (dropped > 0)
                CW_INFO("store: %s: dropped %lld expired messages to make room", r->name,
                        (long long) dropped);
        }
        if (s->opt.queue_quota && u->pending >= s->opt.queue_quota) {
            r->status = CW_QUEUE_FULL;
            full++;
            continue;
        }
        r->status = CW_ACCEPTED;
        r->seq = u->next_seq;               /* tentative until (3) */
        accepted++;
    }
    if (accepted == 0) {
        /* Stored for nobody: no row, no dedup record, unless this is the
         * repeat of a message stored earlier, which answers. */
        int dup = mid ? answer_duplicate(s, m, mid) : 0;
        if (dup < 0)
            return CW_STORE_ERROR;
        if (dup == 0) {
            m->status = full ? CW_QUEUE_FULL : CW_UNKNOWN_USER;
            s->tx.queue_full += full;
        }
        return CW_OK;
    }

    /* The dedup record / "to" list. */
    if (grow((void **) &s->buf, &s->buf_cap, blob_len, 1) != 0) {
        set_err(s, "append: out of memory");
        return CW_STORE_ERROR;
    }
    size_t off = 0;
    for (size_t i = 0; i < m->n_rcpts; i++) {
        const char *name = m->rcpts[i].name ? m->rcpts[i].name : "";
        size_t nl = strlen(name);
        s->buf[off] = (uint8_t) m->rcpts[i].status;
        put_u64le(s->buf + off + 1, m->rcpts[i].seq);
        memcpy(s->buf + off + RCPT_REC_FIXED, name, nl + 1);
        off += RCPT_REC_FIXED + nl + 1;
    }

    /* (2) The message row; a unique-index violation means a repeat. */
    uint32_t ttl = m->ttl_s ? m->ttl_s : s->opt.default_ttl_s;
    uint64_t expires = ttl ? m->timestamp_us + (uint64_t) ttl * 1000000u : 0;
    sqlite3_stmt *st = stmt(s, S_MSG_INSERT);
    sqlite3_bind_text(st, 1, m->sender, -1, SQLITE_STATIC);
    if (mid)
        sqlite3_bind_text(st, 2, mid, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, (sqlite3_int64) m->timestamp_us);
    sqlite3_bind_int64(st, 4, (sqlite3_int64) expires);
    sqlite3_bind_int(st, 5, m->broadcast ? MSG_FLAG_BROADCAST : 0);
    sqlite3_bind_int64(st, 6, (sqlite3_int64) accepted);
    if (m->clock_len)
        sqlite3_bind_blob(st, 7, m->clock, (int) m->clock_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 7);
    sqlite3_bind_blob(st, 8, s->buf, (int) off, SQLITE_STATIC);
    sqlite3_bind_blob(st, 9, m->text_len ? (const void *) m->text : "", (int) m->text_len,
                      SQLITE_STATIC);
    msg_fields_t f = {
        .sender = m->sender, .sender_len = strlen(m->sender), .mid = mid,
        .mid_len = mid ? strlen(mid) : 0, .ts_us = m->timestamp_us, .expires_us = expires,
        .flags = m->broadcast ? MSG_FLAG_BROADCAST : 0, .clock = m->clock_len ? m->clock : NULL,
        .clock_len = m->clock_len, .rcpts = s->buf, .rcpts_len = off, .text = m->text,
        .text_len = m->text_len,
    };
    uint32_t mcrc = msg_crc(&f);
    sqlite3_bind_int64(st, 10, (sqlite3_int64) mcrc);
    int rc = sqlite3_step(st);      /* extended result codes are on */
    sqlite3_reset(st);
    if (rc == SQLITE_CONSTRAINT_UNIQUE && mid) {
        /* Only this statement was undone; the transaction goes on. */
        int dup = answer_duplicate(s, m, mid);
        if (dup < 0)
            return CW_STORE_ERROR;
        if (dup == 0) {
            set_err(s, "message id of %s violates uniqueness but is not found", m->sender);
            return CW_STORE_ERROR;
        }
        return CW_OK;
    }
    if (rc != SQLITE_DONE)
        return sql_err(s, "storing message");
    int64_t msg_id = sqlite3_last_insert_rowid(s->db);
    s->txn_wrote = 1;

    /* (3) Consume the seqs and queue the entries. A failure from here on
     * aborts the transaction and reloads the cache (invariant 7). */
    for (size_t i = 0; i < m->n_rcpts; i++) {
        cw_store_rcpt_t *r = &m->rcpts[i];
        if (r->status != CW_ACCEPTED)
            continue;
        user_t *u = user_find(s, r->name);
        if (u->mark_idx != i)
            continue;                       /* the repeat of a name */
        if (mark_dirty(s, u) != 0) {
            set_err(s, "append: out of memory");
            return CW_STORE_ERROR;
        }
        u->next_seq++;
        s->seq_total++;
        u->pending++;
        s->pending_total++;
        st = stmt(s, S_ENTRY_INSERT);
        sqlite3_bind_int64(st, 1, u->id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) r->seq);
        sqlite3_bind_int64(st, 3, msg_id);
        sqlite3_bind_int64(st, 4, (sqlite3_int64) entry_crc(r->name, r->seq, msg_id, mcrc));
        if (exec_stmt(st) != SQLITE_DONE)
            return sql_err(s, "queueing message");
    }
    s->tx.appended++;
    s->tx.entries += accepted;
    s->tx.queue_full += full;
    m->status = CW_OK;
    return CW_OK;
}

int cw_store_append_batch(cw_store_t *s, cw_store_msg_t *msgs, size_t n)
{
    if (!s || (!msgs && n))
        return CW_ERR_INVALID;
    if (n == 0)
        return CW_OK;
    int own;
    int rc = txn_enter(s, &own);
    for (size_t i = 0; rc == CW_OK && i < n; i++)
        rc = append_one(s, &msgs[i]);
    if (rc == CW_OK)
        rc = txn_leave(s, own, CW_OK);
    else if (s->txn == TXN_OPEN)
        rc = txn_leave(s, own, CW_STORE_ERROR);
    if (rc != CW_OK) {
        for (size_t i = 0; i < n; i++) {
            msgs[i].status = CW_STORE_ERROR;
            msgs[i].duplicate = 0;
            for (size_t j = 0; msgs[i].rcpts && j < msgs[i].n_rcpts; j++) {
                msgs[i].rcpts[j].status = CW_STORE_ERROR;
                msgs[i].rcpts[j].seq = 0;
            }
        }
        return CW_STORE_ERROR;
    }
    return CW_OK;
}

/* ------------------------------------------------------------------------ */
/* Ack                                                                       */

int cw_store_ack(cw_store_t *s, const char *user, uint64_t up_to_seq, uint64_t *pending)
{
    if (!s)
        return CW_ERR_INVALID;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    user_t *u = user_find(s, user);
    if (!u)
        return CW_UNKNOWN_USER;
    if (up_to_seq <= u->acked_seq) {
        if (pending)
            *pending = u->pending;
        return CW_OK;
    }
    if (up_to_seq >= u->next_seq) {
        set_err(s, "ack of seq %llu for %s: only %llu assigned",
                (unsigned long long) up_to_seq, user, (unsigned long long) (u->next_seq - 1));
        return CW_BAD_REQUEST;
    }
    int own;
    int rc = txn_enter(s, &own);
    if (rc != CW_OK)
        return rc;

    /* Pending entries now acknowledged. */
    sqlite3_stmt *st = stmt(s, S_COUNT_RANGE);
    sqlite3_bind_int64(st, 1, u->id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64) u->acked_seq + 1);
    sqlite3_bind_int64(st, 3, (sqlite3_int64) up_to_seq);
    int step = sqlite3_step(st);
    uint64_t count = step == SQLITE_ROW ? (uint64_t) sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (step != SQLITE_ROW)
        return txn_leave(s, own, sql_err(s, "counting acknowledged entries"));
    if (mark_dirty(s, u) != 0) {
        set_err(s, "ack: out of memory");
        return txn_leave(s, own, CW_STORE_ERROR);
    }
    s->acked_total += up_to_seq - u->acked_seq;
    u->acked_seq = up_to_seq;
    u->pending -= count;
    s->pending_total -= count;
    s->tx.acked += count;
    s->txn_wrote = 1;

    /* Retention: keep the newest `retention` acknowledged entries. */
    st = stmt(s, S_RETAIN_THRESHOLD);
    sqlite3_bind_int64(st, 1, u->id);
    sqlite3_bind_int64(st, 2, (sqlite3_int64) up_to_seq);
    sqlite3_bind_int64(st, 3, (sqlite3_int64) s->opt.retention);
    step = sqlite3_step(st);
    uint64_t threshold = step == SQLITE_ROW ? (uint64_t) sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (step != SQLITE_ROW && step != SQLITE_DONE)
        return txn_leave(s, own, sql_err(s, "applying retention"));
    if (threshold && delete_range(s, u, 0, threshold) < 0)
        return txn_leave(s, own, CW_STORE_ERROR);

    /* Dedup records past their window (bounded work per ack). */
    uint64_t now = cw_now_us();
    uint64_t window = (uint64_t) s->opt.dedup_window_s * 1000000u;
    st = stmt(s, S_PRUNE);
    sqlite3_bind_int64(st, 1, (sqlite3_int64) (now > window ? now - window : 0));
    if (exec_stmt(st) != SQLITE_DONE)
        return txn_leave(s, own, sql_err(s, "pruning dedup records"));

    uint64_t left = u->pending;
    rc = txn_leave(s, own, CW_OK);
    if (rc == CW_OK && pending)
        *pending = left;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Read / history                                                            */

void cw_store_entries_free(cw_store_entry_t **entries, size_t n)
{
    if (!entries || !*entries)
        return;
    for (size_t i = 0; i < n; i++)
        free((*entries)[i].mem_);
    free(*entries);
    *entries = NULL;
}

/* Builds an entry of user's queue from a row of S_READ / S_HISTORY: one
 * allocation holding the "to" pointers, the clock and every string. A row
 * that fails check_row becomes a CW_DAMAGED entry: seq, acked and nothing
 * else. 0 or -1 (out of memory). */
static int entry_from_row(cw_store_t *s, sqlite3_stmt *st, cw_store_entry_t *e, const char *user,
                          uint64_t acked_seq, uint64_t now_us, int drop_text)
{
    memset(e, 0, sizeof *e);
    e->seq = (uint64_t) sqlite3_column_int64(st, COL_SEQ);
    e->acked = e->seq <= acked_seq;
    msg_fields_t f;
    row_fields(st, &f);
    const char *why = check_row(st, &f, 1, user);
    if (why) {
        /* Served as "a message was lost" (Deliver.damaged), never as data. */
        s->stats.damaged++;
        CW_ERROR("store: DAMAGED entry: user %s seq %llu: %s; it is delivered as a lost "
                 "message (see OPERATIONS.md, \"Damaged store files\")",
                 user, (unsigned long long) e->seq, why);
        e->status = CW_DAMAGED;
        memset(&f, 0, sizeof f);
        f.sender = f.mid = "";
    } else {
        e->timestamp_us = f.ts_us;
        e->expires_us = f.expires_us;
        e->broadcast = (f.flags & MSG_FLAG_BROADCAST) != 0;
        e->status =
            (!e->acked && e->expires_us && e->expires_us <= now_us) ? CW_EXPIRED : CW_OK;
    }

    const char *sender = f.sender;
    const char *mid = f.mid;
    size_t sender_len = f.sender_len;
    size_t mid_len = f.mid_len;
    const uint8_t *clock = f.clock;
    size_t clock_len = f.clock_len;
    const uint8_t *rcpts = f.rcpts;
    size_t rcpts_len = f.rcpts_len;
    const char *text = f.text;
    size_t text_len = f.text_len;
    if (e->status == CW_EXPIRED && drop_text)
        text_len = 0;

    /* Names of the "to" list (none for a broadcast). */
    size_t n_to = 0, names_len = 0;
    if (!e->broadcast)
        for (size_t off = 0; off + RCPT_REC_FIXED < rcpts_len;) {
            size_t nl = strnlen((const char *) rcpts + off + RCPT_REC_FIXED,
                                rcpts_len - off - RCPT_REC_FIXED);
            n_to++;
            names_len += nl + 1;
            off += RCPT_REC_FIXED + nl + 1;
        }
    size_t size = n_to * sizeof(char *) + clock_len + sender_len + 1 + mid_len + 1 +
                  text_len + 1 + names_len;
    char *mem = malloc(size);
    if (!mem)
        return -1;
    e->mem_ = mem;
    const char **to = (const char **) mem;
    char *p = mem + n_to * sizeof(char *);
    if (clock_len) {
        memcpy(p, clock, clock_len);
        e->clock = (const uint8_t *) p;
        e->clock_len = clock_len;
        p += clock_len;
    }
    memcpy(p, sender ? sender : "", sender_len);
    p[sender_len] = '\0';
    e->sender = p;
    p += sender_len + 1;
    memcpy(p, mid ? mid : "", mid_len);
    p[mid_len] = '\0';
    e->message_id = p;
    p += mid_len + 1;
    if (text_len)
        memcpy(p, text, text_len);
    p[text_len] = '\0';
    e->text = p;
    e->text_len = text_len;
    p += text_len + 1;
    size_t k = 0;
    if (!e->broadcast)
        for (size_t off = 0; off + RCPT_REC_FIXED < rcpts_len; k++) {
            const char *name = (const char *) rcpts + off + RCPT_REC_FIXED;
            size_t nl = strnlen(name, rcpts_len - off - RCPT_REC_FIXED);
            memcpy(p, name, nl);
            p[nl] = '\0';
            to[k] = p;
            p += nl + 1;
            off += RCPT_REC_FIXED + nl + 1;
        }
    e->to = n_to ? to : NULL;
    e->n_to = n_to;
    return 0;
}

/* Runs S_READ or S_HISTORY for u into a fresh array. CW_OK, CW_ERR_NOMEM or
 * CW_STORE_ERROR. */
static int query_entries(cw_store_t *s, int which, const char *user, user_t *u, uint64_t from,
                         size_t max, uint64_t now_us, cw_store_entry_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (max == 0)
        return CW_OK;
    sqlite3_stmt *st = stmt(s, which);
    sqlite3_bind_int64(st, 1, u->id);
    if (which == S_READ) {
        sqlite3_bind_int64(st, 2, (sqlite3_int64) from);
        sqlite3_bind_int64(st, 3, (sqlite3_int64) (max > INT64_MAX ? INT64_MAX : max));
    } else {
        sqlite3_bind_int64(st, 2, (sqlite3_int64) (max > INT64_MAX ? INT64_MAX : max));
    }
    cw_store_entry_t *arr = NULL;
    size_t cap = 0, count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (grow((void **) &arr, &cap, count + 1, sizeof *arr) != 0 ||
            entry_from_row(s, st, &arr[count], user, u->acked_seq, now_us,
                           which == S_READ) != 0) {
            sqlite3_reset(st);
            cw_store_entries_free(&arr, count);
            return CW_ERR_NOMEM;
        }
        count++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        cw_store_entries_free(&arr, count);
        return sql_err(s, "reading queue");
    }
    *out = arr;
    *n = count;
    return CW_OK;
}

/* What every reader of a queue checks first: the arguments, the store's
 * and the group's state, the user. Empties *entries and *n; CW_OK with *u set,
 * else the status to return. */
static int begin_read(cw_store_t *s, const char *user, cw_store_entry_t **entries, size_t *n,
                      user_t **u)
{
    if (!s || !entries || !n)
        return CW_ERR_INVALID;
    *entries = NULL;
    *n = 0;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    if (s->txn == TXN_ABORTED) {
        set_err(s, "the group already failed; roll it back");
        return CW_STORE_ERROR;
    }
    *u = user_find(s, user);
    return *u ? CW_OK : CW_UNKNOWN_USER;
}

int cw_store_read(cw_store_t *s, const char *user, uint64_t from_seq, size_t max,
                  uint64_t now_us, cw_store_entry_t **entries, size_t *n)
{
    user_t *u;
    int brc = begin_read(s, user, entries, n, &u);
    if (brc != CW_OK)
        return brc;
    uint64_t from = from_seq > u->acked_seq ? from_seq : u->acked_seq + 1;
    cw_store_entry_t *arr;
    size_t count;
    int rc = query_entries(s, S_READ, user, u, from, max, now_us, &arr, &count);
    if (rc != CW_OK)
        return rc == CW_STORE_ERROR && s->txn == TXN_OPEN ? txn_leave(s, 0, rc) : rc;

    /* Expired entries are reported (above) once, then deleted. */
    size_t expired = 0;
    for (size_t i = 0; i < count; i++)
        expired += arr[i].status == CW_EXPIRED;
    if (expired) {
        int own;
        rc = txn_enter(s, &own);
        for (size_t i = 0; rc == CW_OK && i < count; i++) {
            if (arr[i].status != CW_EXPIRED)
                continue;
            if (delete_range(s, u, arr[i].seq, arr[i].seq) < 0) {
                rc = CW_STORE_ERROR;
                break;
            }
            u->pending--;
            s->pending_total--;
            s->tx.expired++;
        }
        if (rc == CW_OK || s->txn == TXN_OPEN)
            rc = txn_leave(s, own, rc);
        if (rc != CW_OK) {
            cw_store_entries_free(&arr, count);
            return rc;
        }
    }
    *entries = arr;
    *n = count;
    return CW_OK;
}

int cw_store_history(cw_store_t *s, const char *user, size_t last_n, uint64_t now_us,
                     cw_store_entry_t **entries, size_t *n)
{
    user_t *u;
    int brc = begin_read(s, user, entries, n, &u);
    if (brc != CW_OK)
        return brc;
    cw_store_entry_t *arr;
    size_t count;
    int rc = query_entries(s, S_HISTORY, user, u, 0, last_n, now_us, &arr, &count);
    if (rc != CW_OK)
        return rc;
    for (size_t i = 0; i < count / 2; i++) {   /* newest first -> oldest first */
        cw_store_entry_t t = arr[i];
        arr[i] = arr[count - 1 - i];
        arr[count - 1 - i] = t;
    }
    *entries = arr;
    *n = count;
    return CW_OK;
}

int cw_store_peek(cw_store_t *s, const char *user, uint64_t from_seq, uint64_t up_to_seq,
                  size_t max, uint64_t now_us, cw_store_entry_t **entries, size_t *n)
{
    user_t *u;
    int brc = begin_read(s, user, entries, n, &u);
    if (brc != CW_OK)
        return brc;
    uint64_t from = from_seq > u->acked_seq ? from_seq : u->acked_seq + 1;
    if (from > up_to_seq)
        return CW_OK;
    cw_store_entry_t *arr;
    size_t count;
    int rc = query_entries(s, S_READ, user, u, from, max, now_us, &arr, &count);
    if (rc != CW_OK)
        return rc;
    /* Read-only: nothing beyond up_to_seq, and expired entries stay for
     * cw_store_read to report and delete. */
    size_t keep = 0;
    while (keep < count && arr[keep].seq <= up_to_seq)
        keep++;
    for (size_t i = keep; i < count; i++)
        free(arr[i].mem_);
    if (keep == 0) {
        free(arr);
        arr = NULL;
    }
    *entries = arr;
    *n = keep;
    return CW_OK;
}

/* ------------------------------------------------------------------------ */
/* Verify                                                                    */

static int verify_count(cw_store_t *s, const char *sql, const char *what)
{
    char buf[32];
    int rc = pragma_text(s->db, sql, buf, sizeof buf);
    if (rc != SQLITE_OK)
        return sql_err(s, what);
    if (atoll(buf) != 0) {
        set_err(s, "invariant broken: %s (%s rows)", what, buf);
        CW_ERROR("store: %s", s->errmsg);
        return CW_INTERNAL;
    }
    return CW_OK;
}

int cw_store_verify(cw_store_t *s)
{
    if (!s)
        return CW_ERR_INVALID;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    static const struct {
        const char *sql;
        const char *what;
    } checks[] = {
        {"SELECT count(*) FROM entries e JOIN users u ON u.id = e.user_id "
         "WHERE e.seq >= u.next_seq OR e.seq <= 0",
         "1: entry seq at or above the user's next_seq"},
        {"SELECT count(*) FROM users WHERE acked_seq >= next_seq OR next_seq < 1",
         "2: acked_seq not below next_seq"},
        {"SELECT count(*) FROM (SELECT m.id, m.live, count(e.msg) AS c FROM messages m "
         "LEFT JOIN entries e ON e.msg = m.id GROUP BY m.id) WHERE live != c",
         "3: messages.live differs from the entries pointing at the row"},
        {"SELECT count(*) FROM messages WHERE live = 0 AND message_id IS NULL",
         "3: unreferenced message without a message id"},
        {"SELECT count(*) FROM (SELECT sender, message_id FROM messages "
         "WHERE message_id IS NOT NULL GROUP BY sender, message_id HAVING count(*) > 1)",
         "4: (sender, message_id) stored twice"},
        {"SELECT count(*) FROM entries WHERE msg NOT IN (SELECT id FROM messages) "
         "OR user_id NOT IN (SELECT id FROM users)",
         "5: entry pointing at a missing message or user"},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        int rc = verify_count(s, checks[i].sql, checks[i].what);
        if (rc != CW_OK)
            return rc;
    }
    /* 2 and 7: the cache against the database. */
    uint64_t total = 0;
    for (user_t *u = zhashx_first(s->users); u; u = zhashx_next(s->users)) {
        sqlite3_stmt *st = stmt(s, S_COUNT_RANGE);
        sqlite3_bind_int64(st, 1, u->id);
        sqlite3_bind_int64(st, 2, (sqlite3_int64) u->acked_seq + 1);
        sqlite3_bind_int64(st, 3, INT64_MAX);
        int rc = sqlite3_step(st);
        uint64_t count = rc == SQLITE_ROW ? (uint64_t) sqlite3_column_int64(st, 0) : 0;
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            return sql_err(s, "verify: counting pending");
        if (count != u->pending) {
            set_err(s, "invariant broken: 2: user %s has %llu pending, cache says %llu",
                    (const char *) zhashx_cursor(s->users), (unsigned long long) count,
                    (unsigned long long) u->pending);
            return CW_INTERNAL;
        }
        total += count;
        if (!u->dirty) {
            char sql[160], buf[64];
            snprintf(sql, sizeof sql,
                     "SELECT next_seq || ' ' || acked_seq FROM users WHERE id = %lld",
                     (long long) u->id);
            if (pragma_text(s->db, sql, buf, sizeof buf) != SQLITE_OK)
                return sql_err(s, "verify: reading user");
            char want[64];
            snprintf(want, sizeof want, "%llu %llu", (unsigned long long) u->next_seq,
                     (unsigned long long) u->acked_seq);
            if (strcmp(buf, want) != 0) {
                set_err(s, "invariant broken: 7: user %s is '%s' on disk, '%s' in the cache",
                        (const char *) zhashx_cursor(s->users), buf, want);
                return CW_INTERNAL;
            }
        }
    }
    if (total != s->pending_total) {
        set_err(s, "invariant broken: 2: pending total %llu, cache says %llu",
                (unsigned long long) total, (unsigned long long) s->pending_total);
        return CW_INTERNAL;
    }
    return CW_OK;
}

/* ------------------------------------------------------------------------
 * Resume clocks (store.h, PROTOCOL.md 11.4). Their own table, apart from
 * the message schema: created on the first write (CREATE ... IF NOT
 * EXISTS, inside the caller's transaction), so stores written before it
 * open unchanged. The upsert is prepared then and kept (s->clock_save).
 */

#define CLOCKS_TABLE_SQL \
    "CREATE TABLE IF NOT EXISTS clocks (name TEXT PRIMARY KEY, own INTEGER NOT NULL, " \
    "clock BLOB NOT NULL)"

int cw_store_save_clock(cw_store_t *s, const char *name, uint64_t own, const uint8_t *clock,
                        size_t clock_len)
{
    if (!s || (!clock && clock_len) || clock_len > INT_MAX)
        return CW_ERR_INVALID;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    if (!name_ok(name))
        return CW_BAD_NAME;
    int own_txn;
    int rc = txn_enter(s, &own_txn);
    if (rc != CW_OK)
        return rc;
    if (!s->clock_save &&
        (sqlite3_exec(s->db, CLOCKS_TABLE_SQL, NULL, NULL, NULL) != SQLITE_OK ||
         sqlite3_prepare_v3(s->db, "INSERT OR REPLACE INTO clocks (name, own, clock) VALUES (?, ?, ?)",
                            -1, SQLITE_PREPARE_PERSISTENT, &s->clock_save, NULL) != SQLITE_OK)) {
        sqlite3_finalize(s->clock_save);
        s->clock_save = NULL;
        return txn_leave(s, own_txn, sql_err(s, "creating the clocks table"));
    }
    sqlite3_stmt *st = s->clock_save;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, (sqlite3_int64) own);
    sqlite3_bind_blob(st, 3, clock_len ? (const void *) clock : "", (int) clock_len, SQLITE_STATIC);
    int step = exec_stmt(st);
    sqlite3_clear_bindings(st);
    if (step != SQLITE_DONE) {
        /* E.g. the table's creation was rolled back with its group: create
         * it again next time. */
        sqlite3_finalize(s->clock_save);
        s->clock_save = NULL;
        return txn_leave(s, own_txn, sql_err(s, "saving a clock"));
    }
    s->txn_wrote = 1;
    return txn_leave(s, own_txn, CW_OK);
}

int cw_store_list_clocks(cw_store_t *s, cw_store_clock_t **out, size_t *n)
{
    if (!s || !out || !n)
        return CW_ERR_INVALID;
    *out = NULL;
    *n = 0;
    if (s->state == STORE_FAILED)
        return failed_refusal(s);
    char buf[16];
    if (pragma_text(s->db, "SELECT count(*) FROM sqlite_master WHERE name = 'clocks'", buf,
                    sizeof buf) != SQLITE_OK)
        return sql_err(s, "listing clocks");
    if (atoi(buf) == 0)
        return CW_OK; /* a store that never saved a clock */
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT name, own, clock FROM clocks ORDER BY name", -1, &st,
                                NULL);
    if (rc != SQLITE_OK)
        return sql_err(s, "listing clocks");
    cw_store_clock_t *arr = NULL;
    size_t cap = 0, i = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (i == cap) {
            size_t ncap = cap ? 2 * cap : 16;
            cw_store_clock_t *na = realloc(arr, ncap * sizeof *na);
            if (!na)
                break;
            arr = na;
            cap = ncap;
        }
        const char *name = (const char *) sqlite3_column_text(st, 0);
        const void *blob = sqlite3_column_blob(st, 2);
        size_t len = (size_t) sqlite3_column_bytes(st, 2);
        arr[i].name = strdup(name ? name : "");
        arr[i].own = (uint64_t) sqlite3_column_int64(st, 1);
        arr[i].clock = malloc(len ? len : 1);
        arr[i].clock_len = len;
        if (!arr[i].name || !arr[i].clock) {
            free(arr[i].name);
            free(arr[i].clock);
            break;
        }
        if (len)
            memcpy(arr[i].clock, blob, len);
        i++;
    }
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) {
        cw_store_clocks_free(&arr, i);
        return CW_ERR_NOMEM;
    }
    if (rc != SQLITE_DONE) {
        cw_store_clocks_free(&arr, i);
        return sql_err(s, "listing clocks");
    }
    *out = arr;
    *n = i;
    return CW_OK;
}

void cw_store_clocks_free(cw_store_clock_t **clocks, size_t n)
{
    if (!clocks || !*clocks)
        return;
    for (size_t i = 0; i < n; i++) {
        free((*clocks)[i].name);
        free((*clocks)[i].clock);
    }
    free(*clocks);
    *clocks = NULL;
}
