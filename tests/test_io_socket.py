"""The deferring socket methods: recv_d, send_d, accept_d, connect_d, ..."""

import socket
import time

import pytest

from helpers import fill, require

pytestmark = pytest.mark.usefixtures("os_block_guard")

LOCALHOST = "127.0.0.1"


def _pair(mt, res):
    a, b = mt.socketpair()
    return res.add(a), res.add(b)


def _listener(mt, res):
    sock = res.add(mt.socket(socket.AF_INET, socket.SOCK_STREAM))
    sock.bind((LOCALHOST, 0))
    sock.listen(64)
    return sock


def _udp(mt, res):
    sock = res.add(mt.socket(socket.AF_INET, socket.SOCK_DGRAM))
    sock.bind((LOCALHOST, 0))
    return sock


def _recv_exactly(mt, sock, total):
    data = bytearray()
    while len(data) < total:
        chunk = sock.recv_d(65536)
        assert chunk, "connection closed early"
        data += chunk
    return bytes(data)


def test_socketpair_gives_deferring_sockets(mt, res):
    a, b = _pair(mt, res)
    assert isinstance(a, mt.socket) and isinstance(b, mt.socket)
    assert isinstance(a, socket.socket)
    assert a.family == getattr(socket, "AF_UNIX", socket.AF_INET)


def test_recv_d_waits_for_data_while_others_run(mt, res):
    require(mt, "socket.recv_d")
    a, b = _pair(mt, res)
    events = []

    def reader():
        events.append("reader waits")
        events.append(("got", b.recv_d(100)))

    def writer(reader_thread):
        mt.sleep(0)
        events.append(("reader is", reader_thread.state))
        a.send(b"ping")

    def main():
        reading = mt.start(reader)
        mt.start(writer, reading).join()
        reading.join()

    mt.run(main)
    assert events == ["reader waits", ("reader is", "blocked"),
                      ("got", b"ping")]


def test_recv_d_in_the_root(mt, res):
    require(mt, "socket.recv_d")
    a, b = _pair(mt, res)

    def writer():
        mt.sleep(0.01)
        a.sendall(b"to the root")

    thread = mt.start(writer)
    assert b.recv_d(100) == b"to the root"
    thread.join()


def test_recv_d_returns_empty_bytes_when_the_peer_closes(mt, res):
    require(mt, "socket.recv_d")
    a, b = _pair(mt, res)

    def closer():
        mt.sleep(0.01)
        a.close()

    def main():
        mt.start(closer)
        return b.recv_d(100)

    assert mt.run(main) == b""


def test_recv_d_flags(mt, res):
    require(mt, "socket.recv_d")
    a, b = _pair(mt, res)
    a.sendall(b"peeked")
    assert b.recv_d(100, socket.MSG_PEEK) == b"peeked"
    assert b.recv_d(3) == b"pee"
    assert b.recv_d(100) == b"ked"


def test_recv_d_rejects_what_recv_rejects(mt, res):
    require(mt, "socket.recv_d")
    a, b = _pair(mt, res)
    for args in [(-1,), ("1",), ()]:
        with pytest.raises(Exception) as expected:
            b.recv(*args)
        with pytest.raises(expected.type):
            b.recv_d(*args)


def test_recv_into_d(mt, res):
    require(mt, "socket.recv_into_d")
    a, b = _pair(mt, res)
    buffer = bytearray(10)

    def writer():
        mt.sleep(0.01)
        a.sendall(b"abcdef")

    def main():
        mt.start(writer)
        first = b.recv_into_d(buffer, 2)
        second = b.recv_into_d(memoryview(buffer)[2:], 0, 0)
        return first, second

    assert mt.run(main) == (2, 4)
    assert buffer == b"abcdef\0\0\0\0"


def test_recvfrom_d_and_sendto_d(mt, res):
    require(mt, "socket.recvfrom_d", "socket.sendto_d")
    receiver, sender = _udp(mt, res), _udp(mt, res)
    address = receiver.getsockname()

    def send():
        mt.sleep(0.01)
        assert sender.sendto_d(b"one", address) == 3
        assert sender.sendto_d(b"two", 0, address) == 3

    def main():
        mt.start(send)
        return receiver.recvfrom_d(100), receiver.recvfrom_d(100, 0)

    first, second = mt.run(main)
    assert first == (b"one", sender.getsockname())
    assert second == (b"two", sender.getsockname())


def test_send_d_returns_the_count(mt, res):
    require(mt, "socket.send_d")
    a, b = _pair(mt, res)
    assert mt.run(a.send_d, b"hello") == 5
    assert a.send_d(bytearray(b"!!"), 0) == 2
    assert b.recv(100) == b"hello!!"


def test_send_d_waits_while_the_buffer_is_full(mt, res):
    require(mt, "socket.send_d", "socket.recv_d")
    a, b = _pair(mt, res)
    fill(a.fileno())
    events = []

    def sender():
        events.append("sender waits")
        count = a.send_d(b"end")
        events.append("sent")
        return count

    def reader(sending):
        mt.sleep(0)
        events.append(("sender is", sending.state))
        data = b""
        while not data.endswith(b"end"):
            data += b.recv_d(65536)

    def main():
        sending = mt.start(sender)
        mt.start(reader, sending).join()
        return sending.join()

    assert mt.run(main) == 3
    assert events == ["sender waits", ("sender is", "blocked"), "sent"]


def test_sendall_d_sends_everything(mt, res):
    require(mt, "socket.sendall_d", "socket.recv_d")
    a, b = _pair(mt, res)
    data = bytes(range(256)) * 4096    # 1 MiB: more than the buffers hold

    def main():
        reader = mt.start(_recv_exactly, mt, b, len(data))
        assert a.sendall_d(data) is None
        return reader.join()

    assert mt.run(main) == data


def test_sendall_d_in_the_root(mt, res):
    require(mt, "socket.sendall_d", "socket.recv_d")
    a, b = _pair(mt, res)
    data = b"x" * (1 << 20)
    reader = mt.start(_recv_exactly, mt, b, len(data))
    assert a.sendall_d(memoryview(data)) is None
    assert reader.join() == data


def test_accept_d_and_connect_d(mt, res):
    require(mt, "socket.accept_d", "socket.connect_d", "socket.recv_d")
    listener = _listener(mt, res)
    client = res.add(mt.socket(socket.AF_INET, socket.SOCK_STREAM))

    def server():
        conn, address = listener.accept_d()
        res.add(conn)
        assert isinstance(conn, mt.socket)
        return conn.recv_d(100), address

    def main():
        serving = mt.start(server)
        mt.sleep(0)
        assert serving.state == "blocked"
        assert client.connect_d(listener.getsockname()) is None
        client.sendall(b"hi")
        return serving.join()

    data, address = mt.run(main)
    assert data == b"hi"
    assert address == client.getsockname()


def test_accepted_sockets_defer_too(mt, res):
    require(mt, "socket.accept_d", "socket.connect_d", "socket.recv_d",
            "socket.sendall_d")
    listener = _listener(mt, res)
    client = res.add(mt.socket(socket.AF_INET, socket.SOCK_STREAM))

    def echo_server():
        conn, _ = listener.accept_d()
        with conn:
            assert isinstance(conn, mt.socket)
            conn.sendall_d(conn.recv_d(100).upper())

    def main():
        server = mt.start(echo_server)
        client.connect_d(listener.getsockname())
        mt.sleep(0.01)
        assert server.state == "blocked"    # in recv_d on the new socket
        client.sendall_d(b"echo")
        data = _recv_exactly(mt, client, 4)
        server.join()
        return data

    assert mt.run(main) == b"ECHO"


def test_accept_returns_the_deferring_class(mt, res):
    listener = _listener(mt, res)
    client = res.add(socket.create_connection(listener.getsockname()))
    conn, address = listener.accept()
    res.add(conn)
    assert isinstance(conn, mt.socket)
    assert address == client.getsockname()


def test_connect_d_in_the_root(mt, res):
    require(mt, "socket.accept_d", "socket.connect_d")
    listener = _listener(mt, res)
    server = mt.start(listener.accept_d)
    client = res.add(mt.socket(socket.AF_INET, socket.SOCK_STREAM))
    assert client.connect_d(listener.getsockname()) is None
    conn, address = server.join()
    res.add(conn)
    assert address == client.getsockname()


def test_connect_d_refused(mt, res):
    require(mt, "socket.connect_d")
    probe = socket.socket()
    probe.bind((LOCALHOST, 0))
    address = probe.getsockname()
    probe.close()    # nothing listens there now
    client = res.add(mt.socket(socket.AF_INET, socket.SOCK_STREAM))
    with pytest.raises(ConnectionRefusedError):
        mt.run(client.connect_d, address)


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX")
def test_connect_d_unix_errors_like_connect(mt, res, tmp_path):
    require(mt, "socket.connect_d")
    client = res.add(mt.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    with pytest.raises(FileNotFoundError):
        client.connect_d(str(tmp_path / "nobody"))


def test_socket_timeout_ends_the_wait(mt, res):
    require(mt, "socket.recv_d")
    a, b = _pair(mt, res)
    b.settimeout(0.05)
    ticks = []

    def ticker():
        while True:
            ticks.append(None)
            mt.sleep(0.005)

    def main():
        tick = mt.start(ticker)
        start = time.monotonic()
        try:
            b.recv_d(100)
        except TimeoutError as exc:
            return str(exc), time.monotonic() - start
        finally:
            tick.kill()

    message, elapsed = mt.run(main)
    assert message == "timed out"
    assert 0.05 <= elapsed < 1
    assert len(ticks) > 2
    assert b.gettimeout() == 0.05


def test_socket_timeout_in_the_root(mt, res):
    require(mt, "socket.recv_d", "socket.accept_d")
    a, b = _pair(mt, res)
    b.settimeout(0.02)
    with pytest.raises(TimeoutError, match="timed out"):
        b.recv_d(100)
    listener = _listener(mt, res)
    listener.settimeout(0.02)
    with pytest.raises(TimeoutError, match="timed out"):
        listener.accept_d()


def test_socket_timeout_does_not_fire_when_data_comes(mt, res):
    require(mt, "socket.recv_d")
    a, b = _pair(mt, res)
    b.settimeout(5)

    def writer():
        mt.sleep(0.01)
        a.sendall(b"in time")

    mt.start(writer)
    assert b.recv_d(100) == b"in time"


def test_sendall_d_timeout_bounds_the_whole_call(mt, res):
    require(mt, "socket.sendall_d")
    a, b = _pair(mt, res)
    a.settimeout(0.05)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out"):
        mt.run(a.sendall_d, b"x" * (4 << 20))
    assert 0.05 <= time.monotonic() - start < 1


def test_non_blocking_socket_raises_like_the_plain_method(mt, res):
    require(mt, "socket.recv_d", "socket.accept_d")
    a, b = _pair(mt, res)
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv_d(100)
    listener = _listener(mt, res)
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept_d()


def test_many_connections_at_once(mt, res):
    require(mt, "socket.accept_d", "socket.connect_d", "socket.recv_d",
            "socket.sendall_d")
    listener = _listener(mt, res)
    count = 20

    def serve_one(conn):
        with conn:
            conn.sendall_d(conn.recv_d(100) * 2)

    def server():
        with mt.Group() as group:
            for _ in range(count):
                conn, _ = listener.accept_d()
                group.start(serve_one, conn)

    def client(index):
        with mt.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.connect_d(listener.getsockname())
            sock.sendall_d(b"%d," % index)
            data = b""
            while len(data) < 2 * len(b"%d," % index):
                data += sock.recv_d(100)
            return data

    def main():
        serving = mt.start(server)
        with mt.Group() as group:
            clients = [group.start(client, i) for i in range(count)]
        serving.join()
        return [c.join() for c in clients]

    assert mt.run(main) == [b"%d,%d," % (i, i) for i in range(count)]


def _unanswered_address(res):
    """An address whose connection attempts get no answer for a while.

    A listener whose backlog is full drops further SYNs (Linux); the
    client retransmits only after a second.
    """
    listener = res.add(socket.create_server((LOCALHOST, 0), backlog=0))
    for _ in range(4):
        filler = res.add(socket.socket())
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
    time.sleep(0.02)
    probe = res.add(socket.socket())
    probe.setblocking(False)
    probe.connect_ex(listener.getsockname())
    time.sleep(0.02)
    if _connected(probe):
        pytest.skip("this system answers connections beyond the backlog")
    return listener.getsockname()


def _connected(sock):
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def test_connect_d_timeout(mt, res):
    require(mt, "socket.connect_d")
    address = _unanswered_address(res)
    client = res.add(mt.socket(socket.AF_INET, socket.SOCK_STREAM))
    client.settimeout(0.05)
    ticks = []

    def ticker():
        while True:
            ticks.append(None)
            mt.sleep(0.005)

    def main():
        tick = mt.start(ticker)
        start = time.monotonic()
        try:
            with pytest.raises(TimeoutError, match="^timed out$"):
                client.connect_d(address)
        finally:
            tick.kill()
        return time.monotonic() - start

    assert 0.05 <= mt.run(main) < 1
    assert len(ticks) > 2


def test_connect_d_ended_by_kill_and_timeout_scope(mt, res):
    require(mt, "socket.connect_d")
    address = _unanswered_address(res)

    def connect():
        with mt.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
            client.connect_d(address)

    def main():
        victim = mt.start(connect)
        mt.sleep(0.01)
        assert victim.state == "blocked"
        victim.kill()
        with pytest.raises(mt.MicroThreadExit):
            victim.join()
        with pytest.raises(TimeoutError):
            with mt.timeout(0.02):
                connect()

    mt.run(main)
