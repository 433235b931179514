"""Tests for the interpreter side of micro-threads.

These test the rules of the core -- Python/microthread.c, the eval loop
changes (the "error:" compare, mt_suspend/mt_resume, heap frames, inlined
__enter__/__exit__/f(*args) and the FOR_ITER marker) and the native
_micro_thread kernel -- that only a patched interpreter can show: frames are
kept (no handler runs) when a micro-thread suspends, values and exceptions
arrive at the call site, blocking calls that cannot defer still give correct
results ("pinning"), per-micro-thread interpreter state, and the lifecycle
of suspended frames.  The public API on both implementations is tested by
the separate behavioural suite (tests/ in the micro-thread repository).

How a test tells a deferral from pinning: a micro-thread that deferred lets
the root run again while it is blocked (its state is 'blocked' after the
root's micro_thread.sleep(0)); a pinned micro-thread runs the scheduler on
its own C stack, so whatever runs while it is blocked sees its frames below
its own (see _callers()).
"""

import builtins
import contextlib
import contextvars
import faulthandler
import gc
import operator
import os
import sys
import tempfile
import textwrap
import threading
import traceback
import types
import unittest
import weakref
from test import support
from test.support import import_helper, script_helper, threading_helper
from test.support import warnings_helper

from test.support import micro_thread_helper
from test.support.micro_thread_helper import _micro_thread, micro_thread


# Run in a child process by a test: this aborted debug builds (an assertion
# in _PyMicroThread_Run() expected mt->base to be NULL after any run, but a
# base frame that never left the data stack is popped without clearing it).
_FINISH_WITHOUT_SUSPENDING = (
    "import micro_thread.native as m\n"
    "assert m.run(lambda: 42) == 42\n"
    "assert m.run(sorted, [2, 1]) == [1, 2]\n")


def _callers():
    """The code objects of every Python frame below the caller's."""
    codes = set()
    f = sys._getframe(2)
    while f is not None:
        codes.add(f.f_code)
        f = f.f_back
    return codes


def _stack_depth():
    """The number of Python frames below the caller's, and its own."""
    n = 0
    f = sys._getframe(1)
    while f is not None:
        n += 1
        f = f.f_back
    return n


def _probe_recursion():
    """How many more Python frames fit before RecursionError."""
    def recurse(n):
        try:
            return recurse(n + 1)
        except RecursionError:
            return n
    return recurse(0)


def _tb_tail(exc, n):
    """The last n (function name, line number) pairs of exc's traceback."""
    return [(f.name, f.lineno)
            for f in traceback.extract_tb(exc.__traceback__)[-n:]]


class _Monitoring:
    """Use a free sys.monitoring tool id for the duration of a with block."""

    def __init__(self, events, callbacks):
        self.events = events
        self.callbacks = callbacks   # {event: callback}

    def __enter__(self):
        mon = sys.monitoring
        for tool in range(6):
            if mon.get_tool(tool) is None:
                break
        else:
            raise unittest.SkipTest("no free sys.monitoring tool id")
        self.tool = tool
        mon.use_tool_id(tool, "test_micro_thread")
        for event, callback in self.callbacks.items():
            mon.register_callback(tool, event, callback)
        mon.set_events(tool, self.events)
        return self

    def __exit__(self, *exc):
        mon = sys.monitoring
        mon.set_events(self.tool, 0)
        for event in self.callbacks:
            mon.register_callback(self.tool, event, None)
        mon.free_tool_id(self.tool)


class _Trace:
    """sys.settrace() (or sys.setprofile()) for the duration of a with block."""

    def __init__(self, func, profile=False):
        self.func = func
        self.profile = profile

    def __enter__(self):
        if self.profile:
            self.old = sys.getprofile()
            sys.setprofile(self.func)
        else:
            self.old = sys.gettrace()
            sys.settrace(self.func)
        return self

    def __exit__(self, *exc):
        if self.profile:
            sys.setprofile(self.old)
        else:
            sys.settrace(self.old)


class MicroThreadTestCase(micro_thread_helper.MicroThreadTestCase):
    """Base class with helpers for feeding and joining micro-threads."""

    def join_exception(self, t, exc_type):
        """Join t, which must raise exc_type; return the exception.

        (assertRaises() would drop its traceback and clear its frames.)
        """
        try:
            t.join()
        except exc_type as exc:
            return exc
        self.fail(f"{t!r} did not raise {exc_type.__name__}")

    def feed_worker(self, worker, suspend):
        """Run worker(pipe) on the items 1, 2, 3; return its result.

        With suspend, each item arrives while worker is blocked in the pipe
        (it suspends three times); without, they are all there at once.
        """
        pipe = micro_thread.MicroPipe()
        if not suspend:
            for item in (1, 2, 3):
                pipe.put(item)
            pipe.close()
        t = micro_thread.start(worker, pipe)
        micro_thread.sleep(0)
        if suspend:
            for item in (1, 2, 3):
                self.assertEqual(t.state, 'blocked')
                pipe.put(item)
                micro_thread.sleep(0)
            pipe.close()
        return t.join()

    def run_checking_recursion(self, pipe, puts, fn, *args):
        """Start fn(*args) and feed it puts items through pipe, checking at
        each suspension that the root's recursion headroom is unchanged;
        return fn's result."""
        root = _probe_recursion()
        t = micro_thread.start(fn, *args)
        for i in range(puts):
            micro_thread.sleep(0)
            self.assertEqual(t.state, 'blocked')
            self.assertEqual(_probe_recursion(), root)
            pipe.put(i)
        res = t.join()
        self.assertEqual(_probe_recursion(), root)
        return res

    def start_blocked(self, fn, *args, **kwargs):
        """Start fn and let it run until it blocks; check it deferred."""
        t = micro_thread.start(fn, *args, **kwargs)
        micro_thread.sleep(0)
        # A pinned micro-thread would still be on the C stack, and the
        # root could not have got here while it is blocked.
        self.assertEqual(t.state, 'blocked')
        return t


# ---------------------------------------------------------------------------
# Facts the C API makes visible from Python


class CoreFactsTests(unittest.TestCase):

    def test_cdeferred(self):
        CDeferred = micro_thread.CDeferred
        self.assertIs(CDeferred, _micro_thread.CDeferred)
        self.assertTrue(issubclass(CDeferred, NotImplementedError))
        self.assertIsNot(CDeferred, NotImplementedError)
        self.assertEqual(CDeferred.__name__, 'CDeferred')
        self.assertEqual(CDeferred.__module__, 'micro_thread')

    def test_micro_thread_exit(self):
        MicroThreadExit = micro_thread.MicroThreadExit
        self.assertIs(MicroThreadExit, _micro_thread.MicroThreadExit)
        self.assertTrue(issubclass(MicroThreadExit, BaseException))
        self.assertFalse(issubclass(MicroThreadExit, Exception))
        self.assertEqual(MicroThreadExit.__module__, 'micro_thread')

    def test_not_builtins(self):
        for name in ('CDeferred', 'MicroThreadExit'):
            self.assertNotIn(name, vars(builtins))
        values = list(vars(builtins).values())
        self.assertFalse(any(v is micro_thread.CDeferred for v in values))
        self.assertFalse(any(v is micro_thread.MicroThreadExit for v in values))

    def test_sys_implementation(self):
        self.assertIs(sys.implementation._micro_threads, True)

    def test_sys_version(self):
        self.assertTrue(sys.version.endswith("with micro-threads"), sys.version)
        # The marker comes last: "version (buildinfo) [compiler]" still
        # parses, and it is not taken for part of the compiler.
        import platform
        self.assertEqual(platform.python_version(),
                         '%d.%d.%d' % sys.version_info[:3])
        self.assertTrue(platform.python_compiler())
        self.assertNotIn('micro-threads', platform.python_compiler())
        self.assertIn(f'[{platform.python_compiler()}]', sys.version)

    def test_micro_thread_that_never_suspends(self):
        # In a child process, so that a crash fails this test only.
        script_helper.assert_python_ok('-c', _FINISH_WITHOUT_SUSPENDING)


# ---------------------------------------------------------------------------
# Suspension keeps the frames and runs no handler


class SuspensionTests(MicroThreadTestCase):

    def test_finally_does_not_run_at_suspension(self):
        pipe = micro_thread.MicroPipe()
        log = []

        def inner():
            try:
                return pipe.get()
            finally:
                log.append('inner')

        def outer():
            try:
                return inner() * 2
            finally:
                log.append('outer')

        t = self.start_blocked(outer)
        self.assertEqual(log, [])
        micro_thread.sleep(0)
        self.assertEqual(log, [])
        pipe.put(21)
        self.assertEqual(t.join(), 42)
        self.assertEqual(log, ['inner', 'outer'])

    def test_except_does_not_run_at_suspension(self):
        # CDeferred is a NotImplementedError: no handler may see it.
        pipe = micro_thread.MicroPipe()
        log = []

        def worker():
            try:
                value = pipe.get()
            except NotImplementedError as exc:
                log.append(('NotImplementedError', exc))
                raise
            except BaseException as exc:
                log.append(('BaseException', exc))
                raise
            else:
                log.append(('else', value))
            return value

        t = self.start_blocked(worker)
        self.assertEqual(log, [])
        pipe.put('v')
        self.assertEqual(t.join(), 'v')
        self.assertEqual(log, [('else', 'v')])

    def test_with_exit_does_not_run_at_suspension(self):
        pipe = micro_thread.MicroPipe()
        log = []

        class CM:
            def __enter__(self):
                log.append('enter')
                return self

            def __exit__(self, *exc_info):
                log.append(('exit', exc_info[0]))

        lock = threading.Lock()     # a C __exit__

        def worker():
            with CM(), lock:
                return pipe.get()

        t = self.start_blocked(worker)
        self.assertEqual(log, ['enter'])
        self.assertTrue(lock.locked())
        pipe.put(1)
        self.assertEqual(t.join(), 1)
        self.assertFalse(lock.locked())
        self.assertEqual(log, ['enter', ('exit', None)])

    def test_handlers_run_exactly_once_on_kill(self):
        pipe = micro_thread.MicroPipe()
        log = []

        class CM:
            def __enter__(self):
                return self

            def __exit__(self, exc_type, exc, tb):
                log.append(('exit', exc_type))

        def worker():
            with CM():
                try:
                    try:
                        pipe.get()
                    except micro_thread.MicroThreadExit:
                        log.append('except')
                        raise
                finally:
                    log.append('finally')

        t = self.start_blocked(worker)
        self.assertEqual(log, [])
        t.kill()
        self.assertEqual(log, [])   # kill() does not switch
        with self.assertRaises(micro_thread.MicroThreadExit):
            t.join()
        self.assertEqual(log, ['except', 'finally',
                               ('exit', micro_thread.MicroThreadExit)])

    def test_getframe_identity_across_resume(self):
        pipe = micro_thread.MicroPipe()
        seen = {}

        def inner():
            before = sys._getframe()
            caller = sys._getframe(1)
            pipe.get()
            seen['inner'] = sys._getframe() is before
            seen['caller'] = sys._getframe(1) is caller
            seen['back'] = before.f_back is caller
            return before

        def outer():
            me = sys._getframe()
            f = inner()
            seen['outer'] = sys._getframe() is me
            return f, me

        t = self.start_blocked(outer)
        pipe.put(None)
        inner_frame, outer_frame = t.join()
        self.assertEqual(seen, dict(inner=True, caller=True, back=True,
                                    outer=True))
        self.assertIs(inner_frame.f_code, inner.__code__)
        self.assertIs(outer_frame.f_code, outer.__code__)

    def test_frame_objects_while_suspended(self):
        pipe = micro_thread.MicroPipe()
        frames = {}
        lines = {}
        marker = object()

        def inner(x):
            y = marker
            frames['inner'] = sys._getframe()
            lines['inner'] = sys._getframe().f_lineno + 1
            value = pipe.get()
            return x, y, value

        def outer():
            frames['outer'] = sys._getframe()
            lines['outer'] = sys._getframe().f_lineno + 1
            result = inner(7)
            return result

        t = self.start_blocked(outer)
        fi, fo = frames['inner'], frames['outer']
        self.assertEqual(fi.f_lineno, lines['inner'])
        self.assertEqual(fo.f_lineno, lines['outer'])
        self.assertIs(fi.f_back, fo)
        # The base frame is unlinked from the root while suspended.
        self.assertIsNone(fo.f_back)
        self.assertEqual(fi.f_locals['x'], 7)
        self.assertIs(fi.f_locals['y'], marker)
        self.assertNotIn('value', fi.f_locals)
        self.assertNotIn('result', fo.f_locals)
        self.assertEqual(t.stack(), [fo, fi])
        self.assertEqual([f.name for f in traceback.extract_stack(fi)],
                         ['outer', 'inner'])
        pipe.put('v')
        self.assertEqual(t.join(), (7, marker, 'v'))
        # The frames outlive the micro-thread, with their final state.
        self.assertEqual(fi.f_locals['value'], 'v')
        self.assertEqual(fo.f_locals['result'], (7, marker, 'v'))
        self.assertIs(fi.f_back, fo)

    def test_f_locals_write_while_suspended(self):
        pipe = micro_thread.MicroPipe()
        frames = []

        def worker():
            x = 1
            frames.append(sys._getframe())
            pipe.get()
            return x

        t = self.start_blocked(worker)
        frames[0].f_locals['x'] = 99
        pipe.put(None)
        self.assertEqual(t.join(), 99)

    def test_clear_suspended_frame(self):
        pipe = micro_thread.MicroPipe()
        frames = []

        def inner():
            value = 'local'
            frames.append(sys._getframe())
            pipe.get()
            return value

        def outer():
            frames.append(sys._getframe())
            return inner()

        t = self.start_blocked(outer)
        for f in frames:
            with self.assertRaisesRegex(RuntimeError, "suspended frame"):
                f.clear()
        self.assertEqual(frames[1].f_locals['value'], 'local')
        pipe.put(None)
        self.assertEqual(t.join(), 'local')
        # Finished: clearing is allowed now.
        for f in frames:
            f.clear()
        self.assertEqual(dict(frames[1].f_locals), {})

    def test_clear_running_frame(self):
        pipe = micro_thread.MicroPipe()

        def worker():
            pipe.get()          # the frame is a heap frame from now on
            try:
                sys._getframe().clear()
            except RuntimeError as exc:
                return str(exc)
            return 'cleared'

        t = self.start_blocked(worker)
        pipe.put(None)
        self.assertIn('executing', t.join())

    def test_f_lineno_of_suspended_frame_cannot_be_set(self):
        pipe = micro_thread.MicroPipe()
        frames = []

        def worker():
            frames.append(sys._getframe())
            pipe.get()
            return 'done'

        t = self.start_blocked(worker)
        line = frames[0].f_lineno
        with self.assertRaisesRegex(ValueError, "suspended micro-thread"):
            frames[0].f_lineno = line - 1
        self.assertEqual(frames[0].f_lineno, line)
        pipe.put(None)
        self.assertEqual(t.join(), 'done')

    def test_gc_traverses_suspended_frames(self):
        pipe = micro_thread.MicroPipe()
        frames = []

        class Marker:
            pass

        def inner(obj):
            frames.append(sys._getframe())
            pipe.get()
            return obj

        def outer():
            frames.append(sys._getframe())
            return inner(Marker())

        t = self.start_blocked(outer)
        referents = gc.get_referents(t)
        for f in frames:
            self.assertTrue(any(r is f for r in referents))
        marker = frames[1].f_locals['obj']
        self.assertTrue(any(r is t for r in gc.get_referrers(marker)))
        del marker
        for f in frames:
            gc.get_referrers(f)
            gc.get_referents(f)
        gc.collect()
        gc.collect()
        self.assertEqual(t.state, 'blocked')
        pipe.put(None)
        self.assertIsInstance(t.join(), Marker)

    def test_gc_sees_the_arguments_of_a_micro_thread_not_started(self):
        # The argument tuple is the micro-thread's alone until it starts:
        # the collector reaches the arguments through the micro-thread.
        class Node:
            pass

        node = Node()
        t = micro_thread.start(lambda n: n, node)
        node.t = t                  # a cycle through the argument
        self.assertTrue(any(r is node for r in gc.get_referents(t)))
        gc.collect()
        self.assertIs(t.join(), node)
        del node.t

    def test_function_of_exec_mode_code(self):
        # Code that is not optimized (compiled in 'exec' mode) stores its
        # names in the function's globals, as when called directly.
        ns = {}
        fn = types.FunctionType(compile('x = 42', '<test>', 'exec'), ns)
        self.assertIsNone(micro_thread.start(fn).join())
        self.assertEqual(ns['x'], 42)

    def test_arguments_kept_by_a_c_callable_are_tracked(self):
        # A callable run through C (keywords, more than three arguments) may
        # keep the argument tuple itself: it must be tracked again by then.
        t = micro_thread.start(ValueError, [], [], [], [])
        exc = t.join()
        self.assertEqual(exc.args, ([], [], [], []))
        self.assertTrue(gc.is_tracked(exc.args))

    def test_gc_collect_in_micro_thread_while_others_suspended(self):
        pipe = micro_thread.MicroPipe()

        def sleeper(n):
            data = [object() for _ in range(n)]
            data.append(data)       # a cycle that must survive
            pipe.get()
            return len(data)

        def collector():
            for _ in range(3):
                gc.collect()
                micro_thread.sleep(0)
            return 'collected'

        sleepers = [micro_thread.start(sleeper, n) for n in range(10)]
        c = micro_thread.start(collector)
        self.assertEqual(c.join(), 'collected')
        for _ in sleepers:
            pipe.put(None)
        self.assertEqual([s.join() for s in sleepers],
                         [n + 1 for n in range(10)])

    def test_deep_stack_suspended_and_resumed_many_times(self):
        pipe = micro_thread.MicroPipe()
        depths = []

        def deep(n):
            if n:
                return deep(n - 1) + 1
            total = 0
            for _ in range(300):
                total += pipe.get()
                depths.append(len(micro_thread.current().stack()))
            return total

        t = self.start_blocked(deep, 100)
        self.assertEqual(len(t.stack()), 101)
        for i in range(300):
            pipe.put(i)
            micro_thread.sleep(0)
            self.assertEqual(t.state, 'blocked' if i < 299 else 'finished')
        self.assertEqual(t.join(), sum(range(300)) + 100)
        self.assertEqual(depths, [101] * 300)

    def test_suspended_stack_mixing_heap_and_new_frames(self):
        # Suspend, resume, call deeper, suspend again: the frames pushed
        # since the last resume join the heap frames.
        pipe = micro_thread.MicroPipe()

        def level(n, acc):
            acc.append(pipe.get())
            if n:
                level(n - 1, acc)
            acc.append(pipe.get())
            return acc

        t = self.start_blocked(level, 20, [])
        sizes = []
        for i in range(42):
            sizes.append(len(t.stack()))
            pipe.put(i)
            micro_thread.sleep(0)
        self.assertEqual(t.join(), list(range(42)))
        self.assertEqual(sizes, list(range(1, 22)) + list(range(21, 0, -1)))

    def test_specialization_while_suspended(self):
        # The code a micro-thread is suspended in gets specialized (or
        # re-specialized) by other calls; it still resumes at the right
        # place: CALL, CALL_KW and the FOR_ITER that is executed again.
        pipe = micro_thread.MicroPipe()

        class Source:
            def get(self):
                return 7

            def join(self, timeout=None):
                return timeout

        def call(src):
            return src.get() + 1

        def call_kw(src):
            return src.join(timeout=5)

        def loop(iterable):
            out = []
            for x in iterable:
                out.append(x)
            return out

        other = micro_thread.start(pipe.get)
        a = micro_thread.start(call, pipe)
        b = micro_thread.start(call_kw, other)
        c = micro_thread.start(loop, pipe)
        micro_thread.sleep(0)
        self.assertEqual([t.state for t in (other, a, b, c)], ['blocked'] * 4)
        src = Source()
        for _ in range(1000):
            self.assertEqual(call(src), 8)
            self.assertEqual(call_kw(src), 5)
            self.assertEqual(loop([1, 2]), [1, 2])
            self.assertEqual(loop(range(2)), [0, 1])
        pipe.put('other')
        pipe.put(41)
        pipe.put('x')
        pipe.close()
        self.assertEqual(a.join(), 42)
        self.assertEqual(b.join(), 'other')
        self.assertEqual(c.join(), ['x'])

    def test_value_stack_is_preserved(self):
        pipe = micro_thread.MicroPipe()

        def build():
            return (1, pipe.get(), 'x', pipe.get(), [pipe.get(), {'k': pipe.get()}])

        def fmt():
            return f"{pipe.get()}-{pipe.get()!r}-{3 + pipe.get()}"

        def augmented():
            d = {'k': 1}
            d['k'] += pipe.get()
            l = [2]
            l[0] *= pipe.get()
            return d, l

        def chained():
            x = 5
            return 1 < x < pipe.get() < 100

        def unpack():
            a, (b, *c) = pipe.get(), pipe.get()
            return a, b, c

        cases = [
            (build, [1, 2, 3, 4], (1, 1, 'x', 2, [3, {'k': 4}])),
            (fmt, ['a', 'b', 4], "a-'b'-7"),
            (augmented, [2, 3], ({'k': 3}, [6])),
            (chained, [10], True),
            (unpack, ['a', 'bcd'], ('a', 'b', ['c', 'd'])),
        ]
        for fn, items, expected in cases:
            with self.subTest(fn.__name__):
                t = self.start_blocked(fn)
                for item in items:
                    self.assertEqual(t.state, 'blocked')
                    pipe.put(item)
                    micro_thread.sleep(0)
                self.assertEqual(t.join(), expected)

    def test_large_frame(self):
        # A frame bigger than pymalloc's small-block limit.
        pipe = micro_thread.MicroPipe()
        names = [f'v{i}' for i in range(300)]
        src = ("def big(pipe):\n"
               + "".join(f"    {n} = {i}\n" for i, n in enumerate(names))
               + "    got = pipe.get()\n"
               + "    return [" + ", ".join(names) + ", got]\n")
        ns = {}
        exec(src, ns)
        t = self.start_blocked(ns['big'], pipe)
        pipe.put('end')
        self.assertEqual(t.join(), list(range(300)) + ['end'])

    def test_cells_are_preserved(self):
        pipe = micro_thread.MicroPipe()

        def worker():
            n = 0

            def bump():
                nonlocal n
                n += pipe.get()
                return n

            bump()
            bump()
            return n, bump.__closure__[0].cell_contents

        t = self.start_blocked(worker)
        pipe.put(2)
        micro_thread.sleep(0)
        pipe.put(3)
        self.assertEqual(t.join(), (5, 5))


# ---------------------------------------------------------------------------
# Values and exceptions arrive at the call site


class GeneratorTests(MicroThreadTestCase):
    """A generator resumed by a for loop or yield from runs in the eval loop
    of its caller: a micro-thread can suspend inside it.  The generator
    frame stays in its generator; the micro-thread links it into its chain
    and relinks the generator's handled-exception item on each resume."""

    def test_for_loop_over_a_blocking_generator(self):
        pipe = micro_thread.MicroPipe()

        def items():
            while (item := pipe.get()) is not None:
                yield item * 2

        def consumer():
            return [x for x in items()]

        pins = micro_thread.pin_count()
        t = self.start_blocked(consumer)
        self.assertEqual([f.f_code.co_name for f in t.stack()],
                         ['consumer', 'items'])
        for i in range(5):
            pipe.put(i)
            micro_thread.sleep(0)
            self.assertEqual(t.state, 'blocked')
        pipe.put(None)
        self.assertEqual(t.join(), [0, 2, 4, 6, 8])
        self.assertEqual(micro_thread.pin_count(), pins)

    def test_yield_from_chain(self):
        pipe = micro_thread.MicroPipe()

        def leaf():
            value = pipe.get()
            yield value
            return 'leaf done'

        def middle():
            result = yield from leaf()
            yield result

        def consumer():
            return [x for x in middle()]

        pins = micro_thread.pin_count()
        t = self.start_blocked(consumer)
        self.assertEqual([f.f_code.co_name for f in t.stack()],
                         ['consumer', 'middle', 'leaf'])
        stack = ''.join(traceback.format_list(
            traceback.extract_stack(t.stack()[-1])))
        self.assertIn('in leaf', stack)
        self.assertIn('in consumer', stack)
        pipe.put('v')
        self.assertEqual(t.join(), ['v', 'leaf done'])
        self.assertEqual(micro_thread.pin_count(), pins)

    def test_generator_runs_while_its_micro_thread_is_suspended(self):
        pipe = micro_thread.MicroPipe()

        def gen():
            yield pipe.get()

        g = gen()

        def consumer():
            return [x for x in g]

        t = self.start_blocked(consumer)
        self.assertEqual(inspect_state(g), 'GEN_RUNNING')
        with self.assertRaisesRegex(ValueError, 'already executing'):
            next(g)
        with self.assertRaisesRegex(ValueError, 'already executing'):
            g.close()
        pipe.put(1)
        self.assertEqual(t.join(), [1])
        self.assertEqual(inspect_state(g), 'GEN_CLOSED')

    def test_handled_exceptions_across_switches(self):
        pipe = micro_thread.MicroPipe()
        seen = []

        def gen():
            try:
                raise KeyError('in gen')
            except KeyError:
                pipe.get()
                seen.append(('gen', sys.exception()))
                yield 1
                seen.append(('gen again', sys.exception()))
            seen.append(('gen after', sys.exception()))
            yield 2

        def consumer():
            try:
                raise ValueError('in consumer')
            except ValueError:
                for x in gen():
                    seen.append(('consumer', x, sys.exception()))
                    pipe.get()
            return sys.exception()

        def other():
            try:
                raise OSError('other')
            except OSError:
                for _ in range(3):
                    micro_thread.sleep(0)
                    seen.append(('other', sys.exception()))

        c = self.start_blocked(consumer)
        o = micro_thread.start(other)
        for _ in range(3):
            micro_thread.sleep(0)
            pipe.put(None)
        self.assertIsNone(c.join())
        o.join()
        self.assertIsNone(sys.exception())
        kinds = [(e[0], type(e[-1]).__name__) for e in seen]
        self.assertEqual(
            [k for k in kinds if k[0] != 'other'],
            [('gen', 'KeyError'), ('consumer', 'ValueError'),
             ('gen again', 'KeyError'),
             # handled by no one in the generator: its caller's
             ('gen after', 'ValueError'),
             ('consumer', 'ValueError')])
        self.assertEqual({k for k in kinds if k[0] == 'other'},
                         {('other', 'OSError')})

    def test_kill_unwinds_the_generator(self):
        pipe = micro_thread.MicroPipe()
        log = []

        g = _closing_generator(pipe, log, 'gen finally')

        def consumer():
            try:
                for x in g:
                    pass
            finally:
                log.append('consumer finally')

        t = self.start_blocked(consumer)
        t.kill()
        self.join_exception(t, micro_thread.MicroThreadExit)
        self.assertEqual(log, ['gen finally', 'consumer finally'])
        self.assertEqual(inspect_state(g), 'GEN_CLOSED')

    def test_garbage_micro_thread_in_a_generator_is_closed(self):
        log = []

        def consumer():
            pipe = micro_thread.MicroPipe()
            for x in _closing_generator(pipe, log, 'gen finally'):
                pass

        t = self.start_blocked(consumer)
        ref = weakref.ref(t)
        with support.catch_unraisable_exception() as cm:
            del t
            support.gc_collect()
            self.assertIsNone(cm.unraisable)
        self.assertIsNone(ref())
        self.assertEqual(log, ['gen finally'])

    @threading_helper.requires_working_threading()
    @threading_helper.reap_threads
    def test_dropped_without_running_clears_the_generator(self):
        gens = []
        log = []

        def make_worker(pipe):
            def worker():
                g = _closing_generator(pipe, log, 'finally')
                gens.append(weakref.ref(g))
                for x in g:
                    pass
            return worker

        ref = weakref.ref(_blocked_in_ended_os_thread(make_worker))
        support.gc_collect()
        self.assertIsNone(ref())
        self.assertEqual(log, [])
        self.assertIsNone(gens[0]())

    def test_gc_while_suspended_in_a_generator(self):
        pipe = micro_thread.MicroPipe()

        class Node:
            pass

        def gen():
            node = Node()
            node.self = node            # a cycle only the frame holds
            pipe.get()
            yield node

        def consumer():
            return [x for x in gen()]

        t = self.start_blocked(consumer)
        for _ in range(3):
            support.gc_collect()
        self.assertEqual(t.state, 'blocked')
        pipe.put(None)
        (node,) = t.join()
        self.assertIs(node.self, node)

    def test_recursion_accounting_in_generators(self):
        pipe = micro_thread.MicroPipe()

        def gen(depth, out):
            if depth:
                yield from gen(depth - 1, out)
                return
            for _ in range(3):
                before = _probe_recursion()
                pipe.get()
                out.append(before - _probe_recursion())
                yield before

        def consumer(out):
            return [[x for x in gen(d, out)] for d in (0, 30, 5)]

        out = []
        res = self.run_checking_recursion(pipe, 9, consumer, out)
        self.assertEqual(out, [0] * 9)
        depths = [r[0] for r in res]
        self.assertEqual([depths[0] - d for d in depths], [0, 30, 5])

    def test_blocking_generator_under_settrace(self):
        pipe = micro_thread.MicroPipe()
        events = []

        def gen():
            for _ in range(2):
                yield pipe.get()

        def consumer():
            return [x for x in gen()]

        def tracer(frame, event, arg):
            if frame.f_code is gen.__code__:
                events.append(event)
            return tracer

        pins = micro_thread.pin_count()
        with _Trace(tracer):
            t = self.start_blocked(consumer)
            pipe.put(1)
            micro_thread.sleep(0)
            self.assertEqual(t.state, 'blocked')
            pipe.put(2)
            self.assertEqual(t.join(), [1, 2])
        self.assertEqual(micro_thread.pin_count(), pins)
        self.assertEqual(events.count('call'), 3)
        self.assertEqual(events.count('return'), 3)

    def test_generator_leaves_the_chain_before_the_next_suspension(self):
        pipe = micro_thread.MicroPipe()

        def gen():
            yield pipe.get()

        def consumer():
            got = [x for x in gen()]     # suspends in the generator
            got.append(pipe.get())       # then in a plain frame
            got.append(_probe_recursion())
            return got

        root = _probe_recursion()
        t = self.start_blocked(consumer)
        pipe.put(1)
        micro_thread.sleep(0)
        self.assertEqual(t.state, 'blocked')
        self.assertEqual([f.f_code.co_name for f in t.stack()], ['consumer'])
        pipe.put(2)
        got = t.join()
        self.assertEqual(got[:2], [1, 2])
        self.assertEqual(_probe_recursion(), root)


def inspect_state(gen):
    import inspect
    return inspect.getgeneratorstate(gen)


def _blocked_in_ended_os_thread(make_worker):
    """Start make_worker(pipe)() as a micro-thread in an OS thread that then
    ends, leaving it blocked on pipe; return it."""
    box = []

    def other():
        pipe = micro_thread.MicroPipe()
        box.append(micro_thread.start(make_worker(pipe)))
        micro_thread.sleep(0)

    thread = threading.Thread(target=other)
    with threading_helper.start_threads([thread]):
        pass
    assert box[0].state == 'blocked', box[0]
    return box.pop()


def _closing_generator(pipe, log, message):
    """Yield one item got from pipe; log message when closed."""
    try:
        yield pipe.get()
    finally:
        log.append(message)


class CallSiteTests(MicroThreadTestCase):

    def test_call(self):
        pipe = micro_thread.MicroPipe()

        def inner(a):
            return a, pipe.get()

        def outer():
            return ['before', inner('a'), 'after']

        t = self.start_blocked(outer)
        pipe.put('v')
        self.assertEqual(t.join(), ['before', ('a', 'v'), 'after'])

    def test_call_kw_to_deferring_function(self):
        pipe = micro_thread.MicroPipe()

        def joiner(target):
            return 'joined', target.join(timeout=support.SHORT_TIMEOUT)

        target = micro_thread.start(pipe.get)
        t = self.start_blocked(joiner, target)
        self.assertEqual(target.state, 'blocked')
        pipe.put(3)
        self.assertEqual(t.join(), ('joined', 3))

    def test_call_kw_to_python_function(self):
        pipe = micro_thread.MicroPipe()

        def inner(a, *, b, **kw):
            return a, b, kw, pipe.get()

        def outer():
            return inner(1, b=2, c=3), 'after'

        t = self.start_blocked(outer)
        pipe.put('v')
        self.assertEqual(t.join(), ((1, 2, {'c': 3}, 'v'), 'after'))

    def test_call_function_ex_on_function(self):
        pipe = micro_thread.MicroPipe()

        def fn(a, b, c=None):
            return a, b, c, pipe.get()

        def star():
            args = (1, 2)
            return fn(*args), 'after'

        def star_star():
            args, kwargs = (1,), {'b': 2, 'c': 3}
            return fn(*args, **kwargs), 'after'

        for worker, expected in [(star, (1, 2, None, 'v')),
                                 (star_star, (1, 2, 3, 'v'))]:
            with self.subTest(worker.__name__):
                t = self.start_blocked(worker)
                pipe.put('v')
                self.assertEqual(t.join(), (expected, 'after'))

    def test_call_function_ex_on_bound_method(self):
        pipe = micro_thread.MicroPipe()

        class C:
            def m(self, a, b=None):
                return self, a, b, pipe.get()

        obj = C()

        def star():
            args = (1,)
            return obj.m(*args)

        def star_star():
            kwargs = {'a': 1, 'b': 2}
            return obj.m(**kwargs)

        for worker, expected in [(star, (obj, 1, None, 'v')),
                                 (star_star, (obj, 1, 2, 'v'))]:
            with self.subTest(worker.__name__):
                t = self.start_blocked(worker)
                pipe.put('v')
                self.assertEqual(t.join(), expected)

    def test_with_body(self):
        pipe = micro_thread.MicroPipe()
        log = []

        class CM:
            def __enter__(self):
                return 'as'

            def __exit__(self, *exc_info):
                log.append(exc_info)

        def worker():
            with CM() as v:
                got = pipe.get()
            return v, got

        t = self.start_blocked(worker)
        pipe.put('v')
        self.assertEqual(t.join(), ('as', 'v'))
        self.assertEqual(log, [(None, None, None)])

    def test_enter_defers(self):
        pipe = micro_thread.MicroPipe()
        log = []

        class CM:
            def __enter__(self):
                return pipe.get()

            def __exit__(self, *exc_info):
                log.append(exc_info[0])

        def worker():
            with CM() as v:
                log.append(('body', v))
            return v

        t = self.start_blocked(worker)
        self.assertEqual(log, [])
        pipe.put('entered')
        self.assertEqual(t.join(), 'entered')
        self.assertEqual(log, [('body', 'entered'), None])

    def test_exit_defers_on_normal_exit(self):
        pipe = micro_thread.MicroPipe()
        log = []

        class CM:
            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                log.append(('exit', exc_info))
                log.append(('got', pipe.get()))

        def worker():
            with CM():
                log.append('body')
            return 'after'

        t = self.start_blocked(worker)
        self.assertEqual(log, ['body', ('exit', (None, None, None))])
        pipe.put('v')
        self.assertEqual(t.join(), 'after')
        self.assertEqual(log[-1], ('got', 'v'))

    def test_exit_defers_on_exception_exit(self):
        # The value __exit__ returns after resuming decides whether the
        # exception is suppressed.
        pipe = micro_thread.MicroPipe()
        log = []

        class CM:
            def __enter__(self):
                return self

            def __exit__(self, exc_type, exc, tb):
                log.append(exc_type)
                return pipe.get()

        def worker():
            with CM():
                raise KeyError('k')
            return 'suppressed'

        for suppress in (True, False):
            with self.subTest(suppress=suppress):
                log.clear()
                t = self.start_blocked(worker)
                self.assertEqual(log, [KeyError])
                pipe.put(suppress)
                if suppress:
                    self.assertEqual(t.join(), 'suppressed')
                else:
                    with self.assertRaises(KeyError):
                        t.join()
                self.assertEqual(log, [KeyError])

    def test_throw_into_exit(self):
        # An exception raised where __exit__ (normal exit) is suspended
        # propagates out of the with statement; __exit__ runs once.
        pipe = micro_thread.MicroPipe()
        log = []
        lines = {}

        class CM:
            def __enter__(self):
                return self

            def __exit__(self, *exc_info):
                log.append(exc_info[0])
                lines['exit'] = sys._getframe().f_lineno + 1
                pipe.get()

        def worker():
            lines['with'] = sys._getframe().f_lineno + 1
            with CM():
                pass

        t = self.start_blocked(worker)
        t.throw(ValueError('boom'))
        exc = self.join_exception(t, ValueError)
        self.assertEqual(log, [None])
        self.assertEqual(_tb_tail(exc, 2),
                         [('worker', lines['with']), ('__exit__', lines['exit'])])

    def test_kill_inside_enter_does_not_call_exit(self):
        pipe = micro_thread.MicroPipe()
        log = []

        class CM:
            def __enter__(self):
                log.append('enter')
                pipe.get()

            def __exit__(self, *exc_info):
                log.append('exit')

        def worker():
            try:
                with CM():
                    log.append('body')
            finally:
                log.append('finally')

        t = self.start_blocked(worker)
        t.kill()
        with self.assertRaises(micro_thread.MicroThreadExit):
            t.join()
        self.assertEqual(log, ['enter', 'finally'])

    def test_for_loop_over_pipe(self):
        pipe = micro_thread.MicroPipe()

        def worker():
            out = []
            for x in pipe:
                out.append(x)
            return out

        t = self.start_blocked(worker)
        for i in range(5):
            pipe.put(i)
            micro_thread.sleep(0)
            self.assertEqual(t.state, 'blocked')
        pipe.close()
        self.assertEqual(t.join(), [0, 1, 2, 3, 4])

    def test_throw_into_for_loop(self):
        pipe = micro_thread.MicroPipe()
        lines = {}

        def worker():
            out = []
            try:
                lines['for'] = sys._getframe().f_lineno + 1
                for x in pipe:
                    out.append(x)
            except ValueError as exc:
                return out, _tb_tail(exc, 1)

        t = self.start_blocked(worker)
        pipe.put(1)
        micro_thread.sleep(0)
        t.throw(ValueError)
        self.assertEqual(t.join(), ([1], [('worker', lines['for'])]))

    def test_list_comprehension_defers(self):
        # Comprehensions are inlined (PEP 709): no extra frame.
        pipe = micro_thread.MicroPipe()

        def worker():
            return [pipe.get() * 2 for _ in range(3)]

        t = self.start_blocked(worker)
        for i in range(3):
            self.assertEqual(t.state, 'blocked')
            pipe.put(i)
            micro_thread.sleep(0)
        self.assertEqual(t.join(), [0, 2, 4])

    def test_traceback_of_exception_thrown_at_suspension_point(self):
        pipe = micro_thread.MicroPipe()
        lines = {}

        def inner():
            lines['inner'] = sys._getframe().f_lineno + 1
            return pipe.get()

        def middle(**kw):
            lines['middle'] = sys._getframe().f_lineno + 1
            return inner()

        def outer():
            args = ()
            lines['outer'] = sys._getframe().f_lineno + 1
            return middle(*args, k=1)

        for how in ('throw', 'kill', 'close'):
            with self.subTest(how):
                t = self.start_blocked(outer)
                if how == 'throw':
                    exc = ValueError('boom')
                    t.throw(exc)
                    expected = ValueError
                elif how == 'kill':
                    t.kill()
                    expected = micro_thread.MicroThreadExit
                else:
                    pipe.close()
                    expected = micro_thread.PipeClosedError
                raised = self.join_exception(t, expected)
                if how == 'throw':
                    self.assertIs(raised, exc)
                self.assertEqual(_tb_tail(raised, 3),
                                 [('outer', lines['outer']),
                                  ('middle', lines['middle']),
                                  ('inner', lines['inner'])])
                pipe = micro_thread.MicroPipe()

    def test_traceback_of_exception_raised_after_resume(self):
        pipe = micro_thread.MicroPipe()
        frames = {}

        def inner():
            frames['inner'] = sys._getframe()
            pipe.get()
            raise KeyError('after')

        def outer():
            frames['outer'] = sys._getframe()
            return inner()

        t = self.start_blocked(outer)
        pipe.put(None)
        exc = self.join_exception(t, KeyError)
        tb_frames = [f for f, _ in traceback.walk_tb(exc.__traceback__)]
        self.assertIs(tb_frames[-1], frames['inner'])
        self.assertIs(tb_frames[-2], frames['outer'])

    def test_exception_caught_in_outer_frame(self):
        pipe = micro_thread.MicroPipe()

        def inner():
            try:
                return pipe.get()
            finally:
                pass

        def outer():
            try:
                inner()
            except ValueError as exc:
                return 'caught', exc

        t = self.start_blocked(outer)
        exc = ValueError()
        t.throw(exc)
        self.assertEqual(t.join(), ('caught', exc))

    def test_context_is_the_micro_threads_handled_exception(self):
        pipe = micro_thread.MicroPipe()
        seen = {}

        def worker():
            try:
                raise KeyError('mine')
            except KeyError as mine:
                try:
                    pipe.get()
                except micro_thread.PipeClosedError as exc:
                    seen['context'] = exc.__context__
                    seen['exception'] = sys.exception()
                seen['after'] = sys.exception()
                seen['mine'] = mine

        t = self.start_blocked(worker)
        try:
            raise ZeroDivisionError
        except ZeroDivisionError:
            pipe.close()        # the error is made in the root's except block
        t.join()
        self.assertIs(seen['context'], seen['mine'])
        self.assertIsInstance(seen['exception'], micro_thread.PipeClosedError)
        self.assertIs(seen['after'], seen['mine'])

    def test_kill_in_except_block_chains_the_handled_exception(self):
        pipe = micro_thread.MicroPipe()

        def worker():
            try:
                raise KeyError('mine')
            except KeyError:
                try:
                    pipe.get()
                except BaseException as exc:
                    return type(exc), exc.__context__

        t = self.start_blocked(worker)
        t.kill()
        exc_type, context = t.join()
        self.assertIs(exc_type, micro_thread.MicroThreadExit)
        self.assertIsInstance(context, KeyError)

    def test_finally_with_pending_exception(self):
        pipe = micro_thread.MicroPipe()
        lines = {}

        def worker():
            try:
                lines['raise'] = sys._getframe().f_lineno + 1
                raise KeyError('k')
            finally:
                pipe.get()

        t = self.start_blocked(worker)
        pipe.put(None)
        exc = self.join_exception(t, KeyError)
        self.assertEqual(_tb_tail(exc, 1), [('worker', lines['raise'])])

    def test_bare_raise_after_resume(self):
        pipe = micro_thread.MicroPipe()

        def worker():
            try:
                raise KeyError('k')
            except KeyError:
                pipe.get()
                raise

        t = self.start_blocked(worker)
        pipe.put(None)
        with self.assertRaises(KeyError) as cm:
            t.join()
        self.assertEqual(cm.exception.args, ('k',))

    def test_except_star_block(self):
        pipe = micro_thread.MicroPipe()

        def worker():
            try:
                raise ExceptionGroup('g', [KeyError(1), ValueError(2)])
            except* KeyError:
                a = pipe.get()
                s1 = sys.exception()
            except* ValueError:
                b = pipe.get()
                s2 = sys.exception()
            return a, b, s1, s2

        t = self.start_blocked(worker)
        pipe.put('a')
        micro_thread.sleep(0)
        self.assertEqual(t.state, 'blocked')
        pipe.put('b')
        a, b, s1, s2 = t.join()
        self.assertEqual((a, b), ('a', 'b'))
        self.assertIsInstance(s1, ExceptionGroup)
        self.assertIsInstance(s1.exceptions[0], KeyError)
        self.assertIsInstance(s2.exceptions[0], ValueError)

    def test_pass_through_wrappers_defer(self):
        # C functions that hand their argument array on unchanged and
        # return the result unchanged: the deferral may cross them.
        pipe = micro_thread.MicroPipe()
        var = contextvars.ContextVar('var', default='outside')

        def via_operator_call():
            return operator.call(pipe.get)

        def via_context_run():
            ctx = contextvars.copy_context()
            ctx.run(var.set, 'inside')
            return ctx.run(pipe.get), var.get(), ctx[var]

        for worker, expected in [(via_operator_call, 'v'),
                                 (via_context_run, ('v', 'outside', 'inside'))]:
            with self.subTest(worker.__name__):
                t = self.start_blocked(worker)
                pipe.put('v')
                self.assertEqual(t.join(), expected)

    def test_entry_points_that_defer(self):
        pipe = micro_thread.MicroPipe()

        class C:
            def m(self, a, *, k):
                return self, a, k, pipe.get()

        obj = C()
        # A builtin runs through a small Python trampoline; a bound method
        # (with keywords) as the base frame itself.
        t1 = self.start_blocked(pipe.get)
        t2 = self.start_blocked(obj.m, 1, k=2)
        pipe.put('one')
        pipe.put('two')
        self.assertEqual(t1.join(), 'one')
        self.assertEqual(t2.join(), (obj, 1, 2, 'two'))

    def test_inlined_enter_exit_and_star_calls_keep_their_semantics(self):
        # __enter__/__exit__ and f(*args) of bound methods run inline in
        # the eval loop now; what they do must not change.
        results = {}

        class WrongEnter:
            def __enter__(self, x):
                return x

            def __exit__(self, *a):
                return False

        class ClassMethods:
            @classmethod
            def __enter__(cls):
                return cls

            @classmethod
            def __exit__(cls, et, ev, tb):
                return et is KeyError

        class WrongExit:
            def __enter__(self):
                return self

            def __exit__(self):
                return True

        class GenEnter:
            def __enter__(self):
                yield 1

            def __exit__(self, *a):
                return False

        class M:
            def m(self, a, b=2):
                return a, b

        def use(cm, exc=None):
            with cm as v:
                if exc is not None:
                    raise exc
                return v

        def outcome(fn, *args):
            try:
                return fn(*args)
            except Exception as exc:
                return type(exc).__name__, str(exc)

        def worker():
            results['wrong-enter'] = outcome(use, WrongEnter())
            results['classmethods'] = outcome(use, ClassMethods())
            results['classmethods-exc'] = outcome(use, ClassMethods(), KeyError())
            results['wrong-exit'] = outcome(use, WrongExit())
            results['gen-enter'] = type(outcome(use, GenEnter())).__name__
            results['star'] = outcome(lambda: M().m(*(1,)))
            results['star-bad'] = outcome(lambda: M().m(*(1, 2, 3)))
            results['star-kw-bad'] = outcome(lambda: M().m(*(1,), **{'c': 5}))
            results['self-twice'] = outcome(lambda: M().m(**{'a': 1, 'self': 2}))
            return 'done'

        self.assertEqual(micro_thread.run(worker), 'done')
        q = lambda f: f.__qualname__
        self.assertEqual(results, {
            'wrong-enter': ('TypeError', f"{q(WrongEnter.__enter__)}() missing 1 "
                            "required positional argument: 'x'"),
            'classmethods': ClassMethods,
            'classmethods-exc': None,
            'wrong-exit': ('TypeError', f'{q(WrongExit.__exit__)}() takes 1 '
                           'positional argument but 4 were given'),
            'gen-enter': 'generator',
            'star': (1, 2),
            'star-bad': ('TypeError', f'{q(M.m)}() takes from 2 to 3 positional '
                         'arguments but 4 were given'),
            'star-kw-bad': ('TypeError', f"{q(M.m)}() got an unexpected keyword "
                            "argument 'c'"),
            'self-twice': ('TypeError', f"{q(M.m)}() got multiple values for "
                           "argument 'self'"),
        })


# ---------------------------------------------------------------------------
# Where deferral is impossible, the call pins its micro-thread and still
# gives the right result


class PinningTests(MicroThreadTestCase):

    def run_pinned(self, consumer, items, *, close=True):
        """Run consumer(pipe) against a producer of items; return its result.

        The producer checks, at each put, whether the consumer's frames are
        below its own on the C stack, i.e. whether the consumer is pinned.
        """
        pipe = micro_thread.MicroPipe()
        witness = []

        def producer():
            for item in items:
                witness.append(consumer.__code__ in _callers())
                pipe.put(item)
                micro_thread.sleep(0)
            if close:
                pipe.close()

        c = micro_thread.start(consumer, pipe)
        p = micro_thread.start(producer)
        result = c.join()
        p.join()
        self.assertEqual(witness, [True] * len(items))
        return result

    def test_map_over_pipe(self):
        def consumer(pipe):
            return list(map(str, pipe))
        self.assertEqual(self.run_pinned(consumer, [1, 2, 3]), ['1', '2', '3'])

    def test_list_of_pipe(self):
        def consumer(pipe):
            return list(pipe)
        self.assertEqual(self.run_pinned(consumer, [1, 2, 3]), [1, 2, 3])

    def test_map_calling_get(self):
        def consumer(pipe):
            return list(map(lambda i: (i, pipe.get()), range(3)))
        self.assertEqual(self.run_pinned(consumer, 'abc', close=False),
                         [(0, 'a'), (1, 'b'), (2, 'c')])

    def test_sorted_key(self):
        def consumer(pipe):
            return sorted(['one', 'two', 'three'], key=lambda s: pipe.get())
        self.assertEqual(self.run_pinned(consumer, [30, 10, 20], close=False),
                         ['two', 'three', 'one'])

    def test_iter_with_sentinel(self):
        def consumer(pipe):
            return list(iter(pipe.get, None))
        self.assertEqual(self.run_pinned(consumer, [1, 2, None], close=False),
                         [1, 2])

    def test_property_getter(self):
        # Often enough for LOAD_ATTR to specialize into an inlined frame.
        class Obj:
            def __init__(self, pipe):
                self.pipe = pipe

            @property
            def value(self):
                return self.pipe.get()

        def consumer(pipe):
            obj = Obj(pipe)
            return [obj.value for _ in range(20)]
        self.assertEqual(self.run_pinned(consumer, range(20), close=False),
                         list(range(20)))

    def test_init(self):
        class Obj:
            def __init__(self, pipe):
                self.value = pipe.get()

        def consumer(pipe):
            return [Obj(pipe).value for _ in range(20)]
        self.assertEqual(self.run_pinned(consumer, range(20), close=False),
                         list(range(20)))

    def test_getitem(self):
        class Obj:
            def __init__(self, pipe):
                self.pipe = pipe

            def __getitem__(self, key):
                return key, self.pipe.get()

        def consumer(pipe):
            obj = Obj(pipe)
            return [obj[i] for i in range(20)]
        self.assertEqual(self.run_pinned(consumer, range(20), close=False),
                         [(i, i) for i in range(20)])

    def test_python_iterator(self):
        class It:
            def __init__(self, pipe):
                self.pipe = pipe

            def __iter__(self):
                return self

            def __next__(self):
                item = self.pipe.get()
                if item is None:
                    raise StopIteration
                return item

        def consumer(pipe):
            return [x for x in It(pipe)]
        self.assertEqual(self.run_pinned(consumer, [1, 2, None], close=False),
                         [1, 2])

    def test_generator_resumed_from_c(self):
        # next(), send() and a C iterator (zip) resume the generator through
        # C: it cannot suspend there.  (A for loop or yield from resumes it
        # in the eval loop, where it can: see GeneratorTests.)
        def gen(pipe):
            while True:
                yield pipe.get()

        def consumer(pipe):
            g = gen(pipe)
            first = [next(g), g.send(None)]
            for x, _ in zip(g, [0]):
                return first + [x]
        self.assertEqual(self.run_pinned(consumer, [1, 2, 3], close=False),
                         [1, 2, 3])


    def test_generator_under_branch_monitoring(self):
        # A tool with BRANCH events instruments FOR_ITER, which then calls
        # the generator through C: blocking in it pins, with the right
        # results.
        def gen(pipe):
            for _ in range(2):
                yield pipe.get()

        def consumer(pipe):
            return [x for x in gen(pipe)]

        E = sys.monitoring.events
        with _Monitoring(E.BRANCH, {E.BRANCH: lambda *a: None}):
            self.assertEqual(self.run_pinned(consumer, [1, 2], close=False),
                             [1, 2])

    def test_generator_expression(self):
        def consumer(pipe):
            return sum(pipe.get() for _ in range(3))
        self.assertEqual(self.run_pinned(consumer, [1, 2, 3], close=False), 6)

    def test_coroutine(self):
        async def coro(pipe):
            return pipe.get() + 1

        def consumer(pipe):
            try:
                coro(pipe).send(None)
            except StopIteration as exc:
                return exc.value
        self.assertEqual(self.run_pinned(consumer, [41], close=False), 42)

    def test_exec_and_eval(self):
        def consumer(pipe):
            ns = {'pipe': pipe}
            exec("r = [pipe.get(), pipe.get()]", ns)
            return ns['r'] + [eval("pipe.get()", ns)]
        self.assertEqual(self.run_pinned(consumer, [1, 2, 3], close=False),
                         [1, 2, 3])

    def test_class_body(self):
        def consumer(pipe):
            class C:
                value = pipe.get()
            return C.value
        self.assertEqual(self.run_pinned(consumer, ['v'], close=False), 'v')

    def test_del(self):
        log = []

        class Obj:
            def __init__(self, pipe):
                self.pipe = pipe

            def __del__(self):
                log.append(self.pipe.get())

        def consumer(pipe):
            obj = Obj(pipe)
            del obj
            return list(log)
        self.assertEqual(self.run_pinned(consumer, ['x'], close=False), ['x'])

    def test_callable_object_entry_point(self):
        # Its __call__ is entered from C (slot_tp_call).
        class Call:
            def __call__(self, pipe):
                return pipe.get() + 1

        pipe = micro_thread.MicroPipe()
        witness = []

        def producer():
            witness.append(Call.__call__.__code__ in _callers())
            pipe.put(41)

        t = micro_thread.start(Call(), pipe)
        p = micro_thread.start(producer)
        self.assertEqual(t.join(), 42)
        p.join()
        self.assertEqual(witness, [True])

    def test_kill_pinned_micro_thread(self):
        pipe = micro_thread.MicroPipe()
        log = []

        def consumer():
            try:
                return list(map(lambda _: pipe.get(), range(3)))
            finally:
                log.append('finally')

        def killer(victim):
            log.append(consumer.__code__ in _callers())
            victim.kill()

        c = micro_thread.start(consumer)
        k = micro_thread.start(killer, c)
        exc = self.join_exception(c, micro_thread.MicroThreadExit)
        k.join()
        self.assertEqual(log, [True, 'finally'])
        self.assertEqual([name for name, _ in _tb_tail(exc, 2)],
                         ['consumer', '<lambda>'])

    def test_for_iter_through_c_iterator_after_inner_loop(self):
        # A generator's own for loop over the pipe, then zip() calling the
        # pipe's tp_iternext from C: the pipe cannot defer (zip is between
        # it and the for loop) and must pin.
        pipe = micro_thread.MicroPipe()

        def gen():
            for item in pipe:
                yield item

        def consumer():
            for pair in zip(gen(), pipe):
                return pair

        pipe.put(1)
        c = micro_thread.start(consumer)
        p = micro_thread.start(pipe.put, 2)
        try:
            self.assertEqual(c.join(), (1, 2))
        finally:
            p.join()

    def test_eval_frame_hook(self):
        # With a PEP 523 eval-frame hook nothing can defer; a micro-thread
        # suspended before the hook was installed still resumes.
        _testinternalcapi = import_helper.import_module('_testinternalcapi')
        early_pipe = micro_thread.MicroPipe()

        def consumer(pipe):
            return pipe.get() + pipe.get()

        early = self.start_blocked(consumer, early_pipe)
        record = []
        _testinternalcapi.set_eval_frame_record(record)
        try:
            result = self.run_pinned(consumer, [1, 2], close=False)
            p = micro_thread.start(lambda: (early_pipe.put(10), early_pipe.put(20)))
            early_result = early.join()
            p.join()
        finally:
            _testinternalcapi.set_eval_frame_default()
        self.assertEqual(result, 3)
        self.assertEqual(early_result, 30)
        self.assertIn('consumer', record)

    def test_nested_pinning_runs_out_of_c_stack_cleanly(self):
        # Each pinned micro-thread runs the next one on its C stack.  When
        # the C recursion limit is near, a micro-thread that cannot be
        # switched to ends with RecursionError (without running); nothing
        # crashes, and the timers wake the pinned ones.
        def pinned():
            return list(map(lambda _: micro_thread.sleep(0.001), [0]))

        threads = [micro_thread.start(pinned) for _ in range(2000)]
        outcomes = []
        for t in threads:
            try:
                outcomes.append(t.join())
            except RecursionError:
                outcomes.append(RecursionError)
        self.assertEqual(outcomes[0], [None])
        self.assertIn(RecursionError, outcomes)
        self.assertEqual(set(map(repr, outcomes)),
                         {repr([None]), repr(RecursionError)})


# ---------------------------------------------------------------------------
# Tracing, profiling and monitoring


class TracingTests(MicroThreadTestCase):

    @staticmethod
    def worker(pipe):
        a = pipe.get()
        b = a + 1
        for x in pipe:
            b += x
        return b

    def trace_events(self, suspend):
        """settrace events of worker, which suspends at each get or not."""
        worker = self.worker
        events = []

        def tracer(frame, event, arg):
            if frame.f_code is worker.__code__:
                events.append((event, frame.f_lineno - worker.__code__.co_firstlineno,
                               type(arg).__name__ if event == 'exception' else None))
            return tracer

        with _Trace(tracer):
            self.assertEqual(self.feed_worker(worker, suspend), 7)
        return events

    def test_settrace_events_are_the_same_with_suspension(self):
        plain = self.trace_events(suspend=False)
        self.assertEqual(self.trace_events(suspend=True), plain)
        self.assertEqual(plain[0][0], 'call')
        self.assertEqual([e for e in plain if e[0] == 'return'], [plain[-1]])
        self.assertNotIn('exception', [e[0] for e in plain])

    def test_settrace_set_while_suspended(self):
        # pdb-style: trace a frame that is suspended, from the next line.
        pipe = micro_thread.MicroPipe()
        frames = []

        def worker():
            frames.append(sys._getframe())
            a = pipe.get()
            b = a + 1
            return b

        events = []

        def tracer(frame, event, arg):
            if frame.f_code is worker.__code__:
                events.append((event, frame.f_lineno - worker.__code__.co_firstlineno))
            return tracer

        t = self.start_blocked(worker)
        with _Trace(tracer):
            frames[0].f_trace = tracer
            pipe.put(1)
            self.assertEqual(t.join(), 2)
        self.assertEqual(events, [('line', 3), ('line', 4), ('return', 4)])

    def test_setprofile(self):
        pipe = micro_thread.MicroPipe()

        def inner():
            return pipe.get()

        def outer():
            return inner() + 1

        events = []

        def profiler(frame, event, arg):
            if event in ('call', 'return'):
                if frame.f_code in (inner.__code__, outer.__code__):
                    events.append((event, frame.f_code.co_name))
            elif getattr(arg, '__self__', None) is pipe:
                events.append((event, arg.__name__))

        with _Trace(profiler, profile=True):
            t = self.start_blocked(outer)
            pipe.put(1)
            self.assertEqual(t.join(), 2)
        # The deferring call reports c_exception (and no c_return follows
        # on resume); the Python frames do not report their suspension.
        self.assertEqual(events, [('call', 'outer'), ('call', 'inner'),
                                  ('c_call', 'get'), ('c_exception', 'get'),
                                  ('c_call', 'put'), ('c_return', 'put'),
                                  ('return', 'inner'), ('return', 'outer')])

    def test_monitoring_enabled_while_suspended(self):
        pipe = micro_thread.MicroPipe()

        def inner():
            a = pipe.get()
            b = a + 1
            return b

        def outer():
            x = inner()
            y = x * 2
            return y

        lines = []

        def on_line(code, line):
            if code in (inner.__code__, outer.__code__):
                lines.append((code.co_name, line - code.co_firstlineno))

        t = self.start_blocked(outer)
        E = sys.monitoring.events
        with _Monitoring(E.LINE, {E.LINE: on_line}):
            pipe.put(1)
            self.assertEqual(t.join(), 4)
        self.assertEqual(lines, [('inner', 2), ('inner', 3),
                                 ('outer', 2), ('outer', 3)])

    def test_monitoring_disabled_while_suspended(self):
        pipe = micro_thread.MicroPipe()

        def worker():
            total = 0
            for _ in range(2):
                total += pipe.get()
            return total

        events = []
        E = sys.monitoring.events

        def on_event(code, *args):
            if code is worker.__code__:
                events.append(args)

        with _Monitoring(E.LINE | E.INSTRUCTION | E.JUMP | E.BRANCH,
                         {E.LINE: on_event, E.INSTRUCTION: on_event,
                          E.JUMP: on_event, E.BRANCH: on_event}):
            t = self.start_blocked(worker)
            self.assertGreater(len(events), 0)
        del events[:]
        pipe.put(1)
        micro_thread.sleep(0)
        self.assertEqual(t.state, 'blocked')
        pipe.put(2)
        self.assertEqual(t.join(), 3)
        self.assertEqual(events, [])

    def test_monitoring_events_are_the_same_with_suspension(self):
        worker = self.worker
        E = sys.monitoring.events
        events = []

        def cb(name):
            def callback(code, *args):
                if code is worker.__code__:
                    events.append((name, args[:1]))
            return callback

        names = ['LINE', 'JUMP', 'BRANCH', 'PY_START', 'PY_RETURN', 'RAISE',
                 'EXCEPTION_HANDLED', 'PY_UNWIND', 'STOP_ITERATION']
        mask = 0
        for name in names:
            mask |= getattr(E, name)
        runs = []
        for suspend in (False, True):
            del events[:]
            with _Monitoring(mask, {getattr(E, n): cb(n) for n in names}):
                self.assertEqual(self.feed_worker(worker, suspend), 7)
            runs.append(list(events))
        self.assertEqual(runs[1], runs[0])
        self.assertIn('LINE', [name for name, _ in runs[0]])

    def test_monitoring_never_sees_cdeferred(self):
        pipe = micro_thread.MicroPipe()
        E = sys.monitoring.events
        seen = []

        def on_exc(code, offset, exc):
            seen.append(type(exc))

        def worker():
            try:
                pipe.get()
            except ValueError:
                pass
            return pipe.get()

        with _Monitoring(E.RAISE | E.EXCEPTION_HANDLED | E.PY_UNWIND | E.RERAISE,
                         {E.RAISE: on_exc, E.EXCEPTION_HANDLED: on_exc,
                          E.PY_UNWIND: on_exc, E.RERAISE: on_exc}):
            t = self.start_blocked(worker)
            t.throw(ValueError)
            micro_thread.sleep(0)
            pipe.put('v')
            self.assertEqual(t.join(), 'v')
        self.assertNotIn(micro_thread.CDeferred, seen)
        self.assertIn(ValueError, seen)

    @staticmethod
    def replaced_deferral_worker(pipe, log):
        try:
            pipe.get()          # the C_RAISE callback replaces the deferral
        except OSError as exc:
            log.append(str(exc))
        log.append(pipe.get())
        return 'ok'

    def replaced_deferral_monitoring(self, armed):
        worker = self.replaced_deferral_worker

        def on_c_raise(code, offset, callable, arg0):
            if armed and code is worker.__code__:
                armed.pop()
                raise OSError('from callback')

        E = sys.monitoring.events
        return _Monitoring(E.CALL | E.C_RAISE | E.C_RETURN,
                           {E.C_RAISE: on_c_raise, E.CALL: lambda *a: None,
                            E.C_RETURN: lambda *a: None})

    def test_c_raise_callback_replacing_the_deferral(self):
        # A monitoring callback that raises at the deferring call replaces
        # the deferral: the micro-thread does not suspend, the exception
        # unwinds normally, and a later deferral works.
        pipe = micro_thread.MicroPipe()
        log = []
        with self.replaced_deferral_monitoring([True]):
            t = self.start_blocked(self.replaced_deferral_worker, pipe, log)
            self.assertEqual(log, ['from callback'])
            pipe.put(5)
            self.assertEqual(t.join(), 'ok')
        self.assertEqual(log, ['from callback', 5])
        self.assertEqual(len(pipe), 0)

    def test_replaced_deferral_does_not_leak(self):
        armed = []

        def once():
            pipe = micro_thread.MicroPipe()
            armed.append(True)
            t = micro_thread.start(self.replaced_deferral_worker, pipe, [])
            micro_thread.sleep(0)
            pipe.put(1)
            self.assertEqual(t.join(), 'ok')

        with self.replaced_deferral_monitoring(armed):
            for _ in range(50):     # warm up caches and free lists
                once()
            support.gc_collect()
            before = sys.getallocatedblocks()
            for _ in range(200):
                once()
            support.gc_collect()
            leaked = sys.getallocatedblocks() - before
        self.assertLess(leaked, 50)

    def test_tools_enabled_while_micro_threads_switch_in_place(self):
        # Two micro-threads switch straight from one to the other while the
        # root joins them; a tool enabled while both are suspended makes
        # the next switch re-instrument the code of the one it resumes.
        def run_pair(enable):
            p = micro_thread.MicroPipe()
            q = micro_thread.MicroPipe()

            def note(i):
                return i

            def a():
                for i in range(20):
                    p.put(note(i))
                    q.get()
                return 'a'

            def b():
                total = 0
                for _ in range(20):
                    total += p.get()
                    q.put(None)
                return total

            ta = micro_thread.start(a)
            tb = micro_thread.start(b)
            micro_thread.sleep(0)
            micro_thread.sleep(0)
            # Both have suspended (a blocked, b woken by a's put).
            self.assertEqual((ta.state, tb.state), ('blocked', 'ready'))
            with enable():
                return ta.join(), tb.join()

        @contextlib.contextmanager
        def settrace():
            calls = []
            def tracer(frame, event, arg):
                if event == 'call':
                    calls.append(frame.f_code.co_name)
                return tracer
            sys.settrace(tracer)
            try:
                yield
            finally:
                sys.settrace(None)
            self.assertIn('note', calls)

        @contextlib.contextmanager
        def setprofile():
            calls = []
            sys.setprofile(lambda frame, event, arg: calls.append(event))
            try:
                yield
            finally:
                sys.setprofile(None)
            self.assertIn('c_call', calls)

        @contextlib.contextmanager
        def monitoring():
            seen = []
            E = sys.monitoring.events
            with _Monitoring(E.LINE, {E.LINE: lambda code, line: seen.append(code.co_name)}):
                yield
            self.assertIn('a', seen)

        for enable in (settrace, setprofile, monitoring):
            with self.subTest(enable.__name__):
                self.assertEqual(run_pair(enable), ('a', sum(range(20))))

    def test_cprofile(self):
        import cProfile
        import pstats

        def consumer(pipe):
            total = 0
            for _ in range(5):
                total += pipe.get()
            return total

        def producer(pipe):
            for i in range(5):
                pipe.put(i)
                micro_thread.sleep(0)

        def main():
            results = []
            for _ in range(10):
                pipe = micro_thread.MicroPipe()
                c = micro_thread.start(consumer, pipe)
                p = micro_thread.start(producer, pipe)
                results.append(c.join())
                p.join()
            return results

        profiler = cProfile.Profile()
        self.assertEqual(profiler.runcall(main), [10] * 10)
        stats = pstats.Stats(profiler).stats
        ncalls = {name: nc for (_, _, name), (cc, nc, *_) in stats.items()}
        self.assertEqual(ncalls['consumer'], 10)
        self.assertEqual(ncalls['producer'], 10)
        self.assertEqual(ncalls['main'], 1)

    def check_star_call_defers(self, context):
        pipe = micro_thread.MicroPipe()

        def fn(a):
            return pipe.get() + a

        def worker():
            return fn(*(1,))

        with context:
            t = micro_thread.start(worker)
            micro_thread.sleep(0)
            state = t.state
            pipe.put(1)
            try:
                result = t.join()
            except micro_thread.DeadlockError:
                result = 'DeadlockError'
        self.assertEqual((state, result), ('blocked', 2))

    def test_star_call_defers_under_setprofile(self):
        self.check_star_call_defers(_Trace(lambda *args: None, profile=True))

    def test_star_call_defers_with_monitoring_call_events(self):
        E = sys.monitoring.events
        self.check_star_call_defers(_Monitoring(E.CALL, {E.CALL: lambda *a: None}))

    def test_star_call_profile_events(self):
        # f(*args) of Python callables runs inline under a profiler too:
        # the events are the same as through C.
        class C:
            def m(self, a):
                return a

        def fn(a):
            return a

        events = []

        def profiler(frame, event, arg):
            if event.startswith('c_'):
                events.append((event, arg.__name__))
            elif frame.f_code in (fn.__code__, C.m.__code__):
                events.append((event, frame.f_code.co_name))

        args = ([1, 2],)
        with _Trace(profiler, profile=True):
            fn(*args)
            C().m(*args)
            len(*args)
            fn(*(), a=1)
        self.assertEqual(events, [
            ('call', 'fn'), ('return', 'fn'),
            ('call', 'm'), ('return', 'm'),
            ('c_call', 'len'), ('c_return', 'len'),
            ('call', 'fn'), ('return', 'fn'),
            ('c_call', 'setprofile')])

    def test_star_call_defers_under_settrace(self):
        self.check_star_call_defers(_Trace(lambda *args: None))

    def test_faulthandler_in_resumed_micro_thread(self):
        pipe = micro_thread.MicroPipe()

        def inner():
            pipe.get()
            with tempfile.TemporaryFile('w+') as f:
                faulthandler.dump_traceback(f, all_threads=False)
                f.seek(0)
                return f.read()

        def outer():
            return inner()

        t = self.start_blocked(outer)
        pipe.put(None)
        dump = t.join()
        self.assertRegex(dump, r'(?s)line \d+ in inner.*line \d+ in outer')


# ---------------------------------------------------------------------------
# Per-micro-thread interpreter state


class IsolationTests(MicroThreadTestCase):

    def test_handled_exception_is_per_micro_thread(self):
        p = micro_thread.MicroPipe()
        q = micro_thread.MicroPipe()
        seen = {}

        def a():
            try:
                raise KeyError('a')
            except KeyError as exc:
                seen['a-own'] = exc
                p.get()
                seen['a-resumed'] = sys.exception()
            seen['a-after'] = sys.exception()

        def b():
            seen['b-before'] = sys.exception()
            q.get()
            seen['b-resumed'] = sys.exception()

        ta = micro_thread.start(a)
        tb = micro_thread.start(b)
        micro_thread.sleep(0)
        self.assertEqual((ta.state, tb.state), ('blocked', 'blocked'))
        self.assertIsNone(sys.exception())
        q.put(None)
        tb.join()
        self.assertIsNone(sys.exception())
        p.put(None)
        ta.join()
        self.assertIsNone(seen['b-before'])
        self.assertIsNone(seen['b-resumed'])
        self.assertIs(seen['a-resumed'], seen['a-own'])
        self.assertIsNone(seen['a-after'])

    def test_root_handled_exception_not_visible_in_micro_thread(self):
        pipe = micro_thread.MicroPipe()
        seen = {}

        def worker():
            seen['before'] = sys.exception()
            pipe.get()
            seen['resumed'] = sys.exception()
            try:
                raise ValueError
            except ValueError as exc:
                seen['context'] = exc.__context__

        try:
            raise ZeroDivisionError
        except ZeroDivisionError:
            t = self.start_blocked(worker)
            pipe.put(None)
            t.join()
        self.assertEqual(seen, dict(before=None, resumed=None, context=None))

    def test_pinned_handled_exception_not_visible_in_other_micro_thread(self):
        pipe = micro_thread.MicroPipe()
        seen = {}

        def pinned():
            try:
                raise KeyError('pinned')
            except KeyError:
                return list(map(lambda _: pipe.get(), [0]))

        def other():
            seen['exception'] = sys.exception()
            try:
                raise ValueError
            except ValueError as exc:
                seen['context'] = exc.__context__
            pipe.put(1)

        a = micro_thread.start(pinned)
        b = micro_thread.start(other)
        self.assertEqual(a.join(), [1])
        b.join()
        self.assertEqual(seen, dict(exception=None, context=None))

    def test_contextvars_are_isolated_across_switches(self):
        var = contextvars.ContextVar('var', default='default')
        p = micro_thread.MicroPipe()
        q = micro_thread.MicroPipe()
        seen = []

        def a():
            seen.append(('a-start', var.get()))
            var.set('a')
            p.get()
            seen.append(('a-resumed', var.get()))
            return contextvars.copy_context()[var]

        def b():
            seen.append(('b-start', var.get()))
            var.set('b')
            q.get()
            seen.append(('b-resumed', var.get()))
            for _ in range(100):        # the ContextVar cache
                assert var.get() == 'b'
            return var.get()

        token = var.set('root')
        try:
            ta = micro_thread.start(a)
            var.set('root2')            # after a's start: a has a copy
            tb = micro_thread.start(b)
            micro_thread.sleep(0)
            seen.append(('root', var.get()))
            q.put(None)
            micro_thread.sleep(0)
            seen.append(('root', var.get()))
            p.put(None)
            self.assertEqual((ta.join(), tb.join()), ('a', 'b'))
            self.assertEqual(var.get(), 'root2')
        finally:
            var.reset(token)
        self.assertEqual(seen, [('a-start', 'root'), ('b-start', 'root2'),
                                ('root', 'root2'), ('b-resumed', 'b'),
                                ('root', 'root2'), ('a-resumed', 'a')])

    def test_contextvars_of_starter_context(self):
        var = contextvars.ContextVar('var', default='default')
        pipe = micro_thread.MicroPipe()

        def worker():
            before = var.get()
            pipe.get()
            return before, var.get()

        def starter():
            var.set('in-context')
            return micro_thread.start(worker)

        ctx = contextvars.copy_context()
        t = ctx.run(starter)
        micro_thread.sleep(0)
        self.assertEqual(t.state, 'blocked')
        self.assertEqual(var.get(), 'default')
        ctx.run(var.set, 'changed-later')
        pipe.put(None)
        self.assertEqual(t.join(), ('in-context', 'in-context'))

    def test_contextvars_when_pinned(self):
        var = contextvars.ContextVar('var', default='default')
        pipe = micro_thread.MicroPipe()
        seen = []

        def pinned():
            var.set('pinned')
            list(map(lambda _: pipe.get(), [0]))
            return var.get()

        def other():
            seen.append(var.get())
            var.set('other')
            pipe.put(None)
            return var.get()

        a = micro_thread.start(pinned)
        b = micro_thread.start(other)
        self.assertEqual(a.join(), 'pinned')
        self.assertEqual(b.join(), 'other')
        self.assertEqual(seen, ['default'])
        self.assertEqual(var.get(), 'default')

    def test_suspended_micro_threads_use_no_recursion_budget(self):
        pipe = micro_thread.MicroPipe()
        probes = []

        def deep(n):
            if n:
                return deep(n - 1)
            before = _probe_recursion()
            pipe.get()
            probes.append((before, _probe_recursion()))

        root = _probe_recursion()
        threads = [micro_thread.start(deep, 100) for _ in range(20)]
        micro_thread.sleep(0)
        # 2000 suspended frames: more than the recursion limit.
        self.assertEqual([t.state for t in threads], ['blocked'] * 20)
        self.assertEqual(_probe_recursion(), root)
        for _ in threads:
            pipe.put(None)
        for t in threads:
            t.join()
        self.assertEqual(_probe_recursion(), root)
        # Deep recursion in a resumed micro-thread hits the same limit.
        self.assertEqual(len(set(probes)), 1)
        before, after = probes[0]
        self.assertEqual(before, after)
        self.assertLess(before, root - 100)

    def test_recursion_accounting_over_repeated_suspensions(self):
        pipe = micro_thread.MicroPipe()

        def down(d, out):
            if d:
                return down(d - 1, out)
            before = _probe_recursion()
            pipe.get()
            out.append(before - _probe_recursion())
            pipe.get()
            return before

        def worker(out):
            return [down(d, out) for d in (5, 50, 10, 100, 1, 70, 0)]

        out = []
        res = self.run_checking_recursion(pipe, 14, worker, out)
        self.assertEqual(out, [0] * 7)
        self.assertEqual([r - res[-1] for r in res], [-5, -50, -10, -100, -1, -70, 0])

    def test_state_is_isolated_across_direct_switches(self):
        # Two micro-threads hand an item back and forth while the root
        # waits in join(): each switch goes straight from one to the other
        # in the eval loop.  Each keeps its own handled exception, context
        # variable and recursion headroom at every resume, at its own depth
        # and with a generator frame in one chain.
        var = contextvars.ContextVar('var')
        a = micro_thread.MicroPipe()
        b = micro_thread.MicroPipe()
        rounds = 200

        def relay(get_from, put_to):
            while True:
                item = get_from.get()       # suspends in the generator
                put_to.put(item + 1)
                yield item

        def player(name, get_from, put_to, depth, in_generator):
            if depth:
                return player(name, get_from, put_to, depth - 1, in_generator)
            var.set(name)
            try:
                raise KeyError(name)
            except KeyError as handled:
                headroom = _probe_recursion()
                seen = set()
                if in_generator:
                    items = relay(get_from, put_to)
                    for _ in range(rounds):
                        for item in items:
                            break
                        seen.add((sys.exception() is handled, var.get(),
                                  _probe_recursion() - headroom))
                else:
                    for _ in range(rounds):
                        item = get_from.get()
                        seen.add((sys.exception() is handled, var.get(),
                                  _probe_recursion() - headroom))
                        put_to.put(item + 1)
                return seen

        ta = micro_thread.start(player, 'a', a, b, 30, False)
        tb = micro_thread.start(player, 'b', b, a, 5, True)
        root = _probe_recursion()
        a.put(0)
        self.assertEqual(ta.join(), {(True, 'a', 0)})
        self.assertEqual(tb.join(), {(True, 'b', 0)})
        self.assertEqual(_probe_recursion(), root)

    def test_setrecursionlimit_changed_while_suspended(self):
        pipe = micro_thread.MicroPipe()

        def deep(n, out):
            if n:
                return deep(n - 1, out)
            out.append(_probe_recursion())
            pipe.get()
            out.append(_probe_recursion())

        old = sys.getrecursionlimit()
        for delta in (+500, -300):
            with self.subTest(delta=delta):
                first = []
                t = micro_thread.start(deep, 50, first)
                micro_thread.sleep(0)   # at the same depth as put() below
                self.assertEqual(t.state, 'blocked')
                sys.setrecursionlimit(old + delta)
                try:
                    pipe.put(None)
                    t.join()
                    # The same depth in a micro-thread started afresh.
                    fresh = []
                    t = micro_thread.start(deep, 50, fresh)
                    micro_thread.sleep(0)
                    pipe.put(None)
                    t.join()
                finally:
                    sys.setrecursionlimit(old)
                self.assertEqual(first[1] - first[0], delta)
                self.assertEqual(first[1], fresh[1])

    def test_recursion_limit_below_suspended_depth(self):
        # Frames that no longer fit the lowered limit still resume, with the
        # item handed to them (nothing is lost); the limit applies from the
        # micro-thread's next call on.
        pipe = micro_thread.MicroPipe()

        def deep(n):
            if n:
                return deep(n - 1)
            value = pipe.get()
            try:
                _probe_recursion()
            except RecursionError:
                return value, 'RecursionError'
            return value, None

        root = _probe_recursion()
        t = self.start_blocked(deep, 100)
        old = sys.getrecursionlimit()
        sys.setrecursionlimit(_stack_depth() + 30)
        try:
            pipe.put('value')
            result = t.join()
        finally:
            sys.setrecursionlimit(old)
        self.assertEqual(result, ('value', 'RecursionError'))
        self.assertEqual(_probe_recursion(), root)


# ---------------------------------------------------------------------------
# Lifecycle of suspended micro-threads


class LifecycleTests(MicroThreadTestCase):

    def test_garbage_micro_thread_is_closed_by_gc(self):
        log = []

        def worker():
            pipe = micro_thread.MicroPipe()     # only this frame has it
            try:
                pipe.get()
            except BaseException as exc:
                log.append(type(exc))
                raise
            finally:
                log.append('finally')

        t = self.start_blocked(worker)
        ref = weakref.ref(t)
        del t
        self.assertIsNotNone(ref())             # a cycle with its pipe
        self.assertEqual(log, [])
        support.gc_collect()
        self.assertIsNone(ref())
        self.assertEqual(log, [micro_thread.MicroThreadExit, 'finally'])

    def test_cycle_through_suspended_frame_is_collected(self):
        log = []

        def worker():
            pipe = micro_thread.MicroPipe()
            me = micro_thread.current()         # mt -> frame -> mt
            frame = sys._getframe()             # frame object -> frame
            try:
                pipe.get()
            finally:
                log.append(me is micro_thread.current() and frame is sys._getframe())

        t = self.start_blocked(worker)
        ref = weakref.ref(t)
        del t
        support.gc_collect()
        self.assertIsNone(ref())
        self.assertEqual(log, [True])

    def test_reachable_blocked_micro_thread_is_not_collected(self):
        pipe = micro_thread.MicroPipe()
        log = []

        def getter():
            try:
                return pipe.get()
            finally:
                log.append('getter')

        def sleeper():
            try:
                micro_thread.sleep(0.01)
            finally:
                log.append('sleeper')

        refs = [weakref.ref(self.start_blocked(getter)),
                weakref.ref(self.start_blocked(sleeper))]
        support.gc_collect()
        self.assertTrue(all(r() is not None for r in refs))
        self.assertEqual(log, [])
        pipe.put(1)
        micro_thread.sleep(0.05)
        self.assertCountEqual(log, ['getter', 'sleeper'])
        support.gc_collect()
        self.assertTrue(all(r() is None for r in refs))

    def test_garbage_micro_thread_in_for_loop_is_closed(self):
        log = []
        lines = {}

        def worker():
            pipe = micro_thread.MicroPipe()
            try:
                lines['for'] = sys._getframe().f_lineno + 1
                for _ in pipe:
                    pass
            except BaseException as exc:
                log.append((type(exc), _tb_tail(exc, 1)))
                raise
            finally:
                log.append('finally')

        t = self.start_blocked(worker)
        ref = weakref.ref(t)
        del t
        support.gc_collect()
        self.assertIsNone(ref())
        self.assertEqual(log, [(micro_thread.MicroThreadExit,
                                [('worker', lines['for'])]), 'finally'])

    def test_gc_close_refuses_to_block(self):
        blocker = micro_thread.MicroPipe()
        log = []

        def worker():
            pipe = micro_thread.MicroPipe()
            try:
                pipe.get()
            finally:
                try:
                    blocker.get()
                except RuntimeError as exc:
                    log.append('refused')
                    raise

        t = self.start_blocked(worker)
        ref = weakref.ref(t)
        del t
        with support.catch_unraisable_exception() as cm:
            support.gc_collect()
            self.assertIsInstance(cm.unraisable.exc_value, RuntimeError)
        self.assertIsNone(ref())
        self.assertEqual(log, ['refused'])

    def test_gc_close_micro_thread_may_swallow_exit(self):
        log = []

        def worker():
            pipe = micro_thread.MicroPipe()
            try:
                pipe.get()
            except micro_thread.MicroThreadExit:
                log.append('swallowed')
            return 'returned'

        t = self.start_blocked(worker)
        ref = weakref.ref(t)
        del t
        with support.catch_unraisable_exception() as cm:
            support.gc_collect()
            self.assertIsNone(cm.unraisable)
        self.assertIsNone(ref())
        self.assertEqual(log, ['swallowed'])

    def test_frames_outlive_their_micro_thread(self):
        pipe = micro_thread.MicroPipe()
        frames = []

        def inner():
            local = 'inner'
            frames.append(sys._getframe())
            pipe.get()

        def outer():
            local = 'outer'
            frames.append(sys._getframe())
            inner()

        for end in ('kill', 'collect'):
            with self.subTest(end):
                del frames[:]
                t = self.start_blocked(outer)
                if end == 'kill':
                    t.kill()
                    self.join_exception(t, micro_thread.MicroThreadExit)
                else:
                    pipe = None         # only the frame refers to it now
                    ref = weakref.ref(t)
                    del t
                    support.gc_collect()
                    self.assertIsNone(ref())
                fo, fi = frames
                self.assertEqual(fi.f_locals['local'], 'inner')
                self.assertEqual(fo.f_locals['local'], 'outer')
                self.assertIs(fi.f_back, fo)
                fi.clear()
                fo.clear()
                pipe = micro_thread.MicroPipe()

    def test_exit_ends_blocked_micro_threads(self):
        code = textwrap.dedent("""
            import micro_thread

            pipe = micro_thread.MicroPipe()

            class CM:
                def __enter__(self):
                    return self

                def __exit__(self, exc_type, exc, tb):
                    print('exit', exc_type.__name__, flush=True)

            def deep(n):
                if n:
                    return deep(n - 1)
                with CM():
                    try:
                        pipe.get()
                    except micro_thread.MicroThreadExit:
                        print('except', flush=True)
                        raise
                    finally:
                        print('finally', flush=True)

            def sleeper():
                try:
                    micro_thread.sleep(1000)
                finally:
                    print('sleeper finally', flush=True)

            def garbage():
                own = micro_thread.MicroPipe()
                try:
                    own.get()
                finally:
                    print('garbage finally', flush=True)

            threads = [micro_thread.start(deep, 30), micro_thread.start(sleeper)]
            micro_thread.start(garbage)
            micro_thread.sleep(0)
            assert [t.state for t in threads] == ['blocked', 'blocked']
            print('main done', flush=True)
        """)
        rc, out, err = script_helper.assert_python_ok('-c', code)
        lines = out.decode().splitlines()
        self.assertEqual(lines[0], 'main done')
        self.assertEqual(sorted(lines[1:]),
                         sorted(['except', 'finally', 'exit MicroThreadExit',
                                 'sleeper finally', 'garbage finally']))
        self.assertEqual(err, b'')

    @support.requires_fork()
    def test_fork_with_suspended_micro_threads(self):
        pipe = micro_thread.MicroPipe()
        log = []

        def deep(n):
            if n:
                return deep(n - 1)
            try:
                return pipe.get()
            finally:
                log.append('finally')

        threads = [self.start_blocked(deep, 50) for _ in range(3)]
        pid = os.fork()
        if pid == 0:
            # Child: micro-threads work, new and inherited ones.
            exitcode = 1
            try:
                q = micro_thread.MicroPipe()
                t = micro_thread.start(lambda: q.get() * 2)
                micro_thread.sleep(0)
                if t.state == 'blocked':
                    q.put(21)
                    if t.join() == 42:
                        for i, _ in enumerate(threads):
                            pipe.put(i)
                        if ([t.join() for t in threads] == [0, 1, 2]
                                and log == ['finally'] * 3):
                            exitcode = 0
            finally:
                os._exit(exitcode)
        support.wait_process(pid, exitcode=0)
        # The parent's micro-threads are unaffected.
        self.assertEqual([t.state for t in threads], ['blocked'] * 3)
        self.assertEqual(log, [])
        for i, _ in enumerate(threads):
            pipe.put(i)
        self.assertEqual([t.join() for t in threads], [0, 1, 2])
        self.assertEqual(log, ['finally'] * 3)

    @support.requires_fork()
    def test_fork_inside_micro_thread(self):
        pipe = micro_thread.MicroPipe()
        sibling = self.start_blocked(pipe.get)

        def forker():
            pid = os.fork()
            if pid == 0:
                exitcode = 1
                try:
                    q = micro_thread.MicroPipe()
                    t = micro_thread.start(lambda: q.get() + 1)
                    micro_thread.sleep(0)
                    q.put(1)
                    pipe.put('child')
                    if t.join() == 2 and sibling.join() == 'child':
                        exitcode = 0
                finally:
                    os._exit(exitcode)
            return pid

        pid = micro_thread.run(forker)
        support.wait_process(pid, exitcode=0)
        self.assertEqual(sibling.state, 'blocked')
        pipe.put('parent')
        self.assertEqual(sibling.join(), 'parent')

    @support.requires_fork()
    @threading_helper.requires_working_threading()
    @threading_helper.reap_threads
    @warnings_helper.ignore_warnings(category=DeprecationWarning)  # fork+threads
    def test_fork_while_another_os_thread_has_suspended_micro_threads(self):
        # In the child that OS thread is gone: its micro-thread cannot run
        # there (its frames stay referenced, like the dead thread's own);
        # the child's own micro-threads work.
        started = threading.Event()
        finish = threading.Event()
        box = []

        def os_thread():
            pipe = micro_thread.MicroPipe()

            def worker():
                frame = sys._getframe()
                try:
                    return pipe.get()
                finally:
                    frame = None

            box.append(micro_thread.start(worker))
            micro_thread.sleep(0)
            started.set()
            finish.wait(support.SHORT_TIMEOUT)
            pipe.put('parent')
            box.append(box[0].join())

        thread = threading.Thread(target=os_thread)
        with threading_helper.start_threads([thread]):
            try:
                self.assertTrue(started.wait(support.SHORT_TIMEOUT))
                foreign = box[0]
                pid = os.fork()
                if pid == 0:
                    exitcode = 1
                    try:
                        for op in (foreign.join, foreign.kill):
                            try:
                                op()
                                exitcode = 2
                            except RuntimeError:
                                pass
                        if exitcode == 1 and foreign.state == 'blocked':
                            exitcode = 3
                            foreign = None
                            gc.collect()
                            q = micro_thread.MicroPipe()
                            t = micro_thread.start(lambda: q.get() * 2)
                            micro_thread.sleep(0)
                            if t.state == 'blocked':
                                q.put(21)
                                if t.join() == 42:
                                    exitcode = 0
                    finally:
                        os._exit(exitcode)
                support.wait_process(pid, exitcode=0)
                foreign = None
            finally:
                finish.set()
        self.assertEqual(box[1:], ['parent'])

    @threading_helper.requires_working_threading()
    @threading_helper.reap_threads
    def test_os_threads_run_their_own_micro_threads(self):
        nthreads = 4
        barrier = threading.Barrier(nthreads)
        results = {}

        def os_thread(k):
            pipe = micro_thread.MicroPipe()
            frames = []

            def consumer():
                frames.append(sys._getframe())
                total = 0
                for x in pipe:
                    total += x
                return total

            def producer():
                for i in range(200):
                    pipe.put(i * k)
                    if i % 10 == 0:
                        micro_thread.sleep(0)
                pipe.close()

            barrier.wait()
            c = micro_thread.start(consumer)
            p = micro_thread.start(producer)
            results[k] = (c.join(), p.join(), micro_thread.enumerate(),
                          micro_thread.current(), frames[0].f_code.co_name)

        threads = [threading.Thread(target=os_thread, args=(k,))
                   for k in range(nthreads)]
        with threading_helper.start_threads(threads):
            pass
        self.assertEqual(results, {k: (sum(range(200)) * k, None, [], None, 'consumer')
                                   for k in range(nthreads)})

    @threading_helper.requires_working_threading()
    @threading_helper.reap_threads
    def test_use_from_another_os_thread(self):
        pipe = micro_thread.MicroPipe()
        t = self.start_blocked(pipe.get)
        errors = []

        def other():
            for name, op in [('join', t.join), ('kill', t.kill),
                             ('throw', lambda: t.throw(ValueError)),
                             ('get', pipe.get), ('put', lambda: pipe.put(1)),
                             ('close', pipe.close)]:
                try:
                    op()
                except RuntimeError:
                    errors.append(name)
            errors.append(t.state)

        thread = threading.Thread(target=other)
        with threading_helper.start_threads([thread]):
            pass
        self.assertEqual(errors, ['join', 'kill', 'throw', 'get', 'put',
                                  'close', 'blocked'])
        pipe.put('v')
        self.assertEqual(t.join(), 'v')

    @threading_helper.requires_working_threading()
    @threading_helper.reap_threads
    def test_stack_of_a_micro_thread_running_in_another_os_thread(self):
        # Its frames are on that thread's stack: refused, rather than
        # listing the caller's own frames.
        running = threading.Event()
        release = threading.Event()
        box = []

        def spin():
            running.set()
            release.wait(support.SHORT_TIMEOUT)

        def other():
            box.append(micro_thread.start(spin))
            micro_thread.sleep(0)

        thread = threading.Thread(target=other)
        with threading_helper.start_threads([thread]):
            self.assertTrue(running.wait(support.SHORT_TIMEOUT))
            try:
                with self.assertRaisesRegex(RuntimeError, 'another OS thread'):
                    box[0].stack()
            finally:
                release.set()

    @threading_helper.requires_working_threading()
    @threading_helper.reap_threads
    def test_micro_thread_of_ended_os_thread_is_dropped(self):
        # It cannot run in another OS thread: its frames are dropped
        # without running any code.
        frames = []
        log = []

        def make_worker(pipe):
            def worker():
                local = 'kept'  # noqa: F841 (read through f_locals)
                frames.append(sys._getframe())
                try:
                    pipe.get()
                finally:
                    log.append('finally')
            return worker

        ref = weakref.ref(_blocked_in_ended_os_thread(make_worker))
        self.assertEqual(micro_thread.enumerate(), [])
        support.gc_collect()
        self.assertIsNone(ref())
        self.assertEqual(log, [])
        self.assertEqual(frames[0].f_locals['local'], 'kept')
        frames[0].clear()


class DeadlockReportTests(MicroThreadTestCase):

    def test_report_is_bounded(self):
        # Each blocked micro-thread is listed with its innermost frames
        # only, and past a hundred the rest are counted, not listed.
        pipe = micro_thread.MicroPipe()
        # Fifteen distinct frames (a recursive function's repeated lines
        # would be collapsed by traceback).
        namespace = {"pipe": pipe}
        exec("def f15(): return pipe.get()\n" + "".join(
            f"def f{i}(): return f{i + 1}()\n" for i in range(15)), namespace)
        threads = [micro_thread.start(namespace["f0"]) for _ in range(130)]
        with self.assertRaises(micro_thread.DeadlockError) as cm:
            pipe.get()
        message = str(cm.exception)
        self.assertIn("... and 30 more blocked micro-threads", message)
        self.assertEqual(message.count("<MicroThread name="), 100)
        # 10 frames, each a "File ..." line, per listed micro-thread.
        self.assertEqual(message.count('File "'), 100 * 10)
        pipe.close()
        for t in threads:
            self.join_exception(t, micro_thread.PipeClosedError)


if __name__ == "__main__":
    unittest.main()
