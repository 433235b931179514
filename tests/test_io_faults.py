"""What ends a deferring I/O wait: timeouts, kill, closed fds, peers,
signals; and several micro-threads waiting on one fd."""

import errno
import os
import signal
import socket
import struct
import threading
import time

import pytest

from helpers import fill, require

pytestmark = pytest.mark.usefixtures("os_block_guard")


def _drain(fd):
    """Read whatever *fd* (pipe or socket) holds, without blocking."""
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        while os.read(fd, 1 << 20):
            pass
    except BlockingIOError:
        pass
    finally:
        os.set_blocking(fd, blocking)


class Kind:
    """One kind of deferring call that waits, and what makes it complete.

    ``block()`` makes the call; ``feed(data)`` lets one waiting call
    complete per byte of *data* (a reader gets that byte back); ``close()``
    closes the waited-on fd the way this kind's users would.
    """

    features = ()
    reads = True
    sock = None            # the socket whose timeout applies, if any

    def __init__(self, mt, res):
        self.mt = mt
        self.res = res

    def feed(self, data):
        raise NotImplementedError

    def close(self, how):
        raise NotImplementedError


class SleepD(Kind):
    features = ("sleep_d",)
    reads = False

    def block(self):
        return self.mt.sleep_d(60)


class ReadD(Kind):
    features = ("read_d",)
    closers = ("os.close", "mt.close")

    def __init__(self, mt, res):
        super().__init__(mt, res)
        self.r, self.w = res.pipe()

    def block(self):
        return self.mt.read_d(self.r, 1)

    def feed(self, data):
        os.write(self.w, data)

    def close(self, how):
        (os.close if how == "os.close" else self.mt.close)(self.r)


class WriteD(ReadD):
    features = ("write_d",)
    reads = False

    def __init__(self, mt, res):
        super().__init__(mt, res)
        fill(self.w)

    def block(self):
        return self.mt.write_d(self.w, b"Z")

    def feed(self, data):
        _drain(self.r)

    def close(self, how):
        (os.close if how == "os.close" else self.mt.close)(self.w)


class RecvD(Kind):
    features = ("socket.recv_d",)
    closers = ("sock.close",)

    def __init__(self, mt, res):
        super().__init__(mt, res)
        a, b = mt.socketpair()
        self.peer, self.sock = res.add(a), res.add(b)

    def block(self):
        return self.sock.recv_d(1)

    def feed(self, data):
        self.peer.sendall(data)

    def close(self, how):
        self.sock.close()


class RecvIntoD(RecvD):
    features = ("socket.recv_into_d",)

    def block(self):
        buffer = bytearray(1)
        count = self.sock.recv_into_d(buffer, 1)
        return bytes(buffer[:count])


class RecvfromD(Kind):
    features = ("socket.recvfrom_d",)
    closers = ("sock.close",)

    def __init__(self, mt, res):
        super().__init__(mt, res)
        self.sock = res.add(mt.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.sock.bind(("127.0.0.1", 0))
        self.peer = res.add(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.peer.bind(("127.0.0.1", 0))

    def block(self):
        data, address = self.sock.recvfrom_d(1)
        assert address == self.peer.getsockname()
        return data

    def feed(self, data):
        for byte in data:
            self.peer.sendto(bytes([byte]), self.sock.getsockname())

    def close(self, how):
        self.sock.close()


class SendD(RecvD):
    features = ("socket.send_d",)
    reads = False

    def __init__(self, mt, res):
        super().__init__(mt, res)
        self.sock, self.peer = self.peer, self.sock
        fill(self.sock.fileno())

    def block(self):
        return self.sock.send_d(b"Z")

    def feed(self, data):
        _drain(self.peer.fileno())


class SendallD(SendD):
    features = ("socket.sendall_d",)

    def block(self):
        return self.sock.sendall_d(b"Z" * 100)


class AcceptD(Kind):
    features = ("socket.accept_d",)
    closers = ("sock.close",)

    def __init__(self, mt, res):
        super().__init__(mt, res)
        self.sock = res.add(mt.socket(socket.AF_INET, socket.SOCK_STREAM))
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)

    def block(self):
        conn, address = self.sock.accept_d()
        self.res.add(conn)
        assert isinstance(conn, self.mt.socket)
        return conn.recv(1)    # the client sent it before accept returned

    def feed(self, data):
        for byte in data:
            client = self.res.add(
                socket.create_connection(self.sock.getsockname()))
            client.sendall(bytes([byte]))

    def close(self, how):
        self.sock.close()


class FileReadD(Kind):
    """read_d of a file object from open() on a pipe."""

    mode, buffering = "rb", 0
    closers = ("file.close",)

    def __init__(self, mt, res):
        super().__init__(mt, res)
        self.r, self.w = res.pipe()
        self.file = res.add(mt.open(self.r, self.mode,
                                    buffering=self.buffering))

    def block(self):
        return self.file.read_d(1)

    def feed(self, data):
        os.write(self.w, data)

    def close(self, how):
        self.file.close()


class FileIOReadD(FileReadD):
    features = ("FileIO.read_d",)


class BufferedReadD(FileReadD):
    features = ("BufferedReader.read_d",)
    buffering = -1


class TextReadlineD(FileReadD):
    features = ("TextIOWrapper.readline_d",)
    mode, buffering = "r", -1

    def block(self):
        return self.file.readline_d().rstrip("\n").encode()

    def feed(self, data):
        for byte in data:
            os.write(self.w, bytes([byte]) + b"\n")


class FileIOWriteD(FileReadD):
    features = ("FileIO.write_d",)
    mode = "wb"
    reads = False

    def __init__(self, mt, res):
        Kind.__init__(self, mt, res)
        self.r, self.w = res.pipe()
        fill(self.w)
        self.file = res.add(mt.open(self.w, "wb", buffering=0))

    def block(self):
        return self.file.write_d(b"Z")

    def feed(self, data):
        _drain(self.r)


KINDS = {cls.__name__: cls for cls in (
    SleepD, ReadD, WriteD, RecvD, RecvIntoD, RecvfromD, SendD, SendallD,
    AcceptD, FileIOReadD, BufferedReadD, TextReadlineD, FileIOWriteD)}
FED = [name for name, cls in KINDS.items() if cls is not SleepD]
READERS = [name for name, cls in KINDS.items() if cls.reads]
SOCKETS = [name for name, cls in KINDS.items() if "socket." in
           " ".join(cls.features)]
CLOSERS = [(name, how) for name, cls in KINDS.items()
           for how in getattr(cls, "closers", ())]


def _kind(mt, res, name):
    kind = KINDS[name]
    require(mt, *kind.features)
    return kind(mt, res)


def _until_blocked(mt, *threads):
    """Yield until every one of *threads* waits (at most 100 rounds)."""
    for _ in range(100):
        if all(t.state == "blocked" for t in threads):
            return
        mt.sleep(0)
    raise AssertionError([t.state for t in threads])


def _another_waiter_completes(mt, kind):
    """No registration of an ended wait is left: a new waiter completes."""
    if isinstance(kind, SleepD):
        return

    def check():
        waiter = mt.start(kind.block)
        _until_blocked(mt, waiter)
        kind.feed(b"n")
        return waiter.join()

    result = mt.run(check)
    if kind.reads:
        assert result == b"n"


# -- kill, throw, timeout() scopes, socket timeouts -------------------------

@pytest.mark.parametrize("name", KINDS)
def test_kill_ends_the_wait(mt, res, name):
    kind = _kind(mt, res, name)
    finally_runs = []

    def victim():
        try:
            kind.block()
        finally:
            finally_runs.append(mt.current().state)

    def main():
        thread = mt.start(victim)
        _until_blocked(mt, thread)
        thread.kill()
        with pytest.raises(mt.MicroThreadExit):
            thread.join()

    mt.run(main)
    assert finally_runs == ["running"]
    _another_waiter_completes(mt, kind)


@pytest.mark.parametrize("name", KINDS)
def test_throw_ends_the_wait(mt, res, name):
    kind = _kind(mt, res, name)
    error = LookupError("thrown")

    def victim():
        try:
            kind.block()
        except LookupError as exc:
            return exc

    def main():
        thread = mt.start(victim)
        _until_blocked(mt, thread)
        thread.throw(error)
        return thread.join()

    assert mt.run(main) is error
    _another_waiter_completes(mt, kind)


@pytest.mark.parametrize("name", KINDS)
def test_timeout_scope_ends_the_wait(mt, res, name):
    kind = _kind(mt, res, name)

    def body():
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            with mt.timeout(0.02):
                kind.block()
        return time.monotonic() - start

    assert 0.02 <= mt.run(body) < 1
    _another_waiter_completes(mt, kind)


@pytest.mark.parametrize("name", KINDS)
def test_timeout_scope_in_the_root(mt, res, name):
    kind = _kind(mt, res, name)
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        with mt.timeout(0.02):
            kind.block()
    assert 0.02 <= time.monotonic() - start < 1
    _another_waiter_completes(mt, kind)


@pytest.mark.parametrize("name", SOCKETS)
def test_socket_timeout_ends_the_wait(mt, res, name):
    kind = _kind(mt, res, name)
    kind.sock.settimeout(0.02)

    def body():
        start = time.monotonic()
        with pytest.raises(TimeoutError, match="^timed out$"):
            kind.block()
        return time.monotonic() - start

    assert 0.02 <= mt.run(body) < 1
    kind.sock.settimeout(None)
    _another_waiter_completes(mt, kind)


# -- the fd closed, the peer gone -------------------------------------------

@pytest.mark.parametrize("name, how", CLOSERS)
def test_closing_the_fd_wakes_the_waiter_with_ebadf(mt, res, name, how):
    kind = _kind(mt, res, name)
    outcome = []

    def waiter():
        try:
            kind.block()
        except OSError as exc:
            outcome.append(exc.errno)

    def main():
        thread = mt.start(waiter)
        _until_blocked(mt, thread)
        kind.close(how)
        thread.join()

    mt.run(main)
    assert outcome == [errno.EBADF]
    # The fd number is free again, and no wait on it is left behind: a
    # waiter on whatever file gets that number next is woken normally.
    require(mt, "read_d")
    r, w = res.pipe()

    def main():
        reader = mt.start(mt.read_d, r, 100)
        _until_blocked(mt, reader)
        os.write(w, b"new")
        return reader.join()

    assert mt.run(main) == b"new"


def _tcp_pair(mt, res):
    listener = res.add(socket.create_server(("127.0.0.1", 0)))
    client = res.add(mt.socket(socket.AF_INET, socket.SOCK_STREAM))
    client.connect(listener.getsockname())
    server, _ = listener.accept()
    return client, res.add(server)


def _reset(sock):
    """Close *sock* so that its peer gets a reset (RST), not an EOF."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    sock.close()


def _wait_then(mt, block, action):
    """Run block() in a micro_thread, do action() once it waits; return
    the exception block() raised, or its result."""
    def waiter():
        try:
            return block()
        except Exception as exc:
            return exc

    def main():
        thread = mt.start(waiter)
        _until_blocked(mt, thread)
        action()
        return thread.join()

    return mt.run(main)


def test_recv_d_reset_by_peer(mt, res):
    require(mt, "socket.recv_d")
    client, server = _tcp_pair(mt, res)
    outcome = _wait_then(mt, lambda: client.recv_d(100),
                         lambda: _reset(server))
    assert isinstance(outcome, ConnectionResetError)


def test_send_d_reset_by_peer(mt, res):
    require(mt, "socket.sendall_d")
    client, server = _tcp_pair(mt, res)
    outcome = _wait_then(mt, lambda: client.sendall_d(b"x" * (16 << 20)),
                         lambda: _reset(server))
    assert isinstance(outcome, (ConnectionResetError, BrokenPipeError))


def test_send_d_to_a_closed_peer_is_a_broken_pipe(mt, res):
    require(mt, "socket.sendall_d")
    a, b = mt.socketpair()
    res.add(a)
    outcome = _wait_then(mt, lambda: a.sendall_d(b"x" * (16 << 20)),
                         b.close)
    assert isinstance(outcome, BrokenPipeError)


def test_recv_d_from_a_closed_peer_is_end_of_file(mt, res):
    require(mt, "socket.recv_d")
    a, b = mt.socketpair()
    res.add(a)
    assert _wait_then(mt, lambda: a.recv_d(100), b.close) == b""


def test_write_d_to_a_pipe_without_reader_is_a_broken_pipe(mt, res):
    require(mt, "write_d")
    r, w = res.pipe()
    fill(w)
    outcome = _wait_then(mt, lambda: mt.write_d(w, b"x"),
                         lambda: os.close(r))
    assert isinstance(outcome, BrokenPipeError)


def test_read_d_from_a_pipe_without_writer_is_end_of_file(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    assert _wait_then(mt, lambda: mt.read_d(r, 1),
                      lambda: os.close(w)) == b""


# -- several waiters on one fd ----------------------------------------------

@pytest.mark.parametrize("name", READERS)
def test_two_waiters_each_get_one_item(mt, res, name):
    kind = _kind(mt, res, name)

    def main():
        waiters = [mt.start(kind.block), mt.start(kind.block)]
        _until_blocked(mt, *waiters)
        kind.feed(b"ab")
        return sorted(t.join() for t in waiters)

    assert mt.run(main) == [b"a", b"b"]


@pytest.mark.parametrize("name", READERS)
def test_items_arriving_one_by_one_are_neither_lost_nor_doubled(mt, res,
                                                                name):
    kind = _kind(mt, res, name)
    got = []

    def reader():
        got.append(kind.block())

    def main():
        readers = [mt.start(reader) for _ in range(3)]
        _until_blocked(mt, *readers)
        for item in (b"x", b"y", b"z"):
            kind.feed(item)
            mt.sleep(0.005)
        for thread in readers:
            thread.join()

    mt.run(main)
    assert sorted(got) == [b"x", b"y", b"z"]


@pytest.mark.parametrize("name", READERS)
def test_root_and_micro_thread_wait_on_one_fd(mt, res, name):
    kind = _kind(mt, res, name)

    def feeder(waiter):
        _until_blocked(mt, waiter)
        mt.sleep(0.01)
        kind.feed(b"rm")

    waiter = mt.start(kind.block)
    mt.start(feeder, waiter)
    first = kind.block()
    assert sorted([first, waiter.join()]) == [b"m", b"r"]


# -- signals --------------------------------------------------------------

class Boom(Exception):
    """Raised by a test's signal handler."""


@pytest.fixture
def signal_soon():
    """Call ``signal_soon(signum)``: the main thread gets it in 30 ms."""
    timers = []

    def send(signum, delay=0.03):
        timer = threading.Timer(delay, signal.pthread_kill,
                                (threading.main_thread().ident, signum))
        timers.append(timer)
        timer.start()

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals need the main thread")
    if not hasattr(signal, "pthread_kill"):
        pytest.skip("no signal.pthread_kill")
    yield send
    for timer in timers:
        timer.cancel()
        timer.join()


@pytest.fixture
def handler():
    """Install a SIGUSR1 handler for the test: ``handler(fn)``."""
    previous = signal.getsignal(signal.SIGUSR1)
    yield lambda fn: signal.signal(signal.SIGUSR1, fn)
    signal.signal(signal.SIGUSR1, previous)


def test_eintr_is_retried(mt, res, signal_soon, handler):
    require(mt, "read_d")
    r, w = res.pipe()
    handled = []
    handler(lambda signum, frame: handled.append(signum))

    def writer():
        while not handled:
            mt.sleep(0.005)
        os.write(w, b"after the signal")

    def main():
        mt.start(writer)
        signal_soon(signal.SIGUSR1)
        return mt.read_d(r, 100)

    assert mt.run(main) == b"after the signal"
    assert handled == [signal.SIGUSR1]


def test_eintr_is_retried_in_the_root(mt, res, signal_soon, handler):
    require(mt, "read_d")
    r, w = res.pipe()
    handled = []
    handler(lambda signum, frame: handled.append(signum))

    def writer():
        while not handled:
            mt.sleep(0.005)
        os.write(w, b"root")

    mt.start(writer)
    signal_soon(signal.SIGUSR1)
    assert mt.read_d(r, 100) == b"root"


def test_signal_handler_exception_reaches_the_main_micro_thread(
        mt, res, signal_soon, handler):
    require(mt, "read_d")
    r, w = res.pipe()
    other_r, other_w = res.pipe()
    cleanup = []

    def boom(signum, frame):
        raise Boom("from the handler")

    handler(boom)

    def main():
        other = mt.start(mt.read_d, other_r, 100)
        try:
            signal_soon(signal.SIGUSR1)
            mt.read_d(r, 100)
        finally:
            cleanup.append(("main", other.state))
        return other

    with pytest.raises(Boom):
        mt.run(main)
    assert cleanup == [("main", "blocked")]
    (other,) = mt.enumerate()      # the other waiter was not disturbed
    os.write(other_w, b"later")
    assert other.join() == b"later"


def test_ctrl_c_raises_keyboard_interrupt_in_the_main_micro_thread(
        mt, res, signal_soon):
    require(mt, "read_d")
    r, w = res.pipe()
    cleanup = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def main():
        try:
            signal_soon(signal.SIGINT)
            mt.read_d(r, 100)
        finally:
            cleanup.append("main's finally")

    try:
        with pytest.raises(KeyboardInterrupt):
            mt.run(main)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert cleanup == ["main's finally"]


def test_ctrl_c_while_another_micro_thread_runs(mt, res, signal_soon):
    require(mt, "read_d")
    r, w = res.pipe()
    cleanup = []
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def busy():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            mt.sleep(0)
        cleanup.append("busy ran out of time")

    def main():
        worker = mt.start(busy)
        try:
            signal_soon(signal.SIGINT)
            mt.read_d(r, 100)
        finally:
            cleanup.append("main's finally")
            worker.kill()

    try:
        with pytest.raises(KeyboardInterrupt):
            mt.run(main)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert cleanup == ["main's finally"]


def test_signal_handler_exception_in_the_root_call(mt, res, signal_soon,
                                                   handler):
    require(mt, "read_d")
    r, w = res.pipe()
    other_r, other_w = res.pipe()

    def boom(signum, frame):
        raise Boom("from the handler")

    handler(boom)
    other = mt.start(mt.read_d, other_r, 100)
    signal_soon(signal.SIGUSR1)
    with pytest.raises(Boom):
        mt.read_d(r, 100)
    assert other.state == "blocked"
    os.write(other_w, b"undisturbed")
    assert other.join() == b"undisturbed"


# -- deadlock detection -----------------------------------------------------

def test_a_wait_on_io_is_no_deadlock(mt, res):
    require(mt, "read_d")
    r, w = res.pipe()
    reader = mt.start(mt.read_d, r, 100)
    timer = threading.Timer(0.03, os.write, (w, b"from an OS thread"))
    timer.start()
    try:
        assert reader.join() == b"from an OS thread"
    finally:
        timer.join()
