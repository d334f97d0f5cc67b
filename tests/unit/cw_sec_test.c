/*  cw_sec_test: unit tests for common/cw_sec.c.
 *
 *  The endpoint classifier behind "secure by default" (loopback, ipc and
 *  inproc are local; wildcards, interface names, routable addresses, other
 *  transports and junk are not); certificate files (generate, load, the
 *  secret/public mismatch, no overwrite); the users directory (user
 *  metadata required, one key for two users refused, reload keeps the old
 *  table on error); and the ZAP handler in process: a registered key gets
 *  through with its key as User-Id, an unregistered one never does.
 *  Files live in a fresh directory under /tmp; waits are bounded.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "cw_sec.h"
#include "cw_util.h"

static void test_local_endpoints(void **state)
{
    (void) state;
    const char *local[] = {
        "tcp://127.0.0.1:7400", "tcp://127.0.0.1:*", "tcp://127.1.2.3:1", "tcp://localhost:7400",
        "tcp://[::1]:7400", "tcp://[::ffff:127.0.0.1]:7400", "ipc:///tmp/cw.sock",
        "inproc://x",
    };
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
        if (!cw_endpoint_is_local(local[i]))
            fail_msg("%s should be local", local[i]);
}

static void test_needs_curve(void **state)
{
    (void) state;
    assert_true(cw_endpoint_needs_curve("tcp://*:7400"));
    assert_true(cw_endpoint_needs_curve("tcp://lo:7400"));
    assert_true(cw_endpoint_needs_curve("tcp://"));
    assert_true(cw_endpoint_needs_curve("ws://127.0.0.1:7400"));
    assert_true(cw_endpoint_needs_curve("epgm://eth0;239.192.1.1:5555"));
    assert_true(cw_endpoint_needs_curve("udp://0.0.0.0:7400"));
    assert_false(cw_endpoint_needs_curve("tcp://127.0.0.1:7400"));
    assert_false(cw_endpoint_needs_curve("ipc:///tmp/x"));
    assert_false(cw_endpoint_needs_curve("inproc://x"));
    assert_false(cw_endpoint_needs_curve("nonsense://x")); /* the bind fails instead */
    assert_false(cw_endpoint_needs_curve(NULL));
}

static void test_non_local_endpoints(void **state)
{
    (void) state;
    const char *remote[] = {
        "tcp://*:7400", "tcp://0.0.0.0:7400", "tcp://[::]:7400", "tcp://[::ffff:10.0.0.1]:1",
        "tcp://10.0.0.1:7400", "tcp://128.0.0.1:7400", "tcp://lo:7400", "tcp://eth0:7400",
        "tcp://example.com:7400", "tcp://127.0.0.1", "tcp://[::1", "tcp://", "ws://127.0.0.1:1",
        "pgm://127.0.0.1;239.192.1.1:5555", "udp://127.0.0.1:1", "", "127.0.0.1:7400",
        "tcp://127.0.0.1.evil.com:7400", "tcp://eth0;127.0.0.1:7400", NULL,
    };
    for (size_t i = 0; i < sizeof remote / sizeof remote[0]; i++)
        if (cw_endpoint_is_local(remote[i]))
            fail_msg("%s should not be local", remote[i] ? remote[i] : "(null)");
}

typedef struct {
    char dir[64];    /* fresh temporary directory */
    char users[96];  /* dir/users */
    char err[1024];
} fx_t;

static int setup(void **state)
{
    fx_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/cw_sec_test.XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->users, sizeof f->users, "%s/users", f->dir);
    mkdir(f->users, 0700);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx_t *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

static void path(char *out, size_t size, const char *dir, const char *file)
{
    snprintf(out, size, "%s/%s", dir, file);
}

static void test_generate_and_load(void **state)
{
    fx_t *f = *state;
    assert_int_equal(cw_keypair_generate(f->dir, "alice", "alice", f->err, sizeof f->err), 0);
    char pub[128], sec[128];
    path(pub, sizeof pub, f->dir, "alice.key");
    path(sec, sizeof sec, f->dir, "alice.key_secret");
    struct stat st;
    assert_int_equal(stat(sec, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    cw_keypair_t a, b, p;
    assert_int_equal(cw_keypair_load(sec, true, &a, f->err, sizeof f->err), 0);
    assert_int_equal(cw_keypair_load(pub, true, &b, f->err, sizeof f->err), 0); /* _secret beside */
    assert_string_equal(a.public_txt, b.public_txt);
    assert_string_equal(a.secret_txt, b.secret_txt);
    assert_string_equal(a.user, "alice");
    assert_int_equal(strlen(a.secret_txt), CW_Z85_KEY_LEN);

    /* Only the public file, elsewhere: no secret. */
    char lone[128], cmd[300];
    path(lone, sizeof lone, f->users, "alice.key");
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", pub, lone);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(cw_keypair_load(lone, false, &p, f->err, sizeof f->err), 0);
    assert_string_equal(p.public_txt, a.public_txt);
    assert_string_equal(p.secret_txt, "");
    assert_int_equal(cw_keypair_load(lone, true, &p, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "no secret key"));

    /* The public key and server-key forms. */
    char key[CW_Z85_KEY_LEN + 1];
    assert_int_equal(cw_public_key_load(lone, key, f->err, sizeof f->err), 0);
    assert_string_equal(key, a.public_txt);
    assert_int_equal(cw_public_key_load(a.public_txt, key, f->err, sizeof f->err), 0);
    assert_string_equal(key, a.public_txt);
    assert_int_equal(cw_public_key_load("/nonexistent/x.key", key, f->err, sizeof f->err), -1);

    /* Never overwritten. */
    assert_int_equal(cw_keypair_generate(f->dir, "alice", "alice", f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "not overwritten"));
}

static void test_mismatched_secret(void **state)
{
    fx_t *f = *state;
    assert_int_equal(cw_keypair_generate(f->dir, "a", "a", f->err, sizeof f->err), 0);
    assert_int_equal(cw_keypair_generate(f->dir, "b", "b", f->err, sizeof f->err), 0);
    char asec[128], bsec[128];
    path(asec, sizeof asec, f->dir, "a.key_secret");
    path(bsec, sizeof bsec, f->dir, "b.key_secret");
    cw_keypair_t a, b;
    assert_int_equal(cw_keypair_load(asec, true, &a, f->err, sizeof f->err), 0);
    assert_int_equal(cw_keypair_load(bsec, true, &b, f->err, sizeof f->err), 0);
    /* a's public key with b's secret key. */
    char mixed[128];
    path(mixed, sizeof mixed, f->dir, "mixed.key_secret");
    FILE *out = fopen(mixed, "w");
    assert_non_null(out);
    fprintf(out, "metadata\n    user = \"a\"\ncurve\n    public-key = \"%s\"\n"
                 "    secret-key = \"%s\"\n", a.public_txt, b.secret_txt);
    fclose(out);
    cw_keypair_t m;
    assert_int_equal(cw_keypair_load(mixed, true, &m, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "does not belong"));
    /* A public file whose _secret neighbour is another pair's. */
    char cmd[400], x[128];
    snprintf(cmd, sizeof cmd, "cp '%s/a.key' '%s/x.key' && cp '%s' '%s/x.key_secret'", f->dir,
             f->dir, bsec, f->dir);
    assert_int_equal(system(cmd), 0);
    path(x, sizeof x, f->dir, "x.key");
    assert_int_equal(cw_keypair_load(x, false, &m, f->err, sizeof f->err), 0);
    assert_string_equal(m.public_txt, a.public_txt);   /* the public half is path's */
    assert_int_equal(cw_keypair_load(x, true, &m, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "does not belong"));
    /* Not a certificate at all (also a syntax error: no leak, no crash). */
    out = fopen(mixed, "w");
    fputs("not a certificate\n", out);
    fclose(out);
    assert_int_equal(cw_keypair_load(mixed, false, &m, f->err, sizeof f->err), -1);
    out = fopen(mixed, "w");
    fputs("hello\n", out);
    fclose(out);
    assert_int_equal(cw_keypair_load(mixed, false, &m, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "not a certificate"));
}

/* Registers user NAME (a fresh key pair in dir, public cert copied to users). */
static void make_user(fx_t *f, const char *name, const char *user, cw_keypair_t *kp)
{
    assert_int_equal(cw_keypair_generate(f->dir, name, user, f->err, sizeof f->err), 0);
    char src[128], cmd[400];
    path(src, sizeof src, f->dir, name);
    snprintf(cmd, sizeof cmd, "cp '%s.key' '%s/%s.key'", src, f->users, name);
    assert_int_equal(system(cmd), 0);
    strcat(src, ".key_secret");
    assert_int_equal(cw_keypair_load(src, true, kp, f->err, sizeof f->err), 0);
}

static void test_users_directory(void **state)
{
    fx_t *f = *state;
    void *ctx = zmq_ctx_new();
    cw_keypair_t alice, bob, alice2;
    make_user(f, "alice", "alice", &alice);
    make_user(f, "bob", "bob", &bob);
    cw_zap_t *z = cw_zap_new(ctx, f->users, f->err, sizeof f->err);
    assert_non_null(z);
    assert_int_equal(cw_zap_key_count(z), 2);
    assert_string_equal(cw_zap_user_of(z, alice.public_txt), "alice");
    assert_string_equal(cw_zap_user_of(z, bob.public_txt), "bob");
    assert_null(cw_zap_user_of(z, NULL));
    assert_null(cw_zap_user_of(z, "short"));

    /* Rotation: a second key for alice; the old one removed. */
    make_user(f, "alice2", "alice", &alice2);
    assert_int_equal(cw_zap_reload(z, f->err, sizeof f->err), 0);
    assert_int_equal(cw_zap_key_count(z), 3);
    assert_string_equal(cw_zap_user_of(z, alice2.public_txt), "alice");
    char old[128];
    path(old, sizeof old, f->users, "alice.key");
    assert_int_equal(unlink(old), 0);
    assert_int_equal(cw_zap_reload(z, f->err, sizeof f->err), 0);
    assert_null(cw_zap_user_of(z, alice.public_txt));

    /* A certificate without a user: the reload fails, the old table stays. */
    assert_int_equal(cw_keypair_generate(f->dir, "srv", NULL, f->err, sizeof f->err), 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "cp '%s/srv.key' '%s/srv.key'", f->dir, f->users);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(cw_zap_reload(z, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "no `user`"));
    assert_string_equal(cw_zap_user_of(z, bob.public_txt), "bob");
    snprintf(cmd, sizeof cmd, "%s/srv.key", f->users);
    unlink(cmd);

    /* One key registered for two users. */
    snprintf(cmd, sizeof cmd, "sed 's/user = \"bob\"/user = \"eve\"/' '%s/bob.key' > '%s/eve.key'",
             f->users, f->users);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(cw_zap_reload(z, f->err, sizeof f->err), -1);
    assert_non_null(strstr(f->err, "registered for both"));
    cw_zap_destroy(&z);
    cw_zap_destroy(&z); /* safe twice */
    assert_null(z);
    zmq_ctx_term(ctx);
}

/* Polls server and handler until a message arrives on server (or ~3 s).
 * Returns 1 with *msg filled, else 0. */
static int serve_until_message(cw_zap_t *z, void *server, zmq_msg_t *msg)
{
    for (int i = 0; i < 300; i++) {
        zmq_pollitem_t items[2] = {{server, 0, ZMQ_POLLIN, 0}, {cw_zap_socket(z), 0, ZMQ_POLLIN, 0}};
        zmq_poll(items, 2, 10);
        if (items[1].revents & ZMQ_POLLIN)
            cw_zap_handle(z);
        if (items[0].revents & ZMQ_POLLIN) {
            zmq_msg_t id;
            zmq_msg_init(&id);
            zmq_msg_recv(&id, server, 0);
            zmq_msg_close(&id);
            zmq_msg_init(msg);
            zmq_msg_recv(msg, server, 0);
            return 1;
        }
    }
    return 0;
}

static void test_zap_handshakes(void **state)
{
    fx_t *f = *state;
    void *ctx = zmq_ctx_new();
    cw_keypair_t alice, srv, mallory;
    make_user(f, "alice", "alice", &alice);
    assert_int_equal(cw_keypair_generate(f->dir, "srv", NULL, f->err, sizeof f->err), 0);
    assert_int_equal(cw_keypair_generate(f->dir, "mallory", "mallory", f->err, sizeof f->err), 0);
    char p[128];
    path(p, sizeof p, f->dir, "srv.key_secret");
    assert_int_equal(cw_keypair_load(p, true, &srv, f->err, sizeof f->err), 0);
    path(p, sizeof p, f->dir, "mallory.key_secret");
    assert_int_equal(cw_keypair_load(p, true, &mallory, f->err, sizeof f->err), 0);

    cw_zap_t *z = cw_zap_new(ctx, f->users, f->err, sizeof f->err);
    assert_non_null(z);
    void *server = zmq_socket(ctx, ZMQ_ROUTER);
    assert_int_equal(cw_curve_server_apply(server, &srv, f->err, sizeof f->err), 0);
    assert_int_equal(zmq_bind(server, "tcp://127.0.0.1:*"), 0);
    char ep[128];
    size_t len = sizeof ep;
    zmq_getsockopt(server, ZMQ_LAST_ENDPOINT, ep, &len);

    int zero = 0;
    void *good = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(good, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(cw_curve_client_apply(good, &alice, srv.public_txt, f->err, sizeof f->err), 0);
    assert_int_equal(zmq_connect(good, ep), 0);
    zmq_send(good, "hi", 2, 0);
    zmq_msg_t msg;
    assert_true(serve_until_message(z, server, &msg));
    const char *uid = zmq_msg_gets(&msg, "User-Id");
    assert_non_null(uid);
    assert_string_equal(uid, alice.public_txt);
    assert_string_equal(cw_zap_user_of(z, uid), "alice");
    zmq_msg_close(&msg);

    void *bad = zmq_socket(ctx, ZMQ_DEALER);
    zmq_setsockopt(bad, ZMQ_LINGER, &zero, sizeof zero);
    assert_int_equal(cw_curve_client_apply(bad, &mallory, srv.public_txt, f->err, sizeof f->err), 0);
    assert_int_equal(zmq_connect(bad, ep), 0);
    zmq_send(bad, "let me in", 9, ZMQ_DONTWAIT);
    /* ~0.5 s of serving: the unregistered key never gets a message through. */
    int got = 0;
    for (int i = 0; i < 50 && !got; i++) {
        zmq_pollitem_t items[2] = {{server, 0, ZMQ_POLLIN, 0}, {cw_zap_socket(z), 0, ZMQ_POLLIN, 0}};
        zmq_poll(items, 2, 10);
        if (items[1].revents & ZMQ_POLLIN)
            cw_zap_handle(z);
        got = (items[0].revents & ZMQ_POLLIN) != 0;
    }
    assert_false(got);

    zmq_close(good);
    zmq_close(bad);
    zmq_close(server);
    cw_zap_destroy(&z);
    zmq_ctx_term(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_endpoints),
        cmocka_unit_test(test_non_local_endpoints),
        cmocka_unit_test(test_needs_curve),
        cmocka_unit_test_setup_teardown(test_generate_and_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mismatched_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_users_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_zap_handshakes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
