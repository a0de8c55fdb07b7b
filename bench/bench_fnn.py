"""Same-run ratios of the compiled kernels against the NumPy reference (issue: speed of
Algorithm 1 and of the GD baseline).  Run: python bench/bench_fnn.py [--quick]

Each timing is the median of repeats, the two backends timed in turn within every repeat
(interleaved, so machine load hits both alike); both run the same orchestration
(lysep._sweep) from the same start, in the same process, with BLAS pinned to the same
number of threads.  Only the ratios are meant to be compared across machines.
"""
import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from lysep._backend import COMPILED, REFERENCE
from lysep._fnn import init_parameters
from lysep._sweep import GDState, LySepState
from lysep.datasets import circle

try:
    from ._common import steady_allocator
except ImportError:             # run as a script: python bench/bench_fnn.py
    from _common import steady_allocator


def _interleaved(fns, repeats):
    """Median seconds of each callable, the callables timed in turn within every repeat
    so that load changes on a shared machine hit all of them alike."""
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def _params(sizes, dtype):
    return init_parameters(sizes, np.random.default_rng(0), dtype)


def sweep_runner(backend, X, y, sizes, warmup, dtype=np.float64):
    """A LySep state past its first sweeps (whose work differs); returns its sweep."""
    W, b = _params(sizes, dtype)
    state = LySepState(backend, X.astype(dtype), y, W, b, "tanh", 0.01)
    for _ in range(warmup):
        state.sweep()
    return state.sweep


def gd_runner(backend, X, y, sizes, dtype=np.float64):
    """One GD iteration (update from the last forward, then the next forward)."""
    W, b = _params(sizes, dtype)
    state = GDState(backend, X.astype(dtype), y, W, b, "tanh", 0.1)
    state.forward()

    def iteration():
        state.update()
        state.forward()
    iteration()
    return iteration


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1)")
    args = parser.parse_args(argv)
    print(steady_allocator())
    repeats = 3 if args.quick else 11
    X, y = circle(3000, random_state=0)
    sizes = (2,) + (20,) * 19 + (2,)
    with threadpool_limits(args.threads):
        rows = []
        for name, make in (("LySep sweep", lambda be: sweep_runner(be, X, y, sizes, 5)),
                           ("GD iteration", lambda be: gd_runner(be, X, y, sizes))):
            t_c, t_ref = _interleaved([make(COMPILED), make(REFERENCE)], repeats)
            rows.append((name, t_c, t_ref))
    print(f"19 hidden tanh layers x width 20, N = 3000, float64, {args.threads} BLAS thread(s)")
    print(f"{'':14s} {'compiled':>12s} {'reference':>12s} {'ref/compiled':>13s}")
    for name, t_c, t_ref in rows:
        print(f"{name:14s} {t_c * 1e3:10.2f}ms {t_ref * 1e3:10.2f}ms {t_ref / t_c:12.2f}x")
    return rows


if __name__ == "__main__":
    main()
