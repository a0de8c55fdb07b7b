"""Compiled pieces of the CNN blocks of Algorithm 2 (MATH.md §5) and of the CE-CNN
gradient (MATH.md §7).

Storage: samples are rows.  A conv activation in NHWC, (N, H, W, C), is passed to the
row kernels as its (N, H*W*C) view: one sample's values are contiguous, so the
per-sample line search of the Z blocks (MATH.md §4) treats conv and dense layers alike.
A conv kernel is ``Kmat`` of shape (k*k*C_in, C_out) (see lysep._conv).
The Python orchestration (lysep._cnn_sweep) decides which rows are still searching and
whether a block's candidate is kept; these kernels compute.
"""
from cython cimport floating
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from libc.math cimport fabs

from _blas cimport gemm
from _ridge cimport solve_right_spd
from _checks cimport check1, check2, check4, check_rows
from _elementwise cimport act_forward, act_derivative_from_value

import numpy as np

from lysep._conv import im2col


cdef inline double _ssq(Py_ssize_t n, const floating *x) noexcept nogil:
    """sum of squares, accumulated in double in index order."""
    cdef Py_ssize_t i
    cdef double s = 0
    for i in range(n):
        s += <double>x[i] * x[i]
    return s


# ---------------------------------------------------------------------------
# the conv kernel update K (Phi^T Phi + lam I) = Phi^T (Z - b), MATH.md §5
def ridge_solve(const floating[:, ::1] gram, const floating[:, ::1] rhs, double lam,
                double rcond_min, floating[:, ::1] W_out, floating[:, ::1] work_gram,
                floating[:, ::1] work_gram2):
    """W_out := (gram + lam I)^{-1} rhs for a symmetric positive semidefinite gram.

    The conv kernel update (paper's (4.5)-(4.6)) from the chunked Gram matrix
    Phi^T Phi and right-hand side Phi^T (Z - b) of lysep._conv.conv_gram.  Cholesky
    (potrf) and two triangular solves; if the factorisation fails or its reciprocal
    condition estimate (pocon) is below rcond_min, the minimum-norm solution through
    the eigen-decomposition (syevd).  Returns status: 0 Cholesky, 1 minimum-norm,
    -1 LAPACK failure (W_out then holds zeros).
    """
    cdef Py_ssize_t n = gram.shape[0], n_out = rhs.shape[1], i, j
    cdef int status = 0
    check2("gram", gram.shape, n, n); check2("rhs", rhs.shape, n, n_out)
    check2("W_out", W_out.shape, n, n_out)
    check2("work_gram", work_gram.shape, n, n); check2("work_gram2", work_gram2.shape, n, n)
    if n == 0 or n_out == 0:
        raise ValueError("ridge_solve needs a non-empty system")
    cdef floating *G = &work_gram[0, 0]
    cdef floating *W = &W_out[0, 0]
    with nogil:
        # C-order (n, n_out) is the column-major n_out x n matrix W^T: solve W^T G = rhs^T
        memcpy(W, &rhs[0, 0], n * n_out * sizeof(floating))
        memcpy(G, &gram[0, 0], n * n * sizeof(floating))
        for j in range(n):
            G[j * n + j] += <floating>lam
        status = solve_right_spd(n, n_out, G, &work_gram2[0, 0], W, rcond_min)
    return status


# ---------------------------------------------------------------------------
# the CE-CNN gradient of a conv layer's kernel and bias
def conv_weight_grad(const floating[:, :, :, ::1] U, const floating[:, :, :, ::1] dZ,
                     Py_ssize_t k, Py_ssize_t stride, Py_ssize_t pad,
                     floating[:, ::1] grad_K_out, floating[::1] grad_b_out, Py_ssize_t chunk):
    """grad_K_out := Phi(U)^T dZ and grad_b_out := sum of dZ over samples and positions,
    the patch matrix built `chunk` samples at a time (never whole); overwrites."""
    cdef Py_ssize_t N = U.shape[0], C = U.shape[3], Co = dZ.shape[3]
    cdef Py_ssize_t Ho = dZ.shape[1], Wo = dZ.shape[2], P = Ho * Wo, KK = k * k * C
    cdef Py_ssize_t n0, n1, r, c
    check4("dZ", dZ.shape, N, Ho, Wo, Co); check2("grad_K_out", grad_K_out.shape, KK, Co)
    check1("grad_b_out", grad_b_out.shape, Co)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    chunk = min(chunk, max(N, 1))
    dtype = np.float64 if floating is double else np.float32
    cdef floating[:, ::1] buf = np.empty((chunk * P, KK), dtype=dtype)
    cdef floating *gK = &grad_K_out[0, 0]
    cdef const floating *dz = &dZ[0, 0, 0, 0]
    with nogil:
        memset(gK, 0, KK * Co * sizeof(floating))
        for c in range(Co):
            grad_b_out[c] = 0
        for r in range(N * P):
            for c in range(Co):
                grad_b_out[c] += dz[r * Co + c]
    n0 = 0
    while n0 < N:
        n1 = min(n0 + chunk, N)
        im2col(U, k, stride, pad, buf[:(n1 - n0) * P], n0, n1)   # checks the geometry
        with nogil:
            # column-major: grad_K^T (Co x KK) += dZ^T (Co x m) @ Phi (m x KK)
            gemm(c'N', c'T', <int>Co, <int>KK, <int>((n1 - n0) * P), 1,
                 dz + n0 * P * Co, <int>Co, &buf[0, 0], <int>KK, 1, gK, <int>Co)
        n0 = n1


# ---------------------------------------------------------------------------
# row pieces of the per-sample line search on conv Z blocks (MATH.md §4-§5)
def conv_z_gradient(const floating[:, ::1] R, const floating[:, ::1] A,
                    const floating[:, ::1] back, int kind, double omega, double omega_next,
                    floating[:, ::1] grad_out, double[::1] gsq_out):
    """grad_out := 2 omega R - 2 omega_next sigma'(Z) * back, with sigma' taken from
    A = sigma(Z) and back = pool^T(C_next^T R_next); gsq_out[i] := ||grad_out[i]||^2."""
    cdef Py_ssize_t N = R.shape[0], n = R.shape[1], i, j
    check2("A", A.shape, N, n); check2("back", back.shape, N, n); check2("grad_out", grad_out.shape, N, n)
    check1("gsq_out", gsq_out.shape, N)
    cdef floating two_omega = <floating>(2 * omega), two_omega_next = <floating>(2 * omega_next)
    cdef floating *g
    if N == 0 or n == 0:
        return
    with nogil:
        act_derivative_from_value(kind, N * n, &A[0, 0], &grad_out[0, 0])
        for i in range(N):
            g = &grad_out[i, 0]
            for j in range(n):
                g[j] = two_omega * R[i, j] - two_omega_next * (g[j] * back[i, j])
            gsq_out[i] = _ssq(n, g)


def z_trial_rows(const floating[:, ::1] Z, const floating[:, ::1] R,
                 const floating[:, ::1] grad, const double[::1] step,
                 const Py_ssize_t[::1] rows, int kind, floating[:, ::1] Zc_out,
                 floating[:, ::1] Rc_out, floating[:, ::1] Ac_out, double[::1] rsq_out):
    """For each a with i = rows[a]: Zc_out[a] := Z[i] - step[i] grad[i],
    Rc_out[a] := R[i] + (Zc_out[a] - Z[i]), Ac_out[a] := sigma(Zc_out[a]),
    rsq_out[a] := ||Rc_out[a]||^2.  Compact outputs: one row per searching sample."""
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], na = rows.shape[0], a, i, j
    check2("R", R.shape, N, n); check2("grad", grad.shape, N, n); check1("step", step.shape, N)
    check_rows("Zc_out", Zc_out.shape, na, n); check_rows("Rc_out", Rc_out.shape, na, n)
    check_rows("Ac_out", Ac_out.shape, na, n)
    if rsq_out.shape[0] < na:
        raise ValueError("rsq_out is too short")
    for a in range(na):
        if not 0 <= rows[a] < N:
            raise ValueError(f"rows holds {rows[a]}, outside [0, {N})")
    cdef floating st
    if na == 0 or n == 0:
        return
    with nogil:
        for a in range(na):
            i = rows[a]
            st = <floating>step[i]
            for j in range(n):
                Zc_out[a, j] = Z[i, j] - st * grad[i, j]
                Rc_out[a, j] = R[i, j] + (Zc_out[a, j] - Z[i, j])
            act_forward(kind, n, &Zc_out[a, 0], &Ac_out[a, 0], <floating *>NULL)
            rsq_out[a] = _ssq(n, &Rc_out[a, 0])


def residual_rows(const floating[:, ::1] Z, const Py_ssize_t[::1] rows,
                  floating[:, ::1] Yc, double[::1] rsq_out):
    """Yc[a] := Z[rows[a]] - Yc[a] in place (the next layer's trial residual from its
    trial linear part Yc), rsq_out[a] := ||Yc[a]||^2."""
    cdef Py_ssize_t N = Z.shape[0], n = Z.shape[1], na = rows.shape[0], a, i, j
    if Yc.shape[0] < na or Yc.shape[1] != n:
        raise ValueError(f"Yc has shape {tuple(Yc.shape)}, needs ({na}, {n})")
    if rsq_out.shape[0] < na:
        raise ValueError("rsq_out is too short")
    for a in range(na):
        if not 0 <= rows[a] < N:
            raise ValueError(f"rows holds {rows[a]}, outside [0, {N})")
    if na == 0 or n == 0:
        return
    with nogil:
        for a in range(na):
            i = rows[a]
            for j in range(n):
                Yc[a, j] = Z[i, j] - Yc[a, j]
            rsq_out[a] = _ssq(n, &Yc[a, 0])


def row_sq_norms(const floating[:, ::1] M, double[::1] out):
    """out[i] := ||M[i]||^2 accumulated in double."""
    cdef Py_ssize_t N = M.shape[0], n = M.shape[1], i
    check1("out", out.shape, N)
    if n == 0:
        out[:] = 0
        return
    with nogil:
        for i in range(N):
            out[i] = _ssq(n, &M[i, 0])
