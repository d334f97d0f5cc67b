/*  store_if: the backend-independent parts of store_if.h: choosing a
 *  backend from the broker's options, checking redis:// URLs, freeing
 *  replies through their backend. Any thread; no state.
 */
#include "store_if.h"

#include "cw_status.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cw_store_reply_destroy(cw_store_reply_t **p)
{
    if (!p || !*p)
        return;
    cw_store_reply_t *r = *p;
    *p = NULL;
    r->destroy(r);
}

void cw_store_loaded_free(cw_store_loaded_t *l)
{
    cw_store_users_free(&l->users, l->n_users);
    l->n_users = 0;
    cw_store_clocks_free(&l->clocks, l->n_clocks);
    l->n_clocks = 0;
}

void cw_store_config_init(cw_store_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->dedup_window_s = 86400;
    cfg->wait_replicas = 1;
    cfg->retry_ms = 10000;
    cfg->lease_ms = 1000;
}

int cw_store_redis_url_check(const char *url, size_t *n, char *err, size_t errlen)
{
    static const char scheme[] = "redis://";
    *n = 0;
    if (strncmp(url, scheme, sizeof scheme - 1) != 0) {
        snprintf(err, errlen, "--store %s: expected redis://HOST:PORT[,HOST:PORT...]", url);
        return -1;
    }
    const char *p = url + sizeof scheme - 1;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t) (end - p) : strlen(p);
        const char *colon = NULL;
        for (size_t i = 0; i < len; i++)
            if (p[i] == ':')
                colon = p + i;
        bool ok = colon && colon > p && (size_t) (colon - p) < len - 1;
        for (const char *c = p; ok && c < colon; c++)
            ok = *c > ' ' && *c != '/' && *c != '@';
        unsigned long port = 0;
        for (const char *c = colon ? colon + 1 : p; ok && c < p + len; c++) {
            ok = *c >= '0' && *c <= '9';
            port = port * 10 + (unsigned long) (*c - '0');
            ok = ok && port <= 65535;
        }
        if (!ok || port == 0) {
            snprintf(err, errlen, "--store: '%.*s' is not HOST:PORT (port 1-65535)", (int) len,
                     p);
            return -1;
        }
        (*n)++;
        if (!end)
            return 0;
        p = end + 1;
    }
}

const cw_store_ops_t *cw_store_choose(const char *data_dir, const char *store_url,
                                      const char **where, char *err, size_t errlen)
{
    bool data = data_dir && *data_dir, url = store_url && *store_url;
    if (data && url) {
        snprintf(err, errlen, "--data and --store are mutually exclusive: choose one store");
        return NULL;
    }
    if (data) {
        *where = data_dir;
        return &cw_store_sqlite_ops;
    }
    if (!url) {
        snprintf(err, errlen, "no store: give --data DIR or --store redis://HOST:PORT");
        return NULL;
    }
    size_t n = 0;
    if (cw_store_redis_url_check(store_url, &n, err, errlen) != 0)
        return NULL;
    *where = store_url;
    return &cw_store_redis_ops;
}
