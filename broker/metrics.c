/*  metrics: see metrics.h. The renderer (any thread) and the HTTP
 *  endpoint (libmicrohttpd's internal thread). Metric names and their
 *  meaning are documented in docs/OPERATIONS.md, "Monitoring"; keep the
 *  two the same.
 */
#include "metrics.h"
#include "cw_status.h"

#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const kind_names[CW_KINDS] = {"unicast", "multicast", "broadcast"};
static const char *const mode_names[2] = {"live", "durable"};

/* HELP and TYPE lines of one family. */
static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void one(FILE *f, const char *name, const char *type, const char *help, double v)
{
    family(f, name, type, help);
    fprintf(f, "%s %.6f\n", name, v);
}

static void one_u(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    family(f, name, type, help);
    fprintf(f, "%s %llu\n", name, (unsigned long long) v);
}

/* A label value: user names are [A-Za-z0-9_.-] and status names
 * [A-Z_], so nothing needs escaping; anything else is replaced. */
static void label_value(FILE *f, const char *s)
{
    for (; *s; s++)
        fputc(*s == '"' || *s == '\\' || (unsigned char) *s < 0x20 ? '_' : *s, f);
}

static void status_family(FILE *f, const char *name, const char *help, const uint64_t *a)
{
    family(f, name, "counter", help);
    for (int i = 0; i < CW_MON_STATUSES; i++)
        if (a[i])
            fprintf(f, "%s{status=\"%s\"} %llu\n", name, cw_status_name(i),
                    (unsigned long long) a[i]);
}

static void traffic_family(FILE *f, const char *name, const char *help,
                           const uint64_t a[2][CW_KINDS])
{
    family(f, name, "counter", help);
    for (int m = 0; m < 2; m++)
        for (int k = 0; k < CW_KINDS; k++)
            fprintf(f, "%s{mode=\"%s\",kind=\"%s\"} %llu\n", name, mode_names[m], kind_names[k],
                    (unsigned long long) a[m][k]);
}

char *cw_metrics_render(const cw_mon_snap_t *s, size_t *len)
{
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f)
        return NULL;
    family(f, "causeway_build_info", "gauge", "Always 1; the labels say which broker this is.");
    fprintf(f, "causeway_build_info{version=\"%s\",durable=\"%s\"} 1\n", CW_VERSION,
            s->durable ? "true" : "false");
    one(f, "causeway_uptime_seconds", "gauge", "Seconds since the broker started.",
        (double) s->uptime_ms / 1000.0);
    one(f, "causeway_start_time_seconds", "gauge",
        "Start time of the broker, seconds since the Unix epoch.",
        (double) s->started_us / 1e6);
    one(f, "causeway_snapshot_generation", "gauge",
        "Snapshots the router has published (one every 200 ms).", (double) s->generation);
    one_u(f, "causeway_sessions", "gauge", "Logged-in sessions now.", s->sessions);
    one_u(f, "causeway_sessions_max", "gauge", "The broker's session limit (--max-sessions).",
          s->max_sessions);
    one_u(f, "causeway_users_known", "gauge", "Names in the user log (every user ever seen).",
          s->users);
    one_u(f, "causeway_logins_total", "counter", "Sessions opened (resumes not counted).",
          s->c.logins);
    one_u(f, "causeway_sessions_expired_total", "counter",
          "Sessions ended by missed heartbeats or a lost connection.", s->expired);
    one_u(f, "causeway_frames_received_total", "counter", "Frames received from clients.",
          s->frames_in);
    one_u(f, "causeway_frames_sent_total", "counter", "Frames queued to clients.", s->frames_out);
    one_u(f, "causeway_received_bytes_total", "counter", "Bytes of frames received.",
          s->c.bytes_in);
    one_u(f, "causeway_pushed_bytes_total", "counter",
          "Bytes of pushed frames (Deliver, Presence, Heartbeat) queued to clients.",
          s->c.bytes_out);
    traffic_family(f, "causeway_messages_received_total",
                   "Sends that passed validation, by mode and addressing kind.", s->c.rx);
    traffic_family(f, "causeway_message_received_bytes_total",
                   "Text bytes of those Sends, by mode and addressing kind.", s->c.rx_bytes);
    traffic_family(f, "causeway_messages_delivered_total",
                   "Deliver frames pushed to recipients (one per recipient), by mode and kind.",
                   s->c.dl);
    traffic_family(f, "causeway_message_delivered_bytes_total",
                   "Text bytes of those Deliver frames, by mode and kind.", s->c.dl_bytes);
    status_family(f, "causeway_recipient_fates_total",
                  "Per-recipient outcomes of Sends (DELIVERED, OFFLINE, FLOODED, ACCEPTED, ...).",
                  s->c.fates);
    status_family(f, "causeway_refusals_total", "Error replies sent, by status.", s->c.refusals);
    one_u(f, "causeway_redeliveries_total", "counter",
          "Durable entries pushed again because no ack came in time.", s->c.redeliveries);
    one_u(f, "causeway_replies_dropped_total", "counter",
          "Replies dropped because the client's queue held --sndhwm frames (it was not reading).",
          s->c.replies_dropped);
    one_u(f, "causeway_held_messages", "gauge",
          "Live messages held back now behind stored ones (causal order).", s->c.held_now);
    one_u(f, "causeway_held_messages_total", "counter", "Live messages ever held back.",
          s->c.held_total);
    if (s->durable) {
        one_u(f, "causeway_queue_depth_messages", "gauge",
              "Durable queue entries waiting for an ack, over all users.", s->queued_total);
        family(f, "causeway_queue_depth_top_messages", "gauge",
               "The deepest user queues (at most 10), entries waiting.");
        for (size_t i = 0; i < s->n_top; i++) {
            fputs("causeway_queue_depth_top_messages{user=\"", f);
            label_value(f, s->top[i].name);
            fprintf(f, "\"} %llu\n", (unsigned long long) s->top[i].depth);
        }
        one_u(f, "causeway_store_pending_requests", "gauge",
              "Store requests submitted and not yet answered.", s->store_pending);
        one_u(f, "causeway_store_transactions_total", "counter",
              "Store groups processed (one transaction each).", s->store.groups);
        one_u(f, "causeway_store_fsyncs_total", "counter",
              "Store commits that wrote something (one WAL fsync each).", s->store.commits);
        one_u(f, "causeway_store_failed_groups_total", "counter",
              "Store groups answered STORE_ERROR.", s->store.failed_groups);
        one_u(f, "causeway_store_damaged_entries_total", "counter",
              "Distinct stored queue entries found damaged since start (messages lost; "
              "each delivered as Deliver.damaged).",
              s->damaged_entries);
        one_u(f, "causeway_store_messages_total", "counter",
              "Messages stored (a multicast counts once).", s->store.appended);
        family(f, "causeway_store_commit_seconds", "histogram",
               "Duration of store commits (COMMIT and its fsync), seconds.");
        static const uint64_t bounds[CW_COMMIT_BUCKETS] = CW_COMMIT_BOUNDS_US;
        uint64_t run = 0;
        for (size_t i = 0; i < CW_COMMIT_BUCKETS; i++) {
            run += s->store.commit_hist[i];
            fprintf(f, "causeway_store_commit_seconds_bucket{le=\"%g\"} %llu\n",
                    (double) bounds[i] / 1e6, (unsigned long long) run);
        }
        run += s->store.commit_hist[CW_COMMIT_BUCKETS];
        fprintf(f, "causeway_store_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
                (unsigned long long) run);
        fprintf(f, "causeway_store_commit_seconds_sum %.6f\n",
                (double) s->store.commit_sum_us / 1e6);
        fprintf(f, "causeway_store_commit_seconds_count %llu\n", (unsigned long long) run);
    }
    uint64_t rss = cw_mon_rss_bytes(), vsz = cw_mon_vsize_bytes();
    one_u(f, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
    one_u(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", vsz);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    *len = size;
    return buf;
}

/* ------------------------------------------------------------------------
 * The HTTP endpoint
 */

struct cw_metrics_http {
    struct MHD_Daemon *daemon;  /* libmicrohttpd, its own thread */
    cw_monitor_t *mon;          /* not owned */
    cw_mon_snap_t *snap;        /* scratch for one request (one server thread) */
    char url[320];              /* what is served */
};

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload,
                              size_t *upload_size, void **req_cls)
{
    cw_metrics_http_t *h = cls;
    unsigned code = MHD_HTTP_OK;
    const char *type = "text/plain; version=0.0.4; charset=utf-8";
    char *body = NULL;
    size_t len = 0;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        code = MHD_HTTP_METHOD_NOT_ALLOWED;
        body = strdup("only GET /metrics is served\n");
    } else if (strcmp(url, "/metrics") != 0) {
        code = MHD_HTTP_NOT_FOUND;
        body = strdup("not found: the metrics are at /metrics\n");
    } else {
        cw_monitor_read(h->mon, h->snap);
        if (h->snap->generation == 0) {
            code = MHD_HTTP_SERVICE_UNAVAILABLE;
            body = strdup("the broker has not published figures yet\n");
        } else {
            body = cw_metrics_render(h->snap, &len);
        }
    }
    if (!body) {
        code = MHD_HTTP_INTERNAL_SERVER_ERROR;
        body = strdup("out of memory\n");
    }
    if (!body)
        return MHD_NO;
    if (code != MHD_HTTP_OK)
        len = strlen(body);
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            code == MHD_HTTP_OK ? type : "text/plain; charset=utf-8");
    if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return rc;
}

cw_metrics_http_t *cw_metrics_http_new(const char *host, unsigned port, cw_monitor_t *mon,
                                       char *err, size_t errlen)
{
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%u", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, errlen, "--metrics %s: %s", host, gai ? gai_strerror(gai) : "no address");
        return NULL;
    }
    cw_metrics_http_t *h = calloc(1, sizeof *h);
    if (h)
        h->snap = malloc(sizeof *h->snap);
    if (!h || !h->snap) {
        freeaddrinfo(ai);
        if (h)
            free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->mon = mon;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Bounded: a few scrapers at once, slow ones dropped after 10 s. */
    h->daemon = MHD_start_daemon(flags, (uint16_t) port, NULL, NULL, answer, h,
                                 MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned) 64,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned) 10,
                                 MHD_OPTION_END);
    int family_v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    if (!h->daemon) {
        snprintf(err, errlen, "cannot serve metrics on %s:%u (address in use or not local?)",
                 host, port);
        free(h->snap);
        free(h);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
    unsigned bound = info ? info->port : port;
    snprintf(h->url, sizeof h->url, family_v6 ? "http://[%s]:%u/metrics" : "http://%s:%u/metrics",
             host, bound);
    return h;
}

const char *cw_metrics_http_url(const cw_metrics_http_t *h)
{
    return h->url;
}

void cw_metrics_http_destroy(cw_metrics_http_t **p)
{
    if (!p || !*p)
        return;
    cw_metrics_http_t *h = *p;
    if (h->daemon)
        MHD_stop_daemon(h->daemon);
    free(h->snap);
    free(h);
    *p = NULL;
}
