"""Shared parts of the micro-thread regression tests (test_micro_thread*)."""

import signal
import threading
import time
import unittest

from test import support
from test.support import import_helper

# Skip the importing test module where the interpreter has no micro-threads.
_micro_thread = import_helper.import_module('_micro_thread')
micro_thread = import_helper.import_module('micro_thread.native')


class MicroThreadTestCase(unittest.TestCase):
    """Base class: a test starts in the root with no micro-thread around,
    and fails if it leaves micro-threads behind (they are killed)."""

    def setUp(self):
        self.assertEqual(micro_thread.enumerate(), [],
                         "an earlier test left micro-threads behind")
        self.assertIsNone(micro_thread.current())

    def tearDown(self):
        leftovers = micro_thread.enumerate()
        for t in leftovers:
            t.kill()
        for _ in range(100):
            if not micro_thread.enumerate():
                break
            micro_thread.sleep(0)
        support.gc_collect()
        self.assertEqual(leftovers, [], "the test left micro-threads behind")


def signal_then(testcase, action):
    """Interrupt the main OS thread with SIGUSR1, whose handler only counts,
    then call action(), each 50 ms later, from another OS thread.

    Returns the list to which the handler appends; the thread is joined and
    the handler restored when the test ends.
    """
    if not hasattr(signal, 'pthread_kill'):
        testcase.skipTest('needs signal.pthread_kill')
    hits = []
    old = signal.signal(signal.SIGUSR1, lambda *args: hits.append(1))
    testcase.addCleanup(signal.signal, signal.SIGUSR1, old)
    main_thread = threading.get_ident()

    def feeder():
        time.sleep(0.05)
        signal.pthread_kill(main_thread, signal.SIGUSR1)
        time.sleep(0.05)
        action()
    th = threading.Thread(target=feeder)
    th.start()
    testcase.addCleanup(th.join)
    return hits
