"""Spawn + run to completion + join, per task.

The task body is an empty function (``return None``), so what is timed is
the machinery:

* micro_thread_spawn_join        -- ``start(fn).join()``, one task at a time
* micro_thread_spawn_join_batch  -- start 100, then join the 100
* generator_create_exhaust       -- create a one-``yield`` generator and
                                    exhaust it with a for loop (the floor)
* asyncio_create_task_await      -- ``await loop.create_task(coro())``
* asyncio_create_task_batch      -- create 100 tasks, then await the 100
* greenlet_create_switch         -- ``greenlet(fn).switch()`` until it finishes
* gevent_spawn_joinall_batch     -- ``gevent.spawn`` 100, ``gevent.joinall``
* thread_start_join              -- ``threading.Thread(target=fn)``,
                                    ``start()``, ``join()``

Benchmarks whose library is missing are skipped; micro_thread runs only on
an interpreter with the native ``_micro_thread`` kernel.

    python bench_spawn.py --fast -o results/spawn.json
"""

import asyncio
import sys
import threading

import pyperf

from _common import have, native_micro_thread

BATCH = 100
perf_counter = pyperf.perf_counter


def work():
    return None


def mt_spawn_join(loops, mt):
    def main():
        start = mt.start
        range_it = range(loops)
        t0 = perf_counter()
        for _ in range_it:
            start(work).join()
        return perf_counter() - t0
    return mt.run(main)


def mt_spawn_join_batch(loops, mt):
    """*loops* batches of BATCH tasks: start all, then join all."""
    def main():
        start = mt.start
        range_it = range(loops)
        batch = range(BATCH)
        t0 = perf_counter()
        for _ in range_it:
            tasks = [start(work) for _ in batch]
            for task in tasks:
                task.join()
        return perf_counter() - t0
    return mt.run(main)


def generator_create_exhaust(loops):
    def gen():
        yield None

    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        for _ in gen():
            pass
    return perf_counter() - t0


async def acoro():
    return None


async def _asyncio_one(loops):
    create_task = asyncio.get_running_loop().create_task
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        await create_task(acoro())
    return perf_counter() - t0


def asyncio_create_task_await(loops):
    return asyncio.run(_asyncio_one(loops))


async def _asyncio_batch(loops):
    create_task = asyncio.get_running_loop().create_task
    range_it = range(loops)
    batch = range(BATCH)
    t0 = perf_counter()
    for _ in range_it:
        tasks = [create_task(acoro()) for _ in batch]
        for task in tasks:
            await task
    return perf_counter() - t0


def asyncio_create_task_batch(loops):
    return asyncio.run(_asyncio_batch(loops))


def greenlet_create_switch(loops):
    from greenlet import greenlet
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        greenlet(work).switch()
    return perf_counter() - t0


def gevent_spawn_joinall_batch(loops):
    import gevent
    spawn = gevent.spawn
    joinall = gevent.joinall
    range_it = range(loops)
    batch = range(BATCH)
    t0 = perf_counter()
    for _ in range_it:
        joinall([spawn(work) for _ in batch])
    return perf_counter() - t0


def thread_start_join(loops):
    Thread = threading.Thread
    range_it = range(loops)
    t0 = perf_counter()
    for _ in range_it:
        thread = Thread(target=work)
        thread.start()
        thread.join()
    return perf_counter() - t0


def main():
    runner = pyperf.Runner()
    runner.metadata["description"] = (
        "Spawn + run to completion + join, per task: micro_thread vs "
        "generator, asyncio, greenlet, gevent, OS threads")
    mt = native_micro_thread()
    skipped = []
    if mt is not None:
        runner.bench_time_func("micro_thread_spawn_join", mt_spawn_join, mt)
        runner.bench_time_func("micro_thread_spawn_join_batch",
                               mt_spawn_join_batch, mt, inner_loops=BATCH)
    else:
        skipped.append("micro_thread (no native _micro_thread kernel)")
    runner.bench_time_func("generator_create_exhaust",
                           generator_create_exhaust)
    runner.bench_time_func("asyncio_create_task_await",
                           asyncio_create_task_await)
    runner.bench_time_func("asyncio_create_task_batch",
                           asyncio_create_task_batch, inner_loops=BATCH)
    if have("greenlet"):
        runner.bench_time_func("greenlet_create_switch",
                               greenlet_create_switch)
    else:
        skipped.append("greenlet (not installed)")
    if have("gevent"):
        runner.bench_time_func("gevent_spawn_joinall_batch",
                               gevent_spawn_joinall_batch, inner_loops=BATCH)
    else:
        skipped.append("gevent (not installed)")
    runner.bench_time_func("thread_start_join", thread_start_join)
    if skipped and not runner.args.worker:
        print("bench_spawn: skipped " + "; ".join(skipped), file=sys.stderr)


if __name__ == "__main__":
    main()
