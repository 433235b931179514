"""Machine instructions per one-way switch and per generator send(), counted
with callgrind (a check of the timings that machine noise cannot move).

    python perf/switch_instructions.py [PYTHON]     (default: build/python)

Each workload runs twice, with N and 2N iterations; the difference of the
two instruction totals divided by the difference in switches (or sends) is
the cost of one, without the interpreter's start-up.  The workloads
are bench_switch.py's micro_thread_pingpong and generator_send themselves.
Needs valgrind.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

N = 20000

# The benchmark's own functions, timed loops included (their timing is
# ignored here).
WORKLOAD = """
import sys
sys.path.insert(0, {perf_dir!r})
import bench_switch
import micro_thread
loops = int(sys.argv[1])
if {switch!r}:
    bench_switch.mt_pingpong(loops, micro_thread)
else:
    bench_switch.generator_send(loops)
"""


def instructions(python, script, loops):
    """Total instructions callgrind counts for `python script loops`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
             python, script, str(loops)],
            capture_output=True, text=True, check=True)
    match = re.search(r"Collected\s*:\s*([\d,]+)|I\s+refs:\s*([\d,]+)",
                      proc.stderr)
    if match is None:
        raise RuntimeError("no instruction count in valgrind's output:\n"
                           + proc.stderr[-2000:])
    return int((match.group(1) or match.group(2)).replace(",", ""))


def per_unit(python, switch, units_per_loop):
    source = WORKLOAD.format(perf_dir=os.path.dirname(os.path.abspath(__file__)),
                             switch=switch)
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    try:
        small = instructions(python, f.name, N)
        large = instructions(python, f.name, 2 * N)
    finally:
        os.unlink(f.name)
    return (large - small) / (N * units_per_loop)


def main():
    if shutil.which("valgrind") is None:
        sys.exit("switch_instructions.py: valgrind is not installed")
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(os.path.dirname(here), "build", "python")
    python = sys.argv[1] if len(sys.argv) > 1 else default
    # Run the real binary: valgrind does not follow build/python's exec.
    try:
        probe = subprocess.run(
            [python, "-c", "import _micro_thread, sys; print(sys.executable)"],
            capture_output=True, text=True)
    except OSError as exc:
        sys.exit(f"switch_instructions.py: cannot run {python}: {exc}")
    if probe.returncode != 0:
        sys.exit(f"switch_instructions.py: {python} is not a micro-thread "
                 f"interpreter:\n{probe.stderr.strip()}")
    python = probe.stdout.strip()
    switch = per_unit(python, True, 10)     # 5 round trips per loop
    send = per_unit(python, False, 10)      # 10 sends per loop
    print(f"{python}")
    print(f"one-way switch (MicroPipe ping-pong): {switch:,.0f} instructions")
    print(f"generator send():                     {send:,.0f} instructions")
    print(f"ratio:                                {switch / send:.2f}x")


if __name__ == "__main__":
    main()
