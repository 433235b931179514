"""Lock, Event, Semaphore, BoundedSemaphore and Condition."""

import pytest


def _start_all(mt, fn, args):
    threads = [mt.start(fn, arg) for arg in args]
    mt.sleep(0)
    return threads


# -- Lock -------------------------------------------------------------------

def test_lock_basics(mt):
    lock = mt.Lock()
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    assert lock.acquire(blocking=False) is False
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()
    with lock as value:
        assert value is True
        assert lock.locked()
    assert not lock.locked()
    assert "unlocked" in repr(lock)


def test_lock_is_handed_to_waiters_in_fifo_order(mt):
    lock = mt.Lock()
    order = []

    def worker(name):
        with lock:
            order.append(name)
            mt.sleep(0)

    lock.acquire()
    threads = _start_all(mt, worker, "abc")
    assert [t.blocked_on for t in threads] == ["Lock.acquire"] * 3
    lock.release()
    for thread in threads:
        thread.join()
    assert order == ["a", "b", "c"]
    assert not lock.locked()


def test_lock_mutual_exclusion(mt):
    lock = mt.Lock()
    inside = []
    overlaps = []

    def worker():
        for _ in range(5):
            with lock:
                if inside:
                    overlaps.append(True)
                inside.append(1)
                mt.sleep(0)
                inside.pop()
            mt.sleep(0)

    threads = [mt.start(worker) for _ in range(4)]
    for thread in threads:
        thread.join()
    assert overlaps == []


def test_lock_acquire_timeout(mt):
    lock = mt.Lock()
    lock.acquire()

    def try_acquire():
        return lock.acquire(timeout=0.02)

    assert mt.run(try_acquire) is False
    assert lock.acquire(timeout=0) is False
    lock.release()
    assert lock.acquire(timeout=0.02) is True
    lock.release()


def test_lock_timed_out_waiter_does_not_take_the_release(mt):
    lock = mt.Lock()
    lock.acquire()
    quitter = mt.start(lock.acquire, True, 0.01)
    stayer = mt.start(lock.acquire)
    assert quitter.join() is False
    lock.release()
    assert stayer.join() is True
    assert lock.locked()


@pytest.mark.parametrize("kwargs, error", [
    ({"blocking": False, "timeout": 1}, ValueError),
    ({"timeout": -2}, ValueError),
    ({"timeout": "1"}, TypeError),
])
def test_lock_acquire_bad_arguments(mt, kwargs, error):
    with pytest.raises(error):
        mt.Lock().acquire(**kwargs)


# -- Event ------------------------------------------------------------------

def test_event_set_wakes_every_waiter(mt):
    event = mt.Event()
    threads = _start_all(mt, lambda _: event.wait(), range(3))
    assert all(t.blocked_on == "Event.wait" for t in threads)
    assert not event.is_set()
    event.set()
    assert event.is_set()
    assert [t.join() for t in threads] == [True, True, True]
    assert event.wait() is True
    event.clear()
    assert not event.is_set()
    assert "unset" in repr(event)


def test_event_wait_timeout(mt):
    event = mt.Event()
    assert event.wait(0.02) is False
    assert event.wait(0) is False
    assert event.wait(-1) is False  # negative means "do not wait"
    event.set()
    assert event.wait(0) is True


def test_event_wait_in_the_root_is_set_by_a_micro_thread(mt):
    event = mt.Event()

    def setter():
        mt.sleep(0.01)
        event.set()

    mt.start(setter)
    assert event.wait(5) is True


def test_event_bad_timeout(mt):
    with pytest.raises(TypeError):
        mt.Event().wait("soon")


# -- Semaphore --------------------------------------------------------------

def test_semaphore_counts(mt):
    semaphore = mt.Semaphore(2)
    assert semaphore.acquire()
    assert semaphore.acquire()
    assert semaphore.acquire(blocking=False) is False
    semaphore.release()
    assert semaphore.acquire(timeout=0) is True
    semaphore.release(2)
    assert semaphore.acquire(blocking=False)
    assert semaphore.acquire(blocking=False)
    assert not semaphore.acquire(blocking=False)


def test_semaphore_wakes_fifo_and_release_n(mt):
    semaphore = mt.Semaphore(0)
    order = []

    def worker(name):
        with semaphore:
            order.append(name)

    threads = _start_all(mt, worker, "abcd")
    semaphore.release(2)
    mt.sleep(0)
    assert order == ["a", "b"]
    semaphore.release(2)
    for thread in threads:
        thread.join()
    assert order == ["a", "b", "c", "d"]


def test_semaphore_limits_concurrency(mt):
    semaphore = mt.Semaphore(2)
    inside = [0]
    peak = [0]

    def worker():
        with semaphore:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            mt.sleep(0)
            mt.sleep(0)
            inside[0] -= 1

    threads = [mt.start(worker) for _ in range(6)]
    for thread in threads:
        thread.join()
    assert peak == [2]


def test_semaphore_timeout(mt):
    semaphore = mt.Semaphore(0)
    assert semaphore.acquire(timeout=0.02) is False
    assert semaphore.acquire(timeout=-1) is False


@pytest.mark.parametrize("call, error", [
    (lambda mt: mt.Semaphore(-1), ValueError),
    (lambda mt: mt.Semaphore(1.5), TypeError),
    (lambda mt: mt.Semaphore().release(0), ValueError),
    (lambda mt: mt.Semaphore().acquire(False, 1), ValueError),
])
def test_semaphore_bad_arguments(mt, call, error):
    with pytest.raises(error):
        call(mt)


def test_bounded_semaphore(mt):
    semaphore = mt.BoundedSemaphore(2)
    assert isinstance(semaphore, mt.Semaphore)
    with pytest.raises(ValueError):
        semaphore.release()
    semaphore.acquire()
    semaphore.acquire()
    with pytest.raises(ValueError):
        semaphore.release(3)
    semaphore.release(2)
    with pytest.raises(ValueError):
        semaphore.release()
    assert "BoundedSemaphore" in repr(semaphore)


def test_bounded_semaphore_counts_handed_over_units(mt):
    semaphore = mt.BoundedSemaphore(1)
    semaphore.acquire()
    waiter = mt.start(semaphore.acquire)
    mt.sleep(0)
    semaphore.release()  # handed to the waiter: still fully acquired
    assert waiter.join() is True
    with pytest.raises(ValueError):
        semaphore.release(2)
    semaphore.release()


# -- Condition --------------------------------------------------------------

def test_condition_notify_wakes_in_fifo_order(mt):
    condition = mt.Condition()
    order = []

    def waiter(name):
        with condition:
            assert condition.wait() is True
            order.append(name)

    threads = _start_all(mt, waiter, "abc")
    with condition:
        condition.notify()
    mt.sleep(0)
    assert order == ["a"]
    with condition:
        condition.notify(2)
    for thread in threads:
        thread.join()
    assert order == ["a", "b", "c"]


def test_condition_notify_all(mt):
    condition = mt.Condition()

    def waiter(_):
        with condition:
            return condition.wait()

    threads = _start_all(mt, waiter, range(3))
    with condition:
        condition.notify_all()
    assert [t.join() for t in threads] == [True] * 3


def test_condition_wait_reacquires_the_lock(mt):
    lock = mt.Lock()
    condition = mt.Condition(lock)
    seen = []

    def waiter():
        with condition:
            condition.wait()
            seen.append(lock.locked())

    thread = mt.start(waiter)
    mt.sleep(0)
    assert not lock.locked()
    with condition:
        condition.notify()
        mt.sleep(0)
        assert seen == []  # the waiter needs the lock we still hold
    thread.join()
    assert seen == [True]
    assert not lock.locked()


def test_condition_wait_timeout(mt):
    condition = mt.Condition()
    with condition:
        assert condition.wait(0.02) is False
        assert condition.wait(0) is False
    assert condition.acquire(blocking=False) is True
    condition.release()


def test_condition_timed_out_waiter_does_not_take_the_notify(mt):
    condition = mt.Condition()

    def waiter(timeout):
        with condition:
            return condition.wait(timeout)

    quitter = mt.start(waiter, 0.01)
    stayer = mt.start(waiter, None)
    assert quitter.join() is False
    with condition:
        condition.notify()
    assert stayer.join() is True


def test_condition_wait_for(mt):
    condition = mt.Condition()
    state = {"value": 0}

    def waiter():
        with condition:
            return condition.wait_for(lambda: state["value"] >= 3)

    thread = mt.start(waiter)
    for _ in range(3):
        mt.sleep(0)
        with condition:
            state["value"] += 1
            condition.notify_all()
    assert thread.join() is True
    with condition:
        assert condition.wait_for(lambda: False, timeout=0.02) is False
        assert condition.wait_for(lambda: "truthy", timeout=0) == "truthy"


def test_condition_requires_the_lock(mt):
    condition = mt.Condition()
    with pytest.raises(RuntimeError):
        condition.wait()
    with pytest.raises(RuntimeError):
        condition.notify()
    with pytest.raises(RuntimeError):
        condition.notify_all()


def test_condition_reacquires_the_lock_even_after_a_timeout_scope_expired(mt):
    condition = mt.Condition()
    log = []

    def waiter():
        try:
            with mt.timeout(0.02):
                with condition:
                    condition.wait()
        except TimeoutError:
            log.append(("waiter timed out", condition.acquire(False)))
            condition.release()

    def holder():
        with condition:
            mt.sleep(0.06)  # still holding the lock when the deadline passes
            log.append("holder releases")

    threads = [mt.start(waiter), mt.start(holder)]
    for thread in threads:
        thread.join()
    assert log == ["holder releases", ("waiter timed out", True)]
    assert condition.acquire(False) is True
    condition.release()


def test_condition_killed_waiter_reacquires_then_releases(mt):
    condition = mt.Condition()
    finally_saw_lock = []

    def waiter():
        with condition:
            try:
                condition.wait()
            finally:
                finally_saw_lock.append(not condition.acquire(False))

    thread = mt.start(waiter)
    mt.sleep(0)
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert finally_saw_lock == [True]
    assert condition.acquire(False)
    condition.release()
