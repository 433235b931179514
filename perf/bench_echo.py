"""Echo server: server CPU time per echoed request, micro_thread vs its peers.

A server process (one OS thread) echoes 64-byte messages on 1,000 loopback
connections; each connection does strict ping-pong (the next message only
after the echo of the previous one is back).  Load generator processes
(plain ``select.epoll`` loops, ``--load-processes``, 2 by default) drive the
connections.  The value pyperf reports is the **server process's CPU time
(user + system) per echoed request**: the sum over the server's threads of
the scheduler's run time (``/proc/PID/task/*/schedstat``, in ns) across the
measured requests, divided by their number.  The load generators' CPU time
is not counted.

Servers (each a plain, idiomatic echo loop reading up to 65,536 bytes):

* echo_micro_thread        -- ``examples/echo_server.py``: a micro-thread per
                              connection, ``recv_d`` / ``sendall_d``,
                              ``accept_d`` (patched interpreter only)
* echo_asyncio_streams     -- ``asyncio.start_server``, StreamReader.read /
                              StreamWriter.write + drain
* echo_uvloop_streams      -- the same on uvloop's event loop
* echo_gevent_streamserver -- ``gevent.server.StreamServer``, a greenlet per
                              connection, ``recv`` / ``sendall``
* echo_epoll_loop          -- a hand-written level-triggered ``select.epoll``
                              loop (the floor for Python code)

A benchmark whose library is missing is skipped (with a note on stderr); the
micro_thread server runs only on an interpreter with the native
``_micro_thread`` kernel and ``socket.socket.recv_d``.

    python bench_echo.py --fast -o results/echo.json
    python bench_echo.py --probe        # one quick measurement per server,
                                        # with the load generators' CPU time
                                        # and the server's CPU utilisation

Each pyperf worker process starts its own server and load generators, opens
and warms the connections (one echo each), then measures; the processes end
with the worker.  Internally the script is also the server
(``bench_echo.py _server KIND FD``) and the load generator (``bench_echo.py
_load PORT CONNECTIONS SIZE``).
"""

import atexit
import os
import select
import socket
import subprocess
import sys
import time

from _common import have

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")

CONNECTIONS = 1000
MESSAGE_SIZE = 64
LOAD_PROCESSES = 2
BACKLOG = 4096
CHUNK = 65536
#: Seconds without an echo after which a load generator gives up.
STALL_TIMEOUT = 30

#: benchmark name -> server kind
BENCHMARKS = {
    "echo_micro_thread": "micro_thread",
    "echo_asyncio_streams": "asyncio",
    "echo_uvloop_streams": "uvloop",
    "echo_gevent_streamserver": "gevent",
    "echo_epoll_loop": "epoll",
}


def unavailable(kind):
    """Why the *kind* server cannot run here, or None if it can."""
    if kind == "micro_thread":
        if not have("_micro_thread"):
            return "no native _micro_thread kernel"
        if not hasattr(socket.socket, "recv_d"):
            return "socket.socket has no recv_d"
    elif kind in ("uvloop", "gevent") and not have(kind):
        return "not installed"
    return None


# -- the servers (each in a process of its own: _server KIND FD) ----------

def serve_micro_thread(listener):
    import micro_thread
    if micro_thread.IMPLEMENTATION != "native":
        raise SystemExit("the micro_thread echo server needs the native "
                         "implementation")
    sys.path.insert(0, EXAMPLES)
    import echo_server
    micro_thread.run(echo_server.serve, listener)


async def _asyncio_echo(reader, writer):
    while data := await reader.read(CHUNK):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _asyncio_serve(listener):
    import asyncio
    server = await asyncio.start_server(_asyncio_echo, sock=listener,
                                        backlog=BACKLOG)
    await server.serve_forever()


def serve_asyncio(listener):
    import asyncio
    asyncio.run(_asyncio_serve(listener))


def serve_uvloop(listener):
    import asyncio
    import uvloop
    asyncio.run(_asyncio_serve(listener), loop_factory=uvloop.new_event_loop)


def serve_gevent(listener):
    import gevent.socket
    from gevent.server import StreamServer

    def echo(conn, _address):
        with conn:
            while data := conn.recv(CHUNK):
                conn.sendall(data)

    gsock = gevent.socket.socket(listener.family, listener.type,
                                 listener.proto, fileno=listener.detach())
    StreamServer(gsock, echo).serve_forever()


def serve_epoll(listener):
    """Level-triggered epoll: recv, send; EPOLLOUT only after a short send."""
    listener.setblocking(False)
    lfd = listener.fileno()
    epoll = select.epoll()
    epoll.register(lfd, select.EPOLLIN)
    conns = {}
    unsent = {}
    EPOLLIN = select.EPOLLIN
    EPOLLOUT = select.EPOLLOUT

    def drop(fd):
        epoll.unregister(fd)
        unsent.pop(fd, None)
        conns.pop(fd).close()

    while True:
        for fd, events in epoll.poll():
            if fd == lfd:
                while True:
                    try:
                        conn, _address = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conns[conn.fileno()] = conn
                    epoll.register(conn.fileno(), EPOLLIN)
                continue
            conn = conns[fd]
            try:
                if events & EPOLLOUT:
                    data = unsent.pop(fd)
                else:
                    data = conn.recv(CHUNK)
                    if not data:
                        drop(fd)
                        continue
                sent = conn.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                drop(fd)
                continue
            if sent < len(data):
                unsent[fd] = data[sent:]
                epoll.modify(fd, EPOLLOUT)
            elif events & EPOLLOUT:
                epoll.modify(fd, EPOLLIN)


SERVERS = {
    "micro_thread": serve_micro_thread,
    "asyncio": serve_asyncio,
    "uvloop": serve_uvloop,
    "gevent": serve_gevent,
    "epoll": serve_epoll,
}


def server_main(kind, fd):
    listener = socket.socket(fileno=fd)
    try:
        SERVERS[kind](listener)
    except KeyboardInterrupt:
        pass


# -- the load generator (_load PORT CONNECTIONS SIZE) ---------------------

def load_main(port, count, size):
    """Open *count* connections, echo one message on each, print "ready";
    then for each line N on stdin make N requests (ping-pong per
    connection, all connections at once) and print "done CPU_SECONDS"."""
    message = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port),
                                        timeout=STALL_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks.append(sock)
    for sock in socks:                  # warm up: one echo on each
        sock.sendall(message)
        got = b""
        while len(got) < size:
            try:
                data = sock.recv(CHUNK)
            except TimeoutError:
                raise SystemExit(f"load: no echo for {STALL_TIMEOUT} s")
            if not data:
                raise SystemExit("load: the server closed a connection")
            got += data
        if got != message:
            raise SystemExit("load: wrong echo")
    epoll = select.epoll()
    fds = []
    for sock in socks:
        sock.setblocking(False)
        epoll.register(sock.fileno(), select.EPOLLIN)
        fds.append(sock.fileno())
    read = os.read
    write = os.write
    poll = epoll.poll
    partial = {}
    print("ready", flush=True)

    for line in sys.stdin:
        requests = int(line)
        sent = min(requests, count)
        for fd in fds[:sent]:
            write(fd, message)
        done = 0
        while done < requests:
            ready = poll(STALL_TIMEOUT)
            if not ready:
                raise SystemExit(f"load: no echo for {STALL_TIMEOUT} s")
            for fd, _events in ready:
                data = read(fd, CHUNK)
                if data != message:
                    if not data:
                        raise SystemExit("load: the server closed a "
                                         "connection")
                    data = partial.pop(fd, b"") + data
                    if len(data) < size and message.startswith(data):
                        partial[fd] = data
                        continue
                    if data != message:
                        raise SystemExit(f"load: wrong echo {data[:80]!r}")
                done += 1
                if sent < requests:
                    write(fd, message)
                    sent += 1
        print("done", time.process_time(), flush=True)


# -- the benchmark (in each pyperf worker) --------------------------------

#: Whether the kernel has per-task run time in ns (CONFIG_SCHED_INFO).
SCHEDSTAT = os.path.exists("/proc/self/schedstat")


def cpu_seconds(pid):
    """CPU time (user + system) of process *pid* so far, all its threads.

    The scheduler's run time in ns (/proc/PID/task/TID/schedstat); without
    schedstat, utime + stime from /proc/PID/stat (clock ticks)."""
    if not SCHEDSTAT:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return ((int(fields[11]) + int(fields[12]))
                / os.sysconf("SC_CLK_TCK"))
    task_dir = f"/proc/{pid}/task"
    total = 0
    for tid in os.listdir(task_dir):
        try:
            with open(f"{task_dir}/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:       # the thread has just exited
            pass
    return total / 1e9


class EchoSession:
    """A server process and its load generators, connected and warm."""

    def __init__(self, kind, connections, size, load_processes):
        self.kind = kind
        self.procs = []
        atexit.register(self.close)
        with socket.create_server(("127.0.0.1", 0),
                                  backlog=BACKLOG) as listener:
            port = listener.getsockname()[1]
            self.server = subprocess.Popen(
                [sys.executable, __file__, "_server", kind,
                 str(listener.fileno())], pass_fds=[listener.fileno()])
        self.procs.append(self.server)
        self.loads = []
        self.load_cpu = [0.0] * load_processes
        self.shares = [connections // load_processes
                       + (i < connections % load_processes)
                       for i in range(load_processes)]
        for share in self.shares:
            load = subprocess.Popen(
                [sys.executable, __file__, "_load", str(port), str(share),
                 str(size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                text=True, bufsize=1)
            self.procs.append(load)
            self.loads.append(load)
        for load in self.loads:
            self._expect(load, "ready")

    def _expect(self, load, word):
        line = load.stdout.readline()
        if not line.startswith(word):
            self.close()
            raise RuntimeError(f"{self.kind}: a load generator said "
                               f"{line!r} instead of {word!r}")
        return line.split()[1:]

    def check_one_thread(self):
        threads = len(os.listdir(f"/proc/{self.server.pid}/task"))
        if threads != 1:
            raise RuntimeError(f"the {self.kind} server has {threads} OS "
                               f"threads, not one")

    def measure(self, requests):
        """Make *requests* echo requests; return (server CPU seconds, load
        generators' CPU seconds, wall seconds)."""
        total = sum(self.shares)
        parts = [requests * share // total for share in self.shares]
        parts[0] += requests - sum(parts)
        t0 = time.perf_counter()
        cpu0 = cpu_seconds(self.server.pid)
        for load, part in zip(self.loads, parts):
            load.stdin.write(f"{part}\n")
            load.stdin.flush()
        load_cpu = [float(self._expect(load, "done")[0])
                    for load in self.loads]
        cpu1 = cpu_seconds(self.server.pid)
        wall = time.perf_counter() - t0
        if self.server.poll() is not None:
            raise RuntimeError(f"the {self.kind} server exited "
                               f"({self.server.returncode})")
        self.check_one_thread()
        load_delta = sum(load_cpu) - sum(self.load_cpu)
        self.load_cpu = load_cpu
        return cpu1 - cpu0, load_delta, wall

    def close(self):
        for load in self.loads if hasattr(self, "loads") else ():
            if load.stdin and not load.stdin.closed:
                try:
                    load.stdin.close()
                except OSError:
                    pass
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []


_sessions = {}


def bench_echo(loops, kind, options):
    """Server CPU seconds for *loops* echo requests."""
    session = _sessions.get(kind)
    if session is None:
        session = _sessions[kind] = EchoSession(
            kind, options.connections, options.message_size,
            options.load_processes)
    server_cpu, _load_cpu, _wall = session.measure(loops)
    return server_cpu


def probe(options, kinds):
    """Print one measurement per server, with the load generators' CPU time
    and the server's CPU utilisation (server CPU / wall time)."""
    print(f"{options.connections} connections, {options.message_size}-byte "
          f"messages, {options.load_processes} load processes, "
          f"{options.probe_requests} requests per measurement, 3 "
          f"measurements after a warm-up")
    print(f"{'server':<14} {'server CPU/req':>15} {'load CPU/req':>13} "
          f"{'req/s':>9} {'server CPU/wall':>16}")
    for kind in kinds:
        session = EchoSession(kind, options.connections,
                              options.message_size, options.load_processes)
        try:
            session.measure(options.probe_requests // 4)
            for _ in range(3):
                server_cpu, load_cpu, wall = session.measure(
                    options.probe_requests)
                n = options.probe_requests
                print(f"{kind:<14} {server_cpu / n * 1e6:12.2f} us "
                      f"{load_cpu / n * 1e6:10.2f} us {n / wall:9.0f} "
                      f"{server_cpu / wall:15.0%}", flush=True)
        finally:
            session.close()


def add_cmdline_args(cmd, args):
    cmd.extend(("--connections", str(args.connections),
                "--message-size", str(args.message_size),
                "--load-processes", str(args.load_processes)))


def main():
    import pyperf

    # At least 0.4 s of server CPU per value (pyperf's default is 0.1 s): the
    # first and last requests of a value (all 1,000 connections sending at
    # once, then draining) are cheaper per request than the steady state,
    # and at 0.1 s they were ~25% of a value's requests for asyncio.
    runner = pyperf.Runner(add_cmdline_args=add_cmdline_args, min_time=0.4)
    parser = runner.argparser
    parser.add_argument("--connections", type=int, default=CONNECTIONS,
                        help="concurrent connections (default: "
                             "%(default)s)")
    parser.add_argument("--message-size", type=int, default=MESSAGE_SIZE,
                        help="bytes per message (default: %(default)s)")
    parser.add_argument("--load-processes", type=int, default=LOAD_PROCESSES,
                        help="load generator processes (default: "
                             "%(default)s)")
    parser.add_argument("--probe", action="store_true",
                        help="no pyperf run: print one quick measurement "
                             "per server, with the load's CPU time")
    parser.add_argument("--probe-requests", type=int, default=200_000)
    parser.add_argument("--servers", nargs="+", choices=sorted(SERVERS),
                        help="only these servers")
    options = runner.parse_args()
    runner.metadata["description"] = (
        "Echo server: server CPU time (user+sys) per echoed request, "
        f"{options.message_size}-byte messages, {options.connections} "
        "loopback connections in ping-pong: micro_thread vs asyncio, "
        "uvloop, gevent, a hand-written epoll loop")
    metadata = {"echo_connections": options.connections,
                "echo_message_bytes": options.message_size,
                "echo_load_processes": options.load_processes}

    skipped = []
    chosen = []
    for name, kind in BENCHMARKS.items():
        if options.servers and kind not in options.servers:
            continue
        why = unavailable(kind)
        if why:
            skipped.append(f"{kind} ({why})")
        else:
            chosen.append((name, kind))
    if skipped and not options.worker:
        print("bench_echo: skipped " + "; ".join(skipped), file=sys.stderr)
    if options.probe:
        probe(options, [kind for _name, kind in chosen])
        return
    for name, kind in chosen:
        runner.bench_time_func(name, bench_echo, kind, options,
                               metadata=metadata)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_server"]:
        server_main(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1:2] == ["_load"]:
        load_main(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
