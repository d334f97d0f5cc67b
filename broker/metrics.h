/*  metrics: the broker's figures in Prometheus text exposition format
 *  (version 0.0.4), and the HTTP endpoint that serves them.
 *
 *  cw_metrics_render is a pure function of a snapshot (monitor.h), any
 *  thread. cw_metrics_http runs libmicrohttpd with its own internal thread
 *  (one thread for every connection, so reads of the monitor are
 *  serialised anyway); per request it copies the newest snapshot out of
 *  the monitor (wait-free for the router) and renders it. It serves
 *  GET /metrics (and HEAD); anything else is 404, other methods 405.
 *  No HTTP parsing is written here: libmicrohttpd does it.
 */
#ifndef CW_METRICS_H
#define CW_METRICS_H

#include <stddef.h>

#include "monitor.h"

/* Renders snap (plus the process's memory, read now) as Prometheus text.
 * Returns a malloc'd NUL-terminated string (caller frees) and its length
 * in *len, or NULL if out of memory. */
char *cw_metrics_render(const cw_mon_snap_t *snap, size_t *len);

typedef struct cw_metrics_http cw_metrics_http_t;

/* Starts serving on host:port (an IPv4 or IPv6 literal, or "localhost";
 * port 0: a free port). The caller checked the address policy
 * (cw_broker_config_check). mon must outlive the server. NULL on failure
 * with a message in err. */
cw_metrics_http_t *cw_metrics_http_new(const char *host, unsigned port, cw_monitor_t *mon,
                                       char *err, size_t errlen);
/* The URL served, "http://HOST:PORT/metrics" with the port bound. */
const char *cw_metrics_http_url(const cw_metrics_http_t *h);
/* Stops the server thread and frees it; NULLs *p; safe on NULL and twice. */
void cw_metrics_http_destroy(cw_metrics_http_t **p);

#endif
