"""Property-based tests (hypothesis): random shapes, dtypes and values fed to every
kernel, compared with the NumPy reference or checked against the block's invariants."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lysep import _fnn_blocks, _reference  # noqa: E402
from lysep._activation import activation  # noqa: E402
from lysep._softmax import softmax_ce  # noqa: E402
from conftest import next_layer  # noqa: E402

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
TOL = {np.float64: 1e-11, np.float32: 5e-5}


@st.composite
def problems(draw):
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    N = draw(st.integers(1, 25))
    n_in = draw(st.integers(1, 7))
    n_out = draw(st.integers(1, 7))
    scale = draw(st.sampled_from([1e-3, 1.0, 30.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    f = lambda *s: (rng.normal(size=s) * scale).astype(dtype)
    return dict(dtype=dtype, N=N, n_in=n_in, n_out=n_out, A=f(N, n_in), Z=f(N, n_out),
                W=f(n_in, n_out), b=f(n_out), y=rng.integers(0, n_out, N), rng=rng)


def close(a, b, dtype):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * max(1, np.abs(b).max()))


@SETTINGS
@given(problems(), st.integers(0, 3))
def test_activation(p, kind):
    A1, D1, A2, D2 = (np.empty_like(p["Z"]) for _ in range(4))
    activation(p["Z"], kind, A1, D1)
    _reference.activation(p["Z"], kind, A2, D2)
    close(A1, A2, p["dtype"])
    close(D1, D2, p["dtype"])


@SETTINGS
@given(problems())
def test_softmax_ce(p):
    P1, P2 = np.empty_like(p["Z"]), np.empty_like(p["Z"])
    l1, c1 = softmax_ce(p["Z"], p["y"], P1)
    l2, c2 = _reference.softmax_ce(p["Z"], p["y"], P2)
    close(l1, l2, p["dtype"])
    close(P1, P2, p["dtype"])
    assert np.isfinite(l1) and l1 >= 0


@SETTINGS
@given(problems())
def test_affine_residual_bias_backprop(p):
    d, A, W, b, Z = p["dtype"], p["A"], p["W"], p["b"], p["Z"]
    outs = []
    for k in (_fnn_blocks, _reference):
        Zo, R, R2, b2 = np.empty_like(Z), np.empty_like(Z), np.empty_like(Z), np.empty_like(b)
        gW, gb, dp = np.empty_like(W), np.empty_like(b), np.empty_like(A)
        k.affine(A, W, b, Zo)
        s = k.residual(Z, A, W, b, R)
        s2 = k.bias_update(R, b, R2, b2)
        k.backprop_layer(Z, A, W, gW, gb, A, dp)
        outs.append((Zo, s, R, s2, R2, b2, gW, gb, dp))
    for x, y in zip(*outs):
        close(x, y, d)


@SETTINGS
@given(problems(), st.sampled_from([0.0, 1e-3, 1.0]))
def test_ridge_update(p, lam):
    d, A, Z, b = p["dtype"], p["A"], p["Z"], p["b"]
    n_in = A.shape[1]
    eps = np.finfo(d).eps
    res = []
    for k in (_fnn_blocks, _reference):
        W, R = np.empty((n_in, Z.shape[1]), d), np.empty_like(Z)
        r, w, status = k.ridge_update(A, Z, b, lam, 1e4 * eps, W, R, np.empty((n_in, n_in), d),
                                      np.empty((n_in, n_in), d))
        assert np.isfinite(r) and np.isfinite(w) and status in (0, 1)
        res.append((r + lam * w, status))
    # the solutions may differ along (numerically) null directions; the objective may not
    f1, f2 = res[0][0], res[1][0]
    assert abs(f1 - f2) <= 1e3 * eps * max(1.0, abs(f2), float(np.sum((Z - b) ** 2)))


@SETTINGS
@given(problems(), st.booleans(), st.integers(0, 3))
def test_z_hidden_step_invariants(p, per_sample, kind):
    d, N, n = p["dtype"], p["N"], p["n_in"]
    rng = p["rng"]
    Z = p["A"]
    A = np.empty_like(Z)
    activation(Z, kind, A)
    R = (rng.normal(size=Z.shape) * 0.5).astype(d)
    Rn = (rng.normal(size=(N, p["n_out"])) * 0.5).astype(d)
    outs = [np.empty_like(Z) for _ in range(3)] + [np.empty_like(Rn)]
    work = [np.empty_like(Z), np.empty_like(Z), np.empty_like(Rn), np.empty_like(Rn)]
    eta = np.ones(N if per_sample else 1)
    r, rn, failed, trials = _fnn_blocks.z_hidden_step(Z, A, R, Rn, p["W"],
                                                      *next_layer(A, Rn, p["W"]), kind, 0.7,
                                                      0.3, eta, 4.0, 30, 0.5, 1e-4, 2.0, 1e4,
                                                      *outs, *work)
    Z_new, A_new, R_new, Rn_new = outs
    f0 = 0.7 * np.sum(R.astype(float) ** 2) + 0.3 * np.sum(Rn.astype(float) ** 2)
    assert 0.7 * r + 0.3 * rn <= f0 * (1 + 1e-6)                 # the block never rises
    assert 0 <= failed <= N and 1 <= trials <= 31
    A_chk = np.empty_like(Z_new)
    activation(Z_new, kind, A_chk)
    np.testing.assert_array_equal(A_new, A_chk)                 # A_out = sigma(Z_out)
    assert np.isfinite(Z_new).all() and np.isfinite(eta).all()


@st.composite
def layers(draw):
    """Layers from one row to several cache blocks, narrow and wider than the narrow
    kernels take (32 double / 64 float columns on AVX-512), every activation."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    N = draw(st.integers(1, 400))
    n_in = draw(st.integers(1, 40))
    n_out = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(dtype)
    return dict(dtype=dtype, A=np.tanh(f(N, n_in)), W=(f(n_in, n_out) / np.sqrt(n_in)).astype(dtype),
                b=f(n_out), delta=f(N, n_out), kind=draw(st.integers(0, 3)))


@SETTINGS
@given(layers())
def test_layer_forward_and_backprop_from_values(p):
    d, A, W, b, delta, kind = (p[k] for k in ("dtype", "A", "W", "b", "delta", "kind"))
    outs = []
    for k in (_fnn_blocks, _reference):
        Z, Y = np.empty((A.shape[0], W.shape[1]), d), np.empty((A.shape[0], W.shape[1]), d)
        k.layer_forward(A, W, b, kind, Y, Z)
        gW, gb, dp = np.empty_like(W), np.empty_like(b), np.empty_like(A)
        k.backprop_layer(delta, A, W, gW, gb, None, dp, kind)
        outs.append((Z, Y, gW, gb, dp))
    for x, y in zip(*outs):
        close(x, y, d)
