"""Shared fixtures: small random problems and a from-scratch J (MATH.md §3) that
trusts nothing cached by the sweep."""
import math
import threading

import numpy as np
import pytest

from lysep._activations import ACTIVATION_CODES, LIPSCHITZ, activation
from lysep._fnn import init_parameters

DTYPES = [np.float64, np.float32]
# relative tolerances of compiled-vs-reference comparisons (STYLE.md)
RTOL = {np.float64: 1e-12, np.float32: 2e-5}


def make_problem(N=60, d=5, K=3, hidden=(6, 5, 4), dtype=np.float64, seed=0):
    """Gaussian features, random labels, default initialisation (MATH.md §1)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, d)).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    W, b = init_parameters((d, *hidden, K), rng, dtype)
    return X, y, W, b


def sigma(Z, name):
    A = np.empty_like(Z)
    activation(Z, ACTIVATION_CODES[name], A)
    return A


def cross_entropy(G, y):
    """Mean softmax cross-entropy, max-shifted, in float64."""
    G = G.astype(np.float64)
    g = G - G.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(g).sum(axis=1)) - g[np.arange(len(y)), y]))


def J_from_scratch(X, y, W, b, Z, name, s):
    """J(theta, Z) = CE(G) + (1/N) sum_l omega_l ||R_l||^2, everything recomputed."""
    W = [w.astype(np.float64) for w in W]
    b = [v.astype(np.float64) for v in b]
    Z = [z.astype(np.float64) for z in Z]
    m, N = len(W) - 1, X.shape[0]
    beta2 = LIPSCHITZ[name] ** 2
    prev = X.astype(np.float64)
    total = 0.0
    for i in range(m):
        R = Z[i] - prev @ W[i] - b[i]
        omega = s * 2 * m / math.e * np.prod([beta2 * np.sum(W[j] ** 2) for j in range(i + 1, m + 1)])
        total += omega * np.sum(R ** 2) / N
        prev = sigma(Z[i], name)
    return cross_entropy(prev @ W[m] + b[m], y) + total


def true_loss(X, y, W, b, name):
    prev = X.astype(np.float64)
    for i in range(len(W) - 1):
        prev = sigma(prev @ W[i].astype(np.float64) + b[i], name)
    return cross_entropy(prev @ W[-1].astype(np.float64) + b[-1], y)


def next_layer(A, R_next, W_next, b_next=None):
    """Z_next and b_next of a z_hidden_step call, consistent with its residual:
    R_next = Z_next - A W_next - b_next (float64 sums, rounded to A's dtype)."""
    b = np.zeros(W_next.shape[1]) if b_next is None else b_next.astype(np.float64)
    Z = R_next.astype(np.float64) + A.astype(np.float64) @ W_next.astype(np.float64) + b
    return Z.astype(A.dtype), b.astype(A.dtype)


def central_difference(f, x, idx, h=1e-6):
    """(f(x + h e_idx) - f(x - h e_idx)) / 2h, perturbing the array x in place."""
    old = x[idx]
    x[idx] = old + h
    fp = f()
    x[idx] = old - h
    fm = f()
    x[idx] = old
    return (fp - fm) / (2 * h)


def sample_indices(shape, n, rng):
    """n random multi-indices into an array of `shape`."""
    return [tuple(int(rng.integers(0, d)) for d in shape) for _ in range(n)]


def fit_in_threads(estimators, X, y):
    """Fit every estimator on (X, y) at the same time, each in its own Python thread."""
    threads = [threading.Thread(target=est.fit, args=(X, y)) for est in estimators]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def assert_same_fit(a, b):
    """Two fitted models with bit-identical parameters and loss curves."""
    for Wa, Wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_array_equal(Wa, Wb)
    assert a.loss_curve_ == b.loss_curve_


def image_data(n=60, H=8, C=None, K=3, seed=0):
    """Small images (n, H, H) or (n, C, H, H) with string labels of K classes and a
    learnable signal in the first columns of every image."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, n)
    shape = (n, H, H) if C is None else (n, C, H, H)
    X = rng.normal(size=shape) * 0.3
    X[..., :4] += y.reshape((n,) + (1,) * (X.ndim - 1)) * 0.5
    return X, np.array(["a", "b", "c", "d", "e"][:K])[y]


@pytest.fixture(params=DTYPES, ids=["float64", "float32"])
def dtype(request):
    return request.param
