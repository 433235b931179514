"""The micro_thread API on the pure-Python shim kernel.

Works on any CPython 3.10+: each micro_thread runs on a helper OS thread and
a baton makes them strictly cooperative.  See :mod:`micro_thread._shim` for
the kernel and its "Differences from the native implementation".
"""

from . import _shim as _kernel
from ._layer import export as _export

_api = _export(_kernel)
globals().update(_api)
__all__ = sorted(_api)
del _api, _export
