"""Shared fixtures: every behavioural test runs on every implementation.

The ``mt`` fixture is the public API module of one implementation:
``micro_thread.shim`` always, ``micro_thread.native`` when the interpreter
has the ``_micro_thread`` kernel.  ``micro_thread`` is imported from the
repository's ``Lib/``, even on a patched interpreter that ships a copy: that
copy is synced by ``make`` and may be older than the working tree.
"""

import faulthandler
import importlib
import os
import signal
import sys
import threading

import pytest
from hypothesis import HealthCheck, settings

REPO_LIB = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "Lib")
if REPO_LIB not in sys.path:
    sys.path.insert(0, REPO_LIB)


def _available_implementations():
    found = []
    for name in ("shim", "native"):
        try:
            found.append(importlib.import_module(f"micro_thread.{name}"))
        except ImportError:
            if name == "shim":
                raise
    return found


IMPLEMENTATIONS = _available_implementations()

#: A test running longer than this is hung: interrupt it with SIGINT (and,
#: if that does not help within HANG_GRACE more seconds, dump every thread's
#: stack and exit) rather than let the run sit until CI's time limit.
HANG_TIMEOUT = 120
HANG_GRACE = 30

settings.register_profile(
    "micro_thread", max_examples=60, deadline=None, derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture,
                           HealthCheck.too_slow])
settings.load_profile("micro_thread")


@pytest.fixture(scope="session", params=IMPLEMENTATIONS,
                ids=[m.__name__.rpartition(".")[2] for m in IMPLEMENTATIONS])
def mt(request):
    """The public micro_thread API of one implementation."""
    return request.param


def _interrupt_main_thread():
    if hasattr(signal, "pthread_kill"):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:
        import _thread
        _thread.interrupt_main()


@pytest.fixture(autouse=True)
def _fail_fast_on_hangs():
    """Turn a hung test into an interrupted session instead of a stuck run."""
    watchdog = threading.Timer(HANG_TIMEOUT, _interrupt_main_thread)
    watchdog.daemon = True
    watchdog.start()
    faulthandler.dump_traceback_later(HANG_TIMEOUT + HANG_GRACE, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    watchdog.cancel()


@pytest.fixture(autouse=True)
def _kill_leftover_micro_threads():
    """Kill what a test left behind so that the next test starts clean."""
    yield
    for impl in IMPLEMENTATIONS:
        leftovers = impl.enumerate()
        for thread in leftovers:
            thread.kill()
        for thread in leftovers:
            try:
                thread.join(timeout=5)
            except BaseException:
                pass


class Resources:
    """Pipes, sockets and files a test opens; closed after it.

    A pipe fd is closed only if it still is the pipe created here (a test
    may close it and the number may then be reused by someone else).
    """

    def __init__(self):
        self._fds = []        # (fd, (st_dev, st_ino))
        self._objects = []    # sockets and file objects

    def pipe(self):
        """Return a new ``os.pipe()`` (read fd, write fd)."""
        fds = os.pipe()
        for fd in fds:
            self.fd(fd)
        return fds

    def fd(self, fd):
        """Close *fd* after the test (if it is still the same file)."""
        st = os.fstat(fd)
        self._fds.append((fd, (st.st_dev, st.st_ino)))
        return fd

    def add(self, obj):
        """Close the socket or file *obj* after the test; return it."""
        self._objects.append(obj)
        return obj

    def close_all(self):
        for obj in reversed(self._objects):
            try:
                obj.close()
            except Exception:
                pass
        for fd, key in self._fds:
            try:
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) == key:
                    os.close(fd)
            except OSError:
                pass


@pytest.fixture
def res():
    """A :class:`Resources`: what the test opens through it gets closed."""
    resources = Resources()
    yield resources
    resources.close_all()


#: A test of deferring I/O that blocks its OS thread (instead of suspending a
#: micro_thread) fails after this many seconds instead of hanging.
OS_BLOCK_TIMEOUT = 10


class OSThreadBlocked(AssertionError):
    """The OS thread stayed blocked: a deferring call did not defer."""


@pytest.fixture
def os_block_guard():
    """Fail with OSThreadBlocked if the test runs OS_BLOCK_TIMEOUT seconds.

    SIGALRM interrupts a blocking system call (a deferring call that blocked
    the OS thread while the micro_thread that would unblock it cannot run),
    so such a bug fails quickly rather than at HANG_TIMEOUT.
    """
    if (not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield
        return

    def alarm(signum, frame):
        raise OSThreadBlocked(f"the test ran {OS_BLOCK_TIMEOUT} s: a "
                              "deferring call blocked the OS thread?")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, OS_BLOCK_TIMEOUT)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
