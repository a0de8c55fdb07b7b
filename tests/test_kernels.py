"""Every compiled kernel against its NumPy reference, both dtypes (STYLE.md rule 5)."""
import re

import numpy as np
import pytest

from lysep import _fnn_blocks, _reference
from lysep._activation import activation
from lysep._activations import ACTIVATION_CODES
from lysep._softmax import softmax_ce

from conftest import RTOL, next_layer

rng = np.random.default_rng(42)


def close(a, b, dtype, scale=None):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(np.abs(b).max(), 1.0) if scale is None else scale
    np.testing.assert_allclose(a, b, rtol=0, atol=RTOL[dtype] * scale * 10)


@pytest.mark.parametrize("name", list(ACTIVATION_CODES))
def test_activation_matches_reference(name, dtype):
    Z = (rng.normal(size=(37, 11)) * 4).astype(dtype)
    Z[0, :4] = [0.0, 30.0, -30.0, 0.6249]          # saturation and the tanh branch point
    A, D = np.empty_like(Z), np.empty_like(Z)
    activation(Z, ACTIVATION_CODES[name], A, D)
    A_ref, D_ref = np.empty_like(Z), np.empty_like(Z)
    _reference.activation(Z, ACTIVATION_CODES[name], A_ref, D_ref)
    close(A, A_ref, dtype)
    close(D, D_ref, dtype)
    assert A.dtype == dtype


def test_tanh_is_accurate_to_a_few_ulp():
    Z = np.concatenate([np.linspace(-20, 20, 200001), np.geomspace(1e-300, 1, 1000)])
    Z = Z.reshape(-1, 1).copy()
    A = np.empty_like(Z)
    activation(Z, ACTIVATION_CODES["tanh"], A)
    exact = np.tanh(Z)
    ulp = np.abs(A - exact) / np.spacing(np.maximum(np.abs(exact), 1e-300))
    assert ulp.max() <= 4


def test_sigmoid_is_accurate_to_a_few_ulp():
    from scipy.special import expit
    Z = np.concatenate([np.linspace(-40, 40, 400001), -np.geomspace(1e-300, 700, 2000),
                        np.geomspace(1e-300, 700, 2000)])
    Z = Z.reshape(-1, 1).copy()
    A = np.empty_like(Z)
    activation(Z, ACTIVATION_CODES["sigmoid"], A)
    exact = expit(Z)
    ulp = np.abs(A - exact) / np.spacing(np.maximum(np.abs(exact), 1e-300))
    assert ulp.max() <= 6


def test_softplus_is_accurate_to_a_few_ulp():
    from scipy.special import expit
    Z = np.concatenate([np.linspace(-40, 40, 400001), -np.geomspace(1e-300, 700, 2000),
                        np.geomspace(1e-300, 700, 2000)])
    Z = Z.reshape(-1, 1).copy()
    A, D = np.empty_like(Z), np.empty_like(Z)
    activation(Z, ACTIVATION_CODES["softplus"], A, D)
    exact = np.logaddexp(0.0, Z)
    ulp = np.abs(A - exact) / np.spacing(np.maximum(np.abs(exact), 1e-300))
    assert ulp.max() <= 6
    exact_d = expit(Z)
    ulp_d = np.abs(D - exact_d) / np.spacing(np.maximum(np.abs(exact_d), 1e-300))
    assert ulp_d.max() <= 6
    # Far below the range of exp the value underflows to (almost) zero, never to nan.
    Z = np.array([[-800.0, -1e300, 800.0, 1e300]])
    A, D = np.empty_like(Z), np.empty_like(Z)
    activation(Z, ACTIVATION_CODES["softplus"], A, D)
    assert np.all(np.abs(A[0, :2]) <= 1e-307) and np.all(D[0, :2] <= 1e-307)
    np.testing.assert_array_equal(A[0, 2:], Z[0, 2:])
    np.testing.assert_array_equal(D[0, 2:], [1.0, 1.0])


def test_softmax_ce_is_stable_and_matches_reference(dtype):
    G = (rng.normal(size=(50, 4)) * 3).astype(dtype)
    G[0] = [1e4, -1e4, 0, 5]                        # logits of magnitude 1e4
    y = rng.integers(0, 4, 50)
    P, P_ref = np.empty_like(G), np.empty_like(G)
    loss, hits = softmax_ce(G, y, P)
    loss_ref, hits_ref = _reference.softmax_ce(G, y, P_ref)
    assert np.isfinite(loss) and np.isfinite(P).all()
    assert hits == hits_ref == int((G.argmax(1) == y).sum())
    close(loss, loss_ref, dtype)
    close(P, P_ref, dtype)
    np.testing.assert_allclose(P.sum(axis=1), 0, atol=10 * RTOL[dtype])


@pytest.mark.parametrize("N, K", [(700, 3), (5, 1100), (1, 1)])
def test_softmax_ce_over_several_chunks_and_wide_rows(N, K, dtype):
    # the exponentials go through a buffer of 1024 (700 x 3: three chunks of rows;
    # 1100 classes: wider than the buffer, one row at a time)
    G = (rng.normal(size=(N, K)) * 5).astype(dtype)
    G[0, 0] = -800                                   # exp underflows after the shift
    y = rng.integers(0, K, N)
    P, P_ref = np.empty_like(G), np.empty_like(G)
    loss, hits = softmax_ce(G, y, P)
    loss_ref, hits_ref = _reference.softmax_ce(G, y, P_ref)
    assert hits == hits_ref
    close(loss, loss_ref, dtype, scale=abs(loss_ref))
    close(P, P_ref, dtype)


def test_softmax_ce_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="outside"):
        softmax_ce(np.zeros((2, 3)), np.array([0, 3]))


def _inputs(dtype, N=40, n=5, n2=4, K=3):
    f = lambda *s: rng.normal(size=s).astype(dtype)
    return dict(Z=f(N, n), R=f(N, n) * 0.3, Rn=f(N, n2) * 0.3, W=f(n, n2), Wk=f(n, K),
                b=f(n2), bk=f(K), y=rng.integers(0, K, N))


def test_affine_and_residual(dtype):
    d = _inputs(dtype)
    A = np.tanh(d["Z"])
    Z1, Z2 = np.empty((40, 4), dtype), np.empty((40, 4), dtype)
    _fnn_blocks.affine(A, d["W"], d["b"], Z1)
    _reference.affine(A, d["W"], d["b"], Z2)
    close(Z1, Z2, dtype)
    R1, R2 = np.empty_like(Z1), np.empty_like(Z1)
    s1 = _fnn_blocks.residual(d["Rn"], A, d["W"], d["b"], R1)
    s2 = _reference.residual(d["Rn"], A, d["W"], d["b"], R2)
    close(R1, R2, dtype)
    close(s1, s2, dtype)


def _run_z_last(backend, d, eta, dtype):
    N, n, K = d["Z"].shape[0], d["Z"].shape[1], d["Wk"].shape[1]
    A = np.tanh(d["Z"]).astype(dtype)
    outs = [np.zeros((N, n), dtype) for _ in range(3)]
    work = [np.zeros((N, n), dtype), np.zeros((N, n), dtype), np.zeros((N, K), dtype)]
    res = backend.z_last_step(d["Z"], A, d["R"], d["Wk"], d["bk"], d["y"], 0, 0.7, eta, 3.0,
                              30, 0.5, 1e-4, 2.0, 1e4, *outs, *work)
    return res, outs, eta


def _run_z_hidden(backend, d, eta, dtype):
    N, n, n2 = d["Z"].shape[0], d["Z"].shape[1], d["W"].shape[1]
    A = np.tanh(d["Z"]).astype(dtype)
    outs = [np.zeros((N, n), dtype) for _ in range(3)] + [np.zeros((N, n2), dtype)]
    work = [np.zeros((N, n), dtype), np.zeros((N, n), dtype),
            np.zeros((N, n2), dtype), np.zeros((N, n2), dtype)]
    res = backend.z_hidden_step(d["Z"], A, d["R"], d["Rn"], d["W"],
                                *next_layer(A, d["Rn"], d["W"], d["b"]), 0, 0.7, 0.4, eta,
                                3.0, 30, 0.5, 1e-4, 2.0, 1e4, *outs, *work)
    return res, outs, eta


@pytest.mark.parametrize("run", [_run_z_last, _run_z_hidden], ids=["last", "hidden"])
@pytest.mark.parametrize("per_sample", [True, False], ids=["per_sample", "shared"])
def test_z_steps_match_reference(run, per_sample, dtype):
    d = _inputs(dtype)
    n_eta = 40 if per_sample else 1
    res_c, outs_c, eta_c = run(_fnn_blocks, d, np.ones(n_eta), dtype)
    res_r, outs_r, eta_r = run(_reference, d, np.ones(n_eta), dtype)
    close(res_c[:2], res_r[:2], dtype)
    assert res_c[2:] == res_r[2:]                 # same failed rows and trial count
    for a, b in zip(outs_c, outs_r):
        close(a, b, dtype)
    np.testing.assert_array_equal(eta_c, eta_r)
    assert res_c[3] >= 1


def _row_objectives(which, d, Z, R):
    """The row objectives f_i of the two Z blocks, from scratch in float64."""
    A = np.tanh(Z)
    if which == "last":
        G = A @ d["Wk"] + d["bk"]
        g = G - G.max(axis=1, keepdims=True)
        ce = np.log(np.exp(g).sum(axis=1)) - g[np.arange(len(g)), d["y"]]
        return ce + 0.7 * np.sum(R ** 2, axis=1)
    Zb = d["Rn"] + np.tanh(d["Z"]) @ d["W"]
    return 0.7 * np.sum(R ** 2, axis=1) + 0.4 * np.sum((Zb - A @ d["W"]) ** 2, axis=1)


@pytest.mark.parametrize("which", ["last", "hidden"])
def test_z_step_decreases_every_row(which):
    """Per-sample search is exact block descent: no row objective rises, most fall."""
    d = _inputs(np.float64, N=200)
    run = _run_z_last if which == "last" else _run_z_hidden
    _, outs, _ = run(_fnn_blocks, d, np.ones(200), np.float64)
    Z_new, R_new = outs[0], outs[2]
    np.testing.assert_allclose(R_new - d["R"], Z_new - d["Z"], atol=1e-14)  # R moves with Z
    before = _row_objectives(which, d, d["Z"], d["R"])
    after = _row_objectives(which, d, Z_new, R_new)
    assert np.all(after <= before + 1e-12 * np.abs(before))
    assert np.sum(after < before - 1e-9) > 150


def test_ridge_matches_reference(dtype):
    d = _inputs(dtype, N=80)
    A = np.tanh(d["Z"]).astype(dtype)
    for lam in (0.0, 0.5):
        out = []
        for backend in (_fnn_blocks, _reference):
            W, R = np.zeros((5, 4), dtype), np.zeros((80, 4), dtype)
            res = backend.ridge_update(A, d["Rn"], d["b"], lam, 1e4 * np.finfo(dtype).eps, W, R,
                                       np.zeros((5, 5), dtype), np.zeros((5, 5), dtype))
            out.append((res, W, R))
        (rc, Wc, Rc), (rr, Wr, Rr) = out
        assert rc[2] == rr[2] == 0
        close(rc[:2], rr[:2], dtype)
        close(Wc, Wr, dtype, scale=np.abs(Wr).max() * 100)
        close(Rc, Rr, dtype)


def test_ridge_singular_gram_uses_minimum_norm_solution(dtype):
    """Duplicated columns and lam = 0: the Gram matrix is singular.  The fallback must
    not crash and must return the minimum-norm least-squares solution."""
    A0 = rng.normal(size=(50, 3))
    A = np.hstack([A0, A0[:, :2]]).astype(dtype)        # rank 3, 5 columns
    Z = rng.normal(size=(50, 2)).astype(dtype)
    b = np.zeros(2, dtype)
    for backend in (_fnn_blocks, _reference):
        W, R = np.zeros((5, 2), dtype), np.zeros((50, 2), dtype)
        r, w, status = backend.ridge_update(A, Z, b, 0.0, 1e4 * np.finfo(dtype).eps, W, R,
                                            np.zeros((5, 5), dtype), np.zeros((5, 5), dtype))
        assert status == 1
        expected = np.linalg.pinv(A.astype(np.float64)) @ Z.astype(np.float64)
        tol = 1e-8 if dtype == np.float64 else 2e-2
        np.testing.assert_allclose(W, expected, atol=tol * np.abs(expected).max())
        assert np.isfinite(r) and np.isfinite(w)


def _collinear_layer(dtype, N=300, n_in=12, rank=8, n_out=7, seed=3):
    """Inputs of numerical rank `rank` (the last columns are combinations of the first),
    targets, a bias, current weights and their residual."""
    g = np.random.default_rng(seed)
    A = g.normal(size=(N, n_in))
    A[:, rank:] = A[:, :n_in - rank] @ g.normal(size=(n_in - rank, n_in - rank))
    Z, b, W0 = g.normal(size=(N, n_out)), g.normal(size=n_out), g.normal(size=(n_in, n_out))
    A, Z, b, W0 = (a.astype(dtype) for a in (A, Z, b, W0))
    return A, Z, b, W0, Z - b - A @ W0


@pytest.mark.parametrize("stored", [True, False], ids=["R_now", "recomputed"])
def test_ridge_closest_fallback_is_the_least_squares_solution_nearest_w(stored, dtype):
    """lam = 0, singular Gram: the closest fallback is pinv(A)(Z - b) + (I - pinv(A) A) W0
    (brute force through the SVD), so it fits as well as the minimum-norm solution and
    keeps W0 in the null space; from the stored residual or recomputing it, in both
    backends, with or without the residual stored (low memory)."""
    A, Z, b, W0, R0 = _collinear_layer(dtype)
    A64 = A.astype(np.float64)
    # the kernels drop Gram eigenvalues below 12 eps max: singular values below sqrt of it
    P = np.linalg.pinv(A64, rcond=np.sqrt(12 * np.finfo(dtype).eps))
    expected = P @ (Z - b).astype(np.float64) + (np.eye(12) - P @ A64) @ W0.astype(np.float64)
    fit_min_norm = np.sum(((Z - b) - A64 @ (P @ (Z - b))) ** 2)
    tol = 1e-9 if dtype == np.float64 else 2e-2
    for backend in (_fnn_blocks, _reference):
        for R_out in (np.zeros(Z.shape, dtype), None):
            W = np.zeros(W0.shape, dtype)
            r, w, status = backend.ridge_update(
                A, Z, b, 0.0, 1e4 * np.finfo(dtype).eps, W, R_out, np.zeros((12, 12), dtype),
                np.zeros((12, 12), dtype), None, W0, R0 if stored else None)
            assert status == 1
            np.testing.assert_allclose(W, expected, atol=tol * np.abs(expected).max())
            assert r == pytest.approx(fit_min_norm, rel=1e-8 if dtype == np.float64 else 1e-3)
            assert w == pytest.approx(np.sum(W.astype(np.float64) ** 2), rel=1e-6)
            if R_out is not None:
                close(R_out, (Z - b) - A @ W, dtype, scale=np.abs(Z).max() * 10)


def test_ridge_closest_fallback_keeps_what_fits_through_small_directions(dtype):
    """Inputs with two singular values below the eigenvalue cut-off, and Z fitted
    exactly by weights with a large part along them (what a deep layer's nearly
    collinear inputs produce): the minimum-norm solution drops that part and its fit
    term jumps, the closest one keeps it and fits as well as the current weights;
    both backends agree."""
    g = np.random.default_rng(4)
    small, big = (1e-9, 1e6) if dtype == np.float64 else (1e-5, 1e3)
    U = np.linalg.qr(g.normal(size=(300, 12)))[0]
    V = np.linalg.qr(g.normal(size=(12, 12)))[0]
    sv = np.r_[np.linspace(20, 5, 10), small, small]
    A = (U * sv) @ V.T
    W0 = g.normal(size=(12, 7)) + big * V[:, 10:] @ g.normal(size=(2, 7))
    b = g.normal(size=7)
    A, W0, b = A.astype(dtype), W0.astype(dtype), b.astype(dtype)
    Z = b + A @ W0                                           # fitted: R0 is rounding
    R0 = Z - b - A @ W0
    fit0 = np.sum(R0.astype(np.float64) ** 2)
    scale = np.sum((Z - b).astype(np.float64) ** 2)
    eps = np.finfo(dtype).eps
    out = []
    for backend in (_fnn_blocks, _reference):
        fits, weights = [], []
        for extra in ((None, W0, R0), (None, W0, None), ()):
            W = np.zeros(W0.shape, dtype)
            r, _, status = backend.ridge_update(A, Z, b, 0.0, 1e4 * eps, W, None,
                                                np.zeros((12, 12), dtype),
                                                np.zeros((12, 12), dtype), *extra)
            assert status == 1
            fits.append(r)
            weights.append(W)
        closest, closest_recomputed, min_norm = fits
        out.append(weights[0])
        assert closest <= fit0 + 1e3 * eps ** 2 * scale
        assert closest_recomputed <= fit0 + 1e3 * eps ** 2 * scale
        assert min_norm > 1e3 * (fit0 + 1e3 * eps ** 2 * scale)     # what it fixes
    np.testing.assert_allclose(out[0], out[1], atol=1e3 * eps * np.abs(out[1]).max())


@pytest.mark.parametrize("stored", [True, False], ids=["R_now", "recomputed"])
def test_ridge_closest_mode_with_cholesky_is_the_same_minimiser(stored, dtype):
    """A well-conditioned Gram matrix takes Cholesky in both modes; solving for the
    change from W0 gives the direct solve's weights and residual to rounding."""
    d = _inputs(dtype, N=80)
    A = np.tanh(d["Z"]).astype(dtype)
    W0 = rng.normal(size=(5, 4)).astype(dtype)
    R0 = d["Rn"] - d["b"] - A @ W0
    outs = []
    for extra in ((), (None, W0, R0 if stored else None)):
        W, R = np.zeros((5, 4), dtype), np.zeros((80, 4), dtype)
        res = _fnn_blocks.ridge_update(A, d["Rn"], d["b"], 0.5, 1e4 * np.finfo(dtype).eps, W,
                                       R, np.zeros((5, 5), dtype), np.zeros((5, 5), dtype),
                                       *extra)
        assert res[2] == 0
        outs.append((res, W, R))
    (rd, Wd, Rd), (rc, Wc, Rc) = outs
    close(rc[:2], rd[:2], dtype, scale=100 * max(rd[:2]))
    close(Wc, Wd, dtype, scale=np.abs(Wd).max() * 100)
    close(Rc, Rd, dtype, scale=np.abs(Rd).max() * 100)


def test_ridge_closest_fallback_checks_its_arrays():
    A, Z, b, W0, R0 = _collinear_layer(np.float64)
    args = (A, Z, b, 0.0, 1e-12, np.zeros(W0.shape), None, np.zeros((12, 12)), np.zeros((12, 12)),
            None)
    with pytest.raises(ValueError, match="W_now"):
        _fnn_blocks.ridge_update(*args, W0[:5])
    with pytest.raises(ValueError, match="R_now"):
        _fnn_blocks.ridge_update(*args, W0, R0[:10])
    with pytest.raises(ValueError, match="give W_now"):
        _fnn_blocks.ridge_update(*args, None, R0)


def test_bias_update_matches_reference(dtype):
    d = _inputs(dtype)
    out = []
    for backend in (_fnn_blocks, _reference):
        R, b = np.zeros_like(d["R"]), np.zeros(5, dtype)
        s = backend.bias_update(d["R"], d["Z"][0].copy(), R, b)
        out.append((s, R, b))
    close(out[0][0], out[1][0], dtype)
    close(out[0][1], out[1][1], dtype)
    close(out[0][2], out[1][2], dtype)
    np.testing.assert_allclose(out[0][1].mean(axis=0), 0, atol=50 * RTOL[dtype])


def test_output_step_matches_reference(dtype):
    d = _inputs(dtype)
    A = np.tanh(d["Z"]).astype(dtype)
    out = []
    for backend in (_fnn_blocks, _reference):
        W, b = np.zeros((5, 3), dtype), np.zeros(3, dtype)
        work = [np.zeros((40, 3), dtype), np.zeros((40, 3), dtype), np.zeros((5, 3), dtype),
                np.zeros(3, dtype)]
        res = backend.output_step(A, d["y"], d["Wk"], d["bk"], 0.05, 1.0, 2.0, 30, 0.5, 1e-4,
                                  W, b, *work)
        out.append((res, W, b))
    assert out[0][0][0] == out[1][0][0] is True
    close(out[0][0][1:4], out[1][0][1:4], dtype)
    close(out[0][1], out[1][1], dtype)
    close(out[0][2], out[1][2], dtype)


def test_backprop_layer_matches_reference(dtype):
    d = _inputs(dtype)
    A = np.tanh(d["Z"]).astype(dtype)
    D = (1 - A * A).astype(dtype)
    out = []
    for backend in (_fnn_blocks, _reference):
        gW, gb, dp = np.zeros((5, 4), dtype), np.zeros(4, dtype), np.zeros((40, 5), dtype)
        backend.backprop_layer(d["Rn"], A, d["W"], gW, gb, D, dp)
        out.append((gW, gb, dp))
    for a, b in zip(*out):
        close(a, b, dtype)


def test_squared_norm(dtype):
    x = rng.normal(size=1000).astype(dtype)
    close(_fnn_blocks.squared_norm(x), np.sum(x.astype(np.float64) ** 2), dtype)


def test_kernels_accept_read_only_inputs():
    d = _inputs(np.float64)
    A = np.tanh(d["Z"])
    for arr in (A, d["W"], d["b"]):
        arr.setflags(write=False)
    Z = np.empty((40, 4))
    _fnn_blocks.affine(A, d["W"], d["b"], Z)
    np.testing.assert_allclose(Z, A @ d["W"] + d["b"], rtol=1e-12)


@pytest.mark.parametrize("bad", ["W", "b", "Z_out"])
def test_kernels_check_shapes(bad):
    A, W, b, Z = np.ones((4, 3)), np.ones((3, 2)), np.ones(2), np.empty((4, 2))
    args = dict(A=A, W=W, b=b, Z_out=Z)
    args[bad] = np.ones((5, 5)) if bad != "b" else np.ones(7)
    with pytest.raises(ValueError, match=bad):
        _fnn_blocks.affine(args["A"], args["W"], args["b"], args["Z_out"])


_Z_HIDDEN_ARRAYS = ["A", "R", "R_next", "W_next", "Z_next", "b_next", "Z_out", "A_out",
                    "R_out", "R_next_out", "work_D", "work_grad", "work_Zb", "work_Rc"]


@pytest.mark.parametrize("bad", _Z_HIDDEN_ARRAYS)
def test_z_hidden_step_names_a_misshapen_array(bad):
    """The C-level shape checks name the array, its shape and the shape it needs, for
    every array argument (a work array may be longer than a block, not narrower)."""
    d = _inputs(np.float64)
    N, n, n2 = 40, 5, 4
    A = np.tanh(d["Z"])
    Z_next, b_next = next_layer(A, d["Rn"], d["W"], d["b"])
    args = dict(A=A, R=d["R"], R_next=d["Rn"], W_next=d["W"], Z_next=Z_next, b_next=b_next,
                Z_out=np.zeros((N, n)), A_out=np.zeros((N, n)), R_out=np.zeros((N, n)),
                R_next_out=np.zeros((N, n2)), work_D=np.zeros((N, n)),
                work_grad=np.zeros((N, n)), work_Zb=np.zeros((N, n2)),
                work_Rc=np.zeros((N, n2)))
    good = args[bad]
    # one column too many (W_next: one row, as its columns set the next layer's width)
    shape = ((good.shape[0] + 1,) if good.ndim == 1 else
             (n + 1, n2) if bad == "W_next" else (good.shape[0], good.shape[1] + 1))
    a = dict(args, **{bad: np.zeros(shape)})
    got = re.escape(str(shape))
    with pytest.raises(ValueError, match=rf"^{bad} has shape {got}, (expected|needs at least) "):
        _fnn_blocks.z_hidden_step(d["Z"], a["A"], a["R"], a["R_next"], a["W_next"],
                                  a["Z_next"], a["b_next"], 0, 0.7, 0.4, np.ones(N), 3.0, 30,
                                  0.5, 1e-4, 2.0, 1e4, a["Z_out"], a["A_out"], a["R_out"],
                                  a["R_next_out"], a["work_D"], a["work_grad"], a["work_Zb"],
                                  a["work_Rc"])
