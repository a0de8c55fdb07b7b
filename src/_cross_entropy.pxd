# Softmax cross-entropy of logit rows (MATH.md §1), inlined where needed.
from cython cimport floating
from libc.math cimport exp, log
from libc.stdint cimport int64_t

cdef extern from "_vecmath.h" nogil:
    void lysep_exp_neg_inplace(Py_ssize_t n, double *x)

cdef enum:
    _CE_CHUNK = 1024        # shifted logits per vectorised exp pass (8 KiB on the stack)


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


cdef inline double ce_rows_each(Py_ssize_t N, Py_ssize_t K, const floating *G,
                                const int64_t *y, const Py_ssize_t *idx, floating *P,
                                double *loss, Py_ssize_t *n_correct) noexcept nogil:
    """ce_row for N rows, the exponentials of a chunk of rows in one vectorised pass
    (libm's scalar exp was the cost of a softmax block).  Row i's label is y[idx[i]]
    (y[i] when idx is NULL); loss[i] := its loss when loss is not NULL; P := softmax(G)
    - Y when not NULL (P may alias G); n_correct += argmax hits when not NULL.  Returns
    the summed loss."""
    cdef double buf[_CE_CHUNK]
    cdef double gmax[_CE_CHUNK]
    cdef double total = 0, s, li, m
    cdef Py_ssize_t i, k, r0, nr, chunk, kmax
    cdef int64_t yi
    cdef const floating *g
    cdef floating *p
    cdef int c
    if K > _CE_CHUNK:                  # a row wider than the buffer: one row at a time
        for i in range(N):
            yi = y[idx[i] if idx != NULL else i]
            li = ce_row(K, G + i * K, yi, P + i * K if P != NULL else NULL, &c)
            total += li
            if loss != NULL:
                loss[i] = li
            if n_correct != NULL:
                n_correct[0] += c
        return total
    chunk = _CE_CHUNK // K
    r0 = 0
    while r0 < N:
        nr = chunk if r0 + chunk <= N else N - r0
        for i in range(nr):            # max-shifted logits and argmax hits
            g = G + (r0 + i) * K
            m = g[0]
            kmax = 0
            for k in range(1, K):
                if g[k] > m:
                    m = g[k]
                    kmax = k
            gmax[i] = m
            if n_correct != NULL:
                n_correct[0] += kmax == y[idx[r0 + i] if idx != NULL else r0 + i]
            for k in range(K):
                buf[i * K + k] = g[k] - m
        lysep_exp_neg_inplace(nr * K, buf)
        for i in range(nr):
            g = G + (r0 + i) * K
            yi = y[idx[r0 + i] if idx != NULL else r0 + i]
            s = 0
            for k in range(K):
                s += buf[i * K + k]
            li = gmax[i] + log(s) - g[yi]      # read g before P (which may alias it)
            total += li
            if loss != NULL:
                loss[r0 + i] = li
            if P != NULL:
                p = P + (r0 + i) * K
                for k in range(K):
                    p[k] = <floating>(<floating>buf[i * K + k] / s)
                p[yi] -= 1
        r0 += nr
    return total


cdef inline double ce_rows(Py_ssize_t N, Py_ssize_t K, const floating *G,
                           const int64_t *y, floating *P, Py_ssize_t *n_correct) noexcept nogil:
    """Summed cross-entropy of N logit rows; P := softmax(G) - Y when not NULL."""
    n_correct[0] = 0
    return ce_rows_each(N, K, G, y, NULL, P, NULL, n_correct)
