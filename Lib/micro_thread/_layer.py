"""The high-level micro_thread API, written once against a kernel.

:func:`bind` builds :class:`Group`, :func:`timeout`, :class:`Lock`,
:class:`Event`, :class:`Semaphore`, :class:`BoundedSemaphore` and
:class:`Condition` on a *kernel*: the native ``_micro_thread`` module or the
pure-Python :mod:`micro_thread._shim`.  Only these kernel names are used:

* ``_Waiter()`` -- one-shot wake-up slot: ``wait(blocked_on=None)`` blocks
  until ``fire(value)``/``fail(exc)``; those return False when the waiter
  already had an outcome or was ``abandoned`` (its task was killed, thrown
  into or timed out);
* ``_push_deadline(deadline)`` / ``_pop_deadline(token)`` -- per-task LIFO
  stack of absolute ``time.monotonic()`` deadlines; ``None`` pushes a shield
  that hides the deadlines below it;
* ``start``, ``current`` and ``MicroThreadExit``.

Every blocking primitive queues a waiter and hands wake-ups over directly,
in FIFO order: a ``release()``/``notify()``/``set()`` that meets an abandoned
waiter moves on to the next one, so a killed or timed-out waiter never
swallows a wake-up.
"""

import builtins
import collections
import math
import time

from ._unraisable import report_unraisable

__all__ = ["IO_NAMES", "KERNEL_NAMES", "ExceptionGroup", "bind", "export"]

#: Public names every kernel provides, re-exported unchanged.
KERNEL_NAMES = (
    "CDeferred", "DeadlockError", "MicroPipe", "MicroThread",
    "MicroThreadExit", "PipeClosedError", "current", "enumerate", "run",
    "sleep", "start",
)

#: The deferring I/O API, passed to :func:`export` by each implementation:
#: natively the interpreter's own ``time.sleep_d``, ``os.read_d``,
#: ``os.write_d``, ``os.close``, ``socket.socket``, ``socket.socketpair``,
#: ``io.open`` and ``_micro_thread.pin_count``/``set_pin_hook``; in the shim
#: their equivalents from :mod:`micro_thread._shim_io`.
IO_NAMES = (
    "close", "open", "pin_count", "read_d", "set_pin_hook", "sleep_d",
    "socket", "socketpair", "write_d",
)

try:
    ExceptionGroup = builtins.ExceptionGroup
except AttributeError:  # Python 3.10
    class ExceptionGroup(Exception):
        """Minimal stand-in for the built-in ExceptionGroup of Python 3.11+.

        Raised by :class:`Group` on Python 3.10.  It has the ``message`` and
        ``exceptions`` attributes, but no ``split()``/``subgroup()`` and no
        ``except*`` support.
        """

        def __init__(self, message, exceptions):
            exceptions = tuple(exceptions)
            super().__init__(message, exceptions)
            self.message = message
            self.exceptions = exceptions

        def __str__(self):
            count = len(self.exceptions)
            return (f"{self.message} ({count} sub-exception"
                    f"{'s' if count != 1 else ''})")

    ExceptionGroup.__module__ = "micro_thread"

_MODULE = "micro_thread"


def _timeout_value(timeout, what="timeout"):
    """Validate *timeout*: None, or a number; negative numbers become 0."""
    if timeout is None:
        return None
    if not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number or None, "
                        f"not {type(timeout).__name__}")
    if math.isnan(timeout):
        raise ValueError(f"{what} must not be NaN")
    return max(float(timeout), 0.0)


def _wake_one(waiters, value):
    """Fire the first live waiter of the deque *waiters*; True if one was."""
    while waiters:
        if waiters.popleft().fire(value):
            return True
    return False


def _timed_wait(kernel, waiter, timeout, blocked_on):
    """Wait on *waiter* for at most *timeout* seconds (None: no limit).

    Return True when the waiter fired, False when this timeout expired
    first.  A TimeoutError of an enclosing :func:`timeout` scope propagates.
    """
    if timeout is None:
        waiter.wait(blocked_on)
        return True
    deadline = time.monotonic() + timeout
    token = kernel._push_deadline(deadline)
    try:
        waiter.wait(blocked_on)
        return True
    except TimeoutError:
        if waiter.abandoned and time.monotonic() >= deadline:
            return False
        raise
    finally:
        kernel._pop_deadline(token)


def _shielded(kernel, fn, *args):
    """Call *fn* with every deadline of the current task hidden."""
    token = kernel._push_deadline(None)
    try:
        return fn(*args)
    finally:
        kernel._pop_deadline(token)


def _publish(cls):
    """Give a class made inside bind() its public module and qualnames."""
    cls.__module__ = _MODULE
    cls.__qualname__ = cls.__name__
    for name, attr in vars(cls).items():
        functions = [attr]
        if isinstance(attr, property):
            functions = [attr.fget, attr.fset]
        for function in functions:
            if hasattr(function, "__code__"):
                function.__module__ = _MODULE
                function.__qualname__ = f"{cls.__name__}.{name}"
    return cls


def _make_timeout(k):
    class Timeout:
        """Context manager returned by :func:`timeout`.

        On entry it pushes the deadline ``time.monotonic() + seconds`` for the
        current task; whatever blocking call is in progress when it passes
        raises the built-in :class:`TimeoutError`, and so does every later
        blocking call inside the block (level-triggered).  The TimeoutError
        propagates out of the ``with`` statement.  Nested scopes: the
        earliest deadline wins.  ``seconds=None`` means no timeout.
        """

        __slots__ = ("_seconds", "_deadline", "_token", "_state")

        def __init__(self, seconds):
            if seconds is not None:
                if not isinstance(seconds, (int, float)):
                    raise TypeError("seconds must be a number or None, "
                                    f"not {type(seconds).__name__}")
                if math.isnan(seconds) or seconds < 0:
                    raise ValueError("seconds must be a non-negative number")
            self._seconds = seconds
            self._deadline = None
            self._token = None
            self._state = "new"

        def __repr__(self):
            return (f"<Timeout seconds={self._seconds!r} "
                    f"deadline={self._deadline!r} {self._state}>")

        def __enter__(self):
            if self._state != "new":
                raise RuntimeError("a Timeout can be entered only once")
            self._state = "active"
            if self._seconds is not None:
                self._deadline = time.monotonic() + self._seconds
                self._token = k._push_deadline(self._deadline)
            return self

        def __exit__(self, exc_type, exc, tb):
            self._state = "exited"
            if self._token is not None:
                token, self._token = self._token, None
                k._pop_deadline(token)
            return False

        @property
        def deadline(self):
            """The absolute ``time.monotonic()`` deadline, or None."""
            return self._deadline

        def expired(self):
            """Return True if the deadline has passed."""
            return (self._deadline is not None
                    and time.monotonic() >= self._deadline)

    def timeout(seconds):
        """Return a context manager that times out blocking calls.

        See :class:`Timeout`.  Negative *seconds* raise ValueError.
        """
        return Timeout(seconds)

    timeout.__module__ = _MODULE
    timeout.__qualname__ = "timeout"
    return {"Timeout": _publish(Timeout), "timeout": timeout}


def _make_locks(k):
    class Lock:
        """A FIFO mutual-exclusion lock for micro-threads.

        Same interface as :class:`threading.Lock`.  Blocking acquires wait
        cooperatively; a release hands the lock to the oldest live waiter.
        """

        __slots__ = ("_locked", "_waiters", "__weakref__")

        def __init__(self):
            self._locked = False
            self._waiters = collections.deque()

        def __repr__(self):
            state = "locked" if self._locked else "unlocked"
            return f"<Lock {state} waiters={len(self._waiters)}>"

        def acquire(self, blocking=True, timeout=-1):
            """Acquire the lock; return True, or False on timeout/no wait."""
            if timeout != -1:
                if not blocking:
                    raise ValueError("can't specify a timeout "
                                     "for a non-blocking call")
                if _timeout_value(timeout) is None or timeout < 0:
                    raise ValueError("timeout value must be "
                                     "a non-negative number")
            if not self._locked:
                self._locked = True
                return True
            if not blocking:
                return False
            waiter = k._Waiter()
            self._waiters.append(waiter)
            return _timed_wait(k, waiter, None if timeout == -1
                               else float(timeout), "Lock.acquire")

        def release(self):
            """Release the lock; RuntimeError if it is not locked."""
            if not self._locked:
                raise RuntimeError("release unlocked lock")
            if not _wake_one(self._waiters, True):
                self._locked = False

        def locked(self):
            """Return True if the lock is held."""
            return self._locked

        def __enter__(self):
            return self.acquire()

        def __exit__(self, exc_type, exc, tb):
            self.release()

    class Event:
        """A flag micro-threads can wait for, like :class:`threading.Event`."""

        __slots__ = ("_flag", "_waiters", "__weakref__")

        def __init__(self):
            self._flag = False
            self._waiters = collections.deque()

        def __repr__(self):
            state = "set" if self._flag else "unset"
            return f"<Event {state} waiters={len(self._waiters)}>"

        def is_set(self):
            """Return True if the flag is set."""
            return self._flag

        def set(self):
            """Set the flag and wake every waiter."""
            self._flag = True
            waiters = self._waiters
            while waiters:
                waiters.popleft().fire(True)

        def clear(self):
            """Reset the flag."""
            self._flag = False

        def wait(self, timeout=None):
            """Block until the flag is set; False if *timeout* passed first."""
            timeout = _timeout_value(timeout)
            if self._flag:
                return True
            waiter = k._Waiter()
            self._waiters.append(waiter)
            return _timed_wait(k, waiter, timeout, "Event.wait")

    class Semaphore:
        """A FIFO counting semaphore, like :class:`threading.Semaphore`."""

        __slots__ = ("_value", "_waiters", "__weakref__")

        def __init__(self, value=1):
            if not isinstance(value, int):
                raise TypeError("semaphore initial value must be an int, "
                                f"not {type(value).__name__}")
            if value < 0:
                raise ValueError("semaphore initial value must be >= 0")
            self._value = value
            self._waiters = collections.deque()

        def __repr__(self):
            return (f"<{type(self).__name__} value={self._value} "
                    f"waiters={len(self._waiters)}>")

        def acquire(self, blocking=True, timeout=None):
            """Take one unit; return True, or False on timeout/no wait."""
            if not blocking and timeout is not None:
                raise ValueError("can't specify timeout "
                                 "for non-blocking acquire")
            timeout = _timeout_value(timeout)
            if self._value > 0:
                self._value -= 1
                return True
            if not blocking:
                return False
            waiter = k._Waiter()
            self._waiters.append(waiter)
            return _timed_wait(k, waiter, timeout,
                               f"{type(self).__name__}.acquire")

        def release(self, n=1):
            """Give back *n* units, waking up to *n* waiters in FIFO order."""
            if n < 1:
                raise ValueError("n must be one or more")
            for _ in range(n):
                if not _wake_one(self._waiters, True):
                    self._value += 1

        def __enter__(self):
            return self.acquire()

        def __exit__(self, exc_type, exc, tb):
            self.release()

    class BoundedSemaphore(Semaphore):
        """A :class:`Semaphore` that refuses to exceed its initial value."""

        __slots__ = ("_initial",)

        def __init__(self, value=1):
            super().__init__(value)
            self._initial = value

        def release(self, n=1):
            """Like :meth:`Semaphore.release`; ValueError on over-release."""
            if self._value + n > self._initial:
                raise ValueError("Semaphore released too many times")
            super().release(n)

    class Condition:
        """A condition variable, like :class:`threading.Condition`.

        *lock* defaults to a new :class:`Lock` (threading uses an RLock).
        A waiter re-acquires the lock before ``wait()`` returns or raises,
        even when it was killed or timed out by an enclosing scope.
        """

        __slots__ = ("_lock", "_waiters", "__weakref__")

        def __init__(self, lock=None):
            self._lock = Lock() if lock is None else lock
            self._waiters = collections.deque()

        def __repr__(self):
            return f"<Condition {self._lock!r} waiters={len(self._waiters)}>"

        def acquire(self, *args, **kwargs):
            """Acquire the underlying lock."""
            return self._lock.acquire(*args, **kwargs)

        def release(self):
            """Release the underlying lock."""
            self._lock.release()

        def __enter__(self):
            return self._lock.__enter__()

        def __exit__(self, exc_type, exc, tb):
            return self._lock.__exit__(exc_type, exc, tb)

        def _check_owned(self, action):
            if self._lock.acquire(False):
                self._lock.release()
                raise RuntimeError(f"cannot {action} on un-acquired lock")

        def wait(self, timeout=None):
            """Release the lock, wait for a notify, re-acquire the lock.

            Return False if *timeout* passed first, else True.
            """
            self._check_owned("wait")
            timeout = _timeout_value(timeout)
            waiter = k._Waiter()
            self._waiters.append(waiter)
            self._lock.release()
            try:
                return _timed_wait(k, waiter, timeout, "Condition.wait")
            finally:
                _shielded(k, self._lock.acquire)

        def wait_for(self, predicate, timeout=None):
            """Wait until ``predicate()`` is true; return its last value."""
            timeout = _timeout_value(timeout)
            endtime = None
            result = predicate()
            while not result:
                if timeout is not None:
                    if endtime is None:
                        endtime = time.monotonic() + timeout
                    else:
                        timeout = endtime - time.monotonic()
                        if timeout <= 0:
                            break
                self.wait(timeout)
                result = predicate()
            return result

        def notify(self, n=1):
            """Wake up to *n* waiters (oldest first)."""
            self._check_owned("notify")
            while n > 0 and _wake_one(self._waiters, True):
                n -= 1

        def notify_all(self):
            """Wake every waiter."""
            self.notify(len(self._waiters))

    return {cls.__name__: _publish(cls) for cls in
            (Lock, Event, Semaphore, BoundedSemaphore, Condition)}


def _make_group(k):
    class Group:
        """Structured concurrency: a scope that owns the micro-threads in it.

        ::

            with micro_thread.Group() as g:
                g.start(fn, *args, **kwargs)

        Leaving the block waits for every child.  If a child fails, the
        other children are killed; if the body raises, all children are
        killed.  The failures (the body's exception first, then the
        children's in start order; :class:`MicroThreadExit` of killed
        children excluded) are raised together as an
        :class:`ExceptionGroup`.

        Exceptions that must pass through unchanged -- :class:`TimeoutError`
        and BaseExceptions that are not Exceptions (``MicroThreadExit``,
        ``KeyboardInterrupt``, ...) raised by the body or interrupting the
        wait at the end of the block -- kill the children, wait for them
        (ignoring deadlines), and propagate; failures of children are then
        reported through :func:`sys.unraisablehook`.  A child's own
        ``KeyboardInterrupt``/``SystemExit`` is re-raised unwrapped.  The body
        is not interrupted when a child fails.
        """

        __slots__ = ("_children", "_joined", "_failures", "_state",
                     "_aborted", "__weakref__")

        def __init__(self):
            self._children = []
            self._joined = 0
            self._failures = []     # (child, exception)
            self._state = "new"
            self._aborted = False

        def __repr__(self):
            return (f"<Group {self._state} children={len(self._children)}"
                    f"{' aborted' if self._aborted else ''}>")

        def __enter__(self):
            if self._state != "new":
                raise RuntimeError("a Group can be entered only once")
            self._state = "open"
            return self

        def start(self, fn, /, *args, **kwargs):
            """Start ``fn(*args, **kwargs)`` as a child; return it.

            The child's outermost frame is this group's wrapper.
            """
            if self._state != "open":
                raise RuntimeError(f"cannot start a child in a {self._state}"
                                   " Group (use it in a with statement)")
            if not callable(fn):
                raise TypeError(f"start() argument 'fn' must be callable, "
                                f"not {type(fn).__name__}")
            child = k.start(self._run_child, fn, args, kwargs)
            self._children.append(child)
            if self._aborted:
                child.kill()
            return child

        @property
        def children(self):
            """The children started so far, in start order."""
            return list(self._children)

        def _run_child(self, fn, args, kwargs):
            try:
                return fn(*args, **kwargs)
            except k.MicroThreadExit:
                raise
            except BaseException:
                self._abort()
                raise

        def _abort(self):
            self._aborted = True
            me = k.current()
            for child in self._children:
                if child is not me:
                    child.kill()

        def _join_children(self):
            children = self._children
            while self._joined < len(children):
                child = children[self._joined]
                try:
                    child.join()
                except BaseException as exc:
                    if not child.done():
                        raise  # this wait was interrupted, not the child
                    if not isinstance(exc, k.MicroThreadExit):
                        self._failures.append((child, exc))
                self._joined += 1

        def __exit__(self, exc_type, exc, tb):
            primary = exc
            try:
                if primary is not None:
                    self._abort()
                try:
                    self._join_children()
                except BaseException as interruption:
                    primary = interruption
                    self._abort()
                    _shielded(k, self._join_children)
            finally:
                self._state = "closed"
            failures = [e for _, e in self._failures]
            if primary is not None and (isinstance(primary, TimeoutError) or
                                        not isinstance(primary, Exception)):
                self._report(primary)
                if primary is exc:
                    return False
                raise primary
            fatal = next((e for e in failures
                          if not isinstance(e, Exception)), None)
            if fatal is not None:
                self._report(fatal)
                raise fatal
            if primary is not None:
                failures.insert(0, primary)
            if failures:
                raise ExceptionGroup(
                    "unhandled errors in a micro_thread Group", failures)
            return False

        def _report(self, reason):
            """Report the children's failures that *reason* replaces."""
            for child, exc in self._failures:
                if exc is not reason:
                    report_unraisable(
                        f"micro_thread {child.name!r} of a Group (its "
                        "exception was not raised: the Group raised "
                        f"{type(reason).__name__})", exc)

    return {"Group": _publish(Group), "ExceptionGroup": ExceptionGroup}


def bind(kernel):
    """Build the high-level API on *kernel*; return ``{name: object}``."""
    api = {}
    for factory in (_make_timeout, _make_locks, _make_group):
        api.update(factory(kernel))
    return api


def export(kernel, io_api):
    """Return the complete public API: the kernel's names, bind()'s, I/O.

    *io_api* maps names of :data:`IO_NAMES` to their objects; a native
    interpreter that lacks some of them yet leaves those out.
    """
    unknown = set(io_api) - set(IO_NAMES)
    if unknown:
        raise ValueError(f"not deferring I/O names: {sorted(unknown)}")
    api = {name: getattr(kernel, name) for name in KERNEL_NAMES}
    api.update(bind(kernel))
    api.update(io_api)
    return api
