/*  receipts.c: read receipts made when an Ack commits (see receipts.h).
 *  Store actor thread only. Invariant: a receipt is appended only for an
 *  entry the Ack being applied acknowledges for the first time (seq above
 *  the user's acked seq, at most up_to_seq), so an Ack repeated or
 *  overlapping an earlier one makes none twice (the dedup id guards
 *  besides).
 */
#include "receipts.h"

#include "causeway.pb-c.h"
#include "cw_log.h"
#include "cw_status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The dedup id of the receipt for sender's message_id. */
static void receipt_id(char *buf, size_t size, const char *sender, const char *message_id)
{
    snprintf(buf, size, "\x01receipt:%s:%s", sender, message_id);
}

/* Appends the receipt for entry e of reader's queue. CW_OK (also when the
 * sender's queue could not take it: logged), CW_STORE_ERROR. *made is 1 if
 * one was stored. */
static int append_one(cw_store_t *s, const char *reader, const cw_store_entry_t *e,
                      uint64_t now_us, int *made, uint64_t *receipt_seq)
{
    *made = 0;
    *receipt_seq = 0;
    Causeway__V1__Receipt r = CAUSEWAY__V1__RECEIPT__INIT;
    r.message_id = (char *) e->message_id;
    r.reader = (char *) reader;
    r.read_us = now_us;
    r.message_seq = e->seq;
    Causeway__V1__Deliver holder = CAUSEWAY__V1__DELIVER__INIT;
    holder.receipt = &r;
    size_t len = causeway__v1__deliver__get_packed_size(&holder);
    uint8_t *blob = malloc(len ? len : 1);
    char id[512];
    if (!blob)
        return CW_STORE_ERROR;
    causeway__v1__deliver__pack(&holder, blob);
    receipt_id(id, sizeof id, e->sender, e->message_id);
    cw_store_rcpt_t rcpt = {.name = e->sender};
    cw_store_msg_t m = {.sender = reader, .message_id = id, .text = "", .text_len = 0,
                        .clock = blob, .clock_len = len, .timestamp_us = now_us,
                        .rcpts = &rcpt, .n_rcpts = 1};
    int rc = cw_store_append_batch(s, &m, 1);
    free(blob);
    if (rc != CW_OK)
        return CW_STORE_ERROR;
    if (m.status == CW_STORE_ERROR)
        return CW_STORE_ERROR;
    if (m.status == CW_OK && !m.duplicate && rcpt.status == CW_ACCEPTED) {
        *made = 1;
        *receipt_seq = rcpt.seq;
        CW_DEBUG("receipt: %s read %s's %s (seq %llu in %s's queue)", reader, e->sender,
                 e->message_id, (unsigned long long) rcpt.seq, e->sender);
    } else if (!m.duplicate) {
        CW_WARN("receipt for %s's message %s read by %s dropped: %s", e->sender, e->message_id,
                reader, cw_status_name(rcpt.status ? rcpt.status : m.status));
    }
    return CW_OK;
}

int cw_receipts_wanted(const cw_store_entry_t *e)
{
    if (e->status != CW_OK || !e->clock || !e->clock_len || !e->message_id ||
        !*e->message_id || !e->sender || !*e->sender)
        return 0;
    Causeway__V1__Deliver *d = causeway__v1__deliver__unpack(NULL, e->clock_len, e->clock);
    if (!d)
        return 0;
    int want = d->receipt_requested && !d->receipt;
    causeway__v1__deliver__free_unpacked(d, NULL);
    return want;
}

int cw_receipts_ack(cw_store_t *s, const char *user, uint64_t up_to_seq, uint64_t now_us,
                    uint64_t *pending, cw_store_entry_t **made, size_t *n_made)
{
    *made = NULL;
    *n_made = 0;
    /* 1. What this Ack acknowledges for the first time and asks for a
     *    receipt (read before the Ack: afterwards it is acknowledged). */
    cw_store_entry_t *want = NULL;
    size_t n_want = 0, cap = 0;
    uint64_t from = 0;   /* 0: from the first unacknowledged entry */
    int rc = CW_OK;
    for (;;) {
        cw_store_entry_t *e = NULL;
        size_t n = 0;
        rc = cw_store_peek(s, user, from, up_to_seq, CW_RECEIPTS_BATCH, now_us, &e, &n);
        if (rc != CW_OK || n == 0)
            break;
        for (size_t i = 0; i < n; i++) {
            int keep = cw_receipts_wanted(&e[i]);
            if (keep && n_want == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                cw_store_entry_t *grown = realloc(want, ncap * sizeof *grown);
                if (grown) {
                    want = grown;
                    cap = ncap;
                } else {
                    keep = 0;
                    CW_WARN("receipt for seq %llu of %s dropped: out of memory",
                            (unsigned long long) e[i].seq, user);
                }
            }
            if (keep)
                want[n_want++] = e[i];   /* moved: its memory goes with it */
            else
                free(e[i].mem_);
        }
        from = e[n - 1].seq + 1;
        free(e);
        if (n < CW_RECEIPTS_BATCH || from > up_to_seq)
            break;
    }
    if (rc == CW_STORE_ERROR) {
        cw_store_entries_free(&want, n_want);
        return rc;
    }
    /* 2. The Ack itself; its refusals (unknown user, seq beyond the
     *    queue) make no receipt. */
    rc = cw_store_ack(s, user, up_to_seq, pending);
    if (rc != CW_OK) {
        cw_store_entries_free(&want, n_want);
        return rc;
    }
    /* 3. The receipts, in the same group as the Ack. */
    size_t n_made_now = 0;
    for (size_t i = 0; i < n_want; i++) {
        int one = 0;
        uint64_t rseq = 0;
        if (append_one(s, user, &want[i], now_us, &one, &rseq) != CW_OK) {
            /* [0, n_made_now) and [i, n_want) still own their memory. */
            for (size_t k = 0; k < n_made_now; k++)
                free(want[k].mem_);
            for (size_t k = i; k < n_want; k++)
                free(want[k].mem_);
            free(want);
            return CW_STORE_ERROR;
        }
        if (one) {
            /* Reported as receipts.h says: the receipt's seq in the
             * sender's queue, the read time, the message's seq. */
            want[i].expires_us = want[i].seq;
            want[i].seq = rseq;
            want[i].timestamp_us = now_us;
            want[n_made_now++] = want[i];
        } else {
            free(want[i].mem_);
        }
    }
    if (n_made_now == 0) {
        free(want);
        want = NULL;
    }
    *made = want;
    *n_made = n_made_now;
    return CW_OK;
}
