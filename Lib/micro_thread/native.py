"""The micro_thread API on the native ``_micro_thread`` kernel.

Only available on an interpreter built with the micro-threads patch; on a
stock CPython importing this module raises :class:`ImportError` (use
:mod:`micro_thread.shim` there).
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

# At exit, micro-threads left in the main OS thread are killed so that their
# finally blocks run (for at most a second).
_atexit.register(_kernel._shutdown)

_api = _export(_kernel)
globals().update(_api)
__all__ = sorted(_api)
del _api, _export, _atexit
