"""CNNClassifier reliability: bad inputs fail clearly, odd but valid inputs train the
same model, repeat and concurrent fits are bit-identical, interrupts and non-finite
values leave a usable model, and the conv kernels match their NumPy references on
random shapes (hypothesis)."""
import re

import numpy as np
import pytest
import scipy.sparse

from lysep import CNNClassifier, NotFittedError, NumericalWarning
from lysep import _cnn_blocks, _cnn_reference, _conv, _conv_reference
from lysep._activations import activation
from lysep._cnn_sweep import CNNLySepState

from conftest import assert_same_fit, fit_in_threads, image_data

SMALL = dict(conv_channels=(2,), hidden_layer_sizes=(3,), max_iter=1, random_state=0)


def small(**kw):
    return CNNClassifier(**{**SMALL, **kw})


def _data(n=20, C=None):
    return image_data(n=n, C=C, K=2)


def _with(X, index, value):
    X = X.copy()
    X[index] = value
    return X


# ---------------------------------------------------------------------------
# bad inputs: (what is wrong, (X, y) to fit, exception type, message fragment[, params])
X4, Y4 = _data(C=1)
BAD_FIT = [
    ("NaN", lambda: (_with(X4, (0, 0, 0, 0), np.nan), Y4), ValueError, "NaN or infinity"),
    ("inf", lambda: (_with(X4, (3, 0, 2, 1), -np.inf), Y4), ValueError, "NaN or infinity"),
    ("overflows float32", lambda: (_with(X4, (0, 0, 0, 0), 1e300), Y4), ValueError,
     "too large for float32", dict(dtype=np.float32)),
    ("flat rows without image_shape", lambda: (X4.reshape(20, -1), Y4), ValueError,
     "image_shape=(C, H, W)"),
    ("1-D", lambda: (X4.ravel(), Y4), ValueError, "got 1 dimension"),
    ("5-D", lambda: (X4[..., None], Y4), ValueError, "got 5 dimension"),
    ("length mismatch", lambda: (X4, Y4[:-1]), ValueError, "inconsistent numbers of samples"),
    ("one class", lambda: (X4, np.zeros(20)), ValueError, "at least 2 distinct labels"),
    ("empty", lambda: (X4[:0], Y4[:0]), ValueError, "0 sample"),
    ("images of no pixels", lambda: (np.ones((20, 0, 8)), Y4), ValueError, "0 feature"),
    ("object array of dicts", lambda: (np.full((20, 1, 2, 2), {"a": 1}, dtype=object), Y4),
     TypeError, "could not be converted"),
    ("complex", lambda: (X4.astype(complex), Y4), ValueError, "Complex data not supported"),
    ("strings", lambda: (X4.astype(str), Y4), TypeError, "must be numeric"),
    ("ragged list", lambda: ([[[0.0, 1.0]], [[1.0]]], [0, 1]), ValueError,
     "could not be converted"),
    ("y is None", lambda: (X4, None), ValueError, "requires y to be passed"),
    ("y 2-D", lambda: (X4, np.ones((20, 2))), ValueError, "1-dimensional"),
    ("y continuous", lambda: (X4, np.linspace(0, 1, 20)), ValueError, "continuous"),
    ("y NaN", lambda: (X4, _with(np.arange(20.0) % 2, 0, np.nan)), ValueError, "NaN"),
    ("image smaller than the kernel", lambda: (X4[:, :, :2, :2], Y4), ValueError,
     "smaller than kernel_size=3 with padding=0", dict(padding=0)),
]


@pytest.mark.parametrize("case", BAD_FIT, ids=[c[0] for c in BAD_FIT])
def test_bad_data_is_rejected_with_a_clear_message(case):
    _, make, exc, match, *params = case
    X, y = make()
    with pytest.raises(exc, match=re.escape(match)):
        small(**(params[0] if params else {})).fit(X, y)


@pytest.mark.parametrize("X,image_shape,exc,match", [
    (X4.reshape(20, -1)[:, :60], (1, 8, 8), ValueError,
     r"60 feature\(s\) per sample, but image_shape=\(1, 8, 8\) needs C\*H\*W = 64"),
    (X4, (2, 8, 8), ValueError, r"images of shape \(C, H, W\) = \(1, 8, 8\), but image_shape is"),
    (scipy.sparse.csr_matrix(X4.reshape(20, -1)), (1, 8, 8), TypeError, "Sparse data"),
    (X4.reshape(20, -1), (1, 8), ValueError, r"image_shape must be None or \(C, H, W\)"),
    (X4.reshape(20, -1), (1, 0, 64), ValueError, "each entry of image_shape"),
    (X4.reshape(20, -1), "8x8", ValueError, "each entry of image_shape"),
])
def test_bad_flat_input_is_rejected(X, image_shape, exc, match):
    with pytest.raises(exc, match=match):
        small(image_shape=image_shape).fit(X, Y4)


@pytest.mark.parametrize("params,match", [
    (dict(conv_channels=()), "conv_channels must not be empty"),
    (dict(conv_channels=(0,)), "each entry of conv_channels"),
    (dict(conv_channels="wide"), "each entry of conv_channels"),
    (dict(kernel_size=0), "kernel_size"),
    (dict(kernel_size=2.5), "kernel_size"),
    (dict(stride=0), "stride"),
    (dict(padding=-1), "padding"),
    (dict(pool="min"), "pool must be one of"),
    (dict(pool_size=(2, 2, 2)), "pool_size has 3 entries but there are 1 conv layers"),
    (dict(pool_size=3), "divisible by pool_size=3"),
    (dict(hidden_layer_sizes=()), "needs at least one hidden dense layer"),
    (dict(hidden_layer_sizes=(True,)), "each entry of hidden_layer_sizes"),
    (dict(activation="gelu"), "activation"),
    (dict(solver="adam"), "solver"),
    (dict(batch_size=0), "batch_size"),
    (dict(refresh_every=0), "refresh_every"),
    (dict(max_iter=0), "max_iter"),
    (dict(max_iter=2.0), "max_iter"),
    (dict(eval_every=0), "eval_every"),
    (dict(learning_rate_init=-1.0), "learning_rate_init"),
    (dict(penalty_scale=0), "penalty_scale"),
    (dict(penalty_scale=float("nan")), "penalty_scale"),
    (dict(z_step="global"), "z_step"),
    (dict(ridge_fallback="lstsq"), "ridge_fallback"),
    (dict(tol=-1.0), "tol"),
    (dict(n_iter_no_change=0), "n_iter_no_change"),
    (dict(early_stopping=True, validation_fraction=1.5), "validation_fraction"),
    (dict(early_stopping=True, validation_fraction=0.0), "validation_fraction"),
    (dict(callback="print"), "callback must be callable"),
    (dict(n_threads=0), "n_threads"),
    (dict(backend="gpu"), "backend"),
    (dict(dtype=np.int32), "dtype must be numpy.float32 or numpy.float64"),
    (dict(random_state="seed"), "random_state"),
])
def test_bad_hyperparameters_are_rejected(params, match):
    X, y = _data()
    with pytest.raises(ValueError, match=match):
        small(**params).fit(X, y)


def test_early_stopping_needs_two_samples_of_a_class():
    X, _ = _data(n=2)
    with pytest.raises(ValueError, match="at least two samples of some class"):
        small(early_stopping=True).fit(X, ["a", "b"])


def test_predict_checks():
    X, y = _data(C=2)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        small().predict(X)
    clf = small().fit(X, y)
    for bad, match in [
        (X[:, :, :4, :4], r"\(2, 4, 4\), but the model was fitted on \(2, 8, 8\)"),
        (X[:, :1], r"\(1, 8, 8\), but the model was fitted on"),
        (np.ones((3, 10)), "X has 10 features, but CNNClassifier is expecting 128 features"),
        (_with(X, (0, 0, 0, 0), np.nan), "NaN or infinity"),
        (X.reshape(20, -1)[0], "Reshape your data"),
        (X[:0], "0 sample"),
    ]:
        with pytest.raises(ValueError, match=match):
            clf.predict_proba(bad)


def test_warm_start_rejects_changed_problems():
    X, y = _data()
    clf = small(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match=r"warm_start: X has images of shape \(C, H, W\)"):
        clf.fit(np.concatenate([X[:, None], X[:, None]], axis=1), y)
    with pytest.raises(ValueError, match="different classes"):
        clf.fit(X, np.where(y == "a", "x", y))
    with pytest.raises(ValueError, match="architecture .* changed"):
        clf.set_params(conv_channels=(3,)).fit(X, y)


# ---------------------------------------------------------------------------
# valid inputs in any layout or numeric type give the model of the float64 array
def test_accepts_ints_float16_views_fortran_read_only_and_memmap(tmp_path):
    X, y = _data(C=2)
    X = np.round(X * 8)                                  # exact in every type below
    ref = small(max_iter=3).fit(X, y)
    big = np.zeros((20, 2, 8, 16))
    big[..., ::2] = X
    read_only = X.copy()
    read_only.setflags(write=False)
    mm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=np.float64,
                                   shape=X.shape)
    mm[...] = X
    mm.flush()
    variants = {"int64": X.astype(np.int64), "int8": X.astype(np.int8),
                "float16": X.astype(np.float16), "float32": X.astype(np.float32),
                "strided view": big[..., ::2], "fortran": np.asfortranarray(X),
                "read-only": read_only, "memmap": np.load(tmp_path / "X.npy", mmap_mode="r"),
                "list": X.tolist(), "object": X.astype(object)}
    for name, variant in variants.items():
        clf = small(max_iter=3).fit(variant, list(y))
        for a, b in zip(clf.coefs_ + clf.intercepts_, ref.coefs_ + ref.intercepts_):
            np.testing.assert_array_equal(a, b, err_msg=name)
        np.testing.assert_array_equal(clf.predict_proba(variant), ref.predict_proba(X),
                                      err_msg=name)


def test_inputs_are_not_modified():
    X, y = _data(C=2)
    X0, y0 = X.copy(), y.copy()
    small(max_iter=3, early_stopping=True, batch_size=7).fit(X, y).predict(X)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(y, y0)


# ---------------------------------------------------------------------------
# determinism and concurrency
MINI = dict(conv_channels=(3,), hidden_layer_sizes=(5,), batch_size=16, refresh_every=2,
            eval_every=2, max_iter=8, learning_rate_init=0.5)


@pytest.mark.parametrize("solver", ["lysep", "gd"])
def test_repeat_fits_are_bit_identical(solver):
    X, y = image_data(n=48, C=2)
    a = CNNClassifier(solver=solver, random_state=5, **MINI).fit(X, y)
    b = CNNClassifier(solver=solver, random_state=5, **MINI).fit(X, y)
    c = CNNClassifier(solver=solver, random_state=6, **MINI).fit(X, y)
    assert_same_fit(a, b)
    assert a.batch_loss_curve_ == b.batch_loss_curve_
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])
    assert_same_fit(a.fit(X, y), b)              # refitting the same object starts over


def test_two_fits_in_two_threads_equal_sequential_fits():
    X, y = image_data(n=48, C=2)
    params = [dict(solver="lysep", random_state=1), dict(solver="gd", random_state=2)]
    sequential = [CNNClassifier(**MINI, **p).fit(X, y) for p in params]
    parallel = [CNNClassifier(**MINI, **p) for p in params]
    fit_in_threads(parallel, X, y)
    for a, b in zip(sequential, parallel):
        assert_same_fit(a, b)


# ---------------------------------------------------------------------------
# interrupts and non-finite values
@pytest.mark.parametrize("solver", ["lysep", "gd"])
@pytest.mark.parametrize("eval_every,kept", [(1, 3), (2, 2)])
def test_keyboard_interrupt_keeps_the_last_recorded_model(solver, eval_every, kept):
    """Ctrl-C (here raised from the callback after iteration 3) leaves the model at the
    last iteration its curves record, equal to a fit that ran that many iterations."""
    X, y = image_data(n=48, C=2)
    kw = dict(MINI, solver=solver, eval_every=eval_every, random_state=0)

    def interrupt(record):
        if record["iteration"] == 3:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match=f"interrupted; the model keeps the parameters "
                                         f"of iteration {kept}"):
        clf = CNNClassifier(**{**kw, "max_iter": 50}, callback=interrupt).fit(X, y)
    ref = CNNClassifier(**{**kw, "max_iter": kept}).fit(X, y)
    assert clf.n_iter_ == kept and clf.curve_iterations_[-1] == kept
    assert_same_fit(clf, ref)
    assert clf.loss_ == ref.loss_
    np.testing.assert_array_equal(clf.predict(X), ref.predict(X))


def test_non_finite_J_stops_lysep_with_the_last_finite_parameters(monkeypatch):
    X, y = image_data(n=48, C=2)
    sweep, calls = CNNLySepState.sweep, []

    def poisoned(state):
        stats = sweep(state)
        calls.append(1)
        if len(calls) == 3:
            state.W[0][0, 0] = np.nan                  # what an overflow would leave
            state.J = np.nan
        return stats

    monkeypatch.setattr(CNNLySepState, "sweep", poisoned)
    with pytest.warns(NumericalWarning, match="non-finite at iteration 3; kept the last"):
        clf = CNNClassifier(**{**MINI, "max_iter": 10}, random_state=0).fit(X, y)
    monkeypatch.setattr(CNNLySepState, "sweep", sweep)
    ref = CNNClassifier(**{**MINI, "max_iter": 2}, random_state=0).fit(X, y)
    assert clf.n_iter_ == 2 and clf.curve_iterations_ == [0, 2]
    assert_same_fit(clf, ref)
    assert np.isfinite(clf.predict_proba(X)).all()


def test_diverging_gd_keeps_the_last_finite_parameters():
    X, y = image_data(n=48, C=2)
    kw = dict(MINI, solver="gd", activation="relu", learning_rate_init=1e100, random_state=0)
    with pytest.warns(NumericalWarning, match="gd: the training loss became non-finite at "
                                              "iteration 2; kept the last finite parameters"):
        clf = CNNClassifier(**kw).fit(X, y)
    ref = CNNClassifier(**{**kw, "max_iter": 1}).fit(X, y)
    assert clf.n_iter_ == 1 and clf.curve_iterations_ == [0, 1]
    assert_same_fit(clf, ref)
    assert np.isfinite(clf.loss_curve_).all() and np.isfinite(clf.predict_proba(X)).all()


# ---------------------------------------------------------------------------
# the conv kernels against their NumPy references on random shapes (hypothesis;
# without the test extra only these tests are missing)
try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

if given is not None:
    SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)
    TOL = {np.float64: 1e-11, np.float32: 5e-5}


    def close(a, b, dtype):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(1, np.abs(b).max(initial=0))
        np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype] * scale)


    @st.composite
    def conv_cases(draw):
        """A random conv layer: images, kernel, output-shaped arrays and a chunk size."""
        dtype = draw(st.sampled_from([np.float64, np.float32]))
        k, s, p = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(0, 2))
        H = draw(st.integers(max(1, k - 2 * p), 7))
        W = draw(st.integers(max(1, k - 2 * p), 7))
        N, C, Co = draw(st.integers(1, 4)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
        rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
        Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
        f = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
        return dict(dtype=dtype, k=k, s=s, p=p, U=f(N, H, W, C), K=f(k * k * C, Co), b=f(Co),
                    dZ=f(N, Ho, Wo, Co), chunk=draw(st.integers(1, 5)))


    @SETTINGS
    @given(conv_cases())
    def test_conv_forward_transpose_gram_match_reference(c):
        d, k, s, p, U, K, dZ = c["dtype"], c["k"], c["s"], c["p"], c["U"], c["K"], c["dZ"]
        out = {}
        for name, mod in (("compiled", _conv), ("reference", _conv_reference)):
            Z, dU = np.empty_like(dZ), np.full_like(U, np.nan)       # overwritten, not added to
            G, RHS = np.empty((K.shape[0],) * 2, d), np.empty_like(K)
            mod.conv_forward(U, K, c["b"], k, s, p, Z, c["chunk"])
            mod.conv_transpose(dZ, K, k, s, p, dU, c["chunk"])
            mod.conv_gram(U, dZ, k, s, p, G, RHS, c["chunk"])
            out[name] = (Z, dU, G, RHS)
        for a, b in zip(out["compiled"], out["reference"]):
            close(a, b, d)
        # adjoint identity <conv(U), dZ> = <U, conv^T(dZ)> on the compiled pair
        Z0 = out["compiled"][0].astype(float) - c["b"]
        lhs, rhs = np.vdot(Z0, dZ), np.vdot(U.astype(float), out["compiled"][1])
        assert abs(lhs - rhs) <= 10 * TOL[d] * (np.abs(Z0).sum() * np.abs(dZ).max() + 1)


    @SETTINGS
    @given(conv_cases())
    def test_im2col_col2im_and_conv_weight_grad_match_reference(c):
        d, k, s, p, U, dZ = c["dtype"], c["k"], c["s"], c["p"], c["U"], c["dZ"]
        N, Ho, Wo, Co = dZ.shape
        a, b = sorted(np.random.default_rng(c["chunk"]).integers(0, N + 1, 2))
        rows = (b - a) * Ho * Wo
        out = {}
        for name, mod, blocks in (("compiled", _conv, _cnn_blocks),
                                  ("reference", _conv_reference, _cnn_reference)):
            Phi = np.empty((rows, k * k * U.shape[3]), d)
            mod.im2col(U, k, s, p, Phi, a, b)
            dU = np.ones_like(U)                                    # col2im accumulates
            mod.col2im(Phi, k, s, p, dU, a, b)
            gK, gb = np.empty((k * k * U.shape[3], Co), d), np.empty(Co, d)
            blocks.conv_weight_grad(U, dZ, k, s, p, gK, gb, c["chunk"])
            out[name] = (Phi, dU, gK, gb)
        for x, y in zip(out["compiled"], out["reference"]):
            close(x, y, d)


    @st.composite
    def pool_cases(draw):
        dtype = draw(st.sampled_from([np.float64, np.float32]))
        q = draw(st.integers(1, 3))
        N, C = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        H, W = q * draw(st.integers(1, 3)), q * draw(st.integers(1, 3))
        rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
        U = rng.normal(size=(N, H, W, C))
        if draw(st.booleans()):                                     # ties: first max wins
            U = np.round(U)
        return dict(dtype=dtype, q=q, U=U.astype(dtype),
                    dV=rng.normal(size=(N, H // q, W // q, C)).astype(dtype))


    @SETTINGS
    @given(pool_cases())
    def test_pooling_and_adjoints_match_reference(c):
        d, q, U, dV = c["dtype"], c["q"], c["U"], c["dV"]
        out = {}
        for name, mod in (("compiled", _conv), ("reference", _conv_reference)):
            Va, Vm = np.empty_like(dV), np.empty_like(dV)
            arg = np.empty(dV.shape, np.int64)
            dA, dM = np.full_like(U, np.nan), np.full_like(U, np.nan)
            mod.avgpool(U, q, Va)
            mod.avgpool_adjoint(dV, q, dA)
            mod.maxpool(U, q, Vm, arg)
            mod.maxpool_adjoint(dV, arg, dM)
            out[name] = (Va, dA, Vm, arg, dM)
        for a, b in zip(out["compiled"], out["reference"]):
            close(a, b, d)
        assert np.array_equal(out["compiled"][3], out["reference"][3])   # same argmax


    @st.composite
    def row_cases(draw):
        dtype = draw(st.sampled_from([np.float64, np.float32]))
        N, n = draw(st.integers(1, 12)), draw(st.integers(1, 9))
        rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
        f = lambda *shape: rng.normal(size=shape).astype(dtype)  # noqa: E731
        rows = np.flatnonzero(rng.random(N) < 0.6).astype(np.intp)
        return dict(dtype=dtype, Z=f(N, n), R=f(N, n), back=f(N, n), g=f(N, n), rows=rows,
                    step=rng.uniform(0, 2, N), kind=draw(st.integers(0, 3)),
                    omegas=(draw(st.floats(0, 10)), draw(st.floats(0, 10))))


    @SETTINGS
    @given(row_cases())
    def test_conv_z_row_kernels_match_reference(c):
        d, Z, R, rows, kind = c["dtype"], c["Z"], c["R"], c["rows"], c["kind"]
        A = np.empty_like(Z)
        activation(Z, kind, A)
        out = {}
        for name, mod in (("compiled", _cnn_blocks), ("reference", _cnn_reference)):
            grad, gsq = np.empty_like(Z), np.empty(Z.shape[0])
            mod.conv_z_gradient(R, A, c["back"], kind, *c["omegas"], grad, gsq)
            Zc, Rc, Ac = (np.zeros_like(Z) for _ in range(3))
            rsq = np.zeros(Z.shape[0])
            mod.z_trial_rows(Z, R, c["g"], c["step"], rows, kind, Zc, Rc, Ac, rsq)
            Yc, rn = c["back"].copy(), np.zeros(Z.shape[0])
            mod.residual_rows(Z, rows, Yc, rn)
            ss = np.empty(Z.shape[0])
            mod.row_sq_norms(R, ss)
            out[name] = (grad, gsq, Zc, Rc, Ac, rsq, Yc, rn, ss)
        for a, b in zip(out["compiled"], out["reference"]):
            close(a, b, d)


    @SETTINGS
    @given(st.sampled_from([np.float64, np.float32]), st.integers(1, 8), st.integers(1, 4),
           st.sampled_from([0.0, 1e-3, 1.0]), st.integers(0, 2**31 - 1), st.booleans())
    def test_ridge_solve_matches_reference(dtype, n, m, lam, seed, singular):
        rng = np.random.default_rng(seed)
        Phi, Y = rng.normal(size=(n + 3, n)), rng.normal(size=(n + 3, m))
        if singular and n > 1:
            Phi[:, -1] = Phi[:, 0]                          # a rank-deficient Gram matrix
        G, rhs = (Phi.T @ Phi).astype(dtype), (Phi.T @ Y).astype(dtype)
        eps = np.finfo(dtype).eps
        res = []
        for mod in (_cnn_blocks, _cnn_reference):
            W = np.empty((n, m), dtype)
            status = mod.ridge_solve(G, rhs, lam, 1e4 * eps, W, np.empty((n, n), dtype),
                                     np.empty((n, n), dtype))
            res.append((status, W.astype(np.float64)))
        assert res[0][0] == res[1][0] and res[0][0] in (0, 1)
        # solutions may differ along numerically null directions; the ridge objective
        # ||Y - Phi W||^2 + lam ||W||^2 may not
        f = [float(np.sum((Y - Phi @ W) ** 2) + lam * np.sum(W ** 2)) for _, W in res]
        assert abs(f[0] - f[1]) <= 1e3 * eps * max(1.0, float(np.sum(Y ** 2)))
