/* The worker pool of micro-thread schedulers: see workers.h. */

#ifndef Py_BUILD_CORE_BUILTIN
#  define Py_BUILD_CORE_MODULE 1
#endif

#include "Python.h"
#include "workers.h"

#include <pthread.h>

/* Enough to overlap a few slow disk operations; they are rare. */
#define MT_MAX_WORKERS 4

static pthread_mutex_t pool_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static mt_job *queue_head, *queue_tail;
static int nworkers, nidle;

static void *
worker_main(void *Py_UNUSED(unused))
{
    pthread_mutex_lock(&pool_mutex);
    for (;;) {
        while (queue_head == NULL) {
            nidle++;
            pthread_cond_wait(&pool_cond, &pool_mutex);
            nidle--;
        }
        mt_job *job = queue_head;
        queue_head = job->next;
        if (queue_head == NULL) {
            queue_tail = NULL;
        }
        pthread_mutex_unlock(&pool_mutex);

        job->work(job->arg);

        pthread_mutex_lock(&pool_mutex);
        mt_job_sink *sink = job->sink;
        sink->in_flight--;
        if (sink->orphaned) {
            /* Nobody will collect it; job->arg belonged to a Python
               object that may be gone, so only the job itself is freed. */
            PyMem_RawFree(job);
            if (sink->in_flight == 0) {
                PyMem_RawFree(sink);
            }
        }
        else {
            job->next = sink->done;
            sink->done = job;
            _mt_notifier_wake(sink->notifier);
        }
    }
    return NULL;
}

mt_job_sink *
_mt_workers_new_sink(mt_notifier *n)
{
    mt_job_sink *sink = PyMem_RawCalloc(1, sizeof(*sink));
    if (sink == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    sink->notifier = n;
    return sink;
}

int
_mt_workers_submit(mt_job *job)
{
    if (_mt_notifier_enable_wakeup(job->sink->notifier) < 0) {
        return -1;
    }
    pthread_mutex_lock(&pool_mutex);
    if (nidle == 0 && nworkers < MT_MAX_WORKERS) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int err = pthread_create(&th, &attr, worker_main, NULL);
        pthread_attr_destroy(&attr);
        if (err != 0) {
            if (nworkers == 0) {
                pthread_mutex_unlock(&pool_mutex);
                errno = err;
                PyErr_SetFromErrno(PyExc_OSError);
                return -1;
            }
            /* Fewer workers will do. */
        }
        else {
            nworkers++;
        }
    }
    job->next = NULL;
    if (queue_tail != NULL) {
        queue_tail->next = job;
    }
    else {
        queue_head = job;
    }
    queue_tail = job;
    job->sink->in_flight++;
    pthread_cond_signal(&pool_cond);
    pthread_mutex_unlock(&pool_mutex);
    return 0;
}

mt_job *
_mt_workers_collect(mt_job_sink *sink)
{
    if (sink->done == NULL) {   /* a racy peek: a wake-up follows anyway */
        return NULL;
    }
    pthread_mutex_lock(&pool_mutex);
    mt_job *done = sink->done;
    sink->done = NULL;
    pthread_mutex_unlock(&pool_mutex);
    return done;
}

void
_mt_workers_release_sink(mt_job_sink *sink)
{
    pthread_mutex_lock(&pool_mutex);
    /* Queued jobs that no worker has started are dropped. */
    mt_job **link = &queue_head;
    queue_tail = NULL;
    while (*link != NULL) {
        if ((*link)->sink == sink) {
            mt_job *job = *link;
            *link = job->next;
            sink->in_flight--;
            PyMem_RawFree(job);
        }
        else {
            queue_tail = *link;
            link = &(*link)->next;
        }
    }
    int free_now = sink->in_flight == 0;
    sink->orphaned = 1;
    pthread_mutex_unlock(&pool_mutex);
    if (free_now) {
        PyMem_RawFree(sink);
    }
}

void
_mt_workers_after_fork(void)
{
    /* Only the forking thread survives: no worker runs, the queue's jobs
       belong to the parent's schedulers (the child's copies of them are
       failed by its own scheduler). */
    pthread_mutex_init(&pool_mutex, NULL);
    pthread_cond_init(&pool_cond, NULL);
    queue_head = queue_tail = NULL;
    nworkers = nidle = 0;
}
