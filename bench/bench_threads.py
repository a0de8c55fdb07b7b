"""Two thread pools at once against one: LySep sweeps with a budget of two threads.

lysep's OpenMP kernels (Z steps and ridge blocks between narrow layers) and OpenBLAS (the
wider layers' products) keep separate thread pools.  For each network this times, in a
fresh process per setting (the pools are process-wide, and an idle pool's threads keep
spinning after a call), the median sweep with

- ``1+1``: one BLAS thread, one kernel thread;
- ``both``: two BLAS threads and two kernel threads (what ``n_threads=2`` did before
  ``lysep._threads.split_threads``);
- ``split``: what ``split_threads`` gives ``n_threads=2`` (two threads to one pool);
- ``other``: the two threads to the pool ``split`` did not choose.

The settings are run round-robin, the order rotated each round; the ratios are medians of
per-round ratios against ``1+1``.  ``--low-memory`` times the low-memory sweep
(``low_memory=True``) instead.  Run:
``python bench/bench_threads.py [--quick] [--low-memory]``.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

NETWORKS = [(20,) * 19, (64,) + (20,) * 4, (32, 32, 64, 32, 32), (256,) + (20,) * 6,
            (20,) * 6 + (256,), (256, 256, 20, 20)]

_CHILD = r"""
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_limits
from lysep._backend import COMPILED
from lysep._fnn import init_parameters
from lysep._sweep import LySepState
from lysep.datasets import circle
hidden, n_blas, n_kernel, N, sweeps, low_memory = json.loads(sys.argv[1])
X, y = circle(N, random_state=0)
W, b = init_parameters((2, *hidden, 2), np.random.default_rng(0), np.float64)
with threadpool_limits(n_blas, user_api="blas"):
    state = LySepState(COMPILED, X, y, W, b, "tanh", 0.01, n_threads=n_kernel,
                       low_memory=low_memory)
    for _ in range(2):
        state.sweep()
    times = []
    for _ in range(sweeps):
        t = time.perf_counter()
        state.sweep()
        times.append(time.perf_counter() - t)
print(json.dumps(sorted(times)[len(times) // 2]))
"""


def _sweep_seconds(hidden, n_blas, n_kernel, N, sweeps, low_memory):
    out = subprocess.run([sys.executable, "-c", _CHILD,
                          json.dumps([list(hidden), n_blas, n_kernel, N, sweeps, low_memory])],
                         capture_output=True, text=True, check=True, env=os.environ.copy(),
                         # not the checkout's root, whose lysep/ has no compiled modules
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    return json.loads(out.stdout)


def settings(hidden):
    """The (BLAS threads, kernel threads) of each setting for a network with these
    hidden widths (circle data: 2 inputs, 2 classes; float64)."""
    from lysep._threads import split_threads
    dims = (2, *hidden, 2)
    split = split_threads(2, list(zip(dims[:-2], dims[1:-1])), 8)
    other = (1, 2) if split == (2, 1) else (2, 1)
    return {"1+1": (1, 1), "both": (2, 2), "split": split, "other": other}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, fewer samples")
    parser.add_argument("--low-memory", action="store_true",
                        help="time the low-memory sweep (low_memory=True)")
    args = parser.parse_args(argv)
    from lysep import _fnn_blocks
    if _fnn_blocks.openmp_threads(2) < 2:
        print("lysep was built without OpenMP: its kernels run on one thread; nothing to compare")
        return
    N, rounds, sweeps = (3000, 1, 7) if args.quick else (10000, 3, 7)
    mode = "low-memory sweep" if args.low_memory else "sweep"
    print(f"circle, N = {N}, float64, {mode}, budget 2 threads, narrow width "
          f"{_fnn_blocks.narrow_width(8)}; {rounds} round(s), median of {sweeps} sweeps "
          "per process")
    print(f"{'hidden layers':<28}{'1+1 ms':>9}{'both':>8}{'split':>8}{'other':>8}"
          f"{'  split gives':>14}")
    for hidden in NETWORKS:
        setting = settings(hidden)
        times = {name: [] for name in setting}
        names = list(setting)
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                times[name].append(_sweep_seconds(hidden, *setting[name], N, sweeps,
                                                  args.low_memory))
        base = statistics.median(times["1+1"])
        ratio = {name: statistics.median([t / b for t, b in zip(times[name], times["1+1"])])
                 for name in names[1:]}
        label = "x".join(str(w) for w in hidden) if len(set(hidden)) > 1 else \
            f"{len(hidden)}x{hidden[0]}"
        pool = "BLAS" if setting["split"] == (2, 1) else "kernels"
        print(f"{label:<28}{base * 1e3:>9.1f}{ratio['both']:>8.2f}{ratio['split']:>8.2f}"
              f"{ratio['other']:>8.2f}{pool:>14}")
    print("columns after '1+1': sweep time / the one-thread time (below 1 is faster)")


if __name__ == "__main__":
    main()
