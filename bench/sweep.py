"""LySep sweep timings: compiled vs NumPy reference (a), achieved GFLOP/s against the FLOP
model of ``bench.flops`` and a DGEMM measured in the same rounds (c), float32 vs float64,
and the scaling of one sweep in N, depth and width.

All states start from the same initialisation (``init_parameters`` with seed 0) on the
circle data, so the backends (or dtypes) walk the same sequence of sweeps; the line
searches can still take a different number of trials on the two (rounding decides some
accept/give-up tests), which is why the rows evaluated per sweep are reported beside
each ratio and a work-normalised ratio (seconds per model flop) is given too.
"""
import numpy as np

from ._common import free, interleave, median, ratios
from .flops import SweepCounter

BLOCKS = ("output", "z", "ridge", "bias")


def _data(N):
    from lysep.datasets import circle
    return circle(N, random_state=0)


def _state(backend, X, y, sizes, dtype, low_memory=False, n_threads=1):
    from lysep._fnn import init_parameters
    from lysep._sweep import LySepState
    W, b = init_parameters(sizes, np.random.default_rng(0), dtype)
    return LySepState(backend, X.astype(dtype), y, W, b, "tanh", 0.01, low_memory=low_memory,
                      n_threads=n_threads)


def gemm_task(S, dtype):
    """One square GEMM of size S through scipy's BLAS (the BLAS the kernels call)."""
    from scipy.linalg import blas
    rng = np.random.default_rng(1)
    A = np.asfortranarray(rng.standard_normal((S, S)).astype(dtype))
    B = np.asfortranarray(rng.standard_normal((S, S)).astype(dtype))
    C = np.zeros((S, S), dtype=dtype, order="F")
    f = blas.dgemm if dtype == np.float64 else blas.sgemm

    def run():
        f(1.0, A, B, 0.0, C, overwrite_c=True)
    run()
    return run


def _summarise_states(times, results, work, names):
    out = {}
    for n in names:
        w = work[n]
        secs = times[n]
        block_seconds = {b: median([r.get("seconds_" + b, 0.0) for r in results[n]]) for b in BLOCKS}
        gflops = [wk["flops"] / t / 1e9 for wk, t in zip(w, secs)]
        block_gflops = {}
        for b in BLOCKS:
            vals = [wk["flops_by_block"][b] / r["seconds_" + b] / 1e9
                    for wk, r in zip(w, results[n]) if r.get("seconds_" + b, 0) > 0 and wk["flops_by_block"][b] > 0]
            block_gflops[b] = median(vals)
        out[n] = {
            "seconds_median": median(secs),
            "seconds": secs,
            "trials": [r.get("trials") for r in results[n]],
            "failed_rows": [r.get("failed_rows") for r in results[n]],
            "fallbacks": [r.get("fallbacks") for r in results[n]],
            "rows_per_sample": [round(wk["rows_per_sample"], 3) for wk in w],
            "trials_match": all(wk["trials_match"] for wk in w),
            "gflop_per_sweep": median([wk["flops"] / 1e9 for wk in w]),
            "gflops": median(gflops),
            "block_seconds_median": block_seconds,
            "block_gflops_median": block_gflops,
        }
    return out


def _interleave_states(states, sizes, extra_tasks, rounds, warmup, log):
    """Sweep every state in `states` (and run `extra_tasks`) round by round, counting
    each timed sweep's work; returns (times, work, per-state summary)."""
    counters = {n: SweepCounter(s, sizes) for n, s in states.items()}
    work = {n: [] for n in states}
    tasks = {n: s.sweep for n, s in states.items()}
    tasks.update(extra_tasks)

    def before(n):
        if n in counters:
            counters[n].before()

    def after(n, res, dt, timed):
        if n in counters and timed:
            work[n].append(counters[n].after(res))
        if n in counters:
            log(f"   {n:9s} sweep {dt:8.3f}s  trials {res.get('trials')}")

    times, results = interleave(tasks, rounds, warmup, before, after)
    return times, work, _summarise_states(times, results, work, list(states))


def compare_backends(sizes, N, warmup, rounds, gemm_size, log):
    """(a) and (c): compiled vs reference LySep sweep, interleaved with a DGEMM and with
    the compiled low-memory sweep (timed only: the FLOP model counts the default's
    products, and the low-memory sweep recomputes residuals on top of them) and, where
    lysep has OpenMP, the compiled sweep with its Z steps and ridge blocks on two
    threads (BLAS stays on the caller's count; the same results, so the same work)."""
    from lysep import _fnn_blocks
    from lysep._backend import COMPILED, REFERENCE
    X, y = _data(N)
    states = {"reference": _state(REFERENCE, X, y, sizes, np.float64),
              "compiled": _state(COMPILED, X, y, sizes, np.float64)}
    lean = _state(COMPILED, X, y, sizes, np.float64, low_memory=True)
    extra = {"dgemm": gemm_task(gemm_size, np.float64), "compiled_low_memory": lean.sweep}
    two = _fnn_blocks.openmp_threads(2) == 2
    if two:
        extra["compiled_2_threads"] = _state(COMPILED, X, y, sizes, np.float64, n_threads=2).sweep
    times, work, out = _interleave_states(states, sizes, extra, rounds, warmup, log)
    lean_ratio, _ = ratios(times["compiled_low_memory"], times["compiled"])
    two_ratio = ratios(times["compiled"], times["compiled_2_threads"])[0] if two else None
    ratio, per_round = ratios(times["reference"], times["compiled"])
    norm = [(tr / wr["flops"]) / (tc / wc["flops"]) for tr, wr, tc, wc in
            zip(times["reference"], work["reference"], times["compiled"], work["compiled"])]
    dgemm_gflops = [2.0 * gemm_size ** 3 / t / 1e9 for t in times["dgemm"]]
    frac = [wk["flops"] / t / 1e9 / g for wk, t, g in zip(work["compiled"], times["compiled"], dgemm_gflops)]
    res = {
        "hidden": [sizes[1], len(sizes) - 2], "N": N, "warmup_sweeps": warmup, "rounds": rounds,
        "backends": out,
        "speedup_median": ratio, "speedup_per_round": per_round,
        "speedup_work_normalised_median": median(norm),
        "dgemm_size": gemm_size, "dgemm_gflops_median": median(dgemm_gflops),
        "dgemm_gflops": dgemm_gflops,
        "compiled_fraction_of_dgemm_median": median(frac),
        "compiled_fraction_of_dgemm_per_round": frac,
        "compiled_low_memory_seconds_median": median(times["compiled_low_memory"]),
        "low_memory_over_default_median": lean_ratio,
        "compiled_2_threads_seconds_median": median(times["compiled_2_threads"]) if two else None,
        "one_over_two_threads_median": two_ratio,
    }
    del states, lean, extra
    free()
    return res


def compare_dtypes(sizes, N, warmup, rounds, gemm_size, log):
    """float32 vs float64 compiled sweeps at one size, interleaved with SGEMM and DGEMM."""
    from lysep._backend import COMPILED
    X, y = _data(N)
    states = {"float64": _state(COMPILED, X, y, sizes, np.float64),
              "float32": _state(COMPILED, X, y, sizes, np.float32)}
    times, work, out = _interleave_states(
        states, sizes, {"dgemm": gemm_task(gemm_size, np.float64),
                        "sgemm": gemm_task(gemm_size, np.float32)}, rounds, warmup, log)
    ratio, per_round = ratios(times["float64"], times["float32"])
    gemm = {k: [2.0 * gemm_size ** 3 / t / 1e9 for t in times[k]] for k in ("dgemm", "sgemm")}
    res = {"hidden": [sizes[1], len(sizes) - 2], "N": N, "rounds": rounds, "warmup_sweeps": warmup,
           "dtypes": out, "speedup_f32_over_f64_median": ratio, "speedup_per_round": per_round,
           "gemm_size": gemm_size, "dgemm_gflops_median": median(gemm["dgemm"]),
           "sgemm_gflops_median": median(gemm["sgemm"]),
           "float32_fraction_of_sgemm": (out["float32"]["gflops"] / median(gemm["sgemm"])
                                         if out["float32"]["gflops"] else None)}
    del states
    free()
    return res


def scaling(axes, warmup, rounds, log):
    """Time per compiled sweep along each axis; the configurations of one axis are
    interleaved round by round.  axes: {axis: [(width, depth, N), ...]}."""
    from lysep._backend import COMPILED
    out = {}
    for axis, configs in axes.items():
        states, counters, work = {}, {}, {}
        for (w, depth, N) in configs:
            X, y = _data(N)
            sizes = (2,) + (w,) * depth + (2,)
            key = f"w{w}_d{depth}_N{N}"
            states[key] = _state(COMPILED, X, y, sizes, np.float64)
            counters[key] = SweepCounter(states[key], sizes)
            work[key] = []

        def before(n):
            counters[n].before()

        def after(n, res, dt, timed):
            if timed:
                work[n].append(counters[n].after(res))

        times, results = interleave({k: s.sweep for k, s in states.items()}, rounds, warmup, before, after)
        points = []
        for (w, depth, N), key in zip(configs, states):
            points.append({"width": w, "depth": depth, "N": N,
                           "seconds_median": median(times[key]),
                           "gflop_median": median([wk["flops"] / 1e9 for wk in work[key]]),
                           "rows_per_sample_median": median([wk["rows_per_sample"] for wk in work[key]])})
        xkey = {"N": "N", "depth": "depth", "width": "width"}[axis]
        x = np.log([p[xkey] for p in points])
        slope_t = float(np.polyfit(x, np.log([p["seconds_median"] for p in points]), 1)[0])
        slope_f = float(np.polyfit(x, np.log([p["gflop_median"] for p in points]), 1)[0])
        out[axis] = {"points": points, "slope_time": slope_t, "slope_model_flops": slope_f}
        log(f"   scaling in {axis}: slope of time {slope_t:.2f} (model flops {slope_f:.2f})")
        del states, counters
        free()
    return out
