"""The micro_thread API on the native ``_micro_thread`` kernel.

Only available on an interpreter built with the micro-threads patch; on a
stock CPython importing this module raises :class:`ImportError` (use
:mod:`micro_thread.shim` there).

The deferring I/O API is the interpreter's own: ``sleep_d`` is
``time.sleep_d``, ``read_d``/``write_d``/``close`` are ``os.read_d``/
``os.write_d``/``os.close``, ``socket`` and ``socketpair`` are
``socket.socket`` and ``socket.socketpair`` (whose sockets have the ``*_d``
methods), ``open`` is ``io.open`` (whose file objects have ``read_d``,
``readline_d`` and ``write_d``), and ``pin_count``/``set_pin_hook`` come from
``_micro_thread``.  Functions the interpreter does not have (yet) are left
out of this module.
"""

try:
    import _micro_thread as _kernel
except ModuleNotFoundError as exc:
    if exc.name != "_micro_thread":
        raise
    raise ImportError(
        "micro_thread.native needs an interpreter built with micro-thread "
        "support (it has no _micro_thread module); use micro_thread.shim on "
        "a stock CPython", name=__name__) from None

import atexit as _atexit

from ._layer import export as _export


def _io_api():
    """Map the deferring I/O names to the interpreter's objects."""
    import io
    import os
    import socket
    import time

    api = {"close": os.close, "open": io.open, "socket": socket.socket,
           "socketpair": socket.socketpair}
    for name, owner in (("sleep_d", time), ("read_d", os), ("write_d", os),
                        ("pin_count", _kernel), ("set_pin_hook", _kernel)):
        if hasattr(owner, name):
            api[name] = getattr(owner, name)
    return api


# At exit, micro-threads left in the main OS thread are killed so that their
# finally blocks run (for at most a second).
_atexit.register(_kernel._shutdown)

_api = _export(_kernel, _io_api())
globals().update(_api)
__all__ = sorted(_api)
del _api, _export, _atexit, _io_api
