/*  resume_probe: a new process that takes over a live session with
 *  libcauseway (cw_client_login_resume) and prints what it is shown.
 *
 *  Used by tests/e2e/test_durable_replies.py (issue 11 item 3): a client
 *  that resumes with a token has shown nothing yet, so stored messages the
 *  broker pushes again must not wait for entries acknowledged by the
 *  process before it.
 *
 *      resume_probe ENDPOINT NAME TOKEN_HEX COUNT TIMEOUT_MS
 *
 *  Prints the login reply's detail, then one line "seq SEQ TEXT" per
 *  delivery shown, until COUNT were shown (exit 0) or TIMEOUT_MS passed
 *  (exit 1). Exit 2 on bad arguments or a refused login. Single-threaded;
 *  auto_ack off, so it acknowledges nothing.
 */
#include "causeway.h"
#include "cw_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: resume_probe ENDPOINT NAME TOKEN_HEX COUNT TIMEOUT_MS\n");
        return 2;
    }
    uint8_t token[64];
    size_t len = strlen(argv[3]) / 2;
    if (len > sizeof token || strlen(argv[3]) % 2)
        return 2;
    for (size_t i = 0; i < len; i++) {
        int hi = hex_value(argv[3][2 * i]), lo = hex_value(argv[3][2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 2;
        token[i] = (uint8_t) (hi << 4 | lo);
    }
    long count = strtol(argv[4], NULL, 10), timeout_ms = strtol(argv[5], NULL, 10);
    cw_client_opts_t opts = {0};
    opts.agent = "resume_probe";
    cw_client_t *c = cw_client_new(argv[1], &opts);
    if (!c)
        return 2;
    cw_reply_t *reply = NULL;
    cw_status_t st = cw_client_login_resume(c, argv[2], token, len, 5000, &reply);
    printf("login %s %s\n", cw_status_name(st), reply && reply->detail ? reply->detail : "");
    cw_reply_destroy(&reply);
    if (st != CW_OK) {
        cw_client_destroy(&c);
        return 2;
    }
    int64_t deadline = cw_mono_ms() + timeout_ms;
    long shown = 0;
    while (shown < count) {
        int64_t left = deadline - cw_mono_ms();
        if (left <= 0)
            break;
        cw_event_t *ev = NULL;
        if (cw_client_next_event(c, (int) left, &ev) == CW_OK && ev) {
            if (ev->type == CW_EVENT_DELIVER) {
                printf("seq %llu %s\n", (unsigned long long) ev->msg.seq, ev->msg.text);
                shown++;
            }
            cw_event_destroy(&ev);
        }
        fflush(stdout);
    }
    cw_client_destroy(&c);
    return shown == count ? 0 : 1;
}
