"""Shared fixtures: every behavioural test runs on every implementation.

The ``mt`` fixture is the public API module of one implementation:
``micro_thread.shim`` always, ``micro_thread.native`` when the interpreter
has the ``_micro_thread`` kernel.  The repository's ``Lib/`` is put on
``sys.path`` only when ``micro_thread`` is not importable already (a patched
interpreter ships it).
"""

import importlib
import importlib.util
import os
import sys

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
