"""Cooperative scheduling: FIFO ready queue, sleep(0) fairness, the root."""

import time

import pytest


def test_start_returns_at_once_without_switching(mt):
    log = []
    thread = mt.start(log.append, "ran")
    assert log == []
    assert thread.state == "created"
    assert thread.join() is None
    assert log == ["ran"]


def test_started_micro_threads_run_in_start_order(mt):
    log = []
    threads = [mt.start(log.append, i) for i in range(5)]
    threads[-1].join()
    assert log == [0, 1, 2, 3, 4]
    assert all(t.done() for t in threads)


def test_sleep_zero_round_robin_is_strict(mt):
    log = []

    def worker(name):
        for i in range(3):
            log.append(f"{name}{i}")
            mt.sleep(0)

    def main():
        threads = [mt.start(worker, name) for name in "abc"]
        for thread in threads:
            thread.join()

    mt.run(main)
    assert log == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]


def test_sleep_zero_in_the_root_queues_it_at_the_back(mt):
    log = []

    def worker(name):
        log.append(f"{name}1")
        mt.sleep(0)
        log.append(f"{name}2")

    mt.start(worker, "a")
    mt.start(worker, "b")
    mt.sleep(0)
    assert log == ["a1", "b1"]
    mt.sleep(0)
    assert log == ["a1", "b1", "a2", "b2"]


def test_sleep_zero_alone_returns(mt):
    def main():
        mt.sleep(0)
        return "ok"

    assert mt.run(main) == "ok"
    mt.sleep(0)  # in the root, with nothing else to run


def test_micro_threads_only_run_while_the_root_blocks(mt):
    log = []

    def worker():
        log.append("worker")

    thread = mt.start(worker)
    for _ in range(3):
        assert log == []
    thread.join()
    assert log == ["worker"]


def test_sleep_waits_at_least_the_given_time(mt):
    def main():
        start = time.monotonic()
        mt.sleep(0.02)
        return time.monotonic() - start

    assert mt.run(main) >= 0.02


def test_sleep_in_the_root_waits(mt):
    start = time.monotonic()
    mt.sleep(0.02)
    assert time.monotonic() - start >= 0.02


def test_sleepers_wake_in_deadline_order(mt):
    log = []

    def sleeper(delay):
        mt.sleep(delay)
        log.append(delay)

    def main():
        # 50 ms apart: far more than the skew between the sleepers' starts
        # (the shim's thread hand-offs take milliseconds on a loaded machine).
        threads = [mt.start(sleeper, d) for d in (0.15, 0.05, 0.10)]
        for thread in threads:
            thread.join()

    mt.run(main)
    assert log == [0.05, 0.10, 0.15]


def test_busy_yielding_does_not_starve_timers(mt):
    state = {"flag": False, "spins": 0}

    def spinner():
        while not state["flag"]:
            state["spins"] += 1
            mt.sleep(0)

    def setter():
        mt.sleep(0.01)
        state["flag"] = True

    def main():
        threads = [mt.start(spinner), mt.start(setter)]
        for thread in threads:
            thread.join()

    mt.run(main)
    assert state["flag"] and state["spins"] > 0


def _ping_pong_until(mt, stop, deadline):
    """Two micro-threads that hand an item back and forth over two pipes
    until stop() is true or the deadline passes; return the two."""
    a = mt.MicroPipe()
    b = mt.MicroPipe()

    def player(get_from, put_to, serve):
        if serve:
            put_to.put(0)
        while not stop() and time.monotonic() < deadline:
            put_to.put(get_from.get() + 1)
        a.close()
        b.close()

    return [mt.start(player, a, b, True), mt.start(player, b, a, False)]


def _join_quietly(mt, threads):
    for thread in threads:
        try:
            thread.join()
        except mt.PipeClosedError:
            pass


def test_micro_threads_switching_among_themselves_do_not_starve_timers(mt):
    # They switch straight from one to the other; the due timer must still
    # get its turn.
    state = {"flag": False}

    def setter():
        mt.sleep(0.01)
        state["flag"] = True

    def main():
        start = time.monotonic()
        players = _ping_pong_until(mt, lambda: state["flag"], start + 5)
        setter_thread = mt.start(setter)
        _join_quietly(mt, players + [setter_thread])
        return time.monotonic() - start

    assert mt.run(main) < 2.5
    assert state["flag"]


def test_waiter_woken_by_switching_micro_threads_gets_to_run(mt):
    # The root blocks in get(); one of two micro-threads switching among
    # themselves puts its item and goes on: the root must run before they
    # are done.
    inbox = mt.MicroPipe()
    state = {"rounds": 0, "stop": False}

    def stop():
        state["rounds"] += 1
        if state["rounds"] == 10:
            inbox.put("wake up")
        return state["stop"]

    start = time.monotonic()
    players = _ping_pong_until(mt, stop, start + 5)
    assert inbox.get() == "wake up"
    state["stop"] = True
    _join_quietly(mt, players)
    assert time.monotonic() - start < 2.5


def test_run_returns_the_result(mt):
    assert mt.run(lambda a, b=0: a + b, 2, b=3) == 5


def test_run_raises_the_same_exception_object(mt):
    error = ValueError("boom")

    def main():
        raise error

    with pytest.raises(ValueError) as info:
        mt.run(main)
    assert info.value is error


def test_run_leaves_unfinished_micro_threads_alive(mt):
    pipe = mt.MicroPipe()
    log = []

    def waiter():
        log.append(pipe.get())

    def main():
        return mt.start(waiter)

    thread = mt.run(main)
    assert not thread.done()
    assert thread in mt.enumerate()
    pipe.put("later")
    thread.join()
    assert log == ["later"]


def test_run_returns_before_other_ready_micro_threads_run(mt):
    log = []

    def main():
        mt.start(log.append, "other")
        return "main"

    assert mt.run(main) == "main"
    assert log == []  # it runs the next time the scheduler is driven
    mt.sleep(0)
    assert log == ["other"]


def test_woken_root_resumes_before_queued_micro_threads(mt):
    pipe = mt.MicroPipe()
    log = []

    def putter():
        pipe.put("item")  # wakes the root; fire does not switch
        log.append("putter continues")
        mt.sleep(0)
        log.append("putter again")

    def bystander():
        log.append("bystander")

    mt.start(putter)
    mt.start(bystander)
    assert pipe.get() == "item"
    assert log == ["putter continues"]
    mt.sleep(0)  # sleep(0) queues the root at the back like any task
    assert log == ["putter continues", "bystander", "putter again"]


def test_kwargs_all_go_to_the_function(mt):
    def fn(**kwargs):
        return kwargs

    assert mt.start(fn, name="x", fn=1).join() == {"name": "x", "fn": 1}
    assert mt.run(fn, name="y") == {"name": "y"}


def test_micro_threads_can_start_micro_threads(mt):
    def child(n):
        return n * 2

    def parent():
        return [mt.start(child, i) for i in range(3)]

    children = mt.run(parent)
    assert [c.join() for c in children] == [0, 2, 4]


def test_many_micro_threads(mt):
    pipe = mt.MicroPipe()

    def producer(i):
        pipe.put(i)

    def main():
        for i in range(50):
            mt.start(producer, i)
        return sorted(pipe.get() for _ in range(50))

    assert mt.run(main) == list(range(50))


def test_blocking_inside_generators(mt):
    # A for loop and yield from over generators that block: the
    # micro-thread waits in the innermost generator like anywhere else.
    pipe = mt.MicroPipe()

    def items():
        while (item := pipe.get()) is not None:
            yield item

    def doubled():
        yield from (x * 2 for x in items())

    def consumer():
        return [x for x in doubled()]

    thread = mt.start(consumer)
    for i in range(3):
        mt.sleep(0)
        assert thread.state == "blocked"
        pipe.put(i)
    pipe.put(None)
    assert thread.join() == [0, 2, 4]
