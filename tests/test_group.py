"""Group: structured concurrency with ExceptionGroup errors."""

import sys

import pytest


def test_group_waits_for_every_child(mt):
    log = []

    def child(delay, name):
        mt.sleep(delay)
        log.append(name)
        return name

    with mt.Group() as group:
        slow = group.start(child, 0.02, "slow")
        fast = group.start(child, 0, "fast")
        assert log == []
    assert sorted(log) == ["fast", "slow"]
    assert slow.done() and fast.done()
    assert slow.join() == "slow" and fast.join() == "fast"
    assert group.children == [slow, fast]


def test_group_inside_a_micro_thread(mt):
    def parent():
        with mt.Group() as group:
            children = [group.start(lambda i=i: i * i) for i in range(4)]
        return [child.join() for child in children]

    assert mt.run(parent) == [0, 1, 4, 9]


def test_one_failure_kills_the_others(mt):
    error = ValueError("child failed")
    cleanups = []

    def failing():
        mt.sleep(0.01)
        raise error

    def sleeper(name):
        try:
            mt.sleep(60)
        finally:
            cleanups.append(name)

    with pytest.raises(mt.ExceptionGroup) as info:
        with mt.Group() as group:
            group.start(sleeper, "a")
            group.start(failing)
            group.start(sleeper, "b")
    assert list(info.value.exceptions) == [error]
    assert info.value.exceptions[0] is error
    assert sorted(cleanups) == ["a", "b"]
    assert all(child.done() for child in group.children)


def test_all_failures_are_collected_in_start_order(mt):
    first, second = KeyError("first"), IndexError("second")

    def fail_later(exc):
        mt.sleep(0)  # both fail before either is killed
        raise exc

    with pytest.raises(mt.ExceptionGroup) as info:
        with mt.Group() as group:
            group.start(fail_later, first)
            group.start(fail_later, second)
    assert list(info.value.exceptions) == [first, second]


def test_body_failure_kills_the_children(mt):
    error = RuntimeError("body failed")
    cleanups = []

    def sleeper():
        try:
            mt.sleep(60)
        finally:
            cleanups.append("child")

    with pytest.raises(mt.ExceptionGroup) as info:
        with mt.Group() as group:
            group.start(sleeper)
            mt.sleep(0)
            raise error
    assert list(info.value.exceptions) == [error]
    assert cleanups == ["child"]


def test_body_failure_comes_first(mt):
    body_error, child_error = ValueError("body"), KeyError("child")

    def failing():
        raise child_error

    with pytest.raises(mt.ExceptionGroup) as info:
        with mt.Group() as group:
            group.start(failing)
            mt.sleep(0)
            raise body_error
    assert list(info.value.exceptions) == [body_error, child_error]


def test_children_killed_before_they_started_are_not_failures(mt):
    log = []

    def failing():
        raise ValueError("x")

    with pytest.raises(mt.ExceptionGroup) as info:
        with mt.Group() as group:
            group.start(failing)
            group.start(log.append, "never runs")
    assert len(info.value.exceptions) == 1
    assert log == []


def test_start_after_failure_is_killed_at_once(mt):
    def failing():
        raise ValueError("x")

    late = []
    with pytest.raises(mt.ExceptionGroup):
        with mt.Group() as group:
            group.start(failing)
            mt.sleep(0)
            late.append(group.start(mt.sleep, 60))
    assert late[0].done()
    with pytest.raises(mt.MicroThreadExit):
        late[0].join()


def test_children_may_start_siblings(mt):
    results = []

    def spawner(group):
        group.start(results.append, "sibling")

    with mt.Group() as group:
        group.start(spawner, group)
    assert results == ["sibling"]


def test_start_outside_the_with_block_fails(mt):
    group = mt.Group()
    with pytest.raises(RuntimeError):
        group.start(print)
    with group:
        pass
    with pytest.raises(RuntimeError):
        group.start(print)
    with pytest.raises(RuntimeError):
        with group:
            pass


def test_start_requires_a_callable(mt):
    with mt.Group() as group:
        with pytest.raises(TypeError):
            group.start(42)
    assert group.children == []


def test_timeout_passes_through_unwrapped(mt):
    cleanups = []

    def sleeper():
        try:
            mt.sleep(60)
        finally:
            cleanups.append("child")

    with pytest.raises(TimeoutError):
        with mt.timeout(0.02):
            with mt.Group() as group:
                group.start(sleeper)
    assert cleanups == ["child"]
    assert all(child.done() for child in group.children)


def test_killed_parent_kills_its_children(mt):
    cleanups = []

    def sleeper():
        try:
            mt.sleep(60)
        finally:
            cleanups.append("child")

    def parent():
        with mt.Group() as group:
            group.start(sleeper)
            group.start(sleeper)

    thread = mt.start(parent)
    mt.sleep(0)
    assert thread.blocked_on.startswith("join <")
    thread.kill()
    with pytest.raises(mt.MicroThreadExit):
        thread.join()
    assert cleanups == ["child", "child"]


def test_child_failures_are_reported_when_the_group_is_interrupted(
        mt, monkeypatch):
    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)
    error = ValueError("lost?")

    def fails_on_kill():
        try:
            mt.sleep(60)
        finally:
            raise error

    with pytest.raises(TimeoutError):
        with mt.timeout(0.01):
            with mt.Group() as group:
                group.start(fails_on_kill)
    assert [r.exc_value for r in reported] == [error]


def test_child_system_exit_is_reraised_unwrapped(mt):
    def exiting():
        raise SystemExit(7)

    with pytest.raises(SystemExit) as info:
        with mt.Group() as group:
            group.start(exiting)
    assert info.value.code == 7


def test_nested_groups(mt):
    error = OSError("deep")

    def inner():
        with mt.Group() as group:
            group.start(lambda: (_ for _ in ()).throw(error))

    with pytest.raises(mt.ExceptionGroup) as info:
        with mt.Group() as group:
            group.start(inner)
    (nested,) = info.value.exceptions
    assert isinstance(nested, mt.ExceptionGroup)
    assert list(nested.exceptions) == [error]


def test_group_repr(mt):
    group = mt.Group()
    assert "new" in repr(group)
    with group:
        assert "open" in repr(group)
    assert "closed" in repr(group)
