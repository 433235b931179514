/* Deferring reads and writes of file descriptors: the common part of
   os.read_d()/os.write_d() and of the io objects' read_d()/write_d().

   An fd that the notifier can wait for (pipe, socket, terminal, ...) is
   polled first: if ready, the call is made at once; if not, the call
   waits with PyDeferred_WaitFd() and is made when the fd is ready (its
   completion function polls again, since another reader may have been
   faster).  This works whether or not the fd is in non-blocking mode, and
   never changes that mode (it belongs to the open file description, which
   other processes may share).  A write to an fd in blocking mode is at
   most PIPE_BUF bytes long, which poll() guarantees not to block; like
   os.write() it returns how much it wrote.

   A regular file or block device, for which poll() always says "ready"
   although the call may wait for the disk, is read or written on a worker
   thread with PyDeferred_Offload(). */

#include "Python.h"
#include "pycore_fileutils.h"     // _PY_READ_MAX
#include "pycore_microthread.h"   // _PyDeferred_ReadFd()
#include "pycore_time.h"          // PyTime_MonotonicRaw()

#ifdef HAVE_POLL_H
#  include <poll.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>               // PIPE_BUF
#include <sys/stat.h>
#include <unistd.h>

#ifndef PIPE_BUF
#  define PIPE_BUF 512
#endif

enum { FD_POLLABLE, FD_DISK };

/* 1 (FD_DISK) if fd is a regular file or a block device, which the
   notifier cannot wait for, 0 (FD_POLLABLE) if not, -1 with OSError if it
   is not open.  Shared with the io module's deferring methods. */
int
_PyDeferred_FdIsDisk(int fd)
{
    struct _Py_stat_struct st;
    int res;
    Py_BEGIN_ALLOW_THREADS
    res = _Py_fstat_noraise(fd, &st);
    Py_END_ALLOW_THREADS
    if (res < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) ? FD_DISK : FD_POLLABLE;
}

/* 1 if fd is ready for writing (reading) now, 0 if not, -1 with OSError:
   EBADF for an fd that is not open, or not open for that direction --
   poll() would never report it ready, where read() or write() fails at
   once. */
int
_PyDeferred_FdReady(int fd, int writing)
{
    struct pollfd p = {fd, (short)(writing ? POLLOUT : POLLIN), 0};
    int n;
    do {
        n = poll(&p, 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (n > 0 && (p.revents & POLLNVAL)) {
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (n == 0) {
        /* About to wait: not for ever on an fd open the other way. */
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0 && (flags & O_ACCMODE) == (writing ? O_RDONLY : O_WRONLY)) {
            errno = EBADF;
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    return n > 0;
}

/* How long a write to fd may be so that, once fd polls writable, it
   cannot block: PIPE_BUF in blocking mode, anything in non-blocking
   mode. */
Py_ssize_t
_PyDeferred_FdWriteLimit(int fd, Py_ssize_t len)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK) && len > PIPE_BUF) {
        return PIPE_BUF;
    }
    return len;
}

/* The state of one read or write: a capsule, so that the scheduler can
   hold it like any object. */
typedef struct {
    int fd;
    int owns_fd;                /* fd is a duplicate for a worker */
    int is_write;
    Py_ssize_t length;          /* read: how much at most */
    PyObject *data;             /* write: a bytes copy of the data;
                                   read on a worker: the bytes it fills */
    Py_ssize_t result;          /* worker: bytes done, or -1 */
    int error;                  /* worker: errno */
    int positioned;             /* worker: pread()/pwrite() at offset */
    off_t offset;
} fd_call;

static void
fd_call_free(PyObject *capsule)
{
    fd_call *c = PyCapsule_GetPointer(capsule, "micro_thread.fd_call");
    Py_XDECREF(c->data);
    if (c->owns_fd) {
        close(c->fd);
    }
    PyMem_Free(c);
}

static PyObject *
fd_call_new(int fd, int is_write, Py_ssize_t length, const Py_buffer *data)
{
    fd_call *c = PyMem_Calloc(1, sizeof(fd_call));
    if (c == NULL) {
        return PyErr_NoMemory();
    }
    c->fd = fd;
    c->is_write = is_write;
    c->length = length;
    if (data != NULL) {
        c->data = PyBytes_FromStringAndSize(data->buf, data->len);
        if (c->data == NULL) {
            PyMem_Free(c);
            return NULL;
        }
    }
    PyObject *capsule = PyCapsule_New(c, "micro_thread.fd_call", fd_call_free);
    if (capsule == NULL) {
        Py_XDECREF(c->data);
        PyMem_Free(c);
    }
    return capsule;
}

static fd_call *
fd_call_of(PyObject *state)
{
    return PyCapsule_GetPointer(state, "micro_thread.fd_call");
}

/* Read now from a readable fd. */
static PyObject *
read_now(int fd, Py_ssize_t length)
{
    PyObject *buffer = PyBytes_FromStringAndSize(NULL, length);
    if (buffer == NULL) {
        return NULL;
    }
    Py_ssize_t n = _Py_read(fd, PyBytes_AS_STRING(buffer), length);
    if (n < 0) {
        Py_DECREF(buffer);
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError)) {
            PyErr_Clear();
            return NULL;        /* would block: wait again */
        }
        return NULL;
    }
    if (n != length) {
        _PyBytes_Resize(&buffer, n);
    }
    return buffer;
}

/* Write now to a writable fd. */
static PyObject *
write_now(int fd, const char *buf, Py_ssize_t len)
{
    /* What poll() promised not to block. */
    Py_ssize_t n = _Py_write(fd, buf, _PyDeferred_FdWriteLimit(fd, len));
    if (n < 0) {
        if (PyErr_ExceptionMatches(PyExc_BlockingIOError)) {
            PyErr_Clear();
            return NULL;        /* would block: wait again */
        }
        return NULL;
    }
    return PyLong_FromSsize_t(n);
}

static PyObject *
fd_call_complete(PyObject *state, int Py_UNUSED(status))
{
    fd_call *c = fd_call_of(state);
    int ready = _PyDeferred_FdReady(c->fd, c->is_write);
    if (ready <= 0) {
        return NULL;            /* error, or someone was faster: wait again */
    }
    if (c->is_write) {
        return write_now(c->fd, PyBytes_AS_STRING(c->data), PyBytes_GET_SIZE(c->data));
    }
    return read_now(c->fd, c->length);
}

/* Worker-thread side of a regular file's read or write (no GIL). */
static void
fd_call_work(void *arg)
{
    fd_call *c = (fd_call *)arg;
    Py_ssize_t n;
    do {
        if (c->is_write) {
            size_t len = (size_t)PyBytes_GET_SIZE(c->data);
            n = c->positioned
                ? pwrite(c->fd, PyBytes_AS_STRING(c->data), len, c->offset)
                : write(c->fd, PyBytes_AS_STRING(c->data), len);
        }
        else {
            n = c->positioned
                ? pread(c->fd, PyBytes_AS_STRING(c->data), (size_t)c->length, c->offset)
                : read(c->fd, PyBytes_AS_STRING(c->data), (size_t)c->length);
        }
    } while (n < 0 && errno == EINTR);
    c->result = n;
    c->error = n < 0 ? errno : 0;
}

static PyObject *
fd_call_work_done(PyObject *state, int Py_UNUSED(status))
{
    fd_call *c = fd_call_of(state);
    if (c->result < 0) {
        errno = c->error;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    /* Only now, with the caller still waiting for it, does the file
       position move: a call given up (kill(), a timeout) consumed
       nothing, and wrote what a retry writes again in the same place. */
    if (c->positioned && lseek(c->fd, c->offset + c->result, SEEK_SET) < 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (c->is_write) {
        return PyLong_FromSsize_t(c->result);
    }
    PyObject *res = Py_NewRef(c->data);
    if (c->result != c->length && _PyBytes_Resize(&res, c->result) < 0) {
        return NULL;
    }
    return res;
}

/* Read or write fd: at once if it is ready, otherwise once it is (a
   regular file: on a worker thread). */
static PyObject *
fd_call_run(PyObject *const *args, int fd, int kind, int is_write,
            Py_ssize_t length, const Py_buffer *data)
{
    PyObject *res;
    if (kind == FD_POLLABLE) {
        int ready = _PyDeferred_FdReady(fd, is_write);
        if (ready < 0) {
            return NULL;
        }
        if (ready) {
            res = is_write ? write_now(fd, data->buf, data->len)
                           : read_now(fd, length);
            if (res != NULL || PyErr_Occurred()) {
                return res;
            }
        }
    }
    PyObject *state = fd_call_new(fd, is_write, length, data);
    if (state == NULL) {
        return NULL;
    }
    fd_call *c = fd_call_of(state);
    if (kind == FD_POLLABLE) {
        res = PyDeferred_WaitFd(args, fd, is_write ? PyDeferred_WRITABLE : PyDeferred_READABLE,
                                PyDeferred_NO_DEADLINE, fd_call_complete, state);
    }
    else if (!is_write && (c->data = PyBytes_FromStringAndSize(NULL, length)) == NULL) {
        res = NULL;
    }
    else if ((c->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0) {
        c->fd = fd;
        res = PyErr_SetFromErrno(PyExc_OSError);
    }
    else {
        /* The worker uses a duplicate of fd, so that fd being closed (and
           its number reused) meanwhile cannot make it read or write
           another file; it fills c->data, which nothing else can see.
           It reads or writes at the current position without moving it
           (except in append mode): see fd_call_work_done(). */
        c->owns_fd = 1;
        int flags = fcntl(fd, F_GETFL);
        c->offset = lseek(fd, 0, SEEK_CUR);
        c->positioned = flags >= 0 && !(flags & O_APPEND) && c->offset >= 0;
        res = PyDeferred_Offload(args, fd_call_work, c, fd_call_work_done, state);
    }
    Py_DECREF(state);
    return res;
}

PyObject *
_PyDeferred_ReadFd(PyObject *const *args, int fd, Py_ssize_t length)
{
    if (length < 0) {
        errno = EINVAL;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    length = Py_MIN(length, _PY_READ_MAX);
    int kind = _PyDeferred_FdIsDisk(fd);
    if (kind < 0) {
        return NULL;
    }
    if (length == 0) {
        return PyBytes_FromStringAndSize(NULL, 0);   /* as read() would */
    }
    return fd_call_run(args, fd, kind, 0, length, NULL);
}

PyObject *
_PyDeferred_WriteFd(PyObject *const *args, int fd, Py_buffer *data)
{
    int kind = _PyDeferred_FdIsDisk(fd);
    if (kind < 0) {
        return NULL;
    }
    if (data->len == 0) {
        return PyLong_FromLong(0);      /* as write() would, without waiting */
    }
    return fd_call_run(args, fd, kind, 1, 0, data);
}

static PyObject *
sleep_done(PyObject *Py_UNUSED(state), int Py_UNUSED(status))
{
    Py_RETURN_NONE;
}

PyObject *
_PyDeferred_Sleep(PyObject *const *args, PyTime_t delay)
{
    if (delay < 0) {
        PyErr_SetString(PyExc_ValueError, "sleep length must be non-negative");
        return NULL;
    }
    PyTime_t now;
    (void)PyTime_MonotonicRaw(&now);
    return PyDeferred_WaitFd(args, -1, 0, _PyTime_Add(now, delay), sleep_done, NULL);
}
