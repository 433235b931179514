"""The micro_thread API on the pure-Python shim kernel.

Works on any CPython 3.10+: each micro_thread runs on a helper OS thread and
a baton makes them strictly cooperative.  See :mod:`micro_thread._shim` for
the kernel and its "Differences from the native implementation", and
:mod:`micro_thread._shim_io` for the deferring I/O calls.
"""

from . import _shim as _kernel
from . import _shim_io
from ._layer import IO_NAMES as _IO_NAMES
from ._layer import export as _export

_api = _export(_kernel, {name: getattr(_shim_io, name) for name in _IO_NAMES})
globals().update(_api)
__all__ = sorted(_api)
del _api, _export, _IO_NAMES
