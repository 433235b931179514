"""The echo server of examples/echo_server.py under load, in one OS thread.

The server -- the example's ``serve`` and ``echo`` -- runs in micro-threads
of pytest's OS thread.  The clients run in a subprocess (``echo_clients.py``,
one non-blocking selectors loop), so that this OS thread runs nothing but the
server's micro-threads, and report what they saw over a socketpair:

* 1,000 concurrent clients, each sending messages of several sizes (1 byte to
  more than one ``recv_d`` chunk) and checking every byte echoed back;
* 10,000 connections held open at once, each echoing a message while all
  10,000 are open.

Native only: the deferring socket methods (``accept_d``, ``recv_d``,
``sendall_d``) exist only on the patched interpreter.
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

import micro_thread

if (micro_thread.IMPLEMENTATION != "native"
        or not hasattr(socket.socket, "recv_d")):
    pytest.skip("needs native micro-threads with the deferring socket "
                "methods (socket.socket has no recv_d here)",
                allow_module_level=True)

try:
    import resource
except ImportError:
    resource = None

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENTS = os.path.join(HERE, "echo_clients.py")


def _load_example(name):
    path = os.path.join(os.path.dirname(HERE), "examples", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


echo_server = _load_example("echo_server")

#: Seconds the server side waits for the clients' report.
REPORT_TIMEOUT = 90


# -- the server side (in pytest's process) --------------------------------

class ServerStats:
    """What the handlers saw: how many ran, how many at once, where; how
    often a blocking call in this OS thread pinned."""

    def __init__(self):
        self.open = 0
        self.max_open = 0
        self.started = 0
        self.finished = 0
        self.failed = []
        self.os_threads = set()
        self.pinned = None


def counting(stats, handler):
    """*handler*, counting its runs and the OS threads it runs in."""
    def counted(conn):
        stats.started += 1
        stats.open += 1
        stats.max_open = max(stats.max_open, stats.open)
        stats.os_threads.add(threading.get_ident())
        try:
            handler(conn)
        except BaseException as exc:
            stats.failed.append(repr(exc))
            raise
        finally:
            stats.open -= 1
            stats.finished += 1
    return counted


def serve_clients(**params):
    """Serve the client subprocess (``echo_clients.run_clients(**params)``)
    with the example's server in micro-threads of this OS thread.

    Return (the clients' report, the server's ServerStats).
    """
    stats = ServerStats()

    def main(listener):
        server = micro_thread.start(echo_server.serve, listener,
                                    counting(stats, echo_server.echo))
        ours, theirs = socket.socketpair()
        with ours, tempfile.TemporaryFile() as output:
            with theirs:
                proc = subprocess.Popen(
                    [sys.executable, CLIENTS, str(theirs.fileno()),
                     str(listener.getsockname()[1]), json.dumps(params)],
                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                    stdout=output, stderr=output)
            try:
                chunks = []
                with micro_thread.timeout(REPORT_TIMEOUT):
                    while data := ours.recv_d(65536):
                        chunks.append(data)
                returncode = proc.wait(timeout=30)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            output.seek(0)
            assert returncode == 0, (
                "the client subprocess failed:\n"
                + output.read().decode(errors="replace"))
        assert not server.done(), server.join()
        server.kill()
        with pytest.raises(micro_thread.MicroThreadExit):
            server.join()
        return json.loads(b"".join(chunks))

    pins = micro_thread.pin_count()
    with socket.create_server(("127.0.0.1", 0), backlog=4096) as listener:
        report = micro_thread.run(main, listener)
    stats.pinned = micro_thread.pin_count() - pins
    return report, stats


@pytest.fixture
def open_files():
    """raise_to(n): raise RLIMIT_NOFILE's soft limit to the hard limit (skip
    if that is below *n*); restored afterwards."""
    if resource is None:
        pytest.skip("no resource module (RLIMIT_NOFILE)")
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)

    def raise_to(needed):
        soft, hard = saved
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"RLIMIT_NOFILE hard limit is {hard}; this test "
                        f"needs {needed} file descriptors per process")
        target = hard if hard != resource.RLIM_INFINITY else max(soft, needed)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))

    yield raise_to
    resource.setrlimit(resource.RLIMIT_NOFILE, saved)


def check(report, stats, connections, messages, message_bytes):
    assert "crashed" not in report, report
    assert report["error_count"] == 0, report["errors"]
    assert report["connections"] == connections
    assert report["held_open_at_once"] == connections
    assert report["echoed_messages"] == messages
    assert report["echoed_bytes"] == message_bytes
    assert report["closed_by_server"] == connections
    # The server side: every connection had its handler, all of them open
    # at once, all finished cleanly, all in this one OS thread, and no
    # blocking call ran the scheduler nested instead of suspending.
    assert stats.failed == []
    assert stats.pinned == 0
    assert stats.started == connections
    assert stats.max_open == connections
    assert stats.finished == connections and stats.open == 0
    assert stats.os_threads == {threading.get_ident()}


def test_thousand_clients_every_byte_echoed(open_files):
    open_files(1000 + 100)
    before = [1, 64]
    after = [1500, 7, 16384, 65536, 100_000, 1]    # past one recv_d chunk
    count = 1000
    report, stats = serve_clients(count=count, before=before, after=after,
                                  window=count)
    check(report, stats, count, count * (len(before) + len(after)),
          count * (sum(before) + sum(after)))


def test_ten_thousand_connections_open_at_once(open_files):
    count = 10_000
    open_files(count + 100)
    before = [32]
    after = [64]
    report, stats = serve_clients(count=count, before=before, after=after,
                                  window=1000)
    check(report, stats, count, count * 2, count * (32 + 64))
