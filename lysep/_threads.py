"""BLAS thread control around the compiled regions (threadpoolctl).

One thread is the fastest setting for the narrow layers LySep is built for: OpenBLAS
splits a (3000 x 20) @ (20 x 20) product across threads whose synchronisation costs
more than the product, and on a loaded machine the waiting threads made one forward
pass 20x slower (130 ms against 6.5 ms, 19 layers of width 20, measured here).

The limit is process-wide (BLAS has no per-thread setting), so nested or concurrent
users share it: the first one in sets it and the last one out restores the original.
That keeps two fits running in two Python threads at the same thread count, hence
bit-identical to the same fits run one after the other.
"""
import contextlib
import os
import threading

_lock = threading.Lock()
_controller = None
_active = {"depth": 0, "limiter": None}


@contextlib.contextmanager
def blas_threads(n_threads):
    """Limit BLAS to `n_threads` inside the block (None or -1: leave BLAS alone)."""
    global _controller
    if n_threads is None or n_threads == -1:
        yield
        return
    with _lock:
        if _controller is None:           # created lazily: inspecting libraries is slow
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController()
        if _active["depth"] == 0:
            _active["limiter"] = _controller.limit(limits=n_threads, user_api="blas")
        _active["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _active["depth"] -= 1
            if _active["depth"] == 0:
                _active["limiter"].restore_original_limits()
                _active["limiter"] = None


def usable_cores():
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:             # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def kernel_threads(n_threads):
    """Threads for lysep's own parallel kernels (the hidden Z blocks' rows): the
    estimators' n_threads, with None or -1 meaning every usable core."""
    if n_threads is None or n_threads == -1:
        return usable_cores()
    return int(n_threads)


def split_threads(n_threads, layer_pairs, itemsize, blas_only_work=0, kernels=True):
    """(BLAS threads, lysep kernel threads) of a fit with a budget of `n_threads`.

    lysep's OpenMP kernels (the forward pass's narrow layers, and the LySep Z steps and
    ridge blocks between layers within the narrow kernels' width) and OpenBLAS keep
    separate thread pools, and the idle
    threads of each spin for a while before they sleep.  With both pools at two threads
    on a 2-core machine, a sweep of a network with narrow and wide layers took 1.2-2x
    the time of the same sweep with either pool alone (``bench/bench_threads.py``), so
    one pool gets the budget: lysep's kernels when the blocks between narrow layers
    hold at least a third of the products' work, else BLAS.  The work of a weight
    matrix is n_in * n_out per sample (`layer_pairs`: the (n_in, n_out) of every hidden
    layer's incoming weights); `blas_only_work` adds what always runs in BLAS (the CNN's
    conv products).  kernels=False (a fit with no OpenMP kernel: the CNN's GD, whose
    forward pass is not threaded) gives BLAS the budget.

    Returns (blas, kernel): `blas` is what ``blas_threads`` takes (n_threads itself,
    so -1 or None still leave BLAS at its default, or 1), `kernel` a thread count.
    """
    kernel = kernel_threads(n_threads)
    if not kernels or kernel == 1:
        return n_threads, 1
    from . import _fnn_blocks
    width = _fnn_blocks.narrow_width(itemsize)
    narrow = sum(a * b for a, b in layer_pairs if a <= width and b <= width)
    other = sum(a * b for a, b in layer_pairs if a > width or b > width) + blas_only_work
    if narrow == 0 or 2 * narrow < other or _fnn_blocks.openmp_threads(2) == 1:
        return n_threads, 1
    return 1, kernel


# OpenBLAS's names of the kernel sets that use AVX-512 (threadpoolctl's "architecture")
_OPENBLAS_AVX512 = {"skylakex", "cooperlake", "sapphirerapids"}


def blas_kernel_note(simd_level, blas_libs):
    """A note when OpenBLAS runs AVX2 kernels on a CPU with AVX-512, or None.

    `simd_level` is ``_activation.simd_level()`` (what this CPU lets lysep's own kernels
    run), `blas_libs` threadpoolctl's records of the BLAS libraries loaded.  OpenBLAS up to
    0.3.31 picks its Haswell kernels on AMD Zen 5 (its runtime detection has no case for
    that CPU family, OpenMathLib/OpenBLAS#6029); the AVX-512 kernels run the wide products
    (every layer wider than the narrow kernels' rows) about 1.5x faster there.  The kernel
    set is chosen when the library loads, so only the environment of a new process can
    change it: lysep reports this, it does not act on it.
    """
    if simd_level != "avx512":
        return None
    slow = sorted({f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')})"
                   for lib in blas_libs
                   if lib.get("internal_api") == "openblas"
                   and str(lib.get("architecture")).lower() not in _OPENBLAS_AVX512})
    if not slow:
        return None
    return ("this CPU has AVX-512 but " + ", ".join(slow) + (" run" if len(slow) > 1 else " runs")
            + " AVX2 kernels (OpenBLAS "
            "up to 0.3.31 does not recognise AMD Zen 5, OpenMathLib/OpenBLAS#6029); layers "
            "wider than lysep's narrow kernels train about 1.3-1.5x faster with "
            "OPENBLAS_CORETYPE=SKYLAKEX set before Python starts")
