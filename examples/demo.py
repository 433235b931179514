"""Micro-threads in a nutshell: plain blocking-style code, ten thousand at once.

Each worker below is an ordinary function that blocks -- ``for item in inbox``
waits for the next item -- yet 10,000 of them run in this one OS thread.
Run it with the patched interpreter (``make demo``) or, slower but with the
same results, on any CPython 3.10+ with ``PYTHONPATH=Lib``.
"""

import sys
import time

import micro_thread


def worker(number, inbox, results):
    """Add up what arrives in inbox until it is closed; report the sum."""
    total = 0
    for item in inbox:          # suspends this micro-thread until an item comes
        total += item
    results.put((number, total))


def slow_answer():
    micro_thread.sleep(10)
    return 42


def main(count):
    results = micro_thread.MicroPipe()
    inboxes = [micro_thread.MicroPipe() for _ in range(count)]
    with micro_thread.Group() as group:
        for number, inbox in enumerate(inboxes):
            group.start(worker, number, inbox, results)
        started = time.perf_counter()
        for value in range(1, 11):
            for inbox in inboxes:
                inbox.put(value)
        for inbox in inboxes:
            inbox.close()
        totals = dict(results.get() for _ in range(count))
        elapsed = time.perf_counter() - started
    assert all(total == 55 for total in totals.values()), "a sum went wrong"
    print(f"{count} micro-threads each summed 10 items: all {len(totals)} sums"
          f" are 55 ({elapsed:.3f} s)")

    # Blocking calls honour timeouts; the builtin TimeoutError comes out of
    # whatever call was waiting.
    try:
        with micro_thread.timeout(0.05):
            micro_thread.start(slow_answer).join()
    except TimeoutError:
        print("join() of a 10 s sleeper gave up after 0.05 s with TimeoutError")


if __name__ == "__main__":
    print(f"Python {sys.version}")
    print(f"micro_thread implementation: {micro_thread.IMPLEMENTATION}")
    micro_thread.run(main, 10_000 if micro_thread.IMPLEMENTATION == "native" else 200)
