"""FNNClassifier: the user-facing contract (names follow scikit-learn's MLPClassifier)."""
import pickle
import warnings

import numpy as np
import pytest

import lysep
from lysep import ConvergenceWarning, FNNClassifier, NotFittedError
from lysep.datasets import circle


@pytest.fixture(scope="module")
def data():
    return circle(300, random_state=3)


def small(**kw):
    params = dict(hidden_layer_sizes=(8, 8), max_iter=15, random_state=0)
    params.update(kw)
    return FNNClassifier(**params)


@pytest.mark.parametrize("solver", ["lysep", "gd"])
def test_fit_predict_attributes(data, solver):
    X, y = data
    clf = small(solver=solver).fit(X, y)
    assert clf.n_features_in_ == 2 and clf.n_iter_ == 15
    assert [W.shape for W in clf.coefs_] == [(2, 8), (8, 8), (8, 2)]
    assert [b.shape for b in clf.intercepts_] == [(8,), (8,), (2,)]
    np.testing.assert_array_equal(clf.classes_, [0, 1])
    P = clf.predict_proba(X)
    assert P.shape == (300, 2)
    np.testing.assert_allclose(P.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), P, rtol=1e-12)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[P.argmax(axis=1)])
    assert clf.score(X, y) == pytest.approx(clf.accuracy_curve_[-1])
    assert len(clf.loss_curve_) == len(clf.accuracy_curve_) == 16
    assert clf.loss_ == clf.loss_curve_[-1]
    if solver == "lysep":
        assert len(clf.surrogate_curve_) == 16
    else:
        assert clf.surrogate_curve_ is None and clf.bound_constant_ is None
        assert np.all(np.diff(clf.loss_curve_) < 0)


def test_loss_curve_is_the_training_loss_of_the_returned_model(data):
    X, y = data
    clf = small().fit(X, y)
    P = clf.predict_proba(X)
    ce = -np.mean(np.log(P[np.arange(len(y)), y]))
    assert clf.loss_curve_[-1] == pytest.approx(ce, rel=1e-10)


def test_arbitrary_labels(data):
    X, y = data
    labels = np.array(["outside", "inside"])[y]
    clf = small().fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, ["inside", "outside"])
    assert set(clf.predict(X)) <= {"inside", "outside"}
    assert clf.score(X, labels) == small().fit(X, y).score(X, y)


def test_three_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    y = np.digitize(X[:, 0], [-0.5, 0.5])
    clf = small(max_iter=30).fit(X, y)
    assert clf.predict_proba(X).shape == (150, 3)
    assert clf.score(X, y) > 0.8


@pytest.mark.parametrize("solver", ["lysep", "gd"])
def test_random_state_fixes_everything(data, solver):
    X, y = data
    a = small(solver=solver, random_state=7).fit(X, y)
    b = small(solver=solver, random_state=7).fit(X, y)
    c = small(solver=solver, random_state=8).fit(X, y)
    for Wa, Wb in zip(a.coefs_, b.coefs_):
        np.testing.assert_array_equal(Wa, Wb)
    assert a.loss_curve_ == b.loss_curve_
    assert not np.array_equal(a.coefs_[0], c.coefs_[0])


def test_float32_runs_every_kernel_in_float32(data):
    X, y = data
    clf = small(dtype=np.float32).fit(X, y)
    assert all(W.dtype == np.float32 for W in clf.coefs_ + clf.intercepts_)
    ref = small().fit(X, y)
    assert abs(clf.loss_curve_[-1] - ref.loss_curve_[-1]) < 1e-2
    assert clf.score(X, y) > 0.8


@pytest.mark.parametrize("solver", ["lysep", "gd"])
def test_warm_start_equals_one_longer_fit(data, solver):
    X, y = data
    one = small(solver=solver, max_iter=20).fit(X, y)
    two = small(solver=solver, max_iter=10, warm_start=True).fit(X, y)
    two.fit(X, y)
    assert two.n_iter_ == 20
    for W1, W2 in zip(one.coefs_, two.coefs_):
        np.testing.assert_array_equal(W1, W2)
    assert one.loss_curve_ == two.loss_curve_


def test_convergence_warning_at_max_iter(data):
    X, y = data
    with pytest.warns(ConvergenceWarning, match="maximum iterations"):
        warnings.simplefilter("always", ConvergenceWarning)
        small(max_iter=2).fit(X, y)


def test_tol_stops_early(data):
    X, y = data
    clf = small(solver="gd", learning_rate_init=1e-6, tol=1e-3, n_iter_no_change=3,
                max_iter=100).fit(X, y)
    assert clf.n_iter_ == 3


def test_params_and_pickle(data):
    X, y = data
    clf = small(penalty_scale=0.5)
    assert clf.get_params()["penalty_scale"] == 0.5
    clf.set_params(max_iter=5)
    assert clf.max_iter == 5
    assert "penalty_scale=0.5" in repr(clf)
    with pytest.raises(ValueError, match="Invalid parameter"):
        clf.set_params(not_a_param=1)
    clf.fit(X, y)
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))


def test_verbose_reports_progress(data, capsys):
    X, y = data
    small(max_iter=2, verbose=True).fit(X, y)
    captured = capsys.readouterr()
    try:
        import tqdm  # noqa: F401
        assert "2/2" in captured.err and "J=" in captured.err       # the tqdm bar
    except ImportError:
        assert "Iteration 2" in captured.out and "J =" in captured.out


BAD_X = [
    (np.array([[np.nan, 1.0]] * 10), "NaN or infinity"),
    (np.array([[np.inf, 1.0]] * 10), "NaN or infinity"),
    (np.ones(10), "Reshape your data"),
    (np.ones((10, 2, 1)), "2-dimensional"),
    (np.empty((0, 2)), "0 sample"),
    (np.empty((10, 0)), "0 feature"),
    (np.array([["a", "b"]] * 10), "numeric"),
    (np.ones((10, 2), dtype=complex), "Complex data not supported"),
    (np.array([[{"a": 1}, 1.0]] * 10, dtype=object), "could not be converted"),
    (np.array([[1e300, 1.0]] * 10), "NaN or infinity"),      # overflows float32 only
]


@pytest.mark.parametrize("X,match", BAD_X)
def test_bad_X_is_rejected_with_a_clear_message(X, match):
    y = np.arange(len(X)) % 2 if len(X) else np.array([])
    dtype = np.float32 if X.dtype == float and np.abs(X).max(initial=0) == 1e300 else np.float64
    with pytest.raises((ValueError, TypeError), match=match):
        small(dtype=dtype).fit(X, y)


@pytest.mark.parametrize("y,match", [
    (np.zeros(10), "2 distinct labels"),
    (np.arange(9) % 2, "inconsistent numbers of samples"),
    (np.ones((10, 2)), "1-dimensional"),
    (np.array([np.nan] + [0.0] * 9), "NaN"),
    (np.linspace(0, 1, 10), "continuous"),
    (None, "requires y to be passed"),
])
def test_bad_y_is_rejected(y, match):
    with pytest.raises(ValueError, match=match):
        small().fit(np.ones((10, 2)), y)


@pytest.mark.parametrize("params,match", [
    (dict(hidden_layer_sizes=(8, -1)), "hidden_layer_sizes"),
    (dict(hidden_layer_sizes=()), "at least one hidden layer"),
    (dict(hidden_layer_sizes="wide"), "hidden_layer_sizes"),
    (dict(max_iter=0), "max_iter"),
    (dict(activation="swish"), "activation"),
    (dict(solver="adam"), "solver"),
    (dict(penalty_scale=0.0), "penalty_scale"),
    (dict(penalty_scale=float("nan")), "penalty_scale"),
    (dict(learning_rate_init=-1.0), "learning_rate_init"),
    (dict(z_step="global"), "z_step"),
    (dict(ridge_fallback="pinv"), "ridge_fallback"),
    (dict(dtype=np.int32), "dtype"),
    (dict(tol=-1.0), "tol"),
    (dict(n_iter_no_change=0), "n_iter_no_change"),
    (dict(random_state="seed"), "random_state"),
    (dict(hidden_layer_sizes=(2.5,)), "hidden_layer_sizes"),
    (dict(hidden_layer_sizes=(True,)), "hidden_layer_sizes"),
    (dict(max_iter=2.0), "max_iter"),
    (dict(n_threads=0), "n_threads"),
    (dict(early_stopping=True, validation_fraction=0.0), "validation_fraction"),
    (dict(callback="print"), "callback"),
    (dict(backend="gpu"), "backend"),
])
def test_bad_hyperparameters_are_rejected(data, params, match):
    X, y = data
    with pytest.raises(ValueError, match=match):
        small(**params).fit(X, y)


def test_predict_checks(data):
    X, y = data
    with pytest.raises(NotFittedError, match="not fitted"):
        small().predict(X)
    clf = small().fit(X, y)
    with pytest.raises(ValueError, match="3 features, but FNNClassifier is expecting 2"):
        clf.predict(np.ones((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        clf.predict_proba(np.array([[np.nan, 0.0]]))
    with pytest.raises(ValueError, match="Reshape your data"):
        clf.predict(np.ones(2))
    with pytest.raises(ValueError, match="0 sample"):
        clf.predict_proba(np.empty((0, 2)))


def test_warm_start_rejects_changed_problems(data):
    X, y = data
    clf = small(warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        clf.fit(np.hstack([X, X]), y)
    with pytest.raises(ValueError, match="classes"):
        clf.fit(X, y + 1)
    clf.set_params(hidden_layer_sizes=(3,))
    with pytest.raises(ValueError, match="hidden_layer_sizes changed"):
        clf.fit(X, y)


def test_accepts_lists_ints_fortran_and_read_only(data):
    X, y = data
    ref = small().fit(X, y)
    Xf = np.asfortranarray(X)
    Xr = X.copy()
    Xr.setflags(write=False)
    for variant in (X.tolist(), Xf, Xr, X[::1, :]):
        clf = small().fit(variant, list(y))
        np.testing.assert_array_equal(clf.coefs_[0], ref.coefs_[0])
    Xi = (X * 10).astype(np.int64)
    assert small().fit(Xi, y).predict(Xi).shape == (300,)


def test_callback_sees_every_iteration_and_can_stop(data):
    X, y = data
    seen = []

    def callback(record):
        seen.append(record)
        return record["iteration"] == 4

    clf = small(max_iter=50, callback=callback).fit(X, y)
    assert clf.n_iter_ == 4 and [r["iteration"] for r in seen] == [1, 2, 3, 4]
    last = seen[-1]
    assert last["loss"] == clf.loss_curve_[-1] and last["surrogate"] == clf.surrogate_curve_[-1]
    assert last["accuracy"] == clf.accuracy_curve_[-1]
    assert last["seconds_z"] > 0 and last["seconds_ridge"] > 0 and "eta_output" in last


@pytest.mark.parametrize("solver", ["lysep", "gd"])
def test_keyboard_interrupt_keeps_a_usable_model(data, solver):
    X, y = data

    def interrupt(record):
        if record["iteration"] == 3:
            raise KeyboardInterrupt

    with pytest.warns(UserWarning, match="interrupted; the model keeps the parameters of iteration 3"):
        clf = small(solver=solver, max_iter=50, callback=interrupt).fit(X, y)
    assert clf.n_iter_ == 3 and len(clf.loss_curve_) == 4
    ref = small(solver=solver, max_iter=3).fit(X, y)
    for W1, W2 in zip(clf.coefs_, ref.coefs_):
        np.testing.assert_array_equal(W1, W2)
    assert clf.score(X, y) == ref.score(X, y)


def test_early_stopping_restores_the_best_validation_weights(data):
    X, y = data
    clf = small(max_iter=60, early_stopping=True, validation_fraction=0.2,
                n_iter_no_change=3).fit(X, y)
    scores = clf.validation_scores_
    assert len(scores) == clf.n_iter_ and clf.n_iter_ < 60
    assert clf.best_validation_score_ == max(scores)
    best = int(np.argmax(scores))                 # first best iteration (strict improvement)
    assert clf.n_iter_ - 1 - best == 3           # stopped after 3 without improvement
    with pytest.raises(ValueError, match="validation_fraction"):
        small(early_stopping=True, validation_fraction=1.5).fit(X, y)


def test_warm_start_after_early_stopping_continues_from_the_restored_weights(data, tmp_path):
    """coefs_ hold the best validation weights; a warm start continues from them, as a
    model loaded from a file (which keeps no auxiliary variables) does."""
    X, y = data
    clf = small(max_iter=60, early_stopping=True, validation_fraction=0.2,
                n_iter_no_change=3).fit(X, y)
    assert clf.n_iter_ < 60                      # stopped early: best != last
    loaded = lysep.load(clf.save(tmp_path / "m.npz"))
    for model in (clf, loaded):
        model.set_params(warm_start=True, max_iter=2)
        model.fit(X, y)
    for W1, W2 in zip(clf.coefs_ + clf.intercepts_, loaded.coefs_ + loaded.intercepts_):
        np.testing.assert_array_equal(W1, W2)


def test_feature_names_from_dataframe_like(data):
    X, y = data

    class Frame:                                   # the two things sklearn reads
        columns = ["x0", "x1"]

        def __array__(self, dtype=None, copy=None):
            return X if dtype is None else X.astype(dtype)

    clf = small().fit(Frame(), y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["x0", "x1"])


def test_save_load_round_trip_in_a_new_process(data, tmp_path):
    import subprocess
    import sys

    import lysep
    X, y = data
    labels = np.array(["out", "in"])[y]
    clf = small(dtype=np.float32).fit(X, labels)
    path = clf.save(tmp_path / "model.npz")
    again = lysep.load(path)
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    assert again.get_params()["hidden_layer_sizes"] == (8, 8)
    assert again.loss_curve_ == clf.loss_curve_ and again.n_iter_ == clf.n_iter_
    np.save(tmp_path / "X.npy", X)
    code = ("import numpy as np, lysep, sys; m = lysep.load(sys.argv[1]); "
            "np.save(sys.argv[3], m.predict_proba(np.load(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "X.npy"),
                    str(tmp_path / "P.npy")], check=True, cwd=tmp_path)
    np.testing.assert_array_equal(np.load(tmp_path / "P.npy"), clf.predict_proba(X))


def test_load_rejects_other_files_and_versions(tmp_path):
    import json

    import lysep
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="not a lysep model"):
        lysep.load(tmp_path / "other.npz")
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match="not a lysep model"):
        lysep.load(tmp_path / "text.npz")
    meta = {"format": "lysep-model", "format_version": 99}
    np.savez(tmp_path / "future.npz", metadata=np.array(json.dumps(meta)))
    with pytest.raises(ValueError, match="format version 99; this lysep reads version 1"):
        lysep.load(tmp_path / "future.npz")
    with pytest.raises(NotFittedError):
        small().save(tmp_path / "unfitted.npz")


def test_sparse_object_and_column_vector_inputs(data):
    import scipy.sparse

    from lysep.exceptions import DataConversionWarning
    X, y = data
    with pytest.raises(TypeError, match="Sparse data"):
        small().fit(scipy.sparse.csr_matrix(X), y)
    ref = small().fit(X, y)
    obj = small().fit(X.astype(object), y)                 # numbers in an object array
    np.testing.assert_array_equal(obj.coefs_[0], ref.coefs_[0])
    with pytest.warns(DataConversionWarning, match="column-vector y"):
        col = small().fit(X, y.reshape(-1, 1))
    np.testing.assert_array_equal(col.coefs_[0], ref.coefs_[0])
