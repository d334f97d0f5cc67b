/*  store_redis_none: the Redis backend's place in a build without hiredis
 *  (libhiredis-dev missing at configure time): open says so.
 *
 *  The operations table exists so that the broker still chooses its store
 *  at run time and `--store` is refused with a clear message; nothing else
 *  can be reached (every other entry is only called on a store that open
 *  returned). With hiredis, store_redis.c is built instead.
 */
#include "store_if.h"

#include "cw_status.h"

#include <stdio.h>
#include <string.h>

static int redis_open(const char *where, const cw_store_config_t *cfg, cw_store_backend_t **out,
                      cw_store_loaded_t *loaded, char *err, size_t errlen)
{
    (void) cfg;
    *out = NULL;
    memset(loaded, 0, sizeof *loaded);
    snprintf(err, errlen,
             "--store %s: this build has no Redis Cluster store (built without "
             "libhiredis-dev); use --data DIR",
             where);
    return CW_ERR_INVALID;
}

static void redis_close(cw_store_backend_t **p)
{
    if (p)
        *p = NULL;
}

const cw_store_ops_t cw_store_redis_ops = {
    .name = "redis",
    .shared = 1,
    .open = redis_open,
    .close = redis_close,
};
