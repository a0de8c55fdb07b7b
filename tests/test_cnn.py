"""LySep-CNN (Algorithm 2, MATH.md §5-§6): compiled CNN block pieces against the NumPy
reference, finite-difference gradients of every CNN block against a from-scratch J and
loss written here in plain NumPy, the conv kernel update against a brute-force
minimiser, Theorem B and monotone J at every sweep, the estimator contract, and
LySep-CNN against GD-CNN on real Fashion-MNIST."""
import math
import os
import warnings

import numpy as np
import pytest
import scipy.optimize

from lysep import _cnn_blocks, _cnn_reference
from lysep._activations import ACTIVATION_CODES, LIPSCHITZ
from lysep import ConvergenceWarning
from lysep._cnn import CNNClassifier, init_cnn_parameters
from lysep._cnn_sweep import CNN_BACKENDS, Architecture, CNNGDState, CNNLySepState

from conftest import central_difference, image_data, sample_indices

DTYPES = [np.float64, np.float32]
RTOL = {np.float64: 1e-12, np.float32: 2e-5}
FMNIST = "/usr/share/datasets/fashion-mnist"


# ---------------------------------------------------------------------------
# a from-scratch CNN in plain NumPy (float64, explicit shifted sums for the conv)
def _act(Z, name):
    Z = np.asarray(Z, dtype=np.float64)
    return {"tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
            "relu": lambda z: np.maximum(z, 0),
            "softplus": lambda z: np.logaddexp(0, z)}[name](Z)


def _conv(U, Kmat, b, k, s, p):
    U = np.asarray(U, dtype=np.float64)
    N, H, W, C = U.shape
    K = np.asarray(Kmat, dtype=np.float64).reshape(k, k, C, -1)
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    Up = np.pad(U, ((0, 0), (p, p), (p, p), (0, 0)))
    out = np.zeros((N, Ho, Wo, K.shape[3])) + b
    for di in range(k):
        for dj in range(k):
            win = Up[:, di:di + s * (Ho - 1) + 1:s, dj:dj + s * (Wo - 1) + 1:s]
            out += np.einsum("nijc,co->nijo", win, K[di, dj])
    return out


def _pool(A, q, kind):
    if q == 1:
        return A
    N, H, W, C = A.shape
    B = A.reshape(N, H // q, q, W // q, q, C)
    return B.mean(axis=(2, 4)) if kind == "avg" else B.max(axis=(2, 4))


def _ce(G, y):
    g = G - G.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(g).sum(axis=1)) - g[np.arange(len(y)), y]))


def _after(arch, i, Z, name):
    """Input of layer i + 1 computed from the pre-activation Z of layer i."""
    a = _act(Z, name)
    if i < arch.n_conv:
        a = _pool(a, arch.conv[i].q, arch.pool)
        if i == arch.n_conv - 1:
            a = a.reshape(a.shape[0], -1)
    return a


def _lin(arch, i, U, W, b):
    if i < arch.n_conv:
        return _conv(U, W, b, arch.kernel_size, arch.stride, arch.padding)
    return U @ np.asarray(W, dtype=np.float64) + b


def _rho(arch, name):
    kappa = math.ceil(arch.kernel_size / arch.stride) ** 2
    out = []
    for j in range(arch.m + 1):
        gamma = 1.0 / arch.conv[j - 1].q if 1 <= j <= arch.n_conv and arch.pool == "avg" else 1.0
        out.append(LIPSCHITZ[name] ** 2 * gamma ** 2 * (kappa if j < arch.n_conv else 1.0))
    return out


def J_scratch(arch, X, y, W, b, Z, name, s):
    """J = CE(G) + (1/N) sum_l omega_l ||R_l||^2 with omega_l = s (2m/e) prod_{j>l} rho_j ||W_j||^2."""
    m, N, rho = arch.m, X.shape[0], _rho(arch, name)
    ins = [np.asarray(X, dtype=np.float64)] + [_after(arch, i, Z[i], name) for i in range(m)]
    total = 0.0
    for i in range(m):
        R = Z[i] - _lin(arch, i, ins[i], W[i], b[i])
        omega = s * 2 * m / math.e * np.prod(
            [rho[j] * np.sum(np.asarray(W[j], dtype=np.float64) ** 2) for j in range(i + 1, m + 1)])
        total += omega * np.sum(R ** 2) / N
    return _ce(ins[m] @ np.asarray(W[m], dtype=np.float64) + b[m], y) + total


def loss_scratch(arch, X, y, W, b, name):
    U = np.asarray(X, dtype=np.float64)
    for i in range(arch.m):
        U = _after(arch, i, _lin(arch, i, U, W[i], b[i]), name)
    return _ce(U @ np.asarray(W[-1], dtype=np.float64) + b[-1], y)


def make_cnn(N=24, H=8, C=2, channels=(3, 4), pools=(2, 1), pool="avg", hidden=(5,), K=3,
             k=3, s=1, p=1, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    arch = Architecture((H, H, C), channels, k, s, p, pools, pool, hidden, K)
    X = rng.normal(size=(N, H, H, C)).astype(dtype)
    y = rng.integers(0, K, N).astype(np.int64)
    W, b = init_cnn_parameters(arch, rng, dtype)
    return arch, X, y, W, b


# ---------------------------------------------------------------------------
# compiled vs reference
def _close(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert np.linalg.norm(a - b) <= RTOL[dtype] * 10 * (np.linalg.norm(b) + 1e-30)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lam", [0.0, 0.5])
@pytest.mark.parametrize("singular", [False, True])
def test_ridge_solve_matches_reference(dtype, lam, singular):
    rng = np.random.default_rng(1)
    Phi = rng.normal(size=(40, 12))
    if singular:
        Phi[:, 5] = Phi[:, 2]                       # rank deficient Gram matrix
    G = (Phi.T @ Phi).astype(dtype)
    rhs = (Phi.T @ rng.normal(size=(40, 3))).astype(dtype)
    outs = []
    for mod in (_cnn_blocks, _cnn_reference):
        W = np.empty((12, 3), dtype)
        st = mod.ridge_solve(G, rhs, lam, 1e4 * np.finfo(dtype).eps, W,
                             np.empty((12, 12), dtype), np.empty((12, 12), dtype))
        outs.append((st, W))
    assert outs[0][0] == outs[1][0] == (1 if singular and lam == 0 else 0)
    _close(outs[0][1], outs[1][1], dtype if not singular or lam else np.float32)
    if not singular or lam:                          # it really solves the system
        Gl = G.astype(np.float64) + lam * np.eye(12)
        _close(Gl @ outs[0][1], rhs, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (2, 2, 0), (3, 2, 1)])
def test_conv_weight_grad_matches_reference_and_chunks(dtype, k, s, p):
    rng = np.random.default_rng(2)
    U = rng.normal(size=(7, 6, 5, 3)).astype(dtype)
    Ho, Wo = (6 + 2 * p - k) // s + 1, (5 + 2 * p - k) // s + 1
    dZ = rng.normal(size=(7, Ho, Wo, 4)).astype(dtype)
    ref_K, ref_b = np.empty((k * k * 3, 4), dtype), np.empty(4, dtype)
    _cnn_reference.conv_weight_grad(U, dZ, k, s, p, ref_K, ref_b, 1)
    # against the from-scratch conv: <conv(U; K), dZ> is linear in K with gradient grad_K
    Kr = rng.normal(size=(k * k * 3, 4))
    assert np.sum(_conv(U, Kr, 0, k, s, p) * dZ) == pytest.approx(np.sum(Kr * ref_K), rel=1e-4)
    for chunk in (1, 3, 100):
        gK, gb = np.empty_like(ref_K), np.empty_like(ref_b)
        _cnn_blocks.conv_weight_grad(U, dZ, k, s, p, gK, gb, chunk)
        _close(gK, ref_K, dtype)
        _close(gb, ref_b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(ACTIVATION_CODES))
def test_row_kernels_match_reference(dtype, name):
    rng = np.random.default_rng(3)
    N, n, kind = 9, 13, ACTIVATION_CODES[name]
    Z, R, back, g = (rng.normal(size=(N, n)).astype(dtype) for _ in range(4))
    A = np.empty_like(Z)
    CNN_BACKENDS["reference"].activation(Z, kind, A)
    step = rng.uniform(0.1, 1, N)
    rows = np.array([0, 3, 4, 8], dtype=np.intp)
    res = {}
    for key, mod in (("c", _cnn_blocks), ("r", _cnn_reference)):
        grad, gsq = np.empty_like(Z), np.empty(N)
        mod.conv_z_gradient(R, A, back, kind, 0.7, 1.3, grad, gsq)
        Zc, Rc, Ac, rsq = *(np.zeros((N, n), dtype) for _ in range(3)), np.zeros(N)
        mod.z_trial_rows(Z, R, g, step, rows, kind, Zc, Rc, Ac, rsq)
        Yc, rn = back.copy(), np.zeros(N)
        mod.residual_rows(Z, rows, Yc, rn)
        ss = np.empty(N)
        mod.row_sq_norms(R, ss)
        res[key] = (grad, gsq, Zc, Rc, Ac, rsq, Yc, rn, ss)
    for a, b in zip(res["c"], res["r"]):
        _close(a, b, dtype)
    assert np.allclose(res["c"][2][:4], Z[rows] - step[rows, None].astype(dtype) * g[rows],
                       rtol=RTOL[dtype] * 10)


def test_row_kernels_reject_bad_rows():
    Z = np.zeros((3, 2))
    with pytest.raises(ValueError, match="rows"):
        _cnn_blocks.residual_rows(Z, np.array([5], np.intp), np.zeros((3, 2)), np.zeros(3))


# ---------------------------------------------------------------------------
# finite-difference gradients against the from-scratch J and loss
CONFIGS = {
    # 96 samples: with fewer than the 64 inputs of its dense layer, that layer's ridge
    # fits exactly, every residual stays at rounding level and nothing below it moves
    "conv-conv-avg": dict(channels=(3, 4), pools=(2, 1), pool="avg", N=96),
    "conv-conv-max": dict(channels=(3, 2), pools=(2, 2), pool="max"),
    "conv-dense-stride2": dict(channels=(3,), pools=(2,), pool="avg", k=3, s=2, p=1, H=8),
}


def _moved_state(cfg, name="tanh", s=0.3, sweeps=2, **size):
    arch, X, y, W, b = make_cnn(**{**cfg, **size})
    st = CNNLySepState(CNN_BACKENDS["compiled"], arch, X, y, W, b, name, s)
    for _ in range(sweeps):                    # move off the forward point: R != 0
        st.sweep()
    assert all(r > 0 for r in st.r)
    return st


@pytest.mark.parametrize("cfg", list(CONFIGS))
@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_conv_z_block_gradient(cfg, name):
    st = _moved_state(CONFIGS[cfg], name)
    rng = np.random.default_rng(4)
    for j in range(st.Lc):
        grad, gsq = st.conv_z_gradient(j)
        grad = grad.reshape(st.Z[j].shape).copy()
        assert np.allclose(gsq, np.sum(grad.reshape(st.N, -1) ** 2, axis=1))
        f = lambda: J_scratch(st.arch, st.X, st.y, st.W, st.b, st.Z, name, st.s)  # noqa: E731
        for idx in sample_indices(st.Z[j].shape, 6, rng):
            fd = st.N * central_difference(f, st.Z[j], idx)
            assert fd == pytest.approx(grad[idx], rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("cfg", list(CONFIGS))
def test_kernel_block_is_the_minimiser_of_J(cfg):
    """The closed-form kernel update (chunked Gram + solve) against scipy minimising the
    from-scratch J over that kernel alone; and dJ/dK = 0 there."""
    # small, for scipy, with more samples than inputs of the dense layer (2, 16, 12),
    # else nothing moves (see CONFIGS)
    size = {"conv-conv-max": dict(N=8, H=4), "conv-conv-avg": dict(N=24, H=4),
            "conv-dense-stride2": dict(N=16, H=8)}
    st = _moved_state(CONFIGS[cfg], "tanh", **size[cfg])
    for i in range(st.Lc):
        K0 = st.W[i].copy()

        def J_of(kvec):
            W = list(st.W)
            W[i] = kvec.reshape(K0.shape)
            return J_scratch(st.arch, st.X, st.y, W, st.b, st.Z, "tanh", st.s)
        best = scipy.optimize.minimize(J_of, K0.ravel(), method="BFGS",
                                       options={"gtol": 1e-10, "maxiter": 2000})
        st._kernel_block(i)
        assert J_of(st.W[i].ravel()) <= best.fun + 1e-10
        assert np.allclose(st.W[i].ravel(), best.x, rtol=1e-4, atol=1e-5)
        Kv = st.W[i].ravel().copy()
        for idx in sample_indices(Kv.shape, 6, np.random.default_rng(i)):
            assert abs(central_difference(lambda: J_of(Kv), Kv, idx)) < 1e-6


@pytest.mark.parametrize("cfg", list(CONFIGS))
@pytest.mark.parametrize("name", ["tanh", "relu"])
def test_gd_cnn_backprop_gradient(cfg, name):
    arch, X, y, W, b = make_cnn(**CONFIGS[cfg], seed=5)
    st = CNNGDState(CNN_BACKENDS["compiled"], arch, X, y, W, b, name, 1.0)
    st.forward()
    gW, gb = (list(g) for g in st.gradients())
    rng = np.random.default_rng(6)
    for params, grads in ((W, gW), (b, gb)):
        for p, g in zip(params, grads):
            for idx in sample_indices(p.shape, 4, rng):
                fd = central_difference(lambda: loss_scratch(arch, X, y, W, b, name), p, idx)
                assert fd == pytest.approx(g[idx], rel=1e-5, abs=1e-8)


def test_gd_backends_agree():
    arch, X, y, W, b = make_cnn(**CONFIGS["conv-conv-max"], seed=7)
    out = []
    for backend in ("compiled", "reference"):
        Wc, bc = [w.copy() for w in W], [v.copy() for v in b]
        st = CNNGDState(CNN_BACKENDS[backend], arch, X, y, Wc, bc, "tanh", 0.5)
        for _ in range(3):
            st.forward()
            st.update()
        out.append(Wc + bc)
    for a, c in zip(*out):
        assert np.allclose(a, c, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------
# guarantees at every sweep
GUARANTEE_CASES = [
    (dict(channels=(3,), pools=(2,), pool="avg"), "tanh", 0.01),
    (dict(channels=(3,), pools=(2,), pool="max"), "relu", 1.0),
    (dict(channels=(3, 4), pools=(2, 1), pool="avg"), "tanh", 0.1),
    (dict(channels=(2, 3), pools=(2, 2), pool="max", hidden=(6, 4)), "sigmoid", 1.0),
    (dict(channels=(3, 2), pools=(1, 2), pool="avg", k=3, s=2, p=1, H=14), "softplus", 0.05),
]


@pytest.mark.parametrize("case", range(len(GUARANTEE_CASES)))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("z_step", ["per_sample", "shared"])
def test_bound_and_monotone_J_at_every_sweep(case, dtype, z_step):
    cfg, name, s = GUARANTEE_CASES[case]
    arch, X, y, W, b = make_cnn(**cfg, N=30, dtype=dtype, seed=case)
    st = CNNLySepState(CNN_BACKENDS["compiled"], arch, X, y, W, b, name, s,
                       per_sample=z_step == "per_sample")
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    C = math.e * max(1.0, 1.0 / s)
    loss0 = loss_scratch(arch, X, y, st.W, st.b, name)
    assert st.J == pytest.approx(loss0, rel=rtol)          # R = 0 after the forward pass
    previous = st.J
    for _ in range(8):
        st.sweep()
        assert st.J <= previous                            # exact: safeguarded blocks
        J = J_scratch(arch, X, y, st.W, st.b, st.Z, name, s)
        assert st.J == pytest.approx(J, rel=rtol, abs=1e-12)
        assert loss_scratch(arch, X, y, st.W, st.b, name) <= C * J * (1 + rtol)   # Theorem B
        previous = st.J
    assert st.J < 0.9 * loss0


@pytest.mark.parametrize("fallback", ["min_norm", "closest"])
@pytest.mark.parametrize("pool", ["avg", "max"])
def test_reference_backend_follows_the_compiled_sweep(pool, fallback):
    cfg = dict(channels=(3, 2), pools=(2, 1), pool=pool)
    Js = []
    for backend in ("compiled", "reference"):
        arch, X, y, W, b = make_cnn(**cfg, seed=8)
        st = CNNLySepState(CNN_BACKENDS[backend], arch, X, y, W, b, "tanh", 0.1,
                           ridge_fallback=fallback)
        Js.append([st.sweep() and st.J for _ in range(4)])
    assert np.allclose(Js[0], Js[1], rtol=1e-8)


@pytest.mark.parametrize("case", range(len(GUARANTEE_CASES)))
def test_closest_fallback_keeps_the_guarantees(case):
    """ridge_fallback="closest": kernel and dense blocks solve for the change from the
    stored residual; J stays monotone and bounds the true loss at every sweep, and
    the weights it ends with agree with min_norm's when no block fell back."""
    cfg, name, s = GUARANTEE_CASES[case]
    C = math.e * max(1.0, 1.0 / s)
    states = {}
    for fallback in ("min_norm", "closest"):
        arch, X, y, W, b = make_cnn(**cfg, N=30, seed=case)
        st = CNNLySepState(CNN_BACKENDS["compiled"], arch, X, y, W, b, name, s,
                           ridge_fallback=fallback)
        loss0 = loss_scratch(arch, X, y, st.W, st.b, name)
        previous, fallbacks = st.J, 0
        for _ in range(8):
            fallbacks += st.sweep()["fallbacks"]
            assert st.J <= previous
            J = J_scratch(arch, X, y, st.W, st.b, st.Z, name, s)
            assert st.J == pytest.approx(J, rel=1e-10, abs=1e-12)
            assert loss_scratch(arch, X, y, st.W, st.b, name) <= C * J * (1 + 1e-10)
            previous = st.J
        assert st.J < 0.9 * loss0
        states[fallback] = (st, fallbacks)
    (a, fa), (c, fc) = states["min_norm"], states["closest"]
    if fa == fc == 0:                       # the same minimisers, solved another way
        assert c.J == pytest.approx(a.J, rel=1e-6)


# ---------------------------------------------------------------------------
# the estimator
@pytest.mark.parametrize("solver", ["lysep", "gd"])
@pytest.mark.parametrize("C", [None, 2])
def test_estimator_contract(solver, C):
    X, y = image_data(C=C)
    clf = CNNClassifier(conv_channels=(3, 2), pool_size=(2, 1), hidden_layer_sizes=(6,),
                        solver=solver, batch_size=25, refresh_every=3, max_iter=9,
                        eval_every=2, learning_rate_init=0.5, random_state=0)
    clf.fit(X, y)
    assert clf.n_iter_ == 9
    assert clf.curve_iterations_ == [0, 2, 4, 6, 8, 9]
    n_pts = len(clf.curve_iterations_)
    assert len(clf.loss_curve_) == len(clf.accuracy_curve_) == len(clf.batch_loss_curve_) == n_pts
    P = clf.predict_proba(X)
    assert P.shape == (60, 3) and np.allclose(P.sum(axis=1), 1)
    assert np.allclose(np.log(P), clf.predict_log_proba(X))
    assert set(clf.predict(X)) <= set(clf.classes_)
    assert 0 <= clf.score(X, y) <= 1
    assert clf.loss_ == clf.loss_curve_[-1] < clf.loss_curve_[0]
    c_in = 1 if C is None else C
    assert [k.shape for k in clf.conv_kernels_] == [(3, c_in, 3, 3), (2, 3, 3, 3)]
    if solver == "lysep":
        J = np.array(clf.surrogate_curve_)
        assert np.all(np.array(clf.batch_loss_curve_) <= clf.bound_constant_ * J)
    else:
        assert clf.surrogate_curve_ is None and clf.bound_constant_ is None


def test_estimator_dtype_and_same_start():
    X, y = image_data()
    kw = dict(conv_channels=(2,), hidden_layer_sizes=(4,), max_iter=2, random_state=3)
    c64 = CNNClassifier(**kw).fit(X, y)
    c32 = CNNClassifier(**kw, dtype=np.float32).fit(X, y)
    assert c32.coefs_[0].dtype == np.float32 and c64.coefs_[0].dtype == np.float64
    assert c32.loss_curve_[0] == pytest.approx(c64.loss_curve_[0], rel=1e-5)
    assert c32.predict_proba(X).dtype == np.float32


def test_init_is_pytorch_default():
    X, y = image_data(n=30)
    clf = CNNClassifier(conv_channels=(4,), hidden_layer_sizes=(5,), max_iter=1,
                        solver="gd", learning_rate_init=1e-12, random_state=0).fit(X, y)
    # fan_in = C_in k^2 = 9 for the conv kernel, 4*4*4 = 64 for the first dense layer
    assert np.abs(clf.coefs_[0]).max() <= 1 / 3 and np.abs(clf.coefs_[0]).max() > 0.25
    assert np.abs(clf.coefs_[1]).max() <= 1 / 8 and np.abs(clf.coefs_[1]).max() > 0.1


# the estimator contract FNNClassifier has: warm start, callback, stopping rules,
# progress report, flat rows for pipelines, persistence
CONTRACT = dict(conv_channels=(3, 2), pool_size=(2, 1), hidden_layer_sizes=(6,), batch_size=25,
                refresh_every=3, eval_every=2, learning_rate_init=0.5, random_state=1)


def _same_parameters(a, b):
    return all(np.array_equal(p, q) for p, q in zip(a.coefs_ + a.intercepts_,
                                                     b.coefs_ + b.intercepts_))


@pytest.mark.parametrize("solver,batch_size", [("lysep", 25), ("gd", 25), ("lysep", 1000)])
def test_warm_start_continues_exactly(solver, batch_size):
    """fit(max_iter=4) then fit(max_iter=7) with warm_start equals fit(max_iter=11): the
    first fit ends inside a batch (refresh_every=3), so the batch stream, the batch and
    its auxiliary variables and step sizes must all be continued."""
    X, y = image_data(n=90, C=2)
    kw = dict(CONTRACT, solver=solver, batch_size=batch_size, n_iter_no_change=50)
    one = CNNClassifier(max_iter=11, **kw).fit(X, y)
    two = CNNClassifier(max_iter=4, warm_start=True, **kw).fit(X, y)
    assert not _same_parameters(one, two)
    two.set_params(max_iter=7).fit(X, y)
    assert two.n_iter_ == 11 and _same_parameters(one, two)
    assert two.curve_iterations_ == one.curve_iterations_ == [0, 2, 4, 6, 8, 10, 11]
    assert two.loss_curve_ == one.loss_curve_ and two.batch_loss_curve_ == one.batch_loss_curve_
    cold = CNNClassifier(max_iter=4, **kw).fit(X, y)
    cold.set_params(max_iter=7).fit(X, y)               # without warm_start: starts over
    assert cold.n_iter_ == 7 and not _same_parameters(one, cold)


def test_callback_sees_every_iteration_and_can_stop():
    X, y = image_data(n=90, C=2)
    seen = []

    def callback(record):
        seen.append(record)
        return record["iteration"] == 5

    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)       # a requested stop
        clf = CNNClassifier(max_iter=50, callback=callback, **CONTRACT).fit(X, y)
    assert [r["iteration"] for r in seen] == [1, 2, 3, 4, 5] and clf.n_iter_ == 5
    assert clf.curve_iterations_ == [0, 2, 4, 5]             # the curves end at the model
    for r in seen:
        assert r["loss"] <= clf.bound_constant_ * r["surrogate"]        # Theorem B, batch-wise
        assert r["eta_output"] > 0 and r["seconds_z"] > 0 and r["time"] > 0
        evaluated = r["iteration"] in clf.curve_iterations_[:-1]
        assert (r["train_loss"] is not None) == evaluated and r["validation_score"] is None
    assert seen[3]["train_loss"] == clf.loss_curve_[2]
    assert seen[3]["train_accuracy"] == clf.accuracy_curve_[2]


def test_convergence_warning_at_max_iter():
    X, y = image_data()
    with pytest.warns(ConvergenceWarning, match=r"lysep: maximum iterations \(3\) reached"):
        warnings.simplefilter("always", ConvergenceWarning)
        CNNClassifier(max_iter=3, **CONTRACT).fit(X, y)


def test_tol_stops_after_n_iter_no_change_evaluations():
    """The training loss is checked at every evaluation (eval_every=2): a step size
    too small to move it by tol stops training after 3 evaluations, without warning."""
    X, y = image_data()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = CNNClassifier(**{**CONTRACT, "learning_rate_init": 1e-9}, solver="gd",
                            tol=1e-3, n_iter_no_change=3, max_iter=100).fit(X, y)
    assert clf.n_iter_ == 6 and clf.curve_iterations_ == [0, 2, 4, 6]
    going = CNNClassifier(**CONTRACT, solver="gd", tol=1e-3, n_iter_no_change=3,
                          max_iter=30).fit(X, y)      # a useful step keeps going
    assert going.n_iter_ > 6


def test_stalled_line_searches_stop_lysep(monkeypatch):
    """No sweep lowers J for n_iter_no_change sweeps: stop with a NumericalWarning."""
    from lysep import NumericalWarning
    monkeypatch.setattr(CNNLySepState, "sweep", lambda state: {})    # J never moves
    X, y = image_data()
    with pytest.warns(NumericalWarning, match="no block decreased J in 4 consecutive sweeps"):
        clf = CNNClassifier(**CONTRACT, n_iter_no_change=4, max_iter=50).fit(X, y)
    assert clf.n_iter_ == 4


def test_early_stopping_restores_the_best_validation_weights():
    X, y = image_data(n=90, C=2)
    kw = dict(CONTRACT, early_stopping=True, validation_fraction=0.3, n_iter_no_change=2)
    clf = CNNClassifier(max_iter=200, **kw).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) == len(clf.curve_iterations_) - 1 and clf.n_iter_ < 200
    assert clf.best_validation_score_ == max(scores)
    best = int(np.argmax(scores))                   # first best (strict improvement)
    assert len(scores) - 1 - best == 2              # stopped 2 evaluations later
    # the returned model is the one of the best evaluation: a run that ends there
    at_best = CNNClassifier(max_iter=clf.curve_iterations_[best + 1], **kw).fit(X, y)
    assert _same_parameters(clf, at_best)
    assert not _same_parameters(clf, CNNClassifier(max_iter=clf.n_iter_,
                                                   **{**kw, "early_stopping": False}).fit(X, y))


@pytest.mark.parametrize("tqdm", [True, False])
def test_verbose_reports_progress(capsys, monkeypatch, tqdm):
    import lysep._training
    if tqdm:
        pytest.importorskip("tqdm")
    else:                                           # as without the progress extra
        monkeypatch.setattr(lysep._training, "progress_bar", lambda total, solver: None)
    X, y = image_data()
    CNNClassifier(max_iter=3, verbose=True, **CONTRACT).fit(X, y)
    out = capsys.readouterr()
    if tqdm:
        assert "3/3" in out.err and "J=" in out.err and "acc=" in out.err
    else:
        lines = out.out.strip().splitlines()
        assert len(lines) == 3 and lines[2].startswith("Iteration 3, loss = ")
        assert ", J = " in lines[2] and "accuracy = " in lines[2]


def test_flat_rows_with_image_shape_train_the_image_model():
    X, y = image_data(n=60, C=2)
    flat = X.reshape(60, -1)                        # (C, H, W) order, as NumPy flattens
    a = CNNClassifier(max_iter=4, image_shape=(2, 8, 8), **CONTRACT).fit(flat, y)
    b = CNNClassifier(max_iter=4, **CONTRACT).fit(X, y)
    assert _same_parameters(a, b) and a.n_features_in_ == b.n_features_in_ == 128
    np.testing.assert_array_equal(a.predict_proba(flat), b.predict_proba(X))
    np.testing.assert_array_equal(b.predict_proba(flat), b.predict_proba(X))
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    with pytest.raises(ValueError, match=r"set image_shape=\(C, H, W\)"):
        CNNClassifier(max_iter=1, **CONTRACT).fit(flat, y)


def test_cnn_save_load_keeps_image_shape_and_the_new_parameters(tmp_path):
    import lysep
    X, y = image_data(n=60, C=2)
    flat = X.reshape(60, -1)
    clf = CNNClassifier(max_iter=6, image_shape=(2, 8, 8), early_stopping=True, tol=1e-4,
                        n_iter_no_change=20, warm_start=True, callback=lambda r: False,
                        **CONTRACT).fit(flat, y)
    again = lysep.load(clf.save(tmp_path / "cnn.npz"))
    params = again.get_params()
    assert params["image_shape"] == (2, 8, 8) and params["early_stopping"] is True
    assert params["tol"] == 1e-4 and params["callback"] is None     # code is never stored
    np.testing.assert_array_equal(again.predict_proba(flat), clf.predict_proba(flat))
    assert again.validation_scores_ == clf.validation_scores_
    assert again.best_validation_score_ == clf.best_validation_score_
    again.set_params(max_iter=2).fit(flat, y)             # warm start from a loaded file
    assert again.n_iter_ == clf.n_iter_ + 2


# ---------------------------------------------------------------------------
# real data: LySep-CNN against GD-CNN (MATH.md §7) on a Fashion-MNIST subset
@pytest.mark.skipif(not os.path.isdir(FMNIST), reason="Fashion-MNIST not installed")
def test_fashion_mnist_lysep_beats_gd():
    """Deepest configuration tested: 3 conv layers of 8 channels (pools 2, 2, 1: 7x7x8
    features), one hidden layer of 32; 2,000 training images, batches of 500 refreshed
    every 5 iterations, 30 iterations.  GD gets the best of lr in {0.3, 1.0, 3.0}."""
    from lysep.datasets import load_fashion_mnist
    Xtr, ytr, _, _ = load_fashion_mnist()
    idx = np.random.default_rng(0).choice(len(Xtr), 2000, replace=False)
    X, y = Xtr[idx], ytr[idx]
    cfg = dict(conv_channels=(8, 8, 8), pool_size=(2, 2, 1), hidden_layer_sizes=(32,),
               batch_size=500, refresh_every=5, max_iter=30, random_state=0,
               dtype=np.float32)
    lysep = CNNClassifier(solver="lysep", penalty_scale=0.01, **cfg).fit(X, y)
    gd = min(CNNClassifier(solver="gd", learning_rate_init=lr, **cfg).fit(X, y).loss_
             for lr in (0.3, 1.0, 3.0))
    assert lysep.loss_ < gd


def test_cnn_save_load_gives_identical_predictions(tmp_path):
    import lysep
    rng = np.random.default_rng(0)
    X = rng.random((60, 1, 8, 8))
    y = (X.mean(axis=(1, 2, 3)) > 0.5).astype(int)
    clf = CNNClassifier(conv_channels=(3,), pool_size=2, hidden_layer_sizes=(5,),
                        batch_size=30, refresh_every=2, max_iter=4, random_state=0).fit(X, y)
    again = lysep.load(clf.save(tmp_path / "cnn.npz"))
    assert isinstance(again, CNNClassifier)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.curve_iterations_ == clf.curve_iterations_
