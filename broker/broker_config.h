/*  broker_config: the broker's settings, their defaults and limits, and the
 *  parsing of command-line flags and config files into them.
 *
 *  One table (broker_config.c) describes every option once: its flag name,
 *  which is also its config-file key, its type, range, default and help.
 *  Config files hold `key = value` lines; `#` starts a comment. Flags given
 *  on the command line override the file. Used from main() only.
 */
#ifndef CW_BROKER_CONFIG_H
#define CW_BROKER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define CW_DEFAULT_BIND "tcp://127.0.0.1:7400"
#define CW_BROKER_ID_MAX 48 /* --broker-id, bytes */

typedef struct {
    char bind[256];           /* ZeroMQ endpoint of the ROUTER socket */
    char data[1024];          /* durable store directory; "" = no store */
    char store[1024];         /* durable store URL (redis://...); "" = none; excludes data */
    char broker_id[64];       /* --store: this broker's id in the store; "" = HOST-PID-N */
    int log_level;            /* cw_log_level_t */
    uint32_t heartbeat_ms;    /* heartbeat interval, both directions */
    uint32_t liveness;        /* intervals of silence before a session expires */
    uint32_t max_frame;       /* largest frame answered normally, bytes */
    uint32_t max_text;        /* largest Send.text, bytes */
    uint32_t max_recipients;  /* largest Send.to list */
    uint32_t max_name;        /* longest user name, bytes */
    uint32_t max_sessions;    /* concurrent logged-in sessions */
    uint32_t sndhwm;          /* frames queued per peer before it counts as flooded */
    uint32_t queue_max;       /* durable: messages per user queue */
    uint32_t retention;       /* durable: acknowledged messages kept for history, per user */
    uint32_t ttl_s;           /* durable: default message TTL in seconds, 0 = none */
    uint32_t redeliver_ms;    /* durable: unacknowledged pushes are pushed again after this */
    uint32_t push_window;     /* durable: unacknowledged pushes in flight per session */
    char curve_secret[1024];  /* CURVE: the broker's secret certificate; "" = plain */
    char users[1024];         /* CURVE: directory of the users' public certificates */
    int insecure;             /* 1: plain mode allowed on a non-loopback endpoint */
    uint32_t rate;            /* requests per second per session; 0 = no limit */
    uint32_t burst;           /* requests a session may send at once above rate */
    uint32_t reply_budget;    /* unread bulky reply bytes per connection before FLOODED */
    uint32_t page_users;      /* user-log entries per Login/Who reply */
    uint32_t max_reply;       /* bytes of messages per Fetch/History reply (at least one) */
    uint32_t store_inflight;  /* durable: store requests waiting per session */
    uint32_t store_inflight_bytes; /* durable: bytes of those requests per session */
    uint32_t store_max;       /* durable: queued messages over all users; 0 = no limit */
    uint32_t redis_wait;      /* --store: replicas each WAIT must reach (0: no WAIT) */
    uint32_t store_retry_ms;  /* --store: a request's deadline before STORE_ERROR */
    uint32_t lease_ms;        /* --store: lease renewal period (expires after 3) */
    char metrics[256];        /* HOST:PORT of the Prometheus endpoint; "" = none */
    int metrics_public;       /* 1: the endpoint may listen on a non-loopback address */
    char operators[1024];     /* comma-separated user names allowed the operator
                                 requests (Sessions, Queues, Recent); "" = nobody */
    int monitor_text;         /* 1: Recent may carry message texts (to operators) */
    char log_format[8];       /* "text" or "json" */
    int recover_store;        /* durable: open a store whose WAL lost committed data,
                                 accepting the loss (command line only) */
} cw_broker_config_t;

/* Fills cfg with the defaults. Can't fail. */
void cw_broker_config_defaults(cw_broker_config_t *cfg);

/* Applies argv (argv[0] skipped). A `--config FILE` anywhere is loaded
 * first, then the other flags on top. Returns 0 on success, 1 if --help or
 * --version was handled (text already printed to stdout), -1 on error with
 * a message in err. */
int cw_broker_config_parse_args(cw_broker_config_t *cfg, int argc, char **argv, char *err,
                                size_t errlen);

/* Applies a config file. Returns 0, or -1 with a message naming the file
 * and line in err; cfg may be partly updated on error. */
int cw_broker_config_load_file(cw_broker_config_t *cfg, const char *path, char *err,
                               size_t errlen);

/* Checks the options together: --data and --store exclude each other and
 * a --store URL must be well formed; --curve-secret and --users go as a pair,
 * and without them the endpoint must not be reachable from other machines
 * (cw_endpoint_needs_curve) unless insecure is set. 0, or -1 with a message in err (a usage error). */
int cw_broker_config_check(const cw_broker_config_t *cfg, char *err, size_t errlen);

/* True if name is in cfg->operators. */
int cw_broker_config_is_operator(const cw_broker_config_t *cfg, const char *name);

/* Parses a metrics address HOST:PORT ("127.0.0.1:9100", "[::1]:0",
 * "localhost:0") into host (without brackets) and port. 0, or -1 with a
 * message in err. */
int cw_metrics_addr_parse(const char *addr, char *host, size_t hostlen, unsigned *port,
                          char *err, size_t errlen);

/* Prints --help text. */
void cw_broker_config_usage(FILE *out);

#endif
