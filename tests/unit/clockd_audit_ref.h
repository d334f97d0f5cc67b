/*  clockd_audit_ref: the old (quadratic) audit, the reference of the
 *  differential test; see clockd_audit_ref.c. */
#ifndef CW_CLOCKD_AUDIT_REF_H
#define CW_CLOCKD_AUDIT_REF_H

#include "causal.h"
#include "trace.h"

typedef struct ref ref_t;

/* Indexes the trace (borrowed). Test code: aborts on no memory by crashing. */
ref_t *ref_new(const cw_trace_t *t);
void ref_destroy(ref_t **p);
/* Runs the old audit: CW_OK or CW_ERR_NOMEM. Findings sorted as
 * cw_causal_audit sorts them. */
int ref_audit(ref_t *c);
size_t ref_findings(const ref_t *c);
const cw_finding_t *ref_finding(const ref_t *c, size_t i);

#endif
