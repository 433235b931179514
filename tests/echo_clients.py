"""Echo clients for test_echo.py: many connections in one selectors loop.

Run as a subprocess of the test so that the server's OS thread runs nothing
but micro-threads::

    python echo_clients.py CONTROL_FD PORT PARAMS_JSON

It runs ``run_clients(PORT, **PARAMS)`` and writes the JSON report to the
socket ``CONTROL_FD`` (inherited from the test), then closes it.
"""

import errno
import json
import random
import selectors
import socket
import sys

#: Seconds without any progress after which the clients give up.
STALL_TIMEOUT = 30

#: What the message bytes are cut from: every message is a slice of it at an
#: offset that depends on the connection and the message, so that bytes sent
#: back on the wrong connection or out of order do not compare equal.
BLOB_SIZE = 1 << 18
BLOB_SEED = 4


def message(blob, conn, index, size):
    """The bytes that connection *conn* sends as its message *index*."""
    offset = (conn * 7919 + index * 104729) % (len(blob) - size + 1)
    return blob[offset:offset + size]


class Client:
    """One connection's state: what it sends and what it expects back."""

    __slots__ = ("number", "sock", "phase", "events", "messages", "index",
                 "sent", "received")

    def __init__(self, number, sock):
        self.number = number
        self.sock = sock
        # connecting -> first -> waiting -> second -> closing -> closed
        self.phase = "connecting"
        self.events = selectors.EVENT_WRITE     # as registered
        self.messages = []                      # of the current phase
        self.index = 0                          # the message in flight
        self.sent = 0                           # bytes of it sent
        self.received = bytearray()             # bytes of it echoed so far


def run_clients(port, count, before, after, window):
    """Run *count* connections to 127.0.0.1:*port*; return a report (dict).

    Each connection sends messages of the sizes in *before*, one at a time,
    and waits until each has been echoed in full.  When every connection has
    done so -- all *count* are open at that point -- each sends messages of
    the sizes in *after* the same way, then shuts down its sending side and
    expects the server to close the connection.  At most *window*
    connections are in their first phase at once, so that the server's
    accept queue does not overflow.  Any deviation (a wrong or extra byte,
    an early close, an error) is an entry of ``report["errors"]``.
    """
    blob = random.Random(BLOB_SEED).randbytes(BLOB_SIZE)
    sel = selectors.DefaultSelector()
    clients = []
    errors = []
    counts = {"busy": 0, "done": 0, "messages": 0, "bytes": 0}

    def close(client):
        if client.phase != "closed":
            sel.unregister(client.sock)
            client.sock.close()
            client.phase = "closed"

    def fail(client, what):
        errors.append(f"connection {client.number} ({client.phase}): {what}")
        close(client)

    def want(client, events):
        if events != client.events:
            sel.modify(client.sock, events, client)
            client.events = events

    def begin(client, phase, sizes, first_index):
        client.phase = phase
        client.messages = [message(blob, client.number, first_index + i, n)
                           for i, n in enumerate(sizes)]
        client.index = client.sent = 0
        client.received.clear()
        if client.messages:
            want(client, selectors.EVENT_READ | selectors.EVENT_WRITE)
        else:
            end_of_messages(client)

    def end_of_messages(client):
        if client.phase == "first":
            client.phase = "waiting"
            counts["busy"] -= 1
        else:
            client.phase = "closing"
            client.sock.shutdown(socket.SHUT_WR)
        # Only an EOF is expected now, and only when closing.
        want(client, selectors.EVENT_READ)

    def open_one():
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = Client(len(clients), sock)
        clients.append(client)
        counts["busy"] += 1
        sel.register(sock, client.events, client)
        err = sock.connect_ex(("127.0.0.1", port))
        if err not in (0, errno.EINPROGRESS):
            fail(client, f"connect: {errno.errorcode.get(err, err)}")

    def on_receive(client):
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            fail(client, f"recv: {exc!r}")
            return
        if not data:
            if client.phase == "closing":
                counts["done"] += 1
                close(client)
            else:
                fail(client, "the server closed the connection")
            return
        if client.phase not in ("first", "second"):
            fail(client, f"{len(data)} unexpected bytes")
            return
        expected = client.messages[client.index]
        client.received += data
        got = len(client.received)
        if got > len(expected) or client.received != expected[:got]:
            fail(client, f"message {client.index} ({len(expected)} bytes) "
                         f"echoed wrongly (first {got} bytes received)")
            return
        if got == len(expected):
            counts["messages"] += 1
            counts["bytes"] += got
            client.index += 1
            client.sent = 0
            client.received.clear()
            if client.index == len(client.messages):
                end_of_messages(client)
            else:
                want(client, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def on_writable(client):
        expected = client.messages[client.index]
        try:
            client.sent += client.sock.send(
                memoryview(expected)[client.sent:])
        except BlockingIOError:
            return
        except OSError as exc:
            fail(client, f"send: {exc!r}")
            return
        if client.sent == len(expected):
            want(client, selectors.EVENT_READ)

    def on_event(client, mask):
        if client.phase == "connecting":
            err = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fail(client, f"connect: {errno.errorcode.get(err, err)}")
            else:
                begin(client, "first", before, 0)
            return
        if mask & selectors.EVENT_READ:
            on_receive(client)
        if (mask & selectors.EVENT_WRITE and client.phase != "closed"
                and client.events & selectors.EVENT_WRITE):
            on_writable(client)

    def pump(until):
        """Handle events until until() or an error; False on a stall."""
        while not errors and not until():
            ready = sel.select(timeout=STALL_TIMEOUT)
            if not ready:
                errors.append(f"no progress for {STALL_TIMEOUT} s")
                return False
            for key, mask in ready:
                if key.data.phase != "closed":
                    on_event(key.data, mask)
        return not errors

    # Phase 1: open every connection (at most *window* busy at once) and
    # send the *before* messages.
    while len(clients) < count and not errors:
        while counts["busy"] < window and len(clients) < count:
            open_one()
        pump(lambda: counts["busy"] < window)
    pump(lambda: counts["busy"] == 0)
    held = sum(client.phase == "waiting" for client in clients)
    # Phase 2: every connection is open; each sends the *after* messages.
    if not errors:
        for client in clients:
            begin(client, "second", after, len(before))
        pump(lambda: counts["done"] == count)
    for client in clients:
        close(client)
    sel.close()
    return {"connections": count, "held_open_at_once": held,
            "closed_by_server": counts["done"],
            "echoed_messages": counts["messages"],
            "echoed_bytes": counts["bytes"],
            "error_count": len(errors), "errors": errors[:20]}


def main(control_fd, port, params):
    """Run the clients; send the report (JSON) to the socket *control_fd*."""
    with socket.socket(fileno=control_fd) as control:
        report = {"crashed": "before the report was made"}
        try:
            report = run_clients(port, **params)
        except BaseException as exc:
            report = {"crashed": repr(exc)}
            raise
        finally:
            control.sendall(json.dumps(report).encode())


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3]))
