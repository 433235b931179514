"""Turn the JSON files in results/ into a Markdown summary with ratios.

    python report.py [--results DIR] [-o results/summary.md]

Reads (whichever exist): switch.json, spawn.json, deep.json, echo.json
(pyperf),
nouse-stock.json + nouse-patched.json (pyperf), mem_idle.json and
mem_idle-stock.json (mem_idle.py), machine.json (written by ``report.py
--machine PYTHON...``).  Needs pyperf.  Every ratio is computed from values
measured in the same run of the same script.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import subprocess
import sys

import pyperf

try:        # what `pyperf compare_to` uses
    from pyperf._compare import is_significant_benchs
except ImportError:             # a pyperf without it: leave the column "?"
    is_significant_benchs = None

HERE = os.path.dirname(os.path.abspath(__file__))

# Targets (from the issue).
SWITCH_VS_GEN_MAX = 2.0
IDLE_BYTES_MAX = 500
MILLION_RSS_MAX = 1 << 30
MILLION_START_MAX = 2.0
NOUSE_GEOMEAN_MAX = 1.02
NOUSE_SLOWER_MAX = 1.05


def load(path):
    if not os.path.exists(path):
        return None
    return {b.get_name(): b for b in
            pyperf.BenchmarkSuite.load(path).get_benchmarks()}


def load_avg(path):
    """(min, max) of the 1-minute load average over a pyperf file's runs."""
    with open(path) as f:
        doc = json.load(f)
    loads = [run["metadata"]["load_avg_1min"]
             for bench in doc.get("benchmarks", ())
             for run in bench.get("runs", ())
             if "load_avg_1min" in run.get("metadata", {})]
    return (min(loads), max(loads)) if loads else None


def mean(bench):
    return bench.mean()


def fmt_time(seconds):
    ns = seconds * 1e9
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} us"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.1f} ns"


def fmt_ratio(x):
    if x >= 100:
        return f"{x:.0f}x"
    if x >= 10:
        return f"{x:.1f}x"
    if x >= 0.1:
        return f"{x:.2f}x"
    return f"{x:.3f}x"


def cell(bench):
    m = bench.mean()
    sd = bench.stdev() if bench.get_nvalue() > 1 else 0.0
    return f"{fmt_time(m)} +- {fmt_time(sd)}"


def verdict(ok):
    return "**met**" if ok else "**MISSED**"


def binary_id(python):
    """(real path, sha256) of the binary behind a (venv) python."""
    try:
        real = subprocess.run(
            [python, "-c", "import os, sys; "
             "print(os.path.realpath(sys._base_executable))"],
            capture_output=True, text=True).stdout.strip()
        with open(real, "rb") as f:
            return real, hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "?", "?"


def machine_info(pythons):
    """Describe the machine and the interpreters (for machine.json)."""
    def run(*cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True,
                                  cwd=HERE).stdout.strip()
        except OSError:
            return "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "os": run("sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"),
        "memory": run("sh", "-c", "free -h | awk '/Mem:/{print $2}'"),
        "commit": run("git", "rev-parse", "HEAD"),
        "commit_subject": run("git", "log", "-1", "--format=%s"),
        "worktree_dirty": bool(run("git", "status", "--porcelain",
                                   "--untracked-files=no")),
        "interpreters": {},
    }
    info["binaries"] = {}
    for py in pythons:
        info["interpreters"][py] = run(
            py, "-c", "import sys; print(sys.version.replace(chr(10), ' '))")
        info["binaries"][py] = binary_id(py)
    return info


def section_machine(out, results):
    path = os.path.join(results, "machine.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        m = json.load(f)
    out.append("## Machine and build\n")
    out.append(f"- CPU: {m['cpu']}, `nproc` = {m['nproc']}, "
               f"memory {m['memory']}")
    out.append(f"- Kernel {m['kernel']}, {m['os']}")
    dirty = " (work tree had uncommitted changes)" if m["worktree_dirty"] \
        else ""
    out.append(f"- Commit `{m['commit']}`{dirty}: {m['commit_subject']}")
    for py, version in m["interpreters"].items():
        out.append(f"- `{py}`: {version}")
        then = m.get("binaries", {}).get(py)
        if then and os.path.exists(py):
            now = binary_id(py)
            if now[1] != then[1]:
                out.append(f"  - **warning**: `{then[0]}` was rebuilt during "
                           f"the run (sha256 {then[1][:12]} at the start, "
                           f"{now[1][:12]} at the end): results may mix "
                           f"the two builds")
    loads = []
    for name in ("switch", "spawn", "deep", "echo", "nouse-stock",
                 "nouse-patched"):
        path = os.path.join(results, name + ".json")
        if os.path.exists(path):
            la = load_avg(path)
            if la:
                loads.append(f"{name} {la[0]:.1f}-{la[1]:.1f}")
    path = os.path.join(results, "mem_idle.json")
    if os.path.exists(path):
        with open(path) as f:
            la = json.load(f).get("load_avg_1min")
        if la:
            loads.append(f"mem_idle {la[0]:.1f}-{la[1]:.1f}")
    if loads:
        out.append(f"- 1-minute load average while measuring (pyperf "
                   f"metadata; an idle machine shows about 1.0 under one "
                   f"benchmark process): {', '.join(loads)}")
    out.append("")


def section_switch(out, results, verdicts):
    s = load(os.path.join(results, "switch.json"))
    if not s:
        return
    out.append("## One switch (a value handed to another task)\n")
    ref = s.get("micro_thread_pingpong")
    out.append("| benchmark | time per one-way switch | median | "
               "micro_thread_pingpong / this |")
    out.append("|---|---|---|---|")
    for name, bench in s.items():
        ratio = fmt_ratio(mean(ref) / mean(bench)) if ref else "-"
        out.append(f"| {name} | {cell(bench)} | {fmt_time(bench.median())} "
                   f"| {ratio} |")
    out.append("")
    gen = s.get("generator_send")
    if ref and gen:
        r = mean(ref) / mean(gen)
        parts = [f"micro_thread switch = {fmt_ratio(r)} generator send"]
        for peer, label in (("greenlet_switch", "greenlet switch"),
                            ("uvloop_queue_pingpong", "uvloop Queue"),
                            ("gevent_channel_pingpong", "gevent Channel"),
                            ("asyncio_queue_pingpong", "asyncio.Queue"),
                            ("thread_simplequeue_pingpong",
                             "OS-thread SimpleQueue")):
            if peer in s:
                parts.append(f"{fmt_ratio(mean(ref) / mean(s[peer]))} "
                             f"{label}")
        out.append("Ratios: " + "; ".join(parts) + ".\n")
        rmed = ref.median() / gen.median()
        verdicts.append((f"switch <= {SWITCH_VS_GEN_MAX:g}x generator send",
                         f"{fmt_ratio(r)} ({fmt_time(mean(ref))} vs "
                         f"{fmt_time(mean(gen))}); ratio of medians "
                         f"{fmt_ratio(rmed)}",
                         r <= SWITCH_VS_GEN_MAX))


def section_spawn(out, results):
    s = load(os.path.join(results, "spawn.json"))
    if not s:
        return
    out.append("## Spawn + run to completion + join, per task\n")
    ref = s.get("micro_thread_spawn_join")
    out.append("| benchmark | time per task | median | "
               "micro_thread_spawn_join / this |")
    out.append("|---|---|---|---|")
    for name, bench in s.items():
        ratio = fmt_ratio(mean(ref) / mean(bench)) if ref else "-"
        out.append(f"| {name} | {cell(bench)} | {fmt_time(bench.median())} "
                   f"| {ratio} |")
    out.append("")


def section_deep(out, results, verdicts):
    s = load(os.path.join(results, "deep.json"))
    if not s:
        return
    out.append("## Blocking N frames deep\n")
    depths = sorted(int(n.rsplit("_", 1)[1]) for n in s
                    if n.startswith("micro_thread_deep_pingpong_"))
    out.append("| N | ping-pong per switch, one side N deep | first block "
               "(per task) | same without blocking | first suspension + "
               "resume (difference) |")
    out.append("|---|---|---|---|---|")
    diffs = {}
    for d in depths:
        pp = s.get(f"micro_thread_deep_pingpong_{d}")
        fb = s.get(f"micro_thread_first_block_{d}")
        fn = s.get(f"micro_thread_first_noblock_{d}")
        diff = mean(fb) - mean(fn) if fb and fn else None
        if diff is not None:
            diffs[d] = diff
        out.append(f"| {d} | {cell(pp) if pp else '-'} | "
                   f"{cell(fb) if fb else '-'} | {cell(fn) if fn else '-'} | "
                   f"{fmt_time(diff) if diff is not None else '-'} |")
    out.append("")
    pps = [mean(s[f"micro_thread_deep_pingpong_{d}"]) for d in depths]
    if len(depths) >= 2:
        lo, hi = depths[0], depths[-1]
        spread = max(pps) / min(pps)
        flat = spread <= 1.25
        out.append(f"Steady-state switch at depth {hi} / depth {lo}: "
                   f"{fmt_ratio(pps[-1] / pps[0])} (max/min over the depths "
                   f"{fmt_ratio(spread)}).")
        if lo in diffs and hi in diffs:
            slope = (diffs[hi] - diffs[lo]) / (hi - lo)
            mid = [d for d in depths if d not in (lo, hi)]
            line = (f"First suspension grows by {fmt_time(slope)} per frame "
                    f"(from N={lo} to N={hi})")
            linear = slope > 0
            if mid:
                m = mid[0]
                predicted = diffs[lo] + slope * (m - lo)
                line += (f"; at N={m} the straight line predicts "
                         f"{fmt_time(predicted)}, measured "
                         f"{fmt_time(diffs[m])}")
            out.append(line + ".\n")
            verdicts.append(("first suspension of a deep stack linear, later "
                             "switches constant",
                             f"{fmt_time(slope)}/frame on first suspension; "
                             f"steady switch max/min {fmt_ratio(spread)} "
                             f"over N={','.join(map(str, depths))}",
                             linear and flat))


def section_echo(out, results):
    s = load(os.path.join(results, "echo.json"))
    if not s:
        return
    any_bench = next(iter(s.values()))
    md = any_bench.get_metadata()
    out.append("## Echo server: server CPU time per echoed request\n")
    out.append(f"{md.get('echo_message_bytes', '?')}-byte messages, "
               f"{md.get('echo_connections', '?')} loopback connections in "
               f"ping-pong, driven by {md.get('echo_load_processes', '?')} "
               f"load generator processes; the value is the server "
               f"process's user + system CPU time per request (one OS "
               f"thread).\n")
    ref = s.get("echo_micro_thread")
    floor = s.get("echo_epoll_loop")
    out.append("| benchmark | server CPU per request | median | "
               "this / epoll loop | micro_thread / this |")
    out.append("|---|---|---|---|---|")
    for name, bench in s.items():
        vs_floor = fmt_ratio(mean(bench) / mean(floor)) if floor else "-"
        ratio = fmt_ratio(mean(ref) / mean(bench)) if ref else "-"
        out.append(f"| {name} | {cell(bench)} | {fmt_time(bench.median())} "
                   f"| {vs_floor} | {ratio} |")
    out.append("")
    if ref:
        parts = []
        for peer, label in (("echo_epoll_loop", "the hand-written epoll "
                             "loop"),
                            ("echo_uvloop_streams", "uvloop streams"),
                            ("echo_gevent_streamserver", "gevent"),
                            ("echo_asyncio_streams", "asyncio streams")):
            if peer in s:
                parts.append(f"{fmt_ratio(mean(ref) / mean(s[peer]))} "
                             f"{label}")
        out.append("micro_thread server CPU per request = "
                   + "; ".join(parts) + ".\n")


def section_mem(out, results, verdicts):
    path = os.path.join(results, "mem_idle.json")
    if not os.path.exists(path):
        return
    with open(path) as f:
        doc = json.load(f)
    stock = None
    spath = os.path.join(results, "mem_idle-stock.json")
    if os.path.exists(spath):
        with open(spath) as f:
            stock = {(r["kind"], r["n"], r.get("gc")): r
                     for r in json.load(f)["results"]}
    out.append("## Memory per idle unit, parked two Python frames deep\n")
    out.append(f"{doc['method']}.\n")
    out.append("| kind | N | gc | bytes / unit | RSS after | create (s) | "
               "create + park (s) | stock interpreter: bytes / unit |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in doc["results"]:
        key = (r["kind"], r["n"], r.get("gc"))
        if "bytes_per_unit" not in r:
            why = r.get("skipped") or f"FAILED: {r.get('failed')}"
            out.append(f"| {r['kind']} | {r['n']} | {r.get('gc', '')} | "
                       f"{why} | | | | |")
            continue
        st = stock.get(key) if stock else None
        st_cell = (f"{st['bytes_per_unit']:.0f}" if st and
                   "bytes_per_unit" in st else "-")
        out.append(f"| {r['kind']} | {r['n']:,} | {r.get('gc', 'on')} | "
                   f"{r['bytes_per_unit']:.0f} | "
                   f"{r['rss_after'] / (1 << 20):.0f} MiB | "
                   f"{r['spawn_s']:.3f} | {r['park_s']:.3f} | {st_cell} |")
    out.append("")
    by = {(r["kind"], r["n"], r.get("gc")): r for r in doc["results"]
          if "bytes_per_unit" in r}
    small = [r for (k, n, g), r in by.items()
             if k == "micro_thread" and n < 1_000_000 and g == "on"]
    if small:
        b = small[0]["bytes_per_unit"]
        verdicts.append((f"idle micro_thread parked 2 frames deep <= "
                         f"{IDLE_BYTES_MAX} bytes RSS",
                         f"{b:.0f} bytes (N={small[0]['n']:,})",
                         b <= IDLE_BYTES_MAX))
    for gc_mode in ("on", "off"):
        r = by.get(("micro_thread", 1_000_000, gc_mode))
        if r:
            ok = (r["rss_after"] <= MILLION_RSS_MAX and
                  r["park_s"] < MILLION_START_MAX)
            verdicts.append((f"1,000,000 micro-threads fit in 1 GB and start "
                             f"in < 2 s (gc {gc_mode})",
                             f"RSS {r['rss_after'] / (1 << 20):.0f} MiB "
                             f"(process total), started and parked in "
                             f"{r['park_s']:.2f} s",
                             ok))


def section_nouse(out, results, verdicts):
    st = load(os.path.join(results, "nouse-stock.json"))
    pa = load(os.path.join(results, "nouse-patched.json"))
    if not st or not pa:
        return
    out.append("## Zero cost when unused (stock vs patched, same script)\n")
    out.append("| benchmark | stock | patched | patched / stock | "
               "significant (pyperf) |")
    out.append("|---|---|---|---|---|")
    logs = []
    for name, sb in st.items():
        pb = pa.get(name)
        if not pb:
            continue
        r = mean(pb) / mean(sb)
        logs.append(math.log(r))
        sig = None
        if is_significant_benchs is not None:
            sig, _t = is_significant_benchs(sb, pb)
        sig_cell = "?" if sig is None else ("yes" if sig else "no")
        out.append(f"| {name} | {cell(sb)} | {cell(pb)} | {r:.3f} | "
                   f"{sig_cell} |")
    g = math.exp(sum(logs) / len(logs))
    out.append(f"| **geometric mean** | | | **{g:.3f}** | |")
    out.append("")
    slower = sorted(((mean(pa[n]) / mean(b), n) for n, b in st.items()
                     if n in pa and mean(pa[n]) / mean(b) > NOUSE_SLOWER_MAX
                     and is_significant_benchs is not None
                     and is_significant_benchs(b, pa[n])[0]), reverse=True)
    measured = (f"geometric mean patched/stock {g:.3f} over {len(logs)} "
                f"benchmarks")
    if slower:
        measured += "; significantly slower: " + ", ".join(
            f"{n} {r:.2f}x" for r, n in slower)
    verdicts.append((f"code not using micro-threads at stock speed "
                     f"(geometric mean <= {NOUSE_GEOMEAN_MAX}, no benchmark "
                     f"significantly slower than {NOUSE_SLOWER_MAX}x)",
                     measured, g <= NOUSE_GEOMEAN_MAX and not slower))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("-o", "--output")
    parser.add_argument("--machine", nargs="+", metavar="PYTHON",
                        help="write results/machine.json describing the "
                             "machine and these interpreters, then exit")
    args = parser.parse_args()
    if args.machine:
        with open(os.path.join(args.results, "machine.json"), "w") as f:
            json.dump(machine_info(args.machine), f, indent=2)
            f.write("\n")
        return

    out = ["# micro_thread benchmark summary\n",
           "Generated by `perf/report.py` from the JSON files in "
           "`perf/results/`. Times are per operation: pyperf's mean +- "
           "standard deviation, and the median; ratios are of means.\n"]
    verdicts = []
    section_machine(out, args.results)
    section_switch(out, args.results, verdicts)
    section_spawn(out, args.results)
    section_deep(out, args.results, verdicts)
    section_echo(out, args.results)
    section_mem(out, args.results, verdicts)
    section_nouse(out, args.results, verdicts)
    if verdicts:
        out.append("## Targets\n")
        out.append("| target | measured | verdict |")
        out.append("|---|---|---|")
        for target, measured, ok in verdicts:
            out.append(f"| {target} | {measured} | {verdict(ok)} |")
        out.append("")
    text = "\n".join(out)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
