/*  evstore: see evstore.h.
 *
 *  Invariants: a writable store has the schema of version 1 and its
 *  journal in WAL mode (or is ":memory:"); no transaction is open between
 *  calls (append either commits or rolls back before returning).
 */
#include "evstore.h"
#include "cw_util.h"
#include "cw_status.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define APPLICATION_ID 0x43574b44   /* "CWKD" */
#define SCHEMA_VERSION 1

struct cw_evstore {
    sqlite3 *db;
    int readonly;
    char *path;               /* owned, for messages */
    sqlite3_stmt *insert;     /* prepared INSERT, NULL when read-only */
};


static int pragma_int(sqlite3 *db, const char *sql, int *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

static int table_exists(sqlite3 *db)
{
    int n = 0;
    return pragma_int(db, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='events'", &n) == 0
           && n == 1;
}

void cw_evstore_close(cw_evstore_t **p)
{
    if (!p || !*p)
        return;
    cw_evstore_t *s = *p;
    sqlite3_finalize(s->insert);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
    *p = NULL;
}

cw_evstore_t *cw_evstore_open(const char *path, int flags, int *status, char *err, size_t errlen)
{
    int st = CW_STORE_ERROR;
    cw_evstore_t *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        cw_set_err(err, errlen, "out of memory");
        if (status)
            *status = CW_ERR_NOMEM;
        return NULL;
    }
    s->readonly = (flags & CW_EVSTORE_READONLY) != 0;
    int is_memory = strcmp(path, ":memory:") == 0;
    if (s->readonly && !is_memory && access(path, F_OK) != 0) {
        cw_set_err(err, errlen, "%s: no such store", path);
        st = CW_ERR_IO;
        goto fail;
    }
    int oflags = s->readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &s->db, oflags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        cw_set_err(err, errlen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    int app = 0, ver = 0;
    if (pragma_int(s->db, "PRAGMA application_id", &app) < 0
        || pragma_int(s->db, "PRAGMA user_version", &ver) < 0) {
        cw_set_err(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    int objects = 0;
    if (pragma_int(s->db, "SELECT count(*) FROM sqlite_master", &objects) < 0) {
        cw_set_err(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    int empty = app == 0 && ver == 0 && objects == 0;   /* a new file: ours to set up */
    if (!empty && (app != APPLICATION_ID || !table_exists(s->db))) {
        cw_set_err(err, errlen, "%s: not a causeway-clockd store", path);
        goto fail;
    }
    if (!empty && ver != SCHEMA_VERSION) {
        cw_set_err(err, errlen, "%s: store schema version %d, this build reads %d", path, ver, SCHEMA_VERSION);
        goto fail;
    }
    if (s->readonly) {
        if (empty) {
            cw_set_err(err, errlen, "%s: not a causeway-clockd store (no events table)", path);
            goto fail;
        }
        if (status)
            *status = CW_OK;
        return s;
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "PRAGMA journal_mode = WAL;"
             "PRAGMA synchronous = FULL;"
             "PRAGMA application_id = %d;"
             "PRAGMA user_version = %d;"
             "CREATE TABLE IF NOT EXISTS events("
             " id INTEGER PRIMARY KEY AUTOINCREMENT,"
             " received_us INTEGER NOT NULL,"
             " process TEXT NOT NULL,"
             " kind TEXT NOT NULL,"
             " event TEXT NOT NULL);",
             APPLICATION_ID, SCHEMA_VERSION);
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        cw_set_err(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        goto fail;
    }
    if (sqlite3_prepare_v2(s->db, "INSERT INTO events(received_us, process, kind, event) VALUES (?,?,?,?)",
                           -1, &s->insert, NULL) != SQLITE_OK) {
        cw_set_err(err, errlen, "%s: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    if (status)
        *status = CW_OK;
    return s;
fail:
    cw_evstore_close(&s);
    if (status)
        *status = st;
    return NULL;
}

static void rollback(cw_evstore_t *s)
{
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

int cw_evstore_append(cw_evstore_t *s, const cwc_event_t *const *events, size_t n,
                      uint64_t received_us, char *err, size_t errlen)
{
    if (s->readonly) {
        cw_set_err(err, errlen, "%s: store is read-only", s->path);
        return CW_ERR_INVALID;
    }
    if (n == 0)
        return CW_OK;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        cw_set_err(err, errlen, "%s: begin: %s", s->path, sqlite3_errmsg(s->db));
        return CW_STORE_ERROR;
    }
    for (size_t i = 0; i < n; i++) {
        char *json = cw_event_to_json(events[i]);
        if (!json) {
            rollback(s);
            cw_set_err(err, errlen, "out of memory");
            return CW_ERR_NOMEM;
        }
        sqlite3_reset(s->insert);
        sqlite3_bind_int64(s->insert, 1, (sqlite3_int64) received_us);
        sqlite3_bind_text(s->insert, 2, events[i]->process, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(s->insert, 3, cw_ev_kind_name(events[i]->kind), -1, SQLITE_STATIC);
        sqlite3_bind_text(s->insert, 4, json, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(s->insert);
        free(json);
        sqlite3_reset(s->insert);
        sqlite3_clear_bindings(s->insert);
        if (rc != SQLITE_DONE) {
            cw_set_err(err, errlen, "%s: insert: %s", s->path, sqlite3_errmsg(s->db));
            rollback(s);
            return CW_STORE_ERROR;
        }
    }
    /* The commit point: COMMIT returns after the WAL is fsynced. */
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        cw_set_err(err, errlen, "%s: commit: %s", s->path, sqlite3_errmsg(s->db));
        rollback(s);
        return CW_STORE_ERROR;
    }
    return CW_OK;
}

int cw_evstore_load(cw_evstore_t *s, cw_trace_t *t, uint64_t *last_id, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT id, event FROM events WHERE id > ? ORDER BY id", -1, &st,
                           NULL) != SQLITE_OK) {
        cw_set_err(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
        return CW_STORE_ERROR;
    }
    sqlite3_bind_int64(st, 1, (sqlite3_int64) *last_id);
    int rc = CW_OK, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        uint64_t id = (uint64_t) sqlite3_column_int64(st, 0);
        const char *json = (const char *) sqlite3_column_text(st, 1);
        int len = sqlite3_column_bytes(st, 1);
        char why[512];
        size_t before = cw_trace_count(t);
        rc = cw_trace_add_json(t, json ? json : "", json ? (size_t) len : 0, (size_t) id, why, sizeof why);
        if (rc == CW_OK && cw_trace_count(t) == before) {
            snprintf(why, sizeof why, "empty event");
            rc = CW_BAD_REQUEST;
        }
        if (rc != CW_OK) {
            cw_set_err(err, errlen, "%s: row %llu: %s", s->path, (unsigned long long) id, why);
            break;
        }
        *last_id = id;
    }
    if (rc == CW_OK && step != SQLITE_DONE) {
        cw_set_err(err, errlen, "%s: %s", s->path, sqlite3_errmsg(s->db));
        rc = CW_STORE_ERROR;
    }
    sqlite3_finalize(st);
    return rc;
}

uint64_t cw_evstore_count(cw_evstore_t *s)
{
    sqlite3_stmt *st;
    uint64_t n = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM events", -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (sqlite3_step(st) == SQLITE_ROW)
        n = (uint64_t) sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}
