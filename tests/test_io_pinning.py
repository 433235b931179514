"""Pinning: a deferring call that cannot suspend its micro_thread.

Where a C frame lies between the call and the micro_thread's start
(``sorted(key=...)``, ``map()``), the native implementation cannot suspend
the micro_thread: the call completes anyway, running the scheduler nested,
and is counted by ``pin_count()`` and reported to the ``set_pin_hook()``
hook.  The shim never pins.
"""

import os
import threading
import traceback

import pytest

from helpers import is_native, require

pytestmark = pytest.mark.usefixtures("os_block_guard")


@pytest.fixture
def native(mt):
    """Skip on the shim, which never pins."""
    if not is_native(mt):
        pytest.skip("the shim never pins: each micro_thread has an OS "
                    "thread of its own and can wait anywhere")
    require(mt, "pin_count", "set_pin_hook")
    yield mt
    mt.set_pin_hook(None)


def _writer(mt, fd, data):
    def write():
        mt.sleep(0.005)
        os.write(fd, data)
    return mt.start(write)


def test_a_pinned_call_completes_and_is_counted(native):
    mt = native
    require(mt, "sleep_d")

    def key(x):
        mt.sleep_d(0.001)
        return x

    def body():
        before = mt.pin_count()
        result = sorted([3, 1, 2], key=key)
        return result, mt.pin_count() - before

    assert mt.run(body) == ([1, 2, 3], 3)


def test_a_pinned_call_lets_the_others_run(native, res):
    mt = native
    require(mt, "read_d")
    r, w = res.pipe()

    def body():
        before = mt.pin_count()
        writer = _writer(mt, w, b"nested")
        data = list(map(lambda fd: mt.read_d(fd, 100), [r]))
        assert writer.done()
        return data, mt.pin_count() - before

    assert mt.run(body) == ([b"nested"], 1)


def test_map_calling_a_deferring_function_directly_pins(native, res):
    mt = native
    require(mt, "read_d")
    r, w = res.pipe()

    def body():
        before = mt.pin_count()
        _writer(mt, w, b"direct")
        data = list(map(mt.read_d, [r], [100]))
        return data, mt.pin_count() - before

    assert mt.run(body) == ([b"direct"], 1)


def test_calls_that_suspend_are_not_counted(native, res):
    mt = native
    require(mt, "read_d", "sleep_d")
    r, w = res.pipe()

    def body():
        before = mt.pin_count()
        mt.sleep_d(0.001)
        _writer(mt, w, b"plain")
        assert mt.read_d(r, 100) == b"plain"
        return mt.pin_count() - before

    assert mt.run(body) == 0


def test_calls_in_the_root_are_not_counted(native):
    mt = native
    require(mt, "sleep_d")
    before = mt.pin_count()
    mt.sleep_d(0.001)
    assert sorted([2, 1], key=lambda x: (mt.sleep_d(0.001), x)[1]) == [1, 2]
    assert mt.pin_count() == before


def test_a_pinned_call_that_does_not_wait_is_not_counted(native, res):
    mt = native
    require(mt, "read_d")
    r, w = res.pipe()
    os.write(w, b"ready")

    def body():
        before = mt.pin_count()
        data = list(map(mt.read_d, [r], [100]))
        return data, mt.pin_count() - before

    assert mt.run(body) == ([b"ready"], 0)


def test_the_pin_hook_runs_on_the_pinned_stack(native):
    mt = native
    require(mt, "sleep_d")
    calls = []

    def hook(microthread, what):
        names = [frame.name for frame in traceback.extract_stack()]
        calls.append((microthread, what, names))

    def pinned_key(x):
        mt.sleep_d(0.001)
        return x

    def body():
        sorted([1], key=pinned_key)
        return mt.current()

    mt.set_pin_hook(hook)
    me = mt.run(body)
    ((microthread, what, names),) = calls
    assert microthread is me
    assert isinstance(what, str) and what
    assert names.index("body") < names.index("pinned_key") < \
        names.index("hook")


def test_set_pin_hook_none_removes_the_hook(native):
    mt = native
    require(mt, "sleep_d")
    calls = []
    mt.set_pin_hook(lambda microthread, what: calls.append(what))
    mt.set_pin_hook(None)
    mt.run(sorted, [1], key=lambda x: (mt.sleep_d(0.001), x)[1])
    assert calls == []


def test_set_pin_hook_rejects_non_callables(mt):
    require(mt, "set_pin_hook")
    with pytest.raises(TypeError):
        mt.set_pin_hook(42)
    mt.set_pin_hook(None)


def test_a_pinned_call_honours_timeout_scopes(native, res):
    mt = native
    require(mt, "read_d")
    r, w = res.pipe()

    def body():
        with pytest.raises(TimeoutError):
            with mt.timeout(0.02):
                list(map(mt.read_d, [r], [100]))
        os.write(w, b"still there")
        return mt.read_d(r, 100)

    assert mt.run(body) == b"still there"


def test_pin_count_is_per_os_thread(native):
    mt = native
    require(mt, "sleep_d")

    def pin_once():
        before = mt.pin_count()
        mt.run(sorted, [1], key=lambda x: (mt.sleep_d(0.001), x)[1])
        return mt.pin_count() - before

    before = mt.pin_count()
    counts = []
    thread = threading.Thread(target=lambda: counts.append(pin_once()))
    thread.start()
    thread.join(10)
    assert counts == [1]
    assert mt.pin_count() == before


def test_the_shim_never_pins(mt):
    if is_native(mt):
        pytest.skip("natively this pins: see the other tests")
    calls = []
    mt.set_pin_hook(lambda microthread, what: calls.append(what))
    try:
        result = mt.run(sorted, [2, 1],
                        key=lambda x: (mt.sleep_d(0.001), x)[1])
    finally:
        mt.set_pin_hook(None)
    assert result == [1, 2]
    assert mt.pin_count() == 0
    assert calls == []
