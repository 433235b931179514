/* Micro-threads: the C API of deferral */

#ifndef Py_LIMITED_API
#ifndef Py_MICROTHREAD_H
#define Py_MICROTHREAD_H
#ifdef __cplusplus
extern "C" {
#endif

/* Deferral: how a C function suspends the running micro-thread instead of
   blocking its OS thread.  See PEP.rst, "C API".

   A deferring function first tries its operation without blocking.  If it
   would block, and PyDeferred_CanDefer(args) says the running code can be
   suspended here, it returns PyDeferred_Defer(arm, waitobj): the running
   micro-thread is suspended (its Python frames are kept, no handler runs)
   and, once it has been, arm(waitobj, microthread) is called to arrange for
   it to be woken.  Whatever wakes it supplies the value that the deferring
   call returns (or the exception it raises) when the micro-thread resumes.
   If PyDeferred_CanDefer() returns 0 (no running micro-thread, or a C frame
   between the call and the micro-thread's start, such as sorted(key=...)),
   the function must complete without deferring, for example by blocking. */

/* The exception type with which a C function defers (a NotImplementedError
   subclass); Python code never sees it. */
PyAPI_DATA(PyObject *) PyDeferred_CDeferred;

/* Raised at a micro-thread's suspension point to end it (a BaseException
   subclass, like GeneratorExit). */
PyAPI_DATA(PyObject *) PyExc_MicroThreadExit;

/* Called once the micro-thread has suspended.  Return 0, or -1 with an
   exception set, which is then raised in the micro-thread instead. */
typedef int (*PyDeferred_ArmFunc)(PyObject *waitobj, PyObject *microthread);

/* Return 1 if the running code can be suspended by a deferral from the
   function that received args (its METH_FASTCALL argument array), 0 if not.
   Never raises. */
PyAPI_FUNC(int) PyDeferred_CanDefer(PyObject *const *args);

/* The same for a tp_iternext function: 1 if the running code is a for
   loop over iter itself that can be suspended. */
PyAPI_FUNC(int) PyDeferred_CanDeferIter(PyObject *iter);

/* Suspend the running micro-thread; only call it right after
   PyDeferred_CanDefer() or PyDeferred_CanDeferIter() returned 1, and return
   its result (NULL). */
PyAPI_FUNC(PyObject *) PyDeferred_Defer(PyDeferred_ArmFunc arm, PyObject *waitobj);

/* A for loop that deferred resumes by calling self's tp_iternext again,
   which must first take the outcome it was woken with: returns 1 with
   *value set (a new reference), or with *value NULL and the exception set;
   0 if there is none (an ordinary call). */
PyAPI_FUNC(int) PyDeferred_TakeOutcome(PyObject *self, PyObject **value);


/* Waiting for I/O and time: the notifier.  See PEP.rst, "C API".

   A deferring I/O function first tries its operation without blocking
   (O_NONBLOCK, MSG_DONTWAIT, or poll() with a zero timeout for a file
   descriptor in blocking mode).  If it would block, it returns
   PyDeferred_WaitFd(args, fd, events, deadline, complete, state): once fd
   is ready for events (or deadline has passed), complete(state, status)
   runs and what it returns is the result of the deferring call:

   - in a micro-thread that can be suspended there, the micro-thread is
     suspended, the OS thread's notifier (epoll on Linux) watches fd, and
     complete() runs in the scheduler when fd is ready; its result is
     delivered at the call site when the micro-thread resumes;
   - otherwise (the OS thread's root, or a micro-thread with a C frame in
     between: "pinned", counted and reported), the calling C function
     drives the OS thread's scheduler until fd is ready, runs complete()
     and returns its result directly.

   complete() returns a new reference, or NULL with an exception set, or
   NULL with *no* exception set to say "would block after all" (another
   reader took the data): the wait then starts again.  status is
   PyDeferred_READY, or PyDeferred_TIMED_OUT when deadline passed first.
   The state object is kept alive until complete() has run for the last
   time.

   fd may be -1 with events 0 for a wait on the deadline alone (sleep).
   deadline is a time of the monotonic clock (PyTime_MonotonicRaw()), or
   PyDeferred_NO_DEADLINE.  The enclosing micro_thread.timeout() scopes and
   kill()/throw() end the wait with their exception, without calling
   complete(). */

#define PyDeferred_READABLE 1
#define PyDeferred_WRITABLE 2

#define PyDeferred_READY 0
#define PyDeferred_TIMED_OUT 1

#define PyDeferred_NO_DEADLINE PyTime_MAX

typedef PyObject *(*PyDeferred_CompleteFunc)(PyObject *state, int status);

PyAPI_FUNC(PyObject *) PyDeferred_WaitFd(
    PyObject *const *args, int fd, int events, PyTime_t deadline,
    PyDeferred_CompleteFunc complete, PyObject *state);

/* Tell the notifier that fd is about to be closed: micro-threads of this OS
   thread waiting on it are woken with OSError(EBADF).  Cheap when nothing
   waits on an fd.  os.close(), socket.close() and FileIO.close() call it. */
PyAPI_FUNC(void) PyDeferred_ForgetFd(int fd);

/* Run work(arg) on a worker OS thread without the GIL (for a blocking call
   that the notifier cannot wait for, such as reading a regular file), then
   complete(state, PyDeferred_READY) in the scheduler as above; the
   micro-thread defers or, where it cannot, the caller drives the scheduler
   meanwhile.  arg must stay valid until complete() has run: keep it in
   state. */
typedef void (*PyDeferred_WorkFunc)(void *arg);

PyAPI_FUNC(PyObject *) PyDeferred_Offload(
    PyObject *const *args, PyDeferred_WorkFunc work, void *arg,
    PyDeferred_CompleteFunc complete, PyObject *state);

#ifdef __cplusplus
}
#endif
#endif /* !Py_MICROTHREAD_H */
#endif /* !Py_LIMITED_API */
