"""Small helpers shared by the test modules."""

import importlib
import io
import os
import socket
import threading

import pytest


def run_in_os_thread(fn, *args):
    """Run ``fn(*args)`` in a new OS thread; return its result or raise."""
    outcome = {}

    def body():
        try:
            outcome["result"] = fn(*args)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "OS thread did not finish"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


# -- the deferring I/O API, which lands in the interpreter piece by piece ----

#: Functions of the deferring I/O API and where the interpreter has them.
NATIVE_IO_FUNCTIONS = {
    "sleep_d": ("time", "sleep_d"),
    "read_d": ("os", "read_d"),
    "write_d": ("os", "write_d"),
    "pin_count": ("_micro_thread", "pin_count"),
    "set_pin_hook": ("_micro_thread", "set_pin_hook"),
}
SOCKET_D_METHODS = ("recv_d", "recv_into_d", "recvfrom_d", "send_d",
                    "sendall_d", "sendto_d", "accept_d", "connect_d")
FILE_CLASSES = ("FileIO", "BufferedReader", "BufferedWriter",
                "BufferedRandom", "TextIOWrapper")
FILE_D_METHODS = ("read_d", "readline_d", "write_d")
#: The deferring methods of each io class: those of what it can do (a
#: BufferedReader has no write_d, a BufferedWriter no read_d).
FILE_D_METHODS_OF = {
    "FileIO": FILE_D_METHODS,
    "BufferedReader": ("read_d", "readline_d"),
    "BufferedWriter": ("write_d",),
    "BufferedRandom": FILE_D_METHODS,
    "TextIOWrapper": FILE_D_METHODS,
}


def is_native(mt):
    """True if *mt* is the native implementation."""
    return mt.__name__ == "micro_thread.native"


def _native_has(feature):
    """Whether the interpreter has *feature* (see :func:`require`)."""
    owner_name, _, attr = feature.rpartition(".")
    if not owner_name:
        module_name, attr = NATIVE_IO_FUNCTIONS[feature]
        return hasattr(importlib.import_module(module_name), attr)
    if owner_name == "socket":
        owner = socket.socket
    else:
        owner = getattr(io, owner_name)
    return hasattr(owner, attr)


def _native_name(feature):
    """The interpreter's name of *feature*: ``os.read_d``, ``io.FileIO...``.
    """
    owner_name, _, attr = feature.rpartition(".")
    if not owner_name:
        return ".".join(NATIVE_IO_FUNCTIONS[feature])
    if owner_name == "socket":
        return f"socket.socket.{attr}"
    return f"io.{feature}"


def native_io_missing():
    """The deferring I/O features the interpreter lacks, as dotted names."""
    features = [*NATIVE_IO_FUNCTIONS,
                *(f"socket.{m}" for m in SOCKET_D_METHODS),
                *(f"{c}.{m}" for c in FILE_CLASSES for m in FILE_D_METHODS_OF[c])]
    return [_native_name(f) for f in features if not _native_has(f)]


def require(mt, *features):
    """Skip a native run whose deferring calls the interpreter lacks yet.

    *features* are names of :data:`NATIVE_IO_FUNCTIONS` (``"read_d"``),
    ``"socket.<method>"`` or ``"<io class>.<method>"``
    (``"BufferedReader.read_d"``).  The shim must have them all, so for it
    nothing is skipped (a missing one fails the test).
    """
    if not is_native(mt):
        return
    missing = [_native_name(f) for f in features if not _native_has(f)]
    if missing:
        pytest.skip("the interpreter has no " + ", ".join(missing) +
                    " yet (issue 4)")


def known_native_bug(mt, request, reason):
    """Mark a native run as an expected failure: the C does not do it yet.

    Strict, so that the run fails once the C is fixed and the marker has to
    go.  Use only for a reported deviation from the specified behaviour.
    """
    if is_native(mt):
        request.applymarker(pytest.mark.xfail(
            reason=f"native: {reason} (reported; remove once fixed)",
            strict=True))


def fill(fd):
    """Write to the pipe or socket *fd* until a write would block (its
    blocking mode is restored)."""
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while True:
            os.write(fd, b"f" * 65536)
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, blocking)
