/*  failover_probe: a libcauseway client for tests/e2e/test_failover.py,
 *  given a comma-separated endpoint list, that prints one JSON line per
 *  outcome so the test can count exactly what the application saw.
 *
 *      failover_probe send ENDPOINTS NAME TO COUNT TIMEOUT_MS
 *          logs in, sends COUNT durable messages to TO one at a time (ids
 *          NAME-0 .. NAME-<COUNT-1>, text "m<i>"), each waiting at most
 *          TIMEOUT_MS, and prints per send
 *          {"send":I,"status":"ACCEPTED","duplicate":false,"seq":N}
 *      failover_probe recv ENDPOINTS NAME COUNT TIMEOUT_MS
 *          logs in with auto_ack and prints per delivery
 *          {"deliver":"ID","from":"F","seq":N,"late":false} until COUNT
 *          were shown or TIMEOUT_MS passed since the last one
 *
 *  Both print {"login":"DETAIL","endpoint":"E"} after the login, and
 *  {"event":"disconnected"|"reconnected","ts_us":T,"endpoint":"E","resumed":B,
 *  "switched":B,"detail":"D"} for connection events (T: when it was read,
 *  wall clock µs), then {"done":true}
 *  (exit 0) or {"done":false} (exit 1 on a timeout). Exit 2 on bad
 *  arguments or a refused login. The first line is {"pid":P}.
 *  $CAUSEWAY_LOG_LEVEL (e.g. debug) sets the library's log level (stderr).
 */
#include "causeway.h"
#include "cw_log.h"
#include "cw_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void print_event(const cw_event_t *ev)
{
    if (ev->type != CW_EVENT_DISCONNECTED && ev->type != CW_EVENT_RECONNECTED)
        return;
    printf("{\"event\":\"%s\",\"ts_us\":%llu,\"endpoint\":\"%s\",\"resumed\":%s,"
           "\"switched\":%s,\"detail\":\"%s\"}\n",
           ev->type == CW_EVENT_DISCONNECTED ? "disconnected" : "reconnected",
           (unsigned long long) cw_now_us(),
           ev->failover.endpoint ? ev->failover.endpoint : "",
           ev->failover.resumed ? "true" : "false", ev->failover.switched ? "true" : "false",
           ev->conn.detail ? ev->conn.detail : "");
    fflush(stdout);
}

/* Connection events queued meanwhile (deliveries are not expected). */
static void drain_events(cw_client_t *c)
{
    cw_event_t *ev;
    while (cw_client_next_event(c, 0, &ev) == CW_OK) {
        print_event(ev);
        cw_event_destroy(&ev);
    }
}

int main(int argc, char **argv)
{
    int send_mode = argc == 7 && strcmp(argv[1], "send") == 0;
    int recv_mode = argc == 6 && strcmp(argv[1], "recv") == 0;
    if (!send_mode && !recv_mode) {
        fprintf(stderr, "usage: failover_probe send ENDPOINTS NAME TO COUNT TIMEOUT_MS\n"
                        "       failover_probe recv ENDPOINTS NAME COUNT TIMEOUT_MS\n");
        return 2;
    }
    const char *name = argv[3];
    long count = strtol(argv[send_mode ? 5 : 4], NULL, 10);
    int timeout_ms = (int) strtol(argv[send_mode ? 6 : 5], NULL, 10);
    const char *level = getenv("CAUSEWAY_LOG_LEVEL");   /* the library's log, on stderr */
    if (level && cw_log_level_parse(level) >= 0)
        cw_log_set_level((cw_log_level_t) cw_log_level_parse(level));
    printf("{\"pid\":%ld}\n", (long) getpid());
    fflush(stdout);
    cw_client_opts_t opts = {0};
    opts.agent = "failover_probe";
    opts.auto_ack = recv_mode;
    cw_client_t *c = cw_client_new(argv[2], &opts);
    if (!c) {
        perror("failover_probe: cw_client_new");
        return 2;
    }
    cw_reply_t *reply = NULL;
    cw_status_t st = cw_client_login(c, name, 10000, &reply);
    if (st != CW_OK) {
        fprintf(stderr, "failover_probe: login: %s\n", cw_status_name(st));
        cw_reply_destroy(&reply);
        cw_client_destroy(&c);
        return 2;
    }
    printf("{\"login\":\"%s\",\"endpoint\":\"%s\"}\n", reply->detail, cw_client_endpoint(c));
    fflush(stdout);
    cw_reply_destroy(&reply);

    int ok = 1;
    if (send_mode) {
        const char *to[] = {argv[4]};
        for (long i = 0; i < count; i++) {
            char id[64], text[32];
            snprintf(id, sizeof id, "%s-%ld", name, i);
            snprintf(text, sizeof text, "m%ld", i);
            cw_send_t m = {.to = to, .n_to = 1, .text = text, .durable = 1, .message_id = id};
            st = cw_client_send(c, &m, timeout_ms, &reply);
            drain_events(c);
            printf("{\"send\":%ld,\"status\":\"%s\",\"duplicate\":%s,\"seq\":%llu}\n", i,
                   cw_status_name(st), reply && reply->duplicate ? "true" : "false",
                   reply && reply->n_recipients ? (unsigned long long) reply->recipients[0].seq
                                                : 0ULL);
            fflush(stdout);
            cw_reply_destroy(&reply);
            if (st != CW_ACCEPTED) {
                ok = 0;
                break;
            }
        }
    } else {
        long shown = 0;
        while (shown < count) {
            cw_event_t *ev;
            if (cw_client_next_event(c, timeout_ms, &ev) != CW_OK) {
                ok = 0;
                break;
            }
            if (ev->type == CW_EVENT_DELIVER) {
                printf("{\"deliver\":\"%s\",\"from\":\"%s\",\"seq\":%llu,\"late\":%s}\n",
                       ev->msg.message_id, ev->msg.from, (unsigned long long) ev->msg.seq,
                       ev->msg.late ? "true" : "false");
                fflush(stdout);
                shown++;
            } else {
                print_event(ev);
            }
            cw_event_destroy(&ev);
        }
        cw_client_ack_flush(c, 5000);
    }
    printf("{\"done\":%s}\n", ok ? "true" : "false");
    fflush(stdout);
    cw_client_logout(c, 2000);
    cw_client_destroy(&c);
    return ok ? 0 : 1;
}
