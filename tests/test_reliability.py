"""Determinism, concurrency, memory hygiene and numerical safety (issue: reliability)."""
import gc
import tracemalloc
import warnings

import numpy as np
import pytest

from lysep import FNNClassifier
from lysep.datasets import circle

from conftest import assert_same_fit, fit_in_threads


@pytest.fixture(scope="module")
def data():
    return circle(500, random_state=4)


def test_two_fits_in_two_threads_equal_sequential_fits(data):
    X, y = data
    params = [dict(solver="lysep", random_state=1), dict(solver="gd", random_state=2)]
    sequential = [FNNClassifier((12, 12, 12), max_iter=25, **p).fit(X, y) for p in params]
    parallel = [FNNClassifier((12, 12, 12), max_iter=25, **p) for p in params]
    fit_in_threads(parallel, X, y)
    for a, b in zip(sequential, parallel):
        assert_same_fit(a, b)


def test_repeated_fit_predict_does_not_grow_memory(data):
    X, y = data
    X, y = X[:200], y[:200]

    def cycle():
        clf = FNNClassifier((8, 8), max_iter=3, random_state=0).fit(X, y)
        clf.predict_proba(X)

    for _ in range(20):
        cycle()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(500):
        cycle()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 200_000, f"{grown} bytes retained after 500 fit/predict cycles"


def _rss_kib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


@pytest.mark.skipif(_rss_kib() is None, reason="needs /proc/self/status")
def test_compiled_kernels_do_not_leak_native_memory(data):
    """malloc'd scratch in the kernels is invisible to tracemalloc: watch the RSS."""
    X, y = data
    clf = FNNClassifier((16,) * 4, max_iter=2, random_state=0)
    for _ in range(30):
        clf.fit(X, y)
    before = _rss_kib()
    for _ in range(300):
        clf.fit(X, y)
    assert _rss_kib() - before < 8 * 1024          # KiB; a leak of the per-sweep scratch
                                                  # would add ~40 MiB over these fits


@pytest.mark.filterwarnings("ignore::UserWarning")      # the ScaleWarning is expected
def test_huge_logits_and_saturated_activations_stay_finite():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)) * 1e3                  # saturates every tanh unit
    y = (X[:, 0] > 0).astype(int)
    for solver in ("lysep", "gd"):
        clf = FNNClassifier((6, 6), solver=solver, max_iter=20, random_state=0,
                            learning_rate_init=1.0).fit(X, y)
        assert np.isfinite(clf.loss_curve_).all()
        P = clf.predict_proba(X * 1e3)
        assert np.isfinite(P).all() and np.allclose(P.sum(axis=1), 1)


def test_duplicated_samples_and_features_train(data):
    X, y = data
    Xd = np.hstack([X, X, X[:, :1]])                      # singular Gram at the first layer
    Xd = np.vstack([Xd, Xd])
    yd = np.concatenate([y, y])
    clf = FNNClassifier((10, 10), max_iter=30, random_state=0).fit(Xd, yd)
    assert np.all(np.diff(clf.surrogate_curve_) <= 0)
    assert clf.score(Xd, yd) > 0.85


def test_large_feature_magnitudes_are_flagged(data):
    """Features of magnitude 1e6 saturate the default initialisation: fit says to scale."""
    from lysep import ScaleWarning
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)
        ref = FNNClassifier((20,) * 4, max_iter=40, random_state=0).fit(X, y)   # no warning
    with pytest.warns(ScaleWarning, match="Standardise the features"):
        big = FNNClassifier((20,) * 4, max_iter=40, random_state=0).fit(X * 1e6, y)
    assert np.isfinite(big.loss_curve_).all()
    assert ref.score(X, y) > 0.95


def test_float32_warns_when_rounding_would_dominate_J():
    from lysep import NumericalWarning
    X, y = circle(300, random_state=0)
    with pytest.warns(NumericalWarning, match="Use dtype=numpy.float64 for deep networks"):
        FNNClassifier((20,) * 19, max_iter=1, dtype=np.float32, random_state=0).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumericalWarning)
        FNNClassifier((20,) * 5, max_iter=1, dtype=np.float32, random_state=0).fit(X, y)
        FNNClassifier((20,) * 19, max_iter=1, random_state=0).fit(X, y)


def test_float32_warns_when_rounding_grows_to_dominate_J_during_training():
    """The floor grows with the weights: 9 hidden layers of 20 in float32 start below the
    start-of-fit threshold, and stall on rounding by sweep 10 (95% against 99% in
    float64); 5 layers train as in float64 and must not be warned about."""
    from lysep import NumericalWarning
    X, y = circle(3000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NumericalWarning)
        FNNClassifier((20,) * 5, max_iter=30, dtype=np.float32, random_state=0).fit(X, y)
        FNNClassifier((20,) * 9, max_iter=30, random_state=0).fit(X, y)
        FNNClassifier((20,) * 19, max_iter=30, random_state=0).fit(X, y)      # float64
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = FNNClassifier((20,) * 9, max_iter=30, dtype=np.float32, random_state=0)
        clf.fit(X, y)
    rounding = [w for w in caught if issubclass(w.category, NumericalWarning)]
    assert len(rounding) == 1                                   # once per fit
    assert "deciding on rounding noise" in str(rounding[0].message)
    assert rounding[0].filename == __file__                     # points at the caller
    assert clf._state.rounding_floor() > 1e-2 * clf._state.J
