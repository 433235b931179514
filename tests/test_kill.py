"""kill() and throw(): delivered where the micro_thread is suspended."""

import pytest

BLOCKING_KINDS = ["sleep", "get", "put", "join", "lock", "event",
                  "semaphore", "condition", "timeout", "root_sleep0"]


class Scenario:
    """One kind of blocking call, plus a check that nothing was lost."""

    def __init__(self, mt, kind):
        self.mt = mt
        self.kind = kind
        self.pipe = mt.MicroPipe()
        self.full = mt.MicroPipe(1)
        self.full.put("already there")
        self.lock = mt.Lock()
        self.lock.acquire()
        self.event = mt.Event()
        self.semaphore = mt.Semaphore(0)
        self.condition = mt.Condition()
        self.target = mt.start(self.pipe.get) if kind == "join" else None

    def block(self):
        mt, kind = self.mt, self.kind
        if kind == "sleep":
            mt.sleep(60)
        elif kind == "get":
            self.pipe.get()
        elif kind == "put":
            self.full.put("never enqueued")
        elif kind == "join":
            self.target.join()
        elif kind == "lock":
            self.lock.acquire()
        elif kind == "event":
            self.event.wait()
        elif kind == "semaphore":
            self.semaphore.acquire()
        elif kind == "condition":
            with self.condition:
                self.condition.wait()
        elif kind == "timeout":
            with mt.timeout(60):
                self.pipe.get()
        elif kind == "root_sleep0":
            while True:
                mt.sleep(0)

    def check_nothing_lost(self):
        """The dead waiter must not swallow a later wake-up or item."""
        kind = self.kind
        if kind in ("get", "timeout"):
            self.pipe.put("item")
            assert len(self.pipe) == 1
        elif kind == "put":
            assert self.full.get() == "already there"
            assert len(self.full) == 0
        elif kind == "join":
            self.pipe.put("result")
            assert self.target.join() == "result"
        elif kind == "lock":
            self.lock.release()
            assert not self.lock.locked()
        elif kind == "semaphore":
            self.semaphore.release()
            assert self.semaphore.acquire(blocking=False)
        elif kind == "condition":
            with self.condition:
                self.condition.notify()
            assert self.condition.acquire(blocking=False)
            self.condition.release()


@pytest.mark.parametrize("kind", BLOCKING_KINDS)
def test_kill_at_each_blocking_point_runs_finally_once(mt, kind):
    scenario = Scenario(mt, kind)
    finally_runs = []

    def victim():
        try:
            scenario.block()
        finally:
            finally_runs.append(mt.current().state)

    thread = mt.start(victim)
    mt.sleep(0)
    assert thread.state in ("blocked", "ready")
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert finally_runs == ["running"]
    assert thread.state == "finished"
    assert thread not in mt.enumerate()
    scenario.check_nothing_lost()


@pytest.mark.parametrize("kind", BLOCKING_KINDS)
def test_throw_at_each_blocking_point(mt, kind):
    scenario = Scenario(mt, kind)
    error = LookupError("thrown")
    caught = []

    def victim():
        try:
            scenario.block()
        except LookupError as exc:
            caught.append(exc)
            return "handled"

    thread = mt.start(victim)
    mt.sleep(0)
    thread.throw(error)
    assert thread.join() == "handled"
    assert caught == [error] and caught[0] is error
    scenario.check_nothing_lost()


def test_kill_before_start_never_runs(mt):
    log = []
    thread = mt.start(log.append, "ran")
    thread.kill()
    assert thread.done()
    assert thread.state == "finished"
    assert thread not in mt.enumerate()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    mt.sleep(0)
    assert log == []


def test_throw_before_start_never_runs(mt):
    log = []
    error = ValueError("before start")
    thread = mt.start(log.append, "ran")
    thread.throw(error)
    with pytest.raises(ValueError) as info:
        thread.join()
    assert info.value is error
    assert log == []


def test_kill_of_a_finished_micro_thread_is_a_noop(mt):
    thread = mt.start(lambda: "result")
    assert thread.join() == "result"
    thread.kill()
    assert thread.join() == "result"


def test_throw_into_a_finished_micro_thread_fails(mt):
    thread = mt.start(lambda: None)
    thread.join()
    with pytest.raises(RuntimeError):
        thread.throw(ValueError)


def test_kill_yourself_raises_at_once(mt):
    log = []

    def suicidal():
        try:
            mt.current().kill()
            log.append("not reached")
        finally:
            log.append("finally")

    thread = mt.start(suicidal)
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert log == ["finally"]


def test_throw_into_yourself_raises_at_once(mt):
    def body():
        try:
            mt.current().throw(KeyError("me"))
        except KeyError as exc:
            return exc.args

    assert mt.run(body) == ("me",)


def test_throw_accepts_a_class(mt):
    thread = mt.start(mt.MicroPipe().get)
    mt.sleep(0)
    thread.throw(OverflowError)
    with pytest.raises(OverflowError):
        thread.join()


@pytest.mark.parametrize("bad", [42, "error", object(), int])
def test_throw_rejects_non_exceptions(mt, bad):
    thread = mt.start(mt.MicroPipe().get)
    mt.sleep(0)
    with pytest.raises(TypeError):
        thread.throw(bad)
    assert thread.state == "blocked"


def test_killed_micro_thread_may_catch_the_exit(mt):
    def stubborn():
        try:
            mt.sleep(60)
        except mt.MicroThreadExit:
            return "survived"

    thread = mt.start(stubborn)
    mt.sleep(0)
    thread.kill()
    assert thread.join() == "survived"


def test_kill_does_not_switch(mt):
    log = []

    def victim():
        try:
            mt.sleep(60)
        finally:
            log.append("victim finally")

    thread = mt.start(victim)
    mt.sleep(0)
    thread.kill()
    log.append("after kill")
    assert thread.state == "ready"
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert log == ["after kill", "victim finally"]


def test_finally_may_block_after_kill(mt):
    log = []

    def victim():
        try:
            mt.sleep(60)
        finally:
            mt.sleep(0.01)
            log.append("cleaned up")

    thread = mt.start(victim)
    mt.sleep(0)
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert log == ["cleaned up"]


def test_second_kill_before_delivery_is_ignored(mt):
    log = []

    def victim():
        try:
            mt.sleep(60)
        finally:
            mt.sleep(0)
            log.append("finally completed")

    thread = mt.start(victim)
    mt.sleep(0)
    thread.kill()
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert log == ["finally completed"]


def test_kill_of_a_ready_getter_keeps_the_received_item(mt):
    # The get() completed (the item was handed over) before the kill, so
    # the item is returned and the kill is raised at the next blocking call.
    pipe = mt.MicroPipe()
    received = []

    def getter():
        received.append(pipe.get())
        mt.sleep(0)
        received.append("not reached")

    thread = mt.start(getter)
    mt.sleep(0)
    pipe.put("item")
    assert thread.state == "ready"
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert received == ["item"]


def test_kill_of_a_ready_putter_keeps_the_put(mt):
    pipe = mt.MicroPipe(1)
    pipe.put("a")
    log = []

    def putter():
        pipe.put("b")
        log.append("put returned")
        mt.sleep(0)

    thread = mt.start(putter)
    mt.sleep(0)
    assert pipe.get() == "a"
    assert thread.state == "ready"
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert log == ["put returned"]
    assert pipe.get() == "b"


def test_kill_of_a_ready_lock_waiter_keeps_the_lock_consistent(mt):
    lock = mt.Lock()
    lock.acquire()
    log = []

    def waiter():
        with lock:
            log.append("acquired")
            mt.sleep(0)

    thread = mt.start(waiter)
    mt.sleep(0)
    lock.release()  # hands the lock to the waiter
    assert lock.locked()
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert log == ["acquired"]
    assert not lock.locked()


def test_killing_a_blocked_root_joiner_target(mt):
    pipe = mt.MicroPipe()
    target = mt.start(pipe.get)
    killer = mt.start(target.kill)
    with pytest.raises(mt.MicroThreadExit):
        target.join()
    killer.join()
