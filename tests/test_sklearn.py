"""The scikit-learn estimator contract, checked by scikit-learn itself (a test extra)."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from lysep import CNNClassifier, FNNClassifier  # noqa: E402
from lysep.datasets import circle  # noqa: E402


@pytest.mark.parametrize("params", [dict(solver="lysep", max_iter=10),
                                    dict(solver="gd", max_iter=300, learning_rate_init=0.5)],
                         ids=["lysep", "gd"])
def test_check_estimator_passes(params):
    # gd needs a budget that fits check_classifiers_train's blobs (accuracy > 0.83)
    results = check_estimator(FNNClassifier(hidden_layer_sizes=(5,), random_state=0, **params),
                              on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results
              if r["status"] == "failed"]
    assert len(results) > 40
    assert failed == []


def test_sklearn_exceptions_are_caught_by_sklearn_classes():
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        FNNClassifier().predict(np.ones((2, 2)))


def test_pipeline_grid_search_and_cross_validation():
    X, y = circle(400, random_state=0)
    X = X * 1000 + 5                                     # a pipeline's scaler earns its place
    pipe = make_pipeline(StandardScaler(), FNNClassifier(max_iter=20, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    search = GridSearchCV(FNNClassifier(max_iter=15, random_state=0),
                          {"hidden_layer_sizes": [(4,), (10, 10)]}, cv=3)
    search.fit(X / 1000, y)
    assert search.best_params_["hidden_layer_sizes"] in [(4,), (10, 10)]
    assert len(search.cv_results_["mean_test_score"]) == 2
    fresh = clone(search.best_estimator_)
    assert not hasattr(fresh, "coefs_") and fresh.get_params() == search.best_estimator_.get_params()


# ---------------------------------------------------------------------------
# CNNClassifier: flat rows through image_shape make it a scikit-learn estimator
CNN_SMALL = dict(conv_channels=(4,), kernel_size=1, padding=0, pool_size=1,
                 hidden_layer_sizes=(8,), random_state=0)
CNN_SOLVERS = {"lysep": dict(solver="lysep", max_iter=20),
               "gd": dict(solver="gd", max_iter=300, learning_rate_init=0.5)}
# check_estimator's data sets have 2, 3, 4, 5 or 10 features, while a CNN takes images of
# one size, C*H*W = 3 below: these checks use data of another width (and pass with an
# image_shape of their width, see the next test)
OTHER_WIDTH = {
    "check_estimators_overwrite_params": 2, "check_estimators_fit_returns_self": 2,
    "check_readonly_memmap_input": 2, "check_classifier_data_not_an_array": 2,
    "check_classifiers_classes": 2, "check_classifiers_train": 2,
    "check_fit_idempotent": 2, "check_fit_check_is_fitted": 2, "check_n_features_in": 2,
    "check_n_features_in_after_fitting": 4, "check_positive_only_tag_during_fit": 4,
    "check_non_transformer_estimators_n_iter": 4, "check_estimators_dtypes": 5,
    "check_dtype_object": 10,
}
IMAGE_SHAPES = {2: (1, 1, 2), 3: (1, 1, 3), 4: (1, 2, 2), 5: (1, 1, 5), 10: (1, 2, 5)}


def _shape_mismatch(exc):
    """The error a CNN raises for rows of the wrong length (possibly wrapped by the check)."""
    return any("feature(s) per sample, but image_shape" in str(e)
               for e in (exc, exc.__cause__, exc.__context__) if e is not None)


@pytest.mark.parametrize("solver", list(CNN_SOLVERS))
def test_cnn_check_estimator_passes(solver):
    expected = {name: f"its data have {width} features; image_shape=(1, 1, 3) takes 3"
                for name, width in OTHER_WIDTH.items()}
    est = CNNClassifier(image_shape=IMAGE_SHAPES[3], **CNN_SMALL, **CNN_SOLVERS[solver])
    results = check_estimator(est, expected_failed_checks=expected, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results
              if r["status"] == "failed"]
    assert len(results) > 40 and failed == []
    listed = [r for r in results if r["expected_to_fail"]]
    assert {r["check_name"] for r in listed} == set(OTHER_WIDTH)
    # the list is honest: each listed check fails, and only for the width of its data
    assert all(r["status"] == "xfail" and _shape_mismatch(r["exception"]) for r in listed)


@pytest.mark.parametrize("width", [2, 4, 5, 10])
@pytest.mark.parametrize("solver", list(CNN_SOLVERS))
def test_cnn_listed_checks_pass_with_the_width_of_their_data(width, solver):
    est = CNNClassifier(image_shape=IMAGE_SHAPES[width], **CNN_SMALL, **CNN_SOLVERS[solver])
    names = {name for name, w in OTHER_WIDTH.items() if w == width}
    results = [r for r in check_estimator(est, on_fail=None) if r["check_name"] in names]
    assert {r["check_name"] for r in results} == names
    for r in results:                # without pandas one check has nothing left to run
        assert r["status"] == "passed" or (r["status"] == "skipped"
                                           and "pandas" in str(r["exception"])), r


def _digits(n=300):
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)                 # 8x8 images as rows of 64 values
    return X[:n], y[:n]


def test_cnn_in_a_pipeline_learns_digits():
    X, y = _digits()
    pipe = make_pipeline(StandardScaler(), CNNClassifier(
        conv_channels=(4,), pool_size=2, hidden_layer_sizes=(16,), image_shape=(1, 8, 8),
        batch_size=100, refresh_every=5, max_iter=30, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8          # chance: 0.1
    pipe.fit(X, y)
    cnn = pipe[-1]
    assert cnn.n_features_in_ == 64 and cnn.input_shape_ == (8, 8, 1)
    assert pipe.score(X, y) == cnn.score(StandardScaler().fit(X).transform(X), y)


def test_cnn_clone_params_and_pickle_round_trip():
    import pickle
    X, y = _digits(150)
    X = X / 16
    clf = CNNClassifier(conv_channels=(3,), hidden_layer_sizes=(8,), image_shape=(1, 8, 8),
                        batch_size=50, refresh_every=2, max_iter=6, early_stopping=True,
                        warm_start=True, random_state=0)
    params = clf.get_params()
    assert params["image_shape"] == (1, 8, 8) and params["warm_start"] is True
    fresh = clone(clf)
    assert fresh.get_params() == params and fresh is not clf
    assert clf.set_params(max_iter=8) is clf and clf.max_iter == 8
    with pytest.raises(ValueError, match="Invalid parameter 'image_size'"):
        clf.set_params(image_size=(1, 8, 8))
    clf.fit(X, y)
    assert not hasattr(clone(clf), "coefs_")
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    assert again.get_params() == clf.get_params()
    # the pickled batch stream and state continue the fit exactly as the original does
    again.fit(X, y)
    clf.fit(X, y)
    for a, b in zip(again.coefs_ + again.intercepts_, clf.coefs_ + clf.intercepts_):
        np.testing.assert_array_equal(a, b)
