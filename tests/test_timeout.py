"""timeout() scopes and the kernel deadline stack they are built on."""

import math
import time

import pytest


def test_timeout_interrupts_a_blocking_call(mt):
    def body():
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            with mt.timeout(0.05):
                mt.sleep(5)
        return time.monotonic() - start

    elapsed = mt.run(body)
    assert 0.05 <= elapsed < 5


def test_timeout_in_the_root(mt):
    pipe = mt.MicroPipe()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        with mt.timeout(0.05):
            pipe.get()
    assert 0.05 <= time.monotonic() - start < 5


def test_timeout_around_run_leaves_main_alive(mt):
    pipe = mt.MicroPipe()
    with pytest.raises(TimeoutError):
        with mt.timeout(0.02):
            mt.run(pipe.get)
    (main,) = mt.enumerate()
    assert main.blocked_on == "MicroPipe.get"
    pipe.put("late")
    assert main.join() == "late"


def test_no_timeout_when_the_call_completes_in_time(mt):
    with mt.timeout(5) as scope:
        mt.sleep(0.01)
    assert not scope.expired()
    mt.sleep(0.01)  # the deadline was popped


def test_timeout_none_means_no_timeout(mt):
    with mt.timeout(None) as scope:
        mt.sleep(0.01)
    assert scope.deadline is None
    assert not scope.expired()


def test_outer_deadline_wins_when_earlier(mt):
    with pytest.raises(TimeoutError):
        with mt.timeout(0.03) as outer:
            with mt.timeout(10) as inner:
                mt.sleep(5)
    assert outer.expired() and not inner.expired()


def test_inner_deadline_wins_when_earlier(mt):
    with mt.timeout(10) as outer:
        with pytest.raises(TimeoutError):
            with mt.timeout(0.03) as inner:
                mt.sleep(5)
        mt.sleep(0)  # the outer scope still allows blocking
    assert inner.expired() and not outer.expired()


def test_timeouts_are_level_triggered(mt):
    pipe = mt.MicroPipe()

    def body():
        results = []
        with mt.timeout(0.02):
            for _ in range(3):
                try:
                    pipe.get()
                except TimeoutError:
                    results.append("timeout")
            try:
                mt.sleep(0)
            except TimeoutError:
                results.append("sleep(0) timeout")
        mt.sleep(0)
        results.append("free again")
        return results

    expected = ["timeout"] * 3 + ["sleep(0) timeout", "free again"]
    assert mt.run(body) == expected


def test_calls_that_need_not_block_complete_after_the_deadline(mt):
    pipe = mt.MicroPipe()
    pipe.put("ready")
    finished = mt.start(lambda: "done")
    finished.join()
    with mt.timeout(0):
        assert pipe.get() == "ready"
        assert finished.join() == "done"
        pipe.put("unbounded put")
        assert pipe.get() == "unbounded put"
        with pytest.raises(TimeoutError):
            pipe.get()


def test_deadlines_are_per_micro_thread(mt):
    def slow():
        mt.sleep(0.05)
        return "not affected"

    def body():
        other = mt.start(slow)
        with pytest.raises(TimeoutError):
            with mt.timeout(0.01):
                mt.sleep(5)
        return other.join()

    assert mt.run(body) == "not affected"


def test_timeout_zero_fails_only_if_blocking_is_needed(mt):
    lock = mt.Lock()
    with mt.timeout(0):
        with lock:
            pass
    lock.acquire()
    with pytest.raises(TimeoutError):
        with mt.timeout(0):
            lock.acquire()
    lock.release()
    assert not lock.locked()


def test_timeout_scope_object(mt):
    scope = mt.timeout(1)
    assert isinstance(scope, mt.Timeout)
    assert scope.deadline is None
    before = time.monotonic()
    with scope as entered:
        assert entered is scope
        assert before + 1 <= scope.deadline <= time.monotonic() + 1
    with pytest.raises(RuntimeError):
        with scope:
            pass
    assert "Timeout" in repr(scope)


@pytest.mark.parametrize("bad, error", [
    (-1, ValueError), (-0.001, ValueError), (math.nan, ValueError),
    ("1", TypeError), ([], TypeError),
])
def test_bad_timeout_values(mt, bad, error):
    with pytest.raises(error):
        mt.timeout(bad)


def test_join_timeout(mt):
    pipe = mt.MicroPipe()
    thread = mt.start(pipe.get)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        thread.join(timeout=0.03)
    assert time.monotonic() - start >= 0.03
    assert not thread.done()
    pipe.put("x")
    assert thread.join(timeout=5) == "x"


def test_join_timeout_zero(mt):
    thread = mt.start(mt.MicroPipe().get)
    with pytest.raises(TimeoutError):
        thread.join(0)
    assert thread.state in ("created", "blocked")


def test_deadline_stack_is_lifo(mt):
    kernel = mt._kernel
    outer = kernel._push_deadline(time.monotonic() + 60)
    inner = kernel._push_deadline(time.monotonic() + 60)
    with pytest.raises(RuntimeError):
        kernel._pop_deadline(outer)
    kernel._pop_deadline(inner)
    kernel._pop_deadline(outer)
    with pytest.raises(RuntimeError):
        kernel._pop_deadline(outer)


def test_raw_deadline_in_the_past_times_out_blocking_calls(mt):
    kernel = mt._kernel
    token = kernel._push_deadline(time.monotonic() - 1)
    try:
        with pytest.raises(TimeoutError):
            mt.sleep(0)
    finally:
        kernel._pop_deadline(token)
    mt.sleep(0)


def test_shield_hides_outer_deadlines(mt):
    kernel = mt._kernel
    expired = kernel._push_deadline(time.monotonic() - 1)
    try:
        shield = kernel._push_deadline(None)
        mt.sleep(0.01)  # would raise without the shield
        inner = kernel._push_deadline(time.monotonic() - 1)
        with pytest.raises(TimeoutError):
            mt.sleep(0)
        kernel._pop_deadline(inner)
        kernel._pop_deadline(shield)
        with pytest.raises(TimeoutError):
            mt.sleep(0)
    finally:
        kernel._pop_deadline(expired)


@pytest.mark.parametrize("bad, error", [("soon", TypeError),
                                        (math.nan, ValueError)])
def test_bad_raw_deadlines(mt, bad, error):
    with pytest.raises(error):
        mt._kernel._push_deadline(bad)
