"""Helpers shared by the pyperf scripts of this directory.

Importable without pyperf (switch_instructions.py runs the timed loops
under callgrind on an interpreter that may not have it).
"""

import importlib.util
from time import perf_counter   # what pyperf.perf_counter is


def have(module):
    """True if *module* can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def native_micro_thread():
    """The micro_thread package if its native kernel is in use, else None."""
    if not have("_micro_thread"):
        return None
    import micro_thread
    return micro_thread if micro_thread.IMPLEMENTATION == "native" else None


def echo_until_closed(mt, a, b):
    """Put every item got from MicroPipe *a* into MicroPipe *b* until *a* is
    closed.

    The loop has no counter, like the generator a switch is compared with
    (``while True: value = yield value``): a counting loop would add an int
    object made and freed per round trip to what is measured."""
    get = a.get
    put = b.put
    try:
        while True:
            put(get())
    except mt.PipeClosedError:
        pass


def timed_round_trips(put, get, loops):
    """Time *loops* x 5 round trips ``put(i); get()`` against a ponger that
    echoes each item; return the seconds."""
    range_it = range(loops)
    t0 = perf_counter()
    for i in range_it:
        put(i); get()
        put(i); get()
        put(i); get()
        put(i); get()
        put(i); get()
    return perf_counter() - t0


def timed_round_trip(put, get, loops):
    """Time *loops* round trips ``put(i); get()`` (one per loop, for peers
    whose switch dwarfs the loop); return the seconds."""
    range_it = range(loops)
    t0 = perf_counter()
    for i in range_it:
        put(i)
        get()
    return perf_counter() - t0
