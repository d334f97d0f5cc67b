/*  broker: the router thread. See broker.h.
 *
 *  Runs on the thread that calls cw_broker_run; nothing here is shared with
 *  another thread. The loop: poll the ROUTER socket until the next timer
 *  tick, handle up to BATCH messages, run the tick (heartbeats, expiry),
 *  close sessions marked dead. Per message:
 *
 *      recv [routing id][frame]...  ->  decode_or_reply  ->  dispatch by body
 *
 *  Every path that rejects a request goes through cwe_reply_status()
 *  (egress.c), the one function that builds error replies. A request
 *  always gets exactly one Reply; pushes (deliver, presence, heartbeat)
 *  carry request_id 0.
 *
 *  This file routes; it is the top of the broker's layers (the graph is in
 *  broker_internal.h): sending is egress.c's (ZMQ_ROUTER_MANDATORY and
 *  ZMQ_DONTWAIT: the router never blocks on a peer), the order of what a
 *  session is sent is outorder.c's, durable requests are durable.c's.
 *  None of them calls back into this file.
 *
 *  Transport security (cfg.curve_secret): the ROUTER is a CURVE server and
 *  b->zap, polled on this thread, answers its ZAP requests: only keys
 *  registered in the users directory complete the handshake, and each
 *  message carries its connection's key as ZAP User-Id. A Login is accepted
 *  only under the user name the key is registered for (else UNAUTHORIZED,
 *  and the connection stays logged out, so every request that needs a
 *  login stays refused). A reload signal (main.c: SIGUSR1, or SIGHUP for a
 *  service) re-reads the directory; sessions whose key
 *  is no longer registered for their user are ended (expired).
 *
 *  Session close points (the only places cw_sessions_close is called):
 *  handle_logout (after the reply), reap() (dead sessions, after each
 *  message and tick) and cw_broker_destroy.
 */
#include "broker.h"
#include "cw_clock.h"
#include "cw_envelope.h"
#include "cw_log.h"
#include "cw_status.h"
#include "cw_util.h"
#include "sessions.h"
#include "broker_internal.h"
#include "durable.h"
#include "egress.h"
#include "observe.h"
#include "outorder.h"
#include "resume_clock.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <zmq.h>

/* The user log from the first name sorting after `after` (NULL or "":
 * from the start), at most cfg.page_users entries; *truncated tells
 * whether more follow. Caller frees *infos and *ptrs. The count, or -1 if
 * out of memory. */
static long user_log(cw_broker_t *b, const char *after, Causeway__V1__UserInfo **infos,
                     Causeway__V1__UserInfo ***ptrs, bool *truncated)
{
    size_t total = cw_sessions_user_count(b->sessions), from = 0;
    if (after && *after) { /* the first name sorting after `after` */
        size_t hi = total;
        while (from < hi) {
            size_t mid = from + (hi - from) / 2;
            if (strcmp(cw_sessions_user_at(b->sessions, mid)->name, after) <= 0)
                from = mid + 1;
            else
                hi = mid;
        }
    }
    size_t n = total - from;
    *truncated = n > b->cfg.page_users;
    if (*truncated)
        n = b->cfg.page_users;
    *infos = calloc(n ? n : 1, sizeof **infos);
    *ptrs = calloc(n ? n : 1, sizeof **ptrs);
    if (!*infos || !*ptrs) {
        free(*infos);
        free(*ptrs);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        cwb_user_t *u = cw_sessions_user_at(b->sessions, from + i);
        causeway__v1__user_info__init(&(*infos)[i]);
        (*infos)[i].name = u->name;
        /* Shared store: users served by other brokers too, as last
         * learnt (best effort, PROTOCOL.md §8). */
        (*infos)[i].online = (u->session && !u->session->claiming) || (b->shared && u->remote_online);
        (*infos)[i].last_seen_us = u->last_seen_us;
        (*ptrs)[i] = &(*infos)[i];
    }
    return (long) n;
}

/* Sends `reply` for request rid to id, with the page of the user log after
 * `after` (NULL or "": from the start) in its users unless `users` is
 * false; `more`, if not NULL, replaces its detail when the page is
 * truncated. The one place the Login and Who replies take the user log
 * from. Returns false (and replies INTERNAL instead) when out of memory. */
static bool send_with_user_log(cw_broker_t *b, const void *id, size_t id_len, uint64_t rid,
                               Causeway__V1__Reply *reply, bool users, const char *after,
                               const char *more)
{
    Causeway__V1__UserInfo *infos = NULL, **ptrs = NULL;
    if (users) {
        bool truncated = false;
        long n = user_log(b, after, &infos, &ptrs, &truncated);
        if (n < 0) {
            cwe_reply_status(b, id, id_len, rid, CW_INTERNAL, "out of memory");
            return false;
        }
        if (truncated && more)
            reply->detail = (char *) more;
        reply->truncated = truncated;
        reply->n_users = (size_t) n;
        reply->users = ptrs;
    }
    cw_env_t out;
    cw_env_init(&out, rid);
    out.body_case = CW_BODY(REPLY);
    out.reply = reply;
    cwe_send_to_id(b, id, id_len, &out);
    free(infos);
    free(ptrs);
    return true;
}

/* Logs the cumulative user log, the CLI form of the original server window. */
static void log_user_log(cw_broker_t *b)
{
    if (!cw_log_enabled(CW_LOG_INFO))
        return;
    char line[1536];
    size_t n = cw_sessions_user_count(b->sessions), off = 0;
    int w = snprintf(line, sizeof line, "user log: %zu known, %zu online:", n,
                     cw_sessions_count(b->sessions));
    off = (size_t) w;
    for (size_t i = 0; i < n && i < USER_LOG_LINE_MAX && off < sizeof line; i++) {
        cwb_user_t *u = cw_sessions_user_at(b->sessions, i);
        w = snprintf(line + off, sizeof line - off, " %s%s", u->name, u->session ? "*" : "");
        if (w < 0)
            break;
        off += (size_t) w;
    }
    if (n > USER_LOG_LINE_MAX && off < sizeof line)
        snprintf(line + off, sizeof line - off, " ... (+%zu)", n - USER_LOG_LINE_MAX);
    CW_INFO("%s", line);
}

/* Tells every other live, non-quiet session that `name` came or went
 * (egress.c). A shared store tells the other brokers itself when a claim
 * or a release succeeds (store_if.h S6). */
static void announce(cw_broker_t *b, const char *name, bool online,
                     Causeway__V1__Presence__Reason reason, const cw_session_t *except)
{
    cwe_announce(b, name, online, (int) reason, except);
}

/* Closes every session marked dead, announcing each as expired. Safe point:
 * call only when no session pointer is held. */
static void reap(cw_broker_t *b)
{
    while (b->n_dead > 0) {
        b->n_dead = 0;
        /* Backwards: closing swaps the last session into the freed slot. */
        for (size_t i = cw_sessions_count(b->sessions); i-- > 0;) {
            if (i >= cw_sessions_count(b->sessions))
                continue;
            cw_session_t *s = cw_sessions_at(b->sessions, i);
            if (!s->dead)
                continue;
            char name[CW_NAME_MAX_HARD + 1];
            strcpy(name, s->user->name);
            /* Shared store: a session another broker took over ends here
             * without presence (the user is online there) and without a
             * release (the claim is that broker's); one still claiming
             * was never announced, and its claim's reply releases it. */
            bool taken = s->taken_over, claiming = s->claiming;
            cwor_release(b, s);
            cw_sessions_close(b->sessions, &s, b->now_us);
            if (taken) {
                CW_INFO("%s: session closed (taken over by another broker)", name);
                continue;
            }
            if (claiming) {
                CW_INFO("%s: gone before its login completed", name);
                continue;
            }
            cwd_release(b, name); /* shared store only */
            b->stats.expired++;
            CW_INFO("expired %s", name);
            /* May mark more sessions dead: the outer loop goes again. */
            announce(b, name, false, CAUSEWAY__V1__PRESENCE__REASON__REASON_EXPIRED, NULL);
        }
        log_user_log(b);
    }
    cw_sessions_check(b->sessions);
}

/* -------------------------------------------------------------------------
 * Requests
 */


/* The rate limit (cfg.rate per second, up to cfg.burst at once) of user u:
 * takes one token, or answers RATE_LIMITED and returns false. The bucket
 * belongs to the user, not the session, so logging out and in again does
 * not refill it, and a Login itself costs a token. */
static bool take_token(cw_broker_t *b, cwb_user_t *u, const void *id, size_t id_len,
                       uint64_t request_id)
{
    if (!b->cfg.rate)
        return true;
    double burst = b->cfg.burst;
    if (!u->tokens_ms)
        u->tokens = burst;
    else
        u->tokens += (double) (b->now_ms - u->tokens_ms) * b->cfg.rate / 1000.0;
    u->tokens_ms = b->now_ms ? b->now_ms : 1;
    if (u->tokens > burst)
        u->tokens = burst;
    if (u->tokens < 1.0) {
        char detail[96 + CW_NAME_MAX_HARD];
        snprintf(detail, sizeof detail,
                 "more than %u requests/s (burst %u) from user %s; retry later", b->cfg.rate,
                 b->cfg.burst, u->name);
        cwe_reply_status(b, id, id_len, request_id, CW_RATE_LIMITED, detail);
        return false;
    }
    u->tokens -= 1.0;
    return true;
}

/* CURVE: true if the key of the message being handled is registered for
 * `name`; otherwise replies UNAUTHORIZED (saying only which name the key
 * may use, never anything about `name`) and returns false. */
static bool key_may_login(cw_broker_t *b, const char *name, uint64_t rid, const void *id,
                          size_t id_len)
{
    const char *bound = cw_zap_user_of(b->zap, b->peer_key);
    if (bound && name && strcmp(bound, name) == 0)
        return true;
    char detail[160];
    if (bound)
        snprintf(detail, sizeof detail, "this key may only log in as '%s'", bound);
    else
        snprintf(detail, sizeof detail, "this connection's key is not registered (any more)");
    /* The name comes from the wire: logged only if it is a valid one. */
    bool printable = name && cw_name_check(name, CW_NAME_MAX_HARD, NULL) == CW_OK;
    CW_WARN("login as '%s' refused: key %s %s%s", printable ? name : "(invalid name)",
            b->peer_key ? b->peer_key : "-", bound ? "belongs to " : "is not registered",
            bound ? bound : "");
    cwe_reply_status(b, id, id_len, rid, CW_UNAUTHORIZED, detail);
    return false;
}

/* Closes s, a session whose login did not complete (no presence: it was
 * never announced). */
static void drop_unlogged(cw_broker_t *b, cw_session_t *s)
{
    if (s->dead)
        b->n_dead--;
    cwor_release(b, s);
    cw_sessions_close(b->sessions, &s, b->now_us);
}

/* The Login's reply for s (logged in, or resumed), then presence and the
 * first pushes. The second half of handle_login: at once with one broker,
 * when the claim answers with a shared store (on_claims). */
static void finish_login(cw_broker_t *b, cw_session_t *s, uint64_t rid, bool resumed, bool fresh,
                         const char *agent)
{
    cwb_user_t *user = s->user;
    const void *id = s->id + 1;
    size_t id_len = s->id[0];
    if (fresh)
        b->mc.logins++;
    Causeway__V1__Reply reply;
    Causeway__V1__LoginInfo info;
    causeway__v1__reply__init(&reply);
    causeway__v1__login_info__init(&info);
    info.broker_version = CW_VERSION;
    info.heartbeat_ms = b->cfg.heartbeat_ms;
    info.liveness = b->cfg.liveness;
    info.max_frame = b->cfg.max_frame;
    info.max_recipients = b->cfg.max_recipients;
    info.max_text = b->cfg.max_text;
    info.resume_token.data = s->token;
    info.resume_token.len = s->resumable ? sizeof s->token : 0;
    info.durable = b->durable != NULL;
    Causeway__V1__Deliver *resume = cwr_resume_clock(user);
    if (resume) {
        info.n_clock = resume->n_clock;
        info.clock = resume->clock;
    }
    reply.status = (Causeway__V1__Status) CW_OK;
    reply.detail = resumed ? "session resumed" : "logged in";
    reply.login = &info;
    bool sent = send_with_user_log(b, id, id_len, rid, &reply, !s->quiet, NULL, NULL);
    if (resume)
        causeway__v1__deliver__free_unpacked(resume, NULL);
    if (!sent)
        return;

    CW_INFO("%s %s%s%s%s", resumed ? "resumed" : "login", user->name, agent && *agent ? " (" : "",
            agent ? agent : "", agent && *agent ? ")" : "");
    if (!resumed) {
        announce(b, user->name, true, CAUSEWAY__V1__PRESENCE__REASON__REASON_LOGIN, s);
        log_user_log(b);
    }
    cwd_on_login(b, s);
}

/* Shared store: finishes the Logins whose claim was answered (store_if.h
 * S4). A claim for a session that is gone (closed or replaced meanwhile)
 * is released, unless a newer session of the user holds it now. */
static void on_claims(cw_broker_t *b)
{
    cwd_claimed_t c;
    while (cwd_next_claimed(b, &c)) {
        cwb_user_t *u = cw_sessions_user(b->sessions, c.user);
        cw_session_t *s = u ? u->session : NULL;
        /* A claim answered STORE_ERROR may still have been written: the
         * primary ran it and only its WAIT fell short (no rollback). It is
         * released as well, or the name would stay NAME_TAKEN on every
         * other broker for as long as this one runs (the release removes
         * only this broker's own claim). */
        bool written = c.status == CW_OK || c.status == CW_STORE_ERROR;
        if (!s || !s->claiming || s->serial != c.serial) {
            if (written && !s)
                cwd_release(b, c.user);
            continue;
        }
        if (c.status == CW_OK && !c.resumed && c.resume && !s->dead) {
            /* The token presented matched no session anywhere: a new
             * session, which gets a new token (§7.5: an equal token means
             * resumed), claimed again under it. */
            uint8_t old[CW_TOKEN_LEN];
            memcpy(old, s->token, sizeof old);
            if (getrandom(s->token, sizeof s->token, 0) == (ssize_t) sizeof s->token &&
                cwd_claim(b, s, false) == CW_OK)
                continue;
            memcpy(s->token, old, sizeof old); /* the claim holds the one presented */
        }
        s->claiming = false;
        if (c.status != CW_OK || s->dead) {
            if (c.status == CW_NAME_TAKEN) {
                char detail[160];
                snprintf(detail, sizeof detail,
                         "name '%s' is held by a live session on another broker", c.user);
                cwe_reply_status(b, s->id + 1, s->id[0], s->login_rid, CW_NAME_TAKEN, detail);
            } else if (c.status != CW_OK) {
                cwe_reply_status(b, s->id + 1, s->id[0], s->login_rid,
                                 c.status == CW_SHUTTING_DOWN ? CW_SHUTTING_DOWN : CW_STORE_ERROR,
                                 "the store could not decide who serves this name now; retry");
                if (written)
                    cwd_release(b, c.user);
            } else {
                cwd_release(b, c.user); /* the peer went while its claim was decided */
            }
            drop_unlogged(b, s);
            continue;
        }
        u->remote_online = false;
        s->last_rx_ms = b->now_ms; /* heartbeat x liveness from the Reply on (tick) */
        finish_login(b, s, s->login_rid, c.resumed, true, s->agent);
    }
}

/* The Login options that a session takes from its (latest) Login. */
static void login_options(cw_broker_t *b, cw_session_t *s, const Causeway__V1__Login *login)
{
    if (b->zap) {
        snprintf(s->key, sizeof s->key, "%s", b->peer_key);
        s->fd = b->peer_fd;
        s->gone = false;
    }
    s->quiet = login->quiet;
    cwor_set_pull(b, s, login->pull); /* a resumed session that now pulls holds nothing back */
    s->receipts = login->receipts;
}

static void handle_login(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                         const cw_env_t *env)
{
    const Causeway__V1__Login *login = env->login;
    uint64_t rid = env->request_id;
    if (s) {
        cwe_reply_status(b, id, id_len, rid, CW_ALREADY_LOGGED_IN, "this connection is already logged in");
        return;
    }
    if (b->zap && !key_may_login(b, login->name, rid, id, id_len))
        return;
    const char *why = NULL;
    if (cw_name_check(login->name, b->cfg.max_name, &why) != CW_OK) {
        cwe_reply_status(b, id, id_len, rid, CW_BAD_NAME, why);
        return;
    }
    /* Strings are valid UTF-8 without zero bytes (cw_env_decode). */
    if (login->agent && strlen(login->agent) > AGENT_MAX) {
        cwe_reply_status(b, id, id_len, rid, CW_BAD_REQUEST, "Login.agent is longer than 128 bytes");
        return;
    }
    if (cwd_fenced(b)) { /* shared store: our lease lapsed (PROTOCOL.md §13.13) */
        cwe_reply_status(b, id, id_len, rid, CW_SHUTTING_DOWN, CWD_FENCED_DETAIL);
        return;
    }
    cwb_user_t *user = cw_sessions_user(b->sessions, login->name);
    if (user && !take_token(b, user, id, id_len, rid))
        return; /* logging in again does not refill the bucket */
    bool resumed = false;
    bool presented = login->resume_token.len == CW_TOKEN_LEN;
    if (user && user->session) {
        cw_session_t *old = user->session;
        if (old->resumable && presented &&
            memcmp(login->resume_token.data, old->token, CW_TOKEN_LEN) == 0) {
            if (old->dead)
                b->n_dead--; /* rescued before the reaper got it */
            if (cw_sessions_rebind(b->sessions, old, id, id_len) != 0) {
                cwe_reply_status(b, id, id_len, rid, CW_INTERNAL, "out of memory");
                return;
            }
            s = old;
            s->last_rx_ms = b->now_ms;
            if (s->claiming) {
                /* The same client again (a new connection with the token it
                 * presented) while the claim is decided: the claim's answer
                 * goes to this connection and this Login. */
                s->login_rid = rid;
                login_options(b, s, login);
                return;
            }
            /* A new serial: store reads issued for the old connection are
             * ignored when they return, and cwd_on_login reads afresh. */
            s->serial = ++b->serial;
            cwor_resumed(b, s);
            resumed = true;
        } else {
            char detail[128];
            snprintf(detail, sizeof detail, "name '%s' is held by a live session", login->name);
            cwe_reply_status(b, id, id_len, rid, CW_NAME_TAKEN, detail);
            return;
        }
    }
    if (!resumed) {
        if (cw_sessions_count(b->sessions) >= b->cfg.max_sessions) {
            cwe_reply_status(b, id, id_len, rid, CW_TOO_MANY_SESSIONS,
                         "the broker's session limit is reached");
            return;
        }
        if (!user) {
            int rc = cwd_add_user(b, login->name);
            if (rc != CW_OK) {
                cwe_reply_status(b, id, id_len, rid, rc, "cannot store the new user name now");
                return;
            }
        }
        bool created = false;
        user = cw_sessions_user_add(b->sessions, login->name, &created);
        if (user && created && b->durable)
            user->stored = CW_USER_STORING; /* cwd_add_user above */
        if (!user || !(s = cw_sessions_open(b->sessions, id, id_len, user, b->now_ms))) {
            cwe_reply_status(b, id, id_len, rid, CW_INTERNAL, "out of memory");
            return;
        }
        if (created)
            CW_INFO("new user %s", user->name);
        s->serial = s->origin = ++b->serial;
        if (b->shared && presented) {
            /* A token this broker does not know: maybe a session of
             * another broker's, which the claim takes over if it matches
             * there (store_if.h S4). Either way it is this session's. */
            memcpy(s->token, login->resume_token.data, CW_TOKEN_LEN);
            s->resumable = true;
        } else {
            s->resumable = getrandom(s->token, sizeof s->token, 0) == (ssize_t) sizeof s->token;
            if (!s->resumable) /* without a secret token nobody may resume it */
                CW_WARN("getrandom failed; session %s cannot be resumed", user->name);
        }
        user->last_seen_us = b->now_us;
        cwo_session_opened(b, s);
        if (login->agent)
            snprintf(s->agent, sizeof s->agent, "%.*s", (int) sizeof s->agent - 1, login->agent);
    }
    login_options(b, s, login);
    if (b->shared && !resumed) {
        /* Two-phase: the store decides who serves the name (another broker
         * may); the reply waits for its answer (on_claims). */
        s->claiming = true;
        s->login_rid = rid;
        int rc = cwd_claim(b, s, presented);
        if (rc != CW_OK) {
            cwe_reply_status(b, id, id_len, rid, rc, "cannot ask the store for this name now");
            drop_unlogged(b, s);
        }
        return;
    }
    finish_login(b, s, rid, resumed, !resumed, login->agent);
}

static void handle_logout(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                          const cw_env_t *env)
{
    if (!s) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_NOT_LOGGED_IN, "logout without a session");
        return;
    }
    char name[CW_NAME_MAX_HARD + 1];
    strcpy(name, s->user->name);
    if (s->dead)
        b->n_dead--;
    cwor_release(b, s);
    cw_sessions_close(b->sessions, &s, b->now_us);
    /* A shared store answers once the name is free on every broker. */
    if (!cwd_release_then_reply(b, name, id, id_len, env->request_id))
        cwe_reply_status(b, id, id_len, env->request_id, CW_OK, "logged out");
    CW_INFO("logout %s", name);
    announce(b, name, false, CAUSEWAY__V1__PRESENCE__REASON__REASON_LOGOUT, NULL);
    log_user_log(b);
}

/* Checks a Send against the limits; replies and returns false if refused. */
static bool send_valid_or_reply(cw_broker_t *b, const void *id, size_t id_len,
                                const cw_env_t *env)
{
    const Causeway__V1__Send *send = env->send;
    uint64_t rid = env->request_id;
    if (send->broadcast && send->n_to > 0) {
        cwe_reply_status(b, id, id_len, rid, CW_BAD_REQUEST, "broadcast with an explicit recipient list");
        return false;
    }
    if (!send->broadcast && send->n_to == 0) {
        cwe_reply_status(b, id, id_len, rid, CW_BAD_REQUEST, "no recipients");
        return false;
    }
    if (send->n_to > b->cfg.max_recipients) {
        char detail[96];
        snprintf(detail, sizeof detail, "%zu recipients; the limit is %u", send->n_to,
                 b->cfg.max_recipients);
        cwe_reply_status(b, id, id_len, rid, CW_TOO_MANY_RECIPIENTS, detail);
        return false;
    }
    size_t text_len = send->text ? strlen(send->text) : 0;
    if (text_len > b->cfg.max_text) {
        char detail[96];
        snprintf(detail, sizeof detail, "text is %zu bytes; the limit is %u", text_len,
                 b->cfg.max_text);
        cwe_reply_status(b, id, id_len, rid, CW_TOO_LARGE, detail);
        return false;
    }
    /* text, to and message_id are valid UTF-8 without zero bytes: frames
     * that break that are refused by cw_env_decode (PROTOCOL.md §5). */
    if (send->message_id && strlen(send->message_id) > MESSAGE_ID_MAX) {
        cwe_reply_status(b, id, id_len, rid, CW_BAD_REQUEST, "message_id is longer than 128 bytes");
        return false;
    }
    if (send->receipt && !send->durable) {
        cwe_reply_status(b, id, id_len, rid, CW_BAD_REQUEST,
                         "a read receipt needs a durable message (receipt without durable)");
        return false;
    }
    if (send->durable && !b->durable) {
        cwe_reply_status(b, id, id_len, rid, CW_NOT_DURABLE,
                     "durable sending needs a broker started with --data DIR");
        return false;
    }
    return true;
}

/* Live sends to at most SEND_SMALL recipients keep their recipient arrays
 * on the stack: no allocation on the unicast path. */
#define SEND_SMALL 8
typedef struct {
    Causeway__V1__RecipientStatus rcpts[SEND_SMALL];
    Causeway__V1__RecipientStatus *rptrs[SEND_SMALL];
    cwb_user_t *users[SEND_SMALL];
    char *to[SEND_SMALL];
    bool remote[SEND_SMALL];
} send_scratch_t;

static void handle_send(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                        cw_env_t **envp)
{
    const cw_env_t *env = *envp;
    if (!s) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_NOT_LOGGED_IN, "send without a session");
        return;
    }
    if (!send_valid_or_reply(b, id, id_len, env))
        return;
    if (env->send->durable) {
        cwd_send(b, id, id_len, s, envp);
        return;
    }
    const Causeway__V1__Send *send = env->send;
    size_t cap = send->broadcast ? cw_sessions_user_count(b->sessions) : send->n_to;
    send_scratch_t small;
    void *block = NULL;
    Causeway__V1__RecipientStatus *rcpts;
    Causeway__V1__RecipientStatus **rptrs;
    cwb_user_t **users;
    char **to;
    bool *remote;
    if (cap <= SEND_SMALL) {
        rcpts = small.rcpts;
        rptrs = small.rptrs;
        users = small.users;
        to = small.to;
        remote = small.remote;
    } else {
        /* One block for the five arrays; every piece's size but the last
         * is a multiple of 8, so each stays pointer-aligned. */
        size_t per = sizeof *rcpts + sizeof *rptrs + sizeof *users + sizeof *to + sizeof *remote;
        block = cap <= SIZE_MAX / per ? malloc(cap * per) : NULL;
        rcpts = block;
        rptrs = block ? (void *) (rcpts + cap) : NULL;
        users = block ? (void *) (rptrs + cap) : NULL;
        to = block ? (void *) (users + cap) : NULL;
        remote = block ? (void *) (to + cap) : NULL;
    }
    if (!rcpts) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        goto done;
    }
    long n = (long) cw_sessions_resolve(b->sessions, send->broadcast, send->to, send->n_to,
                                        s->user, (const char **) to, users);
    for (long i = 0; i < n; i++) {
        causeway__v1__recipient_status__init(&rcpts[i]);
        rcpts[i].name = to[i];
    }

    /* One Deliver frame, packed once, shared by every recipient. */
    cw_env_t denv;
    Causeway__V1__Deliver d;
    cw_env_init(&denv, 0);
    causeway__v1__deliver__init(&d);
    d.from = s->user->name;
    if (!send->broadcast) {
        d.n_to = (size_t) n; /* to[] holds the resolved names */
        d.to = to;
    }
    d.broadcast = send->broadcast;
    d.text = send->text;
    d.timestamp_us = b->now_us;
    d.message_id = send->message_id;
    d.n_clock = env->n_clock;
    d.clock = env->clock;
    denv.body_case = CW_BODY(DELIVER);
    denv.deliver = &d;
    zmq_msg_t proto;
    if (cw_env_to_msg(&denv, &proto) != CW_OK) {
        cwe_reply_status(b, id, id_len, env->request_id, CW_INTERNAL, "out of memory");
        goto done;
    }
    size_t delivered = 0, offline = 0, unknown = 0, flooded = 0, n_remote = 0;
    for (long i = 0; i < n; i++) {
        int st;
        remote[i] = false;
        cw_session_t *rs = users[i] ? users[i]->session : NULL;
        bool local = rs && !rs->dead && !rs->claiming;
        if (!users[i]) {
            st = CW_UNKNOWN_USER;
            unknown++;
        } else if (!local && b->shared && (!send->broadcast || users[i]->remote_online)) {
            /* Maybe served by another broker: one LIVE_SEND asks for all of
             * them (a broadcast: those known to be online elsewhere). */
            st = CW_OFFLINE; /* until the store answers */
            remote[i] = true;
            n_remote++;
        } else if (!local) {
            st = CW_OFFLINE;
            offline++;
        } else {
            zmq_msg_t copy;
            zmq_msg_init(&copy);
            zmq_msg_copy(&copy, &proto);
            st = cwor_send_live(b, users[i]->session, &copy);
            if (st == CW_DELIVERED) {
                delivered++;
            } else if (st == CW_FLOODED) {
                flooded++;
            } else {
                offline++;
            }
        }
        rcpts[i].status = (Causeway__V1__Status) st;
    }
    if (n_remote) /* the Reply waits for the store (durable.c) */
        cwd_live_send(b, id, id_len, s, envp, rcpts, remote, (size_t) n, &proto);
    zmq_msg_close(&proto);
    b->stats.messages_routed++;
    size_t text_len = send->text ? strlen(send->text) : 0;
    int kind = cw_mon_kind(send->broadcast, send->n_to);
    b->mc.rx[0][kind]++;
    b->mc.rx_bytes[0][kind] += text_len;
    b->mc.dl[0][kind] += delivered;
    b->mc.dl_bytes[0][kind] += delivered * text_len;
    b->mc.fates[CW_DELIVERED] += delivered;
    b->mc.fates[CW_OFFLINE] += offline;
    b->mc.fates[CW_UNKNOWN_USER] += unknown;
    b->mc.fates[CW_FLOODED] += flooded;
    if (b->now_ms < b->ring_until_ms) /* an operator watches (cwo_recent) */
        cw_mon_ring_add(b->ring, b->now_us, s->user->name, to,
                        send->broadcast ? 0 : (size_t) n, (size_t) n, send->broadcast, false,
                        (uint32_t) delivered, send->text, text_len);

    if (!n_remote) /* s is the sender: id is its routing id */
        cwe_reply_recipients(b, s, id, id_len, env->request_id, CW_OK, "sent", false, rcpts,
                             rptrs, (size_t) n);

    if (cw_log_enabled(CW_LOG_INFO)) {
        char names[256] = "";
        size_t off = 0;
        for (long i = 0; i < n && off < sizeof names; i++) {
            int w = snprintf(names + off, sizeof names - off, "%s%s", i ? "," : "", rcpts[i].name);
            off += w > 0 ? (size_t) w : 0;
        }
        if (off >= sizeof names)
            strcpy(names + sizeof names - 4, "...");
        char clock[256];
        CW_INFO("forward %s -> %s%s (%zu bytes): delivered %zu, offline %zu, unknown %zu%s%s clock %s",
                s->user->name, send->broadcast ? "all:" : "", names,
                send->text ? strlen(send->text) : 0, delivered, offline, unknown,
                flooded ? ", flooded " : "", flooded ? "yes" : "",
                cw_clock_format(env->clock, env->n_clock, clock, sizeof clock));
        CW_DEBUG("text from %s: %s", s->user->name, send->text ? send->text : "");
    }
done:
    free(block);
}

static void handle_who(cw_broker_t *b, const void *id, size_t id_len, const cw_env_t *env)
{
    Causeway__V1__Reply reply;
    causeway__v1__reply__init(&reply);
    reply.status = (Causeway__V1__Status) CW_OK;
    reply.detail = "user log";
    send_with_user_log(b, id, id_len, env->request_id, &reply, true, env->who->after,
                       "user log (more follow: ask again with Who.after)");
}

/* The abuse limits a request passes before it is handled (docs/OPERATIONS.md
 * "Floods, slow readers and budgets"): the session's request rate
 * (token bucket: cfg.rate per second, up to cfg.burst at once), and the
 * bytes of bulky replies this connection has not read (cfg.reply_budget),
 * for the requests that produce such replies. Logout, Ack and Heartbeat
 * always pass: they free resources. Replies and returns false if refused.
 * PROTOCOL.md section 14.1. */
static bool within_limits_or_reply(cw_broker_t *b, const void *id, size_t id_len,
                                   cw_session_t *s, const cw_env_t *env)
{
    int body = env->body_case;
    bool operator_req = body == CW_BODY(SESSIONS) || body == CW_BODY(QUEUES) ||
                        body == CW_BODY(RECENT);
    if (body != CW_BODY(LOGIN) && body != CW_BODY(SEND) && body != CW_BODY(WHO) &&
        body != CW_BODY(STATS) && body != CW_BODY(FETCH) && body != CW_BODY(HISTORY) &&
        !operator_req)
        return true; /* Logout, Ack, Heartbeat; other bodies are refused anyway */
    if (s && !take_token(b, s->user, id, id_len, env->request_id))
        return false;
    if (body == CW_BODY(LOGIN) || body == CW_BODY(WHO) || body == CW_BODY(SEND) ||
        body == CW_BODY(FETCH) || body == CW_BODY(HISTORY) || operator_req) {
        /* Unread replies, and those owed for requests the store has not
         * answered yet (pipelined Fetch/History would pass otherwise). */
        uint64_t unread = cw_outq_unread(b->outq, id, id_len) + (s ? s->replies_owed : 0);
        if (unread >= b->cfg.reply_budget) {
            char detail[160];
            snprintf(detail, sizeof detail,
                     "%llu bytes of earlier replies to this connection are unread or "
                     "pending (reply-budget %u); read them first",
                     (unsigned long long) unread, b->cfg.reply_budget);
            cwe_reply_status(b, id, id_len, env->request_id, CW_FLOODED, detail);
            return false;
        }
    }
    return true;
}

/* Routes one decoded envelope from the peer `id` (session s, may be NULL). */
static void dispatch(cw_broker_t *b, const void *id, size_t id_len, cw_session_t *s,
                     cw_env_t **envp)
{
    const cw_env_t *env = *envp;
    uint64_t rid = env->request_id;
    if (!cw_clock_entries_valid(env->clock, env->n_clock)) {
        cwe_reply_bad_frame(b, id, id_len, rid, CW_BAD_REQUEST,
                     "clock entries must be sorted by node, unique and non-empty");
        return;
    }
    if (s && s->claiming) {
        /* Logged in only when the store's claim answers (handle_login). */
        if (env->body_case == CW_BODY(LOGIN)) {
            cwe_reply_status(b, id, id_len, rid, CW_ALREADY_LOGGED_IN,
                             "a login on this connection is still being decided; wait for its reply");
            return;
        }
        if (env->body_case == CW_BODY(LOGOUT)) {
            cwe_reply_status(b, id, id_len, rid, CW_OK, "logged out");
            CW_INFO("%s: logged out before its login completed", s->user->name);
            drop_unlogged(b, s); /* the claim's answer releases it */
            return;
        }
        s = NULL; /* not logged in yet */
    }
    if (!within_limits_or_reply(b, id, id_len, s, env))
        return;
    if (s && env->n_clock) /* the user's resume clock (resume_clock.c) */
        cwr_note_clock(b, s->user, env->clock, env->n_clock,
                       env->body_case == CW_BODY(SEND) && env->send->durable);
    switch (env->body_case) {
    case CW_BODY(LOGIN):
        handle_login(b, id, id_len, s, env);
        break;
    case CW_BODY(LOGOUT):
        handle_logout(b, id, id_len, s, env);
        break;
    case CW_BODY(SEND):
        handle_send(b, id, id_len, s, envp);
        break;
    case CW_BODY(WHO):
        handle_who(b, id, id_len, env);
        break;
    case CW_BODY(STATS):
        cwo_stats(b, id, id_len, s, env);
        break;
    case CW_BODY(SESSIONS):
        cwo_sessions(b, id, id_len, s, env);
        break;
    case CW_BODY(QUEUES):
        cwo_queues(b, id, id_len, s, env);
        break;
    case CW_BODY(RECENT):
        cwo_recent(b, id, id_len, s, env);
        break;
    case CW_BODY(ACK):
    case CW_BODY(FETCH):
    case CW_BODY(HISTORY):
        if (!s)
            cwe_reply_status(b, id, id_len, rid, CW_NOT_LOGGED_IN, "log in first");
        else if (!b->durable)
            cwe_reply_status(b, id, id_len, rid, CW_NOT_DURABLE,
                             "queues need a broker started with --data DIR");
        else if (env->body_case == CW_BODY(ACK))
            cwd_ack(b, id, id_len, s, env);
        else if (env->body_case == CW_BODY(FETCH))
            cwd_fetch(b, id, id_len, s, env);
        else
            cwd_history(b, id, id_len, s, env);
        break;
    case CW_BODY(HEARTBEAT):
        break; /* liveness already noted */
    case CW_BODY(DELIVER):
    case CW_BODY(PRESENCE):
    case CW_BODY(REPLY):
    case CW_BODY(RECEIPT):
        cwe_reply_bad_frame(b, id, id_len, rid, CW_BAD_REQUEST,
                        "deliver, presence, reply and receipt are broker-to-client messages");
        break;
    default:
        cwe_reply_bad_frame(b, id, id_len, rid, CW_UNKNOWN_TYPE, "unknown message type");
        break;
    }
}

/* Handles one message (see cw_broker_handle) up to, not including, the
 * safe point after it. */
static void handle_message(cw_broker_t *b, const void *id, size_t id_len,
                           const void *const *frames, const size_t *sizes, size_t n_frames)
{
    b->stats.frames_in += n_frames;
    b->mc.bytes_in += n_frames ? sizes[0] : 0;
    cw_session_t *s = cw_sessions_find(b->sessions, id, id_len);
    if (s && b->zap && (!b->peer_key || strcmp(s->key, b->peer_key) != 0)) {
        /* A client may choose its routing id: a connection that takes over
         * the id of a session whose connection is gone (before it expires)
         * must not take over the session. With CURVE a session belongs to
         * the key that logged it in. */
        CW_WARN("refused a frame from key %s: its routing id belongs to %s's session",
                b->peer_key ? b->peer_key : "-", s->user->name);
        cwe_reply_status(b, id, id_len, 0, CW_UNAUTHORIZED,
                         "this connection's routing id belongs to another key's session; "
                         "use a fresh routing id");
        return;
    }
    if (s && b->zap && (s->gone || s->fd != b->peer_fd)) {
        /* The same key on a new connection with the same routing id: the
         * session's owner is back. */
        s->fd = b->peer_fd;
        s->gone = false;
    }
    if (s)
        s->last_rx_ms = b->now_ms;
    if (n_frames != 1) {
        CW_WARN("dropped a %zu-frame message from %s", n_frames, s ? s->user->name : "a peer");
        cwe_reply_bad_frame(b, id, id_len, 0, CW_BAD_REQUEST, "a causeway message is exactly one frame");
        return;
    }
    cw_env_t *env = NULL;
    uint64_t rid = 0;
    const char *detail = NULL;
    int rc = cw_env_decode(frames[0], sizes[0], b->cfg.max_frame, &env, &rid, &detail);
    if (rc != CW_OK) {
        CW_DEBUG("bad frame (%zu bytes) from %s: %s", sizes[0], s ? s->user->name : "a peer",
                 detail);
        cwe_reply_bad_frame(b, id, id_len, rid, rc, detail);
        return;
    }
    CW_TRACE("%s from %s, request %llu", cw_env_body_name(env), s ? s->user->name : "a peer",
             (unsigned long long) rid);
    dispatch(b, id, id_len, s, &env);
    cw_env_free(&env); /* NULL if a durable send kept it */
}

void cw_broker_handle(cw_broker_t *b, const void *id, size_t id_len,
                      const void *const *frames, const size_t *sizes, size_t n_frames)
{
    handle_message(b, id, id_len, frames, sizes, n_frames);
    if (b->n_dead)
        reap(b); /* the safe point after the frame */
}

/* -------------------------------------------------------------------------
 * Loop
 */

static void update_time(cw_broker_t *b)
{
    b->now_ms = cw_mono_ms();
    b->now_us = cw_now_us();
}

/* Heartbeats to idle sessions; marks silent ones dead. */
static void tick(cw_broker_t *b)
{
    int64_t expiry = (int64_t) b->cfg.heartbeat_ms * b->cfg.liveness;
    cw_env_t hb_env;
    Causeway__V1__Heartbeat hb;
    cw_env_init(&hb_env, 0);
    causeway__v1__heartbeat__init(&hb);
    hb_env.body_case = CW_BODY(HEARTBEAT);
    hb_env.heartbeat = &hb;
    size_t n = cw_sessions_count(b->sessions);
    for (size_t i = 0; i < n; i++) {
        cw_session_t *s = cw_sessions_at(b->sessions, i);
        if (s->dead)
            continue;
        /* A session whose Login waits for the store's claim is not logged
         * in yet, and its client sends no Heartbeat before the Reply
         * (PROTOCOL.md §9.1, §9.2): it is not expired for silence. The
         * store answers every claim (store_if.h: every request gets one
         * reply, in order), at the latest --store-retry-ms after the batch
         * holding it started, which may be after earlier batches' deadlines. */
        if (s->claiming)
            continue;
        if (b->now_ms - s->last_rx_ms > expiry) {
            CW_DEBUG("%s silent for %lld ms", s->user->name, (long long) (b->now_ms - s->last_rx_ms));
            s->dead = true;
            b->n_dead++;
        } else if (b->now_ms - s->last_tx_ms >= (int64_t) b->cfg.heartbeat_ms) {
            zmq_msg_t msg;
            if (cw_env_to_msg(&hb_env, &msg) == CW_OK)
                cwe_push(b, s, &msg);
        }
    }
    cwd_tick(b);
    cw_outq_sweep(b->outq);
    reap(b);
}

/* Receives and handles one message if one is waiting. Returns 1 if one was
 * handled, 0 if none was waiting, -1 on a fatal socket error. */
static int recv_one(cw_broker_t *b)
{
    zmq_msg_t id;
    zmq_msg_init(&id);
    if (zmq_msg_recv(&id, b->router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&id);
        if (errno == EAGAIN || errno == EINTR)
            return 0;
        CW_ERROR("receive failed: %s", zmq_strerror(errno));
        return -1;
    }
    /* A ROUTER message is the routing id plus at least one frame. The first
     * KEEP frames are kept; any further ones are only counted (the message
     * is refused as multi-frame anyway). */
    enum { KEEP = 4 };
    zmq_msg_t frames[KEEP];
    const void *data[KEEP] = {0};
    size_t sizes[KEEP] = {0}, n = 0, kept = 0;
    int more = zmq_msg_more(&id);
    while (more) {
        zmq_msg_t scratch;
        zmq_msg_t *f = kept < KEEP ? &frames[kept] : &scratch;
        zmq_msg_init(f);
        if (zmq_msg_recv(f, b->router, 0) < 0) {
            zmq_msg_close(f);
            break;
        }
        more = zmq_msg_more(f);
        n++;
        if (f == &scratch)
            zmq_msg_close(f);
        else
            kept++;
    }
    for (size_t i = 0; i < kept; i++) {
        data[i] = zmq_msg_data(&frames[i]);
        sizes[i] = zmq_msg_size(&frames[i]);
    }
    update_time(b);
    b->frame = kept ? &frames[0] : NULL;
    if (b->zap && kept) { /* the connection's key, from our ZAP handler; never the peer's say */
        b->peer_key = zmq_msg_gets(&frames[0], "User-Id");
        b->peer_fd = zmq_msg_get(&frames[0], ZMQ_SRCFD);
    }
    cw_broker_handle(b, zmq_msg_data(&id), zmq_msg_size(&id), data, sizes, n);
    b->peer_key = NULL;
    b->peer_fd = -1;
    b->frame = NULL;
    for (size_t i = 0; i < kept; i++)
        zmq_msg_close(&frames[i]);
    zmq_msg_close(&id);
    return 1;
}

/* CURVE: reads the router's socket monitor. Logs the handshakes that
 * failed before reaching the ZAP handler (a plain client, a wrong server
 * key, a certificate whose halves do not match; refused keys are logged by
 * the handler itself), and marks the sessions whose connection closed as
 * gone: a client may choose its routing id, so another connection may take
 * over a closed one's id before the session expires, and nothing of the
 * session may be pushed to it. Called before every ZAP request is
 * answered: libzmq reports a close before the descriptor can be reused,
 * and a new connection gets no frame before its ZAP reply, so every close
 * queued before a handshake is seen before that connection exists. */
static void on_monitor_events(cw_broker_t *b)
{
    for (;;) {
        zmq_msg_t ev, ep;
        zmq_msg_init(&ev);
        if (zmq_msg_recv(&ev, b->mon, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&ev);
            return;
        }
        zmq_msg_init(&ep);
        if (zmq_msg_more(&ev))
            zmq_msg_recv(&ep, b->mon, 0);
        uint16_t event = 0;
        uint32_t value = 0;
        if (zmq_msg_size(&ev) >= 6) {
            memcpy(&event, zmq_msg_data(&ev), 2);
            memcpy(&value, (uint8_t *) zmq_msg_data(&ev) + 2, 4);
        }
        if (event == ZMQ_EVENT_DISCONNECTED) {
            size_t n = cw_sessions_count(b->sessions);
            for (size_t i = 0; i < n; i++) {
                cw_session_t *s = cw_sessions_at(b->sessions, i);
                if (!s->dead && !s->gone && s->fd == (int) value) {
                    s->gone = true;
                    CW_DEBUG("%s: connection closed; nothing is pushed until it is back",
                             s->user->name);
                }
            }
        } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
                   event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL)
            CW_WARN("handshake failed on %.*s: %s", (int) zmq_msg_size(&ep),
                    (const char *) zmq_msg_data(&ep),
                    value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
                        ? "a plain (non-CURVE) client"
                        : "a plain client, or a CURVE client with a wrong server key or "
                          "mixed-up keys?");
        zmq_msg_close(&ev);
        zmq_msg_close(&ep);
    }
}

void cw_broker_watch_reload(cw_broker_t *b, volatile sig_atomic_t *flag)
{
    b->reload = flag;
}

/* Reload signal: re-reads the users directory; ends the sessions whose key is no
 * longer registered for their user. A bad directory keeps the old keys. */
static void reload_users(cw_broker_t *b)
{
    char err[1024];
    if (cw_zap_reload(b->zap, err, sizeof err) != 0) {
        CW_ERROR("users not reloaded, the old keys stay in force: %s", err);
        return;
    }
    size_t n = cw_sessions_count(b->sessions), ended = 0;
    for (size_t i = 0; i < n; i++) {
        cw_session_t *s = cw_sessions_at(b->sessions, i);
        const char *bound = cw_zap_user_of(b->zap, s->key);
        if (!s->dead && (!bound || strcmp(bound, s->user->name) != 0)) {
            CW_WARN("%s: key %s no longer registered; session ended", s->user->name, s->key);
            s->dead = true;
            b->n_dead++;
            ended++;
        }
    }
    CW_INFO("users reloaded: %zu keys; %zu sessions ended", cw_zap_key_count(b->zap), ended);
    reap(b);
}

int cw_broker_run(cw_broker_t *b, volatile sig_atomic_t *stop)
{
    int64_t tick_ms = b->cfg.heartbeat_ms / 4 ? b->cfg.heartbeat_ms / 4 : 1;
    update_time(b);
    int64_t next_tick = b->now_ms + tick_ms;
    CW_INFO("causeway-broker %s serving on %s (heartbeat %u ms x %u)", CW_VERSION, b->endpoint,
            b->cfg.heartbeat_ms, b->cfg.liveness);
    while (!*stop) {
        if (b->zap && b->reload && *b->reload) {
            *b->reload = 0;
            update_time(b);
            reload_users(b);
        }
        /* The ZAP handler is polled on this thread: handshakes wait for it
         * no longer than for one batch of messages. */
        zmq_pollitem_t items[4] = {{b->router, 0, ZMQ_POLLIN, 0},
                                   {cwd_poll_handle(b), 0, ZMQ_POLLIN, 0},
                                   {b->zap ? cw_zap_socket(b->zap) : NULL, 0, ZMQ_POLLIN, 0},
                                   {b->mon, 0, ZMQ_POLLIN, 0}};
        /* At most 100 ms, so a signal that lands just before the poll (or
         * on another thread) is seen promptly even with long heartbeats. */
        int64_t wait = next_tick - cw_mono_ms();
        if (wait > 100)
            wait = 100;
        if (!b->durable) { /* keep the items polled contiguous */
            items[1] = items[2];
            items[2] = items[3];
        }
        int zap_item = b->durable ? 2 : 1;
        int n_items = zap_item + (b->zap != NULL) + (b->zap && b->mon);
        int rc = zmq_poll(items, n_items, wait > 0 ? (long) wait : 0);
        if (rc < 0 && errno != EINTR) {
            CW_ERROR("poll failed: %s", zmq_strerror(errno));
            return -1;
        }
        if (rc > 0 && b->zap && b->mon)
            on_monitor_events(b); /* before any ZAP reply: see there */
        if (rc > 0 && b->zap && (items[zap_item].revents & ZMQ_POLLIN))
            cw_zap_handle(b->zap);
        if (rc > 0 && b->durable && (items[1].revents & ZMQ_POLLIN)) {
            update_time(b);
            cwd_on_replies(b);
            on_claims(b); /* shared store: Logins whose claim was answered */
            if (b->n_dead)
                reap(b);
        }
        if (rc > 0 && (items[0].revents & ZMQ_POLLIN)) {
            for (int i = 0; i < BATCH && !*stop; i++) {
                int got = recv_one(b);
                if (got < 0)
                    return -1;
                if (got == 0)
                    break;
            }
        }
        update_time(b);
        if (b->now_ms >= next_tick) {
            tick(b);
            next_tick = b->now_ms + tick_ms;
        }
        cwo_maybe_publish(b);
    }
    CW_INFO("shutting down: %zu sessions, %zu known users", cw_sessions_count(b->sessions),
            cw_sessions_user_count(b->sessions));
    return 0;
}

/* -------------------------------------------------------------------------
 * Life cycle
 */

cw_broker_t *cw_broker_new(const cw_broker_config_t *cfg, char *err, size_t errlen)
{
    cw_broker_t *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    b->cfg = *cfg;
    b->peer_fd = -1;
    b->sessions = cw_sessions_new();
    b->outq = cw_outq_new();
    b->ctx = zmq_ctx_new();
    b->ring = cw_mon_ring_new(cfg->monitor_text);
    b->monitor = cw_monitor_new();
    if (!b->sessions || !b->outq || !b->ctx || !b->ring || !b->monitor) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    b->router = zmq_socket(b->ctx, ZMQ_ROUTER);
    if (!b->router) {
        snprintf(err, errlen, "cannot create socket: %s", zmq_strerror(errno));
        goto fail;
    }
    int one = 1, linger = 1000;
    int hwm = (int) cfg->sndhwm;
    /* Frames up to twice the limit are read and answered TOO_LARGE; above
     * that libzmq drops the connection without reading the frame. */
    int64_t maxmsg = (int64_t) cfg->max_frame * 2;
    zmq_setsockopt(b->router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    zmq_setsockopt(b->router, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(b->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(b->router, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    if (cfg->curve_secret[0]) {
        cw_keypair_t kp;
        if (cw_keypair_load(cfg->curve_secret, true, &kp, err, errlen) != 0)
            goto fail;
        /* The handler is bound before the socket, so no handshake can
         * happen without it. */
        if (!(b->zap = cw_zap_new(b->ctx, cfg->users, err, errlen)))
            goto fail;
        if (cw_curve_server_apply(b->router, &kp, err, errlen) != 0)
            goto fail;
        char addr[64];
        snprintf(addr, sizeof addr, "inproc://cw-broker-mon-%p", (void *) b);
        if (zmq_socket_monitor(b->router, addr, ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                                    ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                                    ZMQ_EVENT_DISCONNECTED) == 0 &&
            (b->mon = zmq_socket(b->ctx, ZMQ_PAIR)) != NULL) {
            int zero = 0;
            zmq_setsockopt(b->mon, ZMQ_LINGER, &zero, sizeof zero);
            if (zmq_connect(b->mon, addr) != 0) {
                zmq_close(b->mon);
                b->mon = NULL;
            }
        }
        if (!b->mon) {
            /* Closed connections must be seen (on_monitor_events). */
            snprintf(err, errlen, "cannot monitor the broker socket: %s", zmq_strerror(errno));
            explicit_bzero(&kp, sizeof kp);
            goto fail;
        }
        CW_INFO("CURVE on: server key %s, %zu user keys from %s", kp.public_txt,
                cw_zap_key_count(b->zap), cfg->users);
        explicit_bzero(&kp, sizeof kp);
    }
    if (zmq_bind(b->router, cfg->bind) != 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", cfg->bind, zmq_strerror(errno));
        goto fail;
    }
    size_t len = sizeof b->endpoint;
    if (zmq_getsockopt(b->router, ZMQ_LAST_ENDPOINT, b->endpoint, &len) != 0)
        snprintf(b->endpoint, sizeof b->endpoint, "%s", cfg->bind);
    if ((cfg->data[0] || cfg->store[0]) && cwd_open(b, err, errlen) != 0)
        goto fail;
    b->started_ms = cw_mono_ms();
    b->started_us = cw_now_us();
    update_time(b);
    return b;
fail:
    cw_broker_destroy(&b);
    return NULL;
}

void cw_broker_destroy(cw_broker_t **p)
{
    if (!p || !*p)
        return;
    cw_broker_t *b = *p;
    update_time(b);
    cwd_close(b); /* answers what the store still owes, while the socket is open */
    for (size_t i = 0; b->sessions && i < cw_sessions_count(b->sessions); i++)
        cwor_release(b, cw_sessions_at(b->sessions, i));
    if (b->mon)
        zmq_close(b->mon);
    if (b->router)
        zmq_close(b->router);
    cw_zap_destroy(&b->zap);
    if (b->ctx)
        zmq_ctx_term(b->ctx);
    cw_sessions_destroy(&b->sessions);
    cw_outq_destroy(&b->outq);
    cw_monitor_destroy(&b->monitor);
    cw_mon_ring_destroy(&b->ring);
    free(b);
    *p = NULL;
}

const char *cw_broker_endpoint(const cw_broker_t *b)
{
    return b->endpoint;
}

cw_monitor_t *cw_broker_monitor(cw_broker_t *b)
{
    if (!b->monitor_wanted) {
        b->monitor_wanted = true;
        update_time(b);
        cwo_snapshot(b, cw_monitor_back(b->monitor)); /* readers never see an empty one */
        cw_monitor_publish(b->monitor);
        b->next_publish_ms = b->now_ms + CW_MON_PUBLISH_MS;
    }
    return b->monitor;
}
