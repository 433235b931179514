/* The notifier of an OS thread's micro-thread scheduler: waits until file
   descriptors are ready, a deadline passes, or another OS thread wakes it.

   Only the kernel interface lives here (epoll on Linux, poll() elsewhere);
   which tasks wait for what is the scheduler's business
   (Modules/_micro_threadmodule.c).  Interest is one-shot: after an fd has
   been reported it must be armed again to be reported again, so a wait
   costs one system call to arm and none to disarm. */

#ifndef MICRO_THREAD_NOTIFIER_H
#define MICRO_THREAD_NOTIFIER_H

#include "Python.h"

#define MT_READ 1       /* = PyDeferred_READABLE */
#define MT_WRITE 2      /* = PyDeferred_WRITABLE */

typedef struct {
    int kfd;            /* epoll descriptor; -1 until first needed */
    int wakefd;         /* eventfd (or pipe read end) for wake-ups; -1 */
    int wakefd_w;       /* where wake-ups are written */
    void *events;       /* the backend's result buffer */
    int nevents;
    /* poll() backend only: the armed fds */
    void *pollfds;
    int npollfds, cap_pollfds;
} mt_notifier;

/* Called for each ready fd with MT_READ and/or MT_WRITE (an error or
   hang-up reports both, so that the waiting operation meets it). */
typedef void (*mt_ready_func)(void *ctx, int fd, int events);

void _mt_notifier_init(mt_notifier *n);

/* 1 once anything was armed (the scheduler then waits in the notifier
   rather than in nanosleep()). */
static inline int
_mt_notifier_active(mt_notifier *n)
{
    return n->kfd >= 0;
}

/* Arm fd for events (one-shot).  Returns 0; 1 if the kernel cannot wait
   for this fd (a regular file: always ready); -1 with OSError set. */
int _mt_notifier_arm(mt_notifier *n, int fd, int events);

/* Forget fd (it is being closed). */
void _mt_notifier_forget(mt_notifier *n, int fd);

/* Wait up to timeout nanoseconds (-1: no limit, 0: just poll), releasing
   the GIL when it may sleep, and call ready() for each ready fd.  Returns
   the number of fds reported; 0 on a wake-up, a timeout, or an EINTR
   after which the signal handlers ran; -1 with an exception set (a
   signal handler raised, or the kernel call failed). */
int _mt_notifier_wait(mt_notifier *n, PyTime_t timeout, mt_ready_func ready,
                      void *ctx);

/* Make _mt_notifier_wake() work (create the wake-up fd); -1 with OSError. */
int _mt_notifier_enable_wakeup(mt_notifier *n);

/* Wake the notifier from any OS thread, without the GIL.  Async-signal
   safe. */
void _mt_notifier_wake(mt_notifier *n);

void _mt_notifier_close(mt_notifier *n);

#endif /* MICRO_THREAD_NOTIFIER_H */
