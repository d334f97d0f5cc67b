/*  envelope_fuzz: cw_env_decode on arbitrary bytes.
 *
 *  Input: one frame, as a client would put it on the wire.
 *  Properties checked, beyond "no crash, no leak, no undefined behaviour":
 *    1. decode either succeeds with a version-1 envelope whose body is set,
 *       or fails with a wire status (TOO_LARGE, BAD_REQUEST,
 *       UNSUPPORTED_VERSION, UNKNOWN_TYPE), no envelope and a detail;
 *    2. the limit is honoured: a frame over max_frame is TOO_LARGE;
 *    3. round trip: what decodes re-encodes (cw_env_pack and cw_env_to_msg
 *       agree), the encoding decodes again to the same request id and body
 *       type, and re-encoding that gives the same bytes (encoding is a
 *       fixed point after one round);
 *    4. the helpers the broker runs on every decoded envelope (body name,
 *       clock validation and formatting, name checks of the strings the
 *       broker looks at) accept anything that decodes;
 *    5. the encoding rules (PROTOCOL.md §5 step 3b): every string the
 *       broker relays of what decodes is valid UTF-8, and the re-encoding
 *       passes cw_wire_check (nothing a standard decoder refuses is ever
 *       forwarded).
 *  Single-threaded, no state across inputs.
 */
#include "fuzz.h"

#include "cw_clock.h"
#include "cw_envelope.h"
#include "cw_status.h"
#include "cw_util.h"

#include <string.h>
#include <zmq.h>

#define MAX_FRAME 65536  /* the broker's default frame limit */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    return 0;
}

/* The checks the broker makes on the strings of a request. Their answers do
 * not matter here; that they read only what they are given does. */
static void exercise_strings(const cw_env_t *env)
{
    const char *why = NULL;
    char buf[256];
    cw_clock_entries_valid(env->clock, env->n_clock);
    cw_clock_format(env->clock, env->n_clock, buf, sizeof buf);
    cw_clock_format(env->clock, env->n_clock, buf, 8); /* truncation path */
    switch (env->body_case) {
    case CW_BODY(LOGIN):
        cw_name_check(env->login->name, 32, &why);
        cw_name_check(env->login->name, CW_NAME_MAX_HARD, &why);
        FUZZ_CHECK(cw_utf8_valid(env->login->agent, strlen(env->login->agent)),
                   "Login.agent decoded though not UTF-8");
        break;
    case CW_BODY(SEND):
        for (size_t i = 0; i < env->send->n_to; i++) {
            FUZZ_CHECK(cw_utf8_valid(env->send->to[i], strlen(env->send->to[i])),
                       "Send.to decoded though not UTF-8");
            cw_name_check(env->send->to[i], CW_NAME_MAX_HARD, &why);
        }
        FUZZ_CHECK(cw_utf8_valid(env->send->text, strlen(env->send->text)),
                   "Send.text decoded though not UTF-8");
        FUZZ_CHECK(cw_utf8_valid(env->send->message_id, strlen(env->send->message_id)),
                   "Send.message_id decoded though not UTF-8");
        break;
    default:
        break;
    }
    if (cw_clock_entries_valid(env->clock, env->n_clock)) {
        cw_clock_t *c = cw_clock_new();
        FUZZ_CHECK(c, "out of memory");
        if (cw_clock_merge(c, env->clock, env->n_clock) == CW_OK) {
            cw_clock_entry_msg_t **e = NULL;
            size_t n = cw_clock_entries(c, &e);
            FUZZ_CHECK(cw_clock_compare(e, n, env->clock, env->n_clock) == CW_CLOCK_EQUAL,
                       "a clock merged into an empty one differs from it");
        }
        cw_clock_destroy(&c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cw_env_t *env = NULL;
    uint64_t rid = 1234;
    const char *detail = NULL;
    int rc = cw_env_decode(data, size, MAX_FRAME, &env, &rid, &detail);
    if (size > MAX_FRAME)
        FUZZ_CHECK(rc == CW_TOO_LARGE, "%zu-byte frame gave %s", size, cw_status_name(rc));
    if (rc != CW_OK) {
        FUZZ_CHECK(rc == CW_TOO_LARGE || rc == CW_BAD_REQUEST || rc == CW_UNSUPPORTED_VERSION ||
                       rc == CW_UNKNOWN_TYPE,
                   "unexpected status %d", rc);
        FUZZ_CHECK(env == NULL, "an envelope came with status %s", cw_status_name(rc));
        FUZZ_CHECK(detail && *detail, "no detail with %s", cw_status_name(rc));
        return 0;
    }
    FUZZ_CHECK(env && env->version == CW_PROTOCOL_VERSION, "decoded a bad version");
    FUZZ_CHECK(env->body_case != CW_BODY(_NOT_SET), "decoded an envelope without a body");
    FUZZ_CHECK(rid == env->request_id, "request id not reported");
    FUZZ_CHECK(strcmp(cw_env_body_name(env), "none") != 0, "body %d has no name",
               (int) env->body_case);
    exercise_strings(env);

    uint8_t *buf1 = NULL, *buf2 = NULL;
    size_t len1 = 0, len2 = 0;
    FUZZ_CHECK(cw_env_pack(env, &buf1, &len1) == CW_OK, "out of memory");
    zmq_msg_t msg;
    FUZZ_CHECK(cw_env_to_msg(env, &msg) == CW_OK, "out of memory");
    FUZZ_CHECK(zmq_msg_size(&msg) == len1 && memcmp(zmq_msg_data(&msg), buf1, len1) == 0,
               "cw_env_to_msg and cw_env_pack disagree");
    zmq_msg_close(&msg);
    FUZZ_CHECK(cw_wire_check(&causeway__v1__envelope__descriptor, buf1, len1, &detail) == CW_OK,
               "the re-encoding breaks the encoding rules: %s", detail);

    /* Unknown fields are kept and re-encoded, so a re-encoding can be
     * larger than the limit only if the input was near it. */
    cw_env_t *again = NULL;
    rc = cw_env_decode(buf1, len1, SIZE_MAX, &again, NULL, &detail);
    FUZZ_CHECK(rc == CW_OK, "re-encoded envelope does not decode: %s (%s)", cw_status_name(rc),
               detail);
    FUZZ_CHECK(again->request_id == env->request_id, "request id changed in a round trip");
    FUZZ_CHECK(again->body_case == env->body_case, "body changed in a round trip");
    FUZZ_CHECK(again->n_clock == env->n_clock, "clock changed in a round trip");
    FUZZ_CHECK(cw_env_pack(again, &buf2, &len2) == CW_OK, "out of memory");
    FUZZ_CHECK(len1 == len2 && memcmp(buf1, buf2, len1) == 0,
               "encoding is not stable: %zu then %zu bytes", len1, len2);
    free(buf1);
    free(buf2);
    cw_env_free(&again);
    cw_env_free(&env);
    FUZZ_CHECK(env == NULL, "cw_env_free did not NULL the pointer");
    return 0;
}
