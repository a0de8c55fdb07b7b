"""The paper's central claim on its circle problem (MATH.md §8), 3000 samples, default
initialisation: LySep trains deep tanh networks where plain gradient descent stalls."""
import warnings

import pytest

from lysep import ConvergenceWarning, FNNClassifier
from lysep.datasets import circle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data():
    return circle(3000, random_state=0)


def fit(X, y, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return FNNClassifier(activation="tanh", random_state=0, **params).fit(X, y)


def test_lysep_reaches_95_percent_within_100_iterations_at_depth_9(data):
    X, y = data
    clf = fit(X, y, hidden_layer_sizes=(20,) * 9, solver="lysep", max_iter=100)
    assert max(clf.accuracy_curve_) >= 0.95
    assert clf.score(X, y) >= 0.95


def test_lysep_beats_stalled_gd_by_20_points_at_depth_19(data):
    X, y = data
    lysep = fit(X, y, hidden_layer_sizes=(20,) * 19, solver="lysep", max_iter=300)
    gd = fit(X, y, hidden_layer_sizes=(20,) * 19, solver="gd", max_iter=3000,
             learning_rate_init=0.1)
    acc_lysep, acc_gd = lysep.score(X, y), gd.score(X, y)
    assert acc_lysep >= acc_gd + 0.20, (acc_lysep, acc_gd)
    assert gd.loss_curve_[-1] > 0.6          # GD stagnates near log 2 on this problem
    assert lysep.loss_curve_[-1] < gd.loss_curve_[-1]
