"""An echo server in plain blocking style: one micro-thread per connection.

Every connection gets its own micro-thread running an ordinary loop --
``data = conn.recv_d(65536)``, ``conn.sendall_d(data)`` -- and the accept
loop is just as plain.  A ``*_d`` call that would block suspends only the
micro-thread that made it; the OS thread's epoll notifier waits for the
socket, so thousands of connections are served by this one OS thread.

Needs the patched interpreter (the deferring socket methods are native)::

    build/python examples/echo_server.py --port 7000
    echo hello | nc -q1 127.0.0.1 7000

``serve(listener)`` is reused by ``tests/test_echo.py`` and
``perf/bench_echo.py``.
"""

import argparse
import socket
import sys

import micro_thread

#: The most bytes one ``recv_d`` asks for.
CHUNK = 65536


def echo(conn):
    """Send back everything *conn* receives until the peer shuts it down.

    Then close *conn*.
    """
    with conn:
        while data := conn.recv_d(CHUNK):
            conn.sendall_d(data)


def serve(listener, handler=echo):
    """Accept connections on *listener* forever, ``handler(conn)`` for each.

    Each handler runs in a micro-thread of its own.  Call this in a
    micro-thread (``micro_thread.run(serve, listener)``); it returns only
    by an exception, or when it is killed.
    """
    while True:
        conn, _address = listener.accept_d()
        micro_thread.start(handler, conn)


def main(argv=None):
    """Listen where the command line says and serve until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0,
                        help="TCP port; 0 (the default) picks a free one")
    parser.add_argument("--backlog", type=int, default=4096,
                        help="listen() backlog (default: %(default)s)")
    args = parser.parse_args(argv)
    if (micro_thread.IMPLEMENTATION != "native"
            or not hasattr(socket.socket, "recv_d")):
        sys.exit("echo_server.py needs native micro-threads and deferring "
                 "socket methods (socket.socket.recv_d): run it with "
                 "build/python")
    with socket.create_server((args.host, args.port),
                              backlog=args.backlog) as listener:
        host, port = listener.getsockname()[:2]
        print(f"echo server on {host} port {port}", flush=True)
        try:
            micro_thread.run(serve, listener)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
