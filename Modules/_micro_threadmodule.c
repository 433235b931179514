/* _micro_thread: the per-OS-thread scheduler of micro-threads, and the
   native kernel of the micro_thread package (Lib/micro_thread/).

   The interpreter side -- suspending and resuming frames -- is in
   Python/microthread.c.  This module decides who runs: each OS thread has a
   scheduler with a FIFO ready queue and a timer heap.  A blocking operation
   (MicroPipe.get, sleep, join, ...) that cannot complete now *blocks the
   current task*:

   - in a micro-thread that can be suspended here (PyDeferred_CanDefer), it
     defers: the frames are kept on the heap, the eval loop returns to the
     scheduler, and the operation's wait is armed (the micro-thread is put
     in the queue of what it waits for);
   - otherwise -- in the OS thread's root, or in a micro-thread with a C
     frame between the call and its start ("pinned") -- it arms the wait and
     runs the scheduler loop right there until the task is woken.

   Whatever completes the wait wakes the task with the operation's value or
   exception; a woken micro-thread joins the ready queue and resumes with it
   as the return value of the call that blocked.

   Wait queues, timers and the ready queue hold strong references to the
   micro-threads in them, so a micro-thread that can still be woken is never
   collected; one blocked on something unreachable is collected, and closed
   (MicroThreadExit at its suspension point) by its finalizer. */

#ifndef Py_BUILD_CORE_BUILTIN
#  define Py_BUILD_CORE_MODULE 1
#endif

#include "Python.h"
#include "pycore_call.h"          // _PyStack_AsDict()
#include "pycore_frame.h"         // _PyFrame_GetFrameObject()
#include "pycore_import.h"        // _PyImport_GetModuleAttrString()
#include "pycore_microthread.h"   // _PyMicroThread_Run()
#include "pycore_modsupport.h"    // _PyArg_UnpackKeywords()
#include "pycore_pyerrors.h"      // _PyErr_ChainExceptions1()
#include "pycore_pylifecycle.h"   // _Py_IsInterpreterFinalizing()
#include "pycore_pystate.h"       // _PyThreadState_GET()
#include "pycore_time.h"          // _PyTime_FromSecondsObject()
#include "pycore_tuple.h"         // _PyTuple_FromArray()
#include "pycore_tstate.h"        // _PyThreadStateImpl

#include <time.h>                 // nanosleep()

#include "_micro_thread/notifier.h"   // mt_notifier
#include "_micro_thread/workers.h"    // _mt_workers_submit()

#define NO_DEADLINE PyTime_MAX

typedef struct MicroThreadObject MicroThreadObject;
typedef struct SchedulerObject SchedulerObject;
typedef struct PipeObject PipeObject;
typedef struct WaiterObject WaiterObject;
typedef struct Task Task;
typedef struct WaitQueue WaitQueue;

/*[clinic input]
module _micro_thread
class _micro_thread.MicroThread "MicroThreadObject *" "clinic_state()->microthread_type"
class _micro_thread.MicroPipe "PipeObject *" "clinic_state()->pipe_type"
class _micro_thread._Waiter "WaiterObject *" "clinic_state()->waiter_type"
[clinic start generated code]*/
/*[clinic end generated code: output=da39a3ee5e6b4b0d input=4e98bc50f60e1939]*/

typedef struct {
    PyTypeObject *microthread_type;
    PyTypeObject *pipe_type;
    PyTypeObject *waiter_type;
    PyTypeObject *scheduler_type;
    PyObject *pipe_closed_error;
    PyObject *deadlock_error;
    PyObject *trampolines[4];   /* call0 ... call3 */
} module_state;

static struct PyModuleDef micro_thread_module;

static inline module_state *
get_module_state(PyObject *module)
{
    return (module_state *)PyModule_GetState(module);
}

static module_state *
state_from_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &micro_thread_module);
    return module == NULL ? NULL : get_module_state(module);
}


/* ====================================================================== */
/* Tasks and wait queues */

/* Register a blocked task where it will be woken from. */
typedef int (*arm_func)(PyObject *obj, Task *t);

/* A FIFO of blocked tasks; holds a strong reference to each micro-thread. */
struct WaitQueue {
    Task *head, *tail;
    void (*on_cancel)(WaitQueue *q, Task *t);   /* a waiter gave up */
};

enum { TIMER_SLEEP, TIMER_TIMEOUT, TIMER_IO };

typedef struct IOJob IOJob;

/* What an I/O wait (PyDeferred_WaitFd(), PyDeferred_Offload()) waits for
   and how its outcome is made. */
typedef struct {
    int fd;                     /* -1: none (a deadline, or offloaded work) */
    int events;                 /* PyDeferred_READABLE | PyDeferred_WRITABLE */
    PyDeferred_CompleteFunc complete;
    PyObject *state;            /* strong while the task holds it */
    PyDeferred_WorkFunc work;   /* offloaded: run work(arg) on a worker */
    void *arg;
    IOJob *job;                 /* the offloaded call, while in flight */
} IOWait;

/* The rarer parts of a task, allocated when first needed and kept: most
   micro-threads never wait for I/O, join, get a kill() while running, pin
   or enter a timeout scope, and an idle one should be small. */
typedef struct {
    PyObject *pending;          /* kill()/throw() to raise at its next blocking call */
    PyObject *what_obj;         /* what it is blocked with (a micro-thread joined) */
    PyObject *qitem;            /* the item of a blocked put */
    _PyInterpreterFrame *pinned_frame;  /* where it blocks while pinned */
    PyTime_t *deadlines;        /* timeout scopes: running minima */
    int ndeadlines, cap_deadlines;
    IOWait io;                  /* the I/O wait, while blocked in one */
} TaskExtra;

/* A micro-thread, or an OS thread's root, as something that blocks. */
struct Task {
    SchedulerObject *sched;     /* strong for micro-threads, borrowed for the root */
    unsigned char blocked;      /* armed and waiting to be woken */
    unsigned char woken;        /* woken: an outcome is waiting for it */
    unsigned char pinned;       /* blocked in a scheduler loop on the C stack */
    unsigned char thrown;       /* woken by kill()/throw(), not resumed yet */
    unsigned char block_deadline_kind;
    PyObject *value;            /* the outcome: a value ... */
    PyObject *exc;              /* ... or an exception */
    const char *what;           /* what it is blocked on */
    WaitQueue *queue;           /* the queue it is in, if any */
    Task *qprev, *qnext;
    uint64_t timer_gen;         /* timers of older blocks are stale */
    PyTime_t block_deadline;    /* sleep's or join(timeout)'s own deadline */
    TaskExtra *x;               /* NULL until needed */
};

struct MicroThreadObject {
    PyObject_HEAD
    _PyMicroThreadCore core;
    Task task;
    PyObject *name;             /* made on first use from number */
    uint64_t number;
    /* Once finished, task.value and task.exc are its result or exception. */
    unsigned char finished;
    unsigned char retrieved;    /* its exception reached someone */
    unsigned char in_ready;
    unsigned char in_all;
    WaitQueue joiners;
    MicroThreadObject *all_prev, *all_next;  /* unfinished, in start order */
    PyObject *weakreflist;
};

typedef struct {
    PyTime_t when;
    uint64_t seq;
    uint64_t gen;
    Task *task;
    PyObject *ref;              /* strong: the micro-thread (NULL for the root) */
    int kind;
} TimerEntry;

/* The tasks waiting for one file descriptor. */
typedef struct {
    WaitQueue readers, writers;
    int armed;                  /* events armed in the notifier */
} FdWaits;

/* An offloaded call (PyDeferred_Offload()) in flight. */
struct IOJob {
    mt_job job;                 /* first: the worker pool's part */
    Task *task;                 /* NULL once the task gave up waiting */
    PyDeferred_CompleteFunc complete;
    PyObject *state;            /* strong */
    IOJob *prev, *next;         /* the scheduler's jobs in flight */
};

struct SchedulerObject {
    PyObject_HEAD
    unsigned long long thread_id;
    PyObject **ready;           /* ring buffer of strong references; its
                                   capacity is a power of two */
    Py_ssize_t ready_head, ready_len, ready_cap;
    TimerEntry *timers;         /* binary heap */
    Py_ssize_t ntimers, timers_cap;
    uint64_t timer_seq;
    Py_ssize_t steps_to_timer_check;
    Task root;
    MicroThreadObject *all_head, *all_tail;
    uint64_t counter;
    PyObject *deadlock_error;   /* strong */
    PyObject *microthread_type; /* strong */
    PyObject *trampolines[4];   /* strong */
    /* I/O */
    mt_notifier notifier;
    FdWaits **fdwaits;          /* indexed by fd, allocated when first used */
    int fdwaits_cap;
    Py_ssize_t io_waits;        /* tasks waiting for an fd or a worker */
    Py_ssize_t steps_to_io_check;
    mt_job_sink *sink;          /* offloaded calls come back here */
    IOJob *jobs;                /* in flight */
    /* pinning: blocking calls of micro-threads that could not suspend */
    unsigned long long pin_count;
    PyObject *pin_hook;         /* strong, or NULL */
    MicroThreadObject *main;    /* strong: run()'s micro-thread, if running */
    arm_func defer_arm;         /* the wait of the deferral in progress */
};

#include "clinic/_micro_threadmodule.c.h"

/* The micro-thread a task is part of, or NULL for an OS thread's root. */
static inline MicroThreadObject *
task_mt(Task *t)
{
    if (t == &t->sched->root) {
        return NULL;
    }
    return (MicroThreadObject *)((char *)t - offsetof(MicroThreadObject, task));
}

#define MicroThread_CAST(op) ((MicroThreadObject *)(op))

/* The micro-thread embedding a core (_PyMicroThread_Current()). */
static inline MicroThreadObject *
microthread_of_core(_PyMicroThreadCore *core)
{
    return (MicroThreadObject *)((char *)core - offsetof(MicroThreadObject, core));
}

static void task_wake(Task *t, PyObject *value, PyObject *exc);


static void
queue_init(WaitQueue *q, void (*on_cancel)(WaitQueue *, Task *))
{
    q->head = q->tail = NULL;
    q->on_cancel = on_cancel;
}

static void
queue_push(WaitQueue *q, Task *t)
{
    assert(t->queue == NULL);
    t->queue = q;
    t->qnext = NULL;
    t->qprev = q->tail;
    if (q->tail) {
        q->tail->qnext = t;
    }
    else {
        q->head = t;
    }
    q->tail = t;
    if (task_mt(t) != NULL) {
        Py_INCREF(task_mt(t));
    }
}

/* Take t, which is in a queue, out of it; the queue's reference to the
   micro-thread becomes the caller's. */
static void
task_unlink(Task *t)
{
    WaitQueue *q = t->queue;
    assert(q != NULL);
    if (t->qprev) {
        t->qprev->qnext = t->qnext;
    }
    else {
        q->head = t->qnext;
    }
    if (t->qnext) {
        t->qnext->qprev = t->qprev;
    }
    else {
        q->tail = t->qprev;
    }
    t->queue = NULL;
    t->qprev = t->qnext = NULL;
    if (t->x != NULL) {
        Py_CLEAR(t->x->qitem);
    }
}

/* Take t out of its queue, if any.  The queue's reference to the
   micro-thread is dropped: callers that still use t hold one of their
   own. */
static void
task_unqueue(Task *t)
{
    if (t->queue == NULL) {
        return;
    }
    MicroThreadObject *mt = task_mt(t);
    task_unlink(t);
    Py_XDECREF(mt);
}

static int
queue_traverse(WaitQueue *q, visitproc visit, void *arg)
{
    for (Task *t = q->head; t != NULL; t = t->qnext) {
        if (task_mt(t) != NULL) {
            Py_VISIT(task_mt(t));
        }
    }
    return 0;
}

static int
task_traverse(Task *t, visitproc visit, void *arg)
{
    Py_VISIT(t->value);
    Py_VISIT(t->exc);
    if (t->x != NULL) {
        Py_VISIT(t->x->qitem);
        Py_VISIT(t->x->pending);
        Py_VISIT(t->x->what_obj);
        Py_VISIT(t->x->io.state);
    }
    return 0;
}

/* The task's I/O wait is over (or never started). */
static void
task_end_io(Task *t)
{
    if (t->x == NULL) {
        return;
    }
    IOWait *io = &t->x->io;
    if (io->job != NULL) {
        io->job->task = NULL;       /* the job's result will be dropped */
        io->job = NULL;
        t->sched->io_waits--;
    }
    io->complete = NULL;
    io->work = NULL;
    io->fd = -1;
    Py_CLEAR(io->state);
}

static void
task_clear(Task *t)
{
    task_unqueue(t);
    Py_CLEAR(t->value);
    Py_CLEAR(t->exc);
    if (t->x != NULL) {
        Py_CLEAR(t->x->pending);
        Py_CLEAR(t->x->what_obj);
    }
    task_end_io(t);
    t->blocked = t->woken = 0;
    t->timer_gen++;
}

/* The task's extra part, allocated if needed (NULL with MemoryError). */
static TaskExtra *
task_extra(Task *t)
{
    if (t->x == NULL) {
        t->x = PyMem_Calloc(1, sizeof(TaskExtra));
        if (t->x == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        t->x->io.fd = -1;
    }
    return t->x;
}

static void
task_free_extra(Task *t)
{
    if (t->x != NULL) {
        assert(t->x->pending == NULL && t->x->what_obj == NULL
               && t->x->qitem == NULL
               && t->x->io.state == NULL && t->x->io.job == NULL);
        PyMem_Free(t->x->deadlines);
        PyMem_Free(t->x);
        t->x = NULL;
    }
}

static PyObject *
task_what_obj(Task *t)
{
    return t->x != NULL ? t->x->what_obj : NULL;
}

static void
task_clear_what(Task *t)
{
    t->what = NULL;
    if (t->x != NULL) {
        Py_CLEAR(t->x->what_obj);
    }
}

/* The earliest deadline of the task's timeout scopes. */
static PyTime_t
task_deadline(Task *t)
{
    return t->x != NULL && t->x->ndeadlines > 0
           ? t->x->deadlines[t->x->ndeadlines - 1] : NO_DEADLINE;
}


/* ====================================================================== */
/* The scheduler: ready queue and timers */

static int
ready_grow(SchedulerObject *s)
{
    Py_ssize_t cap = s->ready_cap ? s->ready_cap * 2 : 64;
    PyObject **items = PyMem_New(PyObject *, cap);
    if (items == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < s->ready_len; i++) {
        items[i] = s->ready[(s->ready_head + i) & (s->ready_cap - 1)];
    }
    PyMem_Free(s->ready);
    s->ready = items;
    s->ready_cap = cap;
    s->ready_head = 0;
    return 0;
}

/* Append mt to the ready queue, which takes over the caller's reference
   (-1 if out of memory: the reference is still the caller's). */
static inline int
ready_push_ref(SchedulerObject *s, MicroThreadObject *mt)
{
    if (s->ready_len == s->ready_cap && ready_grow(s) < 0) {
        return -1;
    }
    s->ready[(s->ready_head + s->ready_len) & (s->ready_cap - 1)] = (PyObject *)mt;
    s->ready_len++;
    mt->in_ready = 1;
    return 0;
}

static int
ready_push(SchedulerObject *s, MicroThreadObject *mt)
{
    if (ready_push_ref(s, mt) < 0) {
        return -1;
    }
    Py_INCREF(mt);
    return 0;
}

static MicroThreadObject *
ready_pop(SchedulerObject *s)
{
    assert(s->ready_len > 0);
    MicroThreadObject *mt = MicroThread_CAST(s->ready[s->ready_head]);
    s->ready_head = (s->ready_head + 1) & (s->ready_cap - 1);
    s->ready_len--;
    mt->in_ready = 0;
    return mt;   /* the queue's reference */
}

static int
timer_less(TimerEntry *a, TimerEntry *b)
{
    return a->when < b->when || (a->when == b->when && a->seq < b->seq);
}

static int
timer_push(SchedulerObject *s, Task *t, PyTime_t when, int kind)
{
    if (s->ntimers == s->timers_cap) {
        Py_ssize_t cap = s->timers_cap ? s->timers_cap * 2 : 64;
        TimerEntry *timers = PyMem_Resize(s->timers, TimerEntry, cap);
        if (timers == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        s->timers = timers;
        s->timers_cap = cap;
    }
    TimerEntry e = {when, s->timer_seq++, t->timer_gen, t,
                    task_mt(t) ? Py_NewRef(task_mt(t)) : NULL, kind};
    Py_ssize_t i = s->ntimers++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!timer_less(&e, &s->timers[parent])) {
            break;
        }
        s->timers[i] = s->timers[parent];
        i = parent;
    }
    s->timers[i] = e;
    return 0;
}

static TimerEntry
timer_pop(SchedulerObject *s)
{
    TimerEntry top = s->timers[0];
    TimerEntry last = s->timers[--s->ntimers];
    Py_ssize_t i = 0, n = s->ntimers;
    for (;;) {
        Py_ssize_t c = 2 * i + 1;
        if (c >= n) {
            break;
        }
        if (c + 1 < n && timer_less(&s->timers[c + 1], &s->timers[c])) {
            c++;
        }
        if (!timer_less(&s->timers[c], &last)) {
            break;
        }
        s->timers[i] = s->timers[c];
        i = c;
    }
    if (n > 0) {
        s->timers[i] = last;
    }
    return top;
}

static int
timer_is_live(TimerEntry *e)
{
    return e->task->blocked && e->gen == e->task->timer_gen;
}

/* Drop stale timers from the top of the heap. */
static void
timers_prune(SchedulerObject *s)
{
    while (s->ntimers > 0 && !timer_is_live(&s->timers[0])) {
        TimerEntry e = timer_pop(s);
        Py_XDECREF(e.ref);
    }
}

/* Give up the task's wait: take it out of its queue, telling the queue's
   owner (a _Waiter becomes abandoned, ...), and invalidate its timers. */
static void
task_cancel_wait(Task *t)
{
    WaitQueue *q = t->queue;
    if (q != NULL && q->on_cancel != NULL) {
        q->on_cancel(q, t);
    }
    task_unqueue(t);
    t->timer_gen++;
    if (t->x != NULL && t->x->io.job != NULL) {
        task_end_io(t);
    }
}

/* Wake up a blocked task with a value or an exception (stolen).  Inline
   for MicroPipe.put(), whose wake-up is half of every switch; a call
   everywhere else. */
static inline void
task_wake_inline(Task *t, PyObject *value, PyObject *exc)
{
    assert(t->blocked && !t->woken);
    MicroThreadObject *mt = task_mt(t);
    /* Our reference to the micro-thread: the queue's if it is in one, and
       it goes to the ready queue. */
    if (t->queue != NULL) {
        task_unlink(t);
    }
    else {
        Py_XINCREF(mt);
    }
    t->timer_gen++;
    t->blocked = 0;
    t->woken = 1;
    t->value = value;
    t->exc = exc;
    t->what = NULL;
    if (t->x != NULL) {
        Py_CLEAR(t->x->what_obj);
        task_end_io(t);
    }
    if (mt != NULL) {
        if (t->pinned) {
            Py_DECREF(mt);
        }
        else if (ready_push_ref(t->sched, mt) < 0) {
            /* Out of memory: the outcome stays and the scheduler's next
               step reports the error. */
            PyErr_Clear();
            Py_DECREF(mt);
        }
    }
}

static Py_NO_INLINE void
task_wake(Task *t, PyObject *value, PyObject *exc)
{
    task_wake_inline(t, value, exc);
}

static int
fire_timer(TimerEntry *e)
{
    Task *t = e->task;
    if (e->kind == TIMER_SLEEP) {
        task_wake(t, Py_NewRef(Py_None), NULL);
        return 0;
    }
    if (e->kind == TIMER_IO) {
        /* The operation's own deadline (a socket timeout, sleep_d()): its
           completion function makes the outcome. */
        PyDeferred_CompleteFunc complete = t->x->io.complete;
        PyObject *state = Py_XNewRef(t->x->io.state);
        task_cancel_wait(t);
        PyObject *res = complete(state, PyDeferred_TIMED_OUT);
        Py_XDECREF(state);
        if (res == NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_SystemError,
                            "an I/O completion function would block after its deadline");
        }
        task_wake(t, res, res == NULL ? PyErr_GetRaisedException() : NULL);
        return 0;
    }
    PyObject *exc = PyObject_CallFunction(PyExc_TimeoutError, "s",
                                          "the micro-thread's timeout expired");
    if (exc == NULL) {
        return -1;
    }
    task_cancel_wait(t);
    task_wake(t, NULL, exc);
    return 0;
}

/* Fire every due timer; return how many fired, or -1 on error. */
static int
fire_due_timers(SchedulerObject *s)
{
    timers_prune(s);
    if (s->ntimers == 0) {
        return 0;
    }
    PyTime_t now;
    (void)PyTime_MonotonicRaw(&now);
    int fired = 0;
    while (s->ntimers > 0 && s->timers[0].when <= now) {
        TimerEntry e = timer_pop(s);
        int rc = 0;
        if (timer_is_live(&e)) {
            rc = fire_timer(&e);
            fired++;
        }
        Py_XDECREF(e.ref);
        if (rc < 0) {
            return -1;
        }
    }
    return fired;
}

/* Arm the timers of a task that has just blocked. */
static Py_NO_INLINE int
task_push_timers(Task *t)
{
    PyTime_t scope = task_deadline(t);
    if (t->block_deadline != NO_DEADLINE
        && timer_push(t->sched, t, t->block_deadline, t->block_deadline_kind) < 0)
    {
        return -1;
    }
    if (scope != NO_DEADLINE && scope < t->block_deadline
        && timer_push(t->sched, t, scope, TIMER_TIMEOUT) < 0)
    {
        return -1;
    }
    return 0;
}

static inline int
task_arm_timers(Task *t)
{
    if (t->block_deadline == NO_DEADLINE && task_deadline(t) == NO_DEADLINE) {
        return 0;
    }
    return task_push_timers(t);
}


/* ====================================================================== */
/* I/O: waits for file descriptors and offloaded calls */

/* An fd queue lost a waiter (kill, timeout scope). */
static void
fdq_on_cancel(WaitQueue *Py_UNUSED(q), Task *t)
{
    SchedulerObject *s = t->sched;
    s->io_waits--;
    int fd = t->x->io.fd;
    if (fd < 0 || fd >= s->fdwaits_cap || s->fdwaits[fd] == NULL) {
        return;
    }
    FdWaits *w = s->fdwaits[fd];
    WaitQueue *q = t->queue;
    if (q->head == t && q->tail == t
        && (q == &w->readers ? w->writers.head : w->readers.head) == NULL)
    {
        /* Its last waiter gave up, maybe because the fd was closed by
           another OS thread (whose close this scheduler is not told of):
           the next wait arms it with epoll_ctl() again, which finds the
           fd anew if the number now names another file. */
        w->armed = 0;
    }
}

static FdWaits *
fdwaits_get(SchedulerObject *s, int fd)
{
    if (fd >= s->fdwaits_cap) {
        int cap = s->fdwaits_cap ? s->fdwaits_cap : 64;
        while (cap <= fd) {
            cap *= 2;
        }
        FdWaits **tab = PyMem_Resize(s->fdwaits, FdWaits *, cap);
        if (tab == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        memset(tab + s->fdwaits_cap, 0, sizeof(FdWaits *) * (cap - s->fdwaits_cap));
        s->fdwaits = tab;
        s->fdwaits_cap = cap;
    }
    FdWaits *w = s->fdwaits[fd];
    if (w == NULL) {
        w = PyMem_Calloc(1, sizeof(FdWaits));
        if (w == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        queue_init(&w->readers, fdq_on_cancel);
        queue_init(&w->writers, fdq_on_cancel);
        s->fdwaits[fd] = w;
    }
    return w;
}

static inline int
fdwaits_wanted(FdWaits *w)
{
    return (w->readers.head ? MT_READ : 0) | (w->writers.head ? MT_WRITE : 0);
}

/* Wake every task of queue q with the exception (a new reference each). */
static void
fdq_fail_all(SchedulerObject *s, WaitQueue *q, PyObject *exc)
{
    while (q->head != NULL) {
        s->io_waits--;
        task_wake(q->head, NULL, Py_NewRef(exc));
    }
}

static void
fdwaits_fail_all(SchedulerObject *s, FdWaits *w, PyObject *exc)
{
    fdq_fail_all(s, &w->readers, exc);
    fdq_fail_all(s, &w->writers, exc);
}

/* fd is ready for the tasks of q: complete their operations in order until
   one would block again.  The task's wait ends with the outcome. */
static void
fdq_serve(SchedulerObject *s, WaitQueue *q)
{
    while (q->head != NULL) {
        Task *t = q->head;
        PyObject *state = Py_XNewRef(t->x->io.state);
        PyObject *res = t->x->io.complete(state, PyDeferred_READY);
        Py_XDECREF(state);
        if (q->head != t) {
            /* The completion function ended t's wait itself (it closed
               the fd, say): its outcome is already decided. */
            Py_XDECREF(res);
            PyErr_Clear();
            continue;
        }
        if (res == NULL && !PyErr_Occurred()) {
            break;      /* would block after all: t keeps waiting */
        }
        s->io_waits--;
        task_wake(t, res, res == NULL ? PyErr_GetRaisedException() : NULL);
    }
}

/* Arm fd again for what its remaining waiters want. */
static void
fdwaits_rearm(SchedulerObject *s, int fd, FdWaits *w)
{
    int wanted = fdwaits_wanted(w);
    if (wanted == 0 || (wanted & ~w->armed) == 0) {
        return;
    }
    int rc = _mt_notifier_arm(&s->notifier, fd, wanted);
    if (rc == 0) {
        w->armed = wanted;
        return;
    }
    if (rc > 0) {
        /* Always ready (cannot happen after a first successful arm, but
           an fd may have been reused for a regular file). */
        w->armed = 0;
        fdq_serve(s, &w->readers);
        fdq_serve(s, &w->writers);
        return;
    }
    PyObject *exc = PyErr_GetRaisedException();
    w->armed = 0;
    fdwaits_fail_all(s, w, exc);
    Py_DECREF(exc);
}

/* The notifier's callback. */
static void
fd_ready(void *ctx, int fd, int events)
{
    SchedulerObject *s = (SchedulerObject *)ctx;
    if (fd < 0 || fd >= s->fdwaits_cap || s->fdwaits[fd] == NULL) {
        return;
    }
    FdWaits *w = s->fdwaits[fd];
    w->armed = 0;       /* one-shot */
    if (events & MT_READ) {
        fdq_serve(s, &w->readers);
    }
    if (events & MT_WRITE) {
        fdq_serve(s, &w->writers);
    }
    fdwaits_rearm(s, fd, w);
}

static void collect_jobs(SchedulerObject *s);

/* Wait in the notifier for up to timeout ns (-1: no limit, 0: poll) and
   complete what became ready.  -1 with an exception from a signal
   handler (or a failing kernel call). */
static int
poll_io(SchedulerObject *s, PyTime_t timeout)
{
    int rc = _mt_notifier_wait(&s->notifier, timeout, fd_ready, s);
    if (s->jobs != NULL) {
        collect_jobs(s);
    }
    return rc < 0 ? -1 : 0;
}

/* The arm function of I/O waits (see block()). */
static int
arm_io(PyObject *Py_UNUSED(obj), Task *t)
{
    SchedulerObject *s = t->sched;
    IOWait *io = &t->x->io;
    if (io->work != NULL) {
        IOJob *job = PyMem_RawCalloc(1, sizeof(IOJob));
        if (job == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (s->sink == NULL && (s->sink = _mt_workers_new_sink(&s->notifier)) == NULL) {
            PyMem_RawFree(job);
            return -1;
        }
        job->job.work = io->work;
        job->job.arg = io->arg;
        job->job.sink = s->sink;
        job->task = t;
        job->complete = io->complete;
        job->state = Py_XNewRef(io->state);
        if (_mt_workers_submit(&job->job) < 0) {
            Py_XDECREF(job->state);
            PyMem_RawFree(job);
            return -1;
        }
        job->next = s->jobs;
        if (s->jobs != NULL) {
            s->jobs->prev = job;
        }
        s->jobs = job;
        io->job = job;
        s->io_waits++;
        return 0;
    }
    int fd = io->fd;
    if (fd < 0) {
        return 0;       /* only its deadline wakes it */
    }
    FdWaits *w = fdwaits_get(s, fd);
    if (w == NULL) {
        return -1;
    }
    int events = io->events & (MT_READ | MT_WRITE);
    WaitQueue *q = (events & MT_WRITE) && !(events & MT_READ) ? &w->writers : &w->readers;
    int wanted = fdwaits_wanted(w) | events;
    if ((wanted & ~w->armed) != 0) {
        int rc = _mt_notifier_arm(&s->notifier, fd, wanted);
        if (rc < 0) {
            return -1;
        }
        if (rc > 0) {
            /* The kernel cannot wait for it (a regular file): it is
               always ready, so the operation completes now. */
            PyObject *res = io->complete(io->state, PyDeferred_READY);
            if (res == NULL && !PyErr_Occurred()) {
                PyErr_Format(PyExc_BlockingIOError,
                             "file descriptor %d would block but cannot be "
                             "waited for", fd);
            }
            task_wake(t, res, res == NULL ? PyErr_GetRaisedException() : NULL);
            return 0;
        }
        w->armed = wanted;
    }
    queue_push(q, t);
    s->io_waits++;
    return 0;
}

/* Take the finished offloaded calls and complete their tasks. */
static void
collect_jobs(SchedulerObject *s)
{
    if (s->sink == NULL) {
        return;
    }
    mt_job *done = _mt_workers_collect(s->sink);
    while (done != NULL) {
        IOJob *job = (IOJob *)done;
        done = done->next;
        if (job->prev != NULL) {
            job->prev->next = job->next;
        }
        else {
            s->jobs = job->next;
        }
        if (job->next != NULL) {
            job->next->prev = job->prev;
        }
        Task *t = job->task;
        if (t != NULL) {
            t->x->io.job = NULL;
            s->io_waits--;
            PyObject *res = job->complete(job->state, PyDeferred_READY);
            if (res == NULL && !PyErr_Occurred()) {
                PyErr_SetString(PyExc_SystemError,
                                "an offloaded call's completion would block");
            }
            task_wake(t, res, res == NULL ? PyErr_GetRaisedException() : NULL);
        }
        Py_XDECREF(job->state);
        PyMem_RawFree(job);
    }
}

/* In a child process after fork(): a new notifier, and the waits of the
   forking thread's micro-threads armed in it; offloaded calls in flight
   ran in the parent's workers and fail. */
static void
scheduler_after_fork(SchedulerObject *s)
{
    int had_kernel = _mt_notifier_active(&s->notifier);
    /* The epoll instance is shared with the parent: close the child's
       reference without touching the parent's registrations. */
    _mt_notifier_close(&s->notifier);
    _mt_notifier_init(&s->notifier);
    /* Calls that finished before the fork complete normally. */
    collect_jobs(s);
    if (s->sink != NULL) {
        s->sink->in_flight = 0;
        s->sink->notifier = &s->notifier;
    }
    PyObject *exc = NULL;
    while (s->jobs != NULL) {
        IOJob *job = s->jobs;
        s->jobs = job->next;
        Task *t = job->task;
        if (t != NULL) {
            if (exc == NULL) {
                exc = PyObject_CallFunction(
                    PyExc_RuntimeError, "s",
                    "the worker thread running this call did not survive fork()");
            }
            task_cancel_wait(t);
            task_wake(t, NULL, exc != NULL ? Py_NewRef(exc) : PyErr_GetRaisedException());
        }
        Py_XDECREF(job->state);
        PyMem_RawFree(job);
    }
    Py_XDECREF(exc);
    if (!had_kernel) {
        return;
    }
    for (int fd = 0; fd < s->fdwaits_cap; fd++) {
        FdWaits *w = s->fdwaits[fd];
        if (w != NULL) {
            w->armed = 0;
            fdwaits_rearm(s, fd, w);
        }
    }
}


/* ====================================================================== */
/* Running micro-threads */

static Task *
current_task(SchedulerObject *s)
{
    _PyMicroThreadCore *core = _PyMicroThread_Current(_PyThreadState_GET());
    return core != NULL ? &microthread_of_core(core)->task : &s->root;
}

static void
all_remove(SchedulerObject *s, MicroThreadObject *mt)
{
    if (!mt->in_all) {
        return;
    }
    if (mt->all_prev) {
        mt->all_prev->all_next = mt->all_next;
    }
    else {
        s->all_head = mt->all_next;
    }
    if (mt->all_next) {
        mt->all_next->all_prev = mt->all_prev;
    }
    else {
        s->all_tail = mt->all_prev;
    }
    mt->all_prev = mt->all_next = NULL;
    mt->in_all = 0;
}

static PyObject *microthread_throw_exc(MicroThreadObject *mt, PyObject *exc, int is_kill);

/* Record how a micro-thread ended and wake those joining it. */
static void
finish(MicroThreadObject *mt, PyObject *result, PyObject *exception)
{
    SchedulerObject *s = mt->task.sched;
    task_clear(&mt->task);
    mt->finished = 1;
    mt->task.value = result;
    mt->task.exc = exception;
    all_remove(s, mt);
    Py_INCREF(mt);
    while (mt->joiners.head != NULL) {
        Task *j = mt->joiners.head;
        if (exception != NULL) {
            mt->retrieved = 1;
            task_wake(j, NULL, Py_NewRef(exception));
        }
        else {
            task_wake(j, Py_NewRef(result), NULL);
        }
    }
    /* Ctrl-C interrupted another micro-thread than run()'s: the interrupt
       is for the program, so run()'s micro-thread gets it too. */
    MicroThreadObject *main = s->main;
    if (exception != NULL && main != NULL && main != mt && !main->finished
        && PyErr_GivenExceptionMatches(exception, PyExc_KeyboardInterrupt))
    {
        mt->retrieved = 1;
        Py_INCREF(main);
        PyObject *r = microthread_throw_exc(main, Py_NewRef(exception), 0);
        Py_DECREF(main);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)mt);
        }
        Py_XDECREF(r);
    }
    Py_DECREF(mt);
}

/* A micro-thread has suspended: arm its wait.  A failure to arm is raised
   where it deferred instead. */
static int arm_from_task(PyObject *waitobj, PyObject *op);
/* Arm functions that queue the task on its object's wait queue; defined
   below, with the objects. */
static int arm_join(PyObject *mt, Task *t);
static int arm_pipe_get(PyObject *pipe, Task *t);
static int arm_pipe_put(PyObject *pipe, Task *t);
static int arm_waiter(PyObject *waiter, Task *t);


static void
arm_suspended(MicroThreadObject *mt, PyDeferred_ArmFunc arm, PyObject *waitobj)
{
    int rc;
    if (arm == arm_from_task) {
        rc = arm_from_task(waitobj, (PyObject *)mt);    /* a direct call */
    }
    else if (arm != NULL) {
        rc = arm(waitobj, (PyObject *)mt);
    }
    else {
        PyErr_SetString(PyExc_SystemError, "micro-thread suspended without a wait");
        rc = -1;
    }
    if (rc < 0) {
        Task *t = &mt->task;
        if (!t->blocked) {
            t->blocked = 1;
        }
        task_cancel_wait(t);
        task_wake(t, NULL, PyErr_GetRaisedException());
    }
}

/* Take the outcome a woken micro-thread resumes with: *exc, or else *value
   (None if none); new references. */
static void
take_outcome(Task *t, PyObject **value, PyObject **exc)
{
    *exc = t->exc;
    *value = t->value != NULL || t->exc != NULL ? t->value : Py_NewRef(Py_None);
    t->value = t->exc = NULL;
    t->woken = 0;
    t->thrown = 0;
}

/* Switching in place (see _PyMicroThreadHandOff): when a micro-thread run by
   run_step() suspends, the eval loop goes on with the head of the ready
   queue itself, as the loop calling run_step() would next, unless that
   loop has something else to do first: its waiter was woken, or timers or
   I/O are due to be checked. */
typedef struct {
    SchedulerObject *sched;
    Task *waiter;           /* whose loop drives the scheduler */
} HandOff;

static _PyMicroThreadCore *
hand_off(void *arg, _PyMicroThreadCore *core, PyDeferred_ArmFunc arm,
         PyObject *waitobj, PyObject **value, PyObject **exc)
{
    HandOff *h = (HandOff *)arg;
    SchedulerObject *s = h->sched;
    MicroThreadObject *prev = microthread_of_core(core);
    if (s->ready_len == 0 || h->waiter->woken
        || (s->ntimers > 0 && s->steps_to_timer_check <= 1)
        || (s->io_waits > 0 && s->steps_to_io_check <= 1))
    {
        return NULL;
    }
    MicroThreadObject *next = MicroThread_CAST(s->ready[s->ready_head]);
    if (next->finished || next->core.state != _PyMicroThread_SUSPENDED) {
        return NULL;
    }
    /* One step of the loop calling run_step(); the next one is taken first,
       so that nothing run by arming the wait can run it. */
    ready_pop(s);                   /* its reference is now the runner's */
    take_outcome(&next->task, value, exc);
    if (s->ntimers > 0) {
        s->steps_to_timer_check--;
    }
    if (s->io_waits > 0) {
        s->steps_to_io_check--;
    }
    arm_suspended(prev, arm, waitobj);
    /* As run_step() would: if this was the last reference, prev is closed
       here, swapped out as it is. */
    Py_DECREF(prev);
    return &next->core;
}

/* Run the micro-thread at the head of the ready queue until it suspends or
   finishes (or, when waiter is not NULL, those it switches to in place,
   until one returns to here).  Returns -1 only when the scheduler itself
   failed. */
static int
run_step(SchedulerObject *s, Task *waiter)
{
    PyThreadState *tstate = _PyThreadState_GET();
    MicroThreadObject *mt = ready_pop(s);
    if (mt->finished) {          /* killed before it ever ran */
        Py_DECREF(mt);
        return 0;
    }
    PyObject *value, *exc;
    take_outcome(&mt->task, &value, &exc);
    HandOff h = {s, waiter};
    _PyMicroThreadRunner runner = {
        .handoff = waiter != NULL ? hand_off : NULL,
        .handoff_arg = &h,
    };
    PyObject *res = _PyMicroThread_Run(tstate, &mt->core, value, exc, &runner);
    Py_XDECREF(value);
    Py_XDECREF(exc);
    /* The reference taken from the ready queue is now to the one whose run
       ended here. */
    mt = microthread_of_core(runner.mt);
    if (runner.suspended) {
        arm_suspended(mt, runner.arm, runner.waitobj);
        Py_XDECREF(runner.waitobj);
    }
    else if (res != NULL) {
        finish(mt, res, NULL);
    }
    else {
        if (mt->core.state != _PyMicroThread_FINISHED) {
            /* It could not even be switched to (no C stack left): it ends
               with that error, without running more code. */
            _PyMicroThread_ClearCore(&mt->core);
        }
        finish(mt, NULL, PyErr_GetRaisedException());
    }
    Py_DECREF(mt);
    return 0;
}

static PyObject *deadlock_message(SchedulerObject *s, Task *waiting);

/* Wait for the monotonic clock to reach `when`, letting other OS threads
   run and signal handlers run.  -1 with an exception from a handler. */
static int
sleep_until(PyTime_t when)
{
    PyTime_t now;
    (void)PyTime_MonotonicRaw(&now);
    if (when > now) {
        PyTime_t delay = when - now;
        struct timespec ts;
        ts.tv_sec = (time_t)(delay / 1000000000);
        ts.tv_nsec = (long)(delay % 1000000000);
        int err;
        Py_BEGIN_ALLOW_THREADS
        err = nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
        (void)err;
    }
    return PyErr_CheckSignals();
}

/* A signal handler raised (KeyboardInterrupt on Ctrl-C, say) while the
   scheduler loop of task w ran.  The exception goes to the main
   micro-thread (run()'s), so that its finally blocks run and run() raises
   it; without one, to w.  Returns 0 if the loop goes on, -1 if w takes
   the exception (still set). */
static int
signal_raised(SchedulerObject *s, Task *w)
{
    MicroThreadObject *main = s->main;
    if (main == NULL || main->finished || &main->task == w) {
        return -1;
    }
    PyObject *exc = PyErr_GetRaisedException();
    Py_INCREF(main);
    PyObject *r = microthread_throw_exc(main, exc, 0);
    Py_DECREF(main);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Run the scheduler until task w (the root, or a pinned micro-thread) is
   woken; return its value, or NULL with its exception. */
static PyObject *
run_until_woken(SchedulerObject *s, Task *w)
{
    while (!w->woken) {
        if (s->ready_len > 0) {
            /* Timers are due, and I/O is polled, at least once a round of
               the ready queue, so that micro-threads busy with sleep(0) do
               not starve them. */
            if (s->ntimers > 0 && --s->steps_to_timer_check <= 0) {
                s->steps_to_timer_check = s->ready_len;
                if (fire_due_timers(s) < 0) {
                    goto fail;
                }
            }
            if (s->io_waits > 0 && --s->steps_to_io_check <= 0) {
                s->steps_to_io_check = s->ready_len;
                if (poll_io(s, 0) < 0 && signal_raised(s, w) < 0) {
                    goto fail;
                }
            }
            if (run_step(s, w) < 0) {
                goto fail;
            }
            continue;
        }
        int fired = fire_due_timers(s);
        if (fired < 0) {
            goto fail;
        }
        if (fired > 0) {
            continue;
        }
        if (s->io_waits > 0 || s->jobs != NULL) {
            PyTime_t timeout = -1;
            if (s->ntimers > 0) {
                PyTime_t now;
                (void)PyTime_MonotonicRaw(&now);
                timeout = s->timers[0].when > now ? s->timers[0].when - now : 0;
            }
            if (poll_io(s, timeout) < 0 && signal_raised(s, w) < 0) {
                goto fail;
            }
            continue;
        }
        if (s->ntimers > 0) {
            if (sleep_until(s->timers[0].when) < 0 && signal_raised(s, w) < 0) {
                goto fail;
            }
            continue;
        }
        /* Nothing is ready, no timer is pending, no I/O: nothing can wake
           w. */
        PyObject *msg = deadlock_message(s, w);
        if (msg != NULL) {
            PyErr_SetObject(s->deadlock_error, msg);
            Py_DECREF(msg);
        }
        goto fail;
    }
    w->woken = 0;
    w->thrown = 0;
    if (w->exc != NULL) {
        PyObject *exc = w->exc;
        w->exc = NULL;
        Py_CLEAR(w->value);
        PyErr_SetRaisedException(exc);
        return NULL;
    }
    PyObject *value = w->value;
    w->value = NULL;
    return value;

fail:
    /* w gives up its wait; the error is its outcome. */
    if (w->blocked) {
        task_cancel_wait(w);
        w->blocked = 0;
        task_clear_what(w);
    }
    return NULL;
}

/* The arm function given to PyDeferred_Defer() by this module's blocking
   operations: the wait to arm is recorded in the scheduler (one deferral
   at a time per OS thread), the object to arm it on is the wait object. */
static int
arm_from_task(PyObject *waitobj, PyObject *op)
{
    Task *t = &MicroThread_CAST(op)->task;
    arm_func arm = t->sched->defer_arm;
    t->sched->defer_arm = NULL;
    t->blocked = 1;
    /* The most common wait is called directly (it is then inlined). */
    int rc = arm == arm_pipe_get ? arm_pipe_get(waitobj, t) : arm(waitobj, t);
    if (rc == 0 && t->blocked && task_arm_timers(t) < 0) {
        return -1;
    }
    return rc;
}

/* Where a task is about to block: raise a kill()/throw() that reached it
   while it was ready, or the TimeoutError of an expired timeout scope. */
static int
checkpoint(Task *t)
{
    if (t->x != NULL && t->x->pending != NULL) {
        PyErr_SetRaisedException(t->x->pending);
        t->x->pending = NULL;
        return -1;
    }
    PyTime_t scope = task_deadline(t);
    if (scope != NO_DEADLINE) {
        PyTime_t now;
        (void)PyTime_MonotonicRaw(&now);
        if (now >= scope) {
            PyErr_SetString(PyExc_TimeoutError, "the micro-thread's timeout expired");
            return -1;
        }
    }
    return 0;
}

/* A micro-thread blocks where it cannot suspend: count it, and call the
   pinning hook (on the pinned stack, so that it can print it). */
static int
report_pinning(SchedulerObject *s, Task *t, const char *what)
{
    s->pin_count++;
    if (s->pin_hook == NULL) {
        return 0;
    }
    PyObject *hook = Py_NewRef(s->pin_hook);
    PyObject *r = PyObject_CallFunction(hook, "Os", (PyObject *)task_mt(t), what);
    Py_DECREF(hook);
    if (r == NULL) {
        /* A kill() or an interrupt raised by the hook is the call's
           outcome; anything else is reported and ignored. */
        if (PyErr_ExceptionMatches(PyExc_Exception)) {
            PyErr_FormatUnraisable("Exception ignored in the micro-thread pinning hook %R",
                                   hook);
            return 0;
        }
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static PyObject *
block_slow(SchedulerObject *s, PyObject *const *args, PyObject *iter, arm_func arm,
           PyObject *obj, const char *what, PyObject *what_obj, PyTime_t deadline,
           int kind, const IOWait *io)
{
    Task *t = current_task(s);
    if (task_mt(t) != NULL && task_mt(t)->core.closing) {
        PyErr_Format(PyExc_RuntimeError,
                     "micro-thread %R cannot block (%s) while it is being closed",
                     task_mt(t), what);
        return NULL;
    }
    if (t->blocked || t->woken) {
        PyErr_Format(PyExc_RuntimeError, "task is already blocked (%s)", t->what);
        return NULL;
    }
    /* A deferral that never suspended (a monitoring callback replaced its
       CDeferred) leaves its wait behind: drop it. */
    s->defer_arm = NULL;
    task_end_io(t);
    if (checkpoint(t) < 0) {
        return NULL;
    }
    if ((io != NULL || what_obj != NULL) && task_extra(t) == NULL) {
        return NULL;
    }
    if (io != NULL) {
        t->x->io = *io;
        t->x->io.job = NULL;
        Py_XINCREF(t->x->io.state);
    }
    t->what = what;
    if (t->x != NULL) {
        Py_XSETREF(t->x->what_obj, Py_XNewRef(what_obj));
    }
    t->block_deadline = deadline;
    t->block_deadline_kind = kind;
    if (task_mt(t) != NULL
        && (args != NULL ? PyDeferred_CanDefer(args) : PyDeferred_CanDeferIter(iter)))
    {
        s->defer_arm = arm;
        return PyDeferred_Defer(arm_from_task, obj);
    }
    if (task_mt(t) != NULL
        && (report_pinning(s, t, what) < 0 || task_extra(t) == NULL))
    {
        task_clear_what(t);
        task_end_io(t);
        return NULL;
    }
    t->blocked = 1;
    if (arm(obj, t) < 0) {
        t->blocked = 0;
        task_clear_what(t);
        task_end_io(t);
        return NULL;
    }
    if (t->blocked && task_arm_timers(t) < 0) {
        task_cancel_wait(t);
        t->blocked = 0;
        return NULL;
    }
    int was_pinned = t->pinned;
    _PyInterpreterFrame *was_pinned_frame = NULL;
    if (task_mt(t) != NULL) {
        t->pinned = 1;
        was_pinned_frame = t->x->pinned_frame;
        t->x->pinned_frame = _PyThreadState_GET()->current_frame;
    }
    PyObject *res = run_until_woken(s, t);
    if (task_mt(t) != NULL) {
        t->pinned = was_pinned;
        t->x->pinned_frame = was_pinned_frame;
    }
    return res;
}

/* Nothing in the task's extra part for block_slow() to deal with. */
static inline int
task_extra_idle(TaskExtra *x)
{
    return x->pending == NULL && x->ndeadlines == 0 && x->what_obj == NULL
           && x->io.state == NULL && x->io.job == NULL;
}

/* Block the current task (see the comment at the top of this file).
   args is the calling function's argument array, or NULL for a tp_iternext
   function, whose self is iter; arm(obj, task) puts the
   task where it will be woken from; deadline/kind: a deadline of this
   block only (sleep, join(timeout)), or NO_DEADLINE; io: the I/O wait
   for arm_io(), or NULL. */
static inline PyObject *
block(SchedulerObject *s, PyObject *const *args, PyObject *iter, arm_func arm,
      PyObject *obj, const char *what, PyObject *what_obj, PyTime_t deadline,
      int kind, const IOWait *io)
{
    /* The common case, inline: a micro-thread with nothing for block_slow()
       to look at (a kill() to raise, timeout scopes, ...), blocking with no
       deadline, I/O or object of its own, where it can suspend. */
    _PyMicroThreadCore *core = ((_PyThreadStateImpl *)_PyThreadState_GET())->mt_current;
    if (core != NULL && args != NULL && deadline == NO_DEADLINE && io == NULL
        && what_obj == NULL)
    {
        Task *t = &microthread_of_core(core)->task;
        if (!t->blocked && !t->woken && (t->x == NULL || task_extra_idle(t->x))) {
            int deferred = _PyDeferred_TryDefer(args, arm_from_task, obj);
            if (deferred > 0) {
                t->what = what;
                t->block_deadline = NO_DEADLINE;
                s->defer_arm = arm;
            }
            if (deferred != 0) {
                return NULL;
            }
        }
    }
    return block_slow(s, args, iter, arm, obj, what, what_obj, deadline, kind, io);
}

/* Arm functions of the simple waits. */
static int
arm_nothing(PyObject *Py_UNUSED(obj), Task *Py_UNUSED(t))
{
    return 0;   /* only a timer (sleep) or a throw wakes it */
}

static int
arm_yield(PyObject *Py_UNUSED(obj), Task *t)
{
    task_wake(t, Py_NewRef(Py_None), NULL);   /* to the back of the queue */
    return 0;
}


/* ====================================================================== */
/* The scheduler object (one per OS thread, held by its thread state) */

static SchedulerObject *
get_scheduler(module_state *st)
{
    _PyThreadStateImpl *ts = (_PyThreadStateImpl *)_PyThreadState_GET();
    if (ts->mt_scheduler != NULL) {
        return (SchedulerObject *)ts->mt_scheduler;
    }
    if (st == NULL) {
        return NULL;
    }
    SchedulerObject *s = PyObject_GC_New(SchedulerObject, st->scheduler_type);
    if (s == NULL) {
        return NULL;
    }
    s->thread_id = ts->base.id;
    s->ready = NULL;
    s->ready_head = s->ready_len = s->ready_cap = 0;
    s->timers = NULL;
    s->ntimers = s->timers_cap = 0;
    s->timer_seq = 0;
    s->steps_to_timer_check = 0;
    memset(&s->root, 0, sizeof(s->root));
    s->root.sched = s;
    s->root.block_deadline = NO_DEADLINE;
    s->all_head = s->all_tail = NULL;
    s->counter = 0;
    s->deadlock_error = Py_NewRef(st->deadlock_error);
    s->microthread_type = Py_NewRef(st->microthread_type);
    for (int i = 0; i < 4; i++) {
        s->trampolines[i] = Py_NewRef(st->trampolines[i]);
    }
    _mt_notifier_init(&s->notifier);
    s->fdwaits = NULL;
    s->fdwaits_cap = 0;
    s->io_waits = 0;
    s->steps_to_io_check = 0;
    s->sink = NULL;
    s->jobs = NULL;
    s->pin_count = 0;
    s->pin_hook = NULL;
    s->main = NULL;
    s->defer_arm = NULL;
    PyObject_GC_Track(s);
    ts->mt_scheduler = (PyObject *)s;
    return s;
}

/* The scheduler of this OS thread, for a method of one of this module's
   types (which finds the module state on the first call). */
static SchedulerObject *
scheduler_for(PyObject *self)
{
    PyObject *sched = ((_PyThreadStateImpl *)_PyThreadState_GET())->mt_scheduler;
    if (sched != NULL) {
        return (SchedulerObject *)sched;
    }
    module_state *st = state_from_type(Py_TYPE(self));
    return st == NULL ? NULL : get_scheduler(st);
}

static int
scheduler_traverse(PyObject *op, visitproc visit, void *arg)
{
    SchedulerObject *s = (SchedulerObject *)op;
    Py_VISIT(Py_TYPE(op));
    for (Py_ssize_t i = 0; i < s->ready_len; i++) {
        Py_VISIT(s->ready[(s->ready_head + i) & (s->ready_cap - 1)]);
    }
    for (Py_ssize_t i = 0; i < s->ntimers; i++) {
        Py_VISIT(s->timers[i].ref);
    }
    Py_VISIT(s->deadlock_error);
    Py_VISIT(s->microthread_type);
    for (int i = 0; i < 4; i++) {
        Py_VISIT(s->trampolines[i]);
    }
    for (int fd = 0; fd < s->fdwaits_cap; fd++) {
        if (s->fdwaits[fd] != NULL) {
            int err = queue_traverse(&s->fdwaits[fd]->readers, visit, arg);
            if (err == 0) {
                err = queue_traverse(&s->fdwaits[fd]->writers, visit, arg);
            }
            if (err) {
                return err;
            }
        }
    }
    for (IOJob *job = s->jobs; job != NULL; job = job->next) {
        Py_VISIT(job->state);
    }
    Py_VISIT(s->pin_hook);
    Py_VISIT(s->main);
    return task_traverse(&s->root, visit, arg);
}

static int
scheduler_clear(PyObject *op)
{
    SchedulerObject *s = (SchedulerObject *)op;
    while (s->ready_len > 0) {
        Py_DECREF(ready_pop(s));
    }
    while (s->ntimers > 0) {
        TimerEntry e = timer_pop(s);
        Py_XDECREF(e.ref);
    }
    Py_CLEAR(s->deadlock_error);
    Py_CLEAR(s->microthread_type);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(s->trampolines[i]);
    }
    for (int fd = 0; fd < s->fdwaits_cap; fd++) {
        FdWaits *w = s->fdwaits[fd];
        if (w != NULL) {
            while (w->readers.head != NULL) {
                task_cancel_wait(w->readers.head);
            }
            while (w->writers.head != NULL) {
                task_cancel_wait(w->writers.head);
            }
        }
    }
    Py_CLEAR(s->pin_hook);
    Py_CLEAR(s->main);
    task_clear(&s->root);
    return 0;
}

static void
scheduler_dealloc(PyObject *op)
{
    SchedulerObject *s = (SchedulerObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)scheduler_clear(op);
    /* Micro-threads still listed outlive us; they must not point here. */
    for (MicroThreadObject *mt = s->all_head; mt != NULL; mt = mt->all_next) {
        mt->in_all = 0;
    }
    PyMem_Free(s->ready);
    PyMem_Free(s->timers);
    collect_jobs(s);
    /* Offloaded calls still running keep their state (leaked): their
       worker may still use its memory. */
    for (IOJob *job = s->jobs, *next; job != NULL; job = next) {
        next = job->next;
        if (job->task != NULL) {
            job->task->x->io.job = NULL;
        }
    }
    task_free_extra(&s->root);
    if (s->sink != NULL) {
        _mt_workers_release_sink(s->sink);
    }
    for (int fd = 0; fd < s->fdwaits_cap; fd++) {
        PyMem_Free(s->fdwaits[fd]);
    }
    PyMem_Free(s->fdwaits);
    _mt_notifier_close(&s->notifier);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyType_Slot scheduler_slots[] = {
    {Py_tp_dealloc, scheduler_dealloc},
    {Py_tp_traverse, scheduler_traverse},
    {Py_tp_clear, scheduler_clear},
    {Py_tp_doc, "The scheduler of micro-threads of one OS thread (internal)."},
    {0, NULL},
};

static PyType_Spec scheduler_spec = {
    .name = "_micro_thread.Scheduler",
    .basicsize = sizeof(SchedulerObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = scheduler_slots,
};


/* ====================================================================== */
/* MicroThread */

static PyObject *
microthread_state_name(MicroThreadObject *mt)
{
    const char *name;
    if (mt->finished) {
        name = "finished";
    }
    else if (mt->task.blocked) {
        name = "blocked";
    }
    else if (mt->core.state == _PyMicroThread_RUNNING) {
        name = "running";
    }
    else if (mt->core.state == _PyMicroThread_CREATED) {
        name = "created";
    }
    else {
        name = "ready";
    }
    return PyUnicode_FromString(name);
}

/* What a blocked task waits for, as MicroThread.blocked_on shows it. */
/* Its name, made from its number on first use: borrowed, NULL on error. */
static PyObject *
microthread_name(MicroThreadObject *mt)
{
    if (mt->name == NULL) {
        mt->name = PyUnicode_FromFormat("MicroThread-%llu",
                                        (unsigned long long)mt->number);
    }
    return mt->name;
}

static PyObject *
task_blocked_text(Task *t)
{
    if (t->what == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *what_obj = task_what_obj(t);
    if (what_obj != NULL && PyUnicode_Check(what_obj)) {
        return Py_NewRef(what_obj);
    }
    if (what_obj != NULL && task_mt(t) != NULL
        && PyObject_TypeCheck(what_obj, Py_TYPE(task_mt(t))))
    {
        PyObject *name = microthread_name(MicroThread_CAST(what_obj));
        return name == NULL ? NULL : PyUnicode_FromFormat("%s <%U>", t->what, name);
    }
    if (what_obj != NULL && task_mt(t) == NULL && strcmp(t->what, "run") != 0) {
        return PyUnicode_FromFormat("%s %R", t->what, what_obj);
    }
    return PyUnicode_FromString(t->what);
}

static PyObject *
microthread_blocked_on_str(MicroThreadObject *mt)
{
    Task *t = &mt->task;
    if (mt->finished || !t->blocked) {
        Py_RETURN_NONE;
    }
    return task_blocked_text(t);
}

static PyObject *
microthread_repr(PyObject *op)
{
    MicroThreadObject *mt = MicroThread_CAST(op);
    PyObject *name = microthread_name(mt);
    if (name == NULL) {
        return NULL;
    }
    PyObject *blocked = microthread_blocked_on_str(mt);
    if (blocked == NULL) {
        return NULL;
    }
    PyObject *res;
    if (blocked != Py_None) {
        res = PyUnicode_FromFormat("<MicroThread name=%R blocked on %U>",
                                   name, blocked);
    }
    else {
        PyObject *state = microthread_state_name(mt);
        if (state == NULL) {
            Py_DECREF(blocked);
            return NULL;
        }
        res = PyUnicode_FromFormat("<MicroThread name=%R %U>", name, state);
        Py_DECREF(state);
    }
    Py_DECREF(blocked);
    return res;
}

static int check_owner_thread(MicroThreadObject *mt);

/* The Python frames of a micro-thread, innermost first, up to its base. */
static PyObject *
microthread_frames(MicroThreadObject *mt)
{
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    _PyInterpreterFrame *f = NULL;
    if (mt->finished || mt->core.state == _PyMicroThread_CREATED
        || mt->core.base == NULL)
    {
        return list;
    }
    if (mt->core.state == _PyMicroThread_SUSPENDED) {
        f = mt->core.top;
    }
    else if (mt->core.state == _PyMicroThread_RUNNING) {
        if (check_owner_thread(mt) < 0) {
            /* Its frames are on another OS thread's stack. */
            Py_DECREF(list);
            return NULL;
        }
        f = mt->task.pinned ? mt->task.x->pinned_frame
                            : _PyThreadState_GET()->current_frame;
    }
    for (; f != NULL; f = f->previous) {
        if (f->owner != FRAME_OWNED_BY_CSTACK && !_PyFrame_IsIncomplete(f)) {
            PyFrameObject *fo = _PyFrame_GetFrameObject(f);
            if (fo == NULL || PyList_Append(list, (PyObject *)fo) < 0) {
                Py_DECREF(list);
                return NULL;
            }
        }
        if (f == mt->core.base) {
            break;
        }
    }
    return list;
}

/*[clinic input]
_micro_thread.MicroThread.stack

Return the micro-thread's Python frames, outermost first.
[clinic start generated code]*/

static PyObject *
_micro_thread_MicroThread_stack_impl(MicroThreadObject *self)
/*[clinic end generated code: output=9e56888d26a9d91f input=3afd5d86bc20efe8]*/
{
    PyObject *list = microthread_frames(self);
    if (list != NULL && PyList_Reverse(list) < 0) {
        Py_CLEAR(list);
    }
    return list;
}

static int
check_owner_thread(MicroThreadObject *mt)
{
    if (mt->task.sched->thread_id != _PyThreadState_GET()->id) {
        PyErr_Format(PyExc_RuntimeError,
                     "%R belongs to another OS thread", mt);
        return -1;
    }
    return 0;
}

/* The outcome of a finished micro-thread, for join(). */
static PyObject *
microthread_outcome(MicroThreadObject *mt)
{
    if (mt->task.exc != NULL) {
        mt->retrieved = 1;
        PyErr_SetRaisedException(Py_NewRef(mt->task.exc));
        return NULL;
    }
    return Py_NewRef(mt->task.value);
}

static PyObject *
microthread_join(PyObject *op, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    /* Hand-written rather than Argument Clinic: deferring functions pass
       their argument array to PyDeferred_CanDefer(). */
    static const char * const kwlist[] = {"timeout", NULL};
    static _PyArg_Parser parser = {.keywords = kwlist, .fname = "join"};
    PyObject *argsbuf[1];
    PyObject *timeout = Py_None;
    MicroThreadObject *mt = MicroThread_CAST(op);
    if (nargs != 0 || kwnames != NULL) {
        PyObject *const *parsed = _PyArg_UnpackKeywords(args, nargs, NULL, kwnames,
                                                        &parser, 0, 1, 0, argsbuf);
        if (parsed == NULL) {
            return NULL;
        }
        if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) > 0) {
            timeout = parsed[0];
        }
    }
    PyTime_t deadline = NO_DEADLINE;
    if (timeout != Py_None) {
        PyTime_t delay, now;
        if (_PyTime_FromSecondsObject(&delay, timeout, _PyTime_ROUND_TIMEOUT) < 0) {
            return NULL;
        }
        if (delay < 0) {
            PyErr_SetString(PyExc_ValueError, "timeout must be non-negative");
            return NULL;
        }
        (void)PyTime_MonotonicRaw(&now);
        deadline = _PyTime_Add(now, delay);
    }
    if (check_owner_thread(mt) < 0) {
        return NULL;
    }
    if (mt->finished) {
        return microthread_outcome(mt);
    }
    SchedulerObject *s = scheduler_for(op);
    if (s == NULL) {
        return NULL;
    }
    if (current_task(s) == &mt->task) {
        PyErr_SetString(PyExc_RuntimeError, "a micro-thread cannot join itself");
        return NULL;
    }
    return block(s, args, NULL, arm_join, op, "join", op, deadline, TIMER_TIMEOUT, NULL);
}

static int
arm_join(PyObject *op, Task *t)
{
    queue_push(&MicroThread_CAST(op)->joiners, t);
    return 0;
}

/*[clinic input]
_micro_thread.MicroThread.done

Return True if the micro-thread has finished.
[clinic start generated code]*/

static PyObject *
_micro_thread_MicroThread_done_impl(MicroThreadObject *self)
/*[clinic end generated code: output=b4ca01361281447d input=32cd2b8c7245a587]*/
{
    return PyBool_FromLong(self->finished);
}

/* Deliver exc (stolen) at the micro-thread's suspension point. */
static PyObject *
microthread_throw_exc(MicroThreadObject *mt, PyObject *exc, int is_kill)
{
    Task *t = &mt->task;
    if (check_owner_thread(mt) < 0) {
        Py_DECREF(exc);
        return NULL;
    }
    if (mt->finished) {
        Py_DECREF(exc);
        if (is_kill) {
            Py_RETURN_NONE;
        }
        PyErr_Format(PyExc_RuntimeError, "cannot throw into finished %R", mt);
        return NULL;
    }
    SchedulerObject *s = t->sched;
    if (current_task(s) == t && !t->blocked) {
        PyErr_SetRaisedException(exc);   /* into yourself: right here */
        return NULL;
    }
    /* (A pinned micro-thread is the current one while its blocking call
       runs the scheduler; if it is blocked there, it is woken below.) */
    if (mt->core.state == _PyMicroThread_CREATED) {
        /* It never runs. */
        _PyMicroThread_ClearCore(&mt->core);
        finish(mt, NULL, exc);
        Py_RETURN_NONE;
    }
    if (t->thrown) {
        Py_DECREF(exc);   /* an earlier kill()/throw() is not delivered yet */
        Py_RETURN_NONE;
    }
    if (t->blocked) {
        task_cancel_wait(t);
        task_wake(t, NULL, exc);
        t->thrown = 1;
        Py_RETURN_NONE;
    }
    /* Woken but not resumed yet: the outcome it was woken with (an item
       handed over, a lock granted) is not lost; the exception is raised at
       its next blocking call.  An earlier one still pending wins. */
    if (task_extra(t) == NULL) {
        Py_DECREF(exc);
        return NULL;
    }
    if (t->x->pending == NULL) {
        t->x->pending = exc;
    }
    else {
        Py_DECREF(exc);
    }
    Py_RETURN_NONE;
}

/* An exception instance from an exception class or instance. */
static PyObject *
make_exception(PyObject *exc)
{
    if (PyExceptionClass_Check(exc)) {
        return PyObject_CallNoArgs(exc);
    }
    if (PyExceptionInstance_Check(exc)) {
        return Py_NewRef(exc);
    }
    PyErr_Format(PyExc_TypeError,
                 "exceptions must be classes or instances deriving from "
                 "BaseException, not %T", exc);
    return NULL;
}

/*[clinic input]
_micro_thread.MicroThread.throw

    exc: object
    /

Raise exc at the micro-thread's suspension point.

exc is an exception class or instance.
[clinic start generated code]*/

static PyObject *
_micro_thread_MicroThread_throw(MicroThreadObject *self, PyObject *exc)
/*[clinic end generated code: output=b549061a881314b3 input=62e3ac9b1e63d2bf]*/
{
    PyObject *value = make_exception(exc);
    if (value == NULL) {
        return NULL;
    }
    return microthread_throw_exc(self, value, 0);
}

/*[clinic input]
_micro_thread.MicroThread.kill

Raise MicroThreadExit at the micro-thread's suspension point.

Its finally blocks run.  A micro-thread that has not run yet never
runs; killing a finished one does nothing.
[clinic start generated code]*/

static PyObject *
_micro_thread_MicroThread_kill_impl(MicroThreadObject *self)
/*[clinic end generated code: output=9f29a0a0ad1f4614 input=cd58c64e4373edd3]*/
{
    PyObject *exc = PyObject_CallNoArgs(PyExc_MicroThreadExit);
    if (exc == NULL) {
        return NULL;
    }
    return microthread_throw_exc(self, exc, 1);
}

static PyObject *
microthread_get_name(PyObject *op, void *Py_UNUSED(closure))
{
    return Py_XNewRef(microthread_name(MicroThread_CAST(op)));
}

static int
microthread_set_name(PyObject *op, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || !PyUnicode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "name must be a str");
        return -1;
    }
    Py_XSETREF(MicroThread_CAST(op)->name, Py_NewRef(value));
    return 0;
}

static PyObject *
microthread_get_state(PyObject *op, void *Py_UNUSED(closure))
{
    return microthread_state_name(MicroThread_CAST(op));
}

static PyObject *
microthread_get_blocked_on(PyObject *op, void *Py_UNUSED(closure))
{
    return microthread_blocked_on_str(MicroThread_CAST(op));
}

static int
microthread_traverse(PyObject *op, visitproc visit, void *arg)
{
    MicroThreadObject *mt = MicroThread_CAST(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(mt->name);
    Py_VISIT(mt->task.sched);
    int err = queue_traverse(&mt->joiners, visit, arg);
    if (err) {
        return err;
    }
    err = task_traverse(&mt->task, visit, arg);
    if (err) {
        return err;
    }
    return _PyMicroThread_Traverse(&mt->core, visit, arg);
}

static int
microthread_clear(PyObject *op)
{
    MicroThreadObject *mt = MicroThread_CAST(op);
    while (mt->joiners.head != NULL) {
        task_unqueue(mt->joiners.head);
    }
    task_clear(&mt->task);
    _PyMicroThread_ClearCore(&mt->core);
    return 0;
}

/* Close a suspended micro-thread that became garbage: raise MicroThreadExit
   at its suspension point so that its finally blocks run (PEP 442).  When
   that is impossible -- another OS thread, interpreter shutdown, its
   scheduler gone -- its frames are dropped without running any code. */
static void
microthread_finalize(PyObject *op)
{
    MicroThreadObject *mt = MicroThread_CAST(op);
    PyThreadState *tstate = _PyThreadState_GET();
    PyObject *saved = PyErr_GetRaisedException();
    if (!mt->finished && mt->core.state == _PyMicroThread_SUSPENDED) {
        int can_run = mt->task.sched->thread_id == tstate->id
                      && !_Py_IsInterpreterFinalizing(tstate->interp)
                      && ((_PyThreadStateImpl *)tstate)->mt_scheduler
                         == (PyObject *)mt->task.sched;
        if (can_run) {
            Task *t = &mt->task;
            task_cancel_wait(t);
            t->blocked = t->woken = 0;
            Py_CLEAR(t->value);
            Py_CLEAR(t->exc);
            if (t->x != NULL) {
                Py_CLEAR(t->x->pending);
            }
            mt->core.closing = 1;
            PyObject *exc = PyObject_CallNoArgs(PyExc_MicroThreadExit);
            if (exc == NULL) {
                PyErr_WriteUnraisable(op);
            }
            else {
                _PyMicroThreadRunner runner = {.handoff = NULL};
                PyObject *res = _PyMicroThread_Run(tstate, &mt->core, NULL, exc,
                                                   &runner);
                Py_DECREF(exc);
                /* It cannot defer while closing. */
                assert(!runner.suspended);
                if (res != NULL) {
                    finish(mt, res, NULL);
                }
                else if (!runner.suspended) {
                    PyObject *err = PyErr_GetRaisedException();
                    if (!PyErr_GivenExceptionMatches(err, PyExc_MicroThreadExit)) {
                        PyErr_SetRaisedException(Py_NewRef(err));
                        PyErr_FormatUnraisable(
                            "Exception ignored while closing micro-thread %R", op);
                    }
                    mt->retrieved = 1;
                    finish(mt, NULL, err);
                }
            }
        }
        if (!mt->finished) {
            /* Could not run it: drop its frames. */
            _PyMicroThread_ClearCore(&mt->core);
            task_clear(&mt->task);
            mt->finished = 1;
            if (mt->in_all) {
                all_remove(mt->task.sched, mt);
            }
        }
    }
    if (mt->finished && mt->task.exc != NULL && !mt->retrieved
        && !PyErr_GivenExceptionMatches(mt->task.exc, PyExc_MicroThreadExit))
    {
        mt->retrieved = 1;
        PyErr_SetRaisedException(Py_NewRef(mt->task.exc));
        PyErr_FormatUnraisable("Exception in micro-thread %R was never retrieved", op);
    }
    PyErr_SetRaisedException(saved);
}

static void
microthread_dealloc(PyObject *op)
{
    MicroThreadObject *mt = MicroThread_CAST(op);
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (PyObject_CallFinalizerFromDealloc(op) < 0) {
        return;   /* resurrected */
    }
    if (mt->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    if (mt->in_all && mt->task.sched != NULL) {
        all_remove(mt->task.sched, mt);
    }
    (void)microthread_clear(op);
    Py_CLEAR(mt->name);
    task_free_extra(&mt->task);
    Py_CLEAR(mt->task.sched);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef microthread_methods[] = {
    {"join", _PyCFunction_CAST(microthread_join), METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("join($self, /, timeout=None)\n--\n\n"
               "Wait until the micro-thread has finished; return its result or\n"
               "raise its exception.  TimeoutError if timeout seconds pass first.")},
    _MICRO_THREAD_MICROTHREAD_DONE_METHODDEF
    _MICRO_THREAD_MICROTHREAD_KILL_METHODDEF
    _MICRO_THREAD_MICROTHREAD_THROW_METHODDEF
    _MICRO_THREAD_MICROTHREAD_STACK_METHODDEF
    {NULL, NULL},
};

static PyGetSetDef microthread_getset[] = {
    {"name", microthread_get_name, microthread_set_name,
     PyDoc_STR("The micro-thread's name (a str)."), NULL},
    {"state", microthread_get_state, NULL,
     PyDoc_STR("'created', 'ready', 'running', 'blocked' or 'finished'."), NULL},
    {"blocked_on", microthread_get_blocked_on, NULL,
     PyDoc_STR("What the micro-thread is blocked on, or None."), NULL},
    {NULL},
};

static PyMemberDef microthread_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET,
     offsetof(MicroThreadObject, weakreflist), Py_READONLY},
    {NULL},
};

static PyType_Slot microthread_slots[] = {
    {Py_tp_dealloc, microthread_dealloc},
    {Py_tp_finalize, microthread_finalize},
    {Py_tp_traverse, microthread_traverse},
    {Py_tp_clear, microthread_clear},
    {Py_tp_repr, microthread_repr},
    {Py_tp_methods, microthread_methods},
    {Py_tp_getset, microthread_getset},
    {Py_tp_members, microthread_members},
    {Py_tp_doc, "A micro-thread: a function running in the OS thread's scheduler.\n\n"
                "Create one with micro_thread.start()."},
    {0, NULL},
};

static PyType_Spec microthread_spec = {
    .name = "micro_thread.MicroThread",
    .basicsize = sizeof(MicroThreadObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
              | Py_TPFLAGS_DISALLOW_INSTANTIATION | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = microthread_slots,
};

/* A micro-thread can only defer inside Python frames that start with a
   Python function.  Any other callable (a builtin, a C method, a class) is
   called by a small Python function -- call0(fn) is "return fn()" -- as
   long as a plain CALL can pass its arguments (no keywords, at most three
   positional ones); otherwise it runs through C and cannot defer. */
static PyObject *
entry_args(SchedulerObject *s, PyObject **func, PyObject *args, PyObject *kwargs)
{
    PyObject *f = *func;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    int python = PyFunction_Check(f)
                 || (PyMethod_Check(f) && PyFunction_Check(PyMethod_GET_FUNCTION(f)));
    if (python || (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) || n > 3) {
        return Py_NewRef(args);
    }
    PyObject *newargs = PyTuple_New(n + 1);
    if (newargs == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(newargs, 0, Py_NewRef(f));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(newargs, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    }
    *func = s->trampolines[n];
    return newargs;
}

/* The contextvars context a new micro-thread starts in: a copy of the
   current one, or NULL (a new reference either way) when the current one
   holds no variable.  A micro-thread starting with NULL gets a new empty
   context from the interpreter the first time it uses one -- the same as a
   copy of an empty context, without a Context object for each of the many
   micro-threads that never touch a ContextVar. */
static int
start_context(PyObject **context)
{
    PyObject *current = _PyThreadState_GET()->context;
    *context = NULL;
    if (current == NULL) {
        return 0;
    }
    Py_ssize_t n = PyObject_Length(current);
    if (n <= 0) {
        return (int)n;
    }
    *context = PyContext_CopyCurrent();
    return *context == NULL ? -1 : 0;
}

static MicroThreadObject *
microthread_new(SchedulerObject *s, PyObject *func, PyObject *args, PyObject *kwargs)
{
    args = entry_args(s, &func, args, kwargs);
    if (args == NULL) {
        return NULL;
    }
    PyObject *context;
    if (start_context(&context) < 0) {
        Py_DECREF(args);
        return NULL;
    }
    MicroThreadObject *mt = PyObject_GC_New(MicroThreadObject,
                                            (PyTypeObject *)s->microthread_type);
    if (mt == NULL) {
        Py_XDECREF(context);
        Py_DECREF(args);
        return NULL;
    }
    _PyMicroThread_InitCore(&mt->core, func, args, kwargs, context);
    Py_XDECREF(context);
    Py_DECREF(args);
    memset(&mt->task, 0, sizeof(mt->task));
    mt->task.sched = (SchedulerObject *)Py_NewRef(s);
    mt->task.block_deadline = NO_DEADLINE;
    /* The name is made when first asked for: most micro-threads never
       need it, and it is a third of an idle one's size. */
    mt->name = NULL;
    mt->number = ++s->counter;
    mt->finished = mt->retrieved = mt->in_ready = 0;
    queue_init(&mt->joiners, NULL);
    mt->all_prev = mt->all_next = NULL;
    mt->in_all = 0;
    mt->weakreflist = NULL;
    PyObject_GC_Track(mt);
    if (ready_push(s, mt) < 0) {
        Py_DECREF(mt);
        return NULL;
    }
    mt->all_prev = s->all_tail;
    if (s->all_tail) {
        s->all_tail->all_next = mt;
    }
    else {
        s->all_head = mt;
    }
    s->all_tail = mt;
    mt->in_all = 1;
    return mt;
}


/* ====================================================================== */
/* MicroPipe */

struct PipeObject {
    PyObject_HEAD
    PyObject **items;           /* ring buffer */
    Py_ssize_t head, len, cap;
    Py_ssize_t maxsize;         /* 0: unbounded */
    int closed;
    unsigned long long thread_id;
    WaitQueue getters;
    WaitQueue putters;
    PyObject *weakreflist;
};

#define Pipe_CAST(op) ((PipeObject *)(op))

static int
pipe_reserve(PipeObject *p)
{
    if (p->len < p->cap) {
        return 0;
    }
    Py_ssize_t cap = p->cap ? p->cap * 2 : 8;
    PyObject **items = PyMem_New(PyObject *, cap);
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < p->len; i++) {
        items[i] = p->items[(p->head + i) % p->cap];
    }
    PyMem_Free(p->items);
    p->items = items;
    p->cap = cap;
    p->head = 0;
    return 0;
}

static int
pipe_append(PipeObject *p, PyObject *item)   /* steals item */
{
    if (pipe_reserve(p) < 0) {
        Py_DECREF(item);
        return -1;
    }
    p->items[(p->head + p->len) % p->cap] = item;
    p->len++;
    return 0;
}

static PyObject *
pipe_popleft(PipeObject *p)
{
    PyObject *item = p->items[p->head];
    p->head = (p->head + 1) % p->cap;
    p->len--;
    return item;
}

static PyObject *
pipe_closed_error(PyObject *self)
{
    module_state *st = state_from_type(Py_TYPE(self));
    if (st != NULL) {
        PyErr_SetString(st->pipe_closed_error, "the MicroPipe is closed");
    }
    return NULL;
}

static int
pipe_check_thread(PipeObject *p)
{
    if (p->thread_id != _PyThreadState_GET()->id) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a MicroPipe can only be used in the OS thread that made it");
        return -1;
    }
    return 0;
}

/* Hand item (stolen) to the first blocked getter. */
static void
pipe_hand_over(PipeObject *p, PyObject *item)
{
    task_wake_inline(p->getters.head, item, NULL);
}

/* After an item left the buffer: let the first blocked putter in. */
static int
pipe_admit_putter(PipeObject *p)
{
    Task *w = p->putters.head;
    if (w == NULL || (p->maxsize > 0 && p->len >= p->maxsize)) {
        return 0;
    }
    PyObject *item = w->x->qitem;
    w->x->qitem = NULL;
    if (pipe_append(p, item) < 0) {
        return -1;
    }
    task_wake(w, Py_NewRef(Py_None), NULL);
    return 0;
}

static PyObject *
pipe_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"maxsize", NULL};
    PyObject *maxsize_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|O:MicroPipe", kwlist, &maxsize_obj)) {
        return NULL;
    }
    Py_ssize_t maxsize = 0;
    if (maxsize_obj != NULL) {
        if (!PyLong_Check(maxsize_obj) || PyBool_Check(maxsize_obj)) {
            PyErr_Format(PyExc_TypeError, "maxsize must be an int, not %T", maxsize_obj);
            return NULL;
        }
        maxsize = PyLong_AsSsize_t(maxsize_obj);
        if (maxsize == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (maxsize < 0) {
            PyErr_SetString(PyExc_ValueError, "maxsize must be >= 0");
            return NULL;
        }
    }
    PipeObject *p = (PipeObject *)type->tp_alloc(type, 0);
    if (p == NULL) {
        return NULL;
    }
    p->maxsize = maxsize;
    p->thread_id = _PyThreadState_GET()->id;
    queue_init(&p->getters, NULL);
    queue_init(&p->putters, NULL);
    return (PyObject *)p;
}

static PyObject *
pipe_get_impl(PipeObject *p, PyObject *const *args, int for_iteration)
{
    if (pipe_check_thread(p) < 0) {
        return NULL;
    }
    if (p->len > 0) {
        PyObject *item = pipe_popleft(p);
        if (pipe_admit_putter(p) < 0) {
            Py_DECREF(item);
            return NULL;
        }
        return item;
    }
    if (p->closed) {
        if (for_iteration) {
            return NULL;   /* StopIteration */
        }
        return pipe_closed_error((PyObject *)p);
    }
    SchedulerObject *s = scheduler_for((PyObject *)p);
    if (s == NULL) {
        return NULL;
    }
    PyObject *res = block(s, args, args == NULL ? (PyObject *)p : NULL, arm_pipe_get,
                          (PyObject *)p, "MicroPipe.get", NULL, NO_DEADLINE, TIMER_TIMEOUT, NULL);
    if (res == NULL && for_iteration
        && PyErr_ExceptionMatches(state_from_type(Py_TYPE(p))->pipe_closed_error))
    {
        PyErr_Clear();
    }
    return res;
}

static int
arm_pipe_get(PyObject *op, Task *t)
{
    queue_push(&Pipe_CAST(op)->getters, t);
    return 0;
}

static int
arm_pipe_put(PyObject *op, Task *t)
{
    queue_push(&Pipe_CAST(op)->putters, t);
    return 0;
}

static PyObject *
pipe_get(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    /* Hand-written rather than Argument Clinic: deferring functions pass
       their argument array to PyDeferred_CanDefer(). */
    if (!_PyArg_CheckPositional("get", nargs, 0, 0)) {
        return NULL;
    }
    return pipe_get_impl(Pipe_CAST(op), args, 0);
}

static PyObject *
pipe_iternext(PyObject *op)
{
    /* A for loop over the pipe that suspended runs this again on resume:
       the item it was woken with comes first. */
    PyObject *item;
    if (PyDeferred_TakeOutcome(op, &item)) {
        if (item == NULL && PyErr_ExceptionMatches(
                state_from_type(Py_TYPE(op))->pipe_closed_error))
        {
            PyErr_Clear();   /* closed and drained: the loop ends */
        }
        return item;
    }
    return pipe_get_impl(Pipe_CAST(op), NULL, 1);
}

static PyObject *
pipe_put(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    /* Hand-written rather than Argument Clinic: see pipe_get(). */
    PipeObject *p = Pipe_CAST(op);
    if (!_PyArg_CheckPositional("put", nargs, 1, 1)) {
        return NULL;
    }
    if (pipe_check_thread(p) < 0) {
        return NULL;
    }
    if (p->closed) {
        return pipe_closed_error(op);
    }
    PyObject *item = args[0];
    if (p->getters.head != NULL) {
        assert(p->len == 0);
        pipe_hand_over(p, Py_NewRef(item));
        Py_RETURN_NONE;
    }
    if (p->maxsize == 0 || p->len < p->maxsize) {
        if (pipe_append(p, Py_NewRef(item)) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    SchedulerObject *s = scheduler_for(op);
    if (s == NULL) {
        return NULL;
    }
    Task *t = current_task(s);
    if (task_extra(t) == NULL) {
        return NULL;
    }
    Py_XSETREF(t->x->qitem, Py_NewRef(item));
    PyObject *res = block(s, args, NULL, arm_pipe_put, op, "MicroPipe.put", NULL,
                          NO_DEADLINE, TIMER_TIMEOUT, NULL);
    if (res == NULL && s->defer_arm == NULL && t->queue == NULL) {
        Py_CLEAR(t->x->qitem);   /* failed before blocking (not deferred) */
    }
    return res;
}

/*[clinic input]
_micro_thread.MicroPipe.close

Close the pipe.

Blocked getters and putters get PipeClosedError; buffered items can
still be got.
[clinic start generated code]*/

static PyObject *
_micro_thread_MicroPipe_close_impl(PipeObject *self)
/*[clinic end generated code: output=b4e060de0ab2173b input=130824bf996fed64]*/
{
    PipeObject *p = self;
    if (pipe_check_thread(p) < 0) {
        return NULL;
    }
    if (p->closed) {
        Py_RETURN_NONE;
    }
    p->closed = 1;
    module_state *st = state_from_type(Py_TYPE(p));
    if (st == NULL) {
        return NULL;
    }
    WaitQueue *queues[2] = {&p->getters, &p->putters};
    for (int i = 0; i < 2; i++) {
        while (queues[i]->head != NULL) {
            PyObject *exc = PyObject_CallFunction(st->pipe_closed_error, "s",
                                                  "the MicroPipe is closed");
            if (exc == NULL) {
                return NULL;
            }
            task_wake(queues[i]->head, NULL, exc);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
pipe_get_closed(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(Pipe_CAST(op)->closed);
}

static Py_ssize_t
pipe_length(PyObject *op)
{
    return Pipe_CAST(op)->len;
}

static PyObject *
pipe_repr(PyObject *op)
{
    PipeObject *p = Pipe_CAST(op);
    return PyUnicode_FromFormat("<MicroPipe maxsize=%zd len=%zd%s>",
                                p->maxsize, p->len, p->closed ? " closed" : "");
}

static int
pipe_traverse(PyObject *op, visitproc visit, void *arg)
{
    PipeObject *p = Pipe_CAST(op);
    Py_VISIT(Py_TYPE(op));
    for (Py_ssize_t i = 0; i < p->len; i++) {
        Py_VISIT(p->items[(p->head + i) % p->cap]);
    }
    int err = queue_traverse(&p->getters, visit, arg);
    return err ? err : queue_traverse(&p->putters, visit, arg);
}

static int
pipe_clear(PyObject *op)
{
    PipeObject *p = Pipe_CAST(op);
    while (p->len > 0) {
        Py_DECREF(pipe_popleft(p));
    }
    while (p->getters.head != NULL) {
        task_unqueue(p->getters.head);
    }
    while (p->putters.head != NULL) {
        task_unqueue(p->putters.head);
    }
    return 0;
}

static void
pipe_dealloc(PyObject *op)
{
    PipeObject *p = Pipe_CAST(op);
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    if (p->weakreflist != NULL) {
        PyObject_ClearWeakRefs(op);
    }
    (void)pipe_clear(op);
    PyMem_Free(p->items);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef pipe_methods[] = {
    {"get", _PyCFunction_CAST(pipe_get), METH_FASTCALL,
     PyDoc_STR("get($self, /)\n--\n\n"
               "Remove and return the next item, waiting for one if the pipe is\n"
               "empty.  PipeClosedError once the pipe is closed and drained.")},
    {"put", _PyCFunction_CAST(pipe_put), METH_FASTCALL,
     PyDoc_STR("put($self, item, /)\n--\n\n"
               "Add item, waiting while a bounded pipe is full.  PipeClosedError\n"
               "if the pipe is closed (the item is not added).")},
    _MICRO_THREAD_MICROPIPE_CLOSE_METHODDEF
    {NULL, NULL},
};

static PyGetSetDef pipe_getset[] = {
    {"closed", pipe_get_closed, NULL, PyDoc_STR("True once close() was called."), NULL},
    {NULL},
};

static PyMemberDef pipe_members[] = {
    {"__weaklistoffset__", Py_T_PYSSIZET, offsetof(PipeObject, weakreflist), Py_READONLY},
    {"maxsize", Py_T_PYSSIZET, offsetof(PipeObject, maxsize), Py_READONLY,
     PyDoc_STR("The most items the pipe buffers (0: no limit).")},
    {NULL},
};

static PyType_Slot pipe_slots[] = {
    {Py_tp_new, pipe_new},
    {Py_tp_dealloc, pipe_dealloc},
    {Py_tp_traverse, pipe_traverse},
    {Py_tp_clear, pipe_clear},
    {Py_tp_repr, pipe_repr},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, pipe_iternext},
    {Py_tp_methods, pipe_methods},
    {Py_tp_getset, pipe_getset},
    {Py_tp_members, pipe_members},
    {Py_sq_length, pipe_length},
    {Py_tp_doc, "MicroPipe(maxsize=0)\n--\n\n"
                "A FIFO channel between micro-threads of one OS thread.\n\n"
                "put() waits while a bounded pipe (maxsize > 0) is full; get()\n"
                "waits while it is empty.  Iterating gets items until the pipe\n"
                "is closed and drained."},
    {0, NULL},
};

static PyType_Spec pipe_spec = {
    .name = "micro_thread.MicroPipe",
    .basicsize = sizeof(PipeObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = pipe_slots,
};


/* ====================================================================== */
/* _Waiter: a one-shot wake-up slot, for the synchronisation primitives */

struct WaiterObject {
    PyObject_HEAD
    WaitQueue queue;            /* at most the one waiting task */
    PyObject *value;
    PyObject *exc;
    int has_outcome;
    int used;
    int abandoned;
};

#define Waiter_CAST(op) ((WaiterObject *)(op))

static void
waiter_on_cancel(WaitQueue *q, Task *Py_UNUSED(t))
{
    ((WaiterObject *)((char *)q - offsetof(WaiterObject, queue)))->abandoned = 1;
}

static PyObject *
waiter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (!_PyArg_NoPositional("_Waiter", args) || !_PyArg_NoKeywords("_Waiter", kwds)) {
        return NULL;
    }
    WaiterObject *w = (WaiterObject *)type->tp_alloc(type, 0);
    if (w != NULL) {
        queue_init(&w->queue, waiter_on_cancel);
    }
    return (PyObject *)w;
}

static PyObject *
waiter_wait(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    /* Hand-written rather than Argument Clinic: see pipe_get(). */
    WaiterObject *w = Waiter_CAST(op);
    if (!_PyArg_CheckPositional("wait", nargs, 0, 1)) {
        return NULL;
    }
    PyObject *blocked_on = nargs > 0 && args[0] != Py_None ? args[0] : NULL;
    if (blocked_on != NULL && !PyUnicode_Check(blocked_on)) {
        PyErr_Format(PyExc_TypeError, "blocked_on must be a str or None, not %T",
                     blocked_on);
        return NULL;
    }
    if (w->used) {
        PyErr_SetString(PyExc_RuntimeError, "_Waiter.wait() can only be called once");
        return NULL;
    }
    w->used = 1;
    if (w->has_outcome) {
        if (w->exc != NULL) {
            PyErr_SetRaisedException(Py_NewRef(w->exc));
            return NULL;
        }
        return Py_NewRef(w->value);
    }
    SchedulerObject *s = scheduler_for(op);
    if (s == NULL) {
        return NULL;
    }
    PyObject *res = block(s, args, NULL, arm_waiter, op, "_Waiter.wait", blocked_on,
                          NO_DEADLINE, TIMER_TIMEOUT, NULL);
    if (res == NULL && s->defer_arm == NULL && !w->has_outcome) {
        /* It gave up before it blocked (a pending kill, an expired
           timeout): nobody may hand it anything any more. */
        w->abandoned = 1;
    }
    return res;
}

static int
arm_waiter(PyObject *op, Task *t)
{
    queue_push(&Waiter_CAST(op)->queue, t);
    return 0;
}

/* Deliver an outcome (value or exc, stolen); 1 if delivered. */
static int
waiter_deliver(WaiterObject *w, PyObject *value, PyObject *exc)
{
    Task *waiting = w->queue.head;
    if (waiting != NULL && waiting->sched->thread_id != _PyThreadState_GET()->id) {
        Py_XDECREF(value);
        Py_XDECREF(exc);
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot wake a micro-thread task from another OS thread");
        return -1;
    }
    if (w->has_outcome || w->abandoned) {
        Py_XDECREF(value);
        Py_XDECREF(exc);
        return 0;
    }
    w->has_outcome = 1;
    if (w->queue.head != NULL) {
        task_wake(w->queue.head, value, exc);
    }
    else {
        w->value = value;
        w->exc = exc;
    }
    return 1;
}

static PyObject *
delivered(int rc)
{
    return rc < 0 ? NULL : PyBool_FromLong(rc);
}

/*[clinic input]
_micro_thread._Waiter.fire

    value: object = None
    /

Wake the waiting task with value; True if this delivered it.
[clinic start generated code]*/

static PyObject *
_micro_thread__Waiter_fire_impl(WaiterObject *self, PyObject *value)
/*[clinic end generated code: output=adb63c95c5e1ce78 input=9d6c49625ccc7cfb]*/
{
    return delivered(waiter_deliver(self, Py_NewRef(value), NULL));
}

/*[clinic input]
_micro_thread._Waiter.fail

    exc: object
    /

Wake the waiting task with exc; True if this delivered it.
[clinic start generated code]*/

static PyObject *
_micro_thread__Waiter_fail(WaiterObject *self, PyObject *exc)
/*[clinic end generated code: output=8454024411466ece input=cbac5040a0f04a5b]*/
{
    PyObject *value = make_exception(exc);
    if (value == NULL) {
        return NULL;
    }
    return delivered(waiter_deliver(self, NULL, value));
}

static PyObject *
waiter_get_abandoned(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(Waiter_CAST(op)->abandoned);
}

static PyObject *
waiter_get_fired(PyObject *op, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(Waiter_CAST(op)->has_outcome);
}

static int
waiter_traverse(PyObject *op, visitproc visit, void *arg)
{
    WaiterObject *w = Waiter_CAST(op);
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(w->value);
    Py_VISIT(w->exc);
    return queue_traverse(&w->queue, visit, arg);
}

static int
waiter_clear(PyObject *op)
{
    WaiterObject *w = Waiter_CAST(op);
    Py_CLEAR(w->value);
    Py_CLEAR(w->exc);
    while (w->queue.head != NULL) {
        task_unqueue(w->queue.head);
    }
    return 0;
}

static void
waiter_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    (void)waiter_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyMethodDef waiter_methods[] = {
    {"wait", _PyCFunction_CAST(waiter_wait), METH_FASTCALL,
     PyDoc_STR("wait($self, blocked_on=None, /)\n--\n\n"
               "Block until fire() or fail(); return the value or raise.\n"
               "blocked_on is what MicroThread.blocked_on shows meanwhile.")},
    _MICRO_THREAD__WAITER_FIRE_METHODDEF
    _MICRO_THREAD__WAITER_FAIL_METHODDEF
    {NULL, NULL},
};

static PyGetSetDef waiter_getset[] = {
    {"abandoned", waiter_get_abandoned, NULL,
     PyDoc_STR("True if the waiting task gave up (killed, timed out)."), NULL},
    {"fired", waiter_get_fired, NULL,
     PyDoc_STR("True once an outcome was delivered."), NULL},
    {NULL},
};

static PyType_Slot waiter_slots[] = {
    {Py_tp_new, waiter_new},
    {Py_tp_dealloc, waiter_dealloc},
    {Py_tp_traverse, waiter_traverse},
    {Py_tp_clear, waiter_clear},
    {Py_tp_methods, waiter_methods},
    {Py_tp_getset, waiter_getset},
    {Py_tp_doc, "_Waiter()\n--\n\n"
                "A one-shot wake-up slot for one task (internal: the\n"
                "synchronisation primitives are built on it)."},
    {0, NULL},
};

static PyType_Spec waiter_spec = {
    .name = "micro_thread._Waiter",
    .basicsize = sizeof(WaiterObject),
    .flags = (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE),
    .slots = waiter_slots,
};


/* ====================================================================== */
/* Deadlock report */

/* A DeadlockError lists at most this many micro-threads, each with at most
   this many of its innermost frames. */
#define DEADLOCK_REPORT_THREADS 100
#define DEADLOCK_REPORT_FRAMES 10

static int
append_task_report(PyObject *lines, PyObject *format_stack, MicroThreadObject *mt)
{
    PyObject *line = PyUnicode_FromFormat("  %R", (PyObject *)mt);
    if (line == NULL || PyList_Append(lines, line) < 0) {
        Py_XDECREF(line);
        return -1;
    }
    Py_DECREF(line);
    PyObject *frames = microthread_frames(mt);
    if (frames == NULL) {
        return -1;
    }
    if (PyList_GET_SIZE(frames) > 0) {
        /* The innermost frames tell what it waits in; keep the report short. */
        PyObject *stack = PyObject_CallFunction(format_stack, "Oi",
                                                PyList_GET_ITEM(frames, 0),
                                                DEADLOCK_REPORT_FRAMES);
        if (stack == NULL) {
            Py_DECREF(frames);
            return -1;
        }
        PyObject *text = PyUnicode_Join(Py_GetConstantBorrowed(Py_CONSTANT_EMPTY_STR), stack);
        Py_DECREF(stack);
        if (text == NULL || PyList_Append(lines, text) < 0) {
            Py_XDECREF(text);
            Py_DECREF(frames);
            return -1;
        }
        Py_DECREF(text);
    }
    Py_DECREF(frames);
    return 0;
}

static PyObject *
deadlock_message(SchedulerObject *s, Task *waiting)
{
    PyObject *format_stack = _PyImport_GetModuleAttrString("traceback", "format_stack");
    if (format_stack == NULL) {
        return NULL;
    }
    PyObject *lines = PyList_New(0);
    if (lines == NULL) {
        Py_DECREF(format_stack);
        return NULL;
    }
    PyObject *what = task_blocked_text(waiting);
    if (what == NULL) {
        goto fail;
    }
    PyObject *head = task_mt(waiting) == NULL
        ? PyUnicode_FromFormat("deadlock: the OS thread's root waits (%S), and every "
                               "micro-thread is blocked with nothing that can wake it:",
                               what)
        : PyUnicode_FromFormat("deadlock: %R waits (%S) below other blocked "
                               "micro-threads, and nothing can wake it:",
                               (PyObject *)task_mt(waiting), what);
    Py_DECREF(what);
    if (head == NULL || PyList_Append(lines, head) < 0) {
        Py_XDECREF(head);
        goto fail;
    }
    Py_DECREF(head);
    Py_ssize_t listed = 0, more = 0;
    for (MicroThreadObject *mt = s->all_head; mt != NULL; mt = mt->all_next) {
        if (listed == DEADLOCK_REPORT_THREADS) {
            more++;
            continue;
        }
        listed++;
        if (append_task_report(lines, format_stack, mt) < 0) {
            goto fail;
        }
    }
    if (more > 0) {
        PyObject *line = PyUnicode_FromFormat("  ... and %zd more blocked micro-threads",
                                              more);
        if (line == NULL || PyList_Append(lines, line) < 0) {
            Py_XDECREF(line);
            goto fail;
        }
        Py_DECREF(line);
    }
    PyObject *sep = PyUnicode_FromString("\n");
    if (sep == NULL) {
        goto fail;
    }
    PyObject *msg = PyUnicode_Join(sep, lines);
    Py_DECREF(sep);
    Py_DECREF(lines);
    Py_DECREF(format_stack);
    return msg;
fail:
    Py_DECREF(lines);
    Py_DECREF(format_stack);
    return NULL;
}


/* ====================================================================== */
/* The C API of the notifier (Include/cpython/microthread.h) */

/* This OS thread's scheduler, made on first use. */
static SchedulerObject *
this_scheduler(void)
{
    PyObject *sched = ((_PyThreadStateImpl *)_PyThreadState_GET())->mt_scheduler;
    if (sched != NULL) {
        return (SchedulerObject *)sched;
    }
    PyObject *module = PyImport_ImportModule("_micro_thread");
    if (module == NULL) {
        return NULL;
    }
    SchedulerObject *s = get_scheduler(get_module_state(module));
    Py_DECREF(module);
    return s;
}

static PyObject *
wait_io(PyObject *const *args, const IOWait *io, PyTime_t deadline, const char *what)
{
    SchedulerObject *s = this_scheduler();
    if (s == NULL) {
        return NULL;
    }
    return block(s, args, NULL, arm_io, NULL, what, NULL,
                 deadline, TIMER_IO, io);
}

PyObject *
PyDeferred_WaitFd(PyObject *const *args, int fd, int events, PyTime_t deadline,
                  PyDeferred_CompleteFunc complete, PyObject *state)
{
    if (complete == NULL || (fd >= 0 && (events & (MT_READ | MT_WRITE)) == 0)) {
        PyErr_SetString(PyExc_SystemError, "PyDeferred_WaitFd: bad arguments");
        return NULL;
    }
    IOWait io = {fd < 0 ? -1 : fd, events, complete, state, NULL, NULL};
    const char *what = fd < 0 ? "sleep_d" : (events & MT_READ) ? "I/O (readable)"
                                                               : "I/O (writable)";
    return wait_io(args, &io, deadline, what);
}

PyObject *
PyDeferred_Offload(PyObject *const *args, PyDeferred_WorkFunc work, void *arg,
                   PyDeferred_CompleteFunc complete, PyObject *state)
{
    if (complete == NULL || work == NULL) {
        PyErr_SetString(PyExc_SystemError, "PyDeferred_Offload: bad arguments");
        return NULL;
    }
    IOWait io = {-1, 0, complete, state, work, arg};
    return wait_io(args, &io, NO_DEADLINE, "I/O (worker thread)");
}

void
PyDeferred_ForgetFd(int fd)
{
    PyObject *sched = ((_PyThreadStateImpl *)_PyThreadState_GET())->mt_scheduler;
    if (sched == NULL) {
        return;
    }
    SchedulerObject *s = (SchedulerObject *)sched;
    if (fd < 0 || fd >= s->fdwaits_cap || s->fdwaits[fd] == NULL) {
        return;
    }
    FdWaits *w = s->fdwaits[fd];
    if (w->armed) {
        _mt_notifier_forget(&s->notifier, fd);
        w->armed = 0;
    }
    if (w->readers.head == NULL && w->writers.head == NULL) {
        return;
    }
    PyObject *saved = PyErr_GetRaisedException();
    PyObject *exc = PyObject_CallFunction(
        PyExc_OSError, "is", EBADF,
        "file descriptor closed while a micro-thread waited on it");
    if (exc == NULL) {
        exc = PyErr_GetRaisedException();
    }
    fdwaits_fail_all(s, w, exc);
    Py_DECREF(exc);
    PyErr_SetRaisedException(saved);
}


/* ====================================================================== */
/* Module functions */

static PyObject *
mt_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError, "start() missing required argument 'fn'");
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "start() argument 'fn' must be callable, not %T",
                     args[0]);
        return NULL;
    }
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    PyObject *fargs = _PyTuple_FromArray(args + 1, nargs - 1);
    if (fargs == NULL) {
        return NULL;
    }
    PyObject *kwargs = NULL;
    if (kwnames != NULL) {
        kwargs = _PyStack_AsDict(args + nargs, kwnames);
        if (kwargs == NULL) {
            Py_DECREF(fargs);
            return NULL;
        }
    }
    MicroThreadObject *mt = microthread_new(s, args[0], fargs, kwargs);
    Py_DECREF(fargs);
    Py_XDECREF(kwargs);
    return (PyObject *)mt;
}

static PyObject *
mt_run(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    if (current_task(s) != &s->root) {
        PyErr_SetString(PyExc_RuntimeError,
                        "run() cannot be called from inside a micro-thread; "
                        "use start() and join()");
        return NULL;
    }
    PyObject *mt = mt_start(module, args, nargs, kwnames);
    if (mt == NULL) {
        return NULL;
    }
    MicroThread_CAST(mt)->retrieved = 1;
    PyObject *res;
    if (MicroThread_CAST(mt)->finished) {
        res = microthread_outcome(MicroThread_CAST(mt));
    }
    else {
        /* It is the main micro-thread: Ctrl-C goes to it. */
        MicroThreadObject *outer = s->main;
        s->main = (MicroThreadObject *)Py_NewRef(mt);
        res = block(s, args, NULL, arm_join, mt, "run", mt, NO_DEADLINE, TIMER_TIMEOUT, NULL);
        Py_XSETREF(s->main, outer);
    }
    Py_DECREF(mt);
    return res;
}

/*[clinic input]
_micro_thread.current

The running micro-thread, or None in the OS thread's root.
[clinic start generated code]*/

static PyObject *
_micro_thread_current_impl(PyObject *module)
/*[clinic end generated code: output=0094b148aa83851d input=6a19d133d1a6cae7]*/
{
    _PyMicroThreadCore *core = _PyMicroThread_Current(_PyThreadState_GET());
    if (core == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef((PyObject *)microthread_of_core(core));
}

/*[clinic input]
_micro_thread.enumerate

The unfinished micro-threads of this OS thread, in start order.
[clinic start generated code]*/

static PyObject *
_micro_thread_enumerate_impl(PyObject *module)
/*[clinic end generated code: output=e65df6ef9e92c258 input=1cbcd6c5614f15c6]*/
{
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    for (MicroThreadObject *mt = s->all_head; mt != NULL; mt = mt->all_next) {
        if (PyList_Append(list, (PyObject *)mt) < 0) {
            Py_DECREF(list);
            return NULL;
        }
    }
    return list;
}

static PyObject *
mt_sleep(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    /* Hand-written rather than Argument Clinic: see pipe_get(). */
    if (!_PyArg_CheckPositional("sleep", nargs, 1, 1)) {
        return NULL;
    }
    PyTime_t delay;
    if (_PyTime_FromSecondsObject(&delay, args[0], _PyTime_ROUND_TIMEOUT) < 0) {
        return NULL;
    }
    if (delay < 0) {
        PyErr_SetString(PyExc_ValueError, "sleep length must be non-negative");
        return NULL;
    }
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    if (delay == 0) {
        Task *t = current_task(s);
        if (task_mt(t) != NULL && PyDeferred_CanDefer(args)) {
            return block(s, args, NULL, arm_yield, NULL, "sleep", NULL,
                         NO_DEADLINE, TIMER_TIMEOUT, NULL);
        }
        /* The root, or a pinned micro-thread: let everything ready now run
           once. */
        if (checkpoint(t) < 0) {
            return NULL;
        }
        for (Py_ssize_t n = s->ready_len; n > 0 && s->ready_len > 0; n--) {
            if (run_step(s, NULL) < 0) {
                return NULL;
            }
        }
        if (fire_due_timers(s) < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    PyTime_t now;
    (void)PyTime_MonotonicRaw(&now);
    return block(s, args, NULL, arm_nothing, NULL, "sleep", NULL,
                 _PyTime_Add(now, delay), TIMER_SLEEP, NULL);
}

/*[clinic input]
_micro_thread._push_deadline

    deadline as deadline_obj: object
    /

Enter a timeout scope ending at time.monotonic() == deadline.

None hides the scopes around it.  Returns a token for _pop_deadline().
[clinic start generated code]*/

static PyObject *
_micro_thread__push_deadline(PyObject *module, PyObject *deadline_obj)
/*[clinic end generated code: output=ed47a198102eed80 input=50600d2132efff6b]*/
{
    PyTime_t deadline = NO_DEADLINE;
    if (deadline_obj != Py_None
        && _PyTime_FromSecondsObject(&deadline, deadline_obj, _PyTime_ROUND_TIMEOUT) < 0)
    {
        return NULL;
    }
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    Task *t = current_task(s);
    TaskExtra *x = task_extra(t);
    if (x == NULL) {
        return NULL;
    }
    if (x->ndeadlines == x->cap_deadlines) {
        int cap = x->cap_deadlines ? x->cap_deadlines * 2 : 4;
        PyTime_t *d = PyMem_Resize(x->deadlines, PyTime_t, cap);
        if (d == NULL) {
            return PyErr_NoMemory();
        }
        x->deadlines = d;
        x->cap_deadlines = cap;
    }
    /* None shields the block from the scopes around it. */
    PyTime_t earliest = deadline_obj == Py_None ? NO_DEADLINE : task_deadline(t);
    x->deadlines[x->ndeadlines++] = deadline < earliest ? deadline : earliest;
    return PyLong_FromLong(x->ndeadlines);
}

/*[clinic input]
_micro_thread._pop_deadline

    token: object
    /

Leave the innermost timeout scope.
[clinic start generated code]*/

static PyObject *
_micro_thread__pop_deadline(PyObject *module, PyObject *token)
/*[clinic end generated code: output=9e588a8085205c80 input=b953399b2f5d0479]*/
{
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    Task *t = current_task(s);
    long n = PyLong_AsLong(token);
    if (n == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (t->x == NULL || n != t->x->ndeadlines || n <= 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "timeout scopes must be left in the reverse order of entry");
        return NULL;
    }
    t->x->ndeadlines--;
    Py_RETURN_NONE;
}

/*[clinic input]
_micro_thread._current_task

The running micro-thread, or a token for the root.
[clinic start generated code]*/

static PyObject *
_micro_thread__current_task_impl(PyObject *module)
/*[clinic end generated code: output=c36c912e9e46b93f input=ab07c4a8bab86d94]*/
{
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    Task *t = current_task(s);
    return Py_NewRef(task_mt(t) != NULL ? (PyObject *)task_mt(t) : (PyObject *)s);
}

/* Kill every unfinished micro-thread of the scheduler (a kill that is
   still undelivered is not repeated). */
static int
kill_all(SchedulerObject *s)
{
    for (MicroThreadObject *mt = s->all_head; mt != NULL; ) {
        MicroThreadObject *next = mt->all_next;
        Py_INCREF(mt);
        PyObject *r = _micro_thread_MicroThread_kill_impl(mt);
        Py_DECREF(mt);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        mt = next;
    }
    return 0;
}

/*[clinic input]
_micro_thread._shutdown

Kill this OS thread's micro-threads (at exit).
[clinic start generated code]*/

static PyObject *
_micro_thread__shutdown_impl(PyObject *module)
/*[clinic end generated code: output=bc801875f8f6bc4d input=32ee84d965da5a8f]*/
{
    /* At interpreter exit: end the micro-threads left in this OS thread,
       giving their finally blocks up to a second to run. */
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    PyTime_t now, deadline;
    (void)PyTime_MonotonicRaw(&now);
    deadline = _PyTime_Add(now, 1000000000);
    while (s->all_head != NULL && now < deadline) {
        if (kill_all(s) < 0) {
            return NULL;
        }
        if (s->ready_len > 0) {
            if (run_step(s, NULL) < 0) {
                return NULL;
            }
        }
        else {
            int fired = fire_due_timers(s);
            if (fired < 0) {
                return NULL;
            }
            if (fired == 0) {
                if (s->ntimers == 0) {
                    break;   /* blocked for good: nothing can wake them */
                }
                PyTime_t when = s->timers[0].when;
                if (sleep_until(when < deadline ? when : deadline) < 0) {
                    return NULL;
                }
            }
        }
        (void)PyTime_MonotonicRaw(&now);
    }
    Py_RETURN_NONE;
}

/*[clinic input]
_micro_thread.pin_count

How many times a micro-thread of this OS thread pinned.

A micro-thread pins when it blocks where it cannot suspend (a C frame
between the blocking call and the micro-thread's start): the scheduler
then runs nested on its C stack.
[clinic start generated code]*/

static PyObject *
_micro_thread_pin_count_impl(PyObject *module)
/*[clinic end generated code: output=18c97a6e79da77f1 input=62d47e07b93470c0]*/
{
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    return PyLong_FromUnsignedLongLong(s->pin_count);
}

/*[clinic input]
_micro_thread.set_pin_hook

    hook: object
    /

Call hook(microthread, what) whenever a micro-thread of this OS thread pins.

The hook runs on the pinned stack; None removes it.
[clinic start generated code]*/

static PyObject *
_micro_thread_set_pin_hook(PyObject *module, PyObject *hook)
/*[clinic end generated code: output=63f1465c683bf3c8 input=c04cf881f156b866]*/
{
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_Format(PyExc_TypeError,
                     "set_pin_hook() argument must be callable or None, not %T", hook);
        return NULL;
    }
    SchedulerObject *s = get_scheduler(get_module_state(module));
    if (s == NULL) {
        return NULL;
    }
    Py_XSETREF(s->pin_hook, hook == Py_None ? NULL : Py_NewRef(hook));
    Py_RETURN_NONE;
}

/*[clinic input]
_micro_thread._after_fork_child

Give the scheduler a notifier of its own in a forked child.
[clinic start generated code]*/

static PyObject *
_micro_thread__after_fork_child_impl(PyObject *module)
/*[clinic end generated code: output=54902f129ba5ec6c input=97827ba349acfc81]*/
{
    _mt_workers_after_fork();
    PyObject *sched = ((_PyThreadStateImpl *)_PyThreadState_GET())->mt_scheduler;
    if (sched != NULL) {
        scheduler_after_fork((SchedulerObject *)sched);
    }
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"start", _PyCFunction_CAST(mt_start), METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("start(fn, /, *args, **kwargs)\n--\n\n"
               "Start fn(*args, **kwargs) in a new micro-thread and return it at once.")},
    {"run", _PyCFunction_CAST(mt_run), METH_FASTCALL | METH_KEYWORDS,
     PyDoc_STR("run(fn, /, *args, **kwargs)\n--\n\n"
               "Run fn(*args, **kwargs) as a micro-thread, with the scheduler,\n"
               "until it returns; return its result or raise its exception.")},
    _MICRO_THREAD_CURRENT_METHODDEF
    _MICRO_THREAD_ENUMERATE_METHODDEF
    {"sleep", _PyCFunction_CAST(mt_sleep), METH_FASTCALL,
     PyDoc_STR("sleep(seconds, /)\n--\n\n"
               "Block for seconds; sleep(0) lets the other ready micro-threads run.")},
    _MICRO_THREAD__PUSH_DEADLINE_METHODDEF
    _MICRO_THREAD__POP_DEADLINE_METHODDEF
    _MICRO_THREAD__CURRENT_TASK_METHODDEF
    _MICRO_THREAD_PIN_COUNT_METHODDEF
    _MICRO_THREAD_SET_PIN_HOOK_METHODDEF
    _MICRO_THREAD__AFTER_FORK_CHILD_METHODDEF
    _MICRO_THREAD__SHUTDOWN_METHODDEF
    {NULL, NULL},
};


/* ====================================================================== */
/* Module */

/* The entry functions of micro-threads that start with a callable that is
   not a Python function (see entry_args()). */
static const char trampolines_source[] =
    "def call0(fn): return fn()\n"
    "def call1(fn, a): return fn(a)\n"
    "def call2(fn, a, b): return fn(a, b)\n"
    "def call3(fn, a, b, c): return fn(a, b, c)\n";

static int
make_trampolines(module_state *st)
{
    PyObject *code = Py_CompileString(trampolines_source, "<micro_thread>", Py_file_input);
    if (code == NULL) {
        return -1;
    }
    PyObject *ns = PyDict_New();
    if (ns == NULL || PyDict_SetItemString(ns, "__builtins__", PyEval_GetBuiltins()) < 0) {
        Py_XDECREF(ns);
        Py_DECREF(code);
        return -1;
    }
    PyObject *res = PyEval_EvalCode(code, ns, ns);
    Py_DECREF(code);
    if (res == NULL) {
        Py_DECREF(ns);
        return -1;
    }
    Py_DECREF(res);
    static const char *names[4] = {"call0", "call1", "call2", "call3"};
    for (int i = 0; i < 4; i++) {
        if (PyDict_GetItemStringRef(ns, names[i], &st->trampolines[i]) <= 0) {
            Py_DECREF(ns);
            return -1;
        }
    }
    Py_DECREF(ns);
    return 0;
}

/* os.register_at_fork(after_in_child=_after_fork_child) */
static int
register_at_fork(PyObject *module)
{
    PyObject *hook = PyObject_GetAttrString(module, "_after_fork_child");
    if (hook == NULL) {
        return -1;
    }
    PyObject *reg = _PyImport_GetModuleAttrString("posix", "register_at_fork");
    if (reg == NULL) {
        Py_DECREF(hook);
        if (PyErr_ExceptionMatches(PyExc_ImportError)
            || PyErr_ExceptionMatches(PyExc_AttributeError))
        {
            PyErr_Clear();      /* no fork() here */
            return 0;
        }
        return -1;
    }
    PyObject *kwargs = Py_BuildValue("{sO}", "after_in_child", hook);
    PyObject *args = PyTuple_New(0);
    PyObject *r = NULL;
    if (kwargs != NULL && args != NULL) {
        r = PyObject_Call(reg, args, kwargs);
    }
    Py_XDECREF(args);
    Py_XDECREF(kwargs);
    Py_DECREF(reg);
    Py_DECREF(hook);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
module_exec(PyObject *module)
{
    module_state *st = get_module_state(module);
    if (make_trampolines(st) < 0) {
        return -1;
    }
#define ADD_TYPE(field, spec)                                               \
    st->field = (PyTypeObject *)PyType_FromModuleAndSpec(module, &spec, NULL); \
    if (st->field == NULL || PyModule_AddType(module, st->field) < 0) {     \
        return -1;                                                          \
    }
    ADD_TYPE(microthread_type, microthread_spec);
    ADD_TYPE(pipe_type, pipe_spec);
    ADD_TYPE(waiter_type, waiter_spec);
    ADD_TYPE(scheduler_type, scheduler_spec);
#undef ADD_TYPE
    st->pipe_closed_error = PyErr_NewExceptionWithDoc(
        "micro_thread.PipeClosedError",
        "Raised by MicroPipe.put() on a closed pipe, and by get() on a closed\n"
        "and drained one.", NULL, NULL);
    if (st->pipe_closed_error == NULL
        || PyModule_AddObjectRef(module, "PipeClosedError", st->pipe_closed_error) < 0)
    {
        return -1;
    }
    st->deadlock_error = PyErr_NewExceptionWithDoc(
        "micro_thread.DeadlockError",
        "Raised in the OS thread's root when every micro-thread is blocked\n"
        "and nothing (timer, I/O) can wake any of them.",
        PyExc_RuntimeError, NULL);
    if (st->deadlock_error == NULL
        || PyModule_AddObjectRef(module, "DeadlockError", st->deadlock_error) < 0)
    {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "CDeferred", PyDeferred_CDeferred) < 0
        || PyModule_AddObjectRef(module, "MicroThreadExit", PyExc_MicroThreadExit) < 0)
    {
        return -1;
    }
    return register_at_fork(module);
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    module_state *st = get_module_state(module);
    Py_VISIT(st->microthread_type);
    Py_VISIT(st->pipe_type);
    Py_VISIT(st->waiter_type);
    Py_VISIT(st->scheduler_type);
    Py_VISIT(st->pipe_closed_error);
    Py_VISIT(st->deadlock_error);
    for (int i = 0; i < 4; i++) {
        Py_VISIT(st->trampolines[i]);
    }
    return 0;
}

static int
module_clear(PyObject *module)
{
    module_state *st = get_module_state(module);
    Py_CLEAR(st->microthread_type);
    Py_CLEAR(st->pipe_type);
    Py_CLEAR(st->waiter_type);
    Py_CLEAR(st->scheduler_type);
    Py_CLEAR(st->pipe_closed_error);
    Py_CLEAR(st->deadlock_error);
    for (int i = 0; i < 4; i++) {
        Py_CLEAR(st->trampolines[i]);
    }
    return 0;
}

static void
module_free(void *module)
{
    (void)module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
    {Py_mod_gil, Py_MOD_GIL_USED},
    {0, NULL},
};

PyDoc_STRVAR(module_doc,
"The native kernel of the micro_thread package: per-OS-thread schedulers\n"
"of micro-threads that suspend by deferral.  Use micro_thread instead.");

static struct PyModuleDef micro_thread_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_micro_thread",
    .m_doc = module_doc,
    .m_size = sizeof(module_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__micro_thread(void)
{
    return PyModuleDef_Init(&micro_thread_module);
}
