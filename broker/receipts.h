/*  receipts: read receipts (PROTOCOL.md 13.12), the store side.
 *
 *  A durable message whose sender asked for a receipt carries
 *  Deliver.receipt_requested in its stored clock holder (the serialized
 *  Deliver the broker stores next to each message, durable.c). When the
 *  recipient acknowledges it, cw_receipts_on_ack -- run by the store actor
 *  inside the same group (transaction, fsync) as the Ack -- appends one
 *  receipt entry to the sender's queue: sender = the reader, text empty,
 *  clock holder = a Deliver whose `receipt` says which message, who and
 *  when. So a receipt is made exactly when the Ack commits (both or
 *  neither), waits for an offline sender like any stored message, survives
 *  broker restarts, and is pushed, fetched, acknowledged and expired like
 *  one. Its dedup id (reader, "\x01receipt:" SENDER ":" MESSAGE_ID) makes a
 *  second receipt for the same message impossible.
 *
 *  Store actor thread only (it calls store.h).
 */
#ifndef CW_RECEIPTS_H
#define CW_RECEIPTS_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Entries looked at per Ack, per batch (the Ack's whole range is covered). */
#define CW_RECEIPTS_BATCH 256

/* user's Ack up to up_to_seq (cw_store_ack, inside the open group) and the
 * receipts it makes: for every entry it acknowledges for the first time
 * that asked for one, a receipt in the sender's queue. *made (caller frees
 * with cw_store_entries_free) receives the acknowledged entries that made
 * one: `sender` is whose queue got it, `message_id` the message's, and,
 * changed from what the store holds, `seq` is the receipt's seq in the
 * sender's queue, `timestamp_us` the read time (now_us) and `expires_us`
 * the message's seq in the reader's queue. A receipt the sender's queue
 * cannot take (QUEUE_FULL, unknown sender) is dropped and logged. Returns
 * what cw_store_ack returns (a refused Ack makes no receipt), or
 * CW_STORE_ERROR if storing a receipt failed (the group fails: neither the
 * Ack nor any receipt is stored). */
int cw_receipts_ack(cw_store_t *s, const char *user, uint64_t up_to_seq, uint64_t now_us,
                    uint64_t *pending, cw_store_entry_t **made, size_t *n_made);

/* Whether entry e asks for a read receipt (a message whose clock blob says
 * receipt_requested, not a receipt itself); any backend's. Can't fail: an
 * entry that does not decode asks for none. */
int cw_receipts_wanted(const cw_store_entry_t *e);

#endif
