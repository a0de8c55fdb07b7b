"""Shared helpers: interleaved timing, thread pinning, machine description, torch import."""
import contextlib
import gc
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np


def steady_allocator():
    """Keep freed memory in the process (glibc's mallopt: no trimming of the heap top,
    no mmap for blocks up to 32 MiB), so that NumPy temporaries of a fixed size are not
    page-faulted in anew on every call.  Without it the NumPy reference's time depends
    on the allocator's history: 70 ms vs 100 ms per small sweep in two runs of the same
    code, which moved the compiled/reference ratio between 3.3x and 4.6x.  Both sides of
    every comparison then run under the same settings.  Returns what was done, for the
    report."""
    import ctypes
    import ctypes.util
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (libc.mallopt(-3, 32 << 20) == 1       # M_MMAP_THRESHOLD: 32 MiB (glibc's max)
              and libc.mallopt(-1, 1 << 30) == 1)   # M_TRIM_THRESHOLD: 1 GiB
    except (OSError, AttributeError):
        ok = False
    return ("glibc mallopt: M_MMAP_THRESHOLD 32 MiB, M_TRIM_THRESHOLD 1 GiB" if ok
            else "default allocator (mallopt unavailable)")


def median(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(statistics.median(values)) if values else None


def load():
    """(1, 5, 15)-minute load averages of the machine (other users' work included)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class Section:
    """Wall time, process CPU time and load average around one part of the suite.

    cpu/wall well below 1 at one thread means the process was waiting for a core:
    absolute times are then inflated, the interleaved ratios much less so."""

    def __init__(self, name, log):
        self.name, self.log = name, log

    @staticmethod
    def _cpu():
        """CPU seconds of this process and of its finished subprocesses."""
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + ch.ru_utime + ch.ru_stime

    def __enter__(self):
        self.t0, self.c0, self.load0 = time.perf_counter(), self._cpu(), load()
        self.log(f"== {self.name} (load {self.load0})")
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = self._cpu() - self.c0
        self.load1 = load()
        self.log(f"   {self.name}: {self.wall:.1f}s wall, cpu/wall {self.cpu / max(self.wall, 1e-9):.2f}")
        return False

    def record(self):
        return {"seconds": round(self.wall, 2), "cpu_over_wall": round(self.cpu / max(self.wall, 1e-9), 3),
                "load_before": self.load0, "load_after": self.load1, "rss_mib_after": rss_now_mib()}


def interleave(tasks, rounds, warmup=0, before=None, after=None):
    """Run every task once per round, the order rotated each round (ABC, BCA, CAB ...),
    so slow drifts in the machine's load hit every task alike.

    tasks: dict name -> callable (its return value is kept).  before(name) / after(name,
    result, seconds) are called outside the timed region (snapshots, bookkeeping).
    Returns {name: [seconds per timed round]}, {name: [results per timed round]}.
    """
    names = list(tasks)
    times = {n: [] for n in names}
    results = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            if before is not None:
                before(n)
            t = time.perf_counter()
            res = tasks[n]()
            dt = time.perf_counter() - t
            if after is not None:
                after(n, res, dt, r >= warmup)
            if r >= warmup:
                times[n].append(dt)
                results[n].append(res)
    return times, results


def ratios(num, den):
    """Per-round ratios num[i] / den[i] of two interleaved series and their median."""
    per_round = [a / b for a, b in zip(num, den)]
    return median(per_round), per_round


def repeat_count(fn, min_seconds):
    """How many calls of fn make one timing sample of at least min_seconds (>= 1)."""
    t = time.perf_counter()
    fn()
    dt = time.perf_counter() - t
    return max(1, int(np.ceil(min_seconds / max(dt, 1e-6))))


def batched(fn, count):
    def run():
        for _ in range(count):
            fn()
    return run


@contextlib.contextmanager
def pinned_threads(n):
    """BLAS (threadpoolctl: numpy's and scipy's OpenBLAS, torch's MKL/OpenMP) and
    torch's intra-op pool limited to n threads."""
    from threadpoolctl import threadpool_limits
    torch = import_torch()
    old = None
    if torch is not None:
        old = torch.get_num_threads()
        torch.set_num_threads(n)
    with threadpool_limits(n):
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(old)


_TORCH = {}


def import_torch(disabled=None):
    """torch, or None when it is not installed (or disabled with --no-torch)."""
    if disabled is not None:
        _TORCH["disabled"] = disabled
    if _TORCH.get("disabled"):
        return None
    if "module" not in _TORCH:
        try:
            import torch
            _TORCH["module"] = torch
        except Exception as exc:            # ImportError, or a broken install
            _TORCH["module"] = None
            _TORCH["error"] = f"{type(exc).__name__}: {exc}"
    return _TORCH["module"]


def torch_note():
    if _TORCH.get("disabled"):
        return "PyTorch rows skipped (--no-torch)"
    return f"PyTorch not available ({_TORCH.get('error', 'not installed')}): torch rows skipped"


def free():
    gc.collect()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(flags & {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "amx_tile", "neon"})
    except OSError:
        pass
    return []


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit(path):
    try:
        out = subprocess.run(["git", "-C", path, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except Exception:
        return None


def environment(threads):
    """Machine, CPU, BLAS libraries and their thread counts, versions."""
    import scipy
    import threadpoolctl
    import lysep
    from lysep._activation import simd_level
    from lysep._threads import blas_kernel_note
    from threadpoolctl import threadpool_info
    torch = import_torch()
    libs = []
    for d in threadpool_info():
        libs.append({k: d.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                           "architecture", "threading_layer", "num_threads")}
                    | {"file": os.path.basename(d.get("filepath", ""))})
    bench_dir = os.path.dirname(os.path.abspath(__file__))
    env = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": _mem_total_gib(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "threadpoolctl": threadpoolctl.__version__,
        "lysep": getattr(lysep, "__version__", "?"),
        "lysep_path": os.path.dirname(lysep.__file__),
        "source_commit": _git_commit(bench_dir),
        "torch": torch.__version__ if torch is not None else None,
        "torch_blas": None,
        "blas_libraries_default_threads": libs,
        "blas_note": blas_kernel_note(simd_level(), libs),
        "threads_used": threads,
        "load_average_start": load(),
    }
    if torch is not None:
        cfg = torch.__config__.show()
        env["torch_blas"] = "MKL" if "BLAS_INFO=mkl" in cfg else ("OpenBLAS" if "openblas" in cfg.lower() else "?")
        env["torch_default_threads"] = torch.get_num_threads()
    try:
        import matplotlib
        env["matplotlib"] = matplotlib.__version__
    except Exception:
        env["matplotlib"] = None
    return env


def rss_now_mib():
    """Current resident set size of this process (Linux /proc), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return None


def rss_peak_mib():
    """Peak resident set size of this process so far (Linux: ru_maxrss in KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20
