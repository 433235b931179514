"""Property tests: random schedules never lose or duplicate anything."""

import itertools

from hypothesis import given, strategies as st

PRODUCER_OPS = st.sampled_from(["put", "put", "put_timeout", "yield"])
CONSUMER_OPS = st.sampled_from(["get", "get", "get_timeout", "yield"])


@st.composite
def pipe_schedules(draw):
    """Producers, consumers and a controller that kills and closes."""
    producers = draw(st.lists(st.lists(PRODUCER_OPS, max_size=8),
                              min_size=1, max_size=3))
    consumers = draw(st.lists(st.lists(CONSUMER_OPS, max_size=8),
                              min_size=1, max_size=3))
    actors = len(producers) + len(consumers)
    controller = draw(st.lists(st.one_of(
        st.just(("yield",)),
        st.just(("close",)),
        st.tuples(st.just("kill"), st.integers(0, actors - 1)),
        st.tuples(st.just("throw"), st.integers(0, actors - 1)),
    ), max_size=6))
    maxsize = draw(st.sampled_from([0, 1, 2, 3]))
    return maxsize, producers, consumers, controller


def _settle(mt, threads):
    """Let everything run until each thread is blocked or finished."""
    while any(t.state in ("created", "ready") for t in threads):
        mt.sleep(0)


@given(pipe_schedules())
def test_every_item_is_received_once_or_its_put_raised(mt, schedule):
    maxsize, producer_scripts, consumer_scripts, controller_script = schedule
    numbers = itertools.count()
    sent, refused, received = [], [], []

    def producer(pipe, script):
        for op in script:
            if op == "yield":
                mt.sleep(0)
                continue
            item = next(numbers)
            try:
                if op == "put_timeout":
                    with mt.timeout(0):
                        pipe.put(item)
                else:
                    pipe.put(item)
            except BaseException:
                refused.append(item)
                raise
            sent.append(item)

    def consumer(pipe, script):
        for op in script:
            if op == "yield":
                mt.sleep(0)
            elif op == "get_timeout":
                with mt.timeout(0):
                    received.append(pipe.get())
            else:
                received.append(pipe.get())

    def controller(pipe, actors, script):
        for op in script:
            if op[0] == "yield":
                mt.sleep(0)
            elif op[0] == "close":
                pipe.close()
            elif op[0] == "kill":
                actors[op[1]].kill()
            elif not actors[op[1]].done():
                actors[op[1]].throw(LookupError)

    def main():
        pipe = mt.MicroPipe(maxsize)
        actors = ([mt.start(producer, pipe, s) for s in producer_scripts] +
                  [mt.start(consumer, pipe, s) for s in consumer_scripts])
        threads = actors + [mt.start(controller, pipe, actors,
                                     controller_script)]
        _settle(mt, threads)
        pipe.close()  # wakes whoever is still blocked
        for thread in threads:
            try:
                thread.join()
            except (mt.PipeClosedError, mt.MicroThreadExit, LookupError,
                    TimeoutError):
                pass
        while len(pipe):
            received.append(pipe.get())
        assert mt.enumerate() == [mt.current()]

    mt.run(main)
    assert len(received) == len(set(received)), "an item was duplicated"
    assert sorted(received) == sorted(sent), "an item was lost or invented"
    assert not set(refused) & set(received)
    assert sorted(sent + refused) == list(range(next(numbers)))


@given(st.sampled_from([0, 1, 2]),
       st.lists(st.sampled_from(["put", "put_timeout", "yield"]),
                max_size=15),
       st.lists(st.sampled_from(["get", "get_timeout", "yield"]),
                max_size=15))
def test_single_producer_single_consumer_is_fifo(mt, maxsize, puts, gets):
    sent, received = [], []

    def producer(pipe):
        for number, op in enumerate(puts):
            if op == "yield":
                mt.sleep(0)
                continue
            try:
                if op == "put_timeout":
                    with mt.timeout(0):
                        pipe.put(number)
                else:
                    pipe.put(number)
            except TimeoutError:
                continue
            sent.append(number)

    def consumer(pipe):
        for op in gets:
            if op == "yield":
                mt.sleep(0)
                continue
            try:
                if op == "get_timeout":
                    with mt.timeout(0):
                        received.append(pipe.get())
                else:
                    received.append(pipe.get())
            except TimeoutError:
                pass

    def main():
        pipe = mt.MicroPipe(maxsize)
        threads = [mt.start(producer, pipe), mt.start(consumer, pipe)]
        _settle(mt, threads)
        pipe.close()
        for thread in threads:
            try:
                thread.join()
            except mt.PipeClosedError:
                pass
        received.extend(pipe)

    mt.run(main)
    assert received == sent


@given(st.integers(1, 3),
       st.lists(st.lists(st.sampled_from(["hold", "try", "timed", "yield"]),
                         max_size=6), min_size=1, max_size=4),
       st.lists(st.one_of(st.just(None), st.integers(0, 3)), max_size=6))
def test_semaphore_never_overcommits_or_loses_a_wakeup(
        mt, capacity, scripts, kills):
    semaphore = mt.BoundedSemaphore(capacity)
    holders = [0]
    peak = [0]

    def worker(script):
        for op in script:
            if op == "yield":
                mt.sleep(0)
                continue
            if op == "try":
                acquired = semaphore.acquire(blocking=False)
            elif op == "timed":
                acquired = semaphore.acquire(timeout=0)
            else:
                acquired = semaphore.acquire()
            if not acquired:
                continue
            try:
                holders[0] += 1
                peak[0] = max(peak[0], holders[0])
                mt.sleep(0)
            finally:
                holders[0] -= 1
                semaphore.release()

    def killer(workers):
        for index in kills:
            if index is None or index >= len(workers):
                mt.sleep(0)
            else:
                workers[index].kill()

    def main():
        workers = [mt.start(worker, s) for s in scripts]
        threads = workers + [mt.start(killer, workers)]
        for thread in threads:  # a lost wake-up would be a DeadlockError
            try:
                thread.join()
            except mt.MicroThreadExit:
                pass

    mt.run(main)
    assert peak[0] <= capacity
    assert holders == [0]
    for _ in range(capacity):  # every unit came back
        assert semaphore.acquire(blocking=False)
    assert not semaphore.acquire(blocking=False)
