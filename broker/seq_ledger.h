/*  seq_ledger: a small file beside the database that remembers, outside
 *  SQLite's WAL, how far the store has come (issue 11 item 8).
 *
 *  Why. Damage to causeway.db-wal (a truncated or bit-flipped file, a
 *  damaged header) makes SQLite's recovery stop at the last commit before
 *  the damage, silently: the commits after it are gone, and the store would
 *  hand out their seqs again. The ledger lets the store notice that
 *  committed data is missing, say what (which users, which seqs), and make
 *  sure a seq once ACCEPTED is never handed out again.
 *
 *  What it holds (data_dir/causeway.seqs, little-endian, every record with
 *  its own CRC-32 so a torn or damaged record is recognised and ignored):
 *    - the reservation (two alternating 32-byte slots at offsets 0 and 32):
 *      `reserved`, an upper bound on the store's seq total (the sum over
 *      users of next_seq - 1), and `floor`, the seq after which a newly
 *      created user starts. Written and fdatasync()ed BEFORE the commit
 *      that takes the seq total past the previous `reserved` (so before
 *      any ACCEPTED reply for those seqs), in blocks of
 *      CW_LEDGER_RESERVE_BLOCK seqs: one extra fsync per that many queue
 *      entries, not per commit. Alternating slots: a write torn by a crash
 *      leaves the previous, still valid, reservation in the other slot.
 *    - the progress mark (two alternating slots at 64 and 96): the store's
 *      progress (seq total + acknowledged total + number of users, which
 *      only grows) after the last commit. Written after each commit, not
 *      synced: the kernel has it even if the broker is killed; after an OS
 *      crash it may be older than the database (never newer: it is written
 *      after the commit's fsync), so it never reports a loss that did not
 *      happen.
 *    - one 96-byte record per user at 4096 + (user id - 1) * 96: name,
 *      last seq assigned, last seq acknowledged. Written after each commit
 *      that changed them, not synced (same argument): what the report of a
 *      loss names.
 *
 *  Guarantee. Every seq ever ACCEPTED is <= reserved - (seq total of the
 *  database) + the user's next_seq in the database, whatever the WAL lost
 *  (the lost commits assigned at most reserved - seq total seqs, to all
 *  users together). Recovery moves every user's next seq past that bound.
 *
 *  Thread: the store's. Not thread-safe.
 */
#ifndef CW_SEQ_LEDGER_H
#define CW_SEQ_LEDGER_H

#include <stddef.h>
#include <stdint.h>

#define CW_LEDGER_FILE "causeway.seqs"
#define CW_LEDGER_RESERVE_BLOCK 65536u   /* seqs reserved per fsync of the ledger */

typedef struct cw_ledger cw_ledger_t;

/* A per-user record as read at open. */
typedef struct {
    char name[65];
    uint64_t last_seq;
    uint64_t acked_seq;
} cw_ledger_user_t;

/* Opens (creating if needed) path. *existed is 1 if the file was there.
 * A new file is written beside it and renamed into place with a first
 * (empty) reservation, so that a file at path always holds one.
 * A file that exists but holds no valid reservation is damaged: returns
 * CW_STORE_ERROR with err saying so (nothing is changed). CW_OK, CW_ERR_IO
 * (err), CW_ERR_NOMEM. */
int cw_ledger_open(const char *path, cw_ledger_t **out, int *existed, char *err,
                   size_t err_size);
void cw_ledger_close(cw_ledger_t **p);

/* What was read at open (0 for a new file). progress_valid is 0 when no
 * progress slot could be read. */
uint64_t cw_ledger_reserved(const cw_ledger_t *l);
uint64_t cw_ledger_floor(const cw_ledger_t *l);
uint64_t cw_ledger_progress(const cw_ledger_t *l, int *progress_valid);
/* Per-user records read at open: ids 1..cw_ledger_max_id. Returns 1 and
 * fills *out if a valid record is at id, else 0. */
int64_t cw_ledger_max_id(const cw_ledger_t *l);
int cw_ledger_user(const cw_ledger_t *l, int64_t id, cw_ledger_user_t *out);
/* Records that failed their CRC at open (ignored). */
size_t cw_ledger_bad_records(const cw_ledger_t *l);

/* Writes a new reservation and fdatasync()s it. CW_OK or CW_ERR_IO. */
int cw_ledger_reserve(cw_ledger_t *l, uint64_t reserved, uint64_t floor);
/* Notes progress / a user's state after a commit (not synced). Errors are
 * logged once and otherwise ignored: these only sharpen the report. */
void cw_ledger_note_progress(cw_ledger_t *l, uint64_t progress);
void cw_ledger_note_user(cw_ledger_t *l, int64_t id, const char *name, uint64_t last_seq,
                         uint64_t acked_seq);
/* Drops the per-user records past max_id (after a recovery rewrote them). */
void cw_ledger_truncate_users(cw_ledger_t *l, int64_t max_id);

#endif
