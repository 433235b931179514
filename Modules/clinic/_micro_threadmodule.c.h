/*[clinic input]
preserve
[clinic start generated code]*/

#include "pycore_modsupport.h"    // _PyArg_CheckPositional()

PyDoc_STRVAR(_micro_thread_MicroThread_stack__doc__,
"stack($self, /)\n"
"--\n"
"\n"
"Return the micro-thread\'s Python frames, outermost first.");

#define _MICRO_THREAD_MICROTHREAD_STACK_METHODDEF    \
    {"stack", (PyCFunction)_micro_thread_MicroThread_stack, METH_NOARGS, _micro_thread_MicroThread_stack__doc__},

static PyObject *
_micro_thread_MicroThread_stack_impl(MicroThreadObject *self);

static PyObject *
_micro_thread_MicroThread_stack(MicroThreadObject *self, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread_MicroThread_stack_impl(self);
}

PyDoc_STRVAR(_micro_thread_MicroThread_done__doc__,
"done($self, /)\n"
"--\n"
"\n"
"Return True if the micro-thread has finished.");

#define _MICRO_THREAD_MICROTHREAD_DONE_METHODDEF    \
    {"done", (PyCFunction)_micro_thread_MicroThread_done, METH_NOARGS, _micro_thread_MicroThread_done__doc__},

static PyObject *
_micro_thread_MicroThread_done_impl(MicroThreadObject *self);

static PyObject *
_micro_thread_MicroThread_done(MicroThreadObject *self, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread_MicroThread_done_impl(self);
}

PyDoc_STRVAR(_micro_thread_MicroThread_throw__doc__,
"throw($self, exc, /)\n"
"--\n"
"\n"
"Raise exc at the micro-thread\'s suspension point.\n"
"\n"
"exc is an exception class or instance.");

#define _MICRO_THREAD_MICROTHREAD_THROW_METHODDEF    \
    {"throw", (PyCFunction)_micro_thread_MicroThread_throw, METH_O, _micro_thread_MicroThread_throw__doc__},

PyDoc_STRVAR(_micro_thread_MicroThread_kill__doc__,
"kill($self, /)\n"
"--\n"
"\n"
"Raise MicroThreadExit at the micro-thread\'s suspension point.\n"
"\n"
"Its finally blocks run.  A micro-thread that has not run yet never\n"
"runs; killing a finished one does nothing.");

#define _MICRO_THREAD_MICROTHREAD_KILL_METHODDEF    \
    {"kill", (PyCFunction)_micro_thread_MicroThread_kill, METH_NOARGS, _micro_thread_MicroThread_kill__doc__},

static PyObject *
_micro_thread_MicroThread_kill_impl(MicroThreadObject *self);

static PyObject *
_micro_thread_MicroThread_kill(MicroThreadObject *self, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread_MicroThread_kill_impl(self);
}

PyDoc_STRVAR(_micro_thread_MicroPipe_close__doc__,
"close($self, /)\n"
"--\n"
"\n"
"Close the pipe.\n"
"\n"
"Blocked getters and putters get PipeClosedError; buffered items can\n"
"still be got.");

#define _MICRO_THREAD_MICROPIPE_CLOSE_METHODDEF    \
    {"close", (PyCFunction)_micro_thread_MicroPipe_close, METH_NOARGS, _micro_thread_MicroPipe_close__doc__},

static PyObject *
_micro_thread_MicroPipe_close_impl(PipeObject *self);

static PyObject *
_micro_thread_MicroPipe_close(PipeObject *self, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread_MicroPipe_close_impl(self);
}

PyDoc_STRVAR(_micro_thread__Waiter_fire__doc__,
"fire($self, value=None, /)\n"
"--\n"
"\n"
"Wake the waiting task with value; True if this delivered it.");

#define _MICRO_THREAD__WAITER_FIRE_METHODDEF    \
    {"fire", _PyCFunction_CAST(_micro_thread__Waiter_fire), METH_FASTCALL, _micro_thread__Waiter_fire__doc__},

static PyObject *
_micro_thread__Waiter_fire_impl(WaiterObject *self, PyObject *value);

static PyObject *
_micro_thread__Waiter_fire(WaiterObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *return_value = NULL;
    PyObject *value = Py_None;

    if (!_PyArg_CheckPositional("fire", nargs, 0, 1)) {
        goto exit;
    }
    if (nargs < 1) {
        goto skip_optional;
    }
    value = args[0];
skip_optional:
    return_value = _micro_thread__Waiter_fire_impl(self, value);

exit:
    return return_value;
}

PyDoc_STRVAR(_micro_thread__Waiter_fail__doc__,
"fail($self, exc, /)\n"
"--\n"
"\n"
"Wake the waiting task with exc; True if this delivered it.");

#define _MICRO_THREAD__WAITER_FAIL_METHODDEF    \
    {"fail", (PyCFunction)_micro_thread__Waiter_fail, METH_O, _micro_thread__Waiter_fail__doc__},

PyDoc_STRVAR(_micro_thread_current__doc__,
"current($module, /)\n"
"--\n"
"\n"
"The running micro-thread, or None in the OS thread\'s root.");

#define _MICRO_THREAD_CURRENT_METHODDEF    \
    {"current", (PyCFunction)_micro_thread_current, METH_NOARGS, _micro_thread_current__doc__},

static PyObject *
_micro_thread_current_impl(PyObject *module);

static PyObject *
_micro_thread_current(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread_current_impl(module);
}

PyDoc_STRVAR(_micro_thread_enumerate__doc__,
"enumerate($module, /)\n"
"--\n"
"\n"
"The unfinished micro-threads of this OS thread, in start order.");

#define _MICRO_THREAD_ENUMERATE_METHODDEF    \
    {"enumerate", (PyCFunction)_micro_thread_enumerate, METH_NOARGS, _micro_thread_enumerate__doc__},

static PyObject *
_micro_thread_enumerate_impl(PyObject *module);

static PyObject *
_micro_thread_enumerate(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread_enumerate_impl(module);
}

PyDoc_STRVAR(_micro_thread__push_deadline__doc__,
"_push_deadline($module, deadline, /)\n"
"--\n"
"\n"
"Enter a timeout scope ending at time.monotonic() == deadline.\n"
"\n"
"None hides the scopes around it.  Returns a token for _pop_deadline().");

#define _MICRO_THREAD__PUSH_DEADLINE_METHODDEF    \
    {"_push_deadline", (PyCFunction)_micro_thread__push_deadline, METH_O, _micro_thread__push_deadline__doc__},

PyDoc_STRVAR(_micro_thread__pop_deadline__doc__,
"_pop_deadline($module, token, /)\n"
"--\n"
"\n"
"Leave the innermost timeout scope.");

#define _MICRO_THREAD__POP_DEADLINE_METHODDEF    \
    {"_pop_deadline", (PyCFunction)_micro_thread__pop_deadline, METH_O, _micro_thread__pop_deadline__doc__},

PyDoc_STRVAR(_micro_thread__current_task__doc__,
"_current_task($module, /)\n"
"--\n"
"\n"
"The running micro-thread, or a token for the root.");

#define _MICRO_THREAD__CURRENT_TASK_METHODDEF    \
    {"_current_task", (PyCFunction)_micro_thread__current_task, METH_NOARGS, _micro_thread__current_task__doc__},

static PyObject *
_micro_thread__current_task_impl(PyObject *module);

static PyObject *
_micro_thread__current_task(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread__current_task_impl(module);
}

PyDoc_STRVAR(_micro_thread__shutdown__doc__,
"_shutdown($module, /)\n"
"--\n"
"\n"
"Kill this OS thread\'s micro-threads (at exit).");

#define _MICRO_THREAD__SHUTDOWN_METHODDEF    \
    {"_shutdown", (PyCFunction)_micro_thread__shutdown, METH_NOARGS, _micro_thread__shutdown__doc__},

static PyObject *
_micro_thread__shutdown_impl(PyObject *module);

static PyObject *
_micro_thread__shutdown(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread__shutdown_impl(module);
}

PyDoc_STRVAR(_micro_thread_pin_count__doc__,
"pin_count($module, /)\n"
"--\n"
"\n"
"How many times a micro-thread of this OS thread pinned.\n"
"\n"
"A micro-thread pins when it blocks where it cannot suspend (a C frame\n"
"between the blocking call and the micro-thread\'s start): the scheduler\n"
"then runs nested on its C stack.");

#define _MICRO_THREAD_PIN_COUNT_METHODDEF    \
    {"pin_count", (PyCFunction)_micro_thread_pin_count, METH_NOARGS, _micro_thread_pin_count__doc__},

static PyObject *
_micro_thread_pin_count_impl(PyObject *module);

static PyObject *
_micro_thread_pin_count(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread_pin_count_impl(module);
}

PyDoc_STRVAR(_micro_thread_set_pin_hook__doc__,
"set_pin_hook($module, hook, /)\n"
"--\n"
"\n"
"Call hook(microthread, what) whenever a micro-thread of this OS thread pins.\n"
"\n"
"The hook runs on the pinned stack; None removes it.");

#define _MICRO_THREAD_SET_PIN_HOOK_METHODDEF    \
    {"set_pin_hook", (PyCFunction)_micro_thread_set_pin_hook, METH_O, _micro_thread_set_pin_hook__doc__},

PyDoc_STRVAR(_micro_thread__after_fork_child__doc__,
"_after_fork_child($module, /)\n"
"--\n"
"\n"
"Give the scheduler a notifier of its own in a forked child.");

#define _MICRO_THREAD__AFTER_FORK_CHILD_METHODDEF    \
    {"_after_fork_child", (PyCFunction)_micro_thread__after_fork_child, METH_NOARGS, _micro_thread__after_fork_child__doc__},

static PyObject *
_micro_thread__after_fork_child_impl(PyObject *module);

static PyObject *
_micro_thread__after_fork_child(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    return _micro_thread__after_fork_child_impl(module);
}
/*[clinic end generated code: output=2788c9aec8ad8418 input=a9049054013a1b77]*/
