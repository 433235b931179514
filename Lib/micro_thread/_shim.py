"""Pure-Python micro_thread kernel for a stock CPython 3.10+ (the "shim").

This module implements the same *kernel contract* as the native C module
``_micro_thread``; :mod:`micro_thread._layer` builds the high-level API on
either of them.  The contract, in short:

* One scheduler per OS thread.  Only one task (a micro_thread, or the *root*:
  the OS thread's code outside any micro_thread) runs at a time, and switches
  happen only inside blocking calls.  Micro-threads run only while the root
  is inside a blocking call: the root then drives the scheduler until its own
  operation completes.
* The ready queue is FIFO.  The root is the exception: when its blocking
  call can complete it resumes before the queued micro-threads (which run
  the next time the scheduler is driven); only ``sleep(0)`` in the root
  queues it at the back like any task.  Every blocking call is a wait on a
  one-shot :class:`_Waiter`.
* A blocking call that has to suspend is a *checkpoint*: it first raises a
  pending ``kill()``/``throw()`` exception, or :class:`TimeoutError` when the
  task's earliest deadline has passed (level-triggered).  A call that can
  complete at once (``get()`` on a non-empty pipe, ``join()`` of a finished
  micro_thread) neither switches nor checks.
* ``kill()``/``throw()`` of a blocked micro_thread abandon its wait and make
  it ready with the exception.  If the target is merely ready (its wait has
  already completed), the completed result is kept and the exception is
  raised at its next checkpoint, so no item or wake-up is ever lost.  While
  one such exception is undelivered, further kill()/throw() do nothing.
* A wait that ends by an exception (kill, throw, timeout, also one raised
  at the checkpoint before suspending) leaves its waiter ``abandoned``, so
  a later ``fire()``/``fail()`` returns False and the wake-up goes to the
  next waiter.  ``_Waiter.wait(blocked_on=None)`` takes the text shown by
  ``MicroThread.blocked_on``.
* Micro-threads and pipes belong to the OS thread that created them; using
  them, or waking a waiter of their tasks, from another OS thread raises
  RuntimeError.
* ``_push_deadline(None)`` pushes a *shield*: until it is popped, deadlines
  pushed before it are ignored (used to re-acquire a lock after an
  interrupted ``Condition.wait`` and to wait for killed children of a group).

How the shim does it: every micro_thread runs on its own daemon OS thread,
created the first time it is scheduled.  Each task owns a *baton*
(a :class:`threading.Lock` held while the task may not run); a switch
releases the next task's baton and blocks on one's own.  Scheduler state is
only touched by the task holding the baton, so no other locking is needed.

Differences from the native implementation
------------------------------------------
* A micro_thread's code runs on a helper OS thread, so
  ``threading.current_thread()``, ``threading.get_ident()``,
  :class:`threading.local` data and ``sys._current_frames()`` see that helper
  thread, not the OS thread that owns the scheduler.  :func:`current` and the
  rest of this API are not affected.
* A switch is an OS-level thread hand-off (tens of microseconds), and each
  started micro_thread costs an OS thread: fine for tests and moderate
  concurrency, not for hundreds of thousands of micro-threads.
* Nothing defers at C level: :class:`CDeferred` exists but is never raised.
  The deferring I/O calls are :mod:`micro_thread._shim_io`'s own functions
  and classes -- ``sleep_d``, ``read_d``, ``write_d``, ``close``, the
  ``socket`` subclass and ``socketpair()``, ``open()`` -- and the interpreter's
  plain blocking calls (``time.sleep``, ``os.read``, the methods of a plain
  ``socket.socket`` or ``io`` object) block the whole scheduler.
* Nothing ever pins (every micro_thread has its own OS thread, so it can
  wait anywhere): ``pin_count()`` is always 0 and the pin hook is never
  called.
* ``os.close`` is not patched.  Closing through :func:`close`, a shim
  socket's ``close()`` or a shim file's ``close()`` wakes this OS thread's
  waiters on the fd with ``OSError(EBADF)`` at once; after a plain
  ``os.close`` the notifier (``poll``) sees the fd as invalid and the waiter
  gets EBADF from its retried call -- unless the fd number was reused by a
  new file before the notifier polled, in which case it waits on that file.
  A close from another OS thread does not wake the waiters at once either.
* Sockets: a ``*_d`` call never blocks the OS thread, but ``accept_d`` and
  ``connect_d`` of a socket without a timeout set ``O_NONBLOCK`` on its fd
  for the duration of one system call (visible to other processes sharing
  the fd); ``connect_d`` of an AF_UNIX socket just connects (a full backlog
  blocks).  Two micro-threads in ``sendall_d`` on one socket may interleave
  their data.
* Files from ``open()``: on pipes and terminals ``write_d`` writes at most
  ``select.PIPE_BUF`` bytes per system call; regular files are read and
  written directly (blocking the OS thread for the time of the disk access,
  natively a worker pool does it).  While a micro_thread is suspended in a
  ``*_d`` call of a buffered or text file, the file's OS-level lock is held:
  other micro-threads of that OS thread may use only its ``*_d`` methods and
  ``close()`` meanwhile (a plain ``read()``/``write()`` would block the OS
  thread for good).
* ``MicroThread.stack()`` hides the shim's own frames.
* A signal handler runs in the root's OS thread when the root waits (for
  the baton or in the notifier).  Inside :func:`run` its exception
  (KeyboardInterrupt for Ctrl-C) is raised in the main micro_thread; a
  micro_thread running Python code without switching is asked to switch
  first.  Outside run() it is raised in the root, and if the root's
  operation had already completed then, its result is lost.
* Micro-threads still blocked when their OS thread ends keep a parked helper
  thread until the interpreter exits (at exit, only the main thread's
  micro-threads are killed so that their ``finally`` blocks run).
"""

import atexit
import collections
import contextvars
import heapq
import itertools
import math
import sys
import threading
import time
import traceback
import weakref

from ._unraisable import report_unraisable

__all__ = [
    "CDeferred", "DeadlockError", "MicroPipe", "MicroThread",
    "MicroThreadExit", "PipeClosedError", "current", "enumerate", "run",
    "sleep", "start",
]

_INF = math.inf
_EXIT_GRACE = 1.0  # seconds given to killed micro-threads at interpreter exit

CREATED = "created"
READY = "ready"
RUNNING = "running"
BLOCKED = "blocked"
FINISHED = "finished"

_PENDING, _FIRED, _FAILED, _ABANDONED = range(4)

_tls = threading.local()
_names = itertools.count(1)
_main_scheduler = None


class MicroThreadExit(BaseException):
    """Raised inside a micro_thread by :meth:`MicroThread.kill`.

    Like :class:`GeneratorExit`, it derives from :class:`BaseException` so
    that ``except Exception`` does not swallow it.  A micro_thread that ends
    with it counts as killed.
    """


class CDeferred(NotImplementedError):
    """Python face of the C-level deferral signal of the native kernel.

    The shim never raises it; it exists so that code can name it on every
    implementation.
    """


class PipeClosedError(Exception):
    """Raised by :class:`MicroPipe` operations on a closed pipe."""


class DeadlockError(RuntimeError):
    """Raised in the root when it waits and no task can ever wake it."""


def _seconds(value, what):
    """Validate a non-negative number of seconds and return it as a float."""
    if not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{what} must not be NaN")
    if value < 0:
        raise ValueError(f"{what} must be non-negative")
    return value


def _as_exception(exc):
    """Return an exception instance from an instance or a class."""
    if isinstance(exc, type) and issubclass(exc, BaseException):
        return exc()
    if isinstance(exc, BaseException):
        return exc
    raise TypeError("exceptions must be BaseException instances or classes, "
                    f"not {type(exc).__name__}")


class _Timer:
    """An entry of the scheduler's timer heap."""

    __slots__ = ("when", "seq", "callback", "done")

    def __init__(self, when, seq, callback):
        self.when = when
        self.seq = seq
        self.callback = callback
        self.done = False

    def __lt__(self, other):
        return (self.when, self.seq) < (other.when, other.seq)


class _Task:
    """What the root and micro-threads have in common for the scheduler."""

    __slots__ = ("_sched", "_baton", "_state", "_waiter", "_blocked_on",
                 "_pending", "_deadlines", "__weakref__")

    def _init_task(self, sched, state):
        self._sched = sched
        self._baton = threading.Lock()
        self._baton.acquire()
        self._state = state
        self._waiter = None
        self._blocked_on = None
        self._pending = None       # kill()/throw() exception not yet raised
        self._deadlines = []       # [(effective deadline, token)], see below

    def _acquire_baton(self):
        self._baton.acquire()


class _Root(_Task):
    """The task token of an OS thread's code outside any micro_thread."""

    __slots__ = ("resumed",)

    def __init__(self, sched):
        self._init_task(sched, RUNNING)
        self.resumed = False

    def __repr__(self):
        return f"<micro_thread root of OS thread {self._sched.thread.name!r}>"

    def _acquire_baton(self):
        # Only the root's OS thread gets signals.  If KeyboardInterrupt (or
        # another exception from a signal handler) interrupts the wait, ask
        # the running micro_thread to hand the baton back at its next switch
        # and raise the exception once no other task is running.
        try:
            self._baton.acquire()
            return
        except BaseException as exc:
            interruption = exc
        self._sched.interrupt = True
        while True:
            try:
                self._baton.acquire()
                break
            except BaseException:
                continue
        self._sched.interrupt = False
        raise interruption


class _Scheduler:
    """Scheduler state of one OS thread.  Only the baton holder touches it."""

    def __init__(self):
        self.thread = threading.current_thread()
        self.ready = collections.deque()
        self.tasks = {}            # unfinished MicroThreads, in start order
        self.timers = []           # heap of _Timer
        self.dead_timers = 0       # cancelled entries still in the heap
        self.seq = itertools.count()
        self.root = _Root(self)
        self.current = self.root
        self.unretrieved = weakref.WeakSet()
        self.interrupt = False
        self.notifier = None       # set by _shim_io when a task waits on I/O
        self.io_countdown = 0      # next_task() calls until the next I/O poll
        self.main = None           # the main micro_thread of run()
        self.main_undelivered = None

    # -- timers ------------------------------------------------------------

    def add_timer(self, when, callback):
        """Call *callback* (which must not switch) at monotonic time *when*."""
        timer = _Timer(when, next(self.seq), callback)
        heapq.heappush(self.timers, timer)
        return timer

    def cancel_timer(self, timer):
        """Cancel *timer* unless it fired; compact the heap now and then."""
        if timer.done:
            return
        timer.done = True
        self.dead_timers += 1
        if self.dead_timers > 64 and self.dead_timers * 2 > len(self.timers):
            self.timers = [t for t in self.timers if not t.done]
            heapq.heapify(self.timers)
            self.dead_timers = 0

    def _drop_dead_timers(self):
        timers = self.timers
        while timers and timers[0].done:
            heapq.heappop(timers)
            self.dead_timers -= 1

    def _fire_due_timers(self):
        timers = self.timers
        now = time.monotonic()
        while timers and (timers[0].done or timers[0].when <= now):
            timer = heapq.heappop(timers)
            if timer.done:
                self.dead_timers -= 1
                continue
            timer.done = True
            timer.callback()

    # -- the ready queue and switching -------------------------------------

    def make_ready(self, task):
        """Queue *task* to be resumed: FIFO, but the root goes first."""
        task._state = READY
        if task is self.root:
            self.ready.appendleft(task)
        else:
            self.ready.append(task)

    def next_task(self):
        """Pop the next task to resume, firing due timers first; or None."""
        if self.interrupt:
            self.interrupt = False
            root = self.root
            if root._state is READY:
                self.ready.remove(root)
            return root
        if self.timers:
            self._fire_due_timers()
        ready = self.ready
        notifier = self.notifier
        if notifier and ready:
            # Poll the I/O waits without blocking once per round of the ready
            # queue, so that busy micro-threads do not starve them.
            self.io_countdown -= 1
            if self.io_countdown <= 0:
                self.io_countdown = len(ready) + 1
                notifier.poll(0)
        while ready:
            task = ready.popleft()
            if task._state is not FINISHED:   # killed before it started
                return task
        return None

    def _activate(self, task):
        """Make *task* the current one and return the baton to release."""
        self.current = task
        if task._state is CREATED:
            task._launch()
        return task._baton

    def handoff(self, me):
        """Pass the baton on from micro_thread *me*; return it, or None.

        None means that *me* is itself the next task to run.  When nothing is
        ready the root gets the baton to wait for timers or detect deadlock.
        """
        task = self.next_task()
        if task is me:
            return None
        root = self.root
        if task is None:
            task = root
        elif task is root:
            root.resumed = True
        return self._activate(task)

    def suspend(self, me):
        """Give up the baton until *me* (the current task) is resumed.

        The caller has arranged for *me* to be woken (queued, or waiting on a
        waiter).  In the root this drives the scheduler and may raise
        :class:`DeadlockError` or an interruption such as KeyboardInterrupt.
        """
        if me is self.root:
            self._drive()
            return
        baton = self.handoff(me)
        if baton is not None:
            baton.release()
            me._baton.acquire()

    def _drive(self):
        root = self.root
        root.resumed = False
        while True:
            task = self.next_task()
            if task is root:
                return
            try:
                if task is None:
                    self._idle()
                    continue
                self._activate(task).release()
                root._acquire_baton()
            except DeadlockError:
                raise
            except BaseException as exc:
                # A signal handler raised while the root waited (the root
                # holds the baton again).  Inside run(), the exception goes
                # to the main micro_thread and the root drives on.
                if not self._forward_interruption(exc):
                    raise
                root.resumed = False
                if root._state is READY:   # its own wait completed meanwhile
                    return
                continue
            if root.resumed:
                root.resumed = False
                return

    def _forward_interruption(self, exc):
        """Raise *exc* in the main micro_thread of run(); False if none.

        *exc* was raised in the root by a signal handler (KeyboardInterrupt
        for Ctrl-C) while the root drove the scheduler.
        """
        main = self.main
        if (main is None or main._state is FINISHED
                or main._pending is not None):
            return False
        main._deliver(exc)
        return True

    def _idle(self):
        """Nothing is ready: wait for I/O or the next timer, or deadlock."""
        self._drop_dead_timers()
        notifier = self.notifier
        waiting_io = bool(notifier)
        if not self.timers:
            if not waiting_io:
                raise DeadlockError(self._deadlock_message())
            notifier.poll(None)
            return
        delay = self.timers[0].when - time.monotonic()
        if waiting_io:
            notifier.poll(max(delay, 0.0))
        elif delay > 0:
            time.sleep(delay)

    def _deadlock_message(self):
        lines = [f"deadlock: the root of OS thread {self.thread.name!r} is "
                 f"blocked on {self.root._blocked_on} and no micro_thread "
                 "can run"]
        for task in self.tasks:
            lines.append(f"  {task!r}")
            summary = traceback.StackSummary.extract(
                (frame, frame.f_lineno) for frame in task.stack())
            lines.extend("    " + line.rstrip("\n").replace("\n", "\n    ")
                         for line in summary.format())
        if not self.tasks:
            lines.append("  (this OS thread has no unfinished micro_thread)")
        return "\n".join(lines)


def _scheduler():
    """Return the scheduler of the calling (logical) OS thread."""
    try:
        return _tls.sched
    except AttributeError:
        pass
    global _main_scheduler
    sched = _tls.sched = _Scheduler()
    if threading.current_thread() is threading.main_thread():
        _main_scheduler = sched
    return sched


def _checkpoint(task):
    """Raise a pending kill/throw exception or an expired deadline."""
    exc = task._pending
    if exc is not None:
        task._pending = None
        raise exc
    deadlines = task._deadlines
    if deadlines:
        deadline = deadlines[-1][0]
        if deadline != _INF and deadline <= time.monotonic():
            raise TimeoutError("micro_thread deadline exceeded")


def _block(waiter, blocked_on, wake_at=None):
    """Suspend the current task until *waiter* has an outcome; return it.

    *wake_at* (a monotonic time) fires the waiter with None, for sleep().
    """
    sched = _scheduler()
    task = sched.current
    if waiter._status != _PENDING:
        return waiter._outcome()
    try:
        _checkpoint(task)
    except BaseException:
        waiter._status = _ABANDONED
        raise
    waiter._task = task
    task._waiter = waiter
    task._blocked_on = blocked_on
    task._state = BLOCKED
    timers = []
    if wake_at is not None and wake_at != _INF:
        timers.append(sched.add_timer(wake_at, waiter.fire))
    if task._deadlines and task._deadlines[-1][0] != _INF:
        timers.append(sched.add_timer(task._deadlines[-1][0], waiter._expire))
    try:
        sched.suspend(task)
    except BaseException:
        # Only the root gets here: deadlock, or an interruption.
        if waiter._status == _PENDING:
            waiter._status = _ABANDONED
        raise
    finally:
        for timer in timers:
            sched.cancel_timer(timer)
        task._waiter = None
        task._blocked_on = None
        task._state = RUNNING
    if waiter._status == _ABANDONED and task._pending is waiter._value:
        task._pending = None
    return waiter._outcome()


def _yield():
    """sleep(0): requeue the current task at the back of the ready queue."""
    sched = _scheduler()
    task = sched.current
    _checkpoint(task)
    task._state = READY
    sched.ready.append(task)
    try:
        sched.suspend(task)
    except BaseException:
        if task._state is READY:
            sched.ready.remove(task)
        raise
    finally:
        task._state = RUNNING


class _Waiter:
    """One-shot wake-up slot: the kernel primitive under every blocking call.

    ``wait()`` blocks the calling task until ``fire(value)`` (``wait`` then
    returns *value*) or ``fail(exc)`` (``wait`` raises *exc*).  ``fire`` and
    ``fail`` never switch; they return True if they delivered the outcome and
    False if the waiter already had one or was abandoned (its task was
    killed, thrown into or timed out while waiting: :attr:`abandoned`).
    """

    __slots__ = ("_status", "_value", "_task", "_waited")

    def __init__(self):
        self._status = _PENDING
        self._value = None
        self._task = None
        self._waited = False

    def __repr__(self):
        status = ("pending", "fired", "failed", "abandoned")[self._status]
        return f"<_Waiter {status}>"

    @property
    def abandoned(self):
        """True if the waiting task gave up (kill, throw, timeout)."""
        return self._status == _ABANDONED

    def wait(self, blocked_on=None):
        """Block until fired or failed; may be called only once.

        *blocked_on* is the text shown by ``MicroThread.blocked_on`` meanwhile.
        """
        if self._waited:
            raise RuntimeError("_Waiter.wait() may be called only once")
        self._waited = True
        return _block(self, "_Waiter.wait" if blocked_on is None
                      else str(blocked_on))

    def fire(self, value=None):
        """Deliver *value* to the waiting task; True if delivered."""
        return self._resolve(_FIRED, value)

    def fail(self, exc):
        """Make the waiting task raise *exc*; True if delivered."""
        return self._resolve(_FAILED, _as_exception(exc))

    def _resolve(self, status, value):
        if self._status != _PENDING:
            return False
        task = self._task
        if task is not None and _scheduler() is not task._sched:
            raise RuntimeError(
                f"cannot wake {task!r} from OS thread "
                f"{_scheduler().thread.name!r}: it belongs to OS thread "
                f"{task._sched.thread.name!r}")
        self._status = status
        self._value = value
        if task is not None:
            task._sched.make_ready(task)
        return True

    def _expire(self):
        if self._status == _PENDING:
            self._status = _ABANDONED
            self._value = TimeoutError("micro_thread deadline exceeded")
            self._task._sched.make_ready(self._task)

    def _outcome(self):
        value, self._value = self._value, None
        if self._status == _FIRED:
            return value
        raise value


def _current_task():
    """Return the running MicroThread, or the root token in the root."""
    return _scheduler().current


def _push_deadline(deadline):
    """Push an absolute ``time.monotonic()`` deadline for the current task.

    Blocking calls honour the earliest deadline on the stack.  ``None``
    pushes a shield that hides the deadlines below it.  Returns a token for
    :func:`_pop_deadline`.
    """
    stack = _scheduler().current._deadlines
    if deadline is None:
        effective = _INF
    else:
        if not isinstance(deadline, (int, float)):
            raise TypeError("deadline must be a number or None, "
                            f"not {type(deadline).__name__}")
        if math.isnan(deadline):
            raise ValueError("deadline must not be NaN")
        effective = min(float(deadline), stack[-1][0] if stack else _INF)
    token = object()
    stack.append((effective, token))
    return token


def _pop_deadline(token):
    """Pop the deadline pushed with *token*; it must be the innermost one."""
    stack = _scheduler().current._deadlines
    if not stack or stack[-1][1] is not token:
        raise RuntimeError("deadlines must be popped in LIFO order "
                           "by the task that pushed them")
    stack.pop()


def _bootstrap(box):
    """Body of a micro_thread's helper OS thread."""
    task = box.pop()
    sched = task._sched
    _tls.sched = sched
    _tls.task = task
    task._ident = threading.get_ident()
    task._baton.acquire()
    task._state = RUNNING
    try:
        result = task._context.run(task._fn, *task._args, **task._kwargs)
    except BaseException as exc:
        task._finish(None, exc)
    else:
        task._finish(result, None)
        del result
    _tls.task = None
    baton = sched.handoff(task)
    del task  # the finished MicroThread must not be kept alive by this frame
    baton.release()


_BOOTSTRAP_CODE = _bootstrap.__code__


class MicroThread(_Task):
    """A micro_thread: a cooperative thread of execution.

    Create one with :func:`start` (or :func:`run`); the class itself cannot be
    instantiated.
    """

    __slots__ = ("_name", "_fn", "_args", "_kwargs", "_context", "_ident",
                 "_result", "_exc", "_retrieved", "_joiners")

    def __new__(cls, *args, **kwargs):
        raise TypeError("cannot create 'MicroThread' instances directly; "
                        "use micro_thread.start()")

    @classmethod
    def _create(cls, sched, fn, args, kwargs):
        self = object.__new__(cls)
        self._init_task(sched, CREATED)
        self._name = f"MicroThread-{next(_names)}"
        self._fn = fn
        self._args = args
        self._kwargs = kwargs
        self._context = contextvars.copy_context()
        self._ident = None
        self._result = None
        self._exc = None
        self._retrieved = False
        self._joiners = []
        return self

    def _launch(self):
        threading.Thread(target=_bootstrap, args=([self],), daemon=True,
                         name=f"micro_thread {self._name}").start()

    def _finish(self, result, exc):
        sched = self._sched
        if self is sched.main and self._pending is not None:
            sched.main_undelivered = self._pending
        self._state = FINISHED
        self._result = result
        self._exc = exc
        self._fn = self._args = self._kwargs = self._context = None
        self._pending = None
        sched.tasks.pop(self, None)
        if exc is not None and not isinstance(exc, MicroThreadExit):
            sched.unretrieved.add(self)
        joiners, self._joiners = self._joiners, []
        for waiter in joiners:
            waiter.fire(None)

    def __del__(self):
        if (self._exc is not None and not self._retrieved
                and not isinstance(self._exc, MicroThreadExit)):
            self._report_unretrieved()

    def _report_unretrieved(self):
        self._retrieved = True
        report_unraisable(f"micro_thread {self._name!r} (its exception was "
                          "never retrieved with join())", self._exc)

    def __repr__(self):
        state = self._state
        if state is BLOCKED:
            state = f"blocked on {self._blocked_on}"
        return f"<MicroThread name={self._name!r} {state}>"

    @property
    def name(self):
        """The micro_thread's name (a str; default ``MicroThread-N``)."""
        return self._name

    @name.setter
    def name(self, value):
        if not isinstance(value, str):
            raise TypeError(f"name must be a str, not {type(value).__name__}")
        self._name = value

    @property
    def state(self):
        """One of "created", "ready", "running", "blocked", "finished"."""
        return self._state

    @property
    def blocked_on(self):
        """Short text naming the blocking call it waits in, or None."""
        return self._blocked_on if self._state is BLOCKED else None

    def done(self):
        """Return True if the micro_thread has finished (or was killed)."""
        return self._state is FINISHED

    def _owner(self, action):
        sched = _scheduler()
        if sched is not self._sched:
            raise RuntimeError(
                f"cannot {action} {self!r} from OS thread "
                f"{sched.thread.name!r}: micro-threads are bound to the OS "
                f"thread that started them ({self._sched.thread.name!r})")
        return sched

    def join(self, timeout=None):
        """Wait until finished; return its result or raise its exception.

        The exception is the very object the micro_thread raised.  Raises
        :class:`TimeoutError` if *timeout* seconds pass first.
        """
        sched = self._owner("join")
        if timeout is not None:
            timeout = _seconds(timeout, "timeout")
        if self is sched.current:
            raise RuntimeError("a micro_thread cannot join itself")
        if self._state is not FINISHED:
            self._wait_finished(timeout)
        if self._exc is None:
            return self._result
        self._retrieved = True
        sched.unretrieved.discard(self)
        raise self._exc

    def _wait_finished(self, timeout):
        waiter = _Waiter()
        self._joiners.append(waiter)
        blocked_on = f"join <{self._name}>"
        if timeout is None:
            _block(waiter, blocked_on)
            return
        token = _push_deadline(time.monotonic() + timeout)
        try:
            _block(waiter, blocked_on)
        finally:
            _pop_deadline(token)

    def kill(self):
        """Raise :class:`MicroThreadExit` in the micro_thread.

        It is raised where the micro_thread is suspended, so ``finally`` and
        ``with`` blocks run.  A micro_thread that has not started never runs;
        killing a finished one does nothing; killing yourself raises at once.
        """
        self._owner("kill")
        if self._state is not FINISHED:
            self._deliver(MicroThreadExit())

    def throw(self, exc):
        """Like :meth:`kill`, but raise *exc* (an exception or its class)."""
        exc = _as_exception(exc)
        self._owner("throw into")
        if self._state is FINISHED:
            raise RuntimeError(f"cannot throw into finished {self!r}")
        self._deliver(exc)

    def _deliver(self, exc):
        sched = self._sched
        if self is sched.current:
            raise exc
        if self._state is CREATED:
            self._finish(None, exc)
            return
        if self._pending is not None:
            return  # an earlier kill()/throw() has not been raised yet
        self._pending = exc
        if self._state is BLOCKED:
            waiter = self._waiter
            waiter._status = _ABANDONED
            waiter._value = exc
            sched.make_ready(self)

    def stack(self):
        """Return its Python frames, outermost (the entry function) first.

        Empty if it has not started or has finished.
        """
        if self._state is CREATED or self._state is FINISHED:
            return []
        if getattr(_tls, "task", None) is self:
            frame = sys._getframe()
        else:
            frame = sys._current_frames().get(self._ident)
        frames = []
        while frame is not None and frame.f_code is not _BOOTSTRAP_CODE:
            if frame.f_code.co_filename != _BOOTSTRAP_CODE.co_filename:
                frames.append(frame)
            frame = frame.f_back
        frames.reverse()
        return frames


class MicroPipe:
    """FIFO channel between micro-threads of one OS thread.

    *maxsize* bounds the buffer (0: unbounded).  Blocked getters and putters
    are woken in FIFO order.  The pipe belongs to the OS thread that created
    it; using it from another OS thread raises RuntimeError.
    """

    __slots__ = ("_maxsize", "_items", "_getters", "_putters", "_closed",
                 "_sched", "__weakref__")

    def __init__(self, maxsize=0):
        if not isinstance(maxsize, int):
            raise TypeError("maxsize must be an int, "
                            f"not {type(maxsize).__name__}")
        if maxsize < 0:
            raise ValueError("maxsize must be >= 0")
        self._maxsize = maxsize
        self._items = collections.deque()
        self._getters = collections.deque()
        self._putters = collections.deque()   # (waiter, item)
        self._closed = False
        self._sched = _scheduler()

    def __repr__(self):
        closed = " closed" if self._closed else ""
        return (f"<MicroPipe maxsize={self._maxsize} "
                f"len={len(self._items)}{closed}>")

    def __len__(self):
        return len(self._items)

    @property
    def closed(self):
        """True once :meth:`close` has been called."""
        return self._closed

    def _check_thread(self):
        sched = _scheduler()
        if self._sched is not sched:
            raise RuntimeError(
                f"cannot use {self!r} from OS thread {sched.thread.name!r}: "
                "a MicroPipe belongs to the OS thread that created it "
                f"({self._sched.thread.name!r})")

    def put(self, item):
        """Append *item*; block while a bounded pipe is full.

        A blocked getter receives the item directly and becomes ready; the
        caller does not switch.  Raises :class:`PipeClosedError` if the pipe
        is (or gets) closed; the item is then not enqueued.
        """
        self._check_thread()
        if self._closed:
            raise PipeClosedError("put() on a closed MicroPipe")
        getters = self._getters
        while getters:
            if getters.popleft().fire(item):
                return
        if not self._maxsize or len(self._items) < self._maxsize:
            self._items.append(item)
            return
        waiter = _Waiter()
        self._putters.append((waiter, item))
        _block(waiter, "MicroPipe.put")

    def get(self):
        """Remove and return the oldest item, blocking until there is one.

        Raises :class:`PipeClosedError` once the pipe is closed and drained.
        """
        self._check_thread()
        items = self._items
        if items:
            item = items.popleft()
            putters = self._putters
            while putters and len(items) < self._maxsize:
                waiter, pending_item = putters.popleft()
                if waiter.fire(None):
                    items.append(pending_item)
            return item
        if self._closed:
            raise PipeClosedError("get() on a closed and drained MicroPipe")
        waiter = _Waiter()
        self._getters.append(waiter)
        return _block(waiter, "MicroPipe.get")

    def close(self):
        """Close the pipe (idempotent).

        Blocked getters and putters raise :class:`PipeClosedError` (the
        putters' items are dropped); buffered items stay gettable.
        """
        self._check_thread()
        if self._closed:
            return
        self._closed = True
        getters, putters = self._getters, self._putters
        while getters:
            getters.popleft().fail(
                PipeClosedError("MicroPipe closed while waiting in get()"))
        while putters:
            putters.popleft()[0].fail(
                PipeClosedError("MicroPipe closed while waiting in put()"))

    def __iter__(self):
        return self

    def __next__(self):
        try:
            return self.get()
        except PipeClosedError:
            raise StopIteration from None


def start(fn, /, *args, **kwargs):
    """Start a micro_thread running ``fn(*args, **kwargs)``; return it.

    It is queued (FIFO) and runs once the scheduler is driven; the caller
    does not switch.  It runs in a copy of the caller's contextvars context.
    """
    if not callable(fn):
        raise TypeError(f"start() argument 'fn' must be callable, "
                        f"not {type(fn).__name__}")
    sched = _scheduler()
    thread = MicroThread._create(sched, fn, args, kwargs)
    sched.tasks[thread] = None
    sched.ready.append(thread)
    return thread


def run(fn, /, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` as the main micro_thread until it returns.

    Returns its result or raises its exception.  Other micro-threads still
    unfinished then keep existing.  Not allowed inside a micro_thread.

    An exception raised by a signal handler meanwhile (KeyboardInterrupt on
    Ctrl-C) is raised in the main micro_thread at its blocking call, so that
    its ``finally`` blocks run, and then propagates out of run().
    """
    if current() is not None:
        raise RuntimeError("micro_thread.run() cannot be called from inside "
                           "a micro_thread")
    sched = _scheduler()
    main = start(fn, *args, **kwargs)
    sched.main = main
    try:
        result = main.join()
    finally:
        if sched.main is main:
            sched.main = None
        undelivered, sched.main_undelivered = sched.main_undelivered, None
    if undelivered is not None:
        # An interruption forwarded to main arrived after its last blocking
        # call: main finished without seeing it, so run() raises it.
        raise undelivered
    return result


def current():
    """Return the running :class:`MicroThread`, or None in the root."""
    return getattr(_tls, "task", None)


def enumerate():
    """Return this OS thread's unfinished micro-threads in start order."""
    return list(_scheduler().tasks)


def sleep(seconds):
    """Block the calling task for at least *seconds*.

    ``sleep(0)`` yields: the caller goes to the back of the ready queue.
    """
    seconds = _seconds(seconds, "sleep length")
    if seconds == 0:
        _yield()
    else:
        _block(_Waiter(), "sleep", time.monotonic() + seconds)


def _at_exit():
    """Kill the main thread's micro-threads so that their cleanup runs."""
    sched = _main_scheduler
    if sched is None or sched.current is not sched.root:
        return
    try:
        tasks = list(sched.tasks)
        for task in tasks:
            task.kill()
        token = _push_deadline(time.monotonic() + _EXIT_GRACE)
        try:
            for task in tasks:
                if task._state is not FINISHED:
                    task._wait_finished(None)
        except (TimeoutError, DeadlockError):
            pass
        finally:
            _pop_deadline(token)
    finally:
        for task in list(sched.unretrieved):
            if not task._retrieved:
                task._report_unretrieved()


atexit.register(_at_exit)

for _cls in (MicroThreadExit, CDeferred, PipeClosedError, DeadlockError,
             MicroThread, MicroPipe):
    _cls.__module__ = "micro_thread"
del _cls
