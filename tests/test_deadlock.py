"""Deadlock detection in the root."""

import pytest


def _wait_forever(pipe):
    return pipe.get()


def test_root_waiting_alone_is_a_deadlock(mt):
    pipe = mt.MicroPipe()
    with pytest.raises(mt.DeadlockError) as info:
        pipe.get()
    message = str(info.value)
    assert "root" in message
    assert "MicroPipe.get" in message
    assert isinstance(info.value, RuntimeError)


def test_deadlock_message_names_every_blocked_micro_thread(mt):
    a_to_b, b_to_a = mt.MicroPipe(), mt.MicroPipe()

    def first():
        _wait_forever(b_to_a)

    def second():
        _wait_forever(a_to_b)

    def main():
        one = mt.start(first)
        one.name = "first-waiter"
        two = mt.start(second)
        two.name = "second-waiter"
        one.join()

    with pytest.raises(mt.DeadlockError) as info:
        mt.run(main)
    message = str(info.value)
    assert "name='first-waiter' blocked on MicroPipe.get" in message
    assert "name='second-waiter' blocked on MicroPipe.get" in message
    assert "join <first-waiter>" in message  # the main micro_thread
    # each blocked micro_thread's stack, formatted like a traceback
    assert "in first" in message and "in _wait_forever" in message
    assert "in second" in message
    assert message.count("File ") >= 5


def test_blocked_micro_threads_survive_a_deadlock(mt):
    pipe = mt.MicroPipe()
    thread = mt.start(pipe.get)
    with pytest.raises(mt.DeadlockError):
        thread.join()
    assert thread.state == "blocked"
    pipe.put("resolved")
    assert thread.join() == "resolved"


def test_pending_timer_is_not_a_deadlock(mt):
    pipe = mt.MicroPipe()

    def late_producer():
        mt.sleep(0.02)
        pipe.put("late")

    mt.start(late_producer)
    assert pipe.get() == "late"


def test_deadlock_inside_a_lock(mt):
    lock = mt.Lock()
    lock.acquire()
    with pytest.raises(mt.DeadlockError) as info:
        lock.acquire()
    assert "Lock.acquire" in str(info.value)
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_self_deadlock_of_run(mt):
    def main():
        mt.Event().wait()

    with pytest.raises(mt.DeadlockError) as info:
        mt.run(main)
    assert "Event.wait" in str(info.value)
