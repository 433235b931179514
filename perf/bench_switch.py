"""Switch cost: micro_thread against its peers, side by side in one run.

Every benchmark reports the time of ONE one-way switch, i.e. one value
handed from one task to the other (a round trip is two switches):

* micro_thread_pingpong      -- two micro-threads, two MicroPipe(1)s
* micro_thread_pingpong_root -- the same with the OS thread's root as one side
* micro_thread_sleep0        -- two micro-threads that each call sleep(0)
* generator_send             -- resume + yield of a suspended generator: one
                                ``send()`` counted as one switch (the floor)
* greenlet_switch            -- raw ``switch()`` between two greenlets
* asyncio_queue_pingpong     -- two tasks, two asyncio.Queue(1)s
* uvloop_queue_pingpong      -- the same on uvloop's event loop
* gevent_channel_pingpong    -- two greenlets, two gevent.queue.Channels
* thread_simplequeue_pingpong -- two OS threads, two queue.SimpleQueues

A benchmark whose library is missing is skipped (with a note on stderr);
the micro_thread benchmarks run only on an interpreter with the native
``_micro_thread`` kernel (the pure-Python shim is not benchmarked).

    python bench_switch.py --fast -o results/switch.json
"""

import asyncio
import queue
import sys
import threading

from _common import (echo_until_closed, have, native_micro_thread,
                     perf_counter, timed_round_trip, timed_round_trips)


# -- micro_thread ---------------------------------------------------------

def _timed_pings(mt, loops):
    """*loops* x 5 round trips with a ponger micro-thread (10 switches);
    return the seconds they took."""
    a = mt.MicroPipe(1)
    b = mt.MicroPipe(1)
    other = mt.start(echo_until_closed, mt, a, b)
    dt = timed_round_trips(a.put, b.get, loops)
    a.close()
    other.join()
    return dt


def mt_pingpong(loops, mt):
    """*loops* x 5 round trips between two micro-threads (10 switches)."""
    return mt.run(_timed_pings, mt, loops)


def mt_pingpong_root(loops, mt):
    """As mt_pingpong, but the pinger is the OS thread's root."""
    return _timed_pings(mt, loops)


def mt_sleep0(loops, mt):
    """Two micro-threads that each call sleep(0) 5 x *loops* times."""
    def spinner():
        sleep = mt.sleep
        for _ in range(loops):
            sleep(0); sleep(0); sleep(0); sleep(0); sleep(0)

    def main():
        other = mt.start(spinner)
        mt.sleep(0)                     # let it start: both are running now
        t0 = perf_counter()
        spinner()
        dt = perf_counter() - t0
        other.join()
        return dt

    return mt.run(main)


# -- generator (the floor) ------------------------------------------------

def generator_send(loops):
    """*loops* x 10 send() calls into a suspended generator."""
    def echo():
        value = None
        while True:
            value = yield value

    gen = echo()
    next(gen)
    send = gen.send
    range_it = range(loops)
    t0 = perf_counter()
    for i in range_it:
        send(i); send(i); send(i); send(i); send(i)
        send(i); send(i); send(i); send(i); send(i)
    return perf_counter() - t0


# -- greenlet -------------------------------------------------------------

def greenlet_switch(loops):
    """*loops* x 5 round trips of raw greenlet switches (10 switches)."""
    import greenlet

    main = greenlet.getcurrent()

    def other():
        switch = main.switch
        while True:
            switch()

    glet = greenlet.greenlet(other)
    switch = glet.switch
    switch()                            # start it: it is now parked
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        switch(); switch(); switch(); switch(); switch()
    dt = perf_counter() - t0
    glet.throw(greenlet.GreenletExit)
    return dt


# -- asyncio / uvloop -----------------------------------------------------

async def _asyncio_pingpong(loops):
    a = asyncio.Queue(1)
    b = asyncio.Queue(1)

    async def ponger():
        get = a.get
        put = b.put
        for _ in range(loops):
            await put(await get())

    task = asyncio.get_running_loop().create_task(ponger())
    await asyncio.sleep(0)
    put = a.put
    get = b.get
    range_it = range(loops)
    t0 = perf_counter()
    for i in range_it:
        await put(i)
        await get()
    dt = perf_counter() - t0
    await task
    return dt


def asyncio_pingpong(loops):
    """*loops* round trips between two asyncio tasks (2 switches each)."""
    return asyncio.run(_asyncio_pingpong(loops))


def uvloop_pingpong(loops):
    """asyncio_pingpong on uvloop's event loop."""
    import uvloop
    return asyncio.run(_asyncio_pingpong(loops),
                       loop_factory=uvloop.new_event_loop)


# -- gevent ---------------------------------------------------------------

def gevent_pingpong(loops):
    """*loops* round trips over two unbuffered gevent Channels."""
    import gevent
    from gevent.queue import Channel

    a = Channel()
    b = Channel()

    def ponger():
        get = a.get
        put = b.put
        for _ in range(loops):
            put(get())

    glet = gevent.spawn(ponger)
    gevent.sleep(0)
    dt = timed_round_trip(a.put, b.get, loops)
    glet.join()
    return dt


# -- OS threads -----------------------------------------------------------

def thread_pingpong(loops):
    """*loops* round trips between two OS threads over SimpleQueues."""
    a = queue.SimpleQueue()
    b = queue.SimpleQueue()

    def ponger():
        get = a.get
        put = b.put
        for _ in range(loops):
            put(get())

    thread = threading.Thread(target=ponger)
    thread.start()
    dt = timed_round_trip(a.put, b.get, loops)
    thread.join()
    return dt


def main():
    import pyperf   # here, so that switch_instructions.py can import this
    runner = pyperf.Runner()
    runner.metadata["description"] = (
        "One one-way switch (a value handed to another task): micro_thread "
        "vs generator send, greenlet, asyncio, uvloop, gevent, OS threads")
    mt = native_micro_thread()
    skipped = []

    if mt is not None:
        runner.bench_time_func("micro_thread_pingpong", mt_pingpong, mt,
                               inner_loops=10)
        runner.bench_time_func("micro_thread_pingpong_root", mt_pingpong_root,
                               mt, inner_loops=10)
        runner.bench_time_func("micro_thread_sleep0", mt_sleep0, mt,
                               inner_loops=10)
    else:
        skipped.append("micro_thread (no native _micro_thread kernel)")
    runner.bench_time_func("generator_send", generator_send, inner_loops=10)
    if have("greenlet"):
        runner.bench_time_func("greenlet_switch", greenlet_switch,
                               inner_loops=10)
    else:
        skipped.append("greenlet (not installed)")
    runner.bench_time_func("asyncio_queue_pingpong", asyncio_pingpong,
                           inner_loops=2)
    if have("uvloop"):
        runner.bench_time_func("uvloop_queue_pingpong", uvloop_pingpong,
                               inner_loops=2)
    else:
        skipped.append("uvloop (not installed)")
    if have("gevent"):
        runner.bench_time_func("gevent_channel_pingpong", gevent_pingpong,
                               inner_loops=2)
    else:
        skipped.append("gevent (not installed)")
    runner.bench_time_func("thread_simplequeue_pingpong", thread_pingpong,
                           inner_loops=2)

    if skipped and not runner.args.worker:
        print("bench_switch: skipped " + "; ".join(skipped), file=sys.stderr)


if __name__ == "__main__":
    main()
