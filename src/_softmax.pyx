"""Compiled softmax cross-entropy block (MATH.md §1): loss, P - Y and accuracy in one pass."""
from cython cimport floating
from libc.stdint cimport int64_t
from _cross_entropy cimport ce_rows


def softmax_ce(const floating[:, ::1] G, const int64_t[::1] y, floating[:, ::1] P_out=None):
    """Return (sum of row losses, number of rows whose argmax is y); P_out := softmax(G) - Y."""
    cdef Py_ssize_t N = G.shape[0], K = G.shape[1], n_correct = 0, i
    cdef double total = 0
    if y.shape[0] != N:
        raise ValueError("y must have one label per row of G")
    if P_out is not None and (P_out.shape[0] != N or P_out.shape[1] != K):
        raise ValueError("P_out must have the shape of G")
    for i in range(N):
        if not 0 <= y[i] < K:
            raise ValueError(f"label y[{i}]={y[i]} is outside 0..{K - 1}")
    if N == 0:
        return 0.0, 0
    cdef floating *p = &P_out[0, 0] if P_out is not None else NULL
    with nogil:
        total = ce_rows(N, K, &G[0, 0], &y[0], p, &n_correct)
    return total, n_correct
