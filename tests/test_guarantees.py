"""The guarantees of MATH.md §3-§4, asserted at every iteration: J is the layer
separation loss recomputed from scratch, J never increases, J = L(F) after the forward
initialisation, and the true loss is at most C(s) J (Theorem B)."""
import math

import numpy as np
import pytest

from lysep import FNNClassifier
from lysep._backend import COMPILED, REFERENCE
from lysep._fnn import init_parameters
from lysep._sweep import LySepState
from lysep.datasets import circle

from conftest import J_from_scratch, make_problem, true_loss

CASES = [("tanh", 0.01, True), ("tanh", 1.0, False), ("sigmoid", 0.1, True),
         ("softplus", 10.0, True), ("relu", 1.0, False), ("relu", 0.05, True)]


@pytest.mark.parametrize("name,s,per_sample", CASES)
def test_bound_and_monotone_J_at_every_sweep(name, s, per_sample, dtype):
    X, y, W, b = make_problem(N=120, hidden=(8, 7, 6, 5), dtype=dtype, seed=5)
    st = LySepState(COMPILED, X, y, W, b, name, s, per_sample=per_sample)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    C = math.e * max(1.0, 1.0 / s)
    assert st.bound_constant() == C
    loss0 = true_loss(X, y, st.W, st.b, name)
    assert st.J == pytest.approx(loss0, rel=rtol)           # consistency: R = 0, J = L(F)
    previous = st.J
    for _ in range(20):
        st.sweep()
        assert st.J <= previous                             # exact: safeguarded blocks
        J = J_from_scratch(X, y, st.W, st.b, st.Z, name, s)
        assert st.J == pytest.approx(J, rel=rtol, abs=1e-12)
        assert true_loss(X, y, st.W, st.b, name) <= C * J   # Theorem B, from scratch
        previous = st.J
    assert st.J < 0.98 * loss0                              # and it really moved


@pytest.mark.parametrize("per_sample,fallback", [(True, "min_norm"), (False, "min_norm"),
                                                 (True, "closest")],
                         ids=["per_sample", "shared", "closest"])
def test_guarantees_while_blocks_of_layers_at_their_fit_are_skipped(per_sample, fallback):
    """A 19-layer network whose lower layers sit at their fit (their ridge and Z blocks
    skipped, rows at the rounding floor giving up): the guarantees still hold at every
    sweep, with J recomputed from scratch."""
    X, y = circle(100, random_state=0)
    W, b = init_parameters((2,) + (10,) * 19 + (2,), np.random.default_rng(0), np.float64)
    st = LySepState(COMPILED, X, y, W, b, "tanh", 0.01, per_sample=per_sample,
                    ridge_fallback=fallback)
    C, previous, skipped = math.e * 100, st.J, 0
    for _ in range(10):
        stats = st.sweep()
        skipped += len(stats["ridge_at_fit"]) + len(stats["z_at_fit"])
        assert st.J <= previous
        J = J_from_scratch(X, y, st.W, st.b, st.Z, "tanh", 0.01)
        # the lower layers' residuals are rounding noise times omega ~ 1e15: recomputed
        # from scratch they differ from the state's by that noise, which the rounding
        # floor bounds (64 eps^2 omega ||Z||^2, the give-up rule's level; measured: 13x
        # rounding_floor / N here)
        assert st.J == pytest.approx(J, rel=1e-10, abs=64 * st.rounding_floor() / st.N)
        assert true_loss(X, y, st.W, st.b, "tanh") <= C * J
        previous = st.J
    assert skipped > 0


@pytest.mark.parametrize("low_memory", [False, True], ids=["default", "low_memory"])
@pytest.mark.parametrize("hidden", [(300, 280), (40, 36)], ids=["wide_blocks", "wide_one_block"])
def test_guarantees_on_layers_wider_than_the_narrow_kernels(hidden, low_memory, dtype):
    """Layers past the narrow kernels' width: BLAS products, and (300 columns, 600
    rows) per-sample Z steps over several row blocks; the low-memory sweep recomputes
    its residuals through the same BLAS paths."""
    X, y, W, b = make_problem(N=600, hidden=hidden, dtype=dtype, seed=6)
    st = LySepState(COMPILED, X, y, W, b, "tanh", 0.01, low_memory=low_memory)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    C = math.e * 100
    loss0 = true_loss(X, y, st.W, st.b, "tanh")
    previous = st.J
    for _ in range(8):
        st.sweep()
        assert st.J <= previous
        J = J_from_scratch(X, y, st.W, st.b, st.Z, "tanh", 0.01)
        assert st.J == pytest.approx(J, rel=rtol, abs=1e-12)
        assert true_loss(X, y, st.W, st.b, "tanh") <= C * J
        previous = st.J
    assert st.J < loss0


def test_reference_backend_keeps_the_guarantees():
    X, y, W, b = make_problem(N=60, seed=6)
    st = LySepState(REFERENCE, X, y, W, b, "tanh", 0.01)
    previous = st.J
    for _ in range(5):
        st.sweep()
        assert st.J <= previous
        assert true_loss(X, y, st.W, st.b, "tanh") <= math.e * 100 * st.J
        previous = st.J


@pytest.mark.parametrize("z_step,low_memory", [("per_sample", False), ("shared", False),
                                               ("per_sample", True)])
def test_estimator_curves_satisfy_the_bound(z_step, low_memory):
    X, y = circle(400, random_state=1)
    clf = FNNClassifier((10,) * 6, max_iter=30, penalty_scale=0.05, z_step=z_step,
                        low_memory=low_memory, random_state=0).fit(X, y)
    loss = np.array(clf.loss_curve_)
    J = np.array(clf.surrogate_curve_)
    assert len(loss) == len(J) == len(clf.accuracy_curve_) == clf.n_iter_ + 1 == 31
    assert clf.bound_constant_ == pytest.approx(math.e * 20)
    assert np.all(loss <= clf.bound_constant_ * J)
    assert np.all(np.diff(J) <= 0)
    assert J[0] == pytest.approx(loss[0], rel=1e-12)
    assert loss[-1] < 0.5 * loss[0]


@pytest.mark.parametrize("low_memory", [False, True], ids=["default", "low_memory"])
def test_closest_fallback_keeps_the_guarantees_and_is_rejected_less(low_memory):
    """19 hidden layers of 20 on the circle, where most ridge blocks fall back: with the
    closest fallback J stays monotone and bounds the true loss at every sweep, and the
    safeguard rejects far fewer ridge candidates than with the minimum-norm one
    (measured over 300 sweeps at N = 3000: 2,803 against 641)."""
    X, y = circle(400, random_state=0)
    rejected = {}
    for fallback in ("min_norm", "closest"):
        W, b = init_parameters((2,) + (20,) * 19 + (2,), np.random.default_rng(0),
                               np.float64)
        st = LySepState(COMPILED, X, y, W, b, "tanh", 0.01, low_memory=low_memory,
                        ridge_fallback=fallback)
        previous, rejected[fallback], fallbacks = st.J, 0, 0
        for _ in range(15):
            stats = st.sweep()
            rejected[fallback] += stats.get("rejected_ridge", 0)
            fallbacks += stats["fallbacks"]
            assert st.J <= previous
            assert true_loss(X, y, st.W, st.b, "tanh") <= math.e * 100 * st.J
            previous = st.J
        assert fallbacks > 50
    assert rejected["closest"] < 0.5 * rejected["min_norm"]
