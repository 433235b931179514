"""Each OS thread has its own scheduler; micro-threads stay on theirs."""

import threading

import pytest

from helpers import run_in_os_thread


def _ping_pong(mt, rounds):
    ping, pong = mt.MicroPipe(1), mt.MicroPipe(1)

    def player():
        for value in ping:
            pong.put(value + 1)

    def main():
        player_thread = mt.start(player)
        value = 0
        for _ in range(rounds):
            ping.put(value)
            value = pong.get()
        ping.close()
        player_thread.join()
        return value, len(mt.enumerate())

    return mt.run(main)


def test_schedulers_of_several_os_threads_run_at_the_same_time(mt):
    barrier = threading.Barrier(3, timeout=30)
    results = {}

    def os_thread(index):
        mt.run(barrier.wait)  # all three schedulers are live together
        results[index] = _ping_pong(mt, 50 + index)

    threads = [threading.Thread(target=os_thread, args=(i,))
               for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == {0: (50, 1), 1: (51, 1), 2: (52, 1)}


def test_enumerate_and_current_are_per_os_thread(mt):
    pipe = mt.MicroPipe()
    mine = mt.start(pipe.get)

    def other():
        theirs = mt.start(lambda: None)
        return mt.enumerate() == [theirs], mt.current()

    assert run_in_os_thread(other) == (True, None)
    assert mt.enumerate() == [mine]
    pipe.put(None)
    mine.join()


@pytest.mark.parametrize("action", [
    lambda t: t.join(),
    lambda t: t.join(0),
    lambda t: t.kill(),
    lambda t: t.throw(ValueError),
])
def test_micro_thread_is_bound_to_its_os_thread(mt, action):
    pipe = mt.MicroPipe()
    thread = mt.start(pipe.get)
    with pytest.raises(RuntimeError, match="OS thread"):
        run_in_os_thread(action, thread)
    assert thread.state == "created"
    pipe.put("still usable")
    assert thread.join() == "still usable"


def test_introspection_works_from_another_os_thread(mt):
    pipe = mt.MicroPipe()
    thread = mt.start(pipe.get)
    thread.name = "observed"
    mt.sleep(0)
    seen = run_in_os_thread(
        lambda: (thread.state, thread.blocked_on, thread.done(),
                 repr(thread), [f.f_code.co_name for f in thread.stack()]))
    assert seen[:4] == ("blocked", "MicroPipe.get", False,
                        "<MicroThread name='observed' blocked on "
                        "MicroPipe.get>")
    pipe.put(None)
    thread.join()


@pytest.mark.parametrize("action", [
    lambda p: p.get(), lambda p: p.put(1), lambda p: p.close(),
])
def test_pipe_belongs_to_the_os_thread_that_created_it(mt, action):
    pipe = mt.MicroPipe()
    with pytest.raises(RuntimeError, match="OS thread"):
        run_in_os_thread(action, pipe)
    pipe.put("still usable here")
    assert pipe.get() == "still usable here"
    assert not pipe.closed


def test_pipe_created_in_another_os_thread_is_usable_there(mt):
    def use():
        pipe = mt.MicroPipe()
        pipe.put(1)
        return pipe.get()

    assert run_in_os_thread(use) == 1


def test_waiter_cannot_be_fired_from_another_os_thread(mt):
    waiter = mt._kernel._Waiter()
    thread = mt.start(waiter.wait)
    mt.sleep(0)
    with pytest.raises(RuntimeError, match="OS thread"):
        run_in_os_thread(waiter.fire, "x")
    assert waiter.fire("y") is True
    assert thread.join() == "y"
