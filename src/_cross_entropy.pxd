# Softmax cross-entropy of logit rows (MATH.md §1), inlined where needed.
from cython cimport floating
from libc.math cimport exp, log
from libc.stdint cimport int64_t


cdef inline double ce_row(Py_ssize_t K, const floating *g, int64_t y,
                          floating *p, int *correct) noexcept nogil:
    """Loss logsumexp(g) - g[y] of one row (max-shifted).  When p is not NULL,
    p := softmax(g) - onehot(y) (p may alias g).  *correct := (argmax g == y) when not NULL."""
    cdef Py_ssize_t k, kmax = 0
    cdef double gmax = g[0], s = 0, e, gy = g[y]
    for k in range(1, K):
        if g[k] > gmax:
            gmax = g[k]
            kmax = k
    for k in range(K):
        e = exp(g[k] - gmax)
        s += e
        if p != NULL:
            p[k] = <floating>e
    if p != NULL:
        for k in range(K):
            p[k] = <floating>(p[k] / s)
        p[y] -= 1
    if correct != NULL:
        correct[0] = kmax == y
    return gmax + log(s) - gy


cdef inline double ce_rows(Py_ssize_t N, Py_ssize_t K, const floating *G,
                           const int64_t *y, floating *P, Py_ssize_t *n_correct) noexcept nogil:
    """Summed cross-entropy of N logit rows; P := softmax(G) - Y when not NULL."""
    cdef Py_ssize_t i
    cdef double total = 0
    cdef int c = 0
    n_correct[0] = 0
    for i in range(N):
        total += ce_row(K, G + i * K, y[i], P + i * K if P != NULL else NULL, &c)
        n_correct[0] += c
    return total
