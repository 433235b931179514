"""Tests for the deferring methods of socket objects: recv_d(),
recv_into_d(), recvfrom_d(), send_d(), sendall_d(), sendto_d(), accept_d()
and connect_d().

In a micro-thread they suspend only the micro-thread while the socket is not
ready; elsewhere (the OS thread's root, or a micro-thread pinned by a C
frame) they block like their plain counterparts while the OS thread's
micro-threads run.  Either way they return or raise what the plain method
would.

How a test tells that a call deferred: the micro-thread is 'blocked' after
the root's micro_thread.sleep(0), and the pin count did not move.  Tests
that could hang if a call blocked the OS thread instead arm a watchdog that
shuts the sockets down from another OS thread (and then fails the test).
"""

import array
import errno
import os
import signal
import socket
import sys
import textwrap
import threading
import time
import unittest
from test import support
from test.support import script_helper, socket_helper

from test.support import micro_thread_helper
from test.support.micro_thread_helper import _micro_thread, micro_thread

if not hasattr(socket.socket, 'recv_d'):
    raise unittest.SkipTest('socket objects have no deferring methods here')

HOST = socket_helper.HOST
HAVE_UNIX = hasattr(socket, 'AF_UNIX')


class SocketTestCase(micro_thread_helper.MicroThreadTestCase):
    """Base class: leaves no micro-thread and no socket behind."""

    def add(self, sock):
        self.addCleanup(sock.close)
        return sock

    def pair(self, *args):
        a, b = socket.socketpair(*args)
        return self.add(a), self.add(b)

    def tcp_pair(self):
        """A connected pair of TCP sockets (blocking mode)."""
        listener = self.listener()
        client = self.add(socket.create_connection(listener.getsockname()))
        server, _ = listener.accept()
        return client, self.add(server)

    def listener(self, backlog=16):
        sock = self.add(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.bind((HOST, 0))
        sock.listen(backlog)
        return sock

    def udp(self):
        sock = self.add(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.bind((HOST, 0))
        return sock

    def refused_address(self):
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            return probe.getsockname()   # nothing listens there once closed

    def start_blocked(self, fn, *args):
        """Start fn and run it until it waits; check that it deferred."""
        t = micro_thread.start(fn, *args)
        micro_thread.sleep(0)
        self.assertEqual(t.state, 'blocked')
        return t

    def fill(self, sock):
        """Send on sock until its buffers are full; return how much."""
        blocking = sock.getblocking()
        sock.setblocking(False)
        total = 0
        try:
            while True:
                total += sock.send(b'f' * 65536)
        except BlockingIOError:
            pass
        finally:
            sock.setblocking(blocking)
        return total

    def watchdog(self, *socks, timeout=support.SHORT_TIMEOUT):
        """Unblock the OS thread if the test blocks it: shut socks down
        from another OS thread, and fail."""
        done = threading.Event()
        fired = []

        def watch():
            if not done.wait(timeout):
                fired.append(True)
                for s in socks:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        watcher = threading.Thread(target=watch)
        watcher.start()

        def stop():
            done.set()
            watcher.join()
            self.assertEqual(fired, [], "the OS thread was blocked")
        self.addCleanup(stop)


class DeferringTests(SocketTestCase):
    """Each method defers in a micro-thread: only the micro-thread waits."""

    def test_ping_pong_in_one_os_thread(self):
        a, b = self.pair()
        self.assertTrue(a.getblocking() and b.getblocking())
        self.watchdog(a, b)
        rounds = 1000

        def ping():
            for i in range(rounds):
                a.send_d(b'%d' % i)
                self.assertEqual(a.recv_d(100), b'ok %d' % i)

        def pong():
            for i in range(rounds):
                self.assertEqual(b.recv_d(100), b'%d' % i)
                b.sendall_d(b'ok %d' % i)

        def main():
            before = _micro_thread.pin_count()
            x = micro_thread.start(ping)
            y = micro_thread.start(pong)
            x.join()
            y.join()
            return _micro_thread.pin_count() - before
        self.assertEqual(micro_thread.run(main), 0)

    def test_each_method_defers(self):
        a, b = self.pair()
        u, v = self.udp(), self.udp()
        listener = self.listener()
        full, drain = self.pair()
        self.fill(full)
        buf = bytearray(10)
        calls = {
            'recv_d': lambda: b.recv_d(10),
            'recv_into_d': lambda: b.recv_into_d(buf),
            'recvfrom_d': lambda: v.recvfrom_d(10),
            'send_d': lambda: full.send_d(b'x'),
            'sendall_d': lambda: full.sendall_d(b'x'),
            'accept_d': lambda: listener.accept_d(),
        }
        self.watchdog(a, b, u, v, listener, full, drain)

        def main():
            for name, call in calls.items():
                with self.subTest(name):
                    before = _micro_thread.pin_count()
                    t = self.start_blocked(call)
                    t.kill()
                    with self.assertRaises(micro_thread.MicroThreadExit):
                        t.join()
                    self.assertEqual(_micro_thread.pin_count(), before)
        micro_thread.run(main)

    def test_many_pairs_at_once(self):
        pairs = [self.pair() for _ in range(200)]
        self.watchdog(*[s for p in pairs for s in p])

        def echo(sock):
            while data := sock.recv_d(100):
                sock.sendall_d(data)

        def client(sock, i):
            sock.sendall_d(b'%d' % i)
            got = sock.recv_d(100)
            sock.shutdown(socket.SHUT_WR)
            return got

        def main():
            servers = [micro_thread.start(echo, b) for a, b in pairs]
            clients = [micro_thread.start(client, a, i)
                       for i, (a, b) in enumerate(pairs)]
            got = [c.join() for c in clients]
            for s in servers:
                s.join()
            return got
        self.assertEqual(micro_thread.run(main),
                         [b'%d' % i for i in range(len(pairs))])

    def test_recv_d_data_and_eof(self):
        a, b = self.pair()
        got = []

        def reader():
            while data := b.recv_d(3):
                got.append(data)
            got.append(data)

        def main():
            t = self.start_blocked(reader)
            for chunk in (b'abc', b'de', b'f'):
                a.send_d(chunk)
                micro_thread.sleep(0)
            a.close()
            t.join()
        micro_thread.run(main)
        self.assertEqual(got, [b'abc', b'de', b'f', b''])

    def test_recv_d_flags_and_zero(self):
        a, b = self.pair()
        a.sendall(b'peeked')
        self.assertEqual(b.recv_d(100, socket.MSG_PEEK), b'peeked')
        self.assertEqual(b.recv_d(0), b'')
        self.assertEqual(b.recv_d(3), b'pee')
        self.assertEqual(b.recv_d(100), b'ked')

    def test_recv_into_d(self):
        a, b = self.pair()
        buf = bytearray(10)

        def main():
            t = self.start_blocked(b.recv_into_d, buf, 4)
            a.sendall(b'abcdef')
            self.assertEqual(t.join(), 4)
            self.assertEqual(buf[:4], b'abcd')
            # keywords, like recv_into()
            peek = bytearray(5)
            self.assertEqual(b.recv_into_d(buffer=peek, nbytes=1,
                                           flags=socket.MSG_PEEK), 1)
            self.assertEqual(peek, b'e\0\0\0\0')
            self.assertEqual(b.recv_into_d(memoryview(buf)[4:]), 2)
        micro_thread.run(main)
        self.assertEqual(buf[:6], b'abcdef')
        arr = array.array('i', [0, 0])
        a.sendall(b'\1\0\0\0')
        self.assertEqual(b.recv_into_d(arr), 4)
        self.assertEqual(arr[0], 1)
        self.assertEqual(b.recv_into_d(bytearray()), 0)

    def test_recvfrom_d_and_sendto_d(self):
        u, v = self.udp(), self.udp()

        def main():
            t = self.start_blocked(v.recvfrom_d, 100)
            self.assertEqual(u.sendto_d(b'datagram', v.getsockname()), 8)
            self.assertEqual(t.join(), (b'datagram', u.getsockname()))
            self.assertEqual(u.sendto_d(b'flags', 0, v.getsockname()), 5)
            return v.recvfrom_d(2)   # the rest of the datagram is dropped
        self.assertEqual(micro_thread.run(main), (b'fl', u.getsockname()))

    def test_recvfrom_d_stream_socket(self):
        a, b = self.pair()
        a.sendall(b'xyzw')
        data, address = b.recvfrom(2)
        self.assertEqual(b.recvfrom_d(10), (b'zw', address))

    def test_send_d_waits_while_the_buffer_is_full(self):
        a, b = self.pair()
        filled = self.fill(a)
        self.watchdog(a, b)

        def drain():
            total = 0
            while total < filled:
                total += len(b.recv_d(65536))
            return total

        def main():
            t = self.start_blocked(a.send_d, b'last')
            self.assertEqual(micro_thread.start(drain).join(), filled)
            self.assertEqual(t.join(), 4)
            return b.recv_d(10)
        self.assertEqual(micro_thread.run(main), b'last')

    def test_sendall_d_sends_everything(self):
        a, b = self.tcp_pair()
        data = os.urandom(4 << 20)
        self.watchdog(a, b)

        def reader():
            chunks = []
            while chunk := b.recv_d(1 << 16):
                chunks.append(chunk)
            return b''.join(chunks)

        def main():
            t = micro_thread.start(reader)
            self.assertIsNone(a.sendall_d(data))
            self.assertIsNone(a.sendall_d(b''))
            a.shutdown(socket.SHUT_WR)
            return t.join()
        self.assertEqual(micro_thread.run(main), data)

    def test_accept_d_and_connect_d(self):
        listener = self.listener()
        self.assertTrue(listener.getblocking())
        self.watchdog(listener)

        def server():
            conn, addr = listener.accept_d()
            return conn, addr

        def main():
            t = self.start_blocked(server)
            client = self.add(socket.socket())
            self.assertIsNone(client.connect_d(listener.getsockname()))
            # The mode of a blocking socket is restored.
            self.assertTrue(client.getblocking())
            self.assertTrue(os.get_blocking(client.fileno()))
            conn, addr = t.join()
            self.add(conn)
            self.assertIs(type(conn), socket.socket)
            self.assertEqual(addr, client.getsockname())
            self.assertEqual(conn.getpeername(), client.getsockname())
            self.assertEqual(conn.family, socket.AF_INET)
            self.assertIsNone(conn.gettimeout())
            self.assertFalse(conn.get_inheritable())
        micro_thread.run(main)

    def test_accepted_sockets_defer_too(self):
        listener = self.listener()
        self.watchdog(listener)

        def main():
            accepting = micro_thread.start(listener.accept_d)
            client = self.add(socket.socket())
            client.connect_d(listener.getsockname())
            conn, _ = accepting.join()
            self.add(conn)
            t = self.start_blocked(conn.recv_d, 100)
            client.sendall_d(b'hello')
            self.assertEqual(t.join(), b'hello')
            t = self.start_blocked(client.recv_d, 100)
            conn.sendall_d(b'back')
            self.assertEqual(t.join(), b'back')
        micro_thread.run(main)

    def test_accept_d_inherits_like_accept(self):
        listener = self.listener()
        listener.settimeout(support.SHORT_TIMEOUT)
        for accept in (listener.accept, listener.accept_d):
            with self.subTest(accept.__name__):
                with socket.create_connection(listener.getsockname()):
                    conn, _ = accept()
                    with conn:
                        # No default timeout: the new socket is blocking.
                        self.assertIsNone(conn.gettimeout())
                        self.assertTrue(os.get_blocking(conn.fileno()))
        socket.setdefaulttimeout(2.5)
        self.addCleanup(socket.setdefaulttimeout, None)
        with socket.create_connection(listener.getsockname()):
            conn, _ = listener.accept_d()
            with conn:
                self.assertEqual(conn.gettimeout(), 2.5)

    def test_connect_d_refused(self):
        address = self.refused_address()
        for timeout in (None, support.SHORT_TIMEOUT):
            with self.subTest(timeout=timeout):
                client = self.add(socket.socket())
                client.settimeout(timeout)
                with self.assertRaises(ConnectionRefusedError):
                    micro_thread.run(client.connect_d, address)
                client = self.add(socket.socket())
                client.settimeout(timeout)
                with self.assertRaises(ConnectionRefusedError):
                    client.connect_d(address)
                self.assertEqual(client.gettimeout(), timeout)

    def test_connect_d_then_connect_like_connect(self):
        # A second connect() after connect_d() ends as after connect(), for
        # a blocking socket and one with a timeout.
        listener = self.listener()
        address = listener.getsockname()
        for timeout in (None, support.SHORT_TIMEOUT):
            with self.subTest(timeout=timeout):
                outcomes = []
                for first in ('connect', 'connect_d'):
                    s = self.add(socket.socket())
                    s.settimeout(timeout)
                    if first == 'connect':
                        s.connect(address)
                    else:
                        micro_thread.run(s.connect_d, address)
                    self.add(listener.accept()[0])
                    try:
                        s.connect(address)
                        outcomes.append(None)
                    except OSError as exc:
                        outcomes.append(exc.errno)
                self.assertEqual(outcomes[0], outcomes[1])

    def test_connect_d_with_timeout_connects(self):
        listener = self.listener()
        client = self.add(socket.socket())
        client.settimeout(support.SHORT_TIMEOUT)

        def main():
            self.assertIsNone(client.connect_d(listener.getsockname()))
            return client.gettimeout()
        self.assertEqual(micro_thread.run(main), support.SHORT_TIMEOUT)
        conn, _ = listener.accept()
        self.add(conn)
        client.sendall_d(b'x')
        self.assertEqual(conn.recv_d(1), b'x')

    def test_connect_d_errors_like_connect(self):
        s = self.add(socket.socket())
        for bad in ('not an address', (HOST,), (HOST, -1)):
            with self.subTest(bad=bad):
                with self.assertRaises(Exception) as expected:
                    s.connect(bad)
                with self.assertRaises(type(expected.exception)):
                    s.connect_d(bad)
        with self.assertRaises(TypeError):
            s.connect_d()
        listener = self.listener()
        s.connect_d(listener.getsockname())
        with self.assertRaises(OSError) as cm:
            s.connect_d(listener.getsockname())
        self.assertEqual(cm.exception.errno, errno.EISCONN)

    @unittest.skipUnless(HAVE_UNIX, 'needs AF_UNIX')
    def test_connect_d_unix(self):
        path = socket_helper.create_unix_domain_name()
        self.addCleanup(os_helper_unlink, path)
        client = self.add(socket.socket(socket.AF_UNIX))
        with self.assertRaises(FileNotFoundError):
            client.connect_d(path)
        listener = self.add(socket.socket(socket.AF_UNIX))
        listener.bind(path)
        listener.listen()

        def main():
            t = micro_thread.start(listener.accept_d)
            client.connect_d(path)
            conn, _ = t.join()
            self.add(conn)
            client.sendall_d(b'unix')
            return conn.recv_d(10)
        self.assertEqual(micro_thread.run(main), b'unix')

    def full_unix_backlog(self):
        """An AF_UNIX listener whose backlog is full: (path, listener, the
        connected sockets waiting to be accepted)."""
        path = socket_helper.create_unix_domain_name()
        self.addCleanup(os_helper_unlink, path)
        listener = self.add(socket.socket(socket.AF_UNIX))
        listener.bind(path)
        listener.listen(0)
        waiting = []
        for _ in range(10):
            s = self.add(socket.socket(socket.AF_UNIX))
            s.setblocking(False)
            try:
                s.connect(path)
            except BlockingIOError:
                return path, listener, waiting
            waiting.append(s)
        self.skipTest('the backlog never filled')

    @unittest.skipUnless(sys.platform.startswith('linux'), 'Linux backlog')
    def test_connect_d_unix_full_backlog_waits(self):
        # A blocking connect() waits while the listener's backlog is full;
        # so does connect_d(), without blocking the OS thread, and without
        # spinning: nothing can be polled for room in a backlog, so it
        # retries after a growing delay.
        path, listener, waiting = self.full_unix_backlog()
        client = self.add(socket.socket(socket.AF_UNIX))
        self.watchdog(listener, client)

        def accepter():
            time.sleep_d(0.3)
            for _ in range(len(waiting) + 1):
                self.add(listener.accept_d()[0])

        def main():
            t = micro_thread.start(accepter)
            cpu = time.process_time()
            self.assertIsNone(client.connect_d(path))
            cpu = time.process_time() - cpu
            t.join()
            self.assertTrue(client.getblocking())
            return cpu
        # A spinning retry would use the whole 0.3 s.
        self.assertLess(micro_thread.run(main), 0.15)

    @unittest.skipUnless(sys.platform.startswith('linux'), 'Linux backlog')
    def test_connect_d_unix_full_backlog_audits_once(self):
        # The retries are one connect() for the audit hooks (in a child:
        # an audit hook cannot be removed).
        code = textwrap.dedent("""
            import os, socket, sys, tempfile, time, micro_thread
            events = []
            sys.addaudithook(lambda e, a: e == 'socket.connect' and events.append(a))
            path = os.path.join(tempfile.mkdtemp(), 's')
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(path)
            listener.listen(0)
            waiting = []
            for _ in range(10):
                s = socket.socket(socket.AF_UNIX)
                s.setblocking(False)
                try:
                    s.connect(path)
                except BlockingIOError:
                    break
                waiting.append(s)
            del events[:]
            client = socket.socket(socket.AF_UNIX)
            def accepter():
                time.sleep_d(0.1)
                for _ in range(len(waiting) + 1):
                    listener.accept_d()
            def main():
                t = micro_thread.start(accepter)
                client.connect_d(path)
                t.join()
            micro_thread.run(main)
            os.unlink(path)
            os.rmdir(os.path.dirname(path))
            print(len(events))
        """)
        res = script_helper.assert_python_ok('-c', code)
        self.assertEqual(res.out.strip(), b'1')

    @unittest.skipUnless(sys.platform.startswith('linux'), 'Linux backlog')
    def test_connect_d_unix_full_backlog_nonblocking(self):
        # A socket with a timeout or non-blocking: BlockingIOError, as
        # connect() raises.
        path, listener, waiting = self.full_unix_backlog()
        self.watchdog(listener)     # a wrong retry would be refused then
        for timeout in (0, 1.0):
            with self.subTest(timeout=timeout):
                client = self.add(socket.socket(socket.AF_UNIX))
                client.settimeout(timeout)
                with self.assertRaises(BlockingIOError):
                    micro_thread.run(client.connect_d, path)


class ClosedElsewhereTests(SocketTestCase):
    """A socket closed by another OS thread while a micro-thread waits on it
    (the notifier of the waiting thread is not told)."""

    def test_timed_wait_ends_with_ebadf(self):
        a, b = self.pair()
        a.settimeout(0.5)
        number = a.fileno()

        def closer():
            time.sleep(0.1)
            a.close()

        def main():
            thread = threading.Thread(target=closer)
            thread.start()
            try:
                with self.assertRaises(OSError) as cm:
                    a.recv_d(10)
            finally:
                thread.join()
            return cm.exception
        exc = micro_thread.run(main)
        # recv() says EBADF too; not a TimeoutError.
        self.assertNotIsInstance(exc, TimeoutError)
        self.assertEqual(exc.errno, errno.EBADF)

        # A new socket with the same fd number can be waited on: epoll
        # dropped the closed one, so the scheduler must arm it anew.
        c, d = self.pair()
        if d.fileno() == number:
            c, d = d, c
        self.assertEqual(c.fileno(), number)
        self.watchdog(c, d)

        def again():
            reader = micro_thread.start(c.recv_d, 10)
            micro_thread.sleep(0)
            d.send(b'x')
            return reader.join()
        self.assertEqual(micro_thread.run(again), b'x')


class OutsideMicroThreadTests(SocketTestCase):
    """Outside micro-threads the methods block like the plain ones."""

    def test_ready_calls(self):
        a, b = self.pair()
        self.assertEqual(a.send_d(b'abc'), 3)
        self.assertIsNone(a.sendall_d(b'def'))
        self.assertEqual(b.recv_d(3), b'abc')
        buf = bytearray(3)
        self.assertEqual(b.recv_into_d(buf), 3)
        self.assertEqual(buf, b'def')

    def test_recv_d_waits_for_another_os_thread(self):
        a, b = self.pair()
        timer = threading.Timer(0.05, a.sendall, (b'late',))
        timer.start()
        try:
            t0 = time.monotonic()
            self.assertEqual(b.recv_d(100), b'late')
            self.assertGreaterEqual(time.monotonic() - t0, 0.04)
        finally:
            timer.join()

    def test_root_runs_micro_threads_while_it_waits(self):
        a, b = self.pair()
        listener = self.listener()

        def writer():
            time.sleep_d(0.01)
            a.sendall_d(b'from a micro-thread')

        def connector():
            s = socket.socket()
            s.connect_d(listener.getsockname())
            return s

        t = micro_thread.start(writer)
        self.assertEqual(b.recv_d(100), b'from a micro-thread')
        t.join()
        t = micro_thread.start(connector)
        conn, addr = listener.accept_d()
        with conn, t.join() as client:
            self.assertEqual(addr, client.getsockname())

    def test_sendall_d_large_to_another_os_thread(self):
        a, b = self.pair()
        data = os.urandom(2 << 20)
        received = []

        def reader():
            while chunk := b.recv(65536):
                received.append(chunk)
        th = threading.Thread(target=reader)
        th.start()
        try:
            a.sendall_d(data)
            a.shutdown(socket.SHUT_WR)
        finally:
            th.join()
        self.assertEqual(b''.join(received), data)

    def test_connect_d_accept_d_across_os_threads(self):
        listener = self.listener()
        result = []
        th = threading.Thread(
            target=lambda: result.append(listener.accept_d()))
        th.start()
        try:
            client = self.add(socket.socket())
            client.connect_d(listener.getsockname())
        finally:
            th.join()
        conn, addr = result[0]
        self.add(conn)
        self.assertEqual(addr, client.getsockname())

    def test_pinned_call_completes(self):
        a, b = self.pair()
        b.sendall(b'1')   # the rest arrives while the first key is pinned

        def key(x):
            return (a.recv_d(1), x)

        def writer():
            for c in b'23':
                time.sleep_d(0.005)
                b.send_d(bytes([c]))

        def main():
            before = _micro_thread.pin_count()
            w = micro_thread.start(writer)
            result = sorted([3, 2, 1], key=key)
            w.join()
            return result, _micro_thread.pin_count() - before
        result, pins = micro_thread.run(main)
        self.assertEqual(result, [3, 2, 1])
        self.assertGreaterEqual(pins, 1)


class TimeoutTests(SocketTestCase):

    def test_socket_timeout(self):
        a, b = self.pair()
        b.settimeout(0.05)
        ticks = []

        def ticker():
            while True:
                ticks.append(1)
                time.sleep_d(0.005)

        def main():
            tick = micro_thread.start(ticker)
            t0 = time.monotonic()
            try:
                with self.assertRaises(socket.timeout) as cm:
                    b.recv_d(100)
                return str(cm.exception), time.monotonic() - t0
            finally:
                tick.kill()
        message, elapsed = micro_thread.run(main)
        self.assertEqual(message, 'timed out')
        self.assertGreaterEqual(elapsed, 0.045)
        self.assertGreater(len(ticks), 2)
        self.assertEqual(b.gettimeout(), 0.05)
        # The socket is usable afterwards.
        a.sendall(b'after')
        self.assertEqual(micro_thread.run(b.recv_d, 100), b'after')

    def test_socket_timeout_outside_micro_threads(self):
        a, b = self.pair()
        listener = self.listener()
        full, _ = self.pair()
        self.fill(full)
        for sock in (b, listener, full):
            sock.settimeout(0.02)
        calls = [
            lambda: b.recv_d(1),
            lambda: b.recv_into_d(bytearray(1)),
            lambda: b.recvfrom_d(1),
            lambda: full.send_d(b'x'),
            lambda: full.sendall_d(b'x'),
            lambda: listener.accept_d(),
        ]
        for call in calls:
            with self.assertRaisesRegex(TimeoutError, '^timed out$'):
                call()

    def test_socket_timeout_does_not_fire_when_data_comes(self):
        a, b = self.pair()
        b.settimeout(support.SHORT_TIMEOUT)

        def writer():
            time.sleep_d(0.01)
            a.sendall_d(b'in time')
        t = micro_thread.start(writer)
        self.assertEqual(b.recv_d(100), b'in time')
        t.join()

    def test_sendall_d_timeout_is_for_all_of_the_data(self):
        a, b = self.pair()
        a.settimeout(0.2)
        stop = []

        def trickle():
            # Reads a little every 20 ms: each wait of sendall_d() is
            # short, but all of it takes longer than the timeout.
            while not stop:
                time.sleep_d(0.02)
                b.recv_d(1 << 16)

        def main():
            t = micro_thread.start(trickle)
            t0 = time.monotonic()
            try:
                with self.assertRaisesRegex(TimeoutError, 'timed out'):
                    a.sendall_d(b'x' * (64 << 20))
                return time.monotonic() - t0
            finally:
                stop.append(1)
                t.join()
        elapsed = micro_thread.run(main)
        self.assertGreaterEqual(elapsed, 0.19)
        self.assertLess(elapsed, support.SHORT_TIMEOUT)

    def test_micro_thread_timeout_scope(self):
        a, b = self.pair()
        got = []

        def reader():
            got.append(b.recv_d(100))

        def main():
            with self.assertRaises(TimeoutError) as cm:
                with micro_thread.timeout(0.01):
                    b.recv_d(100)
            self.assertNotEqual(str(cm.exception), 'timed out')
            # No registration is left behind: another micro-thread waits
            # on the socket and gets the data.
            t = self.start_blocked(reader)
            a.sendall_d(b'after the scope')
            t.join()
        micro_thread.run(main)
        self.assertEqual(got, [b'after the scope'])

    def test_timeout_scope_shorter_than_socket_timeout(self):
        a, b = self.pair()
        b.settimeout(support.SHORT_TIMEOUT)

        def main():
            t0 = time.monotonic()
            with self.assertRaises(TimeoutError):
                with micro_thread.timeout(0.01):
                    b.recv_d(1)
            return time.monotonic() - t0
        self.assertLess(micro_thread.run(main), support.SHORT_TIMEOUT / 2)

    def test_connect_d_timeout(self):
        # A listener whose accept queue is full drops SYNs: the connection
        # stays in progress until the socket timeout passes.
        listener = self.listener(backlog=0)
        queued = []
        try:
            for _ in range(50):
                s = socket.socket()
                queued.append(s)
                s.settimeout(0.05)
                s.connect(listener.getsockname())
        except (TimeoutError, BlockingIOError, ConnectionRefusedError):
            pass
        else:
            self.skipTest('the backlog of the listener never filled')
        finally:
            for s in queued:
                self.addCleanup(s.close)
        client = self.add(socket.socket())
        client.settimeout(0.05)
        with self.assertRaisesRegex(TimeoutError, '^timed out$'):
            micro_thread.run(client.connect_d, listener.getsockname())


class NonBlockingTests(SocketTestCase):
    """A socket with timeout 0 raises BlockingIOError, never waits."""

    def test_raises_like_the_plain_methods(self):
        a, b = self.pair()
        u = self.udp()
        listener = self.listener()
        full, _ = self.pair()
        self.fill(full)
        for sock in (a, b, u, listener, full):
            sock.setblocking(False)
        pairs = [
            (b.recv, b.recv_d, (10,)),
            (b.recv_into, b.recv_into_d, (bytearray(10),)),
            (u.recvfrom, u.recvfrom_d, (10,)),
            (full.send, full.send_d, (b'x',)),
            (full.sendall, full.sendall_d, (b'x',)),
            (listener._accept, listener.accept_d, ()),
        ]

        def main():
            for plain, deferring, args in pairs:
                with self.subTest(deferring.__name__):
                    with self.assertRaises(BlockingIOError) as expected:
                        plain(*args)
                    with self.assertRaises(BlockingIOError) as cm:
                        deferring(*args)
                    self.assertEqual(cm.exception.errno,
                                     expected.exception.errno)
        micro_thread.run(main)
        main()   # and outside micro-threads

    def test_connect_d_in_progress(self):
        listener = self.listener()
        for connect in ('connect', 'connect_d'):
            with self.subTest(connect):
                s = self.add(socket.socket())
                s.setblocking(False)
                try:
                    getattr(s, connect)(listener.getsockname())
                except BlockingIOError as exc:
                    self.assertEqual(exc.errno, errno.EINPROGRESS)

    def test_ready_data(self):
        a, b = self.pair()
        b.setblocking(False)
        a.sendall(b'ready')
        self.assertEqual(b.recv_d(100), b'ready')


class EndOfWaitTests(SocketTestCase):
    """kill(), close() and a peer's reset end a wait."""

    def test_kill_while_waiting(self):
        a, b = self.pair()
        buf = bytearray(10)
        refs = sys.getrefcount(b)

        def main():
            t = self.start_blocked(b.recv_into_d, buf)
            t.kill()
            with self.assertRaises(micro_thread.MicroThreadExit):
                t.join()
            # The buffer was released: it can be resized.
            buf.extend(b'more')
            del buf[10:]
            # The data is not lost: the next reader gets it.
            u = self.start_blocked(b.recv_d, 10)
            a.sendall_d(b'kept')
            return u.join()
        self.assertEqual(micro_thread.run(main), b'kept')
        support.gc_collect()
        self.assertEqual(sys.getrefcount(b), refs)

    def test_kill_while_sendall_d_waits(self):
        a, b = self.pair()
        self.fill(a)
        data = bytearray(b'd' * 100000)

        def main():
            t = self.start_blocked(a.sendall_d, data)
            t.kill()
            with self.assertRaises(micro_thread.MicroThreadExit):
                t.join()
            data.append(0)     # released
        micro_thread.run(main)

    def test_close_while_waiting(self):
        full, _ = self.pair()
        self.fill(full)
        cases = [
            ('recv_d', lambda s: s.recv_d(10), lambda: self.pair()[1]),
            ('accept_d', lambda s: s.accept_d(), lambda: self.listener()),
            ('sendall_d', lambda s: s.sendall_d(b'x' * 1000),
             lambda: self.filled()),
        ]
        for name, call, make in cases:
            with self.subTest(name):
                sock = make()

                def main():
                    t = self.start_blocked(call, sock)
                    sock.close()
                    with self.assertRaises(OSError) as cm:
                        t.join()
                    self.assertEqual(cm.exception.errno, errno.EBADF)
                micro_thread.run(main)

    def filled(self):
        a, b = self.pair()
        self.fill(a)
        return a

    def test_close_from_another_micro_thread_wakes_all_waiters(self):
        a, b = self.pair()

        def main():
            ts = [self.start_blocked(b.recv_d, 10) for _ in range(3)]
            b.close()
            for t in ts:
                with self.assertRaises(OSError) as cm:
                    t.join()
                self.assertEqual(cm.exception.errno, errno.EBADF)
        micro_thread.run(main)

    def test_closed_socket(self):
        b = socket.socket()
        b.close()
        for call in (lambda: b.recv_d(1), lambda: b.send_d(b'x'),
                     lambda: b.accept_d(), lambda: b.connect_d(('', 1))):
            with self.assertRaises(OSError) as cm:
                micro_thread.run(call)
            self.assertEqual(cm.exception.errno, errno.EBADF)

    def test_peer_reset(self):
        client, server = self.tcp_pair()

        def main():
            t = self.start_blocked(server.recv_d, 100)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              b'\1\0\0\0\0\0\0\0')   # l_onoff=1, l_linger=0
            client.close()   # sends RST
            with self.assertRaises(ConnectionResetError):
                t.join()
        micro_thread.run(main)

    def test_send_to_closed_peer(self):
        a, b = self.pair()
        b.close()
        with self.assertRaises((BrokenPipeError, ConnectionResetError)):
            micro_thread.run(a.sendall_d, b'x' * 100000)

    def test_two_readers_each_datum_once(self):
        a, b = self.pair(socket.AF_UNIX, socket.SOCK_DGRAM) if HAVE_UNIX \
            else self.pair()
        got = []

        def reader(name):
            got.append((name, b.recv_d(10)))

        def main():
            x = self.start_blocked(reader, 'x')
            y = self.start_blocked(reader, 'y')
            a.send_d(b'1')
            micro_thread.sleep(0)
            a.send_d(b'2')
            x.join()
            y.join()
        micro_thread.run(main)
        self.assertEqual(sorted(d for _, d in got), [b'1', b'2'])
        self.assertEqual({n for n, _ in got}, {'x', 'y'})

    def test_signal_handler_returns_wait_goes_on(self):
        a, b = self.pair()
        hits = micro_thread_helper.signal_then(self, lambda: a.sendall(b'done'))
        self.assertEqual(micro_thread.run(b.recv_d, 10), b'done')
        self.assertEqual(hits, [1])

    def test_signal_handler_raises(self):
        if not hasattr(signal, 'pthread_kill'):
            self.skipTest('needs pthread_kill')
        a, b = self.pair()

        class Interrupt(Exception):
            pass

        def handler(*args):
            raise Interrupt
        old = signal.signal(signal.SIGUSR1, handler)
        self.addCleanup(signal.signal, signal.SIGUSR1, old)
        timer = threading.Timer(0.05, signal.pthread_kill,
                                (threading.get_ident(), signal.SIGUSR1))
        timer.start()
        try:
            with self.assertRaises(Interrupt):
                b.recv_d(10)
        finally:
            timer.join()
        # No wait was left behind.
        a.sendall(b'x')
        self.assertEqual(b.recv_d(10), b'x')


class BadInputTests(SocketTestCase):

    def test_accept_d_on_a_socket_that_does_not_listen(self):
        # accept() fails at once; accept_d() must not wait for ever.
        a, _ = self.pair()
        udp = self.add(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        for sock in (a, udp):
            with self.assertRaises(OSError) as cm:
                sock.accept()
            for runner in (lambda f: f(), micro_thread.run):
                with self.assertRaises(OSError) as cm_d:
                    runner(sock.accept_d)
                self.assertEqual(cm_d.exception.errno, cm.exception.errno)

    def test_msg_dontwait_asks_not_to_wait(self):
        a, _ = self.pair()
        calls = [lambda: a.recv_d(1, socket.MSG_DONTWAIT),
                 lambda: a.recvfrom_d(1, socket.MSG_DONTWAIT),
                 lambda: a.recv_into_d(bytearray(1), 1, socket.MSG_DONTWAIT)]
        for call in calls:
            for runner in (lambda f: f(), micro_thread.run):
                with self.assertRaises(BlockingIOError):
                    runner(call)
        full, _ = self.pair()
        self.fill(full)
        for call in (lambda: full.send_d(b'x', socket.MSG_DONTWAIT),
                     lambda: full.sendall_d(b'x', socket.MSG_DONTWAIT)):
            with self.assertRaises(BlockingIOError):
                micro_thread.run(call)

    def test_rejects_what_the_plain_methods_reject(self):
        a, b = self.pair()
        u = self.udp()
        cases = [
            ('recv', (-1,)), ('recv', ('1',)), ('recv', ()),
            ('recv', (1, 'x')), ('recv', (1, 2, 3)),
            ('recv_into', (b'read-only',)), ('recv_into', (bytearray(2), -1)),
            ('recv_into', (bytearray(2), 5)), ('recv_into', ()),
            ('recvfrom', (-1,)), ('recvfrom', ()),
            ('send', ('str',)), ('send', ()), ('send', (b'x', 'f')),
            ('sendall', ('str',)), ('sendall', ()),
            ('sendto', (b'x',)), ('sendto', (b'x', 0, 1, 2)),
            ('sendto', ('str', (HOST, 1))), ('sendto', (b'x', 'bad')),
            ('connect', ()), ('connect', ('bad',)),
        ]
        for name, args in cases:
            with self.subTest(name=name, args=args):
                sock = u if name == 'sendto' else b
                with self.assertRaises(Exception) as expected:
                    getattr(sock, name)(*args)
                with self.assertRaises(type(expected.exception)):
                    getattr(sock, name + '_d')(*args)
        with self.assertRaises(TypeError):
            b.recv_into_d(bytearray(1), nosuch=1)
        with self.assertRaises(TypeError):
            b.recv_d(bufsize=1)
        with self.assertRaises(TypeError):
            b._accept_d(1)

    def test_docstrings(self):
        for name in ('recv_d', 'recv_into_d', 'recvfrom_d', 'send_d',
                     'sendall_d', 'sendto_d', 'accept_d', 'connect_d',
                     '_accept_d'):
            with self.subTest(name):
                doc = getattr(socket.socket, name).__doc__
                self.assertIn('deferring', doc)
                self.assertIn('micro-thread', doc)


class AuditTests(unittest.TestCase):

    def test_audit_events(self):
        code = (
            "import socket, sys\n"
            "events = []\n"
            "sys.addaudithook(lambda e, a: e.startswith('socket.')\n"
            "                 and events.append((e, a)))\n"
            "l = socket.socket(); l.bind(('127.0.0.1', 0)); l.listen()\n"
            "addr = l.getsockname()\n"
            "s = socket.socket()\n"
            "u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.connect_d(addr)\n"
            "u.sendto_d(b'x', addr)\n"
            "print([(e, a[0] is s or a[0] is u, a[1] == addr)\n"
            "       for e, a in events\n"
            "       if e in ('socket.connect', 'socket.sendto')])\n")
        res = script_helper.assert_python_ok('-c', code)
        self.assertEqual(
            res.out.decode().strip(),
            "[('socket.connect', True, True), ('socket.sendto', True, True)]")


def os_helper_unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass


if __name__ == '__main__':
    unittest.main()
