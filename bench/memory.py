"""(e) Peak memory of the large case against the minimum the method needs.

The minimum: the auxiliary variables Z_l (m N n numbers, MATH.md §4 "Memory") plus the
data X, y.  Each measurement runs in a fresh subprocess (bench/_memprobe.py): the data is
made, then tracemalloc starts and either a LySepState is built and swept ("state": the
algorithm alone) or FNNClassifier(...).fit runs the same number of sweeps ("fit": what a
user pays, including the estimator's own forward passes).  Two figures per mode:
tracemalloc's peak of the traced (NumPy) allocations made by the method, and the peak RSS
above the RSS the process had before the method started (which holds the interpreter,
the libraries and the data); both are divided by the minimum after adding the data back
in.  Buffers malloc'ed inside the kernels are in the RSS only.

Peak RSS is /proc's VmHWM of the probe.  getrusage(RUSAGE_SELF).ru_maxrss is recorded
too but not used: on Linux it survives exec, and Python's subprocess spawns through
vfork, so a probe started after the suite's large sections reports the *suite's* peak
(12.7 GB for a probe whose own peak was 5.5 GB in the first full run).
"""
import json
import os
import subprocess
import sys


def probe(mode, N, width, depth, dtype="float64", sweeps=1, threads=1, timeout=1800,
          low_memory=False):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_memprobe.py")
    cfg = dict(mode=mode, N=N, width=width, depth=depth, dtype=dtype, sweeps=sweeps, threads=threads,
               low_memory=low_memory)
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, script, json.dumps(cfg)], capture_output=True, text=True,
                         timeout=timeout, env=env, cwd=os.path.dirname(script))
    if out.returncode != 0:
        return {"mode": mode, "error": out.stderr.strip()[-2000:]}
    r = json.loads(out.stdout.strip().splitlines()[-1])
    r["traced_over_minimum"] = (r["tracemalloc_peak_mib"] + r["data_mib"]) / r["minimum_mib"]
    r["rss_over_minimum"] = (r["rss_peak_mib"] - r["rss_baseline_mib"] + r["data_mib"]) / r["minimum_mib"]
    return r


def peak_memory(N, width, depth, sweeps, threads, log):
    res = {}
    for mode in ("state", "fit", "state_low_memory", "fit_low_memory"):
        r = probe(mode.replace("_low_memory", ""), N, width, depth, sweeps=sweeps, threads=threads,
                  low_memory=mode.endswith("_low_memory"))
        if "error" in r:
            log(f"   memory probe {mode} failed: {r['error'][-300:]}")
        else:
            log(f"   {mode}: minimum {r['minimum_mib']:.0f} MiB, traced peak {r['tracemalloc_peak_mib']:.0f} MiB "
                f"({r['traced_over_minimum']:.2f}x), RSS peak above baseline "
                f"{r['rss_peak_mib'] - r['rss_baseline_mib']:.0f} MiB ({r['rss_over_minimum']:.2f}x)")
        res[mode] = r
    return res
