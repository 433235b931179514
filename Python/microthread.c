/* Micro-threads: suspending Python frames by deferral, and resuming them.

   See Include/internal/pycore_microthread.h for the overview and PEP.rst for
   the specification.  The scheduler and the Python API live in
   Modules/_micro_threadmodule.c; this file is what the eval loop needs. */

#include "Python.h"
#include "pycore_call.h"          // _PyObject_Call()
#include "pycore_ceval.h"         // _PyEval_EvalFrame()
#include "pycore_code.h"          // _Py_GetBaseOpcode()
#include "pycore_frame.h"         // _PyInterpreterFrame
#include "pycore_microthread.h"
#include "pycore_object.h"        // _PyObject_GC_TRACK()
#include "pycore_opcode_metadata.h"  // _PyOpcode_Caches
#include "pycore_pyerrors.h"      // _PyErr_SetRaisedException()
#include "pycore_pystate.h"       // _PyThreadState_GET()
#include "pycore_tstate.h"        // _PyThreadStateImpl

/* Leave this much C recursion headroom before resuming, so that the eval
   loop's entry never fails once the suspended frames are linked to it. */
#define MT_C_STACK_HEADROOM 4

#define TSTATE_IMPL(tstate) ((_PyThreadStateImpl *)(tstate))


/* ---------------------------------------------------------------------- */
/* Where deferral is possible */

static int
is_call_opcode(int opcode)
{
    return opcode == CALL || opcode == CALL_KW || opcode == CALL_FUNCTION_EX;
}

/* Instructions that run a Python function in the same eval loop and resume
   the caller just after themselves when it returns. */
static int
is_inlined_call_opcode(int opcode)
{
    return is_call_opcode(opcode) || opcode == BEFORE_WITH
           || opcode == WITH_EXCEPT_START;
}

/* The base opcode of the instruction a frame is executing. */
static int
frame_base_opcode(_PyInterpreterFrame *f)
{
    int opcode = f->instr_ptr->op.code;
    if (opcode < MIN_INSTRUMENTED_OPCODE) {
        return _PyOpcode_Deopt[opcode];     /* the common case: a table */
    }
    PyCodeObject *code = _PyFrame_GetCode(f);
    int offset = (int)(f->instr_ptr - _PyCode_CODE(code));
    return _Py_GetBaseOpcode(code, offset);
}

/* The running micro-thread's innermost Python frame, if it could suspend
   at all (NULL if not). */
static _PyInterpreterFrame *
suspendable_frame(PyThreadState *tstate, _PyMicroThreadCore *mt)
{
    if (mt == NULL || mt->base == NULL || mt->closing
        || tstate->interp->eval_frame != NULL)
    {
        return NULL;
    }
    _PyInterpreterFrame *f = tstate->current_frame;
    if (f == NULL || f->owner == FRAME_OWNED_BY_CSTACK
        || !PyCode_Check(f->f_executable))
    {
        return NULL;
    }
    return f;
}

static int chain_can_suspend(_PyMicroThreadCore *mt, _PyInterpreterFrame *f);

static inline int
can_defer(PyThreadState *tstate, PyObject *const *args)
{
    _PyMicroThreadCore *mt = TSTATE_IMPL(tstate)->mt_current;
    _PyInterpreterFrame *f = tstate->current_frame;
    if (mt == NULL || f == NULL) {
        return 0;
    }
    if (f->owner == FRAME_OWNED_BY_MICROTHREAD) {
        /* The common case, checked first: the running micro-thread has
           suspended in this frame before (a heap frame is always its own,
           and a code frame). */
        if (mt->closing || tstate->interp->eval_frame != NULL) {
            return 0;
        }
    }
    else if ((f = suspendable_frame(tstate, mt)) == NULL) {
        return 0;
    }
    /* The deferring function must have been called by the current frame's
       own CALL: then its arguments are in that frame's value stack.  A C
       function in between (map(), sorted(key=...), ...) passes an array of
       its own, and the result would be delivered to the wrong call. */
    PyObject **stackbase = _PyFrame_Stackbase(f);
    if (args < stackbase || args > stackbase + _PyFrame_GetCode(f)->co_stacksize) {
        return 0;
    }
    if (!is_call_opcode(frame_base_opcode(f))) {
        return 0;
    }
    if (f->owner == FRAME_OWNED_BY_MICROTHREAD) {
        return 1;       /* the common case: it has suspended here before */
    }
    return chain_can_suspend(mt, f);
}

int
PyDeferred_CanDefer(PyObject *const *args)
{
    return can_defer(_PyThreadState_GET(), args);
}

int
PyDeferred_CanDeferIter(PyObject *iter)
{
    PyThreadState *tstate = _PyThreadState_GET();
    _PyMicroThreadCore *mt = TSTATE_IMPL(tstate)->mt_current;
    _PyInterpreterFrame *f = suspendable_frame(tstate, mt);
    /* The current frame's FOR_ITER must be iterating over iter itself (not
       over map(f, iter), say, whose C code calls iter's tp_iternext). */
    if (f == NULL || TSTATE_IMPL(tstate)->mt_for_iter != iter
        || TSTATE_IMPL(tstate)->mt_for_iter_frame != f
        || frame_base_opcode(f) != FOR_ITER)
    {
        return 0;
    }
    return chain_can_suspend(mt, f);
}

int
PyDeferred_TakeOutcome(PyObject *self, PyObject **value)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(_PyThreadState_GET());
    *value = NULL;
    if (ts->mt_outcome_for != self || self == NULL) {
        return 0;
    }
    ts->mt_outcome_for = NULL;
    if (ts->mt_outcome_exc != NULL) {
        PyErr_SetRaisedException(ts->mt_outcome_exc);
        ts->mt_outcome_exc = NULL;
        Py_CLEAR(ts->mt_outcome_value);
    }
    else {
        *value = ts->mt_outcome_value;
        ts->mt_outcome_value = NULL;
    }
    return 1;
}

/* Is f the frame of a generator or coroutine (not an async generator)? */
static int
is_generator_frame(_PyInterpreterFrame *f)
{
    if (f->owner != FRAME_OWNED_BY_GENERATOR) {
        return 0;
    }
    PyObject *gen = (PyObject *)_PyFrame_GetGenerator(f);
    return PyGen_CheckExact(gen) || PyCoro_CheckExact(gen);
}

static int
chain_can_suspend(_PyMicroThreadCore *mt, _PyInterpreterFrame *f)
{
    /* Every frame up to the micro-thread's base must be a function frame
       entered by a call (or a with statement's __enter__/__exit__) in the
       frame below it, or a generator or coroutine frame resumed by a
       FOR_ITER or SEND below it, in this same eval loop: no C frame, async
       generator, or frame inlined for a property or __getitem__.
       Heap frames were checked when they were first suspended. */
    for (;;) {
        if (f == mt->base || f->owner == FRAME_OWNED_BY_MICROTHREAD) {
            return 1;
        }
        int gen = is_generator_frame(f);
        if ((f->owner != FRAME_OWNED_BY_THREAD && !gen)
            || !PyFunction_Check(f->f_funcobj))
        {
            return 0;
        }
        _PyInterpreterFrame *caller = f->previous;
        if (caller == NULL || caller->owner == FRAME_OWNED_BY_CSTACK) {
            return 0;
        }
        int op = frame_base_opcode(caller);
        if (gen ? (op != FOR_ITER && op != SEND) : !is_inlined_call_opcode(op)) {
            return 0;
        }
        f = caller;
    }
}

/* The number of frames in a suspended micro-thread's chain: each counts a
   Python recursion level while it runs. */
static int
chain_length(_PyMicroThreadCore *mt)
{
    if (!mt->gen_frames) {
        return mt->nheap;
    }
    int n = 0;
    for (_PyInterpreterFrame *f = mt->top; ; f = f->previous) {
        n++;
        if (f == mt->base) {
            return n;
        }
    }
}

/* The handled-exception items of the generator frames in a suspended
   chain stay linked to each other, innermost first; the outermost one's
   link to the runner's item is made on each resume (that item is on the
   runner's C stack) and cut on each suspension. */
static void
link_generator_exc_items(PyThreadState *tstate, _PyMicroThreadCore *mt,
                         _PyErr_StackItem *runner_item)
{
    _PyErr_StackItem *innermost = NULL, *outermost = NULL;
    for (_PyInterpreterFrame *f = mt->top; ; f = f->previous) {
        if (f->owner == FRAME_OWNED_BY_GENERATOR) {
            _PyErr_StackItem *item = &_PyFrame_GetGenerator(f)->gi_exc_state;
            if (innermost == NULL) {
                innermost = item;
            }
            outermost = item;
        }
        if (f == mt->base) {
            break;
        }
    }
    if (outermost != NULL) {
        outermost->previous_item = runner_item;
        tstate->exc_info = innermost;
    }
}

static void
unlink_generator_exc_items(PyThreadState *tstate, _PyErr_StackItem *runner_item)
{
    _PyErr_StackItem *item = tstate->exc_info;
    if (item == runner_item) {
        return;
    }
    while (item->previous_item != runner_item) {
        item = item->previous_item;
    }
    item->previous_item = NULL;
}

/* PyDeferred_Defer() in a micro-thread: record the deferral and raise the
   CDeferred.  -1 if the CDeferred could not be made. */
static inline int
defer(PyThreadState *tstate, PyDeferred_ArmFunc arm, PyObject *waitobj)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    if (ts->mt_defer_exc == NULL) {
        /* Once per OS thread; every later deferral reuses it. */
        ts->mt_defer_exc = PyObject_CallNoArgs(PyDeferred_CDeferred);
        if (ts->mt_defer_exc == NULL) {
            return -1;
        }
    }
    assert(!_PyErr_Occurred(tstate));
    ts->mt_defer_frame = tstate->current_frame;
    ts->mt_defer_instr = tstate->current_frame->instr_ptr;
    ts->mt_defer_arm = arm;
    Py_XSETREF(ts->mt_defer_waitobj, Py_XNewRef(waitobj));
    /* No __context__ chaining, and the eval loop stops it before any
       traceback is made. */
    PyObject *old = tstate->current_exception;
    tstate->current_exception = Py_NewRef(ts->mt_defer_exc);
    Py_XDECREF(old);
    return 0;
}

PyObject *
PyDeferred_Defer(PyDeferred_ArmFunc arm, PyObject *waitobj)
{
    PyThreadState *tstate = _PyThreadState_GET();
    if (TSTATE_IMPL(tstate)->mt_current == NULL) {
        PyErr_SetString(PyExc_SystemError,
                        "PyDeferred_Defer() called outside a micro-thread");
        return NULL;
    }
    (void)defer(tstate, arm, waitobj);
    return NULL;
}

int
_PyDeferred_TryDefer(PyObject *const *args, PyDeferred_ArmFunc arm,
                     PyObject *waitobj)
{
    PyThreadState *tstate = _PyThreadState_GET();
    if (!can_defer(tstate, args)) {
        return 0;
    }
    return defer(tstate, arm, waitobj) < 0 ? -1 : 1;
}

static void
drop_outcome(_PyThreadStateImpl *ts)
{
    ts->mt_outcome_for = NULL;
    Py_CLEAR(ts->mt_outcome_value);
    Py_CLEAR(ts->mt_outcome_exc);
}

static void
drop_pending(_PyThreadStateImpl *ts)
{
    ts->mt_defer_frame = NULL;
    ts->mt_defer_instr = NULL;
    ts->mt_defer_arm = NULL;
    Py_CLEAR(ts->mt_defer_waitobj);
}


/* ---------------------------------------------------------------------- */
/* Heap frames */

/* A heap frame is nothing but the frame: which micro-thread owns it is
   known wherever one is freed (the running one, or the one being cleared),
   so a header would only cost memory. */
static _PyInterpreterFrame *
alloc_heap_frame(PyCodeObject *code)
{
    return PyMem_Malloc((size_t)code->co_framesize * sizeof(PyObject *));
}

static void
free_heap_frame(_PyMicroThreadCore *mt, _PyInterpreterFrame *frame)
{
    assert(mt->nheap > 0);
    mt->nheap--;
    if (frame == mt->base) {
        mt->base = NULL;
    }
    if (frame == mt->top) {
        mt->top = NULL;
    }
    PyMem_Free(frame);
}

void
_PyMicroThread_FreeFrame(PyThreadState *tstate, _PyInterpreterFrame *frame)
{
    /* Heap frames return or unwind only while their micro-thread runs. */
    free_heap_frame(TSTATE_IMPL(tstate)->mt_current, frame);
}

int
_PyMicroThread_FrameIsSuspended(_PyInterpreterFrame *frame)
{
    /* A heap frame is running when it is in this OS thread's chain of
       frames (the running micro-thread's, or one running nested under a
       C call of another); otherwise it is suspended.  Used only by frame
       object methods, so the walk costs nothing elsewhere. */
    PyThreadState *tstate = _PyThreadState_GET();
    for (_PyInterpreterFrame *f = tstate->current_frame; f != NULL; f = f->previous) {
        if (f == frame) {
            return 0;
        }
    }
    return 1;
}

static int
refuse_suspension(PyThreadState *tstate, const char *why)
{
    _PyErr_Clear(tstate);   /* the CDeferred instance */
    drop_pending(TSTATE_IMPL(tstate));
    _PyErr_Format(tstate, PyExc_SystemError,
                  "a deferring call could not suspend its micro-thread: %s", why);
    return -1;
}

/* Move the frames from frame (innermost) down to the first one already on
   the heap (or the base) to the heap; generator frames stay where they
   are.  *top is set to where frame ends up, *ngen counts the generator
   frames.  On failure nothing was changed. */
static Py_NO_INLINE int
move_frames_to_heap(PyThreadState *tstate, _PyMicroThreadCore *mt,
                    _PyInterpreterFrame *frame, _PyInterpreterFrame **top,
                    int *ngen)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    /* Pass 1: allocate a heap block for each frame still on the data stack
       (generator frames stay where they are: in their generator). */
    enum { SMALL = 16 };
    _PyInterpreterFrame *small[SMALL];
    _PyInterpreterFrame **heap = small;
    int nthread = 0, nwalk = 0;
    for (_PyInterpreterFrame *f = frame;
         f->owner == FRAME_OWNED_BY_THREAD || f->owner == FRAME_OWNED_BY_GENERATOR;
         f = f->previous)
    {
        nwalk++;
        if (f->owner == FRAME_OWNED_BY_THREAD) {
            nthread++;
        }
        else {
            (*ngen)++;
        }
        if (f == mt->base) {
            break;
        }
    }
    if (nthread > SMALL) {
        heap = PyMem_New(_PyInterpreterFrame *, nthread);
        if (heap == NULL) {
            _PyErr_Clear(tstate);
            drop_pending(ts);
            PyErr_NoMemory();
            return -1;
        }
    }
    int i = 0;
    for (_PyInterpreterFrame *f = frame; i < nthread; f = f->previous) {
        if (f->owner != FRAME_OWNED_BY_THREAD) {
            continue;
        }
        heap[i] = alloc_heap_frame(_PyFrame_GetCode(f));
        if (heap[i] == NULL) {
            while (--i >= 0) {
                PyMem_Free(heap[i]);
            }
            if (heap != small) {
                PyMem_Free(heap);
            }
            _PyErr_Clear(tstate);
            drop_pending(ts);
            PyErr_NoMemory();
            return -1;
        }
        i++;
    }

    /* Pass 2: move them, innermost (the top of the data stack) first, and
       link each frame of the walk to where the one below it ends up. */
    _PyInterpreterFrame *f = frame, *above = NULL;
    i = 0;
    for (int k = 0; k < nwalk; k++) {
        _PyInterpreterFrame *prev = f->previous;
        _PyInterpreterFrame *h = f;
        if (f->owner == FRAME_OWNED_BY_THREAD) {
            h = heap[i++];
            assert(f->stacktop >= 0);
            memcpy(h, f, offsetof(_PyInterpreterFrame, localsplus)
                         + (size_t)f->stacktop * sizeof(PyObject *));
            h->owner = FRAME_OWNED_BY_MICROTHREAD;
            if (h->frame_obj != NULL) {
                h->frame_obj->f_frame = h;
            }
            if (f == mt->base) {
                mt->base = h;
            }
#ifdef Py_DEBUG
            /* Make a dangling pointer into the vacated stack obvious. */
            memset(f->localsplus, 0xDD, (size_t)f->stacktop * sizeof(PyObject *));
#endif
            _PyThreadState_PopFrame(tstate, f);
        }
        if (above != NULL) {
            above->previous = h;
        }
        else {
            *top = h;
        }
        above = h;
        f = prev;
    }
    if (heap != small) {
        PyMem_Free(heap);
    }
    mt->nheap += nthread;
    return 0;
}

/* The first part of _PyMicroThread_Suspend(): move the frames from frame
   (innermost) to the micro-thread's base to the heap, innermost first, and
   pop them from the thread's data stack.  Frames already on the heap are
   left where they are, so this is O(frames entered since the last resume).
   On failure, nothing was changed and a real exception replaces the
   CDeferred. */
static int
suspend_frames(PyThreadState *tstate, _PyInterpreterFrame *frame)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    _PyMicroThreadCore *mt = ts->mt_current;
    if (mt == NULL || ts->mt_defer_frame == NULL || mt->base == NULL) {
        return refuse_suspension(tstate, "no micro-thread deferral is pending");
    }
    int op = frame_base_opcode(frame);
    int reexecute = op == FOR_ITER;
    if (ts->mt_defer_frame != frame || ts->mt_defer_instr != frame->instr_ptr
        || !(is_call_opcode(op) || reexecute)
        || (reexecute && (frame->stacktop < 1
                          || frame->localsplus[frame->stacktop - 1]
                             != TSTATE_IMPL(tstate)->mt_for_iter)))
    {
        /* A C function between the call and the deferral swallowed or
           replaced the call's outcome; suspending would resume the wrong
           call. */
        return refuse_suspension(tstate, "it was not called directly by Python code");
    }

    /* Frames entered since the last resume (all of them the first time)
       go to the heap; in the common case of a micro-thread suspending
       again where it suspended before, there are none. */
    _PyInterpreterFrame *top = frame;
    int ngen = 0;
    if (frame->owner != FRAME_OWNED_BY_MICROTHREAD
        && move_frames_to_heap(tstate, mt, frame, &top, &ngen) < 0)
    {
        return -1;
    }

    /* The innermost frame resumes just after its call, like a caller of a
       Python function does; every outer frame already has its return offset
       from the call it made. */
    /* A FOR_ITER is executed again on resume: its iterator's tp_iternext
       then takes the outcome (PyDeferred_TakeOutcome()). */
    top->return_offset = reexecute ? 0 : 1 + _PyOpcode_Caches[op];
    mt->reexecute = reexecute;
    mt->top = top;
    mt->base->previous = NULL;
    mt->state = _PyMicroThread_SUSPENDED;
    ts->mt_defer_frame = NULL;
    ts->mt_defer_instr = NULL;
    mt->instr_version = _Py_atomic_load_uintptr_relaxed(&tstate->eval_breaker)
                        & ~_PY_EVAL_EVENTS_MASK;
    if (ngen > 0) {
        mt->gen_frames = 1;
    }
    else if (mt->gen_frames) {
        /* Generator frames may have left the chain since: see if any is
           still in it. */
        mt->gen_frames = 0;
        for (_PyInterpreterFrame *f = top; f != NULL; f = f->previous) {
            if (f->owner == FRAME_OWNED_BY_GENERATOR) {
                mt->gen_frames = 1;
                break;
            }
        }
    }
    /* Each frame of the chain counted one Python recursion level; it is
       counted again when they are resumed. */
    tstate->py_recursion_remaining += chain_length(mt);
    return 0;
}

/* Called from the eval loop's entry when resuming: link the chain in and
   return the innermost frame, where execution continues.  The base frame
   was linked to the entry frame by the eval loop's prologue. */
_PyInterpreterFrame *
_PyMicroThread_ResumeFrames(PyThreadState *tstate, _PyInterpreterFrame *base)
{
    _PyMicroThreadCore *mt = TSTATE_IMPL(tstate)->mt_current;
    assert(mt != NULL && mt->base == base && mt->top != NULL);
    (void)base;
    tstate->current_frame = mt->top;
    /* The innermost frame is counted by the caller's _Py_EnterRecursivePy. */
    tstate->py_recursion_remaining -= chain_length(mt) - 1;
    return mt->top;
}


/* ---------------------------------------------------------------------- */
/* The runner */

void
_PyMicroThread_InitCore(_PyMicroThreadCore *mt,
                        PyObject *func, PyObject *args, PyObject *kwargs,
                        PyObject *context)
{
    memset(mt, 0, sizeof(*mt));
    mt->state = _PyMicroThread_CREATED;
    mt->func = Py_NewRef(func);
    mt->args = Py_NewRef(args);
    /* Nobody else has args (see the header): until the first run its items
       are visited through the micro-thread, and the collector has one
       object less to track for each micro-thread waiting to start. */
    if (_PyObject_GC_IS_TRACKED(args)) {
        _PyObject_GC_UNTRACK(args);
    }
    mt->kwargs = Py_XNewRef(kwargs);
    mt->context = Py_XNewRef(context);
}

/* Make sure every suspended frame's code is instrumented for the tools
   enabled since it suspended (the frames resume without a RESUME). */
static int
reinstrument(PyThreadState *tstate, _PyMicroThreadCore *mt)
{
    uintptr_t version = _Py_atomic_load_uintptr_relaxed(&tstate->eval_breaker)
                        & ~_PY_EVAL_EVENTS_MASK;
    if (version == mt->instr_version) {
        return 0;
    }
    /* Up to the base only: once linked in, the base frame's previous is
       the eval loop's entry frame and the runner's frames below it. */
    for (_PyInterpreterFrame *f = mt->top; ; f = f->previous) {
        if (_Py_Instrument(_PyFrame_GetCode(f), tstate->interp) < 0) {
            return -1;
        }
        if (f == mt->base) {
            break;
        }
    }
    mt->instr_version = version;
    return 0;
}

/* The first run: func(*args, **kwargs), in a frame of its own when func
   is a Python function, so that the micro-thread can suspend. */
static PyObject *
first_run(PyThreadState *tstate, _PyMicroThreadCore *mt)
{
    PyObject *func = mt->func, *args = mt->args, *kwargs = mt->kwargs;
    mt->func = mt->args = mt->kwargs = NULL;    /* base, top, instr_version */
    if (!_PyObject_GC_IS_TRACKED(args) && PyTuple_GET_SIZE(args) > 0) {
        _PyObject_GC_TRACK(args);       /* the callee may keep it */
    }
    if (PyMethod_Check(func) && PyFunction_Check(PyMethod_GET_FUNCTION(func))) {
        /* A bound method: call its function with self prepended. */
        Py_ssize_t n = PyTuple_GET_SIZE(args);
        PyObject *newargs = PyTuple_New(n + 1);
        if (newargs == NULL) {
            Py_DECREF(func);
            Py_DECREF(args);
            Py_XDECREF(kwargs);
            return NULL;
        }
        PyTuple_SET_ITEM(newargs, 0, Py_NewRef(PyMethod_GET_SELF(func)));
        for (Py_ssize_t i = 0; i < n; i++) {
            PyTuple_SET_ITEM(newargs, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
        }
        Py_SETREF(func, Py_NewRef(PyMethod_GET_FUNCTION(func)));
        Py_SETREF(args, newargs);
    }
    if (PyFunction_Check(func)
        && ((PyFunctionObject *)func)->vectorcall == _PyFunction_Vectorcall
        && tstate->interp->eval_frame == NULL)
    {
        _PyInterpreterFrame *frame = _PyEval_PushFrameFromTuple(
            tstate, (PyFunctionObject *)func, args, kwargs);
        if (frame == NULL) {
            return NULL;
        }
        mt->base = frame;
        return _PyEval_EvalFrame(tstate, frame, 0);
    }
    /* Any other callable runs through C: this micro-thread cannot defer
       (its blocking calls block the way they do outside micro-threads). */
    PyObject *res = PyObject_Call(func, args, kwargs);
    Py_DECREF(func);
    Py_DECREF(args);
    Py_XDECREF(kwargs);
    return res;
}

/* Swap the micro-thread's own interpreter state in (the caller's is in the
   runner) ... */
static void
swap_in(PyThreadState *tstate, _PyMicroThreadRunner *runner,
        _PyMicroThreadCore *mt)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    mt->state = _PyMicroThread_RUNNING;
    ts->mt_current = mt;
    runner->mt = mt;
    runner->exc_state.exc_value = mt->exc_value;
    runner->exc_state.previous_item = NULL;
    mt->exc_value = NULL;
    tstate->exc_info = &runner->exc_state;
    tstate->context = mt->context;
    mt->context = NULL;
    tstate->context_ver++;
}

/* ... and out, giving the OS thread back to the runner's caller. */
static void
swap_out(PyThreadState *tstate, _PyMicroThreadRunner *runner,
         _PyMicroThreadCore *mt)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    if (mt->state == _PyMicroThread_SUSPENDED) {
        /* The innermost suspended generator's item may be on top. */
        if (mt->gen_frames) {
            unlink_generator_exc_items(tstate, &runner->exc_state);
        }
    }
    else {
        assert(tstate->exc_info == &runner->exc_state);
        if (mt->state == _PyMicroThread_FINISHED) {
            Py_CLEAR(runner->exc_state.exc_value);
        }
    }
    mt->exc_value = runner->exc_state.exc_value;
    runner->exc_state.exc_value = NULL;
    tstate->exc_info = runner->saved_exc_info;
    mt->context = tstate->context;
    tstate->context = runner->saved_context;
    tstate->context_ver++;
    ts->mt_current = runner->prev_current;
}

/* Deliver the outcome that resumes a suspended micro-thread that has just
   been swapped in: value or exc (a new reference, stolen).  Returns the
   eval loop's throwflag for resuming it. */
static inline int
deliver(PyThreadState *tstate, _PyMicroThreadRunner *runner,
        _PyMicroThreadCore *mt, PyObject *value, PyObject *exc)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    if (mt->gen_frames) {
        link_generator_exc_items(tstate, mt, &runner->exc_state);
    }
    if (exc == NULL && reinstrument(tstate, mt) < 0) {
        Py_DECREF(value);
        value = NULL;
        exc = _PyErr_GetRaisedException(tstate);
    }
    if (mt->reexecute) {
        /* The instruction that deferred runs again and takes this. */
        drop_outcome(ts);
        ts->mt_outcome_exc = exc;
        ts->mt_outcome_value = exc == NULL ? value : NULL;
        if (exc != NULL) {
            Py_XDECREF(value);
        }
        ts->mt_outcome_for = mt->top->localsplus[mt->top->stacktop - 1];
        return _PY_EVAL_MT_RESUME;
    }
    if (exc != NULL) {
        Py_XDECREF(value);
        _PyErr_SetRaisedException(tstate, exc);
        _PyErr_ChainStackItem();
        return _PY_EVAL_MT_THROW;
    }
    _PyFrame_StackPush(mt->top, value);
    return _PY_EVAL_MT_RESUME;
}

/* Switch from prev, which has just suspended, to the micro-thread that the
   runner's hand-off function gives, if any (see _PyMicroThreadHandOff). */
static int
hand_off(PyThreadState *tstate, _PyMicroThreadRunner *runner,
         _PyMicroThreadCore *prev, _PyInterpreterFrame *entry)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    PyDeferred_ArmFunc arm = ts->mt_defer_arm;
    PyObject *waitobj = ts->mt_defer_waitobj;
    PyObject *cdeferred = tstate->current_exception;
    assert(cdeferred == ts->mt_defer_exc && arm != NULL);

    /* Leave the OS thread as the runner would find it on return: whatever
       the hand-off function runs (a failure to arm, a finalizer) sees
       prev fully suspended. */
    tstate->current_exception = NULL;
    ts->mt_defer_arm = NULL;
    ts->mt_defer_waitobj = NULL;
    tstate->current_frame = entry->previous;
    swap_out(tstate, runner, prev);
    if (ts->mt_outcome_for != NULL) {
        drop_outcome(ts);           /* not taken: nothing may find it later */
    }
    PyObject *value = NULL, *exc = NULL;
    _PyMicroThreadCore *next = runner->handoff(runner->handoff_arg, prev, arm,
                                               waitobj, &value, &exc);
    if (next == NULL) {
        /* Back to how it was, for the eval loop to return to the runner
           (whose swap-out finds the generator items, if any, unlinked). */
        swap_in(tstate, runner, prev);
        prev->state = _PyMicroThread_SUSPENDED;
        tstate->current_exception = cdeferred;
        ts->mt_defer_arm = arm;
        ts->mt_defer_waitobj = waitobj;
        return 0;
    }
    assert(next->state == _PyMicroThread_SUSPENDED);
    Py_DECREF(cdeferred);           /* ts keeps it alive */
    Py_XDECREF(waitobj);

    /* Continue next where it stopped, as the eval loop's entry would
       (the outcome is delivered, and its code re-instrumented if tools
       were enabled meanwhile, before its chain is linked in). */
    swap_in(tstate, runner, next);
    int flag = deliver(tstate, runner, next, value, exc);
    next->base->previous = entry;
    tstate->current_frame = next->top;
    tstate->py_recursion_remaining -= chain_length(next) - 1;
    return flag;
}

int
_PyMicroThread_Suspend(PyThreadState *tstate, _PyInterpreterFrame *frame,
                       _PyInterpreterFrame *entry)
{
    if (suspend_frames(tstate, frame) < 0) {
        return -1;
    }
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    _PyMicroThreadRunner *runner = ts->mt_runner;
    if (runner == NULL || runner->handoff == NULL || ts->mt_defer_arm == NULL) {
        return 0;
    }
    assert(runner->mt == ts->mt_current);
    return hand_off(tstate, runner, runner->mt, entry);
}

PyObject *
_PyMicroThread_Run(PyThreadState *tstate, _PyMicroThreadCore *mt,
                   PyObject *value, PyObject *exc, _PyMicroThreadRunner *runner)
{
    _PyThreadStateImpl *ts = TSTATE_IMPL(tstate);
    runner->mt = mt;
    runner->suspended = 0;
    runner->arm = NULL;
    runner->waitobj = NULL;
    if (mt->state != _PyMicroThread_CREATED && mt->state != _PyMicroThread_SUSPENDED) {
        PyErr_SetString(PyExc_RuntimeError,
                        mt->state == _PyMicroThread_RUNNING
                        ? "micro-thread is already running"
                        : "micro-thread has finished");
        return NULL;
    }
    if (tstate->c_recursion_remaining <= MT_C_STACK_HEADROOM) {
        PyErr_SetString(PyExc_RecursionError,
                        "maximum C recursion depth exceeded while switching micro-threads");
        return NULL;
    }

    runner->saved_exc_info = tstate->exc_info;
    runner->saved_context = tstate->context;
    runner->prev_current = ts->mt_current;
    runner->prev_runner = ts->mt_runner;
    ts->mt_runner = runner;
    int first = mt->state == _PyMicroThread_CREATED;
    swap_in(tstate, runner, mt);

    PyObject *res;
    if (first) {
        res = first_run(tstate, mt);
    }
    else {
        int flag = deliver(tstate, runner, mt, exc == NULL ? Py_NewRef(value) : NULL,
                           Py_XNewRef(exc));
        res = _PyEval_EvalFrameDefault(tstate, mt->base, flag);
    }
    /* A hand-off may have switched to others since. */
    mt = runner->mt;

    if (res == NULL && mt->state == _PyMicroThread_SUSPENDED
        && tstate->current_exception == ts->mt_defer_exc)
    {
        Py_DECREF(_PyErr_GetRaisedException(tstate));
        runner->suspended = 1;
        runner->arm = ts->mt_defer_arm;
        runner->waitobj = ts->mt_defer_waitobj;
        ts->mt_defer_arm = NULL;
        ts->mt_defer_waitobj = NULL;
        if (ts->mt_outcome_for != NULL) {
            drop_outcome(ts);       /* not taken: nothing may find it later */
        }
    }
    else {
        mt->state = _PyMicroThread_FINISHED;
        /* Every heap frame was freed as it returned or unwound; a base frame
           that never left the data stack was popped like any other. */
        assert(mt->nheap == 0);
        mt->base = mt->top = NULL;
        mt->instr_version = 0;
        mt->gen_frames = 0;
        drop_pending(ts);
        drop_outcome(ts);
        if (res == NULL && ts->mt_defer_exc != NULL
            && tstate->current_exception == ts->mt_defer_exc)
        {
            _PyErr_Clear(tstate);
            PyErr_SetString(PyExc_SystemError,
                            "CDeferred escaped from a micro-thread");
        }
    }
    swap_out(tstate, runner, mt);
    ts->mt_runner = runner->prev_runner;
    return res;
}

_PyMicroThreadCore *
_PyMicroThread_Current(PyThreadState *tstate)
{
    return TSTATE_IMPL(tstate)->mt_current;
}


/* ---------------------------------------------------------------------- */
/* Garbage collection and teardown */

int
_PyMicroThread_Traverse(_PyMicroThreadCore *mt, visitproc visit, void *arg)
{
    if (mt->state == _PyMicroThread_CREATED) {
        Py_VISIT(mt->func);
        /* Not tracked: its items are the micro-thread's references. */
        for (Py_ssize_t i = PyTuple_GET_SIZE(mt->args); --i >= 0; ) {
            Py_VISIT(PyTuple_GET_ITEM(mt->args, i));
        }
        Py_VISIT(mt->kwargs);
    }
    Py_VISIT(mt->context);
    Py_VISIT(mt->exc_value);
    /* A running micro-thread's frames are on the C stack, roots like any
       running code's; only suspended ones belong to it. */
    if (mt->state == _PyMicroThread_SUSPENDED) {
        for (_PyInterpreterFrame *f = mt->top; f != NULL; f = f->previous) {
            /* A generator's frame is visited by the generator, which the
               frame below it holds (the iterator of its FOR_ITER, the
               receiver of its SEND). */
            if (f->owner == FRAME_OWNED_BY_GENERATOR) {
                continue;
            }
            int err = _PyFrame_Traverse(f, visit, arg);
            if (err) {
                return err;
            }
        }
    }
    return 0;
}

void
_PyMicroThread_ClearFrames(_PyMicroThreadCore *mt)
{
    if (mt->state != _PyMicroThread_SUSPENDED) {
        return;
    }
    PyThreadState *tstate = _PyThreadState_GET();
    /* Innermost first, so a frame object that outlives its frame can still
       find the frame it was called from (its f_back). */
    while (mt->top != NULL) {
        _PyInterpreterFrame *f = mt->top;
        mt->top = f->previous;
        tstate->c_recursion_remaining--;
        if (f->owner == FRAME_OWNED_BY_GENERATOR) {
            /* Cleared as its generator would be when it finishes. */
            PyGenObject *gen = _PyFrame_GetGenerator(f);
            gen->gi_frame_state = FRAME_CLEARED;
            gen->gi_exc_state.previous_item = NULL;
            f->previous = NULL;
            _PyFrame_ClearExceptCode(f);
            _PyErr_ClearExcState(&gen->gi_exc_state);
            tstate->c_recursion_remaining++;
            continue;
        }
        assert(f->owner == FRAME_OWNED_BY_MICROTHREAD);
        _PyFrame_ClearExceptCode(f);
        Py_DECREF(f->f_executable);
        tstate->c_recursion_remaining++;
        free_heap_frame(mt, f);
    }
    assert(mt->nheap == 0);
    mt->base = NULL;
    mt->instr_version = 0;
    mt->gen_frames = 0;
    mt->state = _PyMicroThread_FINISHED;
}

void
_PyMicroThread_ClearCore(_PyMicroThreadCore *mt)
{
    _PyMicroThread_ClearFrames(mt);
    if (mt->state == _PyMicroThread_CREATED) {
        Py_CLEAR(mt->func);
        Py_CLEAR(mt->args);
        Py_CLEAR(mt->kwargs);
        mt->state = _PyMicroThread_FINISHED;    /* never to run */
    }
    Py_CLEAR(mt->context);
    Py_CLEAR(mt->exc_value);
}
