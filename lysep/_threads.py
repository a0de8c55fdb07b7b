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
