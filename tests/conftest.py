"""Shared fixtures: every behavioural test runs on every implementation.

The ``mt`` fixture is the public API module of one implementation:
``micro_thread.shim`` always, ``micro_thread.native`` when the interpreter
has the ``_micro_thread`` kernel.  The repository's ``Lib/`` is put on
``sys.path`` only when ``micro_thread`` is not importable already (a patched
interpreter ships it).
"""

import faulthandler
import importlib
import importlib.util
import os
import signal
import sys
import threading

import pytest
from hypothesis import HealthCheck, settings

if importlib.util.find_spec("micro_thread") is None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "Lib"))


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
