/*  resume_clock: each user's resume clock (PROTOCOL.md 11.4); see
 *  resume_clock.c. Router thread. Below broker.c, above durable.c.
 */
#ifndef CW_RESUME_CLOCK_H
#define CW_RESUME_CLOCK_H

#include "broker_internal.h"

/* A frame of u's session carried this (validated) clock: keep it as u's
 * resume clock if its own entry is the highest yet, and have the store
 * write it (a durable Send: at once). */
void cwr_note_clock(cw_broker_t *b, cwb_user_t *u, Causeway__V1__ClockEntry *const *clock,
                    size_t n, bool durable_send);

/* u's resume clock for LoginInfo.clock, or NULL if none is known (or it
 * cannot be decoded); free with causeway__v1__deliver__free_unpacked. */
Causeway__V1__Deliver *cwr_resume_clock(const cwb_user_t *u);

#endif
