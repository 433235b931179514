"""Tests for the notifier of micro-thread schedulers and the deferring
calls built on it directly: time.sleep_d(), os.read_d(), os.write_d(), the
worker pool, fd closing, signals, fork and the pinning report.

Sockets and io objects have their own modules (test_micro_thread_socket,
test_micro_thread_io).
"""

import os
import signal
import tempfile
import threading
import time
import traceback
import unittest
from test import support
from test.support import script_helper

from test.support import micro_thread_helper
from test.support.micro_thread_helper import _micro_thread, micro_thread


class NotifierTestCase(micro_thread_helper.MicroThreadTestCase):
    """Base class: leaves no micro-thread and no fd behind."""

    def pipe(self):
        r, w = os.pipe()
        self.addCleanup(self.close_quietly, r)
        self.addCleanup(self.close_quietly, w)
        return r, w

    @staticmethod
    def close_quietly(fd):
        try:
            os.close(fd)
        except OSError:
            pass

    def start_blocked(self, fn, *args):
        """Start fn and run it until it blocks; check that it deferred."""
        t = micro_thread.start(fn, *args)
        micro_thread.sleep(0)
        self.assertEqual(t.state, 'blocked')
        return t


class SleepTests(NotifierTestCase):

    def test_sleep_d_defers(self):
        order = []

        def sleeper(name, delay):
            time.sleep_d(delay)
            order.append(name)

        def main():
            a = micro_thread.start(sleeper, 'slow', 0.05)
            b = micro_thread.start(sleeper, 'fast', 0.01)
            a.join()
            b.join()
        micro_thread.run(main)
        self.assertEqual(order, ['fast', 'slow'])

    def test_many_sleepers_sleep_concurrently(self):
        def main():
            ts = [micro_thread.start(time.sleep_d, 0.1) for _ in range(1000)]
            for t in ts:
                t.join()
        t0 = time.monotonic()
        micro_thread.run(main)
        # Serially they would take 100 s.
        self.assertLess(time.monotonic() - t0, 10)

    def test_sleep_d_outside_micro_threads(self):
        t0 = time.monotonic()
        self.assertIsNone(time.sleep_d(0.02))
        self.assertGreaterEqual(time.monotonic() - t0, 0.019)

    def test_sleep_d_zero_yields(self):
        seen = []

        def other():
            seen.append('other')

        def main():
            micro_thread.start(other)
            time.sleep_d(0)
            return list(seen)
        self.assertEqual(micro_thread.run(main), ['other'])

    def test_signatures(self):
        import inspect
        self.assertEqual(str(inspect.signature(time.sleep_d)), '(seconds, /)')
        self.assertEqual(str(inspect.signature(os.read_d)), '(fd, length, /)')
        self.assertEqual(str(inspect.signature(os.write_d)), '(fd, data, /)')

    def test_sleep_d_bad_input(self):
        with self.assertRaises(ValueError):
            time.sleep_d(-1)
        with self.assertRaises(TypeError):
            time.sleep_d('1')
        with self.assertRaises(TypeError):
            time.sleep_d()

    def test_timeout_scope_ends_sleep_d(self):
        def main():
            with micro_thread.timeout(0.01):
                time.sleep_d(10)
        with self.assertRaises(TimeoutError):
            micro_thread.run(main)


class FdTests(NotifierTestCase):

    def test_read_write_pipe(self):
        r, w = self.pipe()
        got = []

        def reader():
            while data := os.read_d(r, 3):
                got.append(data)

        def main():
            t = self.start_blocked(reader)
            for chunk in (b'abc', b'de', b'f'):
                self.assertEqual(os.write_d(w, chunk), len(chunk))
                time.sleep_d(0.005)
            os.close(w)
            t.join()
        micro_thread.run(main)
        self.assertEqual(b''.join(got), b'abcdef')

    def test_read_d_outside_micro_threads_blocks_like_read(self):
        r, w = self.pipe()
        os.write(w, b'xy')
        self.assertEqual(os.read_d(r, 10), b'xy')
        os.close(w)
        self.assertEqual(os.read_d(r, 10), b'')

    def test_root_read_runs_micro_threads(self):
        r, w = self.pipe()

        def writer():
            time.sleep_d(0.01)
            os.write_d(w, b'from a micro-thread')
        t = micro_thread.start(writer)
        self.assertEqual(os.read_d(r, 100), b'from a micro-thread')
        t.join()

    def test_write_d_full_pipe_waits_for_reader(self):
        r, w = self.pipe()
        data = b'x' * (1 << 20)
        received = bytearray()

        def writer():
            view = memoryview(data)
            while view:
                n = os.write_d(w, view)
                view = view[n:]
            os.close(w)

        def reader():
            while chunk := os.read_d(r, 65536):
                received.extend(chunk)

        def main():
            a = micro_thread.start(writer)
            b = micro_thread.start(reader)
            a.join()
            b.join()
        micro_thread.run(main)
        self.assertEqual(len(received), len(data))

    def test_write_d_blocking_fd_never_blocks_the_os_thread(self):
        # Blocking-mode pipe (os.pipe's default): the writer must not block
        # the OS thread when the pipe is nearly full.
        r, w = self.pipe()
        self.assertTrue(os.get_blocking(w))
        ticks = []

        def ticker():
            for _ in range(5):
                ticks.append(1)
                time.sleep_d(0.001)

        def writer():
            total = 0
            while total < (1 << 20):
                total += os.write_d(w, b'y' * 100000)
            return total

        def main():
            t = micro_thread.start(ticker)
            wr = micro_thread.start(writer)
            time.sleep_d(0.05)
            self.assertEqual(wr.state, 'blocked')
            self.assertEqual(len(ticks), 5)
            while os.read_d(r, 1 << 20):
                if wr.done():
                    break
            t.join()
            return wr.join()
        self.assertGreaterEqual(micro_thread.run(main), 1 << 20)

    def test_bad_fd(self):
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        for call in (lambda: os.read_d(r, 1), lambda: os.write_d(w, b'x')):
            with self.assertRaises(OSError) as cm:
                micro_thread.run(call)
            self.assertEqual(cm.exception.errno, 9)

    def test_fd_open_the_other_way_raises_ebadf(self):
        # poll() never reports a pipe's write end readable: waiting would
        # hang where os.read() fails at once.
        r, w = self.pipe()
        for call in (lambda: os.read_d(w, 1), lambda: os.write_d(r, b'x')):
            for runner in (lambda f: f(), micro_thread.run):
                with self.assertRaises(OSError) as cm:
                    runner(call)
                self.assertEqual(cm.exception.errno, 9)

    def test_bad_arguments(self):
        with self.assertRaises(TypeError):
            os.read_d('x', 1)
        with self.assertRaises(OSError):
            os.read_d(0, -1)
        with self.assertRaises(TypeError):
            os.write_d(1, 'str')
        with self.assertRaises(TypeError):
            os.read_d(0)

    def test_two_readers_each_datum_once(self):
        r, w = self.pipe()
        got = []

        def reader(name):
            data = os.read_d(r, 1)
            got.append((name, data))

        def main():
            a = self.start_blocked(reader, 'a')
            b = self.start_blocked(reader, 'b')
            os.write_d(w, b'1')
            time.sleep_d(0.01)
            os.write_d(w, b'2')
            a.join()
            b.join()
        micro_thread.run(main)
        self.assertEqual(sorted(d for _, d in got), [b'1', b'2'])
        self.assertEqual({n for n, _ in got}, {'a', 'b'})

    def test_close_while_waiting_raises_ebadf(self):
        r, w = self.pipe()

        def main():
            t = self.start_blocked(os.read_d, r, 10)
            os.close(r)
            with self.assertRaises(OSError) as cm:
                t.join()
            self.assertEqual(cm.exception.errno, 9)
        micro_thread.run(main)

    def test_kill_while_waiting_leaves_no_registration(self):
        r, w = self.pipe()

        def main():
            t = self.start_blocked(os.read_d, r, 10)
            t.kill()
            with self.assertRaises(micro_thread.MicroThreadExit):
                t.join()
            # The fd can be waited on again, and the data is not lost.
            u = self.start_blocked(os.read_d, r, 10)
            os.write_d(w, b'kept')
            return u.join()
        self.assertEqual(micro_thread.run(main), b'kept')

    def test_timeout_scope_while_waiting(self):
        r, w = self.pipe()

        def main():
            with self.assertRaises(TimeoutError):
                with micro_thread.timeout(0.01):
                    os.read_d(r, 10)
            os.write(w, b'after')
            return os.read_d(r, 10)
        self.assertEqual(micro_thread.run(main), b'after')

    def test_hang_up_wakes_reader_with_eof(self):
        r, w = self.pipe()

        def main():
            t = self.start_blocked(os.read_d, r, 10)
            os.close(w)
            return t.join()
        self.assertEqual(micro_thread.run(main), b'')

    def test_write_to_closed_reader_raises_broken_pipe(self):
        r, w = self.pipe()
        os.close(r)
        with self.assertRaises(BrokenPipeError):
            micro_thread.run(os.write_d, w, b'x')

    def test_many_fds_at_once(self):
        pipes = [self.pipe() for _ in range(200)]

        def echo(r, w):
            return os.read_d(r, 10)

        def main():
            ts = [micro_thread.start(echo, r, w) for r, w in pipes]
            time.sleep_d(0)
            for i, (r, w) in enumerate(reversed(pipes)):
                os.write_d(w, b'%d' % i)
            return [t.join() for t in ts]
        got = micro_thread.run(main)
        self.assertEqual(sorted(got), sorted(b'%d' % i for i in range(200)))


class IdleTests(NotifierTestCase):

    def test_idle_scheduler_sleeps_in_the_kernel(self):
        # Waiting for an fd and a timer must not spin: a busy loop would
        # use about as much CPU time as wall time.
        r, w = self.pipe()
        th = threading.Timer(0.3, os.write, (w, b'x'))

        def main():
            sleeper = micro_thread.start(time.sleep_d, 0.2)
            data = os.read_d(r, 1)
            sleeper.join()
            return data
        cpu0 = time.process_time()
        th.start()
        try:
            self.assertEqual(micro_thread.run(main), b'x')
        finally:
            th.join()
        self.assertLess(time.process_time() - cpu0, 0.1)


    @unittest.skipUnless(os.path.isdir('/proc/self/fd'), 'needs /proc/self/fd')
    def test_no_epoll_instance_unless_an_fd_is_waited_for(self):
        code = (
            "import os, time, micro_thread.native as m\n"
            "def epolls():\n"
            "    fds = os.listdir('/proc/self/fd')\n"
            "    links = []\n"
            "    for fd in fds:\n"
            "        try:\n"
            "            links.append(os.readlink('/proc/self/fd/' + fd))\n"
            "        except OSError:\n"
            "            pass\n"
            "    return sum('eventpoll' in l for l in links)\n"
            "p = m.MicroPipe()\n"
            "t = m.start(p.get)\n"
            "m.run(lambda: (time.sleep_d(0.01), p.put(1)))\n"
            "t.join()\n"
            "print(epolls())\n"
            "r, w = os.pipe()\n"
            "m.run(lambda: (m.start(os.write_d, w, b'x'), os.read_d(r, 1)))\n"
            "print(epolls())\n")
        res = script_helper.assert_python_ok('-c', code)
        self.assertEqual(res.out.decode().split(), ['0', '1'])


class WorkerPoolTests(NotifierTestCase):

    def test_regular_file_read_and_write_go_to_workers(self):
        with tempfile.TemporaryFile() as f:
            fd = f.fileno()
            data = os.urandom(300000)
            ticks = []

            def ticker():
                while True:
                    ticks.append(1)
                    time.sleep_d(0)

            def main():
                t = micro_thread.start(ticker)
                written = 0
                while written < len(data):
                    written += os.write_d(fd, data[written:])
                os.lseek(fd, 0, os.SEEK_SET)
                chunks = []
                while chunk := os.read_d(fd, 65536):
                    chunks.append(chunk)
                t.kill()
                with self.assertRaises(micro_thread.MicroThreadExit):
                    t.join()
                return b''.join(chunks)
            self.assertEqual(micro_thread.run(main), data)
            # The ticker ran while the micro-thread waited for the worker.
            self.assertGreater(len(ticks), 1)

    def test_killed_read_consumes_nothing(self):
        # The worker reads at the file position without moving it; the
        # position moves only for a call that takes the data.  (The kill
        # may come after the worker is done: then the call returns its
        # data and the position has moved by as much; tried until a kill
        # caught a read in flight.)
        with tempfile.TemporaryFile() as f:
            f.write(b'0123456789' * (1 << 20))
            f.flush()
            fd = f.fileno()

            def attempt():
                os.lseek(fd, 0, os.SEEK_SET)
                t = micro_thread.start(os.read_d, fd, 8 << 20)
                micro_thread.sleep(0)
                t.kill()
                try:
                    data = t.join()
                except micro_thread.MicroThreadExit:
                    data = None
                for _ in range(50):         # let the worker finish
                    micro_thread.sleep(0.01)
                return data, os.lseek(fd, 0, os.SEEK_CUR)

            killed = 0
            for _ in range(20):
                data, position = micro_thread.run(attempt)
                if data is None:
                    killed += 1
                    self.assertEqual(position, 0)
                    self.assertEqual(os.read(fd, 5), b'01234')
                    break
                self.assertEqual(position, len(data))
            self.assertEqual(killed, 1, 'no kill caught a read in flight')

    def test_append_mode_write_appends(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'log')
            with open(path, 'wb') as f:
                f.write(b'first ')
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                self.assertEqual(micro_thread.run(os.write_d, fd, b'second'), 6)
            finally:
                os.close(fd)
            with open(path, 'rb') as f:
                self.assertEqual(f.read(), b'first second')

    def test_fd_closed_and_reused_while_the_worker_writes(self):
        # The worker writes through a duplicate of the fd: closing the fd
        # and reusing its number meanwhile cannot send the data elsewhere.
        with tempfile.TemporaryDirectory() as d:
            first = os.path.join(d, 'first')
            other = os.path.join(d, 'other')
            data = b'y' * (8 << 20)

            def main():
                fd = os.open(first, os.O_WRONLY | os.O_CREAT)
                t = micro_thread.start(os.write_d, fd, data)
                micro_thread.sleep(0)
                os.close(fd)
                fd2 = os.open(other, os.O_WRONLY | os.O_CREAT)
                try:
                    written = t.join()
                finally:
                    os.close(fd2)
                return fd, fd2, written
            fd, fd2, written = micro_thread.run(main)
            self.assertEqual(os.path.getsize(first), written)
            self.assertEqual(os.path.getsize(other), 0)

    def test_regular_file_outside_micro_threads(self):
        with tempfile.TemporaryFile() as f:
            self.assertEqual(os.write_d(f.fileno(), b'abc'), 3)
            os.lseek(f.fileno(), 0, os.SEEK_SET)
            self.assertEqual(os.read_d(f.fileno(), 10), b'abc')

    def test_kill_while_worker_runs_drops_result(self):
        # Whether the worker is still reading when kill() comes depends on
        # timing: a blocked micro-thread must end with MicroThreadExit (the
        # read's result is dropped when it arrives), one already woken keeps
        # its result.  Large reads make the first case the common one.
        size = 16 << 20
        killed_while_blocked = 0
        with tempfile.TemporaryFile() as f:
            f.write(b'z' * size)
            f.flush()
            # Until it was caught blocked three times (a collection of the
            # cyclic GC between the two micro-threads' steps can let the
            # worker finish first).
            for _ in range(40):
                if killed_while_blocked >= 3:
                    break
                os.lseek(f.fileno(), 0, os.SEEK_SET)

                def main():
                    t = micro_thread.start(os.read_d, f.fileno(), size)
                    micro_thread.sleep(0)
                    state = t.state
                    t.kill()
                    if state == 'blocked':
                        with self.assertRaises(micro_thread.MicroThreadExit):
                            t.join()
                        # The worker's result arrives and is dropped.
                        time.sleep_d(0.1)
                        return 1
                    self.assertEqual(len(t.join()), size)
                    return 0
                killed_while_blocked += micro_thread.run(main)
        self.assertGreater(killed_while_blocked, 0)


class SignalTests(NotifierTestCase):

    @unittest.skipUnless(hasattr(signal, 'pthread_kill'), 'needs pthread_kill')
    def test_ctrl_c_while_idle_reaches_main_micro_thread(self):
        r, w = self.pipe()
        cleaned = []

        def bystander():
            try:
                os.read_d(r, 1)
            finally:
                cleaned.append('bystander')

        def main():
            micro_thread.start(bystander)
            try:
                time.sleep_d(30)
            finally:
                cleaned.append('main')

        main_thread = threading.get_ident()
        timer = threading.Timer(
            0.1, signal.pthread_kill, (main_thread, signal.SIGINT))
        timer.start()
        try:
            t0 = time.monotonic()
            with self.assertRaises(KeyboardInterrupt):
                micro_thread.run(main)
            self.assertLess(time.monotonic() - t0, 10)
        finally:
            timer.join()
        self.assertEqual(cleaned, ['main'])
        # The interrupt was for main alone: the bystander is still blocked.
        [bystander_thread] = micro_thread.enumerate()
        self.assertEqual(bystander_thread.state, 'blocked')
        bystander_thread.kill()
        with self.assertRaises(micro_thread.MicroThreadExit):
            bystander_thread.join()
        self.assertEqual(cleaned, ['main', 'bystander'])

    def test_interrupt_in_other_micro_thread_reaches_main(self):
        cleaned = []

        def interrupted():
            time.sleep_d(0.01)
            signal.raise_signal(signal.SIGINT)
            time.sleep_d(10)

        def main():
            micro_thread.start(interrupted)
            try:
                time.sleep_d(30)
            finally:
                cleaned.append('main')
        with self.assertRaises(KeyboardInterrupt):
            micro_thread.run(main)
        self.assertEqual(cleaned, ['main'])

    def test_interrupt_in_other_micro_thread_reaches_pinned_main(self):
        # run()'s micro-thread is pinned (blocked under a C call), so it is
        # the current one while the other runs nested: the interrupt must
        # still end its blocking call.
        pipe = micro_thread.MicroPipe()
        cleaned = []

        def interrupted():
            signal.raise_signal(signal.SIGINT)

        def main():
            micro_thread.start(interrupted)
            try:
                sorted([1, 2], key=lambda item: pipe.get())
            finally:
                cleaned.append('main')
        with self.assertRaises(KeyboardInterrupt):
            micro_thread.run(main)
        self.assertEqual(cleaned, ['main'])

    def test_signal_handler_that_returns_does_not_end_wait(self):
        r, w = self.pipe()
        hits = micro_thread_helper.signal_then(self, lambda: os.write(w, b'done'))
        self.assertEqual(micro_thread.run(os.read_d, r, 10), b'done')
        self.assertEqual(hits, [1])


class PinningReportTests(NotifierTestCase):

    def test_pin_count_and_hook(self):
        seen = []

        def hook(mt, what):
            seen.append((mt, what, [f.name for f in traceback.extract_stack()]))
        _micro_thread.set_pin_hook(hook)
        self.addCleanup(_micro_thread.set_pin_hook, None)

        def key(x):
            time.sleep_d(0.001)
            return -x

        def main():
            before = _micro_thread.pin_count()
            result = sorted([1, 2, 3], key=key)
            return result, _micro_thread.pin_count() - before
        result, pins = micro_thread.run(main)
        self.assertEqual(result, [3, 2, 1])
        self.assertEqual(pins, 3)
        self.assertEqual(len(seen), 3)
        mt, what, stack = seen[0]
        self.assertIsInstance(mt, micro_thread.MicroThread)
        self.assertEqual(what, 'sleep_d')
        self.assertIn('key', stack)

    def test_deferring_calls_do_not_count(self):
        def main():
            before = _micro_thread.pin_count()
            time.sleep_d(0.001)
            return _micro_thread.pin_count() - before
        self.assertEqual(micro_thread.run(main), 0)

    def test_hook_errors_are_reported_not_raised(self):
        def hook(mt, what):
            raise ValueError('bad hook')
        _micro_thread.set_pin_hook(hook)
        self.addCleanup(_micro_thread.set_pin_hook, None)
        with support.catch_unraisable_exception() as cm:
            result = micro_thread.run(
                sorted, [2, 1], key=lambda x: time.sleep_d(0) or x)
            self.assertIsInstance(cm.unraisable.exc_value, ValueError)
        self.assertEqual(result, [1, 2])

    def test_set_pin_hook_bad_input(self):
        with self.assertRaises(TypeError):
            _micro_thread.set_pin_hook(42)


@unittest.skipUnless(hasattr(os, 'fork'), 'needs os.fork')
class ForkTests(NotifierTestCase):

    def test_child_gets_its_own_notifier(self):
        code = (
            "import os, time, micro_thread.native as m\n"
            "r, w = os.pipe()\n"
            "t = m.start(os.read_d, r, 10)\n"
            "m.sleep(0)\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.write(w, b'child')\n"
            "    print('child got', t.join(), flush=True)\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "os.write(w, b'parent')\n"
            "print('parent got', t.join(), flush=True)\n")
        res = script_helper.assert_python_ok('-c', code)
        lines = sorted(res.out.decode().split('\n'))
        self.assertEqual([l for l in lines if l],
                         ["child got b'child'", "parent got b'parent'"])


    def test_worker_call_in_flight_fails_in_the_child(self):
        # The worker thread doing the read does not exist in the child: the
        # call fails there with RuntimeError, and goes on in the parent.
        code = (
            "import os, tempfile, warnings, micro_thread.native as m\n"
            "warnings.simplefilter('ignore', DeprecationWarning)\n"
            "size = 32 << 20\n"
            "f = tempfile.TemporaryFile()\n"
            "f.write(b'z' * size)\n"
            "f.flush()\n"
            "for attempt in range(20):\n"
            "    os.lseek(f.fileno(), 0, os.SEEK_SET)\n"
            "    t = m.start(os.read_d, f.fileno(), size)\n"
            "    m.sleep(0)\n"
            "    if t.state != 'blocked':\n"
            "        t.join()\n"
            "        continue\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        try:\n"
            "            t.join()\n"
            "        except RuntimeError as exc:\n"
            "            print('child:', exc, flush=True)\n"
            "            os._exit(0)\n"
            "        os._exit(1)     # it had finished before the fork\n"
            "    _, status = os.waitpid(pid, 0)\n"
            "    got = len(t.join())\n"
            "    if os.waitstatus_to_exitcode(status) == 0:\n"
            "        print('parent:', got == size, flush=True)\n"
            "        break\n")
        res = script_helper.assert_python_ok('-c', code)
        self.assertEqual(res.out.decode().splitlines(), [
            'child: the worker thread running this call did not survive fork()',
            'parent: True'])


if __name__ == '__main__':
    unittest.main()
