"""The scikit-learn estimator contract, checked by scikit-learn itself (a test extra)."""

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from lysep import FNNClassifier  # noqa: E402
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
