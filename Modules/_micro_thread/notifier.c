/* The notifier of a micro-thread scheduler: see notifier.h. */

#ifndef Py_BUILD_CORE_BUILTIN
#  define Py_BUILD_CORE_MODULE 1
#endif

#include "Python.h"
#include "pycore_time.h"          // _PyTime_AsMilliseconds()
#include "notifier.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#ifdef HAVE_SYS_EPOLL_H
#  include <sys/epoll.h>
#  define MT_USE_EPOLL 1
#else
#  include <poll.h>
#endif
#ifdef HAVE_SYS_EVENTFD_H
#  include <sys/eventfd.h>
#endif

#define MT_MAX_EVENTS 256

void
_mt_notifier_init(mt_notifier *n)
{
    n->kfd = -1;
    n->wakefd = n->wakefd_w = -1;
    n->events = NULL;
    n->nevents = 0;
    n->pollfds = NULL;
    n->npollfds = n->cap_pollfds = 0;
}

#ifndef HAVE_SYS_EVENTFD_H
static int
set_cloexec_nonblock(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        return -1;
    }
    flags = fcntl(fd, F_GETFD);
    if (flags < 0 || fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0) {
        return -1;
    }
    return 0;
}
#endif


#ifdef MT_USE_EPOLL
/* ---------------------------------------------------------------------- */
/* epoll */

static int
ensure_kernel(mt_notifier *n)
{
    if (n->kfd >= 0) {
        return 0;
    }
    n->events = PyMem_RawMalloc(sizeof(struct epoll_event) * MT_MAX_EVENTS);
    if (n->events == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    n->nevents = MT_MAX_EVENTS;
    n->kfd = epoll_create1(EPOLL_CLOEXEC);
    if (n->kfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        PyMem_RawFree(n->events);
        n->events = NULL;
        return -1;
    }
    return 0;
}

static uint32_t
epoll_mask(int events)
{
    uint32_t mask = EPOLLONESHOT;
    if (events & MT_READ) {
        mask |= EPOLLIN | EPOLLRDHUP;
    }
    if (events & MT_WRITE) {
        mask |= EPOLLOUT;
    }
    return mask;
}

int
_mt_notifier_arm(mt_notifier *n, int fd, int events)
{
    if (ensure_kernel(n) < 0) {
        return -1;
    }
    struct epoll_event ev;
    ev.events = epoll_mask(events);
    ev.data.fd = fd;
    /* Most waits re-arm an fd already known to the kernel; one that was
       closed and reopened since is not known any more. */
    if (epoll_ctl(n->kfd, EPOLL_CTL_MOD, fd, &ev) == 0) {
        return 0;
    }
    if (errno == ENOENT) {
        if (epoll_ctl(n->kfd, EPOLL_CTL_ADD, fd, &ev) == 0) {
            return 0;
        }
    }
    if (errno == EPERM) {
        return 1;     /* regular file or the like: always ready */
    }
    PyErr_SetFromErrno(PyExc_OSError);
    return -1;
}

void
_mt_notifier_forget(mt_notifier *n, int fd)
{
    if (n->kfd >= 0 && fd != n->wakefd) {
        struct epoll_event ev = {0};
        (void)epoll_ctl(n->kfd, EPOLL_CTL_DEL, fd, &ev);
    }
}

static int
kernel_wait(mt_notifier *n, int timeout_ms, mt_ready_func ready, void *ctx)
{
    struct epoll_event *evs = (struct epoll_event *)n->events;
    int nev, err;
    if (timeout_ms == 0) {
        nev = epoll_wait(n->kfd, evs, n->nevents, 0);
        err = errno;
    }
    else {
        Py_BEGIN_ALLOW_THREADS
        nev = epoll_wait(n->kfd, evs, n->nevents, timeout_ms);
        err = errno;
        Py_END_ALLOW_THREADS
    }
    if (nev < 0) {
        errno = err;
        return -1;
    }
    int reported = 0;
    for (int i = 0; i < nev; i++) {
        int fd = evs[i].data.fd;
        if (fd == n->wakefd) {
            uint64_t count;
            while (read(fd, &count, sizeof(count)) > 0) {
            }
            /* The wake-up fd stays armed (it is level-triggered). */
            continue;
        }
        uint32_t e = evs[i].events;
        int events = 0;
        if (e & (EPOLLIN | EPOLLRDHUP | EPOLLPRI)) {
            events |= MT_READ;
        }
        if (e & EPOLLOUT) {
            events |= MT_WRITE;
        }
        if (e & (EPOLLERR | EPOLLHUP)) {
            events |= MT_READ | MT_WRITE;
        }
        ready(ctx, fd, events);
        reported++;
    }
    return reported;
}

static int
register_wakefd(mt_notifier *n)
{
    struct epoll_event ev;
    ev.events = EPOLLIN;
    ev.data.fd = n->wakefd;
    if (epoll_ctl(n->kfd, EPOLL_CTL_ADD, n->wakefd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static void
close_kernel(mt_notifier *n)
{
    if (n->kfd >= 0) {
        close(n->kfd);
        n->kfd = -1;
    }
    PyMem_RawFree(n->events);
    n->events = NULL;
}

#else
/* ---------------------------------------------------------------------- */
/* poll(): the portable fallback.  The armed fds are kept in an array; an
   fd reported ready is removed from it (one-shot). */

static int
ensure_kernel(mt_notifier *n)
{
    n->kfd = 0;     /* "active": there is no kernel object */
    return 0;
}

int
_mt_notifier_arm(mt_notifier *n, int fd, int events)
{
    (void)ensure_kernel(n);
    struct pollfd *p = (struct pollfd *)n->pollfds;
    short mask = ((events & MT_READ) ? POLLIN : 0) | ((events & MT_WRITE) ? POLLOUT : 0);
    for (int i = 0; i < n->npollfds; i++) {
        if (p[i].fd == fd) {
            p[i].events = mask;
            return 0;
        }
    }
    if (n->npollfds == n->cap_pollfds) {
        int cap = n->cap_pollfds ? n->cap_pollfds * 2 : 64;
        p = PyMem_RawRealloc(p, sizeof(struct pollfd) * cap);
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        n->pollfds = p;
        n->cap_pollfds = cap;
    }
    p[n->npollfds].fd = fd;
    p[n->npollfds].events = mask;
    p[n->npollfds].revents = 0;
    n->npollfds++;
    return 0;
}

void
_mt_notifier_forget(mt_notifier *n, int fd)
{
    struct pollfd *p = (struct pollfd *)n->pollfds;
    for (int i = 0; i < n->npollfds; i++) {
        if (p[i].fd == fd) {
            p[i] = p[--n->npollfds];
            return;
        }
    }
}

static int
kernel_wait(mt_notifier *n, int timeout_ms, mt_ready_func ready, void *ctx)
{
    struct pollfd *p = (struct pollfd *)n->pollfds;
    int count = n->npollfds, nev, err;
    if (n->wakefd >= 0) {
        /* the wake-up fd is kept as the last entry */
        if (_mt_notifier_arm(n, n->wakefd, MT_READ) < 0) {
            return -1;
        }
        p = (struct pollfd *)n->pollfds;
        count = n->npollfds;
    }
    Py_BEGIN_ALLOW_THREADS
    nev = poll(p, count, timeout_ms);
    err = errno;
    Py_END_ALLOW_THREADS
    if (nev < 0) {
        errno = err;
        return -1;
    }
    int reported = 0;
    for (int i = 0; i < n->npollfds; ) {
        if (p[i].revents == 0) {
            i++;
            continue;
        }
        int fd = p[i].fd, e = p[i].revents;
        p[i] = p[--n->npollfds];
        if (fd == n->wakefd) {
            char buf[64];
            while (read(fd, buf, sizeof(buf)) > 0) {
            }
            continue;
        }
        int events = ((e & POLLIN) ? MT_READ : 0) | ((e & POLLOUT) ? MT_WRITE : 0);
        if (e & (POLLERR | POLLHUP | POLLNVAL)) {
            events |= MT_READ | MT_WRITE;
        }
        ready(ctx, fd, events);
        reported++;
    }
    return reported;
}

static int
register_wakefd(mt_notifier *n)
{
    return 0;   /* added to every poll() */
}

static void
close_kernel(mt_notifier *n)
{
    PyMem_RawFree(n->pollfds);
    n->pollfds = NULL;
    n->npollfds = n->cap_pollfds = 0;
    n->kfd = -1;
}
#endif


int
_mt_notifier_wait(mt_notifier *n, PyTime_t timeout, mt_ready_func ready, void *ctx)
{
    if (ensure_kernel(n) < 0) {
        return -1;
    }
    int timeout_ms;
    if (timeout < 0) {
        timeout_ms = -1;
    }
    else {
        PyTime_t ms = _PyTime_AsMilliseconds(timeout, _PyTime_ROUND_CEILING);
        timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms;
    }
    int reported = kernel_wait(n, timeout_ms, ready, ctx);
    if (reported < 0) {
        if (errno != EINTR) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        reported = 0;
    }
    /* Run the handlers of signals that arrived meanwhile (PEP 475: the
       wait itself is simply retried by the scheduler). */
    if (PyErr_CheckSignals() < 0) {
        return -1;
    }
    return reported;
}

int
_mt_notifier_enable_wakeup(mt_notifier *n)
{
    if (n->wakefd >= 0) {
        return 0;
    }
    if (ensure_kernel(n) < 0) {
        return -1;
    }
#ifdef HAVE_SYS_EVENTFD_H
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    n->wakefd = n->wakefd_w = fd;
#else
    int fds[2];
    if (pipe(fds) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (set_cloexec_nonblock(fds[0]) < 0 || set_cloexec_nonblock(fds[1]) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    n->wakefd = fds[0];
    n->wakefd_w = fds[1];
#endif
    if (register_wakefd(n) < 0) {
        _mt_notifier_close(n);
        return -1;
    }
    return 0;
}

void
_mt_notifier_wake(mt_notifier *n)
{
    int fd = n->wakefd_w;
    if (fd >= 0) {
#ifdef HAVE_SYS_EVENTFD_H
        uint64_t one = 1;
        (void)!write(fd, &one, sizeof(one));
#else
        char c = 0;
        (void)!write(fd, &c, 1);
#endif
    }
}

void
_mt_notifier_close(mt_notifier *n)
{
    close_kernel(n);
    if (n->wakefd >= 0) {
        close(n->wakefd);
    }
    if (n->wakefd_w >= 0 && n->wakefd_w != n->wakefd) {
        close(n->wakefd_w);
    }
    n->wakefd = n->wakefd_w = -1;
}
