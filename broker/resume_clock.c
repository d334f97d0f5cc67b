/*  resume_clock: each user's resume clock (PROTOCOL.md 11.4).
 *
 *  Router thread only. A layer of its own (broker_internal.h): called by
 *  broker.c, calls durable.c (cwd_save_clock).
 *
 *  Router thread only. A client attaches its vector clock to every frame
 *  of its session (Send, and also Ack, Fetch, History, Logout, Heartbeat);
 *  the broker keeps, per user, the clock with the highest own entry it has
 *  received from that user's sessions, and hands it back in LoginInfo.clock
 *  at every login, so that a new client process (on any machine) resumes
 *  its user's clock above every event the broker has seen from earlier
 *  ones: two runs never stamp the same clock.
 *
 *  The broker never rewrites a clock: what it keeps and hands back is one
 *  clock exactly as a session sent it (same entries, same order), never a
 *  merge or an edit. Memory: one clock per known user, at most one frame's
 *  worth (the clock must fit a frame).
 *
 *  Durability: with a store, every newer clock is written through the store
 *  actor (cwd_save_clock): the clock of a durable Send before the append
 *  (so it commits no later than the message is ACCEPTED), other clocks at
 *  most one write in flight per user (coalesced); a clean shutdown writes
 *  the rest. A crash can lose the clocks of the live frames of its last
 *  store group. Without a store the clocks live in memory and a restart
 *  forgets them (docs/OPERATIONS.md).
 */
#include "resume_clock.h"

#include "cw_log.h"
#include "durable.h"

#include <stdlib.h>
#include <string.h>

void cwr_note_clock(cw_broker_t *b, cwb_user_t *u, Causeway__V1__ClockEntry *const *clock,
                    size_t n, bool durable_send)
{
    uint64_t own = 0;
    for (size_t i = 0; i < n; i++) {
        int c = strcmp(clock[i]->node, u->name);
        if (c == 0)
            own = clock[i]->counter;
        if (c >= 0)
            break; /* sorted (validated): no later entry is ours */
    }
    if (own <= u->clock_own)
        return;
    Causeway__V1__Deliver holder;
    causeway__v1__deliver__init(&holder);
    holder.n_clock = n;
    holder.clock = (Causeway__V1__ClockEntry **) clock;
    size_t len = causeway__v1__deliver__get_packed_size(&holder);
    uint8_t *buf = len <= u->clock_len ? u->clock : realloc(u->clock, len);
    if (!buf) {
        CW_WARN("out of memory keeping the clock of %s", u->name);
        return;
    }
    causeway__v1__deliver__pack(&holder, buf);
    u->clock = buf;
    u->clock_len = len;
    u->clock_own = own;
    cwd_save_clock(b, u, durable_send);
}

Causeway__V1__Deliver *cwr_resume_clock(const cwb_user_t *u)
{
    if (!u || !u->clock_len)
        return NULL;
    Causeway__V1__Deliver *d = causeway__v1__deliver__unpack(NULL, u->clock_len, u->clock);
    if (!d)
        CW_WARN("the kept clock of %s is unreadable; login without it", u->name);
    return d;
}
