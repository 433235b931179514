/* The worker pool of micro-thread schedulers: blocking calls that the
   notifier cannot wait for (reads and writes of regular files) run on a
   few OS threads without the GIL; their completions come back to the
   scheduler that asked, which a wake-up through its notifier tells. */

#ifndef MICRO_THREAD_WORKERS_H
#define MICRO_THREAD_WORKERS_H

#include "notifier.h"

typedef struct mt_job mt_job;

/* Where a scheduler's finished jobs go. */
typedef struct {
    mt_job *done;           /* finished, not yet collected (LIFO) */
    mt_notifier *notifier;  /* woken when a job finishes */
    int in_flight;          /* submitted, not finished */
    int orphaned;           /* the scheduler is gone */
} mt_job_sink;

struct mt_job {
    void (*work)(void *arg);
    void *arg;
    mt_job_sink *sink;
    mt_job *next;
};

/* A new sink for a scheduler whose notifier is n; NULL with MemoryError. */
mt_job_sink *_mt_workers_new_sink(mt_notifier *n);

/* Queue job to run work(arg) on a worker thread; it is moved to the sink's
   done list afterwards.  -1 with an exception if no worker can start. */
int _mt_workers_submit(mt_job *job);

/* Take the sink's finished jobs (call with the GIL, in its OS thread). */
mt_job *_mt_workers_collect(mt_job_sink *sink);

/* The scheduler owning sink is going away (after collecting what is
   done): jobs still running are freed by their workers when they finish,
   with the memory of their arg, which is leaked rather than freed under a
   running call. */
void _mt_workers_release_sink(mt_job_sink *sink);

/* In a child process after fork(): the workers are gone. */
void _mt_workers_after_fork(void);

#endif /* MICRO_THREAD_WORKERS_H */
