/*
 * Mailbox commands run on the driver's own threads (tc_pool), for a host that must not block
 * while the link carries them: an asyncio event loop submits commands and one reaping thread
 * collects their results in batches. The pool's threads never enter Python, so commands in
 * flight cost the host no interpreter lock, and each runs as tc_command() runs it (the
 * handle's timeout, retries and exactly-once tags).
 *
 * Locks and waits: mu guards every field; idle threads wait on work_cv for a job, the reaper
 * on done_cv for results. A job is on exactly one of the free, queued and done lists, or
 * held by the thread running it.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tc_internal.h"

struct tc_pool_job {
    struct tc_pool_job *next;
    tc_pool_done done;
    unsigned span;
    unsigned ts;
    tc_command_args args;
};

struct tc_pool {
    tc_handle *h;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;
    struct tc_pool_job *free_jobs;
    struct tc_pool_job *queued, *queued_tail; /* oldest first */
    struct tc_pool_job *done, *done_tail;     /* oldest first */
    unsigned max_threads;
    unsigned threads;
    unsigned idle;       /* threads waiting on work_cv, woken or not */
    unsigned queued_n;   /* jobs on the queued list */
    unsigned running;    /* jobs held by a thread */
    int reaper_waiting;  /* a thread waits in tc_pool_reap */
    int stopping;
    pthread_t tids[TC_MAX_OUTSTANDING];
    struct tc_pool_job jobs[TC_POOL_JOBS];
};

static void append(struct tc_pool_job **head, struct tc_pool_job **tail, struct tc_pool_job *j)
{
    j->next = NULL;
    if (*tail)
        (*tail)->next = j;
    else
        *head = j;
    *tail = j;
}

static struct tc_pool_job *pop(struct tc_pool_job **head, struct tc_pool_job **tail)
{
    struct tc_pool_job *j = *head;

    if (j) {
        *head = j->next;
        if (!*head)
            *tail = NULL;
    }
    return j;
}

/* With mu held: j's result is ready for the reaper. */
static void finish(tc_pool *p, struct tc_pool_job *j)
{
    append(&p->done, &p->done_tail, j);
    if (p->reaper_waiting)
        pthread_cond_signal(&p->done_cv);
}

static void *work(void *arg)
{
    tc_pool *p = arg;
    struct tc_pool_job *j;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        j = pop(&p->queued, &p->queued_tail);
        if (!j) {
            if (p->stopping)
                break;
            p->idle++;
            pthread_cond_wait(&p->work_cv, &p->mu);
            p->idle--;
            continue;
        }
        p->queued_n--;
        if (p->stopping) {
            /* not started: over a dead link each would take the handle's whole retry
               budget, and tc_pool_free() waits for them */
            j->done.rc = -EBADF;
            finish(p, j);
            continue;
        }
        p->running++;
        pthread_mutex_unlock(&p->mu);
        j->done.rc = tc_command(p->h, j->span, j->ts, &j->args, &j->done.result);
        pthread_mutex_lock(&p->mu);
        p->running--;
        finish(p, j);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int tc_pool_new(tc_handle *h, unsigned threads, tc_pool **out)
{
    pthread_condattr_t attr;
    tc_pool *p;

    if (!h || !out || threads < 1 || threads > TC_MAX_OUTSTANDING)
        return -EINVAL;
    p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    p->h = h;
    p->max_threads = threads;
    if (pthread_mutex_init(&p->mu, NULL))
        goto no_mu;
    if (pthread_cond_init(&p->work_cv, NULL))
        goto no_work_cv;
    if (pthread_condattr_init(&attr))
        goto no_attr;
    /* the reaper's deadlines are CLOCK_MONOTONIC, as the link's */
    if (pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) ||
        pthread_cond_init(&p->done_cv, &attr)) {
        pthread_condattr_destroy(&attr);
        goto no_attr;
    }
    pthread_condattr_destroy(&attr);
    for (size_t i = TC_POOL_JOBS; i-- > 0;) {
        p->jobs[i].next = p->free_jobs;
        p->free_jobs = &p->jobs[i];
    }
    *out = p;
    return 0;
no_attr:
    pthread_cond_destroy(&p->work_cv);
no_work_cv:
    pthread_mutex_destroy(&p->mu);
no_mu:
    free(p);
    return -ENOMEM;
}

int tc_pool_submit(tc_pool *p, uint64_t token, unsigned span, unsigned ts,
                   const tc_command_args *args)
{
    struct tc_pool_job *j;
    int r = 0;

    if (!p || !args)
        return -EINVAL;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        r = -EBADF;
    } else if (!p->free_jobs) {
        r = -EAGAIN;
    } else if (p->queued_n >= p->idle && p->threads < p->max_threads) {
        /* started as the work needs them: one more whenever the jobs queued outnumber the
           idle threads (counted until they run, so a burst of jobs is not left to the one
           thread its first signal woke) */
        r = -pthread_create(&p->tids[p->threads], NULL, work, p);
        if (r == 0)
            p->threads++;
        else if (p->threads > 0)
            r = 0; /* the running threads get to the job */
    }
    if (r == 0) {
        j = p->free_jobs;
        p->free_jobs = j->next;
        memset(&j->done, 0, sizeof j->done);
        j->done.token = token;
        j->span = span;
        j->ts = ts;
        j->args = *args;
        append(&p->queued, &p->queued_tail, j);
        p->queued_n++;
        if (p->idle)
            pthread_cond_signal(&p->work_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return r;
}

long tc_pool_reap(tc_pool *p, tc_pool_done *out, size_t max, int timeout_ms)
{
    struct timespec dl;
    struct tc_pool_job *j;
    long n = 0;
    int timed_out = 0;

    if (!p || (!out && max))
        return -EINVAL;
    if (timeout_ms >= 0)
        tc_deadline_in(&dl, timeout_ms);
    pthread_mutex_lock(&p->mu);
    while (!p->done && !timed_out && max) {
        if (p->stopping && !p->queued && !p->running) {
            n = -EBADF;
            break;
        }
        p->reaper_waiting++;
        if (timeout_ms < 0)
            pthread_cond_wait(&p->done_cv, &p->mu);
        else
            timed_out = pthread_cond_timedwait(&p->done_cv, &p->mu, &dl) == ETIMEDOUT;
        p->reaper_waiting--;
    }
    while (n >= 0 && (size_t)n < max && (j = pop(&p->done, &p->done_tail))) {
        out[n++] = j->done;
        j->next = p->free_jobs;
        p->free_jobs = j;
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

void tc_pool_stop(tc_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_cond_broadcast(&p->done_cv);
    pthread_mutex_unlock(&p->mu);
}

void tc_pool_free(tc_pool *p)
{
    if (!p)
        return;
    tc_pool_stop(p);
    for (unsigned i = 0; i < p->threads; i++)
        pthread_join(p->tids[i], NULL);
    pthread_cond_destroy(&p->done_cv);
    pthread_cond_destroy(&p->work_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}
