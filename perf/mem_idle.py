"""Memory per idle unit: RSS delta / N, each unit parked two Python frames deep.

Not a pyperf script.  Each (kind, N) is measured in a fresh subprocess of
the running interpreter, which:

1. imports what it needs and warms the kind up (creates, parks and finishes
   100 units), and allocates the list that will hold the N handles;
2. reads its resident set size (``/proc/self/statm``);
3. creates N units, each parked two Python frames deep (``f1() -> f2() ->
   wait``), and checks that all N are parked;
4. reads RSS again and reports ``(RSS after - RSS before) / N``, and the
   time taken to create the units and to park them all.

Kinds:

* ``micro_thread`` -- ``micro_thread.start(f1, pipe)``; f2 blocks in
  ``pipe.get()`` on one shared, empty MicroPipe; parked by one ``sleep(0)``
  of the root (native kernel only: the shim is not measured)
* ``asyncio``      -- ``loop.create_task(f1(fut))``; f2 awaits one shared
  Future; parked by one ``await asyncio.sleep(0)``
* ``greenlet``     -- ``greenlet(f1).switch()``; f2 switches back to the main
  greenlet
* ``generator``    -- ``f1()`` is a generator that ``yield from f2()``; parked
  by ``next()``

The time to park is what "start" means for the 1,000,000 micro-thread claim:
from the first ``start()`` until every micro-thread is blocked in
``pipe.get()``.  The 1,000,000 run is made twice: with the cyclic garbage
collector on (the default) and with ``gc.disable()`` for the child, because
the collector's full passes over the growing heap dominate that time.

    python mem_idle.py -o results/mem_idle.json            # N=100000, + 1M
    python mem_idle.py --n 10000 --no-million --kinds generator asyncio
"""

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time

KINDS = ("micro_thread", "asyncio", "greenlet", "generator")
PAGE = os.sysconf("SC_PAGE_SIZE")
WARMUP = 100


def rss():
    """Resident set size in bytes, from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _f2_generator():
    yield


def _f1_generator():
    yield from _f2_generator()


def run_generator(n):
    handles = [None] * n
    for _ in range(WARMUP):
        for _ in _f1_generator():
            pass
    before = rss()
    t0 = time.perf_counter()
    for i in range(n):
        g = _f1_generator()
        next(g)
        handles[i] = g
    t1 = time.perf_counter()
    after = rss()
    parked = sum(1 for g in handles if g.gi_yieldfrom is not None)
    return before, after, t1 - t0, t1 - t0, parked, handles


def run_greenlet(n):
    import greenlet
    main = greenlet.getcurrent()
    state = {"parked": 0}

    def f2():
        state["parked"] += 1
        main.switch()

    def f1():
        f2()

    handles = [None] * n
    for _ in range(WARMUP):
        g = greenlet.greenlet(f1)
        g.switch()
        g.switch()
    state["parked"] = 0
    before = rss()
    t0 = time.perf_counter()
    for i in range(n):
        g = greenlet.greenlet(f1)
        g.switch()
        handles[i] = g
    t1 = time.perf_counter()
    after = rss()
    return before, after, t1 - t0, t1 - t0, state["parked"], handles


def run_asyncio(n):
    import asyncio
    state = {"parked": 0}

    async def f2(fut):
        state["parked"] += 1
        await fut

    async def f1(fut):
        await f2(fut)

    async def main():
        loop = asyncio.get_running_loop()
        handles = [None] * n
        fut = loop.create_future()
        warm = [loop.create_task(f1(fut)) for _ in range(WARMUP)]
        await asyncio.sleep(0)
        fut.set_result(None)
        await asyncio.gather(*warm)
        del warm
        state["parked"] = 0
        fut = loop.create_future()
        before = rss()
        t0 = time.perf_counter()
        create_task = loop.create_task
        for i in range(n):
            handles[i] = create_task(f1(fut))
        t1 = time.perf_counter()
        await asyncio.sleep(0)           # every task runs to `await fut`
        t2 = time.perf_counter()
        after = rss()
        return before, after, t1 - t0, t2 - t0, state["parked"], handles

    # Exit without tearing down the loop: os._exit() follows.
    loop = asyncio.new_event_loop()
    return loop.run_until_complete(main())


def run_micro_thread(n):
    import micro_thread as mt
    if mt.IMPLEMENTATION != "native":
        raise SystemExit("micro_thread: no native kernel (shim not measured)")
    state = {"parked": 0}

    def f2(pipe):
        state["parked"] += 1
        return pipe.get()

    def f1(pipe):
        return f2(pipe)

    handles = [None] * n
    pipe = mt.MicroPipe()
    warm = [mt.start(f1, pipe) for _ in range(WARMUP)]
    mt.sleep(0)
    for _ in warm:
        pipe.put(None)
    for t in warm:
        t.join()
    del warm
    state["parked"] = 0
    before = rss()
    start = mt.start
    t0 = time.perf_counter()
    for i in range(n):
        handles[i] = start(f1, pipe)
    t1 = time.perf_counter()
    mt.sleep(0)                          # every micro-thread runs to get()
    t2 = time.perf_counter()
    after = rss()
    blocked = sum(1 for t in handles[:1000] if t.state == "blocked")
    parked = state["parked"] if blocked == min(n, 1000) else -1
    return before, after, t1 - t0, t2 - t0, parked, handles


RUNNERS = {
    "micro_thread": run_micro_thread,
    "asyncio": run_asyncio,
    "greenlet": run_greenlet,
    "generator": run_generator,
}


def child(kind, n, gc_mode):
    if gc_mode == "off":
        gc.disable()
    before, after, spawn_s, park_s, parked, _handles = RUNNERS[kind](n)
    result = {
        "kind": kind,
        "n": n,
        "gc": gc_mode,
        "parked": parked,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_unit": (after - before) / n,
        "spawn_s": spawn_s,
        "park_s": park_s,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)      # skip the teardown of N parked units


def available(kind):
    from importlib.util import find_spec
    if kind == "micro_thread":
        if find_spec("_micro_thread") is None:
            return "no native _micro_thread kernel (the shim is not measured)"
    elif kind == "greenlet" and find_spec("greenlet") is None:
        return "greenlet not installed"
    return None


def measure(kind, n, gc_mode, timeout):
    proc = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", kind, str(n),
         gc_mode],
        capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        return {"kind": kind, "n": n, "gc": gc_mode,
                "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_bytes(n):
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    return f"{n / 1024:.1f} KiB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("KIND", "N", "GC"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=100_000,
                        help="units per kind (default 100000)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=KINDS)
    parser.add_argument("--million", type=int, default=1_000_000,
                        help="micro-threads for the large run "
                             "(default 1000000)")
    parser.add_argument("--no-million", action="store_true",
                        help="skip the large micro_thread run")
    parser.add_argument("--repeat", type=int, default=3,
                        help="fresh processes per (kind, N); the median "
                             "bytes/unit is reported (default 3)")
    parser.add_argument("-o", "--output", help="write the results as JSON")
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.child[2])
        return

    plan = [(kind, args.n, "on") for kind in args.kinds]
    if "micro_thread" in args.kinds and not args.no_million:
        plan.append(("micro_thread", args.million, "on"))
        plan.append(("micro_thread", args.million, "off"))
    results = []
    load_before = os.getloadavg()[0]
    print(f"{sys.executable} ({platform.python_version()}, "
          f"{sys.version.split('(')[1].split(')')[0]})")
    header = (f"{'kind':<14}{'N':>10}{'gc':>4}{'bytes/unit':>12}{'RSS after':>12}"
              f"{'create s':>10}{'park s':>9}  runs (bytes/unit)")
    print(header)
    print("-" * len(header))
    for kind, n, gc_mode in plan:
        why = available(kind)
        if why:
            print(f"{kind:<14}{n:>10}{gc_mode:>4}  skipped: {why}")
            results.append({"kind": kind, "n": n, "gc": gc_mode,
                            "skipped": why})
            continue
        runs = [measure(kind, n, gc_mode, timeout=600)
                for _ in range(args.repeat)]
        bad = [r for r in runs if "error" in r or r["parked"] != n]
        if bad:
            print(f"{kind:<14}{n:>10}{gc_mode:>4}  FAILED: {bad[0]}")
            results.append({"kind": kind, "n": n, "gc": gc_mode,
                            "failed": bad[0], "runs": runs})
            continue
        runs.sort(key=lambda r: r["bytes_per_unit"])
        med = runs[len(runs) // 2]
        entry = dict(med, runs=runs)
        results.append(entry)
        per_run = " ".join(f"{r['bytes_per_unit']:.0f}" for r in runs)
        print(f"{kind:<14}{n:>10}{gc_mode:>4}{med['bytes_per_unit']:>12.0f}"
              f"{fmt_bytes(med['rss_after']):>12}{med['spawn_s']:>10.3f}"
              f"{med['park_s']:>9.3f}  {per_run}")
    if args.output:
        doc = {
            "python": sys.executable,
            "version": sys.version,
            "machine": platform.machine(),
            "kernel": platform.release(),
            "page_size": PAGE,
            "load_avg_1min": [load_before, os.getloadavg()[0]],
            "method": "RSS delta / N from /proc/self/statm, fresh process "
                      "per run, median of the runs",
            "results": results,
        }
        with open(args.output, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
