# The symmetric solve of the ridge updates (MATH.md §4 step 3, §5), inlined into the
# FNN and CNN block modules: one home for the Cholesky path and its minimum-norm fallback.
from cython cimport floating
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from libc.math cimport fabs

from _blas cimport gemm, trsm, potrf, pocon, syevd


cdef inline int _pinv_solve(Py_ssize_t n_in, Py_ssize_t n_out, floating *G, floating *W) noexcept nogil:
    """W := W pinv(G) for a symmetric positive semidefinite G (n_in x n_in, destroyed):
    the minimum-norm solution of W G = RHS through G = Q diag(l) Q^T (syevd), with
    eigenvalues below n_in*eps*max(l) treated as zero.  Returns LAPACK's info
    (-1000: no memory)."""
    cdef int info, lwork, liwork, iq
    cdef Py_ssize_t i, j
    cdef floating wq, tol
    cdef floating eps = 1.1920929e-07 if floating is float else 2.220446049250313e-16
    cdef floating *evals = <floating *>malloc(n_in * sizeof(floating))
    cdef floating *T = <floating *>malloc(n_in * n_out * sizeof(floating))
    cdef floating *work = NULL
    cdef int *iwork = NULL
    info = -1000
    if evals != NULL and T != NULL:
        info = syevd(c'V', c'U', <int>n_in, G, <int>n_in, evals, &wq, -1, &iq, -1)
        lwork = <int>wq + 1
        liwork = iq + 1
        work = <floating *>malloc(lwork * sizeof(floating))
        iwork = <int *>malloc(liwork * sizeof(int))
        info = -1000 if work == NULL or iwork == NULL else \
            syevd(c'V', c'U', <int>n_in, G, <int>n_in, evals, work, lwork, iwork, liwork)
    if info == 0:
        # T := RHS Q, scale column j by 1/l_j (0 below the cut-off), W := T Q^T
        gemm(c'N', c'N', <int>n_out, <int>n_in, <int>n_in, 1, W, <int>n_out, G, <int>n_in,
             0, T, <int>n_out)
        tol = n_in * eps * evals[n_in - 1]
        for j in range(n_in):
            for i in range(n_out):
                T[j * n_out + i] = T[j * n_out + i] / evals[j] if evals[j] > tol else 0
        gemm(c'N', c'T', <int>n_out, <int>n_in, <int>n_in, 1, T, <int>n_out, G, <int>n_in,
             0, W, <int>n_out)
    free(evals); free(T); free(work); free(iwork)
    return info


cdef inline int solve_right_spd(Py_ssize_t n, Py_ssize_t n_out, floating *G, floating *G2,
                                floating *W, double rcond_min) noexcept nogil:
    """W := W inv(G) for a symmetric positive semidefinite n x n matrix G (its upper
    triangle is read; G and G2 are overwritten).  W is n_out x n, column-major.

    Cholesky (potrf) and two triangular solves from the right (what posv does, for a
    right-hand side on the right).  If the factorisation fails or its reciprocal
    condition estimate (pocon) is below rcond_min, a plain solve would return huge
    weights: the minimum-norm solution through the eigen-decomposition instead.
    Returns 0 (Cholesky), 1 (minimum-norm) or -1 (LAPACK failure; W zeroed)."""
    cdef Py_ssize_t i, j
    cdef int info
    cdef double anorm = 0, colsum, rcond = -1
    cdef floating *work
    cdef int *iwork
    for j in range(n):                    # 1-norm of the symmetric matrix, upper triangle
        colsum = 0
        for i in range(n):
            colsum += fabs(G[j * n + i] if i <= j else G[i * n + j])
        anorm = colsum if colsum > anorm else anorm
    memcpy(G2, G, n * n * sizeof(floating))
    info = potrf(c'U', <int>n, G, <int>n)
    if info == 0:
        work = <floating *>malloc(3 * n * sizeof(floating))
        iwork = <int *>malloc(n * sizeof(int))
        if work != NULL and iwork != NULL:
            rcond = pocon(c'U', <int>n, G, <int>n, anorm, work, iwork)
        free(work); free(iwork)
    if info == 0 and rcond >= rcond_min:
        trsm(c'R', c'U', c'N', c'N', <int>n_out, <int>n, 1, G, <int>n, W, <int>n_out)
        trsm(c'R', c'U', c'T', c'N', <int>n_out, <int>n, 1, G, <int>n, W, <int>n_out)
        return 0
    if _pinv_solve(n, n_out, G2, W) != 0:
        memset(W, 0, n * n_out * sizeof(floating))
        return -1
    return 1
