"""Shared parts of the micro-thread regression tests (test_micro_thread*)."""

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
