"""The closed-form blocks against brute force (MATH.md §4 step 3): the ridge W_l and the
bias b_l minimise the full J over their block, computed from scratch."""
import numpy as np
import pytest
from scipy.optimize import minimize

from lysep._backend import COMPILED, REFERENCE
from lysep._fnn import init_parameters
from lysep._sweep import LySepState
from lysep.datasets import circle

from conftest import J_from_scratch, make_problem


def _state(backend, name="tanh", s=0.3):
    X, y, W, b = make_problem(N=80, d=6, hidden=(5, 4, 4))
    st = LySepState(backend, X, y, W, b, name, s)
    for _ in range(2):
        st.sweep()
    return st


def _J_of(st, name, i, which):
    def J(x):
        W = list(st.W)
        b = list(st.b)
        if which == "W":
            W[i] = x.reshape(st.W[i].shape)
        else:
            b[i] = x
        return J_from_scratch(st.X, st.y, W, b, st.Z, name, st.s)
    return J


@pytest.mark.parametrize("backend", [COMPILED, REFERENCE], ids=["compiled", "reference"])
@pytest.mark.parametrize("i", [0, 1, 2])
def test_ridge_update_is_the_minimiser_of_J(backend, i):
    st = _state(backend)
    lam = st.ridge_lambda(i)
    assert (lam > 0) == (i > 0)                     # lambda_1 = 0 (MATH.md §4)
    prev = st.A[i - 1] if i > 0 else st.X
    W_new, R_new = np.empty_like(st.W[i]), np.empty_like(st.R[i])
    n_in = prev.shape[1]
    r, w, status = backend.ridge_update(prev, st.Z[i], st.b[i], lam, st.rcond_min, W_new, R_new,
                                        np.empty((n_in, n_in)), np.empty((n_in, n_in)))
    assert status == 0
    J = _J_of(st, "tanh", i, "W")
    best = minimize(J, st.W[i].ravel(), method="BFGS", options={"gtol": 1e-12, "maxiter": 5000})
    assert J(W_new.ravel()) <= best.fun + 1e-12 * abs(best.fun)
    np.testing.assert_allclose(W_new.ravel(), best.x, rtol=1e-4, atol=1e-6)
    # the returned norms are those of the returned arrays
    assert r == pytest.approx(np.sum(R_new ** 2), rel=1e-12)
    assert w == pytest.approx(np.sum(W_new ** 2), rel=1e-12)


@pytest.mark.parametrize("i", [0, 1, 2])
def test_bias_update_is_the_minimiser_of_J(i):
    st = _state(COMPILED)
    R_new, b_new = np.empty_like(st.R[i]), np.empty_like(st.b[i])
    COMPILED.bias_update(st.R[i], st.b[i], R_new, b_new)
    J = _J_of(st, "tanh", i, "b")
    best = minimize(J, st.b[i], method="BFGS", options={"gtol": 1e-12})
    assert J(b_new) <= best.fun + 1e-12 * abs(best.fun)
    np.testing.assert_allclose(b_new, best.x, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("backend", [COMPILED, REFERENCE], ids=["compiled", "reference"])
def test_layers_at_their_fit_skip_the_closed_form_blocks(backend):
    """A deep network whose first layers sit at their fit (R_i = 0 exactly, so lambda_i =
    0 there): the sweep does not compute their ridge and bias blocks (W_i, b_i already
    minimise them, at 0), and computing them anyway could not lower J."""
    X, y = circle(100, random_state=0)
    W, b = init_parameters((2,) + (10,) * 19 + (2,), np.random.default_rng(0), np.float64)
    st = LySepState(backend, X, y, W, b, "tanh", 0.01)
    for _ in range(3):
        st.sweep()
    frozen = [i for i in range(st.m) if st.r[i] == 0.0 and st.ridge_lambda(i) == 0.0]
    assert frozen, "the problem should have layers at their fit"
    before = [(st.W[i].copy(), st.b[i].copy()) for i in frozen]
    J0 = st.J
    stats = st.sweep()
    assert {i for i in frozen if st.r[i] == 0.0} <= set(stats["ridge_at_fit"])
    assert st.J <= J0
    for i, (Wi, bi) in zip(frozen, before):
        if st.r[i] == 0.0:            # still at the fit: its blocks never ran
            np.testing.assert_array_equal(st.W[i], Wi)
            np.testing.assert_array_equal(st.b[i], bi)
    for i in frozen:
        if st.r[i] == 0.0:
            J = st.J
            st._ridge_block(i)
            st._bias_block(i)
            assert st.J == J           # J cannot fall below a minimum of its block


@pytest.mark.parametrize("backend", [COMPILED, REFERENCE], ids=["compiled", "reference"])
@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
def test_z_block_between_layers_at_their_fit_is_the_kernels_no_op(backend, per_sample):
    """With R_j = 0 and R_{j+1} = 0 the hidden Z block is not run: the kernel would give
    up on every row before a trial, leave Z, R and J as they are and only grow the
    remembered steps, which the sweep reproduces bit for bit."""
    X, y = circle(100, random_state=0)
    W, b = init_parameters((2,) + (10,) * 19 + (2,), np.random.default_rng(0), np.float64)
    st = LySepState(backend, X, y, W, b, "tanh", 0.01, per_sample=per_sample)
    for _ in range(3):
        st.sweep()
    j = next(j for j in range(st.m - 1) if st.r[j] == 0.0 and st.r[j + 1] == 0.0)
    i, om, sr = j + 1, st.omegas(), st.search
    eta = st.eta_z[j].copy()
    n, n2 = st.Z[j].shape[1], st.Z[i].shape[1]
    out = [np.empty_like(st.Z[j]) for _ in range(3)] + [np.empty_like(st.Z[i])]
    work = [np.empty((st.N, c)) for c in (n, n, n2, n2)]
    res = backend.z_hidden_step(
        st.Z[j], st.A[j], st.R[j], st.R[i], st.W[i], st.Z[i], st.b[i], st.kind, om[j], om[i],
        eta, 2 * (om[j] + om[i] * st.rho[i] * st.wn[i]), sr.max_backtracks, sr.shrink,
        sr.armijo, sr.grow, sr.eta_max, *out, *work)
    assert res[2:] == (st.N, 0)
    Z, R, J = st.Z[j], st.R[j].copy(), st.J
    st.stats = {"failed_rows": 0, "trials": 0, "z_at_fit": []}
    st._hidden_block(j)
    assert st.stats["z_at_fit"] == [j] and st.stats["failed_rows"] == st.N
    assert st.Z[j] is Z and st.J == J
    np.testing.assert_array_equal(st.R[j], R)
    np.testing.assert_array_equal(st.eta_z[j], eta)
