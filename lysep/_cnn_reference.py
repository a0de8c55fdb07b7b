"""NumPy reference of the compiled CNN block pieces in ``lysep._cnn_blocks``.

Same names, signatures and write semantics; each function also returns what its
compiled twin returns.  Clear and slow on purpose; tests compare the two.
"""
import numpy as np
import scipy.linalg
import scipy.linalg.lapack

from ._activations import activation, derivative_from_value
from ._conv_reference import im2col


def _check(arr, shape, name):
    if tuple(arr.shape) != tuple(shape):
        raise ValueError(f"{name} has shape {tuple(arr.shape)}, expected {tuple(shape)}")


def _row_ssq(M):
    M = np.asarray(M, dtype=np.float64)
    return np.einsum("ij,ij->i", M, M)


def ridge_solve(gram, rhs, lam, rcond_min, W_out, work_gram, work_gram2):
    """W_out := (gram + lam I)^{-1} rhs: Cholesky, or the minimum-norm solution through
    the eigenvalues when the reciprocal condition estimate is below rcond_min."""
    n = gram.shape[0]
    _check(rhs, (n, rhs.shape[1]), "rhs")
    _check(W_out, rhs.shape, "W_out")
    G = gram + gram.dtype.type(lam) * np.eye(n, dtype=gram.dtype)
    U, info = scipy.linalg.lapack.get_lapack_funcs("potrf", (G,))(G, lower=False)
    pocon = scipy.linalg.lapack.get_lapack_funcs("pocon", (G,))
    rcond = pocon(U, np.abs(G).sum(axis=0).max())[0] if info == 0 else -1.0
    if info == 0 and rcond >= rcond_min:
        W_out[...] = scipy.linalg.cho_solve((U, False), rhs)
        return 0
    w, Q = np.linalg.eigh(G)
    keep = w > n * np.finfo(G.dtype).eps * w[-1]
    inv = np.where(keep, 1 / np.where(keep, w, 1), 0).astype(G.dtype)
    W_out[...] = Q @ (inv[:, None] * (Q.T @ rhs))
    return 1


def conv_weight_grad(U, dZ, k, stride, pad, grad_K_out, grad_b_out, chunk):
    """grad_K_out := Phi(U)^T dZ, grad_b_out := sum of dZ over samples and positions."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    N, Ho, Wo, Co = dZ.shape
    KK = k * k * U.shape[3]
    _check(grad_K_out, (KK, Co), "grad_K_out")
    Phi = im2col(U, k, stride, pad, np.empty((N * Ho * Wo, KK), U.dtype))
    D = dZ.reshape(-1, Co)
    grad_K_out[...] = Phi.T @ D
    grad_b_out[...] = D.sum(axis=0)


def conv_z_gradient(R, A, back, kind, omega, omega_next, grad_out, gsq_out):
    """grad_out := 2 omega R - 2 omega_next sigma'(Z) * back; gsq_out := row norms^2."""
    dt = R.dtype.type
    grad_out[...] = dt(2 * omega) * R - dt(2 * omega_next) * (derivative_from_value(A, kind) * back)
    gsq_out[...] = _row_ssq(grad_out)


def z_trial_rows(Z, R, grad, step, rows, kind, Zc_out, Rc_out, Ac_out, rsq_out):
    """Compact trial rows: Zc := Z - step g, Rc := R + (Zc - Z), Ac := sigma(Zc)."""
    na = rows.shape[0]
    if na and (rows.min() < 0 or rows.max() >= Z.shape[0]):
        raise ValueError("rows outside [0, N)")
    st = step[rows].astype(Z.dtype)[:, None]
    Zc_out[:na] = Z[rows] - st * grad[rows]
    Rc_out[:na] = R[rows] + (Zc_out[:na] - Z[rows])
    activation(Zc_out[:na], kind, Ac_out[:na])
    rsq_out[:na] = _row_ssq(Rc_out[:na])


def residual_rows(Z, rows, Yc, rsq_out):
    """Yc[a] := Z[rows[a]] - Yc[a]; rsq_out[a] := ||Yc[a]||^2."""
    na = rows.shape[0]
    Yc[:na] = Z[rows] - Yc[:na]
    rsq_out[:na] = _row_ssq(Yc[:na])


def row_sq_norms(M, out):
    """out[i] := ||M[i]||^2 in float64."""
    out[...] = _row_ssq(M)
