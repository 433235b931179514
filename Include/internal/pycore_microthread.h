#ifndef Py_INTERNAL_MICROTHREAD_H
#define Py_INTERNAL_MICROTHREAD_H
#ifdef __cplusplus
extern "C" {
#endif

#ifndef Py_BUILD_CORE
#  error "this header requires Py_BUILD_CORE define"
#endif

#include "pycore_frame.h"         // _PyInterpreterFrame
#include "pycore_tstate.h"        // _PyThreadStateImpl

/* Micro-threads: the interpreter's side (Python/microthread.c).

   A micro-thread runs Python frames like any other code.  When a deferring
   C function cannot complete now, it calls PyDeferred_Defer(), which sets the
   thread's preallocated CDeferred instance as the current exception.  The eval
   loop recognises that instance at its "error:" label, before any traceback
   or handler, and instead of unwinding moves the micro-thread's frames to the
   heap (each frame at most once) and returns NULL to the runner -- or, if
   the runner's scheduler has another micro-thread ready, continues that one
   in place (_PyMicroThreadHandOff).  Resuming continues the eval loop on the
   innermost heap frame, just after the CALL that deferred, with the call's
   result pushed on its stack.

   _PyMicroThreadCore is the part of a micro-thread that the interpreter core
   knows about; the _micro_thread module embeds it in its MicroThread object
   and adds the scheduling. */

/* Magic throwflag values for _PyEval_EvalFrameDefault(): resume the
   micro-thread whose base frame is passed, with a value pushed on the
   innermost frame's stack, or with the current exception raised at its
   suspension point. */
#define _PY_EVAL_MT_RESUME 0x4D540001
#define _PY_EVAL_MT_THROW  0x4D540002

typedef enum {
    _PyMicroThread_CREATED = 0,    /* never run */
    _PyMicroThread_RUNNING = 1,    /* its frames are on the C stack */
    _PyMicroThread_SUSPENDED = 2,  /* its frames are on the heap */
    _PyMicroThread_FINISHED = 3,   /* returned, raised, or killed */
} _PyMicroThread_State;

typedef struct _PyMicroThreadCore {
    unsigned char state;            /* _PyMicroThread_State */
    unsigned char closing;          /* being closed: deferral refused */
    unsigned char reexecute;        /* resumes by executing FOR_ITER again */
    unsigned char gen_frames;       /* its chain may hold generator frames */
    int nheap;                      /* number of live heap frames */

    union {
        /* CREATED: the first run calls func(*args, **kwargs). */
        struct {
            PyObject *func;
            PyObject *args;         /* tuple, not tracked by the GC */
            PyObject *kwargs;       /* dict or NULL */
        };
        /* Once started (all NULL when FINISHED).  base is the outermost
           Python frame (NULL if func is not a Python function: such a
           micro-thread can never defer).  While suspended, top is the
           innermost frame and every frame from top to base is a heap frame
           (FRAME_OWNED_BY_MICROTHREAD: a block of PyMem memory holding
           just the frame) or a generator's or coroutine's frame, resumed
           inline by a FOR_ITER or SEND of the frame below it. */
        struct {
            _PyInterpreterFrame *base;
            _PyInterpreterFrame *top;
            uintptr_t instr_version;  /* instrumentation version at suspension */
        };
    };

    /* Per-micro-thread interpreter state, swapped in while it runs.  What
       is needed only while it runs or defers (the runner's state, the
       pending deferral) lives in the thread state instead, so that an idle
       micro-thread is small. */
    PyObject *exc_value;            /* handled exception (sys.exception()) */
    PyObject *context;              /* contextvars.Context, or NULL for a
                                       new empty one on first use */
} _PyMicroThreadCore;

/* A scheduler's offer to switch to another micro-thread in place.

   When the running micro-thread suspends, the eval loop calls the runner's
   hand-off function (if any) before returning to the runner, with the
   micro-thread that has just suspended and what it waits for (the
   arguments it gave to PyDeferred_Defer()).  The OS thread then looks as
   the runner would find it on return (the micro-thread is swapped out,
   the CDeferred is not set).  If another micro-thread can run
   next, the function takes it off its queue, arms the wait (it calls
   arm(waitobj, microthread), dealing with a failure itself), gives up the
   runner's reference to the suspended micro-thread, keeps one to the next
   one and returns the next one's core, with the outcome to deliver at its
   suspension point in *value or *exc (a new reference, raised there).  The
   next one must be SUSPENDED (started, not finished).  The eval loop then
   continues it where it stopped without leaving: a switch costs no return
   to the runner and no re-entry of the eval loop.  Otherwise the function
   returns NULL and must not have changed anything. */
typedef _PyMicroThreadCore *(*_PyMicroThreadHandOff)(
    void *arg, _PyMicroThreadCore *suspended, PyDeferred_ArmFunc arm,
    PyObject *waitobj, PyObject **value, PyObject **exc);

/* A runner: the C caller of _PyMicroThread_Run(), and what the run needs
   on its C stack.  The caller sets the hand-off function (NULL for none)
   and its argument; the rest is filled in by the run. */
typedef struct _PyMicroThreadRunner {
    _PyMicroThreadHandOff handoff;
    void *handoff_arg;

    /* How the run ended: the micro-thread that finished or suspended (the
       one run, or the last one handed off to), and, if it suspended, what
       it waits for (arm and a new reference to waitobj) for the caller to
       arm. */
    _PyMicroThreadCore *mt;
    int suspended;
    PyDeferred_ArmFunc arm;
    PyObject *waitobj;

    /* Private to the run.  The running micro-thread's handled-exception
       chain ends at exc_state: sys.exception() in a micro-thread never sees
       the exception handled by whoever runs it.  The item is needed only
       while one runs, so it lives here rather than in every micro-thread.
       The rest is the caller's state, swapped back in when the run ends. */
    _PyErr_StackItem exc_state;
    _PyErr_StackItem *saved_exc_info;
    PyObject *saved_context;
    _PyMicroThreadCore *prev_current;
    struct _PyMicroThreadRunner *prev_runner;
} _PyMicroThreadRunner;

/* Lifecycle of a core (the embedding object calls these).  InitCore takes
   new references; args must be a tuple that nobody else references (it is
   untracked by the collector until the first run). */
extern void _PyMicroThread_InitCore(_PyMicroThreadCore *mt,
                                    PyObject *func, PyObject *args,
                                    PyObject *kwargs, PyObject *context);
extern int _PyMicroThread_Traverse(_PyMicroThreadCore *mt, visitproc visit, void *arg);
/* Drop the frames of a suspended micro-thread without running any code. */
extern void _PyMicroThread_ClearFrames(_PyMicroThreadCore *mt);
extern void _PyMicroThread_ClearCore(_PyMicroThreadCore *mt);

/* Run a micro-thread that is CREATED, or resume a SUSPENDED one with value
   (a new reference is taken) or, if exc is not NULL, with exc raised at its
   suspension point.  It must have been made in this OS thread (the caller
   checks).  runner->mt is then the micro-thread whose run ended (another
   one if it was handed off to).  Returns its result when it finishes; NULL
   with an exception set when it finishes with one; NULL with no exception
   and runner->suspended set when it suspended, and then runner->arm and
   runner->waitobj tell what it waits for. */
PyAPI_FUNC(PyObject *) _PyMicroThread_Run(PyThreadState *tstate,
                                          _PyMicroThreadCore *mt,
                                          PyObject *value, PyObject *exc,
                                          _PyMicroThreadRunner *runner);

/* PyDeferred_CanDefer(args) and, if it says yes, PyDeferred_Defer(arm,
   waitobj), in one call: 1 if it deferred (return NULL then), 0 if it
   cannot defer here, -1 with an exception set on failure. */
PyAPI_FUNC(int) _PyDeferred_TryDefer(PyObject *const *args,
                                     PyDeferred_ArmFunc arm, PyObject *waitobj);

/* The running micro-thread of this OS thread, or NULL. */
PyAPI_FUNC(_PyMicroThreadCore *) _PyMicroThread_Current(PyThreadState *tstate);

/* For the eval loop (Python/ceval.c). */

/* Is this eval-loop entry the resumption of the running micro-thread? */
static inline int
_PyMicroThread_IsResuming(PyThreadState *tstate, _PyInterpreterFrame *frame,
                          int throwflag)
{
    _PyMicroThreadCore *mt = ((_PyThreadStateImpl *)tstate)->mt_current;
    return (throwflag == _PY_EVAL_MT_RESUME || throwflag == _PY_EVAL_MT_THROW)
           && mt != NULL && mt->base == frame;
}

/* Push a frame for func(*args, **kwargs); steals all three references. */
extern _PyInterpreterFrame *_PyEval_PushFrameFromTuple(
    PyThreadState *tstate, PyFunctionObject *func, PyObject *args, PyObject *kwargs);

/* Called at the eval loop's "error:" label when the current exception is
   the thread's CDeferred instance: suspend the running micro-thread (its
   frames from frame, the innermost, down to its base go to the heap) and
   return 0 for the eval loop to return NULL to the runner, or, if the
   runner's hand-off function gives a micro-thread to run next, switch to it
   and return _PY_EVAL_MT_RESUME or _PY_EVAL_MT_THROW for the eval loop to
   continue it at tstate->current_frame (its base frame is linked to entry).
   -1 if the suspension was refused: a real exception has replaced the
   CDeferred, raised in frame. */
extern int _PyMicroThread_Suspend(PyThreadState *tstate,
                                  _PyInterpreterFrame *frame,
                                  _PyInterpreterFrame *entry);
/* Called from the eval loop's entry when resuming: link the chain in and
   return the innermost frame, where execution continues. */
extern _PyInterpreterFrame *_PyMicroThread_ResumeFrames(PyThreadState *tstate,
                                                        _PyInterpreterFrame *base);
/* Free a heap frame of the running micro-thread once it has been cleared. */
extern void _PyMicroThread_FreeFrame(PyThreadState *tstate,
                                     _PyInterpreterFrame *frame);

/* For frame objects (Objects/frameobject.c). */
extern int _PyMicroThread_FrameIsSuspended(_PyInterpreterFrame *frame);

/* Type and exception initialisation (Python/pylifecycle.c). */
extern PyStatus _PyMicroThread_InitTypes(PyInterpreterState *interp);
extern void _PyMicroThread_FiniTypes(PyInterpreterState *interp);

/* Deferring fd I/O and sleep (Python/microthread_io.c), for os.read_d(),
   os.write_d(), time.sleep_d() and the io objects' *_d methods.  args is
   the caller's METH_FASTCALL argument array (see PyDeferred_CanDefer()).
   ReadFd returns bytes (b"" at end of file), WriteFd the number of bytes
   written. */
extern PyObject *_PyDeferred_ReadFd(PyObject *const *args, int fd, Py_ssize_t length);
extern PyObject *_PyDeferred_WriteFd(PyObject *const *args, int fd, Py_buffer *data);
extern PyObject *_PyDeferred_Sleep(PyObject *const *args, PyTime_t delay);

/* Helpers of the above, for the io module's deferring methods: is fd a
   regular file or block device (1/0/-1); is it ready for reading or
   writing now (1/0/-1, EBADF also for an fd open the other way); how much
   may be written once it polls writable without blocking. */
extern int _PyDeferred_FdIsDisk(int fd);
extern int _PyDeferred_FdReady(int fd, int writing);
extern Py_ssize_t _PyDeferred_FdWriteLimit(int fd, Py_ssize_t len);

#ifdef __cplusplus
}
#endif
#endif /* !Py_INTERNAL_MICROTHREAD_H */
