"""Benchmark one LySep-CNN sweep against one GD-CNN iteration on the same batch (not a test).

Workload: a batch of 1,000 Fashion-MNIST images (random images if the data set is not
installed), 28x28x1, two conv layers of 8 channels (k=3, stride 1, pad 1, tanh, 2x2
average pooling: 28 -> 14 -> 7), one hidden dense layer of 64, 10 classes.  One LySep
sweep is Algorithm 2 once over every block (output, last hidden Z, dense ridge/bias,
conv Z blocks with per-sample line search, chunked conv kernel solves); one GD iteration
is a forward pass plus backpropagation and the parameter step.  Both run in the same
process with BLAS pinned to one thread; the median of the repeats is reported (after one
warm-up), and the ratio sweep / GD iteration is printed (target <= 3).

Usage: python bench/bench_cnn.py [--n 1000 --reps 7 --dtype float64]
"""
import argparse
import statistics
import time

import numpy as np

from lysep._cnn import init_cnn_parameters
from lysep._cnn_sweep import CNN_BACKENDS, Architecture, CNNGDState, CNNLySepState
from lysep._threads import blas_threads


def median_time(fn, reps):
    fn()                                    # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_batch(n, dtype):
    try:
        from lysep.datasets import load_fashion_mnist
        X, y, _, _ = load_fashion_mnist()
        return X[:n, :, :, None].astype(dtype), y[:n].astype(np.int64), "Fashion-MNIST"
    except Exception:
        rng = np.random.default_rng(0)
        return rng.random((n, 28, 28, 1)).astype(dtype), rng.integers(0, 10, n), "random"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--channels", type=int, default=8)
    args = ap.parse_args()
    dtype = np.dtype(args.dtype).type
    X, y, source = load_batch(args.n, dtype)
    arch = Architecture((28, 28, 1), (args.channels,) * 2, 3, 1, 1, (2, 2), "avg", (64,), 10)
    backend = CNN_BACKENDS["compiled"]
    with blas_threads(1):
        W, b = init_cnn_parameters(arch, np.random.default_rng(0), dtype)
        lysep = CNNLySepState(backend, arch, X, y, W, b, "tanh", 0.01)
        t_sweep = median_time(lysep.sweep, args.reps)
        W, b = init_cnn_parameters(arch, np.random.default_rng(0), dtype)
        gd = CNNGDState(backend, arch, X, y, W, b, "tanh", 0.1)

        def gd_iteration():
            gd.forward()
            gd.update()
        t_gd = median_time(gd_iteration, args.reps)
    print(f"{source} batch of {args.n}, conv channels ({args.channels}, {args.channels}), "
          f"{args.dtype}, 1 BLAS thread, median of {args.reps}")
    print(f"  LySep-CNN sweep      {1e3 * t_sweep:8.1f} ms")
    print(f"  GD-CNN iteration     {1e3 * t_gd:8.1f} ms")
    print(f"  ratio sweep / GD     {t_sweep / t_gd:8.2f}  (target <= 3)")


if __name__ == "__main__":
    main()
