"""Machine instructions per one-way switch and per generator send(), counted
with callgrind (a check of the timings that machine noise cannot move).

    python perf/switch_instructions.py [PYTHON]     (default: build/python)

Each workload runs twice, with N and 2N iterations; the difference of the
two instruction totals divided by the difference in switches (or sends) is
the cost of one, without the interpreter's start-up.  The workloads have
the shape of bench_switch.py's micro_thread_pingpong and generator_send.
Needs valgrind.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

N = 20000

PINGPONG = """
import sys
import micro_thread as mt

def echo(a, b):
    get = a.get
    put = b.put
    try:
        while True:
            put(get())
    except mt.PipeClosedError:
        pass

def main(loops):
    a = mt.MicroPipe(1)
    b = mt.MicroPipe(1)
    other = mt.start(echo, a, b)
    put = a.put
    get = b.get
    for i in range(loops):
        put(i); get()
        put(i); get()
        put(i); get()
        put(i); get()
        put(i); get()
    a.close()
    other.join()

mt.run(main, int(sys.argv[1]))
"""

GENERATOR = """
import sys

def echo():
    value = None
    while True:
        value = yield value

def main(loops):
    gen = echo()
    next(gen)
    send = gen.send
    for i in range(loops):
        send(i); send(i); send(i); send(i); send(i)
        send(i); send(i); send(i); send(i); send(i)

main(int(sys.argv[1]))
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


def per_unit(python, source, units_per_loop):
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
    python = subprocess.run(
        [python, "-c", "import sys; print(sys.executable)"],
        capture_output=True, text=True, check=True).stdout.strip()
    switch = per_unit(python, PINGPONG, 10)     # 5 round trips per loop
    send = per_unit(python, GENERATOR, 10)
    print(f"{python}")
    print(f"one-way switch (MicroPipe ping-pong): {switch:,.0f} instructions")
    print(f"generator send():                     {send:,.0f} instructions")
    print(f"ratio:                                {switch / send:.2f}x")


if __name__ == "__main__":
    main()
