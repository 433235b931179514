"""MicroPipe: FIFO channel semantics, bounds, closing, iteration."""

import pytest


def test_fifo_unbounded(mt):
    pipe = mt.MicroPipe()
    for i in range(5):
        pipe.put(i)
    assert len(pipe) == 5
    assert [pipe.get() for _ in range(5)] == [0, 1, 2, 3, 4]
    assert len(pipe) == 0


def test_repr(mt):
    pipe = mt.MicroPipe(2)
    pipe.put("a")
    assert "MicroPipe" in repr(pipe)
    assert "closed" not in repr(pipe)
    pipe.close()
    assert "closed" in repr(pipe)


def test_put_hands_over_to_a_blocked_getter_without_switching(mt):
    pipe = mt.MicroPipe()
    log = []

    def getter():
        log.append(pipe.get())

    thread = mt.start(getter)
    mt.sleep(0)
    assert thread.state == "blocked"
    pipe.put("item")
    assert log == []
    assert thread.state == "ready"
    assert len(pipe) == 0  # handed over, not buffered
    thread.join()
    assert log == ["item"]


def test_blocked_getters_are_served_fifo(mt):
    pipe = mt.MicroPipe()
    getters = [mt.start(pipe.get) for _ in range(3)]
    mt.sleep(0)
    for item in "xyz":
        pipe.put(item)
    assert [g.join() for g in getters] == ["x", "y", "z"]


def test_bounded_put_blocks_while_full(mt):
    pipe = mt.MicroPipe(2)
    log = []

    def putter():
        for i in range(4):
            pipe.put(i)
            log.append(f"put {i}")

    thread = mt.start(putter)
    mt.sleep(0)
    assert log == ["put 0", "put 1"]
    assert thread.state == "blocked" and thread.blocked_on == "MicroPipe.put"
    assert len(pipe) == 2
    assert pipe.get() == 0
    assert len(pipe) == 2  # the blocked putter's item moved in
    mt.sleep(0)
    assert log == ["put 0", "put 1", "put 2"]
    assert [pipe.get() for _ in range(3)] == [1, 2, 3]
    thread.join()


def test_blocked_putters_are_served_fifo(mt):
    pipe = mt.MicroPipe(1)
    pipe.put("first")
    putters = [mt.start(pipe.put, item) for item in "abc"]
    mt.sleep(0)
    assert [p.state for p in putters] == ["blocked"] * 3
    assert [pipe.get() for _ in range(4)] == ["first", "a", "b", "c"]
    for putter in putters:
        putter.join()


def test_maxsize_one_ping_pong(mt):
    ping, pong = mt.MicroPipe(1), mt.MicroPipe(1)

    def player():
        for value in ping:
            pong.put(value + 1)

    thread = mt.start(player)
    value = 0
    for _ in range(20):
        ping.put(value)
        value = pong.get()
    ping.close()
    thread.join()
    assert value == 20


def test_close_keeps_buffered_items(mt):
    pipe = mt.MicroPipe()
    pipe.put(1)
    pipe.put(2)
    pipe.close()
    assert pipe.closed
    assert pipe.get() == 1
    assert pipe.get() == 2
    with pytest.raises(mt.PipeClosedError):
        pipe.get()


def test_put_on_a_closed_pipe_raises(mt):
    pipe = mt.MicroPipe()
    pipe.close()
    with pytest.raises(mt.PipeClosedError):
        pipe.put(1)
    assert len(pipe) == 0


def test_close_is_idempotent(mt):
    pipe = mt.MicroPipe()
    assert not pipe.closed
    pipe.close()
    pipe.close()
    assert pipe.closed


def test_close_wakes_blocked_getters(mt):
    pipe = mt.MicroPipe()
    getters = [mt.start(pipe.get) for _ in range(2)]
    mt.sleep(0)
    pipe.close()
    for getter in getters:
        with pytest.raises(mt.PipeClosedError):
            getter.join()


def test_close_wakes_blocked_putters_and_drops_their_items(mt):
    pipe = mt.MicroPipe(1)
    pipe.put("kept")
    putter = mt.start(pipe.put, "dropped")
    mt.sleep(0)
    pipe.close()
    with pytest.raises(mt.PipeClosedError):
        putter.join()
    assert pipe.get() == "kept"
    with pytest.raises(mt.PipeClosedError):
        pipe.get()


def test_iteration_until_closed_and_drained(mt):
    pipe = mt.MicroPipe()

    def consume():
        items = []
        for item in pipe:
            items.append(item)
        return items

    thread = mt.start(consume)
    for i in range(3):
        pipe.put(i)
        mt.sleep(0)
    pipe.put(3)
    pipe.close()
    assert thread.join() == [0, 1, 2, 3]
    assert iter(pipe) is pipe


def test_get_in_the_root_drives_the_scheduler(mt):
    pipe = mt.MicroPipe()

    def producer():
        mt.sleep(0.01)
        pipe.put("from producer")

    mt.start(producer)
    assert pipe.get() == "from producer"


def test_put_on_a_full_pipe_in_the_root(mt):
    pipe = mt.MicroPipe(1)
    pipe.put("a")
    consumer = mt.start(lambda: [pipe.get(), pipe.get()])
    pipe.put("b")
    assert consumer.join() == ["a", "b"]


@pytest.mark.parametrize("bad, error", [
    (-1, ValueError), (1.5, TypeError), ("2", TypeError), (None, TypeError),
])
def test_bad_maxsize(mt, bad, error):
    with pytest.raises(error):
        mt.MicroPipe(bad)


def test_items_may_be_anything(mt):
    pipe = mt.MicroPipe()
    sentinel = object()
    for item in (None, sentinel, pipe):
        pipe.put(item)
    assert pipe.get() is None
    assert pipe.get() is sentinel
    assert pipe.get() is pipe
