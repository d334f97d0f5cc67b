/*  store_redis: the Redis Cluster backend of store_if.h (SCALEOUT.md).
 *
 *  NOT IMPLEMENTED YET. The operations table exists so that the broker
 *  chooses its store at run time (`--store redis://HOST:PORT,...`) and the
 *  contract test suite has its second line ready; open refuses with a
 *  clear message and nothing else can be reached (every other entry is
 *  only called on a store that open returned). The design it will follow
 *  is SCALEOUT.md §1-§6: a store thread polling non-blocking hiredis
 *  contexts (broker/redis_cluster.c) from one zmq_poll, pipelines per
 *  primary, WAIT per primary touched, replies in submission order.
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
             "--store %s: the Redis Cluster store is not implemented yet (SCALEOUT.md); "
             "use --data DIR",
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
