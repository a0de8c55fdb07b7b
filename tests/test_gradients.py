"""Every block gradient against central finite differences of J (MATH.md §4) or of
the true loss (the GD baseline), in float64."""
import numpy as np
import pytest

from lysep import _fnn_blocks
from lysep._activations import ACTIVATION_CODES
from lysep._backend import COMPILED
from lysep._sweep import GDState, LySepState

from conftest import (J_from_scratch, central_difference, make_problem, sample_indices,
                      true_loss)

ACTS = ["tanh", "sigmoid", "softplus"]       # smooth: relu has kinks


def _state(name, s=0.3, seed=0):
    X, y, W, b = make_problem(seed=seed)
    st = LySepState(COMPILED, X, y, W, b, name, s)
    for _ in range(2):        # move off the forward-pass point so every residual is non-zero
        st.sweep()
    assert all(r > 0 for r in st.r)
    return st


def _J(st):
    return J_from_scratch(st.X, st.y, st.W, st.b, st.Z, st._name, st.s)


@pytest.mark.parametrize("name", ACTS)
def test_output_block_gradient(name):
    st = _state(name)
    st._name = name
    m, N = st.m, st.N
    om = st.omegas()
    mu = sum(o * r for o, r in zip(om, st.r)) / (N * st.wn[m])
    W, b = st.W[m], st.b[m]
    K = W.shape[1]
    gW, gb = np.empty_like(W), np.empty_like(b)
    _fnn_blocks.output_step(st.A[m - 1], st.y, W, b, mu, 1.0, 1.0, 0, 0.5, 1e-4,
                            np.empty_like(W), np.empty_like(b), np.empty((N, K)),
                            np.empty((N, K)), gW, gb)
    rng = np.random.default_rng(0)
    for idx in sample_indices(W.shape, 6, rng):
        assert central_difference(lambda: _J(st), W, idx) == pytest.approx(gW[idx], rel=1e-5, abs=1e-8)
    for j in range(K):
        assert central_difference(lambda: _J(st), b, (j,)) == pytest.approx(gb[j], rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("name", ACTS)
def test_last_hidden_block_gradient(name):
    st = _state(name)
    st._name = name
    i, N, m = st.m - 1, st.N, st.m
    Z = st.Z[i]
    grad = np.empty_like(Z)
    _fnn_blocks.z_last_step(Z, st.A[i], st.R[i], st.W[m], st.b[m], st.y,
                            ACTIVATION_CODES[name], st.omegas()[i], np.ones(N), 1.0, 0, 0.5,
                            1e-4, 2.0, 1e4, np.empty_like(Z), np.empty_like(Z),
                            np.empty_like(Z), np.empty_like(Z), grad,
                            np.empty((N, st.W[m].shape[1])))
    rng = np.random.default_rng(1)
    for idx in sample_indices(Z.shape, 8, rng):
        assert N * central_difference(lambda: _J(st), Z, idx) == pytest.approx(grad[idx], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", ACTS)
@pytest.mark.parametrize("j", [0, 1])
def test_hidden_block_gradient(name, j):
    """Paper's (3.12): dJ/dZ_j = (2/N)[w_j R_j - w_{j+1} sigma'(Z_j) * (W_{j+1}^T R_{j+1})]."""
    st = _state(name)
    st._name = name
    i, N = j + 1, st.N
    Z, om = st.Z[j], st.omegas()
    grad = np.empty_like(Z)
    n2 = st.Z[i].shape[1]
    _fnn_blocks.z_hidden_step(Z, st.A[j], st.R[j], st.R[i], st.W[i], st.Z[i], st.b[i],
                              ACTIVATION_CODES[name],
                              om[j], om[i], np.ones(N), 1.0, 0, 0.5, 1e-4, 2.0, 1e4,
                              np.empty_like(Z), np.empty_like(Z), np.empty_like(Z),
                              np.empty((N, n2)), np.empty_like(Z), grad, np.empty((N, n2)),
                              np.empty((N, n2)))
    rng = np.random.default_rng(2)
    for idx in sample_indices(Z.shape, 8, rng):
        fd = N * central_difference(lambda: _J(st), Z, idx)
        # abs: the difference quotient's rounding noise, N * eps * J / h ~ 1e-8
        assert fd == pytest.approx(grad[idx], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("name", ACTS + ["relu"])
def test_gd_backprop_gradient(name):
    X, y, W, b = make_problem(seed=3)
    st = GDState(COMPILED, X, y, W, b, name, learning_rate=1.0)
    st.forward()
    before = [w.copy() for w in W] + [v.copy() for v in b]
    st.update()                   # lr = 1: the step taken is exactly the gradient
    grads = [o - n for o, n in zip(before, list(W) + list(b))]
    params = [w.copy() for w in before]
    Ws, bs = params[:len(W)], params[len(W):]
    rng = np.random.default_rng(4)
    for p, g in zip(params, grads):
        for idx in sample_indices(p.shape, 4, rng):
            fd = central_difference(lambda: true_loss(X, y, Ws, bs, name), p, idx)
            assert fd == pytest.approx(g[idx], rel=1e-5, abs=1e-8)
