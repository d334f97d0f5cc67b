/*  causeway-broker: command-line entry point. Parses flags and config,
 *  installs the signal handlers, prints the bound endpoint on stdout, and
 *  runs the router on the main thread.
 *
 *  Signals (docs/OPERATIONS.md, "Signals"):
 *    SIGINT, SIGTERM  clean shutdown.
 *    SIGUSR1          re-read the CURVE users directory (--users); ignored
 *                     without it.
 *    SIGHUP           the same reload when the broker runs with --users AND
 *                     its stdin is not a terminal (a service, a daemon, nohup,
 *                     `</dev/null`); otherwise a clean shutdown like SIGTERM:
 *                     a broker started in a terminal stops when the terminal
 *                     closes (the hangup) instead of holding its port. Decided
 *                     once at start.
 */
#include "broker.h"
#include "broker_config.h"
#include "cw_log.h"
#include "metrics.h"

#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t g_stop = 0;    /* set by SIGINT/SIGTERM */
static volatile sig_atomic_t g_reload = 0;  /* set by SIGUSR1 (and SIGHUP, see above) */
static volatile sig_atomic_t g_hup_reloads = 0; /* SIGHUP reloads instead of stopping */

static void on_signal(int sig)
{
    if (sig == SIGUSR1 || (sig == SIGHUP && g_hup_reloads))
        g_reload = 1;
    else
        g_stop = 1;
}

int main(int argc, char **argv)
{
    cw_broker_config_t cfg;
    cw_broker_config_defaults(&cfg);
    char err[1024] = "";
    int rc = cw_broker_config_parse_args(&cfg, argc, argv, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc < 0 || cw_broker_config_check(&cfg, err, sizeof err) != 0) {
        fprintf(stderr, "causeway-broker: %s\n", err);
        return 2;
    }
    cw_log_set_tag("broker");
    cw_log_set_level((cw_log_level_t) cfg.log_level);
    cw_log_set_format((cw_log_format_t) cw_log_format_parse(cfg.log_format));

    /* CZMQ would install its own handlers on first use; we own signals. */
    zsys_handler_set(NULL);
    g_hup_reloads = cfg.users[0] && !isatty(STDIN_FILENO);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    cw_broker_t *broker = cw_broker_new(&cfg, err, sizeof err);
    if (!broker) {
        fprintf(stderr, "causeway-broker: %s\n", err);
        return 1;
    }
    cw_broker_watch_reload(broker, &g_reload);
    cw_metrics_http_t *metrics = NULL;
    if (cfg.metrics[0]) {
        char host[256];
        unsigned port = 0;
        if (cw_metrics_addr_parse(cfg.metrics, host, sizeof host, &port, err, sizeof err) != 0 ||
            !(metrics = cw_metrics_http_new(host, port, cw_broker_monitor(broker), err,
                                            sizeof err))) {
            fprintf(stderr, "causeway-broker: %s\n", err);
            cw_broker_destroy(&broker);
            return 1;
        }
    }
    if (cfg.users[0])
        CW_INFO("SIGUSR1 re-reads %s; SIGHUP %s", cfg.users,
                g_hup_reloads ? "too (stdin is not a terminal)"
                              : "stops the broker (stdin is a terminal)");
    printf("listening %s\n", cw_broker_endpoint(broker));
    if (metrics) {
        printf("metrics %s\n", cw_metrics_http_url(metrics));
        cw_log_event(CW_LOG_INFO, "metrics endpoint up", "url", cw_metrics_http_url(metrics),
                     NULL);
    }
    fflush(stdout);
    rc = cw_broker_run(broker, &g_stop);
    cw_metrics_http_destroy(&metrics); /* before the monitor it reads goes */
    cw_broker_destroy(&broker);
    CW_INFO("stopped");
    return rc == 0 ? 0 : 1;
}
