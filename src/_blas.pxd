# BLAS/LAPACK shim shared by the kernels (inlined into each module, so it has no
# runtime module of its own).  One function per operation, fused over float32 /
# float64, dispatching to scipy's s*/d* routines.  All matrices are COLUMN-major in
# BLAS terms: a C-contiguous numpy array of shape (c, r) is the r-by-c matrix with
# leading dimension r.  Since samples are stored as rows, the numpy array (N, n) is
# MATH.md's n-by-N matrix (features x samples) and the weight array coefs_[l] of
# shape (n_in, n_out) is MATH.md's W_l (n_out x n_in).
from cython cimport floating
from scipy.linalg.cython_blas cimport (sgemm, dgemm, ssyrk, dsyrk, strsm, dtrsm,
                                       saxpy, daxpy, sdot, ddot, sscal, dscal)
from scipy.linalg.cython_lapack cimport (spotrf, dpotrf, spocon, dpocon,
                                         ssyevd, dsyevd)


cdef inline void gemm(char transa, char transb, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb, floating beta,
                      floating *c, int ldc) noexcept nogil:
    """C := alpha*op(A)*op(B) + beta*C  (C is m-by-n; nothing to do when it is empty)."""
    if m <= 0 or n <= 0:
        return
    lda = lda if lda > 1 else 1           # BLAS rejects leading dimensions below 1
    ldb = ldb if ldb > 1 else 1
    ldc = ldc if ldc > 1 else 1
    if floating is float:
        sgemm(&transa, &transb, &m, &n, &k, &alpha, <float *>a, &lda,
              <float *>b, &ldb, &beta, c, &ldc)
    else:
        dgemm(&transa, &transb, &m, &n, &k, &alpha, <double *>a, &lda,
              <double *>b, &ldb, &beta, c, &ldc)


cdef inline void syrk(char uplo, char trans, int n, int k, floating alpha,
                      const floating *a, int lda, floating beta,
                      floating *c, int ldc) noexcept nogil:
    """C := alpha*A*A^T + beta*C  (trans='N'; only the `uplo` triangle of C)."""
    if n <= 0:
        return
    lda = lda if lda > 1 else 1
    ldc = ldc if ldc > 1 else 1
    if floating is float:
        ssyrk(&uplo, &trans, &n, &k, &alpha, <float *>a, &lda, &beta, c, &ldc)
    else:
        dsyrk(&uplo, &trans, &n, &k, &alpha, <double *>a, &lda, &beta, c, &ldc)


cdef inline void trsm(char side, char uplo, char transa, char diag, int m, int n,
                      floating alpha, const floating *a, int lda,
                      floating *b, int ldb) noexcept nogil:
    """B := alpha*B*inv(op(A)) (side='R') or alpha*inv(op(A))*B (side='L')."""
    if floating is float:
        strsm(&side, &uplo, &transa, &diag, &m, &n, &alpha, <float *>a, &lda, b, &ldb)
    else:
        dtrsm(&side, &uplo, &transa, &diag, &m, &n, &alpha, <double *>a, &lda, b, &ldb)


cdef inline void axpy(int n, floating alpha, const floating *x,
                      floating *y) noexcept nogil:
    """y := alpha*x + y."""
    cdef int one = 1
    if floating is float:
        saxpy(&n, &alpha, <float *>x, &one, y, &one)
    else:
        daxpy(&n, &alpha, <double *>x, &one, y, &one)


cdef inline void scal(int n, floating alpha, floating *x) noexcept nogil:
    """x := alpha*x."""
    cdef int one = 1
    if floating is float:
        sscal(&n, &alpha, x, &one)
    else:
        dscal(&n, &alpha, x, &one)


cdef inline int potrf(char uplo, int n, floating *a, int lda) noexcept nogil:
    """Cholesky factorisation A = U^T U in place; returns LAPACK's info."""
    cdef int info = 0
    if floating is float:
        spotrf(&uplo, &n, a, &lda, &info)
    else:
        dpotrf(&uplo, &n, a, &lda, &info)
    return info


cdef inline double pocon(char uplo, int n, const floating *a, int lda,
                         double anorm, floating *work, int *iwork) noexcept nogil:
    """Reciprocal 1-norm condition number of an SPD matrix from its Cholesky factor.
    `work` holds 3n entries, `iwork` n; returns -1 on a LAPACK error."""
    cdef int info = 0
    cdef float rc_s, an_s
    cdef double rc_d
    if floating is float:
        an_s = <float>anorm
        spocon(&uplo, &n, <float *>a, &lda, &an_s, &rc_s, work, iwork, &info)
        return rc_s if info == 0 else -1.0
    else:
        dpocon(&uplo, &n, <double *>a, &lda, &anorm, &rc_d, work, iwork, &info)
        return rc_d if info == 0 else -1.0


cdef inline int syevd(char jobz, char uplo, int n, floating *a, int lda,
                      floating *w, floating *work, int lwork,
                      int *iwork, int liwork) noexcept nogil:
    """Eigen-decomposition of a symmetric matrix in place (eigenvalues ascending);
    lwork = liwork = -1 is a workspace query.  Returns LAPACK's info."""
    cdef int info = 0
    if floating is float:
        ssyevd(&jobz, &uplo, &n, a, &lda, w, work, &lwork, iwork, &liwork, &info)
    else:
        dsyevd(&jobz, &uplo, &n, a, &lda, w, work, &lwork, iwork, &liwork, &info)
    return info
