/*  cw_sec: see cw_sec.h. */
#include "cw_sec.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"

#include <arpa/inet.h>
#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZERO_KEY_TXT "0000000000000000000000000000000000000000" /* Z85 of 32 zero bytes */

/* -------------------------------------------------------------------------
 * Endpoint classification
 */

static bool host_is_loopback(const char *host)
{
    if (strcmp(host, "localhost") == 0)
        return true;
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    struct in6_addr a6;
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        if (IN6_IS_ADDR_LOOPBACK(&a6))
            return true;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return false;
}

bool cw_endpoint_is_local(const char *endpoint)
{
    if (!endpoint)
        return false;
    if (strncmp(endpoint, "ipc://", 6) == 0 || strncmp(endpoint, "inproc://", 9) == 0)
        return true;
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return false;
    const char *addr = endpoint + 6;
    if (strchr(addr, ';')) /* "source;destination" is for connecting, not binding */
        return false;
    char host[256];
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (!close || close[1] != ':' || (size_t) (close - addr - 1) >= sizeof host)
            return false;
        memcpy(host, addr + 1, (size_t) (close - addr - 1));
        host[close - addr - 1] = '\0';
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || (size_t) (colon - addr) >= sizeof host)
            return false;
        memcpy(host, addr, (size_t) (colon - addr));
        host[colon - addr] = '\0';
    }
    return host_is_loopback(host);
}

bool cw_endpoint_needs_curve(const char *endpoint)
{
    static const char *const network[] = {"tcp://", "ws://",   "wss://",  "udp://", "pgm://",
                                          "epgm://", "norm://", "tipc://", "vmci://"};
    if (!endpoint || cw_endpoint_is_local(endpoint))
        return false;
    for (size_t i = 0; i < sizeof network / sizeof network[0]; i++)
        if (strncmp(endpoint, network[i], strlen(network[i])) == 0)
            return true;
    return false;
}

/* -------------------------------------------------------------------------
 * Certificate files
 */

static bool key_txt_ok(const char *k)
{
    return k && strlen(k) == CW_Z85_KEY_LEN;
}

/* Reads a whole (small) file into a NUL-terminated buffer; caller frees.
 * NULL with errno set on failure. */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            if (cap >= (1u << 20)) { /* no certificate is this big */
                free(buf);
                buf = NULL;
                errno = EFBIG;
                break;
            }
            char *nb = realloc(buf, cap * 2 + 1);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

/* Copies the fields of one certificate file into kp (fields the file lacks
 * are left alone). 0, or -1 if it cannot be read or is not ZPL. The text
 * goes through zconfig_str_load, not zcert_load: CZMQ 4.2's file loader
 * leaks on a syntax error, and a users directory may hold anything. */
static int cert_fields(const char *path, cw_keypair_t *kp)
{
    char *text = slurp(path);
    if (!text)
        return -1;
    zconfig_t *root = zconfig_str_load(text);
    free(text);
    if (!root)
        return -1;
    const char *pub = zconfig_get(root, "/curve/public-key", NULL);
    const char *sec = zconfig_get(root, "/curve/secret-key", NULL);
    const char *user = zconfig_get(root, "/metadata/user", NULL);
    if (key_txt_ok(pub))
        snprintf(kp->public_txt, sizeof kp->public_txt, "%s", pub);
    if (key_txt_ok(sec) && strcmp(sec, ZERO_KEY_TXT) != 0)
        snprintf(kp->secret_txt, sizeof kp->secret_txt, "%s", sec);
    if (user && strlen(user) >= sizeof kp->user) {
        zconfig_destroy(&root);   /* a cut name would bind the key to another user */
        return -1;
    }
    if (user)
        snprintf(kp->user, sizeof kp->user, "%s", user);
    zconfig_destroy(&root);
    return 0;
}

int cw_keypair_load(const char *path, bool need_secret, cw_keypair_t *kp, char *err,
                    size_t errlen)
{
    memset(kp, 0, sizeof *kp);
    if (access(path, R_OK) != 0) {
        cw_set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    /* Like zcert_load: "NAME.key" takes the secret from "NAME.key_secret". */
    char secret_path[4200];
    snprintf(secret_path, sizeof secret_path, "%s_secret", path);
    uint8_t bin[32];
    int bad = cert_fields(path, kp) != 0 || !kp->public_txt[0] ||
              !zmq_z85_decode(bin, kp->public_txt);
    if (!bad && !kp->secret_txt[0] && access(secret_path, R_OK) == 0) {
        cw_keypair_t sec;
        memset(&sec, 0, sizeof sec);
        bad = cert_fields(secret_path, &sec) != 0;
        memcpy(kp->secret_txt, sec.secret_txt, sizeof kp->secret_txt); /* public from path */
        explicit_bzero(&sec, sizeof sec);
    }
    if (bad) {
        explicit_bzero(kp, sizeof *kp);
        cw_set_err(err, errlen, "%s: not a certificate (expected a zcert file from "
                                "`causeway keygen`, with a user name of at most %zu bytes)",
                   path, sizeof kp->user - 1);
        return -1;
    }
    if (need_secret) {
        if (!kp->secret_txt[0]) {
            cw_set_err(err, errlen, "%s: no secret key in this certificate (give the "
                                    "NAME.key_secret file, or NAME.key next to it)", path);
            return -1;
        }
        char derived[CW_Z85_KEY_LEN + 1];
        if (zmq_curve_public(derived, kp->secret_txt) != 0 ||
            strcmp(derived, kp->public_txt) != 0) {
            cw_set_err(err, errlen, "%s: the secret key does not belong to the public key "
                                    "(damaged or mixed-up certificate)", path);
            return -1;
        }
    }
    return 0;
}

int cw_public_key_load(const char *arg, char *out, char *err, size_t errlen)
{
    if (strlen(arg) == CW_Z85_KEY_LEN && access(arg, F_OK) != 0) {
        uint8_t bin[32];
        if (!zmq_z85_decode(bin, arg)) {
            cw_set_err(err, errlen, "'%s' is neither a file nor a Z85 key", arg);
            return -1;
        }
        memcpy(out, arg, CW_Z85_KEY_LEN + 1);
        return 0;
    }
    cw_keypair_t kp;
    if (cw_keypair_load(arg, false, &kp, err, errlen) != 0)
        return -1;
    memcpy(out, kp.public_txt, CW_Z85_KEY_LEN + 1);
    return 0;
}

int cw_keypair_generate(const char *dir, const char *name, const char *user, char *err,
                        size_t errlen)
{
    char pub[4096], sec[4200];
    snprintf(pub, sizeof pub, "%s/%s.key", dir, name);
    snprintf(sec, sizeof sec, "%s_secret", pub);
    if (access(pub, F_OK) == 0 || access(sec, F_OK) == 0) {
        cw_set_err(err, errlen, "%s or %s exists already; not overwritten", pub, sec);
        return -1;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        cw_set_err(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    zcert_t *cert = zcert_new();
    if (!cert) {
        cw_set_err(err, errlen, "cannot make a key pair (libzmq without CURVE?)");
        return -1;
    }
    if (user)
        zcert_set_meta(cert, "user", "%s", user);
    mode_t old = umask(077); /* the secret file is born private */
    int rc = zcert_save_secret(cert, sec);
    umask(old);
    if (rc == 0)
        rc = zcert_save_public(cert, pub);
    zcert_destroy(&cert);
    if (rc != 0) {
        cw_set_err(err, errlen, "cannot write %s / %s: %s", pub, sec, strerror(errno));
        return -1;
    }
    chmod(pub, 0644);
    return 0;
}

int cw_curve_client_apply(void *sock, const cw_keypair_t *mine, const char *server_public_txt,
                          char *err, size_t errlen)
{
    if (!zmq_has("curve")) {
        cw_set_err(err, errlen, "this libzmq has no CURVE support");
        return -1;
    }
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_public_txt, CW_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, mine->public_txt, CW_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, mine->secret_txt, CW_Z85_KEY_LEN) != 0) {
        cw_set_err(err, errlen, "cannot set CURVE keys: %s", zmq_strerror(errno));
        return -1;
    }
    return 0;
}

int cw_curve_server_apply(void *sock, const cw_keypair_t *kp, char *err, size_t errlen)
{
    int one = 1;
    if (!zmq_has("curve")) {
        cw_set_err(err, errlen, "this libzmq has no CURVE support");
        return -1;
    }
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, kp->secret_txt, CW_Z85_KEY_LEN) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, CW_ZAP_DOMAIN, strlen(CW_ZAP_DOMAIN)) != 0) {
        cw_set_err(err, errlen, "cannot make a CURVE server: %s", zmq_strerror(errno));
        return -1;
    }
    /* Without a ZAP handler libzmq would let every key in; ours is bound
     * first, and this makes a missing one refuse everybody instead. */
#ifdef ZMQ_ZAP_ENFORCE_DOMAIN
    zmq_setsockopt(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one);
#endif
    return 0;
}

/* -------------------------------------------------------------------------
 * ZAP handler
 */

typedef struct {
    uint8_t key[32];  /* client public key */
    char *user;       /* registered user name, owned */
} zap_entry_t;

struct cw_zap {
    void *sock;           /* REP bound to ZAP_ENDPOINT, owned */
    char *dir;            /* users directory, owned */
    zap_entry_t *keys;    /* registered keys, owned */
    size_t n_keys;        /* entries in keys */
};

static void table_free(zap_entry_t *keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(keys[i].user);
    free(keys);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Reads every certificate of dir into a new table. 0, or -1 with err. */
static int table_load(const char *dir, zap_entry_t **out, size_t *n_out, char *err,
                      size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        cw_set_err(err, errlen, "users directory %s: %s", dir, strerror(errno));
        return -1;
    }
    zap_entry_t *keys = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || ends_with(e->d_name, "_secret") || ends_with(e->d_name, "~"))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        cw_keypair_t kp;
        const char *why = NULL;
        if (cw_keypair_load(path, false, &kp, err, errlen) != 0) {
            rc = -1;
        } else if (!kp.user[0]) {
            cw_set_err(err, errlen, "%s: no `user` in the certificate's metadata "
                                    "(make it with `causeway keygen NAME`)", path);
            rc = -1;
        } else if (cw_name_check(kp.user, CW_NAME_MAX_HARD, &why) != CW_OK) {
            cw_set_err(err, errlen, "%s: user '%s': %s", path, kp.user, why);
            rc = -1;
        }
        if (rc != 0)
            break;
        uint8_t key[32];
        zmq_z85_decode(key, kp.public_txt);
        bool dup = false;
        for (size_t i = 0; i < n; i++) {
            if (memcmp(keys[i].key, key, 32) != 0)
                continue;
            if (strcmp(keys[i].user, kp.user) != 0) {
                cw_set_err(err, errlen, "%s: key %s is registered for both '%s' and '%s'",
                           path, kp.public_txt, keys[i].user, kp.user);
                rc = -1;
            }
            dup = true;
        }
        if (rc != 0 || dup)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            zap_entry_t *k = realloc(keys, ncap * sizeof *k);
            if (!k) {
                cw_set_err(err, errlen, "out of memory");
                rc = -1;
                break;
            }
            keys = k;
            cap = ncap;
        }
        memcpy(keys[n].key, key, 32);
        if (!(keys[n].user = strdup(kp.user))) {
            cw_set_err(err, errlen, "out of memory");
            rc = -1;
            break;
        }
        n++;
    }
    closedir(d);
    if (rc != 0) {
        table_free(keys, n);
        return -1;
    }
    *out = keys;
    *n_out = n;
    return 0;
}

cw_zap_t *cw_zap_new(void *ctx, const char *users_dir, char *err, size_t errlen)
{
    cw_zap_t *z = calloc(1, sizeof *z);
    if (!z || !(z->dir = strdup(users_dir))) {
        free(z);
        cw_set_err(err, errlen, "out of memory");
        return NULL;
    }
    if (table_load(users_dir, &z->keys, &z->n_keys, err, errlen) != 0)
        goto fail;
    z->sock = zmq_socket(ctx, ZMQ_REP);
    int zero = 0;
    if (!z->sock) {
        cw_set_err(err, errlen, "cannot create the ZAP socket: %s", zmq_strerror(errno));
        goto fail;
    }
    zmq_setsockopt(z->sock, ZMQ_LINGER, &zero, sizeof zero);
    if (zmq_bind(z->sock, ZAP_ENDPOINT) != 0) {
        cw_set_err(err, errlen, "cannot bind the ZAP handler: %s", zmq_strerror(errno));
        goto fail;
    }
    return z;
fail:
    cw_zap_destroy(&z);
    return NULL;
}

void cw_zap_destroy(cw_zap_t **p)
{
    if (!p || !*p)
        return;
    cw_zap_t *z = *p;
    if (z->sock)
        zmq_close(z->sock);
    table_free(z->keys, z->n_keys);
    free(z->dir);
    free(z);
    *p = NULL;
}

void *cw_zap_socket(cw_zap_t *z)
{
    return z->sock;
}

size_t cw_zap_key_count(const cw_zap_t *z)
{
    return z->n_keys;
}


int cw_zap_reload(cw_zap_t *z, char *err, size_t errlen)
{
    zap_entry_t *keys;
    size_t n;
    if (table_load(z->dir, &keys, &n, err, errlen) != 0)
        return -1;
    table_free(z->keys, z->n_keys);
    z->keys = keys;
    z->n_keys = n;
    return 0;
}

static const char *lookup(const cw_zap_t *z, const uint8_t *key)
{
    for (size_t i = 0; i < z->n_keys; i++)
        if (memcmp(z->keys[i].key, key, 32) == 0)
            return z->keys[i].user;
    return NULL;
}

const char *cw_zap_user_of(const cw_zap_t *z, const char *key_txt)
{
    uint8_t key[32];
    if (!key_txt || strlen(key_txt) != CW_Z85_KEY_LEN || !zmq_z85_decode(key, key_txt))
        return NULL;
    return lookup(z, key);
}

/* Copies frame f of a request into a NUL-terminated string (cut to size). */
static void frame_str(zmq_msg_t *f, char *out, size_t size)
{
    size_t n = zmq_msg_size(f);
    if (n >= size)
        n = size - 1;
    memcpy(out, zmq_msg_data(f), n);
    out[n] = '\0';
}

void cw_zap_handle(cw_zap_t *z)
{
    for (;;) {
        enum { MAXF = 8 };
        zmq_msg_t f[MAXF];
        size_t n = 0;
        int more = 1;
        while (more) {
            zmq_msg_t scratch, *m = n < MAXF ? &f[n] : &scratch;
            zmq_msg_init(m);
            if (zmq_msg_recv(m, z->sock, n == 0 ? ZMQ_DONTWAIT : 0) < 0) {
                zmq_msg_close(m);
                for (size_t i = 0; i < n && i < MAXF; i++)
                    zmq_msg_close(&f[i]);
                return; /* nothing (more) waiting */
            }
            more = zmq_msg_more(m);
            if (m == &scratch)
                zmq_msg_close(m);
            n++;
        }
        /* RFC 27: version, request id, domain, address, routing id,
         * mechanism, credentials... */
        char version[8] = "", domain[64] = "", address[128] = "", mech[16] = "";
        const char *status = "400", *text = "malformed ZAP request", *user = NULL;
        char key_txt[CW_Z85_KEY_LEN + 1] = "-";
        if (n >= 6 && n <= MAXF) {
            frame_str(&f[0], version, sizeof version);
            frame_str(&f[2], domain, sizeof domain);
            frame_str(&f[3], address, sizeof address);
            frame_str(&f[5], mech, sizeof mech);
            if (strcmp(version, "1.0") != 0) {
                text = "unsupported ZAP version";
            } else if (strcmp(mech, "CURVE") != 0 || n != 7 || zmq_msg_size(&f[6]) != 32) {
                text = "CURVE required";
            } else {
                const uint8_t *key = zmq_msg_data(&f[6]);
                zmq_z85_encode(key_txt, key, 32);
                user = strcmp(domain, CW_ZAP_DOMAIN) == 0 ? lookup(z, key) : NULL;
                if (user) {
                    status = "200";
                    text = "OK";
                } else {
                    text = "unknown key";
                }
            }
        }
        if (user)
            CW_DEBUG("handshake: %s from %s accepted as %s", key_txt, address, user);
        else
            CW_WARN("handshake refused (%s): key %s from %s", text, key_txt,
                    address[0] ? address : "?");
        /* Reply: version, request id, status code, status text, user id, metadata. */
        zmq_send(z->sock, "1.0", 3, ZMQ_SNDMORE);
        if (n >= 2)
            zmq_send(z->sock, zmq_msg_data(&f[1]), zmq_msg_size(&f[1]), ZMQ_SNDMORE);
        else
            zmq_send(z->sock, "", 0, ZMQ_SNDMORE);
        zmq_send(z->sock, status, 3, ZMQ_SNDMORE);
        zmq_send(z->sock, text, strlen(text), ZMQ_SNDMORE);
        zmq_send(z->sock, key_txt, user ? CW_Z85_KEY_LEN : 0, ZMQ_SNDMORE); /* User-Id */
        zmq_send(z->sock, "", 0, 0);
        for (size_t i = 0; i < n && i < MAXF; i++)
            zmq_msg_close(&f[i]);
    }
}
