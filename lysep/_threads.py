"""BLAS thread control around the compiled regions (threadpoolctl).

One thread is the fastest setting for the narrow layers LySep is built for: OpenBLAS
splits a (3000 x 20) @ (20 x 20) product across threads whose synchronisation costs
more than the product, and on a loaded machine the waiting threads made one forward
pass 20x slower (130 ms against 6.5 ms, 19 layers of width 20, measured here).
"""
import contextlib

_controller = None


def blas_threads(n_threads):
    """Context manager limiting BLAS to `n_threads` (None or -1: leave BLAS alone)."""
    global _controller
    if n_threads is None or n_threads == -1:
        return contextlib.nullcontext()
    if _controller is None:                 # created lazily: inspecting libraries is slow
        from threadpoolctl import ThreadpoolController
        _controller = ThreadpoolController()
    return _controller.limit(limits=n_threads, user_api="blas")
