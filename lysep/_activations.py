"""Activations (MATH.md §1): codes shared with the compiled kernels, Lipschitz
constants beta, and the NumPy reference of the value/derivative pass."""
import numpy as np

#: activation name -> code understood by the compiled kernels (src/_elementwise.pxd)
ACTIVATION_CODES = {"tanh": 0, "sigmoid": 1, "relu": 2, "softplus": 3}

#: Lipschitz constant beta of each activation (MATH.md §1)
LIPSCHITZ = {"tanh": 1.0, "sigmoid": 0.25, "relu": 1.0, "softplus": 1.0}

_NAMES = {code: name for name, code in ACTIVATION_CODES.items()}


def _sigmoid(Z):
    out = np.empty_like(Z)
    pos = Z >= 0
    out[pos] = 1 / (1 + np.exp(-Z[pos]))
    e = np.exp(Z[~pos])
    out[~pos] = e / (1 + e)
    return out


def activation(Z, kind, A_out, D_out=None):
    """A_out := sigma(Z); D_out := sigma'(Z) when given (NumPy reference).

    Parameters
    ----------
    Z : ndarray of shape (N, n)
        Pre-activations.
    kind : int
        Activation code from :data:`ACTIVATION_CODES`.
    A_out, D_out : ndarray of shape (N, n)
        Outputs, written in place.
    """
    name = _NAMES[kind]
    one = Z.dtype.type(1)
    if name == "tanh":
        A_out[...] = np.tanh(Z)
        if D_out is not None:
            D_out[...] = one - A_out * A_out
    elif name == "sigmoid":
        A_out[...] = _sigmoid(Z)
        if D_out is not None:
            D_out[...] = A_out * (one - A_out)
    elif name == "relu":
        A_out[...] = np.where(Z > 0, Z, 0)
        if D_out is not None:
            D_out[...] = Z > 0
    else:
        A_out[...] = np.maximum(Z, 0) + np.log1p(np.exp(-np.abs(Z)))
        if D_out is not None:
            D_out[...] = _sigmoid(Z)


def derivative_from_value(A, kind):
    """sigma'(z) computed from a = sigma(z) (see src/_elementwise.pxd)."""
    name = _NAMES[kind]
    one = A.dtype.type(1)
    if name == "tanh":
        return one - A * A
    if name == "sigmoid":
        return A * (one - A)
    if name == "relu":
        return (A > 0).astype(A.dtype)
    return (-np.expm1(-A.astype(np.float64))).astype(A.dtype)
