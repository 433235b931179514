"""Wrong types, wrong values and wrong places raise clear errors."""

import math

import pytest


@pytest.mark.parametrize("bad", [None, 42, "print"])
def test_start_and_run_need_a_callable(mt, bad):
    with pytest.raises(TypeError):
        mt.start(bad)
    with pytest.raises(TypeError):
        mt.run(bad)
    assert mt.enumerate() == []


@pytest.mark.parametrize("bad, error", [
    (-1, ValueError), (-0.5, ValueError), (math.nan, ValueError),
    ("1", TypeError), (None, TypeError), ([1], TypeError),
])
def test_sleep_rejects_bad_durations(mt, bad, error):
    with pytest.raises(error):
        mt.sleep(bad)


@pytest.mark.parametrize("bad, error", [
    (-1, ValueError), (math.nan, ValueError), ("1", TypeError),
])
def test_join_rejects_bad_timeouts(mt, bad, error):
    thread = mt.start(lambda: None)
    with pytest.raises(error):
        thread.join(bad)
    assert thread.join() is None


def test_joining_yourself_fails(mt):
    def body():
        with pytest.raises(RuntimeError):
            mt.current().join()
        return "ok"

    assert mt.run(body) == "ok"


def test_run_inside_a_micro_thread_fails(mt):
    def body():
        with pytest.raises(RuntimeError):
            mt.run(print)
        return "ok"

    assert mt.run(body) == "ok"


def test_waiter_outcomes(mt):
    waiter = mt._kernel._Waiter()
    assert waiter.fire("first") is True
    assert waiter.fire("second") is False
    assert waiter.fail(ValueError()) is False
    assert not waiter.abandoned
    assert waiter.wait() == "first"  # already fired: returns at once
    with pytest.raises(RuntimeError):
        waiter.wait()


def test_waiter_fail(mt):
    waiter = mt._kernel._Waiter()
    error = ValueError("failed")

    def body():
        with pytest.raises(ValueError) as info:
            waiter.wait("custom wait")
        return info.value

    thread = mt.start(body)
    mt.sleep(0)
    assert thread.blocked_on == "custom wait"
    assert waiter.fail(error) is True
    assert thread.join() is error
    with pytest.raises(TypeError):
        mt._kernel._Waiter().fail("not an exception")


def test_waiter_is_abandoned_by_kill_and_timeout(mt):
    killed = mt._kernel._Waiter()
    thread = mt.start(killed.wait)
    mt.sleep(0)
    thread.kill()
    assert killed.abandoned
    assert killed.fire("too late") is False
    with pytest.raises(mt.MicroThreadExit):
        thread.join()

    timed_out = mt._kernel._Waiter()
    with pytest.raises(TimeoutError):
        with mt.timeout(0.01):
            timed_out.wait()
    assert timed_out.abandoned
    assert timed_out.fail(ValueError()) is False


def test_fire_does_not_switch(mt):
    waiter = mt._kernel._Waiter()
    log = []

    def body():
        log.append(waiter.wait())

    thread = mt.start(body)
    mt.sleep(0)
    assert waiter.fire("v") is True
    assert log == []
    thread.join()
    assert log == ["v"]
