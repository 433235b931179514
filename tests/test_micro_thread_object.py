"""MicroThread objects: join, name, state, blocked_on, repr, stack, ..."""

import contextvars
import re
import sys

import pytest


def test_join_returns_the_result(mt):
    thread = mt.start(lambda: {"answer": 42})
    assert thread.join() == {"answer": 42}
    assert thread.join() == {"answer": 42}  # joining again is fine


def test_join_reraises_the_same_exception_object(mt):
    error = KeyError("k")

    def fail():
        raise error

    thread = mt.start(fail)
    for _ in range(2):
        with pytest.raises(KeyError) as info:
            thread.join()
        assert info.value is error


def test_join_from_a_micro_thread(mt):
    def child():
        mt.sleep(0.01)
        return "child"

    def parent():
        return mt.start(child).join()

    assert mt.run(parent) == "child"


def test_several_joiners_all_get_the_result(mt):
    pipe = mt.MicroPipe()
    target = mt.start(pipe.get)
    joiners = [mt.start(target.join) for _ in range(3)]
    mt.sleep(0)
    assert all(j.state == "blocked" for j in joiners)
    pipe.put("v")
    assert [j.join() for j in joiners] == ["v", "v", "v"]


def test_done(mt):
    pipe = mt.MicroPipe()
    thread = mt.start(pipe.get)
    assert not thread.done()
    mt.sleep(0)
    assert not thread.done()
    pipe.put(1)
    thread.join()
    assert thread.done()


def test_default_names_are_unique(mt):
    threads = [mt.start(lambda: None) for _ in range(3)]
    names = [t.name for t in threads]
    assert all(re.fullmatch(r"MicroThread-\d+", n) for n in names)
    assert len(set(names)) == 3


def test_name_is_settable(mt):
    thread = mt.start(lambda: None)
    thread.name = "worker"
    assert thread.name == "worker"
    assert "'worker'" in repr(thread)
    with pytest.raises(TypeError):
        thread.name = 42
    assert thread.name == "worker"


def test_states(mt):
    pipe = mt.MicroPipe()
    seen = []

    def body():
        seen.append(mt.current().state)
        return pipe.get()

    thread = mt.start(body)
    assert thread.state == "created"
    mt.sleep(0)
    assert seen == ["running"]
    assert thread.state == "blocked"
    pipe.put("x")
    assert thread.state == "ready"
    assert thread.join() == "x"
    assert thread.state == "finished"


def test_yielding_micro_thread_is_ready(mt):
    def spin():
        mt.sleep(0)
        mt.sleep(0)

    thread = mt.start(spin)
    mt.sleep(0)
    assert thread.state == "ready"
    assert thread.blocked_on is None
    thread.join()


@pytest.mark.parametrize("kind, expected", [
    ("sleep", "sleep"),
    ("get", "MicroPipe.get"),
    ("put", "MicroPipe.put"),
    ("join", "join <target>"),
    ("lock", "Lock.acquire"),
    ("event", "Event.wait"),
    ("semaphore", "Semaphore.acquire"),
    ("bounded", "BoundedSemaphore.acquire"),
    ("condition", "Condition.wait"),
])
def test_blocked_on(mt, kind, expected):
    full = mt.MicroPipe(1)
    full.put(None)
    lock = mt.Lock()
    lock.acquire()
    target = mt.start(mt.MicroPipe().get)
    target.name = "target"
    condition = mt.Condition()

    def wait_on_condition():
        with condition:
            condition.wait()

    blockers = {
        "sleep": lambda: mt.sleep(60),
        "get": mt.MicroPipe().get,
        "put": lambda: full.put(None),
        "join": target.join,
        "lock": lock.acquire,
        "event": mt.Event().wait,
        "semaphore": mt.Semaphore(0).acquire,
        "bounded": mt.BoundedSemaphore(0).acquire,
        "condition": wait_on_condition,
    }
    thread = mt.start(blockers[kind])
    thread.name = "worker"
    mt.sleep(0)
    assert thread.state == "blocked"
    assert thread.blocked_on == expected
    assert repr(thread) == f"<MicroThread name='worker' blocked on {expected}>"
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert thread.blocked_on is None


def test_repr_shows_the_state(mt):
    thread = mt.start(lambda: None)
    thread.name = "w"
    assert repr(thread) == "<MicroThread name='w' created>"
    thread.join()
    assert repr(thread) == "<MicroThread name='w' finished>"
    assert mt.run(lambda: repr(mt.current())).endswith(" running>")


def test_cannot_instantiate_directly(mt):
    with pytest.raises(TypeError):
        mt.MicroThread()
    with pytest.raises(TypeError):
        mt.MicroThread(print)


def test_current(mt):
    assert mt.current() is None
    thread = mt.start(mt.current)
    assert thread.join() is thread
    assert mt.current() is None


def test_current_task_is_the_micro_thread_or_a_root_token(mt):
    root = mt._kernel._current_task()
    assert root is not None
    assert not isinstance(root, mt.MicroThread)
    assert mt._kernel._current_task() is root
    thread = mt.start(mt._kernel._current_task)
    assert thread.join() is thread


def test_enumerate_lists_unfinished_in_start_order(mt):
    pipe = mt.MicroPipe()
    a = mt.start(pipe.get)
    b = mt.start(lambda: None)
    c = mt.start(pipe.get)
    assert mt.enumerate() == [a, b, c]
    mt.sleep(0)
    assert mt.enumerate() == [a, c]
    seen_inside = mt.run(mt.enumerate)
    assert seen_inside[:2] == [a, c] and len(seen_inside) == 3
    pipe.put(1)
    pipe.put(2)
    a.join()
    c.join()
    assert mt.enumerate() == []


def test_scheduler_keeps_unreferenced_micro_threads_alive(mt):
    pipe = mt.MicroPipe()
    results = []
    mt.start(lambda: results.append(pipe.get()))
    mt.sleep(0)
    import gc
    gc.collect()
    assert len(mt.enumerate()) == 1
    pipe.put("alive")
    mt.sleep(0)
    assert results == ["alive"]


def _outer(pipe):
    return _inner(pipe)


def _inner(pipe):
    return pipe.get()


def test_stack_of_a_blocked_micro_thread(mt):
    pipe = mt.MicroPipe()
    thread = mt.start(_outer, pipe)
    assert thread.stack() == []
    mt.sleep(0)
    names = [frame.f_code.co_name for frame in thread.stack()]
    assert names == ["_outer", "_inner"]
    pipe.put(None)
    thread.join()
    assert thread.stack() == []


def test_stack_of_the_running_micro_thread(mt):
    def entry():
        return helper()

    def helper():
        return [frame.f_code.co_name for frame in mt.current().stack()]

    assert mt.run(entry) == ["entry", "helper"]


def test_stack_frames_show_where_it_waits(mt):
    pipe = mt.MicroPipe()
    thread = mt.start(_outer, pipe)
    mt.sleep(0)
    innermost = thread.stack()[-1]
    assert innermost.f_code is _inner.__code__
    assert innermost.f_locals["pipe"] is pipe
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()


def test_contextvars_are_copied_at_start(mt):
    var = contextvars.ContextVar("var", default="default")
    var.set("parent")

    def child():
        seen = var.get()
        var.set("child")
        return seen, var.get()

    thread = mt.start(child)
    var.set("changed after start")
    assert thread.join() == ("parent", "child")
    assert var.get() == "changed after start"


def test_contextvars_from_an_empty_context(mt):
    # Started where no variable is set: the micro-thread still has a
    # context of its own, empty, that nobody else sees.
    var = contextvars.ContextVar("var", default="default")
    pipe = mt.MicroPipe()

    def child():
        seen = var.get()
        var.set("child")
        pipe.get()
        return seen, var.get(), len(contextvars.copy_context())

    def starter():
        thread = mt.start(child)
        var.set("set by the starter after start")
        mt.sleep(0)
        return thread, var.get()

    thread, starter_sees = contextvars.Context().run(starter)
    assert starter_sees == "set by the starter after start"
    assert var.get() == "default"
    pipe.put(None)
    assert thread.join() == ("default", "child", 1)


def test_contextvars_are_inherited_by_grandchildren(mt):
    var = contextvars.ContextVar("var")

    def grandchild():
        return var.get()

    def child():
        var.set("from child")
        return mt.start(grandchild).join()

    var.set("from root")
    assert mt.run(child) == "from child"
    assert var.get() == "from root"


def test_base_exceptions_cross_join(mt):
    def exit_():
        sys.exit(3)

    with pytest.raises(SystemExit) as info:
        mt.run(exit_)
    assert info.value.code == 3
