"""Deferring I/O for the pure-Python shim: the notifier and the ``*_d`` calls.

The native implementation adds deferring variants of blocking calls to the
interpreter (``time.sleep_d``, ``os.read_d``, ``socket.socket.recv_d``,
``io.FileIO.read_d``, ...).  This module gives the shim the same calls:
:func:`sleep_d`, :func:`read_d`, :func:`write_d`, :func:`close`, the
:class:`socket` class and :func:`socketpair`, and :func:`open`, whose file
objects have ``read_d``/``readline_d``/``write_d``.

Semantics (both implementations):

* A ``*_d`` call returns or raises exactly what its blocking counterpart
  would (``read_d`` returns bytes, ``b""`` at end of file; ``sendall_d``
  returns None; ``accept_d`` returns ``(socket, address)``; a refused
  ``connect_d`` raises ConnectionRefusedError ...).  Inside a micro_thread
  it suspends only that micro_thread while its OS thread's notifier waits;
  in the root (outside any micro_thread) it blocks like the ordinary call
  while driving the scheduler, as ``join()`` does.
* A socket timeout (``settimeout``) ends the wait with
  ``TimeoutError("timed out")``; a :func:`timeout` scope with its
  TimeoutError, ``kill()`` with MicroThreadExit at the call.  No wait is
  left registered afterwards.
* An fd closed while a micro_thread waits on it (:func:`close`, the close
  of a :class:`socket` or of a file from :func:`open`) fails the wait with
  ``OSError(EBADF)``.  A peer that resets gives ConnectionResetError (or
  BrokenPipeError on send); EINTR is retried (PEP 475) and an exception
  raised by a signal handler reaches the main micro_thread of ``run()``.
* Several micro-threads may wait on one fd; each item of data goes to
  exactly one of them.

How the shim does it: each scheduler has a :class:`_Notifier` (a
``select.poll`` object).  A ``*_d`` call first tries its operation without
blocking (``poll()`` with a zero timeout, ``MSG_DONTWAIT``, or a socket
timeout of 0 for the attempt); if it would block, it waits on a kernel
``_Waiter`` registered with the notifier and tries again when woken.  When
no task is ready the root waits in the notifier for the next timer, and
busy schedulers poll it without blocking once per round of the ready queue.
Regular files are always "ready": they are read and written directly.
``poll`` (rather than epoll) reports an fd closed behind the notifier's back
(``os.close``) as invalid, so such a waiter wakes and gets EBADF too.
"""

import _socket
import errno
import io
import math
import operator
import os
import select
import socket as _socket_module
import stat
import time

from . import _shim

__all__ = [
    "close", "open", "pin_count", "read_d", "set_pin_hook", "sleep_d",
    "socket", "socketpair", "write_d",
]

_ss = _socket.socket   # the C type: plain methods, without socket.py's
_DONTWAIT = getattr(_socket_module, "MSG_DONTWAIT", 0)
_AF_UNIX = getattr(_socket_module, "AF_UNIX", None)
#: Largest write to a pipe that cannot block once it polls writable.
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)
_READ_CHUNK = 64 * 1024
_CONNECTING = {errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN,
               errno.EALREADY}


# -- the notifier ---------------------------------------------------------

if hasattr(select, "poll"):
    _POLLIN, _POLLOUT = select.POLLIN, select.POLLOUT
    _POLLBAD = select.POLLERR | select.POLLHUP | select.POLLNVAL
    _new_poller = select.poll
else:  # Windows: select() on sockets
    _POLLIN, _POLLOUT, _POLLBAD = 1, 4, 8

    class _SelectPoller:
        """The subset of ``select.poll`` the notifier uses, on select()."""

        def __init__(self):
            self._fds = {}

        def register(self, fd, mask):
            self._fds[fd] = mask

        def unregister(self, fd):
            del self._fds[fd]

        def poll(self, timeout_ms=None):
            timeout = None if timeout_ms is None else timeout_ms / 1000
            readers = [fd for fd, m in self._fds.items() if m & _POLLIN]
            writers = [fd for fd, m in self._fds.items() if m & _POLLOUT]
            try:
                r, w, x = select.select(readers, writers, writers, timeout)
            except (OSError, ValueError):
                return [(fd, _POLLBAD) for fd in self._fds
                        if not _select_ok(fd)]
            events = {}
            for fd in r:
                events[fd] = events.get(fd, 0) | _POLLIN
            for fd in (*w, *x):
                events[fd] = events.get(fd, 0) | _POLLOUT
            return list(events.items())

    def _select_ok(fd):
        try:
            select.select([fd], [], [], 0)
        except (OSError, ValueError):
            return False
        return True

    _new_poller = _SelectPoller


class _Notifier:
    """The fds the tasks of one scheduler wait on, and their waiters.

    Only the task holding the scheduler's baton uses it.  A waiter is fired
    with True when its fd polls ready (or in error); the woken task then
    retries its operation, so a wake-up that finds nothing just waits again.
    One waiter per fd and direction is woken per poll, oldest first.
    """

    __slots__ = ("_poller", "_fds")

    def __init__(self):
        self._poller = _new_poller()
        self._fds = {}     # fd -> [readers, writers, registered mask]

    def __bool__(self):
        return bool(self._fds)

    def add(self, fd, writing, waiter):
        """Wake *waiter* when *fd* is readable (writable if *writing*)."""
        entry = self._fds.get(fd)
        if entry is None:
            entry = self._fds[fd] = [[], [], 0]
        entry[writing].append(waiter)
        self._update(fd, entry)

    def discard(self, fd, writing, waiter):
        """Stop waking *waiter* (no error if it is not waiting any more)."""
        entry = self._fds.get(fd)
        if entry is None:
            return
        try:
            entry[writing].remove(waiter)
        except ValueError:
            return
        self._update(fd, entry)

    def forget(self, fd):
        """Fail every waiter of *fd* with OSError(EBADF); unregister it."""
        entry = self._fds.pop(fd, None)
        if entry is None:
            return
        self._unregister(fd)
        for waiter in (*entry[0], *entry[1]):
            waiter.fail(OSError(errno.EBADF, os.strerror(errno.EBADF)))

    def poll(self, timeout):
        """Wait up to *timeout* seconds (None: forever); wake ready waiters.

        An exception raised by a signal handler meanwhile propagates.
        """
        if timeout is not None:
            timeout = math.ceil(timeout * 1000)
        for fd, events in self._poller.poll(timeout):
            entry = self._fds.get(fd)
            if entry is None:
                continue
            if events & (_POLLIN | _POLLBAD):
                self._wake_one(entry[0])
            if events & (_POLLOUT | _POLLBAD):
                self._wake_one(entry[1])
            self._update(fd, entry)

    @staticmethod
    def _wake_one(waiters):
        while waiters:
            if waiters.pop(0).fire(True):
                return

    def _update(self, fd, entry):
        mask = (_POLLIN if entry[0] else 0) | (_POLLOUT if entry[1] else 0)
        if mask == entry[2]:
            return
        if mask:
            self._poller.register(fd, mask)
            entry[2] = mask
        else:
            del self._fds[fd]
            self._unregister(fd)

    def _unregister(self, fd):
        try:
            self._poller.unregister(fd)
        except KeyError:
            pass


def _notifier(sched):
    notifier = sched.notifier
    if notifier is None:
        notifier = sched.notifier = _Notifier()
    return notifier


def _wait_fd(fd, writing, deadline, blocked_on):
    """Block the current task until *fd* polls ready for reading/writing.

    Returns True when woken by the notifier, False once *deadline* (a
    ``time.monotonic()`` time, or None) has passed.  kill(), throw() and
    timeout() scopes raise their exception; the wait is unregistered in
    every case.
    """
    sched = _shim._scheduler()
    notifier = _notifier(sched)
    waiter = _shim._Waiter()
    notifier.add(fd, writing, waiter)
    try:
        return _shim._block(waiter, blocked_on, deadline) is not None
    finally:
        notifier.discard(fd, writing, waiter)


def _ready(fd, writing):
    """True unless an operation on *fd* would block now.

    Invalid fds count as ready: the operation itself then raises.  Regular
    files always poll ready.
    """
    if not isinstance(fd, int) or fd < 0:
        return True
    poller = _new_poller()
    try:
        poller.register(fd, _POLLOUT if writing else _POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, OverflowError):
        return True


def _forget_fd(fd):
    """Wake this OS thread's waiters on *fd* with EBADF (before closing)."""
    sched = getattr(_shim._tls, "sched", None)
    if sched is not None and sched.notifier:
        sched.notifier.forget(fd)


def _byte_view(data):
    """A flat byte memoryview of *data*, or None if it has no such buffer."""
    try:
        view = memoryview(data)
    except TypeError:
        return None
    try:
        return view.cast("B") if view.format != "B" or view.ndim != 1 \
            else view
    except TypeError:
        view.release()
        return None


def _is_stream(fd):
    """True unless *fd* is a regular file or a block device."""
    try:
        mode = os.fstat(fd).st_mode
    except (OSError, TypeError, ValueError, OverflowError):
        return True
    return not (stat.S_ISREG(mode) or stat.S_ISBLK(mode))


# -- time and file descriptors --------------------------------------------

def sleep_d(seconds):
    """Deferring :func:`time.sleep`: wait *seconds*, return None.

    Takes the same arguments and raises the same errors as ``time.sleep``.
    In a micro_thread only the caller waits; in the root the scheduler runs
    meanwhile.  ``sleep_d(0)`` yields (the caller goes to the back of the
    ready queue).  A timeout() scope or kill() interrupts it.
    """
    if not isinstance(seconds, float):
        seconds = operator.index(seconds)
    if math.isnan(seconds):
        raise ValueError("Invalid value NaN (not a number)")
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    if seconds == 0:
        _shim._yield()
    else:
        _shim._block(_shim._Waiter(), "sleep_d", time.monotonic() + seconds)


def read_d(fd, n):
    """Deferring :func:`os.read`: read at most *n* bytes from *fd*.

    Returns the bytes read, ``b""`` at end of file; raises what ``os.read``
    raises (OSError with EBADF if *fd* is closed meanwhile).  Waits until
    *fd* is readable: only the calling micro_thread is suspended; in the
    root the scheduler runs meanwhile.  Regular files are read directly.
    """
    try:
        size = operator.index(n)
    except TypeError:
        size = 0
    if size <= 0:
        return os.read(fd, n)
    while True:
        if _ready(fd, False):
            try:
                return os.read(fd, n)
            except BlockingIOError:
                pass   # a non-blocking fd another OS thread read first
        _wait_fd(fd, False, None, f"read_d({fd})")


def write_d(fd, data):
    """Deferring :func:`os.write`: write the bytes-like *data* to *fd*.

    Returns the number of bytes written, like ``os.write``; raises what it
    raises (BrokenPipeError once the reader is gone, OSError with EBADF if
    *fd* is closed meanwhile).  Waits until *fd* is writable: only the
    calling micro_thread is suspended; in the root the scheduler runs
    meanwhile.  On a pipe, socket or terminal in blocking mode one call
    writes at most ``select.PIPE_BUF`` bytes (what poll() promises not to
    block), so loop to write everything; regular files take all of it.
    """
    view = _byte_view(data)
    if view is None or not view.nbytes:
        return os.write(fd, data)
    with view:
        if _is_stream(fd) and os.get_blocking(fd):
            view = view[:_PIPE_BUF]
        while True:
            if _ready(fd, True):
                try:
                    return os.write(fd, view)
                except BlockingIOError:
                    pass   # a non-blocking fd another OS thread filled
            _wait_fd(fd, True, None, f"write_d({fd})")


def close(fd):
    """Close the file descriptor *fd*, like :func:`os.close`.

    Micro-threads of this OS thread waiting on *fd* first get OSError with
    errno EBADF.  (Natively ``os.close`` itself does this.)
    """
    fd = operator.index(fd)
    _forget_fd(fd)
    os.close(fd)


# -- sockets ----------------------------------------------------------------

class socket(_socket_module.socket):
    """:class:`socket.socket` with deferring methods.

    ``recv_d``, ``recv_into_d``, ``recvfrom_d``, ``send_d``, ``sendall_d``,
    ``sendto_d``, ``accept_d`` and ``connect_d`` take the arguments and give
    the results and errors of their blocking counterparts, but wait only
    the calling micro_thread (see :mod:`micro_thread._shim_io`).  The
    socket's timeout applies: when it passes, ``TimeoutError("timed out")``;
    with a timeout of 0 (non-blocking) they behave exactly like the plain
    methods.  ``accept()`` and ``accept_d()`` return instances of this class.
    Closing the socket wakes micro-threads waiting on it with EBADF.
    """

    __slots__ = ()

    def _attempt(self, timeout, method, before, flags, after):
        """Call the plain *method* so that it cannot block."""
        if timeout is None and _DONTWAIT and isinstance(flags, int):
            return method(self, *before, flags | _DONTWAIT, *after)
        flag_args = () if flags is None else (flags,)
        _ss.settimeout(self, 0.0)
        try:
            return method(self, *before, *flag_args, *after)
        finally:
            _ss.settimeout(self, timeout)

    def _deferring(self, writing, name, method, before=(), flags=None,
                   after=()):
        """Run *method* like its plain call would, waiting cooperatively."""
        timeout = _ss.gettimeout(self)
        if timeout == 0.0:
            flag_args = () if flags is None else (flags,)
            return method(self, *before, *flag_args, *after)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                return self._attempt(timeout, method, before, flags, after)
            except BlockingIOError:
                pass
            self._wait(writing, deadline, name)

    def _wait(self, writing, deadline, name):
        fd = _ss.fileno(self)
        if not _wait_fd(fd, writing, deadline, f"socket.{name}({fd})"):
            raise TimeoutError("timed out")

    def recv_d(self, bufsize, flags=0):
        """Deferring ``recv(bufsize[, flags])``: return the bytes received.

        ``b""`` when the peer has closed; ConnectionResetError on a reset.
        """
        return self._deferring(False, "recv_d", _ss.recv, (bufsize,), flags)

    def recv_into_d(self, buffer, nbytes=0, flags=0):
        """Deferring ``recv_into(buffer[, nbytes[, flags]])``: return a count.
        """
        return self._deferring(False, "recv_into_d", _ss.recv_into,
                               (buffer, nbytes), flags)

    def recvfrom_d(self, bufsize, flags=0):
        """Deferring ``recvfrom(bufsize[, flags])``: return (bytes, address).
        """
        return self._deferring(False, "recvfrom_d", _ss.recvfrom,
                               (bufsize,), flags)

    def send_d(self, data, flags=0):
        """Deferring ``send(data[, flags])``: return the number of bytes sent.

        BrokenPipeError (or ConnectionResetError) if the peer is gone.
        """
        return self._deferring(True, "send_d", _ss.send, (data,), flags)

    def sendto_d(self, data, flags_or_address, *address):
        """Deferring ``sendto(data[, flags], address)``: return a count."""
        if not address:
            flags, address = 0, flags_or_address
        elif len(address) == 1:
            flags, address = flags_or_address, address[0]
        else:
            raise TypeError("sendto_d() takes 2 or 3 arguments "
                            f"({2 + len(address)} given)")
        return self._deferring(True, "sendto_d", _ss.sendto, (data,), flags,
                               (address,))

    def sendall_d(self, data, flags=0):
        """Deferring ``sendall(data[, flags])``: send everything, return None.

        The socket timeout bounds the whole call, as for ``sendall``.
        """
        timeout = _ss.gettimeout(self)
        view = _byte_view(data)
        if timeout == 0.0 or view is None or not view.nbytes:
            return _ss.sendall(self, data, flags)
        deadline = None if timeout is None else time.monotonic() + timeout
        with view:
            sent = 0
            while sent < view.nbytes:
                try:
                    sent += self._attempt(timeout, _ss.send, (view[sent:],),
                                          flags, ())
                    continue
                except BlockingIOError:
                    pass
                self._wait(True, deadline, "sendall_d")
        return None

    def accept_d(self):
        """Deferring ``accept()``: return ``(socket, address)``.

        The new socket is an instance of this class, so its methods defer
        too.
        """
        fd, addr = self._deferring(False, "accept_d", _ss._accept)
        return self._adopt(fd), addr

    def accept(self):
        """accept() -> (socket object, address info), a :class:`socket`."""
        fd, addr = self._accept()
        return self._adopt(fd), addr

    def _adopt(self, fd):
        sock = socket(self.family, self.type, self.proto, fileno=fd)
        if _socket_module.getdefaulttimeout() is None and self.gettimeout():
            sock.setblocking(True)
        return sock

    def connect_d(self, address):
        """Deferring ``connect(address)``: return None once connected.

        Raises what ``connect`` raises (ConnectionRefusedError, ...), and
        ``TimeoutError("timed out")`` when the socket timeout passes.
        AF_UNIX sockets connect at once (a full backlog blocks).
        """
        timeout = _ss.gettimeout(self)
        if timeout == 0.0 or self.family == _AF_UNIX:
            return _ss.connect(self, address)
        deadline = None if timeout is None else time.monotonic() + timeout
        _ss.settimeout(self, 0.0)
        try:
            err = _ss.connect_ex(self, address)
        finally:
            _ss.settimeout(self, timeout)
        if err in _CONNECTING:
            self._wait(True, deadline, "connect_d")
            err = _ss.getsockopt(self, _socket_module.SOL_SOCKET,
                                 _socket_module.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        return None

    def _real_close(self, _ss=_ss):
        fd = _ss.fileno(self)
        if fd >= 0:
            _forget_fd(fd)
        _ss.close(self)


def socketpair(family=None, type=_socket_module.SOCK_STREAM, proto=0):
    """Like :func:`socket.socketpair`, but return two :class:`socket` s."""
    if family is None:
        family = _AF_UNIX if _AF_UNIX is not None else _socket_module.AF_INET
    a, b = _socket_module.socketpair(family, type, proto)
    return (socket(family, type, proto, a.detach()),
            socket(family, type, proto, b.detach()))


# -- file objects ---------------------------------------------------------

class _DLock:
    """A re-entrant FIFO lock of one file object's ``*_d`` calls.

    A buffered file holds its own (OS-level) lock while it calls its raw
    file, so a micro_thread suspended inside ``read_d`` keeps that lock.
    Other micro-threads of the same OS thread must wait for it
    cooperatively, not on the OS lock: they queue here.  Tasks of other OS
    threads are not queued (the OS lock serialises them).
    """

    __slots__ = ("_owner", "_count", "_waiters")

    def __init__(self):
        self._owner = None
        self._count = 0
        self._waiters = []     # [(waiter, task)]

    def acquire(self, task):
        """Take the lock for *task*; False if it belongs to another thread.
        """
        owner = self._owner
        if owner is task:
            self._count += 1
            return True
        if owner is None:
            self._owner, self._count = task, 1
            return True
        if owner._sched is not task._sched:
            return False
        waiter = _shim._Waiter()
        entry = (waiter, task)
        self._waiters.append(entry)
        try:
            waiter.wait("file lock")
        except BaseException:
            if entry in self._waiters:
                self._waiters.remove(entry)
            raise
        return True    # release() made us the owner

    def release(self):
        """Release once; at zero hand the lock to the oldest live waiter."""
        self._count -= 1
        if self._count:
            return
        self._owner = None
        while self._waiters:
            waiter, task = self._waiters.pop(0)
            if waiter.fire(None):
                self._owner, self._count = task, 1
                return

    def fail_waiters(self):
        """Fail the queued tasks with OSError(EBADF): the file is closing."""
        waiters, self._waiters = self._waiters, []
        for waiter, _ in waiters:
            waiter.fail(OSError(errno.EBADF, os.strerror(errno.EBADF)))


class _DCall:
    """Context of one ``*_d`` call (or close) on a file object.

    Holds the object's :class:`_DLock` if *locked*; if *defer*, its raw file
    waits cooperatively (instead of blocking) for the calling task only.
    """

    __slots__ = ("_raw", "_lock", "_defer", "_task")

    def __init__(self, raw, locked, defer=True):
        self._raw = raw
        self._lock = raw._d_lock if locked and raw is not None else None
        self._defer = defer
        self._task = None

    def __enter__(self):
        raw = self._raw
        if raw is None:
            return
        task = self._task = _shim._current_task()
        if self._lock is not None and not self._lock.acquire(task):
            self._lock = None
        if self._defer:
            tasks = raw._d_tasks
            tasks[task] = tasks.get(task, 0) + 1

    def __exit__(self, exc_type, exc, tb):
        raw = self._raw
        if raw is None:
            return
        if self._defer:
            tasks = raw._d_tasks
            count = tasks.pop(self._task) - 1
            if count:
                tasks[self._task] = count
        if self._lock is not None:
            self._lock.release()


class FileIO(io.FileIO):
    """:class:`io.FileIO` with ``read_d``, ``readline_d`` and ``write_d``.

    On a pipe, socket, FIFO or terminal they wait cooperatively for the fd;
    regular files are read and written directly.  Closing the file wakes
    micro-threads waiting on it with EBADF.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._d_tasks = {}     # tasks inside a *_d call -> nesting depth
        self._d_lock = _DLock()
        self._stream = None

    def _deferring(self):
        """True if the calling task is in a *_d call on a stream fd."""
        if not self._d_tasks or _shim._current_task() not in self._d_tasks:
            return False
        if self._stream is None:
            self._stream = _is_stream(self.fileno())
        return self._stream

    def _wait(self, writing):
        fd = self.fileno()
        while not _ready(fd, writing):
            _wait_fd(fd, writing, None,
                     f"{'write' if writing else 'read'}_d(fd {fd})")

    def readinto(self, buffer):
        """Same as :meth:`io.FileIO.readinto`."""
        if not self._deferring():
            return super().readinto(buffer)
        while True:
            self._wait(False)
            count = super().readinto(buffer)
            if count is not None:
                return count

    def read(self, size=-1):
        """Same as :meth:`io.FileIO.read`."""
        if not self._deferring():
            return super().read(size)
        if size is None or size < 0:
            return self._readall_d()
        while True:
            self._wait(False)
            data = super().read(size)
            if data is not None:
                return data

    def readall(self):
        """Same as :meth:`io.FileIO.readall`."""
        if not self._deferring():
            return super().readall()
        return self._readall_d()

    def _readall_d(self):
        chunks = []
        while True:
            self._wait(False)
            chunk = super().read(_READ_CHUNK)
            if chunk is None:
                continue
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def write(self, b):
        """Same as :meth:`io.FileIO.write`."""
        if not self._deferring():
            return super().write(b)
        view = _byte_view(b)
        if view is None:
            return super().write(b)
        with view:
            if os.get_blocking(self.fileno()):
                view = view[:_PIPE_BUF]
            while True:
                self._wait(True)
                count = super().write(view)
                if count is not None:
                    return count

    def read_d(self, size=-1):
        """Deferring :meth:`read`: at most *size* bytes (-1: until EOF)."""
        with _DCall(self, locked=False):
            return self.read(size)

    def readline_d(self, size=-1):
        """Deferring :meth:`readline`."""
        with _DCall(self, locked=False):
            return self.readline(size)

    def write_d(self, b):
        """Deferring :meth:`write`: return the number of bytes written.

        Like :func:`write_d`, on a pipe, socket or terminal in blocking mode
        one call writes at most ``select.PIPE_BUF`` bytes.
        """
        with _DCall(self, locked=False):
            return self.write(b)

    def close(self):
        """Close the file; waiters on its fd get OSError(EBADF) first."""
        if not self.closed and self.closefd:
            _forget_fd(self.fileno())
        super().close()


class _LayerD:
    """``*_d`` methods of the buffered and text file classes."""

    __slots__ = ()

    def _d_raw(self):
        """Our FileIO under this object, or None."""
        try:
            raw = self.buffer.raw if isinstance(self, io.TextIOBase) \
                else self.raw
        except (AttributeError, ValueError):
            return None
        return raw if isinstance(raw, FileIO) else None

    def read_d(self, size=-1):
        """Deferring :meth:`read`; returns what ``read(size)`` returns."""
        with _DCall(self._d_raw(), locked=True):
            return self.read(size)

    def readline_d(self, size=-1):
        """Deferring :meth:`readline`; returns what ``readline`` returns."""
        with _DCall(self._d_raw(), locked=True):
            return self.readline(size)

    def write_d(self, b):
        """Deferring :meth:`write`; returns what ``write(b)`` returns.

        Writes through to the fd only as far as ``write`` would (call
        :meth:`flush` or use line buffering for the rest).
        """
        with _DCall(self._d_raw(), locked=True):
            return self.write(b)

    def close(self):
        """Close the file; micro-threads waiting on it get OSError(EBADF)."""
        raw = self._d_raw()
        if raw is None or raw.closed:
            return super().close()
        if raw.closefd:
            _forget_fd(raw.fileno())
            raw._d_lock.fail_waiters()
        with _DCall(raw, locked=True, defer=False):
            return super().close()


class BufferedReader(_LayerD, io.BufferedReader):
    """:class:`io.BufferedReader` with ``read_d``/``readline_d``/``write_d``.
    """


class BufferedWriter(_LayerD, io.BufferedWriter):
    """:class:`io.BufferedWriter` with ``read_d``/``readline_d``/``write_d``.
    """


class BufferedRandom(_LayerD, io.BufferedRandom):
    """:class:`io.BufferedRandom` with ``read_d``/``readline_d``/``write_d``.
    """


class TextIOWrapper(_LayerD, io.TextIOWrapper):
    """:class:`io.TextIOWrapper` with ``read_d``/``readline_d``/``write_d``.
    """


def open(file, mode="r", buffering=-1, encoding=None, errors=None,
         newline=None, closefd=True, opener=None):
    """Like the builtin :func:`open`, but the file objects defer.

    Takes the same arguments and returns the same kinds of object (FileIO,
    BufferedReader, BufferedWriter, BufferedRandom, TextIOWrapper -- here
    subclasses), which also have ``read_d(size=-1)``,
    ``readline_d(size=-1)`` and ``write_d(b)``: they return what ``read``,
    ``readline`` and ``write`` return, but on a pipe, socket or terminal
    wait only the calling micro_thread.  (Natively this is the builtin
    ``open``.)
    """
    if not isinstance(file, int):
        file = os.fspath(file)
    if not isinstance(file, (str, bytes, int)):
        raise TypeError(f"invalid file: {file!r}")
    if not isinstance(mode, str):
        raise TypeError(f"invalid mode: {mode!r}")
    if not isinstance(buffering, int):
        raise TypeError(f"invalid buffering: {buffering!r}")
    if encoding is not None and not isinstance(encoding, str):
        raise TypeError(f"invalid encoding: {encoding!r}")
    if errors is not None and not isinstance(errors, str):
        raise TypeError(f"invalid errors: {errors!r}")
    modes = set(mode)
    if modes - set("axrwb+t") or len(mode) > len(modes):
        raise ValueError(f"invalid mode: {mode!r}")
    creating, reading = "x" in modes, "r" in modes
    writing, appending = "w" in modes, "a" in modes
    updating, text, binary = "+" in modes, "t" in modes, "b" in modes
    if text and binary:
        raise ValueError("can't have text and binary mode at once")
    if creating + reading + writing + appending > 1:
        raise ValueError("can't have read/write/append mode at once")
    if not (creating or reading or writing or appending):
        raise ValueError("must have exactly one of read/write/append mode")
    if binary and encoding is not None:
        raise ValueError("binary mode doesn't take an encoding argument")
    if binary and errors is not None:
        raise ValueError("binary mode doesn't take an errors argument")
    if binary and newline is not None:
        raise ValueError("binary mode doesn't take a newline argument")
    if binary and buffering == 1:
        import warnings
        warnings.warn("line buffering (buffering=1) isn't supported in "
                      "binary mode, the default buffer size will be used",
                      RuntimeWarning, 2)
    raw_mode = ("x" if creating else "") + ("r" if reading else "") + \
        ("w" if writing else "") + ("a" if appending else "") + \
        ("+" if updating else "")
    raw = result = FileIO(file, raw_mode, closefd, opener=opener)
    try:
        line_buffering = False
        if buffering == 1 or buffering < 0 and raw.isatty():
            buffering = -1
            line_buffering = True
        if buffering < 0:
            buffering = getattr(raw, "_blksize", 0)
            if buffering <= 1:
                buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if binary:
                return result
            raise ValueError("can't have unbuffered text I/O")
        if updating:
            result = BufferedRandom(raw, buffering)
        elif creating or writing or appending:
            result = BufferedWriter(raw, buffering)
        else:
            result = BufferedReader(raw, buffering)
        if binary:
            return result
        encoding = io.text_encoding(encoding)
        result = TextIOWrapper(result, encoding, errors, newline,
                               line_buffering)
        result.mode = mode
        return result
    except BaseException:
        result.close()
        raise


# -- pinning ----------------------------------------------------------------

_pin_hook = None


def pin_count():
    """Return how many deferring calls of this OS thread were pinned.

    Natively a micro_thread is *pinned* when a C frame between a ``*_d``
    call and the micro_thread's start keeps it from suspending (``sorted(
    key=...)``, ``list(map(...))``): the call completes anyway, running the
    scheduler nested, and is counted here.  The shim never pins (each
    micro_thread has an OS thread of its own): always 0.
    """
    return 0


def set_pin_hook(hook):
    """Set the function called as ``hook(microthread, what)`` on a pin.

    Natively it runs on the pinned stack, before the pinned call waits, so
    ``traceback.extract_stack()`` in it shows the offending path; *what* is
    a short text naming the call.  None removes the hook.  The shim never
    pins: the hook is accepted and never called.
    """
    global _pin_hook
    if hook is not None and not callable(hook):
        raise TypeError("pin hook must be callable or None, "
                        f"not {type(hook).__name__}")
    _pin_hook = hook


for _cls in (socket, FileIO, BufferedReader, BufferedWriter, BufferedRandom,
             TextIOWrapper):
    _cls.__module__ = "micro_thread"
del _cls
