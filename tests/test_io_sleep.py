"""sleep_d(): the deferring time.sleep."""

import math
import time

import pytest

from helpers import require

pytestmark = pytest.mark.usefixtures("os_block_guard")


def test_sleep_d_returns_none_after_the_time(mt):
    require(mt, "sleep_d")

    def body():
        start = time.monotonic()
        result = mt.sleep_d(0.05)
        return result, time.monotonic() - start

    result, elapsed = mt.run(body)
    assert result is None
    assert 0.05 <= elapsed < 1


def test_sleep_d_suspends_only_the_caller(mt):
    require(mt, "sleep_d")
    events = []

    def sleeper():
        events.append("sleeper sleeps")
        mt.sleep_d(0.05)
        events.append("sleeper woke")

    def ticker():
        for i in range(3):
            events.append(f"tick {i}")
            mt.sleep(0)

    def main():
        threads = [mt.start(sleeper), mt.start(ticker)]
        for thread in threads:
            thread.join()

    mt.run(main)
    assert events == ["sleeper sleeps", "tick 0", "tick 1", "tick 2",
                      "sleeper woke"]


def test_sleep_d_in_the_root_drives_the_scheduler(mt):
    require(mt, "sleep_d")
    ran = []
    worker = mt.start(ran.append, "worker")
    start = time.monotonic()
    assert mt.sleep_d(0.03) is None
    assert time.monotonic() - start >= 0.03
    assert ran == ["worker"]
    assert worker.done()


def test_sleepers_wake_in_deadline_order(mt):
    require(mt, "sleep_d")
    woke = []

    def sleeper(n):
        mt.sleep_d(0.01 * n)
        woke.append(n)

    def main():
        threads = [mt.start(sleeper, n) for n in (4, 1, 3, 2)]
        for thread in threads:
            thread.join()

    mt.run(main)
    assert woke == [1, 2, 3, 4]


def test_sleep_d_zero_yields(mt):
    require(mt, "sleep_d")
    order = []

    def player(name):
        for i in range(3):
            order.append((name, i))
            assert mt.sleep_d(0) is None

    def main():
        a, b = mt.start(player, "a"), mt.start(player, "b")
        a.join()
        b.join()

    mt.run(main)
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2),
                     ("b", 2)]


def test_sleep_d_accepts_what_time_sleep_accepts(mt):
    require(mt, "sleep_d")
    for seconds in (0, 0.0, 0.001, False, 0.0005):
        assert mt.sleep_d(seconds) is None


@pytest.mark.parametrize("bad", [-1, -0.5, math.nan, "1", None, [1]])
def test_sleep_d_rejects_what_time_sleep_rejects(mt, bad):
    require(mt, "sleep_d")
    with pytest.raises(Exception) as expected:
        time.sleep(bad)
    with pytest.raises(expected.type) as got:
        mt.sleep_d(bad)
    assert str(got.value) == str(expected.value)


def test_many_micro_threads_sleep_at_once(mt):
    require(mt, "sleep_d")

    def main():
        start = time.monotonic()
        with mt.Group() as group:
            for _ in range(50):
                group.start(mt.sleep_d, 0.05)
        return time.monotonic() - start

    assert 0.05 <= mt.run(main) < 1
