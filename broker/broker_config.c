/*  broker_config: see broker_config.h. */
#include "broker_config.h"
#include "cw_log.h"
#include "cw_sec.h"
#include "store_if.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { OPT_STR, OPT_U32, OPT_LEVEL, OPT_BOOL } opt_kind_t;

typedef struct {
    const char *name;     /* flag without "--", and config-file key */
    opt_kind_t kind;      /* how the value is parsed */
    size_t offset;        /* field in cw_broker_config_t */
    size_t size;          /* OPT_STR: buffer size */
    uint32_t min, max;    /* OPT_U32: inclusive range */
    const char *arg;      /* placeholder in --help */
    const char *help;     /* one line */
} opt_t;

#define STR(f, n, a, h) {n, OPT_STR, offsetof(cw_broker_config_t, f), \
                         sizeof(((cw_broker_config_t *) 0)->f), 0, 0, a, h}
#define U32(f, n, lo, hi, h) {n, OPT_U32, offsetof(cw_broker_config_t, f), 0, lo, hi, "N", h}

static const opt_t options[] = {
    STR(bind, "bind", "ENDPOINT", "ZeroMQ endpoint to listen on (default " CW_DEFAULT_BIND ")"),
    STR(data, "data", "DIR", "durable store directory (default: none, live-only)"),
    STR(store, "store", "URL", "durable store on Redis Cluster, redis://HOST:PORT[,HOST:PORT...] (seed nodes; excludes --data)"),
    U32(redis_wait, "redis-wait", 0, 16, "--store: replicas WAIT must reach per primary before anything is acknowledged or delivered; 0 = no WAIT, a test control that can lose data (default 1)"),
    U32(store_retry_ms, "store-retry-ms", 100, 600000, "--store: a store request's deadline in ms before STORE_ERROR (default 10000)"),
    STR(broker_id, "broker-id", "ID", "--store: this broker's id in the store (lease, claims, writer of entries), letters, digits and .-_:, up to 48 bytes; a broker restarted with its id takes back at once what its previous run held; two running brokers must never share one (default: HOST-PID-N, new at every start)"),
    U32(lease_ms, "lease-ms", 100, 60000, "--store: this broker's lease renewal period in ms; it expires after 3 periods (default 1000)"),
    {"log-level", OPT_LEVEL, offsetof(cw_broker_config_t, log_level), 0, 0, 0, "LEVEL",
     "error|warn|info|debug|trace (default info)"},
    U32(heartbeat_ms, "heartbeat-ms", 50, 600000, "heartbeat interval in ms (default 1000)"),
    U32(liveness, "liveness", 2, 100, "silent intervals before a session expires (default 3)"),
    U32(max_frame, "max-frame", 512, 64u << 20, "largest frame in bytes (default 65536)"),
    U32(max_text, "max-text", 1, 64u << 20, "largest message text in bytes (default 60000)"),
    U32(max_recipients, "max-recipients", 1, 100000, "most recipients per message (default 1000)"),
    U32(max_name, "max-name", 1, 64, "longest user name in bytes (default 32)"),
    U32(max_sessions, "max-sessions", 1, 1000000, "most logged-in sessions (default 10000)"),
    U32(sndhwm, "sndhwm", 1, 10000000, "frames queued per client before it is FLOODED (default 10000)"),
    U32(queue_max, "queue-max", 1, 100000000, "durable: messages per user queue (default 100000)"),
    U32(retention, "retention", 0, 10000000, "durable: acknowledged messages kept per user for history (default 100)"),
    U32(ttl_s, "ttl", 0, 100000000, "durable: default message TTL in seconds, 0 = forever (default 0)"),
    U32(redeliver_ms, "redeliver-ms", 100, 86400000, "durable: push unacknowledged messages again after N ms (default 30000)"),
    U32(push_window, "push-window", 1, 100000, "durable: unacknowledged pushes per session, below --sndhwm (default 1000)"),
    STR(curve_secret, "curve-secret", "FILE", "CURVE: the broker's secret certificate (causeway keygen --server)"),
    STR(users, "users", "DIR", "CURVE: directory of the users' public certificates"),
    {"insecure", OPT_BOOL, offsetof(cw_broker_config_t, insecure), 0, 0, 0, "",
     "allow plain (unauthenticated) mode on a non-loopback endpoint"},
    U32(rate, "rate", 0, 10000000, "requests per second per user, 0 = no limit (default 0)"),
    U32(burst, "burst", 1, 10000000, "requests a user may send at once above --rate (default 1000)"),
    U32(reply_budget, "reply-budget", 65536, 1u << 30, "unread bulky reply bytes per connection before FLOODED (default 4194304)"),
    U32(page_users, "page-users", 1, 1000000, "user-log entries per login/who reply (default 1000)"),
    U32(max_reply, "max-reply", 4096, 64u << 20, "bytes of messages per fetch/history reply (default 1048576)"),
    U32(store_inflight, "store-inflight", 1, 100000, "durable: store requests waiting per session (default 1000)"),
    U32(store_inflight_bytes, "store-inflight-bytes", 65536, 1u << 30, "durable: bytes of store requests waiting per session (default 8388608)"),
    U32(store_max, "store-max", 0, 2000000000, "durable: queued messages over all users, 0 = no limit (default 10000000)"),
    STR(metrics, "metrics", "HOST:PORT", "serve Prometheus metrics at http://HOST:PORT/metrics (port 0: any free one; default: none)"),
    {"metrics-public", OPT_BOOL, offsetof(cw_broker_config_t, metrics_public), 0, 0, 0, "",
     "allow --metrics on a non-loopback address (it has no authentication)"},
    STR(operators, "operators", "NAMES", "comma-separated user names allowed the operator requests (sessions, queues, recent messages; default: none)"),
    {"monitor-text", OPT_BOOL, offsetof(cw_broker_config_t, monitor_text), 0, 0, 0, "",
     "let operators see the texts of recently forwarded messages (causeway top --text)"},
    STR(log_format, "log-format", "FORMAT", "text|json: log lines as text or as one JSON object each (default text)"),
    {"recover-store", OPT_BOOL, offsetof(cw_broker_config_t, recover_store), 0, 0, 0, "",
     "durable: start although the WAL lost committed data, accepting the loss (command line only)"},
};
#define N_OPTIONS (sizeof options / sizeof options[0])

void cw_broker_config_defaults(cw_broker_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->bind, sizeof cfg->bind, "%s", CW_DEFAULT_BIND);
    cfg->log_level = CW_LOG_INFO;
    cfg->heartbeat_ms = 1000;
    cfg->liveness = 3;
    cfg->max_frame = 65536;
    cfg->max_text = 60000;
    cfg->max_recipients = 1000;
    cfg->max_name = 32;
    cfg->max_sessions = 10000;
    cfg->sndhwm = 10000;
    cfg->queue_max = 100000;
    cfg->retention = 100;
    cfg->ttl_s = 0;
    cfg->redeliver_ms = 30000;
    cfg->push_window = 1000;
    cfg->rate = 0;
    cfg->burst = 1000;
    cfg->reply_budget = 4u << 20;
    cfg->page_users = 1000;
    cfg->max_reply = 1u << 20;
    cfg->store_inflight = 1000;
    cfg->store_inflight_bytes = 8u << 20;
    cfg->store_max = 10000000;
    cfg->redis_wait = 1;
    cfg->store_retry_ms = 10000;
    cfg->lease_ms = 1000;
    snprintf(cfg->log_format, sizeof cfg->log_format, "text");
}

int cw_broker_config_is_operator(const cw_broker_config_t *cfg, const char *name)
{
    size_t len = strlen(name);
    for (const char *p = cfg->operators; *p;) {
        while (*p == ',' || *p == ' ')
            p++;
        size_t n = strcspn(p, ", ");
        if (n && n == len && memcmp(p, name, n) == 0)
            return 1;
        p += n;
    }
    return 0;
}

int cw_metrics_addr_parse(const char *addr, char *host, size_t hostlen, unsigned *port,
                          char *err, size_t errlen)
{
    const char *colon, *h = addr;
    size_t hl;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "--metrics '%s': expected [IPV6]:PORT", addr);
            return -1;
        }
        h = addr + 1;
        hl = (size_t) (close - h);
        colon = close + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || strchr(addr, ':') != colon) {
            snprintf(err, errlen, "--metrics '%s': expected HOST:PORT (IPv6: [ADDR]:PORT)", addr);
            return -1;
        }
        hl = (size_t) (colon - addr);
    }
    char *end;
    errno = 0;
    unsigned long v = strtoul(colon + 1, &end, 10);
    if (hl == 0 || hl >= hostlen || errno || end == colon + 1 || *end || colon[1] == '-' ||
        v > 65535) {
        snprintf(err, errlen, "--metrics '%s': expected HOST:PORT with a port from 0 to 65535",
                 addr);
        return -1;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (unsigned) v;
    return 0;
}

static const opt_t *find_option(const char *name)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

/* Stores value into the field of opt. 0 or -1 with err filled. */
static int apply(cw_broker_config_t *cfg, const opt_t *opt, const char *value, char *err,
                 size_t errlen)
{
    char *field = (char *) cfg + opt->offset;
    switch (opt->kind) {
    case OPT_STR:
        if (strlen(value) >= opt->size) {
            snprintf(err, errlen, "%s: value too long (max %zu bytes)", opt->name, opt->size - 1);
            return -1;
        }
        memcpy(field, value, strlen(value) + 1);
        return 0;
    case OPT_LEVEL: {
        int level = cw_log_level_parse(value);
        if (level < 0) {
            snprintf(err, errlen, "%s: '%s' is not one of error|warn|info|debug|trace",
                     opt->name, value);
            return -1;
        }
        *(int *) (void *) field = level;
        return 0;
    }
    case OPT_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 || strcmp(value, "1") == 0)
            *(int *) (void *) field = 1;
        else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 ||
                 strcmp(value, "0") == 0)
            *(int *) (void *) field = 0;
        else {
            snprintf(err, errlen, "%s: '%s' is not one of true|false|yes|no|1|0", opt->name,
                     value);
            return -1;
        }
        return 0;
    case OPT_U32: {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-' || v < opt->min || v > opt->max) {
            snprintf(err, errlen, "%s: '%s' is not a whole number from %u to %u", opt->name,
                     value, opt->min, opt->max);
            return -1;
        }
        *(uint32_t *) (void *) field = (uint32_t) v;
        return 0;
    }
    }
    return -1;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

int cw_broker_config_load_file(cw_broker_config_t *cfg, const char *path, char *err,
                               size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char line[2048];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errlen, "%s:%d: expected 'key = value'", path, lineno);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        const opt_t *opt = find_option(key);
        if (!opt) {
            snprintf(err, errlen, "%s:%d: unknown key '%s'", path, lineno, key);
            rc = -1;
            break;
        }
        if (opt->offset == offsetof(cw_broker_config_t, recover_store)) {
            /* Accepting a loss is a decision for one start, not a setting. */
            snprintf(err, errlen, "%s:%d: recover-store is a command-line flag only", path,
                     lineno);
            rc = -1;
            break;
        }
        char why[512];
        if (apply(cfg, opt, value, why, sizeof why) != 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, why);
            rc = -1;
        }
    }
    fclose(f);
    return rc;
}

/* Applies every --key value / --key=value flag; --config is skipped (already loaded). */
static int parse_flags(cw_broker_config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return -1;
        }
        char name[64];
        const char *value = NULL;
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t) (eq - (a + 2)) : strlen(a + 2);
        if (len >= sizeof name) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", a);
            return -1;
        }
        memcpy(name, a + 2, len);
        name[len] = '\0';
        const opt_t *bool_opt = find_option(name);
        if (eq)
            value = eq + 1;
        else if (bool_opt && bool_opt->kind == OPT_BOOL)
            value = "true"; /* a bare switch: --insecure */
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            snprintf(err, errlen, "--%s needs a value", name);
            return -1;
        }
        if (strcmp(name, "config") == 0)
            continue; /* loaded before the flags */
        const opt_t *opt = find_option(name);
        if (!opt) {
            snprintf(err, errlen, "unknown option '--%s' (see --help)", name);
            return -1;
        }
        if (apply(cfg, opt, value, err, errlen) != 0)
            return -1;
    }
    return 0;
}

int cw_broker_config_parse_args(cw_broker_config_t *cfg, int argc, char **argv, char *err,
                                size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cw_broker_config_usage(stdout);
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("causeway-broker %s\n", CW_VERSION);
            return 1;
        }
    }
    /* The file first, so that flags override it wherever they stand. */
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;
        if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
        else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[i + 1];
        if (path && cw_broker_config_load_file(cfg, path, err, errlen) != 0)
            return -1;
    }
    return parse_flags(cfg, argc, argv, err, errlen);
}

int cw_broker_config_check(const cw_broker_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->data[0] && cfg->store[0]) {
        snprintf(err, errlen, "--data and --store are mutually exclusive: choose one store");
        return -1;
    }
    size_t n_nodes = 0;
    if (cfg->store[0] && cw_store_redis_url_check(cfg->store, &n_nodes, err, errlen) != 0)
        return -1;
    if (cfg->broker_id[0]) {
        if (!cfg->store[0]) {
            snprintf(err, errlen, "--broker-id names this broker in a shared store: it needs --store");
            return -1;
        }
        size_t len = strlen(cfg->broker_id);
        if (len > CW_BROKER_ID_MAX ||
            strspn(cfg->broker_id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                   "0123456789.-_:") != len) {
            snprintf(err, errlen,
                     "--broker-id '%s': use 1 to %d letters, digits, '.', '-', '_' or ':'",
                     cfg->broker_id, CW_BROKER_ID_MAX);
            return -1;
        }
    }
    if ((cfg->data[0] || cfg->store[0]) && cfg->push_window >= cfg->sndhwm) {
        /* Pushes in flight alone would fill a reading client's queue, and
         * the replies to its requests would find no room (dropped). */
        snprintf(err, errlen,
                 "--push-window %u must be below --sndhwm %u: that many unacknowledged "
                 "durable pushes would fill a client's queue and leave no room for the "
                 "replies to its requests; lower --push-window or raise --sndhwm "
                 "(docs/OPERATIONS.md, Slow readers)",
                 cfg->push_window, cfg->sndhwm);
        return -1;
    }
    if (strcmp(cfg->log_format, "text") != 0 && strcmp(cfg->log_format, "json") != 0) {
        snprintf(err, errlen, "log-format: '%s' is not one of text|json", cfg->log_format);
        return -1;
    }
    if (cfg->metrics[0]) {
        char host[256];
        unsigned port;
        if (cw_metrics_addr_parse(cfg->metrics, host, sizeof host, &port, err, errlen) != 0)
            return -1;
        char ep[300];
        snprintf(ep, sizeof ep, strchr(host, ':') ? "tcp://[%s]:%u" : "tcp://%s:%u", host, port);
        if (!cfg->metrics_public && cw_endpoint_needs_curve(ep)) {
            snprintf(err, errlen,
                     "refusing to serve metrics on %s: the endpoint has no authentication "
                     "and names users (deepest queues). Bind a loopback address "
                     "(127.0.0.1:PORT) or accept this with --metrics-public "
                     "(docs/OPERATIONS.md, Monitoring)",
                     cfg->metrics);
            return -1;
        }
    }
    if (!cfg->curve_secret[0] != !cfg->users[0]) {
        snprintf(err, errlen, "CURVE needs both --curve-secret FILE and --users DIR");
        return -1;
    }
    if (!cfg->curve_secret[0] && !cfg->insecure && cw_endpoint_needs_curve(cfg->bind)) {
        snprintf(err, errlen,
                 "refusing to listen on %s without CURVE: anyone who can reach it could "
                 "log in under any name and read what is sent to it. Use --curve-secret "
                 "FILE --users DIR, bind a loopback address (tcp://127.0.0.1:PORT), or "
                 "accept this with --insecure (docs/OPERATIONS.md, Security)",
                 cfg->bind);
        return -1;
    }
    return 0;
}

void cw_broker_config_usage(FILE *out)
{
    fprintf(out,
            "usage: causeway-broker [--config FILE] [--OPTION VALUE]...\n"
            "\n"
            "The causeway chat broker. Listens on a ZeroMQ ROUTER socket, carries\n"
            "chat between named clients and, with --data, keeps durable per-user queues.\n"
            "After binding it prints one line to stdout, `listening ENDPOINT`, with the\n"
            "actual endpoint (useful with a wildcard port: --bind tcp://127.0.0.1:*).\n"
            "Logs go to stderr. SIGINT/SIGTERM shut it down cleanly; so does SIGHUP\n"
            "(closing its terminal), except with --users when stdin is not a terminal\n"
            "(a service): then SIGHUP re-reads --users DIR, like SIGUSR1 always does.\n"
            "\n"
            "options (also config-file keys, `key = value`):\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s%s%s", options[i].name, options[i].arg[0] ? " " : "",
                 options[i].arg);
        fprintf(out, "  %-26s %s\n", left, options[i].help);
    }
    fprintf(out, "  %-26s %s\n", "--config FILE", "read options from FILE first");
    fprintf(out, "  %-26s %s\n", "--help", "show this help");
    fprintf(out, "  %-26s %s\n", "--version", "show the version");
    fprintf(out,
            "\nsecurity: without --curve-secret/--users the broker is plain: no encryption,\n"
            "and any client can claim any free name. Plain mode is refused on a\n"
            "non-loopback endpoint unless --insecure is given. With CURVE, only keys in\n"
            "--users DIR get through the handshake, and each may log in only as the user\n"
            "named in its certificate. SIGUSR1 (and SIGHUP as above) re-reads --users DIR.\n"
            "See docs/OPERATIONS.md.\n");
    fprintf(out,
            "\nmonitoring: --metrics HOST:PORT serves Prometheus text format over HTTP and\n"
            "prints `metrics http://HOST:PORT/metrics` on stdout after binding (after the\n"
            "`listening` line). Loopback addresses only unless --metrics-public. The user\n"
            "names in --operators may ask for sessions, queues and recent messages\n"
            "(causeway stats sessions|queues, causeway top); texts only with\n"
            "--monitor-text. See docs/OPERATIONS.md, Monitoring.\n");
    fprintf(out, "\nexit status: 0 after a clean shutdown, 1 on a start-up error, 2 on a usage error.\n");
}
