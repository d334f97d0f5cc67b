/*  strmap: a string -> index hash map, internal to causeway-clockd (trace
 *  processes, analysis message keys).
 *
 *  What it owns. Copies of its keys; values are plain size_t. Open
 *  addressing with linear probing, grown at 1/2 load, FNV-1a hashing. No
 *  removal (clockd only ever adds). Not thread-safe.
 */
#ifndef CW_CLOCKD_STRMAP_H
#define CW_CLOCKD_STRMAP_H

#include <stddef.h>

typedef struct cw_strmap cw_strmap_t;

/* A new empty map; NULL only if out of memory. */
cw_strmap_t *cw_strmap_new(void);
/* Frees the map and its key copies, NULLs *p; safe on NULL and twice. */
void cw_strmap_destroy(cw_strmap_t **p);

/* Looks key up: 1 and *value set if present, else 0. */
int cw_strmap_get(const cw_strmap_t *m, const char *key, size_t *value);
/* Sets key to value (adding a copy of key if absent). CW_OK or
 * CW_ERR_NOMEM (map unchanged). */
int cw_strmap_put(cw_strmap_t *m, const char *key, size_t value);
/* Number of keys. */
size_t cw_strmap_size(const cw_strmap_t *m);

#endif
