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


# Narrow products for thin layers (_smallgemm.h): row-major, the small operand held in
# registers, the long one streamed once; BLAS when the output is too wide for them.
cdef extern from "_smallgemm.h" nogil:
    int lysep_smallgemm_vbytes()
    Py_ssize_t lysep_smallgemm_max_n(int vb, size_t size)
    int lysep_tn_acc_d(int vb, Py_ssize_t M, Py_ssize_t k, Py_ssize_t n, const double *A,
                       Py_ssize_t lda, const double *B, Py_ssize_t ldb, double *C,
                       Py_ssize_t ldc)
    double lysep_ssq_d(int vb, Py_ssize_t n, const double *x)
    int lysep_gram_acc_d(int vb, Py_ssize_t M, Py_ssize_t n, const double *A, Py_ssize_t lda,
                         double *C, Py_ssize_t ldc)
    int lysep_gram_acc_f(int vb, Py_ssize_t M, Py_ssize_t n, const float *A, Py_ssize_t lda,
                         float *C, Py_ssize_t ldc)
    int lysep_rows_nn_ex_d(int vb, Py_ssize_t M, Py_ssize_t k, Py_ssize_t n, const double *A,
                           Py_ssize_t lda, const double *B, Py_ssize_t ldb, double alpha,
                           const double *C0, Py_ssize_t ldc0, const Py_ssize_t *idx,
                           const double *bias, double *C, Py_ssize_t ldc, double *ssq)
    int lysep_rows_nn_ex_f(int vb, Py_ssize_t M, Py_ssize_t k, Py_ssize_t n, const float *A,
                           Py_ssize_t lda, const float *B, Py_ssize_t ldb, float alpha,
                           const float *C0, Py_ssize_t ldc0, const Py_ssize_t *idx,
                           const float *bias, float *C, Py_ssize_t ldc, double *ssq)
    int lysep_trial_rows_d(int vb, Py_ssize_t m, Py_ssize_t n, const Py_ssize_t *active,
                           const double *step, const double *Z, const double *R,
                           const double *g, double *Z_out, double *R_out, double *Zc,
                           double *rs)
    int lysep_trial_rows_f(int vb, Py_ssize_t m, Py_ssize_t n, const Py_ssize_t *active,
                           const double *step, const float *Z, const float *R,
                           const float *g, float *Z_out, float *R_out, float *Zc,
                           double *rs)
    int lysep_zgrad_rows_d(int vb, Py_ssize_t m, Py_ssize_t n, const double *R,
                           const double *Z, const double *D, int from_value, double c1,
                           double c2, double *G, double *rs, double *zsq, double *gsq)
    int lysep_zgrad_rows_f(int vb, Py_ssize_t m, Py_ssize_t n, const float *R,
                           const float *Z, const float *D, int from_value, float c1,
                           float c2, float *G, double *rs, double *zsq, double *gsq)
    int lysep_target_rows_d(int vb, Py_ssize_t m, Py_ssize_t n, const double *Zn,
                            const double *b, const double *Rn, double *Zb, double *zbsq,
                            double *rnsq)
    int lysep_target_rows_f(int vb, Py_ssize_t m, Py_ssize_t n, const float *Zn,
                            const float *b, const float *Rn, float *Zb, double *zbsq,
                            double *rnsq)
    int lysep_tn_acc_f(int vb, Py_ssize_t M, Py_ssize_t k, Py_ssize_t n, const float *A,
                       Py_ssize_t lda, const float *B, Py_ssize_t ldb, float *C,
                       Py_ssize_t ldc)
    int lysep_backprop_d(int vb, Py_ssize_t M, Py_ssize_t k, Py_ssize_t n, const double *A,
                         const double *delta, const double *W, const double *S, int deriv,
                         double *gW, double *gb, double *Dp)
    int lysep_backprop_f(int vb, Py_ssize_t M, Py_ssize_t k, Py_ssize_t n, const float *A,
                         const float *delta, const float *W, const float *S, int deriv,
                         float *gW, double *gb, float *Dp)


cdef inline bint narrow(Py_ssize_t n, size_t itemsize) noexcept nogil:
    """True when an output of n columns fits the small kernels on this CPU."""
    return n <= lysep_smallgemm_max_n(lysep_smallgemm_vbytes(), itemsize)


cdef inline void rows_gemm(Py_ssize_t M, Py_ssize_t k, Py_ssize_t n, const floating *A,
                           Py_ssize_t lda, const floating *B, Py_ssize_t ldb, floating alpha,
                           const floating *C0, Py_ssize_t ldc0, const floating *bias,
                           floating *C, Py_ssize_t ldc, int vb=0) noexcept nogil:
    """Row-major C[r, :] := C0[r, :] + bias + alpha A[r, :] B for r < M (B is k x n;
    C0 and bias may be NULL; C0 may be C).  vb: the variant's vector width, 0 = the
    widest the CPU runs; a wide n or a failed scratch allocation goes to BLAS."""
    cdef Py_ssize_t r, j
    if M <= 0 or n <= 0:
        return
    vb = vb if vb else lysep_smallgemm_vbytes()
    if floating is double:
        if lysep_rows_nn_ex_d(vb, M, k, n, A, lda, B, ldb, alpha, C0, ldc0, NULL, bias, C,
                              ldc, NULL) == 0:
            return
    else:
        if lysep_rows_nn_ex_f(vb, M, k, n, A, lda, B, ldb, alpha, C0, ldc0, NULL, bias, C,
                              ldc, NULL) == 0:
            return
    for r in range(M):
        for j in range(n):
            C[r * ldc + j] = ((C0[r * ldc0 + j] if C0 != NULL else 0)
                              + (bias[j] if bias != NULL else 0))
    gemm(c'N', c'N', <int>n, <int>M, <int>k, alpha, B, <int>ldb, A, <int>lda, 1, C, <int>ldc)


cdef inline void tn_gemm_acc(Py_ssize_t M, Py_ssize_t k, Py_ssize_t n, const floating *A,
                             Py_ssize_t lda, const floating *B, Py_ssize_t ldb, floating *C,
                             Py_ssize_t ldc, int vb=0) noexcept nogil:
    """Row-major C (k x n) += A^T B, A being M x k and B M x n.  The small kernel re-reads
    B once per four columns of A, so it takes only narrow B and short or narrow A."""
    if k <= 0 or n <= 0:
        return
    vb = vb if vb else lysep_smallgemm_vbytes()
    if k <= 32 or M <= 256:
        if floating is double:
            if lysep_tn_acc_d(vb, M, k, n, A, lda, B, ldb, C, ldc) == 0:
                return
        else:
            if lysep_tn_acc_f(vb, M, k, n, A, lda, B, ldb, C, ldc) == 0:
                return
    gemm(c'N', c'T', <int>n, <int>k, <int>M, 1, B, <int>ldb, A, <int>lda, 1, C, <int>ldc)


cdef inline void rows_gemm_gather(Py_ssize_t M, Py_ssize_t k, Py_ssize_t n,
                                  const floating *A, Py_ssize_t lda, const floating *B,
                                  Py_ssize_t ldb, floating alpha, const floating *C0,
                                  Py_ssize_t ldc0, const Py_ssize_t *idx, floating *C,
                                  Py_ssize_t ldc, double *ssq) noexcept nogil:
    """Row-major C[r, :] := C0[idx[r], :] + alpha A[r, :] B and ssq[r] := ||C[r, :]||^2
    for r < M (the trial residuals of a Z step and their norms in one pass)."""
    cdef Py_ssize_t r, j
    cdef double t
    if M <= 0 or n <= 0:
        return
    cdef int vb = lysep_smallgemm_vbytes()
    if floating is double:
        if lysep_rows_nn_ex_d(vb, M, k, n, A, lda, B, ldb, alpha, C0, ldc0, idx, NULL, C, ldc,
                              ssq) == 0:
            return
    else:
        if lysep_rows_nn_ex_f(vb, M, k, n, A, lda, B, ldb, alpha, C0, ldc0, idx, NULL, C, ldc,
                              ssq) == 0:
            return
    gemm(c'N', c'N', <int>n, <int>M, <int>k, alpha, B, <int>ldb, A, <int>lda, 0, C, <int>ldc)
    for r in range(M):
        t = 0
        for j in range(n):
            C[r * ldc + j] += C0[idx[r] * ldc0 + j]
            t += <double>C[r * ldc + j] * C[r * ldc + j]
        ssq[r] = t


cdef inline void trial_rows(Py_ssize_t m, Py_ssize_t n, const Py_ssize_t *active,
                            const double *step, const floating *Z, const floating *R,
                            const floating *g, floating *Z_out, floating *R_out,
                            floating *Zc, double *rs) noexcept nogil:
    """The trial rows of a Z step (_smallgemm_type.h): Z_out_i := Z_i - step_i g_i,
    R_out_i := R_i + (Z_out_i - Z_i), a compact copy in Zc (unless NULL) and
    rs[a] := ||R_out_i||^2 for the rows i = active[a], a < m."""
    if floating is double:
        lysep_trial_rows_d(lysep_smallgemm_vbytes(), m, n, active, step, Z, R, g, Z_out,
                           R_out, Zc, rs)
    else:
        lysep_trial_rows_f(lysep_smallgemm_vbytes(), m, n, active, step, Z, R, g, Z_out,
                           R_out, Zc, rs)


cdef inline void zgrad_rows(Py_ssize_t m, Py_ssize_t n, const floating *R, const floating *Z,
                            const floating *D, bint from_value, floating c1, floating c2,
                            floating *G, double *rs, double *zsq, double *gsq) noexcept nogil:
    """A hidden Z step's gradient rows (_smallgemm_type.h): G_i := c1 R_i - c2 d_i * G_i,
    d = 1 - D^2 (from_value: D holds tanh's values) or D; rs_i, zsq_i, gsq_i := the
    squared norms of R_i, Z_i and the new G_i."""
    if floating is double:
        lysep_zgrad_rows_d(lysep_smallgemm_vbytes(), m, n, R, Z, D, from_value, c1, c2, G,
                           rs, zsq, gsq)
    else:
        lysep_zgrad_rows_f(lysep_smallgemm_vbytes(), m, n, R, Z, D, from_value, c1, c2, G,
                           rs, zsq, gsq)


cdef inline void target_rows(Py_ssize_t m, Py_ssize_t n, const floating *Zn, const floating *b,
                             const floating *Rn, floating *Zb, double *zbsq,
                             double *rnsq) noexcept nogil:
    """Zb_i := Zn_i - b with zbsq_i := ||Zb_i||^2 and rnsq_i := ||Rn_i||^2, m rows of n."""
    if floating is double:
        lysep_target_rows_d(lysep_smallgemm_vbytes(), m, n, Zn, b, Rn, Zb, zbsq, rnsq)
    else:
        lysep_target_rows_f(lysep_smallgemm_vbytes(), m, n, Zn, b, Rn, Zb, zbsq, rnsq)


cdef inline void gram_upper_acc(Py_ssize_t M, Py_ssize_t n, const floating *A, Py_ssize_t lda,
                                floating *C, Py_ssize_t ldc) noexcept nogil:
    """Row-major C (n x n) += A^T A on and above the diagonal (entries below it may be
    touched: symmetrise from the upper triangle).  The narrow Gram kernel up to n = 128
    columns, BLAS syrk beyond (its 'L' triangle in column-major is the C-order upper)."""
    cdef int vb = lysep_smallgemm_vbytes()
    if n <= 0 or M <= 0:
        return
    if n <= 128:
        if floating is double:
            lysep_gram_acc_d(vb, M, n, A, lda, C, ldc)
        else:
            lysep_gram_acc_f(vb, M, n, A, lda, C, ldc)
        return
    syrk(c'L', c'N', <int>n, <int>M, 1, A, <int>lda, 1, C, <int>ldc)
