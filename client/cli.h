/*  cli.h: what the files of the `causeway` command-line client share.
 *
 *  cli.c parses the command line and runs the scriptable subcommands,
 *  cli_chat.c runs the interactive chat, tui.c the full-screen client
 *  (with tui_model.c, tui_worker.c), cli_out.c formats results and
 *  events as human text or JSON lines. Everything runs on the main thread;
 *  the only asynchronous piece is the signal handler, which sets
 *  cli_stopping and writes a byte into cli_signal_fd so poll loops wake up.
 */
#ifndef CW_CLI_H
#define CW_CLI_H

#include <signal.h>
#include <stdio.h>

#include "causeway.h"

/* Exit codes, documented in --help. */
enum {
    CLI_EXIT_OK = 0,           /* success */
    CLI_EXIT_UNDELIVERED = 1,  /* some recipient did not get the message */
    CLI_EXIT_USAGE = 2,        /* bad command line */
    CLI_EXIT_UNREACHABLE = 3,  /* no broker, timeout, connection lost */
    CLI_EXIT_REFUSED = 4,      /* broker refused (NAME_TAKEN, BAD_NAME, TOO_LARGE, ...) */
};

#define CLI_DEFAULT_TIMEOUT_MS 5000
#define CLI_AGENT "causeway-cli/" CW_VERSION

/* The parsed command line. */
typedef struct {
    const char *endpoint;   /* --endpoint / $CAUSEWAY_ENDPOINT / default */
    int timeout_ms;         /* --timeout: per request */
    int json;               /* --json: one JSON object per line */
    int clocks;             /* --clocks: show vector clocks in human output */
    const char *name;       /* --name */
    char **to;              /* --to (split at commas, may repeat); owned */
    size_t n_to;
    int all;                /* --all */
    int durable;            /* --durable (send; chat: start in durable mode) */
    const char *id;         /* --id */
    long ttl_s;             /* send --ttl: seconds a durable message may wait (0: default) */
    int receipt;            /* send --receipt: ask for read receipts (durable) */
    long max;               /* fetch --max: at most N messages (0: all) */
    int keep;               /* fetch --keep: do not acknowledge */
    long last;              /* history --last: N messages (0: broker default, 100) */
    long count;             /* listen --count: stop after N deliveries;
                               exchange --count: stop after N sends (0: never) */
    long for_ms;            /* listen, exchange --for: stop after MS ms (0: never) */
    const char *trace;      /* --trace FILE: record causal events as JSON lines */
    const char *clockd;     /* --clockd ENDPOINT: report them to causeway-clockd */
    char **group;           /* exchange --group (split at commas, may repeat); owned */
    size_t n_group;
    long min_ms;            /* exchange --min-ms: shortest interval (default 2000) */
    long max_ms;            /* exchange --max-ms: longest interval (default 10000) */
    unsigned long long seed; /* exchange --seed, if has_seed */
    int has_seed;
    const char *server_key; /* --server-key / $CAUSEWAY_SERVER_KEY: CURVE broker's key */
    const char *cert;       /* --cert / $CAUSEWAY_CERT: our CURVE certificate */
    const char *clockd_key; /* --clockd-key / $CAUSEWAY_CLOCKD_KEY: CURVE clockd's key */
    const char *dir;        /* keygen --dir: where the files go (default ".") */
    int server;             /* keygen --server: a server's key pair (no user) */
    int ready_fd;           /* listen --ready-fd: tell this descriptor when logged in; -1 */
    int watch;              /* stats --watch */
    long interval_ms;       /* stats --watch, top: --interval MS (0: 1000) */
    int text;               /* stats recent, top: --text (message texts) */
    const char *log_file;   /* tui --log-file: diagnostics while the screen is up */
    int mouse;              /* tui --mouse: clicks pick users, the wheel scrolls */
    char **args;            /* positional arguments after the command */
    int n_args;
} cli_opts_t;

extern volatile sig_atomic_t cli_stopping;   /* SIGINT/SIGTERM seen */
extern int cli_signal_fd;                    /* readable after a signal */

/* Exit code for a failed request's status. */
int cli_exit_for(cw_status_t st);

/* A client for o->endpoint (quiet: no presence; pull/auto_ack as in
 * cw_client_opts_t), recording causal events as --trace / --clockd say;
 * NULL after reporting why. */
cw_client_t *cli_connect(const cli_opts_t *o, int quiet, int pull, int auto_ack);

/* The CLI waits at most this long (and at most --timeout) at exit for
 * causeway-clockd to confirm the events reported to it. */
#define CLI_CLOCKD_FLUSH_MS 2000

/* Destroys *c after waiting (bounded) for causeway-clockd to confirm the
 * recorded events; reports on stderr events it did not confirm and trace
 * lines that could not be written. */
void cli_close(cw_client_t **c, const cli_opts_t *o);

/* `causeway exchange` (cli_exchange.c). Returns an exit code. */
int cli_exchange(const cli_opts_t *o);

/* Prints a fetch or history reply's messages (cli_print_message). */
void cli_print_messages(FILE *f, const cli_opts_t *o, const cw_reply_t *r, const char *me);

/* Prints "causeway: <what>: <status explanation>" (human, stderr) or an
 * error JSON line (stdout) and returns cli_exit_for(st). */
int cli_fail(const cli_opts_t *o, const char *what, cw_status_t st, const cw_reply_t *reply);

/* The interactive chat (cli_chat.c). Returns an exit code. */
int cli_chat(const cli_opts_t *o);

/* The full-screen terminal client (tui.c). Returns an exit code. */
int cli_tui(const cli_opts_t *o);

/* --- cli_out.c ---------------------------------------------------------- */

/* HH:MM:SS local time of a Unix epoch microsecond timestamp. */
void cli_fmt_time(uint64_t us, char *buf, size_t size);
/* YYYY-MM-DD HH:MM:SS local time. */
void cli_fmt_datetime(uint64_t us, char *buf, size_t size);

/* One line per event. `me` is our own name ("you" is printed for it).
 * Durable deliveries show their seq: "[12:00:01 #3] bob -> you: hi". */
void cli_print_event(FILE *f, const cli_opts_t *o, const cw_event_t *ev, const char *me);
/* One stored message of a fetch or history listing (with the date). */
void cli_print_message(FILE *f, const cli_opts_t *o, const cw_message_t *m, const char *me);
/* After a listing of `count` messages: the JSON summary line
 * {"event":what,"count":..[,"acked":*acked]}, or "no messages" (human,
 * count 0). */
void cli_print_listing_end(FILE *f, const cli_opts_t *o, const char *what, size_t count,
                           const uint64_t *acked);
/* The login line (user log). */
void cli_print_login(FILE *f, const cli_opts_t *o, const char *me, const cw_reply_t *r);
/* Per-recipient results of a send; compact: one line (chat). */
void cli_print_send(FILE *f, const cli_opts_t *o, const cw_reply_t *r, int durable, int compact);
void cli_print_users(FILE *f, const cli_opts_t *o, const char *event, const cw_user_t *u, size_t n);
void cli_print_stats(FILE *f, const cli_opts_t *o, const cw_reply_t *r);
void cli_print_error(FILE *f, const char *what, cw_status_t st, const char *detail);
/* The same with the message id of a send whose outcome is unknown. */
void cli_print_error_id(FILE *f, const char *what, cw_status_t st, const char *detail,
                        const char *message_id);

/* A growable string, for building lines. */
typedef struct {
    char *buf;    /* NUL-terminated; owned */
    size_t len;
    size_t cap;
} cli_str_t;

void cli_str_add(cli_str_t *s, const char *text);
void cli_str_addf(cli_str_t *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends text as a JSON string literal (quoted, escaped; invalid UTF-8
 * becomes U+FFFD). */
void cli_str_json(cli_str_t *s, const char *text);
void cli_str_free(cli_str_t *s);
/* Appends a clock: JSON {"alice":2,"bob":1}, or human {alice:2, bob:1}. */
void cli_str_clock(cli_str_t *s, const cw_clock_item_t *c, size_t n, int json);
/* Writes the line plus '\n' and flushes. */
void cli_str_emit(cli_str_t *s, FILE *f);

/* cli_stats.c: the monitoring figures of a Stats reply: JSON members
 * appended to *s, or (s NULL) human lines written to f. */
void cli_stats_extras(cli_str_t *s, FILE *f, const cli_opts_t *o, const cw_reply_t *r);
/* `causeway stats [sessions|queues|recent]` and --watch. */
int cli_stats(const cli_opts_t *o);
/* `causeway top` (cli_top.c). */
int cli_top(const cli_opts_t *o);
/* The q-quantile of the commit latency histogram: the upper bound (µs) of
 * its bucket; 0 without commits, UINT64_MAX above the last bound. */
uint64_t cli_commit_quantile(const cw_stats_t *st, double q);

#endif
