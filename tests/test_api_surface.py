"""Both implementations export the same, documented public API."""

import importlib.util
import inspect
import os
import subprocess
import sys

import pytest

import micro_thread
import micro_thread.shim
from conftest import IMPLEMENTATIONS
from helpers import (FILE_CLASSES, FILE_D_METHODS, FILE_D_METHODS_OF,
                     NATIVE_IO_FUNCTIONS, SOCKET_D_METHODS, is_native,
                     native_io_missing)

IO_NAMES = {
    "sleep_d", "read_d", "write_d", "close", "socket", "socketpair", "open",
    "pin_count", "set_pin_hook",
}
PUBLIC_NAMES = {
    # kernel
    "start", "run", "current", "enumerate", "sleep", "MicroThread",
    "MicroPipe", "MicroThreadExit", "CDeferred", "PipeClosedError",
    "DeadlockError",
    # layer
    "Group", "ExceptionGroup", "timeout", "Timeout", "Lock", "Event",
    "Semaphore", "BoundedSemaphore", "Condition",
    # deferring I/O
    *IO_NAMES,
}
KERNEL_PRIVATE_NAMES = ("_Waiter", "_push_deadline", "_pop_deadline",
                        "_current_task")
LAYER_CLASSES = ("Group", "Timeout", "Lock", "Event", "Semaphore",
                 "BoundedSemaphore", "Condition")
HAS_NATIVE = importlib.util.find_spec("_micro_thread") is not None


def _missing_functions(mt):
    """I/O functions the native module leaves out: the interpreter lacks
    them yet."""
    if not is_native(mt):
        return set()
    missing = set(native_io_missing())
    return {name for name, place in NATIVE_IO_FUNCTIONS.items()
            if ".".join(place) in missing}


def test_public_names(mt):
    expected = PUBLIC_NAMES - _missing_functions(mt)
    assert set(mt.__all__) == expected
    assert len(mt.__all__) == len(expected)
    for name in expected:
        assert hasattr(mt, name), name


def test_implementations_export_the_same_names():
    missing = set().union(*map(_missing_functions, IMPLEMENTATIONS))
    exported = {impl.__name__: sorted(set(impl.__all__) - missing)
                for impl in IMPLEMENTATIONS}
    assert len({tuple(names) for names in exported.values()}) == 1, exported


def test_deferring_io_is_complete(mt):
    if is_native(mt) and native_io_missing():
        pytest.skip("the interpreter has no " + ", ".join(native_io_missing())
                    + " yet (issue 4)")
    assert IO_NAMES <= set(mt.__all__)
    for method in SOCKET_D_METHODS:
        assert callable(getattr(mt.socket, method)), method
    with mt.open(os.devnull, "r+b") as f:
        assert all(hasattr(f, m) for m in FILE_D_METHODS)


@pytest.mark.skipif(not HAS_NATIVE, reason="no _micro_thread kernel")
def test_native_io_names_are_the_interpreters_own():
    import io
    import socket
    import time

    import micro_thread.native as native
    assert native.close is os.close
    assert native.socket is socket.socket
    assert native.socketpair is socket.socketpair
    assert native.open is io.open
    owners = {"time": time, "os": os, "_micro_thread": native._kernel}
    for name, (owner, attr) in NATIVE_IO_FUNCTIONS.items():
        if hasattr(owners[owner], attr):
            assert getattr(native, name) is getattr(owners[owner], attr)


def test_shim_io_classes():
    import io
    import socket

    shim = micro_thread.shim
    assert issubclass(shim.socket, socket.socket)
    a, b = shim.socketpair()
    with a, b:
        assert type(a) is type(b) is shim.socket
    with shim.open(os.devnull, "rb", buffering=0) as f:
        assert isinstance(f, io.FileIO)
    with shim.open(os.devnull, "rb") as f:
        assert isinstance(f, io.BufferedReader)
    with shim.open(os.devnull, "wb") as f:
        assert isinstance(f, io.BufferedWriter)
    with shim.open(os.devnull, "r+b") as f:
        assert isinstance(f, io.BufferedRandom)
    with shim.open(os.devnull, encoding="ascii") as f:
        assert isinstance(f, io.TextIOWrapper)
        assert f.mode == "r"


def test_kernel_provides_the_private_contract(mt):
    for name in KERNEL_PRIVATE_NAMES:
        assert hasattr(mt._kernel, name), name


def test_every_public_name_is_documented(mt):
    for name in PUBLIC_NAMES - _missing_functions(mt):
        doc = inspect.getdoc(getattr(mt, name))
        assert doc and doc.strip(), f"{mt.__name__}.{name} has no docstring"


def test_public_methods_are_documented(mt):
    for name in ("MicroThread", "MicroPipe", *LAYER_CLASSES):
        cls = getattr(mt, name)
        for attr_name, attr in vars(cls).items():
            if attr_name.startswith("_") or not callable(attr):
                continue
            assert inspect.getdoc(attr), f"{name}.{attr_name} undocumented"


def test_deferring_methods_are_documented(mt):
    import io
    classes = [(mt.socket, SOCKET_D_METHODS)]
    with mt.open(os.devnull, "r+b") as f:
        classes += [(type(f), FILE_D_METHODS), (type(f.raw), FILE_D_METHODS)]
    classes += [(getattr(io, name), FILE_D_METHODS_OF[name])
                for name in FILE_CLASSES if is_native(mt)]
    missing = native_io_missing() if is_native(mt) else []
    for cls, methods in classes:
        for method in methods:
            if f"io.{cls.__name__}.{method}" in missing:
                continue  # not in the interpreter yet
            attr = getattr(cls, method)
            assert inspect.getdoc(attr), f"{cls.__name__}.{method}"


@pytest.mark.parametrize("name", LAYER_CLASSES)
def test_layer_classes_have_public_module_and_qualname(mt, name):
    cls = getattr(mt, name)
    assert cls.__module__ == "micro_thread"
    assert cls.__qualname__ == name
    assert cls.__name__ == name


def test_layer_method_qualnames_are_clean(mt):
    assert mt.Lock.acquire.__qualname__ == "Lock.acquire"
    assert mt.Condition.wait.__qualname__ == "Condition.wait"
    assert mt.timeout.__qualname__ == "timeout"


def test_exception_hierarchy(mt):
    assert issubclass(mt.MicroThreadExit, BaseException)
    assert not issubclass(mt.MicroThreadExit, Exception)
    assert issubclass(mt.CDeferred, NotImplementedError)
    assert issubclass(mt.PipeClosedError, Exception)
    assert issubclass(mt.DeadlockError, RuntimeError)
    if sys.version_info >= (3, 11):
        assert mt.ExceptionGroup is ExceptionGroup
    else:
        assert issubclass(mt.ExceptionGroup, Exception)


def test_package_reexports_the_selected_implementation():
    assert micro_thread.IMPLEMENTATION in ("native", "shim")
    impl = getattr(micro_thread, micro_thread.IMPLEMENTATION)
    assert micro_thread.__all__ == [*impl.__all__, "IMPLEMENTATION"]
    for name in impl.__all__:
        assert getattr(micro_thread, name) is getattr(impl, name), name


def test_default_implementation_is_native_when_available():
    expected = "native" if HAS_NATIVE else "shim"
    if os.environ.get("PYTHON_MICRO_THREAD"):
        pytest.skip("PYTHON_MICRO_THREAD is set")
    assert micro_thread.IMPLEMENTATION == expected


def _import_in_subprocess(env_value):
    env = dict(os.environ, PYTHON_MICRO_THREAD=env_value)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(micro_thread.__file__)),
         env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c",
         "import micro_thread; print(micro_thread.IMPLEMENTATION)"],
        env=env, capture_output=True, text=True, timeout=60)


def test_environment_forces_the_shim():
    proc = _import_in_subprocess("shim")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "shim"


def test_environment_requires_native():
    proc = _import_in_subprocess("native")
    if HAS_NATIVE:
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "native"
    else:
        assert proc.returncode != 0
        assert "ImportError" in proc.stderr
        assert "_micro_thread" in proc.stderr


def test_environment_rejects_unknown_values():
    proc = _import_in_subprocess("greenlet")
    assert proc.returncode != 0
    assert "PYTHON_MICRO_THREAD" in proc.stderr


@pytest.mark.skipif(HAS_NATIVE, reason="the interpreter has _micro_thread")
def test_native_module_explains_why_it_is_missing():
    with pytest.raises(ImportError, match="micro_thread.shim"):
        import micro_thread.native  # noqa: F401
