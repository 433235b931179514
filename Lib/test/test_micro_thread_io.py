"""Tests for the deferring methods of the io classes.

read_d(size=-1), readline_d(size=-1) and write_d(b) of io.FileIO,
io.BufferedReader, io.BufferedWriter, io.BufferedRandom, io.BufferedRWPair
and io.TextIOWrapper (Modules/_io): they return and raise what read(),
readline() and write() do, but never block the OS thread -- in a
micro-thread only the micro-thread waits; outside micro-threads (or pinned
by a C frame) the call drives the OS thread's scheduler until it is done;
regular files are read and written by a worker thread.

How a test tells a deferral from a blocking call: a micro-thread that
deferred lets the root run again while it waits (its state is 'blocked'
after the root's micro_thread.sleep(0)).  The micro-threads of a test talk
over os.pipe() in one OS thread, so a call that blocked the OS thread
instead of deferring would hang the test (the SIGALRM guard in setUp()
turns that into a failure).
"""

import errno
import io
import os
import signal
import socket
import tempfile
import threading
import unittest
from test.support import import_helper, micro_thread_helper
from test.support.micro_thread_helper import _micro_thread, micro_thread

if not hasattr(io.FileIO, 'read_d'):
    raise unittest.SkipTest('the io classes have no deferring methods here')

PIPE_BUF = getattr(os, 'PIPE_BUF', None) or 512   # select.PIPE_BUF
try:
    import select
    PIPE_BUF = select.PIPE_BUF
except (ImportError, AttributeError):
    pass

# A test that blocks the OS thread fails after this many seconds.
OS_BLOCK_TIMEOUT = 30

SAMPLE = b''.join(b'line %d %s\n' % (i, b'x' * (i % 37)) for i in range(3000))


class OSThreadBlocked(Exception):
    pass


def close_quietly(f):
    try:
        f.close()
    except (OSError, ValueError):
        pass


def close_fd_quietly(fd):
    try:
        os.close(fd)
    except OSError:
        pass


class IOTestCase(micro_thread_helper.MicroThreadTestCase):
    """Leaves no micro-thread behind; fails instead of hanging."""

    def setUp(self):
        super().setUp()
        if (hasattr(signal, 'setitimer')
                and threading.current_thread() is threading.main_thread()):
            def alarm(signum, frame):
                raise OSThreadBlocked(
                    f"the test ran {OS_BLOCK_TIMEOUT} s: did a deferring "
                    "call block the OS thread?")
            previous = signal.signal(signal.SIGALRM, alarm)
            signal.setitimer(signal.ITIMER_REAL, OS_BLOCK_TIMEOUT)
            self.addCleanup(signal.signal, signal.SIGALRM, previous)
            self.addCleanup(signal.setitimer, signal.ITIMER_REAL, 0)

    # -- helpers

    def pipe(self):
        """os.pipe(), the fds closed at the end of the test unless
        closed with close_fd() (or marked closed with fd_closed())."""
        r, w = os.pipe()
        if not hasattr(self, '_fds'):
            self._fds = set()
            self.addCleanup(self._close_fds)
        self._fds.update((r, w))
        return r, w

    def _close_fds(self):
        for fd in self._fds:
            close_fd_quietly(fd)

    def fd_closed(self, fd):
        self._fds.discard(fd)

    def close_fd(self, fd):
        self.fd_closed(fd)
        os.close(fd)

    def fopen(self, file, mode, **kwargs):
        """open(file, mode, ...) closed at the end of the test; an fd is
        not closed by the file."""
        if isinstance(file, int):
            kwargs.setdefault('closefd', False)
        f = open(file, mode, **kwargs)
        self.addCleanup(close_quietly, f)
        return f

    def temp_path(self, data=None):
        fd, path = tempfile.mkstemp()
        os.close(fd)
        self.addCleanup(os.unlink, path)
        if data is not None:
            with open(path, 'wb') as f:
                f.write(data)
        return path

    def feed(self, fd, *pieces, close=False, delay=0.002):
        """Start a micro-thread that writes pieces to fd through a FileIO
        (write_d), sleeping delay seconds before each; then closes fd if
        close."""
        writer = open(fd, 'wb', buffering=0, closefd=False)
        if close:
            self.fd_closed(fd)

        def run():
            with writer:
                for piece in pieces:
                    micro_thread.sleep(delay)
                    view = memoryview(piece)
                    while view:
                        view = view[writer.write_d(view):]
            if close:
                os.close(fd)
        return micro_thread.start(run)

    def drain(self, fd, into):
        """Start a micro-thread that reads fd until end of file (os.read_d),
        appending to the bytearray into."""
        def run():
            while True:
                data = os.read_d(fd, 65536)
                if not data:
                    return len(into)
                into.extend(data)
        return micro_thread.start(run)

    def start_blocked(self, fn, *args):
        """Start fn(*args) and let it run until it waits; check it deferred."""
        t = micro_thread.start(fn, *args)
        micro_thread.sleep(0)
        # A micro-thread blocking its OS thread (or pinned) would still be
        # running, and the root could not have got here meanwhile.
        self.assertEqual(t.state, 'blocked')
        return t

    def start_deferred(self, fn, *args):
        """Start fn(*args), a call on a regular file, and let it run until
        it waits for its worker thread; check it deferred.  The worker may
        be done already: then the call is woken ('ready'); a call that
        blocked the OS thread would be over ('finished')."""
        t = micro_thread.start(fn, *args)
        micro_thread.sleep(0)
        self.assertIn(t.state, ('blocked', 'ready'))
        return t

    def join_raises(self, t, exc_type):
        try:
            t.join()
        except exc_type as exc:
            return exc
        self.fail(f"{t!r} did not raise {exc_type.__name__}")

    def kill(self, t):
        t.kill()
        self.join_raises(t, micro_thread.MicroThreadExit)

    def plain(self, data, op, *args, **kwargs):
        """What the plain method op returns, call after call until it
        returns an empty result, reading data from memory."""
        text = 'encoding' in kwargs
        newline = kwargs.pop('newline', None)
        f = io.BufferedReader(io.BytesIO(data))
        if text:
            f = io.TextIOWrapper(f, newline=newline, **kwargs)
        return self.collect(getattr(f, op), *args)

    @staticmethod
    def collect(method, *args):
        results = []
        while True:
            result = method(*args)
            results.append(result)
            if not result:
                return results


# ---------------------------------------------------------------------------
# io.FileIO

class FileIOTests(IOTestCase):

    def test_methods_exist(self):
        for cls in (io.FileIO, io.BufferedReader, io.BufferedRandom,
                    io.BufferedRWPair, io.TextIOWrapper):
            for name in ('read_d', 'readline_d'):
                self.assertTrue(callable(getattr(cls, name)), (cls, name))
        for cls in (io.FileIO, io.BufferedWriter, io.BufferedRandom,
                    io.BufferedRWPair, io.TextIOWrapper):
            self.assertTrue(callable(cls.write_d), cls)
        self.assertFalse(hasattr(io.BufferedWriter, 'read_d'))
        self.assertFalse(hasattr(io.BufferedReader, 'write_d'))

    def test_read_d_returns_what_is_there(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=0)

        def main():
            reader = self.start_blocked(f.read_d, 100)
            writer = self.feed(w, b'abc')
            writer.join()
            return reader.join()
        self.assertEqual(micro_thread.run(main), b'abc')

    def test_read_d_until_end_of_file(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=0)

        def main():
            reader = self.start_blocked(f.read_d)
            self.feed(w, b'one ', b'two ', b'three' * 10000, close=True).join()
            return reader.join(), f.read_d(), f.read_d(5), f.read_d(None)
        self.assertEqual(micro_thread.run(main),
                         (b'one two ' + b'three' * 10000, b'', b'', b''))

    def test_readline_d_reads_no_further_than_the_line(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=0)

        def main():
            reader = self.start_blocked(f.readline_d)
            self.feed(w, b'hel', b'lo\nnext', b' line\nrest').join()
            return (reader.join(), f.readline_d(3), f.readline_d(),
                    os.read(r, 100))
        self.assertEqual(micro_thread.run(main),
                         (b'hello\n', b'nex', b't line\n', b'rest'))

    def test_readline_d_at_end_of_file(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=0)

        def main():
            reader = self.start_blocked(f.readline_d)
            self.feed(w, b'no newline', close=True).join()
            return reader.join(), f.readline_d(), f.readline_d(0)
        self.assertEqual(micro_thread.run(main), (b'no newline', b'', b''))

    def test_write_d_lets_the_reader_run(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=0)
        data = os.urandom(256 * 1024)
        received = bytearray()

        def main():
            reader = self.drain(r, received)
            view, counts = memoryview(data), []
            while view:
                count = f.write_d(view)
                counts.append(count)
                view = view[count:]
            self.close_fd(w)
            reader.join()
            return counts
        counts = micro_thread.run(main)
        self.assertEqual(received, data)
        # A pipe in blocking mode: at most PIPE_BUF bytes a call.
        self.assertTrue(all(0 < c <= PIPE_BUF for c in counts), counts[:10])
        self.assertEqual(sum(counts), len(data))

    def test_non_blocking_fd_waits_instead_of_returning_none(self):
        r, w = self.pipe()
        os.set_blocking(r, False)
        f = self.fopen(r, 'rb', buffering=0)
        self.assertIsNone(f.read(10))

        def main():
            reader = self.start_blocked(f.read_d, 10)
            self.feed(w, b'data').join()
            return reader.join()
        self.assertEqual(micro_thread.run(main), b'data')

    def test_errors_are_those_of_the_plain_methods(self):
        r, w = self.pipe()
        fr = self.fopen(r, 'rb', buffering=0)
        fw = self.fopen(w, 'wb', buffering=0)
        with self.assertRaises(io.UnsupportedOperation):
            fr.write_d(b'x')
        with self.assertRaises(io.UnsupportedOperation):
            fw.read_d(1)
        with self.assertRaises(io.UnsupportedOperation):
            fw.readline_d()
        with self.assertRaises(TypeError):
            fr.read_d('1')
        with self.assertRaises(TypeError):
            fw.write_d('text')
        with self.assertRaises(TypeError):
            fr.read_d(1, 2)
        fr.close()
        fw.close()
        for call in (lambda: fr.read_d(1), fr.read_d, fr.readline_d,
                     lambda: fw.write_d(b'x')):
            with self.assertRaises(ValueError):
                call()

    def test_close_while_waiting_fails_the_wait_with_ebadf(self):
        r, w = self.pipe()
        f = open(r, 'rb', buffering=0)   # closes r
        self.fd_closed(r)

        def main():
            waiters = [self.start_blocked(f.read_d, 10),
                       self.start_blocked(f.readline_d),
                       self.start_blocked(f.read_d)]
            f.close()
            return [self.join_raises(t, OSError).errno for t in waiters]
        self.assertEqual(micro_thread.run(main), [errno.EBADF] * 3)

    def test_kill_and_timeout_end_the_wait(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=0)

        def main():
            self.kill(self.start_blocked(f.read_d, 10))
            with self.assertRaises(TimeoutError):
                with micro_thread.timeout(0.01):
                    f.readline_d()
            os.write(w, b'later\n')
            return f.readline_d()
        self.assertEqual(micro_thread.run(main), b'later\n')


# ---------------------------------------------------------------------------
# io.BufferedReader

class BufferedReaderTests(IOTestCase):

    def test_detach_while_a_read_d_waits(self):
        # The waiting call ends with the error a read of a detached object
        # gives (it read a NULL raw stream when the data came).
        r, w = self.pipe()
        f = self.fopen(r, 'rb', closefd=False)

        def main():
            reader = self.start_blocked(f.readline_d)
            raw = f.detach()
            self.addCleanup(raw.close)
            self.feed(w, b'late\n').join()
            with self.assertRaisesRegex(ValueError, 'detached'):
                reader.join()
            return raw.read(10)
        self.assertEqual(micro_thread.run(main), b'late\n')

    def test_read_d_waits_for_all_it_asked_for(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb')

        def main():
            reader = self.start_blocked(f.read_d, 5)
            self.feed(w, b'ab', b'cd', b'ef').join()
            return reader.join(), f.read_d(1), f.read_d(0)
        self.assertEqual(micro_thread.run(main), (b'abcde', b'f', b''))

    def test_read_d_until_end_of_file(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=64)
        data = os.urandom(100000)

        def main():
            reader = self.start_blocked(f.read_d)
            self.feed(w, data[:10], data[10:50000], data[50000:],
                      close=True).join()
            return reader.join(), f.read_d(), f.read_d(10)
        self.assertEqual(micro_thread.run(main), (data, b'', b''))

    def test_read_d_longer_than_the_buffer(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=16)
        data = os.urandom(10000)

        def main():
            reader = self.start_blocked(f.read_d, 9000)
            self.feed(w, *(data[i:i + 7] for i in range(0, len(data), 7)),
                      delay=0).join()
            return reader.join(), f.read_d(1000)
        self.assertEqual(micro_thread.run(main), (data[:9000], data[9000:]))

    def test_readline_d(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb')

        def main():
            reader = self.start_blocked(f.readline_d)
            self.feed(w, b'hel', b'lo\nnext', b' line\n', b'last',
                      close=True).join()
            return [reader.join(), f.readline_d(3), f.readline_d(),
                    f.readline_d(), f.readline_d()]
        self.assertEqual(micro_thread.run(main),
                         [b'hello\n', b'nex', b't line\n', b'last', b''])

    def test_readline_d_longer_than_the_buffer(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=16)
        line = bytes(range(32, 127)) * 100 + b'\n'

        def main():
            reader = self.start_blocked(f.readline_d)
            self.feed(w, *(line[i:i + 13] for i in range(0, len(line), 13)),
                      b'second line\n', b'x' * 40 + b'\n', delay=0).join()
            return [reader.join(), f.readline_d(), f.readline_d(20),
                    f.readline_d()]
        self.assertEqual(micro_thread.run(main),
                         [line, b'second line\n', b'x' * 20, b'x' * 20 + b'\n'])

    def test_results_match_the_plain_methods(self):
        for op, args in (('readline', ()), ('readline', (5,)),
                         ('read', (7,)), ('read', (5000,)), ('read', ())):
            with self.subTest(op=op, args=args):
                r, w = self.pipe()
                f = self.fopen(r, 'rb', buffering=100)

                def main():
                    pieces = [SAMPLE[i:i + 1000]
                              for i in range(0, len(SAMPLE), 1000)]
                    writer = self.feed(w, *pieces, close=True)
                    results = self.collect(getattr(f, op + '_d'), *args)
                    writer.join()
                    return results
                self.assertEqual(micro_thread.run(main),
                                 self.plain(SAMPLE, op, *args))

    def test_kill_keeps_the_data_read(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb', buffering=16)

        def main():
            reader = self.start_blocked(f.readline_d)
            self.feed(w, b'x' * 20, b'y' * 20).join()   # longer than the buffer
            micro_thread.sleep(0.01)
            self.assertEqual(reader.state, 'blocked')
            self.kill(reader)
            os.write(w, b'z\nrest')
            return f.readline_d(), f.read_d(4)
        self.assertEqual(micro_thread.run(main),
                         (b'x' * 20 + b'y' * 20 + b'z\n', b'rest'))

    def test_timeout_keeps_the_data_read(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb')

        def main():
            os.write(w, b'abc')
            with self.assertRaises(TimeoutError):
                with micro_thread.timeout(0.02):
                    f.read_d(10)
            os.write(w, b'defghijk')
            return f.read_d(10), f.read(1)
        self.assertEqual(micro_thread.run(main), (b'abcdefghij', b'k'))

    def test_close_while_waiting_fails_the_wait_with_ebadf(self):
        for close_raw in (False, True):
            with self.subTest(close_raw=close_raw):
                r, w = self.pipe()
                f = self.fopen(r, 'rb', closefd=True)
                self.fd_closed(r)

                def main():
                    readers = [self.start_blocked(f.readline_d),
                               self.start_blocked(f.read_d, 5),
                               self.start_blocked(f.read_d)]
                    (f.raw if close_raw else f).close()
                    return [self.join_raises(t, OSError).errno
                            for t in readers]
                self.assertEqual(micro_thread.run(main), [errno.EBADF] * 3)
                self.assertTrue(f.closed)

    def test_calls_take_turns(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb')

        def main():
            readers = [self.start_blocked(f.readline_d),
                       self.start_blocked(f.read_d, 3),
                       self.start_blocked(f.readline_d)]
            self.feed(w, b'one\ntw', b'o\nthr', b'ee\n').join()
            return [t.join() for t in readers]
        self.assertEqual(micro_thread.run(main), [b'one\n', b'two', b'\n'])

    def test_a_killed_waiter_lets_the_next_one_in(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb')

        def main():
            first = self.start_blocked(f.readline_d)
            second = self.start_blocked(f.readline_d)
            third = self.start_blocked(f.readline_d)
            self.kill(second)
            self.kill(first)
            self.feed(w, b'line\n').join()
            return third.join()
        self.assertEqual(micro_thread.run(main), b'line\n')

    def test_plain_methods_still_work_around_the_calls(self):
        r, w = self.pipe()
        f = self.fopen(r, 'rb')

        def main():
            self.feed(w, b'ab\ncd\nef\ngh', close=True).join()
            return [f.readline(), f.readline_d(), f.read(2), f.read_d(1),
                    f.peek(1)[:1], f.read_d(), f.read()]
        self.assertEqual(micro_thread.run(main),
                         [b'ab\n', b'cd\n', b'ef', b'\n', b'g', b'gh', b''])


# ---------------------------------------------------------------------------
# io.BufferedWriter

class BufferedWriterTests(IOTestCase):

    def test_small_write_d_is_buffered(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb')
        os.set_blocking(r, False)

        def main():
            self.assertEqual(f.write_d(b'abc'), 3)
            self.assertEqual(f.write_d(bytearray(b'de')), 2)
            with self.assertRaises(BlockingIOError):
                os.read(r, 10)
            f.flush()
            return os.read(r, 10)
        self.assertEqual(micro_thread.run(main), b'abcde')

    def test_write_d_larger_than_the_buffer_lets_the_reader_run(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=4096)
        data = os.urandom(256 * 1024)
        received = bytearray()

        def main():
            reader = self.drain(r, received)
            self.assertEqual(f.write_d(data), len(data))
            # At most a buffer is left, as write() leaves it.
            self.assertGreaterEqual(len(received), len(data) - 4096 - 65536)
            f.write_d(memoryview(b'tail'))
            f.close()
            self.close_fd(w)
            reader.join()
        micro_thread.run(main)
        self.assertEqual(received, data + b'tail')

    def test_kill_keeps_the_data_accepted(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=1000)
        data = os.urandom(300000)
        received = bytearray()

        def main():
            writer = self.start_blocked(f.write_d, data)   # fills the pipe
            self.kill(writer)
            reader = self.drain(r, received)
            # A write_d() of nothing writes what is pending (more than a
            # buffer) as the reader makes room.
            self.assertEqual(f.write_d(b''), 0)
            f.close()
            self.close_fd(w)
            reader.join()
        micro_thread.run(main)
        self.assertEqual(received, data)

    def test_timeout_keeps_the_data_accepted(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=1000)
        data = os.urandom(300000)
        received = bytearray()

        def main():
            with self.assertRaises(TimeoutError):
                with micro_thread.timeout(0.01):
                    f.write_d(data)
            reader = self.drain(r, received)
            f.write_d(b'!')
            f.close()
            self.close_fd(w)
            reader.join()
        micro_thread.run(main)
        self.assertEqual(received, data + b'!')

    def test_writers_take_turns(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=100)
        a, b = b'a' * 200000, b'b' * 200000
        received = bytearray()

        def main():
            first = self.start_blocked(f.write_d, a)
            second = self.start_blocked(f.write_d, b)
            reader = self.drain(r, received)
            self.assertEqual((first.join(), second.join()), (len(a), len(b)))
            f.close()
            self.close_fd(w)
            reader.join()
        micro_thread.run(main)
        self.assertEqual(received, a + b)

    def test_closed_and_errors(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb')
        with self.assertRaises(TypeError):
            f.write_d('text')
        with self.assertRaises(TypeError):
            f.write_d()
        f.close()
        with self.assertRaises(ValueError):
            f.write_d(b'x')

    def test_broken_pipe(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=10)
        self.close_fd(r)

        def main():
            with self.assertRaises(BrokenPipeError):
                f.write_d(b'x' * 100)
        old = signal.signal(signal.SIGPIPE, signal.SIG_IGN) \
            if hasattr(signal, 'SIGPIPE') else None
        try:
            micro_thread.run(main)
        finally:
            if old is not None:
                signal.signal(signal.SIGPIPE, old)

    def test_close_raw_while_waiting_fails_the_wait_with_ebadf(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=100, closefd=True)
        self.fd_closed(w)

        def main():
            writer = self.start_blocked(f.write_d, b'x' * 300000)
            f.raw.close()
            return self.join_raises(writer, OSError).errno
        self.assertEqual(micro_thread.run(main), errno.EBADF)


# ---------------------------------------------------------------------------
# io.BufferedRWPair

class BufferedRWPairTests(IOTestCase):

    def test_echo_over_two_pipes(self):
        r1, w1 = self.pipe()
        r2, w2 = self.pipe()
        pair = io.BufferedRWPair(io.FileIO(r1, 'rb', closefd=False),
                                 io.FileIO(w2, 'wb', closefd=False), 16)
        self.addCleanup(close_quietly, pair)
        client_out = self.fopen(w1, 'wb', buffering=0)
        client_in = self.fopen(r2, 'rb')
        lines = [b'line %d %s\n' % (i, b'-' * (i * 7)) for i in range(30)]

        def echo():
            while line := pair.readline_d():
                self.assertEqual(pair.write_d(line.upper()), len(line))
                pair.flush()
            rest = pair.read_d(5)
            return rest

        def main():
            server = micro_thread.start(echo)
            answers = []
            for line in lines:
                client_out.write_d(line)
                answers.append(client_in.readline_d())
            client_out.close()
            self.close_fd(w1)
            self.assertEqual(server.join(), b'')
            return answers
        self.assertEqual(micro_thread.run(main), [l.upper() for l in lines])

    def test_read_d_of_a_socket_file(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        fa = a.makefile('rwb')
        self.addCleanup(close_quietly, fa)
        self.assertIsInstance(fa, io.BufferedRWPair)

        def main():
            reader = self.start_blocked(fa.read_d, 6)
            b.sendall(b'abc')
            micro_thread.sleep(0.01)
            self.assertEqual(reader.state, 'blocked')
            b.sendall(b'def\n')
            self.assertEqual(fa.write_d(b'back\n'), 5)
            fa.flush()
            return reader.join(), fa.readline_d(), b.recv(10)
        self.assertEqual(micro_thread.run(main), (b'abcdef', b'\n', b'back\n'))


# ---------------------------------------------------------------------------
# io.TextIOWrapper

TEXT = 'a\rb\nc\r\nd\r\re\n\nf\r\n\r\ng\u00e9\u20ac\U0001f600\rh'


class TextIOWrapperTests(IOTestCase):

    def test_readline_d_and_read_d(self):
        r, w = self.pipe()
        f = self.fopen(r, 'r', encoding='utf-8')

        def main():
            reader = self.start_blocked(f.readline_d)
            self.feed(w, b'line \xc3', b'\xa9\n', b'rest', close=True).join()
            return reader.join(), f.read_d(), f.read_d(), f.readline_d()
        self.assertEqual(micro_thread.run(main),
                         ('line \u00e9\n', 'rest', '', ''))

    def test_read_d_waits_for_size_characters(self):
        r, w = self.pipe()
        f = self.fopen(r, 'r', encoding='utf-8')

        def main():
            reader = self.start_blocked(f.read_d, 3)
            self.feed(w, b'\xe2\x82', b'\xac\xe2', b'\x82\xac', b'x\xe2\x82\xac').join()
            return reader.join(), f.read_d(1)
        self.assertEqual(micro_thread.run(main), ('\u20ac\u20acx', '\u20ac'))

    def test_results_match_the_plain_methods(self):
        # Every newline mode, pieces of every size (a CR LF or a character
        # split between two writes), several encodings.
        for encoding in ('utf-8', 'utf-16', 'utf-32-le', 'latin-1'):
            text = TEXT if encoding != 'latin-1' else TEXT[:-5] + 'h'
            data = text.encode(encoding)
            for newline in (None, '', '\n', '\r', '\r\n'):
                for op, args in (('readline', ()), ('readline', (2,)),
                                 ('read', (3,)), ('read', ())):
                    expected = self.plain(data, op, *args, encoding=encoding,
                                          newline=newline)
                    for size in (1, 3, 1000):
                        with self.subTest(encoding=encoding, newline=newline,
                                          op=op, args=args, size=size):
                            r, w = self.pipe()
                            f = self.fopen(r, 'r', encoding=encoding,
                                           newline=newline)

                            def main():
                                writer = self.feed(
                                    w, *(data[i:i + size]
                                         for i in range(0, len(data), size)),
                                    close=True, delay=0)
                                results = self.collect(
                                    getattr(f, op + '_d'), *args)
                                writer.join()
                                return results
                            self.assertEqual(micro_thread.run(main), expected)

    def test_line_longer_than_the_buffer(self):
        line = '\u00e9' * 20000 + '\n'
        data = (line * 3 + 'tail').encode()
        for buffering in (16, 8192):
            with self.subTest(buffering=buffering):
                r, w = self.pipe()
                f = self.fopen(r, 'r', encoding='utf-8', buffering=buffering)

                def main():
                    writer = self.feed(
                        w, *(data[i:i + 999] for i in range(0, len(data), 999)),
                        close=True)
                    results = self.collect(f.readline_d)
                    writer.join()
                    return results
                self.assertEqual(micro_thread.run(main),
                                 [line, line, line, 'tail', ''])

    def test_pending_cr_at_end_of_file(self):
        r, w = self.pipe()
        f = self.fopen(r, 'r', encoding='ascii')

        def main():
            reader = self.start_blocked(f.readline_d)
            self.feed(w, b'a\r', close=True).join()
            return reader.join(), f.readline_d()
        self.assertEqual(micro_thread.run(main), ('a\n', ''))

    def test_kill_keeps_the_data_read(self):
        r, w = self.pipe()
        f = self.fopen(r, 'r', encoding='utf-8', buffering=16)

        def main():
            reader = self.start_blocked(f.readline_d)
            self.feed(w, 'd\u00e9j\u00e0 '.encode() * 10 + b'\xc3').join()
            micro_thread.sleep(0.01)
            self.kill(reader)
            with self.assertRaises(TimeoutError):
                with micro_thread.timeout(0.01):
                    f.readline_d()
            os.write(w, b'\xa9\nnext\n')
            return f.readline_d(), f.readline()
        self.assertEqual(micro_thread.run(main),
                         ('d\u00e9j\u00e0 ' * 10 + '\u00e9\n', 'next\n'))

    def test_close_while_waiting_fails_the_wait_with_ebadf(self):
        r, w = self.pipe()
        f = self.fopen(r, 'r', encoding='utf-8', closefd=True)
        self.fd_closed(r)

        def main():
            readers = [self.start_blocked(f.readline_d),
                       self.start_blocked(f.read_d)]
            f.close()
            return [self.join_raises(t, OSError).errno for t in readers]
        self.assertEqual(micro_thread.run(main), [errno.EBADF] * 2)

    def test_two_readers_take_turns(self):
        r, w = self.pipe()
        f = self.fopen(r, 'r', encoding='ascii')

        def main():
            readers = [self.start_blocked(f.readline_d),
                       self.start_blocked(f.readline_d)]
            self.feed(w, b'first\nsec', b'ond\n').join()
            return [t.join() for t in readers]
        self.assertEqual(micro_thread.run(main), ['first\n', 'second\n'])

    def test_write_d(self):
        r, w = self.pipe()
        f = self.fopen(w, 'w', encoding='utf-8', newline='\r\n')
        os.set_blocking(r, False)

        def main():
            self.assertEqual(f.write_d('h\u00e9\n'), 3)
            with self.assertRaises(BlockingIOError):
                os.read(r, 10)        # buffered
            f.flush()
            return os.read(r, 10)
        self.assertEqual(micro_thread.run(main), 'h\u00e9\r\n'.encode())

    def test_line_buffered_write_d_reaches_the_pipe(self):
        r, w = self.pipe()
        f = self.fopen(w, 'w', encoding='ascii', buffering=1)

        def main():
            self.assertEqual(f.write_d('one '), 4)
            self.assertEqual(f.write_d('line\n'), 5)
            return os.read(r, 100)
        self.assertEqual(micro_thread.run(main), b'one line\n')

    def test_write_d_larger_than_the_buffer_lets_the_reader_run(self):
        r, w = self.pipe()
        f = self.fopen(w, 'w', encoding='utf-8', buffering=100)
        text = ''.join(f'{i} \u00e9\u20ac\n' for i in range(30000))
        received = bytearray()

        def main():
            reader = self.drain(r, received)
            self.assertEqual(f.write_d(text), len(text))
            f.close()
            self.close_fd(w)
            reader.join()
        micro_thread.run(main)
        self.assertEqual(received.decode(), text)

    def test_socket_file_read_by_one_micro_thread_written_by_another(self):
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        fa = a.makefile('rw', encoding='utf-8', newline='')
        fb = b.makefile('rwb')
        self.addCleanup(close_quietly, fa)
        self.addCleanup(close_quietly, fb)
        got = []

        def reader():
            while line := fa.readline_d():
                got.append(line)

        def writer():
            for i in range(200):
                fa.write_d(f'ping {i}\r\n')
            fa.flush()

        def echo():
            while line := fb.readline_d():
                fb.write_d(line.upper())
                fb.flush()

        def main():
            threads = [micro_thread.start(f) for f in (reader, writer, echo)]
            threads[1].join()
            micro_thread.sleep(0.05)
            a.shutdown(socket.SHUT_WR)
            threads[2].join()
            b.shutdown(socket.SHUT_WR)
            threads[0].join()
        micro_thread.run(main)
        self.assertEqual(got, [f'PING {i}\r\n' for i in range(200)])

    def test_errors(self):
        r, w = self.pipe()
        fr = self.fopen(r, 'r', encoding='ascii')
        fw = self.fopen(w, 'w', encoding='ascii')
        with self.assertRaises(io.UnsupportedOperation):
            fr.write_d('x')
        with self.assertRaises(io.UnsupportedOperation):
            fw.read_d()
        with self.assertRaises(io.UnsupportedOperation):
            fw.readline_d()
        with self.assertRaises(TypeError):
            fw.write_d(b'bytes')
        with self.assertRaises(TypeError):
            fr.readline_d(None)
        with self.assertRaises(UnicodeEncodeError):
            fw.write_d('\u00e9')
        self.assertEqual(fr.readline_d(0), '')
        fr.close()
        with self.assertRaises(ValueError):
            fr.readline_d()

    def test_other_buffers_use_the_plain_methods(self):
        f = io.TextIOWrapper(io.BytesIO(b'one\ntwo\n'), encoding='ascii')
        self.assertEqual((f.readline_d(), f.read_d()), ('one\n', 'two\n'))
        self.assertEqual(f.write_d('x'), 1)


# ---------------------------------------------------------------------------
# Terminals

@unittest.skipUnless(hasattr(os, 'openpty'), 'needs os.openpty()')
class TerminalTests(IOTestCase):

    def test_lines_and_end_of_file(self):
        # A terminal's end of file (^D) is not sticky: the call must not
        # read again after it.
        termios = import_helper.import_module('termios')
        for mode in ('rb', 'r'):
            with self.subTest(mode=mode):
                master, slave = os.openpty()
                self.addCleanup(close_fd_quietly, master)
                self.addCleanup(close_fd_quietly, slave)
                attrs = termios.tcgetattr(slave)
                if (not attrs[3] & termios.ICANON
                        or attrs[6][termios.VEOF] != b'\x04'):
                    self.skipTest('the terminal is not in canonical mode')
                kwargs = {} if 'b' in mode else {'encoding': 'utf-8'}
                f = self.fopen(slave, mode, **kwargs)
                self.assertTrue(f.isatty())
                cast = (lambda b: b) if 'b' in mode else bytes.decode

                def main():
                    reader = self.start_blocked(f.readline_d)
                    writer = self.feed(master, 'h\u00e9llo\n'.encode(),
                                       b'partial\x04', b'\x04',
                                       b'after eof\n')
                    lines = [reader.join(), f.readline_d(), f.readline_d()]
                    writer.join()
                    return lines
                self.assertEqual(micro_thread.run(main),
                                 [cast('h\u00e9llo\n'.encode()),
                                  cast(b'partial'), cast(b'after eof\n')])


# ---------------------------------------------------------------------------
# Regular files: a worker thread reads and writes

class RegularFileTests(IOTestCase):

    OPENERS = [('rb', 0), ('rb', -1), ('rb', 64), ('r+b', -1), ('r+b', 64),
               ('r', -1), ('r', 64)]

    def test_results_match_the_plain_methods(self):
        path = self.temp_path(SAMPLE)
        for mode, buffering in self.OPENERS:
            for op, args in (('readline', ()), ('readline', (5,)),
                             ('read', (7,)), ('read', (100000,)),
                             ('read', ())):
                with self.subTest(mode=mode, buffering=buffering, op=op,
                                  args=args):
                    with open(path, mode, buffering=buffering) as f:
                        expected = self.collect(getattr(f, op), *args)
                    f = self.fopen(path, mode, buffering=buffering)
                    self.assertEqual(
                        micro_thread.run(self.collect, getattr(f, op + '_d'),
                                         *args),
                        expected)

    def test_calls_defer_while_the_worker_reads(self):
        data = os.urandom(4 << 20)
        path = self.temp_path(data)
        for mode, buffering in self.OPENERS:
            with self.subTest(mode=mode, buffering=buffering):
                f = self.fopen(path, mode, buffering=buffering,
                               **({'encoding': 'latin-1', 'newline': ''}
                                  if 'b' not in mode else {}))

                def main():
                    reader = self.start_deferred(f.read_d)
                    # The OS thread is not blocked: the root runs on.
                    while reader.state != 'finished':
                        micro_thread.sleep(0)
                    return reader.join()
                result = micro_thread.run(main)
                if 'b' not in mode:
                    result = result.encode('latin-1')
                self.assertEqual(result, data)

    def test_write_d(self):
        path = self.temp_path()
        chunks = [b'%d\n' % i * (i % 7) for i in range(500)] + [b'big' * 50000]

        def main():
            with open(path, 'wb', buffering=100) as f:
                for chunk in chunks:
                    self.assertEqual(self.start_deferred(f.write_d, chunk).join()
                                     if len(chunk) >= 100 else f.write_d(chunk),
                                     len(chunk))
            with open(path, 'ab', buffering=0) as f:
                self.assertEqual(self.start_deferred(f.write_d, b'end').join(), 3)
        micro_thread.run(main)
        with open(path, 'rb') as f:
            self.assertEqual(f.read(), b''.join(chunks) + b'end')

    def test_buffered_random_mixes_reads_writes_and_seeks(self):
        path = self.temp_path(SAMPLE)
        expected_path = self.temp_path(SAMPLE)

        def script(f, d=''):
            read, readline, write = (getattr(f, 'read' + d),
                                     getattr(f, 'readline' + d),
                                     getattr(f, 'write' + d))
            out = [read(10), readline()]
            f.seek(5)
            write(b'XYZ')
            out.append(read(10))
            write(b'Q' * 1000)
            out.append(readline())
            f.seek(-20, 2)
            out.append(read())
            write(b'appended\n')
            f.seek(0)
            out.append(read(30))
            f.seek(100)
            write(b'W' * 10)
            out += [f.tell(), readline(3)]
            return out
        with open(expected_path, 'r+b', buffering=64) as f:
            expected = script(f)
        with open(path, 'r+b', buffering=64) as f:
            self.assertEqual(micro_thread.run(script, f, '_d'), expected)
        with open(path, 'rb') as f, open(expected_path, 'rb') as g:
            self.assertEqual(f.read(), g.read())

    def test_text_file(self):
        path = self.temp_path()
        lines = [f'{i} \u00e9 {"-" * (i % 300)}\n' for i in range(3000)]

        def main():
            with open(path, 'w', encoding='utf-8') as f:
                for line in lines:
                    f.write_d(line)
            with open(path, encoding='utf-8') as f:
                result = [f.readline_d(), f.readline_d(3), f.readline_d()]
                pos = f.tell()
                result.append(f.read_d(5))
                f.seek(pos)
                result.append(f.readline_d())
                result += self.collect(f.readline_d)
                return result
        result = micro_thread.run(main)
        self.assertEqual(result[:5], [lines[0], lines[1][:3], lines[1][3:],
                                      lines[2][:5], lines[2]])
        self.assertEqual(result[5:], lines[3:] + [''])

    def test_kill_while_the_worker_reads_keeps_the_data(self):
        data = os.urandom(8 << 20)
        path = self.temp_path(data)
        for mode in ('rb', 'r+b'):
            with self.subTest(mode=mode):
                f = self.fopen(path, mode)

                def main():
                    self.assertEqual(f.read_d(10), data[:10])
                    reader = self.start_deferred(f.read_d, len(data))
                    reader.kill()
                    try:
                        # Woken before the kill: the call returns, and
                        # the kill waits for its next blocking call.
                        got = reader.join()
                    except micro_thread.MicroThreadExit:
                        # The job goes on; its data goes to the buffer.
                        got = b''
                    return got + f.read_d()
                self.assertEqual(micro_thread.run(main), data[10:])

    def test_plain_methods_after_a_kill_while_the_worker_reads(self):
        # The job of a killed call goes on; a plain method called before the
        # scheduler collects it waits for it, and gets its data from the
        # buffer (tell() too: the worker moves the fd's position).
        line = b'\0' * (1 << 20) + b'\n'
        path = self.temp_path(line + b'TAIL\n')
        for mode, buffering in (('rb', 8192), ('rb', -1), ('r+b', 8192)):
            for op in ('readline', 'read', 'tell'):
                with self.subTest(mode=mode, buffering=buffering, op=op):
                    f = self.fopen(path, mode, buffering=buffering)

                    def main():
                        reader = self.start_deferred(f.readline_d)
                        reader.kill()
                        micro_thread.sleep(0)
                        if op == 'readline':
                            out = [f.readline(), f.readline(), f.readline()]
                        elif op == 'read':
                            out = [f.read(5), f.read()]
                        else:
                            out = []
                        out.append(f.tell())
                        try:
                            # Woken before the kill: the call returns.
                            got = [reader.join()]
                        except micro_thread.MicroThreadExit:
                            got = []
                        return got, out
                    got, out = micro_thread.run(main)
                    start = 0
                    if got:
                        self.assertEqual(got, [line])
                        start = len(line)
                    rest = (line + b'TAIL\n')[start:]
                    if op == 'readline':
                        self.assertEqual(b''.join(out[:3]), rest)
                        self.assertEqual(out[0], rest[:rest.index(b'\n') + 1])
                        self.assertEqual(out[3], len(line) + 5)
                    elif op == 'read':
                        self.assertEqual(out[:2], [rest[:5], rest[5:]])
                        self.assertEqual(out[2], len(line) + 5)
                    else:
                        self.assertEqual(out, [start])

    def test_close_while_the_worker_reads(self):
        data = os.urandom(8 << 20)
        path = self.temp_path(data)
        f = self.fopen(path, 'rb')

        def main():
            reader = self.start_deferred(f.read_d)
            f.close()      # waits for the job
            try:
                return reader.join()
            except OSError as exc:
                return exc.errno
        self.assertIn(micro_thread.run(main), (errno.EBADF, data))

    def test_fd_closed_and_reused_while_the_worker_reads(self):
        # FileIO.read_d() of a regular file reads on a worker through a
        # duplicate of the fd: closing the file and reusing its number
        # meanwhile cannot make the worker read (and move) another file.
        path = self.temp_path(os.urandom(32 << 20))
        other = self.temp_path(os.urandom(1 << 20))
        f = self.fopen(path, 'rb', buffering=0)

        def main():
            reader = self.start_deferred(f.read_d)
            number = f.fileno()
            f.close()
            fd2 = os.open(other, os.O_RDONLY)
            self.addCleanup(os.close, fd2)
            try:
                reader.join()
            except OSError:
                pass
            # Give the worker time to finish its reads (it cannot be waited
            # for once its call has given up).
            for _ in range(30):
                micro_thread.sleep(0.01)
            return number, fd2, os.lseek(fd2, 0, os.SEEK_CUR)
        number, fd2, offset = micro_thread.run(main)
        self.assertEqual(fd2, number)       # the number was reused
        self.assertEqual(offset, 0)

# ---------------------------------------------------------------------------
# Outside micro-threads, and pinned

class RootAndPinnedTests(IOTestCase):

    def test_in_the_root_the_call_drives_the_scheduler(self):
        r, w = self.pipe()
        for mode, kwargs in (('rb', {'buffering': 0}), ('rb', {}),
                             ('r', {'encoding': 'ascii'})):
            with self.subTest(mode=mode, kwargs=kwargs):
                f = self.fopen(r, mode, **kwargs)
                cast = (lambda b: b) if 'b' in mode else bytes.decode
                writer = self.feed(w, b'to ', b'the root\n')
                self.assertEqual(f.readline_d(), cast(b'to the root\n'))
                writer.join()
                writer = self.feed(w, b'ab', b'c')
                if kwargs.get('buffering') == 0:
                    # One read: what is there.
                    self.assertEqual(f.read_d(3), b'ab')
                    self.assertEqual(f.read_d(3), b'c')
                else:
                    self.assertEqual(f.read_d(3), cast(b'abc'))
                writer.join()

    def test_in_the_root_write_d(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=1000)
        data = os.urandom(300000)
        received = bytearray()
        reader = self.drain(r, received)
        self.assertEqual(f.write_d(data), len(data))
        f.close()
        self.close_fd(w)
        reader.join()
        self.assertEqual(received, data)

    def test_in_the_root_ready_data_needs_no_scheduler(self):
        r, w = self.pipe()
        os.write(w, b'ready\nmore')
        f = self.fopen(r, 'rb')
        self.assertEqual((f.readline_d(), f.read_d(4)), (b'ready\n', b'more'))

    def test_pinned_calls_complete(self):
        # sorted() calls the key function from C: the micro-thread cannot
        # suspend there, so it is pinned -- the call completes anyway.
        r, w = self.pipe()
        cases = [('rb', {'buffering': 0}, 'read_d', (2,)),
                 ('rb', {}, 'readline_d', ()),
                 ('rb', {}, 'read_d', (2,)),
                 ('r', {'encoding': 'ascii'}, 'readline_d', ())]
        for mode, kwargs, method, args in cases:
            with self.subTest(mode=mode, method=method):
                f = self.fopen(r, mode, **kwargs)
                call = getattr(f, method)

                def main():
                    pins = _micro_thread.pin_count()
                    writer = self.feed(w, b'b\n', b'a\n')
                    keys = sorted([1, 2], key=lambda _: call(*args))
                    writer.join()
                    self.assertGreater(_micro_thread.pin_count(), pins)
                    return keys
                self.assertEqual(micro_thread.run(main), [2, 1])

    def test_pinned_write_d_completes(self):
        r, w = self.pipe()
        f = self.fopen(w, 'wb', buffering=100)
        data = os.urandom(200000)
        received = bytearray()

        def main():
            reader = self.drain(r, received)
            counts = list(map(f.write_d, [data]))   # map() pins it
            f.close()
            self.close_fd(w)
            reader.join()
            return counts
        self.assertEqual(micro_thread.run(main), [len(data)])
        self.assertEqual(received, data)


class WrongDirectionTests(IOTestCase):

    def test_fd_open_the_other_way_raises_ebadf(self):
        # The plain methods fail at once (EBADF); the deferring ones must
        # not wait for a readiness that never comes.
        r, w = self.pipe()
        cases = [
            lambda: io.FileIO(w, 'r', closefd=False).read_d(1),
            lambda: open(w, 'rb', closefd=False).read_d(1),
            lambda: open(w, 'r', closefd=False).readline_d(),
            lambda: io.FileIO(r, 'w', closefd=False).write_d(b'x'),
        ]
        for call in cases:
            for runner in (lambda f: f(), micro_thread.run):
                with self.assertRaises(OSError) as cm:
                    runner(call)
                self.assertEqual(cm.exception.errno, errno.EBADF)


if __name__ == '__main__':
    unittest.main()
