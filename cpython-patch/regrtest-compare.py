"""Compare two regrtest logs: report tests that fail only in the second.

Usage: regrtest-compare.py STOCK.log PATCHED.log

A test fails when the final summary of regrtest (3.13) lists it under
"N test(s) failed:".  With -w, tests that passed when re-run have already been
moved out of that list, so it holds the tests that failed twice (crashes and
timeouts included).  Exit status 1 when the patched log has a failure the
stock log does not, or when either log has no summary (the run broke).
"""

import re
import sys

FAILED_HEADER = re.compile(r"^\d+ tests? failed:$")


def failures(path):
    """Return the set of failed test names in the summary of a regrtest log."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    if not any(line.startswith("== Tests result:") for line in lines):
        raise SystemExit(f"{path}: no regrtest summary: the run did not finish")
    failed = set()
    collecting = False
    for line in lines:
        if FAILED_HEADER.match(line):
            failed.clear()  # the last summary in the log is the final one
            collecting = True
        elif collecting and line.startswith("    "):
            failed.update(line.split())
        else:
            collecting = False
    return failed


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    stock, patched = (failures(path) for path in sys.argv[1:])
    new = sorted(patched - stock)
    print(f"stock 3.13.5 fails: {' '.join(sorted(stock)) or '(none)'}")
    print(f"patched fails:      {' '.join(sorted(patched)) or '(none)'}")
    if new:
        print(f"NEW FAILURES on the patched interpreter: {' '.join(new)}")
        return 1
    print("no new failures on the patched interpreter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
