/*  tui_worker.c: the thread that owns the TUI's cw_client_t (see
 *  tui_worker.h). Two queues under one mutex: jobs (UI -> worker, woken by
 *  a pipe) and results (worker -> UI; a pipe holds one byte while results
 *  wait, so tw_fd is level-triggered). The worker runs jobs one at a time
 *  in posting order and, between jobs, moves the client's events into the
 *  results. Invariant: a job is owned by exactly one side at a time (the
 *  queue it sits in, or the thread working on it).
 */
#include "tui_worker.h"
#include "cw_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One login attempt waits at most this long before the next one. */
#define TW_LOGIN_ATTEMPT_MS 2000

struct tw {
    cw_client_t *c;            /* worker thread only, once started */
    int timeout_ms;            /* per request */
    pthread_t thread;
    pthread_mutex_t mu;
    tw_job_t *jobs, *jobs_tail;        /* under mu */
    tw_job_t *results, *results_tail;  /* under mu */
    int stop;                  /* under mu */
    int logged_in;             /* worker thread only */
    int wake[2];               /* job pipe: UI writes, worker reads */
    int ready[2];              /* result pipe: one byte while results wait */
};

tw_job_t *tw_job_new(tw_kind_t kind)
{
    tw_job_t *j = calloc(1, sizeof *j);
    if (j)
        j->kind = kind;
    return j;
}

void tw_job_destroy(tw_job_t **p)
{
    if (!p || !*p)
        return;
    tw_job_t *j = *p;
    free(j->name);
    for (size_t i = 0; i < j->n_to; i++)
        free(j->to[i]);
    free(j->to);
    free(j->text);
    free(j->message_id);
    cw_reply_destroy(&j->reply);
    cw_event_destroy(&j->ev);
    free(j);
    *p = NULL;
}

static void push(tw_job_t **head, tw_job_t **tail, tw_job_t *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static tw_job_t *pop(tw_job_t **head, tw_job_t **tail)
{
    tw_job_t *j = *head;
    if (j) {
        *head = j->next;
        if (!*head)
            *tail = NULL;
        j->next = NULL;
    }
    return j;
}

static void drain_pipe(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0)
        ;
}

/* Worker thread: hands a result to the UI. */
static void deliver(tw_t *w, tw_job_t *j)
{
    pthread_mutex_lock(&w->mu);
    int was_empty = w->results == NULL;
    push(&w->results, &w->results_tail, j);
    if (was_empty) {
        char b = 1;
        if (write(w->ready[1], &b, 1) < 0) {
            /* The pipe holds a byte already: fine. */
        }
    }
    pthread_mutex_unlock(&w->mu);
}

static int stopping(tw_t *w)
{
    pthread_mutex_lock(&w->mu);
    int s = w->stop;
    pthread_mutex_unlock(&w->mu);
    return s;
}

static void run_login(tw_t *w, tw_job_t *j)
{
    for (;;) {
        cw_reply_destroy(&j->reply);
        int wait = w->timeout_ms < TW_LOGIN_ATTEMPT_MS ? w->timeout_ms : TW_LOGIN_ATTEMPT_MS;
        j->status = cw_client_login(w->c, j->name, wait, &j->reply);
        if (j->status != CW_ERR_TIMEOUT && j->status != CW_ERR_DISCONNECTED)
            break;
        tw_job_t *t = tw_job_new(TW_TRYING);
        if (t) {
            t->status = j->status;
            deliver(w, t);
        }
        if (stopping(w))
            break;
    }
    if (j->status == CW_OK) {
        w->logged_in = 1;
        if (j->reply && j->reply->truncated) {
            /* The login carried a first page: get the whole log. */
            tw_job_t *who = tw_job_new(TW_WHO);
            if (who) {
                who->status = cw_client_who(w->c, w->timeout_ms, &who->reply);
                deliver(w, j);
                deliver(w, who);
                return;
            }
        }
    }
    deliver(w, j);
}

static void run(tw_t *w, tw_job_t *j)
{
    switch (j->kind) {
    case TW_LOGIN:
        run_login(w, j);
        return;
    case TW_SEND: {
        cw_send_t msg = {.to = (const char *const *) j->to, .n_to = j->n_to,
                         .broadcast = j->broadcast, .text = j->text, .durable = j->durable,
                         .message_id = j->message_id, .receipt = j->receipt};
        j->status = cw_client_send(w->c, &msg, w->timeout_ms, &j->reply);
        break;
    }
    case TW_FETCH: j->status = cw_client_fetch(w->c, j->n, w->timeout_ms, &j->reply); break;
    case TW_HISTORY: j->status = cw_client_history(w->c, j->n, w->timeout_ms, &j->reply); break;
    case TW_WHO: j->status = cw_client_who(w->c, w->timeout_ms, &j->reply); break;
    case TW_ACK: j->status = cw_client_ack(w->c, j->seq, w->timeout_ms); break;
    default: j->status = CW_ERR_INVALID; break;
    }
    deliver(w, j);
}

static void *worker_main(void *arg)
{
    tw_t *w = arg;
    for (;;) {
        struct pollfd fds[2] = {{.fd = w->wake[0], .events = POLLIN},
                                {.fd = cw_client_fd(w->c), .events = POLLIN}};
        if (poll(fds, 2, -1) < 0 && errno != EINTR)
            break;
        drain_pipe(w->wake[0]);
        for (;;) {
            pthread_mutex_lock(&w->mu);
            int stop = w->stop;
            tw_job_t *j = stop ? NULL : pop(&w->jobs, &w->jobs_tail);
            pthread_mutex_unlock(&w->mu);
            if (stop)
                goto out;
            cw_event_t *ev;
            while (cw_client_next_event(w->c, 0, &ev) == CW_OK) {
                tw_job_t *e = tw_job_new(TW_EVENT);
                if (!e) {
                    cw_event_destroy(&ev);
                    continue;
                }
                e->ev = ev;
                deliver(w, e);
            }
            if (!j)
                break;
            run(w, j);
        }
    }
out:
    if (w->logged_in)
        cw_client_logout(w->c, w->timeout_ms < 2000 ? w->timeout_ms : 2000);
    return NULL;
}

static int pipe_nb(int fds[2])
{
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
}

tw_t *tw_new(cw_client_t **c, int timeout_ms)
{
    tw_t *w = calloc(1, sizeof *w);
    if (!w) {
        cw_client_destroy(c);
        return NULL;
    }
    w->c = *c;
    *c = NULL;
    w->timeout_ms = timeout_ms;
    w->wake[0] = w->wake[1] = w->ready[0] = w->ready[1] = -1;
    pthread_mutex_init(&w->mu, NULL);
    if (pipe_nb(w->wake) != 0 || pipe_nb(w->ready) != 0 ||
        pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        for (int i = 0; i < 2; i++) {
            if (w->wake[i] >= 0)
                close(w->wake[i]);
            if (w->ready[i] >= 0)
                close(w->ready[i]);
        }
        cw_client_destroy(&w->c);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return NULL;
    }
    return w;
}

void tw_destroy(tw_t **p)
{
    if (!p || !*p)
        return;
    tw_t *w = *p;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_mutex_unlock(&w->mu);
    char b = 1;
    if (write(w->wake[1], &b, 1) < 0) {
        /* full: the worker wakes anyway */
    }
    pthread_join(w->thread, NULL);
    cw_client_destroy(&w->c);
    tw_job_t *j;
    while ((j = pop(&w->jobs, &w->jobs_tail)))
        tw_job_destroy(&j);
    while ((j = pop(&w->results, &w->results_tail)))
        tw_job_destroy(&j);
    for (int i = 0; i < 2; i++) {
        close(w->wake[i]);
        close(w->ready[i]);
    }
    pthread_mutex_destroy(&w->mu);
    free(w);
    *p = NULL;
}

void tw_post(tw_t *w, tw_job_t **job)
{
    if (!job || !*job)
        return;
    pthread_mutex_lock(&w->mu);
    push(&w->jobs, &w->jobs_tail, *job);
    pthread_mutex_unlock(&w->mu);
    *job = NULL;
    char b = 1;
    if (write(w->wake[1], &b, 1) < 0) {
        /* full: the worker is awake already */
    }
}

int tw_fd(const tw_t *w) { return w->ready[0]; }

tw_job_t *tw_take(tw_t *w)
{
    pthread_mutex_lock(&w->mu);
    tw_job_t *j = pop(&w->results, &w->results_tail);
    if (!w->results)
        drain_pipe(w->ready[0]);
    pthread_mutex_unlock(&w->mu);
    return j;
}
