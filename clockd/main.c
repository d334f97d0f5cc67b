/*  causeway-clockd: command-line entry point.
 *
 *  Parses the command line, loads the trace (a JSON-lines file, a ShiViz log
 *  written by export-shiviz, or --db FILE, the daemon's store), runs one
 *  command and maps the outcome to an exit code (docs/CLOCKD.md, "Exit
 *  codes"). `serve` runs the daemon on the main thread until SIGINT or
 *  SIGTERM. Output goes to stdout (human text, or one JSON document with
 *  --json); errors go to stderr, and with --json also to stdout as
 *  {"error": ..., "exit": N}. Single-threaded.
 */
#include "causal.h"
#include "daemon.h"
#include "evstore.h"
#include "export.h"
#include "json.h"
#include "trace.h"
#include "cw_log.h"
#include "cw_render.h"
#include "cw_sec.h"
#include "cw_status.h"
#include "cw_util.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Exit codes. */
enum {
    EXIT_OK = 0,          /* success; audit: nothing found */
    EXIT_FINDINGS = 1,    /* audit: at least one finding */
    EXIT_USAGE = 2,       /* bad command line */
    EXIT_INPUT = 3,       /* trace or store unreadable or malformed */
    EXIT_NO_EVENT = 4,    /* an event id names no event */
    EXIT_RUNTIME = 5,     /* output not written, daemon failure, out of memory */
};

/* The parsed command line. */
typedef struct {
    const char *cmd;          /* command name */
    const char *pos[4];       /* positional arguments after the command */
    int npos;
    int json;                 /* --json */
    int help;                 /* --help */
    int skip_bad;             /* --skip-bad */
    int html;                 /* --html */
    const char *db;           /* --db FILE */
    const char *bind;         /* --bind E */
    const char *focus;        /* --focus E */
    const char *title;        /* --title T */
    const char *log_level;    /* --log-level L */
    const char *log_format;   /* --log-format text|json */
    const char *curve_secret; /* --curve-secret FILE */
    const char *users;        /* --users DIR */
    int insecure;             /* --insecure */
    size_t max_frame;         /* --max-frame N */
    size_t exact_limit;       /* --exact-limit N */
    size_t pairs_limit;       /* --pairs-limit N */
    int has_exact_limit, has_pairs_limit;
} opts_t;

static int g_json;   /* --json of the running command, for errors */

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reports an error the one way: stderr, and a JSON object with --json. */
static int fail(int code, const char *fmt, ...)
{
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "causeway-clockd: %s\n", msg);
    if (g_json) {
        fputs("{\"error\":", stdout);
        cw_json_put_string(stdout, msg);
        printf(",\"exit\":%d}\n", code);
    }
    return code;
}

/* ---- help ---------------------------------------------------------------------- */

static const struct {
    const char *name;
    const char *usage;
    const char *text;
} commands[] = {
    {"serve", "serve [--bind ENDPOINT] [--db FILE] [--max-frame BYTES] [--log-level LEVEL]\n"
              "                        [--log-format text|json]\n"
              "                        [--curve-secret FILE --users DIR] [--insecure]",
     "Run the daemon: receive ClockdRequest frames (proto/causeway.proto) on a ROUTER\n"
     "socket, store reported events in the SQLite file, answer audit, compare and info\n"
     "requests. Prints \"listening ENDPOINT\" as the first line on stdout; logs go to\n"
     "stderr. Stops cleanly on SIGINT/SIGTERM (exit 0); SIGHUP re-reads --users.\n"
     "  --bind ENDPOINT   default " CW_CLOCKD_DEFAULT_BIND " (tcp://127.0.0.1:* picks a free port)\n"
     "  --db FILE         default " CW_CLOCKD_DEFAULT_DB "; \":memory:\" keeps nothing\n"
     "  --max-frame BYTES largest request frame, default 4194304\n"
     "  --log-level LEVEL error|warn|info|debug|trace, default info\n"
     "  --log-format F    text (default) or json: one object per line with the keys\n"
     "                    ts, level, component, msg (docs/OPERATIONS.md, Logging)\n"
     "  --curve-secret FILE  CURVE: the daemon's secret certificate (causeway keygen\n"
     "                    --server); with --users DIR, the registered public\n"
     "                    certificates (the broker's users directory will do): only\n"
     "                    those keys get through the handshake\n"
     "  --insecure        allow plain mode on a non-loopback endpoint (refused without\n"
     "                    it: anyone who can reach it could report and read events)\n"},
    {"events", "events TRACE",
     "List the events with their ids (PROCESS:N, the N-th event of PROCESS), kinds,\n"
     "messages, peers, clocks and texts.\n"},
    {"compare", "compare TRACE A B",
     "Compare events A and B by their vector clocks (missing entries count as 0):\n"
     "before (A happened before B), after, concurrent, or equal.\n"},
    {"past", "past TRACE E", "List the events that happened before E (its causal past).\n"},
    {"future", "future TRACE E", "List the events that E happened before (its causal future).\n"},
    {"concurrent", "concurrent TRACE E", "List the events concurrent with E.\n"},
    {"audit", "audit TRACE",
     "Check the trace: per receiver, deliveries that contradict happened-before\n"
     "(causal-order), duplicate deliveries (duplicate), messages whose causal\n"
     "predecessor to the same receiver was never delivered (gap), deliveries of\n"
     "unknown or misaddressed messages (unmatched); per process, clocks that break the\n"
     "vector clock rules (clock-rule). Each finding names both events and their clocks.\n"
     "Also counts the deliveries the receiving client flagged late (\"late\": true: the\n"
     "sender's clock entry at or below the receiver's, e.g. a send retried after a\n"
     "broker failover); a count, not a finding.\n"
     "Exit 1 if anything is found, 0 if not.\n"},
    {"stats", "stats TRACE [--exact-limit N] [--pairs-limit N]",
     "Statistics: events, messages, ordered and concurrent pairs, width of the partial\n"
     "order (largest antichain: exact up to --exact-limit events, default 2000, else\n"
     "greedy lower and upper bounds), clock sizes, hold-back delays.\n"
     "  --pairs-limit N   count pairs up to N events (O(N^2)), default 10000\n"},
    {"export-shiviz", "export-shiviz TRACE OUT",
     "Write a ShiViz log (parser regex on line 1, empty delimiter on line 2, then per\n"
     "event a description line and a \"PROCESS {clock}\" line). OUT - is stdout. The\n"
     "log can be read back: every command accepts it as TRACE.\n"},
    {"diagram", "diagram TRACE OUT.svg|OUT.html [--html] [--focus E] [--title T]",
     "Draw a space-time diagram: one lane per process, arrows from each send to its\n"
     "deliveries, the largest antichain found (mutually concurrent events) in orange,\n"
     "audit findings ringed in red. With --focus E: E's past blue, future green,\n"
     "concurrent orange. OUT ending in .html (or --html) gives an HTML page in which\n"
     "clicking an event does the same. OUT - is stdout.\n"},
};

static void usage_all(FILE *f)
{
    fputs("usage: causeway-clockd COMMAND [ARGS] [--json] [--help]\n"
          "       causeway-clockd --version\n\n"
          "Collect vector-clock-stamped events and inspect causal order.\n\n"
          "Commands:\n", f);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %s\n", commands[i].usage);
    fputs("  help [COMMAND]\n\n"
          "TRACE is a JSON-lines trace file (- for stdin), a ShiViz log written by\n"
          "export-shiviz, or --db FILE for the daemon's store. Events are named\n"
          "PROCESS:N (see `events`).\n\n"
          "Options for every command reading a trace:\n"
          "  --db FILE     read the daemon's store instead of a TRACE file\n"
          "  --skip-bad    skip malformed trace lines (with a warning) instead of failing\n"
          "  --json        machine-readable output (one JSON document on stdout)\n"
          "  --help        this help, or a command's\n\n"
          "Exit codes: 0 ok (audit: nothing found), 1 audit findings, 2 usage error,\n"
          "3 unreadable or malformed trace, 4 unknown event id, 5 output or runtime error.\n"
          "Formats and protocol: docs/CLOCKD.md.\n", f);
}

static int usage_cmd(const char *cmd, FILE *f)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(commands[i].name, cmd) == 0) {
            fprintf(f, "usage: causeway-clockd %s%s\n\n%s", commands[i].usage,
                    strcmp(cmd, "serve") ? " [--db FILE] [--skip-bad] [--json]" : "", commands[i].text);
            return 0;
        }
    }
    return -1;
}

/* ---- arguments ------------------------------------------------------------------ */

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || s[0] == '-')
        return -1;
    *out = (size_t) v;
    return 0;
}

static int parse_args(int argc, char **argv, opts_t *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *next = i + 1 < argc ? argv[i + 1] : NULL;
#define NEED_VALUE()                                                            \
    do {                                                                        \
        if (!next)                                                              \
            return fail(EXIT_USAGE, "%s needs a value (see --help)", a);      \
        i++;                                                                    \
    } while (0)
        if (strcmp(a, "--json") == 0) {
            o->json = g_json = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            o->help = 1;
        } else if (strcmp(a, "--skip-bad") == 0) {
            o->skip_bad = 1;
        } else if (strcmp(a, "--html") == 0) {
            o->html = 1;
        } else if (strcmp(a, "--db") == 0) {
            NEED_VALUE();
            o->db = next;
        } else if (strcmp(a, "--insecure") == 0) {
            o->insecure = 1;
        } else if (strcmp(a, "--curve-secret") == 0) {
            NEED_VALUE();
            o->curve_secret = next;
        } else if (strcmp(a, "--users") == 0) {
            NEED_VALUE();
            o->users = next;
        } else if (strcmp(a, "--bind") == 0) {
            NEED_VALUE();
            o->bind = next;
        } else if (strcmp(a, "--focus") == 0) {
            NEED_VALUE();
            o->focus = next;
        } else if (strcmp(a, "--title") == 0) {
            NEED_VALUE();
            o->title = next;
        } else if (strcmp(a, "--log-level") == 0) {
            NEED_VALUE();
            o->log_level = next;
            if (cw_log_level_parse(next) < 0)
                return fail(EXIT_USAGE, "--log-level: unknown level \"%s\"", next);
        } else if (strcmp(a, "--log-format") == 0) {
            NEED_VALUE();
            o->log_format = next;
            if (cw_log_format_parse(next) < 0)
                return fail(EXIT_USAGE, "--log-format: expected text or json, not \"%s\"", next);
        } else if (strcmp(a, "--max-frame") == 0) {
            NEED_VALUE();
            if (parse_size(next, &o->max_frame) < 0 || o->max_frame < 1024)
                return fail(EXIT_USAGE, "--max-frame: expected a number of bytes >= 1024");
        } else if (strcmp(a, "--exact-limit") == 0) {
            NEED_VALUE();
            if (parse_size(next, &o->exact_limit) < 0)
                return fail(EXIT_USAGE, "--exact-limit: expected a number of events");
            o->has_exact_limit = 1;
        } else if (strcmp(a, "--pairs-limit") == 0) {
            NEED_VALUE();
            if (parse_size(next, &o->pairs_limit) < 0)
                return fail(EXIT_USAGE, "--pairs-limit: expected a number of events");
            o->has_pairs_limit = 1;
        } else if (a[0] == '-' && a[1] == '-') {
            return fail(EXIT_USAGE, "unknown option %s (see --help)", a);
        } else if (!o->cmd) {
            o->cmd = a;
        } else if (o->npos < 4) {
            o->pos[o->npos++] = a;
        } else {
            return fail(EXIT_USAGE, "too many arguments (see --help)");
        }
#undef NEED_VALUE
    }
    return 0;
}

/* ---- loading -------------------------------------------------------------------- */

static void warn_line(void *ctx, const char *msg)
{
    (void) ctx;
    fprintf(stderr, "causeway-clockd: warning: skipped %s\n", msg);
}

/* True if the file starts like a ShiViz log written by export-shiviz. */
static int looks_like_shiviz(const char *path)
{
    if (strcmp(path, "-") == 0)
        return 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char head[4] = "";
    size_t n = fread(head, 1, 3, f);
    fclose(f);
    return n == 3 && memcmp(head, "(?<", 3) == 0;
}

/* Loads the trace the command names: --db or the first positional. On
 * success *consumed is how many positionals that took (0 or 1). */
static int load_trace(const opts_t *o, cw_trace_t **out, int *consumed)
{
    char err[1200];
    cw_trace_t *t = cw_trace_new();
    if (!t)
        return fail(EXIT_RUNTIME, "out of memory");
    int rc;
    if (o->db) {
        *consumed = 0;
        int st;
        cw_evstore_t *s = cw_evstore_open(o->db, CW_EVSTORE_READONLY, &st, err, sizeof err);
        if (!s) {
            cw_trace_destroy(&t);
            return fail(st == CW_ERR_NOMEM ? EXIT_RUNTIME : EXIT_INPUT, "%s", err);
        }
        uint64_t last = 0;
        rc = cw_evstore_load(s, t, &last, err, sizeof err);
        cw_evstore_close(&s);
    } else {
        if (o->npos < 1) {
            cw_trace_destroy(&t);
            return fail(EXIT_USAGE, "%s: missing TRACE (a file, - or --db FILE; see --help)", o->cmd);
        }
        *consumed = 1;
        if (looks_like_shiviz(o->pos[0]))
            rc = cw_shiviz_load(t, o->pos[0], err, sizeof err);
        else
            rc = cw_trace_load_file(t, o->pos[0], o->skip_bad ? CW_TRACE_SKIP_BAD : 0, warn_line, NULL,
                                    err, sizeof err);
    }
    if (rc != CW_OK) {
        cw_trace_destroy(&t);
        return fail(rc == CW_ERR_NOMEM ? EXIT_RUNTIME : EXIT_INPUT, "%s", err);
    }
    *out = t;
    return EXIT_OK;
}

static int find_event(const cw_trace_t *t, const char *id, size_t *index)
{
    char err[400];
    int rc = cw_trace_find(t, id, index, err, sizeof err);
    if (rc == CW_OK)
        return EXIT_OK;
    return fail(rc == CW_BAD_REQUEST ? EXIT_USAGE : EXIT_NO_EVENT, "%s", err);
}

/* ---- printing ------------------------------------------------------------------- */

/* {"id":"alice:1","process":...} : the event's trace line with its id. */
static void put_event_json(FILE *f, const cwc_event_t *e)
{
    char id[CW_EVENT_ID_MAX];
    char *line = cw_event_to_json(e);
    fputs("{\"id\":", f);
    cw_json_put_string(f, cw_event_id(e, id, sizeof id));
    if (line) {
        fprintf(f, ",%s", line + 1);
        free(line);
    } else {
        fputc('}', f);
    }
}

static void put_ref_json(FILE *f, const cwc_event_t *e)
{
    char id[CW_EVENT_ID_MAX];
    fputs("{\"id\":", f);
    cw_json_put_string(f, cw_event_id(e, id, sizeof id));
    fputs(",\"clock\":", f);
    cw_trace_clock_put_json(f, e->trace, &e->vc);
    fputc('}', f);
}

/* Writes untrusted text on the event's line (cw_render.h, one-line form:
 * LF, CR, TAB as \n, \r, \t; controls, escapes, C1 and bidi controls made
 * visible; invalid UTF-8 as U+FFFD). */
static void put_human(FILE *f, const char *s)
{
    char *r = cw_render_text(s, strlen(s), 0, 0, NULL, CW_RENDER_ONELINE);
    fputs(r ? r : "(out of memory)", f);
    free(r);
}

static void put_event_text(FILE *f, const cwc_event_t *e)
{
    char id[CW_EVENT_ID_MAX], clock[512], peers[256] = "";
    size_t off = 0;
    if (e->broadcast)
        snprintf(peers, sizeof peers, "to everyone");
    for (size_t k = 0; k < e->n_peers && off < sizeof peers; k++) {
        int w = snprintf(peers + off, sizeof peers - off, "%s%s", k ? "," : e->kind == CW_EV_SEND ? "to " : "from ",
                         e->peers[k]);
        if (w < 0)
            break;
        off += (size_t) w;
    }
    /* The message key is the trace writer's too: rendered like the text. */
    char *msg = *e->msg ? cw_render_text(e->msg, strlen(e->msg), 0, 0, NULL, CW_RENDER_ONELINE) : NULL;
    fprintf(f, "%-14s %-7s %-14s %-16s %s", cw_event_id(e, id, sizeof id), cw_ev_kind_name(e->kind),
            msg ? msg : *e->msg ? "(out of memory)" : "-", *peers ? peers : "-",
            cw_trace_clock_format(e->trace, &e->vc, clock, sizeof clock));
    free(msg);
    if (e->text) {
        fputs("  ", f);
        put_human(f, e->text);
    }
    fputc('\n', f);
}

static int flush_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        return fail(EXIT_RUNTIME, "writing to stdout: %s", strerror(errno));
    return EXIT_OK;
}

/* ---- commands ------------------------------------------------------------------- */

static int cmd_events(const opts_t *o, const cw_trace_t *t, int used)
{
    if (o->npos != used)
        return fail(EXIT_USAGE, "events: too many arguments");
    size_t n = cw_trace_count(t);
    if (o->json) {
        printf("{\"count\":%zu,\"processes\":[", n);
        for (size_t p = 0; p < cw_trace_processes(t); p++) {
            fputs(p ? "," : "", stdout);
            cw_json_put_string(stdout, cw_trace_process_name(t, p));
        }
        fputs("],\"events\":[", stdout);
        for (size_t i = 0; i < n; i++) {
            fputs(i ? ",\n" : "\n", stdout);
            put_event_json(stdout, cw_trace_event(t, i));
        }
        fputs("]}\n", stdout);
    } else {
        for (size_t i = 0; i < n; i++)
            put_event_text(stdout, cw_trace_event(t, i));
        printf("%zu events, %zu processes\n", n, cw_trace_processes(t));
    }
    return flush_stdout();
}

static int cmd_compare(const opts_t *o, cw_causal_t *c, int used)
{
    const cw_trace_t *t = cw_causal_trace(c);
    if (o->npos != used + 2)
        return fail(EXIT_USAGE, "compare: expected two event ids (compare TRACE A B)");
    size_t a, b;
    int rc;
    if ((rc = find_event(t, o->pos[used], &a)) != EXIT_OK || (rc = find_event(t, o->pos[used + 1], &b)) != EXIT_OK)
        return rc;
    cw_clock_order_t ord = cw_causal_compare(c, a, b);
    const cwc_event_t *ea = cw_trace_event(t, a), *eb = cw_trace_event(t, b);
    if (o->json) {
        fputs("{\"a\":", stdout);
        put_ref_json(stdout, ea);
        fputs(",\"b\":", stdout);
        put_ref_json(stdout, eb);
        printf(",\"order\":\"%s\"}\n", cw_clock_order_name(ord));
    } else {
        char ia[CW_EVENT_ID_MAX], ib[CW_EVENT_ID_MAX], ca[512], cb[512];
        const char *verb = ord == CW_CLOCK_BEFORE ? "happened before"
                         : ord == CW_CLOCK_AFTER ? "happened after"
                         : ord == CW_CLOCK_CONCURRENT ? "is concurrent with" : "has the same clock as";
        printf("%s %s %s %s %s\n", cw_event_id(ea, ia, sizeof ia), cw_trace_clock_format(ea->trace, &ea->vc, ca, sizeof ca),
               verb, cw_event_id(eb, ib, sizeof ib), cw_trace_clock_format(eb->trace, &eb->vc, cb, sizeof cb));
    }
    return flush_stdout();
}

static int cmd_related(const opts_t *o, cw_causal_t *c, int used, cw_relation_t rel)
{
    const cw_trace_t *t = cw_causal_trace(c);
    if (o->npos != used + 1)
        return fail(EXIT_USAGE, "%s: expected one event id (%s TRACE E)", o->cmd, o->cmd);
    size_t e;
    int rc = find_event(t, o->pos[used], &e);
    if (rc != EXIT_OK)
        return rc;
    size_t *list, n;
    if (cw_causal_related(c, e, rel, &list, &n) != CW_OK)
        return fail(EXIT_RUNTIME, "out of memory");
    const cwc_event_t *ev = cw_trace_event(t, e);
    if (o->json) {
        fputs("{\"event\":", stdout);
        put_event_json(stdout, ev);
        printf(",\"relation\":\"%s\",\"count\":%zu,\"events\":[", o->cmd, n);
        for (size_t i = 0; i < n; i++) {
            fputs(i ? ",\n" : "\n", stdout);
            put_event_json(stdout, cw_trace_event(t, list[i]));
        }
        fputs("]}\n", stdout);
    } else {
        char id[CW_EVENT_ID_MAX], clock[512];
        const char *what = rel == CW_REL_PAST ? "causal past of" : rel == CW_REL_FUTURE ? "causal future of"
                                                                                     : "events concurrent with";
        printf("%s %s %s: %zu event%s\n", what, cw_event_id(ev, id, sizeof id),
               cw_trace_clock_format(ev->trace, &ev->vc, clock, sizeof clock), n, n == 1 ? "" : "s");
        for (size_t i = 0; i < n; i++)
            put_event_text(stdout, cw_trace_event(t, list[i]));
    }
    free(list);
    return flush_stdout();
}

static int cmd_audit(const opts_t *o, cw_causal_t *c, int used)
{
    const cw_trace_t *t = cw_causal_trace(c);
    if (o->npos != used)
        return fail(EXIT_USAGE, "audit: too many arguments");
    if (cw_causal_audit(c) != CW_OK)
        return fail(EXIT_RUNTIME, "out of memory");
    size_t n = cw_causal_findings(c);
    size_t late = cw_causal_late(c);   /* counted, not a finding (§13.14) */
    size_t per_kind[6] = {0};
    for (size_t i = 0; i < n; i++)
        per_kind[cw_causal_finding(c, i)->kind]++;
    if (o->json) {
        printf("{\"events\":%zu,\"processes\":%zu,\"count\":%zu,\"late\":%zu,\"by_kind\":{",
               cw_trace_count(t), cw_trace_processes(t), n, late);
        for (int k = 1; k <= 5; k++)
            printf("%s\"%s\":%zu", k > 1 ? "," : "", cw_finding_kind_name((cw_finding_kind_t) k), per_kind[k]);
        fputs("},\"findings\":[", stdout);
        for (size_t i = 0; i < n; i++) {
            const cw_finding_t *f = cw_causal_finding(c, i);
            fputs(i ? ",\n" : "\n", stdout);
            printf("{\"kind\":\"%s\",\"process\":", cw_finding_kind_name(f->kind));
            cw_json_put_string(stdout, cw_trace_process_name(t, f->process));
            fputs(",\"msg\":", stdout);
            cw_json_put_string(stdout, f->msg);
            fputs(",\"a\":", stdout);
            put_ref_json(stdout, cw_trace_event(t, f->a));
            fputs(",\"b\":", stdout);
            if (f->b != CW_NO_EVENT)
                put_ref_json(stdout, cw_trace_event(t, f->b));
            else
                fputs("null", stdout);
            fputs(",\"detail\":", stdout);
            cw_json_put_string(stdout, f->detail);
            fputc('}', stdout);
        }
        fputs("]}\n", stdout);
    } else {
        char ia[CW_EVENT_ID_MAX], ib[CW_EVENT_ID_MAX], ca[512], cb[512];
        for (size_t i = 0; i < n; i++) {
            const cw_finding_t *f = cw_causal_finding(c, i);
            const cwc_event_t *ea = cw_trace_event(t, f->a);
            printf("%-12s %s: %s %s", cw_finding_kind_name(f->kind), cw_trace_process_name(t, f->process),
                   cw_event_id(ea, ia, sizeof ia), cw_trace_clock_format(ea->trace, &ea->vc, ca, sizeof ca));
            if (f->b != CW_NO_EVENT) {
                const cwc_event_t *eb = cw_trace_event(t, f->b);
                printf(" / %s %s", cw_event_id(eb, ib, sizeof ib), cw_trace_clock_format(eb->trace, &eb->vc, cb, sizeof cb));
            }
            /* The detail quotes message keys from the trace: one line. */
            fputs("\n    ", stdout);
            put_human(stdout, f->detail);
            fputc('\n', stdout);
        }
        if (n) {
            printf("%zu finding%s:", n, n == 1 ? "" : "s");
            int first = 1;
            for (int k = 1; k <= 5; k++) {
                if (!per_kind[k])
                    continue;
                printf("%s %zu %s", first ? "" : ",", per_kind[k], cw_finding_kind_name((cw_finding_kind_t) k));
                first = 0;
            }
            printf(" (%zu events, %zu processes)\n", cw_trace_count(t), cw_trace_processes(t));
        } else {
            printf("no findings (%zu events, %zu processes)\n", cw_trace_count(t), cw_trace_processes(t));
        }
        if (late)
            printf("%zu late deliver%s (flagged by the receiving client)\n", late,
                   late == 1 ? "y" : "ies");
    }
    int rc = flush_stdout();
    return rc != EXIT_OK ? rc : n ? EXIT_FINDINGS : EXIT_OK;
}

static int cmd_stats(const opts_t *o, cw_causal_t *c, int used)
{
    if (o->npos != used)
        return fail(EXIT_USAGE, "stats: too many arguments");
    cw_stats_options_t so;
    cw_stats_options_init(&so);
    if (o->has_exact_limit)
        so.exact_width_max = o->exact_limit;
    if (o->has_pairs_limit)
        so.pairs_max = o->pairs_limit;
    const cwc_stats_t *s;
    if (cw_causal_stats(c, &so, &s) != CW_OK)
        return fail(EXIT_RUNTIME, "out of memory");
    const cw_trace_t *t = cw_causal_trace(c);
    char id[CW_EVENT_ID_MAX];
    if (o->json) {
        printf("{\"events\":%zu,\"processes\":%zu,\"sends\":%zu,\"delivers\":%zu,\"locals\":%zu,"
               "\"messages\":%zu,\"messages_delivered\":%zu,\"deliveries_matched\":%zu,",
               s->events, s->processes, s->sends, s->delivers, s->locals, s->messages,
               s->messages_delivered, s->deliveries_matched);
        if (s->pairs_counted)
            printf("\"pairs\":{\"total\":%llu,\"ordered\":%llu,\"concurrent\":%llu,\"equal\":%llu},",
                   (unsigned long long) s->pairs, (unsigned long long) s->ordered_pairs,
                   (unsigned long long) s->concurrent_pairs, (unsigned long long) s->equal_pairs);
        else
            printf("\"pairs\":null,");
        printf("\"width\":{\"value\":%zu,\"exact\":%s,\"lower\":%zu,\"upper\":%zu,\"antichain\":[", s->width,
               s->width_exact ? "true" : "false", s->width_lower, s->width_upper);
        for (size_t k = 0; k < s->width_lower; k++) {
            fputs(k ? "," : "", stdout);
            cw_json_put_string(stdout, cw_event_id(cw_trace_event(t, s->antichain[k]), id, sizeof id));
        }
        printf("]},\"clock_size\":{\"min\":%zu,\"max\":%zu,\"mean\":%.3f,\"histogram\":{", s->clock_min,
               s->clock_max, s->clock_mean);
        int first = 1;
        for (size_t k = 0; s->events && k <= s->clock_max; k++) {
            if (!s->clock_hist[k])
                continue;
            printf("%s\"%zu\":%zu", first ? "" : ",", k, s->clock_hist[k]);
            first = 0;
        }
        fputs("}},\"holdback_us\":", stdout);
        if (s->holdback_n)
            printf("{\"count\":%zu,\"min\":%llu,\"max\":%llu,\"mean\":%.1f,\"p50\":%llu,\"p90\":%llu,"
                   "\"p99\":%llu}}\n", s->holdback_n, (unsigned long long) s->holdback_min,
                   (unsigned long long) s->holdback_max, s->holdback_mean, (unsigned long long) s->holdback_p50,
                   (unsigned long long) s->holdback_p90, (unsigned long long) s->holdback_p99);
        else
            fputs("null}\n", stdout);
    } else {
        printf("events:      %zu (send %zu, deliver %zu, local %zu) in %zu processes\n", s->events, s->sends,
               s->delivers, s->locals, s->processes);
        printf("messages:    %zu sent, %zu delivered at least once; %zu of %zu deliveries matched a send\n",
               s->messages, s->messages_delivered, s->deliveries_matched, s->delivers);
        if (s->pairs_counted)
            printf("pairs:       %llu: %llu ordered, %llu concurrent, %llu with equal clocks\n",
                   (unsigned long long) s->pairs, (unsigned long long) s->ordered_pairs,
                   (unsigned long long) s->concurrent_pairs, (unsigned long long) s->equal_pairs);
        else
            printf("pairs:       not counted (more than %zu events; see --pairs-limit)\n", so.pairs_max);
        if (s->width_exact)
            printf("width:       %zu (exact)", s->width);
        else
            printf("width:       between %zu and %zu (greedy bounds; exact up to --exact-limit %zu events)",
                   s->width_lower, s->width_upper, so.exact_width_max);
        if (s->width_lower) {
            fputs(", e.g.", stdout);
            for (size_t k = 0; k < s->width_lower && k < 12; k++)
                printf(" %s", cw_event_id(cw_trace_event(t, s->antichain[k]), id, sizeof id));
            if (s->width_lower > 12)
                fputs(" ...", stdout);
        }
        fputc('\n', stdout);
        printf("clock size:  min %zu, max %zu, mean %.2f entries;", s->clock_min, s->clock_max, s->clock_mean);
        for (size_t k = 0; s->events && k <= s->clock_max; k++)
            if (s->clock_hist[k])
                printf(" %zu:%zu", k, s->clock_hist[k]);
        fputc('\n', stdout);
        if (s->holdback_n)
            printf("hold-back:   %zu deliveries: min %llu us, p50 %llu, p90 %llu, p99 %llu, max %llu, mean %.1f\n",
                   s->holdback_n, (unsigned long long) s->holdback_min, (unsigned long long) s->holdback_p50,
                   (unsigned long long) s->holdback_p90, (unsigned long long) s->holdback_p99,
                   (unsigned long long) s->holdback_max, s->holdback_mean);
        else
            fputs("hold-back:   no delivery carries holdback_us\n", stdout);
    }
    return flush_stdout();
}

/* Writes through a temporary file renamed into place, or to stdout for "-". */
static int write_output(const char *path, int (*writer)(const cw_export_t *, FILE *), const cw_export_t *x)
{
    if (strcmp(path, "-") == 0) {
        if (writer(x, stdout) != CW_OK)
            return fail(EXIT_RUNTIME, "writing to stdout: %s", strerror(errno));
        return EXIT_OK;
    }
    size_t len = strlen(path) + 32;
    char *tmp = malloc(len);
    if (!tmp)
        return fail(EXIT_RUNTIME, "out of memory");
    snprintf(tmp, len, "%s.tmp.%ld", path, (long) getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int e = errno;
        free(tmp);
        return fail(EXIT_RUNTIME, "%s: %s", path, strerror(e));
    }
    int rc = writer(x, f);
    int e = errno;
    if (fclose(f) != 0 && rc == CW_OK) {
        rc = CW_ERR_IO;
        e = errno;
    }
    if (rc == CW_OK && rename(tmp, path) != 0) {
        rc = CW_ERR_IO;
        e = errno;
    }
    if (rc != CW_OK) {
        unlink(tmp);
        free(tmp);
        return fail(EXIT_RUNTIME, "%s: %s", path, strerror(e));
    }
    free(tmp);
    return EXIT_OK;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static int cmd_export(const opts_t *o, cw_causal_t *c, int used, int diagram)
{
    const cw_trace_t *t = cw_causal_trace(c);
    if (o->npos != used + 1)
        return fail(EXIT_USAGE, "%s: expected one output file (%s TRACE OUT)", o->cmd, o->cmd);
    const char *out = o->pos[used];
    cw_export_options_t eo;
    cw_export_options_init(&eo);
    if (o->title && !cw_utf8_valid(o->title, strlen(o->title)))
        return fail(EXIT_USAGE, "--title: not valid UTF-8");
    eo.title = o->title;
    if (o->focus) {
        if (!diagram)
            return fail(EXIT_USAGE, "--focus is for diagram");
        int rc = find_event(t, o->focus, &eo.focus);
        if (rc != EXIT_OK)
            return rc;
    }
    int st;
    cw_export_t *x = cw_export_new(c, &eo, &st);
    if (!x)
        return fail(EXIT_RUNTIME, "out of memory");
    int html = o->html || ends_with(out, ".html") || ends_with(out, ".htm");
    int rc = write_output(out, !diagram ? cw_export_shiviz : html ? cw_export_html : cw_export_svg, x);
    cw_export_destroy(&x);
    if (rc != EXIT_OK || strcmp(out, "-") == 0)
        return rc;
    const char *format = !diagram ? "shiviz" : html ? "html" : "svg";
    if (o->json) {
        fputs("{\"output\":", stdout);
        cw_json_put_string(stdout, out);
        printf(",\"format\":\"%s\",\"events\":%zu,\"processes\":%zu}\n", format, cw_trace_count(t),
               cw_trace_processes(t));
    } else {
        printf("wrote %s (%s): %zu events, %zu processes\n", out, format, cw_trace_count(t), cw_trace_processes(t));
    }
    return flush_stdout();
}

/* ---- serve ---------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop = 0;   /* set by SIGINT/SIGTERM */
static volatile sig_atomic_t g_reload = 0; /* set by SIGHUP */

static void on_sighup(int sig)
{
    (void) sig;
    g_reload = 1;
}

static void on_signal(int sig)
{
    (void) sig;
    g_stop = 1;
}

static int cmd_serve(const opts_t *o)
{
    if (o->npos)
        return fail(EXIT_USAGE, "serve: unexpected argument %s", o->pos[0]);
    cw_log_set_tag("clockd");
    cw_log_set_level(o->log_level ? (cw_log_level_t) cw_log_level_parse(o->log_level) : CW_LOG_INFO);
    if (o->log_format)
        cw_log_set_format((cw_log_format_t) cw_log_format_parse(o->log_format));
    cw_clockd_config_t cfg;
    cw_clockd_config_defaults(&cfg);
    if (o->bind)
        cfg.bind = o->bind;
    if (o->db)
        cfg.db = o->db;
    if (o->max_frame)
        cfg.max_frame = o->max_frame;
    if (!o->curve_secret != !o->users)
        return fail(EXIT_USAGE, "serve: CURVE needs both --curve-secret FILE and --users DIR");
    cfg.curve_secret = o->curve_secret;
    cfg.users = o->users;
    if (!o->curve_secret && !o->insecure && cw_endpoint_needs_curve(cfg.bind))
        return fail(EXIT_USAGE,
                    "serve: refusing to listen on %s without CURVE: anyone who can reach it "
                    "could report and read events. Use --curve-secret FILE --users DIR, a "
                    "loopback address (tcp://127.0.0.1:PORT), or accept this with --insecure "
                    "(docs/OPERATIONS.md, Security)", cfg.bind);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_sighup;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    char err[1200];
    cw_clockd_t *d = cw_clockd_new(&cfg, err, sizeof err);
    if (!d)
        return fail(EXIT_RUNTIME, "%s", err);
    cw_clockd_watch_reload(d, &g_reload);
    printf("listening %s\n", cw_clockd_endpoint(d));
    fflush(stdout);
    int rc = cw_clockd_run(d, &g_stop);
    cw_clockd_destroy(&d);
    return rc == 0 ? EXIT_OK : EXIT_RUNTIME;
}

/* ---- main ----------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    cw_render_locale(); /* texts are UTF-8: measure and print them as such */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            printf("causeway-clockd %s\n", CW_VERSION);
            return EXIT_OK;
        }
    opts_t o;
    int rc = parse_args(argc, argv, &o);
    if (rc != 0)
        return rc;
    if (!o.cmd) {
        usage_all(o.help ? stdout : stderr);
        return o.help ? EXIT_OK : EXIT_USAGE;
    }
    if (strcmp(o.cmd, "help") == 0) {
        if (o.npos == 0) {
            usage_all(stdout);
            return EXIT_OK;
        }
        if (usage_cmd(o.pos[0], stdout) < 0)
            return fail(EXIT_USAGE, "no command \"%s\" (see --help)", o.pos[0]);
        return EXIT_OK;
    }
    if (o.help) {
        if (usage_cmd(o.cmd, stdout) < 0)
            return fail(EXIT_USAGE, "no command \"%s\" (see --help)", o.cmd);
        return EXIT_OK;
    }
    if (strcmp(o.cmd, "serve") == 0)
        return cmd_serve(&o);

    cw_relation_t rel = 0;
    int which;
    if (strcmp(o.cmd, "events") == 0) which = 0;
    else if (strcmp(o.cmd, "compare") == 0) which = 1;
    else if (strcmp(o.cmd, "past") == 0) { which = 2; rel = CW_REL_PAST; }
    else if (strcmp(o.cmd, "future") == 0) { which = 2; rel = CW_REL_FUTURE; }
    else if (strcmp(o.cmd, "concurrent") == 0) { which = 2; rel = CW_REL_CONCURRENT; }
    else if (strcmp(o.cmd, "audit") == 0) which = 3;
    else if (strcmp(o.cmd, "stats") == 0) which = 4;
    else if (strcmp(o.cmd, "export-shiviz") == 0) which = 5;
    else if (strcmp(o.cmd, "diagram") == 0) which = 6;
    else
        return fail(EXIT_USAGE, "unknown command \"%s\" (see --help)", o.cmd);

    cw_log_set_level(o.log_level ? (cw_log_level_t) cw_log_level_parse(o.log_level) : CW_LOG_WARN);
    cw_trace_t *t = NULL;
    int used = 0;
    if ((rc = load_trace(&o, &t, &used)) != EXIT_OK)
        return rc;
    cw_causal_t *c = cw_causal_new(t);
    if (!c) {
        cw_trace_destroy(&t);
        return fail(EXIT_RUNTIME, "out of memory");
    }
    switch (which) {
    case 0: rc = cmd_events(&o, t, used); break;
    case 1: rc = cmd_compare(&o, c, used); break;
    case 2: rc = cmd_related(&o, c, used, rel); break;
    case 3: rc = cmd_audit(&o, c, used); break;
    case 4: rc = cmd_stats(&o, c, used); break;
    case 5: rc = cmd_export(&o, c, used, 0); break;
    default: rc = cmd_export(&o, c, used, 1); break;
    }
    cw_causal_destroy(&c);
    cw_trace_destroy(&t);
    return rc;
}
