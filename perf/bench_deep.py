"""Suspending a micro-thread that blocks N Python frames deep (N = 1, 10, 100).

A micro-thread's frames move from the data stack to the heap when it first
suspends (cost linear in the depth); later suspensions find them already on
the heap and cost the same at any depth.  Two families of benchmarks show
both halves:

* micro_thread_deep_pingpong_N -- per one-way switch of a ping-pong over two
  MicroPipe(1)s in which one side blocks N frames deep (the loop runs in the
  innermost frame, so after the first round trip nothing is copied): should
  be flat in N.
* micro_thread_first_block_N   -- per micro-thread: start a fresh
  micro-thread that calls down N frames and blocks once in
  ``MicroPipe.get()``; the root then wakes it and joins it (batches of 100).
* micro_thread_first_noblock_N -- the same, but the innermost call is a
  MicroPipe method that does not block (``put``), so the micro-thread runs to
  completion without suspending.

``first_block_N - first_noblock_N`` is the cost of the first suspension and
its resume at depth N (frames copied to the heap, the switch out and in,
the wake-up); it should grow linearly with N.

Needs the native ``_micro_thread`` kernel; on any other interpreter this
script runs nothing.

    python bench_deep.py --fast -o results/deep.json
"""

import sys

import pyperf

from _common import echo_until_closed, native_micro_thread, timed_round_trips

DEPTHS = (1, 10, 100)
BATCH = 100
perf_counter = pyperf.perf_counter


# Every call below is a plain CALL: a deferring C method called through
# CALL_FUNCTION_EX (``fn(*args)``) does not suspend in v1 of the kernel.

def descend(depth, pipe, block):
    """*depth* frames of descend(), the innermost calls ``pipe.get()`` (it
    blocks: the pipe is empty) or ``pipe.put(None)`` (it does not)."""
    if depth > 1:
        return descend(depth - 1, pipe, block)
    if block:
        return pipe.get()
    return pipe.put(None)


def pong_loop(mt, depth, a, b):
    """*depth* frames of pong_loop(); the innermost echoes the items of *a*
    to *b* until *a* is closed."""
    if depth > 1:
        return pong_loop(mt, depth - 1, a, b)
    return echo_until_closed(mt, a, b)


def deep_pingpong(loops, mt, depth):
    """*loops* x 5 round trips; the ponger loops *depth* frames deep."""
    def pinger():
        a = mt.MicroPipe(1)
        b = mt.MicroPipe(1)
        other = mt.start(pong_loop, mt, depth, a, b)
        a.put(None); b.get()            # the ponger's first suspension
        dt = timed_round_trips(a.put, b.get, loops)
        a.close()
        other.join()
        return dt

    return mt.run(pinger)


def first_block(loops, mt, depth, block):
    """*loops* fresh micro-threads (in batches of BATCH) that descend
    *depth* frames and then block once (*block*) or do not."""
    def main():
        start = mt.start
        sleep = mt.sleep
        remaining = loops
        elapsed = 0.0
        while remaining:
            n = min(remaining, BATCH)
            remaining -= n
            pipe = mt.MicroPipe()
            batch = range(n)
            t0 = perf_counter()
            tasks = [start(descend, depth, pipe, block) for _ in batch]
            sleep(0)                    # all of them run to get()/put()
            if block:
                put = pipe.put
                for _ in batch:
                    put(None)
            for task in tasks:
                task.join()
            elapsed += perf_counter() - t0
        return elapsed

    return mt.run(main)


def main():
    runner = pyperf.Runner()
    runner.metadata["description"] = (
        "micro_thread suspended N frames deep: steady-state switch vs first "
        "suspension")
    mt = native_micro_thread()
    if mt is None:
        # Parse the command line anyway (--help, -o) and record nothing.
        runner.parse_args()
        if not runner.args.worker:
            print("bench_deep: skipped everything (no native _micro_thread "
                  "kernel)", file=sys.stderr)
        return
    for depth in DEPTHS:
        runner.bench_time_func(f"micro_thread_deep_pingpong_{depth}",
                               deep_pingpong, mt, depth, inner_loops=10)
    for depth in DEPTHS:
        runner.bench_time_func(f"micro_thread_first_block_{depth}",
                               first_block, mt, depth, True)
        runner.bench_time_func(f"micro_thread_first_noblock_{depth}",
                               first_block, mt, depth, False)


if __name__ == "__main__":
    main()
