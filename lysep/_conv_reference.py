"""Plain NumPy reference for :mod:`lysep._conv` (same names and signatures).

Every function fills its ``*_out`` argument(s) exactly as the compiled kernel
does (same overwrite/accumulate semantics, see the ``_conv`` module
docstring) and also returns them, so ``ref.f(..., out)`` and
``conv.f(..., out)`` are interchangeable.  The reference allocates freely:
the ``chunk`` argument is checked (>= 1) and otherwise ignored (the full patch matrix is
built at once), and it favours clarity over speed.

Layout: NHWC images ``U`` (N, H, W, C); patch matrix ``Phi`` (N*Ho*Wo, k*k*C)
with row ``(n*Ho + i)*Wo + j`` and column ``(di*k + dj)*C + c``;
``Kmat`` (k*k*C_in, C_out); ``maxpool`` argmax = ``di*q + dj`` within the
window (first maximum on ties).
"""

import numpy as np

__all__ = [
    "im2col", "col2im", "conv_forward", "conv_transpose", "conv_gram",
    "avgpool", "avgpool_adjoint", "maxpool", "maxpool_adjoint",
]


def _out_size(size, k, stride, pad, what):
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    if size + 2 * pad < k:
        raise ValueError(f"{what}={size} is too small for k={k} with pad={pad}")
    return (size + 2 * pad - k) // stride + 1


def _check_chunk(chunk):
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")


def _check(arr, shape, name):
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")


def _windows(Up, k, stride, Ho, Wo):
    """Yield (di, dj, view) with view[n, i, j, c] = Up[n, i*s + di, j*s + dj, c]."""
    for di in range(k):
        for dj in range(k):
            yield di, dj, (slice(None), slice(di, di + stride * (Ho - 1) + 1, stride),
                           slice(dj, dj + stride * (Wo - 1) + 1, stride), slice(None))


def im2col(U, k, stride, pad, Phi_out, n_start=0, n_stop=None):
    """Phi_out := patch rows of U[n_start:n_stop] (k x k, stride, zero pad); overwrites."""
    N, H, W, C = U.shape
    Ho, Wo = _out_size(H, k, stride, pad, "U height"), _out_size(W, k, stride, pad, "U width")
    n_stop = N if n_stop is None else n_stop
    if not 0 <= n_start <= n_stop <= N:
        raise ValueError(f"n_start={n_start}, n_stop={n_stop} must satisfy 0 <= n_start <= n_stop <= N={N}")
    _check(Phi_out, ((n_stop - n_start) * Ho * Wo, k * k * C), "Phi_out")
    Up = np.pad(U[n_start:n_stop], ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    P = np.empty((n_stop - n_start, Ho, Wo, k, k, C), dtype=U.dtype)
    for di, dj, sl in _windows(Up, k, stride, Ho, Wo):
        P[:, :, :, di, dj, :] = Up[sl]
    Phi_out[...] = P.reshape(Phi_out.shape)
    return Phi_out


def col2im(dPhi, k, stride, pad, dU_out, n_start=0, n_stop=None):
    """dU_out[n_start:n_stop] += im2col^T(dPhi), the exact adjoint of im2col; does NOT zero dU_out."""
    N, H, W, C = dU_out.shape
    Ho, Wo = _out_size(H, k, stride, pad, "dU_out height"), _out_size(W, k, stride, pad, "dU_out width")
    n_stop = N if n_stop is None else n_stop
    if not 0 <= n_start <= n_stop <= N:
        raise ValueError(f"n_start={n_start}, n_stop={n_stop} must satisfy 0 <= n_start <= n_stop <= N={N}")
    nb = n_stop - n_start
    _check(dPhi, (nb * Ho * Wo, k * k * C), "dPhi")
    P = dPhi.reshape(nb, Ho, Wo, k, k, C)
    dUp = np.zeros((nb, H + 2 * pad, W + 2 * pad, C), dtype=dU_out.dtype)
    for di, dj, sl in _windows(dUp, k, stride, Ho, Wo):
        dUp[sl] += P[:, :, :, di, dj, :]
    dU_out[n_start:n_stop] += dUp[:, pad:pad + H, pad:pad + W, :]
    return dU_out


def conv_forward(U, Kmat, bias, k, stride, pad, Z_out, chunk):
    """Z_out := Phi(U) @ Kmat + bias (NHWC); `chunk` is only checked."""
    _check_chunk(chunk)
    N, H, W, C = U.shape
    Ho, Wo = _out_size(H, k, stride, pad, "U height"), _out_size(W, k, stride, pad, "U width")
    Co = Kmat.shape[1]
    _check(Kmat, (k * k * C, Co), "Kmat")
    _check(bias, (Co,), "bias")
    _check(Z_out, (N, Ho, Wo, Co), "Z_out")
    Phi = im2col(U, k, stride, pad, np.empty((N * Ho * Wo, k * k * C), U.dtype))
    Z_out[...] = (Phi @ Kmat + bias).reshape(Z_out.shape)
    return Z_out


def conv_transpose(dZ, Kmat, k, stride, pad, dU_out, chunk):
    """dU_out := col2im(dZ @ Kmat^T), adjoint of the linear part of conv_forward; overwrites; `chunk` is only checked."""
    _check_chunk(chunk)
    N, H, W, C = dU_out.shape
    Ho, Wo = _out_size(H, k, stride, pad, "dU_out height"), _out_size(W, k, stride, pad, "dU_out width")
    Co = dZ.shape[3] if dZ.ndim == 4 else -1
    _check(dZ, (N, Ho, Wo, Co), "dZ")
    _check(Kmat, (k * k * C, Co), "Kmat")
    dU_out[...] = 0
    col2im(dZ.reshape(N * Ho * Wo, Co) @ Kmat.T, k, stride, pad, dU_out)
    return dU_out


def conv_gram(U, Zb, k, stride, pad, G_out, RHS_out, chunk):
    """G_out := Phi^T Phi and RHS_out := Phi^T Zb from the full patch matrix; overwrites; `chunk` is only checked."""
    _check_chunk(chunk)
    N, H, W, C = U.shape
    Ho, Wo = _out_size(H, k, stride, pad, "U height"), _out_size(W, k, stride, pad, "U width")
    Co = Zb.shape[3] if Zb.ndim == 4 else -1
    _check(Zb, (N, Ho, Wo, Co), "Zb")
    _check(G_out, (k * k * C, k * k * C), "G_out")
    _check(RHS_out, (k * k * C, Co), "RHS_out")
    Phi = im2col(U, k, stride, pad, np.empty((N * Ho * Wo, k * k * C), U.dtype))
    G_out[...] = Phi.T @ Phi
    RHS_out[...] = Phi.T @ Zb.reshape(N * Ho * Wo, Co)
    return G_out, RHS_out


def _pool_shape(shape, q, name):
    N, H, W, C = shape
    if q < 1:
        raise ValueError(f"q must be >= 1, got {q}")
    if H % q or W % q:
        raise ValueError(f"{name} spatial shape ({H}, {W}) is not divisible by q={q}")
    return N, H // q, W // q, C


def _blocks(U, q):
    """(N, Ho, Wo, C, q*q) view-copy of the q x q windows, window index di*q + dj last."""
    N, H, W, C = U.shape
    B = U.reshape(N, H // q, q, W // q, q, C)
    return B.transpose(0, 1, 3, 5, 2, 4).reshape(N, H // q, W // q, C, q * q)


def avgpool(U, q, V_out):
    """V_out := mean over each non-overlapping q x q window of U."""
    _check(V_out, _pool_shape(U.shape, q, "U"), "V_out")
    V_out[...] = _blocks(U, q).mean(axis=-1)
    return V_out


def avgpool_adjoint(dV, q, dU_out):
    """dU_out[n, i*q+di, j*q+dj, c] := dV[n, i, j, c] / q^2; overwrites."""
    _check(dV, _pool_shape(dU_out.shape, q, "dU_out"), "dV")
    dU_out[...] = np.repeat(np.repeat(dV, q, axis=1), q, axis=2) / (q * q)
    return dU_out


def maxpool(U, q, V_out, argmax_out):
    """V_out := max over each q x q window of U; argmax_out := di*q + dj of the first max."""
    shape = _pool_shape(U.shape, q, "U")
    _check(V_out, shape, "V_out")
    _check(argmax_out, shape, "argmax_out")
    B = _blocks(U, q)
    argmax_out[...] = B.argmax(axis=-1)
    V_out[...] = np.take_along_axis(B, argmax_out[..., None], axis=-1)[..., 0]
    return V_out, argmax_out


def maxpool_adjoint(dV, argmax, dU_out):
    """dU_out := dV scattered to the argmax position of each window (zero elsewhere); overwrites."""
    N, H, W, C = dU_out.shape
    Ho, Wo = dV.shape[1], dV.shape[2]
    if Ho < 1 or Wo < 1 or H % Ho or W % Wo or H // Ho != W // Wo:
        raise ValueError(f"dU_out spatial shape ({H}, {W}) is not a q-multiple of dV's ({Ho}, {Wo})")
    q = H // Ho
    _check(dV, (N, Ho, Wo, C), "dV")
    _check(argmax, (N, Ho, Wo, C), "argmax")
    if argmax.size and (argmax.min() < 0 or argmax.max() >= q * q):
        raise ValueError(f"argmax holds values outside the window range [0, {q * q})")
    onehot = (argmax[..., None] == np.arange(q * q)).astype(dV.dtype)   # (N,Ho,Wo,C,q*q)
    B = (onehot * dV[..., None]).reshape(N, Ho, Wo, C, q, q)
    dU_out[...] = B.transpose(0, 1, 4, 2, 5, 3).reshape(N, H, W, C)
    return dU_out
