"""Micro-threads: cooperative threads of execution inside an OS thread.

Each OS thread has its own scheduler.  Micro-threads switch only inside
blocking calls (``sleep``, ``MicroPipe.get``/``put``, ``join``, the waits of
``Lock``, ``Event``, ``Semaphore`` and ``Condition``); code outside any
micro_thread (the *root*) may call them too and then runs the scheduler
until its call can complete.  ::

    import micro_thread

    def worker(pipe):
        for item in pipe:
            print(item)

    pipe = micro_thread.MicroPipe()
    with micro_thread.Group() as group:
        group.start(worker, pipe)
        pipe.put("hello")
        pipe.close()

Deferring I/O -- ``sleep_d``, ``read_d``, ``write_d``, ``close``, the
``socket`` class (``recv_d``, ``sendall_d``, ``accept_d``, ``connect_d``, ...)
with ``socketpair()``, and ``open()`` (file objects with ``read_d``,
``readline_d``, ``write_d``) -- returns or raises what the blocking call
would, but suspends only the calling micro_thread; in the root it blocks
while driving the scheduler.  Socket timeouts, ``timeout()`` scopes and
``kill()`` end such a wait; an fd closed meanwhile fails it with EBADF.
Where a C frame keeps a micro_thread from suspending, natively the call
still completes but *pins* it (``pin_count()``, ``set_pin_hook()``).

Two implementations provide the same API: ``native`` (the ``_micro_thread``
module of a patched interpreter) and ``shim`` (pure Python, any CPython
3.10+).  This package re-exports the native one when the interpreter has it,
else the shim; ``IMPLEMENTATION`` tells which.  The environment variable
``PYTHON_MICRO_THREAD=shim`` forces the shim, ``=native`` requires the
native implementation.  Both are importable as ``micro_thread.shim`` and
``micro_thread.native``.
"""

import os as _os
from importlib.util import find_spec as _find_spec


def _choose_implementation():
    choice = _os.environ.get("PYTHON_MICRO_THREAD", "").strip().lower()
    if choice not in ("", "native", "shim"):
        raise ImportError("PYTHON_MICRO_THREAD must be 'native' or 'shim', "
                          f"not {choice!r}", name=__name__)
    if choice:
        return choice
    return "shim" if _find_spec("_micro_thread") is None else "native"


#: Which implementation this package re-exports: "native" or "shim".
IMPLEMENTATION = _choose_implementation()

if IMPLEMENTATION == "native":
    from . import native as _implementation
else:
    from . import shim as _implementation

globals().update({name: getattr(_implementation, name)
                  for name in _implementation.__all__})
__all__ = [*_implementation.__all__, "IMPLEMENTATION"]
del _choose_implementation
