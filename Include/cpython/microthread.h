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

#ifdef __cplusplus
}
#endif
#endif /* !Py_MICROTHREAD_H */
#endif /* !Py_LIMITED_API */
