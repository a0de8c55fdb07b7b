# cython: language_level=3
"""Convolution and pooling kernels (NHWC, im2col + BLAS) for CNN layers.

Conventions
-----------
* Every array is C-contiguous; images/activations are NHWC, ``U`` has shape
  ``(N, H, W, C)``.  All floating arguments of one call share one dtype
  (float32 or float64, fused ``floating``); outputs ``*_out`` are allocated
  by the caller in that dtype.
* For a ``k x k`` kernel with stride ``s`` and zero padding ``p``:
  ``Ho = (H + 2p - k)//s + 1``, ``Wo = (W + 2p - k)//s + 1``.
  The patch matrix ``Phi`` has shape ``(N*Ho*Wo, k*k*C)`` with
  row ``(n*Ho + i)*Wo + j`` and column ``(di*k + dj)*C + c`` holding
  ``U[n, i*s - p + di, j*s - p + dj, c]`` (zero outside the image).
* A conv kernel is ``Kmat`` of shape ``(k*k*C_in, C_out)``; the linear part
  of the conv is ``Phi @ Kmat`` = NHWC ``(N, Ho, Wo, C_out)``.
  BLAS is column-major, so a C-contiguous ``(r, c)`` array is passed as the
  column-major ``c x r`` matrix: no copies, no transposes.
* Write semantics: ``im2col`` overwrites its rows of ``Phi_out``;
  ``col2im`` ADDS into ``dU_out`` (it never zeroes); ``conv_forward``,
  ``conv_transpose``, ``conv_gram``, the poolings and their adjoints
  overwrite their outputs completely.
* ``maxpool`` records in ``argmax_out[n, i, j, c]`` the flat index
  ``di*q + dj`` of the maximum inside its ``q x q`` window (first maximum in
  row-major window order on ties).
"""

from libc.string cimport memcpy, memset
from libc.stdint cimport int64_t
from libc.limits cimport INT_MAX
from cython cimport floating
from _blas cimport gemm as _gemm, gram_upper_acc
from _checks cimport check1, check2, check4

import numpy as np


# ----------------------------------------------------------------------------
# Shape helpers (Python level, before any nogil section)
# ----------------------------------------------------------------------------

cdef Py_ssize_t _out_size(Py_ssize_t size, Py_ssize_t k, Py_ssize_t stride,
                          Py_ssize_t pad, str what) except -1:
    """Output length of a k-window with stride/pad over `size` input positions."""
    if size + 2 * pad < k:
        raise ValueError(
            f"{what}={size} is too small for k={k} with pad={pad}")
    return (size + 2 * pad - k) // stride + 1


cdef int _check_geometry(Py_ssize_t k, Py_ssize_t stride, Py_ssize_t pad) except -1:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    return 0


cdef int _check_int(Py_ssize_t v, str what) except -1:
    if v > INT_MAX:
        raise ValueError(f"{what}={v} exceeds the BLAS int range; use a smaller chunk")
    return 0


cdef Py_ssize_t _check_chunk(Py_ssize_t chunk, Py_ssize_t N) except -1:
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return chunk if chunk < N else max(N, 1)


# ----------------------------------------------------------------------------
# nogil workers
# ----------------------------------------------------------------------------

# BLAS through the shared shim (src/_blas.pxd)
cdef void _im2col(const floating* U, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                  Py_ssize_t k, Py_ssize_t s, Py_ssize_t p,
                  Py_ssize_t Ho, Py_ssize_t Wo,
                  Py_ssize_t n_start, Py_ssize_t n_stop,
                  floating* Phi) noexcept nogil:
    """Write the patch rows of samples [n_start, n_stop) into Phi (overwrite)."""
    cdef Py_ssize_t kC = k * C, KK = k * k * C
    cdef Py_ssize_t n, i, j, di, ii, jj0, lo, hi
    cdef size_t fs = sizeof(floating)
    cdef floating* row = Phi
    cdef floating* dst
    for n in range(n_start, n_stop):
        for i in range(Ho):
            for j in range(Wo):
                # for fixed di, the k*C entries of the patch row are one
                # contiguous run of U: columns jj0 .. jj0+k-1, all channels.
                jj0 = j * s - p
                lo = -jj0 if jj0 < 0 else 0
                hi = W - jj0 if W - jj0 < k else k
                for di in range(k):
                    ii = i * s - p + di
                    dst = row + di * kC
                    if ii < 0 or ii >= H or lo >= hi:
                        memset(dst, 0, kC * fs)
                        continue
                    if lo > 0:
                        memset(dst, 0, lo * C * fs)
                    memcpy(dst + lo * C, U + ((n * H + ii) * W + jj0 + lo) * C,
                           (hi - lo) * C * fs)
                    if hi < k:
                        memset(dst + hi * C, 0, (k - hi) * C * fs)
                row += KK


cdef void _col2im(const floating* dPhi, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                  Py_ssize_t k, Py_ssize_t s, Py_ssize_t p,
                  Py_ssize_t Ho, Py_ssize_t Wo,
                  Py_ssize_t n_start, Py_ssize_t n_stop,
                  floating* dU) noexcept nogil:
    """dU[n_start:n_stop] += im2col^T dPhi (dPhi holds those samples' rows)."""
    cdef Py_ssize_t kC = k * C, KK = k * k * C
    cdef Py_ssize_t n, i, j, di, ii, jj0, lo, hi, t, L
    cdef const floating* row = dPhi
    cdef const floating* src
    cdef floating* dst
    for n in range(n_start, n_stop):
        for i in range(Ho):
            for j in range(Wo):
                jj0 = j * s - p
                lo = -jj0 if jj0 < 0 else 0
                hi = W - jj0 if W - jj0 < k else k
                if lo < hi:
                    L = (hi - lo) * C
                    for di in range(k):
                        ii = i * s - p + di
                        if ii < 0 or ii >= H:
                            continue
                        src = row + di * kC + lo * C
                        dst = dU + ((n * H + ii) * W + jj0 + lo) * C
                        for t in range(L):
                            dst[t] += src[t]
                row += KK


# ----------------------------------------------------------------------------
# Public kernels
# ----------------------------------------------------------------------------

def im2col(const floating[:, :, :, ::1] U, Py_ssize_t k, Py_ssize_t stride,
           Py_ssize_t pad, floating[:, ::1] Phi_out, n_start=0, n_stop=None):
    """Phi_out := patch rows of U[n_start:n_stop] (k x k, stride, zero pad); overwrites."""
    cdef Py_ssize_t N = U.shape[0], H = U.shape[1], W = U.shape[2], C = U.shape[3]
    _check_geometry(k, stride, pad)
    cdef Py_ssize_t Ho = _out_size(H, k, stride, pad, "U height")
    cdef Py_ssize_t Wo = _out_size(W, k, stride, pad, "U width")
    cdef Py_ssize_t a = n_start, b = N if n_stop is None else n_stop
    if not (0 <= a <= b <= N):
        raise ValueError(f"n_start={a}, n_stop={b} must satisfy 0 <= n_start <= n_stop <= N={N}")
    check2("Phi_out", Phi_out.shape, (b - a) * Ho * Wo, k * k * C)
    if b == a or k * k * C == 0:
        return
    with nogil:
        _im2col(&U[0, 0, 0, 0], H, W, C, k, stride, pad, Ho, Wo, a, b,
                &Phi_out[0, 0])


def col2im(const floating[:, ::1] dPhi, Py_ssize_t k, Py_ssize_t stride,
           Py_ssize_t pad, floating[:, :, :, ::1] dU_out, n_start=0, n_stop=None):
    """dU_out[n_start:n_stop] += im2col^T(dPhi), the exact adjoint of im2col; does NOT zero dU_out."""
    cdef Py_ssize_t N = dU_out.shape[0], H = dU_out.shape[1]
    cdef Py_ssize_t W = dU_out.shape[2], C = dU_out.shape[3]
    _check_geometry(k, stride, pad)
    cdef Py_ssize_t Ho = _out_size(H, k, stride, pad, "dU_out height")
    cdef Py_ssize_t Wo = _out_size(W, k, stride, pad, "dU_out width")
    cdef Py_ssize_t a = n_start, b = N if n_stop is None else n_stop
    if not (0 <= a <= b <= N):
        raise ValueError(f"n_start={a}, n_stop={b} must satisfy 0 <= n_start <= n_stop <= N={N}")
    check2("dPhi", dPhi.shape, (b - a) * Ho * Wo, k * k * C)
    if b == a or k * k * C == 0:
        return
    with nogil:
        _col2im(&dPhi[0, 0], H, W, C, k, stride, pad, Ho, Wo, a, b,
                &dU_out[0, 0, 0, 0])


def conv_forward(const floating[:, :, :, ::1] U, const floating[:, ::1] Kmat,
                 const floating[::1] bias, Py_ssize_t k, Py_ssize_t stride,
                 Py_ssize_t pad, floating[:, :, :, ::1] Z_out, Py_ssize_t chunk):
    """Z_out := conv(U; Kmat) + bias, i.e. Phi(U) @ Kmat + bias, `chunk` samples per im2col/gemm."""
    cdef Py_ssize_t N = U.shape[0], H = U.shape[1], W = U.shape[2], C = U.shape[3]
    _check_geometry(k, stride, pad)
    cdef Py_ssize_t Ho = _out_size(H, k, stride, pad, "U height")
    cdef Py_ssize_t Wo = _out_size(W, k, stride, pad, "U width")
    cdef Py_ssize_t KK = k * k * C, Co = Kmat.shape[1]
    check2("Kmat", Kmat.shape, KK, Co)
    check1("bias", bias.shape, Co)
    check4("Z_out", Z_out.shape, N, Ho, Wo, Co)
    chunk = _check_chunk(chunk, N)
    cdef Py_ssize_t P = Ho * Wo
    _check_int(chunk * P, "chunk*Ho*Wo"); _check_int(KK, "k*k*C_in"); _check_int(Co, "C_out")
    if N == 0 or Co == 0:
        return
    dtype = np.float64 if floating is double else np.float32
    cdef floating[:, ::1] buf = np.empty((chunk * P, max(KK, 1)), dtype=dtype)
    cdef Py_ssize_t n0, n1, r
    cdef floating* Z = &Z_out[0, 0, 0, 0]
    cdef const floating* b = &bias[0]
    cdef const floating* Km = &Kmat[0, 0] if KK > 0 else NULL
    with nogil:
        for r in range(N * P):
            memcpy(Z + r * Co, b, Co * sizeof(floating))
        if KK > 0:
            n0 = 0
            while n0 < N:
                n1 = n0 + chunk if n0 + chunk < N else N
                _im2col(&U[0, 0, 0, 0], H, W, C, k, stride, pad, Ho, Wo,
                        n0, n1, &buf[0, 0])
                # column-major: Z^T (Co x m) += Kmat^T (Co x KK) @ Phi^T (KK x m)
                _gemm(c'N', c'N', <int>Co, <int>((n1 - n0) * P), <int>KK,
                      <floating>1.0, Km, <int>Co, &buf[0, 0], <int>KK,
                      <floating>1.0, Z + n0 * P * Co, <int>Co)
                n0 = n1


def conv_transpose(const floating[:, :, :, ::1] dZ, const floating[:, ::1] Kmat,
                   Py_ssize_t k, Py_ssize_t stride, Py_ssize_t pad,
                   floating[:, :, :, ::1] dU_out, Py_ssize_t chunk):
    """dU_out := C^T dZ = col2im(dZ @ Kmat^T), adjoint of the linear part of conv_forward; overwrites."""
    cdef Py_ssize_t N = dU_out.shape[0], H = dU_out.shape[1]
    cdef Py_ssize_t W = dU_out.shape[2], C = dU_out.shape[3]
    _check_geometry(k, stride, pad)
    cdef Py_ssize_t Ho = _out_size(H, k, stride, pad, "dU_out height")
    cdef Py_ssize_t Wo = _out_size(W, k, stride, pad, "dU_out width")
    cdef Py_ssize_t KK = k * k * C, Co = dZ.shape[3]
    check4("dZ", dZ.shape, N, Ho, Wo, Co)
    check2("Kmat", Kmat.shape, KK, Co)
    chunk = _check_chunk(chunk, N)
    cdef Py_ssize_t P = Ho * Wo
    _check_int(chunk * P, "chunk*Ho*Wo"); _check_int(KK, "k*k*C_in"); _check_int(Co, "C_out")
    if N == 0 or H * W * C == 0:
        return
    dtype = np.float64 if floating is double else np.float32
    cdef floating[:, ::1] buf = np.empty((chunk * P, max(KK, 1)), dtype=dtype)
    cdef Py_ssize_t n0, n1
    cdef floating* dU = &dU_out[0, 0, 0, 0]
    cdef const floating* Km = &Kmat[0, 0] if Co > 0 else NULL
    cdef const floating* dZp = &dZ[0, 0, 0, 0] if Co > 0 else NULL
    with nogil:
        memset(dU, 0, N * H * W * C * sizeof(floating))
        if Co > 0:
            n0 = 0
            while n0 < N:
                n1 = n0 + chunk if n0 + chunk < N else N
                # column-major: dPhi^T (KK x m) = Kmat (KK x Co) @ dZ^T (Co x m)
                _gemm(c'T', c'N', <int>KK, <int>((n1 - n0) * P), <int>Co,
                      <floating>1.0, Km, <int>Co, dZp + n0 * P * Co, <int>Co,
                      <floating>0.0, &buf[0, 0], <int>KK)
                _col2im(&buf[0, 0], H, W, C, k, stride, pad, Ho, Wo, n0, n1, dU)
                n0 = n1


def conv_gram(const floating[:, :, :, ::1] U, const floating[:, :, :, ::1] Zb,
              Py_ssize_t k, Py_ssize_t stride, Py_ssize_t pad,
              floating[:, ::1] G_out, floating[:, ::1] RHS_out, Py_ssize_t chunk):
    """G_out := Phi^T Phi (narrow Gram kernel or syrk per block, symmetrised) and
    RHS_out := Phi^T Zb, over blocks of at most `chunk` samples (fewer when fewer fill
    about 512 KB of patch rows); overwrites."""
    cdef Py_ssize_t N = U.shape[0], H = U.shape[1], W = U.shape[2], C = U.shape[3]
    _check_geometry(k, stride, pad)
    cdef Py_ssize_t Ho = _out_size(H, k, stride, pad, "U height")
    cdef Py_ssize_t Wo = _out_size(W, k, stride, pad, "U width")
    cdef Py_ssize_t KK = k * k * C, Co = Zb.shape[3]
    check4("Zb", Zb.shape, N, Ho, Wo, Co)
    check2("G_out", G_out.shape, KK, KK)
    check2("RHS_out", RHS_out.shape, KK, Co)
    chunk = _check_chunk(chunk, N)
    cdef Py_ssize_t P = Ho * Wo
    _check_int(chunk * P, "chunk*Ho*Wo"); _check_int(KK, "k*k*C_in"); _check_int(Co, "C_out")
    if KK == 0:
        return
    # fewer samples per block when fewer fill about 512 KB: the patch rows then stay in L2
    # between im2col and the two products (measured at 28x28, k*k*C_in = 72: 0.54 of the
    # DGEMM rate with one image per block, 0.44 with two, 0.37 with the 8 MB default chunk)
    cdef Py_ssize_t l2_samples = (1 << 19) // max(1, P * KK * <Py_ssize_t>sizeof(floating))
    chunk = min(chunk, max(1, l2_samples))
    cdef floating* G = &G_out[0, 0]
    cdef floating* R = &RHS_out[0, 0] if Co > 0 else NULL
    if N == 0:
        with nogil:
            memset(G, 0, KK * KK * sizeof(floating))
            if Co > 0:
                memset(R, 0, KK * Co * sizeof(floating))
        return
    dtype = np.float64 if floating is double else np.float32
    cdef floating[:, ::1] buf = np.empty((chunk * P, KK), dtype=dtype)
    cdef const floating* Zp = &Zb[0, 0, 0, 0] if Co > 0 else NULL
    cdef Py_ssize_t n0, n1, a, c
    cdef floating beta
    cdef int m
    with nogil:
        n0 = 0
        while n0 < N:
            n1 = n0 + chunk if n0 + chunk < N else N
            m = <int>((n1 - n0) * P)
            beta = 0.0 if n0 == 0 else 1.0
            _im2col(&U[0, 0, 0, 0], H, W, C, k, stride, pad, Ho, Wo,
                    n0, n1, &buf[0, 0])
            # G += Phi^T Phi on and above the diagonal (C order)
            if n0 == 0:
                memset(G, 0, KK * KK * sizeof(floating))
            gram_upper_acc(m, KK, &buf[0, 0], KK, G, KK)
            # column-major: RHS^T (Co x KK) = Zb^T (Co x m) @ Phi (m x KK)
            _gemm(c'N', c'T', <int>Co, <int>KK, m, <floating>1.0,
                  Zp + n0 * P * Co, <int>Co, &buf[0, 0], <int>KK,
                  beta, R, <int>Co)
            n0 = n1
        # symmetrise: copy the C-order upper triangle to the lower one
        for a in range(KK):
            for c in range(a + 1, KK):
                G[c * KK + a] = G[a * KK + c]


def avgpool(const floating[:, :, :, ::1] U, Py_ssize_t q, floating[:, :, :, ::1] V_out):
    """V_out[n, i, j, c] := mean of U[n, i*q:(i+1)*q, j*q:(j+1)*q, c] (non-overlapping q x q average pooling)."""
    cdef Py_ssize_t N = U.shape[0], H = U.shape[1], W = U.shape[2], C = U.shape[3]
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    if H % q or W % q:
        raise ValueError(f"U spatial shape ({H}, {W}) is not divisible by q={q}")
    cdef Py_ssize_t Ho = H // q, Wo = W // q
    check4("V_out", V_out.shape, N, Ho, Wo, C)
    cdef Py_ssize_t n, i, j, di, dj, c
    cdef floating inv = <floating>1.0 / <floating>(q * q)
    cdef const floating* src
    cdef floating* dst
    if N * H * W * C == 0:
        return
    with nogil:
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    dst = &V_out[n, i, j, 0]
                    memset(dst, 0, C * sizeof(floating))
                    for di in range(q):
                        for dj in range(q):
                            src = &U[n, i * q + di, j * q + dj, 0]
                            for c in range(C):
                                dst[c] += src[c]
                    for c in range(C):
                        dst[c] *= inv


def avgpool_adjoint(const floating[:, :, :, ::1] dV, Py_ssize_t q,
                    floating[:, :, :, ::1] dU_out):
    """dU_out[n, i*q+di, j*q+dj, c] := dV[n, i, j, c] / q^2 (adjoint of avgpool); overwrites."""
    cdef Py_ssize_t N = dU_out.shape[0], H = dU_out.shape[1]
    cdef Py_ssize_t W = dU_out.shape[2], C = dU_out.shape[3]
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    if H % q or W % q:
        raise ValueError(f"dU_out spatial shape ({H}, {W}) is not divisible by q={q}")
    cdef Py_ssize_t Ho = H // q, Wo = W // q
    check4("dV", dV.shape, N, Ho, Wo, C)
    cdef Py_ssize_t n, i, j, di, dj, c
    cdef floating inv = <floating>1.0 / <floating>(q * q)
    cdef const floating* src
    cdef floating* dst
    if N * H * W * C == 0:
        return
    with nogil:
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    src = &dV[n, i, j, 0]
                    for di in range(q):
                        for dj in range(q):
                            dst = &dU_out[n, i * q + di, j * q + dj, 0]
                            for c in range(C):
                                dst[c] = src[c] * inv


def maxpool(const floating[:, :, :, ::1] U, Py_ssize_t q, floating[:, :, :, ::1] V_out,
            int64_t[:, :, :, ::1] argmax_out):
    """V_out := max of each non-overlapping q x q window of U; argmax_out := di*q + dj of the (first) max in the window."""
    cdef Py_ssize_t N = U.shape[0], H = U.shape[1], W = U.shape[2], C = U.shape[3]
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    if H % q or W % q:
        raise ValueError(f"U spatial shape ({H}, {W}) is not divisible by q={q}")
    cdef Py_ssize_t Ho = H // q, Wo = W // q
    check4("V_out", V_out.shape, N, Ho, Wo, C)
    check4("argmax_out", argmax_out.shape, N, Ho, Wo, C)
    cdef Py_ssize_t n, i, j, di, dj, c
    cdef const floating* src
    cdef floating* dst
    cdef int64_t* am
    cdef int64_t w
    if N * H * W * C == 0:
        return
    with nogil:
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    dst = &V_out[n, i, j, 0]
                    am = &argmax_out[n, i, j, 0]
                    memcpy(dst, &U[n, i * q, j * q, 0], C * sizeof(floating))
                    memset(am, 0, C * sizeof(int64_t))
                    for di in range(q):
                        for dj in range(q):
                            if di == 0 and dj == 0:
                                continue
                            src = &U[n, i * q + di, j * q + dj, 0]
                            w = di * q + dj
                            for c in range(C):
                                if src[c] > dst[c]:
                                    dst[c] = src[c]
                                    am[c] = w


def maxpool_adjoint(const floating[:, :, :, ::1] dV, const int64_t[:, :, :, ::1] argmax,
                    floating[:, :, :, ::1] dU_out):
    """dU_out := scatter of dV to the argmax positions of each q x q window (adjoint of maxpool at fixed argmax); overwrites."""
    cdef Py_ssize_t N = dU_out.shape[0], H = dU_out.shape[1]
    cdef Py_ssize_t W = dU_out.shape[2], C = dU_out.shape[3]
    cdef Py_ssize_t Ho = dV.shape[1], Wo = dV.shape[2]
    if Ho < 1 or Wo < 1 or H % Ho or W % Wo or H // Ho != W // Wo:
        raise ValueError(
            f"dU_out spatial shape ({H}, {W}) is not a q-multiple of dV's ({Ho}, {Wo})")
    cdef Py_ssize_t q = H // Ho
    check4("dV", dV.shape, N, Ho, Wo, C)
    check4("argmax", argmax.shape, N, Ho, Wo, C)
    cdef Py_ssize_t n, i, j, c, qq = q * q
    cdef int64_t a
    cdef int64_t bad = 0
    cdef bint anybad = False
    if N * H * W * C == 0:
        return
    with nogil:
        memset(&dU_out[0, 0, 0, 0], 0, N * H * W * C * sizeof(floating))
        for n in range(N):
            for i in range(Ho):
                for j in range(Wo):
                    for c in range(C):
                        a = argmax[n, i, j, c]
                        if a < 0 or a >= qq:
                            bad = a
                            anybad = True
                            continue
                        dU_out[n, i * q + a // q, j * q + a % q, c] = dV[n, i, j, c]
    if anybad:
        raise ValueError(f"argmax holds {bad}, outside the window range [0, {qq})")
