"""Benchmark lysep._conv.conv_gram against one large NumPy dgemm (not a test).

Workload: N=1000 images 28x28, C_in=8, k=3, stride 1, pad 1 (Ho=Wo=28,
k*k*C_in = 72), C_out=16, float64.  conv_gram forms G = Phi^T Phi (the narrow Gram
kernel of src/_smallgemm.h up to 128 columns, dsyrk beyond) and RHS = Phi^T Zb (dgemm)
one block of samples at a time: at most `chunk` samples, fewer when fewer fill about
512 KB of patch rows (so the "patch buffer" column is an upper bound).

Flop counts: syrk n*n*m (the triangle computed: m*n*(n+1)) + gemm 2*m*n*C_out
with n = 72, m = N*Ho*Wo; the im2col copies are counted as zero flops.  The
reference is one square float64 numpy matmul (2*s^3 flops) in the same run
with the same BLAS thread count.

Usage: python bench/bench_conv.py [--chunks 1,4,16,64 --reps 5 --cout 16]
Note: if OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are set on this machine they
slow numpy's OpenBLAS; compare runs with and without them.
"""

import argparse
import time

import numpy as np

from lysep import _conv


def best_time(fn, reps):
    fn()                                    # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--cout", type=int, default=16)
    ap.add_argument("--chunks", default="1,4,16,64,256")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gemm-size", type=int, default=3000)
    args = ap.parse_args()

    N, H, W, C, k, s, p, Co = args.n, 28, 28, 8, 3, 1, 1, args.cout
    Ho = Wo = (H + 2 * p - k) // s + 1
    KK, m = k * k * C, N * Ho * Wo
    rng = np.random.default_rng(0)
    U = rng.standard_normal((N, H, W, C))
    Zb = rng.standard_normal((N, Ho, Wo, Co))
    G = np.empty((KK, KK))
    R = np.empty((KK, Co))
    flops = m * KK * (KK + 1) + 2 * m * KK * Co

    try:
        from threadpoolctl import threadpool_info
        blas = [(d["internal_api"], d.get("architecture"), d["num_threads"], d["filepath"].split("/")[-1])
                for d in threadpool_info() if d["user_api"] == "blas"]
        print("BLAS:", blas)
    except ImportError:
        pass

    S = args.gemm_size
    A, B = rng.standard_normal((S, S)), rng.standard_normal((S, S))
    t_mm = best_time(lambda: A @ B, max(2, args.reps // 2))
    gf_mm = 2 * S**3 / t_mm / 1e9
    print(f"numpy dgemm {S}x{S}x{S}: {t_mm * 1e3:8.1f} ms  {gf_mm:6.1f} GFLOP/s")
    # the kernels call scipy's BLAS (scipy.linalg.cython_blas), which may be a
    # different OpenBLAS build than numpy's: time the same product through it
    from scipy.linalg import blas as sblas
    Af, Bf = np.asfortranarray(A), np.asfortranarray(B)
    t_sp = best_time(lambda: sblas.dgemm(1.0, Af, Bf), max(2, args.reps // 2))
    print(f"scipy.linalg.blas dgemm (the kernels' BLAS) {S}^3: {t_sp * 1e3:8.1f} ms  "
          f"{2 * S**3 / t_sp / 1e9:6.1f} GFLOP/s")

    print(f"conv_gram N={N} 28x28 C_in={C} k={k} (kkC={KK}) C_out={Co}: "
          f"{flops / 1e9:.2f} GFLOP, patch rows m={m}")
    for chunk in (int(c) for c in args.chunks.split(",")):
        t = best_time(lambda: _conv.conv_gram(U, Zb, k, s, p, G, R, chunk), args.reps)
        gf = flops / t / 1e9
        print(f"  chunk={chunk:4d} ({chunk * Ho * Wo * KK * 8 / 2**20:6.1f} MiB patch buffer): "
              f"{t * 1e3:8.1f} ms  {gf:6.1f} GFLOP/s  ratio to dgemm {gf / gf_mm:5.2f}")

    # split of the time: patch building alone (im2col) for the default chunk
    chunk = 16
    buf = np.empty((chunk * Ho * Wo, KK))
    def im2col_all():
        for n0 in range(0, N, chunk):
            n1 = min(n0 + chunk, N)
            _conv.im2col(U, k, s, p, buf[: (n1 - n0) * Ho * Wo], n0, n1)
    t_i = best_time(im2col_all, args.reps)
    print(f"  im2col alone (chunk={chunk}): {t_i * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
