/*  causeway-broker: command-line entry point. Parses flags and config,
 *  installs SIGINT/SIGTERM handlers that ask the router to stop (and SIGHUP,
 *  which asks it to re-read the CURVE users directory), prints the
 *  bound endpoint on stdout, and runs the router on the main thread. */
#include "broker.h"
#include "broker_config.h"
#include "cw_log.h"
#include "metrics.h"

#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t g_stop = 0;    /* set by SIGINT/SIGTERM */
static volatile sig_atomic_t g_reload = 0;  /* set by SIGHUP */

static void on_signal(int sig)
{
    if (sig == SIGHUP)
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

    /* CZMQ would install its own handlers on first use; we own signals. */
    zsys_handler_set(NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
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
    printf("listening %s\n", cw_broker_endpoint(broker));
    if (metrics) {
        printf("metrics %s\n", cw_metrics_http_url(metrics));
        CW_INFO("metrics on %s", cw_metrics_http_url(metrics));
    }
    fflush(stdout);
    rc = cw_broker_run(broker, &g_stop);
    cw_metrics_http_destroy(&metrics); /* before the monitor it reads goes */
    cw_broker_destroy(&broker);
    CW_INFO("stopped");
    return rc == 0 ? 0 : 1;
}
