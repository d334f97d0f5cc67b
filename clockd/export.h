/*  export: what causeway-clockd writes for people and other tools: a
 *  ShiViz log (and the parser that reads it back), and a space-time diagram
 *  as a self-contained SVG or an HTML page wrapping it.
 *
 *  What it owns. A cw_export_t borrows an analysis (and through it the
 *  trace; both must outlive it) and owns the diagram layout computed from
 *  it: one lane per process (in order of first appearance), one column per
 *  event (longest-path layering: an event sits one column right of its
 *  process predecessor and of the send it delivers), and the highlight
 *  class of every event.
 *
 *  ShiViz log (docs/CLOCKD.md, "ShiViz"): line 1 is the parser regular
 *  expression CW_SHIVIZ_REGEX, line 2 the (empty) multiple-executions
 *  delimiter, then two lines per event in trace order: a description
 *    KIND MSG PEERS ts=TS[ holdback_us=N][ msg_clock={...}] |[ TEXT]
 *  and "PROCESS {json clock}". MSG is the message key percent-encoded
 *  ("-" for none), PEERS is to=a,b (send), to=* (broadcast), from=a
 *  (deliver) or - (local); TEXT has \\, \n, \r, \xHH and \u2028/\u2029
 *  escaped. cw_shiviz_load reads exactly this form back into equal events.
 *
 *  Diagram. Events are circles (send), rings (deliver) and squares (local)
 *  on their lane, with a <title> tooltip giving id, kind, message, clock
 *  and text, and data-id / data-clock attributes; arrows join each send to
 *  its deliveries. Highlighting: without a focus event, the events of the
 *  largest antichain found (mutually concurrent) are ringed orange; with a
 *  focus event, its past is blue, its future green, events concurrent with
 *  it orange. Events at fault in an audit finding are ringed red and their
 *  arrows drawn red and dashed. The HTML page adds a few lines of script:
 *  clicking an event recolours past / future / concurrent around it.
 *
 *  Thread. Not thread-safe: one thread uses a cw_export_t.
 */
#ifndef CW_CLOCKD_EXPORT_H
#define CW_CLOCKD_EXPORT_H

#include <stddef.h>
#include <stdio.h>

#include "causal.h"
#include "trace.h"

/* The parser regex written on line 1 of a ShiViz log (ShiViz NamedRegExp
 * syntax; the file holds it with single backslashes). */
#define CW_SHIVIZ_REGEX                                                                        \
    "(?<event>(?<kind>\\S+) (?<msg>\\S+) (?<peers>\\S+) ts=(?<ts>\\d+)(?<opts>[^|]*) "         \
    "\\|(?<text>.*))\\n(?<host>\\S+) (?<clock>{.*})"

typedef struct {
    const char *title;   /* diagram title; NULL = "causeway-clockd" */
    size_t focus;        /* trace index of the focus event, or CW_NO_EVENT */
} cw_export_options_t;

typedef struct cw_export cw_export_t;

/* Sets defaults: no title, no focus. */
void cw_export_options_init(cw_export_options_t *o);

/* Lays out the diagram for the analysis (borrowed; runs its audit and its
 * width statistics, for the highlights). NULL if out of memory
 * (*status, if not NULL, says CW_ERR_NOMEM). */
cw_export_t *cw_export_new(cw_causal_t *c, const cw_export_options_t *o, int *status);
/* Frees the layout and NULLs *p; safe on NULL and twice. */
void cw_export_destroy(cw_export_t **p);

/* Writes the ShiViz log of the trace. CW_OK, or CW_ERR_IO if the stream
 * reported an error (what was written is incomplete). */
int cw_export_shiviz(const cw_export_t *x, FILE *f);

/* Writes the diagram as a standalone SVG document, or as an HTML page
 * embedding it. CW_OK or CW_ERR_IO as above. */
int cw_export_svg(const cw_export_t *x, FILE *f);
int cw_export_html(const cw_export_t *x, FILE *f);

/* Reads a ShiViz log written by cw_export_shiviz (path "-" = stdin) and
 * adds its events to t. CW_OK; CW_BAD_REQUEST with err "PATH:LINE: ..." if
 * the log is not of that form (events before the bad line stay added);
 * CW_ERR_IO if it cannot be read; CW_ERR_NOMEM. */
int cw_shiviz_load(cw_trace_t *t, const char *path, char *err, size_t errlen);

#endif
